//! Load benchmark of a split deployment (run on demand, never in CI):
//! `bergamotd scheduler | worker | processor | web` as separate OS processes
//! over the real RabbitMQ and PostgreSQL, N checks on the `dummy` engine.
//!
//! ```sh
//! cargo bench -p bergamot-daemon --bench load --no-run        # build first
//! flock -s /tmp/bergamot-disruptive.lock \
//!     cargo bench -p bergamot-daemon --bench load -- --checks 100000 --seconds 60
//! cargo bench -p bergamot-daemon --bench load -- --smoke      # 2,000 checks, 10 s
//! ```
//!
//! Services: `BERGAMOT_TEST_POSTGRES_URL` and `BERGAMOT_TEST_AMQP_URL` (or
//! `--pg` / `--amqp`); defaults are the local test services. Each run uses
//! its own site, PostgreSQL schema and AMQP prefix, and drops them at the end.
//!
//! What it does:
//! 1. writes a config of `--checks` services (`--services-per-host` per host,
//!    hosts spread over `--groups` groups) whose statuses follow `--mix`
//!    (weighted dummy status cycles) and whose intervals follow `--every`
//!    (weighted; `retry_every` = `every`, so the offered rate does not depend
//!    on the statuses): offered rate = sum of 1 / interval;
//! 2. starts the web node, then `--processors` processors, `--workers`
//!    workers and one scheduler, each its own `bergamotd` process;
//! 3. opens one websocket on the web node subscribed to everything;
//! 4. after `--warmup` seconds, measures for `--seconds`:
//!    - results applied end to end per second: the growth of
//!      `sum(check_state.version)` in the run's schema (one version per
//!      applied result; nothing else changes states during the run);
//!    - result-to-websocket latency: receive time of each check update minus
//!      its `state.last_check_at` (the result's execution time in the worker;
//!      same clock), p50 / p99 / max;
//!    - CPU seconds per process over the window from `/proc/<pid>/stat`: each
//!      bergamotd role, the bench itself, RabbitMQ (`beam.smp`) and
//!      PostgreSQL (every `postgres` process; shared with anything else
//!      using the server), plus the whole machine's busy cores from
//!      `/proc/stat`;
//! 5. prints the queues of the run's prefix that hold messages (backlog);
//! 6. unless `--no-probe`, stops the nodes and measures the ceilings of the
//!    parts in this process, on the run's schema and prefix, a few seconds
//!    each: `PostgresStore::apply_result` alone, and `Processor::handle_result`
//!    (store + update publishing, what a processor does per delivery apart
//!    from consuming and acking), one at a time and 16 at once.

use bergamot_amqp::{AmqpConfig, AmqpQueue};
use futures::{FutureExt, SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SITE: &str = "load";
const USAGE: &str = "\
load benchmark: bergamotd roles as separate processes over RabbitMQ + PostgreSQL

options (defaults in brackets):
  --checks N              scheduled dummy checks [100000]
  --seconds S             measurement window [60]
  --warmup W              seconds before the window [30]
  --every MIX             weighted intervals, e.g. 10s=90,60s=10 [10s]
  --mix MIX               weighted status cycles, statuses joined by '|', e.g.
                          OK=90,OK|CRITICAL=5,OK|OK|WARNING|WARNING|OK=5
                          [OK=90,OK|OK|OK|WARNING|WARNING|OK=5,OK|CRITICAL=5]
  --workers K             worker processes [1]
  --processors P          processor processes [1]
  --result-pools R        result processing pools [32]
  --worker-concurrency C  checks one worker runs at a time [256]
  --processor-lanes L     lanes of each processor [4]
  --batch-max B           items per RabbitMQ message, 1 = wire v1 [256]
  --batch-linger-ms T     linger of a busy routing key [5]
  --services-per-host M   [100]
  --groups G              groups the hosts are spread over [20]
  --pg URL / --amqp URL   services [env BERGAMOT_TEST_POSTGRES_URL / BERGAMOT_TEST_AMQP_URL,
                          else postgres://postgres@127.0.0.1:5432/test,
                          amqp://guest:guest@127.0.0.1:5672/%2f]
  --smoke                 2000 checks, 5 s warm-up, 10 s window (each overridable)
  --keep-logs             keep the temp dir with the config and the nodes' logs
  --no-probe              skip the ceilings of the store and the processor (step 6)
";

#[derive(Debug, Clone)]
struct Args {
    checks: usize,
    seconds: u64,
    warmup: u64,
    every: Vec<(String, u32)>,
    mix: Vec<(Vec<String>, u32)>,
    workers: usize,
    processors: usize,
    result_pools: u16,
    worker_concurrency: usize,
    processor_lanes: usize,
    batch_max: u16,
    batch_linger_ms: u64,
    per_host: usize,
    groups: usize,
    pg: String,
    amqp: String,
    keep_logs: bool,
    probe: bool,
}

/// `a=3,b=1` (a weight of 1 when omitted).
fn weighted(s: &str) -> Vec<(String, u32)> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.rsplit_once('=') {
            Some((v, w)) => (
                v.trim().to_string(),
                w.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad weight in {p:?}")),
            ),
            None => (p.to_string(), 1),
        })
        .collect()
}

