//! The planner's driver against the in-memory store: idempotent re-planning
//! (also by a fresh planner, as after kill -9), escalation, acknowledgement,
//! recovery fan-out, downtime hand-off, time periods and still_relevant.

#![allow(clippy::unwrap_used)]

use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::notify::{
    InMemoryNotificationStore, JobFilter, JobStatus, NotificationJob, NotificationStore, Planner,
    SendOutcome,
};
use bergamot_core::state::Ack;
use bergamot_core::store::{Downtime, InMemoryStore, Store};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

const CONFIG: &str = r#"
[[contact]]
name = "alice"
email = "alice@example.com"

[[contact]]
name = "bob"
email = "bob@example.com"

[[contact]]
name = "carol"
email = "carol@example.com"

[[contact]]
name = "dave"
email = "dave@example.com"
period = "office"

[[team]]
name = "ops"
members = ["alice", "bob"]

[[timeperiod]]
name = "office"
timezone = "Europe/Berlin"
ranges = ["mon-fri 09:00-17:30"]

[[channel]]
name = "mail"
type = "log"

[[channel]]
name = "hook"
type = "log"

[[escalation]]
name = "managers"
  [[escalation.step]]
  after = "15m"
  contacts = ["carol"]

[[host]]
name = "db1"
failed_after = 1
recovers_after = 1
notify = { teams = ["ops"], channels = ["mail", "hook"], escalation = "managers", repeat_every = "30m" }

[[host]]
name = "web1"
failed_after = 1
recovers_after = 1
notify = { contacts = ["alice", "dave"], channels = ["mail"] }

[[host]]
name = "flappy"
failed_after = 1
recovers_after = 1
notify = { contacts = ["alice", "bob"], channels = ["mail"], types = ["flapping"] }
"#;

