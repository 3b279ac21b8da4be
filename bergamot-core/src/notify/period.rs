//! Time periods: weekly ranges in a time zone, with exclusions.
//!
//! Pure: [`TimePeriods::contains`] and [`TimePeriods::next_open`] take the
//! instant as an argument. Ranges are local wall-clock times of the period's
//! zone, so `mon-fri 09:00-17:30` in `Europe/Berlin` is 09:00 Berlin time on
//! both sides of a DST change. A local time that does not exist (the hour
//! skipped when clocks go forward) starts at the first instant after the gap;
//! a local time that exists twice (clocks go back) is its earlier instant.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The name of the built-in period that always contains every instant.
pub const ALWAYS: &str = "always";

/// How far [`TimePeriods::next_open`] looks ahead before giving up.
const HORIZON_DAYS: i64 = 800;

/// One weekly range: on these weekdays, from `start` (inclusive) to `end`
/// (exclusive; `None` means midnight at the end of the day), local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyRange {
    /// Days of the week, Monday = 0 .. Sunday = 6.
    pub days: Vec<u8>,
    /// Start, local time.
    pub start: NaiveTime,
    /// End, local time; `None` is 24:00.
    pub end: Option<NaiveTime>,
}

impl WeeklyRange {
    /// Parses `mon-fri 09:00-17:30`, `sat 10:00-14:00`, `mon,wed,fri 08:00-24:00`
    /// or a day spec alone (`sun`, the whole day).
    pub fn parse(text: &str) -> Result<WeeklyRange, String> {
        let bad = |why: &str| {
            format!("bad range {text:?}: {why} (expected e.g. \"mon-fri 09:00-17:30\" or \"sat 10:00-14:00\")")
        };
        let mut parts = text.split_whitespace();
        let days_spec = parts.next().ok_or_else(|| bad("empty"))?;
        let times = parts.next();
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        let mut days = Vec::new();
        for item in days_spec.split(',') {
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a, b),
                None => (item, item),
            };
            let a = day(a).ok_or_else(|| bad(&format!("unknown day {a:?}")))?;
            let b = day(b).ok_or_else(|| bad(&format!("unknown day {b:?}")))?;
            // A range may wrap around the week end (`sat-mon`).
            let mut d = a;
            loop {
                if !days.contains(&d) {
                    days.push(d);
                }
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        days.sort_unstable();
        let (start, end) = match times {
            None => (NaiveTime::MIN, None),
            Some(t) => {
                let (s, e) = t
                    .split_once('-')
                    .ok_or_else(|| bad("times are start-end"))?;
                let start = NaiveTime::parse_from_str(s, "%H:%M")
                    .map_err(|_| bad(&format!("bad time {s:?}")))?;
                let end = if e == "24:00" {
                    None
                } else {
                    Some(
                        NaiveTime::parse_from_str(e, "%H:%M")
                            .map_err(|_| bad(&format!("bad time {e:?}")))?,
                    )
                };
                if end.is_some_and(|end| end <= start) {
                    return Err(bad(
                        "the end must be after the start (write two ranges to cross midnight)",
                    ));
                }
                (start, end)
            }
        };
        Ok(WeeklyRange { days, start, end })
    }

    fn contains(&self, local: NaiveDateTime) -> bool {
        let wd = local.weekday().num_days_from_monday() as u8;
        let t = local.time();
        self.days.contains(&wd) && t >= self.start && self.end.is_none_or(|e| t < e)
    }
}

fn day(s: &str) -> Option<u8> {
    let wd: Weekday = s.parse().ok()?;
    Some(wd.num_days_from_monday() as u8)
}

/// What a period excludes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// A whole local day (`2026-12-25`).
    Date(NaiveDate),
    /// Every instant another period contains.
    Period(String),
}

/// One `[[timeperiod]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimePeriod {
    /// Its name.
    pub name: String,
    /// Its time zone (IANA name, e.g. `Europe/Berlin`).
    pub timezone: Tz,
    /// The weekly ranges; the period contains an instant in any of them.
    pub ranges: Vec<WeeklyRange>,
    /// Excluded dates and periods.
    pub exclude: Vec<Exclusion>,
}

/// The time periods of a configuration, by name (`always` built in).
///
/// Exclusions refer to other periods by name; the config loader rejects
/// unknown names and cycles, and an unknown name found here counts as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimePeriods {
    /// The periods, by name.
    pub periods: BTreeMap<String, TimePeriod>,
}

impl TimePeriods {
    /// Whether period `name` contains `t`. `always` (and `""`) contain every
    /// instant; an unknown name contains none.
    pub fn contains(&self, name: &str, t: DateTime<Utc>) -> bool {
        self.contains_depth(name, t, 0)
    }

