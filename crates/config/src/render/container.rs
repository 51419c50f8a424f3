//! Config -> what runs halo's image: a Kubernetes static pod and a podman Quadlet unit, both
//! with the mounts and capabilities this config needs and nothing more.
//!
//! Both run the image `scripts/image.sh` builds ([`IMAGE`]), whose entry point is a tiny init
//! (tini: it reaps the orphans of scripts, whose parent halo is not, and passes signals on) in
//! front of `/usr/bin/halo`; they give only halo's arguments. The image is loaded on each host
//! and never pulled (`imagePullPolicy: Never`): no registry is needed, and none is trusted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Rendered;
use super::systemd::{CAPABILITIES, CONFIG};
use super::write::line;
use crate::host_files::{HOSTS, HostFile, is_system_program};
use crate::model::Config;

/// The image reference, the same in podman's and containerd's stores (`localhost/` names no
/// registry that could be asked for it).
pub const IMAGE: &str = concat!("localhost/halo:", env!("CARGO_PKG_VERSION"));
/// The directory the configuration is mounted from.
const CONFIG_DIRECTORY: &str = "/etc/halo";
/// halo's arguments after the image's entry point.
const ARGUMENTS: [&str; 5] = ["run", "-c", CONFIG, "--pid-file", "/run/halo/halo.pid"];

/// One read-only mount from the host: a directory (so that a file replaced by rename, a renewed
/// certificate, is seen) or, for a file of a directory that cannot be mounted whole (/etc/hosts),
/// the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mount {
    /// The path, the same on the host and in the container.
    pub path: PathBuf,
    /// A single file rather than a directory.
    pub file: bool,
}

/// What the container needs from the host: /etc/halo, each other directory holding a file the
/// config names (the innermost, unless one already mounted holds it), /etc/hosts when servers
/// are named. System programs (`/bin/sh`) are the image's own. Relative paths cannot be mounted:
/// they are returned apart.
pub fn mounts(files: &[HostFile]) -> (Vec<Mount>, Vec<&HostFile>) {
    let mut directories = BTreeSet::from([PathBuf::from(CONFIG_DIRECTORY)]);
    let mut single = BTreeSet::new();
    let mut relative = Vec::new();
    for file in files {
        if file.path.is_relative() {
            relative.push(file);
        } else if file.path == Path::new(HOSTS) {
            single.insert(file.path.clone());
        } else if !is_system_program(&file.path)
            && let Some(parent) = file.path.parent()
        {
            directories.insert(parent.to_path_buf());
        }
    }
    // A directory inside another mounted one comes with it.
    let outermost: Vec<PathBuf> =
        directories.iter().filter(|d| !directories.iter().any(|outer| outer != *d && d.starts_with(outer))).cloned().collect();
    let mut all: Vec<Mount> = outermost.into_iter().map(|path| Mount { path, file: false }).collect();
    all.extend(single.into_iter().map(|path| Mount { path, file: true }));
    (all, relative)
}

/// The capabilities this config needs, without the `CAP_` prefix: NET_ADMIN, NET_RAW and
/// NET_BIND_SERVICE always; SETUID, SETGID and KILL when scripts run as `script_user`.
pub fn capabilities(config: &Config) -> Vec<&'static str> {
    let needed = if config.node.script_user.is_some() { CAPABILITIES.len() } else { 3 };
    CAPABILITIES[..needed].to_vec()
}

fn losses(relative: &[&HostFile]) -> Vec<String> {
    relative
        .iter()
        .map(|f| format!("{} ({}): {} is relative and cannot be mounted: give an absolute path", f.location, f.key, f.path.display()))
        .collect()
}

/// A static pod for /etc/kubernetes/manifests: host network, the node's resolver (the cluster's
/// DNS may sit behind the very endpoint halo provides), the capabilities and mounts this config
/// needs, a liveness probe on the status endpoint's /healthz.
pub fn static_pod(config: &Config, files: &[HostFile]) -> Rendered {
    let mut out = String::new();
    let listen = config.status.listen;
    let (mounts, relative) = mounts(files);
    let mut losses = losses(&relative);
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
    line(&mut out, format_args!("  containers:\n    - name: halo\n      image: {IMAGE}\n      imagePullPolicy: Never"));
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
        line(&mut out, format_args!("        - name: host-{i}\n          mountPath: {}\n          readOnly: true", mount.path.display()));
    }
    line(&mut out, format_args!("        - name: run\n          mountPath: /run/halo\n        - name: tmp\n          mountPath: /tmp"));
    line(&mut out, format_args!("  volumes:"));
    for (i, mount) in mounts.iter().enumerate() {
        let kind = if mount.file { "File" } else { "Directory" };
        line(&mut out, format_args!("    - name: host-{i}\n      hostPath:\n        path: {}\n        type: {kind}", mount.path.display()));
    }
    line(
        &mut out,
        format_args!("    - name: run\n      emptyDir:\n        medium: Memory\n    - name: tmp\n      emptyDir:\n        medium: Memory"),
    );
    Rendered { text: out, losses }
}

