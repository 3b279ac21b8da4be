//! Table tests of the pure planner: who gets what, when.
//!
//! Fixture: alert opened at T0 = Thursday 2026-12-03 02:00 UTC (03:00 in
//! Berlin, outside office hours). Contacts alice, bob (team ops), carol
//! (escalation), dave (only reachable in `office`, mon-fri 09:00-17:30
//! Europe/Berlin = 08:00 UTC that day). Channels `mail` and `hook`.
//! The default rule: alice on `mail`, period `always`.
//!
//! A planned job is written `kind who/channel s<sequence> e<escalation>
//! +<minutes of not_before after T0>`.

use super::*;
use crate::model::CheckId;
use crate::notify::rules::{CheckNotify, Contact, EscalationStep, NotifyModel, NotifyRule};
use crate::notify::{TimePeriod, TimePeriods, WeeklyRange};
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-03T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(min: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(min)
}

fn check() -> CheckId {
    CheckId::service("default", "db1", "disk")
}

fn alert_id() -> Uuid {
    Uuid::from_u128(42)
}

fn model(rule: NotifyRule) -> NotifyModel {
    let mut m = NotifyModel::default();
    for name in ["alice", "bob", "carol", "dave"] {
        m.contacts.insert(
            name.into(),
            Contact {
                name: name.into(),
                email: Some(format!("{name}@example.com")),
                period: (name == "dave").then(|| "office".to_string()),
                ..Contact::default()
            },
        );
    }
    let mut periods = TimePeriods::default();
    periods.periods.insert(
        "office".into(),
        TimePeriod {
            name: "office".into(),
            timezone: chrono_tz::Europe::Berlin,
            ranges: vec![WeeklyRange::parse("mon-fri 09:00-17:30").unwrap()],
            exclude: vec![],
        },
    );
    m.periods = periods;
    m.checks.insert(
        check(),
        CheckNotify {
            check: "db1/disk".into(),
            host: "db1".into(),
            rule,
        },
    );
    m
}

fn base_rule() -> NotifyRule {
    NotifyRule {
        contacts: vec!["alice".into()],
        channels: vec!["mail".into()],
        period: "always".into(),
        ..NotifyRule::default()
    }
}

fn ev(min: i64, version: u64, status: Status) -> EventFact {
    EventFact {
        version,
        at: at(min),
        status,
        output: format!("{status} at +{min}"),
    }
}

fn base_facts() -> AlertFacts {
    AlertFacts {
        alert: AlertRecord {
            id: alert_id(),
            check_id: check(),
            opened_at: t0(),
            closed_at: None,
            status: Status::Critical,
            worst: Status::Critical,
        },
        opened: ev(0, 3, Status::Critical),
        realerts: vec![],
        closed: None,
        acknowledged: None,
        held_back: false,
        paused: vec![],
    }
}

fn close(f: &mut AlertFacts, min: i64) {
    f.alert.closed_at = Some(at(min));
    f.closed = Some(ev(min, 9, Status::Ok));
}

/// An existing job, as the planner would have made it.
fn job(
    kind: NotificationKind,
    who: &str,
    ch: &str,
    seq: u32,
    esc: u32,
    status: JobStatus,
) -> NotificationJob {
    NotificationJob {
        notification: Notification {
            id: job_id(alert_id(), kind, seq, esc, who, ch),
            kind,
            alert_id: Some(alert_id()),
            check_id: check(),
            check: "db1/disk".into(),
            host: "db1".into(),
            status: Status::Critical,
            output: String::new(),
            at: t0(),
            alert_opened_at: Some(t0()),
            escalation: esc,
            sequence: seq,
            author: None,
            comment: None,
            recipient: crate::notify::Recipient {
                name: who.into(),
                ..Default::default()
            },
            channel: ch.into(),
        },
        not_before: t0(),
        status,
        attempts: 0,
        last_error: None,
        created_at: t0(),
        finished_at: None,
    }
}

fn sent(who: &str, ch: &str) -> NotificationJob {
    job(NotificationKind::Alert, who, ch, 0, 0, JobStatus::Sent)
}

