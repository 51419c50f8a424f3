//! Config -> what runs halo's image: a Kubernetes static pod and a podman Quadlet unit, both
//! with the mounts and capabilities this config needs and nothing more.
//!
//! Both run the image `scripts/image.sh` builds ([`IMAGE`], or one of the user's own), whose entry
//! point is a tiny init (tini: it reaps the orphans of scripts, whose parent halo is not, and
//! passes signals on) in front of `/usr/bin/halo`; they give only halo's arguments. The image is
//! loaded on each host and never pulled (`imagePullPolicy: Never`): no registry is needed, and
//! none is trusted.
//!
//! Mounts, all read-only but the status socket's directory and `[node] state_directory`: /etc/halo, then each file the
//! config names through its directory (so that a file replaced by rename, a renewed
//! certificate, is seen), unless that directory is a broad one of the system (`/etc`, `/var/lib`,
//! anything one level below /): then the file alone. Programs in the system's directories are
//! the image's; one the image lacks is said. What cannot be mounted (under the container's own
//! /tmp or /run/halo, under /proc, /sys or /dev, a path with `..`) is said too.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::Rendered;
use super::systemd::{CAPABILITIES, CONFIG};
use super::write::line;
use crate::host_files::{HOSTS, HostFile, Role};
use crate::model::Config;

/// The image reference, the same in podman's and containerd's stores (`localhost/` names no
/// registry that could be asked for it).
pub const IMAGE: &str = concat!("localhost/halo:", env!("CARGO_PKG_VERSION"));
/// The directory the configuration is mounted from.
const CONFIG_DIRECTORY: &str = "/etc/halo";
/// The pid file, in the container's own /run/halo.
const RUN_DIRECTORY: &str = "/run/halo";
/// halo's arguments after the image's entry point.
const ARGUMENTS: [&str; 5] = ["run", "-c", CONFIG, "--pid-file", "/run/halo/halo.pid"];
/// The programs the image carries in the system's directories (scripts/image.sh links these
/// busybox applets; tests/image.rs checks that the image has each).
pub const IMAGE_PROGRAMS: [&str; 27] = [
    "/bin/sh",
    "/bin/busybox",
    "/bin/cat",
    "/bin/echo",
    "/bin/test",
    "/bin/[",
    "/bin/sleep",
    "/bin/id",
    "/bin/kill",
    "/bin/ls",
    "/bin/grep",
    "/bin/sed",
    "/bin/awk",
    "/bin/head",
    "/bin/tail",
    "/bin/wc",
    "/bin/cut",
    "/bin/tr",
    "/bin/date",
    "/bin/printf",
    "/bin/nc",
    "/bin/wget",
    "/bin/true",
    "/bin/false",
    "/bin/env",
    "/usr/bin/halo",
    "/usr/bin/tini",
];
/// The users the image's /etc/passwd knows.
pub const IMAGE_USERS: [&str; 2] = ["root", "nobody"];
/// Directories of the container itself: nothing from the host can be mounted there.
const OWN_DIRECTORIES: [&str; 5] = ["/tmp", "/run/halo", "/proc", "/sys", "/dev"];

/// One mount from the host, at the same path in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mount {
    /// The path, the same on the host and in the container.
    pub path: PathBuf,
    /// A single file rather than a directory.
    pub file: bool,
    /// Writable (the status socket's directory); created on the host when missing.
    pub writable: bool,
}

