//! The result processor over the in-memory backends.
#![allow(clippy::unwrap_used)]

use bergamot_core::conformance::{at, group, host, policy, result, service, SITE};
use bergamot_core::model::{CheckId, GroupId, Model, Status};
use bergamot_core::processor::Processor;
use bergamot_core::queue::{
    DeadCheck, DeadReason, ExecuteCheck, InMemoryQueue, Queue, SchedulerControl, Update,
};
use bergamot_core::state::{Ack, Event};
use bergamot_core::store::{InMemoryStore, Store};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;

fn g(name: &str) -> GroupId {
    GroupId::named(SITE, name)
}

/// Host `h` in g1, service `h/s` in g2, both under `root`; immediate thresholds.
fn model() -> Model {
    Model {
        site: SITE.into(),
        checks: vec![
            host("h", &[g("g1")], None, policy(1, 1)),
            service("h", "s", &[g("g2")], policy(1, 1)),
        ],
        groups: vec![
            group("root", &[]),
            group("g1", &[g("root")]),
            group("g2", &[g("root")]),
        ],
        locations: vec![],
    }
}

struct Fixture {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    processor: Processor,
    updates: BoxStream<'static, bergamot_core::Result<Update>>,
}

async fn fixture() -> Fixture {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    store.sync_config(&model()).await.unwrap();
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let updates = queue.subscribe_updates().await.unwrap();
    let processor = Processor::new(Arc::clone(&store), Arc::clone(&queue));
    Fixture {
        store,
        queue,
        processor,
        updates,
    }
}

/// Every update published so far (the in-memory queue publishes synchronously).
fn drain(updates: &mut BoxStream<'static, bergamot_core::Result<Update>>) -> Vec<Update> {
    let mut out = Vec::new();
    while let Some(Some(u)) = updates.next().now_or_never() {
        out.push(u.unwrap());
    }
    out
}

/// The result ids in a check's history, oldest first.
async fn applied_in_order(
    store: &dyn Store,
    check: CheckId,
) -> Vec<bergamot_core::model::ResultId> {
    let mut hist = store
        .history(
            check,
            bergamot_core::store::HistoryPage {
                before_version: None,
                limit: 10_000,
            },
        )
        .await
        .unwrap();
    hist.reverse();
    hist.iter().filter_map(|e| e.result_id).collect()
}

