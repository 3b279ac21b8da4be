//! The pure schedule: every scheduled check, its interval and its next due
//! time, in a binary heap keyed by due time. No I/O, no clock reads: time is
//! always an argument, so the same calls give the same dispatches.

use crate::model::{Check, CheckId, CheckKind, Model, Policy};
use crate::queue::{ExecuteCheck, SchedulerControl};
use crate::state::CheckState;
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Shortest interval the schedule runs a check at; shorter intervals
/// (a zero `every` from a bad config) are raised to it so a check can never
/// spin.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Tuning of a [`Schedule`]. [`Default`] gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// A check popped later than this after its due time is *late*: the
    /// schedule is behind, and late checks are re-spread over
    /// `catch_up_window` instead of all being fired at once. Default 1 s.
    pub lag_threshold: Duration,
    /// The window over which late checks are re-spread (capped at each
    /// check's interval). Default 10 s.
    pub catch_up_window: Duration,
    /// At most one "scheduler is behind" warning per this period. Default 10 s.
    pub warn_every: Duration,
    /// TTL of an execute-now request. Default 30 s.
    pub execute_now_ttl: Duration,
    /// Seed of the execute ids: ids are unique within one schedule and
    /// deterministic for a given seed. The driver seeds it randomly.
    pub seed: u64,
    /// Number of scheduling partitions: check `c` belongs to partition
    /// [`partition_of`]`(c, partitions)`, and a schedule dispatches only the
    /// checks of the partitions it owns (all of them unless told otherwise,
    /// see [`Schedule::set_owned_partitions`]). Every node of a cluster must
    /// use the same value. Default 64; 0 is taken as 1.
    pub partitions: u32,
}

/// Default number of scheduling partitions.
pub const DEFAULT_PARTITIONS: u32 = 64;

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            lag_threshold: Duration::from_secs(1),
            catch_up_window: Duration::from_secs(10),
            warn_every: Duration::from_secs(10),
            execute_now_ttl: Duration::from_secs(30),
            seed: 0,
            partitions: DEFAULT_PARTITIONS,
        }
    }
}

/// Counters and gauges of a schedule (and of its driver), for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Checks held (every schedulable check of the model, enabled or not).
    pub checks: usize,
    /// Checks held and enabled.
    pub enabled: usize,
    /// Executes dispatched since start (execute-now included).
    pub dispatched: u64,
    /// Of those, execute-now requests.
    pub executed_now: u64,
    /// Checks found late (beyond the lag threshold) and re-spread, since start.
    pub late: u64,
    /// Worst lateness seen since start, in milliseconds.
    pub lag_max_ms: u64,
    /// Worst lateness in the most recent dispatch round, in milliseconds.
    pub lag_last_ms: u64,
    /// Whether the schedule is behind: the last round found late checks, or
    /// re-spread checks are still waiting for their catch-up slot.
    pub behind: bool,
    /// Re-spread checks still waiting for their catch-up slot.
    pub catching_up: usize,
    /// "Scheduler is behind" warnings logged (at most one per `warn_every`).
    pub lag_warnings: u64,
    /// Model reloads applied.
    pub reloads: u64,
    /// Executes the driver failed to publish (the check runs at its next turn).
    pub publish_errors: u64,
    /// Scheduling partitions this schedule owns (dispatches).
    pub partitions_owned: usize,
    /// Enabled checks in owned partitions: the checks this schedule runs.
    pub scheduled: usize,
    /// Ownership changes applied (partitions gained or lost).
    pub ownership_changes: u64,
}

/// What [`Schedule::set_owned_partitions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnershipChange {
    /// Partitions newly owned.
    pub gained: usize,
    /// Partitions no longer owned.
    pub lost: usize,
    /// Enabled checks that started being dispatched here.
    pub checks_started: usize,
    /// Enabled checks that stopped being dispatched here.
    pub checks_stopped: usize,
}

/// What [`Schedule::apply_model`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Checks that were not held before.
    pub added: usize,
    /// Checks no longer in the model (or no longer schedulable).
    pub removed: usize,
    /// Held checks whose intervals or enabled flag changed in config.
    pub retimed: usize,
    /// Held checks whose timing was kept as it was.
    pub kept: usize,
    /// Duplicate check ids in the model (only the first was used).
    pub duplicates: usize,
}

