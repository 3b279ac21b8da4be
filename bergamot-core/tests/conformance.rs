//! The conformance suites against the in-memory backends.

use bergamot_core::notify::{InMemoryNotificationStore, NotificationStore};
use bergamot_core::queue::{InMemoryQueue, Queue};
use bergamot_core::store::{InMemoryStore, Store};
use std::sync::Arc;

async fn make_store() -> Option<Arc<dyn Store>> {
    Some(Arc::new(InMemoryStore::new()))
}

async fn make_queue() -> Option<Arc<dyn Queue>> {
    Some(Arc::new(InMemoryQueue::new()))
}

bergamot_core::store_conformance_tests!(make_store);
bergamot_core::queue_conformance_tests!(make_queue);

async fn make_notification_store() -> Option<Arc<dyn NotificationStore>> {
    Some(Arc::new(InMemoryNotificationStore::new()))
}

bergamot_core::notification_store_conformance_tests!(make_notification_store);
