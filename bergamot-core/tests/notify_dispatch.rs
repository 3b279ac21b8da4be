//! The [`Dispatcher`]'s timeout and retry paths, against the in-memory job
//! store and channels that hang, fail for a while or fail for good. Delays
//! are milliseconds; the assertions are on outcomes (status, attempts,
//! errors, counters), each awaited with a generous deadline.

use async_trait::async_trait;
use bergamot_core::conformance::notify::job;
use bergamot_core::model::CheckId;
use bergamot_core::notify::{
    Backoff, ChannelMap, Dispatcher, DispatcherConfig, DispatcherHandle, InMemoryNotificationStore,
    JobFilter, JobStatus, Notification, NotificationJob, NotificationStore, Notifier, Outcome,
    SendError,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Fails transiently `fail_first` times, then accepts; counts the calls.
#[derive(Default)]
struct Flaky {
    fail_first: u32,
    calls: AtomicU32,
}

#[async_trait]
impl Notifier for Flaky {
    async fn send(&self, _n: &Notification) -> Result<(), SendError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.fail_first {
            Err(SendError::transient(format!("HTTP 500 (call {call})")))
        } else {
            Ok(())
        }
    }
}

impl Flaky {
    fn failing(fail_first: u32) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail_first,
            ..Flaky::default()
        })
    }
}

/// Never answers.
struct Hangs;

#[async_trait]
impl Notifier for Hangs {
    async fn send(&self, _n: &Notification) -> Result<(), SendError> {
        std::future::pending().await
    }
}

/// Refuses for good.
struct Refuses;

#[async_trait]
impl Notifier for Refuses {
    async fn send(&self, _n: &Notification) -> Result<(), SendError> {
        Err(SendError::permanent("550 no such user"))
    }
}

fn config(max_attempts: u32) -> DispatcherConfig {
    DispatcherConfig {
        node: "n1".into(),
        poll_every: Duration::from_millis(20),
        concurrency: 2,
        send_timeout: Duration::from_millis(200),
        lease: Duration::from_secs(30),
        backoff: Backoff {
            initial: Duration::from_millis(30),
            max: Duration::from_millis(60),
            max_attempts,
        },
    }
}

/// A due job through `channel`.
fn job_via(channel: &str) -> NotificationJob {
    let mut j = job(
        Uuid::new_v4(),
        CheckId::service("d", "web1", "http"),
        "ann",
        0,
        0,
    );
    j.notification.channel = channel.into();
    j
}

/// The channels by name.
fn channels(named: &[(&str, Arc<dyn Notifier>)]) -> ChannelMap {
    let mut map = ChannelMap::new();
    for (name, notifier) in named {
        map.insert((*name).into(), notifier.clone());
    }
    map
}

struct Running {
    store: Arc<InMemoryNotificationStore>,
    handle: DispatcherHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<bergamot_core::Result<()>>,
}

/// A dispatcher over `channels` with a due job through each of `via`;
/// the jobs' ids, in that order.
async fn start(channels: ChannelMap, cfg: DispatcherConfig, via: &[&str]) -> (Running, Vec<Uuid>) {
    let jobs: Vec<NotificationJob> = via.iter().map(|c| job_via(c)).collect();
    let ids = jobs.iter().map(|j| j.notification.id).collect();
    let store = Arc::new(InMemoryNotificationStore::new());
    store.enqueue(&jobs).await.expect("enqueue");
    let d = Dispatcher::new(store.clone(), channels, cfg).expect("a valid config");
    let handle = d.handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(d.run(async move {
        rx.await.ok();
    }));
    let running = Running {
        store,
        handle,
        stop: Some(tx),
        task,
    };
    (running, ids)
}

impl Running {
    async fn job(&self, id: Uuid) -> NotificationJob {
        self.store
            .notifications(&JobFilter {
                limit: 1000,
                ..JobFilter::default()
            })
            .await
            .expect("list")
            .into_iter()
            .find(|j| j.notification.id == id)
            .expect("the job is listed")
    }

    /// Waits (at most 10 s) until the job is in `status`.
    async fn until(&self, id: Uuid, status: JobStatus) -> NotificationJob {
        bergamot_testkit::wait_for(
            &format!("job {id} to become {status:?}"),
            Duration::from_secs(10),
            || async {
                let j = self.job(id).await;
                (j.status == status).then_some(j)
            },
        )
        .await
    }

    fn count(&self, channel: &str, outcome: Outcome) -> u64 {
        self.handle
            .counters()
            .iter()
            .find(|(c, o, _)| c == channel && *o == outcome)
            .map_or(0, |(_, _, n)| *n)
    }

