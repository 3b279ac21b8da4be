//! The `/ws` websocket: subscriptions by check and by group (with
//! descendants), versions never going backwards, bounded memory for a client
//! that stops reading.

mod common;

use bergamot_core::model::CheckId;
use bergamot_core::queue::{CheckUpdate, Update};
use bergamot_core::state::initial_state;
use common::setup::{daemon, Daemon};
use common::{basic, post};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket client: the server sends every frame as a JSON array of
/// messages; `next_json` hands them out one by one.
struct Ws {
    stream: Stream,
    pending: VecDeque<Value>,
    /// Frames received (each checked to be a non-empty JSON array).
    frames: usize,
}

impl Ws {
    /// Sends one JSON message.
    async fn send_json(&mut self, m: Value) {
        self.stream
            .send(Message::Text(m.to_string()))
            .await
            .expect("send");
    }

    /// The next frame's messages.
    async fn next_frame(&mut self) -> Vec<Value> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("a message within 10 s")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("json");
                let Value::Array(items) = v else {
                    panic!("a frame that is not a JSON array: {t}");
                };
                assert!(!items.is_empty(), "an empty frame");
                self.frames += 1;
                return items;
            }
        }
    }
}

async fn connect(d: &Daemon, auth: Option<&str>) -> Ws {
    let mut req = format!("ws://{}/ws", d.addr)
        .into_client_request()
        .expect("request");
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    Ws {
        stream: tokio_tungstenite::connect_async(req)
            .await
            .expect("connect")
            .0,
        pending: VecDeque::new(),
        frames: 0,
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        if let Some(v) = ws.pending.pop_front() {
            return v;
        }
        let items = ws.next_frame().await;
        ws.pending.extend(items);
    }
}

async fn subscribe(ws: &mut Ws, sub: Value) {
    ws.send_json(json!({ "subscribe": sub })).await;
    let reply = next_json(ws).await;
    assert!(reply.get("subscribed").is_some(), "{reply}");
}

