//! `halo reload`: validates the file with the daemon's loader, then sends SIGHUP to the daemon
//! named by the pid file. A file with errors is never sent: the daemon keeps what it runs. The pid
//! must be a running `halo run`: never 0 or negative (a whole process group, or everything), and
//! never whatever process took a stale pid file's number.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Checks, then signals.
pub fn run(config: &Path, pid_file: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    crate::files::print_diagnostics(&loaded.warnings);
    // A file the daemon could not use (it would refuse to start with it) is not sent either.
    let problems = crate::files::host_file_problems(&loaded, true);
    crate::files::print_diagnostics(&problems);
    if problems.iter().any(|d| d.is_error()) {
        eprintln!("{}: files it names are missing or unusable; nothing was signalled", config.display());
        return Ok(ExitCode::from(crate::files::EXIT_INVALID));
    }
    let text = read_pid_file(pid_file)?;
    let pid: i32 = text.trim().parse().with_context(|| format!("{} does not hold a process id", pid_file.display()))?;
    let daemon_config = running_halo(pid, pid_file)?;
    // SIGHUP makes the daemon re-read its own file: checking another one would say nothing.
    if let Some(theirs) = daemon_config
        && !same_file(&theirs.to_string_lossy(), &config.to_string_lossy())
    {
        anyhow::bail!(
            "halo (pid {pid}) runs {}, not {}: a reload re-reads the daemon's own file; nothing was signalled",
            theirs.display(),
            config.display()
        );
    }
    let sent = unix_ms();
    kill(Pid::from_raw(pid), Signal::SIGHUP).with_context(|| format!("cannot signal halo (pid {pid} from {})", pid_file.display()))?;
    // The daemon says on its status endpoint how the reload ended: a refused one fails here too
    // (and so does `systemctl reload`).
    match confirm(&loaded.config.status, sent, pid) {
        Confirmed::Applied => {
            eprintln!("halo reload: halo (pid {pid}) applied {}", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Confirmed::Refused(why) => {
            eprintln!("halo reload: halo (pid {pid}) refused {}: {why}; it runs what it ran", config.display());
            Ok(ExitCode::from(crate::files::EXIT_INVALID))
        }
        Confirmed::Unknown(why) => {
            eprintln!("halo reload: {} is valid; asked halo (pid {pid}) to apply it (not confirmed: {why})", config.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What the daemon said of the reload.
enum Confirmed {
    Applied,
    Refused(String),
    Unknown(String),
}

/// How long `halo reload` waits for the daemon's word.
const CONFIRM_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Polls the status endpoint until it reports a reload that ended after `sent`. An endpoint that
/// cannot be reached (the daemon runs in another network namespace, say) or that belongs to
/// another halo leaves the outcome unknown at once.
fn confirm(status: &halo_config::Status, sent: u64, pid: i32) -> Confirmed {
    let client = match halo_client::StatusClient::from_config(status) {
        Ok(client) => client,
        Err(e) => return Confirmed::Unknown(format!("{e:#}")),
    };
    let deadline = std::time::Instant::now() + CONFIRM_WITHIN;
    let mut last_error = String::from("no answer yet");
    while std::time::Instant::now() < deadline {
        match client.get("/status").map(|body| serde_json::from_str::<serde_json::Value>(&body)) {
            Ok(Ok(json)) => {
                if json["pid"].as_i64() != Some(i64::from(pid)) {
                    return Confirmed::Unknown(format!("the status endpoint at {} belongs to another halo", client.endpoint()));
                }
                let reload = &json["last_reload"];
                if reload["at_unix_ms"].as_u64().is_some_and(|at| at >= sent) {
                    return if reload["applied"].as_bool() == Some(true) {
                        Confirmed::Applied
                    } else {
                        Confirmed::Refused(reload["message"].as_str().unwrap_or("no reason given").to_string())
                    };
                }
            }
            Ok(Err(e)) => last_error = format!("the status endpoint answered something that is not JSON: {e}"),
            Err(e @ halo_client::StatusError::Connect(_)) => {
                return Confirmed::Unknown(format!("status endpoint at {}: {e}", client.endpoint()));
            }
            Err(e) => last_error = format!("status endpoint at {}: {e}", client.endpoint()),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Confirmed::Unknown(last_error)
}

/// Checks that `pid` is a running `halo run`, by its command line; the configuration file it
/// runs with (relative ones resolved in its working directory), when the command line says.
pub(crate) fn running_halo(pid: i32, pid_file: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    anyhow::ensure!(pid > 0, "{} holds {pid}, which is not a process id; nothing was signalled", pid_file.display());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("no process {pid}: {} is stale (is halo running?); nothing was signalled", pid_file.display()))?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
    let program = args.first().map(|a| a.rsplit(|b| *b == b'/').next().unwrap_or(a));
    // The same binary as this one (whatever it is named: a diverted or renamed binary), or one
    // named halo; running `run`.
    let same_binary = same_file(&format!("/proc/{pid}/exe"), "/proc/self/exe");
    let is_halo = (same_binary || program == Some(b"halo".as_slice())) && args.iter().skip(1).any(|a| *a == b"run");
    anyhow::ensure!(
        is_halo,
        "process {pid} (from {}) is not `halo run` but `{}`: the pid file is stale; nothing was signalled",
        pid_file.display(),
        String::from_utf8_lossy(&cmdline.iter().map(|b| if *b == 0 { b' ' } else { *b }).collect::<Vec<u8>>()).trim()
    );
    let text: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).to_string()).collect();
    let config = text.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-c" | "--config" => text.get(i + 1).cloned(),
        other => other.strip_prefix("--config=").map(str::to_string),
    });
    // Without -c the daemon runs the default file (see `halo run --help`).
    let path = std::path::PathBuf::from(config.unwrap_or_else(|| "/etc/halo/halo.toml".to_string()));
    Ok(Some(if path.is_absolute() { path } else { Path::new(&format!("/proc/{pid}/cwd")).join(path) }))
}

/// Whether two paths lead to one file (device and inode).
pub(crate) fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// A pid file's text: a regular file, read to at most 64 bytes (a FIFO or a device named as the
/// pid file must neither block nor fill memory).
pub(crate) fn read_pid_file(pid_file: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let cannot = || format!("cannot read the pid file {} (is halo running?)", pid_file.display());
    let meta = std::fs::metadata(pid_file).with_context(cannot)?;
    anyhow::ensure!(meta.is_file(), "the pid file {} is not a regular file; nothing was signalled", pid_file.display());
    let mut text = String::new();
    std::fs::File::open(pid_file).and_then(|f| f.take(64).read_to_string(&mut text)).with_context(cannot)?;
    Ok(text)
}
