//! The transition functions of DESIGN.md "State machine".
//!
//! Every function here decides without I/O: it takes the state before and
//! returns a [`Transition`] holding the state after, the events and the next
//! interval ([`transition_in_place`] writes the state after into the caller's
//! state instead). Time is an argument, so a store can replay them and tests
//! need no clock.

use super::flap;
use super::{
    Ack, AckInfo, CheckState, Decision, DependencyState, Event, OpenAlert, Outcome, Transition,
};
use crate::aggregate::Contribution;
use crate::model::{CheckResult, Policy, Status};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub use super::flap::FLAP_HISTORY_LEN;

/// Namespace of the alert ids derived from result ids: the same result
/// always opens the same alert, so replaying a transition (e.g. a store that
/// retries a failed commit) yields the same alert record id.
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x0d7e_55a1_3b9c_4f62_a8e4_71c2_9b05_e3d6);

/// A threshold as the state machine uses it: `<= 1` means "hard at once".
fn threshold(policy: &Policy, ok: bool) -> u32 {
    let t = if ok {
        policy.recovers_after
    } else {
        policy.failed_after
    };
    t.max(1)
}

/// The initial state (DESIGN.md point 0): PENDING, ok, hard,
/// attempt = `recovers_after`, flap history all ok, no alert, version 0.
pub fn initial_state(policy: &Policy) -> CheckState {
    CheckState {
        status: Status::Pending,
        ok: true,
        output: Arc::default(),
        long_output: Arc::default(),
        perfdata: Arc::default(),
        hard: true,
        attempt: threshold(policy, true),
        last_check_at: None,
        last_state_change_at: None,
        last_hard_change_at: None,
        last_result_id: None,
        ok_history: flap::ALL_OK,
        flap_percent: 0.0,
        flapping: false,
        in_downtime: false,
        suppressed: false,
        acknowledged: Ack::None,
        ack: None,
        encompassed: false,
        current_alert: None,
        version: 0,
    }
}

/// Applies one result (DESIGN.md points 1–5, 7, 9).
///
/// `deps` are the current states of the check's dependencies (empty when it
/// has none). A duplicate (the id of the last applied result) or stale result
/// (before the last applied one in `(executed_at, id)` order) comes back as
/// [`Outcome::Duplicate`] / [`Outcome::Stale`] with the state unchanged.
///
/// Every timestamp the result sets is its `executed_at`, not `now`: the
/// state then says when things happened at the checked object, and a replay
/// of the same results gives the same state whenever it runs.
///
/// The result's output and perfdata are copied once into the new state; the
/// old state's are not copied at all. [`transition_in_place`] decides the
/// same and reuses the state's buffers instead.
///
/// Timestamps: `last_check_at` is the result's `executed_at`;
/// `last_state_change_at` moves when the status changes; `last_hard_change_at`
/// when the pair (hard, ok) changes into a hard state: a soft phase ends, or
/// a threshold of 1 flips a hard state's ok-ness (and on the first hard
/// result, when it was never set).
///
/// # Example
///
/// ```
/// use bergamot_core::model::{CheckId, CheckResult, Policy, Status};
/// use bergamot_core::state::{initial_state, transition, Event};
/// use chrono::{Duration, Utc};
///
/// let policy = Policy::builder().failed_after(2).build();
/// let check = CheckId::random();
/// let t0 = Utc::now();
/// let mut state = initial_state(&policy);
/// let mut events = Vec::new();
/// for i in 0..2 {
///     let at = t0 + Duration::seconds(60 * i);
///     let result = CheckResult::new(check, Status::Critical, "down", at);
///     let t = transition(&state, &result, &policy, &[], at);
///     assert!(t.is_applied());
///     events.push(t.events);
///     state = t.state;
/// }
/// // Soft at first: no notification; hard at the second failure: an alert.
/// assert_eq!(events, vec![vec![], vec![Event::Alert]]);
/// assert!(state.hard && state.current_alert.is_some());
/// assert_eq!(state.version, 2);
/// ```
pub fn transition(
    state: &CheckState,
    result: &CheckResult,
    policy: &Policy,
    deps: &[DependencyState],
    now: DateTime<Utc>,
) -> Transition {
    // `now` is part of the signature so that every transition function reads
    // alike and a future rule that needs processing time (not result time)
    // does not change the contract; no current rule does.
    let _ = now;
    if let Some(outcome) = reject(state, result) {
        return unchanged(state, outcome, policy);
    }
    let mut next = without_payload(state);
    let events = apply_result(&mut next, result, policy, deps);
    applied_as_is(state, next, events, policy)
}

