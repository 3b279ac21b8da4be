//! Conformance suites: one public async case per contract clause of
//! [`Queue`](crate::queue::Queue) and [`Store`](crate::store::Store), run
//! against every backend.
//!
//! Each case takes a fresh, empty backend, syncs its own small model or
//! registers its own consumers, and panics with a message naming the clause
//! it checked. A backend crate runs them all with one macro line in a test
//! file (its dev-dependencies need `tokio` with the `macros` and
//! `rt-multi-thread` features, and `bergamot-core` with the `conformance`
//! feature):
//!
//! ```no_run
//! use bergamot_core::queue::{InMemoryQueue, Queue};
//! use bergamot_core::store::{InMemoryStore, Store};
//! use std::sync::Arc;
//!
//! // A backend's factory: `None` skips the case (say, no server URL set).
//! async fn make_store() -> Option<Arc<dyn Store>> {
//!     Some(Arc::new(InMemoryStore::new()))
//! }
//! async fn make_queue() -> Option<Arc<dyn Queue>> {
//!     Some(Arc::new(InMemoryQueue::new()))
//! }
//! bergamot_core::store_conformance_tests!(make_store);
//! bergamot_core::queue_conformance_tests!(make_queue);
//! # fn main() {}
//! ```
//!
//! Each macro expands to one `#[tokio::test(flavor = "multi_thread",
//! worker_threads = 2)]` per case, named after the case, that calls the
//! factory, returns early when it gives `None`, and runs the case.

mod hooked;
pub mod notify;
pub mod queue;
pub mod store;

pub use hooked::{HookedStore, StoreHook};

use crate::model::{Check, CheckId, CheckResult, GroupId, LocationId, Policy, Status};
use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

/// The site of every object the suites create.
pub const SITE: &str = "conformance";

/// How long a case waits for something that must arrive (generous: a
/// broker on a loaded machine is slow; no case asserts on speed).
pub const ARRIVAL_BOUND: Duration = Duration::from_secs(15);

/// `secs` seconds after a fixed base time (2026-01-01T00:00:00Z).
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed date")
        + chrono::Duration::seconds(secs)
}

/// A policy with these thresholds and the default intervals.
pub fn policy(failed_after: u32, recovers_after: u32) -> Policy {
    Policy::builder()
        .failed_after(failed_after)
        .recovers_after(recovers_after)
        .build()
}

/// A host check of `host` in `groups` at `location`.
pub fn host(name: &str, groups: &[GroupId], location: Option<LocationId>, policy: Policy) -> Check {
    Check::host(SITE, name)
        .engine("dummy")
        .policy(policy)
        .groups(groups.to_vec())
        .location(location)
        .build()
}

/// A service `name` on host `host` in `groups`.
pub fn service(host: &str, name: &str, groups: &[GroupId], policy: Policy) -> Check {
    Check::service(SITE, host, name)
        .engine("dummy")
        .policy(policy)
        .groups(groups.to_vec())
        .build()
}

/// A group `name` with `parents`.
pub fn group(name: &str, parents: &[GroupId]) -> crate::model::Group {
    crate::model::Group {
        id: GroupId::named(SITE, name),
        name: name.to_string(),
        parents: parents.to_vec(),
    }
}

/// A location `name` under `parent`.
pub fn location(name: &str, parent: Option<LocationId>) -> crate::model::Location {
    crate::model::Location {
        id: LocationId::named(SITE, name),
        name: name.to_string(),
        parent,
    }
}

/// A result of `check` with `status`, executed at [`at`]`(secs)`.
pub fn result(check: CheckId, status: Status, secs: i64) -> CheckResult {
    CheckResult::new(
        check,
        status,
        format!("{} at {secs}", status.as_str()),
        at(secs),
    )
}

/// A status flipping at every step: CRITICAL at even `i`, OK at odd.
pub fn flipping(i: i64) -> Status {
    if i % 2 == 0 {
        Status::Critical
    } else {
        Status::Ok
    }
}

/// The history of `check` in `store`, newest first: at most `limit` entries
/// with a version below `before_version` (`None`: from the newest).
pub async fn history(
    store: &dyn crate::store::Store,
    check: CheckId,
    before_version: Option<u64>,
    limit: usize,
) -> Vec<crate::store::HistoryEntry> {
    let page = crate::store::HistoryPage {
        before_version,
        limit,
    };
    store.history(check, page).await.expect("history")
}

/// Runs every store case against stores made by `$make`
/// (`async fn() -> Option<Arc<dyn Store>>`; `None` skips).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!(
            store,
            $make,
            apply_matches_pure_transition,
            duplicate_result_dropped,
            stale_result_dropped,
            unknown_check_not_found,
            concurrent_applies_serialise,
            different_checks_apply_concurrently,
            group_aggregates_match_pure,
            group_subtree_root,
            group_states_of_selects,
            location_aggregates,
            severity_order_critical_over_broken_checks,
            ancestors_of_check,
            acknowledgements_take_effect_at_once,
            downtime_now_takes_effect_at_once,
            due_downtime_windows_start_and_end,
            cancel_downtime_ends_it,
            suppression_takes_effect_at_once,
            reset_clock_unfreezes_a_check,
            history_newest_first_paginated,
            history_records_flags_after_each_change,
            alert_records_open_and_close,
            config_sync_keeps_adds_removes,
            apply_results_batch_equals_serial,
            state_search_matches_filter,
            states_checked_before_selects_old_and_unchecked,
        );
    };
}

/// Runs every notification-store case against stores made by `$make`
/// (`async fn() -> Option<Arc<dyn NotificationStore>>`; `None` skips).
#[macro_export]
macro_rules! notification_store_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!(
            notify,
            $make,
            enqueue_ignores_known_ids,
            claim_only_due_jobs,
            claim_in_not_before_order,
            concurrent_claims_are_exclusive,
            expired_lease_is_claimed_again,
            sent_is_never_claimed_again,
            failed_retries_then_gives_up,
            cancelled_is_recorded,
            finish_unknown_not_found,
            list_filters_newest_first,
        );
    };
}

/// Runs every queue case against queues made by `$make`
/// (`async fn() -> Option<Arc<dyn Queue>>`; `None` skips).
#[macro_export]
macro_rules! queue_conformance_tests {
    ($make:path) => {
        $crate::__conformance_cases!(
            queue,
            $make,
            execute_delivered_to_pool_engine,
            competing_consumers_get_distinct_executes,
            unroutable_execute_becomes_dead_check,
            expired_execute_becomes_dead_check,
            unacked_delivery_redelivered,
            nack_requeue_redelivers,
            results_in_publish_order,
            single_active_result_consumer_failover,
            updates_fan_out,
            control_messages_delivered,
            message_json_round_trip,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($suite:ident, $make:path, $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $make().await else {
                    eprintln!(concat!(stringify!($case), ": skipped (no backend)"));
                    return;
                };
                $crate::conformance::$suite::$case(backend).await;
            }
        )*
    };
}
