//! `halo lab`: a throwaway cluster in network namespaces running the real daemon. A switch,
//! three API-server stand-ins (TLS from the lab's own CA), three balancer hosts each running
//! `halo run` with a generated config (VIP, VRRP v3, https checks against the CA), and a client
//! sending requests to the VIP all along. It then plays a scenario — a master answers 500, the
//! master's halo is killed, the master host crashes, a clean stop, everything comes back —
//! narrating each step with the client's measured outage, and judges it: exit 0 when every step
//! behaved, 1 otherwise, 2 when the lab could not be built. `--mode bgp` plays the same kind of
//! scenario on a routed topology instead (`bgp/`): an FRR router in front of three balancers
//! that announce the VIP by BGP through FRR, ECMP over all of them.
//!
//! The lab knows halo only as a user does: the `halo` binary it is given (it runs `halo run`, and
//! the binary's hidden `halo lab apiserver|client` for its own stand-ins), the config files it
//! writes, and each daemon's status endpoint.

pub mod apiserver;
mod bgp;
pub mod client;
mod net;
mod observe;
mod pki;
mod play;
mod scenario;
mod timeline;
mod view;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use net::{DIR, Host};

/// Milliseconds since the Unix epoch: the one clock every lab process logs with.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The lab's LAN: 10.77.0.0/24 inside its own namespaces; the VRRP mode's VIP is on it.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
/// The balancers' frontend port (the guide's).
pub const FRONTEND_PORT: u16 = 8443;
/// The API servers' port.
pub const API_PORT: u16 = 6443;
/// VRRP advert interval: keepalived's default, as in the guide.
pub const ADVERT_INTERVAL_MS: u64 = 1000;
/// Balancer priorities, highest first: lb1 is the preferred master.
const PRIORITIES: [u8; 3] = [150, 100, 50];

/// Set by SIGINT/SIGTERM: every wait in the scenario gives up and the lab cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Which scenario `halo lab` plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The balancers share one LAN and float the VIP by VRRP.
    #[default]
    Vrrp,
    /// A router (FRR) in front of the balancers, which announce the VIP by BGP (ECMP).
    Bgp,
}

impl Mode {
    /// The address clients connect to.
    pub fn vip(self) -> Ipv4Addr {
        match self {
            Self::Vrrp => VIP,
            Self::Bgp => bgp::VIP,
        }
    }
}

/// What `halo lab` was asked for.
pub struct Options {
    /// The scenario.
    pub mode: Mode,
    /// Leave the lab running afterwards.
    pub keep: bool,
    /// Write the measured timeline as JSON here.
    pub report: Option<PathBuf>,
    /// The `halo` binary to run (for `halo run` and the lab's own parts).
    pub halo: PathBuf,
}

/// The lab's hosts.
pub struct Topology {
    /// API-server stand-ins.
    pub apis: Vec<Host>,
    /// Balancer hosts.
    pub lbs: Vec<Host>,
    /// The client (on the LAN in VRRP mode, behind the router in BGP mode).
    pub client: Host,
    /// BGP mode: the router, on the LAN with its other side towards the client.
    pub router: Option<Host>,
}

impl Topology {
    fn new(mode: Mode) -> Self {
        let host = |name: &str, last: u8| Host { name: name.to_string(), address: Ipv4Addr::new(10, 77, 0, last) };
        let (client, router) = match mode {
            Mode::Vrrp => (host("client", 100), None),
            Mode::Bgp => (Host { name: "client".to_string(), address: bgp::CLIENT }, Some(host("router", 1))),
        };
        Self {
            apis: (1..=3u8).map(|i| host(&format!("api{i}"), 10 + i)).collect(),
            lbs: (1..=3u8).map(|i| host(&format!("lb{i}"), 20 + i)).collect(),
            client,
            router,
        }
    }

    /// The hosts plugged into the switch.
    fn lan(&self) -> Vec<Host> {
        let edge = std::slice::from_ref(self.router.as_ref().unwrap_or(&self.client));
        self.apis.iter().chain(&self.lbs).chain(edge).cloned().collect()
    }
}

