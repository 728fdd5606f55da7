//! The store's SQLite schema and its migrations, stepped on `PRAGMA user_version`.
//! Each step runs in one transaction; a store made by any earlier version upgrades to the same schema a
//! fresh store gets (tested in `tests::migrated_store_equals_fresh`).
use crate::model::Kind;
use rusqlite::{Connection, Transaction};

pub const VERSION: i64 = 8;

/// Version 1: records with their documents, the outbox, areas, sync state and the projection.
fn v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE areas (
             id TEXT PRIMARY KEY, parent TEXT, level TEXT NOT NULL, name TEXT NOT NULL,
             path TEXT NOT NULL UNIQUE);
         CREATE TABLE records (
             rid INTEGER PRIMARY KEY,
             id TEXT NOT NULL UNIQUE,
             kind TEXT NOT NULL,
             area TEXT NOT NULL,
             responsible TEXT,
             deleted INTEGER NOT NULL DEFAULT 0,
             updated_at INTEGER NOT NULL,
             search_key INTEGER,
             doc BLOB NOT NULL);
         CREATE INDEX records_area ON records (area, kind, deleted);
         CREATE INDEX records_responsible ON records (responsible) WHERE responsible IS NOT NULL;
         CREATE TABLE outbox (
             seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, hash BLOB NOT NULL UNIQUE, bytes BLOB NOT NULL);
         CREATE TABLE quarantine (
             hash BLOB PRIMARY KEY, record_id TEXT NOT NULL, bytes BLOB NOT NULL, reason TEXT NOT NULL,
             at INTEGER NOT NULL);
         CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE links (
             src INTEGER NOT NULL, type TEXT NOT NULL, dst TEXT NOT NULL,
             PRIMARY KEY (src, type, dst)) WITHOUT ROWID;
         CREATE INDEX links_dst ON links (dst, type);
         CREATE TABLE tags (rid INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (rid, tag)) WITHOUT ROWID;
         CREATE INDEX tags_tag ON tags (tag);
         CREATE TABLE attachments (
             sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, mime TEXT NOT NULL, data BLOB,
             record_id TEXT NOT NULL, uploaded INTEGER NOT NULL DEFAULT 0);
         CREATE VIRTUAL TABLE search USING fts5 (
             body, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2');",
    )?;
    for kind in Kind::ALL {
        let columns: Vec<String> = kind
            .fields()
            .iter()
            .map(|f| format!("{} TEXT", f.name))
            .collect();
        tx.execute_batch(&format!(
            "CREATE TABLE {t} (rid INTEGER PRIMARY KEY, {c});
             CREATE INDEX {t}_title ON {t} ({title});",
            t = kind.table(),
            c = columns.join(", "),
            title = kind.title_field(),
        ))?;
    }
    tx.execute_batch(
        "CREATE INDEX p_event_assignee ON p_event (assignee) WHERE assignee IS NOT NULL;
         CREATE INDEX p_event_due ON p_event (due) WHERE due IS NOT NULL;
         CREATE INDEX p_visit_review ON p_visit (review_state);",
    )
}

/// Version 2: changes that arrive before their dependencies are kept until the dependencies come
/// (version 1 kept them only in memory), and an index of conflicted fields so `conflicts()` need not
/// read every document. The conflict index is filled by re-projecting every record after migrating.
fn v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE held_changes (
             hash BLOB PRIMARY KEY, record_id TEXT NOT NULL, bytes BLOB NOT NULL, received_at INTEGER NOT NULL);
         CREATE INDEX held_changes_record ON held_changes (record_id);
         CREATE TABLE conflicts (rid INTEGER NOT NULL, field TEXT NOT NULL, PRIMARY KEY (rid, field)) WITHOUT ROWID;
         INSERT INTO meta (key, value) VALUES ('reproject', '1')
             ON CONFLICT (key) DO UPDATE SET value = '1';",
    )
}

/// Version 3: a quarantined change keeps the relay's `detail` beside its reason code, and says where it
/// came from (`refused`: a local change the relay refused; `received`: a chunk from the relay that could
/// not be read), so the two are listed and discarded differently. The store's Automerge actor is kept in
/// `meta` (new stores get 16 random bytes): a store made before keeps its actor, the bytes of its
/// device id, pinned before the relay may give the store another device id.
fn v3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE quarantine ADD COLUMN detail TEXT;
         ALTER TABLE quarantine ADD COLUMN origin TEXT NOT NULL DEFAULT 'refused';
         UPDATE quarantine SET origin = 'received'
             WHERE reason IN ('bad record id', 'change does not apply', 'document does not merge',
                              'malformed remote chunk');
         INSERT INTO meta (key, value)
             SELECT 'actor', lower(hex(json_extract(value, '$.device_id'))) FROM meta WHERE key = 'identity'
             ON CONFLICT (key) DO NOTHING;",
    )
}

/// Version 4: each record row keeps its record view (the JSON of `model::Record`, what `Store::get`
/// answers), written with the rest of the projection, so that a read needs no document. Rows of an
/// earlier version have none until their record is next written: `get` reads those from the document.
fn v4(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE records ADD COLUMN view TEXT;")
}

