//! Helpers shared by the relay's integration tests.
#![allow(dead_code)]

use sha2::{Digest, Sha256};

/// The PostgreSQL server of the test run (`GRIDWORK_TEST_POSTGRES_URL`). Without it the PostgreSQL
/// tests are skipped, except in CI (`CI` set, as `.ci/run` does), where a missing database is a
/// failure: a suite that passes without touching PostgreSQL proves nothing.
pub fn pg_url() -> Option<String> {
    let url = std::env::var("GRIDWORK_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty());
    if url.is_none() && std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!(
            "CI is set but GRIDWORK_TEST_POSTGRES_URL is not: the PostgreSQL tests must run in CI \
             (scripts/test-all.sh starts a server)"
        );
    }
    url
}

/// The CA of the test server's TLS certificate (`GRIDWORK_TEST_POSTGRES_CA`, written by
/// `sync-server/scripts/start-postgres.sh` into its state file). Missing in CI is a failure, like the
/// URL.
pub fn pg_ca() -> Option<String> {
    let ca = std::env::var("GRIDWORK_TEST_POSTGRES_CA")
        .ok()
        .filter(|s| !s.is_empty());
    if ca.is_none() && std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set but GRIDWORK_TEST_POSTGRES_CA is not: the PostgreSQL TLS tests must run in CI");
    }
    ca
}

/// `url` with more query parameters.
pub fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A fresh schema in the test database, selected through the connection's search_path. TLS
/// parameters of `url` are kept for the relay and left out of the test's own connection.
pub async fn fresh_pg(url: &str) -> String {
    let schema = fresh_schema(url).await;
    with_schema(url, &schema)
}

/// Creates a new, empty schema and returns its name.
pub async fn fresh_schema(url: &str) -> String {
    let client = pg_client(url).await;
    let schema = format!("gw_{}", hex::encode(rand_bytes()));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    schema
}

/// `url` with connections defaulting to `schema`.
pub fn with_schema(url: &str, schema: &str) -> String {
    with_params(url, &format!("options=-c%20search_path%3D{schema}"))
}

/// A plain connection for the test's own queries (TLS parameters, which the plain driver does not
/// know, are left out).
pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && !["sslmode=", "sslrootcert=", "channel_binding="]
                    .iter()
                    .any(|k| p.starts_with(k))
        })
        .collect();
    let plain = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let (client, conn) = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(conn);
    client
}

pub fn rand_bytes() -> [u8; 6] {
    let mut b = [0u8; 6];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let h = Sha256::digest(format!("{t}-{:?}", std::thread::current().id()));
    b.copy_from_slice(&h[..6]);
    b
}
