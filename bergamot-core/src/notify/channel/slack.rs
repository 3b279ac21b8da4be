//! The `slack` channel: Slack-compatible incoming-webhook JSON
//! (also understood by Mattermost, Rocket.Chat and others).

use super::http::{Poster, Target};
use super::message::{default_subject, kind_words, status_colour};
use super::Settings;
use crate::notify::{ChannelConfig, Notification, Notifier, SendError};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use std::time::Duration;

/// POSTs `{"text": ..., "attachments": [...]}` to an incoming-webhook URL.
///
/// Settings: `url` (required; its path, which holds the token, is never
/// shown in errors or logs), `channel`, `username`, `icon_emoji` (passed to
/// the webhook as given), `timeout` (default 10s). A contact's `chat` handle
/// (a member id like `U024BE7LH`) is mentioned; a contact's per-channel
/// `url` setting replaces the channel's URL for them. Status rules as for
/// `webhook`.
#[derive(Clone)]
pub struct SlackChannel {
    name: String,
    target: Target,
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
    timeout: Duration,
    poster: Poster,
}

impl std::fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackChannel")
            .field("name", &self.name)
            .field("url", &self.target.shown)
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SlackChannel {
    /// Builds the channel from its `[[channel]]` table.
    pub fn from_config(cfg: &ChannelConfig) -> crate::Result<Self> {
        let mut s = Settings::new(cfg);
        let target = Target::from_settings(&mut s, true);
        let channel = s.string("channel");
        let username = s.string("username");
        let icon_emoji = s.string("icon_emoji");
        let timeout = s.duration("timeout", super::webhook::DEFAULT_TIMEOUT);
        s.finish()?;
        let target = target.ok_or_else(|| super::config_error(cfg, "url", "is required"))?;
        Ok(SlackChannel {
            name: cfg.name.clone(),
            target,
            channel,
            username,
            icon_emoji,
            timeout,
            poster: Poster::new(),
        })
    }

    /// The message for `n`.
    pub fn payload(&self, n: &Notification) -> serde_json::Value {
        let mut text = default_subject(n);
        if let Some(chat) = n.recipient.chat.as_deref().filter(|c| !c.is_empty()) {
            text = format!("<@{chat}> {text}");
        }
        let mut fields = vec![
            json!({"title": "Status", "value": n.status.as_str(), "short": true}),
            json!({"title": "Host", "value": n.host, "short": true}),
            json!({"title": "Event", "value": kind_words(n.kind), "short": true}),
        ];
        if n.escalation > 0 {
            fields.push(json!({"title": "Escalation", "value": format!("step {}", n.escalation), "short": true}));
        }
        if let Some(a) = &n.author {
            let comment = n
                .comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            fields.push(json!({"title": "By", "value": format!("{a}{comment}"), "short": false}));
        }
        if let Some(id) = n.alert_id {
            fields.push(json!({"title": "Alert", "value": id.to_string(), "short": false}));
        }
        let mut body = json!({
            "text": text,
            "attachments": [{
                "fallback": text,
                "color": status_colour(n.status),
                "title": n.check,
                "text": n.output,
                "fields": fields,
                "footer": format!("Bergamot · notification {}", n.id),
                "ts": n.at.timestamp(),
            }],
        });
        for (key, value) in [
            ("channel", &self.channel),
            ("username", &self.username),
            ("icon_emoji", &self.icon_emoji),
        ] {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        body
    }
}

#[async_trait]
impl Notifier for SlackChannel {
    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let target = self.target.for_recipient(n, "slack", true)?;
        let body = Bytes::from(self.payload(n).to_string());
        let id = hyper::header::HeaderValue::from_str(&n.id.to_string())
            .map_err(|_| SendError::permanent("bad notification id"))?;
        let headers = [(
            hyper::header::HeaderName::from_static(super::webhook::ID_HEADER),
            id,
        )];
        self.poster
            .post("slack", &target, &headers, body, self.timeout)
            .await
    }
}
