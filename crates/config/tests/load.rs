//! The loader: valid files give the typed model; every kind of mistake gives an error at its
//! exact line:column, all of them at once, never a panic.

use std::time::Duration;

use halo_config::{Balance, CheckKind, Diagnostic, LoadError, TlsVerify, TrackerKind, load_str};

fn problems(text: &str) -> Vec<String> {
    match load_str("t.toml", text) {
        Ok(loaded) => loaded.warnings.iter().map(Diagnostic::to_string).collect(),
        Err(LoadError::Invalid(diagnostics)) => diagnostics.iter().map(Diagnostic::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

/// The first line (place + message) of every problem.
fn heads(text: &str) -> Vec<String> {
    problems(text).iter().map(|p| p.lines().next().unwrap_or("").to_string()).collect()
}

const MINIMAL_LB: &str = r#"
[[frontend]]
name = "api"
bind = ["127.0.0.1:8443"]
backend = "api"

[[backend]]
name = "api"
[[backend.server]]
name = "m1"
address = "10.0.0.1:6443"
"#;

#[test]
fn example_config_loads_with_every_section() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/halo.toml")).expect("example");
    let loaded = load_str("examples/halo.toml", &text).expect("example loads");
    let c = &loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(c.node.name.as_deref(), Some("lb1"));
    assert_eq!(c.vrrp[0].interface, "br0", "node.interface is the default");
    assert_eq!(c.vrrp[0].advert_interval.centiseconds(), 10);
    assert_eq!(c.backends[0].servers.len(), 3);
    assert!(matches!(c.backends[0].health.verify, TlsVerify::Ca { .. }));
    assert!(matches!(c.trackers[0].kind, TrackerKind::Balancer { min_healthy: 1, .. }));
    assert_eq!(c.trackers[0].weight, Some(-50));
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = load_str("t.toml", MINIMAL_LB).expect("loads").config;
    let b = &c.backends[0];
    assert_eq!(b.balance, Balance::RoundRobin);
    assert_eq!(b.health.kind, CheckKind::Https);
    assert_eq!(b.health.path, "/readyz");
    assert_eq!(b.health.expect_status, 200);
    assert_eq!(b.idle_timeout, Duration::from_secs(3600));
    assert_eq!(b.retries, 3);
    assert!(b.redispatch);
    assert_eq!(c.frontends[0].max_connections, 10_000);
    assert_eq!(c.status.listen.to_string(), "127.0.0.1:9470");
}

#[test]
fn syntax_error_has_line_and_column() {
    let got = heads("[node]\nname = \"lb1\nx = 1\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("t.toml:2:12: error: TOML syntax: invalid basic string"), "{got:?}");
}

#[test]
fn unknown_keys_and_sections_in_different_places_are_all_reported() {
    let text = format!("{MINIMAL_LB}\n[nodes]\nname = \"x\"\n\n[status]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
    let got = heads(&text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("t.toml:13:2: error: unknown section `nodes`"), "{got:?}");
    assert!(got[1].starts_with("t.toml:18:1: error: unknown field `lisen`"), "{got:?}");
}

#[test]
fn wrong_types_are_errors_with_place() {
    let got = heads(
        "[[vrrp]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = \"51\"\npriority = 100\nvirtual_addresses = [\"10.0.0.9\"]\n",
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("t.toml:4:21: error: invalid type: string \"51\", expected i64"), "{got:?}");
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"
[[vrrp]]
name = "v"
interface = "eth0"
virtual_router_id = 300
priority = 0
version = 3
advert_interval = "150ms5"
virtual_addresses = ["10.0.0.1/24", "fd00::1/64"]
auth_password = "secret"
track = ["nope"]

[[frontend]]
name = "api"
bind = ["0.0.0.0:8443", "10.0.0.5:8443", "127.0.0.1:0"]
backend = "missing"

[[backend]]
name = "api"
[[backend.server]]
name = "m1"
address = "10.0.0.1"
[[backend.server]]
name = "m1"
address = "master_02:6443"
[[backend.server]]
name = "m3"
address = "10.0.0.1:6443"
weight = 0
"#;
    let got = heads(text);
    let expected = [
        "t.toml:5:21: error: virtual_router_id must be 1..=255, got 300",
        "t.toml:6:12: error: priority must be 1..=255, got 0",
        "t.toml:8:19: error: advert_interval: `150ms5` is not a duration",
        "t.toml:9:37: error: IPv4 and IPv6 virtual addresses in one instance",
        "t.toml:10:17: error: auth_password with VRRPv3",
        "t.toml:11:10: error: vrrp `v` tracks unknown tracker `nope`",
        "t.toml:15:25: error: bind 10.0.0.5:8443 overlaps 0.0.0.0:8443",
        "t.toml:15:42: error: bind: port 0 in `127.0.0.1:0`",
        "t.toml:16:11: error: frontend `api` sends to unknown backend `missing`",
        "t.toml:22:11: error: server address: `10.0.0.1` has no port",
        "t.toml:24:8: error: duplicate server name `m1`",
        "t.toml:25:11: error: server address: `master_02` is neither an IP address nor a host name",
        "t.toml:28:11: error: server `m3` has the virtual address 10.0.0.1 of vrrp `v`",
        "t.toml:29:10: error: server weight 0",
    ];
    for e in expected {
        assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in:\n{}", got.join("\n"));
    }
    assert_eq!(got.len(), expected.len(), "{}", got.join("\n"));
}

#[test]
fn hints_say_what_to_do() {
    let all = problems(&MINIMAL_LB.replace("10.0.0.1:6443", "10.0.0.1"));
    assert!(all[0].contains("hint: write it with its port, like \"10.0.0.1:6443\""), "{all:?}");
}

#[test]
fn advert_interval_must_fit_the_version() {
    let vrrp = |version: u8, interval: &str| {
        format!(
            "[[vrrp]]\nname = \"v\"\ninterface = \"e\"\nvirtual_router_id = 1\npriority = 100\nversion = {version}\nadvert_interval = \"{interval}\"\nvirtual_addresses = [\"10.0.0.9/24\"]\n"
        )
    };
    assert!(heads(&vrrp(2, "100ms"))[0].contains("a VRRPv2 advert_interval must be whole seconds"));
    assert!(heads(&vrrp(3, "105ms"))[0].contains("a multiple of 10ms"));
    assert!(heads(&vrrp(2, "1s")).is_empty());
    assert!(heads(&vrrp(3, "100ms")).is_empty());
    assert!(heads(&vrrp(2, "100ms").replace("10.0.0.9/24", "fd00::9/64")).iter().any(|e| e.contains("VRRPv2 carries IPv4 addresses only")));
}

#[test]
fn passwords_are_never_echoed() {
    let text = "[[vrrp]]\nname = \"v\"\ninterface = \"e\"\nvirtual_router_id = 1\npriority = 100\nversion = 2\nvirtual_addresses = [\"10.0.0.9\"]\nauth_password = \"topsecret-too-long\"\n";
    let all = problems(text).join("\n");
    assert!(all.contains("auth_password must be 1..=8 bytes, got 18 bytes"), "{all}");
    assert!(!all.contains("topsecret"), "{all}");
}

#[test]
fn trackers_are_checked_per_kind() {
    let text = format!(
        "{MINIMAL_LB}\n[[tracker]]\nname = \"t1\"\nkind = \"balancer\"\nfrontend = \"nope\"\ncommand = [\"/bin/true\"]\n\n[[tracker]]\nname = \"t2\"\nkind = \"script\"\ncommand = [\"check.sh\"]\n\n[[tracker]]\nname = \"t3\"\nkind = \"balancer\"\nfrontend = \"api\"\nmin_healthy = 2\n"
    );
    let got = heads(&text);
    for e in [
        "t.toml:17:11: error: `command` is not a key of a `balancer` tracker",
        "t.toml:16:12: error: tracker `t1` names unknown frontend `nope`",
        "t.toml:22:12: error: command: `check.sh` is not an absolute path",
        "t.toml:28:15: error: min_healthy 2 but backend `api` has 1 servers",
    ] {
        assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in:\n{}", got.join("\n"));
    }
}

#[test]
fn warnings_do_not_block_loading() {
    let text = MINIMAL_LB.replace("name = \"api\"\n[[backend.server]]", "name = \"api\"\nidle_timeout = \"20s\"\n[[backend.server]]");
    let loaded = load_str("t.toml", &text).expect("warnings only");
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].to_string().contains("warning: idle_timeout 20s cuts `kubectl logs -f`"));
}

#[test]
fn empty_and_nothing_to_run() {
    assert_eq!(heads(""), vec!["error: nothing to run: no [[vrrp]] instance, no [[announce]] and no [[frontend]]".to_string()]);
}

#[test]
fn section_shapes_are_checked() {
    let got = heads("[vrrp]\nname = \"v\"\n");
    assert!(got[0].starts_with("t.toml:1:1: error: `vrrp` must be an array of tables"), "{got:?}");
}

#[test]
fn hostile_inputs_never_panic() {
    let cases: Vec<String> = vec![
        "\u{0}\u{1}\u{2}".to_string(),
        "[[backend]]\n".repeat(1000),
        "a = ".to_string() + &"[".repeat(10_000),
        "x = 1\n".repeat(20_000),
        format!("[[frontend]]\nname = \"{}\"\n", "é".repeat(100_000)),
        "[[vrrp]]\nname=\"v\"\ninterface=\"e\"\nvirtual_router_id=-9223372036854775808\npriority=9223372036854775807\nvirtual_addresses=[\"1.2.3.4/99\"]\n".to_string(),
        "[[backend]]\nname=\"b\"\nserver=[]\n[backend.health]\ninterval=\"99999999999999999999h\"\n".to_string(),
    ];
    for case in cases {
        let _outcome = load_str("t.toml", &case);
    }
    let truncated = &MINIMAL_LB[..MINIMAL_LB.len() / 2];
    assert!(matches!(load_str("t.toml", truncated), Err(LoadError::Invalid(_))));
}

#[test]
fn status_endpoint_must_not_take_a_frontend_port() {
    let text = format!("{MINIMAL_LB}\n[status]\nlisten = \"127.0.0.1:8443\"\n");
    let got = heads(&text);
    assert_eq!(
        got,
        vec!["t.toml:14:10: error: status.listen 127.0.0.1:8443 takes the port of frontend `api` (127.0.0.1:8443)".to_string()]
    );
}

#[test]
fn durations_are_bounded() {
    let text =
        MINIMAL_LB.replace("name = \"api\"\n[[backend.server]]", "name = \"api\"\ndrain_timeout = \"300000000000y\"\n[[backend.server]]");
    let heads = heads(&text);
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("t.toml:9:17: error: drain_timeout: `300000000000y` is longer than 7 days"), "{heads:?}");
    let week = MINIMAL_LB.replace("name = \"api\"\n[[backend.server]]", "name = \"api\"\ndrain_timeout = \"7d\"\n[[backend.server]]");
    assert!(heads_of_errors(&week).is_empty(), "{:?}", heads_of_errors(&week));
}

fn heads_of_errors(text: &str) -> Vec<String> {
    heads(text).into_iter().filter(|h| h.contains(": error: ")).collect()
}

#[test]
fn two_virtual_mac_instances_cannot_share_a_vrid() {
    let instance = |name: &str, interface: &str, vip: &str| {
        format!(
            "[[vrrp]]\nname = \"{name}\"\ninterface = \"{interface}\"\nvirtual_router_id = 62\npriority = 100\nvirtual_mac = true\nvirtual_addresses = [\"{vip}\"]\n"
        )
    };
    let text = format!("{}{}", instance("a", "eth0", "10.0.0.10/24"), instance("b", "eth1", "10.1.0.10/24"));
    let heads = heads_of_errors(&text);
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].contains("would both put their virtual MAC on vrrp.62"), "{heads:?}");
}

