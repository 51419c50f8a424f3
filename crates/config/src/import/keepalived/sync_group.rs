//! `vrrp_sync_group` blocks -> `[[sync_group]]`: the members (`group { ... }`), the group's
//! trackers (`track_script`, `track_interface`, `track_file`), `sync_group_tracking_weight` and
//! the group's notify hooks. keepalived's own handling of what it refuses is reproduced, each
//! with a warning: unknown members and members of a second group are ignored, an empty group is
//! removed, and, without `sync_group_tracking_weight`, a member's weighted trackers are dropped
//! and its tracked interfaces and default-weight files become unweighted (vrrp_complete_instance
//! in keepalived's vrrp/vrrp.c).

use super::parse::Node;
use super::{argv, integer, link_tracker};
use crate::import::{Resolver, Sink};
use crate::model::{Notify, SyncGroup, Tracker, TrackerKind, VrrpInstance};

/// Every group of the file, in order; member trackers adjusted as keepalived adjusts them.
pub(super) fn sync_groups(
    nodes: &[Node],
    instances: &mut [VrrpInstance],
    trackers: &mut Vec<Tracker>,
    resolver: &dyn Resolver,
    sink: &mut Sink,
) -> Vec<SyncGroup> {
    let mut groups: Vec<SyncGroup> = Vec::new();
    for node in nodes.iter().filter(|n| n.keyword() == "vrrp_sync_group") {
        if let Some(group) = group(node, &groups, instances, trackers, resolver, sink) {
            groups.push(group);
        }
    }
    for g in 0..groups.len() {
        if groups[g].tracking_weight {
            continue;
        }
        let needs = member_weights(&mut groups[g], nodes, instances, trackers, sink);
        unweighted(&needs, &groups, instances, trackers, sink);
    }
    groups
}

/// The instances whose own weighted trackers keepalived ignores: members of a group without
/// `sync_group_tracking_weight` (each instance counts in the first group that lists it, as in
/// [`members`]). Read before the instances are imported, so that such a member's weight
/// override never reaches a tracker other instances share.
pub(super) fn weights_dropped(nodes: &[Node]) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut dropped = Vec::new();
    for node in nodes.iter().filter(|n| n.keyword() == "vrrp_sync_group" && n.words.len() == 2) {
        if names.contains(&node.arg(1)) {
            continue;
        }
        names.push(node.arg(1));
        let keeps = node.children().iter().any(|c| ["sync_group_tracking_weight", "global_tracking"].contains(&c.keyword()));
        let listed = node.children().iter().filter(|c| c.keyword() == "group").flat_map(|c| c.children()).flat_map(|l| &l.words);
        for member in listed {
            if !seen.contains(&member.as_str()) {
                seen.push(member);
                if !keeps {
                    dropped.push(member.clone());
                }
            }
        }
    }
    dropped
}

