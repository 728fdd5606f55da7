//! The projection: plain rows per kind, links, tags, conflicted fields and the search index, all derived
//! from a record's document. `project` rewrites every row of one record; it is the only writer of them.
use super::search;
use crate::doc;
use crate::error::{Error, Result};
use crate::model::{search_number, time, Kind, Record};
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
    let rid = project_deferred(conn, record, DocBytes::Whole(bytes), checked, &mut search)?;
    search.flush(conn)?;
    Ok(rid)
}

/// A record's document as a write stores it.
pub(crate) enum DocBytes<'a> {
    /// The whole document, saved.
    Whole(&'a [u8]),
    /// Chunks that bring the stored document up to `doc`, appended to the stored bytes (Automerge
    /// loads a document followed by further chunks as one): a one-field edit stores its change, not
    /// the whole document again. `doc` is saved whole instead where the record is not stored yet or its
    /// stored bytes carry enough appended chunks already ([`may_append`]).
    Append {
        chunks: &'a [u8],
        doc: &'a Automerge,
    },
}

/// Most chunks appended to a record's stored document before it is saved whole again: loading
/// applies each appended change on its own.
const MAX_APPENDED: usize = 8;

/// Whether `more` bytes of chunks may be appended to `stored`, a record's stored document bytes: while
/// they hold fewer than [`MAX_APPENDED`] chunks after the first and those weigh no more than the first
/// (bytes that do not read as chunks are saved whole again).
pub(crate) fn may_append(stored: &[u8], more: usize) -> bool {
    let mut chunks = chunk_lengths(stored);
    let Some(Some(first)) = chunks.next() else {
        return false;
    };
    let (mut count, mut appended) = (0, more);
    for len in chunks {
        let Some(len) = len else { return false };
        count += 1;
        appended += len;
    }
    count < MAX_APPENDED && appended <= first
}

/// The lengths of the Automerge chunks `bytes` holds one after another (header included): 4 magic bytes,
/// a 4-byte checksum, the chunk type, the length of the contents (unsigned LEB128), the contents.
/// `None` where the bytes stop being chunks.
fn chunk_lengths(bytes: &[u8]) -> impl Iterator<Item = Option<usize>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let rest = &bytes[at..];
        let len = chunk_len(rest).filter(|&len| len <= rest.len());
        at = match len {
            Some(len) => at + len,
            None => bytes.len(),
        };
        Some(len)
    })
}

/// Whether a record's stored document bytes carry chunks after the first (appended by
/// [`DocBytes::Append`]), told from their length and their first bytes (`prefix`: 20 are enough).
pub(crate) fn has_appended(prefix: &[u8], stored_len: usize) -> bool {
    chunk_len(prefix).is_some_and(|first| first < stored_len)
}

/// The length (header included) that the header of the chunk at the start of `bytes` declares.
fn chunk_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() <= 9 || bytes[..4] != [0x85, 0x6f, 0x4a, 0x83] {
        return None;
    }
    let (contents, size) = leb128(&bytes[9..])?;
    9usize.checked_add(size)?.checked_add(contents)
}

/// An unsigned LEB128 number at the start of `bytes`, and its size in bytes.
fn leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(9).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

