//! Executor benchmarks: dummy-engine throughput through the `Executors`
//! registry, and the nagios executor's per-check overhead for `/bin/true`.
//!
//! Run with `cargo bench -p bergamot-core --bench exec`.

use bergamot_core::exec::{Executors, Worker};
use bergamot_core::model::{CheckId, Status};
use bergamot_core::queue::ExecuteCheck;
use bergamot_core::queue::{InMemoryQueue, Queue};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn execute(engine: &str, params: serde_json::Value) -> ExecuteCheck {
    ExecuteCheck {
        id: uuid::Uuid::new_v4(),
        check_id: CheckId::random(),
        site: "bench".into(),
        pool: "default".into(),
        engine: engine.into(),
        params: serde_json::from_value(params).expect("params object"),
        timeout: Duration::from_secs(10),
        ttl: Duration::from_secs(60),
        scheduled_at: chrono::Utc::now(),
        execute_now: false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest-rank percentile.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `task(i)` for `i` in `0..tasks` on spawned tasks at once; the time
/// until all of them ended.
async fn in_tasks<F, Fut>(tasks: usize, task: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks).map(|i| tokio::spawn(task(i))).collect();
    for h in handles {
        h.await.expect("bench task");
    }
    start.elapsed()
}

async fn dummy_throughput(executors: Arc<Executors>) {
    // 1,000 checks cycling through statuses, as a load test would.
    let checks: Arc<Vec<ExecuteCheck>> = Arc::new(
        (0..1000)
            .map(|_| {
                execute(
                    "dummy",
                    serde_json::json!({"statuses": ["OK", "WARNING", "CRITICAL"]}),
                )
            })
            .collect(),
    );
    const N: usize = 400_000;

    let start = Instant::now();
    for i in 0..N {
        let r = executors.execute(&checks[i % checks.len()]).await;
        assert_ne!(r.status, Status::Error);
    }
    let el = start.elapsed();
    println!(
        "dummy via Executors, 1 task:   {N} executions in {:.3} s = {:.0}/s",
        el.as_secs_f64(),
        N as f64 / el.as_secs_f64()
    );

    for tasks in [2usize, 8] {
        let el = in_tasks(tasks, |t| {
            let (executors, checks) = (executors.clone(), checks.clone());
            async move {
                for i in (t..N).step_by(tasks) {
                    let r = executors.execute(&checks[i % checks.len()]).await;
                    assert_ne!(r.status, Status::Error);
                }
            }
        })
        .await;
        println!(
            "dummy via Executors, {tasks} tasks:  {N} executions in {:.3} s = {:.0}/s",
            el.as_secs_f64(),
            N as f64 / el.as_secs_f64()
        );
    }
}

/// The whole worker loop: executes published to an in-memory queue, run by a
/// `Worker` on the dummy engine, results consumed and acked.
async fn worker_throughput(executors: Executors) {
    const N: usize = 100_000;
    for concurrency in [1usize, 64] {
        let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
        let engines = vec!["dummy".to_string()];
        drop(
            queue
                .consume_executes("default", &engines)
                .await
                .expect("consume"),
        );
        let mut results = queue.consume_results().await.expect("consume results");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(Worker::new(executors.clone(), concurrency).run(
            queue.clone(),
            "default".into(),
            engines,
            async move {
                stopped.await.ok();
            },
        ));
        let start = Instant::now();
        let publisher = {
            let queue = queue.clone();
            tokio::spawn(async move {
                for _ in 0..N {
                    let e = execute("dummy", serde_json::json!({"status": "OK"}));
                    queue.publish_execute(e).await.expect("publish");
                }
            })
        };
        for _ in 0..N {
            let d = results.next().await.expect("open").expect("delivery");
            d.ack().await.expect("ack");
        }
        let el = start.elapsed();
        publisher.await.expect("publisher");
        stop.send(()).ok();
        worker.await.expect("join").expect("worker");
        println!(
            "Worker loop (InMemoryQueue, dummy), concurrency {concurrency}: {N} executes -> results in {:.3} s = {:.0}/s",
            el.as_secs_f64(),
            N as f64 / el.as_secs_f64()
        );
    }
}

async fn nagios_overhead(executors: Arc<Executors>) {
    const RUNS: usize = 2000;
    let e = execute("nagios", serde_json::json!({"command": ["/bin/true"]}));
    let mut times = Vec::with_capacity(RUNS);
    let start = Instant::now();
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = executors.execute(&e).await;
        times.push(t.elapsed());
        assert_eq!(r.status, Status::Ok, "{}", r.output);
    }
    let total = start.elapsed();
    times.sort();
    println!(
        "nagios /bin/true, sequential: {RUNS} runs in {:.2} s = {:.0}/s; spawn-to-result p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        total.as_secs_f64(),
        RUNS as f64 / total.as_secs_f64(),
        percentile(&times, 50.0).as_secs_f64() * 1e3,
        percentile(&times, 99.0).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );

    // Concurrent: 16 plugins in flight at once.
    let total = in_tasks(16, |_| {
        let (executors, e) = (executors.clone(), e.clone());
        async move {
            for _ in 0..RUNS / 16 {
                let r = executors.execute(&e).await;
                assert_eq!(r.status, Status::Ok, "{}", r.output);
            }
        }
    })
    .await;
    println!(
        "nagios /bin/true, 16 in flight: {RUNS} runs in {:.2} s = {:.0}/s",
        total.as_secs_f64(),
        RUNS as f64 / total.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let executors = Arc::new(Executors::standard());
    rt.block_on(dummy_throughput(executors.clone()));
    rt.block_on(worker_throughput(Executors::standard()));
    rt.block_on(nagios_overhead(executors));
}