/// [`transition`] on a state the caller owns: the same decision, written
/// into `state` where it lies, reusing its output and perfdata buffers.
///
/// For a caller that keeps states in memory (an in-memory store, a
/// benchmark, a replay) this saves most of the allocations a transition
/// costs. When the result is not applied, `state` is left untouched.
pub fn transition_in_place(
    state: &mut CheckState,
    result: &CheckResult,
    policy: &Policy,
    deps: &[DependencyState],
    now: DateTime<Utc>,
) -> Decision {
    let _ = now;
    let before = (Contribution::of(Some(state)), next_interval(state, policy));
    let open_before = state.current_alert;
    let (outcome, events) = match reject(state, result) {
        Some(outcome) => (outcome, Vec::new()),
        None => (Outcome::Applied, apply_result(state, result, policy, deps)),
    };
    let interval = next_interval(state, policy);
    Decision {
        outcome,
        events,
        next_interval: interval,
        interval_changed: interval != before.1,
        contribution_changed: Contribution::of(Some(state)) != before.0,
        closed_alert: closed_alert(open_before, state),
    }
}

/// Point 7: why a result must not be applied, if it must not.
///
/// Results of one check are ordered by `(executed_at, id)`; a result is
/// applied only if it comes after the last applied one, `(last_check_at,
/// last_result_id)`. The last applied result itself is a duplicate; any
/// other result at or before it is stale. So a redelivery of any applied
/// result is never applied again, even when several results share one
/// `executed_at` (passive results with second resolution): the last
/// applied one is the greatest of them. New result ids are time-ordered
/// ([`ResultId::now`](crate::model::ResultId::now)), so results that share
/// a timestamp are applied in the order they were made.
fn reject(state: &CheckState, result: &CheckResult) -> Option<Outcome> {
    if state.last_result_id == Some(result.id) {
        return Some(Outcome::Duplicate);
    }
    let last = state.last_check_at?;
    let stale = match result.executed_at.cmp(&last) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => state.last_result_id.is_some_and(|id| result.id < id),
    };
    stale.then_some(Outcome::Stale)
}

/// A copy of everything but the result payload, which the next result
/// replaces anyway: copying it would be wasted allocations.
fn without_payload(state: &CheckState) -> CheckState {
    CheckState {
        status: state.status,
        ok: state.ok,
        output: Arc::default(),
        long_output: Arc::default(),
        perfdata: Arc::default(),
        hard: state.hard,
        attempt: state.attempt,
        last_check_at: state.last_check_at,
        last_state_change_at: state.last_state_change_at,
        last_hard_change_at: state.last_hard_change_at,
        last_result_id: state.last_result_id,
        ok_history: state.ok_history,
        flap_percent: state.flap_percent,
        flapping: state.flapping,
        in_downtime: state.in_downtime,
        suppressed: state.suppressed,
        acknowledged: state.acknowledged,
        ack: state.ack.clone(),
        encompassed: state.encompassed,
        current_alert: state.current_alert,
        version: state.version,
    }
}

/// Applies an accepted result to `s` (the state before, updated in place;
/// its payload may be empty) and returns the events, in order.
fn apply_result(
    s: &mut CheckState,
    result: &CheckResult,
    policy: &Policy,
    deps: &[DependencyState],
) -> Vec<Event> {
    let at = result.executed_at;
    let ok = result.status.is_ok();
    let any_dep_soft = deps.iter().any(|d| !d.hard);
    let (prev_status, prev_ok, prev_hard) = (s.status, s.ok, s.hard);

    // Point 1 (and 4): attempts count the results of the current ok-ness; a
    // flip restarts at 1. The state turns hard at the threshold unless a
    // dependency is soft: then the attempt waits at the threshold, so the
    // check turns hard on the first result after the dependency settles.
    let limit = threshold(policy, ok);
    let (hard, attempt) = if ok == prev_ok && prev_hard {
        // Staying hard: re-pin to the (possibly reloaded) threshold.
        (true, limit)
    } else {
        let attempt = if ok == prev_ok {
            s.attempt.saturating_add(1).min(limit)
        } else {
            1
        };
        (attempt >= limit && !any_dep_soft, attempt)
    };

    let status_changed = result.status != prev_status;
    if status_changed {
        s.last_state_change_at = Some(at);
    }
    if hard && (!(prev_hard && prev_ok == ok) || s.last_hard_change_at.is_none()) {
        s.last_hard_change_at = Some(at);
    }

    // Point 6: a normal acknowledgement ends with any status change; both
    // kinds end when the check is hard ok again (the recovery, even if its
    // notification is held back).
    s.acknowledged = match s.acknowledged {
        Ack::Normal if status_changed => Ack::None,
        Ack::Sticky | Ack::Normal if ok && hard => Ack::None,
        other => other,
    };
    if s.acknowledged == Ack::None {
        s.ack = None;
    }

    // Point 5: flapping with hysteresis.
    s.ok_history = flap::push(s.ok_history, ok);
    s.flap_percent = flap::flap_percent(s.ok_history);
    let mut events = Vec::new();
    if !s.flapping && s.flap_percent >= policy.flap_high {
        events.push(Event::FlappingStarted);
        s.flapping = true;
    } else if s.flapping && s.flap_percent <= policy.flap_low {
        events.push(Event::FlappingStopped);
        s.flapping = false;
    }

    s.status = result.status;
    s.ok = ok;
    s.hard = hard;
    s.attempt = attempt;
    s.last_check_at = Some(at);
    s.last_result_id = Some(result.id);
    s.encompassed = !deps.is_empty() && !any_dep_soft && deps.iter().any(|d| !d.ok);
    s.version += 1;
    // The payload is shared with the result, not copied: three reference
    // counts, no allocation.
    s.output = Arc::clone(&result.output);
    s.long_output = Arc::clone(&result.long_output);
    s.perfdata = Arc::clone(&result.perfdata);

    // Point 3: worse while alerting re-notifies, unless someone already
    // acknowledged it or it is held back; better is an update only.
    if prev_hard
        && !prev_ok
        && hard
        && !ok
        && result.status > prev_status
        && s.current_alert.is_some()
        && s.acknowledged == Ack::None
        && !held_back(s)
        && !s.encompassed
    {
        events.push(Event::Realert);
    }

    settle_alert(s, &mut events, at, || {
        Uuid::new_v5(&ALERT_NAMESPACE, result.id.0.as_bytes())
    });
    events
}

