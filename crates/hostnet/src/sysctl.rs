//! Kernel parameters through `/proc/sys` (per network namespace for `net.*`): read one, set one.

use std::path::PathBuf;

use crate::{Result, io};

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// The value of `key`, or `None` when the kernel has no such key (a module not loaded).
pub fn read(key: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(path(key)) {
        Ok(value) => Ok(Some(value.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {key}"))(e)),
    }
}

/// Sets `key` to `value` now.
pub fn write(key: &str, value: &str) -> Result<()> {
    std::fs::write(path(key), format!("{value}\n")).map_err(io(format!("setting {key} = {value}")))
}
