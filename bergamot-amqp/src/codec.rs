//! Wire format: core [`Message`] JSON bodies, AMQP properties and headers.

use amiquip::{AmqpProperties, AmqpValue, FieldTable};
use bergamot_core::queue::{DeadCheck, DeadReason, Message};
use chrono::Utc;
use std::time::Duration;

/// Header naming why a message was moved to the poison queue.
pub const POISON_REASON_HEADER: &str = "x-bergamot-poison-reason";
/// Header naming the queue a poisoned message came from.
pub const POISON_QUEUE_HEADER: &str = "x-bergamot-poison-source";

/// A message ready to publish (stays inside the crate).
pub(crate) struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: AmqpProperties,
}

/// JSON, persistent or not, with an optional per-message expiration.
pub(crate) fn properties(persistent: bool, expiration: Option<Duration>) -> AmqpProperties {
    let mut p = AmqpProperties::default()
        .with_content_type("application/json".to_string())
        .with_delivery_mode(if persistent { 2 } else { 1 });
    if let Some(ttl) = expiration {
        p = p.with_expiration(ttl.as_millis().to_string());
    }
    p
}

/// Builds an [`Outgoing`] for a core message.
pub(crate) fn outgoing(
    exchange: String,
    routing_key: String,
    message: &Message,
    persistent: bool,
    expiration: Option<Duration>,
) -> bergamot_core::Result<Outgoing> {
    Ok(Outgoing {
        exchange,
        routing_key,
        body: message.encode()?,
        properties: properties(persistent, expiration),
    })
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

/// The dead copy of an execute that expired in a worker's prefetch buffer:
/// marked like a broker dead-lettering so it reads as `Expired`.
pub(crate) fn expired(dead_check_exchange: String, body: Vec<u8>) -> Outgoing {
    let mut headers = FieldTable::new();
    headers.insert(
        "x-first-death-reason".into(),
        AmqpValue::LongString("expired".into()),
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

/// Decodes a dead-check delivery: a dead-lettered or unroutable execute, or
/// an explicitly published [`DeadCheck`].
pub(crate) fn decode_dead(body: &[u8], headers: Option<&FieldTable>) -> Result<DeadCheck, String> {
    match Message::decode(body).map_err(|e| e.to_string())? {
        Message::ExecuteCheck(execute) => Ok(DeadCheck {
            execute,
            reason: dead_reason(headers),
            at: Utc::now(),
        }),
        Message::DeadCheck(d) => Ok(d),
        other => Err(format!(
            "expected an execute_check, got {}",
            type_name(&other)
        )),
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
    fn undecodable_dead_check_names_the_problem() {
        let e = decode_dead(b"{not json", None).unwrap_err();
        assert!(!e.is_empty());
    }
}
