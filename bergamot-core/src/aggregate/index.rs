//! The backend half of aggregation: the [`GraphIndex`] of a model and the
//! [`Contribution`] of one check (re-exported from [`crate::backend`]), and
//! the aggregate functions built on them.

use super::{Aggregate, GroupState, LocationState};
use crate::model::{CheckId, CheckKind, GroupId, LocationId, Model, Status};
use crate::state::CheckState;
use std::collections::HashMap;
use std::hash::Hash;

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
    groups: Nodes<GroupId>,
    locations: Nodes<LocationId>,
    /// Per check: every group it is in, directly or below (deduplicated, sorted by id).
    check_groups: Rows,
    /// Per check: the locations its host is in (host checks only count in
    /// location aggregates, but every check can ask for its ancestors).
    check_locations: Rows,
    /// Per check: whether it counts in location aggregates (a host check).
    counts_in_locations: Vec<bool>,
}

/// The groups or the locations of a model: their ids sorted (a node's
/// position is its index), and per node itself and its descendants.
#[derive(Debug, Clone)]
struct Nodes<Id> {
    ids: Vec<Id>,
    index: HashMap<Id, u32>,
    subtree: Rows,
}

impl<Id> Default for Nodes<Id> {
    fn default() -> Self {
        Nodes {
            ids: Vec::new(),
            index: HashMap::new(),
            subtree: Rows::default(),
        }
    }
}

impl<Id: Copy + Ord + Hash> Nodes<Id> {
    /// Sorted, deduplicated `ids` and their index; subtrees come later.
    fn new(ids: impl Iterator<Item = Id>) -> Self {
        let mut ids: Vec<Id> = ids.collect();
        ids.sort();
        ids.dedup();
        let index = positions(&ids);
        Nodes {
            ids,
            index,
            subtree: Rows::new(),
        }
    }

    fn get(&self, id: &Id) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// Empty parent and child lists, one per node.
    fn empty_links(&self) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        (
            vec![Vec::new(); self.ids.len()],
            vec![Vec::new(); self.ids.len()],
        )
    }

    /// Sets each node's subtree from `children`; returns each node's
    /// ancestors (itself included) from `parents`.
    fn link(&mut self, parents: &[Vec<u32>], children: &[Vec<u32>]) -> Rows {
        let mut stamp = vec![u32::MAX; self.ids.len()];
        let mut mark = 0u32;
        let mut ancestors = Rows::new();
        let mut subtree = Rows::new();
        for i in 0..self.ids.len() as u32 {
            mark += 1;
            ancestors.push_row(closure(i, &mut stamp, mark, |n| &parents[n as usize]));
            mark += 1;
            subtree.push_row(closure(i, &mut stamp, mark, |n| &children[n as usize]));
        }
        self.subtree = subtree;
        ancestors
    }

    /// The ids selected by `root` (all, or root and its descendants; an
    /// unknown root selects nothing), as indices sorted by id.
    fn select(&self, root: Option<Id>) -> Vec<u32> {
        match root {
            None => (0..self.ids.len() as u32).collect(),
            Some(r) => match self.get(&r) {
                None => Vec::new(),
                Some(ri) => {
                    let mut v = self.subtree.row(ri as usize).to_vec();
                    v.sort_unstable();
                    v
                }
            },
        }
    }

    /// The indices of the known ones of `ids`, sorted, each once.
    fn select_of(&self, ids: &[Id]) -> Vec<u32> {
        let mut idx: Vec<u32> = ids.iter().filter_map(|id| self.get(id)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx
    }

    /// The state (made by `state`) of each selected node out of `aggregates`.
    fn pick<S>(
        &self,
        selected: Vec<u32>,
        aggregates: &[Aggregate],
        state: impl Fn(Id, Aggregate) -> S,
    ) -> Vec<S> {
        selected
            .into_iter()
            .filter_map(|i| Some(state(self.ids[i as usize], *aggregates.get(i as usize)?)))
            .collect()
    }

    /// Aggregates of every node, from the contribution of every check
    /// (`checks` of them) to the nodes `row` gives for it.
    fn aggregate<'r>(
        &self,
        checks: usize,
        row: impl Fn(usize) -> &'r [u32],
        contribution: impl Fn(usize) -> Contribution,
    ) -> Vec<Aggregate> {
        let mut aggs = vec![Aggregate::empty(); self.ids.len()];
        for ci in 0..checks {
            let row = row(ci);
            if row.is_empty() {
                continue;
            }
            let c = contribution(ci);
            for &n in row {
                aggs[n as usize].add_counts(c);
            }
        }
        aggs.iter_mut().for_each(Aggregate::refresh);
        aggs
    }
}

