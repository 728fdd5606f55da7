//! Throughput and latency probes (ignored by default; run in release):
//!   cargo test --release -p gridwork-server --test perf -- --ignored --nocapture
//! Set GRIDWORK_TEST_POSTGRES_URL to also probe PostgreSQL.
//!
//! `ingest_real_relay` compares relay builds on the ingest path, each a real `gridwork-server`
//! process on loopback (BENCHMARKS.md, "Authority checks on the ingest path"):
//!   GRIDWORK_SERVER_BINS="before=/path/to/old/gridwork-server,after=/path/to/new/gridwork-server" \
//!   cargo test --release -p gridwork-server --test perf -- --ignored ingest_real_relay --nocapture
//! Without the variable it measures the relay built with this test. A build's path may be followed by
//! arguments for its every command (`after=/path/gridwork-server --insecure-no-encryption`).
//! GRIDWORK_BENCH_ROUNDS (default 3) runs the builds alternately that many times, so a shared machine's
//! load falls on both alike. With GRIDWORK_BENCH_POSTGRES=URL every relay process runs on PostgreSQL
//! instead (a fresh schema of that database per run, `--database`), e.g. to compare builds there.

mod common;

use std::time::{Duration, Instant};

use sha2::Digest as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::{new_person, set_field, Author};
use gridwork_server::{start, Admin, AreaLevel, Limits, Role, ServerConfig, StorageConfig};
use serde_json::{json, Value};

/// `n` honest changes of one new person record by `author`: the creation, then phone edits.
fn changes_for(author: &Author, record: &str, area: &str, n: usize) -> Vec<Value> {
    let (mut doc, first) = author.create(record, |tx| new_person(tx, area, "Bench Person"));
    let mut out = vec![first];
    for i in 1..n {
        let phone = format!("138{i:08}");
        out.push(author.write(&mut doc, "update", |tx| set_field(tx, "phone", &phone)));
    }
    out.into_iter()
        .map(|b| json!({"record": record, "bytes": B64.encode(b)}))
        .collect()
}

/// A test device: its token and its store.
#[derive(Clone)]
struct Dev {
    token: String,
    author: Author,
}

async fn setup(storage: &StorageConfig, devices: usize) -> Vec<Dev> {
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
    let mut out = Vec::new();
    for i in 0..devices {
        let g = format!("g{i}");
        admin
            .add_area(&g, Some("c1"), AreaLevel::Grid, "G")
            .await
            .unwrap();
        let (user, device) = (format!("u{i}"), format!("dev-u{i}"));
        admin.add_user(&user, "U", Role::Worker, &g).await.unwrap();
        let token = admin.add_device(&user, Some(&device)).await.unwrap().token;
        out.push(Dev {
            token,
            author: Author::new(&user, &device),
        });
    }
    admin.close().await;
    out
}

/// Registers each device's store with the relay (`POST /v1/me`). A relay that predates it answers
/// 404 or 405, which is fine for a before/after comparison: it checks no author.
async fn register_all(http: &reqwest::Client, base: &str, devices: &[Dev]) {
    for d in devices {
        let r = common::register(http, base, &d.token, &d.author).await;
        assert!(
            matches!(r.status().as_u16(), 200 | 404 | 405),
            "{}",
            r.status()
        );
    }
}

