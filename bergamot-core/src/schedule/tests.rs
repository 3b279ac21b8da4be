//! Tests of the pure schedule (mostly) and of the driver, on tokio's paused
//! clock so that no test depends on real time.

use super::*;
use crate::model::{Check, CheckId, CheckKind, Model, Policy};
use crate::queue::{ExecuteCheck, SchedulerControl};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

const SITE: &str = "test";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn check(i: usize, every: u64) -> Check {
    let host = format!("host{i}");
    Check::service(SITE, &host, "svc")
        .engine("dummy")
        .param("n", serde_json::json!(i))
        .policy(
            Policy::builder()
                .every(secs(every))
                .retry_every(secs(10))
                .changing_every(None)
                .timeout(secs(5))
                .build(),
        )
        .build()
}

fn model(checks: Vec<Check>) -> Model {
    Model {
        site: SITE.into(),
        checks,
        ..Model::default()
    }
}

fn wall() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp")
}

/// Steps the schedule from `from` (exclusive) to `to` (inclusive) in `step`s,
/// returning every execute with the offset from `origin` it was dispatched at.
fn run(
    s: &mut Schedule,
    origin: Instant,
    from: Duration,
    to: Duration,
    step: Duration,
) -> Vec<(Duration, ExecuteCheck)> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        t = (t + step).min(to);
        for e in s.due(origin + t, wall()) {
            out.push((t, e));
        }
    }
    out
}

/// Dispatch times per check.
fn times_by_check(log: &[(Duration, ExecuteCheck)]) -> HashMap<CheckId, Vec<Duration>> {
    let mut m: HashMap<CheckId, Vec<Duration>> = HashMap::new();
    for (t, e) in log {
        m.entry(e.check_id).or_default().push(*t);
    }
    m
}

/// A scheduler driver running on its own task until [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<crate::error::Result<()>>,
}

impl Running {
    fn start(scheduler: Scheduler) -> Running {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(scheduler.run(async {
            stop_rx.await.ok();
        }));
        Running { stop, task }
    }

    /// Stops the scheduler; asserts that it was running and stops cleanly.
    async fn stop(self) {
        self.stop.send(()).expect("scheduler running");
        self.task.await.expect("no panic").expect("clean stop");
    }
}

fn new_schedule(m: &Model) -> (Schedule, Instant) {
    let origin = Instant::now();
    let mut s = Schedule::new(ScheduleConfig::default(), origin);
    s.apply_model(m, origin);
    (s, origin)
}

/// A schedule of the one check `check(1, every)`, and that check's id.
fn one_check(every: u64) -> (Schedule, Instant, CheckId) {
    let m = model(vec![check(1, every)]);
    let (s, origin) = new_schedule(&m);
    (s, origin, m.checks[0].id)
}

#[test]
fn offsets_spread_evenly_over_the_interval() {
    // 600 checks at 60 s: each 10 s window should get 100. Offsets are a hash
    // of the id, so a window's count is Binomial(600, 1/6): mean 100, standard
    // deviation 9.1. +-40 is 4.4 sd: a correct hash fails this with p < 1e-4
    // per window, while a clustering bug (e.g. offsets all 0, or all in one
    // half) fails it by hundreds.
    let m = model((0..600).map(|i| check(i, 60)).collect());
    let (mut s, origin) = new_schedule(&m);
    let log = run(&mut s, origin, Duration::ZERO, secs(60), ms(100));
    // Exactly once each within the first interval.
    let by = times_by_check(&log);
    assert_eq!(by.len(), 600);
    assert!(
        by.values().all(|v| v.len() == 1),
        "a check ran twice in one interval"
    );
    let mut windows = [0usize; 6];
    for (t, _) in &log {
        windows[((t.as_millis() - 1) / 10_000) as usize] += 1;
    }
    for (i, n) in windows.iter().enumerate() {
        assert!(
            (60..=140).contains(n),
            "window {i} got {n} of 600: {windows:?}"
        );
    }
    // And the offsets are what spread_offset says.
    for c in &m.checks {
        let first = by[&c.id][0];
        let expected = spread_offset(c.id, secs(60));
        assert!(first >= expected && first < expected + ms(100));
    }
}

#[test]
fn spread_offset_is_deterministic_and_within_the_interval() {
    for i in 0..1000 {
        let id = check(i, 60).id;
        let o = spread_offset(id, secs(60));
        assert!(o < secs(60));
        assert_eq!(o, spread_offset(id, secs(60)));
    }
    // Finer: 6000 checks over 60 one-second windows, same binomial bound.
    let mut w = [0usize; 60];
    for i in 0..6000 {
        w[spread_offset(check(i, 60).id, secs(60)).as_secs() as usize] += 1;
    }
    assert!(w.iter().all(|n| (60..=140).contains(n)), "{w:?}");
}

#[test]
fn dispatch_builds_full_executes_and_keeps_the_cadence() {
    let m = model(vec![check(1, 60)]);
    let (mut s, origin) = new_schedule(&m);
    let log = run(&mut s, origin, Duration::ZERO, secs(300), ms(250));
    let times: Vec<_> = log.iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 5);
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], secs(60));
    }
    let (_, e) = &log[0];
    assert_eq!(e.check_id, m.checks[0].id);
    assert_eq!(e.site, SITE);
    assert_eq!(e.pool, "default");
    assert_eq!(e.engine, "dummy");
    assert_eq!(e.params, m.checks[0].params);
    assert_eq!(e.timeout, secs(5));
    assert_eq!(e.ttl, secs(60));
    assert_eq!(e.scheduled_at, wall());
    assert!(!e.execute_now);
    let ids: HashSet<_> = log.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids.len(), log.len(), "execute ids must be unique");
    assert_eq!(s.stats().dispatched, 5);
}

#[test]
fn same_inputs_give_the_same_dispatches() {
    let m = model((0..300).map(|i| check(i, 30)).collect());
    let go = || {
        let (mut s, origin) = new_schedule(&m);
        let mut log = run(&mut s, origin, Duration::ZERO, secs(45), ms(70));
        s.reschedule(m.checks[5].id, secs(10), origin + secs(45));
        s.execute_now(m.checks[6].id);
        s.disable(m.checks[7].id);
        // A stall, to exercise the catch-up path too.
        log.extend(run(&mut s, origin, secs(50), secs(120), ms(70)));
        log
    };
    let (a, b) = (go(), go());
    assert!(a.len() > 600);
    assert_eq!(a, b);
}

#[test]
fn passive_and_trap_checks_are_not_held() {
    let mut trap = check(1, 60);
    trap.kind = CheckKind::Trap;
    let mut passive = check(2, 60);
    passive.engine = "passive".into();
    let m = model(vec![trap, passive, check(3, 60)]);
    let (mut s, origin) = new_schedule(&m);
    assert_eq!(s.len(), 1);
    let log = run(&mut s, origin, Duration::ZERO, secs(120), secs(1));
    assert!(log.iter().all(|(_, e)| e.check_id == m.checks[2].id));
    assert!(!s.execute_now(m.checks[0].id));
}

