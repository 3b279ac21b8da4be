//! The notification channels against real receivers: an SMTP server
//! (Debian's python3-aiosmtpd, started per test), HTTP servers (hyper, in the
//! test) and a program run by the `command` channel.

use bergamot_core::model::{CheckId, Status};
use bergamot_core::notify::{
    ChannelConfig, Channels, Notification, NotificationKind, Notifier, Recipient, SendError,
};
use bergamot_core::{ConfigErrors, Error};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/notify")
}

fn config(name: &str, kind: &str, settings: serde_json::Value) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        kind: kind.into(),
        settings: settings.as_object().cloned().expect("settings object"),
        file: "/etc/bergamot/notify.toml".into(),
        line: 17,
    }
}

fn build(kind: &str, settings: serde_json::Value) -> Arc<dyn Notifier> {
    Channels::standard()
        .build(&config("ch", kind, settings))
        .unwrap_or_else(|e| panic!("{kind} channel does not build: {e}"))
}

fn notification(recipient: &str, email: Option<&str>) -> Notification {
    Notification {
        id: uuid::Uuid::new_v4(),
        kind: NotificationKind::Alert,
        alert_id: Some(uuid::Uuid::new_v4()),
        check_id: CheckId::random(),
        check: "web1/http".into(),
        host: "web1".into(),
        status: Status::Critical,
        output: "HTTP CRITICAL - 500 Internal Server Error".into(),
        at: chrono::Utc::now(),
        alert_opened_at: Some(chrono::Utc::now()),
        escalation: 2,
        sequence: 0,
        author: None,
        comment: None,
        recipient: Recipient {
            name: recipient.into(),
            email: email.map(str::to_string),
            phone: Some("+4912345".into()),
            chat: Some("U024BE7LH".into()),
            settings: BTreeMap::new(),
        },
        channel: "ch".into(),
    }
}

/// Polls `cond` until it holds, for up to 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    bergamot_testkit::wait_until(what, Duration::from_secs(10), || std::future::ready(cond())).await
}

fn problems(r: bergamot_core::Result<Arc<dyn Notifier>>) -> Vec<String> {
    match r {
        Err(Error::Config(ConfigErrors(p))) => p.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("not a config error: {e}"),
        Ok(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------- build errors

#[test]
fn build_errors_name_file_line_and_field() {
    let c = Channels::standard();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "email",
            serde_json::json!({"from": "a@b.c"}),
            "channel.m.host: is required",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "port": 70000}),
            "channel.m.port: must be an integer from 0 to 65535",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "security": "ssl"}),
            "channel.m.security: must be \"none\", \"starttls\" or \"tls\"",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "not an address"}),
            "channel.m.from: \"not an address\" is not an e-mail address",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "username": "u"}),
            "channel.m.password: is required with username",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "subject": "{nope}"}),
            "channel.m.subject: unknown placeholder {nope}",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "timeout": "soon"}),
            "channel.m.timeout: bad duration",
        ),
        (
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "hostname": "x"}),
            "channel.m.hostname: unknown setting",
        ),
        (
            "webhook",
            serde_json::json!({"url": "ftp://x/"}),
            "channel.m.url: \"ftp://x/\" must start with http:// or https://",
        ),
        (
            "webhook",
            serde_json::json!({"url": "http://x/", "headers": {"bad header": "v"}}),
            "channel.m.headers.bad header",
        ),
        (
            "webhook",
            serde_json::json!({"url": "http://x/", "headers": {"X-A": 1}}),
            "channel.m.headers.X-A: must be a string",
        ),
        ("slack", serde_json::json!({}), "channel.m.url: is required"),
        (
            "command",
            serde_json::json!({}),
            "channel.m.command: is required",
        ),
        (
            "command",
            serde_json::json!({"command": "/bin/true"}),
            "channel.m.command: must be a list of strings",
        ),
        (
            "command",
            serde_json::json!({"command": []}),
            "channel.m.command: must name a program first",
        ),
        (
            "log",
            serde_json::json!({"path": ""}),
            "channel.m.path: must not be empty",
        ),
        (
            "carrier-pigeon",
            serde_json::json!({}),
            "channel.m.type: unknown channel type \"carrier-pigeon\"",
        ),
    ];
    for (kind, settings, want) in cases {
        let p = problems(c.build(&config("m", kind, settings.clone())));
        assert!(
            p.iter()
                .any(|p| p.starts_with("/etc/bergamot/notify.toml:17: ") && p.contains(want)),
            "{kind} {settings}: want {want:?}, got {p:?}"
        );
    }
}

