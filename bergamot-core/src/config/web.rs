//! The `[web]` section: what the daemon's HTTP API and websocket listen on
//! and who may use them. Plain data; the web layer verifies credentials.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

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
    /// Origins (`scheme://host[:port]`, lower case) a browser page may open
    /// `/ws` from (`public_urls`). Empty: the listen address's own origins.
    pub public_urls: Vec<String>,
    /// Connection, timeout and login-throttling limits.
    pub limits: WebLimits,
}

/// Limits of the web node (`[web]` keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebLimits {
    /// A connection must send a complete request head within this time, also
    /// between keep-alive requests (`header_read_timeout`, default 10 s).
    pub header_read_timeout: Duration,
    /// A request (body read and answer) must finish within this time, else
    /// 408 (`request_timeout`, default 30 s). Websockets, once upgraded, are
    /// not bound by it (they have their own ping rules).
    pub request_timeout: Duration,
    /// Open connections in total; more are closed at accept
    /// (`max_connections`, default 1024).
    pub max_connections: usize,
    /// Open connections from one IP address; more are closed at accept
    /// (`max_connections_per_address`, default 64).
    pub max_connections_per_address: usize,
    /// Password (argon2) verifications running at once; more wait
    /// (`max_password_checks`, default 2).
    pub max_password_checks: usize,
    /// Failed logins (per user and per address) before each further try is
    /// delayed (`login_failures_allowed`, default 5).
    pub login_failures_allowed: u32,
    /// The longest delay between tries after repeated failures; the delay
    /// doubles from 1 s per failure up to this (`login_delay_max`, default 5 min).
    pub login_delay_max: Duration,
}

impl Default for WebLimits {
    fn default() -> Self {
        WebLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 64,
            max_password_checks: 2,
            login_failures_allowed: 5,
            login_delay_max: Duration::from_secs(300),
        }
    }
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
            public_urls: Vec::new(),
            limits: WebLimits::default(),
        }
    }
}

/// The origin (`scheme://host[:port]`, lower case, default port dropped) of
/// an `http`/`https` URL, as browsers send it in `Origin`; `None` if `url` is
/// not such a URL.
pub fn origin_of(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            origin_of("HTTPS://Mon.Example.com:443/x?y").as_deref(),
            Some("https://mon.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("http://"), None);
        assert_eq!(origin_of("http://u:p@x"), None);
    }
}
