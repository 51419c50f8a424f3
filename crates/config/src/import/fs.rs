//! Reading keepalived `include` targets from the file system.

use std::path::{Path, PathBuf};

use super::Resolver;

/// Resolves includes on disk. Relative file names (of the including file and of the pattern)
/// are taken from `root`; a relative pattern is relative to the including file's directory, as
/// in keepalived. Files are read with the loader's size limit, only regular ones (a FIFO would
/// wait for a writer forever, a device never end), and no more than the caller's limit.
#[derive(Debug, Clone)]
pub struct FsResolver {
    /// Directory that relative names start from (the working directory for the CLI).
    pub root: PathBuf,
}

impl Resolver for FsResolver {
    fn include(&self, from: &str, pattern: &str, limit: usize) -> Result<Vec<(String, String)>, String> {
        if pattern.is_empty() {
            return Err("no file named".to_string());
        }
        let from_dir = Path::new(from).parent().unwrap_or(Path::new(""));
        let relative = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { from_dir.join(pattern) };
        let full = self.root.join(&relative);
        let paths = glob::glob(&full.to_string_lossy()).map_err(|e| e.to_string())?;
        let mut files = Vec::new();
        for path in paths.take(limit.saturating_add(1)) {
            let path = path.map_err(|e| e.to_string())?;
            let kind = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.file_type();
            if !kind.is_file() {
                return Err(format!("{} is not a regular file", path.display()));
            }
            let bytes = crate::load::read_bounded(&path).map_err(|e| e.to_string())?;
            let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
            // Show the name as the user would: relative to the root when it was relative.
            let shown = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
            files.push((shown, text));
        }
        if files.is_empty() {
            return Err(format!("no file matches {}", relative.display()));
        }
        Ok(files)
    }

    /// Searches systemd's default PATH for services (keepalived's environment under systemd).
    fn which(&self, program: &str) -> Option<String> {
        if program.contains('/') || program.is_empty() {
            return None;
        }
        SERVICE_PATH.iter().map(|dir| Path::new(dir).join(program)).find(|p| is_executable(p)).map(|p| p.display().to_string())
    }
}

/// systemd's default PATH for services.
const SERVICE_PATH: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