fn t(min: i64) -> DateTime<Utc> {
    // Thursday 2026-12-03 02:00 UTC: 03:00 in Berlin, outside office hours.
    DateTime::parse_from_rfc3339("2026-12-03T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::minutes(min)
}

struct Env {
    store: Arc<dyn Store>,
    jobs: Arc<InMemoryNotificationStore>,
    planner: Planner,
    config: Config,
}

async fn env() -> Env {
    env_of("planner.toml", CONFIG).await
}

/// The config `text` (named `name`) synced into a fresh store, with an
/// empty job store and a planner over both.
async fn env_of(name: &str, text: &str) -> Env {
    let config = Config::from_str_named(name, text).unwrap();
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    store.sync_config(&config.model).await.unwrap();
    let jobs = Arc::new(InMemoryNotificationStore::new());
    let planner = Planner::new(store.clone(), jobs.clone(), Arc::new(config.notify.clone()));
    Env {
        store,
        jobs,
        planner,
        config,
    }
}

/// A downtime window of `check` from `from` to `to`, by `author`.
fn window(
    check: CheckId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    author: &str,
    comment: &str,
) -> Downtime {
    Downtime {
        id: Uuid::new_v4(),
        check_id: check,
        starts_at: from,
        ends_at: to,
        author: author.into(),
        comment: comment.into(),
    }
}

/// A planner over the same stores that saw nothing (a restarted node).
fn fresh_planner(e: &Env) -> Planner {
    Planner::new(
        e.store.clone(),
        e.jobs.clone(),
        Arc::new(e.config.notify.clone()),
    )
}

fn db1() -> CheckId {
    CheckId::host("default", "db1")
}

fn web1() -> CheckId {
    CheckId::host("default", "web1")
}

async fn result(store: &Arc<dyn Store>, check: CheckId, status: Status, min: i64) {
    let r = CheckResult::new(check, status, format!("{status} at +{min}"), t(min));
    store.apply_result(&r, t(min)).await.unwrap();
}

/// Every job in `jobs`, newest first.
async fn all_jobs(jobs: &InMemoryNotificationStore) -> Vec<NotificationJob> {
    let all = JobFilter {
        limit: 100_000,
        ..JobFilter::default()
    };
    jobs.notifications(&all).await.unwrap()
}

/// `kind who/channel e<escalation> s<sequence>` of every job of `check`, sorted.
async fn jobs_of(jobs: &InMemoryNotificationStore, check: CheckId) -> Vec<String> {
    let mut v: Vec<String> = all_jobs(jobs)
        .await
        .iter()
        .filter(|j| j.notification.check_id == check)
        .map(|j| {
            let n = &j.notification;
            format!(
                "{} {}/{} e{} s{}",
                n.kind, n.recipient.name, n.channel, n.escalation, n.sequence
            )
        })
        .collect();
    v.sort();
    v
}

/// Plans once at minute `min`; how many jobs that enqueued.
async fn planned(planner: &Planner, min: i64) -> usize {
    planner.plan_once(t(min)).await.unwrap().enqueued
}

/// How many of `lines` start with `prefix`.
fn starting_with(lines: &[String], prefix: &str) -> usize {
    lines.iter().filter(|s| s.starts_with(prefix)).count()
}

/// Sends every due job (as the dispatcher would, asking still_relevant first).
async fn dispatch(e: &Env, now: DateTime<Utc>) -> Vec<String> {
    let mut sent = Vec::new();
    for j in e
        .jobs
        .claim("n1", now, std::time::Duration::from_secs(60), 1000)
        .await
        .unwrap()
    {
        let outcome = match e.planner.still_relevant(&j).await.unwrap() {
            Ok(()) => {
                sent.push(format!(
                    "{} {}/{}",
                    j.notification.kind, j.notification.recipient.name, j.notification.channel
                ));
                SendOutcome::Sent
            }
            Err(reason) => SendOutcome::Cancelled { reason },
        };
        e.jobs
            .finish(j.notification.id, outcome, now)
            .await
            .unwrap();
    }
    sent.sort();
    sent
}

#[tokio::test]
async fn alert_escalation_ack_recovery_with_idempotent_replanning() {
    let e = env().await;
    result(&e.store, db1(), Status::Critical, 0).await;

    assert_eq!(
        planned(&e.planner, 0).await,
        4,
        "ops (alice, bob) x (mail, hook)"
    );
    assert_eq!(
        jobs_of(&e.jobs, db1()).await,
        [
            "alert alice/hook e0 s0",
            "alert alice/mail e0 s0",
            "alert bob/hook e0 s0",
            "alert bob/mail e0 s0"
        ]
    );
    // Planning again, and a fresh planner (a restarted node), add nothing.
    assert_eq!(planned(&e.planner, 0).await, 0);
    let fresh = fresh_planner(&e);
    assert_eq!(planned(&fresh, 1).await, 0);
    assert_eq!(dispatch(&e, t(1)).await.len(), 4);

    // No escalation before 15 minutes; then carol.
    assert_eq!(planned(&e.planner, 14).await, 0);
    assert_eq!(planned(&e.planner, 15).await, 2);
    assert_eq!(
        dispatch(&e, t(15)).await,
        ["alert carol/hook", "alert carol/mail"]
    );

    // Acknowledged at +20: everyone told gets the acknowledgement; the repeat
    // due at +30 never comes.
    e.store
        .acknowledge(db1(), Ack::Sticky, "alice", "on it", t(20))
        .await
        .unwrap();
    assert_eq!(planned(&e.planner, 20).await, 6);
    assert_eq!(starting_with(&dispatch(&e, t(20)).await, "acknowledge"), 6);
    assert_eq!(
        planned(&e.planner, 120).await,
        0,
        "no repeats once acknowledged"
    );

    // Recovery reaches all six (alice, bob, carol) x (mail, hook).
    result(&e.store, db1(), Status::Ok, 130).await;
    assert_eq!(planned(&e.planner, 130).await, 6);
    let sent = dispatch(&e, t(130)).await;
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(|s| s.starts_with("recovery")), "{sent:?}");
    assert_eq!(planned(&e.planner, 131).await, 0);
    assert_eq!(planned(&fresh, 132).await, 0);
}

