//! The result processor: results and dead checks in, store transitions, then
//! check / group / location / alert updates and reschedules out.
//!
//! [`Processor::handle_result`] is the whole flow for one result; the web
//! layer reuses [`Processor::publish_transition`] for actions (acknowledge,
//! downtime, suppression) so they are published the same way; and
//! [`Processor::run`] is the loop a processor node runs.

use crate::aggregate::{Aggregate, Contribution};
use crate::error::{Error, Result};
use crate::model::{CheckId, CheckResult, GroupId, LocationId, Policy};
use crate::queue::{
    AlertUpdate, CheckUpdate, DeadCheck, GroupUpdate, LocationUpdate, Queue, SchedulerControl,
    Update,
};
use crate::state::{self, CheckState, Transition};
use crate::store::Store;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often [`Processor::run`] applies due downtimes.
pub const DOWNTIME_TICK: Duration = Duration::from_secs(1);

/// Results [`Processor::run`] applies at once by default (see
/// [`Processor::with_lanes`]).
pub const DEFAULT_LANES: usize = 16;

/// Deliveries waiting in one lane before [`Processor::run`] waits for it.
const LANE_DEPTH: usize = 4;

/// Applies results through a [`Store`] and publishes what changed on a [`Queue`].
///
/// It remembers the last aggregate it published per group and location (so
/// it only publishes changes) and each check's policy (to tell whether the
/// next interval changed); call [`Processor::refresh_model`] after a config sync.
pub struct Processor {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    memory: Mutex<Memory>,
    lanes: usize,
    /// Serialises the read-compare-publish of aggregates, so that with
    /// several lanes an older aggregate is never published after a newer one.
    aggregates: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Memory {
    loaded: bool,
    policies: HashMap<CheckId, Policy>,
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
            aggregates: tokio::sync::Mutex::new(()),
        }
    }

    /// Sets how many results [`Processor::run`] applies at once (at least
    /// 1; default [`DEFAULT_LANES`]). Deliveries are spread over the lanes
    /// by check id, and each lane applies its results one after another, so
    /// one check's results are still applied in the order they arrive.
    /// Each applied result costs several round trips to the store and the
    /// queue; lanes overlap those waits (one lane: about 100-500 results/s,
    /// bounded by latency, not CPU).
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes.max(1);
        self
    }

    /// Reloads the model's policies and the current aggregates (the baseline
    /// against which changes are published). Call after a config sync.
    pub async fn refresh_model(&self) -> Result<()> {
        let model = self.store.model().await?;
        let groups = self.store.group_states(None).await?;
        let locations = self.store.location_states(None).await?;
        let mut m = self.memory.lock();
        m.policies = model.checks.into_iter().map(|c| (c.id, c.policy)).collect();
        m.groups = groups.into_iter().map(|g| (g.id, g.aggregate)).collect();
        m.locations = locations.into_iter().map(|l| (l.id, l.aggregate)).collect();
        m.loaded = true;
        Ok(())
    }

    async fn policy(&self, check: CheckId) -> Result<Option<Policy>> {
        let cached = {
            let m = self.memory.lock();
            m.loaded.then(|| m.policies.get(&check).cloned())
        };
        match cached {
            Some(Some(p)) => Ok(Some(p)),
            // Unknown or not loaded yet: the model may have changed.
            _ => {
                self.refresh_model().await?;
                Ok(self.memory.lock().policies.get(&check).cloned())
            }
        }
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
        let check = result.check_id;
        let before = self.store.state(check).await?;
        let policy = self.policy(check).await?;
        let t = self.store.apply_result(result, now).await?;
        if t.is_applied() {
            self.publish_change(check, Some(&before), &t).await?;
            let previous = policy.as_ref().map(|p| state::next_interval(&before, p));
            if previous != Some(t.next_interval) {
                self.queue
                    .publish_control(SchedulerControl::Reschedule {
                        check_id: check,
                        interval: t.next_interval,
                    })
                    .await?;
            }
        }
        Ok(t)
    }

    /// Turns a dead check into its TIMEOUT / ERROR result
    /// ([`DeadCheck::to_result`]) and handles it like any result.
    pub async fn handle_dead_check(
        &self,
        dead: &DeadCheck,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.handle_result(&dead.to_result(), now).await
    }

    /// Publishes an applied transition of `check` (from a result or an
    /// action): the check update, one alert update per event, and the
    /// aggregates of the check's groups and locations that changed since last
    /// published. Does nothing for a transition that was not applied.
    pub async fn publish_transition(&self, check: CheckId, t: &Transition) -> Result<()> {
        self.publish_change(check, None, t).await
    }

    /// [`Processor::publish_transition`] knowing the state before: when the
    /// check's [`Contribution`] to aggregates (effective status and ignore
    /// flags) is the same before and after, no group or location aggregate
    /// can have changed, so none is recomputed (a stable check re-reporting
    /// OK costs no aggregate query). `before = None` means unknown: the
    /// aggregates are recomputed as by `publish_transition`.
    pub async fn publish_change(
        &self,
        check: CheckId,
        before: Option<&CheckState>,
        t: &Transition,
    ) -> Result<()> {
        if !t.is_applied() {
            return Ok(());
        }
        let at = Utc::now();
        self.queue
            .publish_update(Update::Check(CheckUpdate {
                check_id: check,
                state: t.state.clone(),
                events: t.events.clone(),
            }))
            .await?;
        for &event in &t.events {
            let alert_id = match t.state.current_alert {
                Some(open) => open.id,
                // Recovery (or flapping with no alert open): the newest
                // record, nil when the check never alerted.
                None => self
                    .store
                    .alerts(Some(check), 1)
                    .await?
                    .first()
                    .map(|r| r.id)
                    .unwrap_or_default(),
            };
            self.queue
                .publish_update(Update::Alert(AlertUpdate {
                    check_id: check,
                    alert_id,
                    event,
                    status: t.state.status,
                    output: t.state.output.clone(),
                    at,
                }))
                .await?;
        }
        let loaded = self.memory.lock().loaded;
        if loaded
            && before.is_some_and(|b| Contribution::of(Some(b)) == Contribution::of(Some(&t.state)))
        {
            return Ok(());
        }
        // One lane at a time from here: read the aggregates, compare with
        // the last published, publish.
        let _serial = self.aggregates.lock().await;
        if !loaded {
            self.refresh_model().await?;
            // The baseline already includes this transition: publish the
            // aggregates once anyway, so subscribers see them.
            let mut m = self.memory.lock();
            m.groups.clear();
            m.locations.clear();
        }
        let groups = self.store.ancestor_groups(check).await?;
        if !groups.is_empty() {
            let states = self.store.group_states_of(&groups).await?;
            let changed: Vec<_> = {
                let mut m = self.memory.lock();
                states
                    .into_iter()
                    .filter(|g| m.groups.insert(g.id, g.aggregate) != Some(g.aggregate))
                    .collect()
            };
            for g in changed {
                self.queue
                    .publish_update(Update::Group(GroupUpdate {
                        group_id: g.id,
                        aggregate: g.aggregate,
                        at,
                    }))
                    .await?;
            }
        }
        let locations = self.store.ancestor_locations(check).await?;
        if !locations.is_empty() {
            let states = self.store.location_states_of(&locations).await?;
            let changed: Vec<_> = {
                let mut m = self.memory.lock();
                states
                    .into_iter()
                    .filter(|l| m.locations.insert(l.id, l.aggregate) != Some(l.aggregate))
                    .collect()
            };
            for l in changed {
                self.queue
                    .publish_update(Update::Location(LocationUpdate {
                        location_id: l.id,
                        aggregate: l.aggregate,
                        at,
                    }))
                    .await?;
            }
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

    /// Consumes results and dead checks until `shutdown` completes.
    ///
    /// Deliveries are spread by check id over [`Processor::with_lanes`]
    /// lanes that apply at once; each lane takes its deliveries one after
    /// another, so one check's results (and dead checks) are applied in the
    /// order they arrive. Each delivery is acked after the store call
    /// returned (its effect is durable). A store or queue error is retried
    /// *in place*, holding the delivery, with a backoff (100 ms doubling up
    /// to 5 s, reset on success) for up to [`RETRY_IN_PLACE`]: the lane
    /// takes nothing else meanwhile, so a database restart neither reorders
    /// one check's results (a requeued result would come back behind newer
    /// ones and be dropped as stale) nor loses any. After that the delivery
    /// is nacked with requeue and the lane goes on. On shutdown each lane
    /// finishes the delivery it applies (or, during a retry, leaves it
    /// unacked); deliveries not yet taken are left unacked (the queue
    /// redelivers them). Results of unknown checks and other bad input are
    /// logged and acked, so they cannot block a lane. Due downtimes are
    /// applied every [`DOWNTIME_TICK`], by a task of their own.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let this = Arc::new(self);
        let mut results = this.queue.consume_results().await?;
        let mut dead = this.queue.consume_dead_checks().await?;
        let mut backoff = Backoff::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut lanes = tokio::task::JoinSet::new();
        // Downtimes in a task of their own: the query scans every state, and
        // the deliveries must not wait for it.
        lanes.spawn(Arc::clone(&this).downtimes(stop_rx.clone()));
        let mut senders = Vec::with_capacity(this.lanes);
        for _ in 0..this.lanes {
            let (tx, rx) = tokio::sync::mpsc::channel(LANE_DEPTH);
            senders.push(tx);
            lanes.spawn(Arc::clone(&this).lane(rx, stop_rx.clone()));
        }
        let lane_of = |check: CheckId| {
            let v = check.0.as_u128();
            ((v as u64 ^ (v >> 64) as u64) % senders.len() as u64) as usize
        };
        tokio::pin!(shutdown);
        let outcome = loop {
            let work = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                d = results.next() => match Self::delivered(d, "result", &mut backoff).await {
                    Err(e) => break Err(e),
                    Ok(None) => continue,
                    Ok(Some(d)) => {
                        backoff.reset();
                        Work::Result(d)
                    }
                },
                d = dead.next() => match Self::delivered(d, "dead check", &mut backoff).await {
                    Err(e) => break Err(e),
                    Ok(None) => continue,
                    Ok(Some(d)) => {
                        backoff.reset();
                        Work::Dead(d)
                    }
                },
            };
            let lane = match &work {
                Work::Result(d) => lane_of(d.message.check_id),
                Work::Dead(d) => lane_of(d.message.execute.check_id),
            };
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                sent = senders[lane].send(work) => {
                    if sent.is_err() {
                        break Err(Error::Closed("a result processing lane stopped".into()));
                    }
                }
            }
        };
        let _ = stop_tx.send(true);
        drop(senders);
        while let Some(joined) = lanes.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "result processing lane panicked");
            }
        }
        outcome
    }

    /// Applies due downtimes every [`DOWNTIME_TICK`] until `stop` is set.
    async fn downtimes(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(DOWNTIME_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return,
                _ = tick.tick() => {
                    if let Err(e) = self.apply_due_downtimes(Utc::now()).await {
                        tracing::warn!(error = %e, "applying due downtimes failed");
                    }
                }
            }
        }
    }

    /// One lane of [`Processor::run`]: applies its deliveries in order until
    /// `stop` is set or its channel closes.
    async fn lane(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::Receiver<Work>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::default();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            let work = tokio::select! {
                biased;
                () = &mut stopped => return,
                w = rx.recv() => match w {
                    Some(w) => w,
                    None => return,
                },
            };
            match work {
                Work::Result(d) => {
                    let (result, acker) = d.into_parts();
                    let what = || format!("result {} of check {}", result.id, result.check_id);
                    let outcome = retry_in_place(stopped.as_mut(), &mut backoff, &what, || {
                        self.handle_result(&result, Utc::now())
                    })
                    .await;
                    let Some(outcome) = outcome else { return };
                    self.settle(outcome, acker, &mut backoff, what).await;
                }
                Work::Dead(d) => {
                    let (dc, acker) = d.into_parts();
                    let what = || {
                        format!(
                            "dead check {} of check {}",
                            dc.execute.id, dc.execute.check_id
                        )
                    };
                    let outcome = retry_in_place(stopped.as_mut(), &mut backoff, &what, || {
                        self.handle_dead_check(&dc, Utc::now())
                    })
                    .await;
                    let Some(outcome) = outcome else { return };
                    self.settle(outcome, acker, &mut backoff, what).await;
                }
            }
        }
    }

    /// One item of a delivery stream: the delivery, `None` after a stream
    /// error (logged, backed off: the backend reconnects), or an error when
    /// the stream ended for good.
    async fn delivered<T>(
        item: Option<Result<crate::queue::Delivery<T>>>,
        what: &str,
        backoff: &mut Backoff,
    ) -> Result<Option<crate::queue::Delivery<T>>> {
        match item {
            None => Err(Error::Closed(format!("{what} stream ended"))),
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(e)) => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "{what} stream error");
                tokio::time::sleep(wait).await;
                Ok(None)
            }
        }
    }

    /// Acks or nacks a handled delivery. A failing ack is only logged: the
    /// message comes again and is then a duplicate, which the store drops.
    async fn settle(
        &self,
        outcome: Result<Transition>,
        acker: Box<dyn crate::queue::Acker>,
        backoff: &mut Backoff,
        what: impl Fn() -> String,
    ) {
        let settled = match outcome {
            Ok(_) => {
                backoff.reset();
                acker.ack().await
            }
            Err(e) if is_bad_input(&e) => {
                tracing::warn!(error = %e, "dropping {}", what());
                acker.ack().await
            }
            Err(e) => {
                let wait = backoff.next();
                tracing::error!(error = %e, retry_in = ?wait, "{} still failing after {RETRY_IN_PLACE:?} of retries; requeued", what());
                tokio::time::sleep(wait).await;
                acker.nack(true).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "cannot settle {}", what());
        }
    }
}