    /// The channel's (retried, sent, failed) counters.
    fn counts(&self, channel: &str) -> (u64, u64, u64) {
        (
            self.count(channel, Outcome::Retried),
            self.count(channel, Outcome::Sent),
            self.count(channel, Outcome::Failed),
        )
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the dispatcher stops")
            .expect("joins")
            .expect("ends cleanly");
    }
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = Backoff::default();
    let secs: Vec<u64> = (1..=8).map(|a| b.delay(a).as_secs()).collect();
    assert_eq!(secs, [30, 60, 120, 240, 480, 900, 900, 900]);
    assert_eq!(b.delay(0), b.initial, "attempt 0 counts as the first");
    assert_eq!(b.delay(u32::MAX), b.max, "no overflow");
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_backoff_until_sent() {
    let flaky = Flaky::failing(2);
    let (r, ids) = start(channels(&[("hook", flaky.clone())]), config(5), &["hook"]).await;
    let id = ids[0];
    let done = r.until(id, JobStatus::Sent).await;
    assert_eq!(done.attempts, 3, "two failures, then sent");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    assert_eq!(r.counts("hook"), (2, 1, 0), "(retried, sent, failed)");
    r.stop().await;
}

#[tokio::test]
async fn attempts_used_up_mark_the_job_failed_with_the_last_error() {
    let flaky = Flaky::failing(u32::MAX);
    let (r, ids) = start(channels(&[("hook", flaky.clone())]), config(3), &["hook"]).await;
    let id = ids[0];
    let failed = r.until(id, JobStatus::Failed).await;
    assert_eq!(failed.attempts, 3);
    assert_eq!(failed.last_error.as_deref(), Some("HTTP 500 (call 3)"));
    assert!(failed.finished_at.is_some());
    assert_eq!(r.counts("hook"), (2, 0, 1), "(retried, sent, failed)");
    // Failed is final: it is not tried again (a deliberate quiet spell of
    // ten polls, as nothing may happen to wait for).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    r.stop().await;
}

#[tokio::test]
async fn a_permanent_error_or_an_unknown_channel_fails_at_once() {
    let (r, ids) = start(
        channels(&[("mail", Arc::new(Refuses))]),
        config(5),
        &["mail", "pager"],
    )
    .await;
    let (a, b) = (ids[0], ids[1]);
    // Each failed after one attempt, with its error.
    for (id, error) in [(a, "550 no such user"), (b, "unknown channel \"pager\"")] {
        let j = r.until(id, JobStatus::Failed).await;
        assert_eq!((j.attempts, j.last_error.as_deref()), (1, Some(error)));
    }
    assert_eq!(r.counts("mail"), (0, 0, 1), "(retried, sent, failed)");
    assert_eq!(r.counts("pager"), (0, 0, 1), "(retried, sent, failed)");
    r.stop().await;
}

/// A channel that never answers times out (a transient failure, retried)
/// and holds one slot only: a job through another channel is sent meanwhile.
#[tokio::test]
async fn a_hanging_channel_times_out_and_does_not_block_the_others() {
    let log = Flaky::failing(0);
    let channels = channels(&[("slow", Arc::new(Hangs)), ("log", log.clone())]);
    let (r, ids) = start(channels, config(2), &["slow", "log"]).await;
    let (h, q) = (ids[0], ids[1]);
    r.until(q, JobStatus::Sent).await;
    let failed = r.until(h, JobStatus::Failed).await;
    assert_eq!(failed.attempts, 2, "timed out twice, then given up");
    assert_eq!(failed.last_error.as_deref(), Some("timed out after 200ms"));
    assert_eq!(r.counts("slow"), (1, 0, 1), "(retried, sent, failed)");
    assert_eq!(r.counts("log"), (0, 1, 0), "(retried, sent, failed)");
    // Stopping waits at most the send timeout for sends in flight.
    r.stop().await;
}

#[test]
fn an_inconsistent_config_is_refused() {
    let store: Arc<dyn NotificationStore> = Arc::new(InMemoryNotificationStore::new());
    let mut zero = config(3);
    zero.concurrency = 0;
    let mut short_lease = config(3);
    short_lease.lease = short_lease.send_timeout;
    let mut no_attempts = config(0);
    no_attempts.backoff.max_attempts = 0;
    for (cfg, says) in [
        (zero, "concurrency"),
        (short_lease, "lease"),
        (no_attempts, "max_attempts"),
    ] {
        let e = Dispatcher::new(store.clone(), ChannelMap::new(), cfg)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(says), "{e:?} names {says}");
    }
}
