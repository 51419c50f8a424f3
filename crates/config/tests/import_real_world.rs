//! `halo import` on the forms real clusters' files hold (one behaviour a test): servers by
//! name, stats pages, templates without servers, conditional backends, unchecked servers,
//! plain-HTTP checks, PROXY headers, tcplog; keepalived's liveness scripts, PATH commands, shell
//! syntax, prefixed unicast addresses, long passwords, IPv6 in version 2, excluded addresses,
//! trailing semicolons. Each imported file must also pass the daemon's loader.

use halo_config::import::{Imported, Inputs, Resolver, Source, import};
use halo_config::{AddressFamily, CheckKind, ProxyProtocol, ServerAddress, TrackerKind};

/// Finds `killall`, `pgrep` and `mytool` in /usr/bin, nothing else.
struct FakePath;

impl Resolver for FakePath {
    fn include(&self, _from: &str, pattern: &str, _limit: usize) -> Result<Vec<(String, String)>, String> {
        Err(format!("no includes here ({pattern})"))
    }
    fn which(&self, program: &str) -> Option<String> {
        ["killall", "pgrep", "mytool"].contains(&program).then(|| format!("/usr/bin/{program}"))
    }
}

fn haproxy(text: &str) -> Imported {
    checked(import(&Inputs { haproxy: Some(Source { file: "h", text }), ..Inputs::default() }, &FakePath))
}

fn keepalived(text: &str, haproxy: Option<&str>) -> Imported {
    let inputs = Inputs {
        keepalived: Some(Source { file: "k", text }),
        haproxy: haproxy.map(|text| Source { file: "h", text }),
        ..Inputs::default()
    };
    checked(import(&inputs, &FakePath))
}

/// The import has no error and its rendering passes the loader.
fn checked(imported: Imported) -> Imported {
    assert!(!imported.has_errors(), "{}", all(&imported).join("\n"));
    let text = halo_config::render::halo_toml(&imported.config, &imported.notes);
    if let Err(e) = halo_config::load_str("out.toml", &text) {
        panic!("the import does not load: {e:?}\n{text}");
    }
    imported
}

fn all(imported: &Imported) -> Vec<String> {
    imported.diagnostics.iter().map(|d| d.to_string().lines().next().unwrap_or("").to_string()).collect()
}

fn has(imported: &Imported, start: &str) -> bool {
    all(imported).iter().any(|d| d.starts_with(start))
}

const API: &str = "frontend api\n    bind *:8443\n    mode tcp\n    default_backend masters\n";

#[test]
fn servers_by_name_keep_their_name_and_the_resolution_options_map() {
    let text = format!(
        "{API}\nresolvers mydns\n    nameserver dns1 10.0.0.53:53\n\nbackend masters\n    mode tcp\n    \
         server master1 master1:6443 check resolvers mydns init-addr last,libc,none resolve-prefer ipv4\n    \
         server master2 cp1.example.com:6443 check resolvers mydns init-addr last,libc,none resolve-prefer ipv4\n"
    );
    let imported = haproxy(&text);
    let b = &imported.config.backends[0];
    assert_eq!(b.servers[0].address, ServerAddress::Name { host: "master1".into(), port: 6443 });
    assert_eq!(b.servers[1].address.host_name(), Some("cp1.example.com"));
    assert_eq!(b.resolve_prefer, AddressFamily::Ipv4);
    assert!(has(&imported, "h:11: warning: server `master1`: `resolvers mydns` is not imported"), "{:#?}", all(&imported));
}

#[test]
fn haproxys_default_family_is_kept_when_no_server_says() {
    let imported = haproxy(&format!("{API}\nbackend masters\n    server m1 master1:6443 check\n"));
    assert_eq!(imported.config.backends[0].resolve_prefer, AddressFamily::Ipv6);
}

