//! Fuzz target: the keepalived.conf importer (tokenizer, block tree, mapping) never panics.
#![no_main]

use halo_config::import::{Inputs, Source, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let imported = import(&Inputs { keepalived: Some(Source { file: "keepalived.conf", text }), ..Inputs::default() }, &());
    if !imported.has_errors() && !imported.config.vrrp.is_empty() {
        let _ = halo_config::load_str("imported.toml", &halo_config::render::halo_toml(&imported.config, &imported.notes));
    }
});
