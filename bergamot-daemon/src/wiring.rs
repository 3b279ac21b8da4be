//! Wiring: runs the scheduler, workers, result processor and web node over
//! one pair of backends, until a shutdown future completes.
//!
//! A packager's own daemon is [`run`] with its own [`Executors`] and
//! [`Backends`]; see `examples/` and `src/main.rs`.

use crate::roles::notifier::{self, NotifierOptions, NotifyShared};
use crate::roles::{MeteredQueue, Roles};
use crate::web::auth::AuthConfig;
use crate::web::metrics::Metrics;
use crate::web::{self, Reloader, WebContext};
use async_trait::async_trait;
use bergamot_core::exec::{Executors, Worker};
use bergamot_core::freshness::{Freshness, FreshnessConfig};
use bergamot_core::model::Model;
use bergamot_core::notify::{InMemoryNotificationStore, NotificationStore};
use bergamot_core::processor::Processor;
use bergamot_core::queue::{InMemoryQueue, Queue};
use bergamot_core::schedule::{PartitionOwner, Scheduler, SchedulerConfig, SchedulerHandle};
use bergamot_core::store::{InMemoryStore, Store, SyncReport};
use bergamot_core::{Error, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The store and queue every role of the daemon talks through.
#[derive(Clone)]
pub struct Backends {
    /// Where states, history and the model live.
    pub store: Arc<dyn Store>,
    /// The message transport.
    pub queue: Arc<dyn Queue>,
    /// Where notification jobs persist (the notifier and web roles share it).
    pub notifications: Arc<dyn NotificationStore>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    /// The embedded backends: [`InMemoryStore`], [`InMemoryQueue`] and
    /// [`InMemoryNotificationStore`].
    pub fn in_memory() -> Self {
        Backends {
            store: Arc::new(InMemoryStore::new()),
            queue: Arc::new(InMemoryQueue::new()),
            notifications: Arc::new(InMemoryNotificationStore::new()),
        }
    }
}

/// Scheduling ownership shared with other scheduler nodes: the scheduler
/// dispatches only the partitions `owner` hands this node, and the wiring
/// runs an ownership round every `round_every` (and gives everything back
/// on shutdown). `None` in [`Options`]: this node schedules every check.
#[derive(Clone)]
pub struct Ownership {
    /// Decides which partitions this node owns (e.g.
    /// `bergamot_store::PgPartitionOwner`).
    pub owner: Arc<dyn PartitionOwner>,
    /// How often an ownership round runs.
    pub round_every: Duration,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("round_every", &self.round_every)
            .finish_non_exhaustive()
    }
}

/// Loads the configuration again (for SIGHUP and `POST /api/reload`): the
/// model and the `[web]` section (users, tokens, anonymous read reload too).
pub type ConfigSource =
    Arc<dyn Fn() -> BoxFuture<'static, Result<bergamot_core::config::Config>> + Send + Sync>;

/// How to run.
pub struct Options {
    /// Where the web node listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Who may use the web node.
    pub auth: AuthConfig,
    /// Which roles run in this process.
    pub roles: Roles,
    /// Checks one worker runs at a time.
    pub worker_concurrency: usize,
    /// Lanes the processor applies results in ([`Processor::with_lanes`]).
    pub processor_lanes: usize,
    /// Output caps and clock skew every result must keep (worker, API,
    /// processor).
    pub result_limits: bergamot_core::model::ResultLimits,
    /// Where a reload gets the model from; `None`: reload is not available.
    pub config_source: Option<ConfigSource>,
    /// Scheduling ownership shared with other scheduler nodes; `None`: the
    /// scheduler (if it runs) schedules every check.
    pub ownership: Option<Ownership>,
    /// Where `/healthz` and `/metrics` alone are served (for nodes without
    /// a web role; a web node serves both on `listen` too). `None`: not.
    pub metrics_listen: Option<SocketAddr>,
    /// When a check without a fresh result is marked stale (by the
    /// processor role).
    pub freshness: FreshnessConfig,
    /// The notification model, channels, planner and sending options.
    pub notifier: NotifierOptions,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("listen", &self.listen)
            .field("roles", &self.roles)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("processor_lanes", &self.processor_lanes)
            .field("ownership", &self.ownership)
            .field("metrics_listen", &self.metrics_listen)
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthConfig::default(),
            roles: Roles::all(),
            worker_concurrency: 64,
            processor_lanes: bergamot_core::processor::DEFAULT_LANES,
            result_limits: bergamot_core::model::ResultLimits::default(),
            config_source: None,
            ownership: None,
            metrics_listen: None,
            freshness: FreshnessConfig::default(),
            notifier: NotifierOptions::default(),
        }
    }
}

