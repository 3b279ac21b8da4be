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
    /// When the check ran; results at or before the last applied one in
    /// `(executed_at, id)` order are stale.
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
            id: ResultId::now(),
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

/// Bytes of output, and of long output, a result keeps by default
/// ([`ResultLimits`]).
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// How far ahead of the receiving node's clock a result's `executed_at`
/// may be by default ([`ResultLimits`]).
pub const DEFAULT_MAX_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// Limits every path applies to a result before it is stored: the worker
/// (plugin output), the API (passive results) and the processor (results
/// from the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultLimits {
    /// Bytes of `output` kept; the rest is cut at a char boundary and
    /// replaced by a mark, `… [truncated N bytes]` (N: the bytes cut), the
    /// text and mark together within the limit.
    pub max_output: usize,
    /// Bytes of `long_output` kept, likewise.
    pub max_long_output: usize,
    /// How far `executed_at` may be ahead of the receiving node's clock
    /// (a result further ahead would make every later result stale).
    pub max_skew: std::time::Duration,
}

impl Default for ResultLimits {
    fn default() -> Self {
        ResultLimits {
            max_output: DEFAULT_MAX_OUTPUT,
            max_long_output: DEFAULT_MAX_OUTPUT,
            max_skew: DEFAULT_MAX_SKEW,
        }
    }
}

impl ResultLimits {
    /// The latest `executed_at` accepted when the receiving clock says `now`.
    pub fn latest_accepted(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let skew = chrono::Duration::from_std(self.max_skew).unwrap_or(chrono::Duration::MAX);
        now.checked_add_signed(skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// `text` cut to at most `max` bytes in all: a prefix ending at a char
/// boundary, then `… [truncated N bytes]` (N: the bytes cut); `None` when
/// it fits. The result fits `max`, so cutting again changes nothing.
fn truncate_text(text: &str, max: usize) -> Option<String> {
    if text.len() <= max {
        return None;
    }
    // The mark with the largest N it can carry.
    let reserve = "… [truncated  bytes]".len() + text.len().to_string().len();
    let mut end = max.saturating_sub(reserve);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    Some(format!("{}… [truncated {cut} bytes]", &text[..end]))
}

impl CheckResult {
    /// Cuts `output` and `long_output` to the limits (see [`ResultLimits`]);
    /// true when something was cut.
    pub fn cap_output(&mut self, limits: &ResultLimits) -> bool {
        let mut cut = false;
        if let Some(t) = truncate_text(&self.output, limits.max_output) {
            self.output = t.into();
            cut = true;
        }
        if let Some(t) = truncate_text(&self.long_output, limits.max_long_output) {
            self.long_output = t.into();
            cut = true;
        }
        cut
    }

    /// Why `executed_at` is refused when the receiving clock says `now`:
    /// it is more than [`ResultLimits::max_skew`] ahead.
    pub fn check_clock(
        &self,
        now: DateTime<Utc>,
        limits: &ResultLimits,
    ) -> std::result::Result<(), String> {
        if self.executed_at > limits.latest_accepted(now) {
            Err(format!(
                "executed_at {} is more than {:?} ahead of this node's clock ({})",
                self.executed_at.to_rfc3339(),
                limits.max_skew,
                now.to_rfc3339()
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries_and_says_how_much() {
        assert_eq!(truncate_text("short", 10), None);
        assert_eq!(truncate_text("abcdef", 6), None);
        let long = "a".repeat(100);
        let t = truncate_text(&long, 40).unwrap_or_default();
        assert_eq!(t, format!("{}… [truncated 85 bytes]", "a".repeat(15)));
        assert!(t.len() <= 40);
        // "é" is two bytes: a cut in its middle moves back before it.
        let t = truncate_text(&format!("{}é{}", "a".repeat(16), "b".repeat(81)), 41)
            .unwrap_or_default();
        assert_eq!(t, format!("{}… [truncated 83 bytes]", "a".repeat(16)));
        assert!(t.len() <= 41);
        assert_eq!(truncate_text(&t, 41), None, "cutting again changes nothing");
        let mut r = CheckResult::new(
            CheckId::random(),
            Status::Ok,
            "x".repeat(70_000),
            Utc::now(),
        );
        r.long_output = "y".repeat(10).into();
        assert!(r.cap_output(&ResultLimits::default()));
        assert!(r.output.len() <= DEFAULT_MAX_OUTPUT);
        assert!(r.output.starts_with(&"x".repeat(DEFAULT_MAX_OUTPUT - 30)));
        assert!(r.output.ends_with(" bytes]"));
        assert_eq!(&*r.long_output, "yyyyyyyyyy");
        assert!(!r.cap_output(&ResultLimits::default()));
    }

    #[test]
    fn results_too_far_ahead_are_refused() {
        let now = Utc::now();
        let limits = ResultLimits::default();
        let mut r = CheckResult::new(
            CheckId::random(),
            Status::Ok,
            "",
            now + chrono::Duration::seconds(299),
        );
        assert!(r.check_clock(now, &limits).is_ok());
        r.executed_at = now + chrono::Duration::seconds(301);
        assert!(r.check_clock(now, &limits).unwrap_err().contains("ahead"));
        r.executed_at = DateTime::<Utc>::MAX_UTC;
        assert!(r.check_clock(now, &limits).is_err());
    }
}
