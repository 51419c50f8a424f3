//! `probe`, the benchmarks' client and server, in plain std so that its timing is predictable.
//!
//! `probe listen ADDR` accepts connections, writes "ok\n" and closes them, forever.
//! `probe connect ADDR EVERY_MS FOR_MS TIMEOUT_MS` connects every EVERY_MS for FOR_MS (bounded
//! in count and time) and prints one line per attempt: `<µs since start> ok|fail`. An attempt
//! is ok only when the listener's first byte arrives within the timeout: a proxy that accepts
//! but cannot reach a server counts as a failure, end to end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["listen", address] => listen(address),
        ["connect", address, every, total, timeout] => connect(address, every, total, timeout),
        _ => Err("usage: probe listen ADDR | probe connect ADDR EVERY_MS FOR_MS TIMEOUT_MS".to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::from(2)
        }
    }
}

fn listen(address: &str) -> Result<(), String> {
    let listener = TcpListener::bind(address).map_err(|e| format!("bind {address}: {e}"))?;
    for mut stream in listener.incoming().flatten() {
        // A client gone already is not the listener's problem.
        let _answered = stream.write_all(b"ok\n");
    }
    Ok(())
}

/// Connects and reads the listener's first byte, both within `timeout`.
fn reached(address: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else { return false };
    let mut byte = [0u8; 1];
    stream.set_read_timeout(Some(timeout)).is_ok() && matches!(stream.read(&mut byte), Ok(1))
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse().map(Duration::from_millis).map_err(|_| format!("`{text}` is not a number of milliseconds"))
}

fn connect(address: &str, every: &str, total: &str, timeout: &str) -> Result<(), String> {
    let address: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let (every, total, timeout) = (millis(every)?, millis(total)?, millis(timeout)?);
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut next = start;
    // Bounded in time and therefore in count (at most total / every attempts).
    while start.elapsed() < total {
        let at = start.elapsed().as_micros();
        let ok = reached(address, timeout);
        writeln!(out, "{at} {}", if ok { "ok" } else { "fail" }).map_err(|e| e.to_string())?;
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    out.flush().map_err(|e| e.to_string())
}
