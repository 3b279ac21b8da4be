//! Encoding of Bergamot types into rows and back.

use crate::error::{Error, Result};
use bergamot_core::aggregate::Aggregate;
use bergamot_core::model::{CheckId, Perfdata, ResultId, Status};
use bergamot_core::state::{Ack, AckInfo, CheckState, Event, OpenAlert};
use bergamot_core::store::AlertRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio_postgres::types::Json;
use tokio_postgres::Row;
use uuid::Uuid;

/// The cold fields of a [`CheckState`], stored as JSONB in `check_state.rest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rest {
    #[serde(default, skip_serializing_if = "str::is_empty")]
    long_output: Arc<str>,
    #[serde(default, skip_serializing_if = "<[Perfdata]>::is_empty")]
    perfdata: Arc<[Perfdata]>,
    last_state_change_at: Option<DateTime<Utc>>,
    last_hard_change_at: Option<DateTime<Utc>>,
    ok_history: u32,
    flap_percent: f64,
    current_alert: Option<OpenAlert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<Arc<AckInfo>>,
}

/// The `check_state` columns, in the order [`decode_state`] reads them.
pub(crate) const STATE_COLUMNS: &str = "s.check_id, s.version, s.status, s.ok, s.hard, \
     s.attempt, s.last_check_at, s.last_result_id, s.flapping, s.in_downtime, s.suppressed, \
     s.acknowledged, s.encompassed, s.output, s.rest";

/// Number of columns in [`STATE_COLUMNS`].
pub(crate) const STATE_WIDTH: usize = 15;

pub(crate) fn status_to_sql(s: Status) -> i16 {
    i16::from(s.severity())
}

pub(crate) fn status_from_sql(v: i16, table: &'static str) -> Result<Status> {
    u8::try_from(v)
        .ok()
        .and_then(Status::from_severity)
        .ok_or_else(|| Error::corrupt(table, format!("status severity {v} out of range")))
}

pub(crate) fn ack_to_sql(a: Ack) -> i16 {
    match a {
        Ack::None => 0,
        Ack::Normal => 1,
        Ack::Sticky => 2,
    }
}

fn ack_from_sql(v: i16) -> Result<Ack> {
    match v {
        0 => Ok(Ack::None),
        1 => Ok(Ack::Normal),
        2 => Ok(Ack::Sticky),
        _ => Err(Error::corrupt(
            "check_state",
            format!("acknowledged {v} out of range"),
        )),
    }
}

pub(crate) fn u64_to_sql(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::InvalidInput(format!("{what} {v} is too large")))
}

pub(crate) fn u32_to_sql(v: u32, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidInput(format!("{what} {v} is too large")))
}

fn unsigned<T: TryFrom<i64>>(v: i64, table: &'static str, col: &str) -> Result<T> {
    T::try_from(v).map_err(|_| Error::corrupt(table, format!("{col} {v} is negative")))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    table: &'static str,
) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| Error::corrupt(table, format!("column {idx}: {e}")))
}

/// Decodes [`STATE_COLUMNS`] starting at column `at`.
pub(crate) fn decode_state(row: &Row, at: usize) -> Result<(CheckId, CheckState)> {
    const T: &str = "check_state";
    let id: Uuid = get(row, at, T)?;
    let version: i64 = get(row, at + 1, T)?;
    let attempt: i32 = get(row, at + 5, T)?;
    let Json(rest): Json<Rest> = get(row, at + 14, T)?;
    let state = CheckState::builder()
        .status(status_from_sql(get(row, at + 2, T)?, T)?)
        .ok(get(row, at + 3, T)?)
        .output(get::<String>(row, at + 13, T)?)
        .long_output(rest.long_output)
        .perfdata(rest.perfdata)
        .hard(get(row, at + 4, T)?)
        .attempt(unsigned(i64::from(attempt), T, "attempt")?)
        .last_check_at(get::<Option<DateTime<Utc>>>(row, at + 6, T)?)
        .last_state_change_at(rest.last_state_change_at)
        .last_hard_change_at(rest.last_hard_change_at)
        .last_result_id(get::<Option<Uuid>>(row, at + 7, T)?.map(ResultId))
        .ok_history(rest.ok_history)
        .flap_percent(rest.flap_percent)
        .flapping(get(row, at + 8, T)?)
        .in_downtime(get(row, at + 9, T)?)
        .suppressed(get(row, at + 10, T)?)
        .acknowledged(ack_from_sql(get(row, at + 11, T)?)?)
        .ack(rest.ack)
        .encompassed(get(row, at + 12, T)?)
        .current_alert(rest.current_alert)
        .version(unsigned(version, T, "version")?)
        .build();
    Ok((CheckId(id), state))
}

/// Decodes rows of [`STATE_COLUMNS`] alone.
pub(crate) fn decode_states(rows: &[Row]) -> Result<Vec<(CheckId, CheckState)>> {
    rows.iter().map(|r| decode_state(r, 0)).collect()
}

