//! Golden tests of `halo import`: each case under testdata/ imports to a checked-in halo.toml
//! and list of warnings, and the result passes the daemon's loader. `UPDATE_GOLDEN=1` rewrites
//! the expected files (review the diff before committing it).

use std::path::{Path, PathBuf};

use halo_config::import::{FsResolver, Inputs, Source, import};
use halo_config::render::halo_toml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn check_golden(relative: &str, actual: &str) {
    let path = repo().join(relative);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(expected == actual, "{relative} differs (UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}");
}

/// Imports `dir/{haproxy,keepalived,script}` and compares with `dir/expected.*`.
fn golden(dir: &str, haproxy: &str, keepalived: &str, script: &str) -> halo_config::Config {
    let names = [format!("{dir}/{haproxy}"), format!("{dir}/{keepalived}"), format!("{dir}/{script}")];
    let texts: Vec<String> = names.iter().map(|n| read(n)).collect();
    let inputs = Inputs {
        haproxy: Some(Source { file: &names[0], text: &texts[0] }),
        keepalived: Some(Source { file: &names[1], text: &texts[1] }),
        check_script: Some(Source { file: &names[2], text: &texts[2] }),
        strict: false,
        config_id: None,
    };
    let imported = import(&inputs, &FsResolver { root: repo() });
    let warnings: String = imported.diagnostics.iter().map(|d| format!("{d}\n")).collect();
    assert!(!imported.has_errors(), "{warnings}");
    let text = halo_toml(&imported.config, &imported.notes);
    check_golden(&format!("{dir}/expected.halo.toml"), &text);
    check_golden(&format!("{dir}/expected.warnings"), &warnings);
    let loaded = halo_config::load_str("imported", &text).unwrap_or_else(|e| panic!("halo check refuses the import: {e:?}"));
    assert_eq!(loaded.config, imported.config, "what is written is what was imported");
    loaded.config
}

#[test]
fn seed_files_of_the_guide() {
    let config = golden("testdata/seed", "haproxy.cfg", "keepalived.conf", "check_apiserver.sh");
    // The defects the import must fix or flag, asserted on the model as well as the golden text.
    let backend = &config.backends[0];
    assert_eq!(backend.health.kind, halo_config::CheckKind::Https, "ssl-hello-chk must not hide the /healthz check");
    assert_eq!(backend.health.path, "/healthz");
    assert!(matches!(config.trackers[0].kind, halo_config::TrackerKind::Balancer { .. }), "the check script becomes the balancer tracker");
    assert_eq!(config.vrrp[0].virtual_addresses[0].to_string(), "10.150.0.170/32");
}

#[test]
fn kubeadm_guide_variant() {
    let config = golden("testdata/kubeadm", "haproxy.cfg", "keepalived.conf", "check_apiserver.sh");
    assert_eq!(config.backends[0].servers.len(), 3);
    assert_eq!(config.backends[0].health.kind, halo_config::CheckKind::Https, "http-check connect ssl");
}

#[test]
fn extended_directives() {
    let config = golden("testdata/extended", "haproxy.cfg", "keepalived.conf", "check_lb.sh");
    assert_eq!(config.vrrp.len(), 2);
    assert_eq!(config.vrrp[0].advert_interval.centiseconds(), 10);
    assert_eq!(config.vrrp[0].unicast_peers.len(), 2);
    assert_eq!(config.frontends[0].binds.len(), 2);
}

#[test]
fn warnings_name_the_seed_defects_with_their_lines() {
    let warnings = read("testdata/seed/expected.warnings");
    for expected in [
        "testdata/seed/haproxy.cfg:47: warning: backend `apiserver`: `option ssl-hello-chk` replaces `option httpchk` (line 44)",
        "testdata/seed/haproxy.cfg:26: warning: backend `apiserver`: connections idle for 20s are cut",
        "testdata/seed/keepalived.conf:10: warning: vrrp_script `check_apiserver`: interval 3s × fall 10 = 30s",
        "testdata/seed/keepalived.conf:20: warning: auth_type PASS sends the password in clear text",
        "testdata/seed/keepalived.conf:14: warning: vrrp_instance `VI_1`: a failing `check_apiserver` takes priority 101 to 99",
        "testdata/seed/check_apiserver.sh:9: warning: APISERVER_VIP=10.150.0.4 is not the keepalived virtual address (10.150.0.170)",
        "testdata/seed/check_apiserver.sh:11: warning: curl without --fail",
    ] {
        assert!(warnings.contains(expected), "missing: {expected}\nin:\n{warnings}");
    }
}