fn groups_in(updates: &[Update]) -> Vec<GroupId> {
    let mut v: Vec<GroupId> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Group(gu) => Some(gu.group_id),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn result_publishes_check_alert_and_changed_groups_only() {
    let mut f = fixture().await;
    let h = CheckId::host(SITE, "h");
    let t = f
        .processor
        .handle_result(&result(h, Status::Critical, 10), at(10))
        .await
        .unwrap();
    assert!(t.is_applied());
    let ups = drain(&mut f.updates);
    assert!(
        matches!(&ups[0], Update::Check(c) if c.check_id == h && c.state.status == Status::Critical && c.events == vec![Event::Alert]),
        "first the check update: {ups:?}"
    );
    let alerts: Vec<_> = ups
        .iter()
        .filter_map(|u| match u {
            Update::Alert(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(alerts.len(), 1, "one alert update");
    assert_eq!(
        (alerts[0].event, alerts[0].alert_id),
        (Event::Alert, t.state.current_alert.unwrap().id)
    );
    let mut want = vec![g("g1"), g("root")];
    want.sort();
    assert_eq!(groups_in(&ups), want, "g1 and root changed; g2 did not");
    let root = ups
        .iter()
        .find_map(|u| match u {
            Update::Group(gu) if gu.group_id == g("root") => Some(gu.aggregate),
            _ => None,
        })
        .unwrap();
    assert_eq!((root.status, root.total), (Status::Critical, 2));

    // Same status again: the check changes (version), the groups do not.
    f.processor
        .handle_result(&result(h, Status::Critical, 20), at(20))
        .await
        .unwrap();
    let ups = drain(&mut f.updates);
    assert_eq!(ups.len(), 1, "only the check update: {ups:?}");
    assert!(matches!(&ups[0], Update::Check(c) if c.state.version == 2));

    // Recovery: alert update with the same alert id, groups change back.
    f.processor
        .handle_result(&result(h, Status::Ok, 30), at(30))
        .await
        .unwrap();
    let ups = drain(&mut f.updates);
    let rec = ups
        .iter()
        .find_map(|u| match u {
            Update::Alert(a) => Some(a),
            _ => None,
        })
        .expect("recovery update");
    assert_eq!(
        (rec.event, rec.alert_id),
        (Event::Recovery, t.state.current_alert.unwrap().id)
    );
    assert_eq!(groups_in(&ups), want);
}

#[tokio::test]
async fn reschedule_only_when_interval_changes() {
    let f = fixture().await;
    let mut control = f.queue.consume_control().await.unwrap();
    let s = CheckId::service(SITE, "h", "s");
    f.processor
        .handle_result(&result(s, Status::Ok, 1), at(1))
        .await
        .unwrap();
    assert!(
        control.next().now_or_never().is_none(),
        "hard ok stays hard ok: same interval"
    );
    f.processor
        .handle_result(&result(s, Status::Warning, 2), at(2))
        .await
        .unwrap();
    let d = control
        .next()
        .now_or_never()
        .flatten()
        .expect("a reschedule")
        .unwrap();
    assert_eq!(
        d.message,
        SchedulerControl::Reschedule {
            check_id: s,
            interval: Duration::from_secs(60)
        },
        "hard not-ok: retry_every"
    );
    d.ack().await.unwrap();
    f.processor
        .handle_result(&result(s, Status::Critical, 3), at(3))
        .await
        .unwrap();
    assert!(
        control.next().now_or_never().is_none(),
        "still hard not-ok: no reschedule"
    );
}

fn execute(check: CheckId) -> ExecuteCheck {
    ExecuteCheck {
        id: uuid::Uuid::new_v4(),
        check_id: check,
        site: SITE.into(),
        pool: "p".into(),
        engine: "nagios".into(),
        params: Default::default(),
        timeout: Duration::from_secs(10),
        ttl: Duration::from_secs(60),
        scheduled_at: at(0),
        execute_now: false,
    }
}

#[tokio::test]
async fn dead_checks_become_timeout_and_error() {
    let f = fixture().await;
    let h = CheckId::host(SITE, "h");
    let s = CheckId::service(SITE, "h", "s");
    let dead = DeadCheck {
        execute: execute(h),
        reason: DeadReason::Expired,
        at: at(5),
    };
    let t = f
        .processor
        .handle_dead_check(&dead, at(5))
        .await
        .unwrap()
        .expect("applied");
    assert_eq!(t.state.status, Status::Timeout);
    assert!(
        t.state.output.contains("no worker took the check in time"),
        "{}",
        t.state.output
    );
    let again = f
        .processor
        .handle_dead_check(&dead, at(6))
        .await
        .unwrap()
        .expect("handled");
    assert!(
        !again.is_applied(),
        "a redelivered dead check is applied once"
    );
    // Unroutable: "no worker yet" (no result, no history, no alert) for the
    // grace after the first one of its pool and engine, then ERROR.
    let dead = DeadCheck {
        execute: execute(s),
        reason: DeadReason::Unroutable,
        at: at(5),
    };
    assert!(f
        .processor
        .handle_dead_check(&dead, at(5))
        .await
        .unwrap()
        .is_none());
    let grace =
        i64::try_from(bergamot_core::processor::DEFAULT_NO_WORKER_GRACE.as_secs()).expect("secs");
    let mut later = dead.clone();
    later.execute.id = uuid::Uuid::new_v4();
    later.at = at(5 + grace - 1);
    assert!(f
        .processor
        .handle_dead_check(&later, at(5 + grace - 1))
        .await
        .unwrap()
        .is_none());
    let page = bergamot_core::store::HistoryPage {
        before_version: None,
        limit: 10,
    };
    assert!(
        f.store.history(s, page).await.unwrap().is_empty(),
        "no history rows while waiting"
    );
    later.execute.id = uuid::Uuid::new_v4();
    later.at = at(5 + grace);
    let t = f
        .processor
        .handle_dead_check(&later, at(5 + grace))
        .await
        .unwrap()
        .expect("applied after the grace");
    assert_eq!(t.state.status, Status::Error);
    assert!(
        t.state.output.contains("no worker pool serves engine"),
        "{}",
        t.state.output
    );
}

#[tokio::test]
async fn actions_publish_through_publish_transition() {
    let mut f = fixture().await;
    let h = CheckId::host(SITE, "h");
    f.processor
        .handle_result(&result(h, Status::Critical, 10), at(10))
        .await
        .unwrap();
    drain(&mut f.updates);
    let t = f
        .store
        .acknowledge(h, Ack::Normal, "op", "seen", at(11))
        .await
        .unwrap();
    f.processor.publish_transition(h, &t).await.unwrap();
    let ups = drain(&mut f.updates);
    assert!(matches!(&ups[0], Update::Check(c) if c.state.acknowledged == Ack::Normal));
    let mut want = vec![g("g1"), g("root")];
    want.sort();
    assert_eq!(
        groups_in(&ups),
        want,
        "the ack recomputes and publishes the groups at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_check_result_does_not_stop_the_loop() {
    let f = fixture().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let processor = f.processor;
    let run = tokio::spawn(processor.run(async move {
        stopped.await.ok();
    }));
    let h = CheckId::host(SITE, "h");
    f.queue
        .publish_result(result(CheckId::host(SITE, "ghost"), Status::Critical, 1))
        .await
        .unwrap();
    f.queue
        .publish_result(result(h, Status::Critical, 2))
        .await
        .unwrap();
    bergamot_testkit::wait_until(
        "the valid result after an unknown check's one to be applied",
        Duration::from_secs(5),
        || async { f.store.state(h).await.unwrap().status == Status::Critical },
    )
    .await;
    stop.send(()).unwrap();
    run.await.unwrap().expect("run returns Ok on shutdown");
    // Both were acked: a new consumer gets nothing.
    let mut results = f.queue.consume_results().await.unwrap();
    assert!(
        results.next().now_or_never().is_none(),
        "the unknown check's result was acked, not requeued"
    );
}

/// A real in-memory store whose `apply_result` fails the first `failures` times.
struct FailingFirst {
    inner: InMemoryStore,
    failures: std::sync::atomic::AtomicUsize,
    /// Calls of `group_states_of` and `location_states_of`.
    aggregate_queries: std::sync::atomic::AtomicUsize,
    /// Calls of `alerts`.
    alert_reads: std::sync::atomic::AtomicUsize,
}

impl FailingFirst {
    /// Fails while injected failures are left.
    fn fail(&self) -> bergamot_core::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(bergamot_core::Error::backend(
                "injected",
                std::io::Error::other("database went away"),
            ));
        }
        Ok(())
    }
}

mod failing {
    use super::FailingFirst;
    use bergamot_core::aggregate::{GroupState, LocationState};
    use bergamot_core::model::{CheckId, CheckResult, GroupId, LocationId, Model};
    use bergamot_core::state::{Ack, CheckState, Transition};
    use bergamot_core::store::{
        AlertRecord, Downtime, HistoryEntry, HistoryPage, Store, SyncReport,
    };
    use bergamot_core::Result;
    use chrono::{DateTime, Utc};
    use std::sync::atomic::Ordering;
    use uuid::Uuid;

    #[async_trait::async_trait]
    impl Store for FailingFirst {
        async fn sync_config(&self, m: &Model) -> Result<SyncReport> {
            self.inner.sync_config(m).await
        }
        async fn model(&self) -> Result<Model> {
            self.inner.model().await
        }
        async fn apply_result(&self, r: &CheckResult, now: DateTime<Utc>) -> Result<Transition> {
            self.fail()?;
            self.inner.apply_result(r, now).await
        }
        async fn apply_results(
            &self,
            r: &[CheckResult],
            now: DateTime<Utc>,
        ) -> Result<Vec<Result<Transition>>> {
            self.fail()?;
            self.inner.apply_results(r, now).await
        }
        async fn state(&self, c: CheckId) -> Result<CheckState> {
            self.inner.state(c).await
        }
        async fn states(&self) -> Result<Vec<(CheckId, CheckState)>> {
            self.inner.states().await
        }
        async fn group_states(&self, r: Option<GroupId>) -> Result<Vec<GroupState>> {
            self.inner.group_states(r).await
        }
        async fn group_states_of(&self, g: &[GroupId]) -> Result<Vec<GroupState>> {
            self.aggregate_queries.fetch_add(1, Ordering::SeqCst);
            self.inner.group_states_of(g).await
        }
        async fn location_states_of(&self, l: &[LocationId]) -> Result<Vec<LocationState>> {
            self.aggregate_queries.fetch_add(1, Ordering::SeqCst);
            self.inner.location_states_of(l).await
        }
        async fn location_states(&self, r: Option<LocationId>) -> Result<Vec<LocationState>> {
            self.inner.location_states(r).await
        }
        async fn ancestor_groups(&self, c: CheckId) -> Result<Vec<GroupId>> {
            self.inner.ancestor_groups(c).await
        }
        async fn ancestor_locations(&self, c: CheckId) -> Result<Vec<LocationId>> {
            self.inner.ancestor_locations(c).await
        }
        async fn acknowledge(
            &self,
            c: CheckId,
            k: Ack,
            a: &str,
            m: &str,
            now: DateTime<Utc>,
        ) -> Result<Transition> {
            self.inner.acknowledge(c, k, a, m, now).await
        }
        async fn remove_acknowledgement(
            &self,
            c: CheckId,
            now: DateTime<Utc>,
        ) -> Result<Transition> {
            self.inner.remove_acknowledgement(c, now).await
        }
        async fn set_suppressed(
            &self,
            c: CheckId,
            s: bool,
            now: DateTime<Utc>,
        ) -> Result<Transition> {
            self.inner.set_suppressed(c, s, now).await
        }
        async fn reset_clock(&self, c: CheckId, now: DateTime<Utc>) -> Result<Transition> {
            self.inner.reset_clock(c, now).await
        }
        async fn schedule_downtime(
            &self,
            d: Downtime,
            now: DateTime<Utc>,
        ) -> Result<Option<Transition>> {
            self.inner.schedule_downtime(d, now).await
        }
        async fn cancel_downtime(
            &self,
            id: Uuid,
            now: DateTime<Utc>,
        ) -> Result<Option<(CheckId, Transition)>> {
            self.inner.cancel_downtime(id, now).await
        }
        async fn downtimes(&self, c: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>> {
            self.inner.downtimes(c, now).await
        }
        async fn apply_due_downtimes(
            &self,
            now: DateTime<Utc>,
        ) -> Result<Vec<(CheckId, Transition)>> {
            self.inner.apply_due_downtimes(now).await
        }
        async fn history(&self, c: CheckId, p: HistoryPage) -> Result<Vec<HistoryEntry>> {
            self.inner.history(c, p).await
        }
        async fn alerts(&self, c: Option<CheckId>, l: usize) -> Result<Vec<AlertRecord>> {
            self.alert_reads.fetch_add(1, Ordering::SeqCst);
            self.inner.alerts(c, l).await
        }
    }
}

#[tokio::test(start_paused = true)]
async fn store_errors_are_retried_with_backoff_until_applied() {
    let store = Arc::new(FailingFirst {
        inner: InMemoryStore::new(),
        failures: 3.into(),
        aggregate_queries: Default::default(),
        alert_reads: Default::default(),
    });
    store.sync_config(&model()).await.unwrap();
    let store: Arc<dyn Store> = store;
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let processor = Processor::new(Arc::clone(&store), Arc::clone(&queue));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        stopped.await.ok();
    }));
    let h = CheckId::host(SITE, "h");
    queue
        .publish_result(result(h, Status::Critical, 1))
        .await
        .unwrap();
    // Backoff 100 + 200 + 400 ms on the paused clock, then applied.
    bergamot_testkit::wait_until(
        "the result to be retried after each failure and applied once the store recovered",
        Duration::from_secs(10),
        || async { store.state(h).await.unwrap().version == 1 },
    )
    .await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    let hist = store
        .history(
            h,
            bergamot_core::store::HistoryPage {
                before_version: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(hist.len(), 1, "applied exactly once");
}

/// A queue whose result redeliveries come back at the end of the queue,
/// behind the results published after them, as RabbitMQ's do for a
/// consumer that already holds later ones in its prefetch buffer.
struct RequeueAtBack {
    inner: Arc<InMemoryQueue>,
}

struct BackOfLine {
    inner: Box<dyn bergamot_core::backend::Acker>,
    queue: Arc<InMemoryQueue>,
    message: bergamot_core::model::CheckResult,
}

#[async_trait::async_trait]
impl bergamot_core::backend::Acker for BackOfLine {
    async fn ack(self: Box<Self>) -> bergamot_core::Result<()> {
        self.inner.ack().await
    }
    async fn nack(self: Box<Self>, requeue: bool) -> bergamot_core::Result<()> {
        if requeue {
            self.queue.publish_result(self.message).await?;
        }
        self.inner.ack().await
    }
}

#[async_trait::async_trait]
impl Queue for RequeueAtBack {
    async fn publish_execute(&self, e: ExecuteCheck) -> bergamot_core::Result<()> {
        self.inner.publish_execute(e).await
    }
    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> bergamot_core::Result<bergamot_core::queue::DeliveryStream<ExecuteCheck>> {
        self.inner.consume_executes(pool, engines).await
    }
    async fn consume_dead_checks(
        &self,
    ) -> bergamot_core::Result<bergamot_core::queue::DeliveryStream<DeadCheck>> {
        self.inner.consume_dead_checks().await
    }
    async fn publish_result(
        &self,
        r: bergamot_core::model::CheckResult,
    ) -> bergamot_core::Result<()> {
        self.inner.publish_result(r).await
    }
    async fn consume_results(
        &self,
    ) -> bergamot_core::Result<
        bergamot_core::queue::DeliveryStream<bergamot_core::model::CheckResult>,
    > {
        let queue = Arc::clone(&self.inner);
        Ok(self
            .inner
            .consume_results()
            .await?
            .map(move |d| {
                d.map(|d| {
                    let redelivered = d.redelivered;
                    let (message, inner) = d.into_parts();
                    let acker = BackOfLine {
                        inner,
                        queue: Arc::clone(&queue),
                        message: message.clone(),
                    };
                    bergamot_core::queue::Delivery::new(message, redelivered, Box::new(acker))
                })
            })
            .boxed())
    }
    async fn publish_update(&self, u: Update) -> bergamot_core::Result<()> {
        self.inner.publish_update(u).await
    }
    async fn subscribe_updates(
        &self,
    ) -> bergamot_core::Result<BoxStream<'static, bergamot_core::Result<Update>>> {
        self.inner.subscribe_updates().await
    }
    async fn publish_control(&self, c: SchedulerControl) -> bergamot_core::Result<()> {
        self.inner.publish_control(c).await
    }
    async fn consume_control(
        &self,
    ) -> bergamot_core::Result<bergamot_core::queue::DeliveryStream<SchedulerControl>> {
        self.inner.consume_control().await
    }
}

/// Store errors are retried in place: results of one check published
/// behind the failing one are not applied before it (which would make it
/// stale and drop it), so every result is applied, in order, even on a
/// queue that redelivers at the back.
#[tokio::test(start_paused = true)]
async fn store_errors_keep_a_checks_results_in_order() {
    let store = Arc::new(FailingFirst {
        inner: InMemoryStore::new(),
        failures: 3.into(),
        aggregate_queries: Default::default(),
        alert_reads: Default::default(),
    });
    store.sync_config(&model()).await.unwrap();
    let store: Arc<dyn Store> = store;
    let queue: Arc<dyn Queue> = Arc::new(RequeueAtBack {
        inner: Arc::new(InMemoryQueue::new()),
    });
    let h = CheckId::host(SITE, "h");
    let sent: Vec<_> = (1..=5)
        .map(|i| {
            let status = if i % 2 == 0 {
                Status::Ok
            } else {
                Status::Critical
            };
            result(h, status, i)
        })
        .collect();
    for r in &sent {
        queue.publish_result(r.clone()).await.unwrap();
    }
    let processor = Processor::new(Arc::clone(&store), Arc::clone(&queue));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        stopped.await.ok();
    }));
    let mut done = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.state(h).await.unwrap().version == 5 {
            done = true;
            break;
        }
    }
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    let applied = applied_in_order(store.as_ref(), h).await;
    let want: Vec<_> = sent.iter().map(|r| r.id).collect();
    assert!(done, "not every result was applied: {applied:?}");
    assert_eq!(applied, want, "every result applied once, in order");
}

