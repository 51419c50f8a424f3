//! The daemon's side of the VIP guard (`halo-guard`, a small binary installed beside `halo`; see
//! `halo_hostnet::guard`): starts it with a pipe on its standard input and tells it, order by
//! order, which addresses the daemon holds and, while master, the priority-0 adverts to send
//! should the daemon die. When the pipe closes — the kernel closes it whatever killed the daemon —
//! the guard sends the adverts, so that peers take over after their skew time, and removes the
//! addresses still held. A clean stop releases everything first, so the guard then has nothing to
//! do. The kernel lifetime of the VIPs (2 s) stays the fallback when the guard dies too (a whole
//! cgroup or container killed at once).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use halo_hostnet::guard::wire::{MAX_LINE, Order};

/// The daemon's end: what it holds, told to the guard.
pub struct Guard {
    pipe: Mutex<Option<std::fs::File>>,
    held: Mutex<BTreeMap<(u32, IpAddr), u8>>,
    /// The orders not yet told, while the guard is held back (`halo upgrade`'s new process until
    /// the old one has let go); `None` once it is told everything as it comes.
    held_back: Mutex<Option<Vec<String>>>,
}

impl Guard {
    /// Starts the guard process; `None` (logged) when it cannot run: the lifetime still protects.
    pub fn start() -> Option<Self> {
        Self::start_as(None)
    }

    /// Starts the guard process held back: the orders wait until [`Guard::engage`]. A new
    /// process taking over (`halo upgrade`) holds the VIPs while the old one's guard still does:
    /// should it die before the old one has let go, its guard must not remove them (the old
    /// daemon resumes as master) nor send priority 0.
    pub fn start_held_back() -> Option<Self> {
        Self::start_as(Some(Vec::new()))
    }

    /// Tells the guard every order held back, then each as it comes.
    pub fn engage(&self) {
        let mut held_back = self.held_back.lock().unwrap_or_else(PoisonError::into_inner);
        for line in held_back.take().unwrap_or_default() {
            self.write(&line);
        }
    }

    fn start_as(held_back: Option<Vec<String>>) -> Option<Self> {
        match Self::spawn(held_back) {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "VIP guard not started: a killed halo leaves its VIPs until their 2 s lifetime ends");
                None
            }
        }
    }

    fn spawn(held_back: Option<Vec<String>>) -> anyhow::Result<Self> {
        // Close-on-exec: scripts and hooks the daemon runs must not keep the pipe open.
        let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the guard's pipe")?;
        // Non-blocking: a guard that stops reading (stopped, hung) must never block a runtime
        // thread; a full pipe is taken for a gone guard.
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .context("making the guard's pipe non-blocking")?;
        let exe = binary()?;
        let mut child = Command::new(&exe)
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        // Reaped whenever it ends, so that a guard that dies leaves no zombie behind.
        std::thread::Builder::new()
            .name("guard-reaper".to_string())
            .spawn(move || match child.wait() {
                Ok(status) => tracing::info!(%status, "VIP guard ended"),
                Err(e) => tracing::warn!(error = %e, "could not wait for the VIP guard"),
            })
            .context("starting the guard's reaper")?;
        Ok(Self { pipe: Mutex::new(Some(std::fs::File::from(write))), held: Mutex::new(BTreeMap::new()), held_back: Mutex::new(held_back) })
    }

    /// The daemon is master of `key`: should it die, the guard sends these priority-0 adverts
    /// (destination, packet) from `source` on `interface`. Replaces what was armed for `key`.
    pub fn arm(&self, key: &str, interface: &str, source: IpAddr, adverts: &[(IpAddr, Vec<u8>)]) {
        self.tell(&Order::Disarm { key: key.to_string() }.to_string());
        for (destination, packet) in adverts {
            let order = Order::Arm {
                key: key.to_string(),
                interface: interface.to_string(),
                source,
                destination: *destination,
                packet: packet.clone(),
            };
            let line = order.to_string();
            // Written whole or not at all (PIPE_BUF): a longer advert (over a hundred IPv6
            // addresses) is left to the peers' Master_Down_Interval.
            if line.len() > MAX_LINE {
                tracing::warn!(key, "the stop advert is too long for the guard: peers will take over after Master_Down_Interval");
                continue;
            }
            self.tell(&line);
        }
    }

    /// The daemon created the interface `name` (a virtual-MAC macvlan): the guard deletes it if
    /// halo dies.
    pub fn own_link(&self, name: &str) {
        self.tell(&Order::OwnLink { name: name.to_string() }.to_string());
    }

    /// The daemon deleted `name` itself.
    pub fn disown_link(&self, name: &str) {
        self.tell(&Order::DisownLink { name: name.to_string() }.to_string());
    }

    /// The daemon handed everything it holds over to a new process whose own guard holds it now
    /// (`halo upgrade`): this guard forgets it all, so that the daemon's exit removes nothing.
    pub fn forget_all(&self) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.tell(&Order::ForgetAll.to_string());
    }

    /// The daemon is no longer master of `key`.
    pub fn disarm(&self, key: &str) {
        self.tell(&Order::Disarm { key: key.to_string() }.to_string());
    }

    fn tell(&self, line: &str) {
        // Locked while the line is written: an order never overtakes those held back.
        let mut held_back = self.held_back.lock().unwrap_or_else(PoisonError::into_inner);
        match held_back.as_mut() {
            Some(lines) => lines.push(line.to_string()),
            None => self.write(line),
        }
    }

    fn write(&self, line: &str) {
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
            self.tell(&Order::Hold { index, address, prefix }.to_string());
        }
    }

    /// The daemon removed `address` from link `index`.
    pub fn release(&self, index: u32, address: IpAddr) {
        if self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&(index, address)).is_some() {
            self.tell(&Order::Release { index, address }.to_string());
        }
    }
}

/// The guard's binary: `halo-guard` in the directory of the running `halo` (the package installs
/// both in /usr/bin; a build puts both in its target directory).
fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the halo binary")?;
    let guard = exe.with_file_name("halo-guard");
    anyhow::ensure!(guard.is_file(), "{} not found (it is installed beside halo)", guard.display());
    Ok(guard)
}
