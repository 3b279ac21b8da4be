//! The crate's error type.

use std::fmt;

/// A result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem found while loading or validating a configuration.
///
/// Names the file, the line (1-based, 0 when unknown) and the field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigProblem {
    /// The file the problem is in (empty for configs built in code).
    pub file: String,
    /// 1-based line number, 0 when unknown.
    pub line: usize,
    /// The field (dotted path) that is wrong, e.g. `host.web1.services.http.every`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "{}: {}", self.field, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.field, self.message
            )
        }
    }
}

/// All the problems of one configuration, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Errors of the Bergamot core and of every backend behind its traits.
///
/// Backends map their own failures onto these variants so that callers and
/// the conformance suites can match on meaning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid configuration:\n{0}")]
    Config(ConfigErrors),
    /// An object that was asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object (`check`, `group`, `downtime` ...).
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// A request or message was malformed or not allowed in the current state.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A message could not be decoded.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The queue or store was closed or shut down.
    #[error("closed: {0}")]
    Closed(String),
    /// A backend (database, broker, I/O) failed; the source says how.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (file name, operation).
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a backend error with context.
    pub fn backend<E>(context: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Backend {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Builds a [`Error::NotFound`].
    pub fn not_found(what: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }
}