#[test]
fn reschedule_to_a_shorter_interval_runs_within_it() {
    let (mut s, origin, id) = one_check(300);
    let first = s.next_due(id).expect("scheduled");
    assert_eq!(first, origin + spread_offset(id, secs(300)));
    assert_eq!(s.interval(id), Some(secs(300)));
    // It runs, its result comes back 2 s later going soft: retry every 10 s.
    assert_eq!(s.due(first, wall()).len(), 1);
    assert!(s.reschedule(id, secs(10), first + secs(2)));
    assert_eq!(s.interval(id), Some(secs(10)));
    assert_eq!(s.next_due(id), Some(first + secs(10)));
    let log = run(&mut s, first, Duration::ZERO, secs(30), ms(100));
    let times: Vec<_> = log.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![secs(10), secs(20), secs(30)]);
    assert!(log.iter().all(|(_, e)| e.ttl == secs(10)));
}

#[test]
fn reschedule_shorter_before_the_first_run_is_at_most_the_interval_from_now() {
    let m = model((0..200).map(|i| check(i, 300)).collect());
    let (mut s, origin) = new_schedule(&m);
    let now = origin + secs(1);
    for c in &m.checks {
        let before = s.next_due(c.id).expect("scheduled");
        s.reschedule(c.id, secs(10), now);
        let after = s.next_due(c.id).expect("scheduled");
        assert!(after <= now + secs(10), "{after:?} later than now + 10 s");
        assert!(after <= before, "a shorter interval delayed the run");
        assert!(after >= now, "scheduled in the past");
    }
}

#[test]
fn reschedule_to_a_longer_interval_counts_from_the_last_run() {
    let (mut s, origin, id) = one_check(60);
    s.reschedule(id, secs(10), origin);
    let first = s.next_due(id).expect("scheduled");
    assert_eq!(s.due(first, wall()).len(), 1);
    assert_eq!(s.next_due(id), Some(first + secs(10)));
    // Recovered (hard ok): back to every 60 s, counted from the last run.
    s.reschedule(id, secs(60), first + secs(1));
    assert_eq!(s.next_due(id), Some(first + secs(60)));
    // Same interval again (a redelivered message): nothing moves.
    s.reschedule(id, secs(60), first + secs(30));
    assert_eq!(s.next_due(id), Some(first + secs(60)));
    assert!(s.due(first + secs(59), wall()).is_empty());
    assert_eq!(s.due(first + secs(60), wall())[0].ttl, secs(60));
    assert!(!s.reschedule(CheckId::random(), secs(1), first));
}

#[test]
fn control_messages_follow_the_state_machine_intervals() {
    // soft -> changing_every (or retry_every), hard ok -> every, hard not-ok -> retry_every.
    let mut c = check(1, 120);
    c.policy.changing_every = Some(secs(20));
    let id = c.id;
    let m = model(vec![c]);
    let (mut s, _origin) = new_schedule(&m);
    let mut t = s.next_due(id).expect("scheduled");
    let mut ttls = Vec::new();
    for interval in [20, 20, 10, 10, 20, 120] {
        let ex = s.due(t, wall());
        assert_eq!(ex.len(), 1);
        ttls.push(ex[0].ttl.as_secs());
        let control = SchedulerControl::Reschedule {
            check_id: id,
            interval: secs(interval),
        };
        assert!(s.apply_control(&control, t + ms(500)));
        t += secs(interval);
        assert_eq!(s.next_due(id), Some(t));
    }
    assert_eq!(ttls, vec![120, 20, 20, 10, 10, 20]);
}

#[test]
fn execute_now_runs_at_once_and_keeps_the_cadence() {
    let m = model(vec![check(1, 60), check(2, 60)]);
    let id = m.checks[0].id;
    let (mut s, origin) = new_schedule(&m);
    let due_before = s.next_due(id).expect("scheduled");
    let now = origin + ms(1);
    assert!(s.execute_now(id));
    assert!(s.execute_now(id), "a second request merges");
    assert_eq!(s.next_wake(), Some(origin));
    let ex: Vec<_> = s
        .due(now, wall())
        .into_iter()
        .filter(|e| e.execute_now)
        .collect();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].check_id, id);
    assert_eq!(ex[0].ttl, secs(30));
    assert_eq!(ex[0].timeout, secs(5));
    assert_eq!(s.next_due(id), Some(due_before));
    let log = run(&mut s, origin, ms(1), secs(120), secs(1));
    assert_eq!(times_by_check(&log)[&id].len(), 2);
    assert!(log.iter().all(|(_, e)| !e.execute_now));
    assert_eq!(s.stats().executed_now, 1);
    // A disabled check still runs when a person asks.
    s.disable(id);
    s.apply_control(&SchedulerControl::ExecuteNow { check_id: id }, origin);
    let ex = s.due(origin + secs(121), wall());
    assert_eq!(ex.len(), 1);
    assert!(ex[0].execute_now);
}

#[test]
fn disable_and_enable() {
    let m = model((0..10).map(|i| check(i, 60)).collect());
    let id = m.checks[3].id;
    let (mut s, origin) = new_schedule(&m);
    assert!(s.apply_control(&SchedulerControl::Disable { check_id: id }, origin));
    assert_eq!(s.is_enabled(id), Some(false));
    assert_eq!(s.next_due(id), None);
    let log = run(&mut s, origin, Duration::ZERO, secs(180), secs(1));
    let by = times_by_check(&log);
    assert!(!by.contains_key(&id));
    assert_eq!(by.len(), 9);
    let enable_at = origin + secs(180);
    assert!(s.apply_control(&SchedulerControl::Enable { check_id: id }, enable_at));
    assert!(s.enable(id, enable_at), "enabling again changes nothing");
    assert_eq!(
        s.next_due(id),
        Some(enable_at + spread_offset(id, secs(60)))
    );
    let log = run(&mut s, origin, secs(180), secs(360), ms(500));
    assert_eq!(times_by_check(&log)[&id].len(), 3);
    assert_eq!(s.stats().enabled, 10);
}

#[test]
fn config_disabled_checks_are_held_and_enable_turns_them_on() {
    let mut c = check(1, 60);
    c.enabled = false;
    let id = c.id;
    let mut m = model(vec![c]);
    let (mut s, origin) = new_schedule(&m);
    assert_eq!(s.len(), 1);
    assert!(run(&mut s, origin, Duration::ZERO, secs(120), secs(1)).is_empty());
    s.enable(id, origin + secs(120));
    // A reload that leaves `enabled = false` unchanged keeps the override ...
    s.apply_model(&m, origin + secs(121));
    assert_eq!(s.is_enabled(id), Some(true));
    // ... one that changes it in config wins.
    m.checks[0].enabled = true;
    s.apply_model(&m, origin + secs(122));
    s.disable(id);
    m.checks[0].enabled = false;
    s.apply_model(&m, origin + secs(123));
    assert_eq!(s.is_enabled(id), Some(false));
    m.checks[0].enabled = true;
    s.apply_model(&m, origin + secs(124));
    assert_eq!(s.is_enabled(id), Some(true));
}

