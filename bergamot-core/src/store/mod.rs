//! The `Store` trait: where check states, history and the model live, and its
//! in-memory backend.
//!
//! # Contract
//!
//! - [`Store::apply_result`] is atomic per check: lock the check's state, drop
//!   a duplicate (the last applied result id) or stale result (at or before
//!   the last applied one in `(executed_at, id)` order), run the pure
//!   [`transition`](crate::state::transition),
//!   save the state with `version + 1`, append the transition to history and
//!   open / close alert records. Concurrent calls for one check serialise;
//!   calls for different checks do not block each other.
//! - A result for a check the store does not know is [`Error::NotFound`](crate::Error::NotFound).
//! - [`Store::group_states`] / [`Store::location_states`] return exactly the
//!   aggregates of [`crate::aggregate`] for the whole graph or a subtree.
//! - [`Store::sync_config`] upserts the model: new checks start in the initial
//!   state, kept checks keep their state (attempts, flap history, acks,
//!   downtimes), removed objects go away without touching the others.
//! - Downtime, acknowledgement and suppression take effect at once: they return
//!   the [`Transition`] so the caller publishes it and recomputes groups.
//! - Everything survives a restart of a persistent backend.

mod memory;

pub use memory::{InMemoryStore, DEFAULT_HISTORY_CAP};

use crate::aggregate::{GroupState, LocationState};
use crate::error::Result;
use crate::model::{CheckId, CheckResult, GroupId, LocationId, Model, ResultId, Status};
use crate::state::{Ack, CheckState, Event, Transition};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// What a config sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Checks that were new.
    pub added: usize,
    /// Checks that existed and were updated (state kept).
    pub updated: usize,
    /// Checks that were removed.
    pub removed: usize,
}

/// One row of a check's history: an applied change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The check.
    pub check_id: CheckId,
    /// The state version this change produced.
    pub version: u64,
    /// When it was applied (the result's `executed_at`, or the time of the action).
    pub at: DateTime<Utc>,
    /// The result applied, if the change came from a result.
    pub result_id: Option<ResultId>,
    /// Status after.
    pub status: Status,
    /// Ok-ness after.
    pub ok: bool,
    /// Hard after.
    pub hard: bool,
    /// Attempt after.
    pub attempt: u32,
    /// Output after.
    pub output: Arc<str>,
    /// Events of the change.
    pub events: Vec<Event>,
    /// Acknowledged after (normal or sticky).
    #[serde(default)]
    pub acknowledged: bool,
    /// In a downtime after.
    #[serde(default)]
    pub in_downtime: bool,
    /// Notifications suppressed after.
    #[serde(default)]
    pub suppressed: bool,
    /// Flapping after.
    #[serde(default)]
    pub flapping: bool,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Only entries with a version below this (None: from the newest).
    pub before_version: Option<u64>,
    /// At most this many entries.
    pub limit: usize,
}

/// How long a store keeps a downtime window after it ended (or was
/// cancelled): 7 days. [`Store::apply_due_downtimes`] deletes older ones.
pub fn downtime_retention() -> chrono::Duration {
    chrono::Duration::days(7)
}

/// A scheduled downtime window of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    /// Its id.
    pub id: Uuid,
    /// The check.
    pub check_id: CheckId,
    /// Start of the window.
    pub starts_at: DateTime<Utc>,
    /// End of the window (any length is honoured).
    pub ends_at: DateTime<Utc>,
    /// Who scheduled it.
    pub author: String,
    /// Why.
    pub comment: String,
}

/// An alert record: opened when an alert opens, closed on recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The alert's id.
    pub id: Uuid,
    /// The check.
    pub check_id: CheckId,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When it closed, if it did.
    pub closed_at: Option<DateTime<Utc>>,
    /// The status it opened with.
    pub status: Status,
    /// The worst status seen while open.
    pub worst: Status,
}

/// A filter on check states, for [`Store::matching_checks`]; `None` fields
/// match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFilter {
    /// The status is one of these.
    pub statuses: Option<Vec<Status>>,
    /// Acknowledged (normal or sticky) or not.
    pub acknowledged: Option<bool>,
    /// In a downtime or not.
    pub in_downtime: Option<bool>,
}

impl StateFilter {
    /// Whether a state passes the filter.
    pub fn matches(&self, s: &CheckState) -> bool {
        self.statuses
            .as_ref()
            .is_none_or(|st| st.contains(&s.status))
            && self
                .acknowledged
                .is_none_or(|a| a == (s.acknowledged != Ack::None))
            && self.in_downtime.is_none_or(|d| d == s.in_downtime)
    }

