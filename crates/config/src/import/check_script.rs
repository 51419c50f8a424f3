//! The classic track script (check_apiserver.sh): read for what it checks, so that its job goes
//! to halo's built-in balancer tracker and its defects are reported. It is never run.

use std::net::IpAddr;

use super::{Sink, Source};
use crate::model::{Config, Frontend};

/// What the script says about itself.
#[derive(Debug, Default)]
pub(crate) struct ScriptFacts {
    /// The script's file name, to recognise it in a keepalived `vrrp_script`.
    pub file_name: String,
    /// `NAME=value` assignments: (name, value, line).
    vars: Vec<(String, String, usize)>,
    /// curl invocations: (line, has --fail).
    curls: Vec<(usize, bool)>,
    /// Variables tested with `ip addr | grep`: (name, line, whole-word match).
    grepped: Vec<(String, usize, bool)>,
}

impl ScriptFacts {
    fn var(&self, name: &str) -> Option<&(String, String, usize)> {
        self.vars.iter().rev().find(|(n, _, _)| n == name)
    }

    /// Ports the script probes (values of variables named like a port).
    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.vars.iter().filter(|(n, _, _)| n.contains("PORT")).filter_map(|(_, v, _)| v.parse().ok())
    }

    /// The frontend the script probes: one bound on the script's port.
    pub fn frontend_for(&self, frontends: &[Frontend]) -> Option<String> {
        let ports: Vec<u16> = self.ports().collect();
        frontends.iter().find(|f| f.binds.iter().any(|b| ports.contains(&b.port()))).map(|f| f.name.clone())
    }
}

pub(crate) fn analyse(src: Source<'_>, sink: &mut Sink) -> ScriptFacts {
    let file_name = std::path::Path::new(src.file).file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let mut facts = ScriptFacts { file_name, ..ScriptFacts::default() };
    for (index, raw) in src.text.lines().enumerate() {
        let line = index + 1;
        let code = raw.split(" #").next().unwrap_or("").trim();
        if code.starts_with('#') || code.is_empty() {
            continue;
        }
        if let Some((name, value)) = code.split_once('=') {
            let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if is_name && !name.starts_with(|c: char| c.is_ascii_digit()) {
                facts.vars.push((name.to_string(), value.trim_matches(['"', '\'']).to_string(), line));
                continue;
            }
        }
        for segment in code.split(['|', ';', '&']) {
            let tokens: Vec<&str> = segment.split_whitespace().collect();
            if tokens.first() == Some(&"curl") {
                let fail = tokens
                    .iter()
                    .any(|t| *t == "--fail" || *t == "--fail-with-body" || (t.starts_with('-') && !t.starts_with("--") && t.contains('f')));
                facts.curls.push((line, fail));
            }
            if tokens.first() == Some(&"grep") {
                let whole = tokens.iter().any(|t| t.starts_with('-') && !t.starts_with("--") && (t.contains('w') || t.contains('x')));
                for t in &tokens[1..] {
                    let name = t.trim_matches(['$', '{', '}', '"', '/']);
                    if t.contains('$') && !name.is_empty() {
                        facts.grepped.push((name.to_string(), line, whole));
                    }
                }
            }
        }
    }
    if facts.curls.is_empty() {
        sink.warn(
            src.file,
            1,
            "the check script runs no curl: halo cannot tell what it checked",
            "it is replaced by the balancer tracker all the same",
        );
    }
    facts
}

/// Reports the script's defects against the imported configuration.
pub(crate) fn compare(facts: &ScriptFacts, src: Source<'_>, config: &Config, sink: &mut Sink) {
    for (line, fail) in &facts.curls {
        if !fail {
            sink.warn(
                src.file,
                *line,
                "curl without --fail exits 0 on any HTTP status: a balancer answering 500 or 503 passes the check",
                "halo's balancer tracker counts only servers whose HTTPS check passed",
            );
        }
    }
    let vips: Vec<IpAddr> = config.vrrp.iter().flat_map(|v| v.virtual_addresses.iter().map(|a| a.addr())).collect();
    for (name, grep_line, whole) in &facts.grepped {
        let Some((_, value, line)) = facts.var(name) else {
            continue;
        };
        let Ok(address) = value.parse::<IpAddr>() else {
            continue;
        };
        if !vips.is_empty() && !vips.contains(&address) {
            let shown: Vec<String> = vips.iter().map(ToString::to_string).collect();
            sink.warn(
                src.file,
                *line,
                format!("{name}={value} is not the keepalived virtual address ({}): the check through the VIP (line {grep_line}) tests another address, so a broken VIP path is never noticed", shown.join(", ")),
                "halo's balancer tracker needs no address: it checks the frontend that serves the VIP",
            );
        }
        if *whole {
            continue;
        }
        sink.warn(
            src.file,
            *grep_line,
            format!("`ip addr | grep {value}` also matches longer addresses that start with it ({value}0, {value}1, ...)"),
            "",
        );
    }
    if config.frontends.is_empty() || facts.frontend_for(&config.frontends).is_some() {
        return;
    }
    let ports: Vec<String> = facts.ports().map(|p| p.to_string()).collect();
    if !ports.is_empty() {
        sink.warn(
            src.file,
            1,
            format!("the check script probes port {}, which no imported frontend binds", ports.join(", ")),
            "the balancer tracker watches the first frontend instead",
        );
    }
}
