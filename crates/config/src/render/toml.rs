//! Config -> halo.toml text: the importer's output and the renderers' round-trip partner. Keys
//! equal to their defaults are left out where the default is the obvious choice.

use super::write::{comments, dur, line, list, quote};
use crate::defaults as d;
use crate::import::Notes;
use crate::model::*;

/// Writes a configuration as halo.toml, with `notes` as comments above their items.
pub fn halo_toml(config: &Config, notes: &Notes) -> String {
    let mut out = String::new();
    comments(&mut out, notes, "header");
    if notes.contains_key("header") {
        out.push('\n');
    }
    host_sections(&mut out, config);
    for v in &config.vrrp {
        vrrp(&mut out, v, notes);
    }
    for t in &config.trackers {
        tracker(&mut out, t, notes);
    }
    for g in &config.sync_groups {
        super::sync_group::toml(&mut out, g, notes);
    }
    for f in &config.frontends {
        comments(&mut out, notes, &format!("frontend {}", f.name));
        line(&mut out, format_args!("[[frontend]]\nname = {}\nbind = {}\nbackend = {}", quote(&f.name), list(&f.binds), quote(&f.backend)));
        line(&mut out, format_args!("max_connections = {}", f.max_connections));
        line(&mut out, format_args!("queue_timeout = {}", dur(f.queue_timeout)));
        line(&mut out, format_args!("first_byte_timeout = {}", dur(f.first_byte_timeout)));
        if !f.allow.is_empty() {
            line(&mut out, format_args!("allow = {}", list(&f.allow)));
        }
        out.push('\n');
    }
    for b in &config.backends {
        backend(&mut out, b, notes);
    }
    for a in &config.announce {
        line(&mut out, format_args!("[[announce]]\nname = {}\naddress = {}", quote(&a.name), quote(&a.address.to_string())));
        line(&mut out, format_args!("interface = {}\ntrack = {}\n", quote(&a.interface), list(&a.track)));
    }
    if let Some(bgp) = &config.bgp {
        line(&mut out, format_args!("[bgp]\nasn = {}", bgp.asn));
        if let Some(id) = bgp.router_id {
            line(&mut out, format_args!("router_id = {}", quote(&id.to_string())));
        }
        for n in &bgp.neighbors {
            line(
                &mut out,
                format_args!("\n[[bgp.neighbor]]\naddress = {}\nasn = {}\nbfd = {}", quote(&n.address.to_string()), n.asn, n.bfd),
            );
        }
        out.push('\n');
    }
    out
}

/// `[node]`, `[status]`, `[log]` and `[balancer]`, each when it differs from the defaults.
fn host_sections(out: &mut String, config: &Config) {
    if config.node != Node::default() {
        line(out, format_args!("[node]"));
        if let Some(name) = &config.node.name {
            line(out, format_args!("name = {}", quote(name)));
        }
        if let Some(interface) = &config.node.interface {
            line(out, format_args!("interface = {}", quote(interface)));
        }
        if let Some(user) = &config.node.script_user {
            line(out, format_args!("script_user = {}", quote(user)));
        }
        if let Some(threads) = config.node.worker_threads {
            line(out, format_args!("worker_threads = {threads}"));
        }
        if let Some(directory) = &config.node.state_directory {
            line(out, format_args!("state_directory = {}", quote(&directory.display().to_string())));
        }
        out.push('\n');
    }
    if config.status != Status::default() {
        line(out, format_args!("[status]\nlisten = {}", quote(&config.status.listen.to_string())));
        if let Some(token) = &config.status.token_file {
            line(out, format_args!("token_file = {}", quote(&token.display().to_string())));
        }
        if let Some(socket) = &config.status.socket {
            line(out, format_args!("socket = {}", quote(&socket.display().to_string())));
        }
        out.push('\n');
    }
    if config.log != Log::default() {
        let level = format!("{:?}", config.log.level).to_lowercase();
        let format = format!("{:?}", config.log.format).to_lowercase();
        line(out, format_args!("[log]\nlevel = {}\nformat = {}", quote(&level), quote(&format)));
        if config.log.connections {
            line(out, format_args!("connections = true"));
        }
        if let crate::model::LogTarget::Syslog { socket, facility } = &config.log.target {
            let name = crate::model::FACILITIES.iter().find(|(_, n)| n == facility).map_or("daemon", |(name, _)| name);
            line(out, format_args!("target = \"syslog\"\nfacility = {}", quote(name)));
            line(out, format_args!("syslog_socket = {}", quote(&socket.display().to_string())));
        }
        out.push('\n');
    }
    if config.balancer != Balancer::default() {
        let forwarding = format!("{:?}", config.balancer.forwarding).to_lowercase();
        line(out, format_args!("[balancer]\nforwarding = {}\nkernel_after = {}\n", quote(&forwarding), dur(config.balancer.kernel_after)));
    }
}

