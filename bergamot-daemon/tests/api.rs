//! The REST API, in process over real HTTP: every endpoint, auth (401/403),
//! validation (400 naming the field), unknown ids (404).

mod common;

use common::setup::daemon;
use common::{basic, delete, get, post};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET /api/checks/{id}` once the check's state satisfies `f`.
async fn wait_state(addr: SocketAddr, auth: &str, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let (path, f) = (format!("/api/checks/{id}"), &f);
    bergamot_testkit::wait_for(
        &format!("the state of {id} to match"),
        Duration::from_secs(10),
        || {
            let path = &path;
            async move {
                let r = get(addr, path, Some(auth)).await;
                assert_eq!(r.status, 200, "{}", r.body);
                let v = r.json();
                f(&v["state"]).then_some(v)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_filters_and_errors() {
    let d = daemon().await;
    let a = d.addr;
    let viewer = basic("viewer", "v");

    // No credentials: 401 JSON; wrong password: 401.
    let r = get(a, "/api/state", None).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    assert_eq!(
        get(a, "/api/state", Some(&basic("viewer", "nope")))
            .await
            .status,
        401
    );

    let r = get(a, "/api/state", Some(&viewer)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["checks"].as_array().map(Vec::len), Some(5));
    assert_eq!(s["groups"].as_array().map(Vec::len), Some(4));
    assert_eq!(s["locations"].as_array().map(Vec::len), Some(1));

    // Filter by group (with descendants), by name, by status; paginate.
    let r = get(a, "/api/checks?group=top", Some(&viewer)).await.json();
    assert_eq!(r["total"], 3, "{r}");
    let r = get(
        a,
        &format!("/api/checks?group={}", d.group("elsewhere")),
        Some(&viewer),
    )
    .await
    .json();
    assert_eq!(r["total"], 2, "{r}");
    let r = get(a, "/api/checks?name=cpu", Some(&viewer)).await.json();
    assert_eq!(r["total"], 1);
    assert_eq!(r["items"][0]["id"], d.dummy().to_string());
    let r = get(
        a,
        "/api/checks?status=PENDING&limit=2&offset=1",
        Some(&viewer),
    )
    .await
    .json();
    assert_eq!(r["total"], 5);
    assert_eq!(r["items"].as_array().map(Vec::len), Some(2));
    let r = get(a, "/api/checks?status=BOGUS", Some(&viewer)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "status");
    let r = get(a, "/api/checks?limit=x", Some(&viewer)).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, Value::from("limit"))
    );
    let r = get(a, "/api/checks?group=nope", Some(&viewer)).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (404, Value::from("group"))
    );

    // One check; unknown and malformed ids.
    let r = get(a, &format!("/api/checks/{}", d.dummy()), Some(&viewer)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["config"]["engine"], "dummy");
    assert_eq!(v["state"]["status"], "PENDING");
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/api/checks/{unknown}"),
        format!("/api/checks/{unknown}/history"),
        format!("/api/groups/{unknown}"),
    ] {
        let r = get(a, &path, Some(&viewer)).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")));
    }
    let r = get(a, "/api/checks/not-a-uuid", Some(&viewer)).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, Value::from("id"))
    );
    assert_eq!(get(a, "/api/nothing-here", Some(&viewer)).await.status, 404);

    // Groups, one group, locations, alerts, downtimes, history, whoami.
    let g = get(a, "/api/groups", Some(&viewer)).await.json();
    let top = g["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == "top"))
        .cloned();
    assert_eq!(top.expect("top")["aggregate"]["total"], 3);
    let g = get(a, "/api/groups/middle", Some(&viewer)).await.json();
    assert_eq!(g["children"][0]["name"], "leaf");
    assert_eq!(g["aggregate"]["total"], 3);
    let l = get(a, "/api/locations", Some(&viewer)).await.json();
    assert_eq!(l["locations"][0]["name"], "dc");
    assert_eq!(get(a, "/api/alerts", Some(&viewer)).await.status, 200);
    assert_eq!(get(a, "/api/downtimes", Some(&viewer)).await.status, 200);
    let h = get(
        a,
        &format!("/api/checks/{}/history", d.dummy()),
        Some(&viewer),
    )
    .await;
    assert_eq!(h.status, 200);
    assert_eq!(
        get(a, "/api/whoami", Some(&viewer)).await.json()["role"],
        "viewer"
    );
    assert_eq!(get(a, "/healthz", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_need_operator_and_valid_bodies() {
    let d = daemon().await;
    let a = d.addr;
    let viewer = basic("viewer", "v");
    let op = basic("op", "o");
    let admin = basic("admin", "a");
    let bearer = format!("Bearer {}", d.token);
    let trap = d.trap().to_string();
    let results = format!("/api/checks/{trap}/results");

    // Viewer acting: 403; nobody: 401.
    let body = r#"{"status":"CRITICAL","output":"disk on fire"}"#;
    assert_eq!(post(a, &results, Some(&viewer), body).await.status, 403);
    assert_eq!(post(a, &results, None, body).await.status, 401);
    // Bad bodies name the field.
    for (bad, field) in [
        (r#"{"status":"NOPE","output":"x"}"#, "status"),
        (r#"{"status":"OK"}"#, "output"),
        (
            r#"{"status":"OK","output":"x","executed_at":"yesterday"}"#,
            "executed_at",
        ),
        (r#"{"status":"OK","output":"x","colour":"red"}"#, "colour"),
        ("not json", "body"),
    ] {
        let r = post(a, &results, Some(&op), bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let f = r.json()["field"].as_str().unwrap_or_default().to_string();
        assert!(
            f.contains(field)
                || r.json()["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
            "{bad}: {}",
            r.body
        );
    }
    // A passive result (token auth) is applied by the processor.
    let r = post(a, &results, Some(&bearer), body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let v = wait_state(a, &op, &trap, |s| s["status"] == "CRITICAL").await;
    assert_eq!(v["state"]["output"], "disk on fire");
    let h = get(a, &format!("/api/checks/{trap}/history"), Some(&viewer))
        .await
        .json();
    assert_eq!(h["items"][0]["status"], "CRITICAL");

    // Acknowledge: comment required; normal, then removed; sticky.
    let ack = format!("/api/checks/{trap}/acknowledge");
    assert_eq!(
        post(a, &ack, Some(&viewer), r#"{"comment":"mine"}"#)
            .await
            .status,
        403
    );
    let r = post(a, &ack, Some(&op), r#"{"sticky":true}"#).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, Value::from("comment"))
    );
    let r = post(a, &ack, Some(&op), r#"{"sticky":"yes","comment":"x"}"#).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, Value::from("sticky"))
    );
    let r = post(a, &ack, Some(&op), r#"{"comment":"looking"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"]["acknowledged"], "normal");
    let r = delete(a, &ack, Some(&op)).await;
    assert_eq!(r.json()["state"]["acknowledged"], "none");
    let r = post(a, &ack, Some(&op), r#"{"comment":"mine","sticky":true}"#).await;
    assert_eq!(r.json()["state"]["acknowledged"], "sticky");
    // Acknowledging an OK check is refused (409).
    let r = post(
        a,
        &format!("/api/checks/{}/acknowledge", d.dummy()),
        Some(&op),
        r#"{"comment":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Downtime: validated, scheduled (in effect now), listed, cancelled.
    let dt = format!("/api/checks/{trap}/downtimes");
    let r = post(a, &dt, Some(&op), r#"{"comment":"maintenance"}"#).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, Value::from("ends_at"))
    );
    let r = post(
        a,
        &dt,
        Some(&op),
        r#"{"comment":"maintenance","duration_seconds":600}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let dt_id = r.json()["id"].as_str().expect("id").to_string();
    assert_eq!(r.json()["state"]["in_downtime"], true);
    let l = get(a, "/api/downtimes", Some(&viewer)).await.json();
    assert_eq!(l["items"][0]["id"], dt_id.as_str());
    assert_eq!(
        delete(a, &format!("/api/downtimes/{dt_id}"), Some(&viewer))
            .await
            .status,
        403
    );
    let r = delete(a, &format!("/api/downtimes/{dt_id}"), Some(&op)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"]["in_downtime"], false);
    let r = delete(
        a,
        &format!("/api/downtimes/{}", uuid::Uuid::new_v4()),
        Some(&op),
    )
    .await;
    assert_eq!(r.status, 404);

    // Suppress / unsuppress.
    let sup = format!("/api/checks/{trap}/suppress");
    assert_eq!(
        post(a, &sup, Some(&op), "").await.json()["state"]["suppressed"],
        true
    );
    assert_eq!(
        delete(a, &sup, Some(&op)).await.json()["state"]["suppressed"],
        false
    );

    // Execute now: a scheduled check is accepted; a trap cannot run.
    let r = post(
        a,
        &format!("/api/checks/{}/execute", d.dummy()),
        Some(&op),
        "",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = post(a, &format!("/api/checks/{trap}/execute"), Some(&op), "").await;
    assert_eq!(r.status, 400);
    let r = post(
        a,
        &format!("/api/checks/{}/execute", uuid::Uuid::new_v4()),
        Some(&op),
        "",
    )
    .await;
    assert_eq!(r.status, 404);

    // Reload: admin only.
    assert_eq!(post(a, "/api/reload", Some(&op), "").await.status, 403);
    let r = post(a, "/api/reload", Some(&admin), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["updated"], 5, "{}", r.body);
    // State survived the reload.
    let v = wait_state(a, &op, &trap, |_| true).await;
    assert_eq!(v["state"]["status"], "CRITICAL");

    // Metrics saw the API and the processor.
    let m = get(a, "/metrics", None).await.body;
    assert!(
        m.contains("bergamot_api_request_duration_seconds_count"),
        "{m}"
    );
    assert!(!m.contains("bergamot_results_processed_total 0\n"), "{m}");
}

/// Passive results: a NUL byte is refused naming the field; a result dated
/// more than the skew ahead is refused naming `executed_at`; output beyond
/// the cap is cut with a mark; `POST /api/checks/{id}/reset` unfreezes a
/// check whose last result lies ahead of every later one.
#[tokio::test(flavor = "multi_thread")]
async fn passive_results_are_checked_capped_and_checks_reset() {
    let d = daemon().await;
    let a = d.addr;
    let viewer = basic("viewer", "v");
    let op = basic("op", "o");
    let trap = d.trap().to_string();
    let results = format!("/api/checks/{trap}/results");
    for (bad, field) in [
        (r#"{"status":"OK","output":"a\u0000b"}"#, "output"),
        (
            r#"{"status":"OK","output":"a","long_output":"\u0000"}"#,
            "long_output",
        ),
        (
            r#"{"status":"OK","output":"a","perfdata":[{"label":"x\u0000","value":1,"uom":""}]}"#,
            "perfdata[0].label",
        ),
        (
            r#"{"status":"OK","output":"a","executed_at":"2999-01-01T00:00:00Z"}"#,
            "executed_at",
        ),
    ] {
        let r = post(a, &results, Some(&op), bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["field"], field, "{bad}: {}", r.body);
    }

    // Output beyond 64 KiB is cut, with a mark.
    let big = format!(
        r#"{{"status":"WARNING","output":"{}","long_output":"{}"}}"#,
        "o".repeat(100_000),
        "l".repeat(100_000)
    );
    assert_eq!(post(a, &results, Some(&op), &big).await.status, 202);
    let v = wait_state(a, &op, &trap, |s| s["status"] == "WARNING").await;
    let out = v["state"]["output"].as_str().unwrap_or_default();
    assert!(
        out.len() <= 64 * 1024 && out.ends_with(" bytes]"),
        "{}",
        out.len()
    );
    let long = v["state"]["long_output"].as_str().unwrap_or_default();
    assert!(
        long.len() <= 64 * 1024 && long.ends_with(" bytes]"),
        "{}",
        long.len()
    );

    // Ahead, but within the skew: accepted; a later result without a date
    // (now) is then stale, until an operator resets the check.
    let ahead = (chrono::Utc::now() + chrono::Duration::seconds(240)).to_rfc3339();
    let body = format!(r#"{{"status":"CRITICAL","output":"ahead","executed_at":"{ahead}"}}"#);
    assert_eq!(post(a, &results, Some(&op), &body).await.status, 202);
    wait_state(a, &op, &trap, |s| s["output"] == "ahead").await;
    let now_ok = r#"{"status":"OK","output":"stale"}"#;
    assert_eq!(post(a, &results, Some(&op), now_ok).await.status, 202);
    // One check's results are applied in order: once the next one is
    // applied, the dateless one was processed, and was stale.
    let ahead2 = (chrono::Utc::now() + chrono::Duration::seconds(250)).to_rfc3339();
    let body = format!(r#"{{"status":"CRITICAL","output":"ahead2","executed_at":"{ahead2}"}}"#);
    assert_eq!(post(a, &results, Some(&op), &body).await.status, 202);
    wait_state(a, &op, &trap, |s| s["output"] == "ahead2").await;
    let h = get(a, &format!("/api/checks/{trap}/history"), Some(&op))
        .await
        .json();
    assert!(!h.to_string().contains("\"stale\""), "{h}");
    let reset = format!("/api/checks/{trap}/reset");
    assert_eq!(post(a, &reset, Some(&viewer), "").await.status, 403);
    assert_eq!(post(a, &reset, None, "").await.status, 401);
    let r = post(a, &reset, Some(&op), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["state"]["last_check_at"],
        Value::Null,
        "{}",
        r.body
    );
    assert_eq!(
        post(a, "/api/checks/not-a-uuid/reset", Some(&op), "")
            .await
            .status,
        400
    );
    let fresh = r#"{"status":"OK","output":"after reset"}"#;
    assert_eq!(post(a, &results, Some(&op), fresh).await.status, 202);
    let v = wait_state(a, &op, &trap, |s| s["output"] == "after reset").await;
    assert_eq!(v["state"]["status"], "OK");
}

/// Execute-now reaches the schedulers as a `SchedulerControl::ExecuteNow`
/// (the scheduler owning the check sends the execute, with its TTL and its
/// merging of requests): the web node publishes no execute of its own
/// (before, it published an `ExecuteCheck` straight to the workers).
#[tokio::test]
async fn execute_now_is_a_scheduler_control() {
    use bergamot_core::config::Config;
    use bergamot_core::model::CheckId;
    use bergamot_core::queue::{InMemoryQueue, Queue, SchedulerControl};
    use bergamot_core::store::{InMemoryStore, Store};
    use bergamot_daemon::web::auth::{hash_token, AuthConfig, Role, TokenEntry};
    use bergamot_daemon::web::{metrics::Metrics, routes, WebContext};
    use futures::{FutureExt, StreamExt};
    use std::sync::Arc;

    let model = Config::from_str_named("t.toml", &common::setup::config_text())
        .expect("config")
        .model;
    let dummy = CheckId::service(common::setup::SITE, "app", "cpu");
    let check = model
        .checks
        .iter()
        .find(|c| c.id == dummy)
        .cloned()
        .expect("the dummy check");
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    store.sync_config(&model).await.expect("sync");
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    let mut executes = queue
        .consume_executes(&check.pool, std::slice::from_ref(&check.engine))
        .await
        .expect("consume executes");
    let mut control = queue.consume_control().await.expect("consume control");
    let auth = AuthConfig {
        tokens: vec![TokenEntry {
            name: "op".into(),
            token_hash: hash_token("op-token"),
            role: Role::Operator,
        }],
        ..AuthConfig::default()
    };
    let ctx = WebContext::new(
        store,
        Arc::clone(&queue),
        auth,
        Arc::new(Metrics::default()),
    )
    .await
    .expect("web context");
    let r = warp::test::request()
        .method("POST")
        .path(&format!("/api/checks/{}/execute", check.id))
        .header("authorization", "Bearer op-token")
        .reply(&routes(ctx))
        .await;
    assert_eq!(r.status(), 202, "{:?}", r.body());
    let d = tokio::time::timeout(Duration::from_secs(10), control.next())
        .await
        .expect("no control message")
        .expect("a control message")
        .expect("control");
    assert_eq!(
        d.message,
        SchedulerControl::ExecuteNow { check_id: check.id }
    );
    assert!(
        executes.next().now_or_never().is_none(),
        "the web node published an execute itself"
    );
}
