//! AmqpQueue benchmark against a real broker (`BERGAMOT_TEST_AMQP_URL`):
//! publish -> consume round-trip latency (p50 / p99) and sustained
//! confirmed publish + consume throughput.
//!
//! `BERGAMOT_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo bench -p bergamot-amqp --bench amqp`

use bergamot_amqp::{AmqpConfig, AmqpQueue};
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::queue::Queue;
use chrono::Utc;
use futures::StreamExt;
use std::time::{Duration, Instant};

const ROUND_TRIPS: usize = 3_000;
const THROUGHPUT: usize = 200_000;
const BATCH: usize = 1_000;
const IN_FLIGHT: usize = 4;
const PUBLISH_ONLY: usize = 100_000;

fn result(i: usize) -> CheckResult {
    CheckResult::new(
        CheckId::random(),
        Status::Ok,
        format!("bench {i}"),
        Utc::now(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn connect(url: &str) -> AmqpQueue {
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    let cfg = AmqpConfig::new(url)
        .with_prefix(prefix)
        .with_prefetch(1_000)
        .with_delete_topology_on_close(true);
    AmqpQueue::connect(cfg).await.expect("connect to RabbitMQ")
}

async fn round_trip(url: &str) {
    let q = connect(url).await;
    let mut stream = q.consume_results().await.expect("consume");
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 200 {
        let r = result(i);
        let start = Instant::now();
        let (published, received) = tokio::join!(q.publish_result(r), async {
            let d = stream
                .next()
                .await
                .expect("stream ended")
                .expect("delivery");
            (start.elapsed(), d)
        });
        published.expect("publish");
        let (elapsed, d) = received;
        d.ack().await.expect("ack");
        if i >= 200 {
            // The first 200 warm up.
            times.push(elapsed);
        }
    }
    times.sort();
    println!(
        "round trip publish->consume ({ROUND_TRIPS} msgs, confirmed, one at a time): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    q.close().await.expect("close");
}

/// Publishes `n` results in batches of [`BATCH`], [`IN_FLIGHT`] batches at
/// a time, each confirmed; returns when publishing started (the batches are
/// built before).
async fn publish_batches(q: &AmqpQueue, n: usize) -> Instant {
    let batches: Vec<Vec<CheckResult>> = (0..n / BATCH)
        .map(|b| (0..BATCH).map(|i| result(b * BATCH + i)).collect())
        .collect();
    let start = Instant::now();
    futures::stream::iter(batches)
        .for_each_concurrent(IN_FLIGHT, |batch| async move {
            q.publish_results(batch).await.expect("publish")
        })
        .await;
    start
}

async fn throughput(url: &str) {
    let q = connect(url).await;
    let mut stream = q.consume_results().await.expect("consume");
    // Acks are pipelined too (many in flight), as a processor committing in
    // batches would.
    let consumer = tokio::spawn(async move {
        (&mut stream)
            .take(THROUGHPUT)
            .map(|d| async move { d.expect("delivery").ack().await.expect("ack") })
            .buffer_unordered(512)
            .for_each(|()| async {})
            .await;
        Instant::now()
    });
    let start = publish_batches(&q, THROUGHPUT).await;
    let published = start.elapsed();
    let done = consumer.await.expect("consumer") - start;
    println!(
        "throughput ({THROUGHPUT} msgs, batches of {BATCH}, {IN_FLIGHT} in flight): confirmed publish {:.0} msgs/s; publish+consume+ack {:.0} msgs/s ({:?})",
        THROUGHPUT as f64 / published.as_secs_f64(),
        THROUGHPUT as f64 / done.as_secs_f64(),
        done
    );
    q.close().await.expect("close");
}

/// Confirmed publishing only (no consumer), through AmqpQueue.
async fn publish_only(url: &str) {
    let q = connect(url).await;
    let start = publish_batches(&q, PUBLISH_ONLY).await;
    let elapsed = start.elapsed();
    println!(
        "publish only through AmqpQueue ({PUBLISH_ONLY} msgs persistent, confirmed): {:.0} msgs/s",
        PUBLISH_ONLY as f64 / elapsed.as_secs_f64()
    );
    q.close().await.expect("close");
}

/// The same with amiquip alone on one thread, as a baseline for what the
/// broker and library can do on this machine.
fn raw_baseline(url: &str) {
    use amiquip::{
        AmqpProperties, Confirm, Connection, Publish, QueueDeclareOptions, QueueDeleteOptions,
    };
    let mut conn = Connection::insecure_open(url).expect("raw connect");
    let ch = conn.open_channel(None).expect("channel");
    let name = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let q = ch
        .queue_declare(
            name.as_str(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .expect("declare");
    let confirms = ch.listen_for_publisher_confirms().expect("confirms");
    ch.enable_publisher_confirms().expect("confirm mode");
    let body = bergamot_core::queue::Message::CheckResult(result(0))
        .encode()
        .expect("encode");
    let start = Instant::now();
    let mut confirmed = 0u64;
    for i in 1..=PUBLISH_ONLY as u64 {
        let props = AmqpProperties::default().with_delivery_mode(2);
        ch.basic_publish("", Publish::with_properties(&body, name.as_str(), props))
            .expect("publish");
        while i - confirmed > (BATCH * IN_FLIGHT) as u64 {
            if let Confirm::Ack(p) = confirms.recv().expect("confirm") {
                confirmed = confirmed.max(p.delivery_tag);
            }
        }
    }
    while confirmed < PUBLISH_ONLY as u64 {
        if let Confirm::Ack(p) = confirms.recv().expect("confirm") {
            confirmed = confirmed.max(p.delivery_tag);
        }
    }
    let elapsed = start.elapsed();
    println!(
        "publish only, raw amiquip baseline (one thread, amiquip's own connect; {PUBLISH_ONLY} msgs persistent, confirmed, {} in flight): {:.0} msgs/s",
        BATCH * IN_FLIGHT,
        PUBLISH_ONLY as f64 / elapsed.as_secs_f64()
    );
    q.delete(QueueDeleteOptions::default()).ok();
    conn.close().ok();
}

fn main() {
    let Ok(url) = std::env::var("BERGAMOT_TEST_AMQP_URL") else {
        println!("amqp bench skipped: BERGAMOT_TEST_AMQP_URL not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        round_trip(&url).await;
        publish_only(&url).await;
        throughput(&url).await;
    });
    raw_baseline(&url);
}
