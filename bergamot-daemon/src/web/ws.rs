//! The `/ws` websocket: live updates for browsers and tools.
//!
//! Protocol (JSON text frames), client to server:
//! `{"subscribe": {"all": true}}`, `{"subscribe": {"groups": ["<id or name>"]}}`
//! (the groups and all their descendants), `{"subscribe": {"checks": ["<id>"]}}`,
//! `{"unsubscribe": {...}}` (same shape), `{"execute_now": "<check id>"}`,
//! `{"ping": <any>}` (answered `{"pong": <same>}`). Server to client: every
//! text frame is a JSON array of one or more messages, in order: [`Update`]s
//! (`kind` = `check` | `group` | `location` | `alert`, each with a `seq`
//! number) and replies `{"subscribed": ...}`, `{"executing": ...}`,
//! `{"pong": ...}`, `{"error": ..., "field": ...}`. Websocket ping frames keep
//! the connection alive.
//!
//! One update is serialised once and its bytes are shared by every client.
//! Each client has a bounded outbox: check, group and location updates are
//! keyed by object, so a slow client gets the latest update per object
//! (coalesced) and its memory is bounded by the number of objects; alerts go
//! into a capped queue (oldest dropped, counted). A client whose outbox still
//! overflows is disconnected. Check updates carry the state version; the hub
//! drops a check update not newer than one it dispatched before (a
//! redelivery, or another node's late copy), so a client never gets an
//! older version of a check after a newer one.
//!
//! Each client's writer wakes when its outbox turns non-empty, takes
//! everything pending (at most [`DEFAULT_MAX_UPDATES_PER_FRAME`] messages or
//! about [`DEFAULT_MAX_FRAME_BYTES`]) and sends it as one frame. A lone update therefore goes out at once, in a frame
//! of its own; under load, what arrives while a frame is being written goes
//! into the next one, so the number of frames per client follows the speed of
//! its connection, not the rate of updates.

use super::auth::{Principal, Role};
use super::metrics::Metrics;
use super::{ApiError, IntoResponseInner, ModelIndex, WebContext};
use bergamot_core::model::{CheckId, GroupId, LocationId};
use bergamot_core::queue::Update;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use warp::ws::{Message, WebSocket};
use warp::Filter;

/// Most distinct objects pending for one client before it is disconnected.
pub const MAX_PENDING_OBJECTS: usize = 200_000;
/// Most alert updates pending for one client; older ones are dropped.
pub const MAX_PENDING_ALERTS: usize = 1_000;
/// Most messages sent in one websocket frame, unless changed with
/// [`Hub::set_frame_limits`]; a larger backlog goes out in several frames.
pub const DEFAULT_MAX_UPDATES_PER_FRAME: usize = 512;
/// A frame stops taking updates once it holds this many bytes, unless
/// changed with [`Hub::set_frame_limits`]; it always carries at least one.
/// This bounds what a connection's buffers hold (its frame and the socket
/// writer's buffer, which keeps the capacity of the largest frame).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024;
/// Most replies pending for one client.
const MAX_PENDING_REPLIES: usize = 256;
/// Websocket ping interval.
const PING_EVERY: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Check(CheckId),
    Group(GroupId),
    Location(LocationId),
}

/// Hashes ids (UUIDs, already well mixed) cheaply: the outbox does a lookup
/// per update per client, and SipHash showed in the dispatcher's profile.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone)]
struct Outgoing {
    version: u64,
    text: Arc<str>,
}

/// What a client asked to see.
#[derive(Debug, Clone, Default)]
struct Subscription {
    all: bool,
    groups: HashSet<GroupId>,
    checks: HashSet<CheckId>,
}

impl Subscription {
    /// The `{"subscribed": ...}` reply: what the client now receives.
    fn reply(&self) -> serde_json::Value {
        serde_json::json!({ "subscribed": {
            "all": self.all, "groups": self.groups, "checks": self.checks,
        }})
    }

    fn wants(&self, idx: &ModelIndex, update: &Update) -> bool {
        if self.all {
            return true;
        }
        match update {
            Update::Check(u) => self.wants_check(idx, u.check_id),
            Update::Alert(u) => self.wants_check(idx, u.check_id),
            Update::Heartbeat(_) => false,
            Update::Group(u) => idx.group_under_any(u.group_id, &self.groups),
            // Locations are a separate tree: only "all" sees them.
            Update::Location(_) => false,
        }
    }