/// The `alerts` columns, in the order [`decode_alerts`] reads them.
pub(crate) const ALERT_COLUMNS: &str = "id, check_id, opened_at, closed_at, status, worst";

/// Decodes rows of [`ALERT_COLUMNS`].
pub(crate) fn decode_alerts(rows: &[Row]) -> Result<Vec<AlertRecord>> {
    rows.iter()
        .map(|r| {
            Ok(AlertRecord {
                id: r.get(0),
                check_id: CheckId(r.get(1)),
                opened_at: r.get(2),
                closed_at: r.get(3),
                status: status_from_sql(r.get(4), "alerts")?,
                worst: status_from_sql(r.get(5), "alerts")?,
            })
        })
        .collect()
}

/// Column-wise arrays of states, for `unnest` inserts and updates.
#[derive(Default)]
pub(crate) struct StateArrays {
    check_id: Vec<Uuid>,
    version: Vec<i64>,
    status: Vec<i16>,
    ok: Vec<bool>,
    hard: Vec<bool>,
    attempt: Vec<i32>,
    last_check_at: Vec<Option<DateTime<Utc>>>,
    last_result_id: Vec<Option<Uuid>>,
    flapping: Vec<bool>,
    in_downtime: Vec<bool>,
    suppressed: Vec<bool>,
    acknowledged: Vec<i16>,
    encompassed: Vec<bool>,
    output: Vec<String>,
    rest: Vec<serde_json::Value>,
}

impl StateArrays {
    pub(crate) fn push(&mut self, id: CheckId, s: &CheckState) -> Result<()> {
        let rest = Rest {
            long_output: s.long_output.clone(),
            perfdata: s.perfdata.clone(),
            last_state_change_at: s.last_state_change_at,
            last_hard_change_at: s.last_hard_change_at,
            ok_history: s.ok_history,
            flap_percent: s.flap_percent,
            current_alert: s.current_alert,
            ack: s.ack.clone(),
        };
        let rest = serde_json::to_value(&rest)
            .map_err(|e| Error::InvalidInput(format!("state of check {id}: {e}")))?;
        self.check_id.push(id.0);
        self.version.push(u64_to_sql(s.version, "state version")?);
        self.status.push(status_to_sql(s.status));
        self.ok.push(s.ok);
        self.hard.push(s.hard);
        self.attempt.push(u32_to_sql(s.attempt, "attempt")?);
        self.last_check_at.push(s.last_check_at);
        self.last_result_id.push(s.last_result_id.map(|r| r.0));
        self.flapping.push(s.flapping);
        self.in_downtime.push(s.in_downtime);
        self.suppressed.push(s.suppressed);
        self.acknowledged.push(ack_to_sql(s.acknowledged));
        self.encompassed.push(s.encompassed);
        self.output.push(s.output.to_string());
        self.rest.push(rest);
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.check_id.len()
    }

    pub(crate) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 15] {
        [
            &self.check_id,
            &self.version,
            &self.status,
            &self.ok,
            &self.hard,
            &self.attempt,
            &self.last_check_at,
            &self.last_result_id,
            &self.flapping,
            &self.in_downtime,
            &self.suppressed,
            &self.acknowledged,
            &self.encompassed,
            &self.output,
            &self.rest,
        ]
    }
}

/// The `unnest(...)` of [`StateArrays::params`] at `$1..$15`, aliased `u`.
pub(crate) const STATE_UNNEST: &str = "unnest($1::uuid[], $2::int8[], $3::int2[], $4::bool[], \
     $5::bool[], $6::int4[], $7::timestamptz[], $8::uuid[], $9::bool[], $10::bool[], \
     $11::bool[], $12::int2[], $13::bool[], $14::text[], $15::jsonb[]) AS u(check_id, version, \
     status, ok, hard, attempt, last_check_at, last_result_id, flapping, in_downtime, \
     suppressed, acknowledged, encompassed, output, rest)";

pub(crate) fn events_to_json(events: &[Event]) -> Result<serde_json::Value> {
    serde_json::to_value(events).map_err(|e| Error::InvalidInput(format!("events: {e}")))
}

/// Decodes the aggregate columns starting at `at`: worst, total, 10 counts,
/// suppressed, in downtime, acknowledged, encompassed.
pub(crate) fn decode_aggregate(row: &Row, at: usize, table: &'static str) -> Result<Aggregate> {
    let n = |i: usize| -> Result<u32> {
        let v: i64 = get(row, at + i, table)?;
        unsigned(v, table, "count")
    };
    let worst: i32 = get(row, at, table)?;
    let status = status_from_sql(
        i16::try_from(worst).map_err(|_| Error::corrupt(table, "worst out of range"))?,
        table,
    )?;
    let mut counts = [0u32; 10];
    for (k, c) in counts.iter_mut().enumerate() {
        *c = n(2 + k)?;
    }
    Ok(Aggregate {
        status,
        ok: status.is_ok(),
        total: n(1)?,
        counts,
        suppressed: n(12)?,
        in_downtime: n(13)?,
        acknowledged: n(14)?,
        encompassed: n(15)?,
    })
}
