//! Property tests of the state machine invariants (DESIGN.md "State
//! machine"), over arbitrary policies and arbitrary interleavings of results
//! (in order, stale and redelivered), dependency changes, acknowledgements,
//! downtime and suppression.

use bergamot_core::model::{CheckId, CheckResult, Policy, ResultId, Status};
use bergamot_core::state::{
    acknowledge, initial_state, remove_acknowledgement, set_downtime, set_suppressed, transition,
    transition_in_place, Ack, CheckState, DependencyState, Outcome, Transition,
};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use std::time::Duration;

/// `t` is `outcome` and changed nothing: still `state`, no events.
fn unchanged(t: &Transition, outcome: Outcome, state: &CheckState) -> Result<(), TestCaseError> {
    prop_assert_eq!(t.outcome, outcome);
    prop_assert_eq!(&t.state, state);
    prop_assert!(t.events.is_empty());
    Ok(())
}

#[derive(Debug, Clone)]
enum Input {
    /// A result `dt` seconds after the newest time so far (negative: maybe
    /// stale); `redeliver` reuses the id of the last applied result.
    Result {
        status: Status,
        dt: i64,
        redeliver: bool,
    },
    Deps(Vec<DependencyState>),
    Ack(Ack),
    Unack,
    Downtime(bool),
    Suppressed(bool),
}

fn status() -> impl Strategy<Value = Status> {
    // Weighted towards OK so that histories have both long runs and changes.
    prop_oneof![
        3 => Just(Status::Ok),
        1 => (0u8..10).prop_map(|s| Status::from_severity(s).expect("0..10 is a severity")),
    ]
}

fn dep() -> impl Strategy<Value = DependencyState> {
    (any::<bool>(), any::<bool>()).prop_map(|(hard, ok)| DependencyState { hard, ok })
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        8 => (status(), -120i64..=300, prop::bool::weighted(0.1))
            .prop_map(|(status, dt, redeliver)| Input::Result { status, dt, redeliver }),
        1 => prop::collection::vec(dep(), 0..3).prop_map(Input::Deps),
        1 => prop_oneof![Just(Ack::Normal), Just(Ack::Sticky), Just(Ack::None)].prop_map(Input::Ack),
        1 => Just(Input::Unack),
        1 => any::<bool>().prop_map(Input::Downtime),
        1 => any::<bool>().prop_map(Input::Suppressed),
    ]
}

/// A history of `len` inputs.
fn history(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(input(), len)
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        0u32..=5,
        0u32..=5,
        0.0f64..60.0,
        0.0f64..40.0,
        prop::option::of(1u64..120),
    )
        .prop_map(|(failed_after, recovers_after, flap_low, gap, changing)| {
            Policy::builder()
                .failed_after(failed_after)
                .recovers_after(recovers_after)
                .flap_low(flap_low)
                .flap_high(flap_low + gap)
                .changing_every(changing.map(Duration::from_secs))
                .build()
        })
}

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid fixed date")
}

/// The threshold of the state's direction, as the machine reads it.
fn threshold(state: &CheckState, p: &Policy) -> u32 {
    if state.ok {
        p.recovers_after.max(1)
    } else {
        p.failed_after.max(1)
    }
}

/// Drives one check through `inputs`, calling `each(before, input result,
/// transition)` after every input. Returns the final state, the newest
/// result time so far and the last applied result.
struct Run {
    state: CheckState,
    deps: Vec<DependencyState>,
    newest: DateTime<Utc>,
    last_applied: Option<CheckResult>,
}

impl Run {
    fn new(p: &Policy) -> Self {
        Run {
            state: initial_state(p),
            deps: Vec::new(),
            newest: epoch(),
            last_applied: None,
        }
    }