    fn wants_check(&self, idx: &ModelIndex, check: CheckId) -> bool {
        self.checks.contains(&check) || idx.check_under_any(check, &self.groups)
    }
}

#[derive(Debug, Default)]
struct Outbox {
    /// The latest update not sent yet, per object (check, group, location).
    objects: IdMap<Key, Outgoing>,
    /// Objects with a pending update, in the order they became pending.
    order: VecDeque<Key>,
    alerts: VecDeque<Arc<str>>,
    replies: VecDeque<Arc<str>>,
}

impl Outbox {
    fn len(&self) -> usize {
        self.order.len() + self.alerts.len() + self.replies.len()
    }
}

/// What one dispatch did to the clients' outboxes, applied to the shared
/// metrics once per dispatch instead of once per client.
#[derive(Debug, Default)]
struct Tally {
    /// Updates added to outboxes (alerts replacing a dropped alert: 0).
    added: i64,
    coalesced: u64,
    max_len: u64,
}

impl Tally {
    /// Applies the counts; `reserved` pending updates were added to the
    /// gauge ahead (so that a writer taking an update never drives it
    /// below zero) and are given back here.
    fn apply(&self, metrics: &Metrics, reserved: u64) {
        let added = u64::try_from(self.added).unwrap_or(0);
        if reserved > added {
            metrics
                .ws_pending
                .fetch_sub(reserved - added, Ordering::Relaxed);
        } else if added > reserved {
            metrics
                .ws_pending
                .fetch_add(added - reserved, Ordering::Relaxed);
        }
        if self.coalesced > 0 {
            metrics
                .ws_coalesced
                .fetch_add(self.coalesced, Ordering::Relaxed);
        }
        if self.max_len > metrics.ws_pending_max.load(Ordering::Relaxed) {
            metrics
                .ws_pending_max
                .fetch_max(self.max_len, Ordering::Relaxed);
        }
    }
}

struct Client {
    principal: Principal,
    sub: RwLock<Subscription>,
    outbox: Mutex<Outbox>,
    notify: Notify,
    dropped: AtomicBool,
    /// Set when a reload revoked the client's credentials.
    revoked: AtomicBool,
}

