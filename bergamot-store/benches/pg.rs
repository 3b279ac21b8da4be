//! PostgresStore benchmark: apply_result throughput (single and batched) and
//! whole-graph group state (recursive query vs one query per group).
//!
//! Run on demand:
//! `BERGAMOT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p bergamot-store --bench pg`
//! Server settings are left as they are (synchronous_commit is printed).

mod old_query;

use bergamot_core::model::{Check, CheckId, CheckKind, CheckResult, Group, GroupId, Model, Status};
use bergamot_core::store::Store;
use bergamot_store::{PostgresConfig, PostgresStore};
use chrono::{Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn check(id: CheckId, host: &str, name: &str, groups: Vec<GroupId>) -> Check {
    Check::builder(id, CheckKind::Service, host, name)
        .engine("dummy")
        .groups(groups)
        .build()
}

async fn raw(url: &str) -> BoxResult<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        conn.await.ok();
    });
    Ok(client)
}

fn rate(n: usize, d: std::time::Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench_apply(url: &str, schema: &str) -> BoxResult<()> {
    const CHECKS: usize = 4_000;
    let store = Arc::new(
        PostgresStore::connect(
            PostgresConfig::new(url)
                .with_schema(schema)
                .with_pool_size(16),
        )
        .await?,
    );
    let checks: Vec<Check> = (0..CHECKS)
        .map(|i| {
            let h = format!("h{i}");
            check(CheckId::service("bench", &h, "svc"), &h, "svc", vec![])
        })
        .collect();
    let ids: Vec<CheckId> = checks.iter().map(|c| c.id).collect();
    store
        .sync_config(&Model {
            site: "bench".into(),
            checks,
            ..Model::default()
        })
        .await?;
    let t0 = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .ok_or("time")?;
    let statuses = [Status::Ok, Status::Ok, Status::Warning, Status::Critical];
    let mk = |i: usize, round: usize| {
        CheckResult::new(
            ids[i % CHECKS],
            statuses[(i / CHECKS + round + i) % 4],
            "bench",
            t0 + Duration::seconds((round * 100_000 + i) as i64),
        )
    };

    // Single, one caller: latency per apply_result.
    let n = 2_000;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let r = mk(i, 0);
        let s = Instant::now();
        store.apply_result(&r, r.executed_at).await?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let el = start.elapsed();
    lat.sort_by(f64::total_cmp);
    println!(
        "apply_result single, 1 caller:    {:>8.0} results/s  (p50 {:.2} ms, p99 {:.2} ms, n={n})",
        rate(n, el),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Single, 16 concurrent callers on disjoint checks.
    let tasks = 16;
    let per = 500;
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let rs: Vec<CheckResult> = (0..per).map(|k| mk(t + k * tasks, 1)).collect();
        hs.push(tokio::spawn(async move {
            for r in rs {
                store.apply_result(&r, r.executed_at).await?;
            }
            Ok::<_, bergamot_core::Error>(())
        }));
    }
    for h in hs {
        h.await??;
    }
    println!(
        "apply_result single, 16 callers:  {:>8.0} results/s  (n={})",
        rate(tasks * per, start.elapsed()),
        tasks * per
    );

    // Batched: several callers, each on its own checks, batches of one result per check.
    // Rounds continue across the configurations so that no result is stale.
    let mut round0 = 2;
    for (callers, batch) in [(4usize, 500usize), (8, 500), (4, 1000)] {
        let rounds = 40_000 / (callers * batch);
        let base = round0;
        round0 += rounds;
        let start = Instant::now();
        let mut hs = Vec::new();
        for c in 0..callers {
            let store = store.clone();
            let batches: Vec<Vec<CheckResult>> = (0..rounds)
                .map(|round| {
                    (0..batch)
                        .map(|k| mk(c * batch + k, base + round))
                        .collect()
                })
                .collect();
            hs.push(tokio::spawn(async move {
                for b in batches {
                    let now = b
                        .iter()
                        .map(|r| r.executed_at)
                        .max()
                        .unwrap_or_else(Utc::now);
                    for o in store.apply_results(&b, now).await? {
                        o?;
                    }
                }
                Ok::<_, bergamot_core::Error>(())
            }));
        }
        for h in hs {
            h.await??;
        }
        let total = callers * batch * rounds;
        // Every result must have been applied (none stale), or the rate lies.
        let applied: u64 = store.states().await?.iter().map(|(_, s)| s.version).sum();
        println!("  (total applied so far: {applied})");
        println!(
            "apply_results batched ({batch}/batch, {callers} callers): {:>8.0} results/s  (n={total})",
            rate(total, start.elapsed())
        );
    }
    store.close();
    Ok(())
}

/// 10,000 groups, depth 7, about 10% with a second parent; 100,000 checks,
/// 80% in one group and 20% in two.
fn big_model(rng: &mut StdRng, groups: usize, checks: usize) -> Model {
    let levels = 7;
    let mut by_level: Vec<Vec<GroupId>> = vec![Vec::new(); levels];
    let mut model = Model {
        site: "bench".into(),
        ..Model::default()
    };
    for i in 0..groups {
        let level = if i < levels {
            i
        } else {
            1 + rng.gen_range(0..levels - 1)
        };
        let id = GroupId::named("bench", &format!("g{i}"));
        let mut parents = Vec::new();
        if level > 0 {
            let above = &by_level[level - 1];
            parents.push(above[rng.gen_range(0..above.len())]);
            if rng.gen_bool(0.1) {
                let p = above[rng.gen_range(0..above.len())];
                if !parents.contains(&p) {
                    parents.push(p);
                }
            }
        }
        by_level[level].push(id);
        model.groups.push(Group {
            id,
            name: format!("g{i}"),
            parents,
        });
    }
    let all: Vec<GroupId> = model.groups.iter().map(|g| g.id).collect();
    for i in 0..checks {
        let h = format!("h{}", i / 10);
        let n = format!("s{i}");
        let mut gs = vec![all[rng.gen_range(0..all.len())]];
        if rng.gen_bool(0.2) {
            let g = all[rng.gen_range(0..all.len())];
            if !gs.contains(&g) {
                gs.push(g);
            }
        }
        model
            .checks
            .push(check(CheckId::service("bench", &h, &n), &h, &n, gs));
    }
    model
}

async fn bench_groups(url: &str, schema: &str) -> BoxResult<()> {
    const GROUPS: usize = 10_000;
    const CHECKS: usize = 100_000;
    let store = PostgresStore::connect(PostgresConfig::new(url).with_schema(schema)).await?;
    let mut rng = StdRng::seed_from_u64(7);
    let model = big_model(&mut rng, GROUPS, CHECKS);
    let start = Instant::now();
    store.sync_config(&model).await?;
    println!(
        "sync_config {GROUPS} groups / {CHECKS} checks: {:.2} s",
        start.elapsed().as_secs_f64()
    );
    // Random statuses and ignore flags, written directly.
    let ids: Vec<Uuid> = model.checks.iter().map(|c| c.id.0).collect();
    let status: Vec<i16> = ids.iter().map(|_| rng.gen_range(0..10)).collect();
    let flag = |rng: &mut StdRng| -> Vec<bool> { ids.iter().map(|_| rng.gen_bool(0.03)).collect() };
    let (sup, dt, enc) = (flag(&mut rng), flag(&mut rng), flag(&mut rng));
    let client = raw(url).await?;
    client
        .execute(
            &format!(
                "UPDATE {schema}.check_state s SET status = u.st, ok = u.st <= 2, suppressed = u.sup,
                     in_downtime = u.dt, encompassed = u.enc
                 FROM unnest($1::uuid[], $2::int2[], $3::bool[], $4::bool[], $5::bool[])
                     AS u(id, st, sup, dt, enc) WHERE s.check_id = u.id"
            ),
            &[&ids, &status, &sup, &dt, &enc],
        )
        .await?;
    client.batch_execute(&format!("VACUUM ANALYZE {schema}.check_state, {schema}.check_groups, {schema}.group_parents, {schema}.groups, {schema}.group_closure, {schema}.group_extra_paths")).await?;

    client
        .batch_execute(&format!(
            "SET search_path TO {schema}; SET jit = off; SET work_mem = '64MB'"
        ))
        .await?;
    let old_sql = old_query::group_query_all();
    let old_stmt = client.prepare(&old_sql).await?;
    store.group_states(None).await?; // warm up
    client.query(&old_stmt, &[]).await?;
    // Interleaved, so both see the same machine state.
    let mut times = Vec::new();
    let mut old_times = Vec::new();
    let mut n = 0;
    for _ in 0..7 {
        let s = Instant::now();
        n = store.group_states(None).await?.len();
        times.push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        let old_n = client.query(&old_stmt, &[]).await?.len();
        old_times.push(s.elapsed().as_secs_f64() * 1e3);
        assert_eq!(old_n, n, "old and new queries disagree on the group count");
    }
    times.sort_by(f64::total_cmp);
    old_times.sort_by(f64::total_cmp);
    let whole = times[times.len() / 2];
    println!(
        "group_states(None), schema v2 query (group_closure): median {whole:.1} ms, min {:.1} ms ({n} groups, jit off)",
        times[0]
    );
    println!(
        "same, schema v1 query (closure per query):          median {:.1} ms, min {:.1} ms (same run, interleaved)",
        old_times[old_times.len() / 2],
        old_times[0]
    );

    // Naive: one query per group. Measured on a random sample, scaled to all.
    let sample = 200;
    let picks: Vec<GroupId> = (0..sample)
        .map(|_| model.groups[rng.gen_range(0..GROUPS)].id)
        .collect();
    let s = Instant::now();
    for g in &picks {
        store.group_states_of(std::slice::from_ref(g)).await?;
    }
    let per = s.elapsed().as_secs_f64() * 1e3 / sample as f64;
    let naive = per * GROUPS as f64;
    println!(
        "naive, one query per group:       {per:.2} ms/group -> {naive:.0} ms for {GROUPS} groups (measured on {sample}, scaled)"
    );
    println!(
        "recursive query is {:.0}x faster than one query per group",
        naive / whole
    );

    // The processor's path after a transition: the check's ancestors, then
    // exactly those aggregates.
    let mut lat = Vec::new();
    for _ in 0..100 {
        let c = model.checks[rng.gen_range(0..CHECKS)].id;
        let s = Instant::now();
        let anc = store.ancestor_groups(c).await?;
        store.group_states_of(&anc).await?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "ancestor_groups + group_states_of(ancestors) of one check: p50 {:.1} ms, p90 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.9)
    );

    let s = Instant::now();
    let sub = store.group_states(Some(model.groups[1].id)).await?;
    println!(
        "group_states(subtree of a level-1 group): {:.1} ms ({} groups)",
        s.elapsed().as_secs_f64() * 1e3,
        sub.len()
    );
    // apply_results on grouped checks, every result changing the check's
    // contribution (status cycles). First with the group_counts trigger
    // disabled (the cost without it; the counts go stale, so this runs after
    // every aggregate measurement), then with it, on later results.
    let t0 = Utc
        .with_ymd_and_hms(2026, 2, 1, 0, 0, 0)
        .single()
        .ok_or("time")?;
    let cycle = [
        Status::Ok,
        Status::Critical,
        Status::Warning,
        Status::Unknown,
    ];
    let (batches, batch) = (20usize, 500usize);
    for (round, trigger) in [(0usize, false), (1, true)] {
        client
            .batch_execute(&format!(
                "ALTER TABLE {schema}.check_state {} TRIGGER group_counts_on_update",
                if trigger { "ENABLE" } else { "DISABLE" }
            ))
            .await?;
        let start = Instant::now();
        for b in 0..batches {
            let rs: Vec<CheckResult> = (0..batch)
                .map(|k| {
                    let i = (b * batch + k) * 7 % CHECKS;
                    CheckResult::new(
                        model.checks[i].id,
                        cycle[(b + round) % cycle.len()],
                        "bench",
                        t0 + Duration::seconds((round * 100_000 + b * batch + k) as i64),
                    )
                })
                .collect();
            for o in store.apply_results(&rs, t0 + Duration::days(2)).await? {
                o?;
            }
        }
        println!(
            "apply_results on grouped checks ({batch}/batch, 1 caller, contribution changes), trigger {}: {:.0} results/s",
            if trigger { "on " } else { "off" },
            rate(batches * batch, start.elapsed())
        );
    }
    store.close();
    Ok(())
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let Ok(url) = std::env::var("BERGAMOT_TEST_POSTGRES_URL") else {
        println!("skipped: set BERGAMOT_TEST_POSTGRES_URL to run the PostgreSQL benchmark");
        return Ok(());
    };
    let client = raw(&url).await?;
    let sc: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    println!("PostgreSQL {version}, synchronous_commit = {sc} (unchanged)");
    let tag = format!("{:08x}", rand::random::<u32>());
    let a = format!("bench_apply_{tag}");
    let g = format!("bench_groups_{tag}");
    let r1 = if std::env::args().any(|a| a == "--groups-only") {
        Ok(())
    } else {
        bench_apply(&url, &a).await
    };
    let r2 = if std::env::args().any(|a| a == "--apply-only") {
        Ok(())
    } else {
        bench_groups(&url, &g).await
    };
    let keep = std::env::var("BERGAMOT_BENCH_KEEP").is_ok_and(|v| v == "1");
    if keep {
        println!("kept schema {g} (BERGAMOT_BENCH_KEEP=1)");
    }
    for s in [&a, &g] {
        if keep && s == &g {
            continue;
        }
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await?;
    }
    r1?;
    r2?;
    Ok(())
}
