//! The projection: plain rows per kind, links, tags, conflicted fields and the search index, all derived
//! from a record's document. `project` rewrites every row of one record; it is the only writer of them.
use super::search;
use crate::doc;
use crate::error::{Error, Result};
use crate::model::{time, Record};
use automerge::Automerge;
use rusqlite::{params, Connection};
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
    let owned;
    let bytes = match saved {
        Some(b) => b,
        None => {
            owned = doc.save();
            &owned
        }
    };
    let (rid, old_kind, old_search): (i64, String, Option<i64>) = conn
        .prepare_cached(
            "INSERT INTO records (id, kind, area, responsible, deleted, updated_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET kind = ?2, area = ?3, responsible = ?4, deleted = ?5,
                 updated_at = ?6, doc = ?7
             RETURNING rid, kind, search_key",
        )?
        .query_row(
            params![
                id,
                record.kind.as_str(),
                record.area,
                record.responsible,
                record.deleted,
                time::now_secs(),
                bytes
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
    // A kind never changes for a record made by Gridwork, but a hostile document could try.
    if old_kind != record.kind.as_str() {
        if let Some(k) = crate::model::Kind::parse(&old_kind) {
            conn.execute(&format!("DELETE FROM {} WHERE rid = ?1", k.table()), [rid])?;
        }
    }
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

    conn.prepare_cached("DELETE FROM links WHERE src = ?1")?
        .execute([rid])?;
    for link in &record.links {
        conn.prepare_cached("INSERT OR IGNORE INTO links (src, type, dst) VALUES (?1, ?2, ?3)")?
            .execute(params![rid, link.link_type.as_str(), link.target])?;
    }
    conn.prepare_cached("DELETE FROM tags WHERE rid = ?1")?
        .execute([rid])?;
    for tag in &record.tags {
        conn.prepare_cached("INSERT OR IGNORE INTO tags (rid, tag) VALUES (?1, ?2)")?
            .execute(params![rid, tag])?;
    }
    conn.prepare_cached("DELETE FROM conflicts WHERE rid = ?1")?
        .execute([rid])?;
    for field in &record.conflicted_fields {
        conn.prepare_cached("INSERT OR IGNORE INTO conflicts (rid, field) VALUES (?1, ?2)")?
            .execute(params![rid, field])?;
    }
    let body = search_body(&record);
    let key = stable_hash(&body);
    if old_search != Some(key) {
        if old_search.is_some() {
            conn.prepare_cached("DELETE FROM search WHERE rowid = ?1")?
                .execute([rid])?;
        }
        conn.prepare_cached("INSERT INTO search (rowid, body) VALUES (?1, ?2)")?
            .execute(params![rid, body])?;
        conn.prepare_cached("UPDATE records SET search_key = ?2 WHERE rid = ?1")?
            .execute(params![rid, key])?;
    }
    Ok(rid)
}
