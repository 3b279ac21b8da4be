//! `InMemoryStore`: the [`Store`] contract held in process memory.
//!
//! Layout and locking:
//! - the model, its [`GraphIndex`] and one entry per check sit behind one
//!   `RwLock` that only [`Store::sync_config`] takes for writing;
//! - each check's entry (definition, state, history, alert records) has its
//!   own mutex, so results for different checks never wait for each other and
//!   results for one check serialise;
//! - group and location aggregates are maintained incrementally: when a
//!   change alters what a check contributes, its old contribution is taken
//!   out of, and the new one added to, each ancestor (a short global mutex,
//!   taken only then). Reading aggregates is therefore a copy, never a walk.
//!
//! No lock is ever held across an `.await`: every method does its work
//! synchronously. Lock order: downtimes, model, check entry, aggregates.
//!
//! Memory is bounded per check: history keeps the newest
//! [`DEFAULT_HISTORY_CAP`] entries (see [`InMemoryStore::with_history_cap`])
//! and the same number of alert records; dedupe needs only the last result id
//! (kept in the state). Downtime windows are kept until they end.

use super::{AlertRecord, Downtime, HistoryEntry, HistoryPage, StateFilter, Store, SyncReport};
use crate::aggregate::{Aggregate, Contribution, GraphIndex, GroupState, LocationState};
use crate::error::{Error, Result};
use crate::model::{Check, CheckId, CheckResult, GroupId, LocationId, Model, Policy, ResultId};
use crate::state::{self, Ack, CheckState, DependencyState, Event, Transition};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use uuid::Uuid;

/// History entries (and alert records) kept per check by default.
pub const DEFAULT_HISTORY_CAP: usize = 1_000;

/// A [`Store`] held in memory: for embedding, tests and the demo.
///
/// Nothing survives the process. Cheap to share as `Arc<dyn Store>`.
#[derive(Debug)]
pub struct InMemoryStore {
    inner: RwLock<Inner>,
    downtimes: Mutex<BTreeMap<Uuid, Downtime>>,
    history_cap: usize,
}

#[derive(Debug, Default)]
struct Inner {
    model: Arc<Model>,
    index: GraphIndex,
    /// Indexed like `index.checks()`.
    entries: Vec<Arc<Mutex<Entry>>>,
    /// Per check (same index): indices of its dependencies that exist.
    dependencies: Vec<Vec<usize>>,
    aggregates: Mutex<Aggregates>,
}

impl Inner {
    /// Every check with its entry, in index order.
    fn checks(&self) -> impl Iterator<Item = (CheckId, &Mutex<Entry>)> + '_ {
        self.index
            .checks()
            .iter()
            .zip(&self.entries)
            .map(|(id, e)| (*id, &**e))
    }
}

#[derive(Debug, Default)]
struct Aggregates {
    groups: Vec<Aggregate>,
    locations: Vec<Aggregate>,
}

#[derive(Debug)]
struct Entry {
    check: Check,
    state: CheckState,
    /// Newest first.
    history: VecDeque<HistoryEntry>,
    /// Newest first.
    alerts: VecDeque<AlertRecord>,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// What `of` finds in the graph for `check`; not found if the graph does
    /// not know the check.
    fn ancestors<T>(
        &self,
        check: CheckId,
        of: impl Fn(&GraphIndex, CheckId) -> Option<T>,
    ) -> Result<T> {
        of(&self.inner.read().index, check).ok_or_else(|| Error::not_found("check", check))
    }

    /// An empty store (sync a model into it) keeping [`DEFAULT_HISTORY_CAP`]
    /// history entries per check.
    pub fn new() -> Self {
        Self::with_history_cap(DEFAULT_HISTORY_CAP)
    }

    /// An empty store keeping at most `cap` (at least 1) history entries and
    /// alert records per check; older ones are dropped.
    pub fn with_history_cap(cap: usize) -> Self {
        InMemoryStore {
            inner: RwLock::new(Inner::default()),
            downtimes: Mutex::new(BTreeMap::new()),
            history_cap: cap.max(1),
        }
    }

