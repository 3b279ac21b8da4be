//! The connection thread: owns the amiquip connection and all its channels,
//! and talks to tokio through channels.
//!
//! amiquip blocks, and its channels are not `Sync`, so exactly one thread per
//! [`AmqpQueue`](crate::AmqpQueue) touches them. Async callers send a [`Cmd`]
//! over a crossbeam channel and await a tokio oneshot reply; deliveries go
//! to tokio channels ([`sink`]). The thread waits on commands, publisher
//! confirms and every consumer's deliveries at once
//! (`crossbeam_channel::Select`).
//!
//! Publishes are collected into v2 envelopes per routing key by the
//! [`batcher`]; a delivery (v1 or v2) is split into one item per message
//! for the caller, and the AMQP message is settled once every item is
//! ([`acks`]).
//!
//! On a lost connection the thread fails every unconfirmed publish
//! ([`AmqpError::ConnectionLost`], the caller publishes again), forgets the
//! deliveries of the dead connection (their ackers then report
//! [`AmqpError::StaleDelivery`]; the broker redelivers them), reconnects with
//! backoff, redeclares the topology and restarts every consumer whose stream
//! is still alive.

mod acks;
pub(crate) mod batcher;
pub(crate) mod sink;
mod target;

use crate::codec::{self, Outgoing, CONTENT_TYPE_V2, REQUEUED_HEADER};
use crate::config::AmqpConfig;
use crate::error::AmqpError;
use crate::topology::{self, Declared, Names};
pub(crate) use acks::Settle;
use acks::{AckTracker, AmqpAcker, Held, ItemState, Resolution};
use amiquip::{
    AmqpValue, Channel, Confirm, Connection, ConnectionTuning, ConsumerMessage, ConsumerOptions,
    FieldTable, Publish, QueueDeclareOptions,
};
use batcher::{BatchKey, Batcher};
use bergamot_core::backend::Acker;
use crossbeam_channel::{Receiver, Select, Sender};
use sink::{Claim, Handed, Sink, Source};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use target::Target;
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// A reply to a command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, AmqpError>>;

/// The largest v2 envelope the batcher builds (one item may exceed it).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Orders for the connection thread.
pub(crate) enum Cmd {
    /// Publish all, reply once the broker confirmed all of them.
    Publish {
        items: Vec<batcher::Item>,
        reply: Reply<()>,
    },
    /// Start a consumer.
    Consume {
        source: Source,
        sink: Box<dyn Sink>,
        reply: Reply<()>,
    },
    /// Settle one item of a delivery.
    Settle {
        consumer: u64,
        epoch: u64,
        tag: u64,
        item: usize,
        action: Settle,
        reply: Option<Reply<()>>,
    },
    /// Delete every exchange and queue declared so far.
    DeleteTopology { reply: Reply<()> },
    /// Close the connection and end the thread.
    Shutdown { reply: Option<Reply<()>> },
}

/// Starts the connection thread; returns once the first connection is up
/// and the base topology declared (or failed).
pub(crate) async fn start(
    config: AmqpConfig,
) -> Result<(Sender<Cmd>, std::thread::JoinHandle<()>), AmqpError> {
    config.validate()?;
    let target = Target::parse(&config.url)?;
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ready, ready_rx) = oneshot::channel();
    let names = Names {
        prefix: config.prefix.clone(),
    };
    let worker = Worker {
        target,
        names,
        cmd_rx,
        cmd_tx: cmd_tx.clone(),
        specs: Vec::new(),
        next_id: 0,
        epoch: 0,
        declared: Declared::default(),
        batcher: Batcher::new(
            usize::from(config.batch_max),
            MAX_BATCH_BYTES,
            config.batch_linger,
        ),
        config,
    };
    let handle = std::thread::Builder::new()
        .name("bergamot-amqp".into())
        .spawn(move || worker.run(ready))
        .map_err(|e| AmqpError::broker("starting the connection thread", e))?;
    match ready_rx.await {
        Ok(Ok(())) => Ok((cmd_tx, handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AmqpError::Closed),
    }
}

struct Spec {
    id: u64,
    source: Source,
    sink: Box<dyn Sink>,
}

