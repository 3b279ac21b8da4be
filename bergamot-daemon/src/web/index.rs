//! Lookups over the model the API and the websocket hub need on every
//! request: by id, group children, and the transitive group membership of
//! checks and groups (for filters and group subscriptions).

use bergamot_core::model::{Check, CheckId, Group, GroupId, Location, LocationId, Model};
use std::collections::{HashMap, HashSet};

/// The model with its lookups, rebuilt on every config (re)load.
#[derive(Debug, Default)]
pub struct ModelIndex {
    /// The model.
    pub model: Model,
    check_pos: HashMap<CheckId, usize>,
    group_pos: HashMap<GroupId, usize>,
    location_pos: HashMap<LocationId, usize>,
    children: HashMap<GroupId, Vec<GroupId>>,
    direct_checks: HashMap<GroupId, Vec<CheckId>>,
    /// Every group a check is in, directly or through descendants.
    check_ancestors: HashMap<CheckId, HashSet<GroupId>>,
    /// Every group at or above a group.
    group_ancestors: HashMap<GroupId, HashSet<GroupId>>,
    /// Positions in `model.checks`, sorted by (display name, id): the order
    /// of search results and their cursors.
    search_order: Vec<usize>,
    /// Per check (same positions as `model.checks`): its display name.
    display_names: Vec<String>,
    /// Per check: host, name and display name, lower-cased, for `q`.
    search_text: Vec<String>,
}

/// Each item's position in `items`, by its id.
fn positions<T, K: std::hash::Hash + Eq>(items: &[T], id: impl Fn(&T) -> K) -> HashMap<K, usize> {
    items.iter().enumerate().map(|(i, x)| (id(x), i)).collect()
}

impl ModelIndex {
    /// Indexes a model.
    pub fn new(model: Model) -> Self {
        let check_pos = positions(&model.checks, |c| c.id);
        let group_pos = positions(&model.groups, |g| g.id);
        let location_pos = positions(&model.locations, |l| l.id);
        let mut children: HashMap<GroupId, Vec<GroupId>> = HashMap::new();
        for g in &model.groups {
            for p in &g.parents {
                children.entry(*p).or_default().push(g.id);
            }
        }
        let mut group_ancestors: HashMap<GroupId, HashSet<GroupId>> = HashMap::new();
        for g in &model.groups {
            let mut seen = HashSet::new();
            let mut stack = vec![g.id];
            while let Some(id) = stack.pop() {
                if !seen.insert(id) {
                    continue;
                }
                if let Some(&i) = group_pos.get(&id) {
                    stack.extend(model.groups[i].parents.iter().copied());
                }
            }
            group_ancestors.insert(g.id, seen);
        }
        let mut direct_checks: HashMap<GroupId, Vec<CheckId>> = HashMap::new();
        let mut check_ancestors = HashMap::new();
        for c in &model.checks {
            let mut all = HashSet::new();
            for g in &c.groups {
                direct_checks.entry(*g).or_default().push(c.id);
                if let Some(a) = group_ancestors.get(g) {
                    all.extend(a.iter().copied());
                }
            }
            check_ancestors.insert(c.id, all);
        }
        let display_names: Vec<String> = model.checks.iter().map(Check::display_name).collect();
        let search_text = model
            .checks
            .iter()
            .zip(&display_names)
            .map(|(c, d)| format!("{}\n{}\n{}", c.host, c.name, d).to_lowercase())
            .collect();
        let mut search_order: Vec<usize> = (0..model.checks.len()).collect();
        search_order.sort_by(|&a, &b| {
            (&display_names[a], model.checks[a].id).cmp(&(&display_names[b], model.checks[b].id))
        });
        ModelIndex {
            search_order,
            display_names,
            search_text,
            model,
            check_pos,
            group_pos,
            location_pos,
            children,
            direct_checks,
            check_ancestors,
            group_ancestors,
        }
    }

    /// A check by id.
    pub fn check(&self, id: CheckId) -> Option<&Check> {
        self.check_pos.get(&id).map(|&i| &self.model.checks[i])
    }

