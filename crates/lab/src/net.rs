//! The lab's network and processes: namespaces named `halo-lab-*` around a switch namespace
//! holding bridge `br0`, one veth per host (`eth0` inside, `p-NAME` on the switch), processes
//! started inside them through `ip netns exec` and ended by PID, and the cleanup that removes
//! it all (also a stale lab left by an earlier run). Nothing here touches the host's own
//! network: every address lives inside a namespace the lab created.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every lab namespace starts with this.
pub const PREFIX: &str = "halo-lab-";
/// The lab's files: certificates, configs, logs, sockets.
pub const DIR: &str = "/run/halo-lab";
/// The switch namespace.
pub const SWITCH: &str = "halo-lab-sw";

/// A host on the lab LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name (`api1`, `lb2`, `client`).
    pub name: String,
    /// Its address on the LAN (/24).
    pub address: Ipv4Addr,
}

impl Host {
    /// Its namespace.
    pub fn netns(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }
    /// Its port on the switch.
    pub fn port(&self) -> String {
        format!("p-{}", self.name)
    }
}

/// Runs `ip` with arguments; its error output becomes the error.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the switch and one namespace per host, addressed and up.
pub fn build(hosts: &[Host]) -> anyhow::Result<()> {
    ip(&["netns", "add", SWITCH])?;
    ip(&["-n", SWITCH, "link", "set", "lo", "up"])?;
    ip(&["-n", SWITCH, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
    ip(&["-n", SWITCH, "link", "set", "br0", "up"])?;
    for host in hosts {
        let (netns, port) = (host.netns(), host.port());
        ip(&["netns", "add", &netns])?;
        ip(&["link", "add", &port, "netns", SWITCH, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
        ip(&["-n", SWITCH, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", &netns, "addr", "add", &format!("{}/24", host.address), "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Plugs a host's cable in or pulls it (its switch port up or down).
pub fn set_port(host: &Host, up: bool) -> anyhow::Result<()> {
    ip(&["-n", SWITCH, "link", "set", &host.port(), if up { "up" } else { "down" }]).map(drop)
}

/// Whether `address` is on the host's `device`.
pub fn holds(host: &Host, device: &str, address: Ipv4Addr) -> bool {
    ip(&["-n", &host.netns(), "-4", "-o", "addr", "show", "dev", device])
        .is_ok_and(|out| out.split_whitespace().any(|word| word.split('/').next() == Some(&address.to_string())))
}

/// The gateways of the kernel's route to `address`/32 in `netns` (what forwards, whatever a
/// routing daemon believes): one, several (ECMP), or none when there is no such route.
pub fn gateways(netns: &str, address: Ipv4Addr) -> Vec<Ipv4Addr> {
    let json = |args: &[&str]| -> serde_json::Value {
        ip(&[&["-n", netns, "-j"], args].concat()).ok().and_then(|out| serde_json::from_str(&out).ok()).unwrap_or_default()
    };
    let gateway = |v: &serde_json::Value| v["gateway"].as_str().and_then(|g| g.parse().ok());
    let mut found = Vec::new();
    for route in json(&["route", "show", "exact", &format!("{address}/32")]).as_array().into_iter().flatten() {
        if let Some(hops) = route["nexthops"].as_array() {
            found.extend(hops.iter().filter_map(gateway));
        } else if let Some(one) = gateway(route) {
            found.push(one);
        } else if let Some(id) = route["nhid"].as_u64() {
            // A next-hop group object the route names without listing its members.
            let group = json(&["nexthop", "show", "id", &id.to_string()]);
            for member in group[0]["group"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_u64()) {
                found.extend(gateway(&json(&["nexthop", "show", "id", &member.to_string()])[0]));
            }
        }
    }
    found.sort_unstable();
    found
}

/// The lab's namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    let list = ip(&["netns", "list"]).unwrap_or_default();
    list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(PREFIX)).map(str::to_string).collect()
}

/// Kills every process inside the lab's namespaces (by PID), deletes the namespaces and the
/// lab directory. Returns what it removed, for the log; errors are what could not be removed.
pub fn destroy() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    for netns in namespaces() {
        let pids: Vec<i32> = ip(&["netns", "pids", &netns]).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect();
        for pid in &pids {
            // ESRCH: it ended meanwhile, which is what we want.
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        match ip(&["netns", "del", &netns]) {
            Ok(_) => removed.push(if pids.is_empty() { netns } else { format!("{netns} ({} processes)", pids.len()) }),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if Path::new(DIR).exists() {
        match std::fs::remove_dir_all(DIR) {
            Ok(()) => removed.push(DIR.to_string()),
            Err(e) => problems.push(format!("removing {DIR}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("could not remove all of the lab: {}", problems.join("; "));
    }
    Ok(removed)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// The processes the lab started, by name; ended by PID.
#[derive(Default)]
pub struct Processes {
    running: BTreeMap<String, Child>,
    /// Every PID ever started (for the report: all must be gone at the end).
    pub started: Vec<u32>,
}

impl Processes {
    /// Starts `program args` inside `netns`, output appended to `DIR/NAME.log`, in its own
    /// process group (a Ctrl-C on the terminal reaches the lab, which then ends them in order).
    pub fn start(&mut self, name: &str, netns: &str, program: &Path, args: &[&str]) -> anyhow::Result<u32> {
        let log_path = PathBuf::from(DIR).join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} in {netns}"))?;
        // `ip netns exec` execs the program: this PID is the program's own.
        let pid = child.id();
        self.started.push(pid);
        self.running.insert(name.to_string(), child);
        Ok(pid)
    }

    /// Sends a signal to a running process.
    pub fn signal(&mut self, name: &str, signal: Signal) -> anyhow::Result<()> {
        let child = self.running.get(name).with_context(|| format!("{name} is not running"))?;
        let pid = i32::try_from(child.id()).context("pid")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("signalling {name}"))
    }

    /// Waits (bounded) for a process to end and reaps it; false if it is still running.
    pub fn wait(&mut self, name: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while let Some(child) = self.running.get_mut(name) {
            if !matches!(child.try_wait(), Ok(None)) {
                self.running.remove(name);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Kills one process and reaps it.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::SIGKILL)?;
        if !self.wait(name, Duration::from_secs(5)) {
            bail!("{name} survived SIGKILL for 5 s");
        }
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.running.get_mut(name).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills and reaps everything still running.
    pub fn kill_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.kill(&name) {
                eprintln!("halo lab: {e:#}");
            }
        }
    }

    /// Forgets the processes without ending them (`--keep`).
    pub fn leave_running(&mut self) {
        self.running.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
    }
}