/// The mounts the config needs, and what could not be carried, each a sentence.
pub fn mounts(config: &Config, files: &[HostFile]) -> (Vec<Mount>, Vec<String>) {
    let mut losses = Vec::new();
    let mut wanted = BTreeSet::from([Mount { path: PathBuf::from(CONFIG_DIRECTORY), file: false, writable: false }]);
    for file in files {
        if file.role == Role::SystemProgram {
            if !IMAGE_PROGRAMS.iter().any(|p| Path::new(p) == file.path) {
                losses.push(format!(
                    "{} ({}): the image has no {}: it fails in the container (the image has busybox's tools: run a script \
                     mounted from the host with /bin/sh)",
                    file.location,
                    file.key,
                    file.path.display()
                ));
            }
            continue;
        }
        let Some(path) = normal(&file.path) else {
            losses.push(format!("{} ({}): {} holds `..`: give the path itself", file.location, file.key, file.path.display()));
            continue;
        };
        let mut paths = vec![path.clone()];
        // A symbolic link (here, where this renders) needs its target in the container too.
        if let Ok(target) = std::fs::canonicalize(&path)
            && target != path
        {
            paths.push(target);
        }
        for path in paths {
            match mount_for(&path, file.role) {
                Ok((mount, note)) => {
                    if let Some(note) = note {
                        losses.push(format!("{} ({}): {note}", file.location, file.key));
                    }
                    wanted.insert(mount);
                }
                Err(why) => losses.push(format!("{} ({}): {} {why}", file.location, file.key, path.display())),
            }
        }
    }
    if let Some(socket) = &config.status.socket
        && let Some(directory) = socket.parent().and_then(normal)
    {
        wanted.insert(Mount { path: directory, file: false, writable: true });
    }
    // Syslog's socket, when the lines go there: a writable file mount is a socket's.
    if let crate::model::LogTarget::Syslog { socket, .. } = &config.log.target
        && let Some(socket) = normal(socket)
    {
        wanted.insert(Mount { path: socket, file: true, writable: true });
    }
    // What outlives a restart of the container (node maintenance) lives on the host.
    if let Some(directory) = normal(&config.node.state_directory()) {
        wanted.insert(Mount { path: directory, file: false, writable: true });
    }
    if let Some(user) = &config.node.script_user
        && !IMAGE_USERS.contains(&user.as_str())
    {
        losses.push(format!(
            "script_user {user}: the image knows only {}: build an image of your own that adds the user, and render with --image",
            IMAGE_USERS.join(" and ")
        ));
    }
    // What a mounted directory holds comes with it.
    let directories: Vec<PathBuf> = wanted.iter().filter(|m| !m.file).map(|m| m.path.clone()).collect();
    let all = wanted.into_iter().filter(|m| !directories.iter().any(|d| *d != m.path && m.path.starts_with(d)) || m.writable).collect();
    (all, losses)
}

/// `path` without `.` components; `None` when it holds `..` (its meaning would depend on links).
fn normal(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => return None,
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// How one file reaches the container: its directory, or itself when its directory is a broad
/// one of the system (then, with a note when it matters). `Err` when it cannot be mounted.
fn mount_for(path: &Path, role: Role) -> Result<(Mount, Option<String>), String> {
    if let Some(own) = OWN_DIRECTORIES.iter().find(|d| path.starts_with(d)) {
        return Err(format!("cannot be mounted: {own} is the container's own"));
    }
    let directory = path.parent().unwrap_or(Path::new("/"));
    let broad = path == Path::new(HOSTS) || (directory.components().count() <= 3 && directory != Path::new(CONFIG_DIRECTORY));
    if !broad {
        return Ok((Mount { path: directory.to_path_buf(), file: false, writable: false }, None));
    }
    let note = (role == Role::TrackerFile).then(|| {
        format!(
            "{} is mounted alone, {} being a directory of the system's: the container starts only once it exists, and does \
             not see it replaced by rename; a directory of its own (/var/lib/halo/) has neither problem",
            path.display(),
            directory.display()
        )
    });
    Ok((Mount { path: path.to_path_buf(), file: true, writable: false }, note))
}

/// The capabilities this config needs, without the `CAP_` prefix: NET_ADMIN, NET_RAW and
/// NET_BIND_SERVICE always; BPF and PERFMON unless `[balancer] forwarding = "user"`; SETUID,
/// SETGID and KILL when scripts run as `script_user`.
pub fn capabilities(config: &Config) -> Vec<&'static str> {
    let kernel = config.balancer.forwarding != crate::Forwarding::User;
    let scripts = config.node.script_user.is_some();
    CAPABILITIES
        .iter()
        .copied()
        .filter(|c| match *c {
            "BPF" | "PERFMON" => kernel,
            "SETUID" | "SETGID" | "KILL" => scripts,
            _ => true,
        })
        .collect()
}

/// A path as a YAML double-quoted scalar (control characters never reach here: the loader
/// refuses them).
fn yaml(path: &Path) -> String {
    format!("\"{}\"", path.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\""))
}

/// How long the kubelet waits after SIGTERM: halo's longest drain, and 10 s more.
fn grace_period(config: &Config) -> Duration {
    config.backends.iter().map(|b| b.drain_timeout).max().unwrap_or_default() + Duration::from_secs(10)
}

