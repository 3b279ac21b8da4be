//! The `bergamotd` command line: `run`, the single-role subcommands
//! `scheduler`, `worker`, `processor`, `web` and `notifier`, `check-config`,
//! `hash-password`, `hash-token`. [`main`] is the whole binary, parameterised by executors so
//! that a packager's daemon is one call.

use crate::backends::default_node;
use crate::roles::notifier::{standard_channels, NotifierOptions, NotifySource};
use crate::roles::Roles;
use crate::web::auth::{hash_password, hash_token, AuthConfig};
use crate::wiring::{self, ConfigSource, Options};
use bergamot_core::config::{Config, LoadOptions};
use bergamot_core::exec::Executors;
use bergamot_core::notify::DispatcherConfig;
use bergamot_core::Error;
use clap::{Parser, Subcommand};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Bergamot monitoring daemon.
#[derive(Debug, Parser)]
#[command(name = "bergamotd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the roles of `--roles` (default: all of them) in one process.
    Run(RunArgs),
    /// Run only the scheduler role (needs `--store postgres://…` and
    /// `--queue amqp://…`; several scheduler nodes share the checks).
    Scheduler(NodeArgs),
    /// Run only the worker role (needs `--queue amqp://…`).
    Worker(NodeArgs),
    /// Run only the result processor role (needs `--store postgres://…`
    /// and `--queue amqp://…`).
    Processor(NodeArgs),
    /// Run only the web node: REST API, websocket, UI (needs `--store
    /// postgres://…` and `--queue amqp://…`).
    Web(NodeArgs),
    /// Run only the notifier: plans notification jobs and sends them
    /// (needs `--store postgres://…` and `--queue amqp://…`; several
    /// notifier nodes share the jobs).
    Notifier(NodeArgs),
    /// Validate a configuration: print every problem as file:line, exit 1 if any.
    CheckConfig {
        /// A TOML file or a directory of them.
        path: PathBuf,
    },
    /// Read a password from stdin and print its argon2id PHC hash for `[[web.users]]`.
    HashPassword,
    /// Read an API token from stdin and print the hash for `[[web.tokens]]`.
    HashToken,
}

