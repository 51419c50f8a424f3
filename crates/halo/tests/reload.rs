//! `halo run` with a balancer, reloaded with SIGHUP on loopback: established connections keep
//! flowing, a new bind and a new server take traffic, an invalid file changes nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child, std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("warning: could not end halo {}: {e}", self.0.id());
        }
    }
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

/// An echo server that answers with a tag first, so the test sees which server it reached.
fn tagged_echo(tag: u8) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&[tag]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// One status port for the daemon of this test (kept across its reloads).
static STATUS: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

fn free() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

fn config(binds: &[SocketAddr], servers: &[SocketAddr]) -> String {
    let binds: Vec<String> = binds.iter().map(|b| format!("\"{b}\"")).collect();
    let status = STATUS.get_or_init(free);
    let mut text = format!(
        "[status]\nlisten = \"{status}\"\n\n[[frontend]]\nname = \"api\"\nbind = [{}]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\nfast_interval = \"50ms\"\n",
        binds.join(", ")
    );
    for (i, s) in servers.iter().enumerate() {
        text.push_str(&format!("[[backend.server]]\nname = \"s{i}\"\naddress = \"{s}\"\n"));
    }
    text
}

fn ask(stream: &mut TcpStream) -> std::io::Result<u8> {
    stream.write_all(b"?")?;
    let mut tag = [0u8; 1];
    stream.read_exact(&mut tag)?;
    Ok(tag[0])
}

fn tag_via(address: SocketAddr) -> std::io::Result<u8> {
    let mut s = TcpStream::connect(address)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    ask(&mut s)
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sighup_reloads_the_balancer_in_place() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (tagged_echo(b'a'), tagged_echo(b'b'));
    let (front, extra) = (free(), free());
    let file = dir.path().join("halo.toml");
    std::fs::write(&file, config(&[front], &[a])).expect("config");
    let log = dir.path().join("halo.log");
    let pid_file = dir.path().join("halo.pid");
    let child = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["run", "-c", &file.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let daemon = Daemon(child, log);
    assert!(wait_until(Duration::from_secs(10), || tag_via(front).is_ok()), "{}", daemon.log());
    let mut held = TcpStream::connect(front).expect("connect");
    held.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    assert_eq!(ask(&mut held).expect("held"), b'a');

    assert!(wait_until(Duration::from_secs(5), || pid_file.exists()), "no pid file");
    // Server a leaves, b joins, a second bind appears; `halo reload` checks the file and signals.
    std::fs::write(&file, config(&[front, extra], &[b])).expect("config");
    let reload = || {
        Command::new(env!("CARGO_BIN_EXE_halo"))
            .args(["reload", "-c", &file.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
            .output()
            .expect("halo reload")
    };
    let sent = reload();
    assert_eq!(sent.status.code(), Some(0), "{}", String::from_utf8_lossy(&sent.stderr));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("applied"), "the daemon's word: {}", String::from_utf8_lossy(&sent.stderr));
    assert!(wait_until(Duration::from_secs(10), || tag_via(extra).is_ok_and(|t| t == b'b')), "{}", daemon.log());
    assert_eq!(tag_via(front).expect("front"), b'b', "new connections go to the new server");
    assert_eq!(ask(&mut held).expect("the established connection survives the reload"), b'a');

    // An invalid file: `halo reload` refuses to send it (exit 1); sent anyway with SIGHUP, the
    // daemon refuses it too. Nothing changes.
    std::fs::write(&file, "[[frontend]]\nname = \"api\"\n").expect("config");
    assert_eq!(reload().status.code(), Some(1));
    assert!(Command::new("kill").args(["-HUP", &daemon.0.id().to_string()]).status().expect("kill").success());
    assert!(wait_until(Duration::from_secs(5), || daemon.log().contains("reload refused")), "{}", daemon.log());
    assert_eq!(tag_via(extra).expect("still served"), b'b');
    assert_eq!(ask(&mut held).expect("still held"), b'a');

    // A valid file the daemon cannot apply (a bind on a port someone else holds): the daemon
    // refuses it, and `halo reload` says so with exit 1 (systemctl reload fails too).
    let busy = TcpListener::bind("127.0.0.1:0").expect("busy port");
    std::fs::write(&file, config(&[front, extra, busy.local_addr().expect("address")], &[b])).expect("config");
    let refused = reload();
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert_eq!(tag_via(extra).expect("still served after the refused reload"), b'b');
    drop(busy);

    // `halo reload` of another file than the daemon's: refused (the daemon re-reads its own).
    let other = dir.path().join("other.toml");
    std::fs::write(&other, config(&[front], &[a])).expect("config");
    let wrong = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["reload", "-c", &other.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
        .output()
        .expect("halo reload");
    assert_eq!(wrong.status.code(), Some(2), "{}", String::from_utf8_lossy(&wrong.stderr));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("a reload re-reads the daemon's own file"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    drop(daemon);
}
