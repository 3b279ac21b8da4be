//! REST JSON API handlers. Every handler authenticates, checks the role,
//! validates its input naming the bad field, and answers JSON; see docs/api.md.

mod search;

use super::auth::{Principal, Role};
use super::{ApiError, IntoResponseInner, WebContext};
use bergamot_core::model::{Check, CheckId, CheckResult, GroupId, Perfdata, ResultId, Status};
use bergamot_core::queue::SchedulerControl;
use bergamot_core::state::{Ack, CheckState, Outcome, Transition};
use bergamot_core::store::{Downtime, HistoryPage};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::Filter;

mod notify;

type Query = HashMap<String, String>;
type Resp = warp::reply::Response;

/// Credentials as they came: `Authorization` header and the query string.
#[derive(Debug, Clone)]
struct Creds {
    authorization: Option<String>,
    query: Query,
}

impl Creds {
    async fn principal(&self, ctx: &WebContext, role: Role) -> Result<Principal, ApiError> {
        let p = ctx
            .auth
            .authenticate(
                self.authorization.as_deref(),
                self.query.get("token").map(String::as_str),
            )
            .await?;
        p.require(role)?;
        Ok(p)
    }
}

fn creds() -> impl Filter<Extract = (Creds,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::query::<Query>())
        .map(|authorization, query| Creds {
            authorization,
            query,
        })
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Resp {
    warp::reply::with_status(warp::reply::json(body), status).into_response_inner()
}

/// A `200 OK` with `body` as JSON.
fn ok_json<T: Serialize>(body: T) -> Result<Resp, ApiError> {
    Ok(json(StatusCode::OK, &body))
}

async fn respond(f: impl Future<Output = Result<Resp, ApiError>>) -> Resp {
    f.await.unwrap_or_else(ApiError::into_response)
}

/// The path (`comment`, `perfdata[0].label`) of the first string in `v`
/// holding a NUL character (PostgreSQL refuses it in text), if any.
fn nul_at(v: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value as V;
    match v {
        V::String(s) if s.contains('\0') => Some(if path.is_empty() {
            "body".to_string()
        } else {
            path.to_string()
        }),
        V::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, &format!("{path}[{i}]"))),
        V::Object(m) => m.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                return Some(if path.is_empty() {
                    "body".to_string()
                } else {
                    path.to_string()
                });
            }
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            nul_at(x, &p)
        }),
        _ => None,
    }
}

/// Parses a JSON body into `T`, naming the field that was wrong; a string
/// with a NUL character is refused naming its field.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("body", "a JSON body is required"));
    }
    if memchr_nul_escape(body) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(field) = nul_at(&v, "") {
                return Err(ApiError::bad_request(
                    &field,
                    "must not contain a NUL character (\\u0000)",
                ));
            }
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde reports a missing field on its parent; name the field itself.
        let field = match msg.split_once("missing field `") {
            Some((_, rest)) => {
                let name = rest.split('`').next().unwrap_or_default();
                if path == "." || path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            }
            None if path == "." || path.is_empty() => "body".to_string(),
            None => path,
        };
        ApiError::bad_request(&field, msg)
    })
}

/// Whether a JSON text may hold an escaped NUL (`\u0000`); a raw NUL is
/// not valid JSON and fails parsing anyway.
fn memchr_nul_escape(body: &[u8]) -> bool {
    body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

fn parse_check_id(ctx: &WebContext, raw: &str) -> Result<Check, ApiError> {
    let id: CheckId = raw
        .parse()
        .map_err(|_| ApiError::bad_request("id", format!("{raw:?} is not a check id (UUID)")))?;
    ctx.index()
        .check(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("check {id} not found"), Some("id")))
}

fn query_usize(q: &Query, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                ApiError::bad_request(name, format!("{v:?} is not a non-negative integer"))
            })
            .map(|n| n.min(max)),
    }
}

/// A check with its state, as lists show it.
#[derive(Debug, Serialize)]
struct CheckView<'a> {
    id: CheckId,
    kind: bergamot_core::model::CheckKind,
    host: &'a str,
    name: &'a str,
    display_name: String,
    engine: &'a str,
    groups: &'a [GroupId],
    location: Option<bergamot_core::model::LocationId>,
    state: &'a CheckState,
}

fn view<'a>(c: &'a Check, state: &'a CheckState) -> CheckView<'a> {
    CheckView {
        id: c.id,
        kind: c.kind,
        host: &c.host,
        name: &c.name,
        display_name: c.display_name(),
        engine: &c.engine,
        groups: &c.groups,
        location: c.location,
        state,
    }
}

