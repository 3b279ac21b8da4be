//! The [`NotificationStore`] contract, one case per clause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::at;
use crate::model::{CheckId, Status};
use crate::notify::{
    JobFilter, JobStatus, Notification, NotificationJob, NotificationKind, NotificationStore,
    Recipient, SendOutcome,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

/// A pending job of `alert` on `check` for `recipient`, due at [`at`]`(due)`,
/// planned at [`at`]`(created)`.
pub fn job(
    alert: Uuid,
    check: CheckId,
    recipient: &str,
    due: i64,
    created: i64,
) -> NotificationJob {
    NotificationJob {
        notification: Notification {
            id: Uuid::new_v4(),
            kind: NotificationKind::Alert,
            alert_id: Some(alert),
            check_id: check,
            check: "web1/http".into(),
            host: "web1".into(),
            status: Status::Critical,
            output: "connection refused".into(),
            at: at(created),
            alert_opened_at: Some(at(created)),
            escalation: 0,
            sequence: 0,
            author: None,
            comment: None,
            recipient: Recipient {
                name: recipient.into(),
                email: Some(format!("{recipient}@example.org")),
                ..Recipient::default()
            },
            channel: "mail".into(),
        },
        not_before: at(due),
        status: JobStatus::Pending,
        attempts: 0,
        last_error: None,
        created_at: at(created),
        finished_at: None,
    }
}

fn check(n: &str) -> CheckId {
    CheckId::service(super::SITE, "web1", n)
}

async fn one(store: &dyn NotificationStore, id: Uuid) -> NotificationJob {
    let all = store
        .notifications(&JobFilter {
            limit: 10_000,
            ..JobFilter::default()
        })
        .await
        .expect("list jobs");
    all.into_iter()
        .find(|j| j.notification.id == id)
        .unwrap_or_else(|| panic!("job {id} is listed"))
}

/// What `node` claims at [`at`]`(t)` (at most 10 jobs).
async fn claim(store: &dyn NotificationStore, node: &str, t: i64) -> Vec<NotificationJob> {
    store.claim(node, at(t), LEASE, 10).await.unwrap()
}

/// Asserts that `node` claims exactly `job` at [`at`]`(t)`; `what` says
/// why. Returns the claimed job.
async fn claim_exactly(
    store: &dyn NotificationStore,
    node: &str,
    t: i64,
    job: &NotificationJob,
    what: &str,
) -> NotificationJob {
    let got = claim(store, node, t).await;
    assert_eq!(ids(&got), vec![job.notification.id], "{what}");
    got.into_iter().next().expect("claimed")
}

/// Asserts that `node` can claim nothing at [`at`]`(t)`; `what` says why.
async fn assert_nothing_due(store: &dyn NotificationStore, node: &str, t: i64, what: &str) {
    assert!(claim(store, node, t).await.is_empty(), "{what}");
}

/// Enqueues one due job (for ann) and claims it as `n1` at [`at`]`(0)`;
/// returns its id.
async fn claimed_job(store: &dyn NotificationStore) -> Uuid {
    let j = job(Uuid::new_v4(), check("a"), "ann", 0, 0);
    let id = j.notification.id;
    store.enqueue(&[j]).await.unwrap();
    claim(store, "n1", 0).await;
    id
}

/// Finishes `id` as failed with `error` at [`at`]`(t)`, to be retried at
/// `retry_at` (`None`: given up).
async fn fail(
    store: &dyn NotificationStore,
    id: Uuid,
    error: &str,
    retry_at: Option<chrono::DateTime<chrono::Utc>>,
    t: i64,
) {
    let outcome = SendOutcome::Failed {
        error: error.into(),
        retry_at,
    };
    store.finish(id, outcome, at(t)).await.unwrap();
}

async fn list(store: &dyn NotificationStore, filter: JobFilter) -> Vec<NotificationJob> {
    store.notifications(&filter).await.unwrap()
}

fn with_status(status: JobStatus) -> JobFilter {
    JobFilter {
        status: Some(status),
        ..JobFilter::default()
    }
}

fn ids(jobs: &[NotificationJob]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.notification.id).collect()
}

/// `enqueue` inserts unknown ids, ignores known ones, returns the new count,
/// and keeps the first version of a known job.
pub async fn enqueue_ignores_known_ids(store: Arc<dyn NotificationStore>) {
    let a = Uuid::new_v4();
    let j1 = job(a, check("a"), "ann", 0, 0);
    let j2 = job(a, check("a"), "bob", 0, 0);
    assert_eq!(
        store.enqueue(std::slice::from_ref(&j1)).await.unwrap(),
        1,
        "enqueue: one new job"
    );
    let mut changed = j1.clone();
    changed.notification.output = "changed".into();
    assert_eq!(
        store.enqueue(&[changed, j2.clone()]).await.unwrap(),
        1,
        "enqueue: a known id is ignored, only the new one counts"
    );
    assert_eq!(store.enqueue(&[]).await.unwrap(), 0, "enqueue: nothing");
    let got = one(store.as_ref(), j1.notification.id).await;
    assert_eq!(
        got.notification.output, "connection refused",
        "enqueue: the first version stands"
    );
    assert_eq!(got, j1, "enqueue: a job round-trips unchanged");
}

