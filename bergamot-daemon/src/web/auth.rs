//! Authentication and roles: users with argon2 password hashes (HTTP Basic),
//! API tokens stored as SHA-256 hashes (Bearer or `?token=`), and an optional
//! anonymous read-only mode. Roles: viewer < operator < admin.
//!
//! Secrets never reach a log line: errors name the user at most.
//!
//! Password checks are bounded: at most `max_password_checks` argon2
//! verifications run at once (each takes ~19 MiB), failed logins are counted
//! per user and per address and, past `login_failures_allowed`, each further
//! try is refused (429) until a delay that doubles per failure has passed,
//! and a wrong (user, password) pair is remembered for a short while (keyed by
//! a hash of the tried password, so the right password is never refused for
//! it). Every failed login is a log line naming the user and the address.

use super::ApiError;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::Engine as _;
use bergamot_core::config::WebLimits;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub use bergamot_core::config::Role;

/// The lower-case name of a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// `ty { name, role, .. }`: a credential's `Debug` that leaves its hash out.
fn debug_without_secret(
    f: &mut fmt::Formatter<'_>,
    ty: &str,
    name: &str,
    role: Role,
) -> fmt::Result {
    f.debug_struct(ty)
        .field("name", &name)
        .field("role", &role)
        .finish_non_exhaustive()
}

/// A user who logs in with HTTP Basic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// The user name.
    pub name: String,
    /// Argon2 PHC string (`$argon2id$v=19$...`), see `bergamotd hash-password`.
    pub password_hash: String,
    /// The user's role.
    pub role: Role,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_without_secret(f, "UserEntry", &self.name, self.role)
    }
}

/// An API token (Bearer); only its SHA-256 hash is kept.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// A name for logs and audit (`ci`, `grafana` ...).
    pub name: String,
    /// `sha256:<hex>` of the token, see [`hash_token`].
    pub token_hash: String,
    /// The token's role.
    pub role: Role,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_without_secret(f, "TokenEntry", &self.name, self.role)
    }
}

/// Who may use the web API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// Requests without credentials may read (as viewer).
    pub anonymous_read: bool,
    /// Users (HTTP Basic).
    pub users: Vec<UserEntry>,
    /// API tokens (Bearer or `?token=`).
    pub tokens: Vec<TokenEntry>,
    /// Origins a browser page may open `/ws` from; empty: same origin, see
    /// [`Auth::origin_allowed`].
    #[serde(default)]
    pub public_urls: Vec<String>,
    /// Connection, timeout and login limits.
    #[serde(default)]
    pub limits: WebLimits,
}

/// How a principal proved who it is, to re-check it after a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Source {
    /// No credentials.
    #[default]
    Anonymous,
    /// A user, with the password hash it logged in against.
    User(String),
    /// A token, with its configured hash.
    Token(String),
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User or token name; `anonymous` without credentials.
    pub name: String,
    /// The role.
    pub role: Role,
    /// Whether no credentials were given.
    pub anonymous: bool,
    pub(crate) source: Source,
}

impl Principal {
    /// Fails with 401 (anonymous) or 403 (known but too weak) unless the
    /// principal has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else if self.anonymous {
            Err(ApiError::unauthorized(format!(
                "this needs the {} role: send credentials",
                role_name(role)
            )))
        } else {
            Err(ApiError::forbidden(format!(
                "{} has the {} role; this needs {}",
                self.name,
                role_name(self.role),
                role_name(role)
            )))
        }
    }

    fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            role: Role::Viewer,
            anonymous: true,
            source: Source::Anonymous,
        }
    }
}

/// Hashes a password into an argon2id PHC string (default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// The stored form of an API token: `sha256:<hex>`.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(token.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").ok();
    }
    s
}

/// How long a wrong (user, password) pair is answered from memory.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// How long a websocket ticket ([`Auth::issue_ticket`]) is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Entries a cache or counter map holds before old ones are pruned.
const MAX_ENTRIES: usize = 10_000;

