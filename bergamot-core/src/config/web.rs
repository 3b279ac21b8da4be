//! The `[web]` section: what the daemon's HTTP API and websocket listen on
//! and who may use them. Plain data; the web layer verifies credentials.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// What a user or token may do. Ordered: each role may do everything the
/// roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read checks, groups, history.
    Viewer,
    /// Also act on checks: execute now, acknowledge, downtime, suppress.
    Operator,
    /// Also administer: reload configuration and everything else.
    Admin,
}

impl Role {
    /// Whether this role may do what `needed` may do.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// A web user (`[[web.users]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebUser {
    /// Login name, unique.
    pub name: String,
    /// The password's hash as a PHC string (`$argon2id$...` or bcrypt `$2b$...`).
    /// Stored as given; the web layer verifies passwords against it.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
}

/// An API token (`[[web.tokens]]`), sent as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebToken {
    /// A name for the token (shown in logs), unique.
    pub name: String,
    /// The token's hash (a PHC string, or whatever the web layer documents);
    /// the token itself never appears in the config.
    pub token_hash: String,
    /// What the token may do.
    pub role: Role,
}

/// The `[web]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebConfig {
    /// Address to listen on (`listen = "127.0.0.1:8080"`, the default).
    pub listen: SocketAddr,
    /// Whether requests without credentials may read (as [`Role::Viewer`]).
    /// Default false.
    pub anonymous_read: bool,
    /// Users that log in with a password.
    pub users: Vec<WebUser>,
    /// API tokens.
    pub tokens: Vec<WebToken>,
}

impl WebConfig {
    /// The default listen address, `127.0.0.1:8080`.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080);
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: Self::DEFAULT_LISTEN,
            anonymous_read: false,
            users: Vec::new(),
            tokens: Vec::new(),
        }
    }
}
