//! Embedding Bergamot in a service: a model built in code, the in-memory
//! store and queue, a processor, passive results pushed in, states and group
//! aggregates read back, and live updates printed.
//!
//! Run with `cargo run -p bergamot-examples --example embed`.

use bergamot_core::model::{
    Check, CheckId, CheckKind, CheckResult, Group, GroupId, Model, Policy, Status,
};
use bergamot_core::processor::Processor;
use bergamot_core::queue::{InMemoryQueue, Queue, Update};
use bergamot_core::store::{InMemoryStore, Store};
use chrono::Utc;
use futures::StreamExt;
use std::sync::Arc;

const SITE: &str = "embedded";

fn check(kind: CheckKind, host: &str, name: &str, group: GroupId) -> Check {
    let builder = match kind {
        CheckKind::Host => Check::host(SITE, host),
        _ => Check::service(SITE, host, name),
    };
    builder
        // Alert on the second bad result, recover on the first good one.
        .policy(Policy::builder().failed_after(2).recovers_after(1).build())
        .group(group)
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The model: one host with two services, all in one group.
    let web = GroupId::named(SITE, "web");
    let model = Model {
        site: SITE.into(),
        checks: vec![
            check(CheckKind::Host, "web1", "web1", web),
            check(CheckKind::Service, "web1", "http", web),
            check(CheckKind::Service, "web1", "disk", web),
        ],
        groups: vec![Group {
            id: web,
            name: "web".into(),
            parents: vec![],
        }],
        locations: vec![],
    };

    // 2. Backends and the processor.
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let queue: Arc<dyn Queue> = Arc::new(InMemoryQueue::new());
    store.sync_config(&model).await?;
    let processor = Processor::new(Arc::clone(&store), Arc::clone(&queue));
    let mut updates = queue.subscribe_updates().await?;

    // 3. Push passive results (a real service would publish them on the
    //    queue and run `processor.run(shutdown)`).
    let http = CheckId::service(SITE, "web1", "http");
    let disk = CheckId::service(SITE, "web1", "disk");
    for (check, status, output) in [
        (CheckId::host(SITE, "web1"), Status::Ok, "PING OK"),
        (http, Status::Ok, "HTTP 200 in 12 ms"),
        (disk, Status::Warning, "/ is 91% full"),
        (disk, Status::Critical, "/ is 97% full"),
        (http, Status::Ok, "HTTP 200 in 9 ms"),
    ] {
        processor
            .handle_result(
                &CheckResult::new(check, status, output, Utc::now()),
                Utc::now(),
            )
            .await?;
    }

    // 4. Read states and the group aggregate.
    for (id, state) in store.states().await? {
        let c = model
            .checks
            .iter()
            .find(|c| c.id == id)
            .map(Check::display_name)
            .unwrap_or_default();
        let hardness = if state.hard { "hard" } else { "soft" };
        println!(
            "{c:12} {:8} {hardness} attempt {} v{}: {}",
            state.status.as_str(),
            state.attempt,
            state.version,
            state.output
        );
    }
    for g in store.group_states(None).await? {
        let a = g.aggregate;
        println!(
            "group web: {} ok={} total={} counts={:?}",
            a.status.as_str(),
            a.ok,
            a.total,
            a.counts
        );
    }

    // 5. The updates published meanwhile.
    while let Some(Some(update)) = futures::FutureExt::now_or_never(updates.next()) {
        match update? {
            Update::Check(u) => println!(
                "update: check {} -> {} (v{})",
                u.check_id,
                u.state.status.as_str(),
                u.state.version
            ),
            Update::Group(u) => println!(
                "update: group {} -> {}",
                u.group_id,
                u.aggregate.status.as_str()
            ),
            Update::Location(u) => println!(
                "update: location {} -> {}",
                u.location_id,
                u.aggregate.status.as_str()
            ),
            Update::Alert(u) => println!("update: {:?} on {}: {}", u.event, u.check_id, u.output),
            Update::Heartbeat(_) => {}
        }
    }
    Ok(())
}
