//! Removing residents' data from the device: a record that leaves the user's scope is purged, and a
//! store whose device was revoked (or whose user was disabled) wipes itself.
//!
//! The connection runs with `secure_delete` (freed pages and cells are zeroed); the search index, which
//! only marks deleted rows (contentless FTS5 keeps them in its segments behind tombstones), is rewritten
//! without them; and the WAL is checkpointed and truncated afterwards. So the removed bytes are gone from
//! the file, not only from the tables.
use super::{projection, Inner, Store};
use crate::error::Result;
use crate::model::{Kind, Record};
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashSet;

impl Inner {
    /// Removes the records among `candidates` (every record when None) that this user does not see
    /// any more, unless a local change of theirs still waits in the outbox or the quarantine (they go
    /// once it is pushed or discarded). Everything of a purged record goes: its document, projection
    /// row, search row, links, tags, conflicts, held changes and attachments. Returns how many went.
    /// The ids of `records` this user does not see (by the records as given, not as stored): the
    /// candidates for [`Inner::purge_out_of_scope`] after records were written.
    pub(crate) fn unseen<'r>(&self, records: impl IntoIterator<Item = &'r Record>) -> Vec<String> {
        let actor = self.rule_actor();
        records
            .into_iter()
            .filter(|r| !actor.sees(&self.area_paths, r))
            .map(|r| r.id.clone())
            .collect()
    }

    pub(crate) fn purge_out_of_scope(&mut self, candidates: Option<&[String]>) -> Result<usize> {
        if candidates.is_some_and(<[String]>::is_empty) {
            return Ok(0);
        }
        // Who sees what is read from the record rows (no document is loaded); only for the records
        // that left is the outbox looked at.
        let actor = self.rule_actor();
        let rows: Vec<(String, String, String, Option<String>)> = {
            let sql = "SELECT id, kind, area, responsible FROM records";
            let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
            match candidates {
                None => {
                    let mut stmt = self.conn.prepare(sql)?;
                    let rows = stmt.query_map([], read)?;
                    rows.collect::<rusqlite::Result<_>>()?
                }
                Some(ids) => {
                    let mut stmt = self.conn.prepare_cached(&format!("{sql} WHERE id = ?1"))?;
                    let mut out = Vec::new();
                    for id in ids {
                        out.extend(stmt.query_row([id], read).optional()?);
                    }
                    out
                }
            }
        };
        let mut gone: Vec<String> = rows
            .into_iter()
            .filter_map(|(id, kind, area, responsible)| {
                let kind = Kind::parse(&kind)?;
                let seen = actor.sees(&self.area_paths, &placement(kind, area, responsible));
                (!seen).then_some(id)
            })
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let waiting: HashSet<String> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT record_id FROM outbox
                 UNION SELECT record_id FROM quarantine WHERE origin = 'refused'",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        gone.retain(|id| !waiting.contains(id));
        if gone.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        for id in &gone {
            delete_record(&tx, id)?;
        }
        // Rewrites the index as one segment without the deleted rows; the old segments' pages are
        // freed, i.e. zeroed. It costs a pass over the whole index, paid only when records leave.
        tx.execute("INSERT INTO search (search) VALUES ('optimize')", [])?;
        tx.commit()?;
        for id in &gone {
            self.forget_doc(id);
        }
        tracing::info!(
            records = gone.len(),
            "records left the user's scope and were purged"
        );
        self.truncate_wal()?;
        Ok(gone.len())
    }

    /// Copies the WAL into the database and truncates it to nothing: the old page images a delete
    /// left in the WAL are gone from the disk file.
    pub(crate) fn truncate_wal(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Deletes every row of record `id` (document, projection, search, links, tags, conflicts, held changes,
/// attachments, quarantined chunks) inside the caller's transaction. Its outbox entries are the
/// caller's to settle first.
pub(crate) fn delete_record(tx: &Connection, id: &str) -> Result<()> {
    let row: Option<(i64, String)> = tx
        .prepare_cached("SELECT rid, kind FROM records WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((rid, kind)) = row {
        if let Some(kind) = Kind::parse(&kind) {
            projection::delete_numbers(tx, kind, rid)?;
            tx.execute(
                &format!("DELETE FROM {} WHERE rid = ?1", kind.table()),
                [rid],
            )?;
        }
        for (table, column) in projection::SIDE_TABLES {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE {column} = ?1"))?
                .execute([rid])?;
        }
        for sql in [
            "DELETE FROM search WHERE rowid = ?1",
            "DELETE FROM records WHERE rid = ?1",
        ] {
            tx.prepare_cached(sql)?.execute([rid])?;
        }
    }
    for sql in [
        "DELETE FROM held_changes WHERE record_id = ?1",
        "DELETE FROM attachments WHERE record_id = ?1",
        "DELETE FROM quarantine WHERE record_id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id])?;
    }
    Ok(())
}

/// A record view holding only what decides who sees a record (kind and areas), for the rule book's
/// `Actor::sees` without loading the document.
fn placement(kind: Kind, area: String, responsible: Option<String>) -> Record {
    Record {
        responsible,
        ..Record::empty(String::new(), kind, area)
    }
}

impl Store {
    /// Deletes everything of this store's records and sync state (records, outbox and quarantine,
    /// held changes, attachments, projection and search rows, areas, identity), zeroing the freed
    /// pages, and leaves a store that [`Store::open`] reports as [`crate::Error::Wiped`] with `reason`.
    /// The sync client calls it when the relay answers that the device was revoked or its user
    /// disabled; an app may call it on logout.
    pub fn wipe(&self, reason: &str) -> Result<()> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        // Every table of the schema, so that none added later is forgotten (search's number index
        // once was: the phone and ID numbers of a wiped store stayed in its file). The search index's
        // own tables are emptied by its `delete-all`; `meta` keeps only the mark that it was wiped.
        let tables: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT GLOB 'sqlite_*' AND name <> 'search' AND name NOT GLOB 'search_*'",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for table in tables {
            tx.execute(&format!("DELETE FROM \"{table}\""), [])?;
        }
        tx.execute("INSERT INTO search (search) VALUES ('delete-all')", [])?;
        super::set_meta(&tx, super::META_WIPED, reason)?;
        tx.commit()?;
        inner.docs.clear();
        inner.area_paths.clear();
        inner.wiped = Some(reason.to_owned());
        // The emptied file is rebuilt without its free pages, and the WAL that held the old pages
        // is emptied.
        inner.conn.execute_batch("VACUUM")?;
        inner.truncate_wal()?;
        tracing::warn!(reason, "store wiped");
        Ok(())
    }
}