#[test]
fn build_errors_never_show_secrets() {
    let p = problems(Channels::standard().build(&config(
        "m",
        "email",
        serde_json::json!({"host": "h", "from": "bad", "password": "hunter2pw", "security": "x"}),
    )));
    assert!(p.len() >= 3, "{p:?}");
    assert!(!p.join("\n").contains("hunter2pw"), "{p:?}");
    let p = problems(Channels::standard().build(&config(
        "m",
        "webhook",
        serde_json::json!({"url": "gopher://u:pw123@h/x?token=tok999", "secret": "s3cr3t"}),
    )));
    let all = p.join("\n");
    assert!(
        !all.contains("pw123") && !all.contains("tok999") && !all.contains("s3cr3t"),
        "{all}"
    );
}

#[tokio::test]
async fn registered_kinds_build_and_send() {
    struct Counter(Arc<Mutex<Vec<String>>>);
    #[async_trait::async_trait]
    impl Notifier for Counter {
        async fn send(&self, n: &Notification) -> Result<(), SendError> {
            self.0.lock().push(n.recipient.name.clone());
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut c = Channels::standard();
    let s = seen.clone();
    assert!(c
        .register("counter", move |cfg: &ChannelConfig| {
            let mut st = bergamot_core::notify::Settings::new(cfg);
            let _ = st.string("label");
            st.finish()?;
            Ok(Arc::new(Counter(s.clone())) as Arc<dyn Notifier>)
        })
        .is_none());
    assert!(c.kinds().any(|k| k == "counter"));
    let n = c
        .build(&config(
            "mine",
            "counter",
            serde_json::json!({"label": "x"}),
        ))
        .expect("builds");
    n.send(&notification("carol", None)).await.expect("sent");
    assert_eq!(*seen.lock(), vec!["carol".to_string()]);
    let p = problems(c.build(&config(
        "mine",
        "counter",
        serde_json::json!({"lable": "x"}),
    )));
    assert!(
        p[0].contains("channel.mine.lable: unknown setting"),
        "{p:?}"
    );
}

// ---------------------------------------------------------------- SMTP

/// Debian's python3 with aiosmtpd, or None (the caller skips, or fails when
/// BERGAMOT_REQUIRE_SERVICES=1).
fn python_with_aiosmtpd() -> Option<&'static str> {
    bergamot_testkit::require_python_module(
        "aiosmtpd",
        "email channel (apt-get install -y python3-aiosmtpd)",
    )
}
use bergamot_testkit::SmtpSink as Sink;

fn smtp(port: u16, extra: serde_json::Value) -> serde_json::Value {
    let mut s = serde_json::json!({
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "Bergamot <bergamot@example.com>",
        "timeout": "10s",
    });
    for (k, v) in extra.as_object().expect("object") {
        s[k] = v.clone();
    }
    s
}

#[tokio::test]
async fn email_delivers_one_message_per_recipient_with_subject_and_body() {
    let Some(py) = python_with_aiosmtpd() else {
        return;
    };
    let sink = Sink::start(py, &[]).await;
    let ch = build("email", smtp(sink.port, serde_json::json!({})));
    let mut alice = notification("alice", Some("alice@example.com"));
    alice.kind = NotificationKind::Acknowledge;
    alice.author = Some("bob".into());
    alice.comment = Some("looking into it".into());
    let mut dave = notification("dave", Some("ignored@example.com"));
    dave.recipient
        .settings
        .insert("email".into(), "dave@ops.example.com".into());
    ch.send(&alice).await.expect("alice's mail sent");
    ch.send(&dave).await.expect("dave's mail sent");

    let m = sink.messages();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0]["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert_eq!(m[0]["mail_from"], "bergamot@example.com");
    assert_eq!(
        m[0]["subject"],
        "[Bergamot] CRITICAL web1/http: acknowledge"
    );
    assert_eq!(m[0]["message_id"], format!("<{}@bergamot>", alice.id));
    assert!(
        m[0]["to"]
            .as_str()
            .unwrap_or("")
            .contains("alice <alice@example.com>"),
        "{}",
        m[0]["to"]
    );
    let body = m[0]["body"].as_str().expect("body");
    for want in [
        "web1/http",
        "HTTP CRITICAL - 500 Internal Server Error",
        "Acked by",
        "bob",
        "looking into it",
        "Escalation: step 2",
        &alice.alert_id.expect("alert").to_string(),
        &alice.id.to_string(),
    ] {
        assert!(body.contains(want), "{want:?} not in {body}");
    }
    assert_eq!(
        m[1]["rcpt_tos"],
        serde_json::json!(["dave@ops.example.com"]),
        "per-contact email setting wins"
    );
    assert_eq!(m[1]["subject"], "[Bergamot] CRITICAL web1/http: alert");
}

#[tokio::test]
async fn email_subject_template() {
    let Some(py) = python_with_aiosmtpd() else {
        return;
    };
    let sink = Sink::start(py, &[]).await;
    let ch = build(
        "email",
        smtp(
            sink.port,
            serde_json::json!({"subject": "{status}: {check} ({kind}, {{x}})"}),
        ),
    );
    ch.send(&notification("alice", Some("alice@example.com")))
        .await
        .expect("sent");
    assert_eq!(
        sink.messages()[0]["subject"],
        "CRITICAL: web1/http (alert, {x})"
    );
}

#[tokio::test]
async fn email_authenticates_and_a_wrong_password_is_permanent_and_not_shown() {
    let Some(py) = python_with_aiosmtpd() else {
        return;
    };
    let sink = Sink::start(py, &["--auth", "mailer:correct-horse"]).await;
    let good = build(
        "email",
        smtp(
            sink.port,
            serde_json::json!({"username": "mailer", "password": "correct-horse"}),
        ),
    );
    good.send(&notification("alice", Some("alice@example.com")))
        .await
        .expect("sent with auth");
    let m = sink.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["authenticated"], true);

    let bad = build(
        "email",
        smtp(
            sink.port,
            serde_json::json!({"username": "mailer", "password": "wrong-battery"}),
        ),
    );
    let e = bad
        .send(&notification("alice", Some("alice@example.com")))
        .await
        .expect_err("rejected");
    assert!(e.permanent, "{e:?}");
    assert!(!e.reason.contains("wrong-battery"), "{e:?}");
    let none = build("email", smtp(sink.port, serde_json::json!({})));
    let e = none
        .send(&notification("alice", Some("alice@example.com")))
        .await
        .expect_err("auth required");
    assert!(e.permanent, "{e:?}");
    assert_eq!(sink.messages().len(), 1);
    let typed = bergamot_core::notify::channel::EmailChannel::from_config(&config(
        "m",
        "email",
        smtp(
            sink.port,
            serde_json::json!({"username": "mailer", "password": "correct-horse"}),
        ),
    ))
    .expect("builds");
    assert!(!format!("{typed:?}").contains("correct-horse"), "{typed:?}");
}