/// A running daemon: its address, a reload trigger, and the task to await.
pub struct Running {
    /// The address the web node listens on (when the web role runs).
    pub addr: Option<SocketAddr>,
    /// The address of the `/healthz` + `/metrics` listener (with
    /// [`Options::metrics_listen`]).
    pub metrics_addr: Option<SocketAddr>,
    /// Reloads the configuration (as SIGHUP does).
    pub reloader: Option<Arc<dyn Reloader>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The web context (when the web role runs).
    pub web: Option<Arc<WebContext>>,
    /// Completes when every role stopped after shutdown; fails if a role failed.
    /// Await it: the shutdown future passed to [`start`] is polled by it.
    pub done: BoxFuture<'static, Result<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct DaemonReloader {
    source: ConfigSource,
    store: Arc<dyn Store>,
    scheduler: Option<SchedulerHandle>,
    web: parking_lot::Mutex<Option<Arc<WebContext>>>,
    notify: Arc<NotifyShared>,
}

#[async_trait]
impl Reloader for DaemonReloader {
    async fn reload(&self) -> Result<SyncReport> {
        let config = (self.source)().await?;
        let model = config.model;
        let report = self.store.sync_config(&model).await?;
        if let Some(s) = &self.scheduler {
            let summary = s.reload(model.clone()).await?;
            tracing::info!(?summary, "scheduler reloaded");
        }
        let web = self.web.lock().clone();
        if let Some(w) = web {
            w.set_model(model);
            w.set_auth(AuthConfig::from(&config.web));
        }
        self.notify.reload().await?;
        tracing::info!(
            added = report.added,
            updated = report.updated,
            removed = report.removed,
            "configuration reloaded"
        );
        Ok(report)
    }
}

