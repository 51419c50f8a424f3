//! `halo upgrade`: checks the file with this binary (the one now on disk), then asks the daemon
//! named by the pid file to hand over to a new process of the binary it was started from
//! (SIGUSR2), and waits for the outcome: the pid file names the new process once it has taken
//! over and serves; a refusal, or a new process that ended after it took over (the old daemon
//! resumed), is on the old daemon's status endpoint (`last_upgrade`) with its reason.
//! Exit 0 when the new process took over, 1 when it did not (the daemon refused, or resumed, and
//! runs on; or it is gone; or it said nothing in time), 2 when the command could not ask (no
//! daemon, a stale pid file).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::reload::{read_pid_file, running_halo, same_file};

/// Checks, signals, waits.
pub fn run(config: &Path, pid_file: &Path, timeout: Duration) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    crate::files::print_diagnostics(&loaded.warnings);
    let pid = pid_in(pid_file)?;
    if let Some(theirs) = running_halo(pid, pid_file)?
        && !same_file(&theirs.to_string_lossy(), &config.to_string_lossy())
    {
        anyhow::bail!(
            "halo (pid {pid}) runs {}, not {}: the new process loads the daemon's own file; nothing was signalled",
            theirs.display(),
            config.display()
        );
    }
    let binary = std::fs::read_link(format!("/proc/{pid}/exe")).map_or_else(
        |_| "its binary".to_string(),
        |p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string() + " (the file there now)",
    );
    let asked = crate::daemon::generation::unix_ms();
    kill(Pid::from_raw(pid), Signal::SIGUSR2).with_context(|| format!("cannot signal halo (pid {pid} from {})", pid_file.display()))?;
    eprintln!("halo upgrade: asked halo (pid {pid}) to hand over to {binary}");
    let client = halo_client::StatusClient::from_config(&loaded.config.status).ok();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match outcome(pid, pid_file, client.as_ref(), asked) {
            Some(Outcome::TookOver(line)) => {
                eprintln!("halo upgrade: {line}");
                return Ok(ExitCode::SUCCESS);
            }
            Some(Outcome::NotHandedOver(why)) => {
                eprintln!("halo upgrade: no upgrade; halo (pid {pid}) runs on: {why}");
                return Ok(ExitCode::from(crate::files::EXIT_INVALID));
            }
            Some(Outcome::Gone) => {
                eprintln!("halo upgrade: halo (pid {pid}) is gone and no new process took over: no halo runs here; see its log");
                return Ok(ExitCode::from(crate::files::EXIT_INVALID));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("halo upgrade: no outcome within {timeout:?}: see halo's log (pid {pid})");
    Ok(ExitCode::from(crate::files::EXIT_INVALID))
}

/// The pid a pid file names.
fn pid_in(pid_file: &Path) -> anyhow::Result<i32> {
    let text = read_pid_file(pid_file)?;
    text.trim().parse().with_context(|| format!("{} does not hold a process id", pid_file.display()))
}

/// How the upgrade ended, as seen from outside.
enum Outcome {
    /// A new process took over: what to say.
    TookOver(String),
    /// The daemon runs on without a successor (it refused, or the new process ended and it
    /// resumed), and why.
    NotHandedOver(String),
    /// The daemon is gone, and no successor serves.
    Gone,
}

/// The outcome once there is one: the pid file names another running halo (it writes it once it
/// serves), or the daemon's status endpoint reports after `asked` that it did not hand over, or
/// the daemon is gone without a successor.
fn outcome(pid: i32, pid_file: &Path, client: Option<&halo_client::StatusClient>, asked: u64) -> Option<Outcome> {
    // Seen before the pid file is read: a daemon that exits after its successor wrote the file
    // is not taken for one gone without a successor.
    let gone = !Path::new(&format!("/proc/{pid}")).exists();
    let status = client.and_then(|c| c.get("/status").ok()).and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
    if let Ok(new) = pid_in(pid_file)
        && new != pid
        && running_halo(new, pid_file).is_ok()
    {
        let version = status
            .as_ref()
            .filter(|s| s["pid"].as_i64() == Some(i64::from(new)))
            .and_then(|s| s["generation"]["version"].as_str().map(|v| format!(" (version {v})")))
            .unwrap_or_default();
        return Some(Outcome::TookOver(format!("pid {new}{version} took over from pid {pid}, which drains its connections and exits")));
    }
    if let Some(status) = &status
        && status["pid"].as_i64() == Some(i64::from(pid))
    {
        let upgrade = &status["last_upgrade"];
        if upgrade["at_unix_ms"].as_u64().is_some_and(|at| at >= asked) && upgrade["handed_over"].as_bool() == Some(false) {
            return Some(Outcome::NotHandedOver(upgrade["message"].as_str().unwrap_or("no reason given").to_string()));
        }
    }
    if gone {
        return Some(Outcome::Gone);
    }
    None
}
