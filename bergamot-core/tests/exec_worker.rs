//! The `Worker` loop over the in-memory queue: executes in, results out,
//! acks after publish, requeue when a publish fails, the concurrency limit.

use async_trait::async_trait;
use bergamot_core::exec::{Executor, Executors, Worker};
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::queue::{
    DeadCheck, DeliveryStream, ExecuteCheck, InMemoryQueue, Queue, SchedulerControl, Update,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

fn execute(engine: &str, params: serde_json::Value) -> ExecuteCheck {
    ExecuteCheck {
        id: uuid::Uuid::new_v4(),
        check_id: CheckId::random(),
        site: "test".into(),
        pool: "p1".into(),
        engine: engine.into(),
        params: serde_json::from_value(params).expect("params object"),
        timeout: Duration::from_secs(10),
        ttl: Duration::from_secs(600),
        scheduled_at: chrono::Utc::now(),
        execute_now: false,
    }
}

fn engines(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Makes the queue route executes of `pool` / `engines` (the in-memory queue
/// dead-letters executes for pairs nobody consumes yet).
async fn register(queue: &dyn Queue, names: &[&str]) {
    drop(
        queue
            .consume_executes("p1", &engines(names))
            .await
            .expect("consume"),
    );
}

/// A worker's `run` for pool `p1` on its own task, until [`Running::stop`].
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<bergamot_core::Result<()>>,
}

impl Running {
    /// Runs `worker` for `names` (none: every engine it has).
    fn start(worker: Worker, queue: &Arc<dyn Queue>, names: &[&str]) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let task =
            tokio::spawn(
                worker.run(queue.clone(), "p1".into(), engines(names), async move {
                    stopped.await.ok();
                }),
            );
        Running { stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).expect("worker alive");
        self.task.await.expect("join").expect("worker ends cleanly");
    }
}

async fn take_results(queue: &dyn Queue, n: usize) -> Vec<CheckResult> {
    let mut stream = queue.consume_results().await.expect("consume results");
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a result within 30 s")
            .expect("stream open")
            .expect("delivery");
        out.push(d.message.clone());
        d.ack().await.expect("ack result");
    }
    out
}

#[tokio::test]
async fn worker_runs_executes_and_publishes_results() {
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    register(&*queue, &["dummy", "snmp"]).await;
    let mut sent = HashMap::new();
    for (i, status) in ["OK", "WARNING", "CRITICAL", "UNKNOWN"]
        .iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let e = execute(
            "dummy",
            serde_json::json!({"status": status, "output": format!("n{i}")}),
        );
        sent.insert(
            e.check_id,
            (status.parse::<Status>().expect("status"), format!("n{i}")),
        );
        queue.publish_execute(e).await.expect("publish");
    }
    // An engine this worker's registry lacks: still a result (ERROR).
    let unknown = execute("snmp", serde_json::json!({}));
    let unknown_id = unknown.check_id;
    queue.publish_execute(unknown).await.expect("publish");

    let worker = Running::start(
        Worker::new(Executors::standard(), 4),
        &queue,
        &["dummy", "snmp"],
    );

    let results = take_results(&*queue, 41).await;
    for r in &results {
        if r.check_id == unknown_id {
            assert_eq!(r.status, Status::Error);
            assert!(r.output.contains("\"snmp\""), "{}", r.output);
            continue;
        }
        let (status, output) = sent
            .remove(&r.check_id)
            .expect("a result per execute, once");
        assert_eq!((r.status, &*r.output), (status, output.as_str()));
    }
    assert!(sent.is_empty());

    worker.stop().await;

    // Every execute was acked: nothing comes back to a new consumer.
    let mut again = queue
        .consume_executes("p1", &engines(&["dummy", "snmp"]))
        .await
        .expect("consume");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), again.next())
            .await
            .is_err(),
        "an execute was redelivered after its result was published"
    );
}

