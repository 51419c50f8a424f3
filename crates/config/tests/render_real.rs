//! Rendered classic artefacts checked by the real programs: `haproxy -c`, `keepalived
//! --config-test` (root: inside a network namespace that has the interfaces), `sh -n`, and the
//! check script run against a real TLS server, where it must fail on a non-2xx answer.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Netns, can_run, certificate, run};
use halo_config::render::{self, CHECK_SCRIPT_PATH};
use halo_config::{Config, TlsVerify, TrackerKind};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The configs rendered: the example and every golden import.
fn configs() -> Vec<(String, Config)> {
    [
        "examples/halo.toml",
        "testdata/seed/expected.halo.toml",
        "testdata/kubeadm/expected.halo.toml",
        "testdata/extended/expected.halo.toml",
    ]
    .iter()
    .map(|f| {
        let text = std::fs::read_to_string(repo().join(f)).expect("config");
        (f.to_string(), halo_config::load_str(f, &text).expect("loads").config)
    })
    .collect()
}

/// Points every CA file at a real certificate (haproxy opens it).
fn with_ca(mut config: Config, ca: &Path) -> Config {
    for b in &mut config.backends {
        if let TlsVerify::Ca { ca_file, .. } = &mut b.health.verify {
            *ca_file = ca.to_path_buf();
        }
    }
    config
}

#[test]
fn rendered_haproxy_cfg_passes_haproxy_check() {
    if !can_run("rendered_haproxy_cfg_passes_haproxy_check", false, &["haproxy"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, certificate(&["kubernetes"]).0).expect("ca");
    for (name, config) in configs() {
        let rendered = render::haproxy(&with_ca(config, &ca));
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, &rendered.text).expect("write");
        let out = run("haproxy", &["-c", "-f", &file.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: haproxy -c refused:\n{stderr}\n{}", rendered.text);
        assert!(!stderr.contains("[WARNING]"), "{name}: haproxy -c warns:\n{stderr}\n{}", rendered.text);
        eprintln!("haproxy -c accepts the rendering of {name}");
    }
}

#[test]
fn rendered_haproxy_runs_the_https_check_the_seed_never_ran() {
    let text = std::fs::read_to_string(repo().join("testdata/seed/expected.halo.toml")).expect("seed import");
    let rendered = render::haproxy(&halo_config::load_str("seed", &text).expect("loads").config).text;
    assert!(rendered.contains("option httpchk\n    http-check send meth GET uri /healthz\n    http-check expect status 200"), "{rendered}");
    assert!(rendered.contains("check-ssl verify none"), "{rendered}");
    assert!(!rendered.contains("ssl-hello-chk"), "{rendered}");
    assert!(rendered.contains("timeout tunnel 20s"), "the imported timeout is kept, and warned about: {rendered}");
}

/// Program paths a rendered keepalived.conf refers to, other than the check script.
fn programs(config: &Config) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in &config.trackers {
        if let TrackerKind::Script { command, .. } = &t.kind {
            out.insert(command[0].clone());
        }
    }
    for v in &config.vrrp {
        let n = &v.notify;
        for argv in [&n.master, &n.backup, &n.fault, &n.stop, &n.change].into_iter().flatten() {
            out.insert(argv[0].clone());
        }
    }
    out
}

fn interfaces(config: &Config) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = config.vrrp.iter().map(|v| v.interface.clone()).collect();
    for t in &config.trackers {
        if let TrackerKind::Interface { interface } = &t.kind {
            out.insert(interface.clone());
        }
    }
    out
}

#[test]
fn rendered_keepalived_conf_passes_keepalived_config_test() {
    if !can_run("rendered_keepalived_conf_passes_keepalived_config_test", true, &["keepalived", "ip", "unshare"]) {
        return;
    }
    for (name, config) in configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc-keepalived");
        std::fs::create_dir(&etc).expect("dir");
        let script = etc.join(Path::new(CHECK_SCRIPT_PATH).file_name().expect("name"));
        std::fs::write(&script, render::check_script(&config).text).expect("script");
        let conf = dir.path().join("keepalived.conf");
        std::fs::write(&conf, render::keepalived(&config).text).expect("conf");
        let ns = Netns::new();
        for interface in interfaces(&config) {
            ns.add_interface(&interface);
        }
        // keepalived checks that scripts exist and are safe: give it /etc/keepalived (0700,
        // root) and the hook programs, in a mount namespace of the test's own.
        let mut setup = format!("chmod 700 {etc:?} && chmod 755 {script:?} && mount --bind {etc:?} /etc/keepalived");
        for program in programs(&config) {
            let parent = Path::new(&program).parent().expect("absolute").display().to_string();
            assert!(parent.starts_with("/usr/local/") || parent == "/etc/keepalived", "{name}: unexpected hook directory {parent}");
            if parent != "/etc/keepalived" {
                setup.push_str(&format!(" && (mountpoint -q {parent} || mount -t tmpfs none {parent})"));
            }
            setup.push_str(&format!(" && printf '#!/bin/sh\\n' > {program} && chmod 755 {program}"));
        }
        let out = ns.sh(&format!("{setup} && keepalived --config-test -f {conf:?}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name}: keepalived --config-test exit {:?}:\n{stderr}\n{}",
            out.status.code(),
            render::keepalived(&config).text
        );
        eprintln!("keepalived --config-test accepts the rendering of {name}");
    }
}

