//! Scheduler benchmark: 1,000,000 checks at a 60 s interval on the dummy
//! engine. Simulates one full minute on a virtual clock advanced in 10 ms
//! steps and measures the process CPU time per dispatched check, and the
//! share of one core it implies for 1M checks per minute (goal: < 10 %).
//!
//! Run: `cargo bench -p bergamot-core --bench scheduler`.
//! `BENCH_CHECKS` overrides the number of checks.

use bergamot_core::model::{Check, CheckId, Model, Policy};
use bergamot_core::schedule::{spread_offset, Schedule, ScheduleConfig};
use nix::time::{clock_gettime, ClockId};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Process CPU time (user + system, all threads).
fn cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).expect("process CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// What `f` returns, and the process CPU time it took.
fn cpu_of<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = cpu();
    let out = f();
    (out, cpu() - start)
}

/// Owns `partitions` from `at` on; prints, after `what`, the checks that
/// stopped and started and the CPU time it took.
fn own(s: &mut Schedule, partitions: std::ops::Range<u32>, at: Instant, what: &str) {
    let set: std::collections::BTreeSet<u32> = partitions.collect();
    let (change, used) = cpu_of(|| s.set_owned_partitions(&set, at));
    println!(
        "{what}: {} checks stopped, {} placed in {:.3} s cpu",
        change.checks_stopped,
        change.checks_started,
        used.as_secs_f64()
    );
}

fn model_id(i: usize) -> CheckId {
    CheckId::service(
        "bench",
        &format!("host{}", i / 10),
        &format!("svc{}", i % 10),
    )
}

fn model(n: usize) -> Model {
    let policy = Policy::builder().every(Duration::from_secs(60)).build();
    let params = BTreeMap::from([("status".to_string(), serde_json::json!("ok"))]);
    let checks = (0..n)
        .map(|i| {
            let host = format!("host{}", i / 10);
            let name = format!("svc{}", i % 10);
            Check::service("bench", &host, &name)
                .engine("dummy")
                .params(params.clone())
                .policy(policy.clone())
                .build()
        })
        .collect();
    Model {
        site: "bench".into(),
        checks,
        ..Model::default()
    }
}

/// Steps the schedule through `[from, from + span)` in `step`s. With
/// `build`, every dispatch also builds its `ExecuteCheck` (what the driver
/// publishes); without, only the decision is made. Returns
/// (dispatched, CPU time, max dispatches in any one second).
fn minute(
    s: &mut Schedule,
    origin: Instant,
    from: Duration,
    span: Duration,
    step: Duration,
    build: bool,
) -> (u64, Duration, u64) {
    let wall = chrono::Utc::now();
    let mut dispatched = 0u64;
    let mut per_sec = vec![0u64; (span.as_secs() + 2) as usize];
    let mut sink = 0usize;
    let start = cpu();
    let mut t = Duration::ZERO;
    while t < span {
        t += step;
        let n = if build {
            s.due_with(origin + from + t, |d| {
                let e = d.to_execute(wall);
                sink = sink.wrapping_add(e.engine.len());
            })
        } else {
            s.due_with(origin + from + t, |d| {
                sink = sink.wrapping_add(d.engine.len())
            })
        };
        dispatched += n as u64;
        per_sec[t.as_secs() as usize] += n as u64;
    }
    let used = cpu() - start;
    std::hint::black_box(sink);
    (dispatched, used, per_sec.into_iter().max().unwrap_or(0))
}

fn report(label: &str, dispatched: u64, used: Duration, per_minute: u64) {
    let ns = used.as_nanos() as f64 / dispatched.max(1) as f64;
    // CPU seconds per minute of schedule, as a share of one core.
    let core = ns * per_minute as f64 / 60e9 * 100.0;
    println!(
        "{label:<44} {dispatched:>9} dispatched  cpu {:>8.3} s  {ns:>7.0} ns/check  {core:>6.2} % of one core at {per_minute} checks/min",
        used.as_secs_f64()
    );
}

