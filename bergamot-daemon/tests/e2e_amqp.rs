//! End to end over RabbitMQ + PostgreSQL: `bergamotd scheduler`, `worker`
//! and `processor` as separate OS processes on one config; real check
//! results arrive in the store. Also the CLI's refusals (bad URLs, a role
//! split on in-memory backends).

mod common;

use bergamot_core::model::{CheckId, Status};
use bergamot_core::store::Store;
use common::cluster::{results_history, service_urls, wait_for, Cluster};
use std::process::Command;
use std::time::Duration;

const SITE: &str = "e2e";

fn config() -> String {
    format!(
        r#"
site = "{SITE}"

[defaults]
every = "2s"
retry_every = "2s"
failed_after = 1
recovers_after = 1
timeout = "5s"

[[command]]
name = "ok"
engine = "dummy"
params = {{ status = "OK", output = "dummy ok" }}

[[command]]
name = "warn"
engine = "dummy"
params = {{ status = "WARNING", output = "dummy warning" }}

[[command]]
name = "true"
argv = ["/bin/true"]

[[host]]
name = "h1"
check = {{ command = "ok" }}

[[host.service]]
name = "warn"
command = "warn"

[[host.service]]
name = "nagios-true"
command = "true"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_in_separate_processes_produce_results_in_postgres() {
    let Some((pg, amqp)) = service_urls("e2e") else {
        return;
    };
    let mut cluster = Cluster::new(&pg, &amqp, SITE, &config());
    // The processor first: it creates the schema and syncs the config. The
    // worker before the scheduler: until a worker declared the pool's
    // queues, executes are unroutable (ERROR "no worker pool serves …").
    cluster.start("processor", "proc1");
    cluster.start_worker("work1").await;
    cluster.start("scheduler", "sched1");

    let host = CheckId::host(SITE, "h1");
    let warn = CheckId::service(SITE, "h1", "warn");
    let nagios = CheckId::service(SITE, "h1", "nagios-true");
    let store = wait_for("the schema to exist", Duration::from_secs(30), || async {
        let s = cluster.store().await;
        s.state(host).await.ok().map(|_| s)
    })
    .await;

    // Each check gets at least two results, with the status its executor gives.
    let expect = [
        (host, Status::Ok, "dummy ok"),
        (warn, Status::Warning, "dummy warning"),
        (nagios, Status::Ok, ""),
    ];
    for (check, status, output) in expect {
        let entries = wait_for(
            &format!("two results of {check}"),
            Duration::from_secs(40),
            || async {
                let h = results_history(&store, check).await;
                (h.len() >= 2).then_some(h)
            },
        )
        .await;
        for e in &entries {
            assert_eq!(e.status, status, "status of {check}: {e:?}");
            if !output.is_empty() {
                assert_eq!(&*e.output, output, "output of {check}");
            }
        }
        let state = store.state(check).await.expect("state");
        assert_eq!(state.status, status);
        assert!(state.last_check_at.is_some());
    }
    cluster.assert_all_alive();

    // Clean stop: SIGTERM ends each role with success.
    for name in ["sched1", "work1", "proc1"] {
        let status = cluster
            .node(name)
            .terminate(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{name} did not stop on SIGTERM"));
        assert!(status.success(), "{name} exited with {status}");
    }
}

fn bergamotd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bergamotd"))
        .args(args)
        .env_remove("BERGAMOT_STORE")
        .env_remove("BERGAMOT_QUEUE")
        .output()
        .expect("run bergamotd")
}

#[test]
fn a_role_split_on_in_memory_backends_is_refused() {
    for args in [
        vec!["worker"],
        vec!["scheduler", "--queue", "amqp://127.0.0.1:1/%2f"],
        vec!["run", "--roles", "processor,web"],
    ] {
        let out = bergamotd(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("in-memory") && (err.contains("--queue") || err.contains("--store")),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn bad_backend_urls_name_the_flag() {
    let out = bergamotd(&["run", "--store", "mysql://x@y/z"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store"), "{err}");

    let out = bergamotd(&["run", "--queue", "kafka://broker:9092"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--queue"), "{err}");

    // A PostgreSQL URL that does not parse: the flag is named, the password is not shown.
    let out = bergamotd(&["run", "--store", "postgres://u:secret@host:notaport/db"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store"), "{err}");
    assert!(!err.contains("secret"), "password leaked: {err}");
}
