//! Notifications: who is told what, when, and through which channel.
//!
//! The pieces, each replaceable:
//!
//! - the **planner** (pure: alert events + notification model + now ->
//!   [`NotificationJob`]s with deterministic ids, so planning twice plans
//!   nothing new);
//! - the **job store** ([`NotificationStore`]): jobs persist there and are
//!   claimed with a lease, so several notifier nodes share the work and a job
//!   whose sender died is sent again (at least once), while a job marked sent
//!   is never claimed again (never twice in normal operation);
//! - **channels** ([`Notifier`]): one implementation per kind of channel
//!   (e-mail, webhook, Slack-compatible webhook, command, log). An embedding
//!   developer plugs in their own by implementing [`Notifier`]:
//!
//! ```
//! use bergamot_core::notify::{Notification, Notifier, SendError};
//!
//! struct Pager;
//!
//! #[async_trait::async_trait]
//! impl Notifier for Pager {
//!     async fn send(&self, n: &Notification) -> Result<(), SendError> {
//!         println!("page {}: {} is {}", n.recipient.name, n.check, n.status);
//!         Ok(())
//!     }
//! }
//! ```

mod period;
mod plan;
mod planner;
mod rules;

pub use period::{Exclusion, TimePeriod, TimePeriods, WeeklyRange, ALWAYS};
pub use planner::{PlanReport, Planner};
pub use rules::{CheckNotify, Contact, EscalationStep, NotifyModel, NotifyRule};

use crate::model::{CheckId, Status};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// An alert opened (or, repeated by `repeat_every`, is still open).
    Alert,
    /// The open alert got worse.
    Realert,
    /// The open alert closed.
    Recovery,
    /// The alert was acknowledged.
    Acknowledge,
    /// The check started flapping.
    FlappingStarted,
    /// The check stopped flapping.
    FlappingStopped,
    /// The check entered a downtime.
    DowntimeStarted,
    /// The check left a downtime.
    DowntimeEnded,
    /// A test notification sent on an admin's request.
    Test,
}

impl NotificationKind {
    /// Its name on the wire, in config `types` filters' terms
    /// (`alert`, `realert`, `recovery`, `acknowledge`, `flapping_started`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Alert => "alert",
            NotificationKind::Realert => "realert",
            NotificationKind::Recovery => "recovery",
            NotificationKind::Acknowledge => "acknowledge",
            NotificationKind::FlappingStarted => "flapping_started",
            NotificationKind::FlappingStopped => "flapping_stopped",
            NotificationKind::DowntimeStarted => "downtime_started",
            NotificationKind::DowntimeEnded => "downtime_ended",
            NotificationKind::Test => "test",
        }
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The contact a notification goes to, with the addresses channels use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The contact's name (`[[contact]] name`).
    pub name: String,
    /// E-mail address, if the contact has one.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number, if any.
    #[serde(default)]
    pub phone: Option<String>,
    /// Chat handle (e.g. a Slack member id), if any.
    #[serde(default)]
    pub chat: Option<String>,
    /// Per-contact settings for the channel this notification goes through
    /// (e.g. a personal webhook URL), from the contact's config.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// One notification, as a channel sends it: everything a message needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The job's id: the same on every retry, so a receiver can deduplicate.
    pub id: Uuid,
    /// What it tells.
    pub kind: NotificationKind,
    /// The alert it belongs to (none for a test notification).
    #[serde(default)]
    pub alert_id: Option<Uuid>,
    /// The check.
    pub check_id: CheckId,
    /// The check's readable name (`host` or `host/service`).
    pub check: String,
    /// The check's host.
    pub host: String,
    /// The check's status at the event.
    pub status: Status,
    /// The check's output at the event.
    pub output: String,
    /// When the event happened.
    pub at: DateTime<Utc>,
    /// When the alert opened (none for a test notification).
    #[serde(default)]
    pub alert_opened_at: Option<DateTime<Utc>>,
    /// 0 for the first recipients, n for the n-th escalation step.
    #[serde(default)]
    pub escalation: u32,
    /// 0 for the first notification of its kind, n for the n-th repeat.
    #[serde(default)]
    pub sequence: u32,
    /// Who acknowledged, scheduled the downtime or asked for the test.
    #[serde(default)]
    pub author: Option<String>,
    /// Their comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Who it goes to.
    pub recipient: Recipient,
    /// The name of the channel (`[[channel]] name`) it goes through.
    pub channel: String,
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    /// What went wrong, never containing a secret (password, token, signed URL).
    pub reason: String,
    /// Whether retrying cannot help (e.g. the recipient has no address for
    /// this channel, the receiver answered 4xx): the job is marked failed at once.
    pub permanent: bool,
}

impl SendError {
    /// A failure that a later retry may cure (timeout, 5xx, connection refused).
    pub fn transient(reason: impl Into<String>) -> Self {
        SendError {
            reason: reason.into(),
            permanent: false,
        }
    }