#[test]
fn reload_keeps_unchanged_checks_and_loses_or_doubles_nothing() {
    let every = 60;
    let a: Vec<Check> = (0..300).map(|i| check(i, every)).collect();
    let (mut s, origin) = new_schedule(&model(a.clone()));
    let mut log = run(&mut s, origin, Duration::ZERO, secs(90), ms(100));

    // B: drop 0..50, add 300..350, check 50 gets every 30 s, check 51 new params,
    // check 52 gets every 120 s, in shuffled order.
    let mut b: Vec<Check> = a[50..].to_vec();
    b.extend((300..350).map(|i| check(i, every)));
    b[0].policy.every = secs(30);
    b[1].params.insert("extra".into(), serde_json::json!(true));
    b[2].policy.every = secs(120);
    b.reverse();
    let unchanged: Vec<CheckId> = std::iter::once(&a[51])
        .chain(&a[53..])
        .map(|c| c.id)
        .collect();
    let before: HashMap<CheckId, Instant> = unchanged
        .iter()
        .map(|id| (*id, s.next_due(*id).expect("scheduled")))
        .collect();
    let at = origin + secs(90);
    let sum = s.apply_model(&model(b.clone()), at);
    assert_eq!(sum.added, 50);
    assert_eq!(sum.removed, 50);
    assert_eq!(sum.retimed, 2);
    assert_eq!(sum.kept, 248);
    assert_eq!(s.len(), 300);
    for id in &unchanged {
        assert_eq!(s.next_due(*id), Some(before[id]), "reload reset a schedule");
    }
    // A second identical reload changes nothing and grows nothing.
    let heap = s.heap_len();
    let sum = s.apply_model(&model(b.clone()), at);
    assert_eq!(
        (sum.added, sum.removed, sum.retimed, sum.kept),
        (0, 0, 0, 300)
    );
    assert_eq!(s.heap_len(), heap);
    for c in &b[..50] {
        assert_eq!(
            s.next_due(c.id),
            Some(at + spread_offset(c.id, secs(every)))
        );
    }

    log.extend(run(&mut s, origin, secs(90), secs(450), ms(100)));
    let by = times_by_check(&log);
    for c in &a[..50] {
        assert!(
            by[&c.id].iter().all(|t| *t <= secs(90)),
            "removed check ran"
        );
    }
    let interval_of = |c: &Check| c.policy.every;
    for c in b.iter().filter(|c| c.id != a[50].id && c.id != a[52].id) {
        let times: Vec<_> = by[&c.id]
            .iter()
            .copied()
            .filter(|t| *t > secs(90))
            .collect();
        // Never doubled: consecutive runs exactly one interval apart.
        for w in times.windows(2) {
            assert_eq!(
                w[1] - w[0],
                interval_of(c),
                "check {} ran off cadence",
                c.host
            );
        }
        // Never lost: 360 s of 60 s cadence after the reload is 6 runs.
        assert_eq!(times.len(), 6, "check {} ran {} times", c.host, times.len());
    }
    // Changed intervals adjusted: 30 s gaps (after at most 30 s), 120 s gaps.
    let t50: Vec<_> = by[&a[50].id]
        .iter()
        .copied()
        .filter(|t| *t > secs(90))
        .collect();
    assert!(t50[0] <= secs(120));
    assert!(t50.windows(2).all(|w| w[1] - w[0] == secs(30)));
    let t52: Vec<_> = by[&a[52].id]
        .iter()
        .copied()
        .filter(|t| *t > secs(90))
        .collect();
    assert!(t52.windows(2).all(|w| w[1] - w[0] == secs(120)));
    assert!(t52.len() >= 2);
    // New params are used.
    let e51 = log
        .iter()
        .rev()
        .find(|(_, e)| e.check_id == a[51].id)
        .expect("ran");
    assert_eq!(e51.1.params.get("extra"), Some(&serde_json::json!(true)));
}

#[test]
fn reload_maps_the_current_interval_to_its_counterpart() {
    let c = check(1, 300);
    let id = c.id;
    let (mut s, origin) = new_schedule(&model(vec![c.clone()]));
    s.reschedule(id, secs(10), origin); // retry_every: the check is failing
    let mut c2 = c;
    c2.policy.retry_every = secs(20);
    c2.policy.every = secs(600);
    s.apply_model(&model(vec![c2]), origin + secs(1));
    assert_eq!(s.interval(id), Some(secs(20)));
}

#[test]
fn duplicate_ids_in_a_model_are_held_once() {
    let c = check(1, 60);
    let (s, _) = new_schedule(&model(vec![c.clone(), c]));
    assert_eq!(s.len(), 1);
}

#[test]
fn a_stall_is_detected_and_caught_up_without_a_burst() {
    let n = 6000;
    let m = model((0..n).map(|i| check(i, 60)).collect());
    let (mut s, origin) = new_schedule(&m);
    let mut log = run(&mut s, origin, Duration::ZERO, secs(30), ms(100));
    assert!(!s.stats().behind);
    assert!(s.stats().lag_max_ms <= 100);
    // Stall: nothing runs for 20 s.
    let burst = s.due(origin + secs(50), wall());
    // Only checks late by at most the 1 s threshold go out at once (~100).
    assert!(
        burst.len() <= 200,
        "{} fired at once after the stall",
        burst.len()
    );
    let st = s.stats();
    assert!(st.behind);
    assert!(st.lag_max_ms >= 19_000, "{st:?}");
    assert!(st.late >= 1500, "{st:?}");
    assert_eq!(st.catching_up as u64, st.late);
    log.extend(burst.into_iter().map(|e| (secs(50), e)));
    let after = run(&mut s, origin, secs(50), secs(120), ms(100));
    // Catch-up: over the 10 s window the late ~1900 arrive on top of the
    // normal 100/s, so no second carries more than normal + late/10 with the
    // same binomial margin; far below the ~2000 an unthrottled catch-up fires.
    let mut per_sec: HashMap<u64, usize> = HashMap::new();
    for (t, _) in &after {
        *per_sec
            .entry((t.as_millis() as u64 - 1) / 1000)
            .or_default() += 1;
    }
    let limit = 100 + st.late as usize / 10 + 80;
    assert!(
        per_sec.values().all(|n| *n <= limit),
        "burst after stall: {per_sec:?} (limit {limit})"
    );
    assert!(!s.stats().behind, "{:?}", s.stats());
    assert_eq!(s.stats().catching_up, 0);
    log.extend(after);
    // Each check ran exactly twice in [0, 120] and never twice within 20 s
    // of itself (the catch-up run is a replacement, not an extra).
    let by = times_by_check(&log);
    assert_eq!(by.len(), n);
    for (id, t) in &by {
        assert!(t.len() == 2, "{id} ran {} times: {t:?}", t.len());
    }
}

#[test]
fn lag_warnings_are_rate_limited() {
    let m = model((0..600).map(|i| check(i, 60)).collect());
    let (mut s, origin) = new_schedule(&m);
    // A scheduler polled every 3 s is late all the time for 60 s: one
    // warning per 10 s at most (7 in [3 s, 60 s]), not one per round (20).
    let log = run(&mut s, origin, Duration::ZERO, secs(60), secs(3));
    let st = s.stats();
    assert!(st.late > 0);
    assert!((5..=7).contains(&st.lag_warnings), "{st:?}");
    // Nothing was lost to the re-spreading: every check ran within its
    // interval plus the catch-up window.
    let log2 = run(&mut s, origin, secs(60), secs(72), secs(3));
    let mut by = times_by_check(&log);
    for (id, t) in times_by_check(&log2) {
        by.entry(id).or_default().extend(t);
    }
    assert_eq!(by.len(), 600);
}

