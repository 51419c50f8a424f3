//! Test support: gating on root and on installed tools (mandatory under CI, a printed skip
//! elsewhere), throwaway network namespaces removed on drop, and real certificates.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// True under CI, where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether this test can run: panics under CI when it cannot, prints why it skips elsewhere.
pub fn can_run(test: &str, needs_root: bool, tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools.iter().filter(|t| !tool_exists(t)).map(|t| format!("`{t}` not installed")).collect();
    if needs_root && !nix_is_root() {
        missing.push("not root".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    assert!(!in_ci(), "{test}: cannot run under CI: {why} (scripts/setup.sh installs the tools; CI runs as root)");
    eprintln!("SKIP {test}: {why}");
    false
}

fn tool_exists(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(name).is_file())
}

fn nix_is_root() -> bool {
    // The effective uid, read without unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)).map(|u| u == "0"))
        .unwrap_or(false)
}

/// Runs a command, returning its output; panics with the command line if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn run_ok(program: &str, args: &[&str]) -> Output {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of this test process, deleted (with everything in it) on drop.
pub struct Netns {
    /// `ip netns` name.
    pub name: String,
}

impl Netns {
    /// Creates `halo-t<pid>-<n>`, with loopback up.
    pub fn new() -> Self {
        let name = format!("halo-t{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        run_ok("ip", &["netns", "add", &name]);
        let ns = Self { name };
        run_ok("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Adds an interface of that name (one end of a veth pair whose other end stays inside too).
    pub fn add_interface(&self, interface: &str) {
        let peer = format!("p{}", &interface.chars().take(12).collect::<String>());
        run_ok("ip", &["-n", &self.name, "link", "add", interface, "type", "veth", "peer", "name", &peer]);
        run_ok("ip", &["-n", &self.name, "link", "set", interface, "up"]);
    }

    /// Runs a shell command inside, in a private mount namespace.
    pub fn sh(&self, script: &str) -> Output {
        run("ip", &["netns", "exec", &self.name, "unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip").args(["netns", "del", &self.name]).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("warning: could not delete netns {}: {other:?}", self.name),
        }
    }
}

/// A self-signed certificate and key, PEM.
pub fn certificate(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}
