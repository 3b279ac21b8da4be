//! Group and location aggregates: a pure function over the model and the states.
//!
//! For every group: worst status and `ok` over all its descendant checks
//! (checks of the group and of every group below it, each check counted once
//! per group however many paths lead to it), counts per status, and counts of
//! suppressed / in downtime / acknowledged / encompassed checks. An ignored
//! check (any of those four) counts as PENDING and ok. A group with no checks
//! is PENDING and ok. Locations work the same over the location tree, counting
//! host checks only.

use crate::model::{CheckId, CheckKind, GroupId, LocationId, Model, Status};
use crate::state::CheckState;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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

/// What one check adds to an aggregate: its effective status (PENDING when
/// ignored) and its ignore flags. Small and `Copy` so a backend can snapshot
/// every check cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contribution {
    /// Effective status: the check's status, or PENDING when it is ignored.
    pub status: Status,
    /// Suppressed.
    pub suppressed: bool,
    /// In downtime.
    pub in_downtime: bool,
    /// Acknowledged (normal or sticky).
    pub acknowledged: bool,
    /// Encompassed.
    pub encompassed: bool,
}

impl Contribution {
    /// The contribution of a check in `state`; a check without a state counts
    /// as PENDING and not ignored.
    pub fn of(state: Option<&CheckState>) -> Self {
        match state {
            None => Contribution::default(),
            Some(s) => Contribution {
                status: if s.is_ignored() {
                    Status::Pending
                } else {
                    s.status
                },
                suppressed: s.suppressed,
                in_downtime: s.in_downtime,
                acknowledged: s.acknowledged != crate::state::Ack::None,
                encompassed: s.encompassed,
            },
        }
    }
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

/// A compressed list of lists (one allocation): row `i` is
/// `data[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, Default)]
struct Rows {
    offsets: Vec<u32>,
    data: Vec<u32>,
}

impl Rows {
    fn new() -> Self {
        Rows {
            offsets: vec![0],
            data: Vec::new(),
        }
    }
    fn push_row(&mut self, row: impl IntoIterator<Item = u32>) {
        self.data.extend(row);
        self.offsets.push(self.data.len() as u32);
    }
    fn row(&self, i: usize) -> &[u32] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.data[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// The group graph and location tree of a [`Model`], indexed once so that
/// aggregates cost one pass over (check, ancestor) pairs.
///
/// Construction walks, for every group, its ancestors (itself included) once,
/// and gives every check the union of the ancestor sets of its direct groups,
/// deduplicated: so a check reachable through several paths counts once per
/// group. Aggregating is then `O(sum over checks of their ancestor count)`,
/// with no hashing beyond one state lookup per check (see `benches/store.rs`
/// for figures at 10,000 groups and 100,000 checks). Unknown group / location references and cycles (which
/// config loading rejects) are tolerated: unknown ids are skipped, a cycle
/// simply makes its members ancestors of each other.
///
/// Every output is sorted by id so that backends compare equal.
#[derive(Debug, Clone, Default)]
pub struct GraphIndex {
    checks: Vec<CheckId>,
    check_index: HashMap<CheckId, u32>,
    groups: Vec<GroupId>,
    group_index: HashMap<GroupId, u32>,
    locations: Vec<LocationId>,
    location_index: HashMap<LocationId, u32>,
    /// Per check: every group it is in, directly or below (deduplicated, sorted by id).
    check_groups: Rows,
    /// Per check: the locations its host is in (host checks only count in
    /// location aggregates, but every check can ask for its ancestors).
    check_locations: Rows,
    /// Per check: whether it counts in location aggregates (a host check).
    counts_in_locations: Vec<bool>,
    /// Per group: itself and its descendant groups.
    group_subtree: Rows,
    /// Per location: itself and its descendant locations.
    location_subtree: Rows,
}

/// Walks `start` and everything reachable through `next`, each node once.
fn closure<'a>(
    start: u32,
    stamp: &mut [u32],
    mark: u32,
    next: impl Fn(u32) -> &'a [u32],
) -> Vec<u32> {
    let mut out = vec![start];
    stamp[start as usize] = mark;
    let mut i = 0;
    while i < out.len() {
        for &n in next(out[i]) {
            if stamp[n as usize] != mark {
                stamp[n as usize] = mark;
                out.push(n);
            }
        }
        i += 1;
    }
    out
}

impl GraphIndex {
    /// Indexes a model.
    pub fn new(model: &Model) -> Self {
        let mut groups: Vec<GroupId> = model.groups.iter().map(|g| g.id).collect();
        groups.sort();
        groups.dedup();
        let group_index: HashMap<GroupId, u32> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (*g, i as u32))
            .collect();
        let mut locations: Vec<LocationId> = model.locations.iter().map(|l| l.id).collect();
        locations.sort();
        locations.dedup();
        let location_index: HashMap<LocationId, u32> = locations
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, i as u32))
            .collect();