#[tokio::test]
async fn repeats_while_unacknowledged() {
    let e = env().await;
    result(&e.store, db1(), Status::Critical, 0).await;
    planned(&e.planner, 0).await;
    dispatch(&e, t(0)).await;
    planned(&e.planner, 15).await;
    dispatch(&e, t(15)).await;
    assert_eq!(planned(&e.planner, 29).await, 0);
    // At +30: one repeat to each of the six told.
    assert_eq!(planned(&e.planner, 30).await, 6);
    assert!(jobs_of(&e.jobs, db1())
        .await
        .contains(&"alert carol/mail e1 s1".to_string()));
}

#[tokio::test]
async fn outside_the_period_the_alert_waits_and_is_cancelled_if_it_recovers() {
    let e = env().await;
    result(&e.store, web1(), Status::Critical, 0).await;
    planned(&e.planner, 0).await;
    let jobs = all_jobs(&e.jobs).await;
    let dave = jobs
        .iter()
        .find(|j| j.notification.recipient.name == "dave")
        .unwrap();
    assert_eq!(dave.not_before, t(360), "09:00 Berlin");
    assert_eq!(dispatch(&e, t(1)).await, ["alert alice/mail"]);
    // Recovers at +60: alice gets the recovery; dave's alert, due at +360,
    // is cancelled then, and he gets no recovery.
    result(&e.store, web1(), Status::Ok, 60).await;
    planned(&e.planner, 60).await;
    assert_eq!(dispatch(&e, t(60)).await, ["recovery alice/mail"]);
    assert_eq!(dispatch(&e, t(360)).await, Vec::<String>::new());
    let jobs = all_jobs(&e.jobs).await;
    let dave = jobs
        .iter()
        .find(|j| j.notification.recipient.name == "dave")
        .unwrap();
    assert_eq!(dave.status, JobStatus::Cancelled);
    assert_eq!(
        jobs_of(&e.jobs, web1()).await,
        [
            "alert alice/mail e0 s0",
            "alert dave/mail e0 s0",
            "recovery alice/mail e0 s0"
        ]
    );
}

#[tokio::test]
async fn a_downtime_holds_the_alert_and_it_is_sent_when_the_downtime_ends() {
    let e = env().await;
    let dt = window(db1(), t(-10), t(60), "ops", "maintenance");
    e.store.schedule_downtime(dt, t(-10)).await.unwrap();
    result(&e.store, db1(), Status::Critical, 0).await;
    assert_eq!(
        planned(&e.planner, 0).await,
        4,
        "the alert held back; the downtime's start told"
    );
    assert_eq!(
        dispatch(&e, t(0)).await,
        [
            "downtime_started alice/hook",
            "downtime_started alice/mail",
            "downtime_started bob/hook",
            "downtime_started bob/mail"
        ]
    );
    assert_eq!(planned(&e.planner, 59).await, 0);
    e.store.apply_due_downtimes(t(60)).await.unwrap();
    assert_eq!(
        planned(&e.planner, 60).await,
        8,
        "the held-back alert and the downtime's end"
    );
    let sent = dispatch(&e, t(60)).await;
    assert_eq!(sent.len(), 8);
    assert_eq!(starting_with(&sent, "alert "), 4);
    assert_eq!(starting_with(&sent, "downtime_ended "), 4);
    // The escalation counts from the alert's opening at the downtime's end.
    assert_eq!(planned(&e.planner, 74).await, 0);
    assert_eq!(planned(&e.planner, 75).await, 2);
}

#[tokio::test]
async fn a_config_reload_changes_the_recipients() {
    let e = env().await;
    let mut model = e.config.notify.clone();
    model.checks.remove(&db1());
    e.planner.set_model(Arc::new(model));
    result(&e.store, db1(), Status::Critical, 0).await;
    assert_eq!(planned(&e.planner, 0).await, 0);
    e.planner.set_model(Arc::new(e.config.notify.clone()));
    assert_eq!(planned(&e.planner, 1).await, 4);
}

