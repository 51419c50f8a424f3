//! The live view on a terminal: every 250 ms, who holds the VIP, each balancer's state,
//! priority and view of the servers, in BGP mode the balancers the router forwards to, the
//! client's last five seconds, and the timeline so far.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::observe::Seen;
use super::timeline;

/// The drawing thread.
pub struct View {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl View {
    /// Starts drawing.
    pub fn start(seen: Arc<Mutex<Seen>>, lines: Arc<Mutex<Vec<String>>>, vip: Ipv4Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let frame = {
                        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        let lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                        frame(&seen, &lines, vip)
                    };
                    // Home, draw, clear what is left of the previous frame.
                    print!("\x1b[H{frame}\x1b[J");
                    flush();
                    std::thread::sleep(Duration::from_millis(250));
                }
                print!("\x1b[H\x1b[J");
                flush();
            })
        };
        Self { stop, thread: Some(thread) }
    }

    /// Stops drawing and clears the screen.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("halo lab: the view thread panicked");
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lab's view is on a terminal by construction: always in colour.
fn paint(text: &str, width: usize) -> String {
    halo_client::paint(text, width, true)
}

fn frame(seen: &Seen, lines: &[String], vip: Ipv4Addr) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\x1b[1mhalo lab\x1b[0m — VIP {vip}:{}   (Ctrl-C ends it and cleans up)\x1b[K\n\x1b[K", super::FRONTEND_PORT);
    let servers: Vec<String> =
        seen.balancers.values().flat_map(|b| b.servers.keys().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let _ = writeln!(out, "balancer  state     priority  VIP  {}\x1b[K", servers.iter().map(|s| format!("{s:<6}")).collect::<String>());
    for (name, b) in &seen.balancers {
        if !b.reachable {
            let _ = writeln!(out, "{name:<9} {}{}\x1b[K", paint("stopped", 10), if b.holds_vip { "          yes" } else { "" });
            continue;
        }
        let health: String = servers.iter().map(|s| paint(if b.servers.get(s) == Some(&true) { "UP" } else { "DOWN" }, 6)).collect();
        let holds = if b.holds_vip { paint("yes", 4) } else { "    ".to_string() };
        let priority = b.priority.map_or_else(|| "-".to_string(), |p| p.to_string());
        let _ = writeln!(out, "{name:<9} {} {priority:<9} {holds} {health}\x1b[K", paint(&b.state, 9));
    }
    if !seen.routes.is_empty() {
        let routed = if seen.routed.is_empty() { "nothing".to_string() } else { seen.routed.join(" ") };
        let _ = writeln!(out, "\x1b[K\nrouter: forwards {vip} to {routed}\x1b[K");
    }
    let recent = timeline::stats(&seen.requests, seen.at_ms.saturating_sub(5000), seen.at_ms);
    let ok = if recent.sent == 0 { 0.0 } else { 100.0 * (recent.sent - recent.failed) as f64 / recent.sent as f64 };
    let _ = writeln!(
        out,
        "\x1b[K\nclient, last 5 s: {} requests, {ok:.1}% ok, p50 {} ms, p99 {} ms\x1b[K\n\x1b[K\ntimeline\x1b[K",
        recent.sent, recent.p50_ms, recent.p99_ms
    );
    for line in lines.iter().rev().take(30).rev() {
        let _ = writeln!(out, "{line}\x1b[K");
    }
    out
}

/// Flushes standard output (the live view draws without newlines at the end).
pub fn flush() {
    use std::io::Write;
    if let Err(e) = std::io::stdout().flush() {
        tracing::debug!(error = %e, "stdout");
    }
}