/// A podman Quadlet unit (`/etc/containers/systemd/halo.container`, podman 4.4 or later) for an
/// ostree host (ALT Container OS, Fedora CoreOS): the same image, mounts and capabilities as the
/// static pod, host network, systemd's notifications passed through (halo says READY itself), a
/// read-only root with /run and /tmp in memory.
pub fn quadlet(config: &Config, files: &[HostFile]) -> Rendered {
    let mut out = String::new();
    let (mounts, relative) = mounts(files);
    line(&mut out, format_args!("# halo.container, as `halo render quadlet` writes it for this halo.toml; install as"));
    line(&mut out, format_args!("# /etc/containers/systemd/halo.container, then `systemctl daemon-reload && systemctl start halo`."));
    line(&mut out, format_args!("[Unit]\nDescription=halo: highly available Kubernetes API endpoint (TCP balancer + VRRP)"));
    line(&mut out, format_args!("Wants=network-online.target\nAfter=network-online.target\n"));
    line(&mut out, format_args!("[Container]\nImage={IMAGE}\nContainerName=halo\nNetwork=host\nNotify=true"));
    line(&mut out, format_args!("Exec={}", ARGUMENTS.join(" ")));
    line(&mut out, format_args!("DropCapability=ALL"));
    let capabilities: Vec<String> = capabilities(config).iter().map(|c| format!("CAP_{c}")).collect();
    line(&mut out, format_args!("AddCapability={}", capabilities.join(" ")));
    line(&mut out, format_args!("NoNewPrivileges=true\nReadOnly=true"));
    for mount in &mounts {
        line(&mut out, format_args!("Volume={0}:{0}:ro", mount.path.display()));
    }
    // ReadOnly: podman mounts /run and /tmp as tmpfs then (its --read-only-tmpfs); halo makes
    // /run/halo. Keys of podman 4.4's Quadlet only.
    line(&mut out, format_args!(""));
    line(&mut out, format_args!("[Service]\nRestart=on-failure\nRestartSec=1s\n"));
    line(&mut out, format_args!("[Install]\nWantedBy=multi-user.target"));
    Rendered { text: out, losses: losses(&relative) }
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
            "[node]\nscript_user = \"nobody\"\n[[tracker]]\nname = \"s\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"/usr/local/lib/halo/check.sh\"]\n",
        );
        let (mounts, relative) = mounts(&loaded.host_files);
        let paths: Vec<String> = mounts.iter().map(|m| format!("{}{}", m.path.display(), if m.file { " (file)" } else { "" })).collect();
        assert_eq!(paths, ["/etc/halo", "/etc/kubernetes/pki", "/usr/local/lib/halo", "/etc/hosts (file)"]);
        assert!(relative.is_empty());
        let pod = static_pod(&loaded.config, &loaded.host_files).text;
        assert!(pod.contains("add: [\"NET_ADMIN\", \"NET_RAW\", \"NET_BIND_SERVICE\", \"SETUID\", \"SETGID\", \"KILL\"]"), "{pod}");
        assert!(pod.contains(&format!("image: {IMAGE}\n      imagePullPolicy: Never")), "{pod}");
        assert!(pod.contains("        path: /etc/hosts\n        type: File"), "{pod}");
        let quadlet = quadlet(&loaded.config, &loaded.host_files).text;
        assert!(quadlet.contains("Volume=/etc/kubernetes/pki:/etc/kubernetes/pki:ro\n"), "{quadlet}");
        assert!(
            quadlet.contains("AddCapability=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_KILL\n"),
            "{quadlet}"
        );
    }

    #[test]
    fn without_script_user_the_pod_gets_three_capabilities_and_relative_paths_are_said() {
        let loaded = loaded("[[tracker]]\nname = \"f\"\nkind = \"file\"\npath = \"weight\"\n");
        let pod = static_pod(&loaded.config, &loaded.host_files);
        assert!(pod.text.contains("add: [\"NET_ADMIN\", \"NET_RAW\", \"NET_BIND_SERVICE\"]\n"), "{}", pod.text);
        assert_eq!(pod.losses, ["t.toml:4:8 (tracker f: path): weight is relative and cannot be mounted: give an absolute path"]);
    }
}
