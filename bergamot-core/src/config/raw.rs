//! The serde shape of one config file, as written (before any resolution).
//!
//! Every struct denies unknown fields so a typo (`evry = "1m"`) is an error
//! with a line number, never a silently ignored setting. Values whose line
//! matters later (names, references, durations, thresholds) are `Spanned`.

use super::web::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A parameter table: `params = { warn = "100,20%", port = 22 }`.
pub(super) type RawParams = BTreeMap<String, Spanned<toml::Value>>;

/// The policy fields, taken out of whichever object carried them.
#[derive(Default)]
pub(super) struct RawPolicy {
    pub every: Option<Spanned<String>>,
    pub retry_every: Option<Spanned<String>>,
    pub changing_every: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub failed_after: Option<Spanned<i64>>,
    pub recovers_after: Option<Spanned<i64>>,
    pub flap_low: Option<Spanned<f64>>,
    pub flap_high: Option<Spanned<f64>>,
}

/// Declares a struct that also carries the eight policy fields, and a method
/// that moves them out as a [`RawPolicy`]. (`flatten` cannot be combined with
/// `deny_unknown_fields`, hence the macro.)
macro_rules! with_policy {
    ($name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $($(#[$fm])* pub $f: $t,)*
            pub every: Option<Spanned<String>>,
            pub retry_every: Option<Spanned<String>>,
            pub changing_every: Option<Spanned<String>>,
            pub timeout: Option<Spanned<String>>,
            pub failed_after: Option<Spanned<i64>>,
            pub recovers_after: Option<Spanned<i64>>,
            pub flap_low: Option<Spanned<f64>>,
            pub flap_high: Option<Spanned<f64>>,
        }

        impl $name {
            pub(super) fn take_policy(&mut self) -> RawPolicy {
                RawPolicy {
                    every: self.every.take(),
                    retry_every: self.retry_every.take(),
                    changing_every: self.changing_every.take(),
                    timeout: self.timeout.take(),
                    failed_after: self.failed_after.take(),
                    recovers_after: self.recovers_after.take(),
                    flap_low: self.flap_low.take(),
                    flap_high: self.flap_high.take(),
                }
            }
        }
    };
}

/// One file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub site: Option<Spanned<String>>,
    pub defaults: Option<Spanned<RawDefaults>>,
    pub web: Option<Spanned<RawWeb>>,
    #[serde(default)]
    pub command: Vec<RawCommand>,
    #[serde(default)]
    pub template: Vec<RawHostLike>,
    #[serde(default)]
    pub host: Vec<RawHostLike>,
    #[serde(default)]
    pub group: Vec<RawGroup>,
    #[serde(default)]
    pub location: Vec<RawLocation>,
    #[serde(default)]
    pub contact: Vec<RawContact>,
    #[serde(default)]
    pub team: Vec<RawTeam>,
    #[serde(default)]
    pub timeperiod: Vec<RawTimePeriod>,
    #[serde(default)]
    pub channel: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    pub escalation: Vec<RawEscalation>,
}

/// `notify = { ... }` on a host, template, service, trap or group.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub contacts: Option<Vec<Spanned<String>>>,
    pub teams: Option<Vec<Spanned<String>>>,
    pub channels: Option<Vec<Spanned<String>>>,
    pub period: Option<Spanned<String>>,
    pub types: Option<Vec<Spanned<String>>>,
    pub ignore_statuses: Option<Vec<Spanned<String>>>,
    pub repeat_every: Option<Spanned<String>>,
    pub escalation: Option<Spanned<String>>,
}

/// `[[contact]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContact {
    pub name: Spanned<String>,
    pub email: Option<Spanned<String>>,
    pub phone: Option<Spanned<String>>,
    pub chat: Option<Spanned<String>>,
    pub period: Option<Spanned<String>>,
    #[serde(default)]
    pub channels: BTreeMap<String, Spanned<toml::Table>>,
}

/// `[[team]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTeam {
    pub name: Spanned<String>,
    #[serde(default)]
    pub members: Vec<Spanned<String>>,
}

/// `[[timeperiod]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimePeriod {
    pub name: Spanned<String>,
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub ranges: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
}

/// `[[escalation]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEscalation {
    pub name: Spanned<String>,
    #[serde(default)]
    pub step: Vec<RawEscalationStep>,
}

/// `[[escalation.step]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEscalationStep {
    pub after: Spanned<String>,
    #[serde(default)]
    pub contacts: Vec<Spanned<String>>,
    #[serde(default)]
    pub teams: Vec<Spanned<String>>,
    #[serde(default)]
    pub renotify: bool,
}

with_policy!(RawDefaults {
    pool: Option<Spanned<String>>,
});

/// `[[command]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    pub name: Spanned<String>,
    pub engine: Option<Spanned<String>>,
    pub argv: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub params: RawParams,
}

with_policy!(RawHostLike {
    name: Spanned<String>,
    address: Option<Spanned<String>>,
    #[serde(default)]
    extends: Vec<Spanned<String>>,
    location: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    check: Option<RawHostCheck>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    trap: Vec<RawTrap>,
    #[serde(default)]
    params: RawParams,
    depends_on: Option<Vec<Spanned<String>>>,
    pool: Option<Spanned<String>>,
    enabled: Option<bool>,
    notify: Option<Spanned<RawNotify>>,
});

/// `check = { command = "check_ping", params = { ... } }` on a host or template.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHostCheck {
    pub command: Option<Spanned<String>>,
    #[serde(default)]
    pub params: RawParams,
}

with_policy!(RawService {
    name: Spanned<String>,
    command: Option<Spanned<String>>,
    #[serde(default)]
    params: RawParams,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    depends_on: Option<Vec<Spanned<String>>>,
    pool: Option<Spanned<String>>,
    enabled: Option<bool>,
    notify: Option<Spanned<RawNotify>>,
});

with_policy!(RawTrap {
    name: Spanned<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    depends_on: Option<Vec<Spanned<String>>>,
    enabled: Option<bool>,
    notify: Option<Spanned<RawNotify>>,
});

/// `[[group]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub name: Spanned<String>,
    #[serde(default)]
    pub parents: Vec<Spanned<String>>,
    pub notify: Option<Spanned<RawNotify>>,
}

/// `[[location]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocation {
    pub name: Spanned<String>,
    pub parent: Option<Spanned<String>>,
}

/// `[web]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub listen: Option<Spanned<String>>,
    pub anonymous_read: Option<bool>,
    #[serde(default)]
    pub users: Vec<RawWebUser>,
    #[serde(default)]
    pub tokens: Vec<RawWebToken>,
}

/// `[[web.users]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebUser {
    pub name: Spanned<String>,
    pub password_hash: Spanned<String>,
    pub role: Role,
}

/// `[[web.tokens]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebToken {
    pub name: Spanned<String>,
    pub token_hash: Spanned<String>,
    pub role: Role,
}
