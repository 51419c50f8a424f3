//! keepalived.conf -> VRRP instances and trackers. The file is read into a tree of blocks
//! (`keyword args { children }`), with `include` expanded in place, then mapped.

use std::net::IpAddr;
use std::time::Duration;

use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};

use super::check_script::ScriptFacts;
use super::lines::{Resolver, keepalived_seconds, words};
use super::{Sink, Source};
use crate::defaults as d;
use crate::model::{ChecksumMode, Frontend, Gratuitous, InitialState, Notify, Tracker, TrackerKind, VrrpInstance};
use crate::validate::parse_virtual_address;

/// Includes nest at most this deep (keepalived's own limit is similar); deeper is a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

/// One statement and, for a block, its children.
#[derive(Debug, Clone)]
struct Node {
    file: String,
    line: usize,
    words: Vec<String>,
    children: Option<Vec<Node>>,
}

impl Node {
    fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
    fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
}

/// A token with its place.
#[derive(Debug)]
struct Token {
    file: String,
    line: usize,
    text: String,
    brace: bool,
}

fn tokenize(file: &str, text: &str, resolver: &dyn Resolver, depth: usize, sink: &mut Sink, out: &mut Vec<Token>) {
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some(ws) = words(raw, &['#', '!']) else {
            sink.error(file, line, "unterminated quote", "");
            continue;
        };
        if ws.first().is_some_and(|w| w == "include") {
            include(file, line, ws.get(1).map_or("", String::as_str), resolver, depth, sink, out);
            continue;
        }
        for w in ws {
            // Braces may touch words: `unicast_peer {10.0.0.2}`.
            let mut rest = w.as_str();
            while !rest.is_empty() {
                let cut = rest.find(['{', '}']).unwrap_or(rest.len());
                if cut > 0 {
                    out.push(Token { file: file.to_string(), line, text: rest[..cut].to_string(), brace: false });
                }
                if cut < rest.len() {
                    out.push(Token { file: file.to_string(), line, text: rest[cut..=cut].to_string(), brace: true });
                    rest = &rest[cut + 1..];
                } else {
                    rest = "";
                }
            }
        }
    }
}

fn include(file: &str, line: usize, pattern: &str, resolver: &dyn Resolver, depth: usize, sink: &mut Sink, out: &mut Vec<Token>) {
    if depth >= MAX_INCLUDE_DEPTH {
        sink.error(file, line, format!("include nested deeper than {MAX_INCLUDE_DEPTH}"), "an include loop?");
        return;
    }
    match resolver.include(file, pattern) {
        Ok(files) => {
            for (name, text) in files {
                tokenize(&name, &text, resolver, depth + 1, sink, out);
            }
        }
        Err(why) => sink.error(file, line, format!("cannot include `{pattern}`: {why}"), ""),
    }
}

/// Builds the block tree. Statements end at a line change; `{` opens a block for the statement
/// before it (on the same line or alone on the next one).
fn tree(tokens: &[Token], pos: &mut usize, depth: usize, sink: &mut Sink) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        if t.brace && t.text == "}" {
            if depth == 0 {
                sink.error(&t.file, t.line, "`}` without a matching `{`", "");
                *pos += 1;
                continue;
            }
            *pos += 1;
            return nodes;
        }
        if t.brace {
            *pos += 1;
            if depth > 64 {
                sink.error(&t.file, t.line, "blocks nested too deep", "");
                continue;
            }
            let children = tree(tokens, pos, depth + 1, sink);
            match nodes.last_mut() {
                Some(last) if last.children.is_none() => last.children = Some(children),
                _ => sink.error(&t.file, t.line, "`{` without a keyword before it", ""),
            }
            continue;
        }
        let (file, line) = (t.file.clone(), t.line);
        let mut ws = Vec::new();
        while *pos < tokens.len() && !tokens[*pos].brace && tokens[*pos].line == line && tokens[*pos].file == file {
            ws.push(tokens[*pos].text.clone());
            *pos += 1;
        }
        nodes.push(Node { file, line, words: ws, children: None });
    }
    if depth > 0
        && let Some(last) = tokens.last()
    {
        sink.error(&last.file, last.line, "a `{` block is never closed", "add the missing `}`");
    }
    nodes
}

