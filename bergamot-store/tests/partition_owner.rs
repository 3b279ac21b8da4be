//! `PgPartitionOwner` against a real PostgreSQL (`BERGAMOT_TEST_POSTGRES_URL`).
//! Each test uses its own random advisory-lock class, so tests run in
//! parallel without seeing each other.

mod common;

use bergamot_core::model::{CheckId, Model, Policy};
use bergamot_core::schedule::{PartitionOwner, Schedule, ScheduleConfig};
use bergamot_store::{PgOwnerConfig, PgPartitionOwner};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::NoTls;

const P: u32 = 16;

/// The test server and an advisory-lock class of one test's own.
struct Cluster {
    url: String,
    class: i32,
    admin: tokio_postgres::Client,
}

impl Cluster {
    /// None when the test server is not configured.
    async fn new() -> Option<Cluster> {
        let url = common::test_url()?;
        let (admin, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("admin connection");
        tokio::spawn(conn);
        Some(Cluster {
            url,
            class: rand::random::<i32>().rem_euclid(i32::MAX - 1) + 1,
            admin,
        })
    }

    /// An owner named `node` of this cluster's partitions.
    fn owner(&self, node: &str) -> PgPartitionOwner {
        PgPartitionOwner::new(
            PgOwnerConfig::new(&self.url)
                .with_lock_class(self.class)
                .with_partitions(P)
                .with_node(node)
                .with_round_every(Duration::from_millis(200)),
        )
        .expect("valid owner config")
    }

    /// Owners `a` and `b`, sharing the partitions.
    async fn converged_pair(&self) -> (PgPartitionOwner, PgPartitionOwner) {
        let (a, b) = (self.owner("a"), self.owner("b"));
        converge(&[&a, &b]).await;
        (a, b)
    }

    /// The partitions PostgreSQL says the session of `owner` holds.
    async fn held(&self, owner: &PgPartitionOwner) -> BTreeSet<u32> {
        self.admin
            .query(
                "SELECT l.objid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                   AND l.classid = $1 AND a.application_name = $2",
                &[&(self.class as u32), &owner.application_name()],
            )
            .await
            .expect("query pg_locks")
            .iter()
            .map(|r| r.get::<_, u32>(0))
            .collect()
    }

    /// Terminates the session of `owner` (a kill -9 as PostgreSQL sees it).
    async fn kill(&self, owner: &PgPartitionOwner) {
        let app = owner.application_name();
        let n = self
            .admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("terminate");
        assert_eq!(n, 1, "exactly one session named {app}");
    }
}

/// Runs rounds on every owner until their owned sets are disjoint, cover
/// every partition and are balanced.
async fn converge(owners: &[&PgPartitionOwner]) {
    let fair = (P as usize).div_ceil(owners.len());
    eventually("the owners to split the partitions fairly", || async move {
        for o in owners {
            o.acquire().await.ok();
        }
        let sets: Vec<_> = owners.iter().map(|o| o.owned()).collect();
        let total: usize = sets.iter().map(|s| s.len()).sum();
        let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        total == P as usize && union.len() == P as usize && sets.iter().all(|s| s.len() <= fair)
    })
    .await;
}

/// Polls `f` for up to 30 s.
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    bergamot_testkit::wait_until(what, Duration::from_secs(30), f).await
}

