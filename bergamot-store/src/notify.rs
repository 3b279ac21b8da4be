//! [`NotificationStore`] over PostgreSQL: table `notification_jobs`
//! (migration 4).
//!
//! - `enqueue`: one `INSERT … SELECT FROM unnest(…) ON CONFLICT (id) DO NOTHING`.
//! - `claim`: `UPDATE … WHERE id IN (SELECT id … ORDER BY not_before
//!   FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …`: concurrent claimers skip
//!   each other's rows instead of waiting, so several notifier nodes share the
//!   work and each due job goes to exactly one of them. A `sending` row whose
//!   `lease_until` passed is due again (its node died).
//! - `finish`: updates only a row still `pending` or `sending`, so a job once
//!   `sent` is never reopened by a late report.

use crate::error::Error;
use crate::PostgresStore;
use async_trait::async_trait;
use bergamot_core::notify::{
    JobFilter, JobStatus, Notification, NotificationJob, NotificationStore, SendOutcome,
};
use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use tokio_postgres::Row;
use uuid::Uuid;

/// Jobs listed when the filter says `limit = 0`.
const DEFAULT_LIST_LIMIT: i64 = 500;

const COLUMNS: &str =
    "notification, status, not_before, attempts, last_error, created_at, finished_at";

fn status_of(s: &str) -> Result<JobStatus, Error> {
    Ok(match s {
        "pending" => JobStatus::Pending,
        "sending" => JobStatus::Sending,
        "sent" => JobStatus::Sent,
        "failed" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        other => {
            return Err(Error::corrupt(
                "notification_jobs",
                format!("unknown status {other:?}"),
            ))
        }
    })
}

fn job_of(row: &Row) -> Result<NotificationJob, Error> {
    let Json(notification): Json<Notification> = row
        .try_get("notification")
        .map_err(|e| Error::corrupt("notification_jobs", e.to_string()))?;
    let status: String = row.get("status");
    let attempts: i32 = row.get("attempts");
    Ok(NotificationJob {
        notification,
        not_before: row.get("not_before"),
        status: status_of(&status)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
        finished_at: row.get("finished_at"),
    })
}

