//! Notification config: `[[contact]]`, `[[team]]`, `[[timeperiod]]`,
//! `[[channel]]`, `[[escalation]]` and `notify = { ... }` on hosts,
//! templates, services, traps and groups, resolved into a [`NotifyModel`].

use super::duration::parse_duration;
use super::raw::{RawContact, RawEscalation, RawNotify, RawTeam, RawTimePeriod};
use super::resolve::{report_cycles, resolve_graph, Conv, Named};
use super::{Origin, Problems};
use crate::model::Status;
use crate::notify::{
    ChannelConfig, Contact, EscalationStep, Exclusion, NotificationKind, NotifyModel, NotifyRule,
    TimePeriod, WeeklyRange, ALWAYS,
};
use std::collections::HashMap;
use std::time::Duration;
use toml::Spanned;

/// `notify = { ... }` as written on one object: unset fields fall through
/// to the next layer (service, host, templates, groups).
#[derive(Debug, Default)]
pub(super) struct NotifyPatch {
    at: Origin,
    path: String,
    contacts: Option<Vec<Named>>,
    teams: Option<Vec<Named>>,
    channels: Option<Vec<Named>>,
    period: Option<Named>,
    types: Option<Vec<NotificationKind>>,
    ignore_statuses: Option<Vec<Status>>,
    repeat_every: Option<Duration>,
    escalation: Option<Named>,
}

#[derive(Debug)]
struct PeriodDef {
    name: Named,
    timezone: chrono_tz::Tz,
    ranges: Vec<WeeklyRange>,
    exclude_dates: Vec<chrono::NaiveDate>,
    exclude_periods: Vec<Named>,
}

#[derive(Debug)]
struct StepDef {
    after: Duration,
    contacts: Vec<Named>,
    teams: Vec<Named>,
    renotify: bool,
}

/// Every notification definition of the configuration.
#[derive(Debug, Default)]
pub(super) struct NotifyDefs {
    contacts: Vec<(Named, Contact, Option<Named>)>,
    teams: Vec<(Named, Vec<Named>)>,
    periods: Vec<PeriodDef>,
    channels: Vec<(Named, ChannelConfig)>,
    escalations: Vec<(Named, Vec<StepDef>)>,
}

/// The kinds a `types` entry names.
fn kinds(name: &str) -> Option<&'static [NotificationKind]> {
    use NotificationKind::*;
    Some(match name {
        "alert" => &[Alert],
        "realert" => &[Realert],
        "recovery" => &[Recovery],
        "acknowledge" => &[Acknowledge],
        "flapping" => &[FlappingStarted, FlappingStopped],
        "flapping_started" => &[FlappingStarted],
        "flapping_stopped" => &[FlappingStopped],
        "downtime" => &[DowntimeStarted, DowntimeEnded],
        "downtime_started" => &[DowntimeStarted],
        "downtime_ended" => &[DowntimeEnded],
        _ => return None,
    })
}