/// Counts how many executions run at once.
struct Counts {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct Gauge(Arc<Counts>);

#[async_trait]
impl Executor for Gauge {
    fn engine(&self) -> &str {
        "gauge"
    }
    async fn execute(&self, execute: &ExecuteCheck) -> CheckResult {
        let n = self.0.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max.fetch_max(n, Ordering::SeqCst);
        // The execution itself: it must last long enough for the worker to
        // start others meanwhile, up to its limit.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0.now.fetch_sub(1, Ordering::SeqCst);
        CheckResult::new(execute.check_id, Status::Ok, "measured", chrono::Utc::now())
    }
}

#[tokio::test]
async fn worker_respects_its_concurrency_limit() {
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    register(&*queue, &["gauge"]).await;
    for _ in 0..30 {
        queue
            .publish_execute(execute("gauge", serde_json::json!({})))
            .await
            .expect("publish");
    }
    let gauge = Arc::new(Counts {
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
    });
    let mut executors = Executors::new();
    executors.register(Arc::new(Gauge(gauge.clone())));
    let worker = Running::start(Worker::new(executors, 3), &queue, &["gauge"]);
    let results = take_results(&*queue, 30).await;
    assert_eq!(results.len(), 30);
    worker.stop().await;
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        3,
        "limit reached, never passed"
    );
}

/// Delegates to an in-memory queue but fails the first `fail` result publishes.
struct FailingPublish {
    inner: InMemoryQueue,
    fail: AtomicUsize,
    /// The next this many execute streams fail at once (then stay open).
    broken_streams: AtomicUsize,
}

impl FailingPublish {
    fn new(fail: usize) -> Arc<FailingPublish> {
        Arc::new(FailingPublish {
            inner: InMemoryQueue::new(),
            fail: AtomicUsize::new(fail),
            broken_streams: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Queue for FailingPublish {
    async fn publish_execute(&self, execute: ExecuteCheck) -> bergamot_core::Result<()> {
        self.inner.publish_execute(execute).await
    }
    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> bergamot_core::Result<DeliveryStream<ExecuteCheck>> {
        let left = self.broken_streams.load(Ordering::SeqCst);
        if left > 0 {
            self.broken_streams.store(left - 1, Ordering::SeqCst);
            let err = bergamot_core::Error::Closed("injected stream failure".into());
            return Ok(futures::stream::once(async move { Err(err) })
                .chain(futures::stream::pending())
                .boxed());
        }
        self.inner.consume_executes(pool, engines).await
    }
    async fn consume_dead_checks(&self) -> bergamot_core::Result<DeliveryStream<DeadCheck>> {
        self.inner.consume_dead_checks().await
    }
    async fn publish_result(&self, result: CheckResult) -> bergamot_core::Result<()> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(bergamot_core::Error::Closed(
                "injected publish failure".into(),
            ));
        }
        self.inner.publish_result(result).await
    }
    async fn consume_results(&self) -> bergamot_core::Result<DeliveryStream<CheckResult>> {
        self.inner.consume_results().await
    }
    async fn publish_update(&self, update: Update) -> bergamot_core::Result<()> {
        self.inner.publish_update(update).await
    }
    async fn subscribe_updates(
        &self,
    ) -> bergamot_core::Result<BoxStream<'static, bergamot_core::Result<Update>>> {
        self.inner.subscribe_updates().await
    }
    async fn publish_control(&self, control: SchedulerControl) -> bergamot_core::Result<()> {
        self.inner.publish_control(control).await
    }
    async fn consume_control(&self) -> bergamot_core::Result<DeliveryStream<SchedulerControl>> {
        self.inner.consume_control().await
    }
}

#[tokio::test]
async fn failed_publish_requeues_the_execute_and_the_result_still_comes() {
    let failing = FailingPublish::new(2);
    let queue: Arc<dyn Queue> = failing.clone();
    register(&*queue, &["dummy"]).await;
    let e = execute("dummy", serde_json::json!({"status": "CRITICAL"}));
    let check_id = e.check_id;
    queue.publish_execute(e).await.expect("publish");

    let worker = Running::start(Worker::new(Executors::standard(), 2), &queue, &["dummy"]);
    let results = take_results(&*queue, 1).await;
    assert_eq!(results[0].check_id, check_id);
    assert_eq!(results[0].status, Status::Critical);
    assert_eq!(
        failing.fail.load(Ordering::SeqCst),
        0,
        "both failures were hit"
    );
    worker.stop().await;

    // Exactly one result: the failed attempts published nothing, the
    // successful one acked the execute.
    let mut results = queue.consume_results().await.expect("consume");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), results.next())
            .await
            .is_err()
    );
}

