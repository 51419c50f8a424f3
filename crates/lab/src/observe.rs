//! The lab's eyes: a thread that, every 100 ms, reads the client's new log lines, asks every
//! balancer's daemon for its status (through its unix socket), looks at which hosts hold the
//! VIP (VRRP: on eth0; BGP: on lo, announced) and, in BGP mode, which balancers the router
//! forwards the VIP to, and keeps what it saw for the scenario, the live view and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use halo_client::{Endpoint, StatusClient};

use super::net::{DIR, Host};
use super::timeline::Request;

/// How often the observer looks.
pub const PERIOD: Duration = Duration::from_millis(100);

/// What to watch besides the daemons' status.
pub struct Watch {
    /// The address clients connect to.
    pub vip: Ipv4Addr,
    /// The balancers' device that holds it (VRRP: `eth0`; BGP: `lo`, while announced).
    pub device: &'static str,
    /// BGP: the router's namespace, whose route to the VIP names the balancers it forwards to.
    pub router: Option<String>,
}

/// One balancer as last seen.
#[derive(Debug, Clone, Default)]
pub struct Balancer {
    /// Its daemon answered.
    pub reachable: bool,
    /// VRRP state, or in BGP mode ANNOUNCED / WITHDRAWN.
    pub state: String,
    /// Effective VRRP priority (none in BGP mode).
    pub priority: Option<u64>,
    /// Server name → healthy.
    pub servers: BTreeMap<String, bool>,
    /// The VIP is on its device (VRRP: it is master; BGP: it announces).
    pub holds_vip: bool,
}

/// Everything seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every client request logged so far.
    pub requests: Vec<Request>,
    /// (time, how many connected hosts held the VIP).
    pub holders: Vec<(u64, usize)>,
    /// Balancers by name.
    pub balancers: BTreeMap<String, Balancer>,
    /// BGP: the balancers the router forwards the VIP to now.
    pub routed: Vec<String>,
    /// BGP: (time, the balancers the router forwarded to) at the start and at each change.
    pub routes: Vec<(u64, Vec<String>)>,
    /// Time of the last complete look.
    pub at_ms: u64,
}

impl Seen {
    /// The connected hosts holding the VIP now.
    pub fn holders_now(&self) -> Vec<String> {
        self.balancers.iter().filter(|(_, b)| b.holds_vip).map(|(n, _)| n.clone()).collect()
    }

    /// Whether balancer `lb` reports `server` healthy (None: not reachable or not known).
    pub fn server_healthy(&self, lb: &str, server: &str) -> Option<bool> {
        self.balancers.get(lb).filter(|b| b.reachable).and_then(|b| b.servers.get(server).copied())
    }
}

/// The observer's shared state and its thread.
pub struct Observer {
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    /// Balancers whose cable is plugged in (the scenario pulls one).
    pub connected: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    /// Starts looking.
    pub fn start(lbs: Vec<Host>, watch: Watch) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let connected = Arc::new(Mutex::new(lbs.iter().map(|h| h.name.clone()).collect::<BTreeSet<_>>()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, connected, stop) = (Arc::clone(&seen), Arc::clone(&connected), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut client_log = ClientLog::default();
                let clients: Vec<Option<StatusClient>> =
                    lbs.iter().map(|lb| StatusClient::new(Endpoint::Unix(super::socket_path(lb)), None).ok()).collect();
                while !stop.load(Ordering::SeqCst) {
                    let plugged = connected.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    let balancers: BTreeMap<String, Balancer> = lbs
                        .iter()
                        .zip(&clients)
                        .map(|(lb, client)| {
                            let mut b = client.as_ref().map(status).unwrap_or_default();
                            b.holds_vip = plugged.contains(&lb.name) && super::net::holds(lb, watch.device, watch.vip);
                            (lb.name.clone(), b)
                        })
                        .collect();
                    let routed: Option<Vec<String>> = watch.router.as_ref().map(|router| {
                        let gateways = super::net::gateways(router, watch.vip);
                        lbs.iter().filter(|lb| gateways.contains(&lb.address)).map(|lb| lb.name.clone()).collect()
                    });
                    let new = client_log.read_new();
                    let now = super::unix_ms();
                    {
                        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        let holders = balancers.values().filter(|b| b.holds_vip).count();
                        seen.holders.push((now, holders));
                        seen.balancers = balancers;
                        seen.requests.extend(new);
                        if let Some(routed) = routed {
                            if seen.routes.last().is_none_or(|(_, last)| *last != routed) {
                                seen.routes.push((now, routed.clone()));
                            }
                            seen.routed = routed;
                        }
                        seen.at_ms = now;
                    }
                    std::thread::sleep(PERIOD);
                }
            })
        };
        Self { seen, connected, stop, thread: Some(thread) }
    }

    /// Runs `f` on what was seen.
    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks a balancer's cable as plugged in or not.
    pub fn set_connected(&self, lb: &str, plugged: bool) {
        let mut connected = self.connected.lock().unwrap_or_else(PoisonError::into_inner);
        if plugged {
            connected.insert(lb.to_string());
        } else {
            connected.remove(lb);
        }
    }

    /// Stops the thread after one last look at the client's log.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("halo lab: the observer thread panicked");
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks a balancer's daemon for its state through its unix socket.
fn status(client: &StatusClient) -> Balancer {
    let Ok(body) = client.get("/status") else { return Balancer::default() };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else { return Balancer::default() };
    let instance = &json["vrrp"]["apiserver"];
    let announced = json["announce"]["api"]["announced"].as_bool();
    let servers = json["frontends"][0]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["healthy"].as_bool()?)))
        .collect();
    Balancer {
        reachable: true,
        state: match announced {
            Some(true) => "ANNOUNCED".to_string(),
            Some(false) => "WITHDRAWN".to_string(),
            None => instance["state"].as_str().unwrap_or("?").to_string(),
        },
        priority: instance["priority"].as_u64(),
        servers,
        holds_vip: false,
    }
}

/// Reads `client.log` incrementally, whole lines only.
#[derive(Default)]
struct ClientLog {
    offset: u64,
    partial: String,
}

impl ClientLog {
    fn read_new(&mut self) -> Vec<Request> {
        let Ok(mut file) = std::fs::File::open(format!("{DIR}/client.log")) else { return Vec::new() };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).and_then(|_| file.read_to_string(&mut text)).is_err() {
            return Vec::new();
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let complete = match self.partial.rfind('\n') {
            Some(end) => {
                let lines = self.partial[..=end].to_string();
                self.partial.drain(..=end);
                lines
            }
            None => return Vec::new(),
        };
        complete.lines().filter_map(Request::parse).collect()
    }
}
