//! The core `NotificationStore` conformance suite against `PostgresStore`,
//! one fresh schema per case (dropped with the store).

mod common;

use async_trait::async_trait;
use bergamot_core::notify::{JobFilter, NotificationJob, NotificationStore, SendOutcome};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

struct PgNotify(common::TestStore);

#[async_trait]
impl NotificationStore for PgNotify {
    async fn enqueue(&self, jobs: &[NotificationJob]) -> bergamot_core::Result<usize> {
        self.0.inner.enqueue(jobs).await
    }
    async fn claim(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> bergamot_core::Result<Vec<NotificationJob>> {
        self.0.inner.claim(node, now, lease, limit).await
    }
    async fn finish(
        &self,
        id: Uuid,
        outcome: SendOutcome,
        now: DateTime<Utc>,
    ) -> bergamot_core::Result<()> {
        self.0.inner.finish(id, outcome, now).await
    }
    async fn notifications(
        &self,
        filter: &JobFilter,
    ) -> bergamot_core::Result<Vec<NotificationJob>> {
        self.0.inner.notifications(filter).await
    }
}

async fn make_store() -> Option<Arc<dyn NotificationStore>> {
    let store = common::TestStore::fresh().await?;
    Some(Arc::new(PgNotify(store)))
}

bergamot_core::notification_store_conformance_tests!(make_store);
