//! A [`Store`] wrapper for tests: every call goes to an inner store after a
//! hook has seen it, so a test can inject failures, count calls, or clean
//! up when the store is dropped, without writing out the whole trait.
//!
//! ```
//! use bergamot_core::conformance::{HookedStore, StoreHook};
//! use bergamot_core::store::{InMemoryStore, Store};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! #[derive(Default)]
//! struct CountApplies(AtomicUsize);
//!
//! impl StoreHook<InMemoryStore> for CountApplies {
//!     fn before(&self, method: &'static str) -> bergamot_core::Result<()> {
//!         if method == "apply_result" {
//!             self.0.fetch_add(1, Ordering::SeqCst);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let store = HookedStore::new(InMemoryStore::new(), CountApplies::default());
//! let _: &dyn Store = &store;
//! assert_eq!(store.hook.0.load(Ordering::SeqCst), 0);
//! ```

use crate::aggregate::{GroupState, LocationState};
use crate::error::Result;
use crate::model::{CheckId, CheckResult, GroupId, LocationId, Model};
use crate::state::{Ack, CheckState, Transition};
use crate::store::{
    AlertRecord, Downtime, HistoryEntry, HistoryPage, StateFilter, Store, SyncReport,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a [`HookedStore`] asks before each call, and tells when dropped.
pub trait StoreHook<S>: Send + Sync {
    /// Called with the [`Store`] method's name (`"apply_result"`, `"alerts"`,
    /// ...) before the call goes to the inner store; an error is returned
    /// instead of making the call.
    fn before(&self, method: &'static str) -> Result<()> {
        let _ = method;
        Ok(())
    }

    /// Called when the [`HookedStore`] is dropped, before its inner store
    /// is (say, to close it and drop its database schema).
    fn dropped(&self, inner: &S) {
        let _ = inner;
    }
}

/// A [`Store`] that passes every call to `inner` once `hook` allowed it.
pub struct HookedStore<S, H: StoreHook<S>> {
    /// The store that answers.
    pub inner: S,
    /// What sees every call first.
    pub hook: H,
}

impl<S, H: StoreHook<S>> HookedStore<S, H> {
    /// `inner`, behind `hook`.
    pub fn new(inner: S, hook: H) -> Self {
        HookedStore { inner, hook }
    }
}

impl<S, H: StoreHook<S>> std::ops::Deref for HookedStore<S, H> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S, H: StoreHook<S>> Drop for HookedStore<S, H> {
    fn drop(&mut self) {
        self.hook.dropped(&self.inner);
    }
}

/// Asks the hook about `$method`, then calls it on the inner store.
macro_rules! pass_on {
    ($self:ident.$method:ident($($arg:expr),*)) => {{
        $self.hook.before(stringify!($method))?;
        $self.inner.$method($($arg),*).await
    }};
}

#[async_trait]
impl<S: Store, H: StoreHook<S>> Store for HookedStore<S, H> {
    async fn sync_config(&self, model: &Model) -> Result<SyncReport> {
        pass_on!(self.sync_config(model))
    }
    async fn model(&self) -> Result<Model> {
        pass_on!(self.model())
    }
    async fn apply_result(&self, result: &CheckResult, now: DateTime<Utc>) -> Result<Transition> {
        pass_on!(self.apply_result(result, now))
    }
    async fn apply_results(
        &self,
        results: &[CheckResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Transition>>> {
        pass_on!(self.apply_results(results, now))
    }
    async fn state(&self, check: CheckId) -> Result<CheckState> {
        pass_on!(self.state(check))
    }
    async fn states(&self) -> Result<Vec<(CheckId, CheckState)>> {
        pass_on!(self.states())
    }
    async fn group_states(&self, root: Option<GroupId>) -> Result<Vec<GroupState>> {
        pass_on!(self.group_states(root))
    }
    async fn group_states_of(&self, groups: &[GroupId]) -> Result<Vec<GroupState>> {
        pass_on!(self.group_states_of(groups))
    }
    async fn location_states_of(&self, locations: &[LocationId]) -> Result<Vec<LocationState>> {
        pass_on!(self.location_states_of(locations))
    }
    async fn location_states(&self, root: Option<LocationId>) -> Result<Vec<LocationState>> {
        pass_on!(self.location_states(root))
    }
    async fn ancestor_groups(&self, check: CheckId) -> Result<Vec<GroupId>> {
        pass_on!(self.ancestor_groups(check))
    }
    async fn ancestor_locations(&self, check: CheckId) -> Result<Vec<LocationId>> {
        pass_on!(self.ancestor_locations(check))
    }
    async fn acknowledge(
        &self,
        check: CheckId,
        kind: Ack,
        author: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        pass_on!(self.acknowledge(check, kind, author, comment, now))
    }
    async fn remove_acknowledgement(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        pass_on!(self.remove_acknowledgement(check, now))
    }
    async fn set_suppressed(
        &self,
        check: CheckId,
        suppressed: bool,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        pass_on!(self.set_suppressed(check, suppressed, now))
    }
    async fn reset_clock(&self, check: CheckId, now: DateTime<Utc>) -> Result<Transition> {
        pass_on!(self.reset_clock(check, now))
    }
    async fn schedule_downtime(
        &self,
        downtime: Downtime,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>> {
        pass_on!(self.schedule_downtime(downtime, now))
    }
    async fn cancel_downtime(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(CheckId, Transition)>> {
        pass_on!(self.cancel_downtime(id, now))
    }
    async fn downtimes(&self, check: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>> {
        pass_on!(self.downtimes(check, now))
    }
    async fn apply_due_downtimes(&self, now: DateTime<Utc>) -> Result<Vec<(CheckId, Transition)>> {
        pass_on!(self.apply_due_downtimes(now))
    }
    async fn history(&self, check: CheckId, page: HistoryPage) -> Result<Vec<HistoryEntry>> {
        pass_on!(self.history(check, page))
    }
    async fn alerts(&self, check: Option<CheckId>, limit: usize) -> Result<Vec<AlertRecord>> {
        pass_on!(self.alerts(check, limit))
    }
    async fn active_alerts(&self, closed_since: DateTime<Utc>) -> Result<Vec<AlertRecord>> {
        pass_on!(self.active_alerts(closed_since))
    }
    async fn matching_checks(&self, filter: &StateFilter) -> Result<Vec<CheckId>> {
        pass_on!(self.matching_checks(filter))
    }
    async fn states_of(&self, checks: &[CheckId]) -> Result<Vec<(CheckId, CheckState)>> {
        pass_on!(self.states_of(checks))
    }
}
