//! FRR inside the lab's namespaces: zebra, bfdd and bgpd per host, started in the foreground
//! (ended by PID like every lab process) with FRR's `datacenter` defaults, their sockets and pid
//! files in FRR's pathspace `/var/run/frr/<namespace>`, the host's `frr.conf` then loaded through
//! vtysh as FRR's own boot loads it; vtysh queries; the removal of the pathspaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::net::{DIR, Host, PREFIX, Processes};

/// Where Debian installs FRR's daemons.
const DAEMONS_DIR: &str = "/usr/lib/frr";
/// zebra first: the others connect to its socket.
const DAEMONS: [&str; 3] = ["zebra", "bfdd", "bgpd"];
/// FRR's run directory; a pathspace (`-N NAME`) is a directory in it.
const RUN: &str = "/var/run/frr";
/// A bound on a daemon making its sockets.
const START: Duration = Duration::from_secs(10);

/// Fails with what to do when FRR is not installed.
pub fn require_installed() -> anyhow::Result<()> {
    let missing: Vec<String> = DAEMONS
        .iter()
        .map(|d| Path::new(DAEMONS_DIR).join(d))
        .chain(std::iter::once(PathBuf::from("/usr/bin/vtysh")))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "FRR is not installed ({} missing): apt-get install frr, or run scripts/lab.sh",
        missing.join(", ")
    );
    Ok(())
}

/// A host's FRR configuration, written by the lab (the balancers': by `halo render frr`).
pub fn config_path(host: &Host) -> PathBuf {
    PathBuf::from(DIR).join(format!("{}.frr.conf", host.name))
}

/// FRR's pathspace of a host: its sockets and pid files.
fn pathspace(host: &Host) -> PathBuf {
    PathBuf::from(RUN).join(host.netns())
}

/// The lab's name of one daemon process (its log is `DIR/NAME.log`).
fn process(host: &Host, daemon: &str) -> String {
    format!("{}-{daemon}", host.name)
}

/// Starts FRR on `host` and loads its configuration. A fresh pathspace each time: a crashed
/// host's sockets and pid files would make the next start wait on a dead daemon's socket.
pub fn start(processes: &mut Processes, host: &Host) -> anyhow::Result<()> {
    let dir = pathspace(host);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let empty = dir.join("empty.conf");
    std::fs::write(&empty, "").with_context(|| format!("writing {}", empty.display()))?;
    run("chown", &["-R", "frr:frr", &dir.display().to_string()])?;
    let (netns, empty) = (host.netns(), empty.display().to_string());
    for daemon in DAEMONS {
        let pid = dir.join(format!("{daemon}.pid")).display().to_string();
        let args = ["-F", "datacenter", "-N", &netns, "-u", "frr", "-g", "frr", "-f", &empty, "-i", &pid, "-P", "0", "--log", "stdout"];
        processes.start(&process(host, daemon), &netns, &Path::new(DAEMONS_DIR).join(daemon), &args)?;
        let mut sockets = vec![dir.join(format!("{daemon}.vty"))];
        if daemon == "zebra" {
            sockets.push(dir.join("zserv.api"));
        }
        let deadline = Instant::now() + START;
        while !sockets.iter().all(|s| s.exists()) {
            if crate::interrupted() {
                bail!("interrupted");
            }
            if Instant::now() > deadline || !processes.is_running(&process(host, daemon)) {
                bail!("{daemon} on {} did not start (see {DIR}/{}.log)", host.name, process(host, daemon));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let config = config_path(host).display().to_string();
    let said = vtysh(host, &["-f", &config])?;
    if said.contains('%') {
        bail!("FRR on {} refused its configuration {config}:\n{said}", host.name);
    }
    Ok(())
}

/// Kills the host's daemons (a crash: nothing is withdrawn, no notification sent).
pub fn kill(processes: &mut Processes, host: &Host) -> anyhow::Result<()> {
    for daemon in DAEMONS.iter().rev() {
        processes.kill(&process(host, daemon))?;
    }
    Ok(())
}

/// A `... json` command's answer from the host's FRR, `Null` when there is none.
pub fn json(host: &Host, command: &str) -> serde_json::Value {
    vtysh(host, &["-c", command]).ok().and_then(|out| serde_json::from_str(&out).ok()).unwrap_or_default()
}

/// What vtysh says on its standard output and error, without the warning every pathspace gives
/// (no vtysh.conf of its own).
fn vtysh(host: &Host, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("vtysh").args(["-N", &host.netns()]).args(args).output().context("running vtysh (is frr installed?)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let noise = |l: &&str| !l.contains("vtysh.conf");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr.lines().filter(noise).map(|l| format!("{l}\n")).collect::<String>());
    if !out.status.success() {
        bail!("vtysh -N {} {}: {}", host.netns(), args.join(" "), said.trim());
    }
    Ok(said)
}

/// Removes the pathspaces of the lab's namespaces (after their daemons were killed); what it
/// removed, for the log.
pub fn remove_state() -> anyhow::Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(RUN) else { return Ok(Vec::new()) };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            removed.push(entry.path().display().to_string());
        }
    }
    Ok(removed)
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