    fn index_of(inner: &Inner, check: CheckId) -> Result<usize> {
        inner
            .index
            .check_index(check)
            .ok_or_else(|| Error::not_found("check", check))
    }

    fn apply_sync(&self, result: &CheckResult, now: DateTime<Utc>) -> Result<Transition> {
        let inner = self.inner.read();
        let ci = Self::index_of(&inner, result.check_id)?;
        let entry = &inner.entries[ci];
        // Dependencies are read before the check's own lock is taken so that
        // two checks depending on each other cannot deadlock.
        // (Dependency indices live outside the entry: they change only with a sync.)
        let deps: Vec<DependencyState> = inner
            .dependencies
            .get(ci)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|&d| inner.entries.get(d))
            .map(|d| {
                let d = d.lock();
                DependencyState {
                    hard: d.state.hard,
                    ok: d.state.ok,
                }
            })
            .collect();
        let mut e = entry.lock();
        let t = state::transition(&e.state, result, &e.check.policy, &deps, now);
        if t.is_applied() {
            self.save(&inner, ci, &mut e, &t, result.executed_at, Some(result.id));
        }
        Ok(t)
    }

    /// Runs an action on one check's state and saves it if applied.
    fn act(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
        f: impl FnOnce(&CheckState, &Policy) -> Transition,
    ) -> Result<Transition> {
        let inner = self.inner.read();
        let ci = Self::index_of(&inner, check)?;
        let mut e = inner.entries[ci].lock();
        let t = f(&e.state, &e.check.policy);
        if t.is_applied() {
            self.save(&inner, ci, &mut e, &t, now, None);
        }
        Ok(t)
    }

    /// Saves an applied transition: aggregates, alert records, history, state.
    fn save(
        &self,
        inner: &Inner,
        ci: usize,
        e: &mut Entry,
        t: &Transition,
        at: DateTime<Utc>,
        result_id: Option<ResultId>,
    ) {
        let old = Contribution::of(Some(&e.state));
        let new = Contribution::of(Some(&t.state));
        if old != new {
            let mut aggs = inner.aggregates.lock();
            for &g in inner.index.group_indices_of_check(ci) {
                if let Some(a) = aggs.groups.get_mut(g as usize) {
                    a.remove(old);
                    a.add(new);
                }
            }
            for &l in inner.index.location_indices_of_check(ci) {
                if let Some(a) = aggs.locations.get_mut(l as usize) {
                    a.remove(old);
                    a.add(new);
                }
            }
        }
        let check_id = e.check.id;
        for ev in &t.events {
            match ev {
                Event::Alert => {
                    if let Some(open) = t.state.current_alert {
                        e.alerts.push_front(AlertRecord {
                            id: open.id,
                            check_id,
                            opened_at: open.opened_at,
                            closed_at: None,
                            status: t.state.status,
                            worst: t.state.status,
                        });
                        e.alerts.truncate(self.history_cap);
                    }
                }
                Event::Recovery => {
                    if let Some(open) = e.state.current_alert {
                        if let Some(r) = e.alerts.iter_mut().find(|r| r.id == open.id) {
                            r.closed_at = Some(at);
                        }
                    }
                }
                Event::Realert | Event::FlappingStarted | Event::FlappingStopped => {}
            }
        }
        // The worst status seen while the alert is open (realerts included).
        if let Some(open) = t.state.current_alert {
            if let Some(r) = e.alerts.iter_mut().find(|r| r.id == open.id) {
                r.worst = r.worst.max(t.state.status);
            }
        }
        e.history.push_front(HistoryEntry {
            check_id,
            version: t.state.version,
            at,
            result_id,
            status: t.state.status,
            ok: t.state.ok,
            hard: t.state.hard,
            attempt: t.state.attempt,
            output: t.state.output.clone(),
            events: t.events.clone(),
            acknowledged: t.state.acknowledged != Ack::None,
            in_downtime: t.state.in_downtime,
            suppressed: t.state.suppressed,
            flapping: t.state.flapping,
        });
        e.history.truncate(self.history_cap);
        e.state = t.state.clone();
    }

    /// Whether some window of `check` contains `now`.
    fn in_window(downtimes: &BTreeMap<Uuid, Downtime>, check: CheckId, now: DateTime<Utc>) -> bool {
        downtimes
            .values()
            .any(|d| d.check_id == check && d.starts_at <= now && now < d.ends_at)
    }
}

