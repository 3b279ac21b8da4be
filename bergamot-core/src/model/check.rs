use super::{CheckId, GroupId, LocationId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The kind of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A host check: is the host there at all.
    Host,
    /// A service on a host.
    Service,
    /// A passive check on a host: results are pushed, never scheduled.
    Trap,
}

/// Thresholds and intervals of one check: the inputs of the state machine
/// that come from config.
///
/// Made with [`Policy::builder`] (or [`Policy::default`]); the fields stay
/// public to read and to change.
///
/// ```
/// use bergamot_core::model::Policy;
/// use std::time::Duration;
///
/// let policy = Policy::builder().failed_after(1).every(Duration::from_secs(60)).build();
/// assert_eq!((policy.failed_after, policy.recovers_after), (1, 3));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// Consecutive not-ok results before the state turns hard (alert threshold).
    pub failed_after: u32,
    /// Consecutive ok results before the state turns hard ok (recovery threshold).
    pub recovers_after: u32,
    /// Flapping stops at or below this percent.
    pub flap_low: f64,
    /// Flapping starts at or above this percent.
    pub flap_high: f64,
    /// Interval while hard ok.
    #[serde(with = "secs")]
    pub every: Duration,
    /// Interval while hard not-ok, and while soft when `changing_every` is unset.
    #[serde(with = "secs")]
    pub retry_every: Duration,
    /// Interval while soft, if set.
    #[serde(with = "opt_secs", default)]
    pub changing_every: Option<Duration>,
    /// How long one execution may take.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failed_after: 3,
            recovers_after: 3,
            flap_low: 20.0,
            flap_high: 30.0,
            every: Duration::from_secs(300),
            retry_every: Duration::from_secs(60),
            changing_every: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// A [`PolicyBuilder`] starting from [`Policy::default`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
        }
    }
}

/// Builds a [`Policy`]: [`Policy::builder`], a setter per field to change,
/// then [`build`](PolicyBuilder::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    crate::builder::setters!(policy;
        /// Sets [`Policy::failed_after`].
        failed_after: u32,
        /// Sets [`Policy::recovers_after`].
        recovers_after: u32,
        /// Sets [`Policy::flap_low`].
        flap_low: f64,
        /// Sets [`Policy::flap_high`].
        flap_high: f64,
        /// Sets [`Policy::every`].
        every: Duration,
        /// Sets [`Policy::retry_every`].
        retry_every: Duration,
        /// Sets [`Policy::changing_every`].
        changing_every: into Option<Duration>,
        /// Sets [`Policy::timeout`].
        timeout: Duration,
    );

    /// The policy.
    pub fn build(self) -> Policy {
        self.policy
    }
}

/// Serde helper: a `Duration` as (fractional) seconds.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Serde helper: an optional `Duration` as seconds.
pub(crate) mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            Some(v) => Duration::try_from_secs_f64(v)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// A check as configured: what to run, where, how often, and where it belongs.
///
/// Made with a [`CheckBuilder`]: [`Check::host`], [`Check::service`] or
/// [`Check::builder`]; the fields stay public to read and to change.
///
/// ```
/// use bergamot_core::model::{Check, CheckId, GroupId, Policy};
///
/// let web = GroupId::named("site", "web");
/// let http = Check::service("site", "web1", "http")
///     .engine("dummy")
///     .group(web)
///     .policy(Policy::builder().failed_after(1).build())
///     .build();
/// assert_eq!(http.host_id, Some(CheckId::host("site", "web1")));
/// assert_eq!((http.pool.as_str(), http.enabled), ("default", true));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Check {
    /// Stable id (derived from site, kind and names for configured checks).
    pub id: CheckId,
    /// Host, service or trap.
    pub kind: CheckKind,
    /// The host's name (for a host check, its own name).
    pub host: String,
    /// The check's name: the host name for a host check, else the service or trap name.
    pub name: String,
    /// The host check of the host this check runs on (`None` for host checks).
    pub host_id: Option<CheckId>,
    /// The executor engine (`nagios`, `http`, `tcp`, `dummy`, or a packager's own);
    /// `passive` for traps and checks that only receive pushed results.
    pub engine: String,
    /// The worker pool that runs this check.
    pub pool: String,
    /// Engine parameters, already substituted (for `nagios`: `command`, the argument vector).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Thresholds and intervals.
    pub policy: Policy,
    /// Groups this check is directly in.
    #[serde(default)]
    pub groups: Vec<GroupId>,
    /// The location of the host (host checks count in location aggregates).
    #[serde(default)]
    pub location: Option<LocationId>,
    /// Checks this one depends on.
    #[serde(default)]
    pub dependencies: Vec<CheckId>,
    /// Whether the scheduler runs it.
    pub enabled: bool,
}

