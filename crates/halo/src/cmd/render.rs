//! `halo render`: classic artefacts from a halo.toml.

use std::path::Path;
use std::process::ExitCode;

use halo_config::render;

use crate::cli::Artefact;

/// Loads the config like the daemon, renders one artefact, reports what it could not carry.
pub fn run(artefact: Artefact, config: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let loaded = match super::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let rendered = match artefact {
        Artefact::Haproxy => render::haproxy(&loaded.config),
        Artefact::Keepalived => render::keepalived(&loaded.config),
        Artefact::CheckScript => render::check_script(&loaded.config),
        Artefact::Sysctl => render::sysctl(&loaded.config),
        Artefact::Systemd => render::systemd(&loaded.config),
        Artefact::StaticPod => render::static_pod(&loaded.config),
    };
    for loss in &rendered.losses {
        eprintln!("halo render: warning: {loss}");
    }
    super::write_output(output, &rendered.text)?;
    if let (Some(path), Artefact::CheckScript) = (output, artefact) {
        make_executable(path)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn make_executable(path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}
