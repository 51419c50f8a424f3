//! `halo host check` for hosts that announce addresses by BGP: FRR installed and running, the
//! session to each `[bgp]` neighbour up, and each `[[announce]]` address in BGP exactly when
//! halo holds it (held but not in BGP: FRR does not redistribute it).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use halo_config::Config;

use super::verdict::Verdict;

/// One finding: (check, verdict, what was found, what to do).
pub type Finding = (String, Verdict, String, String);

/// The checks; `vty_socket` is FRR's vty socket directory when it is not the default.
pub fn checks(config: &Config, held: &[IpAddr], vty_socket: Option<&Path>) -> Vec<Finding> {
    let mut out = Vec::new();
    if config.announce.is_empty() && config.bgp.is_none() {
        return out;
    }
    let summary = match vtysh(vty_socket, "show bgp summary json") {
        Ok(summary) => summary,
        Err(why) => {
            out.push((
                "FRR".to_string(),
                Verdict::Fail,
                why,
                "apt-get install frr; enable bgpd (and bfdd) in /etc/frr/daemons; systemctl start frr".to_string(),
            ));
            return out;
        }
    };
    out.push(("FRR".to_string(), Verdict::Ok, "bgpd answers".to_string(), String::new()));
    for n in config.bgp.iter().flat_map(|b| &b.neighbors) {
        // A session shows in the summary of each family it is active in: look in all.
        let peer = n.address.to_string();
        let state =
            summary.as_object().into_iter().flatten().find_map(|(_, family)| family["peers"][&peer]["state"].as_str().map(str::to_string));
        let check = format!("BGP session to {}", n.address);
        match state.as_deref() {
            Some("Established") => out.push((check, Verdict::Ok, "Established".to_string(), String::new())),
            Some(other) => out.push((
                check,
                Verdict::Fail,
                format!("{other}: the addresses are not announced to this router"),
                "check the neighbour's address and AS on both sides, and that TCP 179 is open".to_string(),
            )),
            None => out.push((
                check,
                Verdict::Fail,
                "not configured in FRR".to_string(),
                "halo render frr -c halo.toml, then load it into FRR".to_string(),
            )),
        }
    }
    for a in &config.announce {
        let address = a.address.addr();
        let family = if address.is_ipv4() { "ipv4" } else { "ipv6" };
        let in_bgp = vtysh(vty_socket, &format!("show bgp {family} unicast {} json", a.address))
            .is_ok_and(|route| route["paths"].as_array().is_some_and(|p| !p.is_empty()));
        let holds = held.contains(&address);
        let check = format!("announce {} ({address})", a.name);
        match (holds, in_bgp) {
            (true, true) => out.push((check, Verdict::Ok, "held by halo and in BGP".to_string(), String::new())),
            (false, false) => {
                out.push((check, Verdict::Ok, "withdrawn: halo does not hold it now (halo status says why)".to_string(), String::new()))
            }
            (true, false) => out.push((
                check,
                Verdict::Fail,
                "held by halo but not in BGP: FRR does not redistribute it".to_string(),
                "load `halo render frr` into FRR (redistribute connected through HALO-ANNOUNCE)".to_string(),
            )),
            (false, true) => out.push((
                check,
                Verdict::Warn,
                "in BGP while halo does not hold it: another source announces it".to_string(),
                "look for a static or connected route of that address in FRR".to_string(),
            )),
        }
    }
    out
}

/// Runs one vtysh command (5 s at most: a wedged bgpd must not hang the check) and reads its
/// JSON answer.
fn vtysh(vty_socket: Option<&Path>, command: &str) -> Result<serde_json::Value, String> {
    if !Path::new("/usr/bin/vtysh").exists() && which_vtysh().is_none() {
        return Err("FRR is not installed (no vtysh)".to_string());
    }
    let mut cmd = Command::new("timeout");
    cmd.args(["5", "vtysh"]);
    if let Some(dir) = vty_socket {
        cmd.arg("--vty_socket").arg(dir);
    }
    let output = cmd.args(["-c", command]).output().map_err(|e| format!("vtysh: {e}"))?;
    if output.status.code() == Some(124) {
        return Err("FRR does not answer within 5 s".to_string());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.trim().is_empty() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(format!("FRR does not answer: {}", err.lines().next().unwrap_or("vtysh failed").trim()));
    }
    serde_json::from_str(&text).map_err(|e| format!("vtysh `{command}`: not JSON ({e})"))
}

/// vtysh on the PATH, when it is not in /usr/bin.
fn which_vtysh() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("vtysh")).find(|p| p.exists()))
}