/// The worked example of docs/notifications.md, tick by tick (one tick a
/// minute: plan, then send what is due).
const EXAMPLE: &str = r#"
[[contact]]
name = "alice"
email = "alice@example.com"

[[contact]]
name = "bob"
email = "bob@example.com"
period = "office"

[[contact]]
name = "carol"
email = "carol@example.com"

[[timeperiod]]
name = "office"
timezone = "Europe/Berlin"
ranges = ["mon-fri 09:00-17:30"]

[[channel]]
name = "mail"
type = "log"

[[escalation]]
name = "lead"
  [[escalation.step]]
  after = "15m"
  contacts = ["carol"]

[[host]]
name = "db1"
failed_after = 1
recovers_after = 1
notify = { contacts = ["alice", "bob"], channels = ["mail"], escalation = "lead", repeat_every = "30m" }
"#;

async fn example_env() -> Env {
    env_of("example.toml", EXAMPLE).await
}

/// Ticks from minute `from` to `to` (inclusive); returns `+minute what` sent.
async fn ticks(e: &Env, from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    for m in from..=to {
        planned(&e.planner, m).await;
        for s in dispatch(e, t(m)).await {
            out.push(format!("+{m} {s}"));
        }
    }
    out
}

#[tokio::test]
async fn worked_example_of_the_docs() {
    let e = example_env().await;
    result(&e.store, db1(), Status::Critical, 0).await;
    assert_eq!(
        ticks(&e, 0, 19).await,
        ["+0 alert alice/mail", "+15 alert carol/mail"]
    );
    e.store
        .acknowledge(db1(), Ack::Normal, "alice", "looking", t(20))
        .await
        .unwrap();
    assert_eq!(
        ticks(&e, 20, 69).await,
        ["+20 acknowledge alice/mail", "+20 acknowledge carol/mail"],
        "no repeat at +30 or +60 once acknowledged"
    );
    result(&e.store, db1(), Status::Ok, 70).await;
    assert_eq!(
        ticks(&e, 70, 71).await,
        ["+70 recovery alice/mail", "+70 recovery carol/mail"]
    );
    // 08:00 UTC: bob's alert comes due, is cancelled; no recovery for him.
    assert_eq!(ticks(&e, 359, 361).await, Vec::<String>::new());
    let bob: Vec<JobStatus> = all_jobs(&e.jobs)
        .await
        .iter()
        .filter(|j| j.notification.recipient.name == "bob")
        .map(|j| j.status)
        .collect();
    assert_eq!(bob, [JobStatus::Cancelled]);
}

#[tokio::test]
async fn worked_example_with_a_downtime_and_no_acknowledgement() {
    let e = example_env().await;
    result(&e.store, db1(), Status::Critical, 0).await;
    let dt = window(db1(), t(5), t(35), "ops", "maintenance");
    let mut sent = ticks(&e, 0, 4).await;
    e.store.schedule_downtime(dt, t(5)).await.unwrap();
    sent.extend(ticks(&e, 5, 34).await);
    e.store.apply_due_downtimes(t(35)).await.unwrap();
    sent.extend(ticks(&e, 35, 80).await);
    // 30 minutes of downtime not counted: the escalation at +45, not +15;
    // the first repeat after 30 minutes of counted time, at +60. The
    // downtime's start and end go to the first recipients reachable then.
    assert_eq!(
        sent,
        [
            "+0 alert alice/mail",
            "+5 downtime_started alice/mail",
            "+35 downtime_ended alice/mail",
            "+45 alert carol/mail",
            "+60 alert alice/mail",
            "+60 alert carol/mail"
        ]
    );
}

