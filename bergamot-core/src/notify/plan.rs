//! The pure planner: what is known about one alert + the notification model
//! + the jobs already planned for it + now -> the jobs to add.
//!
//! Nothing here does I/O. Every job id is a UUIDv5 of (alert, kind,
//! sequence, escalation step, recipient, channel), so planning the same
//! alert again yields the same ids and [`NotificationStore::enqueue`]
//! ignores them: re-planning from durable state on every tick is a no-op
//! unless something new is due, and a crash anywhere loses nothing.
//!
//! [`NotificationStore::enqueue`]: super::NotificationStore::enqueue

use super::rules::{NotifyModel, NotifyRule};
use super::{JobStatus, Notification, NotificationJob, NotificationKind};
use crate::model::Status;
use crate::state::{Ack, CheckState};
use crate::store::AlertRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The namespace of notification job ids.
const JOB_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_0c3e_92b4_4d7a_b5e1_08c4_7f23_91de);

/// The deterministic id of a job.
pub(crate) fn job_id(
    alert: Uuid,
    kind: NotificationKind,
    sequence: u32,
    escalation: u32,
    recipient: &str,
    channel: &str,
) -> Uuid {
    // Names cannot contain control characters (the config rejects them),
    // so NUL separates the parts unambiguously.
    let key = format!(
        "{alert}\0{}\0{sequence}\0{escalation}\0{recipient}\0{channel}",
        kind.as_str()
    );
    Uuid::new_v5(&JOB_NAMESPACE, key.as_bytes())
}

/// One event of an alert, from the check's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventFact {
    /// The history version of the change (realerts are numbered by it).
    pub(crate) version: u64,
    /// When it happened.
    pub(crate) at: DateTime<Utc>,
    /// The status after.
    pub(crate) status: Status,
    /// The output after.
    pub(crate) output: String,
}

/// A span of the alert's life that does not count towards escalations and
/// repeats: acknowledged, in downtime, suppressed or flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pause {
    /// Start.
    pub(crate) start: DateTime<Utc>,
    /// End (`None`: still going on).
    pub(crate) end: Option<DateTime<Utc>>,
}

/// What is known about one alert, read from durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertFacts {
    /// The alert record (id, check, opened and closed).
    pub(crate) alert: AlertRecord,
    /// The opening: status and output at the alert event.
    pub(crate) opened: EventFact,
    /// Realerts while open, oldest first.
    pub(crate) realerts: Vec<EventFact>,
    /// The recovery, once closed.
    pub(crate) closed: Option<EventFact>,
    /// Since when the alert is acknowledged, if it is now.
    pub(crate) acknowledged: Option<DateTime<Utc>>,
    /// Whether the check's notifications are held back now (downtime,
    /// suppression, flapping).
    pub(crate) held_back: bool,
    /// Spans not counted towards escalations and repeats.
    pub(crate) paused: Vec<Pause>,
}

/// The alert's current state, as [`still_relevant`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AlertNow {
    /// The alert is the check's open alert.
    pub(crate) open: bool,
    /// The check is acknowledged.
    pub(crate) acknowledged: bool,
    /// The check's notifications are held back (downtime, suppression, flapping).
    pub(crate) held_back: bool,
    /// The check is flapping.
    #[serde(default)]
    pub(crate) flapping: bool,
    /// The check is in a downtime.
    #[serde(default)]
    pub(crate) in_downtime: bool,
}

impl AlertNow {
    /// The state of alert `alert` given its check's current state.
    pub(crate) fn of(alert: Uuid, state: &CheckState) -> AlertNow {
        AlertNow {
            open: state.current_alert.is_some_and(|a| a.id == alert),
            acknowledged: state.acknowledged != Ack::None,
            held_back: state.in_downtime || state.suppressed || state.flapping,
            flapping: state.flapping,
            in_downtime: state.in_downtime,
        }
    }
}

