//! The planner's driver: reads what the pure [`plan`] needs from the
//! [`Store`] and the [`NotificationStore`], and enqueues the jobs it plans.
//!
//! It keeps no state that matters: every tick re-plans every open alert and
//! every alert closed within the look-back from durable state (alert
//! records, the check's history and state, the jobs already planned), and
//! job ids are deterministic, so a planner killed anywhere (even between
//! planning and enqueueing) re-plans the same jobs on its next tick and
//! [`NotificationStore::enqueue`] keeps one of each. Several planners may
//! run at once (one per notifier node): they plan the same ids.
//!
//! The spans of each alert spent acknowledged or held back (downtime,
//! suppression, flapping), which escalations and repeats do not count, are
//! derived from the flags of the check's history rows (durable); the
//! planner also keeps those it saw in memory, for rows written before the
//! flags existed. Downtime windows are read from the store, which keeps
//! ended (and cancelled) windows for a while ([`crate::store::Store::downtimes`]
//! asked for those not ended by the start of the look-back), so a window
//! that ended while no planner ran still has its end planned; the planner
//! only remembers which ends it has planned, to skip them on later ticks.

use super::plan::{
    plan, plan_check_events, still_relevant, AlertFacts, AlertNow, CheckEvent, EventFact, Pause,
};
use super::rules::NotifyModel;
use super::{NotificationJob, NotificationStore};
use crate::error::{Error, Result};
use crate::state::{Ack, Event};
use crate::store::{AlertRecord, HistoryPage, Store};
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// How many history entries of a check are read to find an alert's events.
const HISTORY_LIMIT: usize = 1000;

/// What one [`Planner::plan_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanReport {
    /// Alerts looked at.
    pub alerts: usize,
    /// Jobs planned and new to the job store.
    pub enqueued: usize,
}

#[derive(Debug, Default)]
struct Ledger {
    acked_since: Option<DateTime<Utc>>,
    paused: Vec<Pause>,
    /// Closed, and nothing of it is pending or sending: nothing left to plan.
    done: bool,
}

/// Plans notification jobs from the store's alerts; see the module docs.
pub struct Planner {
    store: Arc<dyn Store>,
    jobs: Arc<dyn NotificationStore>,
    model: RwLock<Arc<NotifyModel>>,
    ledger: Mutex<HashMap<Uuid, Ledger>>,
    /// Per check, the state version whose check-level events are planned
    /// (history is read again only when the version moves).
    events_seen: Mutex<HashMap<crate::model::CheckId, u64>>,
    /// Ended downtime windows whose end is planned (skipped on later ticks;
    /// after a restart they are planned again, to the same job ids).
    downtime_ends_planned: Mutex<std::collections::HashSet<Uuid>>,
    lookback: chrono::Duration,
}

impl Planner {
    /// A planner over `store`, enqueueing into `jobs`, with `model`
    /// (`Config.notify`). Closed alerts are re-planned for six hours after
    /// closing (see [`Planner::with_lookback`]).
    pub fn new(
        store: Arc<dyn Store>,
        jobs: Arc<dyn NotificationStore>,
        model: Arc<NotifyModel>,
    ) -> Planner {
        Planner {
            store,
            jobs,
            model: RwLock::new(model),
            ledger: Mutex::new(HashMap::new()),
            events_seen: Mutex::new(HashMap::new()),
            downtime_ends_planned: Mutex::new(std::collections::HashSet::new()),
            lookback: chrono::Duration::hours(6),
        }
    }

