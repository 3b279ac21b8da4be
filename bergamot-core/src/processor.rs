//! The result processor: results and dead checks in, store transitions, then
//! check / group / location / alert updates and reschedules out.
//!
//! [`Processor::handle_result`] is the whole flow for one result; the web
//! layer reuses [`Processor::publish_transition`] for actions (acknowledge,
//! downtime, suppression) so they are published the same way; and
//! [`Processor::run`] is the loop a processor node runs.

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
        }
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

    /// Reloads the model's group graph and the current aggregates (the
    /// baseline against which changes are published). Call after a config sync.
    pub async fn refresh_model(&self) -> Result<()> {
        let model = self.store.model().await?;
        let index = Arc::new(GraphIndex::new(&model));
        let groups = self.store.group_states(None).await?;
        let locations = self.store.location_states(None).await?;
        let mut m = self.memory.lock();
        m.index = index;
        m.groups = groups.into_iter().map(|g| (g.id, g.aggregate)).collect();
        m.locations = locations.into_iter().map(|l| (l.id, l.aggregate)).collect();
        m.loaded = true;
        Ok(())
    }

    /// Re-reads the group graph only (the baselines stay: a change not yet
    /// published is still published).
    async fn refresh_index(&self) -> Result<()> {
        let model = self.store.model().await?;
        let index = Arc::new(GraphIndex::new(&model));
        self.memory.lock().index = index;
        Ok(())
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
        for u in self.updates_of(check, t, Utc::now()).await? {
            self.queue.publish_update(u).await?;
        }
        let loaded = self.memory.lock().loaded;
        if t.contribution_changed || !loaded {
            self.publish_aggregates(&[check]).await?;
        }
        Ok(())
    }

    /// The check update and alert updates of an applied transition.
    async fn updates_of(
        &self,
        check: CheckId,
        t: &Transition,
        at: DateTime<Utc>,
    ) -> Result<Vec<Update>> {
        transition_updates(&*self.store, check, t, at).await
    }

    /// Recomputes the aggregates of every group and location `checks` are
    /// in (each once, in one query per kind) and publishes those that
    /// changed since last published.
    async fn publish_aggregates(&self, checks: &[CheckId]) -> Result<()> {
        // One caller at a time from here: read the aggregates, compare with
        // the last published, publish.
        let _serial = self.aggregates.lock().await;
        if !self.memory.lock().loaded {
            self.refresh_model().await?;
            // The baseline already includes the change: publish the
            // aggregates once anyway, so subscribers see them.
            let mut m = self.memory.lock();
            m.groups.clear();
            m.locations.clear();
        }
        let mut index = Arc::clone(&self.memory.lock().index);
        if checks.iter().any(|c| index.check_index(*c).is_none()) {
            // A check the graph does not know yet: the model changed.
            self.refresh_index().await?;
            index = Arc::clone(&self.memory.lock().index);
        }
        let mut groups = BTreeSet::new();
        let mut locations = BTreeSet::new();
        for c in checks {
            groups.extend(index.ancestor_groups(*c).unwrap_or_default());
            locations.extend(index.ancestor_locations(*c).unwrap_or_default());
        }
        let at = Utc::now();
        let mut updates = Vec::new();
        if !groups.is_empty() {
            let groups: Vec<GroupId> = groups.into_iter().collect();
            let states = self.store.group_states_of(&groups).await?;
            let m = self.memory.lock();
            for g in states {
                if m.groups.get(&g.id) != Some(&g.aggregate) {
                    updates.push(Update::Group(GroupUpdate {
                        group_id: g.id,
                        aggregate: g.aggregate,
                        at,
                    }));
                }
            }
        }
        if !locations.is_empty() {
            let locations: Vec<LocationId> = locations.into_iter().collect();
            let states = self.store.location_states_of(&locations).await?;
            let m = self.memory.lock();
            for l in states {
                if m.locations.get(&l.id) != Some(&l.aggregate) {
                    updates.push(Update::Location(LocationUpdate {
                        location_id: l.id,
                        aggregate: l.aggregate,
                        at,
                    }));
                }
            }
        }
        publish_all(&*self.queue, &updates).await?;
        // Remembered once published: a failed publish is published again.
        let mut m = self.memory.lock();
        for u in updates {
            match u {
                Update::Group(g) => {
                    m.groups.insert(g.group_id, g.aggregate);
                }
                Update::Location(l) => {
                    m.locations.insert(l.location_id, l.aggregate);
                }
                _ => {}
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
    /// lanes that work at once. A lane takes every delivery that has
    /// arrived (up to [`Processor::with_batch`]), applies them in arrival
    /// order in one [`Store::apply_results`] call (one transaction on
    /// PostgreSQL), publishes the check and alert updates and the
    /// reschedules, and then acks them: one check's results (and dead
    /// checks) are applied in the order they arrive, and each delivery is
    /// acked after its effect is durable. Group and location aggregates
    /// are recomputed by a task of their own for every check whose
    /// contribution changed, coalesced: at most one recomputation at a time,
    /// [`AGGREGATE_MIN_GAP`] apart at least.
    ///
    /// A store or queue error is retried *in place*, holding the
    /// deliveries, with a backoff (100 ms doubling up to 5 s, reset on
    /// success) for up to [`RETRY_IN_PLACE`]: the lane takes nothing else
    /// meanwhile, so a database restart neither reorders one check's
    /// results (a requeued result would come back behind newer ones and be
    /// dropped as stale) nor loses any. After that the deliveries are
    /// nacked with requeue and the lane goes on. On shutdown each lane
    /// finishes the batch it applies (or, during a retry, leaves it
    /// unacked); deliveries not yet taken are left unacked (the queue
    /// redelivers them). Results of unknown checks are logged and acked;
    /// a result the store refuses as bad data (on PostgreSQL: SQLSTATE class
    /// 22, 23 or 54, e.g. a NUL byte or a constraint violation) is a
    /// permanent error of that one result: a batch refused as a whole is
    /// applied one by one, and only the refused result is moved to the
    /// poison queue ([`Acker::poison`]) with the reason, so it cannot block
    /// a lane. Before that, [`Processor::with_limits`] cuts outputs to
    /// their caps and poisons results dated too far ahead. Due downtimes are
    /// applied every [`DOWNTIME_TICK`], by a task of their own.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let this = Arc::new(self);
        let mut results = this.queue.consume_results().await?;
        let mut dead = this.queue.consume_dead_checks().await?;
        let mut backoff = Backoff::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut lanes = tokio::task::JoinSet::new();
        // Downtimes in a task of their own: the query scans every state, and
        // the deliveries must not wait for it. Aggregates too.
        lanes.spawn(Arc::clone(&this).downtimes(stop_rx.clone()));
        lanes.spawn(Arc::clone(&this).aggregator(stop_rx.clone()));
        let mut senders = Vec::with_capacity(this.lanes);
        for _ in 0..this.lanes {
            let (tx, rx) = tokio::sync::mpsc::channel(this.batch);
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

    /// Marks checks whose contribution to aggregates changed, for the
    /// aggregate task of [`Processor::run`].
    fn mark_dirty(&self, checks: impl IntoIterator<Item = CheckId>) {
        let mut dirty = self.dirty.lock();
        let before = dirty.len();
        dirty.extend(checks);
        if dirty.len() > before {
            self.dirty_notify.notify_one();
        }
    }

    /// Recomputes and publishes the aggregates of the dirty checks until
    /// `stop` is set: at most one recomputation at a time, then a pause of
    /// [`AGGREGATE_MIN_GAP`] or four times the recomputation's duration,
    /// whichever is longer; changes marked meanwhile are coalesced. Also
    /// re-reads the group graph every [`MODEL_REFRESH`].
    async fn aggregator(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let mut backoff = Backoff::default();
        let mut refresh = tokio::time::interval(MODEL_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return,
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh_index().await {
                        tracing::warn!(error = %e, "re-reading the group graph failed");
                    }
                    continue;
                }
                () = self.dirty_notify.notified() => {}
            }
            let checks: Vec<CheckId> = self.dirty.lock().drain().collect();
            if checks.is_empty() {
                continue;
            }
            let started = tokio::time::Instant::now();
            let pause = match self.publish_aggregates(&checks).await {
                Ok(()) => {
                    backoff.reset();
                    (started.elapsed() * 4).max(AGGREGATE_MIN_GAP)
                }
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?wait, "recomputing aggregates failed");
                    self.mark_dirty(checks);
                    wait
                }
            };
            tokio::select! {
                biased;
                () = &mut stopped => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One lane of [`Processor::run`]: applies its deliveries in order, in
    /// batches, until `stop` is set or its channel closes.
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
            let first = tokio::select! {
                biased;
                () = &mut stopped => return,
                w = rx.recv() => match w {
                    Some(w) => w,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < self.batch {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            if !self
                .apply_batch(batch, stopped.as_mut(), &mut backoff)
                .await
            {
                return;
            }
        }
    }

    /// Applies one lane's batch (see [`Processor::run`]); false when
    /// `stopped` completed meanwhile (the caller must not poll it again).
    async fn apply_batch(
        &self,
        batch: Vec<Work>,
        mut stopped: std::pin::Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Backoff,
    ) -> bool {
        let mut results = Vec::with_capacity(batch.len());
        let mut ackers = Vec::with_capacity(batch.len());
        let now = Utc::now();
        for work in batch {
            let (mut result, acker) = match work {
                Work::Result(d) => d.into_parts(),
                Work::Dead(d) => {
                    let (dc, acker) = d.into_parts();
                    if self.no_worker_yet(&dc) {
                        // Dropped: "no worker yet" (with_no_worker_grace).
                        if let Err(e) = acker.ack().await {
                            tracing::warn!(error = %e, "cannot ack a no-worker-yet dead check");
                        }
                        continue;
                    }
                    (dc.to_result(), acker)
                }
            };
            if let Err(reason) = result.check_clock(now, &self.limits) {
                let what = describe(std::slice::from_ref(&result));
                poison(acker, format!("{what}: {reason}"), &what).await;
                continue;
            }
            if result.cap_output(&self.limits) {
                tracing::debug!(
                    "output of {} cut to the output caps",
                    describe(std::slice::from_ref(&result))
                );
            }
            results.push(result);
            ackers.push(acker);
        }
        if results.is_empty() {
            return true;
        }
        match self
            .apply_chunk(results, ackers, stopped.as_mut(), backoff)
            .await
        {
            Chunk::Done => true,
            Chunk::Stopped => false,
            // The batch as a whole was refused as bad input: one result
            // spoils it. Apply them one by one, so only that one is dropped.
            Chunk::Split(results, ackers) => {
                for (r, a) in results.into_iter().zip(ackers) {
                    let one = self.apply_chunk(vec![r], vec![a], stopped.as_mut(), backoff);
                    if matches!(one.await, Chunk::Stopped) {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Applies results in one store call, publishes, acks (see
    /// [`Processor::run`]).
    async fn apply_chunk(
        &self,
        results: Vec<CheckResult>,
        ackers: Vec<Box<dyn Acker>>,
        mut stopped: std::pin::Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Backoff,
    ) -> Chunk {
        let what = || describe(&results);
        let applied = retry_in_place(stopped.as_mut(), backoff, &what, || {
            self.store.apply_results(&results, Utc::now())
        })
        .await;
        let outcomes = match applied {
            None => return Chunk::Stopped,
            Some(Ok(outcomes)) if outcomes.len() == results.len() => outcomes,
            Some(Ok(outcomes)) => {
                let e = Error::Closed(format!(
                    "the store returned {} outcomes for {} results",
                    outcomes.len(),
                    results.len()
                ));
                self.settle_all(e, ackers, backoff, what).await;
                return Chunk::Done;
            }
            Some(Err(e)) if is_bad_input(&e) && results.len() > 1 => {
                tracing::warn!(error = %e, "{} refused as a whole; applying them one by one", what());
                return Chunk::Split(results, ackers);
            }
            Some(Err(e)) => {
                self.settle_all(e, ackers, backoff, what).await;
                return Chunk::Done;
            }
        };
        // What the applied transitions mean, in arrival order.
        let now = Utc::now();
        let mut updates = Vec::new();
        let mut controls = Vec::new();
        let mut changed = Vec::new();
        let mut settle = Vec::with_capacity(ackers.len());
        for ((result, outcome), acker) in results.iter().zip(outcomes).zip(ackers) {
            match outcome {
                Ok(t) => {
                    if t.is_applied() {
                        let check = result.check_id;
                        if t.interval_changed {
                            controls.push(reschedule(check, &t));
                        }
                        if t.contribution_changed {
                            changed.push(check);
                        }
                        match self.updates_of(check, &t, now).await {
                            Ok(u) => updates.extend(u),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot publish the alert of {}", describe(std::slice::from_ref(result)))
                            }
                        }
                    }
                    settle.push((acker, Ok(())));
                }
                Err(e) => {
                    let what = describe(std::slice::from_ref(result));
                    settle.push((acker, Err((e, what))));
                }
            }
        }
        let published = retry_in_place(stopped.as_mut(), backoff, &what, || async {
            publish_all(&*self.queue, &updates).await?;
            futures::future::try_join_all(
                controls
                    .iter()
                    .map(|c| self.queue.publish_control(c.clone())),
            )
            .await
            .map(|_| ())
        })
        .await;
        match published {
            None => return Chunk::Stopped,
            Some(Ok(())) => {}
            // The store applied them: a redelivery would be a duplicate
            // and publish nothing either, so ack anyway.
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot publish the updates of {}; they are lost", what())
            }
        }
        let loaded = self.memory.lock().loaded;
        if !loaded && !results.is_empty() {
            // The first batch after start: publish every aggregate it touched.
            changed.extend(results.iter().map(|r| r.check_id));
        }
        self.mark_dirty(changed);
        let mut failed = false;
        let acks = settle.into_iter().map(|(acker, outcome)| async move {
            match outcome {
                Ok(()) => acker.ack().await.map_err(|e| (e, String::new())),
                Err((e, what)) if is_poison(&e) => {
                    poison(acker, format!("{what}: {e}"), &what).await;
                    Ok(())
                }
                Err((e, what)) if is_bad_input(&e) => {
                    tracing::warn!(error = %e, "dropping {what}");
                    acker.ack().await.map_err(|e| (e, what))
                }
                Err((e, what)) => {
                    tracing::error!(error = %e, "{what} failed; requeued");
                    acker.nack(true).await.map_err(|e| (e, what))
                }
            }
        });
        for settled in futures::future::join_all(acks).await {
            if let Err((e, w)) = settled {
                failed = true;
                tracing::warn!(error = %e, "cannot settle a delivery {w}");
            }
        }
        if !failed {
            backoff.reset();
        }
        Chunk::Done
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

    /// Settles deliveries whose store call failed: dropped (acked) on bad
    /// input, otherwise nacked with requeue after a backoff. A failing ack
    /// is only logged: the message comes again and is then a duplicate,
    /// which the store drops.
    async fn settle_all(
        &self,
        e: Error,
        ackers: Vec<Box<dyn Acker>>,
        backoff: &mut Backoff,
        what: impl Fn() -> String,
    ) {
        let bad = is_bad_input(&e);
        if is_poison(&e) {
            let reason = format!("{}: {e}", what());
            for a in ackers {
                poison(a, reason.clone(), &what()).await;
            }
            return;
        }
        if bad {
            tracing::warn!(error = %e, "dropping {}", what());
        } else {
            let wait = backoff.next();
            tracing::error!(error = %e, retry_in = ?wait, "{} still failing after {RETRY_IN_PLACE:?} of retries; requeued", what());
            tokio::time::sleep(wait).await;
        }
        let settled = futures::future::join_all(ackers.into_iter().map(|a| async move {
            if bad {
                a.ack().await
            } else {
                a.nack(true).await
            }
        }))
        .await;
        for r in settled {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot settle {}", what());
            }
        }
    }
}

/// The check update and one alert update per event of an applied
/// transition of `check` (what [`Processor::publish_transition`] publishes
/// before the aggregates). An alert update names the open alert, or on a
/// recovery the newest alert record of the check (nil if it never alerted).
pub async fn transition_updates(
    store: &dyn Store,
    check: CheckId,
    t: &Transition,
    at: DateTime<Utc>,
) -> Result<Vec<Update>> {
    let mut out = Vec::with_capacity(1 + t.events.len());
    out.push(Update::Check(CheckUpdate {
        check_id: check,
        state: t.state.clone(),
        events: t.events.clone(),
    }));
    for &event in &t.events {
        let alert_id = match t.state.current_alert {
            Some(open) => open.id,
            None => store
                .alerts(Some(check), 1)
                .await?
                .first()
                .map(|r| r.id)
                .unwrap_or_default(),
        };
        out.push(Update::Alert(AlertUpdate {
            check_id: check,
            alert_id,
            event,
            status: t.state.status,
            output: t.state.output.clone(),
            at,
        }));
    }
    Ok(out)
}

/// What [`Processor::apply_chunk`] did.
enum Chunk {
    /// Applied and settled.
    Done,
    /// Shutdown while retrying: left unacked.
    Stopped,
    /// Refused as a whole as bad input: apply one by one.
    Split(Vec<CheckResult>, Vec<Box<dyn Acker>>),
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

/// Whether a bad-input error is about the message itself (the store
/// refused its data, or it cannot be decoded): such deliveries go to the
/// poison queue with the reason. Results of unknown checks (e.g. a check
/// just removed from the config) are only dropped.
fn is_poison(e: &Error) -> bool {
    matches!(e, Error::InvalidInput(_) | Error::Decode(_))
}

/// Moves one delivery to the poison queue ([`Acker::poison`]), logging why;
/// a failure to do so is logged (the delivery comes again).
async fn poison(acker: Box<dyn Acker>, reason: String, what: &str) {
    tracing::warn!(%reason, "moving {what} to the poison queue");
    if let Err(e) = acker.poison(reason).await {
        tracing::warn!(error = %e, "cannot poison {what}");
    }
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