/// Options of every role-running subcommand (`run`, `scheduler`, `worker`,
/// `processor`, `web`).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Configuration file or directory (none: an empty model).
    #[arg(long, short, env = "BERGAMOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address of the web node (overrides `[web] listen`).
    #[arg(long, env = "BERGAMOT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Store backend: `memory` (embedded, one process only) or a PostgreSQL
    /// URL `postgres://user:password@host:port/database` (migrations are
    /// applied at start).
    #[arg(long, env = "BERGAMOT_STORE", default_value = "memory")]
    pub store: String,
    /// PostgreSQL schema holding Bergamot's tables (with `--store postgres://…`).
    #[arg(long, env = "BERGAMOT_SCHEMA", default_value = "bergamot")]
    pub schema: String,
    /// Queue backend: `memory` (embedded, one process only) or a RabbitMQ
    /// URL `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`).
    #[arg(long, env = "BERGAMOT_QUEUE", default_value = "memory")]
    pub queue: String,
    /// Prefix of every RabbitMQ exchange and queue (with `--queue amqp://…`);
    /// every node of one deployment uses the same.
    #[arg(long, env = "BERGAMOT_AMQP_PREFIX", default_value = "bergamot")]
    pub amqp_prefix: String,
    /// Number of result processing pools (with `--queue amqp://…`); every
    /// node of one deployment uses the same.
    #[arg(long, env = "BERGAMOT_RESULT_POOLS", default_value_t = 32)]
    pub result_pools: u16,
    /// Most items per RabbitMQ message (wire v2; with `--queue amqp://…`).
    /// 1 sends one item per message in the v1 format, for a rolling
    /// upgrade from a version before v2 (docs/amqp-topology.md).
    #[arg(long, env = "BERGAMOT_AMQP_BATCH_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub amqp_batch_max: u16,
    /// Under load, milliseconds a routing key waits after its last
    /// message before it sends the next (with `--queue amqp://…`; a lone
    /// item goes at once). At most 1000.
    #[arg(long, env = "BERGAMOT_AMQP_BATCH_LINGER_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub amqp_batch_linger_ms: u64,
    /// This node's name among the scheduler nodes (default: host name and
    /// process id). At most 40 bytes.
    #[arg(long, env = "BERGAMOT_NODE")]
    pub node: Option<String>,
    /// Advisory-lock class of the scheduling partitions (with `--store
    /// postgres://…`): the same on every node of one deployment, different
    /// for deployments sharing a database. Default: derived from `--schema`.
    #[arg(long, env = "BERGAMOT_LOCK_CLASS")]
    pub lock_class: Option<i32>,
    /// Checks a worker runs at a time.
    #[arg(long, default_value_t = 64)]
    pub worker_concurrency: usize,
    /// Lanes a processor applies results in at once (each applies what has
    /// arrived in one transaction; fewer lanes make larger batches).
    #[arg(long, default_value_t = bergamot_core::processor::DEFAULT_LANES)]
    pub processor_lanes: usize,
    /// Bytes of a result's output kept (worker, passive API, processor);
    /// longer output is cut at a char boundary with `… [truncated N bytes]`.
    #[arg(long, env = "BERGAMOT_MAX_OUTPUT_BYTES", default_value_t = bergamot_core::model::DEFAULT_MAX_OUTPUT)]
    pub max_output_bytes: usize,
    /// Bytes of a result's long output kept, likewise.
    #[arg(long, env = "BERGAMOT_MAX_LONG_OUTPUT_BYTES", default_value_t = bergamot_core::model::DEFAULT_MAX_OUTPUT)]
    pub max_long_output_bytes: usize,
    /// Seconds a result's `executed_at` may be ahead of this node's clock:
    /// the API refuses a passive result further ahead (400, field
    /// `executed_at`), the processor moves such a result to the poison queue.
    #[arg(long, env = "BERGAMOT_MAX_CLOCK_SKEW_SECS", default_value_t = bergamot_core::model::DEFAULT_MAX_SKEW.as_secs())]
    pub max_clock_skew_secs: u64,
    /// Serve `/healthz` and `/metrics` of this node on this address too
    /// (for nodes without a web role; default: not served).
    #[arg(long, env = "BERGAMOT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// A check is stale when its last result is older than this many of
    /// its current intervals plus `--stale-margin-secs` (0: never stale).
    #[arg(long, env = "BERGAMOT_STALE_FACTOR", default_value_t = 2.0)]
    pub stale_factor: f64,
    /// Seconds added to the staleness bound.
    #[arg(long, env = "BERGAMOT_STALE_MARGIN_SECS", default_value_t = 30.0)]
    pub stale_margin_secs: f64,
    /// How often (seconds) the processor looks for stale checks.
    #[arg(long, env = "BERGAMOT_STALE_SCAN_SECS", default_value_t = 15.0)]
    pub stale_scan_secs: f64,
    /// Notifications the notifier sends at once.
    #[arg(long, env = "BERGAMOT_NOTIFY_CONCURRENCY", default_value_t = 16)]
    pub notify_concurrency: usize,
    /// Seconds one notification send may take at most.
    #[arg(
        long,
        env = "BERGAMOT_NOTIFY_SEND_TIMEOUT_SECS",
        default_value_t = 30.0
    )]
    pub notify_send_timeout_secs: f64,
    /// Seconds a notifier's claim holds a job (more than the send timeout):
    /// a job claimed by a node that died is sent again after this.
    #[arg(long, env = "BERGAMOT_NOTIFY_LEASE_SECS", default_value_t = 300.0)]
    pub notify_lease_secs: f64,
}

/// Options of `bergamotd run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Backends, configuration and tuning.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Roles of this process: comma-separated `scheduler,worker,processor,web,notifier` or `all`.
    #[arg(long, env = "BERGAMOT_ROLES", default_value = "all")]
    pub roles: Roles,
}

/// Loads a configuration and resolves relative plugin paths (a nagios
/// command's `argv[0]` such as `plugins/check_demo.sh`) against the
/// configuration's directory, so a config runs from any working directory.
pub fn load_config(path: &Path) -> bergamot_core::Result<Config> {
    load_config_with(path, None)
}

