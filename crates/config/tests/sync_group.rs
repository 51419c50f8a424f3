//! `[[sync_group]]` in halo.toml: a valid group loads into the model; each mistake (unknown or
//! shared instance, empty group, duplicate name, unknown tracker, weights that could not work,
//! owners mixed with others) is an error at its line:column, all reported at once.

use halo_config::{Diagnostic, LoadError, load_str};

/// The first line (place and message) of every problem.
fn heads(text: &str) -> Vec<String> {
    let all: Vec<Diagnostic> = match load_str("t.toml", text) {
        Ok(loaded) => loaded.warnings,
        Err(LoadError::Invalid(diagnostics)) => diagnostics,
        Err(other) => panic!("{other}"),
    };
    all.iter().map(|d| d.to_string().lines().next().unwrap_or("").to_string()).collect()
}

/// The errors only.
fn errors(text: &str) -> Vec<String> {
    heads(text).into_iter().filter(|h| h.contains(": error: ")).collect()
}

fn instance(name: &str, vrid: u8, priority: u8, extra: &str) -> String {
    format!(
        "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\npriority = {priority}\nvirtual_addresses = [\"10.0.0.{vrid}/24\"]\n{extra}\n"
    )
}

/// Two instances and two trackers (one weighted), then `tail`.
fn file(tail: &str) -> String {
    let trackers = "[[tracker]]\nname = \"weighted\"\nkind = \"file\"\npath = \"/run/w\"\nweight = -20\n\n\
                    [[tracker]]\nname = \"plain\"\nkind = \"file\"\npath = \"/run/p\"\n\n";
    format!("{}{}{trackers}{tail}", instance("VI_1", 1, 150, ""), instance("VI_2", 2, 150, ""))
}

#[test]
fn a_group_loads_with_its_trackers_and_hooks() {
    let text = file(
        "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\ntrack = [\"weighted\", \"plain\"]\n\n\
         [sync_group.notify]\nmaster = [\"/usr/local/bin/group\", \"master\"]\nchange = [\"/usr/local/bin/event\"]\n",
    );
    let loaded = load_str("t.toml", &text).expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    let g = &config.sync_groups[0];
    assert_eq!(
        (g.name.as_str(), g.instances.clone(), g.track.clone()),
        ("G1", vec!["VI_1".into(), "VI_2".into()], vec!["weighted".into(), "plain".into()])
    );
    assert!(!g.tracking_weight);
    assert_eq!(g.notify.master.as_deref(), Some(&["/usr/local/bin/group".to_string(), "master".to_string()][..]));
    assert_eq!(config.sync_group_of("VI_2").map(|g| g.name.as_str()), Some("G1"));
}

#[test]
fn unknown_and_shared_instances_empty_groups_and_duplicate_names_are_errors_at_their_place() {
    let text = file(
        "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_9\"]\ntrack = [\"plain\"]\n\n\
         [[sync_group]]\nname = \"G2\"\ninstances = [\"VI_2\", \"VI_1\"]\n\n\
         [[sync_group]]\nname = \"G1\"\ninstances = []\n",
    );
    let got = errors(&text);
    let expected = [
        "t.toml:28:22: error: sync group `G1` lists unknown vrrp instance `VI_9`",
        "t.toml:33:22: error: vrrp instance `VI_1` is in sync group `G1` already",
        "t.toml:36:8: error: duplicate sync group name `G1`",
        "t.toml:37:13: error: sync group `G1` has no instances",
    ];
    assert_eq!(got, expected, "{got:#?}");
}

#[test]
fn an_instance_twice_in_one_group_and_unknown_trackers_are_errors() {
    let got = errors(&file("[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_1\"]\ntrack = [\"nope\"]\n"));
    assert_eq!(
        got,
        [
            "t.toml:28:22: error: vrrp instance `VI_1` is listed twice in sync group `G1`",
            "t.toml:29:10: error: sync group `G1` tracks unknown tracker `nope`",
        ],
        "{got:#?}"
    );
}

#[test]
fn a_members_own_weighted_tracker_is_refused_unless_tracking_weight() {
    let member = instance("VI_1", 1, 150, "track = [\"weighted\", \"plain\"]");
    let base = format!(
        "{member}{}[[tracker]]\nname = \"weighted\"\nkind = \"file\"\npath = \"/run/w\"\nweight = -20\n\n[[tracker]]\nname = \"plain\"\nkind = \"file\"\npath = \"/run/p\"\n\n",
        instance("VI_2", 2, 150, "")
    );
    let group = "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\n";
    let got = heads(&format!("{base}{group}"));
    assert_eq!(
        got,
        ["t.toml:7:10: error: vrrp `VI_1` is in sync group `G1`: its weighted tracker `weighted` would move this instance alone"]
    );
    let allowed = load_str("t.toml", &format!("{base}{group}tracking_weight = true\n")).expect("allowed with tracking_weight");
    assert!(allowed.config.sync_groups[0].tracking_weight);
}

#[test]
fn owners_mixed_with_other_instances_are_refused_and_a_group_of_one_is_warned_about() {
    let text = format!(
        "{}{}[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\n\n[[sync_group]]\nname = \"G2\"\ninstances = [\"VI_3\"]\n",
        instance("VI_1", 1, 255, ""),
        instance("VI_2", 2, 100, "") + &instance("VI_3", 3, 100, "")
    );
    let got = heads(&text);
    assert_eq!(
        got,
        [
            "t.toml:24:13: error: sync group `G1` mixes address owners (priority 255) with other instances",
            "t.toml:28:13: warning: sync group `G2` has one instance: it behaves as that instance alone",
        ],
        "{got:#?}"
    );
}

#[test]
fn a_tracker_used_only_by_a_group_is_not_unused() {
    let got = heads(&file("[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\ntrack = [\"weighted\"]\n"));
    assert_eq!(got, ["t.toml:22:8: warning: tracker `plain` is not tracked by any vrrp instance"], "{got:#?}");
}