#[tokio::test]
async fn two_owners_split_the_partitions_without_overlap() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let a = c.owner("a");
    let b = c.owner("b");
    let mut wa = a.watch();

    // Alone, a takes everything.
    assert_eq!(a.acquire().await.expect("round"), (0..P).collect());
    assert!(wa.has_changed().expect("sender alive"));
    assert_eq!(*wa.borrow_and_update(), (0..P).collect::<BTreeSet<_>>());
    // b joins: a gives back its extras, b takes them.
    converge(&[&a, &b]).await;
    let (sa, sb) = (a.owned(), b.owned());
    assert_eq!(sa.len(), 8);
    assert_eq!(sb.len(), 8);
    assert!(sa.is_disjoint(&sb));
    assert_eq!(*wa.borrow(), sa);
    // PostgreSQL agrees with what each owner publishes.
    assert_eq!(c.held(&a).await, sa);
    assert_eq!(c.held(&b).await, sb);
    // Further rounds change nothing.
    for _ in 0..3 {
        assert_eq!(a.acquire().await.expect("round"), sa);
        assert_eq!(b.acquire().await.expect("round"), sb);
    }
    // A release frees everything at once.
    a.release().await.expect("release");
    assert!(a.owned().is_empty());
    assert!(wa.borrow().is_empty());
    assert!(c.held(&a).await.is_empty());
    b.release().await.expect("release");
}

#[tokio::test]
async fn a_killed_session_drops_everything_and_the_survivor_takes_over() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let (a, b) = c.converged_pair().await;
    let mut wa = a.watch();
    wa.borrow_and_update();

    // kill -9 of a's session: a learns at once (its connection ends) and
    // publishes the empty set, without any round.
    c.kill(&a).await;
    eventually("a drops every partition", || {
        let empty = a.owned().is_empty() && wa.borrow().is_empty();
        async move { empty }
    })
    .await;
    // b takes everything on its next rounds (only one live node left).
    eventually("b owns every partition", || async {
        b.acquire().await.ok();
        b.owned().len() == P as usize
    })
    .await;
    assert_eq!(c.held(&b).await, (0..P).collect());

    // a comes back (reconnects on its next round): they share again.
    converge(&[&a, &b]).await;
    assert!(a.owned().is_disjoint(&b.owned()));
    assert_eq!(a.owned().len(), 8);
    a.release().await.expect("release");
    b.release().await.expect("release");
}

#[tokio::test]
async fn a_dropped_owner_frees_its_partitions_for_a_running_one() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let b = std::sync::Arc::new(c.owner("b"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let b = b.clone();
        tokio::spawn(async move {
            b.run(async {
                stop_rx.await.ok();
            })
            .await
        })
    };
    {
        // a is dropped without release, like a process that dies.
        let a = c.owner("a");
        eventually("a and b share", || async {
            a.acquire().await.ok();
            let (sa, sb) = (a.owned(), b.owned());
            sa.len() == 8 && sb.len() == 8 && sa.is_disjoint(&sb)
        })
        .await;
        assert_eq!(c.held(&a).await.len(), 8);
    }
    eventually("b owns every partition", || async {
        b.owned().len() == P as usize
    })
    .await;
    stop_tx.send(()).expect("runner alive");
    runner.await.expect("no panic");
    // run() released on shutdown.
    assert!(b.owned().is_empty());
    assert!(c.held(&b).await.is_empty());
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let e = PgPartitionOwner::new(PgOwnerConfig::new("not a url at all ::")).expect_err("bad url");
    assert!(e.to_string().contains("URL"), "{e}");
    let e = PgPartitionOwner::new(PgOwnerConfig::new("postgres://x@h/db").with_partitions(0))
        .expect_err("zero partitions");
    assert!(e.to_string().contains("partitions"), "{e}");
    let e =
        PgPartitionOwner::new(PgOwnerConfig::new("postgres://x@h/db").with_node("n".repeat(80)))
            .expect_err("long node");
    assert!(e.to_string().contains("node name"), "{e}");
}

fn model(n: usize) -> Model {
    common::services_model(n, &Policy::builder().every(Duration::from_secs(60)).build())
}