#[test]
fn script_user_must_be_a_user_name() {
    for bad in ["", "root daemon", "0", "Root", &"a".repeat(40)] {
        let text = format!("[node]\nscript_user = \"{bad}\"\n{MINIMAL_LB}");
        let heads = heads_of_errors(&text);
        assert!(heads.iter().any(|h| h.starts_with("t.toml:2:15: error: node.script_user:")), "{bad:?}: {heads:?}");
    }
    for good in ["halo", "_check", "svc-halo.1", "machine$"] {
        let text = format!("[node]\nscript_user = \"{good}\"\n{MINIMAL_LB}");
        assert!(heads_of_errors(&text).is_empty(), "{good:?}: {:?}", heads_of_errors(&text));
    }
}

#[test]
fn servers_by_name_plain_http_and_unchecked_backends_load() {
    let text = r#"
[log]
connections = true

[[frontend]]
name = "api"
bind = ["127.0.0.1:8443"]
backend = "api"

[[backend]]
name = "api"
resolve_interval = "10s"
resolve_prefer = "ipv6"
send_proxy = "v2"
[backend.health]
kind = "http"
path = "/healthz"
[[backend.server]]
name = "m1"
address = "master1:6443"
[[backend.server]]
name = "m2"
address = "cp0.example.com.:6443"

[[backend]]
name = "iperf"
[backend.health]
kind = "none"
[[backend.server]]
name = "i1"
address = "10.0.0.7:5201"

[[backend]]
name = "template"
"#;
    let loaded = load_str("t.toml", text).expect("loads");
    let c = &loaded.config;
    assert!(c.log.connections);
    let api = c.backend("api").expect("backend");
    assert_eq!(api.servers[0].address, halo_config::ServerAddress::Name { host: "master1".into(), port: 6443 });
    assert_eq!(api.servers[1].address.host_name(), Some("cp0.example.com."));
    assert_eq!(api.resolve_interval, Duration::from_secs(10));
    assert_eq!(api.resolve_prefer, halo_config::AddressFamily::Ipv6);
    assert_eq!(api.send_proxy, Some(halo_config::ProxyProtocol::V2));
    assert_eq!((api.health.kind, api.health.path.as_str()), (CheckKind::Http, "/healthz"));
    assert_eq!(c.backend("iperf").expect("backend").health.kind, CheckKind::None);
    assert!(c.backend("template").expect("backend").servers.is_empty());
    let warnings: Vec<String> = loaded.warnings.iter().map(Diagnostic::to_string).collect();
    assert!(warnings.iter().any(|w| w.starts_with("t.toml:34:8: warning: backend `template` has no servers")), "{warnings:#?}");
}

