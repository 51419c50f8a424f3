//! `halo host check` of a keepalived running here: it must not run one of the configured virtual
//! routers, read from its own configuration file.

use halo_config::Config;

use super::report::Report;
use crate::host::verdict::Verdict;

/// A keepalived running here must not run one of the configured virtual routers (the same
/// VRID on the same interface); `vrids` are the ones it runs.
pub(super) fn keepalived_check(report: &mut Report, config: &Config, name: &str, pid: u32, vrids: Vec<(String, u8)>) {
    let same: Vec<(String, u8)> = vrids
        .into_iter()
        .filter(|(interface, vrid)| config.vrrp.iter().any(|v| v.interface == *interface && v.virtual_router_id.get() == *vrid))
        .collect();
    if same.is_empty() {
        report.add(
            format!("{name} (pid {pid})"),
            Verdict::Warn,
            "keepalived runs here, on other virtual routers",
            "make sure it does not manage the same VIP",
        );
    } else {
        let list = same.iter().map(|(i, v)| format!("VRID {v} on {i}")).collect::<Vec<_>>().join(", ");
        report.add(
            format!("{name} (pid {pid})"),
            Verdict::Fail,
            format!("keepalived runs {list}, as halo would"),
            "stop keepalived before halo run (halo import converts its configuration)",
        );
    }
}

/// (interface, VRID) of the instances of a running keepalived: its configuration file (`-f`,
/// `--use-file`, else /etc/keepalived/keepalived.conf) read through halo's importer.
pub(super) fn keepalived_vrids(pid: u32) -> Vec<(String, u8)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
    let mut file = "/etc/keepalived/keepalived.conf".to_string();
    for (i, arg) in args.iter().enumerate() {
        if let Some(value) = arg.strip_prefix("--use-file=") {
            file = value.to_string();
        } else if (arg == "-f" || arg == "--use-file")
            && let Some(value) = args.get(i + 1)
        {
            file = value.clone();
        }
    }
    let path = match std::path::Path::new(&file) {
        p if p.is_absolute() => p.to_path_buf(),
        p => std::path::PathBuf::from(format!("/proc/{pid}/cwd")).join(p),
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    use halo_config::import;
    let file = path.display().to_string();
    let imported = import::import(
        &import::Inputs {
            haproxy: None,
            keepalived: Some(import::Source { file: &file, text: &text }),
            check_script: None,
            config_id: None,
            strict: false,
        },
        &import::FsResolver { root: path.parent().map_or_else(|| std::path::PathBuf::from("/"), std::path::Path::to_path_buf) },
    );
    imported.config.vrrp.iter().map(|v| (v.interface.clone(), v.virtual_router_id.get())).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::host::check::report::only;

    const CONFIG: &str = r#"
[[vrrp]]
name = "VI_1"
interface = "br0"
virtual_router_id = 51
priority = 101
virtual_addresses = ["10.9.0.100/24"]
"#;

    fn config() -> Config {
        halo_config::load_str("halo.toml", CONFIG).unwrap().config
    }

    fn keepalived(vrids: &[(&str, u8)]) -> (String, Verdict, String, String) {
        let mut report = Report::default();
        let vrids = vrids.iter().map(|(i, v)| (i.to_string(), *v)).collect();
        keepalived_check(&mut report, &config(), "keepalived", 42, vrids);
        only(report)
    }

    #[test]
    fn keepalived_running_a_configured_virtual_router_fails() {
        let (check, status, found, fix) = keepalived(&[("br0", 7), ("br0", 51)]);
        assert_eq!((check.as_str(), status), ("keepalived (pid 42)", Verdict::Fail));
        assert_eq!(found, "keepalived runs VRID 51 on br0, as halo would");
        assert_eq!(fix, "stop keepalived before halo run (halo import converts its configuration)");
    }

    #[test]
    fn keepalived_on_other_virtual_routers_is_a_warning() {
        let (check, status, found, _) = keepalived(&[("br0", 7), ("eth1", 51)]);
        assert_eq!((check.as_str(), status), ("keepalived (pid 42)", Verdict::Warn));
        assert_eq!(found, "keepalived runs here, on other virtual routers");
    }
}
