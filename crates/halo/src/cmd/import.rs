//! `halo import`: classic haproxy.cfg / keepalived.conf / check script -> halo.toml.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use halo_config::import::{self, FsResolver, Source};

/// The command's arguments.
#[derive(Debug)]
pub struct Inputs {
    /// haproxy.cfg
    pub haproxy: Option<PathBuf>,
    /// keepalived.conf
    pub keepalived: Option<PathBuf>,
    /// check_apiserver.sh
    pub check_script: Option<PathBuf>,
    /// Output file; standard output when `None`.
    pub output: Option<PathBuf>,
    /// Unmappable directives are errors.
    pub strict: bool,
    /// keepalived's config id for `@host` lines; the short host name when unset.
    pub config_id: Option<String>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = halo_config::load::read_bounded(path)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Imports, prints the diagnostics, verifies the result with the daemon's loader, writes it.
pub fn run(inputs: &Inputs) -> anyhow::Result<ExitCode> {
    let texts = |p: &Option<PathBuf>| p.as_ref().map(|p| Ok::<_, anyhow::Error>((p.display().to_string(), read(p)?))).transpose();
    let haproxy = texts(&inputs.haproxy)?;
    let keepalived = texts(&inputs.keepalived)?;
    let script = texts(&inputs.check_script)?;
    fn source(t: &Option<(String, String)>) -> Option<Source<'_>> {
        t.as_ref().map(|(file, text)| Source { file, text })
    }
    // keepalived's default config id: the host name up to its first dot.
    let config_id = inputs.config_id.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        host.split('.').next().unwrap_or_default().to_string()
    });
    let imported = import::import(
        &import::Inputs {
            haproxy: source(&haproxy),
            keepalived: source(&keepalived),
            check_script: source(&script),
            strict: inputs.strict,
            config_id: Some(config_id.as_str()),
        },
        &FsResolver { root: PathBuf::from(".") },
    );
    crate::files::print_diagnostics(&imported.diagnostics);
    if imported.has_errors() {
        eprintln!("halo import: errors found; nothing was written");
        return Ok(ExitCode::from(crate::files::EXIT_INVALID));
    }
    let text = halo_config::render::halo_toml(&imported.config, &imported.notes);
    // The output must pass the loader the daemon runs; if it does not, that is halo's bug or an
    // input inconsistency the importer did not catch: refuse rather than write it.
    let shown = inputs.output.as_ref().map_or_else(|| "imported halo.toml".to_string(), |p| p.display().to_string());
    let validation_warnings = match halo_config::load_str(&shown, &text) {
        // What `halo check` will say of the result, said now.
        Ok(loaded) => {
            crate::files::print_diagnostics(&loaded.warnings);
            loaded.warnings.len()
        }
        Err(e) => {
            if let halo_config::LoadError::Invalid(diagnostics) = &e {
                crate::files::print_diagnostics(diagnostics);
            }
            eprintln!("halo import: the generated configuration does not validate; nothing was written");
            return Ok(ExitCode::from(crate::files::EXIT_INVALID));
        }
    };
    crate::files::write_output(inputs.output.as_deref(), &text)?;
    if let Some(path) = &inputs.output {
        let warnings = imported.diagnostics.len() + validation_warnings;
        eprintln!("halo import: wrote {} ({warnings} warning(s)); next: halo check -c {}", path.display(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}
