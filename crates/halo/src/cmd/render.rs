//! `halo render`: classic artefacts from a halo.toml.

use std::path::Path;
use std::process::ExitCode;

use halo_config::render;

use crate::cli::{Artefact, Persist};

/// Loads the config like the daemon, renders one artefact, reports what it could not carry.
pub fn run(
    artefact: Artefact,
    config: &Path,
    output: Option<&Path>,
    format: Option<Persist>,
    interface: Option<&str>,
    image: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let rendered = match artefact {
        Artefact::Haproxy => render::haproxy(&loaded.config),
        Artefact::Keepalived => render::keepalived(&loaded.config),
        Artefact::CheckScript => render::check_script(&loaded.config),
        Artefact::Sysctl => render::sysctl(&loaded.config),
        Artefact::Systemd => render::systemd(&loaded.config, &loaded.host_files),
        Artefact::StaticPod => render::static_pod(&loaded.config, &loaded.host_files, image.unwrap_or(render::IMAGE)),
        Artefact::Quadlet => render::quadlet(&loaded.config, &loaded.host_files, image.unwrap_or(render::IMAGE)),
        Artefact::Frr => render::frr(&loaded.config),
        Artefact::Network => {
            let Some(format) = format else {
                eprintln!("halo render network: --format etcnet|networkd|nm is required");
                return Ok(ExitCode::from(2));
            };
            return network(&loaded.config, format, interface, output);
        }
    };
    for loss in &rendered.losses {
        eprintln!("halo render: warning: {loss}");
    }
    crate::files::write_output(output, &rendered.text)?;
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

/// The bridge as persistent configuration: every file under `output` (as under /), or all of
/// them on standard output, each after a `# ==> PATH <==` line.
fn network(config: &halo_config::Config, format: Persist, interface: Option<&str>, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let facts = crate::host::network_facts(Some(config), interface, None)?;
    let format = render::NetworkFormat::from(format);
    let files = render::network(&facts, format);
    match output {
        Some(root) => {
            for (path, content) in &files {
                let path = crate::host::under_root(root, path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
                }
                crate::files::write_output(Some(&path), content)?;
                println!("{}", path.display());
            }
        }
        None => {
            let text: String = files.iter().map(|(path, content)| format!("# ==> {path} <==\n{content}\n")).collect();
            crate::files::write_output(None, &text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
