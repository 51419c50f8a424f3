//! Validation: raw structs -> typed [`Config`], reporting every problem at once with its place
//! and a hint, errors apart from warnings. Never falls back to a default for a bad value.

mod announce;
mod lb;
mod sync_group;
mod vrrp;

pub(crate) use vrrp::parse_virtual_address;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::diag::{Hint, Report};
use crate::model::{Balancer, Config, Forwarding, Log, LogFormat, LogLevel, MAX_DURATION, Node, Status};
use crate::raw::{Int, RawConfig, Text};

/// Checks the raw file; `None` when an error was found (all of them are in `report`).
pub fn validate(report: &mut Report<'_>, raw: RawConfig) -> Option<Config> {
    let node = Node {
        name: raw.node.name.map(|n| n.into_inner()),
        interface: raw.node.interface.as_ref().and_then(|i| interface_name(report, i, "node.interface")),
        script_user: raw.node.script_user.as_ref().and_then(|u| user_name(report, u)),
        worker_threads: raw.node.worker_threads.as_ref().and_then(|n| count(report, n, "node.worker_threads", 1..=256)),
        state_directory: raw.node.state_directory.as_ref().and_then(|d| state_directory(report, d)),
    };
    let status = status(report, &raw.status);
    let log = log(report, &raw.log);
    let balancer = balancer(report, &raw.balancer);
    let backends = lb::backends(report, &raw.backend);
    let frontends = lb::frontends(report, &raw.frontend, &raw.backend);
    let trackers = vrrp::trackers(report, &raw.tracker, &raw.frontend, &raw.backend);
    let instances = vrrp::instances(report, &raw.vrrp, node.interface.as_deref(), &raw.tracker);
    lb::no_vip_is_a_server(report, &raw.vrrp, &raw.backend);
    if let Some(frontends) = &frontends {
        status_port_is_free(report, &raw.status, status.listen, frontends);
    }
    let sync_groups = sync_group::sync_groups(report, &raw.sync_group, &raw.vrrp, &raw.tracker);
    let announce = announce::announcements(report, &raw.announce, &raw.vrrp, &raw.tracker);
    let bgp = announce::bgp(report, raw.bgp.as_ref(), &raw.announce);
    let mut also_tracked = sync_group::tracker_names(&raw.sync_group);
    also_tracked.extend(raw.announce.iter().flat_map(|a| a.track.iter().flatten()).map(|t| t.get_ref().as_str()));
    vrrp::unused_trackers(report, &raw.tracker, &raw.vrrp, &also_tracked);
    if raw.vrrp.is_empty() && raw.frontend.is_empty() && raw.announce.is_empty() && !report.has_errors() {
        report
            .push(crate::diag::Severity::Error, None, "nothing to run: no [[vrrp]] instance, no [[announce]] and no [[frontend]]")
            .hint("add a [[frontend]] with its [[backend]], a [[vrrp]] instance or an [[announce]], or both");
    }
    if report.has_errors() {
        return None;
    }
    Some(Config {
        node,
        status,
        log,
        balancer,
        vrrp: instances?,
        trackers: trackers?,
        frontends: frontends?,
        backends: backends?,
        sync_groups: sync_groups?,
        announce: announce?,
        bgp: bgp?,
    })
}

fn status(report: &mut Report<'_>, raw: &crate::raw::RawStatus) -> Status {
    let mut status = Status::default();
    if let Some(listen) = &raw.listen
        && let Some(addr) = socket_addr(report, listen, "status.listen")
    {
        status.listen = addr;
    }
    status.token_file = raw.token_file.as_ref().map(|t| t.get_ref().into());
    if let Some(socket) = &raw.socket {
        let path = std::path::PathBuf::from(socket.get_ref());
        if path.is_absolute() {
            status.socket = Some(path);
        } else {
            report
                .error(socket.span(), format!("status.socket `{}` is not an absolute path", socket.get_ref()))
                .hint("for example \"/run/halo/status.sock\"");
        }
    }
    if !status.listen.ip().is_loopback() && status.token_file.is_none() {
        let span = raw.listen.as_ref().map(|l| l.span()).unwrap_or(0..0);
        report
            .warning(span, format!("the status endpoint {} is reachable beyond this host without a token", status.listen))
            .hint("set status.token_file, or listen on 127.0.0.1");
    }
    status
}

