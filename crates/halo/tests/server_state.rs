//! Servers set at run time, as operators do with haproxy's runtime API: `halo server drain`,
//! `maint`, `ready` and `weight` against a running daemon on loopback — where new connections
//! go, that established ones run on, that MAINT stops the checks, what `/status` and `/metrics`
//! say, who the log names, what `halo reload` keeps and forgets, and what is refused with
//! nothing changed. Loopback only; the daemon is ended by its PID.

mod loopback;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

use loopback::{Daemon, NamedServer, free, get, wait_for};

/// A connection through the frontend: the server that answered its first line.
fn ask(front: SocketAddr) -> Option<(String, TcpStream)> {
    let mut stream = TcpStream::connect_timeout(&front, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(b"hello\n").ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    Some((line.split_whitespace().next()?.to_string(), stream))
}

fn who_answers(front: SocketAddr, times: usize) -> Vec<String> {
    let names: Vec<String> = (0..times).filter_map(|_| ask(front).map(|(name, _)| name)).collect();
    assert_eq!(names.len(), times, "connections through the frontend went unanswered: {names:?}");
    names
}

fn halo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_halo")).args(args).output().expect("halo")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn server_json(status: SocketAddr, token: &str, name: &str) -> serde_json::Value {
    let body = get(status, "/status", Some(token)).1;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["frontends"][0]["servers"].as_array().expect("servers").iter().find(|s| s["name"] == name).cloned().expect("server")
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    pid_file: PathBuf,
    status: SocketAddr,
    front: SocketAddr,
    token: String,
}

fn config_text(
    status: SocketAddr,
    token_file: Option<&Path>,
    socket: Option<&Path>,
    front: SocketAddr,
    servers: &[(&str, SocketAddr)],
) -> String {
    let mut text = format!("[status]\nlisten = \"{status}\"\n");
    if let Some(token) = token_file {
        text += &format!("token_file = \"{}\"\n", token.display());
    }
    if let Some(socket) = socket {
        text += &format!("socket = \"{}\"\n", socket.display());
    }
    text += &format!(
        "\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\n"
    );
    for (name, address) in servers {
        text += &format!("[[backend.server]]\nname = \"{name}\"\naddress = \"{address}\"\n");
    }
    text
}

fn start(servers: &[(&str, SocketAddr)], with_token: bool) -> (Setup, Daemon) {
    let dir = tempfile::tempdir().expect("dir");
    let (status, front) = (free(), free());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "op3rator\n").expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let socket = dir.path().join("status.sock");
    let config = dir.path().join("halo.toml");
    std::fs::write(&config, config_text(status, with_token.then_some(token_file.as_path()), Some(&socket), front, servers))
        .expect("config");
    let pid_file = dir.path().join("halo.pid");
    let daemon = Daemon::start(&config, &pid_file, dir.path().join("halo.log"));
    assert!(wait_for(Duration::from_secs(10), || TcpStream::connect(status).is_ok()), "the status endpoint never listened");
    (Setup { _dir: dir, config, pid_file, status, front, token: "op3rator".to_string() }, daemon)
}

