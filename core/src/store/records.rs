//! Creating, editing, listing and searching records of every kind.
use super::template::{Shape, Template};
use super::{search, ChangeNote, Inner, Store};
use crate::doc::{self, ATTRS, DELETED, FIELDS, LINKS, NOTES, TAGS, TIMELINE};
use crate::error::{Error, Result};
use crate::model::{
    time, EventStatus, Kind, LinkEdge, LinkType, Record, ReviewState, TimelineEntry,
};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use gridwork_protocol::rules;
use rand::RngCore;
use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A new record. Managed fields (event status, visit review, ...) are set by the store, not here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewRecord {
    pub kind: Option<Kind>,
    pub area: String,
    pub fields: BTreeMap<String, String>,
    pub attrs: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub notes: String,
}

impl NewRecord {
    pub fn new(kind: Kind, area: impl Into<String>) -> Self {
        NewRecord {
            kind: Some(kind),
            area: area.into(),
            ..Default::default()
        }
    }
    pub fn field(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }
}

/// A field-level update: only what is named here changes, so concurrent edits of other fields survive.
/// Setting a field to the empty string clears it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Update {
    pub fields: BTreeMap<String, String>,
    pub attrs: BTreeMap<String, String>,
    pub remove_attrs: Vec<String>,
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub notes: Option<String>,
}

impl Update {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }
    pub fn remove_attr(mut self, name: &str) -> Self {
        self.remove_attrs.push(name.to_owned());
        self
    }
    pub fn add_tag(mut self, tag: impl Into<String>) -> Self {
        self.add_tags.push(tag.into());
        self
    }
    pub fn remove_tag(mut self, tag: impl Into<String>) -> Self {
        self.remove_tags.push(tag.into());
        self
    }
    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = Some(notes.into());
        self
    }
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
            && self.attrs.is_empty()
            && self.remove_attrs.is_empty()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
            && self.notes.is_none()
    }
    fn touched(&self) -> Vec<String> {
        let mut out: Vec<String> = self.fields.keys().cloned().collect();
        out.extend(
            self.attrs
                .keys()
                .chain(&self.remove_attrs)
                .map(|k| format!("attrs.{k}")),
        );
        if !self.add_tags.is_empty() || !self.remove_tags.is_empty() {
            out.push("tags".into());
        }
        if self.notes.is_some() {
            out.push("notes".into());
        }
        out
    }
}

/// One row of a list: the projection's view of a record, without loading its document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    pub id: String,
    pub kind: Kind,
    pub area: String,
    pub responsible: Option<String>,
    pub deleted: bool,
    pub title: String,
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The offset of the next page, when there is one.
    pub next_offset: Option<u32>,
}

/// What to list: one kind, optionally one area (with or without the areas below it), field equality
/// filters, a tag, a text query, and a page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListQuery {
    pub kind: Kind,
    pub area: Option<String>,
    pub include_subareas: bool,
    pub filters: BTreeMap<String, String>,
    pub tag: Option<String>,
    pub text: Option<String>,
    pub include_deleted: bool,
    pub limit: u32,
    pub offset: u32,
}

impl ListQuery {
    pub fn new(kind: Kind) -> Self {
        ListQuery {
            kind,
            area: None,
            include_subareas: true,
            filters: BTreeMap::new(),
            tag: None,
            text: None,
            include_deleted: false,
            limit: 100,
            offset: 0,
        }
    }
    pub fn area(mut self, area: impl Into<String>) -> Self {
        self.area = Some(area.into());
        self
    }
    pub fn only_this_area(mut self) -> Self {
        self.include_subareas = false;
        self
    }
    pub fn filter(mut self, field: &str, value: impl Into<String>) -> Self {
        self.filters.insert(field.to_owned(), value.into());
        self
    }
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
    pub fn offset(mut self, offset: u32) -> Self {
        self.offset = offset;
        self
    }
}

