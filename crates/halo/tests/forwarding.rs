//! `[balancer] forwarding` of the real binary on loopback: `auto` without the capabilities BPF
//! needs (dropped with setpriv) serves in user space and says so once; `kernel` without them
//! refuses to start (non-zero, the reason given, no pid file left); `kernel` as root serves and
//! the connection log counts the bytes each way. Each daemon is ended by its PID.

mod loopback;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopback::{Daemon, NamedServer, free, wait_for};

/// The capabilities the kernel data path needs, one of which at least loading it takes.
const BPF_CAPABILITIES: [(&str, u32); 4] = [("net_admin", 12), ("sys_admin", 21), ("perfmon", 38), ("bpf", 39)];

/// setpriv's arguments that take those capabilities away from root (the bounding set is what
/// root's next program is permitted; nothing inherited or ambient brings them back).
const WITHOUT_BPF: [&str; 3] = ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin,-net_admin"];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a test that needs root can run here; says why not (outside CI only).
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: must run as root under CI");
    eprintln!("SKIP {test}: not root (kernel forwarding needs CAP_BPF)");
    false
}

/// A config of one frontend in front of `server` with `forwarding`, the connection log on, in
/// JSON to standard error; the frontend's address.
fn config(dir: &Path, forwarding: &str, server: SocketAddr) -> (PathBuf, SocketAddr) {
    let (status, front) = (free(), free());
    let text = format!(
        "[status]\nlisten = \"{status}\"\n\n[balancer]\nforwarding = \"{forwarding}\"\nkernel_after = \"0s\"\n\n\
         [log]\nformat = \"json\"\nconnections = true\ntarget = \"stderr\"\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\nretries = 0\nredispatch = false\n[backend.health]\nkind = \"none\"\n\n\
         [[backend.server]]\nname = \"m1\"\naddress = \"{server}\"\n"
    );
    let file = dir.join("halo.toml");
    std::fs::write(&file, text).expect("config");
    (file, front)
}

/// `halo run` with the config and pid file of `dir`, its output in `dir`/halo.log, without the
/// BPF capabilities when `without_bpf` (a process that is not root has none to drop), the
/// environment `env` added.
fn start(dir: &Path, config: &Path, without_bpf: bool, env: &[(&str, &str)]) -> Daemon {
    let log = dir.join("halo.log");
    let out = std::fs::File::create(&log).expect("log");
    let halo = env!("CARGO_BIN_EXE_halo");
    let mut command = if without_bpf && is_root() {
        let mut command = Command::new("setpriv");
        command.args(WITHOUT_BPF).arg(halo);
        command
    } else {
        Command::new(halo)
    };
    let pid_file = dir.join("halo.pid");
    let child = command
        .args(["run", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn halo");
    Daemon { child, log }
}

/// The effective capabilities a /proc/PID/status shows, as a bit set.
fn effective_capabilities(status: &str) -> u64 {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("a CapEff line");
    u64::from_str_radix(line.trim(), 16).expect("hex")
}

/// Fails unless `status` (a /proc/PID/status) shows none of the BPF capabilities.
fn assert_without_bpf(status: &str, what: &str) {
    let effective = effective_capabilities(status);
    for (name, bit) in BPF_CAPABILITIES {
        assert!(effective & (1 << bit) == 0, "{what} still has CAP_{} (CapEff {effective:x})", name.to_uppercase());
    }
}

/// Waits (15 s at most) for the daemon's "halo running".
fn until_running(daemon: &Daemon) {
    assert!(wait_for(Duration::from_secs(15), || daemon.log().contains("halo running")), "halo never started:\n{}", daemon.log());
}

/// The connection log's JSON lines.
fn connection_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "connection" && v["fields"]["message"] == "connection")
        .collect()
}

/// A line through the frontend to a [`NamedServer`] called m1, and its answer.
fn ask(front: SocketAddr, line: &str) -> String {
    let mut client = TcpStream::connect(front).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    client.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut answer = String::new();
    BufReader::new(client).read_line(&mut answer).expect("an answer within 5 s");
    answer
}

#[test]
fn auto_falls_back_to_user_space_without_cap_bpf_and_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let server = NamedServer::start("m1");
    let (config, front) = config(dir.path(), "auto", server.address);
    let daemon = start(dir.path(), &config, true, &[]);
    until_running(&daemon);
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).expect("the daemon's status");
    assert_without_bpf(&status, "halo under setpriv");
    for i in 0..3 {
        assert_eq!(ask(front, &format!("hello {i}")), format!("m1 hello {i}\n"), "{}", daemon.log());
    }
    // The three connections are logged: the fallback was said before, and once only.
    assert!(wait_for(Duration::from_secs(5), || connection_lines(&daemon.log()).len() == 3), "{}", daemon.log());
    let log = daemon.log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("relayed in user space")).collect();
    assert_eq!(said.len(), 1, "the fallback said once:\n{log}");
    assert!(said[0].contains("WARN") && said[0].contains("the kernel refused"), "the fallback gives its reason: {}", said[0]);
    assert!(!log.contains("forwarded in the kernel"), "{log}");
    for line in connection_lines(&log) {
        assert_eq!(line["fields"]["ended"], "closed", "{line}");
    }
}

