//! Conformance suite of the relay over HTTP on loopback, run against every backend: SQLite always,
//! PostgreSQL when GRIDWORK_TEST_POSTGRES_URL is set (each test gets its own schema).

use std::collections::HashMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gridwork_server::{
    start, Admin, AreaLevel, Limits, RelayKey, Role, RunningServer, ServerConfig, StorageConfig,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;
use common::{fresh_pg, pg_url};

#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

struct Env {
    server: Option<RunningServer>,
    base: String,
    http: reqwest::Client,
    storage: StorageConfig,
    limits: Limits,
    tokens: HashMap<&'static str, String>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    async fn new(backend: Backend) -> Env {
        Self::with_limits(backend, Limits::default()).await
    }

    async fn with_limits(backend: Backend, limits: Limits) -> Env {
        let (storage, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (
                    StorageConfig::sqlite(dir.path(), RelayKey::generate()),
                    Some(dir),
                )
            }
            Backend::Postgres(url) => (
                StorageConfig::Postgres {
                    url: fresh_pg(&url).await,
                },
                None,
            ),
        };
        let admin = Admin::open(&storage).await.unwrap();
        for (id, parent, level, name) in [
            ("d1", None, AreaLevel::District, "District 1"),
            ("s1", Some("d1"), AreaLevel::Street, "Street 1"),
            ("c1", Some("s1"), AreaLevel::Community, "Community 1"),
            ("g1", Some("c1"), AreaLevel::Grid, "Grid 1"),
            ("g2", Some("c1"), AreaLevel::Grid, "Grid 2"),
            ("s2", Some("d1"), AreaLevel::Street, "Street 2"),
            ("c2", Some("s2"), AreaLevel::Community, "Community 2"),
            ("g3", Some("c2"), AreaLevel::Grid, "Grid 3"),
        ] {
            admin.add_area(id, parent, level, name).await.unwrap();
        }
        let mut tokens = HashMap::new();
        for (user, role, area) in [
            ("wa", Role::Worker, "g1"),
            ("wb", Role::Worker, "g2"),
            ("sup", Role::Supervisor, "c1"),
            ("sup2", Role::Supervisor, "s2"),
            ("op", Role::Operator, "d1"),
            ("rv", Role::Worker, "g1"),
        ] {
            admin
                .add_user(user, &format!("User {user}"), role, area)
                .await
                .unwrap();
            let d = admin
                .add_device(user, Some(&format!("dev-{user}")))
                .await
                .unwrap();
            tokens.insert(user, d.token);
        }
        admin.revoke_device("dev-rv").await.unwrap();
        admin.close().await;
        let mut env = Env {
            server: None,
            base: String::new(),
            http: reqwest::Client::new(),
            storage,
            limits,
            tokens,
            _dir: dir,
        };
        env.restart().await;
        env
    }

    /// (Re)starts the relay on the same storage.
    async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            storage: self.storage.clone(),
            limits: self.limits.clone(),
        };
        let s = start(cfg).await.unwrap();
        self.base = format!("http://{}", s.local_addr());
        self.server = Some(s);
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    fn url(&self, p: &str) -> String {
        format!("{}{}", self.base, p)
    }

    async fn get(&self, who: &str, p: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(p))
            .bearer_auth(&self.tokens[who])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn push(&self, who: &str, changes: &[(&str, Vec<u8>)]) -> Vec<Value> {
        let body = json!({"changes": changes.iter().map(|(r, b)| json!({"record": r, "bytes": B64.encode(b)})).collect::<Vec<_>>()});
        let r = self
            .http
            .post(self.url("/v1/changes"))
            .bearer_auth(&self.tokens[who])
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        v["results"].as_array().unwrap().clone()
    }

    /// Pulls everything visible to `who` after `after`, page by page.
    async fn pull_all(&self, who: &str, after: i64, limit: usize) -> (Vec<Value>, i64) {
        let mut cursor = after;
        let mut items = Vec::new();
        loop {
            let (s, v) = self
                .get(who, &format!("/v1/changes?after={cursor}&limit={limit}"))
                .await;
            assert_eq!(s, 200, "{v}");
            items.extend(v["items"].as_array().unwrap().iter().cloned());
            let c = v["cursor"].as_i64().unwrap();
            assert!(c >= cursor);
            cursor = c;
            if !v["more"].as_bool().unwrap() {
                break;
            }
        }
        (items, cursor)
    }
}

fn rid(n: u64) -> String {
    format!("{:032x}", n)
}

/// A new record document and the bytes of its first change.
fn create(area: &str, name: &str) -> (Automerge, Vec<u8>) {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "kind", "person").unwrap();
    tx.put(ROOT, "area", area).unwrap();
    tx.put(ROOT, "name", name).unwrap();
    tx.commit();
    let bytes = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    (doc, bytes)
}

fn edit(doc: &mut Automerge, key: &str, value: &str) -> Vec<u8> {
    let mut tx = doc.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
    doc.get_last_local_change().unwrap().raw_bytes().to_vec()
}

fn apply_items(items: &[Value], record: &str) -> Automerge {
    let mut doc = Automerge::new();
    for i in items.iter().filter(|i| i["record"] == record) {
        let b = B64.decode(i["bytes"].as_str().unwrap()).unwrap();
        doc.load_incremental(&b).unwrap();
    }
    doc
}

fn get_str(doc: &Automerge, key: &str) -> Option<String> {
    doc.get(ROOT, key)
        .unwrap()
        .and_then(|(v, _)| v.as_str().map(str::to_owned))
}

// ---- scenarios ----