/// Acknowledges a not-ok check (refused when ok).
///
/// Acknowledging with the kind it already has is [`Outcome::Unchanged`];
/// switching between normal and sticky is applied. [`Ack::None`] removes the
/// acknowledgement, as [`remove_acknowledgement`] does.
pub fn acknowledge(
    state: &CheckState,
    kind: Ack,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    if kind == Ack::None {
        return remove_acknowledgement(state, policy, now);
    }
    if state.ok {
        return unchanged(state, Outcome::Refused, policy);
    }
    if state.acknowledged == kind {
        return unchanged(state, Outcome::Unchanged, policy);
    }
    // An acknowledgement neither opens nor closes an alert (point 2 lists
    // only results, downtime and suppression), so no settling here.
    changed(state, policy, |next| next.acknowledged = kind)
}

/// [`acknowledge`], recording who acknowledged and why in `state.ack`. An
/// acknowledgement of the same kind again only replaces author and comment.
pub fn acknowledge_by(
    state: &CheckState,
    kind: Ack,
    author: &str,
    comment: &str,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    let mut t = acknowledge(state, kind, policy, now);
    let info = AckInfo {
        author: author.to_string(),
        comment: comment.to_string(),
        at: now,
    };
    match t.outcome {
        Outcome::Applied if kind != Ack::None => t.state.ack = Some(Arc::new(info)),
        Outcome::Unchanged if kind != Ack::None && state.acknowledged == kind => {
            t = changed(state, policy, |next| next.ack = Some(Arc::new(info)));
        }
        _ => {}
    }
    t
}

/// Removes an acknowledgement ([`Outcome::Unchanged`] when there is none).
pub fn remove_acknowledgement(
    state: &CheckState,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    let _ = now;
    if state.acknowledged == Ack::None {
        return unchanged(state, Outcome::Unchanged, policy);
    }
    changed(state, policy, |next| {
        next.acknowledged = Ack::None;
        next.ack = None;
    })
}

/// Enters or leaves downtime; may open or close an alert (point 2).
///
/// Leaving a downtime sends what it held back: an alert if the check is
/// still hard not-ok, a recovery if it recovered meanwhile. Setting the
/// state it already has is [`Outcome::Unchanged`].
pub fn set_downtime(
    state: &CheckState,
    on: bool,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    set_hold(state, |s| &mut s.in_downtime, on, policy, now)
}

/// Suppresses or unsuppresses; may open or close an alert (point 2).
///
/// Same rules as [`set_downtime`].
pub fn set_suppressed(
    state: &CheckState,
    on: bool,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    set_hold(state, |s| &mut s.suppressed, on, policy, now)
}

/// Sets the flag `flag` picks (downtime or suppression) to `on`, settling
/// the alert; [`Outcome::Unchanged`] when it is `on` already.
fn set_hold(
    state: &CheckState,
    flag: impl Fn(&mut CheckState) -> &mut bool,
    on: bool,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    let mut next = state.clone();
    if *flag(&mut next) == on {
        return unchanged(state, Outcome::Unchanged, policy);
    }
    *flag(&mut next) = on;
    settle_after_action(state, next, policy, now)
}

