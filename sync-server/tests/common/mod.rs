//! What the relay's test suites share: the PostgreSQL test database (a fresh schema per test), test
//! devices' stores (their actor, and the user and device their changes name) and the record document
//! layout (`gridwork_protocol::doc`) as a device writes it.
#![allow(dead_code)]

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use gridwork_protocol::doc::{self as layout, ChangeNote};
use serde_json::{json, Value};
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

/// A test device's store: the Automerge actor it registered with the relay, and the user and device
/// its changes name (as a real device's do).
#[derive(Clone)]
pub struct Author {
    pub user: String,
    pub device: String,
    pub actor: ActorId,
}

impl Author {
    pub fn new(user: &str, device: &str) -> Author {
        let h = Sha256::digest(format!("store of {device}"));
        Author {
            user: user.into(),
            device: device.into(),
            actor: ActorId::from(&h[..16]),
        }
    }

    pub fn note(&self, action: &str) -> String {
        serde_json::to_string(&ChangeNote::new(&self.user, &self.device, action, vec![])).unwrap()
    }

    /// One change to `doc` by this author, with `message` as its note: `f` writes it.
    pub fn write_noted(
        &self,
        doc: &mut Automerge,
        message: String,
        f: impl FnOnce(&mut Transaction<'_>),
    ) -> Vec<u8> {
        doc.set_actor(self.actor.clone());
        let mut tx = doc.transaction();
        f(&mut tx);
        tx.commit_with(
            CommitOptions::default()
                .with_message(message)
                .with_time(1_700_000_000),
        );
        doc.get_last_local_change().unwrap().raw_bytes().to_vec()
    }

    /// One change to `doc` by this author doing `action`: `f` writes it.
    pub fn write(
        &self,
        doc: &mut Automerge,
        action: &str,
        f: impl FnOnce(&mut Transaction<'_>),
    ) -> Vec<u8> {
        self.write_noted(doc, self.note(action), f)
    }

    /// The first change of a new record: its note names the record, so two records made alike have
    /// different first changes (as a real device's do).
    pub fn create(
        &self,
        record: &str,
        f: impl FnOnce(&mut Transaction<'_>),
    ) -> (Automerge, Vec<u8>) {
        let mut doc = Automerge::new();
        let mut note: Value = serde_json::from_str(&self.note("create")).unwrap();
        note["record"] = json!(record);
        let bytes = self.write_noted(&mut doc, note.to_string(), f);
        (doc, bytes)
    }
}

// ---- the record document layout (gridwork_protocol::doc), as a device writes it ----

pub fn now() -> String {
    gridwork_protocol::time::now_iso()
}

/// The root of a new record of `kind` in `area`, with `fields`.
pub fn new_record(tx: &mut Transaction<'_>, kind: &str, area: &str, fields: &[(&str, &str)]) {
    tx.put(ROOT, layout::KIND, kind).unwrap();
    tx.put(ROOT, layout::AREA, area).unwrap();
    tx.put(ROOT, layout::DELETED, false).unwrap();
    let f = tx.put_object(ROOT, layout::FIELDS, ObjType::Map).unwrap();
    for (k, v) in fields {
        tx.put(&f, *k, *v).unwrap();
    }
    for key in [layout::ATTRS, layout::TAGS, layout::LINKS] {
        tx.put_object(ROOT, key, ObjType::Map).unwrap();
    }
    tx.put_object(ROOT, layout::NOTES, ObjType::Text).unwrap();
}

pub fn new_person(tx: &mut Transaction<'_>, area: &str, name: &str) {
    new_record(tx, "person", area, &[("name", name)]);
}

/// A new event as `user` reports it: responsible its home area, `reported`, with its report entry.
pub fn new_event(tx: &mut Transaction<'_>, user: &str, area: &str, title: &str) {
    let at = now();
    new_record(
        tx,
        "event",
        area,
        &[
            ("title", title),
            ("status", "reported"),
            ("reporter", user),
            ("reported_at", &at),
            ("priority", "normal"),
        ],
    );
    tx.put(ROOT, layout::RESPONSIBLE, area).unwrap();
    tx.put_object(ROOT, layout::TIMELINE, ObjType::List)
        .unwrap();
    timeline(tx, user, "report", None, Some("reported"), None);
}

/// A visit `user` starts now, pending review.
pub fn new_visit(tx: &mut Transaction<'_>, user: &str, area: &str) {
    let at = now();
    new_record(
        tx,
        "visit",
        area,
        &[
            ("worker", user),
            ("started_at", &at),
            ("review_state", "pending"),
            ("purpose", "home visit"),
        ],
    );
    for key in [layout::VISITED, layout::CHECKLIST] {
        tx.put_object(ROOT, key, ObjType::Map).unwrap();
    }
    for key in [layout::ATTACHMENTS, layout::TIMELINE] {
        tx.put_object(ROOT, key, ObjType::List).unwrap();
    }
}

/// Sets a field of the `f` map; the empty string removes it.
pub fn set_field(tx: &mut Transaction<'_>, name: &str, value: &str) {
    let f = layout::root_obj(tx, layout::FIELDS).unwrap();
    if value.is_empty() {
        tx.delete(&f, name).unwrap();
    } else {
        tx.put(&f, name, value).unwrap();
    }
}

/// Appends a timeline entry (the list is made when the record has none yet).
pub fn timeline(
    tx: &mut Transaction<'_>,
    by: &str,
    action: &str,
    from: Option<&str>,
    to: Option<&str>,
    comment: Option<&str>,
) {
    let list = match layout::root_obj(tx, layout::TIMELINE) {
        Some(l) => l,
        None => tx
            .put_object(ROOT, layout::TIMELINE, ObjType::List)
            .unwrap(),
    };
    let len = tx.length(&list);
    let e = tx.insert_object(&list, len, ObjType::Map).unwrap();
    tx.put(&e, "at", now()).unwrap();
    tx.put(&e, "by", by).unwrap();
    tx.put(&e, "action", action).unwrap();
    for (k, v) in [("from", from), ("to", to), ("comment", comment)] {
        if let Some(v) = v {
            tx.put(&e, k, v).unwrap();
        }
    }
}

/// A field of a record document.
pub fn field(doc: &Automerge, name: &str) -> Option<String> {
    let f = layout::root_obj(doc, layout::FIELDS)?;
    layout::string_map(doc, &f).0.remove(name)
}

pub fn root_str(doc: &Automerge, key: &str) -> Option<String> {
    layout::root_str(doc, key)
}

/// A root object of the layout (`f`, `tags`, `notes`, ...) inside a transaction.
pub fn layout_obj(tx: &Transaction<'_>, key: &str) -> automerge::ObjId {
    layout::root_obj(tx, key).unwrap()
}

/// `POST /v1/me`: registers `author`'s store for the device holding `token`.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    author: &Author,
) -> reqwest::Response {
    http.post(format!("{base}/v1/me"))
        .bearer_auth(token)
        .json(&json!({"actor": author.actor.to_hex_string()}))
        .send()
        .await
        .unwrap()
}
