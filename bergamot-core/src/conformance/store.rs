//! Store conformance cases: one per clause of the [`Store`] contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{at, flipping, group, history, host, location, policy, result, service};
use crate::aggregate;
use crate::model::{CheckId, GroupId, LocationId, Model, Status};
use crate::state::{self, Ack, CheckState, Event, Outcome, Transition};
use crate::store::{AlertRecord, Downtime, HistoryPage, StateFilter, Store};
use crate::Error;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

fn h(name: &str) -> CheckId {
    CheckId::host(super::SITE, name)
}
fn s(host: &str, name: &str) -> CheckId {
    CheckId::service(super::SITE, host, name)
}
fn g(name: &str) -> GroupId {
    GroupId::named(super::SITE, name)
}
fn l(name: &str) -> LocationId {
    LocationId::named(super::SITE, name)
}

/// One host `h` and services `a`, `b` on it (immediate thresholds for `a`,
/// defaults for `b`), in group `g`.
fn small_model() -> Model {
    Model {
        site: super::SITE.into(),
        checks: vec![
            host("h", &[g("g")], Some(l("here")), policy(1, 1)),
            service("h", "a", &[g("g")], policy(1, 1)),
            service("h", "b", &[g("g")], policy(3, 3)),
        ],
        groups: vec![group("g", &[])],
        locations: vec![location("here", None)],
    }
}

async fn synced(store: &Arc<dyn Store>, model: &Model) {
    store
        .sync_config(model)
        .await
        .expect("sync_config of a valid model");
}

/// Offers a result of `check` executed at [`at`]`(executed)` at
/// [`at`]`(now)`, whatever the outcome; returns the transition.
async fn offer(
    store: &Arc<dyn Store>,
    check: CheckId,
    status: Status,
    executed: i64,
    now: i64,
) -> Transition {
    store
        .apply_result(&result(check, status, executed), at(now))
        .await
        .unwrap()
}

/// Applies a result that must be applied; returns the transition.
async fn apply(store: &Arc<dyn Store>, check: CheckId, status: Status, secs: i64) -> Transition {
    let t = store
        .apply_result(&result(check, status, secs), at(secs))
        .await
        .expect("apply_result");
    assert_eq!(
        t.outcome,
        Outcome::Applied,
        "a fresh result {status:?} at {secs}s must be applied"
    );
    t
}

/// The state with the open alert's random id blanked, for comparisons.
fn normalised(mut s: CheckState) -> CheckState {
    if let Some(a) = s.current_alert.as_mut() {
        a.id = Uuid::nil();
    }
    s
}

async fn aggregate_of(store: &Arc<dyn Store>, id: GroupId) -> aggregate::Aggregate {
    store
        .group_states_of(&[id])
        .await
        .expect("group_states_of")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("group {id} missing from group_states_of"))
        .aggregate
}

/// A sequence of results gives, step by step, exactly what the pure
/// [`state::transition`] gives; `state()` returns the saved state.
pub async fn apply_matches_pure_transition(store: Arc<dyn Store>) {
    let model = small_model();
    synced(&store, &model).await;
    let check = &model.checks[2];
    let mut expected = state::initial_state(&check.policy);
    assert_eq!(
        normalised(store.state(check.id).await.unwrap()),
        normalised(expected.clone()),
        "a new check starts in the initial state"
    );
    let seq = [
        Status::Ok,
        Status::Warning,
        Status::Critical,
        Status::Critical,
        Status::Critical,
        Status::Unknown,
        Status::Ok,
        Status::Ok,
        Status::Ok,
        Status::Warning,
        Status::Ok,
    ];
    for (i, st) in seq.iter().enumerate() {
        let r = result(check.id, *st, 10 * i as i64);
        let pure = state::transition(&expected, &r, &check.policy, &[], at(10 * i as i64));
        let got = store.apply_result(&r, at(10 * i as i64)).await.unwrap();
        assert_eq!(got.outcome, pure.outcome, "step {i} ({st:?}): outcome");
        assert_eq!(got.events, pure.events, "step {i} ({st:?}): events");
        assert_eq!(
            got.next_interval, pure.next_interval,
            "step {i} ({st:?}): next interval"
        );
        assert_eq!(
            normalised(got.state.clone()),
            normalised(pure.state),
            "step {i} ({st:?}): state"
        );
        assert_eq!(
            store.state(check.id).await.unwrap(),
            got.state,
            "step {i}: state() returns the saved state"
        );
        expected = got.state;
    }
    assert_eq!(
        expected.version,
        seq.len() as u64,
        "version +1 per applied result"
    );
}

/// The last applied result again is a duplicate and changes nothing.
pub async fn duplicate_result_dropped(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let r = result(s("h", "a"), Status::Critical, 10);
    let first = store.apply_result(&r, at(10)).await.unwrap();
    assert_eq!(first.outcome, Outcome::Applied);
    let again = store.apply_result(&r, at(11)).await.unwrap();
    assert_eq!(
        again.outcome,
        Outcome::Duplicate,
        "same result id applied twice"
    );
    let st = store.state(r.check_id).await.unwrap();
    assert_eq!(st.version, 1, "a duplicate does not bump the version");
    let hist = history(store.as_ref(), r.check_id, None, 10).await;
    assert_eq!(hist.len(), 1, "a duplicate adds no history");
}

/// A result older than the last applied one is stale and changes nothing.
pub async fn stale_result_dropped(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    apply(&store, c, Status::Critical, 100).await;
    let old = offer(&store, c, Status::Ok, 50, 101).await;
    assert_eq!(
        old.outcome,
        Outcome::Stale,
        "a result executed before the last applied one"
    );
    let st = store.state(c).await.unwrap();
    assert_eq!(
        (st.status, st.version),
        (Status::Critical, 1),
        "a stale result changes nothing"
    );
}