/// One execute decided by [`Schedule::due_with`], borrowing from the schedule
/// so that deciding allocates nothing; [`Dispatch::to_execute`] builds the
/// message.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    /// Id for the execute request (unique within the schedule).
    pub id: Uuid,
    /// The check.
    pub check_id: CheckId,
    /// The model's site.
    pub site: &'a str,
    /// The worker pool.
    pub pool: &'a str,
    /// The executor engine.
    pub engine: &'a str,
    /// Engine parameters.
    pub params: &'a BTreeMap<String, serde_json::Value>,
    /// `policy.timeout`.
    pub timeout: Duration,
    /// The check's current interval, or the execute-now TTL.
    pub ttl: Duration,
    /// Whether this is an execute-now request.
    pub execute_now: bool,
    /// How long after its due time the check is dispatched.
    pub lateness: Duration,
}

impl Dispatch<'_> {
    /// Builds the [`ExecuteCheck`] message, sent at `scheduled_at`.
    pub fn to_execute(&self, scheduled_at: DateTime<Utc>) -> ExecuteCheck {
        ExecuteCheck {
            id: self.id,
            check_id: self.check_id,
            site: self.site.to_owned(),
            pool: self.pool.to_owned(),
            engine: self.engine.to_owned(),
            params: self.params.clone(),
            timeout: self.timeout,
            ttl: self.ttl,
            scheduled_at,
            execute_now: self.execute_now,
        }
    }
}

/// Whether the schedule holds a check at all: active checks, enabled or not
/// (Enable may turn a config-disabled one on). This is
/// [`Check::is_scheduled`] without its `enabled` clause.
fn schedulable(check: &Check) -> bool {
    check.kind != CheckKind::Trap && !crate::exec::engine::is_passive(&check.engine)
}

/// splitmix64's finaliser: a cheap, well-mixing bijection on `u64`.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit hash of a check id, stable across processes and releases.
fn id_hash(id: CheckId) -> u64 {
    let v = id.0.as_u128();
    mix64((v >> 64) as u64 ^ mix64(v as u64))
}

/// Salt of the partition hash, so that a check's partition and its spread
/// offset are independent.
const PARTITION_SALT: u64 = 0x005E_ED0F_BE12_6A70;

/// The scheduling partition of a check among `partitions` (0 is taken as 1):
/// a 64-bit hash of the UUID's bytes (splitmix64 mixing, no random seed)
/// modulo `partitions`. Stable across processes, nodes and releases.
pub fn partition_of(id: CheckId, partitions: u32) -> u32 {
    (mix64(id_hash(id) ^ PARTITION_SALT) % u64::from(partitions.max(1))) as u32
}

fn to_ms(d: Duration) -> u64 {
    (d.max(MIN_INTERVAL).as_millis()).min(u128::from(u64::MAX)) as u64
}

/// The deterministic offset of a check's first run within its interval:
/// a hash of its id modulo the interval (millisecond resolution). Ids are
/// UUIDs, so over many checks the offsets are uniform over the interval.
pub fn spread_offset(id: CheckId, interval: Duration) -> Duration {
    Duration::from_millis(id_hash(id) % to_ms(interval))
}

/// The intervals of a policy, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Intervals {
    every: u64,
    retry: u64,
    changing: Option<u64>,
}

impl Intervals {
    fn of(p: &Policy) -> Self {
        Intervals {
            every: to_ms(p.every),
            retry: to_ms(p.retry_every),
            changing: p.changing_every.map(to_ms),
        }
    }

    /// The interval under `new` that plays the role `current` played under
    /// `self` (every, retry or changing); an interval that is none of them
    /// came from the state machine under some other policy and is kept.
    fn map(&self, current: u64, new: &Intervals) -> u64 {
        if current == self.every {
            new.every
        } else if current == self.retry {
            new.retry
        } else if Some(current) == self.changing {
            new.changing.unwrap_or(new.retry)
        } else {
            current
        }
    }
}

