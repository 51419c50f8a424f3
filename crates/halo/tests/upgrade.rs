//! `halo upgrade`: the running daemon hands over to the binary now on disk. The daemon runs from
//! a copy of the built binary (the "installed" file); the upgrade replaces that file by a second
//! build of the same version — a copy whose build-tag slot says `upgrade-test`, so that the
//! process that answers afterwards provably runs the new file (its `/proc/PID/exe` is the new
//! inode, its status reports the tag) — and runs `halo upgrade`.
//!
//! On loopback (no root): established streams stay with the old process while new connections go
//! to the new one; systemd's notifications (a NOTIFY_SOCKET the test reads with the senders'
//! credentials) come each from the process that is the service's main process at that moment,
//! as `NotifyAccess=main` requires: READY from the first, `MAINPID=` + READY from it at the
//! handover, nothing more from it (no STOPPING), RELOADING/READY/STOPPING from the new one; a
//! binary that fails, and a configuration the new process refuses, change nothing.
//!
//! In network namespaces (root; CI): halo master and keepalived backup, three API-server
//! stand-ins, a client opening a connection every 10 ms and 50 streams sending a byte every
//! 100 ms; during the upgrade no connect fails, no stream is cut, keepalived never becomes master
//! (its log, no advert of its own in a tshark capture) while halo's adverts never stop longer
//! than one and a half intervals and never carry priority 0, and the VIP is on the master at
//! every sample. Then a binary that fails its start changes nothing, and upgrades while a peer
//! preempts and then hands back end, each in time, with one holder of the VIP.
//! Traffic stays on loopback and inside the namespaces the tests create; every process is ended
//! by PID.

mod lan;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The build-tag slot of the binary, untouched (the tag follows the colon, `_` pads it).
const SLOT: &[u8] = b"halo-build-tag:________________________________";
/// The second build's tag.
const TAG: &[u8] = b"upgrade-test";

/// Copies the built binary to `dir/halo`, the file the daemon runs and the upgrade replaces, and
/// its VIP guard beside it, where every generation finds it.
fn install(dir: &Path) -> PathBuf {
    let path = dir.join("halo");
    std::fs::copy(env!("CARGO_BIN_EXE_halo"), &path).expect("copy the binary");
    std::fs::copy(env!("CARGO_BIN_EXE_halo-guard"), dir.join("halo-guard")).expect("copy the guard");
    path
}

/// Replaces `installed` the way a package upgrade does (a new file renamed over it) with `bytes`.
fn replace(installed: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let next = installed.with_extension("next");
    std::fs::write(&next, bytes).expect("write the new binary");
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&next, installed).expect("rename over the installed binary");
}

/// The second build: the binary with its build-tag slot set to `upgrade-test` (made once).
fn second_build() -> &'static [u8] {
    static BUILD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BUILD.get_or_init(|| {
        let mut tagged = SLOT.to_vec();
        tagged[b"halo-build-tag:".len()..][..TAG.len()].copy_from_slice(TAG);
        let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_halo")).expect("read the binary");
        // grep finds it in the 170 MB of a debug binary in a blink; this test, unoptimised, not.
        let slot = std::str::from_utf8(SLOT).expect("ascii");
        let found = run("grep", &["--byte-offset", "--only-matching", "--binary-files=text", "-F", slot, env!("CARGO_BIN_EXE_halo")]);
        let at: Vec<usize> = String::from_utf8_lossy(&found.stdout).lines().filter_map(|l| l.split(':').next()?.parse().ok()).collect();
        assert_eq!(at.len(), 1, "the build-tag slot must occur once in the binary");
        assert_eq!(bytes[at[0]..at[0] + SLOT.len()], *SLOT);
        bytes[at[0]..at[0] + SLOT.len()].copy_from_slice(&tagged);
        bytes
    })
}

/// A "new binary" that fails as a new halo refusing its configuration would, but earlier.
const BROKEN: &[u8] = b"#!/bin/sh\necho 'halo.toml:1:1: error: this build refuses the file' >&2\nexit 1\n";

/// Whether `pid` runs the file at `path` (same device and inode).
fn runs(pid: u32, path: &Path) -> bool {
    match (std::fs::metadata(format!("/proc/{pid}/exe")), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
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

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs the halo CLI (the one cargo built), inside `ns` when given.
fn halo(ns: Option<&str>, args: &[&str]) -> Output {
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_halo")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_halo")),
    };
    command.args(args).stdin(Stdio::null()).output().expect("run halo")
}