fn parse_args() -> Args {
    let env = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    let mut a = Args {
        checks: 100_000,
        seconds: 60,
        warmup: 30,
        every: weighted("10s"),
        mix: Vec::new(),
        workers: 1,
        processors: 1,
        result_pools: 32,
        worker_concurrency: 256,
        processor_lanes: bergamot_core::processor::DEFAULT_LANES,
        batch_max: 256,
        batch_linger_ms: 5,
        per_host: 100,
        groups: 20,
        pg: env("BERGAMOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into()),
        amqp: env("BERGAMOT_TEST_AMQP_URL")
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        keep_logs: false,
        probe: true,
    };
    let mut mix = "OK=90,OK|OK|OK|WARNING|WARNING|OK=5,OK|CRITICAL=5".to_string();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut checks, mut seconds, mut warmup) = (None, None, None);
    let mut smoke = false;
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        let mut value = || {
            i += 1;
            argv.get(i)
                .cloned()
                .unwrap_or_else(|| panic!("{flag} needs a value\n{USAGE}"))
        };
        let num = |v: String| -> u64 {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {v}"))
        };
        match flag {
            // Passed by `cargo bench` to every bench target.
            "--bench" => {}
            "--checks" => checks = Some(num(value()) as usize),
            "--seconds" => seconds = Some(num(value())),
            "--warmup" => warmup = Some(num(value())),
            "--every" => a.every = weighted(&value()),
            "--mix" => mix = value(),
            "--workers" => a.workers = num(value()) as usize,
            "--processors" => a.processors = num(value()) as usize,
            "--result-pools" => a.result_pools = num(value()) as u16,
            "--worker-concurrency" => a.worker_concurrency = num(value()) as usize,
            "--processor-lanes" => a.processor_lanes = (num(value()) as usize).max(1),
            "--batch-max" => a.batch_max = (num(value()) as u16).max(1),
            "--batch-linger-ms" => a.batch_linger_ms = num(value()),
            "--services-per-host" => a.per_host = (num(value()) as usize).max(1),
            "--groups" => a.groups = (num(value()) as usize).max(1),
            "--pg" => a.pg = value(),
            "--amqp" => a.amqp = value(),
            "--smoke" => smoke = true,
            "--keep-logs" => a.keep_logs = true,
            "--no-probe" => a.probe = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
        i += 1;
    }
    if smoke {
        a.checks = 2000;
        a.seconds = 10;
        a.warmup = 5;
    }
    a.checks = checks.unwrap_or(a.checks);
    a.seconds = seconds.unwrap_or(a.seconds).max(1);
    a.warmup = warmup.unwrap_or(a.warmup);
    a.mix = weighted(&mix)
        .into_iter()
        .map(|(cycle, w)| (cycle.split('|').map(|s| s.trim().to_string()).collect(), w))
        .collect();
    assert!(!a.every.is_empty() && !a.mix.is_empty(), "{USAGE}");
    a
}

