//! The async driver: owns a [`Schedule`], publishes what it decides, applies
//! control messages and reloads, and stops on a shutdown future.

use super::table::{ReloadSummary, Schedule, ScheduleConfig, SchedulerStats};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::queue::{Delivery, DeliveryStream, Queue, SchedulerControl};
use crate::store::Store;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// The wall clock that stamps `scheduled_at` on executes. Injectable so that
/// tests can fix it; the schedule itself runs on `tokio::time`.
pub(crate) trait WallClock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
}

/// [`WallClock`] reading `chrono::Utc::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Tuning of a [`Scheduler`]. [`Default`] gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// The schedule's own tuning. A `seed` of 0 is replaced by a random one,
    /// so two scheduler runs never reuse execute ids.
    pub schedule: ScheduleConfig,
    /// Executes published concurrently (each waits for its broker confirm).
    /// Default 512: with a confirm taking 25-30 ms on a busy broker, 64 at
    /// a time capped one scheduler at about 2,300 executes/s.
    pub publish_concurrency: usize,
    /// The driver wakes at least this often, even with nothing due. Default 1 s.
    pub max_sleep: Duration,
    /// Wait before consuming control messages again after that stream failed
    /// or ended. Default 1 s.
    pub control_retry: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            schedule: ScheduleConfig::default(),
            publish_concurrency: 512,
            max_sleep: Duration::from_secs(1),
            control_retry: Duration::from_secs(1),
        }
    }
}

enum Command {
    Reload(Box<Model>, oneshot::Sender<ReloadSummary>),
}

/// Talks to a running [`Scheduler`]: reloads and stats. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    stats: Arc<Mutex<SchedulerStats>>,
}

impl std::fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerHandle").finish_non_exhaustive()
    }
}

impl SchedulerHandle {
    /// Applies a reloaded model (see [`Schedule::apply_model`]) and returns
    /// what changed. Fails with [`Error::Closed`] once the scheduler stopped.
    pub async fn reload(&self, model: Model) -> Result<ReloadSummary> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload(Box::new(model), tx))
            .await
            .map_err(|_| Error::Closed("scheduler stopped".into()))?;
        rx.await
            .map_err(|_| Error::Closed("scheduler stopped before applying the reload".into()))
    }

    /// The scheduler's counters as of its last round.
    pub fn stats(&self) -> SchedulerStats {
        self.stats.lock().clone()
    }
}