/// `halo status --json`, parsed.
fn status(ns: Option<&str>, config: &Path) -> serde_json::Value {
    let out = halo(ns, &["status", "--json", "-c", &config.to_string_lossy()]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", text(&out)))
}

fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Every generation of the daemon, killed by PID when dropped (a new generation is a child of
/// the one it replaced, not of the test).
struct Generations {
    first: Child,
    pid_file: PathBuf,
    seen: Vec<u32>,
    log: PathBuf,
}

impl Generations {
    /// The pid the pid file names now, remembered for the cleanup.
    fn current(&mut self) -> Option<u32> {
        let pid = read_pid(&self.pid_file)?;
        if !self.seen.contains(&pid) {
            self.seen.push(pid);
        }
        Some(pid)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Generations {
    fn drop(&mut self) {
        // The generation the pid file names last may not have been asked for yet.
        self.current();
        if let Ok(None) = self.first.try_wait()
            && let Err(e) = self.first.kill()
        {
            eprintln!("warning: could not end halo {}: {e}", self.first.id());
        }
        if let Err(e) = self.first.wait() {
            eprintln!("warning: could not reap halo {}: {e}", self.first.id());
        }
        for pid in &self.seen {
            if alive(*pid) {
                let killed = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                eprintln!("note: ended halo generation {pid}: {killed:?}");
            }
        }
    }
}

/// Starts `installed` as the daemon (inside `ns` when given) with `env` added.
fn start(installed: &Path, ns: Option<&str>, config: &Path, pid_file: &Path, log: &Path, env: &[(&str, &str)]) -> Generations {
    let out = std::fs::File::create(log).expect("log");
    let err = out.try_clone().expect("log");
    let args = ["run", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()].map(|s| s.to_string());
    let mut command = match ns {
        // `ip netns exec` execs the program: the child's PID is the daemon's own.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(installed);
            c
        }
        None => Command::new(installed),
    };
    command.args(&args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (key, value) in env {
        command.env(key, value);
    }
    let first = command.spawn().expect("spawn halo");
    let mut generations = Generations { first, pid_file: pid_file.to_path_buf(), seen: Vec::new(), log: log.to_path_buf() };
    assert!(wait_until(Duration::from_secs(10), || generations.current().is_some()), "no pid file:\n{}", generations.log());
    generations
}

/// An echo server on loopback that greets each connection with `tag` and a newline.
fn greeting_echo(tag: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                if stream.write_all(format!("{tag}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

fn loopback_config(front: SocketAddr, status: SocketAddr, server: SocketAddr) -> String {
    format!(
        "[status]\nlisten = \"{status}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\nfirst_byte_timeout = \"0s\"\n\n[[backend]]\nname = \"api\"\ndrain_timeout = \"30s\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\n[[backend.server]]\nname = \"s1\"\naddress = \"{server}\"\n"
    )
}

/// A daemon on loopback: an installed copy of the binary, a frontend to a greeting echo server,
/// its status endpoint, its files in a directory of its own.
struct Loopback {
    dir: tempfile::TempDir,
    installed: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
    front: SocketAddr,
}

impl Loopback {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let installed = install(dir.path());
        let (front, status_at, server) = (free_port(), free_port(), greeting_echo("api"));
        let config = dir.path().join("halo.toml");
        std::fs::write(&config, loopback_config(front, status_at, server)).expect("config");
        let pid_file = dir.path().join("halo.pid");
        Self { dir, installed, config, pid_file, front }
    }

    /// Starts the daemon with `env` added.
    fn start(&self, env: &[(&str, &str)]) -> Generations {
        start(&self.installed, None, &self.config, &self.pid_file, &self.dir.path().join("halo.log"), env)
    }
}

/// A stream through the balancer: greeted, then echoing.
struct Stream(TcpStream);

impl Stream {
    fn open(front: SocketAddr) -> std::io::Result<Self> {
        let mut s = TcpStream::connect(front)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut greeting = [0u8; 4];
        s.read_exact(&mut greeting)?;
        Ok(Self(s))
    }

    fn echoes(&mut self) -> bool {
        let mut byte = [0u8; 1];
        self.0.write_all(b"z").and_then(|()| self.0.read_exact(&mut byte)).is_ok() && byte == *b"z"
    }
}

/// A NOTIFY_SOCKET that records each notification with the pid of its sender.
struct NotifySocket {
    path: PathBuf,
    seen: Arc<std::sync::Mutex<Vec<(u32, String)>>>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> Self {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
        use std::os::fd::AsRawFd;
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        setsockopt(&socket, sockopt::PassCred, &true).expect("SO_PASSCRED");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        std::thread::spawn(move || {
            loop {
                let mut buffer = [0u8; 4096];
                let mut control = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
                let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
                let Ok(message) = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::empty()) else { return };
                let bytes = message.bytes;
                let pid = message.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| if let ControlMessageOwned::ScmCredentials(cred) = m { Some(cred.pid() as u32) } else { None })
                });
                let text = String::from_utf8_lossy(&buffer[..bytes]).to_string();
                recorded.lock().expect("lock").push((pid.unwrap_or(0), text));
            }
        });
        Self { path, seen }
    }

    fn seen(&self) -> Vec<(u32, String)> {
        self.seen.lock().expect("lock").clone()
    }

    fn has(&self, pid: u32, what: &str) -> bool {
        self.seen().iter().any(|(p, t)| *p == pid && t.contains(what))
    }
}

#[test]
fn an_upgrade_on_loopback_keeps_streams_and_tells_systemd_from_the_main_process() {
    let setup = Loopback::new();
    let (Loopback { dir, installed, config, pid_file, .. }, front) = (&setup, setup.front);
    let notify = NotifySocket::bind(dir.path().join("notify"));
    let notify_path = notify.path.to_string_lossy().to_string();
    // A status socket too: `halo server` sends its command there (over TCP it needs a token).
    let text_now = std::fs::read_to_string(config).expect("config");
    let socket = format!("[status]\nsocket = \"{}\"\n", dir.path().join("status.sock").display());
    // The streams go over in the kernel data path when this host has it (said, though the default).
    let text_now = format!("[balancer]\nforwarding = \"auto\"\n\n{}", text_now.replacen("[status]\n", &socket, 1));
    std::fs::write(config, text_now).expect("config");
    let mut daemon = setup.start(&[("NOTIFY_SOCKET", &notify_path)]);
    let first = daemon.current().expect("pid");
    assert!(wait_until(Duration::from_secs(10), || Stream::open(front).is_ok()), "{}", daemon.log());
    assert!(wait_until(Duration::from_secs(5), || notify.has(first, "READY=1")), "{:?}", notify.seen());
    let mut streams: Vec<Stream> = (0..10).map(|_| Stream::open(front).expect("stream")).collect();
    assert!(streams.iter_mut().all(Stream::echoes));
    // As root the streams join the kernel data path once they have lived `kernel_after` (1 s).
    let root = nix::unistd::geteuid().is_root();
    let joined = || status(None, config)["frontends"][0]["kernel_forwarded"].as_u64().unwrap_or(0) >= 10;
    assert!(!root || wait_until(Duration::from_secs(10), joined), "the streams never joined the kernel path:\n{}", daemon.log());
    assert!(streams.iter_mut().all(Stream::echoes), "a stream broke as it joined the kernel path");
    // What an operator set at run time goes over with the upgrade.
    let weighed = halo(None, &["server", "weight", "api/s1", "7", "-c", &config.to_string_lossy()]);
    assert_eq!(weighed.status.code(), Some(0), "{}", text(&weighed));

    replace(installed, second_build());
    let upgraded = halo(None, &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);
    assert_eq!(upgraded.status.code(), Some(0), "{}\n{}", text(&upgraded), daemon.log());
    assert!(text(&upgraded).contains("took over"), "{}", text(&upgraded));
    let second = daemon.current().expect("pid");
    assert_ne!(second, first, "the pid file names the new process");
    assert!(runs(second, installed), "the new process runs the new file");
    assert!(!runs(first, installed), "the old one still runs the file it was started from");
    let now = status(None, config);
    assert_eq!(now["pid"], second);
    assert_eq!(now["frontends"][0]["servers"][0]["weight"], 7, "the run-time weight was lost in the upgrade");
    assert_eq!(now["generation"]["version"], format!("{}+upgrade-test", env!("CARGO_PKG_VERSION")));
    // As root the streams are in the kernel data path (`forwarding = "auto"`): the new process
    // took them over there, sockets still in the maps handed over.
    if root {
        let kernel = now["frontends"][0]["kernel_forwarded"].as_u64().unwrap_or(0);
        assert!(kernel >= 10, "the new process has {kernel} kernel-forwarded streams of 10:\n{}", daemon.log());
    }

    // systemd: the old main process named the new one and said nothing after it.
    assert!(notify.has(first, &format!("MAINPID={second}")), "{:?}", notify.seen());
    let seen = notify.seen();
    let handover = seen.iter().position(|(p, t)| *p == first && t.contains("MAINPID=")).expect("MAINPID");
    assert!(seen[handover].1.contains("READY=1"), "{:?}", seen[handover]);
    assert!(seen.iter().all(|(p, t)| *p != first || !t.contains("STOPPING")), "the old process never says STOPPING: {seen:?}");
    assert!(seen.iter().all(|(p, _)| *p == first || *p == second), "only the main process speaks: {seen:?}");

    // The streams were handed over with their sockets; new connections go to the new process.
    assert!(streams.iter_mut().all(Stream::echoes), "a stream was cut by the upgrade:\n{}", daemon.log());
    assert!(Stream::open(front).map(|mut s| s.echoes()).unwrap_or(false));
    assert!(Command::new("kill").args(["-HUP", &second.to_string()]).status().expect("kill").success());
    assert!(wait_until(Duration::from_secs(5), || notify.has(second, "RELOADING=1")), "{:?}", notify.seen());
    assert!(seen_after(&notify, second, "RELOADING=1", "READY=1"), "{:?}", notify.seen());
    assert!(notify.seen().iter().enumerate().all(|(i, (p, _))| *p != first || i <= handover), "{:?}", notify.seen());

    // Its streams handed over, the old process exits, and the status forgets it; they run on.
    assert!(wait_until(Duration::from_secs(15), || !alive(first)), "the old process did not exit after handing over:\n{}", daemon.log());
    assert!(streams.iter_mut().all(Stream::echoes), "a stream was cut when the old process exited:\n{}", daemon.log());
    drop(streams);
    assert!(wait_until(Duration::from_secs(5), || status(None, config)["generation"]["previous"].is_null()));
    assert!(daemon.log().contains("halo handed over and drained"), "{}", daemon.log());
    assert!(Command::new("kill").args(["-TERM", &second.to_string()]).status().expect("kill").success());
    assert!(wait_until(Duration::from_secs(10), || !alive(second)), "{}", daemon.log());
    assert!(notify.has(second, "STOPPING=1"), "{:?}", notify.seen());
}

/// Sends `len` bytes of a pattern (seeded by `seed`) through an echoing stream while reading
/// them back; whether every byte came back, in order.
fn exchange(stream: &TcpStream, len: usize, seed: u8) -> bool {
    let sent: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    let Ok(mut writer) = stream.try_clone() else { return false };
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || writer.write_all(&to_send).is_ok());
    let mut back = vec![0u8; len];
    let mut reader = stream;
    let read = reader.read_exact(&mut back).is_ok();
    writing.join().unwrap_or(false) && read && back == sent
}

/// A stream open across an upgrade is handed over with both its sockets: the old process exits
/// long before its `drain_timeout` (30 s) would have cut it, and the stream carries a megabyte
/// each way, byte-exact, 42 s and 5 minutes after the upgrade. (The old process used to keep
/// every established stream and cut it when its drain ended: Kubernetes watches, `logs -f` and
/// `exec` were reset by every upgrade.)
#[test]
fn a_stream_open_across_an_upgrade_carries_data_42_s_and_5_min_later() {
    let setup = Loopback::new();
    let (Loopback { installed, config, pid_file, .. }, front) = (&setup, setup.front);
    let mut daemon = setup.start(&[]);
    let first = daemon.current().expect("pid");
    assert!(wait_until(Duration::from_secs(10), || Stream::open(front).is_ok()), "{}", daemon.log());
    let stream = Stream::open(front).expect("stream").0;
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert!(exchange(&stream, 1 << 20, 1), "the stream does not echo before the upgrade");

    replace(installed, second_build());
    let upgraded = halo(None, &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);
    let at = Instant::now();
    assert_eq!(upgraded.status.code(), Some(0), "{}\n{}", text(&upgraded), daemon.log());
    let second = daemon.current().expect("pid");
    assert_ne!(second, first);
    assert!(wait_until(Duration::from_secs(20), || !alive(first)), "the old process kept the stream to drain it:\n{}", daemon.log());
    eprintln!("the old process exited {:?} after the upgrade", at.elapsed());
    for (later, seed) in [(Duration::from_secs(42), 2), (Duration::from_secs(300), 3)] {
        std::thread::sleep(later.saturating_sub(at.elapsed()));
        assert!(exchange(&stream, 1 << 20, seed), "{later:?} after the upgrade, the stream lost bytes or was cut:\n{}", daemon.log());
        eprintln!("{later:?} after the upgrade: a megabyte each way, byte-exact");
    }
    assert!(daemon.log().contains("established connections handed over"), "{}", daemon.log());
}

/// Whether `pid` said `second` after it said `first`.
fn seen_after(notify: &NotifySocket, pid: u32, first: &str, second: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        let seen = notify.seen();
        let at = seen.iter().position(|(p, t)| *p == pid && t.contains(first));
        at.is_some_and(|at| seen[at + 1..].iter().any(|(p, t)| *p == pid && t.contains(second)))
    })
}

