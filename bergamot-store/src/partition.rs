//! Scheduling ownership across nodes through PostgreSQL session advisory
//! locks: [`PgPartitionOwner`].
//!
//! Each scheduling partition `p` is the advisory lock `(class, p)` (the
//! two-`int4` form). A node owns a partition while its session holds that
//! lock. The owner keeps one dedicated connection (not a pooled one: the
//! locks belong to the session) and, every `round_every`:
//!
//! 1. counts the live nodes: sessions on this database whose
//!    `application_name` is `bgsched/<class>/...` (each owner names its
//!    session `bgsched/<class>/<node>`). A dead node's session is gone from
//!    `pg_stat_activity` at the same moment its locks are freed, so no
//!    heartbeat table or expiry delay is needed;
//! 2. computes its fair share `ceil(P / live nodes)`;
//! 3. gives back the partitions it holds above that share, so that a node
//!    that joins gets its part;
//! 4. tries (`pg_try_advisory_lock`, never waiting) free partitions until
//!    it holds its share, starting at a node-specific offset so that nodes
//!    do not all race for the same ones.
//!
//! If the connection dies, or a round fails or times out, the owner drops
//! every partition at once (publishing the empty set before anything else)
//! and closes the session; the next round reconnects and starts again from
//! nothing. A node that is killed loses its session, PostgreSQL frees its
//! locks, and the other nodes take its partitions on their next round.
//!
//! This module only needs `tokio-postgres`; it does not depend on the
//! `Store` implementation.

use bergamot_core::schedule::{PartitionOwner, DEFAULT_PARTITIONS};
use bergamot_core::{Error, Result};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// The default advisory-lock class of scheduling partitions (`"BGSC"`).
pub const DEFAULT_LOCK_CLASS: i32 = 0x4247_5343;

/// Prefix of the owners' session `application_name`.
const APP_PREFIX: &str = "bgsched";

/// Settings of a [`PgPartitionOwner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOwnerConfig {
    /// PostgreSQL URL (`postgres://user@host:port/db`), the same database
    /// for every node of the cluster.
    pub url: String,
    /// Advisory-lock class (first key) of the partition locks. Every node
    /// of one cluster uses the same; two clusters sharing a database use
    /// different ones. Default [`DEFAULT_LOCK_CLASS`].
    pub lock_class: i32,
    /// Number of partitions `P`: the same as the schedules'
    /// `ScheduleConfig::partitions`. Default 64.
    pub partitions: u32,
    /// This node's name (unique in the cluster). Default: a random UUID.
    pub node: String,
    /// How often an ownership round runs ([`PgPartitionOwner::run`]):
    /// partitions of a dead node are taken within about this. Default 2 s.
    pub round_every: Duration,
    /// A round (or connecting) taking longer than this fails, and the node
    /// drops everything. Keep it well under PostgreSQL's own detection of
    /// dead clients (TCP keepalives), so that a node cut off from the
    /// database stops scheduling before its locks are freed. Default 5 s.
    pub round_timeout: Duration,
}

impl PgOwnerConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgOwnerConfig {
            url: url.into(),
            lock_class: DEFAULT_LOCK_CLASS,
            partitions: DEFAULT_PARTITIONS,
            node: uuid::Uuid::new_v4().to_string(),
            round_every: Duration::from_secs(2),
            round_timeout: Duration::from_secs(5),
        }
    }

    /// With this lock class.
    pub fn with_lock_class(mut self, class: i32) -> Self {
        self.lock_class = class;
        self
    }

    /// With this number of partitions.
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// With this node name.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// With this round period.
    pub fn with_round_every(mut self, every: Duration) -> Self {
        self.round_every = every;
        self
    }
}

/// What the connection task and the rounds share (behind a plain mutex,
/// never held across an await).
#[derive(Debug, Default)]
struct Shared {
    /// Bumped on every new connection.
    generation: u64,
    /// The current connection is up.
    alive: bool,
    owned: BTreeSet<u32>,
}

struct Conn {
    client: Client,
    generation: u64,
    task: JoinHandle<()>,
}

