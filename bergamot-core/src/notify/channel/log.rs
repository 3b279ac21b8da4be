//! The `log` channel: for tests, demos and dry runs.

use super::message::{default_subject, notification_json};
use super::Settings;
use crate::notify::{ChannelConfig, Notification, Notifier, SendError};
use async_trait::async_trait;
use std::io::Write as _;
use std::path::PathBuf;

/// Logs each notification (`tracing`, info level, target
/// `bergamot::notify`) and, with the `path` setting, appends it as one line
/// of the JSON payload to that file (created if missing).
///
/// Sending always succeeds, except that a `path` that cannot be written is a
/// transient error (so a dry run never silently loses a line).
#[derive(Debug, Clone)]
pub(crate) struct LogChannel {
    name: String,
    path: Option<PathBuf>,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl LogChannel {
    /// Builds the channel from its `[[channel]]` table.
    pub(crate) fn from_config(cfg: &ChannelConfig) -> crate::Result<Self> {
        let mut s = Settings::new(cfg);
        let path = s.string("path");
        if path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            s.problem("path", "must not be empty");
        }
        s.finish()?;
        Ok(LogChannel {
            name: cfg.name.clone(),
            path: path.map(PathBuf::from),
            lock: Default::default(),
        })
    }
}

#[async_trait]
impl Notifier for LogChannel {
    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        tracing::info!(
            target: "bergamot::notify",
            channel = %self.name,
            id = %n.id,
            kind = %n.kind,
            check = %n.check,
            status = %n.status,
            recipient = %n.recipient.name,
            alert_id = ?n.alert_id,
            escalation = n.escalation,
            sequence = n.sequence,
            "notification: {}",
            default_subject(n)
        );
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut line = notification_json(n).to_string();
        line.push('\n');
        let _guard = self.lock.lock().await;
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| format!("cannot append to {}: {e}", path.display()))
        })
        .await
        .map_err(|e| SendError::transient(format!("log channel: {e}")))?;
        written.map_err(SendError::transient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.jsonl");
        let cfg = ChannelConfig {
            name: "dry".into(),
            kind: "log".into(),
            settings: serde_json::json!({"path": path.to_string_lossy()})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            file: String::new(),
            line: 0,
        };
        let ch = LogChannel::from_config(&cfg).expect("builds");
        let a = super::super::message::tests::sample();
        let b = super::super::message::tests::sample();
        ch.send(&a).await.expect("sent");
        ch.send(&b).await.expect("sent");
        let text = std::fs::read_to_string(&path).expect("read");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(ids, vec![a.id.to_string(), b.id.to_string()]);
        let bad = LogChannel {
            path: Some(dir.path().join("missing-dir/n.jsonl")),
            ..ch
        };
        let e = bad.send(&a).await.expect_err("cannot write");
        assert!(!e.permanent && e.reason.contains("cannot append"), "{e:?}");
    }
}
