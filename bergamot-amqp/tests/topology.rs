//! Topology behaviour against a real RabbitMQ: dead checks (unroutable,
//! expired, rejected), single-active-consumer failover of result pools,
//! poison messages.

mod common;

use amiquip::{AmqpValue, Publish};
use bergamot_amqp::{AmqpQueue, POISON_QUEUE_HEADER, POISON_REASON_HEADER};
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::queue::{DeadReason, Queue, SchedulerControl};
use chrono::Utc;
use common::{amqp_url, config, connect, execute, next, quiet, raw_channel, with_worker, PATIENCE};
use futures::StreamExt;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test]
async fn unroutable_checks_become_dead_checks_naming_pool_and_engine() {
    let Some(url) = amqp_url("unroutable") else {
        return;
    };
    // Pool "p1" exists and serves "nagios" only.
    let (q, mut dead, _worker) = with_worker(&url, "nagios").await;

    // No such pool.
    let e1 = execute("nopool", "nagios", Duration::from_secs(60));
    q.publish_execute(e1.clone()).await.unwrap();
    // The pool exists, the engine does not.
    let e2 = execute("p1", "http", Duration::from_secs(60));
    q.publish_execute(e2.clone()).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = next(&mut dead, "a dead check").await;
        assert_eq!(d.message.reason, DeadReason::Unroutable, "{:?}", d.message);
        let r = d.message.to_result();
        assert_eq!(r.status, Status::Error);
        assert!(
            r.output
                .contains(&format!("{:?}", d.message.execute.engine)),
            "{}",
            r.output
        );
        assert!(
            r.output.contains(&format!("{:?}", d.message.execute.pool)),
            "{}",
            r.output
        );
        seen.push(d.message.execute.id);
        d.ack().await.unwrap();
    }
    seen.sort();
    let mut want = vec![e1.id, e2.id];
    want.sort();
    assert_eq!(seen, want);
    q.close().await.unwrap();
}

#[tokio::test]
async fn execute_without_worker_expires_into_a_timeout_even_behind_a_long_ttl() {
    let Some(url) = amqp_url("expired") else {
        return;
    };
    // Declare the pool and engine, then let the worker go away.
    let (q, mut dead, worker) = with_worker(&url, "nagios").await;
    drop(worker);
    let prefix = q.config().prefix.clone();
    // Wait until the connection thread has noticed the dropped stream and
    // cancelled its consumer (it checks every 500 ms) on the queues of the
    // two TTL classes used below.
    let (raw, ch) = raw_channel(&url);
    bergamot_testkit::wait_until("the worker's consumer to be cancelled", PATIENCE, || {
        let consumers: Vec<Option<u32>> = ["ttl10s", "ttl5m"]
            .iter()
            .map(|class| {
                ch.queue_declare_passive(format!("{prefix}.check.p1.nagios.{class}"))
                    .expect("the execute queue")
                    .declared_consumer_count()
            })
            .collect();
        async move { consumers.iter().all(|c| *c == Some(0)) }
    })
    .await;
    raw.close().unwrap();

    // A long TTL first: it must not hold back the short one.
    let long = execute("p1", "nagios", Duration::from_secs(300));
    q.publish_execute(long.clone()).await.unwrap();
    let ttl = Duration::from_secs(1);
    let short = execute("p1", "nagios", ttl);
    let sent = Instant::now();
    q.publish_execute(short.clone()).await.unwrap();

    // The acceptance bound: dead within TTL + 1 s.
    let d = tokio::time::timeout(ttl + Duration::from_secs(1), dead.next())
        .await
        .unwrap_or_else(|_| panic!("no dead check within TTL + 1 s ({:?})", sent.elapsed()))
        .unwrap()
        .unwrap();
    assert_eq!(d.message.execute.id, short.id);
    assert_eq!(d.message.reason, DeadReason::Expired);
    let r = d.message.to_result();
    assert_eq!(r.status, Status::Timeout);
    assert_eq!(r.check_id, short.check_id);
    d.ack().await.unwrap();
    q.close().await.unwrap();
}

#[tokio::test]
async fn rejected_execute_becomes_a_rejected_dead_check() {
    let Some(url) = amqp_url("rejected") else {
        return;
    };
    let (q, mut dead, mut worker) = with_worker(&url, "dummy").await;
    let e = execute("p1", "dummy", Duration::from_secs(60));
    q.publish_execute(e.clone()).await.unwrap();
    let got = next(&mut worker, "the execute").await;
    assert_eq!(got.message, e);
    got.nack(false).await.unwrap();
    let d = next(&mut dead, "the dead check").await;
    assert_eq!(d.message.execute.id, e.id);
    assert!(
        matches!(d.message.reason, DeadReason::Rejected { .. }),
        "{:?}",
        d.message.reason
    );
    assert_eq!(d.message.to_result().status, Status::Error);
    d.ack().await.unwrap();
    q.close().await.unwrap();
}

