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

/// The files halo.toml names that this host lacks (see `halo_config::host_files`), each as a
/// diagnostic at its place: an error for a file halo cannot start without when `for_start`, a
/// warning otherwise (`halo check` may run on another host than the one the file is for).
pub fn missing_host_files(loaded: &Loaded, for_start: bool) -> Vec<Diagnostic> {
    use halo_config::host_files::Need;
    let in_container = std::env::var_os("container").is_some_and(|v| !v.is_empty());
    loaded
        .host_files
        .iter()
        .filter(|f| std::fs::metadata(&f.path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound))
        .map(|f| {
            let severity = if for_start && f.need == Need::ToStart { Severity::Error } else { Severity::Warning };
            let hint = match (in_container, f.need) {
                (true, _) => "not mounted into the pod or container? `halo render static-pod` and `halo render quadlet` mount every \
                              file halo.toml names: render again after changing halo.toml"
                    .to_string(),
                (false, Need::ToStart) => "halo run refuses to start without it".to_string(),
                (false, Need::WhileRunning) => "the tracker reads as failed until it appears".to_string(),
            };
            let place = if in_container { "in this container" } else { "on this host" };
            Diagnostic {
                severity,
                location: Some(f.location.clone()),
                message: format!("{} names {}, which does not exist {place}", f.key, f.path.display()),
                hint: Some(hint),
            }
        })
        .collect()
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