/// A fresh record id: 48 bits of milliseconds then 80 random bits, as 32 hex characters, so ids sort
/// roughly by creation time and never collide across offline devices.
pub fn new_record_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut random = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut random);
    format!("{:012x}{}", millis & 0xffff_ffff_ffff, hex::encode(random))
}

pub(crate) fn obj(tx: &Transaction<'_>, key: &str) -> Result<ObjId> {
    doc::root_obj(tx, key).ok_or_else(|| Error::Corrupt(format!("document lacks `{key}`")))
}

/// Appends a timeline entry made now: the list only grows, so concurrent appends merge by union.
pub(crate) fn append_timeline(
    tx: &mut Transaction<'_>,
    by: &str,
    action: &str,
    from: Option<&str>,
    to: Option<&str>,
    comment: Option<&str>,
) -> Result<()> {
    insert_timeline_entry(
        tx,
        &TimelineEntry {
            at: time::now_iso(),
            by: by.to_owned(),
            action: action.to_owned(),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            comment: comment.map(str::to_owned),
        },
    )
}

/// Appends `entry` to the timeline, creating the list if the record has none yet.
pub(crate) fn insert_timeline_entry(tx: &mut Transaction<'_>, entry: &TimelineEntry) -> Result<()> {
    let list = match doc::root_obj(tx, TIMELINE) {
        Some(list) => list,
        None => tx.put_object(ROOT, TIMELINE, ObjType::List)?,
    };
    let len = tx.length(&list);
    let map = tx.insert_object(&list, len, ObjType::Map)?;
    tx.put(&map, "at", entry.at.as_str())?;
    tx.put(&map, "by", entry.by.as_str())?;
    tx.put(&map, "action", entry.action.as_str())?;
    for (key, value) in [
        ("from", &entry.from),
        ("to", &entry.to),
        ("comment", &entry.comment),
    ] {
        if let Some(v) = value {
            tx.put(&map, key, v.as_str())?;
        }
    }
    Ok(())
}

/// Writes a field of the `f` map; the empty string clears it.
pub(crate) fn put_field(tx: &mut Transaction<'_>, name: &str, value: &str) -> Result<()> {
    let fields = obj(tx, FIELDS)?;
    let held = tx.get_all(&fields, name)?.len();
    set_field(tx, &fields, name, value, held)
}

/// [`put_field`] into `fields`, the document's map of fields, whose key `name` holds `held` values
/// now.
fn set_field(
    tx: &mut Transaction<'_>,
    fields: &ObjId,
    name: &str,
    value: &str,
    held: usize,
) -> Result<()> {
    // Deleting concurrent values first: see `put_superseding`.
    if value.is_empty() || held > 1 {
        tx.delete(fields, name)?;
    }
    if !value.is_empty() {
        tx.put(fields, name, value)?;
    }
    Ok(())
}

/// Puts a value that supersedes every value the key holds. When the key holds concurrent values and
/// the new one equals the value that currently wins, Automerge records only a deletion of the other
/// values, and an edit made elsewhere at the same time would then replace it without a conflict.
/// Deleting first makes the write a value of its own, which stays beside a concurrent edit as a conflict.
pub(crate) fn put_superseding(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: impl Into<ScalarValue>,
) -> Result<()> {
    if tx.get_all(obj, key)?.len() > 1 {
        tx.delete(obj, key)?;
    }
    tx.put(obj, key, value)?;
    Ok(())
}

/// The friendly checks of an area a record is put in: a valid id of a known area (one of
/// `area_paths`). Whether it is in the user's scope is the rule book's to say.
pub(super) fn check_area(area_paths: &HashMap<String, String>, area: &str) -> Result<()> {
    if !doc::is_valid_area_id(area) {
        return Err(Error::InvalidId(area.to_owned()));
    }
    if !area_paths.contains_key(area) {
        return Err(Error::UnknownArea(area.to_owned()));
    }
    Ok(())
}

