//! Upgrading the relay from the first released schema (version 2: migrations 0001 + 0002), on both
//! backends. A version-2 database is built by hand from a frozen copy of that schema
//! (`tests/fixtures/v2-*.sql`) and filled with rows as that relay wrote them: areas, users, devices (one
//! revoked), log entries with their scope keys, records with theirs, a complete attachment (one row
//! per attachment, as version 2 merged them) and a partial one. The current relay then opens it (the
//! SQLite file after `admin encrypt`, the realistic path: version 2 did not encrypt) and must lose
//! nothing: tokens still authenticate, pulls return the old entries byte for byte, the snapshot
//! returns the records, the attachment downloads; the partial upload, which belonged to no device, is
//! dropped. The upgraded schema must equal a freshly created one.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gridwork_protocol::scope::{join_paths, scope_keys};
use gridwork_server::{start, Admin, AreaLevel, RelayKey, ServerConfig, StorageConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;

const V2_SQLITE: &str = include_str!("fixtures/v2-sqlite.sql");
const V2_POSTGRES: &str = include_str!("fixtures/v2-postgres.sql");

/// A column value as version 2 stored it.
#[derive(Debug, Clone)]
enum V {
    Text(String),
    Int(i64),
    /// SMALLINT on PostgreSQL (`changes.kind`).
    Small(i16),
    Bool(bool),
    Blob(Vec<u8>),
    /// NULLs are typed (PostgreSQL checks parameter types).
    NullText,
    NullInt,
    NullBlob,
}

fn t(s: &str) -> V {
    V::Text(s.to_owned())
}

/// One row to insert.
struct Row {
    table: &'static str,
    columns: &'static [&'static str],
    values: Vec<V>,
}

/// Log entries, records and a token the checks compare against.
struct V2Data {
    rows: Vec<Row>,
    tokens: BTreeMap<&'static str, String>,
    /// (seq, record, bytes) of every log entry.
    entries: Vec<(i64, String, Vec<u8>)>,
    /// record -> saved document.
    docs: BTreeMap<String, Vec<u8>>,
    attachment: (String, Vec<u8>),
    partial: String,
    head: i64,
}

fn token(n: u8) -> (String, Vec<u8>) {
    let token = format!("gw1_{}", hex::encode([n; 32]));
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    (token, hash)
}

fn path_of(area: &str) -> &'static str {
    match area {
        "g1" => "d1/s1/c1/g1/",
        "g2" => "d1/s1/c1/g2/",
        other => panic!("no area {other}"),
    }
}

