//! Node maintenance (`halo node maintenance on|off`): the flag every VRRP instance (never
//! master while it lasts) and announcement (withdrawn) follows, and its file, `maintenance`
//! under `[node] state_directory`, which makes it outlive reloads, upgrades and restarts. The
//! file holds `on` or `off`, written atomically; a missing one means off, and so does a garbled
//! one (said in the log): a node comes back into service rather than staying out by accident.

use std::path::PathBuf;

use anyhow::Context;
use halo_config::Config;

/// The file's name in the state directory.
pub const FILE: &str = "maintenance";

/// Where the flag is kept for `config`.
pub fn path(config: &Config) -> PathBuf {
    config.node.state_directory().join(FILE)
}

/// The flag as kept: on only when the file says `on`.
pub fn read(config: &Config) -> bool {
    let path = path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "on" => true,
            "off" => false,
            other => {
                tracing::warn!(file = %path.display(), content = %other.chars().take(40).collect::<String>(), "maintenance file garbled: not in maintenance");
                false
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "maintenance file unreadable: not in maintenance");
            false
        }
    }
}

/// Keeps the flag (the directory made if missing), atomically: a crash leaves the old value or
/// the new one, never half a file.
pub fn write(config: &Config, on: bool) -> anyhow::Result<()> {
    let path = path(config);
    if let Some(directory) = path.parent() {
        std::fs::create_dir_all(directory).with_context(|| format!("cannot create {}", directory.display()))?;
    }
    crate::files::write_output(Some(&path), if on { "on\n" } else { "off\n" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        let text = format!(
            "[node]\nstate_directory = \"{}\"\n[[frontend]]\nname = \"a\"\nbind = [\"127.0.0.1:1\"]\nbackend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:2\"\n",
            dir.join("state").display()
        );
        halo_config::load_str("t.toml", &text).expect("valid").config
    }

    #[test]
    fn the_flag_outlives_the_process_and_a_bad_file_means_off() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(dir.path());
        assert!(!read(&config), "no file: not in maintenance");
        write(&config, true).expect("write");
        assert!(read(&config));
        write(&config, false).expect("write");
        assert!(!read(&config));
        std::fs::write(path(&config), "yes please").expect("garble");
        assert!(!read(&config), "a garbled file: not in maintenance");
    }
}
