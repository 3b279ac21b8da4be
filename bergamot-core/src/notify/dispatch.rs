//! The [`Dispatcher`]: claims due jobs from a [`NotificationStore`] and sends
//! each through its channel, with a timeout per send, bounded concurrency,
//! and retries with capped exponential backoff.
//!
//! It runs in its own task (the `notifier` role of `bergamotd`), never on the
//! path that applies results: a channel that hangs or fails costs one
//! concurrency slot for at most [`DispatcherConfig::send_timeout`].
//!
//! Delivery is at least once: a job is marked sent only after its channel
//! accepted it; if the node dies in between, the job's lease ends and another
//! (or the restarted) node sends it again, with the same
//! [`Notification::id`](super::Notification::id). A job marked sent is never
//! claimed again, so in normal operation nothing is sent twice.

use super::{
    JobStatus, NotificationJob, NotificationKind, NotificationStore, Notifier, SendOutcome,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// The channels a dispatcher sends through, by `[[channel]] name`.
pub type ChannelMap = HashMap<String, Arc<dyn Notifier>>;

/// Retry timing of failed sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub initial: Duration,
    /// The longest wait; doubling stops there.
    pub max: Duration,
    /// Attempts in all, the first included; the job is marked failed after
    /// this many failed attempts.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 30 s, doubling up to 15 min, 10 attempts (about 1 h 50 min in all).
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(15 * 60),
            max_attempts: 10,
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based):
    /// `initial * 2^(attempt-1)`, at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// How a [`Dispatcher`] works.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// This node's name, recorded with its claims.
    pub node: String,
    /// How often the store is asked for due jobs when there was nothing to do
    /// (a [`DispatcherHandle::wake`] asks at once).
    pub poll_every: Duration,
    /// Sends in flight at most.
    pub concurrency: usize,
    /// The longest one send may take; a send still running then counts as a
    /// transient failure.
    pub send_timeout: Duration,
    /// How long a claim holds a job; must exceed `send_timeout` (a job whose
    /// lease ended is claimed again, so a short lease sends twice).
    pub lease: Duration,
    /// Retry timing.
    pub backoff: Backoff,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            node: "bergamot".to_string(),
            poll_every: Duration::from_secs(1),
            concurrency: 16,
            send_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(300),
            backoff: Backoff::default(),
        }
    }
}