/// The first alert to `who` on `mail`, in `status`.
fn alert_job(who: &str, status: JobStatus) -> NotificationJob {
    job(NotificationKind::Alert, who, "mail", 0, 0, status)
}

/// The alert sent to `who` on `mail` at escalation step `esc`.
fn sent_at_step(who: &str, esc: u32) -> NotificationJob {
    job(
        NotificationKind::Alert,
        who,
        "mail",
        0,
        esc,
        JobStatus::Sent,
    )
}

/// A notification of `kind` sent to `who` on `mail`.
fn sent_kind(kind: NotificationKind, who: &str) -> NotificationJob {
    job(kind, who, "mail", 0, 0, JobStatus::Sent)
}

fn show(j: &NotificationJob) -> String {
    let n = &j.notification;
    format!(
        "{} {}/{} s{} e{} +{}",
        n.kind,
        n.recipient.name,
        n.channel,
        n.sequence,
        n.escalation,
        (j.not_before - t0()).num_minutes()
    )
}

fn step(after_min: u64, contacts: &[&str], renotify: bool) -> EscalationStep {
    EscalationStep {
        after: Duration::from_secs(after_min * 60),
        contacts: contacts.iter().map(|c| c.to_string()).collect(),
        renotify,
    }
}

struct Case {
    name: &'static str,
    rule: fn(&mut NotifyRule),
    facts: fn(&mut AlertFacts),
    existing: fn() -> Vec<NotificationJob>,
    now: i64,
    want: &'static [&'static str],
}

fn none() -> Vec<NotificationJob> {
    vec![]
}

fn keep(_: &mut NotifyRule) {}
fn same(_: &mut AlertFacts) {}

/// The alert reached alice on `mail`.
fn alice_told() -> Vec<NotificationJob> {
    vec![sent("alice", "mail")]
}

/// The alert and then its acknowledgement reached alice on `mail`.
fn alice_told_and_acknowledged() -> Vec<NotificationJob> {
    vec![
        sent("alice", "mail"),
        sent_kind(NotificationKind::Acknowledge, "alice"),
    ]
}

fn acknowledged_at_10(f: &mut AlertFacts) {
    f.acknowledged = Some(at(10));
}

/// One escalation step: carol, 15 minutes in, without renotify.
fn carol_after_15(r: &mut NotifyRule) {
    r.escalations = vec![step(15, &["carol"], false)];
}

/// The rule tells alice and bob on both `mail` and `hook`.
fn alice_and_bob_on_mail_and_hook(r: &mut NotifyRule) {
    r.contacts = vec!["alice".into(), "bob".into()];
    r.channels = vec!["mail".into(), "hook".into()];
}

fn repeat_every_30(r: &mut NotifyRule) {
    r.repeat_every = Some(Duration::from_secs(30 * 60));
}

/// Paused from minute `start` to minute `end` (`None`: still paused).
fn paused(start: i64, end: Option<i64>) -> Pause {
    Pause {
        start: at(start),
        end: end.map(at),
    }
}