        // Parent and child lists, by index.
        let mut group_parents: Vec<Vec<u32>> = vec![Vec::new(); groups.len()];
        let mut group_children: Vec<Vec<u32>> = vec![Vec::new(); groups.len()];
        for g in &model.groups {
            let Some(&gi) = group_index.get(&g.id) else {
                continue;
            };
            for p in &g.parents {
                if let Some(&pi) = group_index.get(p) {
                    group_parents[gi as usize].push(pi);
                    group_children[pi as usize].push(gi);
                }
            }
        }
        let mut location_parent: Vec<Vec<u32>> = vec![Vec::new(); locations.len()];
        let mut location_children: Vec<Vec<u32>> = vec![Vec::new(); locations.len()];
        for l in &model.locations {
            let Some(&li) = location_index.get(&l.id) else {
                continue;
            };
            if let Some(pi) = l.parent.and_then(|p| location_index.get(&p).copied()) {
                location_parent[li as usize] = vec![pi];
                location_children[pi as usize].push(li);
            }
        }

        let mut stamp = vec![u32::MAX; groups.len().max(locations.len())];
        let mut mark = 0u32;
        let mut next_mark = || {
            mark += 1;
            mark
        };

        let mut group_ancestors = Rows::new();
        let mut group_subtree = Rows::new();
        for gi in 0..groups.len() as u32 {
            let m = next_mark();
            group_ancestors.push_row(closure(gi, &mut stamp, m, |g| &group_parents[g as usize]));
            let m = next_mark();
            group_subtree.push_row(closure(gi, &mut stamp, m, |g| &group_children[g as usize]));
        }
        let mut location_ancestors = Rows::new();
        let mut location_subtree = Rows::new();
        for li in 0..locations.len() as u32 {
            let m = next_mark();
            location_ancestors
                .push_row(closure(li, &mut stamp, m, |l| &location_parent[l as usize]));
            let m = next_mark();
            location_subtree.push_row(closure(li, &mut stamp, m, |l| {
                &location_children[l as usize]
            }));
        }

