//! Shared test helpers: the server URL, a fresh schema per test, and a store
//! wrapper that drops its schema when dropped.
#![allow(dead_code, missing_docs)]

use async_trait::async_trait;
use bergamot_core::aggregate::{GroupState, LocationState};
use bergamot_core::model::{
    Check, CheckId, CheckKind, CheckResult, GroupId, LocationId, Model, Policy,
};
use bergamot_core::state::{Ack, CheckState, Transition};
use bergamot_core::store::{
    AlertRecord, Downtime, HistoryEntry, HistoryPage, StateFilter, Store, SyncReport,
};
use bergamot_core::Result;
use bergamot_store::{PostgresConfig, PostgresStore};
use chrono::{DateTime, Utc};
use std::ops::Deref;
use uuid::Uuid;

/// The test server URL; None (and a note) when unset, a failure when
/// `BERGAMOT_REQUIRE_SERVICES=1`.
pub fn test_url() -> Option<String> {
    bergamot_testkit::require_env("BERGAMOT_TEST_POSTGRES_URL", "postgres test")
}

/// `n` services `host<i>/svc` of site `site` (engine `dummy`,
/// no host checks) with `policy`.
pub fn services_model(n: usize, policy: &Policy) -> Model {
    let checks = (0..n)
        .map(|i| {
            let host = format!("host{i}");
            let id = CheckId::service("site", &host, "svc");
            Check::builder(id, CheckKind::Service, host, "svc")
                .engine("dummy")
                .policy(policy.clone())
                .build()
        })
        .collect();
    Model {
        site: "site".into(),
        checks,
        ..Model::default()
    }
}

/// A fresh schema name, unique per test.
pub fn fresh_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// A config for the test server with a fresh schema.
pub fn fresh_config() -> Option<PostgresConfig> {
    test_url().map(|u| {
        PostgresConfig::new(u)
            .with_schema(fresh_schema())
            .with_pool_size(12)
    })
}

/// A raw connection to the test server (search_path = `schema` when given).
pub async fn raw_client(schema: Option<&str>) -> tokio_postgres::Client {
    let url = test_url().expect("test URL");
    let mut cfg: tokio_postgres::Config = url.parse().expect("test URL parses");
    if let Some(s) = schema {
        cfg.options(format!("-c search_path={s}"));
    }
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(async move {
        conn.await.ok();
    });
    client
}

/// Drops a test schema, from any context (also inside `Drop`).
pub fn drop_schema_blocking(schema: String) {
    let Some(url) = std::env::var("BERGAMOT_TEST_POSTGRES_URL").ok() else {
        return;
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(async move {
                    conn.await.ok();
                });
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                    ))
                    .await
                    .ok();
            }
        });
    })
    .join()
    .ok();
}

/// A [`PostgresStore`] in its own schema, dropped with the store.
pub struct TestStore {
    pub inner: PostgresStore,
    pub schema: String,
}

impl TestStore {
    /// Connects to a fresh schema; None when the test server is not configured.
    pub async fn fresh() -> Option<TestStore> {
        let cfg = fresh_config()?;
        let schema = cfg.schema.clone();
        let inner = PostgresStore::connect(cfg)
            .await
            .expect("connect to the test server");
        Some(TestStore { inner, schema })
    }
}

impl Deref for TestStore {
    type Target = PostgresStore;
    fn deref(&self) -> &PostgresStore {
        &self.inner
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.inner.close();
        drop_schema_blocking(self.schema.clone());
    }
}

#[async_trait]
impl Store for TestStore {
    async fn sync_config(&self, model: &Model) -> Result<SyncReport> {
        self.inner.sync_config(model).await
    }
    async fn model(&self) -> Result<Model> {
        self.inner.model().await
    }
    async fn apply_result(&self, result: &CheckResult, now: DateTime<Utc>) -> Result<Transition> {
        self.inner.apply_result(result, now).await
    }
    async fn apply_results(
        &self,
        results: &[CheckResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Transition>>> {
        self.inner.apply_results(results, now).await
    }
    async fn state(&self, check: CheckId) -> Result<CheckState> {
        self.inner.state(check).await
    }
    async fn states(&self) -> Result<Vec<(CheckId, CheckState)>> {
        self.inner.states().await
    }
    async fn group_states(&self, root: Option<GroupId>) -> Result<Vec<GroupState>> {
        self.inner.group_states(root).await
    }
    async fn group_states_of(&self, groups: &[GroupId]) -> Result<Vec<GroupState>> {
        self.inner.group_states_of(groups).await
    }
    async fn location_states_of(&self, locations: &[LocationId]) -> Result<Vec<LocationState>> {
        self.inner.location_states_of(locations).await
    }
    async fn location_states(&self, root: Option<LocationId>) -> Result<Vec<LocationState>> {
        self.inner.location_states(root).await
    }
    async fn ancestor_groups(&self, check: CheckId) -> Result<Vec<GroupId>> {
        self.inner.ancestor_groups(check).await
    }
    async fn ancestor_locations(&self, check: CheckId) -> Result<Vec<LocationId>> {
        self.inner.ancestor_locations(check).await
    }
    async fn acknowledge(
        &self,
        check: CheckId,
        kind: Ack,
        author: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.inner
            .acknowledge(check, kind, author, comment, now)
            .await
    }
    async fn remove_acknowledgement(
        &self,
        check: CheckId,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.inner.remove_acknowledgement(check, now).await
    }
    async fn set_suppressed(
        &self,
        check: CheckId,
        suppressed: bool,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.inner.set_suppressed(check, suppressed, now).await
    }
    async fn reset_clock(&self, check: CheckId, now: DateTime<Utc>) -> Result<Transition> {
        self.inner.reset_clock(check, now).await
    }
    async fn schedule_downtime(
        &self,
        downtime: Downtime,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>> {
        self.inner.schedule_downtime(downtime, now).await
    }
    async fn cancel_downtime(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(CheckId, Transition)>> {
        self.inner.cancel_downtime(id, now).await
    }
    async fn downtimes(&self, check: Option<CheckId>, now: DateTime<Utc>) -> Result<Vec<Downtime>> {
        self.inner.downtimes(check, now).await
    }
    async fn apply_due_downtimes(&self, now: DateTime<Utc>) -> Result<Vec<(CheckId, Transition)>> {
        self.inner.apply_due_downtimes(now).await
    }
    async fn history(&self, check: CheckId, page: HistoryPage) -> Result<Vec<HistoryEntry>> {
        self.inner.history(check, page).await
    }
    async fn alerts(&self, check: Option<CheckId>, limit: usize) -> Result<Vec<AlertRecord>> {
        self.inner.alerts(check, limit).await
    }
    async fn matching_checks(&self, filter: &StateFilter) -> Result<Vec<CheckId>> {
        self.inner.matching_checks(filter).await
    }
    async fn states_of(&self, checks: &[CheckId]) -> Result<Vec<(CheckId, CheckState)>> {
        self.inner.states_of(checks).await
    }
}
