//! What a halo.toml makes halo read from the host it runs on: every file it names (certificates,
//! keys, the status token, the file trackers' files), the programs its scripts and hooks run
//! (and the script an interpreter is given), and the hosts file when servers are given by name,
//! each with its place in halo.toml. `halo check` warns of those missing or unusable here, `halo
//! run` and `halo reload` refuse them, and the container renders (`halo render static-pod`,
//! `halo render quadlet`) mount the ones that are not the image's own.
//!
//! Such paths must be absolute (halo's working directory is not the user's) and free of control
//! characters (they reach YAML and unit files): errors at their place.

use std::path::{Path, PathBuf};

use crate::diag::{Hint, Location, Report};
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
    /// What halo does with it.
    pub role: Role,
}

/// What halo does with a host file, and so what it needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read at start: a certificate, a key, the token, the hosts file.
    Data,
    /// A file tracker's file: missing, the tracker reads as failed until it appears.
    TrackerFile,
    /// The program of a script or hook, outside the system's program directories.
    Program,
    /// The program of a script or hook in a system directory (`/bin/sh`): in a container, the
    /// image's own.
    SystemProgram,
    /// The script an interpreter is given (`/etc/halo/check.sh` in `["/bin/sh", "/etc/halo/check.sh"]`).
    Script,
}

impl Role {
    /// Whether halo can start without it (`halo run` refuses a missing one).
    pub fn needed_to_start(self) -> bool {
        self != Self::TrackerFile
    }

    /// Whether halo runs it.
    pub fn is_program(self) -> bool {
        matches!(self, Self::Program | Self::SystemProgram)
    }
}

/// Directories whose programs belong to the system (or the image, in a container).
pub const SYSTEM_PROGRAM_DIRECTORIES: [&str; 6] = ["/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/lib/", "/usr/libexec/"];

/// Programs that run the script named by their first argument that is not an option.
const INTERPRETERS: [&str; 9] = ["sh", "bash", "dash", "ash", "ksh", "zsh", "python3", "python", "perl"];

/// The hosts file, read to resolve server names.
pub const HOSTS: &str = "/etc/hosts";

/// Every host file `raw` names, in the order of the file; paths that are relative or hold a
/// control character are reported as errors.
pub(crate) fn host_files(report: &mut Report<'_>, raw: &RawConfig) -> Vec<HostFile> {
    let mut files = Files { report, list: Vec::new() };
    if let Some(token) = &raw.status.token_file {
        files.add(token, "status: token_file".to_string(), Role::Data);
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
            files.add(path, format!("tracker {}: path", t.name.get_ref()), Role::TrackerFile);
        }
    }
    for b in &raw.backend {
        if let Some(health) = &b.health {
            let health = health.get_ref();
            for (key, value) in [("ca_file", &health.ca_file), ("client_cert", &health.client_cert), ("client_key", &health.client_key)] {
                if let Some(path) = value {
                    files.add(path, format!("backend {}: health.{key}", b.name.get_ref()), Role::Data);
                }
            }
        }
        let named = b.server.get_ref().iter().find(|s| s.get_ref().address.get_ref().parse::<std::net::SocketAddr>().is_err());
        if let Some(server) = named
            && !files.list.iter().any(|f| f.path == Path::new(HOSTS))
        {
            let server = server.get_ref();
            let key = format!("backend {}: server {} address (a name)", b.name.get_ref(), server.name.get_ref());
            let location = files.report.locate(server.address.span().start);
            files.list.push(HostFile { path: PathBuf::from(HOSTS), key, location, role: Role::Data });
        }
    }
    files.list
}

struct Files<'r, 'a> {
    report: &'r mut Report<'a>,
    list: Vec<HostFile>,
}

