//! `InMemoryStore::apply_result` throughput and aggregate computation time.
//!
//! `cargo bench -p bergamot-core --bench store`. Prints what it measured.

use bergamot_core::aggregate;
use bergamot_core::backend::GraphIndex;
use bergamot_core::model::{Check, CheckId, CheckKind, CheckResult, Group, GroupId, Model, Status};
use bergamot_core::state::{self, CheckState};
use bergamot_core::store::{InMemoryStore, Store};
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const SITE: &str = "bench";

fn svc(i: usize, groups: Vec<GroupId>) -> Check {
    let host = format!("host{}", i / 10);
    let name = format!("svc{i}");
    Check::builder(
        CheckId::service(SITE, &host, &name),
        CheckKind::Service,
        host,
        name,
    )
    .groups(groups)
    .build()
}

/// `n_groups` groups: a root, then each group has one or two parents among
/// earlier groups (a DAG about log(n) deep); checks spread over the groups.
fn model(n_groups: usize, n_checks: usize) -> Model {
    let ids: Vec<GroupId> = (0..n_groups)
        .map(|i| GroupId::named(SITE, &format!("g{i}")))
        .collect();
    let groups = (0..n_groups)
        .map(|i| {
            let mut parents = Vec::new();
            if i > 0 {
                parents.push(ids[(i - 1) / 4]);
                if i % 7 == 0 && i > 8 {
                    parents.push(ids[(i - 1) / 8]);
                }
            }
            Group {
                id: ids[i],
                name: format!("g{i}"),
                parents,
            }
        })
        .collect();
    let checks = (0..n_checks)
        .map(|i| svc(i, vec![ids[(i * 7919) % n_groups]]))
        .collect();
    Model {
        site: SITE.into(),
        checks,
        groups,
        locations: vec![],
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // apply_result throughput over 10,000 checks in 100 groups.
        let m = model(100, 10_000);
        let store = Arc::new(InMemoryStore::new());
        store.sync_config(&m).await.expect("sync");
        let ids: Vec<CheckId> = m.checks.iter().map(|c| c.id).collect();
        let base = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let statuses = [
            Status::Ok,
            Status::Ok,
            Status::Warning,
            Status::Critical,
            Status::Ok,
        ];
        let rounds = 50;
        let results: Vec<CheckResult> = (0..rounds)
            .flat_map(|r| {
                ids.iter().enumerate().map(move |(i, id)| {
                    let st = statuses[(r + i) % statuses.len()];
                    CheckResult::new(
                        *id,
                        st,
                        "bench output",
                        base + ChronoDuration::seconds(r as i64),
                    )
                })
            })
            .collect();
        let n = results.len();
        let start = Instant::now();
        for r in &results {
            store.apply_result(r, r.executed_at).await.expect("apply");
        }
        let el = start.elapsed();
        println!(
            "apply_result, 1 task: {n} results over {} checks in {:.2?}: {:.0} results/s",
            ids.len(),
            el,
            n as f64 / el.as_secs_f64()
        );

        // Two tasks on disjoint checks (the machine has 2 cores).
        let store2 = Arc::new(InMemoryStore::new());
        store2.sync_config(&m).await.expect("sync");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for part in 0..2 {
            let store = Arc::clone(&store2);
            let mine: Vec<CheckResult> = results
                .iter()
                .filter(|r| (r.check_id.0.as_u128() % 2) as usize == part)
                .cloned()
                .collect();
            tasks.push(tokio::spawn(async move {
                for r in &mine {
                    store.apply_result(r, r.executed_at).await.expect("apply");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let el = start.elapsed();
        println!(
            "apply_result, 2 tasks: {n} results in {:.2?}: {:.0} results/s",
            el,
            n as f64 / el.as_secs_f64()
        );
    });

    // Aggregates: 10,000 groups, 100,000 checks.
    let m = model(10_000, 100_000);
    let mut states: HashMap<CheckId, CheckState> = HashMap::new();
    for (i, c) in m.checks.iter().enumerate() {
        let mut s = state::initial_state(&c.policy);
        s.status = Status::ALL[i % 10];
        s.ok = s.status.is_ok();
        s.suppressed = i % 13 == 0;
        states.insert(c.id, s);
    }
    let start = Instant::now();
    let index = GraphIndex::new(&m);
    let build = start.elapsed();
    let start = Instant::now();
    let all = index.group_states(|id| states.get(&id), None);
    let agg = start.elapsed();
    let start = Instant::now();
    let once = aggregate::group_states(&m, |id| states.get(&id), None);
    let both = start.elapsed();
    assert_eq!(all, once);
    let pairs: u64 = m
        .checks
        .iter()
        .map(|c| index.ancestor_groups(c.id).map_or(0, |v| v.len() as u64))
        .sum();
    println!(
        "aggregates, 10,000 groups / 100,000 checks ({pairs} check-group pairs): index {:.2?}, whole-graph pass {:.2?}, aggregate::group_states (both) {:.2?}",
        build, agg, both
    );

    // The store keeps aggregates incrementally: reading them is a copy.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = InMemoryStore::new();
        let start = Instant::now();
        store.sync_config(&m).await.expect("sync");
        let sync = start.elapsed();
        let start = Instant::now();
        let got = store.group_states(None).await.expect("group_states");
        let read = start.elapsed();
        println!("InMemoryStore with 10,000 groups / 100,000 checks: sync_config {:.2?}, group_states(None) {:.2?} ({} groups)", sync, read, got.len());
        let c = m.checks[1].id;
        let anc = store.ancestor_groups(c).await.expect("ancestors");
        let t0 = Utc::now();
        let start = Instant::now();
        let k = 10_000;
        for i in 0..k {
            let st = if i % 2 == 0 { Status::Critical } else { Status::Ok };
            store.apply_result(&CheckResult::new(c, st, "x", t0 + ChronoDuration::seconds(i)), t0).await.expect("apply");
            store.group_states_of(&anc).await.expect("groups of");
        }
        let el = start.elapsed();
        println!(
            "apply_result + group_states_of({} ancestors), status flipping every result: {:.1} µs per result",
            anc.len(),
            el.as_secs_f64() * 1e6 / k as f64
        );
    });
}