#[tokio::test]
async fn email_classifies_rejections_and_missing_addresses() {
    let Some(py) = python_with_aiosmtpd() else {
        return;
    };
    let sink = Sink::start(py, &[]).await;
    let ch = build("email", smtp(sink.port, serde_json::json!({})));
    let e = ch
        .send(&notification("ghost", Some("reject@example.com")))
        .await
        .expect_err("550");
    assert!(e.permanent && e.reason.contains("no such user"), "{e:?}");
    let e = ch
        .send(&notification("slow", Some("later@example.com")))
        .await
        .expect_err("451");
    assert!(
        !e.permanent && e.reason.contains("try again later"),
        "{e:?}"
    );
    let e = ch
        .send(&notification("nomail", None))
        .await
        .expect_err("no address");
    assert!(
        e.permanent && e.reason.contains("contact nomail has no e-mail address"),
        "{e:?}"
    );
    let e = ch
        .send(&notification("typo", Some("not an address")))
        .await
        .expect_err("bad address");
    assert!(e.permanent, "{e:?}");
    assert!(sink.messages().is_empty());
}

/// A CA and a `localhost` certificate, as PEM files in `dir`.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

#[tokio::test]
async fn email_over_starttls_and_tls_with_a_private_ca() {
    let Some(py) = python_with_aiosmtpd() else {
        return;
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = pki(certs.path());
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    for (flag, security) in [("--starttls", "starttls"), ("--tls", "tls")] {
        let sink = Sink::start(py, &[flag, &cert, &key, "--auth", "mailer:pw"]).await;
        let settings = serde_json::json!({
            "host": "localhost", "port": sink.port, "security": security,
            "from": "bergamot@example.com", "ca_file": ca.to_string_lossy(),
            "username": "mailer", "password": "pw",
        });
        let ch = build("email", settings.clone());
        ch.send(&notification("alice", Some("alice@example.com")))
            .await
            .unwrap_or_else(|e| panic!("{security}: {e:?}"));
        let m = sink.messages();
        assert_eq!(m.len(), 1, "{security}");
        assert_eq!(m[0]["authenticated"], true, "{security}");
        if security == "starttls" {
            assert_eq!(m[0]["tls"], true, "{security}");
        }
        // Without the private CA the server's certificate is not trusted.
        let mut untrusted = settings.clone();
        untrusted.as_object_mut().expect("object").remove("ca_file");
        let e = build("email", untrusted)
            .send(&notification("alice", Some("alice@example.com")))
            .await
            .expect_err("untrusted certificate");
        assert!(!e.permanent, "{security}: {e:?}");
        assert_eq!(sink.messages().len(), 1, "{security}");
    }
}

#[tokio::test]
async fn email_unreachable_or_silent_server_is_transient_within_the_timeout() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let ch = build("email", smtp(port, serde_json::json!({})));
    let e = ch
        .send(&notification("alice", Some("alice@example.com")))
        .await
        .expect_err("refused");
    assert!(!e.permanent, "{e:?}");

    // A server that accepts and never greets.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let ch = build("email", smtp(port, serde_json::json!({"timeout": "300ms"})));
    let e = ch
        .send(&notification("alice", Some("alice@example.com")))
        .await
        .expect_err("timeout");
    assert!(!e.permanent, "{e:?}");
}

