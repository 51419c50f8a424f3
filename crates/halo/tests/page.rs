//! The status page in a real browser: Debian's chromium, headless, driven over its DevTools
//! protocol, loads `/` from a daemon on loopback with the bearer token (sent as a header, as a
//! proxy in front of it would), shows the servers, and shows one going DOWN within a refresh of
//! the page; no script runs on it. Chromium is started with its background networking off and
//! asked for loopback addresses only; it and the daemon are ended by their PIDs.

mod loopback;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use loopback::{Daemon, NamedServer, free};

struct Ended(Child);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("warning: could not end {}: {e}", self.0.id());
        }
    }
}

/// One DevTools session with a page of the browser.
struct Page {
    socket: tungstenite::WebSocket<TcpStream>,
    next: u64,
}

impl Page {
    /// Sends a command and waits for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let message = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket.send(tungstenite::Message::text(message.to_string())).expect("send to the browser");
        loop {
            let answer = self.socket.read().unwrap_or_else(|e| panic!("no answer from the browser to {method}: {e}"));
            let Ok(text) = answer.to_text() else { continue };
            let value: serde_json::Value = serde_json::from_str(text).expect("JSON from the browser");
            if value["id"] == id {
                return value;
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn evaluate(&mut self, expression: &str) -> serde_json::Value {
        self.call("Runtime.evaluate", serde_json::json!({ "expression": expression, "returnByValue": true }))["result"]["result"]["value"]
            .clone()
    }
}

/// Starts headless chromium; it and the DevTools address of its first page.
fn browser(profile: &std::path::Path) -> (Ended, String) {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium");
    let stderr = child.stderr.take().expect("stderr");
    let ended = Ended(child);
    let (found, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix("DevTools listening on ws://").and_then(|r| r.split('/').next()) {
                let _ = found.send(address.to_string());
            }
        }
    });
    let address = listening.recv_timeout(Duration::from_secs(30)).expect("chromium said where DevTools listens");
    (ended, address)
}

fn page_session(devtools: &str) -> Page {
    let start = Instant::now();
    let url = loop {
        assert!(start.elapsed() < Duration::from_secs(20), "chromium listed no page");
        let mut http = TcpStream::connect(devtools).expect("DevTools");
        http.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        write!(http, "GET /json/list HTTP/1.1\r\nHost: {devtools}\r\nConnection: close\r\n\r\n").expect("write");
        // The browser may keep the connection open: what came within the timeout is the answer.
        let mut bytes = Vec::new();
        let _ = http.read_to_end(&mut bytes);
        let answer = String::from_utf8_lossy(&bytes).to_string();
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let targets: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let page = targets.as_array().and_then(|all| all.iter().find(|t| t["type"] == "page").cloned());
        if let Some(url) = page.as_ref().and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
            break url.to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stream = TcpStream::connect(devtools).expect("DevTools");
    // Bounded: a browser that stops answering fails the test instead of hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let (socket, _) = tungstenite::client(url.as_str(), stream).expect("the page's DevTools socket");
    Page { socket, next: 0 }
}

#[test]
fn the_status_page_in_a_browser_shows_a_server_going_down_within_a_refresh() {
    if std::process::Command::new("chromium").arg("--version").output().is_err() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "scripts/setup.sh installs chromium");
        eprintln!("SKIP the_status_page_in_a_browser_shows_a_server_going_down_within_a_refresh: no chromium");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (m1, m2) = (NamedServer::start("m1"), NamedServer::start("m2"));
    let (status, front) = (free(), free());
    let token = dir.path().join("token");
    std::fs::write(&token, "v1ewer\n").expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = dir.path().join("halo.toml");
    std::fs::write(
        &config,
        format!(
            "[status]\nlisten = \"{status}\"\ntoken_file = \"{}\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"{front}\"]\nbackend = \"api\"\n\n\
             [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\nfall = 1\nrise = 1\n\
             [[backend.server]]\nname = \"m1\"\naddress = \"{}\"\n[[backend.server]]\nname = \"m2\"\naddress = \"{}\"\n",
            token.display(),
            m1.address,
            m2.address
        ),
    )
    .expect("config");
    let _daemon = Daemon::start(&config, &dir.path().join("halo.pid"), dir.path().join("halo.log"));
    let start = Instant::now();
    while TcpStream::connect(status).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the status endpoint never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (_browser, devtools) = browser(&dir.path().join("profile"));
    let mut page = page_session(&devtools);
    page.call("Network.enable", serde_json::json!({}));
    page.call("Network.setExtraHTTPHeaders", serde_json::json!({ "headers": { "Authorization": "Bearer v1ewer" } }));
    page.call("Page.navigate", serde_json::json!({ "url": format!("http://{status}/") }));
    let server_state = |page: &mut Page, name: &str| {
        let expression = format!(
            "(() => {{ const row = document.querySelector('tr[data-server=\"{name}\"]'); return row ? row.cells[2].innerText : '' }})()"
        );
        page.evaluate(&expression).as_str().unwrap_or_default().to_string()
    };
    let wait = |page: &mut Page, name: &str, want: &str, limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if server_state(page, name) == want {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };
    assert!(
        wait(&mut page, "m2", "UP", Duration::from_secs(15)).is_some(),
        "the page never showed m2 UP: {:?}",
        page.evaluate("document.body.innerText")
    );
    assert!(page.evaluate("document.title").as_str().is_some_and(|t| t.starts_with("halo ")));
    assert_eq!(page.evaluate("document.scripts.length"), 0, "a script on the page");

    // m2's port closes: its check fails (fall = 1 every 200 ms) and the page refreshes itself
    // every 2 s, so it says DOWN within about one refresh, without anyone reloading it.
    m2.open.store(false, Ordering::Relaxed);
    let shown = wait(&mut page, "m2", "DOWN", Duration::from_secs(10));
    eprintln!("the page showed m2 DOWN {shown:?} after its port closed");
    assert!(shown.is_some(), "the page never showed m2 DOWN: {:?}", page.evaluate("document.body.innerText"));
    assert_eq!(server_state(&mut page, "m1"), "UP");

    // Without the token the page is refused like any request.
    page.call("Network.setExtraHTTPHeaders", serde_json::json!({ "headers": {} }));
    page.call("Page.navigate", serde_json::json!({ "url": format!("http://{status}/") }));
    std::thread::sleep(Duration::from_millis(500));
    let text = page.evaluate("document.body.innerText").as_str().unwrap_or_default().to_string();
    assert!(text.contains("a bearer token is required"), "{text}");
    m1.open.store(false, Ordering::Relaxed);
}
