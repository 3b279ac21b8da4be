//! Wire format: core [`Message`] JSON bodies (v1, one item per AMQP
//! message) and v2 envelopes (several items per message), AMQP properties
//! and headers.
//!
//! A v2 envelope is `{"v":2,"items":[<v1 message>, ...]}` with content type
//! [`CONTENT_TYPE_V2`]: each item is exactly the v1 JSON of one message, so
//! an item taken out of a batch (poisoned, expired, requeued) is published
//! on its own as a v1 message without re-encoding. Consumers read both.

use amiquip::{AmqpProperties, AmqpValue, FieldTable};
use bergamot_core::queue::{DeadReason, Message};
use std::time::Duration;

/// Header naming why a message was moved to the poison queue.
pub const POISON_REASON_HEADER: &str = "x-bergamot-poison-reason";
/// Header naming the queue a poisoned message came from.
pub const POISON_QUEUE_HEADER: &str = "x-bergamot-poison-source";

/// Content type of a v1 message (one item).
pub const CONTENT_TYPE_V1: &str = "application/json";
/// Content type of a v2 envelope (several items).
pub const CONTENT_TYPE_V2: &str = "application/vnd.bergamot.batch+json";
/// The envelope version this build writes (and the highest it reads).
pub const WIRE_VERSION: u32 = 2;
/// Header marking a message that carries the items of a batch whose other
/// items were settled (read as a redelivery).
pub(crate) const REQUEUED_HEADER: &str = "x-bergamot-requeued";

/// A message ready to publish (stays inside the crate).
pub(crate) struct Outgoing {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) properties: AmqpProperties,
}

/// JSON, persistent or not, with an optional per-message expiration.
pub(crate) fn properties(persistent: bool, expiration: Option<Duration>) -> AmqpProperties {
    let mut p = AmqpProperties::default()
        .with_content_type(CONTENT_TYPE_V1.to_string())
        .with_delivery_mode(if persistent { 2 } else { 1 });
    if let Some(ttl) = expiration {
        p = p.with_expiration(ttl.as_millis().to_string());
    }
    p
}

/// A v2 envelope of already encoded v1 items.
pub(crate) fn envelope<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(b"{\"v\":2,\"items\":[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    body
}

#[derive(serde::Deserialize)]
struct Envelope<T> {
    v: u32,
    items: Vec<T>,
}

/// One item of a delivery: decoded, or why not with its own bytes (to
/// poison it alone).
pub(crate) type Split = Result<Message, (String, Vec<u8>)>;

/// The items of a delivery: one for a v1 body, every item of a v2
/// envelope. A body that cannot be read at all is one undecodable item
/// (the whole body).
pub(crate) fn split(body: &[u8], v2: bool) -> Vec<Split> {
    if !v2 {
        return vec![Message::decode(body).map_err(|e| (e.to_string(), body.to_vec()))];
    }
    // Fast path: every item decodes.
    if let Ok(e) = serde_json::from_slice::<Envelope<Message>>(body) {
        if e.v == WIRE_VERSION {
            return e.items.into_iter().map(Ok).collect();
        }
    }
    // Slow path: find what is wrong, item by item.
    match serde_json::from_slice::<Envelope<serde_json::Value>>(body) {
        Err(e) => vec![Err((
            format!("undecodable batch envelope: {e}"),
            body.to_vec(),
        ))],
        Ok(e) if e.v != WIRE_VERSION => vec![Err((
            format!(
                "unsupported envelope version {} (this build reads 1 and 2)",
                e.v
            ),
            body.to_vec(),
        ))],
        Ok(e) => e
            .items
            .into_iter()
            .map(|v| {
                let raw = serde_json::to_vec(&v).unwrap_or_default();
                serde_json::from_value::<Message>(v).map_err(|e| (e.to_string(), raw))
            })
            .collect(),
    }
}

