//! What the relay's test suites share: test devices' stores (their actor, and the user and device
//! their changes name) and the record document layout (`gridwork_protocol::doc`) as a device writes it.
#![allow(dead_code)]

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use gridwork_protocol::doc::{self as layout, ChangeNote};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
