//! Latency benchmark of the web node (run on demand:
//! `cargo bench -p bergamot-daemon --bench latency`).
//!
//! 1. Execute-now to websocket update: `POST /api/checks/{id}/execute`, then
//!    wait for the check's update on a subscribed websocket; p50/p99 over
//!    1,000 runs with scheduler, worker, processor and web in this process:
//!    on the embedded backends, then on PostgreSQL + RabbitMQ
//!    (`BERGAMOT_TEST_POSTGRES_URL`, `BERGAMOT_TEST_AMQP_URL`; skipped with a
//!    message when unset) with a fresh schema and exchange prefix that are
//!    removed afterwards.
//! 2. Fan-out on the embedded backends: 1,000 websocket clients subscribed to
//!    everything while 1,000 results/s are applied for a few seconds; p50/p99
//!    delivery latency (result published to update received) and the
//!    server's RSS. Runs twice, each in a fresh server process with the
//!    clients in another process: once with one update per websocket frame
//!    (`Hub::set_frame_limits(1, _)`), once with the default batching.
//!
//! `BERGAMOT_BENCH_ONLY=execute|fanout` runs one part only,
//! `BERGAMOT_BENCH_FANOUT=single|batched` one fan-out pass only,
//! `BERGAMOT_BENCH_FRAME_BYTES=n` sets the frame size limit.

use bergamot_amqp::{AmqpConfig, AmqpQueue};
use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_daemon::web::auth::{hash_token, AuthConfig, Role, TokenEntry};
use bergamot_daemon::{start, Backends, Options, Running};
use bergamot_store::{PostgresConfig, PostgresStore};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const SITE: &str = "bench";
const TRAPS: usize = 100;
const RUNS: usize = 1000;
const CLIENTS: usize = 1000;
const RATE_PER_SEC: usize = 1000;
const LOAD_SECS: u64 = 3;
const ROLE_ENV: &str = "BERGAMOT_BENCH_ROLE";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Wall clock in microseconds (shared by the server and client processes).
fn wall_micros() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn config() -> Config {
    let mut text = format!(
        "site = \"{SITE}\"\n[[command]]\nname = \"ok\"\nengine = \"dummy\"\n[[group]]\nname = \"all\"\n\
         [[host]]\nname = \"h\"\ngroups = [\"all\"]\n[[host.service]]\nname = \"now\"\ncommand = \"ok\"\nevery = \"1h\"\n"
    );
    for i in 0..TRAPS {
        text.push_str(&format!("[[host.trap]]\nname = \"t{i}\"\n"));
    }
    Config::from_str_named("bench.toml", &text).expect("config")
}

async fn start_daemon(backends: Backends) -> (Running, tokio::sync::oneshot::Sender<()>) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = start(
        config().model,
        backends,
        bergamot_core::exec::Executors::standard(),
        Options {
            listen: "127.0.0.1:0".parse().expect("addr"),
            auth: AuthConfig {
                anonymous_read: true,
                users: vec![],
                tokens: vec![TokenEntry {
                    name: "bench".into(),
                    token_hash: hash_token("bench"),
                    role: Role::Operator,
                }],
                ..AuthConfig::default()
            },
            ..Options::default()
        },
        async move {
            stop_rx.await.ok();
        },
    )
    .await
    .expect("start");
    (running, stop_tx)
}

async fn post(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).ok();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Part 1: execute-now to websocket update over `RUNS` runs.
async fn execute_now(name: &str, backends: Backends) {
    let (running, stop) = start_daemon(backends).await;
    let addr = running.addr.expect("addr");
    let url = format!("ws://{addr}/ws?token=bench");
    let check = CheckId::service(SITE, "h", "now");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    ws.send(Message::Text(
        json!({"subscribe": {"checks": [check.to_string()]}}).to_string(),
    ))
    .await
    .expect("send");
    let _ = ws.next().await;
    let mut lat = Vec::with_capacity(RUNS);
    let mut last_version = 0;
    let load_before = loadavg();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        assert_eq!(
            post(addr, &format!("/api/checks/{check}/execute")).await,
            202
        );
        'wait: loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("websocket closed");
            };
            let frame: Vec<Value> = serde_json::from_str(&t).expect("json array");
            for v in frame {
                if v["kind"] == "check" {
                    let ver = v["state"]["version"].as_u64().unwrap_or(0);
                    if ver > last_version {
                        last_version = ver;
                        break 'wait;
                    }
                }
            }
        }
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "execute-now -> websocket update, {name}, {RUNS} runs: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
         (load average before: {load_before}; after: {})",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        loadavg()
    );
    drop(ws);
    stop.send(()).ok();
    running.done.await.ok();
}

