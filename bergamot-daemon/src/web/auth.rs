//! Authentication and roles: users with argon2 password hashes (HTTP Basic),
//! API tokens stored as SHA-256 hashes (Bearer or `?token=`), and an optional
//! anonymous read-only mode. Roles: viewer < operator < admin.
//!
//! Secrets never reach a log line: errors name the user at most.

use super::ApiError;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use bergamot_core::config::Role;

/// The lower-case name of a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
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
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
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
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
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
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Checks credentials against an [`AuthConfig`].
///
/// Verified Basic credentials are cached by (user, SHA-256 of password) so
/// that argon2, slow by design, runs once per user and password, not per request.
#[derive(Debug, Clone)]
pub struct Auth {
    config: Arc<AuthConfig>,
    verified: Arc<Mutex<HashMap<(String, String), Role>>>,
}

impl Auth {
    /// Builds an authenticator.
    pub fn new(config: AuthConfig) -> Self {
        Auth {
            config: Arc::new(config),
            verified: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether anonymous reads are allowed.
    pub fn anonymous_read(&self) -> bool {
        self.config.anonymous_read
    }

    /// Authenticates from an `Authorization` header value and/or a `token`
    /// query parameter. No credentials: anonymous viewer if allowed, else 401.
    /// Wrong credentials: 401.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<Principal, ApiError> {
        if let Some(header) = authorization {
            let header = header.trim();
            if let Some(token) = strip_prefix_ci(header, "bearer ") {
                return self.token(token.trim()).await;
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
                return self.basic(user, password).await;
            }
            return Err(ApiError::unauthorized(
                "unsupported Authorization scheme (use Basic or Bearer)",
            ));
        }
        if let Some(token) = query_token {
            return self.token(token).await;
        }
        if self.config.anonymous_read {
            Ok(Principal {
                name: "anonymous".into(),
                role: Role::Viewer,
                anonymous: true,
            })
        } else {
            Err(ApiError::unauthorized("credentials required"))
        }
    }

    async fn token(&self, token: &str) -> Result<Principal, ApiError> {
        let hashed = hash_token(token);
        let principal = |t: &TokenEntry| Principal {
            name: format!("token:{}", t.name),
            role: t.role,
            anonymous: false,
        };
        let found = self
            .config
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.token_hash.as_bytes(), hashed.as_bytes()));
        if let Some(t) = found {
            return Ok(principal(t));
        }
        // Tokens may also be stored as argon2 PHC strings: verify once, then cache.
        for t in self
            .config
            .tokens
            .iter()
            .filter(|t| t.token_hash.starts_with('$'))
        {
            let key = (format!("\0token:{}", t.name), hashed.clone());
            if self.verified.lock().contains_key(&key) {
                return Ok(principal(t));
            }
            if verify_phc(token.to_string(), t.token_hash.clone()).await {
                self.remember(key, t.role);
                return Ok(principal(t));
            }
        }
        Err(ApiError::unauthorized("unknown token"))
    }

    fn remember(&self, key: (String, String), role: Role) {
        let mut cache = self.verified.lock();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, role);
    }

    async fn basic(&self, user: &str, password: &str) -> Result<Principal, ApiError> {
        let key = (user.to_string(), hash_token(password));
        if let Some(role) = self.verified.lock().get(&key).copied() {
            return Ok(Principal {
                name: user.to_string(),
                role,
                anonymous: false,
            });
        }
        let entry = self
            .config
            .users
            .iter()
            .find(|u| u.name == user)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("wrong user or password"))?;
        if !verify_phc(password.to_string(), entry.password_hash.clone()).await {
            return Err(ApiError::unauthorized("wrong user or password"));
        }
        self.remember(key, entry.role);
        Ok(Principal {
            name: entry.name,
            role: entry.role,
            anonymous: false,
        })
    }
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