/// What the keepalived side contributes to the config.
#[derive(Debug, Default)]
pub(super) struct KeepalivedImport {
    pub router_id: Option<String>,
    pub instances: Vec<VrrpInstance>,
    pub trackers: Vec<Tracker>,
}

/// Global defaults that instances inherit.
#[derive(Debug, Clone)]
struct Globals {
    version: i64,
    gratuitous: Gratuitous,
}

pub(super) fn import(
    src: Source<'_>,
    resolver: &dyn Resolver,
    script: Option<&ScriptFacts>,
    frontends: &[Frontend],
    sink: &mut Sink,
) -> KeepalivedImport {
    let mut tokens = Vec::new();
    tokenize(src.file, src.text, resolver, 0, sink, &mut tokens);
    let mut pos = 0;
    let nodes = tree(&tokens, &mut pos, 0, sink);
    let mut out = KeepalivedImport::default();
    // keepalived's default protocol version is 2; halo's is 3, so the import says 2 explicitly.
    let mut globals = Globals { version: 2, gratuitous: Gratuitous::default() };
    for node in nodes.iter().filter(|n| n.keyword() == "global_defs") {
        global_defs(node, &mut out, &mut globals, sink);
    }
    for node in &nodes {
        match node.keyword() {
            "global_defs" | "vrrp_instance" => {}
            "vrrp_script" => out.trackers.extend(vrrp_script(node, script, frontends, sink)),
            "vrrp_track_file" | "track_file" => out.trackers.extend(track_file(node, sink)),
            "vrrp_sync_group" => {
                sink.unmapped(&node.file, node.line, "vrrp_sync_group", "halo has no sync groups: each instance fails over on its own")
            }
            other => sink.unmapped(&node.file, node.line, other, ""),
        }
    }
    for node in nodes.iter().filter(|n| n.keyword() == "vrrp_instance") {
        if let Some(instance) = vrrp_instance(node, &globals, &mut out.trackers, sink) {
            out.instances.push(instance);
        }
    }
    mastership_warnings(&out, &nodes, sink);
    out
}