/// Results of `flappy` flipping CRITICAL/OK a minute apart from minute 0
/// until it flaps; the minute after the last one.
async fn flap_until_flapping(e: &Env) -> i64 {
    let mut min = 0;
    while !e.store.state(flappy()).await.unwrap().flapping {
        let s = if min % 2 == 0 {
            Status::Critical
        } else {
            Status::Ok
        };
        result(&e.store, flappy(), s, min).await;
        min += 1;
        assert!(min < 100, "never started flapping");
    }
    min
}

fn flappy() -> CheckId {
    CheckId::host("default", "flappy")
}

#[tokio::test]
async fn flapping_started_and_stopped_are_told_once_each() {
    let e = env().await;
    // Alternate until the check flaps.
    let mut min = flap_until_flapping(&e).await;
    planned(&e.planner, min).await;
    assert_eq!(
        jobs_of(&e.jobs, flappy()).await,
        [
            "flapping_started alice/mail e0 s0",
            "flapping_started bob/mail e0 s0"
        ],
        "types = [\"flapping\"]: no alert, one flapping_started per recipient"
    );
    // Again, and by a fresh planner (a restarted node): nothing new.
    assert_eq!(planned(&e.planner, min).await, 0);
    let fresh = fresh_planner(&e);
    assert_eq!(planned(&fresh, min).await, 0);
    assert_eq!(
        dispatch(&e, t(min)).await,
        ["flapping_started alice/mail", "flapping_started bob/mail"]
    );
    // Steady OK until it stops flapping.
    while e.store.state(flappy()).await.unwrap().flapping {
        result(&e.store, flappy(), Status::Ok, min).await;
        min += 1;
        assert!(min < 200, "never stopped flapping");
    }
    assert_eq!(planned(&e.planner, min).await, 2);
    assert_eq!(planned(&fresh, min).await, 0);
    assert_eq!(
        dispatch(&e, t(min)).await,
        ["flapping_stopped alice/mail", "flapping_stopped bob/mail"]
    );
}

#[tokio::test]
async fn a_flapping_started_waiting_for_a_period_is_cancelled_once_flapping_stopped() {
    let e = env().await;
    let mut model = e.config.notify.clone();
    model.checks.get_mut(&flappy()).unwrap().rule.contacts = vec!["dave".into()];
    e.planner.set_model(Arc::new(model));
    let mut min = flap_until_flapping(&e).await;
    planned(&e.planner, min).await;
    assert_eq!(
        jobs_of(&e.jobs, flappy()).await,
        ["flapping_started dave/mail e0 s0"]
    );
    assert!(
        dispatch(&e, t(min)).await.is_empty(),
        "dave is off until 08:00 UTC"
    );
    while e.store.state(flappy()).await.unwrap().flapping {
        result(&e.store, flappy(), Status::Ok, min).await;
        min += 1;
    }
    assert!(min < 360);
    planned(&e.planner, min).await;
    // At 08:00 both come due: the start is stale (cancelled), the stop is sent.
    assert_eq!(dispatch(&e, t(360)).await, ["flapping_stopped dave/mail"]);
    let cancelled: Vec<_> = all_jobs(&e.jobs)
        .await
        .iter()
        .filter(|j| j.status == JobStatus::Cancelled)
        .map(|j| j.notification.kind.to_string())
        .collect();
    assert_eq!(cancelled, ["flapping_started"]);
}

