//! The web node's HTTP server: hyper connections served one by one from an
//! accept loop, so that every connection is bounded.
//!
//! - A connection must send a complete request head within
//!   `header_read_timeout` (also between keep-alive requests), else it is
//!   closed; a request must be read and answered within `request_timeout`,
//!   else 408. Upgraded websockets are not bound by either (they have their
//!   own ping rules, see [`super::ws`]).
//! - At most `max_connections` are open in total and
//!   `max_connections_per_address` from one IP address: a connection over
//!   either cap is closed at once on accept, so a flood from one address
//!   holds at most its share of descriptors and others are still served.
//! - Every request carries the client's address ([`Peer`]) for login
//!   throttling and the log.

use super::WebContext;
use hyper014::service::Service as _;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(pub SocketAddr);

/// Open connections per address; an entry leaves with its last connection.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address until dropped.
struct AddressSlot {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(map: &Arc<PerAddress>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut m = map.0.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Serves the web node on `addr` until `shutdown` resolves; returns the bound
/// address (port 0 picks a free one) and the server future to spawn. After
/// shutdown, open connections finish their current request (at most
/// `request_timeout` more).
pub(crate) fn serve(
    ctx: Arc<WebContext>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> bergamot_core::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let cannot = |e| bergamot_core::Error::backend(format!("cannot listen on {addr}"), e);
    let std_listener = std::net::TcpListener::bind(addr).map_err(cannot)?;
    std_listener.set_nonblocking(true).map_err(cannot)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(cannot)?;
    let bound = listener.local_addr().map_err(cannot)?;
    let limits = ctx.auth.config().limits.clone();
    let filter = super::routes(ctx);
    let service = warp::service(filter);
    let total = limits.max_connections.max(1);
    let fut = async move {
        let permits = Arc::new(Semaphore::new(total));
        let per_address = Arc::new(PerAddress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut http = hyper014::server::conn::Http::new();
        http.http1_only(true)
            .http1_header_read_timeout(limits.header_read_timeout);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "web node: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "connection refused: max_connections reached");
                continue;
            };
            let Some(slot) =
                AddressSlot::take(&per_address, peer.ip(), limits.max_connections_per_address)
            else {
                tracing::debug!(%peer, "connection refused: max_connections_per_address reached");
                continue;
            };
            stream.set_nodelay(true).ok();
            let svc = service.clone();
            let request_timeout = limits.request_timeout;
            let handler = hyper014::service::service_fn(move |mut req| {
                req.extensions_mut().insert(Peer(peer));
                let mut svc = svc.clone();
                async move {
                    match tokio::time::timeout(request_timeout, svc.call(req)).await {
                        Ok(r) => r,
                        Err(_) => Ok::<_, Infallible>(timed_out()),
                    }
                }
            });
            let conn = http.serve_connection(stream, handler).with_upgrades();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _slot = slot;
                tokio::pin!(conn);
                let mut stopping = false;
                loop {
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "connection ended");
                            }
                            break;
                        }
                        changed = stop.changed(), if !stopping => {
                            stopping = true;
                            if changed.is_ok() {
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }
            });
        }
        drop(listener);
        stop_tx.send(true).ok();
        // Wait for the open connections (bounded: a stuck one is dropped).
        let wait = limits.request_timeout + limits.header_read_timeout;
        let all = u32::try_from(total).unwrap_or(u32::MAX);
        tokio::time::timeout(wait, permits.acquire_many(all))
            .await
            .ok();
    };
    Ok((bound, fut))
}

fn timed_out() -> hyper014::Response<hyper014::Body> {
    let mut r = super::ApiError::new(
        warp::http::StatusCode::REQUEST_TIMEOUT,
        "request not completed within request_timeout",
        None,
    )
    .into_response();
    r.headers_mut().insert(
        warp::http::header::CONNECTION,
        warp::http::HeaderValue::from_static("close"),
    );
    super::headers::secure(r)
}