    fn contains_depth(&self, name: &str, t: DateTime<Utc>, depth: usize) -> bool {
        if name.is_empty() || name == ALWAYS {
            return true;
        }
        // Cycles are rejected when loading; a bound keeps a hand-built one finite.
        if depth > 32 {
            return false;
        }
        let Some(p) = self.periods.get(name) else {
            return false;
        };
        let local = t.with_timezone(&p.timezone).naive_local();
        if !p.ranges.iter().any(|r| r.contains(local)) {
            return false;
        }
        !p.exclude.iter().any(|e| match e {
            Exclusion::Date(d) => local.date() == *d,
            Exclusion::Period(other) => self.contains_depth(other, t, depth + 1),
        })
    }

    /// The first instant at or after `after` that period `name` contains,
    /// or `None` if there is none within about two years.
    pub fn next_open(&self, name: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(name, after) {
            return Some(after);
        }
        // `contains` only changes at a boundary: a range start or end or a
        // local midnight, of this period or of a period it excludes. Walk the
        // boundaries day by day, in order, and take the first inside.
        let mut zones = Vec::new();
        self.collect(name, &mut zones, 0);
        if zones.is_empty() {
            return None;
        }
        let start_day = after.date_naive() - Duration::days(1);
        for offset in 0..HORIZON_DAYS {
            let date = start_day + Duration::days(offset);
            let mut bounds: Vec<DateTime<Utc>> = Vec::new();
            for (tz, ranges) in &zones {
                bounds.push(to_utc(*tz, date.and_time(NaiveTime::MIN)));
                for r in ranges.iter() {
                    bounds.push(to_utc(*tz, date.and_time(r.start)));
                    if let Some(e) = r.end {
                        bounds.push(to_utc(*tz, date.and_time(e)));
                    }
                }
            }
            bounds.sort_unstable();
            if let Some(b) = bounds
                .into_iter()
                .find(|b| *b > after && self.contains(name, *b))
            {
                return Some(b);
            }
        }
        None
    }

    /// The first instant at or after `after` that every named period
    /// contains (a job waits for the rule's and the contact's period).
    pub fn next_open_all(&self, names: &[&str], after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after;
        for _ in 0..64 {
            let mut moved = false;
            for n in names {
                let open = self.next_open(n, t)?;
                if open != t {
                    t = open;
                    moved = true;
                }
            }
            if !moved {
                return Some(t);
            }
        }
        None
    }

    fn collect<'a>(&'a self, name: &str, out: &mut Vec<(Tz, &'a [WeeklyRange])>, depth: usize) {
        if depth > 32 {
            return;
        }
        if let Some(p) = self.periods.get(name) {
            out.push((p.timezone, &p.ranges));
            for e in &p.exclude {
                if let Exclusion::Period(other) = e {
                    self.collect(other, out, depth + 1);
                }
            }
        }
    }
}

