//! Wire v2 against a real broker: how batches form, per-item settling of a
//! batch, a poison item inside a batch, and v1 messages still consumed.

mod common;

use amiquip::{AmqpProperties, Channel, Publish};
use bergamot_amqp::{AmqpQueue, CONTENT_TYPE_V1, CONTENT_TYPE_V2, POISON_REASON_HEADER};
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::queue::{ExecuteCheck, Message, Queue};
use chrono::Utc;
use common::{
    amqp_url, config, connect, execute, next, quiet, raw_channel, wait_count, with_worker,
};
use std::collections::HashSet;
use std::time::Duration;

/// A result of a check in result pool `pool` (of `pools`).
fn result_in_pool(q: &AmqpQueue, pool: u16) -> CheckResult {
    loop {
        let r = CheckResult::new(CheckId::random(), Status::Ok, "ok", Utc::now());
        if q.result_pool_of(&r) == pool {
            return r;
        }
    }
}

/// Every message waiting in `queue`, taken with basic.get: (content type,
/// items decoded).
fn drain_raw(ch: &Channel, queue: &str) -> Vec<(Option<String>, Vec<Message>)> {
    let mut out = Vec::new();
    while let Some(g) = ch.basic_get(queue, true).expect("basic.get") {
        let ct = g.delivery.properties.content_type().clone();
        let body = &g.delivery.body;
        let items = if ct.as_deref() == Some(CONTENT_TYPE_V2) {
            let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON envelope");
            assert_eq!(v["v"], 2, "{v}");
            v["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| serde_json::from_value(i.clone()).expect("an item"))
                .collect()
        } else {
            vec![Message::decode(body).expect("a v1 message")]
        };
        out.push((ct, items));
    }
    out
}

#[tokio::test]
async fn a_lone_result_goes_alone_and_concurrent_ones_share_messages() {
    let Some(url) = amqp_url("batch_formation") else {
        return;
    };
    // A long linger makes the gathering visible whatever the machine's speed.
    let cfg = config(&url).with_batch_linger(Duration::from_millis(500));
    let prefix = cfg.prefix.clone();
    let q = connect(cfg).await;
    let (raw, ch) = raw_channel(&url);
    let pool0 = format!("{prefix}.result.0");

    // Nothing sent lately, nothing in flight: it goes at once, alone.
    let lone = result_in_pool(&q, 0);
    q.publish_result(lone.clone()).await.unwrap();
    let got = drain_raw(&ch, &pool0);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.as_deref(), Some(CONTENT_TYPE_V2));
    assert_eq!(got[0].1, vec![Message::CheckResult(lone)]);

    // 100 at once into one pool: far fewer messages, nothing lost.
    const N: usize = 100;
    let results: Vec<CheckResult> = (0..N).map(|_| result_in_pool(&q, 0)).collect();
    futures::future::try_join_all(results.iter().map(|r| q.publish_result(r.clone())))
        .await
        .unwrap();
    let got = drain_raw(&ch, &pool0);
    assert!(got.len() < N / 4, "{} messages for {N} results", got.len());
    let items: Vec<Message> = got.into_iter().flat_map(|(_, items)| items).collect();
    let want: Vec<Message> = results.into_iter().map(Message::CheckResult).collect();
    assert_eq!(items, want, "every result, in publish order");
    raw.close().unwrap();
    q.close().await.unwrap();
}

