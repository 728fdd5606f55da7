//! The projection: plain rows per kind, links, tags, conflicted fields and the search index, all derived
//! from a record's document. `project` rewrites every row of one record; it is the only writer of them.
use super::search;
use crate::doc;
use crate::error::{Error, Result};
use crate::model::{time, Record};
use automerge::Automerge;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

fn search_body(record: &Record) -> String {
    let mut text = String::new();
    for spec in record.kind.fields().iter().filter(|f| f.searchable) {
        if let Some(v) = record.fields.get(spec.name) {
            text.push_str(v);
            text.push(' ');
        }
    }
    text.push_str(&record.notes);
    search::index_text(&text)
}

fn stable_hash(s: &str) -> i64 {
    // Only compared with itself on the same build, to skip rewriting unchanged search rows.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish() as i64
}

/// Writes the record row (with the document bytes) and every projection row of one record.
/// `saved` is the document's saved form when the caller has it already.
pub(crate) fn project(
    conn: &Connection,
    id: &str,
    doc: &Automerge,
    saved: Option<&[u8]>,
) -> Result<i64> {
    let record = doc::read_record(id, doc)
        .ok_or_else(|| Error::Corrupt(format!("record {id} has no kind or area")))?;
    match saved {
        Some(bytes) => project_record(conn, &record, bytes, true),
        None => project_record(conn, &record, &doc.save(), true),
    }
}

/// The record view stored with the projection ([`project_record`] writes it): `None` for a record
/// the store does not have, or whose row predates the view (schema 4) and has not been written since.
pub(crate) fn stored_view(conn: &Connection, id: &str) -> Result<Option<Record>> {
    let view: Option<Option<String>> = conn
        .prepare_cached("SELECT view FROM records WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match view.flatten() {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|_| Error::Corrupt(format!("record {id}: its stored view does not parse"))),
    }
}

/// Search index writes held back until [`SearchWrites::flush`]: FTS5 writes its pending terms out
/// as a new segment whenever a statement of the transaction opens a savepoint (an `INSERT OR
/// REPLACE`, a `RETURNING`...), so indexing record by record between other writes makes a segment
/// per record, and merging them was a fifth of a bulk apply. Written together at the end, a page's
/// terms go out as one segment.
#[derive(Default)]
pub(crate) struct SearchWrites {
    /// (rowid, whether an old row goes first, new body), in order.
    rows: Vec<(i64, bool, String)>,
}

impl SearchWrites {
    pub(crate) fn flush(self, conn: &Connection) -> Result<()> {
        for (rid, replace, body) in self.rows {
            if replace {
                conn.prepare_cached("DELETE FROM search WHERE rowid = ?1")?
                    .execute([rid])?;
            }
            conn.prepare_cached("INSERT INTO search (rowid, body) VALUES (?1, ?2)")?
                .execute(params![rid, body])?;
        }
        Ok(())
    }
}

/// [`project`] for a record already read from its document (`checked`), or for the relay's view of
/// `bytes` that the device has not compared with the document yet (`!checked`).
pub(crate) fn project_record(
    conn: &Connection,
    record: &Record,
    bytes: &[u8],
    checked: bool,
) -> Result<i64> {
    let mut search = SearchWrites::default();
    let rid = project_deferred(conn, record, bytes, checked, &mut search)?;
    search.flush(conn)?;
    Ok(rid)
}