impl Client {
    /// Queues `out` (keyed updates coalesce per object); wakes the writer
    /// when the outbox turns non-empty (a non-empty outbox has a wake-up
    /// pending already: the writer drains until it finds it empty).
    fn push(&self, key: Option<Key>, out: &Outgoing, metrics: &Metrics, tally: &mut Tally) {
        let mut ob = self.outbox.lock();
        let was_empty = ob.len() == 0;
        match key {
            Some(k) => {
                if let Some(existing) = ob.objects.get_mut(&k) {
                    if out.version >= existing.version {
                        *existing = out.clone();
                    }
                    drop(ob);
                    tally.coalesced += 1;
                    return;
                }
                if ob.objects.len() >= MAX_PENDING_OBJECTS {
                    drop(ob);
                    if !self.dropped.swap(true, Ordering::Relaxed) {
                        metrics.ws_clients_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    self.notify.notify_one();
                    return;
                }
                ob.objects.insert(k, out.clone());
                ob.order.push_back(k);
            }
            None => {
                if ob.alerts.len() >= MAX_PENDING_ALERTS {
                    ob.alerts.pop_front();
                    metrics.ws_alerts_dropped.fetch_add(1, Ordering::Relaxed);
                    tally.added -= 1;
                }
                ob.alerts.push_back(out.text.clone());
            }
        }
        let len = ob.len() as u64;
        drop(ob);
        tally.added += 1;
        tally.max_len = tally.max_len.max(len);
        if was_empty {
            self.notify.notify_one();
        }
    }

    fn reply(&self, value: serde_json::Value, metrics: &Metrics) {
        let mut ob = self.outbox.lock();
        if ob.replies.len() >= MAX_PENDING_REPLIES {
            return;
        }
        let was_empty = ob.len() == 0;
        ob.replies.push_back(Arc::from(value.to_string()));
        drop(ob);
        metrics.ws_pending.fetch_add(1, Ordering::Relaxed);
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Moves up to `max` messages (and about `max_bytes`) to send into
    /// `into`: replies, then alerts, then objects in the order they first
    /// became pending.
    fn take(&self, max: usize, max_bytes: usize, metrics: &Metrics, into: &mut Vec<Arc<str>>) {
        let mut ob = self.outbox.lock();
        let mut taken = 0u64;
        let mut bytes = 0usize;
        while into.len() < max {
            if let Some(r) = ob.replies.pop_front() {
                into.push(r);
            } else if let Some(a) = ob.alerts.pop_front() {
                into.push(a);
            } else if let Some(k) = ob.order.pop_front() {
                let Some(out) = ob.objects.remove(&k) else {
                    continue;
                };
                bytes += out.text.len() + 1;
                into.push(out.text);
                if bytes >= max_bytes {
                    taken += 1;
                    break;
                }
            } else {
                break;
            }
            taken += 1;
        }
        drop(ob);
        if taken > 0 {
            metrics.ws_pending.fetch_sub(taken, Ordering::Relaxed);
        }
    }

    fn discard(&self, metrics: &Metrics) {
        let mut ob = self.outbox.lock();
        metrics
            .ws_pending
            .fetch_sub(ob.len() as u64, Ordering::Relaxed);
        *ob = Outbox::default();
    }
}

/// Fans updates out to websocket clients; see the module docs.
pub struct Hub {
    clients: Mutex<HashMap<u64, Arc<Client>>>,
    /// The clients as a list, rebuilt on connect and disconnect, so that a
    /// dispatch clones one `Arc` instead of one per client.
    snapshot: RwLock<Arc<Vec<Arc<Client>>>>,
    max_per_frame: AtomicUsize,
    max_frame_bytes: AtomicUsize,
    /// The highest version dispatched per check: an update not newer is
    /// dropped here, once for every client, so each check's updates reach
    /// the outboxes in increasing version order and a client (which only
    /// ever replaces a pending update by a newer one) can never get an
    /// older version after a newer one. One entry per check.
    latest: Mutex<IdMap<CheckId, u64>>,
    next_id: AtomicU64,
    seq: AtomicU64,
    index: Arc<RwLock<Arc<ModelIndex>>>,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
}

impl Hub {
    /// A hub reading the model through `index`.
    pub fn new(index: Arc<RwLock<Arc<ModelIndex>>>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            clients: Mutex::new(HashMap::new()),
            snapshot: RwLock::new(Arc::new(Vec::new())),
            max_per_frame: AtomicUsize::new(DEFAULT_MAX_UPDATES_PER_FRAME),
            max_frame_bytes: AtomicUsize::new(DEFAULT_MAX_FRAME_BYTES),
            latest: Mutex::new(IdMap::default()),
            next_id: AtomicU64::new(1),
            seq: AtomicU64::new(0),
            index,
            metrics,
            shutdown: watch::channel(false).0,
        })
    }

    /// Replaces the model the hub reads and forgets the versions of the
    /// checks no longer in it: a check removed from the config and added
    /// back starts again at version 0, and an old entry would drop its
    /// updates as stale.
    pub fn set_model(&self, index: Arc<ModelIndex>) {
        let mut latest = self.latest.lock();
        *self.index.write() = index.clone();
        latest.retain(|id, _| index.check(*id).is_some());
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.lock().len()
    }

    /// Sets the most messages one frame carries and the size after which a
    /// frame takes no more (both at least 1). `(1, _)` sends every update in
    /// a frame of its own (the latency bench compares both).
    pub fn set_frame_limits(&self, max_messages: usize, max_bytes: usize) {
        self.max_per_frame
            .store(max_messages.max(1), Ordering::Relaxed);
        self.max_frame_bytes
            .store(max_bytes.max(1), Ordering::Relaxed);
    }

    /// Updates pending for each client now (for tests and diagnostics).
    pub fn pending_per_client(&self) -> Vec<usize> {
        self.clients
            .lock()
            .values()
            .map(|c| c.outbox.lock().len())
            .collect()
    }