#[test]
fn either_file_alone() {
    let haproxy = read("testdata/seed/haproxy.cfg");
    let only_lb = import(&Inputs { haproxy: Some(Source { file: "h", text: &haproxy }), ..Inputs::default() }, &());
    assert!(!only_lb.has_errors());
    assert!(only_lb.config.vrrp.is_empty() && only_lb.config.frontends.len() == 1);
    halo_config::load_str("lb-only", &halo_toml(&only_lb.config, &only_lb.notes)).expect("balancer-only config loads");

    let keepalived = read("testdata/seed/keepalived.conf");
    let only_vrrp = import(&Inputs { keepalived: Some(Source { file: "k", text: &keepalived }), ..Inputs::default() }, &());
    assert!(!only_vrrp.has_errors());
    assert!(only_vrrp.config.frontends.is_empty() && only_vrrp.config.vrrp.len() == 1);
    let script = &only_vrrp.config.trackers[0];
    assert!(matches!(script.kind, halo_config::TrackerKind::Script { .. }), "without --check-script it stays a script");
    assert!(only_vrrp.diagnostics.iter().any(|d| d.message.contains("looks like the balancer check script")));
    halo_config::load_str("vrrp-only", &halo_toml(&only_vrrp.config, &only_vrrp.notes)).expect("vrrp-only config loads");
}

#[test]
fn strict_turns_unmapped_directives_into_errors() {
    let haproxy = read("testdata/extended/haproxy.cfg");
    let lenient = import(&Inputs { haproxy: Some(Source { file: "h", text: &haproxy }), ..Inputs::default() }, &());
    assert!(!lenient.has_errors());
    let strict = import(&Inputs { haproxy: Some(Source { file: "h", text: &haproxy }), strict: true, ..Inputs::default() }, &());
    let errors: Vec<String> = strict.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
    assert!(errors.iter().any(|e| e.starts_with("h:36: error: `stick-table type ip size 1m` has no halo equivalent")), "{errors:?}");
}

#[test]
fn broken_classic_files_give_errors_with_lines() {
    let cases: [(&str, &str, &str); 6] = [
        ("haproxy", "backend b\n    server m1 master01:0 check\n", "h:2: error: server `m1`: cannot use address `master01:0`"),
        (
            "haproxy",
            "frontend f\n    bind *:8443\n    default_backend nope\n",
            "h:1: error: frontend `f` uses backend `nope`, which is not defined",
        ),
        ("haproxy", "    bind *:1\n", "h:1: error: `bind` outside of any section"),
        // Found by fuzzing: a bare `bind` used to index past the end of the line.
        ("haproxy", "frontend f\n    bind\n", "h:2: error: cannot read bind address ``"),
        (
            "keepalived",
            "vrrp_instance V {\n  interface eth0\n  virtual_ipaddress {\n 10.0.0.1\n }\n",
            "k:5: error: a `{` block is never closed",
        ),
        (
            "keepalived",
            "vrrp_instance V {\n  interface eth0\n  virtual_router_id 0\n}\n",
            "k:3: error: virtual_router_id must be 1..=255, got 0",
        ),
    ];
    for (kind, text, expected) in cases {
        let inputs = match kind {
            "haproxy" => Inputs { haproxy: Some(Source { file: "h", text }), ..Inputs::default() },
            _ => Inputs { keepalived: Some(Source { file: "k", text }), ..Inputs::default() },
        };
        let imported = import(&inputs, &());
        let all: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(all.iter().any(|d| d.starts_with(expected)), "{expected:?} not in {all:#?}");
    }
}

#[test]
fn include_that_cannot_be_read_is_an_error() {
    let text = "include /nonexistent/*.conf\n";
    let imported = import(&Inputs { keepalived: Some(Source { file: "k", text }), ..Inputs::default() }, &FsResolver { root: repo() });
    assert!(
        imported.diagnostics[0].to_string().starts_with("k:1: error: cannot include `/nonexistent/*.conf`"),
        "{:?}",
        imported.diagnostics
    );
}

