//! What channels say: subject lines, plain-text bodies and the versioned
//! JSON payload (webhook body, `command` stdin, `log` file lines).

use crate::model::Status;
use crate::notify::{Notification, NotificationKind};
use serde_json::json;

/// The version of the JSON payload ([`notification_json`]); bumped on any
/// change a receiver could notice other than an added field.
pub(crate) const PAYLOAD_VERSION: u32 = 1;

/// The notification as the documented, versioned JSON payload
/// (docs/notifications.md, "Channels"). It never contains the recipient's
/// per-contact settings (they may hold personal webhook URLs).
pub(crate) fn notification_json(n: &Notification) -> serde_json::Value {
    json!({
        "version": PAYLOAD_VERSION,
        "id": n.id,
        "kind": n.kind.as_str(),
        "check_id": n.check_id.to_string(),
        "check": n.check,
        "host": n.host,
        "status": n.status.as_str(),
        "output": n.output,
        "at": n.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "alert_id": n.alert_id,
        "alert_opened_at": n.alert_opened_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "escalation": n.escalation,
        "sequence": n.sequence,
        "author": n.author,
        "comment": n.comment,
        "channel": n.channel,
        "recipient": {
            "name": n.recipient.name,
            "email": n.recipient.email,
            "phone": n.recipient.phone,
            "chat": n.recipient.chat,
        },
        "subject": default_subject(n),
    })
}

/// The kind in words: `alert`, `flapping started`, `downtime ended` ...
pub(crate) fn kind_words(kind: NotificationKind) -> String {
    kind.as_str().replace('_', " ")
}

/// `[Bergamot] CRITICAL web1/http: alert`.
pub(crate) fn default_subject(n: &Notification) -> String {
    format!(
        "[Bergamot] {} {}: {}",
        n.status.as_str(),
        n.check,
        kind_words(n.kind)
    )
}

/// A plain-text message body: every field a reader needs, one per line.
pub(crate) fn text_body(n: &Notification) -> String {
    use std::fmt::Write as _;
    let mut b = String::new();
    writeln!(
        b,
        "{} is {} ({}).",
        n.check,
        n.status.as_str(),
        kind_words(n.kind)
    )
    .ok();
    writeln!(b).ok();
    writeln!(b, "Check:      {}", n.check).ok();
    writeln!(b, "Host:       {}", n.host).ok();
    writeln!(b, "Status:     {}", n.status.as_str()).ok();
    writeln!(b, "Output:     {}", n.output).ok();
    writeln!(
        b,
        "Event:      {} at {}",
        kind_words(n.kind),
        n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .ok();
    if let Some(id) = n.alert_id {
        writeln!(b, "Alert:      {id}").ok();
    }
    if let Some(t) = n.alert_opened_at {
        writeln!(
            b,
            "Opened:     {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .ok();
    }
    if n.escalation > 0 {
        writeln!(b, "Escalation: step {}", n.escalation).ok();
    }
    if n.sequence > 0 {
        writeln!(b, "Repeat:     {}", n.sequence).ok();
    }
    if let Some(a) = &n.author {
        let by = match n.kind {
            NotificationKind::Acknowledge => "Acked by",
            NotificationKind::Test => "Asked by",
            _ => "By",
        };
        writeln!(b, "{by:<11} {a}").ok();
    }
    if let Some(c) = &n.comment {
        writeln!(b, "Comment:    {c}").ok();
    }
    writeln!(b).ok();
    writeln!(
        b,
        "Sent to {} through channel {} (notification {}).",
        n.recipient.name, n.channel, n.id
    )
    .ok();
    b
}

/// A hex colour for the status (Slack attachments).
pub(crate) fn status_colour(status: Status) -> &'static str {
    match status {
        Status::Ok => "#2eb886",
        Status::Warning => "#daa038",
        Status::Critical | Status::Timeout | Status::Error | Status::Disconnected => "#a30200",
        Status::Unknown => "#7c4dff",
        _ => "#888888",
    }
}

/// The placeholders a [`Template`] may use.
pub(crate) const PLACEHOLDERS: [&str; 14] = [
    "kind",
    "status",
    "check",
    "host",
    "output",
    "at",
    "alert_id",
    "escalation",
    "sequence",
    "author",
    "comment",
    "channel",
    "recipient",
    "id",
];

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(&'static str),
}

/// A text with `{placeholder}`s (`{status}`, `{check}`, `{host}`, `{kind}`,
/// `{output}`, `{at}`, `{alert_id}`, `{escalation}`, `{sequence}`,
/// `{author}`, `{comment}`, `{channel}`, `{recipient}`, `{id}`); `{{` and
/// `}}` are literal braces. Checked when the channel is built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Part>);

impl Template {
    /// Parses `text`, naming the first unknown placeholder or lone brace.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed {{ in {text:?}")),
                        }
                    }
                    let field = PLACEHOLDERS
                        .iter()
                        .find(|p| **p == name.trim())
                        .ok_or_else(|| {
                            format!(
                                "unknown placeholder {{{name}}} (known: {})",
                                PLACEHOLDERS.join(", ")
                            )
                        })?;
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => return Err(format!("lone }} in {text:?} (write }}}} for a brace)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template(parts))
    }

    /// The text for `n`; absent values render empty.
    pub(crate) fn render(&self, n: &Notification) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&field(n, f)),
            }
        }
        out
    }
}