#[test]
fn drain_maint_ready_and_weight_at_run_time() {
    let (m1, m2) = (NamedServer::start("m1"), NamedServer::start("m2"));
    let (setup, daemon) = start(&[("m1", m1.address), ("m2", m2.address)], true);
    let config = setup.config.to_string_lossy().to_string();
    let both_up = || ["m1", "m2"].iter().all(|n| server_json(setup.status, &setup.token, n)["state"] == "UP");
    assert!(wait_for(Duration::from_secs(10), both_up), "the servers never came up:\n{}", daemon.log());
    let mut spread = who_answers(setup.front, 10);
    spread.sort();
    spread.dedup();
    assert_eq!(spread, ["m1", "m2"], "round robin over both before anything is set");

    // drain: an established connection to m1 runs on; new ones go to m2 alone.
    let established = (0..10).find_map(|_| ask(setup.front).filter(|(name, _)| name == "m1")).expect("a connection to m1");
    let drained = halo(&["server", "drain", "api/m1", "-c", &config]);
    assert!(drained.status.success(), "{}", text(&drained));
    let answer: serde_json::Value = serde_json::from_slice(&drained.stdout).expect("one JSON answer");
    assert_eq!((answer["state"].as_str(), answer["state_before"].as_str()), (Some("drain"), Some("ready")), "{answer}");
    assert!(who_answers(setup.front, 10).iter().all(|n| n == "m2"), "a drained server took a new connection");
    let mut stream = established.1;
    stream.write_all(b"still there?\n").expect("write on the established connection");
    let mut line = String::new();
    BufReader::new(stream.try_clone().expect("clone")).read_line(&mut line).expect("read");
    assert_eq!(line, "m1 still there?\n", "the established connection to the drained server");
    assert_eq!(server_json(setup.status, &setup.token, "m1")["state"], "DRAIN");
    let metrics = get(setup.status, "/metrics", Some(&setup.token)).1;
    assert!(metrics.contains("halo_server_drain{backend=\"api\",server=\"m1\"} 1"), "{metrics}");
    // Over the unix socket halo server uses (the config names one): the log names the uid; over
    // TCP, with the token, it says so.
    let uid = nix::unistd::getuid().as_raw();
    assert!(daemon.log().contains(&format!("by=\"uid {uid}\"")), "{}", daemon.log());
    let over_tcp = post(setup.status, Some(&setup.token), "/servers/api/m1", r#"{"state":"drain"}"#);
    assert!(over_tcp.starts_with("HTTP/1.1 200"), "{over_tcp}");
    assert!(daemon.log().contains("by=\"token\""), "{}", daemon.log());

    // maint: checks stop — m1's port closing goes unnoticed — and it shows MAINT.
    assert!(halo(&["server", "maint", "api/m1", "-c", &config]).status.success());
    m1.open.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(600));
    let m1_now = server_json(setup.status, &setup.token, "m1");
    assert_eq!((m1_now["state"].as_str(), m1_now["reason"].as_str()), (Some("MAINT"), Some("maintenance (set at run time)")), "{m1_now}");
    assert!(get(setup.status, "/metrics", Some(&setup.token)).1.contains("halo_server_maint{backend=\"api\",server=\"m1\"} 1"));

    // ready: checked again first — its port is closed, so DOWN; listening again, UP and serving.
    assert!(halo(&["server", "ready", "api/m1", "-c", &config]).status.success());
    assert!(
        wait_for(Duration::from_secs(5), || server_json(setup.status, &setup.token, "m1")["state"] == "DOWN"),
        "m1 back from maintenance was not checked: {}",
        server_json(setup.status, &setup.token, "m1")
    );
    m1.open.store(true, Ordering::Relaxed);
    assert!(wait_for(Duration::from_secs(10), || server_json(setup.status, &setup.token, "m1")["state"] == "UP"));

    // weight 0: no new connections for m2, and the status says the weight.
    let weighed = halo(&["server", "weight", "api/m2", "0", "-c", &config]);
    assert!(weighed.status.success(), "{}", text(&weighed));
    assert!(who_answers(setup.front, 10).iter().all(|n| n == "m1"), "a server of weight 0 took a new connection");
    assert_eq!(server_json(setup.status, &setup.token, "m2")["weight"], 0);

    // A reload keeps what was set for servers that stay.
    assert!(halo(&["server", "drain", "api/m1", "-c", &config]).status.success());
    let reloaded = halo(&["reload", "-c", &config, "--pid-file", &setup.pid_file.to_string_lossy()]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert_eq!(server_json(setup.status, &setup.token, "m1")["state"], "DRAIN");
    assert_eq!(server_json(setup.status, &setup.token, "m2")["weight"], 0);
    // A weight changed in the file wins over the run-time one.
    let file = std::fs::read_to_string(&setup.config).expect("config");
    let reweighed = file.replacen(
        &format!("name = \"m2\"\naddress = \"{}\"\n", m2.address),
        &format!("name = \"m2\"\naddress = \"{}\"\nweight = 3\n", m2.address),
        1,
    );
    assert_ne!(file, reweighed);
    std::fs::write(&setup.config, reweighed).expect("config");
    let reloaded = halo(&["reload", "-c", &config, "--pid-file", &setup.pid_file.to_string_lossy()]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert_eq!(server_json(setup.status, &setup.token, "m2")["weight"], 3, "the configured weight did not win");
    assert_eq!(server_json(setup.status, &setup.token, "m1")["state"], "DRAIN", "what stays set is kept");

    // Refused, nothing changed: unknown names, a weight out of range, a malformed target.
    for (args, code, said) in [
        (vec!["server", "drain", "api/nope"], 1, "backend api has no server named \"nope\""),
        (vec!["server", "drain", "nope/m1"], 1, "no backend named \"nope\""),
        (vec!["server", "weight", "api/m1", "300"], 1, "weight 300 is out of range"),
        (vec!["server", "drain", "api"], 2, "is not BACKEND/SERVER"),
    ] {
        let mut all = args.clone();
        all.extend(["-c", &config]);
        let out = halo(&all);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(said), "{args:?}: {}", text(&out));
    }
    assert_eq!(server_json(setup.status, &setup.token, "m1")["state"], "DRAIN");
    assert_eq!(server_json(setup.status, &setup.token, "m1")["weight"], 1);
}

/// Over TCP a command needs the token: without a token file, the endpoint takes none, and a
/// wrong token is refused like any request.
#[test]
fn commands_over_tcp_need_the_token() {
    let m1 = NamedServer::start("m1");
    let (setup, daemon) = start(&[("m1", m1.address)], false);
    let answer = post(setup.status, None, "/servers/api/m1", r#"{"state":"drain"}"#);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("commands over TCP need [status] token_file"), "{answer}");
    assert!(wait_for(Duration::from_secs(10), || server_json_untokened(setup.status)["admin"] == "ready"), "{}", daemon.log());
}

fn server_json_untokened(status: SocketAddr) -> serde_json::Value {
    server_json(status, "", "m1")
}

/// A command over TCP, as raw HTTP: the whole answer.
fn post(status: SocketAddr, token: Option<&str>, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(status).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    answer
}
