//! `InMemoryQueue`: the [`Queue`] contract inside one process.
//!
//! - Executes go to one FIFO per (pool, engine). Consumers of a pair compete.
//!   Publishing to a pair no consumer has ever registered for returns the
//!   execute at once as a [`DeadCheck`] with [`DeadReason::Unroutable`]. An
//!   execute still waiting when its `ttl` runs out (a tokio timer, so paused
//!   clocks work) becomes [`DeadReason::Expired`].
//! - Results go to one FIFO consumed by one *active* consumer at a time
//!   (single-active-consumer): a second `consume_results` stream waits until
//!   the first is dropped, then takes over, so one check's results are handled
//!   in order.
//! - Dead checks and scheduler control messages are FIFOs with competing consumers.
//! - A delivery dropped without ack is put back at the head of its queue with
//!   `redelivered = true`; `nack(true)` does the same; `nack(false)` drops it.
//! - Updates are a `tokio::sync::broadcast` channel of
//!   [`DEFAULT_UPDATE_CAPACITY`] updates: publishing never blocks; a subscriber
//!   that falls more than that many updates behind loses the oldest ones it
//!   had not read (logged with `tracing::warn!`) and then continues with the
//!   newest. Clients that need exact state re-read it from the store.

use super::{
    DeadCheck, DeadReason, Delivery, DeliveryStream, ExecuteCheck, Queue, SchedulerControl, Update,
};
use crate::error::{Error, Result};
use crate::model::CheckResult;
use crate::queue::Acker;
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, Notify};

/// Updates a subscriber may fall behind before it loses the oldest.
pub const DEFAULT_UPDATE_CAPACITY: usize = 4096;

/// One message in a FIFO, with the bookkeeping redelivery and expiry need.
struct Item<T> {
    seq: u64,
    message: T,
    redelivered: bool,
}

/// A FIFO with competing consumers and redelivery.
struct Fifo<T> {
    items: Mutex<VecDeque<Item<T>>>,
    notify: Notify,
    /// Poisoned messages with their reasons, oldest first.
    poisoned: Mutex<Vec<(T, String)>>,
}

impl<T: Send + 'static> Fifo<T> {
    fn new() -> Arc<Self> {
        Arc::new(Fifo {
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            poisoned: Mutex::new(Vec::new()),
        })
    }

    fn push_back(&self, item: Item<T>) {
        self.items.lock().push_back(item);
        self.notify.notify_waiters();
    }

    fn push_front(&self, item: Item<T>) {
        self.items.lock().push_front(item);
        self.notify.notify_waiters();
    }

    fn pop(&self) -> Option<Item<T>> {
        self.items.lock().pop_front()
    }

    /// Removes the item `seq` if it is still waiting.
    fn take(&self, seq: u64) -> Option<Item<T>> {
        let mut items = self.items.lock();
        let pos = items.iter().position(|i| i.seq == seq)?;
        items.remove(pos)
    }
}

/// Acks, nacks, or (when dropped untouched) requeues one delivery.
struct FifoAcker<T: Send + 'static> {
    fifo: Arc<Fifo<T>>,
    item: Option<(u64, T)>,
}

#[async_trait]
impl<T: Send + Sync + 'static> Acker for FifoAcker<T> {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.item = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if !requeue {
            self.item = None;
        }
        // Dropping self requeues what is left.
        Ok(())
    }

    async fn poison(mut self: Box<Self>, reason: String) -> Result<()> {
        if let Some((_, message)) = self.item.take() {
            self.fifo.poisoned.lock().push((message, reason));
        }
        Ok(())
    }
}

impl<T: Send + 'static> Drop for FifoAcker<T> {
    fn drop(&mut self) {
        if let Some((seq, message)) = self.item.take() {
            self.fifo.push_front(Item {
                seq,
                message,
                redelivered: true,
            });
        }
    }
}

fn delivery<T: Clone + Send + Sync + 'static>(fifo: &Arc<Fifo<T>>, item: Item<T>) -> Delivery<T> {
    let acker = FifoAcker {
        fifo: Arc::clone(fifo),
        item: Some((item.seq, item.message.clone())),
    };
    Delivery::new(item.message, item.redelivered, Box::new(acker))
}

/// Waits for the next item of any of `fifos`, trying them in order.
async fn next_item<T: Send + 'static>(fifos: &[Arc<Fifo<T>>]) -> (usize, Item<T>) {
    loop {
        // Register interest before looking, so a push in between is not missed.
        let mut waits: Vec<_> = fifos
            .iter()
            .map(|f| Box::pin(f.notify.notified()))
            .collect();
        for w in &mut waits {
            w.as_mut().enable();
        }
        for (i, f) in fifos.iter().enumerate() {
            if let Some(item) = f.pop() {
                return (i, item);
            }
        }
        if waits.is_empty() {
            futures::future::pending::<()>().await;
        }
        futures::future::select_all(waits).await;
    }
}

type ExecKey = (String, String);