#[test]
fn an_upgrade_that_cannot_start_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let installed = install(dir.path());
    let (front, status_at, server) = (free_port(), free_port(), greeting_echo("api"));
    let config = dir.path().join("halo.toml");
    let good = loopback_config(front, status_at, server);
    std::fs::write(&config, &good).expect("config");
    // `halo status` reads the endpoint's address from a file: one that stays valid.
    let endpoint = dir.path().join("endpoint.toml");
    std::fs::write(&endpoint, &good).expect("config");
    let pid_file = dir.path().join("halo.pid");
    let mut daemon = start(&installed, None, &config, &pid_file, &dir.path().join("halo.log"), &[]);
    let pid = daemon.current().expect("pid");
    assert!(wait_until(Duration::from_secs(10), || Stream::open(front).is_ok()), "{}", daemon.log());
    let mut stream = Stream::open(front).expect("stream");
    let upgrade = || halo(None, &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);

    // A new binary that fails: the daemon says why and runs on; `halo upgrade` exits 1.
    replace(&installed, BROKEN);
    let failed = upgrade();
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(text(&failed).contains("no upgrade; halo (pid") && text(&failed).contains("exit status: 1"), "{}", text(&failed));
    assert_eq!(daemon.current(), Some(pid));
    assert!(stream.echoes() && Stream::open(front).is_ok(), "{}", daemon.log());
    assert_eq!(status(None, &endpoint)["last_upgrade"]["handed_over"], false);

    // A file with errors: `halo upgrade` sends nothing (exit 1) ...
    replace(&installed, second_build());
    std::fs::write(&config, format!("{good}bogus = 1\n")).expect("config");
    let refused = upgrade();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(!text(&refused).contains("asked halo"), "nothing is signalled: {}", text(&refused));
    // ... and sent anyway (SIGUSR2), the new process refuses it, with the file's errors.
    let asked = Instant::now();
    assert!(Command::new("kill").args(["-USR2", &pid.to_string()]).status().expect("kill").success());
    let reason = || status(None, &endpoint)["last_upgrade"]["message"].as_str().unwrap_or("").to_string();
    assert!(wait_until(Duration::from_secs(10), || reason().contains("unknown field `bogus`")), "{}\n{}", reason(), daemon.log());
    eprintln!("refused after {:?}: {}", asked.elapsed(), reason());
    assert_eq!(daemon.current(), Some(pid), "the pid file still names the running daemon");
    assert!(stream.echoes() && Stream::open(front).is_ok(), "still serving:\n{}", daemon.log());
    assert!(!daemon.log().contains("took over"), "{}", daemon.log());

    // The file mended, the same binary takes over.
    std::fs::write(&config, &good).expect("config");
    let upgraded = upgrade();
    assert_eq!(upgraded.status.code(), Some(0), "{}\n{}", text(&upgraded), daemon.log());
    assert!(stream.echoes(), "the stream survives all three");
}