fn toml_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Conv<'_> {
    /// A `notify = { ... }` of object `path` (e.g. `host.web1`).
    pub(super) fn notify(
        &mut self,
        raw: Option<Spanned<RawNotify>>,
        path: &str,
    ) -> Option<NotifyPatch> {
        let raw = raw?;
        let at = self.at(&raw);
        let raw = raw.into_inner();
        let path = format!("{path}.notify");
        let types = raw.types.map(|ts| {
            let mut out = Vec::new();
            for t in ts {
                let t_at = self.at(&t);
                match kinds(t.get_ref()) {
                    Some(ks) => out.extend_from_slice(ks),
                    None => self.problems.at(
                        t_at,
                        format!("{path}.types"),
                        format!(
                            "unknown notification type {:?} (expected alert, realert, recovery, acknowledge, flapping, downtime)",
                            t.get_ref()
                        ),
                    ),
                }
            }
            out
        });
        let ignore_statuses = raw.ignore_statuses.map(|ss| {
            let mut out = Vec::new();
            for s in ss {
                let s_at = self.at(&s);
                match s.get_ref().parse::<Status>() {
                    Ok(st) => out.push(st),
                    Err(e) => {
                        self.problems
                            .at(s_at, format!("{path}.ignore_statuses"), e.to_string())
                    }
                }
            }
            out
        });
        Some(NotifyPatch {
            at,
            contacts: raw.contacts.map(|v| self.references(v)),
            teams: raw.teams.map(|v| self.references(v)),
            channels: raw.channels.map(|v| self.references(v)),
            period: raw.period.map(|p| self.reference(p)),
            types,
            ignore_statuses,
            repeat_every: self.duration(raw.repeat_every, &path, "repeat_every"),
            escalation: raw.escalation.map(|e| self.reference(e)),
            path,
        })
    }

    fn contact(&mut self, raw: RawContact) -> (Named, Contact, Option<Named>) {
        let path = format!("contact.{}", raw.name.get_ref());
        let name = self.name(raw.name, &path, false);
        let period = raw.period.map(|p| self.reference(p));
        let channels = raw
            .channels
            .into_iter()
            .map(|(ch, t)| {
                let settings = t
                    .into_inner()
                    .iter()
                    .map(|(k, v)| (k.clone(), toml_string(v)))
                    .collect();
                (ch, settings)
            })
            .collect();
        let contact = Contact {
            name: name.name.clone(),
            email: raw.email.map(Spanned::into_inner),
            phone: raw.phone.map(Spanned::into_inner),
            chat: raw.chat.map(Spanned::into_inner),
            period: period.as_ref().map(|p| p.name.clone()),
            channels,
        };
        (name, contact, period)
    }

    fn period(&mut self, raw: RawTimePeriod) -> PeriodDef {
        let path = format!("timeperiod.{}", raw.name.get_ref());
        let name = self.name(raw.name, &path, false);
        if name.name == ALWAYS {
            self.problems.at(
                name.at,
                &path,
                "`always` is built in and cannot be redefined",
            );
        }
        let timezone = match raw.timezone {
            None => chrono_tz::UTC,
            Some(tz) => {
                let at = self.at(&tz);
                match tz.get_ref().parse::<chrono_tz::Tz>() {
                    Ok(z) => z,
                    Err(_) => {
                        self.problems.at(
                            at,
                            format!("{path}.timezone"),
                            format!("unknown time zone {:?} (expected an IANA name, e.g. \"Europe/Berlin\")", tz.get_ref()),
                        );
                        chrono_tz::UTC
                    }
                }
            }
        };
        let mut ranges = Vec::new();
        for r in raw.ranges {
            let at = self.at(&r);
            match WeeklyRange::parse(r.get_ref()) {
                Ok(w) => ranges.push(w),
                Err(e) => self.problems.at(at, format!("{path}.ranges"), e),
            }
        }
        let mut exclude_dates = Vec::new();
        let mut exclude_periods = Vec::new();
        for e in raw.exclude {
            match chrono::NaiveDate::parse_from_str(e.get_ref(), "%Y-%m-%d") {
                Ok(d) => exclude_dates.push(d),
                Err(_) => exclude_periods.push(self.reference(e)),
            }
        }
        PeriodDef {
            name,
            timezone,
            ranges,
            exclude_dates,
            exclude_periods,
        }
    }

    fn channel(&mut self, raw: Spanned<toml::Table>) -> Option<(Named, ChannelConfig)> {
        let at = self.at(&raw);
        let mut table = raw.into_inner();
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) => s,
            _ => {
                self.problems
                    .at(at, "channel.name", "a [[channel]] needs a name (a string)");
                return None;
            }
        };
        let path = format!("channel.{name}");
        let kind = match table.remove("type") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
            _ => {
                self.problems.at(
                    at,
                    format!("{path}.type"),
                    "a [[channel]] needs a type (email, webhook, slack, command, log)",
                );
                return None;
            }
        };
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            self.problems.at(
                at,
                &path,
                "a channel name must be non-empty, without control characters",
            );
        }
        let settings = table
            .into_iter()
            .filter_map(|(k, v)| serde_json::to_value(&v).ok().map(|v| (k, v)))
            .collect();
        let config = ChannelConfig {
            name: name.clone(),
            kind,
            settings,
            file: self.problems.file_name(at.file),
            line: at.line as usize,
        };
        Some((Named { name, at }, config))
    }

    fn escalation(&mut self, raw: RawEscalation) -> (Named, Vec<StepDef>) {
        let path = format!("escalation.{}", raw.name.get_ref());
        let name = self.name(raw.name, &path, false);
        let mut steps = Vec::new();
        let mut last = Duration::ZERO;
        for s in raw.step {
            let at = self.at(&s.after);
            let after = match parse_duration(s.after.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.problems.at(at, format!("{path}.step.after"), e);
                    continue;
                }
            };
            if after < last {
                self.problems.at(
                    at,
                    format!("{path}.step.after"),
                    "escalation steps must be in order of `after`",
                );
            }
            last = after;
            if s.contacts.is_empty() && s.teams.is_empty() && !s.renotify {
                self.problems.at(
                    at,
                    format!("{path}.step"),
                    "an escalation step needs contacts or teams to add (or renotify = true)",
                );
            }
            steps.push(StepDef {
                after,
                contacts: self.references(s.contacts),
                teams: self.references(s.teams),
                renotify: s.renotify,
            });
        }
        (name, steps)
    }
}

