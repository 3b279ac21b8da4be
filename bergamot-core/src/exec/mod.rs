//! Check executors: the code that runs one check and produces its result.
//!
//! An [`Executor`] serves one engine (`nagios`, `http`, `tcp`, `dummy`, or a
//! packager's own). It always returns a result: timeouts, spawn failures and
//! bad parameters are results (TIMEOUT / ERROR), never lost checks.
//!
//! [`Executors`] maps engine names to executors; [`Worker`] consumes executes
//! from a [`Queue`], runs them through the registry with a concurrency limit
//! and publishes their results.

mod dummy;
pub(crate) mod http;
mod nagios;
mod perfdata;
mod tcp;

use dummy::DummyExecutor;
pub use http::HttpExecutor;
pub(crate) use nagios::{process_group, DEFAULT_PATH};
pub use nagios::{NagiosExecutor, DRAIN_LIMIT, STDOUT_LIMIT};
pub(crate) use perfdata::parse_plugin_output;
pub use tcp::TcpExecutor;

/// The engines the core knows by name, in one place: every other module
/// names them through these (the executor registry serves the rest).
pub mod engine {
    /// The engine of [`NagiosExecutor`](super::NagiosExecutor): runs a
    /// plugin command (`params.command`, an argv), the config's default.
    pub(crate) const NAGIOS: &str = "nagios";
    /// The engine of a check nothing runs: its results are submitted
    /// (`POST /api/checks/{id}/results`). No executor serves it and the
    /// scheduler does not hold it.
    pub(crate) const PASSIVE: &str = "passive";

    /// Whether `engine` is run by no executor: results are submitted.
    pub(crate) fn is_passive(engine: &str) -> bool {
        engine == PASSIVE
    }

    /// Whether `engine` runs a plugin command (`params.command`), whose
    /// program the daemon resolves against the config directory and the
    /// preflight checks.
    pub fn runs_command(engine: &str) -> bool {
        engine == NAGIOS
    }
}

use crate::model::{CheckResult, Perfdata, Status};
use crate::queue::{Acker, ExecuteCheck, Queue};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs checks of one engine.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The engine name this executor serves.
    fn engine(&self) -> &str;

    /// Runs the check and returns its result (never fails: errors are results).
    async fn execute(&self, execute: &ExecuteCheck) -> CheckResult;
}

/// The timeout executors use when an execute carries none (zero).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How much longer than the check's own timeout [`Executors::execute`] waits
/// for an executor before it gives up on it and answers TIMEOUT itself: a
/// guard against an executor that never returns.
const GUARD_GRACE: Duration = Duration::from_secs(10);

/// How long a worker waits after a failed result publish before it
/// requeues the execute.
const PUBLISH_RETRY_DELAY: Duration = Duration::from_millis(250);

/// The execute's timeout, or `default` when it carries none.
pub(crate) fn effective_timeout(execute: &ExecuteCheck, default: Duration) -> Duration {
    if execute.timeout.is_zero() {
        default
    } else {
        execute.timeout
    }
}

/// Starts a result for `execute`: its check id, a fresh result id, the start
/// time as `executed_at`.
pub(crate) fn new_result(
    execute: &ExecuteCheck,
    status: Status,
    output: impl Into<std::sync::Arc<str>>,
    executed_at: DateTime<Utc>,
    started: tokio::time::Instant,
) -> CheckResult {
    let mut r = CheckResult::new(execute.check_id, status, output, executed_at);
    r.duration_ms = millis(started.elapsed());
    r
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An ERROR result naming a bad parameter of `engine`.
pub(crate) fn param_error(execute: &ExecuteCheck, engine: &str, message: String) -> CheckResult {
    let mut r = CheckResult::new(
        execute.check_id,
        Status::Error,
        format!("{engine}: {message}"),
        Utc::now(),
    );
    r.duration_ms = 0;
    r
}

/// Reads an optional string parameter.
pub(crate) fn param_str<'a>(
    execute: &'a ExecuteCheck,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match execute.params.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("parameter {name:?} must be a string, got {other}")),
    }
}

/// Reads an optional non-negative number parameter (a JSON number or a
/// numeric string, as templates substitute strings).
pub(crate) fn param_u64(execute: &ExecuteCheck, name: &str) -> Result<Option<u64>, String> {
    match execute.params.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("parameter {name:?} must be a non-negative integer, got {n}")),
        Some(serde_json::Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| {
                format!("parameter {name:?} must be a non-negative integer, got {s:?}")
            })
        }
        Some(other) => Err(format!(
            "parameter {name:?} must be a non-negative integer, got {other}"
        )),
    }
}