/// A static pod for /etc/kubernetes/manifests: host network, the node's resolver (the cluster's
/// DNS may sit behind the very endpoint halo provides), the capabilities and mounts this config
/// needs, a liveness probe on the status endpoint's /healthz, time to drain at a stop.
pub fn static_pod(config: &Config, files: &[HostFile], image: &str) -> Rendered {
    let mut out = String::new();
    let listen = config.status.listen;
    let (mounts, mut losses) = mounts(config, files);
    if !listen.ip().is_loopback() && !listen.ip().is_unspecified() {
        losses.push(format!("the liveness probe asks {listen}: make sure the kubelet can reach it"));
    }
    let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
    line(&mut out, format_args!("# halo static pod, as `halo render static-pod` writes it for this halo.toml; install as"));
    line(&mut out, format_args!("# /etc/kubernetes/manifests/halo.yaml, and render it again whenever halo.toml changes."));
    line(
        &mut out,
        format_args!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: halo\n  namespace: kube-system\n  labels:\n    component: halo"),
    );
    line(&mut out, format_args!("spec:\n  hostNetwork: true\n  dnsPolicy: Default\n  priorityClassName: system-node-critical"));
    line(&mut out, format_args!("  terminationGracePeriodSeconds: {}", grace_period(config).as_secs()));
    line(&mut out, format_args!("  containers:\n    - name: halo\n      image: {}\n      imagePullPolicy: Never", yaml(Path::new(image))));
    let arguments: Vec<String> = ARGUMENTS.iter().map(|a| format!("\"{a}\"")).collect();
    line(&mut out, format_args!("      args: [{}]", arguments.join(", ")));
    let capabilities: Vec<String> = capabilities(config).iter().map(|c| format!("\"{c}\"")).collect();
    line(
        &mut out,
        format_args!(
            "      securityContext:\n        allowPrivilegeEscalation: false\n        readOnlyRootFilesystem: true\n        capabilities:\n          drop: [\"ALL\"]\n          add: [{}]",
            capabilities.join(", ")
        ),
    );
    line(
        &mut out,
        format_args!(
            "      livenessProbe:\n        httpGet:\n          host: {host}\n          port: {}\n          path: /healthz",
            listen.port()
        ),
    );
    line(&mut out, format_args!("        initialDelaySeconds: 5\n        periodSeconds: 10\n        failureThreshold: 3"));
    line(&mut out, format_args!("      volumeMounts:"));
    for (i, mount) in mounts.iter().enumerate() {
        line(
            &mut out,
            format_args!("        - name: host-{i}\n          mountPath: {}\n          readOnly: {}", yaml(&mount.path), !mount.writable),
        );
    }
    let run_from_host = mounts.iter().any(|m| m.path == Path::new(RUN_DIRECTORY));
    if !run_from_host {
        line(&mut out, format_args!("        - name: run\n          mountPath: {RUN_DIRECTORY}"));
    }
    line(&mut out, format_args!("        - name: tmp\n          mountPath: /tmp"));
    line(&mut out, format_args!("  volumes:"));
    for (i, mount) in mounts.iter().enumerate() {
        let kind = match (mount.file, mount.writable) {
            (true, true) => "Socket",
            (true, false) => "File",
            (false, true) => "DirectoryOrCreate",
            (false, false) => "Directory",
        };
        line(&mut out, format_args!("    - name: host-{i}\n      hostPath:\n        path: {}\n        type: {kind}", yaml(&mount.path)));
    }
    if !run_from_host {
        line(&mut out, format_args!("    - name: run\n      emptyDir:\n        medium: Memory"));
    }
    line(&mut out, format_args!("    - name: tmp\n      emptyDir:\n        medium: Memory"));
    Rendered { text: out, losses }
}

