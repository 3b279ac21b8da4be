//! The `email` channel: SMTP through `lettre` (tokio, rustls).

use super::message::{default_subject, text_body, Template};
use super::Settings;
use crate::notify::{ChannelConfig, Notification, Notifier, SendError};
use async_trait::async_trait;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SmtpSecurity {
    /// Plain SMTP (default port 25): only for a relay on a trusted network.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
}

/// Sends an e-mail per notification.
///
/// Settings: `host` (required), `port` (default by `security`: 25, 587,
/// 465), `security` (`"none"`, `"starttls"` (default) or `"tls"`),
/// `username` and `password` (both or neither), `from` (required, e.g.
/// `"Bergamot <bergamot@example.com>"`), `subject` (a text with
/// placeholders such as `{status}`, `{check}`, `{host}`, `{kind}`; default
/// `[Bergamot] {status} {check}: {kind}`), `ca_file` (a PEM file of extra
/// CA certificates to trust, for a private relay), `timeout` (default 10s,
/// bounds the whole send).
///
/// The To address is the contact's per-channel `email` setting, else the
/// contact's `email`; a contact with neither is a permanent error. SMTP
/// 5xx answers are permanent, everything else (4xx, connection, timeout)
/// transient. The Message-ID is `<NOTIFICATION-ID@bergamot>`, the same on
/// every retry.
#[derive(Clone)]
pub struct EmailChannel {
    name: String,
    host: String,
    port: u16,
    security: SmtpSecurity,
    from: Mailbox,
    subject: Option<Template>,
    timeout: Duration,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// Builds the channel from its `[[channel]]` table.
    pub fn from_config(cfg: &ChannelConfig) -> crate::Result<Self> {
        let mut s = Settings::new(cfg);
        let host = s.required_string("host");
        let security = match s.string("security").as_deref().map(str::trim) {
            None | Some("starttls") => SmtpSecurity::Starttls,
            Some("none") => SmtpSecurity::None,
            Some("tls") => SmtpSecurity::Tls,
            Some(other) => {
                s.problem(
                    "security",
                    format!("must be \"none\", \"starttls\" or \"tls\", got {other:?}"),
                );
                SmtpSecurity::Starttls
            }
        };
        let port = match s.integer("port", u64::from(u16::MAX)) {
            Some(0) => {
                s.problem("port", "must be from 1 to 65535");
                0
            }
            Some(p) => u16::try_from(p).unwrap_or(0),
            None => match security {
                SmtpSecurity::None => 25,
                SmtpSecurity::Starttls => 587,
                SmtpSecurity::Tls => 465,
            },
        };
        let username = s.string("username");
        let password = s.string("password");
        match (&username, &password) {
            (Some(_), None) => s.problem("password", "is required with username"),
            (None, Some(_)) => s.problem("username", "is required with password"),
            _ => {}
        }
        let from = s
            .required_string("from")
            .and_then(|f| match f.parse::<Mailbox>() {
                Ok(m) => Some(m),
                Err(e) => {
                    s.problem("from", format!("{f:?} is not an e-mail address: {e}"));
                    None
                }
            });
        let subject = s.string("subject").and_then(|t| match Template::parse(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                s.problem("subject", e);
                None
            }
        });
        let mut roots = Vec::new();
        if let Some(path) = s.string("ca_file") {
            match std::fs::read(&path) {
                Err(e) => s.problem("ca_file", format!("cannot read {path}: {e}")),
                Ok(pem) => match Certificate::from_pem(&pem) {
                    Ok(c) => roots.push(c),
                    Err(e) => s.problem("ca_file", format!("{path} is not a PEM certificate: {e}")),
                },
            }
        }
        let timeout = s.duration("timeout", DEFAULT_TIMEOUT);
        if security == SmtpSecurity::None && !roots.is_empty() {
            s.problem(
                "ca_file",
                "is only used with security \"starttls\" or \"tls\"",
            );
        }
        let tls = match (&host, security) {
            (Some(_), SmtpSecurity::None) | (None, _) => None,
            (Some(h), _) => {
                let mut b = TlsParameters::builder(h.clone());
                for r in roots {
                    b = b.add_root_certificate(r);
                }
                match b.build_rustls() {
                    Ok(p) => Some(p),
                    Err(e) => {
                        s.problem("host", format!("cannot set up TLS: {e}"));
                        None
                    }
                }
            }
        };
        s.finish()?;
        let (Some(host), Some(from)) = (host, from) else {
            return Err(super::config_error(cfg, "host", "is required"));
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .timeout(Some(timeout));
        builder = match (security, tls) {
            (SmtpSecurity::Starttls, Some(p)) => builder.tls(Tls::Required(p)),
            (SmtpSecurity::Tls, Some(p)) => builder.tls(Tls::Wrapper(p)),
            _ => builder.tls(Tls::None),
        };
        if let (Some(u), Some(p)) = (username, password) {
            builder = builder.credentials(Credentials::new(u, p));
        }
        Ok(EmailChannel {
            name: cfg.name.clone(),
            host,
            port,
            security,
            from,
            subject,
            timeout,
            transport: builder.build(),
        })
    }

    /// The message for `n`, or a permanent error if it has no usable To.
    pub fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let address = n
            .recipient
            .settings
            .get("email")
            .or(n.recipient.email.as_ref())
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                SendError::permanent(format!(
                    "contact {} has no e-mail address",
                    n.recipient.name
                ))
            })?;
        let to = address
            .trim()
            .parse()
            .map(|a| Mailbox::new(Some(n.recipient.name.clone()), a))
            .map_err(|e| {
                SendError::permanent(format!(
                    "contact {}'s e-mail address {address:?} is not valid: {e}",
                    n.recipient.name
                ))
            })?;
        let subject = match &self.subject {
            Some(t) => t.render(n),
            None => default_subject(n),
        };
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@bergamot>", n.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(text_body(n))
            .map_err(|e| SendError::permanent(format!("cannot build the e-mail: {e}")))
    }
}

#[async_trait]
impl Notifier for EmailChannel {
    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let message = self.message(n)?;
        let what = format!(
            "email channel {} via {}:{}",
            self.name, self.host, self.port
        );
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(SendError::transient(format!(
                "{what}: no answer within {}s",
                self.timeout.as_secs_f64()
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::permanent(format!("{what}: {e}"))),
            Ok(Err(e)) => Err(SendError::transient(format!("{what}: {e}"))),
        }
    }
}