    /// Sends one update to every client that subscribed to it.
    pub fn dispatch(&self, update: &Update) {
        // Signs of life are for this node's `/healthz`, not for clients.
        if let Update::Heartbeat(h) = update {
            self.metrics.health.saw(h);
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (key, version) = match update {
            Update::Check(u) => {
                let version = u.state.version;
                let mut latest = self.latest.lock();
                let last = latest.entry(u.check_id).or_insert(0);
                if version <= *last && version != 0 {
                    drop(latest);
                    self.metrics
                        .ws_stale_skipped
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                *last = version;
                (Some(Key::Check(u.check_id)), version)
            }
            // Aggregates carry no version; the hub's sequence orders them.
            Update::Group(u) => (Some(Key::Group(u.group_id)), seq),
            Update::Location(u) => (Some(Key::Location(u.location_id)), seq),
            Update::Alert(_) => (None, seq),
            Update::Heartbeat(_) => return,
        };
        let clients = self.snapshot.read().clone();
        if clients.is_empty() {
            return;
        }
        let Some(text) = encode(update, seq) else {
            return;
        };
        let out = Outgoing { version, text };
        let idx = self.index.read().clone();
        let reserved = clients.len() as u64;
        self.metrics
            .ws_pending
            .fetch_add(reserved, Ordering::Relaxed);
        let mut tally = Tally::default();
        for c in clients.iter() {
            if c.sub.read().wants(&idx, update) {
                c.push(key, &out, &self.metrics, &mut tally);
            }
        }
        tally.apply(&self.metrics, reserved);
    }

    /// Dispatches every update of `updates` until `shutdown`, then closes
    /// every client. The update stream ending before `shutdown` is an
    /// error: a web node without live updates must not look healthy.
    pub async fn run(
        self: Arc<Self>,
        mut updates: BoxStream<'static, bergamot_core::Result<Update>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> bergamot_core::Result<()> {
        tokio::pin!(shutdown);
        let outcome = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                next = updates.next() => match next {
                    Some(Ok(u)) => self.dispatch(&u),
                    Some(Err(e)) => tracing::warn!(error = %e, "update stream error"),
                    None => {
                        break Err(bergamot_core::Error::Closed(
                            "the update stream ended".into(),
                        ));
                    }
                }
            }
        };
        self.close_all();
        outcome
    }