/// Every per-check call names an unknown check as NotFound.
pub async fn unknown_check_not_found(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let unknown = CheckId::host(super::SITE, "nowhere");
    let nf = |r: Result<(), Error>, what: &str| match r {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what} of an unknown check: expected NotFound, got {other:?}"),
    };
    nf(
        store
            .apply_result(&result(unknown, Status::Ok, 1), at(1))
            .await
            .map(|_| ()),
        "apply_result",
    );
    nf(store.state(unknown).await.map(|_| ()), "state");
    nf(
        store
            .acknowledge(unknown, Ack::Normal, "a", "c", at(1))
            .await
            .map(|_| ()),
        "acknowledge",
    );
    nf(
        store.set_suppressed(unknown, true, at(1)).await.map(|_| ()),
        "set_suppressed",
    );
    nf(
        store
            .history(
                unknown,
                HistoryPage {
                    before_version: None,
                    limit: 1,
                },
            )
            .await
            .map(|_| ()),
        "history",
    );
    nf(
        store.ancestor_groups(unknown).await.map(|_| ()),
        "ancestor_groups",
    );
    let batch = store
        .apply_results(&[result(unknown, Status::Ok, 1)], at(1))
        .await
        .unwrap();
    assert!(
        matches!(batch.as_slice(), [Err(Error::NotFound { .. })]),
        "apply_results reports NotFound per result, got {batch:?}"
    );
}

/// N tasks x M results for one check, all with one `executed_at`: each is
/// applied or stale (results that share a timestamp are ordered by id, and
/// the tasks race), and nothing applied is lost: the version and the attempt
/// count every applied result, and history holds versions 1..=applied once.
pub async fn concurrent_applies_serialise(store: Arc<dyn Store>) {
    let mut model = small_model();
    // Never goes hard, so attempt counts every not-ok result.
    model.checks[1].policy = policy(10_000, 3);
    synced(&store, &model).await;
    let c = s("h", "a");
    const N: usize = 8;
    const M: usize = 25;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut applied = 0u64;
            for _ in 0..M {
                let t = offer(&store, c, Status::Critical, 5, 5).await;
                match t.outcome {
                    Outcome::Applied => applied += 1,
                    Outcome::Stale => {}
                    other => panic!("concurrent result neither applied nor stale: {other:?}"),
                }
            }
            applied
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.expect("apply task panicked");
    }
    assert!(n >= 1, "some result was applied");
    let st = store.state(c).await.unwrap();
    assert_eq!(st.version, n, "lost update: version after {n} applies");
    assert_eq!(
        u64::from(st.attempt),
        n,
        "lost update: attempt after {n} not-ok results"
    );
    let hist = history(store.as_ref(), c, None, N * M + 10).await;
    let versions: Vec<u64> = hist.iter().map(|e| e.version).collect();
    let want: Vec<u64> = (1..=n).rev().collect();
    assert_eq!(
        versions, want,
        "history holds every version once, newest first"
    );
    let attempts: Vec<u64> = hist.iter().map(|e| u64::from(e.attempt)).collect();
    assert_eq!(
        attempts, want,
        "each history entry's attempt equals its version"
    );
}

/// A reset of the result clock unfreezes a check a result dated far in the
/// future froze: before it every later result is stale, after it the next
/// result is applied; timestamps after `now` move back to `now`.
pub async fn reset_clock_unfreezes_a_check(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    apply(&store, c, Status::Critical, 1_000_000_000).await;
    let later = offer(&store, c, Status::Ok, 100, 100).await;
    assert_eq!(later.outcome, Outcome::Stale, "frozen by the future result");
    let t = store.reset_clock(c, at(100)).await.unwrap();
    assert_eq!(t.outcome, Outcome::Applied);
    let st = store.state(c).await.unwrap();
    assert_eq!(st.last_check_at, None);
    assert_eq!(st.last_result_id, None);
    assert_eq!(st.last_state_change_at, Some(at(100)));
    assert_eq!(
        st.status,
        Status::Critical,
        "the status stays until the next result"
    );
    let after = offer(&store, c, Status::Ok, 101, 101).await;
    assert_eq!(after.outcome, Outcome::Applied, "the next result applies");
    assert_eq!(store.state(c).await.unwrap().status, Status::Ok);
    assert!(matches!(
        store.reset_clock(h("nope"), at(1)).await,
        Err(Error::NotFound { .. })
    ));
}

/// Many checks applied from many tasks at once all end up fully applied.
pub async fn different_checks_apply_concurrently(store: Arc<dyn Store>) {
    let names: Vec<String> = (0..32).map(|i| format!("svc{i}")).collect();
    let mut model = small_model();
    for n in &names {
        model.checks.push(service("h", n, &[g("g")], policy(1, 1)));
    }
    synced(&store, &model).await;
    let mut tasks = Vec::new();
    for n in &names {
        let store = Arc::clone(&store);
        let c = s("h", n);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                store
                    .apply_result(&result(c, flipping(i), i), at(i))
                    .await
                    .unwrap();
            }
            store.state(c).await.unwrap()
        }));
    }
    for (n, t) in names.iter().zip(tasks) {
        let st = t.await.expect("task panicked");
        assert_eq!(
            (st.version, st.status),
            (10, Status::Ok),
            "check {n} after 10 results"
        );
    }
    let agg = aggregate_of(&store, g("g")).await;
    assert_eq!(agg.total, 35, "group g holds h, a, b and 32 services");
}

