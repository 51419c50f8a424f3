//! Fuzz target: the haproxy.cfg importer never panics, and what it accepts renders to a valid
//! halo.toml.
#![no_main]

use halo_config::import::{Inputs, Source, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let imported = import(&Inputs { haproxy: Some(Source { file: "haproxy.cfg", text }), ..Inputs::default() }, &());
    if !imported.has_errors() && !imported.config.frontends.is_empty() {
        let _ = halo_config::load_str("imported.toml", &halo_config::render::halo_toml(&imported.config, &imported.notes));
    }
});
