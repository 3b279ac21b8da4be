//! Versioned schema migrations, applied at connect.
//!
//! Every migration runs in one transaction that first takes a transaction
//! advisory lock keyed by the schema name, so several daemons starting at
//! once apply each migration exactly once and the others wait, then see it
//! applied. A schema whose recorded version is newer than [`MIGRATIONS`]
//! knows is refused before anything is written.

use crate::error::{Error, Result};

/// The migrations, in order: `(version, SQL)`.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("0001_initial.sql")),
    (2, include_str!("0002_group_closure.sql")),
    (3, include_str!("0003_linear_group_counts.sql")),
    (4, include_str!("0004_notification_jobs.sql")),
    (5, include_str!("0005_history_flags.sql")),
];

/// The newest schema version this code knows.
pub const SCHEMA_VERSION: i32 = 5;

/// The table recording applied migrations (inside the store's schema).
pub const MIGRATIONS_TABLE: &str = "bergamot_migrations";

/// Creates the schema if needed and applies the missing migrations.
/// Returns the schema version afterwards.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<i32> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::db("begin migration"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('bergamot.migrate.' || $1::text, 0))",
        &[&schema],
    )
    .await
    .map_err(Error::db("take the migration lock"))?;
    // The schema name is validated to [a-z0-9_] by PostgresConfig.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
             version     integer PRIMARY KEY,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(Error::db("create the schema and migrations table"))?;
    let row = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}"),
            &[],
        )
        .await
        .map_err(Error::db("read the schema version"))?;
    let found: i32 = row.get(0);
    if found > SCHEMA_VERSION {
        // Roll back explicitly (not on drop) so the lock and the created
        // schema go away before the caller sees the error.
        tx.rollback()
            .await
            .map_err(Error::db("roll back after finding a newer schema"))?;
        return Err(Error::SchemaTooNew {
            schema: schema.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tracing::info!(schema, version, "applying PostgreSQL schema migration");
        tx.batch_execute(sql)
            .await
            .map_err(Error::db("apply a schema migration"))?;
        tx.execute(
            &format!("INSERT INTO {MIGRATIONS_TABLE} (version) VALUES ($1)"),
            &[version],
        )
        .await
        .map_err(Error::db("record a schema migration"))?;
    }
    tx.commit().await.map_err(Error::db("commit migrations"))?;
    Ok(SCHEMA_VERSION)
}
