//! Reads: check states, aggregates, ancestors, history and alert records.

use super::PostgresStore;
use crate::aggregate_sql::{self, Targets};
use crate::error::{Error, Result};
use crate::rows::{
    decode_aggregate, decode_alerts, decode_state, decode_states, status_from_sql, status_to_sql,
    u64_to_sql, ALERT_COLUMNS, STATE_COLUMNS,
};
use bergamot_core::aggregate::{Aggregate, GroupState, LocationState};
use bergamot_core::model::{CheckId, GroupId, LocationId, ResultId};
use bergamot_core::state::{CheckState, Event};
use bergamot_core::store::{AlertRecord, HistoryEntry, HistoryPage, StateFilter};
use chrono::{DateTime, Utc};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

impl PostgresStore {
    pub(super) async fn read_state(&self, check: CheckId) -> bergamot_core::Result<CheckState> {
        let rows = self
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM check_state s WHERE s.check_id = $1"),
                &[&check.0],
                "read a check state",
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::not_found("check", check))?;
        Ok(decode_state(row, 0)?.1)
    }

    pub(super) async fn read_states(&self) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        let rows = self
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM check_state s ORDER BY s.check_id"),
                &[],
                "read check states",
            )
            .await?;
        Ok(decode_states(&rows)?)
    }

    /// The states whose last result is older than `before` or missing
    /// (`last_check_at` is a column: no other state leaves the database).
    pub(super) async fn read_states_checked_before(
        &self,
        before: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {STATE_COLUMNS} FROM check_state s \
                     WHERE s.last_check_at IS NULL OR s.last_check_at < $1 ORDER BY s.check_id"
                ),
                &[&before],
                "read check states checked before an instant",
            )
            .await?;
        Ok(decode_states(&rows)?)
    }

    pub(super) async fn read_matching_checks(
        &self,
        filter: &StateFilter,
    ) -> bergamot_core::Result<Vec<CheckId>> {
        let statuses: Option<Vec<i16>> = filter
            .statuses
            .as_ref()
            .map(|st| st.iter().map(|s| status_to_sql(*s)).collect());
        // Hot columns only: no JSON decoding, no output.
        let rows = self
            .query(
                "SELECT check_id FROM check_state \
                 WHERE ($1::int2[] IS NULL OR status = ANY($1)) \
                   AND ($2::bool IS NULL OR (acknowledged <> 0) = $2) \
                   AND ($3::bool IS NULL OR in_downtime = $3)",
                &[&statuses, &filter.acknowledged, &filter.in_downtime],
                "search check states",
            )
            .await?;
        Ok(rows.iter().map(|r| CheckId(r.get(0))).collect())
    }

    pub(super) async fn read_states_of(
        &self,
        checks: &[CheckId],
    ) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        let ids: Vec<Uuid> = checks.iter().map(|c| c.0).collect();
        let rows = self
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM check_state s WHERE s.check_id = ANY($1)"),
                &[&ids],
                "read check states",
            )
            .await?;
        Ok(decode_states(&rows)?)
    }

    /// The ancestors an ancestor query (`sql`, the check at `$1`) returns
    /// for an existing `check`, each id made a `T` by `id`.
    pub(super) async fn ancestors<T>(
        &self,
        check: CheckId,
        sql: &str,
        context: &'static str,
        id: impl Fn(Uuid) -> T,
    ) -> Result<Vec<T>> {
        self.ensure_check(check).await?;
        let rows = self.query(sql, &[&check.0], context).await?;
        Ok(rows.iter().map(|r| id(r.get(0))).collect())
    }

    pub(super) async fn read_history(
        &self,
        check: CheckId,
        page: HistoryPage,
    ) -> bergamot_core::Result<Vec<HistoryEntry>> {
        let before = page
            .before_version
            .map(|v| u64_to_sql(v, "before_version"))
            .transpose()?;
        let rows = self
            .query(
                "SELECT version, at, result_id, status, ok, hard, attempt, output, events,
                        acknowledged, in_downtime, suppressed, flapping
                 FROM history WHERE check_id = $1 AND ($2::int8 IS NULL OR version < $2)
                 ORDER BY version DESC LIMIT $3",
                &[&check.0, &before, &limit(page.limit)],
                "read history",
            )
            .await?;
        if rows.is_empty() {
            self.ensure_check(check).await?;
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let version: i64 = r.get(0);
            let attempt: i32 = r.get(6);
            let Json(events): Json<Vec<Event>> = r
                .try_get(8)
                .map_err(|e| Error::corrupt("history", e.to_string()))?;
            out.push(HistoryEntry {
                check_id: check,
                version: u64::try_from(version)
                    .map_err(|_| Error::corrupt("history", "negative version"))?,
                at: r.get(1),
                result_id: r.get::<_, Option<Uuid>>(2).map(ResultId),
                status: status_from_sql(r.get(3), "history")?,
                ok: r.get(4),
                hard: r.get(5),
                attempt: u32::try_from(attempt)
                    .map_err(|_| Error::corrupt("history", "negative attempt"))?,
                output: r.get::<_, String>(7).into(),
                events,
                acknowledged: r.get(9),
                in_downtime: r.get(10),
                suppressed: r.get(11),
                flapping: r.get(12),
            });
        }
        Ok(out)
    }

    pub(super) async fn read_alerts(
        &self,
        check: Option<CheckId>,
        limit_n: usize,
    ) -> bergamot_core::Result<Vec<AlertRecord>> {
        if let Some(c) = check {
            self.ensure_check(c).await?;
        }
        Ok(self
            .alerts_where(
                "WHERE ($1::uuid IS NULL OR check_id = $1)
                 ORDER BY opened_at DESC, id DESC LIMIT $2",
                &[&check.map(|c| c.0), &limit(limit_n)],
                "read alerts",
            )
            .await?)
    }

    pub(super) async fn read_active_alerts(
        &self,
        closed_since: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<AlertRecord>> {
        Ok(self
            .alerts_where(
                "WHERE closed_at IS NULL OR closed_at >= $1 ORDER BY opened_at, id",
                &[&closed_since],
                "read active alerts",
            )
            .await?)
    }

    /// The alert records `filter` (a `WHERE …` clause, ordering and limit
    /// over `params`) selects.
    async fn alerts_where(
        &self,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
        context: &'static str,
    ) -> Result<Vec<AlertRecord>> {
        let rows = self
            .query(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts {filter}"),
                params,
                context,
            )
            .await?;
        decode_alerts(&rows)
    }

    /// Aggregates of the groups `targets` selects with `params`.
    pub(super) async fn groups_where(
        &self,
        targets: Targets,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<GroupState>> {
        let sql = aggregate_sql::group_query(targets);
        self.aggregates(&sql, params, "groups", |id, aggregate| GroupState {
            id: GroupId(id),
            aggregate,
        })
        .await
    }

    /// Aggregates of the locations `targets` selects with `params`.
    pub(super) async fn locations_where(
        &self,
        targets: Targets,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<LocationState>> {
        let sql = aggregate_sql::location_query(targets);
        self.aggregates(&sql, params, "locations", |id, aggregate| LocationState {
            id: LocationId(id),
            aggregate,
        })
        .await
    }

    /// Runs an aggregate query (rows of an id and the aggregate columns of
    /// `table`) with JIT off, making a `T` of each row.
    async fn aggregates<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        table: &'static str,
        make: impl Fn(Uuid, Aggregate) -> T,
    ) -> Result<Vec<T>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(Error::db("begin an aggregate query"))?;
        // JIT compiles this plan on every call and costs more than it
        // saves; the hash aggregates want more than the default 4 MB.
        tx.batch_execute("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")
            .await
            .map_err(Error::db("turn JIT off"))?;
        let stmt = tx
            .prepare_cached(sql)
            .await
            .map_err(Error::db("prepare an aggregate query"))?;
        let found = tx
            .query(&stmt, params)
            .await
            .map_err(Error::db("compute aggregates"))?;
        tx.commit()
            .await
            .map_err(Error::db("end an aggregate query"))?;
        found
            .iter()
            .map(|r| Ok(make(r.get(0), decode_aggregate(r, 1, table)?)))
            .collect()
    }

    /// Fails with [`Error::NotFound`] unless `check` exists.
    async fn ensure_check(&self, check: CheckId) -> Result<()> {
        let found = self
            .query(
                "SELECT 1 FROM checks WHERE id = $1",
                &[&check.0],
                "look up a check",
            )
            .await?;
        if found.is_empty() {
            return Err(Error::not_found("check", check));
        }
        Ok(())
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
