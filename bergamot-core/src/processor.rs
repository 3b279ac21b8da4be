//! The result processor: results and dead checks in, store transitions, then
//! check / group / location / alert updates and reschedules out.
//!
//! [`Processor::handle_result`] is the whole flow for one result; the web
//! layer reuses [`Processor::publish_transition`] (on a processor
//! [`Processor::without_memory`]) for actions (acknowledge, downtime,
//! suppression) so they are published the same way; and [`Processor::run`]
//! is the loop a processor node runs.

use crate::aggregate::{Aggregate, GraphIndex};
use crate::error::{Error, Result};
use crate::model::{CheckId, CheckResult, GroupId, LocationId, ResultLimits};
use crate::queue::{
    Acker, AlertUpdate, CheckUpdate, DeadCheck, DeadReason, GroupUpdate, LocationUpdate, Queue,
    SchedulerControl, Update,
};
use crate::state::Transition;
use crate::store::Store;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod aggregates;
mod lanes;
mod retry;

/// How often [`Processor::run`] applies due downtimes.
pub const DOWNTIME_TICK: Duration = Duration::from_secs(1);

/// Lanes [`Processor::run`] applies results in by default (see
/// [`Processor::with_lanes`]).
pub const DEFAULT_LANES: usize = 4;

/// Results one lane of [`Processor::run`] applies in one store call at
/// most by default (see [`Processor::with_batch`]).
pub const DEFAULT_BATCH: usize = 256;

/// The shortest pause between two aggregate recomputations of
/// [`Processor::run`]; the pause is also at least four times as long as the
/// last recomputation took, so aggregates never take more than a fifth of
/// the time however fast results arrive.
pub const AGGREGATE_MIN_GAP: Duration = Duration::from_millis(100);

/// How often [`Processor::run`] re-reads the model (group membership, so
/// that a config reload elsewhere reaches the aggregates).
pub const MODEL_REFRESH: Duration = Duration::from_secs(30);

/// Applies results through a [`Store`] and publishes what changed on a [`Queue`].
///
/// It remembers the last aggregate it published per group and location (so
/// it only publishes changes) and the group graph (to know which aggregates
/// a check's change touches); call [`Processor::refresh_model`] after a
/// config sync ([`Processor::run`] also re-reads it every [`MODEL_REFRESH`]).
pub struct Processor {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    memory: Mutex<Memory>,
    lanes: usize,
    batch: usize,
    limits: ResultLimits,
    /// Serialises the read-compare-publish of aggregates, so that an older
    /// aggregate is never published after a newer one.
    aggregates: tokio::sync::Mutex<()>,
    /// Checks whose contribution to aggregates changed since the
    /// aggregates were last recomputed by [`Processor::run`].
    dirty: Mutex<HashSet<CheckId>>,
    dirty_notify: tokio::sync::Notify,
    /// "No worker yet": per (pool, engine), when this processor first saw an
    /// unroutable execute of it; see [`Processor::with_no_worker_grace`].
    no_worker_since: Mutex<HashMap<(String, String), DateTime<Utc>>>,
    no_worker_grace: Duration,
    /// Whether published aggregates are remembered (and only changes
    /// published); see [`Processor::without_memory`].
    remember: bool,
}

/// How long unroutable executes of a (pool, engine) are taken as "no worker
/// yet" (dropped, not applied) before they become ERROR results.
pub const DEFAULT_NO_WORKER_GRACE: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Memory {
    loaded: bool,
    index: Arc<GraphIndex>,
    groups: HashMap<GroupId, Aggregate>,
    locations: HashMap<LocationId, Aggregate>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor").finish_non_exhaustive()
    }
}

