//! `[[sync_group]]` written out: as halo.toml (the importer's output, the round trip) and as
//! keepalived's `vrrp_sync_group` (members, the group's trackers by keepalived's kinds,
//! `sync_group_tracking_weight`, the group's notify hooks; a group of one is left out, since
//! keepalived refuses it).

use super::write::{block, command, comments, dur, line, list, quote, word};
use crate::import::Notes;
use crate::model::{Config, Notify, SyncGroup, Tracker, TrackerKind};

/// One `[[sync_group]]` table.
pub(super) fn toml(out: &mut String, g: &SyncGroup, notes: &Notes) {
    comments(out, notes, &format!("sync_group {}", g.name));
    line(out, format_args!("[[sync_group]]\nname = {}\ninstances = {}", quote(&g.name), list(&g.instances)));
    if !g.track.is_empty() {
        line(out, format_args!("track = {}", list(&g.track)));
    }
    if g.tracking_weight {
        line(out, format_args!("tracking_weight = true"));
    }
    if g.notify != Notify::default() {
        let n = &g.notify;
        line(out, format_args!("\n[sync_group.notify]"));
        for (key, _, argv) in hooks(n) {
            if let Some(argv) = argv {
                line(out, format_args!("{key} = {}", list(argv)));
            }
        }
        line(out, format_args!("timeout = {}", dur(n.timeout)));
    }
    out.push('\n');
}

/// One `vrrp_sync_group` block.
pub(super) fn keepalived(out: &mut String, g: &SyncGroup, config: &Config, losses: &mut Vec<String>) {
    if let [only] = g.instances.as_slice() {
        // keepalived --config-test fails on it ("only 1 virtual router(s)").
        let mut loss = format!("sync_group {}: a group of one is a configuration error for keepalived; {only} runs alone", g.name);
        if !g.track.is_empty() || g.notify != Notify::default() {
            loss.push_str(", without the group's trackers and hooks");
        }
        losses.push(loss);
        return;
    }
    line(out, format_args!("vrrp_sync_group {} {{", word(&g.name)));
    block(out, "group", g.instances.iter().map(|i| word(i)));
    let tracked: Vec<&Tracker> = g.track.iter().filter_map(|n| config.tracker(n)).collect();
    let scripts = tracked.iter().filter(|t| matches!(t.kind, TrackerKind::Balancer { .. } | TrackerKind::Script { .. }));
    block(out, "track_script", scripts.map(|t| t.name.clone()));
    let interfaces = tracked.iter().filter_map(|t| match &t.kind {
        TrackerKind::Interface { interface } => Some(t.weight.map_or_else(|| interface.clone(), |w| format!("{interface} weight {w}"))),
        _ => None,
    });
    block(out, "track_interface", interfaces);
    block(out, "track_file", tracked.iter().filter(|t| matches!(t.kind, TrackerKind::File { .. })).map(|t| t.name.clone()));
    if g.tracking_weight {
        line(out, format_args!("    sync_group_tracking_weight"));
    }
    for (_, key, argv) in hooks(&g.notify) {
        if let Some(argv) = argv {
            line(out, format_args!("    {key} {}", command(argv)));
        }
    }
    if g.notify.timeout != Notify::default().timeout {
        losses.push(format!("sync_group {}: keepalived has no notify timeout", g.name));
    }
    line(out, format_args!("}}\n"));
}

/// The hooks, each with its halo.toml key and its keepalived keyword.
fn hooks(n: &Notify) -> [(&'static str, &'static str, &Option<Vec<String>>); 5] {
    [
        ("master", "notify_master", &n.master),
        ("backup", "notify_backup", &n.backup),
        ("fault", "notify_fault", &n.fault),
        ("stop", "notify_stop", &n.stop),
        ("change", "notify", &n.change),
    ]
}