/// The scheduler: publishes [`ExecuteCheck`](crate::queue::ExecuteCheck)s
/// through a [`Queue`] as the [`Schedule`] decides, and applies
/// [`SchedulerControl`] messages (acked once applied) and reloads.
pub struct Scheduler {
    schedule: Schedule,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn WallClock>,
    config: SchedulerConfig,
    rx: mpsc::Receiver<Command>,
    stats: Arc<Mutex<SchedulerStats>>,
    owner: Option<watch::Receiver<BTreeSet<u32>>>,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("schedule", &self.schedule.stats())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler of `model`'s checks (spread from now), publishing to `queue`,
    /// stamping executes with the system clock.
    ///
    /// The schedule's clock starts here: call [`run`](Self::run) soon. (A
    /// late start is not harmful: checks found late are re-spread like any
    /// other lag.)
    pub fn new(
        model: &Model,
        queue: Arc<dyn Queue>,
        config: SchedulerConfig,
    ) -> (Scheduler, SchedulerHandle) {
        Self::with_clock(model, queue, config, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new) with a given wall clock.
    pub(crate) fn with_clock(
        model: &Model,
        queue: Arc<dyn Queue>,
        mut config: SchedulerConfig,
        clock: Arc<dyn WallClock>,
    ) -> (Scheduler, SchedulerHandle) {
        if config.schedule.seed == 0 {
            config.schedule.seed = rand::random::<u64>() | 1;
        }
        let now = Instant::now();
        let mut schedule = Schedule::new(config.schedule.clone(), now);
        schedule.apply_model(model, now);
        let stats = Arc::new(Mutex::new(schedule.stats()));
        let (tx, rx) = mpsc::channel(4);
        let handle = SchedulerHandle {
            tx,
            stats: stats.clone(),
        };
        let scheduler = Scheduler {
            schedule,
            queue,
            clock,
            config,
            rx,
            stats,
            owner: None,
            store: None,
        };
        (scheduler, handle)
    }

    /// Dispatches only the partitions in `owned` (a
    /// [`PartitionOwner::watch`](super::PartitionOwner::watch) channel),
    /// following its changes. Without it the scheduler owns every
    /// partition. If the channel's sender goes away the scheduler owns
    /// nothing (the owner is gone, so are its partitions).
    pub fn with_ownership(mut self, owned: watch::Receiver<BTreeSet<u32>>) -> Self {
        self.owner = Some(owned);
        self
    }

    /// Resumes checks from `store`'s states: at start (every check, so a
    /// restarted scheduler continues each cadence from `last_check_at`, at
    /// the interval the state calls for) and whenever partitions are gained
    /// (their checks). See [`Schedule::resume_state`]. A failing store is logged; the checks then
    /// start from their spread offsets.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Feeds the store's states of the checks in `partitions`
    /// (all when `None`) to the schedule.
    async fn resume_from_store(&mut self, partitions: Option<&BTreeSet<u32>>) {
        let Some(store) = &self.store else {
            return;
        };
        match store.states().await {
            Ok(states) => {
                let now = Instant::now();
                let wall = self.clock.now();
                let mut resumed = 0usize;
                for (id, state) in states {
                    if let Some(parts) = partitions {
                        match self.schedule.partition(id) {
                            Some(p) if parts.contains(&p) => {}
                            _ => continue,
                        }
                    }
                    if self.schedule.resume_state(id, &state, now, wall) {
                        resumed += 1;
                    }
                }
                tracing::debug!(resumed, "scheduler resumed checks from the store");
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler cannot read check states to resume; checks start from their spread offsets");
            }
        }
    }

    /// Applies a new owned set, resuming the gained partitions' checks first.
    async fn apply_ownership(&mut self, owned: BTreeSet<u32>) {
        let p = self.schedule.partitions();
        if let Some(bad) = owned.iter().find(|x| **x >= p) {
            tracing::warn!(
                partition = *bad,
                partitions = p,
                "the partition owner hands out a partition the schedule does not have: ScheduleConfig::partitions differs from the owner's; those checks are never scheduled here"
            );
        }
        let current = self.schedule.owned_partitions();
        let gained: BTreeSet<u32> = owned.difference(&current).copied().collect();
        if !gained.is_empty() {
            self.resume_from_store(Some(&gained)).await;
        }
        let change = self.schedule.set_owned_partitions(&owned, Instant::now());
        if change.gained > 0 || change.lost > 0 {
            tracing::info!(
                gained = change.gained,
                lost = change.lost,
                owned = owned.len(),
                checks_started = change.checks_started,
                checks_stopped = change.checks_stopped,
                "scheduler ownership changed"
            );
        }
    }

    /// The schedule (for inspection before [`run`](Self::run)).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Runs until `shutdown` completes: dispatches due checks, applies
    /// control messages and reloads. A publish failure is logged and counted
    /// (the check runs at its next turn). Fails only if control messages
    /// cannot be consumed at start; later failures of that stream are
    /// retried every `control_retry`.
    pub async fn run<S>(mut self, shutdown: S) -> Result<()>
    where
        S: Future<Output = ()> + Send,
    {
        tokio::pin!(shutdown);
        let mut owner = self.owner.take();
        self.resume_from_store(None).await;
        if let Some(rx) = owner.as_mut() {
            let owned = rx.borrow_and_update().clone();
            self.apply_ownership(owned).await;
        }
        let mut control = Some(self.queue.consume_control().await?);
        let mut control_retry_at = Instant::now();
        let mut commands_open = true;
        loop {
            if control.is_none() && Instant::now() >= control_retry_at {
                match self.queue.consume_control().await {
                    Ok(s) => control = Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler cannot consume control messages; retrying");
                        control_retry_at = Instant::now() + self.config.control_retry;
                    }
                }
            }
            self.dispatch().await;
            *self.stats.lock() = self.schedule.stats();

            let now = Instant::now();
            let mut wake = now + self.config.max_sleep;
            if let Some(t) = self.schedule.next_wake() {
                wake = wake.min(t);
            }
            if control.is_none() {
                wake = wake.min(control_retry_at);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                cmd = self.rx.recv(), if commands_open => match cmd {
                    Some(Command::Reload(model, reply)) => {
                        let summary = self.schedule.apply_model(&model, Instant::now());
                        tracing::info!(?summary, "scheduler applied a reload");
                        // The caller may have given up waiting; the reload stands.
                        reply.send(summary).ok();
                    }
                    None => commands_open = false,
                },
                d = next_control(&mut control), if control.is_some() => match d {
                    Some(Ok(delivery)) => self.handle_control(delivery).await,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "scheduler control stream failed; consuming again");
                        control = None;
                        control_retry_at = Instant::now() + self.config.control_retry;
                    }
                    None => {
                        tracing::warn!("scheduler control stream ended; consuming again");
                        control = None;
                        control_retry_at = Instant::now() + self.config.control_retry;
                    }
                },
                changed = owned_changed(&mut owner), if owner.is_some() => match changed {
                    Some(owned) => self.apply_ownership(owned).await,
                    None => {
                        tracing::warn!("scheduler's partition owner is gone; dispatching nothing");
                        owner = None;
                        self.apply_ownership(BTreeSet::new()).await;
                    }
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn handle_control(&mut self, delivery: Delivery<SchedulerControl>) {
        let (message, acker) = delivery.into_parts();
        if !self.schedule.apply_control(&message, Instant::now()) {
            // Passive, removed or unknown: nothing to do, and requeueing
            // would only bring it back.
            tracing::debug!(?message, "scheduler control for a check it does not hold");
        }
        if let Err(e) = acker.ack().await {
            tracing::warn!(error = %e, "cannot ack a scheduler control message");
        }
    }

    /// Publishes everything due now, `publish_concurrency` at a time.
    async fn dispatch(&mut self) {
        let batch = self.schedule.due(Instant::now(), self.clock.now());
        if batch.is_empty() {
            return;
        }
        let queue = &self.queue;
        let errors = futures::stream::iter(batch)
            .map(|execute| async move {
                let check_id = execute.check_id;
                queue
                    .publish_execute(execute)
                    .await
                    .map_err(|e| (check_id, e))
            })
            .buffer_unordered(self.config.publish_concurrency.max(1))
            .fold(0u64, |n, r| async move {
                match r {
                    Ok(()) => n,
                    Err((check_id, e)) => {
                        if n == 0 {
                            tracing::warn!(%check_id, error = %e, "cannot publish an execute");
                        }
                        n + 1
                    }
                }
            })
            .await;
        if errors > 0 {
            tracing::warn!(
                errors,
                "executes not published this round; they run at their next turn"
            );
            self.schedule.stats_mut().publish_errors += errors;
        }
    }
}

/// The next owned set, `None` once the owner's sender is gone.
async fn owned_changed(
    owner: &mut Option<watch::Receiver<BTreeSet<u32>>>,
) -> Option<BTreeSet<u32>> {
    match owner {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn next_control(
    control: &mut Option<DeliveryStream<SchedulerControl>>,
) -> Option<Result<Delivery<SchedulerControl>>> {
    match control {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
