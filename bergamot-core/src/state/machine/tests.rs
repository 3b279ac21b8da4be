//! Table-driven tests of the transition rules, one test per rule of
//! DESIGN.md "State machine". The executable vectors (tests/state_vectors.rs)
//! cover whole scenarios; these pin the edges of each rule.

use super::*;
use crate::model::{CheckId, ResultId};
use chrono::TimeZone;

use Status::{Critical, Ok as OkS, Unknown, Warning};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid fixed date")
}

fn policy(failed_after: u32, recovers_after: u32) -> Policy {
    Policy::builder()
        .failed_after(failed_after)
        .recovers_after(recovers_after)
        .build()
}

/// A dependency's state.
fn dep(hard: bool, ok: bool) -> DependencyState {
    DependencyState { hard, ok }
}

/// One check driven through inputs one minute apart.
struct Sim {
    policy: Policy,
    state: CheckState,
    deps: Vec<DependencyState>,
    step: i64,
}

impl Sim {
    fn new(policy: Policy) -> Self {
        let state = initial_state(&policy);
        Sim {
            policy,
            state,
            deps: Vec::new(),
            step: 0,
        }
    }

    fn now(&mut self) -> DateTime<Utc> {
        self.step += 1;
        t0() + chrono::Duration::seconds(60 * self.step)
    }

    fn take(&mut self, t: Transition) -> Transition {
        self.state = t.state.clone();
        t
    }

    fn result(&mut self, status: Status) -> Transition {
        let at = self.now();
        let r = CheckResult::new(CheckId::random(), status, status.as_str(), at);
        let t = transition(&self.state, &r, &self.policy, &self.deps, at);
        assert_eq!(t.outcome, Outcome::Applied, "a fresh result is applied");
        self.take(t)
    }

    /// Applies `statuses`, returning the events of each.
    fn results(&mut self, statuses: &[Status]) -> Vec<Vec<Event>> {
        statuses.iter().map(|&s| self.result(s).events).collect()
    }

    fn downtime(&mut self, on: bool) -> Transition {
        let now = self.now();
        let t = set_downtime(&self.state, on, &self.policy, now);
        self.take(t)
    }

    fn suppressed(&mut self, on: bool) -> Transition {
        let now = self.now();
        let t = set_suppressed(&self.state, on, &self.policy, now);
        self.take(t)
    }

    fn ack(&mut self, kind: Ack) -> Transition {
        let now = self.now();
        let t = acknowledge(&self.state, kind, &self.policy, now);
        self.take(t)
    }

    /// Drives the check to hard not-ok with an open alert.
    fn hard_failing(&mut self, status: Status) {
        for _ in 0..self.policy.failed_after.max(1) {
            self.result(status);
        }
        assert!(self.state.hard && !self.state.ok && self.state.current_alert.is_some());
    }

    /// Applies `status` `n` times, returning the flap percent and events of
    /// each result that had events.
    fn eventful(&mut self, status: Status, n: usize) -> Vec<(f64, Vec<Event>)> {
        let mut seen = Vec::new();
        for _ in 0..n {
            let t = self.result(status);
            if !t.events.is_empty() {
                seen.push((t.state.flap_percent, t.events));
            }
        }
        seen
    }

    /// A check with `policy` driven to hard `status` with an open alert.
    fn failing(policy: Policy, status: Status) -> Self {
        let mut sim = Sim::new(policy);
        sim.hard_failing(status);
        sim
    }
}

#[test]
fn initial_state_is_pending_ok_hard() {
    for recovers_after in [0, 1, 3, 7] {
        let s = initial_state(&policy(3, recovers_after));
        assert_eq!(s.status, Status::Pending);
        assert!(s.ok && s.hard && !s.flapping && !s.encompassed);
        assert_eq!(
            s.attempt,
            recovers_after.max(1),
            "recovers_after {recovers_after}"
        );
        assert_eq!(s.ok_history, 0x1F_FFFF);
        assert_eq!(s.flap_percent, 0.0);
        assert_eq!(s.acknowledged, Ack::None);
        assert_eq!(s.current_alert, None);
        assert_eq!(s.version, 0);
    }
}

