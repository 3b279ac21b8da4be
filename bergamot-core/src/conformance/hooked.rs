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

/// Implements [`Store`] for [`HookedStore`]: each listed method asks the
/// hook about its name, then calls the inner store's.
macro_rules! pass_on {
    ($(fn $method:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait]
        impl<S: Store, H: StoreHook<S> + 'static> Store for HookedStore<S, H> {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> $ret {
                    self.hook.before(stringify!($method))?;
                    self.inner.$method($($arg),*).await
                }
            )*
        }
    };
}

pass_on! {
    fn sync_config(&self, model: &Model) -> Result<SyncReport>;
    fn model(&self) -> Result<Model>;
    fn apply_result(&self, result: &CheckResult, now: DateTime<Utc>) -> Result<Transition>;
    fn apply_results(&self, results: &[CheckResult], now: DateTime<Utc>) -> Result<Vec<Result<Transition>>>;
    fn state(&self, check: CheckId) -> Result<CheckState>;
    fn states(&self) -> Result<Vec<(CheckId, CheckState)>>;
    fn states_checked_before(&self, before: DateTime<Utc>) -> Result<Vec<(CheckId, CheckState)>>;
    fn group_states(&self, root: Option<GroupId>) -> Result<Vec<GroupState>>;
    fn group_states_of(&self, groups: &[GroupId]) -> Result<Vec<GroupState>>;
    fn location_states_of(&self, locations: &[LocationId]) -> Result<Vec<LocationState>>;
    fn location_states(&self, root: Option<LocationId>) -> Result<Vec<LocationState>>;
    fn ancestor_groups(&self, check: CheckId) -> Result<Vec<GroupId>>;
    fn ancestor_locations(&self, check: CheckId) -> Result<Vec<LocationId>>;
    fn acknowledge(&self, check: CheckId, kind: Ack, author: &str, comment: &str, now: DateTime<Utc>) -> Result<Transition>;
    fn remove_acknowledgement(&self, check: CheckId, now: DateTime<Utc>) -> Result<Transition>;
    fn set_suppressed(&self, check: CheckId, suppressed: bool, now: DateTime<Utc>) -> Result<Transition>;
    fn reset_clock(&self, check: CheckId, now: DateTime<Utc>) -> Result<Transition>;
    fn schedule_downtime(&self, downtime: Downtime, now: DateTime<Utc>) -> Result<Option<Transition>>;
    fn cancel_downtime(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<(CheckId, Transition)>>;
    fn downtimes(&self, check: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>>;
    fn apply_due_downtimes(&self, now: DateTime<Utc>) -> Result<Vec<(CheckId, Transition)>>;
    fn history(&self, check: CheckId, page: HistoryPage) -> Result<Vec<HistoryEntry>>;
    fn alerts(&self, check: Option<CheckId>, limit: usize) -> Result<Vec<AlertRecord>>;
    fn active_alerts(&self, closed_since: DateTime<Utc>) -> Result<Vec<AlertRecord>>;
    fn matching_checks(&self, filter: &StateFilter) -> Result<Vec<CheckId>>;
    fn states_of(&self, checks: &[CheckId]) -> Result<Vec<(CheckId, CheckState)>>;
}