const CASES: &[Case] = &[
    Case {
        name: "an alert goes to the contact on its channel at once",
        rule: keep,
        facts: same,
        existing: none,
        now: 0,
        want: &["alert alice/mail s0 e0 +0"],
    },
    Case {
        name: "every contact times every channel, one job each",
        rule: alice_and_bob_on_mail_and_hook,
        facts: same,
        existing: none,
        now: 0,
        want: &[
            "alert alice/hook s0 e0 +0",
            "alert alice/mail s0 e0 +0",
            "alert bob/hook s0 e0 +0",
            "alert bob/mail s0 e0 +0",
        ],
    },
    Case {
        name: "planning again plans nothing new",
        rule: keep,
        facts: same,
        existing: || vec![alert_job("alice", JobStatus::Pending)],
        now: 1,
        want: &[],
    },
    Case {
        name: "a sent alert is not planned again",
        rule: keep,
        facts: same,
        existing: alice_told,
        now: 5,
        want: &[],
    },
    Case {
        name: "the planner coming late still plans the alert, due now",
        rule: keep,
        facts: same,
        existing: none,
        now: 7,
        want: &["alert alice/mail s0 e0 +7"],
    },
    Case {
        name: "outside the rule's period the alert waits for it to open",
        rule: |r| r.period = "office".into(),
        facts: same,
        existing: none,
        now: 0,
        want: &["alert alice/mail s0 e0 +360"],
    },
    Case {
        name: "outside the contact's own period only that contact waits",
        rule: |r| r.contacts = vec!["alice".into(), "dave".into()],
        facts: same,
        existing: none,
        now: 0,
        want: &["alert alice/mail s0 e0 +0", "alert dave/mail s0 e0 +360"],
    },
    Case {
        name: "an unknown period never opens: nothing planned",
        rule: |r| r.period = "nope".into(),
        facts: same,
        existing: none,
        now: 0,
        want: &[],
    },
    Case {
        name: "types without alert: no alert",
        rule: |r| r.types = vec![NotificationKind::Recovery],
        facts: same,
        existing: none,
        now: 0,
        want: &[],
    },
    Case {
        name: "ignore_statuses drops a WARNING alert",
        rule: |r| r.ignore_statuses = vec![Status::Warning],
        facts: |f| f.opened.status = Status::Warning,
        existing: none,
        now: 0,
        want: &[],
    },
    Case {
        name: "ignore_statuses keeps a CRITICAL alert",
        rule: |r| r.ignore_statuses = vec![Status::Warning],
        facts: same,
        existing: none,
        now: 0,
        want: &["alert alice/mail s0 e0 +0"],
    },
    Case {
        name: "no escalation before its delay",
        rule: carol_after_15,
        facts: same,
        existing: alice_told,
        now: 14,
        want: &[],
    },
    Case {
        name: "the escalation after its delay adds its contacts",
        rule: carol_after_15,
        facts: same,
        existing: alice_told,
        now: 15,
        want: &["alert carol/mail s0 e1 +15"],
    },
    Case {
        name: "renotify tells the first recipients again at the step",
        rule: |r| r.escalations = vec![step(15, &["carol"], true)],
        facts: same,
        existing: alice_told,
        now: 20,
        want: &["alert alice/mail s0 e1 +20", "alert carol/mail s0 e1 +20"],
    },
    Case {
        name: "an escalation contact already told is not told again without renotify",
        rule: |r| r.escalations = vec![step(15, &["alice", "carol"], false)],
        facts: same,
        existing: alice_told,
        now: 15,
        want: &["alert carol/mail s0 e1 +15"],
    },
    Case {
        name: "two steps due at once: both planned, each contact once",
        rule: |r| {
            r.escalations = vec![
                step(15, &["bob"], false),
                step(30, &["carol", "bob"], false),
            ]
        },
        facts: same,
        existing: alice_told,
        now: 45,
        want: &["alert bob/mail s0 e1 +45", "alert carol/mail s0 e2 +45"],
    },
    Case {
        name: "time acknowledged does not count towards the escalation",
        rule: carol_after_15,
        facts: |f| f.paused = vec![paused(5, Some(15))],
        existing: alice_told,
        now: 20,
        want: &[],
    },
    Case {
        name: "the escalation comes once the paused time is made up",
        rule: carol_after_15,
        facts: |f| f.paused = vec![paused(5, Some(15))],
        existing: alice_told,
        now: 25,
        want: &["alert carol/mail s0 e1 +25"],
    },
    Case {
        name: "overlapping pauses (ack during downtime) count once",
        rule: carol_after_15,
        facts: |f| f.paused = vec![paused(5, Some(15)), paused(10, Some(20))],
        existing: alice_told,
        now: 30,
        want: &["alert carol/mail s0 e1 +30"],
    },
    Case {
        name: "an acknowledged alert escalates no more",
        rule: carol_after_15,
        facts: acknowledged_at_10,
        existing: alice_told_and_acknowledged,
        now: 60,
        want: &[],
    },
    Case {
        name: "acknowledging tells everyone told of the alert",
        rule: |r| r.contacts = vec!["alice".into(), "bob".into()],
        facts: acknowledged_at_10,
        existing: || vec![sent("alice", "mail"), sent("bob", "mail")],
        now: 10,
        want: &[
            "acknowledge alice/mail s0 e0 +10",
            "acknowledge bob/mail s0 e0 +10",
        ],
    },
    Case {
        name: "an acknowledgement is not sent to whom the alert has not reached yet",
        rule: |r| r.contacts = vec!["alice".into(), "dave".into()],
        facts: acknowledged_at_10,
        existing: || vec![sent("alice", "mail"), alert_job("dave", JobStatus::Pending)],
        now: 10,
        want: &["acknowledge alice/mail s0 e0 +10"],
    },
    Case {
        name: "types without acknowledge: no acknowledgement",
        rule: |r| r.types = vec![NotificationKind::Alert, NotificationKind::Recovery],
        facts: acknowledged_at_10,
        existing: alice_told,
        now: 10,
        want: &[],
    },
    Case {
        name: "a repeat after repeat_every to everyone told",
        rule: repeat_every_30,
        facts: same,
        existing: alice_told,
        now: 31,
        want: &["alert alice/mail s1 e0 +31"],
    },
    Case {
        name: "no repeat before repeat_every",
        rule: repeat_every_30,
        facts: same,
        existing: alice_told,
        now: 29,
        want: &[],
    },
    Case {
        name: "a planner down for hours plans only the latest repeat",
        rule: repeat_every_30,
        facts: same,
        existing: alice_told,
        now: 185,
        want: &["alert alice/mail s6 e0 +185"],
    },
    Case {
        name: "no repeat to whom the alert has not reached yet",
        rule: |r| {
            r.contacts = vec!["alice".into(), "dave".into()];
            r.repeat_every = Some(Duration::from_secs(30 * 60));
        },
        facts: same,
        existing: || vec![sent("alice", "mail"), alert_job("dave", JobStatus::Pending)],
        now: 60,
        want: &["alert alice/mail s2 e0 +60"],
    },
    Case {
        name: "an acknowledged alert repeats no more",
        rule: repeat_every_30,
        facts: acknowledged_at_10,
        existing: alice_told_and_acknowledged,
        now: 90,
        want: &[],
    },
    Case {
        name: "repeats reach escalated recipients at their step",
        rule: repeat_every_30,
        facts: same,
        existing: || vec![sent("alice", "mail"), sent_at_step("carol", 1)],
        now: 30,
        want: &["alert alice/mail s1 e0 +30", "alert carol/mail s1 e1 +30"],
    },
    Case {
        name: "held back (downtime started after the alert): no repeat, no escalation",
        rule: |r| {
            r.repeat_every = Some(Duration::from_secs(30 * 60));
            r.escalations = vec![step(15, &["carol"], false)];
        },
        facts: |f| {
            f.held_back = true;
            f.paused = vec![paused(5, None)];
        },
        existing: alice_told,
        now: 120,
        want: &[],
    },
    Case {
        name: "after the downtime, the clock resumes without the downtime",
        rule: carol_after_15,
        facts: |f| f.paused = vec![paused(5, Some(65))],
        existing: alice_told,
        now: 75,
        want: &["alert carol/mail s0 e1 +75"],
    },
    Case {
        name: "an alert held back by downtime when planned waits for the hold to end",
        rule: keep,
        facts: |f| f.held_back = true,
        existing: none,
        now: 1,
        want: &[],
    },
    Case {
        name: "the alert the downtime held back, emitted at its end, is sent then",
        rule: keep,
        facts: |f| {
            f.alert.opened_at = at(60);
            f.opened = ev(60, 5, Status::Critical);
        },
        existing: none,
        now: 60,
        want: &["alert alice/mail s0 e0 +60"],
    },
    Case {
        name: "a realert goes to everyone told, numbered by its history version",
        rule: |r| r.contacts = vec!["alice".into(), "bob".into()],
        facts: |f| f.realerts = vec![ev(10, 5, Status::Unknown)],
        existing: || vec![sent("alice", "mail"), sent("bob", "mail")],
        now: 10,
        want: &["realert alice/mail s5 e0 +10", "realert bob/mail s5 e0 +10"],
    },
    Case {
        name: "a realert of an ignored status is not sent",
        rule: |r| r.ignore_statuses = vec![Status::Unknown],
        facts: |f| f.realerts = vec![ev(10, 5, Status::Unknown)],
        existing: alice_told,
        now: 10,
        want: &[],
    },
    Case {
        name: "recovery goes to everyone the alert reached, escalations included",
        rule: carol_after_15,
        facts: |f| close(f, 40),
        existing: || vec![sent("alice", "mail"), sent_at_step("carol", 1)],
        now: 40,
        want: &[
            "recovery alice/mail s0 e0 +40",
            "recovery carol/mail s0 e0 +40",
        ],
    },
    Case {
        name: "recovery reaches a recipient whose alert is being sent right now",
        rule: keep,
        facts: |f| close(f, 3),
        existing: || vec![alert_job("alice", JobStatus::Sending)],
        now: 3,
        want: &["recovery alice/mail s0 e0 +3"],
    },
    Case {
        name: "no recovery to whom the alert never reached (waiting, then cancelled)",
        rule: |r| r.contacts = vec!["alice".into(), "dave".into()],
        facts: |f| close(f, 30),
        existing: || {
            vec![
                sent("alice", "mail"),
                alert_job("dave", JobStatus::Cancelled),
            ]
        },
        now: 30,
        want: &["recovery alice/mail s0 e0 +30"],
    },
    Case {
        name: "no recovery after a failed alert",
        rule: keep,
        facts: |f| close(f, 30),
        existing: || vec![alert_job("alice", JobStatus::Failed)],
        now: 30,
        want: &[],
    },
    Case {
        name: "a closed alert plans no alert, repeat or escalation",
        rule: |r| {
            r.repeat_every = Some(Duration::from_secs(60));
            r.escalations = vec![step(1, &["carol"], false)];
        },
        facts: |f| close(f, 30),
        existing: none,
        now: 30,
        want: &[],
    },
    Case {
        name: "a recovery outside the contact's period waits for it",
        rule: |r| r.contacts = vec!["dave".into()],
        // Closed at 18:40 UTC (19:40 Berlin): waits for Friday 09:00 Berlin.
        facts: |f| close(f, 1000),
        existing: || vec![sent("dave", "mail")],
        now: 1000,
        want: &["recovery dave/mail s0 e0 +1800"],
    },
    Case {
        name: "a recovery planned twice is planned once",
        rule: keep,
        facts: |f| close(f, 30),
        existing: || {
            vec![
                sent("alice", "mail"),
                sent_kind(NotificationKind::Recovery, "alice"),
            ]
        },
        now: 31,
        want: &[],
    },
    Case {
        name: "types without recovery: no recovery",
        rule: |r| r.types = vec![NotificationKind::Alert],
        facts: |f| close(f, 30),
        existing: alice_told,
        now: 30,
        want: &[],
    },
    Case {
        name: "an escalation outside the escalated contact's period waits",
        rule: |r| r.escalations = vec![step(15, &["dave"], false)],
        facts: same,
        existing: alice_told,
        now: 15,
        want: &["alert dave/mail s0 e1 +360"],
    },
    Case {
        name: "a check without a rule plans nothing",
        rule: keep,
        facts: |f| f.alert.check_id = CheckId::host("default", "other"),
        existing: none,
        now: 0,
        want: &[],
    },
];