#[test]
fn a_server_template_becomes_one_server_with_a_warning() {
    let imported = haproxy(&format!("{API}\nbackend masters\n    server-template cp 3 masters.example.com:6443 check\n"));
    assert_eq!(imported.config.backends[0].servers.len(), 1);
    assert_eq!(imported.config.backends[0].servers[0].name, "cp");
    assert!(has(&imported, "h:7: warning: server-template `cp` (3 slots) is imported as one server"), "{:#?}", all(&imported));
}

#[test]
fn a_stats_page_is_skipped_with_one_warning_and_strict_refuses_it() {
    let text = format!(
        "listen stats\n    bind *:9000\n    mode http\n    stats enable\n    stats uri /stats\n    stats refresh 10s\n\n\
         frontend metrics\n    bind *:8405\n    mode http\n    http-request use-service prometheus-exporter if {{ path /metrics }}\n\n\
         {API}\nbackend masters\n    server m1 10.0.0.1:6443 check\n"
    );
    let imported = haproxy(&text);
    assert_eq!(imported.config.frontends.len(), 1);
    assert_eq!(imported.config.frontends[0].name, "api");
    let warnings = all(&imported);
    assert!(has(&imported, "h:1: warning: `listen stats` serves haproxy's status page: skipped"), "{warnings:#?}");
    assert!(has(&imported, "h:8: warning: `frontend metrics` serves haproxy's status page: skipped"), "{warnings:#?}");
    assert!(!warnings.iter().any(|w| w.contains("stats uri") || w.contains("http-request")), "one warning per page: {warnings:#?}");
    let strict = import(&Inputs { haproxy: Some(Source { file: "h", text: &text }), strict: true, ..Inputs::default() }, &FakePath);
    assert!(strict.has_errors());
}

#[test]
fn a_backend_without_servers_imports_with_a_warning() {
    let imported = haproxy(&format!("{API}\nbackend masters\n    mode tcp\n    balance roundrobin\n"));
    assert!(imported.config.backends[0].servers.is_empty());
    assert!(has(&imported, "h:6: warning: backend `masters` has no server"), "{:#?}", all(&imported));
}

#[test]
fn use_backend_without_a_condition_is_the_default_and_with_one_the_first_wins() {
    let plain = haproxy("frontend api\n    bind *:8443\n    use_backend masters\nbackend masters\n    server m1 10.0.0.1:6443 check\n");
    assert_eq!(plain.config.frontends[0].backend, "masters");
    let conditional = haproxy(
        "frontend api\n    bind *:8443\n    use_backend a if { src 10.0.0.0/8 }\n    use_backend b if { src 192.168.0.0/16 }\n\
         backend a\n    server m1 10.0.0.1:6443 check\nbackend b\n    server m2 10.0.0.2:6443 check\n",
    );
    assert_eq!(conditional.config.frontends[0].backend, "a");
    assert!(has(&conditional, "h:3: warning: frontend `api` has only conditional `use_backend` rules"), "{:#?}", all(&conditional));
    assert!(has(&conditional, "h:4: warning: frontend `api`: the conditional `use_backend b` is not imported"), "{:#?}", all(&conditional));
}

#[test]
fn servers_without_check_are_never_probed() {
    let imported = haproxy(&format!("{API}\nbackend masters\n    server m1 10.0.0.1:6443\n    server m2 10.0.0.2:6443\n"));
    assert_eq!(imported.config.backends[0].health.kind, CheckKind::None);
}

#[test]
fn httpchk_without_check_ssl_is_plain_http_except_on_the_api_servers_tls_port() {
    let plain = haproxy(&format!(
        "{API}\nbackend masters\n    option httpchk GET /health\n    http-check expect status 204\n    server m1 10.0.0.1:8080 check\n"
    ));
    let h = &plain.config.backends[0].health;
    assert_eq!((h.kind, h.path.as_str(), h.expect_status), (CheckKind::Http, "/health", 204));
    let api = haproxy(&format!("{API}\nbackend masters\n    option httpchk GET /healthz\n    server m1 10.0.0.1:6443 check\n"));
    assert_eq!(api.config.backends[0].health.kind, CheckKind::Https);
}

