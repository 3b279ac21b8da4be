//! apply_result / apply_results: concurrency against a serial replay, and
//! a restart keeps everything.

mod common;

use bergamot_core::model::{Check, CheckId, CheckResult, Model, Policy, ResultId, Status};
use bergamot_core::state::{self, Ack, CheckState, Outcome, Transition};
use bergamot_core::store::{Downtime, HistoryPage, Store};
use bergamot_store::PostgresStore;
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestStore;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn check(site: &str, host: &str, policy: Policy) -> Check {
    Check::host(site, host)
        .engine("dummy")
        .policy(policy)
        .build()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

fn result(check: CheckId, status: Status, at: DateTime<Utc>, n: usize) -> CheckResult {
    let mut r = CheckResult::new(check, status, format!("result {n}: {status}"), at);
    r.long_output = if n.is_multiple_of(3) {
        format!("line two of {n}").into()
    } else {
        Default::default()
    };
    r
}

/// A status sequence with long runs and bursts of flapping.
fn statuses(rng: &mut StdRng, n: usize) -> Vec<Status> {
    let mut out = Vec::with_capacity(n);
    let mut cur = Status::Ok;
    while out.len() < n {
        let flappy = rng.gen_bool(0.3);
        let run = rng.gen_range(1..8);
        for _ in 0..run {
            if flappy || rng.gen_bool(0.2) {
                cur = [
                    Status::Ok,
                    Status::Warning,
                    Status::Critical,
                    Status::Unknown,
                    Status::Ok,
                ][rng.gen_range(0..5)];
            }
            out.push(cur);
        }
    }
    out.truncate(n);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_results_equal_a_serial_replay() {
    let Some(store) = TestStore::fresh().await else {
        return;
    };
    let store = Arc::new(store);
    let site = "conc";
    const CHECKS: usize = 100;
    const PER_CHECK: usize = 100;
    const TASKS: usize = 8;
    let mut rng = StdRng::seed_from_u64(42);
    let policies = [
        Policy::default(),
        Policy::builder().failed_after(1).recovers_after(1).build(),
        Policy::builder().failed_after(4).recovers_after(2).build(),
    ];
    let checks: Vec<Check> = (0..CHECKS)
        .map(|i| check(site, &format!("h{i}"), policies[i % 3].clone()))
        .collect();
    let model = Model {
        site: site.into(),
        checks: checks.clone(),
        ..Model::default()
    };
    store.sync_config(&model).await.expect("sync");

    // Per check, a sequence of results in executed_at order.
    let seqs: Vec<Vec<CheckResult>> = checks
        .iter()
        .map(|c| {
            statuses(&mut rng, PER_CHECK)
                .into_iter()
                .enumerate()
                .map(|(n, s)| result(c.id, s, t0() + Duration::seconds(n as i64 * 10), n))
                .collect()
        })
        .collect();
    // How far each check's owner has got (results 0..applied[i] are applied).
    let applied: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CHECKS).map(|_| AtomicUsize::new(0)).collect());
    let seqs = Arc::new(seqs);

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let seqs = seqs.clone();
        let applied = applied.clone();
        let mut rng = StdRng::seed_from_u64(1000 + task as u64);
        tasks.push(tokio::spawn(async move {
            // This task owns checks task, task + TASKS, ...; it pushes each
            // one's results in order, interleaving its checks at random, in
            // single calls and in batches, plus duplicates of results (of any
            // check) that their owner has already applied.
            let mut owned: Vec<(usize, usize)> =
                (task..CHECKS).step_by(TASKS).map(|c| (c, 0)).collect();
            let mut dups = 0usize;
            while !owned.is_empty() {
                let mut batch = Vec::new();
                let mut advanced = Vec::new();
                let want = if rng.gen_bool(0.5) {
                    1
                } else {
                    rng.gen_range(2..40)
                };
                for _ in 0..want {
                    if owned.is_empty() {
                        break;
                    }
                    let k = rng.gen_range(0..owned.len());
                    let (c, next) = owned[k];
                    // One check at most once per batch keeps the owner's
                    // bookkeeping simple; order within a check is preserved.
                    if advanced.iter().any(|(ac, _)| *ac == c) {
                        continue;
                    }
                    batch.push(seqs[c][next].clone());
                    advanced.push((c, next + 1));
                    if next + 1 == PER_CHECK {
                        owned.swap_remove(k);
                    } else {
                        owned[k].1 = next + 1;
                    }
                }
                for _ in 0..rng.gen_range(0..3) {
                    let c = rng.gen_range(0..CHECKS);
                    let upto = applied[c].load(Ordering::Acquire);
                    if upto > 0 {
                        batch.push(seqs[c][rng.gen_range(0..upto)].clone());
                        dups += 1;
                    }
                }
                batch.shuffle(&mut rng);
                // Restore per-check order within the batch (the shuffle mixes checks).
                batch.sort_by_key(|r| (r.check_id, r.executed_at));
                batch.shuffle(&mut rng);
                let mut per_check: HashMap<CheckId, Vec<CheckResult>> = HashMap::new();
                for r in batch {
                    per_check.entry(r.check_id).or_default().push(r);
                }
                let mut ordered: Vec<CheckResult> = Vec::new();
                for (_, mut rs) in per_check {
                    rs.sort_by_key(|r| r.executed_at);
                    ordered.extend(rs);
                }
                if ordered.len() == 1 {
                    store
                        .apply_result(&ordered[0], ordered[0].executed_at)
                        .await
                        .expect("apply");
                } else {
                    let now = ordered
                        .iter()
                        .map(|r| r.executed_at)
                        .max()
                        .expect("non-empty");
                    for o in store.apply_results(&ordered, now).await.expect("batch") {
                        o.expect("each result");
                    }
                }
                for (c, upto) in advanced {
                    applied[c].store(upto, Ordering::Release);
                }
            }
            dups
        }));
    }
    let mut dups = 0;
    for t in tasks {
        dups += t.await.expect("task");
    }
    assert!(dups > 500, "the test must push duplicates ({dups})");

    // Serial replay with the pure transition. `now` only matters through
    // the result's own time here: every call above passed a `now` no earlier
    // than the result, and the replay does the same per result.
    for (i, c) in checks.iter().enumerate() {
        let mut st = state::initial_state(&c.policy);
        let mut hist = Vec::new();
        for r in &seqs[i] {
            let t = state::transition(&st, r, &c.policy, &[], r.executed_at);
            assert_eq!(t.outcome, Outcome::Applied, "in-order results all apply");
            hist.push((
                t.state.version,
                r.id,
                t.state.status,
                t.state.attempt,
                t.events.clone(),
            ));
            st = t.state;
        }
        let got = store.state(c.id).await.expect("state");
        assert_eq!(
            got.version, PER_CHECK as u64,
            "{}: applied exactly once each",
            c.host
        );
        assert_same_state(&got, &st, &c.host);
        let h = store
            .history(
                c.id,
                HistoryPage {
                    before_version: None,
                    limit: 1000,
                },
            )
            .await
            .expect("history");
        let got_hist: Vec<_> = h
            .iter()
            .rev()
            .map(|e| {
                (
                    e.version,
                    e.result_id.expect("from a result"),
                    e.status,
                    e.attempt,
                    e.events.clone(),
                )
            })
            .collect();
        assert_eq!(got_hist, hist, "{}: history", c.host);
    }
}

