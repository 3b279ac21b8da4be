//! The check state and the pure transition functions of DESIGN.md
//! "State machine". Nothing here does I/O; time is always an argument.

mod flap;
mod machine;

pub use machine::{
    acknowledge, acknowledge_by, initial_state, next_interval, remove_acknowledgement, reset_clock,
    set_downtime, set_suppressed, transition, transition_in_place, FLAP_HISTORY_LEN,
};

pub(crate) use crate::backend::Decision;
use crate::model::{Perfdata, ResultId, Status};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Acknowledgement of a not-ok check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// Not acknowledged.
    #[default]
    None,
    /// Cleared on any status change.
    Normal,
    /// Cleared only on recovery.
    Sticky,
}

/// Who acknowledged a problem, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckInfo {
    /// The user or token name that acknowledged.
    pub author: String,
    /// The operator's comment.
    pub comment: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An open alert: the check is hard not-ok and notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlert {
    /// The alert's id (also the id of its alert record).
    pub id: Uuid,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
}

/// The state of one dependency, as the transition needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyState {
    /// Whether the dependency's state is hard.
    pub hard: bool,
    /// Whether the dependency is ok.
    pub ok: bool,
}

/// Everything Bergamot knows about one check between results.
///
/// Made by [`initial_state`] and the transition functions, or (for a
/// backend reading saved states, or a test) with [`CheckState::builder`];
/// the fields stay public to read and to change.
///
/// ```
/// use bergamot_core::model::Status;
/// use bergamot_core::state::CheckState;
///
/// let state = CheckState::builder().status(Status::Critical).ok(false).attempt(1).build();
/// assert!(state.hard && !state.ok);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckState {
    /// Current status.
    pub status: Status,
    /// Whether `status` is ok.
    pub ok: bool,
    /// Output of the last applied result.
    pub output: Arc<str>,
    /// Long output of the last applied result.
    #[serde(default)]
    pub long_output: Arc<str>,
    /// Perfdata of the last applied result.
    #[serde(default)]
    pub perfdata: Arc<[Perfdata]>,
    /// Whether the state is hard (confirmed) or soft.
    pub hard: bool,
    /// Consecutive results of the current ok-ness (stays at the threshold once hard).
    pub attempt: u32,
    /// `executed_at` of the last applied result.
    pub last_check_at: Option<DateTime<Utc>>,
    /// When the status last changed.
    pub last_state_change_at: Option<DateTime<Utc>>,
    /// When the hard state last changed.
    pub last_hard_change_at: Option<DateTime<Utc>>,
    /// Id of the last applied result: with `last_check_at` the position in
    /// `(executed_at, id)` order a new result must come after.
    pub last_result_id: Option<ResultId>,
    /// Ok-ness of the last [`FLAP_HISTORY_LEN`] applied results: bit 0 is the
    /// newest, a set bit is ok. Initially all ok.
    pub ok_history: u32,
    /// Flapping percent over `ok_history`, with the Nagios weights.
    pub flap_percent: f64,
    /// Whether the check is flapping.
    pub flapping: bool,
    /// Whether the check is in a downtime now.
    pub in_downtime: bool,
    /// Whether notifications of the check are suppressed.
    pub suppressed: bool,
    /// Acknowledgement.
    pub acknowledged: Ack,
    /// Who acknowledged, when and why; set while `acknowledged` is not
    /// `none` (absent in states saved before it existed).
    #[serde(default)]
    pub ack: Option<Arc<AckInfo>>,
    /// All dependencies are hard and one is not ok: the dependency's alert covers this check.
    pub encompassed: bool,
    /// The open alert, if any.
    pub current_alert: Option<OpenAlert>,
    /// +1 on every saved change; clients drop updates older than what they have.
    pub version: u64,
}

impl CheckState {
    /// A [`CheckStateBuilder`] starting from the [`initial_state`] of the
    /// default [`Policy`](crate::model::Policy).
    pub fn builder() -> CheckStateBuilder {
        CheckStateBuilder {
            state: initial_state(&crate::model::Policy::default()),
        }
    }

