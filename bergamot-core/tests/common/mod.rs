//! Helpers shared by the executor tests (`mod common;` in each).
// Each test file uses a part of them.
#![allow(dead_code)]

use bergamot_core::model::{CheckId, CheckResult, Perfdata, Status};
use bergamot_core::queue::ExecuteCheck;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An execute of `engine` with `params` (a JSON object) and `timeout`, in
/// pool `default`, for a new check.
pub fn execute(engine: &str, params: serde_json::Value, timeout: Duration) -> ExecuteCheck {
    ExecuteCheck {
        id: uuid::Uuid::new_v4(),
        check_id: CheckId::random(),
        site: "test".into(),
        pool: "default".into(),
        engine: engine.into(),
        params: serde_json::from_value(params).expect("params object"),
        timeout,
        ttl: Duration::from_secs(60),
        scheduled_at: chrono::Utc::now(),
        execute_now: false,
    }
}

/// Asserts the result's status and that its output contains each of `parts`.
pub fn assert_result(r: &CheckResult, status: Status, parts: &[&str]) {
    assert_eq!(r.status, status, "{}", r.output);
    for part in parts {
        assert!(r.output.contains(part), "{part:?} not in {}", r.output);
    }
}

/// Reads an HTTP request's head, up to its blank line; `None` when the
/// client closes first or opens with a TLS ClientHello (the test servers
/// speak plain HTTP on their connection).
pub async fn read_head<S: AsyncRead + Unpin>(sock: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.first() == Some(&0x16) {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Writes a whole HTTP/1.1 response (`status` such as `200 OK`) with `body`
/// and closes the connection.
pub async fn respond<S: AsyncWrite + Unpin>(sock: &mut S, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(response.as_bytes()).await.ok();
    sock.shutdown().await.ok();
}

/// The result's perfdata labelled `label`.
pub fn perfdata<'r>(r: &'r CheckResult, label: &str) -> &'r Perfdata {
    r.perfdata
        .iter()
        .find(|p| p.label == label)
        .unwrap_or_else(|| panic!("{label} perfdata in {:?}", r.perfdata))
}