/// [`project_record`] with the search index writes left in `search`, for the caller to flush
/// before its transaction commits.
pub(crate) fn project_deferred(
    conn: &Connection,
    record: &Record,
    bytes: &[u8],
    checked: bool,
    search: &mut SearchWrites,
) -> Result<i64> {
    let id = record.id.as_str();
    let existing: Option<(i64, String, Option<i64>)> = conn
        .prepare_cached("SELECT rid, kind, search_key FROM records WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let body = search_body(record);
    let key = stable_hash(&body);
    let view = record.compact_json();
    let values = params![
        id,
        record.kind.as_str(),
        record.area,
        record.responsible,
        record.deleted,
        time::now_secs(),
        bytes,
        key,
        view,
        checked
    ];
    let rid: i64 = match &existing {
        None => conn
            .prepare_cached(
                "INSERT INTO records (id, kind, area, responsible, deleted, updated_at, doc, search_key, view, checked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING rid",
            )?
            .query_row(values, |r| r.get(0))?,
        Some((rid, old_kind, _)) => {
            conn.prepare_cached(
                "UPDATE records SET kind = ?2, area = ?3, responsible = ?4, deleted = ?5, updated_at = ?6,
                     doc = ?7, search_key = ?8, view = ?9, checked = ?10 WHERE id = ?1",
            )?
            .execute(values)?;
            // A kind never changes for a record made by Gridwork, but a hostile document could try.
            if old_kind != record.kind.as_str() {
                if let Some(k) = crate::model::Kind::parse(old_kind) {
                    conn.execute(&format!("DELETE FROM {} WHERE rid = ?1", k.table()), [rid])?;
                }
            }
            *rid
        }
    };
    // A record seen for the first time has no rows to clear (the common case of a bulk apply).
    let fresh = existing.is_none();
    let fields = record.kind.fields();
    let sql = format!(
        "INSERT OR REPLACE INTO {} (rid, {}) VALUES (?1, {})",
        record.kind.table(),
        fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
        (2..=fields.len() + 1)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut values: Vec<Option<&str>> = vec![None; fields.len()];
    for (i, spec) in fields.iter().enumerate() {
        values[i] = record
            .fields
            .get(spec.name)
            .map(String::as_str)
            .filter(|v| !v.is_empty());
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut bind: Vec<&dyn rusqlite::ToSql> = vec![&rid];
    for v in &values {
        bind.push(v);
    }
    stmt.execute(bind.as_slice())?;

    // Rows are rewritten only when they differ: an unchanged page is not written (nor encrypted).
    sync_rows(
        conn,
        fresh,
        rid,
        "SELECT type || ':' || dst FROM links WHERE src = ?1",
        "DELETE FROM links WHERE src = ?1",
        record
            .links
            .iter()
            .map(|l| format!("{}:{}", l.link_type.as_str(), l.target))
            .collect(),
        |key| {
            let (t, dst) = key.split_once(':').expect("type:dst");
            conn.prepare_cached("INSERT OR IGNORE INTO links (src, type, dst) VALUES (?1, ?2, ?3)")?
                .execute(params![rid, t, dst])
        },
    )?;
    sync_rows(
        conn,
        fresh,
        rid,
        "SELECT tag FROM tags WHERE rid = ?1",
        "DELETE FROM tags WHERE rid = ?1",
        record.tags.iter().cloned().collect(),
        |tag| {
            conn.prepare_cached("INSERT OR IGNORE INTO tags (rid, tag) VALUES (?1, ?2)")?
                .execute(params![rid, tag])
        },
    )?;
    sync_rows(
        conn,
        fresh,
        rid,
        "SELECT field FROM conflicts WHERE rid = ?1",
        "DELETE FROM conflicts WHERE rid = ?1",
        record.conflicted_fields.iter().cloned().collect(),
        |field| {
            conn.prepare_cached("INSERT OR IGNORE INTO conflicts (rid, field) VALUES (?1, ?2)")?
                .execute(params![rid, field])
        },
    )?;
    let old_search = existing.and_then(|(_, _, k)| k);
    if old_search != Some(key) {
        search.rows.push((rid, old_search.is_some(), body));
    }
    Ok(rid)
}

/// Makes the rows of one record in a side table equal `wanted`, touching nothing when they already are.
fn sync_rows(
    conn: &Connection,
    fresh: bool,
    rid: i64,
    select: &str,
    delete: &str,
    wanted: BTreeSet<String>,
    insert: impl Fn(&str) -> rusqlite::Result<usize>,
) -> Result<()> {
    if !fresh {
        let current: BTreeSet<String> = conn
            .prepare_cached(select)?
            .query_map([rid], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if current == wanted {
            return Ok(());
        }
        conn.prepare_cached(delete)?.execute([rid])?;
    }
    for key in &wanted {
        insert(key)?;
    }
    Ok(())
}
