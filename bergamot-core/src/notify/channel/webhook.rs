//! The `webhook` channel: POSTs the versioned JSON payload to a URL.

use super::http::{parse_headers, Poster, Target};
use super::message::notification_json;
use super::Settings;
use crate::notify::{ChannelConfig, Notification, Notifier, SendError};
use async_trait::async_trait;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use hyper::header::{HeaderName, HeaderValue};
use std::time::Duration;

/// The header carrying the notification (job) id, for receiver-side dedup.
pub(crate) const ID_HEADER: &str = "x-bergamot-notification-id";
/// The same id as a conventional idempotency key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// `sha256=<hex HMAC-SHA256 of the body with the channel's secret>`.
pub(crate) const SIGNATURE_HEADER: &str = "x-bergamot-signature";
/// The notification's kind (`alert`, `recovery`, ...).
pub(super) const EVENT_HEADER: &str = "x-bergamot-event";

/// Default time for one whole POST (connect to response).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs the JSON payload ([`notification_json`](super::message::notification_json)) to `url`.
///
/// Settings: `url` (required; `http://` or `https://`, userinfo becomes
/// basic auth), `headers` (table of extra headers), `secret` (signs the
/// body: [`SIGNATURE_HEADER`]), `timeout` (default 10s). A contact's
/// per-channel `url` setting replaces the channel's URL for them.
///
/// 2xx is sent; 408, 429, 5xx, a timeout or a connection error are
/// transient; other statuses are permanent.
#[derive(Clone)]
pub(crate) struct WebhookChannel {
    name: String,
    target: Target,
    headers: Vec<(HeaderName, HeaderValue)>,
    secret: Option<Vec<u8>>,
    timeout: Duration,
    poster: Poster,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("url", &self.target.shown)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookChannel {
    /// Builds the channel from its `[[channel]]` table.
    pub(crate) fn from_config(cfg: &ChannelConfig) -> crate::Result<Self> {
        let mut s = Settings::new(cfg);
        let target = Target::from_settings(&mut s, false);
        let headers = match s.string_map("headers").map(|m| parse_headers(&m)) {
            None => Vec::new(),
            Some(Ok(h)) => h,
            Some(Err((key, e))) => {
                s.problem(&format!("headers.{key}"), e);
                Vec::new()
            }
        };
        let secret = s.string("secret");
        if secret.as_deref().is_some_and(str::is_empty) {
            s.problem("secret", "must not be empty");
        }
        let timeout = s.duration("timeout", DEFAULT_TIMEOUT);
        s.finish()?;
        let target = target.ok_or_else(|| super::config_error(cfg, "url", "is required"))?;
        Ok(WebhookChannel {
            name: cfg.name.clone(),
            target,
            headers,
            secret: secret.map(String::into_bytes),
            timeout,
            poster: Poster::new(),
        })
    }
}

/// `sha256=<hex>` of `body` keyed with `secret`.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    let mut out = String::from("sha256=");
    for b in mac.finalize().into_bytes() {
        write!(out, "{b:02x}").ok();
    }
    out
}

#[async_trait]
impl Notifier for WebhookChannel {
    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let target = self.target.for_recipient(n, "webhook", false)?;
        let body = Bytes::from(notification_json(n).to_string());
        let mut headers = self.headers.clone();
        let id = HeaderValue::from_str(&n.id.to_string())
            .map_err(|_| SendError::permanent("bad notification id"))?;
        headers.push((HeaderName::from_static(ID_HEADER), id.clone()));
        headers.push((HeaderName::from_static(IDEMPOTENCY_HEADER), id));
        headers.push((
            HeaderName::from_static(EVENT_HEADER),
            HeaderValue::from_static(n.kind.as_str()),
        ));
        if let Some(secret) = &self.secret {
            let sig = HeaderValue::from_str(&signature(secret, &body))
                .map_err(|_| SendError::permanent("bad signature header"))?;
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), sig));
        }
        self.poster
            .post("webhook", &target, &headers, body, self.timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let cfg = ChannelConfig {
            name: "hook".into(),
            kind: "webhook".into(),
            settings: serde_json::json!({
                "url": "https://u:topsecretpw@example.com/h?token=tok123",
                "secret": "hmackey99",
                "headers": {"Authorization": "Bearer bearer77"},
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            file: String::new(),
            line: 0,
        };
        let w = WebhookChannel::from_config(&cfg).expect("builds");
        let d = format!("{w:?}");
        for secret in ["topsecretpw", "tok123", "hmackey99", "bearer77"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(d.contains("example.com"), "{d}");
    }
}
