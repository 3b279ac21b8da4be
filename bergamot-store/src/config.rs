//! [`PostgresConfig`]: where the store connects and how.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How [`PostgresStore::connect`](crate::PostgresStore::connect) connects.
///
/// Only `url` is required; see [`PostgresConfig::new`] for the defaults.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    /// A libpq-style URL, e.g. `postgres://bergamot:secret@db:5432/bergamot`
    /// (key-value strings like `host=db user=bergamot` work too).
    pub url: String,
    /// Maximum number of pooled connections (default 16).
    pub pool_size: usize,
    /// The PostgreSQL schema holding Bergamot's tables (default `bergamot`).
    /// Several sites, or tests, can share one server with one schema each.
    /// Lower-case ASCII letters, digits and `_`, starting with a letter or
    /// `_`, at most 63 characters.
    pub schema: String,
    /// How long to wait for a TCP connection to the server (default 5 s).
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// How long to wait for a free pooled connection (default 30 s).
    #[serde(with = "secs")]
    pub pool_timeout: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_timeout", &self.pool_timeout)
            .finish()
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
            pool_size: 16,
            schema: "bergamot".to_string(),
            connect_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresConfig {
    /// A config for `url` with the defaults: 16 connections, schema `bergamot`,
    /// 5 s connect timeout, 30 s pool timeout.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            ..PostgresConfig::default()
        }
    }

    /// The same config with another schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The same config with another pool size.
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Checks the fields that can be checked without a server.
    pub fn validate(&self) -> Result<()> {
        validate_schema(&self.schema)?;
        if self.pool_size == 0 {
            return Err(Error::InvalidConfig {
                field: "pool_size",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Parses the URL into a driver config with `search_path` set to the
    /// schema on every connection.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config> {
        self.validate()?;
        let mut cfg: tokio_postgres::Config =
            self.url.parse().map_err(|source| Error::InvalidUrl {
                url: redact(&self.url),
                source,
            })?;
        // The schema name is validated to [a-z0-9_], so it needs no escaping.
        cfg.options(format!("-c search_path={}", self.schema));
        cfg.connect_timeout(self.connect_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("bergamot");
        }
        Ok(cfg)
    }
}

/// Host, port, user and database of a driver config, for error messages.
pub(crate) fn describe(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(s) => s.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = cfg.get_ports().iter().map(|p| p.to_string()).collect();
    format!(
        "{}:{} (user {:?}, database {:?})",
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_string()
        } else {
            ports.join(",")
        },
        cfg.get_user().unwrap_or(""),
        cfg.get_dbname().unwrap_or(cfg.get_user().unwrap_or("")),
    )
}

/// The URL with any password replaced, for error messages (the one
/// redactor of [`bergamot_core::redact`]).
pub(crate) fn redact(url: &str) -> String {
    bergamot_core::redact::url(url)
}

fn validate_schema(schema: &str) -> Result<()> {
    let bad = |message: &str| {
        Err(Error::InvalidConfig {
            field: "schema",
            message: format!("{schema:?}: {message}"),
        })
    };
    if schema.is_empty() || schema.len() > 63 {
        return bad("must be 1 to 63 characters long");
    }
    if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("only lower-case ASCII letters, digits and '_' are allowed");
    }
    if schema.as_bytes()[0].is_ascii_digit() {
        return bad("must not start with a digit");
    }
    if schema.starts_with("pg_") {
        return bad("names starting with pg_ are reserved by PostgreSQL");
    }
    Ok(())
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for ok in ["bergamot", "t_1a2b", "_x"] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Bergamot",
            "a-b",
            "1abc",
            "pg_x",
            "a;drop",
            &"x".repeat(64),
        ] {
            let e = validate_schema(bad).expect_err(bad).to_string();
            assert!(e.contains("schema"), "{e}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert!(!redact("host=h password=secret").contains("secret"));
        let debug = format!("{:?}", PostgresConfig::new("postgres://u:hunter2@h/db"));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("postgres://u:***@h/db"), "{debug}");
    }

    #[test]
    fn bad_url_is_a_clear_error() {
        let e = PostgresConfig::new("postgres://u:pw@h:notaport/db")
            .pg_config()
            .expect_err("bad port");
        let msg = e.to_string();
        assert!(msg.contains("invalid PostgreSQL URL"), "{msg}");
        assert!(!msg.contains("pw@"), "{msg}");
        let e = PostgresConfig::new("postgres://h/db")
            .with_pool_size(0)
            .pg_config()
            .expect_err("pool size");
        assert!(e.to_string().contains("pool_size"));
    }
}
