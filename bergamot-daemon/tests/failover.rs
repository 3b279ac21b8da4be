//! Node failures with real processes over RabbitMQ + PostgreSQL: a worker,
//! the active processor, or a scheduler node is killed with SIGKILL, and
//! the rest of the cluster carries on without losing or doubling work.
//!
//! These only kill this test's own processes, so they run with the other
//! tests; each is bounded (well under a minute). Failures print every
//! node's log.

mod common;

use bergamot_core::model::{CheckId, CheckResult, ResultId, Status};
use bergamot_core::schedule::{partition_of, DEFAULT_PARTITIONS};
use bergamot_core::store::Store;
use bergamot_testkit::wait_until;
use chrono::{DateTime, Utc};
use common::cluster::{history, results_history, service_urls, wait_for, Cluster};
use common::OK_COMMAND;
use std::collections::{BTreeMap, HashSet};
use std::future::ready;
use std::time::{Duration, Instant};

/// (a) A worker killed while it runs a slow check: the execute goes back to
/// the queue, another worker runs it, and the check has exactly one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_execute_is_redelivered_and_applied_once() {
    let Some((pg, amqp)) = service_urls("killed_worker") else {
        return;
    };
    let site = "fa";
    let mut cluster = Cluster::new(&pg, &amqp, site, "");
    let marker = cluster.dir.path().join("started");
    let script = cluster.script(
        "slow.sh",
        &format!(
            "#!/bin/sh\necho run >> '{}'\nsleep 3\necho 'SLOW OK - took 3 s'\nexit 0\n",
            marker.display()
        ),
    );
    std::fs::write(
        &cluster.config,
        format!(
            r#"
site = "{site}"

[[command]]
name = "slow"
argv = ["{}"]

[[host]]
name = "h"
every = "10s"
timeout = "8s"
check = {{ command = "slow" }}
"#,
            script.display()
        ),
    )
    .expect("write config");
    let check = CheckId::host(site, "h");

    cluster.start("processor", "proc");
    cluster.start_worker("w1").await;
    cluster.start("scheduler", "sched");
    let runs = || {
        std::fs::read_to_string(&marker)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_until(
        "w1 to start the slow check",
        Duration::from_secs(30),
        || ready(runs() >= 1),
    )
    .await;
    // No further executes: the one in flight is what this test follows.
    let status = cluster.node("sched").terminate(Duration::from_secs(10));
    assert!(status.is_some(), "scheduler did not stop on SIGTERM");
    cluster.node("w1").kill9();
    let killed_at = Instant::now();
    cluster.start("worker", "w2");

    let store = cluster.store().await;
    let results = wait_for(
        "the redelivered execute's result",
        Duration::from_secs(30),
        || async {
            let h = results_history(&store, check).await;
            (!h.is_empty()).then_some(h)
        },
    )
    .await;
    let redelivered_after = killed_at.elapsed();
    assert_eq!(runs(), 2, "w2 ran the check again after w1 was killed");
    // Longer than the check takes: nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let results_after = results_history(&store, check).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        results_after.len(),
        1,
        "exactly one result: {results_after:?}"
    );
    assert_eq!(results_after[0].status, Status::Ok);
    assert_eq!(&*results_after[0].output, "SLOW OK - took 3 s");
    assert_eq!(runs(), 2);
    cluster.assert_all_alive_except(&["w1", "sched"]);
    eprintln!(
        "killed worker: result of the redelivered execute {redelivered_after:?} after the kill"
    );
}

fn traps_config(site: &str, traps: usize) -> String {
    let mut text = format!("site = \"{site}\"\n{OK_COMMAND}\n");
    text.push_str("[[host]]\nname = \"h\"\nevery = \"1h\"\ncheck = { command = \"ok\" }\n");
    for i in 0..traps {
        text.push_str(&format!("\n[[host.trap]]\nname = \"t{i}\"\n"));
    }
    text
}

/// `count` passive results spread over `traps` trap checks of host `h`,
/// each check's results in increasing time.
fn passive_results(
    site: &str,
    traps: usize,
    count: usize,
    base: DateTime<Utc>,
) -> Vec<CheckResult> {
    (0..count)
        .map(|i| {
            let check = CheckId::trap(site, "h", &format!("t{}", i % traps));
            let status = if i % 3 == 0 {
                Status::Warning
            } else {
                Status::Ok
            };
            CheckResult::new(
                check,
                status,
                format!("r{i}"),
                base + chrono::Duration::milliseconds(i as i64),
            )
        })
        .collect()
}