#[derive(Debug, Serialize)]
struct ActionResponse {
    outcome: Outcome,
    state: CheckState,
}

async fn apply_action(
    ctx: &WebContext,
    check: CheckId,
    t: Transition,
    status: StatusCode,
) -> Result<Resp, ApiError> {
    if t.outcome == Outcome::Refused {
        return Err(ApiError::conflict(format!(
            "not allowed in the check's current state ({})",
            t.state.status
        )));
    }
    ctx.publish_transition(check, &t).await?;
    Ok(json(
        status,
        &ActionResponse {
            outcome: t.outcome,
            state: t.state,
        },
    ))
}

/// One route of the API.
type Route = BoxedFilter<(Resp,)>;

/// The request body as bytes, at most `limit` of them.
fn body(
    limit: u64,
) -> impl Filter<Extract = (warp::hyper::body::Bytes,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::bytes())
}

/// Builds the `/api/…` routes: each gets the web context and the caller's
/// credentials ([`Creds`]), and its handler's error answers through
/// [`respond`].
#[derive(Clone)]
struct Handlers {
    ctx: Arc<WebContext>,
}

impl Handlers {
    /// The context and the credentials, for a route's handler.
    fn ctx_creds(
        &self,
    ) -> impl Filter<Extract = (Arc<WebContext>, Creds), Error = warp::Rejection> + Clone {
        let ctx = self.ctx.clone();
        warp::any().map(move || ctx.clone()).and(creds())
    }

    /// `/api/` + `route` (a path and a method) answered by `handler(ctx, creds)`.
    fn plain<R, H, F>(&self, route: R, handler: H) -> Route
    where
        R: Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
        H: Fn(Arc<WebContext>, Creds) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        warp::path("api")
            .and(route)
            .and(self.ctx_creds())
            .then(move |ctx, c| respond(handler(ctx, c)))
            .boxed()
    }

    /// `/api/` + `route`, whose path holds an id, answered by
    /// `handler(ctx, creds, id)`.
    fn by_id<R, H, F>(&self, route: R, handler: H) -> Route
    where
        R: Filter<Extract = (String,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
        H: Fn(Arc<WebContext>, Creds, String) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        warp::path("api")
            .and(route)
            .and(self.ctx_creds())
            .then(move |id, ctx, c| respond(handler(ctx, c, id)))
            .boxed()
    }

    /// [`Handlers::by_id`] with a body of at most 1 MiB:
    /// `handler(ctx, creds, id, body)`.
    fn by_id_with_body<R, H, F>(&self, route: R, handler: H) -> Route
    where
        R: Filter<Extract = (String,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
        H: Fn(Arc<WebContext>, Creds, String, warp::hyper::body::Bytes) -> F
            + Clone
            + Send
            + Sync
            + 'static,
        F: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        warp::path("api")
            .and(route)
            .and(self.ctx_creds())
            .and(body(1 << 20))
            .then(move |id, ctx, c, b| respond(handler(ctx, c, id, b)))
            .boxed()
    }
}

/// `first`, else the first of `rest` that matches, in order.
fn first_of(first: Route, rest: impl IntoIterator<Item = Route>) -> Route {
    rest.into_iter()
        .fold(first, |all, route| all.or(route).unify().boxed())
}

pub(crate) fn routes(ctx: Arc<WebContext>) -> BoxedFilter<(Resp,)> {
    use warp::{delete, get, path, post};
    let h = Handlers { ctx: ctx.clone() };
    let suppress = path("api")
        .and(path!("checks" / String / "suppress"))
        .and(post().map(|| true).or(delete().map(|| false)).unify())
        .and(h.ctx_creds())
        .then(|id, on, ctx, c| respond(suppress(ctx, c, id, on)))
        .boxed();
    first_of(
        h.plain(path!("state").and(get()), get_state),
        [
            h.plain(path!("checks").and(get()), search::list_checks),
            h.by_id(path!("checks" / String / "history").and(get()), get_history),
            h.by_id(path!("checks" / String).and(get()), get_check),
            h.by_id(
                path!("checks" / String / "execute").and(post()),
                post_execute,
            ),
            h.by_id_with_body(
                path!("checks" / String / "acknowledge").and(post()),
                post_ack,
            ),
            h.by_id(
                path!("checks" / String / "acknowledge").and(delete()),
                delete_ack,
            ),
            h.by_id_with_body(
                path!("checks" / String / "downtimes").and(post()),
                post_downtime,
            ),
            h.plain(path!("downtimes").and(get()), list_downtimes),
            h.by_id(path!("downtimes" / String).and(delete()), delete_downtime),
            suppress,
            h.by_id_with_body(
                path!("checks" / String / "results").and(post()),
                post_result,
            ),
            h.by_id(path!("checks" / String / "reset").and(post()), reset_check),
            h.plain(path!("groups").and(get()), list_groups),
            h.by_id(path!("groups" / String).and(get()), get_group),
            h.plain(path!("locations").and(get()), list_locations),
            h.plain(path!("alerts").and(get()), list_alerts),
            h.plain(path!("reload").and(post()), post_reload),
            h.plain(path!("whoami").and(get()), whoami),
            notify::routes(&h),
        ],
    )
}

