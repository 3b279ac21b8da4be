//! Applying results and actions: lock, transition, write back in one transaction.

use super::{backoff, Locked, PostgresStore, Tx, MAX_ATTEMPTS};
use crate::error::{Error, Result};
use crate::rows::{self, status_to_sql, u32_to_sql, u64_to_sql, StateArrays, STATE_UNNEST};
use bergamot_core::model::{CheckId, CheckResult, Policy, ResultId, Status};
use bergamot_core::state::{self, CheckState, Transition};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// An alert row opened in this transaction.
struct NewAlert {
    check_id: Uuid,
    opened_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    status: i16,
    worst: i16,
}

/// A change to an alert row opened before this transaction.
#[derive(Default)]
struct AlertChange {
    closed_at: Option<DateTime<Utc>>,
    worst: i16,
}

/// Everything one transaction writes besides the states.
#[derive(Default)]
pub(super) struct Writes {
    h_check: Vec<Uuid>,
    h_version: Vec<i64>,
    h_at: Vec<DateTime<Utc>>,
    h_result: Vec<Option<Uuid>>,
    h_status: Vec<i16>,
    h_ok: Vec<bool>,
    h_hard: Vec<bool>,
    h_attempt: Vec<i32>,
    h_output: Vec<String>,
    h_events: Vec<serde_json::Value>,
    h_acked: Vec<bool>,
    h_downtime: Vec<bool>,
    h_suppressed: Vec<bool>,
    h_flapping: Vec<bool>,
    new_alerts: HashMap<Uuid, NewAlert>,
    alert_changes: HashMap<Uuid, AlertChange>,
}

impl Writes {
    /// Records `t`, a transition of the locked `check`, if it applied, and
    /// makes its state the locked one; returns whether it applied.
    pub(super) fn apply(
        &mut self,
        check: CheckId,
        l: &mut Locked,
        t: &Transition,
        at: DateTime<Utc>,
        result: Option<ResultId>,
    ) -> Result<bool> {
        if !t.is_applied() {
            return Ok(false);
        }
        self.record(check, &l.state, t, at, result)?;
        l.state = t.state.clone();
        l.dirty = true;
        Ok(true)
    }

    /// Records an applied transition of `check` from `before`.
    fn record(
        &mut self,
        check: CheckId,
        before: &CheckState,
        t: &Transition,
        at: DateTime<Utc>,
        result: Option<ResultId>,
    ) -> Result<()> {
        let after = &t.state;
        self.h_check.push(check.0);
        self.h_version
            .push(u64_to_sql(after.version, "state version")?);
        self.h_at.push(at);
        self.h_result.push(result.map(|r| r.0));
        self.h_status.push(status_to_sql(after.status));
        self.h_ok.push(after.ok);
        self.h_hard.push(after.hard);
        self.h_attempt.push(u32_to_sql(after.attempt, "attempt")?);
        self.h_output.push(after.output.to_string());
        self.h_events.push(rows::events_to_json(&t.events)?);
        self.h_acked
            .push(after.acknowledged != bergamot_core::state::Ack::None);
        self.h_downtime.push(after.in_downtime);
        self.h_suppressed.push(after.suppressed);
        self.h_flapping.push(after.flapping);

        let status = status_to_sql(after.status);
        let old = before.current_alert.map(|a| a.id);
        let new = after.current_alert;
        if old != new.map(|a| a.id) {
            if let Some(old) = old {
                self.close_alert(old, at);
            }
            if let Some(a) = new {
                self.new_alerts.insert(
                    a.id,
                    NewAlert {
                        check_id: check.0,
                        opened_at: a.opened_at,
                        closed_at: None,
                        status,
                        worst: status,
                    },
                );
            }
        } else if let Some(a) = new {
            // Worst by rank (Status's order), not by the stored code.
            if let Some(n) = self.new_alerts.get_mut(&a.id) {
                n.worst = worse_code(n.worst, status);
            } else {
                let c = self.alert_changes.entry(a.id).or_default();
                c.worst = worse_code(c.worst, status);
            }
        }
        Ok(())
    }