/// A result that leaves the check's contribution to aggregates unchanged
/// (same effective status, same ignore flags) queries no aggregate and
/// publishes no group update; one that changes it does both.
#[tokio::test]
async fn unchanged_contribution_publishes_no_group_update() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(FailingFirst {
        inner: InMemoryStore::new(),
        failures: Default::default(),
        aggregate_queries: Default::default(),
        alert_reads: Default::default(),
    });
    store.sync_config(&model()).await.unwrap();
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let mut updates = queue.subscribe_updates().await.unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let processor = Processor::new(dyn_store, Arc::clone(&queue));
    let s = CheckId::service(SITE, "h", "s");

    // PENDING -> OK: the contribution changes, g2 and root are recomputed.
    processor
        .handle_result(&result(s, Status::Ok, 10), at(10))
        .await
        .unwrap();
    let mut want = vec![g("g2"), g("root")];
    want.sort();
    assert_eq!(groups_in(&drain(&mut updates)), want);
    let queries = store.aggregate_queries.load(Ordering::SeqCst);
    assert!(queries > 0, "the first result recomputed aggregates");

    // OK again: applied (new version), but no aggregate query and no group update.
    let t = processor
        .handle_result(&result(s, Status::Ok, 20), at(20))
        .await
        .unwrap();
    assert!(t.is_applied());
    let ups = drain(&mut updates);
    assert_eq!(ups.len(), 1, "only the check update: {ups:?}");
    assert!(matches!(&ups[0], Update::Check(c) if c.check_id == s && c.state.version == 2));
    assert_eq!(store.aggregate_queries.load(Ordering::SeqCst), queries);

    // OK -> CRITICAL: recomputed and published again.
    processor
        .handle_result(&result(s, Status::Critical, 30), at(30))
        .await
        .unwrap();
    assert_eq!(groups_in(&drain(&mut updates)), want);
    assert!(store.aggregate_queries.load(Ordering::SeqCst) > queries);

    // CRITICAL again: nothing to recompute; publish_transition follows the
    // transition's own word on whether the contribution changed.
    let before = store.aggregate_queries.load(Ordering::SeqCst);
    let mut t = processor
        .handle_result(&result(s, Status::Critical, 40), at(40))
        .await
        .unwrap();
    drain(&mut updates);
    assert!(!t.contribution_changed);
    assert_eq!(store.aggregate_queries.load(Ordering::SeqCst), before);
    processor.publish_transition(s, &t).await.unwrap();
    assert_eq!(store.aggregate_queries.load(Ordering::SeqCst), before);
    t.contribution_changed = true;
    processor.publish_transition(s, &t).await.unwrap();
    assert!(store.aggregate_queries.load(Ordering::SeqCst) > before);
}