fn result() -> CheckResult {
    CheckResult::new(CheckId::random(), Status::Ok, "ok", Utc::now())
}

/// Two processors on every result pool: A applies (acks) 200 of 400
/// results, then closes; B gets the rest. Returns what each applied.
async fn fail_over(url: &str, batch_max: u16) -> (HashSet<Uuid>, HashSet<Uuid>, HashSet<Uuid>) {
    let cfg = config(url).with_batch_max(batch_max);
    // A keeps the topology when it closes; B deletes it at the end.
    let a = connect(cfg.clone().with_delete_topology_on_close(false)).await;
    let b = connect(cfg).await;
    let mut a_stream = a.consume_results().await.expect("consume on A");
    let mut b_stream = b.consume_results().await.expect("consume on B");

    let results: Vec<CheckResult> = (0..400).map(|_| result()).collect();
    let all: HashSet<Uuid> = results.iter().map(|r| r.id.0).collect();
    b.publish_results(results).await.expect("publish");

    // A is the single active consumer of every pool (it subscribed first):
    // it applies (and acks) half of them, then its connection closes with
    // the rest prefetched but unacked.
    let mut applied_a = HashSet::new();
    while applied_a.len() < 200 {
        let d = next(&mut a_stream, "a result on A").await;
        assert!(applied_a.insert(d.message.id.0), "A got a result twice");
        d.ack().await.expect("ack");
    }
    a.close().await.expect("close A");

    let mut applied_b = HashSet::new();
    while !all
        .iter()
        .all(|id| applied_a.contains(id) || applied_b.contains(id))
    {
        let d = next(&mut b_stream, "a result on B").await;
        assert!(applied_b.insert(d.message.id.0), "B got a result twice");
        d.ack().await.expect("ack");
    }
    // Nothing more arrives.
    assert!(quiet(&mut b_stream, Duration::from_millis(300)).await);
    b.close().await.expect("close B");
    (all, applied_a, applied_b)
}

/// Wire v1, one result per message: A's acks settle exactly what it
/// applied, so B gets exactly the rest.
#[tokio::test]
async fn result_pools_fail_over_to_the_other_processor_without_loss_or_duplicates() {
    let Some(url) = amqp_url("failover") else {
        return;
    };
    let (all, applied_a, applied_b) = fail_over(&url, 1).await;
    assert!(
        applied_a.is_disjoint(&applied_b),
        "B got a result A had applied"
    );
    let union: HashSet<Uuid> = applied_a.union(&applied_b).copied().collect();
    assert_eq!(union, all);
}

/// With batches (wire v2) a message is acked once every result in it is:
/// the messages A had not finished go back whole, so B gets every result A
/// did not apply, each once, and may get again some A applied from those
/// messages (the store rejects them as duplicates by result id).
#[tokio::test]
async fn result_pools_fail_over_with_batches_without_loss() {
    let Some(url) = amqp_url("failover_v2") else {
        return;
    };
    let (all, applied_a, applied_b) = fail_over(&url, 256).await;
    let union: HashSet<Uuid> = applied_a.union(&applied_b).copied().collect();
    assert_eq!(union, all);
    let again = applied_a.intersection(&applied_b).count();
    assert!(again < 200, "A's finished messages came again ({again})");
}

