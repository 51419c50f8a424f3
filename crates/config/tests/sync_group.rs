//! `[[sync_group]]` in halo.toml: a valid group loads into the model; each mistake (unknown or
//! shared instance, empty group, duplicate name, unknown tracker, weights that could not work,
//! owners mixed with others) is an error at its line:column, all reported at once. And
//! keepalived's `vrrp_sync_group` imported as keepalived runs it, and rendered back.

mod common;

use halo_config::import::{Inputs, Source, import};
use halo_config::render::halo_toml;
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

const KEEPALIVED: &str = r#"
vrrp_script chk_a {
    script "/usr/local/bin/chk_a"
    weight -30
}
vrrp_script chk_b {
    script "/usr/local/bin/chk_b"
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 1
    priority 150
    virtual_ipaddress { 192.0.2.101/24 }
    track_script { chk_a }
}
vrrp_instance VI_2 {
    interface eth1
    virtual_router_id 2
    priority 150
    virtual_ipaddress { 10.1.0.102/24 }
    track_script { chk_b }
}
vrrp_instance VI_3 {
    interface eth0
    virtual_router_id 3
    priority 150
    virtual_ipaddress { 192.0.2.103/24 }
    track_script { chk_a }
}
vrrp_sync_group G1 {
    group {
        VI_1
        VI_2
        VI_9
    }
    track_script { chk_b weight -20 }
    track_interface { eth3 }
    notify_master "/usr/local/bin/group master"
    notify /usr/local/bin/group-event
    smtp_alert
}
vrrp_instance VI_4 {
    interface eth1
    virtual_router_id 4
    priority 150
    virtual_ipaddress { 10.1.0.104/24 }
}
vrrp_sync_group G2 {
    group { VI_3 VI_1 VI_4 }
    sync_group_tracking_weight
}
"#;

fn imported() -> halo_config::import::Imported {
    let inputs = Inputs { keepalived: Some(Source { file: "k", text: KEEPALIVED }), ..Inputs::default() };
    import(&inputs, &())
}

#[test]
fn keepalived_sync_groups_import_as_keepalived_runs_them() {
    let imported = imported();
    let warnings: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string().lines().next().unwrap_or("").to_string()).collect();
    assert!(!imported.has_errors(), "{warnings:#?}");
    let c = &imported.config;
    let g1 = &c.sync_groups[0];
    assert_eq!(g1.instances, ["VI_1", "VI_2"], "VI_9 is unknown");
    assert_eq!(g1.track, ["chk_b", "link-eth3"]);
    assert_eq!(g1.notify.master.as_deref(), Some(&["/usr/local/bin/group".to_string(), "master".to_string()][..]));
    assert_eq!(g1.notify.change.as_deref(), Some(&["/usr/local/bin/group-event".to_string()][..]));
    assert!(!g1.tracking_weight);
    let g2 = &c.sync_groups[1];
    assert_eq!((g2.instances.clone(), g2.tracking_weight), (vec!["VI_3".to_string(), "VI_4".to_string()], true), "VI_1 is in G1 already");
    // keepalived drops the weighted chk_a of VI_1 (a G1 member without tracking weight); VI_3
    // (in G2, with sync_group_tracking_weight) keeps it with its weight.
    let track = |name: &str| c.vrrp.iter().find(|v| v.name == name).map(|v| v.track.clone()).unwrap_or_default();
    assert_eq!(track("VI_1"), Vec::<String>::new());
    assert_eq!(track("VI_2"), ["chk_b-fault"]);
    assert_eq!(track("VI_3"), ["chk_a"]);
    assert_eq!(c.tracker("chk_a").and_then(|t| t.weight), Some(-30));
    // VI_2's own chk_b is unweighted in keepalived; G1's track of it carries weight -20: halo
    // keeps one weight per tracker, so VI_2 gets an unweighted copy.
    assert_eq!(c.tracker("chk_b").and_then(|t| t.weight), Some(-20));
    let expected = [
        "k:14: warning: vrrp_instance `VI_1` is in vrrp_sync_group `G1`: keepalived ignores its weighted `chk_a`, and so does the import",
        "k:21: warning: keepalived makes `chk_b` unweighted for sync group member `VI_2`: its failure puts the group into FAULT; imported as `chk_b-fault` without weight",
        "k:34: warning: vrrp_sync_group `G1` lists `VI_9`, which is not an imported vrrp_instance",
        "k:36: warning: vrrp_sync_group `G1` overrides the weight of `chk_b`",
        "k:40: warning: `smtp_alert` has no halo equivalent and is not imported",
        "k:49: warning: vrrp_instance `VI_1` is in vrrp_sync_group `G1` already",
    ];
    for e in expected {
        assert!(warnings.iter().any(|w| w == e), "missing {e}\nin {warnings:#?}");
    }
    let text = halo_toml(c, &imported.notes);
    let loaded = load_str("imported", &text).unwrap_or_else(|e| panic!("halo check refuses the import: {e:?}\n{text}"));
    assert_eq!(&loaded.config, c, "what is written is what was imported:\n{text}");
}