// ---------------------------------------------------------------- HTTP

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// An HTTP server recording every request; `/status/N` answers N,
/// `/hang` never answers, anything else 200.
async fn receiver() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        log.lock().push(Seen {
                            path: path.clone(),
                            headers,
                            body,
                        });
                        let code = if let Some(c) = path.strip_prefix("/status/") {
                            c.split('/').next().unwrap_or("").parse().unwrap_or(500)
                        } else if path == "/hang" {
                            std::future::pending::<()>().await;
                            500
                        } else {
                            200
                        };
                        let mut resp =
                            Response::new(Full::new(Bytes::from(format!("answer {code}\nmore"))));
                        *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("code");
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), service)
                    .await
                    .ok();
            });
        }
    });
    (port, seen)
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn webhook_posts_versioned_json_with_id_headers_and_signature() {
    let (port, seen) = receiver().await;
    let ch = build(
        "webhook",
        serde_json::json!({
            "url": format!("http://hookuser:hook%20pw@127.0.0.1:{port}/hooks/bergamot?token=abc"),
            "headers": {"X-Team": "ops"},
            "secret": "shared-secret",
        }),
    );
    let mut n = notification("alice", Some("alice@example.com"));
    n.recipient.settings.insert("ignored".into(), "x".into());
    ch.send(&n).await.expect("sent");
    let s = seen.lock().clone();
    assert_eq!(s.len(), 1);
    let r = &s[0];
    assert_eq!(r.path, "/hooks/bergamot");
    let h = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("x-bergamot-notification-id"), n.id.to_string());
    assert_eq!(h("idempotency-key"), n.id.to_string());
    assert_eq!(h("x-bergamot-event"), "alert");
    assert_eq!(h("x-team"), "ops");
    assert_eq!(
        h("x-bergamot-signature"),
        format!("sha256={}", hmac_hex(b"shared-secret", &r.body))
    );
    use base64::Engine as _;
    assert_eq!(
        h("authorization"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("hookuser:hook pw")
        )
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json body");
    assert_eq!(v["version"], 1);
    assert_eq!(v["id"], n.id.to_string());
    assert_eq!(v["kind"], "alert");
    assert_eq!(v["check"], "web1/http");
    assert_eq!(v["check_id"], n.check_id.to_string());
    assert_eq!(v["host"], "web1");
    assert_eq!(v["status"], "CRITICAL");
    assert_eq!(v["output"], n.output);
    assert_eq!(v["alert_id"], n.alert_id.expect("alert").to_string());
    assert_eq!(v["escalation"], 2);
    assert_eq!(v["sequence"], 0);
    assert_eq!(v["recipient"]["name"], "alice");
    assert_eq!(v["recipient"]["email"], "alice@example.com");
    assert_eq!(v["subject"], "[Bergamot] CRITICAL web1/http: alert");
    assert!(v["recipient"].get("settings").is_none());
    let at = chrono::DateTime::parse_from_rfc3339(v["at"].as_str().expect("at")).expect("rfc3339");
    assert_eq!(at.timestamp_millis(), n.at.timestamp_millis());
}