/// A response-time reading in milliseconds with warn/crit thresholds.
pub(crate) fn time_perfdata(
    label: &str,
    elapsed: Duration,
    warn_ms: Option<u64>,
    crit_ms: Option<u64>,
) -> Perfdata {
    Perfdata {
        label: label.to_string(),
        value: Some((elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
        uom: "ms".to_string(),
        warn: warn_ms.map(|w| w.to_string()),
        crit: crit_ms.map(|c| c.to_string()),
        min: Some(0.0),
        max: None,
    }
}

/// The status for a response time against optional thresholds (strictly
/// above a threshold is past it).
pub(crate) fn time_status(elapsed: Duration, warn_ms: Option<u64>, crit_ms: Option<u64>) -> Status {
    let ms = elapsed.as_secs_f64() * 1000.0;
    // u64 -> f64 is exact for any threshold a person would write.
    #[allow(clippy::cast_precision_loss)]
    let past = |t: Option<u64>| t.is_some_and(|t| ms > t as f64);
    if past(crit_ms) {
        Status::Critical
    } else if past(warn_ms) {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// The executors of a worker, by engine name.
///
/// Cheap to clone (the executors are shared).
#[derive(Clone, Default)]
pub struct Executors {
    by_engine: HashMap<String, Arc<dyn Executor>>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("engines", &self.engines())
            .finish()
    }
}

impl Executors {
    /// An empty registry.
    pub fn new() -> Self {
        Executors::default()
    }

    /// The four standard executors with their defaults: `nagios`, `http`,
    /// `tcp`, `dummy`.
    pub fn standard() -> Self {
        let mut e = Executors::new();
        e.register(Arc::new(NagiosExecutor::new()));
        e.register(Arc::new(HttpExecutor::new()));
        e.register(Arc::new(TcpExecutor::new()));
        e.register(Arc::new(DummyExecutor::new()));
        e
    }

    /// Adds an executor under its engine name, returning the one it replaces.
    pub fn register(&mut self, executor: Arc<dyn Executor>) -> Option<Arc<dyn Executor>> {
        self.by_engine
            .insert(executor.engine().to_string(), executor)
    }

    /// The executor of an engine.
    pub fn get(&self, engine: &str) -> Option<&Arc<dyn Executor>> {
        self.by_engine.get(engine)
    }

    /// The engine names served, sorted.
    pub fn engines(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_engine.keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs the execute on its engine's executor. Always returns a result:
    /// an unknown engine, an executor that panics, or one that does not
    /// return within the check's timeout plus a grace period give ERROR or
    /// TIMEOUT results naming the engine.
    pub async fn execute(&self, execute: &ExecuteCheck) -> CheckResult {
        let executed_at = Utc::now();
        let started = tokio::time::Instant::now();
        let Some(executor) = self.by_engine.get(&execute.engine) else {
            return new_result(
                execute,
                Status::Error,
                format!(
                    "no executor for engine {:?} on this worker (it serves {})",
                    execute.engine,
                    self.engines().join(", ")
                ),
                executed_at,
                started,
            );
        };
        let guard = effective_timeout(execute, DEFAULT_TIMEOUT).saturating_add(GUARD_GRACE);
        let run = AssertUnwindSafe(executor.execute(execute)).catch_unwind();
        match tokio::time::timeout(guard, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                new_result(
                    execute,
                    Status::Error,
                    format!("executor {:?} panicked: {why}", execute.engine),
                    executed_at,
                    started,
                )
            }
            Err(_) => new_result(
                execute,
                Status::Timeout,
                format!(
                    "executor {:?} did not return within {} s",
                    execute.engine,
                    guard.as_secs()
                ),
                executed_at,
                started,
            ),
        }
    }
}

/// Consumes executes from a queue and runs them, up to a concurrency limit.
#[derive(Debug, Clone)]
pub struct Worker {
    executors: Arc<Executors>,
    max_concurrency: usize,
    limits: crate::model::ResultLimits,
}

impl Worker {
    /// A worker running at most `max_concurrency` checks at a time (at least 1).
    pub fn new(executors: Executors, max_concurrency: usize) -> Self {
        Worker {
            executors: Arc::new(executors),
            max_concurrency: max_concurrency.max(1),
            limits: crate::model::ResultLimits::default(),
        }
    }

    /// Sets the output caps applied to every result before it is published
    /// (default [`ResultLimits::default`](crate::model::ResultLimits)):
    /// output and long output are cut at a char boundary with a mark.
    pub fn with_limits(mut self, limits: crate::model::ResultLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Consumes executes of `pool` for `engines` (every registered engine
    /// when empty) until `shutdown` completes or the queue ends the stream.
    ///
    /// Each execute runs concurrently (up to the limit); its result is
    /// published with [`Queue::publish_result`] and the execute is acked only
    /// once the publish returned Ok, or nacked for redelivery if it failed.
    /// A worker takes an execute only when it has a free slot, so work it
    /// cannot start stays in the queue for other workers. On shutdown it
    /// takes no new work and waits for the checks it is running.
    ///
    /// Returns an error if the first consume fails. An error on the stream
    /// later (a broker restart) is logged and the worker consumes again
    /// after a pause (100 ms doubling up to 10 s, reset by a delivery); the
    /// checks in flight run on. The stream ending is the end of the worker.
    pub async fn run(
        self,
        queue: Arc<dyn Queue>,
        pool: String,
        engines: Vec<String>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> crate::Result<()> {
        let engines = if engines.is_empty() {
            self.executors.engines()
        } else {
            engines
        };
        let mut stream = queue.consume_executes(&pool, &engines).await?;
        tracing::info!(%pool, ?engines, "worker consuming executes");
        let slots = Arc::new(Semaphore::new(self.max_concurrency));
        let mut running = JoinSet::new();
        let mut backoff = CONSUME_RETRY_MIN;
        tokio::pin!(shutdown);
        let outcome = loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    // The semaphore is never closed; treat it as shutdown.
                    Err(_) => break Ok(()),
                },
            };
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                next = stream.next() => next,
            };
            let delivery = match next {
                None => break Ok(()),
                Some(Err(e)) => {
                    // A broken stream (broker gone, channel closed) is not
                    // the end of the worker: back off and consume again.
                    drop(permit);
                    tracing::warn!(%pool, error = %e, delay_ms = backoff.as_millis() as u64, "execute stream failed; consuming again after a pause");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(CONSUME_RETRY_MAX);
                    match queue.consume_executes(&pool, &engines).await {
                        Ok(s) => {
                            tracing::info!(%pool, "worker consuming executes again");
                            stream = s;
                        }
                        Err(e) => tracing::warn!(%pool, error = %e, "cannot consume executes yet"),
                    }
                    continue;
                }
                Some(Ok(d)) => {
                    backoff = CONSUME_RETRY_MIN;
                    d
                }
            };
            let executors = self.executors.clone();
            let queue = queue.clone();
            let limits = self.limits;
            running.spawn(async move {
                let (execute, acker) = delivery.into_parts();
                let mut result = executors.execute(&execute).await;
                result.cap_output(&limits);
                finish(&*queue, &execute, result, acker).await;
                drop(permit);
            });
        };
        while running.join_next().await.is_some() {}
        outcome
    }
}

/// First pause before a worker consumes again after its execute stream
/// failed; doubles up to [`CONSUME_RETRY_MAX`], reset by a delivery.
const CONSUME_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause before a worker consumes again.
const CONSUME_RETRY_MAX: Duration = Duration::from_secs(10);

/// Publishes the result, then acks the execute; nacks it for redelivery when
/// the publish failed.
async fn finish(
    queue: &dyn Queue,
    execute: &ExecuteCheck,
    result: CheckResult,
    acker: Box<dyn Acker>,
) {
    match queue.publish_result(result).await {
        Ok(()) => {
            if let Err(e) = acker.ack().await {
                tracing::warn!(check = %execute.check_id, error = %e, "cannot ack execute after publishing its result");
            }
        }
        Err(e) => {
            tracing::warn!(check = %execute.check_id, error = %e, "cannot publish result; requeueing the execute");
            // Hold the slot a moment so a broken queue is not hammered by
            // the same execute coming straight back.
            tokio::time::sleep(PUBLISH_RETRY_DELAY).await;
            if let Err(e) = acker.nack(true).await {
                tracing::warn!(check = %execute.check_id, error = %e, "cannot nack execute");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CheckId;
    use std::collections::BTreeMap;

    pub(crate) fn execute(engine: &str, params: serde_json::Value) -> ExecuteCheck {
        let params: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(params).expect("params are an object");
        ExecuteCheck {
            id: uuid::Uuid::new_v4(),
            check_id: CheckId::random(),
            site: "s".into(),
            pool: "p".into(),
            engine: engine.into(),
            params,
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(60),
            scheduled_at: Utc::now(),
            execute_now: false,
        }
    }

    /// Asserts that each of `cases` (params, a word the output must name)
    /// is an ERROR result of `executor` whose output starts with `engine: `.
    pub(crate) async fn assert_bad_params(
        executor: &dyn Executor,
        engine: &str,
        cases: &[(serde_json::Value, &str)],
    ) {
        for (params, needle) in cases {
            let r = executor.execute(&execute(engine, params.clone())).await;
            assert_eq!(r.status, Status::Error, "{params}");
            assert!(
                r.output.starts_with(&format!("{engine}: ")) && r.output.contains(needle),
                "{params}: {}",
                r.output
            );
        }
    }

    /// An executor that misbehaves: engine `panics` panics, engine `hangs`
    /// never returns.
    enum Misbehaving {
        Panicking,
        Hanging,
    }
    use Misbehaving::{Hanging, Panicking};

    #[async_trait]
    impl Executor for Misbehaving {
        fn engine(&self) -> &str {
            match self {
                Panicking => "panics",
                Hanging => "hangs",
            }
        }
        async fn execute(&self, _execute: &ExecuteCheck) -> CheckResult {
            match self {
                Panicking => panic!("boom"),
                Hanging => futures::future::pending().await,
            }
        }
    }

    #[tokio::test]
    async fn unknown_engine_is_an_error_result() {
        let ex = Executors::standard();
        assert_eq!(ex.engines(), vec!["dummy", "http", "nagios", "tcp"]);
        let e = execute("snmp", serde_json::json!({}));
        let r = ex.execute(&e).await;
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.check_id, e.check_id);
        assert!(r.output.contains("\"snmp\""), "{}", r.output);
    }

    #[tokio::test]
    async fn panicking_executor_gives_error_result() {
        let mut ex = Executors::new();
        assert!(ex.register(Arc::new(Panicking)).is_none());
        let r = ex.execute(&execute("panics", serde_json::json!({}))).await;
        assert_eq!(r.status, Status::Error);
        assert!(r.output.contains("panicked: boom"), "{}", r.output);
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_executor_is_cut_by_the_guard() {
        let mut ex = Executors::new();
        ex.register(Arc::new(Hanging));
        let r = ex.execute(&execute("hangs", serde_json::json!({}))).await;
        assert_eq!(r.status, Status::Timeout);
        assert!(
            r.output.contains("did not return within 15 s"),
            "{}",
            r.output
        );
    }

    #[tokio::test]
    async fn huge_timeout_does_not_overflow() {
        let mut e = execute("dummy", serde_json::json!({}));
        e.timeout = Duration::MAX;
        let r = Executors::standard().execute(&e).await;
        assert_eq!(r.status, Status::Ok);
    }

    #[test]
    fn thresholds() {
        let ms = Duration::from_millis;
        assert_eq!(time_status(ms(50), Some(100), Some(200)), Status::Ok);
        assert_eq!(time_status(ms(100), Some(100), Some(200)), Status::Ok);
        assert_eq!(time_status(ms(150), Some(100), Some(200)), Status::Warning);
        assert_eq!(time_status(ms(250), Some(100), Some(200)), Status::Critical);
        assert_eq!(time_status(ms(250), None, None), Status::Ok);
        assert_eq!(time_status(ms(250), None, Some(200)), Status::Critical);
    }

    #[test]
    fn params() {
        let e = execute(
            "x",
            serde_json::json!({"a": "s", "n": 5, "ns": " 7 ", "bad": -1, "arr": []}),
        );
        assert_eq!(param_str(&e, "a"), Ok(Some("s")));
        assert_eq!(param_str(&e, "missing"), Ok(None));
        assert!(param_str(&e, "n").is_err());
        assert_eq!(param_u64(&e, "n"), Ok(Some(5)));
        assert_eq!(param_u64(&e, "ns"), Ok(Some(7)));
        assert!(param_u64(&e, "bad").unwrap_err().contains("\"bad\""));
        assert!(param_u64(&e, "arr").is_err());
    }
}
