//! Settling deliveries: the per-item [`AmqpAcker`], the per-message state
//! ([`Held`]) that acks an AMQP message once every item in it is settled,
//! and the [`AckTracker`] that coalesces acks.

use super::Cmd;
use crate::error::AmqpError;
use amiquip::Channel;
use async_trait::async_trait;
use bergamot_core::backend::Acker;
use crossbeam_channel::Sender;
use std::collections::BTreeSet;
use tokio::sync::oneshot;

/// Settling one item.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ack,
    Nack {
        requeue: bool,
    },
    /// Copy to the poison exchange with the reason; done once confirmed.
    Poison {
        reason: String,
    },
}

/// Acks or nacks one item of a delivery through the connection thread.
/// Dropped unsettled, it requeues the item (the core contract: a delivery
/// dropped without ack is redelivered).
pub(super) struct AmqpAcker {
    pub(super) cmd: Sender<Cmd>,
    pub(super) consumer: u64,
    pub(super) epoch: u64,
    pub(super) tag: u64,
    pub(super) item: usize,
    pub(super) settled: bool,
}

impl AmqpAcker {
    async fn settle(mut self: Box<Self>, action: Settle) -> bergamot_core::Result<()> {
        self.settled = true;
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(self.command(action, Some(reply)))
            .map_err(|_| AmqpError::Closed)?;
        rx.await.map_err(|_| AmqpError::Closed)??;
        Ok(())
    }

    fn command(&self, action: Settle, reply: Option<super::Reply<()>>) -> Cmd {
        Cmd::Settle {
            consumer: self.consumer,
            epoch: self.epoch,
            tag: self.tag,
            item: self.item,
            action,
            reply,
        }
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> bergamot_core::Result<()> {
        self.settle(Settle::Ack).await
    }
    async fn nack(self: Box<Self>, requeue: bool) -> bergamot_core::Result<()> {
        self.settle(Settle::Nack { requeue }).await
    }
    async fn poison(self: Box<Self>, reason: String) -> bergamot_core::Result<()> {
        self.settle(Settle::Poison { reason }).await
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if !self.settled {
            self.cmd
                .send(self.command(Settle::Nack { requeue: true }, None))
                .ok();
        }
    }
}

/// Where one item of a held message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemState {
    /// With the caller (or in its stream).
    Out,
    /// Its effect is final: acked, or a copy (poison, expired, rejected)
    /// was confirmed.
    Done,
    /// Nacked with requeue (or dropped unsettled).
    Requeue,
    /// Nacked without requeue.
    Reject,
    /// A copy of it is published, not confirmed yet.
    Copying,
}

/// How a fully settled message is settled with the broker.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resolution {
    /// Some item is still out or being copied.
    Wait,
    Ack,
    Nack {
        requeue: bool,
    },
    /// Publish these items again as a message of their own, then ack.
    Republish(Vec<usize>),
}

/// An AMQP message delivered to a consumer, not settled with the broker yet.
pub(super) struct Held {
    /// The delivery, with its body (to copy items out of it).
    pub(crate) delivery: amiquip::Delivery,
    /// Whether the body is a v2 envelope.
    pub v2: bool,
    /// Index of its queue in the consumer's queues.
    pub(crate) queue: usize,
    pub(crate) items: Vec<ItemState>,
}

impl Held {
    /// The broker settlement once every item is settled.
    ///
    /// All done: ack. Nothing done: nack the whole message (requeue if any
    /// item asked for it), exactly as a v1 message. Some done, some to
    /// requeue: with `republish` (executes: running one again is the
    /// costly duplicate) the rest go out again as their own message and
    /// the original is acked; otherwise (results, dead checks, control:
    /// order matters, duplicates are cheap) the whole message is nacked
    /// back to its place and the done items come again as duplicates the
    /// store rejects. Rejected items of a partly done message are dropped.
    pub(crate) fn resolution(&self, republish: bool) -> Resolution {
        resolution(&self.items, republish)
    }
}

/// See [`Held::resolution`].
fn resolution(items: &[ItemState], republish: bool) -> Resolution {
    let count = |s: ItemState| items.iter().filter(|&&x| x == s).count();
    if count(ItemState::Out) + count(ItemState::Copying) > 0 {
        return Resolution::Wait;
    }
    let (done, requeue, reject) = (
        count(ItemState::Done),
        count(ItemState::Requeue),
        count(ItemState::Reject),
    );
    if requeue == 0 && (reject == 0 || done > 0) {
        Resolution::Ack
    } else if done == 0 {
        Resolution::Nack {
            requeue: requeue > 0,
        }
    } else if republish {
        Resolution::Republish(
            (0..items.len())
                .filter(|&i| items[i] == ItemState::Requeue)
                .collect(),
        )
    } else {
        Resolution::Nack { requeue: true }
    }
}