impl Store {
    /// Creates a record and returns its id. Events start `reported` with this user as reporter and their
    /// home area responsible; visits start now, by this user, pending review.
    pub fn create(&self, new: NewRecord) -> Result<String> {
        let mut inner = self.lock();
        let (id, doc, record) = new_document(&inner, new)?;
        inner.cache_doc(&id, doc);
        if let Err(e) = inner.persist_local_change(&id, &record) {
            inner.forget_doc(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Creates many records in one SQLite transaction: all of them or, on the first invalid one, none.
    /// Each record is made exactly as [`Store::create`] makes it (its own document, first change and
    /// outbox entry); only the commit is shared, which is what makes bulk registration fast.
    pub fn create_many(&self, news: Vec<NewRecord>) -> Result<Vec<String>> {
        let mut inner = self.lock();
        inner.check_writable()?;
        // Making documents is CPU work of its own per record: it runs on every core.
        let made: Vec<Made> = {
            let maker = Maker::of(&inner);
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 8)
                .min(news.len().div_ceil(64).max(1));
            let per = news.len().div_ceil(threads).max(1);
            let mut parts: Vec<Vec<NewRecord>> = Vec::new();
            let mut news = news.into_iter();
            loop {
                let part: Vec<NewRecord> = news.by_ref().take(per).collect();
                if part.is_empty() {
                    break;
                }
                parts.push(part);
            }
            let maker = &maker;
            let results: Vec<Result<Vec<_>>> = std::thread::scope(|s| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .map(|part| s.spawn(move || maker.make_many(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("making documents does not panic"))
                    .collect()
            });
            let mut made = Vec::new();
            for r in results {
                made.extend(r?);
            }
            made
        };
        let inner = &mut *inner;
        let tx = inner.conn.transaction()?;
        let mut search = super::projection::SearchWrites::default();
        for m in &made {
            let doc = super::projection::DocBytes::Whole(&m.doc);
            super::queue_change(&tx, &m.id, &m.change, doc, &m.record, &mut search)?;
        }
        search.flush(&tx)?;
        tx.commit()?;
        // The documents are not cached: an import of thousands would only push out the records the
        // worker is working on; each loads when it is next needed.
        Ok(made.into_iter().map(|m| m.id).collect())
    }

    /// Edits fields, attributes, tags and notes of a record, as one change.
    pub fn update(&self, id: &str, update: Update) -> Result<()> {
        if update.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        let before = inner.content_editable(id, None)?;
        let kind = before.record.kind;
        for (name, value) in &update.fields {
            let spec = kind.spec(name)?;
            if spec.managed {
                return Err(Error::ReadOnlyField(name.clone()));
            }
            spec.validate(value)?;
        }
        if update
            .fields
            .get(kind.title_field())
            .is_some_and(|v| v.trim().is_empty())
            && kind != Kind::Visit
        {
            return Err(Error::field(kind.title_field(), "required"));
        }
        let note = inner.note("edit", update.touched());
        inner.write(id, &before, note, |tx| {
            // Each map looked up only when the update writes to it (a lookup in the root is a
            // search of the document's operations).
            if !update.fields.is_empty() {
                let fields = obj(tx, FIELDS)?;
                for (name, value) in &update.fields {
                    // Writing an unchanged value would still be an edit that can conflict; skip it
                    // unless it resolves a conflict on that field.
                    let current = tx.get_all(&fields, name.as_str())?;
                    let same = current.len() == 1 && current[0].0.as_str() == Some(value.as_str());
                    let absent = current.is_empty() && value.is_empty();
                    if !same && !absent {
                        set_field(tx, &fields, name, value, current.len())?;
                    }
                }
            }
            if !update.attrs.is_empty() || !update.remove_attrs.is_empty() {
                let attrs = obj(tx, ATTRS)?;
                for (name, value) in &update.attrs {
                    put_superseding(tx, &attrs, name, value.as_str())?;
                }
                for name in &update.remove_attrs {
                    tx.delete(&attrs, name.as_str())?;
                }
            }
            if !update.add_tags.is_empty() || !update.remove_tags.is_empty() {
                let tags = obj(tx, TAGS)?;
                for tag in &update.add_tags {
                    tx.put(&tags, tag.trim(), true)?;
                }
                for tag in &update.remove_tags {
                    tx.delete(&tags, tag.trim())?;
                }
            }
            if let Some(text) = &update.notes {
                let notes = obj(tx, NOTES)?;
                tx.update_text(&notes, text)?;
            }
            Ok(())
        })
    }

    /// Tombstones a record. It stays in history and syncs as deleted; `restore` brings it back.
    pub fn delete(&self, id: &str, reason: Option<&str>) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.editable(id, None)?;
        inner.check(id, |actor, areas| {
            rules::may_delete(actor, areas, &before.record)
        })?;
        let user = inner.identity.user_id.clone();
        let note = inner.note("delete", vec![DELETED.into()]);
        inner.write(id, &before, note, |tx| {
            tx.put(ROOT, DELETED, true)?;
            append_timeline(tx, &user, "delete", None, None, reason)
        })
    }

    pub fn restore(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.visible(id, None)?;
        if !before.record.deleted {
            return Err(Error::InvalidInput(format!("record {id} is not deleted")));
        }
        inner.check(id, |actor, areas| {
            rules::may_delete(actor, areas, &before.record)
        })?;
        let user = inner.identity.user_id.clone();
        let note = inner.note("restore", vec![DELETED.into()]);
        inner.write(id, &before, note, |tx| {
            tx.put(ROOT, DELETED, false)?;
            append_timeline(tx, &user, "restore", None, None, None)
        })
    }

    /// Moves a record to another home area; both areas must be in the user's scope.
    pub fn move_record(&self, id: &str, area: &str) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.editable(id, None)?;
        check_area(&inner.area_paths, area)?;
        if before.record.area == area {
            return Ok(());
        }
        inner.check(id, |actor, areas| {
            rules::may_move(actor, areas, &before.record, area)
        })?;
        let user = inner.identity.user_id.clone();
        let from = before.record.area.clone();
        let note = inner.note("move", vec![doc::AREA.into()]);
        inner.write(id, &before, note, |tx| {
            tx.put(ROOT, doc::AREA, area)?;
            append_timeline(tx, &user, "move", Some(&from), Some(area), None)
        })
    }

    /// Adds a typed link from `source` to `target`, stored in the source's document.
    pub fn link(&self, source: &str, link_type: LinkType, target: &str) -> Result<()> {
        if !doc::is_valid_record_id(target) {
            return Err(Error::InvalidId(target.to_owned()));
        }
        let mut inner = self.lock();
        let before = inner.content_editable(source, None)?;
        let target_kind = match inner.doc(target) {
            Ok(doc) => doc::root_str(doc, doc::KIND).and_then(|k| Kind::parse(&k)),
            Err(Error::UnknownRecord(_)) => None,
            Err(e) => return Err(e),
        };
        let source_kind = before.record.kind;
        if let Some(tk) = target_kind {
            if !link_type.allows(source_kind, tk) {
                return Err(Error::InvalidInput(format!(
                    "a {source_kind} cannot be `{link_type}` a {tk}"
                )));
            }
        }
        let note = inner.note("link", vec![LINKS.into()]);
        inner.write(source, &before, note, |tx| {
            let links = obj(tx, LINKS)?;
            tx.put(&links, format!("{}:{target}", link_type.as_str()), target)?;
            Ok(())
        })
    }

    pub fn unlink(&self, source: &str, link_type: LinkType, target: &str) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.content_editable(source, None)?;
        let note = inner.note("unlink", vec![LINKS.into()]);
        inner.write(source, &before, note, |tx| {
            let links = obj(tx, LINKS)?;
            tx.delete(&links, format!("{}:{target}", link_type.as_str()))?;
            Ok(())
        })
    }

