//! [`AmqpConfig`]: where the broker is and how the queue behaves.

use std::time::Duration;

/// The `with_<field>` setters of [`AmqpConfig`]: `with_x(x: Type);` sets
/// field `x` and returns the config; `with_x(x: into Type);` takes any
/// `impl Into<Type>`. Each is documented as setting its field, then with
/// the doc comments given.
macro_rules! setters {
    () => {};
    ($(#[$doc:meta])* $method:ident($field:ident: into $ty:ty); $($rest:tt)*) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        $(#[$doc])*
        pub fn $method(mut self, $field: impl Into<$ty>) -> Self {
            self.$field = $field.into();
            self
        }
        setters! { $($rest)* }
    };
    ($(#[$doc:meta])* $method:ident($field:ident: $ty:ty); $($rest:tt)*) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        $(#[$doc])*
        pub fn $method(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
        setters! { $($rest)* }
    };
}

/// Configuration of an [`AmqpQueue`](crate::AmqpQueue).
///
/// Built in code (the daemon fills it from its own config file); the library
/// never reads the environment.
#[derive(Clone, PartialEq)]
pub struct AmqpConfig {
    /// Broker URL, `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`).
    pub url: String,
    /// Unacknowledged deliveries the broker may push per consumer stream
    /// before the consumer acks some (bounded prefetch).
    pub prefetch: u16,
    /// Prefetch of a result consumer (a processor's stream over every
    /// result pool): larger than [`prefetch`](Self::prefetch), because a
    /// processor applies results in batches (4 lanes of up to 256 by
    /// default) and a small window would starve them.
    pub result_prefetch: u16,
    /// Number of result processing pools: results are partitioned by check id
    /// into this many single-active-consumer queues. Every node of one
    /// deployment must use the same number.
    pub result_pools: u16,
    /// Prefix of every exchange and queue name (`<prefix>.check`, ...), so
    /// that deployments and tests on one broker stay apart.
    pub prefix: String,
    /// The site this node publishes updates for (first word of update
    /// routing keys `<site>.<kind>.<id>`).
    pub site: String,
    /// Heartbeat interval negotiated with the broker (5–15 s is sensible): a
    /// dead connection is noticed after about twice this.
    pub heartbeat: Duration,
    /// How long one TCP connect plus AMQP handshake may take.
    pub connect_timeout: Duration,
    /// Upper bound of the reconnect backoff (it starts at 50 ms and doubles).
    pub max_backoff: Duration,
    /// Delete every exchange and queue this instance declared when it is
    /// closed or dropped. For tests that use a random [`prefix`](Self::prefix);
    /// never set it in production, where the topology is shared.
    pub delete_topology_on_close: bool,
    /// Updates one [`subscribe_updates`](bergamot_core::queue::Queue::subscribe_updates)
    /// stream holds for a slow subscriber; beyond that the oldest are
    /// dropped (as in the in-memory queue), so memory stays bounded.
    pub update_buffer: usize,
    /// Most items one AMQP message carries (wire v2, see
    /// `docs/amqp-topology.md`): executes, results, updates and control
    /// messages published to the same routing key are collected into one
    /// envelope. 1 publishes every item as its own v1 message, as before
    /// v2 (for a rolling upgrade: consumers of this version read both).
    pub batch_max: u16,
    /// Under load, how long a routing key waits after its last message
    /// before it sends the next (a lone item with nothing sent lately goes
    /// at once; a full batch goes at once).
    pub batch_linger: Duration,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &bergamot_core::redact::url(&self.url))
            .field("prefetch", &self.prefetch)
            .field("result_prefetch", &self.result_prefetch)
            .field("result_pools", &self.result_pools)
            .field("prefix", &self.prefix)
            .field("site", &self.site)
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_backoff", &self.max_backoff)
            .field("delete_topology_on_close", &self.delete_topology_on_close)
            .field("batch_max", &self.batch_max)
            .field("batch_linger", &self.batch_linger)
            .finish()
    }
}

impl AmqpConfig {
    /// A config for `url` with the defaults: prefetch 64, result prefetch
    /// 1024, 32 result pools,
    /// prefix `bergamot`, site `default`, heartbeat 10 s, connect timeout
    /// 5 s, backoff capped at 2 s, batches of up to 256 items with a
    /// linger of 5 ms.
    pub fn new(url: impl Into<String>) -> Self {
        AmqpConfig {
            url: url.into(),
            prefetch: 64,
            result_prefetch: 1024,
            result_pools: 32,
            prefix: "bergamot".to_string(),
            site: "default".to_string(),
            heartbeat: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(2),
            delete_topology_on_close: false,
            update_buffer: bergamot_core::queue::DEFAULT_UPDATE_CAPACITY,
            batch_max: 256,
            batch_linger: Duration::from_millis(5),
        }
    }

    setters! {
        with_prefix(prefix: into String);
        with_site(site: into String);
        with_prefetch(prefetch: u16);
        with_result_prefetch(result_prefetch: u16);
        with_result_pools(result_pools: u16);
        /// 1 means wire v1: one item per message.
        with_batch_max(batch_max: u16);
        with_batch_linger(batch_linger: Duration);
        with_delete_topology_on_close(delete_topology_on_close: bool);
    }

    /// Sets [`update_buffer`](Self::update_buffer) (at least 1).
    pub fn with_update_buffer(mut self, updates: usize) -> Self {
        self.update_buffer = updates.max(1);
        self
    }

    /// Checks the values that would otherwise fail later and less clearly.
    pub(crate) fn validate(&self) -> Result<(), crate::AmqpError> {
        let bad =
            |field: &'static str, message: String| Err(crate::AmqpError::Config { field, message });
        if self.prefetch == 0 {
            return bad("prefetch", "must be at least 1".into());
        }
        if self.result_prefetch == 0 {
            return bad("result_prefetch", "must be at least 1".into());
        }
        if self.batch_max == 0 {
            return bad("batch_max", "must be at least 1".into());
        }
        if self.batch_linger > Duration::from_secs(1) {
            return bad(
                "batch_linger",
                format!("must be at most 1 s, got {:?}", self.batch_linger),
            );
        }
        if self.result_pools == 0 {
            return bad("result_pools", "must be at least 1".into());
        }
        if self.prefix.is_empty() || self.prefix.len() > 100 {
            return bad(
                "prefix",
                format!("must be 1 to 100 bytes, got {:?}", self.prefix),
            );
        }
        if self.site.is_empty() {
            return bad("site", "must not be empty".into());
        }
        let hb = self.heartbeat.as_secs();
        if !(1..=u64::from(u16::MAX)).contains(&hb) {
            return bad(
                "heartbeat",
                format!("must be 1 s to 65535 s, got {:?}", self.heartbeat),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::AmqpConfig;

    #[test]
    fn debug_redacts_the_password() {
        let debug = format!("{:?}", AmqpConfig::new("amqp://guest:hunter2@h:5672/%2f"));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("amqp://guest:***@h:5672/%2f"), "{debug}");
    }
}
