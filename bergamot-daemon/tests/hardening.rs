//! Hardening of the web node (issues 14.3–14.5, 15.4, 15.6, 12.5): bounded
//! password checks and login throttling, connection caps and timeouts, auth
//! reload with websocket revocation, `Origin` on `/ws`, security headers,
//! NUL bytes in input, authentication before any lookup.

mod common;

use common::setup::{auth_of, Daemon};
use common::{basic, free_port, get, post};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

// ---- bergamotd as a process ------------------------------------------------

struct Proc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Proc {
    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in {status}"))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `bergamotd run` (all roles, in-memory backends) with `web` as its
/// `[web]` section, optionally with at most `nofile` open files.
async fn bergamotd(web: &str, nofile: Option<u32>) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("site = \"h\"\n\n[web]\nlisten = \"127.0.0.1:{port}\"\n{web}\n"),
    )
    .expect("write config");
    let log = dir.path().join("log");
    let exe = env!("CARGO_BIN_EXE_bergamotd");
    let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" run --config \"$1\""))
        .arg(exe)
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn bergamotd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let p = Proc {
        child,
        addr,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = common::request(addr, "GET", "/healthz", None, None).await {
            if r.status == 200 {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "bergamotd up: {}", p.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// 1,000 wrong passwords for an existing user (each a full-cost argon2
/// hash, ~19 MiB per verification), 32 at a time: before, every try ran its
/// own verification on a blocking thread and the peak RSS grew by ~19 MiB per
/// parallel try (over 600 MiB); now verifications are bounded, the user and
/// the address are throttled after a few failures, and each failure is a log
/// line naming the user and the address, never the password.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_do_not_grow_memory() {
    let _ = repo_root();
    let hash = bergamot_daemon::web::auth::hash_password("correct horse").expect("hash");
    let p = bergamotd(
        &format!("[[web.users]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n"),
        None,
    )
    .await;
    let baseline = p.status_kib("VmRSS:");
    let addr = p.addr;
    let statuses: Vec<u16> = futures::stream::iter(0..1000)
        .map(|i| async move {
            common::request(
                addr,
                "GET",
                "/api/state",
                Some(&basic("admin", &format!("wrong-{i}"))),
                None,
            )
            .await
            .map(|r| r.status)
            .unwrap_or(0)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let hwm = p.status_kib("VmHWM:");
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    eprintln!(
        "1000 wrong tries: baseline RSS {} MiB, peak RSS (VmHWM) {} MiB; {wrong} answered 401, {refused} throttled (429)",
        baseline / 1024,
        hwm / 1024
    );
    assert_eq!(wrong + refused, 1000, "every try refused: {statuses:?}");
    assert!(
        hwm < 160 * 1024,
        "peak RSS {} MiB under 1,000 wrong passwords (bound 160 MiB)",
        hwm / 1024
    );
    assert!(refused > 900, "throttled after a few failures: {refused}");
    let log = p.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("failed login")).collect();
    assert!(failed.len() >= 5, "failed logins are logged: {log}");
    assert!(
        failed
            .iter()
            .all(|l| l.contains("admin") && l.contains("127.0.0.1")),
        "{failed:?}"
    );
    assert!(!log.contains("wrong-"), "a password reached the log");
}

/// A request head sent half and held: the connection is closed once
/// `header_read_timeout` passes (before, it stayed open for ever).
#[tokio::test(flavor = "multi_thread")]
async fn half_open_request_is_closed_after_header_read_timeout() {
    let p = bergamotd("header_read_timeout = \"1s\"\n", None).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the half-open connection was never closed");
}

/// 300 unfinished requests held from 127.0.0.1 against a daemon with 200
/// file descriptors: before, they took every descriptor and nobody was
/// served; now the per-address cap closes what is over it at accept and a
/// fresh client (from 127.0.0.2) still gets `/healthz`.
#[tokio::test(flavor = "multi_thread")]
async fn fresh_client_is_served_while_300_half_open_connections_are_held() {
    let p = bergamotd(
        "header_read_timeout = \"5m\"\nmax_connections = 150\nmax_connections_per_address = 50\n",
        Some(200),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..300 {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        if let Ok(mut c) = s.connect(p.addr).await {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .ok();
            held.push(c);
        }
    }
    assert!(held.len() >= 200, "connections opened: {}", held.len());
    let fresh = async {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        let mut c = s.connect(p.addr).await.expect("connect");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.ok();
        String::from_utf8_lossy(&out).to_string()
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), fresh)
        .await
        .expect("the fresh client was not served within 20 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ok\""), "{answer}");
    drop(held);
}

// ---- in-process daemon with a changeable config ------------------------------

/// The daemon of `text` with the processor and web roles (no notifier);
/// change [`Daemon::text`] and reload to change its configuration.
async fn live(text: String) -> Daemon {
    common::setup::daemon_with(text, "processor,web").await
}

/// The status of `GET /api/state` with `auth`.
async fn state_status(addr: SocketAddr, auth: &str) -> u16 {
    get(addr, "/api/state", Some(auth)).await.status
}

async fn ws_connect(
    addr: SocketAddr,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, String>
{
    let mut req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, v.parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(s, _)| s)
        .map_err(|e| e.to_string())
}

/// Removing a user and a token from the config and reloading (as SIGHUP
/// does) revokes them at once, without a restart; their websockets are
/// closed, a remaining user's is not.
#[tokio::test(flavor = "multi_thread")]
async fn reload_revokes_users_and_tokens_and_closes_their_websockets() {
    let d = live(common::setup::config_text()).await;
    let addr = d.addr;
    assert_eq!(state_status(addr, &auth_of("viewer")).await, 200);
    assert_eq!(state_status(addr, "Bearer secret-token").await, 200);
    let mut viewer_ws = ws_connect(addr, "", &[("authorization", auth_of("viewer"))])
        .await
        .expect("viewer ws");
    let mut token_ws = ws_connect(addr, "?token=secret-token", &[])
        .await
        .expect("token ws");
    let mut admin_ws = ws_connect(addr, "", &[("authorization", auth_of("admin"))])
        .await
        .expect("admin ws");
    // Drop the viewer and the token from the config.
    {
        let mut t = d.text.lock();
        let cut = |t: &str, start: &str| -> String {
            let i = t.find(start).expect("section");
            let j = t[i + start.len()..]
                .find("\n[")
                .map_or(t.len(), |j| i + start.len() + j);
            format!("{}{}", &t[..i], &t[j..])
        };
        let without_viewer = cut(&t, "[[web.users]]\nname = \"viewer\"");
        *t = cut(&without_viewer, "[[web.tokens]]");
    }
    let r = post(addr, "/api/reload", Some(&auth_of("admin")), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(state_status(addr, &auth_of("viewer")).await, 401);
    assert_eq!(state_status(addr, "Bearer secret-token").await, 401);
    assert_eq!(state_status(addr, &auth_of("op")).await, 200);
    for (who, ws) in [("viewer", &mut viewer_ws), ("token", &mut token_ws)] {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the {who} websocket was not closed"));
        assert_eq!(closed, Some(1008), "{who}: close code");
    }
    // The admin's session lives on.
    admin_ws
        .send(Message::Text(json!({ "ping": 7 }).to_string()))
        .await
        .expect("send");
    let pong = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Ok(Message::Text(t))) = admin_ws.next().await {
                if t.contains("pong") {
                    return t;
                }
            }
        }
    })
    .await
    .expect("admin still connected");
    assert!(pong.contains('7'), "{pong}");
    assert_eq!(d.running.web.as_ref().expect("web").hub.client_count(), 1);
}