/// The multi-parent graph of depth >= 5 used by the aggregate cases.
///
/// ```text
/// root ─┬─ a ─┬─ c ── d ── e ── f        c has parents a and b
///       │     └─────────────────┘         f has parents e and a
///       ├─ b ─┘
///       └─ empty
/// ```
fn graph_model() -> Model {
    let fast = policy(1, 1);
    let mut s5 = service("h2", "s5", &[g("e")], fast.clone());
    s5.dependencies = vec![h("h2")];
    Model {
        site: super::SITE.into(),
        checks: vec![
            host("h1", &[g("f")], Some(l("l2")), fast.clone()),
            service("h1", "s1", &[g("c"), g("e")], fast.clone()),
            service("h1", "s2", &[g("d")], fast.clone()),
            service("h1", "s3", &[g("f")], fast.clone()),
            service("h1", "s4", &[g("b")], fast.clone()),
            host("h2", &[g("b")], Some(l("l1")), fast.clone()),
            s5,
            host("h3", &[], Some(l("l3")), fast.clone()),
            service("h3", "s6", &[g("a")], fast.clone()),
            host("h4", &[], Some(l("l2")), fast),
        ],
        groups: vec![
            group("root", &[]),
            group("a", &[g("root")]),
            group("b", &[g("root")]),
            group("c", &[g("a"), g("b")]),
            group("d", &[g("c")]),
            group("e", &[g("d")]),
            group("f", &[g("e"), g("a")]),
            group("empty", &[g("root")]),
        ],
        locations: vec![
            location("l1", None),
            location("l2", Some(l("l1"))),
            location("l3", Some(l("l1"))),
        ],
    }
}

/// Puts the graph model into a mix of states: h1 CRITICAL, s1 WARNING, s2
/// acknowledged, s3 suppressed, s4 in downtime, h2 CRITICAL, s5 encompassed,
/// h3 and s6 OK, h4 never checked.
async fn graph_states(store: &Arc<dyn Store>) -> Model {
    let model = graph_model();
    synced(store, &model).await;
    apply(store, h("h1"), Status::Critical, 1).await;
    apply(store, s("h1", "s1"), Status::Warning, 1).await;
    apply(store, s("h1", "s2"), Status::Critical, 1).await;
    let t = store
        .acknowledge(s("h1", "s2"), Ack::Sticky, "op", "known", at(2))
        .await
        .unwrap();
    assert_eq!(
        t.outcome,
        Outcome::Applied,
        "acknowledging a hard CRITICAL check"
    );
    apply(store, s("h1", "s3"), Status::Critical, 1).await;
    store
        .set_suppressed(s("h1", "s3"), true, at(2))
        .await
        .unwrap();
    apply(store, s("h1", "s4"), Status::Critical, 1).await;
    let dt = Downtime {
        id: Uuid::new_v4(),
        check_id: s("h1", "s4"),
        starts_at: at(0),
        ends_at: at(100_000),
        author: "op".into(),
        comment: "maintenance".into(),
    };
    store.schedule_downtime(dt, at(2)).await.unwrap();
    apply(store, h("h2"), Status::Critical, 1).await;
    let t = apply(store, s("h2", "s5"), Status::Critical, 2).await;
    assert!(
        t.state.encompassed,
        "s5 depends on hard CRITICAL h2: encompassed"
    );
    apply(store, h("h3"), Status::Ok, 1).await;
    apply(store, s("h3", "s6"), Status::Ok, 1).await;
    model
}

async fn states_map(store: &Arc<dyn Store>) -> HashMap<CheckId, CheckState> {
    store.states().await.unwrap().into_iter().collect()
}

/// The store's group aggregates under `root`, asserted equal to
/// [`aggregate::group_states`] over the store's own states (`what` names
/// the call in the failure message).
async fn groups_as_pure(
    store: &Arc<dyn Store>,
    model: &Model,
    root: Option<GroupId>,
    what: &str,
) -> Vec<aggregate::GroupState> {
    let states = states_map(store).await;
    let got = store.group_states(root).await.unwrap();
    let want = aggregate::group_states(model, |id| states.get(&id), root);
    assert_eq!(got, want, "{what} differs from aggregate::group_states");
    got
}

/// As [`groups_as_pure`], for the location aggregates.
async fn locations_as_pure(
    store: &Arc<dyn Store>,
    model: &Model,
    root: Option<LocationId>,
) -> Vec<aggregate::LocationState> {
    let states = states_map(store).await;
    let got = store.location_states(root).await.unwrap();
    let want = aggregate::location_states(model, |id| states.get(&id), root);
    assert_eq!(
        got, want,
        "store location aggregates differ from aggregate::location_states"
    );
    got
}

/// Group aggregates of the whole graph equal [`aggregate::group_states`]
/// over the same states, and match hand-computed values.
pub async fn group_aggregates_match_pure(store: Arc<dyn Store>) {
    let model = graph_states(&store).await;
    let got = groups_as_pure(&store, &model, None, "store aggregates").await;
    let by: HashMap<GroupId, aggregate::Aggregate> =
        got.iter().map(|g| (g.id, g.aggregate)).collect();
    let root = by[&g("root")];
    assert_eq!(
        root.total, 8,
        "root: each of the 8 grouped checks once, whatever the paths"
    );
    assert_eq!(
        root.status,
        Status::Critical,
        "root: worst is h1/h2 CRITICAL"
    );
    assert!(!root.ok);
    assert_eq!(
        (
            root.acknowledged,
            root.suppressed,
            root.in_downtime,
            root.encompassed
        ),
        (1, 1, 1, 1),
        "root ignore counters"
    );
    assert_eq!(
        root.counts[Status::Pending.severity() as usize],
        4,
        "ignored checks count as PENDING"
    );
    assert_eq!(root.counts[Status::Critical.severity() as usize], 2);
    assert_eq!(root.counts[Status::Warning.severity() as usize], 1);
    assert_eq!(root.counts[Status::Ok.severity() as usize], 1);
    let e = by[&g("e")];
    assert_eq!(
        (e.total, e.status, e.encompassed),
        (4, Status::Critical, 1),
        "group e: s1, s5, h1, s3"
    );
    let d = by[&g("d")];
    assert_eq!(d.total, 5, "group d: s2 and e's four");
    let empty = by[&g("empty")];
    assert_eq!(
        (empty.total, empty.status, empty.ok),
        (0, Status::Pending, true),
        "an empty group is PENDING ok"
    );
    assert_eq!(got.len(), 8, "one aggregate per group");
    let mut ids: Vec<GroupId> = got.iter().map(|g| g.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        got.iter().map(|g| g.id).collect::<Vec<_>>(),
        "sorted by id"
    );
}