impl Check {
    /// A [`CheckBuilder`] for a check with these parts and the defaults:
    /// no host check, engine `passive`, pool `default`, no params, the
    /// default [`Policy`], no groups, location or dependencies, enabled.
    pub fn builder(
        id: CheckId,
        kind: CheckKind,
        host: impl Into<String>,
        name: impl Into<String>,
    ) -> CheckBuilder {
        CheckBuilder {
            check: Check {
                id,
                kind,
                host: host.into(),
                name: name.into(),
                host_id: None,
                engine: "passive".into(),
                pool: "default".into(),
                params: BTreeMap::new(),
                policy: Policy::default(),
                groups: Vec::new(),
                location: None,
                dependencies: Vec::new(),
                enabled: true,
            },
        }
    }

    /// A [`CheckBuilder`] for the host check of `host` in `site`: its id is
    /// [`CheckId::host`], its name the host's; the rest as [`Check::builder`].
    pub fn host(site: &str, host: &str) -> CheckBuilder {
        Check::builder(CheckId::host(site, host), CheckKind::Host, host, host)
    }

    /// A [`CheckBuilder`] for service `name` on `host` in `site`: its id is
    /// [`CheckId::service`], its host check that of `host`; the rest as
    /// [`Check::builder`].
    pub fn service(site: &str, host: &str, name: &str) -> CheckBuilder {
        Check::builder(
            CheckId::service(site, host, name),
            CheckKind::Service,
            host,
            name,
        )
        .host_id(CheckId::host(site, host))
    }

    /// Whether the scheduler should run this check (enabled and not passive).
    pub fn is_scheduled(&self) -> bool {
        self.enabled
            && self.kind != CheckKind::Trap
            && !crate::exec::engine::is_passive(&self.engine)
    }

    /// A readable name: `host` for a host check, `host/name` otherwise.
    pub fn display_name(&self) -> String {
        match self.kind {
            CheckKind::Host => self.host.clone(),
            _ => format!("{}/{}", self.host, self.name),
        }
    }
}

/// Builds a [`Check`]: [`Check::builder`] (or [`Check::host`],
/// [`Check::service`]), a setter per field to change, then
/// [`build`](CheckBuilder::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct CheckBuilder {
    check: Check,
}

impl CheckBuilder {
    crate::builder::setters!(check;
        /// Sets [`Check::host_id`] (a `CheckId`, or an `Option` of one).
        host_id: into Option<CheckId>,
        /// Sets [`Check::engine`].
        engine: into String,
        /// Sets [`Check::pool`].
        pool: into String,
        /// Sets all of [`Check::params`].
        params: BTreeMap<String, serde_json::Value>,
        /// Sets [`Check::policy`].
        policy: Policy,
        /// Sets all of [`Check::groups`].
        groups: Vec<GroupId>,
        /// Sets [`Check::location`] (a `LocationId`, or an `Option` of one).
        location: into Option<LocationId>,
        /// Sets all of [`Check::dependencies`].
        dependencies: Vec<CheckId>,
        /// Sets [`Check::enabled`].
        enabled: bool,
    );

    /// Adds one engine parameter to [`Check::params`].
    pub fn param(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.check.params.insert(key.into(), value);
        self
    }

    /// Adds one group to [`Check::groups`].
    pub fn group(mut self, group: GroupId) -> Self {
        self.check.groups.push(group);
        self
    }

    /// The check.
    pub fn build(self) -> Check {
        self.check
    }
}

/// A group: a node of the group graph (several parents allowed, no cycles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Stable id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Parent groups.
    #[serde(default)]
    pub parents: Vec<GroupId>,
}

/// A location: a node of the location tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Stable id.
    pub id: LocationId,
    /// Its name.
    pub name: String,
    /// Parent location (`None` for a root).
    #[serde(default)]
    pub parent: Option<LocationId>,
}

/// A whole resolved configuration: every check, group and location of a site.
///
/// This is what a config loads to and what [`Store::sync_config`](crate::store::Store::sync_config) takes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The site name (part of every derived id).
    pub site: String,
    /// Every check.
    pub checks: Vec<Check>,
    /// Every group.
    pub groups: Vec<Group>,
    /// Every location.
    pub locations: Vec<Location>,
}
