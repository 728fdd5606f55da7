//! Throughput and latency probes (ignored by default; run in release):
//!   cargo test --release -p gridwork-server --test perf -- --ignored --nocapture
//! Set GRIDWORK_TEST_POSTGRES_URL to also probe PostgreSQL.

use std::time::{Duration, Instant};

use sha2::Digest as _;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gridwork_server::{start, Admin, AreaLevel, Limits, Role, ServerConfig, StorageConfig};
use serde_json::{json, Value};

fn changes_for(record: &str, area: &str, n: usize) -> Vec<Value> {
    let mut doc = Automerge::new();
    (0..n)
        .map(|i| {
            let mut tx = doc.transaction();
            if i == 0 {
                tx.put(ROOT, "kind", "person").unwrap();
                tx.put(ROOT, "area", area).unwrap();
            }
            tx.put(ROOT, "f", format!("value {i}")).unwrap();
            tx.commit();
            let b = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
            json!({"record": record, "bytes": B64.encode(b)})
        })
        .collect()
}

async fn setup(storage: &StorageConfig, devices: usize) -> Vec<String> {
    let admin = Admin::open(storage).await.unwrap();
    admin
        .add_area("d1", None, AreaLevel::District, "D")
        .await
        .unwrap();
    admin
        .add_area("s1", Some("d1"), AreaLevel::Street, "S")
        .await
        .unwrap();
    admin
        .add_area("c1", Some("s1"), AreaLevel::Community, "C")
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for i in 0..devices {
        let g = format!("g{i}");
        admin
            .add_area(&g, Some("c1"), AreaLevel::Grid, "G")
            .await
            .unwrap();
        admin
            .add_user(&format!("u{i}"), "U", Role::Worker, &g)
            .await
            .unwrap();
        tokens.push(
            admin
                .add_device(&format!("u{i}"), None)
                .await
                .unwrap()
                .token,
        );
    }
    admin.close().await;
    tokens
}

/// Latency percentiles of a set of request durations.
struct Lat {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn lat(mut v: Vec<Duration>) -> Lat {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0;
    Lat {
        p50: p(0.5),
        p95: p(0.95),
        p99: p(0.99),
        max: p(1.0),
        n: v.len(),
    }
}

fn row(name: &str, value: String, baseline: String) {
    println!("| {name:<58} | {value:<44} | {baseline:<44} |");
}

fn fmt_lat(l: &Lat, errors: usize, secs: f64) -> String {
    format!(
        "p50 {:.1} p95 {:.1} p99 {:.1} max {:.1} ms, {} req, {} err, {:.2}s",
        l.p50, l.p95, l.p99, l.max, l.n, errors, secs
    )
}

/// `devices` simulated devices, device i starting at `i * window / devices`: each pushes 20 changes
/// then pulls (or, for the baseline, GETs /v1/health twice). Returns per-request latencies, errors and
/// the wall time.
async fn devices_run(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    window: Duration,
    round: usize,
    health_only: bool,
) -> (Lat, usize, f64) {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let n = tokens.len();
    for (i, tok) in tokens.iter().enumerate() {
        let (http, base, tok) = (http.clone(), base.to_owned(), tok.clone());
        let body = serde_json::to_vec(&json!({"changes": changes_for(&format!("{:032x}", 10_000_000 * round + i), &format!("g{i}"), 20)})).unwrap();
        let delay = window.mul_f64(i as f64 / n as f64);
        set.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + delay)).await;
            let mut out = Vec::new();
            let mut errors = 0;
            let t = Instant::now();
            let ok = if health_only {
                http.get(format!("{base}/v1/health")).send().await
            } else {
                http.post(format!("{base}/v1/changes"))
                    .bearer_auth(&tok)
                    .body(body)
                    .send()
                    .await
            };
            match ok {
                Ok(r) if r.status() == 200 => {
                    let _ = r.bytes().await;
                }
                _ => errors += 1,
            }
            out.push(t.elapsed());
            let t = Instant::now();
            let ok = if health_only {
                http.get(format!("{base}/v1/health")).send().await
            } else {
                http.get(format!("{base}/v1/changes?after=0"))
                    .bearer_auth(&tok)
                    .send()
                    .await
            };
            match ok {
                Ok(r) if r.status() == 200 => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if !health_only && v["cursor"].as_i64().is_none() {
                        errors += 1;
                    }
                }
                _ => errors += 1,
            }
            out.push(t.elapsed());
            (out, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        let (v, e) = r.unwrap();
        all.extend(v);
        errors += e;
    }
    (lat(all), errors, started.elapsed().as_secs_f64())
}

