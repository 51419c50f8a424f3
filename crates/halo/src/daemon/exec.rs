//! Running the commands halo is configured with (tracker scripts and notify hooks), the way
//! keepalived runs them with `enable_script_security`: no shell, a clean environment (only
//! `PATH`), as `[node] script_user` (root when unset), and only when nobody else could have
//! changed the program (the file or a directory above it). Each runs in its own process group; a
//! run past its timeout is killed with everything it started.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use halo_hostnet::run_as::Credentials;

/// The only environment a command gets; names without a slash are looked up here too.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `[node] script_user` of the configuration in force.
static SCRIPT_USER: RwLock<Option<String>> = RwLock::new(None);

/// Sets the user commands run as (the daemon calls it at start and on every reload).
pub fn set_script_user(user: Option<String>) {
    *SCRIPT_USER.write().unwrap_or_else(PoisonError::into_inner) = user;
}

/// Checks that a configured script user exists on this host (the daemon refuses to start, or a
/// reload, otherwise: every script and hook would fail and instances go to FAULT).
pub fn check_script_user(user: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = user else { return Ok(()) };
    match nix::unistd::User::from_name(name) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => anyhow::bail!("[node] script_user {name} does not exist on this host"),
        Err(e) => anyhow::bail!("looking up [node] script_user {name}: {e}"),
    }
}

/// Whom a command runs as: uid and gid, `None` for the daemon's own (root).
fn run_as() -> Result<Option<nix::unistd::User>, String> {
    let Some(name) = SCRIPT_USER.read().unwrap_or_else(PoisonError::into_inner).clone() else { return Ok(None) };
    match nix::unistd::User::from_name(&name) {
        Ok(Some(user)) => Ok(Some(user)),
        Ok(None) => Err(format!("script_user {name} does not exist on this host")),
        Err(e) => Err(format!("looking up script_user {name}: {e}")),
    }
}

/// Runs a command; `(passed, why)`: "exit 0", the exit status, the timeout, or why it did not
/// run at all.
pub async fn run_script(argv: &[String], timeout: Duration) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else { return (false, "empty command".to_string()) };
    // The user lookup (NSS: maybe LDAP) and the file checks block: not on a runtime thread.
    let owned: Vec<String> = argv.to_vec();
    let prepared = tokio::task::spawn_blocking(move || prepare(&owned)).await;
    let (path, user) = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(why)) => return (false, why),
        Err(e) => return (false, format!("preparing {program}: {e}")),
    };
    let mut command = tokio::process::Command::new(&path);
    command
        .args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(credentials) = &user {
        // With every group of the user, as keepalived's script_user (initgroups).
        credentials.apply(command.as_std_mut());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot run {program}: {e}")),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => (true, "exit 0".to_string()),
        Ok(Ok(status)) => (false, format!("{status}")),
        Ok(Err(e)) => (false, format!("waiting for {program}: {e}")),
        Err(_) => {
            kill_group(&mut child, program).await;
            (false, format!("timeout after {}", humantime::format_duration(timeout)))
        }
    }
}

/// Interpreters whose first operand is the program that really runs.
const INTERPRETERS: [&str; 9] = ["sh", "bash", "dash", "zsh", "ksh", "python", "perl", "ruby", "node"];

/// Whom to run as, and the program's real path (links resolved, checked): the path that runs, so
/// that nothing can be swapped between the check and the start. A script handed to an
/// interpreter (`/bin/sh /etc/halo/check.sh`) is checked as well.
fn prepare(argv: &[String]) -> Result<(PathBuf, Option<Credentials>), String> {
    let user = run_as()?;
    let allowed = user.as_ref().map(|u| u.uid.as_raw());
    let credentials = user
        .as_ref()
        .map(|u| Credentials::of(u).map_err(|e| format!("looking up the groups of script_user {}: {e}", u.name)))
        .transpose()?;
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let real = check_safe(&resolve(program)?, allowed)?;
    // python3.11 is python: version digits aside.
    let name = real.file_name().and_then(|n| n.to_str()).map(|n| n.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.'));
    let interpreter = name.is_some_and(|n| INTERPRETERS.contains(&n));
    if interpreter && let Some(script) = args.iter().find(|a| !a.starts_with('-')).map(Path::new).filter(|a| a.is_file()) {
        check_safe(script, allowed)?;
    }
    Ok((real, credentials))
}

/// Kills a timed-out command's whole process group (a shell's children too) and reaps it.
async fn kill_group(child: &mut tokio::process::Child, program: &str) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let group = nix::unistd::Pid::from_raw(pid);
        if let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
            tracing::warn!(program, error = %e, "could not kill a timed-out command's process group");
        }
    }
    if let Err(e) = child.kill().await {
        tracing::warn!(program, error = %e, "could not reap a timed-out command");
    }
}

/// The program's path: as written when it has a slash, else the first match on [`SAFE_PATH`].
fn resolve(program: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    SAFE_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{program} is not on {SAFE_PATH}"))
}