#[test]
fn bad_names_ports_and_kinds_are_errors_at_their_place() {
    let text = r#"
[[backend]]
name = "api"
resolve_prefer = "ipv5"
send_proxy = "v3"
[backend.health]
kind = "none"
ca_file = "/ca.pem"
[[backend.server]]
name = "a"
address = "-bad-:6443"
[[backend.server]]
name = "b"
address = "master1:http"
"#;
    let got = heads(text);
    for e in [
        "t.toml:4:18: error: resolve_prefer",
        "t.toml:5:14: error: send_proxy",
        "t.toml:8:11: error: health.ca_file is used only by `tls` and `https` checks",
        "t.toml:11:11: error: server address: `-bad-` is neither an IP address nor a host name",
        "t.toml:14:11: error: server address: `http` in `master1:http` is not a port",
    ] {
        assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in:\n{}", got.join("\n"));
    }
}

#[test]
fn a_connection_log_below_the_log_level_is_warned_about() {
    let text = format!("[log]\nlevel = \"warn\"\nconnections = true\n{MINIMAL_LB}");
    let got = heads(&text);
    assert!(got.iter().any(|g| g.starts_with("t.toml:3:15: warning: log.connections")), "{got:#?}");
}

#[test]
fn announcements_and_bgp_load_and_their_mistakes_are_placed() {
    let good = "[[tracker]]\nname = \"lb\"\nkind = \"interface\"\ninterface = \"eth1\"\n\n[[announce]]\nname = \"api\"\naddress = \"10.0.0.100/32\"\ntrack = [\"lb\"]\n\n\
                [bgp]\nasn = 65001\nrouter_id = \"172.31.1.11\"\n[[bgp.neighbor]]\naddress = \"172.31.1.1\"\nasn = 65000\n";
    let loaded = load_str("t.toml", good).expect("loads");
    let a = &loaded.config.announce[0];
    assert_eq!((a.name.as_str(), a.address.to_string().as_str(), a.interface.as_str()), ("api", "10.0.0.100/32", "lo"));
    let bgp = loaded.config.bgp.as_ref().expect("bgp");
    assert_eq!((bgp.asn, bgp.neighbors[0].asn, bgp.neighbors[0].bfd), (65001, 65000, true));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let bad = "[[vrrp]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = 1\npriority = 100\nvirtual_addresses = [\"10.0.0.100/24\"]\n\n\
               [[announce]]\nname = \"a\"\naddress = \"10.0.0.100\"\ntrack = [\"nope\"]\n\n[[announce]]\nname = \"b\"\naddress = \"10.0.1.0/24\"\n\n\
               [bgp]\nasn = 0\n[[bgp.neighbor]]\naddress = \"router\"\nasn = 65000\n";
    let got = heads(bad);
    for e in [
        "t.toml:10:11: error: 10.0.0.100 is announced and also a virtual address of vrrp `v`",
        "t.toml:11:10: error: announce `a` tracks unknown tracker `nope`",
        "t.toml:15:11: error: announce address 10.0.1.0/24 is not a host route",
        "t.toml:18:7: error: bgp.asn must be 1..=4294967294, got 0",
        "t.toml:20:11: error: bgp.neighbor address `router` is not an IP address",
    ] {
        assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in:\n{}", got.join("\n"));
    }
}