fn vrrp(out: &mut String, v: &VrrpInstance, notes: &Notes) {
    comments(out, notes, &format!("vrrp {}", v.name));
    line(out, format_args!("[[vrrp]]\nname = {}\ninterface = {}", quote(&v.name), quote(&v.interface)));
    line(out, format_args!("virtual_router_id = {}\npriority = {}\nversion = {}", v.virtual_router_id, v.priority, v.version));
    line(out, format_args!("advert_interval = {}", dur(v.advert_interval.as_duration())));
    if !v.preempt {
        line(out, format_args!("preempt = false"));
    }
    if !v.preempt_delay.is_zero() {
        line(out, format_args!("preempt_delay = {}", dur(v.preempt_delay)));
    }
    if v.initial_state == InitialState::Master {
        line(out, format_args!("initial_state = \"master\""));
    }
    line(out, format_args!("virtual_addresses = {}", list(&v.virtual_addresses)));
    if !v.excluded_addresses.is_empty() {
        line(out, format_args!("excluded_addresses = {}", list(&v.excluded_addresses)));
    }
    if let Some(password) = &v.auth_password {
        line(out, format_args!("auth_password = {}", quote(password)));
    }
    if let Some(source) = v.unicast_source {
        line(out, format_args!("unicast_source = {}", quote(&source.to_string())));
    }
    if !v.unicast_peers.is_empty() {
        line(out, format_args!("unicast_peers = {}", list(&v.unicast_peers)));
    }
    if v.checksum == ChecksumMode::AsV2 {
        line(out, format_args!("checksum = \"as-v2\""));
    }
    if v.virtual_mac {
        line(out, format_args!("virtual_mac = true"));
    }
    if !v.accept {
        line(out, format_args!("accept = false"));
    }
    if !v.track.is_empty() {
        line(out, format_args!("track = {}", list(&v.track)));
    }
    if v.gratuitous != Gratuitous::default() {
        let g = &v.gratuitous;
        line(out, format_args!("\n[vrrp.gratuitous]\ndelay = {}\nrepeat = {}", dur(g.delay), g.repeat));
        line(out, format_args!("refresh = {}\nrefresh_repeat = {}", dur(g.refresh.unwrap_or_default()), g.refresh_repeat));
    }
    if v.notify != Notify::default() {
        let n = &v.notify;
        line(out, format_args!("\n[vrrp.notify]"));
        let hooks = [("master", &n.master), ("backup", &n.backup), ("fault", &n.fault), ("stop", &n.stop), ("change", &n.change)];
        for (key, argv) in hooks {
            if let Some(argv) = argv {
                line(out, format_args!("{key} = {}", list(argv)));
            }
        }
        line(out, format_args!("timeout = {}", dur(n.timeout)));
    }
    out.push('\n');
}

