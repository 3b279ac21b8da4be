//! Shared helpers of the integration tests: broker URL, random prefixes.
#![allow(dead_code)]

use amiquip::{Channel, Connection};
use bergamot_amqp::{AmqpConfig, AmqpQueue};
use bergamot_core::model::CheckId;
use bergamot_core::queue::{DeadCheck, Delivery, DeliveryStream, ExecuteCheck, Queue};
use chrono::Utc;
use futures::StreamExt;
use std::time::Duration;
use uuid::Uuid;

/// The broker URL, or `None` (after saying so) when the test should skip.
/// With `BERGAMOT_REQUIRE_SERVICES=1` a missing URL fails the test.
pub fn amqp_url(test: &str) -> Option<String> {
    bergamot_testkit::require_env("BERGAMOT_TEST_AMQP_URL", test)
}

/// A random name prefix so that parallel tests never share a queue.
pub fn random_prefix() -> String {
    format!("bt{}", uuid::Uuid::new_v4().simple())
}

/// A config with a random prefix that deletes its topology on close.
pub fn config(url: &str) -> AmqpConfig {
    AmqpConfig::new(url)
        .with_prefix(random_prefix())
        .with_result_pools(4)
        .with_delete_topology_on_close(true)
}

/// Connects with `config`.
pub async fn connect(config: AmqpConfig) -> AmqpQueue {
    AmqpQueue::connect(config)
        .await
        .expect("connect to RabbitMQ")
}

/// Connects with [`config`], then consumes the dead checks and, as a
/// worker of pool `p1`, the executes of `engine`.
pub async fn with_worker(
    url: &str,
    engine: &str,
) -> (
    AmqpQueue,
    DeliveryStream<DeadCheck>,
    DeliveryStream<ExecuteCheck>,
) {
    let q = connect(config(url)).await;
    let dead = q.consume_dead_checks().await.expect("consume dead checks");
    let worker = q
        .consume_executes("p1", &[engine.to_string()])
        .await
        .expect("consume executes");
    (q, dead, worker)
}

/// Generous bound for waits that must finish (not a timing assertion: it
/// only turns a hang into a failure).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test with `what` if it hangs.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next delivery of `stream`; fails the test naming `what` if none
/// comes, the stream ends or it yields an error.
pub async fn next<T>(stream: &mut DeliveryStream<T>, what: &str) -> Delivery<T> {
    within(what, stream.next())
        .await
        .unwrap_or_else(|| panic!("{what}: the stream ended"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Whether `stream` yields nothing for `d`: proves that something is NOT
/// delivered, so the wait is the assertion itself.
pub async fn quiet<T>(stream: &mut DeliveryStream<T>, d: Duration) -> bool {
    tokio::time::timeout(d, stream.next()).await.is_err()
}

/// A plain amiquip connection and a channel on it, for raw publishes and
/// for looking at queues.
pub fn raw_channel(url: &str) -> (Connection, Channel) {
    let mut conn = Connection::insecure_open(url).expect("raw connection");
    let ch = conn.open_channel(None).expect("raw channel");
    (conn, ch)
}

/// Waits until `queue` holds `n` messages (the broker counts published,
/// undelivered ones).
pub async fn wait_count(ch: &Channel, queue: &str, n: u32) {
    bergamot_testkit::wait_until(&format!("{n} messages in {queue}"), PATIENCE, || async {
        let declared = ch.queue_declare_passive(queue).expect("the queue");
        declared.declared_message_count() == Some(n)
    })
    .await;
}

/// An execute for `pool` and `engine` on site `site1`.
pub fn execute(pool: &str, engine: &str, ttl: Duration) -> ExecuteCheck {
    ExecuteCheck {
        id: Uuid::new_v4(),
        check_id: CheckId::random(),
        site: "site1".into(),
        pool: pool.into(),
        engine: engine.into(),
        params: Default::default(),
        timeout: Duration::from_secs(10),
        ttl,
        scheduled_at: Utc::now(),
        execute_now: false,
    }
}