    /// Links that start or end at a record.
    pub fn links_of(&self, id: &str) -> Result<Vec<LinkEdge>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare_cached(
            "SELECT r.id, l.type, l.dst FROM links l JOIN records r ON r.rid = l.src
             WHERE r.id = ?1 OR l.dst = ?1 ORDER BY l.type, r.id, l.dst",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (source, t, target) = row?;
            if let Some(link_type) = LinkType::parse(&t) {
                out.push(LinkEdge {
                    source,
                    link_type,
                    target,
                });
            }
        }
        Ok(out)
    }

    /// Lists records of one kind by the query's filters, ordered by title.
    pub fn list(&self, query: &ListQuery) -> Result<Page<RecordSummary>> {
        let kind = query.kind;
        // One query yields whole summaries: the kind's projection columns come with the record row.
        let mut sql = format!(
            "SELECT r.id, r.area, r.responsible, r.deleted, {} FROM records r JOIN {} p ON p.rid = r.rid
             WHERE r.kind = ?1",
            kind.fields().iter().map(|f| format!("p.{}", f.name)).collect::<Vec<_>>().join(", "),
            kind.table()
        );
        let mut args: Vec<String> = vec![kind.as_str().into()];
        if !query.include_deleted {
            sql.push_str(" AND r.deleted = 0");
        }
        let inner = self.lock();
        if let Some(area) = &query.area {
            if query.include_subareas {
                let path = inner.area_path(area).map(str::to_owned);
                match path {
                    Some(path) => {
                        sql.push_str(
                            " AND (r.area IN (SELECT id FROM areas WHERE path >= ?1x AND path < ?2x)
                              OR r.responsible IN (SELECT id FROM areas WHERE path >= ?1x AND path < ?2x))",
                        );
                        let n = args.len();
                        sql = sql
                            .replace("?1x", &format!("?{}", n + 1))
                            .replace("?2x", &format!("?{}", n + 2));
                        args.push(path.clone());
                        args.push(format!("{path}\u{10FFFF}"));
                    }
                    None => {
                        sql.push_str(&format!(" AND r.area = ?{}", args.len() + 1));
                        args.push(area.clone());
                    }
                }
            } else {
                sql.push_str(&format!(
                    " AND (r.area = ?{n} OR r.responsible = ?{n})",
                    n = args.len() + 1
                ));
                args.push(area.clone());
            }
        }
        for (field, value) in &query.filters {
            kind.spec(field)?;
            sql.push_str(&format!(" AND p.{field} = ?{}", args.len() + 1));
            args.push(value.clone());
        }
        if let Some(tag) = &query.tag {
            sql.push_str(&format!(
                " AND r.rid IN (SELECT rid FROM tags WHERE tag = ?{})",
                args.len() + 1
            ));
            args.push(tag.clone());
        }
        if let Some(text) = &query.text {
            match search::match_query(text) {
                Some(m) => {
                    sql.push_str(&format!(
                        " AND r.rid IN (SELECT rowid FROM search WHERE search MATCH ?{})",
                        args.len() + 1
                    ));
                    args.push(m);
                }
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        next_offset: None,
                    })
                }
            }
        }
        let limit = query.limit.clamp(1, 10_000);
        sql.push_str(&format!(
            " ORDER BY p.{} COLLATE PINYIN, r.rid LIMIT {} OFFSET {}",
            kind.title_field(),
            limit + 1,
            query.offset
        ));
        let specs = kind.fields();
        let mut items: Vec<RecordSummary> = {
            let mut stmt = inner.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                let mut fields = BTreeMap::new();
                for (i, spec) in specs.iter().enumerate() {
                    if let Some(v) = r.get::<_, Option<String>>(4 + i)? {
                        fields.insert(spec.name.to_owned(), v);
                    }
                }
                Ok(RecordSummary {
                    id: r.get(0)?,
                    kind,
                    area: r.get(1)?,
                    responsible: r.get(2)?,
                    deleted: r.get(3)?,
                    title: fields.get(kind.title_field()).cloned().unwrap_or_default(),
                    fields,
                })
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(Page {
            items,
            next_offset: more.then_some(query.offset + limit),
        })
    }

    /// Full-text search over names, addresses and notes of every kind (or one kind).
    pub fn search(&self, text: &str, kind: Option<Kind>, limit: u32) -> Result<Vec<RecordSummary>> {
        let limit = limit.clamp(1, 1000);
        let kind = kind.map(Kind::as_str);
        let inner = self.lock();
        // A phone or ID-document number typed in any of its usual forms finds its records exactly.
        let mut rids: Vec<i64> = match crate::model::search_number(text) {
            Some(number) => {
                let mut stmt = inner.conn.prepare_cached(
                    "SELECT r.rid FROM numbers n JOIN records r ON r.rid = n.rid
                     WHERE n.number = ?1 AND r.deleted = 0 AND (?2 IS NULL OR r.kind = ?2)
                     ORDER BY r.rid LIMIT ?3 + 0",
                )?;
                let rows = stmt.query_map(rusqlite::params![number, kind, limit], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            }
            None => Vec::new(),
        };
        if let Some(query) = search::match_query(text) {
            let mut stmt = inner.conn.prepare_cached(
                "SELECT r.rid FROM search s JOIN records r ON r.rid = s.rowid
                 WHERE search MATCH ?1 AND r.deleted = 0 AND (?2 IS NULL OR r.kind = ?2) LIMIT ?3 + 0",
            )?;
            let rows = stmt.query_map(rusqlite::params![query, kind, limit], |r| r.get(0))?;
            for rid in rows {
                let rid = rid?;
                if rids.len() < limit as usize && !rids.contains(&rid) {
                    rids.push(rid);
                }
            }
        }
        summaries(&inner, &rids)
    }
}