/// Every result id applied to the traps, counting duplicates.
async fn applied_ids(
    store: &bergamot_store::PostgresStore,
    site: &str,
    traps: usize,
) -> Vec<ResultId> {
    let mut out = Vec::new();
    for t in 0..traps {
        let check = CheckId::trap(site, "h", &format!("t{t}"));
        out.extend(
            history(store, check)
                .await
                .into_iter()
                .filter_map(|e| e.result_id),
        );
    }
    out
}

/// Asserts that `applied` is exactly `sent`: none lost, none twice.
fn assert_exactly_once(sent: &[CheckResult], applied: &[ResultId]) {
    let want: HashSet<ResultId> = sent.iter().map(|r| r.id).collect();
    let got: HashSet<ResultId> = applied.iter().copied().collect();
    assert_eq!(got.len(), applied.len(), "some results were applied twice");
    let lost = want.difference(&got).count();
    let extra = got.difference(&want).count();
    assert_eq!((lost, extra), (0, 0), "lost {lost}, unexpected {extra}");
}

/// (b) The active processor killed while results stream in: RabbitMQ hands
/// its result pools to the other processor (single active consumer); every
/// result is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_active_processor_fails_over_without_loss_or_duplicates() {
    let Some((pg, amqp)) = service_urls("killed_processor") else {
        return;
    };
    let site = "fb";
    const TRAPS: usize = 20;
    const TOTAL: usize = 3000;
    let mut cluster = Cluster::new(&pg, &amqp, site, &traps_config(site, TRAPS));
    cluster.start("processor", "p1");
    let store = wait_for("p1 to sync the config", Duration::from_secs(30), || async {
        let s = cluster.store().await;
        s.state(CheckId::trap(site, "h", "t0"))
            .await
            .ok()
            .map(|_| s)
    })
    .await;
    // p1 consumes first, so it is the active consumer of every pool.
    wait_until("p1 to consume", Duration::from_secs(20), || {
        ready(cluster.log_of("p1").contains("node running"))
    })
    .await;
    // A processor consumes a moment after "node running", and nothing tells
    // when: a margin (no log line or metric marks a result consumer yet).
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start("processor", "p2");
    wait_until("p2 to consume", Duration::from_secs(20), || {
        ready(cluster.log_of("p2").contains("node running"))
    })
    .await;
    // The same margin for p2 (it must be a waiting consumer before the kill).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let queue = cluster.queue().await;
    let sent = passive_results(site, TRAPS, TOTAL, Utc::now() - chrono::Duration::hours(1));
    queue
        .publish_results(sent.clone())
        .await
        .expect("publish the results");
    // Kill the active one mid-stream.
    let before_kill = wait_for("some results applied", Duration::from_secs(60), || async {
        let n = applied_ids(&store, site, TRAPS).await.len();
        (n >= TOTAL / 10).then_some(n)
    })
    .await;
    cluster.node("p1").kill9();
    let killed_at = Instant::now();
    let after_kill = applied_ids(&store, site, TRAPS).await.len();
    assert!(
        after_kill < TOTAL,
        "every result was applied before the kill ({after_kill}); nothing was failed over"
    );
    let first_after = parking_lot::Mutex::new(None);
    let applied = wait_for("every result applied", Duration::from_secs(90), || async {
        let ids = applied_ids(&store, site, TRAPS).await;
        let mut first = first_after.lock();
        if first.is_none() && ids.len() > after_kill {
            *first = Some(killed_at.elapsed());
        }
        (ids.len() >= TOTAL).then_some(ids)
    })
    .await;
    // Redeliveries may still be on their way: give them time to show up as
    // duplicates if they were applied twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let applied_later = applied_ids(&store, site, TRAPS).await;
    assert_eq!(applied.len(), applied_later.len());
    assert_exactly_once(&sent, &applied_later);
    cluster.assert_all_alive_except(&["p1"]);
    queue.close().await.expect("close");
    eprintln!(
        "killed processor: {before_kill} applied before the kill, p2 applied its first result {:?} after it, all {TOTAL} after {:?}",
        first_after.lock(),
        killed_at.elapsed()
    );
}