/// Whether a due job should still be sent, given its alert's current state;
/// `Err(reason)` means cancel it ([`super::SendOutcome::Cancelled`]).
///
/// - alert, realert (first notifications): while the alert is open and not
///   acknowledged;
/// - repeats and escalations (`sequence > 0` or `escalation > 0` of an alert):
///   also not while held back;
/// - acknowledge: while the alert is open;
/// - flapping started / stopped: while the check is still / not again
///   flapping; downtime started / ended: while the check is still / not
///   again in downtime (whatever `open` says: they need no alert);
/// - recovery, test and the rest: always.
pub(crate) fn still_relevant(job: &NotificationJob, now: &AlertNow) -> Result<(), String> {
    let n = &job.notification;
    match n.kind {
        NotificationKind::Alert | NotificationKind::Realert => {
            if !now.open {
                return Err("the alert closed before this was due".into());
            }
            if now.acknowledged {
                return Err("the alert was acknowledged".into());
            }
            let follow_up =
                n.kind == NotificationKind::Alert && (n.sequence > 0 || n.escalation > 0);
            if follow_up && now.held_back {
                return Err(
                    "the check's notifications are held back (downtime, suppression or flapping)"
                        .into(),
                );
            }
            Ok(())
        }
        NotificationKind::Acknowledge => {
            if now.open {
                Ok(())
            } else {
                Err("the alert closed before this was due".into())
            }
        }
        NotificationKind::FlappingStarted if !now.flapping => {
            Err("the check stopped flapping before this was due".into())
        }
        NotificationKind::FlappingStopped if now.flapping => {
            Err("the check is flapping again".into())
        }
        NotificationKind::DowntimeStarted if !now.in_downtime => {
            Err("the downtime ended before this was due".into())
        }
        NotificationKind::DowntimeEnded if now.in_downtime => {
            Err("the check is in a downtime again".into())
        }
        _ => Ok(()),
    }
}

