//! `bergamotd` as a real process: the demo config, `/api/state`, SIGTERM;
//! and `check-config` on good and broken configs.

mod common;

use common::{free_port, get};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The demo config as shipped (its own checks follow `--listen`), in a temp
/// dir next to a copy of its plugins (so relative plugin paths resolve there).
fn demo_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("examples/demo.toml")).expect("demo.toml");
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).expect("write config");
    std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
    let plugin = dir.join("plugins/check_demo.sh");
    std::fs::copy(repo_root().join("examples/plugins/check_demo.sh"), &plugin)
        .expect("copy plugin");
    path
}

/// `bergamotd run --config config --listen 127.0.0.1:port` (log level
/// info, standard output discarded), to spawn.
fn bergamotd_run(config: &Path, port: u16) -> Command {
    let mut run = Command::new(env!("CARGO_BIN_EXE_bergamotd"));
    run.args(["run", "--config"])
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    run
}

/// Recomputes every group's aggregate from the checks of `/api/state`.
fn expected_aggregates(state: &Value) -> HashMap<String, (String, u64, Vec<u64>)> {
    let groups = state["groups"].as_array().expect("groups");
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    for g in groups {
        for p in g["parents"].as_array().expect("parents") {
            children
                .entry(p.as_str().expect("id").to_string())
                .or_default()
                .push(g["id"].as_str().expect("id").to_string());
        }
    }
    let statuses = [
        "PENDING",
        "INFO",
        "OK",
        "WARNING",
        "CRITICAL",
        "UNKNOWN",
        "TIMEOUT",
        "ERROR",
        "DISCONNECTED",
        "ACTION",
    ];
    let mut out = HashMap::new();
    for g in groups {
        let gid = g["id"].as_str().expect("id").to_string();
        let mut under = HashSet::new();
        let mut stack = vec![gid.clone()];
        while let Some(x) = stack.pop() {
            if under.insert(x.clone()) {
                stack.extend(children.get(&x).cloned().unwrap_or_default());
            }
        }
        let mut counts = vec![0u64; 10];
        let mut worst = 0usize;
        let mut total = 0;
        for c in state["checks"].as_array().expect("checks") {
            let in_group = c["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .any(|x| under.contains(x.as_str().expect("id")));
            if !in_group {
                continue;
            }
            total += 1;
            let s = &c["state"];
            let ignored = s["suppressed"] == true
                || s["in_downtime"] == true
                || s["acknowledged"] != "none"
                || s["encompassed"] == true;
            let sev = if ignored {
                0
            } else {
                statuses
                    .iter()
                    .position(|x| *x == s["status"].as_str().expect("status"))
                    .expect("known status")
            };
            counts[sev] += 1;
            worst = worst.max(sev);
        }
        out.insert(gid, (statuses[worst].to_string(), total, counts));
    }
    out
}

fn actual_aggregates(state: &Value) -> HashMap<String, (String, u64, Vec<u64>)> {
    state["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let a = &g["aggregate"];
            (
                g["id"].as_str().expect("id").to_string(),
                (
                    a["status"].as_str().expect("status").to_string(),
                    a["total"].as_u64().expect("total"),
                    a["counts"]
                        .as_array()
                        .expect("counts")
                        .iter()
                        .map(|v| v.as_u64().expect("count"))
                        .collect(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_every_executor_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = demo_config(dir.path());
    // Not the demo's own 8080: its self-checks must follow --listen.
    let mut child = bergamotd_run(&config, port)
        .current_dir(dir.path())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bergamotd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut aggregates_matched = false;
    let engines = ["dummy", "tcp", "http", "nagios"];
    loop {
        assert!(
            Instant::now() < deadline,
            "within 30 s: engines with results {:?}, aggregates matched {aggregates_matched}",
            seen.keys().collect::<Vec<_>>()
        );
        if let Ok(r) = common::request(addr, "GET", "/api/state", None, None).await {
            if r.status == 200 {
                let state = r.json();
                for c in state["checks"].as_array().expect("checks") {
                    if !c["state"]["last_check_at"].is_null() {
                        seen.insert(c["engine"].as_str().expect("engine").to_string(), c.clone());
                    }
                }
                // State and aggregates are read one after the other; a result
                // applied in between is retried on the next poll.
                if expected_aggregates(&state) == actual_aggregates(&state) {
                    aggregates_matched = true;
                }
                if aggregates_matched && engines.iter().all(|e| seen.contains_key(*e)) {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The daemon checks itself: its own port and /healthz (at --listen,
    // not the config's 8080) answer OK from the first result on.
    assert_eq!(seen["tcp"]["state"]["status"], "OK", "{}", seen["tcp"]);
    assert_eq!(seen["http"]["state"]["status"], "OK", "{}", seen["http"]);
    let tcp_output = seen["tcp"]["state"]["output"].as_str().expect("output");
    assert!(
        tcp_output.contains(&format!("127.0.0.1:{port}")),
        "{tcp_output}"
    );
    // The shipped plugin ran (its output has a queue depth and perfdata).
    assert!(seen["nagios"]["state"]["output"]
        .as_str()
        .expect("output")
        .contains("queue depth"));
    assert_eq!(seen["nagios"]["state"]["perfdata"][0]["label"], "depth");
    assert_eq!(get(addr, "/healthz", None).await.status, 200);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = exit_status(&mut child, Duration::from_secs(20), "SIGTERM").await;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn check_config_reports_file_and_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "site = \"t\"\n\n[[host]]\nname = \"web1\"\nevery = \"soon\"\n",
    )
    .expect("write");
    let (code, stdout) = check_config(&path);
    assert_eq!(code, Some(1), "stdout: {stdout}");
    let expected = format!("{}:5:", path.display());
    assert!(
        stdout.contains(&expected),
        "expected {expected:?} in {stdout:?}"
    );
    assert!(stdout.contains("every"), "{stdout}");
}

#[test]
fn check_config_accepts_the_demo() {
    let (code, stdout) = check_config(&repo_root().join("examples/demo.toml"));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(stdout.contains("10 checks"), "{stdout}");
}

/// The exit status of `child` once it exits after `signal`; after `within`,
/// kills it and panics.
async fn exit_status(
    child: &mut std::process::Child,
    within: Duration,
    signal: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("bergamotd did not exit within {within:?} of {signal}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `bergamotd check-config path`: its exit code and standard output.
fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bergamotd"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What fails at run time fails `check-config`: a plugin that does not
/// exist or is not executable, an engine no executor serves.
#[test]
fn check_config_fails_on_what_fails_at_run_time() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("check_plain.sh");
    std::fs::write(&plain, "#!/bin/sh\necho OK\n").expect("write");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let good = dir.path().join("check_good.sh");
    std::fs::write(&good, "#!/bin/sh\necho OK\n").expect("write");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let base = format!(
        "site = \"t\"\n\
         [[command]]\nname = \"good\"\nargv = [\"{}\"]\n\
         [[command]]\nname = \"sh\"\nargv = [\"sh\", \"-c\", \"true\"]\n\
         [[host]]\nname = \"h\"\ncheck = {{ command = \"good\" }}\n\
         service = [{{ name = \"s\", command = \"sh\" }}]\n",
        good.display()
    );
    let path = dir.path().join("t.toml");
    std::fs::write(&path, &base).expect("write");
    let (code, stdout) = check_config(&path);
    assert_eq!(code, Some(0), "{stdout}");

    let broken = format!(
        "{base}\
         [[command]]\nname = \"plain\"\nargv = [\"{}\"]\n\
         [[command]]\nname = \"missing\"\nargv = [\"{}/nope\"]\n\
         [[command]]\nname = \"odd\"\nengine = \"snmp\"\n\
         [[host]]\nname = \"h2\"\ncheck = {{ command = \"plain\" }}\n\
         service = [{{ name = \"m\", command = \"missing\" }}, {{ name = \"o\", command = \"odd\" }}]\n",
        plain.display(),
        dir.path().display()
    );
    std::fs::write(&path, broken).expect("write");
    let (code, stdout) = check_config(&path);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("is not executable") && stdout.contains("check h2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("nope does not exist") && stdout.contains("check h2/m"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unknown engine \"snmp\"") && stdout.contains("check h2/o"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
}

/// A FIFO dropped into the config directory makes a SIGHUP reload fail with
/// a problem naming it (before: the loader blocked in open(2) forever), and
/// SIGTERM still ends the daemon.
#[tokio::test(flavor = "multi_thread")]
async fn reload_with_a_fifo_fails_and_sigterm_still_ends_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).expect("mkdir");
    std::fs::write(
        conf.join("a.toml"),
        "site = \"t\"\n[[command]]\nname = \"ok\"\nengine = \"dummy\"\n\
         [[host]]\nname = \"h\"\ncheck = { command = \"ok\" }\n",
    )
    .expect("write");
    let log = dir.path().join("log");
    let port = free_port();
    let mut child = bergamotd_run(&conf, port)
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn bergamotd");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let wait_log = |what: &'static str| {
        let log = log.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(what) {
                    return text;
                }
                assert!(Instant::now() < deadline, "no {what:?} in the log: {text}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_log("node running").await;
    assert_eq!(get(addr, "/healthz", None).await.status, 200);
    let made = Command::new("mkfifo")
        .arg(conf.join("b.toml"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let text = wait_log("reload failed").await;
    assert!(text.contains("b.toml") && text.contains("FIFO"), "{text}");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = exit_status(
        &mut child,
        Duration::from_secs(30),
        "SIGTERM after a failed reload",
    )
    .await;
    assert!(status.success(), "exit status {status}");
}