/// A consumer started on the current connection.
struct Active {
    channel: Channel,
    /// Queue names, parallel to the receivers registered in `Live::recv`.
    queues: Vec<String>,
    acks: AckTracker,
    /// Delivered messages not settled with the broker yet, by tag.
    held: HashMap<u64, Held>,
    /// An execute consumer: a partly done message republishes the rest
    /// (see [`Held::resolution`]), a rejected item is dead-lettered alone.
    executes: bool,
}

enum Pending {
    /// A message of the batcher.
    Publish { key: BatchKey, waiters: Vec<u64> },
    /// A copy of one item (poison, expired, rejected): the item is done
    /// once it is confirmed, requeued if not.
    Copy {
        consumer: u64,
        tag: u64,
        item: usize,
    },
    /// The requeued items of a partly done message: the original is acked
    /// once confirmed, nacked back whole if not.
    Republish {
        consumer: u64,
        tag: u64,
        items: Vec<usize>,
    },
    /// Nothing to do on the confirm (a poison copy from an update queue).
    Fire,
}

/// One connection's state; dropping it closes the connection.
struct Live {
    publish: Channel,
    confirms: Receiver<Confirm>,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    active: HashMap<u64, Active>,
    /// (consumer id, queue index, receiver) of every running consumer.
    recv: Vec<(u64, usize, Receiver<ConsumerMessage>)>,
    /// Executes handed to workers, by TTL deadline: (deadline, consumer,
    /// tag, item).
    expiry: BTreeMap<(Instant, u64, u64, usize), Claim>,
    /// (consumer, tag, item) -> deadline, to forget settled executes at once.
    expiry_index: HashMap<(u64, u64, usize), Instant>,
    // Last, so channels close before the connection.
    conn: Connection,
}

enum Exit {
    Shutdown,
    Lost(AmqpError),
}

struct Worker {
    config: AmqpConfig,
    target: Target,
    names: Names,
    cmd_rx: Receiver<Cmd>,
    cmd_tx: Sender<Cmd>,
    specs: Vec<Spec>,
    next_id: u64,
    /// Incremented on every reconnect: ackers of older deliveries are stale.
    epoch: u64,
    declared: Declared,
    batcher: Batcher,
}

