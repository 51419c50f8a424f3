//! The systemd unit that runs halo itself from the package.

use super::Rendered;
use super::write::line;
use crate::model::Config;

/// Where the packaged binary and configuration live.
pub const BINARY: &str = "/usr/bin/halo";
/// The configuration the unit and the pod run with.
pub const CONFIG: &str = "/etc/halo/halo.toml";

/// Every capability a feature of halo needs: NET_ADMIN (addresses, links, their settings over
/// netlink), NET_RAW (VRRP, ARP and NA sockets), NET_BIND_SERVICE (ports below 1024), BPF and
/// PERFMON (the kernel data path: its program and maps, and the program's look at a socket's
/// send buffer), SETUID and SETGID (scripts run as `[node] script_user`), KILL (ending such a
/// script at its timeout).
pub const CAPABILITIES: [&str; 8] = ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "BPF", "PERFMON", "SETUID", "SETGID", "KILL"];

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
pub fn systemd(config: &Config, files: &[crate::host_files::HostFile]) -> Rendered {
    let mut out = String::new();
    line(&mut out, format_args!("# halo.service, as `halo render systemd` writes it: the same for every halo.toml."));
    line(&mut out, format_args!("[Unit]\nDescription=halo: highly available Kubernetes API endpoint (TCP balancer + VRRP)"));
    line(&mut out, format_args!("Documentation=man:halo(1)\nWants=network-online.target\nAfter=network-online.target\n"));
    line(&mut out, format_args!("[Service]\nType=notify\nNotifyAccess=main"));
    line(&mut out, format_args!("ExecStart={BINARY} run -c {CONFIG} --pid-file /run/halo/halo.pid"));
    line(&mut out, format_args!("ExecReload={BINARY} reload -c {CONFIG} --pid-file /run/halo/halo.pid"));
    line(&mut out, format_args!("Restart=on-failure\nRestartSec=1s\nRuntimeDirectory=halo\nStateDirectory=halo\nLimitNOFILE=65536"));
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
    let mut losses = Vec::new();
    let hooks = config.vrrp.iter().any(|v| v.notify != crate::model::Notify::default())
        || config.sync_groups.iter().any(|g| g.notify != crate::model::Notify::default());
    if hooks || config.trackers.iter().any(|t| matches!(t.kind, crate::model::TrackerKind::Script { .. })) {
        losses.push(
            "scripts and notify hooks run under ProtectSystem=strict: what they write needs ReadWritePaths= in a drop-in \
             (systemctl edit halo)"
                .to_string(),
        );
    }
    if config.node.state_directory() != std::path::Path::new(crate::model::Node::STATE_DIRECTORY) {
        losses.push(format!(
            "[node] state_directory {} is not the unit's StateDirectory (/var/lib/halo): add ReadWritePaths= for it in a drop-in",
            config.node.state_directory().display()
        ));
    }
    // PrivateTmp gives halo a /tmp and /var/tmp of its own; ProtectHome hides the homes.
    for file in files {
        let hidden = ["/tmp", "/var/tmp", "/home", "/root", "/run/user"].into_iter().find(|d| file.path.starts_with(d));
        if let Some(hidden) = hidden {
            losses.push(format!(
                "{} ({}): {} is out of the unit's sight (PrivateTmp=, ProtectHome=: its {hidden} is not the host's): move it",
                file.location,
                file.key,
                file.path.display()
            ));
        }
    }
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
        systemd(&loaded.config, &loaded.host_files).text
    }

    #[test]
    fn the_unit_is_the_same_for_every_configuration() {
        let plain = unit("", "");
        assert_eq!(plain, unit("script_user = \"halo\"", "virtual_mac = true"));
        assert!(!plain.contains("10.0.0.10") && !plain.contains("eth0") && !plain.contains("ExecStopPost"), "{plain}");
        assert!(plain.contains("ProtectKernelTunables=yes"), "{plain}");
        assert!(
            plain.contains(
                "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_BPF CAP_PERFMON CAP_SETUID CAP_SETGID CAP_KILL\n"
            ),
            "{plain}"
        );
        // halo upgrade: the old main process names its successor (MAINPID=), which main allows.
        assert!(plain.contains("Type=notify\nNotifyAccess=main\n"), "{plain}");
    }
}