/// Validates a new record and makes its document with its first change, judged by the rule book;
/// stores nothing. Returns the id, the document and its record view.
fn new_document(inner: &Inner, new: NewRecord) -> Result<(String, automerge::Automerge, Record)> {
    inner.check_writable()?;
    Maker::of(inner).make(new)
}

/// A new record made for a bulk create: its first change, its document's bytes and its view.
struct Made {
    id: String,
    change: automerge::Change,
    doc: Vec<u8>,
    record: Record,
}

/// What making a new record's document takes from the store, borrowed so that several threads can
/// make documents at once (a bulk import): nothing in it touches the database.
struct Maker<'a> {
    identity: &'a crate::model::Identity,
    actor: automerge::ActorId,
    rule_actor: gridwork_protocol::rules::Actor,
    area_paths: &'a HashMap<String, String>,
    forms: &'a [gridwork_protocol::Form],
    forms_version: Option<&'a str>,
}

impl<'a> Maker<'a> {
    fn of(inner: &'a Inner) -> Maker<'a> {
        Maker {
            identity: &inner.identity,
            actor: inner.actor.clone(),
            rule_actor: inner.rule_actor(),
            area_paths: &inner.area_paths,
            forms: &inner.forms,
            forms_version: inner.forms_version.as_deref(),
        }
    }

    /// The friendly checks of a new record (the rule book judges it once made): its kind.
    fn validate(&self, new: &NewRecord) -> Result<Kind> {
        let kind = new
            .kind
            .ok_or_else(|| Error::InvalidInput("a new record needs a kind".into()))?;
        for (name, value) in &new.fields {
            let spec = kind.spec(name)?;
            if spec.managed {
                return Err(Error::ReadOnlyField(name.clone()));
            }
            spec.validate(value)?;
        }
        let title = kind.title_field();
        if kind != Kind::Visit && new.fields.get(title).is_none_or(|t| t.trim().is_empty()) {
            return Err(Error::field(title, "required"));
        }
        check_area(self.area_paths, &new.area)?;
        super::forms::check_required(self.forms, self.area_paths, kind, &new.area, &new.attrs)?;
        Ok(kind)
    }

    /// The note of record `id`'s first change. It names the record: without it, two records created
    /// alike in the same second on one device would begin with byte-identical changes, i.e. the same
    /// change hash, which the outbox and the relay's dedup take for one change.
    fn create_message(&self, id: &str, new: &NewRecord) -> String {
        let me = self.identity;
        let note = ChangeNote::new(
            &me.user_id,
            &me.device_id,
            "create",
            new.fields.keys().cloned().collect(),
        )
        .with_forms(self.forms_version);
        #[derive(Serialize)]
        struct CreateNote<'a> {
            #[serde(flatten)]
            note: &'a ChangeNote,
            record: &'a str,
        }
        serde_json::to_string(&CreateNote {
            note: &note,
            record: id,
        })
        .expect("serialises")
    }