fn group(
    node: &Node,
    done: &[SyncGroup],
    instances: &[VrrpInstance],
    trackers: &mut Vec<Tracker>,
    resolver: &dyn Resolver,
    sink: &mut Sink,
) -> Option<SyncGroup> {
    let (file, line, name) = (node.file.as_str(), node.line, node.arg(1));
    if node.words.len() != 2 {
        sink.warn(file, line, "vrrp_sync_group must have one name: keepalived skips it, and so does the import", "");
        return None;
    }
    if done.iter().any(|g| g.name == name) {
        sink.warn(file, line, format!("vrrp_sync_group `{name}` is defined twice: keepalived keeps the first, and so does the import"), "");
        return None;
    }
    let mut g =
        SyncGroup { name: name.to_string(), instances: Vec::new(), track: Vec::new(), tracking_weight: false, notify: Notify::default() };
    for c in node.children() {
        match c.keyword() {
            "group" => members(c, &mut g, done, instances, sink),
            "track_script" => track_script(c, &mut g, trackers, sink),
            "track_interface" => track_interface(c, &mut g, trackers),
            "track_file" => track_file(c, &mut g, trackers, sink),
            "notify_master" => g.notify.master = argv(c, 1, resolver, sink),
            "notify_backup" => g.notify.backup = argv(c, 1, resolver, sink),
            "notify_fault" => g.notify.fault = argv(c, 1, resolver, sink),
            "notify_stop" => g.notify.stop = argv(c, 1, resolver, sink),
            "notify" => g.notify.change = argv(c, 1, resolver, sink),
            "sync_group_tracking_weight" => g.tracking_weight = true,
            "global_tracking" => {
                sink.warn(&c.file, c.line, "global_tracking is deprecated in keepalived: imported as tracking_weight = true", "");
                g.tracking_weight = true;
            }
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    if g.instances.is_empty() {
        sink.warn(file, line, format!("vrrp_sync_group `{name}` has no known member: keepalived removes it, and so does the import"), "");
        return None;
    }
    sink.note(format!("sync_group {name}"), "The members change state together, as keepalived's vrrp_sync_group: one in FAULT takes all to FAULT, and they become master only all at once.");
    Some(g)
}

/// `group { VI_1 VI_2 }`: every word of the block (one line or several) names a member.
fn members(c: &Node, g: &mut SyncGroup, done: &[SyncGroup], instances: &[VrrpInstance], sink: &mut Sink) {
    for line in c.children() {
        for member in &line.words {
            let elsewhere = done.iter().chain(std::iter::once(&*g)).find(|o| o.instances.contains(member)).map(|o| o.name.clone());
            if !instances.iter().any(|i| &i.name == member) {
                let why = format!("vrrp_sync_group `{}` lists `{member}`, which is not an imported vrrp_instance", g.name);
                sink.warn(&line.file, line.line, why, "keepalived ignores it, and so does the import");
            } else if let Some(other) = elsewhere {
                let why = format!("vrrp_instance `{member}` is in vrrp_sync_group `{other}` already");
                sink.warn(
                    &line.file,
                    line.line,
                    why,
                    "an instance belongs to one group: keepalived ignores it here, and so does the import",
                );
            } else {
                g.instances.push(member.clone());
            }
        }
    }
}

/// The group's scripts; a weight given here overrides the script's, as for an instance.
fn track_script(c: &Node, g: &mut SyncGroup, trackers: &mut [Tracker], sink: &mut Sink) {
    for t in c.children() {
        let name = t.keyword();
        let Some(tracker) = trackers.iter_mut().find(|tr| tr.name == name) else {
            sink.error(&t.file, t.line, format!("track_script `{name}` is not defined"), "");
            continue;
        };
        if t.arg(1) == "weight" {
            let weight = integer(t, 2, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32);
            if tracker.weight != weight {
                sink.warn(
                    &t.file,
                    t.line,
                    format!("vrrp_sync_group `{}` overrides the weight of `{name}`", g.name),
                    "halo keeps one weight per tracker: the override is applied to the tracker",
                );
            }
            tracker.weight = weight;
        }
        g.track.push(name.to_string());
    }
}

/// The group's interfaces, as the `link-<interface>` trackers instances use.
fn track_interface(c: &Node, g: &mut SyncGroup, trackers: &mut Vec<Tracker>) {
    for t in c.children() {
        let interface = t.keyword().to_string();
        let weight =
            if t.arg(1) == "weight" { t.arg(2).parse::<i64>().ok().filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32) } else { None };
        g.track.push(link_tracker(trackers, &interface, weight));
    }
}

fn track_file(c: &Node, g: &mut SyncGroup, trackers: &[Tracker], sink: &mut Sink) {
    for t in c.children() {
        if trackers.iter().any(|tr| tr.name == t.keyword()) {
            g.track.push(t.keyword().to_string());
        } else {
            sink.error(&t.file, t.line, format!("track_file `{}` is not defined", t.keyword()), "");
        }
    }
}

/// A member's tracker keepalived keeps but makes unweighted: (member, tracker, file, line).
type Need = (String, String, String, usize);

/// Without `sync_group_tracking_weight`, keepalived drops each member's weighted scripts and
/// files (removed here from the member's `track`, with a warning) and makes its interfaces and
/// default-weight files unweighted (returned, for [`unweighted`]). It keeps the weights of
/// tracked processes: the group is then imported with `tracking_weight = true`.
fn member_weights(g: &mut SyncGroup, nodes: &[Node], instances: &mut [VrrpInstance], trackers: &[Tracker], sink: &mut Sink) -> Vec<Need> {
    let mut needs = Vec::new();
    for member in &g.instances {
        let Some(node) = nodes.iter().find(|n| n.keyword() == "vrrp_instance" && n.arg(1) == member) else { continue };
        let Some(instance) = instances.iter_mut().find(|i| &i.name == member) else { continue };
        for c in node.children() {
            for t in c.children() {
                let name = match c.keyword() {
                    // The instance's link tracker of that interface (there is one per weight).
                    "track_interface" => instance
                        .track
                        .iter()
                        .find(|n| {
                            trackers.iter().any(|tr| {
                                tr.name == **n && matches!(&tr.kind, TrackerKind::Interface { interface } if interface == t.keyword())
                            })
                        })
                        .cloned()
                        .unwrap_or_default(),
                    "track_script" | "track_file" | "track_process" => t.keyword().to_string(),
                    _ => continue,
                };
                // Not tracked in halo (the own interface, a disabled script, an unknown process).
                if !instance.track.contains(&name) {
                    continue;
                }
                if c.keyword() == "track_process" {
                    if trackers.iter().any(|tr| tr.name == name && tr.weight.is_some()) && !g.tracking_weight {
                        g.tracking_weight = true;
                        sink.warn(
                            &t.file,
                            t.line,
                            format!("keepalived keeps the weight of the process check `{name}` of `{member}` in vrrp_sync_group `{}`: imported with tracking_weight = true", g.name),
                            "the group's members' other weights are dropped as keepalived drops them",
                        );
                    }
                    continue;
                }
                let own = (t.arg(1) == "weight").then(|| t.arg(2).parse::<i64>().unwrap_or(0));
                let weight = match c.keyword() {
                    "track_interface" => 0,
                    "track_script" => own.unwrap_or_else(|| defined_weight(nodes, "vrrp_script", &name, 0)),
                    _ => own.unwrap_or_else(|| defined_weight(nodes, "vrrp_track_file", &name, 1)),
                };
                // keepalived keeps a track_file of the default weight (1) as unweighted.
                let kept = weight == 0 || (c.keyword() == "track_file" && weight == 1);
                if kept {
                    needs.push((member.clone(), name, t.file.clone(), t.line));
                    continue;
                }
                instance.track.retain(|n| *n != name);
                sink.warn(
                    &t.file,
                    t.line,
                    format!("vrrp_instance `{member}` is in vrrp_sync_group `{}`: keepalived ignores its weighted `{name}`, and so does the import", g.name),
                    "keepalived keeps a member's weights only with sync_group_tracking_weight; or track it on the group",
                );
            }
        }
    }
    needs
}

/// The `weight` of a `vrrp_script` or `vrrp_track_file` block, or `default`.
fn defined_weight(nodes: &[Node], keyword: &str, name: &str, default: i64) -> i64 {
    let block = nodes
        .iter()
        .find(|n| (n.keyword() == keyword || (keyword == "vrrp_track_file" && n.keyword() == "track_file")) && n.arg(1) == name);
    let weight = block.and_then(|b| b.children().iter().find(|c| c.keyword() == "weight"));
    weight.map_or(default, |w| w.arg(1).parse().unwrap_or(0))
}

/// Makes the trackers `needs` lists unweighted for those members: the tracker itself when no
/// one else relies on its weight, else a copy named `<tracker>-fault`.
fn unweighted(needs: &[Need], groups: &[SyncGroup], instances: &mut [VrrpInstance], trackers: &mut Vec<Tracker>, sink: &mut Sink) {
    let mut names: Vec<&str> = Vec::new();
    for need in needs {
        if !names.contains(&need.1.as_str()) {
            names.push(&need.1);
        }
    }
    for name in names {
        let Some(index) = trackers.iter().position(|t| t.name == name && t.weight.is_some()) else { continue };
        let needing: Vec<&Need> = needs.iter().filter(|n| n.1 == name).collect();
        let by_instance = instances.iter().any(|i| i.track.iter().any(|t| t == name) && !needing.iter().any(|n| n.0 == i.name));
        let weighted_elsewhere = by_instance || groups.iter().any(|g| g.track.iter().any(|t| t == name));
        let (file, line) = (needing[0].2.as_str(), needing[0].3);
        // An interface may have several link trackers (one per weight): the members go to its
        // unweighted one, made if there is none.
        let link = match &trackers[index].kind {
            TrackerKind::Interface { interface } => Some(interface.clone()),
            _ => None,
        };
        let of_link = |t: &Tracker, i: &str| matches!(&t.kind, TrackerKind::Interface { interface } if interface == i);
        let unweighted_link =
            link.as_deref().and_then(|i| trackers.iter().find(|t| t.weight.is_none() && of_link(t, i))).map(|t| t.name.clone());
        let in_place = !weighted_elsewhere && unweighted_link.is_none() && link.as_ref().is_none_or(|i| name == format!("link-{i}"));
        let target = if in_place {
            trackers[index].weight = None;
            name.to_string()
        } else {
            let copy =
                unweighted_link.unwrap_or_else(|| link.as_ref().map_or_else(|| format!("{name}-fault"), |i| format!("link-{i}-fault")));
            if !trackers.iter().any(|t| t.name == copy) {
                trackers.push(Tracker { name: copy.clone(), weight: None, ..trackers[index].clone() });
            }
            for i in instances.iter_mut().filter(|i| needing.iter().any(|n| n.0 == i.name)) {
                i.track.iter_mut().filter(|t| *t == name).for_each(|t| *t = copy.clone());
            }
            if !weighted_elsewhere {
                trackers.retain(|t| t.name != name);
            }
            copy
        };
        let members: Vec<String> = needing.iter().map(|n| format!("`{}`", n.0)).collect();
        sink.warn(
            file,
            line,
            format!(
                "keepalived makes `{name}` unweighted for sync group member {}: its failure puts the group into FAULT; imported as `{target}` without weight",
                members.join(", ")
            ),
            "keepalived keeps a member's weights only with sync_group_tracking_weight",
        );
    }
}
