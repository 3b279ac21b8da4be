//! A restarted (or newly owning) schedule resumes every check's cadence
//! from the states PostgresStore holds (`BERGAMOT_TEST_POSTGRES_URL`).

mod common;

use bergamot_core::model::{CheckId, CheckResult, Model, Policy, Status};
use bergamot_core::schedule::{Schedule, ScheduleConfig};
use bergamot_core::state::next_interval;
use bergamot_core::store::Store;
use chrono::{DateTime, Utc};
use common::TestStore;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

fn model(n: usize) -> Model {
    let policy = Policy::builder()
        .every(Duration::from_secs(60))
        .retry_every(Duration::from_secs(15))
        .changing_every(None)
        .failed_after(3)
        .build();
    common::services_model(n, &policy)
}

#[tokio::test]
async fn resume_from_postgres_states_continues_each_cadence() {
    let Some(store) = TestStore::fresh().await else {
        return;
    };
    let m = model(120);
    store.sync_config(&m).await.expect("sync");
    // The cluster ran until `down`; check i last ran (i % 90) s before it,
    // and every fourth one is in a soft CRITICAL (retry interval).
    let down: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(5);
    for (i, c) in m.checks.iter().enumerate() {
        let at = down - chrono::Duration::seconds((i % 90) as i64);
        let status = if i % 4 == 0 {
            Status::Critical
        } else {
            Status::Ok
        };
        store
            .apply_result(&CheckResult::new(c.id, status, "out", at), at)
            .await
            .expect("apply");
    }

    // A schedule starting now, on a node that owns nothing yet.
    let origin = Instant::now();
    let wall_now = Utc::now();
    let mut s = Schedule::new(ScheduleConfig::default(), origin);
    s.apply_model(&m, origin);
    s.set_owned_partitions(&BTreeSet::new(), origin);
    let states: HashMap<CheckId, _> = store.states().await.expect("states").into_iter().collect();
    assert_eq!(states.len(), 120);
    for (id, st) in &states {
        assert!(s.resume_state(*id, st, origin, wall_now));
    }
    // It gains everything: each check continues from its stored run.
    let change = s.set_owned_partitions(&(0..64).collect(), origin);
    assert_eq!(change.checks_started, 120);
    let catch_up = Duration::from_secs(10);
    let mut soft = 0;
    for c in &m.checks {
        let st = &states[&c.id];
        let interval = next_interval(st, &c.policy);
        if !st.hard {
            soft += 1;
            assert_eq!(interval, Duration::from_secs(15));
        }
        assert_eq!(s.interval(c.id), Some(interval), "{}", c.id);
        let last = st.last_check_at.expect("ran");
        let since = (wall_now - last).to_std().expect("in the past");
        let due = s.next_due(c.id).expect("scheduled");
        if since < interval {
            // Exactly one interval after the stored run (ms resolution).
            let want = origin + (interval - since);
            let diff = if due > want { due - want } else { want - due };
            assert!(diff <= Duration::from_millis(1), "{}: {diff:?}", c.id);
        } else {
            // Overdue: within the catch-up window, not all at once.
            assert!(due >= origin && due < origin + catch_up, "{}", c.id);
        }
    }
    assert_eq!(soft, 30);
    let overdue: Vec<Instant> = m
        .checks
        .iter()
        .filter(|c| {
            let st = &states[&c.id];
            let since = (wall_now - st.last_check_at.expect("ran"))
                .to_std()
                .expect("past");
            since >= next_interval(st, &c.policy)
        })
        .map(|c| s.next_due(c.id).expect("scheduled"))
        .collect();
    assert!(overdue.len() > 20, "{}", overdue.len());
    let distinct: BTreeSet<Instant> = overdue.iter().copied().collect();
    assert!(distinct.len() * 2 > overdue.len(), "overdue checks spread");
}