    /// A failure no retry can cure.
    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError {
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// A channel: sends one notification.
///
/// Implementations must bound the time of one send (a timeout on every
/// network call) and never put secrets into [`SendError::reason`].
/// A send may be repeated with the same [`Notification::id`] after a crash.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Sends `notification`; `Ok` once the receiver has accepted it.
    async fn send(&self, notification: &Notification) -> Result<(), SendError>;
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to be sent (at or after `not_before`).
    Pending,
    /// Claimed by a notifier node until its lease ends.
    Sending,
    /// Accepted by the receiver.
    Sent,
    /// Given up: a permanent error, or retries used up.
    Failed,
    /// No longer relevant when it came due (e.g. the alert closed before the
    /// recipient's time period opened); kept for the log.
    Cancelled,
}

impl JobStatus {
    /// Its name in the API and the database (`pending`, `sending`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Sending => "sending",
            JobStatus::Sent => "sent",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A planned notification and its delivery record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationJob {
    /// The notification (its `id` is the job's id).
    pub notification: Notification,
    /// Not to be sent before this (a recipient's time period opening, a backoff).
    pub not_before: DateTime<Utc>,
    /// Where it stands.
    pub status: JobStatus,
    /// Send attempts made so far.
    pub attempts: u32,
    /// The last error, if an attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was planned.
    pub created_at: DateTime<Utc>,
    /// When it was sent, failed or cancelled.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which jobs [`NotificationStore::notifications`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs of this alert.
    #[serde(default)]
    pub alert_id: Option<Uuid>,
    /// Only jobs of this check.
    #[serde(default)]
    pub check_id: Option<CheckId>,
    /// Only jobs in this status.
    #[serde(default)]
    pub status: Option<JobStatus>,
    /// At most this many, newest first (0: a backend default).
    #[serde(default)]
    pub limit: usize,
}

/// What one send attempt came to, as the notifier reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendOutcome {
    /// Accepted by the receiver: the job is sent.
    Sent,
    /// Failed; retry at `retry_at`, or give up when `None`.
    Failed {
        /// The error (no secrets).
        error: String,
        /// When to try again; `None` marks the job failed for good.
        retry_at: Option<DateTime<Utc>>,
    },
    /// No longer relevant when it came due (see [`JobStatus::Cancelled`]).
    Cancelled {
        /// Why, for the log.
        reason: String,
    },
}

/// One `[[channel]]` of the configuration, before its kind validates it.
///
/// The config loader keeps every key but `name` and `type` in `settings`;
/// the channel kind's constructor turns it into a [`Notifier`] and reports
/// a bad or missing setting with the file and line kept here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Its name, as `notify.channels` and contacts refer to it.
    pub name: String,
    /// Its kind: `email`, `webhook`, `slack`, `command`, `log`, or one an
    /// embedding developer registered.
    pub kind: String,
    /// Every other key of the table, as JSON values.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// The file the table is in (empty for configs built in code).
    #[serde(default)]
    pub file: String,
    /// The table's 1-based line (0 when unknown).
    #[serde(default)]
    pub line: usize,
}

/// Where notification jobs persist and how notifier nodes share them.
///
/// # Contract
///
/// - [`NotificationStore::enqueue`] inserts jobs whose id it does not know
///   and ignores the others (planning is idempotent); it returns how many
///   were new.
/// - [`NotificationStore::claim`] hands each pending job whose `not_before`
///   has come to at most one caller at a time: it marks it `sending` with a
///   lease until `now + lease`; a `sending` job whose lease ended (its node
///   died) can be claimed again. Jobs of one alert are claimed in
///   `not_before` order.
/// - [`NotificationStore::finish`] records an attempt: `Sent` ends the job for
///   good (never claimed again); `Failed` with a retry time makes it pending
///   at that time; without one marks it failed.
/// - Everything survives a restart of a persistent backend.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Inserts new jobs, ignoring known ids; returns how many were new.
    async fn enqueue(&self, jobs: &[NotificationJob]) -> crate::Result<usize>;

    /// Claims up to `limit` due jobs for `node` until `now + lease`.
    async fn claim(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> crate::Result<Vec<NotificationJob>>;

    /// Records the outcome of one attempt of a claimed job.
    async fn finish(&self, id: Uuid, outcome: SendOutcome, now: DateTime<Utc>)
        -> crate::Result<()>;

    /// Lists jobs, newest first.
    async fn notifications(&self, filter: &JobFilter) -> crate::Result<Vec<NotificationJob>>;
}

mod dispatch;
mod memory;

pub(crate) use dispatch::is_finished;
pub use dispatch::{
    Backoff, ChannelMap, Dispatcher, DispatcherConfig, DispatcherHandle, Outcome, Relevance,
    StoreRelevance,
};
pub use memory::{InMemoryNotificationStore, DEFAULT_FINISHED_CAP, DEFAULT_LIST_LIMIT};

pub mod channel;
pub use channel::{ChannelConstructor, Channels, Settings};
