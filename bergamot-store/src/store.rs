//! [`PostgresStore`]: the [`Store`] trait over PostgreSQL.

use crate::aggregate_sql::Targets;
use crate::config::{describe, PostgresConfig};
use crate::error::{Error, Result};
use crate::migrations;
use crate::rows::{decode_state, STATE_COLUMNS, STATE_WIDTH};
use async_trait::async_trait;
use bergamot_core::aggregate::{GroupState, LocationState};
use bergamot_core::model::{CheckId, CheckResult, GroupId, LocationId, Model, Policy};
use bergamot_core::state::{self, Ack, CheckState, DependencyState, Transition};
use bergamot_core::store::{
    AlertRecord, Downtime, HistoryEntry, HistoryPage, StateFilter, Store, SyncReport,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

/// How often a transaction that hit a serialization failure or a deadlock is tried.
const MAX_ATTEMPTS: u32 = 8;

/// A [`Store`] over PostgreSQL: a deadpool of `tokio-postgres` connections,
/// every table in one schema (see [`PostgresConfig::schema`]).
///
/// Cheap to share: wrap it in an `Arc`. See `docs/postgres.md` for the schema.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// Runs `$body` (an async expression returning our `Result`) until it
/// succeeds, fails for good, or runs out of attempts on 40001 / 40P01.
macro_rules! retry {
    ($what:expr, $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $body.await {
                Err(e) if e.is_retryable() && attempt + 1 < MAX_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(what = $what, attempt, error = %e, "retrying transaction");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => break other,
            }
        }
    }};
}

