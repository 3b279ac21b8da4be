//! The roles one `bergamotd` process can play, and the queue wrapper that
//! feeds their counters into `/metrics`.
//!
//! On the embedded backends every role runs in one process; with a shared
//! store and queue (PostgreSQL, RabbitMQ) each role can run alone
//! (`bergamotd scheduler | worker | processor | web | notifier`).

use crate::web::metrics::Metrics;
use async_trait::async_trait;
use bergamot_core::model::CheckResult;
use bergamot_core::queue::{
    DeadCheck, DeliveryStream, ExecuteCheck, Queue, SchedulerControl, Update,
};
use bergamot_core::Result;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub mod notifier;

/// Which roles run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Publishes executes as the schedule says.
    pub scheduler: bool,
    /// Runs checks.
    pub worker: bool,
    /// Applies results, publishes updates.
    pub processor: bool,
    /// REST API, websocket, UI.
    pub web: bool,
    /// Plans and sends notifications.
    pub notifier: bool,
}

impl Roles {
    /// Every role.
    pub fn all() -> Self {
        Roles {
            scheduler: true,
            worker: true,
            processor: true,
            web: true,
            notifier: true,
        }
    }

    /// No role.
    pub fn none() -> Self {
        Roles {
            scheduler: false,
            worker: false,
            processor: false,
            web: false,
            notifier: false,
        }
    }
}

impl Roles {
    /// Exactly one role, by name (`scheduler`, `worker`, `processor`,
    /// `web`, `notifier`); an unknown name gives no role.
    pub fn only(role: &str) -> Self {
        role.parse().unwrap_or_else(|_| Roles::none())
    }
}

impl std::fmt::Display for Roles {
    /// Comma-separated role names, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.scheduler, "scheduler"),
            (self.worker, "worker"),
            (self.processor, "processor"),
            (self.web, "web"),
            (self.notifier, "notifier"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl FromStr for Roles {
    type Err = String;

    /// Parses a comma-separated list: `scheduler,worker,processor,web,notifier` or `all`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut r = Roles::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => r = Roles::all(),
                "scheduler" => r.scheduler = true,
                "worker" => r.worker = true,
                "processor" => r.processor = true,
                "web" => r.web = true,
                "notifier" => r.notifier = true,
                other => {
                    return Err(format!(
                        "unknown role {other:?} (expected scheduler, worker, processor, web, notifier or all)"
                    ))
                }
            }
        }
        Ok(r)
    }
}

/// A [`Queue`] that counts what flows through it into [`Metrics`].
pub struct MeteredQueue {
    inner: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
}

impl MeteredQueue {
    /// Wraps a queue.
    pub fn new(inner: Arc<dyn Queue>, metrics: Arc<Metrics>) -> Self {
        MeteredQueue { inner, metrics }
    }
}

#[async_trait]
impl Queue for MeteredQueue {
    async fn publish_execute(&self, execute: ExecuteCheck) -> Result<()> {
        self.inner.publish_execute(execute).await
    }
    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> Result<DeliveryStream<ExecuteCheck>> {
        // Every execute a worker of this node takes: counted, and its lag
        // from the scheduler sending it (clock skew between nodes clamps
        // to zero).
        let metrics = self.metrics.clone();
        let s = self.inner.consume_executes(pool, engines).await?;
        Ok(s.inspect(move |d| {
            if let Ok(d) = d {
                let lag = (chrono::Utc::now() - d.message.scheduled_at)
                    .to_std()
                    .unwrap_or_default();
                metrics.observe_scheduler_lag(lag);
            }
        })
        .boxed())
    }
    async fn consume_dead_checks(&self) -> Result<DeliveryStream<DeadCheck>> {
        self.inner.consume_dead_checks().await
    }
    async fn publish_result(&self, result: CheckResult) -> Result<()> {
        self.inner.publish_result(result).await?;
        self.metrics
            .results_published
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn consume_results(&self) -> Result<DeliveryStream<CheckResult>> {
        let metrics = self.metrics.clone();
        let s = self.inner.consume_results().await?;
        Ok(s.inspect(move |d| {
            if d.is_ok() {
                metrics.results_processed.fetch_add(1, Ordering::Relaxed);
            }
        })
        .boxed())
    }
    async fn publish_update(&self, update: Update) -> Result<()> {
        let transition = matches!(update, Update::Check(_));
        self.inner.publish_update(update).await?;
        if transition {
            self.metrics.transitions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    async fn subscribe_updates(&self) -> Result<BoxStream<'static, Result<Update>>> {
        self.inner.subscribe_updates().await
    }
    async fn publish_control(&self, control: SchedulerControl) -> Result<()> {
        self.inner.publish_control(control).await
    }
    async fn consume_control(&self) -> Result<DeliveryStream<SchedulerControl>> {
        self.inner.consume_control().await
    }
}
