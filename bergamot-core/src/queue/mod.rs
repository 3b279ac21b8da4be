//! The `Queue` trait: every arrow of the check flow, and its in-memory backend.
//!
//! # Contract
//!
//! - Messages are serde JSON on the wire with a `type` field ([`Message`]).
//! - Delivery is at least once. Consumers ack a [`Delivery`] after its effect is
//!   durable (processor: after commit; worker: after its result is published
//!   and confirmed). A delivery dropped without ack or nack is redelivered.
//! - [`ExecuteCheck`] carries a TTL. An execute that no worker takes before its
//!   TTL, or that no worker pool/engine can route, comes back as a [`DeadCheck`]
//!   on [`Queue::consume_dead_checks`]; nothing is silently lost.
//! - Results are partitioned into processing pools by check id; each pool is
//!   consumed by one consumer at a time, so one check's results arrive in order.
//! - Updates fan out to every subscriber of [`Queue::subscribe_updates`].
//!   They are not acked and not kept: a subscriber that falls behind by more
//!   than its buffer ([`DEFAULT_UPDATE_CAPACITY`] by default; AMQP:
//!   `AmqpConfig::update_buffer`) loses the *oldest* updates (logged), never
//!   the newest, and no backend grows memory without limit for it. A lost
//!   check update is repaired by the check's next one (it carries the whole
//!   state); a subscriber that must not miss anything reads the store.
//! - Every other consumer stream holds at most its prefetch window of
//!   unacked deliveries; the broker keeps the rest.
//! - Scheduler control messages reach the scheduler(s) on [`Queue::consume_control`].

mod memory;
mod messages;

pub use memory::{InMemoryQueue, DEFAULT_UPDATE_CAPACITY};
pub use messages::{
    AlertUpdate, CheckUpdate, DeadCheck, DeadReason, ExecuteCheck, GroupUpdate, Heartbeat,
    LocationUpdate, Message, SchedulerControl, Update,
};

pub(crate) use crate::backend::Acker;
use crate::error::Result;
use crate::model::CheckResult;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;

/// One message taken from a queue, to be acked once its effect is durable.
pub struct Delivery<T> {
    /// The message.
    pub message: T,
    /// Whether the broker delivered it before (a redelivery).
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl<T> Delivery<T> {
    /// Wraps a message and its acker (for backend implementations).
    pub fn new(message: T, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            redelivered,
            acker,
        }
    }

    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Rejects the delivery.
    pub async fn nack(self, requeue: bool) -> Result<()> {
        self.acker.nack(requeue).await
    }

    /// Moves the delivery to the poison queue with `reason` (see
    /// [`Acker::poison`]).
    pub async fn poison(self, reason: String) -> Result<()> {
        self.acker.poison(reason).await
    }

    /// Splits into message and acker, e.g. to ack after moving the message on.
    pub fn into_parts(self) -> (T, Box<dyn Acker>) {
        (self.message, self.acker)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// A stream of deliveries.
pub type DeliveryStream<T> = BoxStream<'static, Result<Delivery<T>>>;

/// The message transport between scheduler, workers, processors and web nodes.
///
/// Used as `Arc<dyn Queue>`; see the module docs for the contract.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Publishes an execute to the workers of its pool and engine.
    /// Returns once the queue has taken it (broker confirm).
    async fn publish_execute(&self, execute: ExecuteCheck) -> Result<()>;

    /// Consumes executes for a worker of `pool` serving `engines`.
    /// Several consumers of one pool and engine compete for the work.
    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> Result<DeliveryStream<ExecuteCheck>>;

    /// Consumes executes that expired or could not be routed.
    async fn consume_dead_checks(&self) -> Result<DeliveryStream<DeadCheck>>;

    /// Publishes a result into its processing pool. Returns once confirmed.
    async fn publish_result(&self, result: CheckResult) -> Result<()>;

    /// Consumes results; each processing pool has one active consumer at a time.
    async fn consume_results(&self) -> Result<DeliveryStream<CheckResult>>;

    /// Publishes an update to every subscriber.
    async fn publish_update(&self, update: Update) -> Result<()>;

    /// Subscribes to every update published from now on.
    async fn subscribe_updates(&self) -> Result<BoxStream<'static, Result<Update>>>;

    /// Publishes a scheduler control message (reschedule, execute-now, enable, disable).
    async fn publish_control(&self, control: SchedulerControl) -> Result<()>;

    /// Consumes scheduler control messages.
    async fn consume_control(&self) -> Result<DeliveryStream<SchedulerControl>>;
}

#[async_trait]
impl<Q: Queue + ?Sized> Queue for Arc<Q> {
    async fn publish_execute(&self, execute: ExecuteCheck) -> Result<()> {
        (**self).publish_execute(execute).await
    }
    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> Result<DeliveryStream<ExecuteCheck>> {
        (**self).consume_executes(pool, engines).await
    }
    async fn consume_dead_checks(&self) -> Result<DeliveryStream<DeadCheck>> {
        (**self).consume_dead_checks().await
    }
    async fn publish_result(&self, result: CheckResult) -> Result<()> {
        (**self).publish_result(result).await
    }
    async fn consume_results(&self) -> Result<DeliveryStream<CheckResult>> {
        (**self).consume_results().await
    }
    async fn publish_update(&self, update: Update) -> Result<()> {
        (**self).publish_update(update).await
    }
    async fn subscribe_updates(&self) -> Result<BoxStream<'static, Result<Update>>> {
        (**self).subscribe_updates().await
    }
    async fn publish_control(&self, control: SchedulerControl) -> Result<()> {
        (**self).publish_control(control).await
    }
    async fn consume_control(&self) -> Result<DeliveryStream<SchedulerControl>> {
        (**self).consume_control().await
    }
}