    /// Makes a new record like [`Maker::make`] from `template` (see `template.rs`): only the values
    /// differ. Returns the id, the first change and the record view.
    fn make_like(
        &self,
        template: &Template,
        new: &NewRecord,
    ) -> Result<(String, automerge::Change, Record)> {
        self.validate(new)?;
        let id = new_record_id();
        let message = self.create_message(&id, new);
        let (change, record) = template.instance(&id, new, message, time::now_secs());
        gridwork_protocol::rules::authorize(
            &self.rule_actor,
            self.area_paths,
            self.forms,
            None,
            &doc::RecordState::of(record.clone()),
        )
        .map_err(|refusal| Error::refused(&id, refusal))?;
        Ok((id, change, record))
    }

    /// Makes the records of one part of a bulk create: by template where the record's shape allows
    /// and a template of it was made and proved (its first record made the full way re-encodes to the
    /// same bytes), the full way otherwise.
    fn make_many(&self, news: Vec<NewRecord>) -> Result<Vec<Made>> {
        let mut templates: HashMap<Shape, Option<Template>> = HashMap::new();
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            let shape = Shape::of(&new);
            if let Some(Some(t)) = shape.as_ref().and_then(|s| templates.get(s)) {
                let (id, change, record) = self.make_like(t, &new)?;
                out.push(Made {
                    id,
                    doc: change.raw_bytes().to_vec(),
                    change,
                    record,
                });
                continue;
            }
            let (id, doc, record) = self.make(new)?;
            let change = doc
                .get_last_local_change()
                .ok_or_else(|| Error::Corrupt(format!("record {id} has no change")))?;
            if let Some(shape) = shape {
                templates
                    .entry(shape)
                    .or_insert_with(|| Template::proven(&change, &record));
            }
            out.push(Made {
                id,
                doc: doc.save(),
                change,
                record,
            });
        }
        Ok(out)
    }

    fn make(&self, new: NewRecord) -> Result<(String, automerge::Automerge, Record)> {
        let kind = self.validate(&new)?;
        let me = self.identity;
        let id = new_record_id();
        let now = time::now_iso();
        let mut doc = automerge::Automerge::new().with_actor(self.actor.clone());
        let message = self.create_message(&id, &new);
        let result = doc.transact_with(
            |_| {
                CommitOptions::default()
                    .with_message(message)
                    .with_time(time::now_secs())
            },
            |tx| -> Result<()> {
                tx.put(ROOT, doc::KIND, kind.as_str())?;
                tx.put(ROOT, doc::AREA, new.area.as_str())?;
                tx.put(ROOT, DELETED, false)?;
                let fields = tx.put_object(ROOT, FIELDS, ObjType::Map)?;
                for (name, value) in new.fields.iter().filter(|(_, v)| !v.is_empty()) {
                    tx.put(&fields, name.as_str(), value.as_str())?;
                }
                let attrs = tx.put_object(ROOT, ATTRS, ObjType::Map)?;
                for (name, value) in &new.attrs {
                    tx.put(&attrs, name.as_str(), value.as_str())?;
                }
                let tags = tx.put_object(ROOT, TAGS, ObjType::Map)?;
                for tag in &new.tags {
                    tx.put(&tags, tag.trim(), true)?;
                }
                tx.put_object(ROOT, LINKS, ObjType::Map)?;
                let notes = tx.put_object(ROOT, NOTES, ObjType::Text)?;
                if !new.notes.is_empty() {
                    tx.splice_text(&notes, 0, 0, &new.notes)?;
                }
                match kind {
                    Kind::Event => {
                        tx.put(ROOT, doc::RESPONSIBLE, new.area.as_str())?;
                        tx.put(&fields, "status", EventStatus::Reported.as_str())?;
                        tx.put(&fields, "reporter", me.user_id.as_str())?;
                        tx.put(&fields, "reported_at", now.as_str())?;
                        if !new.fields.contains_key("priority") {
                            tx.put(&fields, "priority", "normal")?;
                        }
                        tx.put_object(ROOT, TIMELINE, ObjType::List)?;
                        append_timeline(tx, &me.user_id, "report", None, Some("reported"), None)?;
                    }
                    Kind::Visit => {
                        tx.put(&fields, "worker", me.user_id.as_str())?;
                        tx.put(&fields, "started_at", now.as_str())?;
                        tx.put(&fields, "review_state", ReviewState::Pending.as_str())?;
                        tx.put_object(ROOT, doc::VISITED, ObjType::Map)?;
                        tx.put_object(ROOT, doc::CHECKLIST, ObjType::Map)?;
                        tx.put_object(ROOT, doc::ATTACHMENTS, ObjType::List)?;
                        tx.put_object(ROOT, TIMELINE, ObjType::List)?;
                    }
                    _ => {}
                }
                Ok(())
            },
        );
        if let Err(failure) = result {
            return Err(failure.error);
        }
        let state =
            doc::read_state(&id, &doc).map_err(|e| Error::Corrupt(format!("record {id}: {e}")))?;
        gridwork_protocol::rules::authorize(
            &self.rule_actor,
            self.area_paths,
            self.forms,
            None,
            &state,
        )
        .map_err(|refusal| Error::refused(&id, refusal))?;
        Ok((id, doc, state.record))
    }
}