#[test]
fn soft_attempts_then_hard_at_the_alert_threshold() {
    for failed_after in [1u32, 3, 5] {
        let mut sim = Sim::new(policy(failed_after, 3));
        sim.result(OkS);
        for n in 1..=failed_after + 2 {
            let t = sim.result(Critical);
            let want_hard = n >= failed_after;
            let ctx = format!("failed_after {failed_after}, result {n}");
            assert_eq!(t.state.attempt, n.min(failed_after), "{ctx}: attempt");
            assert_eq!(t.state.hard, want_hard, "{ctx}: hard");
            let want_events = if n == failed_after {
                vec![Event::Alert]
            } else {
                vec![]
            };
            assert_eq!(t.events, want_events, "{ctx}: events");
            assert_eq!(
                t.state.current_alert.is_some(),
                want_hard,
                "{ctx}: alert open"
            );
        }
    }
}

#[test]
fn soft_attempts_then_hard_at_the_recovery_threshold() {
    for recovers_after in [1u32, 2, 4] {
        let mut sim = Sim::failing(policy(2, recovers_after), Critical);
        for n in 1..=recovers_after + 1 {
            let t = sim.result(OkS);
            let ctx = format!("recovers_after {recovers_after}, ok result {n}");
            assert_eq!(t.state.attempt, n.min(recovers_after), "{ctx}: attempt");
            assert_eq!(t.state.hard, n >= recovers_after, "{ctx}: hard");
            let want = if n == recovers_after {
                vec![Event::Recovery]
            } else {
                vec![]
            };
            assert_eq!(t.events, want, "{ctx}: events");
            assert_eq!(
                t.state.current_alert.is_some(),
                n < recovers_after,
                "{ctx}: alert"
            );
        }
    }
}

#[test]
fn a_threshold_of_zero_acts_as_one() {
    let mut sim = Sim::new(policy(0, 0));
    let t = sim.result(Critical);
    assert!(t.state.hard);
    assert_eq!(t.state.attempt, 1);
    assert_eq!(t.events, vec![Event::Alert]);
}

#[test]
fn soft_blip_notifies_nothing() {
    // (failed_after, the blip) -- every blip shorter than the threshold.
    let cases: &[(u32, &[Status])] = &[
        (2, &[Critical]),
        (3, &[Warning, Critical]),
        (5, &[Unknown, Unknown, Unknown, Unknown]),
    ];
    for (failed_after, blip) in cases {
        let mut sim = Sim::new(policy(*failed_after, 3));
        sim.result(OkS);
        let mut all: Vec<Vec<Event>> = sim.results(blip);
        all.extend(sim.results(&[OkS, OkS, OkS, OkS]));
        assert!(
            all.iter().all(|e| e.is_empty()),
            "failed_after {failed_after}, blip {blip:?}: events {all:?}"
        );
        assert!(sim.state.hard && sim.state.ok && sim.state.current_alert.is_none());
    }
}

#[test]
fn worse_while_hard_realerts_better_does_not() {
    let cases: &[(Status, Status, &[Event])] = &[
        // docs/decisions.md "Severity order": CRITICAL is the worst, the
        // broken checks (UNKNOWN, TIMEOUT, ERROR) rank between WARNING and it.
        (Warning, Critical, &[Event::Realert]),
        (Warning, Unknown, &[Event::Realert]),
        (Unknown, Critical, &[Event::Realert]),
        (Status::Error, Critical, &[Event::Realert]),
        (Status::Timeout, Status::Error, &[Event::Realert]),
        (Status::Action, Critical, &[Event::Realert]),
        (Critical, Status::Action, &[]),
        (Critical, Unknown, &[]),
        (Critical, Status::Error, &[]),
        (Critical, Warning, &[]),
        (Critical, Critical, &[]),
    ];
    for (from, to, want) in cases {
        let mut sim = Sim::failing(policy(2, 2), *from);
        let alert = sim.state.current_alert;
        let t = sim.result(*to);
        assert_eq!(t.events, *want, "{from} -> {to}");
        assert_eq!(
            t.state.current_alert, alert,
            "{from} -> {to}: same alert stays open"
        );
        assert_eq!(t.state.status, *to);
    }
}

