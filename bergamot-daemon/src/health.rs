//! Node health: which roles of this process run, which scheduler and worker
//! nodes were seen recently (from their heartbeats on the update fan-out),
//! and the `/healthz` + `/metrics` listener of nodes without a web role
//! (`--metrics-listen`).
//!
//! `/healthz` answers JSON `{"status", "roles", "peers", "problems"}`:
//! `status` is `ok`, `degraded` (this node's roles run, but a web node has
//! seen no scheduler or no worker for [`PEER_STALE_AFTER`]; HTTP 200 so a
//! load balancer keeps the web node) or `failed` (a role of this node
//! failed or ended; HTTP 503).

use crate::web::metrics::Metrics;
use bergamot_core::queue::{Heartbeat, Queue, Update};
use chrono::Utc;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warp::Filter;

/// How often schedulers and workers send a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A peer role not heard from for this long is reported missing.
pub const PEER_STALE_AFTER: Duration = Duration::from_secs(20);

/// What this node knows about its own roles and the peers it heard from.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    roles: Mutex<BTreeMap<&'static str, String>>,
    watch_peers: Mutex<bool>,
    seen: Mutex<BTreeMap<String, Instant>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            roles: Mutex::new(BTreeMap::new()),
            watch_peers: Mutex::new(false),
            seen: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Health {
    /// Records the state of one of this node's roles (`running`, `failed:
    /// ...`, `ended`, `stopped`).
    pub fn set_role(&self, role: &'static str, state: impl Into<String>) {
        self.roles.lock().insert(role, state.into());
    }

    /// Reports missing schedulers and workers on `/healthz` (web nodes).
    pub fn watch_peers(&self) {
        *self.watch_peers.lock() = true;
    }

    /// Records a heartbeat.
    pub fn saw(&self, heartbeat: &Heartbeat) {
        self.seen
            .lock()
            .insert(heartbeat.role.clone(), Instant::now());
    }

    /// How long ago a peer of `role` was last heard from (`None`: never).
    pub fn last_seen(&self, role: &str) -> Option<Duration> {
        self.seen.lock().get(role).map(Instant::elapsed)
    }

    /// The `/healthz` body and whether this node is healthy (not failed).
    pub fn report(&self) -> (serde_json::Value, bool) {
        let roles = self.roles.lock().clone();
        let failed = roles.values().any(|s| s != "running");
        let mut problems: Vec<String> = roles
            .iter()
            .filter(|(_, s)| s.as_str() != "running")
            .map(|(r, s)| format!("role {r}: {s}"))
            .collect();
        let mut peers = serde_json::Map::new();
        if *self.watch_peers.lock() {
            for role in ["scheduler", "worker"] {
                let ago = self.last_seen(role);
                peers.insert(
                    role.to_string(),
                    json!({ "last_seen_secs_ago": ago.map(|d| d.as_secs_f64()) }),
                );
                let missing = match ago {
                    Some(d) => d > PEER_STALE_AFTER,
                    // Grace after start: heartbeats come every few seconds.
                    None => self.started.elapsed() > PEER_STALE_AFTER,
                };
                if missing {
                    problems.push(match ago {
                        Some(d) => format!("no {role} seen for {} s", d.as_secs()),
                        None => format!("no {role} seen since this node started"),
                    });
                }
            }
        }
        let status = if failed {
            "failed"
        } else if problems.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        let body = json!({
            "status": status,
            "roles": roles,
            "peers": peers,
            "problems": problems,
        });
        (body, !failed)
    }

    /// The `/healthz` response.
    pub fn reply(&self) -> warp::reply::Response {
        use warp::Reply;
        let (body, healthy) = self.report();
        let status = if healthy {
            warp::http::StatusCode::OK
        } else {
            warp::http::StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    }

    /// Renders the peer gauges in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let seen = self.seen.lock().clone();
        if seen.is_empty() {
            return;
        }
        let name = "bergamot_peer_last_seen_seconds";
        writeln!(
            out,
            "# HELP {name} Seconds since a heartbeat of a node of this role was received."
        )
        .ok();
        writeln!(out, "# TYPE {name} gauge").ok();
        for (role, at) in seen {
            writeln!(
                out,
                "{name}{{role=\"{role}\"}} {}",
                at.elapsed().as_secs_f64()
            )
            .ok();
        }
    }
}

/// Sends a heartbeat of `role` every [`HEARTBEAT_EVERY`] until `stop`
/// resolves. A failed send is logged; the next one is tried anyway.
pub async fn send_heartbeats(
    queue: Arc<dyn Queue>,
    role: &'static str,
    stop: impl Future<Output = ()> + Send,
) {
    let node = format!("pid {}", std::process::id());
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let hb = Heartbeat { role: role.to_string(), node: node.clone(), at: Utc::now() };
                if let Err(e) = queue.publish_update(Update::Heartbeat(hb)).await {
                    tracing::warn!(role, error = %e, "cannot send heartbeat");
                }
            }
        }
    }
}

/// `/healthz` and `/metrics` alone, for nodes without a web role.
pub fn routes(
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let m = metrics.clone();
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(move || m.health.reply());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .map(move || metrics_reply(&metrics));
    healthz.or(metrics).unify()
}

/// The `/metrics` response.
pub fn metrics_reply(metrics: &Metrics) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_header(
        metrics.render(),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

/// Serves [`routes`] on `addr` until `shutdown`; returns the bound address
/// and the server future.
pub fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> bergamot_core::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    warp::serve(routes(metrics))
        .try_bind_with_graceful_shutdown(addr, shutdown)
        .map_err(|e| bergamot_core::Error::backend(format!("cannot listen on {addr}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_role_fails_and_a_missing_peer_degrades() {
        let h = Health::default();
        h.set_role("web", "running");
        assert_eq!(h.report().0["status"], "ok");
        h.watch_peers();
        h.saw(&Heartbeat {
            role: "scheduler".into(),
            node: "n".into(),
            at: Utc::now(),
        });
        // Seen just now: fine; the worker has its start-up grace.
        assert_eq!(h.report().0["status"], "ok", "{:?}", h.report());
        h.set_role("websocket hub", "ended before shutdown");
        let (body, healthy) = h.report();
        assert!(!healthy);
        assert_eq!(body["status"], "failed");
    }
}
