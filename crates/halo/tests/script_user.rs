//! Commands run as `[node] script_user` with that user's groups, as keepalived's `script_user`
//! (initgroups): a script that needs a group the user is a member of (a socket's group, a
//! key file's) must have it. The daemon runs in a network namespace and a private mount
//! namespace whose /etc/passwd and /etc/group are files of the test, naming a user of its own;
//! nothing of the host changes. Root only (run in CI); every process is ended by PID.

mod lan;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lan::{Daemon, Netns, can_run, wait_for};

#[test]
fn a_tracker_script_runs_with_the_script_users_supplementary_groups() {
    if !can_run("a_tracker_script_runs_with_the_script_users_supplementary_groups", true, &["ip", "unshare", "id"]) {
        return;
    }
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let passwd = dir.path().join("passwd");
    let group = dir.path().join("group");
    let host_passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let host_group = std::fs::read_to_string("/etc/group").expect("/etc/group");
    std::fs::write(&passwd, format!("{host_passwd}halotest:x:4242:4242::/nonexistent:/usr/sbin/nologin\n")).expect("passwd");
    std::fs::write(&group, format!("{host_group}halotest:x:4242:\nhaloextra:x:4243:halotest\n")).expect("group");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let script = dir.path().join("groups.sh");
    std::fs::write(&script, format!("#!/bin/sh\nid -G > {}/groups\n", out.display())).expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.path().join("halo.toml");
    let text = format!(
        "[node]\nscript_user = \"halotest\"\n\n[[tracker]]\nname = \"groups\"\nkind = \"script\"\ncommand = [\"{}\"]\ninterval = \"500ms\"\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"none\"\n[[backend.server]]\nname = \"m1\"\naddress = \"127.0.0.1:6443\"\n",
        script.display()
    );
    std::fs::write(&config, text).expect("config");
    let shell = format!(
        "mount --bind {} /etc/passwd && mount --bind {} /etc/group && exec {} run -c {}",
        passwd.display(),
        group.display(),
        env!("CARGO_BIN_EXE_halo"),
        config.display()
    );
    let log = dir.path().join("halo.log");
    let daemon = Daemon::start(&ns.name, "unshare", &["--mount", "--propagation", "private", "sh", "-c", &shell], log, Vec::new());
    let written = out.join("groups");
    let ran = wait_for(Duration::from_secs(15), || std::fs::read_to_string(&written).is_ok_and(|t| !t.trim().is_empty()));
    assert!(ran.is_some(), "the script never ran:\n{}", daemon.log());
    let groups = std::fs::read_to_string(&written).expect("groups");
    let ids: Vec<&str> = groups.split_whitespace().collect();
    eprintln!("the script ran with groups {ids:?}");
    assert!(ids.contains(&"4242"), "its own group: {ids:?}");
    assert!(ids.contains(&"4243"), "the supplementary group of script_user was dropped: {ids:?}\n{}", daemon.log());
    assert!(!ids.contains(&"0"), "root's group kept: {ids:?}");
}