/// [`load_config`] for a daemon listening on `listen` (`--listen`, which
/// overrides `[web] listen` and so `#{listen.host}`, `#{listen.port}` and
/// `#{listen.url}` in the configuration).
pub fn load_config_with(path: &Path, listen: Option<SocketAddr>) -> bergamot_core::Result<Config> {
    let mut config = Config::load_with(path, &LoadOptions::with_listen(listen))?;
    let base = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    for check in &mut config.model.checks {
        if !bergamot_core::exec::engine::runs_command(&check.engine) {
            continue;
        }
        let Some(serde_json::Value::Array(argv)) = check.params.get_mut("command") else {
            continue;
        };
        if let Some(serde_json::Value::String(prog)) = argv.first_mut() {
            let p = Path::new(prog.as_str());
            if p.is_relative() && prog.contains('/') {
                let candidate = base.join(p);
                if candidate.exists() {
                    *prog = candidate.display().to_string();
                }
            }
        }
    }
    Ok(config)
}

/// Connects the backends `args` name, for a node running `roles` of `site`
/// (the factory is [`crate::backends::open`]).
pub use crate::backends::open as backends;

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,warp=warn,hyper=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .ok();
}

/// The whole `bergamotd` binary: parses arguments and runs the subcommand
/// with the executors `executors` builds.
pub fn main(executors: impl FnOnce() -> Executors) -> ExitCode {
    let cli = Cli::parse();
    let (node, role) = match cli.command {
        Command::CheckConfig { path } => return check_config(&path, &executors()),
        Command::HashPassword => {
            return hash_stdin(|s| hash_password(s).map_err(anyhow::Error::msg))
        }
        Command::HashToken => return hash_stdin(|s| Ok(hash_token(s))),
        Command::Run(args) => return run_blocking(args, executors),
        Command::Scheduler(node) => (node, "scheduler"),
        Command::Worker(node) => (node, "worker"),
        Command::Processor(node) => (node, "processor"),
        Command::Web(node) => (node, "web"),
        Command::Notifier(node) => (node, "notifier"),
    };
    let roles = Roles::only(role);
    run_blocking(RunArgs { node, roles }, executors)
}

fn run_blocking(args: RunArgs, executors: impl FnOnce() -> Executors) -> ExitCode {
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bergamotd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(args, executors())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bergamotd: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking task still running (a configuration reload stuck in the
    // kernel) must not keep a stopped daemon alive.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// How long a stopping daemon waits for blocking tasks before it exits.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a SIGHUP reload may take before it is reported as failed (the
/// load itself may go on in the background; the next SIGHUP starts anew).
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Reloads on every SIGHUP; each reload runs in its own task with a timeout,
/// so a reload that hangs neither blocks the next one nor the shutdown.
fn reload_on_sighup(reloader: Arc<dyn crate::web::Reloader>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler: reload with POST /api/reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            let reloader = reloader.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(RELOAD_TIMEOUT, reloader.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!("reload failed, keeping the running configuration: {e}")
                    }
                    Err(_) => tracing::error!(
                        "reload did not finish within {}s, keeping the running configuration",
                        RELOAD_TIMEOUT.as_secs()
                    ),
                }
            });
        }
    });
}