impl DispatcherConfig {
    fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::InvalidInput(
                "notifier concurrency must be at least 1".into(),
            ));
        }
        if self.lease <= self.send_timeout {
            return Err(Error::InvalidInput(format!(
                "notifier lease ({:?}) must exceed the send timeout ({:?})",
                self.lease, self.send_timeout
            )));
        }
        if self.backoff.max_attempts == 0 {
            return Err(Error::InvalidInput(
                "notifier max_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Decides, just before a send, whether a job still matters (say, a
/// repeat of an alert that closed meanwhile). The planner's relevance rule
/// plugs in here.
#[async_trait]
pub trait Relevance: Send + Sync + 'static {
    /// `None`: send it; `Some(reason)`: cancel it, with `reason` in the log.
    async fn cancel_reason(&self, job: &NotificationJob, now: DateTime<Utc>) -> Option<String>;
}

/// Every job is relevant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AlwaysRelevant;

#[async_trait]
impl Relevance for AlwaysRelevant {
    async fn cancel_reason(&self, _job: &NotificationJob, _now: DateTime<Utc>) -> Option<String> {
        None
    }
}

/// What one attempt came to, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Accepted by the receiver.
    Sent,
    /// Failed; will be tried again.
    Retried,
    /// Failed for good (permanent error, unknown channel, attempts used up).
    Failed,
    /// Dropped as no longer relevant.
    Cancelled,
}

impl Outcome {
    /// Its label in `/metrics` (`sent`, `retried`, `failed`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

struct Shared {
    store: Arc<dyn NotificationStore>,
    channels: RwLock<Arc<ChannelMap>>,
    relevance: RwLock<Arc<dyn Relevance>>,
    counters: Mutex<BTreeMap<(String, Outcome), u64>>,
    wake: Notify,
    config: DispatcherConfig,
}

/// Sends due notification jobs: claims them from a [`NotificationStore`]
/// and sends each through its channel, with a timeout per send, bounded
/// concurrency and retries with capped exponential backoff. Delivery is at
/// least once: a job is marked sent only after its channel accepted it.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

/// Changes a running [`Dispatcher`]: new channels on reload, a wake-up
/// after enqueueing, its counters. Cheap to clone.
#[derive(Clone)]
pub struct DispatcherHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DispatcherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherHandle")
            .field("node", &self.shared.config.node)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over `store` sending through `channels`; fails on an
    /// inconsistent `config` (zero concurrency, a lease not longer than the
    /// send timeout, zero attempts).
    pub fn new(
        store: Arc<dyn NotificationStore>,
        channels: ChannelMap,
        config: DispatcherConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                store,
                channels: RwLock::new(Arc::new(channels)),
                relevance: RwLock::new(Arc::new(AlwaysRelevant)),
                counters: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                config,
            }),
        })
    }

    /// Checks every job with `relevance` before sending it.
    pub fn with_relevance(self, relevance: Arc<dyn Relevance>) -> Self {
        *self.shared.relevance.write() = relevance;
        self
    }

    /// A handle to change it while it runs.
    pub fn handle(&self) -> DispatcherHandle {
        DispatcherHandle {
            shared: self.shared.clone(),
        }
    }

    /// Claims and sends until `stop` completes, then waits (at most the
    /// send timeout) for the sends in flight. Store errors are logged and
    /// retried at the next poll; nothing here ends the loop but `stop`.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) -> Result<()> {
        let shared = self.shared;
        let cfg = shared.config.clone();
        let permits = Arc::new(Semaphore::new(cfg.concurrency));
        tokio::pin!(stop);
        loop {
            let free = permits.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match shared
                    .store
                    .claim(&cfg.node, Utc::now(), cfg.lease, free)
                    .await
                {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            let permit = match permits.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => return Ok(()),
                            };
                            let s = shared.clone();
                            tokio::spawn(async move {
                                process(&s, job).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim notification jobs; retrying");
                    }
                }
            }
            if claimed > 0 && claimed == free {
                // Possibly more due: go on once a slot frees up.
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    p = permits.clone().acquire_owned() => drop(p),
                }
                continue;
            }
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(cfg.poll_every) => {}
            }
        }
        let all = u32::try_from(cfg.concurrency).unwrap_or(u32::MAX);
        let grace = cfg.send_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("notification sends still running at shutdown; their leases will end and another node resends them");
        }
        Ok(())
    }
}

