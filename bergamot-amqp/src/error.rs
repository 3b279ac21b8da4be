//! [`AmqpError`], mapped into [`bergamot_core::Error`] at the trait boundary.

/// Everything that can go wrong in `bergamot-amqp`.
///
/// Broker-library errors are carried as text so that no amiquip type leaves
/// the crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// A configuration value is invalid.
    #[error("invalid AMQP config: {field}: {message}")]
    Config {
        /// The field of [`AmqpConfig`](crate::AmqpConfig).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The broker URL cannot be used.
    #[error("invalid AMQP URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to the broker at {addr}: {source}")]
    Connect {
        /// Host and port.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker or the protocol library reported an error.
    #[error("AMQP {context}: {message}")]
    Broker {
        /// What was being done.
        context: String,
        /// The library's description.
        message: String,
    },
    /// The connection was lost before the broker confirmed a publish: it
    /// may or may not have been taken; publish again (consumers dedupe).
    #[error("connection to the broker lost before the publish was confirmed; publish again")]
    ConnectionLost,
    /// Not connected right now (reconnecting with backoff); try again.
    #[error("not connected to the broker (reconnecting); try again")]
    NotConnected,
    /// The broker refused (nacked) a published message.
    #[error("the broker refused the published message (nack)")]
    Nacked,
    /// The delivery arrived on a connection that has since been lost: it
    /// cannot be acked any more and the broker redelivers it.
    #[error("the delivery's connection was lost; the broker redelivers it")]
    StaleDelivery,
    /// A name or routing-key word is not usable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which name (pool, engine, site).
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The queue was closed.
    #[error("the AMQP queue is closed")]
    Closed,
}

impl AmqpError {
    pub(crate) fn broker(context: impl Into<String>, e: impl std::fmt::Display) -> Self {
        AmqpError::Broker {
            context: context.into(),
            message: e.to_string(),
        }
    }
}

impl From<AmqpError> for bergamot_core::Error {
    fn from(e: AmqpError) -> Self {
        match e {
            AmqpError::Closed => bergamot_core::Error::Closed("AMQP queue".into()),
            AmqpError::InvalidName { .. }
            | AmqpError::Config { .. }
            | AmqpError::InvalidUrl { .. } => bergamot_core::Error::InvalidInput(e.to_string()),
            e => bergamot_core::Error::backend("AMQP", e),
        }
    }
}