/// Equal, except that alert times may come from `now` (which the batches set
/// to the batch's newest result): compare them only for presence.
fn assert_same_state(got: &CheckState, want: &CheckState, what: &str) {
    let mut g = got.clone();
    let mut w = want.clone();
    if let (Some(a), Some(b)) = (&mut g.current_alert, &mut w.current_alert) {
        a.id = b.id;
        a.opened_at = b.opened_at;
    }
    assert_eq!(g, w, "{what}");
}

#[tokio::test]
async fn restart_keeps_attempts_flap_history_acks_and_downtimes() {
    let Some(store) = TestStore::fresh().await else {
        return;
    };
    let site = "restart";
    let policy = Policy::builder().failed_after(5).recovers_after(3).build();
    let a = check(site, "a", policy.clone());
    let b = check(site, "b", Policy::builder().failed_after(1).build());
    let model = Model {
        site: site.into(),
        checks: vec![a.clone(), b.clone()],
        ..Model::default()
    };
    store.sync_config(&model).await.expect("sync");
    let mut at = t0();
    let mut n = 0;
    let mut push = |c: CheckId, s: Status| {
        at += Duration::seconds(30);
        n += 1;
        result(c, s, at, n)
    };
    // Flapping-ish history on a, then two failures: soft, attempt 2 of 5.
    for s in [
        Status::Ok,
        Status::Critical,
        Status::Ok,
        Status::Critical,
        Status::Ok,
    ] {
        let r = push(a.id, s);
        store.apply_result(&r, r.executed_at).await.expect("apply");
    }
    for _ in 0..2 {
        let r = push(a.id, Status::Critical);
        store.apply_result(&r, r.executed_at).await.expect("apply");
    }
    // b goes hard critical at once and is acknowledged (sticky), then a
    // downtime on b that is running now and one in the future on a.
    let r = push(b.id, Status::Critical);
    store
        .apply_result(&r, r.executed_at)
        .await
        .expect("apply b");
    let now = r.executed_at;
    let ack = store
        .acknowledge(b.id, Ack::Sticky, "me", "on it", now)
        .await
        .expect("ack");
    assert_eq!(ack.outcome, Outcome::Applied);
    let running = Downtime {
        id: uuid::Uuid::new_v4(),
        check_id: b.id,
        starts_at: now - Duration::minutes(1),
        ends_at: now + Duration::hours(1),
        author: "me".into(),
        comment: "maintenance".into(),
    };
    let future = Downtime {
        id: uuid::Uuid::new_v4(),
        check_id: a.id,
        starts_at: now + Duration::days(1),
        ends_at: now + Duration::days(2),
        author: "you".into(),
        comment: "later".into(),
    };
    assert!(store
        .schedule_downtime(running.clone(), now)
        .await
        .expect("dt")
        .is_some());
    assert!(store
        .schedule_downtime(future.clone(), now)
        .await
        .expect("dt")
        .is_none());

    let before_states = store.states().await.expect("states");
    let before_hist = store
        .history(
            a.id,
            HistoryPage {
                before_version: None,
                limit: 100,
            },
        )
        .await
        .expect("history");
    let before_alerts = store.alerts(None, 100).await.expect("alerts");
    let before_model = store.model().await.expect("model");

    // Restart: drop every connection, connect again to the same schema.
    let url = common::test_url().expect("url");
    let schema = store.schema.clone();
    store.inner.close();
    let cfg = bergamot_store::PostgresConfig::new(url).with_schema(schema.clone());
    let again = TestStore {
        inner: PostgresStore::connect(cfg).await.expect("reconnect"),
        schema,
    };
    std::mem::forget(store); // its Drop would drop the schema; `again` owns it now

    assert_eq!(again.states().await.expect("states"), before_states);
    assert_eq!(
        again
            .history(
                a.id,
                HistoryPage {
                    before_version: None,
                    limit: 100
                }
            )
            .await
            .expect("h"),
        before_hist
    );
    assert_eq!(
        again.alerts(None, 100).await.expect("alerts"),
        before_alerts
    );
    assert_eq!(again.model().await.expect("model"), before_model);
    let mut dts = again.downtimes(None, now).await.expect("downtimes");
    dts.sort_by_key(|d| d.starts_at);
    assert_eq!(dts, vec![running.clone(), future.clone()]);
    let sb = again.state(b.id).await.expect("b");
    assert_eq!(sb.acknowledged, Ack::Sticky);
    assert!(sb.in_downtime);

    // The next result continues the sequence exactly as the pure function says.
    let sa: CheckState = before_states
        .iter()
        .find(|(id, _)| *id == a.id)
        .map(|(_, s)| s.clone())
        .expect("a");
    assert_eq!((sa.attempt, sa.hard, sa.ok), (2, false, false));
    let r = push(a.id, Status::Critical);
    let want: Transition = state::transition(&sa, &r, &policy, &[], r.executed_at);
    let got = again.apply_result(&r, r.executed_at).await.expect("next");
    assert_eq!(got, want);
    assert_eq!(got.state.attempt, 3);
    assert_eq!(
        got.state.ok_history,
        sa.ok_history << 1 & ((1 << state::FLAP_HISTORY_LEN) - 1)
    );
    assert_eq!(got.state.version, sa.version + 1);
    // A redelivery of that result after the restart is not applied again.
    let dup = again.apply_result(&r, r.executed_at).await.expect("dup");
    assert_eq!(dup.outcome, Outcome::Duplicate);
    assert_eq!(again.state(a.id).await.expect("a").version, sa.version + 1);
    let _ = ResultId::random();
}
