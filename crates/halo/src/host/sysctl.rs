//! Kernel parameters per role, and the `/etc/sysctl.d` drop-in: what each role needs, merging
//! halo's keys into a file without touching its other lines, and finding a file read later at
//! boot that would override them.
//!
//! The roles: a hypervisor (the guide's libvirt host) and a dedicated balancer host want
//! `bridge-nf-call-*` at 0 (bridged frames between VMs must not cross the host's netfilter) and
//! are fine without `br_netfilter` loaded (bridged frames then skip netfilter anyway). A
//! Kubernetes node wants them at 1 with `br_netfilter` loaded (kube-proxy and CNI plugins see
//! bridged pod traffic through iptables), and `net.ipv4.ip_forward = 1`.

use std::path::{Path, PathBuf};

use crate::cli::Role;

/// The drop-in halo writes, under `--root`.
pub const DROP_IN: &str = "/etc/sysctl.d/99-halo.conf";

/// The bridge-nf-call keys.
pub const BRIDGE_NF: [&str; 3] =
    ["net.bridge.bridge-nf-call-arptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-iptables"];

/// What a role needs of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The key.
    pub key: &'static str,
    /// Its value.
    pub value: &'static str,
    /// Whether a missing key (module not loaded) is fine.
    pub absent_ok: bool,
    /// Why.
    pub why: &'static str,
}

/// The keys a role sets.
pub fn wants(role: Role) -> Vec<Want> {
    let mut out: Vec<Want> = BRIDGE_NF
        .iter()
        .map(|key| match role {
            Role::Hypervisor | Role::Lb => {
                Want { key, value: "0", absent_ok: true, why: "bridged traffic between VMs must not go through the host's netfilter" }
            }
            Role::Node => Want { key, value: "1", absent_ok: false, why: "kube-proxy and CNI plugins need bridged traffic in iptables" },
        })
        .collect();
    if role == Role::Node {
        out.push(Want { key: "net.ipv4.ip_forward", value: "1", absent_ok: false, why: "a Kubernetes node routes pod traffic" });
    }
    out
}

/// Whether a sysctl.d line sets `key`; its value if so.
fn setting<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let line = line.trim().trim_start_matches('-');
    let (k, v) = line.split_once('=')?;
    (k.trim().replace('/', ".") == key).then(|| v.trim())
}