#[test]
fn a_check_overdue_by_several_intervals_runs_once() {
    let (mut s, origin, id) = one_check(10);
    s.reschedule(id, secs(10), origin);
    // Nothing dispatched for 95 s: nine runs missed.
    let late = s.due(origin + secs(95), wall());
    assert!(
        late.is_empty(),
        "late check fired instead of being re-spread"
    );
    assert!(s.stats().behind);
    let log = run(&mut s, origin, secs(95), secs(105), ms(100));
    assert_eq!(log.len(), 1, "ran {} times", log.len());
    // Then back on a 10 s cadence from its catch-up run.
    let t = log[0].0;
    let next = run(&mut s, origin, secs(105), t + secs(20), ms(100));
    let times: Vec<_> = next.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![t + secs(10), t + secs(20)]);
}

#[test]
fn heap_stays_bounded_under_churn() {
    let m = model((0..100).map(|i| check(i, 60)).collect());
    let (mut s, origin) = new_schedule(&m);
    for round in 0..200u64 {
        let now = origin + ms(round);
        for c in &m.checks {
            s.reschedule(c.id, secs(10 + round % 2 * 50), now);
            s.disable(c.id);
            s.enable(c.id, now);
        }
        s.due(now, wall());
    }
    assert!(
        s.heap_len() <= 2 * 100 + 1024 + 300,
        "heap grew to {}",
        s.heap_len()
    );
    let step = ms(100);
    let log = run(&mut s, origin, ms(199), secs(200), step);
    let by = times_by_check(&log);
    assert_eq!(by.len(), 100);
    for t in by.values() {
        // Observed in `step`s, so a 60 s gap may look one step shorter.
        for w in t.windows(2) {
            assert!(w[1] - w[0] >= secs(60) - step, "doubled: {t:?}");
        }
    }
}

mod driver {
    use super::*;
    use crate::error::{Error, Result};
    use crate::model::CheckResult;
    use crate::queue::{Acker, DeadCheck, Delivery, DeliveryStream, ExecuteCheck, Queue, Update};
    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use futures::StreamExt;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::mpsc;

    /// A queue that records executes and serves control messages from a
    /// channel, counting acks: enough for the scheduler's two arrows.
    struct TestQueue {
        executes: Mutex<Vec<(Instant, ExecuteCheck)>>,
        /// Control streams handed out in turn, one per `consume_control`.
        control: Mutex<Vec<mpsc::UnboundedReceiver<SchedulerControl>>>,
        acks: Arc<AtomicUsize>,
        /// The next this many publishes fail.
        fail_publishes: AtomicUsize,
        /// The next publish takes this long (a stalled broker).
        stall: Mutex<Option<Duration>>,
    }

    impl TestQueue {
        fn new(control: Vec<mpsc::UnboundedReceiver<SchedulerControl>>) -> Arc<Self> {
            Arc::new(TestQueue {
                executes: Mutex::new(Vec::new()),
                control: Mutex::new(control),
                acks: Arc::new(AtomicUsize::new(0)),
                fail_publishes: AtomicUsize::new(0),
                stall: Mutex::new(None),
            })
        }
    }

    struct CountAck(Arc<AtomicUsize>);

    #[async_trait]
    impl Acker for CountAck {
        async fn ack(self: Box<Self>) -> Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn nack(self: Box<Self>, _requeue: bool) -> Result<()> {
            Ok(())
        }
    }

    fn unsupported<T>() -> Result<T> {
        Err(Error::InvalidInput(
            "not part of the scheduler test queue".into(),
        ))
    }

