//! `GET /api/checks` search at 100,000 checks, on the in-memory store and on
//! PostgreSQL: every filter selects exactly the checks it should, walking
//! the cursor visits every match once, and the time of each kind of request
//! is printed (for docs/api.md; no timing is asserted).

use bergamot_core::model::{Check, CheckId, CheckResult, Group, GroupId, Model, Policy, Status};
use bergamot_core::queue::InMemoryQueue;
use bergamot_core::state::Ack;
use bergamot_core::store::{Downtime, InMemoryStore, Store};
use bergamot_daemon::web::auth::AuthConfig;
use bergamot_daemon::web::metrics::Metrics;
use bergamot_daemon::web::{routes, WebContext};
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SITE: &str = "search";
const HOSTS: usize = 1_000;
/// Services per host, besides the host check: 1,000 × (1 + 99) = 100,000.
const SERVICES: usize = 99;

fn check(host: &str, service: Option<&str>, group: GroupId) -> Check {
    match service {
        None => Check::host(SITE, host),
        Some(s) => Check::service(SITE, host, s),
    }
    .engine("dummy")
    .policy(Policy::builder().failed_after(1).recovers_after(1).build())
    .group(group)
    .build()
}

/// 1,000 hosts `host0000`… with services `svc00`…`svc98`, in 10 groups
/// (`rack0`…`rack9`, by host number modulo 10) under `all`.
fn model() -> Model {
    let group = |n: &str, parents: &[GroupId]| Group {
        id: GroupId::named(SITE, n),
        name: n.to_string(),
        parents: parents.to_vec(),
    };
    let all = GroupId::named(SITE, "all");
    let mut groups = vec![group("all", &[])];
    for r in 0..10 {
        groups.push(group(&format!("rack{r}"), &[all]));
    }
    let mut checks = Vec::with_capacity(HOSTS * (SERVICES + 1));
    for h in 0..HOSTS {
        let host = format!("host{h:04}");
        let g = GroupId::named(SITE, &format!("rack{}", h % 10));
        checks.push(check(&host, None, g));
        for s in 0..SERVICES {
            checks.push(check(&host, Some(&format!("svc{s:02}")), g));
        }
    }
    Model {
        site: SITE.to_string(),
        checks,
        groups,
        locations: Vec::new(),
    }
}

/// `svc07` of every host is CRITICAL (1,000), `svc08` WARNING (1,000); the
/// first 100 CRITICAL ones are acknowledged, `svc08` of the first 50 hosts
/// is in downtime. The rest stay PENDING.
async fn fill(store: &dyn Store) {
    store.sync_config(&model()).await.expect("sync");
    let now = Utc::now();
    let results: Vec<CheckResult> = (0..HOSTS)
        .flat_map(|h| {
            let host = format!("host{h:04}");
            [
                CheckResult::new(
                    CheckId::service(SITE, &host, "svc07"),
                    Status::Critical,
                    "disk full".to_string(),
                    now,
                ),
                CheckResult::new(
                    CheckId::service(SITE, &host, "svc08"),
                    Status::Warning,
                    "load high".to_string(),
                    now,
                ),
            ]
        })
        .collect();
    for r in store.apply_results(&results, now).await.expect("apply") {
        r.expect("result applied");
    }
    for h in 0..100 {
        let id = CheckId::service(SITE, &format!("host{h:04}"), "svc07");
        store
            .acknowledge(id, Ack::Normal, "op", "on it", now)
            .await
            .expect("ack");
    }
    for h in 0..50 {
        let id = CheckId::service(SITE, &format!("host{h:04}"), "svc08");
        store
            .schedule_downtime(
                Downtime {
                    id: uuid::Uuid::new_v4(),
                    check_id: id,
                    starts_at: now - ChronoDuration::seconds(1),
                    ends_at: now + ChronoDuration::hours(1),
                    author: "op".into(),
                    comment: "maintenance".into(),
                },
                now,
            )
            .await
            .expect("downtime");
    }
}

struct Api {
    filter: warp::filters::BoxedFilter<(warp::reply::Response,)>,
}

impl Api {
    async fn new(store: Arc<dyn Store>) -> Api {
        let ctx = WebContext::new(
            store,
            Arc::new(InMemoryQueue::new()),
            AuthConfig {
                anonymous_read: true,
                users: Vec::new(),
                tokens: Vec::new(),
                ..AuthConfig::default()
            },
            Arc::new(Metrics::default()),
        )
        .await
        .expect("web context");
        Api {
            filter: routes(ctx),
        }
    }