impl Processor {
    /// A processor over a store and a queue.
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> Self {
        Processor {
            store,
            queue,
            memory: Mutex::new(Memory::default()),
            lanes: DEFAULT_LANES,
            batch: DEFAULT_BATCH,
            limits: ResultLimits::default(),
            aggregates: tokio::sync::Mutex::new(()),
            dirty: Mutex::new(HashSet::new()),
            dirty_notify: tokio::sync::Notify::new(),
            no_worker_since: Mutex::new(HashMap::new()),
            no_worker_grace: DEFAULT_NO_WORKER_GRACE,
            remember: true,
        }
    }

    /// A processor that remembers nothing it published: a transition whose
    /// contribution changed publishes the current aggregate of every group
    /// and location of its check, read from the store. For a node that
    /// publishes some transitions but not all (the web node's operator
    /// actions): a memory of what it alone published would go stale and
    /// hold back a change back to an aggregate it published before.
    pub fn without_memory(mut self) -> Self {
        self.remember = false;
        self
    }

    /// Sets the "no worker yet" grace (default [`DEFAULT_NO_WORKER_GRACE`]).
    /// An unroutable execute means no worker of its pool and engine has ever
    /// declared its queue (they are durable): on a fresh deployment whose
    /// schedulers start before the workers, that is "no worker yet", not a
    /// broken check. For this long after the first such dead check of a
    /// (pool, engine) they are acknowledged and dropped (logged once): the
    /// checks stay as they are, PENDING on a fresh deployment, and are sent
    /// again at their next interval. After it they are ERROR results ("no
    /// worker pool serves engine ..."), which is what a pool no worker
    /// serves should report. Zero turns the grace off.
    pub fn with_no_worker_grace(mut self, grace: Duration) -> Self {
        self.no_worker_grace = grace;
        self
    }

    /// Whether `dead` is dropped as "no worker yet" (see
    /// [`Processor::with_no_worker_grace`]).
    fn no_worker_yet(&self, dead: &DeadCheck) -> bool {
        if dead.reason != DeadReason::Unroutable || self.no_worker_grace.is_zero() {
            return false;
        }
        let key = (dead.execute.pool.clone(), dead.execute.engine.clone());
        let mut seen = self.no_worker_since.lock();
        let first = *seen.entry(key).or_insert_with(|| {
            tracing::warn!(
                pool = %dead.execute.pool,
                engine = %dead.execute.engine,
                grace_s = self.no_worker_grace.as_secs(),
                "no worker yet serves this pool and engine: its checks wait (no result) \
                 until a worker starts or the grace ends, then turn ERROR"
            );
            dead.at
        });
        let grace =
            chrono::Duration::from_std(self.no_worker_grace).unwrap_or(chrono::Duration::MAX);
        dead.at < first + grace
    }

