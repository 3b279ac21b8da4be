//! Notification config: contacts, teams, periods, channels, escalations,
//! `notify` inheritance, and file:line errors.

#![allow(clippy::unwrap_used)]

use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, Status};
use bergamot_core::notify::NotificationKind;
use bergamot_core::Error;
use std::time::Duration;

const BASE: &str = r#"
[[contact]]
name = "alice"
email = "alice@example.com"
chat = "U01"
channels = { hook = { url = "http://127.0.0.1:9/alice" } }

[[contact]]
name = "bob"
email = "bob@example.com"
period = "office"

[[contact]]
name = "carol"
email = "carol@example.com"

[[team]]
name = "ops"
members = ["alice", "bob"]

[[team]]
name = "everyone"
members = ["ops", "carol"]

[[timeperiod]]
name = "office"
timezone = "Europe/Berlin"
ranges = ["mon-fri 09:00-17:30", "sat 10:00-14:00"]
exclude = ["2026-12-25", "lunch"]

[[timeperiod]]
name = "lunch"
timezone = "Europe/Berlin"
ranges = ["mon-fri 12:00-13:00"]

[[channel]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = 2525
from = "bergamot@example.com"

[[channel]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"

[[escalation]]
name = "db"
  [[escalation.step]]
  after = "15m"
  teams = ["everyone"]
  [[escalation.step]]
  after = "1h"
  contacts = ["carol"]
  renotify = true

[[command]]
name = "ping"
argv = ["/bin/true"]

[[group]]
name = "databases"
notify = { teams = ["ops"], channels = ["mail"], escalation = "db" }

[[template]]
name = "linux"
check = { command = "ping" }
notify = { channels = ["mail", "hook"], repeat_every = "30m", period = "office" }

[[host]]
name = "db1"
extends = ["linux"]
groups = ["databases"]
notify = { contacts = ["carol"], types = ["alert", "recovery"], ignore_statuses = ["warning"] }

  [[host.service]]
  name = "disk"
  command = "ping"
  notify = { contacts = ["alice"], channels = ["hook"] }

  [[host.service]]
  name = "load"
  command = "ping"

[[host]]
name = "db2"
groups = ["databases"]
check = { command = "ping" }

[[host]]
name = "quiet"
check = { command = "ping" }
"#;

fn load(text: &str) -> Result<Config, Error> {
    Config::from_str_named("n.toml", text)
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => vec![],
        Err(Error::Config(e)) => e.0.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn contacts_teams_channels_periods_resolve() {
    let c = load(BASE).unwrap();
    let n = &c.notify;
    assert_eq!(n.contacts.len(), 3);
    assert_eq!(
        n.contacts["alice"].channels["hook"]["url"],
        "http://127.0.0.1:9/alice"
    );
    assert_eq!(n.contacts["bob"].period.as_deref(), Some("office"));
    assert_eq!(n.teams["ops"], vec!["alice", "bob"]);
    assert_eq!(
        n.teams["everyone"],
        vec!["alice", "bob", "carol"],
        "nested teams expand"
    );
    let mail = &n.channels["mail"];
    assert_eq!(mail.kind, "email");
    assert_eq!(mail.settings["port"], serde_json::json!(2525));
    assert!(!mail.settings.contains_key("name") && !mail.settings.contains_key("type"));
    assert_eq!((mail.file.as_str(), mail.line), ("n.toml", 36));
    let office = &n.periods.periods["office"];
    assert_eq!(office.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(office.ranges.len(), 2);
    assert_eq!(office.exclude.len(), 2);
}

#[test]
fn notify_layers_service_over_host_over_template_over_group() {
    let c = load(BASE).unwrap();
    let rules = &c.notify.checks;
    // db1 (host): contacts from the host, channels/repeat/period from the
    // template, escalation from the group.
    let db1 = &rules[&CheckId::host("default", "db1")];
    assert_eq!(db1.check, "db1");
    assert_eq!(db1.rule.contacts, vec!["carol"]);
    assert_eq!(db1.rule.channels, vec!["mail", "hook"]);
    assert_eq!(db1.rule.period, "office");
    assert_eq!(db1.rule.repeat_every, Some(Duration::from_secs(1800)));
    assert_eq!(
        db1.rule.types,
        vec![NotificationKind::Alert, NotificationKind::Recovery]
    );
    assert_eq!(db1.rule.ignore_statuses, vec![Status::Warning]);
    assert_eq!(db1.rule.escalations.len(), 2);
    assert_eq!(db1.rule.escalations[0].after, Duration::from_secs(900));
    assert_eq!(
        db1.rule.escalations[0].contacts,
        vec!["alice", "bob", "carol"]
    );
    assert!(db1.rule.escalations[1].renotify);
    // db1/disk: its own contacts and channels over the host's.
    let disk = &rules[&CheckId::service("default", "db1", "disk")];
    assert_eq!(disk.check, "db1/disk");
    assert_eq!(disk.rule.contacts, vec!["alice"]);
    assert_eq!(disk.rule.channels, vec!["hook"]);
    assert_eq!(disk.rule.period, "office");
    // db1/load: the host's.
    let load_rule = &rules[&CheckId::service("default", "db1", "load")];
    assert_eq!(load_rule.rule, db1.rule);
    // db2: only the group's.
    let db2 = &rules[&CheckId::host("default", "db2")];
    assert_eq!(db2.rule.contacts, vec!["alice", "bob"]);
    assert_eq!(db2.rule.channels, vec!["mail"]);
    assert_eq!(db2.rule.period, "always");
    assert_eq!(db2.rule.repeat_every, None);
    // quiet: nobody to tell.
    assert!(!rules.contains_key(&CheckId::host("default", "quiet")));
}

#[test]
fn unknown_names_are_errors_with_file_and_line() {
    let text = format!(
        "{BASE}\n[[host]]\nname = \"x\"\nnotify = {{ contacts = [\"zed\"], teams = [\"nope\"], channels = [\"pager\"], period = \"night\", escalation = \"esc\" }}\n"
    );
    let p = problems(&text);
    let line = BASE.lines().count() + 4;
    for want in [
        format!("n.toml:{line}: host.x.notify.contacts: unknown contact `zed`"),
        format!("n.toml:{line}: host.x.notify.teams: unknown team `nope`"),
        format!("n.toml:{line}: host.x.notify.channels: unknown channel `pager`"),
        format!("n.toml:{line}: host.x.notify.period: unknown timeperiod `night`"),
        format!("n.toml:{line}: host.x.notify.escalation: unknown escalation `esc`"),
    ] {
        assert!(p.contains(&want), "missing {want:?} in {p:#?}");
    }
}

#[test]
fn team_cycles_are_rejected() {
    let p = problems(
        r#"
[[contact]]
name = "a"

[[team]]
name = "t1"
members = ["a", "t2"]

[[team]]
name = "t2"
members = ["t1"]
"#,
    );
    assert!(
        p.iter()
            .any(|m| m
                .starts_with("n.toml:6: team.t1.members: cycle in team members: t1 -> t2 -> t1")),
        "{p:#?}"
    );
}

#[test]
fn bad_definitions_are_reported() {
    let p = problems(
        r#"
[[contact]]
name = "a"
period = "nights"
channels = { pager = { number = "1" } }

[[team]]
name = "t"
members = ["a", "ghost"]

[[timeperiod]]
name = "p"
timezone = "Mars/Olympus"
ranges = ["mon-fri 09:00-25:00", "someday"]
exclude = ["2026-13-01"]

[[timeperiod]]
name = "always"

[[timeperiod]]
name = "loop1"
exclude = ["loop2"]

[[timeperiod]]
name = "loop2"
exclude = ["loop1"]

[[channel]]
type = "email"

[[channel]]
name = "nokind"

[[escalation]]
name = "e"
  [[escalation.step]]
  after = "1h"
  contacts = ["a"]
  [[escalation.step]]
  after = "10x"
  [[escalation.step]]
  after = "5m"
  contacts = ["nobody"]

[[host]]
name = "h"
notify = { contacts = ["a"], types = ["page"], ignore_statuses = ["bad"], repeat_every = "0s" }
"#,
    );
    for want in [
        "n.toml:4: contact.a.period: unknown timeperiod `nights`",
        "n.toml:3: contact.a.channels.pager: unknown channel `pager`",
        "n.toml:9: team.t.members: unknown contact or team `ghost`",
        "n.toml:13: timeperiod.p.timezone: unknown time zone \"Mars/Olympus\"",
        "n.toml:14: timeperiod.p.ranges: bad range \"mon-fri 09:00-25:00\"",
        "n.toml:14: timeperiod.p.ranges: bad range \"someday\"",
        "n.toml:15: timeperiod.p.exclude: unknown timeperiod `2026-13-01`",
        "n.toml:18: timeperiod.always: `always` is built in",
        "timeperiod.loop1.exclude: cycle in timeperiod exclusions: loop1 -> loop2 -> loop1",
        "channel.name: a [[channel]] needs a name",
        "channel.nokind.type: a [[channel]] needs a type",
        "escalation.e.step.after: bad duration \"10x\"",
        "escalation.e.step.after: escalation steps must be in order",
        "escalation.e.step.contacts: unknown contact `nobody`",
        "host.h.notify.types: unknown notification type \"page\"",
        "host.h.notify.ignore_statuses: unknown status \"bad\"",
        "host.h.notify.repeat_every: repeat_every must be more than zero",
        "host.h.notify.channels: notify names contacts or teams but no channels",
    ] {
        assert!(
            p.iter().any(|m| m.contains(want)),
            "missing {want:?} in {p:#?}"
        );
    }
}

#[test]
fn a_config_without_notifications_has_an_empty_model() {
    let c = load("[[host]]\nname = \"h\"\n").unwrap();
    assert!(c.notify.checks.is_empty() && c.notify.contacts.is_empty());
}
