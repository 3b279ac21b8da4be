//! Fault test of freshness (issue 13.2): the roles as separate processes on
//! PostgreSQL + RabbitMQ (own schema and prefix); kill -9 the only
//! scheduler: every check turns stale (TIMEOUT, "STALE: ...") within its
//! bound and alerts, and the web node's `/healthz` says no scheduler was
//! seen. Not disruptive: it only kills a process it started itself.

mod common;

use bergamot_core::freshness::is_stale_mark;
use bergamot_core::model::{CheckId, Status};
use bergamot_core::store::Store;
use common::cluster::{service_urls, wait_for, Cluster};
use common::{free_port, get, OK_COMMAND};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CHECKS: usize = 4;

fn config(site: &str) -> String {
    let mut text = format!(
        r#"
site = "{site}"

[defaults]
every = "1s"
retry_every = "1s"
failed_after = 1
recovers_after = 1

{OK_COMMAND}
[[host]]
name = "h"
"#
    );
    for i in 0..CHECKS {
        text.push_str(&format!(
            "\n[[host.service]]\nname = \"c{i}\"\ncommand = \"ok\"\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_scheduler_turns_every_check_stale_and_alerts() {
    let Some((pg, amqp)) = service_urls("killed_scheduler_freshness") else {
        return;
    };
    let site = "fresh";
    let mut cluster = Cluster::new(&pg, &amqp, site, &config(site));
    // Bound: 2 x 1 s + 1 s; looked for every 0.2 s.
    cluster.start_with(
        "processor",
        "processor",
        &["--stale-margin-secs", "1", "--stale-scan-secs", "0.2"],
    );
    cluster.start_worker("worker").await;
    let port = free_port();
    let web: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    cluster.start_with("web", "web", &["--listen", &web.to_string()]);
    let scheduler = cluster.start("scheduler", "scheduler");
    let store = cluster.store().await;
    let checks: Vec<CheckId> = (0..CHECKS)
        .map(|i| CheckId::service(site, "h", &format!("c{i}")))
        .collect();

    // Running: every check OK, the web node sees a scheduler and a worker.
    wait_for("every check OK", Duration::from_secs(60), || {
        let (store, checks) = (&store, &checks);
        async move {
            for c in checks {
                if store.state(*c).await.ok()?.status != Status::Ok {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    wait_for(
        "/healthz ok with peers seen",
        Duration::from_secs(30),
        || async move {
            let v = common::healthz(web).await?;
            (v["status"] == "ok" && v["peers"]["scheduler"]["last_seen_secs_ago"].is_number())
                .then_some(())
        },
    )
    .await;
    cluster.assert_all_alive();

    cluster.nodes[scheduler].kill9();
    let killed = Instant::now();
    // Every check: stale, hard not-ok, an alert open. The bound is 3 s; the
    // wait allows for the pipeline (a bound of the test, not a timing claim).
    wait_for(
        "every check stale and alerting",
        Duration::from_secs(60),
        || {
            let (store, checks) = (&store, &checks);
            async move {
                for c in checks {
                    let s = store.state(*c).await.ok()?;
                    if !(is_stale_mark(s.status, &s.output) && s.hard && s.current_alert.is_some())
                    {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    println!(
        "all {CHECKS} checks stale and alerting {:.1} s after the scheduler died (bound 3 s)",
        killed.elapsed().as_secs_f64()
    );
    for c in &checks {
        let alerts = store.alerts(Some(*c), 10).await.expect("alerts");
        assert!(!alerts.is_empty(), "{c}: an alert record");
    }
    // The web node says it: no scheduler seen (after its 20 s grace).
    let v = wait_for(
        "/healthz names the missing scheduler",
        Duration::from_secs(60),
        || async move {
            let v = common::healthz(web).await?;
            let says = v["problems"].as_array()?.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| p.starts_with("no scheduler seen"))
            });
            says.then_some(v)
        },
    )
    .await;
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(get(web, "/healthz", None).await.status, 200);
    cluster.assert_all_alive_except(&["scheduler"]);
}
