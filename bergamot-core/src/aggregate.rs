//! Group and location aggregates: a pure function over the model and the states.
//!
//! For every group: worst status and `ok` over all its descendant checks
//! (checks of the group and of every group below it, each check counted once
//! per group however many paths lead to it), counts per status, and counts of
//! suppressed / in downtime / acknowledged / encompassed checks. An ignored
//! check (any of those four) counts as PENDING and ok. A group with no checks
//! is PENDING and ok. Locations work the same over the location tree, counting
//! host checks only.

use crate::model::{GroupId, LocationId, Status};
use serde::{Deserialize, Serialize};

pub(crate) mod index;
pub use index::{group_states, group_states_of, location_states, location_states_of};
pub(crate) use index::{Contribution, GraphIndex};

/// The aggregate state of a group or location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Aggregate {
    /// Worst status (by rank) of the descendant checks (ignored ones count as PENDING).
    pub status: Status,
    /// Whether `status` is ok.
    pub ok: bool,
    /// Number of descendant checks (each once).
    pub total: u32,
    /// Checks per status, indexed by status code ([`Status::severity`]; ignored ones under PENDING).
    pub counts: [u32; 10],
    /// Suppressed checks.
    pub suppressed: u32,
    /// Checks in downtime.
    pub in_downtime: u32,
    /// Acknowledged checks.
    pub acknowledged: u32,
    /// Encompassed checks.
    pub encompassed: u32,
}

/// The aggregate of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group.
    pub id: GroupId,
    /// Its aggregate.
    pub aggregate: Aggregate,
}

/// The aggregate of one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationState {
    /// The location.
    pub id: LocationId,
    /// Its aggregate.
    pub aggregate: Aggregate,
}

impl Aggregate {
    /// The aggregate of no checks: PENDING and ok.
    pub fn empty() -> Self {
        Aggregate {
            ok: true,
            ..Aggregate::default()
        }
    }

    /// Adds one check's contribution.
    pub fn add(&mut self, c: Contribution) {
        self.add_counts(c);
        self.refresh();
    }

    /// Adds to the counters only; `refresh` must follow before reading status.
    fn add_counts(&mut self, c: Contribution) {
        self.total += 1;
        self.counts[usize::from(c.status.severity())] += 1;
        self.suppressed += u32::from(c.suppressed);
        self.in_downtime += u32::from(c.in_downtime);
        self.acknowledged += u32::from(c.acknowledged);
        self.encompassed += u32::from(c.encompassed);
    }

    /// Removes a contribution previously added (for incremental maintenance).
    pub fn remove(&mut self, c: Contribution) {
        self.total = self.total.saturating_sub(1);
        let i = usize::from(c.status.severity());
        self.counts[i] = self.counts[i].saturating_sub(1);
        self.suppressed = self.suppressed.saturating_sub(u32::from(c.suppressed));
        self.in_downtime = self.in_downtime.saturating_sub(u32::from(c.in_downtime));
        self.acknowledged = self.acknowledged.saturating_sub(u32::from(c.acknowledged));
        self.encompassed = self.encompassed.saturating_sub(u32::from(c.encompassed));
        self.refresh();
    }

    /// Recomputes `status` and `ok` from `counts`: the worst status is the
    /// worst-ranked one with a non-zero count.
    fn refresh(&mut self) {
        self.status = Status::BY_RANK
            .iter()
            .rev()
            .copied()
            .find(|s| self.counts[usize::from(s.severity())] > 0)
            .unwrap_or(Status::Pending);
        self.ok = self.status.is_ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Check, CheckId, Group, Model, Policy};
    use crate::state::CheckState;
    use std::collections::HashMap;

    fn gid(n: &str) -> GroupId {
        GroupId::named("t", n)
    }

    fn chk(n: &str, groups: &[&str]) -> Check {
        Check::host("t", n)
            .engine("dummy")
            .pool("p")
            .groups(groups.iter().map(|g| gid(g)).collect())
            .build()
    }