    /// Disconnects (close code 1008) every client whose principal `keep`
    /// refuses, e.g. after a reload removed its user or token; returns how
    /// many.
    pub fn revoke(&self, keep: impl Fn(&Principal) -> bool) -> usize {
        let clients = self.snapshot.read().clone();
        let mut n = 0;
        for c in clients.iter() {
            if !keep(&c.principal) && !c.revoked.swap(true, Ordering::Relaxed) {
                tracing::info!(principal = %c.principal.name, "websocket closed: credentials revoked");
                c.notify.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Disconnects every client.
    pub fn close_all(&self) {
        self.shutdown.send(true).ok();
    }

    fn register(&self, principal: Principal) -> (u64, Arc<Client>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client {
            principal,
            sub: RwLock::new(Subscription::default()),
            outbox: Mutex::new(Outbox::default()),
            notify: Notify::new(),
            dropped: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
        });
        let mut clients = self.clients.lock();
        clients.insert(id, client.clone());
        *self.snapshot.write() = Arc::new(clients.values().cloned().collect());
        drop(clients);
        self.metrics.ws_clients.fetch_add(1, Ordering::Relaxed);
        (id, client)
    }

    fn unregister(&self, id: u64) {
        let mut clients = self.clients.lock();
        let removed = clients.remove(&id);
        if removed.is_some() {
            *self.snapshot.write() = Arc::new(clients.values().cloned().collect());
        }
        drop(clients);
        if let Some(c) = removed {
            c.discard(&self.metrics);
            self.metrics.ws_clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The update as JSON with its `seq` number appended, serialised once.
fn encode(update: &Update, seq: u64) -> Option<Arc<str>> {
    let mut text = match serde_json::to_string(update) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise update");
            return None;
        }
    };
    // Updates are internally tagged objects, so never `{}`: the text ends
    // with the closing brace of a non-empty object.
    if text.len() > 2 && text.ends_with('}') {
        text.pop();
        write!(text, ",\"seq\":{seq}}}").ok();
    }
    Some(Arc::from(text))
}

/// One websocket frame: the messages as a JSON array.
fn frame(batch: &[Arc<str>]) -> String {
    let len = batch.iter().map(|t| t.len() + 1).sum::<usize>() + 1;
    let mut out = String::with_capacity(len);
    out.push('[');
    for (i, t) in batch.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(t);
    }
    out.push(']');
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(default)]
    subscribe: Option<SubscribeRequest>,
    #[serde(default)]
    unsubscribe: Option<SubscribeRequest>,
    #[serde(default)]
    execute_now: Option<String>,
    #[serde(default)]
    ping: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    checks: Vec<String>,
}

fn error_json(e: &ApiError) -> serde_json::Value {
    serde_json::json!({ "error": e.error, "field": e.field })
}

fn resolve(idx: &ModelIndex, req: &SubscribeRequest, what: &str) -> Result<Subscription, ApiError> {
    let mut sub = Subscription {
        all: req.all,
        ..Default::default()
    };
    for g in &req.groups {
        let group = idx.find_group(g).ok_or_else(|| {
            ApiError::not_found(
                format!("group {g:?} not found"),
                Some(&format!("{what}.groups")),
            )
        })?;
        sub.groups.insert(group.id);
    }
    for c in &req.checks {
        let id: CheckId = c.parse().map_err(|_| {
            ApiError::bad_request(
                &format!("{what}.checks"),
                format!("{c:?} is not a check id"),
            )
        })?;
        if idx.check(id).is_none() {
            return Err(ApiError::not_found(
                format!("check {id} not found"),
                Some(&format!("{what}.checks")),
            ));
        }
        sub.checks.insert(id);
    }
    Ok(sub)
}

async fn handle_text(ctx: &WebContext, client: &Client, text: &str) {
    let metrics = &ctx.metrics;
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            client.reply(
                error_json(&ApiError::bad_request("message", e.to_string())),
                metrics,
            );
            return;
        }
    };
    let idx = ctx.index();
    if let Some(req) = msg.subscribe {
        match resolve(&idx, &req, "subscribe") {
            Ok(add) => {
                let mut sub = client.sub.write();
                sub.all |= add.all;
                sub.groups.extend(add.groups);
                sub.checks.extend(add.checks);
                let reply = sub.reply();
                drop(sub);
                client.reply(reply, metrics);
            }
            Err(e) => client.reply(error_json(&e), metrics),
        }
    }
    if let Some(req) = msg.unsubscribe {
        match resolve(&idx, &req, "unsubscribe") {
            Ok(rm) => {
                let mut sub = client.sub.write();
                if rm.all {
                    *sub = Subscription::default();
                }
                sub.groups.retain(|g| !rm.groups.contains(g));
                sub.checks.retain(|c| !rm.checks.contains(c));
                let reply = sub.reply();
                drop(sub);
                client.reply(reply, metrics);
            }
            Err(e) => client.reply(error_json(&e), metrics),
        }
    }
    if let Some(id) = msg.execute_now {
        let result = async {
            client.principal.require(Role::Operator)?;
            let check_id: CheckId = id.parse().map_err(|_| {
                ApiError::bad_request("execute_now", format!("{id:?} is not a check id"))
            })?;
            let check = idx.check(check_id).cloned().ok_or_else(|| {
                ApiError::not_found(format!("check {check_id} not found"), Some("execute_now"))
            })?;
            super::api::execute_now(ctx, &check).await?;
            Ok::<_, ApiError>(check_id)
        }
        .await;
        match result {
            Ok(check_id) => client.reply(serde_json::json!({ "executing": check_id }), metrics),
            Err(e) => client.reply(error_json(&e), metrics),
        }
    }
    if let Some(p) = msg.ping {
        client.reply(serde_json::json!({ "pong": p }), metrics);
    }
}

