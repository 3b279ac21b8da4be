//! Test helpers shared by the Bergamot crates' tests (a dev-dependency only,
//! never published).
//!
//! - Skip-if-no-service: a test that needs a service (PostgreSQL, RabbitMQ)
//!   or a program (Chromium, promtool, aiosmtpd) asks [`require_env`] or
//!   [`require`]; when the service is missing the test says that it skipped
//!   and returns, unless [`REQUIRE_SERVICES`]`=1` is set, which turns the
//!   skip into a failure (CI sets it, so nothing skips silently there).
//! - Condition waits: [`wait_for`] and [`wait_until`] poll a condition up to
//!   a bound instead of sleeping a guessed time; the bound is a failure
//!   message, not a timing assertion.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//!
//! let Some(url) = bergamot_testkit::require_env("BERGAMOT_TESTKIT_DOC_URL", "doc example") else {
//!     return; // skipped (said so on stderr)
//! };
//! # let _ = url;
//! let mut polls = 0;
//! bergamot_testkit::wait_until("three polls", Duration::from_secs(5), || {
//!     polls += 1;
//!     std::future::ready(polls == 3)
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The variable that turns a skip into a failure when set to `1`.
pub const REQUIRE_SERVICES: &str = "BERGAMOT_REQUIRE_SERVICES";

/// How often [`wait_for`] and [`wait_until`] poll.
pub const POLL: Duration = Duration::from_millis(50);

/// Whether [`REQUIRE_SERVICES`] is `1`.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES).as_deref() == Ok("1")
}

/// `true` when `available`; otherwise, says that `test` skipped because
/// `missing` is missing and returns `false`, or panics when
/// [`REQUIRE_SERVICES`]`=1`.
pub fn require(available: bool, missing: &str, test: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        !services_required(),
        "{test}: {missing} is missing and {REQUIRE_SERVICES}=1"
    );
    eprintln!("{test}: skipped ({missing} is missing)");
    false
}

/// The value of the environment variable `var` (say, a service URL) when it
/// is set and not blank; otherwise `None` after saying that `test` skipped
/// (see [`require`]).
pub fn require_env(var: &str, test: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    if value.is_none() {
        require(false, &format!("{var} (not set)"), test);
    }
    value
}

/// Whether `program` runs with `args` and exits successfully (say,
/// `promtool --version`), as [`require`] says it: `false` after saying that
/// `test` skipped, or a panic when [`REQUIRE_SERVICES`]`=1`.
pub fn require_program(program: &str, args: &[&str], test: &str) -> bool {
    let runs = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(runs, &format!("{program} {}", args.join(" ")), test)
}

/// Polls `f` every [`POLL`] until it gives `Some`, and returns that; panics
/// naming `what` after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `f` every [`POLL`] until it gives `true`; panics naming `what`
/// after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// A Python 3 that can import `module` (Debian's `/usr/bin/python3` first,
/// then `python3` on the `PATH`), or `None` after saying that `test`
/// skipped (see [`require`]).
pub fn require_python_module(module: &str, test: &str) -> Option<&'static str> {
    let import = format!("import {module}");
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", &import])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        require(false, &format!("python3 with {module}"), test);
    }
    found
}

/// A local SMTP server (aiosmtpd, `bergamot-core/tests/data/notify/smtp_sink.py`)
/// that saves every message it receives as `<n>.json`; it exits when dropped
/// (its stdin closes).
pub struct SmtpSink {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpSink {
    /// Starts the sink under `python` (see [`require_python_module`]) with
    /// the script's extra `args` (say `--auth user:password`); panics when it
    /// does not print its port within 20 s.
    pub async fn start(python: &str, args: &[&str]) -> SmtpSink {
        use tokio::io::AsyncBufReadExt;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../bergamot-core/tests/data/notify/smtp_sink.py");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = tokio::process::Command::new(python)
            // aiosmtpd warns (rightly) about AUTH without TLS; the tests want that.
            .args(["-W", "ignore"])
            .arg(script)
            .arg(dir.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp_sink.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("smtp sink prints its port")
        .expect("read port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad port line {line:?}"));
        SmtpSink {
            port,
            dir,
            _child: child,
        }
    }

    /// The messages delivered so far, in order, as the script saved them
    /// (`rcpt_tos`, `subject`, `message_id`, ...).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(self.dir.path())
            .expect("read sink dir")
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "json").then_some((n, p))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
            })
            .collect()
    }
}