/// An IPv6 instance cannot use the virtual MAC: its adverts leave from the parent's link-local
/// address, which the macvlan does not have, so every advert fails and each router believes it is
/// alone (all MASTER). Refused at its place until halo gives the macvlan that address.
#[test]
fn an_ipv6_instance_with_virtual_mac_is_refused_at_its_place() {
    let text = "[[vrrp]]\nname = \"v6\"\ninterface = \"eth0\"\nvirtual_router_id = 62\npriority = 100\nvirtual_mac = true\nvirtual_addresses = [\"2001:db8::10/64\"]\n";
    let heads = heads_of_errors(text);
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].contains(":6:") && heads[0].contains("virtual_mac") && heads[0].contains("IPv6"), "{heads:?}");
    let ipv4 = text.replace("2001:db8::10/64", "10.0.0.10/24");
    assert!(heads_of_errors(&ipv4).is_empty(), "an IPv4 instance keeps its virtual MAC");
}

/// An interface tracker follows its link's state: `fall` and `rise` given to one are warned
/// about at their place (the file still loads), and none are needed.
#[test]
fn fall_and_rise_on_an_interface_tracker_are_warned_about() {
    let text = "[[tracker]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"eth1\"\nfall = 3\nrise = 2\n";
    let got: Vec<String> = heads(text).into_iter().filter(|h| h.contains("does not apply")).collect();
    assert_eq!(
        got,
        [
            "t.toml:5:8: warning: `fall` does not apply to an `interface` tracker: it follows the link's state as it changes",
            "t.toml:6:8: warning: `rise` does not apply to an `interface` tracker: it follows the link's state as it changes",
        ],
        "{got:#?}"
    );
    assert!(
        !heads("[[tracker]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"eth1\"\n").iter().any(|h| h.contains("does not apply"))
    );
}