    fn close_alert(&mut self, id: Uuid, at: DateTime<Utc>) {
        if let Some(n) = self.new_alerts.get_mut(&id) {
            n.closed_at = Some(at);
        } else {
            self.alert_changes.entry(id).or_default().closed_at = Some(at);
        }
    }
}

/// Six column arrays, collected from an iterator of rows.
type Columns6<A, B, C, D, E, F> = (Vec<A>, Vec<B>, Vec<C>, Vec<D>, Vec<E>, Vec<F>);

/// The worse (by rank) of two stored status codes.
fn worse_code(a: i16, b: i16) -> i16 {
    let status = |c: i16| u8::try_from(c).ok().and_then(Status::from_severity);
    match (status(a), status(b)) {
        (Some(x), Some(y)) if y > x => b,
        (Some(_), _) => a,
        _ => b,
    }
}

const WRITE_BACK: &str = "WITH st AS (
        UPDATE check_state s SET version = u.version, status = u.status, ok = u.ok,
            hard = u.hard, attempt = u.attempt, last_check_at = u.last_check_at,
            last_result_id = u.last_result_id, flapping = u.flapping,
            in_downtime = u.in_downtime, suppressed = u.suppressed,
            acknowledged = u.acknowledged, encompassed = u.encompassed, output = u.output,
            rest = u.rest
        FROM {STATE_UNNEST}
        WHERE s.check_id = u.check_id
        RETURNING 1
    ), hi AS (
        INSERT INTO history (check_id, version, at, result_id, status, ok, hard, attempt, output, events,
            acknowledged, in_downtime, suppressed, flapping)
        SELECT * FROM unnest($16::uuid[], $17::int8[], $18::timestamptz[], $19::uuid[],
            $20::int2[], $21::bool[], $22::bool[], $23::int4[], $24::text[], $25::jsonb[],
            $35::bool[], $36::bool[], $37::bool[], $38::bool[])
        RETURNING 1
    ), ai AS (
        INSERT INTO alerts (id, check_id, opened_at, closed_at, status, worst)
        SELECT * FROM unnest($26::uuid[], $27::uuid[], $28::timestamptz[], $29::timestamptz[],
            $30::int2[], $31::int2[])
        RETURNING 1
    ), au AS (
        UPDATE alerts a SET closed_at = coalesce(u.closed_at, a.closed_at),
            worst = CASE WHEN {RANK_U} > {RANK_A} THEN u.worst ELSE a.worst END
        FROM unnest($32::uuid[], $33::timestamptz[], $34::int2[]) AS u(id, closed_at, worst)
        WHERE a.id = u.id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM st), (SELECT count(*) FROM hi)";

