//! Notification endpoints: the notification log per alert, per check and
//! by status, contacts and teams, and the admin's test notification.
//! See docs/api.md.

use super::{
    body, first_of, json, ok_json, parse_body, parse_check_id, query_usize, respond, Creds,
    Handlers, Resp, Route,
};
use crate::roles::notifier::NotifyShared;
use crate::web::auth::Role;
use crate::web::{ApiError, WebContext};
use bergamot_core::model::{CheckId, Status};
use bergamot_core::notify::{
    JobFilter, JobStatus, Notification, NotificationJob, NotificationKind,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::{Filter, Reply};

/// One job as the log shows it (no recipient addresses or channel settings).
#[derive(Debug, Serialize)]
struct JobView<'a> {
    id: Uuid,
    kind: NotificationKind,
    alert_id: Option<Uuid>,
    check_id: CheckId,
    check: &'a str,
    check_status: Status,
    recipient: &'a str,
    channel: &'a str,
    escalation: u32,
    sequence: u32,
    status: JobStatus,
    attempts: u32,
    last_error: Option<&'a str>,
    not_before: DateTime<Utc>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

fn job_view(j: &NotificationJob) -> JobView<'_> {
    let n = &j.notification;
    JobView {
        id: n.id,
        kind: n.kind,
        alert_id: n.alert_id,
        check_id: n.check_id,
        check: &n.check,
        check_status: n.status,
        recipient: &n.recipient.name,
        channel: &n.channel,
        escalation: n.escalation,
        sequence: n.sequence,
        status: j.status,
        attempts: j.attempts,
        last_error: j.last_error.as_deref(),
        not_before: j.not_before,
        created_at: j.created_at,
        finished_at: j.finished_at,
    }
}

fn notify_of(ctx: &WebContext) -> Result<Arc<NotifyShared>, ApiError> {
    ctx.notify().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "notifications are not available on this web node",
            None,
        )
    })
}

fn parse_status(raw: &str) -> Result<JobStatus, ApiError> {
    Ok(match raw {
        "pending" => JobStatus::Pending,
        "sending" => JobStatus::Sending,
        "sent" => JobStatus::Sent,
        "failed" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        other => {
            return Err(ApiError::bad_request(
                "status",
                format!(
                    "{other:?} is not a job status (pending, sending, sent, failed, cancelled)"
                ),
            ))
        }
    })
}

async fn list(ctx: &WebContext, c: &Creds, mut filter: JobFilter) -> Result<Resp, ApiError> {
    let notify = notify_of(ctx)?;
    filter.limit = query_usize(&c.query, "limit", 100, 1000)?;
    if let Some(s) = c.query.get("status") {
        filter.status = Some(parse_status(s)?);
    }
    let jobs = notify.jobs.notifications(&filter).await?;
    let items: Vec<JobView<'_>> = jobs.iter().map(job_view).collect();
    ok_json(serde_json::json!({ "items": items }))
}

async fn alert_notifications(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let alert: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("id", format!("{id:?} is not an alert id (UUID)")))?;
    let filter = JobFilter {
        alert_id: Some(alert),
        ..JobFilter::default()
    };
    list(&ctx, &c, filter).await
}

async fn check_notifications(ctx: Arc<WebContext>, c: Creds, id: String) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let check = parse_check_id(&ctx, &id)?;
    let filter = JobFilter {
        check_id: Some(check.id),
        ..JobFilter::default()
    };
    list(&ctx, &c, filter).await
}

async fn all_notifications(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    list(&ctx, &c, JobFilter::default()).await
}

async fn contacts(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let notify = notify_of(&ctx)?;
    let model = notify.model();
    let teams_of = |name: &str| -> Vec<&str> {
        model
            .teams
            .iter()
            .filter(|(_, members)| members.iter().any(|m| m == name))
            .map(|(t, _)| t.as_str())
            .collect()
    };
    let contacts: Vec<_> = model
        .contacts
        .values()
        .map(|k| {
            serde_json::json!({
                "name": k.name,
                "email": k.email,
                "phone": k.phone,
                "chat": k.chat,
                "period": k.period,
                // Per-contact channel settings may hold secrets: names only.
                "channel_settings": k.channels.keys().collect::<Vec<_>>(),
                "teams": teams_of(&k.name),
            })
        })
        .collect();
    let channels: Vec<_> = model
        .channels
        .values()
        .map(|ch| serde_json::json!({ "name": ch.name, "type": ch.kind }))
        .collect();
    ok_json(serde_json::json!({ "contacts": contacts, "channels": channels }))
}

