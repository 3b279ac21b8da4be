//! Runs the executable state-machine vectors (`tests/vectors/state-machine.json`,
//! format in `tests/vectors/README.md`) against the pure transition functions
//! and checks every expected field of every step.
//!
//! The vectors are a copy of the shared reference set kept in the repo so a
//! clone can run them. Every mismatch is collected and reported together,
//! each naming its scenario, step and field, so one run shows the whole
//! picture instead of the first difference.

use bergamot_core::model::{CheckId, CheckResult, Policy, ResultId, Status};
use bergamot_core::state::{
    acknowledge, initial_state, next_interval, set_downtime, set_suppressed, transition,
    transition_in_place, Ack, CheckState, DependencyState, Event, Outcome, Transition,
};
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use std::fmt::Debug;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(default)]
    policy: serde_json::Map<String, serde_json::Value>,
    steps: Vec<Step>,
}

/// One step. Unknown fields are an error: a new kind of input or
/// expectation in the vectors must fail here until this runner knows it,
/// never be skipped silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    deps: Option<Vec<DependencyState>>,
    ack: Option<Ack>,
    downtime: Option<bool>,
    suppressed: Option<bool>,
    status: Option<Status>,
    at: Option<f64>,
    id: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Status,
    ok: bool,
    hard: bool,
    attempt: u32,
    flapping: bool,
    acknowledged: Ack,
    alert_open: bool,
    encompassed: bool,
    next_interval: f64,
    events: Vec<Event>,
    applied: Option<bool>,
    flap_percent: Option<f64>,
}

/// Namespace for result ids named in the vectors (`"a"`, `"b"` ...).
const RESULT_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_9d1e_7a42_4b8e_b6d1_5e2f_08a7_c913);

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid fixed date")
}

fn at_seconds(s: f64) -> DateTime<Utc> {
    epoch() + chrono::Duration::milliseconds((s * 1000.0).round() as i64)
}

/// The scenario's policy: its overrides applied to the README's defaults,
/// which are `Policy::default()`. Goes through JSON so an override uses the
/// same field names and units (seconds) as the vectors.
fn scenario_policy(s: &Scenario) -> Policy {
    let mut base = match serde_json::to_value(Policy::default()) {
        Ok(serde_json::Value::Object(m)) => m,
        other => panic!("Policy serialises to an object, got {other:?}"),
    };
    for (k, v) in &s.policy {
        assert!(
            base.contains_key(k),
            "scenario {:?}: unknown policy field {k:?}",
            s.name
        );
        base.insert(k.clone(), v.clone());
    }
    serde_json::from_value(serde_json::Value::Object(base))
        .unwrap_or_else(|e| panic!("scenario {:?}: bad policy: {e}", s.name))
}

fn load() -> Vec<Scenario> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/state-machine.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Collects mismatches with their place.
struct Report {
    failures: Vec<String>,
    checked_fields: usize,
}

impl Report {
    fn field<T: PartialEq + Debug>(&mut self, place: &str, field: &str, got: T, want: T) {
        self.checked_fields += 1;
        if got != want {
            self.failures
                .push(format!("{place}: {field}: got {got:?}, want {want:?}"));
        }
    }
}

/// Runs one step's inputs in the README's order; returns the transitions.
fn run_step(
    scenario: &Scenario,
    index: usize,
    step: &Step,
    policy: &Policy,
    state: &mut CheckState,
    deps: &mut Vec<DependencyState>,
    in_place: bool,
) -> (Vec<Transition>, Option<Transition>) {
    let now = at_seconds(60.0 * index as f64);
    let mut actions = Vec::new();
    if let Some(d) = &step.deps {
        *deps = d.clone();
    }
    if let Some(kind) = step.ack {
        actions.push(acknowledge(state, kind, policy, now));
        *state = actions[actions.len() - 1].state.clone();
    }
    if let Some(on) = step.downtime {
        actions.push(set_downtime(state, on, policy, now));
        *state = actions[actions.len() - 1].state.clone();
    }
    if let Some(on) = step.suppressed {
        actions.push(set_suppressed(state, on, policy, now));
        *state = actions[actions.len() - 1].state.clone();
    }
    let result = step.status.map(|status| {
        let executed_at = step.at.map_or(now, at_seconds);
        let name = match &step.id {
            Some(id) => format!("id {id}"),
            None => format!("{} / step {index}", scenario.name),
        };
        let mut r = CheckResult::new(CheckId::random(), status, status.as_str(), executed_at);
        r.id = ResultId(Uuid::new_v5(&RESULT_NAMESPACE, name.as_bytes()));
        if in_place {
            // Rebuilt as a Transition so both paths are checked alike.
            let d = transition_in_place(state, &r, policy, deps, executed_at);
            Transition {
                outcome: d.outcome,
                state: state.clone(),
                events: d.events,
                next_interval: d.next_interval,
                interval_changed: d.interval_changed,
                contribution_changed: d.contribution_changed,
                closed_alert: d.closed_alert,
            }
        } else {
            let t = transition(state, &r, policy, deps, executed_at);
            *state = t.state.clone();
            t
        }
    });
    (actions, result)
}

