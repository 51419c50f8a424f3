//! Who may connect, on loopback: a frontend's `allow` list (clients from elsewhere closed at
//! accept, counted, logged at most once a second, changed by a reload), and the status token
//! rotated by a reload without a restart. The daemon is ended by its PID.

mod loopback;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use loopback::{Daemon, free, get, wait_for};

/// A server that answers every line with "ok".
fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 64];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(b"ok\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// A client from `source` (an address of the loopback's 127/8): whether it was served.
fn served_from(source: &str, front: SocketAddr) -> bool {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source");
    socket.bind(&from.into()).expect("bind the source");
    if socket.connect_timeout(&front.into(), Duration::from_secs(2)).is_err() {
        return false;
    }
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut answer = [0u8; 3];
    stream.write_all(b"hi\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"ok\n"
}

fn reload(config: &std::path::Path, pid_file: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["reload", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
        .output()
        .expect("reload");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_allow_list_closes_other_clients_at_accept_and_a_reload_rotates_the_token() {
    let dir = tempfile::tempdir().expect("dir");
    let (status, front, backend) = (free(), free(), server());
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = dir.path().join("halo.toml");
    let text = |allow: &str| {
        format!(
            "[status]\nlisten = \"{status}\"\ntoken_file = \"{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\nallow = [{allow}]\n\n\
             [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\n[[backend.server]]\nname = \"m1\"\naddress = \"{backend}\"\n",
            token.display()
        )
    };
    std::fs::write(&config, text("\"127.0.0.2/32\"")).expect("config");
    let pid_file = dir.path().join("halo.pid");
    let daemon = Daemon::start(&config, &pid_file, dir.path().join("halo.log"));
    let said = || daemon.log();
    assert!(wait_for(Duration::from_secs(10), || served_from("127.0.0.2", front)), "the allowed source was not served:\n{}", said());

    // A flood from a source not allowed: every connection closed unserved, counted, and a line
    // or two in the log, not one per connection.
    let flood = 200;
    let refused_served = (0..flood).filter(|_| served_from("127.0.0.1", front)).count();
    assert_eq!(refused_served, 0, "a client from outside the allow list was served");
    assert!(served_from("127.0.0.2", front), "the allowed source was not served during the flood");
    let metrics = get(status, "/metrics", Some("first")).1;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("halo_frontend_refused_total{frontend=\"api\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refused counter: {metrics}"));
    assert_eq!(refused, flood as u64, "{metrics}");
    let lines = said().lines().filter(|l| l.contains("connection refused: its source is not in the frontend's allow list")).count();
    eprintln!("{flood} refused connections, {lines} log line(s)");
    assert!((1..=5).contains(&lines), "{lines} log lines for {flood} refused connections");

    // A reload widens the list, and re-reads the token: the old one is refused at once.
    std::fs::write(&config, text("\"127.0.0.0/8\"")).expect("config");
    std::fs::write(&token, "second\n").expect("token");
    reload(&config, &pid_file);
    assert!(served_from("127.0.0.1", front), "the widened allow list was not applied:\n{}", said());
    assert_eq!(get(status, "/status", Some("first")).0, "401", "the rotated-out token still works");
    assert_eq!(get(status, "/status", Some("second")).0, "200", "the new token does not work:\n{}", said());
}