/// Summaries of records by rid, in the given order, read from the projection.
pub(crate) fn summaries(inner: &Inner, rids: &[i64]) -> Result<Vec<RecordSummary>> {
    let mut out = Vec::with_capacity(rids.len());
    for &rid in rids {
        let head = inner
            .conn
            .prepare_cached(
                "SELECT id, kind, area, responsible, deleted FROM records WHERE rid = ?1",
            )?
            .query_row([rid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })?;
        let Some(kind) = Kind::parse(&head.1) else {
            continue;
        };
        let specs = kind.fields();
        let sql = format!(
            "SELECT {} FROM {} WHERE rid = ?1",
            specs.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
            kind.table()
        );
        let fields = inner.conn.prepare_cached(&sql)?.query_row([rid], |r| {
            let mut map = BTreeMap::new();
            for (i, spec) in specs.iter().enumerate() {
                if let Some(v) = r.get::<_, Option<String>>(i)? {
                    map.insert(spec.name.to_owned(), v);
                }
            }
            Ok(map)
        })?;
        out.push(RecordSummary {
            id: head.0,
            kind,
            area: head.2,
            responsible: head.3,
            deleted: head.4,
            title: fields.get(kind.title_field()).cloned().unwrap_or_default(),
            fields,
        });
    }
    Ok(out)
}
