//! The resolved notification model: contacts, channels, periods and, per
//! check, who is told what (`Config.notify`).

use super::period::TimePeriods;
use super::{ChannelConfig, NotificationKind, Recipient};
use crate::model::{CheckId, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One `[[contact]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Its name.
    pub name: String,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Chat handle.
    #[serde(default)]
    pub chat: Option<String>,
    /// The contact's own time period (none: always reachable).
    #[serde(default)]
    pub period: Option<String>,
    /// Per-channel settings, by channel name (e.g. a personal webhook URL).
    #[serde(default)]
    pub channels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Contact {
    /// The recipient this contact is on `channel`.
    pub fn recipient(&self, channel: &str) -> Recipient {
        Recipient {
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            chat: self.chat.clone(),
            settings: self.channels.get(channel).cloned().unwrap_or_default(),
        }
    }
}

/// One escalation step: after `after` of open, unacknowledged alert time
/// (not counting time acknowledged or held back), tell more people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    /// Delay from the alert's opening.
    #[serde(with = "crate::model::secs_serde")]
    pub after: Duration,
    /// Contacts added (teams expanded), sorted, each once.
    pub contacts: Vec<String>,
    /// Whether the recipients reached before this step are notified again
    /// (with this step's escalation number).
    pub renotify: bool,
}

/// What one check's notifications are: the check's `notify` merged with its
/// host's, templates' and groups' (see docs/configuration.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRule {
    /// Contacts told first (teams expanded), sorted, each once.
    pub contacts: Vec<String>,
    /// The channels every notification goes through.
    pub channels: Vec<String>,
    /// The period notifications may be sent in (`always` when unset).
    pub period: String,
    /// The kinds sent (empty: every kind).
    pub types: Vec<NotificationKind>,
    /// Statuses whose alerts are not sent (e.g. `warning`).
    pub ignore_statuses: Vec<Status>,
    /// Repeat the alert this often while open and unacknowledged.
    #[serde(
        default,
        serialize_with = "crate::model::opt_secs_serde::serialize",
        deserialize_with = "lenient_opt_secs"
    )]
    pub repeat_every: Option<Duration>,
    /// Escalation steps, by increasing `after`.
    pub escalations: Vec<EscalationStep>,
}

impl NotifyRule {
    /// Whether kind `k` is sent (the `types` filter).
    pub fn sends(&self, k: NotificationKind) -> bool {
        self.types.is_empty() || self.types.contains(&k)
    }
}

/// A check as its notifications name it, and its rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckNotify {
    /// `host` or `host/service`.
    pub check: String,
    /// The check's host.
    pub host: String,
    /// Its rule.
    pub rule: NotifyRule,
}

/// The notification model of a configuration (`Config.notify`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyModel {
    /// Contacts by name.
    pub contacts: BTreeMap<String, Contact>,
    /// Teams by name: their members, teams expanded to contacts, sorted.
    pub teams: BTreeMap<String, Vec<String>>,
    /// Channels by name, as configured (the channel registry builds them).
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Time periods.
    pub periods: TimePeriods,
    /// Per check with a non-empty rule (contacts and channels), its rule.
    pub checks: HashMap<CheckId, CheckNotify>,
}

/// An optional `Duration` from seconds (written as
/// [`opt_secs_serde`](crate::model::opt_secs_serde) writes it), where a
/// negative or non-finite number is read as none.
fn lenient_opt_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v: Option<f64> = Deserialize::deserialize(d)?;
    Ok(v.filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64))
}
