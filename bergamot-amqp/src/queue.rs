//! [`AmqpQueue`]: the [`Queue`] trait over RabbitMQ.

use crate::config::AmqpConfig;
use crate::conn::batcher::{BatchKey, Item};
use crate::conn::sink::{self, Source};
use crate::conn::{self, Cmd};
use crate::error::AmqpError;
use crate::topology::{self, Names};
use async_trait::async_trait;
use bergamot_core::model::CheckResult;
use bergamot_core::queue::{
    DeadCheck, DeliveryStream, ExecuteCheck, Message, Queue, SchedulerControl, Update,
};
use bergamot_core::Result;
use crossbeam_channel::Sender;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The [`Queue`] over RabbitMQ; see the crate docs and
/// `docs/amqp-topology.md`.
///
/// Cheap to clone (clones share one connection). The connection is closed
/// when the last clone is dropped or [`close`](Self::close) is called.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

struct Inner {
    cmd: Sender<Cmd>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    names: Names,
    config: AmqpConfig,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cmd.send(Cmd::Shutdown { reply: None }).ok();
        if self.config.delete_topology_on_close {
            // Tests: wait for the topology to be deleted before the process
            // may exit.
            if let Some(t) = self.thread.lock().take() {
                t.join().ok();
            }
        }
    }
}

impl std::fmt::Debug for AmqpQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpQueue")
            .field("prefix", &self.inner.names.prefix)
            .finish_non_exhaustive()
    }
}

impl AmqpQueue {
    /// Connects, declares the shared topology and starts the connection
    /// thread. Fails if the first connection cannot be made; later losses
    /// are repaired by reconnecting.
    pub async fn connect(config: AmqpConfig) -> Result<AmqpQueue> {
        let (cmd, thread) = conn::start(config.clone()).await?;
        Ok(AmqpQueue {
            inner: Arc::new(Inner {
                cmd,
                thread: parking_lot::Mutex::new(Some(thread)),
                names: Names {
                    prefix: config.prefix.clone(),
                },
                config,
            }),
        })
    }

    /// The configuration this queue runs with.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// Closes the connection (for every clone): pending publishes fail,
    /// unacked deliveries go back to the broker, streams end. Waits until
    /// the connection thread has finished.
    pub async fn close(&self) -> Result<()> {
        self.inner.cmd.send(Cmd::Shutdown { reply: None }).ok();
        let thread = self.inner.thread.lock().take();
        if let Some(t) = thread {
            tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(|e| AmqpError::broker("joining the connection thread", e))?
                .map_err(|_| AmqpError::broker("connection thread", "panicked"))?;
        }
        Ok(())
    }

    /// Deletes every exchange and queue this instance declared (tests with
    /// a random prefix clean up with it; never on a shared deployment).
    pub async fn delete_topology(&self) -> Result<()> {
        self.call(|reply| Cmd::DeleteTopology { reply }).await
    }

    /// Publishes many results and returns once the broker confirmed all of
    /// them: they travel in as few messages as the batch size allows, so
    /// this is much faster than one [`Queue::publish_result`] after
    /// another. On error some may have been taken; publishing again is safe
    /// (results are deduplicated by id).
    pub async fn publish_results(&self, results: Vec<CheckResult>) -> Result<()> {
        let items = results
            .into_iter()
            .map(|r| self.result_item(r))
            .collect::<Result<Vec<_>>>()?;
        self.publish(items).await
    }

    /// The processing pool `result` goes to.
    pub fn result_pool_of(&self, result: &CheckResult) -> u16 {
        topology::result_pool(result.check_id, self.inner.config.result_pools)
    }

    fn result_item(&self, r: CheckResult) -> Result<Item> {
        let pool = self.result_pool_of(&r);
        self.item(
            self.inner.names.result_exchange(),
            pool.to_string(),
            Message::CheckResult(r),
            true,
            None,
        )
    }

    /// One item to publish: routed by `exchange` and `routing_key`, batched
    /// with the other items of the same key.
    fn item(
        &self,
        exchange: String,
        routing_key: String,
        message: Message,
        persistent: bool,
        expiration: Option<std::time::Duration>,
    ) -> Result<Item> {
        Ok(Item {
            key: BatchKey {
                exchange,
                routing_key,
                persistent,
                expiration,
            },
            body: message.encode()?,
        })
    }