/// A page of another origin cannot open `/ws`; the same origin (an IP
/// literal host), configured public URLs and non-browser clients (no
/// `Origin`) can.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_checks_origin() {
    let d = live(common::setup::config_text()).await;
    let addr = d.addr;
    let a = ("authorization", auth_of("viewer"));
    let evil = ws_connect(
        addr,
        "",
        &[a.clone(), ("origin", "http://evil.example".into())],
    )
    .await;
    assert!(
        evil.as_ref().is_err_and(|e| e.contains("403")),
        "{:?}",
        evil.map(|_| ())
    );
    let same = ws_connect(addr, "", &[a.clone(), ("origin", format!("http://{addr}"))]).await;
    assert!(same.is_ok(), "{:?}", same.map(|_| ()));
    assert!(ws_connect(addr, "", std::slice::from_ref(&a)).await.is_ok());
    // A DNS name as host needs public_urls (DNS rebinding).
    let rebind = ws_connect(
        addr,
        "",
        &[
            a.clone(),
            ("host", format!("evil.example:{}", addr.port())),
            ("origin", format!("http://evil.example:{}", addr.port())),
        ],
    )
    .await;
    assert!(rebind.is_err(), "a rebinding page opened the websocket");

    let text = common::setup::config_text().replace(
        "[web]\n",
        "[web]\npublic_urls = [\"https://mon.example.com\"]\n",
    );
    let d = live(text).await;
    let addr = d.addr;
    let ok = ws_connect(
        addr,
        "",
        &[a.clone(), ("origin", "https://mon.example.com".into())],
    )
    .await;
    assert!(ok.is_ok(), "{:?}", ok.map(|_| ()));
    let other = ws_connect(addr, "", &[a.clone(), ("origin", format!("http://{addr}"))]).await;
    assert!(other.is_err(), "only the public URLs may open it");
}