#[test]
fn virtual_ipaddress_forms() {
    let text = "vrrp_instance V {\n  interface eth0\n  virtual_router_id 7\n  virtual_ipaddress {\n    192.0.2.10/24 brd 192.0.2.255 dev eth0\n    192.0.2.11/24 brd 192.0.2.7\n    192.0.2.12 dev eth9 label eth9:1\n  }\n}\n";
    let imported = import(&Inputs { keepalived: Some(Source { file: "k", text }), ..Inputs::default() }, &());
    let all: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string()).collect();
    let addresses: Vec<String> = imported.config.vrrp[0].virtual_addresses.iter().map(ToString::to_string).collect();
    assert_eq!(addresses, ["192.0.2.10/24", "192.0.2.11/24", "192.0.2.12/32"]);
    assert!(!all.iter().any(|d| d.starts_with("k:5:")), "brd equal to the derived one and dev of the instance are silent: {all:#?}");
    assert!(all.iter().any(|d| d.starts_with("k:6: warning: `virtual_ipaddress option brd 192.0.2.7`")), "{all:#?}");
    assert!(all.iter().any(|d| d.starts_with("k:7: warning: `virtual_ipaddress option dev eth9`")), "{all:#?}");
    assert!(all.iter().any(|d| d.starts_with("k:7: warning: `virtual_ipaddress option label eth9:1`")), "{all:#?}");
}

/// includes that multiply (each file including the next one ten times) are bounded by the total
/// they expand to, not only by their depth: an error, quickly, and no runaway memory.
#[test]
fn includes_that_multiply_are_bounded_in_total() {
    let dir = tempfile::tempdir().expect("dir");
    let line = "vrrp_script chk { script \"/bin/true\" interval 1 }\n".repeat(100);
    for level in 0..8 {
        let next = dir.path().join(format!("l{}.conf", level + 1));
        let text = if level == 7 { line.clone() } else { format!("include {}\n", next.display()).repeat(10) };
        std::fs::write(dir.path().join(format!("l{level}.conf")), text).expect("write");
    }
    let text = format!("include {}\n", dir.path().join("l0.conf").display());
    let started = std::time::Instant::now();
    let imported =
        import(&Inputs { keepalived: Some(Source { file: "k", text: &text }), ..Inputs::default() }, &FsResolver { root: repo() });
    let all: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(all.iter().any(|d| d.contains("includes expand past")), "{:?}", all.iter().take(3).collect::<Vec<_>>());
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
}

/// Imports `text` on another thread; its diagnostics, or `None` if it had not ended within 20 s
/// (then `unblock` runs, so that the thread ends).
fn import_within(text: String, unblock: impl FnOnce()) -> Option<Vec<String>> {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let imported =
            import(&Inputs { keepalived: Some(Source { file: "k", text: &text }), ..Inputs::default() }, &FsResolver { root: repo() });
        let _ = done.send(imported.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    });
    let result = finished.recv_timeout(std::time::Duration::from_secs(20)).ok();
    if result.is_none() {
        unblock();
    }
    result
}

/// A FIFO in `dir`; `unblock` for it: opens it for writing (without blocking) and closes it, which
/// ends a reader blocked on it.
fn fifo(dir: &Path, name: &str) -> (PathBuf, impl FnOnce()) {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(made.success());
    let writer = path.clone();
    let unblock = move || {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new().write(true).custom_flags(0o4000).open(&writer);
    };
    (path, unblock)
}

/// An include that names a FIFO (or any file that is not a regular one) is an error at once:
/// reading it would wait for a writer forever.
#[test]
fn an_include_of_a_fifo_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, unblock) = fifo(dir.path(), "pipe.conf");
    let diagnostics = import_within(format!("include {}\n", path.display()), unblock).expect("the import hung on the FIFO");
    assert!(
        diagnostics.iter().any(|d| d.starts_with("k:1: error: cannot include") && d.contains("not a regular file")),
        "{diagnostics:#?}"
    );
}