/// Pushes a body; `Err` unless the relay answered 200 and accepted every change.
async fn push_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<usize, String> {
    let r = http
        .post(format!("{base}/v1/changes"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("status {}", r.status()));
    }
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    let results = v["results"].as_array().ok_or("no results")?;
    match results.iter().find(|x| x["status"] != "accepted") {
        Some(refused) => Err(format!("refused: {refused}")),
        None => Ok(results.len()),
    }
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
    bases: &[&str],
    devices: &[Dev],
    window: Duration,
    round: usize,
    health_only: bool,
) -> (Lat, usize, f64) {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let n = devices.len();
    for (i, dev) in devices.iter().enumerate() {
        // Device i talks to relay i mod the number of relays.
        let base = bases[i % bases.len()].to_owned();
        let (http, tok) = (http.clone(), dev.token.clone());
        let body = serde_json::to_vec(&json!({"changes": changes_for(&dev.author, &format!("{:032x}", 10_000_000 * round + i), &format!("g{i}"), 20)})).unwrap();
        let delay = window.mul_f64(i as f64 / n as f64);
        set.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + delay)).await;
            let mut out = Vec::new();
            let mut errors = 0;
            let t = Instant::now();
            let ok = if health_only {
                match http.get(format!("{base}/v1/health")).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            } else {
                push_all(&http, &base, &tok, body).await.is_ok()
            };
            if !ok {
                errors += 1;
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
    c.execute_batch(include_str!("../migrations/sqlite/0009_entry_runs.sql"))
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
            let first = (bi * 1000 + 1) as i64;
            for (i, (record, bytes)) in chunk.iter().enumerate() {
                let hash: [u8; 32] =
                    sha2::Digest::finalize(sha2::Sha256::new_with_prefix(bytes)).into();
                ins.execute(rusqlite::params![
                    first + i as i64,
                    &hash[..],
                    record,
                    bytes
                ])
                .unwrap();
            }
            // The scope index as the relay writes it: one run per key for the transaction.
            let mut run = tx
                .prepare_cached("INSERT INTO entry_runs (key, last, first) VALUES (?1, ?2, ?3)")
                .unwrap();
            for k in keys {
                run.execute(rusqlite::params![k, first + chunk.len() as i64 - 1, first])
                    .unwrap();
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
    client
        .batch_execute(include_str!("../migrations/postgres/0009_entry_runs.sql"))
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
        // The scope index as the relay writes it: one run per key for the transaction.
        let lasts = vec![*seqs.last().unwrap(); keys.len()];
        let firsts = vec![seqs[0]; keys.len()];
        tx.execute(
            "INSERT INTO entry_runs (key, last, first)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])",
            &[&&keys[..], &lasts, &firsts],
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
    let devs = setup(&storage, devices).await;
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
        console: None,
    })
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()
        .unwrap();
    register_all(&http, &base, &devs).await;
    gridwork_server::prof::enable();
    gridwork_server::prof::reset();

    // 1. Ingest: pushes of 1,000 changes (100 records x 10 changes), 4 in flight.
    let mut bodies = Vec::new();
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
    for p in 0..40 {
        let mut changes = Vec::new();
        for r in 0..100 {
            changes.extend(changes_for(
                &devs[0].author,
                &format!("{:032x}", p * 1000 + r),
                "g0",
                10,
            ));
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
        let (http, base, tok) = (http.clone(), base.clone(), devs[0].token.clone());
        set.spawn(async move {
            for b in chunk {
                push_all(&http, &base, &tok, b).await.unwrap();
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
    let burst = devices_run(&http, &[base.as_str()], &devs, Duration::ZERO, 1, false).await;
    let burst_base = devices_run(&http, &[base.as_str()], &devs, Duration::ZERO, 2, true).await;
    let spread = devices_run(
        &http,
        &[base.as_str()],
        &devs,
        Duration::from_secs(5),
        3,
        false,
    )
    .await;
    let spread_base = devices_run(
        &http,
        &[base.as_str()],
        &devs,
        Duration::from_secs(5),
        4,
        true,
    )
    .await;

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
            .bearer_auth(&devs[0].token)
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

// ---- ingest on real relay processes, for before/after comparisons of relay builds ----

/// The relay builds to compare: `GRIDWORK_SERVER_BINS="label=path [args],label=path [args]"` (the
/// args, if any, follow every command of that build, e.g. `--insecure-no-encryption` for a build
/// that encrypts its store), else the relay built with this test.
fn relay_builds() -> Vec<(String, String)> {
    match std::env::var("GRIDWORK_SERVER_BINS") {
        Ok(v) => v
            .split(',')
            .map(|kv| {
                let (k, p) = kv.split_once('=').expect("label=path");
                (k.to_owned(), p.to_owned())
            })
            .collect(),
        Err(_) => vec![(
            "this build".into(),
            env!("CARGO_BIN_EXE_gridwork-server").to_owned(),
        )],
    }
}

/// Where a measured relay keeps its data: a directory of its own, or a PostgreSQL schema of its own.
enum RelayStore {
    Dir(tempfile::TempDir),
    Postgres(String),
}

impl RelayStore {
    async fn fresh() -> RelayStore {
        match std::env::var("GRIDWORK_BENCH_POSTGRES") {
            Ok(url) => RelayStore::Postgres(common::fresh_pg(&url).await),
            Err(_) => RelayStore::Dir(tempfile::tempdir().unwrap()),
        }
    }
}

/// `gridwork-server <subcommand> --data DIR <args> <the build's args>` (the database URL in the
/// environment instead of `--data` for PostgreSQL).
fn relay_command(
    bin: &str,
    subcommand: &str,
    store: &RelayStore,
    args: &[&str],
) -> std::process::Command {
    let mut parts = bin.split_whitespace();
    let mut cmd = std::process::Command::new(parts.next().expect("a path"));
    cmd.arg(subcommand);
    match store {
        RelayStore::Dir(dir) => {
            cmd.arg("--data").arg(dir.path());
        }
        RelayStore::Postgres(url) => {
            cmd.env("GRIDWORK_DATABASE_URL", url);
        }
    }
    cmd.args(args).args(parts).env("RUST_LOG", "warn");
    cmd
}

/// A relay process with its own data directory, set up with the binary's own admin commands (so any
/// build, older or newer, can be measured). Killed when dropped.
struct RelayProcess {
    child: std::process::Child,
    _store: RelayStore,
    base: String,
}

impl RelayProcess {
    fn admin(bin: &str, store: &RelayStore, args: &[&str]) -> String {
        let out = relay_command(bin, "admin", store, args).output().unwrap();
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A relay with d1 > s1 > c1 > g0..g{n-1} and one worker device per grid.
    async fn start(bin: &str, n: usize) -> (RelayProcess, Vec<Dev>) {
        let store = RelayStore::fresh().await;
        let admin = |args: &[&str]| Self::admin(bin, &store, args);
        admin(&["area", "add", "d1", "--level", "district", "--name", "D"]);
        for (id, parent, level) in [("s1", "d1", "street"), ("c1", "s1", "community")] {
            admin(&[
                "area", "add", id, "--parent", parent, "--level", level, "--name", id,
            ]);
        }
        let mut devs = Vec::new();
        for i in 0..n {
            let (g, user, device) = (format!("g{i}"), format!("u{i}"), format!("dev-u{i}"));
            admin(&[
                "area", "add", &g, "--parent", "c1", "--level", "grid", "--name", &g,
            ]);
            admin(&[
                "user", "add", &user, "--name", &user, "--role", "worker", "--area", &g,
            ]);
            let token = admin(&["device", "add", "--user", &user, "--id", &device]);
            devs.push(Dev {
                token,
                author: Author::new(&user, &device),
            });
        }
        (RelayProcess::serve(bin, store, &[]).await, devs)
    }

    /// `gridwork-server serve <args>` on a free loopback port, once it answers.
    async fn serve(bin: &str, store: RelayStore, args: &[&str]) -> RelayProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = relay_command(
            bin,
            "serve",
            &store,
            &[&["--listen", &listen], args].concat(),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/v1/health")).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "relay {bin} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RelayProcess {
            child,
            _store: store,
            base,
        }
    }

    /// Peak resident memory of the relay process (VmHWM), in MB.
    fn peak_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run of [`ingest_run`] measured.
struct IngestFigures {
    /// A: 40 pushes of 1,000 changes (100 new records x 10 changes), 4 in flight, changes/s.
    bulk: f64,
    /// B: 20 devices at once, each 25 pushes of 20 changes (a new record and 19 edits): per-push
    /// latency and the changes/s of the whole run.
    small: Lat,
    small_rate: f64,
    /// C: 1,000 edits, 10 per push, to 100 existing records that each hold 16 KiB of notes and 20
    /// earlier changes (the rule book reads the whole record after every change), changes/s.
    heavy: f64,
    peak_mb: f64,
}

/// Bodies of `pushes` pushes by `dev`, each of `records` new records in `area` with `per_record`
/// changes; `tag` keeps record ids apart.
fn bodies(
    dev: &Dev,
    area: &str,
    tag: usize,
    pushes: usize,
    records: usize,
    per_record: usize,
) -> Vec<Vec<u8>> {
    (0..pushes)
        .map(|p| {
            let changes: Vec<Value> = (0..records)
                .flat_map(|r| {
                    let id = format!("{:08x}{:024x}", tag, p * records + r);
                    changes_for(&dev.author, &id, area, per_record)
                })
                .collect();
            serde_json::to_vec(&json!({"changes": changes})).unwrap()
        })
        .collect()
}

/// Scenario C: a body that makes 100 records with notes and some history, and pushes of 10 edits
/// to them (each record's edits in order across the pushes).
fn heavy_bodies(dev: &Dev, area: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use automerge::transaction::Transactable;
    let mut setup = Vec::new();
    let mut pushes: Vec<Vec<Value>> = vec![Vec::new(); 100];
    for r in 0..100 {
        let id = format!("{:032x}", 0xc000_0000u64 + r as u64);
        let (mut doc, first) = dev.author.create(&id, |tx| {
            new_person(tx, area, "Heavy Record");
            let notes = common::layout_obj(tx, gridwork_protocol::doc::NOTES);
            tx.splice_text(&notes, 0, 0, &"lives alone, visited weekly. ".repeat(560))
                .unwrap();
        });
        setup.push(json!({"record": id, "bytes": B64.encode(first)}));
        for t in 0..20 {
            let tag = format!("visit-{t}");
            let b = dev.author.write(&mut doc, "update", |tx| {
                let tags = common::layout_obj(tx, gridwork_protocol::doc::TAGS);
                tx.put(&tags, tag.as_str(), true).unwrap();
            });
            setup.push(json!({"record": id, "bytes": B64.encode(b)}));
        }
        for i in 0..10 {
            let phone = format!("139{i:08}");
            let b = dev
                .author
                .write(&mut doc, "update", |tx| set_field(tx, "phone", &phone));
            // Push i*10 + r/10: the edits of ten records, each record's i-th edit.
            pushes[i * 10 + r / 10].push(json!({"record": id, "bytes": B64.encode(b)}));
        }
    }
    // 21 changes a record; pushes of 10 records stay under the limits of a push (1,000 changes,
    // 250,000 operations: each record's notes are ~16,800 operations).
    let setup = setup
        .chunks(10 * 21)
        .map(|c| serde_json::to_vec(&json!({ "changes": c })).unwrap())
        .collect();
    let pushes = pushes
        .into_iter()
        .map(|c| serde_json::to_vec(&json!({ "changes": c })).unwrap())
        .collect();
    (setup, pushes)
}

async fn ingest_run(bin: &str) -> IngestFigures {
    let (relay, devs) = RelayProcess::start(bin, 21).await;
    let base = relay.base.clone();
    let http = reqwest::Client::new();
    register_all(&http, &base, &devs).await;

    // A. Bulk ingest.
    let bulk_bodies = bodies(&devs[0], "g0", 1, 40, 100, 10);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for chunk in bulk_bodies.chunks(10) {
        let (chunk, http, base, tok) = (
            chunk.to_vec(),
            http.clone(),
            base.clone(),
            devs[0].token.clone(),
        );
        set.spawn(async move {
            for b in chunk {
                push_all(&http, &base, &tok, b).await.unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
    let bulk = 40_000.0 / started.elapsed().as_secs_f64();

    // B. Small pushes from 20 devices at once.
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, dev) in devs[1..].iter().enumerate() {
        let own = bodies(dev, &format!("g{}", i + 1), 2 + i, 25, 1, 20);
        let (http, base, tok) = (http.clone(), base.clone(), dev.token.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            for b in own {
                let t = Instant::now();
                push_all(&http, &base, &tok, b).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(l) = set.join_next().await {
        all.extend(l.unwrap());
    }
    let small_rate = (20 * 25 * 20) as f64 / started.elapsed().as_secs_f64();
    let small = lat(all);

    // C. Edits of records with some history.
    let (setup, pushes) = heavy_bodies(&devs[0], "g0");
    for b in setup {
        push_all(&http, &base, &devs[0].token, b).await.unwrap();
    }
    let started = Instant::now();
    for b in pushes {
        push_all(&http, &base, &devs[0].token, b).await.unwrap();
    }
    let heavy = 1_000.0 / started.elapsed().as_secs_f64();
    IngestFigures {
        bulk,
        small,
        small_rate,
        heavy,
        peak_mb: relay.peak_mb(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn ingest_real_relay() {
    let bins = relay_builds();
    let rounds: usize = std::env::var("GRIDWORK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "\n| relay | round | A bulk (changes/s) | B small pushes: p50 / p95 (ms), changes/s | C edits of records with history (changes/s) | relay VmHWM (MB) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut runs: Vec<(String, IngestFigures)> = Vec::new();
    for round in 1..=rounds {
        for (label, bin) in &bins {
            let f = ingest_run(bin).await;
            println!(
                "| {label} | {round} | {:.0} | {:.1} / {:.1}, {:.0} | {:.0} | {:.0} |",
                f.bulk, f.small.p50, f.small.p95, f.small_rate, f.heavy, f.peak_mb
            );
            runs.push((label.clone(), f));
        }
    }
    println!("\nMedians of {rounds} rounds:\n");
    println!("| relay | A bulk (changes/s) | B p50 / p95 (ms) | B changes/s | C (changes/s) | VmHWM (MB) |");
    println!("|---|---|---|---|---|---|");
    for (label, _) in &bins {
        let mine: Vec<&IngestFigures> = runs
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, f)| f)
            .collect();
        let m = |f: &dyn Fn(&IngestFigures) -> f64| median(mine.iter().map(|x| f(x)).collect());
        println!(
            "| {label} | {:.0} | {:.1} / {:.1} | {:.0} | {:.0} | {:.0} |",
            m(&|f| f.bulk),
            m(&|f| f.small.p50),
            m(&|f| f.small.p95),
            m(&|f| f.small_rate),
            m(&|f| f.heavy),
            m(&|f| f.peak_mb)
        );
    }
}

/// What the parts of the per-change checks cost, on one person record with ten changes (the unit of
/// scenario A): reading the record state as the rule book sees it (`read_state` = the shape check +
/// the record view), and applying changes one at a time (as the checks need) against in one batch.
///   cargo test --release -p gridwork-server --test perf -- --ignored check_costs --nocapture
#[test]
#[ignore]
fn check_costs() {
    use gridwork_protocol::doc;
    let author = Author::new("u0", "dev-u0");
    let (mut d, _) = author.create(&format!("{:032x}", 1), |tx| new_person(tx, "g0", "Name"));
    for i in 1..10 {
        let phone = format!("138{i:08}");
        author.write(&mut d, "update", |tx| set_field(tx, "phone", &phone));
    }
    let changes = d.get_changes(&[]);
    let per = |n: u32, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let n = 20_000;
    println!("\n| part | us |\n|---|---|");
    let rows: [(&str, f64); 6] = [
        (
            "read_state (shape check + record view + conflicts)",
            per(n, &mut || {
                doc::read_state("r", &d).unwrap();
            }),
        ),
        ("check_shape", per(n, &mut || doc::check_shape(&d).unwrap())),
        (
            "read_record",
            per(n, &mut || {
                doc::read_record("r", &d).unwrap();
            }),
        ),
        (
            "record_areas (what the relay read before)",
            per(n, &mut || {
                doc::record_areas(&d);
            }),
        ),
        (
            "apply 10 changes one at a time, per change",
            per(2_000, &mut || {
                let mut fresh = automerge::Automerge::new();
                for c in &changes {
                    fresh.apply_changes([c.clone()]).unwrap();
                }
            }) / 10.0,
        ),
        (
            "apply 10 changes in one batch, per change",
            per(2_000, &mut || {
                let mut fresh = automerge::Automerge::new();
                fresh.apply_changes(changes.clone()).unwrap();
            }) / 10.0,
        ),
    ];
    for (name, us) in rows {
        println!("| {name} | {us:.1} |");
    }
    // Judging's two ways of reaching each change's record state, for a run of nine phone edits on a
    // record with `history` earlier edits: applying the changes one at a time and refreshing the
    // state after each, or applying the run in one batch and reading the state at each change's heads
    // (a read at past heads walks the record's history: it must not cost more than it saves).
    println!("\n| history (earlier changes) | one at a time + state after each, us per change | the run in one batch + state at each change's heads | (the document's clone, in both) |\n|---|---|---|---|");
    for history in [0usize, 100, 1_000] {
        let (mut d, _) = author.create(&format!("{:032x}", 2), |tx| new_person(tx, "g0", "Name"));
        for i in 0..history {
            let phone = format!("137{i:08}");
            author.write(&mut d, "update", |tx| set_field(tx, "phone", &phone));
        }
        let start = d.clone();
        for i in 1..10 {
            let phone = format!("138{i:08}");
            author.write(&mut d, "update", |tx| set_field(tx, "phone", &phone));
        }
        let run = d.get_changes(&start.get_heads());
        let state0 = doc::DocState::read("r", &start).unwrap();
        let rounds = if history >= 1_000 { 100 } else { 1_000 };
        let one_by_one = per(rounds, &mut || {
            let mut fresh = start.clone();
            let mut state = state0.clone();
            for c in &run {
                fresh.apply_changes([c.clone()]).unwrap();
                state = state.after(&fresh, c).unwrap();
            }
        }) / 9.0;
        let batched = per(rounds, &mut || {
            let mut fresh = start.clone();
            fresh.apply_changes(run.clone()).unwrap();
            let mut state = state0.clone();
            for c in &run {
                let heads = [c.hash()];
                let then = gridwork_protocol::at_heads::AtHeads::new(&fresh, &heads);
                state = state.after(&then, c).unwrap();
            }
        }) / 9.0;
        let clone_only = per(rounds, &mut || {
            std::hint::black_box(start.clone());
        }) / 9.0;
        println!("| {history} | {one_by_one:.1} | {batched:.1} | {clone_only:.1} |");
    }
}

/// Hostile pushes against real relay processes, once per build (the builds of
/// `GRIDWORK_SERVER_BINS`, as for `ingest_real_relay`): a deflate bomb (256 MiB of zeros in a ~250 KB
/// compressed change chunk) and a change of a million list insertions (a few hundred bytes of
/// run-length encoding), each while another device pushes an honest change. Prints the time to the
/// answer, the honest push's latency and the relay's peak memory.
///   GRIDWORK_SERVER_BINS="before=...,after=..." cargo test --release -p gridwork-server --test perf \
///     -- --ignored hostile_real_relay --nocapture
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn hostile_real_relay() {
    use automerge::transaction::Transactable;
    let bins = relay_builds();
    // The bomb: a compressed change chunk (type 2) whose data inflates to 256 MiB of zeros.
    let zeros = vec![0u8; 256 << 20];
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &zeros).unwrap();
    let deflated = enc.finish().unwrap();
    drop(zeros);
    let mut bomb = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut n = deflated.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bomb.push(b);
            break;
        }
        bomb.push(b | 0x80);
    }
    bomb.extend_from_slice(&deflated);
    println!(
        "\n| relay | hostile push | answer | time to answer (s) | honest push meanwhile (s) | relay VmHWM after (MB) |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, bin) in &bins {
        let (relay, devs) = RelayProcess::start(bin, 2).await;
        let http = reqwest::Client::new();
        register_all(&http, &relay.base, &devs).await;
        // A million nulls inserted into a list, in one change of a new record in the device's grid.
        let record = format!("{:032x}", 0xb0b);
        let (_, million) = devs[0].author.create(&record, |tx| {
            new_person(tx, "g0", "List");
            let list = tx
                .put_object(automerge::ROOT, "l", automerge::ObjType::List)
                .unwrap();
            for i in 0..1_000_000 {
                tx.insert(&list, i, automerge::ScalarValue::Null).unwrap();
            }
        });
        for (what, bytes) in [("deflate bomb", bomb.clone()), ("1M-op change", million)] {
            let body = serde_json::to_vec(
                &json!({"changes": [{"record": record, "bytes": B64.encode(&bytes)}]}),
            )
            .unwrap();
            let honest = bodies(&devs[1], "g1", 0xface + bytes.len(), 1, 1, 5).remove(0);
            let started = Instant::now();
            let hostile = {
                let (http, base, tok) = (http.clone(), relay.base.clone(), devs[0].token.clone());
                tokio::spawn(async move {
                    let r = http
                        .post(format!("{base}/v1/changes"))
                        .bearer_auth(&tok)
                        .body(body)
                        .timeout(Duration::from_secs(300))
                        .send()
                        .await;
                    let answer = match r {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            let x = &v["results"][0];
                            format!("{} {}", x["status"], x["reason"])
                        }
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => format!("error {e}"),
                    };
                    (answer, started.elapsed())
                })
            };
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = Instant::now();
            let honest_ok = push_all(&http, &relay.base, &devs[1].token, honest).await;
            let honest_s = t.elapsed().as_secs_f64();
            let (answer, took) = hostile.await.unwrap();
            println!(
                "| {label} | {what} ({} bytes) | {answer} | {:.2} | {honest_s:.2}{} | {:.0} |",
                bytes.len(),
                took.as_secs_f64(),
                if honest_ok.is_ok() { "" } else { " (failed)" },
                relay.peak_mb()
            );
        }
    }
}

/// 1,000 devices starting at once (each pushes 20 changes, then pulls) against real relay processes:
/// one on its encrypted SQLite store, and, with GRIDWORK_TEST_POSTGRES_URL, one and two over one
/// PostgreSQL database (device i talks to relay i mod n), run alternately; baseline: the same devices
/// each GETting /v1/health twice, in the same run.
///   GRIDWORK_TEST_POSTGRES_URL=... cargo test --release -p gridwork-server --test perf -- --ignored \
///     burst_real_relays --nocapture
/// The relay builds are those of GRIDWORK_SERVER_BINS (their arguments are not used), run alternately
/// in each round, else the one built with this test.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn burst_real_relays() {
    let pg = std::env::var("GRIDWORK_TEST_POSTGRES_URL").ok();
    let builds: Vec<(String, String)> = relay_builds()
        .into_iter()
        .map(|(label, build)| (label, build.split_whitespace().next().unwrap().to_owned()))
        .collect();
    let rounds: usize = std::env::var("GRIDWORK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut setups = vec![("SQLite", 1)];
    if pg.is_some() {
        setups.extend([("PostgreSQL", 1), ("PostgreSQL", 2)]);
    }
    println!("\n| relay | store | relays | round | 1,000 devices at t=0: push 20 + pull, per request | baseline: GET /v1/health x2 |");
    println!("|---|---|---|---|---|---|");
    let mut procs_started = 0;
    for round in 1..=rounds {
        for ((label, bin), &(backend, relays)) in builds
            .iter()
            .flat_map(|b| setups.iter().map(move |s| (b, s)))
        {
            let mut procs = Vec::new();
            let devs = match (backend, &pg) {
                ("PostgreSQL", Some(url)) => {
                    let db = common::fresh_pg(url).await;
                    let devs = setup(&StorageConfig::Postgres { url: db.clone() }, 1000).await;
                    for _ in 0..relays {
                        let store = RelayStore::Postgres(db.clone());
                        procs.push(RelayProcess::serve(bin, store, &[]).await);
                    }
                    devs
                }
                _ => {
                    let key = gridwork_server::RelayKey::generate();
                    let key_file = keys.path().join(format!("relay-{}.key", procs_started));
                    procs_started += 1;
                    key.write_new_file(&key_file).unwrap();
                    let data = tempfile::tempdir().unwrap();
                    let devs = setup(&StorageConfig::sqlite(data.path(), key), 1000).await;
                    let key_file = key_file.to_str().unwrap().to_owned();
                    let args = ["--key-file", key_file.as_str()];
                    procs.push(RelayProcess::serve(bin, RelayStore::Dir(data), &args).await);
                    devs
                }
            };
            let bases: Vec<&str> = procs.iter().map(|p| p.base.as_str()).collect();
            for (i, d) in devs.iter().enumerate() {
                let r = common::register(&http, bases[i % bases.len()], &d.token, &d.author).await;
                assert_eq!(r.status(), 200);
            }
            let burst = devices_run(&http, &bases, &devs, Duration::ZERO, 1, false).await;
            let health = devices_run(&http, &bases, &devs, Duration::ZERO, 2, true).await;
            println!(
                "| {label} | {backend} | {relays} | {round} | {} | {} |",
                fmt_lat(&burst.0, burst.1, burst.2),
                fmt_lat(&health.0, health.1, health.2)
            );
            assert_eq!(burst.1, 0, "requests failed");
        }
    }
}

/// Judging alone, without HTTP or a database: batches of 4,000 changes (400 new people of ten
/// changes each, four pushes) planned by the engine on one thread and on `Limits::plan_threads`,
/// alternately. Tells what judging on several threads gains where nothing else wants the cores
/// (a relay draining a backlog; a relay on a machine of its own).
///
/// `cargo test --release -p gridwork-server --test perf -- --ignored plan_threads --nocapture`
#[test]
#[ignore]
fn plan_threads() {
    use gridwork_server::engine::{AreaMap, Decoder, Engine, Incoming, PushJob};
    let author = Author::new("u0", "dev-u0");
    let actor = gridwork_protocol::rules::Actor {
        user: "u0".into(),
        device: "dev-u0".into(),
        role: Role::Worker,
        area_path: "d1/s1/c1/g0/".into(),
    };
    let bound = author.actor.to_hex_string();
    let limits = Limits::default();
    let areas = AreaMap::new(
        1,
        [
            ("d1", "d1/"),
            ("s1", "d1/s1/"),
            ("c1", "d1/s1/c1/"),
            ("g0", "d1/s1/c1/g0/"),
        ]
        .into_iter()
        .map(|(a, p)| (a.to_owned(), p.to_owned()))
        .collect(),
        Vec::new(),
    );
    let rounds: usize = std::env::var("GRIDWORK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let batch = |round: usize| -> Vec<PushJob> {
        (0..4)
            .map(|p| {
                let mut decoder = Decoder::new(&actor, Some(&bound), &limits);
                let changes = (0..100)
                    .flat_map(|r| {
                        changes_for(
                            &author,
                            &format!("{:032x}", (round * 4 + p) * 1000 + r),
                            "g0",
                            10,
                        )
                    })
                    .map(|c| {
                        let bytes = B64.decode(c["bytes"].as_str().unwrap()).unwrap();
                        decoder.decode(c["record"].as_str().unwrap(), Some(&bytes))
                    })
                    .collect::<Vec<Incoming>>();
                PushJob {
                    device_id: "dev-u0".into(),
                    actor: actor.clone(),
                    changes,
                }
            })
            .collect()
    };
    let threads = [1, limits.plan_threads.max(2)];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); threads.len()];
    println!("\n| round | threads | 4,000 changes judged (ms) | changes/s |\n|---|---|---|---|");
    for round in 0..rounds {
        for (i, &n) in threads.iter().enumerate() {
            let jobs = batch(round * threads.len() + i);
            let mut engine = Engine::new(&Limits {
                plan_threads: n,
                ..Limits::default()
            });
            engine.areas = areas.clone();
            let started = Instant::now();
            let plan = engine.plan(&jobs, &Default::default(), Default::default());
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(plan.entries.len(), 4_000, "every change accepted");
            times[i].push(secs);
            println!(
                "| {} | {n} | {:.1} | {:.0} |",
                round + 1,
                secs * 1e3,
                4_000.0 / secs
            );
        }
    }
    for (i, &n) in threads.iter().enumerate() {
        let m = median(times[i].clone());
        println!(
            "median, {n} thread(s): {:.1} ms = {:.0} changes/s",
            m * 1e3,
            4_000.0 / m
        );
    }
}