#[test]
fn no_realert_when_acknowledged_or_held_back() {
    type Setup = fn(&mut Sim);
    let cases: &[(&str, Setup)] = &[
        ("acknowledged", |s| {
            s.ack(Ack::Sticky);
        }),
        ("in downtime", |s| {
            s.downtime(true);
        }),
        ("suppressed", |s| {
            s.suppressed(true);
        }),
        ("encompassed", |s| s.deps = vec![dep(true, false)]),
    ];
    for (name, setup) in cases {
        let mut sim = Sim::failing(policy(1, 1), Warning);
        setup(&mut sim);
        let t = sim.result(Critical);
        assert_eq!(t.events, vec![], "{name}");
        assert!(
            t.state.current_alert.is_some(),
            "{name}: the alert stays open"
        );
    }
}

#[test]
fn soft_dependency_holds_the_dependant_soft() {
    for failed_after in [1u32, 2, 3] {
        let mut sim = Sim::new(policy(failed_after, 3));
        sim.result(OkS);
        sim.deps = vec![dep(true, true), dep(false, false)];
        for n in 1..=failed_after + 3 {
            let t = sim.result(Critical);
            let ctx = format!("failed_after {failed_after}, result {n}");
            assert!(!t.state.hard, "{ctx}: held soft");
            assert_eq!(
                t.state.attempt,
                n.min(failed_after),
                "{ctx}: waits at threshold"
            );
            assert!(
                !t.state.encompassed,
                "{ctx}: a soft dependency does not encompass"
            );
            assert_eq!(t.events, vec![], "{ctx}");
        }
        // The dependency settles ok: the next result turns hard and alerts.
        sim.deps = vec![dep(true, true)];
        let t = sim.result(Critical);
        assert!(t.state.hard);
        assert_eq!(t.state.attempt, failed_after);
        assert_eq!(t.events, vec![Event::Alert]);
    }
}

#[test]
fn soft_dependency_holds_a_recovery_soft_too() {
    let mut sim = Sim::failing(policy(1, 1), Critical);
    sim.deps = vec![dep(false, true)];
    let t = sim.result(OkS);
    assert!(!t.state.hard && t.state.ok);
    assert_eq!(t.events, vec![]);
    sim.deps.clear();
    let t = sim.result(OkS);
    assert!(t.state.hard);
    assert_eq!(t.events, vec![Event::Recovery]);
}

#[test]
fn encompassed_by_a_hard_failing_dependency() {
    // (dependencies, encompassed?)
    let hard_bad = dep(true, false);
    let hard_ok = dep(true, true);
    let soft_bad = dep(false, false);
    let cases: &[(&[DependencyState], bool)] = &[
        (&[], false),
        (&[hard_ok], false),
        (&[hard_bad], true),
        (&[hard_ok, hard_bad], true),
        (&[soft_bad, hard_bad], false),
    ];
    for (deps, want) in cases {
        let mut sim = Sim::new(policy(1, 1));
        sim.deps = deps.to_vec();
        let t = sim.result(Critical);
        assert_eq!(t.state.encompassed, *want, "deps {deps:?}");
        assert_eq!(
            t.state.current_alert.is_some(),
            !*want && t.state.hard,
            "deps {deps:?}"
        );
    }

    // Still failing once the dependency is ok again: it alerts then.
    let mut sim = Sim::new(policy(2, 2));
    sim.deps = vec![hard_bad];
    let evs = sim.results(&[Critical, Critical, Critical]);
    assert!(evs.iter().all(|e| e.is_empty()), "{evs:?}");
    assert!(sim.state.hard && sim.state.encompassed && sim.state.current_alert.is_none());
    sim.deps = vec![hard_ok];
    let t = sim.result(Critical);
    assert!(!t.state.encompassed);
    assert_eq!(t.events, vec![Event::Alert]);
}

#[test]
fn encompassed_check_still_recovers() {
    let mut sim = Sim::failing(policy(1, 1), Critical);
    sim.deps = vec![dep(true, false)];
    let t = sim.result(OkS);
    assert_eq!(t.events, vec![Event::Recovery]);
}