#[allow(clippy::too_many_arguments)]
fn check_step(
    report: &mut Report,
    place: &str,
    policy: &Policy,
    before: &CheckState,
    deps_only: bool,
    actions: &[Transition],
    result: Option<&Transition>,
    state: &CheckState,
    e: &Expect,
) {
    // A step with only `deps` has no transition: its interval is the one
    // of the check as it stands.
    let interval = match result.or(actions.last()) {
        Some(last) => {
            report.field(
                place,
                "next_interval of the transition is the one of its state",
                last.next_interval,
                next_interval(state, policy),
            );
            last.next_interval
        }
        None if deps_only => next_interval(state, policy),
        None => {
            report.failures.push(format!("{place}: step has no input"));
            return;
        }
    };
    report.field(place, "status", state.status, e.status);
    report.field(place, "ok", state.ok, e.ok);
    report.field(place, "hard", state.hard, e.hard);
    report.field(place, "attempt", state.attempt, e.attempt);
    report.field(place, "flapping", state.flapping, e.flapping);
    report.field(place, "acknowledged", state.acknowledged, e.acknowledged);
    report.field(
        place,
        "alert_open",
        state.current_alert.is_some(),
        e.alert_open,
    );
    report.field(place, "encompassed", state.encompassed, e.encompassed);
    report.field(
        place,
        "next_interval",
        interval.as_secs_f64(),
        e.next_interval,
    );
    let events: Vec<Event> = actions
        .iter()
        .chain(result)
        .flat_map(|t| t.events.iter().copied())
        .collect();
    report.field(place, "events", events, e.events.clone());
    report.field(
        place,
        "applied",
        result.map(Transition::is_applied),
        e.applied,
    );
    if let Some(r) = result {
        report.field(
            place,
            "outcome is applied, stale or duplicate",
            matches!(
                r.outcome,
                Outcome::Applied | Outcome::Stale | Outcome::Duplicate
            ),
            true,
        );
    }
    match (e.flap_percent, result) {
        (Some(want), Some(r)) => {
            report.checked_fields += 1;
            let got = r.state.flap_percent;
            if (got - want).abs() > 0.01 {
                report.failures.push(format!(
                    "{place}: flap_percent: got {got}, want {want} (±0.01)"
                ));
            }
        }
        (Some(_), None) => report.failures.push(format!(
            "{place}: flap_percent expected on a step without a result"
        )),
        (None, _) => {}
    }
    // Not in the vectors, but DESIGN.md point 0/7: +1 per applied input.
    let applied = actions
        .iter()
        .chain(result)
        .filter(|t| t.is_applied())
        .count() as u64;
    report.field(place, "version", state.version, before.version + applied);
    // A result the vectors call not applied (stale or duplicate), or a step
    // with only `deps`, leaves every field of the check as it was.
    if deps_only || result.is_some_and(|r| !r.is_applied()) && actions.is_empty() {
        report.field(place, "state unchanged", state, before);
    }
    // The format: `flap_percent` is given for applied results (and only
    // for them), so no applied step goes unchecked.
    report.field(
        place,
        "vector gives flap_percent exactly for applied results",
        e.flap_percent.is_some(),
        e.applied == Some(true),
    );
}

/// Runs every scenario with `transition` or `transition_in_place` for the
/// results and returns the report and the number of steps run.
fn run_all(scenarios: &[Scenario], in_place: bool) -> (Report, usize) {
    let mut report = Report {
        failures: Vec::new(),
        checked_fields: 0,
    };
    let mut steps = 0;
    let mode = if in_place { "in place" } else { "pure" };
    for scenario in scenarios {
        let policy = scenario_policy(scenario);
        let mut state = initial_state(&policy);
        let mut deps = Vec::new();
        for (index, step) in scenario.steps.iter().enumerate() {
            let place = format!("scenario {:?}, step {index} ({mode})", scenario.name);
            let before = state.clone();
            let deps_only = step.deps.is_some()
                && step.ack.is_none()
                && step.downtime.is_none()
                && step.suppressed.is_none()
                && step.status.is_none();
            let (actions, result) = run_step(
                scenario, index, step, &policy, &mut state, &mut deps, in_place,
            );
            check_step(
                &mut report,
                &place,
                &policy,
                &before,
                deps_only,
                &actions,
                result.as_ref(),
                &state,
                &step.expect,
            );
            steps += 1;
        }
    }
    (report, steps)
}

fn assert_clean(scenarios: &[Scenario], in_place: bool) {
    assert!(!scenarios.is_empty(), "no scenarios loaded");
    let (report, steps) = run_all(scenarios, in_place);
    assert!(steps > 0, "no steps run");
    assert!(
        report.failures.is_empty(),
        "{} mismatches over {} scenarios / {steps} steps:\n{}",
        report.failures.len(),
        scenarios.len(),
        report.failures.join("\n")
    );
    println!(
        "state vectors: {} scenarios, {steps} steps, {} fields checked",
        scenarios.len(),
        report.checked_fields
    );
}

#[test]
fn state_machine_vectors() {
    assert_clean(&load(), false);
}

#[test]
fn state_machine_vectors_in_place() {
    assert_clean(&load(), true);
}

/// The runner itself must notice a wrong field: a state machine with a
/// different policy (failed_after 4 everywhere) has to fail, naming the
/// scenario, step and field.
#[test]
fn runner_reports_mismatches() {
    let mut scenarios = load();
    for s in &mut scenarios {
        s.policy
            .insert("failed_after".to_string(), serde_json::json!(4));
    }
    let (report, _) = run_all(&scenarios, false);
    assert!(!report.failures.is_empty());
    assert!(
        report.failures.iter().any(|f| f.starts_with(
            "scenario \"hard after three failures, alert once, recovery after three oks\", step 3 (pure): hard:"
        )),
        "{:#?}",
        report.failures
    );
}
