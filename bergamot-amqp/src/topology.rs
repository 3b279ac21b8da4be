//! Exchange and queue names, routing keys and their idempotent declaration.
//!
//! See `docs/amqp-topology.md` for the picture. Arguments of a queue must
//! never change between versions: redeclaring a queue with other arguments
//! makes the broker close the channel (406 PRECONDITION_FAILED).

use crate::error::AmqpError;
use amiquip::{
    AmqpValue, Channel, ExchangeDeclareOptions, ExchangeType, FieldTable, QueueDeclareOptions,
};
use bergamot_core::model::CheckId;
use std::time::Duration;

/// TTL classes of execute queues: an execute goes to the queue of the
/// smallest class that holds its TTL. The broker expires messages only at a
/// queue's head, so a short TTL can wait behind a long one only within its
/// class, at most the class bound; the bound is also the queue's
/// `x-message-ttl`, so nothing waits longer than its class.
pub(crate) const TTL_CLASSES: [(&str, Duration); 5] = [
    ("ttl10s", Duration::from_secs(10)),
    ("ttl1m", Duration::from_secs(60)),
    ("ttl5m", Duration::from_secs(300)),
    ("ttl1h", Duration::from_secs(3600)),
    ("ttl1d", Duration::from_secs(86_400)),
];

/// The TTL class name for `ttl` (the last class takes everything longer; its
/// queue cap then expires the execute after a day).
pub(crate) fn ttl_class(ttl: Duration) -> &'static str {
    TTL_CLASSES
        .iter()
        .find(|(_, bound)| ttl <= *bound)
        .map_or(TTL_CLASSES[TTL_CLASSES.len() - 1].0, |(name, _)| name)
}

/// The processing pool of a check: its id modulo the number of pools. Stable
/// across processes and versions (no seeded hasher).
pub fn result_pool(check_id: CheckId, pools: u16) -> u16 {
    let pools = u128::from(pools.max(1));
    // The remainder is below `pools`, which fits in u16.
    (check_id.0.as_u128() % pools) as u16
}

/// Validates one routing-key word (site, pool, engine): topic routing splits
/// on `.` and treats `*` and `#` as wildcards in bindings.
pub(crate) fn check_word(what: &'static str, value: &str) -> Result<(), AmqpError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.contains(['.', '*', '#']) {
        "must not contain '.', '*' or '#' (it is a routing-key word)"
    } else if value.len() > 60 {
        "must be at most 60 bytes"
    } else {
        return Ok(());
    };
    Err(AmqpError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    })
}

/// Every name of one deployment, derived from the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) prefix: String,
}

impl Names {
    pub(crate) fn check_exchange(&self) -> String {
        format!("{}.check", self.prefix)
    }
    pub(crate) fn pool_exchange(&self, pool: &str) -> String {
        format!("{}.check.{pool}", self.prefix)
    }
    pub(crate) fn execute_queue(&self, pool: &str, engine: &str, class: &str) -> String {
        format!("{}.check.{pool}.{engine}.{class}", self.prefix)
    }
    pub(crate) fn dead_check(&self) -> String {
        format!("{}.dead_check", self.prefix)
    }
    pub(crate) fn result_exchange(&self) -> String {
        format!("{}.result", self.prefix)
    }
    pub(crate) fn result_queue(&self, pool: u16) -> String {
        format!("{}.result.{pool}", self.prefix)
    }
    pub(crate) fn update_exchange(&self) -> String {
        format!("{}.update", self.prefix)
    }
    pub(crate) fn scheduler_exchange(&self) -> String {
        format!("{}.scheduler", self.prefix)
    }
    pub(crate) fn poison(&self) -> String {
        format!("{}.poison", self.prefix)
    }
}

/// Routing key of an execute: `<site>.<pool>.<engine>.<ttl class>`.
pub(crate) fn execute_key(site: &str, pool: &str, engine: &str, ttl: Duration) -> String {
    format!("{site}.{pool}.{engine}.{}", ttl_class(ttl))
}

/// Routing key of scheduler control messages (every scheduler node's
/// private control queue is bound with it).
pub(crate) const CONTROL_KEY: &str = "control";

/// What this connection declared, to delete it again on request.
#[derive(Debug, Default)]
pub(crate) struct Declared {
    pub(crate) exchanges: Vec<String>,
    pub(crate) queues: Vec<String>,
}

impl Declared {
    fn exchange(&mut self, name: &str) {
        if !self.exchanges.iter().any(|e| e == name) {
            self.exchanges.push(name.to_string());
        }
    }
    fn queue(&mut self, name: &str) {
        if !self.queues.iter().any(|q| q == name) {
            self.queues.push(name.to_string());
        }
    }
}

fn s(v: &str) -> AmqpValue {
    AmqpValue::LongString(v.to_string())
}

fn declare_exchange(
    ch: &Channel,
    declared: &mut Declared,
    name: &str,
    kind: ExchangeType,
    alternate: Option<&str>,
) -> Result<(), AmqpError> {
    let mut arguments = FieldTable::new();
    if let Some(ae) = alternate {
        arguments.insert("alternate-exchange".into(), s(ae));
    }
    let opts = ExchangeDeclareOptions {
        durable: true,
        arguments,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(kind, name, opts)
        .map_err(|e| AmqpError::broker(format!("declaring exchange {name}"), e))?;
    declared.exchange(name);
    Ok(())
}

fn declare_queue(
    ch: &Channel,
    declared: &mut Declared,
    name: &str,
    arguments: FieldTable,
) -> Result<(), AmqpError> {
    let opts = QueueDeclareOptions {
        durable: true,
        arguments,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name, opts)
        .map_err(|e| AmqpError::broker(format!("declaring queue {name}"), e))?;
    declared.queue(name);
    Ok(())
}

fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), AmqpError> {
    ch.queue_bind(queue, exchange, key, FieldTable::new())
        .map_err(|e| AmqpError::broker(format!("binding queue {queue} to {exchange} ({key})"), e))
}

