//! Logs where operators collect them: `[log] target = "syslog"` sends every line, the
//! connection log's too, as an RFC 5424 datagram to a socket the test binds in place of
//! /dev/log; in JSON, the message is one JSON object. Loopback only; the daemon is ended by its PID.

mod loopback;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use loopback::{Daemon, free};

#[test]
fn every_line_goes_to_the_syslog_socket_as_rfc_5424() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("log");
    let syslog = UnixDatagram::bind(&socket).expect("bind the stand-in for /dev/log");
    syslog.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    // An API server that answers and closes.
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_at = server.local_addr().expect("address");
    std::thread::spawn(move || {
        for mut stream in server.incoming().flatten() {
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte);
            let _ = stream.write_all(b"ok");
        }
    });
    let (status, front) = (free(), free());
    let config = dir.path().join("halo.toml");
    std::fs::write(
        &config,
        format!(
            "[status]\nlisten = \"{status}\"\n\n[log]\nformat = \"json\"\nconnections = true\ntarget = \"syslog\"\nfacility = \"local0\"\nsyslog_socket = \"{}\"\n\n\
             [[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"100ms\"\n\
             [[backend.server]]\nname = \"m1\"\naddress = \"{server_at}\"\n",
            socket.display()
        ),
    )
    .expect("config");
    let daemon = Daemon::start(&config, &dir.path().join("halo.pid"), dir.path().join("halo.log"));
    let mut datagrams = Vec::new();
    let mut buffer = vec![0u8; 65536];
    let mut asked = false;
    let start = Instant::now();
    // The balancer checks and serves before the daemon says "halo running" (the guard and the
    // instances start in between): wait for both lines, whichever comes first.
    let seen = |datagrams: &[String], text: &str| datagrams.iter().any(|d| d.contains(text));
    while start.elapsed() < Duration::from_secs(15) && !(seen(&datagrams, " connection - ") && seen(&datagrams, "halo running")) {
        if let Ok(n) = syslog.recv(&mut buffer) {
            datagrams.push(String::from_utf8_lossy(&buffer[..n]).to_string());
        }
        // Once the server is up, one connection through the frontend: its line comes too.
        if !asked && datagrams.iter().any(|d| d.contains("server UP")) {
            let mut client = TcpStream::connect(front).expect("connect");
            client.write_all(b"x").expect("write");
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer);
            asked = true;
        }
    }
    drop(daemon);
    let pattern = "<134>1 TIME HOST halo PID - - ";
    let header = regex_like(pattern);
    let running =
        datagrams.iter().find(|d| d.contains("halo running")).unwrap_or_else(|| panic!("no 'halo running' datagram: {datagrams:?}"));
    assert!(header(running), "not an RFC 5424 datagram of local0/info: {running}");
    let message = running.splitn(8, ' ').nth(7).expect("a message");
    let json: serde_json::Value = serde_json::from_str(message).unwrap_or_else(|e| panic!("the message is not JSON ({e}): {message}"));
    assert_eq!(json["fields"]["message"], "halo running", "{json}");
    assert!(json.get("timestamp").is_none(), "the line repeats the header's time: {json}");
    let connection = datagrams.iter().find(|d| d.contains(" connection - ")).unwrap_or_else(|| panic!("no connection line: {datagrams:?}"));
    assert!(connection.starts_with("<134>1 "), "{connection}");
    assert!(connection.contains("\"frontend\":\"api\""), "{connection}");
}

/// A matcher for `<PRI>1 TIME HOST halo PID MSGID - ` where TIME is an RFC 3339 time, HOST one
/// word and PID digits (no regex crate needed).
fn regex_like(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |text: &str| {
        let want: Vec<&str> = pattern.split(' ').collect();
        let got: Vec<&str> = text.splitn(want.len(), ' ').collect();
        want.len() == got.len()
            && want.iter().zip(&got).take(want.len() - 1).all(|(w, g)| match *w {
                "TIME" => g.len() >= 20 && g.ends_with('Z') && g.as_bytes()[10] == b'T',
                "HOST" => !g.is_empty(),
                "PID" => g.chars().all(|c| c.is_ascii_digit()),
                other => other == *g,
            })
    }
}
