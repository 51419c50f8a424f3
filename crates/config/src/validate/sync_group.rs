//! Validation of `[[sync_group]]`: members that exist, each in one group at most, groups that
//! are not empty and named once, trackers that exist, weights only where they can work.

use super::unique_names;
use crate::diag::{Hint, Report};
use crate::model::SyncGroup;
use crate::raw::{RawSyncGroup, RawTracker, RawVrrp, Text};

/// Checks every group; `None` when one has an error (all of them are in `report`).
pub(super) fn sync_groups(
    report: &mut Report<'_>,
    raw: &[RawSyncGroup],
    vrrp: &[RawVrrp],
    trackers: &[RawTracker],
) -> Option<Vec<SyncGroup>> {
    unique_names(report, "sync group", raw.iter().map(|g| &g.name));
    let errors = |r: &Report<'_>| r.diagnostics.iter().filter(|d| d.is_error()).count();
    let errors_before = errors(report);
    let mut seen: Vec<(&Text, &Text)> = Vec::new();
    let mut out = Vec::new();
    for group in raw {
        members(report, group, vrrp, &mut seen);
        owners_apart(report, group, vrrp);
        let track = tracked(report, group, trackers);
        member_weights(report, group, vrrp, trackers);
        let notify = super::vrrp::notify(report, group.notify.as_ref());
        if let (Some(track), Some(notify)) = (track, notify) {
            out.push(SyncGroup {
                name: group.name.get_ref().clone(),
                instances: group.instances.get_ref().iter().map(|i| i.get_ref().clone()).collect(),
                track,
                tracking_weight: group.tracking_weight.as_ref().is_some_and(|f| *f.get_ref()),
                notify,
            });
        }
    }
    (errors(report) == errors_before).then_some(out)
}

/// The names the groups' `track` lists hold (for the unused-tracker warning).
pub(super) fn tracker_names(raw: &[RawSyncGroup]) -> Vec<&str> {
    raw.iter().flat_map(|g| g.track.iter().flatten()).map(|t| t.get_ref().as_str()).collect()
}

/// Members: at least one, each a known instance, listed once, in no other group.
fn members<'a>(report: &mut Report<'_>, group: &'a RawSyncGroup, vrrp: &[RawVrrp], seen: &mut Vec<(&'a Text, &'a Text)>) {
    let name = group.name.get_ref();
    let list = group.instances.get_ref();
    if list.is_empty() {
        report
            .error(group.instances.span(), format!("sync group `{name}` has no instances"))
            .hint("list the [[vrrp]] instances that must change state together: instances = [\"VI_1\", \"VI_2\"]");
        return;
    }
    if list.len() == 1 {
        report
            .warning(group.instances.span(), format!("sync group `{name}` has one instance: it behaves as that instance alone"))
            .hint("a sync group is for instances that must move together; keepalived warns about this too");
    }
    for member in list {
        if !vrrp.iter().any(|v| v.name.get_ref() == member.get_ref()) {
            let known: Vec<&str> = vrrp.iter().map(|v| v.name.get_ref().as_str()).collect();
            report.error(member.span(), format!("sync group `{name}` lists unknown vrrp instance `{}`", member.get_ref())).hint(
                if known.is_empty() {
                    "define it in a [[vrrp]] table".to_string()
                } else {
                    format!("known instances: {}", known.join(", "))
                },
            );
            continue;
        }
        if let Some((_, other)) = seen.iter().find(|(m, _)| m.get_ref() == member.get_ref()) {
            let message = if other.get_ref() == name {
                format!("vrrp instance `{}` is listed twice in sync group `{name}`", member.get_ref())
            } else {
                format!("vrrp instance `{}` is in sync group `{}` already", member.get_ref(), other.get_ref())
            };
            report.error(member.span(), message).hint("an instance belongs to one sync group at most (as in keepalived)");
            continue;
        }
        seen.push((member, &group.name));
    }
}

/// keepalived: "Sync group has some member(s) as address owner and some not as address owner.
/// This won't work." The owners would want mastership from the start, the others not.
fn owners_apart(report: &mut Report<'_>, group: &RawSyncGroup, vrrp: &[RawVrrp]) {
    let priorities: Vec<i64> = members_of(group, vrrp).map(|v| *v.priority.get_ref()).collect();
    let owners = priorities.iter().filter(|p| **p == 255).count();
    if owners > 0 && owners < priorities.len() {
        report
            .error(
                group.instances.span(),
                format!("sync group `{}` mixes address owners (priority 255) with other instances", group.name.get_ref()),
            )
            .hint("an owner takes its addresses at once, the others wait for the election: put them in separate groups");
    }
}

/// The group's own trackers: each must exist.
fn tracked(report: &mut Report<'_>, group: &RawSyncGroup, trackers: &[RawTracker]) -> Option<Vec<String>> {
    let mut out = Some(Vec::new());
    for name in group.track.iter().flatten() {
        if trackers.iter().any(|t| t.name.get_ref() == name.get_ref()) {
            if let Some(o) = &mut out {
                o.push(name.get_ref().clone());
            }
        } else {
            report
                .error(name.span(), format!("sync group `{}` tracks unknown tracker `{}`", group.name.get_ref(), name.get_ref()))
                .hint("define it in a [[tracker]] table");
            out = None;
        }
    }
    out
}

/// A member's own weighted tracker moves that member alone, which cannot move the group;
/// keepalived drops such weights unless `sync_group_tracking_weight` is set, halo refuses them.
fn member_weights(report: &mut Report<'_>, group: &RawSyncGroup, vrrp: &[RawVrrp], trackers: &[RawTracker]) {
    if group.tracking_weight.as_ref().is_some_and(|f| *f.get_ref()) {
        return;
    }
    for member in members_of(group, vrrp) {
        for name in member.track.iter().flatten() {
            let weighted = trackers.iter().find(|t| t.name.get_ref() == name.get_ref()).and_then(|t| t.weight.as_ref());
            if weighted.is_some() {
                report
                    .error(
                        name.span(),
                        format!(
                            "vrrp `{}` is in sync group `{}`: its weighted tracker `{}` would move this instance alone",
                            member.name.get_ref(),
                            group.name.get_ref(),
                            name.get_ref()
                        ),
                    )
                    .hint("track it on the sync group (`track`, the weight then moves every member), remove its weight (FAULT), or set tracking_weight = true on the group");
            }
        }
    }
}

fn members_of<'a>(group: &'a RawSyncGroup, vrrp: &'a [RawVrrp]) -> impl Iterator<Item = &'a RawVrrp> {
    vrrp.iter().filter(|v| group.instances.get_ref().iter().any(|m| m.get_ref() == v.name.get_ref()))
}
