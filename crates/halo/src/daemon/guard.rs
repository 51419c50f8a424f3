//! The VIP guard: a small child process (`halo guard`, hidden) that does what a clean stop does
//! the moment halo dies without cleaning up (SIGKILL, OOM kill, abort): it sends the priority-0
//! adverts of each instance halo was master of, so that peers take over after their skew time,
//! and removes the virtual addresses halo held. The daemon tells it over a pipe which addresses
//! it holds (`+ INDEX ADDRESS PREFIX`, `- INDEX ADDRESS`) and, while master, the adverts to send
//! (`a KEY INTERFACE SOURCE DESTINATION HEX`, one line a destination, `d KEY` to forget them;
//! `F` forgets everything: a `halo upgrade` handed it all to the new process and its own guard);
//! when the pipe closes — the kernel closes it whatever killed the daemon — the guard sends the
//! adverts, removes the addresses still held and exits. A clean stop releases everything first, so the guard then has
//! nothing to do. The kernel lifetime of the VIPs (2 s) stays the fallback when the guard dies
//! too (a whole cgroup or container killed at once).
//!
//! The guard blocks SIGINT, SIGTERM, SIGHUP and SIGUSR2: a Ctrl-C or a service stop reaches the
//! whole process group (and `systemctl kill -s USR2` the whole unit), and the guard must outlive
//! the daemon's own shutdown to be of use.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;

/// The daemon's end: what it holds, told to the guard.
pub struct Guard {
    pipe: Mutex<Option<std::fs::File>>,
    held: Mutex<BTreeMap<(u32, IpAddr), u8>>,
}

impl Guard {
    /// Starts the guard process; `None` (logged) when it cannot run: the lifetime still protects.
    pub fn start() -> Option<Self> {
        match Self::spawn() {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "VIP guard not started: a killed halo leaves its VIPs until their 2 s lifetime ends");
                None
            }
        }
    }

    fn spawn() -> anyhow::Result<Self> {
        // Close-on-exec: scripts and hooks the daemon runs must not keep the pipe open.
        let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the guard's pipe")?;
        // Non-blocking: a guard that stops reading (stopped, hung) must never block a runtime
        // thread; a full pipe is taken for a gone guard.
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .context("making the guard's pipe non-blocking")?;
        let exe = std::env::current_exe().context("finding the halo binary")?;
        let mut child =
            Command::new(exe).arg("guard").stdin(Stdio::from(read)).stdout(Stdio::null()).spawn().context("starting `halo guard`")?;
        // Reaped whenever it ends, so that a guard that dies leaves no zombie behind.
        std::thread::Builder::new()
            .name("guard-reaper".to_string())
            .spawn(move || match child.wait() {
                Ok(status) => tracing::info!(%status, "VIP guard ended"),
                Err(e) => tracing::warn!(error = %e, "could not wait for the VIP guard"),
            })
            .context("starting the guard's reaper")?;
        Ok(Self { pipe: Mutex::new(Some(std::fs::File::from(write))), held: Mutex::new(BTreeMap::new()) })
    }

    /// The daemon is master of `key`: should it die, the guard sends these priority-0 adverts
    /// (destination, packet) from `source` on `interface`. Replaces what was armed for `key`.
    pub fn arm(&self, key: &str, interface: &str, source: IpAddr, adverts: &[(IpAddr, Vec<u8>)]) {
        self.tell(&format!("d {key}\n"));
        for (destination, packet) in adverts {
            let line = format!("a {key} {interface} {source} {destination} {}\n", hex(packet));
            // Written whole or not at all (PIPE_BUF): a longer advert (over a hundred IPv6
            // addresses) is left to the peers' Master_Down_Interval.
            if line.len() > 4096 {
                tracing::warn!(key, "the stop advert is too long for the guard: peers will take over after Master_Down_Interval");
                continue;
            }
            self.tell(&line);
        }
    }

    /// The daemon created the interface `name` (a virtual-MAC macvlan): the guard deletes it if
    /// halo dies.
    pub fn own_link(&self, name: &str) {
        self.tell(&format!("m {name}\n"));
    }

    /// The daemon deleted `name` itself.
    pub fn disown_link(&self, name: &str) {
        self.tell(&format!("n {name}\n"));
    }

    /// The daemon handed everything it holds over to a new process whose own guard holds it now
    /// (`halo upgrade`): this guard forgets it all, so that the daemon's exit removes nothing.
    pub fn forget_all(&self) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.tell("F\n");
    }

    /// The daemon is no longer master of `key`.
    pub fn disarm(&self, key: &str) {
        self.tell(&format!("d {key}\n"));
    }

    fn tell(&self, line: &str) {
        let mut pipe = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        // Lines are shorter than PIPE_BUF: written whole or not at all.
        let Some(file) = pipe.as_mut() else { return };
        match file.write_all(line.as_bytes()) {
            Ok(()) => {}
            // A full pipe: the guard is stopped or hung. Closing it would make the guard remove
            // the VIPs while halo holds them: the line is dropped instead (the VIPs' lifetime
            // still protects), and the pipe kept.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::warn!("the VIP guard is not reading: it may not know every VIP held (their lifetime still protects)");
            }
            Err(e) => {
                tracing::warn!(error = %e, "the VIP guard is gone: a killed halo leaves its VIPs until their lifetime ends");
                *pipe = None;
            }
        }
    }

    /// The daemon holds `address` on link `index` (idempotent: refreshes say nothing new).
    pub fn hold(&self, index: u32, address: IpAddr, prefix: u8) {
        let new = self.held.lock().unwrap_or_else(PoisonError::into_inner).insert((index, address), prefix) != Some(prefix);
        if new {
            self.tell(&format!("+ {index} {address} {prefix}\n"));
        }
    }

    /// The daemon removed `address` from link `index`.
    pub fn release(&self, index: u32, address: IpAddr) {
        if self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&(index, address)).is_some() {
            self.tell(&format!("- {index} {address}\n"));
        }
    }
}