/// Seconds of a duration like `10s`, `1m`, `500ms` (what the bench offers;
/// bergamotd validates the real syntax).
fn seconds_of(d: &str) -> f64 {
    let (num, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("bad interval {d:?}"));
    match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => panic!("bad interval unit in {d:?} (use ms, s, m, h)"),
    }
}

/// Item `i` of `n` under weights: deterministic, proportional.
fn pick<T>(items: &[(T, u32)], i: usize, n: usize) -> usize {
    let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum::<u64>().max(1);
    // Interleave: position in [0, total) by a multiplicative hash of i.
    let x = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % (total * n as u64).max(1);
    let mut at = x / n as u64;
    for (k, (_, w)) in items.iter().enumerate() {
        if at < u64::from(*w) {
            return k;
        }
        at -= u64::from(*w);
    }
    items.len() - 1
}

/// The config text and the offered rate (results/s).
fn config_text(a: &Args, port: u16) -> (String, f64) {
    let mut t = String::with_capacity(a.checks * 120);
    write!(
        t,
        "site = \"{SITE}\"\n\n[defaults]\nfailed_after = 2\nrecovers_after = 2\ntimeout = \"5s\"\n\n\
         [web]\nlisten = \"127.0.0.1:{port}\"\nanonymous_read = true\n\n[[group]]\nname = \"load\"\n"
    ).ok();
    for g in 0..a.groups {
        write!(t, "\n[[group]]\nname = \"g{g}\"\nparents = [\"load\"]\n").ok();
    }
    for (k, (cycle, _)) in a.mix.iter().enumerate() {
        let list: Vec<String> = cycle.iter().map(|s| format!("\"{s}\"")).collect();
        write!(
            t,
            "\n[[command]]\nname = \"mix{k}\"\nengine = \"dummy\"\nparams = {{ statuses = [{}] }}\n",
            list.join(", ")
        ).ok();
    }
    let mut offered = 0.0;
    let hosts = a.checks.div_ceil(a.per_host);
    let mut n = 0;
    for h in 0..hosts {
        write!(
            t,
            "\n[[host]]\nname = \"h{h}\"\ngroups = [\"g{}\"]\n",
            h % a.groups
        )
        .ok();
        for s in 0..a.per_host {
            if n == a.checks {
                break;
            }
            let every = &a.every[pick(&a.every, n, a.checks)].0;
            let mix = pick(&a.mix, n.wrapping_add(7919), a.checks);
            offered += 1.0 / seconds_of(every);
            write!(
                t,
                "[[host.service]]\nname = \"s{s}\"\ncommand = \"mix{mix}\"\nevery = \"{every}\"\nretry_every = \"{every}\"\n"
            ).ok();
            n += 1;
        }
    }
    (t, offered)
}

/// utime + stime of a process, in seconds.
fn cpu_of(pid: u32, tick: f64) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / tick)
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of every process whose `comm` is in `names`, by pid.
fn cpu_by_comm(names: &[&str], tick: f64) -> BTreeMap<u32, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if names.contains(&comm.trim()) {
            if let Some(c) = cpu_of(pid, tick) {
                out.insert(pid, c);
            }
        }
    }
    out
}

/// CPU used between two samples (processes that appeared count from 0;
/// processes that exited in between are lost).
fn cpu_delta(before: &BTreeMap<u32, f64>, after: &BTreeMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, c)| c - before.get(pid).copied().unwrap_or(0.0))
        .filter(|d| *d > 0.0)
        .sum()
}

