//! What a backend needs and an embedder does not: the pieces for
//! implementing a [`Store`](crate::store::Store) or a
//! [`Queue`](crate::queue::Queue) (or a processor over them) beyond the
//! traits themselves.
//!
//! - [`Acker`]: acknowledges one [`Delivery`](crate::queue::Delivery); each
//!   queue backend implements it.
//! - [`GraphIndex`] and [`Contribution`]: the group graph and location tree
//!   indexed once, and what one check adds to an aggregate, for a store that
//!   keeps aggregates up to date incrementally.
//! - [`Decision`]: what [`transition_in_place`](crate::state::transition_in_place)
//!   returns, for a store that applies transitions on states it holds.

use crate::error::Result;
use crate::state::{Event, Outcome};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use crate::aggregate::index::{Contribution, GraphIndex};

/// Acknowledges or rejects one delivery (implemented by each backend).
#[async_trait]
pub trait Acker: Send + Sync {
    /// The effect of the message is durable: never deliver it again.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// The message could not be handled: requeue it (`requeue`) or drop /
    /// dead-letter it.
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;
    /// The message can never be handled (retrying cannot help): move it
    /// out of the way with the reason, where an operator can inspect it
    /// (the AMQP backend publishes it to `<prefix>.poison` with the reason
    /// in a header), and never deliver it again. The default drops it
    /// (`nack` without requeue).
    async fn poison(self: Box<Self>, reason: String) -> Result<()> {
        let _ = reason;
        self.nack(false).await
    }
}

/// The decision of [`transition_in_place`](crate::state::transition_in_place): a [`Transition`](crate::state::Transition) without the
/// state, which the caller holds, already updated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What happened.
    pub outcome: Outcome,
    /// Events, in order.
    pub events: Vec<Event>,
    /// The interval to schedule the next execution at.
    #[serde(with = "crate::model::secs_serde")]
    pub next_interval: Duration,
    /// As [`Transition::interval_changed`](crate::state::Transition::interval_changed).
    #[serde(default)]
    pub interval_changed: bool,
    /// As [`Transition::contribution_changed`](crate::state::Transition::contribution_changed).
    #[serde(default)]
    pub contribution_changed: bool,
    /// As [`Transition::closed_alert`](crate::state::Transition::closed_alert).
    #[serde(default)]
    pub closed_alert: Option<uuid::Uuid>,
}

impl Decision {
    /// Whether the state changed (and must be saved and published).
    pub fn is_applied(&self) -> bool {
        self.outcome == Outcome::Applied
    }
}
