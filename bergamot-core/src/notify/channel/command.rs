//! The `command` channel: runs a program per notification, Nagios-style.

use super::message::{default_subject, notification_json};
use super::Settings;
use crate::exec::{process_group, DEFAULT_PATH};
use crate::notify::{ChannelConfig, Notification, NotificationKind, Notifier, SendError};
use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const STDERR_LIMIT: usize = 64 * 1024;

/// Runs `command` (an argv list, no shell) with the JSON payload on stdin
/// and the notification in environment variables.
///
/// Settings: `command` (required, e.g. `["/usr/local/bin/page", "--urgent"]`),
/// `timeout` (default 30s; the program's whole process group is killed
/// then), `env` (a table of extra variables).
///
/// The environment is clean: only `PATH` and `LANG` (the daemon's, or
/// `/usr/local/bin:/usr/bin:/bin` and `C.UTF-8`), `env`, and the
/// notification's variables (`BERGAMOT_NOTIFICATION_*` and `NAGIOS_*`
/// aliases; see docs/notifications.md) — never the daemon's other variables.
/// Exit 0 is sent; anything else is transient, with stderr's first line.
#[derive(Clone)]
pub(crate) struct CommandChannel {
    name: String,
    argv: Vec<String>,
    timeout: Duration,
    env: BTreeMap<String, String>,
}

impl std::fmt::Debug for CommandChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandChannel")
            .field("name", &self.name)
            .field("program", &self.argv.first())
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CommandChannel {
    /// Builds the channel from its `[[channel]]` table.
    pub(crate) fn from_config(cfg: &ChannelConfig) -> crate::Result<Self> {
        let mut s = Settings::new(cfg);
        let present = cfg.settings.get("command").is_some_and(|v| !v.is_null());
        let argv = s.string_list("command");
        match &argv {
            None if !present => s.problem("command", "is required (a list: program and arguments)"),
            Some(a) if a.first().is_none_or(|p| p.trim().is_empty()) => {
                s.problem("command", "must name a program first")
            }
            _ => {}
        }
        let timeout = s.duration("timeout", DEFAULT_TIMEOUT);
        let env = s.string_map("env").unwrap_or_default();
        for key in env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                s.problem(&format!("env.{key}"), "is not a valid variable name");
            }
        }
        s.finish()?;
        Ok(CommandChannel {
            name: cfg.name.clone(),
            argv: argv.unwrap_or_default(),
            timeout,
            env,
        })
    }
}

/// Nagios' `NOTIFICATIONTYPE` for a kind.
fn nagios_type(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::Alert | NotificationKind::Realert => "PROBLEM",
        NotificationKind::Recovery => "RECOVERY",
        NotificationKind::Acknowledge => "ACKNOWLEDGEMENT",
        NotificationKind::FlappingStarted => "FLAPPINGSTART",
        NotificationKind::FlappingStopped => "FLAPPINGSTOP",
        NotificationKind::DowntimeStarted => "DOWNTIMESTART",
        NotificationKind::DowntimeEnded => "DOWNTIMEEND",
        NotificationKind::Test => "CUSTOM",
    }
}