/// `run` applies what has piled up in batches: every result once and in
/// order per check, the group aggregates recomputed far fewer times than
/// there are results, and the last published aggregate the true one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_applies_a_backlog_in_batches_with_coalesced_aggregates() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(FailingFirst {
        inner: InMemoryStore::new(),
        failures: Default::default(),
        aggregate_queries: Default::default(),
        alert_reads: Default::default(),
    });
    store.sync_config(&model()).await.unwrap();
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::with_update_capacity(10_000));
    let mut updates = queue.subscribe_updates().await.unwrap();
    let h = CheckId::host(SITE, "h");
    let s = CheckId::service(SITE, "h", "s");
    let unknown = CheckId::host(SITE, "nobody");
    // 400 results, statuses flipping every time (each one changes the
    // aggregates), one result of an unknown check in the middle.
    let mut sent = Vec::new();
    for i in 1..=200 {
        let status = if i % 2 == 0 {
            Status::Ok
        } else {
            Status::Critical
        };
        sent.push(result(h, status, i));
        sent.push(result(s, status, i));
        if i == 100 {
            sent.push(result(unknown, Status::Ok, i));
        }
    }
    for r in &sent {
        queue.publish_result(r.clone()).await.unwrap();
    }
    let dyn_store: Arc<dyn Store> = store.clone();
    let processor = Processor::new(dyn_store, Arc::clone(&queue)).with_lanes(2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        stopped.await.ok();
    }));
    bergamot_testkit::wait_until(
        "the backlog to be applied",
        Duration::from_secs(5),
        || async {
            store.state(h).await.unwrap().version == 200
                && store.state(s).await.unwrap().version == 200
        },
    )
    .await;
    // Let the aggregate task publish the last change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    for check in [h, s] {
        let applied = applied_in_order(store.as_ref(), check).await;
        let want: Vec<_> = sent
            .iter()
            .filter(|r| r.check_id == check)
            .map(|r| r.id)
            .collect();
        assert_eq!(applied, want, "every result of {check} once, in order");
    }
    let queries = store.aggregate_queries.load(Ordering::SeqCst);
    assert!(
        queries < 100,
        "{queries} aggregate queries for 400 aggregate changes: not coalesced"
    );
    // (Not `drain`: tokio's cooperative budget makes a long run of
    // `now_or_never` polls come back empty.)
    let mut ups = Vec::new();
    while let Ok(Some(u)) = tokio::time::timeout(Duration::from_millis(200), updates.next()).await {
        ups.push(u.unwrap());
    }
    let checks = ups.iter().filter(|u| matches!(u, Update::Check(_))).count();
    assert_eq!(checks, 400, "one check update per applied result");
    let last_root = ups
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Group(gu) if gu.group_id == g("root") => Some(gu.aggregate),
            _ => None,
        })
        .expect("a root update");
    let truth = store.group_states(Some(g("root"))).await.unwrap();
    let root = truth.iter().find(|gs| gs.id == g("root")).unwrap();
    assert_eq!(
        last_root, root.aggregate,
        "the last published root aggregate is current"
    );
}