/// Baseline of the ingest figure: the same change bytes written with plain INSERTs (one prepared
/// statement per row, 1,000 rows and their scope-index rows per transaction) into a table with the
/// same schema and indexes, synchronous=FULL.
fn sqlite_insert_baseline(payloads: &[(String, Vec<u8>)]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut c = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch(include_str!("../migrations/sqlite/0001_init.sql"))
        .unwrap();
    c.execute_batch(include_str!("../migrations/sqlite/0002_device_no_held.sql"))
        .unwrap();
    let keys = ["d1/", "d1/s1/", "d1/s1/c1/", "d1/s1/c1/g0/"];
    let started = Instant::now();
    for (bi, chunk) in payloads.chunks(1000).enumerate() {
        let tx = c.transaction().unwrap();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO changes (seq, hash, record, bytes, kind, device) VALUES (?1, ?2, ?3, ?4, 0, 'd')",
                )
                .unwrap();
            let mut key = tx
                .prepare_cached("INSERT INTO entry_areas (key, seq) VALUES (?1, ?2)")
                .unwrap();
            for (i, (record, bytes)) in chunk.iter().enumerate() {
                let seq = (bi * 1000 + i + 1) as i64;
                let hash: [u8; 32] =
                    sha2::Digest::finalize(sha2::Sha256::new_with_prefix(bytes)).into();
                ins.execute(rusqlite::params![seq, &hash[..], record, bytes])
                    .unwrap();
                for k in keys {
                    key.execute(rusqlite::params![k, seq]).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    payloads.len() as f64 / started.elapsed().as_secs_f64()
}

/// The same baseline on PostgreSQL: one UNNEST INSERT per 1,000 rows into each table.
async fn pg_insert_baseline(url: &str, payloads: &[(String, Vec<u8>)]) -> f64 {
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let schema = format!("perfbase_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema}"
        ))
        .await
        .unwrap();
    client
        .batch_execute(include_str!("../migrations/postgres/0001_init.sql"))
        .await
        .unwrap();
    client
        .batch_execute(include_str!(
            "../migrations/postgres/0002_device_no_held.sql"
        ))
        .await
        .unwrap();
    let keys = ["d1/", "d1/s1/", "d1/s1/c1/", "d1/s1/c1/g0/"];
    let started = Instant::now();
    for (bi, chunk) in payloads.chunks(1000).enumerate() {
        let tx = client.transaction().await.unwrap();
        let seqs: Vec<i64> = (0..chunk.len())
            .map(|i| (bi * 1000 + i + 1) as i64)
            .collect();
        let hashes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|(_, b)| sha2::Digest::finalize(sha2::Sha256::new_with_prefix(b)).to_vec())
            .collect();
        let records: Vec<&str> = chunk.iter().map(|(r, _)| r.as_str()).collect();
        let bytes: Vec<&[u8]> = chunk.iter().map(|(_, b)| b.as_slice()).collect();
        tx.execute(
            "INSERT INTO changes (seq, hash, record, bytes, kind, device)
             SELECT s, h, r, b, 0, 'd' FROM UNNEST($1::bigint[], $2::bytea[], $3::text[], $4::bytea[]) AS t(s, h, r, b)",
            &[&seqs, &hashes, &records, &bytes],
        )
        .await
        .unwrap();
        let mut kk: Vec<&str> = Vec::new();
        let mut ks: Vec<i64> = Vec::new();
        for s in &seqs {
            for k in keys {
                kk.push(k);
                ks.push(*s);
            }
        }
        tx.execute(
            "INSERT INTO entry_areas (key, seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])",
            &[&kk, &ks],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    rate
}

async fn probe(storage: StorageConfig, pg_url: Option<String>) {
    let devices = 1000;
    let tokens = setup(&storage, devices).await;
    let limits = Limits {
        db_connections: 16,
        ..Limits::default()
    };
    let backend = match &storage {
        StorageConfig::Sqlite { .. } => "sqlite",
        StorageConfig::Postgres { .. } => "postgres",
    };
    let server = start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        storage,
        limits,
    })
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()
        .unwrap();
    gridwork_server::prof::enable();
    gridwork_server::prof::reset();

    // 1. Ingest: pushes of 1,000 changes (100 records x 10 changes), 4 in flight.
    let mut bodies = Vec::new();
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
    for p in 0..40 {
        let mut changes = Vec::new();
        for r in 0..100 {
            changes.extend(changes_for(&format!("{:032x}", p * 1000 + r), "g0", 10));
        }
        for c in &changes {
            payloads.push((
                c["record"].as_str().unwrap().to_owned(),
                B64.decode(c["bytes"].as_str().unwrap()).unwrap(),
            ));
        }
        bodies.push(serde_json::to_vec(&json!({"changes": changes})).unwrap());
    }
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for chunk in bodies.chunks(10) {
        let chunk = chunk.to_vec();
        let (http, base, tok) = (http.clone(), base.clone(), tokens[0].clone());
        set.spawn(async move {
            for b in chunk {
                let r = http
                    .post(format!("{base}/v1/changes"))
                    .bearer_auth(&tok)
                    .body(b)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        });
    }
    while set.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let ingest = 40_000.0 / secs;
    let profile = gridwork_server::prof::report();
    let base_rate = match &pg_url {
        None => tokio::task::spawn_blocking(move || sqlite_insert_baseline(&payloads))
            .await
            .unwrap(),
        Some(u) => pg_insert_baseline(u, &payloads).await,
    };

    // 2. 1,000 devices, each pushing 20 changes then pulling: all at once (burst) and arriving
    // uniformly over 5 s (realistic); baseline: GET /v1/health twice per device, same arrival.
    let burst = devices_run(&http, &base, &tokens, Duration::ZERO, 1, false).await;
    let burst_base = devices_run(&http, &base, &tokens, Duration::ZERO, 2, true).await;
    let spread = devices_run(&http, &base, &tokens, Duration::from_secs(5), 3, false).await;
    let spread_base = devices_run(&http, &base, &tokens, Duration::from_secs(5), 4, true).await;

    // 3. Snapshot of the grid-0 worker's records (4,000).
    let started = Instant::now();
    let mut after = String::new();
    let mut n = 0;
    loop {
        let q = if after.is_empty() {
            "limit=5000".to_string()
        } else {
            format!("limit=5000&after_record={after}")
        };
        let v: Value = http
            .get(format!("{base}/v1/snapshot?{q}"))
            .bearer_auth(&tokens[0])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        n += v["records"].as_array().unwrap().len();
        match v["next"].as_str() {
            Some(x) => after = x.to_owned(),
            None => break,
        }
    }
    let snap_secs = started.elapsed().as_secs_f64();
    server.shutdown().await;

    println!("\n== {backend} ==\n{profile}");
    println!(
        "| {:<58} | {:<44} | {:<44} |",
        "figure", "relay", "baseline (same run)"
    );
    row(
        "ingest, 40 pushes x 1,000 changes, 4 in flight",
        format!("{ingest:.0} changes/s ({secs:.2}s)"),
        format!("{base_rate:.0} rows/s: plain INSERT same bytes+indexes"),
    );
    row(
        "BURST: 1,000 devices start at t=0, push 20 + pull",
        fmt_lat(&burst.0, burst.1, burst.2),
        format!(
            "health: {}",
            fmt_lat(&burst_base.0, burst_base.1, burst_base.2)
        ),
    );
    row(
        "REALISTIC: 1,000 devices arrive uniformly over 5 s",
        fmt_lat(&spread.0, spread.1, spread.2),
        format!(
            "health: {}",
            fmt_lat(&spread_base.0, spread_base.1, spread_base.2)
        ),
    );
    row(
        "snapshot, grid-0 worker",
        format!(
            "{n} records in {snap_secs:.3}s = {:.0}/s",
            n as f64 / snap_secs
        ),
        "-".into(),
    );
    assert_eq!(burst.1 + spread.1, 0, "requests failed");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn perf_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    probe(
        StorageConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
            // GRIDWORK_PERF_INSECURE=1 measures the same run without SQLCipher (its cost).
            encryption: match std::env::var_os("GRIDWORK_PERF_INSECURE") {
                Some(_) => gridwork_server::Encryption::Insecure,
                None => gridwork_server::Encryption::Key(gridwork_server::RelayKey::generate()),
            },
        },
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn perf_postgres() {
    let Ok(url) = std::env::var("GRIDWORK_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set GRIDWORK_TEST_POSTGRES_URL");
        return;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let schema = format!("perf_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    probe(
        StorageConfig::Postgres {
            url: format!("{url}{sep}options=-c%20search_path%3D{schema}"),
        },
        Some(url.clone()),
    )
    .await;
}
