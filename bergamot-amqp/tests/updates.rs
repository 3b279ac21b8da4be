//! A slow update subscriber is bounded: with `update_buffer` n it keeps at
//! most n unread updates, the oldest dropped, and still gets the newest.

mod common;

use bergamot_core::model::CheckId;
use bergamot_core::queue::{Queue, Update};
use bergamot_core::state::initial_state;
use common::{amqp_url, config, connect, within};
use futures::StreamExt;

#[tokio::test]
async fn a_slow_update_subscriber_loses_the_oldest_not_the_newest() {
    let Some(url) = amqp_url("slow_update_subscriber") else {
        return;
    };
    const BUFFER: usize = 4;
    const SENT: u64 = 60;
    let q = connect(config(&url).with_update_buffer(BUFFER)).await;
    let mut updates = q.subscribe_updates().await.expect("subscribe");
    let check = CheckId::trap("s", "h", "t");
    let update = |version| {
        let mut state = initial_state(&Default::default());
        state.version = version;
        Update::Check(bergamot_core::queue::CheckUpdate {
            check_id: check,
            state,
            events: vec![],
        })
    };
    // Not read while publishing: the subscriber is as slow as can be.
    for v in 1..=SENT {
        q.publish_update(update(v)).await.expect("publish");
    }
    let mut got = Vec::new();
    within("the newest update", async {
        while let Some(u) = updates.next().await {
            if let Update::Check(u) = u.expect("update") {
                got.push(u.state.version);
                if u.state.version == SENT {
                    break;
                }
            }
        }
    })
    .await;
    assert_eq!(got.last(), Some(&SENT), "{got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!(
        (got.len() as u64) < SENT,
        "the oldest were dropped: got {} of {SENT}: {got:?}",
        got.len()
    );
    q.close().await.expect("close");
}