#[test]
fn flapping_starts_at_high_and_stops_at_low() {
    // A history whose next ok result gives some percent between 0 and 100.
    let history = 0b1_0110_0101_1001_0110_1101;
    let pct = flap::flap_percent(flap::push(history, true));
    assert!(pct > 0.0 && pct < 100.0);
    // (flapping before, flap_low, flap_high, flapping after, events)
    let cases: &[(bool, f64, f64, bool, &[Event])] = &[
        (false, pct - 10.0, pct, true, &[Event::FlappingStarted]),
        (false, pct - 10.0, pct + 0.01, false, &[]),
        (true, pct, pct + 10.0, false, &[Event::FlappingStopped]),
        (true, pct - 0.01, pct + 10.0, true, &[]),
        // Between low and high nothing changes, in either direction.
        (false, pct - 1.0, pct + 1.0, false, &[]),
        (true, pct - 1.0, pct + 1.0, true, &[]),
    ];
    for (before, low, high, after, want) in cases {
        let p = Policy {
            flap_low: *low,
            flap_high: *high,
            ..policy(1, 1)
        };
        let mut state = initial_state(&p);
        state.ok_history = history;
        state.flapping = *before;
        let r = CheckResult::new(CheckId::random(), OkS, "", t0());
        let t = transition(&state, &r, &p, &[], t0());
        let ctx = format!("before {before}, low {low}, high {high}, percent {pct}");
        assert_eq!(t.state.flap_percent, pct, "{ctx}");
        assert_eq!(t.state.flapping, *after, "{ctx}");
        assert_eq!(t.events, *want, "{ctx}");
    }
}

#[test]
fn flapping_percent_follows_the_results() {
    let mut sim = Sim::new(policy(1, 1));
    // A change in the newest pair only.
    assert_eq!(sim.result(Critical).state.flap_percent, 6.25);
    // A change on every one of 21 results.
    for i in 0..20 {
        sim.result(if i % 2 == 0 { OkS } else { Critical });
    }
    assert_eq!(sim.state.flap_percent, 100.0);
    assert!(sim.state.flapping);
    // Twenty equal results leave one change in the oldest pair only.
    let last = sim.state.status;
    for _ in 0..19 {
        sim.result(last);
    }
    assert_eq!(sim.state.flap_percent, 3.75);
    assert!(!sim.state.flapping);
}

#[test]
fn flapping_holds_alerts_back_until_it_stops() {
    let p = Policy {
        flap_low: 5.0,
        flap_high: 6.0,
        ..policy(1, 1)
    };
    let mut sim = Sim::new(p);
    // The first change is 6.25 %: flapping starts before the alert would open.
    let t = sim.result(Critical);
    assert_eq!(t.events, vec![Event::FlappingStarted]);
    assert!(t.state.hard && t.state.current_alert.is_none());
    // Steady failure decays the percent; the alert goes out when flapping stops.
    let seen = sim.eventful(Critical, 20);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].0 <= 5.0);
    assert_eq!(seen[0].1, vec![Event::FlappingStopped, Event::Alert]);
}

#[test]
fn acknowledgement_rules() {
    // (kind, next status, acknowledgement after)
    let cases: &[(Ack, Status, Ack)] = &[
        (Ack::Normal, Critical, Ack::Normal),
        (Ack::Normal, Warning, Ack::None),
        (Ack::Normal, Unknown, Ack::None),
        (Ack::Normal, OkS, Ack::None),
        (Ack::Sticky, Critical, Ack::Sticky),
        (Ack::Sticky, Warning, Ack::Sticky),
        (Ack::Sticky, Unknown, Ack::Sticky),
        (Ack::Sticky, OkS, Ack::None),
    ];
    for (kind, next, want) in cases {
        let mut sim = Sim::failing(policy(1, 1), Critical);
        let t = sim.ack(*kind);
        assert_eq!(t.outcome, Outcome::Applied);
        assert_eq!(t.state.acknowledged, *kind);
        let t = sim.result(*next);
        assert_eq!(t.state.acknowledged, *want, "{kind:?} then {next}");
    }
}

#[test]
fn sticky_ack_survives_a_soft_recovery() {
    let mut sim = Sim::failing(policy(1, 3), Critical);
    sim.ack(Ack::Sticky);
    for _ in 0..2 {
        assert_eq!(sim.result(OkS).state.acknowledged, Ack::Sticky);
    }
    assert_eq!(sim.result(Warning).state.acknowledged, Ack::Sticky);
    sim.results(&[OkS, OkS]);
    assert_eq!(sim.result(OkS).state.acknowledged, Ack::None);
}