/// A stop advert the guard sends for halo: interface, source, destination, packet.
type StopAdvert = (String, IpAddr, IpAddr, Vec<u8>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// What the daemon told the guard, line by line.
#[derive(Default)]
struct Told {
    held: BTreeMap<(u32, IpAddr), u8>,
    adverts: BTreeMap<String, Vec<StopAdvert>>,
    links: std::collections::BTreeSet<String>,
}

impl Told {
    fn line(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let word = |i: usize| words.get(i).copied().unwrap_or("");
        match (word(0), word(1).parse::<u32>(), word(2).parse::<IpAddr>()) {
            ("+", Ok(index), Ok(address)) => {
                self.held.insert((index, address), word(3).parse().unwrap_or(32));
                return;
            }
            ("-", Ok(index), Ok(address)) => {
                self.held.remove(&(index, address));
                return;
            }
            _ => {}
        }
        match (word(0), word(3).parse::<IpAddr>(), word(4).parse::<IpAddr>(), unhex(word(5))) {
            ("a", Ok(source), Ok(destination), Some(packet)) => {
                self.adverts.entry(word(1).to_string()).or_default().push((word(2).to_string(), source, destination, packet));
            }
            ("d", ..) if !word(1).is_empty() => {
                self.adverts.remove(word(1));
            }
            ("m", ..) if !word(1).is_empty() => {
                self.links.insert(word(1).to_string());
            }
            ("n", ..) if !word(1).is_empty() => {
                self.links.remove(word(1));
            }
            ("F", ..) => *self = Told::default(),
            _ => eprintln!("halo guard: ignoring `{line}`"),
        }
    }
}

/// What the guard process runs: reads the daemon's lines until the pipe closes, then sends the
/// stop adverts and removes whatever is still held.
pub fn run() -> anyhow::Result<ExitCode> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGINT);
    blocked.add(Signal::SIGTERM);
    blocked.add(Signal::SIGHUP);
    blocked.add(Signal::SIGUSR2);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).context("blocking signals")?;
    let mut told = Told::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        told.line(&line);
    }
    if told.held.is_empty() && told.adverts.is_empty() && told.links.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let netlink = halo_hostnet::netlink::Netlink::open()?;
        // Priority 0 first, as a clean stop: peers start their takeover while the VIPs go.
        for (interface, source, destination, packet) in told.adverts.values().flatten() {
            let sent = async {
                let link = netlink.link(interface).await?;
                let socket = halo_hostnet::vrrp_socket::VrrpSocket::open(&link, source.is_ipv6())?;
                socket.send(packet, *source, *destination)
            };
            match sent.await {
                Ok(()) => eprintln!("halo guard: halo ended as master: sent its priority-0 advert to {destination} on {interface}"),
                Err(e) => eprintln!("halo guard: could not send the priority-0 advert on {interface}: {e}"),
            }
        }
        for (index, address) in told.held.keys() {
            match netlink.remove_address(*index, *address).await {
                Ok(true) => eprintln!("halo guard: halo ended holding {address} (link {index}): removed it"),
                Ok(false) => {}
                Err(e) => eprintln!("halo guard: could not remove {address} (link {index}): {e}"),
            }
        }
        for name in &told.links {
            let removed = async { netlink.delete_link(&netlink.link(name).await?).await };
            match removed.await {
                Ok(()) => eprintln!("halo guard: removed halo's virtual-MAC interface {name}"),
                Err(e) => eprintln!("halo guard: could not remove {name}: {e}"),
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_reads_holds_and_stop_adverts_and_forgets_them() {
        let mut told = Told::default();
        told.line("+ 2 192.0.2.170 24");
        told.line(&format!("a 2-51-4 eth0 192.0.2.11 224.0.0.18 {}", hex(&[0x31, 0x33, 0x00, 0x01])));
        assert_eq!(told.held.get(&(2, "192.0.2.170".parse().expect("ip"))), Some(&24));
        assert_eq!(
            told.adverts["2-51-4"],
            vec![("eth0".to_string(), "192.0.2.11".parse().expect("ip"), "224.0.0.18".parse().expect("ip"), vec![0x31, 0x33, 0x00, 0x01])]
        );
        told.line("d 2-51-4");
        told.line("- 2 192.0.2.170");
        assert!(told.adverts.is_empty() && told.held.is_empty());
        told.line("a 2-51-4 eth0 192.0.2.11 224.0.0.18 zz");
        assert!(told.adverts.is_empty(), "a bad packet is ignored");
        told.line("m vrrp.51");
        assert!(told.links.contains("vrrp.51"));
        told.line("n vrrp.51");
        assert!(told.links.is_empty());
        told.line("+ 2 192.0.2.170 24");
        told.line(&format!("a 2-51-4 eth0 192.0.2.11 224.0.0.18 {}", hex(&[0x31])));
        told.line("m vrrp.51");
        told.line("F");
        assert!(told.held.is_empty() && told.adverts.is_empty() && told.links.is_empty(), "F forgets everything");
    }
}
