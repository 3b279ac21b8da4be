//! The `notifier` role: plans notification jobs from durable alert state
//! every tick and sends due jobs through their channels (see
//! [`Dispatcher`]). It runs in its own tasks, never on the path that applies
//! results; with PostgreSQL several notifier nodes share the jobs.

use async_trait::async_trait;
use bergamot_core::notify::{
    ChannelMap, Channels, Dispatcher, DispatcherConfig, DispatcherHandle, NotificationStore,
    NotifyModel, Planner, StoreRelevance,
};
use bergamot_core::store::Store;
use bergamot_core::{Error, Result};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One planning round: reads alert state, enqueues the jobs now due
/// (idempotent: job ids are deterministic). Returns how many were new.
#[async_trait]
pub trait PlanTick: Send + Sync + 'static {
    /// Plans with `model` at `now`.
    async fn plan_once(&self, model: &Arc<NotifyModel>, now: DateTime<Utc>) -> Result<usize>;
}

#[async_trait]
impl PlanTick for Planner {
    async fn plan_once(&self, model: &Arc<NotifyModel>, now: DateTime<Utc>) -> Result<usize> {
        if !Arc::ptr_eq(&self.model(), model) {
            self.set_model(model.clone());
        }
        Ok(Planner::plan_once(self, now).await?.enqueued)
    }
}

/// Builds the channels of a notification model (the channel registry).
pub type ChannelFactory = Arc<dyn Fn(&NotifyModel) -> Result<ChannelMap> + Send + Sync>;

/// Loads the notification model again (on reload).
pub type NotifySource = Arc<dyn Fn() -> BoxFuture<'static, Result<NotifyModel>> + Send + Sync>;

/// How the notifier role runs.
#[derive(Clone)]
pub struct NotifierOptions {
    /// The notification model (contacts, teams, channels, rules).
    pub model: NotifyModel,
    /// Builds the channels of a model.
    pub channels: ChannelFactory,
    /// Plans jobs each tick; `None`: the standard [`Planner`] over the
    /// node's store and job store.
    pub planner: Option<Arc<dyn PlanTick>>,
    /// How often a planning round runs.
    pub plan_every: Duration,
    /// Sending: concurrency, timeouts, lease, backoff.
    pub dispatcher: DispatcherConfig,
    /// Where a reload gets the notification model from.
    pub source: Option<NotifySource>,
}

impl std::fmt::Debug for NotifierOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierOptions")
            .field("plan_every", &self.plan_every)
            .field("dispatcher", &self.dispatcher)
            .finish_non_exhaustive()
    }
}

/// No channel kinds known: every configured channel is reported and skipped.
pub fn no_channels() -> ChannelFactory {
    Arc::new(|model: &NotifyModel| {
        for c in model.channels.values() {
            tracing::warn!(channel = %c.name, kind = %c.kind, "no channel registry: channel not available");
        }
        Ok(ChannelMap::new())
    })
}

/// The standard channel kinds ([`Channels::standard`]: email, webhook,
/// slack, command, log).
pub fn standard_channels() -> ChannelFactory {
    let registry = Arc::new(Channels::standard());
    Arc::new(move |model: &NotifyModel| {
        let configs: Vec<_> = model.channels.values().cloned().collect();
        Ok(registry.build_all(&configs)?.into_iter().collect())
    })
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            model: NotifyModel::default(),
            channels: standard_channels(),
            planner: None,
            plan_every: Duration::from_secs(1),
            dispatcher: DispatcherConfig::default(),
            source: None,
        }
    }
}

/// The notification state a node shares between its roles: the job store,
/// the current model, and (when the notifier role runs here) the dispatcher.
pub struct NotifyShared {
    /// Where jobs persist.
    pub jobs: Arc<dyn NotificationStore>,
    model: RwLock<Arc<NotifyModel>>,
    dispatcher: RwLock<Option<DispatcherHandle>>,
    channels: ChannelFactory,
    source: Option<NotifySource>,
}

impl std::fmt::Debug for NotifyShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyShared").finish_non_exhaustive()
    }
}

impl NotifyShared {
    /// Shared state over `jobs` with the model and channel factory of `options`.
    pub fn new(jobs: Arc<dyn NotificationStore>, options: &NotifierOptions) -> Arc<Self> {
        Arc::new(NotifyShared {
            jobs,
            model: RwLock::new(Arc::new(options.model.clone())),
            dispatcher: RwLock::new(None),
            channels: options.channels.clone(),
            source: options.source.clone(),
        })
    }

    /// The current notification model.
    pub fn model(&self) -> Arc<NotifyModel> {
        self.model.read().clone()
    }

    /// The dispatcher of this node, when the notifier role runs here.
    pub fn dispatcher(&self) -> Option<DispatcherHandle> {
        self.dispatcher.read().clone()
    }

    /// Installs a new model: the planner uses it from its next round and the
    /// dispatcher sends through its channels (a channel that does not build
    /// keeps the reload from taking effect: the old model stays).
    pub fn set_model(&self, model: NotifyModel) -> Result<()> {
        if let Some(d) = self.dispatcher() {
            let channels = (self.channels)(&model)?;
            d.set_channels(channels);
        }
        *self.model.write() = Arc::new(model);
        Ok(())
    }

    /// Reloads the model from the configured source, if any.
    pub async fn reload(&self) -> Result<()> {
        if let Some(source) = &self.source {
            let model = source().await?;
            self.set_model(model)?;
        }
        Ok(())
    }

    /// Asks the local dispatcher, if any, to look for due jobs now.
    pub fn wake(&self) {
        if let Some(d) = self.dispatcher() {
            d.wake();
        }
    }
}

fn stopped(rx: &tokio::sync::watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        rx.wait_for(|s| *s).await.ok();
    }
}

/// Runs the notifier role until `stop` turns true: a planning round every
/// `plan_every` and the dispatcher. A failed round is logged and retried
/// at the next tick; nothing but `stop` ends it.
pub async fn run(
    shared: Arc<NotifyShared>,
    store: Arc<dyn Store>,
    options: NotifierOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let channels = (shared.channels)(&shared.model())?;
    tracing::info!(
        node = %options.dispatcher.node,
        channels = channels.len(),
        "notifier starting"
    );
    let dispatcher = Dispatcher::new(shared.jobs.clone(), channels, options.dispatcher.clone())?
        .with_relevance(Arc::new(StoreRelevance::new(store.clone())));
    *shared.dispatcher.write() = Some(dispatcher.handle());
    let sender = tokio::spawn(dispatcher.run(stopped(&stop)));
    let planner: Arc<dyn PlanTick> = match options.planner.clone() {
        Some(p) => p,
        None => Arc::new(Planner::new(store, shared.jobs.clone(), shared.model())),
    };
    {
        let mut tick = tokio::time::interval(options.plan_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = stopped(&stop);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = tick.tick() => {
                    let model = shared.model();
                    match planner.plan_once(&model, Utc::now()).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::debug!(jobs = n, "notification jobs planned");
                            shared.wake();
                        }
                        Err(e) => tracing::warn!(error = %e, "notification planning round failed; retrying at the next tick"),
                    }
                }
            }
        }
    }
    sender
        .await
        .map_err(|e| Error::Closed(format!("notification dispatcher task: {e}")))?
}