// ---------------------------------------------------------------------------------------------
// In network namespaces: halo master, keepalived or halo peer, API servers, a client.

use lan::client_load::{connector, streams};
use lan::ns_server::GreetingServer;
use lan::*;

const VIP: &str = "192.0.2.170";

fn lan_config(status: &str, priority: u8) -> String {
    let mut text = format!(
        "[status]\nlisten = \"{status}\"\n\n[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{VIP}/24\"]\n\n[[frontend]]\nname = \"api\"\nbind = [\"{VIP}:6443\"]\nbackend = \"api\"\nfirst_byte_timeout = \"0s\"\n\n[[backend]]\nname = \"api\"\ndrain_timeout = \"30s\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"500ms\"\n"
    );
    for i in 0..3 {
        text.push_str(&format!("[[backend.server]]\nname = \"api{}\"\naddress = \"192.0.2.{}:6443\"\n", i + 1, 13 + i));
    }
    text
}

/// tshark on the switch, writing (time, source, priority) of every VRRP packet; ended by PID.
struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    fn start(lan: &Lan) -> Self {
        let out = lan.dir.path().join("adverts.tsv");
        let file = std::fs::File::create(&out).expect("capture file");
        let child = Command::new("ip")
            .args(["netns", "exec", &lan.switch.name, "tshark", "-i", "br0", "-f", "ip proto 112", "-l", "-n", "-a", "duration:120"])
            .args(["-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "vrrp.prio"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("tshark");
        let capture = Self { child, out };
        assert!(wait_until(Duration::from_secs(15), || capture.rows().len() > 5), "tshark captured nothing");
        capture
    }

    fn rows(&self) -> Vec<(f64, String, u8)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Some((f.first()?.parse().ok()?, f.get(1)?.to_string(), f.get(2)?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
            eprintln!("warning: could not end tshark {}: {e}", self.child.id());
        }
    }
}

#[test]
fn an_upgrade_of_the_master_is_invisible_to_clients_and_to_the_backup() {
    if skip("an_upgrade_of_the_master_is_invisible_to_clients_and_to_the_backup") {
        return;
    }
    // Hosts: 0 halo (master), 1 the peer, 2-4 API servers, 5 the client.
    let lan = Lan::new(6);
    let _apis: Vec<GreetingServer> = (0..3)
        .map(|i| {
            GreetingServer::start(
                lan.host(2 + i),
                &format!("192.0.2.{}:6443", 13 + i),
                |_, tag| tag.to_string(),
                ["api1", "api2", "api3"][i],
            )
        })
        .collect();
    let installed = install(lan.dir.path());
    let config = lan.file("halo.toml", &lan_config("127.0.0.1:9090", 200));
    let pid_file = lan.dir.path().join("halo.pid");
    let ns = lan.host(0).to_string();
    let mut daemon = start(&installed, Some(&ns), &config, &pid_file, &lan.dir.path().join("halo.log"), &[]);
    // The backup joins a master that is one already: the test is about the upgrade, not the
    // first election (halo's start loads the kernel data path before its instances start).
    assert!(wait_until(GENEROUS, || lan.holds(0, VIP)), "halo never took the VIP:\n{}", daemon.log());
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", &format!("{VIP}/24"), ""));
    let target: SocketAddr = format!("{VIP}:6443").parse().expect("address");
    let client = lan.host(5).to_string();
    // Through the VIP before any load: every server up, and the balancer serves.
    let servers_up = || {
        let now = status(Some(&ns), &config);
        now["frontends"][0]["servers"].as_array().is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["healthy"] == true))
    };
    assert!(wait_until(GENEROUS, servers_up), "the API servers never came up:\n{}", daemon.log());
    let (probe, probe_done) = connector(&client, target, Duration::from_millis(20), 50, Arc::new(AtomicBool::new(false)));
    probe_done.join().expect("probe");
    assert_eq!(probe.failed.load(Ordering::Relaxed), 0, "the VIP does not serve before the upgrade: {probe:?}\n{}", daemon.log());
    let first = daemon.current().expect("pid");
    let capture = Capture::start(&lan);

    // The load, the VIP sampler, then the upgrade to the second build in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let (connects, connecting) = connector(&client, target, Duration::from_millis(10), 3_000, Arc::clone(&stop));
    let stop_streams = Arc::new(AtomicBool::new(false));
    let (held, holding) = streams(&client, target, 50, Duration::from_millis(100), Duration::from_secs(60), Arc::clone(&stop_streams));
    let samples = Arc::new((std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)));
    let sampling = {
        let (samples, stop, host) = (Arc::clone(&samples), Arc::clone(&stop), lan.host(0).to_string());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let out = run("ip", &["-n", &host, "-o", "addr", "show", "dev", "eth0"]);
                let holds = String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w.split('/').next() == Some(VIP));
                samples.0.fetch_add(1, Ordering::Relaxed);
                if !holds {
                    samples.1.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    replace(&installed, second_build());
    let upgraded = halo(Some(&ns), &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);
    assert_eq!(upgraded.status.code(), Some(0), "{}\n{}", text(&upgraded), daemon.log());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    connecting.join().expect("connector");
    sampling.join().expect("sampler");
    // The streams are checked alive (well before drain_timeout), then closed.
    std::thread::sleep(Duration::from_millis(300));
    stop_streams.store(true, Ordering::Relaxed);
    for h in holding {
        h.join().expect("stream");
    }
    let second = daemon.current().expect("pid");
    let adverts = capture.rows();
    drop(capture);

    let (ok, failed) = (connects.ok.load(Ordering::Relaxed), connects.failed.load(Ordering::Relaxed));
    eprintln!(
        "connects: {ok} ok, {failed} failed; streams: {} alive, {} echoes",
        held.alive.load(Ordering::Relaxed),
        held.echoed.load(Ordering::Relaxed)
    );
    assert!(ok > 300, "the client ran: {ok}");
    assert_eq!(failed, 0, "failed connects: {:?}\n{}", connects.failures.lock().expect("lock"), daemon.log());
    assert_eq!(held.alive.load(Ordering::Relaxed), 50, "cut streams: {:?}\n{}", held.cut.lock().expect("lock"), daemon.log());
    let (sampled, missing) = (samples.0.load(Ordering::Relaxed), samples.1.load(Ordering::Relaxed));
    assert!(sampled > 100, "the VIP was sampled: {sampled}");
    assert_eq!(missing, 0, "the VIP was missing from the master in {missing} of {sampled} samples");
    // The process that answers is the second build, from the new file.
    assert_ne!(second, first);
    assert!(runs(second, &installed), "pid {second} runs the new file");
    assert_eq!(status(Some(&ns), &config)["generation"]["version"], format!("{}+upgrade-test", env!("CARGO_PKG_VERSION")));
    assert_eq!(status(Some(&ns), &config)["vrrp"]["VI_1"]["state"], "MASTER");
    // The backup never became master: its log, the VIP never on it, no advert of its own.
    assert!(!keepalived.log().contains("Entering MASTER STATE"), "{}", keepalived.log());
    assert!(!lan.holds(1, VIP));
    assert!(adverts.iter().all(|(_, source, _)| source == "192.0.2.11"), "an advert from another router: {adverts:?}");
    assert!(adverts.iter().all(|(_, _, priority)| *priority == 200), "priority 0 or another priority: {adverts:?}");
    // One and a half intervals: a missed advert makes a gap of two; scheduling jitter on a busy
    // machine stays far below half an interval. (A backup waits three intervals and a skew.)
    let gaps: Vec<f64> = adverts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let longest = gaps.iter().copied().fold(0.0, f64::max);
    eprintln!("{} adverts captured, longest gap {:.1} ms", adverts.len(), longest * 1000.0);
    assert!(adverts.len() > 50, "{adverts:?}");
    assert!(longest < 0.150, "a gap of {:.1} ms between the master's adverts", longest * 1000.0);
    // With its streams closed the old process drains and exits.
    assert!(wait_until(GENEROUS, || !alive(first)), "the old process did not exit:\n{}", daemon.log());

    // A new binary that fails to start: the running daemon still serves, still master.
    replace(&installed, BROKEN);
    let failed_upgrade = halo(Some(&ns), &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);
    assert_eq!(failed_upgrade.status.code(), Some(1), "{}", text(&failed_upgrade));
    assert_eq!(daemon.current(), Some(second));
    let (after, done) = connector(&client, target, Duration::from_millis(20), 50, Arc::new(AtomicBool::new(false)));
    done.join().expect("connector");
    assert_eq!(after.failed.load(Ordering::Relaxed), 0, "{:?}\n{}", after.failures.lock().expect("lock"), daemon.log());
    assert!(lan.holds(0, VIP) && !lan.holds(1, VIP));
    assert!(!keepalived.log().contains("Entering MASTER STATE"), "{}", keepalived.log());

    // Upgrades while the peer fails over: a halo peer of higher priority preempts, and later
    // stops (priority 0, halo takes the VIP back), each while halo upgrades again.
    drop(keepalived);
    replace(&installed, second_build());
    let peer_config = lan_config("127.0.0.1:9091", 250);
    let upgrade_during = |what: &str, daemon: &mut Generations| {
        for _ in 0..3 {
            let started = Instant::now();
            let out = halo(
                Some(&ns),
                &["upgrade", "--timeout", "30", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()],
            );
            assert_eq!(out.status.code(), Some(0), "upgrade {what}: {}\n{}", text(&out), daemon.log());
            eprintln!("upgrade {what}: {:?}", started.elapsed());
            daemon.current();
            std::thread::sleep(Duration::from_millis(150));
        }
    };
    let peer = Daemon::halo(&lan, 1, "peer", &peer_config);
    upgrade_during("while the peer preempts", &mut daemon);
    assert!(wait_until(GENEROUS, || lan.holds(1, VIP)), "the peer never took the VIP:\n{}", peer.log());
    assert!(wait_until(GENEROUS, || !lan.holds(0, VIP)), "two holders:\n{}", daemon.log());
    assert!(wait_until(GENEROUS, || status(Some(&ns), &config)["vrrp"]["VI_1"]["state"] == "BACKUP"), "{}", daemon.log());
    peer.signal("TERM");
    upgrade_during("while the peer hands back", &mut daemon);
    assert!(wait_until(GENEROUS, || lan.holds(0, VIP)), "halo did not take the VIP back:\n{}", daemon.log());
    assert!(wait_until(GENEROUS, || status(Some(&ns), &config)["vrrp"]["VI_1"]["state"] == "MASTER"), "{}", daemon.log());
    assert!(!lan.holds(1, VIP));
    let (last, done) = connector(&client, target, Duration::from_millis(20), 50, Arc::new(AtomicBool::new(false)));
    done.join().expect("connector");
    assert_eq!(last.failed.load(Ordering::Relaxed), 0, "{:?}\n{}", last.failures.lock().expect("lock"), daemon.log());
    drop(peer);

    // The guard's duty moved with each upgrade: the earlier generations' guards removed nothing,
    // and when the last generation is SIGKILLed, its own guard removes the VIP.
    assert!(!daemon.log().contains("halo-guard: halo ended holding"), "an old guard removed a VIP:\n{}", daemon.log());
    let last_pid = daemon.current().expect("pid");
    assert!(Command::new("kill").args(["-KILL", &last_pid.to_string()]).status().expect("kill").success());
    assert!(wait_until(GENEROUS, || !alive(last_pid)), "{}", daemon.log());
    assert!(wait_until(GENEROUS, || !lan.holds(0, VIP)), "the VIP stayed after a SIGKILL:\n{}", daemon.log());
    let removed = format!("halo-guard: halo ended holding {VIP}");
    assert!(wait_until(GENEROUS, || daemon.log().contains(&removed)), "the last generation's guard did not act:\n{}", daemon.log());
}