#[test]
fn balance_source_maxconn_and_send_proxy() {
    let imported = haproxy(&format!(
        "{API}\nbackend masters\n    balance source\n    default-server check send-proxy-v2 maxconn 200\n    \
         server m1 10.0.0.1:443\n    server m2 10.0.0.2:443\n"
    ));
    let b = &imported.config.backends[0];
    assert_eq!(b.send_proxy, Some(ProxyProtocol::V2));
    assert_eq!(b.balance, halo_config::Balance::RoundRobin);
    assert!(has(&imported, "h:7: warning: backend `masters`: `balance source` has no halo equivalent"), "{:#?}", all(&imported));
    assert!(has(&imported, "h:8: warning: `server `m1` maxconn 200` has no halo equivalent"), "{:#?}", all(&imported));
}

#[test]
fn option_tcplog_turns_the_connection_log_on() {
    let imported = haproxy(&format!(
        "defaults\n    mode tcp\n    log global\n    option tcplog\n{API}\nbackend masters\n    server m1 10.0.0.1:6443 check\n"
    ));
    assert!(imported.config.log.connections);
    let quiet = haproxy(&format!("{API}\nbackend masters\n    server m1 10.0.0.1:6443 check\n"));
    assert!(!quiet.config.log.connections);
}

const INSTANCE: &str = "vrrp_instance VI_1 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority 100\n";
const BACKEND: &str = "frontend api\n    bind *:8443\n    default_backend masters\nbackend masters\n    server m1 10.0.0.1:6443 check\n";

#[test]
fn liveness_scripts_of_haproxy_become_the_balancer_tracker() {
    for script in [
        "killall -0 haproxy",
        "/usr/bin/pidof haproxy",
        "pgrep -x haproxy",
        "systemctl is-active --quiet haproxy",
        "curl -sfk https://localhost:8443/healthz",
    ] {
        let text = format!(
            "vrrp_script chk {{\n  script \"{script}\"\n  interval 2\n  weight -20\n}}\n{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n  track_script {{\n    chk\n  }}\n}}\n"
        );
        let imported = keepalived(&text, Some(BACKEND));
        let tracker = &imported.config.trackers[0];
        assert!(matches!(&tracker.kind, TrackerKind::Balancer { frontend, .. } if frontend == "api"), "{script}: {tracker:?}");
        assert_eq!(tracker.weight, Some(-20));
        assert!(imported.notes.get("tracker chk").is_some_and(|n| n[0].contains(script)), "{:?}", imported.notes);
    }
}

#[test]
fn commands_without_a_path_are_found_through_path_or_disabled_like_keepalived() {
    let text = format!(
        "vrrp_script found {{\n  script \"mytool --check\"\n}}\nvrrp_script missing {{\n  script \"nosuchtool\"\n}}\n\
         {INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n  track_script {{\n    found\n    missing\n  }}\n  notify_master \"nosuchhook\"\n}}\n"
    );
    let imported = keepalived(&text, None);
    assert_eq!(imported.config.trackers.len(), 1);
    assert!(matches!(&imported.config.trackers[0].kind, TrackerKind::Script { command, .. } if command[0] == "/usr/bin/mytool"));
    assert_eq!(imported.config.vrrp[0].track, ["found"]);
    assert!(imported.config.vrrp[0].notify.master.is_none());
    assert!(
        has(&imported, "k:2: warning: `script` runs `mytool` found through PATH: imported as /usr/bin/mytool"),
        "{:#?}",
        all(&imported)
    );
    assert!(has(&imported, "k:4: warning: vrrp_script `missing` runs `nosuchtool`, which is not in PATH"), "{:#?}", all(&imported));
}