#[tokio::test]
async fn downtime_started_and_ended_are_told_once_per_window_with_its_author() {
    let e = env().await;
    result(&e.store, web1(), Status::Critical, 0).await;
    planned(&e.planner, 0).await;
    assert_eq!(dispatch(&e, t(0)).await, ["alert alice/mail"]);
    let dt = window(web1(), t(10), t(40), "ops", "reboot");
    e.store.schedule_downtime(dt.clone(), t(10)).await.unwrap();
    assert_eq!(planned(&e.planner, 10).await, 2);
    // Again, and by a fresh planner (a restarted node): nothing new.
    assert_eq!(planned(&e.planner, 11).await, 0);
    let fresh = fresh_planner(&e);
    assert_eq!(planned(&fresh, 12).await, 0);
    // dave is off until 08:00 UTC (+360): his waits.
    assert_eq!(dispatch(&e, t(12)).await, ["downtime_started alice/mail"]);
    {
        let v = all_jobs(&e.jobs).await;
        let j = v
            .iter()
            .find(|j| j.notification.kind.to_string() == "downtime_started")
            .unwrap();
        assert_eq!(j.notification.author.as_deref(), Some("ops"));
        assert_eq!(j.notification.comment.as_deref(), Some("reboot"));
        assert_eq!(j.notification.at, t(10));
    }
    e.store.apply_due_downtimes(t(40)).await.unwrap();
    assert_eq!(planned(&e.planner, 40).await, 2);
    assert_eq!(planned(&fresh, 41).await, 0);
    assert_eq!(planned(&e.planner, 42).await, 0);
    assert_eq!(dispatch(&e, t(42)).await, ["downtime_ended alice/mail"]);
    assert_eq!(
        jobs_of(&e.jobs, web1()).await,
        [
            "alert alice/mail e0 s0",
            "alert dave/mail e0 s0",
            "downtime_ended alice/mail e0 s0",
            "downtime_ended dave/mail e0 s0",
            "downtime_started alice/mail e0 s0",
            "downtime_started dave/mail e0 s0"
        ]
    );
    // At 08:00 dave's start is stale (cancelled); his alert and end are sent.
    assert_eq!(
        dispatch(&e, t(360)).await,
        ["alert dave/mail", "downtime_ended dave/mail"]
    );
}

/// The store keeps ended windows, so a planner that did not run when a
/// window ended (every notifier down) still tells its end afterwards.
#[tokio::test]
async fn a_downtime_that_ended_while_no_planner_ran_still_has_its_end_told() {
    let e = env().await;
    result(&e.store, web1(), Status::Critical, 0).await;
    planned(&e.planner, 0).await;
    let dt = window(web1(), t(10), t(40), "ops", "reboot");
    e.store.schedule_downtime(dt, t(10)).await.unwrap();
    planned(&e.planner, 10).await;
    // Every notifier is down from +11 to +50; the window ends at +40.
    e.store.apply_due_downtimes(t(40)).await.unwrap();
    async fn ended(e: &Env) -> Vec<String> {
        let jobs = jobs_of(&e.jobs, web1()).await;
        jobs.into_iter()
            .filter(|j| j.starts_with("downtime_ended"))
            .collect()
    }
    assert!(ended(&e).await.is_empty());
    let fresh = fresh_planner(&e);
    planned(&fresh, 50).await;
    assert_eq!(
        ended(&e).await,
        [
            "downtime_ended alice/mail e0 s0",
            "downtime_ended dave/mail e0 s0"
        ]
    );
    {
        let v = all_jobs(&e.jobs).await;
        let j = v
            .iter()
            .find(|j| j.notification.kind.to_string() == "downtime_ended")
            .unwrap();
        assert_eq!(j.notification.at, t(40), "dated at the window's end");
    }
    // Planned once: later ticks (this planner or another) add none.
    planned(&fresh, 51).await;
    planned(&e.planner, 52).await;
    assert_eq!(ended(&e).await.len(), 2);
    assert_eq!(
        starting_with(&dispatch(&e, t(52)).await, "downtime_ended"),
        1
    );
}