async fn session(ctx: Arc<WebContext>, principal: Principal, socket: WebSocket) {
    let hub = ctx.hub.clone();
    let (id, client) = hub.register(principal);
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = hub.shutdown.subscribe();
    let writer_client = client.clone();
    let metrics = ctx.metrics.clone();
    let mut writer_shutdown = shutdown.clone();
    let hub_for_writer = hub.clone();
    let writer = async move {
        let mut batch = Vec::with_capacity(64);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            if *writer_shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = writer_client.notify.notified() => {}
                _ = ping.tick() => {
                    if sink.send(Message::ping(Vec::new())).await.is_err() {
                        break;
                    }
                    continue;
                }
                _ = writer_shutdown.changed() => break,
            }
            if writer_client.revoked.load(Ordering::Relaxed) {
                sink.send(Message::close_with(1008u16, "credentials revoked"))
                    .await
                    .ok();
                break;
            }
            if writer_client.dropped.load(Ordering::Relaxed) {
                sink.send(Message::close_with(
                    1008u16,
                    "too slow: update queue overflowed",
                ))
                .await
                .ok();
                break;
            }
            // Let the tasks that are ready run first (on an idle server
            // this returns at once): under load the outbox collects more
            // per frame and the result processor is not starved by a
            // thousand writers.
            tokio::task::yield_now().await;
            // Drain: everything pending goes out as one frame; whatever
            // arrives meanwhile goes into the next.
            loop {
                let max = hub_for_writer.max_per_frame.load(Ordering::Relaxed);
                let max_bytes = hub_for_writer.max_frame_bytes.load(Ordering::Relaxed);
                writer_client.take(max, max_bytes, &metrics, &mut batch);
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let text = frame(&batch);
                let len = text.len() as u64;
                batch.clear();
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
                metrics.ws_frames_sent.fetch_add(1, Ordering::Relaxed);
                metrics.ws_bytes_sent.fetch_add(len, Ordering::Relaxed);
                metrics.ws_messages_sent.fetch_add(n, Ordering::Relaxed);
            }
        }
        sink.close().await.ok();
    };
    let reader_ctx = ctx.clone();
    let reader_client = client.clone();
    let reader = async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                msg = stream.next() => match msg {
                    Some(Ok(m)) if m.is_text() => {
                        if let Ok(t) = m.to_str() {
                            handle_text(&reader_ctx, &reader_client, t).await;
                        }
                    }
                    Some(Ok(m)) if m.is_close() => break,
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
    };
    // Either half ending ends the session.
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    hub.unregister(id);
}