#[tokio::test]
async fn webhook_classifies_statuses_timeouts_and_refusals_without_secrets() {
    let (port, seen) = receiver().await;
    let base = format!("http://u:pa55word@127.0.0.1:{port}");
    let send = |path: &str, timeout: &str| {
        let ch = build(
            "webhook",
            serde_json::json!({"url": format!("{base}{path}?key=k3y"), "timeout": timeout, "secret": "sig-secret"}),
        );
        async move { ch.send(&notification("alice", None)).await }
    };
    assert!(send("/ok", "10s").await.is_ok());
    assert!(send("/status/204", "10s").await.is_ok());
    for (code, permanent) in [
        (500, false),
        (503, false),
        (408, false),
        (429, false),
        (400, true),
        (404, true),
        (410, true),
        (301, true),
    ] {
        let e = send(&format!("/status/{code}"), "10s")
            .await
            .expect_err("fails");
        assert_eq!(e.permanent, permanent, "{code}: {e:?}");
        assert!(e.reason.contains(&code.to_string()), "{e:?}");
        assert!(
            e.reason.contains(&format!("answer {code}")),
            "the receiver's first line: {e:?}"
        );
        for secret in ["pa55word", "k3y", "sig-secret"] {
            assert!(!e.reason.contains(secret), "{secret} in {e:?}");
        }
    }
    let e = send("/hang", "300ms").await.expect_err("timeout");
    assert!(
        !e.permanent && e.reason.contains("no response within"),
        "{e:?}"
    );
    assert!(
        !e.reason.contains("pa55word") && !e.reason.contains("k3y"),
        "{e:?}"
    );
    assert_eq!(seen.lock().len(), 11);

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cport = closed.local_addr().expect("addr").port();
    drop(closed);
    let ch = build(
        "webhook",
        serde_json::json!({"url": format!("http://127.0.0.1:{cport}/x")}),
    );
    let e = ch
        .send(&notification("alice", None))
        .await
        .expect_err("refused");
    assert!(!e.permanent && e.reason.contains("cannot connect"), "{e:?}");

    // https to a plain-HTTP server: the TLS handshake fails, transient.
    let ch = build(
        "webhook",
        serde_json::json!({"url": format!("https://127.0.0.1:{port}/x"), "timeout": "5s"}),
    );
    let e = ch
        .send(&notification("alice", None))
        .await
        .expect_err("no TLS");
    assert!(!e.permanent, "{e:?}");
}