    /// GET `path`; the JSON body and how long the request took.
    async fn get(&self, path: &str) -> (u16, Value, Duration) {
        let t = Instant::now();
        let r = warp::test::request()
            .method("GET")
            .path(path)
            .reply(&self.filter)
            .await;
        let took = t.elapsed();
        let body: Value = serde_json::from_slice(r.body()).expect("JSON body");
        (r.status().as_u16(), body, took)
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

/// Checks every filter and the cursor walk; prints the timings.
async fn search_at_100k(label: &str, store: Arc<dyn Store>) {
    let t = Instant::now();
    fill(store.as_ref()).await;
    eprintln!(
        "{label}: 100,000 checks synced and filled in {:?}",
        t.elapsed()
    );
    let api = Api::new(store).await;
    let mut timings = Vec::new();
    let mut timed = |what: &str, took: Duration| timings.push(format!("{what} {took:?}"));

    let (status, all, took) = api.get("/api/checks?limit=100").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 100_000);
    assert_eq!(ids(&all).len(), 100);
    assert_eq!(
        all["items"][0]["display_name"], "host0000",
        "by display name"
    );
    timed("first page of all", took);

    // Filters (`q` is case-insensitive: the 100 hosts host09xx match HOST09).
    for (query, total) in [
        ("status=CRITICAL&limit=50", 1_000),
        ("status=critical,warning&q=HOST09", 200),
        ("q=svc42", 1_000),
        ("host=host0123", 100),
        ("group=rack3&status=WARNING", 100),
        ("downtime=true", 50),
    ] {
        let (_, page, took) = api.get(&format!("/api/checks?{query}")).await;
        assert_eq!(page["total"], total, "{query}: {}", page["total"]);
        timed(query, took);
    }
    let (_, acked, took) = api.get("/api/checks?acknowledged=true").await;
    assert_eq!(acked["total"], 100);
    assert_eq!(acked["items"][0]["state"]["ack"]["author"], "op");
    timed("acknowledged=true", took);
    let (_, unacked, _) = api
        .get("/api/checks?status=CRITICAL&acknowledged=false")
        .await;
    assert_eq!(unacked["total"], 900);
    for (path, field) in [
        ("/api/checks?acknowledged=maybe", "acknowledged"),
        ("/api/checks?downtime=2", "downtime"),
        ("/api/checks?cursor=%21%21", "cursor"),
        ("/api/checks?status=NOPE", "status"),
    ] {
        let (status, body, _) = api.get(path).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{path}"
        );
    }

    // Walk every page of the 1,000 CRITICAL and WARNING checks of 10 racks:
    // each once, in order, and the last page says there is no more.
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut slowest = Duration::ZERO;
    loop {
        let path = match &cursor {
            None => "/api/checks?status=WARNING,CRITICAL&limit=150".to_string(),
            Some(c) => format!("/api/checks?status=WARNING,CRITICAL&limit=150&cursor={c}"),
        };
        let (status, page, took) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        slowest = slowest.max(took);
        pages += 1;
        assert_eq!(page["total"], 2_000, "total stays the count of all matches");
        for i in page["items"].as_array().expect("items") {
            assert!(seen.insert(i["id"].to_string()), "{} twice", i["id"]);
            order.push(i["display_name"].as_str().expect("name").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 100, "the cursor does not advance");
    }
    assert_eq!((seen.len(), pages), (2_000, 14));
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "pages in order");
    timed("slowest of 14 cursor pages of 150", slowest);

    // A deep page of everything: the last of 100,000.
    let (_, last, took) = api.get("/api/checks?limit=1&offset=99999").await;
    assert_eq!(last["items"][0]["display_name"], "host0999/svc98");
    assert!(last["next_cursor"].is_null());
    timed("offset=99999", took);
    eprintln!("{label} search, 100,000 checks: {}", timings.join(", "));
}

#[tokio::test(flavor = "multi_thread")]
async fn search_100000_checks_in_memory() {
    search_at_100k("in-memory", Arc::new(InMemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn search_100000_checks_postgres() {
    let Some(url) = bergamot_testkit::require_env("BERGAMOT_TEST_POSTGRES_URL", "search") else {
        return;
    };
    let schema = format!("t_search_{:016x}", rand::random::<u64>());
    let store = bergamot_store::PostgresStore::connect(
        bergamot_store::PostgresConfig::new(url.clone())
            .with_schema(schema.clone())
            .with_pool_size(4),
    )
    .await
    .expect("connect");
    search_at_100k("PostgreSQL", Arc::new(store)).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to drop the schema");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the test schema");
}
