//! An in-process daemon (processor + web node on the in-memory backends,
//! no scheduler or worker, so states change only through what a test sends).

use super::cheap_hash;
use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, GroupId};
use bergamot_daemon::wiring::ConfigSource;
use bergamot_daemon::{start, Backends, Options, Roles, Running};
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;

pub const SITE: &str = "t";

pub struct Daemon {
    pub addr: SocketAddr,
    pub running: Running,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub token: String,
}

impl Daemon {
    pub fn trap(&self) -> CheckId {
        CheckId::trap(SITE, "app", "events")
    }
    pub fn dummy(&self) -> CheckId {
        CheckId::service(SITE, "app", "cpu")
    }
    pub fn other(&self) -> CheckId {
        CheckId::trap(SITE, "lonely", "events")
    }
    pub fn group(&self, name: &str) -> GroupId {
        GroupId::named(SITE, name)
    }
}

pub fn config_text() -> String {
    format!(
        r#"
site = "{SITE}"

[web]
anonymous_read = false

[[web.users]]
name = "viewer"
password_hash = "{v}"
role = "viewer"

[[web.users]]
name = "op"
password_hash = "{o}"
role = "operator"

[[web.users]]
name = "admin"
password_hash = "{a}"
role = "admin"

[[web.tokens]]
name = "ci"
token_hash = "{t}"
role = "operator"

[[command]]
name = "ok"
engine = "dummy"
params = {{ status = "OK" }}

[[group]]
name = "top"

[[group]]
name = "middle"
parents = ["top"]

[[group]]
name = "leaf"
parents = ["middle"]

[[group]]
name = "elsewhere"

[[location]]
name = "dc"

[[host]]
name = "app"
location = "dc"
groups = ["leaf"]
failed_after = 1
recovers_after = 1

[[host.service]]
name = "cpu"
command = "ok"

[[host.trap]]
name = "events"

[[host]]
name = "lonely"
groups = ["elsewhere"]

[[host.trap]]
name = "events"
"#,
        v = cheap_hash("v"),
        o = cheap_hash("o"),
        a = cheap_hash("a"),
        t = bergamot_daemon::web::auth::hash_token("secret-token"),
    )
}

pub async fn daemon() -> Daemon {
    let text = config_text();
    let config = Config::from_str_named("test.toml", &text).expect("test config");
    let source_text = text.clone();
    let source: ConfigSource = Arc::new(move || {
        let t = source_text.clone();
        async move { Config::from_str_named("test.toml", &t) }.boxed()
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        auth: (&config.web).into(),
        roles: Roles {
            scheduler: false,
            worker: false,
            processor: true,
            web: true,
            notifier: true,
        },
        worker_concurrency: 4,
        processor_lanes: 2,
        result_limits: Default::default(),
        config_source: Some(source),
        ownership: None,
        metrics_listen: None,
        freshness: Default::default(),
        notifier: Default::default(),
    };
    let running = start(
        config.model,
        Backends::in_memory(),
        bergamot_core::exec::Executors::standard(),
        options,
        async move {
            rx.await.ok();
        },
    )
    .await
    .expect("start daemon");
    Daemon {
        addr: running.addr.expect("web role runs"),
        running,
        stop: Some(tx),
        token: "secret-token".into(),
    }
}