/// A password of 1..=8 bytes of any printable characters is taken, as keepalived takes it
/// (`£6nj7^5`, 8 bytes of UTF-8, used to be refused as not ASCII after `halo import` had written
/// it); 9 bytes, none, or a control character are not.
#[test]
fn auth_password_takes_any_eight_bytes_keepalived_takes() {
    let with = |password: &str| {
        format!(
            "[[vrrp]]\nname = \"v\"\ninterface = \"e\"\nvirtual_router_id = 1\npriority = 100\nversion = 2\nvirtual_addresses = [\"10.0.0.9\"]\nauth_password = \"{password}\"\n"
        )
    };
    let loaded = load_str("t.toml", &with("£6nj7^5")).expect("8 bytes of UTF-8");
    assert_eq!(loaded.config.vrrp[0].auth_password.as_deref(), Some("£6nj7^5"));
    assert!(heads(&with("£6nj7^5x")).iter().any(|e| e.contains("auth_password must be 1..=8 bytes, got 9 bytes")));
    assert!(heads(&with("")).iter().any(|e| e.contains("auth_password must be 1..=8 bytes, got 0 bytes")));
    assert!(heads(&with("ab\\tc")).iter().any(|e| e.contains("auth_password holds a control character")));
}

/// Names and interface names reach rendered files (keepalived.conf, haproxy.cfg, network
/// configurations), where a newline would be a new directive: an interface name is checked as
/// the kernel checks one, every other name against a safe set, each error at its place.
#[test]
fn names_and_interface_names_that_could_break_rendered_files_are_refused() {
    let vrrp = |name: &str, interface: &str| {
        format!(
            "[[vrrp]]\nname = \"{name}\"\ninterface = \"{interface}\"\nvirtual_router_id = 1\npriority = 100\nvirtual_addresses = [\"10.0.0.9/24\"]\n"
        )
    };
    assert!(heads(&vrrp("VI_1", "br0")).is_empty(), "{:?}", heads(&vrrp("VI_1", "br0")));
    assert!(heads(&vrrp("api-server.v4:a@b", "vrrp.51")).is_empty());
    let cases = [
        (vrrp("VI_1\\nvrrp_script evil", "br0"), "t.toml:2:8: error: vrrp instance name \"VI_1\\nvrrp_script evil\" holds '\\n'"),
        (vrrp("VI 1", "br0"), "t.toml:2:8: error: vrrp instance name \"VI 1\" holds ' '"),
        (vrrp(&"v".repeat(65), "br0"), "t.toml:2:8: error: vrrp instance name"),
        (vrrp("VI_1", "br0\\nx=/b"), "t.toml:3:13: error: interface: interface name \"br0\\nx=/b\" holds '\\n'"),
        (
            vrrp("VI_1", "br0\\nExecStartPre=/bin/sh"),
            "t.toml:3:13: error: interface: interface name \"br0\\nExecStartPre=/bin/sh\" is 24 bytes long",
        ),
        (vrrp("VI_1", "eth0 up"), "t.toml:3:13: error: interface: interface name \"eth0 up\" holds ' '"),
        (vrrp("VI_1", "a/b"), "t.toml:3:13: error: interface: interface name \"a/b\" holds '/'"),
        (vrrp("VI_1", "eth0:1"), "t.toml:3:13: error: interface: interface name \"eth0:1\" holds ':'"),
        (vrrp("VI_1", "abcdefghijklmnop"), "t.toml:3:13: error: interface: interface name \"abcdefghijklmnop\" is 16 bytes long"),
        (vrrp("VI_1", ".."), "t.toml:3:13: error: interface: interface name \"..\" is not a name"),
        (
            "[[tracker]]\nname = \"up\\tlink\"\nkind = \"interface\"\ninterface = \"eth1\"\n".to_string(),
            "t.toml:2:8: error: tracker name \"up\\tlink\" holds '\\t'",
        ),
        (
            "[[tracker]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"eth1 \"\n".to_string(),
            "t.toml:4:13: error: interface: interface name \"eth1 \" holds ' '",
        ),
        (
            "[node]\ninterface = \"br0\\r\"\n".to_string() + &vrrp("VI_1", "br0").replace("interface = \"br0\"\n", ""),
            "t.toml:2:13: error: node.interface: interface name \"br0\\r\" holds '\\r'",
        ),
    ];
    for (text, expected) in cases {
        let got = heads(&text);
        assert!(got.iter().any(|g| g.starts_with(expected)), "expected {expected:?} in {got:#?}");
    }
}

