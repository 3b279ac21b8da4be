//! The web node: REST JSON API, `/ws` websocket, `/metrics`, `/healthz` and
//! the embedded web UI, all as one warp filter over `Arc<dyn Store>` and
//! `Arc<dyn Queue>`.
//!
//! [`routes`] returns the filter (tests serve it on port 0 or drive it with
//! `warp::test`); [`serve`] binds it with graceful shutdown.

mod api;
pub mod auth;
mod gate;
pub(crate) mod headers;
mod index;
pub mod metrics;
pub(crate) mod server;
pub mod ws;

pub use index::ModelIndex;

use async_trait::async_trait;
use bergamot_core::model::CheckId;
use bergamot_core::model::Model;
use bergamot_core::processor::Processor;
use bergamot_core::queue::Queue;
use bergamot_core::state::Transition;
use bergamot_core::store::{Store, SyncReport};
use metrics::Metrics;
use parking_lot::RwLock;
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Filter;

/// An API error: rendered as JSON `{ "error": ..., "field": ... }` with its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong.
    pub error: String,
    /// The request field that was wrong, if one was.
    pub field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: field.map(str::to_string),
        }
    }
    /// 400 naming the bad field.
    pub fn bad_request(field: &str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, Some(field))
    }
    /// 401.
    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error, None)
    }
    /// 403.
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error, None)
    }
    /// 404.
    pub fn not_found(error: impl Into<String>, field: Option<&str>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, field)
    }
    /// 409: the action is not allowed in the current state.
    pub fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error, None)
    }
    /// 429 after too many failed logins; `Retry-After` says when to try again.
    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins: try again in {secs} s"),
            None,
        )
    }
    /// 500.
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error, None)
    }

    /// The JSON response.
    pub fn into_response(self) -> warp::reply::Response {
        let status = self.status;
        let mut resp =
            warp::reply::with_status(warp::reply::json(&self), status).into_response_inner();
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(secs) = self
                .error
                .split("try again in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| warp::http::HeaderValue::from_str(n).ok())
            {
                resp.headers_mut()
                    .insert(warp::http::header::RETRY_AFTER, secs);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            // No `Basic` challenge: it would make browsers pop up a login
            // dialog for every anonymous XHR; the UI asks for credentials itself.
            resp.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer realm=\"bergamot\""),
            );
        }
        resp
    }
}

trait IntoResponseInner {
    fn into_response_inner(self) -> warp::reply::Response;
}
impl<T: warp::Reply> IntoResponseInner for T {
    fn into_response_inner(self) -> warp::reply::Response {
        self.into_response()
    }
}

impl From<bergamot_core::Error> for ApiError {
    fn from(e: bergamot_core::Error) -> Self {
        use bergamot_core::Error as E;
        match e {
            E::NotFound { what, id } => ApiError::not_found(format!("{what} {id} not found"), None),
            E::InvalidInput(m) => ApiError::bad_request("body", m),
            E::Config(c) => ApiError::bad_request("config", c.to_string()),
            other => {
                // The detail (a database error, say) goes to the log only.
                tracing::error!(error = %other, "backend error in API request");
                ApiError::internal("internal error (see the server log)")
            }
        }
    }
}

/// Reloads the configuration (from wherever the daemon got it) and syncs it.
#[async_trait]
pub trait Reloader: Send + Sync + 'static {
    /// Loads the config again, syncs the store (keeping states) and the
    /// schedules; returns what changed.
    async fn reload(&self) -> bergamot_core::Result<SyncReport>;
}

/// Everything a web node needs; cheap to share.
pub struct WebContext {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The queue.
    pub queue: Arc<dyn Queue>,
    /// Authentication.
    pub auth: auth::Auth,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The websocket hub.
    pub hub: Arc<ws::Hub>,
    index: Arc<RwLock<Arc<ModelIndex>>>,
    reloader: RwLock<Option<Arc<dyn Reloader>>>,
    result_limits: RwLock<bergamot_core::model::ResultLimits>,
    notify: RwLock<Option<Arc<crate::roles::notifier::NotifyShared>>>,
    /// Publishes what operator actions change: the processor's path,
    /// without its memory of published aggregates.
    publisher: Processor,
}