/// Results from the queue: one dated far ahead of this node's clock is
/// poisoned with the reason (applied, it would make every later result of
/// its check stale); output beyond the caps is cut before it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_results_are_poisoned_and_outputs_capped() {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    store.sync_config(&model()).await.unwrap();
    let queue = InMemoryQueue::new();
    let limits = bergamot_core::model::ResultLimits {
        max_output: 1000,
        max_long_output: 500,
        max_skew: Duration::from_secs(60),
    };
    let processor = Processor::new(store.clone(), Arc::new(queue.clone())).with_limits(limits);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        stopped.await.ok();
    }));
    let h = CheckId::host(SITE, "h");
    let now = chrono::Utc::now();
    let mut future = bergamot_core::model::CheckResult::new(h, Status::Critical, "2999", now);
    future.executed_at = now + chrono::Duration::days(365 * 900);
    queue.publish_result(future.clone()).await.unwrap();
    let mut big = bergamot_core::model::CheckResult::new(h, Status::Warning, "w".repeat(5000), now);
    big.long_output = "l".repeat(5000).into();
    queue.publish_result(big).await.unwrap();
    let mut state = None;
    for _ in 0..500 {
        let s = store.state(h).await.unwrap();
        if s.status == Status::Warning {
            state = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    run.await.unwrap().expect("run returns Ok on shutdown");
    let state = state.expect("the result after the future one was applied");
    assert!(state.output.len() <= 1000 && state.output.ends_with(" bytes]"));
    assert!(state.long_output.len() <= 500 && state.long_output.ends_with(" bytes]"));
    let poisoned = queue.poisoned_results();
    assert_eq!(poisoned.len(), 1, "{poisoned:?}");
    assert_eq!(poisoned[0].0.id, future.id);
    assert!(
        poisoned[0].1.contains("ahead of this node's clock"),
        "{}",
        poisoned[0].1
    );
}

/// A recovery's alert update names the alert the transition closed
/// (`Transition::closed_alert`): publishing reads no alert records back
/// (before, one store query per event of a check without an open alert).
#[tokio::test]
async fn a_recovery_names_its_alert_without_a_store_query() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(FailingFirst {
        inner: InMemoryStore::new(),
        failures: 0.into(),
        aggregate_queries: Default::default(),
        alert_reads: Default::default(),
    });
    store.sync_config(&model()).await.unwrap();
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let mut updates = queue.subscribe_updates().await.unwrap();
    let processor = Processor::new(store.clone(), Arc::clone(&queue));
    let h = CheckId::host(SITE, "h");
    let t = processor
        .handle_result(&result(h, Status::Critical, 10), at(10))
        .await
        .unwrap();
    let open = t.state.current_alert.expect("alert opened").id;
    let t = processor
        .handle_result(&result(h, Status::Ok, 20), at(20))
        .await
        .unwrap();
    assert_eq!(t.closed_alert, Some(open));
    let ups = drain(&mut updates);
    let rec = ups
        .iter()
        .find_map(|u| match u {
            Update::Alert(a) if a.event == Event::Recovery => Some(a),
            _ => None,
        })
        .expect("recovery update");
    assert_eq!(rec.alert_id, open);
    assert_eq!(
        store.alert_reads.load(Ordering::SeqCst),
        0,
        "alert records read to publish"
    );
}