/// `allow` takes networks and single addresses; host bits and nonsense are errors at their place.
#[test]
fn allow_lists_are_networks_or_addresses() {
    let with = |allow: &str| {
        format!(
            "[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\nallow = [{allow}]\n\n[[backend]]\nname = \"api\"\n[[backend.server]]\nname = \"m1\"\naddress = \"127.0.0.1:6443\"\n"
        )
    };
    let loaded = halo_config::load_str("t.toml", &with("\"10.150.0.0/24\", \"10.0.0.5\", \"2001:db8::/64\"")).expect("valid");
    let allow: Vec<String> = loaded.config.frontends[0].allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["10.150.0.0/24", "10.0.0.5/32", "2001:db8::/64"]);
    let mapped = heads(&with("\"::ffff:127.0.0.0/104\""));
    assert!(mapped.iter().any(|e| e.contains("is an IPv4-mapped IPv6 network")), "{mapped:?}");
    let errors = heads(&with("\"10.150.0.1/24\", \"lan\""));
    assert!(errors.iter().any(|e| e.starts_with("t.toml:5:10: error: allow \"10.150.0.1/24\" has host bits set")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("t.toml:5:27: error: allow \"lan\" is not a network or an address")), "{errors:?}");
}

/// `[log] target`: syslog with its facility and socket; their keys without it are errors.
#[test]
fn log_targets_and_their_keys() {
    let with = |log: &str| format!("[log]\n{log}\n{MINIMAL_LB}");
    let loaded = halo_config::load_str("t.toml", &with("target = \"syslog\"\nfacility = \"local0\"")).expect("valid");
    assert_eq!(loaded.config.log.target, halo_config::LogTarget::Syslog { socket: "/dev/log".into(), facility: 16 });
    let errors = heads(&with("facility = \"local0\""));
    assert!(errors.iter().any(|e| e.starts_with("t.toml:2:12: error: log.facility is for target = \"syslog\"")), "{errors:?}");
    let errors = heads(&with("target = \"syslog\"\nfacility = \"kern\"\nsyslog_socket = \"log\""));
    assert!(errors.iter().any(|e| e.starts_with("t.toml:3:12: error: log.facility")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("t.toml:4:17: error: log.syslog_socket \"log\" is not an absolute path")), "{errors:?}");
}
