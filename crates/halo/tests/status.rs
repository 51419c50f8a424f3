//! The status endpoint of a running daemon, on loopback: /healthz, /status (JSON), /metrics
//! (Prometheus text), the bearer token, and `halo status` reading it through the configuration.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("warning: could not end halo {}: {e}", self.0.id());
        }
    }
}

fn free() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

/// A backend that accepts connections (a TCP check passes).
fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || for _stream in listener.incoming() {});
    address
}

fn get(address: SocketAddr, path: &str, token: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(address).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("http");
    (head.split_whitespace().nth(1).unwrap_or("").to_string(), body.to_string())
}

#[test]
fn status_endpoint_and_halo_status() {
    let dir = tempfile::tempdir().expect("dir");
    let (status, front, server) = (free(), free(), backend());
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let file = dir.path().join("halo.toml");
    std::fs::write(
        &file,
        format!(
            "[status]\nlisten = \"{status}\"\ntoken_file = \"{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\n[[backend.server]]\nname = \"master01\"\naddress = \"{server}\"\n",
            token.display()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["run", "-c", &file.to_string_lossy(), "--pid-file", &dir.path().join("halo.pid").to_string_lossy()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _daemon = Daemon(child);
    let start = Instant::now();
    while TcpStream::connect(status).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the status endpoint never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(status, "/metrics", None).0, "401", "the token is required");
    assert_eq!(get(status, "/status", Some("wrong")).0, "401");
    // /healthz stays open for liveness probes.
    assert_eq!(get(status, "/healthz", None), ("200".to_string(), "ok\n".to_string()));
    // The server comes up after its first check.
    let start = Instant::now();
    loop {
        let (code, metrics) = get(status, "/metrics", Some("s3cret"));
        assert_eq!(code, "200");
        if metrics.contains("halo_server_up{backend=\"api\",server=\"master01\"} 1") {
            assert!(metrics.contains("# TYPE halo_frontend_connections_total counter"), "{metrics}");
            assert!(metrics.contains("halo_frontend_listening{frontend=\"api\"} 1"), "{metrics}");
            assert!(metrics.contains("# TYPE halo_server_check_latency_seconds histogram"), "{metrics}");
            let count = metrics
                .lines()
                .find(|l| l.starts_with("halo_server_check_latency_seconds_count{backend=\"api\",server=\"master01\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            assert!(count.is_some_and(|c| c >= 1.0), "passing checks are counted in the histogram:\n{metrics}");
            assert!(
                metrics.contains("halo_server_check_latency_seconds_bucket{backend=\"api\",server=\"master01\",le=\"+Inf\"}"),
                "{metrics}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "server never up in the metrics:\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, json) = get(status, "/status", Some("s3cret"));
    assert_eq!(code, "200");
    assert!(json.contains("\"name\": \"master01\"") && json.contains("\"healthy\": true"), "{json}");

    let table = Command::new(env!("CARGO_BIN_EXE_halo")).args(["status", "-c", &file.to_string_lossy()]).output().expect("halo status");
    assert_eq!(table.status.code(), Some(0), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("frontend api") && table.contains("server master01") && table.contains("UP"), "{table}");
    let raw = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["status", "--json", "-c", &file.to_string_lossy()])
        .output()
        .expect("halo status --json");
    assert!(String::from_utf8_lossy(&raw.stdout).contains("\"frontends\""));
}

#[test]
fn status_on_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let (status, front, server) = (free(), free(), backend());
    let socket = dir.path().join("run/status.sock");
    // A stale file where the socket goes (a crashed daemon's) is replaced.
    std::fs::create_dir_all(dir.path().join("run")).expect("dir");
    std::fs::write(&socket, "stale").expect("stale");
    let file = dir.path().join("halo.toml");
    std::fs::write(
        &file,
        format!(
            "[status]\nlisten = \"{status}\"\nsocket = \"{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\n[[backend.server]]\nname = \"master01\"\naddress = \"{server}\"\n",
            socket.display()
        ),
    )
    .expect("config");
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_halo"))
            .args(["run", "-c", &file.to_string_lossy(), "--pid-file", &dir.path().join("halo.pid").to_string_lossy()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("halo run"),
    );
    let start = Instant::now();
    let body = loop {
        assert!(start.elapsed() < Duration::from_secs(10), "the unix socket never answered");
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) {
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            write!(s, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("read");
            if answer.contains("\"healthy\": true") {
                break answer;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.starts_with("HTTP/1.1 200") && body.contains("master01"), "{body}");
    let mode = std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is for root only");
    let table = Command::new(env!("CARGO_BIN_EXE_halo")).args(["status", "-c", &file.to_string_lossy()]).output().expect("halo status");
    assert_eq!(table.status.code(), Some(0), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("server master01") && table.contains("UP") && !table.contains("\x1b["), "no colour off a terminal: {table}");

    // --watch redraws every second until interrupted.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["status", "--watch", "-c", &file.to_string_lossy()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("halo status --watch");
    std::thread::sleep(Duration::from_millis(2500));
    watch.kill().expect("kill");
    let mut frames = String::new();
    watch.stdout.take().expect("stdout").read_to_string(&mut frames).expect("read");
    watch.wait().expect("wait");
    assert!(frames.matches("frontend api").count() >= 2, "at least two frames in 2.5 s: {frames}");
}

/// The status socket is root's from the moment it exists: a daemon started with umask 000 and
/// made to wait right after the bind (a test hook) shows it with mode 0600 already. (It was
/// chmod'ed after the bind: in between, anyone could connect.)
#[test]
fn the_status_socket_is_never_open_to_others() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if !cfg!(feature = "test-hooks") {
        let why = "built without the test-hooks feature (scripts/test.sh builds with --features halo/test-hooks)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "cannot run under CI: {why}");
        eprintln!("SKIP the_status_socket_is_never_open_to_others: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (status, front, server) = (free(), free(), backend());
    let socket = dir.path().join("status.sock");
    let file = dir.path().join("halo.toml");
    std::fs::write(
        &file,
        format!(
            "[status]\nlisten = \"{status}\"\nsocket = \"{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"1s\"\n[[backend.server]]\nname = \"master01\"\naddress = \"{server}\"\n",
            socket.display()
        ),
    )
    .expect("config");
    let script = format!("umask 000 && exec {} run -c {}", env!("CARGO_BIN_EXE_halo"), file.display());
    let _daemon = Daemon(
        Command::new("sh")
            .args(["-c", &script])
            .env("HALO_TEST_STALL_AFTER_STATUS_BIND", "1")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("halo run"),
    );
    let start = Instant::now();
    let mode = loop {
        assert!(start.elapsed() < Duration::from_secs(10), "the socket never appeared");
        if let Ok(meta) = std::fs::symlink_metadata(&socket)
            && meta.file_type().is_socket()
        {
            break meta.permissions().mode() & 0o777;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(mode, 0o600, "the socket was there with mode {mode:o}");
}

/// A daemon with one small frontend (files in `dir`) that tells `notify_socket` what it does.
fn run_with_notify(dir: &std::path::Path, notify_socket: &str) -> Daemon {
    let (status, front, server) = (free(), free(), backend());
    let file = dir.join("halo.toml");
    std::fs::write(&file, format!("[status]\nlisten = \"{status}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\n[[backend.server]]\nname = \"m\"\naddress = \"{server}\"\n")).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["run", "-c", &file.to_string_lossy(), "--pid-file", &dir.join("halo.pid").to_string_lossy()])
        .env("NOTIFY_SOCKET", notify_socket)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    Daemon(child)
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut daemon = run_with_notify(dir.path(), &socket_path.to_string_lossy());
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert_eq!(next(), "READY=1");
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert_eq!(next(), "STOPPING=1");
    let exited = daemon.0.wait().expect("wait");
    assert_eq!(exited.code(), Some(0));
}

/// A daemon with a status endpoint (and the token `s3cret`) and one small frontend, on free ports.
fn status_only(dir: &std::path::Path) -> (Daemon, SocketAddr) {
    let (status, front, server) = (free(), free(), backend());
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let file = dir.join("halo.toml");
    std::fs::write(
        &file,
        format!(
            "[status]\nlisten = \"{status}\"\ntoken_file = \"{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\n[[backend.server]]\nname = \"s\"\naddress = \"{server}\"\n",
            token.display()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["run", "-c", &file.to_string_lossy(), "--pid-file", &dir.join("halo.pid").to_string_lossy()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let daemon = Daemon(child);
    let start = Instant::now();
    while TcpStream::connect(status).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the status endpoint never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    (daemon, status)
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Idle connections cannot pile up on the status endpoint: they hold no more than a small
/// number of descriptors, and the endpoint closes a connection that sends no request.
#[test]
fn idle_status_connections_are_capped_and_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let (daemon, status) = status_only(dir.path());
    let before = open_descriptors(daemon.0.id());
    // Bounded: 300 connections, opened once, never written to.
    let mut idle: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(status).ok()).collect();
    assert!(idle.len() > 200, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let during = open_descriptors(daemon.0.id());
    assert!(during < before + 100, "300 idle connections took {} descriptors of halo's", during - before);
    // The endpoint closes connections that say nothing (a header timeout, not minutes).
    let first = &mut idle[0];
    first.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let started = Instant::now();
    let mut rest = Vec::new();
    let ended = first.read_to_end(&mut rest);
    let timed_out = ended.as_ref().is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(!timed_out && started.elapsed() < Duration::from_secs(20), "an idle connection stayed open {:?}: {ended:?}", started.elapsed());
    // Meanwhile, and after, the endpoint answers.
    assert_eq!(get(status, "/healthz", None).0, "200");
    drop(idle);
}

/// A connection that sends nothing is closed by the header timeout (5 s), well before the end of
/// a connection's lifetime (10 s). One connection alone: with 33 or more, the oldest silent one
/// is evicted to make room, which says nothing of the timeout (the test above).
#[test]
fn a_silent_connection_is_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let (_daemon, status) = status_only(dir.path());
    let mut silent = TcpStream::connect(status).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let started = Instant::now();
    let mut rest = Vec::new();
    let ended = silent.read_to_end(&mut rest);
    let after = started.elapsed();
    assert!(
        ended.is_ok()
            || !matches!(ended.as_ref().map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{ended:?}"
    );
    assert!(after >= Duration::from_secs(4), "closed after {after:?}: before the header timeout");
    assert!(after < Duration::from_secs(9), "closed after {after:?}: by the connection's lifetime, not the header timeout");
}

/// The bearer scheme is case-insensitive (RFC 7235); the token itself is not.
#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().expect("dir");
    let (_daemon, status) = status_only(dir.path());
    let ask = |authorization: &str| {
        let mut s = TcpStream::connect(status).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(s, "GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n").expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(ask("Bearer s3cret"), "200");
    assert_eq!(ask("bearer s3cret"), "200");
    assert_eq!(ask("BEARER   s3cret"), "200");
    assert_eq!(ask("Bearer S3CRET"), "401");
    assert_eq!(ask("Basic s3cret"), "401");
    assert_eq!(ask("Bearer s3cre"), "401");
}

/// Idle connections holding every slot do not keep a probe out: the oldest connection that has
/// not asked anything makes room for a newcomer.
#[test]
fn probes_get_through_idle_connections_holding_every_slot() {
    let dir = tempfile::tempdir().expect("dir");
    let (_daemon, status) = status_only(dir.path());
    // Bounded: 100 connections, opened once, never written to.
    let idle: Vec<TcpStream> = (0..100).filter_map(|_| TcpStream::connect(status).ok()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let answered = (0..10).filter(|_| {
        let mut s = TcpStream::connect(status).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let asked = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        asked.is_ok() && s.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1 200")
    });
    assert_eq!(answered.count(), 10, "/healthz probes were kept out by {} idle connections", idle.len());
}

/// systemd may hand out an abstract NOTIFY_SOCKET (`@name`): halo reaches it there too.
#[test]
fn systemd_hears_ready_on_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().expect("dir");
    let name = format!("halo-test-notify-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&address).expect("abstract notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _daemon = run_with_notify(dir.path(), &format!("@{name}"));
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 on the abstract socket within 10 s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "READY=1");
}

/// The endpoint only serves reads: any other method is answered 405 with the methods it takes
/// (it answered 200 to `DELETE /status`), with or without the token.
#[test]
fn methods_other_than_get_and_head_are_refused_with_405() {
    let dir = tempfile::tempdir().expect("dir");
    let (_daemon, status) = status_only(dir.path());
    let ask = |method: &str, path: &str| {
        let mut s = TcpStream::connect(status).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        let status = answer.split_whitespace().nth(1).unwrap_or("").to_string();
        let allow = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("allow:")).map(|l| l[6..].trim().to_string());
        (status, allow)
    };
    for path in ["/status", "/metrics", "/healthz"] {
        for method in ["DELETE", "POST", "PUT", "PATCH"] {
            assert_eq!(ask(method, path), ("405".to_string(), Some("GET, HEAD".to_string())), "{method} {path}");
        }
        assert_eq!(ask("GET", path).0, "200", "GET {path}");
        assert_eq!(ask("HEAD", path).0, "200", "HEAD {path}");
    }
}