impl Files<'_, '_> {
    /// Records a path, or reports why it cannot be one.
    fn add(&mut self, path: &Text, key: String, role: Role) {
        let text = path.get_ref();
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            self.report.error(path.span(), format!("{key}: path {text:?} holds {c:?}"));
            return;
        }
        if !text.starts_with('/') {
            self.report
                .error(path.span(), format!("{key}: path {text:?} is relative"))
                .hint("give an absolute path: halo's working directory is / under systemd and in a container");
            return;
        }
        let location = self.report.locate(path.span().start);
        self.list.push(HostFile { path: PathBuf::from(text), key, location, role });
    }

    /// The files a command names: its program when given by path, and the script when the
    /// program is an interpreter (its first argument that is no option, unless `-c` gives a
    /// command line instead). Other arguments are the program's business (an output file, an
    /// address), never files of halo's.
    fn command(&mut self, argv: &[Text], key: &str) {
        let Some(program) = argv.first() else { return };
        for argument in argv {
            if let Some(c) = argument.get_ref().chars().find(|c| c.is_control()) {
                self.report.error(argument.span(), format!("{key}: argument {:?} holds {c:?}", argument.get_ref()));
                return;
            }
        }
        let name = program.get_ref();
        if name.contains('/') {
            let role = if is_system_program(Path::new(name)) { Role::SystemProgram } else { Role::Program };
            self.add(program, key.to_string(), role);
        }
        let base = name.rsplit('/').next().unwrap_or(name);
        if !INTERPRETERS.contains(&base) {
            return;
        }
        for argument in &argv[1..] {
            let text = argument.get_ref();
            if text == "-c" {
                return;
            }
            if text.starts_with('-') {
                continue;
            }
            if text.starts_with('/') {
                self.add(argument, key.to_string(), Role::Script);
            }
            return;
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

/// Whether a program's path is in a system program directory.
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
            [vrrp.notify]\nmaster = [\"/usr/local/bin/became-master\", \"/var/log/halo/out.log\"]\n\n\
            [[tracker]]\nname = \"s\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"-e\", \"/etc/halo/check.sh\", \"/healthz\"]\n\n\
            [[tracker]]\nname = \"c\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"-c\", \"/etc/halo/x.sh --quiet || exit 1\"]\n\n\
            [[tracker]]\nname = \"f\"\nkind = \"file\"\npath = \"/var/lib/weight\"\n\n\
            [[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\n\n\
            [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"https\"\nca_file = \"/etc/kubernetes/pki/ca.crt\"\n\
            client_cert = \"/etc/halo/c.crt\"\nclient_key = \"/etc/halo/c.key\"\n\
            [[backend.server]]\nname = \"m1\"\naddress = \"master1.example:6443\"\n\
            [[backend.server]]\nname = \"m2\"\naddress = \"master2.example:6443\"\n";
        let loaded = crate::load_str("t.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
        let found: Vec<String> =
            loaded.host_files.iter().map(|f| format!("{} {} {} {:?}", f.location, f.key, f.path.display(), f.role)).collect();
        assert_eq!(
            found,
            [
                "t.toml:2:14 status: token_file /etc/halo/token Data",
                "t.toml:11:11 vrrp v: notify.master /usr/local/bin/became-master Program",
                "t.toml:16:12 tracker s: command /bin/sh SystemProgram",
                "t.toml:16:29 tracker s: command /etc/halo/check.sh Script",
                "t.toml:21:12 tracker c: command /bin/sh SystemProgram",
                "t.toml:26:8 tracker f: path /var/lib/weight TrackerFile",
                "t.toml:37:11 backend api: health.ca_file /etc/kubernetes/pki/ca.crt Data",
                "t.toml:38:15 backend api: health.client_cert /etc/halo/c.crt Data",
                "t.toml:39:14 backend api: health.client_key /etc/halo/c.key Data",
                "t.toml:42:11 backend api: server m1 address (a name) /etc/hosts Data",
            ]
        );
    }

    #[test]
    fn relative_paths_and_control_characters_are_refused_at_their_place() {
        let base = "[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\n[[backend]]\nname = \"api\"\n\
                    [[backend.server]]\nname = \"m1\"\naddress = \"127.0.0.1:6443\"\n";
        let errors = |extra: &str| match crate::load_str("t.toml", &format!("{extra}\n{base}")) {
            Ok(_) => Vec::new(),
            Err(crate::LoadError::Invalid(d)) => d.iter().filter(|d| d.is_error()).map(ToString::to_string).collect(),
            Err(e) => panic!("{e:?}"),
        };
        let relative = errors("[status]\ntoken_file = \"token\"");
        assert!(
            relative.iter().any(|e| e.starts_with("t.toml:2:14: error: status: token_file: path \"token\" is relative")),
            "{relative:?}"
        );
        let newline = errors("[[tracker]]\nname = \"s\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"/etc/a\\nb\"]\nweight = 1");
        assert!(newline.iter().any(|e| e.contains("tracker s: command: argument \"/etc/a\\nb\" holds '\\n'")), "{newline:?}");
    }
}
