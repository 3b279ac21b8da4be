//! Reconnect under load: the broker closes every connection while 10,000
//! results are being published and consumed; all are applied exactly once.
//!
//! It closes every connection on the broker, so it disturbs every other AMQP
//! test: ignored by default, run serially with
//! `cargo test -p bergamot-amqp --test disruptive_reconnect -- --ignored --test-threads=1`.

mod common;

use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::queue::Queue;
use chrono::Utc;
use common::{amqp_url, config, connect};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TOTAL: usize = 10_000;
const BATCH: usize = 100;

fn close_all_connections() {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["close_all_connections", "test"])
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl close_all_connections failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "disruptive: run serially with --ignored"]
async fn all_results_applied_exactly_once_across_a_broker_side_disconnect() {
    let Some(url) = amqp_url("disruptive_reconnect") else {
        return;
    };
    let cfg = config(&url);
    let consumer_q = connect(cfg.clone()).await;
    let publisher_q = connect(cfg.with_delete_topology_on_close(false)).await;

    // The processor: applies each result id once (dedupe by id is the
    // consumer's job), acks after applying.
    let applied = Arc::new(Mutex::new(HashSet::<Uuid>::new()));
    let deliveries = Arc::new(AtomicUsize::new(0));
    let mut stream = consumer_q.consume_results().await.unwrap();
    let consumer = {
        let applied = applied.clone();
        let deliveries = deliveries.clone();
        tokio::spawn(async move {
            while let Some(d) = stream.next().await {
                let d = d.expect("a result delivery");
                deliveries.fetch_add(1, Ordering::Relaxed);
                let done = {
                    let mut a = applied.lock();
                    a.insert(d.message.id.0);
                    a.len() == TOTAL
                };
                // An ack can fail when the connection just died: the broker
                // then redelivers, and the dedupe above absorbs it.
                let _ = d.ack().await;
                if done {
                    return;
                }
            }
        })
    };

    let results: Vec<CheckResult> = (0..TOTAL)
        .map(|i| CheckResult::new(CheckId::random(), Status::Ok, format!("r{i}"), Utc::now()))
        .collect();
    let want: HashSet<Uuid> = results.iter().map(|r| r.id.0).collect();
    let mut retries = 0;
    let mut disrupted = false;
    for (n, chunk) in results.chunks(BATCH).enumerate() {
        if n == TOTAL / BATCH / 3 {
            tokio::task::spawn_blocking(close_all_connections)
                .await
                .unwrap();
            disrupted = true;
        }
        // Publish until confirmed: an unconfirmed batch is published again.
        loop {
            match publisher_q.publish_results(chunk.to_vec()).await {
                Ok(()) => break,
                Err(e) => {
                    retries += 1;
                    assert!(retries < 1000, "publishing never recovered: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    assert!(disrupted);

    tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .expect("all results applied after recovery")
        .unwrap();
    let applied = applied.lock().clone();
    let missing = want.difference(&applied).count();
    assert_eq!(missing, 0, "{missing} results were never applied");
    assert_eq!(applied.len(), TOTAL);
    eprintln!(
        "applied {} distinct results from {} deliveries; {retries} publish retries",
        applied.len(),
        deliveries.load(Ordering::Relaxed)
    );
    assert!(
        retries > 0,
        "the disconnect should have failed some publish"
    );
    publisher_q.close().await.unwrap();
    consumer_q.close().await.unwrap();
}
