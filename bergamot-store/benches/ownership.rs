//! Scheduling ownership over a real PostgreSQL: round cost, convergence of
//! three nodes, and how long a killed node's partitions take to move.
//!
//! `BERGAMOT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!  cargo bench -p bergamot-store --bench ownership`

use bergamot_core::schedule::PartitionOwner;
use bergamot_store::{PgOwnerConfig, PgPartitionOwner};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

fn owner(url: &str, class: i32, node: &str, every: Duration) -> Arc<PgPartitionOwner> {
    Arc::new(
        PgPartitionOwner::new(
            PgOwnerConfig::new(url)
                .with_lock_class(class)
                .with_node(node)
                .with_round_every(every),
        )
        .expect("valid config"),
    )
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("BERGAMOT_TEST_POSTGRES_URL") else {
        eprintln!("skipped: BERGAMOT_TEST_POSTGRES_URL is not set");
        return;
    };
    let class = rand::random::<i32>().rem_euclid(i32::MAX - 1) + 1;
    let (admin, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);

    // 1. Round cost, 3 nodes, P = 64, after convergence (steady rounds).
    let nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| owner(&url, class, n, Duration::from_secs(2)))
        .collect();
    let t0 = Instant::now();
    let mut rounds = 0;
    loop {
        for o in &nodes {
            o.acquire().await.expect("round");
        }
        rounds += 1;
        let total: usize = nodes.iter().map(|o| o.owned().len()).sum();
        if total == 64 && nodes.iter().all(|o| o.owned().len() <= 22) {
            break;
        }
    }
    println!(
        "3 nodes, P=64: converged in {rounds} rounds each ({:?} back to back); shares {:?}",
        t0.elapsed(),
        nodes.iter().map(|o| o.owned().len()).collect::<Vec<_>>()
    );
    let mut steady = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        nodes[0].acquire().await.expect("round");
        steady.push(t.elapsed());
    }
    println!(
        "steady round (count nodes, nothing to take): p50 {:?} p99 {:?}",
        pct(&mut steady, 0.5),
        pct(&mut steady, 0.99)
    );
    for o in &nodes {
        o.release().await.expect("release");
    }

    // 2. Failover with the default 2 s rounds: kill a's session, time until
    //    b and c own everything between them (5 runs).
    let mut moves = Vec::new();
    for run in 0..5 {
        let class = class.wrapping_add(run + 1).max(1);
        let nodes: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| owner(&url, class, n, Duration::from_secs(2)))
            .collect();
        let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let tasks: Vec<_> = nodes
            .iter()
            .map(|o| {
                let o = o.clone();
                let mut rx = stop_tx.subscribe();
                tokio::spawn(async move {
                    o.run(async move {
                        rx.recv().await.ok();
                    })
                    .await
                })
            })
            .collect();
        let wait = Instant::now();
        while nodes.iter().map(|o| o.owned().len()).sum::<usize>() != 64
            || nodes.iter().any(|o| o.owned().len() > 22)
        {
            if wait.elapsed() > Duration::from_secs(20) {
                let n: i64 = admin
                    .query_one("SELECT count(*) FROM pg_stat_activity", &[])
                    .await
                    .expect("count")
                    .get(0);
                println!(
                    "run {run}: no convergence after 20 s: shares {:?}, {n} sessions on the server",
                    nodes.iter().map(|o| o.owned().len()).collect::<Vec<_>>()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lost = nodes[0].owned().len();
        // kill -9 of node a: its rounds stop, then its session ends.
        tasks[0].abort();
        let t = Instant::now();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&nodes[0].application_name()],
            )
            .await
            .expect("terminate");
        let mut a_dropped = None;
        loop {
            if a_dropped.is_none() && nodes[0].owned().is_empty() {
                a_dropped = Some(t.elapsed());
            }
            let bc = nodes[1].owned().len() + nodes[2].owned().len();
            if a_dropped.is_some() && bc == 64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let moved = t.elapsed();
        println!(
            "failover run {run}: killed node held {lost}; it dropped them after {:?}; b and c own all 64 after {moved:?}",
            a_dropped.unwrap_or_default()
        );
        moves.push(moved);
        stop_tx.send(()).ok();
        for t in tasks.into_iter().skip(1) {
            t.await.ok();
        }
    }
    println!(
        "failover (round_every 2 s): max {:?}, p50 {:?}",
        moves.iter().max().copied().unwrap_or_default(),
        pct(&mut moves, 0.5)
    );
}