#[tokio::test]
async fn webhook_per_contact_url() {
    let (port, seen) = receiver().await;
    let ch = build(
        "webhook",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/team")}),
    );
    let mut n = notification("alice", None);
    n.recipient
        .settings
        .insert("url".into(), format!("http://127.0.0.1:{port}/alice"));
    ch.send(&n).await.expect("sent");
    ch.send(&notification("bob", None)).await.expect("sent");
    let paths: Vec<String> = seen.lock().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, vec!["/alice", "/team"]);
}

#[tokio::test]
async fn slack_posts_incoming_webhook_json_and_hides_the_token() {
    let (port, seen) = receiver().await;
    let ch = build(
        "slack",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/services/T000/B000/XXXXSECRET"), "channel": "#ops", "username": "bergamot"}),
    );
    let n = notification("alice", None);
    ch.send(&n).await.expect("sent");
    let s = seen.lock().clone();
    assert_eq!(s[0].path, "/services/T000/B000/XXXXSECRET");
    let v: serde_json::Value = serde_json::from_slice(&s[0].body).expect("json");
    assert_eq!(
        v["text"],
        "<@U024BE7LH> [Bergamot] CRITICAL web1/http: alert"
    );
    assert_eq!(v["channel"], "#ops");
    assert_eq!(v["username"], "bergamot");
    let a = &v["attachments"][0];
    assert_eq!(a["title"], "web1/http");
    assert_eq!(a["text"], n.output);
    assert_eq!(a["color"], "#a30200");
    assert!(a["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .any(|f| f["title"] == "Escalation"));

    let bad = build(
        "slack",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/status/404/XXXXSECRET")}),
    );
    let e = bad.send(&n).await.expect_err("404");
    assert!(e.permanent && !e.reason.contains("XXXXSECRET"), "{e:?}");
    let bad = build(
        "slack",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/status/503/XXXXSECRET")}),
    );
    let e = bad.send(&n).await.expect_err("503");
    assert!(!e.permanent && !e.reason.contains("XXXXSECRET"), "{e:?}");
    let typed = bergamot_core::notify::channel::SlackChannel::from_config(&config(
        "s",
        "slack",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/services/T/B/XXXXSECRET")}),
    ))
    .expect("builds");
    assert!(!format!("{typed:?}").contains("XXXXSECRET"), "{typed:?}");
}

// ---------------------------------------------------------------- command

fn command(dir: &Path, mode: &str, timeout: &str) -> Arc<dyn Notifier> {
    build(
        "command",
        serde_json::json!({
            "command": [data_dir().join("notify_cmd.sh").to_string_lossy(), dir.to_string_lossy(), mode],
            "timeout": timeout,
            "env": {"PAGER_ROUTE": "night"},
        }),
    )
}

#[tokio::test]
async fn command_gets_json_on_stdin_and_a_clean_environment() {
    std::env::set_var("BERGAMOT_TEST_DAEMON_SECRET", "db-password-42");
    let dir = tempfile::tempdir().expect("tempdir");
    let n = notification("alice", Some("alice@example.com"));
    command(dir.path(), "ok", "10s")
        .send(&n)
        .await
        .expect("exit 0 is sent");
    let stdin: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stdin.json")).expect("stdin"),
    )
    .expect("json");
    assert_eq!(stdin["id"], n.id.to_string());
    assert_eq!(stdin["version"], 1);
    let env = std::fs::read_to_string(dir.path().join("env.txt")).expect("env");
    let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("BERGAMOT_NOTIFICATION_KIND"), Some(&"alert"));
    assert_eq!(vars.get("BERGAMOT_NOTIFICATION_CHECK"), Some(&"web1/http"));
    assert_eq!(vars.get("BERGAMOT_NOTIFICATION_HOST"), Some(&"web1"));
    assert_eq!(vars.get("BERGAMOT_NOTIFICATION_STATUS"), Some(&"CRITICAL"));
    assert_eq!(
        vars.get("BERGAMOT_NOTIFICATION_OUTPUT"),
        Some(&n.output.as_str())
    );
    assert_eq!(
        vars.get("BERGAMOT_NOTIFICATION_RECIPIENT_EMAIL"),
        Some(&"alice@example.com")
    );
    assert_eq!(
        vars.get("BERGAMOT_NOTIFICATION_ID").copied(),
        Some(n.id.to_string().as_str())
    );
    assert_eq!(vars.get("NAGIOS_NOTIFICATIONTYPE"), Some(&"PROBLEM"));
    assert_eq!(vars.get("NAGIOS_SERVICEDESC"), Some(&"http"));
    assert_eq!(vars.get("NAGIOS_CONTACTEMAIL"), Some(&"alice@example.com"));
    assert_eq!(vars.get("PAGER_ROUTE"), Some(&"night"));
    assert!(vars.contains_key("PATH"));
    assert!(
        !env.contains("db-password-42"),
        "the daemon's environment leaked: {env}"
    );
    assert!(
        !vars.contains_key("HOME") && !vars.contains_key("CARGO_MANIFEST_DIR"),
        "{env}"
    );
}

