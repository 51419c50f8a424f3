//! halo under the restrictions of the unit the package installs, whatever the config: the unit
//! rendered from the shipped example (what `scripts/package.sh` packages) is read, and its
//! `CapabilityBoundingSet=`, `NoNewPrivileges=`, `ProtectSystem=strict`, `PrivateTmp=`,
//! `ProtectKernelTunables=` and `RuntimeDirectory=` are applied as systemd applies them (a
//! bounding set and no-new-privileges with setpriv, read-only bind mounts of every file system
//! but /proc, /sys and /dev, a private /tmp, /proc/sys and /sys read-only, a writable
//! /run/halo) to a daemon in a network namespace. There is no systemd on these machines to run
//! the unit itself; the restrictions are those of the unit file, read from it, not a copy.
//! Root only (run in CI); every process is ended by PID, every namespace deleted.

mod lan;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use lan::{Daemon, Lan, Netns, can_run, run_ok, wait_for};

/// The unit the package installs: `halo render systemd` of the shipped example.
fn packaged_unit() -> String {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/halo.toml");
    let out = run_ok(env!("CARGO_BIN_EXE_halo"), &["render", "systemd", "-c", example]);
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The value of `key=` in the unit's [Service] section (the last one given, as systemd reads it).
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().filter_map(|line| line.strip_prefix(key)?.strip_prefix('=')).next_back()
}

/// A shell command that applies the unit's restrictions in the private mount namespace it runs
/// in, then execs halo with `config` (`dir` is seen as /etc/halo, `run` as /run/halo).
fn under_unit(unit: &str, dir: &Path, run: &Path, extra_binds: &[(&Path, &str)], config: &str) -> String {
    let mut shell = String::from("set -e\n");
    for (from, to) in extra_binds {
        shell += &format!("mount --bind {} {to}\n", from.display());
    }
    // The configuration, where the unit reads it; a private /run whose halo directory the
    // test can read (RuntimeDirectory=halo).
    assert_eq!(directive(unit, "RuntimeDirectory"), Some("halo"), "{unit}");
    shell += &format!("mount -t tmpfs -o mode=755 halo-run /run\nmkdir /run/halo\nmount --bind {} /run/halo\n", run.display());
    shell += &format!("mount -t tmpfs -o mode=755 halo-etc /mnt\nmkdir /mnt/halo\nmount --bind {} /mnt/halo\n", dir.display());
    // The binaries under test (halo and the guard beside it), wherever the build put them (under
    // /tmp in CI, which PrivateTmp hides).
    let binary = Path::new(env!("CARGO_BIN_EXE_halo"));
    shell += &format!("mkdir /mnt/bin\nmount --bind {} /mnt/bin\n", binary.parent().expect("a directory").display());
    if directive(unit, "PrivateTmp") == Some("yes") {
        shell += "mount -t tmpfs -o mode=1777 halo-tmp /tmp\n";
    }
    assert_eq!(directive(unit, "ProtectSystem"), Some("strict"), "{unit}");
    // Everything read-only but the API file systems and what the unit keeps writable (mounts
    // hidden under the test's own are gone from view).
    shell += "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do\n\
              [ -e \"$m\" ] || continue\n\
              case \"$m\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/run/halo|/tmp) ;; *) mount -o remount,bind,ro \"$m\" ;; esac\n\
              done\n";
    if directive(unit, "ProtectKernelTunables") == Some("yes") {
        shell += "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys\n";
        shell += "mount --bind /sys /sys && mount -o remount,bind,ro /sys\n";
    }
    let caps = directive(unit, "CapabilityBoundingSet").expect("the unit sets a capability bounding set");
    let caps: Vec<String> = caps.split_whitespace().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())).collect();
    let no_new_privileges = if directive(unit, "NoNewPrivileges") == Some("yes") { "--no-new-privs" } else { "" };
    shell += &format!(
        "exec setpriv --bounding-set -all,{} --inh-caps -all {no_new_privileges} /mnt/bin/halo run -c /mnt/halo/{config} --pid-file /run/halo/halo.pid\n",
        caps.join(","),
    );
    shell
}

fn start_under_unit(ns: &str, shell: &str, log: &Path) -> Daemon {
    Daemon::start(ns, "unshare", &["--mount", "--propagation", "private", "sh", "-c", shell], log.to_path_buf(), Vec::new())
}

fn dir_for_all(path: &Path) {
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
}

fn sysctl_in(lan: &Lan, host: usize, key: &str) -> String {
    lan.exec(host, "cat", &[&format!("/proc/sys/net/ipv4/conf/{key}")]).trim().to_string()
}

