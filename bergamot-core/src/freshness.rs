//! Freshness: a scheduled check whose last result is older than its bound
//! gets a *stale mark*, a synthetic `TIMEOUT` result whose output starts
//! with `STALE: `, so that a dead scheduler or a dead worker fleet
//! alerts like any other problem instead of leaving the last status on
//! screen.
//!
//! It runs on the processor side ([`Freshness::run`], beside the result
//! processor) and reads the store, so it survives the death of any
//! scheduler or worker node. The mark is *published as a result* and goes
//! through the normal path (processor lanes, dedupe, ordering, alerts).
//!
//! - Bound: `factor` x the check's current interval (the state machine's
//!   [`next_interval`]: `every` when hard ok, `retry_every` when failing)
//!   + `margin`.
//! - The mark's `executed_at` is the instant the check became overdue
//!   (last result + bound), never "now": a real result executed after that
//!   instant is newer and wins, however late it arrives. After a mark the
//!   check is overdue again one bound later (a further attempt towards
//!   `failed_after`).
//! - The mark's id is derived from the check and that instant, so several
//!   processors marking the same check produce one result (a duplicate is
//!   dropped by the state machine).
//! - A check that never had a result counts from the moment this task
//!   first saw it.
//! - Traps, passive and disabled checks are never marked.

use crate::model::{Check, CheckId, CheckResult, ResultId, Status};
use crate::queue::Queue;
use crate::state::{next_interval, CheckState};
use crate::store::Store;
use crate::Result;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How every stale mark's output begins.
const STALE_PREFIX: &str = "STALE: ";

/// Namespace of the stale marks' result ids.
const STALE_NAMESPACE: Uuid = Uuid::from_u128(0x8d2e_51c4_0b7f_4a1e_9c33_6f0d_b2a8_e417);

/// When a check is stale, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreshnessConfig {
    /// The bound is this many current intervals (plus `margin`); 0 turns
    /// freshness off.
    pub factor: f64,
    /// Added to the bound (queueing, execution time, clock skew).
    pub margin: Duration,
    /// How often the store is scanned for overdue checks.
    pub scan_every: Duration,
}

impl Default for FreshnessConfig {
    /// 2 x the interval + 30 s, scanned every 15 s.
    fn default() -> Self {
        FreshnessConfig {
            factor: 2.0,
            margin: Duration::from_secs(30),
            scan_every: Duration::from_secs(15),
        }
    }
}

impl FreshnessConfig {
    /// The bound of a check in `state`.
    pub fn bound(&self, check: &Check, state: &CheckState) -> Duration {
        next_interval(state, &check.policy).mul_f64(self.factor.max(0.0)) + self.margin
    }
}

/// Whether a status/output pair is a stale mark.
pub fn is_stale_mark(status: Status, output: &str) -> bool {
    status == Status::Timeout && output.starts_with(STALE_PREFIX)
}

