//! The result processor over the in-memory backends.
#![allow(clippy::unwrap_used)]

use bergamot_core::conformance::{
    at, group, history, host, policy, result, service, HookedStore, StoreHook, SITE,
};
use bergamot_core::model::{CheckId, GroupId, Model, Status};
use bergamot_core::processor::Processor;
use bergamot_core::queue::{
    DeadCheck, DeadReason, ExecuteCheck, InMemoryQueue, Queue, SchedulerControl, Update,
};
use bergamot_core::state::{Ack, Event, Transition};
use bergamot_core::store::{InMemoryStore, Store};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    let mut hist = history(store, check, None, 10_000).await;
    hist.reverse();
    hist.iter().filter_map(|e| e.result_id).collect()
}

/// Handles a result of `check` with `status` executed at [`at`]`(secs)`,
/// at that time.
async fn handle(processor: &Processor, check: CheckId, status: Status, secs: i64) -> Transition {
    processor
        .handle_result(&result(check, status, secs), at(secs))
        .await
        .unwrap()
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

/// Waits (at most `within`) until `check`'s state has `version`: that many
/// results applied.
async fn until_version(store: &dyn Store, check: CheckId, version: u64, within: Duration) {
    bergamot_testkit::wait_until(
        &format!("{version} results of {check} to be applied"),
        within,
        || async { store.state(check).await.unwrap().version == version },
    )
    .await;
}

/// The aggregate of a group update of `root`.
fn root_aggregate(u: &Update) -> Option<bergamot_core::aggregate::Aggregate> {
    match u {
        Update::Group(gu) if gu.group_id == g("root") => Some(gu.aggregate),
        _ => None,
    }
}

#[tokio::test]
async fn result_publishes_check_alert_and_changed_groups_only() {
    let mut f = fixture().await;
    let h = CheckId::host(SITE, "h");
    let t = handle(&f.processor, h, Status::Critical, 10).await;
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
    let root = ups.iter().find_map(root_aggregate).unwrap();
    assert_eq!((root.status, root.total), (Status::Critical, 2));

    // Same status again: the check changes (version), the groups do not.
    handle(&f.processor, h, Status::Critical, 20).await;
    let ups = drain(&mut f.updates);
    assert_eq!(ups.len(), 1, "only the check update: {ups:?}");
    assert!(matches!(&ups[0], Update::Check(c) if c.state.version == 2));

    // Recovery: alert update with the same alert id, groups change back.
    handle(&f.processor, h, Status::Ok, 30).await;
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
    handle(&f.processor, s, Status::Ok, 1).await;
    assert!(
        control.next().now_or_never().is_none(),
        "hard ok stays hard ok: same interval"
    );
    handle(&f.processor, s, Status::Warning, 2).await;
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
    handle(&f.processor, s, Status::Critical, 3).await;
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

/// Handles `dead` at [`at`]`(secs)`: the transition, or `None` while the
/// check waits for a worker.
async fn handle_dead(processor: &Processor, dead: &DeadCheck, secs: i64) -> Option<Transition> {
    processor.handle_dead_check(dead, at(secs)).await.unwrap()
}

fn assert_output(t: &Transition, part: &str) {
    assert!(t.state.output.contains(part), "{}", t.state.output);
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
    let t = handle_dead(&f.processor, &dead, 5).await.expect("applied");
    assert_eq!(t.state.status, Status::Timeout);
    assert_output(&t, "no worker took the check in time");
    let again = handle_dead(&f.processor, &dead, 6).await.expect("handled");
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
    assert!(handle_dead(&f.processor, &dead, 5).await.is_none());
    let grace =
        i64::try_from(bergamot_core::processor::DEFAULT_NO_WORKER_GRACE.as_secs()).expect("secs");
    let mut later = dead.clone();
    later.execute.id = uuid::Uuid::new_v4();
    later.at = at(5 + grace - 1);
    assert!(handle_dead(&f.processor, &later, 5 + grace - 1)
        .await
        .is_none());
    assert!(
        history(f.store.as_ref(), s, None, 10).await.is_empty(),
        "no history rows while waiting"
    );
    later.execute.id = uuid::Uuid::new_v4();
    later.at = at(5 + grace);
    let t = handle_dead(&f.processor, &later, 5 + grace)
        .await
        .expect("applied after the grace");
    assert_eq!(t.state.status, Status::Error);
    assert_output(&t, "no worker pool serves engine");
}

#[tokio::test]
async fn actions_publish_through_publish_transition() {
    let mut f = fixture().await;
    let h = CheckId::host(SITE, "h");
    handle(&f.processor, h, Status::Critical, 10).await;
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
    let running = Running::start(f.processor);
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
    running.stop().await;
    // Both were acked: a new consumer gets nothing.
    let mut results = f.queue.consume_results().await.unwrap();
    assert!(
        results.next().now_or_never().is_none(),
        "the unknown check's result was acked, not requeued"
    );
}

/// What a [`FailingFirst`] store fails and counts.
#[derive(Default)]
struct Faults {
    /// Calls of `apply_result` and `apply_results` left to fail.
    failures: AtomicUsize,
    /// Calls of `group_states_of` and `location_states_of`.
    aggregate_queries: AtomicUsize,
    /// Calls of `alerts` and `active_alerts`.
    alert_reads: AtomicUsize,
}

impl StoreHook<InMemoryStore> for Faults {
    fn before(&self, method: &'static str) -> bergamot_core::Result<()> {
        match method {
            "apply_result" | "apply_results" => {
                let left = self.failures.load(Ordering::SeqCst);
                if left > 0 {
                    self.failures.store(left - 1, Ordering::SeqCst);
                    return Err(bergamot_core::Error::backend(
                        "injected",
                        std::io::Error::other("database went away"),
                    ));
                }
            }
            "group_states_of" | "location_states_of" => {
                self.aggregate_queries.fetch_add(1, Ordering::SeqCst);
            }
            "alerts" | "active_alerts" => {
                self.alert_reads.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A real in-memory store whose `apply_result` fails the first `failures`
/// times, counting the calls that [`Faults`] counts.
type FailingFirst = HookedStore<InMemoryStore, Faults>;

/// A [`FailingFirst`] store with [`model`] synced, to fail `failures` times.
async fn failing_first(failures: usize) -> Arc<FailingFirst> {
    let faults = Faults {
        failures: failures.into(),
        ..Faults::default()
    };
    let store = Arc::new(HookedStore::new(InMemoryStore::new(), faults));
    store.sync_config(&model()).await.unwrap();
    store
}

/// A processor's `run` on its own task until [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<bergamot_core::Result<()>>,
}

impl Running {
    fn start(processor: Processor) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(processor.run(async move {
            stopped.await.ok();
        }));
        Running { stop, task }
    }

    /// Stops the loop; asserts that it returns Ok on shutdown.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task
            .await
            .unwrap()
            .expect("run returns Ok on shutdown");
    }
}

#[tokio::test(start_paused = true)]
async fn store_errors_are_retried_with_backoff_until_applied() {
    let store = failing_first(3).await;
    let store: Arc<dyn Store> = store;
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let processor = Processor::new(Arc::clone(&store), Arc::clone(&queue));
    let running = Running::start(processor);
    let h = CheckId::host(SITE, "h");
    queue
        .publish_result(result(h, Status::Critical, 1))
        .await
        .unwrap();
    // Backoff 100 + 200 + 400 ms on the paused clock, then applied.
    // (retried after each failure and applied once the store recovered)
    until_version(store.as_ref(), h, 1, Duration::from_secs(10)).await;
    running.stop().await;
    let hist = history(store.as_ref(), h, None, 10).await;
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
    let store = failing_first(3).await;
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
    let running = Running::start(processor);
    until_version(store.as_ref(), h, 5, Duration::from_secs(20)).await;
    running.stop().await;
    let applied = applied_in_order(store.as_ref(), h).await;
    let want: Vec<_> = sent.iter().map(|r| r.id).collect();
    assert_eq!(applied, want, "every result applied once, in order");
}

/// A result that leaves the check's contribution to aggregates unchanged
/// (same effective status, same ignore flags) queries no aggregate and
/// publishes no group update; one that changes it does both.
#[tokio::test]
async fn unchanged_contribution_publishes_no_group_update() {
    let store = failing_first(0).await;
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let mut updates = queue.subscribe_updates().await.unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let processor = Processor::new(dyn_store, Arc::clone(&queue));
    let s = CheckId::service(SITE, "h", "s");

    // PENDING -> OK: the contribution changes, g2 and root are recomputed.
    handle(&processor, s, Status::Ok, 10).await;
    let mut want = vec![g("g2"), g("root")];
    want.sort();
    assert_eq!(groups_in(&drain(&mut updates)), want);
    let queries = store.hook.aggregate_queries.load(Ordering::SeqCst);
    assert!(queries > 0, "the first result recomputed aggregates");

    // OK again: applied (new version), but no aggregate query and no group update.
    let t = handle(&processor, s, Status::Ok, 20).await;
    assert!(t.is_applied());
    let ups = drain(&mut updates);
    assert_eq!(ups.len(), 1, "only the check update: {ups:?}");
    assert!(matches!(&ups[0], Update::Check(c) if c.check_id == s && c.state.version == 2));
    assert_eq!(store.hook.aggregate_queries.load(Ordering::SeqCst), queries);

    // OK -> CRITICAL: recomputed and published again.
    handle(&processor, s, Status::Critical, 30).await;
    assert_eq!(groups_in(&drain(&mut updates)), want);
    assert!(store.hook.aggregate_queries.load(Ordering::SeqCst) > queries);

    // CRITICAL again: nothing to recompute; publish_transition follows the
    // transition's own word on whether the contribution changed.
    let before = store.hook.aggregate_queries.load(Ordering::SeqCst);
    let mut t = handle(&processor, s, Status::Critical, 40).await;
    drain(&mut updates);
    assert!(!t.contribution_changed);
    assert_eq!(store.hook.aggregate_queries.load(Ordering::SeqCst), before);
    processor.publish_transition(s, &t).await.unwrap();
    assert_eq!(store.hook.aggregate_queries.load(Ordering::SeqCst), before);
    t.contribution_changed = true;
    processor.publish_transition(s, &t).await.unwrap();
    assert!(store.hook.aggregate_queries.load(Ordering::SeqCst) > before);
}

/// `run` applies what has piled up in batches: every result once and in
/// order per check, the group aggregates recomputed far fewer times than
/// there are results, and the last published aggregate the true one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_applies_a_backlog_in_batches_with_coalesced_aggregates() {
    let store = failing_first(0).await;
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
    let running = Running::start(processor);
    // The backlog applied.
    for check in [h, s] {
        until_version(store.as_ref(), check, 200, Duration::from_secs(5)).await;
    }
    // The aggregate task publishes the last change after the last result
    // is applied: read the updates until it has.
    // (Not `drain`: tokio's cooperative budget makes a long run of
    // `now_or_never` polls come back empty.)
    let truth = store.group_states(Some(g("root"))).await.unwrap();
    let root = truth.iter().find(|gs| gs.id == g("root")).unwrap();
    let mut ups = Vec::new();
    while ups.iter().rev().find_map(root_aggregate) != Some(root.aggregate) {
        let u = tokio::time::timeout(Duration::from_secs(5), updates.next())
            .await
            .expect("the current root aggregate is published")
            .expect("updates go on");
        ups.push(u.unwrap());
    }
    running.stop().await;
    for check in [h, s] {
        let applied = applied_in_order(store.as_ref(), check).await;
        let want: Vec<_> = sent
            .iter()
            .filter(|r| r.check_id == check)
            .map(|r| r.id)
            .collect();
        assert_eq!(applied, want, "every result of {check} once, in order");
    }
    let queries = store.hook.aggregate_queries.load(Ordering::SeqCst);
    assert!(
        queries < 100,
        "{queries} aggregate queries for 400 aggregate changes: not coalesced"
    );
    // The rest, until nothing more comes for 200 ms.
    while let Ok(Some(u)) = tokio::time::timeout(Duration::from_millis(200), updates.next()).await {
        ups.push(u.unwrap());
    }
    let checks = ups.iter().filter(|u| matches!(u, Update::Check(_))).count();
    assert_eq!(checks, 400, "one check update per applied result");
    let last_root = ups
        .iter()
        .rev()
        .find_map(root_aggregate)
        .expect("a root update");
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
    let running = Running::start(processor);
    let h = CheckId::host(SITE, "h");
    let now = chrono::Utc::now();
    let mut future = bergamot_core::model::CheckResult::new(h, Status::Critical, "2999", now);
    future.executed_at = now + chrono::Duration::days(365 * 900);
    queue.publish_result(future.clone()).await.unwrap();
    let mut big = bergamot_core::model::CheckResult::new(h, Status::Warning, "w".repeat(5000), now);
    big.long_output = "l".repeat(5000).into();
    queue.publish_result(big).await.unwrap();
    let state = bergamot_testkit::wait_for(
        "the result after the future one to be applied",
        Duration::from_secs(5),
        || async {
            let s = store.state(h).await.unwrap();
            (s.status == Status::Warning).then_some(s)
        },
    )
    .await;
    running.stop().await;
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
    let store = failing_first(0).await;
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let mut updates = queue.subscribe_updates().await.unwrap();
    let processor = Processor::new(store.clone(), Arc::clone(&queue));
    let h = CheckId::host(SITE, "h");
    let t = handle(&processor, h, Status::Critical, 10).await;
    let open = t.state.current_alert.expect("alert opened").id;
    let t = handle(&processor, h, Status::Ok, 20).await;
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
        store.hook.alert_reads.load(Ordering::SeqCst),
        0,
        "alert records read to publish"
    );
}