/// An operator's reset of a check's result clock: forgets the last applied
/// result (`last_check_at`, `last_result_id`), so the next result is applied
/// whatever its `executed_at`, and moves timestamps that lie after `now`
/// back to `now`. The way out of a state that a result dated far in the
/// future froze (every later result would be stale). Status, alert,
/// acknowledgement, downtime and flap history stay; the version moves.
pub fn reset_clock(state: &CheckState, policy: &Policy, now: DateTime<Utc>) -> Transition {
    let mut next = state.clone();
    next.last_check_at = None;
    next.last_result_id = None;
    for t in [
        &mut next.last_state_change_at,
        &mut next.last_hard_change_at,
    ] {
        if t.is_some_and(|t| t > now) {
            *t = Some(now);
        }
    }
    applied(state, next, Vec::new(), policy)
}

/// The interval policy (point 9): soft -> `changing_every` if set, else
/// `retry_every`; hard ok -> `every`; hard not-ok -> `retry_every`.
pub fn next_interval(state: &CheckState, policy: &Policy) -> Duration {
    if !state.hard {
        policy.changing_every.unwrap_or(policy.retry_every)
    } else if state.ok {
        policy.every
    } else {
        policy.retry_every
    }
}

/// Whether notifications of the check are held back now (point 2): they are
/// sent once this ends, if the state still calls for them.
fn held_back(state: &CheckState) -> bool {
    state.flapping || state.in_downtime || state.suppressed
}

/// Opens or closes the alert as point 2 demands, pushing the event.
///
/// An encompassed check opens no alert of its own, but it does recover: the
/// alert it opened before its dependency failed must still close.
fn settle_alert(
    state: &mut CheckState,
    events: &mut Vec<Event>,
    at: DateTime<Utc>,
    alert_id: impl FnOnce() -> Uuid,
) {
    if !state.hard || held_back(state) {
        return;
    }
    match (state.ok, state.current_alert) {
        (false, None) if !state.encompassed => {
            state.current_alert = Some(OpenAlert {
                id: alert_id(),
                opened_at: at,
            });
            events.push(Event::Alert);
        }
        (true, Some(_)) => {
            state.current_alert = None;
            events.push(Event::Recovery);
        }
        _ => {}
    }
}

/// Finishes a downtime or suppression change: settle the alert at `now`.
fn settle_after_action(
    before: &CheckState,
    mut next: CheckState,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    let mut events = Vec::new();
    // No result to derive an id from, and the state does not know its
    // check's id, so a derived id could collide across checks: random it is.
    settle_alert(&mut next, &mut events, now, Uuid::new_v4);
    applied(before, next, events, policy)
}

/// `state` changed by `change`, applied with no event (no alert opens or
/// closes).
fn changed(
    state: &CheckState,
    policy: &Policy,
    change: impl FnOnce(&mut CheckState),
) -> Transition {
    let mut next = state.clone();
    change(&mut next);
    applied(state, next, Vec::new(), policy)
}

/// An applied change: bump the version and compute the interval.
fn applied(
    before: &CheckState,
    mut next: CheckState,
    events: Vec<Event>,
    policy: &Policy,
) -> Transition {
    next.version += 1;
    applied_as_is(before, next, events, policy)
}

/// The applied change from `before` to `next`, whose version already moved.
fn applied_as_is(
    before: &CheckState,
    next: CheckState,
    events: Vec<Event>,
    policy: &Policy,
) -> Transition {
    let next_interval = next_interval(&next, policy);
    Transition {
        outcome: Outcome::Applied,
        interval_changed: next_interval != self::next_interval(before, policy),
        contribution_changed: Contribution::of(Some(before)) != Contribution::of(Some(&next)),
        closed_alert: closed_alert(before.current_alert, &next),
        state: next,
        events,
        next_interval,
    }
}

/// An input that changed nothing.
fn unchanged(state: &CheckState, outcome: Outcome, policy: &Policy) -> Transition {
    Transition {
        outcome,
        state: state.clone(),
        events: Vec::new(),
        next_interval: next_interval(state, policy),
        interval_changed: false,
        contribution_changed: false,
        closed_alert: None,
    }
}

/// The alert that was open before and is no longer: the one a recovery closed.
fn closed_alert(before: Option<OpenAlert>, after: &CheckState) -> Option<Uuid> {
    before
        .filter(|b| after.current_alert.map(|a| a.id) != Some(b.id))
        .map(|b| b.id)
}

#[cfg(test)]
mod tests;