/// A podman Quadlet unit (`/etc/containers/systemd/halo.container`, podman 4.4 or later, whose
/// keys alone it uses) for an ostree host (ALT Container OS, Fedora CoreOS): the same image,
/// mounts and capabilities as the static pod, host network, systemd's notifications passed
/// through (halo says READY itself), /tmp in memory, `systemctl reload` as `halo reload` in the
/// container. The root file system stays writable (the container's own layer): Quadlet before
/// podman 4.9 makes a read-only container's /run read-only too, where halo keeps its pid file.
pub fn quadlet(config: &Config, files: &[HostFile], image: &str) -> Rendered {
    let mut out = String::new();
    let (mounts, mut losses) = mounts(config, files);
    line(&mut out, format_args!("# halo.container, as `halo render quadlet` writes it for this halo.toml; install as"));
    line(&mut out, format_args!("# /etc/containers/systemd/halo.container, then `systemctl daemon-reload && systemctl start halo`."));
    line(&mut out, format_args!("[Unit]\nDescription=halo: highly available Kubernetes API endpoint (TCP balancer + VRRP)"));
    line(&mut out, format_args!("Wants=network-online.target\nAfter=network-online.target\n"));
    line(&mut out, format_args!("[Container]\nImage={}\nContainerName=halo\nNetwork=host\nNotify=true", unit_text(image)));
    line(&mut out, format_args!("Exec={}", ARGUMENTS.join(" ")));
    line(&mut out, format_args!("DropCapability=ALL"));
    let capabilities: Vec<String> = capabilities(config).iter().map(|c| format!("CAP_{c}")).collect();
    line(&mut out, format_args!("AddCapability={}", capabilities.join(" ")));
    line(&mut out, format_args!("NoNewPrivileges=true\nVolatileTmp=true"));
    for mount in &mounts {
        let text = mount.path.to_string_lossy();
        // podman splits a volume at ':'; Quadlet splits values at white space.
        if text.contains(':') || text.chars().any(char::is_whitespace) {
            losses.push(format!("{text}: a path with ':' or white space cannot be a Quadlet volume: mount it by hand"));
            continue;
        }
        let mode = if mount.writable { "rw" } else { "ro" };
        line(&mut out, format_args!("Volume={0}:{0}:{mode}", unit_text(&text)));
    }
    line(&mut out, format_args!("\n[Service]"));
    // podman refuses a volume whose directory is missing (the pod's DirectoryOrCreate makes it).
    for mount in mounts.iter().filter(|m| m.writable && !m.file) {
        let text = mount.path.to_string_lossy();
        if !(text.contains(':') || text.chars().any(char::is_whitespace)) {
            line(&mut out, format_args!("ExecStartPre=/usr/bin/mkdir -p {}", unit_text(&text)));
        }
    }
    line(&mut out, format_args!("ExecReload=/usr/bin/podman exec halo /usr/bin/halo reload -c {CONFIG}"));
    line(&mut out, format_args!("Restart=on-failure\nRestartSec=1s\n"));
    line(&mut out, format_args!("[Install]\nWantedBy=multi-user.target"));
    Rendered { text: out, losses }
}