/// `claim` hands out pending jobs whose `not_before` has come, marks them
/// sending and counts the attempt; future jobs wait.
pub async fn claim_only_due_jobs(store: Arc<dyn NotificationStore>) {
    let a = Uuid::new_v4();
    let due = job(a, check("a"), "ann", 10, 0);
    let later = job(a, check("a"), "bob", 50, 0);
    store.enqueue(&[due.clone(), later.clone()]).await.unwrap();
    assert_nothing_due(
        store.as_ref(),
        "n1",
        5,
        "claim: nothing is due before not_before",
    )
    .await;
    let got = claim_exactly(store.as_ref(), "n1", 10, &due, "claim: exactly the due job").await;
    assert_eq!(got.status, JobStatus::Sending, "claim: the job is sending");
    assert_eq!(got.attempts, 1, "claim: the attempt is counted");
    assert_nothing_due(
        store.as_ref(),
        "n2",
        11,
        "claim: a claimed job under lease goes to nobody else",
    )
    .await;
    assert_eq!(
        one(store.as_ref(), due.notification.id).await.status,
        JobStatus::Sending,
        "claim: listed as sending"
    );
    claim_exactly(
        store.as_ref(),
        "n2",
        50,
        &later,
        "claim: the later job once due",
    )
    .await;
}

/// `claim` respects `limit` and returns jobs in `not_before` order.
pub async fn claim_in_not_before_order(store: Arc<dyn NotificationStore>) {
    let a = Uuid::new_v4();
    let jobs: Vec<NotificationJob> = [30, 10, 20, 40]
        .iter()
        .map(|d| job(a, check("a"), &format!("r{d}"), *d, 0))
        .collect();
    store.enqueue(&jobs).await.unwrap();
    let first = store.claim("n1", at(100), LEASE, 2).await.unwrap();
    let names: Vec<&str> = first
        .iter()
        .map(|j| j.notification.recipient.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["r10", "r20"],
        "claim: the two earliest, in order"
    );
    let rest = claim(store.as_ref(), "n1", 100).await;
    let names: Vec<&str> = rest
        .iter()
        .map(|j| j.notification.recipient.name.as_str())
        .collect();
    assert_eq!(names, vec!["r30", "r40"], "claim: the rest, in order");
}

/// Concurrent claimers never get the same job; together they get all.
pub async fn concurrent_claims_are_exclusive(store: Arc<dyn NotificationStore>) {
    let a = Uuid::new_v4();
    let jobs: Vec<NotificationJob> = (0..200)
        .map(|i| job(a, check("a"), &format!("r{i}"), i % 7, 0))
        .collect();
    store.enqueue(&jobs).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim(&format!("n{n}"), at(10), LEASE, 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(ids(&got));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id), "claim: job {id} went to two claimers");
        }
    }
    assert_eq!(seen.len(), 200, "claim: every due job was claimed once");
}

/// A `sending` job whose lease ended (its node died) is claimed again, with
/// the attempt counted; before that it is not.
pub async fn expired_lease_is_claimed_again(store: Arc<dyn NotificationStore>) {
    let j = job(Uuid::new_v4(), check("a"), "ann", 0, 0);
    store.enqueue(std::slice::from_ref(&j)).await.unwrap();
    assert_eq!(claim(store.as_ref(), "dead", 0).await.len(), 1);
    assert_nothing_due(
        store.as_ref(),
        "n2",
        59,
        "lease: not claimable before it ends",
    )
    .await;
    let again = claim_exactly(
        store.as_ref(),
        "n2",
        60,
        &j,
        "lease: claimable once it ended",
    )
    .await;
    assert_eq!(again.attempts, 2, "lease: the second attempt is counted");
}

/// A job finished `Sent` is never claimed again, not even after its lease,
/// and a late report of another node does not undo it.
pub async fn sent_is_never_claimed_again(store: Arc<dyn NotificationStore>) {
    let id = claimed_job(store.as_ref()).await;
    store.finish(id, SendOutcome::Sent, at(1)).await.unwrap();
    assert_nothing_due(store.as_ref(), "n1", 10_000, "sent: never claimed again").await;
    fail(store.as_ref(), id, "late", Some(at(2)), 2).await;
    let got = one(store.as_ref(), id).await;
    assert_eq!(
        got.status,
        JobStatus::Sent,
        "sent: a late failure report does not reopen it"
    );
    assert_eq!(
        got.finished_at,
        Some(at(1)),
        "sent: finished_at is the send time"
    );
    assert_nothing_due(
        store.as_ref(),
        "n1",
        10_000,
        "sent: still never claimed again",
    )
    .await;
}

