//! The publisher side of wire v2: items published to the same exchange,
//! routing key and properties are collected into one AMQP message.
//!
//! A key's buffer is flushed (one message, one publisher confirm for all its
//! items) when it holds `max_items` items or `max_bytes` bytes, or when the
//! key has no message in flight and its last message went out at least
//! `linger` ago. So a lone item goes at once (nothing in flight, nothing
//! sent lately), and under load a key sends at most one message per
//! `linger` or per confirm round trip, whichever is longer, each carrying
//! everything that arrived meanwhile. With `max_items` 1 every item goes at
//! once as a v1 message, as before wire v2.

use super::Reply;
use crate::error::AmqpError;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What items must share to travel in one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) persistent: bool,
    /// Per-message expiration (executes: their TTL; batches of executes are
    /// homogeneous in it, so every item keeps its own TTL exactly).
    pub(crate) expiration: Option<Duration>,
}

/// One item to publish: its key and its v1 JSON.
pub(crate) struct Item {
    pub(crate) key: BatchKey,
    pub(crate) body: Vec<u8>,
}

/// A publish call waiting for the confirms of its items.
struct Waiter {
    remaining: usize,
    nacked: bool,
    reply: Reply<()>,
}

#[derive(Default)]
struct Buffer {
    /// (v1 body, waiter)
    items: Vec<(Vec<u8>, u64)>,
    bytes: usize,
    in_flight: usize,
    last_flush: Option<Instant>,
}

/// A message ready to go: its items' bodies and their waiters.
pub(super) struct Ready {
    pub(crate) key: BatchKey,
    pub(crate) bodies: Vec<Vec<u8>>,
    pub(crate) waiters: Vec<u64>,
}

pub(super) struct Batcher {
    max_items: usize,
    max_bytes: usize,
    linger: Duration,
    buffers: HashMap<BatchKey, Buffer>,
    waiters: HashMap<u64, Waiter>,
    next_waiter: u64,
}

impl Batcher {
    pub(crate) fn new(max_items: usize, max_bytes: usize, linger: Duration) -> Self {
        Batcher {
            max_items: max_items.max(1),
            max_bytes,
            linger,
            buffers: HashMap::new(),
            waiters: HashMap::new(),
            next_waiter: 0,
        }
    }

    /// Whether messages are v2 envelopes (false: one v1 message per item).
    pub(crate) fn v2(&self) -> bool {
        self.max_items > 1
    }

    /// Queues the items of one publish call; `reply` gets the outcome once
    /// every one is confirmed (or one failed).
    pub(crate) fn add(&mut self, items: Vec<Item>, reply: Reply<()>) {
        if items.is_empty() {
            reply.send(Ok(())).ok();
            return;
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.insert(
            id,
            Waiter {
                remaining: items.len(),
                nacked: false,
                reply,
            },
        );
        for item in items {
            let b = self.buffers.entry(item.key).or_default();
            b.bytes += item.body.len();
            b.items.push((item.body, id));
        }
    }

    /// Takes every message due now.
    pub(crate) fn ready(&mut self, now: Instant) -> Vec<Ready> {
        let mut out = Vec::new();
        let (max_items, max_bytes, linger) = (self.max_items, self.max_bytes, self.linger);
        self.buffers.retain(|key, b| {
            while !b.items.is_empty() {
                let full = b.items.len() >= max_items || b.bytes >= max_bytes;
                let quiet = b.in_flight == 0
                    && b.last_flush.is_none_or(|t| now.duration_since(t) >= linger);
                if !(full || quiet || max_items == 1) {
                    break;
                }
                // Up to max_items, and at least one item past max_bytes.
                let mut n = 0;
                let mut bytes = 0;
                while n < b.items.len()
                    && n < max_items
                    && (n == 0 || bytes + b.items[n].0.len() <= max_bytes)
                {
                    bytes += b.items[n].0.len();
                    n += 1;
                }
                let (bodies, waiters) = b.items.drain(..n).unzip();
                b.bytes -= bytes;
                b.in_flight += 1;
                b.last_flush = Some(now);
                out.push(Ready {
                    key: key.clone(),
                    bodies,
                    waiters,
                });
            }
            // Forget idle keys (update keys of v1 are per object).
            !(b.items.is_empty()
                && b.in_flight == 0
                && b.last_flush.is_none_or(|t| now.duration_since(t) >= linger))
        });
        out
    }

    /// When the next buffered message becomes due (none: nothing waits for
    /// time, only for confirms).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.buffers
            .values()
            .filter(|b| !b.items.is_empty() && b.in_flight == 0)
            .filter_map(|b| b.last_flush.map(|t| t + self.linger))
            .min()
    }

    /// A message of `key` carrying items of `waiters` was confirmed (`ok`)
    /// or nacked.
    pub(crate) fn confirmed(&mut self, key: &BatchKey, waiters: Vec<u64>, ok: bool) {
        if let Some(b) = self.buffers.get_mut(key) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        for w in waiters {
            let done = match self.waiters.get_mut(&w) {
                Some(x) => {
                    x.remaining -= 1;
                    x.nacked |= !ok;
                    x.remaining == 0
                }
                None => false,
            };
            if done {
                if let Some(x) = self.waiters.remove(&w) {
                    x.reply
                        .send(if x.nacked {
                            Err(AmqpError::Nacked)
                        } else {
                            Ok(())
                        })
                        .ok();
                }
            }
        }
    }