#[test]
fn acknowledging_outcomes() {
    let mut sim = Sim::new(policy(1, 1));
    sim.result(OkS);
    let v = sim.state.version;
    for kind in [Ack::Normal, Ack::Sticky] {
        let t = sim.ack(kind);
        assert_eq!(t.outcome, Outcome::Refused, "{kind:?} of an ok check");
        assert_eq!(t.state.acknowledged, Ack::None);
        assert_eq!(t.state.version, v);
    }
    sim.result(Critical);
    let v = sim.state.version;
    assert_eq!(sim.ack(Ack::Normal).outcome, Outcome::Applied);
    assert_eq!(sim.ack(Ack::Normal).outcome, Outcome::Unchanged);
    assert_eq!(sim.ack(Ack::Sticky).outcome, Outcome::Applied);
    assert_eq!(sim.state.version, v + 2);
    let now = sim.now();
    let t = remove_acknowledgement(&sim.state, &sim.policy, now);
    assert_eq!(
        (t.outcome, t.state.acknowledged),
        (Outcome::Applied, Ack::None)
    );
    assert_eq!(t.state.version, v + 3);
    let t = remove_acknowledgement(&t.state, &sim.policy, now);
    assert_eq!(t.outcome, Outcome::Unchanged);
    // An acknowledgement opens and closes nothing.
    assert!(t.events.is_empty() && t.state.current_alert.is_some());
}

#[test]
fn stale_and_duplicate_results_change_nothing() {
    let p = policy(3, 3);
    let s0 = initial_state(&p);
    let first = CheckResult::new(CheckId::random(), Critical, "first", t0());
    let applied = transition(&s0, &first, &p, &[], t0()).state;

    let mut older = first.clone();
    older.id = ResultId::random();
    older.executed_at = t0() - chrono::Duration::milliseconds(1);
    let mut same_time_later = first.clone();
    same_time_later.id = ResultId::now();
    let mut same_time_earlier = first.clone();
    same_time_earlier.id = ResultId(uuid::Uuid::nil());
    let mut redelivered_later = first.clone();
    redelivered_later.executed_at = t0() + chrono::Duration::seconds(60);

    // (name, result, outcome)
    let cases: &[(&str, &CheckResult, Outcome)] = &[
        ("redelivered", &first, Outcome::Duplicate),
        (
            "same id, other time",
            &redelivered_later,
            Outcome::Duplicate,
        ),
        ("older", &older, Outcome::Stale),
        (
            "same time, smaller id (applied before, redelivered)",
            &same_time_earlier,
            Outcome::Stale,
        ),
        ("same time, greater id", &same_time_later, Outcome::Applied),
    ];
    for (name, r, want) in cases {
        let t = transition(&applied, r, &p, &[], t0());
        assert_eq!(t.outcome, *want, "{name}");
        if *want != Outcome::Applied {
            assert_eq!(t.state, applied, "{name}: state unchanged");
            assert!(t.events.is_empty(), "{name}");
        } else {
            assert_eq!(t.state.version, applied.version + 1, "{name}");
        }
    }
}

#[test]
fn interval_in_each_state() {
    let mut p = policy(2, 2);
    p.every = Duration::from_secs(300);
    p.retry_every = Duration::from_secs(60);
    let with_changing = Policy {
        changing_every: Some(Duration::from_secs(15)),
        ..p.clone()
    };
    // (ok, hard, policy, interval)
    let cases: &[(bool, bool, &Policy, u64)] = &[
        (true, true, &p, 300),
        (false, true, &p, 60),
        (true, false, &p, 60),
        (false, false, &p, 60),
        (true, true, &with_changing, 300),
        (false, true, &with_changing, 60),
        (true, false, &with_changing, 15),
        (false, false, &with_changing, 15),
    ];
    for (ok, hard, pol, want) in cases {
        let mut s = initial_state(pol);
        s.ok = *ok;
        s.hard = *hard;
        assert_eq!(
            next_interval(&s, pol),
            Duration::from_secs(*want),
            "ok {ok}, hard {hard}, changing_every {:?}",
            pol.changing_every
        );
    }
    // The transition reports the interval of its resulting state.
    let mut sim = Sim::new(with_changing);
    assert_eq!(sim.result(Critical).next_interval, Duration::from_secs(15));
    assert_eq!(sim.result(Critical).next_interval, Duration::from_secs(60));
    assert_eq!(sim.result(OkS).next_interval, Duration::from_secs(15));
    assert_eq!(sim.result(OkS).next_interval, Duration::from_secs(300));
}