/// `halo lab down`: removes a lab left running (by `--keep` or a crash).
pub fn down() -> anyhow::Result<ExitCode> {
    require_root()?;
    let removed = destroy()?;
    if removed.is_empty() {
        println!("no lab is running");
    }
    for item in removed {
        println!("removed {item}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes every part of a lab: namespaces and the processes in them, the lab directory, and
/// FRR's directories of the BGP mode.
fn destroy() -> anyhow::Result<Vec<String>> {
    let mut removed = net::destroy()?;
    removed.extend(bgp::frr::remove_state()?);
    Ok(removed)
}

fn require_root() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "the lab creates network namespaces: run it as root");
    Ok(())
}

/// `halo lab`.
pub fn run(options: &Options) -> anyhow::Result<ExitCode> {
    require_root()?;
    watch_signals();
    let stale = destroy().context("removing an earlier lab")?;
    if !stale.is_empty() {
        println!("removed a stale lab: {}", stale.join(", "));
    }
    let topology = Topology::new(options.mode);
    let mut processes = net::Processes::default();
    let outcome = build_and_play(&topology, &mut processes, options);
    let (code, keep) = match &outcome {
        Ok(behaved) => (if *behaved { ExitCode::SUCCESS } else { ExitCode::from(1) }, options.keep),
        Err(_) => (ExitCode::from(2), false),
    };
    if keep {
        processes.leave_running();
        print!("{}", cheat_sheet(&topology, options.mode));
    } else {
        processes.kill_all();
        match destroy() {
            Ok(_) => println!("lab removed: namespaces, processes and {DIR}"),
            Err(e) => eprintln!("halo lab: {e:#}"),
        }
    }
    outcome?;
    Ok(code)
}

fn build_and_play(topology: &Topology, processes: &mut net::Processes, options: &Options) -> anyhow::Result<bool> {
    let exe = &options.halo;
    if options.mode == Mode::Bgp {
        bgp::frr::require_installed()?;
    }
    std::fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
    let servers: Vec<(String, Ipv4Addr)> = topology.apis.iter().map(|h| (h.name.clone(), h.address)).collect();
    pki::write(Path::new(DIR), &servers, options.mode.vip())?;
    net::build(&topology.lan())?;
    for api in &topology.apis {
        let listen = SocketAddr::from((api.address, API_PORT)).to_string();
        processes.start(&api.name, &api.netns(), exe, &["lab", "apiserver", "--name", &api.name, "--listen", &listen, "--dir", DIR])?;
    }
    if options.mode == Mode::Bgp {
        return bgp::build_and_play(topology, processes, exe, options.report.as_deref());
    }
    for (lb, priority) in topology.lbs.iter().zip(PRIORITIES) {
        let config = balancer_config(lb, priority, &topology.apis);
        std::fs::write(config_path(lb), config).with_context(|| format!("writing {}", config_path(lb).display()))?;
    }
    scenario::play(topology, processes, exe, options.report.as_deref())
}

/// Where a balancer's generated config lives.
fn config_path(lb: &Host) -> PathBuf {
    PathBuf::from(DIR).join(format!("{}.toml", lb.name))
}

/// Where a balancer's status socket lives.
fn socket_path(lb: &Host) -> PathBuf {
    PathBuf::from(DIR).join(format!("{}.sock", lb.name))
}

/// The arguments that start (or restart) a balancer's daemon.
fn balancer_args(lb: &Host) -> Vec<String> {
    vec![
        "run".to_string(),
        "-c".to_string(),
        config_path(lb).display().to_string(),
        "--pid-file".to_string(),
        format!("{DIR}/{}.pid", lb.name),
    ]
}

/// A balancer host's halo.toml: what an SRE would write for this LAN.
fn balancer_config(lb: &Host, priority: u8, apis: &[Host]) -> String {
    format!(
        r#"# Generated by `halo lab` for {name}.
[node]
name = "{name}"
interface = "eth0"

[status]
socket = "{socket}"

[[vrrp]]
name = "apiserver"
virtual_router_id = 51
priority = {priority}
version = 3
advert_interval = "{ADVERT_INTERVAL_MS}ms"
virtual_addresses = ["{VIP}/24"]
track = ["local-balancer"]
{serving}"#,
        name = lb.name,
        socket = socket_path(lb).display(),
        serving = serving(VIP, apis),
    )
}

/// The part of a balancer's halo.toml both modes share: the balancer tracker, the frontend on
/// `vip`, the API servers with https checks against the lab CA.
fn serving(vip: Ipv4Addr, apis: &[Host]) -> String {
    let mut out = format!(
        r#"
[[tracker]]
name = "local-balancer"
kind = "balancer"
frontend = "apiserver"
min_healthy = 1

[[frontend]]
name = "apiserver"
bind = ["{vip}:{FRONTEND_PORT}"]
backend = "apiserver"

[[backend]]
name = "apiserver"
balance = "roundrobin"
retries = 1
redispatch = true
connect_timeout = "1s"
drain_timeout = "5s"

[backend.health]
kind = "https"
path = "/readyz"
expect_status = 200
ca_file = "{DIR}/ca.pem"
interval = "500ms"
timeout = "400ms"
fall = 2
rise = 2
"#
    );
    for api in apis {
        out.push_str(&format!("\n[[backend.server]]\nname = \"{}\"\naddress = \"{}:{API_PORT}\"\n", api.name, api.address));
    }
    out
}

fn cheat_sheet(topology: &Topology, mode: Mode) -> String {
    let commands = if mode == Mode::Bgp { bgp::cheat_sheet(topology) } else { vrrp_cheat_sheet(topology) };
    let width = commands.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let mut out = "\nThe lab is still up (--keep). Explore it:\n".to_string();
    for (command, comment) in commands {
        out.push_str(&format!("  {command:<width$}  # {comment}\n"));
    }
    out
}

fn vrrp_cheat_sheet(topology: &Topology) -> Vec<(String, String)> {
    let lb = &topology.lbs[0];
    let client = topology.client.netns();
    vec![
        ("ip netns list".to_string(), "halo-lab-*: sw (switch), api1-3, lb1-3, client".to_string()),
        (format!("ip netns exec {client} curl --cacert {DIR}/ca.pem https://{VIP}:{FRONTEND_PORT}/version"), "through the VIP".to_string()),
        (format!("halo status -c {DIR}/{}.toml", lb.name), format!("{}'s view, through its unix socket", lb.name)),
        (format!("ip -n {} addr show dev eth0", lb.netns()), format!("does {} hold {VIP}?", lb.name)),
        (format!("touch {DIR}/api1.fail"), "api1 answers 500 (rm to heal)".to_string()),
        (format!("kill -TERM $(cat {DIR}/{}.pid)", lb.name), format!("clean stop of {}'s halo", lb.name)),
        (format!("ip -n {} link set p-{} down", net::SWITCH, lb.name), format!("pull {}'s cable", lb.name)),
        (format!("less {DIR}/{}.log", lb.name), format!("{}'s daemon log", lb.name)),
        ("halo lab down".to_string(), "remove all of it".to_string()),
    ]
}

/// SIGINT / SIGTERM set `INTERRUPTED`; the scenario's waits notice within their polling period.
fn watch_signals() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\nhalo lab: interrupted, cleaning up");
        });
    });
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