/// Checks one table case: `planner` given `existing` plans exactly `want`
/// (in any order), with distinct ids, and planning again with what it
/// planned adds nothing. What is wrong goes onto `failures`.
fn check_case(
    name: &str,
    want: &[&str],
    existing: Vec<NotificationJob>,
    planner: impl Fn(&[NotificationJob]) -> Vec<NotificationJob>,
    failures: &mut Vec<String>,
) {
    let jobs = planner(&existing);
    let mut got: Vec<String> = jobs.iter().map(show).collect();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    if got != want {
        failures.push(format!("{name}:\n   got  {got:?}\n   want {want:?}"));
    }
    // Planning again with what was planned is a no-op.
    let mut all = existing;
    all.extend(jobs.iter().cloned());
    let again = planner(&all);
    if !again.is_empty() {
        failures.push(format!(
            "{name}: planning again added {:?}",
            again.iter().map(show).collect::<Vec<_>>()
        ));
    }
    let mut ids: Vec<Uuid> = jobs.iter().map(|j| j.notification.id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != jobs.len() {
        failures.push(format!("{name}: duplicate ids"));
    }
}

fn assert_no_failures(failures: &[String], cases: usize) {
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn planner_table() {
    assert!(CASES.len() >= 30, "{} cases", CASES.len());
    let mut failures = Vec::new();
    for case in CASES {
        let mut rule = base_rule();
        (case.rule)(&mut rule);
        let m = model(rule);
        let mut facts = base_facts();
        (case.facts)(&mut facts);
        check_case(
            case.name,
            case.want,
            (case.existing)(),
            |existing| plan(&m, &facts, existing, at(case.now)),
            &mut failures,
        );
    }
    assert_no_failures(&failures, CASES.len());
}

#[test]
fn ids_are_deterministic_and_distinct() {
    let a = job_id(alert_id(), NotificationKind::Alert, 0, 0, "alice", "mail");
    assert_eq!(
        a,
        job_id(alert_id(), NotificationKind::Alert, 0, 0, "alice", "mail")
    );
    let others = [
        job_id(
            Uuid::from_u128(43),
            NotificationKind::Alert,
            0,
            0,
            "alice",
            "mail",
        ),
        job_id(
            alert_id(),
            NotificationKind::Recovery,
            0,
            0,
            "alice",
            "mail",
        ),
        job_id(alert_id(), NotificationKind::Alert, 1, 0, "alice", "mail"),
        job_id(alert_id(), NotificationKind::Alert, 0, 1, "alice", "mail"),
        job_id(alert_id(), NotificationKind::Alert, 0, 0, "bob", "mail"),
        job_id(alert_id(), NotificationKind::Alert, 0, 0, "alice", "hook"),
    ];
    for o in others {
        assert_ne!(a, o);
    }
}

#[test]
fn jobs_carry_the_event_and_the_recipient() {
    let mut rule = base_rule();
    rule.channels = vec!["hook".into()];
    let mut m = model(rule);
    if let Some(c) = m.contacts.get_mut("alice") {
        c.channels.insert(
            "hook".into(),
            [("url".to_string(), "http://x/alice".to_string())].into(),
        );
    }
    let jobs = plan(&m, &base_facts(), &[], t0());
    assert_eq!(jobs.len(), 1);
    let n = &jobs[0].notification;
    assert_eq!(n.check, "db1/disk");
    assert_eq!(n.host, "db1");
    assert_eq!(n.status, Status::Critical);
    assert_eq!(n.output, "CRITICAL at +0");
    assert_eq!(n.alert_opened_at, Some(t0()));
    assert_eq!(n.recipient.email.as_deref(), Some("alice@example.com"));
    assert_eq!(
        n.recipient.settings.get("url").map(String::as_str),
        Some("http://x/alice")
    );
    assert_eq!(jobs[0].status, JobStatus::Pending);
}

#[test]
fn still_relevant_table() {
    use NotificationKind::*;
    let st = |open, acknowledged, held_back| AlertNow {
        open,
        acknowledged,
        held_back,
        flapping: false,
        in_downtime: false,
    };
    let open = st(true, false, false);
    let closed = st(false, false, false);
    let acked = st(true, true, false);
    let held = st(true, false, true);
    let closed_held = st(false, false, true);
    // (case, kind, repeat, escalation step, the alert now, still sent)
    let cases = [
        ("open alert", Alert, 0, 0, open, true),
        ("closed before due", Alert, 0, 0, closed, false),
        ("acked before due", Alert, 0, 0, acked, false),
        ("first alert while held back", Alert, 0, 0, held, true),
        ("repeat while held back", Alert, 2, 0, held, false),
        ("escalation while held back", Alert, 0, 1, held, false),
        ("realert after close", Realert, 5, 0, closed, false),
        ("ack of an open alert", Acknowledge, 0, 0, acked, true),
        ("ack after close", Acknowledge, 0, 0, closed, false),
        ("recovery", Recovery, 0, 0, closed_held, true),
    ];
    for (name, kind, seq, esc, now, send) in cases {
        let j = job(kind, "alice", "mail", seq, esc, JobStatus::Sending);
        assert_eq!(still_relevant(&j, &now).is_ok(), send, "{name}");
    }
}

#[test]
fn active_time_minus_pauses() {
    let p = [paused(10, Some(20)), paused(30, None)];
    assert_eq!(
        active_elapsed(t0(), &p, at(25)),
        chrono::Duration::minutes(15)
    );
    assert_eq!(
        active_elapsed(t0(), &p, at(40)),
        chrono::Duration::minutes(20)
    );
    // A pause before the opening does not count.
    let before = [paused(-30, Some(5))];
    assert_eq!(
        active_elapsed(t0(), &before, at(10)),
        chrono::Duration::minutes(5)
    );
    assert_eq!(active_elapsed(t0(), &[], at(-1)), chrono::Duration::zero());
}

// Check-level events (flapping, downtime): `plan_check_events`.

fn cev(kind: NotificationKind, min: i64, version: u64) -> CheckEvent {
    CheckEvent {
        kind,
        key: event_key(&check(), version, at(min)),
        fact: ev(min, version, Status::Critical),
        author: None,
        alert: None,
    }
}

fn ejob(kind: NotificationKind, min: i64, version: u64, who: &str, ch: &str) -> NotificationJob {
    let mut j = job(kind, who, ch, 0, 0, JobStatus::Sent);
    j.notification.id = job_id(event_key(&check(), version, at(min)), kind, 0, 0, who, ch);
    j
}

/// Flapping started at +5 (version 4).
fn flapping_started() -> Vec<CheckEvent> {
    vec![cev(NotificationKind::FlappingStarted, 5, 4)]
}

/// Flapping started at +5 (version 4) and stopped at +40 (version 9).
fn flapped() -> Vec<CheckEvent> {
    vec![
        cev(NotificationKind::FlappingStarted, 5, 4),
        cev(NotificationKind::FlappingStopped, 40, 9),
    ]
}

struct EventCase {
    name: &'static str,
    rule: fn(&mut NotifyRule),
    events: fn() -> Vec<CheckEvent>,
    existing: fn() -> Vec<NotificationJob>,
    now: i64,
    want: &'static [&'static str],
}

const EVENT_CASES: &[EventCase] = &[
    EventCase {
        name: "flapping started goes to the rule's contacts on every channel",
        rule: alice_and_bob_on_mail_and_hook,
        events: flapping_started,
        existing: none,
        now: 5,
        want: &[
            "flapping_started alice/hook s0 e0 +5",
            "flapping_started alice/mail s0 e0 +5",
            "flapping_started bob/hook s0 e0 +5",
            "flapping_started bob/mail s0 e0 +5",
        ],
    },
    EventCase {
        name: "flapping started then stopped: one of each",
        rule: keep,
        events: flapped,
        existing: none,
        now: 40,
        want: &[
            "flapping_started alice/mail s0 e0 +40",
            "flapping_stopped alice/mail s0 e0 +40",
        ],
    },
    EventCase {
        name: "flapping twice: two events, two notifications",
        rule: keep,
        events: || {
            vec![
                cev(NotificationKind::FlappingStarted, 5, 4),
                cev(NotificationKind::FlappingStarted, 50, 12),
            ]
        },
        existing: || {
            vec![ejob(
                NotificationKind::FlappingStarted,
                5,
                4,
                "alice",
                "mail",
            )]
        },
        now: 50,
        want: &["flapping_started alice/mail s0 e0 +50"],
    },
    EventCase {
        name: "an event already planned is not planned again",
        rule: keep,
        events: || vec![cev(NotificationKind::FlappingStopped, 40, 9)],
        existing: || {
            vec![ejob(
                NotificationKind::FlappingStopped,
                40,
                9,
                "alice",
                "mail",
            )]
        },
        now: 41,
        want: &[],
    },
    EventCase {
        name: "types = [\"flapping\"] sends flapping events",
        rule: |r| {
            r.types = vec![
                NotificationKind::FlappingStarted,
                NotificationKind::FlappingStopped,
            ]
        },
        events: flapping_started,
        existing: none,
        now: 5,
        want: &["flapping_started alice/mail s0 e0 +5"],
    },
    EventCase {
        name: "types without flapping: no flapping notification",
        rule: |r| r.types = vec![NotificationKind::Alert, NotificationKind::Recovery],
        events: flapped,
        existing: none,
        now: 40,
        want: &[],
    },
    EventCase {
        name: "types = [\"downtime\"] sends downtime events, not flapping ones",
        rule: |r| {
            r.types = vec![
                NotificationKind::DowntimeStarted,
                NotificationKind::DowntimeEnded,
            ]
        },
        events: || {
            vec![
                cev(NotificationKind::FlappingStarted, 5, 4),
                cev(NotificationKind::DowntimeStarted, 10, 5),
                cev(NotificationKind::DowntimeEnded, 70, 8),
            ]
        },
        existing: none,
        now: 70,
        want: &[
            "downtime_ended alice/mail s0 e0 +70",
            "downtime_started alice/mail s0 e0 +70",
        ],
    },
    EventCase {
        name: "a flapping event outside the contact's period waits for it",
        rule: |r| r.contacts = vec!["alice".into(), "dave".into()],
        events: flapping_started,
        existing: none,
        now: 5,
        want: &[
            "flapping_started alice/mail s0 e0 +5",
            "flapping_started dave/mail s0 e0 +360",
        ],
    },
    EventCase {
        name: "escalation contacts are not told of flapping",
        rule: |r| r.escalations = vec![step(0, &["carol"], false)],
        events: flapping_started,
        existing: none,
        now: 5,
        want: &["flapping_started alice/mail s0 e0 +5"],
    },
    EventCase {
        name: "ignore_statuses does not drop flapping events",
        rule: |r| r.ignore_statuses = vec![Status::Critical],
        events: flapping_started,
        existing: none,
        now: 5,
        want: &["flapping_started alice/mail s0 e0 +5"],
    },
];

#[test]
fn check_events_table() {
    let mut failures = Vec::new();
    for case in EVENT_CASES {
        let mut rule = base_rule();
        (case.rule)(&mut rule);
        let m = model(rule);
        let events = (case.events)();
        check_case(
            case.name,
            case.want,
            (case.existing)(),
            |existing| plan_check_events(&m, &check(), &events, existing, at(case.now)),
            &mut failures,
        );
    }
    // A check without a rule plans nothing.
    let m = model(base_rule());
    let other = CheckId::host("default", "other");
    let evs = [cev(NotificationKind::FlappingStarted, 5, 4)];
    assert!(plan_check_events(&m, &other, &evs, &[], at(5)).is_empty());
    assert_no_failures(&failures, EVENT_CASES.len());
}

#[test]
fn check_event_ids_depend_on_the_event() {
    let a = event_key(&check(), 4, at(5));
    assert_eq!(a, event_key(&check(), 4, at(5)));
    assert_ne!(a, event_key(&check(), 5, at(5)));
    assert_ne!(a, event_key(&check(), 4, at(6)));
    assert_ne!(a, event_key(&CheckId::host("default", "db1"), 4, at(5)));
}

#[test]
fn check_events_relevance() {
    use NotificationKind::*;
    let j = |k| job(k, "alice", "mail", 0, 0, JobStatus::Sending);
    let st = |flapping, in_downtime| AlertNow {
        open: false,
        acknowledged: false,
        held_back: flapping || in_downtime,
        flapping,
        in_downtime,
    };
    assert!(still_relevant(&j(FlappingStarted), &st(true, false)).is_ok());
    assert!(still_relevant(&j(FlappingStarted), &st(false, false)).is_err());
    assert!(still_relevant(&j(FlappingStopped), &st(false, false)).is_ok());
    assert!(still_relevant(&j(FlappingStopped), &st(true, false)).is_err());
    assert!(still_relevant(&j(DowntimeStarted), &st(false, true)).is_ok());
    assert!(still_relevant(&j(DowntimeStarted), &st(false, false)).is_err());
    assert!(still_relevant(&j(DowntimeEnded), &st(false, false)).is_ok());
    assert!(still_relevant(&j(DowntimeEnded), &st(false, true)).is_err());
}
