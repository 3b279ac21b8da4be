//! Helpers shared by the daemon's tests: a minimal HTTP/1.1 client (one
//! request per connection) and a cheap argon2 hash for test users.
#![allow(dead_code)]

pub mod cluster;
pub mod setup;

use bergamot_core::model::Model;
use bergamot_daemon::{Backends, Options, Running};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The command `ok` (engine `dummy`, always OK) most test configs run.
pub const OK_COMMAND: &str = r#"
[[command]]
name = "ok"
engine = "dummy"
params = { status = "OK" }
"#;

/// Host `h` (checked hourly) with one service `cpu` (command [`OK_COMMAND`]):
/// the rest of [`one_service_config`].
const ONE_SERVICE: &str = r#"
[[host]]
name = "h"
every = "1h"

[[host.service]]
name = "cpu"
command = "ok"
"#;

/// The config `<site>.toml` of site `site` with [`ONE_SERVICE`].
pub fn one_service_config(site: &str) -> bergamot_core::config::Config {
    let text = format!("site = \"{site}\"\n{OK_COMMAND}{ONE_SERVICE}");
    bergamot_core::config::Config::from_str_named(&format!("{site}.toml"), &text).expect("config")
}

/// A response: status and body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    // Read until the server closes, or until Content-Length bytes of body
    // arrived (some servers keep the connection open regardless).
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16384];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                if let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                {
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Resp { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Resp {
    request(addr, "GET", path, auth, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub async fn post(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> Resp {
    request(addr, "POST", path, auth, Some(body))
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub async fn delete(addr: SocketAddr, path: &str, auth: Option<&str>) -> Resp {
    request(addr, "DELETE", path, auth, None)
        .await
        .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
}

/// `Authorization: Basic ...` for a user and password.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An argon2id hash with tiny parameters: fast in debug builds.
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a.hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// What stops a daemon of [`start_in_process`] (sent or dropped).
pub type Stop = tokio::sync::oneshot::Sender<()>;

/// Starts `model` in this process on `backends` with the standard
/// executors; it runs until the [`Stop`] is sent or dropped.
pub async fn start_in_process(
    model: Model,
    backends: Backends,
    options: Options,
) -> (Running, Stop) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = bergamot_daemon::start(
        model,
        backends,
        bergamot_core::exec::Executors::standard(),
        options,
        async move {
            stopped.await.ok();
        },
    )
    .await
    .expect("start daemon");
    (running, stop)
}

/// Stops a daemon of [`start_in_process`] and waits until every role
/// stopped cleanly.
pub async fn stop(running: Running, stop: Stop) {
    stop.send(()).ok();
    running.done.await.expect("clean stop");
}

/// `/healthz` of `addr` as JSON, or `None` while it does not answer.
pub async fn healthz(addr: SocketAddr) -> Option<serde_json::Value> {
    let r = request(addr, "GET", "/healthz", None, None).await.ok()?;
    serde_json::from_str(&r.body).ok()
}
