//! The core Queue conformance suite against AmqpQueue on a real broker; each
//! case gets its own random name prefix and deletes its topology at the end.

mod common;

use bergamot_core::queue::Queue;
use std::sync::Arc;

async fn make_queue() -> Option<Arc<dyn Queue>> {
    let url = common::amqp_url("queue conformance")?;
    Some(Arc::new(common::connect(common::config(&url)).await))
}

bergamot_core::queue_conformance_tests!(make_queue);