#[test]
fn sync_groups_render_back_to_keepalived() {
    let imported = imported();
    let rendered = halo_config::render::keepalived(&imported.config);
    let text = &rendered.text;
    let g1 = "vrrp_sync_group G1 {\n    group {\n        VI_1\n        VI_2\n    }\n    track_script {\n        chk_b\n    }\n    track_interface {\n        eth3\n    }\n    notify_master \"/usr/local/bin/group master\"\n    notify /usr/local/bin/group-event\n}\n";
    assert!(text.contains(g1), "{text}");
    assert!(
        text.contains("vrrp_sync_group G2 {\n    group {\n        VI_3\n        VI_4\n    }\n    sync_group_tracking_weight\n}\n"),
        "{text}"
    );
    assert!(rendered.losses.is_empty(), "{:?}", rendered.losses);
    // keepalived refuses a group of one: it is left out, and said so.
    let one = format!("{}[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\"]\n", instance("VI_1", 1, 150, ""));
    let rendered = halo_config::render::keepalived(&load_str("t.toml", &one).expect("loads").config);
    assert!(!rendered.text.contains("vrrp_sync_group"), "{}", rendered.text);
    assert_eq!(rendered.losses, ["sync_group G: a group of one is a configuration error for keepalived; VI_1 runs alone"]);
}

