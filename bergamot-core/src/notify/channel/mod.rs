//! Channel kinds and the registry that builds them from `[[channel]]` tables.
//!
//! [`Channels::standard`] knows the built-in kinds (`email`, `webhook`,
//! `slack`, `command`, `log`; their settings, headers and status rules are in
//! `docs/notifications.md`); an embedding developer adds their own with
//! [`Channels::register`]:
//!
//! ```
//! use bergamot_core::notify::{ChannelConfig, Channels, Notification, Notifier, SendError, Settings};
//! use std::sync::Arc;
//!
//! struct Pager {
//!     number: String,
//! }
//!
//! #[async_trait::async_trait]
//! impl Notifier for Pager {
//!     async fn send(&self, n: &Notification) -> Result<(), SendError> {
//!         println!("page {}: {} is {}", self.number, n.check, n.status);
//!         Ok(())
//!     }
//! }
//!
//! let mut channels = Channels::standard();
//! channels.register("pager", |cfg: &ChannelConfig| {
//!     let mut s = Settings::new(cfg);
//!     let number = s.required_string("number");
//!     s.finish()?;
//!     Ok(Arc::new(Pager { number: number.unwrap_or_default() }) as Arc<dyn Notifier>)
//! });
//! let cfg = ChannelConfig {
//!     name: "oncall".into(),
//!     kind: "pager".into(),
//!     settings: serde_json::json!({"number": "+100"}).as_object().cloned().unwrap_or_default(),
//!     file: "bergamot.toml".into(),
//!     line: 12,
//! };
//! assert!(channels.build(&cfg).is_ok());
//! ```

mod command;
mod email;
mod http;
mod log;
pub(crate) mod message;
mod slack;
mod webhook;

use command::CommandChannel;
pub use email::EmailChannel;
use log::LogChannel;
pub use slack::SlackChannel;
use webhook::WebhookChannel;

use super::{ChannelConfig, Notifier};
use crate::error::{ConfigErrors, ConfigProblem};
use crate::Error;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Builds a channel of one kind from its `[[channel]]` table.
pub type ChannelConstructor =
    Arc<dyn Fn(&ChannelConfig) -> crate::Result<Arc<dyn Notifier>> + Send + Sync>;