impl PostgresStore {
    async fn pg_enqueue(&self, jobs: &[NotificationJob]) -> crate::Result<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut alerts = Vec::with_capacity(jobs.len());
        let mut checks = Vec::with_capacity(jobs.len());
        let mut statuses = Vec::with_capacity(jobs.len());
        let mut not_before = Vec::with_capacity(jobs.len());
        let mut attempts = Vec::with_capacity(jobs.len());
        let mut errors = Vec::with_capacity(jobs.len());
        let mut created = Vec::with_capacity(jobs.len());
        let mut finished = Vec::with_capacity(jobs.len());
        let mut bodies = Vec::with_capacity(jobs.len());
        for j in jobs {
            let n = &j.notification;
            ids.push(n.id);
            alerts.push(n.alert_id);
            checks.push(n.check_id.0);
            statuses.push(j.status.as_str());
            not_before.push(j.not_before);
            attempts.push(i32::try_from(j.attempts).unwrap_or(i32::MAX));
            errors.push(j.last_error.clone());
            created.push(j.created_at);
            finished.push(j.finished_at);
            bodies.push(Json(n));
        }
        // Ordered by the input, so `seq` keeps planning order.
        let n = client
            .execute(
                "INSERT INTO notification_jobs
                     (id, alert_id, check_id, status, not_before, attempts, last_error,
                      created_at, finished_at, notification)
                 SELECT id, a, c, s, nb, at, e, cr, f, body FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
                                      $5::timestamptz[], $6::int[], $7::text[],
                                      $8::timestamptz[], $9::timestamptz[], $10::jsonb[])
                     WITH ORDINALITY AS t(id, a, c, s, nb, at, e, cr, f, body, ord)
                 ORDER BY ord
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &ids,
                    &alerts,
                    &checks,
                    &statuses,
                    &not_before,
                    &attempts,
                    &errors,
                    &created,
                    &finished,
                    &bodies,
                ],
            )
            .await
            .map_err(Error::db("enqueue notification jobs"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn pg_claim(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> crate::Result<Vec<NotificationJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease = chrono::Duration::from_std(lease)
            .map_err(|e| Error::InvalidInput(format!("lease {lease:?}: {e}")))?;
        let until = now + lease;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "UPDATE notification_jobs SET status = 'sending', lease_until = $3,
                         node = $1, attempts = attempts + 1
                     WHERE id IN (
                         SELECT id FROM notification_jobs
                         WHERE (status = 'pending' AND not_before <= $2)
                            OR (status = 'sending' AND lease_until <= $2)
                         ORDER BY not_before, seq
                         LIMIT $4
                         FOR UPDATE SKIP LOCKED)
                     RETURNING seq, {COLUMNS}"
                ),
                &[&node, &now, &until, &limit],
                "claim notification jobs",
            )
            .await?;
        let mut out: Vec<(DateTime<Utc>, i64, NotificationJob)> = Vec::with_capacity(rows.len());
        for r in &rows {
            let job = job_of(r)?;
            out.push((job.not_before, r.get("seq"), job));
        }
        out.sort_by_key(|a| (a.0, a.1));
        Ok(out.into_iter().map(|(_, _, j)| j).collect())
    }

    async fn pg_finish(
        &self,
        id: Uuid,
        outcome: SendOutcome,
        now: DateTime<Utc>,
    ) -> crate::Result<()> {
        let client = self.client().await?;
        type Update = (
            &'static str,
            Option<DateTime<Utc>>,
            Option<String>,
            Option<DateTime<Utc>>,
        );
        let (status, not_before, error, finished): Update = match outcome {
            SendOutcome::Sent => ("sent", None, None, Some(now)),
            SendOutcome::Failed {
                error,
                retry_at: Some(at),
            } => ("pending", Some(at), Some(error), None),
            SendOutcome::Failed {
                error,
                retry_at: None,
            } => ("failed", None, Some(error), Some(now)),
            SendOutcome::Cancelled { reason } => ("cancelled", None, Some(reason), Some(now)),
        };
        let n = client
            .execute(
                "UPDATE notification_jobs SET status = $2,
                     not_before = coalesce($3, not_before),
                     last_error = coalesce($4, last_error),
                     finished_at = $5, lease_until = NULL
                 WHERE id = $1 AND status IN ('pending', 'sending')",
                &[&id, &status, &not_before, &error, &finished],
            )
            .await
            .map_err(Error::db("finish a notification job"))?;
        if n == 0 {
            let known = client
                .query_opt("SELECT 1 FROM notification_jobs WHERE id = $1", &[&id])
                .await
                .map_err(Error::db("look up a notification job"))?;
            if known.is_none() {
                return Err(Error::not_found("notification job", id));
            }
            // Already sent, failed or cancelled: a late report; the end stands.
        }
        Ok(())
    }

    async fn pg_notifications(&self, filter: &JobFilter) -> crate::Result<Vec<NotificationJob>> {
        let limit = if filter.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            i64::try_from(filter.limit).unwrap_or(i64::MAX)
        };
        let status = filter.status.map(|s| s.as_str());
        let check = filter.check_id.map(|c| c.0);
        let rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM notification_jobs
                     WHERE ($1::uuid IS NULL OR alert_id = $1)
                       AND ($2::uuid IS NULL OR check_id = $2)
                       AND ($3::text IS NULL OR status = $3)
                     ORDER BY created_at DESC, seq DESC
                     LIMIT $4"
                ),
                &[&filter.alert_id, &check, &status, &limit],
                "list notification jobs",
            )
            .await?;
        rows.iter().map(job_of).collect()
    }
}

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn enqueue(&self, jobs: &[NotificationJob]) -> bergamot_core::Result<usize> {
        Ok(self.pg_enqueue(jobs).await?)
    }

    async fn claim(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> bergamot_core::Result<Vec<NotificationJob>> {
        Ok(self.pg_claim(node, now, lease, limit).await?)
    }

    async fn finish(
        &self,
        id: Uuid,
        outcome: SendOutcome,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<()> {
        Ok(self.pg_finish(id, outcome, now).await?)
    }

    async fn notifications(
        &self,
        filter: &JobFilter,
    ) -> bergamot_core::Result<Vec<NotificationJob>> {
        Ok(self.pg_notifications(filter).await?)
    }
}
