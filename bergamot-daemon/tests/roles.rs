//! How the roles of one node live and stop: a role that ends before
//! shutdown fails the node; shutdown drains (a check running at shutdown
//! has its result applied before the node stops).

mod common;

use async_trait::async_trait;
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::queue::{
    DeadCheck, DeliveryStream, ExecuteCheck, InMemoryQueue, Queue, SchedulerControl, Update,
};
use bergamot_daemon::{Backends, Options, Roles};
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The in-memory queue, except that its update stream ends at once (a
/// broker cancelling the web node's subscription).
struct EndingUpdates(InMemoryQueue);

#[async_trait]
impl Queue for EndingUpdates {
    async fn publish_execute(&self, execute: ExecuteCheck) -> bergamot_core::Result<()> {
        self.0.publish_execute(execute).await
    }
    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> bergamot_core::Result<DeliveryStream<ExecuteCheck>> {
        self.0.consume_executes(pool, engines).await
    }
    async fn consume_dead_checks(&self) -> bergamot_core::Result<DeliveryStream<DeadCheck>> {
        self.0.consume_dead_checks().await
    }
    async fn publish_result(&self, result: CheckResult) -> bergamot_core::Result<()> {
        self.0.publish_result(result).await
    }
    async fn consume_results(&self) -> bergamot_core::Result<DeliveryStream<CheckResult>> {
        self.0.consume_results().await
    }
    async fn publish_update(&self, update: Update) -> bergamot_core::Result<()> {
        self.0.publish_update(update).await
    }
    async fn subscribe_updates(
        &self,
    ) -> bergamot_core::Result<BoxStream<'static, bergamot_core::Result<Update>>> {
        Ok(futures::stream::empty().boxed())
    }
    async fn publish_control(&self, control: SchedulerControl) -> bergamot_core::Result<()> {
        self.0.publish_control(control).await
    }
    async fn consume_control(&self) -> bergamot_core::Result<DeliveryStream<SchedulerControl>> {
        self.0.consume_control().await
    }
}

#[tokio::test]
async fn a_hub_whose_update_stream_ends_fails_the_node() {
    let config = common::one_service_config("r");
    let backends = Backends {
        queue: Arc::new(EndingUpdates(InMemoryQueue::new())),
        ..Backends::in_memory()
    };
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        roles: Roles::only("web"),
        ..Options::default()
    };
    // Never shut down (`_stop` lives to the end): only the failing role may
    // stop the node.
    let (running, _stop) = common::start_in_process(config.model, backends, options).await;
    let done = tokio::time::timeout(Duration::from_secs(30), running.done)
        .await
        .expect("the node stops on its own");
    let err = done.expect_err("the node fails");
    assert!(err.to_string().contains("update stream ended"), "{err}");
}

/// A check still running when shutdown starts: the worker finishes it and
/// the processor of the same node applies its result before it stops.
#[tokio::test]
async fn shutdown_applies_the_result_of_a_check_in_flight() {
    let config = common::one_service_config("r");
    let check = CheckId::service("r", "h", "cpu");
    let backends = Backends::in_memory();
    let (store, queue) = (backends.store.clone(), backends.queue.clone());
    let options = Options {
        roles: "worker,processor".parse().expect("roles"),
        ..Options::default()
    };
    let (running, stop) = common::start_in_process(config.model, backends, options).await;
    let metrics = running.metrics.clone();
    // Send until the worker takes one (executes before it consumes are
    // unroutable); that one runs for a second.
    bergamot_testkit::wait_until("an execute taken", Duration::from_secs(30), || async {
        if metrics.executes_taken.load(Ordering::Relaxed) > 0 {
            return true;
        }
        queue
            .publish_execute(ExecuteCheck {
                id: uuid::Uuid::new_v4(),
                check_id: check,
                site: "r".into(),
                pool: "default".into(),
                engine: "nagios".into(),
                params: [(
                    "command".to_string(),
                    serde_json::json!(["/bin/sh", "-c", "sleep 1; echo 'IN FLIGHT OK'"]),
                )]
                .into(),
                timeout: Duration::from_secs(20),
                ttl: Duration::from_secs(60),
                scheduled_at: chrono::Utc::now(),
                execute_now: false,
            })
            .await
            .expect("publish");
        false
    })
    .await;
    common::stop(running, stop).await;
    let s = store.state(check).await.expect("state");
    assert_eq!(s.status, Status::Ok, "{s:?}");
    assert_eq!(&*s.output, "IN FLIGHT OK");
}