#[test]
fn shell_syntax_in_a_script_is_pointed_out_and_passed_as_arguments() {
    let text = format!(
        "vrrp_script chk {{\n  script \"/usr/bin/test -f /tmp/x || exit 1\"\n}}\n{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n  track_script {{\n    chk\n  }}\n}}\n"
    );
    let imported = keepalived(&text, None);
    assert!(matches!(&imported.config.trackers[0].kind, TrackerKind::Script { command, .. } if command.contains(&"||".to_string())));
    assert!(has(&imported, "k:2: warning: `script` contains the shell syntax `||`"), "{:#?}", all(&imported));
}

#[test]
fn unicast_addresses_with_a_prefix_and_long_passwords() {
    let text = format!(
        "{INSTANCE}  authentication {{\n    auth_type PASS\n    auth_pass kubernetes-ha\n  }}\n  unicast_src_ip 192.168.0.91/24\n  unicast_peer {{\n    192.168.0.92/24\n  }}\n  virtual_ipaddress {{\n    192.168.0.100/24\n  }}\n}}\n"
    );
    let imported = keepalived(&text, None);
    let v = &imported.config.vrrp[0];
    assert_eq!(v.auth_password.as_deref(), Some("kubernet"));
    assert_eq!(v.unicast_source, Some("192.168.0.91".parse().expect("address")));
    assert_eq!(v.unicast_peers, ["192.168.0.92".parse::<std::net::IpAddr>().expect("address")]);
    assert!(has(&imported, "k:8: warning: auth_pass is 13 bytes: keepalived sends the first 8"), "{:#?}", all(&imported));
    assert!(has(&imported, "k:10: warning: `192.168.0.91/24`: the prefix /24"), "{:#?}", all(&imported));
}

#[test]
fn ipv6_in_version_2_runs_as_version_3_and_excluded_addresses_are_held_unadvertised() {
    let text = format!(
        "{INSTANCE}  version 2\n  virtual_ipaddress {{\n    fd00::100/64\n  }}\n  virtual_ipaddress_excluded {{\n    fd00::200/64\n    10.0.0.100/24\n  }}\n}}\n"
    );
    let imported = keepalived(&text, None);
    let v = &imported.config.vrrp[0];
    assert_eq!(v.version, halo_vrrp::Version::V3);
    assert_eq!(v.virtual_addresses.len(), 1);
    let mut excluded: Vec<String> = v.excluded_addresses.iter().map(ToString::to_string).collect();
    excluded.sort();
    let mixed = format!("{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100/24\n    fd00::100/64\n  }}\n}}\n");
    let refused = import(&Inputs { keepalived: Some(Source { file: "k", text: &mixed }), ..Inputs::default() }, &FakePath);
    assert!(has(&refused, "k:8: error: vrrp_instance `VI_1`: fd00::100/64 is not of the family"), "{:#?}", all(&refused));
    assert_eq!(excluded, ["10.0.0.100/24", "fd00::200/64"]);
    assert!(has(&imported, "k:1: warning: vrrp_instance `VI_1` has IPv6 addresses"), "{:#?}", all(&imported));
}

#[test]
fn weight_reverse_is_refused_with_its_reason() {
    let text = format!(
        "vrrp_script chk {{\n  script \"/bin/true\"\n  weight 10 reverse\n}}\n{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n}}\n"
    );
    let imported = import(&Inputs { keepalived: Some(Source { file: "k", text: &text }), ..Inputs::default() }, &FakePath);
    assert!(has(&imported, "k:3: error: `weight ... reverse`"), "{:#?}", all(&imported));
}

#[test]
fn a_trailing_semicolon_is_refused_as_keepalived_refuses_it() {
    let text = format!(
        "{INSTANCE}  authentication {{\n    auth_type PASS;\n    auth_pass 42\n  }}\n  virtual_ipaddress {{\n    10.0.0.100\n  }}\n}}\n"
    );
    let imported = import(&Inputs { keepalived: Some(Source { file: "k", text: &text }), ..Inputs::default() }, &FakePath);
    assert!(has(&imported, "k:7: error: `PASS;`: keepalived reads the `;` as part of the word"), "{:#?}", all(&imported));
}