#[test]
fn rendered_check_script_fails_on_an_error_status_where_the_seed_script_passes() {
    if !can_run("rendered_check_script_fails_on_an_error_status_where_the_seed_script_passes", true, &["ip", "curl", "nginx", "bash"]) {
        return;
    }
    let text = std::fs::read_to_string(repo().join("testdata/seed/expected.halo.toml")).expect("seed import");
    let config = halo_config::load_str("seed", &text).expect("loads").config;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(&["localhost"]);
    std::fs::write(dir.path().join("tls.crt"), cert).expect("cert");
    std::fs::write(dir.path().join("tls.key"), key).expect("key");
    let fixed = dir.path().join("fixed.sh");
    std::fs::write(&fixed, render::check_script(&config).text).expect("script");
    let seed = repo().join("testdata/seed/check_apiserver.sh");
    assert!(run("sh", &["-n", &fixed.to_string_lossy()]).status.success(), "sh -n refuses the rendered script");

    // A real TLS server (nginx) on 127.0.0.1:8443 inside a namespace of our own, answering
    // /healthz with the status under test. Every wait is bounded by a timeout.
    let ns = Netns::new();
    let outcome = |status: u16, script: &Path| {
        let conf = dir.path().join(format!("nginx-{status}.conf"));
        let nginx = format!(
            "pid {pid:?};\nmaster_process off;\nerror_log stderr;\nevents {{}}\nhttp {{\n access_log off;\n server {{\n  listen 127.0.0.1:8443 ssl;\n  ssl_certificate {c:?};\n  ssl_certificate_key {k:?};\n  location / {{ return {status}; }}\n }}\n}}\n",
            pid = dir.path().join("nginx.pid"),
            c = dir.path().join("tls.crt"),
            k = dir.path().join("tls.key"),
        );
        std::fs::write(&conf, nginx).expect("nginx conf");
        let program = format!(
            "timeout 20 nginx -p {p:?} -c {conf:?} -g 'daemon off;' & server=$!; \
             for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.1; done; \
             timeout 10 sh {script:?}; rc=$?; kill $server; wait $server; exit $rc",
            p = dir.path(),
        );
        let out = common::run("ip", &["netns", "exec", &ns.name, "bash", "-c", &program]);
        out.status.code()
    };
    assert_eq!(outcome(200, &fixed), Some(0), "the rendered script passes a healthy balancer");
    assert_eq!(outcome(500, &fixed), Some(1), "the rendered script fails on 500 (curl --fail)");
    assert_eq!(outcome(500, &seed), Some(0), "the seed script passes on 500: the defect the import warns about");
}

#[test]
fn rendered_sysctl_applies_in_a_namespace() {
    let text = std::fs::read_to_string(repo().join("testdata/seed/expected.halo.toml")).expect("seed import");
    let rendered = render::sysctl(&halo_config::load_str("seed", &text).expect("loads").config).text;
    for key in ["arptables", "ip6tables", "iptables"] {
        assert!(rendered.contains(&format!("net.bridge.bridge-nf-call-{key} = 0")), "{rendered}");
    }
    if !can_run("rendered_sysctl_applies_in_a_namespace", true, &["ip", "sysctl"]) {
        return;
    }
    if !Path::new("/proc/sys/net/bridge").exists() {
        assert!(!common::in_ci(), "br_netfilter is not loaded on the CI host");
        eprintln!("SKIP rendered_sysctl_applies_in_a_namespace: br_netfilter not loaded");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("99-halo.conf");
    std::fs::write(&file, &rendered).expect("write");
    let ns = Netns::new();
    let out = ns.sh(&format!("sysctl -p {file:?} && sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-arptables"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("0\n0\n"), "{}", String::from_utf8_lossy(&out.stdout));
}