/// `group_states(Some(root))` gives the root and its descendants only.
pub async fn group_subtree_root(store: Arc<dyn Store>) {
    let model = graph_states(&store).await;
    let got = groups_as_pure(&store, &model, Some(g("c")), "subtree of c").await;
    let mut ids: Vec<GroupId> = vec![g("c"), g("d"), g("e"), g("f")];
    ids.sort();
    assert_eq!(
        got.iter().map(|x| x.id).collect::<Vec<_>>(),
        ids,
        "subtree of c is c, d, e, f"
    );
    let all = store.group_states(None).await.unwrap();
    for x in &got {
        assert!(
            all.contains(x),
            "a subtree aggregate equals the whole-graph one ({})",
            x.id
        );
    }
    assert!(
        store
            .group_states(Some(GroupId::named("x", "unknown")))
            .await
            .unwrap()
            .is_empty(),
        "an unknown root gives no groups"
    );
}

/// `group_states_of` gives exactly the asked groups (unknown left out).
pub async fn group_states_of_selects(store: Arc<dyn Store>) {
    graph_states(&store).await;
    let all = store.group_states(None).await.unwrap();
    let ask = [g("f"), g("b"), GroupId::named("x", "unknown"), g("f")];
    let got = store.group_states_of(&ask).await.unwrap();
    let want: Vec<_> = all
        .into_iter()
        .filter(|x| x.id == g("f") || x.id == g("b"))
        .collect();
    assert_eq!(got, want, "group_states_of(f, b, unknown, f)");
}

/// Location aggregates count host checks only, over the location tree.
pub async fn location_aggregates(store: Arc<dyn Store>) {
    let model = graph_states(&store).await;
    let got = locations_as_pure(&store, &model, None).await;
    let by: HashMap<LocationId, aggregate::Aggregate> =
        got.iter().map(|x| (x.id, x.aggregate)).collect();
    let l1 = by[&l("l1")];
    assert_eq!(
        (l1.total, l1.status),
        (4, Status::Critical),
        "l1: hosts h1..h4, services not counted"
    );
    let l2 = by[&l("l2")];
    assert_eq!(
        (l2.total, l2.status),
        (2, Status::Critical),
        "l2: h1 CRITICAL and h4 PENDING"
    );
    let l3 = by[&l("l3")];
    assert_eq!(
        (l3.total, l3.status, l3.ok),
        (1, Status::Ok, true),
        "l3: h3 OK"
    );
    let sub = store.location_states(Some(l("l2"))).await.unwrap();
    assert_eq!(
        sub.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![l("l2")],
        "subtree of leaf l2"
    );
    let of = store
        .location_states_of(&[l("l3"), LocationId::named("x", "nope")])
        .await
        .unwrap();
    assert_eq!(
        of,
        vec![got.iter().find(|x| x.id == l("l3")).cloned().unwrap()],
        "location_states_of"
    );
}

/// Severity order (docs/decisions.md): CRITICAL is the worst status in
/// group and location aggregates and in an alert's `worst`, above the broken
/// checks (UNKNOWN, TIMEOUT, ERROR) and above ACTION and DISCONNECTED,
/// whose codes are higher.
pub async fn severity_order_critical_over_broken_checks(store: Arc<dyn Store>) {
    let model = graph_model();
    synced(&store, &model).await;
    apply(&store, h("h1"), Status::Critical, 1).await;
    apply(&store, s("h3", "s6"), Status::Timeout, 1).await;
    apply(&store, h("h3"), Status::Unknown, 1).await;
    apply(&store, h("h2"), Status::Disconnected, 1).await;
    apply(&store, h("h4"), Status::Action, 1).await;
    // s1: WARNING alerts, ERROR and CRITICAL are worse (re-alerts), ERROR
    // again is better: the alert's worst stays CRITICAL.
    let s1 = s("h1", "s1");
    assert_eq!(
        apply(&store, s1, Status::Warning, 1).await.events,
        vec![Event::Alert]
    );
    assert_eq!(
        apply(&store, s1, Status::Error, 2).await.events,
        vec![Event::Realert]
    );
    assert_eq!(
        apply(&store, s1, Status::Critical, 3).await.events,
        vec![Event::Realert]
    );
    assert!(apply(&store, s1, Status::Error, 4).await.events.is_empty());
    let recs = store.alerts(Some(s1), 10).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].status, recs[0].worst),
        (Status::Warning, Status::Critical)
    );

    let groups = groups_as_pure(&store, &model, None, "store group aggregates").await;
    let by: HashMap<GroupId, aggregate::Aggregate> =
        groups.iter().map(|g| (g.id, g.aggregate)).collect();
    assert_eq!(
        by[&g("root")].status,
        Status::Critical,
        "root: h1 CRITICAL over h2 DISCONNECTED, s1 ERROR"
    );
    assert_eq!(
        by[&g("b")].status,
        Status::Critical,
        "b: CRITICAL (via c) over DISCONNECTED"
    );
    let locations = locations_as_pure(&store, &model, None).await;
    let by: HashMap<LocationId, aggregate::Aggregate> =
        locations.iter().map(|x| (x.id, x.aggregate)).collect();
    assert_eq!(
        by[&l("l2")].status,
        Status::Critical,
        "l2: h1 CRITICAL over h4 ACTION"
    );
    assert_eq!(by[&l("l1")].status, Status::Critical, "l1: all hosts");
    assert_eq!(by[&l("l3")].status, Status::Unknown, "l3: h3 UNKNOWN");
}

