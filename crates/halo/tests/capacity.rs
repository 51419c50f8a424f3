//! The daemon under many connections, on loopback: 10 000 idle proxied connections held at once
//! (the daemon's memory is reported), and running out of file descriptors refused cleanly: the
//! daemon keeps running and serves again once descriptors are free.

#[path = "../../config/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises this process's descriptor limit (children inherit it); false when not allowed.
fn raise_fd_limit(wanted: u64) -> bool {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft >= wanted => true,
        _ => setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok(),
    }
}

/// A tokio echo server on loopback, in its own runtime thread: echoes, and closes its side when
/// the client's FIN arrives (as an API server does).
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        use tokio::io::AsyncWriteExt;
                        let _closed = w.shutdown().await;
                    }
                });
            }
        });
    });
    address
}

/// Runs only as the child process of `ten_thousand...`: an echo server with a descriptor limit
/// of its own, printing its address.
#[test]
#[ignore = "helper process, started by ten_thousand_idle_connections_are_held"]
fn echo_server_process() {
    if std::env::var_os("HALO_ECHO_CHILD").is_none() {
        return;
    }
    let address = echo_server();
    println!("ECHO {address}");
    std::thread::sleep(Duration::from_secs(600));
}

fn echo_child() -> (Daemon, SocketAddr) {
    use std::io::BufRead;
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "echo_server_process", "--ignored", "--nocapture"])
        .env("HALO_ECHO_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("echo child");
    let stdout = child.stdout.take().expect("stdout");
    let line = std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("ECHO ")).expect("echo address");
    let address = line.trim_start_matches("ECHO ").trim().parse().expect("address");
    (Daemon(child), address)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("warning: could not end halo {}: {e}", self.0.id());
        }
    }
}

/// `halo run -c file` (its pid file beside it), under `prlimit --nofile=SOFT:HARD` when given.
fn spawn_halo(file: &std::path::Path, nofile: Option<&str>, stderr: Stdio) -> Daemon {
    let halo = env!("CARGO_BIN_EXE_halo");
    let mut command = match nofile {
        Some(limits) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={limits}")).arg(halo);
            c
        }
        None => Command::new(halo),
    };
    let pid_file = file.with_extension("pid");
    let child = command
        .args(["run", "-c", &file.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn halo");
    Daemon(child)
}

fn start(dir: &std::path::Path, backend: SocketAddr, max_connections: u32, fd_limit: Option<u32>) -> (Daemon, SocketAddr) {
    let port = free_port();
    let status = free_port();
    let config = format!(
        "[status]\nlisten = \"127.0.0.1:{status}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{port}\"]\nbackend = \"api\"\nmax_connections = {max_connections}\nqueue_timeout = \"1s\"\n\n\
         [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\nfast_interval = \"100ms\"\n\
         [[backend.server]]\nname = \"echo\"\naddress = \"{backend}\"\n"
    );
    let file = dir.join(format!("halo-{port}.toml"));
    std::fs::write(&file, config).expect("config");
    let daemon = spawn_halo(&file, fd_limit.map(|l| format!("{l}:{l}")).as_deref(), Stdio::null());
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    // Ready when the listener answers and the backend is checked healthy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(address) {
            let mut byte = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
            if s.write_all(b"?").is_ok() && s.read_exact(&mut byte).is_ok() {
                return (daemon, address);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("halo never served");
}

fn echo_once(address: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(address)?;
    // Out of descriptors, halo stops accepting: the connection waits in the backlog.
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"x")?;
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte)?;
    Ok(s)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// halo needs two descriptors per proxied connection. This machine's hard RLIMIT_NOFILE is
/// 20 000 and cannot be raised here (no CAP_SYS_RESOURCE), so one process holds at most ~9 990
/// connections (haproxy has the same bound); the test holds that many when the limit is 20 000
/// and the full 10 000 where it can be raised.
#[test]
fn ten_thousand_idle_connections_are_held() {
    let limit = if raise_fd_limit(21_000) { 21_000 } else { getrlimit(Resource::RLIMIT_NOFILE).map(|(soft, _)| soft).unwrap_or(1024) };
    let connections = ((limit as usize).saturating_sub(100) / 2).min(10_000);
    assert!(connections >= 9_000 || !common::in_ci(), "CI's descriptor limit ({limit}) is too low for this test");
    if connections < 9_000 {
        eprintln!("SKIP ten_thousand_idle_connections_are_held: RLIMIT_NOFILE {limit} allows only {connections}");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (_echo, backend) = echo_child();
    let (daemon, address) = start(dir.path(), backend, 20_000, None);
    let before = rss_kib(daemon.0.id());
    let started = Instant::now();
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        held.push(echo_once(address).unwrap_or_else(|e| panic!("connection {i}: {e}")));
    }
    let after = rss_kib(daemon.0.id());
    eprintln!(
        "{connections} idle proxied connections open in {:?}: halo RSS {} MiB -> {} MiB ({:.1} KiB per connection)",
        started.elapsed(),
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / connections as f64
    );
    // A generous bound (the figure itself belongs to bench/): an idle proxied connection holds
    // no buffer, so far less than 64 KiB of memory each.
    let per_connection = after.saturating_sub(before) / connections as u64;
    assert!(per_connection < 64, "{per_connection} KiB per idle connection");
    // Every one of them still works.
    for (i, s) in held.iter_mut().enumerate().step_by(997) {
        s.write_all(b"y").expect("write");
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).unwrap_or_else(|e| panic!("connection {i} after holding: {e}"));
        assert_eq!(&byte, b"y");
    }
}