    /// Whether the filter lets every state through.
    pub fn is_empty(&self) -> bool {
        self.statuses.is_none() && self.acknowledged.is_none() && self.in_downtime.is_none()
    }
}

/// Where check states, history and the model live.
///
/// Used as `Arc<dyn Store>`; see the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Upserts the model from a loaded config in one step; states are kept.
    async fn sync_config(&self, model: &Model) -> Result<SyncReport>;

    /// The model as last synced.
    async fn model(&self) -> Result<Model>;

    /// Applies one result atomically (see the contract).
    async fn apply_result(&self, result: &CheckResult, now: DateTime<Utc>) -> Result<Transition>;

    /// Applies many results with the same semantics as calling
    /// [`Store::apply_result`] for each in order; one outcome per result.
    async fn apply_results(
        &self,
        results: &[CheckResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Transition>>>;

    /// The state of one check.
    async fn state(&self, check: CheckId) -> Result<CheckState>;

    /// The states of every check.
    async fn states(&self) -> Result<Vec<(CheckId, CheckState)>>;

    /// The states whose last result was executed before `before`, or that
    /// have had none: what a freshness scan must look at
    /// ([`crate::freshness`]), without reading every state of a large site.
    /// The default filters [`Store::states`]; a database store should
    /// filter where the states are.
    async fn states_checked_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<(CheckId, CheckState)>> {
        Ok(self
            .states()
            .await?
            .into_iter()
            .filter(|(_, s)| s.last_check_at.is_none_or(|at| at < before))
            .collect())
    }

    /// Aggregates of every group (`root` None) or of `root` and its descendants.
    async fn group_states(&self, root: Option<GroupId>) -> Result<Vec<GroupState>>;

    /// Aggregates of exactly these groups (e.g. a check's ancestors after a
    /// transition), in one query; unknown ids are left out.
    async fn group_states_of(&self, groups: &[GroupId]) -> Result<Vec<GroupState>>;

    /// Aggregates of exactly these locations; unknown ids are left out.
    async fn location_states_of(&self, locations: &[LocationId]) -> Result<Vec<LocationState>>;

    /// Aggregates of every location, or of `root` and its descendants.
    async fn location_states(&self, root: Option<LocationId>) -> Result<Vec<LocationState>>;

    /// Every group the check is in, directly or through descendants (each once).
    async fn ancestor_groups(&self, check: CheckId) -> Result<Vec<GroupId>>;

    /// Every location the check's host is in, the location and its ancestors.
    async fn ancestor_locations(&self, check: CheckId) -> Result<Vec<LocationId>>;

    /// Acknowledges a not-ok check (refused with [`crate::state::Outcome::Refused`] when ok).
    async fn acknowledge(
        &self,
        check: CheckId,
        kind: Ack,
        author: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition>;

    /// Removes an acknowledgement.
    async fn remove_acknowledgement(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
    ) -> Result<Transition>;

    /// Suppresses or unsuppresses a check's notifications.
    async fn set_suppressed(
        &self,
        check: CheckId,
        suppressed: bool,
        now: DateTime<Utc>,
    ) -> Result<Transition>;

    /// Resets a check's result clock ([`state::reset_clock`](crate::state::reset_clock)):
    /// the next result is applied whatever its `executed_at`. For a check a
    /// result dated in the future froze.
    async fn reset_clock(&self, check: CheckId, now: DateTime<Utc>) -> Result<Transition>;

    /// Schedules a downtime; if its window contains `now` it takes effect at
    /// once and the transition is returned.
    async fn schedule_downtime(
        &self,
        downtime: Downtime,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>>;

    /// Cancels a downtime that has not ended by `now`: a window that has
    /// started ends at `now` (and is kept like every ended window, see
    /// [`Store::downtimes`]); a future one is deleted. If that ends the
    /// check's downtime now, returns the transition. An unknown or ended
    /// window is [`Error::NotFound`](crate::Error::NotFound).
    async fn cancel_downtime(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(CheckId, Transition)>>;

    /// Downtimes of a check (all checks when None) that have not ended by `now`.
    ///
    /// Ended (and cancelled) windows are kept for [`downtime_retention`]
    /// after their end, so a `now` in the past also lists the windows that
    /// ended since (the notification planner plans a window's end from
    /// them, even one that ended while no planner ran).
    async fn downtimes(&self, check: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>>;

    /// Enters and leaves downtime for every window that started or ended by
    /// `now` (called periodically by the processor); returns the applied transitions.
    async fn apply_due_downtimes(&self, now: DateTime<Utc>) -> Result<Vec<(CheckId, Transition)>>;

    /// History of one check, newest first.
    async fn history(&self, check: CheckId, page: HistoryPage) -> Result<Vec<HistoryEntry>>;

    /// Alert records of a check (all checks when None), newest first, at most `limit`.
    async fn alerts(&self, check: Option<CheckId>, limit: usize) -> Result<Vec<AlertRecord>>;

    /// Every open alert and every alert closed at or after `closed_since`,
    /// oldest first: what the notification planner looks at on each tick.
    ///
    /// The default filters [`Store::alerts`]; backends answer it with one
    /// query.
    async fn active_alerts(&self, closed_since: DateTime<Utc>) -> Result<Vec<AlertRecord>> {
        let mut v: Vec<AlertRecord> = self
            .alerts(None, usize::MAX)
            .await?
            .into_iter()
            .filter(|r| r.closed_at.is_none_or(|c| c >= closed_since))
            .collect();
        v.sort_by_key(|r| (r.opened_at, r.id));
        Ok(v)
    }

    /// Ids of the checks whose state passes `filter`, in no particular
    /// order (for search: backends answer from their hot columns without
    /// decoding whole states).
    async fn matching_checks(&self, filter: &StateFilter) -> Result<Vec<CheckId>> {
        Ok(self
            .states()
            .await?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .map(|(id, _)| id)
            .collect())
    }

    /// The states of these checks (unknown ids are left out), in no
    /// particular order.
    async fn states_of(&self, checks: &[CheckId]) -> Result<Vec<(CheckId, CheckState)>> {
        let want: std::collections::HashSet<CheckId> = checks.iter().copied().collect();
        Ok(self
            .states()
            .await?
            .into_iter()
            .filter(|(id, _)| want.contains(id))
            .collect())
    }
}

macro_rules! forward_store {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty;)*) => {
        #[async_trait]
        impl<S: Store + ?Sized> Store for Arc<S> {
            $(async fn $name(&self, $($arg: $ty),*) -> $ret { (**self).$name($($arg),*).await })*
        }
    };
}

forward_store! {
    sync_config(model: &Model) -> Result<SyncReport>;
    model() -> Result<Model>;
    apply_result(result: &CheckResult, now: DateTime<Utc>) -> Result<Transition>;
    apply_results(results: &[CheckResult], now: DateTime<Utc>) -> Result<Vec<Result<Transition>>>;
    state(check: CheckId) -> Result<CheckState>;
    states() -> Result<Vec<(CheckId, CheckState)>>;
    group_states(root: Option<GroupId>) -> Result<Vec<GroupState>>;
    location_states(root: Option<LocationId>) -> Result<Vec<LocationState>>;
    group_states_of(groups: &[GroupId]) -> Result<Vec<GroupState>>;
    location_states_of(locations: &[LocationId]) -> Result<Vec<LocationState>>;
    ancestor_groups(check: CheckId) -> Result<Vec<GroupId>>;
    ancestor_locations(check: CheckId) -> Result<Vec<LocationId>>;
    acknowledge(check: CheckId, kind: Ack, author: &str, comment: &str, now: DateTime<Utc>) -> Result<Transition>;
    remove_acknowledgement(check: CheckId, now: DateTime<Utc>) -> Result<Transition>;
    set_suppressed(check: CheckId, suppressed: bool, now: DateTime<Utc>) -> Result<Transition>;
    reset_clock(check: CheckId, now: DateTime<Utc>) -> Result<Transition>;
    schedule_downtime(downtime: Downtime, now: DateTime<Utc>) -> Result<Option<Transition>>;
    cancel_downtime(id: Uuid, now: DateTime<Utc>) -> Result<Option<(CheckId, Transition)>>;
    downtimes(check: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>>;
    apply_due_downtimes(now: DateTime<Utc>) -> Result<Vec<(CheckId, Transition)>>;
    history(check: CheckId, page: HistoryPage) -> Result<Vec<HistoryEntry>>;
    alerts(check: Option<CheckId>, limit: usize) -> Result<Vec<AlertRecord>>;
    active_alerts(closed_since: DateTime<Utc>) -> Result<Vec<AlertRecord>>;
    matching_checks(filter: &StateFilter) -> Result<Vec<CheckId>>;
    states_of(checks: &[CheckId]) -> Result<Vec<(CheckId, CheckState)>>;
}