    /// How long after closing an alert is still planned (its recovery must
    /// be planned within it: make it well above the notifier's downtime).
    pub fn with_lookback(mut self, lookback: std::time::Duration) -> Planner {
        self.lookback = chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::hours(6));
        self
    }

    /// Replaces the model (on a config reload); the next tick uses it.
    pub fn set_model(&self, model: Arc<NotifyModel>) {
        *self.model.write() = model;
    }

    /// The model in use.
    pub fn model(&self) -> Arc<NotifyModel> {
        self.model.read().clone()
    }

    /// One tick: plans every open or recently closed alert of a check with
    /// a rule and enqueues the new jobs. Call it every few seconds.
    ///
    /// An error reading one alert is logged and that alert is skipped (the
    /// next tick retries it); an error enqueueing is returned.
    pub async fn plan_once(&self, now: DateTime<Utc>) -> Result<PlanReport> {
        let model = self.model();
        let mut report = PlanReport::default();
        if model.checks.is_empty() {
            return Ok(report);
        }
        let alerts = self.store.active_alerts(now - self.lookback).await?;
        {
            // Forget alerts no longer looked at.
            let live: std::collections::HashSet<Uuid> = alerts.iter().map(|a| a.id).collect();
            self.ledger.lock().retain(|id, _| live.contains(id));
        }
        let alerts_all = alerts.clone();
        for alert in alerts {
            if !model.checks.contains_key(&alert.check_id) {
                continue;
            }
            if self.ledger.lock().get(&alert.id).is_some_and(|l| l.done) {
                continue;
            }
            report.alerts += 1;
            match self.plan_alert(&model, alert.clone(), now).await {
                Ok(n) => report.enqueued += n,
                Err(e @ Error::NotFound { .. }) => {
                    tracing::debug!(alert = %alert.id, error = %e, "alert's check is gone: not planned");
                }
                Err(e) => {
                    tracing::warn!(alert = %alert.id, error = %e, "planning notifications failed; retried next tick");
                }
            }
        }
        report.enqueued += self.plan_events(&model, &alerts_all, now).await?;
        Ok(report)
    }

    /// Plans check-level events (flapping, downtime) of every configured
    /// check whose state moved since the last tick, from its history within
    /// the look-back. Returns the jobs new to the job store.
    async fn plan_events(
        &self,
        model: &NotifyModel,
        alerts: &[AlertRecord],
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let states = self.store.states().await?;
        // Every window not ended before the look-back: the active ones, the
        // future ones and those that ended (or were cancelled) since.
        let downtimes = self.store.downtimes(None, now - self.lookback).await?;
        let since = now - self.lookback;
        // Downtime windows: started (active now, the check in downtime),
        // and ended (over by now, the check out of downtime). Keyed by the
        // downtime's id.
        let mut dt_events: HashMap<crate::model::CheckId, (Vec<CheckEvent>, Vec<Uuid>)> =
            HashMap::new();
        {
            let state_of: HashMap<&crate::model::CheckId, &crate::state::CheckState> =
                states.iter().map(|(c, s)| (c, s)).collect();
            let fact = |st: &crate::state::CheckState, at: DateTime<Utc>| EventFact {
                version: st.version,
                at,
                status: st.status,
                output: st.output.to_string(),
            };
            let alert_of =
                |st: &crate::state::CheckState| st.current_alert.map(|a| (a.id, a.opened_at));
            let mut planned = self.downtime_ends_planned.lock();
            let listed: std::collections::HashSet<Uuid> = downtimes.iter().map(|d| d.id).collect();
            planned.retain(|id| listed.contains(id));
            for d in downtimes.iter().filter(|d| d.starts_at <= now) {
                let Some(st) = state_of.get(&d.check_id) else {
                    continue;
                };
                if !model.checks.contains_key(&d.check_id) {
                    continue;
                }
                let ended = d.ends_at <= now;
                let kind = match (ended, st.in_downtime) {
                    (false, true) => super::NotificationKind::DowntimeStarted,
                    // Over, and the check out of downtime (not held by
                    // another window), and not planned yet.
                    (true, false) if !planned.contains(&d.id) => {
                        super::NotificationKind::DowntimeEnded
                    }
                    _ => continue,
                };
                let e = dt_events.entry(d.check_id).or_default();
                e.0.push(CheckEvent {
                    kind,
                    key: d.id,
                    fact: fact(st, if ended { d.ends_at } else { d.starts_at }),
                    author: Some((d.author.clone(), d.comment.clone())),
                    alert: alert_of(st),
                });
                if ended {
                    e.1.push(d.id);
                }
            }
        }
        let mut n = 0;
        for (check, state) in states {
            if !model.checks.contains_key(&check) {
                continue;
            }
            let (extra, ended) = dt_events.remove(&check).unwrap_or_default();
            let moved = self.events_seen.lock().get(&check) != Some(&state.version);
            if !moved && extra.is_empty() {
                continue;
            }
            match self
                .plan_check(model, &check, alerts, since, now, moved, extra)
                .await
            {
                Ok(k) => {
                    n += k;
                    self.events_seen.lock().insert(check, state.version);
                    self.downtime_ends_planned.lock().extend(ended);
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(check = %check, error = %e, "planning check events failed; retried next tick");
                }
            }
        }
        Ok(n)
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_check(
        &self,
        model: &NotifyModel,
        check: &crate::model::CheckId,
        alerts: &[AlertRecord],
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        read_history: bool,
        mut events: Vec<CheckEvent>,
    ) -> Result<usize> {
        let mut history = if read_history {
            self.store
                .history(
                    *check,
                    HistoryPage {
                        before_version: None,
                        limit: HISTORY_LIMIT,
                    },
                )
                .await?
        } else {
            Vec::new()
        };
        history.sort_by_key(|h| h.version);
        for h in history.iter().filter(|h| h.at >= since) {
            let fact = EventFact {
                version: h.version,
                at: h.at,
                status: h.status,
                output: h.output.to_string(),
            };
            let alert = alerts
                .iter()
                .filter(|a| &a.check_id == check)
                .find(|a| a.opened_at <= h.at && a.closed_at.is_none_or(|c| h.at <= c))
                .map(|a| (a.id, a.opened_at));
            for e in &h.events {
                let kind = match e {
                    Event::FlappingStarted => super::NotificationKind::FlappingStarted,
                    Event::FlappingStopped => super::NotificationKind::FlappingStopped,
                    _ => continue,
                };
                events.push(CheckEvent {
                    kind,
                    key: super::plan::event_key(check, h.version, h.at),
                    fact: fact.clone(),
                    author: None,
                    alert,
                });
            }
        }
        if events.is_empty() {
            return Ok(0);
        }
        let existing = self
            .jobs
            .notifications(&super::JobFilter {
                check_id: Some(*check),
                limit: usize::MAX,
                ..Default::default()
            })
            .await?;
        let jobs = plan_check_events(model, check, &events, &existing, now);
        if jobs.is_empty() {
            return Ok(0);
        }
        self.jobs.enqueue(&jobs).await
    }

    async fn plan_alert(
        &self,
        model: &NotifyModel,
        alert: AlertRecord,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let state = self.store.state(alert.check_id).await?;
        let history = self
            .store
            .history(
                alert.check_id,
                HistoryPage {
                    before_version: None,
                    limit: HISTORY_LIMIT,
                },
            )
            .await?;
        let existing = self
            .jobs
            .notifications(&super::JobFilter {
                alert_id: Some(alert.id),
                limit: usize::MAX,
                ..Default::default()
            })
            .await?;
        let now_state = AlertNow::of(alert.id, &state);
        let open = now_state.open && alert.closed_at.is_none();
        let (acknowledged, paused) = {
            let mut ledger = self.ledger.lock();
            let l = ledger.entry(alert.id).or_default();
            if open && state.acknowledged != Ack::None {
                l.acked_since.get_or_insert(now);
            } else {
                l.acked_since = None;
            }
            let pausing = open && (now_state.acknowledged || now_state.held_back);
            match l.paused.last_mut() {
                Some(p) if p.end.is_none() && !pausing => p.end = Some(now),
                Some(p) if p.end.is_none() => {}
                _ if pausing => l.paused.push(Pause {
                    start: now,
                    end: None,
                }),
                _ => {}
            }
            (l.acked_since, l.paused.clone())
        };
        // The spans acknowledged or held back, from the history's flags
        // (durable), merged with the ledger's (rows written before the flags
        // existed read false; the ledger still covers what this planner saw).
        let (h_paused, h_acked_since) = paused_from_history(&history, now);
        let mut paused = paused;
        paused.extend(h_paused);
        let h_acked_since = h_acked_since.filter(|_| open && state.acknowledged != Ack::None);
        let acknowledged = match (acknowledged, h_acked_since) {
            (Some(l), Some(h)) => Some(l.min(h)),
            (l, h) => l.or(h),
        };
        // The alert's events, from the history (oldest first).
        let mut entries: Vec<_> = history
            .into_iter()
            .filter(|h| h.at >= alert.opened_at && alert.closed_at.is_none_or(|c| h.at <= c))
            .collect();
        entries.sort_by_key(|h| h.version);
        let fact = |h: &crate::store::HistoryEntry| EventFact {
            version: h.version,
            at: h.at,
            status: h.status,
            output: h.output.to_string(),
        };
        let opened = entries
            .iter()
            .find(|h| h.events.contains(&Event::Alert))
            .map(fact)
            .unwrap_or_else(|| unrecorded(alert.opened_at, alert.status, state.output.to_string()));
        let realerts = entries
            .iter()
            .filter(|h| h.events.contains(&Event::Realert))
            .map(fact)
            .collect();
        let closed = alert.closed_at.map(|at| {
            entries
                .iter()
                .rev()
                .find(|h| h.events.contains(&Event::Recovery))
                .map(fact)
                .unwrap_or_else(|| unrecorded(at, crate::model::Status::Ok, String::new()))
        });
        let facts = AlertFacts {
            alert: alert.clone(),
            opened,
            realerts,
            closed,
            acknowledged,
            held_back: now_state.held_back,
            paused,
        };
        let jobs = plan(model, &facts, &existing, now);
        let n = if jobs.is_empty() {
            0
        } else {
            self.jobs.enqueue(&jobs).await?
        };
        if alert.closed_at.is_some()
            && jobs.is_empty()
            && !existing.iter().any(|j| {
                matches!(
                    j.status,
                    super::JobStatus::Pending | super::JobStatus::Sending
                )
            })
        {
            if let Some(l) = self.ledger.lock().get_mut(&alert.id) {
                l.done = true;
            }
        }
        Ok(n)
    }

    /// Whether a due job should still be sent, given the current state of
    /// its check's alert; `Ok(Err(reason))`: cancel it. A job of a check no
    /// longer configured is cancelled. The rule:
    ///
    /// - alert, realert (first notifications): while the alert is open and
    ///   not acknowledged;
    /// - repeats and escalations (`sequence > 0` or `escalation > 0` of an
    ///   alert): also not while held back;
    /// - acknowledge: while the alert is open;
    /// - flapping started / stopped: while the check is still / not again
    ///   flapping; downtime started / ended: while the check is still / not
    ///   again in downtime;
    /// - recovery, test and the rest: always.
    pub async fn still_relevant(
        &self,
        job: &NotificationJob,
    ) -> Result<std::result::Result<(), String>> {
        use super::NotificationKind as K;
        let check_level = matches!(
            job.notification.kind,
            K::FlappingStarted | K::FlappingStopped | K::DowntimeStarted | K::DowntimeEnded
        );
        let alert = match job.notification.alert_id {
            Some(a) => a,
            None if check_level => Uuid::nil(),
            None => return Ok(Ok(())),
        };
        match self.store.state(job.notification.check_id).await {
            Ok(state) => Ok(still_relevant(job, &AlertNow::of(alert, &state))),
            Err(Error::NotFound { .. }) => Ok(Err("the check no longer exists".to_string())),
            Err(e) => Err(e),
        }
    }
}

