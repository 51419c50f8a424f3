//! What a halo.toml makes halo read from the host it runs on: every file it names (certificates,
//! keys, the status token, the file trackers' files, the scripts and hooks it runs), and the
//! hosts file when servers are given by name, each with its place in halo.toml. `halo check`
//! warns of those missing here, `halo run` refuses to start without them, and the container
//! renders (`halo render static-pod`, `halo render quadlet`) mount exactly these.

use std::path::{Path, PathBuf};

use crate::diag::{Location, Report};
use crate::raw::{RawConfig, RawNotify, Text};

/// One file of the host that the configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// As written in halo.toml.
    pub path: PathBuf,
    /// Which key names it (`backend api: health.ca_file`).
    pub key: String,
    /// Where.
    pub location: Location,
    /// What halo does when it is missing.
    pub need: Need,
}

/// What a missing file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// halo cannot start without it (a certificate, a key, the token, a script or hook).
    ToStart,
    /// A file tracker's file: missing, the tracker reads as failed until it appears.
    WhileRunning,
}

/// Directories whose programs belong to the system (or the image, in a container): a command
/// that names one (`/bin/sh`) is not a file of halo's configuration and is never mounted.
const SYSTEM_PROGRAM_DIRECTORIES: [&str; 7] = ["/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/lib/", "/lib/", "/lib64/"];

/// The hosts file, read to resolve server names.
pub const HOSTS: &str = "/etc/hosts";

/// Every host file `raw` names, in the order of the file.
pub(crate) fn host_files(report: &Report<'_>, raw: &RawConfig) -> Vec<HostFile> {
    let mut files = Files { report, list: Vec::new() };
    if let Some(token) = &raw.status.token_file {
        files.add(token, "status: token_file".to_string(), Need::ToStart);
    }
    for v in &raw.vrrp {
        if let Some(notify) = &v.notify {
            files.hooks(notify, &format!("vrrp {}: notify", v.name.get_ref()));
        }
    }
    for g in &raw.sync_group {
        if let Some(notify) = &g.notify {
            files.hooks(notify, &format!("sync_group {}: notify", g.name.get_ref()));
        }
    }
    for t in &raw.tracker {
        if let Some(command) = &t.command {
            files.command(command.get_ref(), &format!("tracker {}: command", t.name.get_ref()));
        }
        if t.kind.get_ref() == "file"
            && let Some(path) = &t.path
        {
            files.add(path, format!("tracker {}: path", t.name.get_ref()), Need::WhileRunning);
        }
    }
    for b in &raw.backend {
        if let Some(health) = &b.health {
            let health = health.get_ref();
            for (key, value) in [("ca_file", &health.ca_file), ("client_cert", &health.client_cert), ("client_key", &health.client_key)] {
                if let Some(path) = value {
                    files.add(path, format!("backend {}: health.{key}", b.name.get_ref()), Need::ToStart);
                }
            }
        }
        let named = b.server.get_ref().iter().find(|s| s.get_ref().address.get_ref().parse::<std::net::SocketAddr>().is_err());
        if let Some(server) = named {
            let server = server.get_ref();
            let key = format!("backend {}: server {} address (a name)", b.name.get_ref(), server.name.get_ref());
            let location = report.locate(server.address.span().start);
            files.list.push(HostFile { path: PathBuf::from(HOSTS), key, location, need: Need::ToStart });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    files.list.retain(|f| f.path != Path::new(HOSTS) || seen.insert(f.path.clone()));
    files.list
}

struct Files<'r, 'a> {
    report: &'r Report<'a>,
    list: Vec<HostFile>,
}

impl Files<'_, '_> {
    fn add(&mut self, path: &Text, key: String, need: Need) {
        let location = self.report.locate(path.span().start);
        self.list.push(HostFile { path: PathBuf::from(path.get_ref()), key, location, need });
    }

    /// The files a command names: its arguments that are absolute paths outside the system's
    /// program directories (the script in `["/bin/sh", "/etc/halo/check.sh"]`).
    fn command(&mut self, argv: &[Text], key: &str) {
        for argument in argv {
            let text = argument.get_ref();
            if text.starts_with('/') && !SYSTEM_PROGRAM_DIRECTORIES.iter().any(|dir| text.starts_with(dir)) {
                self.add(argument, key.to_string(), Need::ToStart);
            }
        }
    }

    fn hooks(&mut self, notify: &RawNotify, key: &str) {
        for (name, hook) in [
            ("master", &notify.master),
            ("backup", &notify.backup),
            ("fault", &notify.fault),
            ("stop", &notify.stop),
            ("change", &notify.change),
        ] {
            if let Some(argv) = hook {
                self.command(argv.get_ref(), &format!("{key}.{name}"));
            }
        }
    }
}

/// Whether a program path is the system's (or the image's), not a file of the configuration.
pub fn is_system_program(path: &Path) -> bool {
    let text = path.to_string_lossy();
    SYSTEM_PROGRAM_DIRECTORIES.iter().any(|dir| text.starts_with(dir))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_the_config_names_with_its_place() {
        let text = "[status]\ntoken_file = \"/etc/halo/token\"\n\n\
            [[vrrp]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = 1\npriority = 100\nvirtual_addresses = [\"10.0.0.9/24\"]\n\
            [vrrp.notify]\nmaster = [\"/usr/local/bin/became-master\", \"x\"]\n\n\
            [[tracker]]\nname = \"s\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"/etc/halo/check.sh\"]\n\n\
            [[tracker]]\nname = \"f\"\nkind = \"file\"\npath = \"/var/lib/weight\"\n\n\
            [[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\n\n\
            [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"https\"\nca_file = \"/etc/kubernetes/pki/ca.crt\"\n\
            client_cert = \"/etc/halo/c.crt\"\nclient_key = \"/etc/halo/c.key\"\n\
            [[backend.server]]\nname = \"m1\"\naddress = \"master1.example:6443\"\n\
            [[backend.server]]\nname = \"m2\"\naddress = \"master2.example:6443\"\n";
        let loaded = crate::load_str("t.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
        let found: Vec<String> =
            loaded.host_files.iter().map(|f| format!("{} {} {} {:?}", f.location, f.key, f.path.display(), f.need)).collect();
        assert_eq!(
            found,
            [
                "t.toml:2:14 status: token_file /etc/halo/token ToStart",
                "t.toml:11:11 vrrp v: notify.master /usr/local/bin/became-master ToStart",
                "t.toml:16:23 tracker s: command /etc/halo/check.sh ToStart",
                "t.toml:21:8 tracker f: path /var/lib/weight WhileRunning",
                "t.toml:32:11 backend api: health.ca_file /etc/kubernetes/pki/ca.crt ToStart",
                "t.toml:33:15 backend api: health.client_cert /etc/halo/c.crt ToStart",
                "t.toml:34:14 backend api: health.client_key /etc/halo/c.key ToStart",
                "t.toml:37:11 backend api: server m1 address (a name) /etc/hosts ToStart",
            ]
        );
    }
}