/// The channel kinds a configuration may use, by name.
#[derive(Clone, Default)]
pub struct Channels {
    kinds: BTreeMap<String, ChannelConstructor>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Channels {
    /// A registry knowing no kind.
    pub fn new() -> Self {
        Channels::default()
    }

    /// The built-in kinds: `email`, `webhook`, `slack`, `command`, `log`.
    pub fn standard() -> Self {
        let mut c = Channels::new();
        c.register("email", |cfg: &ChannelConfig| {
            Ok(Arc::new(EmailChannel::from_config(cfg)?) as Arc<dyn Notifier>)
        });
        c.register("webhook", |cfg: &ChannelConfig| {
            Ok(Arc::new(WebhookChannel::from_config(cfg)?) as Arc<dyn Notifier>)
        });
        c.register("slack", |cfg: &ChannelConfig| {
            Ok(Arc::new(SlackChannel::from_config(cfg)?) as Arc<dyn Notifier>)
        });
        c.register("command", |cfg: &ChannelConfig| {
            Ok(Arc::new(CommandChannel::from_config(cfg)?) as Arc<dyn Notifier>)
        });
        c.register("log", |cfg: &ChannelConfig| {
            Ok(Arc::new(LogChannel::from_config(cfg)?) as Arc<dyn Notifier>)
        });
        c
    }

    /// Adds (or replaces) the kind `kind`; returns the constructor it replaced.
    ///
    /// The constructor validates the table's settings and reports problems as
    /// [`Error::Config`] naming the file, line and field ([`Settings`] does that).
    pub fn register<F>(
        &mut self,
        kind: impl Into<String>,
        constructor: F,
    ) -> Option<ChannelConstructor>
    where
        F: Fn(&ChannelConfig) -> crate::Result<Arc<dyn Notifier>> + Send + Sync + 'static,
    {
        self.kinds.insert(kind.into(), Arc::new(constructor))
    }

    /// The kinds known, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Whether `kind` is known.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// Builds the channel `cfg` describes, validating its settings.
    ///
    /// An unknown kind, or a missing, bad or unknown setting, is
    /// [`Error::Config`] naming `cfg.file`, `cfg.line` and the field
    /// (`channel.NAME.KEY`).
    pub fn build(&self, cfg: &ChannelConfig) -> crate::Result<Arc<dyn Notifier>> {
        match self.kinds.get(&cfg.kind) {
            Some(constructor) => constructor(cfg),
            None => {
                let known: Vec<&str> = self.kinds().collect();
                Err(config_error(
                    cfg,
                    "type",
                    format!(
                        "unknown channel type {:?} (known: {})",
                        cfg.kind,
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// Builds every channel, by name; every problem of every channel (and
    /// any name used twice) is reported in one [`Error::Config`].
    pub fn build_all(
        &self,
        configs: &[ChannelConfig],
    ) -> crate::Result<BTreeMap<String, Arc<dyn Notifier>>> {
        let mut built = BTreeMap::new();
        let mut problems = Vec::new();
        for cfg in configs {
            if built.contains_key(&cfg.name) {
                problems.push(problem(
                    cfg,
                    "name",
                    format!("channel {:?} is defined twice", cfg.name),
                ));
                continue;
            }
            match self.build(cfg) {
                Ok(n) => {
                    built.insert(cfg.name.clone(), n);
                }
                Err(Error::Config(ConfigErrors(mut p))) => problems.append(&mut p),
                Err(other) => problems.push(problem(cfg, "type", other.to_string())),
            }
        }
        if problems.is_empty() {
            Ok(built)
        } else {
            Err(Error::Config(ConfigErrors(problems)))
        }
    }
}

fn problem(cfg: &ChannelConfig, key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        file: cfg.file.clone(),
        line: cfg.line,
        field: format!("channel.{}.{key}", cfg.name),
        message: message.into(),
    }
}

fn config_error(cfg: &ChannelConfig, key: &str, message: impl Into<String>) -> Error {
    Error::Config(ConfigErrors(vec![problem(cfg, key, message)]))
}

/// Reads a `[[channel]]` table's settings with typed accessors, collecting
/// every problem (wrong type, missing, bad value, unknown key) as a
/// [`ConfigProblem`] naming the table's file and line and the field
/// `channel.NAME.KEY`.
///
/// Each accessor marks its key as known; [`Settings::finish`] reports the
/// keys no accessor asked for.
#[derive(Debug)]
pub struct Settings<'a> {
    cfg: &'a ChannelConfig,
    used: BTreeSet<String>,
    problems: Vec<ConfigProblem>,
}

impl<'a> Settings<'a> {
    /// Starts reading `cfg`'s settings.
    pub fn new(cfg: &'a ChannelConfig) -> Self {
        Settings {
            cfg,
            used: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// The channel's config.
    pub fn config(&self) -> &'a ChannelConfig {
        self.cfg
    }

    /// Records a problem with `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(problem(self.cfg, key, message));
    }

    /// The raw value of `key`, marking it known.
    pub fn value(&mut self, key: &str) -> Option<&'a serde_json::Value> {
        self.used.insert(key.to_string());
        self.cfg.settings.get(key).filter(|v| !v.is_null())
    }

    /// A string setting.
    pub fn string(&mut self, key: &str) -> Option<String> {
        let v = self.value(key)?;
        self.string_at(key, v)
    }

    /// `v` (found at `path`) as a string, or a problem naming `path`.
    fn string_at(&mut self, path: &str, v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            other => self.wrong_type(path, "a string", other),
        }
    }

    /// Records that `path` holds `got` where `expected` belongs.
    fn wrong_type<T>(&mut self, path: &str, expected: &str, got: &serde_json::Value) -> Option<T> {
        self.problem(path, format!("must be {expected}, got {}", type_name(got)));
        None
    }

    /// A string setting that must be present and not empty.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let present = self.cfg.settings.get(key).is_some_and(|v| !v.is_null());
        match self.string(key) {
            Some(s) if s.trim().is_empty() => {
                self.problem(key, "must not be empty");
                None
            }
            Some(s) => Some(s),
            None => {
                if !present {
                    self.problem(key, "is required");
                }
                None
            }
        }
    }

    /// A non-negative integer setting no larger than `max`.
    pub fn integer(&mut self, key: &str, max: u64) -> Option<u64> {
        let v = self.value(key)?;
        match v.as_u64() {
            Some(n) if n <= max => Some(n),
            _ => {
                self.problem(key, format!("must be an integer from 0 to {max}, got {v}"));
                None
            }
        }
    }

    /// A boolean setting.
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            serde_json::Value::Bool(b) => Some(*b),
            other => self.wrong_type(key, "true or false", other),
        }
    }

