//! `bergamotd` roles as separate OS processes over the real PostgreSQL and
//! RabbitMQ: a [`Cluster`] owns a temp dir with a config, a fresh PostgreSQL
//! schema and a random AMQP prefix, starts role processes and kills them,
//! drops the schema and deletes the broker topology when dropped.

use bergamot_amqp::{AmqpConfig, AmqpQueue};
use bergamot_core::model::{CheckId, Status};
use bergamot_core::queue::Queue as _;
use bergamot_core::store::{HistoryEntry, HistoryPage, Store};
use bergamot_store::{PostgresConfig, PostgresStore};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Result pools of every test cluster.
pub const RESULT_POOLS: u16 = 4;

/// The service URLs `(postgres, amqp)`, or `None` (after saying so) when the
/// test should skip. With `BERGAMOT_REQUIRE_SERVICES=1` a missing one fails.
pub fn service_urls(test: &str) -> Option<(String, String)> {
    let pg = bergamot_testkit::require_env("BERGAMOT_TEST_POSTGRES_URL", test)?;
    let amqp = bergamot_testkit::require_env("BERGAMOT_TEST_AMQP_URL", test)?;
    Some((pg, amqp))
}

/// One running role process.
pub struct Node {
    pub name: String,
    pub role: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Node {
    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM, then wait up to `within` for a clean exit (SIGKILL after).
    /// Returns the exit status when it stopped by itself.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Processes of one test deployment, and what they share.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pg: String,
    pub amqp: String,
    pub schema: String,
    pub prefix: String,
    pub site: String,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// A cluster whose config is `config_text` (written to `bergamot.toml`
    /// in a fresh temp dir), on a fresh schema and prefix.
    pub fn new(pg: &str, amqp: &str, site: &str, config_text: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("bergamot.toml");
        std::fs::write(&config, config_text).expect("write config");
        let id = uuid::Uuid::new_v4().simple().to_string();
        Cluster {
            dir,
            config,
            pg: pg.to_string(),
            amqp: amqp.to_string(),
            schema: format!("t_{}", &id[..16]),
            prefix: format!("bt{}", &id[..16]),
            site: site.to_string(),
            nodes: Vec::new(),
        }
    }

    /// Writes an executable script `name` into the cluster's dir; returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Starts `bergamotd <role>` as node `name` with the shared options;
    /// returns its index in [`Cluster::nodes`].
    pub fn start(&mut self, role: &str, name: &str) -> usize {
        self.start_with(role, name, &[])
    }

    /// [`Cluster::start`] with more command-line arguments.
    pub fn start_with(&mut self, role: &str, name: &str, extra: &[&str]) -> usize {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_bergamotd"))
            .arg(role)
            .arg("--config")
            .arg(&self.config)
            .args(["--store", &self.pg, "--schema", &self.schema])
            .args(["--queue", &self.amqp, "--amqp-prefix", &self.prefix])
            .args(["--result-pools", &RESULT_POOLS.to_string()])
            .args(["--node", &self.node_name(name)])
            .args(extra)
            .env("RUST_LOG", "info,bergamot_amqp=info")
            .env_remove("BERGAMOT_STORE")
            .env_remove("BERGAMOT_QUEUE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn bergamotd");
        self.nodes.push(Node {
            name: name.to_string(),
            role: role.to_string(),
            child,
            log,
        });
        self.nodes.len() - 1
    }

    /// Starts a worker and waits until it consumes (its execute queues
    /// exist): executes published before that are unroutable and come back
    /// as ERROR "no worker pool serves engine …" results.
    pub async fn start_worker(&mut self, name: &str) -> usize {
        let i = self.start("worker", name);
        let log = self.nodes[i].log.clone();
        wait_for(
            &format!("worker {name} to consume"),
            Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move { text.contains("worker consuming executes").then_some(()) }
            },
        )
        .await;
        i
    }

    /// The scheduler node name `bergamotd` runs with for node `name`
    /// (unique across concurrent tests).
    pub fn node_name(&self, name: &str) -> String {
        format!("{name}-{}", &self.prefix[2..12])
    }