/// `ancestor_groups` / `ancestor_locations` of a check, each once.
pub async fn ancestors_of_check(store: Arc<dyn Store>) {
    synced(&store, &graph_model()).await;
    let mut got = store.ancestor_groups(h("h1")).await.unwrap();
    got.sort();
    let mut want = vec![g("f"), g("e"), g("d"), g("c"), g("a"), g("b"), g("root")];
    want.sort();
    assert_eq!(
        got, want,
        "h1 is in f, hence e, d, c, a, b and root, each once"
    );
    let mut got = store.ancestor_groups(s("h1", "s4")).await.unwrap();
    got.sort();
    let mut want = vec![g("b"), g("root")];
    want.sort();
    assert_eq!(got, want, "s4 is in b and root");
    assert!(
        store.ancestor_groups(h("h3")).await.unwrap().is_empty(),
        "h3 is in no group"
    );
    let mut got = store.ancestor_locations(h("h1")).await.unwrap();
    got.sort();
    let mut want = vec![l("l2"), l("l1")];
    want.sort();
    assert_eq!(got, want, "h1 is at l2 under l1");
    let mut got = store.ancestor_locations(s("h1", "s1")).await.unwrap();
    got.sort();
    assert_eq!(got, want, "a service is where its host is");
}

/// Normal and sticky acknowledgements apply at once (state and groups), an
/// ok check's is refused, and removal works.
pub async fn acknowledgements_take_effect_at_once(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    let refused = store
        .acknowledge(c, Ack::Normal, "op", "ok check", at(1))
        .await
        .unwrap();
    assert_eq!(
        refused.outcome,
        Outcome::Refused,
        "acknowledging an ok check is refused"
    );
    assert_eq!(
        store.state(c).await.unwrap().version,
        0,
        "a refused ack changes nothing"
    );
    apply(&store, c, Status::Critical, 10).await;
    assert_eq!(aggregate_of(&store, g("g")).await.status, Status::Critical);
    let t = store
        .acknowledge(c, Ack::Normal, "op", "looking", at(11))
        .await
        .unwrap();
    assert_eq!(
        (t.outcome, t.state.acknowledged),
        (Outcome::Applied, Ack::Normal)
    );
    let saved = store.state(c).await.unwrap();
    assert_eq!(saved.acknowledged, Ack::Normal, "saved at once");
    let info = saved.ack.expect("the acknowledgement's author is saved");
    assert_eq!(
        (info.author.as_str(), info.comment.as_str(), info.at),
        ("op", "looking", at(11)),
        "author, comment and time of the acknowledgement"
    );
    let agg = aggregate_of(&store, g("g")).await;
    assert_eq!(
        (agg.status, agg.acknowledged),
        (Status::Pending, 1),
        "group recomputed at once"
    );
    let t = store.remove_acknowledgement(c, at(12)).await.unwrap();
    assert_eq!(t.state.acknowledged, Ack::None);
    assert_eq!(
        store.state(c).await.unwrap().ack,
        None,
        "removal forgets the author"
    );
    assert_eq!(
        aggregate_of(&store, g("g")).await.status,
        Status::Critical,
        "removal recomputes the group"
    );
    let t = store
        .acknowledge(c, Ack::Sticky, "op", "sticky", at(13))
        .await
        .unwrap();
    assert_eq!(t.state.acknowledged, Ack::Sticky);
    let t = apply(&store, c, Status::Warning, 20).await;
    assert_eq!(
        t.state.acknowledged,
        Ack::Sticky,
        "a sticky ack survives a status change"
    );
    let t = apply(&store, c, Status::Ok, 30).await;
    assert_eq!(
        t.state.acknowledged,
        Ack::None,
        "recovery clears a sticky ack"
    );
    assert_eq!(
        store.state(c).await.unwrap().ack,
        None,
        "recovery forgets the author"
    );
}

fn downtime(check: CheckId, from: i64, to: i64) -> Downtime {
    Downtime {
        id: Uuid::new_v4(),
        check_id: check,
        starts_at: at(from),
        ends_at: at(to),
        author: "op".into(),
        comment: "window".into(),
    }
}

/// A downtime whose window contains now applies at once.
pub async fn downtime_now_takes_effect_at_once(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    apply(&store, c, Status::Critical, 10).await;
    let t = store
        .schedule_downtime(downtime(c, 0, 1_000_000), at(20))
        .await
        .unwrap();
    let t = t.expect("a window containing now returns its transition");
    assert!(t.state.in_downtime && t.is_applied(), "in downtime at once");
    assert!(store.state(c).await.unwrap().in_downtime, "saved at once");
    let agg = aggregate_of(&store, g("g")).await;
    assert_eq!(
        (agg.status, agg.in_downtime),
        (Status::Pending, 1),
        "group recomputed at once"
    );
    let later = store
        .schedule_downtime(downtime(c, 500, 600), at(20))
        .await
        .unwrap();
    assert!(later.is_none(), "a future window does not apply now");
    let bad = store.schedule_downtime(downtime(c, 600, 500), at(20)).await;
    assert!(
        matches!(bad, Err(Error::InvalidInput(_))),
        "ends before it starts: {bad:?}"
    );
    let unknown = store
        .schedule_downtime(downtime(h("nowhere"), 0, 10), at(5))
        .await;
    assert!(
        matches!(unknown, Err(Error::NotFound { .. })),
        "unknown check: {unknown:?}"
    );
}

