//! End to end: an in-process daemon (processor + notifier on the in-memory
//! backends) delivering through a real SMTP server (Debian's aiosmtpd, the
//! sink of `bergamot-core/tests/data/notify/smtp_sink.py`) and a real local
//! HTTP receiver. Delays are seconds.

mod common;

use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, CheckResult, Status};
use bergamot_core::state::Ack;
use bergamot_core::store::Downtime;
use bergamot_daemon::{Backends, Options, Running};
use chrono::Utc;
use common::{start_in_process, Stop, OK_COMMAND};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use warp::Filter;

const SITE: &str = "e";

fn python_with_aiosmtpd() -> Option<&'static str> {
    bergamot_testkit::require_python_module("aiosmtpd", "email end to end")
}

/// The aiosmtpd sink, and `(recipient, subject, message id)` of every
/// message it has so far.
type Smtp = bergamot_testkit::SmtpSink;

fn smtp_messages(smtp: &Smtp) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for v in smtp.messages() {
        for r in v["rcpt_tos"].as_array().expect("rcpt_tos") {
            out.push((
                r.as_str().unwrap_or_default().to_string(),
                v["subject"].as_str().unwrap_or_default().to_string(),
                v["message_id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// A local HTTP receiver: keeps every JSON body POSTed to `/hook`.
async fn receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let route = warp::path!("hook")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |v: serde_json::Value| {
            g.lock().push(v);
            warp::reply()
        });
    let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    (addr.port(), got)
}

fn config(smtp: u16, hook: u16) -> String {
    format!(
        r#"
site = "{SITE}"

{OK_COMMAND}
[[contact]]
name = "ann"
email = "ann@example.org"

[[contact]]
name = "bob"
email = "bob@example.org"

[[contact]]
name = "dan"
email = "dan@example.org"

[[team]]
name = "ops"
members = ["ann", "bob"]

[[team]]
name = "dba"
members = ["dan"]

[[channel]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = {smtp}
security = "none"
from = "Bergamot <bergamot@example.com>"
timeout = "10s"

[[channel]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook}/hook"
timeout = "10s"

[[escalation]]
name = "later"
  [[escalation.step]]
  after = "3s"
  teams = ["dba"]

[[host]]
name = "db"
failed_after = 1
recovers_after = 1
notify = {{ teams = ["ops"], channels = ["mail", "hook"], escalation = "later", repeat_every = "2s" }}

[[host.service]]
name = "disk"
command = "ok"
failed_after = 1
recovers_after = 1

[[host]]
name = "web"
failed_after = 1
recovers_after = 1
notify = {{ teams = ["ops"], channels = ["mail", "hook"] }}

[[host.service]]
name = "http"
command = "ok"
failed_after = 1
recovers_after = 1
"#
    )
}

struct Env {
    smtp: Smtp,
    hooks: Arc<Mutex<Vec<serde_json::Value>>>,
    backends: Backends,
    running: Running,
    stop: Stop,
}

async fn env() -> Option<Env> {
    let python = python_with_aiosmtpd()?;
    let smtp = Smtp::start(python, &[]).await;
    let (hook, hooks) = receiver().await;
    let config = Config::from_str_named("notify.toml", &config(smtp.port, hook)).expect("config");
    let backends = Backends::in_memory();
    let mut notifier = bergamot_daemon::roles::notifier::NotifierOptions {
        model: config.notify.clone(),
        plan_every: Duration::from_millis(200),
        ..Default::default()
    };
    notifier.dispatcher.poll_every = Duration::from_millis(100);
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        roles: "processor,notifier".parse().expect("roles"),
        notifier,
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Options::default()
    };
    let (running, stop) = start_in_process(config.model, backends.clone(), options).await;
    Some(Env {
        smtp,
        hooks,
        backends,
        running,
        stop,
    })
}

impl Env {
    async fn push(&self, check: CheckId, status: Status) {
        self.backends
            .queue
            .publish_result(CheckResult::new(check, status, "test", Utc::now()))
            .await
            .expect("publish result");
    }

    /// `kind recipient e<escalation> s<sequence>` of every webhook delivery.
    fn hook_keys(&self) -> Vec<String> {
        self.hooks
            .lock()
            .iter()
            .map(|v| {
                format!(
                    "{} {} e{} s{}",
                    v["kind"].as_str().unwrap_or_default(),
                    v["recipient"]["name"].as_str().unwrap_or_default(),
                    v["escalation"],
                    v["sequence"]
                )
            })
            .collect()
    }

    fn mails_to(&self, who: &str, kind: &str) -> usize {
        smtp_messages(&self.smtp)
            .iter()
            .filter(|(r, s, _)| {
                r == &format!("{who}@example.org") && s.ends_with(&format!(": {kind}"))
            })
            .count()
    }

    async fn until(&self, what: &str, cond: impl Fn(&Env) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; webhooks: {:?}; mails: {:?}",
                self.hook_keys(),
                smtp_messages(&self.smtp)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No job was delivered twice: every webhook id and every e-mail
    /// Message-ID (per recipient) is unique.
    fn assert_never_twice(&self) {
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for v in self.hooks.lock().iter() {
            *ids.entry(v["id"].to_string()).or_default() += 1;
        }
        let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "webhooks delivered twice: {twice:?}");
        let mut mids: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (r, _, m) in smtp_messages(&self.smtp) {
            *mids.entry((r, m)).or_default() += 1;
        }
        let twice: Vec<_> = mids.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "e-mails delivered twice: {twice:?}");
    }

    async fn stop(self) {
        common::stop(self.running, self.stop).await;
    }
}

fn count(keys: &[String], key: &str) -> usize {
    keys.iter().filter(|k| *k == key).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_escalation_ack_recovery_reach_the_right_people_once() {
    let Some(env) = env().await else { return };
    let disk = CheckId::service(SITE, "db", "disk");
    env.push(disk, Status::Critical).await;

    // Hard CRITICAL: one e-mail and one webhook per recipient of the team.
    env.until("the alert to ann and bob", |e| {
        let k = e.hook_keys();
        count(&k, "alert ann e0 s0") == 1
            && count(&k, "alert bob e0 s0") == 1
            && e.mails_to("ann", "alert") >= 1
            && e.mails_to("bob", "alert") >= 1
    })
    .await;
    let k = env.hook_keys();
    assert!(
        !k.iter().any(|k| k.contains(" dan ")),
        "dan (escalation team) is not told at once: {k:?}"
    );

    // The escalation after 3 s adds the dba team.
    env.until("the escalation to dan", |e| {
        count(&e.hook_keys(), "alert dan e1 s0") == 1 && e.mails_to("dan", "alert") == 1
    })
    .await;

    // Acknowledging stops repeats.
    env.backends
        .store
        .acknowledge(disk, Ack::Sticky, "op", "on it", Utc::now())
        .await
        .expect("acknowledge");
    env.until("the acknowledgement to ann", |e| {
        count(&e.hook_keys(), "acknowledge ann e0 s0") == 1
    })
    .await;
    let alerts_at_ack = env
        .hook_keys()
        .iter()
        .filter(|k| k.starts_with("alert "))
        .count();
    // Three repeat intervals (a window in which nothing may arrive): a
    // repeat would have been planned and sent.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let alerts_later = env
        .hook_keys()
        .iter()
        .filter(|k| k.starts_with("alert "))
        .count();
    assert_eq!(
        alerts_later,
        alerts_at_ack,
        "no repeat or escalation after the acknowledgement: {:?}",
        env.hook_keys()
    );

    // Recovery reaches everyone the alert reached.
    env.push(disk, Status::Ok).await;
    env.until("the recovery to ann, bob and dan", |e| {
        let k = e.hook_keys();
        ["ann", "bob", "dan"].iter().all(|w| {
            k.iter()
                .filter(|x| x.starts_with(&format!("recovery {w} ")))
                .count()
                == 1
                && e.mails_to(w, "recovery") == 1
        })
    })
    .await;
    for w in ["ann", "bob"] {
        assert_eq!(
            env.mails_to(w, "acknowledge"),
            1,
            "one acknowledgement mail to {w}"
        );
    }
    env.assert_never_twice();
    // This node has no web role: its own /metrics listener counts the sends
    // per channel (every mail and webhook the receivers got, none failed).
    let addr = env
        .running
        .metrics_addr
        .expect("the metrics listener is up");
    let sample = |text: &str, channel: &str, outcome: &str| -> usize {
        let key =
            format!("bergamot_notifications_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0, |v| v.trim().parse().expect("a count"))
    };
    let mails = smtp_messages(&env.smtp).len();
    let hooks = env.hooks.lock().len();
    // A send is counted just after its receiver accepted it: wait for the last.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = common::request(addr, "GET", "/metrics", None, None)
            .await
            .expect("GET /metrics")
            .body;
        if sample(&text, "mail", "sent") >= mails && sample(&text, "hook", "sent") >= hooks
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&text, "mail", "sent"), mails, "{text}");
    assert_eq!(sample(&text, "hook", "sent"), hooks, "{text}");
    assert_eq!(
        sample(&text, "mail", "failed") + sample(&text, "hook", "failed"),
        0
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_holds_the_alert_until_it_ends() {
    let Some(env) = env().await else { return };
    let http = CheckId::service(SITE, "web", "http");
    let now = Utc::now();
    env.backends
        .store
        .schedule_downtime(
            Downtime {
                id: Uuid::new_v4(),
                check_id: http,
                starts_at: now - chrono::Duration::seconds(1),
                ends_at: now + chrono::Duration::seconds(4),
                author: "op".into(),
                comment: "maintenance".into(),
            },
            now,
        )
        .await
        .expect("schedule downtime");
    env.push(http, Status::Critical).await;
    let s = bergamot_testkit::wait_for(
        "the check hard CRITICAL",
        Duration::from_secs(20),
        || async {
            let s = env.backends.store.state(http).await.expect("state");
            (s.hard && s.status == Status::Critical).then_some(s)
        },
    )
    .await;
    assert!(s.in_downtime, "the downtime is in effect");
    // Held while the downtime lasts (it ends 4 s after it started).
    let k = env.hook_keys();
    assert!(
        !k.iter().any(|k| k.starts_with("alert ")),
        "no alert during the downtime: {k:?}"
    );
    env.until("the held alert to ann and bob after the downtime", |e| {
        let k = e.hook_keys();
        count(&k, "alert ann e0 s0") == 1
            && count(&k, "alert bob e0 s0") == 1
            && e.mails_to("ann", "alert") == 1
            && e.mails_to("bob", "alert") == 1
    })
    .await;
    let s = env.backends.store.state(http).await.expect("state");
    assert!(!s.in_downtime, "sent only once the downtime ended");
    env.assert_never_twice();
    env.stop().await;
}
