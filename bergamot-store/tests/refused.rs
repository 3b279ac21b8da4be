//! Results PostgreSQL refuses (a NUL byte) are permanent errors of that one
//! result, and results sharing an `executed_at` are applied once each.

mod common;

use bergamot_core::model::{Check, CheckId, CheckResult, Model, Policy, Status};
use bergamot_core::processor::Processor;
use bergamot_core::queue::{InMemoryQueue, Queue};
use bergamot_core::state::Outcome;
use bergamot_core::store::{HistoryPage, Store};
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestStore;
use std::collections::HashMap;
use std::sync::Arc;

fn check(site: &str, host: &str) -> Check {
    Check::host(site, host)
        .engine("dummy")
        .policy(Policy::builder().failed_after(1).recovers_after(1).build())
        .build()
}

/// Second resolution, like passive results.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

/// The result ids in a check's history, each with how often it appears.
async fn applied(store: &dyn Store, check: CheckId) -> HashMap<String, usize> {
    let page = HistoryPage {
        before_version: None,
        limit: 10_000,
    };
    let mut seen = HashMap::new();
    for e in store.history(check, page).await.expect("history") {
        if let Some(id) = e.result_id {
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// 200 good results (pairs sharing a second, alternating CRITICAL and OK so
/// that alerts open and close) and one with a NUL byte among them, all on
/// one lane: the 200 are applied once each, the bad one is poisoned with the
/// database's reason. Before the fix the NUL made the lane retry in place
/// for 120 s, then requeue and retry again, applying nothing behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_result_is_poisoned_and_the_rest_of_its_lane_applied() {
    let Some(store) = TestStore::fresh().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let site = "nul";
    let checks: Vec<Check> = (0..10).map(|i| check(site, &format!("h{i}"))).collect();
    let model = Model {
        site: site.into(),
        checks: checks.clone(),
        ..Model::default()
    };
    store.sync_config(&model).await.expect("sync");
    let queue = InMemoryQueue::new();
    let mut good = Vec::new();
    for step in 0..20 {
        let at = t0() + Duration::seconds(step / 2);
        let status = if (step / 2) % 2 == 0 {
            Status::Critical
        } else {
            Status::Ok
        };
        for c in &checks {
            good.push(CheckResult::new(c.id, status, format!("step {step}"), at));
        }
    }
    let mut bad = CheckResult::new(checks[3].id, Status::Critical, "bad\0byte", t0());
    bad.executed_at = t0() + Duration::seconds(30);
    for (i, r) in good.iter().enumerate() {
        if i == 100 {
            queue.publish_result(bad.clone()).await.expect("publish");
        }
        queue.publish_result(r.clone()).await.expect("publish");
    }
    let processor = Processor::new(Arc::clone(&store), Arc::new(queue.clone()))
        .with_lanes(1)
        .with_batch(256);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        stopped.await.ok();
    }));
    bergamot_testkit::wait_until(
        "every check's last result applied and the NUL one poisoned (the lane stalled)",
        std::time::Duration::from_secs(60),
        || async {
            for c in &checks {
                if store.state(c.id).await.expect("state").version < 20 {
                    return false;
                }
            }
            !queue.poisoned_results().is_empty()
        },
    )
    .await;
    stop.send(()).ok();
    run.await.expect("join").expect("processor");

    let mut total = 0;
    for c in &checks {
        let seen = applied(&*store, c.id).await;
        for r in good.iter().filter(|r| r.check_id == c.id) {
            assert_eq!(
                seen.get(&r.id.to_string()),
                Some(&1),
                "{} applied once",
                r.id
            );
            total += 1;
        }
        assert!(!seen.contains_key(&bad.id.to_string()));
        assert!(!store
            .alerts(Some(c.id), 100)
            .await
            .expect("alerts")
            .is_empty());
    }
    assert_eq!(total, 200);
    let poisoned = queue.poisoned_results();
    assert_eq!(poisoned.len(), 1, "{poisoned:?}");
    assert_eq!(poisoned[0].0.id, bad.id);
    assert!(poisoned[0].1.contains("SQLSTATE 22"), "{}", poisoned[0].1);
}

/// Redelivering results that share an `executed_at` (and opened an alert)
/// applies none of them again, and raises no constraint violation. Before
/// the fix the redelivered first result was applied again and hit
/// `alerts_pkey`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_results_sharing_a_timestamp_are_not_applied_twice() {
    let Some(store) = TestStore::fresh().await else {
        return;
    };
    let site = "same-ts";
    let c = check(site, "h");
    let model = Model {
        site: site.into(),
        checks: vec![c.clone()],
        ..Model::default()
    };
    store.sync_config(&model).await.expect("sync");
    let a = CheckResult::new(c.id, Status::Critical, "a", t0());
    let b = CheckResult::new(c.id, Status::Warning, "b", t0());
    let first = store
        .apply_results(&[a.clone(), b.clone()], Utc::now())
        .await
        .expect("apply");
    assert!(first
        .iter()
        .all(|t| t.as_ref().is_ok_and(|t| t.is_applied())));
    let again = store
        .apply_results(&[a.clone(), b.clone()], Utc::now())
        .await
        .expect("redelivery is no error");
    let outcomes: Vec<Outcome> = again
        .into_iter()
        .map(|t| t.expect("outcome").outcome)
        .collect();
    assert_eq!(outcomes, vec![Outcome::Stale, Outcome::Duplicate]);
    let seen = applied(&*store, c.id).await;
    assert_eq!(seen.get(&a.id.to_string()), Some(&1));
    assert_eq!(seen.get(&b.id.to_string()), Some(&1));
}