    /// A group by id.
    pub fn group(&self, id: GroupId) -> Option<&Group> {
        self.group_pos.get(&id).map(|&i| &self.model.groups[i])
    }

    /// A group by id or name.
    pub fn find_group(&self, key: &str) -> Option<&Group> {
        match key.parse::<GroupId>() {
            Ok(id) => self.group(id),
            Err(_) => self.model.groups.iter().find(|g| g.name == key),
        }
    }

    /// A location by id.
    pub fn location(&self, id: LocationId) -> Option<&Location> {
        self.location_pos
            .get(&id)
            .map(|&i| &self.model.locations[i])
    }

    /// Direct child groups of a group.
    pub fn children(&self, id: GroupId) -> &[GroupId] {
        self.children.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Checks directly in a group.
    pub fn direct_checks(&self, id: GroupId) -> &[CheckId] {
        self.direct_checks
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether the check is in the group or one of its descendants.
    pub fn check_in_group(&self, check: CheckId, group: GroupId) -> bool {
        self.check_ancestors
            .get(&check)
            .is_some_and(|a| a.contains(&group))
    }

    /// Positions in `model.checks` in search order: by display name, then id.
    pub fn search_order(&self) -> &[usize] {
        &self.search_order
    }

    /// Display name of the check at a position of `model.checks`.
    pub fn display_name_at(&self, pos: usize) -> &str {
        self.display_names
            .get(pos)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Lower-cased host, name and display name of the check at a position.
    pub fn search_text_at(&self, pos: usize) -> &str {
        self.search_text.get(pos).map(String::as_str).unwrap_or("")
    }

    /// Position of a check in `model.checks`.
    pub fn check_position(&self, id: CheckId) -> Option<usize> {
        self.check_pos.get(&id).copied()
    }

    /// Positions in `model.checks` of every check in `group` or below it
    /// (each once; costs the size of the answer, not of the model).
    pub fn positions_under(&self, group: GroupId) -> Vec<usize> {
        let mut seen = HashSet::new();
        for (g, ancestors) in &self.group_ancestors {
            if ancestors.contains(&group) {
                for c in self.direct_checks(*g) {
                    if let Some(&p) = self.check_pos.get(c) {
                        seen.insert(p);
                    }
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Whether the check is under any of these groups.
    pub fn check_under_any(&self, check: CheckId, groups: &HashSet<GroupId>) -> bool {
        self.check_ancestors
            .get(&check)
            .is_some_and(|a| a.iter().any(|g| groups.contains(g)))
    }

    /// Whether `group` is one of `groups` or below one of them.
    pub fn group_under_any(&self, group: GroupId, groups: &HashSet<GroupId>) -> bool {
        self.group_ancestors
            .get(&group)
            .is_some_and(|a| a.iter().any(|g| groups.contains(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitive_membership() {
        let site = "s";
        let g = |n: &str, parents: &[&str]| Group {
            id: GroupId::named(site, n),
            name: n.into(),
            parents: parents.iter().map(|p| GroupId::named(site, p)).collect(),
        };
        let check = Check::host(site, "h")
            .engine("dummy")
            .group(GroupId::named(site, "c"))
            .build();
        let idx = ModelIndex::new(Model {
            site: site.into(),
            checks: vec![check.clone()],
            groups: vec![g("a", &[]), g("b", &["a"]), g("c", &["b"]), g("x", &[])],
            locations: vec![],
        });
        assert!(idx.check_in_group(check.id, GroupId::named(site, "a")));
        assert!(!idx.check_in_group(check.id, GroupId::named(site, "x")));
        let set: HashSet<_> = [GroupId::named(site, "b")].into();
        assert!(idx.group_under_any(GroupId::named(site, "c"), &set));
        assert!(!idx.group_under_any(GroupId::named(site, "a"), &set));
        assert_eq!(
            idx.children(GroupId::named(site, "a")),
            &[GroupId::named(site, "b")]
        );
        assert_eq!(
            idx.find_group("c").map(|g| g.id),
            Some(GroupId::named(site, "c"))
        );
    }
}
