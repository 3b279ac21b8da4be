//! Bergamot's [`Queue`](bergamot_core::queue::Queue) over RabbitMQ.
//!
//! ```no_run
//! use bergamot_amqp::{AmqpConfig, AmqpQueue};
//! use bergamot_core::model::{CheckId, CheckResult, Status};
//! use bergamot_core::queue::Queue;
//! use futures::StreamExt;
//!
//! # async fn run() -> bergamot_core::Result<()> {
//! let config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f").with_prefix("bergamot");
//! let queue = AmqpQueue::connect(config).await?;
//!
//! // A processor: one active consumer per processing pool, ack after commit.
//! let mut results = queue.consume_results().await?;
//! queue
//!     .publish_result(CheckResult::new(CheckId::random(), Status::Ok, "fine", chrono::Utc::now()))
//!     .await?; // returns once the broker confirmed it
//! if let Some(delivery) = results.next().await {
//!     let delivery = delivery?;
//!     // ... apply delivery.message durably, then:
//!     delivery.ack().await?;
//! }
//! queue.close().await
//! # }
//! ```
//!
//! # How it works
//!
//! - amiquip blocks, so one thread owns each connection and all its
//!   channels; async callers talk to it over channels. No amiquip type
//!   leaves this crate.
//! - The TCP stream is opened here with `TCP_NODELAY` (a confirmed publish
//!   otherwise waits ~40 ms on delayed ACKs).
//! - Every publish waits for its publisher confirm. Items published to the
//!   same routing key travel together (wire v2): one AMQP message and one
//!   confirm for up to [`AmqpConfig::batch_max`] items, collected while
//!   the key's previous message is in flight (a lone item goes at once).
//!   Consumers split a message into one delivery per item and ack the
//!   message once every item is settled; they read v1 and v2.
//! - Deliveries are acked manually, through the connection thread, when the
//!   caller acks the [`Delivery`](bergamot_core::queue::Delivery); a delivery
//!   dropped unacked is requeued. Prefetch is bounded per stream.
//! - Executes are routed into per-TTL-class queues so a long TTL cannot hold
//!   a short one back at the queue head; an execute that expires while it
//!   waits in a worker's prefetch buffer is dead-lettered by the connection
//!   thread and never handed to the worker.
//! - Undecodable messages go to `<prefix>.poison` with the reason in a header.
//! - Heartbeats; on a lost connection, unconfirmed publishes fail with an
//!   error (publish again), unacked deliveries go back to the broker, and the
//!   thread reconnects with backoff (capped, default 2 s), redeclares the
//!   topology and restarts the consumers.
//!
//! The exchanges and queues, the TTL design and the reconnect behaviour are
//! described in `docs/amqp-topology.md`.

#![warn(unreachable_pub)]

mod codec;
mod config;
mod conn;
mod error;
mod queue;
mod topology;

pub use codec::{
    CONTENT_TYPE_V1, CONTENT_TYPE_V2, POISON_QUEUE_HEADER, POISON_REASON_HEADER, WIRE_VERSION,
};
pub use config::AmqpConfig;
pub use error::AmqpError;
pub use queue::AmqpQueue;
pub use topology::result_pool;
