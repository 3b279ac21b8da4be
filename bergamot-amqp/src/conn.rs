//! The connection thread: owns the amiquip connection and all its channels,
//! and talks to tokio through channels.
//!
//! amiquip blocks, and its channels are not `Sync`, so exactly one thread per
//! [`AmqpQueue`](crate::AmqpQueue) touches them. Async callers send a [`Cmd`]
//! over a crossbeam channel and await a tokio oneshot reply; deliveries go
//! to tokio mpsc channels. The thread waits on commands, publisher confirms
//! and every consumer's deliveries at once (`crossbeam_channel::Select`).
//!
//! On a lost connection the thread fails every unconfirmed publish
//! ([`AmqpError::ConnectionLost`], the caller publishes again), forgets the
//! deliveries of the dead connection (their ackers then report
//! [`AmqpError::StaleDelivery`]; the broker redelivers them), reconnects with
//! backoff, redeclares the topology and restarts every consumer whose stream
//! is still alive.

use crate::codec::{self, Outgoing};
use crate::config::AmqpConfig;
use crate::error::AmqpError;
use crate::topology::{self, Declared, Names};
use amiquip::{
    Auth, Channel, Confirm, Connection, ConnectionOptions, ConnectionTuning, ConsumerMessage,
    ConsumerOptions, FieldTable, Publish, QueueDeclareOptions,
};
use async_trait::async_trait;
use bergamot_core::backend::Acker;
use bergamot_core::model::CheckResult;
use bergamot_core::queue::{DeadCheck, Delivery, ExecuteCheck, Message, SchedulerControl, Update};
use crossbeam_channel::{Receiver, Select, Sender};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// A reply to a command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, AmqpError>>;
/// Where a consumer's deliveries go.
/// One item of an update stream: an update, or why the stream failed.
pub(crate) type UpdateItem = std::result::Result<Update, String>;

pub(crate) type Tx<T> = mpsc::UnboundedSender<bergamot_core::Result<Delivery<T>>>;
/// Where a worker's executes go, each with its [`Claim`].
pub(crate) type ExecTx =
    mpsc::UnboundedSender<(Claim, bergamot_core::Result<Delivery<ExecuteCheck>>)>;

/// Who gets a delivered execute: the worker that takes it from the stream,
/// or the connection thread that dead-letters it as expired when its TTL
/// runs out first (the broker only expires messages still in the queue, not
/// ones already pushed to a consumer's prefetch buffer).
#[derive(Clone, Default)]
pub(crate) struct Claim(Arc<AtomicU8>);

const UNCLAIMED: u8 = 0;
const TAKEN: u8 = 1;
const EXPIRED: u8 = 2;

