//! Group and location aggregates: the recursive queries agree with the
//! core's pure aggregate (`bergamot_core::aggregate`) on a generated graph.

mod common;

use bergamot_core::aggregate;
use bergamot_core::model::{
    Check, CheckId, CheckKind, Group, GroupId, Location, LocationId, Model, Status,
};
use bergamot_core::state::CheckState;
use bergamot_core::store::Store;
use common::{raw_client, TestStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use uuid::Uuid;

fn check(id: CheckId, kind: CheckKind, host: &str, name: &str) -> Check {
    Check::builder(id, kind, host, name).engine("dummy").build()
}

/// A layered group DAG (`levels` deep, several parents per group), checks in
/// random groups, hosts in a random location tree.
fn generate(rng: &mut StdRng, groups: usize, checks: usize, levels: usize) -> Model {
    let site = "gen";
    let mut model = Model {
        site: site.into(),
        ..Model::default()
    };
    let mut by_level: Vec<Vec<GroupId>> = vec![Vec::new(); levels];
    for i in 0..groups {
        // The first `levels` groups form a chain so that the depth is exact.
        let level = if i < levels {
            i
        } else {
            rng.gen_range(0..levels)
        };
        let id = GroupId::named(site, &format!("g{i}"));
        let mut parents = Vec::new();
        if level > 0 {
            let above = &by_level[level - 1];
            let n = rng.gen_range(1..=3);
            for _ in 0..n {
                let p = above[rng.gen_range(0..above.len())];
                if !parents.contains(&p) {
                    parents.push(p);
                }
            }
            // Sometimes also a parent two levels up: paths of different lengths.
            if level > 1 && rng.gen_bool(0.2) {
                let above2 = &by_level[level - 2];
                let p = above2[rng.gen_range(0..above2.len())];
                if !parents.contains(&p) {
                    parents.push(p);
                }
            }
        }
        by_level[level].push(id);
        model.groups.push(Group {
            id,
            name: format!("g{i}"),
            parents,
        });
    }
    let nloc = 60;
    for i in 0..nloc {
        let parent = if i == 0 {
            None
        } else {
            Some(LocationId::named(
                site,
                &format!("l{}", rng.gen_range(0..i)),
            ))
        };
        model.locations.push(Location {
            id: LocationId::named(site, &format!("l{i}")),
            name: format!("l{i}"),
            parent,
        });
    }
    let all_groups: Vec<GroupId> = model.groups.iter().map(|g| g.id).collect();
    let mut host = String::new();
    let mut host_id = None;
    for i in 0..checks {
        let is_host = i % 10 == 0;
        let mut c = if is_host {
            host = format!("h{i}");
            let id = CheckId::host(site, &host);
            host_id = Some(id);
            let mut c = check(id, CheckKind::Host, &host, &host);
            // Some hosts have no location.
            if rng.gen_bool(0.9) {
                c.location = Some(LocationId::named(
                    site,
                    &format!("l{}", rng.gen_range(0..nloc)),
                ));
            }
            c
        } else {
            let name = format!("s{i}");
            let mut c = check(
                CheckId::service(site, &host, &name),
                CheckKind::Service,
                &host,
                &name,
            );
            c.host_id = host_id;
            c
        };
        for _ in 0..rng.gen_range(0..=3) {
            let g = all_groups[rng.gen_range(0..all_groups.len())];
            if !c.groups.contains(&g) {
                c.groups.push(g);
            }
        }
        model.checks.push(c);
    }
    model
}

/// Writes random statuses and ignore flags straight into the state table.
async fn randomise_states(store: &TestStore, rng: &mut StdRng) {
    let ids: Vec<Uuid> = store
        .states()
        .await
        .expect("states")
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    let mut status = Vec::new();
    let mut ok = Vec::new();
    let mut sup = Vec::new();
    let mut dt = Vec::new();
    let mut ack = Vec::new();
    let mut enc = Vec::new();
    for _ in &ids {
        let s = Status::ALL[rng.gen_range(0..10)];
        status.push(i16::from(s.severity()));
        ok.push(s.is_ok());
        sup.push(rng.gen_bool(0.05));
        dt.push(rng.gen_bool(0.05));
        ack.push(if rng.gen_bool(0.05) {
            rng.gen_range(1..=2i16)
        } else {
            0
        });
        enc.push(rng.gen_bool(0.05));
    }
    raw_client(Some(&store.schema))
        .await
        .execute(
            "UPDATE check_state s SET status = u.status, ok = u.ok, suppressed = u.sup,
                 in_downtime = u.dt, acknowledged = u.ack, encompassed = u.enc
             FROM unnest($1::uuid[], $2::int2[], $3::bool[], $4::bool[], $5::bool[], $6::int2[], $7::bool[])
                 AS u(id, status, ok, sup, dt, ack, enc)
             WHERE s.check_id = u.id",
            &[&ids, &status, &ok, &sup, &dt, &ack, &enc],
        )
        .await
        .expect("randomise states");
}

/// A fresh store synced with a model [`generate`]d from `seed` and then
/// given random states; also the model and the generator, to go on with.
/// None when the test server is not configured.
async fn generated_store(
    seed: u64,
    groups: usize,
    checks: usize,
    levels: usize,
) -> Option<(TestStore, Model, StdRng)> {
    let store = TestStore::fresh().await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let model = generate(&mut rng, groups, checks, levels);
    store.sync_config(&model).await.expect("sync");
    randomise_states(&store, &mut rng).await;
    Some((store, model, rng))
}

/// Every check's state, by id.
async fn state_map(store: &TestStore) -> HashMap<CheckId, CheckState> {
    store.states().await.expect("states").into_iter().collect()
}

#[tokio::test]
async fn generated_graph_matches_the_core_aggregate() {
    let Some((store, model, mut rng)) = generated_store(0xB3_4647, 1_000, 10_000, 7).await else {
        return;
    };
    let states = state_map(&store).await;
    let ignored = states.values().filter(|s| s.is_ignored()).count();
    assert!(
        ignored > 500,
        "the generator must produce ignored checks ({ignored})"
    );

    let st = |c: CheckId| states.get(&c);
    let expected = aggregate::group_states(&model, st, None);
    let got = store.group_states(None).await.expect("group states");
    assert_eq!(got.len(), model.groups.len());
    let nonempty = expected.iter().filter(|g| g.aggregate.total > 0).count();
    assert!(nonempty > 100);
    let shared = expected.iter().filter(|g| g.aggregate.total > 100).count();
    assert!(shared > 10, "deep groups must collect many checks");
    assert_eq!(got, expected, "whole graph");

    // Subtrees: the top of the chain (everything below it) and a few others.
    for root in [model.groups[0].id, model.groups[3].id, model.groups[500].id] {
        let sub = store.group_states(Some(root)).await.expect("subtree");
        assert!(sub.iter().any(|g| g.id == root));
        assert_eq!(
            sub,
            aggregate::group_states(&model, st, Some(root)),
            "subtree of {root}"
        );
    }
    assert_eq!(
        store
            .group_states(Some(GroupId::random()))
            .await
            .expect("unknown"),
        vec![]
    );
    // Exactly these groups, unknown ids left out.
    let some: Vec<GroupId> = (0..50)
        .map(|i| model.groups[i * 17].id)
        .chain([GroupId::random()])
        .collect();
    let of = store.group_states_of(&some).await.expect("of");
    assert_eq!(of.len(), 50);
    assert_eq!(of, aggregate::group_states_of(&model, st, &some));
    // Ancestors of a check: every group whose aggregate counts it.
    let index = bergamot_core::backend::GraphIndex::new(&model);
    for c in model.checks.iter().step_by(97) {
        let anc = store.ancestor_groups(c.id).await.expect("ancestors");
        assert_eq!(
            Some(anc),
            index.ancestor_groups(c.id),
            "ancestors of {}",
            c.display_name()
        );
        let anc = store
            .ancestor_locations(c.id)
            .await
            .expect("ancestor locations");
        assert_eq!(
            Some(anc),
            index.ancestor_locations(c.id),
            "locations of {}",
            c.display_name()
        );
    }

    let expected = aggregate::location_states(&model, st, None);
    let got = store.location_states(None).await.expect("location states");
    assert!(expected.iter().filter(|l| l.aggregate.total > 0).count() > 20);
    assert_eq!(got, expected, "locations");
    let root = model.locations[0].id;
    assert_eq!(
        store.location_states(Some(root)).await.expect("sub").len(),
        model.locations.len()
    );
    for l in [model.locations[5].id, model.locations[30].id] {
        assert_eq!(
            store.location_states(Some(l)).await.expect("sub"),
            aggregate::location_states(&model, st, Some(l))
        );
    }
    let ids = [
        model.locations[5].id,
        LocationId::random(),
        model.locations[7].id,
    ];
    assert_eq!(
        store.location_states_of(&ids).await.expect("of"),
        aggregate::location_states_of(&model, st, &ids)
    );
    // The counters follow further changes: random states again (some
    // checks keep their contribution, most change it), in one statement.
    randomise_states(&store, &mut rng).await;
    let again = state_map(&store).await;
    assert_eq!(
        store.group_states(None).await.expect("group states"),
        aggregate::group_states(&model, |c| again.get(&c), None),
        "whole graph after a second change"
    );
}

#[tokio::test]
async fn cycles_terminate_and_diamonds_count_once() {
    let Some(store) = TestStore::fresh().await else {
        return;
    };
    let site = "cyc";
    let a = GroupId::named(site, "a");
    let b = GroupId::named(site, "b");
    let c = GroupId::named(site, "c");
    let top = GroupId::named(site, "top");
    let empty = GroupId::named(site, "empty");
    let g = |id, name: &str, parents: Vec<GroupId>| Group {
        id,
        name: name.into(),
        parents,
    };
    // a <-> b is a cycle (config load rejects it; the query must still end);
    // top -> a and top -> c -> a is a diamond.
    let mut x = check(CheckId::host(site, "x"), CheckKind::Host, "x", "x");
    x.groups = vec![a, c];
    let model = Model {
        site: site.into(),
        groups: vec![
            g(top, "top", vec![]),
            g(a, "a", vec![b, top, c]),
            g(b, "b", vec![a]),
            g(c, "c", vec![top]),
            g(empty, "empty", vec![top]),
        ],
        checks: vec![x.clone()],
        locations: vec![],
    };
    store.sync_config(&model).await.expect("sync");
    let got = store.group_states(None).await.expect("states");
    let totals: HashMap<GroupId, u32> = got.iter().map(|g| (g.id, g.aggregate.total)).collect();
    assert_eq!(
        totals,
        HashMap::from([(top, 1), (a, 1), (b, 1), (c, 1), (empty, 0)])
    );
    let e = &got
        .iter()
        .find(|g| g.id == empty)
        .expect("empty group")
        .aggregate;
    assert_eq!((e.status, e.ok, e.counts), (Status::Pending, true, [0; 10]));
    let mut anc = store.ancestor_groups(x.id).await.expect("ancestors");
    anc.sort();
    let mut want = vec![top, a, b, c];
    want.sort();
    assert_eq!(anc, want);
    let states = state_map(&store).await;
    assert_eq!(
        got,
        aggregate::group_states(&model, |c| states.get(&c), None)
    );
}

/// The group closure, the multi-path corrections and the per-group counts
/// are rebuilt by every config sync: after a second sync with another graph
/// and other memberships (same ids, states kept), the aggregates follow the
/// new model, and the trigger-kept counts follow later state changes.
#[tokio::test]
async fn resync_rebuilds_the_group_graph() {
    let Some((store, first, mut rng)) = generated_store(0x5EED_0002, 300, 3_000, 6).await else {
        return;
    };
    let second = generate(&mut rng, 300, 3_000, 6);
    let same_ids = second
        .checks
        .iter()
        .zip(&first.checks)
        .filter(|(a, b)| a.id == b.id)
        .count();
    assert!(same_ids > 1_000, "the second model reuses ids ({same_ids})");
    let moved = second
        .groups
        .iter()
        .zip(&first.groups)
        .filter(|(a, b)| a.id == b.id && a.parents != b.parents)
        .count();
    assert!(moved > 50, "the second model changes the graph ({moved})");
    store.sync_config(&second).await.expect("second sync");
    let states = state_map(&store).await;
    let st = |c: CheckId| states.get(&c);
    let expected = aggregate::group_states(&second, st, None);
    assert!(expected.iter().filter(|g| g.aggregate.total > 50).count() > 5);
    assert_eq!(
        store.group_states(None).await.expect("group states"),
        expected
    );
    // The counts kept by the trigger follow further state changes.
    for _ in 0..2 {
        randomise_states(&store, &mut rng).await;
        let states = state_map(&store).await;
        let st = |c: CheckId| states.get(&c);
        assert_eq!(
            store.group_states(None).await.expect("group states"),
            aggregate::group_states(&second, st, None),
            "after another state change"
        );
    }
    let index = bergamot_core::backend::GraphIndex::new(&second);
    for c in second.checks.iter().step_by(37) {
        assert_eq!(
            Some(store.ancestor_groups(c.id).await.expect("ancestors")),
            index.ancestor_groups(c.id)
        );
    }
}