    fn grp(n: &str, parents: &[&str]) -> Group {
        Group {
            id: gid(n),
            name: n.into(),
            parents: parents.iter().map(|p| gid(p)).collect(),
        }
    }

    fn state(status: Status) -> CheckState {
        let mut s = crate::state::initial_state(&Policy::default());
        s.status = status;
        s.ok = status.is_ok();
        s
    }

    fn agg(states: &[GroupState], n: &str) -> Aggregate {
        states
            .iter()
            .find(|g| g.id == gid(n))
            .map(|g| g.aggregate)
            .expect("group present")
    }

    #[test]
    fn diamond_counts_each_check_once_and_empty_is_pending_ok() {
        // top <- l, r <- bottom (diamond); x in bottom and in l directly.
        let model = Model {
            site: "t".into(),
            checks: vec![chk("x", &["bottom", "l"]), chk("y", &["r"])],
            groups: vec![
                grp("top", &[]),
                grp("l", &["top"]),
                grp("r", &["top"]),
                grp("bottom", &["l", "r"]),
                grp("empty", &["top"]),
            ],
            locations: vec![],
        };
        let st: HashMap<CheckId, CheckState> = [
            (CheckId::host("t", "x"), state(Status::Warning)),
            (CheckId::host("t", "y"), state(Status::Ok)),
        ]
        .into();
        let out = group_states(&model, |id| st.get(&id), None);
        assert_eq!(out.len(), 5);
        let top = agg(&out, "top");
        assert_eq!((top.total, top.status, top.ok), (2, Status::Warning, false));
        assert_eq!(top.counts[Status::Warning.severity() as usize], 1);
        assert_eq!(
            agg(&out, "l").total,
            1,
            "x reachable twice from l, counted once"
        );
        let empty = agg(&out, "empty");
        assert_eq!(
            (empty.total, empty.status, empty.ok),
            (0, Status::Pending, true)
        );
        let sub = group_states(&model, |id| st.get(&id), Some(gid("r")));
        let mut want = vec![gid("r"), gid("bottom")];
        want.sort();
        assert_eq!(sub.iter().map(|g| g.id).collect::<Vec<_>>(), want);
    }

    #[test]
    fn ignored_checks_count_as_pending_ok_and_in_their_counters() {
        let model = Model {
            site: "t".into(),
            checks: vec![chk("x", &["g"]), chk("y", &["g"])],
            groups: vec![grp("g", &[])],
            locations: vec![],
        };
        let mut x = state(Status::Critical);
        x.suppressed = true;
        x.in_downtime = true;
        let mut y = state(Status::Warning);
        y.acknowledged = crate::state::Ack::Sticky;
        let st: HashMap<CheckId, CheckState> =
            [(CheckId::host("t", "x"), x), (CheckId::host("t", "y"), y)].into();
        let a = agg(&group_states(&model, |id| st.get(&id), None), "g");
        assert_eq!((a.status, a.ok, a.counts[0]), (Status::Pending, true, 2));
        assert_eq!(
            (a.suppressed, a.in_downtime, a.acknowledged, a.encompassed),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn cycles_and_unknown_references_do_not_hang() {
        let model = Model {
            site: "t".into(),
            checks: vec![chk("x", &["a", "nope"])],
            groups: vec![grp("a", &["b"]), grp("b", &["a", "missing"])],
            locations: vec![],
        };
        let out = group_states(&model, |_| None, None);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|g| g.aggregate.total == 1));
    }

    #[test]
    fn add_then_remove_restores_the_aggregate() {
        let mut a = Aggregate::empty();
        let c1 = Contribution {
            status: Status::Critical,
            ..Default::default()
        };
        let c2 = Contribution {
            status: Status::Warning,
            suppressed: true,
            ..Default::default()
        };
        a.add(c1);
        a.add(c2);
        assert_eq!(a.status, Status::Critical);
        a.remove(c1);
        assert_eq!((a.status, a.total, a.suppressed), (Status::Warning, 1, 1));
        a.remove(c2);
        assert_eq!(a, Aggregate::empty());
    }
}