impl WebContext {
    /// Builds a context over a store and a queue, indexing the store's model.
    pub async fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        auth: auth::AuthConfig,
        metrics: Arc<Metrics>,
    ) -> bergamot_core::Result<Arc<Self>> {
        let model = store.model().await?;
        let index = Arc::new(RwLock::new(Arc::new(ModelIndex::new(model))));
        let hub = ws::Hub::new(index.clone(), metrics.clone());
        let publisher = Processor::new(store.clone(), queue.clone()).without_memory();
        Ok(Arc::new(WebContext {
            publisher,
            store,
            queue,
            auth: auth::Auth::new(auth),
            metrics,
            hub,
            index,
            reloader: RwLock::new(None),
            result_limits: RwLock::new(Default::default()),
            notify: RwLock::new(None),
        }))
    }

    /// Sets the limits passive results (`POST /api/checks/{id}/results`)
    /// must keep (output caps, clock skew).
    pub fn set_result_limits(&self, limits: bergamot_core::model::ResultLimits) {
        *self.result_limits.write() = limits;
    }

    /// The limits passive results must keep.
    pub fn result_limits(&self) -> bergamot_core::model::ResultLimits {
        *self.result_limits.read()
    }

    /// Sets what `POST /api/reload` calls.
    pub fn set_reloader(&self, reloader: Arc<dyn Reloader>) {
        *self.reloader.write() = Some(reloader);
    }

    /// Sets the notification state the notification endpoints use.
    pub fn set_notify(&self, notify: Arc<crate::roles::notifier::NotifyShared>) {
        *self.notify.write() = Some(notify);
    }

    /// The notification state, if set.
    pub fn notify(&self) -> Option<Arc<crate::roles::notifier::NotifyShared>> {
        self.notify.read().clone()
    }

    /// The current model index.
    pub fn index(&self) -> Arc<ModelIndex> {
        self.index.read().clone()
    }

    /// Re-reads the model from the store (after a config sync).
    pub async fn refresh_model(&self) -> bergamot_core::Result<()> {
        let model = self.store.model().await?;
        self.set_model(model);
        Ok(())
    }

    /// Replaces users, tokens, anonymous read and public URLs (a reload),
    /// then closes the websockets whose credentials no longer hold.
    pub fn set_auth(&self, auth: auth::AuthConfig) {
        self.auth.replace(auth);
        let closed = self.hub.revoke(|p| self.auth.still_allowed(p));
        tracing::info!(websockets_closed = closed, "web authentication reloaded");
    }

    /// Publishes what a state change from an operator action means, as the
    /// processor publishes a result's ([`Processor::publish_transition`]):
    /// the check update, alert events, and, when the check's contribution
    /// to aggregates changed, the aggregates of its groups and locations.
    pub async fn publish_transition(
        &self,
        check: CheckId,
        transition: &Transition,
    ) -> bergamot_core::Result<()> {
        self.publisher.publish_transition(check, transition).await
    }

    /// Replaces the model index.
    pub fn set_model(&self, model: Model) {
        // Through the hub, which shares the index: it also forgets the
        // versions of removed checks.
        self.hub.set_model(Arc::new(ModelIndex::new(model)));
    }

    /// Starts the hub's update fan-out: subscribes to the queue's updates.
    /// Runs until `shutdown` resolves.
    pub async fn run_hub(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> bergamot_core::Result<tokio::task::JoinHandle<bergamot_core::Result<()>>> {
        let updates = self.queue.subscribe_updates().await?;
        let hub = self.hub.clone();
        Ok(tokio::spawn(hub.run(updates, shutdown)))
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

fn asset(body: &'static str, content_type: &'static str) -> warp::reply::Response {
    warp::reply::with_header(body, "content-type", content_type).into_response_inner()
}

/// The whole web node as one warp filter.
pub fn routes(ctx: Arc<WebContext>) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let m = ctx.metrics.clone();
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(move || m.health.reply())
        .boxed();
    let m = ctx.metrics.clone();
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .map(move || {
            warp::reply::with_header(m.render(), "content-type", "text/plain; version=0.0.4")
                .into_response_inner()
        })
        .boxed();
    let index = warp::path::end()
        .and(warp::get())
        .map(|| asset(INDEX_HTML, "text/html; charset=utf-8"))
        .boxed();
    let app = warp::path!("app.js")
        .and(warp::get())
        .map(|| asset(APP_JS, "application/javascript; charset=utf-8"))
        .boxed();
    let css = warp::path!("style.css")
        .and(warp::get())
        .map(|| asset(STYLE_CSS, "text/css; charset=utf-8"))
        .boxed();
    let ws = ws::route(ctx.clone()).boxed();
    let m = ctx.metrics.clone();
    let gate = gate::authenticated(ctx.clone());
    let api = api::routes(ctx)
        .with(warp::log::custom(move |info| m.observe_api(info.elapsed())))
        .map(warp::Reply::into_response)
        .boxed();
    // The gate comes before every route: whatever is added under /api, here
    // or in api.rs, is authenticated before it runs.
    let all = healthz
        .or(metrics)
        .unify()
        .or(index)
        .unify()
        .or(app)
        .unify()
        .or(css)
        .unify()
        .or(ws)
        .unify()
        .or(api)
        .unify();
    gate.and(all)
        .recover(handle_rejection)
        .unify()
        .map(headers::secure)
        .boxed()
}

async fn handle_rejection(r: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    let err = if let Some(gate::Refused(e)) = r.find::<gate::Refused>() {
        e.clone()
    } else if r.is_not_found() {
        ApiError::not_found("no such endpoint", None)
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request("query", e.to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", None)
    } else if let Some(e) = r.find::<warp::reject::PayloadTooLarge>() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string(), Some("body"))
    } else if let Some(e) = r.find::<warp::reject::LengthRequired>() {
        ApiError::new(StatusCode::LENGTH_REQUIRED, e.to_string(), Some("body"))
    } else {
        ApiError::bad_request("request", format!("{r:?}"))
    };
    Ok(err.into_response())
}

/// Serves the web node on `addr` until `shutdown` resolves; returns the bound
/// address (port 0 picks a free one) and the server future to spawn. The
/// connection limits and timeouts of the web server apply.
pub fn serve(
    ctx: Arc<WebContext>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> bergamot_core::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    server::serve(ctx, addr, shutdown)
}