impl Claim {
    /// The worker takes it; false if it already expired.
    pub(crate) fn take(&self) -> bool {
        self.0
            .compare_exchange(UNCLAIMED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn expire(&self) -> bool {
        self.0
            .compare_exchange(UNCLAIMED, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A consumer stream and what it consumes.
pub(crate) enum Kind {
    Executes {
        pool: String,
        engines: Vec<String>,
        tx: ExecTx,
    },
    DeadChecks(Tx<DeadCheck>),
    Results(Tx<CheckResult>),
    Control(Tx<SchedulerControl>),
    /// Bounded, dropping the oldest for a slow subscriber (update queues
    /// are consumed without acks, so nothing else bounds them).
    Updates(tokio::sync::broadcast::Sender<UpdateItem>),
}

impl Kind {
    fn is_closed(&self) -> bool {
        match self {
            Kind::Executes { tx, .. } => tx.is_closed(),
            Kind::DeadChecks(tx) => tx.is_closed(),
            Kind::Results(tx) => tx.is_closed(),
            Kind::Control(tx) => tx.is_closed(),
            Kind::Updates(tx) => tx.receiver_count() == 0,
        }
    }

    fn fail(&self, e: AmqpError) {
        let e = bergamot_core::Error::from(e);
        let _ = match self {
            Kind::Executes { tx, .. } => tx.send((Claim::default(), Err(e))).is_ok(),
            Kind::DeadChecks(tx) => tx.send(Err(e)).is_ok(),
            Kind::Results(tx) => tx.send(Err(e)).is_ok(),
            Kind::Control(tx) => tx.send(Err(e)).is_ok(),
            Kind::Updates(tx) => tx.send(Err(e.to_string())).is_ok(),
        };
    }
}

/// Settling a delivery.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ack,
    Nack {
        requeue: bool,
    },
    /// Copy to the poison exchange with the reason, ack once confirmed.
    Poison {
        reason: String,
    },
}

/// Orders for the connection thread.
pub(crate) enum Cmd {
    /// Publish all, reply once the broker confirmed all of them.
    Publish {
        items: Vec<Outgoing>,
        reply: Reply<()>,
    },
    /// Start a consumer.
    Consume { kind: Kind, reply: Reply<()> },
    /// Ack or nack a delivery.
    Settle {
        consumer: u64,
        epoch: u64,
        delivery: Box<amiquip::Delivery>,
        action: Settle,
        reply: Option<Reply<()>>,
    },
    /// Delete every exchange and queue declared so far.
    DeleteTopology { reply: Reply<()> },
    /// Close the connection and end the thread.
    Shutdown { reply: Option<Reply<()>> },
}

/// Acks or nacks one delivery through the connection thread. Dropped
/// unsettled, it requeues the delivery (the core contract: a delivery
/// dropped without ack is redelivered).
struct AmqpAcker {
    cmd: Sender<Cmd>,
    consumer: u64,
    epoch: u64,
    delivery: Option<Box<amiquip::Delivery>>,
}

impl AmqpAcker {
    async fn settle(mut self: Box<Self>, action: Settle) -> bergamot_core::Result<()> {
        let Some(delivery) = self.delivery.take() else {
            return Ok(());
        };
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Settle {
                consumer: self.consumer,
                epoch: self.epoch,
                delivery,
                action,
                reply: Some(reply),
            })
            .map_err(|_| AmqpError::Closed)?;
        rx.await.map_err(|_| AmqpError::Closed)??;
        Ok(())
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
        if let Some(delivery) = self.delivery.take() {
            let _ = self.cmd.send(Cmd::Settle {
                consumer: self.consumer,
                epoch: self.epoch,
                delivery,
                action: Settle::Nack { requeue: true },
                reply: None,
            });
        }
    }
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
        config,
        target,
        names,
        cmd_rx,
        cmd_tx: cmd_tx.clone(),
        specs: Vec::new(),
        next_id: 0,
        epoch: 0,
        declared: Declared::default(),
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

/// Where to connect, parsed from the URL.
struct Target {
    host: String,
    port: u16,
    username: String,
    password: String,
    vhost: String,
}

impl Target {
    fn parse(raw: &str) -> Result<Target, AmqpError> {
        let bad = |reason: String| {
            // Never echo a password into logs or errors.
            let shown = match url::Url::parse(raw) {
                Ok(mut u) => {
                    let _ = u.set_password(None);
                    u.to_string()
                }
                Err(_) => "<unparsable>".to_string(),
            };
            AmqpError::InvalidUrl { url: shown, reason }
        };
        let url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        match url.scheme() {
            "amqp" => {}
            "amqps" => return Err(bad("amqps (TLS) is not supported by this build".into())),
            other => return Err(bad(format!("scheme must be amqp, got {other:?}"))),
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|e| bad(format!("bad percent-encoding: {e}")))
        };
        let username = match url.username() {
            "" => "guest".to_string(),
            u => decode(u)?,
        };
        let password = match url.password() {
            None => "guest".to_string(),
            Some(p) => decode(p)?,
        };
        let host = match url.host_str() {
            None | Some("") => "localhost".to_string(),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let path = url.path();
        let vhost = match path.strip_prefix('/').unwrap_or(path) {
            "" => "/".to_string(),
            v => decode(v)?,
        };
        Ok(Target {
            host,
            port: url.port().unwrap_or(5672),
            username,
            password,
            vhost,
        })
    }

    /// Opens the TCP stream ourselves to set TCP_NODELAY (amiquip does not:
    /// without it every confirmed publish waits ~40 ms for delayed ACKs).
    fn open(&self, timeout: Duration) -> Result<mio06::net::TcpStream, AmqpError> {
        let addr = format!("{}:{}", self.host, self.port);
        let connect_err = |source| AmqpError::Connect {
            addr: addr.clone(),
            source,
        };
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(connect_err)?;
        let mut last = None;
        for a in addrs {
            match std::net::TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    s.set_nodelay(true).map_err(connect_err)?;
                    return mio06::net::TcpStream::from_stream(s).map_err(connect_err);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(connect_err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    }
}

struct Spec {
    id: u64,
    kind: Kind,
}

/// A consumer started on the current connection.
struct Active {
    channel: Channel,
    /// Queue names, parallel to the receivers registered in `Live::recv`.
    queues: Vec<String>,
    acks: AckTracker,
}

/// Coalesces acks: the acks of one pass over the ready work go out as one
/// `basic.ack multiple` where that cannot ack anything else, which saves
/// the broker most of its per-ack work under load.
///
/// `multiple` acks every unacked delivery of the channel up to a tag, so it
/// is used only up to the lowest tag still held by a caller, and only over
/// tags the thread has already seen (a channel's consumers deliver through
/// separate receivers, so a lower tag may still be waiting in another one).
#[derive(Default)]
struct AckTracker {
    /// Every delivery tag up to this one has been seen.
    contiguous: u64,
    /// Seen tags above `contiguous`.
    ahead: BTreeSet<u64>,
    /// Seen and not settled yet (held by a caller, or a poison copy awaiting
    /// its confirm).
    outstanding: BTreeSet<u64>,
    /// Seen, never given to a caller or taken back from it, settled by the
    /// thread once a copy is confirmed (poison and expired executes).
    held: BTreeSet<u64>,
    /// Acked by callers, not yet sent.
    pending: Vec<amiquip::Delivery>,
}

impl AckTracker {
    fn seen(&mut self, tag: u64) {
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

    /// A caller's ack; ignored (false) unless the caller still holds it.
    fn ack(&mut self, d: Box<amiquip::Delivery>) -> bool {
        if !self.outstanding.remove(&d.delivery_tag()) {
            return false;
        }
        self.pending.push(*d);
        true
    }

    /// The thread takes the delivery over from the caller.
    fn hold(&mut self, tag: u64) -> bool {
        if !self.outstanding.remove(&tag) {
            return false;
        }
        self.held.insert(tag);
        true
    }

    /// The thread acks a delivery it holds.
    fn release_ack(&mut self, d: amiquip::Delivery) {
        if self.held.remove(&d.delivery_tag()) {
            self.pending.push(d);
        }
    }

    /// The highest tag a `multiple` ack may name: everything up to it has
    /// been seen and none of it is still held by a caller.
    fn coverable(&self) -> u64 {
        let low = match (self.outstanding.first(), self.held.first()) {
            (Some(&a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b).copied(),
        };
        match low {
            Some(low) => (low - 1).min(self.contiguous),
            None => self.contiguous,
        }
    }

    fn flush(&mut self, ch: &Channel) -> amiquip::Result<()> {
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

/// An execute handed to a worker stream, with what it takes to dead-letter
/// it if the worker does not take it in time.
struct Expiring {
    claim: Claim,
    /// With its body, to publish the dead copy.
    delivery: amiquip::Delivery,
}

enum Pending {
    /// Part of a publish batch.
    Batch(u64),
    /// A poisoned copy: ack the original once the copy is confirmed.
    AckAfter {
        consumer: u64,
        delivery: Box<amiquip::Delivery>,
    },
}

struct Batch {
    remaining: usize,
    nacked: bool,
    reply: Reply<()>,
}

/// One connection's state; dropping it closes the connection.
struct Live {
    publish: Channel,
    confirms: Receiver<Confirm>,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    active: HashMap<u64, Active>,
    /// (consumer id, queue index, receiver) of every running consumer.
    recv: Vec<(u64, usize, Receiver<ConsumerMessage>)>,
    /// Executes handed to workers, by TTL deadline.
    expiry: BTreeMap<(Instant, u64, u64), Expiring>,
    /// (consumer, tag) -> deadline, to forget settled executes at once.
    expiry_index: HashMap<(u64, u64), Instant>,
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
}

impl Worker {
    fn run(mut self, ready: Reply<()>) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.connect() {
                Ok(live) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
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
                        let _ = r.send(Err(e));
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
                    let _ = reply.send(Err(AmqpError::NotConnected));
                }
                Cmd::Consume { kind, reply } => {
                    // Started when the connection is back.
                    let id = self.next_id;
                    self.next_id += 1;
                    self.specs.push(Spec { id, kind });
                    let _ = reply.send(Ok(()));
                }
                Cmd::Settle { reply, .. } => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(AmqpError::StaleDelivery));
                    }
                }
                Cmd::Shutdown { reply } => {
                    self.specs.clear();
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                    return true;
                }
            }
        }
    }

    fn connect(&mut self) -> Result<Live, AmqpError> {
        let stream = self.target.open(self.config.connect_timeout)?;
        let heartbeat = u16::try_from(self.config.heartbeat.as_secs()).unwrap_or(u16::MAX);
        let options = ConnectionOptions::default()
            .auth(Auth::Plain {
                username: self.target.username.clone(),
                password: self.target.password.clone(),
            })
            .virtual_host(self.target.vhost.clone())
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
        let _ = admin.close();
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
            batches: HashMap::new(),
            next_batch: 0,
            active: HashMap::new(),
            recv: Vec::new(),
            expiry: BTreeMap::new(),
            expiry_index: HashMap::new(),
            conn,
        };
        // Restart the consumers whose streams are still alive.
        let specs = std::mem::take(&mut self.specs);
        for spec in specs {
            if spec.kind.is_closed() {
                continue;
            }
            match self.start_consumer(&mut live, spec.id, &spec.kind) {
                Ok(()) => self.specs.push(spec),
                Err(e) => {
                    warn!(error = %e, "cannot restart an AMQP consumer");
                    spec.kind.fail(e);
                }
            }
        }
        Ok(live)
    }

    fn start_consumer(&mut self, live: &mut Live, id: u64, kind: &Kind) -> Result<(), AmqpError> {
        let ch = live
            .conn
            .open_channel(None)
            .map_err(|e| AmqpError::broker("opening a consumer channel", e))?;
        // global = true: one prefetch window for the whole stream (all its queues).
        let prefetch = match kind {
            Kind::Results(_) => self.config.result_prefetch,
            _ => self.config.prefetch,
        };
        ch.qos(0, prefetch, true)
            .map_err(|e| AmqpError::broker("setting prefetch", e))?;
        let mut no_ack = false;
        let queues = match kind {
            Kind::Executes { pool, engines, .. } => {
                topology::declare_pool(&ch, &self.names, pool, engines, &mut self.declared)?
            }
            Kind::DeadChecks(_) => vec![self.names.dead_check()],
            Kind::Results(_) => (0..self.config.result_pools)
                .map(|p| self.names.result_queue(p))
                .collect(),
            Kind::Control(_) => {
                // Every scheduler node gets every control message: a private
                // queue per consumer (acked; gone with the connection).
                let q = ch
                    .queue_declare(
                        "",
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                    )
                    .map_err(|e| AmqpError::broker("declaring a control queue", e))?;
                let name = q.name().to_string();
                ch.queue_bind(
                    name.as_str(),
                    self.names.scheduler_exchange(),
                    topology::CONTROL_KEY,
                    FieldTable::new(),
                )
                .map_err(|e| AmqpError::broker("binding a control queue", e))?;
                vec![name]
            }
            Kind::Updates(_) => {
                // Updates are transient fan-out: a private queue, no acks.
                no_ack = true;
                let q = ch
                    .queue_declare(
                        "",
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                    )
                    .map_err(|e| AmqpError::broker("declaring an update queue", e))?;
                let name = q.name().to_string();
                ch.queue_bind(
                    name.as_str(),
                    self.names.update_exchange(),
                    "#",
                    FieldTable::new(),
                )
                .map_err(|e| AmqpError::broker("binding an update queue", e))?;
                vec![name]
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
            },
        );
        Ok(())
    }

    fn stop_consumer(&mut self, live: &mut Live, id: u64) {
        live.recv.retain(|(c, _, _)| *c != id);
        live.expiry.retain(|(_, c, _), _| *c != id);
        live.expiry_index.retain(|(c, _), _| *c != id);
        if let Some(mut a) = live.active.remove(&id) {
            let _ = a.acks.flush(&a.channel);
            // Closing the channel requeues its unacked deliveries.
            let _ = a.channel.close();
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
            if let Some((deadline, _, _)) = live.expiry.keys().next() {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            let _ = sel.ready_timeout(wait);
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
                    self.on_confirm(live, c);
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
        for a in live.active.values_mut() {
            // A failed ack means the channel died; its consumer messages say
            // so and the broker requeues.
            let _ = a.acks.flush(&a.channel);
        }
        Ok(worked)
    }

    /// Dead-letters executes whose TTL ran out before a worker took them from
    /// its stream (they sat in the prefetch buffer of a busy or idle worker).
    fn expire_due(&mut self, live: &mut Live) -> Result<bool, Exit> {
        let now = Instant::now();
        let mut worked = false;
        while let Some(entry) = live.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, cid, tag), e) = entry.remove_entry();
            live.expiry_index.remove(&(cid, tag));
            worked = true;
            let Some(a) = live.active.get_mut(&cid) else {
                continue; // Its channel closed: the broker has it back.
            };
            if !a.acks.outstanding.contains(&tag) || !e.claim.expire() {
                continue; // Taken (or already settled) by the worker.
            }
            a.acks.hold(tag);
            let mut d = e.delivery;
            let copy = codec::expired(self.names.dead_check(), std::mem::take(&mut d.body));
            self.publish(
                live,
                copy,
                Pending::AckAfter {
                    consumer: cid,
                    delivery: Box::new(d),
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
                Self::fail_pending(&mut live, || AmqpError::ConnectionLost);
                Exit::Lost(e)
            }
        }
    }

    /// Stops consumers whose streams were dropped.
    fn sweep(&mut self, live: &mut Live) {
        let closed: Vec<u64> = self
            .specs
            .iter()
            .filter(|s| s.kind.is_closed())
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

    fn fail_pending(live: &mut Live, err: impl Fn() -> AmqpError) {
        live.pending.clear();
        for (_, b) in live.batches.drain() {
            let _ = b.reply.send(Err(err()));
        }
    }

    fn shutdown(&mut self, mut live: Live) {
        Self::fail_pending(&mut live, || AmqpError::Closed);
        for (_, mut a) in live.active.drain() {
            // Acks callers were told about go out before the channel closes.
            let _ = a.acks.flush(&a.channel);
            let _ = a.channel.close();
        }
        if self.config.delete_topology_on_close {
            if let Err(e) = self.delete_topology(&mut live) {
                warn!(error = %e, "cannot delete the AMQP topology");
            }
        }
        self.specs.clear();
        let _ = live.publish.close();
        let _ = live.conn.close();
    }

    fn delete_topology(&mut self, live: &mut Live) -> Result<(), AmqpError> {
        let ch = live
            .conn
            .open_channel(None)
            .map_err(|e| AmqpError::broker("opening a channel", e))?;
        let r = topology::delete_all(&ch, &mut self.declared);
        let _ = ch.close();
        r
    }

    fn on_cmd(&mut self, live: &mut Live, cmd: Cmd) -> Result<(), Exit> {
        match cmd {
            Cmd::Publish { items, reply } => {
                if items.is_empty() {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                let bid = live.next_batch;
                live.next_batch += 1;
                live.batches.insert(
                    bid,
                    Batch {
                        remaining: items.len(),
                        nacked: false,
                        reply,
                    },
                );
                for item in items {
                    self.publish(live, item, Pending::Batch(bid))?;
                }
                Ok(())
            }
            Cmd::Consume { kind, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                match self.start_consumer(live, id, &kind) {
                    Ok(()) => {
                        self.specs.push(Spec { id, kind });
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        // A failed declare may have killed the channel; make
                        // sure nothing half-started stays behind.
                        live.recv.retain(|(c, _, _)| *c != id);
                        live.active.remove(&id);
                        let _ = reply.send(Err(e));
                    }
                }
                Ok(())
            }
            Cmd::Settle {
                consumer,
                epoch,
                delivery,
                action,
                reply,
            } => {
                if let Some(deadline) = live
                    .expiry_index
                    .remove(&(consumer, delivery.delivery_tag()))
                {
                    live.expiry
                        .remove(&(deadline, consumer, delivery.delivery_tag()));
                }
                let mut poisoned = None;
                let r = if epoch != self.epoch {
                    Err(AmqpError::StaleDelivery)
                } else if let Some(a) = live.active.get_mut(&consumer) {
                    match action {
                        // Sent at the end of this pass (see AckTracker).
                        // Settled twice or taken over by the thread (an
                        // expired execute): nothing to do.
                        Settle::Ack => {
                            a.acks.ack(delivery);
                            Ok(())
                        }
                        Settle::Nack { requeue } => {
                            if a.acks.outstanding.remove(&delivery.delivery_tag()) {
                                delivery
                                    .nack(&a.channel, requeue)
                                    .map_err(|e| AmqpError::broker("settling a delivery", e))
                            } else {
                                Ok(())
                            }
                        }
                        Settle::Poison { reason } => {
                            if a.acks.hold(delivery.delivery_tag()) {
                                // Like an undecodable message: the copy goes
                                // to the poison queue, the original is acked
                                // once the copy is confirmed (requeued if not).
                                let queue = a.queues.join(",");
                                warn!(%queue, %reason, "message moved to the poison queue");
                                let copy = codec::poison(
                                    self.names.poison(),
                                    delivery.body.clone(),
                                    &queue,
                                    &reason,
                                );
                                poisoned = Some((copy, delivery));
                            }
                            Ok(())
                        }
                    }
                } else {
                    // Its channel was closed: the broker requeued it.
                    Err(AmqpError::StaleDelivery)
                };
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
                if let Some((copy, delivery)) = poisoned {
                    self.publish(live, copy, Pending::AckAfter { consumer, delivery })?;
                }
                Ok(())
            }
            Cmd::DeleteTopology { reply } => {
                let _ = reply.send(self.delete_topology(live));
                Ok(())
            }
            Cmd::Shutdown { reply } => {
                // Acknowledged before the shutdown work; `AmqpQueue::close`
                // waits for it by joining the thread.
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
                Err(Exit::Shutdown)
            }
        }
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

    fn on_confirm(&mut self, live: &mut Live, c: Confirm) {
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
                Some(Pending::Batch(bid)) => {
                    let done = match live.batches.get_mut(&bid) {
                        Some(b) => {
                            b.remaining -= 1;
                            b.nacked |= !ok;
                            b.remaining == 0
                        }
                        None => false,
                    };
                    if done {
                        if let Some(b) = live.batches.remove(&bid) {
                            let r = if b.nacked {
                                Err(AmqpError::Nacked)
                            } else {
                                Ok(())
                            };
                            let _ = b.reply.send(r);
                        }
                    }
                }
                Some(Pending::AckAfter { consumer, delivery }) => {
                    if let Some(a) = live.active.get_mut(&consumer) {
                        if ok {
                            a.acks.release_ack(*delivery);
                        } else if a.acks.held.remove(&delivery.delivery_tag()) {
                            // Not confirmed: requeue, the copy is made again.
                            let _ = delivery.nack(&a.channel, true);
                        }
                    }
                }
                None => {}
            }
        }
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
                    s.kind.fail(AmqpError::broker(
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
        let redelivered = d.redelivered;
        let headers = d.properties.headers().clone();
        let acker = |d: amiquip::Delivery| -> Box<dyn Acker> {
            Box::new(AmqpAcker {
                cmd: self.cmd_tx.clone(),
                consumer: cid,
                epoch: self.epoch,
                delivery: Some(Box::new(d)),
            })
        };
        let mut expiring = None;
        // Decode; on success hand over (false if the stream is gone).
        let decoded: Result<bool, (String, amiquip::Delivery)> = match &spec.kind {
            Kind::Executes { tx, .. } => match Message::decode(&body) {
                Ok(Message::ExecuteCheck(m)) => {
                    let claim = Claim::default();
                    let left = (m.scheduled_at + m.ttl)
                        .signed_duration_since(chrono::Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    let mut kept = d.clone();
                    kept.body = body.clone();
                    expiring = Some((Instant::now() + left, claim.clone(), kept));
                    Ok(tx
                        .send((claim, Ok(Delivery::new(m, redelivered, acker(d)))))
                        .is_ok())
                }
                Ok(other) => Err((
                    format!("expected execute_check, got {}", codec::type_name(&other)),
                    d,
                )),
                Err(e) => Err((e.to_string(), d)),
            },
            Kind::DeadChecks(tx) => match codec::decode_dead(&body, headers.as_ref()) {
                Ok(m) => {
                    d.body.clone_from(&body);
                    Ok(tx.send(Ok(Delivery::new(m, redelivered, acker(d)))).is_ok())
                }
                Err(e) => Err((e, d)),
            },
            Kind::Results(tx) => match Message::decode(&body) {
                Ok(Message::CheckResult(m)) => {
                    // Kept with the delivery, for a poisoned copy.
                    d.body.clone_from(&body);
                    Ok(tx.send(Ok(Delivery::new(m, redelivered, acker(d)))).is_ok())
                }
                Ok(other) => Err((
                    format!("expected check_result, got {}", codec::type_name(&other)),
                    d,
                )),
                Err(e) => Err((e.to_string(), d)),
            },
            Kind::Control(tx) => match Message::decode(&body) {
                Ok(Message::SchedulerControl(m)) => {
                    Ok(tx.send(Ok(Delivery::new(m, redelivered, acker(d)))).is_ok())
                }
                Ok(other) => Err((
                    format!(
                        "expected scheduler_control, got {}",
                        codec::type_name(&other)
                    ),
                    d,
                )),
                Err(e) => Err((e.to_string(), d)),
            },
            Kind::Updates(tx) => match Message::decode(&body) {
                // No acks on update queues: nothing to settle.
                Ok(Message::Update(u)) => Ok(tx.send(Ok(u)).is_ok()),
                Ok(other) => Err((
                    format!("expected update, got {}", codec::type_name(&other)),
                    d,
                )),
                Err(e) => Err((e.to_string(), d)),
            },
        };
        let is_update = matches!(spec.kind, Kind::Updates(_));
        if !is_update {
            if let Some(a) = live.active.get_mut(&cid) {
                a.acks.seen(tag);
            }
        }
        match decoded {
            Ok(true) => {
                if let Some((deadline, claim, kept)) = expiring {
                    live.expiry_index.insert((cid, tag), deadline);
                    live.expiry.insert(
                        (deadline, cid, tag),
                        Expiring {
                            claim,
                            delivery: kept,
                        },
                    );
                }
                Ok(())
            }
            Ok(false) => {
                // The stream is gone; the acker it got was dropped with it and
                // requeues. Stop consuming.
                self.stop_consumer(live, cid);
                Ok(())
            }
            Err((reason, d)) => {
                let queue = live
                    .active
                    .get(&cid)
                    .and_then(|a| a.queues.get(qi))
                    .cloned()
                    .unwrap_or_default();
                warn!(%queue, %reason, "undecodable message moved to the poison queue");
                let copy = codec::poison(self.names.poison(), body, &queue, &reason);
                if let Some(a) = live.active.get_mut(&cid) {
                    a.acks.hold(tag);
                }
                let pending = if is_update {
                    // Already acked by the broker (no-ack queue): nothing to settle.
                    Pending::Batch(u64::MAX)
                } else {
                    Pending::AckAfter {
                        consumer: cid,
                        delivery: Box::new(d),
                    }
                };
                self.publish(live, copy, pending)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_acks_never_cover_unseen_or_held_tags() {
        let mut t = AckTracker::default();
        assert_eq!(t.coverable(), 0);
        // Tags 1, 2 and 4 seen; 3 still in another receiver.
        for tag in [1, 2, 4] {
            t.seen(tag);
        }
        assert_eq!(t.contiguous, 2);
        // 1 and 2 are held by callers.
        assert_eq!(t.coverable(), 0);
        t.outstanding.remove(&1);
        assert_eq!(t.coverable(), 1);
        t.outstanding.remove(&2);
        t.outstanding.remove(&4);
        // 3 not seen: nothing above 2.
        assert_eq!(t.coverable(), 2);
        t.seen(3);
        assert_eq!(t.contiguous, 4);
        assert_eq!(t.coverable(), 2, "3 is held");
        t.outstanding.remove(&3);
        assert_eq!(t.coverable(), 4);
    }

    #[test]
    fn urls_are_parsed_with_defaults_and_decoding() {
        let t = Target::parse("amqp://u%40x:p%2Fw@broker:5673/%2f").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("broker", 5673));
        assert_eq!((t.username.as_str(), t.password.as_str()), ("u@x", "p/w"));
        assert_eq!(t.vhost, "/");
        let t = Target::parse("amqp://localhost").unwrap();
        assert_eq!(
            (t.username.as_str(), t.port, t.vhost.as_str()),
            ("guest", 5672, "/")
        );
        let t = Target::parse("amqp://h/prod").unwrap();
        assert_eq!(t.vhost, "prod");
        let e = Target::parse("amqps://u:secret@h/")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("TLS") && !e.contains("secret"), "{e}");
        assert!(Target::parse("not a url").is_err());
    }
}