struct Shared {
    seq: AtomicU64,
    /// Every (pool, engine) a consumer ever registered for, with its FIFO.
    executes: Mutex<HashMap<ExecKey, Arc<Fifo<ExecuteCheck>>>>,
    dead: Arc<Fifo<DeadCheck>>,
    results: Arc<Fifo<CheckResult>>,
    /// The consumer that owns the results FIFO now, if any.
    results_owner: Mutex<Option<u64>>,
    results_owner_changed: Notify,
    control: Arc<Fifo<SchedulerControl>>,
    updates: broadcast::Sender<Update>,
}

impl Shared {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends a new (not redelivered) `message` to `fifo`; returns its sequence number.
    fn publish<T: Send + 'static>(&self, fifo: &Fifo<T>, message: T) -> u64 {
        let seq = self.next_seq();
        fifo.push_back(Item {
            seq,
            message,
            redelivered: false,
        });
        seq
    }

    fn dead_letter(&self, execute: ExecuteCheck, reason: DeadReason) {
        let dead = DeadCheck {
            execute,
            reason,
            at: chrono::Utc::now(),
        };
        self.publish(&self.dead, dead);
    }
}

/// A [`Queue`] in one process: for embedding, tests and the demo.
///
/// Clones share the same queues. Timers need a tokio runtime.
#[derive(Clone)]
pub struct InMemoryQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for InMemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryQueue").finish_non_exhaustive()
    }
}

impl Default for InMemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryQueue {
    /// An empty queue with [`DEFAULT_UPDATE_CAPACITY`].
    pub fn new() -> Self {
        Self::with_update_capacity(DEFAULT_UPDATE_CAPACITY)
    }

    /// An empty queue whose update subscribers may fall `capacity` updates
    /// behind before losing the oldest.
    pub fn with_update_capacity(capacity: usize) -> Self {
        let (updates, _) = broadcast::channel(capacity.max(1));
        InMemoryQueue {
            shared: Arc::new(Shared {
                seq: AtomicU64::new(0),
                executes: Mutex::new(HashMap::new()),
                dead: Fifo::new(),
                results: Fifo::new(),
                results_owner: Mutex::new(None),
                results_owner_changed: Notify::new(),
                control: Fifo::new(),
                updates,
            }),
        }
    }

    /// The results consumers poisoned ([`Acker::poison`]), with the
    /// reasons, oldest first.
    pub fn poisoned_results(&self) -> Vec<(CheckResult, String)> {
        self.shared.results.poisoned.lock().clone()
    }
}

fn fifo_stream<T: Clone + Send + Sync + 'static>(fifos: Vec<Arc<Fifo<T>>>) -> DeliveryStream<T> {
    futures::stream::unfold(fifos, |fifos| async move {
        let (i, item) = next_item(&fifos).await;
        let d = delivery(&fifos[i], item);
        Some((Ok(d), fifos))
    })
    .boxed()
}

/// Releases the results FIFO when the owning stream is dropped.
struct ResultsOwner {
    shared: Arc<Shared>,
    id: u64,
    owns: bool,
}

impl Drop for ResultsOwner {
    fn drop(&mut self) {
        if self.owns {
            let mut owner = self.shared.results_owner.lock();
            if *owner == Some(self.id) {
                *owner = None;
            }
            drop(owner);
            self.shared.results_owner_changed.notify_waiters();
        }
    }
}

impl ResultsOwner {
    async fn acquire(&mut self) {
        while !self.owns {
            let wait = self.shared.results_owner_changed.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            {
                let mut owner = self.shared.results_owner.lock();
                if owner.is_none() {
                    *owner = Some(self.id);
                    self.owns = true;
                    return;
                }
            }
            wait.await;
        }
    }
}

