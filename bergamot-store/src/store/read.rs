//! Reads: check states, aggregates, ancestors, history and alert records.

use super::PostgresStore;
use crate::aggregate_sql::{self, Targets};
use crate::error::{Error, Result};
use crate::rows::{
    decode_aggregate, decode_state, status_from_sql, status_to_sql, u64_to_sql, STATE_COLUMNS,
};
use bergamot_core::aggregate::{Aggregate, GroupState, LocationState};
use bergamot_core::model::{CheckId, GroupId, LocationId, ResultId};
use bergamot_core::state::{CheckState, Event};
use bergamot_core::store::{AlertRecord, HistoryEntry, HistoryPage, StateFilter};
use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use uuid::Uuid;

impl PostgresStore {
    pub(super) async fn read_state(&self, check: CheckId) -> bergamot_core::Result<CheckState> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {STATE_COLUMNS} FROM check_state s WHERE s.check_id = $1"),
                &[&check.0],
            )
            .await
            .map_err(Error::db("read a check state"))?
            .ok_or_else(|| Error::not_found("check", check))?;
        Ok(decode_state(&row, 0)?.1)
    }

    pub(super) async fn read_states(&self) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM check_state s ORDER BY s.check_id"),
                &[],
            )
            .await
            .map_err(Error::db("read check states"))?;
        Ok(rows
            .iter()
            .map(|r| decode_state(r, 0))
            .collect::<Result<Vec<_>>>()?)
    }

    /// The states whose last result is older than `before` or missing
    /// (`last_check_at` is a column: no other state leaves the database).
    pub(super) async fn read_states_checked_before(
        &self,
        before: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {STATE_COLUMNS} FROM check_state s \
                     WHERE s.last_check_at IS NULL OR s.last_check_at < $1 ORDER BY s.check_id"
                ),
                &[&before],
            )
            .await
            .map_err(Error::db("read check states checked before an instant"))?;
        Ok(rows
            .iter()
            .map(|r| decode_state(r, 0))
            .collect::<Result<Vec<_>>>()?)
    }

    pub(super) async fn read_matching_checks(
        &self,
        filter: &StateFilter,
    ) -> bergamot_core::Result<Vec<CheckId>> {
        let statuses: Option<Vec<i16>> = filter
            .statuses
            .as_ref()
            .map(|st| st.iter().map(|s| status_to_sql(*s)).collect());
        let client = self.client().await?;
        // Hot columns only: no JSON decoding, no output.
        let rows = client
            .query(
                "SELECT check_id FROM check_state \
                 WHERE ($1::int2[] IS NULL OR status = ANY($1)) \
                   AND ($2::bool IS NULL OR (acknowledged <> 0) = $2) \
                   AND ($3::bool IS NULL OR in_downtime = $3)",
                &[&statuses, &filter.acknowledged, &filter.in_downtime],
            )
            .await
            .map_err(Error::db("search check states"))?;
        Ok(rows.iter().map(|r| CheckId(r.get(0))).collect())
    }

    pub(super) async fn read_states_of(
        &self,
        checks: &[CheckId],
    ) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        let ids: Vec<Uuid> = checks.iter().map(|c| c.0).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM check_state s WHERE s.check_id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(Error::db("read check states"))?;
        Ok(rows
            .iter()
            .map(|r| decode_state(r, 0))
            .collect::<Result<Vec<_>>>()?)
    }

    pub(super) async fn read_ancestor_groups(
        &self,
        check: CheckId,
    ) -> bergamot_core::Result<Vec<GroupId>> {
        if !self.exists("checks", check.0).await? {
            return Err(bergamot_core::Error::not_found("check", check));
        }
        let client = self.client().await?;
        let rows = client
            .query(aggregate_sql::ANCESTOR_GROUPS, &[&check.0])
            .await
            .map_err(Error::db("read ancestor groups"))?;
        Ok(rows.iter().map(|r| GroupId(r.get(0))).collect())
    }

    pub(super) async fn read_ancestor_locations(
        &self,
        check: CheckId,
    ) -> bergamot_core::Result<Vec<LocationId>> {
        if !self.exists("checks", check.0).await? {
            return Err(bergamot_core::Error::not_found("check", check));
        }
        let client = self.client().await?;
        let rows = client
            .query(aggregate_sql::ANCESTOR_LOCATIONS, &[&check.0])
            .await
            .map_err(Error::db("read ancestor locations"))?;
        Ok(rows.iter().map(|r| LocationId(r.get(0))).collect())
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
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT version, at, result_id, status, ok, hard, attempt, output, events,
                        acknowledged, in_downtime, suppressed, flapping
                 FROM history WHERE check_id = $1 AND ($2::int8 IS NULL OR version < $2)
                 ORDER BY version DESC LIMIT $3",
                &[&check.0, &before, &limit(page.limit)],
            )
            .await
            .map_err(Error::db("read history"))?;
        if rows.is_empty() && !self.exists("checks", check.0).await? {
            return Err(bergamot_core::Error::not_found("check", check));
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
            if !self.exists("checks", c.0).await? {
                return Err(bergamot_core::Error::not_found("check", c));
            }
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, check_id, opened_at, closed_at, status, worst FROM alerts
                 WHERE ($1::uuid IS NULL OR check_id = $1)
                 ORDER BY opened_at DESC, id DESC LIMIT $2",
                &[&check.map(|c| c.0), &limit(limit_n)],
            )
            .await
            .map_err(Error::db("read alerts"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(AlertRecord {
                id: r.get(0),
                check_id: CheckId(r.get(1)),
                opened_at: r.get(2),
                closed_at: r.get(3),
                status: status_from_sql(r.get(4), "alerts")?,
                worst: status_from_sql(r.get(5), "alerts")?,
            });
        }
        Ok(out)
    }

    pub(super) async fn read_active_alerts(
        &self,
        closed_since: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<AlertRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, check_id, opened_at, closed_at, status, worst FROM alerts
                 WHERE closed_at IS NULL OR closed_at >= $1
                 ORDER BY opened_at, id",
                &[&closed_since],
            )
            .await
            .map_err(Error::db("read active alerts"))?;
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

    /// Runs an aggregate query with JIT off (it costs more than it saves here).
    /// Aggregates of the groups `targets` selects with `params`.
    pub(super) async fn groups_where(
        &self,
        targets: Targets,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<GroupState>> {
        let found = self
            .aggregates(&aggregate_sql::group_query(targets), params, "groups")
            .await?;
        Ok(found
            .into_iter()
            .map(|(id, aggregate)| GroupState {
                id: GroupId(id),
                aggregate,
            })
            .collect())
    }

    /// Aggregates of the locations `targets` selects with `params`.
    pub(super) async fn locations_where(
        &self,
        targets: Targets,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<LocationState>> {
        let found = self
            .aggregates(&aggregate_sql::location_query(targets), params, "locations")
            .await?;
        Ok(found
            .into_iter()
            .map(|(id, aggregate)| LocationState {
                id: LocationId(id),
                aggregate,
            })
            .collect())
    }

    async fn aggregates(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        table: &'static str,
    ) -> Result<Vec<(Uuid, Aggregate)>> {
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
            .map(|r| Ok((r.get::<_, Uuid>(0), decode_aggregate(r, 1, table)?)))
            .collect()
    }

    pub(super) async fn exists(&self, table: &'static str, id: Uuid) -> Result<bool> {
        let client = self.client().await?;
        let sql = match table {
            "groups" => "SELECT 1 FROM groups WHERE id = $1",
            "locations" => "SELECT 1 FROM locations WHERE id = $1",
            _ => "SELECT 1 FROM checks WHERE id = $1",
        };
        Ok(client
            .query_opt(sql, &[&id])
            .await
            .map_err(Error::db("look up an object"))?
            .is_some())
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