/// The time of an alert's life that counts towards escalations and repeats:
/// from its opening to `now`, minus the paused spans.
pub(crate) fn active_elapsed(
    opened: DateTime<Utc>,
    paused: &[Pause],
    now: DateTime<Utc>,
) -> chrono::Duration {
    if now <= opened {
        return chrono::Duration::zero();
    }
    // Merge the spans (they may overlap: acknowledged while in downtime).
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = paused
        .iter()
        .map(|p| (p.start.max(opened), p.end.unwrap_or(now).min(now)))
        .filter(|(s, e)| s < e)
        .collect();
    spans.sort();
    let mut total = chrono::Duration::zero();
    let mut cur: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (s, e) in spans {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    (now - opened) - total
}

/// Plans the jobs to add for one alert: see docs/notifications.md.
///
/// `existing` are the jobs already planned for this alert (any status);
/// the result never contains one of their ids, nor the same id twice.
pub(crate) fn plan(
    model: &NotifyModel,
    facts: &AlertFacts,
    existing: &[NotificationJob],
    now: DateTime<Utc>,
) -> Vec<NotificationJob> {
    let Some(cn) = model.checks.get(&facts.alert.check_id) else {
        return Vec::new();
    };
    let mut p = Plan {
        model,
        rule: &cn.rule,
        facts,
        check: &cn.check,
        host: &cn.host,
        now,
        known: existing.iter().map(|j| j.notification.id).collect(),
        out: Vec::new(),
    };
    // Who the alert reached, and at which escalation step: planned (pending,
    // sending, sent) and told (sending, sent).
    let mut planned: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut told: BTreeMap<(String, String), u32> = BTreeMap::new();
    for j in existing {
        let n = &j.notification;
        if !matches!(n.kind, NotificationKind::Alert | NotificationKind::Realert) {
            continue;
        }
        let key = (n.recipient.name.clone(), n.channel.clone());
        if matches!(
            j.status,
            JobStatus::Pending | JobStatus::Sending | JobStatus::Sent
        ) {
            let e = planned.entry(key.clone()).or_insert(n.escalation);
            *e = (*e).min(n.escalation);
        }
        if matches!(j.status, JobStatus::Sending | JobStatus::Sent) {
            let e = told.entry(key).or_insert(n.escalation);
            *e = (*e).min(n.escalation);
        }
    }
    let rule = p.rule;
    let open = facts.closed.is_none() && facts.alert.closed_at.is_none();
    let quiet = facts.acknowledged.is_some() || facts.held_back;

    if open && !quiet {
        // The first notification, to the first recipients.
        if rule.sends(NotificationKind::Alert)
            && !rule.ignore_statuses.contains(&facts.opened.status)
        {
            for c in &rule.contacts {
                for ch in &rule.channels {
                    planned.entry((c.clone(), ch.clone())).or_insert(0);
                    p.add(
                        NotificationKind::Alert,
                        0,
                        0,
                        c,
                        ch,
                        &facts.opened,
                        facts.opened.at,
                    );
                }
            }
        }
        let active = active_elapsed(facts.opened.at, &facts.paused, now);
        // Escalations whose delay has passed.
        if rule.sends(NotificationKind::Alert)
            && !rule.ignore_statuses.contains(&current(facts).status)
        {
            for (i, step) in rule.escalations.iter().enumerate() {
                let Ok(after) = chrono::Duration::from_std(step.after) else {
                    continue;
                };
                if active < after {
                    break;
                }
                let k = u32::try_from(i + 1).unwrap_or(u32::MAX);
                let before: Vec<(String, String)> = planned
                    .iter()
                    .filter(|(_, s)| **s < k)
                    .map(|(key, _)| key.clone())
                    .collect();
                for c in &step.contacts {
                    for ch in &rule.channels {
                        let key = (c.clone(), ch.clone());
                        if planned.contains_key(&key) && !step.renotify {
                            continue;
                        }
                        planned.entry(key).or_insert(k);
                        p.add(NotificationKind::Alert, 0, k, c, ch, current(facts), now);
                    }
                }
                if step.renotify {
                    for (c, ch) in before {
                        p.add(NotificationKind::Alert, 0, k, &c, &ch, current(facts), now);
                    }
                }
            }
        }
        // The latest repeat due, to everyone told so far.
        if let Some(every) = rule
            .repeat_every
            .and_then(|d| chrono::Duration::from_std(d).ok())
        {
            let ms = every.num_milliseconds();
            if ms > 0
                && rule.sends(NotificationKind::Alert)
                && !rule.ignore_statuses.contains(&current(facts).status)
            {
                let n = u32::try_from(active.num_milliseconds() / ms).unwrap_or(u32::MAX);
                if n >= 1 {
                    for ((c, ch), step) in &told {
                        p.add(
                            NotificationKind::Alert,
                            n,
                            *step,
                            c,
                            ch,
                            current(facts),
                            now,
                        );
                    }
                }
            }
        }
    }
    if open && facts.acknowledged.is_none() && rule.sends(NotificationKind::Realert) {
        // Realerts go to everyone told of the alert.
        for ev in &facts.realerts {
            if rule.ignore_statuses.contains(&ev.status) {
                continue;
            }
            let seq = u32::try_from(ev.version).unwrap_or(u32::MAX);
            for ((c, ch), step) in &told {
                p.add(NotificationKind::Realert, seq, *step, c, ch, ev, ev.at);
            }
        }
    }
    if let (true, Some(at)) = (open, facts.acknowledged) {
        if rule.sends(NotificationKind::Acknowledge) {
            let ev = EventFact {
                at,
                ..current(facts).clone()
            };
            for (c, ch) in told.keys() {
                p.add(NotificationKind::Acknowledge, 0, 0, c, ch, &ev, at);
            }
        }
    }
    if let Some(closed) = &facts.closed {
        if rule.sends(NotificationKind::Recovery) {
            for (c, ch) in told.keys() {
                p.add(NotificationKind::Recovery, 0, 0, c, ch, closed, closed.at);
            }
        }
    }
    p.out
}

/// A check-level event from the check's history: flapping started or
/// stopped, downtime started or ended. Unlike alerts, these are told to the
/// rule's first recipients whether or not an alert is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckEvent {
    /// [`NotificationKind::FlappingStarted`], [`NotificationKind::FlappingStopped`],
    /// [`NotificationKind::DowntimeStarted`] or [`NotificationKind::DowntimeEnded`].
    pub(crate) kind: NotificationKind,
    /// The event's key, in the alert id's place in the job id: `event_key`
    /// of a history entry, or a downtime's id.
    pub(crate) key: Uuid,
    /// The change (version, time, status and output after).
    pub(crate) fact: EventFact,
    /// Who scheduled the downtime, and why.
    pub(crate) author: Option<(String, String)>,
    /// The check's alert open at the event, if any (the notification's `alert_id`).
    pub(crate) alert: Option<(Uuid, DateTime<Utc>)>,
}

/// The namespace of check-level event keys.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x1c7e_5b20_4f8d_4a63_9e07_d2a9_3b15_c6f4);

/// The deterministic key of a check-level event (check, history version and
/// time of the change): it takes the alert id's place in [`job_id`].
pub(crate) fn event_key(check: &crate::model::CheckId, version: u64, at: DateTime<Utc>) -> Uuid {
    let key = format!("{check}\0{version}\0{}", at.timestamp_micros());
    Uuid::new_v5(&EVENT_NAMESPACE, key.as_bytes())
}