/// The status endpoint must not take a port a frontend listens on.
fn status_port_is_free(report: &mut Report<'_>, raw: &crate::raw::RawStatus, listen: SocketAddr, frontends: &[crate::model::Frontend]) {
    let clash = frontends.iter().flat_map(|f| f.binds.iter().map(move |b| (f, b))).find(|(_, b)| binds_conflict(**b, listen));
    if let Some((f, bind)) = clash {
        let span = raw.listen.as_ref().map_or(0..0, |l| l.span());
        report
            .error(span, format!("status.listen {listen} takes the port of frontend `{}` ({bind})", f.name))
            .hint("give the status endpoint another port");
    }
}

/// Whether two listening addresses take the same port, so that the kernel refuses the second:
/// same port and family, and the same address or either one a wildcard.
pub(crate) fn binds_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.is_ipv4() == b.is_ipv4() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn log(report: &mut Report<'_>, raw: &crate::raw::RawLog) -> Log {
    use LogLevel::*;
    let level = raw.level.as_ref().and_then(|l| {
        choice(report, l, "log.level", &[("error", Error), ("warn", Warn), ("info", Info), ("debug", Debug), ("trace", Trace)])
    });
    let format = raw.format.as_ref().and_then(|f| choice(report, f, "log.format", &[("text", LogFormat::Text), ("json", LogFormat::Json)]));
    if let (Some(on), Some(Error | Warn)) = (&raw.connections, level)
        && *on.get_ref()
    {
        report
            .warning(on.span(), "log.connections: connection lines are written at level info, which log.level leaves out")
            .hint("set level = \"info\" to see them");
    }
    Log {
        level: level.unwrap_or_default(),
        format: format.unwrap_or_default(),
        connections: raw.connections.as_ref().is_some_and(|c| *c.get_ref()),
        target: log_target(report, raw),
    }
}

/// `[log] target`, and for syslog its `facility` and `syslog_socket` (errors for them without it).
fn log_target(report: &mut Report<'_>, raw: &crate::raw::RawLog) -> crate::model::LogTarget {
    use crate::model::{FACILITIES, LogTarget, SYSLOG_SOCKET};
    let syslog = raw.target.as_ref().and_then(|t| choice(report, t, "log.target", &[("stderr", false), ("syslog", true)])).unwrap_or(false);
    if !syslog {
        for (key, value) in [("facility", &raw.facility), ("syslog_socket", &raw.syslog_socket)] {
            if let Some(value) = value {
                report.error(value.span(), format!("log.{key} is for target = \"syslog\"")).hint("set target = \"syslog\", or remove it");
            }
        }
        return LogTarget::Stderr;
    }
    let facility = raw.facility.as_ref().and_then(|f| choice(report, f, "log.facility", &FACILITIES)).unwrap_or(FACILITIES[0].1);
    let socket = match &raw.syslog_socket {
        Some(path) if !path.get_ref().starts_with('/') || path.get_ref().chars().any(char::is_control) => {
            report.error(path.span(), format!("log.syslog_socket {:?} is not an absolute path", path.get_ref())).hint("like \"/dev/log\"");
            SYSLOG_SOCKET.into()
        }
        Some(path) => path.get_ref().into(),
        None => SYSLOG_SOCKET.into(),
    };
    LogTarget::Syslog { socket, facility }
}

/// `[balancer]`: `forwarding` is one of its three words, `auto` when absent; `kernel_after` a
/// duration, zero allowed.
fn balancer(report: &mut Report<'_>, raw: &crate::raw::RawBalancer) -> Balancer {
    let options = [("auto", Forwarding::Auto), ("kernel", Forwarding::Kernel), ("user", Forwarding::User)];
    let forwarding = raw.forwarding.as_ref().and_then(|f| choice(report, f, "balancer.forwarding", &options));
    let kernel_after = duration_or(report, &raw.kernel_after, "balancer.kernel_after", crate::KERNEL_AFTER);
    Balancer { forwarding: forwarding.unwrap_or_default(), kernel_after: kernel_after.unwrap_or(crate::KERNEL_AFTER) }
}

