//! Queue conformance cases: one per clause of the [`Queue`] contract.
//!
//! Every case registers its consumers before publishing (an execute for a
//! pool and engine nobody consumes is unroutable) and waits at most
//! [`ARRIVAL_BOUND`] for anything that must arrive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{result, ARRIVAL_BOUND};
use crate::model::{CheckId, Status};
use crate::queue::{
    AlertUpdate, DeadCheck, DeadReason, Delivery, DeliveryStream, ExecuteCheck, Message, Queue,
    SchedulerControl, Update,
};
use crate::state::Event;
use chrono::Utc;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A unique pool name, so cases never see each other's executes.
fn pool() -> String {
    format!("pool-{}", Uuid::new_v4().simple())
}

fn execute(pool: &str, engine: &str, ttl: Duration) -> ExecuteCheck {
    ExecuteCheck {
        id: Uuid::new_v4(),
        check_id: CheckId::random(),
        site: super::SITE.into(),
        pool: pool.into(),
        engine: engine.into(),
        params: Default::default(),
        timeout: Duration::from_secs(10),
        ttl,
        scheduled_at: Utc::now(),
        execute_now: false,
    }
}

async fn next<T>(stream: &mut DeliveryStream<T>, what: &str) -> Delivery<T> {
    match tokio::time::timeout(ARRIVAL_BOUND, stream.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("{what}: stream error {e}"),
        Ok(None) => panic!("{what}: stream ended"),
        Err(_) => panic!("{what}: nothing arrived within {ARRIVAL_BOUND:?}"),
    }
}

/// Acks dead checks until the one of `e` comes; its reason.
async fn dead_reason(
    dead: &mut DeliveryStream<DeadCheck>,
    e: &ExecuteCheck,
    what: &str,
) -> DeadReason {
    loop {
        let d = next(dead, what).await;
        let mine = d.message.execute.id == e.id;
        let reason = d.message.reason.clone();
        d.ack().await.unwrap();
        if mine {
            return reason;
        }
    }
}

/// Whether `stream` yields nothing for a short while (used only to check
/// that something is NOT delivered; a slow backend can only make this pass).
async fn quiet<T>(stream: &mut DeliveryStream<T>) -> bool {
    tokio::time::timeout(Duration::from_millis(500), stream.next())
        .await
        .is_err()
}

/// An execute reaches a consumer of its pool and engine, and only that one.
pub async fn execute_delivered_to_pool_engine(queue: Arc<dyn Queue>) {
    let p = pool();
    let mut http = queue.consume_executes(&p, &["http".into()]).await.unwrap();
    let mut multi = queue
        .consume_executes(&p, &["tcp".into(), "nagios".into()])
        .await
        .unwrap();
    let e = execute(&p, "http", Duration::from_secs(60));
    queue.publish_execute(e.clone()).await.unwrap();
    let d = next(&mut http, "execute for pool/http").await;
    assert_eq!(d.message, e, "the execute arrives unchanged");
    assert!(!d.redelivered, "a first delivery is not a redelivery");
    d.ack().await.unwrap();
    let n = execute(&p, "nagios", Duration::from_secs(60));
    queue.publish_execute(n.clone()).await.unwrap();
    let d = next(&mut multi, "execute for the second engine of a consumer").await;
    assert_eq!(d.message, n);
    d.ack().await.unwrap();
    assert!(
        quiet(&mut http).await,
        "the http consumer got an execute that was not for it"
    );
}

/// Competing consumers of one pool and engine each get distinct executes.
pub async fn competing_consumers_get_distinct_executes(queue: Arc<dyn Queue>) {
    let p = pool();
    let engines = vec!["dummy".to_string()];
    let mut c1 = queue.consume_executes(&p, &engines).await.unwrap();
    let mut c2 = queue.consume_executes(&p, &engines).await.unwrap();
    let n = 20;
    let mut sent = HashSet::new();
    for _ in 0..n {
        let e = execute(&p, "dummy", Duration::from_secs(60));
        sent.insert(e.id);
        queue.publish_execute(e).await.unwrap();
    }
    let mut got = HashSet::new();
    let mut count = 0;
    while count < n {
        let d = tokio::select! {
            d = next(&mut c1, "execute for competing consumer 1") => d,
            d = next(&mut c2, "execute for competing consumer 2") => d,
        };
        assert!(
            got.insert(d.message.id),
            "execute {} delivered twice",
            d.message.id
        );
        d.ack().await.unwrap();
        count += 1;
    }
    assert_eq!(
        got, sent,
        "every execute delivered once across the consumers"
    );
    assert!(
        quiet(&mut c1).await && quiet(&mut c2).await,
        "nothing more after all were acked"
    );
}