fn recompute_aggregates(index: &GraphIndex, entries: &[Arc<Mutex<Entry>>]) -> Aggregates {
    let contributions: Vec<Contribution> = entries
        .iter()
        .map(|e| Contribution::of(Some(&e.lock().state)))
        .collect();
    let c = |i: usize| contributions.get(i).copied().unwrap_or_default();
    Aggregates {
        groups: index.all_group_aggregates(c),
        locations: index.all_location_aggregates(c),
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn sync_config(&self, model: &Model) -> Result<SyncReport> {
        let mut seen = HashSet::with_capacity(model.checks.len());
        for c in &model.checks {
            if !seen.insert(c.id) {
                return Err(Error::InvalidInput(format!(
                    "check {} ({}) appears twice in the model",
                    c.id,
                    c.display_name()
                )));
            }
        }
        let index = GraphIndex::new(model);
        let by_id: HashMap<CheckId, &Check> = model.checks.iter().map(|c| (c.id, c)).collect();
        let mut downtimes = self.downtimes.lock();
        let mut inner = self.inner.write();
        let mut report = SyncReport::default();
        let mut entries = Vec::with_capacity(index.checks().len());
        let mut all_dependencies = Vec::with_capacity(index.checks().len());
        for id in index.checks() {
            let Some(&check) = by_id.get(id) else {
                continue;
            };
            all_dependencies.push(
                check
                    .dependencies
                    .iter()
                    .filter_map(|d| index.check_index(*d))
                    .collect(),
            );
            match inner
                .index
                .check_index(*id)
                .and_then(|i| inner.entries.get(i))
            {
                Some(existing) => {
                    existing.lock().check = check.clone();
                    entries.push(Arc::clone(existing));
                    report.updated += 1;
                }
                None => {
                    entries.push(Arc::new(Mutex::new(Entry {
                        check: check.clone(),
                        state: state::initial_state(&check.policy),
                        history: VecDeque::new(),
                        alerts: VecDeque::new(),
                    })));
                    report.added += 1;
                }
            }
        }
        report.removed = inner
            .index
            .checks()
            .iter()
            .filter(|id| !by_id.contains_key(id))
            .count();
        downtimes.retain(|_, d| by_id.contains_key(&d.check_id));
        let aggregates = recompute_aggregates(&index, &entries);
        *inner = Inner {
            model: Arc::new(model.clone()),
            index,
            entries,
            dependencies: all_dependencies,
            aggregates: Mutex::new(aggregates),
        };
        Ok(report)
    }

    async fn model(&self) -> Result<Model> {
        Ok((*self.inner.read().model).clone())
    }

    async fn apply_result(&self, result: &CheckResult, now: DateTime<Utc>) -> Result<Transition> {
        self.apply_sync(result, now)
    }

    async fn apply_results(
        &self,
        results: &[CheckResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Transition>>> {
        Ok(results.iter().map(|r| self.apply_sync(r, now)).collect())
    }

    async fn state(&self, check: CheckId) -> Result<CheckState> {
        let inner = self.inner.read();
        let ci = Self::index_of(&inner, check)?;
        let state = inner.entries[ci].lock().state.clone();
        Ok(state)
    }

    async fn states(&self) -> Result<Vec<(CheckId, CheckState)>> {
        let inner = self.inner.read();
        Ok(inner
            .checks()
            .map(|(id, e)| (id, e.lock().state.clone()))
            .collect())
    }

    async fn matching_checks(&self, filter: &StateFilter) -> Result<Vec<CheckId>> {
        let inner = self.inner.read();
        Ok(inner
            .checks()
            .filter(|(_, e)| filter.matches(&e.lock().state))
            .map(|(id, _)| id)
            .collect())
    }

    async fn states_of(&self, checks: &[CheckId]) -> Result<Vec<(CheckId, CheckState)>> {
        let inner = self.inner.read();
        Ok(checks
            .iter()
            .filter_map(|id| {
                let i = inner.index.check_index(*id)?;
                Some((*id, inner.entries.get(i)?.lock().state.clone()))
            })
            .collect())
    }

    async fn group_states(&self, root: Option<GroupId>) -> Result<Vec<GroupState>> {
        let inner = self.inner.read();
        let aggs = inner.aggregates.lock();
        Ok(inner.index.pick_groups(&aggs.groups, root))
    }

    async fn group_states_of(&self, groups: &[GroupId]) -> Result<Vec<GroupState>> {
        let inner = self.inner.read();
        let aggs = inner.aggregates.lock();
        Ok(inner.index.pick_groups_of(&aggs.groups, groups))
    }

    async fn location_states_of(&self, locations: &[LocationId]) -> Result<Vec<LocationState>> {
        let inner = self.inner.read();
        let aggs = inner.aggregates.lock();
        Ok(inner.index.pick_locations_of(&aggs.locations, locations))
    }

    async fn location_states(&self, root: Option<LocationId>) -> Result<Vec<LocationState>> {
        let inner = self.inner.read();
        let aggs = inner.aggregates.lock();
        Ok(inner.index.pick_locations(&aggs.locations, root))
    }

    async fn ancestor_groups(&self, check: CheckId) -> Result<Vec<GroupId>> {
        self.ancestors(check, GraphIndex::ancestor_groups)
    }

    async fn ancestor_locations(&self, check: CheckId) -> Result<Vec<LocationId>> {
        self.ancestors(check, GraphIndex::ancestor_locations)
    }

    async fn acknowledge(
        &self,
        check: CheckId,
        kind: Ack,
        author: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.act(check, now, |s, p| {
            state::acknowledge_by(s, kind, author, comment, p, now)
        })
    }

    async fn remove_acknowledgement(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.act(check, now, |s, p| state::remove_acknowledgement(s, p, now))
    }

    async fn set_suppressed(
        &self,
        check: CheckId,
        suppressed: bool,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.act(check, now, |s, p| {
            state::set_suppressed(s, suppressed, p, now)
        })
    }

    async fn reset_clock(&self, check: CheckId, now: DateTime<Utc>) -> Result<Transition> {
        self.act(check, now, |s, p| state::reset_clock(s, p, now))
    }

    async fn schedule_downtime(
        &self,
        downtime: Downtime,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>> {
        if downtime.ends_at <= downtime.starts_at {
            return Err(Error::InvalidInput(format!(
                "downtime {}: ends_at {} is not after starts_at {}",
                downtime.id, downtime.ends_at, downtime.starts_at
            )));
        }
        let mut downtimes = self.downtimes.lock();
        Self::index_of(&self.inner.read(), downtime.check_id)?;
        let check = downtime.check_id;
        let active = downtime.starts_at <= now && now < downtime.ends_at;
        downtimes.insert(downtime.id, downtime);
        if active {
            self.act(check, now, |s, p| state::set_downtime(s, true, p, now))
                .map(Some)
        } else {
            Ok(None)
        }
    }

    async fn cancel_downtime(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(CheckId, Transition)>> {
        let mut downtimes = self.downtimes.lock();
        let d = downtimes
            .get(&id)
            .filter(|d| d.ends_at > now)
            .cloned()
            .ok_or_else(|| Error::not_found("downtime", id))?;
        if d.starts_at <= now {
            // A started window ends now (and is kept, as ended ones are).
            if let Some(kept) = downtimes.get_mut(&id) {
                kept.ends_at = now;
            }
        } else {
            downtimes.remove(&id);
        }
        if Self::in_window(&downtimes, d.check_id, now) {
            return Ok(None);
        }
        let t = self.act(d.check_id, now, |s, p| {
            state::set_downtime(s, false, p, now)
        })?;
        Ok(t.is_applied().then_some((d.check_id, t)))
    }

    async fn downtimes(&self, check: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>> {
        let downtimes = self.downtimes.lock();
        let mut v: Vec<Downtime> = downtimes
            .values()
            .filter(|d| check.is_none_or(|c| d.check_id == c) && d.ends_at > now)
            .cloned()
            .collect();
        v.sort_by_key(|d| (d.starts_at, d.id));
        Ok(v)
    }

    async fn apply_due_downtimes(&self, now: DateTime<Utc>) -> Result<Vec<(CheckId, Transition)>> {
        let mut downtimes = self.downtimes.lock();
        let mut want: BTreeMap<CheckId, bool> = BTreeMap::new();
        for d in downtimes.values() {
            let on = d.starts_at <= now && now < d.ends_at;
            *want.entry(d.check_id).or_insert(false) |= on;
        }
        let keep_after = now - super::downtime_retention();
        downtimes.retain(|_, d| d.ends_at > keep_after);
        let mut out = Vec::new();
        for (check, on) in want {
            let t = match self.act(check, now, |s, p| {
                if s.in_downtime == on {
                    Transition {
                        outcome: state::Outcome::Unchanged,
                        state: s.clone(),
                        events: Vec::new(),
                        next_interval: state::next_interval(s, p),
                        interval_changed: false,
                        contribution_changed: false,
                        closed_alert: None,
                    }
                } else {
                    state::set_downtime(s, on, p, now)
                }
            }) {
                Ok(t) => t,
                // The check went away with a config sync: nothing to do.
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if t.is_applied() {
                out.push((check, t));
            }
        }
        Ok(out)
    }

    async fn history(&self, check: CheckId, page: HistoryPage) -> Result<Vec<HistoryEntry>> {
        let inner = self.inner.read();
        let ci = Self::index_of(&inner, check)?;
        let e = inner.entries[ci].lock();
        Ok(e.history
            .iter()
            .filter(|h| page.before_version.is_none_or(|b| h.version < b))
            .take(page.limit)
            .cloned()
            .collect())
    }

    async fn alerts(&self, check: Option<CheckId>, limit: usize) -> Result<Vec<AlertRecord>> {
        let inner = self.inner.read();
        let mut v: Vec<AlertRecord> = match check {
            Some(c) => {
                let ci = Self::index_of(&inner, c)?;
                let e = inner.entries[ci].lock();
                e.alerts.iter().cloned().collect()
            }
            None => inner
                .entries
                .iter()
                .flat_map(|e| e.lock().alerts.iter().cloned().collect::<Vec<_>>())
                .collect(),
        };
        v.sort_by_key(|r| std::cmp::Reverse((r.opened_at, r.id)));
        v.truncate(limit);
        Ok(v)
    }

    async fn active_alerts(&self, closed_since: DateTime<Utc>) -> Result<Vec<AlertRecord>> {
        let inner = self.inner.read();
        let mut v: Vec<AlertRecord> = inner
            .entries
            .iter()
            .flat_map(|e| {
                e.lock()
                    .alerts
                    .iter()
                    .filter(|r| r.closed_at.is_none_or(|c| c >= closed_since))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by_key(|r| (r.opened_at, r.id));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{at, flipping, history, host, policy, result, SITE};

    #[tokio::test]
    async fn history_is_capped_per_check() {
        let store = InMemoryStore::with_history_cap(2);
        let model = Model {
            site: SITE.into(),
            checks: vec![host("h", &[], None, policy(1, 1))],
            ..Model::default()
        };
        store.sync_config(&model).await.unwrap();
        let c = CheckId::host(SITE, "h");
        for i in 0..20 {
            store
                .apply_result(&result(c, flipping(i), i), at(i))
                .await
                .unwrap();
        }
        let h = history(&store, c, None, 100).await;
        assert_eq!(
            h.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![20, 19]
        );
        // Flipping opens three alerts before flapping holds them back.
        assert_eq!(
            store.alerts(Some(c), 100).await.unwrap().len(),
            2,
            "alert records capped too"
        );
        assert_eq!(
            store.state(c).await.unwrap().version,
            20,
            "the state is not capped"
        );
    }

    #[tokio::test]
    async fn duplicate_check_ids_are_refused() {
        let store = InMemoryStore::new();
        let h = host("h", &[], None, policy(1, 1));
        let model = Model {
            site: SITE.into(),
            checks: vec![h.clone(), h],
            ..Model::default()
        };
        let err = store.sync_config(&model).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.contains("twice")),
            "{err}"
        );
    }
}