async fn push_pull_round_trip(b: Backend) {
    let env = Env::new(b).await;
    let r = rid(1);
    let (mut doc, c1) = create("g1", "Ann");
    let c2 = edit(&mut doc, "phone", "123");
    let res = env.push("wa", &[(&r, c1.clone()), (&r, c2.clone())]).await;
    assert_eq!(res.len(), 2);
    for x in &res {
        assert_eq!(x["status"], "accepted", "{x}");
    }
    let s1 = res[0]["seq"].as_i64().unwrap();
    let s2 = res[1]["seq"].as_i64().unwrap();
    assert!(s2 > s1);
    assert_eq!(res[0]["hash"], doc.get_changes(&[])[0].hash().to_string());

    // The pusher does not get its own changes back, but its cursor moves past them.
    let (items, cursor) = env.pull_all("wa", 0, 1000).await;
    assert!(items.is_empty(), "no echo of the pusher's own changes");
    assert_eq!(cursor, s2);
    for who in ["sup", "op"] {
        let (items, cursor) = env.pull_all(who, 0, 1000).await;
        assert_eq!(items.len(), 2, "{who} sees both");
        assert_eq!(cursor, s2);
        let d = apply_items(&items, &r);
        assert_eq!(get_str(&d, "phone").as_deref(), Some("123"));
        assert_eq!(d.get_heads(), doc.get_heads());
    }
    // Other grid and other street see nothing, but their cursor still advances past the entries.
    for who in ["wb", "sup2"] {
        let (items, cursor) = env.pull_all(who, 0, 1000).await;
        assert!(items.is_empty(), "{who} must not see g1");
        assert_eq!(cursor, s2);
    }
    // Paging: limit 1 gives one item per page with more=true first.
    let (s, v) = env.get("sup", "/v1/changes?after=0&limit=1").await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["more"], true);
    assert_eq!(v["cursor"].as_i64().unwrap(), s1);
    // /v1/me and /v1/areas
    let (s, me) = env.get("wa", "/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["area_path"], "d1/s1/c1/g1/");
    assert_eq!(me["role"], "worker");
    let (_, areas) = env.get("wa", "/v1/areas").await;
    let ids: Vec<&str> = areas["areas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1", "s1", "c1", "g1"]);
    let (_, areas) = env.get("sup", "/v1/areas").await;
    assert_eq!(areas["areas"].as_array().unwrap().len(), 5);
    env.stop().await;
}

async fn idempotent_repush(b: Backend) {
    let env = Env::new(b).await;
    let r = rid(2);
    let (_doc, c1) = create("g1", "Bo");
    let a = env.push("wa", &[(&r, c1.clone())]).await;
    let again = env.push("wa", &[(&r, c1.clone()), (&r, c1.clone())]).await;
    assert_eq!(again[0]["status"], "accepted");
    assert_eq!(again[0]["seq"], a[0]["seq"]);
    assert_eq!(again[1]["seq"], a[0]["seq"]);
    let (items, _) = env.pull_all("sup", 0, 100).await;
    assert_eq!(items.len(), 1);
    env.stop().await;
}