async fn teams(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let notify = notify_of(&ctx)?;
    let model = notify.model();
    let teams: Vec<_> = model
        .teams
        .iter()
        .map(|(name, members)| serde_json::json!({ "name": name, "members": members }))
        .collect();
    ok_json(serde_json::json!({ "teams": teams }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    contact: String,
    channel: String,
    #[serde(default)]
    message: Option<String>,
}

async fn send_test(
    ctx: Arc<WebContext>,
    c: Creds,
    body: warp::hyper::body::Bytes,
) -> Result<Resp, ApiError> {
    let p = c.principal(&ctx, Role::Admin).await?;
    let req: TestRequest = parse_body(&body)?;
    let notify = notify_of(&ctx)?;
    let model = notify.model();
    let Some(contact) = model.contacts.get(&req.contact) else {
        return Err(ApiError::bad_request(
            "contact",
            format!("no contact named {:?}", req.contact),
        ));
    };
    if !model.channels.contains_key(&req.channel) {
        return Err(ApiError::bad_request(
            "channel",
            format!("no channel named {:?}", req.channel),
        ));
    }
    let now = Utc::now();
    let id = Uuid::new_v4();
    let output = req
        .message
        .unwrap_or_else(|| format!("Test notification requested by {}", p.name));
    let job = NotificationJob {
        notification: Notification {
            id,
            kind: NotificationKind::Test,
            alert_id: None,
            check_id: CheckId(Uuid::nil()),
            check: "test".into(),
            host: String::new(),
            status: Status::Info,
            output,
            at: now,
            alert_opened_at: None,
            escalation: 0,
            sequence: 0,
            author: Some(p.name.clone()),
            comment: None,
            recipient: contact.recipient(&req.channel),
            channel: req.channel.clone(),
        },
        not_before: now,
        status: JobStatus::Pending,
        attempts: 0,
        last_error: None,
        created_at: now,
        finished_at: None,
    };
    notify.jobs.enqueue(&[job]).await?;
    notify.wake();
    tracing::info!(by = %p.name, contact = %req.contact, channel = %req.channel, job = %id, "test notification queued");
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "id": id, "status": "pending" }),
    ))
}

/// The test receiver: accepts any JSON object (at most 64 KiB), counts it
/// and forgets it. No credentials: it stores nothing and answers nothing.
async fn echo(ctx: Arc<WebContext>, body: warp::hyper::body::Bytes) -> Result<Resp, ApiError> {
    let v: serde_json::Value = parse_body(&body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("body", "expected a JSON object"));
    }
    ctx.metrics
        .webhook_echo_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(id = %v["id"], kind = %v["kind"], "test receiver got a webhook");
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

pub(super) fn routes(h: &Handlers) -> Route {
    use warp::{get, path, post};
    let ctx = h.ctx.clone();
    let echo = path("api")
        .and(path!("notifications" / "echo"))
        .and(post())
        .and(warp::any().map(move || ctx.clone()))
        .and(body(1 << 16))
        .then(|ctx, b| respond(echo(ctx, b)))
        .boxed();
    let test = path("api")
        .and(path!("notifications" / "test"))
        .and(post())
        .and(h.ctx_creds())
        .and(body(1 << 16))
        .then(|ctx, c, b| respond(send_test(ctx, c, b)))
        .boxed();
    first_of(
        h.by_id(
            path!("alerts" / String / "notifications").and(get()),
            alert_notifications,
        ),
        [
            echo,
            h.by_id(
                path!("checks" / String / "notifications").and(get()),
                check_notifications,
            ),
            h.plain(path!("notifications").and(get()), all_notifications),
            test,
            h.plain(path!("contacts").and(get()), contacts),
            h.plain(path!("teams").and(get()), teams),
        ],
    )
}