/// halo master (from an installed copy, the new process told to kill itself at `step`) and
/// keepalived backup, the VIP on halo; then the installed binary is replaced by the second build.
struct KilledAt {
    lan: Lan,
    config: PathBuf,
    pid_file: PathBuf,
    ns: String,
    daemon: Generations,
    keepalived: Daemon,
    first: u32,
}

impl KilledAt {
    fn start(step: &str) -> Self {
        let lan = Lan::new(2);
        let installed = install(lan.dir.path());
        let config = lan.file("halo.toml", &lan_config("127.0.0.1:9090", 200));
        let pid_file = lan.dir.path().join("halo.pid");
        let ns = lan.host(0).to_string();
        // Inherited by the new process, which kills itself at that step; the first one ignores it.
        let env = [("HALO_TEST_UPGRADE_KILLED_AT", step)];
        let mut daemon = start(&installed, Some(&ns), &config, &pid_file, &lan.dir.path().join("halo.log"), &env);
        // keepalived joins once halo is master: what is checked is the upgrade, not who wins an
        // election when both start at once (halo's start now loads the kernel data path first).
        assert!(wait_until(GENEROUS, || lan.holds(0, VIP)), "halo never took the VIP:\n{}", daemon.log());
        let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", &format!("{VIP}/24"), ""));
        let first = daemon.current().expect("pid");
        replace(&installed, second_build());
        Self { lan, config, pid_file, ns, daemon, keepalived, first }
    }