fn tracker(out: &mut String, t: &Tracker, notes: &Notes) {
    comments(out, notes, &format!("tracker {}", t.name));
    let kind = match t.kind {
        TrackerKind::Balancer { .. } => "balancer",
        TrackerKind::Script { .. } => "script",
        TrackerKind::Interface { .. } => "interface",
        TrackerKind::File { .. } => "file",
    };
    line(out, format_args!("[[tracker]]\nname = {}\nkind = \"{kind}\"", quote(&t.name)));
    match &t.kind {
        TrackerKind::Balancer { frontend, min_healthy, interval } => {
            line(out, format_args!("frontend = {}\nmin_healthy = {min_healthy}\ninterval = {}", quote(frontend), dur(*interval)));
        }
        TrackerKind::Script { command, interval, timeout } => {
            line(out, format_args!("command = {}\ninterval = {}\ntimeout = {}", list(command), dur(*interval), dur(*timeout)));
        }
        TrackerKind::Interface { interface } => line(out, format_args!("interface = {}", quote(interface))),
        TrackerKind::File { path } => line(out, format_args!("path = {}", quote(&path.display().to_string()))),
    }
    match t.weight {
        Some(w) => line(out, format_args!("weight = {w}")),
        None => line(out, format_args!("# no weight: a failing tracker puts its instances into FAULT")),
    }
    // An interface tracker follows the link as it changes: fall and rise do not apply.
    if matches!(t.kind, TrackerKind::Interface { .. }) {
        line(out, format_args!(""));
    } else {
        line(out, format_args!("fall = {}\nrise = {}\n", t.fall, t.rise));
    }
}

fn backend(out: &mut String, b: &Backend, notes: &Notes) {
    comments(out, notes, &format!("backend {}", b.name));
    let balance = match b.balance {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastConn => "leastconn",
        Balance::First => "first",
    };
    line(out, format_args!("[[backend]]\nname = {}\nbalance = \"{balance}\"", quote(&b.name)));
    line(out, format_args!("retries = {}\nredispatch = {}", b.retries, b.redispatch));
    line(out, format_args!("connect_timeout = {}\nidle_timeout = {}", dur(b.connect_timeout), dur(b.idle_timeout)));
    if b.drain_timeout != d::DRAIN_TIMEOUT {
        line(out, format_args!("drain_timeout = {}", dur(b.drain_timeout)));
    }
    if b.servers.iter().any(|s| s.address.host_name().is_some()) {
        let prefer = match b.resolve_prefer {
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
        };
        line(out, format_args!("resolve_interval = {}\nresolve_prefer = \"{prefer}\"", dur(b.resolve_interval)));
    }
    if let Some(version) = b.send_proxy {
        let version = match version {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        };
        line(out, format_args!("send_proxy = \"{version}\""));
    }
    health(out, &b.health);
    for s in &b.servers {
        line(out, format_args!("\n[[backend.server]]\nname = {}\naddress = {}", quote(&s.name), quote(&s.address.to_string())));
        if s.weight != d::SERVER_WEIGHT {
            line(out, format_args!("weight = {}", s.weight));
        }
        if s.backup {
            line(out, format_args!("backup = true"));
        }
        if s.disabled {
            line(out, format_args!("disabled = true"));
        }
    }
    out.push('\n');
}

fn health(out: &mut String, h: &HealthCheck) {
    let kind = match h.kind {
        CheckKind::None => "none",
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Tls => "tls",
        CheckKind::Https => "https",
    };
    line(out, format_args!("\n[backend.health]\nkind = \"{kind}\""));
    if h.kind == CheckKind::None {
        line(out, format_args!("# no probe: every enabled server takes traffic, as haproxy's servers without `check`"));
        return;
    }
    if matches!(h.kind, CheckKind::Http | CheckKind::Https) {
        line(out, format_args!("path = {}\nexpect_status = {}", quote(&h.path), h.expect_status));
    }
    if matches!(h.kind, CheckKind::Tls | CheckKind::Https) {
        if let TlsVerify::Ca { ca_file, server_name } = &h.verify {
            line(out, format_args!("ca_file = {}", quote(&ca_file.display().to_string())));
            if let Some(name) = server_name {
                line(out, format_args!("server_name = {}", quote(name)));
            }
        }
        if let Some(c) = &h.client_cert {
            line(
                out,
                format_args!(
                    "client_cert = {}\nclient_key = {}",
                    quote(&c.cert_file.display().to_string()),
                    quote(&c.key_file.display().to_string())
                ),
            );
        }
    }
    line(out, format_args!("interval = {}\nfast_interval = {}\ntimeout = {}", dur(h.interval), dur(h.fast_interval), dur(h.timeout)));
    line(out, format_args!("fall = {}\nrise = {}", h.fall, h.rise));
}