/// [`PartitionOwner`] over PostgreSQL session advisory locks; see the
/// module documentation for how partitions are shared.
pub struct PgPartitionOwner {
    config: PgOwnerConfig,
    pg: tokio_postgres::Config,
    app_name: String,
    shared: Arc<Mutex<Shared>>,
    tx: Arc<watch::Sender<BTreeSet<u32>>>,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl std::fmt::Debug for PgPartitionOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPartitionOwner")
            .field("app_name", &self.app_name)
            .field("owned", &self.shared.lock().owned.len())
            .finish_non_exhaustive()
    }
}

fn pg_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::backend(context, e)
}

impl PgPartitionOwner {
    /// An owner with `config`; it connects on its first round. Fails on a
    /// bad URL, zero partitions, or a node name too long for PostgreSQL's
    /// 63-byte `application_name`.
    pub fn new(config: PgOwnerConfig) -> Result<Self> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
            Error::InvalidInput(format!("partition owner: bad PostgreSQL URL: {e}"))
        })?;
        if config.partitions == 0 || config.partitions > i32::MAX as u32 {
            return Err(Error::InvalidInput(format!(
                "partition owner: partitions must be between 1 and {}, got {}",
                i32::MAX,
                config.partitions
            )));
        }
        let app_name = format!("{APP_PREFIX}/{}/{}", config.lock_class, config.node);
        if app_name.len() > 63 || config.node.is_empty() {
            return Err(Error::InvalidInput(format!(
                "partition owner: node name {:?} must be non-empty and make an application_name of at most 63 bytes ({app_name:?})",
                config.node
            )));
        }
        pg.application_name(&app_name);
        pg.connect_timeout(config.round_timeout);
        pg.keepalives(true);
        let (tx, _) = watch::channel(BTreeSet::new());
        Ok(PgPartitionOwner {
            config,
            pg,
            app_name,
            shared: Arc::default(),
            tx: Arc::new(tx),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The settings.
    pub fn config(&self) -> &PgOwnerConfig {
        &self.config
    }

    /// The `application_name` of this owner's session
    /// (`bgsched/<class>/<node>`).
    pub fn application_name(&self) -> &str {
        &self.app_name
    }

    /// Runs ownership rounds every `round_every` until `shutdown`
    /// completes, then gives every partition back. Round failures are
    /// logged (the owner then holds nothing) and retried on the next round.
    pub async fn run<S>(&self, shutdown: S)
    where
        S: Future<Output = ()> + Send,
    {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = self.acquire() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, node = %self.config.node, "partition ownership round failed; holding no partitions until the next one");
                    }
                }
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.round_every) => {}
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "cannot release the scheduling partitions; they free when the session ends");
        }
    }

    /// Drops everything: publishes the empty set, then closes the session
    /// (which frees every lock in PostgreSQL).
    fn drop_all(&self, conn: &mut Option<Conn>) {
        {
            let mut s = self.shared.lock();
            s.alive = false;
            s.owned.clear();
            self.tx.send_replace(BTreeSet::new());
        }
        if let Some(c) = conn.take() {
            c.task.abort();
        }
    }

    async fn connect(&self) -> Result<Conn> {
        let (client, connection) = self
            .pg
            .connect(NoTls)
            .await
            .map_err(pg_err("partition owner: cannot connect to PostgreSQL"))?;
        let generation = {
            let mut s = self.shared.lock();
            s.generation += 1;
            s.alive = true;
            s.owned.clear();
            s.generation
        };
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let node = self.config.node.clone();
        let task = tokio::spawn(async move {
            let r = connection.await;
            let mut s = shared.lock();
            if s.generation == generation && s.alive {
                // The session is gone, and with it every lock: stop
                // scheduling before anyone else can take them.
                s.alive = false;
                let lost = s.owned.len();
                s.owned.clear();
                tx.send_replace(BTreeSet::new());
                match r {
                    Ok(()) => {
                        tracing::warn!(%node, lost, "partition owner's connection closed; dropped every partition")
                    }
                    Err(e) => {
                        tracing::warn!(%node, lost, error = %e, "partition owner's connection failed; dropped every partition")
                    }
                }
            }
        });
        Ok(Conn {
            client,
            generation,
            task,
        })
    }

    /// One round on a live connection; returns the owned set.
    async fn round(&self, conn: &Conn) -> Result<BTreeSet<u32>> {
        let class = self.config.lock_class;
        let p_count = self.config.partitions;
        let pattern = format!("{APP_PREFIX}/{class}/%");
        let row = conn
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name LIKE $1",
                &[&pattern],
            )
            .await
            .map_err(pg_err("partition owner: cannot count live nodes"))?;
        let nodes = row.get::<_, i64>(0).max(1) as u64;
        let fair = u64::from(p_count).div_ceil(nodes) as usize;

        let mut owned = self.shared.lock().owned.clone();
        // Give back what is above the fair share (the highest numbers).
        while owned.len() > fair {
            let Some(p) = owned.pop_last() else { break };
            // Stop scheduling it before anyone can take it.
            self.publish(conn.generation, &owned)?;
            conn.client
                .query_one("SELECT pg_advisory_unlock($1, $2)", &[&class, &(p as i32)])
                .await
                .map_err(pg_err("partition owner: cannot release a partition"))?;
        }
        if owned.len() < fair {
            let start = node_offset(&self.config.node, p_count);
            for i in 0..p_count {
                if owned.len() >= fair {
                    break;
                }
                let p = (start + i) % p_count;
                if owned.contains(&p) {
                    continue;
                }
                let got: bool = conn
                    .client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, $2)",
                        &[&class, &(p as i32)],
                    )
                    .await
                    .map_err(pg_err("partition owner: cannot try a partition lock"))?
                    .get(0);
                if got {
                    owned.insert(p);
                }
            }
        }
        self.publish(conn.generation, &owned)?;
        Ok(owned)
    }

    /// Publishes `owned` if the connection of `generation` is still alive.
    fn publish(&self, generation: u64, owned: &BTreeSet<u32>) -> Result<()> {
        let mut s = self.shared.lock();
        if s.generation != generation || !s.alive {
            return Err(Error::Closed(
                "partition owner's connection was lost during the round".into(),
            ));
        }
        if s.owned != *owned {
            s.owned.clone_from(owned);
            self.tx.send_replace(owned.clone());
        }
        Ok(())
    }
}

