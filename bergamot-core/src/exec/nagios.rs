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
/// How long the pipes are still read once the plugin has exited and its
/// process group was killed (a child that left the group may hold them).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// `PATH` for plugins when the daemon has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs Nagios plugins.
///
/// Parameter `command`: the argv as a JSON array of strings, already
/// substituted; run directly, without a shell. The plugin runs in its own
/// process group; when the timeout passes (the execute's `timeout`, or the
/// executor's default when that is zero) the whole group is killed with
/// SIGKILL, forked children included, and the result is TIMEOUT.
///
/// The plugin's result is its exit: once the plugin itself has exited, its
/// process group is killed (background children it left behind, which may
/// still hold its stdout open, die with it), what is in the pipes is read
/// (for at most [`DRAIN_LIMIT`]) and the result is made from the exit code.
///
/// Exit codes 0–3 map to OK, WARNING, CRITICAL, UNKNOWN; any other code, a
/// death by signal, or a plugin that cannot be started is ERROR with an
/// output that names the plugin and the reason. Output is parsed as the
/// Nagios plugin guidelines lay it out (first line, long output, perfdata
/// after `|`; malformed perfdata is skipped); stdout is capped at
/// [`STDOUT_LIMIT`]. Stderr is
/// kept too: it is the output when stdout is empty, and otherwise it is
/// appended to the long output as lines starting with `stderr: `.
///
/// The plugin gets a clean environment, never the daemon's (which holds
/// `BERGAMOT_STORE` / `BERGAMOT_QUEUE` and their passwords): `PATH` and
/// `LANG` (the daemon's values, or `/usr/local/bin:/usr/bin:/bin` and `C`),
/// then the entries of the parameter `env` (a table of strings: the config
/// puts the Nagios-style macros `NAGIOS_HOSTNAME`, `NAGIOS_HOSTADDRESS`,
/// `NAGIOS_SERVICEDESC` there, and the command's own `env`).
#[derive(Debug, Clone)]
pub struct NagiosExecutor {
    default_timeout: Duration,
}

impl Default for NagiosExecutor {
    fn default() -> Self {
        NagiosExecutor::new()
    }
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

/// The parameter `env`: a table of strings (absent: none).
fn env_param(execute: &ExecuteCheck) -> Result<Vec<(String, String)>, String> {
    let Some(value) = execute.params.get("env") else {
        return Ok(Vec::new());
    };
    if value.is_null() {
        return Ok(Vec::new());
    }
    let table = value.as_object().ok_or_else(|| {
        format!("parameter \"env\" must be a table of strings (NAME = \"value\"), got {value}")
    })?;
    table
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!(
                    "parameter \"env\" has an invalid variable name {k:?}"
                ));
            }
            match v.as_str() {
                Some(s) if !s.contains('\0') => Ok((k.clone(), s.to_string())),
                _ => Err(format!(
                    "parameter \"env\" entry {k:?} must be a string without NUL, got {v}"
                )),
            }
        })
        .collect()
}

/// The process group of a child spawned with `process_group(0)`: it leads
/// its own group, so its pid is the group id (`None` once it was reaped).
pub(crate) fn process_group(child: &tokio::process::Child) -> Option<Pid> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
}