/// Future windows start and end through `apply_due_downtimes`, whatever their length.
pub async fn due_downtime_windows_start_and_end(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    apply(&store, c, Status::Critical, 10).await;
    // A long window: 400 days.
    let long = 400 * 86_400;
    store
        .schedule_downtime(downtime(c, 100, 100 + long), at(20))
        .await
        .unwrap();
    let listed = store.downtimes(Some(c), at(20)).await.unwrap();
    assert_eq!(listed.len(), 1, "the scheduled window is listed");
    assert!(
        store.apply_due_downtimes(at(50)).await.unwrap().is_empty(),
        "nothing due before the start"
    );
    let due = store.apply_due_downtimes(at(100)).await.unwrap();
    assert_eq!(due.len(), 1, "the window starts");
    assert_eq!(due[0].0, c);
    assert!(due[0].1.state.in_downtime);
    assert!(store.state(c).await.unwrap().in_downtime);
    assert!(
        store.apply_due_downtimes(at(200)).await.unwrap().is_empty(),
        "no change while inside"
    );
    assert!(
        store.state(c).await.unwrap().in_downtime,
        "still inside a long window"
    );
    let due = store.apply_due_downtimes(at(100 + long)).await.unwrap();
    assert_eq!(due.len(), 1, "the window ends");
    assert!(!due[0].1.state.in_downtime);
    assert!(!store.state(c).await.unwrap().in_downtime);
    assert!(
        store
            .downtimes(Some(c), at(100 + long))
            .await
            .unwrap()
            .is_empty(),
        "an ended window is not listed"
    );
    // It is kept for a while: asked as of before its end, it is listed.
    let kept = store.downtimes(Some(c), at(100 + long - 1)).await.unwrap();
    assert_eq!(kept.len(), 1, "an ended window is kept for the planner");
    assert_eq!(kept[0].ends_at, at(100 + long));
    // After the retention it goes.
    let retention = crate::store::downtime_retention().num_seconds();
    store
        .apply_due_downtimes(at(100 + long + retention + 1))
        .await
        .unwrap();
    assert!(
        store
            .downtimes(Some(c), at(100 + long - 1))
            .await
            .unwrap()
            .is_empty(),
        "an ended window is deleted after the retention"
    );
}

/// Cancelling the only active window ends the downtime at once.
pub async fn cancel_downtime_ends_it(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    apply(&store, c, Status::Critical, 10).await;
    let d1 = downtime(c, 0, 1000);
    let d2 = downtime(c, 0, 2000);
    let (id1, id2) = (d1.id, d2.id);
    store.schedule_downtime(d1, at(20)).await.unwrap();
    store.schedule_downtime(d2, at(20)).await.unwrap();
    assert_eq!(store.downtimes(None, at(20)).await.unwrap().len(), 2);
    let r = store.cancel_downtime(id1, at(30)).await.unwrap();
    assert!(r.is_none(), "another window still covers now");
    assert!(store.state(c).await.unwrap().in_downtime);
    let (check, t) = store
        .cancel_downtime(id2, at(31))
        .await
        .unwrap()
        .expect("the last window cancelled");
    assert_eq!(check, c);
    assert!(!t.state.in_downtime && t.is_applied());
    assert!(!store.state(c).await.unwrap().in_downtime, "saved at once");
    let again = store.cancel_downtime(id2, at(32)).await;
    assert!(
        matches!(again, Err(Error::NotFound { .. })),
        "cancelling twice: {again:?}"
    );
    // The cancelled windows ended at their cancel (kept, listed as of before).
    let mut ends: Vec<_> = store
        .downtimes(Some(c), at(29))
        .await
        .unwrap()
        .iter()
        .map(|d| (d.id, d.ends_at))
        .collect();
    ends.sort_by_key(|(_, e)| *e);
    assert_eq!(ends, [(id1, at(30)), (id2, at(31))]);
    assert!(store.downtimes(Some(c), at(31)).await.unwrap().is_empty());
    // A future window cancelled is gone altogether.
    let later = downtime(c, 5000, 6000);
    let later_id = later.id;
    store.schedule_downtime(later, at(40)).await.unwrap();
    assert!(store
        .cancel_downtime(later_id, at(41))
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .downtimes(Some(c), at(29))
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != later_id),
        "a cancelled future window is deleted"
    );
}

/// Suppression applies at once and holds back the alert until lifted.
pub async fn suppression_takes_effect_at_once(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    let t = store.set_suppressed(c, true, at(1)).await.unwrap();
    assert!(t.state.suppressed && t.is_applied());
    let t = apply(&store, c, Status::Critical, 10).await;
    assert!(
        !t.events.contains(&Event::Alert),
        "no alert while suppressed"
    );
    let agg = aggregate_of(&store, g("g")).await;
    assert_eq!(
        (agg.status, agg.suppressed),
        (Status::Pending, 1),
        "suppressed counts as PENDING"
    );
    let t = store.set_suppressed(c, false, at(20)).await.unwrap();
    assert!(!t.state.suppressed);
    assert_eq!(
        t.events,
        vec![Event::Alert],
        "the held-back alert is sent when suppression ends"
    );
    assert!(t.state.current_alert.is_some());
    assert_eq!(aggregate_of(&store, g("g")).await.status, Status::Critical);
}