#[async_trait]
impl Queue for InMemoryQueue {
    async fn publish_execute(&self, execute: ExecuteCheck) -> Result<()> {
        let key = (execute.pool.clone(), execute.engine.clone());
        let fifo = self.shared.executes.lock().get(&key).cloned();
        let Some(fifo) = fifo else {
            self.shared.dead_letter(execute, DeadReason::Unroutable);
            return Ok(());
        };
        let ttl = execute.ttl;
        let seq = self.shared.publish(&fifo, execute);
        let shared = Arc::downgrade(&self.shared);
        let fifo = Arc::downgrade(&fifo);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let (Some(shared), Some(fifo)) = (shared.upgrade(), fifo.upgrade()) else {
                return;
            };
            // Taken by a worker in time: nothing to do. (A delivery that is
            // requeued later is not expired again: at-least-once wins.)
            if let Some(item) = fifo.take(seq) {
                shared.dead_letter(item.message, DeadReason::Expired);
            }
        });
        Ok(())
    }

    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> Result<DeliveryStream<ExecuteCheck>> {
        if engines.is_empty() {
            return Err(Error::InvalidInput(format!(
                "consume_executes for pool {pool:?}: no engines given"
            )));
        }
        let mut map = self.shared.executes.lock();
        let fifos = engines
            .iter()
            .map(|e| {
                Arc::clone(
                    map.entry((pool.to_string(), e.clone()))
                        .or_insert_with(Fifo::new),
                )
            })
            .collect();
        Ok(fifo_stream(fifos))
    }

    async fn consume_dead_checks(&self) -> Result<DeliveryStream<DeadCheck>> {
        Ok(fifo_stream(vec![Arc::clone(&self.shared.dead)]))
    }

    async fn publish_result(&self, result: CheckResult) -> Result<()> {
        self.shared.publish(&self.shared.results, result);
        Ok(())
    }

    async fn consume_results(&self) -> Result<DeliveryStream<CheckResult>> {
        let owner = ResultsOwner {
            id: self.shared.next_seq(),
            shared: Arc::clone(&self.shared),
            owns: false,
        };
        Ok(futures::stream::unfold(owner, |mut owner| async move {
            owner.acquire().await;
            let fifos = [Arc::clone(&owner.shared.results)];
            let (_, item) = next_item(&fifos).await;
            let d = delivery(&fifos[0], item);
            Some((Ok(d), owner))
        })
        .boxed())
    }

    async fn publish_update(&self, update: Update) -> Result<()> {
        // No subscriber is not an error: updates are for whoever listens now.
        self.shared.updates.send(update).ok();
        Ok(())
    }

    async fn subscribe_updates(&self) -> Result<BoxStream<'static, Result<Update>>> {
        let rx = self.shared.updates.subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(u) => return Some((Ok(u), rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "update subscriber lagged behind; oldest updates dropped"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }

    async fn publish_control(&self, control: SchedulerControl) -> Result<()> {
        self.shared.publish(&self.shared.control, control);
        Ok(())
    }

    async fn consume_control(&self) -> Result<DeliveryStream<SchedulerControl>> {
        Ok(fifo_stream(vec![Arc::clone(&self.shared.control)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckId, Status};
    use crate::queue::AlertUpdate;
    use crate::state::Event;
    use futures::FutureExt;
    use std::time::Duration;

    fn execute(ttl: Duration) -> ExecuteCheck {
        ExecuteCheck {
            id: uuid::Uuid::new_v4(),
            check_id: CheckId::random(),
            site: "s".into(),
            pool: "p".into(),
            engine: "e".into(),
            params: Default::default(),
            timeout: Duration::from_secs(5),
            ttl,
            scheduled_at: chrono::Utc::now(),
            execute_now: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_follows_the_tokio_clock() {
        let q = InMemoryQueue::new();
        let _idle = q.consume_executes("p", &["e".into()]).await.unwrap();
        let mut dead = q.consume_dead_checks().await.unwrap();
        let e = execute(Duration::from_secs(3600));
        q.publish_execute(e.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3599)).await;
        assert!(
            dead.next().now_or_never().is_none(),
            "not expired before its ttl"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let d = dead.next().await.unwrap().unwrap();
        assert_eq!(
            (d.message.execute.id, d.message.reason.clone()),
            (e.id, DeadReason::Expired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_taken_execute_does_not_expire() {
        let q = InMemoryQueue::new();
        let mut work = q.consume_executes("p", &["e".into()]).await.unwrap();
        let mut dead = q.consume_dead_checks().await.unwrap();
        q.publish_execute(execute(Duration::from_secs(10)))
            .await
            .unwrap();
        let d = work.next().await.unwrap().unwrap();
        d.ack().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            dead.next().now_or_never().is_none(),
            "an acked execute never comes back dead"
        );
    }

    #[tokio::test]
    async fn nack_without_requeue_drops() {
        let q = InMemoryQueue::new();
        let mut control = q.consume_control().await.unwrap();
        let c = CheckId::random();
        q.publish_control(SchedulerControl::ExecuteNow { check_id: c })
            .await
            .unwrap();
        let d = control.next().await.unwrap().unwrap();
        d.nack(false).await.unwrap();
        assert!(
            control.next().now_or_never().is_none(),
            "a nack without requeue drops"
        );
    }

    #[tokio::test]
    async fn a_lagging_subscriber_keeps_the_newest_and_never_blocks_publishers() {
        let q = InMemoryQueue::with_update_capacity(2);
        let mut sub = q.subscribe_updates().await.unwrap();
        let update = |i: usize| {
            Update::Alert(AlertUpdate {
                check_id: CheckId::random(),
                alert_id: uuid::Uuid::new_v4(),
                event: Event::Alert,
                status: Status::Critical,
                output: i.to_string().into(),
                at: chrono::Utc::now(),
            })
        };
        for i in 0..5 {
            q.publish_update(update(i)).await.unwrap();
        }
        let mut got = Vec::new();
        while let Some(Some(u)) = sub.next().now_or_never() {
            match u.unwrap() {
                Update::Alert(a) => got.push(a.output.to_string()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            got,
            vec!["3".to_string(), "4".to_string()],
            "the two newest survive"
        );
    }
}
