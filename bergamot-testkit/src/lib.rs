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
//! ```
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