    /// Whether the check is ignored in aggregates (suppressed, in downtime,
    /// acknowledged or encompassed): it then counts as PENDING and ok.
    pub fn is_ignored(&self) -> bool {
        self.suppressed || self.in_downtime || self.acknowledged != Ack::None || self.encompassed
    }
}

/// Builds a [`CheckState`]: [`CheckState::builder`], a setter per field to
/// change, then [`build`](CheckStateBuilder::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct CheckStateBuilder {
    state: CheckState,
}

impl CheckStateBuilder {
    crate::builder::setters!(state;
        /// Sets [`CheckState::status`].
        status: Status,
        /// Sets [`CheckState::ok`].
        ok: bool,
        /// Sets [`CheckState::output`].
        output: into Arc<str>,
        /// Sets [`CheckState::long_output`].
        long_output: into Arc<str>,
        /// Sets [`CheckState::perfdata`].
        perfdata: into Arc<[Perfdata]>,
        /// Sets [`CheckState::hard`].
        hard: bool,
        /// Sets [`CheckState::attempt`].
        attempt: u32,
        /// Sets [`CheckState::last_check_at`].
        last_check_at: into Option<DateTime<Utc>>,
        /// Sets [`CheckState::last_state_change_at`].
        last_state_change_at: into Option<DateTime<Utc>>,
        /// Sets [`CheckState::last_hard_change_at`].
        last_hard_change_at: into Option<DateTime<Utc>>,
        /// Sets [`CheckState::last_result_id`].
        last_result_id: into Option<ResultId>,
        /// Sets [`CheckState::ok_history`].
        ok_history: u32,
        /// Sets [`CheckState::flap_percent`].
        flap_percent: f64,
        /// Sets [`CheckState::flapping`].
        flapping: bool,
        /// Sets [`CheckState::in_downtime`].
        in_downtime: bool,
        /// Sets [`CheckState::suppressed`].
        suppressed: bool,
        /// Sets [`CheckState::acknowledged`].
        acknowledged: Ack,
        /// Sets [`CheckState::ack`].
        ack: into Option<Arc<AckInfo>>,
        /// Sets [`CheckState::encompassed`].
        encompassed: bool,
        /// Sets [`CheckState::current_alert`].
        current_alert: into Option<OpenAlert>,
        /// Sets [`CheckState::version`].
        version: u64,
    );

    /// The state.
    pub fn build(self) -> CheckState {
        self.state
    }
}

/// A notification-worthy event of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An alert opened.
    Alert,
    /// The open alert closed.
    Recovery,
    /// Hard not-ok got worse while alerting.
    Realert,
    /// Flapping started.
    FlappingStarted,
    /// Flapping stopped.
    FlappingStopped,
}

/// What happened to an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The input was applied; `state.version` went up by one.
    Applied,
    /// A result older than the last applied one: ignored.
    Stale,
    /// The last applied result again: ignored.
    Duplicate,
    /// Not allowed now (e.g. acknowledging an ok check): no change.
    Refused,
    /// Allowed but nothing changed (e.g. downtime on while already in downtime).
    Unchanged,
}

/// The decision of a pure transition function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// What happened.
    pub outcome: Outcome,
    /// The state after (equal to the state before unless applied).
    pub state: CheckState,
    /// Events, in order.
    pub events: Vec<Event>,
    /// The interval to schedule the next execution at.
    #[serde(with = "crate::model::secs_serde")]
    pub next_interval: Duration,
    /// Whether `next_interval` differs from the interval of the state
    /// before (the scheduler must be told).
    #[serde(default)]
    pub interval_changed: bool,
    /// Whether the check's [`Contribution`](crate::backend::Contribution)
    /// to group and location aggregates differs from before: when false, no
    /// aggregate can have changed and none needs recomputing.
    #[serde(default)]
    pub contribution_changed: bool,
    /// The id of the alert this transition closed (with its
    /// [`Event::Recovery`]), so that the recovery can name it without
    /// reading the alert records back.
    #[serde(default)]
    pub closed_alert: Option<Uuid>,
}

impl Transition {
    /// Whether the state changed (and must be saved and published).
    pub fn is_applied(&self) -> bool {
        self.outcome == Outcome::Applied
    }
}