async fn whoami(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Viewer).await?;
    // A short-lived ticket for `/ws?ticket=` (browsers send no headers there).
    let ticket = (!p.anonymous).then(|| ctx.auth.issue_ticket(&p));
    ok_json(serde_json::json!({
        "name": p.name, "role": p.role, "anonymous": p.anonymous,
        "ws_ticket": ticket, "ws_ticket_ttl_seconds": super::auth::TICKET_TTL.as_secs(),
    }))
}

async fn get_state(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let idx = ctx.index();
    let states: HashMap<CheckId, CheckState> = ctx.store.states().await?.into_iter().collect();
    let checks: Vec<_> = idx
        .model
        .checks
        .iter()
        .filter_map(|c| states.get(&c.id).map(|s| view(c, s)))
        .collect();
    let groups = ctx.store.group_states(None).await?;
    let groups: Vec<_> = groups
        .iter()
        .filter_map(|g| {
            idx.group(g.id).map(|def| {
                serde_json::json!({
                    "id": g.id, "name": def.name, "parents": def.parents,
                    "children": idx.children(g.id), "aggregate": g.aggregate,
                })
            })
        })
        .collect();
    let locations = ctx.store.location_states(None).await?;
    let locations: Vec<_> = locations
        .iter()
        .filter_map(|l| {
            idx.location(l.id).map(|def| {
                serde_json::json!({
                    "id": l.id, "name": def.name, "parent": def.parent, "aggregate": l.aggregate,
                })
            })
        })
        .collect();
    ok_json(serde_json::json!({
        "site": idx.model.site, "checks": checks, "groups": groups, "locations": locations,
    }))
}

async fn get_check(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let check = parse_check_id(&ctx, &id)?;
    let state = ctx.store.state(check.id).await?;
    let downtimes = ctx.store.downtimes(Some(check.id), Utc::now()).await?;
    let groups = ctx.store.ancestor_groups(check.id).await?;
    ok_json(serde_json::json!({
        "id": check.id, "display_name": check.display_name(), "config": check,
        "state": state, "downtimes": downtimes, "ancestor_groups": groups,
    }))
}

async fn get_history(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let check = parse_check_id(&ctx, &id)?;
    let limit = query_usize(&c.query, "limit", 50, 1000)?;
    let before_version = match c.query.get("before") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request("before", format!("{v:?} is not a state version"))
        })?),
        None => None,
    };
    let items = ctx
        .store
        .history(
            check.id,
            HistoryPage {
                before_version,
                limit,
            },
        )
        .await?;
    let next_before = if items.len() == limit {
        items.last().map(|e| e.version)
    } else {
        None
    };
    ok_json(serde_json::json!({ "items": items, "next_before": next_before }))
}

/// Asks the schedulers to run a check now (shared with the websocket):
/// a [`SchedulerControl::ExecuteNow`], so that the scheduler owning the
/// check sends the execute as it sends every other (its TTL, its merging of
/// requests for a check already queued). Passive and disabled checks are
/// refused here.
pub(crate) async fn execute_now(ctx: &WebContext, check: &Check) -> Result<(), ApiError> {
    if !check.is_scheduled() {
        return Err(ApiError::bad_request(
            "id",
            format!(
                "{} is passive or disabled: it cannot be executed",
                check.display_name()
            ),
        ));
    }
    ctx.queue
        .publish_control(SchedulerControl::ExecuteNow { check_id: check.id })
        .await?;
    Ok(())
}

async fn post_execute(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    execute_now(&ctx, &check).await?;
    tracing::info!(check = %check.display_name(), by = %p.name, "execute now");
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "check_id": check.id }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    #[serde(default)]
    sticky: bool,
    comment: String,
}

