//! Conformance suite of the relay over HTTP on loopback, run against every backend: SQLite always,
//! PostgreSQL when GRIDWORK_TEST_POSTGRES_URL is set (each test gets its own schema).
//!
//! Every test device is what a real one is: a store with its own Automerge actor, registered with the
//! relay (`POST /v1/me`), whose changes follow the record document layout and name their user and
//! device in their note. The hostile tests then forge exactly one thing at a time.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ROOT};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use gridwork_protocol::change::bombs::{billion_op_change, chunk, deflate_bomb};
use gridwork_protocol::doc::{self as layout, ChangeNote};
use gridwork_server::{
    start, Admin, AreaLevel, Every, Form, Kind, Limits, RelayKey, Role, RunningServer, Schedule,
    ServerConfig, StorageConfig,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{fresh_pg, pg_url};

#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

// ---- the relay under test ----

enum WriterHold {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl WriterHold {
    async fn release(self) {
        self.release_after("").await
    }

    /// Runs `sql` (the same on both backends) in the held transaction, then commits.
    async fn release_after(self, sql: &str) {
        match self {
            WriterHold::Sqlite(c) => c.execute_batch(&format!("{sql} COMMIT;")).unwrap(),
            WriterHold::Postgres(c) => c.batch_execute(&format!("{sql} COMMIT;")).await.unwrap(),
        }
    }
}

struct Env {
    server: Option<RunningServer>,
    base: String,
    http: reqwest::Client,
    storage: StorageConfig,
    limits: Limits,
    tokens: HashMap<&'static str, String>,
    /// The SQLite store's key (hex), for the tests' own SQL.
    sqlite_key: Option<String>,
    authors: HashMap<&'static str, Author>,
    next_record: AtomicU64,
    _dir: Option<tempfile::TempDir>,
}

/// Users of every test: (user, role, area). `rv`'s device is revoked.
const USERS: [(&str, Role, &str); 7] = [
    ("wa", Role::Worker, "g1"),
    ("wb", Role::Worker, "g2"),
    ("sup", Role::Supervisor, "c1"),
    ("sst", Role::Supervisor, "s1"),
    ("sup2", Role::Supervisor, "s2"),
    ("op", Role::Operator, "d1"),
    ("rv", Role::Worker, "g1"),
];

impl Env {
    async fn new(backend: Backend) -> Env {
        Self::with_limits(backend, Limits::default()).await
    }

    async fn with_limits(backend: Backend, limits: Limits) -> Env {
        let sqlite_key = hex::encode(rand::random::<[u8; 32]>());
        let (storage, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (
                    StorageConfig::sqlite(dir.path(), RelayKey::from_hex(&sqlite_key).unwrap()),
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
            // Another district.
            ("d2", None, AreaLevel::District, "District 2"),
            ("s9", Some("d2"), AreaLevel::Street, "Street 9"),
            ("c9", Some("s9"), AreaLevel::Community, "Community 9"),
            ("g9", Some("c9"), AreaLevel::Grid, "Grid 9"),
        ] {
            admin.add_area(id, parent, level, name).await.unwrap();
        }
        let mut tokens = HashMap::new();
        let mut authors = HashMap::new();
        for (user, role, area) in USERS {
            admin
                .add_user(user, &format!("User {user}"), role, area)
                .await
                .unwrap();
            let device = format!("dev-{user}");
            let d = admin.add_device(user, Some(&device)).await.unwrap();
            tokens.insert(user, d.token);
            authors.insert(user, Author::new(user, &device));
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
            sqlite_key: dir.as_ref().map(|_| sqlite_key),
            authors,
            next_record: AtomicU64::new(1 << 40),
            _dir: dir,
        };
        env.restart().await;
        for (user, _, _) in USERS.iter().filter(|u| u.0 != "rv") {
            let (s, v) = env.register(user).await;
            assert_eq!(s, 200, "{v}");
        }
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
            console: None,
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

    /// Runs the test's own SQL on the relay's database, beside the running relay: `sqlite` on the
    /// SQLite store, `postgres` on the PostgreSQL one.
    async fn sql(&self, sqlite: &str, postgres: &str) {
        match (&self.storage, &self._dir) {
            (StorageConfig::Postgres { url }, _) => {
                pg_client(url).await.batch_execute(postgres).await.unwrap()
            }
            (_, Some(dir)) => {
                let conn = rusqlite::Connection::open(dir.path().join("gridwork.db")).unwrap();
                let key = self.sqlite_key.as_ref().unwrap();
                conn.execute_batch(&format!(
                    "PRAGMA key = \"x'{key}'\"; PRAGMA cipher_hmac_algorithm = HMAC_SHA256;
                     PRAGMA busy_timeout = 10000;"
                ))
                .unwrap();
                conn.execute_batch(sqlite).unwrap();
            }
            _ => unreachable!("an SQLite store has its directory"),
        }
    }

    /// Takes the lock the relay's writer needs for its next batch, until `release`: the writer
    /// blocks on its next batch while later pushes queue up behind it.
    async fn hold_writer(&self) -> WriterHold {
        match (&self.storage, &self._dir) {
            (StorageConfig::Postgres { url }, _) => {
                let c = pg_client(url).await;
                c.batch_execute("BEGIN; SELECT seq FROM log_head WHERE id = 1 FOR UPDATE;")
                    .await
                    .unwrap();
                WriterHold::Postgres(c)
            }
            (_, Some(dir)) => {
                let conn = rusqlite::Connection::open(dir.path().join("gridwork.db")).unwrap();
                let key = self.sqlite_key.as_ref().unwrap();
                conn.execute_batch(&format!(
                    "PRAGMA key = \"x'{key}'\"; PRAGMA cipher_hmac_algorithm = HMAC_SHA256;
                     BEGIN IMMEDIATE;"
                ))
                .unwrap();
                WriterHold::Sqlite(conn)
            }
            _ => unreachable!("an SQLite store has its directory"),
        }
    }

    /// Pushes one change per push while the writer's lock is held (`hold_writer`): the first at
    /// once, each next one 250 ms after the one before (so that each makes a batch of its own behind
    /// the held lock), then runs `sql` in the held transaction and releases it 350 ms after the last
    /// push. The answers, in the order of `pushes`.
    async fn pushes_behind_the_lock(
        &self,
        pushes: Vec<(&str, &str, Vec<u8>)>,
        sql: &str,
    ) -> Vec<Value> {
        let after = |ms| tokio::time::sleep(Duration::from_millis(ms));
        let hold = self.hold_writer().await;
        let release_at = 250 * (pushes.len() as u64 - 1) + 350;
        let answers = futures_util::future::join_all(pushes.into_iter().enumerate().map(
            |(i, (who, record, bytes))| async move {
                after(250 * i as u64).await;
                self.push1(who, record, bytes).await
            },
        ));
        let (answers, ()) = tokio::join!(answers, async {
            after(release_at).await;
            hold.release_after(sql).await;
        });
        answers
    }

    fn url(&self, p: &str) -> String {
        format!("{}{}", self.base, p)
    }

    fn author(&self, who: &str) -> &Author {
        &self.authors[who]
    }

    /// A record id no other record of the test has.
    fn rid(&self) -> String {
        rid(self.next_record.fetch_add(1, Ordering::Relaxed))
    }

    /// `POST /v1/me` with the device's store actor.
    async fn register(&self, who: &str) -> (u16, Value) {
        let r = register(&self.http, &self.base, &self.tokens[who], self.author(who)).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
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
        self.push_via(&self.base, who, changes).await
    }

    /// [`Env::push`] through the relay at `base` (another relay on the same database).
    async fn push_via(&self, base: &str, who: &str, changes: &[(&str, Vec<u8>)]) -> Vec<Value> {
        let body = json!({"changes": changes.iter().map(|(r, b)| json!({"record": r, "bytes": B64.encode(b)})).collect::<Vec<_>>()});
        let r = self
            .http
            .post(format!("{base}/v1/changes"))
            .bearer_auth(&self.tokens[who])
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        v["results"].as_array().unwrap().clone()
    }

    /// Pushes one change and returns its answer.
    async fn push1(&self, who: &str, record: &str, bytes: Vec<u8>) -> Value {
        self.push(who, &[(record, bytes)]).await.remove(0)
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

    /// A person `who` makes in `area`: the record id, its document and the first change.
    fn person(&self, who: &str, area: &str, name: &str) -> (String, Automerge, Vec<u8>) {
        let id = self.rid();
        let (doc, bytes) = self
            .author(who)
            .create(&id, |tx| new_person(tx, area, name));
        (id, doc, bytes)
    }

    /// `who` sets a field of `doc`.
    fn edit(&self, who: &str, doc: &mut Automerge, name: &str, value: &str) -> Vec<u8> {
        self.author(who)
            .write(doc, "update", |tx| set_field(tx, name, value))
    }

    /// `who` moves `doc` to home area `to`, as a device does: the area and a `move` entry.
    fn move_to(&self, who: &str, doc: &mut Automerge, to: &str) -> Vec<u8> {
        let from = root_str(doc, layout::AREA).unwrap();
        let user = self.author(who).user.clone();
        self.author(who).write(doc, "move", |tx| {
            tx.put(ROOT, layout::AREA, to).unwrap();
            timeline(tx, &user, "move", Some(&from), Some(to), None);
        })
    }

    /// What the relay holds of `record`: the seqs of its log entries (as the operator pulls them)
    /// and the heads of its document (from the operator's snapshot).
    async fn stored(&self, record: &str) -> (Vec<i64>, Vec<automerge::ChangeHash>) {
        let (items, _) = self.pull_all("op", 0, 5000).await;
        let seqs = items
            .iter()
            .filter(|i| i["record"] == record)
            .map(|i| i["seq"].as_i64().unwrap())
            .collect();
        let heads = self
            .snapshot_item(record)
            .await
            .map(|r| {
                let mut d = Automerge::new();
                d.load_incremental(&B64.decode(r["bytes"].as_str().unwrap()).unwrap())
                    .unwrap();
                d.get_heads()
            })
            .unwrap_or_default();
        (seqs, heads)
    }

    /// The item of `record` in the operator's snapshot (its document bytes and the relay's view).
    async fn snapshot_item(&self, record: &str) -> Option<Value> {
        let (s, snap) = self.get("op", "/v1/snapshot?limit=5000").await;
        assert_eq!(s, 200, "{snap}");
        snap["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["record"] == record)
            .cloned()
    }

    /// Pushes `changes` as `who` while `wb` pushes an honest new record at the same time. The honest
    /// push must succeed, the hostile one be answered well within the request timeout, and nothing
    /// the relay holds of `record` change unless the push was accepted. Returns the hostile answers.
    async fn hostile(&self, who: &str, record: &str, changes: &[(&str, Vec<u8>)]) -> Vec<Value> {
        let before = self.stored(record).await;
        let (id, _, honest) = self.person("wb", "g2", "Honest Neighbour");
        let honest = [(id.as_str(), honest)];
        let started = Instant::now();
        let (answers, neighbour) = tokio::join!(self.push(who, changes), self.push("wb", &honest));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "hostile push took {:?}",
            started.elapsed()
        );
        assert_eq!(neighbour[0]["status"], "accepted", "{neighbour:?}");
        if answers.iter().all(|a| a["status"] == "rejected") {
            assert_eq!(self.stored(record).await, before, "nothing stored changed");
        }
        for a in &answers {
            if a["status"] == "rejected" {
                let detail = a["detail"].as_str().unwrap_or("");
                assert!(!detail.is_empty(), "a refusal says why: {a}");
            }
        }
        answers
    }
}

fn rid(n: u64) -> String {
    format!("{:032x}", n)
}

fn apply_items(items: &[Value], record: &str) -> Automerge {
    let mut doc = Automerge::new();
    for i in items.iter().filter(|i| i["record"] == record) {
        let b = B64.decode(i["bytes"].as_str().unwrap()).unwrap();
        doc.load_incremental(&b).unwrap();
    }
    doc
}

fn reasons(answers: &[Value]) -> Vec<&str> {
    answers
        .iter()
        .map(|a| {
            a["reason"]
                .as_str()
                .unwrap_or(a["status"].as_str().unwrap())
        })
        .collect()
}

// ---- scenarios ----

async fn push_pull_round_trip(b: Backend) {
    let env = Env::new(b).await;
    let (r, mut doc, c1) = env.person("wa", "g1", "Ann");
    let c2 = env.edit("wa", &mut doc, "phone", "123");
    let res = env.push("wa", &[(&r, c1.clone()), (&r, c2.clone())]).await;
    assert_eq!(res.len(), 2);
    for x in &res {
        assert_eq!(x["status"], "accepted", "{x}");
        assert!(x.get("reason").is_none() && x.get("detail").is_none());
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
        assert_eq!(field(&d, "phone").as_deref(), Some("123"));
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
    assert_eq!(me["actor"], env.author("wa").actor.to_hex_string());
    let (_, areas) = env.get("wa", "/v1/areas").await;
    let ids: Vec<&str> = areas["areas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1", "s1", "c1", "g1"]);
    assert_eq!(me["areas_version"], areas_version_of(&areas));
    let (_, areas) = env.get("sup", "/v1/areas").await;
    assert_eq!(areas["areas"].as_array().unwrap().len(), 5);
    let (_, sup) = env.get("sup", "/v1/me").await;
    assert_eq!(sup["areas_version"], areas_version_of(&areas));
    assert_ne!(sup["areas_version"], me["areas_version"]);
    env.stop().await;
}

/// `gridwork_protocol::wire::areas_version` of a `GET /v1/areas` answer.
fn areas_version_of(answer: &Value) -> Value {
    let areas: Vec<gridwork_protocol::wire::WireArea> =
        serde_json::from_value(answer["areas"].clone()).unwrap();
    Value::from(gridwork_protocol::wire::areas_version(&areas))
}

/// `POST /v1/me` binds a device token to one store: the same store again is fine, another store is
/// refused `409 device_in_use`, and so are its changes.
async fn register_binds_one_store(b: Backend) {
    let env = Env::new(b).await;
    let (s, me) = env.register("wa").await;
    assert_eq!((s, me["user_id"].as_str()), (200, Some("wa")));
    let copy = Author::new("wa", "dev-wa-copied");
    let r = env
        .http
        .post(env.url("/v1/me"))
        .bearer_auth(&env.tokens["wa"])
        .json(&json!({"actor": copy.actor.to_hex_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "device_in_use"
    );
    let r = env
        .http
        .post(env.url("/v1/me"))
        .bearer_auth(&env.tokens["wa"])
        .json(&json!({"actor": "not hex"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A device that never registered its store has no changes accepted.
    let admin = Admin::open(&env.storage).await.unwrap();
    let token = admin.add_device("wa", Some("dev-new")).await.unwrap().token;
    admin.close().await;
    let fresh = Author::new("wa", "dev-new");
    let id = env.rid();
    let (_, c) = fresh.create(&id, |tx| new_person(tx, "g1", "Nia"));
    let body = json!({"changes": [{"record": id, "bytes": B64.encode(&c)}]});
    let v: Value = env
        .http
        .post(env.url("/v1/changes"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["results"][0]["reason"], "wrong_author", "{v}");
    env.stop().await;
}

async fn idempotent_repush(b: Backend) {
    let env = Env::new(b).await;
    let (r, _doc, c1) = env.person("wa", "g1", "Bo");
    let a = env.push("wa", &[(&r, c1.clone())]).await;
    let again = env.push("wa", &[(&r, c1.clone()), (&r, c1.clone())]).await;
    assert_eq!(again[0]["status"], "accepted");
    assert_eq!(again[0]["seq"], a[0]["seq"]);
    assert_eq!(again[1]["seq"], a[0]["seq"]);
    let (items, _) = env.pull_all("sup", 0, 100).await;
    assert_eq!(items.len(), 1);
    env.stop().await;
}

/// A batch whose write fails (here: the database refuses one record) is rolled back and retried push
/// by push: the neighbours that shared its transaction are stored, the failing push alone is answered
/// 503, nothing of it is left behind, and the relay's document cache does not believe otherwise: the
/// same push goes through once the database takes it, and the record's next edit after it.
async fn failing_write_fails_only_its_push(b: Backend) {
    let env = Env::new(b).await;
    let (poison, mut doc, first) = env.person("wa", "g1", "Refused By The Database");
    env.sql(
        &format!(
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.id = '{poison}'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
        ),
        &format!(
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN
               IF NEW.id = '{poison}' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER poison BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION poison();"
        ),
    )
    .await;
    let send = |who: &'static str, record: String, bytes: Vec<u8>| {
        let req = env
            .http
            .post(env.url("/v1/changes"))
            .bearer_auth(&env.tokens[who])
            .json(&json!({"changes": [{"record": record, "bytes": B64.encode(&bytes)}]}));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The writer is held on a first push while the poisoned one and its neighbours queue up behind
    // it, so that they share the next batch.
    let mut neighbours = Vec::new();
    for i in 0..12 {
        let (id, _, bytes) = env.person("wb", "g2", &format!("Neighbour {i}"));
        neighbours.push((id, bytes));
    }
    let hold = env.hold_writer().await;
    let (blocker, _, blocker_bytes) = env.person("wb", "g2", "First In The Queue");
    let blocked = tokio::spawn(send("wb", blocker, blocker_bytes));
    let release = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        hold.release().await;
    };
    let (refused, answers, ()) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            send("wa", poison.clone(), first.clone()).await
        },
        futures_util::future::join_all(neighbours.iter().map(|(id, bytes)| {
            let push = send("wb", id.clone(), bytes.clone());
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                push.await
            }
        })),
        release,
    );
    let (status, v) = blocked.await.unwrap();
    assert_eq!(
        (status, &v["results"][0]["status"]),
        (200, &json!("accepted"))
    );
    assert_eq!(refused.0, 503, "{:?}", refused.1);
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(v["results"][0]["status"], "accepted", "{v}");
    }
    assert_eq!(
        env.stored(&poison).await,
        (vec![], vec![]),
        "nothing of the refused push stored"
    );
    let (items, _) = env.pull_all("sup", 0, 1000).await;
    assert_eq!(
        items.len(),
        neighbours.len() + 1,
        "the neighbours, each once"
    );

    env.sql(
        "DROP TRIGGER poison;",
        "DROP TRIGGER poison ON records; DROP FUNCTION poison();",
    )
    .await;
    let again = env.push1("wa", &poison, first).await;
    assert_eq!(again["status"], "accepted", "{again}");
    let edit = env.edit("wa", &mut doc, "phone", "13800000000");
    let edited = env.push1("wa", &poison, edit).await;
    assert_eq!(edited["status"], "accepted", "{edited}");
    let (seqs, heads) = env.stored(&poison).await;
    assert_eq!(seqs.len(), 2);
    assert_eq!(heads, doc.get_heads());
    env.stop().await;
}

async fn malformed_rejected_alone(b: Backend) {
    let env = Env::new(b).await;
    let (r3, _d, good) = env.person("wa", "g1", "Cy");
    let (r6, _d2, good2) = env.person("wa", "g1", "Di");
    let body = json!({"changes": [
        {"record": r3, "bytes": B64.encode(&good)},
        {"record": rid(4), "bytes": "!!!not base64!!!"},
        {"record": rid(5), "bytes": B64.encode(b"definitely not an automerge change")},
        {"record": "NOT-A-RECORD-ID", "bytes": B64.encode(&good2)},
        {"record": r6, "bytes": B64.encode(&good2)},
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
    assert_eq!(
        reasons(res),
        [
            "accepted",
            "malformed",
            "malformed",
            "bad_record",
            "accepted"
        ]
    );
    assert_eq!(res[1]["hash"], "");
    assert_eq!(res[3]["hash"], res[4]["hash"]);
    let (items, _) = env.pull_all("sup", 0, 100).await;
    assert_eq!(items.len(), 2);
    env.stop().await;
}

async fn out_of_scope_push_and_pull(b: Backend) {
    let env = Env::new(b).await;
    let (ra, mut doc, c1) = env.person("wa", "g1", "Eve");
    assert_eq!(env.push1("wa", &ra, c1).await["status"], "accepted");
    let mut side = doc.fork();
    let mut other_side = doc.fork();
    // Worker of g2 edits a g1 record: refused.
    let c2 = env.edit("wb", &mut other_side, "phone", "999");
    let res = env.push1("wb", &ra, c2).await;
    assert_eq!(res["status"], "rejected");
    assert_eq!(res["reason"], "out_of_scope");
    // Worker of g2 creates a record in g1: refused. Worker of g1 moves its record to g3: refused.
    let (r11, _d, other) = env.person("wb", "g1", "Fay");
    assert_eq!(env.push1("wb", &r11, other).await["reason"], "out_of_scope");
    let mv = env.move_to("wa", &mut side, "g3");
    assert_eq!(env.push1("wa", &ra, mv).await["reason"], "out_of_scope");
    // The refused edits did not reach the relay's document: the owner's edit of the same state lands.
    let c3 = env.edit("wa", &mut doc, "phone", "998");
    assert_eq!(env.push1("wa", &ra, c3).await["status"], "accepted");
    // Supervisor of c1 writes anywhere in its subtree; supervisor of s2 cannot.
    let (r12, _d, sc) = env.person("sup", "g2", "Gus");
    assert_eq!(env.push1("sup", &r12, sc).await["status"], "accepted");
    let (r13, _d, sc2) = env.person("sup2", "g1", "Hal");
    assert_eq!(env.push1("sup2", &r13, sc2).await["reason"], "out_of_scope");
    // Pull scope.
    let (wa, _) = env.pull_all("wa", 0, 100).await;
    assert!(wa.is_empty(), "only wa's own changes are in g1");
    let (wb, _) = env.pull_all("wb", 0, 100).await;
    assert!(wb.iter().all(|i| i["record"] == r12));
    assert_eq!(wb.len(), 1);
    // The supervisor's own change (r12) is not echoed back to it.
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
    let (r, mut doc, c1) = env.person("wa", "g1", "Ivy");
    let c2 = env.edit("wa", &mut doc, "phone", "111");
    let c3 = env.edit("wa", &mut doc, "sex", "female");
    env.push("wa", &[(&r, c1), (&r, c2), (&r, c3)]).await;
    let (_, wb_cursor) = env.pull_all("wb", 0, 100).await;
    // The supervisor moves the record from g1 to g2.
    let mv = env.move_to("sup", &mut doc, "g2");
    let res = env.push1("sup", &r, mv).await;
    assert_eq!(res["status"], "accepted", "{res}");
    // The later edit in g2 by the new owner.
    let after_move = env.edit("wb", &mut doc, "phone", "222");
    // Worker of g2 gets one entry: the whole document, with the full history.
    let (items, _) = env.pull_all("wb", wb_cursor, 100).await;
    assert_eq!(items.len(), 1);
    let mut fresh = Automerge::new();
    fresh
        .load_incremental(&B64.decode(items[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(field(&fresh, "sex").as_deref(), Some("female"));
    assert_eq!(root_str(&fresh, "area").as_deref(), Some("g2"));
    assert_eq!(fresh.get_changes(&[]).len(), 4);
    // The old owner sees the move (its change bytes) and nothing after.
    assert_eq!(env.push1("wb", &r, after_move).await["status"], "accepted");
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
    let (r, mut doc, c1) = env.person("wa", "g1", "Jo");
    let c2 = env.edit("wa", &mut doc, "phone", "424");
    // A change whose dependency the relay does not have is rejected, not held.
    let res = env.push1("wa", &r, c2.clone()).await;
    assert_eq!(res["status"], "rejected");
    assert_eq!(res["reason"], "missing_deps");
    env.restart().await;
    // Within one push the order does not matter: the dependency later in the push is applied first.
    let res = env.push("wa", &[(&r, c2.clone()), (&r, c1.clone())]).await;
    assert_eq!(res[0]["status"], "accepted", "{res:?}");
    assert_eq!(res[1]["status"], "accepted", "{res:?}");
    assert!(res[0]["seq"].as_i64().unwrap() > res[1]["seq"].as_i64().unwrap());
    let c2_seq = res[0]["seq"].as_i64().unwrap();
    assert_eq!(
        env.push1("wa", &r, c2).await["seq"].as_i64().unwrap(),
        c2_seq
    );
    let (_, snap) = env.get("wa", "/v1/snapshot").await;
    let recs = snap["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    let mut d = Automerge::new();
    d.load_incremental(&B64.decode(recs[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(field(&d, "phone").as_deref(), Some("424"));
    let (items, _) = env.pull_all("sup", 0, 100).await;
    let d = apply_items(&items, &r);
    assert_eq!(d.get_heads(), doc.get_heads());
    // A second first change for a record the relay has: `bad_record`, whoever sends it.
    let (_, again) = env
        .author("wa")
        .create(&r, |tx| new_person(tx, "g1", "Jo again"));
    let res = env.push1("wa", &r, again).await;
    assert_eq!(res["reason"], "bad_record", "{res}");
    env.stop().await;
}

/// A worker must not move a record out of its area by pushing the move before its dependencies (it
/// used to be held on the record's current area and applied later without a check).
async fn move_with_missing_deps_not_applied_unchecked(b: Backend) {
    let env = Env::new(b).await;
    let (r, mut doc, c1) = env.person("wa", "g1", "Kim");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    let x = env.edit("wa", &mut doc, "phone", "777");
    let mv = env.move_to("wa", &mut doc, "g3");
    // The move alone: its dependency `x` is missing.
    let res = env.push1("wa", &r, mv.clone()).await;
    assert_eq!(res["status"], "rejected");
    assert_eq!(res["reason"], "missing_deps");
    // The dependency arrives: the move is still not applied behind the relay's back.
    assert_eq!(env.push1("wa", &r, x).await["status"], "accepted");
    let (_, snap) = env.get("op", "/v1/snapshot").await;
    let recs = snap["records"].as_array().unwrap();
    let mut d = Automerge::new();
    d.load_incremental(&B64.decode(recs[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(root_str(&d, "area").as_deref(), Some("g1"));
    assert_eq!(field(&d, "phone").as_deref(), Some("777"));
    // Pushed again now that its dependency is there, the move is checked like any change.
    let res = env.push1("wa", &r, mv.clone()).await;
    assert_eq!(res["reason"], "out_of_scope");
    // Move and dependency in one push, move first: same answer.
    let (r2, mut doc2, d1) = env.person("wa", "g1", "Lee");
    let y = env.edit("wa", &mut doc2, "phone", "888");
    let mv2 = env.move_to("wa", &mut doc2, "g3");
    let res = env.push("wa", &[(&r2, mv2), (&r2, d1), (&r2, y)]).await;
    assert_eq!(reasons(&res), ["out_of_scope", "accepted", "accepted"]);
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
    let (ra, mut da, a1) = env.person("wa", "g1", "Max");
    let a2 = env.edit("wa", &mut da, "phone", "100");
    let (rb, _db, b1) = env.person("wb", "g2", "Ned");
    env.push("wa", &[(&ra, a1), (&ra, a2)]).await;
    let res = env.push1("wb", &rb, b1).await;
    let last = res["seq"].as_i64().unwrap();
    // wb sees nothing of g1 and none of its own: empty page, cursor at the head.
    let (items, cursor) = env.pull_all("wb", 0, 1).await;
    assert!(items.is_empty());
    assert_eq!(cursor, last);
    // The supervisor moves wa's record into g2: wb (who never saw it) gets the whole document; the
    // supervisor, who pushed the move and could already see the record, gets nothing back.
    let mv = env.move_to("sup", &mut da, "g2");
    let res = env.push1("sup", &ra, mv).await;
    assert_eq!(res["status"], "accepted");
    let mv_seq = res["seq"].as_i64().unwrap();
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
        let (r, _d, c) = env.person("op", if i % 5 == 0 { "g2" } else { "g1" }, &format!("P{i}"));
        changes.push((r, c));
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
            assert_eq!(root_str(&d, "area").as_deref(), Some("g1"));
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
    let (r, _d, c) = env.person("wa", "g1", "Kim");
    assert_eq!(env.push1("wa", &r, c).await["status"], "accepted");
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
    let (r41, _d, cb) = env.person("wb", "g2", "Lu");
    assert_eq!(env.push1("wb", &r41, cb).await["status"], "accepted");
    let steal = env
        .http
        .put(env.url(&format!("/v1/attachments/{sha}?record={r41}")))
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
    match one_off_client()
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
    // Registering the store took one request of the burst (two if the setup took over a second).
    let mut ok = 0;
    while env.get("wa", "/v1/me").await.0 == 200 {
        ok += 1;
        assert!(ok <= 5, "the burst is 5");
    }
    assert!(ok >= 3, "{ok}");
    let r = env
        .http
        .get(env.url("/v1/me"))
        .bearer_auth(&env.tokens["wa"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let header = |name: &str| -> u64 { r.headers()[name].to_str().unwrap().parse().unwrap() };
    // At 1/s the wait is under a second: Retry-After says 1 (its unit), Retry-After-Ms exactly.
    assert_eq!(header("retry-after"), 1);
    let ms = header("retry-after-ms");
    assert!((1..=1000).contains(&ms), "{ms}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Other devices are not affected.
    assert_eq!(env.get("wb", "/v1/me").await.0, 200);
    env.stop().await;
}

/// Failed authentications are limited per client address: an address that sent too many unknown
/// tokens gets `429` with `Retry-After` (and costs the database nothing), while devices elsewhere,
/// and devices the relay knows behind the same address, go on.
async fn failed_auth_limited_per_address(b: Backend) {
    let limits = Limits {
        auth_fail_per_sec: 0.01,
        auth_fail_burst: 3.0,
        ..Limits::default()
    };
    let env = Env::with_limits(b, limits).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (other, same) = (from([127, 0, 0, 2]), from([127, 0, 0, 1]));
    let me = env.url("/v1/me");
    let mut codes = Vec::new();
    for i in 0..5 {
        let r = other
            .get(&me)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1);
            assert_eq!(
                r.json::<Value>().await.unwrap()["error"]["code"],
                "rate_limited"
            );
        }
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
    // No header at all counts as a failure too.
    assert_eq!(other.get(&me).send().await.unwrap().status().as_u16(), 429);
    // Another address: unknown tokens still get 401, known ones 200.
    let r = same.get(&me).bearer_auth("guess-x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = same
        .get(&me)
        .bearer_auth(&env.tokens["wb"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A device the relay has seen still works from the limited address (it is limited per token).
    let r = other
        .get(&me)
        .bearer_auth(&env.tokens["wa"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    env.stop().await;
}

/// Pull and snapshot pages stop at the byte limit as well as the count, always carry at least one
/// item, and the cursor semantics stay: every entry arrives exactly once across the pages.
async fn pages_bounded_by_bytes(b: Backend) {
    let limits = Limits {
        max_page_bytes: 2_000,
        ..Limits::default()
    };
    let env = Env::with_limits(b, limits).await;
    let mut changes = Vec::new();
    for i in 0..12 {
        // Records of ~700 bytes, and one far above the page limit.
        let len = if i == 5 { 3_000 } else { 600 };
        let name = format!("{i:02}{}", "n".repeat(len));
        changes.push(env.person("wa", "g1", &name));
    }
    let refs: Vec<(&str, Vec<u8>)> = changes
        .iter()
        .map(|(r, _, c)| (r.as_str(), c.clone()))
        .collect();
    let res = env.push("wa", &refs).await;
    assert!(res.iter().all(|r| r["status"] == "accepted"), "{res:?}");
    let big = B64.encode(&changes[5].2).len();
    assert!(big > 2 * 2_000);

    let mut cursor = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (s, v) = env
            .get("sup", &format!("/v1/changes?after={cursor}&limit=1000"))
            .await;
        assert_eq!(s, 200);
        pages += 1;
        let items = v["items"].as_array().unwrap();
        assert!(!items.is_empty() || !v["more"].as_bool().unwrap());
        let bytes: usize = items
            .iter()
            .map(|i| B64.decode(i["bytes"].as_str().unwrap()).unwrap().len())
            .sum();
        assert!(
            items.len() == 1 || bytes <= 2_000,
            "{} items, {bytes} bytes",
            items.len()
        );
        seen.extend(items.iter().map(|i| i["seq"].as_i64().unwrap()));
        let next = v["cursor"].as_i64().unwrap();
        assert_eq!(Some(next), seen.last().copied().or(Some(cursor)));
        cursor = next;
        if !v["more"].as_bool().unwrap() {
            break;
        }
    }
    let all: Vec<i64> = res.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seen, all, "every entry once, in order");
    assert!(pages >= 5, "{pages} pages");

    let mut after = String::new();
    let mut records = Vec::new();
    loop {
        let q = if after.is_empty() {
            "/v1/snapshot".to_string()
        } else {
            format!("/v1/snapshot?after_record={after}")
        };
        let (s, v) = env.get("sup", &q).await;
        assert_eq!(s, 200);
        let page = v["records"].as_array().unwrap();
        assert!(!page.is_empty());
        let bytes: usize = page
            .iter()
            .map(|r| B64.decode(r["bytes"].as_str().unwrap()).unwrap().len())
            .sum();
        assert!(
            page.len() == 1 || bytes <= 2_000,
            "{} records, {bytes} bytes",
            page.len()
        );
        records.extend(
            page.iter()
                .map(|r| r["record"].as_str().unwrap().to_owned()),
        );
        match v["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    let mut want: Vec<String> = changes.iter().map(|c| c.0.clone()).collect();
    want.sort();
    assert_eq!(records, want);
    env.stop().await;
}

// ---- the relay is the authority: one test per refusal, each beside its allowed neighbour ----

/// A worker approving its own visit: `forbidden_role`; its supervisor's approval is accepted.
async fn refuses_self_approval(b: Backend) {
    let env = Env::new(b).await;
    let wa = env.author("wa").clone();
    let v = env.rid();
    let (mut doc, c1) = wa.create(&v, |tx| new_visit(tx, "wa", "g1"));
    let end = now();
    let c2 = wa.write(&mut doc, "finish", |tx| set_field(tx, "ended_at", &end));
    let res = env.push("wa", &[(&v, c1), (&v, c2)]).await;
    assert_eq!(reasons(&res), ["accepted", "accepted"]);
    let approve = |who: &str, doc: &mut Automerge| {
        env.author(who).write(doc, "review", |tx| {
            set_field(tx, "review_state", "approved");
            set_field(tx, "reviewer", who);
            timeline(tx, who, "review", Some("pending"), Some("approved"), None);
        })
    };
    let own = approve("wa", &mut doc.fork());
    let res = env.hostile("wa", &v, &[(&v, own)]).await;
    assert_eq!(reasons(&res), ["forbidden_role"]);
    // The same review without its timeline entry, by the supervisor: not a review at all.
    let silent = env.author("sup").write(&mut doc.fork(), "update", |tx| {
        set_field(tx, "review_state", "approved");
        set_field(tx, "reviewer", "sup");
    });
    assert_eq!(
        reasons(&env.hostile("sup", &v, &[(&v, silent)]).await),
        ["forbidden_role"]
    );
    let theirs = approve("sup", &mut doc);
    assert_eq!(env.push1("sup", &v, theirs).await["status"], "accepted");
    let rec = env.snapshot_item(&v).await.unwrap();
    let mut d = Automerge::new();
    d.load_incremental(&B64.decode(rec["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(field(&d, "reviewer").as_deref(), Some("sup"));
    env.stop().await;
}

/// A change naming another user, another device, or made by another store than the one the token is
/// bound to: `wrong_author`; the honest change is accepted.
async fn refuses_forged_authors(b: Backend) {
    let env = Env::new(b).await;
    let (r, doc, c1) = env.person("wa", "g1", "Ola");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    let wa = env.author("wa").clone();
    let edit = |author: &Author, message: String| {
        author.write_noted(&mut doc.clone(), message, |tx| {
            set_field(tx, "phone", "555")
        })
    };
    let as_user = |user: &str, device: &str| {
        serde_json::to_string(&ChangeNote::new(user, device, "update", vec![])).unwrap()
    };
    let other_store = Author::new("wa", "dev-wa");
    let other_store = Author {
        actor: ActorId::from(&[0x5a; 16][..]),
        ..other_store
    };
    for (what, forged) in [
        ("user", edit(&wa, as_user("sup", "dev-wa"))),
        ("device", edit(&wa, as_user("wa", "dev-wb"))),
        ("store", edit(&other_store, wa.note("update"))),
        (
            "the store of another device",
            edit(env.author("wb"), wa.note("update")),
        ),
        ("no note", edit(&wa, "edited".into())),
    ] {
        let res = env.hostile("wa", &r, &[(&r, forged)]).await;
        assert_eq!(reasons(&res), ["wrong_author"], "forged {what}");
    }
    // A timeline entry naming someone else.
    let entry = wa.write(&mut doc.clone(), "delete", |tx| {
        tx.put(ROOT, layout::DELETED, true).unwrap();
        timeline(tx, "sup", "delete", None, None, None);
    });
    assert_eq!(
        reasons(&env.hostile("wa", &r, &[(&r, entry)]).await),
        ["wrong_author"]
    );
    let honest = edit(&wa, wa.note("update"));
    assert_eq!(env.push1("wa", &r, honest).await["status"], "accepted");
    env.stop().await;
}

/// A worker taking a record out of its grid through any field: `out_of_scope`; moves within scope
/// and edits are accepted.
async fn refuses_moves_out_of_scope(b: Backend) {
    let env = Env::new(b).await;
    let (r, mut doc, c1) = env.person("wa", "g1", "Pia");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    let wa = env.author("wa").clone();
    let silent = wa.write(&mut doc.clone(), "update", |tx| {
        tx.put(ROOT, layout::AREA, "g9").unwrap()
    });
    let moved = env.move_to("wa", &mut doc.clone(), "g9");
    let responsible = wa.write(&mut doc.clone(), "update", |tx| {
        tx.put(ROOT, layout::RESPONSIBLE, "g1").unwrap()
    });
    let both = wa.write(&mut doc.clone(), "update", |tx| {
        tx.put(ROOT, layout::AREA, "g9").unwrap();
        tx.put(ROOT, layout::RESPONSIBLE, "g1").unwrap();
    });
    let next_door = env.move_to("wa", &mut doc.clone(), "g2");
    for (what, change) in [
        ("area without a move", silent),
        ("move to another district", moved),
        ("responsible on a person", responsible),
        ("area away, responsible kept home", both),
        ("move to the next grid", next_door),
    ] {
        let res = env.hostile("wa", &r, &[(&r, change)]).await;
        assert_eq!(reasons(&res), ["out_of_scope"], "{what}");
    }
    let edit = env.edit("wa", &mut doc, "phone", "321");
    assert_eq!(env.push1("wa", &r, edit).await["status"], "accepted");
    let mv = env.move_to("sup", &mut doc, "g2");
    assert_eq!(env.push1("sup", &r, mv).await["status"], "accepted");
    // Moved away, the record is out of the worker's scope, and so is its next edit.
    let late = env.edit("wa", &mut doc.clone(), "phone", "322");
    assert_eq!(
        reasons(&env.hostile("wa", &r, &[(&r, late)]).await),
        ["out_of_scope"]
    );
    env.stop().await;
}

/// An offline edit is judged on the record as its author saw it, then on where the record is now:
/// concurrent edits both land; an edit made before the record moved out of the author's scope does not.
async fn judges_changes_as_their_author_saw_them(b: Backend) {
    let env = Env::new(b).await;
    let (r, doc, c1) = env.person("wa", "g1", "Qiu");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    let (mut wa_doc, mut sup_doc) = (doc.clone(), doc.clone());
    let by_wa = env.edit("wa", &mut wa_doc, "phone", "123456");
    let by_sup = env.edit("sup", &mut sup_doc, "sex", "male");
    assert_eq!(env.push1("sup", &r, by_sup).await["status"], "accepted");
    // wa's edit builds on the state before the supervisor's.
    assert_eq!(env.push1("wa", &r, by_wa).await["status"], "accepted");
    let (items, _) = env.pull_all("op", 0, 100).await;
    let merged = apply_items(&items, &r);
    assert_eq!(field(&merged, "phone").as_deref(), Some("123456"));
    assert_eq!(field(&merged, "sex").as_deref(), Some("male"));
    // The supervisor moves the record to g2; wa's edit made before it knew does not land.
    let mut moved = merged.clone();
    let mv = env.move_to("sup", &mut moved, "g2");
    let offline = env.edit("wa", &mut wa_doc, "phone", "654321");
    assert_eq!(env.push1("sup", &r, mv).await["status"], "accepted");
    let res = env.hostile("wa", &r, &[(&r, offline)]).await;
    assert_eq!(reasons(&res), ["out_of_scope"]);
    env.stop().await;
}

/// The event lifecycle: escalating sideways is refused, escalating to the parent accepted; an event
/// escalated to the street is closed by the street's supervisor, not the community's nor the worker.
async fn refuses_event_steps_not_allowed(b: Backend) {
    let env = Env::new(b).await;
    let ev = env.rid();
    let (mut doc, c1) = env
        .author("wa")
        .create(&ev, |tx| new_event(tx, "wa", "g1", "Leaking pipe"));
    assert_eq!(env.push1("wa", &ev, c1).await["status"], "accepted");
    let escalate = |who: &str, doc: &mut Automerge, from: &str, to: &str, entry_to: &str| {
        env.author(who).write(doc, "escalate", |tx| {
            tx.put(ROOT, layout::RESPONSIBLE, to).unwrap();
            timeline(tx, who, "escalate", Some(from), Some(entry_to), None);
        })
    };
    let sideways = escalate("wa", &mut doc.clone(), "g1", "g2", "g2");
    assert_eq!(
        reasons(&env.hostile("wa", &ev, &[(&ev, sideways)]).await),
        ["invalid_value"]
    );
    let claiming = escalate("wa", &mut doc.clone(), "g1", "g2", "c1");
    assert_eq!(
        reasons(&env.hostile("wa", &ev, &[(&ev, claiming)]).await),
        ["out_of_scope"]
    );
    let up = escalate("wa", &mut doc, "g1", "c1", "c1");
    assert_eq!(env.push1("wa", &ev, up).await["status"], "accepted");
    let up = escalate("sup", &mut doc, "c1", "s1", "s1");
    assert_eq!(env.push1("sup", &ev, up).await["status"], "accepted");
    // The street's supervisor takes it through to `verified`.
    let step = |who: &str, doc: &mut Automerge, action: &str, from: &str, to: &str| {
        env.author(who).write(doc, action, |tx| {
            set_field(tx, "status", to);
            if action == "assign" {
                set_field(tx, "assignee", who);
            }
            let entry_to = if action == "assign" { who } else { to };
            timeline(tx, who, action, Some(from), Some(entry_to), None);
        })
    };
    for (action, from, to) in [
        ("assign", "reported", "assigned"),
        ("start", "assigned", "in_progress"),
        ("resolve", "in_progress", "resolved"),
        ("verify", "resolved", "verified"),
    ] {
        let c = step("sst", &mut doc, action, from, to);
        assert_eq!(
            env.push1("sst", &ev, c).await["status"],
            "accepted",
            "{action}"
        );
    }
    for who in ["sup", "wa"] {
        let close = step(who, &mut doc.clone(), "close", "verified", "closed");
        let res = env.hostile(who, &ev, &[(&ev, close)]).await;
        assert_eq!(
            reasons(&res),
            ["out_of_scope"],
            "{who} closes the street's event"
        );
    }
    let close = step("sst", &mut doc, "close", "verified", "closed");
    assert_eq!(env.push1("sst", &ev, close).await["status"], "accepted");
    env.stop().await;
}

/// Bytes whose checksum does not match: `bad_checksum`.
async fn refuses_bad_checksums(b: Backend) {
    let env = Env::new(b).await;
    let (r, _doc, c1) = env.person("wa", "g1", "Rui");
    let mut bad = c1.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let res = env.hostile("wa", &r, &[(&r, bad)]).await;
    assert_eq!(reasons(&res), ["bad_checksum"]);
    assert_eq!(res[0]["hash"], "");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    env.stop().await;
}

/// Bombs are refused from their bytes, before Automerge parses them (it would inflate 64 MiB, or
/// decode a billion operations for minutes), while another device's push goes through.
async fn refuses_bombs(b: Backend) {
    let env = Env::new(b).await;
    let r = env.rid();
    let bomb = deflate_bomb();
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let res = env.hostile("wa", &r, &[(&r, bomb)]).await;
    assert_eq!(reasons(&res), ["too_large"]);
    let ops = billion_op_change();
    assert!(ops.len() < 64);
    let res = env.hostile("wa", &r, &[(&r, ops.clone()), (&r, ops)]).await;
    assert_eq!(reasons(&res), ["too_many_ops", "too_many_ops"]);
    assert!(res[0]["detail"].as_str().unwrap().contains("100000"));
    // Honest changes of the same device are unaffected.
    let (r2, _d, c) = env.person("wa", "g1", "Sam");
    assert_eq!(env.push1("wa", &r2, c).await["status"], "accepted");
    env.stop().await;
}

/// The changes of one push are bounded, in operations and in bytes once inflated: the changes past
/// the budget are `busy` (the device keeps them and sends them next time), and sent again they are
/// accepted.
async fn busy_past_the_push_budget(b: Backend) {
    let by_ops = Limits {
        max_ops_per_push: 25,
        ..Limits::default()
    };
    let by_bytes = Limits {
        max_push_bytes: 800,
        ..Limits::default()
    };
    for limits in [by_ops, by_bytes] {
        let env = Env::with_limits(b.clone(), limits).await;
        let made: Vec<(String, Automerge, Vec<u8>)> = (0..6)
            .map(|i| env.person("wa", "g1", &format!("T{i}")))
            .collect();
        let mut waiting: Vec<(&str, Vec<u8>)> = made
            .iter()
            .map(|(r, _, c)| (r.as_str(), c.clone()))
            .collect();
        let res = env.hostile("wa", made[5].0.as_str(), &waiting).await;
        let got = reasons(&res);
        let accepted = got.iter().take_while(|r| **r == "accepted").count();
        assert!((1..6).contains(&accepted), "{got:?}");
        assert!(got[accepted..].iter().all(|r| *r == "busy"), "{got:?}");
        let mut rounds = 1;
        while !waiting.is_empty() {
            let res = env.push("wa", &waiting).await;
            let done = res.iter().take_while(|r| r["status"] == "accepted").count();
            assert!(done >= 1, "every push makes progress");
            waiting.drain(..done);
            rounds += 1;
            assert!(rounds < 10);
        }
        let (items, _) = env.pull_all("wb", 0, 100).await;
        assert!(items.is_empty(), "g1's records stay in g1");
        let (items, _) = env.pull_all("sup", 0, 100).await;
        let mut got: Vec<&str> = items
            .iter()
            .filter_map(|i| {
                made.iter()
                    .find(|m| m.0 == i["record"])
                    .map(|m| m.0.as_str())
            })
            .collect();
        got.sort();
        let mut want: Vec<&str> = made.iter().map(|m| m.0.as_str()).collect();
        want.sort();
        assert_eq!(got, want, "each change once");
        env.stop().await;
    }
    // A compressed change counts with its inflated size: small on the wire, it still spends the
    // budget, and alone in a push it goes through.
    let env = Env::with_limits(
        b,
        Limits {
            max_push_bytes: 2_000,
            ..Limits::default()
        },
    )
    .await;
    let (r1, _, small) = env.person("wa", "g1", "Small");
    let (r2, _, big) = env.person("wa", "g1", &"x".repeat(3_000));
    let packed = compressed(&big);
    assert!(packed.len() < 600, "{}", packed.len());
    let res = env.push("wa", &[(&r1, small), (&r2, packed.clone())]).await;
    assert_eq!(reasons(&res), ["accepted", "busy"]);
    let res = env.push1("wa", &r2, packed).await;
    assert_eq!(res["status"], "accepted", "{res}");
    // Stored as the plain change (its hash is the plain change's).
    let plain = Change::try_from(&big[..]).unwrap();
    assert_eq!(res["hash"], plain.hash().to_string());
    env.stop().await;
}

/// A batch large enough to be judged on several threads (`Limits::plan_threads`) is answered as one
/// thread would answer it: each record's changes in order (a change listed before its dependency
/// still lands after it), a change already in the log or repeated in the push answered with its seq,
/// refusals where they belong, each push's new entries together in the log, and every record whole
/// for a reader.
async fn judges_large_batches_on_several_threads(b: Backend) {
    let env = Env::with_limits(
        b,
        Limits {
            plan_threads: 3,
            ..Limits::default()
        },
    )
    .await;
    let (old, mut old_doc, old_create) = env.person("wa", "g1", "Old");
    let old_seq = env.push1("wa", &old, old_create.clone()).await["seq"]
        .as_i64()
        .unwrap();
    // Per push: who, the changes, and the answer each must get.
    type Push<'a> = (&'a str, Vec<(String, Vec<u8>)>, Vec<&'a str>);
    let mut pushes: Vec<Push> = Vec::new();
    let mut docs: Vec<(String, Automerge)> = Vec::new();
    for (who, area) in [("wa", "g1"), ("wb", "g2"), ("sup", "g1")] {
        let (mut changes, mut want) = (Vec::new(), Vec::new());
        for i in 0..150 {
            let (r, mut doc, create) = env.person(who, area, &format!("{who} {i}"));
            let edit = env.edit(who, &mut doc, "phone", &format!("1380013{i:04}"));
            if i % 3 == 0 {
                changes.push((r.clone(), edit));
                changes.push((r.clone(), create));
            } else {
                changes.push((r.clone(), create));
                changes.push((r.clone(), edit));
            }
            want.extend(["accepted", "accepted"]);
            docs.push((r, doc));
        }
        pushes.push((who, changes, want));
    }
    let wa = &mut pushes[0];
    // Already in the log, then an edit of it.
    let old_at = wa.1.len();
    wa.1.push((old.clone(), old_create));
    wa.1.push((
        old.clone(),
        env.edit("wa", &mut old_doc, "phone", "13800139999"),
    ));
    // Repeated within the push.
    let repeat_at = wa.1.len();
    let again = wa.1[5].clone();
    wa.1.push(again);
    // Outside the worker's grid, built on a change the relay never got, and corrupted.
    let (far, _, far_create) = env.person("wa", "g2", "Far");
    wa.1.push((far, far_create));
    let (lost, mut lost_doc, _) = env.person("wa", "g1", "Lost");
    wa.1.push((lost, env.edit("wa", &mut lost_doc, "phone", "1")));
    let (bad, _, mut bad_create) = env.person("wa", "g1", "Bad");
    let last = bad_create.len() - 1;
    bad_create[last] ^= 1;
    wa.1.push((bad, bad_create));
    wa.2.extend([
        "accepted",
        "accepted",
        "accepted",
        "out_of_scope",
        "missing_deps",
        "bad_checksum",
    ]);
    docs.push((old.clone(), old_doc));

    // Held writer: the pushes queue up and are planned in as few batches as the writer takes.
    let hold = env.hold_writer().await;
    let sent = pushes.iter().map(|(who, changes, _)| {
        let changes: Vec<(&str, Vec<u8>)> = changes
            .iter()
            .map(|(r, c)| (r.as_str(), c.clone()))
            .collect();
        let env = &env;
        async move { env.push(who, &changes).await }
    });
    let (answers, ()) = tokio::join!(futures_util::future::join_all(sent), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold.release().await;
    });

    let mut all_new = HashSet::new();
    for ((who, changes, want), got) in pushes.iter().zip(&answers) {
        assert_eq!(&reasons(got), want, "{who}");
        let seq = |i: usize| got[i]["seq"].as_i64().unwrap();
        let mut new: Vec<i64> = Vec::new();
        for (i, answer) in got.iter().enumerate().take(changes.len()) {
            match (*who, answer["status"].as_str()) {
                (_, Some("rejected")) => {}
                ("wa", _) if i == old_at => assert_eq!(seq(i), old_seq, "already in the log"),
                ("wa", _) if i == repeat_at => {
                    assert_eq!(seq(i), seq(5), "a repeat: the first's seq")
                }
                _ => new.push(seq(i)),
            }
        }
        // Each record's edit after its creation, whatever the order in the push.
        for pair in 0..150 {
            let (a, b) = (seq(2 * pair), seq(2 * pair + 1));
            if pair % 3 == 0 {
                assert!(
                    a > b,
                    "{who}: the edit listed first lands after its record's creation"
                );
            } else {
                assert!(b > a);
            }
        }
        new.sort_unstable();
        assert_eq!(
            new.last().unwrap() - new[0] + 1,
            new.len() as i64,
            "{who}: a push's entries are together in the log"
        );
        for s in new {
            assert!(all_new.insert(s), "seq {s} given twice");
        }
    }
    let (items, _) = env.pull_all("op", 0, 1000).await;
    assert_eq!(items.len(), all_new.len() + 1);
    for (record, doc) in &docs {
        assert_eq!(apply_items(&items, record).get_heads(), doc.get_heads());
    }
    env.stop().await;
}

/// A device's consecutive changes of a record in one push are judged as a run (applied in one batch,
/// each judged on the document at its own heads): every change still gets its own answer, what builds
/// on a refused change is refused with it, a move inside a run is logged as a move as of its own
/// heads, and what the relay keeps (log, document, view) is what the accepted changes make.
async fn judges_each_change_of_a_run(b: Backend) {
    let env = Env::new(b).await;
    // Two edits, a move out of the worker's scope, an edit built on the move.
    let (a, mut a_doc, a1) = env.person("wa", "g1", "Ada");
    let a2 = env.edit("wa", &mut a_doc, "phone", "13800138001");
    let a3 = env.edit("wa", &mut a_doc, "phone", "13800138002");
    let a_kept = a_doc.get_heads();
    let a4 = env.move_to("wa", &mut a_doc, "g9");
    let a5 = env.edit("wa", &mut a_doc, "phone", "13800138003");
    // A record in the log, then a run with a forged operation counter in its middle.
    let (r, mut r_doc, r1) = env.person("wa", "g1", "Bo");
    assert_eq!(env.push1("wa", &r, r1).await["status"], "accepted");
    let r2 = env.edit("wa", &mut r_doc, "phone", "13800138005");
    let r_kept = r_doc.get_heads();
    let honest = env.edit("wa", &mut r_doc, "phone", "13800138006");
    let mut forged = Change::try_from(&honest[..]).unwrap().decode();
    forged.start_op = std::num::NonZeroU64::new(1_000).unwrap();
    let r3 = Change::from(forged).raw_bytes().to_vec();
    let r4 = env.edit("wa", &mut r_doc, "phone", "13800138007");
    // Out of the worker's scope and back: the state between the two is refused, whatever the end.
    let (d, mut d_doc, d1) = env.person("wa", "g1", "Di");
    let d_kept = d_doc.get_heads();
    let d2 = env.move_to("wa", &mut d_doc, "g9");
    let d3 = env.move_to("wa", &mut d_doc, "g1");
    // A value the rule book refuses, mended by the next change.
    let (e, mut e_doc, e1) = env.person("wa", "g1", "Ed");
    let e_kept = e_doc.get_heads();
    let e2 = env.edit("wa", &mut e_doc, "phone", "1");
    let e3 = env.edit("wa", &mut e_doc, "phone", "13800138004");
    // Every change fine.
    let (c, mut c_doc, c1) = env.person("wa", "g1", "Cy");
    let more: Vec<Vec<u8>> = (0..6)
        .map(|i| env.edit("wa", &mut c_doc, "phone", &format!("13{i}")))
        .collect();
    let mut changes: Vec<(&str, Vec<u8>)> = vec![
        (&a, a1),
        (&a, a2),
        (&a, a3),
        (&a, a4),
        (&a, a5),
        (&r, r2),
        (&r, r3),
        (&r, r4),
        (&d, d1),
        (&d, d2),
        (&d, d3),
        (&e, e1),
        (&e, e2),
        (&e, e3),
        (&c, c1),
    ];
    changes.extend(more.into_iter().map(|m| (c.as_str(), m)));
    let res = env.hostile("wa", &a, &changes).await;
    let mut want = vec![
        "accepted",
        "accepted",
        "accepted",
        "out_of_scope",
        "missing_deps",
        "accepted",
        "malformed",
        "missing_deps",
        "accepted",
        "out_of_scope",
        "missing_deps",
        "accepted",
        "invalid_value",
        "missing_deps",
    ];
    want.extend(["accepted"; 7]);
    assert_eq!(reasons(&res), want);
    assert_eq!(env.stored(&a).await.1, a_kept);
    assert_eq!(env.stored(&r).await.1, r_kept);
    assert_eq!(env.stored(&d).await.1, d_kept);
    assert_eq!(env.stored(&e).await.1, e_kept);
    assert_eq!(env.stored(&c).await.1, c_doc.get_heads());
    // The relay's view is the last accepted change's state.
    let mut phones = Vec::new();
    for id in [&a, &r, &c] {
        let rec = env.snapshot_item(id).await.unwrap();
        phones.push(rec["view"]["fields"]["phone"].as_str().unwrap().to_owned());
    }
    assert_eq!(phones, ["13800138002", "13800138005", "135"]);

    // A supervisor's run that moves a record between its grids: g2's worker gets the document as of
    // the move, then the edit after it.
    let (m, mut m_doc, m1) = env.person("sup", "g1", "Mo");
    let m2 = env.edit("sup", &mut m_doc, "phone", "13800138008");
    let m3 = env.move_to("sup", &mut m_doc, "g2");
    let moved_at = m_doc.get_heads();
    let m4 = env.edit("sup", &mut m_doc, "phone", "13800138009");
    let res = env
        .push("sup", &[(&m, m1), (&m, m2), (&m, m3), (&m, m4)])
        .await;
    assert_eq!(reasons(&res), ["accepted"; 4]);
    let (items, _) = env.pull_all("wb", 0, 100).await;
    let items: Vec<&Value> = items.iter().filter(|i| i["record"] == m).collect();
    assert_eq!(items.len(), 2, "{items:?}");
    let mut whole = Automerge::new();
    whole
        .load_incremental(&B64.decode(items[0]["bytes"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(whole.get_heads(), moved_at);
    assert_eq!(
        apply_items(&items.into_iter().cloned().collect::<Vec<_>>(), &m).get_heads(),
        m_doc.get_heads()
    );
    env.stop().await;
}

/// Relays on one database judge their batches at the same time and take turns only to write (on
/// SQLite, one relay: its one writer). Concurrent edits of a record pushed through two relays while the
/// log is locked are both judged on the record as it was; the relay that writes second finds that the
/// other changed the record, judges its batch again, and the stored document holds both edits.
async fn relays_judge_at_once(b: Backend) {
    let env = Env::new(b).await;
    let (r, doc, c1) = env.person("wa", "g1", "Rue");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    let second = match &env.storage {
        StorageConfig::Postgres { .. } => Some(
            start(ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                storage: env.storage.clone(),
                limits: env.limits.clone(),
                console: None,
            })
            .await
            .unwrap(),
        ),
        _ => None,
    };
    let other = second
        .as_ref()
        .map_or(env.base.clone(), |s| format!("http://{}", s.local_addr()));
    let (mut wa_doc, mut sup_doc) = (doc.clone(), doc.clone());
    let by_wa = env.edit("wa", &mut wa_doc, "phone", "13800138011");
    let by_sup = env.edit("sup", &mut sup_doc, "sex", "female");
    let (by_wa, by_sup) = ([(r.as_str(), by_wa)], [(r.as_str(), by_sup)]);
    let hold = env.hold_writer().await;
    let (wa, sup, ()) = tokio::join!(
        env.push("wa", &by_wa),
        env.push_via(&other, "sup", &by_sup),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            hold.release().await;
        }
    );
    assert_eq!(
        (reasons(&wa), reasons(&sup)),
        (vec!["accepted"], vec!["accepted"])
    );
    wa_doc.merge(&mut sup_doc).unwrap();
    let mut want = wa_doc.get_heads();
    let mut got = env.stored(&r).await.1;
    want.sort();
    got.sort();
    assert_eq!(got, want, "the stored document holds both edits");
    let rec = env.snapshot_item(&r).await.unwrap();
    let view = &rec["view"]["fields"];
    assert_eq!(
        (view["phone"].as_str(), view["sex"].as_str()),
        (Some("13800138011"), Some("female"))
    );
    if let Some(s) = second {
        s.shutdown().await;
    }
    env.stop().await;
}

/// The writer judges the next batch while the last one commits. A batch that touches a record of the
/// one being committed waits for its commit (else an edit would be judged on the document without
/// the edit before it); a plan whose areas changed before its commit is judged again (else a record
/// would be stored with its area's old place).
async fn plans_the_next_batch_while_the_last_commits(b: Backend) {
    // Every push is judged while the last transaction commits, however small.
    let env = Env::with_limits(
        b,
        Limits {
            pipeline_min_changes: Some(0),
            ..Limits::default()
        },
    )
    .await;
    let (r, mut doc, c1) = env.person("wa", "g1", "Pia");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");

    // The same record in two batches: an edit, then the edit after it.
    let e1 = env.edit("wa", &mut doc, "phone", "13800138021");
    let e2 = env.edit("wa", &mut doc, "phone", "13800138022");
    let answers = env
        .pushes_behind_the_lock(vec![("wa", &r, e1), ("wa", &r, e2)], "")
        .await;
    for a in &answers {
        assert_eq!(a["status"], "accepted", "{a}");
    }
    // The same change in two batches.
    let e3 = env.edit("wa", &mut doc, "phone", "13800138023");
    let answers = env
        .pushes_behind_the_lock(vec![("wa", &r, e3.clone()), ("wa", &r, e3)], "")
        .await;
    let (first, again) = (&answers[0], &answers[1]);
    for a in [first, again] {
        assert_eq!(a["status"], "accepted", "{a}");
    }
    assert_eq!(
        first["seq"], again["seq"],
        "one entry for the change pushed twice"
    );
    let (seqs, heads) = env.stored(&r).await;
    assert_eq!(seqs.len(), 4, "{seqs:?}");
    assert_eq!(heads, doc.get_heads());

    // Two batches judged while a third commits, written together: each answered with its own
    // entry.
    let e4 = env.edit("wa", &mut doc, "phone", "13800138024");
    let (x, x_doc, x_bytes) = env.person("wa", "g1", "Xan");
    let (y, y_doc, y_bytes) = env.person("wa", "g1", "Yul");
    let answers = env
        .pushes_behind_the_lock(
            vec![("wa", &r, e4), ("wa", &x, x_bytes), ("wa", &y, y_bytes)],
            "",
        )
        .await;
    let (items, _) = env.pull_all("op", 0, 1000).await;
    for (answer, record, d) in [(&answers[1], &x, &x_doc), (&answers[2], &y, &y_doc)] {
        assert_eq!(answer["status"], "accepted", "{answer}");
        assert_eq!(answer["hash"], d.get_heads()[0].to_string());
        let item = items.iter().find(|i| i["seq"] == answer["seq"]).unwrap();
        assert_eq!(item["record"], record.as_str());
    }
    assert_eq!(answers[0]["status"], "accepted", "{}", answers[0]);

    // Another record while the first batch waits for the lock, planned with the areas as they were;
    // g2 moves under c2 before either commits.
    let (a, _, a_bytes) = env.person("wa", "g1", "Quin");
    let (moved, _, moved_bytes) = env.person("op", "g2", "Ros");
    let answers = env
        .pushes_behind_the_lock(
            vec![("wa", &a, a_bytes), ("op", &moved, moved_bytes)],
            "UPDATE areas SET parent = 'c2', path = 'd1/s2/c2/g2/' WHERE id = 'g2';
             UPDATE meta SET value = value + 1 WHERE key = 'areas_version';",
        )
        .await;
    for a in &answers {
        assert_eq!(a["status"], "accepted", "{a}");
    }
    assert!(
        snapshot_ids(&env, "sup2").await.contains(&moved),
        "the record is stored in its area's new place"
    );
    assert!(!snapshot_ids(&env, "sup").await.contains(&moved));
    env.stop().await;
}

/// A change chunk as the compressed chunk type of the format (Automerge never sends one for a single
/// change, but may read one).
fn compressed(change: &[u8]) -> Vec<u8> {
    let mut i = 9;
    while change[i] & 0x80 != 0 {
        i += 1;
    }
    let data = &change[i + 1..];
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, data).unwrap();
    chunk(data, 2, &enc.finish().unwrap())
}

/// The writer's time for one push is bounded: with no time at all, each push gets its first change
/// judged and the rest answered `busy`.
async fn busy_past_the_push_time(b: Backend) {
    let limits = Limits {
        max_push_millis: 0,
        ..Limits::default()
    };
    let env = Env::with_limits(b, limits).await;
    let (r, mut doc, c1) = env.person("wa", "g1", "Uma");
    let c2 = env.edit("wa", &mut doc, "phone", "111");
    let c3 = env.edit("wa", &mut doc, "phone", "112");
    let res = env
        .push(
            "wa",
            &[(&r, c1.clone()), (&r, c2.clone()), (&r, c3.clone())],
        )
        .await;
    assert_eq!(reasons(&res), ["accepted", "busy", "busy"]);
    // A change whose dependency is later in the push waits for it, and is `busy` when time is out.
    let res = env.push("wa", &[(&r, c3.clone()), (&r, c2.clone())]).await;
    assert_eq!(reasons(&res), ["busy", "accepted"]);
    let res = env.push("wa", &[(&r, c2), (&r, c3)]).await;
    assert_eq!(reasons(&res), ["accepted", "accepted"]);
    env.stop().await;
}

/// A change whose operation counter does not follow its dependencies (Automerge never makes one) is
/// refused before it can push the record's counter up; one past the record limit is `too_large`.
async fn refuses_forged_counters(b: Backend) {
    let env = Env::new(b).await;
    let (r, mut doc, c1) = env.person("wa", "g1", "Vic");
    assert_eq!(env.push1("wa", &r, c1).await["status"], "accepted");
    let honest = env.edit("wa", &mut doc, "phone", "135");
    let forge = |start: u64| {
        let mut e = Change::try_from(&honest[..]).unwrap().decode();
        e.start_op = std::num::NonZeroU64::new(start).unwrap();
        Change::from(e).raw_bytes().to_vec()
    };
    let res = env.hostile("wa", &r, &[(&r, forge(1_000_000))]).await;
    assert_eq!(reasons(&res), ["malformed"]);
    assert!(res[0]["detail"].as_str().unwrap().contains("counter"));
    let res = env.hostile("wa", &r, &[(&r, forge(3_000_000))]).await;
    assert_eq!(reasons(&res), ["too_large"]);
    assert_eq!(env.push1("wa", &r, honest).await["status"], "accepted");
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
    let (r50, _d, c) = env.person("sup", "g4", "Mo");
    assert_eq!(env.push1("sup", &r50, c).await["status"], "accepted");
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

/// A client for one request the relay may answer early and then close: it keeps no connection, so
/// the closed one is never reused by the requests that follow.
fn one_off_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

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
    let (r, _, c) = env.person("wa", "g1", "Kim");
    assert_eq!(env.push1("wa", &r, c).await["status"], "accepted");
    let (r2, _, c2) = env.person("wb", "g2", "Lu");
    assert_eq!(env.push1("wb", &r2, c2).await["status"], "accepted");
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

/// `HEAD ?record=` status and `Upload-Offset` as `who` sees them.
async fn head_linking(env: &Env, who: &str, sha: &str, record: &str) -> (u16, Option<String>) {
    let h = env
        .http
        .head(env.url(&format!("/v1/attachments/{sha}?record={record}")))
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

/// `HEAD ?record=` links a complete attachment to the caller's record only when the caller may already
/// read it: knowing a hash never links, and so never opens, someone else's attachment.
async fn head_links_readable_attachments_to_own_records(b: Backend) {
    let env = Env::new(b).await;
    let (r, _, c) = env.person("wa", "g1", "Kim");
    let (r2, _, c2) = env.person("wb", "g2", "Lu");
    let (r3, _, c3) = env.person("sup2", "g3", "Mei");
    for (who, record, change) in [("wa", &r, c), ("wb", &r2, c2), ("sup2", &r3, c3)] {
        assert_eq!(env.push1(who, record, change).await["status"], "accepted");
    }
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    let sha = hex::encode(Sha256::digest(&data));
    let size = Some(data.len().to_string());
    let up = put_chunk(&env, "wa", &sha, &r, &data, 0, data.len()).await;
    assert_eq!(up.status().as_u16(), 200);
    // Another grid knows the hash: it cannot link it to its own record, nor to the owner's.
    assert_eq!(head_linking(&env, "wb", &sha, &r2).await, (404, None));
    assert_eq!(head_linking(&env, "wb", &sha, &r).await, (404, None));
    assert_eq!(get_as(&env, "wb", &sha).await.0, 403);
    // The supervisor may read it, but may not link it to a record outside its scope.
    assert_eq!(head_linking(&env, "sup", &sha, &r3).await, (403, None));
    assert_eq!(get_as(&env, "sup2", &sha).await.0, 403);
    assert_eq!(head_linking(&env, "sup", &sha, "not-a-record").await.0, 400);
    // Nor does a HEAD without a record link anything.
    assert_eq!(head_as(&env, "sup", &sha).await, (200, size.clone()));
    assert_eq!(get_as(&env, "wb", &sha).await.0, 403);
    // Linked to the supervisor's record in g2 (its scope), it is readable there; again is harmless.
    for _ in 0..2 {
        assert_eq!(
            head_linking(&env, "sup", &sha, &r2).await,
            (200, size.clone())
        );
    }
    assert_eq!(get_as(&env, "wb", &sha).await, (200, data.clone()));
    // A record the relay has not seen yet is the caller's, as for PUT.
    assert_eq!(
        head_linking(&env, "wa", &sha, &env.rid()).await,
        (200, size.clone())
    );
    // Content the relay does not have: nothing to link.
    let other = hex::encode(Sha256::digest(b"not uploaded"));
    assert_eq!(head_linking(&env, "wa", &other, &r).await, (404, None));
    // The caller's own upload in progress answers where it stands, record or not.
    let part = put_chunk(&env, "wa", &other, &r, &[1u8; 20], 0, 10).await;
    assert_eq!(part.status().as_u16(), 200);
    assert_eq!(
        head_linking(&env, "wa", &other, &r).await,
        (308, Some("10".into()))
    );
    env.stop().await;
}

async fn attachment_limits(b: Backend) {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let env = Env::with_limits(b, limits).await;
    let (r, _, c) = env.person("wa", "g1", "Kim");
    assert_eq!(env.push1("wa", &r, c).await["status"], "accepted");
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
    // A chunk above the body limit, on a client of its own: the relay answers from the headers and
    // may close the connection while the body is still being sent, so the 413 can be lost to a reset
    // (and that connection must not serve the requests below). Either way nothing is kept.
    let data = vec![7u8; 100_000];
    let sha = hex::encode(Sha256::digest(&data));
    let r1 = one_off_client()
        .put(env.url(&format!("/v1/attachments/{sha}?record={r}")))
        .bearer_auth(&env.tokens["wa"])
        .header(
            "Content-Range",
            format!("bytes 0-{}/{}", data.len() - 1, data.len()),
        )
        .body(data.clone())
        .send()
        .await;
    match r1 {
        Ok(r1) => assert_eq!(r1.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "unexpected error {e}"),
    }
    assert_eq!(head_as(&env, "wa", &sha).await, (404, None));
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
    // The test environment registered wa's store already: another store is refused until a reset.
    assert!(admin.list_user_devices("wa").await.unwrap()[0].bound);
    assert_eq!(register("aa01").await.unwrap().status().as_u16(), 409);
    admin.reset_device("dev-wa").await.unwrap();
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

/// Follow-up schedules: defined by the operator per area, each device gets those of its areas and
/// their ancestors (a schedule covers its area's subtree), `/v1/me` names them by a version that
/// follows every change, bad definitions are refused with what is wrong, and an area with a schedule
/// is not removed.
async fn follow_up_schedules(b: Backend) {
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    let schedule = |id: &str, area: &str, kind: Kind, tag: Option<&str>, every: Every| Schedule {
        id: id.into(),
        area: area.into(),
        name: format!("Schedule {id}"),
        kind,
        tag: tag.map(str::to_owned),
        category: None,
        every,
    };
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let (_, empty) = env.get("wa", "/v1/me").await;
    for s in [
        schedule(
            "alone",
            "c1",
            Kind::Person,
            Some("lives alone"),
            Every::Days(7),
        ),
        schedule(
            "hazards",
            "g1",
            Kind::Object,
            Some("hazard"),
            Every::Months(1),
        ),
        schedule("elsewhere", "s2", Kind::Person, None, Every::Days(30)),
        schedule("district", "d1", Kind::Place, None, Every::Months(12)),
    ] {
        admin.put_schedule(s).await.unwrap();
    }
    let (s, wa) = env.get("wa", "/v1/schedules").await;
    assert_eq!(s, 200, "{wa}");
    assert_eq!(
        ids(&wa),
        ["alone", "district", "hazards"],
        "g1's, and its ancestors'"
    );
    let alone = wa["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "alone")
        .unwrap();
    assert_eq!(alone["every"], json!({"days": 7}));
    assert_eq!(alone["tag"], "lives alone");
    assert_eq!(
        ids(&env.get("wb", "/v1/schedules").await.1),
        ["alone", "district"]
    );
    assert_eq!(
        ids(&env.get("sst", "/v1/schedules").await.1),
        ["alone", "district", "hazards"],
        "a street supervisor's subtree"
    );
    assert_eq!(
        ids(&env.get("sup2", "/v1/schedules").await.1),
        ["district", "elsewhere"]
    );
    assert_eq!(ids(&env.get("op", "/v1/schedules").await.1).len(), 4);
    // The version in /v1/me is the digest of what /v1/schedules answers, and follows changes.
    let (_, me) = env.get("wa", "/v1/me").await;
    let version = |v: &Value| {
        let list: Vec<Schedule> = serde_json::from_value(v["schedules"].clone()).unwrap();
        gridwork_protocol::schedules_version(&list)
    };
    assert_eq!(me["schedules_version"], version(&wa));
    assert_ne!(me["schedules_version"], empty["schedules_version"]);
    admin
        .put_schedule(schedule(
            "alone",
            "c1",
            Kind::Person,
            Some("lives alone"),
            Every::Days(14),
        ))
        .await
        .unwrap();
    let (_, me2) = env.get("wa", "/v1/me").await;
    assert_ne!(me2["schedules_version"], me["schedules_version"]);
    let (_, wa2) = env.get("wa", "/v1/schedules").await;
    assert_eq!(me2["schedules_version"], version(&wa2));
    // A schedule of another street changes nothing for wa.
    admin.remove_schedule("elsewhere").await.unwrap();
    assert_eq!(
        env.get("wa", "/v1/me").await.1["schedules_version"],
        me2["schedules_version"]
    );
    // Refused, with what is wrong; nothing stored changes.
    for bad in [
        schedule("Bad Id", "c1", Kind::Person, None, Every::Days(7)),
        schedule("novisit", "c1", Kind::Visit, None, Every::Days(7)),
        schedule("zero", "c1", Kind::Person, None, Every::Days(0)),
        schedule("toolong", "c1", Kind::Person, None, Every::Months(25)),
        schedule(
            "nowhere",
            "no-such-area",
            Kind::Person,
            None,
            Every::Days(7),
        ),
    ] {
        assert!(is_invalid(admin.put_schedule(bad).await));
    }
    assert!(is_not_found(admin.remove_schedule("nope").await));
    assert_eq!(
        env.get("wa", "/v1/me").await.1["schedules_version"],
        me2["schedules_version"]
    );
    // An area with a schedule stays until the schedule goes.
    admin
        .add_area("g4", Some("c1"), AreaLevel::Grid, "Grid 4")
        .await
        .unwrap();
    admin
        .put_schedule(schedule(
            "g4-weekly",
            "g4",
            Kind::Person,
            None,
            Every::Days(7),
        ))
        .await
        .unwrap();
    let err = admin.remove_area("g4").await.unwrap_err().to_string();
    assert!(err.contains("1 schedule(s)"), "{err}");
    admin.remove_schedule("g4-weekly").await.unwrap();
    admin.remove_area("g4").await.unwrap();
    admin.close().await;
    env.stop().await;
}

/// A city form: served to the devices of the areas it covers, its version in `/v1/me`; attribute values
/// a change writes are checked by it when the change names the forms the relay has (its author's
/// device had them), and a change made under older forms lands.
async fn city_forms(b: Backend) {
    use gridwork_protocol::{FormField, FormType};
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    let field = |key: &str, ty: FormType, options: &[&str]| FormField {
        key: key.into(),
        label_zh: "字段".into(),
        label_en: "Field".into(),
        ty,
        required: key == "pension",
        options: options.iter().map(|o| o.to_string()).collect(),
        help_zh: None,
        help_en: None,
    };
    let form = Form {
        id: "c1-person".into(),
        area: "c1".into(),
        kind: Kind::Person,
        fields: vec![
            field("pension", FormType::YesNo, &[]),
            field("income", FormType::Choice, &["low", "high"]),
        ],
    };
    let (_, me0) = env.get("wa", "/v1/me").await;
    admin.put_form(form.clone()).await.unwrap();
    let (s, wa) = env.get("wa", "/v1/forms").await;
    assert_eq!(s, 200, "{wa}");
    let sent: Vec<Form> = serde_json::from_value(wa["forms"].clone()).unwrap();
    assert_eq!(sent, std::slice::from_ref(&form));
    assert!(env.get("sup2", "/v1/forms").await.1["forms"]
        .as_array()
        .unwrap()
        .is_empty());
    let (_, me) = env.get("wa", "/v1/me").await;
    let version = gridwork_protocol::forms_version(&sent);
    assert_eq!(me["forms_version"], version.as_str());
    assert_ne!(me["forms_version"], me0["forms_version"]);

    // A change that names the relay's forms: its values are checked by them.
    let author = env.author("wa");
    let current = author_note(author, Some(&version));
    let (r, mut doc, c) = env.person("wa", "g1", "Kim");
    assert_eq!(env.push1("wa", &r, c).await["status"], "accepted");
    let set_attr = |doc: &mut Automerge, note: &str, key: &str, value: &str| {
        author.write_noted(doc, note.to_owned(), |tx| {
            let attrs = layout::root_obj(tx, layout::ATTRS).unwrap();
            tx.put(&attrs, key, value).unwrap();
        })
    };
    let before = env.stored(&r).await;
    let mut fork = doc.fork();
    let bad = set_attr(&mut fork, &current, "pension", "perhaps");
    let a = env.push1("wa", &r, bad).await;
    assert_eq!(
        (a["status"].as_str(), a["reason"].as_str()),
        (Some("rejected"), Some("invalid_value")),
        "{a}"
    );
    assert!(
        a["detail"].as_str().unwrap().contains("attrs.pension"),
        "{a}"
    );
    assert!(
        !a["detail"].as_str().unwrap().contains("perhaps"),
        "never the value: {a}"
    );
    assert_eq!(env.stored(&r).await, before, "nothing stored changed");
    let good = set_attr(&mut doc, &current, "pension", "yes");
    assert_eq!(env.push1("wa", &r, good).await["status"], "accepted");
    // A change made under older forms (the device had none yet): it lands, to be flagged.
    let old = set_attr(&mut doc, &author.note("update"), "income", "about 3000");
    assert_eq!(env.push1("wa", &r, old).await["status"], "accepted");
    // Outside the form's subtree the attribute is free.
    let (r2, mut doc2, c2) = env.person("wb", "g2", "Lee");
    assert_eq!(env.push1("wb", &r2, c2).await["status"], "accepted");
    let wb = env.author("wb");
    let free = wb.write_noted(&mut doc2, author_note(wb, Some(&version)), |tx| {
        let attrs = layout::root_obj(tx, layout::ATTRS).unwrap();
        tx.put(&attrs, "nickname", "anything").unwrap();
    });
    assert_eq!(env.push1("wb", &r2, free).await["status"], "accepted");

    // Definitions are checked; an area with a form stays until the form goes.
    let mut bad = form.clone();
    bad.fields[1].options.clear();
    assert!(is_invalid(admin.put_form(bad).await));
    let mut nowhere = form.clone();
    nowhere.area = "no-such-area".into();
    assert!(is_invalid(admin.put_form(nowhere).await));
    admin
        .add_area("g4", Some("c1"), AreaLevel::Grid, "Grid 4")
        .await
        .unwrap();
    let mut g4 = form.clone();
    g4.id = "g4".into();
    g4.area = "g4".into();
    admin.put_form(g4).await.unwrap();
    let err = admin.remove_area("g4").await.unwrap_err().to_string();
    assert!(err.contains("1 form(s)"), "{err}");
    admin.remove_form("g4").await.unwrap();
    admin.remove_area("g4").await.unwrap();
    assert!(is_not_found(admin.remove_form("g4").await));
    admin.remove_form("c1-person").await.unwrap();
    assert_eq!(
        env.get("wa", "/v1/me").await.1["forms_version"],
        me0["forms_version"]
    );
    admin.close().await;
    env.stop().await;
}

/// Merging duplicates on the relay: the rule book's `merge`, `absorb` and `dups` rules, on pushed
/// changes (a hostile device that skips its own checks); candidates listed by `GET /v1/duplicates`.
async fn judges_merges_of_duplicates(b: Backend) {
    let env = Env::new(b).await;
    let person = |who: &str, area: &str, name: &str| {
        let id = env.rid();
        let (doc, bytes) = env.author(who).create(&id, |tx| {
            new_record(
                tx,
                "person",
                area,
                &[("name", name), ("birth_date", "1950-01-02")],
            )
        });
        (id, doc, bytes)
    };
    let (kept, mut kdoc, c1) = person("wa", "g1", "王芳");
    let (away, mut adoc, c2) = person("wa", "g1", "Wang Fang");
    let (other, _, c3) = person("wb", "g2", "Wang Fang");
    assert_eq!(env.push1("wa", &kept, c1).await["status"], "accepted");
    assert_eq!(env.push1("wa", &away, c2).await["status"], "accepted");
    assert_eq!(env.push1("wb", &other, c3).await["status"], "accepted");
    let (s, v) = env.get("sup", "/v1/duplicates").await;
    assert_eq!(s, 200, "{v}");
    let pairs = v["duplicates"].as_array().unwrap();
    assert_eq!(pairs.len(), 3, "three alike in c1: {v}");
    let (_, v) = env.get("wa", "/v1/duplicates").await;
    assert_eq!(
        v["duplicates"].as_array().unwrap().len(),
        1,
        "a worker's grid: {v}"
    );
    assert_eq!(
        v["duplicates"][0]["reasons"],
        json!(["same_name_and_birth_date"])
    );
    let (s, _) = env.get("sup", "/v1/duplicates?area=g9").await;
    assert_eq!(s, 404);

    let dups_put = |tx: &mut automerge::transaction::Transaction<'_>, key: &str, value: &str| {
        let map = match layout::root_obj(tx, layout::DUPS) {
            Some(m) => m,
            None => tx
                .put_object(ROOT, layout::DUPS, automerge::ObjType::Map)
                .unwrap(),
        };
        tx.put(&map, key, value).unwrap();
    };
    // Absorbing without the entry that explains it.
    let sneaky = env.author("wa").write(&mut kdoc.fork(), "absorb", |tx| {
        dups_put(tx, &away, "merged")
    });
    let a = env.push1("wa", &kept, sneaky).await;
    assert_eq!(a["reason"], "invalid_transition", "{a}");
    // The merge, as a device makes it: the kept record absorbs, the other becomes a tombstone.
    let wa = env.author("wa").user.clone();
    let absorb = env.author("wa").write(&mut kdoc, "absorb", |tx| {
        dups_put(tx, &away, "merged");
        timeline(tx, &wa, "absorb", Some(&away), None, None);
    });
    assert_eq!(env.push1("wa", &kept, absorb).await["status"], "accepted");
    let merge = env.author("wa").write(&mut adoc, "merge", |tx| {
        tx.put(ROOT, layout::DELETED, true).unwrap();
        timeline(tx, &wa, "merge", None, Some(&kept), None);
    });
    assert_eq!(env.push1("wa", &away, merge).await["status"], "accepted");
    // A merged record stays merged.
    let restore = env.author("wa").write(&mut adoc.fork(), "restore", |tx| {
        tx.put(ROOT, layout::DELETED, false).unwrap();
        timeline(tx, &wa, "restore", None, None, None);
    });
    let a = env.push1("wa", &away, restore).await;
    assert_eq!(a["reason"], "invalid_transition", "{a}");
    // A merge is not undone.
    let undo = env.author("wa").write(&mut kdoc.fork(), "edit", |tx| {
        dups_put(tx, &away, "distinct")
    });
    let a = env.push1("wa", &kept, undo).await;
    assert_eq!(a["reason"], "append_only", "{a}");
    let (_, v) = env.get("sup", "/v1/duplicates").await;
    assert_eq!(
        v["duplicates"].as_array().unwrap().len(),
        1,
        "kept and c1's other remain: {v}"
    );
    env.stop().await;
}

/// The web console's tables on both backends: accounts (argon2id), sessions that expire and end with
/// their account, and the audit trail newest first.
async fn console_accounts_sessions_and_audit(b: Backend) {
    use gridwork_server::storage::console::AuditRow;
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    let store = gridwork_server::storage::Store::open(&env.storage, &Limits::default())
        .await
        .unwrap();
    assert!(is_invalid(admin.set_web_password("sup", "short").await));
    assert!(is_not_found(
        admin.set_web_password("nobody", "long enough pw").await
    ));
    admin
        .set_web_password("sup", "long enough pw")
        .await
        .unwrap();
    let hash = store.web_account("sup").await.unwrap().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(gridwork_server::console::passwords::verify(
        Some(&hash),
        "long enough pw"
    ));
    assert!(!gridwork_server::console::passwords::verify(
        Some(&hash),
        "long enough PW"
    ));
    assert!(!gridwork_server::console::passwords::verify(
        None,
        "long enough pw"
    ));
    // A live session, an expired one.
    let (live, old) = ([1u8; 32], [2u8; 32]);
    let now = gridwork_protocol::time::now_secs();
    store
        .insert_web_session(live, "sup", "csrf-1", now + 3600)
        .await
        .unwrap();
    store
        .insert_web_session(old, "sup", "csrf-2", now - 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .web_session(live)
            .await
            .unwrap()
            .map(|s| (s.user, s.csrf)),
        Some(("sup".to_owned(), "csrf-1".to_owned()))
    );
    assert_eq!(store.web_session(old).await.unwrap(), None, "expired");
    store.delete_web_session(live).await.unwrap();
    assert_eq!(
        store
            .web_session(live)
            .await
            .unwrap()
            .map(|s| (s.user, s.csrf)),
        None
    );
    store
        .insert_web_session(live, "sup", "csrf-3", now + 3600)
        .await
        .unwrap();
    admin.remove_web_account("sup").await.unwrap();
    assert_eq!(
        store
            .web_session(live)
            .await
            .unwrap()
            .map(|s| (s.user, s.csrf)),
        None,
        "ended with the account"
    );
    assert!(is_not_found(admin.remove_web_account("sup").await));
    for (i, action) in ["login", "approved"].into_iter().enumerate() {
        store
            .audit(AuditRow {
                at: now + i as i64,
                user: "sup".into(),
                action: action.into(),
                target: (i == 1).then(|| "r1".to_owned()),
                outcome: "ok".into(),
            })
            .await
            .unwrap();
    }
    let trail = admin.audit_trail(10).await.unwrap();
    let got: Vec<(&str, Option<&str>)> = trail
        .iter()
        .map(|a| (a.action.as_str(), a.target.as_deref()))
        .collect();
    assert_eq!(
        got,
        [("approved", Some("r1")), ("login", None)],
        "newest first"
    );
    store.close().await;
    admin.close().await;
    env.stop().await;
}

fn author_note(author: &Author, forms_version: Option<&str>) -> String {
    serde_json::to_string(
        &ChangeNote::new(&author.user, &author.device, "update", vec![]).with_forms(forms_version),
    )
    .unwrap()
}

async fn admin_area_tree(b: Backend) {
    let env = Env::new(b).await;
    let admin = Admin::open(&env.storage).await.unwrap();
    let (r, mut doc, c) = env.person("wa", "g1", "Kim");
    assert_eq!(env.push1("wa", &r, c).await["status"], "accepted");
    assert_eq!(snapshot_ids(&env, "sup").await, std::slice::from_ref(&r));
    assert!(snapshot_ids(&env, "sup2").await.is_empty());
    // Rename.
    let (_, before) = env.get("wa", "/v1/me").await;
    admin.rename_area("g1", "Grid One").await.unwrap();
    let (_, areas) = env.get("wa", "/v1/areas").await;
    // The version in /v1/me follows the tree, so devices fetch it again.
    let (_, after) = env.get("wa", "/v1/me").await;
    assert_ne!(after["areas_version"], before["areas_version"]);
    assert_eq!(after["areas_version"], areas_version_of(&areas));
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
    let e = env.edit("wa", &mut doc, "phone", "13800138000");
    assert_eq!(env.push1("wa", &r, e).await["status"], "accepted");
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
        .add_area("g8", Some("c1"), AreaLevel::Grid, "Grid 8")
        .await
        .unwrap();
    admin.remove_area("g8").await.unwrap();
    assert!(!admin
        .list_areas()
        .await
        .unwrap()
        .iter()
        .any(|a| a.id == "g8"));
    assert!(is_not_found(admin.remove_area("g8").await));
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

/// The SQLite relay copies its WAL into the database file on a thread of its own, after its
/// commits, not when the WAL reaches the writer's own (much larger) threshold: the database file
/// grows while the relay runs, and the WAL stays about one batch long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_off_the_writer() {
    let env = Env::new(Backend::Sqlite).await;
    let db = env._dir.as_ref().unwrap().path().join("gridwork.db");
    let size = |f: &std::path::Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
    let before = size(&db);
    let made: Vec<(String, Automerge, Vec<u8>)> = (0..400)
        .map(|i| env.person("wa", "g1", &format!("Resident {i} {}", "x".repeat(500))))
        .collect();
    let changes: Vec<(&str, Vec<u8>)> = made
        .iter()
        .map(|(r, _, c)| (r.as_str(), c.clone()))
        .collect();
    for chunk in changes.chunks(100) {
        assert!(env
            .push("wa", chunk)
            .await
            .iter()
            .all(|a| a["status"] == "accepted"));
    }
    let started = Instant::now();
    while size(&db) < before + 200_000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the database file did not grow: {} -> {} bytes, WAL {} bytes",
            before,
            size(&db),
            size(&db.with_extension("db-wal"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wal = size(&db.with_extension("db-wal"));
    assert!(wal < 8_192 * 4_096 / 4, "WAL of {wal} bytes");
    env.stop().await;
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
    register_binds_one_store,
    idempotent_repush,
    failing_write_fails_only_its_push,
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
    failed_auth_limited_per_address,
    pages_bounded_by_bytes,
    refuses_self_approval,
    refuses_forged_authors,
    refuses_moves_out_of_scope,
    judges_changes_as_their_author_saw_them,
    refuses_event_steps_not_allowed,
    refuses_bad_checksums,
    refuses_bombs,
    busy_past_the_push_budget,
    busy_past_the_push_time,
    judges_large_batches_on_several_threads,
    judges_each_change_of_a_run,
    relays_judge_at_once,
    plans_the_next_batch_while_the_last_commits,
    refuses_forged_counters,
    admin_rules,
    attachment_sessions,
    head_links_readable_attachments_to_own_records,
    attachment_limits,
    admin_users_and_devices,
    admin_area_tree,
    follow_up_schedules,
    city_forms,
    judges_merges_of_duplicates,
    console_accounts_sessions_and_audit,
);