fn field(n: &Notification, name: &str) -> String {
    match name {
        "kind" => kind_words(n.kind),
        "status" => n.status.as_str().to_string(),
        "check" => n.check.clone(),
        "host" => n.host.clone(),
        "output" => n.output.lines().next().unwrap_or("").to_string(),
        "at" => n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "alert_id" => n.alert_id.map(|a| a.to_string()).unwrap_or_default(),
        "escalation" => n.escalation.to_string(),
        "sequence" => n.sequence.to_string(),
        "author" => n.author.clone().unwrap_or_default(),
        "comment" => n.comment.clone().unwrap_or_default(),
        "channel" => n.channel.clone(),
        "recipient" => n.recipient.name.clone(),
        "id" => n.id.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::CheckId;
    use uuid::Uuid;

    /// An alert of web1/http to alice, escalation step 1, with a two-line
    /// output.
    pub(crate) fn sample() -> Notification {
        let job = crate::conformance::notify::job(Uuid::new_v4(), CheckId::random(), "alice", 0, 0);
        let mut n = job.notification;
        n.output = "HTTP CRITICAL - 500\nsecond line".into();
        n.escalation = 1;
        n.recipient.email = Some("alice@example.com".into());
        n.channel = "ops".into();
        n
    }

    #[test]
    fn subject_is_clear() {
        let mut n = sample();
        assert_eq!(default_subject(&n), "[Bergamot] CRITICAL web1/http: alert");
        n.kind = NotificationKind::FlappingStarted;
        assert_eq!(
            default_subject(&n),
            "[Bergamot] CRITICAL web1/http: flapping started"
        );
    }

    #[test]
    fn templates_render_and_reject_unknown_placeholders() {
        let n = sample();
        let t = Template::parse("{{x}} {status} on {host}: {output}").expect("parses");
        assert_eq!(t.render(&n), "{x} CRITICAL on web1: HTTP CRITICAL - 500");
        let e = Template::parse("{stat}").expect_err("unknown");
        assert!(e.contains("unknown placeholder {stat}"), "{e}");
        assert!(Template::parse("{status").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn body_names_everything() {
        let mut n = sample();
        n.kind = NotificationKind::Acknowledge;
        n.author = Some("bob".into());
        n.comment = Some("on it".into());
        let b = text_body(&n);
        for want in [
            "web1/http",
            "CRITICAL",
            "HTTP CRITICAL - 500",
            "Acked by",
            "bob",
            "on it",
            "step 1",
        ] {
            assert!(b.contains(want), "{want} missing in {b}");
        }
        assert!(b.contains(&n.alert_id.map(|a| a.to_string()).unwrap_or_default()));
    }

    #[test]
    fn payload_is_versioned_and_leaves_out_contact_settings() {
        let mut n = sample();
        n.recipient
            .settings
            .insert("url".into(), "https://secret".into());
        let v = notification_json(&n);
        assert_eq!(v["version"], 1);
        assert_eq!(v["id"], n.id.to_string());
        assert_eq!(v["kind"], "alert");
        assert_eq!(v["status"], "CRITICAL");
        assert_eq!(v["recipient"]["email"], "alice@example.com");
        assert!(!v.to_string().contains("https://secret"));
    }
}
