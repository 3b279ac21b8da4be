//! Pure state-machine throughput: transitions per second on one core over a
//! realistic mix of results (mostly stable OK checks with perfdata, some
//! flaky, some failing, a few with dependencies).
//!
//! Run with `cargo bench -p bergamot-core --bench state`. Results are
//! prepared up front; the timed loop only stamps a fresh id and time on a
//! prepared result (no allocation), runs `transition` and replaces the
//! check's state, so the figure includes what a real transition does with
//! the payload (the state takes a shared reference to the result's output
//! and perfdata, as in a store) and the drop of the state it replaces.

use bergamot_core::model::{CheckId, CheckResult, Perfdata, Policy, ResultId, Status};
use bergamot_core::state::{
    initial_state, transition, transition_in_place, CheckState, DependencyState, Event,
};
use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CHECKS: usize = 10_000;
const SCHEDULE_LEN: usize = 1 << 20;
const TRANSITIONS_PER_RUN: usize = 5_000_000;
const RUNS: usize = 3;

fn perf(label: &str, value: f64, uom: &str, warn: Option<&str>, crit: Option<&str>) -> Perfdata {
    Perfdata {
        label: label.to_string(),
        value: Some(value),
        uom: uom.to_string(),
        warn: warn.map(str::to_string),
        crit: crit.map(str::to_string),
        min: Some(0.0),
        max: None,
    }
}