/// A failing execute stream (a broker restart) does not stop the worker: it
/// consumes again after a pause and runs what comes next.
#[tokio::test]
async fn worker_consumes_again_after_a_stream_error() {
    let failing = FailingPublish::new(0);
    let queue: Arc<dyn Queue> = failing.clone();
    register(&*queue, &["dummy"]).await;
    failing.broken_streams.store(2, Ordering::SeqCst);
    let worker = Running::start(Worker::new(Executors::standard(), 2), &queue, &["dummy"]);
    let e = execute("dummy", serde_json::json!({"status": "WARNING"}));
    let check_id = e.check_id;
    queue.publish_execute(e).await.expect("publish");
    let results = take_results(&*queue, 1).await;
    assert_eq!(results[0].check_id, check_id);
    assert_eq!(failing.broken_streams.load(Ordering::SeqCst), 0);
    assert!(!worker.task.is_finished(), "the worker runs on");
    worker.stop().await;
}

#[tokio::test]
async fn idle_worker_stops_on_shutdown() {
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let r = Worker::new(Executors::standard(), 8)
        .run(queue, "p1".into(), engines(&["dummy"]), async {
            // Shut down after the worker has idled a while (nothing to wait
            // for: idling is what is tested).
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn worker_without_engines_serves_every_registered_engine() {
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let worker = Running::start(Worker::new(Executors::standard(), 2), &queue, &[]);
    // Send executes until one is not dead-lettered: the worker's consumer
    // routes them from then on.
    let dead = tokio::sync::Mutex::new(queue.consume_dead_checks().await.expect("dead checks"));
    let check_id = bergamot_testkit::wait_for(
        "the worker's consumer to route executes",
        Duration::from_secs(10),
        || async {
            let e = execute("dummy", serde_json::json!({"status": "WARNING"}));
            let id = e.check_id;
            queue.publish_execute(e).await.expect("publish");
            let mut dead = dead.lock().await;
            match tokio::time::timeout(Duration::from_millis(50), dead.next()).await {
                Err(_) => Some(id),
                Ok(Some(Ok(d))) => {
                    assert_eq!(d.message.execute.check_id, id);
                    d.ack().await.expect("ack dead");
                    None
                }
                Ok(other) => panic!("dead-check stream: {other:?}"),
            }
        },
    )
    .await;
    let results = take_results(&*queue, 1).await;
    assert_eq!(
        (results[0].check_id, results[0].status),
        (check_id, Status::Warning)
    );
    worker.stop().await;
}

/// The worker cuts output to its cap before publishing.
#[tokio::test]
async fn worker_caps_output_before_publishing() {
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    register(&*queue, &["dummy"]).await;
    let long = "o".repeat(1000);
    queue
        .publish_execute(execute(
            "dummy",
            serde_json::json!({"status": "OK", "output": long}),
        ))
        .await
        .expect("publish");
    let limits = bergamot_core::model::ResultLimits {
        max_output: 100,
        max_long_output: 200,
        ..Default::default()
    };
    let worker = Running::start(
        Worker::new(Executors::standard(), 1).with_limits(limits),
        &queue,
        &["dummy"],
    );
    let r = take_results(&*queue, 1).await.remove(0);
    worker.stop().await;
    assert!(r.output.len() <= 100, "{}", r.output);
    assert!(r.output.starts_with("ooo"), "{}", r.output);
    assert!(r.output.ends_with(" bytes]"), "{}", r.output);
}