/// The stale mark of `check` in `state` at `now`, if it is overdue. `since`
/// stands in for the last result of a check that never had one.
pub(crate) fn stale_mark(
    config: &FreshnessConfig,
    check: &Check,
    state: &CheckState,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<CheckResult> {
    if !check.is_scheduled() || config.factor <= 0.0 {
        return None;
    }
    let bound = config.bound(check, state);
    let last = state.last_check_at.unwrap_or(since);
    let at = last + chrono::Duration::from_std(bound).ok()?;
    if at > now {
        return None;
    }
    let output = match state.last_check_at {
        Some(last) => format!(
            "{STALE_PREFIX}no result since {} (bound {} s: {} x interval {} s + {} s)",
            last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            bound.as_secs(),
            config.factor,
            next_interval(state, &check.policy).as_secs(),
            config.margin.as_secs(),
        ),
        None => format!(
            "{STALE_PREFIX}no result yet (bound {} s: {} x interval {} s + {} s)",
            bound.as_secs(),
            config.factor,
            next_interval(state, &check.policy).as_secs(),
            config.margin.as_secs(),
        ),
    };
    let mut r = CheckResult::new(check.id, Status::Timeout, output, at);
    let key = format!("{} {}", check.id, at.timestamp_micros());
    r.id = ResultId(Uuid::new_v5(&STALE_NAMESPACE, key.as_bytes()));
    Some(r)
}

/// The freshness task of a processor node.
pub struct Freshness {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    config: FreshnessConfig,
    first_seen: HashMap<CheckId, DateTime<Utc>>,
    model: Option<Known>,
}

/// The scheduled checks of the model as of `read_at`.
struct Known {
    /// Every check of the model.
    ids: HashSet<CheckId>,
    /// The scheduled ones (the only ones that can be stale).
    checks: HashMap<CheckId, Check>,
    /// The smallest bound any of them can have: no check whose last result
    /// is newer than `now - least_bound` can be overdue.
    least_bound: Duration,
    read_at: DateTime<Utc>,
}

impl Known {
    fn new(model: crate::model::Model, config: &FreshnessConfig, now: DateTime<Utc>) -> Self {
        let ids = model.checks.iter().map(|c| c.id).collect();
        let checks: HashMap<CheckId, Check> = model
            .checks
            .into_iter()
            .filter(Check::is_scheduled)
            .map(|c| (c.id, c))
            .collect();
        let least_interval = checks
            .values()
            .flat_map(|c| {
                let p = &c.policy;
                [Some(p.every), Some(p.retry_every), p.changing_every]
            })
            .flatten()
            .min()
            .unwrap_or(Duration::ZERO);
        Known {
            ids,
            checks,
            least_bound: least_interval.mul_f64(config.factor.max(0.0)) + config.margin,
            read_at: now,
        }
    }
}

/// How long a scan uses the model it read before reading it again (a check
/// the store has a state of but the model lacks makes it read at once).
const MODEL_REUSE: Duration = crate::processor::MODEL_REFRESH;

impl Freshness {
    /// Marks overdue checks of `store` by publishing results to `queue`.
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, config: FreshnessConfig) -> Self {
        Freshness {
            store,
            queue,
            config,
            first_seen: HashMap::new(),
            model: None,
        }
    }

    async fn read_model(&mut self, now: DateTime<Utc>) -> Result<&Known> {
        let known = Known::new(self.store.model().await?, &self.config, now);
        Ok(self.model.insert(known))
    }

    /// One scan at `now`: publishes a stale mark for every overdue check;
    /// returns how many.
    ///
    /// It reads only the states whose last result is older than the
    /// smallest bound of any check ([`Store::states_checked_before`]), and
    /// the model at most every [`crate::processor::MODEL_REFRESH`]: at
    /// 100,000 checks a scan of every state and the whole model each time
    /// cost the node a few hundred milliseconds of both cores.
    pub async fn scan(&mut self, now: DateTime<Utc>) -> Result<usize> {
        let reuse = chrono::Duration::from_std(MODEL_REUSE).unwrap_or(chrono::Duration::zero());
        let fresh_model = match &self.model {
            Some(m) => m.read_at + reuse > now && m.read_at <= now,
            None => false,
        };
        if !fresh_model {
            self.read_model(now).await?;
        }
        let least = self
            .model
            .as_ref()
            .map_or(Duration::ZERO, |m| m.least_bound);
        let before = now - chrono::Duration::from_std(least).unwrap_or(chrono::Duration::zero());
        let candidates = self.store.states_checked_before(before).await?;
        let unknown = |m: &Known| candidates.iter().any(|(id, _)| !m.ids.contains(id));
        if fresh_model && self.model.as_ref().is_some_and(unknown) {
            self.read_model(now).await?;
        }
        let Some(known) = &self.model else {
            return Ok(0);
        };
        // Only checks without any result need the instant they were first
        // seen, and every one of them is a candidate of each scan.
        let never: HashSet<CheckId> = candidates
            .iter()
            .filter(|(_, s)| s.last_check_at.is_none())
            .map(|(id, _)| *id)
            .collect();
        self.first_seen.retain(|id, _| never.contains(id));
        let mut marked = 0;
        for (id, state) in &candidates {
            let Some(check) = known.checks.get(id) else {
                continue;
            };
            let since = match state.last_check_at {
                Some(last) => last,
                None => *self.first_seen.entry(*id).or_insert(now),
            };
            if let Some(mark) = stale_mark(&self.config, check, state, since, now) {
                tracing::info!(check = %id, output = %mark.output, "check is stale");
                self.queue.publish_result(mark).await?;
                marked += 1;
            }
        }
        Ok(marked)
    }

    /// Scans every `scan_every` until `stop`; `on_marked` gets the number of
    /// marks of each scan. A failed scan is logged and retried at the next.
    pub async fn run(
        mut self,
        stop: impl Future<Output = ()>,
        on_marked: impl Fn(usize) + Send,
    ) -> Result<()> {
        if self.config.factor <= 0.0 {
            stop.await;
            return Ok(());
        }
        let mut tick =
            tokio::time::interval(self.config.scan_every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                _ = tick.tick() => match self.scan(Utc::now()).await {
                    Ok(n) => on_marked(n),
                    Err(e) => tracing::warn!(error = %e, "freshness scan failed"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckKind, Model, Policy};
    use crate::processor::Processor;
    use crate::queue::InMemoryQueue;
    use crate::store::InMemoryStore;

    fn check(name: &str) -> Check {
        Check::builder(
            CheckId::service("s", "h", name),
            CheckKind::Service,
            "h",
            name,
        )
        .engine("dummy")
        .policy(Policy::builder().failed_after(1).recovers_after(1).build())
        .build()
    }

    #[test]
    fn overdue_after_factor_intervals_plus_margin() {
        let cfg = FreshnessConfig::default();
        let c = check("a");
        let mut state = crate::state::initial_state(&c.policy);
        let t0 = Utc::now();
        state.last_check_at = Some(t0);
        // every 300 s: bound 2 x 300 + 30 = 630 s.
        let at = |s| t0 + chrono::Duration::seconds(s);
        assert!(stale_mark(&cfg, &c, &state, t0, at(629)).is_none());
        let m = stale_mark(&cfg, &c, &state, t0, at(631)).expect("stale");
        assert_eq!(m.executed_at, at(630));
        assert!(is_stale_mark(m.status, &m.output), "{}", m.output);
        // Same check, same instant: same id (several processors, one mark).
        let again = stale_mark(&cfg, &c, &state, t0, at(700)).expect("stale");
        assert_eq!(again.id, m.id);
        let mut trap = check("t");
        trap.kind = CheckKind::Trap;
        assert!(stale_mark(&cfg, &trap, &state, t0, at(10_000)).is_none());
        let off = FreshnessConfig { factor: 0.0, ..cfg };
        assert!(stale_mark(&off, &c, &state, t0, at(10_000)).is_none());
    }

    /// Through the processor: the mark turns the check TIMEOUT with an
    /// alert; a real result executed later wins.
    #[tokio::test]
    async fn a_stale_mark_alerts_and_a_later_real_result_wins() {
        let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
        let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
        let c = check("a");
        store
            .sync_config(&Model {
                site: "s".into(),
                checks: vec![c.clone()],
                groups: vec![],
                locations: vec![],
            })
            .await
            .expect("sync");
        let processor = Processor::new(store.clone(), queue.clone());
        let t0 = Utc::now() - chrono::Duration::seconds(1000);
        let ok = CheckResult::new(c.id, Status::Ok, "fine", t0);
        processor.handle_result(&ok, Utc::now()).await.expect("ok");
        let mut fresh = Freshness::new(store.clone(), queue.clone(), FreshnessConfig::default());
        let mut results = queue.consume_results().await.expect("consume");
        assert_eq!(fresh.scan(Utc::now()).await.expect("scan"), 1);
        let mark = futures::StreamExt::next(&mut results)
            .await
            .expect("a result")
            .expect("ok")
            .message;
        assert_eq!(mark.executed_at, t0 + chrono::Duration::seconds(630));
        let t = processor
            .handle_result(&mark, Utc::now())
            .await
            .expect("mark");
        assert!(t.is_applied());
        let s = store.state(c.id).await.expect("state");
        assert_eq!(s.status, Status::Timeout);
        assert!(s.hard && s.current_alert.is_some(), "{s:?}");
        assert!(is_stale_mark(s.status, &s.output));
        // The same mark again (a second processor): a duplicate.
        assert!(!processor
            .handle_result(&mark, Utc::now())
            .await
            .expect("dup")
            .is_applied());
        // A real result executed after the mark wins.
        let real = CheckResult::new(
            c.id,
            Status::Ok,
            "back",
            mark.executed_at + chrono::Duration::seconds(1),
        );
        assert!(processor
            .handle_result(&real, Utc::now())
            .await
            .expect("real")
            .is_applied());
        let s = store.state(c.id).await.expect("state");
        assert_eq!(s.status, Status::Ok);
        assert!(s.current_alert.is_none());
    }
}