/// A glob that matches more files than the include budget is refused before they are all read:
/// 1 001 small files and, sorted last, a FIFO, which only a reader past the budget would open.
#[test]
fn a_glob_past_the_include_budget_stops_reading() {
    let dir = tempfile::tempdir().expect("dir");
    for i in 0..1001 {
        std::fs::write(dir.path().join(format!("a{i:04}.conf")), "# nothing\n").expect("write");
    }
    let (_, unblock) = fifo(dir.path(), "z.conf");
    let text = format!("include {}/*.conf\n", dir.path().display());
    let diagnostics = import_within(text, unblock).expect("the import read every match, the FIFO among them");
    assert!(diagnostics.iter().any(|d| d.contains("includes expand past")), "{diagnostics:#?}");
}

/// haproxy accepts timeouts of years; halo takes a week at most: the import caps them with a
/// warning, and the result passes the daemon's loader.
#[test]
fn timeouts_over_a_week_are_capped_on_import() {
    let text = "defaults\n  mode tcp\n  timeout client 10000d\n  timeout server 10000d\n  timeout connect 5s\nfrontend f\n  bind 127.0.0.1:8443\n  default_backend b\nbackend b\n  server s1 127.0.0.1:6443 check\n";
    let imported = import(&Inputs { haproxy: Some(Source { file: "h", text }), ..Inputs::default() }, &());
    let all: Vec<String> = imported.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(all.iter().any(|d| d.starts_with("h:3: warning: `timeout client` over 7 days is imported as 7 days")), "{all:#?}");
    let rendered = halo_toml(&imported.config, &imported.notes);
    assert!(halo_config::load_str("imported.toml", &rendered).is_ok(), "the imported file does not load:\n{rendered}");
}

/// haproxy's client rules in the forms that name the sources let through become the
/// frontend's `allow` list; other reject rules stay a warning (halo accepts those clients).
#[test]
fn source_rules_become_the_allow_list() {
    let frontend = |rules: &str| {
        let haproxy = format!(
            "frontend api\n    bind *:8443\n    mode tcp\n{rules}    default_backend masters\n\nbackend masters\n    mode tcp\n    server m1 10.0.0.1:6443 check\n"
        );
        let imported = import(&Inputs { haproxy: Some(Source { file: "h", text: &haproxy }), ..Inputs::default() }, &());
        assert!(!imported.has_errors(), "{:?}", imported.diagnostics);
        let warnings: Vec<String> = imported.diagnostics.iter().map(ToString::to_string).collect();
        let allow: Vec<String> = imported.config.frontends[0].allow.iter().map(ToString::to_string).collect();
        (allow, warnings, halo_toml(&imported.config, &imported.notes))
    };
    let (allow, _, toml) = frontend("    acl internal src 10.150.0.0/24 192.168.1.7\n    tcp-request connection reject if !internal\n");
    assert_eq!(allow, ["10.150.0.0/24", "192.168.1.7/32"]);
    assert!(toml.contains("allow = [\"10.150.0.0/24\", \"192.168.1.7/32\"]"), "{toml}");
    halo_config::load_str("imported", &toml).expect("the imported allow list loads");
    // Lines of one name add up, as haproxy ORs them.
    let (allow, _, _) = frontend("    acl ok src 10.0.0.0/8\n    acl ok src 192.168.0.0/16\n    tcp-request connection reject if !ok\n");
    assert_eq!(allow, ["10.0.0.0/8", "192.168.0.0/16"]);
    let (allow, _, _) = frontend("    tcp-request connection reject if !{ src 10.0.0.0/8 2001:db8::/32 }\n");
    assert_eq!(allow, ["10.0.0.0/8", "2001:db8::/32"]);
    // haproxy sees IPv4 clients of a dual-stack listener as IPv4-mapped; halo as IPv4.
    let (allow, _, _) = frontend("    tcp-request connection reject if !{ src ::ffff:10.0.0.0/104 }\n");
    assert_eq!(allow, ["10.0.0.0/8"]);
    let (allow, _, _) = frontend("    tcp-request connection reject unless { src 10.0.0.0/8 }\n");
    assert_eq!(allow, ["10.0.0.0/8"]);
    // A deny list is no allow list: warned, not imported.
    let (allow, warnings, _) = frontend("    tcp-request connection reject if { src 10.9.9.9 }\n");
    assert!(allow.is_empty());
    assert!(warnings.iter().any(|w| w.contains("is not imported: halo accepts every client this rule rejected")), "{warnings:?}");
}