    /// `halo upgrade` of it.
    fn upgrade(&self) -> Output {
        halo(Some(&self.ns), &["upgrade", "-c", &self.config.to_string_lossy(), "--pid-file", &self.pid_file.to_string_lossy()])
    }
}

/// A new process killed (SIGKILL, no cleanup) at `step` of the handover, with halo master and
/// keepalived backup: the old daemon resumes as master, the VIP is on it at every sample, no
/// priority-0 advert goes out, keepalived never becomes master, no guard removes anything.
fn a_new_process_killed_at(step: &str) {
    let KilledAt { lan, config, pid_file, ns, mut daemon, keepalived, first } = KilledAt::start(step);
    let capture = Capture::start(&lan);
    let stop = Arc::new(AtomicBool::new(false));
    let missing = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = {
        let (missing, stop, host) = (Arc::clone(&missing), Arc::clone(&stop), ns.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut sampled = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let out = run("ip", &["-n", &host, "-o", "addr", "show", "dev", "eth0"]);
                if !String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w.split('/').next() == Some(VIP)) {
                    missing.fetch_add(1, Ordering::Relaxed);
                }
                sampled += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            sampled
        })
    };
    let upgraded = halo(Some(&ns), &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);
    assert_eq!(upgraded.status.code(), Some(1), "killed at {step}: {}\n{}", text(&upgraded), daemon.log());
    // Long enough for a backup to take over after a priority 0 (its skew time) or a silence.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let sampled = sampling.join().expect("sampler");
    let adverts = capture.rows();
    drop(capture);
    assert_eq!(daemon.current(), Some(first), "killed at {step}: the old daemon runs on");
    assert!(alive(first));
    assert_eq!(status(Some(&ns), &config)["vrrp"]["VI_1"]["state"], "MASTER", "killed at {step}");
    let missing = missing.load(Ordering::Relaxed);
    assert!(sampled > 50, "the VIP was sampled: {sampled}");
    assert_eq!(missing, 0, "killed at {step}: the VIP was missing in {missing} of {sampled} samples:\n{}", daemon.log());
    assert!(!daemon.log().contains("halo-guard: halo ended holding"), "killed at {step}: a guard removed the VIP:\n{}", daemon.log());
    assert!(adverts.iter().all(|(_, _, priority)| *priority == 200), "killed at {step}: priority 0 or another: {adverts:?}");
    assert!(!keepalived.log().contains("Entering MASTER STATE"), "killed at {step}: {}", keepalived.log());
    assert!(!lan.holds(1, VIP));
}