/// Every history row records the acknowledgement, downtime, suppression
/// and flapping after its change (what the notification planner derives
/// paused time from), for results and actions alike.
pub async fn history_records_flags_after_each_change(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    apply(&store, c, Status::Critical, 10).await;
    store
        .acknowledge(c, Ack::Sticky, "op", "looking", at(11))
        .await
        .unwrap();
    store.set_suppressed(c, true, at(12)).await.unwrap();
    let dt = Downtime {
        id: Uuid::from_u128(7),
        check_id: c,
        starts_at: at(13),
        ends_at: at(100),
        author: "op".into(),
        comment: "maint".into(),
    };
    store.schedule_downtime(dt, at(13)).await.unwrap();
    store.set_suppressed(c, false, at(14)).await.unwrap();
    store.remove_acknowledgement(c, at(15)).await.unwrap();
    apply(&store, c, Status::Critical, 16).await;
    let mut all = history(store.as_ref(), c, None, 100).await;
    all.reverse();
    let flags: Vec<(u64, bool, bool, bool)> = all
        .iter()
        .map(|e| (e.version, e.acknowledged, e.in_downtime, e.suppressed))
        .collect();
    assert_eq!(
        flags,
        [
            (1, false, false, false),
            (2, true, false, false),
            (3, true, false, true),
            (4, true, true, true),
            (5, true, true, false),
            (6, false, true, false),
            (7, false, true, false),
        ]
    );
    assert!(all.iter().all(|e| !e.flapping));
}

/// History is newest first and pages by `before_version`.
pub async fn history_newest_first_paginated(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "b");
    for i in 0..10 {
        let st = if i % 3 == 0 {
            Status::Ok
        } else {
            Status::Warning
        };
        apply(&store, c, st, i).await;
    }
    let all = history(store.as_ref(), c, None, 100).await;
    assert_eq!(
        all.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=10).rev().collect::<Vec<u64>>()
    );
    assert!(all.iter().all(|e| e.check_id == c && e.result_id.is_some()));
    assert_eq!(all[0].at, at(9), "at is the result's executed_at");
    assert_eq!(all[0].status, Status::Ok);
    let page1 = history(store.as_ref(), c, None, 4).await;
    assert_eq!(page1, all[..4].to_vec(), "first page");
    let page2 = history(store.as_ref(), c, Some(page1[3].version), 4).await;
    assert_eq!(
        page2,
        all[4..8].to_vec(),
        "second page continues below the first"
    );
    let last = history(store.as_ref(), c, Some(3), 4).await;
    assert_eq!(
        last.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    store.set_suppressed(c, true, at(100)).await.unwrap();
    let top = history(store.as_ref(), c, None, 1).await;
    assert_eq!(
        (top[0].version, top[0].result_id),
        (11, None),
        "actions are history too"
    );
}

/// An alert opens a record, a realert raises its worst, a recovery closes it.
pub async fn alert_records_open_and_close(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let c = s("h", "a");
    assert!(store.alerts(Some(c), 10).await.unwrap().is_empty());
    let t = apply(&store, c, Status::Warning, 10).await;
    assert_eq!(
        t.events,
        vec![Event::Alert],
        "hard WARNING with threshold 1 alerts"
    );
    let open = t.state.current_alert.expect("alert open");
    let recs = store.alerts(Some(c), 10).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (
            recs[0].id,
            recs[0].check_id,
            recs[0].status,
            recs[0].closed_at
        ),
        (open.id, c, Status::Warning, None)
    );
    let t = apply(&store, c, Status::Critical, 20).await;
    assert_eq!(t.events, vec![Event::Realert]);
    assert_eq!(
        store.alerts(Some(c), 10).await.unwrap()[0].worst,
        Status::Critical,
        "realert raises worst"
    );
    let t = apply(&store, c, Status::Ok, 30).await;
    assert_eq!(t.events, vec![Event::Recovery]);
    let recs = store.alerts(Some(c), 10).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].closed_at.is_some(), "recovery closes the record");
    assert_eq!(
        (recs[0].status, recs[0].worst),
        (Status::Warning, Status::Critical)
    );
    let t = apply(&store, c, Status::Critical, 40).await;
    let second = t.state.current_alert.expect("second alert").id;
    let recs = store.alerts(None, 10).await.unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].id, second, "newest first");
    assert_eq!(store.alerts(None, 1).await.unwrap().len(), 1, "limit");
    // What the notification planner reads: open alerts and those closed since.
    let first = recs[1].id;
    let closed = recs[1].closed_at.expect("first closed");
    let ids = |v: Vec<AlertRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.active_alerts(closed).await.unwrap()),
        vec![first, second],
        "oldest first; closed at the bound included"
    );
    assert_eq!(
        ids(store
            .active_alerts(closed + chrono::Duration::seconds(1))
            .await
            .unwrap()),
        vec![second],
        "closed before the bound left out"
    );
}

/// A config sync keeps kept checks' states, starts new ones fresh and
/// removes removed ones.
pub async fn config_sync_keeps_adds_removes(store: Arc<dyn Store>) {
    let model = small_model();
    let r = store.sync_config(&model).await.unwrap();
    assert_eq!((r.added, r.updated, r.removed), (3, 0, 0));
    let b = s("h", "b");
    apply(&store, b, Status::Critical, 10).await;
    apply(&store, b, Status::Critical, 20).await;
    let before = store.state(b).await.unwrap();
    let mut next = model.clone();
    next.checks.retain(|c| c.id != s("h", "a"));
    next.checks
        .push(service("h", "new", &[g("g2")], policy(3, 3)));
    next.checks[1].policy.every = std::time::Duration::from_secs(42);
    next.groups.push(group("g2", &[g("g")]));
    let r = store.sync_config(&next).await.unwrap();
    assert_eq!((r.added, r.updated, r.removed), (1, 2, 1), "sync report");
    assert_eq!(
        store.state(b).await.unwrap(),
        before,
        "a kept check keeps its state (attempts included)"
    );
    let fresh = store.state(s("h", "new")).await.unwrap();
    assert_eq!(
        normalised(fresh),
        normalised(state::initial_state(&policy(3, 3))),
        "a new check starts fresh"
    );
    assert!(
        matches!(store.state(s("h", "a")).await, Err(Error::NotFound { .. })),
        "a removed check is gone"
    );
    let m = store.model().await.unwrap();
    assert_eq!(m.checks.len(), 3);
    assert!(
        m.checks
            .iter()
            .any(|c| c.policy.every == std::time::Duration::from_secs(42)),
        "definitions updated"
    );
    let agg = aggregate_of(&store, g("g")).await;
    assert_eq!(
        (agg.total, agg.status),
        (3, Status::Warning.max(before.status)),
        "groups follow the new model"
    );
    let t = apply(&store, b, Status::Critical, 30).await;
    assert_eq!(t.state.attempt, 3, "attempts continue across the sync");
}

