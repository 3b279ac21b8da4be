//! `/metrics` measures what its help text says, on a node without a web role
//! too (served by `metrics_listen`), and is valid Prometheus text as
//! `promtool check metrics` (Debian's `prometheus` package) reads it.

mod common;

use bergamot_core::model::CheckId;
use bergamot_core::queue::{ExecuteCheck, Queue};
use bergamot_daemon::{Backends, Options};
use common::get;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROMTOOL: &str = "promtool";

/// Whether promtool (Debian package prometheus) is there; without it the
/// test skips, unless `BERGAMOT_REQUIRE_SERVICES=1`.
fn have_promtool() -> bool {
    bergamot_testkit::require_program(PROMTOOL, &["--version"], "promtool test")
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The unlabelled samples of a text exposition, by name.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, v) = l.split_once(' ')?;
            Some((name.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

async fn metrics_of(addr: SocketAddr) -> String {
    let r = get(addr, "/metrics", None).await;
    assert_eq!(r.status, 200);
    r.body
}

/// A worker + processor node (no scheduler, no web role): the executes its
/// worker takes are counted and their lag measured from `scheduled_at`,
/// its transitions counted, and the text passes promtool.
#[tokio::test]
async fn worker_node_metrics_measure_what_they_say() {
    if !have_promtool() {
        return;
    }
    // promtool must be able to fail: a counter without `_total` is wrong.
    let (ok, _) = promtool_check("# HELP x_count A counter.\n# TYPE x_count counter\nx_count 1\n");
    assert!(!ok, "promtool accepts a badly named counter");

    let config = common::one_service_config("m");
    let check = CheckId::service("m", "h", "cpu");
    let backends = Backends::in_memory();
    let queue = backends.queue.clone();
    let options = Options {
        roles: "worker,processor".parse().expect("roles"),
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Options::default()
    };
    let (running, stop) = common::start_in_process(config.model, backends, options).await;
    let addr = running.metrics_addr.expect("metrics listener");
    assert!(running.addr.is_none());

    // Executes as a scheduler elsewhere sent them 2 s ago. The worker
    // consumes a moment after start (executes before that are unroutable
    // and come back as dead checks, which are no results): send until three
    // results were processed, then wait until every execute taken has its
    // result processed.
    let execute = || ExecuteCheck {
        id: uuid::Uuid::new_v4(),
        check_id: check,
        site: "m".into(),
        pool: "default".into(),
        engine: "dummy".into(),
        params: [("status".to_string(), serde_json::json!("OK"))].into(),
        timeout: Duration::from_secs(5),
        ttl: Duration::from_secs(60),
        scheduled_at: chrono::Utc::now() - chrono::Duration::seconds(2),
        execute_now: false,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut sending = true;
    let text = loop {
        let text = metrics_of(addr).await;
        let s = samples(&text);
        let processed = s["bergamot_results_processed_total"];
        if processed >= 3.0 {
            sending = false;
            if s["bergamot_executes_taken_total"] == processed {
                break text;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "executes taken and results processed differ:\n{text}"
        );
        if sending {
            queue.publish_execute(execute()).await.expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");
    let s = samples(&text);
    assert!(s["bergamot_executes_taken_total"] >= 3.0, "{text}");
    assert!(s["bergamot_scheduler_lag_seconds"] >= 2.0, "{text}");
    assert!(s["bergamot_scheduler_lag_max_seconds"] >= 2.0, "{text}");
    // This node has no scheduler: it dispatched nothing.
    assert_eq!(s["bergamot_scheduler_dispatched_total"], 0.0, "{text}");
    // The first result changes PENDING to OK: at least one transition.
    assert!(s["bergamot_transitions_total"] >= 1.0, "{text}");

    let h = get(addr, "/healthz", None).await;
    assert_eq!(h.status, 200, "{}", h.body);
    let v = h.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["roles"]["worker"], "running", "{v}");
    assert_eq!(v["roles"]["processor"], "running", "{v}");

    common::stop(running, stop).await;
}
