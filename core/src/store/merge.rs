//! Merge primitives: exporting local changes, applying remote ones, conflicts and history.
//!
//! Applying is idempotent and order-independent: Automerge ignores changes it has, and a change whose
//! dependencies are missing is kept in `held_changes` (and in the document's queue) until they arrive,
//! never dropped. Each batch is one SQLite transaction, so a crash mid-batch applies none of it.
use super::projection::{self, DocBytes};
use super::records::{obj, put_field, put_superseding};
use super::{ChangeNote, Store};
use crate::doc::{self, ATTRS, FIELDS};
use crate::error::{Error, Result};
use crate::model::{Conflict, ConflictValue, FieldChange, HistoryEntry, Kind, Record};
use automerge::{Automerge, Change, ChangeHash, ReadDoc, Value, ROOT};
use gridwork_protocol::rules;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A local change waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxChange {
    pub seq: i64,
    pub record_id: String,
    pub hash: String,
    pub bytes: Vec<u8>,
}

/// A chunk of Automerge bytes from elsewhere: one change, several, or a whole saved document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChunk {
    pub record_id: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Records whose document changed.
    pub records_changed: usize,
    /// Chunks that arrived before their dependencies and are held.
    pub held: usize,
    /// Chunks that could not be read at all; they are quarantined and nothing else is affected.
    pub malformed: usize,
    /// Records that left this user's scope with these changes and were removed from the device.
    pub purged: usize,
}