#[tokio::test]
async fn wire_v1_is_still_published_with_batch_max_1_and_still_consumed() {
    let Some(url) = amqp_url("wire_v1") else {
        return;
    };
    let cfg = config(&url);
    let prefix = cfg.prefix.clone();
    let v1 = connect(
        cfg.clone()
            .with_batch_max(1)
            .with_delete_topology_on_close(false),
    )
    .await;
    let (raw, ch) = raw_channel(&url);
    let pool0 = format!("{prefix}.result.0");
    let rs: Vec<CheckResult> = (0..3).map(|_| result_in_pool(&v1, 0)).collect();
    v1.publish_results(rs.clone()).await.unwrap();
    wait_count(&ch, &pool0, 3).await;
    let got = drain_raw(&ch, &pool0);
    assert_eq!(got.len(), 3, "one v1 message per result");
    assert!(got
        .iter()
        .all(|(ct, items)| ct.as_deref() == Some(CONTENT_TYPE_V1) && items.len() == 1));

    // A v1 message (as an older node publishes it) reaches a consumer of
    // this version, next to a v2 one.
    let q = connect(cfg).await;
    let old = result_in_pool(&q, 0);
    ch.basic_publish(
        format!("{prefix}.result"),
        Publish::with_properties(
            &Message::CheckResult(old.clone()).encode().unwrap(),
            "0",
            AmqpProperties::default().with_content_type(CONTENT_TYPE_V1.into()),
        ),
    )
    .unwrap();
    // The raw publish is not confirmed and travels on another connection:
    // it is queued before the v2 one is sent, so that they arrive in order.
    wait_count(&ch, &pool0, 1).await;
    let mut results = q.consume_results().await.unwrap();
    let new = result_in_pool(&q, 0);
    q.publish_result(new.clone()).await.unwrap();
    for want in [old, new] {
        let d = next(&mut results, "a result").await;
        assert_eq!(d.message, want);
        d.ack().await.unwrap();
    }
    raw.close().unwrap();
    v1.close().await.unwrap();
    q.close().await.unwrap();
}

/// The acceptance test of a poison item in a batch: a result the processor
/// poisons (the store refused it) goes to the poison queue alone, the
/// other results of its message are applied (acked) and not redelivered;
/// so does an item that does not even decode.
#[tokio::test]
async fn a_poison_item_inside_a_batch_goes_to_the_poison_queue_alone() {
    let Some(url) = amqp_url("batch_poison") else {
        return;
    };
    let cfg = config(&url);
    let prefix = cfg.prefix.clone();
    let q = connect(cfg.clone()).await;
    // The consumer on its own connection, closed before the check that
    // nothing is left unacked (closing requeues what is).
    let consumer = connect(cfg.with_delete_topology_on_close(false)).await;
    let (raw, ch) = raw_channel(&url);
    let pool0 = format!("{prefix}.result.0");
    let poison = format!("{prefix}.poison");

    // One message of three results (one publish call: one batch).
    let rs: Vec<CheckResult> = (0..3).map(|_| result_in_pool(&q, 0)).collect();
    q.publish_results(rs.clone()).await.unwrap();
    wait_count(&ch, &pool0, 1).await;
    let mut results = consumer.consume_results().await.unwrap();
    for (i, want) in rs.iter().enumerate() {
        let d = next(&mut results, "a result").await;
        assert_eq!(&d.message, want);
        if i == 1 {
            d.poison("refused by the store".into()).await.unwrap();
        } else {
            d.ack().await.unwrap();
        }
    }
    wait_count(&ch, &poison, 1).await;
    let got = ch.basic_get(poison.as_str(), true).unwrap().unwrap();
    assert_eq!(
        Message::decode(&got.delivery.body).unwrap(),
        Message::CheckResult(rs[1].clone()),
        "the poisoned item alone"
    );
    assert!(got
        .delivery
        .properties
        .headers()
        .as_ref()
        .unwrap()
        .get(POISON_REASON_HEADER)
        .is_some());

    // A raw v2 message whose middle item is not a result at all.
    let good: Vec<CheckResult> = (0..2).map(|_| result_in_pool(&q, 0)).collect();
    let bad = br#"{"type":"check_result","id":"not a uuid"}"#;
    let body = format!(
        r#"{{"v":2,"items":[{},{},{}]}}"#,
        String::from_utf8(Message::CheckResult(good[0].clone()).encode().unwrap()).unwrap(),
        String::from_utf8(bad.to_vec()).unwrap(),
        String::from_utf8(Message::CheckResult(good[1].clone()).encode().unwrap()).unwrap(),
    );
    ch.basic_publish(
        format!("{prefix}.result"),
        Publish::with_properties(
            body.as_bytes(),
            "0",
            AmqpProperties::default().with_content_type(CONTENT_TYPE_V2.into()),
        ),
    )
    .unwrap();
    for want in &good {
        let d = next(&mut results, "a good result").await;
        assert_eq!(&d.message, want);
        d.ack().await.unwrap();
    }
    wait_count(&ch, &poison, 1).await;
    let got = ch.basic_get(poison.as_str(), true).unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&got.delivery.body).unwrap();
    assert_eq!(v["id"], "not a uuid", "the bad item alone: {v}");
    // Everything settled: once the consumer is gone nothing is requeued.
    drop(results);
    consumer.close().await.unwrap();
    let left = ch
        .queue_declare_passive(pool0.as_str())
        .unwrap()
        .declared_message_count();
    assert_eq!(left, Some(0), "a message of the batch was not acked");
    raw.close().unwrap();
    q.close().await.unwrap();
}