/// (busy, total) jiffies of the machine.
fn machine_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Node {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The role processes; killed (only these, by pid) when dropped.
struct Nodes(Vec<Node>);

impl Nodes {
    fn stop_all(&mut self) {
        // Scheduler first, web last, as a real shutdown would.
        for n in self.0.iter().rev() {
            let pid = nix::unistd::Pid::from_raw(n.child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = n.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            n.child.kill().ok();
            n.child.wait().ok();
        }
    }

    fn dead(&mut self) -> Vec<String> {
        self.0
            .iter_mut()
            .filter_map(|n| match n.child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "{} exited with {status}:\n{}",
                    n.name,
                    tail(&n.log, 30)
                )),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.0 {
            n.child.kill().ok();
            n.child.wait().ok();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Ctx<'a> {
    args: &'a Args,
    config: PathBuf,
    dir: PathBuf,
    schema: String,
    prefix: String,
}

fn spawn(ctx: &Ctx<'_>, role: &str, name: &str) -> Node {
    let log = ctx.dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("create a log file");
    let child = Command::new(env!("CARGO_BIN_EXE_bergamotd"))
        .arg(role)
        .arg("--config")
        .arg(&ctx.config)
        .args(["--store", &ctx.args.pg, "--schema", &ctx.schema])
        .args(["--queue", &ctx.args.amqp, "--amqp-prefix", &ctx.prefix])
        .args(["--result-pools", &ctx.args.result_pools.to_string()])
        .args(["--node", &format!("{name}-{}", &ctx.prefix[2..10])])
        .args([
            "--worker-concurrency",
            &ctx.args.worker_concurrency.to_string(),
        ])
        .args(["--processor-lanes", &ctx.args.processor_lanes.to_string()])
        .args(["--amqp-batch-max", &ctx.args.batch_max.to_string()])
        .args([
            "--amqp-batch-linger-ms",
            &ctx.args.batch_linger_ms.to_string(),
        ])
        .env(
            "RUST_LOG",
            "warn,bergamot_daemon=info,bergamot_core::exec=info",
        )
        .env("NO_COLOR", "1")
        .env_remove("BERGAMOT_STORE")
        .env_remove("BERGAMOT_QUEUE")
        .env_remove("BERGAMOT_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("spawn bergamotd (built by cargo bench)");
    Node {
        name: name.to_string(),
        child,
        log,
    }
}

/// Waits until every node in `nodes[from..]` logged "node running".
fn wait_running(nodes: &mut Nodes, from: usize, within: Duration) {
    wait_logged(nodes, &|i, _| i >= from, "node running", within);
}

/// Waits until every worker logged "worker consuming executes" (its execute
/// queues exist, so executes published from now on are routed, not
/// dead-lettered as unroutable).
fn wait_consuming(nodes: &mut Nodes, within: Duration) {
    wait_logged(
        nodes,
        &|_, n| n.name.starts_with("worker"),
        "worker consuming executes",
        within,
    );
}

/// Waits until every node `pick` selects logged `needle`.
fn wait_logged(
    nodes: &mut Nodes,
    pick: &dyn Fn(usize, &Node) -> bool,
    needle: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let dead = nodes.dead();
        assert!(dead.is_empty(), "nodes died:\n{}", dead.join("\n"));
        let pending: Vec<&str> = nodes
            .0
            .iter()
            .enumerate()
            .filter(|(i, n)| pick(*i, n))
            .map(|(_, n)| n)
            .filter(|n| {
                !std::fs::read_to_string(&n.log)
                    .unwrap_or_default()
                    .contains(needle)
            })
            .map(|n| n.name.as_str())
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} after {within:?}: {pending:?}\n{}",
            nodes
                .0
                .iter()
                .map(|n| format!("--- {}\n{}", n.name, tail(&n.log, 20)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// Websocket samples: (receive time since the bench's origin, latency ms).
#[derive(Default)]
struct WsStats {
    updates: AtomicU64,
    samples: parking_lot::Mutex<Vec<f64>>,
    recording: AtomicBool,
}

/// `state.last_check_at` of a check update, without parsing the whole frame.
fn last_check_at(frame: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    const KEY: &str = "\"last_check_at\":\"";
    let i = frame.find(KEY)? + KEY.len();
    let end = frame[i..].find('"')? + i;
    chrono::DateTime::parse_from_rfc3339(&frame[i..end])
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

async fn websocket(port: u16, stats: Arc<WsStats>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket connect (anonymous read)");
    ws.send(Message::Text(r#"{"subscribe":{"all":true}}"#.into()))
        .await
        .expect("subscribe");
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        if !t.starts_with("{\"kind\":\"check\"") && !t.contains("\"kind\":\"check\"") {
            continue;
        }
        stats.updates.fetch_add(1, Ordering::Relaxed);
        if !stats.recording.load(Ordering::Relaxed) {
            continue;
        }
        if let Some(at) = last_check_at(&t) {
            let ms = (chrono::Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            stats.samples.lock().push(ms);
        }
    }
}

async fn applied(pg: &tokio_postgres::Client, schema: &str) -> i64 {
    pg.query_one(
        &format!("SELECT COALESCE(sum(version), 0)::int8 FROM {schema}.check_state"),
        &[],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(-1)
}

/// What one probe applies.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    /// `Store::apply_result`.
    Store,
    /// `Processor::handle_result` (store, then updates published).
    Processor,
}

/// Applies results for `seconds` from `concurrency` tasks, each over its
/// own checks (so one check's results stay in order); statuses alternate
/// OK / CRITICAL per check when `flip`. Returns applied results per second.
async fn probe_rate(
    what: Probe,
    store: Arc<dyn bergamot_core::store::Store>,
    processor: Arc<bergamot_core::processor::Processor>,
    checks: Arc<Vec<bergamot_core::model::CheckId>>,
    concurrency: usize,
    flip: bool,
    seconds: f64,
) -> f64 {
    use bergamot_core::model::{CheckResult, Status};
    let applied = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (store, processor, checks, applied) = (
            store.clone(),
            processor.clone(),
            checks.clone(),
            applied.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mine: Vec<_> = checks.iter().skip(t).step_by(concurrency).collect();
            let mut round = 0usize;
            while Instant::now() < deadline {
                for &&check in &mine {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let status = if flip && round % 2 == 1 {
                        Status::Critical
                    } else {
                        Status::Ok
                    };
                    let r = CheckResult::new(check, status, "probe", chrono::Utc::now());
                    let ok = match what {
                        Probe::Store => store
                            .apply_result(&r, chrono::Utc::now())
                            .await
                            .map(|t| t.is_applied()),
                        Probe::Processor => processor
                            .handle_result(&r, chrono::Utc::now())
                            .await
                            .map(|t| t.is_applied()),
                    };
                    match ok {
                        Ok(true) => {
                            applied.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => eprintln!("probe {what:?}: {e}"),
                    }
                }
                round += 1;
            }
        }));
    }
    for t in tasks {
        t.await.ok();
    }
    applied.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

/// Step 6: ceilings of the store and of the processor's per-result work.
async fn probe(args: &Args, schema: &str, prefix: &str) {
    use bergamot_core::model::CheckId;
    let store = bergamot_store::PostgresStore::connect(
        bergamot_store::PostgresConfig::new(args.pg.clone())
            .with_schema(schema)
            .with_pool_size(16),
    )
    .await
    .expect("connect the probe's store");
    let store: Arc<dyn bergamot_core::store::Store> = Arc::new(store);
    let queue = AmqpQueue::connect(
        AmqpConfig::new(args.amqp.clone())
            .with_prefix(prefix)
            .with_result_pools(args.result_pools)
            .with_site(SITE),
    )
    .await
    .expect("connect the probe's queue");
    let queue: Arc<dyn bergamot_core::queue::Queue> = Arc::new(queue);
    let processor = Arc::new(bergamot_core::processor::Processor::new(
        store.clone(),
        queue.clone(),
    ));
    processor.refresh_model().await.expect("processor model");
    let checks: Arc<Vec<CheckId>> = Arc::new(
        (0..args.checks)
            .map(|n| {
                CheckId::service(
                    SITE,
                    &format!("h{}", n / args.per_host),
                    &format!("s{}", n % args.per_host),
                )
            })
            .collect(),
    );
    let tick = clock_tick();
    println!("\nPROBE ceilings in this process, nodes stopped (4 s each; CPU of this process and of PostgreSQL):");
    for (what, concurrency, flip) in [
        (Probe::Store, 1, false),
        (Probe::Store, 16, false),
        (Probe::Processor, 1, false),
        (Probe::Processor, 16, false),
        (Probe::Processor, 16, true),
    ] {
        let own0 = cpu_of(std::process::id(), tick).unwrap_or(0.0);
        let pg0 = cpu_by_comm(&["postgres"], tick);
        let t0 = Instant::now();
        let rate = probe_rate(
            what,
            store.clone(),
            processor.clone(),
            checks.clone(),
            concurrency,
            flip,
            4.0,
        )
        .await;
        let secs = t0.elapsed().as_secs_f64();
        let own = cpu_of(std::process::id(), tick).unwrap_or(0.0) - own0;
        let pg = cpu_delta(&pg0, &cpu_by_comm(&["postgres"], tick));
        println!(
            "  {:<9} x{concurrency:<2} {}: {rate:>6.0} results/s; bench {:.2} cores, postgresql {:.2} cores",
            format!("{what:?}").to_lowercase(),
            if flip { "OK/CRITICAL flips" } else { "steady OK        " },
            own / secs,
            pg / secs
        );
    }
}

async fn cleanup(args: &Args, schema: &str, prefix: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(&args.pg, tokio_postgres::NoTls).await {
        let h = tokio::spawn(conn);
        if let Err(e) = client
            .batch_execute(&format!(
                "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
            ))
            .await
        {
            eprintln!("cannot drop schema {schema}: {e}");
        }
        drop(client);
        h.await.ok();
    }
    match AmqpQueue::connect(
        AmqpConfig::new(args.amqp.clone())
            .with_prefix(prefix)
            .with_result_pools(args.result_pools)
            .with_delete_topology_on_close(true),
    )
    .await
    {
        Ok(q) => {
            // Declare the workers' pool exchange and queues in this instance
            // too, so that delete_topology removes them with the rest.
            let engines = bergamot_core::exec::Executors::standard().engines();
            if let Err(e) =
                bergamot_core::queue::Queue::consume_executes(&q, "default", &engines).await
            {
                eprintln!("cannot declare the execute queues of {prefix}.* to delete them: {e}");
            }
            if let Err(e) = q.delete_topology().await {
                eprintln!("cannot delete the AMQP topology {prefix}.*: {e}");
            }
            q.close().await.ok();
        }
        Err(e) => eprintln!("cannot delete the AMQP topology {prefix}.*: {e}"),
    }
}

/// Queues of `prefix` holding messages, from `rabbitmqctl` (if available).
fn backlog(prefix: &str) -> String {
    let Ok(out) = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .output()
    else {
        return "rabbitmqctl not available".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0u64;
    let mut lines = Vec::new();
    for l in text.lines() {
        let mut p = l.split_whitespace();
        let (Some(name), Some(n)) = (p.next(), p.next().and_then(|n| n.parse::<u64>().ok())) else {
            continue;
        };
        if name.starts_with(&format!("{prefix}.")) && n > 0 {
            total += n;
            lines.push(format!(
                "{}={n}",
                name.trim_start_matches(&format!("{prefix}."))
            ));
        }
    }
    if lines.is_empty() {
        "none".into()
    } else {
        lines.sort();
        if lines.len() > 8 {
            let more = lines.len() - 8;
            lines.truncate(8);
            lines.push(format!("... {more} more"));
        }
        format!("{total} messages ({})", lines.join(", "))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let tick = clock_tick();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("load_{}", &id[..12]);
    let prefix = format!("ld{}", &id[..12]);
    let dir = tempfile::Builder::new()
        .prefix("bergamot-load-")
        .tempdir()
        .expect("temp dir");
    let port = free_port();
    let started = Instant::now();
    let (text, offered) = config_text(&args, port);
    let config = dir.path().join("load.toml");
    std::fs::write(&config, &text).expect("write the config");
    println!(
        "load: {} checks ({} per host, {} groups), intervals {:?}, mix {:?}; offered {:.0} results/s",
        args.checks,
        args.per_host,
        args.groups,
        args.every,
        args.mix
            .iter()
            .map(|(c, w)| format!("{}={w}", c.join("|")))
            .collect::<Vec<_>>(),
        offered
    );
    println!(
        "load: {} worker(s), {} processor(s) of {} lanes, 1 scheduler, 1 web; {} result pools, worker concurrency {}; \
         batches of up to {} items, linger {} ms; schema {schema}, prefix {prefix}; machine: {} cores, load {}",
        args.workers,
        args.processors,
        args.processor_lanes,
        args.result_pools,
        args.worker_concurrency,
        args.batch_max,
        args.batch_linger_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    let run = Run {
        args: &args,
        config,
        dir: dir.path().to_path_buf(),
        schema: schema.clone(),
        prefix: prefix.clone(),
        port,
        offered,
        started,
        tick,
    };
    // The nodes are killed when `measure` ends or is dropped (a signal, a
    // panic); the schema and the broker topology are removed either way.
    let outcome = tokio::select! {
        r = std::panic::AssertUnwindSafe(measure(&run)).catch_unwind() => Some(r),
        () = signalled() => None,
    };
    if outcome.is_none() {
        eprintln!("load: interrupted; nodes killed, removing schema {schema} and prefix {prefix}");
    }
    cleanup(&args, &schema, &prefix).await;
    if args.keep_logs {
        let kept = dir.keep();
        println!("logs and config kept in {}", kept.display());
    }
    match outcome {
        None => std::process::exit(130),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        Some(Ok(())) => {}
    }
}

/// What [`measure`] runs with.
struct Run<'a> {
    args: &'a Args,
    config: PathBuf,
    dir: PathBuf,
    schema: String,
    prefix: String,
    port: u16,
    offered: f64,
    started: Instant,
    tick: f64,
}

/// Resolves on SIGINT or SIGTERM (never, if they cannot be watched).
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => futures::future::pending().await,
    }
}

/// Steps 2-6: starts the nodes, measures, stops them, probes.
async fn measure(run: &Run<'_>) {
    let Run {
        args,
        config,
        dir,
        schema,
        prefix,
        port,
        offered,
        started,
        tick,
    } = run;
    let (args, port, offered, started, tick) = (*args, *port, *offered, *started, *tick);
    let ctx = Ctx {
        args,
        config: config.clone(),
        dir: dir.clone(),
        schema: schema.clone(),
        prefix: prefix.clone(),
    };
    let mut nodes = Nodes(Vec::new());
    // The web node first: it migrates the schema and syncs the config once,
    // so the others start on a synced store.
    nodes.0.push(spawn(&ctx, "web", "web"));
    wait_running(&mut nodes, 0, Duration::from_secs(300));
    let mut healthy = false;
    for _ in 0..100 {
        if http_get(port, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(healthy, "web node not healthy on port {port}");
    let ws_stats = Arc::new(WsStats::default());
    let ws = tokio::spawn(websocket(port, ws_stats.clone()));
    let first = nodes.0.len();
    for i in 0..args.processors {
        nodes
            .0
            .push(spawn(&ctx, "processor", &format!("processor{i}")));
    }
    for i in 0..args.workers {
        nodes.0.push(spawn(&ctx, "worker", &format!("worker{i}")));
    }
    wait_running(&mut nodes, first, Duration::from_secs(300));
    wait_consuming(&mut nodes, Duration::from_secs(60));
    let sched = nodes.0.len();
    nodes.0.push(spawn(&ctx, "scheduler", "scheduler"));
    wait_running(&mut nodes, sched, Duration::from_secs(300));
    println!(
        "load: all {} nodes running after {:.1} s; warming up {} s",
        nodes.0.len(),
        started.elapsed().as_secs_f64(),
        args.warmup
    );

    let (pg, conn) = tokio_postgres::connect(&args.pg, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let dead = nodes.dead();
    assert!(dead.is_empty(), "nodes died:\n{}", dead.join("\n"));

    // Steady window.
    let services = ["beam.smp", "postgres"];
    let node_cpu = |nodes: &Nodes| -> Vec<f64> {
        nodes
            .0
            .iter()
            .map(|n| cpu_of(n.child.id(), tick).unwrap_or(0.0))
            .collect()
    };
    let own = std::process::id();
    let cpu0 = node_cpu(&nodes);
    let bench0 = cpu_of(own, tick).unwrap_or(0.0);
    let svc0: Vec<_> = services.iter().map(|s| cpu_by_comm(&[s], tick)).collect();
    let mach0 = machine_jiffies();
    let load0 = loadavg();
    let updates0 = ws_stats.updates.load(Ordering::Relaxed);
    let applied0 = applied(&pg, schema).await;
    let t0 = Instant::now();
    ws_stats.recording.store(true, Ordering::Relaxed);
    let mut series = Vec::new();
    let mut last = (t0, applied0);
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        let step = Duration::from_secs(5).min(Duration::from_secs(args.seconds) - t0.elapsed());
        tokio::time::sleep(step).await;
        let now = (Instant::now(), applied(&pg, schema).await);
        series.push(format!(
            "{:.0}",
            (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64()
        ));
        last = now;
    }
    ws_stats.recording.store(false, Ordering::Relaxed);
    let applied1 = last.1;
    let elapsed = (last.0 - t0).as_secs_f64();
    let updates1 = ws_stats.updates.load(Ordering::Relaxed);
    let cpu1 = node_cpu(&nodes);
    let bench1 = cpu_of(own, tick).unwrap_or(0.0);
    let svc1: Vec<_> = services.iter().map(|s| cpu_by_comm(&[s], tick)).collect();
    let mach1 = machine_jiffies();
    let dead = nodes.dead();

    let rate = (applied1 - applied0) as f64 / elapsed;
    let mut lat = std::mem::take(&mut *ws_stats.samples.lock());
    println!(
        "\nRESULT applied end to end: {:.0} results/s over {:.1} s after {} s warm-up \
         (offered {:.0}/s; per 5 s: {})",
        rate,
        elapsed,
        args.warmup,
        offered,
        series.join(" ")
    );
    println!(
        "RESULT result-to-websocket latency ({} check updates, {:.0}/s received): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        (updates1 - updates0) as f64 / elapsed,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    println!("CPU seconds over the {elapsed:.1} s window (cores busy = seconds / window):");
    for (i, n) in nodes.0.iter().enumerate() {
        let c = cpu1[i] - cpu0[i];
        println!(
            "  {:<12} {:>7.1} s  {:>5.2} cores  {:>5.0} us per applied result",
            n.name,
            c,
            c / elapsed,
            c / (applied1 - applied0).max(1) as f64 * 1e6
        );
    }
    let c = bench1 - bench0;
    println!(
        "  {:<12} {:>7.1} s  {:>5.2} cores  (websocket client, sampling)",
        "bench",
        c,
        c / elapsed
    );
    let applied = (applied1 - applied0).max(1) as f64;
    for (k, name) in ["rabbitmq", "postgresql"].iter().enumerate() {
        let c = cpu_delta(&svc0[k], &svc1[k]);
        println!(
            "  {:<12} {:>7.1} s  {:>5.2} cores  {:>5.0} us per applied result  (all {} processes; shared server)",
            name,
            c,
            c / elapsed,
            c / applied * 1e6,
            services[k]
        );
    }
    let busy = (mach1.0 - mach0.0) as f64 / (mach1.1 - mach0.1).max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  machine      {:.2} of {cores:.0} cores busy; load average {load0} -> {}",
        busy * cores,
        loadavg()
    );
    if let Some(per) = (rate > 0.0).then(|| 1e6 / rate) {
        let proc_cpu: f64 = nodes
            .0
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name.starts_with("processor"))
            .map(|(i, _)| cpu1[i] - cpu0[i])
            .sum();
        println!(
            "  per applied result: {:.0} us wall, processor CPU {:.0} us",
            per,
            proc_cpu / elapsed * per
        );
    }
    println!("backlog at the end of the window: {}", backlog(prefix));
    if !dead.is_empty() {
        println!("NODES DIED during the window:\n{}", dead.join("\n"));
    }

    nodes.stop_all();
    ws.abort();
    if args.probe {
        probe(args, schema, prefix).await;
    }
}