#[test]
fn a_new_process_killed_before_or_after_it_adopted_changes_nothing_on_the_wire() {
    let test = "a_new_process_killed_before_or_after_it_adopted_changes_nothing_on_the_wire";
    if skip(test) || !has_test_hooks(test) {
        return;
    }
    for step in ["offered", "adopted"] {
        a_new_process_killed_at(step);
    }
}

/// A new process killed (SIGKILL) at `step`, after it committed and before it said it serves,
/// with halo master and keepalived backup: the old daemon does not exit but resumes (the pid file
/// names it, it is master with the VIP again, keepalived does not keep it), and `halo upgrade`
/// says what happened: the new process died after it took over, the old one resumed. (It used to
/// drain and exit: no halo ran on the node, and `halo upgrade` said the daemon "refused the
/// upgrade and runs on as it was".)
fn a_new_process_killed_after_the_commit_at(step: &str) {
    let killed = KilledAt::start(step);
    let upgraded = killed.upgrade();
    let KilledAt { lan, config, ns, mut daemon, keepalived, first, .. } = killed;
    let said = text(&upgraded);
    eprintln!("killed at {step}: halo upgrade said: {said}");
    assert_eq!(upgraded.status.code(), Some(1), "killed at {step}: {said}\n{}", daemon.log());
    assert!(said.contains("resumed") && !said.contains("as it was"), "killed at {step}: halo upgrade said: {said}");
    // Longer than the old daemon's drain would have lasted with no connection open.
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(first), "killed at {step}: the old daemon exited:\n{}", daemon.log());
    assert_eq!(daemon.current(), Some(first), "killed at {step}: the pid file names the old daemon");
    let resumed = || status(Some(&ns), &config)["vrrp"]["VI_1"]["state"] == "MASTER" && lan.holds(0, VIP) && !lan.holds(1, VIP);
    assert!(
        wait_until(GENEROUS, resumed),
        "killed at {step}: the old daemon is not master again:\n{}\n---\n{}",
        daemon.log(),
        keepalived.log()
    );
    let last = &status(Some(&ns), &config)["last_upgrade"];
    assert_eq!(last["handed_over"], false, "killed at {step}: {last}");
}