/// An execute for a pool and engine nobody serves comes back as Unroutable.
pub async fn unroutable_execute_becomes_dead_check(queue: Arc<dyn Queue>) {
    let mut dead = queue.consume_dead_checks().await.unwrap();
    let e = execute(&pool(), "nobody", Duration::from_secs(60));
    queue.publish_execute(e.clone()).await.unwrap();
    let reason = dead_reason(&mut dead, &e, "dead check for an unroutable execute").await;
    assert_eq!(reason, DeadReason::Unroutable);
}

/// An execute nobody takes within its TTL comes back as Expired.
pub async fn expired_execute_becomes_dead_check(queue: Arc<dyn Queue>) {
    let p = pool();
    // Registered once, so the pair is routable; then gone, so nobody takes
    // the execute (a live broker consumer would be pushed it at once).
    drop(queue.consume_executes(&p, &["slow".into()]).await.unwrap());
    let mut dead = queue.consume_dead_checks().await.unwrap();
    let e = execute(&p, "slow", Duration::from_millis(300));
    queue.publish_execute(e.clone()).await.unwrap();
    let reason = dead_reason(&mut dead, &e, "dead check for an expired execute").await;
    assert_eq!(reason, DeadReason::Expired);
    let r = crate::queue::DeadCheck {
        execute: e,
        reason,
        at: Utc::now(),
    }
    .to_result();
    assert_eq!(
        r.status,
        Status::Timeout,
        "an expired execute becomes TIMEOUT"
    );
}

/// A delivery dropped without ack is redelivered once its stream is gone.
pub async fn unacked_delivery_redelivered(queue: Arc<dyn Queue>) {
    let p = pool();
    let engines = vec!["dummy".to_string()];
    let mut c1 = queue.consume_executes(&p, &engines).await.unwrap();
    let e = execute(&p, "dummy", Duration::from_secs(60));
    queue.publish_execute(e.clone()).await.unwrap();
    let d = next(&mut c1, "first delivery").await;
    assert_eq!(d.message.id, e.id);
    drop(d);
    drop(c1);
    let mut c2 = queue.consume_executes(&p, &engines).await.unwrap();
    let d = next(&mut c2, "redelivery after the consumer went away").await;
    assert_eq!(d.message.id, e.id, "the unacked execute comes again");
    assert!(d.redelivered, "marked as redelivered");
    d.ack().await.unwrap();
    assert!(quiet(&mut c2).await, "an acked execute does not come again");
}

/// `nack(true)` puts a delivery back; it is delivered again.
pub async fn nack_requeue_redelivers(queue: Arc<dyn Queue>) {
    let mut results = queue.consume_results().await.unwrap();
    let r = result(CheckId::random(), Status::Ok, 1);
    queue.publish_result(r.clone()).await.unwrap();
    let d = next(&mut results, "result").await;
    assert_eq!(d.message, r);
    d.nack(true).await.unwrap();
    let d = next(&mut results, "result after nack with requeue").await;
    assert_eq!(d.message, r, "the nacked result comes again");
    assert!(d.redelivered, "marked as redelivered");
    d.ack().await.unwrap();
}

/// One check's results arrive in publish order.
pub async fn results_in_publish_order(queue: Arc<dyn Queue>) {
    let mut results = queue.consume_results().await.unwrap();
    let c = CheckId::random();
    let sent: Vec<_> = (0..30).map(|i| result(c, Status::Ok, i)).collect();
    for r in &sent {
        queue.publish_result(r.clone()).await.unwrap();
    }
    for (i, r) in sent.iter().enumerate() {
        let d = next(&mut results, "result in order").await;
        assert_eq!(d.message.id, r.id, "result {i} out of order");
        d.ack().await.unwrap();
    }
}

