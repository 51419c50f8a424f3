//! `halo host check` of the kernel parameters a role needs, now and at boot.

use super::report::Report;
use crate::cli::Role;
use crate::host::sysctl;
use crate::host::verdict::Verdict;

/// The checks of the keys `role` needs: their value now, and no file read later at boot that
/// sets another.
pub(super) fn sysctl_checks(report: &mut Report, role: Role) {
    let files = sysctl::boot_order(std::path::Path::new("/"));
    for want in sysctl::wants(role) {
        let check = want.key.to_string();
        match halo_hostnet::sysctl::read(want.key) {
            Ok(None) if want.absent_ok => report.ok(check, "absent: br_netfilter is not loaded, so bridged frames skip netfilter anyway"),
            Ok(None) if want.key.starts_with("net.bridge.") => {
                report.add(
                    check,
                    Verdict::Fail,
                    "absent: br_netfilter is not loaded",
                    format!("modprobe br_netfilter, then halo host apply --role {}", role.name()),
                );
            }
            Ok(None) => report.add(check, Verdict::Fail, "absent", "this kernel lacks the key"),
            Ok(Some(value)) if value == want.value => report.ok(check, format!("{value} ({})", want.why)),
            Ok(Some(value)) => report.add(
                check,
                Verdict::Fail,
                format!("{value}, the role {} needs {}: {}", role.name(), want.value, want.why),
                format!("halo host apply --role {}", role.name()),
            ),
            Err(e) => report.add(check, Verdict::Fail, format!("{e:#}"), ""),
        }
        if let Some((file, value)) = sysctl::last_setting(&files, want.key)
            && value != want.value
        {
            report.add(
                format!("{} at boot", want.key),
                Verdict::Warn,
                format!("{} sets it to {value} and is read last", file.display()),
                format!("change that line (halo host apply writes {} and leaves other files alone)", sysctl::DROP_IN),
            );
        }
    }
    if role != Role::Node
        && let Ok(Some(forward)) = halo_hostnet::sysctl::read("net.ipv4.ip_forward")
    {
        let why = match role {
            Role::Lb => "a balancer proxies connections, it does not route packets",
            _ => "bridged guests need no routing; libvirt's NAT networks turn it on themselves",
        };
        report.ok("net.ipv4.ip_forward", format!("{forward} (not required: {why})"));
    }
}
