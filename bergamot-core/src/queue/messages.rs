use crate::aggregate::Aggregate;
use crate::model::{CheckId, CheckResult, GroupId, LocationId, Status};
use crate::state::{CheckState, Event};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Run this check now, on a worker of `pool` serving `engine`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteCheck {
    /// Id of this execution request.
    pub id: Uuid,
    /// The check to run.
    pub check_id: CheckId,
    /// The site the check belongs to (part of the routing key).
    pub site: String,
    /// The worker pool.
    pub pool: String,
    /// The executor engine.
    pub engine: String,
    /// Engine parameters (already substituted).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// How long the execution may take.
    #[serde(with = "crate::model::secs_serde")]
    pub timeout: Duration,
    /// How long the request may wait for a worker before it is a dead check
    /// (the check's current interval; 30 s for execute-now).
    #[serde(with = "crate::model::secs_serde")]
    pub ttl: Duration,
    /// When the scheduler sent it.
    pub scheduled_at: DateTime<Utc>,
    /// Whether a person asked for it (execute-now).
    #[serde(default)]
    pub execute_now: bool,
}

/// Why an execute came back unexecuted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeadReason {
    /// No worker took it before its TTL.
    Expired,
    /// No worker pool or engine serves it.
    Unroutable,
    /// A worker rejected it (e.g. it could not decode it).
    Rejected {
        /// Why.
        reason: String,
    },
}

/// An execute that was not executed; the processor turns it into a TIMEOUT or
/// ERROR result so a dead worker fleet alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadCheck {
    /// The execute request.
    pub execute: ExecuteCheck,
    /// Why it came back.
    pub reason: DeadReason,
    /// When it was found dead.
    pub at: DateTime<Utc>,
}

impl DeadCheck {
    /// The result the processor applies for this dead check: TIMEOUT with
    /// "no worker took the check in time" for an expired execute, ERROR naming
    /// the pool and engine for an unroutable one.
    pub fn to_result(&self) -> CheckResult {
        let (status, output) = match &self.reason {
            DeadReason::Expired => (
                Status::Timeout,
                format!(
                    "no worker took the check in time (pool {:?}, engine {:?}, ttl {:?})",
                    self.execute.pool, self.execute.engine, self.execute.ttl
                ),
            ),
            DeadReason::Unroutable => (
                Status::Error,
                format!(
                    "no worker pool serves engine {:?} in pool {:?}",
                    self.execute.engine, self.execute.pool
                ),
            ),
            DeadReason::Rejected { reason } => (
                Status::Error,
                format!("a worker rejected the check: {reason}"),
            ),
        };
        // The result id is derived from the execute id so that a redelivered
        // dead check is applied once.
        let mut r = CheckResult::new(self.execute.check_id, status, output, self.at);
        r.id = crate::model::ResultId(Uuid::new_v5(&self.execute.id, b"dead"));
        r
    }
}

/// A check's new state, published after every applied change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckUpdate {
    /// The check.
    pub check_id: CheckId,
    /// Its state (carries `version`).
    pub state: CheckState,
    /// Events of the change.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A group's new aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupUpdate {
    /// The group.
    pub group_id: GroupId,
    /// Its aggregate.
    pub aggregate: Aggregate,
    /// When it was computed; clients keep the newest.
    pub at: DateTime<Utc>,
}

/// A location's new aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationUpdate {
    /// The location.
    pub location_id: LocationId,
    /// Its aggregate.
    pub aggregate: Aggregate,
    /// When it was computed.
    pub at: DateTime<Utc>,
}

/// An alert opened, re-alerted or recovered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertUpdate {
    /// The check.
    pub check_id: CheckId,
    /// The alert's id.
    pub alert_id: Uuid,
    /// `alert`, `realert` or `recovery` (flapping events too).
    pub event: Event,
    /// The check's status at the event.
    pub status: Status,
    /// The check's output at the event.
    pub output: Arc<str>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Something changed: fanned out to every subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// A check changed.
    Check(CheckUpdate),
    /// A group's aggregate changed.
    Group(GroupUpdate),
    /// A location's aggregate changed.
    Location(LocationUpdate),
    /// An alert event.
    Alert(AlertUpdate),
    /// A scheduler or worker node is alive (sent every few seconds, so web
    /// nodes can say on `/healthz` when none has been seen).
    Heartbeat(Heartbeat),
}

/// A node's sign of life on the update fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The role that is alive: `scheduler` or `worker`.
    pub role: String,
    /// Which node (process) sends it.
    pub node: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// Orders for the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchedulerControl {
    /// Run the check next at this interval from now (the state's interval changed).
    Reschedule {
        /// The check.
        check_id: CheckId,
        /// The new interval.
        #[serde(with = "crate::model::secs_serde")]
        interval: Duration,
    },
    /// Run the check now.
    ExecuteNow {
        /// The check.
        check_id: CheckId,
    },
    /// Start scheduling the check.
    Enable {
        /// The check.
        check_id: CheckId,
    },
    /// Stop scheduling the check.
    Disable {
        /// The check.
        check_id: CheckId,
    },
}

/// Every message, as it travels on the wire: serde JSON with a `type` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Run a check.
    ExecuteCheck(ExecuteCheck),
    /// A check's result.
    CheckResult(CheckResult),
    /// An execute that was not executed.
    DeadCheck(DeadCheck),
    /// A state change for subscribers.
    Update(Update),
    /// An order for the scheduler.
    SchedulerControl(SchedulerControl),
}

impl Message {
    /// Encodes to JSON bytes.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| crate::Error::InvalidInput(format!("cannot encode message: {e}")))
    }

    /// Decodes JSON bytes, naming what was wrong.
    pub fn decode(bytes: &[u8]) -> crate::Result<Message> {
        serde_json::from_slice(bytes).map_err(|e| crate::Error::Decode(e.to_string()))
    }
}