impl Worker {
    fn run(mut self, ready: Reply<()>) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.connect() {
                Ok(live) => {
                    if let Some(r) = ready.take() {
                        r.send(Ok(())).ok();
                    }
                    backoff = Duration::from_millis(50);
                    match self.serve(live) {
                        Exit::Shutdown => return,
                        Exit::Lost(e) => {
                            warn!(error = %e, "AMQP connection lost; reconnecting");
                            self.epoch += 1;
                        }
                    }
                }
                Err(e) => {
                    if let Some(r) = ready.take() {
                        r.send(Err(e)).ok();
                        return;
                    }
                    warn!(error = %e, ?backoff, "AMQP reconnect failed");
                }
            }
            if self.wait_offline(backoff) {
                return;
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Registers a consumer of `source` (started again on every
    /// reconnect) and tells the caller: started at once on a `live`
    /// connection, when the connection is back otherwise.
    fn consume(
        &mut self,
        live: Option<&mut Live>,
        source: Source,
        sink: Box<dyn Sink>,
        reply: Reply<()>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(live) = live {
            if let Err(e) = self.start_consumer(live, id, &source) {
                // A failed declare may have killed the channel; make sure
                // nothing half-started stays behind.
                live.recv.retain(|(c, _, _)| *c != id);
                live.active.remove(&id);
                reply.send(Err(e)).ok();
                return;
            }
        }
        self.specs.push(Spec { id, source, sink });
        reply.send(Ok(())).ok();
    }

    /// Waits `d` while disconnected, answering commands. True on shutdown.
    fn wait_offline(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            let cmd = match self.cmd_rx.recv_deadline(deadline) {
                Ok(cmd) => cmd,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
            };
            match cmd {
                Cmd::Publish { reply, .. } | Cmd::DeleteTopology { reply } => {
                    reply.send(Err(AmqpError::NotConnected)).ok();
                }
                Cmd::Consume {
                    source,
                    sink,
                    reply,
                } => self.consume(None, source, sink, reply),
                Cmd::Settle { reply, .. } => {
                    if let Some(r) = reply {
                        r.send(Err(AmqpError::StaleDelivery)).ok();
                    }
                }
                Cmd::Shutdown { reply } => {
                    self.specs.clear();
                    if let Some(r) = reply {
                        r.send(Ok(())).ok();
                    }
                    return true;
                }
            }
        }
    }

    fn connect(&mut self) -> Result<Live, AmqpError> {
        let stream = self.target.open(self.config.connect_timeout)?;
        let heartbeat = u16::try_from(self.config.heartbeat.as_secs()).unwrap_or(u16::MAX);
        let options = self
            .target
            .options()
            .heartbeat(heartbeat)
            .connection_timeout(Some(self.config.connect_timeout))
            .information(Some(format!("bergamot-amqp {}", self.names.prefix)));
        let mut conn =
            Connection::insecure_open_stream(stream, options, ConnectionTuning::default())
                .map_err(|e| AmqpError::broker("opening the connection", e))?;
        let admin = conn
            .open_channel(None)
            .map_err(|e| AmqpError::broker("opening a channel", e))?;
        topology::declare_base(
            &admin,
            &self.names,
            self.config.result_pools,
            &mut self.declared,
        )?;
        admin.close().ok();
        let publish = conn
            .open_channel(None)
            .map_err(|e| AmqpError::broker("opening the publish channel", e))?;
        let confirms = publish
            .listen_for_publisher_confirms()
            .map_err(|e| AmqpError::broker("listening for confirms", e))?;
        publish
            .enable_publisher_confirms()
            .map_err(|e| AmqpError::broker("enabling publisher confirms", e))?;
        let mut live = Live {
            publish,
            confirms,
            next_seq: 0,
            pending: BTreeMap::new(),
            active: HashMap::new(),
            recv: Vec::new(),
            expiry: BTreeMap::new(),
            expiry_index: HashMap::new(),
            conn,
        };
        // Restart the consumers whose streams are still alive.
        let specs = std::mem::take(&mut self.specs);
        for spec in specs {
            if spec.sink.is_closed() {
                continue;
            }
            match self.start_consumer(&mut live, spec.id, &spec.source) {
                Ok(()) => self.specs.push(spec),
                Err(e) => {
                    warn!(error = %e, "cannot restart an AMQP consumer");
                    spec.sink.fail(e);
                }
            }
        }
        Ok(live)
    }

    fn start_consumer(
        &mut self,
        live: &mut Live,
        id: u64,
        source: &Source,
    ) -> Result<(), AmqpError> {
        let ch = live
            .conn
            .open_channel(None)
            .map_err(|e| AmqpError::broker("opening a consumer channel", e))?;
        // global = true: one prefetch window for the whole stream (all its queues).
        let prefetch = match source {
            Source::Results => self.config.result_prefetch,
            _ => self.config.prefetch,
        };
        ch.qos(0, prefetch, true)
            .map_err(|e| AmqpError::broker("setting prefetch", e))?;
        let mut no_ack = false;
        let queues = match source {
            Source::Executes { pool, engines } => {
                topology::declare_pool(&ch, &self.names, pool, engines, &mut self.declared)?
            }
            Source::DeadChecks => vec![self.names.dead_check()],
            Source::Results => (0..self.config.result_pools)
                .map(|p| self.names.result_queue(p))
                .collect(),
            // Every scheduler node gets every control message: a private
            // queue per consumer (acked; gone with the connection).
            Source::Control => vec![private_queue(
                &ch,
                &self.names.scheduler_exchange(),
                topology::CONTROL_KEY,
            )?],
            Source::Updates => {
                // Updates are transient fan-out: a private queue, no acks.
                no_ack = true;
                vec![private_queue(&ch, &self.names.update_exchange(), "#")?]
            }
        };
        let mut receivers = Vec::new();
        for q in &queues {
            let consumer = ch
                .basic_consume(
                    q.as_str(),
                    ConsumerOptions {
                        no_ack,
                        ..ConsumerOptions::default()
                    },
                )
                .map_err(|e| AmqpError::broker(format!("consuming {q}"), e))?;
            receivers.push(consumer.receiver().clone());
            // The consumer borrows the channel; it ends when the channel is
            // closed, so it is not cancelled (and not dropped) here.
            std::mem::forget(consumer);
        }
        for (i, r) in receivers.into_iter().enumerate() {
            live.recv.push((id, i, r));
        }
        live.active.insert(
            id,
            Active {
                acks: AckTracker::default(),
                channel: ch,
                queues,
                held: HashMap::new(),
                executes: matches!(source, Source::Executes { .. }),
            },
        );
        Ok(())
    }

    fn stop_consumer(&mut self, live: &mut Live, id: u64) {
        live.recv.retain(|(c, _, _)| *c != id);
        live.expiry.retain(|(_, c, _, _), _| *c != id);
        live.expiry_index.retain(|(c, _, _), _| *c != id);
        if let Some(mut a) = live.active.remove(&id) {
            a.acks.flush(&a.channel).ok();
            // Closing the channel requeues its unacked deliveries.
            a.channel.close().ok();
        }
        self.specs.retain(|s| s.id != id);
    }

    fn serve(&mut self, mut live: Live) -> Exit {
        let cmd_rx = self.cmd_rx.clone();
        let confirms = live.confirms.clone();
        let mut last_sweep = Instant::now();
        loop {
            if last_sweep.elapsed() >= Duration::from_millis(500) {
                self.sweep(&mut live);
                last_sweep = Instant::now();
            }
            // Under load, handle everything that is ready without blocking;
            // block in `select` only when a whole pass found nothing. One
            // select per message would cost more than the message itself.
            let worked = match self.drain(&mut live, &cmd_rx, &confirms) {
                Ok(worked) => worked,
                Err(exit) => return self.exit(live, exit),
            };
            if worked {
                continue;
            }
            let mut sel = Select::new();
            sel.recv(&cmd_rx);
            sel.recv(&confirms);
            for (_, _, r) in &live.recv {
                sel.recv(r);
            }
            // Ready or timed out: either way the next pass looks.
            let mut wait = Duration::from_millis(500);
            if let Some((deadline, _, _, _)) = live.expiry.keys().next() {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            if let Some(due) = self.batcher.next_due() {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            sel.ready_timeout(wait).ok();
        }
    }

    /// One non-blocking pass over commands, confirms and deliveries.
    /// Returns whether anything was handled.
    fn drain(
        &mut self,
        live: &mut Live,
        cmd_rx: &Receiver<Cmd>,
        confirms: &Receiver<Confirm>,
    ) -> Result<bool, Exit> {
        let mut worked = self.expire_due(live)?;
        for _ in 0..1024 {
            match cmd_rx.try_recv() {
                Ok(cmd) => {
                    worked = true;
                    self.on_cmd(live, cmd)?;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(Exit::Shutdown),
            }
        }
        loop {
            match confirms.try_recv() {
                Ok(c) => {
                    worked = true;
                    self.on_confirm(live, c)?;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(Exit::Lost(AmqpError::broker(
                        "connection",
                        "the connection's I/O thread stopped",
                    )))
                }
            }
        }
        // Clone the list: handlers may start or stop consumers.
        let recv = live.recv.clone();
        for (cid, qi, r) in &recv {
            for _ in 0..256 {
                match r.try_recv() {
                    Ok(m) => {
                        worked = true;
                        self.on_consumer(live, *cid, *qi, m)?;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        // The library dropped this consumer after telling
                        // us why (a message handled before).
                        live.recv.retain(|(c, q, _)| !(c == cid && q == qi));
                        worked = true;
                        break;
                    }
                }
            }
        }
        worked |= self.flush_batches(live)?;
        for a in live.active.values_mut() {
            // A failed ack means the channel died; its consumer messages say
            // so and the broker requeues.
            a.acks.flush(&a.channel).ok();
        }
        Ok(worked)
    }

    /// Dead-letters executes whose TTL ran out before a worker took them from
    /// its stream (they sat in the prefetch buffer of a busy or idle worker).
    /// Each item of a batch expires on its own: its copy goes alone.
    fn expire_due(&mut self, live: &mut Live) -> Result<bool, Exit> {
        let now = Instant::now();
        // (consumer, tag) -> items due, so a batch is parsed once.
        let mut due: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
        while let Some(entry) = live.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, cid, tag, item), claim) = entry.remove_entry();
            live.expiry_index.remove(&(cid, tag, item));
            let Some(h) = live.active.get_mut(&cid).and_then(|a| a.held.get_mut(&tag)) else {
                continue; // Its channel closed: the broker has it back.
            };
            if h.items.get(item) != Some(&ItemState::Out) || !claim.expire() {
                continue; // Taken (or already settled) by the worker.
            }
            h.items[item] = ItemState::Copying;
            due.entry((cid, tag)).or_default().push(item);
        }
        let worked = !due.is_empty();
        for ((cid, tag), items) in due {
            let Some(h) = live.active.get(&cid).and_then(|a| a.held.get(&tag)) else {
                continue;
            };
            let bodies = codec::item_bytes(&h.delivery.body, h.v2, &items);
            for (item, body) in items.into_iter().zip(bodies) {
                let copy = codec::dead_copy(self.names.dead_check(), body, "expired");
                self.publish(
                    live,
                    copy,
                    Pending::Copy {
                        consumer: cid,
                        tag,
                        item,
                    },
                )?;
            }
        }
        Ok(worked)
    }

    /// Publishes the batcher's messages that are due.
    fn flush_batches(&mut self, live: &mut Live) -> Result<bool, Exit> {
        let ready = self.batcher.ready(Instant::now());
        let v2 = self.batcher.v2();
        let worked = !ready.is_empty();
        for r in ready {
            let mut properties = codec::properties(r.key.persistent, r.key.expiration);
            let body = if v2 {
                properties = properties.with_content_type(CONTENT_TYPE_V2.to_string());
                codec::envelope(r.bodies.iter().map(Vec::as_slice))
            } else {
                r.bodies.into_iter().next().unwrap_or_default()
            };
            let item = Outgoing {
                exchange: r.key.exchange.clone(),
                routing_key: r.key.routing_key.clone(),
                body,
                properties,
            };
            self.publish(
                live,
                item,
                Pending::Publish {
                    key: r.key,
                    waiters: r.waiters,
                },
            )?;
        }
        Ok(worked)
    }

    fn exit(&mut self, mut live: Live, exit: Exit) -> Exit {
        match exit {
            Exit::Shutdown => {
                self.shutdown(live);
                Exit::Shutdown
            }
            Exit::Lost(e) => {
                self.fail_pending(&mut live, || AmqpError::ConnectionLost);
                Exit::Lost(e)
            }
        }
    }

    /// Stops consumers whose streams were dropped.
    fn sweep(&mut self, live: &mut Live) {
        let closed: Vec<u64> = self
            .specs
            .iter()
            .filter(|s| s.sink.is_closed())
            .map(|s| s.id)
            .collect();
        for id in closed {
            debug!(
                consumer = id,
                "consumer stream dropped; closing its channel"
            );
            self.stop_consumer(live, id);
        }
    }

    fn fail_pending(&mut self, live: &mut Live, err: impl Fn() -> AmqpError) {
        live.pending.clear();
        self.batcher.fail_all(err);
    }

    fn shutdown(&mut self, mut live: Live) {
        self.fail_pending(&mut live, || AmqpError::Closed);
        for (_, mut a) in live.active.drain() {
            // Acks callers were told about go out before the channel closes.
            a.acks.flush(&a.channel).ok();
            a.channel.close().ok();
        }
        if self.config.delete_topology_on_close {
            if let Err(e) = self.delete_topology(&mut live) {
                warn!(error = %e, "cannot delete the AMQP topology");
            }
        }
        self.specs.clear();
        live.publish.close().ok();
        live.conn.close().ok();
    }

    fn delete_topology(&mut self, live: &mut Live) -> Result<(), AmqpError> {
        let ch = live
            .conn
            .open_channel(None)
            .map_err(|e| AmqpError::broker("opening a channel", e))?;
        let r = topology::delete_all(&ch, &mut self.declared);
        ch.close().ok();
        r
    }

    fn on_cmd(&mut self, live: &mut Live, cmd: Cmd) -> Result<(), Exit> {
        match cmd {
            Cmd::Publish { items, reply } => {
                // Sent at the end of this pass (or when due).
                self.batcher.add(items, reply);
                Ok(())
            }
            Cmd::Consume {
                source,
                sink,
                reply,
            } => {
                self.consume(Some(live), source, sink, reply);
                Ok(())
            }
            Cmd::Settle {
                consumer,
                epoch,
                tag,
                item,
                action,
                reply,
            } => {
                let key = (consumer, tag, item);
                if let Some(deadline) = live.expiry_index.remove(&key) {
                    live.expiry.remove(&(deadline, consumer, tag, item));
                }
                let mut copy = None;
                let r = if epoch != self.epoch {
                    Err(AmqpError::StaleDelivery)
                } else if let Some(a) = live.active.get_mut(&consumer) {
                    // Settled twice, or taken over by the thread (an expired
                    // execute): nothing to do.
                    if let Some(h) = a
                        .held
                        .get_mut(&tag)
                        .filter(|h| h.items.get(item) == Some(&ItemState::Out))
                    {
                        let alone = h.items.len() == 1;
                        h.items[item] = match action {
                            Settle::Ack => ItemState::Done,
                            Settle::Nack { requeue: true } => ItemState::Requeue,
                            // The broker dead-letters a whole message.
                            Settle::Nack { requeue: false } if alone || !a.executes => {
                                ItemState::Reject
                            }
                            Settle::Nack { requeue: false } => {
                                let body = item_body(h, item);
                                copy = Some(codec::dead_copy(
                                    self.names.dead_check(),
                                    body,
                                    "rejected",
                                ));
                                ItemState::Copying
                            }
                            Settle::Poison { reason } => {
                                // Like an undecodable message: the copy goes
                                // to the poison queue, the item is done once
                                // the copy is confirmed (requeued if not).
                                let queue = a.queues.get(h.queue).cloned().unwrap_or_default();
                                warn!(%queue, %reason, "message moved to the poison queue");
                                let body = item_body(h, item);
                                copy =
                                    Some(codec::poison(self.names.poison(), body, &queue, &reason));
                                ItemState::Copying
                            }
                        };
                    }
                    Ok(())
                } else {
                    // Its channel was closed: the broker requeued it.
                    Err(AmqpError::StaleDelivery)
                };
                if let Some(reply) = reply {
                    reply.send(r).ok();
                }
                if let Some(copy) = copy {
                    self.publish(
                        live,
                        copy,
                        Pending::Copy {
                            consumer,
                            tag,
                            item,
                        },
                    )?;
                }
                self.resolve(live, consumer, tag)
            }
            Cmd::DeleteTopology { reply } => {
                reply.send(self.delete_topology(live)).ok();
                Ok(())
            }
            Cmd::Shutdown { reply } => {
                // Acknowledged before the shutdown work; `AmqpQueue::close`
                // waits for it by joining the thread.
                if let Some(r) = reply {
                    r.send(Ok(())).ok();
                }
                Err(Exit::Shutdown)
            }
        }
    }

    /// Settles a held message with the broker once every item is settled
    /// (see [`Held::resolution`]).
    fn resolve(&mut self, live: &mut Live, cid: u64, tag: u64) -> Result<(), Exit> {
        let Some(a) = live.active.get_mut(&cid) else {
            return Ok(());
        };
        let Some(h) = a.held.get_mut(&tag) else {
            return Ok(());
        };
        let republish = match h.resolution(a.executes) {
            Resolution::Wait => return Ok(()),
            Resolution::Ack => {
                if let Some(h) = a.held.remove(&tag) {
                    a.acks.ack(h.delivery);
                }
                return Ok(());
            }
            Resolution::Nack { requeue } => {
                if let Some(h) = a.held.remove(&tag) {
                    a.acks.settled(tag);
                    // A failure means the channel died: the broker requeues.
                    h.delivery.nack(&a.channel, requeue).ok();
                }
                return Ok(());
            }
            Resolution::Republish(items) => items,
        };
        for &i in &republish {
            h.items[i] = ItemState::Copying;
        }
        let bodies = codec::item_bytes(&h.delivery.body, h.v2, &republish);
        let mut headers = h.delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(REQUEUED_HEADER.into(), AmqpValue::Boolean(true));
        // Same queue, same properties (an execute keeps its expiration and
        // a dead check its death headers).
        let copy = Outgoing {
            exchange: String::new(),
            routing_key: a.queues.get(h.queue).cloned().unwrap_or_default(),
            body: codec::envelope(bodies.iter().map(Vec::as_slice)),
            properties: h
                .delivery
                .properties
                .clone()
                .with_content_type(CONTENT_TYPE_V2.to_string())
                .with_headers(headers),
        };
        self.publish(
            live,
            copy,
            Pending::Republish {
                consumer: cid,
                tag,
                items: republish,
            },
        )
    }

    fn publish(&mut self, live: &mut Live, item: Outgoing, pending: Pending) -> Result<(), Exit> {
        let p = Publish::with_properties(&item.body, item.routing_key.as_str(), item.properties);
        if let Err(e) = live.publish.basic_publish(item.exchange.as_str(), p) {
            return Err(Exit::Lost(AmqpError::broker(
                format!("publishing to {}", item.exchange),
                e,
            )));
        }
        live.next_seq += 1;
        live.pending.insert(live.next_seq, pending);
        Ok(())
    }

    fn on_confirm(&mut self, live: &mut Live, c: Confirm) -> Result<(), Exit> {
        let (payload, ok) = match c {
            Confirm::Ack(p) => (p, true),
            Confirm::Nack(p) => (p, false),
        };
        let tags: Vec<u64> = if payload.multiple {
            live.pending
                .range(..=payload.delivery_tag)
                .map(|(t, _)| *t)
                .collect()
        } else {
            vec![payload.delivery_tag]
        };
        for t in tags {
            match live.pending.remove(&t) {
                Some(Pending::Publish { key, waiters }) => {
                    self.batcher.confirmed(&key, waiters, ok);
                }
                Some(Pending::Copy {
                    consumer,
                    tag,
                    item,
                }) => {
                    if let Some(h) = live
                        .active
                        .get_mut(&consumer)
                        .and_then(|a| a.held.get_mut(&tag))
                    {
                        // Not confirmed: requeue, the copy is made again.
                        h.items[item] = if ok {
                            ItemState::Done
                        } else {
                            ItemState::Requeue
                        };
                    }
                    self.resolve(live, consumer, tag)?;
                }
                Some(Pending::Republish {
                    consumer,
                    tag,
                    items,
                }) => {
                    if let Some(a) = live.active.get_mut(&consumer) {
                        if ok {
                            if let Some(h) = a.held.get_mut(&tag) {
                                for i in items {
                                    h.items[i] = ItemState::Done;
                                }
                            }
                        } else if let Some(h) = a.held.remove(&tag) {
                            // Back whole: the done items come again.
                            a.acks.settled(tag);
                            h.delivery.nack(&a.channel, true).ok();
                        }
                    }
                    self.resolve(live, consumer, tag)?;
                }
                Some(Pending::Fire) | None => {}
            }
        }
        Ok(())
    }

    fn on_consumer(
        &mut self,
        live: &mut Live,
        cid: u64,
        qi: usize,
        m: ConsumerMessage,
    ) -> Result<(), Exit> {
        match m {
            ConsumerMessage::Delivery(d) => self.on_delivery(live, cid, qi, d),
            ConsumerMessage::ServerClosedConnection(e) => Err(Exit::Lost(AmqpError::broker(
                "connection closed by the broker",
                e,
            ))),
            ConsumerMessage::ClientClosedConnection => {
                Err(Exit::Lost(AmqpError::broker("connection", "closed")))
            }
            ConsumerMessage::ServerClosedChannel(e) => {
                // A channel-level error (e.g. its queue's arguments changed):
                // tell the stream and stop it rather than loop.
                warn!(error = %e, "the broker closed a consumer channel");
                if let Some(s) = self.specs.iter().find(|s| s.id == cid) {
                    s.sink.fail(AmqpError::broker(
                        "consumer channel closed by the broker",
                        e,
                    ));
                }
                self.stop_consumer(live, cid);
                Ok(())
            }
            ConsumerMessage::ServerCancelled
            | ConsumerMessage::ClientCancelled
            | ConsumerMessage::ClientClosedChannel => {
                live.recv.retain(|(c, q, _)| !(*c == cid && *q == qi));
                Ok(())
            }
        }
    }

    fn on_delivery(
        &mut self,
        live: &mut Live,
        cid: u64,
        qi: usize,
        mut d: amiquip::Delivery,
    ) -> Result<(), Exit> {
        let Some(spec) = self.specs.iter().find(|s| s.id == cid) else {
            return Ok(());
        };
        let body = std::mem::take(&mut d.body);
        let tag = d.delivery_tag();
        let headers = d.properties.headers().clone();
        let redelivered = d.redelivered
            || headers
                .as_ref()
                .is_some_and(|h| h.get(REQUEUED_HEADER).is_some());
        let v2 = d.properties.content_type().as_deref() == Some(CONTENT_TYPE_V2);
        let acked = spec.sink.acked();
        let queue = live
            .active
            .get(&cid)
            .and_then(|a| a.queues.get(qi))
            .cloned()
            .unwrap_or_default();
        let mut states = Vec::new();
        let mut copies = Vec::new();
        let mut expiries = Vec::new();
        let mut closed = false;
        for (i, item) in codec::split(&body, v2).into_iter().enumerate() {
            let bad = match item {
                Ok(m) => {
                    let acker = acked.then(|| {
                        Box::new(AmqpAcker {
                            cmd: self.cmd_tx.clone(),
                            consumer: cid,
                            epoch: self.epoch,
                            tag,
                            item: i,
                            settled: false,
                        }) as Box<dyn Acker>
                    });
                    match spec.sink.hand(m, headers.as_ref(), redelivered, acker) {
                        Handed::Taken { claim, deadline } => {
                            if let Some(deadline) = deadline {
                                expiries.push((deadline, i, claim));
                            }
                            None
                        }
                        // Its acker requeues when dropped; the channel
                        // closes below anyway.
                        Handed::Closed => {
                            closed = true;
                            None
                        }
                        Handed::Wrong { reason, message } => {
                            Some((reason, message.encode().unwrap_or_default()))
                        }
                    }
                }
                Err(bad) => Some(bad),
            };
            match bad {
                None => states.push(ItemState::Out),
                Some((reason, raw)) => {
                    // Never reaches the caller, never requeued: alone to
                    // the poison queue, the rest of its batch goes on.
                    warn!(%queue, %reason, "undecodable message moved to the poison queue");
                    states.push(ItemState::Copying);
                    copies.push((i, codec::poison(self.names.poison(), raw, &queue, &reason)));
                }
            }
        }
        if acked {
            if let Some(a) = live.active.get_mut(&cid) {
                a.acks.seen(tag);
                d.body = body;
                a.held.insert(
                    tag,
                    Held {
                        delivery: d,
                        v2,
                        queue: qi,
                        items: states,
                    },
                );
                for (deadline, i, claim) in expiries {
                    live.expiry_index.insert((cid, tag, i), deadline);
                    live.expiry.insert((deadline, cid, tag, i), claim);
                }
            }
        }
        for (item, copy) in copies {
            let pending = if acked {
                Pending::Copy {
                    consumer: cid,
                    tag,
                    item,
                }
            } else {
                // Already acked by the broker (no-ack queue): nothing to settle.
                Pending::Fire
            };
            self.publish(live, copy, pending)?;
        }
        if closed {
            // The stream is gone; stop consuming (closing the channel
            // requeues what it holds).
            self.stop_consumer(live, cid);
            return Ok(());
        }
        if acked {
            self.resolve(live, cid, tag)?;
        }
        Ok(())
    }
}

/// Declares a server-named exclusive auto-delete queue bound to `exchange`
/// with `key`; returns its name.
fn private_queue(ch: &Channel, exchange: &str, key: &str) -> Result<String, AmqpError> {
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
        )
        .map_err(|e| AmqpError::broker(format!("declaring a queue for {exchange}"), e))?;
    let name = q.name().to_string();
    ch.queue_bind(name.as_str(), exchange, key, FieldTable::new())
        .map_err(|e| AmqpError::broker(format!("binding a queue to {exchange}"), e))?;
    Ok(name)
}

/// The v1 bytes of one item of a held message.
fn item_body(h: &Held, item: usize) -> Vec<u8> {
    codec::item_bytes(&h.delivery.body, h.v2, &[item])
        .pop()
        .unwrap_or_default()
}
