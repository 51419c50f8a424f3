//! `halo-guard`, the VIP guard `halo run` starts beside itself: reads the daemon's orders on
//! standard input until the pipe closes — the kernel closes it whatever ended the daemon — then
//! does what a clean stop does for whatever the daemon still held (see `halo_hostnet::guard`).
//! A clean stop releases everything first, so the guard then has nothing to do. The kernel
//! lifetime of the VIPs (2 s) stays the fallback when the guard dies too.
//!
//! A separate small binary, not a mode of `halo`: it has no runtime, no TLS, no configuration
//! code, so it costs a fraction of the daemon's memory for as long as the daemon runs.
//!
//! Idle, it holds no more memory than it needs: after its start the heap's free pages and the
//! resident pages of its code and libraries go back (the daemon's own release,
//! `daemon/memory.rs`); what it runs later maps back from the page cache. Once only: its
//! clean-up, which runs when the daemon dies, finds resident whatever its orders touched.
//!
//! It blocks SIGINT, SIGTERM, SIGHUP and SIGUSR2: a Ctrl-C or a service stop reaches the whole
//! process group (and `systemctl kill -s USR2`, an upgrade, the whole unit), and the guard must
//! outlive the daemon's own shutdown to be of use.

use std::io::BufRead;
use std::process::ExitCode;

use halo_hostnet::guard::clean_up::clean_up;
use halo_hostnet::guard::wire::{Order, Told};

#[path = "../daemon/memory.rs"]
mod memory;

fn main() -> ExitCode {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut blocked = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR2] {
        blocked.add(signal);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None) {
        eprintln!("halo-guard: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let mut told = Told::default();
    memory::release();
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    // Only the end of the pipe (or a failing read) ends the reading: a line that is not UTF-8 is
    // ignored like any other line that is not an order, never taken for the daemon's end.
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("halo-guard: cannot read the daemon's orders: {e}");
                break;
            }
        }
        match std::str::from_utf8(&line).ok().and_then(|text| Order::parse(text.trim_end())) {
            Some(order) => told.apply(order),
            None => eprintln!("halo-guard: ignoring `{}`", String::from_utf8_lossy(&line).trim_end()),
        }
    }
    for line in clean_up(&told) {
        eprintln!("halo-guard: {line}");
    }
    ExitCode::SUCCESS
}
