//! An in-process daemon (processor + web node on the in-memory backends,
//! no scheduler or worker, so states change only through what a test sends).

use super::{cheap_hash, start_in_process, Stop, OK_COMMAND};
use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, GroupId};
use bergamot_daemon::wiring::ConfigSource;
use bergamot_daemon::{Backends, Options, Running};
use futures::FutureExt;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;

pub const SITE: &str = "t";

pub struct Daemon {
    pub addr: SocketAddr,
    pub running: Running,
    pub stop: Option<Stop>,
    pub token: String,
    /// The configuration a reload reads (change it, then `POST /api/reload`).
    pub text: Arc<Mutex<String>>,
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

/// The users of [`config_text`]: name, password and role.
pub const USERS: [(&str, &str, &str); 3] = [
    ("viewer", "v", "viewer"),
    ("op", "o", "operator"),
    ("admin", "a", "admin"),
];

/// `Authorization: Basic ...` of `user`, one of [`USERS`].
pub fn auth_of(user: &str) -> String {
    let (_, password, _) = USERS
        .iter()
        .find(|(name, _, _)| *name == user)
        .unwrap_or_else(|| panic!("no test user {user}"));
    super::basic(user, password)
}

pub fn config_text() -> String {
    format!(
        r#"
site = "{SITE}"

[web]
anonymous_read = false

{users}[[web.tokens]]
name = "ci"
token_hash = "{t}"
role = "operator"

{OK_COMMAND}
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
        users = USERS
            .iter()
            .map(|(name, password, role)| format!(
                "[[web.users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n\n",
                cheap_hash(password)
            ))
            .collect::<String>(),
        t = bergamot_daemon::web::auth::hash_token("secret-token"),
    )
}

/// The daemon of [`config_text`], with the processor, web and notifier roles.
pub async fn daemon() -> Daemon {
    daemon_with(config_text(), "processor,web,notifier").await
}

/// An in-process daemon of `text` running `roles` on the in-memory
/// backends; a reload reads [`Daemon::text`] again.
pub async fn daemon_with(text: String, roles: &str) -> Daemon {
    let config = Config::from_str_named("test.toml", &text).expect("test config");
    let text = Arc::new(Mutex::new(text));
    let source_text = text.clone();
    let source: ConfigSource = Arc::new(move || {
        let t = source_text.lock().clone();
        async move { Config::from_str_named("test.toml", &t) }.boxed()
    });
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        auth: (&config.web).into(),
        roles: roles.parse().expect("roles"),
        worker_concurrency: 4,
        processor_lanes: 2,
        config_source: Some(source),
        ..Options::default()
    };
    let (running, stop) = start_in_process(config.model, Backends::in_memory(), options).await;
    Daemon {
        addr: running.addr.expect("web role runs"),
        running,
        stop: Some(stop),
        token: "secret-token".into(),
        text,
    }
}
