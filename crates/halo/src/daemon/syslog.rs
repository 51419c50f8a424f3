//! Log lines to a local syslog socket (`[log] target = "syslog"`), as haproxy's `log /dev/log
//! local0` users collect them: one RFC 5424 datagram per line, `<PRI>1 TIMESTAMP HOSTNAME halo
//! PID MSGID - MSG`, the priority from the facility and the line's level, MSGID `connection` for
//! the connection log and `-` otherwise, the line itself (text or JSON, without its own time) as
//! MSG. The socket never blocks the daemon: a line it does not take (no syslog daemon, its
//! queue full) goes to standard error instead.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Where the lines go, and what their header says.
pub struct Syslog {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    facility: u8,
    hostname: String,
    pid: u32,
    /// Whether a line went to standard error yet (said once).
    fell_back: std::sync::atomic::AtomicBool,
}

impl Syslog {
    /// A writer to `path` with `facility` (RFC 5424's number).
    pub fn new(path: PathBuf, facility: u8) -> Self {
        let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)).ok();
        let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty());
        let hostname = hostname.unwrap_or_else(|| "-".to_string());
        Self { socket, path, facility, hostname, pid: std::process::id(), fell_back: std::sync::atomic::AtomicBool::new(false) }
    }

    /// One datagram: the header, then the line without its end.
    fn send(&self, severity: u8, msgid: &str, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.trim_ascii_start();
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let mut datagram =
            format!("<{}>1 {timestamp} {} halo {} {msgid} - ", self.facility * 8 + severity, self.hostname, self.pid).into_bytes();
        datagram.extend_from_slice(line);
        let sent = match &self.socket {
            Some(socket) => socket.send_to(&datagram, &self.path).map(drop),
            None => Err(std::io::Error::other("no datagram socket")),
        };
        if let Err(e) = sent {
            // With its time, which the line itself leaves to the syslog header; the first one
            // says why, once.
            let mut stderr = std::io::stderr().lock();
            if !self.fell_back.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let _ = writeln!(
                    stderr,
                    "{timestamp} halo: the syslog socket {} does not take lines ({e}): writing them here",
                    self.path.display()
                );
            }
            let _ = write!(stderr, "{timestamp} ").and_then(|()| stderr.write_all(line)).and_then(|()| stderr.write_all(b"\n"));
        }
    }
}

/// One line being written; sent when the formatter is done with it.
pub struct Line<'a> {
    syslog: &'a Syslog,
    severity: u8,
    msgid: &'static str,
    buffer: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.syslog.send(self.severity, self.msgid, &self.buffer);
        }
    }
}

/// RFC 5424's severity of a level: error 3, warning 4, informational 6, debug 7.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { syslog: self, severity: 6, msgid: "-", buffer: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        let msgid = if meta.target() == "connection" { "connection" } else { "-" };
        Line { syslog: self, severity: severity(meta.level()), msgid, buffer: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_datagram_with_its_priority_and_a_line_not_taken_goes_to_stderr() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let syslog = Syslog::new(path.clone(), 16);
        {
            let mut line = Line { syslog: &syslog, severity: 4, msgid: "connection", buffer: Vec::new() };
            line.write_all(b" WARN something happened\n").expect("write");
        }
        let mut buffer = [0u8; 512];
        let n = receiver.recv(&mut buffer).expect("a datagram");
        let text = String::from_utf8_lossy(&buffer[..n]).to_string();
        // local0 (16) × 8 + warning (4) = 132.
        assert!(text.starts_with("<132>1 "), "{text}");
        assert!(text.ends_with(&format!(" halo {} connection - WARN something happened", std::process::id())), "{text}");
        drop(receiver);
        std::fs::remove_file(&path).expect("remove");
        // Nobody listens: written to standard error, no panic, no block.
        syslog.send(6, "-", b"lost line\n");
    }
}