impl PostgresStore {
    /// Writes the dirty states, history rows and alert records in one statement.
    pub(super) async fn write_back(
        tx: &Tx<'_>,
        locked: &HashMap<CheckId, Locked>,
        writes: &Writes,
    ) -> Result<()> {
        let mut states = StateArrays::default();
        for (id, l) in locked.iter().filter(|(_, l)| l.dirty) {
            states.push(*id, &l.state)?;
        }
        if states.len() == 0 {
            return Ok(());
        }
        // Column arrays of the new alert rows and of the changed ones.
        let (a_id, a_check, a_opened, a_closed, a_status, a_worst): Columns6<_, _, _, _, _, _> =
            writes
                .new_alerts
                .iter()
                .map(|(id, a)| (*id, a.check_id, a.opened_at, a.closed_at, a.status, a.worst))
                .collect();
        let (c_id, c_closed, c_worst): (Vec<_>, Vec<_>, Vec<_>) = writes
            .alert_changes
            .iter()
            .map(|(id, c)| (*id, c.closed_at, c.worst))
            .collect();
        let sql = WRITE_BACK
            .replace("{STATE_UNNEST}", STATE_UNNEST)
            .replace("{RANK_U}", &crate::aggregate_sql::rank_of("u.worst"))
            .replace("{RANK_A}", &crate::aggregate_sql::rank_of("a.worst"));
        let stmt = tx
            .prepare_cached(&sql)
            .await
            .map_err(Error::db("prepare the state write"))?;
        let w = writes;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = states.params().to_vec();
        params.extend_from_slice(&[
            &w.h_check,
            &w.h_version,
            &w.h_at,
            &w.h_result,
            &w.h_status,
            &w.h_ok,
            &w.h_hard,
            &w.h_attempt,
            &w.h_output,
            &w.h_events,
            &a_id,
            &a_check,
            &a_opened,
            &a_closed,
            &a_status,
            &a_worst,
            &c_id,
            &c_closed,
            &c_worst,
            &w.h_acked,
            &w.h_downtime,
            &w.h_suppressed,
            &w.h_flapping,
        ]);
        let row = tx
            .query_one(&stmt, &params)
            .await
            .map_err(Error::db("write check states and history"))?;
        let updated: i64 = row.get(0);
        if usize::try_from(updated).ok() != Some(states.len()) {
            // The rows were locked: this cannot happen unless the schema was
            // changed under us. Roll back rather than write half.
            return Err(Error::corrupt(
                "check_state",
                format!("updated {updated} of {} locked rows", states.len()),
            ));
        }
        Ok(())
    }

    /// Applies `t` to the locked `check` and, if it applied, writes it
    /// back at once; returns whether it applied.
    pub(super) async fn write_one(
        tx: &Tx<'_>,
        locked: &mut HashMap<CheckId, Locked>,
        check: CheckId,
        t: &Transition,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(l) = locked.get_mut(&check) else {
            return Ok(false);
        };
        let mut writes = Writes::default();
        if !writes.apply(check, l, t, at, None)? {
            return Ok(false);
        }
        Self::write_back(tx, locked, &writes).await?;
        Ok(true)
    }

    pub(super) async fn apply_results_once(
        &self,
        results: &[CheckResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<bergamot_core::Result<Transition>>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("begin a result transaction"))?;
        let ids: Vec<Uuid> = results
            .iter()
            .map(|r| r.check_id.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut locked = Self::lock(&tx, &ids).await?;
        let external = Self::dependency_states(&tx, &locked).await?;
        let mut writes = Writes::default();
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            if !locked.contains_key(&r.check_id) {
                out.push(Err(bergamot_core::Error::not_found("check", r.check_id)));
                continue;
            }
            let deps = Self::deps_of(r.check_id, &locked, &external);
            let Some(l) = locked.get_mut(&r.check_id) else {
                continue;
            };
            let t = state::transition(&l.state, r, &l.policy, &deps, now);
            writes.apply(r.check_id, l, &t, r.executed_at, Some(r.id))?;
            out.push(Ok(t));
        }
        Self::write_back(&tx, &locked, &writes).await?;
        tx.commit()
            .await
            .map_err(Error::db("commit a result transaction"))?;
        Ok(out)
    }

    /// Locks one check, runs `f` on its state and saves the result if applied.
    async fn mutate_once(
        &self,
        check: CheckId,
        at: DateTime<Utc>,
        f: &(dyn Fn(&CheckState, &Policy) -> Transition + Sync),
    ) -> Result<Transition> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("begin a state change"))?;
        let mut locked = Self::lock(&tx, &[check.0]).await?;
        let l = locked
            .get(&check)
            .ok_or_else(|| Error::not_found("check", check))?;
        let t = f(&l.state, &l.policy);
        Self::write_one(&tx, &mut locked, check, &t, at).await?;
        tx.commit()
            .await
            .map_err(Error::db("commit a state change"))?;
        Ok(t)
    }

    pub(super) async fn mutate(
        &self,
        check: CheckId,
        at: DateTime<Utc>,
        f: &(dyn Fn(&CheckState, &Policy) -> Transition + Sync),
    ) -> Result<Transition> {
        retry!("state change", self.mutate_once(check, at, f))
    }
}