/// Results per check with `executed_at` in `[from, to)`.
async fn results_between(
    store: &bergamot_store::PostgresStore,
    checks: &[CheckId],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<CheckId, usize> {
    let mut out = BTreeMap::new();
    for &c in checks {
        let n = results_history(store, c)
            .await
            .iter()
            .filter(|e| e.at >= from && e.at < to)
            .count();
        out.insert(c, n);
    }
    out
}

/// Results per check in a `window` that starts `settle` from now, counted
/// 2 s after it ended (for its last results to be applied). The sleeps are
/// the measurement: how often each check runs in steady state.
async fn runs_in_a_window(
    store: &bergamot_store::PostgresStore,
    checks: &[CheckId],
    settle: Duration,
    window: chrono::Duration,
) -> BTreeMap<CheckId, usize> {
    tokio::time::sleep(settle).await;
    let from = Utc::now();
    let end = (window + chrono::Duration::seconds(2))
        .to_std()
        .expect("window");
    tokio::time::sleep(end).await;
    results_between(store, checks, from, from + window).await
}

/// (e) Two scheduler nodes share the checks; one is killed: the survivor
/// schedules its checks within 10 s, and in steady state (before and after)
/// no check runs more often than its interval says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_scheduler_checks_move_to_the_survivor_and_run_once() {
    let Some((pg, amqp)) = service_urls("killed_scheduler") else {
        return;
    };
    let site = "fe";
    const CHECKS: usize = 16;
    const EVERY: i64 = 2;
    let mut text = format!(
        "site = \"{site}\"\n\n[defaults]\nevery = \"{EVERY}s\"\nretry_every = \"{EVERY}s\"\n{OK_COMMAND}"
    );
    for i in 0..CHECKS {
        text.push_str(&format!(
            "\n[[host]]\nname = \"h{i}\"\ncheck = {{ command = \"ok\" }}\n"
        ));
    }
    let checks: Vec<CheckId> = (0..CHECKS)
        .map(|i| CheckId::host(site, &format!("h{i}")))
        .collect();
    let mut cluster = Cluster::new(&pg, &amqp, site, &text);
    cluster.start("processor", "proc");
    cluster.start_worker("work").await;
    cluster.start("scheduler", "sa");
    cluster.start("scheduler", "sb");

    // Converged: the two nodes hold disjoint halves of the partitions.
    let held = wait_for(
        "both schedulers to own their share",
        Duration::from_secs(30),
        || async {
            let held = cluster.partitions_held().await;
            let total: usize = held.values().map(Vec::len).sum();
            (held
                .values()
                .all(|p| p.len() == DEFAULT_PARTITIONS as usize / 2)
                && total == DEFAULT_PARTITIONS as usize)
                .then_some(held)
        },
    )
    .await;
    let a: HashSet<u32> = held["sa"].iter().copied().collect();
    let b: HashSet<u32> = held["sb"].iter().copied().collect();
    assert!(a.is_disjoint(&b), "{held:?}");
    let of_a: Vec<CheckId> = checks
        .iter()
        .copied()
        .filter(|c| a.contains(&partition_of(*c, DEFAULT_PARTITIONS)))
        .collect();
    assert!(
        !of_a.is_empty() && of_a.len() < CHECKS,
        "the test needs checks on both nodes: {} of {CHECKS} on sa",
        of_a.len()
    );

    // Steady state with two nodes: at most one run per interval per check.
    let store = cluster.store().await;
    let window = chrono::Duration::seconds(6 * EVERY);
    let settle = Duration::from_secs(EVERY as u64 * 2);
    let counts = runs_in_a_window(&store, &checks, settle, window).await;
    for (c, n) in &counts {
        assert!(
            (1..=6 + 1).contains(n),
            "two schedulers: check {c} ran {n} times in {window}, interval {EVERY} s: {counts:?}"
        );
    }
    let max_two = counts.values().max().copied().unwrap_or(0);

    // Kill sa: its checks are scheduled by sb within 10 s.
    cluster.node("sa").kill9();
    let killed = Utc::now();
    let killed_at = Instant::now();
    wait_for(
        "sb to run every check of sa (at most 10 s)",
        Duration::from_secs(10),
        || async {
            let runs = results_between(
                &store,
                &of_a,
                killed,
                Utc::now() + chrono::Duration::hours(1),
            )
            .await;
            runs.values().all(|n| *n >= 1).then_some(())
        },
    )
    .await;
    let moved_in = killed_at.elapsed();
    let held = cluster.partitions_held().await;
    assert_eq!(held["sb"].len(), DEFAULT_PARTITIONS as usize, "{held:?}");
    assert!(held["sa"].is_empty(), "{held:?}");

    // Steady state with one node: still at most one run per interval.
    let counts = runs_in_a_window(&store, &checks, settle, window).await;
    for (c, n) in &counts {
        assert!(
            (1..=6 + 1).contains(n),
            "one scheduler: check {c} ran {n} times in {window}: {counts:?}"
        );
    }
    let max_one = counts.values().max().copied().unwrap_or(0);
    cluster.assert_all_alive_except(&["sa"]);
    eprintln!(
        "killed scheduler: {} checks of sa ran on sb within {moved_in:?} of the kill; most runs of one check in a {window} window: {max_two} with two nodes, {max_one} with one",
        of_a.len()
    );
}