/// One held check.
#[derive(Debug)]
struct Entry {
    id: CheckId,
    /// The slot holds a check (else it is on the free list).
    live: bool,
    /// Bumped whenever the check's heap item is replaced or dropped: a heap
    /// item with another generation is stale and skipped.
    gen: u32,
    pool: String,
    engine: String,
    params: BTreeMap<String, serde_json::Value>,
    timeout: Duration,
    policy: Intervals,
    /// Current interval (ms).
    interval: u64,
    /// Next due time (ms since origin); meaningful while enabled.
    next_due: u64,
    last_dispatch: Option<u64>,
    /// `enabled` as the config says (to tell config changes from runtime
    /// overrides on reload).
    cfg_enabled: bool,
    enabled: bool,
    /// Found late and re-spread: runs at its catch-up slot whatever happens.
    catching_up: bool,
    /// An execute-now is queued for it.
    now_pending: bool,
    /// Reload epoch in which the model last listed it.
    seen: u64,
    /// Its scheduling partition.
    partition: u32,
    /// Its partition is owned here: it is dispatched (when enabled).
    owned: bool,
    /// The last run known from outside (ms since origin, may be negative:
    /// before the origin), given by [`Schedule::resume`].
    resumed: Option<i64>,
}

impl Entry {
    /// Its regular dispatch as request `id` (ttl: its interval, on time);
    /// execute-nows and late dispatches change what differs.
    fn dispatch<'a>(&'a self, id: Uuid, site: &'a str) -> Dispatch<'a> {
        Dispatch {
            id,
            check_id: self.id,
            site,
            pool: &self.pool,
            engine: &self.engine,
            params: &self.params,
            timeout: self.timeout,
            ttl: Duration::from_millis(self.interval),
            execute_now: false,
            lateness: Duration::ZERO,
        }
    }
}

/// A heap item: due time, slot, generation. Ordered by due time, then slot,
/// so dispatch order is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    due: u64,
    slot: u32,
    gen: u32,
}

/// The pure, deterministic schedule of every scheduled check.
///
/// Entries live in a slab (`Vec`) indexed by a `HashMap<CheckId, slot>`; a
/// min-heap of `(due, slot, generation)` items orders them. Dispatching a
/// check pops one item and pushes one, so steady-state dispatch allocates
/// nothing in the schedule itself. Replaced items are invalidated lazily by
/// the generation and dropped when popped; the heap is rebuilt when stale
/// items exceed the live ones.
///
/// Times are [`tokio::time::Instant`]s (so the driver works under tokio's
/// paused clock), kept internally as milliseconds since `origin`.
///
/// See `docs/scheduler.md` for the spread, interval and lag rules.
#[derive(Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    origin: Instant,
    site: String,
    entries: Vec<Entry>,
    free: Vec<u32>,
    index: HashMap<CheckId, u32>,
    heap: BinaryHeap<Reverse<Item>>,
    now_queue: VecDeque<CheckId>,
    epoch: u64,
    counter: u64,
    enabled_count: usize,
    catching_up: usize,
    stats: SchedulerStats,
    last_warn: Option<u64>,
    late_since_warn: u64,
    /// Owned flag per partition.
    owned: Vec<bool>,
    /// Enabled checks of owned partitions.
    scheduled_count: usize,
}

