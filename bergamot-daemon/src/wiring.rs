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

/// Loads the configuration again (for SIGHUP and `POST /api/reload`).
pub type ConfigSource = Arc<dyn Fn() -> BoxFuture<'static, Result<Model>> + Send + Sync>;

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
    /// Where a reload gets the model from; `None`: reload is not available.
    pub config_source: Option<ConfigSource>,
    /// Scheduling ownership shared with other scheduler nodes; `None`: the
    /// scheduler (if it runs) schedules every check.
    pub ownership: Option<Ownership>,
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
            config_source: None,
            ownership: None,
            notifier: NotifierOptions::default(),
        }
    }
}

/// A running daemon: its address, a reload trigger, and the task to await.
pub struct Running {
    /// The address the web node listens on (when the web role runs).
    pub addr: Option<SocketAddr>,
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
        let model = (self.source)().await?;
        let report = self.store.sync_config(&model).await?;
        if let Some(s) = &self.scheduler {
            let summary = s.reload(model.clone()).await?;
            tracing::info!(?summary, "scheduler reloaded");
        }
        let web = self.web.lock().clone();
        if let Some(w) = web {
            w.set_model(model);
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

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<Result<()>>)> = Vec::new();
    // A role that fails before shutdown stops the whole node (a process
    // running without one of its roles would look alive and do nothing).
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<String>();
    let spawn_role = |name: &'static str, fut: BoxFuture<'static, Result<()>>| {
        let fail = fail_tx.clone();
        tokio::spawn(async move {
            let r = fut.await;
            if let Err(e) = &r {
                let _ = fail.send(format!("{name}: {e}"));
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
        ctx.set_notify(notify.clone());
        let hub = ctx.run_hub(stopped(&stop_rx)).await?;
        tasks.push((
            "websocket hub",
            spawn_role(
                "websocket hub",
                async move {
                    hub.await
                        .map_err(|e| Error::Closed(format!("hub task: {e}")))
                }
                .boxed(),
            ),
        ));
        let (bound, server) = web::serve(ctx.clone(), options.listen, stopped(&stop_rx))?;
        tracing::info!(addr = %bound, "web node listening");
        tasks.push(("web", spawn_role("web", server.map(Ok).boxed())));
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
            tasks.push((
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
                        m.scheduler_lag_micros.store(s.lag_last_ms * 1000, Ordering::Relaxed);
                        m.scheduler_lag_max_micros.store(s.lag_max_ms * 1000, Ordering::Relaxed);
                        m.executes_taken.store(s.dispatched, Ordering::Relaxed);
                    }
                    _ = rx.wait_for(|s| *s) => break,
                }
            }
        });
        scheduler_task = Some(spawn_role(
            "scheduler",
            scheduler.run(stopped(&stop_rx)).boxed(),
        ));
        scheduler_handle = Some(handle);
    }

    // Workers and processor stop after the scheduler (see `done` below).
    let (drain_tx, drain_rx) = watch::channel(false);
    if options.roles.worker {
        let pools: BTreeSet<String> = model.checks.iter().map(|c| c.pool.clone()).collect();
        let pools = if pools.is_empty() {
            BTreeSet::from(["default".to_string()])
        } else {
            pools
        };
        let engines = executors.engines();
        let worker = Worker::new(executors, options.worker_concurrency);
        for pool in pools {
            let w = worker.clone();
            let q = queue.clone();
            let e = engines.clone();
            let s = stopped(&drain_rx);
            tasks.push((
                "worker",
                spawn_role("worker", async move { w.run(q, pool, e, s).await }.boxed()),
            ));
        }
    }
    if options.roles.processor {
        let processor =
            Processor::new(store.clone(), queue.clone()).with_lanes(options.processor_lanes);
        processor.refresh_model().await?;
        let s = stopped(&drain_rx);
        tasks.push((
            "processor",
            spawn_role("processor", processor.run(s).boxed()),
        ));
    }

    if options.roles.notifier {
        let n = notify.clone();
        let s = store.clone();
        let rx = drain_rx.clone();
        let opts = options.notifier.clone();
        tasks.push((
            "notifier",
            spawn_role(
                "notifier",
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
    let done = async move {
        tokio::select! {
            () = shutdown => {}
            Some(failed) = fail_rx.recv() => {
                tracing::error!(role = %failed, "a role failed: stopping this node");
            }
        }
        tracing::info!("shutting down: stopping the scheduler");
        let _ = stop_tx.send(true);
        let mut result = Ok(());
        if let Some(t) = scheduler_task {
            if let Ok(Err(e)) = t.await {
                tracing::error!(error = %e, "scheduler failed");
                result = Err(e);
            }
        }
        // Let the results of checks already sent be executed and applied.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = drain_tx.send(true);
        for (name, t) in tasks {
            match tokio::time::timeout(Duration::from_secs(10), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::error!(role = name, error = %e, "role failed");
                    result = Err(e);
                }
                Ok(Err(e)) => tracing::error!(role = name, error = %e, "role panicked"),
                Err(_) => tracing::warn!(role = name, "role did not stop within 10 s"),
            }
        }
        tracing::info!("stopped");
        result
    }
    .boxed();

    Ok(Running {
        addr,
        reloader,
        metrics,
        web: web_ctx,
        done,
    })
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
