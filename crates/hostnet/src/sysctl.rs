//! Kernel parameters through `/proc/sys` (per network namespace for `net.*`): read one, set one.

use std::path::PathBuf;

use crate::{Result, io};

/// `net.ipv4.ip_forward`, or sysctl(8)'s slash form `net/ipv4/conf/eth0.100/arp_ignore` for keys
/// whose parts hold dots (an interface name like `eth0.100`).
fn path(key: &str) -> PathBuf {
    if key.contains('/') { PathBuf::from("/proc/sys").join(key) } else { PathBuf::from("/proc/sys").join(key.replace('.', "/")) }
}

/// The key of a per-interface IPv4 setting, whatever dots the interface's name holds.
pub fn ipv4_conf_key(interface: &str, name: &str) -> String {
    format!("net/ipv4/conf/{interface}/{name}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_with_dots_stay_one_part_of_the_path() {
        assert_eq!(path(&ipv4_conf_key("eth0.100", "arp_ignore")), PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore"));
        assert_eq!(path("net.ipv4.ip_forward"), PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
    }
}