/// Every response carries the security headers.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_has_security_headers() {
    let d = live(common::setup::config_text()).await;
    for (path, auth) in [
        ("/", None),
        ("/app.js", None),
        ("/healthz", None),
        ("/api/state", None),
        ("/api/state", Some(auth_of("viewer"))),
        ("/no/such/page", None),
    ] {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(a) = &auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        for h in [
            "content-security-policy:",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(h), "{path}: no {h} in {head}");
        }
    }
}

/// A NUL character in an acknowledgement or downtime comment is a 400 naming
/// the field (PostgreSQL refuses NUL in text: before, a 500 carrying the
/// database error).
#[tokio::test(flavor = "multi_thread")]
async fn nul_in_a_comment_is_a_400_naming_the_field() {
    let d = live(common::setup::config_text()).await;
    let id = bergamot_core::model::CheckId::service(common::setup::SITE, "app", "cpu");
    let op = auth_of("op");
    let r = post(
        d.addr,
        &format!("/api/checks/{id}/acknowledge"),
        Some(&op),
        r#"{"comment":"looking\u0000into it"}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["field"], "comment", "{}", r.body);
    let r = post(
        d.addr,
        &format!("/api/checks/{id}/downtimes"),
        Some(&op),
        r#"{"comment":"x\u0000","duration_seconds":60}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["field"], "comment", "{}", r.body);
}

/// With anonymous read, an anonymous execute-now is refused before the check
/// is looked up: a known and an unknown id get the same 401 (before, 404 for
/// an unknown id told which ids exist).
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_learn_nothing_about_ids() {
    let text =
        common::setup::config_text().replace("anonymous_read = false", "anonymous_read = true");
    let d = live(text).await;
    let known = bergamot_core::model::CheckId::service(common::setup::SITE, "app", "cpu");
    let unknown = bergamot_core::model::CheckId::service(common::setup::SITE, "nope", "nope");
    for id in [known, unknown] {
        for path in [
            format!("/api/checks/{id}/execute"),
            format!("/api/checks/{id}/acknowledge"),
            format!("/api/checks/{id}/results"),
        ] {
            let r = post(d.addr, &path, None, "{}").await;
            assert_eq!(r.status, 401, "{path}: {}", r.body);
        }
    }
    // A viewer is refused (403) before any lookup too.
    let r = post(
        d.addr,
        &format!("/api/checks/{unknown}/execute"),
        Some(&auth_of("viewer")),
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Reads still work anonymously.
    assert_eq!(get(d.addr, "/api/state", None).await.status, 200);
}

/// A logged-in user gets a short-lived websocket ticket from `/api/whoami`;
/// it opens `/ws` (no password in the URL); a made-up one does not.
#[tokio::test(flavor = "multi_thread")]
async fn whoami_ticket_opens_the_websocket() {
    let d = live(common::setup::config_text()).await;
    let w = get(d.addr, "/api/whoami", Some(&auth_of("viewer")))
        .await
        .json();
    let ticket = w["ws_ticket"].as_str().expect("ticket").to_string();
    assert!(ws_connect(d.addr, &format!("?ticket={ticket}"), &[])
        .await
        .is_ok());
    let bad = ws_connect(d.addr, "?ticket=0123", &[]).await;
    assert!(bad.is_err_and(|e| e.contains("401")));
}
