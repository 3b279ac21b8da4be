//! The crate's error type and its mapping onto [`bergamot_core::Error`].

/// A result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in [`PostgresStore`](crate::PostgresStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given (password removed).
        url: String,
        /// What the parser said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A [`PostgresConfig`](crate::PostgresConfig) field is invalid.
    #[error("invalid PostgreSQL store config: {field}: {message}")]
    InvalidConfig {
        /// The field (`schema`, `pool_size` ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {}", chain(source))]
    Connect {
        /// Host, port, user and database tried (no password).
        target: String,
        /// The pool or driver error.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// The database schema was written by a newer Bergamot.
    #[error(
        "database schema {schema:?} is at version {found}, newer than this Bergamot supports \
         (version {supported}); upgrade Bergamot or use another schema"
    )]
    SchemaTooNew {
        /// The PostgreSQL schema.
        schema: String,
        /// The version found in its migrations table.
        found: i32,
        /// The newest version this code knows.
        supported: i32,
    },
    /// A query failed.
    #[error("{context}: {}", chain(source))]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver error (with the server's SQLSTATE, if any).
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool.
    #[error("cannot get a PostgreSQL connection: {}", chain(.0))]
    Pool(#[source] deadpool_postgres::PoolError),
    /// A row could not be decoded into a Bergamot type.
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What could not be decoded.
        message: String,
    },
    /// An object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request was malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// An error and its sources, joined with `: ` (the driver's own `Display`
/// says only "db error"; the server's message is in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl Error {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Db { context, source }
    }

    pub(crate) fn corrupt(table: &'static str, message: impl Into<String>) -> Error {
        Error::Corrupt {
            table,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl std::fmt::Display) -> Error {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// The SQLSTATE of a failed query, if the server sent one.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Db { source, .. } => source.code(),
            Error::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }

    /// Whether the transaction should simply be retried: a serialization
    /// failure (40001) or a deadlock (40P01).
    pub fn is_retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(
            self.sql_state(),
            Some(s) if *s == SqlState::T_R_SERIALIZATION_FAILURE || *s == SqlState::T_R_DEADLOCK_DETECTED
        )
    }

    /// Whether the server refused the data itself, so that no retry can
    /// succeed: SQLSTATE class 22 (data exception: invalid text such as a
    /// NUL byte, a value too long), 23 (integrity constraint violation) or
    /// 54 (program limit exceeded, e.g. a row too big for an index).
    pub fn is_permanent(&self) -> bool {
        self.sql_state()
            .is_some_and(|s| matches!(s.code().get(..2), Some("22" | "23" | "54")))
    }
}

impl From<Error> for bergamot_core::Error {
    fn from(e: Error) -> Self {
        match e {
            // Refused data is bad input: the processor poisons that one
            // result and applies the rest; the API answers 400.
            e if e.is_permanent() => {
                let code = e
                    .sql_state()
                    .map(|s| s.code().to_string())
                    .unwrap_or_default();
                bergamot_core::Error::InvalidInput(format!(
                    "the database refused the data (SQLSTATE {code}): {e}"
                ))
            }
            Error::NotFound { what, id } => bergamot_core::Error::NotFound { what, id },
            Error::InvalidInput(m) => bergamot_core::Error::InvalidInput(m),
            e @ Error::InvalidConfig { .. } => bergamot_core::Error::InvalidInput(e.to_string()),
            other => bergamot_core::Error::backend("PostgreSQL store", other),
        }
    }
}