/// `existing` with each of `settings` set: lines that set one of the keys get the new value,
/// every other line stays as it is, missing keys are appended.
pub fn merge(existing: &str, settings: &[(&str, &str)], comment: &str) -> String {
    let mut out = String::new();
    let mut done = vec![false; settings.len()];
    for line in existing.lines() {
        match settings.iter().position(|(key, _)| setting(line, key).is_some()) {
            Some(i) if !done[i] => {
                out.push_str(&format!("{} = {}\n", settings[i].0, settings[i].1));
                done[i] = true;
            }
            // A second line for the same key would override the first: drop it.
            Some(_) => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let missing: Vec<&(&str, &str)> = settings.iter().zip(&done).filter(|(_, d)| !**d).map(|(s, _)| s).collect();
    if !missing.is_empty() && existing.trim().is_empty() {
        out.push_str(comment);
    }
    for (key, value) in missing {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// The files `sysctl --system` reads, in order (later wins), as found under `root`: *.conf of
/// /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d and /lib/sysctl.d
/// sorted by file name (a name in an earlier directory hides the same name in a later one),
/// then /etc/sysctl.conf.
pub fn boot_order(root: &Path) -> Vec<PathBuf> {
    let mut by_name: std::collections::BTreeMap<String, PathBuf> = std::collections::BTreeMap::new();
    for dir in ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"] {
        let Ok(entries) = std::fs::read_dir(super::under_root(root, dir)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".conf") {
                by_name.entry(name).or_insert_with(|| entry.path());
            }
        }
    }
    let mut files: Vec<PathBuf> = by_name.into_values().collect();
    let main = super::under_root(root, "/etc/sysctl.conf");
    if main.exists() {
        files.push(main);
    }
    files
}

/// The file read last at boot that sets `key`, with its value.
pub fn last_setting(files: &[PathBuf], key: &str) -> Option<(PathBuf, String)> {
    let mut last = None;
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines() {
            if let Some(value) = setting(line, key) {
                last = Some((file.clone(), value.to_string()));
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_unrelated_lines_and_sets_ours() {
        let guide = "#\n# Configure kernel parameters at boot.\nnet.bridge.bridge-nf-call-ip6tables = 1\nvm.swappiness=10\nnet/bridge/bridge-nf-call-iptables=1\nnet.bridge.bridge-nf-call-ip6tables = 1\n";
        let merged = merge(
            guide,
            &[
                ("net.bridge.bridge-nf-call-ip6tables", "0"),
                ("net.bridge.bridge-nf-call-iptables", "0"),
                ("net.bridge.bridge-nf-call-arptables", "0"),
            ],
            "# halo\n",
        );
        assert_eq!(
            merged,
            "#\n# Configure kernel parameters at boot.\nnet.bridge.bridge-nf-call-ip6tables = 0\nvm.swappiness=10\nnet.bridge.bridge-nf-call-iptables = 0\nnet.bridge.bridge-nf-call-arptables = 0\n"
        );
        assert_eq!(merge(&merged, &[("net.bridge.bridge-nf-call-iptables", "0")], "# halo\n"), merged, "a second merge changes nothing");
        assert_eq!(merge("", &[("a.b", "1")], "# halo\n"), "# halo\na.b = 1\n");
    }

    proptest::proptest! {
        /// Whatever the file holds: no panic, a second merge changes nothing, every line that
        /// does not set one of our keys survives in order, and each key ends up set exactly once.
        #[test]
        fn merging_any_file_is_idempotent_and_keeps_foreign_lines(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z./_ =#-]{0,30}",
                    proptest::strategy::Just("net.bridge.bridge-nf-call-iptables=1".to_string()),
                    proptest::strategy::Just(" - net/bridge/bridge-nf-call-arptables = 1".to_string()),
                ],
                0..12,
            )
        ) {
            let existing: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let settings = [("net.bridge.bridge-nf-call-iptables", "0"), ("net.bridge.bridge-nf-call-arptables", "0")];
            let once = merge(&existing, &settings, "# halo\n");
            proptest::prop_assert_eq!(merge(&once, &settings, "# halo\n"), once.clone());
            let foreign: Vec<&String> = lines.iter().filter(|l| settings.iter().all(|(k, _)| setting(l, k).is_none())).collect();
            let kept: Vec<&str> = once.lines().filter(|l| settings.iter().all(|(k, _)| setting(l, k).is_none())).filter(|l| *l != "# halo").collect();
            proptest::prop_assert_eq!(kept, foreign.iter().map(|l| l.as_str()).collect::<Vec<_>>());
            for (key, value) in settings {
                let set: Vec<&str> = once.lines().filter_map(|l| setting(l, key)).collect();
                proptest::prop_assert_eq!(set, vec![value]);
            }
        }
    }

    #[test]
    fn roles_differ_on_bridge_netfilter() {
        assert!(wants(Role::Lb).iter().all(|w| w.value == "0" && w.absent_ok));
        assert!(wants(Role::Hypervisor).iter().all(|w| w.value == "0"));
        let node = wants(Role::Node);
        assert!(node.iter().all(|w| w.value == "1" && !w.absent_ok));
        assert!(node.iter().any(|w| w.key == "net.ipv4.ip_forward"));
    }

    #[test]
    fn the_file_read_last_wins() {
        let dir = tempfile::tempdir().expect("dir");
        let etc = dir.path().join("etc/sysctl.d");
        std::fs::create_dir_all(&etc).expect("dir");
        std::fs::write(etc.join("99-halo.conf"), "net.ipv4.ip_forward = 1\n").expect("write");
        std::fs::write(etc.join("99-sysctl.conf"), "net.ipv4.ip_forward = 0\n").expect("write");
        let files = boot_order(dir.path());
        let (file, value) = last_setting(&files, "net.ipv4.ip_forward").expect("set");
        assert_eq!((file.file_name().and_then(|n| n.to_str()), value.as_str()), (Some("99-sysctl.conf"), "0"));
    }
}