/// Declares the shared part: check, dead-check, result, update, scheduler
/// and poison exchanges and their queues.
pub(crate) fn declare_base(
    ch: &Channel,
    names: &Names,
    result_pools: u16,
    declared: &mut Declared,
) -> Result<(), AmqpError> {
    // Dead checks first: it is the alternate exchange of the check exchanges.
    let dead = names.dead_check();
    declare_exchange(ch, declared, &dead, ExchangeType::Fanout, None)?;
    declare_queue(ch, declared, &dead, FieldTable::new())?;
    bind(ch, &dead, &dead, "")?;

    declare_exchange(
        ch,
        declared,
        &names.check_exchange(),
        ExchangeType::Topic,
        Some(&dead),
    )?;

    let poison = names.poison();
    declare_exchange(ch, declared, &poison, ExchangeType::Fanout, None)?;
    declare_queue(ch, declared, &poison, FieldTable::new())?;
    bind(ch, &poison, &poison, "")?;

    let results = names.result_exchange();
    declare_exchange(ch, declared, &results, ExchangeType::Direct, None)?;
    for pool in 0..result_pools {
        let mut args = FieldTable::new();
        args.insert("x-single-active-consumer".into(), AmqpValue::Boolean(true));
        let q = names.result_queue(pool);
        declare_queue(ch, declared, &q, args)?;
        bind(ch, &q, &results, &pool.to_string())?;
    }

    declare_exchange(
        ch,
        declared,
        &names.update_exchange(),
        ExchangeType::Topic,
        None,
    )?;

    // Control messages fan out: each scheduler consumer binds its own
    // private queue (see `conn.rs`), so every scheduler node gets each one.
    let sched = names.scheduler_exchange();
    declare_exchange(ch, declared, &sched, ExchangeType::Direct, None)?;
    Ok(())
}

/// Declares a worker pool's exchange and the execute queues of its engines
/// (one per TTL class); returns the queue names to consume.
pub(crate) fn declare_pool(
    ch: &Channel,
    names: &Names,
    pool: &str,
    engines: &[String],
    declared: &mut Declared,
) -> Result<Vec<String>, AmqpError> {
    let dead = names.dead_check();
    let pool_ex = names.pool_exchange(pool);
    // Its alternate exchange catches checks for an engine this pool lacks.
    declare_exchange(ch, declared, &pool_ex, ExchangeType::Topic, Some(&dead))?;
    ch.exchange_bind(
        pool_ex.as_str(),
        names.check_exchange(),
        format!("*.{pool}.*.*"),
        FieldTable::new(),
    )
    .map_err(|e| AmqpError::broker(format!("binding exchange {pool_ex}"), e))?;
    let mut queues = Vec::new();
    for engine in engines {
        for (class, bound) in TTL_CLASSES {
            let q = names.execute_queue(pool, engine, class);
            let mut args = FieldTable::new();
            args.insert("x-dead-letter-exchange".into(), s(&dead));
            let cap = i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AmqpValue::LongLongInt(cap));
            declare_queue(ch, declared, &q, args)?;
            bind(ch, &q, &pool_ex, &format!("*.{pool}.{engine}.{class}"))?;
            queues.push(q);
        }
    }
    Ok(queues)
}

/// Deletes what was declared (tests with a random prefix).
pub(crate) fn delete_all(ch: &Channel, declared: &mut Declared) -> Result<(), AmqpError> {
    for q in declared.queues.drain(..) {
        ch.queue_delete(q.as_str(), amiquip::QueueDeleteOptions::default())
            .map_err(|e| AmqpError::broker(format!("deleting queue {q}"), e))?;
    }
    for e in declared.exchanges.drain(..) {
        ch.exchange_delete(e.as_str(), false)
            .map_err(|err| AmqpError::broker(format!("deleting exchange {e}"), err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn ttl_classes_pick_the_smallest_bound() {
        assert_eq!(ttl_class(Duration::from_secs(1)), "ttl10s");
        assert_eq!(ttl_class(Duration::from_secs(10)), "ttl10s");
        assert_eq!(ttl_class(Duration::from_secs(11)), "ttl1m");
        assert_eq!(ttl_class(Duration::from_secs(3600)), "ttl1h");
        assert_eq!(ttl_class(Duration::from_secs(100_000)), "ttl1d");
    }

    #[test]
    fn result_pool_is_stable_and_in_range() {
        let id = CheckId(Uuid::from_u128(1000));
        assert_eq!(result_pool(id, 32), (1000 % 32) as u16);
        for _ in 0..100 {
            assert!(result_pool(CheckId::random(), 7) < 7);
        }
        assert_eq!(result_pool(id, 0), 0);
    }

    #[test]
    fn routing_words_are_checked() {
        assert!(check_word("pool", "default").is_ok());
        assert!(check_word("pool", "a.b").is_err());
        assert!(check_word("engine", "").is_err());
        assert!(check_word("engine", "#").is_err());
        let e = check_word("site", "x*").unwrap_err().to_string();
        assert!(e.contains("site") && e.contains("x*"), "{e}");
    }
}