#[test]
fn the_packaged_unit_runs_a_virtual_mac_master() {
    if !can_run("the_packaged_unit_runs_a_virtual_mac_master", true, &["ip", "unshare", "setpriv", "awk"]) {
        return;
    }
    let unit = packaged_unit();
    let lan = Lan::new(1);
    let dir = tempfile::tempdir().expect("dir");
    let run = tempfile::tempdir().expect("run");
    std::fs::write(dir.path().join("halo.toml"), lan::halo_conf(3, 200, "100ms", "192.0.2.170/24", "virtual_mac = true")).expect("config");
    let shell = under_unit(&unit, dir.path(), run.path(), &[], "halo.toml");
    let daemon = start_under_unit(lan.host(0), &shell, &run.path().join("log"));
    let held = wait_for(Duration::from_secs(15), || lan.holds_on(0, "vrrp.51", "192.0.2.170"));
    assert!(held.is_some(), "no VIP on vrrp.51 under the packaged unit:\n{}", daemon.log());
    // The parent's ARP settings were made without a writable /proc/sys.
    assert_eq!(sysctl_in(&lan, 0, "eth0/arp_ignore"), "1", "{}", daemon.log());
    assert_eq!(sysctl_in(&lan, 0, "eth0/arp_announce"), "2", "{}", daemon.log());
    assert_eq!(sysctl_in(&lan, 0, "vrrp.51/arp_ignore"), "1", "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(daemon.stop(), Some(0), "{log}");
    // And undone at the stop.
    assert_eq!(sysctl_in(&lan, 0, "eth0/arp_ignore"), "0");
    assert_eq!(sysctl_in(&lan, 0, "eth0/arp_announce"), "0");
    assert!(lan.exec(0, "ip", &["-o", "link", "show"]).lines().all(|l| !l.contains("vrrp.51")), "vrrp.51 left behind");
}

#[test]
fn the_packaged_unit_runs_scripts_as_script_user_and_kills_an_overrunning_one() {
    if !can_run("the_packaged_unit_runs_scripts_as_script_user_and_kills_an_overrunning_one", true, &["ip", "unshare", "setpriv", "awk"]) {
        return;
    }
    let unit = packaged_unit();
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = tempfile::tempdir().expect("run");
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run.path().join("out");
    dir_for_all(&out);
    // A user of the test's own, in the daemon's private /etc/passwd and /etc/group.
    let passwd = dir.path().join("passwd");
    let group = dir.path().join("group");
    let host_passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let host_group = std::fs::read_to_string("/etc/group").expect("/etc/group");
    std::fs::write(&passwd, format!("{host_passwd}halotest:x:4242:4242::/nonexistent:/usr/sbin/nologin\n")).expect("passwd");
    std::fs::write(&group, format!("{host_group}halotest:x:4242:\n")).expect("group");
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    script("whoami.sh", "id -u > /run/halo/out/uid");
    // Outlives its 1 s timeout by far: halo must kill it (a process of another user).
    script("slow.sh", "echo $$ >> /run/halo/out/slow.pids\nexec sleep 60");
    let config = "[node]\nscript_user = \"halotest\"\n\n\
         [[tracker]]\nname = \"whoami\"\nkind = \"script\"\ncommand = [\"/mnt/halo/whoami.sh\"]\ninterval = \"500ms\"\n\n\
         [[tracker]]\nname = \"slow\"\nkind = \"script\"\ncommand = [\"/mnt/halo/slow.sh\"]\ninterval = \"1s\"\ntimeout = \"1s\"\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"none\"\n[[backend.server]]\nname = \"m1\"\naddress = \"127.0.0.1:6443\"\n";
    std::fs::write(dir.path().join("halo.toml"), config).expect("config");
    let binds: [(&Path, &str); 2] = [(&passwd, "/etc/passwd"), (&group, "/etc/group")];
    let shell = under_unit(&unit, dir.path(), run.path(), &binds, "halo.toml");
    let daemon = start_under_unit(&ns.name, &shell, &run.path().join("log"));
    let uid_file = out.join("uid");
    let ran = wait_for(Duration::from_secs(15), || std::fs::read_to_string(&uid_file).is_ok_and(|t| !t.trim().is_empty()));
    assert!(ran.is_some(), "the script never ran as script_user under the packaged unit:\n{}", daemon.log());
    assert_eq!(std::fs::read_to_string(&uid_file).expect("uid").trim(), "4242", "{}", daemon.log());
    // The overrunning script: started, then killed once its timeout passed.
    let pids = out.join("slow.pids");
    let started = wait_for(Duration::from_secs(15), || std::fs::read_to_string(&pids).is_ok_and(|t| !t.trim().is_empty()));
    assert!(started.is_some(), "the slow script never ran:\n{}", daemon.log());
    let first: u32 = std::fs::read_to_string(&pids).expect("pids").lines().next().and_then(|p| p.trim().parse().ok()).expect("a pid");
    let gone = wait_for(Duration::from_secs(10), || !Path::new(&format!("/proc/{first}")).exists());
    if gone.is_none() {
        // Not left behind by the test either way.
        let _ = std::process::Command::new("kill").args(["-KILL", &first.to_string()]).status();
    }
    assert!(gone.is_some(), "the script that outlived its timeout was not killed (pid {first}):\n{}", daemon.log());
    assert_eq!(daemon.stop(), Some(0));
}
