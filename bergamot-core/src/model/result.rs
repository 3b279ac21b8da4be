use super::{CheckId, ResultId, Status};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One performance reading parsed from plugin output
/// (`label=value[UOM];[warn];[crit];[min];[max]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Perfdata {
    /// The label, unquoted.
    pub label: String,
    /// The value; `None` when the plugin reported `U` (undetermined).
    pub value: Option<f64>,
    /// Unit of measurement (`s`, `ms`, `%`, `B`, `KB`, `c` ...), empty if none.
    pub uom: String,
    /// Warning range, as the plugin wrote it (Nagios range syntax).
    pub warn: Option<String>,
    /// Critical range, as the plugin wrote it.
    pub crit: Option<String>,
    /// Minimum possible value.
    pub min: Option<f64>,
    /// Maximum possible value.
    pub max: Option<f64>,
}

/// The result of one check execution, or a passive result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Unique per result: a redelivered result keeps its id and is applied once.
    pub id: ResultId,
    /// The check this result belongs to.
    pub check_id: CheckId,
    /// The status.
    pub status: Status,
    /// The first line of output (without perfdata). Shared, not copied:
    /// the state this result produces holds the same text.
    pub output: Arc<str>,
    /// Further lines of output (without perfdata).
    #[serde(default)]
    pub long_output: Arc<str>,
    /// Parsed performance data (shared with the state, like `output`).
    #[serde(default)]
    pub perfdata: Arc<[Perfdata]>,
    /// When the check ran; results older than the last applied one are stale.
    pub executed_at: DateTime<Utc>,
    /// How long the execution took, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

impl CheckResult {
    /// A result with a fresh id, no long output and no perfdata.
    pub fn new(
        check_id: CheckId,
        status: Status,
        output: impl Into<Arc<str>>,
        executed_at: DateTime<Utc>,
    ) -> Self {
        CheckResult {
            id: ResultId::random(),
            check_id,
            status,
            output: output.into(),
            long_output: Arc::default(),
            perfdata: Arc::default(),
            executed_at,
            duration_ms: 0,
        }
    }
}