#[test]
fn a_new_process_killed_after_it_committed_leaves_the_old_one_serving() {
    let test = "a_new_process_killed_after_it_committed_leaves_the_old_one_serving";
    if skip(test) || !has_test_hooks(test) {
        return;
    }
    for step in ["committed", "released"] {
        a_new_process_killed_after_the_commit_at(step);
    }
}

#[test]
fn a_new_process_that_commits_too_late_leaves_the_running_daemon_and_its_pid_file_as_they_were() {
    if !has_test_hooks("a_new_process_that_commits_too_late_leaves_the_running_daemon_and_its_pid_file_as_they_were") {
        return;
    }
    let setup = Loopback::new();
    let (Loopback { config, pid_file, .. }, front) = (&setup, setup.front);
    // Inherited by the new process: it adopts, then waits longer than the running daemon does.
    let mut daemon = setup.start(&[("HALO_TEST_UPGRADE_STALLED_AT", "adopted")]);
    let first = daemon.current().expect("pid");
    assert!(wait_until(Duration::from_secs(10), || Stream::open(front).is_ok()), "{}", daemon.log());
    let upgraded = halo(None, &["upgrade", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()]);
    assert_eq!(upgraded.status.code(), Some(1), "{}\n{}", text(&upgraded), daemon.log());
    // The late process is told the upgrade was abandoned (or killed) and ends; the pid file names
    // the running daemon again, which serves on alone.
    let late = || {
        std::fs::read_dir("/proc").expect("/proc").filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|p| {
            *p != first
                && alive(*p)
                // This test's own: another test's upgraded daemon runs with the same flag.
                && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("--upgrade-handover") && c.contains(&*config.to_string_lossy()))
        })
    };
    assert!(wait_until(Duration::from_secs(15), || late().is_none()), "the late process runs on:\n{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_pid(pid_file), Some(first), "the pid file names the running daemon:\n{}", daemon.log());
    assert!(alive(first) && Stream::open(front).is_ok_and(|mut s| s.echoes()), "{}", daemon.log());
    assert!(!daemon.log().contains("halo running (upgraded)"), "the late process served as a second daemon:\n{}", daemon.log());
}