#[tokio::test]
async fn undecodable_message_goes_to_poison_with_its_reason() {
    let Some(url) = amqp_url("poison") else {
        return;
    };
    let cfg = config(&url);
    let prefix = cfg.prefix.clone();
    let q: AmqpQueue = connect(cfg).await;
    let mut results = q.consume_results().await.unwrap();

    // A raw publisher puts garbage into result pool 0.
    let (raw, ch) = raw_channel(&url);
    ch.basic_publish(format!("{prefix}.result"), Publish::new(b"{not json", "0"))
        .unwrap();

    // The consumer survives and goes on with the next message.
    let good = result();
    q.publish_result(good.clone()).await.unwrap();
    let d = next(&mut results, "the good result").await;
    assert_eq!(d.message, good);
    d.ack().await.unwrap();

    let poison = format!("{prefix}.poison");
    let got = bergamot_testkit::wait_for("the poison message", PATIENCE, || {
        let got = ch.basic_get(poison.as_str(), true).unwrap();
        async move { got }
    })
    .await;
    assert_eq!(got.delivery.body, b"{not json");
    let headers = got.delivery.properties.headers().clone().unwrap();
    match headers.get(POISON_REASON_HEADER) {
        Some(AmqpValue::LongString(r)) => assert!(!r.is_empty()),
        other => panic!("no poison reason header: {other:?}"),
    }
    match headers.get(POISON_QUEUE_HEADER) {
        Some(AmqpValue::LongString(s)) => assert_eq!(s, &format!("{prefix}.result.0")),
        other => panic!("no source header: {other:?}"),
    }
    // Not requeued forever: the pool queue is empty.
    let count = ch
        .queue_declare_passive(format!("{prefix}.result.0"))
        .unwrap()
        .declared_message_count();
    assert_eq!(count, Some(0));
    raw.close().unwrap();
    q.close().await.unwrap();
}

#[tokio::test]
async fn invalid_routing_words_are_rejected_with_a_clear_error() {
    let Some(url) = amqp_url("invalid_words") else {
        return;
    };
    let q = connect(config(&url)).await;
    let err = q
        .publish_execute(execute("a.b", "nagios", Duration::from_secs(5)))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("pool") && text.contains("a.b"), "{text}");
    assert!(q.consume_executes("p", &["x#".to_string()]).await.is_err());
    q.close().await.unwrap();
}

#[tokio::test]
async fn bad_url_and_unreachable_broker_fail_clearly() {
    let err = AmqpQueue::connect(bergamot_amqp::AmqpConfig::new("http://x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("scheme"), "{err}");
    let cfg = bergamot_amqp::AmqpConfig::new("amqp://guest:secret@127.0.0.1:1/%2f");
    let err = AmqpQueue::connect(cfg).await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[tokio::test]
async fn execute_expiring_in_an_idle_workers_buffer_is_dead_and_never_delivered() {
    let Some(url) = amqp_url("prefetch_expiry") else {
        return;
    };
    // A live worker that does not read: the broker pushes the execute into
    // its prefetch buffer, where broker-side expiry cannot see it.
    let (q, mut dead, mut idle) = with_worker(&url, "slow").await;
    let e = execute("p1", "slow", Duration::from_millis(500));
    q.publish_execute(e.clone()).await.unwrap();
    let d = next(&mut dead, "the dead check").await;
    assert_eq!(d.message.execute.id, e.id);
    assert_eq!(d.message.reason, DeadReason::Expired);
    d.ack().await.unwrap();
    // The worker never sees it, not even later.
    assert!(
        quiet(&mut idle, Duration::from_millis(500)).await,
        "an expired execute reached the worker"
    );
    // A worker that reads in time gets its execute and no dead check follows.
    let e2 = execute("p1", "slow", Duration::from_secs(2));
    q.publish_execute(e2.clone()).await.unwrap();
    let got = next(&mut idle, "the second execute").await;
    assert_eq!(got.message.id, e2.id);
    // Held unacked past its 2 s TTL: the time passing is what is tested.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    got.ack().await.unwrap();
    assert!(
        quiet(&mut dead, Duration::from_millis(500)).await,
        "a taken execute was dead-lettered"
    );
    q.close().await.unwrap();
}

/// Every scheduler node receives every control message (each consumer has
/// its own queue), so the node owning a check applies its reschedule.
#[tokio::test]
async fn control_messages_reach_every_scheduler_node() {
    let Some(url) = amqp_url("control_fan_out") else {
        return;
    };
    let cfg = config(&url);
    let a = connect(cfg.clone()).await;
    let b = connect(cfg.clone().with_delete_topology_on_close(false)).await;
    let publisher = connect(cfg.with_delete_topology_on_close(false)).await;
    let mut ca = a.consume_control().await.expect("consume on a");
    let mut cb = b.consume_control().await.expect("consume on b");
    let check = CheckId::random();
    let sent = SchedulerControl::Reschedule {
        check_id: check,
        interval: Duration::from_secs(7),
    };
    publisher
        .publish_control(sent.clone())
        .await
        .expect("publish");
    for (name, stream) in [("a", &mut ca), ("b", &mut cb)] {
        let d = next(stream, &format!("the control message on {name}")).await;
        assert_eq!(d.message, sent, "{name}");
        d.ack().await.expect("ack");
    }
    publisher.close().await.expect("close");
    b.close().await.expect("close");
    drop(ca);
    drop(cb);
    a.close().await.expect("close");
}