#[test]
fn downtime_and_suppression_hold_notifications_back() {
    type Toggle = fn(&mut Sim, bool) -> Transition;
    let toggles: &[(&str, Toggle)] = &[
        ("downtime", |s, on| s.downtime(on)),
        ("suppression", |s, on| s.suppressed(on)),
    ];
    for (name, toggle) in toggles {
        // An alert held back is sent when the hold ends.
        let mut sim = Sim::new(policy(2, 2));
        sim.result(OkS);
        assert_eq!(toggle(&mut sim, true).outcome, Outcome::Applied, "{name}");
        assert_eq!(toggle(&mut sim, true).outcome, Outcome::Unchanged, "{name}");
        let evs = sim.results(&[Critical, Critical, Critical]);
        assert!(evs.iter().all(|e| e.is_empty()), "{name}: {evs:?}");
        assert!(
            sim.state.hard && sim.state.current_alert.is_none(),
            "{name}"
        );
        let t = toggle(&mut sim, false);
        assert_eq!(t.events, vec![Event::Alert], "{name}: alert when it ends");
        let alert = t.state.current_alert.expect("alert opened");
        assert_eq!(
            alert.opened_at,
            t0() + chrono::Duration::seconds(60 * sim.step)
        );

        // A recovery held back is sent when the hold ends.
        toggle(&mut sim, true);
        let evs = sim.results(&[OkS, OkS, OkS]);
        assert!(evs.iter().all(|e| e.is_empty()), "{name}: {evs:?}");
        assert!(
            sim.state.current_alert.is_some(),
            "{name}: recovery held back"
        );
        let t = toggle(&mut sim, false);
        assert_eq!(
            t.events,
            vec![Event::Recovery],
            "{name}: recovery when it ends"
        );
        assert!(t.state.current_alert.is_none());

        // A hold over a soft blip has nothing to send.
        toggle(&mut sim, true);
        sim.result(Critical);
        let t = toggle(&mut sim, false);
        assert_eq!(t.events, vec![], "{name}: soft state sends nothing");
    }
}

#[test]
fn downtime_over_a_whole_incident_sends_nothing() {
    let mut sim = Sim::new(policy(1, 1));
    sim.result(OkS);
    sim.downtime(true);
    sim.results(&[Critical, Critical, OkS]);
    assert_eq!(sim.downtime(false).events, vec![]);
}

#[test]
fn one_hold_ending_while_another_lasts_sends_nothing() {
    let mut sim = Sim::new(policy(1, 1));
    sim.downtime(true);
    sim.suppressed(true);
    sim.result(Critical);
    assert_eq!(sim.downtime(false).events, vec![]);
    assert_eq!(sim.suppressed(false).events, vec![Event::Alert]);
}

#[test]
fn every_applied_input_bumps_the_version_once() {
    let mut sim = Sim::new(policy(1, 1));
    let mut want = 0;
    let mut check = |t: &Transition, sim_version: u64| {
        if t.is_applied() {
            want += 1;
        }
        assert_eq!(sim_version, want, "{:?}", t.outcome);
    };
    let t = sim.result(Critical);
    check(&t, sim.state.version);
    let t = sim.ack(Ack::Normal);
    check(&t, sim.state.version);
    let t = sim.ack(Ack::Normal);
    check(&t, sim.state.version);
    let t = sim.downtime(true);
    check(&t, sim.state.version);
    let t = sim.downtime(true);
    check(&t, sim.state.version);
    let t = sim.suppressed(true);
    check(&t, sim.state.version);
    let t = sim.result(OkS);
    check(&t, sim.state.version);
    let t = sim.ack(Ack::Sticky);
    check(&t, sim.state.version);
    assert_eq!(want, 5);
}