#[test]
fn running_out_of_descriptors_is_refused_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    // 64 descriptors: the runtime, listener and health checks take some; ~20 connections fit.
    let (daemon, address) = start(dir.path(), echo_server(), 1000, Some(64));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        match echo_once(address) {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    eprintln!("with 64 descriptors: {} connections served, {refused} refused", held.len());
    assert!(refused > 0, "the limit was never reached");
    assert!(!held.is_empty());
    // Still alive, and serving again once descriptors are free.
    drop(held);
    let mut daemon = daemon;
    assert!(daemon.0.try_wait().expect("wait").is_none(), "halo exited");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = false;
    while Instant::now() < deadline && !served {
        served = echo_once(address).is_ok();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "halo did not serve again after descriptors were freed");
}

/// halo raises its soft descriptor limit to the hard one at start (outside systemd the soft
/// limit is often 1024).
#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = echo_server();
    let port = free_port();
    let file = dir.path().join("halo.toml");
    std::fs::write(
        &file,
        format!(
            "[status]\nlisten = \"127.0.0.1:{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{port}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\n[[backend.server]]\nname = \"echo\"\naddress = \"{backend}\"\n",
            free_port()
        ),
    )
    .expect("config");
    let daemon = spawn_halo(&file, Some("256:4096"), Stdio::null());
    let limits = || std::fs::read_to_string(format!("/proc/{}/limits", daemon.0.id())).unwrap_or_default();
    let open_files =
        || limits().lines().find(|l| l.starts_with("Max open files")).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && open_files().as_deref() != Some("Max open files 4096 4096 files") {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_files().as_deref(), Some("Max open files 4096 4096 files"));
}

/// halo under a descriptor limit, logging to a file: the daemon, the frontend, its log.
fn start_logged(dir: &std::path::Path, server: SocketAddr, fd_limit: u32) -> (Daemon, SocketAddr, std::path::PathBuf) {
    let port = free_port();
    let config = format!(
        "[status]\nlisten = \"127.0.0.1:{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{port}\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\nretries = 2\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\nfast_interval = \"50ms\"\nfall = 2\n\
         [[backend.server]]\nname = \"echo\"\naddress = \"{server}\"\n",
        free_port()
    );
    let file = dir.join("halo.toml");
    std::fs::write(&file, config).expect("config");
    let log = dir.join("halo.log");
    let daemon = spawn_halo(&file, Some(&format!("{fd_limit}:{fd_limit}")), std::fs::File::create(&log).expect("log").into());
    (daemon, SocketAddr::from(([127, 0, 0, 1], port)), log)
}