    /// Fails every waiting publish call (connection lost or closed): items
    /// in flight may or may not have been taken, buffered ones were not.
    pub(crate) fn fail_all(&mut self, err: impl Fn() -> AmqpError) {
        self.buffers.clear();
        for (_, w) in self.waiters.drain() {
            w.reply.send(Err(err())).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn key(k: &str) -> BatchKey {
        BatchKey {
            exchange: "x".into(),
            routing_key: k.into(),
            persistent: true,
            expiration: None,
        }
    }

    fn item(k: &str) -> Item {
        Item {
            key: key(k),
            body: b"{}".to_vec(),
        }
    }

    fn call(b: &mut Batcher, items: Vec<Item>) -> oneshot::Receiver<Result<(), AmqpError>> {
        let (tx, rx) = oneshot::channel();
        b.add(items, tx);
        rx
    }

    #[test]
    fn a_lone_item_goes_at_once_and_items_gather_while_one_is_in_flight() {
        let linger = Duration::from_millis(5);
        let mut b = Batcher::new(3, 1 << 20, linger);
        let t0 = Instant::now();
        let mut first = call(&mut b, vec![item("a")]);
        let r = b.ready(t0);
        assert_eq!(r.len(), 1, "a lone item goes at once");
        assert_eq!(r[0].bodies.len(), 1);
        // While it is in flight, items gather, even after the linger.
        let mut rest: Vec<_> = (0..4).map(|_| call(&mut b, vec![item("a")])).collect();
        let r2 = b.ready(t0 + linger * 2);
        assert_eq!(
            r2.len(),
            1,
            "a full buffer goes even while one is in flight"
        );
        assert_eq!(r2[0].bodies.len(), 3);
        assert!(b.ready(t0 + linger * 2).is_empty());
        // Another key is independent.
        let _other = call(&mut b, vec![item("b")]);
        assert_eq!(b.ready(t0 + linger * 2).len(), 1);
        // The first confirm: the 4th item waits for the second message.
        b.confirmed(&key("a"), r[0].waiters.clone(), true);
        assert_eq!(first.try_recv().unwrap().unwrap(), ());
        assert!(b.ready(t0 + linger * 2).is_empty());
        b.confirmed(&key("a"), r2[0].waiters.clone(), true);
        assert!(b.ready(t0 + linger * 2).is_empty(), "sent a moment ago");
        let r3 = b.ready(t0 + linger * 3);
        assert_eq!(r3.len(), 1);
        assert_eq!(r3[0].bodies.len(), 1);
        b.confirmed(&key("a"), r3[0].waiters.clone(), false);
        for (i, rx) in rest.iter_mut().enumerate() {
            let got = rx.try_recv().unwrap();
            assert_eq!(got.is_err(), i == 3, "item {i}: {got:?}");
        }
    }

    #[test]
    fn under_load_a_key_waits_for_the_linger() {
        let linger = Duration::from_millis(5);
        let mut b = Batcher::new(256, 1 << 20, linger);
        let t0 = Instant::now();
        let _a = call(&mut b, vec![item("a")]);
        let r = b.ready(t0);
        b.confirmed(&key("a"), r[0].waiters.clone(), true);
        let _c = call(&mut b, vec![item("a"), item("a")]);
        assert!(b.ready(t0 + linger / 2).is_empty(), "sent just now");
        assert_eq!(b.next_due(), Some(t0 + linger));
        let r = b.ready(t0 + linger);
        assert_eq!(r[0].bodies.len(), 2);
    }

    #[test]
    fn one_call_over_several_keys_and_a_byte_cap() {
        let mut b = Batcher::new(256, 5, Duration::ZERO);
        let mut rx = call(&mut b, vec![item("a"), item("a"), item("a"), item("b")]);
        let now = Instant::now();
        let r = b.ready(now);
        // "a": 2 + 2 bytes, then the byte cap; "b" on its own.
        let mut sizes: Vec<_> = r.iter().map(|m| m.bodies.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![1, 2]);
        for m in &r {
            b.confirmed(&m.key, m.waiters.clone(), true);
        }
        assert!(rx.try_recv().is_err(), "the third item is not sent yet");
        let r = b.ready(now);
        assert_eq!(r.len(), 1);
        b.confirmed(&r[0].key, r[0].waiters.clone(), true);
        assert_eq!(rx.try_recv().unwrap().unwrap(), ());
    }

    #[test]
    fn v1_sends_every_item_at_once() {
        let mut b = Batcher::new(1, 1 << 20, Duration::from_secs(1));
        assert!(!b.v2());
        let _rx = call(&mut b, vec![item("a"), item("a")]);
        let r = b.ready(Instant::now());
        assert_eq!(r.len(), 2);
    }
}
