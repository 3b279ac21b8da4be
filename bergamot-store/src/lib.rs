//! Bergamot's [`Store`](bergamot_core::store::Store) over PostgreSQL.
//!
//! ```no_run
//! use bergamot_core::store::Store;
//! use bergamot_store::{PostgresConfig, PostgresStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Connects, creates schema `site_a` if needed and migrates it.
//! let config = PostgresConfig::new("postgres://postgres@127.0.0.1:5432/test")
//!     .with_schema("site_a")
//!     .with_pool_size(8);
//! let store = std::sync::Arc::new(PostgresStore::connect(config).await?);
//! let model = bergamot_core::model::Model { site: "a".into(), ..Default::default() };
//! store.sync_config(&model).await?;
//! let groups = store.group_states(None).await?;
//! println!("{} groups", groups.len());
//! # Ok(())
//! # }
//! ```
//!
//! - [`PostgresStore::connect`] takes a typed [`PostgresConfig`] (URL, pool
//!   size, schema) and applies the versioned migrations under an advisory
//!   lock, refusing a schema written by a newer Bergamot.
//! - `apply_result` / `apply_results` lock the check state rows (`SELECT …
//!   FOR UPDATE`, in id order, one statement), run the pure transition of
//!   `bergamot-core` in Rust, and write states, history and alert records
//!   back with one `unnest` statement, in one transaction; serialization
//!   failures and deadlocks are retried with backoff.
//! - Group and location aggregates are one `WITH RECURSIVE` query each.
//! - [`PgPartitionOwner`]: scheduling ownership across nodes through
//!   session advisory locks on one dedicated connection (see [`partition`]
//!   and `docs/operations.md`).
//!
//! - [`NotificationStore`](bergamot_core::notify::NotificationStore): table
//!   `notification_jobs`, claimed with `FOR UPDATE SKIP LOCKED` under a lease.
//!
//! Errors are this crate's [`Error`]; at the `Store` boundary they map onto
//! [`bergamot_core::Error`] (`NotFound`, `InvalidInput`, `Backend`).
//! See `docs/postgres.md` for the schema, the queries and tuning.

#![warn(unreachable_pub)]

mod aggregate_sql;
mod config;
mod error;
mod migrations;
mod notify;
pub mod partition;
mod rows;
mod store;

pub use config::PostgresConfig;
pub use error::{Error, Result};
pub use migrations::{MIGRATIONS_TABLE, SCHEMA_VERSION};
pub use partition::{PgOwnerConfig, PgPartitionOwner, DEFAULT_LOCK_CLASS};
pub use store::PostgresStore;