/// Plans the jobs to add for check-level events ([`CheckEvent`]) of `check`:
/// one per (event, first recipient, channel) whose kind the rule's `types`
/// sends, waiting for the rule's and the recipient's periods like alerts.
/// `existing` are jobs already planned (any status, any kind); the result
/// never contains one of their ids, nor the same id twice.
pub(crate) fn plan_check_events(
    model: &NotifyModel,
    check: &crate::model::CheckId,
    events: &[CheckEvent],
    existing: &[NotificationJob],
    now: DateTime<Utc>,
) -> Vec<NotificationJob> {
    let Some(cn) = model.checks.get(check) else {
        return Vec::new();
    };
    let rule = &cn.rule;
    let mut known: std::collections::HashSet<Uuid> =
        existing.iter().map(|j| j.notification.id).collect();
    let mut out = Vec::new();
    for ev in events {
        if !rule.sends(ev.kind) {
            continue;
        }
        let key = ev.key;
        for c in &rule.contacts {
            let Some(contact) = model.contacts.get(c) else {
                continue;
            };
            for ch in &rule.channels {
                let id = job_id(key, ev.kind, 0, 0, c, ch);
                if !known.insert(id) {
                    continue;
                }
                let Some(not_before) = not_before(model, rule, contact, ev.fact.at, now) else {
                    continue;
                };
                out.push(NotificationJob {
                    notification: Notification {
                        id,
                        kind: ev.kind,
                        alert_id: ev.alert.map(|(a, _)| a),
                        check_id: *check,
                        check: cn.check.clone(),
                        host: cn.host.clone(),
                        status: ev.fact.status,
                        output: ev.fact.output.clone(),
                        at: ev.fact.at,
                        alert_opened_at: ev.alert.map(|(_, o)| o),
                        escalation: 0,
                        sequence: 0,
                        author: ev.author.as_ref().map(|(a, _)| a.clone()),
                        comment: ev.author.as_ref().map(|(_, c)| c.clone()),
                        recipient: contact.recipient(ch),
                        channel: ch.clone(),
                    },
                    not_before,
                    status: JobStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    created_at: now,
                    finished_at: None,
                });
            }
        }
    }
    out
}

/// When a job due at `due` may be sent to `contact` under `rule`: the next
/// common opening of the rule's and the contact's periods, never before
/// `now`; `None` (logged) when they never open.
fn not_before(
    model: &NotifyModel,
    rule: &NotifyRule,
    contact: &super::rules::Contact,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut periods: Vec<&str> = vec![rule.period.as_str()];
    if let Some(cp) = &contact.period {
        periods.push(cp.as_str());
    }
    let nb = model.periods.next_open_all(&periods, due.max(now));
    if nb.is_none() {
        tracing::warn!(
            contact = contact.name.as_str(),
            "the contact's time periods never open: notification not planned"
        );
    }
    nb
}

/// The latest status of an alert: its last realert, else its opening.
fn current(facts: &AlertFacts) -> &EventFact {
    facts.realerts.last().unwrap_or(&facts.opened)
}

struct Plan<'a> {
    model: &'a NotifyModel,
    rule: &'a NotifyRule,
    facts: &'a AlertFacts,
    check: &'a str,
    host: &'a str,
    now: DateTime<Utc>,
    known: std::collections::HashSet<Uuid>,
    out: Vec<NotificationJob>,
}

impl Plan<'_> {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        kind: NotificationKind,
        sequence: u32,
        escalation: u32,
        contact: &str,
        channel: &str,
        ev: &EventFact,
        due: DateTime<Utc>,
    ) {
        let id = job_id(
            self.facts.alert.id,
            kind,
            sequence,
            escalation,
            contact,
            channel,
        );
        if !self.known.insert(id) {
            return;
        }
        let Some(c) = self.model.contacts.get(contact) else {
            return;
        };
        // Wait for the rule's and the contact's periods; never before now.
        let Some(not_before) = not_before(self.model, self.rule, c, due, self.now) else {
            return;
        };
        self.out.push(NotificationJob {
            notification: Notification {
                id,
                kind,
                alert_id: Some(self.facts.alert.id),
                check_id: self.facts.alert.check_id,
                check: self.check.to_string(),
                host: self.host.to_string(),
                status: ev.status,
                output: ev.output.clone(),
                at: ev.at,
                alert_opened_at: Some(self.facts.alert.opened_at),
                escalation,
                sequence,
                author: None,
                comment: None,
                recipient: c.recipient(channel),
                channel: channel.to_string(),
            },
            not_before,
            status: JobStatus::Pending,
            attempts: 0,
            last_error: None,
            created_at: self.now,
            finished_at: None,
        });
    }
}

#[cfg(test)]
mod tests;