    #[async_trait]
    impl Queue for TestQueue {
        async fn publish_execute(&self, execute: ExecuteCheck) -> Result<()> {
            let failing = self
                .fail_publishes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(Error::Closed("test broker down".into()));
            }
            let stall = self.stall.lock().take();
            if let Some(d) = stall {
                tokio::time::sleep(d).await;
            }
            self.executes.lock().push((Instant::now(), execute));
            Ok(())
        }
        async fn consume_executes(
            &self,
            _pool: &str,
            _engines: &[String],
        ) -> Result<DeliveryStream<ExecuteCheck>> {
            unsupported()
        }
        async fn consume_dead_checks(&self) -> Result<DeliveryStream<DeadCheck>> {
            unsupported()
        }
        async fn publish_result(&self, _result: CheckResult) -> Result<()> {
            unsupported()
        }
        async fn consume_results(&self) -> Result<DeliveryStream<CheckResult>> {
            unsupported()
        }
        async fn publish_update(&self, _update: Update) -> Result<()> {
            unsupported()
        }
        async fn subscribe_updates(&self) -> Result<BoxStream<'static, Result<Update>>> {
            unsupported()
        }
        async fn publish_control(&self, _control: SchedulerControl) -> Result<()> {
            unsupported()
        }
        async fn consume_control(&self) -> Result<DeliveryStream<SchedulerControl>> {
            let mut streams = self.control.lock();
            if streams.is_empty() {
                return Err(Error::Closed("no more control streams".into()));
            }
            let rx = streams.remove(0);
            let acks = self.acks.clone();
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |m| {
                let acker: Box<dyn Acker> = Box::new(CountAck(acks.clone()));
                Ok(Delivery::new(m, false, acker))
            });
            Ok(stream.boxed())
        }
    }

    struct FixedClock;
    impl WallClock for FixedClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            wall()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn driver_publishes_applies_control_reloads_and_stops() {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let queue = TestQueue::new(vec![ctl_rx]);
        let m = model((0..60).map(|i| check(i, 60)).collect());
        let start = Instant::now();
        let (scheduler, handle) = Scheduler::with_clock(
            &m,
            queue.clone(),
            SchedulerConfig::default(),
            Arc::new(FixedClock),
        );
        let running = Running::start(scheduler);

        // Two intervals: every check published twice, 60 s apart, on time.
        tokio::time::sleep(secs(120) - ms(1)).await;
        {
            let ex = queue.executes.lock();
            assert_eq!(ex.len(), 120);
            let mut by: HashMap<CheckId, Vec<Instant>> = HashMap::new();
            for (t, e) in ex.iter() {
                by.entry(e.check_id).or_default().push(*t);
                assert_eq!(e.scheduled_at, wall());
            }
            for c in &m.checks {
                let t = &by[&c.id];
                assert_eq!(t[0], start + spread_offset(c.id, secs(60)));
                assert_eq!(t[1] - t[0], secs(60));
            }
        }
        assert_eq!(handle.stats().dispatched, 120);

        // Execute-now through the queue: published at once, acked.
        let id = m.checks[7].id;
        ctl_tx
            .send(SchedulerControl::ExecuteNow { check_id: id })
            .expect("scheduler listens");
        ctl_tx
            .send(SchedulerControl::Disable {
                check_id: m.checks[8].id,
            })
            .expect("scheduler listens");
        tokio::time::sleep(ms(10)).await;
        assert_eq!(queue.acks.load(Ordering::SeqCst), 2);
        {
            let ex = queue.executes.lock();
            let now: Vec<_> = ex.iter().filter(|(_, e)| e.execute_now).collect();
            assert_eq!(now.len(), 1);
            assert_eq!(now[0].1.check_id, id);
            assert_eq!(now[0].1.ttl, secs(30));
        }

        // Reload: drop half the checks.
        let half = model(m.checks[..30].to_vec());
        let sum = handle.reload(half).await.expect("reload applied");
        assert_eq!((sum.removed, sum.kept), (30, 30));
        let mark = queue.executes.lock().len();
        tokio::time::sleep(secs(60)).await;
        {
            let ex = queue.executes.lock();
            let ids: Vec<_> = ex[mark..].iter().map(|(_, e)| e.check_id).collect();
            // 30 kept minus the disabled one, once each.
            assert_eq!(ids.len(), 29);
            let set: HashSet<_> = ids.iter().collect();
            assert_eq!(set.len(), 29);
            assert!(!set.contains(&m.checks[8].id));
            assert!(m.checks[30..].iter().all(|c| !set.contains(&c.id)));
        }
        assert_eq!(handle.stats().checks, 30);

        running.stop().await;
        assert!(matches!(
            handle.reload(model(vec![])).await,
            Err(Error::Closed(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn driver_survives_publish_failures_and_a_lost_control_stream() {
        let (tx1, rx1) = mpsc::unbounded_channel();
        let (tx2, rx2) = mpsc::unbounded_channel();
        let queue = TestQueue::new(vec![rx1, rx2]);
        let m = model((0..10).map(|i| check(i, 60)).collect());
        // The first 3 publishes fail: those checks run at their next turn.
        queue.fail_publishes.store(3, Ordering::SeqCst);
        let (scheduler, handle) = Scheduler::new(&m, queue.clone(), SchedulerConfig::default());
        let running = Running::start(scheduler);
        tokio::time::sleep(secs(60) - ms(1)).await;
        assert_eq!(handle.stats().publish_errors, 3);
        assert_eq!(queue.executes.lock().len(), 7);
        tokio::time::sleep(secs(60)).await;
        assert_eq!(queue.executes.lock().len(), 17);

        // The control stream ends (broker channel closed): the scheduler
        // consumes again and control messages on the new stream are applied.
        drop(tx1);
        tokio::time::sleep(secs(2)).await;
        tx2.send(SchedulerControl::ExecuteNow {
            check_id: m.checks[0].id,
        })
        .expect("scheduler consumes the second stream");
        tokio::time::sleep(ms(10)).await;
        assert_eq!(queue.acks.load(Ordering::SeqCst), 1);
        assert!(queue
            .executes
            .lock()
            .iter()
            .any(|(_, e)| e.execute_now && e.check_id == m.checks[0].id));

        running.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn driver_stalled_by_the_broker_catches_up_without_a_burst() {
        let queue = TestQueue::new(vec![mpsc::unbounded_channel().1]);
        let n = 3000;
        let m = model((0..n).map(|i| check(i, 60)).collect());
        let start = Instant::now();
        let (scheduler, handle) = Scheduler::new(&m, queue.clone(), SchedulerConfig::default());
        let running = Running::start(scheduler);
        tokio::time::sleep(secs(20)).await;
        // One publish hangs for 15 s: the scheduler cannot send meanwhile.
        *queue.stall.lock() = Some(secs(15));
        tokio::time::sleep(secs(40)).await;
        let st = handle.stats();
        assert!(st.late > 300, "{st:?}");
        assert!(st.lag_max_ms >= 14_000, "{st:?}");
        assert!(st.lag_warnings >= 1, "{st:?}");
        tokio::time::sleep(secs(60)).await;
        assert!(!handle.stats().behind, "{:?}", handle.stats());

        // Copied out so no lock is held while the test later awaits the task.
        let ex: Vec<_> = queue.executes.lock().clone();
        // No second after the stall carries more than the normal 50/s plus
        // the ~700 late ones spread over 10 s, with a binomial margin;
        // unthrottled, ~700 would go out in one second.
        let mut per_sec: HashMap<u64, usize> = HashMap::new();
        for (t, _) in ex.iter() {
            *per_sec.entry((*t - start).as_secs()).or_default() += 1;
        }
        let limit = 50 + st.late as usize / 10 + 60;
        assert!(
            per_sec.values().all(|c| *c <= limit),
            "{per_sec:?} limit {limit}"
        );
        // Everyone ran in each of the two minutes' worth of turns, once per
        // turn: 2 runs each in [0, 120 s), give or take the moved phase.
        let mut by: HashMap<CheckId, usize> = HashMap::new();
        for (_, e) in ex.iter() {
            *by.entry(e.check_id).or_default() += 1;
        }
        assert_eq!(by.len(), n);
        assert!(
            by.values().all(|c| (1..=2).contains(c)),
            "a check ran 3+ times"
        );
        running.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn driver_fails_when_control_cannot_be_consumed_at_start() {
        let queue = TestQueue::new(vec![]);
        let (scheduler, _handle) =
            Scheduler::new(&model(vec![]), queue, SchedulerConfig::default());
        assert!(matches!(
            scheduler.run(std::future::pending()).await,
            Err(Error::Closed(_))
        ));
    }
}

#[test]
fn intervals_follow_the_real_state_machine() {
    // A check failing and recovering, driven by `state::transition` and the
    // processor's `Reschedule { next_interval }`, each result applied 1 s
    // after its execute. DESIGN.md point 9: soft -> changing_every, hard ok
    // -> every, hard not-ok -> retry_every.
    use crate::model::{CheckResult, Status};
    use crate::state::{initial_state, transition};
    let mut c = check(1, 300);
    c.policy.retry_every = secs(60);
    c.policy.changing_every = Some(secs(20));
    let id = c.id;
    let policy = c.policy.clone();
    let (mut s, origin) = new_schedule(&model(vec![c]));
    let mut state = initial_state(&policy);
    let script = [
        Status::Ok,
        Status::Critical,
        Status::Critical,
        Status::Critical,
        Status::Critical,
        Status::Ok,
        Status::Ok,
        Status::Ok,
        Status::Ok,
    ];
    let mut runs = Vec::new();
    let mut t = s.next_due(id).expect("scheduled");
    for status in script {
        let ex = s.due(t, wall());
        assert_eq!(ex.len(), 1);
        runs.push((t - origin, ex[0].ttl.as_secs()));
        let at = wall() + chrono::Duration::from_std(t - origin).expect("small");
        let result = CheckResult::new(id, status, "scripted", at);
        let tr = transition(&state, &result, &policy, &[], at);
        state = tr.state;
        let control = SchedulerControl::Reschedule {
            check_id: id,
            interval: tr.next_interval,
        };
        s.apply_control(&control, t + secs(1));
        t = s.next_due(id).expect("scheduled");
        // Nothing runs before the next due time.
        assert!(s.due(t - ms(1), wall()).is_empty());
    }
    let ttls: Vec<_> = runs.iter().map(|(_, ttl)| *ttl).collect();
    assert_eq!(ttls, vec![300, 300, 20, 20, 60, 60, 20, 20, 300]);
    let gaps: Vec<_> = runs
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs())
        .collect();
    assert_eq!(gaps, vec![300, 20, 20, 60, 60, 20, 20, 300]);
}

mod in_memory {
    use super::*;
    use crate::queue::{DeadReason, InMemoryQueue, Queue};
    use futures::StreamExt;
    use parking_lot::Mutex;
    use std::sync::Arc;

    type Taken = Arc<Mutex<Vec<(Instant, ExecuteCheck)>>>;

    /// A worker of pool `default`, engine `dummy`, that acks every execute
    /// and records it with the time it was taken.
    async fn take_executes(queue: &InMemoryQueue) -> (Taken, tokio::task::JoinHandle<()>) {
        let taken: Taken = Arc::default();
        let mut work = queue
            .consume_executes("default", &["dummy".to_string()])
            .await
            .expect("consume executes");
        let worker = {
            let taken = taken.clone();
            tokio::spawn(async move {
                while let Some(d) = work.next().await {
                    let d = d.expect("delivery");
                    taken.lock().push((Instant::now(), d.message.clone()));
                    d.ack().await.expect("ack");
                }
            })
        };
        (taken, worker)
    }

    /// The scheduler against the real in-process queue: a worker takes the
    /// executes, control messages published on the queue reach the
    /// scheduler and are acked, and executes nobody can take come back as
    /// dead checks.
    #[tokio::test(start_paused = true)]
    async fn scheduler_with_in_memory_queue_and_a_worker() {
        let queue = Arc::new(InMemoryQueue::new());
        let mut m = model((0..20).map(|i| check(i, 60)).collect());
        // One check on an engine no worker serves: it must come back dead.
        m.checks[19].engine = "nowhere".into();
        let orphan = m.checks[19].id;

        let (taken, worker) = take_executes(&queue).await;
        let mut dead = queue.consume_dead_checks().await.expect("consume dead");

        let (scheduler, handle) = Scheduler::new(&m, queue.clone(), SchedulerConfig::default());
        let running = Running::start(scheduler);

        tokio::time::sleep(secs(60) - ms(1)).await;
        {
            let t = taken.lock();
            assert_eq!(t.len(), 19);
            let ids: HashSet<_> = t.iter().map(|(_, e)| e.check_id).collect();
            assert_eq!(ids.len(), 19);
            assert!(!ids.contains(&orphan));
        }
        let d = dead.next().await.expect("dead check").expect("delivery");
        assert_eq!(d.message.execute.check_id, orphan);
        assert_eq!(d.message.reason, DeadReason::Unroutable);
        d.ack().await.expect("ack");

        // The processor's orders, through the queue.
        let id = m.checks[0].id;
        queue
            .publish_control(SchedulerControl::Reschedule {
                check_id: id,
                interval: secs(10),
            })
            .await
            .expect("publish control");
        queue
            .publish_control(SchedulerControl::ExecuteNow {
                check_id: m.checks[1].id,
            })
            .await
            .expect("publish control");
        tokio::time::sleep(ms(5)).await;
        {
            let t = taken.lock();
            let now: Vec<_> = t.iter().filter(|(_, e)| e.execute_now).collect();
            assert_eq!(now.len(), 1);
            assert_eq!(now[0].1.check_id, m.checks[1].id);
        }
        let mark = Instant::now();
        tokio::time::sleep(secs(30)).await;
        {
            let t = taken.lock();
            let runs: Vec<_> = t
                .iter()
                .filter(|(at, e)| e.check_id == id && *at > mark)
                .collect();
            // Every 10 s now, with a 10 s TTL.
            assert_eq!(runs.len(), 3, "{runs:?}");
            assert!(runs.iter().all(|(_, e)| e.ttl == secs(10)));
        }
        // Both control messages were acked: nothing is left for another consumer.
        let mut control = queue.consume_control().await.expect("consume control");
        assert!(tokio::time::timeout(secs(1), control.next()).await.is_err());
        assert_eq!(handle.stats().checks, 20);

        running.stop().await;
        worker.abort();
    }

    /// The driver follows an owner's watch channel: nothing while it owns
    /// nothing, the owned checks once it owns them, resumed from the
    /// store's `last_check_at`; and nothing again once the owner is gone.
    #[tokio::test(start_paused = true)]
    async fn scheduler_follows_the_owner_and_resumes_from_the_store() {
        use crate::model::{CheckResult, Status};
        use crate::store::{InMemoryStore, Store};
        use std::collections::BTreeSet;

        struct Clock(Instant);
        impl WallClock for Clock {
            fn now(&self) -> chrono::DateTime<chrono::Utc> {
                wall() + chrono::Duration::from_std(self.0.elapsed()).expect("small")
            }
        }

        let queue = Arc::new(InMemoryQueue::new());
        let m = model((0..40).map(|i| check(i, 60)).collect());
        let store = Arc::new(InMemoryStore::new());
        store.sync_config(&m).await.expect("sync");
        // Every check last ran 20 s before the scheduler starts.
        let last = wall() - chrono::Duration::seconds(20);
        for c in &m.checks {
            store
                .apply_result(&CheckResult::new(c.id, Status::Ok, "ok", last), last)
                .await
                .expect("apply");
        }
        let (taken, worker) = take_executes(&queue).await;

        let start = Instant::now();
        let (owner_tx, owner_rx) = tokio::sync::watch::channel(BTreeSet::new());
        let (scheduler, handle) = Scheduler::with_clock(
            &m,
            queue.clone(),
            SchedulerConfig::default(),
            Arc::new(Clock(start)),
        );
        let scheduler = scheduler
            .with_ownership(owner_rx)
            .with_store(store.clone() as Arc<dyn Store>);
        let running = Running::start(scheduler);

        tokio::time::sleep(secs(120)).await;
        assert!(taken.lock().is_empty(), "owns nothing, runs nothing");
        assert_eq!(handle.stats().scheduled, 0);

        // Gains every partition at 120 s: each check last ran at -20 s, so
        // it is overdue and runs within the 10 s catch-up window, once.
        let gained = Instant::now();
        owner_tx.send_replace((0..64).collect());
        tokio::time::sleep(secs(10)).await;
        {
            let t = taken.lock();
            assert_eq!(t.len(), 40);
            assert!(t
                .iter()
                .all(|(at, _)| *at >= gained && *at <= gained + secs(10)));
        }
        assert_eq!(handle.stats().partitions_owned, 64);
        // Then every 60 s.
        tokio::time::sleep(secs(60)).await;
        assert_eq!(taken.lock().len(), 80);

        // Half the partitions go: only the other half runs.
        owner_tx.send_replace((0..32).collect());
        tokio::time::sleep(ms(1)).await;
        let mark = taken.lock().len();
        tokio::time::sleep(secs(60)).await;
        {
            let t = taken.lock();
            assert!(t[mark..]
                .iter()
                .all(|(_, e)| partition_of(e.check_id, 64) < 32));
            let kept = m
                .checks
                .iter()
                .filter(|c| partition_of(c.id, 64) < 32)
                .count();
            assert_eq!(t.len() - mark, kept);
        }
        // The owner disappears: nothing is dispatched any more.
        drop(owner_tx);
        tokio::time::sleep(ms(1)).await;
        let mark = taken.lock().len();
        tokio::time::sleep(secs(120)).await;
        assert_eq!(taken.lock().len(), mark);
        assert_eq!(handle.stats().partitions_owned, 0);

        running.stop().await;
        worker.abort();
    }
}

mod partitions {
    use super::*;
    use std::collections::BTreeSet;

    fn set(r: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
        r.into_iter().collect()
    }

    #[test]
    fn partition_of_is_stable_and_even() {
        // Pinned: the partition is part of the cluster protocol (every node,
        // every release must agree), so a change of the hash must show here.
        let id = CheckId(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ));
        let pinned = partition_of(id, 64);
        assert_eq!(pinned, 8);
        assert_eq!(partition_of(id, 1), 0);
        assert_eq!(partition_of(id, 0), 0);
        let mut counts = vec![0usize; 64];
        for i in 0..6400 {
            let p = partition_of(check(i, 60).id, 64);
            assert!(p < 64);
            counts[p as usize] += 1;
        }
        // Binomial(6400, 1/64): mean 100, sd ~9.9.
        assert!(counts.iter().all(|c| (50..=150).contains(c)), "{counts:?}");
        // Independent of the spread offset: a partition's checks spread
        // over the whole interval.
        let offsets: Vec<u64> = (0..6400)
            .map(|i| check(i, 60).id)
            .filter(|id| partition_of(*id, 64) == 0)
            .map(|id| spread_offset(id, secs(60)).as_secs() / 10)
            .collect();
        for window in 0..6 {
            let n = offsets.iter().filter(|w| **w == window).count();
            assert!(n >= 5, "window {window}: {n} of {}", offsets.len());
        }
    }

    #[test]
    fn default_owns_everything() {
        let m = model((0..50).map(|i| check(i, 60)).collect());
        let (s, _) = new_schedule(&m);
        assert_eq!(s.partitions(), DEFAULT_PARTITIONS);
        assert_eq!(s.owned_partitions(), set(0..64));
        assert_eq!(s.stats().scheduled, 50);
        assert_eq!(s.stats().partitions_owned, 64);
    }

    /// Two schedules owning complementary halves dispatch every check
    /// exactly once per interval between them.
    #[test]
    fn complementary_owners_dispatch_each_check_once_per_interval() {
        let m = model((0..300).map(|i| check(i, 60)).collect());
        let (mut a, origin) = new_schedule(&m);
        let mut b = Schedule::new(ScheduleConfig::default(), origin);
        b.apply_model(&m, origin);
        let even = set((0..64).filter(|p| p % 2 == 0));
        let odd = set((0..64).filter(|p| p % 2 == 1));
        let ca = a.set_owned_partitions(&even, origin);
        let cb = b.set_owned_partitions(&odd, origin);
        assert_eq!(ca.lost, 32);
        assert_eq!(cb.lost, 32);
        assert_eq!(ca.checks_stopped + cb.checks_stopped, 300);
        assert_eq!(a.stats().scheduled + b.stats().scheduled, 300);

        let la = run(&mut a, origin, Duration::ZERO, secs(300), ms(100));
        let lb = run(&mut b, origin, Duration::ZERO, secs(300), ms(100));
        let ta = times_by_check(&la);
        let tb = times_by_check(&lb);
        assert!(ta.keys().all(|id| !tb.contains_key(id)));
        assert_eq!(ta.len() + tb.len(), 300);
        for (id, times) in ta.iter().chain(tb.iter()) {
            assert_eq!(times.len(), 5, "{id}");
            let p = partition_of(*id, 64);
            assert_eq!(ta.contains_key(id), p.is_multiple_of(2));
            for w in times.windows(2) {
                assert_eq!(w[1] - w[0], secs(60));
            }
        }
    }

    #[test]
    fn a_lost_partition_stops_and_a_regained_one_keeps_its_cadence() {
        let m = model((0..200).map(|i| check(i, 60)).collect());
        let (mut s, origin) = new_schedule(&m);
        let step = ms(100);
        let first = run(&mut s, origin, Duration::ZERO, secs(60), step);
        assert_eq!(first.len(), 200);
        let last: HashMap<CheckId, Duration> =
            first.iter().map(|(t, e)| (e.check_id, *t)).collect();

        // Lose partitions 0..32 at 60 s, for 30 s.
        let keep = set(32..64);
        let c = s.set_owned_partitions(&keep, origin + secs(60));
        assert_eq!(c.lost, 32);
        let lost_checks: HashSet<CheckId> = last
            .keys()
            .copied()
            .filter(|id| partition_of(*id, 64) < 32)
            .collect();
        assert_eq!(c.checks_stopped, lost_checks.len());
        for id in &lost_checks {
            assert_eq!(s.next_due(*id), None);
            assert_eq!(s.is_owned(*id), Some(false));
        }
        let during = run(&mut s, origin, secs(60), secs(90), step);
        assert!(during
            .iter()
            .all(|(_, e)| !lost_checks.contains(&e.check_id)));

        // Regain them at 90 s: each continues from its last run here.
        let c = s.set_owned_partitions(&set(0..64), origin + secs(90));
        assert_eq!(c.gained, 32);
        assert_eq!(c.checks_started, lost_checks.len());
        for id in &lost_checks {
            let l = last[id];
            let want = if l + secs(60) > secs(90) {
                origin + l + secs(60)
            } else {
                // Overdue: spread over the 10 s catch-up window.
                let d = s.next_due(*id).expect("scheduled");
                assert!(d >= origin + secs(90) && d < origin + secs(100), "{id}");
                d
            };
            assert_eq!(s.next_due(*id), Some(want));
        }
        // No burst: at most a tenth of the regained checks in any 100 ms.
        let after = run(&mut s, origin, secs(90), secs(200), step);
        let mut per_step: HashMap<Duration, usize> = HashMap::new();
        for (t, e) in &after {
            if lost_checks.contains(&e.check_id) {
                *per_step.entry(*t).or_default() += 1;
            }
        }
        let worst = per_step.values().copied().max().unwrap_or(0);
        assert!(worst * 10 <= lost_checks.len().max(10), "burst of {worst}");
    }

    /// A restarted schedule fed the store's `last_check_at` continues every
    /// check's cadence; overdue checks are spread over the catch-up window.
    #[test]
    fn resume_after_restart_continues_the_cadence() {
        let m = model((0..200).map(|i| check(i, 60)).collect());
        let (mut s1, origin1) = new_schedule(&m);
        let wall0 = wall();
        let log = run(&mut s1, origin1, Duration::ZERO, secs(150), ms(100));
        // What the store would hold: the wall time of each check's last run.
        let mut last_wall: HashMap<CheckId, chrono::DateTime<chrono::Utc>> = HashMap::new();
        for (t, e) in &log {
            let at = wall0 + chrono::Duration::from_std(*t).expect("small");
            last_wall.insert(e.check_id, at);
        }
        assert_eq!(last_wall.len(), 200);

        // Restart 20 s later (wall 170 s): a fresh schedule.
        let origin2 = origin1 + secs(170);
        let wall_now = wall0 + chrono::Duration::seconds(170);
        let mut s2 = Schedule::new(ScheduleConfig::default(), origin2);
        s2.apply_model(&m, origin2);
        for (id, at) in &last_wall {
            assert!(s2.resume(*id, *at, origin2, wall_now));
        }
        for (id, at) in &last_wall {
            let since = (wall_now - *at).to_std().expect("past");
            let due = s2.next_due(*id).expect("scheduled");
            if since < secs(60) {
                assert_eq!(due, origin2 + (secs(60) - since), "{id}");
            } else {
                assert!(due >= origin2 && due < origin2 + secs(10), "{id}");
            }
        }
        // And the cadence goes on from there, once per interval.
        let log2 = run(&mut s2, origin2, Duration::ZERO, secs(180), ms(100));
        let t2 = times_by_check(&log2);
        assert_eq!(t2.len(), 200);
        assert!(t2.values().all(|t| t.len() == 3));

        // A check with no known run, and an unknown check.
        let mut s3 = Schedule::new(ScheduleConfig::default(), origin2);
        s3.apply_model(&m, origin2);
        let id = m.checks[0].id;
        assert_eq!(s3.next_due(id), Some(origin2 + spread_offset(id, secs(60))));
        assert!(!s3.resume(check(999, 60).id, wall_now, origin2, wall_now));
    }

    /// Failover: node B resumes node A's checks from the last runs A left
    /// in the store, so no check runs twice in an interval, or is skipped.
    #[test]
    fn handoff_to_another_schedule_keeps_each_check_once_per_interval() {
        let m = model((0..200).map(|i| check(i, 60)).collect());
        let (mut a, origin) = new_schedule(&m);
        let mut b = Schedule::new(ScheduleConfig::default(), origin + secs(5));
        b.apply_model(&m, origin + secs(5));
        b.set_owned_partitions(&BTreeSet::new(), origin + secs(5));
        assert!(run(&mut b, origin, secs(5), secs(100), ms(100)).is_empty());

        let step = ms(100);
        let mut log = run(&mut a, origin, Duration::ZERO, secs(100), step);
        // A dies at 100 s; B learns from the store and takes over at 103 s.
        let takeover = secs(103);
        for (t, e) in &log {
            let at = wall() + chrono::Duration::from_std(*t).expect("small");
            b.resume(
                e.check_id,
                at,
                origin + takeover,
                wall() + chrono::Duration::from_std(takeover).expect("small"),
            );
        }
        b.set_owned_partitions(&set(0..64), origin + takeover);
        log.extend(run(&mut b, origin, takeover, secs(400), step));
        for (id, times) in times_by_check(&log) {
            for w in times.windows(2) {
                let gap = w[1] - w[0];
                // Exactly the interval, except a check due while nobody
                // owned it (100..103 s): it runs once, within the catch-up
                // window after the takeover.
                assert!(
                    gap == secs(60) || (gap > secs(60) && gap < secs(60 + 3 + 10)),
                    "{id}: {times:?}"
                );
            }
        }
    }

    /// A gained check takes the interval its stored state calls for (the
    /// `Reschedule` another node received) and continues from its last run.
    #[test]
    fn resume_state_takes_the_state_machines_interval() {
        use crate::state::initial_state;
        let m = model((0..3).map(|i| check(i, 60)).collect());
        let (mut s, origin) = new_schedule(&m);
        s.set_owned_partitions(&BTreeSet::new(), origin);
        let now = origin + secs(100);
        let wall_now = wall() + chrono::Duration::seconds(100);
        let last = wall_now - chrono::Duration::seconds(4);

        let mut soft = initial_state(&m.checks[0].policy);
        soft.hard = false;
        soft.ok = false;
        soft.last_check_at = Some(last);
        let mut hard_bad = soft.clone();
        hard_bad.hard = true;
        let mut hard_ok = soft.clone();
        hard_ok.hard = true;
        hard_ok.ok = true;
        let ids: Vec<CheckId> = m.checks.iter().map(|c| c.id).collect();
        assert!(s.resume_state(ids[0], &soft, now, wall_now));
        assert!(s.resume_state(ids[1], &hard_bad, now, wall_now));
        assert!(s.resume_state(ids[2], &hard_ok, now, wall_now));
        assert!(!s.resume_state(check(99, 60).id, &hard_ok, now, wall_now));
        s.set_owned_partitions(&set(0..64), now);
        // retry_every is 10 s in these checks; every is 60 s.
        assert_eq!(s.interval(ids[0]), Some(secs(10)));
        assert_eq!(s.interval(ids[1]), Some(secs(10)));
        assert_eq!(s.interval(ids[2]), Some(secs(60)));
        assert_eq!(s.next_due(ids[0]), Some(now + secs(6)));
        assert_eq!(s.next_due(ids[1]), Some(now + secs(6)));
        assert_eq!(s.next_due(ids[2]), Some(now + secs(56)));

        // On a running node (a restart), the same happens at once.
        let (mut r, origin) = new_schedule(&m);
        let wall_now = wall();
        soft.last_check_at = Some(wall_now - chrono::Duration::seconds(4));
        assert!(r.resume_state(ids[0], &soft, origin, wall_now));
        assert_eq!(r.interval(ids[0]), Some(secs(10)));
        assert_eq!(r.next_due(ids[0]), Some(origin + secs(6)));
    }

    /// Losing partitions leaves stale heap items; they do not pile up.
    #[test]
    fn heap_stays_bounded_under_ownership_churn() {
        let m = model((0..3000).map(|i| check(i, 60)).collect());
        let (mut s, origin) = new_schedule(&m);
        for round in 0..40u64 {
            let now = origin + ms(round * 10);
            let half = if round % 2 == 0 {
                set(0..32)
            } else {
                set(32..64)
            };
            s.set_owned_partitions(&half, now);
            assert!(
                s.heap_len() <= 2 * s.stats().scheduled + 1024,
                "round {round}: {}",
                s.heap_len()
            );
        }
        s.set_owned_partitions(&BTreeSet::new(), origin + secs(1));
        assert!(s.heap_len() <= 1024);
        assert_eq!(s.stats().scheduled, 0);
        s.set_owned_partitions(&set(0..64), origin + secs(2));
        assert_eq!(s.stats().scheduled, 3000);
        let t = times_by_check(&run(&mut s, origin, secs(2), secs(122), ms(100)));
        assert_eq!(t.len(), 3000);
        assert!(t.values().all(|v| v.len() == 2));
    }

    #[test]
    fn controls_apply_to_unowned_checks_but_execute_now_runs_on_the_owner() {
        let m = model((0..20).map(|i| check(i, 60)).collect());
        let (mut s, origin) = new_schedule(&m);
        s.set_owned_partitions(&BTreeSet::new(), origin);
        let id = m.checks[3].id;
        assert!(s.reschedule(id, secs(10), origin));
        assert_eq!(s.interval(id), Some(secs(10)));
        assert_eq!(s.next_due(id), None);
        // Every node receives an execute-now; only the owner runs it.
        assert!(!s.execute_now(id));
        assert!(s.due(origin, wall()).is_empty());
        // Gained later: it runs at its current (10 s) interval.
        s.set_owned_partitions(&set(0..64), origin + secs(1));
        assert!(s.next_due(id).expect("scheduled") <= origin + secs(11));
    }
}