/// Two schedules following two owners' watch channels dispatch each check
/// exactly once per interval in steady state; after one node's session is
/// killed the other runs every check, resuming from the last runs.
#[tokio::test]
async fn a_scheduler_pair_dispatches_each_check_once_per_interval() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let (a, b) = c.converged_pair().await;

    let m = model(300);
    let cfg = ScheduleConfig {
        partitions: P,
        ..ScheduleConfig::default()
    };
    let origin = Instant::now();
    let wall0 = chrono::Utc::now();
    let mut sa = Schedule::new(cfg.clone(), origin);
    let mut sb = Schedule::new(cfg, origin);
    sa.apply_model(&m, origin);
    sb.apply_model(&m, origin);
    sa.set_owned_partitions(&a.watch().borrow(), origin);
    sb.set_owned_partitions(&b.watch().borrow(), origin);

    // Simulated time, 100 ms steps: (offset, node, check).
    let mut log: Vec<(Duration, char, CheckId)> = Vec::new();
    let step = Duration::from_millis(100);
    let mut t = Duration::ZERO;
    let wall = |t: Duration| wall0 + chrono::Duration::from_std(t).expect("small");
    let advance = |sa: &mut Schedule,
                   sb: &mut Schedule,
                   t: &mut Duration,
                   until: Duration,
                   log: &mut Vec<(Duration, char, CheckId)>| {
        while *t < until {
            *t += step;
            for e in sa.due(origin + *t, wall(*t)) {
                log.push((*t, 'a', e.check_id));
            }
            for e in sb.due(origin + *t, wall(*t)) {
                log.push((*t, 'b', e.check_id));
            }
        }
    };
    advance(&mut sa, &mut sb, &mut t, Duration::from_secs(300), &mut log);
    let mut by_check: HashMap<CheckId, Vec<(Duration, char)>> = HashMap::new();
    for (t, n, id) in &log {
        by_check.entry(*id).or_default().push((*t, *n));
    }
    assert_eq!(by_check.len(), 300);
    for (id, runs) in &by_check {
        assert_eq!(runs.len(), 5, "{id}: {runs:?}");
        assert!(
            runs.iter().all(|(_, n)| *n == runs[0].1),
            "one node per check"
        );
        for w in runs.windows(2) {
            assert_eq!(w[1].0 - w[0].0, Duration::from_secs(60));
        }
    }

    // a's session is killed at 300 s: a's watch goes empty, b takes all.
    c.kill(&a).await;
    eventually("a drops every partition", || {
        let empty = a.owned().is_empty();
        async move { empty }
    })
    .await;
    let now = origin + t;
    sa.set_owned_partitions(&a.watch().borrow(), now);
    eventually("b owns every partition", || async {
        b.acquire().await.ok();
        b.owned().len() == P as usize
    })
    .await;
    // b resumes a's checks from their last runs (what the store holds).
    let mut last: HashMap<CheckId, Duration> = HashMap::new();
    for (t, _, id) in &log {
        last.insert(*id, *t);
    }
    let takeover = t + Duration::from_secs(3);
    advance(&mut sa, &mut sb, &mut t, takeover, &mut log);
    for (id, at) in &last {
        sb.resume(*id, wall(*at), origin + takeover, wall(takeover));
    }
    sb.set_owned_partitions(&b.watch().borrow(), origin + takeover);
    let mark = log.len();
    advance(&mut sa, &mut sb, &mut t, Duration::from_secs(600), &mut log);
    assert!(log[mark..].iter().all(|(_, n, _)| *n == 'b'));
    let mut by_check: HashMap<CheckId, Vec<Duration>> = HashMap::new();
    for (t, _, id) in &log {
        by_check.entry(*id).or_default().push(*t);
    }
    for (id, runs) in &by_check {
        for w in runs.windows(2) {
            let gap = w[1] - w[0];
            // The interval, or once a bit more for a check that fell due
            // while nobody owned it (run within the catch-up window).
            assert!(
                gap == Duration::from_secs(60)
                    || (gap > Duration::from_secs(60) && gap <= Duration::from_secs(60 + 3 + 10)),
                "{id}: {runs:?}"
            );
        }
        assert!(runs.len() >= 9, "{id}: {runs:?}");
    }
    b.release().await.expect("release");
}