fn main() {
    let n: usize = std::env::var("BENCH_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let step = Duration::from_millis(10);
    let minute_span = Duration::from_secs(60);
    println!("scheduler benchmark: {n} checks, every 60 s, dummy engine, 10 ms steps");

    let m = model(n);
    let origin = Instant::now();
    let mut s = Schedule::new(ScheduleConfig::default(), origin);
    let (sum, load) = cpu_of(|| s.apply_model(&m, origin));
    println!(
        "initial load: {} checks in {:.3} s cpu ({:.0} ns/check)",
        sum.added,
        load.as_secs_f64(),
        load.as_nanos() as f64 / n as f64
    );
    let (sum, reload) = cpu_of(|| s.apply_model(&m, origin + Duration::from_secs(1)));
    println!(
        "reload of the unchanged model: kept {} in {:.3} s cpu",
        sum.kept,
        reload.as_secs_f64()
    );
    drop(m);

    // Minute 1: the spread first runs. Minute 2: steady state, decide only.
    // Minute 3: steady state, building each ExecuteCheck as the driver does.
    let (d, used, peak) = minute(&mut s, origin, Duration::ZERO, minute_span, step, true);
    report("minute 1 (first runs, build executes)", d, used, n as u64);
    println!("  peak second: {peak} dispatches (even spread: {})", n / 60);
    let (d, used, peak) = minute(&mut s, origin, minute_span, minute_span, step, false);
    report("minute 2 (steady, decide only)", d, used, n as u64);
    println!("  peak second: {peak} dispatches");
    let (d, used, _) = minute(&mut s, origin, minute_span * 2, minute_span, step, true);
    report(
        "minute 3 (steady, decide + build executes)",
        d,
        used,
        n as u64,
    );

    // A 5 s stall: how many fire at once, how the rest is re-spread.
    let stall_at = minute_span * 3 + Duration::from_secs(5);
    let burst = s.due_with(origin + stall_at, |_| {});
    let st = s.stats();
    println!(
        "after a 5 s stall: {burst} dispatched at once, {} re-spread (lag {} ms)",
        st.late, st.lag_last_ms
    );
    let (d, used, peak) = minute(
        &mut s,
        origin,
        stall_at,
        Duration::from_secs(20),
        step,
        true,
    );
    report("20 s of catch-up (build executes)", d, used, n as u64);
    println!(
        "  peak second during catch-up: {peak} dispatches (normal {}); behind afterwards: {}",
        n / 60,
        s.stats().behind
    );
    println!("heap items: {} for {} checks", s.heap_len(), s.len());

    // Ownership (failover): lose half the partitions for two minutes (another
    // node runs them), resume them from a simulated store (last runs spread
    // over the last interval, as the other node ran them), gain them back,
    // and look at the minute after.
    let t = stall_at + Duration::from_secs(20);
    own(&mut s, 32..64, origin + t, "lose 32 of 64 partitions");
    let (d, used, _) = minute(&mut s, origin, t, minute_span * 2, step, false);
    report(
        "two minutes owning half (decide only)",
        d,
        used,
        n as u64 * 2,
    );
    let t = t + minute_span * 2;
    let wall = chrono::Utc::now();
    let ids: Vec<_> = (0..n).map(model_id).collect();
    let c0 = cpu();
    let mut resumed = 0usize;
    for id in &ids {
        if s.is_owned(*id) == Some(false) {
            let ago = spread_offset(*id, Duration::from_secs(59)).as_millis() as i64;
            s.resume(
                *id,
                wall - chrono::Duration::milliseconds(ago),
                origin + t,
                wall,
            );
            resumed += 1;
        }
    }
    let resume = cpu() - c0;
    println!(
        "resume {resumed} checks: {:.3} s cpu ({:.0} ns/check)",
        resume.as_secs_f64(),
        resume.as_nanos() as f64 / resumed.max(1) as f64
    );
    own(&mut s, 0..64, origin + t, "gain 32 partitions");
    let (d, used, peak) = minute(&mut s, origin, t, minute_span, step, true);
    report("minute after the gain (build executes)", d, used, n as u64);
    println!(
        "  peak second: {peak} dispatches (normal {}; the kept half still carries the 1.4x window the stall above left)",
        n / 60
    );
}