async fn malformed_rejected_alone(b: Backend) {
    let env = Env::new(b).await;
    let (_d, good) = create("g1", "Cy");
    let (_d2, good2) = create("g1", "Di");
    let body = json!({"changes": [
        {"record": rid(3), "bytes": B64.encode(&good)},
        {"record": rid(4), "bytes": "!!!not base64!!!"},
        {"record": rid(5), "bytes": B64.encode(b"definitely not an automerge change")},
        {"record": "NOT-A-RECORD-ID", "bytes": B64.encode(&good2)},
        {"record": rid(6), "bytes": B64.encode(&good2)},
    ]});
    let r = env
        .http
        .post(env.url("/v1/changes"))
        .bearer_auth(&env.tokens["wa"])
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let res = v["results"].as_array().unwrap();
    let st: Vec<(&str, &str)> = res
        .iter()
        .map(|x| {
            (
                x["status"].as_str().unwrap(),
                x["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        st,
        [
            ("accepted", ""),
            ("rejected", "malformed"),
            ("rejected", "malformed"),
            ("rejected", "bad_record"),
            ("accepted", "")
        ]
    );
    let (items, _) = env.pull_all("sup", 0, 100).await;
    assert_eq!(items.len(), 2);
    env.stop().await;
}

async fn out_of_scope_push_and_pull(b: Backend) {
    let env = Env::new(b).await;
    let ra = rid(10);
    let (mut doc, c1) = create("g1", "Eve");
    assert_eq!(env.push("wa", &[(&ra, c1)]).await[0]["status"], "accepted");
    let mut side = doc.fork();
    // Worker of g2 edits a g1 record: refused.
    let c2 = edit(&mut doc, "phone", "999");
    let res = env.push("wb", &[(&ra, c2.clone())]).await;
    assert_eq!(res[0]["status"], "rejected");
    assert_eq!(res[0]["reason"], "out_of_scope");
    // Worker of g2 creates a record in g1: refused. Worker of g1 moves its record to g3: refused.
    let (_d, other) = create("g1", "Fay");
    assert_eq!(
        env.push("wb", &[(&rid(11), other)]).await[0]["reason"],
        "out_of_scope"
    );
    let mv = edit(&mut side, "area", "g3");
    assert_eq!(
        env.push("wa", &[(&ra, mv)]).await[0]["reason"],
        "out_of_scope"
    );
    // The rejected edit did not reach the relay's document: the owner can still push it.
    assert_eq!(env.push("wa", &[(&ra, c2)]).await[0]["status"], "accepted");
    // Supervisor of c1 writes anywhere in its subtree; supervisor of s2 cannot.
    let (_d, sc) = create("g2", "Gus");
    assert_eq!(
        env.push("sup", &[(&rid(12), sc)]).await[0]["status"],
        "accepted"
    );
    let (_d, sc2) = create("g1", "Hal");
    assert_eq!(
        env.push("sup2", &[(&rid(13), sc2)]).await[0]["reason"],
        "out_of_scope"
    );
    // Pull scope.
    let (wa, _) = env.pull_all("wa", 0, 100).await;
    assert!(wa.iter().all(|i| i["record"] == ra));
    let (wb, _) = env.pull_all("wb", 0, 100).await;
    assert!(wb.iter().all(|i| i["record"] == rid(12)));
    assert_eq!(wb.len(), 1);
    // The supervisor's own change (rid 12) is not echoed back to it.
    let (sup, _) = env.pull_all("sup", 0, 100).await;
    assert_eq!(sup.len(), 2);
    assert!(sup.iter().all(|i| i["record"] == ra));
    let (sup2, _) = env.pull_all("sup2", 0, 100).await;
    assert!(sup2.is_empty());
    // Snapshot follows the same scope.
    let (_, snap) = env.get("wb", "/v1/snapshot").await;
    assert_eq!(snap["records"].as_array().unwrap().len(), 1);
    env.stop().await;
}

async fn moved_record_arrives_whole(b: Backend) {
    let env = Env::new(b).await;
    let r = rid(20);
    let (mut doc, c1) = create("g1", "Ivy");
    let c2 = edit(&mut doc, "phone", "1");
    let c3 = edit(&mut doc, "notes", "lives alone");
    env.push("wa", &[(&r, c1), (&r, c2), (&r, c3)]).await;
    let (_, wb_cursor) = env.pull_all("wb", 0, 100).await;
    // The supervisor moves the record from g1 to g2.
    let mv = edit(&mut doc, "area", "g2");
    let res = env.push("sup", &[(&r, mv)]).await;
    assert_eq!(res[0]["status"], "accepted");
    // The later edit in g2 by the new owner.
    let after_move = edit(&mut doc, "phone", "2");
    // Worker of g2 gets one entry: the whole document, with the full history.
    let (items, _) = env.pull_all("wb", wb_cursor, 100).await;
    assert_eq!(items.len(), 1);
    let mut fresh = Automerge::new();
    fresh
        .load_incremental(&B64.decode(items[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(get_str(&fresh, "notes").as_deref(), Some("lives alone"));
    assert_eq!(get_str(&fresh, "area").as_deref(), Some("g2"));
    assert_eq!(fresh.get_changes(&[]).len(), 4);
    // The old owner sees the move (its change bytes) and nothing after.
    assert_eq!(
        env.push("wb", &[(&r, after_move)]).await[0]["status"],
        "accepted"
    );
    // (Its own three changes are not echoed back.)
    let (wa, _) = env.pull_all("wa", 0, 100).await;
    assert_eq!(wa.len(), 1);
    // The new owner's snapshot has the record; the old owner's does not.
    let (_, s) = env.get("wb", "/v1/snapshot").await;
    assert_eq!(s["records"].as_array().unwrap().len(), 1);
    let (_, s) = env.get("wa", "/v1/snapshot").await;
    assert!(s["records"].as_array().unwrap().is_empty());
    env.stop().await;
}

async fn missing_deps_rejected(b: Backend) {
    let mut env = Env::new(b).await;
    let r = rid(30);
    let (mut doc, c1) = create("g1", "Jo");
    let c2 = edit(&mut doc, "phone", "42");
    // A change whose dependency the relay does not have is rejected, not held.
    let res = env.push("wa", &[(&r, c2.clone())]).await;
    assert_eq!(res[0]["status"], "rejected");
    assert_eq!(res[0]["reason"], "missing_deps");
    env.restart().await;
    // Within one push the order does not matter: the dependency later in the push is applied first.
    let res = env.push("wa", &[(&r, c2.clone()), (&r, c1)]).await;
    assert_eq!(res[0]["status"], "accepted", "{res:?}");
    assert_eq!(res[1]["status"], "accepted", "{res:?}");
    assert!(res[0]["seq"].as_i64().unwrap() > res[1]["seq"].as_i64().unwrap());
    let c2_seq = res[0]["seq"].as_i64().unwrap();
    assert_eq!(
        env.push("wa", &[(&r, c2)]).await[0]["seq"]
            .as_i64()
            .unwrap(),
        c2_seq
    );
    let (_, snap) = env.get("wa", "/v1/snapshot").await;
    let recs = snap["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    let mut d = Automerge::new();
    d.load_incremental(&B64.decode(recs[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(get_str(&d, "phone").as_deref(), Some("42"));
    let (items, _) = env.pull_all("sup", 0, 100).await;
    let d = apply_items(&items, &r);
    assert_eq!(d.get_heads(), doc.get_heads());
    env.stop().await;
}

/// A worker must not move a record out of its area by pushing the move before its dependencies (it
/// used to be held on the record's current area and applied later without a check).
async fn move_with_missing_deps_not_applied_unchecked(b: Backend) {
    let env = Env::new(b).await;
    let r = rid(31);
    let (mut doc, c1) = create("g1", "Kim");
    assert_eq!(env.push("wa", &[(&r, c1)]).await[0]["status"], "accepted");
    let x = edit(&mut doc, "phone", "7");
    let mv = edit(&mut doc, "area", "g3");
    // The move alone: its dependency `x` is missing.
    let res = env.push("wa", &[(&r, mv.clone())]).await;
    assert_eq!(res[0]["status"], "rejected");
    assert_eq!(res[0]["reason"], "missing_deps");
    // The dependency arrives: the move is still not applied behind the relay's back.
    assert_eq!(env.push("wa", &[(&r, x)]).await[0]["status"], "accepted");
    let (_, snap) = env.get("op", "/v1/snapshot").await;
    let recs = snap["records"].as_array().unwrap();
    let mut d = Automerge::new();
    d.load_incremental(&B64.decode(recs[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(get_str(&d, "area").as_deref(), Some("g1"));
    assert_eq!(get_str(&d, "phone").as_deref(), Some("7"));
    // Pushed again now that its dependency is there, the move is checked like any change.
    let res = env.push("wa", &[(&r, mv.clone())]).await;
    assert_eq!(res[0]["reason"], "out_of_scope");
    // Move and dependency in one push, move first: same answer.
    let r2 = rid(32);
    let (mut doc2, d1) = create("g1", "Lee");
    let y = edit(&mut doc2, "phone", "8");
    let mv2 = edit(&mut doc2, "area", "g3");
    let res = env.push("wa", &[(&r2, mv2), (&r2, d1), (&r2, y)]).await;
    let st: Vec<&str> = res.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(st, ["rejected", "accepted", "accepted"]);
    assert_eq!(res[0]["reason"], "out_of_scope");
    // Nothing reached street 2.
    let (items, _) = env.pull_all("sup2", 0, 100).await;
    assert!(items.is_empty());
    let (_, snap) = env.get("sup2", "/v1/snapshot").await;
    assert!(snap["records"].as_array().unwrap().is_empty());
    env.stop().await;
}

/// Pulls leave out the caller's own plain changes, keep the cursor moving past them, and still deliver
/// whole documents the caller needs.
async fn no_echo_of_own_changes(b: Backend) {
    let env = Env::new(b).await;
    let ra = rid(40);
    let rb = rid(41);
    let (mut da, a1) = create("g1", "Max");
    let a2 = edit(&mut da, "phone", "1");
    let (_db, b1) = create("g2", "Ned");
    env.push("wa", &[(&ra, a1), (&ra, a2)]).await;
    let res = env.push("wb", &[(&rb, b1)]).await;
    let last = res[0]["seq"].as_i64().unwrap();
    // wb sees nothing of g1 and none of its own: empty page, cursor at the head.
    let (items, cursor) = env.pull_all("wb", 0, 1).await;
    assert!(items.is_empty());
    assert_eq!(cursor, last);
    // The supervisor moves wa's record into g2: wb (who never saw it) gets the whole document; the
    // supervisor, who pushed the move and could already see the record, gets nothing back.
    let mv = edit(&mut da, "area", "g2");
    let res = env.push("sup", &[(&ra, mv)]).await;
    assert_eq!(res[0]["status"], "accepted");
    let mv_seq = res[0]["seq"].as_i64().unwrap();
    let (items, cursor) = env.pull_all("wb", last, 100).await;
    assert_eq!(items.len(), 1);
    assert_eq!(cursor, mv_seq);
    let d = apply_items(&items, &ra);
    assert_eq!(d.get_heads(), da.get_heads());
    let (items, _) = env.pull_all("sup", 0, 100).await;
    let recs: Vec<&str> = items
        .iter()
        .map(|i| i["record"].as_str().unwrap())
        .collect();
    assert_eq!(recs, [ra.as_str(), ra.as_str(), rb.as_str()]);
    // wa gets the move (it was its record) but not its own two changes.
    let (items, cursor) = env.pull_all("wa", 0, 100).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["seq"].as_i64().unwrap(), mv_seq);
    assert_eq!(cursor, mv_seq);
    env.stop().await;
}

async fn snapshot_paging(b: Backend) {
    let env = Env::new(b).await;
    let mut changes = Vec::new();
    for i in 0..25u64 {
        let (_d, c) = create(if i % 5 == 0 { "g2" } else { "g1" }, &format!("P{i}"));
        changes.push((rid(100 + i), c));
    }
    let refs: Vec<(&str, Vec<u8>)> = changes
        .iter()
        .map(|(r, c)| (r.as_str(), c.clone()))
        .collect();
    env.push("op", &refs).await;
    let mut after = String::new();
    let mut got = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let q = if after.is_empty() {
            "/v1/snapshot?limit=7".to_string()
        } else {
            format!("/v1/snapshot?limit=7&after_record={after}")
        };
        let (s, v) = env.get("wa", &q).await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        cursor.get_or_insert(v["cursor"].as_i64().unwrap());
        for rec in v["records"].as_array().unwrap() {
            got.push(rec["record"].as_str().unwrap().to_owned());
            let mut d = Automerge::new();
            d.load_incremental(&B64.decode(rec["bytes"].as_str().unwrap()).unwrap())
                .unwrap();
            assert_eq!(get_str(&d, "area").as_deref(), Some("g1"));
        }
        match v["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(got.len(), 20);
    assert_eq!(pages, 3);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    assert_eq!(cursor, Some(25));
    // Pulling from the snapshot cursor gives nothing new.
    let (items, _) = env.pull_all("wa", 25, 100).await;
    assert!(items.is_empty());
    let (_, all) = env.get("op", "/v1/snapshot?limit=5000").await;
    assert_eq!(all["records"].as_array().unwrap().len(), 25);
    env.stop().await;
}

async fn attachments(b: Backend) {
    let env = Env::new(b).await;
    let r = rid(40);
    let (_d, c) = create("g1", "Kim");
    env.push("wa", &[(&r, c)]).await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&data));
    let url = env.url(&format!("/v1/attachments/{sha}?record={r}"));
    let plain = env.url(&format!("/v1/attachments/{sha}"));
    let tok = &env.tokens["wa"];
    // Unknown.
    let h = env.http.head(&plain).bearer_auth(tok).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 404);
    // First chunk.
    let r1 = env
        .http
        .put(&url)
        .bearer_auth(tok)
        .header("Content-Range", format!("bytes 0-39999/{}", data.len()))
        .body(data[..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r1.status().as_u16(), 200);
    let v: Value = r1.json().await.unwrap();
    assert_eq!(v["complete"], false);
    // Resume point.
    let h = env.http.head(&plain).bearer_auth(tok).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 308);
    assert_eq!(h.headers()["upload-offset"], "40000");
    // A chunk at the wrong offset.
    let bad = env
        .http
        .put(&url)
        .bearer_auth(tok)
        .header("Content-Range", format!("bytes 50000-59999/{}", data.len()))
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 409);
    assert_eq!(bad.headers()["upload-offset"], "40000");
    // Not readable while partial.
    let g = env.http.get(&plain).bearer_auth(tok).send().await.unwrap();
    assert_eq!(g.status().as_u16(), 404);
    // The rest.
    let r2 = env
        .http
        .put(&url)
        .bearer_auth(tok)
        .header("Content-Range", format!("bytes 40000-99999/{}", data.len()))
        .body(data[40_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status().as_u16(), 200);
    let v: Value = r2.json().await.unwrap();
    assert_eq!(v["complete"], true);
    assert_eq!(v["size"], 100_000);
    let h = env.http.head(&plain).bearer_auth(tok).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 200);
    // Download in scope (owner and supervisor), refused out of scope.
    for who in ["wa", "sup"] {
        let g = env
            .http
            .get(&plain)
            .bearer_auth(&env.tokens[who])
            .send()
            .await
            .unwrap();
        assert_eq!(g.status().as_u16(), 200);
        assert_eq!(g.bytes().await.unwrap().to_vec(), data);
    }
    let g = env
        .http
        .get(&plain)
        .bearer_auth(&env.tokens["wb"])
        .send()
        .await
        .unwrap();
    assert_eq!(g.status().as_u16(), 403);
    assert_eq!(
        g.json::<Value>().await.unwrap()["error"]["code"],
        "out_of_scope"
    );
    // Knowing the hash is not enough to link it to one's own record: the chunk only opens wb's own
    // upload session, which must be completed with the real content.
    let (_d, cb) = create("g2", "Lu");
    env.push("wb", &[(&rid(41), cb)]).await;
    let steal = env
        .http
        .put(env.url(&format!("/v1/attachments/{sha}?record={}", rid(41))))
        .bearer_auth(&env.tokens["wb"])
        .header("Content-Range", "bytes 0-0/100000")
        .body(vec![0u8])
        .send()
        .await
        .unwrap();
    assert_eq!(steal.status().as_u16(), 200);
    assert_eq!(steal.json::<Value>().await.unwrap()["complete"], false);
    let g = env
        .http
        .get(&plain)
        .bearer_auth(&env.tokens["wb"])
        .send()
        .await
        .unwrap();
    assert_eq!(g.status().as_u16(), 403);
    // Uploading to a record out of scope.
    let other = b"other photo".to_vec();
    let osha = hex::encode(Sha256::digest(&other));
    let o = env
        .http
        .put(env.url(&format!("/v1/attachments/{osha}?record={r}")))
        .bearer_auth(&env.tokens["wb"])
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(o.status().as_u16(), 403);
    // One-shot upload, then hash mismatch discards.
    let o = env
        .http
        .put(env.url(&format!("/v1/attachments/{osha}?record={r}")))
        .bearer_auth(tok)
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(o.status().as_u16(), 200);
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let m = env
        .http
        .put(env.url(&format!("/v1/attachments/{wrong}?record={r}")))
        .bearer_auth(tok)
        .body(b"not that".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(m.status().as_u16(), 422);
    assert_eq!(
        m.json::<Value>().await.unwrap()["error"]["code"],
        "hash_mismatch"
    );
    let h = env
        .http
        .head(env.url(&format!("/v1/attachments/{wrong}")))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 404);
    // Bad name.
    let n = env
        .http
        .get(env.url("/v1/attachments/xyz"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(n.status().as_u16(), 400);
    env.stop().await;
}

async fn error_codes(b: Backend) {
    let env = Env::new(b).await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    let r = env.http.get(env.url("/v1/me")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(code(&r.json().await.unwrap()), "unauthorized");
    let r = env
        .http
        .get(env.url("/v1/me"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(code(&r.json().await.unwrap()), "unauthorized");
    let (s, v) = env.get("rv", "/v1/me").await;
    assert_eq!((s, code(&v).as_str()), (401, "revoked"));
    // Oversized body. The relay answers 413 as soon as the limit is passed and closes the connection
    // without reading the rest, so a client still sending may see the connection reset instead of the
    // answer (a race of the transport, not of the relay); when an answer arrives it must be the 413.
    // Its own client, so the connection the relay closes is never reused by the requests below.
    let big = vec![b'x'; 9 * 1024 * 1024];
    let one_off = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    match one_off
        .post(env.url("/v1/changes"))
        .bearer_auth(&env.tokens["wa"])
        .body(big)
        .send()
        .await
    {
        Ok(r) => {
            assert_eq!(r.status().as_u16(), 413);
            assert_eq!(code(&r.json().await.unwrap()), "payload_too_large");
        }
        Err(e) => assert!(e.is_request(), "unexpected error {e}"),
    }
    // Truncated JSON and garbage.
    for body in [
        &b"{\"changes\": [{\"record\": \"ab"[..],
        &b"\x00\xff garbage"[..],
        &b"[]"[..],
    ] {
        let r = env
            .http
            .post(env.url("/v1/changes"))
            .bearer_auth(&env.tokens["wa"])
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(code(&r.json().await.unwrap()), "bad_request");
    }
    // Too many changes in one push.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"record": rid(i), "bytes": ""}))
        .collect();
    let r = env
        .http
        .post(env.url("/v1/changes"))
        .bearer_auth(&env.tokens["wa"])
        .json(&json!({"changes": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Bad query, unknown route, wrong method.
    let (s, v) = env.get("wa", "/v1/changes?after=abc").await;
    assert_eq!((s, code(&v).as_str()), (400, "bad_request"));
    let (s, v) = env.get("wa", "/v1/nothing").await;
    assert_eq!((s, code(&v).as_str()), (404, "not_found"));
    let r = env
        .http
        .delete(env.url("/v1/changes"))
        .bearer_auth(&env.tokens["wa"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"]["code"].is_string());
    // Health and OpenAPI need no token.
    let h: Value = env
        .http
        .get(env.url("/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["protocol"], gridwork_protocol::wire::PROTOCOL_VERSION);
    let y = env
        .http
        .get(env.url("/v1/openapi.yaml"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(y.starts_with("openapi: 3"));
    env.stop().await;
}

async fn rate_limit(b: Backend) {
    let limits = Limits {
        rate_per_sec: 1.0,
        rate_burst: 5.0,
        ..Limits::default()
    };
    let env = Env::with_limits(b, limits).await;
    for _ in 0..5 {
        assert_eq!(env.get("wa", "/v1/me").await.0, 200);
    }
    let r = env
        .http
        .get(env.url("/v1/me"))
        .bearer_auth(&env.tokens["wa"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Other devices are not affected.
    assert_eq!(env.get("wb", "/v1/me").await.0, 200);
    env.stop().await;
}

async fn admin_rules(b: Backend) {
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    assert!(admin
        .add_area("x", Some("nope"), AreaLevel::Grid, "X")
        .await
        .is_err());
    assert!(
        admin
            .add_area("x", Some("g1"), AreaLevel::Grid, "X")
            .await
            .is_err(),
        "grid under grid"
    );
    assert!(
        admin
            .add_area("x", Some("c1"), AreaLevel::Street, "X")
            .await
            .is_err(),
        "street under community"
    );
    assert!(admin
        .add_area("bad id!", Some("c1"), AreaLevel::Grid, "X")
        .await
        .is_err());
    assert!(admin
        .add_area("g1", Some("c1"), AreaLevel::Grid, "dup")
        .await
        .is_err());
    assert!(admin
        .add_user("u9", "U", Role::Worker, "nowhere")
        .await
        .is_err());
    assert!(admin.add_device("nobody", None).await.is_err());
    // A grid added while the relay runs is usable at once.
    admin
        .add_area("g4", Some("c1"), AreaLevel::Grid, "Grid 4")
        .await
        .unwrap();
    let (_d, c) = create("g4", "Mo");
    assert_eq!(
        env.push("sup", &[(&rid(50), c)]).await[0]["status"],
        "accepted"
    );
    assert_eq!(env.get("wa", "/v1/me").await.0, 200);
    let devices = admin.list_devices().await.unwrap();
    let wa = devices.iter().find(|d| d.id == "dev-wa").unwrap();
    assert_eq!(wa.user_id, "wa");
    let sup = devices.iter().find(|d| d.id == "dev-sup").unwrap();
    assert!(sup.last_sync_at.is_some());
    assert!(devices
        .iter()
        .find(|d| d.id == "dev-rv")
        .unwrap()
        .revoked_at
        .is_some());
    admin.revoke_device("dev-wa").await.unwrap();
    assert_eq!(env.get("wa", "/v1/me").await.1["error"]["code"], "revoked");
    assert!(admin.revoke_device("dev-none").await.is_err());
    admin.close().await;
    env.stop().await;
}

// ---- attachments: per-device sessions, limits ----

/// A `PUT` of `data[from..to]` of an attachment of `data.len()` bytes.
async fn put_chunk(
    env: &Env,
    who: &str,
    sha: &str,
    record: &str,
    data: &[u8],
    from: usize,
    to: usize,
) -> reqwest::Response {
    env.http
        .put(env.url(&format!("/v1/attachments/{sha}?record={record}")))
        .bearer_auth(&env.tokens[who])
        .header(
            "Content-Range",
            format!("bytes {from}-{}/{}", to - 1, data.len()),
        )
        .body(data[from..to].to_vec())
        .send()
        .await
        .unwrap()
}

/// HEAD status and `Upload-Offset` as `who` sees them.
async fn head_as(env: &Env, who: &str, sha: &str) -> (u16, Option<String>) {
    let h = env
        .http
        .head(env.url(&format!("/v1/attachments/{sha}")))
        .bearer_auth(&env.tokens[who])
        .send()
        .await
        .unwrap();
    let offset = h
        .headers()
        .get("upload-offset")
        .map(|v| v.to_str().unwrap().to_owned());
    (h.status().as_u16(), offset)
}

async fn get_as(env: &Env, who: &str, sha: &str) -> (u16, Vec<u8>) {
    let g = env
        .http
        .get(env.url(&format!("/v1/attachments/{sha}")))
        .bearer_auth(&env.tokens[who])
        .send()
        .await
        .unwrap();
    (g.status().as_u16(), g.bytes().await.unwrap().to_vec())
}

async fn attachment_sessions(b: Backend) {
    let env = Env::new(b).await;
    let (r, r2) = (rid(60), rid(61));
    env.push("wa", &[(&r, create("g1", "Kim").1)]).await;
    env.push("wb", &[(&r2, create("g2", "Lu").1)]).await;
    // Spans three pieces of the relay's storage, in chunks that cross piece boundaries.
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&data));
    let first = put_chunk(&env, "wa", &sha, &r, &data, 0, 1_200_000).await;
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(first.json::<Value>().await.unwrap()["size"], 1_200_000);
    // Another device of the same scope sending the same content gets its own session.
    let other = put_chunk(&env, "sup", &sha, &r, &data, 0, 50_000).await;
    assert_eq!(other.status().as_u16(), 200);
    assert_eq!(other.json::<Value>().await.unwrap()["size"], 50_000);
    assert_eq!(
        head_as(&env, "wa", &sha).await,
        (308, Some("1200000".into()))
    );
    assert_eq!(
        head_as(&env, "sup", &sha).await,
        (308, Some("50000".into()))
    );
    // The second device finishing its session with garbage discards its session only.
    let mut garbage = data.clone();
    garbage[2_000_000] ^= 0xff;
    let spoil = put_chunk(&env, "sup", &sha, &r, &garbage, 50_000, garbage.len()).await;
    assert_eq!(spoil.status().as_u16(), 422);
    assert_eq!(
        spoil.json::<Value>().await.unwrap()["error"]["code"],
        "hash_mismatch"
    );
    assert_eq!(
        head_as(&env, "wa", &sha).await,
        (308, Some("1200000".into()))
    );
    assert_eq!(head_as(&env, "sup", &sha).await, (404, None));
    // Another grid's device: the partial upload is invisible, its record refused, and the first
    // device's session cannot be continued from elsewhere.
    assert_eq!(head_as(&env, "wb", &sha).await, (404, None));
    let foreign = put_chunk(&env, "wb", &sha, &r, &data, 0, 10).await;
    assert_eq!(foreign.status().as_u16(), 403);
    assert_eq!(
        foreign.json::<Value>().await.unwrap()["error"]["code"],
        "out_of_scope"
    );
    let hijack = put_chunk(&env, "wb", &sha, &r2, &garbage, 1_200_000, garbage.len()).await;
    assert_eq!(hijack.status().as_u16(), 409);
    assert_eq!(hijack.headers()["upload-offset"], "0");
    assert_eq!(
        head_as(&env, "wa", &sha).await,
        (308, Some("1200000".into()))
    );
    // Resume where the relay says, and finish.
    let rest = put_chunk(&env, "wa", &sha, &r, &data, 1_200_000, data.len()).await;
    assert_eq!(rest.status().as_u16(), 200);
    let v: Value = rest.json().await.unwrap();
    assert_eq!(
        (v["complete"].as_bool(), v["size"].as_u64()),
        (Some(true), Some(2_500_000))
    );
    // Visible where its record is: HEAD and GET alike.
    for who in ["wa", "sup", "op"] {
        assert_eq!(
            head_as(&env, who, &sha).await,
            (200, Some("2500000".into())),
            "{who}"
        );
        let (status, body) = get_as(&env, who, &sha).await;
        assert_eq!(status, 200, "{who}");
        assert!(body == data, "{who} got other bytes");
    }
    assert_eq!(head_as(&env, "wb", &sha).await, (404, None));
    let (status, _) = get_as(&env, "wb", &sha).await;
    assert_eq!(status, 403);
    // The same content uploaded in full by another device for its own record is stored once and
    // linked: wb proves it holds the bytes, and may then read them.
    let own = put_chunk(&env, "wb", &sha, &r2, &data, 0, data.len()).await;
    assert_eq!(own.status().as_u16(), 200);
    assert_eq!(own.json::<Value>().await.unwrap()["complete"], true);
    assert_eq!(get_as(&env, "wb", &sha).await, (200, data.clone()));
    // Repeating a finished upload is harmless.
    let again = put_chunk(&env, "wa", &sha, &r, &data, 0, 1_200_000).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["complete"], true);
    env.stop().await;
}

async fn attachment_limits(b: Backend) {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let env = Env::with_limits(b, limits).await;
    let r = rid(62);
    env.push("wa", &[(&r, create("g1", "Kim").1)]).await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    // Above the attachment limit shared with the device: refused before any byte is stored.
    let max = gridwork_protocol::limits::MAX_ATTACHMENT_BYTES;
    let sha = hex::encode(Sha256::digest(b"big"));
    let big = env
        .http
        .put(env.url(&format!("/v1/attachments/{sha}?record={r}")))
        .bearer_auth(&env.tokens["wa"])
        .header("Content-Range", format!("bytes 0-9/{}", max + 1))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    assert_eq!(code(&big.json().await.unwrap()), "payload_too_large");
    assert_eq!(head_as(&env, "wa", &sha).await, (404, None));
    // A chunk above the body limit.
    let data = vec![7u8; 100_000];
    let sha = hex::encode(Sha256::digest(&data));
    let r1 = put_chunk(&env, "wa", &sha, &r, &data, 0, data.len()).await;
    assert_eq!(r1.status().as_u16(), 413);
    // In chunks within the limit it goes through.
    for (from, to) in [(0, 60_000), (60_000, 100_000)] {
        let c = put_chunk(&env, "wa", &sha, &r, &data, from, to).await;
        assert_eq!(c.status().as_u16(), 200);
    }
    assert_eq!(get_as(&env, "wa", &sha).await, (200, data));
    // An empty attachment is a one-shot upload of zero bytes (sent without a length).
    let empty = hex::encode(Sha256::digest(b""));
    let e = env
        .http
        .put(env.url(&format!("/v1/attachments/{empty}?record={r}")))
        .bearer_auth(&env.tokens["wa"])
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(e.status().as_u16(), 200);
    assert_eq!(e.json::<Value>().await.unwrap()["complete"], true);
    assert_eq!(get_as(&env, "wa", &empty).await, (200, Vec::new()));
    // A device holds a bounded number of partial uploads: starting one more drops its oldest.
    let n = gridwork_server::storage::MAX_UPLOADS_PER_DEVICE + 1;
    let contents: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 10]).collect();
    let shas: Vec<String> = contents
        .iter()
        .map(|c| hex::encode(Sha256::digest(c)))
        .collect();
    for (c, sha) in contents.iter().zip(&shas) {
        assert_eq!(
            put_chunk(&env, "wa", sha, &r, c, 0, 5)
                .await
                .status()
                .as_u16(),
            200
        );
        // Distinct last-use times (milliseconds).
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(head_as(&env, "wa", &shas[0]).await, (404, None));
    for sha in &shas[1..] {
        assert_eq!(head_as(&env, "wa", sha).await, (308, Some("5".into())));
    }
    env.stop().await;
}

// ---- operators ----

fn is_not_found<T: std::fmt::Debug>(r: gridwork_server::Result<T>) -> bool {
    matches!(r, Err(gridwork_server::Error::NotFound(_)))
}

fn is_invalid<T: std::fmt::Debug>(r: gridwork_server::Result<T>) -> bool {
    matches!(r, Err(gridwork_server::Error::Invalid(_)))
}

async fn admin_users_and_devices(b: Backend) {
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    let users = admin.list_users().await.unwrap();
    let wa = users.iter().find(|u| u.id == "wa").unwrap();
    assert_eq!(
        (
            wa.name.as_str(),
            wa.role,
            wa.area.as_str(),
            wa.disabled,
            wa.devices
        ),
        ("User wa", Role::Worker, "g1", false, 1)
    );
    assert_eq!(users.iter().find(|u| u.id == "rv").unwrap().devices, 0);
    // Area and role changes apply from the next request on.
    admin
        .set_user(
            "wb",
            &gridwork_server::UserChanges {
                area: Some("c2".into()),
                role: Some(Role::Supervisor),
                name: Some("Wen B".into()),
            },
        )
        .await
        .unwrap();
    let (s, me) = env.get("wb", "/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(
        (&me["area"], &me["area_path"], &me["role"], &me["user_name"]),
        (
            &json!("c2"),
            &json!("d1/s2/c2/"),
            &json!("supervisor"),
            &json!("Wen B")
        )
    );
    assert!(is_not_found(
        admin
            .set_user(
                "nobody",
                &gridwork_server::UserChanges {
                    role: Some(Role::Worker),
                    ..Default::default()
                }
            )
            .await
    ));
    let bad_area = gridwork_server::UserChanges {
        area: Some("nowhere".into()),
        ..Default::default()
    };
    assert!(is_invalid(admin.set_user("wb", &bad_area).await));
    assert!(is_invalid(
        admin
            .set_user("wb", &gridwork_server::UserChanges::default())
            .await
    ));
    let blank = gridwork_server::UserChanges {
        name: Some("  ".into()),
        ..Default::default()
    };
    assert!(is_invalid(admin.set_user("wb", &blank).await));
    // Disable and enable.
    admin.disable_user("wa").await.unwrap();
    let (s, v) = env.get("wa", "/v1/me").await;
    assert_eq!((s, &v["error"]["code"]), (401, &json!("disabled")));
    assert!(admin
        .list_users()
        .await
        .unwrap()
        .iter()
        .any(|u| u.id == "wa" && u.disabled));
    admin.enable_user("wa").await.unwrap();
    assert_eq!(env.get("wa", "/v1/me").await.0, 200);
    assert!(is_not_found(admin.disable_user("nobody").await));
    assert!(is_not_found(admin.enable_user("nobody").await));
    // Devices of one user.
    let mine = admin.list_user_devices("wa").await.unwrap();
    assert_eq!(
        mine.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["dev-wa"]
    );
    assert!(is_not_found(admin.list_user_devices("nobody").await));
    // Reset: a token bound to one store can register another after the operator says so.
    let register = |actor: &'static str| {
        env.http
            .post(env.url("/v1/me"))
            .bearer_auth(&env.tokens["wa"])
            .json(&json!({ "actor": actor }))
            .send()
    };
    assert_eq!(register("aa01").await.unwrap().status().as_u16(), 200);
    assert!(admin.list_user_devices("wa").await.unwrap()[0].bound);
    assert_eq!(register("bb02").await.unwrap().status().as_u16(), 409);
    admin.reset_device("dev-wa").await.unwrap();
    assert!(!admin.list_user_devices("wa").await.unwrap()[0].bound);
    assert_eq!(register("bb02").await.unwrap().status().as_u16(), 200);
    assert_eq!(register("aa01").await.unwrap().status().as_u16(), 409);
    assert!(is_not_found(admin.reset_device("dev-none").await));
    admin.close().await;
    env.stop().await;
}

/// The records in `who`'s snapshot.
async fn snapshot_ids(env: &Env, who: &str) -> Vec<String> {
    let (s, v) = env.get(who, "/v1/snapshot?limit=100").await;
    assert_eq!(s, 200);
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"].as_str().unwrap().to_owned())
        .collect()
}

async fn admin_area_tree(b: Backend) {
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    let r = rid(70);
    let (mut doc, c) = create("g1", "Kim");
    assert_eq!(env.push("wa", &[(&r, c)]).await[0]["status"], "accepted");
    assert_eq!(snapshot_ids(&env, "sup").await, std::slice::from_ref(&r));
    assert!(snapshot_ids(&env, "sup2").await.is_empty());
    // Rename.
    admin.rename_area("g1", "Grid One").await.unwrap();
    let (_, areas) = env.get("wa", "/v1/areas").await;
    assert!(areas["areas"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == "g1" && a["name"] == "Grid One"));
    assert!(is_not_found(admin.rename_area("nope", "X").await));
    assert!(is_invalid(admin.rename_area("g1", " ").await));
    // Moves the tree rule forbids, or that would put an area inside itself.
    for (id, parent, why) in [
        ("g1", "g3", "grid under grid"),
        ("s2", "c1", "street under community"),
        ("c1", "g1", "inside itself"),
        ("c1", "d1", "community under district"),
        ("g1", "nowhere", "unknown parent"),
    ] {
        assert!(is_invalid(admin.move_area(id, parent).await), "{why}");
    }
    assert!(is_not_found(admin.move_area("nope", "c2").await));
    // Move g1 (with its record) from c1 to c2: the record follows, and so do its readers.
    let moved = admin.move_area("g1", "c2").await.unwrap();
    assert_eq!((moved.areas, moved.records), (1, 1));
    let (_, me) = env.get("wa", "/v1/me").await;
    assert_eq!(me["area_path"], "d1/s2/c2/g1/");
    assert!(admin
        .list_areas()
        .await
        .unwrap()
        .iter()
        .any(|a| a.id == "g1" && a.parent.as_deref() == Some("c2") && a.path == "d1/s2/c2/g1/"));
    assert_eq!(snapshot_ids(&env, "sup2").await, std::slice::from_ref(&r));
    assert!(snapshot_ids(&env, "sup").await.is_empty());
    assert_eq!(snapshot_ids(&env, "wa").await, std::slice::from_ref(&r));
    // The worker keeps editing it, and the new entries reach the new supervisor.
    let e = edit(&mut doc, "phone", "1");
    assert_eq!(env.push("wa", &[(&r, e)]).await[0]["status"], "accepted");
    let (items, _) = env.pull_all("sup2", 0, 100).await;
    assert!(items.iter().any(|i| i["record"] == r.as_str()));
    // Remove only what is empty.
    for (id, why) in [
        ("g1", "users and a record"),
        ("c1", "child areas"),
        ("g2", "a user"),
    ] {
        assert!(
            matches!(
                admin.remove_area(id).await,
                Err(gridwork_server::Error::NotEmpty(_))
            ),
            "{why}"
        );
    }
    admin
        .add_area("g9", Some("c1"), AreaLevel::Grid, "Grid 9")
        .await
        .unwrap();
    admin.remove_area("g9").await.unwrap();
    assert!(!admin
        .list_areas()
        .await
        .unwrap()
        .iter()
        .any(|a| a.id == "g9"));
    assert!(is_not_found(admin.remove_area("g9").await));
    admin.close().await;
    env.stop().await;
}

// ---- PostgreSQL over TLS ----

/// A conformance scenario over `sslmode=require` and `sslmode=verify-full` (with the test CA), each
/// checked from the server's side (`pg_stat_ssl`); the check itself fails on a plain connection, and
/// verification refuses a certificate it cannot trust or a name the certificate does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls() {
    let (Some(url), Some(ca)) = (pg_url(), common::pg_ca()) else {
        eprintln!("skipped: set GRIDWORK_TEST_POSTGRES_URL and GRIDWORK_TEST_POSTGRES_CA (start-postgres.sh)");
        return;
    };
    let encrypted = |url: String| async move {
        let admin = Admin::open(&StorageConfig::Postgres { url }).await.unwrap();
        let tls = admin.transport_encrypted().await.unwrap();
        admin.close().await;
        tls
    };
    let ca_param = format!("sslrootcert={}", ca.replace('/', "%2F"));
    // channel_binding=require: the SCRAM exchange is bound to the TLS session (tls-server-end-point).
    for params in [
        "sslmode=require&channel_binding=require".to_owned(),
        format!("sslmode=verify-full&{ca_param}&channel_binding=require"),
    ] {
        let tls_url = common::with_params(&url, &params);
        push_pull_round_trip(Backend::Postgres(tls_url.clone())).await;
        attachments(Backend::Postgres(tls_url.clone())).await;
        assert_eq!(encrypted(tls_url).await, Some(true), "{params}");
    }
    assert_eq!(
        encrypted(common::with_params(&url, "sslmode=disable")).await,
        Some(false)
    );
    let refused = |url: String| async move {
        match Admin::open(&StorageConfig::Postgres { url }).await {
            Ok(a) => {
                a.close().await;
                false
            }
            Err(_) => true,
        }
    };
    // The Mozilla roots do not vouch for the test CA.
    assert!(refused(common::with_params(&url, "sslmode=verify-full")).await);
    // The right CA, but a host name the certificate does not hold: verify-full refuses, verify-ca
    // (chain only) accepts.
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let port_db = rest.split_once(':').unwrap().1;
    let misnamed = format!("{scheme_user}@wrong.invalid:{port_db}");
    let misnamed = common::with_params(&misnamed, "hostaddr=127.0.0.1");
    assert!(
        refused(common::with_params(
            &misnamed,
            &format!("sslmode=verify-full&{ca_param}")
        ))
        .await
    );
    assert_eq!(
        encrypted(common::with_params(
            &misnamed,
            &format!("sslmode=verify-ca&{ca_param}")
        ))
        .await,
        Some(true)
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match super::pg_url() {
                        Some(url) => super::$name(super::Backend::Postgres(url)).await,
                        None => eprintln!("skipped: set GRIDWORK_TEST_POSTGRES_URL to run the PostgreSQL suite"),
                    }
                }
            )*
        }
    };
}

conformance!(
    push_pull_round_trip,
    idempotent_repush,
    malformed_rejected_alone,
    out_of_scope_push_and_pull,
    moved_record_arrives_whole,
    missing_deps_rejected,
    move_with_missing_deps_not_applied_unchecked,
    no_echo_of_own_changes,
    snapshot_paging,
    attachments,
    error_codes,
    rate_limit,
    admin_rules,
    attachment_sessions,
    attachment_limits,
    admin_users_and_devices,
    admin_area_tree,
);
