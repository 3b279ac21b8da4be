//! The config model in (sync) and out.

use super::PostgresStore;
use crate::aggregate_sql::{self};
use crate::error::{Error, Result};
use crate::rows::{StateArrays, STATE_UNNEST};
use bergamot_core::model::{
    Check, CheckId, CheckKind, Group, GroupId, Location, LocationId, Model,
};
use bergamot_core::state::{self};
use bergamot_core::store::SyncReport;
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

impl PostgresStore {
    pub(super) async fn sync_once(&self, model: &Model) -> Result<SyncReport> {
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
        let mut removed = 0;
        for (table, ids, what) in [
            ("checks", &plan.c_id, "remove checks"),
            ("groups", &plan.g_id, "remove groups"),
            ("locations", &plan.l_id, "remove locations"),
        ] {
            let n = tx
                .execute(
                    &format!(
                        "DELETE FROM {table} t WHERE NOT EXISTS \
                         (SELECT 1 FROM unnest($1::uuid[]) AS u(id) WHERE u.id = t.id)"
                    ),
                    &[ids],
                )
                .await
                .map_err(db(what))?;
            if table == "checks" {
                removed = n;
            }
        }
        tx.batch_execute(
            "DELETE FROM group_parents; DELETE FROM check_groups; DELETE FROM check_deps;",
        )
        .await
        .map_err(db("clear graph edges"))?;
        let inserts: [(&str, &[&(dyn ToSql + Sync)], &'static str); 6] = [
            (
                "INSERT INTO groups (id, position, name)
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[])
                 ON CONFLICT (id) DO UPDATE SET position = excluded.position, name = excluded.name",
                &[&plan.g_id, &plan.g_pos, &plan.g_name],
                "save groups",
            ),
            (
                "INSERT INTO group_parents (group_id, parent_id, ord)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[])",
                &[&plan.e_child, &plan.e_parent, &plan.e_ord],
                "save group parents",
            ),
            (
                "INSERT INTO locations (id, position, name, parent_id)
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::uuid[])
                 ON CONFLICT (id) DO UPDATE SET position = excluded.position, name = excluded.name,
                     parent_id = excluded.parent_id",
                &[&plan.l_id, &plan.l_pos, &plan.l_name, &plan.l_parent],
                "save locations",
            ),
            (
                "INSERT INTO checks (id, position, is_host, location_id, policy, def)
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::bool[], $4::uuid[], $5::jsonb[], $6::jsonb[])
                 ON CONFLICT (id) DO UPDATE SET position = excluded.position,
                     is_host = excluded.is_host, location_id = excluded.location_id,
                     policy = excluded.policy, def = excluded.def",
                &[&plan.c_id, &plan.c_pos, &plan.c_host, &plan.c_loc, &plan.c_policy, &plan.c_def],
                "save checks",
            ),
            (
                "INSERT INTO check_groups (check_id, group_id, sole)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bool[])",
                &[&plan.m_check, &plan.m_group, &plan.m_sole],
                "save group members",
            ),
            (
                "INSERT INTO check_deps (check_id, dep_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
                &[&plan.d_check, &plan.d_dep],
                "save dependencies",
            ),
        ];
        for (sql, params, what) in inserts {
            tx.execute(sql, params).await.map_err(db(what))?;
        }
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

    pub(super) async fn model_once(&self) -> Result<Model> {
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
            plan.m_sole.extend(std::iter::repeat_n(sole, seen.len()));
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