/// The data a version-2 relay would hold after a few pushes.
fn v2_data() -> V2Data {
    let mut rows = Vec::new();
    let mut row = |table, columns, values| {
        rows.push(Row {
            table,
            columns,
            values,
        })
    };
    const AREA: &[&str] = &["id", "parent", "level", "name", "path"];
    for (id, parent, level, path) in [
        ("d1", None, AreaLevel::District, "d1/"),
        ("s1", Some("d1"), AreaLevel::Street, "d1/s1/"),
        ("c1", Some("s1"), AreaLevel::Community, "d1/s1/c1/"),
        ("g1", Some("c1"), AreaLevel::Grid, "d1/s1/c1/g1/"),
        ("g2", Some("c1"), AreaLevel::Grid, "d1/s1/c1/g2/"),
    ] {
        let parent = parent.map(t).unwrap_or(V::NullText);
        row(
            "areas",
            AREA,
            vec![
                t(id),
                parent,
                V::Int(level.rank()),
                t(&format!("Area {id}")),
                t(path),
            ],
        );
    }
    for (id, role, area) in [
        ("u1", "worker", "g1"),
        ("sup", "supervisor", "c1"),
        ("op", "operator", "d1"),
        ("gone", "worker", "g2"),
    ] {
        row(
            "users",
            &["id", "name", "role", "area"],
            vec![t(id), t(&format!("User {id}")), t(role), t(area)],
        );
    }
    let mut tokens = BTreeMap::new();
    const DEVICE: &[&str] = &[
        "id",
        "user_id",
        "token_hash",
        "created_at",
        "revoked_at",
        "last_sync_at",
    ];
    for (n, (user, revoked)) in [("u1", false), ("sup", false), ("op", false), ("gone", true)]
        .into_iter()
        .enumerate()
    {
        let (tok, hash) = token(n as u8 + 1);
        let revoked_at = if revoked {
            V::Int(1_700_000_500)
        } else {
            V::NullInt
        };
        row(
            "devices",
            DEVICE,
            vec![
                t(&format!("dev-{user}")),
                t(user),
                V::Blob(hash),
                V::Int(1_700_000_000),
                revoked_at,
                V::Int(1_700_000_100),
            ],
        );
        tokens.insert(user, tok);
    }
    // Records and their log: r1 created then edited by u1 in g1, r2 created by sup in g2.
    let mut entries = Vec::new();
    let mut docs = BTreeMap::new();
    let mut seq = 0;
    for (record, area, device, edits) in [
        (
            format!("{:032x}", 1),
            "g1",
            "dev-u1",
            &["Ann", "Ann Lee"][..],
        ),
        (format!("{:032x}", 2), "g2", "dev-sup", &["Bo"][..]),
    ] {
        let mut doc = Automerge::new();
        let paths = vec![path_of(area).to_owned()];
        for (i, name) in edits.iter().enumerate() {
            let mut tx = doc.transaction();
            if i == 0 {
                tx.put(ROOT, "kind", "person").unwrap();
                tx.put(ROOT, "area", area).unwrap();
            }
            tx.put(ROOT, "name", *name).unwrap();
            tx.commit();
            let change = doc.get_last_local_change().unwrap().clone();
            seq += 1;
            row(
                "changes",
                &[
                    "seq",
                    "hash",
                    "record",
                    "bytes",
                    "kind",
                    "before_paths",
                    "heads",
                    "device",
                ],
                vec![
                    V::Int(seq),
                    V::Blob(change.hash().0.to_vec()),
                    t(&record),
                    V::Blob(change.raw_bytes().to_vec()),
                    V::Small(0),
                    V::NullText,
                    V::NullBlob,
                    t(device),
                ],
            );
            for k in scope_keys(&paths) {
                row("entry_areas", &["key", "seq"], vec![t(&k), V::Int(seq)]);
            }
            entries.push((seq, record.clone(), change.raw_bytes().to_vec()));
        }
        let saved = doc.save();
        row(
            "records",
            &["id", "doc", "version", "paths"],
            vec![
                t(&record),
                V::Blob(saved.clone()),
                V::Int(seq),
                t(&join_paths(&paths)),
            ],
        );
        for k in scope_keys(&paths) {
            row("record_scope", &["key", "record"], vec![t(&k), t(&record)]);
        }
        docs.insert(record, saved);
    }
    let r1 = format!("{:032x}", 1);
    // A complete attachment above one storage piece, in one row as version 2 merged it, and a partial
    // upload in two chunks; both linked to r1.
    let content: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    let sha = Sha256::digest(&content).to_vec();
    const ATT: &[&str] = &["sha256", "total", "received", "complete"];
    const CHUNK: &[&str] = &["sha256", "offset", "data"];
    const LINK: &[&str] = &["sha256", "record"];
    row(
        "attachments",
        ATT,
        vec![
            V::Blob(sha.clone()),
            V::Int(content.len() as i64),
            V::Int(content.len() as i64),
            V::Bool(true),
        ],
    );
    row(
        "attachment_chunks",
        CHUNK,
        vec![V::Blob(sha.clone()), V::Int(0), V::Blob(content.clone())],
    );
    row(
        "attachment_records",
        LINK,
        vec![V::Blob(sha.clone()), t(&r1)],
    );
    let partial = Sha256::digest(b"a partial upload").to_vec();
    row(
        "attachments",
        ATT,
        vec![
            V::Blob(partial.clone()),
            V::Int(100),
            V::Int(20),
            V::Bool(false),
        ],
    );
    for off in [0, 10] {
        row(
            "attachment_chunks",
            CHUNK,
            vec![V::Blob(partial.clone()), V::Int(off), V::Blob(vec![1; 10])],
        );
    }
    row(
        "attachment_records",
        LINK,
        vec![V::Blob(partial.clone()), t(&r1)],
    );
    V2Data {
        rows,
        tokens,
        entries,
        docs,
        attachment: (hex::encode(&sha), content),
        partial: hex::encode(&partial),
        head: seq,
    }
}

fn insert_sql(r: &Row, placeholder: impl Fn(usize) -> String) -> String {
    let cols: Vec<String> = r.columns.iter().map(|c| format!("\"{c}\"")).collect();
    let marks: Vec<String> = (1..=r.columns.len()).map(placeholder).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        r.table,
        cols.join(", "),
        marks.join(", ")
    )
}

// ---- building version-2 databases ----

