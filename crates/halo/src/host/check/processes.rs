//! The processes of `halo host check`'s concern running in this network namespace: other
//! balancers, keepalived, network managers.

/// Processes with these names in this network namespace: (name, pid).
pub(super) fn processes_here(names: &[&str]) -> Vec<(String, u32)> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<(String, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim().to_string();
            let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            (names.contains(&comm.as_str()) && netns == ours).then_some((comm, pid))
        })
        .collect();
    found.sort();
    found
}