/// An execute message is settled per item: the items a worker gave back go
/// out again alone (not the ones it ran), and results of a partly settled
/// message come back whole, in their place.
#[tokio::test]
async fn items_of_a_batch_are_settled_one_by_one() {
    let Some(url) = amqp_url("batch_per_item") else {
        return;
    };
    let q = connect(config(&url)).await;
    let mut worker = q
        .consume_executes("p1", &["dummy".to_string()])
        .await
        .unwrap();
    // Three executes sent at once: one message (nothing was in flight).
    let es: Vec<ExecuteCheck> = (0..3)
        .map(|_| execute("p1", "dummy", Duration::from_secs(60)))
        .collect();
    futures::future::try_join_all(es.iter().map(|e| q.publish_execute(e.clone())))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut worker, "an execute").await);
    }
    // Run the first and the third; give the second back.
    let second = held.remove(1);
    let back = second.message.id;
    second.nack(true).await.unwrap();
    for d in held {
        d.ack().await.unwrap();
    }
    let again = next(&mut worker, "the execute given back").await;
    assert_eq!(again.message.id, back);
    assert!(again.redelivered);
    again.ack().await.unwrap();
    assert!(
        quiet(&mut worker, Duration::from_millis(500)).await,
        "an execute that ran came again"
    );

    // Results: two acked, one dropped unsettled -> the message comes back
    // whole, redelivered (the store rejects the two as duplicates).
    let mut results = q.consume_results().await.unwrap();
    let rs: Vec<CheckResult> = (0..3).map(|_| result_in_pool(&q, 1)).collect();
    q.publish_results(rs.clone()).await.unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(next(&mut results, "a result").await);
    }
    let dropped = first.pop().unwrap();
    for d in first {
        d.ack().await.unwrap();
    }
    drop(dropped);
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let d = next(&mut results, "a redelivered result").await;
        assert!(d.redelivered);
        seen.insert(d.message.id);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, rs.iter().map(|r| r.id).collect());
    q.close().await.unwrap();
}

/// Dead-lettering works per item: an execute of a batch that expires in an
/// idle worker's buffer comes out of the dead-check queue alone, as
/// Expired; a batch nobody routes comes out item by item, as Unroutable.
#[tokio::test]
async fn executes_of_a_batch_are_dead_lettered_item_by_item() {
    let Some(url) = amqp_url("batch_dead") else {
        return;
    };
    let (q, mut dead, mut idle) = with_worker(&url, "dummy").await;
    let es: Vec<ExecuteCheck> = (0..3)
        .map(|_| execute("p1", "dummy", Duration::from_millis(600)))
        .collect();
    futures::future::try_join_all(es.iter().map(|e| q.publish_execute(e.clone())))
        .await
        .unwrap();
    // The worker takes the first in time; the other two expire unread.
    let taken = next(&mut idle, "an execute").await;
    assert_eq!(taken.message.id, es[0].id);
    let mut expired = HashSet::new();
    for _ in 0..2 {
        let d = next(&mut dead, "a dead check").await;
        assert_eq!(d.message.reason, bergamot_core::queue::DeadReason::Expired);
        expired.insert(d.message.execute.id);
        d.ack().await.unwrap();
    }
    assert_eq!(expired, HashSet::from([es[1].id, es[2].id]));
    taken.ack().await.unwrap();

    let mut lost: Vec<ExecuteCheck> = (0..3)
        .map(|_| execute("p1", "dummy", Duration::from_secs(60)))
        .collect();
    for e in &mut lost {
        e.pool = "nopool".into();
    }
    futures::future::try_join_all(lost.iter().map(|e| q.publish_execute(e.clone())))
        .await
        .unwrap();
    let mut unroutable = HashSet::new();
    for _ in 0..3 {
        let d = next(&mut dead, "an unroutable dead check").await;
        assert_eq!(
            d.message.reason,
            bergamot_core::queue::DeadReason::Unroutable
        );
        unroutable.insert(d.message.execute.id);
        d.ack().await.unwrap();
    }
    assert_eq!(unroutable, lost.iter().map(|e| e.id).collect());
    q.close().await.unwrap();
}