/// Failed logins of one user or one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The delay after `count` failures: none up to `allowed`, then 1 s
/// doubling per failure, at most `max`.
fn delay_after(count: u32, allowed: u32, max: Duration) -> Duration {
    if count <= allowed {
        return Duration::ZERO;
    }
    let exp = (count - allowed - 1).min(20);
    Duration::from_secs(1u64 << exp).min(max)
}

#[derive(Debug, Default)]
struct Throttle {
    users: HashMap<String, Failures>,
    addrs: HashMap<IpAddr, Failures>,
}

impl Throttle {
    fn prune(&mut self, now: Instant, max: Duration) {
        if self.users.len() + self.addrs.len() > MAX_ENTRIES {
            self.users.retain(|_, f| now.duration_since(f.last) < max);
            self.addrs.retain(|_, f| now.duration_since(f.last) < max);
            if self.users.len() + self.addrs.len() > MAX_ENTRIES {
                self.users.clear();
                self.addrs.clear();
            }
        }
    }

    /// How long the caller must still wait, if at all.
    fn wait(&self, user: Option<&str>, addr: Option<IpAddr>, l: &WebLimits) -> Option<Duration> {
        let now = Instant::now();
        let left = |f: &Failures| {
            let d = delay_after(f.count, l.login_failures_allowed, l.login_delay_max);
            (f.last + d).checked_duration_since(now)
        };
        let u = user.and_then(|u| self.users.get(u)).and_then(left);
        let a = addr.and_then(|a| self.addrs.get(&a)).and_then(left);
        u.max(a).filter(|d| !d.is_zero())
    }

    fn fail(&mut self, user: Option<&str>, addr: Option<IpAddr>, l: &WebLimits) {
        let now = Instant::now();
        self.prune(now, l.login_delay_max);
        let bump = |f: &mut Failures| {
            // A quiet period as long as the longest delay forgives the past.
            if now.duration_since(f.last) > l.login_delay_max {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        };
        let fresh = || Failures {
            count: 0,
            last: now,
        };
        if let Some(u) = user {
            bump(self.users.entry(u.to_string()).or_insert_with(fresh));
        }
        if let Some(a) = addr {
            bump(self.addrs.entry(a).or_insert_with(fresh));
        }
    }

    fn undo(&mut self, user: Option<&str>, addr: Option<IpAddr>) {
        let dec = |f: &mut Failures| f.count = f.count.saturating_sub(1);
        if let Some(f) = user.and_then(|u| self.users.get_mut(u)) {
            dec(f);
        }
        if let Some(f) = addr.and_then(|a| self.addrs.get_mut(&a)) {
            dec(f);
        }
    }

    fn succeed(&mut self, user: &str) {
        self.users.remove(user);
    }
}

struct Inner {
    config: RwLock<Arc<AuthConfig>>,
    verified: Mutex<HashMap<(String, String), Role>>,
    rejected: Mutex<HashMap<(String, String), Instant>>,
    checks: Semaphore,
    throttle: Mutex<Throttle>,
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
}

/// Checks credentials against an [`AuthConfig`] (replaceable at run time,
/// see [`Auth::replace`]).
///
/// Verified Basic credentials are cached by (user, SHA-256 of password) so
/// that argon2, slow by design, runs once per user and password, not per request.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `token` query parameter.
    pub token: Option<&'a str>,
    /// A websocket ticket (`ticket` query parameter of `/ws` only).
    pub ticket: Option<&'a str>,
    /// The client's address (for throttling and the log).
    pub peer: Option<IpAddr>,
}