impl NotifyDefs {
    /// Adds the notification definitions of one file.
    pub(super) fn add(
        &mut self,
        c: &mut Conv<'_>,
        contacts: Vec<RawContact>,
        teams: Vec<RawTeam>,
        periods: Vec<RawTimePeriod>,
        channels: Vec<Spanned<toml::Table>>,
        escalations: Vec<RawEscalation>,
    ) {
        for raw in contacts {
            self.contacts.push(c.contact(raw));
        }
        for raw in teams {
            let path = format!("team.{}", raw.name.get_ref());
            let name = c.name(raw.name, &path, false);
            self.teams.push((name, c.references(raw.members)));
        }
        for raw in periods {
            self.periods.push(c.period(raw));
        }
        for raw in channels {
            if let Some(ch) = c.channel(raw) {
                self.channels.push(ch);
            }
        }
        for raw in escalations {
            self.escalations.push(c.escalation(raw));
        }
    }
}

/// The notification model being built: everything but the per-check rules,
/// and what resolving a check's layers needs.
pub(super) struct NotifyBuild {
    pub model: NotifyModel,
    contacts: HashMap<String, ()>,
    teams: HashMap<String, Vec<String>>,
    escalations: HashMap<String, Vec<EscalationStep>>,
}

fn first_dup<'a>(
    names: impl Iterator<Item = &'a Named>,
    kind: &str,
    problems: &mut Problems,
) -> HashMap<String, Origin> {
    let mut seen: HashMap<String, Origin> = HashMap::new();
    for n in names {
        if let Some(first) = seen.get(&n.name) {
            let first = problems.describe(*first);
            problems.at(
                n.at,
                format!("{kind}.{}", n.name),
                format!("duplicate {kind} `{}`: first defined at {first}", n.name),
            );
        } else {
            seen.insert(n.name.clone(), n.at);
        }
    }
    seen
}

