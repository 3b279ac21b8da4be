//! Downtime windows: schedule, cancel, apply when due.

use super::apply::Writes;
use super::PostgresStore;
use crate::error::{Error, Result};
use bergamot_core::model::CheckId;
use bergamot_core::state::{self, Transition};
use bergamot_core::store::Downtime;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use uuid::Uuid;

impl PostgresStore {
    pub(super) async fn schedule_downtime_once(
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
            .get(&d.check_id)
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
            Self::write_one(&tx, &mut locked, d.check_id, &t, now).await?;
            out = Some(t);
        }
        tx.commit().await.map_err(Error::db("commit a downtime"))?;
        Ok(out)
    }

    pub(super) async fn cancel_downtime_once(
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
        if let Some(l) = locked.get(&check) {
            if l.state.in_downtime && !active {
                let t = state::set_downtime(&l.state, false, &l.policy, now);
                if Self::write_one(&tx, &mut locked, check, &t, now).await? {
                    out = Some((check, t));
                }
            }
        }
        tx.commit()
            .await
            .map_err(Error::db("commit a downtime cancel"))?;
        Ok(out)
    }

    pub(super) async fn apply_due_downtimes_once(
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
            if writes.apply(check, l, &t, now, None)? {
                out.push((check, t));
            }
        }
        Self::write_back(&tx, &locked, &writes).await?;
        tx.commit()
            .await
            .map_err(Error::db("commit due downtimes"))?;
        Ok(out)
    }

    pub(super) async fn read_downtimes(
        &self,
        check: Option<CheckId>,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<Vec<Downtime>> {
        let rows = self
            .query(
                "SELECT id, check_id, starts_at, ends_at, author, comment FROM downtimes
                 WHERE ($1::uuid IS NULL OR check_id = $1) AND ends_at > $2
                 ORDER BY starts_at, id",
                &[&check.map(|c| c.0), &now],
                "read downtimes",
            )
            .await?;
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
}