    fn apply(&mut self, p: &Policy, input: &Input) -> (Option<CheckResult>, Option<Transition>) {
        let now = self.newest;
        let (r, t) = match input {
            Input::Result {
                status,
                dt,
                redeliver,
            } => {
                let r = match (&self.last_applied, redeliver) {
                    (Some(last), true) => last.clone(),
                    _ => {
                        let at = self.newest + chrono::Duration::seconds(*dt);
                        CheckResult::new(CheckId::random(), *status, status.as_str(), at)
                    }
                };
                let t = transition(&self.state, &r, p, &self.deps, now);
                if t.is_applied() {
                    self.newest = self.newest.max(r.executed_at);
                    self.last_applied = Some(r.clone());
                }
                (Some(r), Some(t))
            }
            Input::Deps(d) => {
                self.deps = d.clone();
                (None, None)
            }
            Input::Ack(kind) => (None, Some(acknowledge(&self.state, *kind, p, now))),
            Input::Unack => (None, Some(remove_acknowledgement(&self.state, p, now))),
            Input::Downtime(on) => (None, Some(set_downtime(&self.state, *on, p, now))),
            Input::Suppressed(on) => (None, Some(set_suppressed(&self.state, *on, p, now))),
        };
        if let Some(t) = &t {
            self.state = t.state.clone();
        }
        (r, t)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After every input: hard means attempt at the threshold of its
    /// direction; flap_percent stays in [0, 100]; the version goes up by
    /// exactly one per applied input; anything not applied leaves the state
    /// exactly as it was.
    #[test]
    fn invariants_hold_after_every_input(
        p in policy(),
        inputs in history(0..120),
    ) {
        let mut run = Run::new(&p);
        for (i, input) in inputs.iter().enumerate() {
            let before = run.state.clone();
            let (_, t) = run.apply(&p, input);
            let s = &run.state;
            if s.hard {
                prop_assert_eq!(s.attempt, threshold(s, &p), "input {}: {:?}", i, input);
            }
            prop_assert!(s.attempt >= 1 && s.attempt <= threshold(s, &p), "input {}", i);
            prop_assert!((0.0..=100.0).contains(&s.flap_percent), "input {}: {}", i, s.flap_percent);
            if let Some(t) = t {
                if t.is_applied() {
                    prop_assert_eq!(s.version, before.version + 1, "input {}: {:?}", i, input);
                } else {
                    prop_assert_eq!(&t.state, &before, "input {}: {:?} {:?}", i, input, t.outcome);
                    prop_assert!(t.events.is_empty());
                }
            } else {
                prop_assert_eq!(s, &before);
            }
        }
    }

    /// N equal results with N at least the larger threshold, after any
    /// history and with no dependency soft, end hard with that status.
    #[test]
    fn enough_equal_results_end_hard(
        p in policy(),
        inputs in history(0..80),
        tail in status(),
        extra in 0u32..3,
        deps in prop::collection::vec(dep().prop_map(|d| DependencyState { hard: true, ..d }), 0..3),
    ) {
        let mut run = Run::new(&p);
        for input in &inputs {
            run.apply(&p, input);
        }
        run.deps = deps;
        let n = p.failed_after.max(p.recovers_after).max(1) + extra;
        for _ in 0..n {
            let t = run.apply(&p, &Input::Result { status: tail, dt: 60, redeliver: false });
            prop_assert_eq!(t.1.map(|t| t.outcome), Some(Outcome::Applied));
        }
        prop_assert!(run.state.hard);
        prop_assert_eq!(run.state.status, tail);
        prop_assert_eq!(run.state.ok, tail.is_ok());
        prop_assert_eq!(run.state.attempt, threshold(&run.state, &p));
    }

    /// Applying the same result twice equals applying it once: the second
    /// time is a duplicate that changes nothing.
    #[test]
    fn the_same_result_twice_is_once(
        p in policy(),
        inputs in history(0..80),
    ) {
        let mut run = Run::new(&p);
        for input in &inputs {
            let (r, t) = run.apply(&p, input);
            if let (Some(r), Some(t)) = (r, t) {
                if t.is_applied() {
                    let again = transition(&t.state, &r, &p, &run.deps, run.newest);
                    unchanged(&again, Outcome::Duplicate, &t.state)?;
                }
            }
        }
    }

    /// A result older than the last applied one never changes the state,
    /// whatever its status, id or dependencies.
    #[test]
    fn stale_results_never_change_state(
        p in policy(),
        inputs in history(1..80),
        st in status(),
        older_ms in 1i64..10_000_000,
        deps in prop::collection::vec(dep(), 0..3),
    ) {
        let mut run = Run::new(&p);
        for input in &inputs {
            run.apply(&p, input);
        }
        if let Some(last) = run.state.last_check_at {
            let r = CheckResult {
                id: ResultId::random(),
                ..CheckResult::new(CheckId::random(), st, "late", last - chrono::Duration::milliseconds(older_ms))
            };
            let t = transition(&run.state, &r, &p, &deps, run.newest);
            unchanged(&t, Outcome::Stale, &run.state)?;
        }
    }

    /// The in-place transition decides exactly what the pure one does, and
    /// leaves the state alone when it does not apply the result.
    #[test]
    fn in_place_equals_pure(
        p in policy(),
        inputs in history(0..120),
    ) {
        let mut run = Run::new(&p);
        let mut in_place = run.state.clone();
        for (i, input) in inputs.iter().enumerate() {
            let before = run.state.clone();
            let (r, t) = run.apply(&p, input);
            match (r, t) {
                (Some(r), Some(t)) => {
                    let mut shadow = before.clone();
                    let d = transition_in_place(&mut shadow, &r, &p, &run.deps, run.newest);
                    prop_assert_eq!(d.outcome, t.outcome, "input {}", i);
                    prop_assert_eq!(&d.events, &t.events, "input {}", i);
                    prop_assert_eq!(d.next_interval, t.next_interval, "input {}", i);
                    prop_assert_eq!(d.is_applied(), t.is_applied());
                    prop_assert_eq!(&shadow, &t.state, "input {}", i);
                    // Also along a chain of in-place states (buffers reused).
                    transition_in_place(&mut in_place, &r, &p, &run.deps, run.newest);
                }
                (_, Some(t)) => in_place = t.state.clone(),
                _ => {}
            }
            prop_assert_eq!(&in_place, &run.state, "input {}", i);
        }
    }
}