#[test]
fn timestamps() {
    let mut sim = Sim::new(policy(2, 2));
    let t1 = sim.result(OkS);
    let at1 = t1.state.last_check_at.expect("set");
    assert_eq!(
        t1.state.last_state_change_at,
        Some(at1),
        "PENDING -> OK is a change"
    );
    assert_eq!(t1.state.last_hard_change_at, Some(at1), "first hard state");
    let t2 = sim.result(Critical);
    let at2 = t2.state.last_check_at.expect("set");
    assert_eq!(t2.state.last_state_change_at, Some(at2));
    assert_eq!(
        t2.state.last_hard_change_at,
        Some(at1),
        "soft is no hard change"
    );
    let t3 = sim.result(Critical);
    let at3 = t3.state.last_check_at.expect("set");
    assert_eq!(t3.state.last_state_change_at, Some(at2), "same status");
    assert_eq!(
        t3.state.last_hard_change_at,
        Some(at3),
        "hard ok -> hard not-ok"
    );
    assert_eq!(t3.state.current_alert.map(|a| a.opened_at), Some(at3));
    let t4 = sim.result(Warning);
    assert_eq!(t4.state.last_state_change_at, t4.state.last_check_at);
    assert_eq!(t4.state.last_hard_change_at, Some(at3), "still hard not-ok");
}

#[test]
fn alert_id_is_derived_from_the_result() {
    let p = policy(1, 1);
    let s = initial_state(&p);
    let r = CheckResult::new(CheckId::random(), Critical, "", t0());
    let a = transition(&s, &r, &p, &[], t0()).state.current_alert;
    let b = transition(&s, &r, &p, &[], t0()).state.current_alert;
    assert!(a.is_some());
    assert_eq!(a, b, "replaying a result opens the same alert");
    let mut other = r.clone();
    other.id = ResultId::random();
    let c = transition(&s, &other, &p, &[], t0()).state.current_alert;
    assert_ne!(a.map(|x| x.id), c.map(|x| x.id));
}

#[test]
fn result_payload_is_taken() {
    let p = policy(1, 1);
    let mut r = CheckResult::new(CheckId::random(), Warning, "disk 91%", t0());
    r.long_output = "more".into();
    r.perfdata = vec![crate::model::Perfdata {
        label: "used".into(),
        value: Some(91.0),
        uom: "%".into(),
        warn: Some("90".into()),
        crit: None,
        min: Some(0.0),
        max: Some(100.0),
    }]
    .into();
    let t = transition(&initial_state(&p), &r, &p, &[], t0());
    assert_eq!(t.state.output, r.output);
    assert_eq!(t.state.long_output, r.long_output);
    assert_eq!(t.state.perfdata, r.perfdata);
    // Shared with the result, not copied.
    assert!(std::sync::Arc::ptr_eq(&t.state.output, &r.output));
    assert!(std::sync::Arc::ptr_eq(&t.state.perfdata, &r.perfdata));
    assert_eq!(t.state.last_result_id, Some(r.id));
}

#[test]
fn flapping_holds_a_recovery_back_until_it_stops() {
    let p = Policy {
        flap_low: 5.0,
        flap_high: 12.0,
        ..policy(1, 1)
    };
    let mut sim = Sim::new(p);
    assert_eq!(sim.result(Critical).events, vec![Event::Alert]);
    // The recovery brings two changes (12.37 %): flapping, so it waits.
    let t = sim.result(OkS);
    assert_eq!(t.events, vec![Event::FlappingStarted]);
    assert!(t.state.hard && t.state.ok && t.state.current_alert.is_some());
    let seen = sim.eventful(OkS, 30);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].0 <= 5.0);
    assert_eq!(seen[0].1, vec![Event::FlappingStopped, Event::Recovery]);
    assert!(sim.state.current_alert.is_none());
}

#[test]
fn transitions_say_whether_the_interval_and_the_aggregate_contribution_changed() {
    let mut sim = Sim::new(Policy {
        every: std::time::Duration::from_secs(60),
        retry_every: std::time::Duration::from_secs(10),
        changing_every: None,
        ..policy(2, 1)
    });
    // PENDING -> OK: the status the groups see changes, the interval does not.
    let t = sim.result(OkS);
    assert!(t.contribution_changed && !t.interval_changed);
    // OK again: nothing a group or the scheduler sees.
    let t = sim.result(OkS);
    assert!(!t.contribution_changed && !t.interval_changed);
    // Soft CRITICAL: both (retry interval, CRITICAL counted).
    let t = sim.result(Critical);
    assert!(t.contribution_changed && t.interval_changed);
    // Hard CRITICAL: same status, same (retry) interval.
    let t = sim.result(Critical);
    assert!(t.state.hard && !t.contribution_changed && !t.interval_changed);
    // An acknowledgement changes the contribution (ignored) only.
    let t = sim.ack(Ack::Normal);
    assert!(t.contribution_changed && !t.interval_changed);
    // Refused and unchanged inputs change nothing.
    let t = sim.ack(Ack::Normal);
    assert!(!t.is_applied() && !t.contribution_changed && !t.interval_changed);
    // The in-place path decides the same.
    let mut state = sim.state.clone();
    let at = sim.now();
    let r = CheckResult::new(CheckId::random(), OkS, "back", at);
    let d = transition_in_place(&mut state, &r, &sim.policy, &[], at);
    let t = transition(&sim.state, &r, &sim.policy, &[], at);
    assert_eq!(
        (d.contribution_changed, d.interval_changed),
        (t.contribution_changed, t.interval_changed)
    );
    assert!(t.contribution_changed && t.interval_changed);
}