async fn submit(d: &Daemon, check: CheckId, status: &str, output: &str) {
    let r = post(
        d.addr,
        &format!("/api/checks/{check}/results"),
        Some(&basic("op", "o")),
        &json!({ "status": status, "output": output }).to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
}

/// The next check update for `check`, skipping others.
async fn next_check_update(ws: &mut Ws, check: CheckId) -> Value {
    loop {
        let m = next_json(ws).await;
        if m["kind"] == "check" && m["check_id"] == check.to_string() {
            return m;
        }
    }
}

/// A viewer's websocket, subscribed to everything.
async fn subscribed_to_all(d: &Daemon) -> Ws {
    let mut ws = connect(d, Some(&basic("viewer", "v"))).await;
    subscribe(&mut ws, json!({ "all": true })).await;
    ws
}

/// A check update of `check` at `version` with `output`, as the processor
/// of some web node would publish it.
fn check_update(check_id: CheckId, version: u64, output: &str) -> Update {
    let mut state = initial_state(&Default::default());
    state.version = version;
    state.output = output.into();
    Update::Check(CheckUpdate {
        check_id,
        state,
        events: vec![],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_credentials() {
    let d = daemon().await;
    let req = format!("ws://{}/ws", d.addr)
        .into_client_request()
        .expect("request");
    let err = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("401");
    assert!(err.to_string().contains("401"), "{err}");
    let req = format!("ws://{}/ws?token={}", d.addr, d.token)
        .into_client_request()
        .expect("request");
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_subscriber_gets_the_update_after_a_result() {
    let d = daemon().await;
    let mut ws = connect(&d, Some(&basic("viewer", "v"))).await;
    subscribe(&mut ws, json!({ "checks": [d.trap().to_string()] })).await;
    submit(&d, d.trap(), "WARNING", "hot").await;
    let u = next_check_update(&mut ws, d.trap()).await;
    assert_eq!(u["state"]["status"], "WARNING");
    assert_eq!(u["state"]["output"], "hot");
    assert!(u["state"]["version"].as_u64().expect("version") >= 1);
    assert!(u["seq"].as_u64().is_some());
    // Bad subscriptions are answered with an error naming the field.
    ws.send_json(json!({"subscribe": {"checks": ["nope"]}}))
        .await;
    // Updates already on their way (the alert that follows the check update)
    // may arrive first: skip them until the error reply.
    let e = loop {
        let m = next_json(&mut ws).await;
        if m.get("error").is_some() {
            break m;
        }
        assert!(
            m.get("kind").is_some(),
            "neither an update nor an error: {m}"
        );
    };
    assert_eq!(e["field"], "subscribe.checks", "{e}");
    // Ping is answered.
    ws.send_json(json!({"ping": 7})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m.get("pong").is_some() {
            assert_eq!(m["pong"], 7);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn group_subscription_covers_descendant_groups_only() {
    let d = daemon().await;
    let mut ws = connect(&d, Some(&basic("viewer", "v"))).await;
    // "top" contains "middle" contains "leaf", which holds host "app".
    subscribe(&mut ws, json!({ "groups": ["top"] })).await;
    // A check outside "top" first, then one inside: only the second arrives.
    submit(&d, d.other(), "CRITICAL", "outside").await;
    // Applied (and so dispatched to the hub) before the second is sent.
    let other = format!("/api/checks/{}", d.other());
    bergamot_testkit::wait_until(
        "the outside result applied",
        Duration::from_secs(10),
        || async {
            let r = common::get(d.addr, &other, Some(&basic("viewer", "v"))).await;
            r.json()["state"]["output"] == "outside"
        },
    )
    .await;
    submit(&d, d.trap(), "CRITICAL", "inside").await;
    let mut saw_group = false;
    loop {
        let m = next_json(&mut ws).await;
        assert_ne!(
            m["check_id"],
            d.other().to_string(),
            "got an update outside the subscription: {m}"
        );
        if m["kind"] == "group" {
            assert_ne!(m["group_id"], d.group("elsewhere").to_string(), "{m}");
            saw_group = true;
        }
        if m["kind"] == "check" {
            assert_eq!(m["check_id"], d.trap().to_string());
            assert_eq!(m["state"]["output"], "inside");
            break;
        }
    }
    // The leaf's aggregate follows (published after the check update).
    while !saw_group {
        let m = next_json(&mut ws).await;
        saw_group = m["kind"] == "group";
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_now_over_the_websocket_needs_an_operator() {
    let d = daemon().await;
    let mut ws = connect(&d, Some(&basic("viewer", "v"))).await;
    ws.send_json(json!({"execute_now": d.dummy().to_string()}))
        .await;
    let m = next_json(&mut ws).await;
    assert!(
        m["error"].as_str().is_some_and(|e| e.contains("operator")),
        "{m}"
    );
    let mut ws = connect(&d, Some(&basic("op", "o"))).await;
    ws.send_json(json!({"execute_now": d.dummy().to_string()}))
        .await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["executing"], d.dummy().to_string(), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_never_go_backwards_for_a_client() {
    let d = daemon().await;
    let mut ws = subscribed_to_all(&d).await;
    let hub = d.running.web.as_ref().expect("web").hub.clone();
    let check = d.trap();
    // Deliver versions out of order straight into the hub, as a second web
    // node or a redelivery could: 1..=50 shuffled, each twice.
    let mut versions: Vec<u64> = (1..=50).chain(1..=50).collect();
    use rand::seq::SliceRandom;
    versions.shuffle(&mut rand::thread_rng());
    for &v in &versions {
        hub.dispatch(&check_update(check, v, &format!("v{v}")));
    }
    let mut last = 0;
    loop {
        let m = next_check_update(&mut ws, check).await;
        let v = m["state"]["version"].as_u64().expect("version");
        assert!(v > last, "version {v} after {last}");
        last = v;
        if v == 50 {
            break;
        }
    }
    // Every version came twice: at least 50 were dropped as stale.
    let web = d.running.web.as_ref().expect("web");
    assert!(web.metrics.ws_stale_skipped.load(Ordering::Relaxed) >= 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_has_a_bounded_outbox() {
    let d = daemon().await;
    let web = d.running.web.as_ref().expect("web").clone();
    let ws = subscribed_to_all(&d).await;
    // From here the client never reads. Push far more than socket buffers
    // hold: 20,000 updates of 4 KiB over 3 checks (80 MB).
    let checks = [d.trap(), d.dummy(), d.other()];
    let big = "x".repeat(4096);
    for i in 0..20_000u64 {
        let check_id = checks[(i % 3) as usize];
        web.hub.dispatch(&check_update(check_id, i + 1, &big));
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let m = &web.metrics;
    bergamot_testkit::wait_until(
        "updates coalesced for the stalled client",
        Duration::from_secs(10),
        || std::future::ready(m.ws_coalesced.load(Ordering::Relaxed) > 0),
    )
    .await;
    let coalesced = m.ws_coalesced.load(Ordering::Relaxed);
    let sent = m.ws_messages_sent.load(Ordering::Relaxed);
    assert!(coalesced > 0, "nothing was coalesced (sent {sent})");
    // At most one pending update per object, however many were pushed.
    let pending = web.hub.pending_per_client();
    assert_eq!(pending.len(), 1);
    assert!(pending[0] <= checks.len(), "pending {pending:?}");
    assert!(m.ws_pending_max.load(Ordering::Relaxed) <= checks.len() as u64 + 1);
    assert!(
        sent < 20_000,
        "the socket took everything ({sent}); the test proves nothing"
    );
    // The metrics expose it.
    let text = common::get(d.addr, "/metrics", None).await.body;
    assert!(
        text.contains("bergamot_websocket_coalesced_total"),
        "{text}"
    );
    drop(ws);
}

/// Updates that pile up while a client's writer is busy go out together: a
/// burst reaches the client as one frame holding only the latest version of
/// each check, in the order the checks first became pending.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_reaches_the_client_as_one_coalesced_frame() {
    let d = daemon().await;
    let web = d.running.web.as_ref().expect("web").clone();
    let mut ws = subscribed_to_all(&d).await;
    let frames_before = web.metrics.ws_frames_sent.load(Ordering::Relaxed);
    let checks = [d.trap(), d.dummy(), d.other()];
    // On this single-threaded runtime no writer runs until the test awaits,
    // so the whole burst is pending when the client's writer wakes.
    for v in 1..=300u64 {
        for check_id in checks {
            web.hub
                .dispatch(&check_update(check_id, v, &format!("v{v}")));
        }
    }
    let items = ws.next_frame().await;
    let updates: Vec<&Value> = items.iter().filter(|m| m["kind"] == "check").collect();
    let ids: Vec<String> = updates
        .iter()
        .map(|m| m["check_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let want: Vec<String> = checks.iter().map(|c| c.to_string()).collect();
    assert_eq!(ids, want, "{items:?}");
    for u in updates {
        assert_eq!(u["state"]["version"], 300, "{u}");
        assert_eq!(u["state"]["output"], "v300", "{u}");
    }
    let m = &web.metrics;
    assert_eq!(m.ws_frames_sent.load(Ordering::Relaxed), frames_before + 1);
    assert!(m.ws_coalesced.load(Ordering::Relaxed) >= 897);
    let text = common::get(d.addr, "/metrics", None).await.body;
    assert!(
        text.contains("bergamot_websocket_frames_sent_total"),
        "{text}"
    );
}