/// A value for a unit file: systemd expands `%` specifiers, so a literal one is doubled.
fn unit_text(text: &str) -> String {
    text.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(extra: &str) -> crate::Loaded {
        let text = format!(
            "{extra}\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n\
             [backend.health]\nkind = \"https\"\nca_file = \"/etc/kubernetes/pki/ca.crt\"\nclient_cert = \"/etc/kubernetes/pki/x/c.crt\"\n\
             client_key = \"/etc/kubernetes/pki/x/c.key\"\n[[backend.server]]\nname = \"m1\"\naddress = \"master1:6443\"\n"
        );
        crate::load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn the_pod_mounts_the_directories_of_the_files_the_config_names() {
        let loaded = loaded(
            "[node]\nscript_user = \"nobody\"\n[balancer]\nforwarding = \"kernel\"\n[[tracker]]\nname = \"s\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"/usr/local/lib/halo/check.sh\"]\n",
        );
        let (mounts, losses) = mounts(&loaded.config, &loaded.host_files);
        let paths: Vec<String> = mounts.iter().map(|m| format!("{}{}", m.path.display(), if m.file { " (file)" } else { "" })).collect();
        assert_eq!(paths, ["/etc/halo", "/etc/hosts (file)", "/etc/kubernetes/pki", "/usr/local/lib/halo", "/var/lib/halo"]);
        assert!(mounts.iter().any(|m| m.path == Path::new("/var/lib/halo") && m.writable), "the state directory is writable");
        assert!(losses.is_empty(), "{losses:?}");
        let pod = static_pod(&loaded.config, &loaded.host_files, IMAGE).text;
        assert!(
            pod.contains("add: [\"NET_ADMIN\", \"NET_RAW\", \"NET_BIND_SERVICE\", \"BPF\", \"PERFMON\", \"SETUID\", \"SETGID\", \"KILL\"]"),
            "{pod}"
        );
        assert!(pod.contains(&format!("image: \"{IMAGE}\"\n      imagePullPolicy: Never")), "{pod}");
        assert!(pod.contains("        path: \"/etc/hosts\"\n        type: File"), "{pod}");
        let quadlet = quadlet(&loaded.config, &loaded.host_files, IMAGE).text;
        assert!(quadlet.contains("Volume=/etc/kubernetes/pki:/etc/kubernetes/pki:ro\n"), "{quadlet}");
        assert!(quadlet.contains("Volume=/var/lib/halo:/var/lib/halo:rw\n"), "{quadlet}");
        assert!(quadlet.contains("ExecStartPre=/usr/bin/mkdir -p /var/lib/halo\n"), "podman wants the directory: {quadlet}");
        assert!(
            quadlet.contains(
                "AddCapability=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_BPF CAP_PERFMON CAP_SETUID CAP_SETGID CAP_KILL\n"
            ),
            "{quadlet}"
        );
    }

    #[test]
    fn without_script_user_the_pod_gets_no_script_capabilities_and_user_forwarding_no_bpf() {
        let tracked = loaded("[[tracker]]\nname = \"f\"\nkind = \"file\"\npath = \"/var/lib/halo/weight\"\n");
        let pod = static_pod(&tracked.config, &tracked.host_files, IMAGE);
        assert!(pod.text.contains("add: [\"NET_ADMIN\", \"NET_RAW\", \"NET_BIND_SERVICE\", \"BPF\", \"PERFMON\"]\n"), "{}", pod.text);
        let user = loaded("[balancer]\nforwarding = \"user\"\n");
        let pod_user = static_pod(&user.config, &user.host_files, IMAGE);
        assert!(pod_user.text.contains("add: [\"NET_ADMIN\", \"NET_RAW\", \"NET_BIND_SERVICE\"]\n"), "{}", pod_user.text);
        assert!(pod.text.contains("        path: \"/var/lib/halo\"\n        type: Directory"), "{}", pod.text);
        assert!(pod.losses.is_empty(), "{:?}", pod.losses);
    }

    /// What a careless config would mount: never a broad directory of the system, never over
    /// the container's own /tmp; programs the image lacks are said.
    #[test]
    fn broad_directories_are_never_mounted_whole() {
        let loaded = loaded(
            "[node]\nscript_user = \"halo\"\n[[tracker]]\nname = \"w\"\nkind = \"file\"\npath = \"/w\"\n\
             [[tracker]]\nname = \"e\"\nkind = \"file\"\npath = \"/etc/halo-maint\"\n\
             [[tracker]]\nname = \"v\"\nkind = \"file\"\npath = \"/var/lib/weight\"\n\
             [[tracker]]\nname = \"t\"\nkind = \"file\"\npath = \"/tmp/w\"\n\
             [[tracker]]\nname = \"c\"\nkind = \"script\"\ncommand = [\"/usr/bin/curl\", \"-o\", \"/dev/null\", \"https://x/healthz\"]\n",
        );
        let (mounts, losses) = mounts(&loaded.config, &loaded.host_files);
        let paths: Vec<String> = mounts.iter().map(|m| format!("{}{}", m.path.display(), if m.file { " (file)" } else { "" })).collect();
        assert_eq!(
            paths,
            [
                "/etc/halo",
                "/etc/halo-maint (file)",
                "/etc/hosts (file)",
                "/etc/kubernetes/pki",
                "/var/lib/halo",
                "/var/lib/weight (file)",
                "/w (file)"
            ]
        );
        let said = losses.join("\n");
        assert!(said.contains("/tmp/w cannot be mounted: /tmp is the container's own"), "{said}");
        assert!(said.contains("the image has no /usr/bin/curl"), "{said}");
        assert!(said.contains("script_user halo: the image knows only root and nobody"), "{said}");
        assert!(said.contains("/var/lib/weight is mounted alone"), "{said}");
    }

    #[test]
    fn a_syslog_target_mounts_its_socket() {
        let loaded = loaded("[log]\ntarget = \"syslog\"\nfacility = \"local0\"");
        let pod = static_pod(&loaded.config, &loaded.host_files, IMAGE).text;
        assert!(pod.contains("        path: \"/dev/log\"\n        type: Socket"), "{pod}");
        assert!(pod.contains("          mountPath: \"/dev/log\"\n          readOnly: false"), "{pod}");
        let unit = quadlet(&loaded.config, &loaded.host_files, IMAGE).text;
        assert!(unit.contains("Volume=/dev/log:/dev/log:rw\n"), "{unit}");
    }

    #[test]
    fn paths_are_quoted_in_the_pod_and_escaped_in_the_quadlet() {
        let spaced = loaded("[[tracker]]\nname = \"w\"\nkind = \"file\"\npath = \"/srv/halo/weight file #1/w%h\"\n");
        let pod = static_pod(&spaced.config, &spaced.host_files, IMAGE).text;
        assert!(pod.contains("mountPath: \"/srv/halo/weight file #1\""), "{pod}");
        let unit = quadlet(&spaced.config, &spaced.host_files, IMAGE);
        assert!(unit.losses.iter().any(|l| l.contains("white space cannot be a Quadlet volume")), "{:?}", unit.losses);
        let percent = loaded("[[tracker]]\nname = \"w\"\nkind = \"file\"\npath = \"/srv/halo/x%h/w\"\n");
        let unit = quadlet(&percent.config, &percent.host_files, IMAGE).text;
        assert!(unit.contains("Volume=/srv/halo/x%%h:/srv/halo/x%%h:ro\n"), "{unit}");
    }
}