        let mut checks: Vec<&crate::model::Check> = model.checks.iter().collect();
        checks.sort_by_key(|c| c.id);
        checks.dedup_by_key(|c| c.id);
        let by_id: HashMap<CheckId, &crate::model::Check> =
            checks.iter().map(|c| (c.id, *c)).collect();
        let mut check_groups = Rows::new();
        let mut check_locations = Rows::new();
        let mut counts_in_locations = Vec::with_capacity(checks.len());
        let mut gstamp = vec![u32::MAX; groups.len()];
        for (ci, c) in checks.iter().enumerate() {
            let mut row = Vec::new();
            for g in &c.groups {
                if let Some(&gi) = group_index.get(g) {
                    for &a in group_ancestors.row(gi as usize) {
                        if gstamp[a as usize] != ci as u32 {
                            gstamp[a as usize] = ci as u32;
                            row.push(a);
                        }
                    }
                }
            }
            // Indices are in id order, so sorting indices sorts by id.
            row.sort_unstable();
            check_groups.push_row(row);
            let host_location = c.location.or_else(|| {
                c.host_id
                    .and_then(|h| by_id.get(&h))
                    .and_then(|h| h.location)
            });
            let loc_row = host_location
                .and_then(|l| location_index.get(&l))
                .map(|&li| {
                    let mut r = location_ancestors.row(li as usize).to_vec();
                    r.sort_unstable();
                    r
                })
                .unwrap_or_default();
            check_locations.push_row(loc_row);
            counts_in_locations.push(c.kind == CheckKind::Host);
        }
        let check_ids: Vec<CheckId> = checks.iter().map(|c| c.id).collect();
        let check_index = check_ids
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as u32))
            .collect();
        GraphIndex {
            checks: check_ids,
            check_index,
            groups,
            group_index,
            locations,
            location_index,
            check_groups,
            check_locations,
            counts_in_locations,
            group_subtree,
            location_subtree,
        }
    }

    /// Every check id, sorted; a check's position here is its index.
    pub fn checks(&self) -> &[CheckId] {
        &self.checks
    }

    /// The index of a check in [`GraphIndex::checks`].
    pub fn check_index(&self, check: CheckId) -> Option<usize> {
        self.check_index.get(&check).map(|&i| i as usize)
    }

    /// Every group id, sorted.
    pub fn groups(&self) -> &[GroupId] {
        &self.groups
    }

    /// Every location id, sorted.
    pub fn locations(&self) -> &[LocationId] {
        &self.locations
    }

    /// Every group the check is in, directly or through descendants, each once, sorted.
    pub fn ancestor_groups(&self, check: CheckId) -> Option<Vec<GroupId>> {
        let ci = self.check_index(check)?;
        Some(
            self.check_groups
                .row(ci)
                .iter()
                .map(|&g| self.groups[g as usize])
                .collect(),
        )
    }

    /// Indices (into [`GraphIndex::groups`]) of the groups of the check at `index`.
    pub(crate) fn group_indices_of_check(&self, index: usize) -> &[u32] {
        self.check_groups.row(index)
    }

    /// Indices (into [`GraphIndex::locations`]) of the locations counting the
    /// check at `index` (empty unless it is a host check).
    pub(crate) fn location_indices_of_check(&self, index: usize) -> &[u32] {
        if self
            .counts_in_locations
            .get(index)
            .copied()
            .unwrap_or(false)
        {
            self.check_locations.row(index)
        } else {
            &[]
        }
    }

    /// The location of the check's host and that location's ancestors, sorted.
    pub fn ancestor_locations(&self, check: CheckId) -> Option<Vec<LocationId>> {
        let ci = self.check_index(check)?;
        Some(
            self.check_locations
                .row(ci)
                .iter()
                .map(|&l| self.locations[l as usize])
                .collect(),
        )
    }

    /// The group ids selected by `root` (all, or root and its descendants;
    /// an unknown root selects nothing), as indices sorted by id.
    fn select_groups(&self, root: Option<GroupId>) -> Vec<u32> {
        match root {
            None => (0..self.groups.len() as u32).collect(),
            Some(r) => match self.group_index.get(&r) {
                None => Vec::new(),
                Some(&ri) => {
                    let mut v = self.group_subtree.row(ri as usize).to_vec();
                    v.sort_unstable();
                    v
                }
            },
        }
    }

    fn select_locations(&self, root: Option<LocationId>) -> Vec<u32> {
        match root {
            None => (0..self.locations.len() as u32).collect(),
            Some(r) => match self.location_index.get(&r) {
                None => Vec::new(),
                Some(&ri) => {
                    let mut v = self.location_subtree.row(ri as usize).to_vec();
                    v.sort_unstable();
                    v
                }
            },
        }
    }

    /// Aggregates of every group, indexed like [`GraphIndex::groups`], from the
    /// contribution of every check (indexed like [`GraphIndex::checks`]).
    pub fn all_group_aggregates(
        &self,
        contribution: impl Fn(usize) -> Contribution,
    ) -> Vec<Aggregate> {
        let mut aggs = vec![Aggregate::empty(); self.groups.len()];
        for ci in 0..self.checks.len() {
            let row = self.check_groups.row(ci);
            if row.is_empty() {
                continue;
            }
            let c = contribution(ci);
            for &g in row {
                aggs[g as usize].add_counts(c);
            }
        }
        aggs.iter_mut().for_each(Aggregate::refresh);
        aggs
    }

    /// Aggregates of every location, indexed like [`GraphIndex::locations`].
    pub fn all_location_aggregates(
        &self,
        contribution: impl Fn(usize) -> Contribution,
    ) -> Vec<Aggregate> {
        let mut aggs = vec![Aggregate::empty(); self.locations.len()];
        for ci in 0..self.checks.len() {
            let row = self.location_indices_of_check(ci);
            if row.is_empty() {
                continue;
            }
            let c = contribution(ci);
            for &l in row {
                aggs[l as usize].add_counts(c);
            }
        }
        aggs.iter_mut().for_each(Aggregate::refresh);
        aggs
    }

    /// Picks the groups of `root` (see [`GraphIndex::group_states`]) out of
    /// precomputed aggregates (indexed like [`GraphIndex::groups`]).
    pub fn pick_groups(&self, aggregates: &[Aggregate], root: Option<GroupId>) -> Vec<GroupState> {
        self.select_groups(root)
            .into_iter()
            .filter_map(|g| {
                Some(GroupState {
                    id: self.groups[g as usize],
                    aggregate: *aggregates.get(g as usize)?,
                })
            })
            .collect()
    }

    /// Picks exactly these groups (unknown ids left out, sorted, each once).
    pub fn pick_groups_of(&self, aggregates: &[Aggregate], ids: &[GroupId]) -> Vec<GroupState> {
        let mut idx: Vec<u32> = ids
            .iter()
            .filter_map(|g| self.group_index.get(g).copied())
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .filter_map(|g| {
                Some(GroupState {
                    id: self.groups[g as usize],
                    aggregate: *aggregates.get(g as usize)?,
                })
            })
            .collect()
    }

    /// Picks the locations of `root` out of precomputed aggregates.
    pub fn pick_locations(
        &self,
        aggregates: &[Aggregate],
        root: Option<LocationId>,
    ) -> Vec<LocationState> {
        self.select_locations(root)
            .into_iter()
            .filter_map(|l| {
                Some(LocationState {
                    id: self.locations[l as usize],
                    aggregate: *aggregates.get(l as usize)?,
                })
            })
            .collect()
    }

    /// Picks exactly these locations (unknown ids left out, sorted, each once).
    pub fn pick_locations_of(
        &self,
        aggregates: &[Aggregate],
        ids: &[LocationId],
    ) -> Vec<LocationState> {
        let mut idx: Vec<u32> = ids
            .iter()
            .filter_map(|l| self.location_index.get(l).copied())
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .filter_map(|l| {
                Some(LocationState {
                    id: self.locations[l as usize],
                    aggregate: *aggregates.get(l as usize)?,
                })
            })
            .collect()
    }

    /// Aggregates of every group (`root` None) or of `root` and its
    /// descendants (an unknown root gives an empty list), sorted by id.
    pub fn group_states<'s>(
        &self,
        states: impl Fn(CheckId) -> Option<&'s CheckState>,
        root: Option<GroupId>,
    ) -> Vec<GroupState> {
        let aggs = self.all_group_aggregates(|ci| Contribution::of(states(self.checks[ci])));
        self.pick_groups(&aggs, root)
    }

    /// Aggregates of every location (`root` None) or of `root` and its
    /// descendants, sorted by id.
    pub fn location_states<'s>(
        &self,
        states: impl Fn(CheckId) -> Option<&'s CheckState>,
        root: Option<LocationId>,
    ) -> Vec<LocationState> {
        let aggs = self.all_location_aggregates(|ci| Contribution::of(states(self.checks[ci])));
        self.pick_locations(&aggs, root)
    }
}