impl NotifyBuild {
    /// Checks every definition and builds the model (without check rules).
    pub(super) fn new(defs: &NotifyDefs, problems: &mut Problems) -> NotifyBuild {
        let contact_names = first_dup(defs.contacts.iter().map(|c| &c.0), "contact", problems);
        let _ = first_dup(defs.teams.iter().map(|t| &t.0), "team", problems);
        let period_names = first_dup(defs.periods.iter().map(|p| &p.name), "timeperiod", problems);
        let _ = first_dup(defs.channels.iter().map(|c| &c.0), "channel", problems);
        let _ = first_dup(
            defs.escalations.iter().map(|e| &e.0),
            "escalation",
            problems,
        );
        for (t, _) in &defs.teams {
            if let Some(c) = contact_names.get(&t.name) {
                let c = problems.describe(*c);
                problems.at(
                    t.at,
                    format!("team.{}", t.name),
                    format!("team `{}` has the name of a contact (defined at {c}): team members would be ambiguous", t.name),
                );
            }
        }
        let period_known = |n: &str| n == ALWAYS || period_names.contains_key(n);

        // Contacts: their period known.
        let mut model = NotifyModel::default();
        for (name, contact, period) in &defs.contacts {
            if let Some(p) = period {
                if !period_known(&p.name) {
                    problems.at(
                        p.at,
                        format!("contact.{}.period", name.name),
                        format!("unknown timeperiod `{}`", p.name),
                    );
                }
            }
            model
                .contacts
                .entry(name.name.clone())
                .or_insert_with(|| contact.clone());
        }

        // Teams: members known, no cycles, expanded to contacts.
        let team_index: HashMap<&str, usize> = defs
            .teams
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (n, _))| (n.name.as_str(), i))
            .collect();
        let mut adj: Vec<Vec<usize>> = Vec::with_capacity(defs.teams.len());
        for (t, members) in &defs.teams {
            let mut out = Vec::new();
            for m in members {
                if let Some(&i) = team_index.get(m.name.as_str()) {
                    out.push(i);
                } else if !contact_names.contains_key(&m.name) {
                    problems.at(
                        m.at,
                        format!("team.{}.members", t.name),
                        format!("unknown contact or team `{}`", m.name),
                    );
                }
            }
            adj.push(out);
        }
        let cyclic = report_cycles(
            &adj,
            |i| &defs.teams[i].0,
            |n| format!("team.{n}.members"),
            "team members",
            problems,
        );
        let mut teams: HashMap<String, Vec<String>> = HashMap::new();
        if !cyclic {
            for (t, _) in &defs.teams {
                let mut out = Vec::new();
                let mut stack = vec![t.name.as_str()];
                let mut seen = std::collections::HashSet::new();
                while let Some(team) = stack.pop() {
                    if !seen.insert(team) {
                        continue;
                    }
                    let Some(&i) = team_index.get(team) else {
                        continue;
                    };
                    for m in &defs.teams[i].1 {
                        if team_index.contains_key(m.name.as_str()) {
                            stack.push(&m.name);
                        } else if contact_names.contains_key(&m.name) {
                            out.push(m.name.clone());
                        }
                    }
                }
                out.sort();
                out.dedup();
                teams.entry(t.name.clone()).or_insert(out);
            }
        }
        model.teams = teams.iter().map(|(k, v)| (k.clone(), v.clone())).collect();

        // Periods: excluded periods known, no cycles.
        let period_index: HashMap<&str, usize> = defs
            .periods
            .iter()
            .enumerate()
            .rev()
            .map(|(i, p)| (p.name.name.as_str(), i))
            .collect();
        resolve_graph(
            &defs.periods,
            |p| (&p.name, &p.exclude_periods),
            &period_index,
            |n| format!("timeperiod.{n}.exclude"),
            |e| format!("unknown timeperiod `{e}` (or a bad date: write YYYY-MM-DD)"),
            "timeperiod exclusions",
            problems,
        );
        for p in &defs.periods {
            let mut exclude: Vec<Exclusion> = p
                .exclude_dates
                .iter()
                .map(|d| Exclusion::Date(*d))
                .collect();
            exclude.extend(
                p.exclude_periods
                    .iter()
                    .map(|e| Exclusion::Period(e.name.clone())),
            );
            model
                .periods
                .periods
                .entry(p.name.name.clone())
                .or_insert_with(|| TimePeriod {
                    name: p.name.name.clone(),
                    timezone: p.timezone,
                    ranges: p.ranges.clone(),
                    exclude,
                });
        }

        // Channels.
        for (n, ch) in &defs.channels {
            model
                .channels
                .entry(n.name.clone())
                .or_insert_with(|| ch.clone());
        }

        let mut build = NotifyBuild {
            model,
            contacts: contact_names.keys().map(|k| (k.clone(), ())).collect(),
            teams,
            escalations: HashMap::new(),
        };
        // Escalations: contacts and teams known; expanded.
        for (n, steps) in &defs.escalations {
            let path = format!("escalation.{}.step", n.name);
            let mut out = Vec::new();
            for s in steps {
                build.check_people(&s.contacts, &s.teams, &path, problems);
                out.push(EscalationStep {
                    after: s.after,
                    contacts: build.people(Some(&s.contacts), Some(&s.teams)),
                    renotify: s.renotify,
                });
            }
            build.escalations.entry(n.name.clone()).or_insert(out);
        }
        build
    }

    fn check_people(
        &self,
        contacts: &[Named],
        teams: &[Named],
        path: &str,
        problems: &mut Problems,
    ) {
        for c in contacts {
            if !self.contacts.contains_key(&c.name) {
                problems.at(
                    c.at,
                    format!("{path}.contacts"),
                    format!("unknown contact `{}`", c.name),
                );
            }
        }
        for t in teams {
            if !self.teams.contains_key(&t.name) && !self.model.teams.contains_key(&t.name) {
                problems.at(
                    t.at,
                    format!("{path}.teams"),
                    format!("unknown team `{}`", t.name),
                );
            }
        }
    }

    fn people(&self, contacts: Option<&Vec<Named>>, teams: Option<&Vec<Named>>) -> Vec<String> {
        let mut out: Vec<String> = contacts
            .into_iter()
            .flatten()
            .filter(|c| self.contacts.contains_key(&c.name))
            .map(|c| c.name.clone())
            .collect();
        for t in teams.into_iter().flatten() {
            if let Some(members) = self.teams.get(&t.name) {
                out.extend(members.iter().cloned());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Checks the references of one `notify` (once per definition).
    pub(super) fn check_patch(&self, p: &NotifyPatch, problems: &mut Problems) {
        self.check_people(
            p.contacts.as_deref().unwrap_or(&[]),
            p.teams.as_deref().unwrap_or(&[]),
            &p.path,
            problems,
        );
        for ch in p.channels.iter().flatten() {
            if !self.model.channels.contains_key(&ch.name) {
                problems.at(
                    ch.at,
                    format!("{}.channels", p.path),
                    format!("unknown channel `{}`", ch.name),
                );
            }
        }
        if let Some(per) = &p.period {
            if per.name != ALWAYS && !self.model.periods.periods.contains_key(&per.name) {
                problems.at(
                    per.at,
                    format!("{}.period", p.path),
                    format!("unknown timeperiod `{}`", per.name),
                );
            }
        }
        if let Some(e) = &p.escalation {
            if !self.escalations.contains_key(&e.name) {
                problems.at(
                    e.at,
                    format!("{}.escalation", p.path),
                    format!("unknown escalation `{}`", e.name),
                );
            }
        }
    }

    /// The rule of a check from its layers, highest first; `None` when it
    /// has nobody to tell. A rule naming people but no channel is reported
    /// at the layer naming the people.
    pub(super) fn rule(
        &self,
        layers: &[&NotifyPatch],
        problems: &mut Problems,
    ) -> Option<NotifyRule> {
        if layers.is_empty() {
            return None;
        }
        fn pick<'a, T>(
            layers: &[&'a NotifyPatch],
            f: impl Fn(&'a NotifyPatch) -> Option<&'a T>,
        ) -> Option<&'a T> {
            layers.iter().find_map(|l| f(l))
        }
        // Who is told: `contacts` and `teams` of the first layer setting either.
        let people = layers
            .iter()
            .find(|l| l.contacts.is_some() || l.teams.is_some())
            .map(|l| self.people(l.contacts.as_ref(), l.teams.as_ref()))
            .unwrap_or_default();
        let channels: Vec<String> = pick(layers, |l| l.channels.as_ref())
            .map(|v| v.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let escalations = pick(layers, |l| l.escalation.as_ref())
            .and_then(|e| self.escalations.get(&e.name))
            .cloned()
            .unwrap_or_default();
        if people.is_empty() && escalations.is_empty() {
            return None;
        }
        if channels.is_empty() {
            if let Some(l) = layers
                .iter()
                .find(|l| l.contacts.is_some() || l.teams.is_some())
            {
                problems.at(l.at, format!("{}.channels", l.path), "notify names contacts or teams but no channels (set channels here or on a template, host or group)");
            }
            return None;
        }
        Some(NotifyRule {
            contacts: people,
            channels,
            period: pick(layers, |l| l.period.as_ref())
                .map_or_else(|| ALWAYS.to_string(), |p| p.name.clone()),
            types: pick(layers, |l| l.types.as_ref())
                .cloned()
                .unwrap_or_default(),
            ignore_statuses: pick(layers, |l| l.ignore_statuses.as_ref())
                .cloned()
                .unwrap_or_default(),
            repeat_every: layers.iter().find_map(|l| l.repeat_every),
            escalations,
        })
    }
}

/// Settings maps kept for contacts' channels must name known channels.
pub(super) fn check_contact_channels(
    build: &NotifyBuild,
    defs: &NotifyDefs,
    problems: &mut Problems,
) {
    for (name, contact, _) in &defs.contacts {
        let unknown: Vec<&String> = contact
            .channels
            .keys()
            .filter(|ch| !build.model.channels.contains_key(*ch))
            .collect();
        for ch in unknown {
            problems.at(
                name.at,
                format!("contact.{}.channels.{ch}", name.name),
                format!("unknown channel `{ch}`"),
            );
        }
    }
}