/// Out of descriptors, halo's own connects and checks fail with EMFILE: that says nothing about
/// the server, which stays UP; halo serves again by itself once descriptors are back.
#[test]
fn local_errors_never_mark_a_server_down() {
    let dir = tempfile::tempdir().expect("dir");
    let (_daemon, address, log) = start_logged(dir.path(), echo_server(), 64);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read().contains("server UP") {
        assert!(Instant::now() < deadline, "the server never came up: {}", read());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Bounded: 80 connections held for 2 s (several check intervals), then released.
    let held: Vec<TcpStream> = (0..80).filter_map(|_| echo_once(address).ok()).collect();
    let attempts: Vec<std::io::Result<TcpStream>> = (0..20).map(|_| echo_once(address)).collect();
    assert!(attempts.iter().any(|a| a.is_err()), "descriptors never ran out ({} held)", held.len());
    std::thread::sleep(Duration::from_secs(2));
    drop(attempts);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo_once(address).is_err() {
        assert!(Instant::now() < deadline, "halo did not serve again: {}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!read().contains("server DOWN"), "a local error marked the server down:\n{}", read());
}

/// A server that is DOWN from the start never flips, but its first decided state is logged
/// with the reason.
#[test]
fn a_server_down_from_the_start_is_logged_with_its_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_daemon, _address, log) = start_logged(dir.path(), closed, 1024);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(read().contains("server DOWN") && read().contains("connect: refused")) {
        assert!(Instant::now() < deadline, "the first state was never logged:\n{}", read());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runtime has one worker per core unless `[node] worker_threads` says otherwise.
#[test]
fn worker_threads_follow_the_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = echo_server();
    let workers = |extra: &str| {
        let file = dir.path().join("halo.toml");
        std::fs::write(
            &file,
            format!(
                "{extra}[status]\nlisten = \"127.0.0.1:{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\n[[backend.server]]\nname = \"echo\"\naddress = \"{backend}\"\n",
                free_port(),
                free_port()
            ),
        )
        .expect("config");
        let daemon = spawn_halo(&file, None, Stdio::null());
        let count = || {
            std::fs::read_dir(format!("/proc/{}/task", daemon.0.id()))
                .map(|tasks| {
                    tasks
                        .filter_map(Result::ok)
                        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tokio-rt-worker"))
                        .count()
                })
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        count()
    };
    assert_eq!(workers("[node]\nworker_threads = 3\n\n"), 3);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(workers(""), cores);
}

/// An echo server on loopback (its own runtime thread) that counts its connections: the most
/// open at once.
fn counting_echo_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::clone(&most);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                seen.fetch_max(now, Ordering::SeqCst);
                let open = Arc::clone(&open);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        use tokio::io::AsyncWriteExt;
                        let _closed = w.shutdown().await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    });
    (address, most)
}

/// Silent clients (connected, sending nothing) take neither every slot nor every descriptor:
/// against `max_connections = 100` and the default `first_byte_timeout` (5 s), 1 000 of them
/// leave halo under 400 descriptors and at most 100 connections to the server, and a real client
/// arriving behind them is served within 20 s: while they wait in the backlog, the longest
/// silent is closed to make room. (halo accepted every connection and connected it to a server
/// before it spoke: 1 000 descriptors, 100 server connections held for the idle timeout of an
/// hour, and the real client never got a slot; then, closing each only after the timeout, it
/// served the real client after 48 s.)
#[test]
fn silent_clients_take_neither_every_slot_nor_every_descriptor() {
    assert!(raise_fd_limit(4096), "cannot raise this test's descriptor limit to 4096");
    let dir = tempfile::tempdir().expect("dir");
    let (server, most_upstream) = counting_echo_server();
    let (port, status) = (free_port(), free_port());
    let config = format!(
        "[status]\nlisten = \"127.0.0.1:{status}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{port}\"]\nbackend = \"api\"\nmax_connections = 100\nqueue_timeout = \"1s\"\n\n\
         [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"1s\"\n[[backend.server]]\nname = \"echo\"\naddress = \"{server}\"\n"
    );
    let file = dir.path().join("halo.toml");
    std::fs::write(&file, config).expect("config");
    let daemon = spawn_halo(&file, None, Stdio::null());
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while echo_once(front).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "halo never served");
    }
    let pid = daemon.0.id();
    let descriptors = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let mut most_descriptors = descriptors();
    // 1 000 silent clients; those the kernel's backlog cannot take time out connecting (bounded).
    let mut silent = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = TcpStream::connect_timeout(&front, Duration::from_millis(200)) {
            silent.push(s);
        }
        most_descriptors = most_descriptors.max(descriptors());
    }
    // A real client behind them, served within 20 s (bounded retries, each bounded).
    let behind = Instant::now();
    let deadline = behind + Duration::from_secs(20);
    let mut served = false;
    while Instant::now() < deadline && !served {
        served = echo_once(front).is_ok();
        most_descriptors = most_descriptors.max(descriptors());
    }
    let upstream = most_upstream.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "silent clients connected: {}, halo's most descriptors: {most_descriptors}, most server connections: {upstream}",
        silent.len()
    );
    eprintln!("the real client was served {:?} after the last silent client connected", behind.elapsed());
    assert!(served, "a real client was not served within 20 s behind 1 000 silent ones");
    assert!(most_descriptors < 400, "halo held {most_descriptors} descriptors for 1 000 silent clients under max_connections = 100");
    assert!(upstream <= 101, "{upstream} server connections under max_connections = 100");
    let mut metrics = String::new();
    let mut asked = TcpStream::connect(("127.0.0.1", status)).expect("status endpoint");
    asked.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(asked, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("ask");
    asked.read_to_string(&mut metrics).expect("metrics");
    let closed = metrics
        .lines()
        .find(|l| l.starts_with("halo_frontend_first_byte_timeouts_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(closed.is_some_and(|n| n >= 100.0), "silent connections not counted: {closed:?}");
}
