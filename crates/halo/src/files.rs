//! Files in and out, shared by the commands, the daemon and `halo host`: a config loaded the way
//! the daemon loads it (diagnostics printed), and outputs written atomically.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use halo_config::{Diagnostic, LoadError, Loaded, Severity};

/// Exit code for input with errors.
pub const EXIT_INVALID: u8 = 1;

/// Prints diagnostics to standard error, each with its place and hint.
pub fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

/// Loads a config the way the daemon will. `Ok(Err(code))` when it is invalid (already printed),
/// `Err` when it cannot be read at all.
pub fn load(path: &Path) -> anyhow::Result<Result<Loaded, ExitCode>> {
    match halo_config::load_file(path) {
        Ok(loaded) => Ok(Ok(loaded)),
        Err(LoadError::Invalid(diagnostics)) => {
            print_diagnostics(&diagnostics);
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!("{}: {errors} error(s); nothing was changed", path.display());
            Ok(Err(ExitCode::from(EXIT_INVALID)))
        }
        Err(other) => Err(other.into()),
    }
}

/// The files halo.toml names that this host lacks or that halo could not use (a directory, a
/// file it may not read, a program that is not executable; see `halo_config::host_files`), each
/// as a diagnostic at its place: an error for what halo cannot start without when `for_start`,
/// a warning otherwise (`halo check` may run on another host than the one the file is for).
pub fn host_file_problems(loaded: &Loaded, for_start: bool) -> Vec<Diagnostic> {
    let in_container = std::env::var_os("container").is_some_and(|v| !v.is_empty());
    let place = if in_container { "in this container" } else { "on this host" };
    loaded
        .host_files
        .iter()
        .filter_map(|file| {
            let (problem, hint) = host_file_problem(file, in_container)?;
            let severity = if for_start && file.role.needed_to_start() { Severity::Error } else { Severity::Warning };
            Some(Diagnostic {
                severity,
                location: Some(file.location.clone()),
                message: format!("{} names {}, which {problem} {place}", file.key, file.path.display()),
                hint: Some(hint),
            })
        })
        .collect()
}

/// What is wrong with one host file here, and what to do about it; `None` when nothing is.
fn host_file_problem(file: &halo_config::host_files::HostFile, in_container: bool) -> Option<(String, String)> {
    use halo_config::host_files::Role;
    use std::os::unix::fs::PermissionsExt;
    let unreadable_hint = "halo reads as root without CAP_DAC_OVERRIDE (the packaged unit, the pod, the quadlet): \
                           make it owned by root or readable by others"
        .to_string();
    let metadata = match std::fs::metadata(&file.path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = match (in_container, file.role) {
                (true, Role::SystemProgram) => "the image carries busybox's tools only (sh, cat, grep, wget, nc, ...): \
                                                run a script mounted from the host with /bin/sh"
                    .to_string(),
                (true, _) => "not mounted into the pod or container? `halo render static-pod` and `halo render quadlet` \
                              mount every file halo.toml names: render again after changing halo.toml"
                    .to_string(),
                (false, Role::TrackerFile) => "the tracker reads as failed until it appears".to_string(),
                (false, _) => "halo run refuses to start without it".to_string(),
            };
            return Some(("does not exist".to_string(), hint));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Some((format!("cannot be reached ({e})"), unreadable_hint)),
        Err(e) => return Some((format!("cannot be examined ({e})"), "give the path of a regular file".to_string())),
    };
    if !metadata.is_file() {
        return Some(("is not a regular file".to_string(), "give the path of a file, not a directory or device".to_string()));
    }
    if file.role.is_program() {
        return (metadata.permissions().mode() & 0o111 == 0)
            .then(|| ("is not executable".to_string(), format!("chmod +x {}", file.path.display())));
    }
    match std::fs::File::open(&file.path) {
        Ok(_) => None,
        Err(e) => Some((format!("cannot be read ({e})"), unreadable_hint)),
    }
}

/// Writes `text` to `path` atomically (temporary file in the same directory, fsync, rename),
/// or to standard output when there is no path.
pub fn write_output(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let Some(path) = path else {
        std::io::stdout().write_all(text.as_bytes()).context("writing to standard output")?;
        return Ok(());
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))?;
    temp.write_all(text.as_bytes()).and_then(|()| temp.as_file().sync_all()).with_context(|| format!("cannot write {}", path.display()))?;
    temp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The status token file when its mode lets its group or others read it (the token guards the
/// status endpoint: anyone on the host who reads it may ask); `None` when only its owner can, or
/// there is none, or it cannot be read (the daemon says so when it starts).
pub fn token_readable_by_others(status: &halo_config::Status) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let token = status.token_file.as_ref()?;
    let mode = std::fs::metadata(token).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| token.clone())
}