#[tokio::test]
async fn a_cancelled_downtime_ends_it_and_types_filter_downtime_notifications() {
    let e = env().await;
    // flappy has types = ["flapping"]: no downtime notifications.
    let mut model = e.config.notify.clone();
    model.checks.get_mut(&web1()).unwrap().rule.types = vec![
        bergamot_core::notify::NotificationKind::DowntimeStarted,
        bergamot_core::notify::NotificationKind::DowntimeEnded,
    ];
    e.planner.set_model(Arc::new(model));
    for check in [web1(), flappy()] {
        let dt = window(check, t(0), t(600), "ops", "move");
        e.store.schedule_downtime(dt, t(0)).await.unwrap();
    }
    planned(&e.planner, 0).await;
    assert!(jobs_of(&e.jobs, flappy()).await.is_empty());
    assert_eq!(
        jobs_of(&e.jobs, web1()).await,
        [
            "downtime_started alice/mail e0 s0",
            "downtime_started dave/mail e0 s0"
        ]
    );
    assert_eq!(dispatch(&e, t(0)).await, ["downtime_started alice/mail"]);
    let id = e.store.downtimes(Some(web1()), t(1)).await.unwrap()[0].id;
    e.store.cancel_downtime(id, t(5)).await.unwrap();
    planned(&e.planner, 5).await;
    assert_eq!(dispatch(&e, t(5)).await, ["downtime_ended alice/mail"]);
    // dave's start, waiting for his period, is stale by then: cancelled.
    assert_eq!(dispatch(&e, t(360)).await, ["downtime_ended dave/mail"]);
}

/// Carol (escalation after 15 minutes) of db1's jobs.
async fn carol(e: &Env) -> usize {
    starting_with(&jobs_of(&e.jobs, db1()).await, "alert carol/")
}

#[tokio::test]
async fn a_restarted_planner_still_does_not_count_downtime_towards_escalations() {
    let e = env().await;
    result(&e.store, db1(), Status::Critical, 0).await;
    planned(&e.planner, 0).await;
    let dt = window(db1(), t(5), t(35), "ops", "maintenance");
    e.store.schedule_downtime(dt, t(5)).await.unwrap();
    planned(&e.planner, 6).await;
    e.store.apply_due_downtimes(t(35)).await.unwrap();
    // A planner that never saw the downtime (the old one was killed).
    let fresh = fresh_planner(&e);
    planned(&fresh, 36).await;
    assert_eq!(
        carol(&e).await,
        0,
        "36 minutes open, 30 of them in downtime"
    );
    planned(&fresh, 44).await;
    assert_eq!(carol(&e).await, 0);
    planned(&fresh, 45).await;
    assert_eq!(carol(&e).await, 2, "15 counted minutes at +45");
}

#[tokio::test]
async fn a_restarted_planner_still_does_not_count_acknowledged_time() {
    let e = env().await;
    result(&e.store, db1(), Status::Critical, 0).await;
    planned(&e.planner, 0).await;
    e.store
        .acknowledge(db1(), Ack::Sticky, "alice", "looking", t(5))
        .await
        .unwrap();
    planned(&e.planner, 5).await;
    e.store.remove_acknowledgement(db1(), t(25)).await.unwrap();
    let fresh = fresh_planner(&e);
    planned(&fresh, 26).await;
    assert_eq!(
        carol(&e).await,
        0,
        "26 minutes open, 20 of them acknowledged"
    );
    planned(&fresh, 35).await;
    assert_eq!(carol(&e).await, 2, "15 counted minutes at +35");
}

#[tokio::test]
async fn history_entries_carry_the_flags_after_each_change() {
    let e = env().await;
    result(&e.store, db1(), Status::Critical, 0).await;
    e.store
        .acknowledge(db1(), Ack::Normal, "alice", "", t(1))
        .await
        .unwrap();
    e.store.set_suppressed(db1(), true, t(2)).await.unwrap();
    let h = e
        .store
        .history(
            db1(),
            bergamot_core::store::HistoryPage {
                before_version: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let flags: Vec<(bool, bool, bool, bool)> = h
        .iter()
        .map(|h| (h.acknowledged, h.in_downtime, h.suppressed, h.flapping))
        .collect();
    assert_eq!(
        flags,
        [
            (true, false, true, false),
            (true, false, false, false),
            (false, false, false, false)
        ]
    );
}