#[test]
fn comments_start_inside_words_and_quoted_braces_stay_in_the_command() {
    let text = format!(
        "vrrp_script chk {{\n  script \"/usr/bin/curl -s -o /dev/null -w %{{http_code}} http://10.0.0.1:6443/\"\n}}\n\
         {INSTANCE}  authentication {{\n    auth_type PASS\n    auth_pass P@##D32!\n  }}\n  virtual_ipaddress {{\n    10.0.0.100\n  }}\n  track_script {{\n    chk\n  }}\n}}\n"
    );
    let imported = keepalived(&text, None);
    assert_eq!(imported.config.vrrp[0].auth_password.as_deref(), Some("P@"));
    let TrackerKind::Script { command, .. } = &imported.config.trackers[0].kind else { panic!("a script tracker") };
    assert!(command.contains(&"%{http_code}".to_string()), "{command:?}");
}

#[test]
fn host_conditional_lines_apply_to_the_config_id() {
    let text = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  @lb1 priority 150\n  @^lb1 priority 100\n  virtual_ipaddress {\n    10.0.0.100\n  }\n}\n";
    let on =
        |id: Option<&str>| import(&Inputs { keepalived: Some(Source { file: "k", text }), config_id: id, ..Inputs::default() }, &FakePath);
    assert_eq!(on(Some("lb1")).config.vrrp[0].priority.get(), 150);
    assert_eq!(on(Some("lb2")).config.vrrp[0].priority.get(), 100);
    let unknown = on(None);
    assert_eq!(unknown.config.vrrp[0].priority.get(), 100);
    assert!(has(&unknown, "k:4: warning: a line for host `lb1` only"), "{:#?}", all(&unknown));
}

#[test]
fn haproxy_refuses_conflict_markers_and_twice_named_servers_and_so_does_the_import() {
    let text = format!(
        "{API}\nbackend masters\n<<<<<<< HEAD\n    server m1 10.0.0.1:6443 check\n=======\n    server m1 10.0.0.2:6443 check\n>>>>>>> branch\n"
    );
    let imported = import(&Inputs { haproxy: Some(Source { file: "h", text: &text }), ..Inputs::default() }, &FakePath);
    assert!(has(&imported, "h:7: error: a merge conflict marker"), "{:#?}", all(&imported));
    assert!(has(&imported, "h:10: error: server `m1` is defined twice (line 8)"), "{:#?}", all(&imported));
}

#[test]
fn a_bind_covered_by_a_wildcard_is_dropped_and_a_trailing_semicolon_ignored() {
    let imported = haproxy(
        "frontend api\n    bind *:8443\n    bind 127.0.0.1:8443\n    bind :::8443;\n    default_backend masters\nbackend masters\n    server m1 10.0.0.1:6443 check\n",
    );
    let binds: Vec<String> = imported.config.frontends[0].binds.iter().map(ToString::to_string).collect();
    assert_eq!(binds, ["0.0.0.0:8443", "[::]:8443"]);
    assert!(has(&imported, "h:1: warning: frontend `api`: bind 127.0.0.1:8443 is covered by 0.0.0.0:8443"), "{:#?}", all(&imported));
}

