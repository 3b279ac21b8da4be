//! Acceptance tests of the nagios executor: real plugins (shell scripts
//! generated into a tempdir) run as child processes.

mod common;

use bergamot_core::exec::{Executor, NagiosExecutor};
use bergamot_core::model::Status;
use bergamot_core::queue::ExecuteCheck;
use common::assert_result;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn execute(argv: &[&str], timeout: Duration) -> ExecuteCheck {
    common::execute("nagios", serde_json::json!({ "command": argv }), timeout)
}

/// Writes an executable `#!/bin/sh` script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

async fn run(path: &Path, timeout: Duration) -> bergamot_core::model::CheckResult {
    let p = path.to_str().expect("utf-8 temp path");
    let e = execute(&[p], timeout);
    let before = chrono::Utc::now();
    let r = NagiosExecutor::new().execute(&e).await;
    assert_eq!(r.check_id, e.check_id);
    assert!(r.executed_at >= before - chrono::Duration::seconds(1));
    r
}

/// Writes the script `name` with `body` into a new temporary directory and
/// runs it (10 s timeout).
async fn run_script(name: &str, body: &str) -> bergamot_core::model::CheckResult {
    let dir = tempfile::tempdir().expect("tempdir");
    run(&script(dir.path(), name, body), Duration::from_secs(10)).await
}

#[tokio::test]
async fn exit_codes_0_to_3_map_to_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (code, status) in [
        (0, Status::Ok),
        (1, Status::Warning),
        (2, Status::Critical),
        (3, Status::Unknown),
    ] {
        let path = script(
            dir.path(),
            &format!("exit{code}"),
            &format!("echo 'state {code} | v={code}'\nexit {code}"),
        );
        let r = run(&path, Duration::from_secs(10)).await;
        assert_eq!(r.status, status, "exit {code}: {}", r.output);
        assert_eq!(&*r.output, format!("state {code}"));
        assert_eq!(r.perfdata.len(), 1);
        assert_eq!(r.perfdata[0].value, Some(f64::from(code)));
    }
}

#[tokio::test]
async fn out_of_range_exit_codes_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for code in [4, 7, 126, 127, 255] {
        let path = script(
            dir.path(),
            &format!("exit{code}"),
            &format!("echo 'said something'\nexit {code}"),
        );
        let r = run(&path, Duration::from_secs(10)).await;
        assert_eq!(r.status, Status::Error, "exit {code}");
        assert!(
            r.output.contains(path.to_str().expect("utf-8")),
            "names the plugin: {}",
            r.output
        );
        assert!(
            r.output.contains(&format!("exit {code}"))
                || r.output.contains(&format!("exit code {code}")),
            "{}",
            r.output
        );
        assert!(r.output.contains("said something"), "{}", r.output);
    }
}

#[tokio::test]
async fn plugin_that_is_not_executable_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(dir.path(), "noexec", "echo hi");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = run(&path, Duration::from_secs(10)).await;
    assert_result(
        &r,
        Status::Error,
        &[
            "cannot run plugin",
            path.to_str().expect("utf-8"),
            "not executable",
        ],
    );
}

#[tokio::test]
async fn plugin_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-plugin");
    let r = run(&path, Duration::from_secs(10)).await;
    assert_result(&r, Status::Error, &["no-such-plugin", "no such plugin"]);
}

#[tokio::test]
async fn plugin_killed_by_a_signal_is_an_error() {
    let r = run_script("suicide", "echo dying\nkill -9 $$").await;
    assert_result(&r, Status::Error, &["killed by SIGKILL"]);
}

