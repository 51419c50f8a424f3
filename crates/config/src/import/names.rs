//! Names halo.toml cannot take. keepalived and haproxy accept almost any word as a name; halo
//! keeps names to a safe set (they reach rendered files, metric labels and hooks' arguments), so
//! an imported name outside it is renamed, with a warning, and every reference follows.

use std::collections::{BTreeMap, BTreeSet};

use super::Sink;
use crate::model::{Config, TrackerKind};
use crate::validate::{NAME_MAX, name_problem};

/// Renames every name of `config` that halo.toml would refuse; `files` name the keepalived and
/// haproxy inputs, for the warnings.
pub(super) fn make_safe(config: &mut Config, sink: &mut Sink, (keepalived, haproxy): (&str, &str)) {
    let renamed = rename_all(config.vrrp.iter_mut().map(|v| &mut v.name));
    for group in &mut config.sync_groups {
        follow(&mut group.instances, &renamed);
    }
    report(sink, keepalived, "vrrp", &renamed);
    let renamed = rename_all(config.trackers.iter_mut().map(|t| &mut t.name));
    for v in &mut config.vrrp {
        follow(&mut v.track, &renamed);
    }
    for g in &mut config.sync_groups {
        follow(&mut g.track, &renamed);
    }
    for a in &mut config.announce {
        follow(&mut a.track, &renamed);
    }
    report(sink, keepalived, "tracker", &renamed);
    let renamed = rename_all(config.sync_groups.iter_mut().map(|g| &mut g.name));
    report(sink, keepalived, "sync_group", &renamed);
    let renamed = rename_all(config.backends.iter_mut().map(|b| &mut b.name));
    for f in &mut config.frontends {
        if let Some(new) = renamed.get(&f.backend) {
            f.backend = new.clone();
        }
    }
    report(sink, haproxy, "backend", &renamed);
    let renamed = rename_all(config.frontends.iter_mut().map(|f| &mut f.name));
    for t in &mut config.trackers {
        if let TrackerKind::Balancer { frontend, .. } = &mut t.kind
            && let Some(new) = renamed.get(frontend)
        {
            *frontend = new.clone();
        }
    }
    report(sink, haproxy, "frontend", &renamed);
    for b in &mut config.backends {
        let renamed = rename_all(b.servers.iter_mut().map(|s| &mut s.name));
        report(sink, haproxy, &format!("backend {}: server", b.name), &renamed);
    }
}

/// Renames the unsafe names among `names` (unique among them); old name to new.
fn rename_all<'n>(names: impl Iterator<Item = &'n mut String>) -> BTreeMap<String, String> {
    let names: Vec<&mut String> = names.collect();
    let mut taken: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut renamed = BTreeMap::new();
    for name in names {
        if !name.trim().is_empty() && name_problem(name).is_none() {
            continue;
        }
        let new = unique(safe(name), &taken);
        taken.insert(new.clone());
        renamed.insert(name.clone(), new.clone());
        *name = new;
    }
    renamed
}

/// `name` in the safe set: every other character an underscore, at most [`NAME_MAX`] bytes.
fn safe(name: &str) -> String {
    let mapped: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@') { c } else { '_' }).collect();
    let cut: String = mapped.chars().take(NAME_MAX - 4).collect();
    if cut.is_empty() { "unnamed".to_string() } else { cut }
}

/// `base`, or `base-2`, `base-3`, ... when taken.
fn unique(base: String, taken: &BTreeSet<String>) -> String {
    (1..).map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") }).find(|c| !taken.contains(c)).unwrap_or(base)
}

fn follow(references: &mut [String], renamed: &BTreeMap<String, String>) {
    for reference in references {
        if let Some(new) = renamed.get(reference) {
            *reference = new.clone();
        }
    }
}

fn report(sink: &mut Sink, file: &str, what: &str, renamed: &BTreeMap<String, String>) {
    for (old, new) in renamed {
        sink.warn_file(
            file,
            format!("{what} {old:?} renamed `{new}`: halo.toml takes letters, digits and . _ - : @ in names"),
            "references to it follow; rename it in your own tooling (hooks, dashboards) too",
        );
        let key = |name: &str| format!("{what} {name}");
        if let Some(notes) = sink.notes.remove(&key(old)) {
            sink.notes.insert(key(new), notes);
        }
    }
}