/// [`project_record`] with the search index writes left in `search`, for the caller to flush
/// before its transaction commits.
pub(crate) fn project_deferred(
    conn: &Connection,
    record: &Record,
    bytes: DocBytes<'_>,
    checked: bool,
    search: &mut SearchWrites,
) -> Result<i64> {
    let id = record.id.as_str();
    // The stored document bytes are read only where the change may be appended to them.
    let appending = matches!(bytes, DocBytes::Append { .. });
    let existing: Option<Existing> = conn
        .prepare_cached(if appending {
            "SELECT rid, kind, search_key, view, checked, area, responsible, deleted, doc
             FROM records WHERE id = ?1"
        } else {
            "SELECT rid, kind, search_key, view, checked, area, responsible, deleted, NULL
             FROM records WHERE id = ?1"
        })?
        .query_row([id], |r| {
            Ok(Existing {
                rid: r.get(0)?,
                kind: r.get(1)?,
                search_key: r.get(2)?,
                view: r.get(3)?,
                checked: r.get(4)?,
                area: r.get(5)?,
                responsible: r.get(6)?,
                deleted: r.get(7)?,
                doc: r.get(8)?,
            })
        })
        .optional()?;
    let bytes: std::borrow::Cow<'_, [u8]> = match (bytes, &existing) {
        (DocBytes::Whole(bytes), _) => bytes.into(),
        (
            DocBytes::Append { chunks, .. },
            Some(Existing {
                doc: Some(stored), ..
            }),
        ) if may_append(stored, chunks.len()) => [&stored[..], chunks].concat().into(),
        (DocBytes::Append { doc, .. }, _) => doc.save().into(),
    };
    let bytes = &bytes[..];
    let body = search_body(record);
    let key = stable_hash(&body);
    let view = record.compact_json();
    let now = time::now_secs();
    let Some(old) = existing else {
        let rid: i64 = conn
            .prepare_cached(
                "INSERT INTO records (id, kind, area, responsible, deleted, updated_at, doc, search_key, view, checked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING rid",
            )?
            .query_row(
                params![
                    id,
                    record.kind.as_str(),
                    record.area,
                    record.responsible,
                    record.deleted,
                    now,
                    bytes,
                    key,
                    view,
                    checked
                ],
                |r| r.get(0),
            )?;
        // A record seen for the first time has no rows to clear (the common case of a bulk apply).
        insert_kind_row(conn, rid, record)?;
        write_side_rows(conn, rid, None, BTreeSet::new(), record, true)?;
        search.rows.push((rid, false, body));
        return Ok(rid);
    };
    let rid = old.rid;
    // Only columns that change are written: SQLite rewrites the entries of every index whose columns an
    // UPDATE sets, equal or not, and under SQLCipher each page written is encrypted and authenticated.
    conn.prepare_cached(
        "UPDATE records SET updated_at = ?2, doc = ?3, search_key = ?4, view = ?5 WHERE rid = ?1",
    )?
    .execute(params![rid, now, bytes, key, view])?;
    let kind_changed = old.kind != record.kind.as_str();
    if kind_changed
        || old.area != record.area
        || old.responsible != record.responsible
        || old.deleted != record.deleted
    {
        conn.prepare_cached(
            "UPDATE records SET kind = ?2, area = ?3, responsible = ?4, deleted = ?5 WHERE rid = ?1",
        )?
        .execute(params![
            rid,
            record.kind.as_str(),
            record.area,
            record.responsible,
            record.deleted
        ])?;
    }
    if old.checked != checked {
        conn.prepare_cached("UPDATE records SET checked = ?2 WHERE rid = ?1")?
            .execute(params![rid, checked])?;
    }
    // The stored view is what the projection rows were written from (in the same transaction), so
    // the rows that differ are found without reading them. A row from before views (or whose view
    // does not parse) has every row rewritten.
    let before: Option<Record> = old
        .view
        .as_deref()
        .and_then(|v| serde_json::from_str(v).ok())
        .filter(|b: &Record| !kind_changed && b.kind == record.kind);
    // The numbers that search finds the record by, as written: from the stored view, or else from the
    // projection row they were written from (read before it is written again).
    let old_kind = crate::model::Kind::parse(&old.kind);
    let old_numbers = match (&before, old_kind) {
        (Some(b), _) => record_numbers(b),
        (None, Some(k)) => row_numbers(conn, k, rid)?,
        (None, None) => BTreeSet::new(),
    };
    if kind_changed {
        // A kind never changes for a record made by Gridwork, but a hostile document could try.
        if let Some(k) = old_kind {
            conn.execute(&format!("DELETE FROM {} WHERE rid = ?1", k.table()), [rid])?;
        }
    }
    match &before {
        Some(b) => update_kind_row(conn, rid, b, record)?,
        None => insert_kind_row(conn, rid, record)?,
    }
    write_side_rows(conn, rid, before.as_ref(), old_numbers, record, false)?;
    if old.search_key != Some(key) {
        search.rows.push((rid, old.search_key.is_some(), body));
    }
    Ok(rid)
}

/// What the records table holds of a record before it is written again.
struct Existing {
    rid: i64,
    kind: String,
    search_key: Option<i64>,
    view: Option<String>,
    checked: bool,
    area: String,
    responsible: Option<String>,
    deleted: bool,
    /// The stored document bytes, when the write may append to them.
    doc: Option<Vec<u8>>,
}

