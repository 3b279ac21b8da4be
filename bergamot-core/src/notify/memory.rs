//! [`InMemoryNotificationStore`]: the [`NotificationStore`] contract held in
//! process memory (embedded daemon, tests, the demo).

use super::{is_finished, JobFilter, JobStatus, NotificationJob, NotificationStore, SendOutcome};
use crate::error::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::HashMap;
use uuid::Uuid;

/// Finished jobs (sent, failed, cancelled) kept by default; the oldest
/// finished ones are dropped beyond it. Pending and sending jobs are never dropped.
pub const DEFAULT_FINISHED_CAP: usize = 10_000;

/// How many jobs [`NotificationStore::notifications`] lists when the filter
/// says `limit = 0`.
pub const DEFAULT_LIST_LIMIT: usize = 500;

#[derive(Debug, Clone)]
struct Entry {
    job: NotificationJob,
    /// While `sending`: when the claim ends.
    lease_until: Option<DateTime<Utc>>,
    /// Insertion order, the tie-break of "newest first".
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<Uuid, Entry>,
    next_seq: u64,
    finished: usize,
}

/// A [`NotificationStore`] in memory: nothing survives the process.
///
/// One mutex, never held across an `.await`. Memory is bounded by
/// [`DEFAULT_FINISHED_CAP`] finished jobs plus the unfinished ones.
#[derive(Debug)]
pub struct InMemoryNotificationStore {
    inner: Mutex<Inner>,
    finished_cap: usize,
}

impl Default for InMemoryNotificationStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryNotificationStore {
    /// An empty store keeping [`DEFAULT_FINISHED_CAP`] finished jobs.
    pub fn new() -> Self {
        Self::with_finished_cap(DEFAULT_FINISHED_CAP)
    }

    /// An empty store keeping at most `cap` finished jobs (at least 1).
    pub fn with_finished_cap(cap: usize) -> Self {
        InMemoryNotificationStore {
            inner: Mutex::new(Inner::default()),
            finished_cap: cap.max(1),
        }
    }
}

impl Inner {
    fn prune(&mut self, cap: usize) {
        if self.finished <= cap {
            return;
        }
        let mut finished: Vec<(u64, Uuid)> = self
            .jobs
            .iter()
            .filter(|(_, e)| is_finished(e.job.status))
            .map(|(id, e)| (e.seq, *id))
            .collect();
        finished.sort_unstable();
        let excess = self.finished - cap;
        for (_, id) in finished.into_iter().take(excess) {
            self.jobs.remove(&id);
        }
        self.finished = cap;
    }
}

#[async_trait]
impl NotificationStore for InMemoryNotificationStore {
    async fn enqueue(&self, jobs: &[NotificationJob]) -> Result<usize> {
        let mut inner = self.inner.lock();
        let mut new = 0;
        for job in jobs {
            let id = job.notification.id;
            if inner.jobs.contains_key(&id) {
                continue;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            if is_finished(job.status) {
                inner.finished += 1;
            }
            inner.jobs.insert(
                id,
                Entry {
                    job: job.clone(),
                    lease_until: None,
                    seq,
                },
            );
            new += 1;
        }
        inner.prune(self.finished_cap);
        Ok(new)
    }

    async fn claim(
        &self,
        _node: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<NotificationJob>> {
        let lease = chrono::Duration::from_std(lease)
            .map_err(|e| Error::InvalidInput(format!("lease {lease:?}: {e}")))?;
        let mut inner = self.inner.lock();
        let mut due: Vec<(DateTime<Utc>, u64, Uuid)> = inner
            .jobs
            .iter()
            .filter(|(_, e)| match e.job.status {
                JobStatus::Pending => e.job.not_before <= now,
                JobStatus::Sending => e.lease_until.is_some_and(|l| l <= now),
                _ => false,
            })
            .map(|(id, e)| (e.job.not_before, e.seq, *id))
            .collect();
        due.sort_unstable();
        let mut out = Vec::with_capacity(limit.min(due.len()));
        for (_, _, id) in due.into_iter().take(limit) {
            if let Some(e) = inner.jobs.get_mut(&id) {
                e.job.status = JobStatus::Sending;
                e.job.attempts += 1;
                e.lease_until = Some(now + lease);
                out.push(e.job.clone());
            }
        }
        Ok(out)
    }

    async fn finish(&self, id: Uuid, outcome: SendOutcome, now: DateTime<Utc>) -> Result<()> {
        let mut inner = self.inner.lock();
        let Some(e) = inner.jobs.get_mut(&id) else {
            return Err(Error::not_found("notification job", id));
        };
        if is_finished(e.job.status) {
            // A late report of a node whose lease ended: the job's end stands.
            return Ok(());
        }
        e.lease_until = None;
        let finished = match outcome {
            SendOutcome::Sent => {
                e.job.status = JobStatus::Sent;
                e.job.finished_at = Some(now);
                true
            }
            SendOutcome::Failed {
                error,
                retry_at: Some(at),
            } => {
                e.job.status = JobStatus::Pending;
                e.job.not_before = at;
                e.job.last_error = Some(error);
                false
            }
            SendOutcome::Failed {
                error,
                retry_at: None,
            } => {
                e.job.status = JobStatus::Failed;
                e.job.last_error = Some(error);
                e.job.finished_at = Some(now);
                true
            }
            SendOutcome::Cancelled { reason } => {
                e.job.status = JobStatus::Cancelled;
                e.job.last_error = Some(reason);
                e.job.finished_at = Some(now);
                true
            }
        };
        if finished {
            inner.finished += 1;
            inner.prune(self.finished_cap);
        }
        Ok(())
    }

    async fn notifications(&self, filter: &JobFilter) -> Result<Vec<NotificationJob>> {
        let inner = self.inner.lock();
        let mut hits: Vec<&Entry> = inner
            .jobs
            .values()
            .filter(|e| {
                let n = &e.job.notification;
                filter.alert_id.is_none_or(|a| n.alert_id == Some(a))
                    && filter.check_id.is_none_or(|c| n.check_id == c)
                    && filter.status.is_none_or(|s| e.job.status == s)
            })
            .collect();
        hits.sort_unstable_by(|a, b| {
            b.job
                .created_at
                .cmp(&a.job.created_at)
                .then(b.seq.cmp(&a.seq))
        });
        let limit = if filter.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            filter.limit
        };
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|e| e.job.clone())
            .collect())
    }
}
