//! Which generation of the daemon this process is: the version of its binary, the file it was
//! started from, its pid and start time, and, while a `halo upgrade` hands over to it, the
//! process it replaced (until that one has drained and exited). Shown on `/status`.

use serde::Serialize;

/// A fixed-width slot in the binary for a build tag, read at run time: packagers (and the
/// upgrade tests, which need a second build of one version) may overwrite its bytes in a copy of
/// the binary, keeping its length: the tag follows the colon, padded with `_`. An untouched slot
/// means no tag.
static BUILD_TAG_SLOT: &str = "halo-build-tag:________________________________";

/// The version this binary reports: the package version, and `+TAG` when its slot has a tag.
pub fn version() -> String {
    // Read from the binary at run time, never folded into a constant by the compiler.
    let slot = std::hint::black_box(BUILD_TAG_SLOT);
    let tag = slot.split_once(':').map_or("", |(_, tag)| tag.trim_end_matches('_'));
    if tag.is_empty() { env!("CARGO_PKG_VERSION").to_string() } else { format!("{}+{tag}", env!("CARGO_PKG_VERSION")) }
}

/// The file this process runs, as the kernel says (`/proc/self/exe`), without the " (deleted)"
/// the kernel appends once a package upgrade replaced it: the path the next binary is at.
pub fn executable() -> std::io::Result<std::path::PathBuf> {
    let path = std::fs::read_link("/proc/self/exe")?;
    let text = path.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(live) => std::path::PathBuf::from(live),
        None => path,
    })
}

/// This process's generation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Generation {
    /// Its pid.
    pub pid: u32,
    /// The version of its binary ([`version`]).
    pub version: String,
    /// The binary it was started from.
    pub executable: String,
    /// When it started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// The process it took over from, while that one drains its connections.
    pub previous: Option<Previous>,
}

/// The process a generation replaced, while it drains.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Previous {
    /// Its pid.
    pub pid: u32,
    /// Its version.
    pub version: String,
}

impl Generation {
    /// This process, now.
    pub fn this_process() -> Self {
        Self {
            pid: std::process::id(),
            version: version(),
            executable: executable().map_or_else(|e| format!("unknown ({e})"), |p| p.display().to_string()),
            started_unix_ms: unix_ms(),
            previous: None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untouched_slot_reports_the_package_version() {
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
        assert!(executable().expect("exe").is_file());
    }
}