async fn post_ack(
    ctx: Arc<WebContext>,
    c: Creds,
    id: String,
    body: warp::hyper::body::Bytes,
) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    let req: AckRequest = parse_body(&body)?;
    if req.comment.trim().is_empty() {
        return Err(ApiError::bad_request("comment", "a comment is required"));
    }
    let kind = if req.sticky { Ack::Sticky } else { Ack::Normal };
    let t = ctx
        .store
        .acknowledge(check.id, kind, &p.name, &req.comment, Utc::now())
        .await?;
    tracing::info!(check = %check.display_name(), by = %p.name, ?kind, "acknowledge");
    apply_action(&ctx, check.id, t, StatusCode::OK).await
}

async fn delete_ack(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    let t = ctx
        .store
        .remove_acknowledgement(check.id, Utc::now())
        .await?;
    tracing::info!(check = %check.display_name(), by = %p.name, "remove acknowledgement");
    apply_action(&ctx, check.id, t, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DowntimeRequest {
    comment: String,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    duration_seconds: Option<u64>,
}

async fn post_downtime(
    ctx: Arc<WebContext>,
    c: Creds,
    id: String,
    body: warp::hyper::body::Bytes,
) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    let req: DowntimeRequest = parse_body(&body)?;
    if req.comment.trim().is_empty() {
        return Err(ApiError::bad_request("comment", "a comment is required"));
    }
    let now = Utc::now();
    let starts_at = req.starts_at.unwrap_or(now);
    let ends_at = match (req.ends_at, req.duration_seconds) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "duration_seconds",
                "give either ends_at or duration_seconds, not both",
            ))
        }
        (Some(e), None) => e,
        (None, Some(d)) => {
            let d = i64::try_from(d)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .ok_or_else(|| ApiError::bad_request("duration_seconds", "too long"))?;
            starts_at
                .checked_add_signed(d)
                .ok_or_else(|| ApiError::bad_request("duration_seconds", "too long"))?
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "ends_at",
                "give ends_at or duration_seconds",
            ))
        }
    };
    if ends_at <= starts_at {
        return Err(ApiError::bad_request("ends_at", "must be after starts_at"));
    }
    let downtime = Downtime {
        id: Uuid::new_v4(),
        check_id: check.id,
        starts_at,
        ends_at,
        author: p.name.clone(),
        comment: req.comment,
    };
    let dt_id = downtime.id;
    let t = ctx.store.schedule_downtime(downtime.clone(), now).await?;
    tracing::info!(check = %check.display_name(), by = %p.name, %starts_at, %ends_at, "downtime scheduled");
    let state = match t {
        Some(t) => {
            ctx.publish_transition(check.id, &t).await?;
            t.state
        }
        None => ctx.store.state(check.id).await?,
    };
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": dt_id, "downtime": downtime, "state": state }),
    ))
}

async fn list_downtimes(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let items = ctx.store.downtimes(None, Utc::now()).await?;
    ok_json(serde_json::json!({ "items": items }))
}

async fn delete_downtime(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let dt: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("id", format!("{id:?} is not a downtime id (UUID)")))?;
    let now = Utc::now();
    let known = ctx
        .store
        .downtimes(None, now)
        .await?
        .iter()
        .any(|d| d.id == dt);
    if !known {
        return Err(ApiError::not_found(
            format!("downtime {dt} not found"),
            Some("id"),
        ));
    }
    let t = ctx.store.cancel_downtime(dt, now).await?;
    tracing::info!(downtime = %dt, by = %p.name, "downtime cancelled");
    if let Some((check, t)) = &t {
        ctx.publish_transition(*check, t).await?;
    }
    ok_json(serde_json::json!({ "cancelled": dt, "state": t.map(|(_, t)| t.state) }))
}

async fn suppress(ctx: Arc<WebContext>, c: Creds, id: String, on: bool) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    let t = ctx.store.set_suppressed(check.id, on, Utc::now()).await?;
    tracing::info!(check = %check.display_name(), by = %p.name, suppressed = on, "suppression");
    apply_action(&ctx, check.id, t, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultRequest {
    status: Status,
    output: String,
    #[serde(default)]
    long_output: String,
    #[serde(default)]
    perfdata: Vec<Perfdata>,
    #[serde(default)]
    executed_at: Option<DateTime<Utc>>,
}

async fn post_result(
    ctx: Arc<WebContext>,
    c: Creds,
    id: String,
    body: warp::hyper::body::Bytes,
) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    let req: ResultRequest = parse_body(&body)?;
    no_nul("output", &req.output)?;
    no_nul("long_output", &req.long_output)?;
    for (i, p) in req.perfdata.iter().enumerate() {
        no_nul(&format!("perfdata[{i}].label"), &p.label)?;
        no_nul(&format!("perfdata[{i}].uom"), &p.uom)?;
        for (name, v) in [("warn", &p.warn), ("crit", &p.crit)] {
            if let Some(v) = v {
                no_nul(&format!("perfdata[{i}].{name}"), v)?;
            }
        }
    }
    let limits = ctx.result_limits();
    let now = Utc::now();
    let mut result = CheckResult {
        id: ResultId::now(),
        check_id: check.id,
        status: req.status,
        output: req.output.into(),
        long_output: req.long_output.into(),
        perfdata: req.perfdata.into(),
        executed_at: req.executed_at.unwrap_or(now),
        duration_ms: 0,
    };
    result
        .check_clock(now, &limits)
        .map_err(|e| ApiError::bad_request("executed_at", e))?;
    result.cap_output(&limits);
    let rid = result.id;
    ctx.queue.publish_result(result).await?;
    tracing::debug!(check = %check.display_name(), by = %p.name, "passive result");
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "result_id": rid, "check_id": check.id }),
    ))
}