/// A kind field's value as its projection column holds it (an empty value is NULL).
fn column_value<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Writes the whole row of the record's kind table.
fn insert_kind_row(conn: &Connection, rid: i64, record: &Record) -> Result<()> {
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
    let values: Vec<Option<&str>> = fields
        .iter()
        .map(|spec| column_value(record, spec.name))
        .collect();
    let mut bind: Vec<&dyn rusqlite::ToSql> = vec![&rid];
    for v in &values {
        bind.push(v);
    }
    conn.prepare_cached(&sql)?.execute(bind.as_slice())?;
    Ok(())
}

/// Writes the columns of the record's kind table whose values differ from `before`'s.
fn update_kind_row(conn: &Connection, rid: i64, before: &Record, record: &Record) -> Result<()> {
    let changed: Vec<&str> = record
        .kind
        .fields()
        .iter()
        .map(|f| f.name)
        .filter(|name| column_value(before, name) != column_value(record, name))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE {} SET {} WHERE rid = ?1",
        record.kind.table(),
        changed
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name} = ?{}", i + 2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let values: Vec<Option<&str>> = changed.iter().map(|n| column_value(record, n)).collect();
    let mut bind: Vec<&dyn rusqlite::ToSql> = vec![&rid];
    for v in &values {
        bind.push(v);
    }
    let updated = conn.prepare_cached(&sql)?.execute(bind.as_slice())?;
    if updated == 0 {
        // No row to update (it was never written): write it whole.
        insert_kind_row(conn, rid, record)?;
    }
    Ok(())
}

/// The projection's side tables, each with its column naming the record, for what deletes or rebuilds
/// all of them. `numbers` is not among them: it has no index by record, and a record's rows are
/// deleted by their keys ([`delete_numbers`]).
pub(crate) const SIDE_TABLES: [(&str, &str); 5] = [
    ("links", "src"),
    ("tags", "rid"),
    ("conflicts", "rid"),
    ("visited", "visit"),
    ("absorbed", "rid"),
];

/// The numbers search finds a record by (see [`search_number`]), one row each in `numbers`.
fn record_numbers(r: &Record) -> BTreeSet<String> {
    r.fields
        .iter()
        .filter(|(k, _)| r.kind.is_number_field(k))
        .filter_map(|(_, v)| search_number(v))
        .collect()
}

/// The numbers of record `rid` as its projection row holds them, which is what its `numbers` rows were
/// written from (as `Store::open` fills them, `fill_numbers`): the rows to delete when no stored view
/// says. `numbers` has no index by record (one page fewer to write with every edit of a number,
/// BENCHMARKS.md section 12): its rows are deleted by their keys.
pub(crate) fn row_numbers(conn: &Connection, kind: Kind, rid: i64) -> Result<BTreeSet<String>> {
    let columns: Vec<&str> = kind
        .fields()
        .iter()
        .filter(|f| kind.is_number_field(f.name))
        .map(|f| f.name)
        .collect();
    if columns.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE rid = ?1",
        columns.join(", "),
        kind.table()
    );
    let values: Option<Vec<Option<String>>> = conn
        .prepare_cached(&sql)?
        .query_row([rid], |r| (0..columns.len()).map(|i| r.get(i)).collect())
        .optional()?;
    Ok(values
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|v| search_number(&v))
        .collect())
}

/// Deletes the `numbers` rows of record `rid` (of `kind`), read from its projection row: call it before
/// that row is deleted.
pub(crate) fn delete_numbers(conn: &Connection, kind: Kind, rid: i64) -> Result<()> {
    for number in row_numbers(conn, kind, rid)? {
        conn.prepare_cached("DELETE FROM numbers WHERE number = ?1 AND rid = ?2")?
            .execute(params![number, rid])?;
    }
    Ok(())
}