#[test]
fn kernel_forwarding_refused_is_an_error_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let server = NamedServer::start("m1");
    let (config, _front) = config(dir.path(), "kernel", server.address);
    if is_root() {
        // What setpriv leaves to the program it runs: the premise of this test.
        let shown = Command::new("setpriv").args(WITHOUT_BPF).args(["cat", "/proc/self/status"]).output().expect("setpriv");
        assert!(shown.status.success(), "setpriv: {}", String::from_utf8_lossy(&shown.stderr));
        assert_without_bpf(&String::from_utf8_lossy(&shown.stdout), "a program under setpriv");
    }
    let mut daemon = start(dir.path(), &config, true, &[]);
    let started = Instant::now();
    let mut exited = None;
    while exited.is_none() && started.elapsed() < Duration::from_secs(15) {
        exited = daemon.child.try_wait().expect("wait");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    let status = exited.unwrap_or_else(|| panic!("halo still running 15 s on with forwarding = \"kernel\" refused:\n{log}"));
    assert!(!status.success(), "halo exited with {status}:\n{log}");
    assert!(log.contains("[balancer] forwarding") && log.contains("the kernel refused"), "the reason is not given:\n{log}");
    assert!(!dir.path().join("halo.pid").exists(), "a pid file remains after a failed start");
    eprintln!("halo exited with {status}: {}", log.lines().last().unwrap_or_default());
}

/// As root with `kernel`, room for one connection in the kernel's map (a test hook): two
/// connections at once are served, the second in user space ("the map is full", a debug line of
/// the balancer: so the first was in the kernel), and the connection log gives each the bytes
/// each way.
#[test]
fn kernel_forwarding_as_root_serves_and_logs_the_bytes_each_way() {
    const TEST: &str = "kernel_forwarding_as_root_serves_and_logs_the_bytes_each_way";
    const UP: usize = 300_007;
    const DOWN: usize = 2_000_003;
    if !root_or_skip(TEST) {
        return;
    }
    if !cfg!(feature = "test-hooks") {
        let why = "built without the test-hooks feature (scripts/test.sh builds with --features halo/test-hooks)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{TEST}: cannot run under CI: {why}");
        eprintln!("SKIP {TEST}: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    // Reads UP bytes, answers DOWN, closes after the client's end.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut request = vec![0u8; UP];
                if stream.read_exact(&mut request).is_ok() && request == pattern(1, UP) && stream.write_all(&pattern(2, DOWN)).is_ok() {
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            });
        }
    });
    let (config, front) = config(dir.path(), "kernel", server);
    let env = [("HALO_LOG", "info,halo_lb=debug"), ("HALO_TEST_KERNEL_SOCKETS", "2")];
    let daemon = start(dir.path(), &config, false, &env);
    until_running(&daemon);
    assert!(daemon.log().contains("forwarded in the kernel"), "kernel forwarding not on:\n{}", daemon.log());
    let exchange = || {
        let mut client = TcpStream::connect(front).expect("connect");
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        client.write_all(&pattern(1, UP)).expect("write");
        let mut answer = vec![0u8; DOWN];
        client.read_exact(&mut answer).expect("the answer within 10 s");
        assert!(answer == pattern(2, DOWN), "not the server's answer");
        client
    };
    let end = |mut client: TcpStream| {
        client.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("the server's end within 10 s");
        assert!(rest.is_empty(), "{} bytes after the answer", rest.len());
    };
    let first = exchange();
    let second = exchange();
    let ports = [&first, &second].map(|c| c.local_addr().expect("local").port());
    end(second);
    end(first);
    assert!(
        wait_for(Duration::from_secs(10), || connection_lines(&daemon.log()).len() == 2),
        "not two connection lines:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("stays in user space")).collect();
    assert!(
        refused.len() == 1 && refused[0].contains("map is full"),
        "the second connection refused by a full map (the first in it):\n{log}"
    );
    let lines = connection_lines(&log);
    for (port, which) in ports.iter().zip(["the first (in the kernel)", "the second (in user space)"]) {
        let line = lines
            .iter()
            .find(|l| l["fields"]["client"] == format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("no line of {which}:\n{log}"));
        let fields = &line["fields"];
        assert_eq!((fields["bytes_up"].as_u64(), fields["bytes_down"].as_u64()), (Some(UP as u64), Some(DOWN as u64)), "{which}: {line}");
        assert_eq!(fields["ended"], "closed", "{which}: {line}");
    }
}

/// `len` bytes of a pattern of its own for each `seed`, that repeats nowhere (splitmix64).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mix = |word: u64| {
        let mut z = word.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut bytes: Vec<u8> = (0..(len as u64).div_ceil(8)).flat_map(|word| mix((seed << 40) + word).to_le_bytes()).collect();
    bytes.truncate(len);
    bytes
}