/// The `/ws` route: checks `Origin` (see [`super::auth::Auth::origin_allowed`]:
/// 403 for a page of another origin), then authenticates on upgrade (Basic,
/// Bearer, `?token=` or a short-lived `?ticket=` from `/api/whoami`).
pub(crate) fn route(
    ctx: Arc<WebContext>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path!("ws")
        .and(warp::ws())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<super::server::Peer>())
        .then(
            move |ws: warp::ws::Ws,
                  auth: Option<String>,
                  origin: Option<String>,
                  host: Option<String>,
                  query: HashMap<String, String>,
                  peer: Option<super::server::Peer>| {
                let ctx = ctx.clone();
                async move {
                    if !ctx.auth.origin_allowed(origin.as_deref(), host.as_deref()) {
                        tracing::warn!(
                            origin = origin.as_deref().unwrap_or("-"),
                            "websocket refused: origin not allowed"
                        );
                        return ApiError::forbidden(
                            "this origin may not open the websocket (see [web] public_urls)",
                        )
                        .into_response();
                    }
                    let principal = ctx
                        .auth
                        .check(super::auth::Credentials {
                            authorization: auth.as_deref(),
                            token: query.get("token").map(String::as_str),
                            ticket: query.get("ticket").map(String::as_str),
                            peer: peer.map(|p| p.0.ip()),
                        })
                        .await
                        .and_then(|p| p.require(Role::Viewer).map(|_| p));
                    match principal {
                        Ok(p) => ws
                            .max_message_size(64 * 1024)
                            .on_upgrade(move |socket| session(ctx, p, socket))
                            .into_response_inner(),
                        Err(e) => e.into_response(),
                    }
                }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bergamot_core::queue::CheckUpdate;
    use bergamot_core::state::initial_state;

    #[test]
    fn encode_appends_seq_to_the_update_object() {
        let mut state = initial_state(&Default::default());
        state.version = 7;
        state.output = "a \"quoted\" }".into();
        let update = Update::Check(CheckUpdate {
            check_id: CheckId::trap("s", "h", "t"),
            state,
            events: vec![],
        });
        let text = encode(&update, 42).expect("encoded");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["kind"], "check");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["state"]["version"], 7);
        assert_eq!(v["state"]["output"], "a \"quoted\" }");
    }

    #[test]
    fn a_check_removed_and_added_back_starts_its_versions_again() {
        use bergamot_core::model::{Check, Model};
        let check = Check::host("s", "h").engine("dummy").build();
        let model = |checks: Vec<Check>| {
            Arc::new(ModelIndex::new(Model {
                site: "s".into(),
                checks,
                groups: vec![],
                locations: vec![],
            }))
        };
        let metrics = Arc::new(Metrics::default());
        let index = Arc::new(RwLock::new(model(vec![check.clone()])));
        let hub = Hub::new(index, metrics.clone());
        let update = |version| {
            let mut state = initial_state(&Default::default());
            state.version = version;
            Update::Check(CheckUpdate {
                check_id: check.id,
                state,
                events: vec![],
            })
        };
        let skipped = || metrics.ws_stale_skipped.load(Ordering::Relaxed);
        hub.dispatch(&update(5));
        hub.dispatch(&update(4));
        assert_eq!(skipped(), 1, "an older version is stale");
        // Reloads that keep the check keep its version.
        hub.set_model(model(vec![check.clone()]));
        hub.dispatch(&update(5));
        assert_eq!(skipped(), 2);
        hub.set_model(model(vec![]));
        hub.set_model(model(vec![check.clone()]));
        hub.dispatch(&update(1));
        hub.dispatch(&update(2));
        assert_eq!(skipped(), 2, "the re-added check's versions pass");
    }

    #[test]
    fn a_frame_is_a_json_array_of_its_messages() {
        let batch: Vec<Arc<str>> = vec![
            Arc::from(r#"{"pong":1}"#),
            Arc::from(r#"{"kind":"group","seq":2}"#),
        ];
        let v: serde_json::Value = serde_json::from_str(&frame(&batch)).expect("json");
        assert_eq!(
            v,
            serde_json::json!([{"pong": 1}, {"kind": "group", "seq": 2}])
        );
        let one: serde_json::Value = serde_json::from_str(&frame(&batch[..1])).expect("json");
        assert_eq!(one, serde_json::json!([{"pong": 1}]));
    }

    #[test]
    fn take_coalesces_per_object_and_respects_the_frame_limit() {
        let metrics = Metrics::default();
        let client = Client {
            principal: Principal {
                name: "t".into(),
                role: Role::Viewer,
                anonymous: true,
                source: Default::default(),
            },
            sub: RwLock::new(Subscription::default()),
            outbox: Mutex::new(Outbox::default()),
            notify: Notify::new(),
            dropped: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
        };
        let a = Key::Check(CheckId::trap("s", "h", "a"));
        let b = Key::Check(CheckId::trap("s", "h", "b"));
        for v in 1..=5u64 {
            for (k, name) in [(a, "a"), (b, "b")] {
                let out = Outgoing {
                    version: v,
                    text: Arc::from(format!("{name}{v}")),
                };
                let mut tally = Tally::default();
                client.push(Some(k), &out, &metrics, &mut tally);
                tally.apply(&metrics, 0);
            }
        }
        // An older version arriving late does not replace the pending one.
        let mut tally = Tally::default();
        client.push(
            Some(a),
            &Outgoing {
                version: 2,
                text: Arc::from("a2"),
            },
            &metrics,
            &mut tally,
        );
        tally.apply(&metrics, 0);
        let mut batch = Vec::new();
        client.take(1, usize::MAX, &metrics, &mut batch);
        assert_eq!(batch, vec![Arc::<str>::from("a5")]);
        client.take(10, usize::MAX, &metrics, &mut batch);
        assert_eq!(batch, vec![Arc::<str>::from("a5"), Arc::from("b5")]);
        assert_eq!(metrics.ws_pending.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.ws_coalesced.load(Ordering::Relaxed), 9);
        // The byte limit ends a frame after the message that reaches it.
        for (k, name) in [(a, "a6"), (b, "b6")] {
            let mut tally = Tally::default();
            let out = Outgoing {
                version: 6,
                text: Arc::from(name),
            };
            client.push(Some(k), &out, &metrics, &mut tally);
            tally.apply(&metrics, 0);
        }
        batch.clear();
        client.take(10, 2, &metrics, &mut batch);
        assert_eq!(batch, vec![Arc::<str>::from("a6")]);
        batch.clear();
        client.take(10, 2, &metrics, &mut batch);
        assert_eq!(batch, vec![Arc::<str>::from("b6")]);
        assert_eq!(metrics.ws_pending.load(Ordering::Relaxed), 0);
    }
}