/// Aggregates of every group of `model` (`root` None), or of `root` and its
/// descendant groups, sorted by group id. `states` gives each check's state
/// (a check without one counts as PENDING). An unknown root gives an empty list.
///
/// Builds a [`GraphIndex`]; keep one around to aggregate a model repeatedly.
pub fn group_states<'s>(
    model: &Model,
    states: impl Fn(CheckId) -> Option<&'s CheckState>,
    root: Option<GroupId>,
) -> Vec<GroupState> {
    GraphIndex::new(model).group_states(states, root)
}

/// Aggregates of exactly `groups` (unknown ids left out), sorted by id.
pub fn group_states_of<'s>(
    model: &Model,
    states: impl Fn(CheckId) -> Option<&'s CheckState>,
    groups: &[GroupId],
) -> Vec<GroupState> {
    let index = GraphIndex::new(model);
    let aggs = index.all_group_aggregates(|ci| Contribution::of(states(index.checks[ci])));
    index.pick_groups_of(&aggs, groups)
}

/// Aggregates of every location (`root` None), or of `root` and its
/// descendants, over host checks only, sorted by location id.
pub fn location_states<'s>(
    model: &Model,
    states: impl Fn(CheckId) -> Option<&'s CheckState>,
    root: Option<LocationId>,
) -> Vec<LocationState> {
    GraphIndex::new(model).location_states(states, root)
}

/// Aggregates of exactly `locations` (unknown ids left out), sorted by id.
pub fn location_states_of<'s>(
    model: &Model,
    states: impl Fn(CheckId) -> Option<&'s CheckState>,
    locations: &[LocationId],
) -> Vec<LocationState> {
    let index = GraphIndex::new(model);
    let aggs = index.all_location_aggregates(|ci| Contribution::of(states(index.checks[ci])));
    index.pick_locations_of(&aggs, locations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Check, Group, Policy};

    fn gid(n: &str) -> GroupId {
        GroupId::named("t", n)
    }

    fn chk(n: &str, groups: &[&str]) -> Check {
        Check {
            id: CheckId::host("t", n),
            kind: CheckKind::Host,
            host: n.into(),
            name: n.into(),
            host_id: None,
            engine: "dummy".into(),
            pool: "p".into(),
            params: Default::default(),
            policy: Policy::default(),
            groups: groups.iter().map(|g| gid(g)).collect(),
            location: None,
            dependencies: vec![],
            enabled: true,
        }
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