async fn execute_now_services() {
    let (Ok(pg), Ok(amqp)) = (
        std::env::var("BERGAMOT_TEST_POSTGRES_URL"),
        std::env::var("BERGAMOT_TEST_AMQP_URL"),
    ) else {
        println!(
            "execute-now -> websocket update, PostgreSQL + RabbitMQ: skipped \
             (set BERGAMOT_TEST_POSTGRES_URL and BERGAMOT_TEST_AMQP_URL)"
        );
        return;
    };
    let tag = format!("bench_{}_{}", std::process::id(), wall_micros() as u64);
    let store = PostgresStore::connect(PostgresConfig::new(&pg).with_schema(&tag))
        .await
        .expect("postgres store");
    let queue = AmqpQueue::connect(
        AmqpConfig::new(&amqp)
            .with_prefix(&tag)
            .with_site(SITE)
            .with_delete_topology_on_close(true),
    )
    .await
    .expect("amqp queue");
    let store = Arc::new(store);
    let queue = Arc::new(queue);
    execute_now(
        "PostgreSQL + RabbitMQ",
        Backends {
            store: store.clone(),
            queue: queue.clone(),
            notifications: Arc::new(bergamot_core::notify::InMemoryNotificationStore::new()),
        },
    )
    .await;
    queue.close().await.ok();
    store.close();
    // Remove the bench's schema.
    match tokio_postgres::connect(&pg, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            let task = tokio::spawn(conn);
            if let Err(e) = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {tag} CASCADE"))
                .await
            {
                eprintln!("could not drop schema {tag}: {e}");
            }
            drop(client);
            task.await.ok();
        }
        Err(e) => eprintln!("could not drop schema {tag}: {e}"),
    }
}

/// Latency samples (ms) of check updates in one frame: every check update's
/// output is the wall-clock time its result was published. Scans the bytes
/// with prebuilt SIMD finders instead of parsing JSON: the clients share the
/// CPU with the server.
fn scan_frame(text: &[u8], now: f64, out: &mut Vec<f32>) {
    use memchr::memmem::Finder;
    use std::sync::OnceLock;
    static KIND: OnceLock<Finder<'static>> = OnceLock::new();
    static OUTPUT: OnceLock<Finder<'static>> = OnceLock::new();
    let kind = KIND.get_or_init(|| Finder::new(b"\"kind\":\"check\""));
    let output = OUTPUT.get_or_init(|| Finder::new(b"\"output\":\""));
    let mut rest = text;
    while let Some(k) = kind.find(rest) {
        rest = &rest[k + kind.needle().len()..];
        let Some(o) = output.find(rest) else { break };
        rest = &rest[o + output.needle().len()..];
        let Some(end) = memchr::memchr(b'"', rest) else {
            break;
        };
        if let Some(sent) = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
        {
            out.push(((now - sent) / 1e3) as f32);
        }
        rest = &rest[end..];
    }
}

/// A minimal websocket client for the fan-out clients: the handshake, one
/// masked text frame out, and unmasked frames in, parsed in place from a
/// 64 KiB read buffer (no per-message allocation, copy or UTF-8 check, few
/// read calls): the clients share the CPU with the server under test.
struct RawWs {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl RawWs {
    async fn connect(addr: &str, path: &str) -> std::io::Result<RawWs> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1 << 16);
        let end = loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&buf[..end]).into_owned(),
            ));
        }
        Ok(RawWs {
            stream,
            buf,
            start: end,
        })
    }

    /// Sends `text` as one masked text frame (zero mask key; under 126 bytes).
    async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        let len = u8::try_from(text.len())
            .ok()
            .filter(|l| *l < 126)
            .ok_or_else(|| std::io::Error::other("message too long"))?;
        let mut frame = vec![0x81, 0x80 | len, 0, 0, 0, 0];
        frame.extend_from_slice(text.as_bytes());
        self.stream.write_all(&frame).await
    }

    /// Calls `f` with the payload of each text frame until the connection
    /// closes or `f` returns false.
    async fn for_each_text(&mut self, mut f: impl FnMut(&[u8]) -> bool) {
        loop {
            // Parse every complete frame in the buffer.
            loop {
                let avail = &self.buf[self.start..];
                if avail.len() < 2 {
                    break;
                }
                let (len, hdr) = match avail[1] & 0x7f {
                    126 if avail.len() >= 4 => {
                        (usize::from(u16::from_be_bytes([avail[2], avail[3]])), 4)
                    }
                    127 if avail.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&avail[2..10]);
                        (
                            usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                            10,
                        )
                    }
                    126 | 127 => break,
                    n => (usize::from(n), 2),
                };
                if avail.len() < hdr + len {
                    self.buf.reserve(hdr + len - avail.len());
                    break;
                }
                let op = avail[0] & 0x0f;
                let keep_going = match op {
                    0x1 => f(&avail[hdr..hdr + len]),
                    0x8 => false,
                    _ => true,
                };
                self.start += hdr + len;
                if !keep_going {
                    return;
                }
            }
            if self.start > 0 && self.start * 2 >= self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(1 << 16);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// The client fleet (own process): connects, subscribes to everything,