    /// A duration: a string like `"10s"`, `"1m30s"`, `"500ms"`, or a number
    /// of seconds; must be more than zero. `default` when absent or bad.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let parsed = match self.value(key) {
            None => return default,
            Some(serde_json::Value::String(s)) => crate::config::duration::parse_duration(s),
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(secs) => Ok(Duration::from_secs(secs)),
                None => Err(format!(
                    "bad duration {n}: expected e.g. \"10s\" or whole seconds"
                )),
            },
            Some(other) => Err(format!(
                "must be a duration like \"10s\", got {}",
                type_name(other)
            )),
        };
        match parsed {
            Ok(d) if d.is_zero() => {
                self.problem(key, "must be more than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(key, e);
                default
            }
        }
    }

    /// A list of strings.
    pub fn string_list(&mut self, key: &str) -> Option<Vec<String>> {
        match self.value(key)? {
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string_at(&format!("{key}[{i}]"), item))
                .collect(),
            other => self.wrong_type(key, "a list of strings", other),
        }
    }

    /// A table of string values (`headers = { Authorization = "..." }`).
    pub fn string_map(&mut self, key: &str) -> Option<BTreeMap<String, String>> {
        match self.value(key)? {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| Some((k.clone(), self.string_at(&format!("{key}.{k}"), v)?)))
                .collect(),
            other => self.wrong_type(key, "a table of strings", other),
        }
    }

    /// Ends reading: every key no accessor asked for is a problem; `Ok` if
    /// there was no problem at all.
    pub fn finish(mut self) -> crate::Result<()> {
        let unknown: Vec<String> = self
            .cfg
            .settings
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        for key in unknown {
            let mut known: Vec<&str> = self.used.iter().map(String::as_str).collect();
            known.retain(|k| !k.contains('[') && !k.contains('.'));
            let msg = format!(
                "unknown setting for a {} channel (known: {})",
                self.cfg.kind,
                known.join(", ")
            );
            self.problem(&key, msg);
        }
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(ConfigErrors(self.problems)))
        }
    }
}

fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a table",
    }
}

/// A URL as logs and errors may show it: without userinfo, query and
/// fragment (which may carry credentials or tokens), and, when `hide_path`,
/// without the path (Slack-style webhook URLs carry their token there).
pub(crate) fn redact_url(url: &str, hide_path: bool) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut out = String::new();
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(host);
    if hide_path {
        if path == "/" {
            out.push('/');
        } else if !path.is_empty() {
            out.push_str("/…");
        }
    } else {
        out.push_str(path);
    }
    if url.contains('?') {
        out.push_str("?…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: &str, settings: serde_json::Value) -> ChannelConfig {
        ChannelConfig {
            name: "c1".into(),
            kind: kind.into(),
            settings: settings.as_object().cloned().unwrap_or_default(),
            file: "/etc/bergamot.toml".into(),
            line: 42,
        }
    }

    fn problems(r: crate::Result<Arc<dyn Notifier>>) -> Vec<String> {
        match r {
            Err(Error::Config(ConfigErrors(p))) => p.iter().map(|p| p.to_string()).collect(),
            Err(e) => vec![format!("other error: {e}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn redacts_userinfo_query_and_optionally_path() {
        assert_eq!(
            redact_url("https://user:pw@example.com:8443/hook/x?token=abc#f", false),
            "https://example.com:8443/hook/x?…"
        );
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/SECRET", true),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact_url("http://h/", true), "http://h/");
    }

    #[test]
    fn unknown_kind_names_file_line_and_field() {
        let p = problems(Channels::standard().build(&cfg("pigeon", serde_json::json!({}))));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "/etc/bergamot.toml:42: channel.c1.type: unknown channel type \"pigeon\""
            ),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_and_bad_settings_are_all_reported() {
        let p = problems(
            Channels::standard()
                .build(&cfg("log", serde_json::json!({"path": 3, "colour": "red"}))),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .any(|p| p.contains("channel.c1.path: must be a string")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("channel.c1.colour: unknown setting")),
            "{p:?}"
        );
    }

    #[test]
    fn build_all_reports_every_channel_and_duplicates() {
        let mut a = cfg("log", serde_json::json!({}));
        a.name = "a".into();
        let mut b = cfg("webhook", serde_json::json!({}));
        b.name = "b".into();
        b.line = 50;
        let dup = a.clone();
        let r = Channels::standard().build_all(&[a, b, dup]);
        let Err(Error::Config(ConfigErrors(p))) = r else {
            panic!("expected a config error");
        };
        let p: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert!(
            p.iter()
                .any(|p| p.contains(":50: channel.b.url: is required")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("channel.a.name: channel \"a\" is defined twice")),
            "{p:?}"
        );
    }

    #[test]
    fn durations_accept_strings_and_seconds() {
        let c = cfg(
            "x",
            serde_json::json!({"a": "1m30s", "b": 5, "c": "0s", "d": "soon"}),
        );
        let mut s = Settings::new(&c);
        assert_eq!(s.duration("a", Duration::ZERO), Duration::from_secs(90));
        assert_eq!(s.duration("b", Duration::ZERO), Duration::from_secs(5));
        assert_eq!(
            s.duration("c", Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.duration("d", Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.duration("e", Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        assert_eq!(s.problems.len(), 2);
    }
}