/// The v1 bytes of items `indices` of a delivery body (the body itself for
/// a v1 body), one per index. Only for items taken out of a batch, so the
/// body is parsed again (the JSON is the same, its keys may be reordered).
pub(crate) fn item_bytes(body: &[u8], v2: bool, indices: &[usize]) -> Vec<Vec<u8>> {
    let items = if v2 {
        serde_json::from_slice::<Envelope<serde_json::Value>>(body)
            .map(|e| e.items)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    indices
        .iter()
        .map(|&i| match items.get(i) {
            Some(v) => serde_json::to_vec(v).unwrap_or_else(|_| body.to_vec()),
            // A v1 body (or, which cannot happen, an envelope that no longer
            // reads): the whole body.
            None => body.to_vec(),
        })
        .collect()
}

/// The poisoned copy of an undecodable message, with the reason as a header.
pub(crate) fn poison(
    exchange: String,
    body: Vec<u8>,
    source_queue: &str,
    reason: &str,
) -> Outgoing {
    let mut headers = FieldTable::new();
    headers.insert(
        POISON_REASON_HEADER.into(),
        AmqpValue::LongString(reason.to_string()),
    );
    headers.insert(
        POISON_QUEUE_HEADER.into(),
        AmqpValue::LongString(source_queue.to_string()),
    );
    Outgoing {
        exchange,
        routing_key: String::new(),
        body,
        properties: properties(true, None).with_headers(headers),
    }
}

/// The dead copy of one execute taken out of a delivery by the consumer
/// side: `expired` in a worker's prefetch buffer, or `rejected` (nacked
/// without requeue) out of a batch. Marked like a broker dead-lettering
/// (`x-first-death-reason`) so it reads as the same [`DeadReason`].
pub(crate) fn dead_copy(dead_check_exchange: String, body: Vec<u8>, reason: &str) -> Outgoing {
    let mut headers = FieldTable::new();
    headers.insert(
        "x-first-death-reason".into(),
        AmqpValue::LongString(reason.into()),
    );
    headers.insert(
        "x-bergamot-expired-by".into(),
        AmqpValue::LongString("consumer".into()),
    );
    Outgoing {
        exchange: dead_check_exchange,
        routing_key: String::new(),
        body,
        properties: properties(true, None).with_headers(headers),
    }
}

fn header_str<'a>(table: &'a FieldTable, key: &str) -> Option<&'a str> {
    match table.get(key) {
        Some(AmqpValue::LongString(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Why a message reached the dead-check queue: `x-first-death-reason` (or
/// the first `x-death` entry) for dead-lettered executes; no death header at
/// all means the alternate exchange caught it, i.e. unroutable.
pub(crate) fn dead_reason(headers: Option<&FieldTable>) -> DeadReason {
    let Some(h) = headers else {
        return DeadReason::Unroutable;
    };
    let reason = header_str(h, "x-first-death-reason")
        .map(str::to_string)
        .or_else(|| match h.get("x-death") {
            Some(AmqpValue::FieldArray(deaths)) => deaths.iter().find_map(|d| match d {
                AmqpValue::FieldTable(t) => header_str(t, "reason").map(str::to_string),
                _ => None,
            }),
            _ => None,
        });
    match reason.as_deref() {
        None => DeadReason::Unroutable,
        Some("expired") => DeadReason::Expired,
        Some("rejected") => DeadReason::Rejected {
            reason: "a worker rejected the execute without requeue".into(),
        },
        Some(other) => DeadReason::Rejected {
            reason: format!("dead-lettered by the broker ({other})"),
        },
    }
}

/// The wire `type` of a message, for error texts.
pub(crate) fn type_name(m: &Message) -> &'static str {
    match m {
        Message::ExecuteCheck(_) => "execute_check",
        Message::CheckResult(_) => "check_result",
        Message::DeadCheck(_) => "dead_check",
        Message::Update(_) => "update",
        Message::SchedulerControl(_) => "scheduler_control",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(reason: &str) -> FieldTable {
        let mut t = FieldTable::new();
        t.insert("reason".into(), AmqpValue::LongString(reason.into()));
        let mut h = FieldTable::new();
        h.insert(
            "x-death".into(),
            AmqpValue::FieldArray(vec![AmqpValue::FieldTable(t)]),
        );
        h
    }

    #[test]
    fn dead_reason_from_headers() {
        assert_eq!(dead_reason(None), DeadReason::Unroutable);
        assert_eq!(
            dead_reason(Some(&FieldTable::new())),
            DeadReason::Unroutable
        );
        assert_eq!(dead_reason(Some(&death("expired"))), DeadReason::Expired);
        assert!(matches!(
            dead_reason(Some(&death("rejected"))),
            DeadReason::Rejected { .. }
        ));
        let mut h = death("rejected");
        h.insert(
            "x-first-death-reason".into(),
            AmqpValue::LongString("expired".into()),
        );
        assert_eq!(dead_reason(Some(&h)), DeadReason::Expired);
    }

    #[test]
    fn v1_and_v2_bodies_split_into_items() {
        use bergamot_core::model::{CheckId, CheckResult, Status};
        use chrono::Utc;
        let r = |o: &str| {
            Message::CheckResult(CheckResult::new(
                CheckId::random(),
                Status::Ok,
                o,
                Utc::now(),
            ))
        };
        let (a, b) = (r("a"), r("b"));
        let one = a.encode().unwrap();
        assert_eq!(
            split(&one, false)
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>(),
            vec![a.clone()]
        );
        let two = envelope([one.as_slice(), b.encode().unwrap().as_slice()]);
        let items: Vec<_> = split(&two, true).into_iter().map(Result::unwrap).collect();
        assert_eq!(items, vec![a.clone(), b.clone()]);
        // The same JSON (keys may come in another order).
        let taken = item_bytes(&two, true, &[1]);
        assert_eq!(taken.len(), 1);
        assert_eq!(Message::decode(&taken[0]).unwrap(), b);
        // One bad item: the others still decode, the bad one keeps its bytes.
        let bad = envelope([one.as_slice(), br#"{"type":"nope"}"#.as_slice()]);
        let items = split(&bad, true);
        assert_eq!(items[0].as_ref().unwrap(), &a);
        let (reason, raw) = items[1].as_ref().unwrap_err();
        assert!(!reason.is_empty());
        assert_eq!(raw, br#"{"type":"nope"}"#);
        // An unreadable envelope or another version is one undecodable item.
        for body in [b"{not json".as_slice(), br#"{"v":3,"items":[]}"#.as_slice()] {
            let items = split(body, true);
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].as_ref().unwrap_err().1, body);
        }
        assert!(split(&envelope([]), true).is_empty());
    }
}