/// Where a node starts looking for free partitions: a hash of its name.
fn node_offset(node: &str, partitions: u32) -> u32 {
    // FNV-1a: stable, and only a starting point.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

#[async_trait::async_trait]
impl PartitionOwner for PgPartitionOwner {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn acquire(&self) -> Result<BTreeSet<u32>> {
        let mut conn = self.conn.lock().await;
        let timeout = self.config.round_timeout;
        let dead = conn.as_ref().is_none_or(|c| c.client.is_closed());
        if dead {
            self.drop_all(&mut conn);
            match tokio::time::timeout(timeout, self.connect()).await {
                Ok(Ok(c)) => *conn = Some(c),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Closed(format!(
                        "partition owner: connecting took more than {timeout:?}"
                    )))
                }
            }
        }
        let Some(c) = conn.as_ref() else {
            return Err(Error::Closed("partition owner: no connection".into()));
        };
        match tokio::time::timeout(timeout, self.round(c)).await {
            Ok(Ok(owned)) => Ok(owned),
            Ok(Err(e)) => {
                self.drop_all(&mut conn);
                Err(e)
            }
            Err(_) => {
                self.drop_all(&mut conn);
                Err(Error::Closed(format!(
                    "partition owner: a round took more than {timeout:?}; dropped every partition"
                )))
            }
        }
    }

    async fn release(&self) -> Result<()> {
        let mut conn = self.conn.lock().await;
        let result = match conn.as_ref() {
            Some(c) if !c.client.is_closed() => {
                // Stop scheduling first, then free the locks.
                {
                    let mut s = self.shared.lock();
                    s.owned.clear();
                    self.tx.send_replace(BTreeSet::new());
                }
                tokio::time::timeout(
                    self.config.round_timeout,
                    c.client.execute("SELECT pg_advisory_unlock_all()", &[]),
                )
                .await
                .map_err(|_| Error::Closed("partition owner: release timed out".into()))
                .and_then(|r| r.map_err(pg_err("partition owner: cannot release partitions")))
                .map(|_| ())
            }
            _ => Ok(()),
        };
        // Closing the session frees anything left anyway.
        self.drop_all(&mut conn);
        result
    }

    fn owned(&self) -> BTreeSet<u32> {
        self.shared.lock().owned.clone()
    }

    fn watch(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.tx.subscribe()
    }
}