impl Auth {
    /// Builds an authenticator.
    pub fn new(config: AuthConfig) -> Self {
        let checks = Semaphore::new(config.limits.max_password_checks.max(1));
        Auth {
            inner: Arc::new(Inner {
                config: RwLock::new(Arc::new(config)),
                verified: Mutex::new(HashMap::new()),
                rejected: Mutex::new(HashMap::new()),
                checks,
                throttle: Mutex::new(Throttle::default()),
                tickets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<AuthConfig> {
        self.inner.config.read().clone()
    }

    /// Replaces users, tokens, anonymous read and public URLs at once (a
    /// reload); drops every cached verdict and every ticket whose principal
    /// the new configuration no longer allows. The concurrency limit of
    /// password checks stays as at start.
    pub fn replace(&self, config: AuthConfig) {
        *self.inner.config.write() = Arc::new(config);
        self.inner.verified.lock().clear();
        self.inner.rejected.lock().clear();
        let mut tickets = self.inner.tickets.lock();
        let keep: Vec<_> = tickets
            .iter()
            .filter(|(_, (p, _))| self.still_allowed(p))
            .map(|(k, _)| k.clone())
            .collect();
        tickets.retain(|k, _| keep.contains(k));
    }

    /// Whether the configuration in force still accepts `p` with its role
    /// (same user with the same password hash, same token, or anonymous read).
    pub fn still_allowed(&self, p: &Principal) -> bool {
        let c = self.config();
        match &p.source {
            Source::Anonymous => c.anonymous_read,
            Source::User(hash) => c
                .users
                .iter()
                .any(|u| u.name == p.name && &u.password_hash == hash && u.role == p.role),
            Source::Token(hash) => c.tokens.iter().any(|t| {
                p.name == format!("token:{}", t.name) && &t.token_hash == hash && t.role == p.role
            }),
        }
    }

    /// Whether anonymous reads are allowed.
    pub fn anonymous_read(&self) -> bool {
        self.config().anonymous_read
    }

    /// Whether a browser page of `origin` may open the websocket of a server
    /// it reached as `host`. No `Origin` (not a browser): yes. With
    /// `public_urls` configured: only those origins. Without: only the same
    /// origin, and only when the host is an IP address or `localhost` (a
    /// DNS name must be listed in `public_urls`, which also keeps DNS
    /// rebinding pages out).
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Some(origin) = bergamot_core::config::origin_of(origin) else {
            return false;
        };
        let c = self.config();
        if !c.public_urls.is_empty() {
            return c.public_urls.contains(&origin);
        }
        let Some(host) = host else {
            return false;
        };
        let hostname = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        let hostname = hostname.trim_start_matches('[').trim_end_matches(']');
        let literal =
            hostname.parse::<IpAddr>().is_ok() || hostname.eq_ignore_ascii_case("localhost");
        literal
            && ["http", "https"].iter().any(|scheme| {
                bergamot_core::config::origin_of(&format!("{scheme}://{host}")).as_deref()
                    == Some(origin.as_str())
            })
    }

    /// A short-lived ticket (valid [`TICKET_TTL`]) that authenticates a
    /// websocket as `p` (a browser cannot send headers on a websocket, and a
    /// password never goes into a URL). Kept in this node's memory only.
    pub fn issue_ticket(&self, p: &Principal) -> String {
        use argon2::password_hash::rand_core::RngCore as _;
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let ticket = hex(&raw);
        let now = Instant::now();
        let mut tickets = self.inner.tickets.lock();
        if tickets.len() > MAX_ENTRIES {
            tickets.retain(|_, (_, exp)| *exp > now);
            if tickets.len() > MAX_ENTRIES {
                tickets.clear();
            }
        }
        tickets.insert(hash_token(&ticket), (p.clone(), now + TICKET_TTL));
        ticket
    }

    /// Authenticates from an `Authorization` header value and/or a `token`
    /// query parameter. No credentials: anonymous viewer if allowed, else 401.
    /// Wrong credentials: 401.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<Principal, ApiError> {
        self.check(Credentials {
            authorization,
            token: query_token,
            ..Credentials::default()
        })
        .await
    }

    /// Authenticates what a request presented (see [`Auth::authenticate`]);
    /// 429 while the user or the address is throttled after failed logins.
    pub async fn check(&self, c: Credentials<'_>) -> Result<Principal, ApiError> {
        if let Some(header) = c.authorization {
            let header = header.trim();
            if let Some(token) = strip_prefix_ci(header, "bearer ") {
                return self.token(token.trim(), c.peer).await;
            }
            if let Some(b64) = strip_prefix_ci(header, "basic ") {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| ApiError::unauthorized("malformed Basic credentials"))?;
                let raw = String::from_utf8(raw)
                    .map_err(|_| ApiError::unauthorized("malformed Basic credentials"))?;
                let (user, password) = raw
                    .split_once(':')
                    .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
                return self.basic(user, password, c.peer).await;
            }
            return Err(ApiError::unauthorized(
                "unsupported Authorization scheme (use Basic or Bearer)",
            ));
        }
        if let Some(ticket) = c.ticket {
            return self.ticket(ticket, c.peer);
        }
        if let Some(token) = c.token {
            return self.token(token, c.peer).await;
        }
        if self.anonymous_read() {
            Ok(Principal::anonymous())
        } else {
            Err(ApiError::unauthorized("credentials required"))
        }
    }

    fn ticket(&self, ticket: &str, peer: Option<IpAddr>) -> Result<Principal, ApiError> {
        let found = self.inner.tickets.lock().get(&hash_token(ticket)).cloned();
        match found {
            Some((p, exp)) if exp > Instant::now() && self.still_allowed(&p) => Ok(p),
            _ => {
                tracing::warn!(address = %show(peer), "websocket ticket refused (unknown or expired)");
                Err(ApiError::unauthorized("unknown or expired ticket"))
            }
        }
    }

    /// Refuses (429) while the user or the address waits out a delay;
    /// otherwise counts this try as a failure (undone on success), in one
    /// step, so that parallel tries cannot all pass before one fails.
    fn admit(&self, user: Option<&str>, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let limits = self.config().limits.clone();
        let mut t = self.inner.throttle.lock();
        if let Some(wait) = t.wait(user, peer, &limits) {
            drop(t);
            tracing::warn!(
                user = user.unwrap_or("-"),
                address = %show(peer),
                "failed login: refused, too many failed logins"
            );
            return Err(ApiError::too_many_requests(wait));
        }
        t.fail(user, peer, &limits);
        Ok(())
    }

    fn failed(&self, user: Option<&str>, peer: Option<IpAddr>, reason: &str) {
        tracing::warn!(user = user.unwrap_or("-"), address = %show(peer), reason, "failed login");
    }

    async fn token(&self, token: &str, peer: Option<IpAddr>) -> Result<Principal, ApiError> {
        let hashed = hash_token(token);
        let principal = |t: &TokenEntry| Principal {
            name: format!("token:{}", t.name),
            role: t.role,
            anonymous: false,
            source: Source::Token(t.token_hash.clone()),
        };
        let config = self.config();
        let found = config
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.token_hash.as_bytes(), hashed.as_bytes()));
        if let Some(t) = found {
            return Ok(principal(t));
        }
        self.admit(None, peer)?;
        // Tokens may also be stored as argon2 PHC strings: verify once, then cache.
        for t in config
            .tokens
            .iter()
            .filter(|t| t.token_hash.starts_with('$'))
        {
            let key = (format!("\0token:{}", t.name), hashed.clone());
            if self.inner.verified.lock().contains_key(&key) {
                return Ok(principal(t));
            }
            if self.verify(token, &t.token_hash).await {
                self.remember(key, t.role);
                return Ok(principal(t));
            }
        }
        self.failed(None, peer, "unknown token");
        Err(ApiError::unauthorized("unknown token"))
    }

    fn remember(&self, key: (String, String), role: Role) {
        let mut cache = self.inner.verified.lock();
        if cache.len() > MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, role);
    }

    /// Runs one argon2 verification, waiting for a free slot.
    async fn verify(&self, secret: &str, phc: &str) -> bool {
        let Ok(_permit) = self.inner.checks.acquire().await else {
            return false;
        };
        verify_phc(secret.to_string(), phc.to_string()).await
    }

    async fn basic(
        &self,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
        let wrong = || ApiError::unauthorized("wrong user or password");
        let key = (user.to_string(), hash_token(password));
        let config = self.config();
        let entry = config.users.iter().find(|u| u.name == user).cloned();
        if let (Some(role), Some(e)) = (self.inner.verified.lock().get(&key).copied(), &entry) {
            return Ok(Principal {
                name: user.to_string(),
                role,
                anonymous: false,
                source: Source::User(e.password_hash.clone()),
            });
        }
        let now = Instant::now();
        let known_wrong = self
            .inner
            .rejected
            .lock()
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < NEGATIVE_TTL);
        self.admit(Some(user), peer)?;
        let Some(entry) = entry else {
            self.failed(Some(user), peer, "unknown user");
            return Err(wrong());
        };
        if known_wrong {
            self.failed(Some(user), peer, "wrong password (remembered)");
            return Err(wrong());
        }
        if !self.verify(password, &entry.password_hash).await {
            let mut rejected = self.inner.rejected.lock();
            if rejected.len() > MAX_ENTRIES {
                rejected.retain(|_, at| now.duration_since(*at) < NEGATIVE_TTL);
                if rejected.len() > MAX_ENTRIES {
                    rejected.clear();
                }
            }
            rejected.insert(key, now);
            drop(rejected);
            self.failed(Some(user), peer, "wrong password");
            return Err(wrong());
        }
        {
            let mut t = self.inner.throttle.lock();
            t.undo(Some(user), peer);
            t.succeed(user);
        }
        self.remember(key, entry.role);
        Ok(Principal {
            name: entry.name,
            role: entry.role,
            anonymous: false,
            source: Source::User(entry.password_hash),
        })
    }
}

