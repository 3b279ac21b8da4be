//! Backend selection: which store and queue a `--store` / `--queue` value
//! names ([`StoreKind`], [`QueueKind`], chosen by URL scheme), and [`open`],
//! which connects them for a node.
//!
//! | flag      | accepted values                                   | backend                |
//! |-----------|---------------------------------------------------|------------------------|
//! | `--store` | `memory`, `postgres://…`, `postgresql://…`        | in-memory, PostgreSQL  |
//! | `--queue` | `memory`, `amqp://…`, `amqps://…`                 | in-memory, RabbitMQ    |

use crate::cli::NodeArgs;
use crate::roles::Roles;
use crate::wiring::{Backends, Ownership};
use anyhow::Context as _;
use bergamot_amqp::{AmqpConfig, AmqpQueue};
use bergamot_core::notify::{InMemoryNotificationStore, NotificationStore};
use bergamot_core::queue::{InMemoryQueue, Queue};
use bergamot_core::store::{InMemoryStore, Store};
use bergamot_store::{
    PgOwnerConfig, PgPartitionOwner, PostgresConfig, PostgresStore, DEFAULT_LOCK_CLASS,
};
use std::sync::Arc;

/// A URL with its password replaced by `***`, for messages and logs.
fn redact(url: &str) -> String {
    bergamot_core::redact::url(url)
}

/// Which store `--store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// `memory`: the embedded store (one process only).
    Memory,
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

/// Which queue `--queue` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueKind {
    /// `memory`: the embedded queue (one process only).
    Memory,
    /// A RabbitMQ URL (`amqp://…` or `amqps://…`).
    Amqp(String),
}

/// `value` (surrounding blanks ignored) as `memory` (`None`) or a URL
/// starting with one of `schemes`; otherwise an error naming `flag`, the
/// value (its password redacted) and the accepted forms: `memory` or `url`.
fn memory_or_url(
    flag: &str,
    value: &str,
    schemes: &[&str],
    url: &str,
) -> anyhow::Result<Option<String>> {
    let v = value.trim();
    if v == "memory" {
        Ok(None)
    } else if schemes.iter().any(|s| v.starts_with(s)) {
        Ok(Some(v.to_string()))
    } else {
        anyhow::bail!("{flag} {:?}: expected `memory` or {url}", redact(v))
    }
}

impl StoreKind {
    /// The store a `--store` value names (surrounding blanks ignored); the
    /// error names the flag and the accepted forms (the password redacted).
    pub fn parse(store: &str) -> anyhow::Result<StoreKind> {
        let url = memory_or_url(
            "--store",
            store,
            &["postgres://", "postgresql://"],
            "a PostgreSQL URL (postgres://user:password@host:port/database)",
        )?;
        Ok(url.map_or(StoreKind::Memory, StoreKind::Postgres))
    }
}

impl QueueKind {
    /// The queue a `--queue` value names (surrounding blanks ignored); the
    /// error names the flag and the accepted forms (the password redacted).
    pub fn parse(queue: &str) -> anyhow::Result<QueueKind> {
        let url = memory_or_url(
            "--queue",
            queue,
            &["amqp://", "amqps://"],
            "a RabbitMQ URL (amqp://user:password@host:port/vhost)",
        )?;
        Ok(url.map_or(QueueKind::Memory, QueueKind::Amqp))
    }
}

/// The backends a node's `--store` and `--queue` select, checked against the
/// roles it runs: splitting the roles over processes refuses the in-memory
/// backends, since separate processes cannot share memory.
pub fn select(args: &NodeArgs, roles: Roles) -> anyhow::Result<(StoreKind, QueueKind)> {
    let store = StoreKind::parse(&args.store)?;
    let queue = QueueKind::parse(&args.queue)?;
    if roles == Roles::all() {
        return Ok((store, queue));
    }
    if queue == QueueKind::Memory {
        anyhow::bail!(
            "running only some roles ({roles}) needs a shared queue: give --queue amqp://… (or BERGAMOT_QUEUE); \
             the in-memory queue cannot be shared with the other roles' processes"
        );
    }
    if store == StoreKind::Memory
        && (roles.scheduler || roles.processor || roles.web || roles.notifier)
    {
        anyhow::bail!(
            "running only some roles ({roles}) needs a shared store: give --store postgres://… (or BERGAMOT_STORE); \
             the in-memory store cannot be shared with the other roles' processes"
        );
    }
    Ok((store, queue))
}