/// prints `ready`, records latencies until the server closes every
/// connection, then prints one JSON line of figures.
async fn clients_main() {
    let addr = std::env::var("BERGAMOT_BENCH_ADDR").expect("addr");
    let mut tasks = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut ws = RawWs::connect(&addr, "/ws?token=bench").await.expect("ws");
        ws.send_text(r#"{"subscribe":{"all":true}}"#)
            .await
            .expect("send");
        // The subscription is confirmed before the load starts.
        ws.for_each_text(|_| false).await;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut frames = 0u64;
            ws.for_each_text(|payload| {
                frames += 1;
                scan_frame(payload, wall_micros(), &mut samples);
                true
            })
            .await;
            (samples, frames)
        }));
    }
    println!("ready");
    let mut all = Vec::new();
    let mut frames = 0;
    for t in tasks {
        if let Ok((s, f)) = t.await {
            all.extend(s.into_iter().map(f64::from));
            frames += f;
        }
    }
    let n = all.len();
    println!(
        "{}",
        json!({
            "delivered": n,
            "frames": frames,
            "p50": pct(&mut all, 0.5),
            "p99": pct(&mut all, 0.99),
            "max": pct(&mut all, 1.0),
            "rss": rss_mib(),
        })
    );
}

/// Part 2, one fan-out pass (own process): a fresh embedded daemon, the
/// clients in a child process, `RATE_PER_SEC` results/s for `LOAD_SECS`.
async fn fanout_main() {
    let per_update = std::env::var("BERGAMOT_BENCH_FRAMES").as_deref() == Ok("single");
    let backends = Backends::in_memory();
    let queue = backends.queue.clone();
    let (running, stop) = start_daemon(backends).await;
    let web = running.web.clone().expect("web");
    let frame_bytes = std::env::var("BERGAMOT_BENCH_FRAME_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(bergamot_daemon::web::ws::DEFAULT_MAX_FRAME_BYTES);
    let frame_messages = if per_update {
        1
    } else {
        bergamot_daemon::web::ws::DEFAULT_MAX_UPDATES_PER_FRAME
    };
    web.hub.set_frame_limits(frame_messages, frame_bytes);
    let addr = running.addr.expect("addr");
    let rss_before = rss_mib();
    // The pipeline before the websocket: result published -> its check
    // update on the queue (what the hub receives), seen by one more
    // subscriber.
    let mut updates = queue.subscribe_updates().await.expect("updates");
    let pipeline = Arc::new(parking_lot::Mutex::new(Vec::<f64>::new()));
    let pipeline_task = tokio::spawn({
        let pipeline = pipeline.clone();
        async move {
            while let Some(Ok(u)) = updates.next().await {
                if let bergamot_core::queue::Update::Check(c) = u {
                    if let Ok(sent) = c.state.output.parse::<f64>() {
                        pipeline.lock().push((wall_micros() - sent) / 1e3);
                    }
                }
            }
        }
    });
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE_ENV, "clients")
        .env("BERGAMOT_BENCH_ADDR", addr.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::task::spawn_blocking(move || {
        let first = lines.next();
        (first, lines)
    });
    let (first, mut lines) = ready.await.expect("join");
    assert_eq!(
        first.and_then(Result::ok).as_deref(),
        Some("ready"),
        "clients failed"
    );
    let rss_idle = rss_mib();
    let traps: Vec<CheckId> = (0..TRAPS)
        .map(|i| CheckId::trap(SITE, "h", &format!("t{i}")))
        .collect();
    let per_tick = RATE_PER_SEC / 100;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut published = 0usize;
    let mut rss_peak = rss_idle;
    let load_before = loadavg();
    let run_start = Instant::now();
    while run_start.elapsed() < Duration::from_secs(LOAD_SECS) {
        tick.tick().await;
        for _ in 0..per_tick {
            let status = if published.is_multiple_of(2) {
                Status::Ok
            } else {
                Status::Critical
            };
            let r = CheckResult::new(
                traps[published % TRAPS],
                status,
                format!("{}", wall_micros()),
                chrono::Utc::now(),
            );
            queue.publish_result(r).await.expect("publish");
            published += 1;
        }
        if published.is_multiple_of(100) {
            rss_peak = rss_peak.max(rss_mib());
        }
    }
    let secs = run_start.elapsed().as_secs_f64();
    let load_after = loadavg();
    // Let the backlog drain, sampling RSS meanwhile.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(rss_mib());
    }
    let m = &web.metrics;
    let coalesced = m.ws_coalesced.load(std::sync::atomic::Ordering::Relaxed);
    let frames = m.ws_frames_sent.load(std::sync::atomic::Ordering::Relaxed);
    let messages = m
        .ws_messages_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    let bytes = m.ws_bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
    // Stopping the daemon closes every websocket, which ends the clients.
    stop.send(()).ok();
    running.done.await.ok();
    pipeline_task.abort();
    let mut pipeline = std::mem::take(&mut *pipeline.lock());
    let result = tokio::task::spawn_blocking(move || lines.next())
        .await
        .expect("join")
        .and_then(Result::ok)
        .unwrap_or_default();
    child.wait().ok();
    let r: Value = serde_json::from_str(&result).unwrap_or_default();
    let delivered = r["delivered"].as_u64().unwrap_or(0);
    let mode = if per_update {
        "one update per frame".to_string()
    } else {
        format!("batched frames (up to {frame_messages} messages / {frame_bytes} bytes)")
    };
    println!(
        "fan-out, {mode}: {CLIENTS} clients, {published} results in {secs:.1} s ({:.0}/s): \
         {delivered} check updates delivered ({:.1}% of {}), coalesced {coalesced}, \
         {frames} frames for {messages} messages ({:.0} bytes per message); delivery latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        published as f64 / secs,
        100.0 * delivered as f64 / (published * CLIENTS) as f64,
        published * CLIENTS,
        bytes as f64 / messages.max(1) as f64,
        r["p50"].as_f64().unwrap_or(f64::NAN),
        r["p99"].as_f64().unwrap_or(f64::NAN),
        r["max"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "  result published -> its update on the queue (before the websocket): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut pipeline, 0.5),
        pct(&mut pipeline, 0.99)
    );
    println!(
        "  server RSS: {rss_before:.1} MiB before clients, {rss_idle:.1} MiB with {CLIENTS} idle clients, \
         peak {rss_peak:.1} MiB under load; client process RSS at end {:.1} MiB; \
         load average before {load_before}, after {load_after}",
        r["rss"].as_f64().unwrap_or(f64::NAN),
    );
    std::io::stdout().flush().ok();
}

/// Runs one fan-out pass in a fresh process of this bench.
fn fanout_pass(frames: &str) {
    let status = Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE_ENV, "fanout")
        .env("BERGAMOT_BENCH_FRAMES", frames)
        .status()
        .expect("fan-out process");
    assert!(status.success(), "fan-out pass failed: {status}");
}

fn main() {
    let role = std::env::var(ROLE_ENV).unwrap_or_default();
    // Named threads, so that a profile tells the server from the clients.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(if role == "clients" {
            "bench-client"
        } else {
            "bergamot-server"
        })
        .build()
        .expect("runtime");
    match role.as_str() {
        "clients" => rt.block_on(clients_main()),
        "fanout" => rt.block_on(fanout_main()),
        _ => rt.block_on(bench_main()),
    }
}

async fn bench_main() {
    let only = std::env::var("BERGAMOT_BENCH_ONLY").unwrap_or_default();
    println!(
        "latency bench: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    if only.is_empty() || only == "execute" {
        execute_now("embedded", Backends::in_memory()).await;
        execute_now_services().await;
    }
    if only.is_empty() || only == "fanout" {
        // BERGAMOT_BENCH_FANOUT=single|batched runs one of the two passes.
        let which = std::env::var("BERGAMOT_BENCH_FANOUT").unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            for mode in ["single", "batched"] {
                if which.is_empty() || which == mode {
                    fanout_pass(mode);
                }
            }
        })
        .await
        .expect("fan-out");
    }
}