/// A local time as an instant: the earlier of two, or the end of a DST gap.
fn to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut l = local;
    // A gap is at most a few hours; step forward a minute at a time.
    for _ in 0..(24 * 60) {
        if let Some(t) = tz.from_local_datetime(&l).earliest() {
            return t.with_timezone(&Utc);
        }
        l += Duration::minutes(1);
    }
    local.and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Asserts that `office` next opens at `want`, looking from `from`.
    fn assert_next_open(p: &TimePeriods, from: &str, want: &str) {
        assert_eq!(
            p.next_open("office", utc(from)),
            Some(utc(want)),
            "from {from}"
        );
    }

    /// Period `office` in zone `tz` with `ranges` and `exclude`.
    fn periods(tz: &str, ranges: &[&str], exclude: Vec<Exclusion>) -> TimePeriods {
        let mut p = TimePeriods::default();
        add(&mut p, "office", tz, ranges);
        if let Some(o) = p.periods.get_mut("office") {
            o.exclude = exclude;
        }
        p
    }

    /// Adds period `name` in zone `tz` with `ranges`, excluding nothing.
    fn add(p: &mut TimePeriods, name: &str, tz: &str, ranges: &[&str]) {
        let period = TimePeriod {
            name: name.into(),
            timezone: tz.parse().unwrap(),
            ranges: ranges
                .iter()
                .map(|r| WeeklyRange::parse(r).unwrap())
                .collect(),
            exclude: vec![],
        };
        p.periods.insert(name.into(), period);
    }

    #[test]
    fn parses_ranges() {
        let r = WeeklyRange::parse("mon-fri 09:00-17:30").unwrap();
        assert_eq!(r.days, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.start, NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        assert_eq!(r.end, NaiveTime::from_hms_opt(17, 30, 0));
        assert_eq!(
            WeeklyRange::parse("sat-mon 00:00-24:00").unwrap().days,
            vec![0, 5, 6]
        );
        assert_eq!(WeeklyRange::parse("sun").unwrap().end, None);
        assert_eq!(
            WeeklyRange::parse("mon,wed 08:00-12:00").unwrap().days,
            vec![0, 2]
        );
        for bad in [
            "",
            "funday 09:00-10:00",
            "mon 10:00-09:00",
            "mon 9-10",
            "mon 09:00",
            "mon 09:00-10:00 x",
            "mon 25:00-26:00",
        ] {
            assert!(
                WeeklyRange::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn always_contains_everything() {
        let p = TimePeriods::default();
        let t = utc("2026-12-03T02:00:00Z");
        assert!(p.contains(ALWAYS, t));
        assert_eq!(p.next_open(ALWAYS, t), Some(t));
        assert!(!p.contains("nope", t));
        assert_eq!(p.next_open("nope", t), None);
    }

    #[test]
    fn office_hours_in_a_zone() {
        let p = periods("Europe/Berlin", &["mon-fri 09:00-17:30"], vec![]);
        // Thursday 2026-12-03, 02:00 UTC = 03:00 Berlin (CET, +1): closed.
        assert!(!p.contains("office", utc("2026-12-03T02:00:00Z")));
        assert_next_open(&p, "2026-12-03T02:00:00Z", "2026-12-03T08:00:00Z");
        assert!(p.contains("office", utc("2026-12-03T08:00:00Z")));
        assert!(p.contains("office", utc("2026-12-03T16:29:59Z")));
        assert!(!p.contains("office", utc("2026-12-03T16:30:00Z")));
        // Friday evening: next Monday 09:00 Berlin.
        assert_next_open(&p, "2026-12-04T17:00:00Z", "2026-12-07T08:00:00Z");
    }

    #[test]
    fn dst_changes_keep_local_times() {
        let p = periods("Europe/Berlin", &["mon-sun 09:00-17:00"], vec![]);
        // Before the change on 2026-03-29 Berlin is +1, after it +2.
        assert_next_open(&p, "2026-03-28T17:00:00Z", "2026-03-29T07:00:00Z");
        assert_next_open(&p, "2026-03-27T17:00:00Z", "2026-03-28T08:00:00Z");
        // A range starting in the skipped hour starts when the gap ends.
        let gap = periods("Europe/Berlin", &["sun 02:30-04:00"], vec![]);
        assert_next_open(&gap, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z");
        // New York falls back on 2026-11-01: 01:30 exists twice, the earlier counts.
        let ny = periods("America/New_York", &["sun 01:30-03:00"], vec![]);
        assert_next_open(&ny, "2026-10-31T12:00:00Z", "2026-11-01T05:30:00Z");
        assert!(
            ny.contains("office", utc("2026-11-01T06:45:00Z")),
            "01:45 EST is still inside"
        );
    }

    #[test]
    fn exclusions() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let mut p = periods("UTC", &["mon-fri 09:00-17:00"], vec![Exclusion::Date(date)]);
        assert!(!p.contains("office", utc("2026-12-03T10:00:00Z")));
        assert_next_open(&p, "2026-12-03T10:00:00Z", "2026-12-04T09:00:00Z");
        // Excluding a lunch period: open again when lunch ends.
        add(&mut p, "lunch", "UTC", &["mon-sun 12:00-13:00"]);
        if let Some(o) = p.periods.get_mut("office") {
            o.exclude = vec![Exclusion::Period("lunch".into())];
        }
        assert!(!p.contains("office", utc("2026-12-03T12:30:00Z")));
        assert_next_open(&p, "2026-12-03T12:30:00Z", "2026-12-03T13:00:00Z");
    }

    #[test]
    fn next_open_of_several_periods() {
        let mut p = periods("UTC", &["mon-fri 09:00-17:00"], vec![]);
        add(&mut p, "late", "UTC", &["mon-sun 16:00-20:00"]);
        assert_eq!(
            p.next_open_all(&["office", "late"], utc("2026-12-03T02:00:00Z")),
            Some(utc("2026-12-03T16:00:00Z"))
        );
        assert_eq!(
            p.next_open_all(&["office", ALWAYS], utc("2026-12-03T02:00:00Z")),
            Some(utc("2026-12-03T09:00:00Z"))
        );
    }
}
