//! `halo-guard`, the VIP guard `halo run` starts beside itself: reads the daemon's orders on
//! standard input until the pipe closes — the kernel closes it whatever ended the daemon — then
//! does what a clean stop does for whatever the daemon still held (see `halo_hostnet::guard`).
//! A clean stop releases everything first, so the guard then has nothing to do. The kernel
//! lifetime of the VIPs (2 s) stays the fallback when the guard dies too.
//!
//! A separate small binary, not a mode of `halo`: it has no runtime, no TLS, no configuration
//! code, so it costs a fraction of the daemon's memory for as long as the daemon runs.
//!
//! It blocks SIGINT, SIGTERM and SIGHUP: a Ctrl-C or a service stop reaches the whole process
//! group, and the guard must outlive the daemon's own shutdown to be of use.

use std::io::BufRead;
use std::process::ExitCode;

use halo_hostnet::guard::clean_up::clean_up;
use halo_hostnet::guard::wire::{Order, Told};

fn main() -> ExitCode {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut blocked = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        blocked.add(signal);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None) {
        eprintln!("halo-guard: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let mut told = Told::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match Order::parse(&line) {
            Some(order) => told.apply(order),
            None => eprintln!("halo-guard: ignoring `{line}`"),
        }
    }
    for line in clean_up(&told) {
        eprintln!("halo-guard: {line}");
    }
    ExitCode::SUCCESS
}