/// The default scheduler node name: host name and process id.
pub(crate) fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(28)
        .collect();
    let host = if host.is_empty() {
        "node".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// The default advisory-lock class: a stable hash of the schema name, so that
/// deployments in different schemas of one database never share partitions.
fn default_lock_class(schema: &str) -> i32 {
    if schema == "bergamot" {
        return DEFAULT_LOCK_CLASS;
    }
    // FNV-1a, folded into 31 bits.
    let mut h: u32 = 0x811c_9dc5;
    for b in schema.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as i32
}

/// Connects the backends `args` name ([`select`]), for a node running
/// `roles` of `site`. With PostgreSQL the notification jobs persist in the
/// store too; with PostgreSQL and the scheduler role, the scheduling
/// partitions are shared with the other scheduler nodes through
/// [`PgPartitionOwner`].
pub async fn open(
    args: &NodeArgs,
    roles: Roles,
    site: &str,
) -> anyhow::Result<(Backends, Option<Ownership>)> {
    let (store_kind, queue_kind) = select(args, roles)?;
    let mut ownership = None;
    let (store, notifications): (Arc<dyn Store>, Arc<dyn NotificationStore>) = match store_kind {
        StoreKind::Memory => (
            Arc::new(InMemoryStore::new()),
            Arc::new(InMemoryNotificationStore::new()),
        ),
        StoreKind::Postgres(url) => {
            let store = Arc::new(open_postgres(args, &url).await?);
            if roles.scheduler {
                ownership = Some(partition_owner(args, &url)?);
            }
            (store.clone(), store)
        }
    };
    let queue: Arc<dyn Queue> = match queue_kind {
        QueueKind::Memory => Arc::new(InMemoryQueue::new()),
        QueueKind::Amqp(url) => Arc::new(open_amqp(args, &url, site).await?),
    };
    Ok((
        Backends {
            store,
            queue,
            notifications,
        },
        ownership,
    ))
}

/// The PostgreSQL store at `url`, in `--schema` (migrated).
async fn open_postgres(args: &NodeArgs, url: &str) -> anyhow::Result<PostgresStore> {
    let config = PostgresConfig::new(url).with_schema(args.schema.clone());
    let store = PostgresStore::connect(config)
        .await
        .with_context(|| format!("--store {}", redact(url)))?;
    tracing::info!(store = %redact(url), schema = %args.schema, "PostgreSQL store connected, schema migrated");
    Ok(store)
}

/// This node's share of the scheduling partitions, through advisory locks
/// of `--lock-class` in the database at `url`.
fn partition_owner(args: &NodeArgs, url: &str) -> anyhow::Result<Ownership> {
    let node = args.node.clone().unwrap_or_else(default_node);
    let class = args
        .lock_class
        .unwrap_or_else(|| default_lock_class(&args.schema));
    let owner = PgPartitionOwner::new(
        PgOwnerConfig::new(url)
            .with_node(node.clone())
            .with_lock_class(class),
    )
    .with_context(|| format!("--node {node:?} / --store {}", redact(url)))?;
    tracing::info!(%node, lock_class = class, "scheduling partitions shared through PostgreSQL advisory locks");
    let round_every = owner.config().round_every;
    Ok(Ownership {
        owner: Arc::new(owner),
        round_every,
    })
}

/// The RabbitMQ queue at `url`, with the `--amqp-*` settings, for `site`.
async fn open_amqp(args: &NodeArgs, url: &str, site: &str) -> anyhow::Result<AmqpQueue> {
    // A worker prefetches as many executes as it runs at once (the
    // prefetch window, not the concurrency, would bound it otherwise).
    let prefetch = u16::try_from(args.worker_concurrency)
        .unwrap_or(u16::MAX)
        .max(AmqpConfig::new("").prefetch);
    let config = AmqpConfig::new(url)
        .with_prefix(args.amqp_prefix.clone())
        .with_result_pools(args.result_pools)
        .with_batch_max(args.amqp_batch_max)
        .with_batch_linger(std::time::Duration::from_millis(args.amqp_batch_linger_ms))
        .with_prefetch(prefetch)
        .with_site(site);
    let queue = AmqpQueue::connect(config)
        .await
        .with_context(|| format!("--queue {}", redact(url)))?;
    tracing::info!(queue = %redact(url), prefix = %args.amqp_prefix, "RabbitMQ queue connected");
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_and_the_accepted_urls() {
        for memory in ["memory", " memory\n"] {
            assert_eq!(StoreKind::parse(memory).unwrap(), StoreKind::Memory);
            assert_eq!(QueueKind::parse(memory).unwrap(), QueueKind::Memory);
        }
        for url in ["postgres://u@h:5432/db", "postgresql://u@h/db"] {
            let kind = StoreKind::parse(url).unwrap();
            assert_eq!(kind, StoreKind::Postgres(url.to_string()));
        }
        for url in ["amqp://guest:guest@h:5672/%2f", "amqps://h/vhost"] {
            let kind = QueueKind::parse(url).unwrap();
            assert_eq!(kind, QueueKind::Amqp(url.to_string()));
        }
    }

    #[test]
    fn a_bad_value_names_the_flag_and_the_accepted_forms_without_the_password() {
        let store = StoreKind::parse(" mysql://u:hunter2@h/db ").unwrap_err();
        assert_eq!(
            store.to_string(),
            "--store \"mysql://u:***@h/db\": expected `memory` or a PostgreSQL URL \
             (postgres://user:password@host:port/database)"
        );
        // The queue takes no store URL, and the other way round.
        let queue = QueueKind::parse("postgres://u@h/db").unwrap_err();
        assert_eq!(
            queue.to_string(),
            "--queue \"postgres://u@h/db\": expected `memory` or a RabbitMQ URL \
             (amqp://user:password@host:port/vhost)"
        );
        assert!(StoreKind::parse("amqp://h").is_err());
        assert!(StoreKind::parse("").is_err());
        assert!(QueueKind::parse("Memory").is_err());
    }

    /// `NodeArgs` as the command line gives them.
    fn node(args: &[&str]) -> NodeArgs {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            node: NodeArgs,
        }
        let line = <Line as clap::Parser>::try_parse_from(
            std::iter::once("t").chain(args.iter().copied()),
        );
        line.expect("arguments").node
    }

    #[test]
    fn splitting_the_roles_needs_shared_backends() {
        let memory = node(&["--store", "memory", "--queue", "memory"]);
        assert!(select(&memory, Roles::all()).is_ok());
        let e = select(&memory, Roles::only("worker")).unwrap_err();
        assert!(e.to_string().contains("needs a shared queue"), "{e}");
        let amqp = node(&["--store", "memory", "--queue", "amqp://h"]);
        assert!(select(&amqp, Roles::only("worker")).is_ok());
        let e = select(&amqp, Roles::only("web")).unwrap_err();
        assert!(e.to_string().contains("needs a shared store"), "{e}");
        let shared = node(&["--store", "postgres://h/db", "--queue", "amqps://h"]);
        assert_eq!(
            select(&shared, Roles::only("scheduler")).unwrap(),
            (
                StoreKind::Postgres("postgres://h/db".into()),
                QueueKind::Amqp("amqps://h".into())
            )
        );
        let bad = node(&["--store", "sqlite://x", "--queue", "memory"]);
        assert!(select(&bad, Roles::all()).is_err());
    }
}
