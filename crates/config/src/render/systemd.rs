//! Config -> systemd unit and Kubernetes static-pod manifest for running halo itself.

use super::Rendered;
use super::write::line;
use crate::model::Config;

/// Where the packaged binary and configuration live.
pub const BINARY: &str = "/usr/bin/halo";
/// The configuration the unit and the pod run with.
pub const CONFIG: &str = "/etc/halo/halo.toml";

/// A hardened unit: Type=notify (halo reports READY, RELOADING, STOPPING), reload through
/// `halo reload` (which validates first), only the three capabilities halo needs, and an
/// ExecStopPost that removes the virtual addresses if halo could not (killed, crashed).
///
/// `halo upgrade` (SIGUSR2) needs nothing more: the running daemon, still the main process,
/// starts its successor inside the unit's cgroup and, once the successor has taken over, sends
/// `MAINPID=<successor>` and `READY=1` itself, so `NotifyAccess=main` (written out, it is the
/// default of Type=notify) suffices; from then on the successor is the main process and the old
/// one, draining, says nothing more. `systemctl reload` stays a configuration reload.
pub fn systemd(config: &Config) -> Rendered {
    let mut out = String::new();
    line(&mut out, format_args!("# halo.service rendered by `halo render systemd`; install as /etc/systemd/system/halo.service."));
    line(&mut out, format_args!("[Unit]\nDescription=halo: highly available Kubernetes API endpoint (TCP balancer + VRRP)"));
    line(&mut out, format_args!("Documentation=man:halo(1)\nWants=network-online.target\nAfter=network-online.target\n"));
    line(&mut out, format_args!("[Service]\nType=notify\nNotifyAccess=main"));
    line(&mut out, format_args!("ExecStart={BINARY} run -c {CONFIG} --pid-file /run/halo/halo.pid"));
    line(&mut out, format_args!("ExecReload={BINARY} reload -c {CONFIG} --pid-file /run/halo/halo.pid"));
    for v in &config.vrrp {
        // "-": an address or interface already gone (the normal case) is not a failure.
        if v.virtual_mac {
            line(&mut out, format_args!("ExecStopPost=-/sbin/ip link del vrrp.{}", v.virtual_router_id.get()));
            continue;
        }
        for address in &v.virtual_addresses {
            line(&mut out, format_args!("ExecStopPost=-/sbin/ip address del {address} dev {}", v.interface));
        }
    }
    line(&mut out, format_args!("Restart=on-failure\nRestartSec=1s\nRuntimeDirectory=halo\nLimitNOFILE=65536"));
    // Scripts run as [node] script_user: switching to it takes CAP_SETUID and CAP_SETGID.
    let caps = if config.node.script_user.is_some() {
        "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID"
    } else {
        "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"
    };
    line(&mut out, format_args!("AmbientCapabilities={caps}\nCapabilityBoundingSet={caps}\nNoNewPrivileges=yes"));
    line(&mut out, format_args!("ProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nPrivateDevices=yes"));
    // A virtual MAC sets its parent's ARP keys under /proc/sys: kernel tunables stay writable.
    let tunables = if config.vrrp.iter().any(|v| v.virtual_mac) { "no" } else { "yes" };
    line(
        &mut out,
        format_args!("ProtectKernelTunables={tunables}\nProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectControlGroups=yes"),
    );
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
        vec!["scripts and notify hooks run under ProtectSystem=strict: add ReadWritePaths= for what they write".to_string()]
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
    fn the_unit_grants_what_the_configuration_uses() {
        let plain = unit("", "");
        assert!(plain.contains("ProtectKernelTunables=yes") && plain.contains("ExecStopPost=-/sbin/ip address del 10.0.0.10/24 dev eth0"));
        assert!(!plain.contains("CAP_SETUID"));
        // halo upgrade: the old main process names its successor (MAINPID=), which main allows.
        assert!(plain.contains("Type=notify\nNotifyAccess=main\n"), "{plain}");
        // A virtual MAC writes its parent's ARP keys and lives on vrrp.51.
        let vmac = unit("", "virtual_mac = true");
        assert!(vmac.contains("ProtectKernelTunables=no") && vmac.contains("ExecStopPost=-/sbin/ip link del vrrp.51"), "{vmac}");
        // Scripts as another user need to switch to it.
        let user = unit("script_user = \"halo\"", "");
        assert!(user.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID"), "{user}");
    }
}
