//! [`PostgresStore`]: the [`Store`] trait over PostgreSQL.

use crate::aggregate_sql::{self, Targets};
use crate::config::{describe, PostgresConfig};
use crate::error::{Error, Result};
use crate::migrations;
use crate::rows::{
    self, decode_aggregate, decode_state, status_from_sql, status_to_sql, u32_to_sql, u64_to_sql,
    StateArrays, STATE_COLUMNS, STATE_UNNEST, STATE_WIDTH,
};
use async_trait::async_trait;
use bergamot_core::aggregate::{Aggregate, GroupState, LocationState};
use bergamot_core::model::{
    Check, CheckId, CheckKind, CheckResult, Group, GroupId, Location, LocationId, Model, Policy,
    ResultId, Status,
};
use bergamot_core::state::{self, Ack, CheckState, DependencyState, Event, Transition};
use bergamot_core::store::{
    AlertRecord, Downtime, HistoryEntry, HistoryPage, StateFilter, Store, SyncReport,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::types::Json;
use tokio_postgres::NoTls;
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

/// A check's state locked in the current transaction, with what its transition needs.
struct Locked {
    policy: Policy,
    deps: Vec<CheckId>,
    state: CheckState,
    dirty: bool,
}

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
struct Writes {
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

    /// Writes the dirty states, history rows and alert records in one statement.
    async fn write_back(
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
        let mut a_id = Vec::new();
        let mut a_check = Vec::new();
        let mut a_opened = Vec::new();
        let mut a_closed = Vec::new();
        let mut a_status = Vec::new();
        let mut a_worst = Vec::new();
        for (id, a) in &writes.new_alerts {
            a_id.push(*id);
            a_check.push(a.check_id);
            a_opened.push(a.opened_at);
            a_closed.push(a.closed_at);
            a_status.push(a.status);
            a_worst.push(a.worst);
        }
        let mut c_id = Vec::new();
        let mut c_closed = Vec::new();
        let mut c_worst = Vec::new();
        for (id, c) in &writes.alert_changes {
            c_id.push(*id);
            c_closed.push(c.closed_at);
            c_worst.push(c.worst);
        }
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

    async fn apply_results_once(
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
            if t.is_applied() {
                writes.record(r.check_id, &l.state, &t, r.executed_at, Some(r.id))?;
                l.state = t.state.clone();
                l.dirty = true;
            }
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
            .get_mut(&check)
            .ok_or_else(|| Error::not_found("check", check))?;
        let t = f(&l.state, &l.policy);
        if t.is_applied() {
            let mut writes = Writes::default();
            writes.record(check, &l.state, &t, at, None)?;
            l.state = t.state.clone();
            l.dirty = true;
            Self::write_back(&tx, &locked, &writes).await?;
        }
        tx.commit()
            .await
            .map_err(Error::db("commit a state change"))?;
        Ok(t)
    }

    async fn mutate(
        &self,
        check: CheckId,
        at: DateTime<Utc>,
        f: &(dyn Fn(&CheckState, &Policy) -> Transition + Sync),
    ) -> Result<Transition> {
        retry!("state change", self.mutate_once(check, at, f))
    }

    async fn sync_once(&self, model: &Model) -> Result<SyncReport> {
        let plan = SyncPlan::new(model)?;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("begin config sync"))?;
        let db = Error::db;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('bergamot.sync.' || current_schema(), 0))",
            &[],
        )
        .await
        .map_err(db("take the config sync lock"))?;
        let existing: HashSet<Uuid> = tx
            .query("SELECT id FROM checks", &[])
            .await
            .map_err(db("read existing checks"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "INSERT INTO site (id, name) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            &[&model.site],
        )
        .await
        .map_err(db("save the site"))?;
        // NOT EXISTS over unnest is a hash anti-join; `<> ALL($1)` would
        // compare every row with every id (quadratic for 100k checks).
        let removed = tx
            .execute(
                "DELETE FROM checks t WHERE NOT EXISTS (SELECT 1 FROM unnest($1::uuid[]) AS u(id) WHERE u.id = t.id)",
                &[&plan.c_id],
            )
            .await
            .map_err(db("remove checks"))?;
        tx.execute(
            "DELETE FROM groups t WHERE NOT EXISTS (SELECT 1 FROM unnest($1::uuid[]) AS u(id) WHERE u.id = t.id)",
            &[&plan.g_id],
        )
        .await
        .map_err(db("remove groups"))?;
        tx.execute(
            "DELETE FROM locations t WHERE NOT EXISTS (SELECT 1 FROM unnest($1::uuid[]) AS u(id) WHERE u.id = t.id)",
            &[&plan.l_id],
        )
        .await
        .map_err(db("remove locations"))?;
        tx.batch_execute(
            "DELETE FROM group_parents; DELETE FROM check_groups; DELETE FROM check_deps;",
        )
        .await
        .map_err(db("clear graph edges"))?;
        tx.execute(
            "INSERT INTO groups (id, position, name)
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[])
             ON CONFLICT (id) DO UPDATE SET position = excluded.position, name = excluded.name",
            &[&plan.g_id, &plan.g_pos, &plan.g_name],
        )
        .await
        .map_err(db("save groups"))?;
        tx.execute(
            "INSERT INTO group_parents (group_id, parent_id, ord)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[])",
            &[&plan.e_child, &plan.e_parent, &plan.e_ord],
        )
        .await
        .map_err(db("save group parents"))?;
        tx.execute(
            "INSERT INTO locations (id, position, name, parent_id)
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::uuid[])
             ON CONFLICT (id) DO UPDATE SET position = excluded.position, name = excluded.name,
                 parent_id = excluded.parent_id",
            &[&plan.l_id, &plan.l_pos, &plan.l_name, &plan.l_parent],
        )
        .await
        .map_err(db("save locations"))?;
        tx.execute(
            "INSERT INTO checks (id, position, is_host, location_id, policy, def)
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::bool[], $4::uuid[], $5::jsonb[], $6::jsonb[])
             ON CONFLICT (id) DO UPDATE SET position = excluded.position,
                 is_host = excluded.is_host, location_id = excluded.location_id,
                 policy = excluded.policy, def = excluded.def",
            &[&plan.c_id, &plan.c_pos, &plan.c_host, &plan.c_loc, &plan.c_policy, &plan.c_def],
        )
        .await
        .map_err(db("save checks"))?;
        tx.execute(
            "INSERT INTO check_groups (check_id, group_id, sole)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bool[])",
            &[&plan.m_check, &plan.m_group, &plan.m_sole],
        )
        .await
        .map_err(db("save group members"))?;
        tx.execute(
            "INSERT INTO check_deps (check_id, dep_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
            &[&plan.d_check, &plan.d_dep],
        )
        .await
        .map_err(db("save dependencies"))?;
        let mut initial = StateArrays::default();
        for c in &model.checks {
            if !existing.contains(&c.id.0) {
                initial.push(c.id, &state::initial_state(&c.policy))?;
            }
        }
        let added = initial.len();
        tx.execute(
            &format!(
                "INSERT INTO check_state (check_id, version, status, ok, hard, attempt,
                     last_check_at, last_result_id, flapping, in_downtime, suppressed,
                     acknowledged, encompassed, output, rest)
                 SELECT * FROM {STATE_UNNEST}
                 ON CONFLICT (check_id) DO NOTHING"
            ),
            &initial.params(),
        )
        .await
        .map_err(db("create initial states"))?;
        tx.batch_execute(aggregate_sql::REBUILD_CLOSURE)
            .await
            .map_err(db("rebuild the group closure"))?;
        tx.commit().await.map_err(db("commit config sync"))?;
        let removed = usize::try_from(removed).unwrap_or(usize::MAX);
        Ok(SyncReport {
            added,
            updated: model.checks.len() - added,
            removed,
        })
    }

    async fn model_once(&self) -> Result<Model> {
        let client = self.client().await?;
        let db = Error::db;
        let site = client
            .query_opt("SELECT name FROM site WHERE id = 1", &[])
            .await
            .map_err(db("read the site"))?
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
        let mut checks = Vec::new();
        for r in client
            .query("SELECT def FROM checks ORDER BY position", &[])
            .await
            .map_err(db("read checks"))?
        {
            let Json(c): Json<Check> = r
                .try_get(0)
                .map_err(|e| Error::corrupt("checks", e.to_string()))?;
            checks.push(c);
        }
        let groups = client
            .query(
                "SELECT g.id, g.name, ARRAY(SELECT gp.parent_id FROM group_parents gp
                     WHERE gp.group_id = g.id ORDER BY gp.ord)
                 FROM groups g ORDER BY g.position",
                &[],
            )
            .await
            .map_err(db("read groups"))?
            .iter()
            .map(|r| Group {
                id: GroupId(r.get(0)),
                name: r.get(1),
                parents: r.get::<_, Vec<Uuid>>(2).into_iter().map(GroupId).collect(),
            })
            .collect();
        let locations = client
            .query(
                "SELECT id, name, parent_id FROM locations ORDER BY position",
                &[],
            )
            .await
            .map_err(db("read locations"))?
            .iter()
            .map(|r| Location {
                id: LocationId(r.get(0)),
                name: r.get(1),
                parent: r.get::<_, Option<Uuid>>(2).map(LocationId),
            })
            .collect();
        Ok(Model {
            site,
            checks,
            groups,
            locations,
        })
    }

    /// Runs an aggregate query with JIT off (it costs more than it saves here).
    /// Aggregates of the groups `targets` selects with `params`.
    async fn groups_where(
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
    async fn locations_where(
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

    async fn exists(&self, table: &'static str, id: Uuid) -> Result<bool> {
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

    async fn schedule_downtime_once(
        &self,
        d: &Downtime,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("begin scheduling a downtime"))?;
        let mut locked = Self::lock(&tx, &[d.check_id.0]).await?;
        let l = locked
            .get_mut(&d.check_id)
            .ok_or_else(|| Error::not_found("check", d.check_id))?;
        tx.execute(
            "INSERT INTO downtimes (id, check_id, starts_at, ends_at, author, comment)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET check_id = excluded.check_id,
                     starts_at = excluded.starts_at, ends_at = excluded.ends_at,
                     author = excluded.author, comment = excluded.comment",
            &[
                &d.id,
                &d.check_id.0,
                &d.starts_at,
                &d.ends_at,
                &d.author,
                &d.comment,
            ],
        )
        .await
        .map_err(Error::db("save a downtime"))?;
        let mut out = None;
        if d.starts_at <= now && now < d.ends_at {
            let t = state::set_downtime(&l.state, true, &l.policy, now);
            if t.is_applied() {
                let mut writes = Writes::default();
                writes.record(d.check_id, &l.state, &t, now, None)?;
                l.state = t.state.clone();
                l.dirty = true;
                Self::write_back(&tx, &locked, &writes).await?;
            }
            out = Some(t);
        }
        tx.commit().await.map_err(Error::db("commit a downtime"))?;
        Ok(out)
    }

    async fn cancel_downtime_once(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(CheckId, Transition)>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("begin cancelling a downtime"))?;
        let check = tx
            .query_opt(
                "SELECT check_id FROM downtimes WHERE id = $1 AND ends_at > $2",
                &[&id, &now],
            )
            .await
            .map_err(Error::db("find a downtime"))?
            .map(|r| CheckId(r.get(0)))
            .ok_or_else(|| Error::not_found("downtime", id))?;
        let mut locked = Self::lock(&tx, &[check.0]).await?;
        // A started window ends now (kept, like every ended window, for the
        // planner); a future one goes.
        let ended = tx
            .execute(
                "UPDATE downtimes SET ends_at = $2 WHERE id = $1 AND starts_at <= $2 AND ends_at > $2",
                &[&id, &now],
            )
            .await
            .map_err(Error::db("end a downtime"))?;
        let deleted = tx
            .execute(
                "DELETE FROM downtimes WHERE id = $1 AND starts_at > $2",
                &[&id, &now],
            )
            .await
            .map_err(Error::db("delete a downtime"))?;
        if ended + deleted == 0 {
            // Cancelled concurrently; nothing left to do.
            return Err(Error::not_found("downtime", id));
        }
        let active = tx
            .query_opt(
                "SELECT 1 FROM downtimes WHERE check_id = $1 AND starts_at <= $2 AND ends_at > $2 LIMIT 1",
                &[&check.0, &now],
            )
            .await
            .map_err(Error::db("look for other downtimes"))?
            .is_some();
        let mut out = None;
        if let Some(l) = locked.get_mut(&check) {
            if l.state.in_downtime && !active {
                let t = state::set_downtime(&l.state, false, &l.policy, now);
                if t.is_applied() {
                    let mut writes = Writes::default();
                    writes.record(check, &l.state, &t, now, None)?;
                    l.state = t.state.clone();
                    l.dirty = true;
                    Self::write_back(&tx, &locked, &writes).await?;
                    out = Some((check, t));
                }
            }
        }
        tx.commit()
            .await
            .map_err(Error::db("commit a downtime cancel"))?;
        Ok(out)
    }

    async fn apply_due_downtimes_once(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(CheckId, Transition)>> {
        const ACTIVE: &str = "EXISTS (SELECT 1 FROM downtimes d WHERE d.check_id = s.check_id \
                              AND d.starts_at <= $1 AND d.ends_at > $1)";
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("begin applying downtimes"))?;
        let due: Vec<Uuid> = tx
            .query(
                // Driven by the (few) checks in downtime and the (few)
                // downtime windows, never a scan of every state: this runs
                // every second.
                &format!(
                    "SELECT s.check_id FROM check_state s WHERE s.in_downtime AND NOT {ACTIVE}
                     UNION
                     SELECT s.check_id FROM downtimes d JOIN check_state s ON s.check_id = d.check_id
                     WHERE d.starts_at <= $1 AND d.ends_at > $1 AND NOT s.in_downtime"
                ),
                &[&now],
            )
            .await
            .map_err(Error::db("find due downtimes"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Ended windows are kept for a while (the planner plans their end
        // from them); older ones go.
        let keep_after = now - bergamot_core::store::downtime_retention();
        tx.execute("DELETE FROM downtimes WHERE ends_at <= $1", &[&keep_after])
            .await
            .map_err(Error::db("delete ended downtimes"))?;
        if due.is_empty() {
            tx.commit()
                .await
                .map_err(Error::db("commit due downtimes"))?;
            return Ok(Vec::new());
        }
        let mut locked = Self::lock(&tx, &due).await?;
        // Recheck under the lock: another node may have applied them meanwhile.
        let active: HashSet<Uuid> = tx
            .query(
                "SELECT DISTINCT check_id FROM downtimes
                 WHERE check_id = ANY($2::uuid[]) AND starts_at <= $1 AND ends_at > $1",
                &[&now, &due],
            )
            .await
            .map_err(Error::db("read active downtimes"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut writes = Writes::default();
        let mut out = Vec::new();
        for id in &due {
            let check = CheckId(*id);
            let Some(l) = locked.get_mut(&check) else {
                continue;
            };
            let want = active.contains(id);
            if l.state.in_downtime == want {
                continue;
            }
            let t = state::set_downtime(&l.state, want, &l.policy, now);
            if t.is_applied() {
                writes.record(check, &l.state, &t, now, None)?;
                l.state = t.state.clone();
                l.dirty = true;
                out.push((check, t));
            }
        }
        Self::write_back(&tx, &locked, &writes).await?;
        tx.commit()
            .await
            .map_err(Error::db("commit due downtimes"))?;
        Ok(out)
    }
}

/// A model flattened into column arrays, validated.
struct SyncPlan {
    g_id: Vec<Uuid>,
    g_pos: Vec<i32>,
    g_name: Vec<String>,
    e_child: Vec<Uuid>,
    e_parent: Vec<Uuid>,
    e_ord: Vec<i32>,
    l_id: Vec<Uuid>,
    l_pos: Vec<i32>,
    l_name: Vec<String>,
    l_parent: Vec<Option<Uuid>>,
    c_id: Vec<Uuid>,
    c_pos: Vec<i32>,
    c_host: Vec<bool>,
    c_loc: Vec<Option<Uuid>>,
    c_policy: Vec<serde_json::Value>,
    c_def: Vec<serde_json::Value>,
    m_check: Vec<Uuid>,
    m_group: Vec<Uuid>,
    m_sole: Vec<bool>,
    d_check: Vec<Uuid>,
    d_dep: Vec<Uuid>,
}

impl SyncPlan {
    fn new(model: &Model) -> Result<SyncPlan> {
        let bad = |m: String| Err(Error::InvalidInput(format!("config sync: {m}")));
        let pos = |i: usize| {
            i32::try_from(i)
                .map_err(|_| Error::InvalidInput("config sync: too many objects".into()))
        };
        let mut groups = HashSet::new();
        for g in &model.groups {
            if !groups.insert(g.id) {
                return bad(format!("group {} ({}) appears twice", g.id, g.name));
            }
        }
        let mut locations = HashSet::new();
        for l in &model.locations {
            if !locations.insert(l.id) {
                return bad(format!("location {} ({}) appears twice", l.id, l.name));
            }
        }
        let mut plan = SyncPlan {
            g_id: Vec::new(),
            g_pos: Vec::new(),
            g_name: Vec::new(),
            e_child: Vec::new(),
            e_parent: Vec::new(),
            e_ord: Vec::new(),
            l_id: Vec::new(),
            l_pos: Vec::new(),
            l_name: Vec::new(),
            l_parent: Vec::new(),
            c_id: Vec::new(),
            c_pos: Vec::new(),
            c_host: Vec::new(),
            c_loc: Vec::new(),
            c_policy: Vec::new(),
            c_def: Vec::new(),
            m_check: Vec::new(),
            m_group: Vec::new(),
            m_sole: Vec::new(),
            d_check: Vec::new(),
            d_dep: Vec::new(),
        };
        for (i, g) in model.groups.iter().enumerate() {
            plan.g_id.push(g.id.0);
            plan.g_pos.push(pos(i)?);
            plan.g_name.push(g.name.clone());
            let mut seen = HashSet::new();
            for (k, p) in g.parents.iter().enumerate() {
                if !groups.contains(p) {
                    return bad(format!("group {} has unknown parent group {p}", g.name));
                }
                if seen.insert(*p) {
                    plan.e_child.push(g.id.0);
                    plan.e_parent.push(p.0);
                    plan.e_ord.push(pos(k)?);
                }
            }
        }
        for (i, l) in model.locations.iter().enumerate() {
            if let Some(p) = l.parent {
                if !locations.contains(&p) {
                    return bad(format!(
                        "location {} has unknown parent location {p}",
                        l.name
                    ));
                }
            }
            plan.l_id.push(l.id.0);
            plan.l_pos.push(pos(i)?);
            plan.l_name.push(l.name.clone());
            plan.l_parent.push(l.parent.map(|p| p.0));
        }
        let own_location: HashMap<CheckId, Option<LocationId>> =
            model.checks.iter().map(|c| (c.id, c.location)).collect();
        let mut checks = HashSet::new();
        for (i, c) in model.checks.iter().enumerate() {
            let name = c.display_name();
            if !checks.insert(c.id) {
                return bad(format!("check {} ({name}) appears twice", c.id));
            }
            let location = c.location.or_else(|| {
                c.host_id
                    .and_then(|h| own_location.get(&h).copied().flatten())
            });
            if let Some(l) = location {
                if !locations.contains(&l) {
                    return bad(format!("check {name} is in unknown location {l}"));
                }
            }
            plan.c_id.push(c.id.0);
            plan.c_pos.push(pos(i)?);
            plan.c_host.push(c.kind == CheckKind::Host);
            plan.c_loc.push(location.map(|l| l.0));
            plan.c_policy.push(
                serde_json::to_value(&c.policy)
                    .map_err(|e| Error::InvalidInput(format!("check {name}: policy: {e}")))?,
            );
            plan.c_def.push(
                serde_json::to_value(c)
                    .map_err(|e| Error::InvalidInput(format!("check {name}: {e}")))?,
            );
            let mut seen = HashSet::new();
            for g in &c.groups {
                if !groups.contains(g) {
                    return bad(format!("check {name} is in unknown group {g}"));
                }
                if seen.insert(*g) {
                    plan.m_check.push(c.id.0);
                    plan.m_group.push(g.0);
                }
            }
            let sole = seen.len() == 1;
            plan.m_sole.extend(std::iter::repeat(sole).take(seen.len()));
            let mut seen = HashSet::new();
            for d in &c.dependencies {
                if seen.insert(*d) {
                    plan.d_check.push(c.id.0);
                    plan.d_dep.push(d.0);
                }
            }
        }
        Ok(plan)
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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

    async fn states(&self) -> bergamot_core::Result<Vec<(CheckId, CheckState)>> {
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

    async fn matching_checks(&self, filter: &StateFilter) -> bergamot_core::Result<Vec<CheckId>> {
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

    async fn states_of(
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

    async fn ancestor_locations(&self, check: CheckId) -> bergamot_core::Result<Vec<LocationId>> {
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
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, check_id, starts_at, ends_at, author, comment FROM downtimes
                 WHERE ($1::uuid IS NULL OR check_id = $1) AND ends_at > $2
                 ORDER BY starts_at, id",
                &[&check.map(|c| c.0), &now],
            )
            .await
            .map_err(Error::db("read downtimes"))?;
        Ok(rows
            .iter()
            .map(|r| Downtime {
                id: r.get(0),
                check_id: CheckId(r.get(1)),
                starts_at: r.get(2),
                ends_at: r.get(3),
                author: r.get(4),
                comment: r.get(5),
            })
            .collect())
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

    async fn alerts(
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

    async fn active_alerts(
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
}