#[tokio::test]
async fn command_failure_is_transient_with_stderr_first_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = command(dir.path(), "fail", "10s")
        .send(&notification("alice", None))
        .await
        .expect_err("exit 3");
    assert!(!e.permanent, "{e:?}");
    assert!(
        e.reason.contains("exited with 3: pager gateway said no"),
        "{e:?}"
    );
    assert!(!e.reason.contains("second line"), "{e:?}");

    let missing = build(
        "command",
        serde_json::json!({"command": ["/nonexistent/pager"]}),
    );
    let e = missing
        .send(&notification("alice", None))
        .await
        .expect_err("no program");
    assert!(
        !e.permanent && e.reason.contains("cannot run /nonexistent/pager"),
        "{e:?}"
    );
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[tokio::test]
async fn command_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = command(dir.path(), "hang", "500ms")
        .send(&notification("alice", None))
        .await
        .expect_err("timeout");
    assert!(!e.permanent && e.reason.contains("timed out"), "{e:?}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .expect("the script started its grandchild")
        .trim()
        .parse()
        .expect("pid");
    wait_until("the grandchild to be killed", || dead(pid)).await;
}

// ---------------------------------------------------------------- log

#[tokio::test]
async fn log_channel_appends_the_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notifications.jsonl");
    let ch = build("log", serde_json::json!({"path": path.to_string_lossy()}));
    let n = notification("alice", None);
    ch.send(&n).await.expect("sent");
    build("log", serde_json::json!({}))
        .send(&n)
        .await
        .expect("log only");
    let text = std::fs::read_to_string(&path).expect("read");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one json line");
    assert_eq!(v["id"], n.id.to_string());
}