/// Refuses a program that someone other than root (or the script user, `allowed`) could modify:
/// every directory on the way to it as written (links included: who may replace a link matters)
/// and every directory on the way to what it resolves to, and the file itself, must be owned by
/// one of them and not writable by group or others, except directories with the sticky bit (like
/// /tmp), where only owners can replace entries. Returns the resolved path.
pub fn check_safe(path: &Path, allowed: Option<u32>) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let written = path.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty());
    for place in real.ancestors().chain(written) {
        // A link's own mode means nothing; its directory (also on the list) decides who may
        // replace it, and its target is on the resolved path.
        let meta = std::fs::symlink_metadata(place).map_err(|e| format!("cannot check {}: {e}", place.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let owner_ok = meta.uid() == 0 || Some(meta.uid()) == allowed;
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        let others_write = meta.mode() & 0o022 != 0 && !sticky_dir;
        if !owner_ok || others_write {
            let why = if owner_ok { "is writable by group or others" } else { "belongs to another user" };
            return Err(format!(
                "refused to run {}: {} {why}, so anyone could change what runs as {} (make it root's and not writable by others, or set [node] script_user)",
                path.display(),
                place.display(),
                if allowed.is_some() { "the script user" } else { "root" }
            ));
        }
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// These tests create files that must belong to root: as another user they say why they skip
    /// (never under CI, which runs as root).
    fn as_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{test}: CI runs as root");
        eprintln!("SKIP {test}: not root");
        false
    }

    #[tokio::test]
    async fn scripts_pass_fail_and_time_out() {
        assert!(run_script(&["/bin/true".into()], Duration::from_secs(5)).await.0);
        let (ok, why) = run_script(&["/bin/false".into()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("exit status: 1"), "{why}");
        let started = std::time::Instant::now();
        let (ok, why) = run_script(&["/bin/sleep".into(), "10".into()], Duration::from_millis(200)).await;
        assert!(!ok && why.starts_with("timeout after 200ms"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(5), "the command was killed");
        let (ok, why) = run_script(&["/nonexistent".into()], Duration::from_secs(1)).await;
        assert!(!ok && why.starts_with("cannot run /nonexistent"), "{why}");
    }

    #[tokio::test]
    async fn names_without_a_slash_are_found_on_the_safe_path() {
        assert!(run_script(&["true".into()], Duration::from_secs(5)).await.0);
        let (ok, why) = run_script(&["no-such-command-anywhere".into()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("is not on /usr/local/sbin"), "{why}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("dir");
        let pid_file = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let (ok, _) = run_script(&["/bin/sh".into(), "-c".into(), script], Duration::from_secs(2)).await;
        assert!(!ok);
        let pid: i32 =
            std::fs::read_to_string(&pid_file).expect("the shell wrote its child's pid within 2 s").trim().parse().expect("number");
        let gone = (0..100).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
            if stat.is_empty() || zombie {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
            false
        });
        assert!(gone, "the shell's child {pid} survived the timeout");
    }

    #[tokio::test]
    async fn commands_get_a_clean_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("env");
        let script = format!("/usr/bin/env > {}", out.display());
        assert!(run_script(&["/bin/sh".into(), "-c".into(), script], Duration::from_secs(5)).await.0);
        let env = std::fs::read_to_string(&out).expect("env");
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"PATH"), "{env}");
        for inherited in ["HOME", "CARGO_MANIFEST_DIR", "NOTIFY_SOCKET", "RUST_BACKTRACE"] {
            assert!(!names.contains(&inherited), "{inherited} reached the command: {env}");
        }
    }

    #[tokio::test]
    async fn a_script_others_could_change_is_refused() {
        if !as_root("a_script_others_could_change_is_refused") {
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("check.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("mode");
        assert!(run_script(&[script.display().to_string()], Duration::from_secs(5)).await.0, "a root-owned 0755 script runs");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o757)).expect("mode");
        let (ok, why) = run_script(&[script.display().to_string()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("is writable by group or others"), "{why}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("mode");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("mode");
        let (ok, why) = run_script(&[script.display().to_string()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains(&format!("{} is writable", dir.path().display())), "{why}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("mode");
        assert!(run_script(&[script.display().to_string()], Duration::from_secs(5)).await.0, "a sticky directory is fine");
        nix::unistd::chown(&script, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let (ok, why) = run_script(&[script.display().to_string()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("belongs to another user"), "{why}");
        assert!(check_safe(&script, Some(65534)).is_ok(), "the script user's own script is fine");
    }

    #[tokio::test]
    async fn a_link_in_a_directory_others_can_write_is_refused_and_scripts_given_to_an_interpreter_are_checked() {
        if !as_root("a_link_in_a_directory_others_can_write_is_refused_and_scripts_given_to_an_interpreter_are_checked") {
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("mode");
        let link = open.join("true");
        std::os::unix::fs::symlink("/bin/true", &link).expect("link");
        let (ok, why) = run_script(&[link.display().to_string()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains(&format!("{} is writable", open.display())), "{why}");
        let script = open.join("x.sh");
        std::fs::write(&script, "exit 0\n").expect("script");
        let (ok, why) = run_script(&["/bin/sh".into(), script.display().to_string()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("is writable"), "{why}");
    }
}