/// `apply_results` gives the same outcomes and states as serial `apply_result`.
pub async fn apply_results_batch_equals_serial(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let a = s("h", "a");
    let b = s("h", "b");
    let mut results = Vec::new();
    for i in 0..6 {
        results.push(result(a, flipping(i), 10 + i));
        results.push(result(b, Status::Warning, 10 + i));
    }
    results.push(results[0].clone()); // a duplicate... of an older one: stale
    results.push(results[11].clone()); // the last applied for b: duplicate
    let batch = store.apply_results(&results, at(100)).await.unwrap();
    assert_eq!(batch.len(), results.len(), "one outcome per result");
    let batch_states = (store.state(a).await.unwrap(), store.state(b).await.unwrap());
    // Replay serially on a pure model of the same checks.
    let model = small_model();
    let pol = |id: CheckId| {
        model
            .checks
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .policy
            .clone()
    };
    let mut st: HashMap<CheckId, CheckState> = [
        (a, state::initial_state(&pol(a))),
        (b, state::initial_state(&pol(b))),
    ]
    .into();
    for (r, got) in results.iter().zip(&batch) {
        let got = got.as_ref().expect("batch result ok");
        let want = state::transition(&st[&r.check_id], r, &pol(r.check_id), &[], at(100));
        assert_eq!(got.outcome, want.outcome, "outcome of result {}", r.id);
        assert_eq!(got.events, want.events, "events of result {}", r.id);
        assert_eq!(
            normalised(got.state.clone()),
            normalised(want.state),
            "state after result {}",
            r.id
        );
        st.insert(r.check_id, got.state.clone());
    }
    assert_eq!(batch[12].as_ref().unwrap().outcome, Outcome::Stale);
    assert_eq!(batch[13].as_ref().unwrap().outcome, Outcome::Duplicate);
    assert_eq!(
        (batch_states.0.clone(), batch_states.1.clone()),
        (st[&a].clone(), st[&b].clone())
    );
}

/// `matching_checks` selects by status, acknowledgement and downtime like
/// [`StateFilter::matches`] over `states`; `states_of` returns exactly the
/// known ids asked for.
pub async fn state_search_matches_filter(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let (host, a, b) = (h("h"), s("h", "a"), s("h", "b"));
    apply(&store, a, Status::Critical, 10).await;
    apply(&store, b, Status::Warning, 10).await;
    store
        .acknowledge(a, Ack::Normal, "op", "on it", at(11))
        .await
        .unwrap();
    store
        .schedule_downtime(downtime(b, 0, 1_000_000), at(12))
        .await
        .unwrap();
    let sorted = |mut v: Vec<CheckId>| {
        v.sort();
        v
    };
    let ids = |v: &[CheckId]| sorted(v.to_vec());
    let cases = [
        (StateFilter::default(), ids(&[host, a, b])),
        (
            StateFilter {
                statuses: Some(vec![Status::Critical, Status::Warning]),
                ..StateFilter::default()
            },
            ids(&[a, b]),
        ),
        (
            StateFilter {
                statuses: Some(vec![Status::Pending]),
                ..StateFilter::default()
            },
            ids(&[host]),
        ),
        (
            StateFilter {
                acknowledged: Some(true),
                ..StateFilter::default()
            },
            ids(&[a]),
        ),
        (
            StateFilter {
                acknowledged: Some(false),
                in_downtime: Some(true),
                ..StateFilter::default()
            },
            ids(&[b]),
        ),
        (
            StateFilter {
                statuses: Some(vec![Status::Critical]),
                in_downtime: Some(true),
                ..StateFilter::default()
            },
            vec![],
        ),
    ];
    for (filter, want) in cases {
        let got = sorted(store.matching_checks(&filter).await.unwrap());
        assert_eq!(got, want, "matching_checks({filter:?})");
    }
    let unknown = h("nowhere");
    let mut got = store.states_of(&[b, unknown, a]).await.unwrap();
    got.sort_by_key(|(id, _)| *id);
    let all: HashMap<CheckId, CheckState> = store.states().await.unwrap().into_iter().collect();
    let mut want: Vec<_> = [a, b].iter().map(|id| (*id, all[id].clone())).collect();
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(got, want, "states_of returns the known checks' states");
}

/// `states_checked_before` returns the states last checked before the
/// instant (strictly) and those never checked, each with its full state.
pub async fn states_checked_before_selects_old_and_unchecked(store: Arc<dyn Store>) {
    synced(&store, &small_model()).await;
    let (host, a, b) = (h("h"), s("h", "a"), s("h", "b"));
    apply(&store, a, Status::Ok, 10).await;
    apply(&store, b, Status::Ok, 20).await;
    let all: HashMap<CheckId, CheckState> = store.states().await.unwrap().into_iter().collect();
    for (before, want) in [
        (10, vec![host]),
        (15, vec![host, a]),
        (21, vec![host, a, b]),
    ] {
        let mut got = store.states_checked_before(at(before)).await.unwrap();
        got.sort_by_key(|(id, _)| *id);
        let mut want: Vec<_> = want.iter().map(|id| (*id, all[id].clone())).collect();
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got, want,
            "states_checked_before({before}s): the states last checked before it, and those never checked"
        );
    }
}