fn show(peer: Option<IpAddr>) -> String {
    peer.map_or_else(|| "-".to_string(), |p| p.to_string())
}

/// Verifies a secret against an argon2 PHC string off the async threads.
async fn verify_phc(secret: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

impl From<&bergamot_core::config::WebConfig> for AuthConfig {
    fn from(w: &bergamot_core::config::WebConfig) -> Self {
        AuthConfig {
            anonymous_read: w.anonymous_read,
            users: w
                .users
                .iter()
                .map(|u| UserEntry {
                    name: u.name.clone(),
                    password_hash: u.password_hash.clone(),
                    role: u.role,
                })
                .collect(),
            tokens: w
                .tokens
                .iter()
                .map(|t| TokenEntry {
                    name: t.name.clone(),
                    token_hash: t.token_hash.clone(),
                    role: t.role,
                })
                .collect(),
            public_urls: w.public_urls.clone(),
            limits: w.limits.clone(),
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_hash(pw: &str) -> String {
        let params = argon2::Params::new(8, 1, 1, None).expect("valid params");
        let a = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        a.hash_password(pw.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    }

    fn auth(anonymous_read: bool) -> Auth {
        Auth::new(AuthConfig {
            anonymous_read,
            users: vec![UserEntry {
                name: "op".into(),
                password_hash: cheap_hash("secret"),
                role: Role::Operator,
            }],
            tokens: vec![TokenEntry {
                name: "ci".into(),
                token_hash: hash_token("tok"),
                role: Role::Admin,
            }],
            ..AuthConfig::default()
        })
    }

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[tokio::test]
    async fn basic_token_and_anonymous() {
        let a = auth(false);
        let p = a
            .authenticate(Some(&basic("op", "secret")), None)
            .await
            .expect("ok");
        assert_eq!(p.role, Role::Operator);
        // Cached path gives the same answer.
        let p = a
            .authenticate(Some(&basic("op", "secret")), None)
            .await
            .expect("ok");
        assert_eq!(p.role, Role::Operator);
        assert_eq!(
            a.authenticate(Some(&basic("op", "wrong")), None)
                .await
                .map_err(|e| e.status),
            Err(warp::http::StatusCode::UNAUTHORIZED)
        );
        let p = a.authenticate(Some("Bearer tok"), None).await.expect("ok");
        assert_eq!(p.role, Role::Admin);
        let p = a.authenticate(None, Some("tok")).await.expect("ok");
        assert_eq!(p.role, Role::Admin);
        assert!(a.authenticate(None, None).await.is_err());
        let p = auth(true).authenticate(None, None).await.expect("anon");
        assert!(p.anonymous);
        assert_eq!(
            p.require(Role::Operator).map_err(|e| e.status),
            Err(warp::http::StatusCode::UNAUTHORIZED)
        );
    }

    #[tokio::test]
    async fn a_remembered_wrong_password_never_refuses_the_right_one() {
        let a = auth(false);
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        fn creds(h: &str, peer: Option<IpAddr>) -> Credentials<'_> {
            Credentials {
                authorization: Some(h),
                peer,
                ..Credentials::default()
            }
        }
        let wrong = basic("op", "wrong");
        for _ in 0..2 {
            let e = a.check(creds(&wrong, peer)).await.expect_err("wrong");
            assert_eq!(e.status, warp::http::StatusCode::UNAUTHORIZED);
        }
        let right = basic("op", "secret");
        let p = a.check(creds(&right, peer)).await.expect("right password");
        assert_eq!(p.role, Role::Operator);
    }

    #[tokio::test]
    async fn repeated_failures_are_throttled_per_user_and_per_address() {
        let a = auth(false);
        let mut c = (*a.config()).clone();
        c.limits.login_failures_allowed = 2;
        a.replace(c);
        let from = |ip: [u8; 4], h: &str| {
            let a = a.clone();
            let h = h.to_string();
            async move {
                a.check(Credentials {
                    authorization: Some(&h),
                    peer: Some(IpAddr::from(ip)),
                    ..Credentials::default()
                })
                .await
                .map_err(|e| e.status)
            }
        };
        // A session verified before the attack keeps working during it.
        assert!(from([10, 0, 0, 9], &basic("op", "secret")).await.is_ok());
        let mut statuses = Vec::new();
        for i in 0..5 {
            statuses.push(
                from([10, 0, 0, 1], &basic("op", &format!("w{i}")))
                    .await
                    .expect_err("wrong"),
            );
        }
        use warp::http::StatusCode as S;
        assert_eq!(statuses[..3], [S::UNAUTHORIZED; 3], "{statuses:?}");
        assert_eq!(statuses[3..], [S::TOO_MANY_REQUESTS; 2], "{statuses:?}");
        // The user is throttled from another address too (no argon2 runs),
        // and the address for another user.
        assert_eq!(
            from([10, 0, 0, 2], &basic("op", "w9")).await,
            Err(S::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            from([10, 0, 0, 1], &basic("nobody", "x")).await,
            Err(S::TOO_MANY_REQUESTS)
        );
        // Already verified credentials are answered from the cache.
        assert!(from([10, 0, 0, 9], &basic("op", "secret")).await.is_ok());
        assert_eq!(
            delay_after(3, 2, Duration::from_secs(300)),
            Duration::from_secs(1)
        );
        assert_eq!(
            delay_after(5, 2, Duration::from_secs(300)),
            Duration::from_secs(4)
        );
        assert_eq!(
            delay_after(40, 2, Duration::from_secs(300)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn origins_same_host_literal_or_configured() {
        let a = auth(false);
        assert!(a.origin_allowed(None, None));
        assert!(a.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(a.origin_allowed(Some("http://localhost:8080"), Some("localhost:8080")));
        assert!(!a.origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080")));
        assert!(!a.origin_allowed(Some("http://evil.example:8080"), Some("evil.example:8080")));
        assert!(!a.origin_allowed(Some("null"), Some("127.0.0.1:8080")));
        let mut c = (*a.config()).clone();
        c.public_urls = vec!["https://mon.example.com".into()];
        a.replace(c);
        assert!(a.origin_allowed(Some("https://mon.example.com"), Some("10.0.0.1:8080")));
        assert!(!a.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
    }

    #[test]
    fn hashes_verify_and_debug_hides_secrets() {
        let phc = hash_password("pw").expect("hash");
        let parsed = PasswordHash::new(&phc).expect("phc");
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        let u = UserEntry {
            name: "a".into(),
            password_hash: phc.clone(),
            role: Role::Admin,
        };
        assert!(!format!("{u:?}").contains(&phc));
    }
}