/// Coalesces acks: the acks of one pass over the ready work go out as one
/// `basic.ack multiple` where that cannot ack anything else, which saves
/// the broker most of its per-ack work under load.
///
/// `multiple` acks every unacked delivery of the channel up to a tag, so it
/// is used only up to the lowest tag still unsettled, and only over tags
/// the thread has already seen (a channel's consumers deliver through
/// separate receivers, so a lower tag may still be waiting in another one).
#[derive(Default)]
pub(super) struct AckTracker {
    /// Every delivery tag up to this one has been seen.
    pub(crate) contiguous: u64,
    /// Seen tags above `contiguous`.
    ahead: BTreeSet<u64>,
    /// Seen and not settled with the broker yet.
    pub(crate) outstanding: BTreeSet<u64>,
    /// Settled by ack, not yet sent.
    pending: Vec<amiquip::Delivery>,
}

impl AckTracker {
    pub(crate) fn seen(&mut self, tag: u64) {
        self.outstanding.insert(tag);
        if tag == self.contiguous + 1 {
            self.contiguous = tag;
            while self.ahead.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        } else if tag > self.contiguous {
            self.ahead.insert(tag);
        }
    }

    /// The message is acked (sent with the next flush).
    pub(crate) fn ack(&mut self, d: amiquip::Delivery) {
        if self.outstanding.remove(&d.delivery_tag()) {
            self.pending.push(d);
        }
    }

    /// The message is settled otherwise (nacked).
    pub(crate) fn settled(&mut self, tag: u64) {
        self.outstanding.remove(&tag);
    }

    /// The highest tag a `multiple` ack may name: everything up to it has
    /// been seen and none of it is still unsettled.
    pub(crate) fn coverable(&self) -> u64 {
        match self.outstanding.first() {
            Some(&low) => (low - 1).min(self.contiguous),
            None => self.contiguous,
        }
    }

    pub(crate) fn flush(&mut self, ch: &Channel) -> amiquip::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let limit = self.coverable();
        let mut covered = std::mem::take(&mut self.pending);
        covered.sort_by_key(|d| d.delivery_tag());
        let split = covered.partition_point(|d| d.delivery_tag() <= limit);
        let rest = covered.split_off(split);
        if let Some(last) = covered.pop() {
            if covered.is_empty() {
                last.ack(ch)?;
            } else {
                last.ack_multiple(ch)?;
            }
        }
        for d in rest {
            d.ack(ch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemState::*;

    #[test]
    fn multiple_acks_never_cover_unseen_or_unsettled_tags() {
        let mut t = AckTracker::default();
        assert_eq!(t.coverable(), 0);
        // Tags 1, 2 and 4 seen; 3 still in another receiver.
        for tag in [1, 2, 4] {
            t.seen(tag);
        }
        assert_eq!(t.contiguous, 2);
        // 1 and 2 are held by callers.
        assert_eq!(t.coverable(), 0);
        t.settled(1);
        assert_eq!(t.coverable(), 1);
        t.settled(2);
        t.settled(4);
        // 3 not seen: nothing above 2.
        assert_eq!(t.coverable(), 2);
        t.seen(3);
        assert_eq!(t.contiguous, 4);
        assert_eq!(t.coverable(), 2, "3 is held");
        t.settled(3);
        assert_eq!(t.coverable(), 4);
    }

    fn resolve(items: &[ItemState], republish: bool) -> Resolution {
        resolution(items, republish)
    }

    #[test]
    fn a_message_is_settled_once_every_item_is() {
        assert_eq!(resolve(&[Done, Out], true), Resolution::Wait);
        assert_eq!(resolve(&[Done, Copying], true), Resolution::Wait);
        assert_eq!(resolve(&[Done, Done], true), Resolution::Ack);
        assert_eq!(resolve(&[], true), Resolution::Ack);
        // Nothing done: like one v1 message.
        assert_eq!(
            resolve(&[Requeue], false),
            Resolution::Nack { requeue: true }
        );
        assert_eq!(
            resolve(&[Reject], true),
            Resolution::Nack { requeue: false }
        );
        assert_eq!(
            resolve(&[Requeue, Reject], true),
            Resolution::Nack { requeue: true }
        );
        // Partly done.
        assert_eq!(
            resolve(&[Done, Requeue, Done, Requeue], true),
            Resolution::Republish(vec![1, 3])
        );
        assert_eq!(
            resolve(&[Done, Requeue], false),
            Resolution::Nack { requeue: true }
        );
        assert_eq!(resolve(&[Done, Reject], false), Resolution::Ack);
    }
}
