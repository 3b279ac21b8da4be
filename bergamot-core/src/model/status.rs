use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The status of a check.
///
/// Two numbers belong to a status. Its *code* ([`Status::severity`], 0-9 in
/// declaration order) is what the store, the counts arrays of aggregates
/// and the API's `counts` use; it never changes. Its *rank*
/// ([`Status::rank`]) is the order an operator reads (docs/decisions.md,
/// "Severity order"), and `Ord` follows it: the worst is the greatest.
/// Best to worst: PENDING, INFO, OK, WARNING, then the broken checks
/// UNKNOWN, TIMEOUT, ERROR, then ACTION, DISCONNECTED and CRITICAL, the
/// worst, as Nagios and Icinga list CRITICAL first.
///
/// `Pending`, `Info` and `Ok` are "ok"; everything worse is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum Status {
    /// No result yet (or ignored in an aggregate).
    #[default]
    Pending = 0,
    /// Informational, ok.
    Info = 1,
    /// Ok.
    Ok = 2,
    /// Warning (Nagios exit 1).
    Warning = 3,
    /// Critical (Nagios exit 2).
    Critical = 4,
    /// Unknown (Nagios exit 3).
    Unknown = 5,
    /// The check did not finish in time, or no worker took it in time.
    Timeout = 6,
    /// The check could not run (bad plugin, bad config, no worker pool).
    Error = 7,
    /// The checked object cannot be reached.
    Disconnected = 8,
    /// Someone must act.
    Action = 9,
}

/// A status name that is not one of the ten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?} (expected one of PENDING, INFO, OK, WARNING, CRITICAL, UNKNOWN, TIMEOUT, ERROR, DISCONNECTED, ACTION)")]
pub struct UnknownStatus(pub String);

impl PartialOrd for Status {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Status {
    /// By rank: `a < b` when `a` is better than `b`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl Status {
    /// Every status, best to worst (by rank).
    pub const BY_RANK: [Status; 10] = [
        Status::Pending,
        Status::Info,
        Status::Ok,
        Status::Warning,
        Status::Unknown,
        Status::Timeout,
        Status::Error,
        Status::Action,
        Status::Disconnected,
        Status::Critical,
    ];

    /// The rank, 0 (`PENDING`, the best) to 9 (`CRITICAL`, the worst): the
    /// position in [`Status::BY_RANK`].
    pub fn rank(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Info => 1,
            Status::Ok => 2,
            Status::Warning => 3,
            Status::Unknown => 4,
            Status::Timeout => 5,
            Status::Error => 6,
            Status::Action => 7,
            Status::Disconnected => 8,
            Status::Critical => 9,
        }
    }

    /// The worst of `self` and `other` (by rank).
    pub fn worst(self, other: Status) -> Status {
        self.max(other)
    }

    /// Every status, by code (the stored order).
    pub const ALL: [Status; 10] = [
        Status::Pending,
        Status::Info,
        Status::Ok,
        Status::Warning,
        Status::Critical,
        Status::Unknown,
        Status::Timeout,
        Status::Error,
        Status::Disconnected,
        Status::Action,
    ];

    /// Whether this status counts as ok (`PENDING`, `INFO`, `OK`).
    pub fn is_ok(self) -> bool {
        self <= Status::Ok
    }

    /// The status code, 0 (`PENDING`) to 9 (`ACTION`) in declaration order:
    /// what is stored and what indexes `counts`. Not the order of badness:
    /// compare statuses (or their [`Status::rank`]) for that.
    pub fn severity(self) -> u8 {
        self as u8
    }

    /// The status of a given code ([`Status::severity`]).
    pub fn from_severity(severity: u8) -> Option<Status> {
        Status::ALL.get(usize::from(severity)).copied()
    }

    /// The upper-case name (`"OK"`, `"CRITICAL"` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Info => "INFO",
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
            Status::Timeout => "TIMEOUT",
            Status::Error => "ERROR",
            Status::Disconnected => "DISCONNECTED",
            Status::Action => "ACTION",
        }
    }

    /// Maps a Nagios plugin exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN,
    /// anything else (126, 127, out of range) ERROR.
    pub fn from_nagios_exit(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::Warning,
            2 => Status::Critical,
            3 => Status::Unknown,
            _ => Status::Error,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .iter()
            .copied()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order_critical_worst_broken_checks_between_warning_and_critical() {
        // docs/decisions.md "Severity order".
        let mut sorted = Status::ALL;
        sorted.sort();
        assert_eq!(sorted, Status::BY_RANK);
        for (i, s) in Status::BY_RANK.iter().enumerate() {
            assert_eq!(usize::from(s.rank()), i);
        }
        assert_eq!(Status::ALL.iter().max(), Some(&Status::Critical));
        for broken in [Status::Unknown, Status::Timeout, Status::Error] {
            assert!(
                broken < Status::Critical && broken > Status::Warning,
                "{broken}"
            );
        }
        assert!(Status::Disconnected < Status::Critical);
        assert_eq!(Status::Error.worst(Status::Critical), Status::Critical);
        // The shared vectors: WARNING -> UNKNOWN is worse (a re-alert).
        assert!(Status::Unknown > Status::Warning);
    }

    #[test]
    fn order_and_okness() {
        assert!(Status::Critical > Status::Action);
        assert!(Status::Ok.is_ok() && Status::Info.is_ok() && Status::Pending.is_ok());
        assert!(!Status::Warning.is_ok());
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.severity()), i);
            assert_eq!(Status::from_severity(s.severity()), Some(*s));
            assert_eq!(s.as_str().parse::<Status>(), Ok(*s));
        }
        assert!("nope".parse::<Status>().is_err());
    }

    #[test]
    fn nagios_exit_codes() {
        assert_eq!(Status::from_nagios_exit(0), Status::Ok);
        assert_eq!(Status::from_nagios_exit(1), Status::Warning);
        assert_eq!(Status::from_nagios_exit(2), Status::Critical);
        assert_eq!(Status::from_nagios_exit(3), Status::Unknown);
        assert_eq!(Status::from_nagios_exit(4), Status::Error);
        assert_eq!(Status::from_nagios_exit(127), Status::Error);
        assert_eq!(Status::from_nagios_exit(-1), Status::Error);
    }
}