impl super::Inner {
    /// Outbox rows selected by `sql` (columns seq, record_id, hash, bytes; `?1` is the limit).
    pub(crate) fn outbox_rows(&self, sql: &str, limit: u32) -> Result<Vec<OutboxChange>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([limit], |r| {
            Ok(OutboxChange {
                seq: r.get(0)?,
                record_id: r.get(1)?,
                hash: hex::encode(r.get::<_, Vec<u8>>(2)?),
                bytes: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn hash_bytes(hash: &ChangeHash) -> &[u8] {
    &hash.0[..]
}

fn parse_note(message: Option<&str>) -> ChangeNote {
    ChangeNote::parse(message).unwrap_or(ChangeNote {
        user: String::new(),
        device: None,
        action: "unknown".into(),
        fields: Vec::new(),
        forms: None,
    })
}

/// The device of a change whose note does not name it (changes made before protocol version 2): its
/// actor, which stores made then took from the device id's bytes; shown as text when it is.
fn device_name(actor: &automerge::ActorId) -> String {
    match std::str::from_utf8(actor.to_bytes()) {
        Ok(s) if !s.is_empty() && s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => actor.to_hex_string(),
    }
}

impl Store {
    /// Local changes not yet accepted by the relay, oldest first.
    pub fn outbox(&self, limit: u32) -> Result<Vec<OutboxChange>> {
        self.lock().outbox_rows(
            "SELECT seq, record_id, hash, bytes FROM outbox ORDER BY seq LIMIT ?1 + 0",
            limit,
        )
    }

    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self
            .lock()
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Removes pushed changes from the outbox (accepted by the relay), and saves their records'
    /// documents whole again where edits appended their changes to them
    /// ([`projection::DocBytes::Append`]): a record rests as one compact document once its edits are
    /// pushed. A record that left the user's scope while these changes waited goes now (see `purge`).
    pub fn mark_pushed(&self, seqs: &[i64]) -> Result<()> {
        let mut inner = self.lock();
        let mut records = Vec::new();
        for seq in seqs {
            let record: Option<String> = inner
                .conn
                .prepare_cached("SELECT record_id FROM outbox WHERE seq = ?1")?
                .query_row([seq], |r| r.get(0))
                .optional()?;
            records.extend(record);
        }
        records.sort();
        records.dedup();
        // Saved before the transaction (loading a document may write its checked view), written in it.
        let compacted = inner.compacted(&records)?;
        let tx = inner.conn.transaction()?;
        for seq in seqs {
            tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
                .execute([seq])?;
        }
        for (id, bytes) in &compacted {
            tx.prepare_cached("UPDATE records SET doc = ?2 WHERE id = ?1")?
                .execute(params![id, bytes])?;
        }
        tx.commit()?;
        inner.purge_out_of_scope(Some(&records))?;
        Ok(())
    }

    /// Every change of every record, for a peer that has nothing (tests, exports).
    pub fn all_changes(&self) -> Result<Vec<RemoteChunk>> {
        let ids: Vec<String> = {
            let inner = self.lock();
            let mut stmt = inner.conn.prepare("SELECT id FROM records ORDER BY rid")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        let mut inner = self.lock();
        for id in ids {
            for change in inner.doc(&id)?.get_changes(&[]) {
                out.push(RemoteChunk {
                    record_id: id.clone(),
                    bytes: change.raw_bytes().to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// Applies chunks from other devices, one SQLite transaction for the whole batch.
    pub fn apply_remote(&self, chunks: &[RemoteChunk]) -> Result<ApplyReport> {
        self.apply_page(chunks, &HashMap::new())
    }

    /// Applies a snapshot or pull page of the relay: `chunks`, and `views`, the relay's view of some
    /// of their records once their chunks in this page are applied.
    ///
    /// A record with a view and nothing of the device's own pending (no unpushed or refused local
    /// change, no held change) is stored without loading its document: its chunks are appended to the
    /// stored bytes (Automerge loads a document followed by further chunks) and its projection is
    /// written from the view, marked unchecked until the document is first loaded ([`Inner::doc`]
    /// compares, and repairs from the document). Every other record is merged by loading its
    /// document, as [`Store::apply_remote`] does. Each of the two parts is one SQLite transaction.
    pub fn apply_page(
        &self,
        chunks: &[RemoteChunk],
        views: &HashMap<String, Record>,
    ) -> Result<ApplyReport> {
        let mut inner = self.lock();
        inner.check_writable()?;
        let taken = if views.is_empty() {
            HashSet::new()
        } else {
            inner.viewable(chunks, views)?
        };
        let (fast, slow): (Vec<&RemoteChunk>, Vec<&RemoteChunk>) = chunks
            .iter()
            .partition(|c| taken.contains(c.record_id.as_str()));
        let mut report = apply_documents(&mut inner, &slow)?;
        if !fast.is_empty() {
            let (changed, purged) = inner.apply_views(&fast, views)?;
            report.records_changed += changed;
            report.purged += purged;
        }
        Ok(report)
    }
}

/// Does `bytes` start like an Automerge chunk (magic bytes, checksum, type)?
fn looks_like_chunk(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[..4] == [0x85, 0x6f, 0x4a, 0x83]
}

impl super::Inner {
    /// The records of `chunks` that may be stored from the relay's view (see [`Store::apply_page`]).
    fn viewable<'a>(
        &self,
        chunks: &'a [RemoteChunk],
        views: &HashMap<String, Record>,
    ) -> Result<HashSet<&'a str>> {
        let busy: HashSet<String> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT record_id FROM outbox UNION SELECT record_id FROM quarantine
                 UNION SELECT record_id FROM held_changes",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let fits = |c: &RemoteChunk| {
            let id = c.record_id.as_str();
            doc::is_valid_record_id(id)
                && !busy.contains(id)
                && looks_like_chunk(&c.bytes)
                && views.get(id).is_some_and(|v| {
                    v.id == id
                        && doc::is_valid_area_id(&v.area)
                        && v.responsible.as_deref().is_none_or(doc::is_valid_area_id)
                })
        };
        let mut ok = HashSet::new();
        let mut not = HashSet::new();
        for c in chunks {
            if fits(c) {
                ok.insert(c.record_id.as_str());
            } else {
                not.insert(c.record_id.as_str());
            }
        }
        // A record with any chunk unfit goes the whole way.
        ok.retain(|id| !not.contains(id));
        Ok(ok)
    }

    /// Stores records from the relay's views (see [`Store::apply_page`]): returns the records
    /// changed and purged.
    fn apply_views(
        &mut self,
        chunks: &[&RemoteChunk],
        views: &HashMap<String, Record>,
    ) -> Result<(usize, usize)> {
        let mut order: Vec<&str> = Vec::new();
        let mut added: HashMap<&str, Vec<u8>> = HashMap::new();
        for c in chunks {
            let bytes = added.entry(c.record_id.as_str()).or_insert_with(|| {
                order.push(c.record_id.as_str());
                Vec::new()
            });
            bytes.extend_from_slice(&c.bytes);
        }
        let mut stored: HashMap<String, Vec<u8>> = {
            let ids = serde_json::to_string(&order).expect("ids serialise");
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, doc FROM records WHERE id IN (SELECT value FROM json_each(?1))",
            )?;
            let rows = stmt.query_map([ids], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let tx = self.conn.unchecked_transaction()?;
        let mut search = projection::SearchWrites::default();
        for id in &order {
            let mut bytes = stored.remove(*id).unwrap_or_default();
            bytes.extend_from_slice(&added[id]);
            projection::project_deferred(
                &tx,
                &views[*id],
                DocBytes::Whole(&bytes),
                false,
                &mut search,
            )?;
        }
        search.flush(&tx)?;
        tx.commit()?;
        for id in &order {
            self.forget_doc(id);
        }
        // Who sees a record is read from its view: only those this user does not see are purged.
        let unseen = self.unseen(order.iter().map(|id| &views[*id]));
        let purged = self.purge_out_of_scope(Some(&unseen))?;
        Ok((order.len(), purged))
    }
}

/// Applies chunks by loading and merging their records' documents, one SQLite transaction.
fn apply_documents(inner: &mut super::Inner, chunks: &[&RemoteChunk]) -> Result<ApplyReport> {
    let mut report = ApplyReport::default();
    let mut by_record: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    // (record id or "-", bytes, reason) of chunks that cannot be read.
    let mut bad: Vec<(String, Vec<u8>, String)> = Vec::new();
    for chunk in chunks {
        if doc::is_valid_record_id(&chunk.record_id) {
            by_record
                .entry(chunk.record_id.as_str())
                .or_default()
                .push(&chunk.bytes);
        } else {
            bad.push(("-".into(), chunk.bytes.clone(), "bad record id".into()));
        }
    }
    // Changed documents, with their saved bytes when a whole incoming document was taken unchanged
    // (bootstrap), so it is not saved again.
    let mut updated: Vec<(Record, Automerge, Option<Vec<u8>>)> = Vec::new();
    let mut hold: Vec<(String, Change)> = Vec::new();
    let mut release: Vec<ChangeHash> = Vec::new();
    // Held changes are rare (a record's first change not yet arrived): when none are, no record
    // looks for its own and no applied change is deleted from them.
    let any_held: bool = inner
        .conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM held_changes)")?
        .query_row([], |r| r.get(0))?;
    for (id, pieces) in by_record {
        // Taken out of the cache while it is edited: if anything fails, the next read reloads the
        // stored version.
        let mut doc = match inner.take_doc(id)? {
            Some(d) => d,
            None => inner.new_doc(),
        };
        let heads_before = doc.get_heads();
        let held: Vec<Vec<u8>> = if !any_held {
            Vec::new()
        } else {
            let mut stmt = inner
                .conn
                .prepare_cached("SELECT bytes FROM held_changes WHERE record_id = ?1")?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut singles: Vec<Change> = Vec::new();
        let mut taken_whole: Option<Vec<u8>> = None;
        for bytes in held.iter().map(Vec::as_slice).chain(pieces.iter().copied()) {
            // One change is applied as such, so its hash is known for holding; anything else is
            // read as document chunks (a whole document arrives when a record moves into scope).
            // Automerge chunks start with a 4-byte magic, a 4-byte checksum and the chunk type;
            // type 0 is a whole document, which need not be tried as a change first.
            let is_document = bytes.len() > 8 && bytes[8] == 0;
            let as_change = if is_document {
                Err(())
            } else {
                Change::from_bytes(bytes.to_vec()).map_err(|_| ())
            };
            match as_change {
                Ok(change) => match doc.apply_changes([change.clone()]) {
                    Ok(()) => {
                        taken_whole = None;
                        singles.push(change)
                    }
                    Err(_) => bad.push((id.into(), bytes.to_vec(), "change does not apply".into())),
                },
                Err(_) => match Automerge::load(bytes) {
                    // A whole document is checked completely before anything of it is merged.
                    Ok(other) if !bytes.is_empty() && doc.get_heads().is_empty() => {
                        // A record new to this device: its document is taken as it is (bootstrap).
                        let actor = doc.get_actor().clone();
                        doc = other.with_actor(actor);
                        taken_whole = Some(bytes.to_vec());
                    }
                    Ok(mut other) if !bytes.is_empty() => {
                        taken_whole = None;
                        if doc.merge(&mut other).is_err() {
                            bad.push((id.into(), bytes.to_vec(), "document does not merge".into()));
                        }
                    }
                    _ => bad.push((id.into(), bytes.to_vec(), "malformed remote chunk".into())),
                },
            }
        }
        // Held changes queued in a document that was then replaced by a whole incoming document
        // get one more chance against the new one.
        let waiting: Vec<Change> = singles
            .iter()
            .filter(|c| doc.get_change_meta_by_hash(&c.hash()).is_none())
            .cloned()
            .collect();
        if !waiting.is_empty() {
            let _ = doc.apply_changes(waiting);
            taken_whole = None;
        }
        let changed = doc.get_heads() != heads_before;
        // A document that still has no kind or area cannot be shown or stored as a record; keep
        // all its changes held until the rest arrives.
        let record = if changed {
            doc::read_record(id, &doc)
        } else {
            None
        };
        let unreadable = changed && record.is_none();
        for change in singles {
            let hash = change.hash();
            if !unreadable && doc.get_change_meta_by_hash(&hash).is_some() {
                if any_held {
                    release.push(hash);
                }
            } else {
                hold.push((id.to_owned(), change));
            }
        }
        if unreadable {
            continue;
        }
        if let Some(record) = record {
            updated.push((record, doc, taken_whole));
        } else if heads_before.is_empty() {
            // A record we do not have and could not start: nothing to cache.
        } else {
            inner.cache_doc(id, doc);
        }
    }
    let now = crate::model::time::now_secs();
    let tx = inner.conn.unchecked_transaction()?;
    for hash in &release {
        tx.prepare_cached("DELETE FROM held_changes WHERE hash = ?1")?
            .execute([hash_bytes(hash)])?;
    }
    for (id, change) in &hold {
        report.held += tx
            .prepare_cached(
                "INSERT OR IGNORE INTO held_changes (hash, record_id, bytes, received_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash_bytes(&change.hash()), id, change.raw_bytes(), now])?;
    }
    for (id, bytes, reason) in &bad {
        tracing::warn!(record = %id, reason = %reason, "remote chunk quarantined");
        tx.prepare_cached(
            "INSERT OR REPLACE INTO quarantine (hash, record_id, bytes, reason, at, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, 'received')",
        )?
        .execute(params![sha_of(bytes), id, bytes, reason, now])?;
    }
    let mut search = projection::SearchWrites::default();
    for (record, doc, saved) in &updated {
        match saved {
            Some(bytes) => projection::project_deferred(
                &tx,
                record,
                DocBytes::Whole(bytes),
                true,
                &mut search,
            )?,
            None => {
                let saved = doc.save();
                projection::project_deferred(
                    &tx,
                    record,
                    DocBytes::Whole(&saved),
                    true,
                    &mut search,
                )?
            }
        };
    }
    search.flush(&tx)?;
    tx.commit()?;
    report.malformed = bad.len();
    report.records_changed = updated.len();
    // A record that someone else moved out of this user's scope leaves the device. Who sees it is
    // read from the record just merged: only those this user does not see are looked at again.
    let unseen = inner.unseen(updated.iter().map(|(r, _, _)| r));
    for (record, doc, _) in updated {
        inner.cache_doc(&record.id, doc);
    }
    report.purged = inner.purge_out_of_scope(Some(&unseen))?;
    Ok(report)
}

impl Store {
    /// Every unresolved conflict in the store (fields with concurrent values), in the user's scope.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let pairs: Vec<(String, String)> = {
            let inner = self.lock();
            let mut stmt = inner.conn.prepare(
                "SELECT r.id, c.field FROM conflicts c JOIN records r ON r.rid = c.rid ORDER BY r.id, c.field",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for (id, field) in pairs {
            let record = self.get(&id)?;
            if !self.in_scope(&record.area)
                && !record
                    .responsible
                    .as_deref()
                    .is_some_and(|r| self.in_scope(r))
            {
                continue;
            }
            out.push(self.conflict(&id, &field)?);
        }
        out.extend(self.all_merge_conflicts()?);
        Ok(out)
    }

    /// The concurrent values of one field: `name` (a kind field), `attrs.<name>`, `area`, `responsible`
    /// or `deleted`.
    pub fn conflict(&self, id: &str, field: &str) -> Result<Conflict> {
        let mut inner = self.lock();
        let doc = inner.doc(id)?;
        let kind = doc::root_str(doc, doc::KIND)
            .and_then(|k| Kind::parse(&k))
            .unwrap_or(Kind::Person);
        let values = match field_location(doc, field) {
            Ok((parent, key)) => doc.get_all(&parent, key)?,
            Err(_) => Vec::new(),
        };
        if values.len() < 2 {
            // A conflict a merge of duplicates left, if there is one.
            drop(inner);
            let record = self.get(id)?;
            return self
                .merge_conflicts_of(&record)?
                .into_iter()
                .find(|c| c.field == field)
                .ok_or_else(|| Error::NoConflict {
                    id: id.into(),
                    field: field.into(),
                });
        }
        // get_all lists values in the order Automerge ranks them; the last one is what `get` returns.
        let winner = values.len() - 1;
        let mut out = Vec::new();
        for (i, (value, opid)) in values.into_iter().enumerate() {
            let text = match &value {
                Value::Scalar(s) => s.to_string().trim_matches('"').to_owned(),
                Value::Object(_) => "(object)".into(),
            };
            let text = value.as_str().map(str::to_owned).unwrap_or(text);
            let meta = doc
                .hash_for_opid(&opid)
                .and_then(|h| doc.get_change_meta_by_hash(&h));
            let (user, device, time) = match meta {
                Some(m) => {
                    let note = parse_note(m.message.as_deref());
                    let device = note.device.unwrap_or_else(|| device_name(&m.actor));
                    (note.user, device, m.timestamp)
                }
                None => (String::new(), String::new(), 0),
            };
            out.push(ConflictValue {
                value: text,
                user,
                device,
                time,
                winner: i == winner,
                merged_from: None,
            });
        }
        Ok(Conflict {
            record_id: id.into(),
            kind,
            field: field.into(),
            values: out,
        })
    }

    /// Resolves a conflict by writing the chosen value, which supersedes every concurrent one; the
    /// resolution syncs like any edit, so the conflict disappears on every replica.
    pub fn resolve_conflict(&self, id: &str, field: &str, value: &str) -> Result<()> {
        let current = self.conflict(id, field)?;
        if let Some(away) = current.values.iter().find_map(|v| v.merged_from.clone()) {
            return self.resolve_merge_conflict(id, field, value, &away);
        }
        let mut inner = self.lock();
        // A conflict on `deleted` is resolved on a record that may read as deleted.
        let before = if field == doc::DELETED {
            inner.visible(id, None)?
        } else {
            inner.editable(id, None)?
        };
        let record = &before.record;
        let root_key = matches!(field, "area" | "responsible" | "deleted");
        if field == doc::DELETED && value != "true" && value != "false" {
            return Err(Error::field(field, "must be true or false"));
        }
        if !root_key && !field.starts_with("attrs.") {
            record.kind.spec(field)?.validate(value)?;
        }
        // The managed state (areas, tombstone, status, review, ...) changes only by actions; a conflict
        // of it is settled on one of the values it has.
        let managed = root_key || record.kind.spec(field).is_ok_and(|s| s.managed);
        if managed {
            if !current.values.iter().any(|v| v.value == value) {
                return Err(Error::InvalidInput(format!(
                    "`{field}` can only be resolved to one of its values"
                )));
            }
            inner.check(id, |actor, areas| {
                rules::may_resolve(actor, areas, record, field, value)
            })?;
        } else {
            inner.check(id, |actor, areas| rules::may_edit(actor, areas, record))?;
        }
        let note = inner.note("resolve", vec![field.into()]);
        inner.write(id, &before, note, |tx| {
            if let Some(name) = field.strip_prefix("attrs.") {
                let attrs = obj(tx, ATTRS)?;
                put_superseding(tx, &attrs, name, value)?;
            } else if field == doc::DELETED {
                put_superseding(tx, &ROOT, doc::DELETED, value == "true")?;
            } else if root_key {
                put_superseding(tx, &ROOT, field, value)?;
            } else {
                put_field(tx, field, value)?;
            }
            Ok(())
        })
    }

    /// Who changed what and when, in causal order (a change always after the changes it builds on),
    /// with the old and new value of everything each change touched.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let mut inner = self.lock();
        let doc = inner.doc(id)?;
        let out: Vec<HistoryEntry> = doc
            .get_changes_meta(&[])
            .into_iter()
            .map(|m| {
                let note = parse_note(m.message.as_deref());
                HistoryEntry {
                    hash: m.hash.to_string(),
                    device: note.device.clone().unwrap_or_else(|| device_name(&m.actor)),
                    user: note.user,
                    time: m.timestamp,
                    action: note.action,
                    fields: note.fields,
                    changes: value_changes(doc, &m.deps, &[m.hash]),
                }
            })
            .collect();
        // Causal order, as Automerge gives it: device clocks may be wrong, causality never is.
        Ok(out)
    }

    /// Heads of a record's document, as hex: equal heads mean equal documents.
    pub fn heads(&self, id: &str) -> Result<Vec<String>> {
        let mut inner = self.lock();
        let mut heads: Vec<String> = inner
            .doc(id)?
            .get_heads()
            .iter()
            .map(|h| h.to_string())
            .collect();
        heads.sort();
        Ok(heads)
    }

    /// Ids of every stored record.
    pub fn record_ids(&self) -> Result<Vec<String>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare("SELECT id FROM records ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many remote changes are waiting for their dependencies.
    pub fn held_len(&self) -> Result<u64> {
        Ok(self
            .lock()
            .conn
            .query_row("SELECT count(*) FROM held_changes", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

fn sha_of(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// The object and key holding a conflict field.
fn field_location<'a>(doc: &Automerge, field: &'a str) -> Result<(automerge::ObjId, &'a str)> {
    if let Some(name) = field.strip_prefix("attrs.") {
        let attrs = doc::root_obj(doc, ATTRS)
            .ok_or_else(|| Error::Corrupt("document lacks attrs".into()))?;
        return Ok((attrs, name));
    }
    if matches!(field, "area" | "responsible" | "deleted") {
        return Ok((ROOT, field));
    }
    let fields =
        doc::root_obj(doc, FIELDS).ok_or_else(|| Error::Corrupt("document lacks fields".into()))?;
    Ok((fields, field))
}

/// The values that differ between the document at `before` and at `after`: root scalars, typed fields,
/// attributes, tags and notes (see [`HistoryEntry::changes`]).
fn value_changes(doc: &Automerge, before: &[ChangeHash], after: &[ChangeHash]) -> Vec<FieldChange> {
    let text = |v: Option<(Value<'_>, automerge::ObjId)>| -> Option<String> {
        match v? {
            (Value::Scalar(s), _) => match s.as_ref() {
                automerge::ScalarValue::Str(t) => Some(t.to_string()),
                automerge::ScalarValue::Null => None,
                other => Some(other.to_string()),
            },
            _ => None,
        }
    };
    let mut out = Vec::new();
    let mut compare = |field: String, old: Option<String>, new: Option<String>| {
        if old != new {
            out.push(FieldChange { field, old, new });
        }
    };
    for key in [doc::AREA, doc::RESPONSIBLE, doc::DELETED] {
        compare(
            key.into(),
            text(doc.get_at(ROOT, key, before).ok().flatten()),
            text(doc.get_at(ROOT, key, after).ok().flatten()),
        );
    }
    let object = |key: &str| match doc.get(ROOT, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    };
    for (key, prefix) in [(FIELDS, ""), (ATTRS, "attrs.")] {
        let Some(map) = object(key) else {
            continue;
        };
        let mut names: Vec<String> = doc.keys_at(&map, before).collect();
        names.extend(doc.keys_at(&map, after));
        names.sort();
        names.dedup();
        for name in names {
            compare(
                format!("{prefix}{name}"),
                text(doc.get_at(&map, name.as_str(), before).ok().flatten()),
                text(doc.get_at(&map, name.as_str(), after).ok().flatten()),
            );
        }
    }
    if let Some(tags) = object(doc::TAGS) {
        let set = |heads: &[ChangeHash]| {
            let mut t: Vec<String> = doc.keys_at(&tags, heads).collect();
            t.sort();
            (!t.is_empty()).then(|| t.join(", "))
        };
        compare(doc::TAGS.into(), set(before), set(after));
    }
    if let Some(notes) = object(doc::NOTES) {
        let at = |heads: &[ChangeHash]| doc.text_at(&notes, heads).ok().filter(|t| !t.is_empty());
        compare(doc::NOTES.into(), at(before), at(after));
    }
    out
}