/// A passive result's text may not hold a NUL byte (no store keeps it as
/// text): 400 naming the field.
fn no_nul(field: &str, text: &str) -> Result<(), ApiError> {
    match text.find('\0') {
        Some(at) => Err(ApiError::bad_request(
            field,
            format!("contains a NUL character (at byte {at})"),
        )),
        None => Ok(()),
    }
}

/// `POST /api/checks/{id}/reset`: resets the check's result clock
/// ([`Store::reset_clock`](bergamot_core::store::Store::reset_clock)), so a
/// check frozen by a result dated in the future takes results again.
async fn reset_check(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Operator).await?;
    let check = parse_check_id(&ctx, &id)?;
    let t = ctx.store.reset_clock(check.id, Utc::now()).await?;
    tracing::info!(check = %check.display_name(), by = %p.name, "result clock reset");
    apply_action(&ctx, check.id, t, StatusCode::OK).await
}

async fn list_groups(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let idx = ctx.index();
    let aggs: HashMap<GroupId, _> = ctx
        .store
        .group_states(None)
        .await?
        .into_iter()
        .map(|g| (g.id, g.aggregate))
        .collect();
    let groups: Vec<_> = idx
        .model
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "id": g.id, "name": g.name, "parents": g.parents,
                "children": idx.children(g.id), "checks": idx.direct_checks(g.id),
                "aggregate": aggs.get(&g.id),
            })
        })
        .collect();
    ok_json(serde_json::json!({ "groups": groups }))
}

async fn get_group(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let idx = ctx.index();
    let g = idx
        .find_group(&id)
        .ok_or_else(|| ApiError::not_found(format!("group {id} not found"), Some("id")))?;
    let subtree = ctx.store.group_states(Some(g.id)).await?;
    let aggregate = subtree.iter().find(|s| s.id == g.id).map(|s| s.aggregate);
    let children: Vec<_> = subtree
        .iter()
        .filter(|s| idx.children(g.id).contains(&s.id))
        .map(|s| {
            serde_json::json!({
                "id": s.id, "name": idx.group(s.id).map(|x| x.name.as_str()), "aggregate": s.aggregate,
            })
        })
        .collect();
    ok_json(serde_json::json!({
        "id": g.id, "name": g.name, "parents": g.parents, "aggregate": aggregate,
        "children": children, "checks": idx.direct_checks(g.id),
    }))
}

async fn list_locations(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let idx = ctx.index();
    let aggs: HashMap<_, _> = ctx
        .store
        .location_states(None)
        .await?
        .into_iter()
        .map(|l| (l.id, l.aggregate))
        .collect();
    let locations: Vec<_> = idx
        .model
        .locations
        .iter()
        .map(|l| {
            serde_json::json!({
                "id": l.id, "name": l.name, "parent": l.parent, "aggregate": aggs.get(&l.id),
            })
        })
        .collect();
    ok_json(serde_json::json!({ "locations": locations }))
}

async fn list_alerts(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let limit = query_usize(&c.query, "limit", 100, 10_000)?;
    let check = match c.query.get("check") {
        Some(id) => Some(parse_check_id(&ctx, id).map_err(|mut e| {
            e.field = Some("check".into());
            e
        })?),
        None => None,
    };
    let items = ctx.store.alerts(check.map(|c| c.id), limit).await?;
    ok_json(serde_json::json!({ "items": items }))
}

async fn post_reload(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Admin).await?;
    let reloader = ctx.reloader.read().clone();
    let Some(reloader) = reloader else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this web node cannot reload the configuration",
            None,
        ));
    };
    tracing::info!(by = %p.name, "config reload requested");
    let report = reloader.reload().await?;
    ctx.refresh_model().await?;
    ok_json(&report)
}