#[test]
fn an_lvs_virtual_server_becomes_a_frontend_and_backend() {
    let text = format!(
        "{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n}}\n\
         virtual_server 10.0.0.100 6443 {{\n  delay_loop 2\n  lb_algo wlc\n  lb_kind DR\n  persistence_timeout 50\n  protocol TCP\n\
         \x20 sorry_server 10.0.0.9 6443\n\
         \x20 real_server 10.0.0.11 6443 {{\n    weight 2\n    SSL_GET {{\n      url {{\n        path /readyz\n        status_code 200\n      }}\n      connect_timeout 1\n      retry 3\n    }}\n  }}\n\
         \x20 real_server 10.0.0.12 6443 {{\n    weight 1\n  }}\n}}\n"
    );
    let imported = keepalived(&text, None);
    let (f, b) = (&imported.config.frontends[0], &imported.config.backends[0]);
    assert_eq!(f.binds, ["10.0.0.100:6443".parse::<std::net::SocketAddr>().expect("address")]);
    assert_eq!(f.backend, b.name);
    assert_eq!(b.balance, halo_config::Balance::LeastConn);
    assert_eq!((b.health.kind, b.health.path.as_str(), b.health.fall), (CheckKind::Https, "/readyz", 3));
    assert_eq!(b.health.interval, std::time::Duration::from_secs(2));
    let servers: Vec<(String, u32, bool)> = b.servers.iter().map(|s| (s.address.to_string(), s.weight, s.backup)).collect();
    assert_eq!(
        servers,
        [("10.0.0.9:6443".to_string(), 1, true), ("10.0.0.11:6443".to_string(), 2, false), ("10.0.0.12:6443".to_string(), 1, false)]
    );
    assert!(has(&imported, "k:13: warning: lb_kind DR: halo proxies the connection"), "{:#?}", all(&imported));
    assert!(has(&imported, "k:14: warning: `persistence_timeout` is not imported"), "{:#?}", all(&imported));
}

#[test]
fn a_process_check_of_haproxy_becomes_the_balancer_tracker() {
    let text = format!(
        "vrrp_track_process chk_haproxy {{\n  process haproxy\n  weight -60\n  delay 3\n}}\n{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n  track_process {{\n    chk_haproxy\n  }}\n}}\n"
    );
    let imported = keepalived(&text, Some(BACKEND));
    assert!(matches!(imported.config.trackers[0].kind, TrackerKind::Balancer { .. }));
    assert_eq!(imported.config.trackers[0].weight, Some(-60));
    assert_eq!(imported.config.vrrp[0].track, ["chk_haproxy"]);
}

#[test]
fn an_ipv6_wildcard_bind_takes_ipv4_clients_too_unless_v6only() {
    let both = haproxy("frontend api\n    bind :::8443\n    default_backend masters\nbackend masters\n    server m1 10.0.0.1:6443 check\n");
    let binds: Vec<String> = both.config.frontends[0].binds.iter().map(ToString::to_string).collect();
    assert_eq!(binds, ["[::]:8443", "0.0.0.0:8443"]);
    let v6 =
        haproxy("frontend api\n    bind :::8443 v6only\n    default_backend masters\nbackend masters\n    server m1 10.0.0.1:6443 check\n");
    assert_eq!(v6.config.frontends[0].binds.len(), 1);
}

#[test]
fn lvs_current_keyword_names_and_a_long_retry_delay_import() {
    let text = format!(
        "{INSTANCE}  virtual_ipaddress {{\n    10.0.0.100\n  }}\n}}\n\
         virtual_server 10.0.0.100 6443 {{\n  lvs_sched lc\n  lvs_method NAT\n  protocol TCP\n\
         \x20 real_server 10.0.0.11 6443 {{\n    TCP_CHECK {{\n      connect_timeout 1\n      delay_before_retry 5\n    }}\n  }}\n}}\n"
    );
    let imported = keepalived(&text, None);
    let b = &imported.config.backends[0];
    assert_eq!(b.balance, halo_config::Balance::LeastConn);
    assert!(b.health.fast_interval <= b.health.interval, "{:?}", b.health);
    assert!(
        has(&imported, "k:12: warning: lb_kind NAT")
            || has(&imported, "k:12: warning: lvs_method NAT")
            || all(&imported).iter().any(|w| w.contains("NAT")),
        "{:#?}",
        all(&imported)
    );
}