/// Writes the links, tags, conflicted fields, numbers, absorbed records and visited records of record
/// `rid` where they differ from `before`'s (all of them without `before`); `old_numbers`: the numbers
/// its `numbers` rows hold (see [`row_numbers`]). `fresh`: the record is new to the table, with no rows
/// to delete.
fn write_side_rows(
    conn: &Connection,
    rid: i64,
    before: Option<&Record>,
    old_numbers: BTreeSet<String>,
    record: &Record,
    fresh: bool,
) -> Result<()> {
    let side = SideRows { conn, rid, fresh };
    fn links(r: &Record) -> BTreeSet<(&str, &str)> {
        r.links
            .iter()
            .map(|l| (l.link_type.as_str(), l.target.as_str()))
            .collect()
    }
    fn strings(v: &[String]) -> BTreeSet<&str> {
        v.iter().map(String::as_str).collect()
    }
    side.write(
        before.map(links),
        links(record),
        "DELETE FROM links WHERE src = ?1",
        "DELETE FROM links WHERE src = ?1 AND type = ?2 AND dst = ?3",
        "INSERT OR IGNORE INTO links (src, type, dst) VALUES (?1, ?2, ?3)",
        |stmt, (link_type, target)| stmt.execute(params![rid, link_type, target]),
    )?;
    side.write(
        before.map(|b| strings(&b.tags)),
        strings(&record.tags),
        "DELETE FROM tags WHERE rid = ?1",
        "DELETE FROM tags WHERE rid = ?1 AND tag = ?2",
        "INSERT OR IGNORE INTO tags (rid, tag) VALUES (?1, ?2)",
        |stmt, tag| stmt.execute(params![rid, tag]),
    )?;
    side.write(
        before.map(|b| strings(&b.conflicted_fields)),
        strings(&record.conflicted_fields),
        "DELETE FROM conflicts WHERE rid = ?1",
        "DELETE FROM conflicts WHERE rid = ?1 AND field = ?2",
        "INSERT OR IGNORE INTO conflicts (rid, field) VALUES (?1, ?2)",
        |stmt, field| stmt.execute(params![rid, field]),
    )?;
    side.write_difference(
        &old_numbers,
        &record_numbers(record),
        "DELETE FROM numbers WHERE number = ?2 AND rid = ?1",
        "INSERT OR IGNORE INTO numbers (number, rid) VALUES (?2, ?1)",
        |stmt, number| stmt.execute(params![rid, number]),
    )?;
    fn absorbed(r: &Record) -> BTreeSet<&str> {
        gridwork_protocol::duplicates::absorbed(r).collect()
    }
    side.write(
        before.map(absorbed),
        absorbed(record),
        "DELETE FROM absorbed WHERE rid = ?1",
        "DELETE FROM absorbed WHERE rid = ?1 AND away = ?2",
        "INSERT OR IGNORE INTO absorbed (rid, away) VALUES (?1, ?2)",
        |stmt, away| stmt.execute(params![rid, away]),
    )?;
    side.write(
        before.map(|b| strings(&b.visited)),
        strings(&record.visited),
        "DELETE FROM visited WHERE visit = ?1",
        "DELETE FROM visited WHERE visit = ?1 AND record = ?2",
        "INSERT OR IGNORE INTO visited (visit, record) VALUES (?1, ?2)",
        |stmt, visited| stmt.execute(params![rid, visited]),
    )?;
    Ok(())
}

/// The rows of one record in the side tables (links, tags, ...), each table keyed by the record and
/// the row's value.
struct SideRows<'a> {
    conn: &'a Connection,
    rid: i64,
    fresh: bool,
}

impl SideRows<'_> {
    /// Writes a side table's rows `now` of the record. With the rows as they were written (`before`,
    /// from the stored view they were written from, in the same transaction) only the rows that differ
    /// are deleted and inserted, each by its key: deleting all of a record's rows and inserting them
    /// again rewrites the pages of rows that stay (a phone edit rewrote the page of the person's ID
    /// number too; BENCHMARKS.md section 12). Without `before`, all of them (`clear`, then insert).
    /// `bind` runs `delete` or `insert` for one row (`?1` is the record's rid).
    fn write<T: Ord>(
        &self,
        before: Option<BTreeSet<T>>,
        now: BTreeSet<T>,
        clear: &str,
        delete: &str,
        insert: &str,
        bind: impl Fn(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<()> {
        match &before {
            Some(before) => self.write_difference(before, &now, delete, insert, bind),
            None => {
                if !self.fresh {
                    self.conn.prepare_cached(clear)?.execute([self.rid])?;
                }
                self.write_difference(&BTreeSet::new(), &now, delete, insert, bind)
            }
        }
    }

    /// Deletes the rows of `before` that are not in `now` and inserts those of `now` not in `before`.
    fn write_difference<T: Ord>(
        &self,
        before: &BTreeSet<T>,
        now: &BTreeSet<T>,
        delete: &str,
        insert: &str,
        bind: impl Fn(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<()> {
        for row in before.difference(now) {
            bind(&mut self.conn.prepare_cached(delete)?, row)?;
        }
        for row in now.difference(before) {
            bind(&mut self.conn.prepare_cached(insert)?, row)?;
        }
        Ok(())
    }
}