/// From a check's history (any order): the spans it spent acknowledged or
/// held back (downtime, suppression, flapping), and since when it has been
/// acknowledged, if its newest entry says it is.
fn paused_from_history(
    history: &[crate::store::HistoryEntry],
    now: DateTime<Utc>,
) -> (Vec<Pause>, Option<DateTime<Utc>>) {
    let mut h: Vec<&crate::store::HistoryEntry> = history.iter().collect();
    h.sort_by_key(|e| e.version);
    let mut spans = Vec::new();
    let mut start: Option<DateTime<Utc>> = None;
    let mut acked_since: Option<DateTime<Utc>> = None;
    for e in &h {
        let paused = e.acknowledged || e.in_downtime || e.suppressed || e.flapping;
        match (start, paused) {
            (None, true) => start = Some(e.at),
            (Some(s), false) => {
                spans.push(Pause {
                    start: s,
                    end: Some(e.at.max(s)),
                });
                start = None;
            }
            _ => {}
        }
        acked_since = match (acked_since, e.acknowledged) {
            (None, true) => Some(e.at),
            (a, true) => a,
            (_, false) => None,
        };
    }
    if let Some(s) = start {
        spans.push(Pause {
            start: s.min(now),
            end: None,
        });
    }
    (spans, acked_since)
}

/// An event the history no longer holds (version 0): what the alert record says.
fn unrecorded(at: DateTime<Utc>, status: crate::model::Status, output: String) -> EventFact {
    EventFact {
        version: 0,
        at,
        status,
        output,
    }
}