/// Each id's position in `ids`.
fn positions<Id: Copy + Eq + Hash>(ids: &[Id]) -> HashMap<Id, u32> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u32))
        .collect()
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
    /// Indexes `model`.
    pub fn new(model: &Model) -> Self {
        let mut groups = Nodes::new(model.groups.iter().map(|g| g.id));
        let mut locations = Nodes::new(model.locations.iter().map(|l| l.id));

        // Parent and child lists, by index.
        let (mut group_parents, mut group_children) = groups.empty_links();
        for g in &model.groups {
            let Some(gi) = groups.get(&g.id) else {
                continue;
            };
            for p in &g.parents {
                if let Some(pi) = groups.get(p) {
                    group_parents[gi as usize].push(pi);
                    group_children[pi as usize].push(gi);
                }
            }
        }
        let (mut location_parent, mut location_children) = locations.empty_links();
        for l in &model.locations {
            let Some(li) = locations.get(&l.id) else {
                continue;
            };
            if let Some(pi) = l.parent.and_then(|p| locations.get(&p)) {
                location_parent[li as usize] = vec![pi];
                location_children[pi as usize].push(li);
            }
        }
        let group_ancestors = groups.link(&group_parents, &group_children);
        let location_ancestors = locations.link(&location_parent, &location_children);

        let mut checks: Vec<&crate::model::Check> = model.checks.iter().collect();
        checks.sort_by_key(|c| c.id);
        checks.dedup_by_key(|c| c.id);
        let by_id: HashMap<CheckId, &crate::model::Check> =
            checks.iter().map(|c| (c.id, *c)).collect();
        let mut check_groups = Rows::new();
        let mut check_locations = Rows::new();
        let mut counts_in_locations = Vec::with_capacity(checks.len());
        let mut gstamp = vec![u32::MAX; groups.ids.len()];
        for (ci, c) in checks.iter().enumerate() {
            let mut row = Vec::new();
            for g in &c.groups {
                if let Some(gi) = groups.get(g) {
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
                .and_then(|l| locations.get(&l))
                .map(|li| {
                    let mut r = location_ancestors.row(li as usize).to_vec();
                    r.sort_unstable();
                    r
                })
                .unwrap_or_default();
            check_locations.push_row(loc_row);
            counts_in_locations.push(c.kind == CheckKind::Host);
        }
        let check_ids: Vec<CheckId> = checks.iter().map(|c| c.id).collect();
        let check_index = positions(&check_ids);
        GraphIndex {
            checks: check_ids,
            check_index,
            groups,
            locations,
            check_groups,
            check_locations,
            counts_in_locations,
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
        &self.groups.ids
    }

    /// Every location id, sorted.
    pub fn locations(&self) -> &[LocationId] {
        &self.locations.ids
    }

    /// Every group the check is in, directly or through descendants, each once, sorted.
    pub fn ancestor_groups(&self, check: CheckId) -> Option<Vec<GroupId>> {
        let ci = self.check_index(check)?;
        Some(
            self.check_groups
                .row(ci)
                .iter()
                .map(|&g| self.groups.ids[g as usize])
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
                .map(|&l| self.locations.ids[l as usize])
                .collect(),
        )
    }

    /// Aggregates of every group, indexed like [`GraphIndex::groups`], from the
    /// contribution of every check (indexed like [`GraphIndex::checks`]).
    pub fn all_group_aggregates(
        &self,
        contribution: impl Fn(usize) -> Contribution,
    ) -> Vec<Aggregate> {
        self.groups.aggregate(
            self.checks.len(),
            |ci| self.check_groups.row(ci),
            contribution,
        )
    }

    /// Aggregates of every location, indexed like [`GraphIndex::locations`].
    pub fn all_location_aggregates(
        &self,
        contribution: impl Fn(usize) -> Contribution,
    ) -> Vec<Aggregate> {
        self.locations.aggregate(
            self.checks.len(),
            |ci| self.location_indices_of_check(ci),
            contribution,
        )
    }

    /// Picks the groups of `root` (see [`GraphIndex::group_states`]) out of
    /// precomputed aggregates (indexed like [`GraphIndex::groups`]).
    pub fn pick_groups(&self, aggregates: &[Aggregate], root: Option<GroupId>) -> Vec<GroupState> {
        let selected = self.groups.select(root);
        self.groups.pick(selected, aggregates, group_state)
    }

    /// Picks exactly these groups (unknown ids left out, sorted, each once).
    pub fn pick_groups_of(&self, aggregates: &[Aggregate], ids: &[GroupId]) -> Vec<GroupState> {
        let selected = self.groups.select_of(ids);
        self.groups.pick(selected, aggregates, group_state)
    }

    /// Picks the locations of `root` out of precomputed aggregates.
    pub fn pick_locations(
        &self,
        aggregates: &[Aggregate],
        root: Option<LocationId>,
    ) -> Vec<LocationState> {
        let selected = self.locations.select(root);
        self.locations.pick(selected, aggregates, location_state)
    }

    /// Picks exactly these locations (unknown ids left out, sorted, each once).
    pub fn pick_locations_of(
        &self,
        aggregates: &[Aggregate],
        ids: &[LocationId],
    ) -> Vec<LocationState> {
        let selected = self.locations.select_of(ids);
        self.locations.pick(selected, aggregates, location_state)
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

fn group_state(id: GroupId, aggregate: Aggregate) -> GroupState {
    GroupState { id, aggregate }
}

fn location_state(id: LocationId, aggregate: Aggregate) -> LocationState {
    LocationState { id, aggregate }
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
