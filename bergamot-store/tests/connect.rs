//! Connecting and migrating: bad input gives clear errors and writes nothing;
//! concurrent starts migrate once; a newer schema is refused.

mod common;

use bergamot_store::{Error, PostgresConfig, PostgresStore, MIGRATIONS_TABLE, SCHEMA_VERSION};
use common::{drop_schema_blocking, fresh_config, fresh_schema, raw_client, test_url};

async fn schema_exists(schema: &str) -> bool {
    raw_client(None)
        .await
        .query_opt(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .expect("query")
        .is_some()
}

#[tokio::test]
async fn malformed_url_is_a_clear_error() {
    // No server needed: the URL never parses.
    for url in [
        "postgres://u:pw@host:notaport/db",
        "postgres://h/db?sslmode=bogus",
        "not a url at all=",
    ] {
        let e = PostgresStore::connect(PostgresConfig::new(url))
            .await
            .expect_err(url);
        let msg = e.to_string();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{url}: {msg}");
        assert!(msg.contains("invalid PostgreSQL URL"), "{msg}");
        assert!(!msg.contains(":pw@"), "password leaked: {msg}");
    }
    let e = PostgresStore::connect(PostgresConfig::new("postgres://h/db").with_schema("Bad-Name"))
        .await
        .expect_err("bad schema");
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "schema",
                ..
            }
        ),
        "{e}"
    );
    // Mapped into the core error at the trait boundary: invalid input.
    let core: bergamot_core::Error = e.into();
    assert!(
        matches!(core, bergamot_core::Error::InvalidInput(_)),
        "{core}"
    );
}

#[tokio::test]
async fn closed_port_is_a_clear_error() {
    // Find a port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let e = PostgresStore::connect(PostgresConfig::new(format!(
        "postgres://postgres@127.0.0.1:{port}/test"
    )))
    .await
    .expect_err("closed port");
    let msg = e.to_string();
    eprintln!("closed port: {msg}");
    assert!(matches!(e, Error::Connect { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

/// The error of connecting to `url` with schema `schema`, which must fail
/// (`why`).
async fn refused(url: String, schema: &str, why: &str) -> Error {
    PostgresStore::connect(PostgresConfig::new(url).with_schema(schema))
        .await
        .expect_err(why)
}

/// The test server uses trust auth, which accepts any password, so a wrong
/// password cannot be provoked; a nonexistent database and a nonexistent
/// role are the login failures we can produce, and must read clearly.
#[tokio::test]
async fn unknown_database_or_role_is_a_clear_error() {
    let Some(url) = test_url() else { return };
    let mut cfg: tokio_postgres::Config = url.parse().expect("url");
    cfg.dbname("bergamot_no_such_database");
    let host = "127.0.0.1";
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("postgres").to_string();
    let schema = fresh_schema();
    let e = refused(
        format!("postgres://{user}@{host}:{port}/bergamot_no_such_database"),
        &schema,
        "no such database",
    )
    .await;
    let msg = format!(
        "{e}: {:?}",
        std::error::Error::source(&e).map(|s| s.to_string())
    );
    assert!(matches!(e, Error::Connect { .. }), "{msg}");
    assert!(msg.contains("bergamot_no_such_database"), "{msg}");

    let e = refused(
        format!("postgres://bergamot_no_such_role:wrong@{host}:{port}/test"),
        &schema,
        "no such role",
    )
    .await;
    let msg = e.to_string();
    eprintln!("unknown role: {msg}");
    assert!(matches!(e, Error::Connect { .. }), "{msg}");
    assert!(msg.contains("bergamot_no_such_role"), "{msg}");
    assert!(
        msg.contains("does not exist"),
        "the server's reason is shown: {msg}"
    );
    assert!(!msg.contains("wrong"), "password leaked: {msg}");
    assert!(!schema_exists(&schema).await, "nothing may be written");
}

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_starts_migrate_once() {
    let Some(cfg) = fresh_config() else { return };
    let schema = cfg.schema.clone();
    let starts = (0..6).map(|_| PostgresStore::connect(cfg.clone().with_pool_size(2)));
    let stores = futures::future::join_all(starts).await;
    for s in &stores {
        assert!(s.is_ok(), "{:?}", s.as_ref().err().map(|e| e.to_string()));
    }
    drop(stores);
    // And again, on an existing schema.
    let again = PostgresStore::connect(cfg.clone())
        .await
        .expect("reconnect");
    drop(again);
    let client = raw_client(Some(&schema)).await;
    let versions: Vec<i32> = client
        .query(
            &format!("SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version"),
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    drop_schema_blocking(schema);
}

#[tokio::test]
async fn newer_schema_is_refused_without_writing() {
    let Some(cfg) = fresh_config() else { return };
    let schema = cfg.schema.clone();
    // A schema that a newer Bergamot created: only its migrations table, at a
    // version we do not know.
    let client = raw_client(None).await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.{MIGRATIONS_TABLE} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO {schema}.{MIGRATIONS_TABLE} (version) VALUES ({});",
            SCHEMA_VERSION + 41
        ))
        .await
        .expect("set up a newer schema");
    let e = PostgresStore::connect(cfg.clone())
        .await
        .expect_err("newer schema");
    let msg = e.to_string();
    assert!(
        matches!(e, Error::SchemaTooNew { found, supported, .. } if found == SCHEMA_VERSION + 41 && supported == SCHEMA_VERSION),
        "{msg}"
    );
    eprintln!("newer schema: {msg}");
    assert!(msg.contains(&schema) && msg.contains("newer"), "{msg}");
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        vec![MIGRATIONS_TABLE.to_string()],
        "no partial writes"
    );

    // A migrated schema bumped to a newer version is refused too.
    let cfg2 = fresh_config().expect("url");
    let schema2 = cfg2.schema.clone();
    drop(PostgresStore::connect(cfg2.clone()).await.expect("migrate"));
    client
        .batch_execute(&format!(
            "INSERT INTO {schema2}.{MIGRATIONS_TABLE} (version) VALUES ({})",
            SCHEMA_VERSION + 1
        ))
        .await
        .expect("bump");
    let e = PostgresStore::connect(cfg2).await.expect_err("newer");
    assert!(matches!(e, Error::SchemaTooNew { .. }), "{e}");
    drop_schema_blocking(schema);
    drop_schema_blocking(schema2);
}