/// Starts every role of `options.roles` over `backends`: syncs `model` into
/// the store (states kept), then runs scheduler, workers (one per pool in the
/// model, serving every engine of `executors`), processor and web node until
/// `shutdown` completes. On shutdown the scheduler stops first, workers
/// finish the checks they run, the processor drains, the web node closes.
///
/// The drain is ordered, each phase awaited before the next starts: (1) the
/// scheduler stops sending; (2) the workers take nothing new and finish the
/// checks they run (their results published and confirmed); (3) the
/// processor finishes the batches it applies (deliveries not taken stay
/// unacked, so a durable queue redelivers them); (4) the web node closes.
/// A role that fails, or ends on its own before shutdown, stops the node
/// and makes `done` fail.
pub async fn start(
    model: Model,
    backends: Backends,
    executors: Executors,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let store = backends.store.clone();
    let queue: Arc<dyn Queue> =
        Arc::new(MeteredQueue::new(backends.queue.clone(), metrics.clone()));
    let report = store.sync_config(&model).await?;
    tracing::info!(
        site = %model.site,
        checks = model.checks.len(),
        groups = model.groups.len(),
        added = report.added,
        "configuration synced"
    );

    let notify = NotifyShared::new(backends.notifications.clone(), &options.notifier);

    // One stop signal per drain phase, sent in this order.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (workers_tx, workers_rx) = watch::channel(false);
    let (processor_tx, processor_rx) = watch::channel(false);
    let (web_tx, web_rx) = watch::channel(false);
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            rx.wait_for(|s| *s).await.ok();
        }
    };
    type Tasks = Vec<(&'static str, tokio::task::JoinHandle<Result<()>>)>;
    let (mut scheduler_tasks, mut worker_tasks, mut processor_tasks, mut web_tasks): (
        Tasks,
        Tasks,
        Tasks,
        Tasks,
    ) = Default::default();
    // A role that fails, or ends before its phase was told to stop, stops
    // the whole node (a process running without one of its roles would look
    // alive and do nothing).
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<String>();
    let spawn_role =
        |name: &'static str, phase: &watch::Receiver<bool>, fut: BoxFuture<'static, Result<()>>| {
            let fail = fail_tx.clone();
            let phase = phase.clone();
            let m = metrics.clone();
            m.health.set_role(name, "running");
            tokio::spawn(async move {
                let mut r = fut.await;
                if r.is_ok() && !*phase.borrow() {
                    r = Err(Error::Closed(format!("{name} ended before shutdown")));
                }
                match &r {
                    Err(e) => {
                        m.health.set_role(name, format!("failed: {e}"));
                        fail.send(format!("{name}: {e}")).ok();
                    }
                    Ok(()) => m.health.set_role(name, "running"),
                }
                r
            })
        };

    // Web first: updates published from now on reach the hub.
    let mut web_ctx = None;
    let mut addr = None;
    if options.roles.web {
        let ctx = WebContext::new(
            store.clone(),
            queue.clone(),
            options.auth.clone(),
            metrics.clone(),
        )
        .await?;
        ctx.set_result_limits(options.result_limits);
        ctx.set_notify(notify.clone());
        metrics.health.watch_peers();
        let hub = ctx.run_hub(stopped(&web_rx)).await?;
        web_tasks.push((
            "websocket hub",
            spawn_role(
                "websocket hub",
                &web_rx,
                async move {
                    hub.await
                        .map_err(|e| Error::Closed(format!("hub task: {e}")))?
                }
                .boxed(),
            ),
        ));
        let (bound, server) = web::serve(ctx.clone(), options.listen, stopped(&web_rx))?;
        tracing::info!(addr = %bound, "web node listening");
        web_tasks.push(("web", spawn_role("web", &web_rx, server.map(Ok).boxed())));
        addr = Some(bound);
        web_ctx = Some(ctx);
    }

    let mut scheduler_handle = None;
    let mut scheduler_task = None;
    if options.roles.scheduler {
        let (scheduler, handle) = Scheduler::new(&model, queue.clone(), SchedulerConfig::default());
        // Resume every check's cadence from its stored last run.
        let mut scheduler = scheduler.with_store(store.clone());
        if let Some(own) = options.ownership.clone() {
            scheduler = scheduler.with_ownership(own.owner.watch());
            let rx = stop_rx.clone();
            scheduler_tasks.push((
                "partition owner",
                tokio::spawn(async move {
                    run_ownership(own, rx).await;
                    Ok(())
                }),
            ));
        }
        let h = handle.clone();
        let m = metrics.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let s = h.stats();
                        m.scheduler_lateness_micros.store(s.lag_last_ms * 1000, Ordering::Relaxed);
                        m.scheduler_lateness_max_micros.store(s.lag_max_ms * 1000, Ordering::Relaxed);
                        m.scheduler_dispatched.store(s.dispatched, Ordering::Relaxed);
                    }
                    _ = rx.wait_for(|s| *s) => break,
                }
            }
        });
        scheduler_task = Some(spawn_role(
            "scheduler",
            &stop_rx,
            scheduler.run(stopped(&stop_rx)).boxed(),
        ));
        let hb = crate::health::send_heartbeats(queue.clone(), "scheduler", stopped(&stop_rx));
        scheduler_tasks.push(("scheduler heartbeat", tokio::spawn(hb.map(Ok))));
        scheduler_handle = Some(handle);
    }

    // Workers and processor stop after the scheduler (see `done` below).
    if options.roles.worker {
        let pools: BTreeSet<String> = model.checks.iter().map(|c| c.pool.clone()).collect();
        let pools = if pools.is_empty() {
            BTreeSet::from(["default".to_string()])
        } else {
            pools
        };
        let engines = executors.engines();
        let worker =
            Worker::new(executors, options.worker_concurrency).with_limits(options.result_limits);
        for pool in pools {
            let w = worker.clone();
            let q = queue.clone();
            let e = engines.clone();
            let s = stopped(&workers_rx);
            worker_tasks.push((
                "worker",
                spawn_role(
                    "worker",
                    &workers_rx,
                    async move { w.run(q, pool, e, s).await }.boxed(),
                ),
            ));
        }
        let hb = crate::health::send_heartbeats(queue.clone(), "worker", stopped(&workers_rx));
        worker_tasks.push(("worker heartbeat", tokio::spawn(hb.map(Ok))));
    }
    if options.roles.processor {
        let processor = Processor::new(store.clone(), queue.clone())
            .with_lanes(options.processor_lanes)
            .with_limits(options.result_limits);
        processor.refresh_model().await?;
        let s = stopped(&processor_rx);
        processor_tasks.push((
            "processor",
            spawn_role("processor", &processor_rx, processor.run(s).boxed()),
        ));
        // Freshness beside the processor: it reads the store, so it works
        // whichever scheduler or worker died.
        let fresh = Freshness::new(store.clone(), queue.clone(), options.freshness);
        let m = metrics.clone();
        let run = fresh.run(stopped(&processor_rx), move |n| {
            m.stale_marked.fetch_add(n as u64, Ordering::Relaxed);
        });
        processor_tasks.push((
            "freshness",
            spawn_role("freshness", &processor_rx, run.boxed()),
        ));
    }

    let mut metrics_addr = None;
    if let Some(listen) = options.metrics_listen {
        let (bound, server) = crate::health::serve(metrics.clone(), listen, stopped(&web_rx))?;
        tracing::info!(addr = %bound, "health and metrics listening");
        web_tasks.push((
            "metrics listener",
            spawn_role("metrics listener", &web_rx, server.map(Ok).boxed()),
        ));
        metrics_addr = Some(bound);
    }

    if options.roles.notifier {
        let n = notify.clone();
        let s = store.clone();
        let rx = processor_rx.clone();
        let opts = options.notifier.clone();
        processor_tasks.push((
            "notifier",
            spawn_role(
                "notifier",
                &processor_rx,
                async move { notifier::run(n, s, opts, rx).await }.boxed(),
            ),
        ));
        *metrics.notifier.write() = Some(notify.clone());
    }

    let reloader: Option<Arc<dyn Reloader>> = options.config_source.map(|source| {
        let r = Arc::new(DaemonReloader {
            source,
            store: store.clone(),
            scheduler: scheduler_handle,
            web: parking_lot::Mutex::new(web_ctx.clone()),
            notify: notify.clone(),
        });
        r as Arc<dyn Reloader>
    });
    if let (Some(ctx), Some(r)) = (&web_ctx, &reloader) {
        ctx.set_reloader(r.clone());
    }

    drop(fail_tx);
    let (run_processor, run_worker) = (options.roles.processor, options.roles.worker);
    let drain_metrics = metrics.clone();
    let done = async move {
        tokio::select! {
            () = shutdown => {}
            Some(failed) = fail_rx.recv() => {
                tracing::error!(role = %failed, "a role failed: stopping this node");
            }
        }
        tracing::info!("shutting down: stopping the scheduler");
        let mut result = Ok(());
        stop_tx.send(true).ok();
        if let Some(t) = scheduler_task {
            scheduler_tasks.insert(0, ("scheduler", t));
        }
        join_phase(scheduler_tasks, &mut result).await;
        tracing::info!("shutting down: workers finish the checks they run");
        workers_tx.send(true).ok();
        join_phase(worker_tasks, &mut result).await;
        if run_processor && run_worker {
            // This node's results reach its own processor: let it take
            // every result its workers published before it stops.
            drain_results(&drain_metrics).await;
        }
        tracing::info!("shutting down: the processor finishes its batches");
        processor_tx.send(true).ok();
        join_phase(processor_tasks, &mut result).await;
        web_tx.send(true).ok();
        join_phase(web_tasks, &mut result).await;
        tracing::info!("stopped");
        result
    }
    .boxed();

    Ok(Running {
        addr,
        metrics_addr,
        reloader,
        metrics,
        web: web_ctx,
        done,
    })
}