/// The vectors' README pins: an acknowledgement of either kind ends when
/// the check is hard ok again, even while its recovery notification is held
/// back (downtime, suppression).
#[test]
fn ack_ends_at_hard_ok_even_while_recovery_is_held_back() {
    for kind in [Ack::Normal, Ack::Sticky] {
        for hold in ["downtime", "suppressed"] {
            let mut sim = Sim::failing(policy(1, 2), Critical);
            sim.ack(kind);
            match hold {
                "downtime" => sim.downtime(true),
                _ => sim.suppressed(true),
            };
            let t = sim.result(OkS);
            // Soft ok: a sticky acknowledgement holds (a normal one ends
            // with the status change anyway).
            if kind == Ack::Sticky {
                assert_eq!(t.state.acknowledged, Ack::Sticky, "{kind:?} {hold}");
            }
            let t = sim.result(OkS);
            assert!(t.state.hard && t.state.ok, "{kind:?} {hold}");
            assert!(t.events.is_empty(), "{kind:?} {hold}: recovery held back");
            assert_eq!(t.state.acknowledged, Ack::None, "{kind:?} {hold}");
        }
    }
}

/// The vectors' README pins: an encompassed check never re-alerts, however
/// much worse it gets, while its dependency's alert covers it.
#[test]
fn encompassed_check_never_realerts() {
    let mut sim = Sim::failing(policy(1, 1), Warning);
    sim.deps = vec![dep(true, false)];
    for status in [Critical, Warning, Unknown, Critical] {
        let t = sim.result(status);
        assert!(t.state.encompassed && t.state.current_alert.is_some());
        assert!(t.events.is_empty(), "{status:?}: {:?}", t.events);
    }
}

/// A recovery names the alert it closed (by a result, by leaving a
/// downtime, in place); no other transition names one.
#[test]
fn a_recovery_carries_the_closed_alert() {
    // Never flapping: the flips here must not hold anything back.
    let mut sim = Sim::new(Policy {
        flap_high: 101.0,
        flap_low: 100.0,
        ..policy(1, 1)
    });
    sim.hard_failing(Critical);
    let open = sim.state.current_alert.expect("alert open").id;
    let t = sim.result(Critical);
    assert_eq!(t.closed_alert, None, "still failing");
    let t = sim.result(OkS);
    assert_eq!(t.events, vec![Event::Recovery]);
    assert_eq!(t.closed_alert, Some(open));
    assert_eq!(sim.result(OkS).closed_alert, None, "closed only once");

    // Recovered during a downtime: the recovery (and the id) comes when it ends.
    sim.hard_failing(Warning);
    let open = sim.state.current_alert.expect("alert open").id;
    assert_eq!(sim.downtime(true).closed_alert, None);
    assert_eq!(sim.result(OkS).closed_alert, None, "held back");
    let t = sim.downtime(false);
    assert_eq!(t.events, vec![Event::Recovery]);
    assert_eq!(t.closed_alert, Some(open));

    // transition_in_place decides the same.
    sim.hard_failing(Critical);
    let open = sim.state.current_alert.expect("alert open").id;
    let at = sim.now();
    let r = CheckResult::new(CheckId::random(), OkS, "ok", at);
    let d = transition_in_place(&mut sim.state, &r, &sim.policy, &[], at);
    assert_eq!(d.events, vec![Event::Recovery]);
    assert_eq!(d.closed_alert, Some(open));
}