/// The variables a command sees for `n` (besides PATH, LANG and `env`).
pub(crate) fn notification_env(n: &Notification) -> Vec<(String, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let at = n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let service = n
        .check
        .strip_prefix(&format!("{}/", n.host))
        .unwrap_or("")
        .to_string();
    let b = |k: &str| format!("BERGAMOT_NOTIFICATION_{k}");
    let vars = [
        (b("ID"), n.id.to_string()),
        (b("KIND"), n.kind.as_str().to_string()),
        (b("CHECK"), n.check.clone()),
        (b("CHECK_ID"), n.check_id.to_string()),
        (b("HOST"), n.host.clone()),
        (b("STATUS"), n.status.as_str().to_string()),
        (b("OUTPUT"), n.output.clone()),
        (b("AT"), at.clone()),
        (b("SUBJECT"), default_subject(n)),
        (
            b("ALERT_ID"),
            n.alert_id.map(|a| a.to_string()).unwrap_or_default(),
        ),
        (
            b("ALERT_OPENED_AT"),
            n.alert_opened_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
        ),
        (b("ESCALATION"), n.escalation.to_string()),
        (b("SEQUENCE"), n.sequence.to_string()),
        (b("AUTHOR"), opt(&n.author)),
        (b("COMMENT"), opt(&n.comment)),
        (b("CHANNEL"), n.channel.clone()),
        (b("RECIPIENT"), n.recipient.name.clone()),
        (b("RECIPIENT_EMAIL"), opt(&n.recipient.email)),
        (b("RECIPIENT_PHONE"), opt(&n.recipient.phone)),
        (b("RECIPIENT_CHAT"), opt(&n.recipient.chat)),
        ("NAGIOS_NOTIFICATIONTYPE".into(), nagios_type(n.kind).into()),
        ("NAGIOS_HOSTNAME".into(), n.host.clone()),
        ("NAGIOS_SERVICEDESC".into(), service),
        ("NAGIOS_SERVICESTATE".into(), n.status.as_str().to_string()),
        ("NAGIOS_SERVICEOUTPUT".into(), n.output.clone()),
        ("NAGIOS_CONTACTNAME".into(), n.recipient.name.clone()),
        ("NAGIOS_CONTACTEMAIL".into(), opt(&n.recipient.email)),
        ("NAGIOS_CONTACTPAGER".into(), opt(&n.recipient.phone)),
        (
            "NAGIOS_NOTIFICATIONNUMBER".into(),
            (n.sequence + 1).to_string(),
        ),
        ("NAGIOS_NOTIFICATIONAUTHOR".into(), opt(&n.author)),
        ("NAGIOS_NOTIFICATIONCOMMENT".into(), opt(&n.comment)),
        ("NAGIOS_LONGDATETIME".into(), at),
    ];
    // A variable cannot hold NUL; drop it from the value rather than fail.
    vars.into_iter()
        .map(|(k, v)| (k, v.replace('\0', "")))
        .collect()
}

async fn read_capped(stream: Option<impl AsyncRead + Unpin>, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut stream) = stream else {
        return out;
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}

#[async_trait]
impl Notifier for CommandChannel {
    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let Some(program) = self.argv.first() else {
            return Err(SendError::permanent("command channel has no program"));
        };
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into()),
            )
            .env(
                "LANG",
                std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            )
            .envs(&self.env)
            .envs(notification_env(n))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            SendError::transient(format!(
                "command channel {}: cannot run {program}: {e}",
                self.name
            ))
        })?;
        let pgid = process_group(&child);
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let payload = notification_json(n).to_string();
        let run = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A program that does not read its stdin is fine.
                    stdin.write_all(payload.as_bytes()).await.ok();
                    stdin.shutdown().await.ok();
                }
            };
            let (_, err, status) =
                tokio::join!(write, read_capped(stderr, STDERR_LIMIT), child.wait());
            (err, status)
        };
        let (err, status) = match tokio::time::timeout(self.timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                if let Some(pgid) = pgid {
                    killpg(pgid, Signal::SIGKILL).ok();
                }
                child.start_kill().ok();
                tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .ok();
                return Err(SendError::transient(format!(
                    "command channel {}: {program} timed out after {}s and was killed",
                    self.name,
                    self.timeout.as_secs_f64()
                )));
            }
        };
        let status = status.map_err(|e| {
            SendError::transient(format!(
                "command channel {}: cannot wait for {program}: {e}",
                self.name
            ))
        })?;
        if status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&err);
        let first = err
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let first: String = first.chars().take(300).collect();
        let how = match status.code() {
            Some(code) => format!("exited with {code}"),
            None => "was killed by a signal".to_string(),
        };
        Err(SendError::transient(if first.is_empty() {
            format!("command channel {}: {program} {how}", self.name)
        } else {
            format!("command channel {}: {program} {how}: {first}", self.name)
        }))
    }
}
