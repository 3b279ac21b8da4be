//! Bergamot core: the check model, the state machine, configuration,
//! scheduling, executors, and the [`Queue`](queue::Queue) and
//! [`Store`](store::Store) traits with in-memory backends.
//!
//! # Example: embedded, in memory
//!
//! A model built in code, the in-memory store and queue, and a
//! [`Processor`](processor::Processor) that applies a pushed result and
//! publishes what changed:
//!
//! ```
//! use bergamot_core::model::{Check, CheckResult, Group, GroupId, Model, Policy, Status};
//! use bergamot_core::processor::Processor;
//! use bergamot_core::queue::{InMemoryQueue, Queue, Update};
//! use bergamot_core::store::{InMemoryStore, Store};
//! use futures::StreamExt;
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> bergamot_core::Result<()> {
//! let group = GroupId::named("site", "web");
//! let host = Check::host("site", "web1")
//!     .policy(Policy::builder().failed_after(1).build())
//!     .group(group)
//!     .build();
//! let model = Model {
//!     site: "site".into(),
//!     checks: vec![host.clone()],
//!     groups: vec![Group { id: group, name: "web".into(), parents: vec![] }],
//!     locations: vec![],
//! };
//!
//! let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
//! let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
//! store.sync_config(&model).await?;
//! let mut updates = queue.subscribe_updates().await?;
//! let processor = Processor::new(store.clone(), queue.clone());
//!
//! let now = chrono::Utc::now();
//! let result = CheckResult::new(host.id, Status::Critical, "no route to host", now);
//! let t = processor.handle_result(&result, now).await?;
//! assert!(t.state.hard && t.state.current_alert.is_some(), "alerts at once (failed_after = 1)");
//!
//! assert_eq!(store.group_states(None).await?[0].aggregate.status, Status::Critical);
//! match updates.next().await {
//!     Some(Ok(Update::Check(u))) => assert_eq!(u.state.status, Status::Critical),
//!     other => panic!("expected the check update first, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! In production the same processor runs [`Processor::run`](processor::Processor::run)
//! over `Arc<dyn Store>` / `Arc<dyn Queue>` backed by PostgreSQL and RabbitMQ
//! (crates `bergamot-store`, `bergamot-amqp`); backends prove they honour the
//! contracts with the conformance suites (feature `conformance`).

#![warn(unreachable_pub)]

pub mod aggregate;
pub mod backend;
mod builder;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
pub mod exec;
pub mod freshness;
pub mod model;
pub mod notify;
pub mod processor;
pub mod queue;
pub mod redact;
pub mod schedule;
pub mod state;
pub mod store;

pub use error::{ConfigErrors, ConfigProblem, Error, Result};