#[test]
fn rendered_sync_groups_pass_keepalived_config_test() {
    if !common::can_run("rendered_sync_groups_pass_keepalived_config_test", true, &["keepalived", "ip", "unshare"]) {
        return;
    }
    let config = imported().config;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("keepalived.conf");
    std::fs::write(&conf, halo_config::render::keepalived(&config).text).expect("conf");
    let ns = common::Netns::new();
    for interface in ["eth0", "eth1", "eth3"] {
        ns.add_interface(interface);
    }
    // The scripts and hooks keepalived checks exist, root's, in a /usr/local/bin of our own.
    let mut setup = "mount -t tmpfs none /usr/local/bin".to_string();
    for program in ["chk_a", "chk_b", "group", "group-event"] {
        setup.push_str(&format!(" && printf '#!/bin/sh\\n' > /usr/local/bin/{program} && chmod 755 /usr/local/bin/{program}"));
    }
    let out = ns.sh(&format!("{setup} && keepalived --config-test -f {conf:?}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "keepalived --config-test exit {:?}:\n{stderr}\n{}",
        out.status.code(),
        halo_config::render::keepalived(&config).text
    );
}

#[test]
fn a_members_weighted_process_check_keeps_its_weight_as_in_keepalived() {
    let haproxy = "frontend api\n    bind 0.0.0.0:8443\n    mode tcp\n    default_backend api\nbackend api\n    mode tcp\n    server m1 10.0.0.1:6443 check\n";
    let keepalived = "vrrp_track_process chk_haproxy {\n    process haproxy\n    weight -20\n}\n\
        vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 1\n    priority 150\n    virtual_ipaddress { 192.0.2.101/24 }\n    track_process { chk_haproxy }\n}\n\
        vrrp_instance VI_2 {\n    interface eth1\n    virtual_router_id 2\n    priority 150\n    virtual_ipaddress { 10.1.0.102/24 }\n}\n\
        vrrp_sync_group G1 {\n    group { VI_1 VI_2 }\n}\n";
    let inputs = Inputs {
        haproxy: Some(Source { file: "h", text: haproxy }),
        keepalived: Some(Source { file: "k", text: keepalived }),
        ..Inputs::default()
    };
    let imported = import(&inputs, &());
    let warnings: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(!imported.has_errors(), "{warnings:#?}");
    let c = &imported.config;
    assert_eq!(c.vrrp[0].track, ["chk_haproxy"]);
    assert_eq!(c.tracker("chk_haproxy").and_then(|t| t.weight), Some(-20));
    assert!(c.sync_groups[0].tracking_weight, "keepalived keeps a process check's weight in a group");
    assert!(warnings.iter().any(|w| w.contains("keepalived keeps the weight of the process check `chk_haproxy`")), "{warnings:#?}");
    load_str("imported", &halo_toml(c, &imported.notes)).expect("halo check accepts the import");
}

#[test]
fn a_members_dropped_weight_override_changes_no_other_instance() {
    // keepalived ignores the weighted `chk weight -60` of VI_1 (a member of a group without
    // sync_group_tracking_weight) altogether. VI_3, in no group, tracks chk unweighted (the
    // script's weight is 0): a failure puts VI_3 into FAULT. The dropped override must not
    // become chk's weight, which would turn VI_3's FAULT into a priority drop of 60; and the
    // import must not say that VI_1 "overrides the weight" of a line it drops.
    let keepalived = "vrrp_script chk {\n    script \"/usr/local/bin/chk\"\n}\n\
        vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 1\n    priority 150\n    virtual_ipaddress { 192.0.2.101/24 }\n    track_script {\n        chk weight -60\n    }\n}\n\
        vrrp_instance VI_2 {\n    interface eth1\n    virtual_router_id 2\n    priority 150\n    virtual_ipaddress { 10.1.0.102/24 }\n}\n\
        vrrp_instance VI_3 {\n    interface eth2\n    virtual_router_id 3\n    priority 150\n    virtual_ipaddress { 10.2.0.103/24 }\n    track_script { chk }\n}\n\
        vrrp_sync_group G1 {\n    group { VI_1 VI_2 }\n}\n";
    let inputs = Inputs { keepalived: Some(Source { file: "k", text: keepalived }), ..Inputs::default() };
    let imported = import(&inputs, &());
    let warnings: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string().lines().next().unwrap_or("").to_string()).collect();
    assert!(!imported.has_errors(), "{warnings:#?}");
    let c = &imported.config;
    assert_eq!(c.vrrp[0].track, Vec::<String>::new(), "VI_1's weighted chk is dropped, as keepalived drops it");
    assert_eq!(c.vrrp[2].track, ["chk"]);
    assert_eq!(c.tracker("chk").and_then(|t| t.weight), None, "VI_3's chk stays unweighted (FAULT on failure): {warnings:#?}");
    assert!(!warnings.iter().any(|w| w.contains("overrides the weight")), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("keepalived ignores its weighted `chk`")), "{warnings:#?}");
}

#[test]
fn link_trackers_of_members_and_of_other_instances_keep_their_own_weights() {
    // VI_1 is a member (weights dropped: its eth2 link becomes unweighted, FAULT on failure);
    // VI_3 is in no group and weighs eth2 -20. Whichever comes first, each keeps its meaning.
    let vi = |name: &str, vrid: u8, track: &str| {
        format!(
            "vrrp_instance {name} {{\n    interface eth{vrid}\n    virtual_router_id {vrid}\n    priority 150\n    \
             virtual_ipaddress {{ 10.{vrid}.0.1/24 }}\n    track_interface {{\n        {track}\n    }}\n}}\n"
        )
    };
    let group = "vrrp_sync_group G1 {\n    group { VI_1 VI_2 }\n}\n";
    let (member, other) = (vi("VI_1", 1, "eth9 weight -60"), vi("VI_3", 3, "eth9 weight -20"));
    let plain = vi("VI_2", 2, "eth8");
    for text in [format!("{member}{plain}{other}{group}"), format!("{other}{plain}{member}{group}")] {
        let inputs = Inputs { keepalived: Some(Source { file: "k", text: &text }), ..Inputs::default() };
        let imported = import(&inputs, &());
        let warnings: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(!imported.has_errors(), "{warnings:#?}");
        let c = &imported.config;
        let weight_of = |instance: &str| {
            let v = c.vrrp.iter().find(|v| v.name == instance).expect("instance");
            c.tracker(&v.track[0]).expect("tracker").weight
        };
        assert_eq!((weight_of("VI_1"), weight_of("VI_3")), (None, Some(-20)), "{warnings:#?}");
        let loaded = load_str("imported", &halo_toml(c, &imported.notes)).expect("halo check accepts the import");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}