fn global_defs(node: &Node, out: &mut KeepalivedImport, g: &mut Globals, sink: &mut Sink) {
    for c in node.children() {
        match c.keyword() {
            "router_id" => out.router_id = Some(c.arg(1).to_string()),
            "vrrp_version" => g.version = c.arg(1).parse().unwrap_or(2),
            "vrrp_garp_master_delay" => g.gratuitous.delay = seconds(c, 1, sink).unwrap_or(g.gratuitous.delay),
            "vrrp_garp_master_repeat" => g.gratuitous.repeat = c.arg(1).parse().unwrap_or(g.gratuitous.repeat),
            "vrrp_garp_master_refresh" => g.gratuitous.refresh = seconds(c, 1, sink).filter(|d| !d.is_zero()),
            "vrrp_garp_master_refresh_repeat" => g.gratuitous.refresh_repeat = c.arg(1).parse().unwrap_or(1),
            "enable_script_security" | "script_user" => {
                sink.warn(&c.file, c.line, format!("`{}` is not needed: halo runs commands without a shell", c.keyword()), "");
            }
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
}

fn seconds(node: &Node, i: usize, sink: &mut Sink) -> Option<Duration> {
    let value = keepalived_seconds(node.arg(i));
    if value.is_none() {
        sink.error(&node.file, node.line, format!("`{}` needs seconds, got `{}`", node.keyword(), node.arg(i)), "");
    }
    value
}

fn integer(node: &Node, i: usize, sink: &mut Sink) -> Option<i64> {
    let value = node.arg(i).parse().ok();
    if value.is_none() {
        sink.error(&node.file, node.line, format!("`{}` needs a number, got `{}`", node.keyword(), node.arg(i)), "");
    }
    value
}

/// keepalived script strings are split like a shell would (quotes, escapes), then run directly.
fn argv(node: &Node, i: usize, sink: &mut Sink) -> Option<Vec<String>> {
    let text = node.words.get(i..).map(|w| w.join(" ")).unwrap_or_default();
    let Some(argv) = words(&text, &[]).filter(|a| !a.is_empty()) else {
        sink.error(&node.file, node.line, format!("`{}` needs a command", node.keyword()), "");
        return None;
    };
    if !argv[0].starts_with('/') {
        sink.error(
            &node.file,
            node.line,
            format!("`{}` runs `{}`, not an absolute path", node.keyword(), argv[0]),
            "halo runs commands without a shell or PATH search: write the program's full path",
        );
        return None;
    }
    Some(argv)
}

fn vrrp_script(node: &Node, script: Option<&ScriptFacts>, frontends: &[Frontend], sink: &mut Sink) -> Option<Tracker> {
    let name = node.arg(1).to_string();
    let (mut command, mut interval, mut timeout, mut weight, mut fall, mut rise) = (None, Duration::from_secs(1), None, None, 1u32, 1u32);
    let mut timing_line = node.line;
    for c in node.children() {
        match c.keyword() {
            "script" => command = argv(c, 1, sink),
            "interval" => (interval, timing_line) = (seconds(c, 1, sink).unwrap_or(interval), c.line),
            "timeout" => timeout = seconds(c, 1, sink),
            "weight" => {
                weight = integer(c, 1, sink).filter(|w| *w != 0);
                if c.arg(2) == "reverse" {
                    sink.unmapped(&c.file, c.line, "weight ... reverse", "");
                }
            }
            "fall" => (fall, timing_line) = (integer(c, 1, sink).map_or(1, |f| f.clamp(1, 999) as u32), c.line),
            "rise" => rise = integer(c, 1, sink).map_or(1, |r| r.clamp(1, 999) as u32),
            "user" => sink.warn(&c.file, c.line, "`user` is not imported: halo runs trackers as itself", ""),
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    let command = command?;
    let weight = weight.map(|w| w.clamp(-254, 254) as i32);
    let detection = interval * fall;
    if detection >= Duration::from_secs(5) {
        sink.warn(
            &node.file,
            timing_line,
            format!(
                "vrrp_script `{name}`: interval {} × fall {fall} = {}: a dead balancer keeps the VIP that long",
                humantime::format_duration(interval),
                humantime::format_duration(detection)
            ),
            "halo's built-in balancer tracker defaults to 200ms × 2",
        );
    }
    let is_balancer = script.is_some_and(|s| std::path::Path::new(&command[0]).file_name() == Some(std::ffi::OsStr::new(&s.file_name)));
    let kind = if is_balancer {
        let frontend = script.and_then(|s| s.frontend_for(frontends)).or_else(|| frontends.first().map(|f| f.name.clone()));
        match frontend {
            Some(frontend) => {
                sink.note(
                    format!("tracker {name}"),
                    format!(
                        "Replaces {}: the built-in balancer tracker checks the local frontend directly (no curl, no shell).",
                        command[0]
                    ),
                );
                if detection >= Duration::from_secs(5) {
                    sink.note(
                        format!("tracker {name}"),
                        "interval/fall/rise are the script's; delete them for halo's defaults (200ms × 2).".to_string(),
                    );
                }
                TrackerKind::Balancer { frontend, min_healthy: d::MIN_HEALTHY, interval }
            }
            None => {
                sink.warn(
                    &node.file,
                    node.line,
                    format!("vrrp_script `{name}` is the check script, but no haproxy frontend was imported for it to track"),
                    "pass --haproxy too; imported as a script tracker",
                );
                TrackerKind::Script { command, interval, timeout: timeout.unwrap_or(interval) }
            }
        }
    } else {
        if script.is_none() && command[0].contains("check_apiserver") {
            sink.warn(
                &node.file,
                node.line,
                format!("vrrp_script `{name}` looks like the balancer check script"),
                "pass it with --check-script to replace it by halo's built-in balancer tracker",
            );
        }
        TrackerKind::Script { command, interval, timeout: timeout.unwrap_or(interval) }
    };
    Some(Tracker { name, weight, fall, rise, kind })
}

fn track_file(node: &Node, sink: &mut Sink) -> Option<Tracker> {
    let name = node.arg(1).to_string();
    let (mut path, mut weight) = (None, Some(1));
    for c in node.children() {
        match c.keyword() {
            "file" => path = Some(c.arg(1).to_string()),
            "weight" => weight = integer(c, 1, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32),
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    let Some(path) = path else {
        sink.error(&node.file, node.line, format!("track_file `{name}` has no `file`"), "");
        return None;
    };
    Some(Tracker { name, weight, fall: 1, rise: 1, kind: TrackerKind::File { path: path.into() } })
}

fn vrrp_instance(node: &Node, g: &Globals, trackers: &mut Vec<Tracker>, sink: &mut Sink) -> Option<VrrpInstance> {
    let name = node.arg(1).to_string();
    let mut i = Partial { version: g.version, gratuitous: g.gratuitous.clone(), priority: 100, ..Partial::default() };
    for c in node.children() {
        instance_directive(&name, c, &mut i, trackers, sink);
    }
    let version = Version::new(i.version).map_err(|e| sink.error(&node.file, node.line, e.to_string(), "")).ok()?;
    let Some(vrid) = i.vrid else {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no virtual_router_id"), "");
        return None;
    };
    let Some(interface) = i.interface.clone() else {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no interface"), "");
        return None;
    };
    let advert = i.advert.unwrap_or(Duration::from_secs(1));
    let advert_interval = AdvertInterval::new(version, advert)
        .map_err(|e| sink.error(&node.file, i.advert_line.unwrap_or(node.line), e.to_string(), ""))
        .ok()?;
    let priority = Priority::new(i.priority).map_err(|e| sink.error(&node.file, node.line, e.to_string(), "")).ok()?;
    if i.addresses.is_empty() {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no virtual_ipaddress"), "");
        return None;
    }
    if i.auth.is_some() && version == Version::V3 {
        sink.error(&node.file, node.line, "authentication with VRRP version 3 (keepalived ignores it)", "");
        return None;
    }
    Some(VrrpInstance {
        name,
        interface,
        virtual_router_id: vrid,
        priority,
        version,
        advert_interval,
        preempt: i.preempt,
        preempt_delay: i.preempt_delay,
        initial_state: i.state,
        virtual_addresses: i.addresses,
        auth_password: i.auth,
        unicast_source: i.unicast_source,
        unicast_peers: i.unicast_peers,
        gratuitous: i.gratuitous,
        checksum: i.checksum,
        virtual_mac: i.vmac,
        accept: i.accept,
        track: i.track,
        notify: i.notify,
    })
}

/// An instance while its directives are read.
#[derive(Debug)]
struct Partial {
    version: i64,
    vrid: Option<Vrid>,
    interface: Option<String>,
    priority: i64,
    advert: Option<Duration>,
    advert_line: Option<usize>,
    preempt: bool,
    preempt_delay: Duration,
    state: InitialState,
    addresses: Vec<ipnet::IpNet>,
    auth: Option<String>,
    unicast_source: Option<IpAddr>,
    unicast_peers: Vec<IpAddr>,
    gratuitous: Gratuitous,
    checksum: ChecksumMode,
    vmac: bool,
    accept: bool,
    track: Vec<String>,
    notify: Notify,
}

impl Default for Partial {
    fn default() -> Self {
        Self {
            version: 2,
            vrid: None,
            interface: None,
            priority: 100,
            advert: None,
            advert_line: None,
            preempt: true,
            preempt_delay: Duration::ZERO,
            state: InitialState::Backup,
            addresses: Vec::new(),
            auth: None,
            unicast_source: None,
            unicast_peers: Vec::new(),
            gratuitous: Gratuitous::default(),
            checksum: ChecksumMode::PseudoHeader,
            vmac: false,
            accept: true,
            track: Vec::new(),
            notify: Notify::default(),
        }
    }
}

fn instance_directive(name: &str, c: &Node, i: &mut Partial, trackers: &mut Vec<Tracker>, sink: &mut Sink) {
    let (file, line) = (c.file.as_str(), c.line);
    match c.keyword() {
        "state" => match c.arg(1) {
            "MASTER" => i.state = InitialState::Master,
            "BACKUP" => i.state = InitialState::Backup,
            other => sink.error(file, line, format!("unknown state `{other}`"), "MASTER or BACKUP"),
        },
        "interface" => i.interface = Some(c.arg(1).to_string()),
        "virtual_router_id" => {
            i.vrid = integer(c, 1, sink).and_then(|v| Vrid::new(v).map_err(|e| sink.error(file, line, e.to_string(), "")).ok())
        }
        "priority" => i.priority = integer(c, 1, sink).unwrap_or(100),
        "advert_int" => (i.advert, i.advert_line) = (seconds(c, 1, sink), Some(line)),
        "version" => i.version = integer(c, 1, sink).unwrap_or(i.version),
        "native_ipv6" => i.version = 3,
        "nopreempt" => i.preempt = false,
        "preempt" => i.preempt = true,
        "preempt_delay" => i.preempt_delay = seconds(c, 1, sink).unwrap_or_default(),
        "authentication" => authentication(c, i, sink),
        "virtual_ipaddress" => virtual_ipaddress(c, i, sink),
        "unicast_src_ip" => i.unicast_source = address(c, c.arg(1), sink),
        "unicast_peer" => {
            for p in c.children() {
                if p.words.len() > 1 {
                    sink.unmapped(&p.file, p.line, &p.words[1..].join(" "), "halo checks the TTL of unicast adverts itself");
                }
                i.unicast_peers.extend(address(p, p.keyword(), sink));
            }
        }
        "track_script" => track_script(name, c, i, trackers, sink),
        "track_interface" => track_interface(c, i, trackers, sink),
        "track_file" => {
            for t in c.children() {
                i.track.push(t.keyword().to_string());
            }
        }
        "notify_master" => i.notify.master = argv(c, 1, sink),
        "notify_backup" => i.notify.backup = argv(c, 1, sink),
        "notify_fault" => i.notify.fault = argv(c, 1, sink),
        "notify_stop" => i.notify.stop = argv(c, 1, sink),
        "notify" => i.notify.change = argv(c, 1, sink),
        "garp_master_delay" => i.gratuitous.delay = seconds(c, 1, sink).unwrap_or(i.gratuitous.delay),
        "garp_master_repeat" => i.gratuitous.repeat = integer(c, 1, sink).map_or(i.gratuitous.repeat, |r| r.clamp(1, 100) as u32),
        "garp_master_refresh" => i.gratuitous.refresh = seconds(c, 1, sink).filter(|d| !d.is_zero()),
        "garp_master_refresh_repeat" => i.gratuitous.refresh_repeat = integer(c, 1, sink).map_or(1, |r| r.clamp(1, 100) as u32),
        "use_vmac" => {
            i.vmac = true;
            if c.words.len() > 1 {
                sink.warn(file, line, "use_vmac: the interface name and MAC are chosen by halo (vrrp.<id>, 00-00-5E-00-01-<id>)", "");
            }
        }
        "vmac_xmit_base" => {}
        "accept" => i.accept = true,
        "no_accept" => i.accept = false,
        "old_unicast_checksum" => i.checksum = ChecksumMode::AsV2,
        other => sink.unmapped(file, line, other, ""),
    }
}

fn address(node: &Node, text: &str, sink: &mut Sink) -> Option<IpAddr> {
    let value = text.parse().ok();
    if value.is_none() {
        sink.error(&node.file, node.line, format!("`{text}` is not an IP address"), "");
    }
    value
}

fn authentication(c: &Node, i: &mut Partial, sink: &mut Sink) {
    let mut kind = None;
    for a in c.children() {
        match a.keyword() {
            "auth_type" => kind = Some((a.arg(1).to_string(), a.line)),
            "auth_pass" => i.auth = Some(a.arg(1).chars().take(8).collect()),
            other => sink.unmapped(&a.file, a.line, other, ""),
        }
    }
    match kind {
        Some((k, line)) if k == "PASS" => sink.warn(
            &c.file,
            line,
            "auth_type PASS sends the password in clear text in every advert: it stops accidents, not attacks",
            "imported as auth_password (VRRPv2); VRRPv3 drops authentication altogether (RFC 5798 §9)",
        ),
        Some((k, line)) => {
            sink.error(
                &c.file,
                line,
                format!("auth_type {k} is not supported"),
                "halo supports PASS (VRRPv2) only; AH was removed from VRRPv3",
            );
            i.auth = None;
        }
        None => sink.error(&c.file, c.line, "authentication without auth_type", ""),
    }
}

/// `ADDR[/PREFIX] [brd X] [dev IF] [label L] [scope S]` per line.
fn virtual_ipaddress(c: &Node, i: &mut Partial, sink: &mut Sink) {
    for a in c.children() {
        let net = parse_virtual_address(a.keyword());
        match net {
            Some(net) => i.addresses.push(net),
            None => sink.error(&a.file, a.line, format!("`{}` is not an address", a.keyword()), ""),
        }
        // The broadcast address halo (and the kernel) derive from the prefix.
        let derived = match net {
            Some(ipnet::IpNet::V4(v4)) if v4.prefix_len() < 31 => Some(v4.broadcast().to_string()),
            _ => None,
        };
        let mut rest = a.words.iter().skip(1);
        while let Some(option) = rest.next() {
            let value = rest.next().map_or("", String::as_str);
            match option.as_str() {
                "dev" if Some(value) == i.interface.as_deref() => {}
                "brd" if Some(value) == derived.as_deref() || value == "+" => {}
                other => sink.unmapped(
                    &a.file,
                    a.line,
                    &format!("virtual_ipaddress option {other} {value}"),
                    "halo adds the address to the instance's interface",
                ),
            }
        }
    }
}

fn track_script(instance: &str, c: &Node, i: &mut Partial, trackers: &mut [Tracker], sink: &mut Sink) {
    for t in c.children() {
        let name = t.keyword();
        i.track.push(name.to_string());
        if t.arg(1) == "weight" {
            let weight = integer(t, 2, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32);
            match trackers.iter_mut().find(|tr| tr.name == name) {
                Some(tracker) => {
                    if tracker.weight != weight {
                        sink.warn(
                            &t.file,
                            t.line,
                            format!("vrrp_instance `{instance}` overrides the weight of `{name}`"),
                            "halo keeps one weight per tracker: the override is applied to the tracker",
                        );
                    }
                    tracker.weight = weight;
                }
                None => sink.error(&t.file, t.line, format!("track_script `{name}` is not defined"), ""),
            }
        } else if !trackers.iter().any(|tr| tr.name == name) {
            sink.error(&t.file, t.line, format!("track_script `{name}` is not defined"), "");
        }
    }
}

fn track_interface(c: &Node, i: &mut Partial, trackers: &mut Vec<Tracker>, sink: &mut Sink) {
    for t in c.children() {
        let interface = t.keyword().to_string();
        if i.interface.as_deref() == Some(interface.as_str()) {
            sink.warn(
                &t.file,
                t.line,
                format!("track_interface {interface} is the instance's own interface: keepalived ignores it, and so does the import"),
                "the instance goes to FAULT when its own link is down",
            );
            continue;
        }
        let weight = if t.arg(1) == "weight" { integer(t, 2, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32) } else { None };
        let name = format!("link-{interface}");
        if !trackers.iter().any(|tr| tr.name == name) {
            trackers.push(Tracker { name: name.clone(), weight, fall: 1, rise: 1, kind: TrackerKind::Interface { interface } });
        }
        i.track.push(name);
    }
}

/// A negative weight moves the VIP only to a peer whose priority lies between the degraded and
/// the base priority; say so when no known peer lies there.
fn mastership_warnings(out: &KeepalivedImport, nodes: &[Node], sink: &mut Sink) {
    for instance in &out.instances {
        let peers: Vec<u8> = out
            .instances
            .iter()
            .filter(|o| o.virtual_router_id == instance.virtual_router_id && o.name != instance.name)
            .map(|o| o.priority.get())
            .collect();
        let node = nodes.iter().find(|n| n.keyword() == "vrrp_instance" && n.arg(1) == instance.name);
        let (file, line) = node.map_or(("", 0), |n| (n.file.as_str(), n.line));
        for tracker in out.trackers.iter().filter(|t| instance.track.contains(&t.name)) {
            let Some(weight) = tracker.weight.filter(|w| *w < 0) else {
                continue;
            };
            let base = i32::from(instance.priority.get());
            let degraded = (base + weight).max(1);
            let window = degraded + 1..=base;
            let moves = peers.iter().any(|p| window.contains(&i32::from(*p)));
            if !moves && (!peers.is_empty() || -weight < 10) {
                sink.warn(
                    file,
                    line,
                    format!(
                        "vrrp_instance `{}`: a failing `{}` takes priority {base} to {degraded}; the VIP moves only to a backup with priority {}..={base}{}",
                        instance.name,
                        tracker.name,
                        degraded + 1,
                        if peers.is_empty() { " (no backup's priority is known here)".to_string() } else { format!(", and the known peers have {peers:?}") }
                    ),
                    format!("give `{}` a weight larger than the gap to the backups, like -50", tracker.name),
                );
            }
        }
    }
}