/// A user name as `useradd` takes it (`[a-z_][a-z0-9_.-]*`, `$` last allowed, at most 32): a
/// typo that cannot name a user is an error here, not a FAULT at run time.
fn user_name(report: &mut Report<'_>, text: &Text) -> Option<String> {
    let name = text.get_ref();
    let body = name.strip_suffix('$').unwrap_or(name);
    let valid = !body.is_empty()
        && name.len() <= 32
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if !valid {
        report
            .error(text.span(), format!("node.script_user: `{name}` is not a user name"))
            .hint("a login name: lowercase letters, digits, `_`, `.`, `-`, starting with a letter or `_`");
        return None;
    }
    Some(name.clone())
}

/// A duration string ("2s", "100ms", "1h 30m"), at most [`MAX_DURATION`].
pub(crate) fn duration(report: &mut Report<'_>, text: &Text, key: &str) -> Option<Duration> {
    match humantime::parse_duration(text.get_ref()) {
        Ok(d) if d > MAX_DURATION => {
            report
                .error(text.span(), format!("{key}: `{}` is longer than 7 days", text.get_ref()))
                .hint("no halo setting needs more than a week; was a unit mistyped?");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            report
                .error(text.span(), format!("{key}: `{}` is not a duration ({e})", text.get_ref()))
                .hint("write a number with a unit: \"100ms\", \"2s\", \"5m\", \"1h\"");
            None
        }
    }
}

/// An optional duration with its default.
pub(crate) fn duration_or(report: &mut Report<'_>, text: &Option<Text>, key: &str, default: Duration) -> Option<Duration> {
    match text {
        Some(t) => duration(report, t, key),
        None => Some(default),
    }
}

/// A positive duration (a period or a timeout cannot be zero).
pub(crate) fn positive_duration_or(report: &mut Report<'_>, text: &Option<Text>, key: &str, default: Duration) -> Option<Duration> {
    let value = duration_or(report, text, key, default)?;
    if value.is_zero() {
        if let Some(t) = text {
            report.error(t.span(), format!("{key} must be longer than zero"));
        }
        return None;
    }
    Some(value)
}

/// An integer in an inclusive range, as `u32`.
pub(crate) fn count(report: &mut Report<'_>, value: &Int, key: &str, range: RangeInclusive<u32>) -> Option<u32> {
    let v = *value.get_ref();
    match u32::try_from(v) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            report.error(value.span(), format!("{key} must be {}..={}, got {v}", range.start(), range.end()));
            None
        }
    }
}

/// An optional count with its default.
pub(crate) fn count_or(report: &mut Report<'_>, value: &Option<Int>, key: &str, range: RangeInclusive<u32>, default: u32) -> Option<u32> {
    match value {
        Some(v) => count(report, v, key, range),
        None => Some(default),
    }
}

/// One of a fixed set of words.
pub(crate) fn choice<T: Copy>(report: &mut Report<'_>, text: &Text, key: &str, options: &[(&str, T)]) -> Option<T> {
    if let Some((_, value)) = options.iter().find(|(word, _)| *word == text.get_ref()) {
        return Some(*value);
    }
    let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
    report.error(text.span(), format!("{key}: unknown value `{}`", text.get_ref())).hint(format!("one of: {}", words.join(", ")));
    None
}

/// An IP address literal.
pub(crate) fn ip(report: &mut Report<'_>, text: &Text, key: &str) -> Option<IpAddr> {
    match text.get_ref().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            report
                .error(text.span(), format!("{key}: `{}` is not an IP address", text.get_ref()))
                .hint("halo does not resolve names: write the address, like 10.0.0.1 or fd00::1");
            None
        }
    }
}