/// Results go to one active consumer; the next takes over when it goes away.
pub async fn single_active_result_consumer_failover(queue: Arc<dyn Queue>) {
    let mut first = queue.consume_results().await.unwrap();
    let c = CheckId::random();
    let r1 = result(c, Status::Ok, 1);
    queue.publish_result(r1.clone()).await.unwrap();
    let d = next(&mut first, "result for the active consumer").await;
    assert_eq!(d.message, r1);
    d.ack().await.unwrap();
    let mut second = queue.consume_results().await.unwrap();
    let r2 = result(c, Status::Ok, 2);
    queue.publish_result(r2.clone()).await.unwrap();
    let d = next(&mut first, "result while the first consumer is active").await;
    assert_eq!(d.message, r2, "the active consumer keeps getting results");
    d.ack().await.unwrap();
    assert!(quiet(&mut second).await, "a standby consumer got a result");
    drop(first);
    let r3 = result(c, Status::Ok, 3);
    queue.publish_result(r3.clone()).await.unwrap();
    let d = next(&mut second, "result after failover").await;
    assert_eq!(d.message, r3, "the standby takes over");
    d.ack().await.unwrap();
}

/// Every subscriber gets every update published after it subscribed.
pub async fn updates_fan_out(queue: Arc<dyn Queue>) {
    let mut a = queue.subscribe_updates().await.unwrap();
    let mut b = queue.subscribe_updates().await.unwrap();
    let updates: Vec<Update> = (0..5)
        .map(|i| {
            Update::Alert(AlertUpdate {
                check_id: CheckId::random(),
                alert_id: Uuid::new_v4(),
                event: Event::Alert,
                status: Status::Critical,
                output: format!("update {i}").into(),
                at: Utc::now(),
            })
        })
        .collect();
    for u in &updates {
        queue.publish_update(u.clone()).await.unwrap();
    }
    for (name, sub) in [("first", &mut a), ("second", &mut b)] {
        for u in &updates {
            let got = tokio::time::timeout(ARRIVAL_BOUND, sub.next())
                .await
                .unwrap_or_else(|_| panic!("{name} subscriber: no update within {ARRIVAL_BOUND:?}"))
                .unwrap_or_else(|| panic!("{name} subscriber: stream ended"))
                .unwrap();
            assert_eq!(&got, u, "{name} subscriber: updates in publish order");
        }
    }
}

/// Scheduler control messages reach the control consumer.
pub async fn control_messages_delivered(queue: Arc<dyn Queue>) {
    let mut control = queue.consume_control().await.unwrap();
    let c = CheckId::random();
    let sent = vec![
        SchedulerControl::Reschedule {
            check_id: c,
            interval: Duration::from_secs(60),
        },
        SchedulerControl::ExecuteNow { check_id: c },
        SchedulerControl::Disable { check_id: c },
        SchedulerControl::Enable { check_id: c },
    ];
    for m in &sent {
        queue.publish_control(m.clone()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let d = next(&mut control, "control message").await;
        // Other cases' messages may share the channel on a shared broker.
        let mine = match &d.message {
            SchedulerControl::Reschedule { check_id, .. }
            | SchedulerControl::ExecuteNow { check_id }
            | SchedulerControl::Enable { check_id }
            | SchedulerControl::Disable { check_id } => *check_id == c,
        };
        if mine {
            got.push(d.message.clone());
        }
        d.ack().await.unwrap();
    }
    assert_eq!(got, sent, "control messages arrive, in order");
}

/// Every message kind survives JSON with its `type` field.
pub async fn message_json_round_trip(_queue: Arc<dyn Queue>) {
    let c = CheckId::random();
    let e = execute("p", "dummy", Duration::from_millis(1500));
    let messages = [
        Message::ExecuteCheck(e.clone()),
        Message::CheckResult(result(c, Status::Warning, 3)),
        Message::DeadCheck(crate::queue::DeadCheck {
            execute: e,
            reason: DeadReason::Rejected {
                reason: "bad".into(),
            },
            at: Utc::now(),
        }),
        Message::SchedulerControl(SchedulerControl::Reschedule {
            check_id: c,
            interval: Duration::from_millis(2500),
        }),
        Message::Update(Update::Alert(AlertUpdate {
            check_id: c,
            alert_id: Uuid::new_v4(),
            event: Event::Recovery,
            status: Status::Ok,
            output: "fine".into(),
            at: Utc::now(),
        })),
    ];
    let types = [
        "execute_check",
        "check_result",
        "dead_check",
        "scheduler_control",
        "update",
    ];
    for (m, ty) in messages.iter().zip(types) {
        let bytes = m.encode().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], ty, "the type field of {m:?}");
        assert_eq!(&Message::decode(&bytes).unwrap(), m, "round trip of {ty}");
    }
    let bad = Message::decode(br#"{"type":"nope"}"#);
    assert!(
        matches!(bad, Err(crate::Error::Decode(_))),
        "an unknown type is a Decode error"
    );
}
