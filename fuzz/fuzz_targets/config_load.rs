//! Fuzz target: the halo.toml loader must answer any text with a config or diagnostics, never
//! a panic; a config it accepts must render to a file it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = halo_config::load_str("fuzz.toml", text) {
        let again = halo_config::render::halo_toml(&loaded.config, &Default::default());
        let reloaded = halo_config::load_str("again.toml", &again).expect("a rendered config loads");
        assert_eq!(reloaded.config, loaded.config);
        let _ = halo_config::render::haproxy(&loaded.config);
        let _ = halo_config::render::keepalived(&loaded.config);
    }
});