/// Result shapes seen in practice: HTTP, ping, disk, load checks with 0–3
/// perfdata readings; failures usually carry output only.
fn templates() -> (Vec<CheckResult>, Vec<CheckResult>) {
    let id = CheckId::random();
    let t0 = Utc.timestamp_opt(0, 0).single().expect("epoch");
    let mk = |status: Status, out: &str, perfdata: Vec<Perfdata>| {
        let mut r = CheckResult::new(id, status, out, t0);
        r.perfdata = perfdata.into();
        r
    };
    let ok = vec![
        mk(
            Status::Ok,
            "HTTP OK: HTTP/1.1 200 OK - 5120 bytes in 0.012 second response time",
            vec![
                perf("time", 0.012, "s", Some("1"), Some("2")),
                perf("size", 5120.0, "B", None, None),
            ],
        ),
        mk(
            Status::Ok,
            "PING OK - Packet loss = 0%, RTA = 0.41 ms",
            vec![
                perf("rta", 0.41, "ms", Some("100"), Some("500")),
                perf("pl", 0.0, "%", Some("20"), Some("60")),
            ],
        ),
        mk(
            Status::Ok,
            "DISK OK - free space: / 12040 MB (61% inode=92%)",
            vec![perf("/", 7680.0, "MB", Some("15984"), Some("17982"))],
        ),
        mk(
            Status::Ok,
            "OK - load average: 0.12, 0.20, 0.18",
            vec![
                perf("load1", 0.12, "", Some("5"), Some("10")),
                perf("load5", 0.20, "", Some("4"), Some("8")),
                perf("load15", 0.18, "", Some("3"), Some("6")),
            ],
        ),
        mk(
            Status::Ok,
            "TCP OK - 0.001 second response time on port 22",
            vec![],
        ),
    ];
    let bad = vec![
        mk(
            Status::Warning,
            "DISK WARNING - free space: / 2040 MB (11% inode=92%)",
            vec![perf("/", 17680.0, "MB", Some("15984"), Some("17982"))],
        ),
        mk(
            Status::Critical,
            "CRITICAL - Socket timeout after 10 seconds",
            vec![],
        ),
        mk(
            Status::Critical,
            "connect to address 10.0.0.7 and port 80: Connection refused",
            vec![],
        ),
        mk(
            Status::Unknown,
            "UNKNOWN - cannot parse plugin output",
            vec![],
        ),
        mk(Status::Timeout, "no worker took the check in time", vec![]),
    ];
    (ok, bad)
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat), so the rate
/// holds on a machine shared with other work; `None` where unavailable.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn main() {
    let (ok, bad) = templates();
    let templates: Vec<CheckResult> = ok.iter().chain(&bad).cloned().collect();
    let n_ok = ok.len();
    let mut rng = StdRng::seed_from_u64(7);

    // Check profiles: 85 % stable (0.5 % failures), 10 % flaky (20 %),
    // 5 % failing (90 %). Thresholds vary as configs do; one check in five
    // has a dependency (its host), which is mostly hard ok.
    let policies = [
        Policy::default(),
        Policy::builder().failed_after(1).recovers_after(1).build(),
        Policy::builder()
            .failed_after(5)
            .recovers_after(2)
            .changing_every(Some(Duration::from_secs(30)))
            .build(),
    ];
    struct Check {
        policy: usize,
        fail_rate: f64,
        deps: Vec<DependencyState>,
    }
    let checks: Vec<Check> = (0..CHECKS)
        .map(|i| {
            let profile: f64 = rng.gen();
            let fail_rate = if profile < 0.85 {
                0.005
            } else if profile < 0.95 {
                0.2
            } else {
                0.9
            };
            let deps = if i % 5 == 0 {
                vec![DependencyState {
                    hard: rng.gen_bool(0.98),
                    ok: rng.gen_bool(0.95),
                }]
            } else {
                Vec::new()
            };
            Check {
                policy: i % policies.len(),
                fail_rate,
                deps,
            }
        })
        .collect();
    // The schedule: which check gets which kind of result, in order.
    let schedule: Vec<(u32, u8)> = (0..SCHEDULE_LEN)
        .map(|_| {
            let c = rng.gen_range(0..CHECKS);
            let t = if rng.gen_bool(checks[c].fail_rate) {
                n_ok + rng.gen_range(0..bad.len())
            } else {
                // A check is one kind of check: its ok results always have
                // the same shape (output and perfdata labels).
                c % n_ok
            };
            (c as u32, t as u8)
        })
        .collect();

    let t0 = Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .expect("valid time");
    println!(
        "state machine: {CHECKS} checks, {} result shapes, {RUNS} runs of {TRANSITIONS_PER_RUN} transitions per variant",
        templates.len()
    );
    for in_place in [false, true] {
        let mut states: Vec<CheckState> = checks
            .iter()
            .map(|c| initial_state(&policies[c.policy]))
            .collect();
        let mut scratch = templates.clone();
        let mut seq: u64 = 0;
        let mut rates = Vec::with_capacity(RUNS);
        let mut events = [0u64; 5];
        println!(
            "{}:",
            if in_place {
                "transition_in_place (state updated where it lies)"
            } else {
                "transition (pure: &state in, new state out)"
            }
        );
        for run in 0..RUNS {
            let start = Instant::now();
            let cpu_start = thread_cpu_ns();
            for i in 0..TRANSITIONS_PER_RUN {
                let (c, t) = schedule[i % SCHEDULE_LEN];
                let (c, t) = (c as usize, t as usize);
                seq += 1;
                // Stamp a fresh id and a later time: no allocation.
                let r = &mut scratch[t];
                r.id = ResultId(Uuid::from_u128(u128::from(seq)));
                r.executed_at = t0 + chrono::Duration::milliseconds(seq as i64);
                let check = &checks[c];
                let policy = &policies[check.policy];
                let evs = if in_place {
                    transition_in_place(
                        &mut states[c],
                        black_box(&scratch[t]),
                        policy,
                        &check.deps,
                        t0,
                    )
                    .events
                } else {
                    let tr =
                        transition(&states[c], black_box(&scratch[t]), policy, &check.deps, t0);
                    states[c] = tr.state;
                    tr.events
                };
                if run == 0 {
                    for e in black_box(evs) {
                        events[match e {
                            Event::Alert => 0,
                            Event::Recovery => 1,
                            Event::Realert => 2,
                            Event::FlappingStarted => 3,
                            Event::FlappingStopped => 4,
                        }] += 1;
                    }
                }
            }
            let wall = start.elapsed().as_secs_f64();
            // On a busy machine the wall clock counts time spent waiting for
            // a core; the thread's CPU time does not.
            let secs = match (cpu_start, thread_cpu_ns()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                _ => wall,
            };
            let rate = TRANSITIONS_PER_RUN as f64 / secs;
            println!(
                "  run {}: {:.2} s wall, {:.2} s on CPU, {:.2} M transitions/s, {:.0} ns/transition",
                run + 1,
                wall,
                secs,
                rate / 1e6,
                secs * 1e9 / TRANSITIONS_PER_RUN as f64
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "  events in run 1: {} alert, {} recovery, {} realert, {} flapping_started, {} flapping_stopped",
            events[0], events[1], events[2], events[3], events[4]
        );
        let hard_bad = states.iter().filter(|s| s.hard && !s.ok).count();
        println!("  checks hard not-ok at the end: {hard_bad} of {CHECKS}");
        println!(
            "  transitions/s on one core (CPU time): median {:.2} M, best {:.2} M, worst {:.2} M",
            rates[RUNS / 2] / 1e6,
            rates[RUNS - 1] / 1e6,
            rates[0] / 1e6
        );
    }
}
