//! The VIP guard: a small child process (`halo guard`, hidden) that removes the virtual addresses
//! halo holds the moment halo dies without cleaning up (SIGKILL, OOM kill, abort). The daemon
//! tells it over a pipe which addresses it holds (`+ INDEX ADDRESS PREFIX`, `- INDEX ADDRESS`);
//! when the pipe closes — the kernel closes it whatever killed the daemon — the guard removes
//! those still held and exits. A clean stop releases everything first, so the guard then has
//! nothing to do. The kernel lifetime of the VIPs (2 s) stays the fallback when the guard dies
//! too (a whole cgroup or container killed at once).
//!
//! The guard blocks SIGINT and SIGTERM: a Ctrl-C or a service stop reaches the whole process
//! group, and the guard must outlive the daemon's own shutdown to be of use.

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

/// What the guard process runs: reads the daemon's lines until the pipe closes, then removes
/// whatever is still held.
pub fn run() -> anyhow::Result<ExitCode> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGINT);
    blocked.add(Signal::SIGTERM);
    blocked.add(Signal::SIGHUP);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).context("blocking signals")?;
    let mut held: BTreeMap<(u32, IpAddr), u8> = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let parsed = |i: usize| words.get(i).copied().unwrap_or("");
        match (parsed(0), parsed(1).parse::<u32>(), parsed(2).parse::<IpAddr>()) {
            ("+", Ok(index), Ok(address)) => {
                held.insert((index, address), parsed(3).parse().unwrap_or(32));
            }
            ("-", Ok(index), Ok(address)) => {
                held.remove(&(index, address));
            }
            _ => eprintln!("halo guard: ignoring `{line}`"),
        }
    }
    if held.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let netlink = halo_hostnet::netlink::Netlink::open()?;
        for (index, address) in held.keys() {
            match netlink.remove_address(*index, *address).await {
                Ok(true) => eprintln!("halo guard: halo ended holding {address} (link {index}): removed it"),
                Ok(false) => {}
                Err(e) => eprintln!("halo guard: could not remove {address} (link {index}): {e}"),
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