    /// Scheduling partitions each scheduler node of this cluster holds now,
    /// read from PostgreSQL's lock table (node name -> partitions).
    pub async fn partitions_held(&self) -> BTreeMap<String, Vec<u32>> {
        let (client, conn) = tokio_postgres::connect(&self.pg, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(conn);
        let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for n in &self.nodes {
            if n.role != "scheduler" {
                continue;
            }
            let rows = client
                .query(
                    "SELECT l.objid::int8 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                     AND a.application_name LIKE $1",
                    &[&format!("bgsched/%/{}", self.node_name(&n.name))],
                )
                .await
                .expect("query pg_locks");
            let mut parts: Vec<u32> = rows.iter().map(|r| r.get::<_, i64>(0) as u32).collect();
            parts.sort_unstable();
            out.insert(n.name.clone(), parts);
        }
        out
    }

    /// The node called `name`.
    pub fn node(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The log of node `name` so far.
    pub fn log_of(&self, name: &str) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        std::fs::read_to_string(&node.log).unwrap_or_default()
    }

    /// Panics (with its log) if a node exited.
    pub fn assert_all_alive(&mut self) {
        self.assert_all_alive_except(&[]);
    }

    /// Panics (with its log) if a node not in `except` exited.
    pub fn assert_all_alive_except(&mut self, except: &[&str]) {
        let mut dead = Vec::new();
        for n in &mut self.nodes {
            if except.contains(&n.name.as_str()) {
                continue;
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                dead.push(format!(
                    "{} ({}) exited with {status}:\n{}",
                    n.name,
                    n.role,
                    tail(&std::fs::read_to_string(&n.log).unwrap_or_default(), 40)
                ));
            }
        }
        assert!(dead.is_empty(), "nodes died:\n{}", dead.join("\n"));
    }

    /// A store on the cluster's schema (waits until a node created it).
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(
            PostgresConfig::new(self.pg.clone())
                .with_schema(self.schema.clone())
                .with_pool_size(4),
        )
        .await
        .expect("connect to the cluster's schema")
    }

    /// A queue on the cluster's prefix (to publish results as a client would).
    pub async fn queue(&self) -> AmqpQueue {
        AmqpQueue::connect(
            AmqpConfig::new(self.amqp.clone())
                .with_prefix(self.prefix.clone())
                .with_result_pools(RESULT_POOLS)
                .with_site(self.site.clone()),
        )
        .await
        .expect("connect to RabbitMQ")
    }

    /// Prints every node's log tail (for failures).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            eprintln!("----- {} ({}) -----\n{}", n.name, n.role, tail(&text, 60));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        let (pg, amqp, schema, prefix) = (
            self.pg.clone(),
            self.amqp.clone(),
            self.schema.clone(),
            self.prefix.clone(),
        );
        // Clean up from a plain thread with its own runtime (Drop may run
        // inside a runtime, or during a panic).
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let cleanup = async {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&pg, tokio_postgres::NoTls).await
                    {
                        let h = tokio::spawn(conn);
                        client
                            .batch_execute(&format!(
                                "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                            ))
                            .await
                            .ok();
                        drop(client);
                        h.await.ok();
                    }
                    if let Ok(q) = AmqpQueue::connect(
                        AmqpConfig::new(amqp)
                            .with_prefix(prefix)
                            .with_result_pools(RESULT_POOLS)
                            .with_delete_topology_on_close(true),
                    )
                    .await
                    {
                        // Declare the workers' execute queues here too, so
                        // that delete_topology removes them with the rest.
                        let engines = bergamot_core::exec::Executors::standard().engines();
                        if let Ok(stream) = q.consume_executes("default", &engines).await {
                            drop(stream);
                        }
                        q.delete_topology().await.ok();
                        q.close().await.ok();
                    }
                };
                tokio::time::timeout(Duration::from_secs(30), cleanup)
                    .await
                    .ok();
            });
        })
        .join()
        .ok();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub use bergamot_testkit::wait_for;

/// The whole history of `check`, oldest first (empty if the schema or the
/// check does not exist yet).
pub async fn history(store: &PostgresStore, check: CheckId) -> Vec<HistoryEntry> {
    let mut all = match store
        .history(
            check,
            HistoryPage {
                before_version: None,
                limit: 100_000,
            },
        )
        .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("reading the history of {check}: {e}");
            Vec::new()
        }
    };
    all.reverse();
    all
}

/// The history entries of `check` that came from a result, oldest first.
pub async fn results_history(store: &PostgresStore, check: CheckId) -> Vec<HistoryEntry> {
    let mut h = history(store, check).await;
    h.retain(|e| e.result_id.is_some());
    h
}

/// Applied results per check (history entries that came from a result),
/// with their statuses.
pub async fn results_of(
    store: &PostgresStore,
    checks: &[CheckId],
) -> BTreeMap<CheckId, Vec<(chrono::DateTime<chrono::Utc>, Status)>> {
    let mut out = BTreeMap::new();
    for &c in checks {
        let h = results_history(store, c).await;
        out.insert(c, h.into_iter().map(|e| (e.at, e.status)).collect());
    }
    out
}