/// A delivery handed to a lane of [`Processor::run`].
enum Work {
    Result(crate::queue::Delivery<CheckResult>),
    Dead(crate::queue::Delivery<DeadCheck>),
}

/// How long [`Processor::run`] retries a failing delivery in place (holding
/// it, taking nothing else from the queue) before it nacks it for
/// redelivery: longer than a database restart or failover takes.
pub const RETRY_IN_PLACE: Duration = Duration::from_secs(120);

/// Whether an error is about the input (retrying cannot help): such
/// deliveries are dropped, everything else is retried.
fn is_bad_input(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. } | Error::InvalidInput(_) | Error::Decode(_)
    )
}

/// Runs `f` until it succeeds, fails on bad input, or has failed for
/// [`RETRY_IN_PLACE`] (then returns its last error), sleeping `backoff`
/// between attempts. `None` when `shutdown` completed while waiting (the
/// caller must not poll it again).
async fn retry_in_place<T, F, Fut>(
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    backoff: &mut Backoff,
    what: &impl Fn() -> String,
    mut f: F,
) -> Option<Result<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match f().await {
            Err(e) if !is_bad_input(&e) && started.elapsed() < RETRY_IN_PLACE => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "{} failed; retrying", what());
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => {
                        tracing::info!("shutting down: leaving {} unacked for redelivery", what());
                        return None;
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            }
            other => return Some(other),
        }
    }
}

/// Exponential backoff between retries of failing store calls.
#[derive(Debug)]
struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            current: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(Duration::from_secs(5));
        d
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}
