//! Authentication first, by construction: every `/api` request passes this
//! filter before any route or handler runs. Reads (`GET`, `HEAD`) need the
//! viewer role (or anonymous read), everything else at least operator;
//! handlers still check a stronger role they need (e.g. admin for reload),
//! but none can look anything up for a caller that is not authenticated
//! (an anonymous caller learns nothing, not even which check ids exist).

use super::auth::{Credentials, Role};
use super::server::Peer;
use super::{ApiError, WebContext};
use std::collections::HashMap;
use std::sync::Arc;
use warp::http::Method;
use warp::Filter;

/// Why the gate refused: rendered as the [`ApiError`] it carries.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) ApiError);

impl warp::reject::Reject for Refused {}

/// The role a method needs at least.
fn needed(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else {
        Role::Operator
    }
}

/// Passes `/api` requests whose credentials are good enough for their method
/// (and every other path untouched); rejects with [`Refused`] otherwise.
pub(crate) fn authenticated(
    ctx: Arc<WebContext>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and(warp::method())
        .and(warp::header::optional::<String>("authorization"))
        .and(
            // A malformed query is the route's to refuse (400 `query`).
            warp::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(warp::ext::optional::<Peer>())
        .and_then(
            move |path: warp::path::FullPath,
                  method: Method,
                  authorization: Option<String>,
                  query: HashMap<String, String>,
                  peer: Option<Peer>| {
                let ctx = ctx.clone();
                async move {
                    let p = path.as_str();
                    if p != "/api" && !p.starts_with("/api/") {
                        return Ok(());
                    }
                    // The demo's webhook receiver only counts what it gets
                    // and stores nothing: the daemon's own webhook channel
                    // posts there without credentials.
                    if p == "/api/notifications/echo" && method == Method::POST {
                        return Ok(());
                    }
                    let principal = ctx
                        .auth
                        .check(Credentials {
                            authorization: authorization.as_deref(),
                            token: query.get("token").map(String::as_str),
                            ticket: None,
                            peer: peer.map(|p| p.0.ip()),
                        })
                        .await
                        .and_then(|pr| pr.require(needed(&method)).map(|()| pr));
                    match principal {
                        Ok(_) => Ok(()),
                        Err(e) => Err(warp::reject::custom(Refused(e))),
                    }
                }
            },
        )
        .untuple_one()
}
