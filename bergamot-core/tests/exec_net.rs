//! Acceptance tests of the http and tcp executors against servers the test
//! starts on 127.0.0.1.

mod common;

use bergamot_core::exec::{Executor, HttpExecutor, TcpExecutor};
use bergamot_core::model::{CheckResult, Status};
use bergamot_core::queue::ExecuteCheck;
use common::{assert_result, execute, perfdata, read_head, respond};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A tiny HTTP/1.1 server. Paths:
/// `/ok` 200 "hello bergamot"; `/status/<code>`; `/slow/<ms>` 200 after a delay.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Nothing for a TLS ClientHello: this server speaks plain HTTP only.
                let Some(head) = read_head(&mut sock).await else {
                    return;
                };
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (code, body) = if let Some(c) = path.strip_prefix("/status/") {
                    (c.parse::<u16>().unwrap_or(500), "status page".to_string())
                } else if let Some(ms) = path.strip_prefix("/slow/") {
                    // The slow answer is what the slow-response tests check.
                    tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                    (200, "slow hello".to_string())
                } else if path == "/ok" {
                    (
                        200,
                        format!("hello bergamot {}", head.lines().next().unwrap_or("")),
                    )
                } else {
                    (404, "not found".to_string())
                };
                respond(&mut sock, &format!("{code} X"), &body).await;
            });
        }
    });
    addr
}

/// A port on 127.0.0.1 that nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// An http check with `params` and a 10 s timeout.
async fn http(params: serde_json::Value) -> CheckResult {
    http_within(params, Duration::from_secs(10)).await
}

async fn http_within(params: serde_json::Value, timeout: Duration) -> CheckResult {
    run(&HttpExecutor::new(), execute("http", params, timeout)).await
}

/// Runs `e` on `executor`; the result is of `e`'s check.
async fn run(executor: &dyn Executor, e: ExecuteCheck) -> CheckResult {
    let r = executor.execute(&e).await;
    assert_eq!(r.check_id, e.check_id);
    r
}

#[tokio::test]
async fn http_ok_with_perfdata() {
    let addr = http_server().await;
    let r = http(
        serde_json::json!({"url": format!("http://{addr}/ok"), "body_contains": "hello bergamot"}),
    )
    .await;
    assert_eq!(r.status, Status::Ok, "{}", r.output);
    assert!(r.output.starts_with("HTTP OK - 200 "), "{}", r.output);
    let time = perfdata(&r, "time");
    assert_eq!(time.uom, "ms");
    assert!(time.value.is_some_and(|v| v >= 0.0));
    let size = perfdata(&r, "size");
    assert!(size.value.is_some_and(|v| v > 0.0));
}

#[tokio::test]
async fn http_method_is_sent() {
    let addr = http_server().await;
    let r = http(
        serde_json::json!({"url": format!("http://{addr}/ok"), "method": "head",
            "body_contains": "GET"}),
    )
    .await;
    // HEAD has no body, so the GET the server would echo cannot be there.
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    let r = http(
        serde_json::json!({"url": format!("http://{addr}/ok"), "method": "POST",
            "body_contains": "POST /ok HTTP/1.1"}),
    )
    .await;
    assert_eq!(r.status, Status::Ok, "{}", r.output);
}

#[tokio::test]
async fn http_wrong_status_is_critical() {
    let addr = http_server().await;
    let r = http(serde_json::json!({"url": format!("http://{addr}/status/500")})).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(
        r.output.contains("500") && r.output.contains("expected 200-399"),
        "{}",
        r.output
    );

    // 404 is fine when expected; 200 is not then.
    let r = http(
        serde_json::json!({"url": format!("http://{addr}/status/404"), "expect_status": [404]}),
    )
    .await;
    assert_eq!(r.status, Status::Ok, "{}", r.output);
    let r =
        http(serde_json::json!({"url": format!("http://{addr}/ok"), "expect_status": "404"})).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
}

#[tokio::test]
async fn http_body_mismatch_is_critical() {
    let addr = http_server().await;
    let r =
        http(serde_json::json!({"url": format!("http://{addr}/ok"), "body_contains": "goodbye"}))
            .await;
    assert_result(&r, Status::Critical, &["body does not contain \"goodbye\""]);
}