fn build_v2_sqlite(dir: &std::path::Path, data: &V2Data) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join("gridwork.db")).unwrap();
    // Version 2 ran in WAL mode, and so does this copy: the conversion must fold the WAL in.
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(V2_SQLITE).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    conn.execute("UPDATE meta SET value = 5 WHERE key = 'areas_version'", [])
        .unwrap();
    for r in &data.rows {
        let values: Vec<rusqlite::types::Value> = r
            .values
            .iter()
            .map(|v| match v {
                V::Text(s) => s.clone().into(),
                V::Int(i) => (*i).into(),
                V::Small(i) => i64::from(*i).into(),
                V::Bool(b) => i64::from(*b).into(),
                V::Blob(b) => b.clone().into(),
                V::NullText | V::NullInt | V::NullBlob => rusqlite::types::Value::Null,
            })
            .collect();
        conn.execute(
            &insert_sql(r, |i| format!("?{i}")),
            rusqlite::params_from_iter(values),
        )
        .unwrap();
    }
}

async fn build_v2_postgres(url: &str, schema: &str, data: &V2Data) {
    let c = common::pg_client(url).await;
    c.batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    c.batch_execute(V2_POSTGRES).await.unwrap();
    // What the version-2 relay's migrate() kept.
    c.batch_execute(
        "CREATE TABLE schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version (version) VALUES (2);
         UPDATE meta SET value = 5 WHERE key = 'areas_version';",
    )
    .await
    .unwrap();
    c.execute("UPDATE log_head SET seq = $1 WHERE id = 1", &[&data.head])
        .await
        .unwrap();
    for r in &data.rows {
        let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync>> = r
            .values
            .iter()
            .map(|v| -> Box<dyn tokio_postgres::types::ToSql + Sync> {
                match v {
                    V::Text(s) => Box::new(s.clone()),
                    V::Int(i) => Box::new(*i),
                    V::Small(i) => Box::new(*i),
                    V::Bool(b) => Box::new(*b),
                    V::Blob(b) => Box::new(b.clone()),
                    V::NullText => Box::new(None::<String>),
                    V::NullInt => Box::new(None::<i64>),
                    V::NullBlob => Box::new(None::<Vec<u8>>),
                }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|b| b.as_ref()).collect();
        c.execute(&insert_sql(r, |i| format!("${i}")), &refs)
            .await
            .unwrap();
    }
}

// ---- checks ----

/// Everything version 2 held is served by the current relay.
async fn check_nothing_lost(storage: &StorageConfig, data: &V2Data) {
    let server = start(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        storage.clone(),
    ))
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let get = |who: &'static str, path: String| {
        http.get(format!("{base}{path}"))
            .bearer_auth(&data.tokens[who])
            .send()
    };
    // Tokens: as they were.
    for who in ["u1", "sup", "op"] {
        let r = get(who, "/v1/me".into()).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{who}");
        let me: Value = r.json().await.unwrap();
        assert_eq!(me["user_id"], who);
    }
    let me: Value = get("u1", "/v1/me".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["area_path"], "d1/s1/c1/g1/");
    let r = get("gone", "/v1/me".into()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "revoked");
    // The log, byte for byte: the operator sees every entry (none is its own).
    let pulled: Value = get("op", "/v1/changes?after=0&limit=100".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<(i64, String, Vec<u8>)> = pulled["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["seq"].as_i64().unwrap(),
                i["record"].as_str().unwrap().to_owned(),
                B64.decode(i["bytes"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(got, data.entries);
    assert_eq!(pulled["cursor"], data.head);
    // Scope keys survived: the supervisor of c1 gets u1's entries (its own are left out, as before).
    let sup: Value = get("sup", "/v1/changes?after=0".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sup_seqs: Vec<i64> = sup["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(sup_seqs, [1, 2]);
    // The records.
    let snap: Value = get("op", "/v1/snapshot?limit=100".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records: BTreeMap<String, Vec<u8>> = snap["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["record"].as_str().unwrap().to_owned(),
                B64.decode(r["bytes"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(records, data.docs);
    let worker: Value = get("u1", "/v1/snapshot".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(worker["records"].as_array().unwrap().len(), 1);
    // The complete attachment downloads (read in pieces from its one legacy row); the partial
    // upload, which belonged to no device, is gone.
    let (sha, content) = &data.attachment;
    let a = get("u1", format!("/v1/attachments/{sha}")).await.unwrap();
    assert_eq!(a.status().as_u16(), 200);
    assert!(a.bytes().await.unwrap() == content[..]);
    let head = http
        .head(format!("{base}/v1/attachments/{}", data.partial))
        .bearer_auth(&data.tokens["u1"])
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 404);
    server.shutdown().await;
    // The areas and their version came through too.
    let admin = Admin::open(storage).await.unwrap();
    let areas = admin.list_areas().await.unwrap();
    assert_eq!(areas.len(), 5);
    assert!(areas
        .iter()
        .any(|a| a.id == "g2" && a.path == "d1/s1/c1/g2/"));
    admin.close().await;
}

/// The schema of an SQLite store: every object's definition, and the version.
fn sqlite_schema(dir: &std::path::Path, key: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("gridwork.db")).unwrap();
    // Both databases compared are made (or converted) by this relay: pages authenticated with
    // HMAC-SHA256.
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{key}'\"; PRAGMA cipher_hmac_algorithm = HMAC_SHA256;"
    ))
    .unwrap();
    let mut st = conn
        .prepare(
            "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name",
        )
        .unwrap();
    let mut out: Vec<String> = st
        .query_map([], |r| {
            Ok(format!(
                "{} {} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    out.push(format!("user_version {v}"));
    out
}

/// The schema of a PostgreSQL schema: columns, indexes, constraints, the version.
async fn pg_schema(url: &str, schema: &str) -> Vec<String> {
    let c = common::pg_client(url).await;
    let mut out = Vec::new();
    for r in c
        .query(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
                    COALESCE(column_default, ''), COALESCE(collation_name, '')
             FROM information_schema.columns WHERE table_schema = $1
             ORDER BY table_name, ordinal_position",
            &[&schema],
        )
        .await
        .unwrap()
    {
        out.push(format!(
            "column {}.{} #{} {} null={} default={} collate={}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i32>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, String>(5),
            r.get::<_, String>(6)
        ));
    }
    for r in c
        .query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
            &[&schema],
        )
        .await
        .unwrap()
    {
        let def: String = r.get(1);
        out.push(format!(
            "index {} {}",
            r.get::<_, String>(0),
            def.replace(schema, "S")
        ));
    }
    for r in c
        .query(
            "SELECT con.conname, pg_get_constraintdef(con.oid)
             FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
             WHERE n.nspname = $1 ORDER BY con.conname",
            &[&schema],
        )
        .await
        .unwrap()
    {
        let def: String = r.get(1);
        out.push(format!(
            "constraint {} {}",
            r.get::<_, String>(0),
            def.replace(schema, "S")
        ));
    }
    let v: i64 = c
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .unwrap()
        .get(0);
    out.push(format!("schema_version {v}"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_from_version_2() {
    let tmp = tempfile::tempdir().unwrap();
    let data = v2_data();
    let old = tmp.path().join("v2");
    build_v2_sqlite(&old, &data);
    let key_hex = hex::encode(rand_key());
    let key = RelayKey::from_hex(&key_hex).unwrap();
    // Version 2 did not encrypt: the operator converts the store once, then upgrades by starting the
    // relay with the key.
    assert_eq!(Admin::encrypt_sqlite(&old, &key).unwrap(), 2);
    let upgraded = StorageConfig::sqlite(&old, key.clone());
    check_nothing_lost(&upgraded, &data).await;
    let fresh = tmp.path().join("fresh");
    Admin::open(&StorageConfig::sqlite(&fresh, key))
        .await
        .unwrap()
        .close()
        .await;
    let (a, b) = (
        sqlite_schema(&old, &key_hex),
        sqlite_schema(&fresh, &key_hex),
    );
    assert!(a.iter().any(|l| l.contains("upload_sessions")));
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_from_version_2() {
    let Some(url) = common::pg_url() else {
        eprintln!("skipped: set GRIDWORK_TEST_POSTGRES_URL to run the PostgreSQL suite");
        return;
    };
    let data = v2_data();
    let old = common::fresh_schema(&url).await;
    build_v2_postgres(&url, &old, &data).await;
    let upgraded = StorageConfig::Postgres {
        url: common::with_schema(&url, &old),
    };
    check_nothing_lost(&upgraded, &data).await;
    let fresh = common::fresh_schema(&url).await;
    Admin::open(&StorageConfig::Postgres {
        url: common::with_schema(&url, &fresh),
    })
    .await
    .unwrap()
    .close()
    .await;
    let (a, b) = (pg_schema(&url, &old).await, pg_schema(&url, &fresh).await);
    assert!(a.iter().any(|l| l.contains("upload_sessions")));
    assert_eq!(a, b);
}

fn rand_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
    k
}
