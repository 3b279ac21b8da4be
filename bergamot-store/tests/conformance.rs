//! The core `Store` conformance suite against `PostgresStore`, one fresh
//! schema per case (dropped with the store).

mod common;

use bergamot_core::store::Store;
use std::sync::Arc;

async fn make_store() -> Option<Arc<dyn Store>> {
    let store = common::TestStore::fresh().await?;
    Some(Arc::new(store))
}

bergamot_core::store_conformance_tests!(make_store);