#[tokio::test]
async fn http_slow_response_crosses_thresholds() {
    let addr = http_server().await;
    // The server waits 300 ms, so the response time is at least that.
    let url = format!("http://{addr}/slow/300");
    let slow = |crit_ms: u64| serde_json::json!({"url": url, "warn_ms": 100, "crit_ms": crit_ms});
    let r = http_within(slow(200), Duration::from_secs(20)).await;
    assert_result(&r, Status::Critical, &["response time over 200 ms"]);
    let time = perfdata(&r, "time");
    assert_eq!(
        (time.warn.as_deref(), time.crit.as_deref()),
        (Some("100"), Some("200"))
    );

    let r = http_within(slow(600_000), Duration::from_secs(20)).await;
    assert_eq!(r.status, Status::Warning, "{}", r.output);
}

#[tokio::test]
async fn http_past_timeout_is_timeout() {
    let addr = http_server().await;
    let r = http_within(
        serde_json::json!({"url": format!("http://{addr}/slow/60000")}),
        Duration::from_secs(1),
    )
    .await;
    assert_result(&r, Status::Timeout, &["no complete response after 1s"]);
}

#[tokio::test]
async fn http_refused_connection_is_critical() {
    let port = closed_port().await;
    let r = http(serde_json::json!({"url": format!("http://127.0.0.1:{port}/")})).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.to_lowercase().contains("refused"), "{}", r.output);
    assert!(r.output.contains(&port.to_string()), "{}", r.output);
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_critical() {
    let addr = http_server().await;
    let r = http(serde_json::json!({"url": format!("https://localhost:{}/ok", addr.port())})).await;
    // With the `https` feature the TLS handshake fails; without it the
    // request cannot be made.
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    #[cfg(feature = "https")]
    assert!(
        r.output.contains("TLS handshake with localhost failed"),
        "{}",
        r.output
    );
}

/// A tcp check with `params` and a 10 s timeout.
async fn tcp(params: serde_json::Value) -> CheckResult {
    tcp_within(params, Duration::from_secs(10)).await
}

async fn tcp_within(params: serde_json::Value, timeout: Duration) -> CheckResult {
    run(&TcpExecutor::new(), execute("tcp", params, timeout)).await
}

#[tokio::test]
async fn tcp_connect_ok_with_time_perfdata() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepting = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    let r = tcp(
        serde_json::json!({"host": "127.0.0.1", "port": port, "warn_ms": 60000, "crit_ms": 120000}),
    )
    .await;
    assert_result(&r, Status::Ok, &[&format!("127.0.0.1:{port}")]);
    assert_eq!(r.perfdata.len(), 1);
    assert_eq!(r.perfdata[0].label, "time");
    assert_eq!(r.perfdata[0].crit.as_deref(), Some("120000"));
    accepting.await.expect("join").expect("the check connected");
}

#[tokio::test]
async fn tcp_refused_is_critical() {
    let port = closed_port().await;
    let r = tcp(serde_json::json!({"host": "127.0.0.1", "port": port})).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.to_lowercase().contains("refused"), "{}", r.output);
}

#[tokio::test]
async fn tcp_unresolvable_host_is_critical() {
    let r = tcp_within(
        serde_json::json!({"host": "no-such-host.invalid", "port": 80}),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        r.status == Status::Critical || r.status == Status::Timeout,
        "{:?} {}",
        r.status,
        r.output
    );
    assert!(r.output.contains("no-such-host.invalid"), "{}", r.output);
}

/// A listener whose accept queue is full and never drained: further SYNs are
/// dropped by Linux, so a connect hangs until the check's timeout.
#[tokio::test]
async fn tcp_connect_past_timeout_is_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    // Fill the accept queue (backlog 0 still admits one or two).
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let r = tcp_within(
        serde_json::json!({"host": "127.0.0.1", "port": addr.port()}),
        Duration::from_secs(1),
    )
    .await;
    assert_result(&r, Status::Timeout, &["no connection after 1s"]);
}