/// Version 5: a record row whose projection and view came from the relay (a snapshot or pull page
/// that carried them) rather than from reading its document is `checked = 0` until the device loads
/// the document and compares (see `Inner::doc`). Rows of earlier versions were all read from their
/// documents.
fn v5(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE records ADD COLUMN checked INTEGER NOT NULL DEFAULT 1;
         CREATE INDEX records_unchecked ON records (rid) WHERE checked = 0;",
    )
}

/// Version 6: follow-up schedules as the relay sent them (`definition`: JSON of
/// `gridwork_protocol::Schedule`), and the records each visit included (`visited`, from the visit's
/// `visited` map), so what is due is one query. Existing visits fill it from their stored views; a
/// store with visits written before views were kept re-projects once. And `numbers`: the phone and
/// ID-document numbers of records as search looks them up (`gridwork_protocol::search_number`),
/// filled from the projection tables when the store opens (`renumber`). And `seen_items`: the "new for
/// me" items the user has looked at.
fn v6(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE numbers (
             number TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (number, rid)) WITHOUT ROWID;
         CREATE INDEX numbers_rid ON numbers (rid);
         INSERT INTO meta (key, value) SELECT 'renumber', '1' WHERE EXISTS (SELECT 1 FROM records)
             ON CONFLICT (key) DO UPDATE SET value = '1';
         CREATE TABLE seen_items (key TEXT PRIMARY KEY, record TEXT NOT NULL);
         CREATE TABLE schedules (id TEXT PRIMARY KEY, definition TEXT NOT NULL);
         CREATE TABLE visited (
             visit INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (visit, record)) WITHOUT ROWID;
         CREATE INDEX visited_record ON visited (record);
         INSERT OR IGNORE INTO visited (visit, record)
             SELECT r.rid, j.value FROM records r, json_each(r.view, '$.visited') j
             WHERE r.kind = 'visit' AND r.view IS NOT NULL;
         INSERT INTO meta (key, value)
             SELECT 'reproject', '1' WHERE EXISTS (
                 SELECT 1 FROM records WHERE kind = 'visit' AND view IS NULL)
             ON CONFLICT (key) DO UPDATE SET value = '1';",
    )
}

/// Version 7: the city forms as the relay sent them (`definition`: JSON of `gridwork_protocol::Form`),
/// and each area's workers as the relay sent them with the tree (for per-worker follow-up lists;
/// filled at the next sync, which fetches the tree again because its version now covers the workers).
fn v7(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE forms (id TEXT PRIMARY KEY, definition TEXT NOT NULL);
         CREATE TABLE area_workers (
             area TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (area, user)) WITHOUT ROWID;
         CREATE INDEX area_workers_user ON area_workers (user);",
    )
}

/// Version 8: two indexes fewer for every write to carry, each one more page to encrypt and write
/// with an edit (BENCHMARKS.md section 12). The outbox without its unique index on `hash` (a change's
/// hash is random, so every queued change had an index page of its own): a local change's hash is
/// unique by construction, the relay takes a change pushed twice for one, and the one lookup by hash
/// (discarding a quarantined change) reads the outbox, which holds only what is not pushed yet. And
/// `numbers` without its index by record: a record's rows are deleted by their keys, the numbers
/// read from its stored view or projection row (`projection::row_numbers`).
///
/// And `absorbed`: the records each record absorbed by a merge of duplicates (its view's `dups`
/// entries marked merged), so that `conflicts()` reads the few records that absorbed others instead
/// of every record's view (it held all of them in memory: ~140 MB with 100,000 records). Filled from
/// the stored views.
fn v8(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE absorbed (
             rid INTEGER NOT NULL, away TEXT NOT NULL, PRIMARY KEY (rid, away)) WITHOUT ROWID;
         INSERT OR IGNORE INTO absorbed (rid, away)
             SELECT r.rid, j.key FROM records r,
                 json_each(CASE WHEN json_valid(r.view) THEN r.view ELSE '{}' END, '$.dups') j
             WHERE j.value = 'merged' AND instr(j.key, '/') = 0;
         DROP INDEX numbers_rid;
         CREATE TABLE outbox_v8 (
             seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, hash BLOB NOT NULL, bytes BLOB NOT NULL);
         INSERT INTO outbox_v8 (seq, record_id, hash, bytes) SELECT seq, record_id, hash, bytes FROM outbox;
         DROP TABLE outbox;
         ALTER TABLE outbox_v8 RENAME TO outbox;",
    )
}

type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;
const STEPS: [Step; VERSION as usize] = [v1, v2, v3, v4, v5, v6, v7, v8];

/// Brings the schema from its current version up to `target`. Returns the version found.
pub fn migrate_to(conn: &mut Connection, target: i64) -> crate::Result<i64> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(crate::Error::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for version in found..target {
        let tx = conn.transaction()?;
        STEPS[version as usize](&tx)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(found)
}

pub fn migrate(conn: &mut Connection) -> crate::Result<i64> {
    migrate_to(conn, VERSION)
}