/// `ip:port` (IPv6 in brackets), with a precise reason when it is not.
pub(crate) fn socket_addr(report: &mut Report<'_>, text: &Text, key: &str) -> Option<SocketAddr> {
    let s = text.get_ref();
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            report.error(text.span(), format!("{key}: port 0 in `{s}`")).hint("give the real port, 1..=65535");
            None
        }
        Ok(addr) => Some(addr),
        Err(_) if s.parse::<IpAddr>().is_ok() => {
            let example = match s.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => format!("[{s}]:6443"),
                _ => format!("{s}:6443"),
            };
            report.error(text.span(), format!("{key}: `{s}` has no port")).hint(format!("write it with its port, like \"{example}\""));
            None
        }
        Err(_) => {
            report
                .error(text.span(), format!("{key}: `{s}` is not an `ip:port` address"))
                .hint("write \"10.0.0.1:6443\" or \"[fd00::1]:6443\"");
            None
        }
    }
}

/// The longest name of an instance, tracker, group, frontend, backend, server or announcement.
pub const NAME_MAX: usize = 64;

/// `node.state_directory`: an absolute path without control characters.
fn state_directory(report: &mut Report<'_>, text: &Text) -> Option<std::path::PathBuf> {
    let path = text.get_ref();
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        report.error(text.span(), format!("node.state_directory {path:?} is not an absolute path")).hint("like \"/var/lib/halo\"");
        return None;
    }
    Some(path.into())
}

/// Reports every name seen twice in a list, and every name outside the safe set: names reach
/// rendered files (keepalived.conf, haproxy.cfg, the systemd unit), metric labels, logs and
/// hooks' arguments, where a newline or a space would start a new directive or word.
pub(crate) fn unique_names<'t>(report: &mut Report<'_>, what: &str, names: impl IntoIterator<Item = &'t Text>) {
    let mut seen: Vec<&Text> = Vec::new();
    for name in names {
        if seen.iter().any(|s| s.get_ref() == name.get_ref()) {
            report.error(name.span(), format!("duplicate {what} name `{}`", name.get_ref())).hint("names must be unique");
        } else {
            seen.push(name);
        }
        if name.get_ref().trim().is_empty() {
            report.error(name.span(), format!("empty {what} name"));
        } else if let Some(problem) = name_problem(name.get_ref()) {
            report
                .error(name.span(), format!("{what} name {:?} {problem}", name.get_ref()))
                .hint(format!("a name is 1..={NAME_MAX} letters, digits and `.` `_` `-` `:` `@`"));
        }
    }
}

/// What is wrong with a (non-empty) name, if anything.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.len() > NAME_MAX {
        return Some(format!("is {} bytes long", name.len()));
    }
    let bad = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))?;
    Some(format!("holds {bad:?}"))
}

/// An interface name as the kernel takes one (`dev_valid_name`): 1..=15 bytes (IFNAMSIZ less
/// its terminating NUL), not `.` or `..`, no `/`, `:`, white space or control character. The
/// name reaches the systemd unit and keepalived.conf, so nothing else may pass.
pub(crate) fn interface_name(report: &mut Report<'_>, text: &Text, key: &str) -> Option<String> {
    let name = text.get_ref();
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > 15 {
        Some(format!("is {} bytes long (the kernel takes 15 at most)", name.len()))
    } else if name == "." || name == ".." {
        Some("is not a name".to_string())
    } else {
        name.chars().find(|c| matches!(c, '/' | ':') || c.is_whitespace() || c.is_control()).map(|c| format!("holds {c:?}"))
    };
    match problem {
        Some(problem) => {
            report
                .error(text.span(), format!("{key}: interface name {name:?} {problem}"))
                .hint("an interface name as `ip link` shows it: 1..=15 bytes, no `/`, `:` or white space");
            None
        }
        None => Some(name.clone()),
    }
}

/// An argument vector for a command run without a shell: non-empty, absolute program path.
pub(crate) fn command(report: &mut Report<'_>, argv: &toml::Spanned<Vec<Text>>, key: &str) -> Option<Vec<String>> {
    let Some(program) = argv.get_ref().first() else {
        report
            .error(argv.span(), format!("{key}: empty command"))
            .hint("give the program and its arguments: [\"/usr/local/bin/check\", \"--fast\"]");
        return None;
    };
    if !program.get_ref().starts_with('/') {
        report
            .error(program.span(), format!("{key}: `{}` is not an absolute path", program.get_ref()))
            .hint("commands run without a shell and without a PATH search: name the program by its full path");
        return None;
    }
    Some(argv.get_ref().iter().map(|a| a.get_ref().clone()).collect())
}