    async fn call(
        &self,
        cmd: impl FnOnce(oneshot::Sender<std::result::Result<(), AmqpError>>) -> Cmd,
    ) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(cmd(reply))
            .map_err(|_| AmqpError::Closed)?;
        rx.await.map_err(|_| AmqpError::Closed)??;
        Ok(())
    }

    async fn publish(&self, items: Vec<Item>) -> Result<()> {
        self.call(|reply| Cmd::Publish { items, reply }).await
    }

    /// A stream of `T` from `source`. An item the connection thread took
    /// back (an execute that expired while it waited here) is skipped
    /// (dropping it settles nothing).
    async fn consume<T: sink::Item>(&self, source: Source) -> Result<DeliveryStream<T>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.call(|reply| Cmd::Consume {
            source,
            sink: Box::new(sink::Stream::<T>(tx)),
            reply,
        })
        .await?;
        Ok(UnboundedReceiverStream::new(rx)
            .filter_map(
                |(claim, d): (sink::Claim, Result<_>)| async move { claim.take().then_some(d) },
            )
            .boxed())
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish_execute(&self, execute: ExecuteCheck) -> Result<()> {
        topology::check_word("site", &execute.site)?;
        topology::check_word("pool", &execute.pool)?;
        topology::check_word("engine", &execute.engine)?;
        let key = topology::execute_key(&execute.site, &execute.pool, &execute.engine, execute.ttl);
        let ttl = execute.ttl;
        // Keyed by the exact TTL too: a batch of executes is homogeneous in
        // it, so the message's expiration is every item's own.
        let item = self.item(
            self.inner.names.check_exchange(),
            key,
            Message::ExecuteCheck(execute),
            true,
            Some(ttl),
        )?;
        self.publish(vec![item]).await
    }

    async fn consume_executes(
        &self,
        pool: &str,
        engines: &[String],
    ) -> Result<DeliveryStream<ExecuteCheck>> {
        topology::check_word("pool", pool)?;
        for e in engines {
            topology::check_word("engine", e)?;
        }
        self.consume(Source::Executes {
            pool: pool.to_string(),
            engines: engines.to_vec(),
        })
        .await
    }

    async fn consume_dead_checks(&self) -> Result<DeliveryStream<DeadCheck>> {
        self.consume(Source::DeadChecks).await
    }

    async fn publish_result(&self, result: CheckResult) -> Result<()> {
        let item = self.result_item(result)?;
        self.publish(vec![item]).await
    }

    async fn consume_results(&self) -> Result<DeliveryStream<CheckResult>> {
        self.consume(Source::Results).await
    }

    async fn publish_update(&self, update: Update) -> Result<()> {
        let (kind, id) = match &update {
            Update::Check(u) => ("check", u.check_id.to_string()),
            Update::Group(u) => ("group", u.group_id.to_string()),
            Update::Location(u) => ("location", u.location_id.to_string()),
            Update::Alert(u) => ("alert", u.check_id.to_string()),
            Update::Heartbeat(h) => ("heartbeat", h.role.clone()),
        };
        // v1: keyed per object; v2: one key per site, so that a node's
        // updates travel together (every subscriber binds `#`).
        let key = if self.inner.config.batch_max > 1 {
            format!("{}.batch", self.inner.config.site)
        } else {
            format!("{}.{kind}.{id}", self.inner.config.site)
        };
        let item = self.item(
            self.inner.names.update_exchange(),
            key,
            Message::Update(update),
            false,
            None,
        )?;
        self.publish(vec![item]).await
    }

    async fn subscribe_updates(&self) -> Result<BoxStream<'static, Result<Update>>> {
        // Bounded: a subscriber that falls `update_buffer` behind loses the
        // oldest updates (logged), never grows memory without limit.
        let (tx, rx) = tokio::sync::broadcast::channel(self.inner.config.update_buffer.max(1));
        self.call(|reply| Cmd::Consume {
            source: Source::Updates,
            sink: Box::new(sink::Updates(tx)),
            reply,
        })
        .await?;
        Ok(tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|item| async move {
                match item {
                    Ok(Ok(u)) => Some(Ok(u)),
                    Ok(Err(e)) => Some(Err(bergamot_core::Error::Closed(e))),
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!(
                            dropped = n,
                            "slow update subscriber: the oldest updates were dropped"
                        );
                        None
                    }
                }
            })
            .boxed())
    }

    async fn publish_control(&self, control: SchedulerControl) -> Result<()> {
        let item = self.item(
            self.inner.names.scheduler_exchange(),
            topology::CONTROL_KEY.to_string(),
            Message::SchedulerControl(control),
            true,
            None,
        )?;
        self.publish(vec![item]).await
    }

    async fn consume_control(&self) -> Result<DeliveryStream<SchedulerControl>> {
        self.consume(Source::Control).await
    }
}