/// Kills the process group `pgid` with SIGKILL (a group already gone is fine).
fn kill_group(pgid: Option<Pid>, plugin: &str) {
    if let Some(pgid) = pgid {
        if let Err(e) = killpg(pgid, Signal::SIGKILL) {
            if e != nix::errno::Errno::ESRCH {
                tracing::warn!(plugin = %plugin, error = %e, "cannot kill plugin's process group");
            }
        }
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

/// Reads a stream to its end into `captured`, keeping the first `limit`
/// bytes and discarding the rest (so the writer never blocks on a full
/// pipe). What was read stays in `captured` if this future is dropped.
async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    limit: usize,
    captured: &mut Captured,
) {
    let Some(mut stream) = stream else {
        return;
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
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[async_trait]
impl Executor for NagiosExecutor {
    fn engine(&self) -> &str {
        super::engine::NAGIOS
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
        let env = match env_param(execute) {
            Ok(e) => e,
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
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .env(
                "LANG",
                std::env::var_os("LANG").unwrap_or_else(|| "C".into()),
            )
            .envs(env)
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
        let pgid = process_group(&child);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Captured::default();
        let mut err = Captured::default();
        let waited: Option<std::io::Result<ExitStatus>> = {
            let reads = async {
                tokio::join!(
                    read_capped(stdout, STDOUT_LIMIT, &mut out),
                    read_capped(stderr, STDERR_LIMIT, &mut err)
                )
            };
            tokio::pin!(reads);
            let mut reads_done = false;
            let waited = loop {
                tokio::select! {
                    s = child.wait() => break Some(s),
                    _ = &mut reads, if !reads_done => reads_done = true,
                    _ = tokio::time::sleep_until(deadline) => break None,
                }
            };
            if waited.is_some() {
                // The plugin has exited: whatever it left in its group (a
                // background child holding stdout) goes now, then the pipes
                // are read to their end (bounded: a child that left the
                // group may still hold them).
                kill_group(pgid, plugin);
                if !reads_done {
                    tokio::time::timeout(DRAIN_LIMIT, &mut reads).await.ok();
                }
            }
            waited
        };

        let status = match waited {
            Some(s) => s,
            None => {
                // Kill the whole group: the plugin and anything it forked,
                // which may hold the output pipe open.
                kill_group(pgid, plugin);
                child.start_kill().ok();
                // Reap it (bounded, in case it is stuck in the kernel).
                tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .ok();
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

        let status = match status {
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
        let text = decode_output(&out.bytes);
        let err_text = decode_output(&err.bytes);
        let err_text = err_text.trim();
        let mut parsed = parse_plugin_output(&text);
        let mut err_lines: Vec<&str> = err_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if parsed.output.is_empty() && !err_lines.is_empty() {
            // Plugins that fail early often write only to stderr.
            parsed.output = err_lines.remove(0).to_string();
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
        for line in err_lines {
            if !long.is_empty() {
                long.push('\n');
            }
            long.push_str("stderr: ");
            long.push_str(line);
        }
        if err.cut {
            if !long.is_empty() {
                long.push('\n');
            }
            long.push_str("(stderr cut at 4 KiB)");
        }
        if out.cut {
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

    /// Runs a nagios check with `params` (the default timeout).
    async fn run(params: serde_json::Value) -> CheckResult {
        NagiosExecutor::new()
            .execute(&execute("nagios", params))
            .await
    }

    /// Runs a nagios check with `params` and a timeout of `secs`.
    async fn run_within(params: serde_json::Value, secs: u64) -> CheckResult {
        let mut e = execute("nagios", params);
        e.timeout = Duration::from_secs(secs);
        NagiosExecutor::new().execute(&e).await
    }

    #[tokio::test]
    async fn bad_command_params_are_errors_naming_them() {
        for params in [
            json!({}),
            json!({"command": "/bin/true"}),
            json!({"command": []}),
            json!({"command": ["/bin/echo", 3]}),
        ] {
            let r = run(params.clone()).await;
            assert_eq!(r.status, Status::Error, "{params}");
            assert!(r.output.contains("\"command\""), "{params}: {}", r.output);
        }
    }

    #[tokio::test]
    async fn runs_without_a_shell() {
        let r = run(json!({"command": ["/bin/echo", "a;b $HOME | x=1"]})).await;
        assert_eq!(r.status, Status::Ok);
        assert_eq!(&*r.output, "a;b $HOME");
        assert_eq!(r.perfdata.len(), 1);
    }

    /// Whether `pid` is gone (or a zombie nobody reaps: dead all the same).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn plugin_exit_is_the_result_though_a_child_holds_stdout_and_the_child_dies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let script = format!(
            "sleep 300 & echo $! > {}; echo 'LOAD WARNING - high'; exit 1",
            pidfile.display()
        );
        // Before the fix this waited for the child's stdout to close: TIMEOUT.
        let r = run_within(json!({"command": ["/bin/sh", "-c", script]}), 60).await;
        assert_eq!(r.status, Status::Warning, "{}", r.output);
        assert_eq!(&*r.output, "LOAD WARNING - high");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        // The background child was killed with the plugin's group (SIGKILL
        // is delivered before killpg returns; only reaping may lag).
        for _ in 0..500 {
            if dead(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).ok();
        panic!("the plugin's background child {pid} outlived it");
    }

    #[tokio::test]
    async fn real_timeout_still_kills_the_group() {
        let r = run_within(
            json!({"command": ["/bin/sh", "-c", "sleep 300 & sleep 300"]}),
            1,
        )
        .await;
        assert_eq!(r.status, Status::Timeout, "{}", r.output);
    }

    #[tokio::test]
    async fn stderr_is_kept_when_the_plugin_also_prints_to_stdout() {
        let r = run(json!({"command": ["/bin/sh", "-c",
                    "echo 'Usage: check_load -w WARN -c CRIT'; echo 'check_load: unrecognized option --bogus' >&2; exit 3"]})).await;
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(&*r.output, "Usage: check_load -w WARN -c CRIT");
        assert!(
            r.long_output
                .contains("stderr: check_load: unrecognized option --bogus"),
            "{:?}",
            r.long_output
        );
    }

    #[tokio::test]
    async fn plugins_get_a_clean_environment_plus_env() {
        let r = run(json!({"command": ["/bin/sh", "-c", "echo env; env"],
                       "env": {"NAGIOS_HOSTNAME": "web1", "EXTRA": "a b"}}))
        .await;
        assert_eq!(r.status, Status::Ok, "{}", r.output);
        let mut names: Vec<&str> = r
            .long_output
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        names.sort_unstable();
        // sh itself adds PWD (and may add SHLVL and _); nothing of the
        // daemon's own environment (cargo sets CARGO_*, HOME ...) is there.
        names.retain(|n| !matches!(*n, "PWD" | "SHLVL" | "_"));
        assert_eq!(
            names,
            ["EXTRA", "LANG", "NAGIOS_HOSTNAME", "PATH"],
            "{}",
            r.long_output
        );
        assert!(r.long_output.contains("EXTRA=a b"));
        assert!(r.long_output.contains("NAGIOS_HOSTNAME=web1"));

        let r = run(json!({"command": ["/bin/true"], "env": {"A": 1}})).await;
        assert_eq!(r.status, Status::Error);
        assert!(r.output.contains("\"env\""), "{}", r.output);
    }

    #[tokio::test]
    async fn nul_and_invalid_utf8_become_replacement_characters() {
        let r =
            run(json!({"command": ["/usr/bin/printf", "ok \\000nul \\377 end\\nmore\\000"]})).await;
        assert_eq!(r.status, Status::Ok, "{}", r.output);
        assert_eq!(&*r.output, "ok \u{FFFD}nul \u{FFFD} end");
        assert_eq!(&*r.long_output, "more\u{FFFD}");
    }
}