fn hash_stdin(f: impl Fn(&str) -> anyhow::Result<String>) -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim_end().is_empty() {
        eprintln!("bergamotd: give the secret on stdin (one line)");
        return ExitCode::FAILURE;
    }
    match f(line.trim_end_matches(['\r', '\n'])) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bergamotd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path, executors: &Executors) -> ExitCode {
    let loaded = load_config(path).and_then(|c| standard_channels()(&c.notify).map(|_| c));
    match loaded {
        Ok(c) => {
            // What would fail at run time fails here too.
            let problems = crate::preflight::runtime_problems(&c, executors);
            if !problems.is_empty() {
                for p in &problems {
                    println!("{}:0: {p}", path.display());
                }
                std::io::stdout().flush().ok();
                eprintln!("{} problem(s) found", problems.len());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok: site {:?}, {} checks, {} groups, {} locations, {} users, {} tokens, from {} file(s)",
                path.display(),
                c.model.site,
                c.model.checks.len(),
                c.model.groups.len(),
                c.model.locations.len(),
                c.web.users.len(),
                c.web.tokens.len(),
                c.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(Error::Config(errors)) => {
            for p in &errors.0 {
                let file = if p.file.is_empty() {
                    path.display().to_string()
                } else {
                    p.file.clone()
                };
                println!("{file}:{}: {}: {}", p.line, p.field, p.message);
            }
            std::io::stdout().flush().ok();
            eprintln!("{} problem(s) found", errors.0.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{}:0: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return futures::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// `bergamotd run`.
pub async fn run(args: RunArgs, executors: Executors) -> anyhow::Result<()> {
    // Fail fast on a malformed backend or role split, before any loading.
    crate::backends::select(&args.node, args.roles)?;
    let roles = args.roles;
    let args = args.node;
    let listen = args.listen;
    let (model, web, notify) = match &args.config {
        Some(path) => {
            let c = load_config_with(path, listen)?;
            tracing::info!(config = %path.display(), files = c.files.len(), "configuration loaded");
            if roles.worker {
                for p in crate::preflight::runtime_problems(&c, &executors) {
                    tracing::warn!("configuration: {p}");
                }
            }
            (c.model, c.web, c.notify)
        }
        None => {
            tracing::warn!("no --config given: running with an empty model");
            Default::default()
        }
    };
    // Every channel must build (bad settings are reported with file:line).
    let channels = standard_channels();
    channels(&notify)?;
    let notify_source: Option<NotifySource> = args
        .config
        .clone()
        .map(|path| loader(move || load_config(&path).map(|c| c.notify)));
    let config_source: Option<ConfigSource> = args
        .config
        .clone()
        .map(|path| loader(move || load_config_with(&path, listen)));
    let site = if model.site.is_empty() {
        "default"
    } else {
        model.site.as_str()
    };
    let (backends, ownership) = crate::backends::open(&args, roles, site).await?;
    let options = Options {
        listen: args.listen.unwrap_or(web.listen),
        auth: AuthConfig::from(&web),
        roles,
        worker_concurrency: args.worker_concurrency,
        processor_lanes: args.processor_lanes,
        result_limits: bergamot_core::model::ResultLimits {
            max_output: args.max_output_bytes,
            max_long_output: args.max_long_output_bytes,
            max_skew: std::time::Duration::from_secs(args.max_clock_skew_secs),
        },
        config_source,
        ownership,
        metrics_listen: args.metrics_listen,
        freshness: bergamot_core::freshness::FreshnessConfig {
            factor: args.stale_factor,
            margin: secs_arg("--stale-margin-secs", args.stale_margin_secs)?,
            scan_every: secs_arg("--stale-scan-secs", args.stale_scan_secs)?,
        },
        notifier: NotifierOptions {
            model: notify,
            channels,
            source: notify_source,
            dispatcher: DispatcherConfig {
                node: args.node.clone().unwrap_or_else(default_node),
                concurrency: args.notify_concurrency,
                send_timeout: secs_arg(
                    "--notify-send-timeout-secs",
                    args.notify_send_timeout_secs,
                )?,
                lease: secs_arg("--notify-lease-secs", args.notify_lease_secs)?,
                ..DispatcherConfig::default()
            },
            ..NotifierOptions::default()
        },
    };
    tracing::info!(%roles, "starting");
    let running = wiring::start(model, backends, executors, options, shutdown_signal()).await?;
    tracing::info!(%roles, "node running");
    if let Some(addr) = running.addr {
        tracing::info!("web UI at http://{addr}/");
    }
    if let Some(reloader) = running.reloader.clone() {
        reload_on_sighup(reloader);
    }
    running.done.await?;
    Ok(())
}

/// A reload source: runs `load` on a blocking thread each time it is called
/// (loading reads files, and may hang in the kernel).
fn loader<T: Send + 'static>(
    load: impl Fn() -> bergamot_core::Result<T> + Clone + Send + Sync + 'static,
) -> Arc<dyn Fn() -> BoxFuture<'static, bergamot_core::Result<T>> + Send + Sync> {
    Arc::new(move || {
        let load = load.clone();
        async move {
            tokio::task::spawn_blocking(load)
                .await
                .map_err(|e| Error::Closed(format!("config loader task: {e}")))?
        }
        .boxed()
    })
}

/// A non-negative number of seconds from the command line.
fn secs_arg(name: &str, v: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .map_err(|e| anyhow::anyhow!("{name} {v}: not a number of seconds ({e})"))
}
