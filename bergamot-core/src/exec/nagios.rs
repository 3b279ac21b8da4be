//! The `nagios` engine: runs a Nagios-compatible plugin as a child process.

use super::{effective_timeout, new_result, parse_plugin_output, Executor, DEFAULT_TIMEOUT};
use crate::model::{CheckResult, Status};
use crate::queue::ExecuteCheck;
use async_trait::async_trait;
use chrono::Utc;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// How much of a plugin's stdout is kept; the rest is read and discarded.
pub const STDOUT_LIMIT: usize = 64 * 1024;
/// How much of a plugin's stderr is kept (shown when stdout is empty or the
/// plugin failed).
const STDERR_LIMIT: usize = 4 * 1024;

/// Runs Nagios plugins.
///
/// Parameter `command`: the argv as a JSON array of strings, already
/// substituted; run directly, without a shell. The plugin runs in its own
/// process group; when the timeout passes (the execute's `timeout`, or the
/// executor's default when that is zero) the whole group is killed with
/// SIGKILL, forked children included, and the result is TIMEOUT.
///
/// Exit codes 0–3 map to OK, WARNING, CRITICAL, UNKNOWN; any other code, a
/// death by signal, or a plugin that cannot be started is ERROR with an
/// output that names the plugin and the reason. Output is parsed with
/// [`parse_plugin_output`]; stdout is capped at [`STDOUT_LIMIT`].
#[derive(Debug, Clone)]
pub struct NagiosExecutor {
    default_timeout: Duration,
}

impl Default for NagiosExecutor {
    fn default() -> Self {
        NagiosExecutor::new()
    }
}

/// What a finished plugin left behind.
struct Finished {
    status: std::io::Result<ExitStatus>,
    stdout: Captured,
    stderr: Captured,
}

/// A capped capture of one output stream.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cut: bool,
}

impl NagiosExecutor {
    /// An executor with a 30 s default timeout.
    pub fn new() -> Self {
        NagiosExecutor {
            default_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the timeout used for executes that carry none (zero).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    fn argv(execute: &ExecuteCheck) -> Result<Vec<String>, String> {
        let value = execute
            .params
            .get("command")
            .ok_or("parameter \"command\" is missing (the plugin's argv as a list of strings)")?;
        let list = value.as_array().ok_or_else(|| {
            format!("parameter \"command\" must be a list of strings (the argv), got {value}")
        })?;
        if list.is_empty() {
            return Err("parameter \"command\" is an empty list (no plugin to run)".into());
        }
        list.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    format!("parameter \"command\" item {i} must be a string, got {v}")
                })
            })
            .collect()
    }
}