/// Waits (at most 10 s) until the processor of this node took every result
/// the node published.
async fn drain_results(metrics: &Metrics) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let published = metrics.results_published.load(Ordering::Relaxed);
        let taken = metrics.results_processed.load(Ordering::Relaxed);
        if taken >= published {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                left = published - taken,
                "results published here not taken by the processor within 10 s"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits the tasks of one drain phase (each for at most 10 s); the first
/// failure becomes `result`.
async fn join_phase(
    tasks: Vec<(&'static str, tokio::task::JoinHandle<Result<()>>)>,
    result: &mut Result<()>,
) {
    for (name, t) in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(role = name, error = %e, "role failed");
                if result.is_ok() {
                    *result = Err(e);
                }
            }
            Ok(Err(e)) => tracing::error!(role = name, error = %e, "role panicked"),
            Err(_) => tracing::warn!(role = name, "role did not stop within 10 s"),
        }
    }
}

/// Ownership rounds every `round_every` until `stop`, then gives every
/// partition back. A failed round is logged; the owner then holds nothing
/// until a later round succeeds.
async fn run_ownership(own: Ownership, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = own.owner.acquire() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "partition ownership round failed; scheduling nothing until a round succeeds");
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(own.round_every) => {}
        }
    }
    if let Err(e) = own.owner.release().await {
        tracing::warn!(error = %e, "cannot release the scheduling partitions; they are freed when the session ends");
    }
}

/// [`start`]s the daemon and waits until it stopped after `shutdown`.
pub async fn run(
    model: Model,
    backends: Backends,
    executors: Executors,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    start(model, backends, executors, options, shutdown)
        .await?
        .done
        .await
}