#[test]
fn a_listen_section_without_servers_imports_as_an_empty_backend() {
    // haproxy -c accepts a `listen` with a bind and no server (a template a tool fills later);
    // it serves as its own backend, empty: the same as a frontend pointing at an empty backend.
    let imported = haproxy("defaults\n    mode tcp\nlisten kube-api\n    bind *:6443\n");
    assert_eq!(imported.config.frontends.len(), 1);
    assert_eq!(imported.config.frontends[0].backend, "kube-api");
    assert!(imported.config.backends[0].servers.is_empty());
    assert!(has(&imported, "h:3: warning: backend `kube-api` has no server"), "{:?}", all(&imported));
}

#[test]
fn the_check_settings_come_from_a_checked_server() {
    // The first server has no `check` (haproxy never probes it); the checked one probes over
    // TLS. The backend's one check must be the checked server's (https), not the unchecked
    // server's absence of settings (plain http, which the TLS server answers with 400).
    let text = format!(
        "{API}\nbackend masters\n    mode tcp\n    option httpchk GET /readyz\n    \
         server spare 10.0.0.1:8444\n    server m1 10.0.0.2:8444 check check-ssl verify none fall 5 rise 4\n"
    );
    let imported = haproxy(&text);
    let health = &imported.config.backends[0].health;
    assert_eq!(health.kind, CheckKind::Https, "{:?}", all(&imported));
    assert_eq!((health.fall, health.rise), (5, 4));
}

#[test]
fn instances_tracking_one_interface_with_different_weights_keep_their_own() {
    // keepalived weighs each instance's track_interface line on its own: A loses 60 of priority
    // when eth2 goes down, B (no weight) goes to FAULT. halo keeps one weight per tracker, so the
    // two need two trackers of that interface; one shared tracker silently gives B A's weight.
    let vi = |name: &str, interface: &str, vrid: u8, track: &str| {
        format!(
            "vrrp_instance {name} {{\n    interface {interface}\n    virtual_router_id {vrid}\n    priority 150\n    \
             virtual_ipaddress {{ 10.{vrid}.0.1/24 }}\n    track_interface {{\n        {track}\n    }}\n}}\n"
        )
    };
    for (first, second) in [
        (vi("A", "eth0", 1, "eth2 weight -60"), vi("B", "eth1", 2, "eth2")),
        (vi("B", "eth1", 2, "eth2"), vi("A", "eth0", 1, "eth2 weight -60")),
    ] {
        let imported = keepalived(&format!("{first}{second}"), None);
        let c = &imported.config;
        let weight_of = |instance: &str| {
            let v = c.vrrp.iter().find(|v| v.name == instance).expect("instance");
            assert_eq!(v.track.len(), 1, "{:?}", v.track);
            let tracker = c.tracker(&v.track[0]).expect("tracker");
            assert_eq!(tracker.kind, TrackerKind::Interface { interface: "eth2".to_string() });
            tracker.weight
        };
        assert_eq!((weight_of("A"), weight_of("B")), (Some(-60), None), "{:?}", all(&imported));
    }
}

/// keepalived's `use_vmac` on an IPv6 instance: halo cannot send that instance's adverts from a
/// virtual-MAC interface yet, so the import keeps the instance on the real interface and says so
/// (the file still loads).
#[test]
fn use_vmac_on_an_ipv6_instance_is_dropped_with_a_warning() {
    let text = "vrrp_instance V6 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 62\n  priority 100\n  use_vmac\n  virtual_ipaddress {\n    2001:db8::10/64\n  }\n}\n";
    let imported = keepalived(text, None);
    assert!(!imported.config.vrrp[0].virtual_mac, "{:#?}", imported.config.vrrp[0]);
    assert!(has(&imported, "k:1: warning: vrrp_instance `V6`: use_vmac"), "{:#?}", all(&imported));
}