/// Spawns, retrying briefly on ETXTBSY: a plugin file that was just written
/// may still be open for writing in a child another thread is forking.
async fn spawn(cmd: &mut Command) -> std::io::Result<tokio::process::Child> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes and discarding
/// the rest (so the writer never blocks on a full pipe).
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, limit: usize) -> Captured {
    let mut captured = Captured::default();
    let Some(mut stream) = stream else {
        return captured;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit - captured.bytes.len();
                if n > room {
                    captured.cut = true;
                }
                captured.bytes.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    captured
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[async_trait]
impl Executor for NagiosExecutor {
    fn engine(&self) -> &str {
        "nagios"
    }

    async fn execute(&self, execute: &ExecuteCheck) -> CheckResult {
        let executed_at = Utc::now();
        let started = tokio::time::Instant::now();
        let argv = match Self::argv(execute) {
            Ok(a) => a,
            Err(e) => {
                return new_result(
                    execute,
                    Status::Error,
                    format!("nagios: {e}"),
                    executed_at,
                    started,
                )
            }
        };
        let plugin = &argv[0];
        let timeout = effective_timeout(execute, self.default_timeout);

        let mut cmd = Command::new(plugin);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Should this future be dropped mid-run, at least the plugin dies.
            .kill_on_drop(true);
        let mut child = match spawn(&mut cmd).await {
            Ok(c) => c,
            Err(e) => {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => " (no such plugin)",
                    std::io::ErrorKind::PermissionDenied => " (not executable?)",
                    _ => "",
                };
                return new_result(
                    execute,
                    Status::Error,
                    format!("cannot run plugin {plugin}: {e}{hint}"),
                    executed_at,
                    started,
                );
            }
        };
        // The child leads its own process group: its pid is the group id.
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let run = async {
            let (stdout, stderr, status) = tokio::join!(
                read_capped(stdout, STDOUT_LIMIT),
                read_capped(stderr, STDERR_LIMIT),
                child.wait()
            );
            Finished {
                status,
                stdout,
                stderr,
            }
        };
        let finished = tokio::time::timeout(timeout, run).await;

        let finished = match finished {
            Ok(f) => f,
            Err(_) => {
                // Kill the whole group: the plugin and anything it forked,
                // which may hold the output pipe open.
                if let Some(pgid) = pgid {
                    if let Err(e) = killpg(pgid, Signal::SIGKILL) {
                        if e != nix::errno::Errno::ESRCH {
                            tracing::warn!(plugin = %plugin, error = %e, "cannot kill timed-out plugin's process group");
                        }
                    }
                }
                let _ = child.start_kill();
                // Reap it (bounded, in case it is stuck in the kernel).
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let secs = timeout.as_secs_f64();
                return new_result(
                    execute,
                    Status::Timeout,
                    format!("plugin timed out after {secs}s ({plugin})"),
                    executed_at,
                    started,
                );
            }
        };

        let status = match finished.status {
            Ok(s) => s,
            Err(e) => {
                return new_result(
                    execute,
                    Status::Error,
                    format!("cannot wait for plugin {plugin}: {e}"),
                    executed_at,
                    started,
                )
            }
        };
        let text = decode_output(&finished.stdout.bytes);
        let err_text = decode_output(&finished.stderr.bytes);
        let err_text = err_text.trim();
        let mut parsed = parse_plugin_output(&text);
        if parsed.output.is_empty() && !err_text.is_empty() {
            // Plugins that fail early often write only to stderr.
            parsed.output = err_text.lines().next().unwrap_or("").trim().to_string();
        }

        let (result_status, output) = match (status.code(), status.signal()) {
            (Some(code @ 0..=3), _) => {
                let output = if parsed.output.is_empty() {
                    format!("(no output from plugin {plugin})")
                } else {
                    std::mem::take(&mut parsed.output)
                };
                (Status::from_nagios_exit(code), output)
            }
            (Some(code), _) => {
                let why = match code {
                    126 => "exit 126: the command could not be executed".to_string(),
                    127 => "exit 127: command not found".to_string(),
                    _ => format!("exit code {code}, expected 0-3"),
                };
                let said = if parsed.output.is_empty() {
                    String::new()
                } else {
                    format!(": {}", parsed.output)
                };
                (
                    Status::Error,
                    format!("plugin {plugin} failed ({why}){said}"),
                )
            }
            (None, Some(sig)) => (
                Status::Error,
                format!("plugin {plugin} was killed by {}", signal_name(sig)),
            ),
            (None, None) => (
                Status::Error,
                format!("plugin {plugin} ended without exit code or signal"),
            ),
        };

        let mut long = parsed.long_output_with_problems();
        if finished.stdout.cut {
            if !long.is_empty() {
                long.push('\n');
            }
            long.push_str("(output cut at 64 KiB)");
        }
        let mut r = new_result(execute, result_status, output, executed_at, started);
        r.long_output = long.into();
        r.perfdata = parsed.perfdata.into();
        r
    }
}

/// Plugin output as text: invalid UTF-8 and NUL bytes (which no store
/// keeps as text) become U+FFFD.
fn decode_output(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::execute;
    use serde_json::json;

    #[tokio::test]
    async fn bad_command_params_are_errors_naming_them() {
        let n = NagiosExecutor::new();
        for params in [
            json!({}),
            json!({"command": "/bin/true"}),
            json!({"command": []}),
            json!({"command": ["/bin/echo", 3]}),
        ] {
            let r = n.execute(&execute("nagios", params.clone())).await;
            assert_eq!(r.status, Status::Error, "{params}");
            assert!(r.output.contains("\"command\""), "{params}: {}", r.output);
        }
    }

    #[tokio::test]
    async fn runs_without_a_shell() {
        let n = NagiosExecutor::new();
        let r = n
            .execute(&execute(
                "nagios",
                json!({"command": ["/bin/echo", "a;b $HOME | x=1"]}),
            ))
            .await;
        assert_eq!(r.status, Status::Ok);
        assert_eq!(&*r.output, "a;b $HOME");
        assert_eq!(r.perfdata.len(), 1);
    }

    #[tokio::test]
    async fn nul_and_invalid_utf8_become_replacement_characters() {
        let n = NagiosExecutor::new();
        let r = n
            .execute(&execute(
                "nagios",
                json!({"command": ["/usr/bin/printf", "ok \\000nul \\377 end\\nmore\\000"]}),
            ))
            .await;
        assert_eq!(r.status, Status::Ok, "{}", r.output);
        assert_eq!(&*r.output, "ok \u{FFFD}nul \u{FFFD} end");
        assert_eq!(&*r.long_output, "more\u{FFFD}");
    }
}