async fn process(s: &Shared, job: NotificationJob) {
    let n = &job.notification;
    let now = Utc::now();
    let relevance = s.relevance.read().clone();
    if n.kind != NotificationKind::Test {
        if let Some(reason) = relevance.cancel_reason(&job, now).await {
            tracing::info!(job = %n.id, channel = %n.channel, recipient = %n.recipient.name, %reason, "notification cancelled");
            finish(
                s,
                &job,
                SendOutcome::Cancelled { reason },
                Outcome::Cancelled,
            )
            .await;
            return;
        }
    }
    let channel = s.channels.read().get(&n.channel).cloned();
    let Some(channel) = channel else {
        let error = format!("unknown channel {:?}", n.channel);
        tracing::warn!(job = %n.id, recipient = %n.recipient.name, %error, "notification failed");
        finish(
            s,
            &job,
            SendOutcome::Failed {
                error,
                retry_at: None,
            },
            Outcome::Failed,
        )
        .await;
        return;
    };
    let timeout = s.config.send_timeout;
    let result = match tokio::time::timeout(timeout, channel.send(n)).await {
        Ok(r) => r,
        Err(_) => Err(super::SendError::transient(format!(
            "timed out after {timeout:?}"
        ))),
    };
    match result {
        Ok(()) => {
            tracing::debug!(job = %n.id, channel = %n.channel, recipient = %n.recipient.name, "notification sent");
            finish(s, &job, SendOutcome::Sent, Outcome::Sent).await;
        }
        Err(e) => {
            let give_up = e.permanent || job.attempts >= s.config.backoff.max_attempts;
            let retry_at = if give_up {
                None
            } else {
                let d = s.config.backoff.delay(job.attempts.max(1));
                Some(Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
            };
            tracing::warn!(
                job = %n.id,
                channel = %n.channel,
                recipient = %n.recipient.name,
                attempt = job.attempts,
                error = %e.reason,
                retry_at = ?retry_at,
                "notification send failed"
            );
            let outcome = if give_up {
                Outcome::Failed
            } else {
                Outcome::Retried
            };
            finish(
                s,
                &job,
                SendOutcome::Failed {
                    error: e.reason,
                    retry_at,
                },
                outcome,
            )
            .await;
        }
    }
}

async fn finish(s: &Shared, job: &NotificationJob, outcome: SendOutcome, counted: Outcome) {
    let id = job.notification.id;
    // Retry a few times: a lost `Sent` means a second send after the lease.
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match s.store.finish(id, outcome.clone(), Utc::now()).await {
            Ok(()) => break,
            Err(e) if attempt == 5 => {
                tracing::error!(job = %id, error = %e, "cannot record a notification outcome; the job is sent again when its lease ends");
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "cannot record a notification outcome; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    *s.counters
        .lock()
        .entry((job.notification.channel.clone(), counted))
        .or_insert(0) += 1;
}

impl DispatcherHandle {
    /// Replaces the channels (a config reload); sends in flight finish on the old ones.
    pub fn set_channels(&self, channels: ChannelMap) {
        *self.shared.channels.write() = Arc::new(channels);
    }

    /// Replaces the relevance rule (a config reload).
    pub fn set_relevance(&self, relevance: Arc<dyn Relevance>) {
        *self.shared.relevance.write() = relevance;
    }

    /// The names of the channels it sends through, sorted.
    pub fn channel_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.channels.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Asks the store for due jobs now (say, after enqueueing some).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Attempts so far per (channel, outcome), sorted.
    pub fn counters(&self) -> Vec<(String, Outcome, u64)> {
        self.shared
            .counters
            .lock()
            .iter()
            .map(|((c, o), n)| (c.clone(), *o, *n))
            .collect()
    }

    /// The job store it claims from.
    pub fn store(&self) -> Arc<dyn NotificationStore> {
        self.shared.store.clone()
    }
}

/// Whether a job is done (sent, failed or cancelled): no node claims it again.
pub(crate) fn is_finished(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Sent | JobStatus::Failed | JobStatus::Cancelled
    )
}

/// The planner's relevance rule ([`Planner::still_relevant`](super::Planner::still_relevant))
/// over the check's current state in a [`Store`](crate::store::Store).
///
/// A job of a check that no longer exists is cancelled; when the store
/// cannot answer, the job is sent (at least once beats never).
pub struct StoreRelevance {
    store: Arc<dyn crate::store::Store>,
}

impl StoreRelevance {
    /// Over `store`.
    pub fn new(store: Arc<dyn crate::store::Store>) -> Self {
        StoreRelevance { store }
    }
}

#[async_trait]
impl Relevance for StoreRelevance {
    async fn cancel_reason(&self, job: &NotificationJob, _now: DateTime<Utc>) -> Option<String> {
        use super::NotificationKind as K;
        let n = &job.notification;
        // Flapping and downtime notifications belong to the check, not to
        // an alert: they are judged against the nil alert, as the planner does.
        let check_level = matches!(
            n.kind,
            K::FlappingStarted | K::FlappingStopped | K::DowntimeStarted | K::DowntimeEnded
        );
        let alert = match n.alert_id {
            Some(a) => a,
            None if check_level => uuid::Uuid::nil(),
            None => return None,
        };
        match self.store.state(n.check_id).await {
            Ok(state) => {
                let now = super::plan::AlertNow::of(alert, &state);
                super::plan::still_relevant(job, &now).err()
            }
            Err(Error::NotFound { .. }) => Some("the check was removed".into()),
            Err(e) => {
                tracing::warn!(job = %n.id, error = %e, "cannot read the check state for a relevance check; sending");
                None
            }
        }
    }
}