/// `Failed` with a retry time makes the job pending at that time, keeping
/// the error; without one marks it failed, listed by status.
pub async fn failed_retries_then_gives_up(store: Arc<dyn NotificationStore>) {
    let id = claimed_job(store.as_ref()).await;
    fail(store.as_ref(), id, "HTTP 500", Some(at(30)), 1).await;
    let got = one(store.as_ref(), id).await;
    assert_eq!(got.status, JobStatus::Pending, "retry: pending again");
    assert_eq!(got.not_before, at(30), "retry: due at the retry time");
    assert_eq!(
        got.last_error.as_deref(),
        Some("HTTP 500"),
        "retry: the error is kept"
    );
    assert_nothing_due(store.as_ref(), "n1", 29, "retry: not before the retry time").await;
    let again = claim(store.as_ref(), "n1", 30).await;
    assert_eq!(again.len(), 1, "retry: claimable at the retry time");
    assert_eq!(again[0].attempts, 2, "retry: second attempt");
    fail(store.as_ref(), id, "HTTP 500 again", None, 31).await;
    let got = one(store.as_ref(), id).await;
    assert_eq!(got.status, JobStatus::Failed, "give up: failed");
    assert_eq!(got.finished_at, Some(at(31)), "give up: finished_at set");
    assert_eq!(got.last_error.as_deref(), Some("HTTP 500 again"));
    assert_nothing_due(store.as_ref(), "n1", 10_000, "give up: never claimed again").await;
    let failed = list(store.as_ref(), with_status(JobStatus::Failed)).await;
    assert_eq!(ids(&failed), vec![id], "give up: listed with status=failed");
}

/// `Cancelled` ends the job with its reason in the log.
pub async fn cancelled_is_recorded(store: Arc<dyn NotificationStore>) {
    let id = claimed_job(store.as_ref()).await;
    store
        .finish(
            id,
            SendOutcome::Cancelled {
                reason: "alert closed".into(),
            },
            at(3),
        )
        .await
        .unwrap();
    let got = one(store.as_ref(), id).await;
    assert_eq!(got.status, JobStatus::Cancelled);
    assert_eq!(
        got.last_error.as_deref(),
        Some("alert closed"),
        "cancel: reason kept"
    );
    assert_eq!(got.finished_at, Some(at(3)));
    assert_nothing_due(store.as_ref(), "n1", 10_000, "cancel: never claimed again").await;
}

/// `finish` of an unknown id is `NotFound`.
pub async fn finish_unknown_not_found(store: Arc<dyn NotificationStore>) {
    let r = store.finish(Uuid::new_v4(), SendOutcome::Sent, at(0)).await;
    assert!(
        matches!(r, Err(crate::Error::NotFound { .. })),
        "finish: unknown id gives NotFound, got {r:?}"
    );
}

/// `notifications` filters by alert, check and status, lists newest first
/// and honours `limit`.
pub async fn list_filters_newest_first(store: Arc<dyn NotificationStore>) {
    let a1 = Uuid::new_v4();
    let a2 = Uuid::new_v4();
    let j1 = job(a1, check("a"), "ann", 0, 1);
    let j2 = job(a1, check("a"), "bob", 0, 2);
    let j3 = job(a2, check("b"), "ann", 0, 3);
    store
        .enqueue(&[j1.clone(), j2.clone(), j3.clone()])
        .await
        .unwrap();
    let all = store.notifications(&JobFilter::default()).await.unwrap();
    assert_eq!(
        ids(&all),
        ids(&[j3.clone(), j2.clone(), j1.clone()]),
        "list: newest first"
    );
    let by_alert = list(
        store.as_ref(),
        JobFilter {
            alert_id: Some(a1),
            ..JobFilter::default()
        },
    )
    .await;
    assert_eq!(
        ids(&by_alert),
        ids(&[j2.clone(), j1.clone()]),
        "list: by alert"
    );
    let by_check = list(
        store.as_ref(),
        JobFilter {
            check_id: Some(check("b")),
            ..JobFilter::default()
        },
    )
    .await;
    assert_eq!(
        ids(&by_check),
        ids(std::slice::from_ref(&j3)),
        "list: by check"
    );
    let limited = list(
        store.as_ref(),
        JobFilter {
            limit: 1,
            ..JobFilter::default()
        },
    )
    .await;
    assert_eq!(ids(&limited), ids(&[j3]), "list: limit");
    store.claim("n1", at(0), LEASE, 1).await.unwrap();
    let pending = list(store.as_ref(), with_status(JobStatus::Pending)).await;
    assert_eq!(pending.len(), 2, "list: by status (one of three claimed)");
    let none: Vec<NotificationJob> = list(
        store.as_ref(),
        JobFilter {
            alert_id: Some(Uuid::new_v4()),
            ..JobFilter::default()
        },
    )
    .await;
    assert!(none.is_empty(), "list: unknown alert lists nothing");
}
