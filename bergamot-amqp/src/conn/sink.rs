//! Where a consumer's items go: one generic stream per message type (the
//! [`Item`] conversion is the only per-type code), and the update fan-out.

use crate::error::AmqpError;
use amiquip::FieldTable;
use bergamot_core::backend::Acker;
use bergamot_core::model::CheckResult;
use bergamot_core::queue::{DeadCheck, Delivery, ExecuteCheck, Message, SchedulerControl, Update};
use chrono::Utc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One item of an update stream: an update, or why the stream failed.
pub(crate) type UpdateItem = std::result::Result<Update, String>;

/// Where a stream's deliveries go, each with its [`Claim`].
pub(crate) type Tx<T> = mpsc::UnboundedSender<(Claim, bergamot_core::Result<Delivery<T>>)>;

/// Who gets a delivered item: the caller that takes it from the stream, or
/// the connection thread that dead-letters it as expired when its TTL runs
/// out first (the broker only expires messages still in the queue, not ones
/// already pushed to a consumer's prefetch buffer). Only executes expire;
/// every other item is always taken.
#[derive(Clone, Default)]
pub(crate) struct Claim(Arc<AtomicU8>);

const UNCLAIMED: u8 = 0;
const TAKEN: u8 = 1;
const EXPIRED: u8 = 2;

impl Claim {
    /// The caller takes it; false if it already expired.
    pub(crate) fn take(&self) -> bool {
        self.0
            .compare_exchange(UNCLAIMED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The connection thread takes it; false if the caller was first.
    pub(super) fn expire(&self) -> bool {
        self.0
            .compare_exchange(UNCLAIMED, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A message type a consumer stream carries, converted from the wire.
pub(crate) trait Item: Sized + Send + 'static {
    /// The wire `type` expected, for error texts.
    const EXPECTED: &'static str;
    /// The item, or the message back when it is of another type. `headers`
    /// are the AMQP message's (a dead check's reason is in them).
    fn from_message(m: Message, headers: Option<&FieldTable>) -> Result<Self, Box<Message>>;
    /// When the connection thread must take the item back if the caller has
    /// not taken it from the stream (executes: `scheduled_at + ttl`).
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// An [`Item`] that is one variant of [`Message`].
macro_rules! variant_item {
    ($t:ty, $variant:ident, $expected:literal $(, $deadline:item)?) => {
        impl Item for $t {
            const EXPECTED: &'static str = $expected;
            fn from_message(m: Message, _: Option<&FieldTable>) -> Result<Self, Box<Message>> {
                match m {
                    Message::$variant(x) => Ok(x),
                    other => Err(Box::new(other)),
                }
            }
            $($deadline)?
        }
    };
}

variant_item!(
    ExecuteCheck,
    ExecuteCheck,
    "execute_check",
    fn deadline(&self) -> Option<Instant> {
        let left = (self.scheduled_at + self.ttl)
            .signed_duration_since(Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Some(Instant::now() + left)
    }
);
variant_item!(CheckResult, CheckResult, "check_result");
variant_item!(SchedulerControl, SchedulerControl, "scheduler_control");

/// A dead check: a dead-lettered or unroutable execute (its reason from the
/// headers), or one published as a dead check.
impl Item for DeadCheck {
    const EXPECTED: &'static str = "execute_check";
    fn from_message(m: Message, headers: Option<&FieldTable>) -> Result<Self, Box<Message>> {
        match m {
            Message::ExecuteCheck(execute) => Ok(DeadCheck {
                execute,
                reason: crate::codec::dead_reason(headers),
                at: Utc::now(),
            }),
            Message::DeadCheck(d) => Ok(d),
            other => Err(Box::new(other)),
        }
    }
}

/// What became of one decoded item handed to a [`Sink`].
pub(crate) enum Handed {
    /// The stream has it; the thread takes it back at `deadline` unless
    /// the caller claimed it first.
    Taken {
        claim: Claim,
        deadline: Option<Instant>,
    },
    /// Not this stream's type: poison it with the reason.
    Wrong {
        reason: String,
        message: Box<Message>,
    },
    /// The stream is gone.
    Closed,
}

impl Handed {
    /// `message` is not the `expected` type.
    fn wrong(expected: &str, message: Box<Message>) -> Handed {
        Handed::Wrong {
            reason: format!(
                "expected {expected}, got {}",
                crate::codec::type_name(&message)
            ),
            message,
        }
    }
}

/// A consumer's destination, the same for every message type.
pub(crate) trait Sink: Send {
    /// The caller dropped the stream.
    fn is_closed(&self) -> bool;
    /// Tells the caller the stream failed.
    fn fail(&self, e: AmqpError);
    /// Whether deliveries are acked (false: update fan-out, no acks).
    fn acked(&self) -> bool {
        true
    }
    /// Hands one decoded item over, with its acker (`None` when not
    /// [`acked`](Self::acked)).
    fn hand(
        &self,
        message: Message,
        headers: Option<&FieldTable>,
        redelivered: bool,
        acker: Option<Box<dyn Acker>>,
    ) -> Handed;
}

/// A stream of deliveries of `T`.
pub(crate) struct Stream<T>(pub(crate) Tx<T>);

impl<T: Item> Sink for Stream<T> {
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn fail(&self, e: AmqpError) {
        self.0.send((Claim::default(), Err(e.into()))).ok();
    }
    fn hand(
        &self,
        message: Message,
        headers: Option<&FieldTable>,
        redelivered: bool,
        acker: Option<Box<dyn Acker>>,
    ) -> Handed {
        let Some(acker) = acker else {
            return Handed::Closed;
        };
        match T::from_message(message, headers) {
            Ok(item) => {
                let claim = Claim::default();
                let deadline = item.deadline();
                let delivery = Delivery::new(item, redelivered, acker);
                match self.0.send((claim.clone(), Ok(delivery))) {
                    Ok(()) => Handed::Taken { claim, deadline },
                    Err(_) => Handed::Closed,
                }
            }
            Err(other) => Handed::wrong(T::EXPECTED, other),
        }
    }
}

/// The update fan-out: bounded, dropping the oldest for a slow subscriber
/// (update queues are consumed without acks, so nothing else bounds them).
/// A batch of updates is decoded once and each update moved, not copied,
/// into the channel.
pub(crate) struct Updates(pub(crate) tokio::sync::broadcast::Sender<UpdateItem>);

impl Sink for Updates {
    fn is_closed(&self) -> bool {
        self.0.receiver_count() == 0
    }
    fn fail(&self, e: AmqpError) {
        self.0
            .send(Err(bergamot_core::Error::from(e).to_string()))
            .ok();
    }
    fn acked(&self) -> bool {
        false
    }
    fn hand(
        &self,
        message: Message,
        _: Option<&FieldTable>,
        _: bool,
        _: Option<Box<dyn Acker>>,
    ) -> Handed {
        match message {
            Message::Update(u) => match self.0.send(Ok(u)) {
                Ok(_) => Handed::Taken {
                    claim: Claim::default(),
                    deadline: None,
                },
                Err(_) => Handed::Closed,
            },
            other => Handed::wrong("update", Box::new(other)),
        }
    }
}

/// Which queues a consumer reads (declared by the connection thread).
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A worker pool's execute queues of these engines (every TTL class).
    Executes { pool: String, engines: Vec<String> },
    /// The dead-check queue.
    DeadChecks,
    /// Every result pool.
    Results,
    /// A private queue bound to the scheduler exchange.
    Control,
    /// A private queue bound to the update exchange (no acks).
    Updates,
}