impl Schedule {
    /// An empty schedule whose clock starts at `origin`.
    pub fn new(config: ScheduleConfig, origin: Instant) -> Self {
        Schedule {
            origin,
            site: String::new(),
            entries: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            heap: BinaryHeap::new(),
            now_queue: VecDeque::new(),
            epoch: 0,
            counter: 0,
            enabled_count: 0,
            catching_up: 0,
            stats: SchedulerStats::default(),
            last_warn: None,
            late_since_warn: 0,
            owned: vec![true; config.partitions.max(1) as usize],
            scheduled_count: 0,
            config,
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    /// Number of checks held (enabled or not).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no check is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The counters, as of now.
    pub fn stats(&self) -> SchedulerStats {
        let mut s = self.stats.clone();
        s.checks = self.index.len();
        s.enabled = self.enabled_count;
        s.catching_up = self.catching_up;
        s.partitions_owned = self.owned.iter().filter(|o| **o).count();
        s.scheduled = self.scheduled_count;
        s.behind = self.catching_up > 0 || s.lag_last_ms > to_ms_raw(self.config.lag_threshold);
        s
    }

    /// Mutable access to the counters the driver keeps (publish errors).
    pub(crate) fn stats_mut(&mut self) -> &mut SchedulerStats {
        &mut self.stats
    }

    /// When the check runs next here (`None` if unknown, disabled or in a
    /// partition this schedule does not own).
    pub fn next_due(&self, id: CheckId) -> Option<Instant> {
        let e = &self.entries[*self.index.get(&id)? as usize];
        (e.enabled && e.owned).then(|| self.instant(e.next_due))
    }

    /// The check's current interval (`None` if unknown).
    pub fn interval(&self, id: CheckId) -> Option<Duration> {
        let e = &self.entries[*self.index.get(&id)? as usize];
        Some(Duration::from_millis(e.interval))
    }

    /// Whether the check is enabled (`None` if unknown).
    pub fn is_enabled(&self, id: CheckId) -> Option<bool> {
        Some(self.entries[*self.index.get(&id)? as usize].enabled)
    }

    /// The earliest time anything may be due: now if an execute-now is
    /// queued. May be early (a stale heap item); never late.
    pub fn next_wake(&self) -> Option<Instant> {
        if !self.now_queue.is_empty() {
            return Some(self.origin);
        }
        self.heap.peek().map(|Reverse(i)| self.instant(i.due))
    }

    /// Puts a check's current timing on the heap (after its generation was bumped).
    fn push(&mut self, slot: u32) {
        let e = &self.entries[slot as usize];
        self.heap.push(Reverse(Item {
            due: e.next_due,
            slot,
            gen: e.gen,
        }));
    }

    /// Sets the next due time of an enabled check, invalidating its old item.
    fn set_due(&mut self, slot: u32, due: u64) {
        let e = &mut self.entries[slot as usize];
        e.next_due = due;
        e.gen = e.gen.wrapping_add(1);
        self.push(slot);
    }

    /// Starts scheduling an entry at `now` plus its spread offset (if its
    /// partition is owned; else it is only marked enabled).
    fn start(&mut self, slot: u32, now: u64) {
        let e = &mut self.entries[slot as usize];
        if !e.enabled {
            e.enabled = true;
            self.enabled_count += 1;
            if e.owned {
                self.scheduled_count += 1;
            }
        }
        if !e.owned {
            return;
        }
        let due = now + id_hash(e.id) % e.interval;
        self.set_due(slot, due);
    }

    /// Stops scheduling an entry (its heap item goes stale).
    fn stop(&mut self, slot: u32) {
        let e = &mut self.entries[slot as usize];
        if e.enabled {
            e.enabled = false;
            self.enabled_count -= 1;
            if e.owned {
                self.scheduled_count -= 1;
            }
        }
        if e.catching_up {
            e.catching_up = false;
            self.catching_up -= 1;
        }
        e.gen = e.gen.wrapping_add(1);
    }

    /// The last run the cadence counts from (ms since origin, possibly
    /// negative): the later of the last local dispatch and the last run
    /// given by [`resume`](Self::resume).
    fn anchor(e: &Entry) -> Option<i64> {
        let local = e.last_dispatch.map(|t| t as i64);
        match (local, e.resumed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Places an enabled, owned entry that starts (again) being dispatched
    /// here at `now`, continuing its cadence: one interval after its last
    /// known run when that is still ahead; spread over the catch-up window
    /// (capped at the interval) when it is overdue, so a gained partition
    /// never fires as a burst; its spread offset from now when no run is
    /// known.
    fn place(&mut self, slot: u32, now: u64) {
        let e = &self.entries[slot as usize];
        let due = match Self::anchor(e) {
            Some(anchor) => {
                let next = anchor.saturating_add(e.interval as i64);
                if next > now as i64 {
                    // Never more than one interval ahead (a last run "in the
                    // future" is clock skew between nodes).
                    (next as u64).min(now + e.interval)
                } else {
                    let w = to_ms_raw(self.config.catch_up_window)
                        .max(1)
                        .min(e.interval);
                    now + mix64(id_hash(e.id) ^ anchor as u64) % w
                }
            }
            None => now + id_hash(e.id) % e.interval,
        };
        self.set_due(slot, due);
    }

    /// The number of scheduling partitions.
    pub fn partitions(&self) -> u32 {
        self.owned.len() as u32
    }

    /// The partition of a held check (`None` if unknown).
    pub fn partition(&self, id: CheckId) -> Option<u32> {
        Some(self.entries[*self.index.get(&id)? as usize].partition)
    }

    /// The partitions this schedule owns (dispatches).
    pub fn owned_partitions(&self) -> BTreeSet<u32> {
        (0..self.partitions())
            .filter(|p| self.owned[*p as usize])
            .collect()
    }

    /// Whether the check's partition is owned here (`None` if unknown).
    pub fn is_owned(&self, id: CheckId) -> Option<bool> {
        Some(self.entries[*self.index.get(&id)? as usize].owned)
    }

    /// Makes `owned` the set of partitions this schedule dispatches, at
    /// `now` (numbers `>= partitions()` are ignored).
    ///
    /// Checks of a lost partition stop at once (their timing is dropped,
    /// not their interval or enabled state). Checks of a gained partition
    /// continue their cadence: the next run is one interval after the last
    /// run known (dispatched here before, or given by
    /// [`resume`](Self::resume) - call it first, with the store's
    /// `last_check_at`) when that is still ahead, else spread over the
    /// catch-up window; never a burst, never a cadence reset. A check with
    /// no known run starts at its spread offset from `now`.
    pub fn set_owned_partitions(&mut self, owned: &BTreeSet<u32>, now: Instant) -> OwnershipChange {
        let now = self.ms(now);
        let mut change = OwnershipChange::default();
        let mut flip = vec![false; self.owned.len()];
        for (p, o) in self.owned.iter_mut().enumerate() {
            let want = owned.contains(&(p as u32));
            if want != *o {
                flip[p] = true;
                if want {
                    change.gained += 1;
                } else {
                    change.lost += 1;
                }
                *o = want;
            }
        }
        if change.gained == 0 && change.lost == 0 {
            return change;
        }
        for slot in 0..self.entries.len() {
            let e = &mut self.entries[slot];
            if !e.live || !flip[e.partition as usize] {
                continue;
            }
            let want = self.owned[e.partition as usize];
            e.owned = want;
            if !e.enabled {
                continue;
            }
            if want {
                self.scheduled_count += 1;
                change.checks_started += 1;
                self.place(slot as u32, now);
            } else {
                self.scheduled_count -= 1;
                change.checks_stopped += 1;
                if e.catching_up {
                    e.catching_up = false;
                    self.catching_up -= 1;
                }
                e.gen = e.gen.wrapping_add(1);
            }
        }
        self.stats.ownership_changes += 1;
        self.maybe_compact();
        change
    }

    /// Tells the schedule when a check last ran (the store's
    /// `last_check_at`, wall time), `now` being `wall_now` on the wall clock.
    ///
    /// The run is remembered for when the check's partition is gained (see
    /// [`set_owned_partitions`](Self::set_owned_partitions)). If the check
    /// is dispatched here already but has not run here yet (a restart: the
    /// schedule started from spread offsets), it moves to continue that
    /// cadence at once. A check that ran here keeps its own, fresher,
    /// timing. Returns whether the check is held.
    pub fn resume(
        &mut self,
        id: CheckId,
        last_check_at: DateTime<Utc>,
        now: Instant,
        wall_now: DateTime<Utc>,
    ) -> bool {
        let now = self.ms(now);
        let Some(&slot) = self.index.get(&id) else {
            return false;
        };
        let ago = (wall_now - last_check_at).num_milliseconds();
        let at = (now as i64).saturating_sub(ago);
        let e = &mut self.entries[slot as usize];
        e.resumed = Some(e.resumed.map_or(at, |r| r.max(at)));
        if e.enabled && e.owned && e.last_dispatch.is_none() && !e.catching_up {
            self.place(slot, now);
        }
        true
    }

    /// Resumes a check from its stored state: its interval becomes the one
    /// the state machine gives that state (soft: `changing_every` or
    /// `retry_every`; hard ok: `every`; hard not ok: `retry_every`, as
    /// `state::next_interval`), then its cadence continues from
    /// `last_check_at` as with [`resume`](Self::resume). This is what a
    /// node that gains a check (or restarts) knows of the `Reschedule`s
    /// another node received. Returns whether the check is held.
    pub fn resume_state(
        &mut self,
        id: CheckId,
        state: &CheckState,
        now: Instant,
        wall_now: DateTime<Utc>,
    ) -> bool {
        let Some(&slot) = self.index.get(&id) else {
            return false;
        };
        let p = self.entries[slot as usize].policy;
        let interval = if !state.hard {
            p.changing.unwrap_or(p.retry)
        } else if state.ok {
            p.every
        } else {
            p.retry
        };
        // The interval first, so that the placement below uses it.
        let now_ms = self.ms(now);
        self.adjust(slot, interval, now_ms);
        if let Some(at) = state.last_check_at {
            self.resume(id, at, now, wall_now);
        }
        true
    }

    /// Applies a (re)loaded model at `now`.
    ///
    /// - Unchanged checks keep their next due time and current interval.
    /// - New checks start at `now` plus their spread offset.
    /// - Checks gone from the model (or now passive) are dropped.
    /// - Changed intervals adjust: the current interval maps to its
    ///   counterpart in the new policy (every -> every, retry -> retry,
    ///   changing -> changing), then moves like a [`reschedule`](Self::reschedule).
    /// - A changed `enabled` in config wins over an Enable/Disable order;
    ///   an unchanged one keeps the order's effect.
    ///
    /// Pool, engine, params and timeout are always taken from the new model.
    pub fn apply_model(&mut self, model: &Model, now: Instant) -> ReloadSummary {
        let now = self.ms(now);
        let mut sum = ReloadSummary::default();
        self.epoch += 1;
        let epoch = self.epoch;
        if self.site != model.site {
            self.site.clone_from(&model.site);
        }
        for c in &model.checks {
            if !schedulable(c) {
                continue;
            }
            let intervals = Intervals::of(&c.policy);
            if let Some(&slot) = self.index.get(&c.id) {
                let e = &mut self.entries[slot as usize];
                if e.seen == epoch {
                    sum.duplicates += 1;
                    continue;
                }
                e.seen = epoch;
                if e.pool != c.pool {
                    e.pool.clone_from(&c.pool);
                }
                if e.engine != c.engine {
                    e.engine.clone_from(&c.engine);
                }
                if e.params != c.params {
                    e.params.clone_from(&c.params);
                }
                e.timeout = c.policy.timeout;
                let mut retimed = false;
                if e.policy != intervals {
                    let mapped = e.policy.map(e.interval, &intervals);
                    e.policy = intervals;
                    self.adjust(slot, mapped, now);
                    retimed = true;
                }
                let e = &mut self.entries[slot as usize];
                if e.cfg_enabled != c.enabled {
                    e.cfg_enabled = c.enabled;
                    retimed = true;
                    if c.enabled && !e.enabled {
                        self.start(slot, now);
                    } else if !c.enabled && e.enabled {
                        self.stop(slot);
                    }
                }
                if retimed {
                    sum.retimed += 1;
                } else {
                    sum.kept += 1;
                }
            } else {
                sum.added += 1;
                let entry = Entry {
                    id: c.id,
                    live: true,
                    gen: 0,
                    pool: c.pool.clone(),
                    engine: c.engine.clone(),
                    params: c.params.clone(),
                    timeout: c.policy.timeout,
                    policy: intervals,
                    interval: intervals.every,
                    next_due: 0,
                    last_dispatch: None,
                    cfg_enabled: c.enabled,
                    enabled: false,
                    catching_up: false,
                    now_pending: false,
                    seen: epoch,
                    partition: 0,
                    owned: false,
                    resumed: None,
                };
                let partition = partition_of(c.id, self.partitions());
                let entry = Entry {
                    partition,
                    owned: self.owned[partition as usize],
                    ..entry
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        let gen = self.entries[slot as usize].gen;
                        self.entries[slot as usize] = Entry { gen, ..entry };
                        slot
                    }
                    None => {
                        self.entries.push(entry);
                        u32::try_from(self.entries.len() - 1)
                            .expect("fewer than 2^32 checks (a u32 slot index)")
                    }
                };
                self.index.insert(c.id, slot);
                if c.enabled {
                    self.start(slot, now);
                }
            }
        }
        // Drop what the model no longer lists.
        for slot in 0..self.entries.len() {
            let e = &self.entries[slot];
            if e.live && e.seen != epoch {
                sum.removed += 1;
                self.remove(slot as u32);
            }
        }
        self.stats.reloads += 1;
        self.maybe_compact();
        sum
    }

    fn remove(&mut self, slot: u32) {
        self.stop(slot);
        let e = &mut self.entries[slot as usize];
        e.live = false;
        e.now_pending = false;
        e.params = BTreeMap::new();
        self.index.remove(&e.id);
        self.free.push(slot);
    }

    /// Changes an entry's interval to `new` (ms) at `now`; see [`reschedule`](Self::reschedule).
    fn adjust(&mut self, slot: u32, new: u64, now: u64) {
        let e = &mut self.entries[slot as usize];
        let old = e.interval;
        if new == old {
            return;
        }
        e.interval = new;
        if !e.enabled || !e.owned || e.catching_up {
            return;
        }
        // The run the cadence counts from: the last known run, or for a
        // check that never ran the run one old interval before its first.
        let anchor = Self::anchor(e)
            .map(|a| a.max(0) as u64)
            .unwrap_or_else(|| e.next_due.saturating_sub(old));
        let target = (anchor + new).clamp(now, now + new);
        let due = if new < old {
            e.next_due.min(target)
        } else {
            e.next_due.max(target).min(now + new)
        };
        if due != e.next_due {
            self.set_due(slot, due);
        }
    }

    /// Sets a check's interval (a `Reschedule` from the processor) at `now`.
    ///
    /// The next run moves to one new interval after the last run, but never
    /// into the past and never more than the new interval from now; a shorter
    /// interval never delays the next run, a longer one never brings it
    /// forward. Returns whether the check is held.
    pub fn reschedule(&mut self, id: CheckId, interval: Duration, now: Instant) -> bool {
        let now = self.ms(now);
        match self.index.get(&id) {
            Some(&slot) => {
                self.adjust(slot, to_ms(interval), now);
                true
            }
            None => false,
        }
    }

    /// Queues an execute-now (TTL `execute_now_ttl`) for the next dispatch
    /// round; the normal cadence is not changed. Disabled checks run too: a
    /// person asked. Requests for a check already queued merge. Only the
    /// node that owns the check's partition runs it (every scheduler node
    /// receives every control message). Returns whether it was queued (the
    /// check is held and owned here).
    pub fn execute_now(&mut self, id: CheckId) -> bool {
        match self.index.get(&id) {
            Some(&slot) => {
                let e = &mut self.entries[slot as usize];
                if !e.owned {
                    return false;
                }
                if !e.now_pending {
                    e.now_pending = true;
                    self.now_queue.push_back(id);
                }
                true
            }
            None => false,
        }
    }

    /// Enables a check at `now`: it runs at `now` plus its spread offset,
    /// then at its interval. Enabling an enabled check changes nothing.
    /// Returns whether the check is held.
    pub fn enable(&mut self, id: CheckId, now: Instant) -> bool {
        let now = self.ms(now);
        match self.index.get(&id) {
            Some(&slot) => {
                if !self.entries[slot as usize].enabled {
                    self.start(slot, now);
                }
                true
            }
            None => false,
        }
    }

    /// Disables a check: it is not run until enabled again (execute-now
    /// still runs it). Returns whether the check is held.
    pub fn disable(&mut self, id: CheckId) -> bool {
        match self.index.get(&id) {
            Some(&slot) => {
                self.stop(slot);
                true
            }
            None => false,
        }
    }

    /// Applies a control message at `now`. Returns whether its check is held.
    pub fn apply_control(&mut self, control: &SchedulerControl, now: Instant) -> bool {
        match control {
            SchedulerControl::Reschedule { check_id, interval } => {
                self.reschedule(*check_id, *interval, now)
            }
            SchedulerControl::ExecuteNow { check_id } => self.execute_now(*check_id),
            SchedulerControl::Enable { check_id } => self.enable(*check_id, now),
            SchedulerControl::Disable { check_id } => self.disable(*check_id),
        }
    }

    fn next_id(&mut self) -> Uuid {
        self.counter += 1;
        let a = mix64(self.config.seed ^ self.counter);
        let b = mix64(a ^ self.config.seed.rotate_left(32));
        let v = (u128::from(a) << 64) | u128::from(b);
        uuid::Builder::from_random_bytes(v.to_be_bytes()).into_uuid()
    }

    /// Decides everything due at `now` and hands each dispatch to `f`:
    /// queued execute-nows first, then due checks in due-time order.
    /// Returns how many were dispatched.
    ///
    /// A check popped more than `lag_threshold` after its due time is not
    /// dispatched but re-spread over the catch-up window (it then runs once
    /// at its slot, however many intervals it missed); this round's
    /// lateness goes into the stats and, rate-limited, a warning.
    ///
    /// Call it at [`next_wake`](Self::next_wake) (as the driver does), or at
    /// least every `lag_threshold`: a caller polling more coarsely than that
    /// finds its checks late and gets them re-spread.
    pub fn due_with<F>(&mut self, now: Instant, mut f: F) -> usize
    where
        F: FnMut(Dispatch<'_>),
    {
        let now = self.ms(now);
        let mut n = 0;
        while let Some(id) = self.now_queue.pop_front() {
            let Some(&slot) = self.index.get(&id) else {
                continue;
            };
            if !self.entries[slot as usize].now_pending {
                // A request for an earlier holder of this id (removed, re-added).
                continue;
            }
            let uid = self.next_id();
            let e = &mut self.entries[slot as usize];
            e.now_pending = false;
            e.last_dispatch = Some(now);
            f(Dispatch {
                ttl: self.config.execute_now_ttl,
                execute_now: true,
                ..e.dispatch(uid, &self.site)
            });
            n += 1;
            self.stats.executed_now += 1;
        }

        let threshold = to_ms_raw(self.config.lag_threshold);
        let window = to_ms_raw(self.config.catch_up_window).max(1);
        let mut late = 0u64;
        let mut worst = 0u64;
        while let Some(&Reverse(item)) = self.heap.peek() {
            if item.due > now {
                break;
            }
            self.heap.pop();
            let e = &self.entries[item.slot as usize];
            if e.gen != item.gen || !e.live || !e.enabled || !e.owned {
                continue;
            }
            let lateness = now - item.due;
            worst = worst.max(lateness);
            if lateness > threshold && !e.catching_up {
                // Behind: re-spread over the catch-up window rather than
                // firing everything that piled up at once.
                let w = window.min(e.interval);
                let due = now + mix64(id_hash(e.id) ^ item.due) % w;
                let e = &mut self.entries[item.slot as usize];
                e.catching_up = true;
                self.catching_up += 1;
                late += 1;
                self.set_due(item.slot, due);
                continue;
            }
            let uid = self.next_id();
            let e = &mut self.entries[item.slot as usize];
            if e.catching_up {
                e.catching_up = false;
                self.catching_up -= 1;
            }
            e.last_dispatch = Some(now);
            f(Dispatch {
                lateness: Duration::from_millis(lateness),
                ..e.dispatch(uid, &self.site)
            });
            n += 1;
            // Keep the phase (due + interval), unless that is already past:
            // a check overdue by several intervals runs once, not N times.
            let mut next = item.due + e.interval;
            if next <= now {
                next = now + e.interval;
            }
            e.next_due = next;
            self.push(item.slot);
        }

        self.stats.dispatched += n as u64;
        self.stats.lag_last_ms = worst;
        self.stats.lag_max_ms = self.stats.lag_max_ms.max(worst);
        self.stats.late += late;
        if late > 0 {
            self.late_since_warn += late;
            let quiet = self
                .last_warn
                .is_none_or(|t| now.saturating_sub(t) >= to_ms_raw(self.config.warn_every));
            if quiet {
                tracing::warn!(
                    late = self.late_since_warn,
                    lag_ms = worst,
                    catch_up_window_ms = window,
                    "scheduler is behind: late checks re-spread over the catch-up window"
                );
                self.last_warn = Some(now);
                self.stats.lag_warnings += 1;
                self.late_since_warn = 0;
            }
        }
        self.maybe_compact();
        n
    }

    /// Decides everything due at `now` (see [`due_with`](Self::due_with))
    /// and builds the execute messages, stamped `scheduled_at = wall`.
    pub fn due(&mut self, now: Instant, wall: DateTime<Utc>) -> Vec<ExecuteCheck> {
        let mut out = Vec::new();
        self.due_with(now, |d| out.push(d.to_execute(wall)));
        out
    }

    /// Rebuilds the heap once stale items outnumber live ones (many
    /// reschedules or disables), so memory stays bounded.
    fn maybe_compact(&mut self) {
        if self.heap.len() <= 2 * self.scheduled_count + 1024 {
            return;
        }
        let mut items = std::mem::take(&mut self.heap).into_vec();
        items.clear();
        for (slot, e) in self.entries.iter().enumerate() {
            if e.live && e.enabled && e.owned {
                items.push(Reverse(Item {
                    due: e.next_due,
                    slot: slot as u32,
                    gen: e.gen,
                }));
            }
        }
        self.heap = BinaryHeap::from(items);
    }

    /// Number of heap items, stale ones included (for tests and the benchmark).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

/// A duration in milliseconds, without the minimum-interval floor.
fn to_ms_raw(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