/// 2, 4, 8 ... ms, capped at 200 ms, with a little spread so that two
/// transactions that deadlocked do not collide again in lock step.
fn backoff(attempt: u32) -> Duration {
    let base = 2u64.saturating_pow(attempt).min(200);
    let spread = u64::from(std::process::id() ^ attempt.wrapping_mul(2_654_435_761)) % (base + 1);
    Duration::from_millis(base + spread / 2)
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

// After `retry!`: the modules use it.
mod apply;
mod downtime;
mod read;
mod sync;

/// A check's state locked in the current transaction, with what its transition needs.
struct Locked {
    policy: Policy,
    deps: Vec<CheckId>,
    state: CheckState,
    dirty: bool,
}

const LOCK: &str = "SELECT {STATE_COLUMNS}, c.policy,
        ARRAY(SELECT d.dep_id FROM check_deps d WHERE d.check_id = s.check_id ORDER BY d.dep_id)
    FROM check_state s JOIN checks c ON c.id = s.check_id
    WHERE s.check_id = ANY($1::uuid[])
    ORDER BY s.check_id
    FOR UPDATE OF s";

impl PostgresStore {
    /// Connects, creates the schema if needed and applies the migrations.
    ///
    /// Fails with a clear [`Error`] on a malformed URL or config, an
    /// unreachable server, a refused login or unknown database, and a schema
    /// written by a newer Bergamot ([`Error::SchemaTooNew`]); nothing is
    /// written in those cases.
    pub async fn connect(config: PostgresConfig) -> Result<PostgresStore> {
        let pg_config = config.pg_config()?;
        let target = describe(&pg_config);
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.pool_timeout))
            .create_timeout(Some(config.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::InvalidConfig {
                field: "pool_size",
                message: e.to_string(),
            })?;
        let mut client = pool
            .get()
            .await
            .map_err(|source| Error::Connect { target, source })?;
        migrations::migrate(&mut client, &config.schema).await?;
        drop(client);
        Ok(PostgresStore {
            pool,
            schema: config.schema,
        })
    }

    /// The PostgreSQL schema this store uses.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes the pool: later calls fail.
    pub fn close(&self) {
        self.pool.close();
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(Error::Pool)
    }

    /// Runs one statement on a pooled connection and returns its rows;
    /// `context` says in an error what was being done.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        context: &'static str,
    ) -> Result<Vec<Row>> {
        let client = self.client().await?;
        client.query(sql, params).await.map_err(Error::db(context))
    }

    /// Locks the state rows of `ids` (in id order, one statement).
    async fn lock(tx: &Tx<'_>, ids: &[Uuid]) -> Result<HashMap<CheckId, Locked>> {
        let stmt = tx
            .prepare_cached(&LOCK.replace("{STATE_COLUMNS}", STATE_COLUMNS))
            .await
            .map_err(Error::db("prepare the state lock"))?;
        let found = tx
            .query(&stmt, &[&ids])
            .await
            .map_err(Error::db("lock check states"))?;
        let mut out = HashMap::with_capacity(found.len());
        for row in &found {
            let (id, state) = decode_state(row, 0)?;
            let Json(policy): Json<Policy> = row
                .try_get(STATE_WIDTH)
                .map_err(|e| Error::corrupt("checks", format!("policy of {id}: {e}")))?;
            let deps: Vec<Uuid> = row
                .try_get(STATE_WIDTH + 1)
                .map_err(|e| Error::corrupt("check_deps", e.to_string()))?;
            out.insert(
                id,
                Locked {
                    policy,
                    deps: deps.into_iter().map(CheckId).collect(),
                    state,
                    dirty: false,
                },
            );
        }
        Ok(out)
    }

    /// States of the dependencies that are not locked in this transaction.
    async fn dependency_states(
        tx: &Tx<'_>,
        locked: &HashMap<CheckId, Locked>,
    ) -> Result<HashMap<CheckId, DependencyState>> {
        let ids: BTreeSet<Uuid> = locked
            .values()
            .flat_map(|l| l.deps.iter())
            .filter(|d| !locked.contains_key(d))
            .map(|d| d.0)
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let stmt = tx
            .prepare_cached(
                "SELECT check_id, hard, ok FROM check_state WHERE check_id = ANY($1::uuid[])",
            )
            .await
            .map_err(Error::db("prepare dependency states"))?;
        let found = tx
            .query(&stmt, &[&ids])
            .await
            .map_err(Error::db("read dependency states"))?;
        Ok(found
            .iter()
            .map(|r| {
                (
                    CheckId(r.get(0)),
                    DependencyState {
                        hard: r.get(1),
                        ok: r.get(2),
                    },
                )
            })
            .collect())
    }

    fn deps_of(
        check: CheckId,
        locked: &HashMap<CheckId, Locked>,
        external: &HashMap<CheckId, DependencyState>,
    ) -> Vec<DependencyState> {
        let Some(l) = locked.get(&check) else {
            return Vec::new();
        };
        l.deps
            .iter()
            .filter_map(|d| match locked.get(d) {
                Some(dl) => Some(DependencyState {
                    hard: dl.state.hard,
                    ok: dl.state.ok,
                }),
                None => external.get(d).copied(),
            })
            .collect()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn sync_config(&self, model: &Model) -> bergamot_core::Result<SyncReport> {
        Ok(retry!("config sync", self.sync_once(model))?)
    }

    async fn model(&self) -> bergamot_core::Result<Model> {
        Ok(self.model_once().await?)
    }

    async fn apply_result(
        &self,
        result: &CheckResult,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Transition> {
        let mut out = retry!(
            "apply result",
            self.apply_results_once(std::slice::from_ref(result), now)
        )?;
        out.pop().unwrap_or_else(|| {
            Err(bergamot_core::Error::InvalidInput(
                "no outcome for the result".into(),
            ))
        })
    }

    async fn apply_results(
        &self,
        results: &[CheckResult],
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<bergamot_core::Result<Transition>>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        Ok(retry!(
            "apply results",
            self.apply_results_once(results, now)
        )?)
    }

    async fn state(&self, check: CheckId) -> bergamot_core::Result<CheckState> {
        self.read_state(check).await
    }

    async fn states(&self) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        self.read_states().await
    }

    async fn states_checked_before(
        &self,
        before: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        self.read_states_checked_before(before).await
    }

    async fn matching_checks(&self, filter: &StateFilter) -> bergamot_core::Result<Vec<CheckId>> {
        self.read_matching_checks(filter).await
    }

    async fn states_of(
        &self,
        checks: &[CheckId],
    ) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
        self.read_states_of(checks).await
    }

    async fn group_states(&self, root: Option<GroupId>) -> bergamot_core::Result<Vec<GroupState>> {
        // An unknown root selects nothing (as the in-memory store).
        Ok(match root {
            None => self.groups_where(Targets::All, &[]).await?,
            Some(root) => self.groups_where(Targets::Subtree, &[&root.0]).await?,
        })
    }

    async fn group_states_of(&self, groups: &[GroupId]) -> bergamot_core::Result<Vec<GroupState>> {
        let ids: Vec<Uuid> = groups.iter().map(|g| g.0).collect();
        Ok(self.groups_where(Targets::Of, &[&ids]).await?)
    }

    async fn location_states_of(
        &self,
        locations: &[LocationId],
    ) -> bergamot_core::Result<Vec<LocationState>> {
        let ids: Vec<Uuid> = locations.iter().map(|g| g.0).collect();
        Ok(self.locations_where(Targets::Of, &[&ids]).await?)
    }

    async fn location_states(
        &self,
        root: Option<LocationId>,
    ) -> bergamot_core::Result<Vec<LocationState>> {
        Ok(match root {
            None => self.locations_where(Targets::All, &[]).await?,
            Some(root) => self.locations_where(Targets::Subtree, &[&root.0]).await?,
        })
    }

    async fn ancestor_groups(&self, check: CheckId) -> bergamot_core::Result<Vec<GroupId>> {
        let sql = crate::aggregate_sql::ANCESTOR_GROUPS;
        Ok(self
            .ancestors(check, sql, "read ancestor groups", GroupId)
            .await?)
    }

    async fn ancestor_locations(&self, check: CheckId) -> bergamot_core::Result<Vec<LocationId>> {
        let sql = crate::aggregate_sql::ANCESTOR_LOCATIONS;
        Ok(self
            .ancestors(check, sql, "read ancestor locations", LocationId)
            .await?)
    }

    async fn acknowledge(
        &self,
        check: CheckId,
        kind: Ack,
        author: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Transition> {
        tracing::debug!(%check, author, comment, "acknowledge");
        Ok(self
            .mutate(check, now, &|s, p| {
                state::acknowledge_by(s, kind, author, comment, p, now)
            })
            .await?)
    }

    async fn remove_acknowledgement(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Transition> {
        Ok(self
            .mutate(check, now, &|s, p| state::remove_acknowledgement(s, p, now))
            .await?)
    }

    async fn set_suppressed(
        &self,
        check: CheckId,
        suppressed: bool,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Transition> {
        Ok(self
            .mutate(check, now, &|s, p| {
                state::set_suppressed(s, suppressed, p, now)
            })
            .await?)
    }

    async fn reset_clock(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Transition> {
        Ok(self
            .mutate(check, now, &|s, p| state::reset_clock(s, p, now))
            .await?)
    }

    async fn schedule_downtime(
        &self,
        downtime: Downtime,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Option<Transition>> {
        if downtime.ends_at <= downtime.starts_at {
            return Err(bergamot_core::Error::InvalidInput(format!(
                "downtime {}: ends_at {} is not after starts_at {}",
                downtime.id, downtime.ends_at, downtime.starts_at
            )));
        }
        Ok(retry!(
            "schedule downtime",
            self.schedule_downtime_once(&downtime, now)
        )?)
    }

    async fn cancel_downtime(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Option<(CheckId, Transition)>> {
        Ok(retry!(
            "cancel downtime",
            self.cancel_downtime_once(id, now)
        )?)
    }

    async fn downtimes(
        &self,
        check: Option<CheckId>,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<Downtime>> {
        self.read_downtimes(check, now).await
    }

    async fn apply_due_downtimes(
        &self,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<(CheckId, Transition)>> {
        Ok(retry!(
            "apply due downtimes",
            self.apply_due_downtimes_once(now)
        )?)
    }

    async fn history(
        &self,
        check: CheckId,
        page: HistoryPage,
    ) -> bergamot_core::Result<Vec<HistoryEntry>> {
        self.read_history(check, page).await
    }

    async fn alerts(
        &self,
        check: Option<CheckId>,
        limit_n: usize,
    ) -> bergamot_core::Result<Vec<AlertRecord>> {
        self.read_alerts(check, limit_n).await
    }

    async fn active_alerts(
        &self,
        closed_since: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<AlertRecord>> {
        self.read_active_alerts(closed_since).await
    }
}
