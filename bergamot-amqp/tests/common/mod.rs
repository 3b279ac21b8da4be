//! Shared helpers of the integration tests: broker URL, random prefixes.
#![allow(dead_code)]

use bergamot_amqp::{AmqpConfig, AmqpQueue};
use bergamot_core::model::CheckId;
use bergamot_core::queue::ExecuteCheck;
use chrono::Utc;
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

/// Generous bound for waits that must finish (not a timing assertion: it
/// only turns a hang into a failure).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test with `what` if it hangs.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
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