    /// Sets how many lanes [`Processor::run`] applies results in at once
    /// (at least 1; default [`DEFAULT_LANES`]). Deliveries are spread over
    /// the lanes by check id, and each lane applies its deliveries in the
    /// order they arrive, so one check's results stay in order. Lanes
    /// overlap the round trips of one batch with the work of another.
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes.max(1);
        self
    }

    /// Sets how many deliveries one lane applies in one
    /// [`Store::apply_results`] call at most (at least 1; default
    /// [`DEFAULT_BATCH`]). A lane never waits to fill a batch: it takes
    /// what has arrived while it applied the previous one, so batches are
    /// small (and latency low) under light load and grow with the load.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Sets the limits [`Processor::run`] applies to results from the
    /// queue before they reach the store (default [`ResultLimits::default`]):
    /// output and long output are cut to their caps, and a result dated
    /// more than the skew ahead of this node's clock is poisoned (moved to
    /// the poison queue with the reason, never applied): applied, it would
    /// make every later result of its check stale.
    pub fn with_limits(mut self, limits: ResultLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Applies one result through the store and, if applied, publishes the
    /// check update, alert updates, changed group and location aggregates,
    /// and a reschedule when the next interval changed.
    ///
    /// A result for an unknown check is [`Error::NotFound`].
    pub async fn handle_result(
        &self,
        result: &CheckResult,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        let t = self.store.apply_result(result, now).await?;
        if t.is_applied() {
            self.publish_transition(result.check_id, &t).await?;
            if t.interval_changed {
                self.queue
                    .publish_control(reschedule(result.check_id, &t))
                    .await?;
            }
        }
        Ok(t)
    }

    /// Turns a dead check into its TIMEOUT / ERROR result
    /// ([`DeadCheck::to_result`]) and handles it like any result; `None`
    /// when it is dropped as "no worker yet"
    /// ([`Processor::with_no_worker_grace`]).
    pub async fn handle_dead_check(
        &self,
        dead: &DeadCheck,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>> {
        if self.no_worker_yet(dead) {
            return Ok(None);
        }
        self.handle_result(&dead.to_result(), now).await.map(Some)
    }

    /// Publishes an applied transition of `check` (from a result or an
    /// action): the check update, one alert update per event, and, when the
    /// check's contribution to aggregates changed
    /// ([`Transition::contribution_changed`]), the aggregates of its groups
    /// and locations that changed since last published. Does nothing for a
    /// transition that was not applied.
    pub async fn publish_transition(&self, check: CheckId, t: &Transition) -> Result<()> {
        if !t.is_applied() {
            return Ok(());
        }
        for u in transition_updates(check, t, Utc::now()) {
            self.queue.publish_update(u).await?;
        }
        let first = self.remember && !self.memory.lock().loaded;
        if t.contribution_changed || first {
            self.publish_aggregates(&[check]).await?;
        }
        Ok(())
    }

    /// Applies every downtime window that started or ended by `now` and
    /// publishes the transitions.
    pub async fn apply_due_downtimes(&self, now: DateTime<Utc>) -> Result<()> {
        for (check, t) in self.store.apply_due_downtimes(now).await? {
            self.publish_transition(check, &t).await?;
        }
        Ok(())
    }
}

/// The check update and one alert update per event of an applied
/// transition of `check` (what [`Processor::publish_transition`] publishes
/// before the aggregates). An alert update names the open alert, or on a
/// recovery the alert the transition closed ([`Transition::closed_alert`]);
/// nil when there is neither (a flapping event of a check with no alert).
pub(crate) fn transition_updates(check: CheckId, t: &Transition, at: DateTime<Utc>) -> Vec<Update> {
    let mut out = Vec::with_capacity(1 + t.events.len());
    out.push(Update::Check(CheckUpdate {
        check_id: check,
        state: t.state.clone(),
        events: t.events.clone(),
    }));
    for &event in &t.events {
        let alert_id = t
            .state
            .current_alert
            .map(|open| open.id)
            .or(t.closed_alert)
            .unwrap_or_default();
        out.push(Update::Alert(AlertUpdate {
            check_id: check,
            alert_id,
            event,
            status: t.state.status,
            output: t.state.output.clone(),
            at,
        }));
    }
    out
}

/// A reschedule to the interval of `t`.
fn reschedule(check: CheckId, t: &Transition) -> SchedulerControl {
    SchedulerControl::Reschedule {
        check_id: check,
        interval: t.next_interval,
    }
}

/// Publishes updates at once (the queue may pipeline them), in order.
async fn publish_all(queue: &dyn Queue, updates: &[Update]) -> Result<()> {
    futures::future::try_join_all(updates.iter().map(|u| queue.publish_update(u.clone())))
        .await
        .map(|_| ())
}

/// Names results for a log line: the one, or how many.
fn describe(results: &[CheckResult]) -> String {
    match results {
        [r] => format!("result {} of check {}", r.id, r.check_id),
        _ => format!("a batch of {} results", results.len()),
    }
}

/// How long [`Processor::run`] retries a failing delivery in place (holding
/// it, taking nothing else from the queue) before it nacks it for
/// redelivery: longer than a database restart or failover takes.
pub const RETRY_IN_PLACE: Duration = Duration::from_secs(120);
