//! Config -> systemd unit and Kubernetes static-pod manifest for running halo itself.

use super::Rendered;
use super::write::line;
use crate::model::Config;

/// Where the packaged binary and configuration live.
pub const BINARY: &str = "/usr/bin/halo";
/// The configuration the unit and the pod run with.
pub const CONFIG: &str = "/etc/halo/halo.toml";

/// Every capability a feature of halo needs: NET_ADMIN (addresses, links, their settings over
/// netlink), NET_RAW (VRRP, ARP and NA sockets), NET_BIND_SERVICE (ports below 1024), SETUID and
/// SETGID (scripts run as `[node] script_user`), KILL (ending such a script at its timeout).
pub const CAPABILITIES: [&str; 6] = ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "SETUID", "SETGID", "KILL"];

/// A hardened unit, the same for every configuration, so that the packaged one fits whatever
/// /etc/halo/halo.toml says: Type=notify (halo reports READY, RELOADING, STOPPING), reload
/// through `halo reload` (which validates first), the capabilities of [`CAPABILITIES`], kernel
/// tunables read-only (a virtual MAC's settings go over netlink). No ExecStopPost: VIPs carry a
/// kernel lifetime and halo-guard removes what a dead halo held (VIPs, virtual-MAC links), and
/// the next start replaces a stale virtual-MAC link.
///
/// `halo upgrade` (SIGUSR2) needs nothing more: the running daemon, still the main process,
/// starts its successor inside the unit's cgroup and, once the successor has taken over, sends
/// `MAINPID=<successor>` and `READY=1` itself, so `NotifyAccess=main` (written out, it is the
/// default of Type=notify) suffices; from then on the successor is the main process and the old
/// one, draining, says nothing more. `systemctl reload` stays a configuration reload.
///
/// The config only adds warnings: what scripts and hooks write needs `ReadWritePaths=` (a
/// drop-in of the user's, since the unit cannot know it).
pub fn systemd(config: &Config) -> Rendered {
    let mut out = String::new();
    line(&mut out, format_args!("# halo.service, as `halo render systemd` writes it: the same for every halo.toml."));
    line(&mut out, format_args!("[Unit]\nDescription=halo: highly available Kubernetes API endpoint (TCP balancer + VRRP)"));
    line(&mut out, format_args!("Documentation=man:halo(1)\nWants=network-online.target\nAfter=network-online.target\n"));
    line(&mut out, format_args!("[Service]\nType=notify\nNotifyAccess=main"));
    line(&mut out, format_args!("ExecStart={BINARY} run -c {CONFIG} --pid-file /run/halo/halo.pid"));
    line(&mut out, format_args!("ExecReload={BINARY} reload -c {CONFIG} --pid-file /run/halo/halo.pid"));
    line(&mut out, format_args!("Restart=on-failure\nRestartSec=1s\nRuntimeDirectory=halo\nLimitNOFILE=65536"));
    let caps: Vec<String> = CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect();
    let caps = caps.join(" ");
    line(&mut out, format_args!("AmbientCapabilities={caps}\nCapabilityBoundingSet={caps}\nNoNewPrivileges=yes"));
    line(&mut out, format_args!("ProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nPrivateDevices=yes"));
    line(&mut out, format_args!("ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectControlGroups=yes"));
    line(
        &mut out,
        format_args!("ProtectClock=yes\nProtectHostname=yes\nRestrictNamespaces=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes"),
    );
    line(&mut out, format_args!("LockPersonality=yes\nMemoryDenyWriteExecute=yes\nSystemCallArchitectures=native"));
    line(&mut out, format_args!("RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_PACKET AF_UNIX\n"));
    line(&mut out, format_args!("[Install]\nWantedBy=multi-user.target"));
    let losses = if config.trackers.iter().any(|t| matches!(t.kind, crate::model::TrackerKind::Script { .. }))
        || config.vrrp.iter().any(|v| v.notify != crate::model::Notify::default())
    {
        vec![
            "scripts and notify hooks run under ProtectSystem=strict: what they write needs ReadWritePaths= in a drop-in \
             (systemctl edit halo)"
                .to_string(),
        ]
    } else {
        Vec::new()
    };
    Rendered { text: out, losses }
}

/// A static pod for /etc/kubernetes/manifests: host network, the three capabilities, the
/// configuration from the host, liveness on the status endpoint's /healthz.
pub fn static_pod(config: &Config) -> Rendered {
    let mut out = String::new();
    let listen = config.status.listen;
    let mut losses = Vec::new();
    if !listen.ip().is_loopback() && !listen.ip().is_unspecified() {
        losses.push(format!("the liveness probe asks {listen}: make sure the kubelet can reach it"));
    }
    let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
    line(&mut out, format_args!("# halo static pod rendered by `halo render static-pod`; install as /etc/kubernetes/manifests/halo.yaml."));
    line(
        &mut out,
        format_args!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: halo\n  namespace: kube-system\n  labels:\n    component: halo"),
    );
    line(&mut out, format_args!("spec:\n  hostNetwork: true\n  priorityClassName: system-node-critical"));
    line(&mut out, format_args!("  containers:\n    - name: halo\n      image: halo:{}", env!("CARGO_PKG_VERSION")));
    line(&mut out, format_args!("      command: [\"{BINARY}\", \"run\", \"-c\", \"{CONFIG}\", \"--pid-file\", \"/run/halo/halo.pid\"]"));
    line(
        &mut out,
        format_args!(
            "      securityContext:\n        capabilities:\n          drop: [\"ALL\"]\n          add: [\"NET_ADMIN\", \"NET_RAW\", \"NET_BIND_SERVICE\"]"
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
    line(
        &mut out,
        format_args!(
            "      volumeMounts:\n        - name: config\n          mountPath: /etc/halo\n          readOnly: true\n        - name: run\n          mountPath: /run/halo"
        ),
    );
    line(
        &mut out,
        format_args!(
            "  volumes:\n    - name: config\n      hostPath:\n        path: /etc/halo\n        type: Directory\n    - name: run\n      emptyDir: {{}}"
        ),
    );
    Rendered { text: out, losses }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn unit(extra_node: &str, vrrp_extra: &str) -> String {
        let text = format!(
            "[node]\n{extra_node}\n[[vrrp]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\nvirtual_addresses = [\"10.0.0.10/24\"]\n{vrrp_extra}\n"
        );
        let loaded = crate::load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e:?}"));
        systemd(&loaded.config).text
    }

    #[test]
    fn the_unit_is_the_same_for_every_configuration() {
        let plain = unit("", "");
        assert_eq!(plain, unit("script_user = \"halo\"", "virtual_mac = true"));
        assert!(!plain.contains("10.0.0.10") && !plain.contains("eth0") && !plain.contains("ExecStopPost"), "{plain}");
        assert!(plain.contains("ProtectKernelTunables=yes"), "{plain}");
        assert!(
            plain.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_KILL\n"),
            "{plain}"
        );
        // halo upgrade: the old main process names its successor (MAINPID=), which main allows.
        assert!(plain.contains("Type=notify\nNotifyAccess=main\n"), "{plain}");
    }
}