/// Whether a process is gone (no longer exists, or a zombie nobody reaped
/// yet: it no longer runs).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let path = script(
        dir.path(),
        "sleeper",
        &format!(
            "sleep 300 &\necho $! > {p}.child\necho $$ > {p}.main\necho started\nsleep 300",
            p = pids.display()
        ),
    );
    let r = run(&path, Duration::from_secs(1)).await;
    assert_eq!(r.status, Status::Timeout);
    assert_eq!(
        &*r.output,
        format!("plugin timed out after 1s ({})", path.display())
    );

    let read_pid = |ext: &str| -> i32 {
        std::fs::read_to_string(format!("{}.{ext}", pids.display()))
            .expect("the plugin wrote its pids")
            .trim()
            .parse()
            .expect("a pid")
    };
    let (main, child) = (read_pid("main"), read_pid("child"));
    // SIGKILL is delivered asynchronously: wait (bounded) for both to die.
    bergamot_testkit::wait_until(
        "the plugin and its forked child to die",
        Duration::from_secs(5),
        || std::future::ready(gone(main) && gone(child)),
    )
    .await;
    assert!(gone(main), "plugin {main} still runs");
    assert!(gone(child), "forked child {child} still runs");
}

#[tokio::test]
async fn huge_output_is_capped_without_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(
        dir.path(),
        "chatty",
        "echo 'first line | big=1MB'\nhead -c 1048576 /dev/zero | tr '\\0' 'x'\necho\necho done\nexit 1",
    );
    let r = run(&path, Duration::from_secs(20)).await;
    assert_eq!(
        r.status,
        Status::Warning,
        "the plugin finished: {}",
        r.output
    );
    assert_eq!(&*r.output, "first line");
    assert!(
        r.long_output.ends_with("(output cut at 64 KiB)"),
        "tail: {:?}",
        &r.long_output[r.long_output.len().saturating_sub(60)..]
    );
    assert!(
        r.long_output.len() <= 64 * 1024 + 100,
        "{}",
        r.long_output.len()
    );
    assert!(!r.long_output.contains("done"));
    assert_eq!(r.perfdata.len(), 1);
}

#[tokio::test]
async fn multi_line_output_with_perfdata_on_later_lines() {
    let body = "cat <<'OUT'\nDISK WARNING - free space: /var 5 MB | '/var'=5MB;10;2;0;100\n/ 50 MB free\n/home 90 MB free | '/'=50MB;10;2;0;100\n'/home dir'=90MB;10;2;0;100 'it''s'=1 broken=abc\nOUT\nexit 1";
    let r = run_script("multi", body).await;
    assert_eq!(r.status, Status::Warning);
    assert_eq!(&*r.output, "DISK WARNING - free space: /var 5 MB");
    assert_eq!(
        &*r.long_output,
        "/ 50 MB free\n/home 90 MB free\nperfdata: cannot parse 'broken=abc' (bad value)"
    );
    let labels: Vec<&str> = r.perfdata.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, vec!["/var", "/", "/home dir", "it's"]);
    let home = &r.perfdata[2];
    assert_eq!(
        (
            home.value,
            home.uom.as_str(),
            home.warn.as_deref(),
            home.crit.as_deref(),
            home.min,
            home.max
        ),
        (
            Some(90.0),
            "MB",
            Some("10"),
            Some("2"),
            Some(0.0),
            Some(100.0)
        )
    );
}

#[tokio::test]
async fn stderr_is_shown_when_stdout_is_empty() {
    let r = run_script("stderr", "echo 'cannot open /etc/x' >&2\nexit 2").await;
    assert_eq!(r.status, Status::Critical);
    assert_eq!(&*r.output, "cannot open /etc/x");

    let r = run_script("silent", "exit 0").await;
    assert_result(&r, Status::Ok, &["no output"]);
}

#[tokio::test]
async fn arguments_are_passed_without_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(dir.path(), "args", "echo \"$#:$1:$2\"");
    let p = path.to_str().expect("utf-8");
    let e = execute(&[p, "a b", "$HOME;*"], Duration::from_secs(10));
    let r = NagiosExecutor::new().execute(&e).await;
    assert_eq!(r.status, Status::Ok);
    assert_eq!(&*r.output, "2:a b:$HOME;*");
}

#[tokio::test]
async fn zero_timeout_uses_the_executor_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(dir.path(), "slow", "sleep 300");
    let p = path.to_str().expect("utf-8");
    let e = execute(&[p], Duration::ZERO);
    let r = NagiosExecutor::new()
        .with_default_timeout(Duration::from_millis(500))
        .execute(&e)
        .await;
    assert_eq!(r.status, Status::Timeout);
    assert!(
        r.output.starts_with("plugin timed out after 0.5s"),
        "{}",
        r.output
    );
}
