//! Embedded SQLite backend (WAL, `synchronous=FULL`: an acknowledged push survives a crash).
//!
//! One writer thread owns the push path and the document cache; it drains every push queued while the
//! previous batch was committing and writes them in one transaction (group commit), which is what
//! makes thousands of concurrent devices cheap: one fsync serves many pushes. Reads and the rare
//! other writes (admin, attachments, device touch) use a small connection pool; SQLite's busy
//! timeout serialises them with the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::*;
use crate::engine::{AreaMap, Engine, Plan, RecordRow};
use crate::prof::{self, Span};
use gridwork_protocol::scope::join_paths;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_device_no_held.sql"),
    include_str!("../../migrations/sqlite/0003_authority.sql"),
];

/// Most changes grouped into one write transaction.
const BATCH_CHANGES: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<PushResult>>>;

enum WriterMsg {
    Push(PushJob, Reply),
    /// Record a device's last sync time (coalesced into the writer's next transaction, so reads never
    /// write and never contend with the writer for SQLite's lock).
    Touch(String, i64),
    Stop,
}

pub struct SqliteStore {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads to the pool size: a burst of requests queues here (cheaply, on the
    /// async side) instead of opening a connection and a blocking thread per request.
    pub(super) permits: std::sync::Arc<tokio::sync::Semaphore>,
    tx: Mutex<Option<mpsc::Sender<WriterMsg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL: readers never block the writer. synchronous=FULL: fsync the WAL on every commit, so
    // whatever was acknowledged survives power loss.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Invalid(format!(
            "database schema version {version} is newer than this relay ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "sqlite schema migrated");
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(data_dir: &Path, limits: &Limits) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("gridwork.db");
        let mut conn = open_conn(&path)?;
        migrate(&mut conn)?;
        let writer_conn = open_conn(&path)?;
        let (tx, rx) = mpsc::channel();
        let engine = Engine::new(limits);
        let handle = std::thread::Builder::new()
            .name("gridwork-sqlite-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, engine))?;
        let readers = limits.db_connections.max(1);
        let mut pool = vec![conn];
        for _ in 1..readers {
            pool.push(open_conn(&path)?);
        }
        Ok(SqliteStore {
            path,
            pool: Mutex::new(pool),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(readers)),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Runs `f` on a pooled connection.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .pool
            .lock()
            .map_err(|_| Error::Unavailable("pool poisoned".into()))?
            .pop();
        let mut conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&mut conn);
        if let Ok(mut p) = self.pool.lock() {
            // Keep a bounded number of idle connections (opening one costs more than a query).
            if p.len() < 64 {
                p.push(conn);
            }
        }
        out
    }

    pub async fn push(&self, job: PushJob) -> Result<Vec<PushResult>> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self
                .tx
                .lock()
                .map_err(|_| Error::Unavailable("writer poisoned".into()))?;
            let tx = guard
                .as_ref()
                .ok_or_else(|| Error::Unavailable("shutting down".into()))?;
            tx.send(WriterMsg::Push(job, reply))
                .map_err(|_| Error::Unavailable("writer stopped".into()))?;
        }
        rx.await
            .map_err(|_| Error::Unavailable("writer stopped".into()))?
    }

    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            if let Some(tx) = g.take() {
                let _ = tx.send(WriterMsg::Stop);
            }
        }
        if let Ok(mut w) = self.writer.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
    }

    pub fn auth(&self, token_hash: &[u8; 32]) -> Result<Option<DeviceAuth>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT d.id, u.id, u.name, u.role, u.area, a.path, d.revoked_at, u.disabled_at,
                        d.actor, d.last_sync_at
                 FROM devices d JOIN users u ON u.id = d.user_id JOIN areas a ON a.id = u.area
                 WHERE d.token_hash = ?1",
            )?;
            let row = st
                .query_row(params![&token_hash[..]], |r| {
                    Ok(DeviceAuth {
                        device_id: r.get(0)?,
                        user_id: r.get(1)?,
                        user_name: r.get(2)?,
                        role: r.get::<_, String>(3)?.parse().unwrap_or(Role::Worker),
                        area: r.get(4)?,
                        area_path: r.get(5)?,
                        revoked: r.get::<_, Option<i64>>(6)?.is_some(),
                        disabled: r.get::<_, Option<i64>>(7)?.is_some(),
                        actor: r.get(8)?,
                        last_sync_at: r.get(9)?,
                    })
                })
                .optional()?;
            Ok(row)
        })
    }

    pub fn bind_actor(&self, device_id: &str, actor: &str) -> Result<Bind> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<Option<String>> = tx
                .query_row(
                    "SELECT actor FROM devices WHERE id = ?1",
                    [device_id],
                    |r| r.get(0),
                )
                .optional()?;
            let out = match current {
                None => return Err(Error::NotFound(format!("device {device_id}"))),
                Some(Some(a)) if a == actor => Bind::Bound,
                Some(Some(_)) => Bind::Taken,
                Some(None) => {
                    tx.execute(
                        "UPDATE devices SET actor = ?2 WHERE id = ?1 AND actor IS NULL",
                        params![device_id, actor],
                    )?;
                    Bind::Bound
                }
            };
            tx.commit()?;
            Ok(out)
        })
    }

    /// Queues a last-sync-time update for the writer (no write transaction of its own).
    pub fn touch_device(&self, id: &str, now: i64) -> Result<()> {
        let guard = self
            .tx
            .lock()
            .map_err(|_| Error::Unavailable("writer poisoned".into()))?;
        if let Some(tx) = guard.as_ref() {
            let _ = tx.send(WriterMsg::Touch(id.to_owned(), now));
        }
        Ok(())
    }

    pub fn list_areas(&self) -> Result<Vec<AreaRow>> {
        self.with(|c| load_areas(c))
    }

    /// Entries after `after` visible to `scope`, except `device`'s own plain changes, read until the
    /// page is full (see [`PageRows`]).
    pub fn pull(
        &self,
        scope: &Scope,
        device: &str,
        after: i64,
        limit: PageLimit,
    ) -> Result<RawPull> {
        self.with(|c| {
            // One read transaction: the head and the entries come from the same snapshot.
            let tx = c.transaction()?;
            let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
                r.get(0)
            })?;
            let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RawEntry> {
                Ok(RawEntry {
                    seq: r.get(0)?,
                    record: r.get(1)?,
                    bytes: r.get(2)?,
                    kind: r.get(3)?,
                    before_paths: r.get(4)?,
                    heads: r.get(5)?,
                    own: r.get(6)?,
                    doc_len: r.get(7)?,
                })
            };
            let n = (limit.items + 1) as i64;
            // Entries other than plain changes may be delivered as the whole document: their weight
            // is the document's.
            let doc_len = "CASE WHEN c.kind <> 0 THEN (SELECT length(doc) FROM records WHERE id = c.record) END";
            let mut st = if scope.is_operator() {
                tx.prepare_cached(&format!(
                    "SELECT c.seq, c.record, c.bytes, c.kind, c.before_paths, c.heads, c.device IS ?4, {doc_len}
                     FROM changes c
                     WHERE c.seq > ?1 AND c.seq <= ?2 AND (c.kind <> 0 OR c.device IS NOT ?4)
                     ORDER BY c.seq LIMIT ?3"
                ))?
            } else {
                tx.prepare_cached(&format!(
                    "SELECT c.seq, c.record, c.bytes, c.kind, c.before_paths, c.heads, c.device IS ?4, {doc_len}
                     FROM entry_areas e JOIN changes c ON c.seq = e.seq
                     WHERE e.key = ?5 AND e.seq > ?1 AND e.seq <= ?2
                       AND (c.kind <> 0 OR c.device IS NOT ?4)
                     ORDER BY e.seq LIMIT ?3"
                ))?
            };
            let mut rows = if scope.is_operator() {
                st.query(params![after, head, n, device])?
            } else {
                st.query(params![after, head, n, device, scope.prefix])?
            };
            let mut page = PageRows::new(limit);
            while let Some(r) = rows.next()? {
                let e = map(r)?;
                let size = e.page_bytes(scope);
                if !page.push(e, size) {
                    break;
                }
            }
            drop(rows);
            drop(st);
            let mut docs = HashMap::new();
            for e in page.rows.iter().filter(|e| e.needs_doc(scope)) {
                if !docs.contains_key(&e.record) {
                    let doc: Option<Vec<u8>> = tx
                        .prepare_cached("SELECT doc FROM records WHERE id = ?1")?
                        .query_row([&e.record], |r| r.get(0))
                        .optional()?;
                    if let Some(d) = doc {
                        docs.insert(e.record.clone(), d);
                    }
                }
            }
            Ok(RawPull {
                head,
                entries: page.rows,
                complete: page.complete,
                docs,
            })
        })
    }

    /// Records in scope after `after`, by id, read until the page is full (see [`PageRows`]).
    pub fn snapshot(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: PageLimit,
    ) -> Result<SnapshotPage> {
        self.with(|c| {
            let tx = c.transaction()?;
            let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))?;
            let after = after.unwrap_or("");
            let n = (limit.items + 1) as i64;
            let mut st = if scope.is_operator() {
                tx.prepare_cached(
                    "SELECT id, doc FROM records WHERE id > ?1 AND length(doc) > 0 ORDER BY id LIMIT ?2",
                )?
            } else {
                tx.prepare_cached(
                    "SELECT r.id, r.doc FROM record_scope s JOIN records r ON r.id = s.record
                     WHERE s.key = ?3 AND s.record > ?1 AND length(r.doc) > 0
                     ORDER BY s.record LIMIT ?2",
                )?
            };
            let mut rows = if scope.is_operator() {
                st.query(params![after, n])?
            } else {
                st.query(params![after, n, scope.prefix])?
            };
            let mut page = PageRows::new(limit);
            while let Some(r) = rows.next()? {
                let doc: Vec<u8> = r.get(1)?;
                let size = doc.len();
                if !page.push((r.get(0)?, doc), size) {
                    break;
                }
            }
            Ok(finish_snapshot(head, page, limit))
        })
    }

    pub fn record_paths(&self, record: &str) -> Result<Option<Vec<String>>> {
        self.with(|c| {
            let p: Option<String> = c
                .prepare_cached("SELECT paths FROM records WHERE id = ?1")?
                .query_row([record], |r| r.get(0))
                .optional()?;
            Ok(p.map(|p| split_paths(&p)))
        })
    }

    pub fn attachment_state(&self, sha: &[u8; 32]) -> Result<AttachmentState> {
        self.with(|c| att_state(c, sha))
    }

    pub fn attachment_put(&self, chunk: &PutChunk) -> Result<PutOutcome> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = att_put(&tx, chunk)?;
            tx.commit()?;
            Ok(out)
        })
    }

    pub fn attachment_records(&self, sha: &[u8; 32]) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT record FROM attachment_records WHERE sha256 = ?1")?;
            let rows = st.query_map([&sha[..]], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub fn attachment_read(&self, sha: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            let tx = c.transaction()?;
            if !matches!(att_state(&tx, sha)?, AttachmentState::Complete { .. }) {
                return Ok(None);
            }
            Ok(Some(read_chunks(&tx, sha)?))
        })
    }

    pub fn add_area(&self, input: &AreaRowInput) -> Result<AreaRow> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let parent = match &input.parent {
                None => None,
                Some(p) => tx
                    .query_row("SELECT level, path FROM areas WHERE id = ?1", [p], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()?
                    .and_then(|(l, path)| Some((AreaLevel::from_rank(l)?, path))),
            };
            let path = child_path(input, parent)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM areas WHERE id = ?1)",
                [&input.id],
                |r| r.get(0),
            )?;
            if exists {
                return Err(Error::Conflict(format!("area {}", input.id)));
            }
            tx.execute(
                "INSERT INTO areas (id, parent, level, name, path) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![input.id, input.parent, input.level.rank(), input.name, path],
            )?;
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'areas_version'",
                [],
            )?;
            tx.commit()?;
            Ok(AreaRow {
                id: input.id.clone(),
                parent: input.parent.clone(),
                level: input.level,
                name: input.name.clone(),
                path,
            })
        })
    }

    pub fn add_user(&self, user: &UserRow) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let area: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM areas WHERE id = ?1)",
                [&user.area],
                |r| r.get(0),
            )?;
            if !area {
                return Err(Error::Invalid(format!("area {} does not exist", user.area)));
            }
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)",
                [&user.id],
                |r| r.get(0),
            )?;
            if exists {
                return Err(Error::Conflict(format!("user {}", user.id)));
            }
            tx.execute(
                "INSERT INTO users (id, name, role, area) VALUES (?1, ?2, ?3, ?4)",
                params![user.id, user.name, user.role.as_str(), user.area],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn add_device(&self, id: &str, user: &str, token_hash: &[u8; 32], now: i64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let u: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)",
                [user],
                |r| r.get(0),
            )?;
            if !u {
                return Err(Error::Invalid(format!("user {user} does not exist")));
            }
            let d: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM devices WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if d {
                return Err(Error::Conflict(format!("device {id}")));
            }
            tx.execute(
                "INSERT INTO devices (id, user_id, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, user, &token_hash[..], now],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn revoke_device(&self, id: &str, now: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )?;
            Ok(n > 0)
        })
    }

    pub fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT d.id, u.id, u.name, u.role, u.area, d.created_at, d.revoked_at, d.last_sync_at
                 FROM devices d JOIN users u ON u.id = d.user_id ORDER BY d.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, user_id, user_name, role, area, created_at, revoked_at, last_sync_at) = row?;
                out.push(DeviceInfo {
                    id,
                    user_id,
                    user_name,
                    role: role.parse().map_err(Error::Invalid)?,
                    area,
                    created_at,
                    revoked_at,
                    last_sync_at,
                });
            }
            Ok(out)
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn load_areas(c: &Connection) -> Result<Vec<AreaRow>> {
    let mut st =
        c.prepare_cached("SELECT id, parent, level, name, path FROM areas ORDER BY path")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, parent, level, name, path) = row?;
        let level =
            AreaLevel::from_rank(level).ok_or_else(|| Error::Invalid("bad area level".into()))?;
        out.push(AreaRow {
            id,
            parent,
            level,
            name,
            path,
        });
    }
    Ok(out)
}

fn att_state(c: &Connection, sha: &[u8; 32]) -> Result<AttachmentState> {
    let row: Option<(i64, i64, bool)> = c
        .prepare_cached("SELECT total, received, complete FROM attachments WHERE sha256 = ?1")?
        .query_row([&sha[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(match row {
        None => AttachmentState::Unknown,
        Some((total, _, true)) => AttachmentState::Complete { size: total as u64 },
        Some((total, received, false)) => AttachmentState::Partial {
            received: received as u64,
            total: total as u64,
        },
    })
}

fn read_chunks(c: &Connection, sha: &[u8; 32]) -> Result<Vec<u8>> {
    let mut st =
        c.prepare_cached("SELECT data FROM attachment_chunks WHERE sha256 = ?1 ORDER BY offset")?;
    let mut rows = st.query([&sha[..]])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let d: Vec<u8> = r.get(0)?;
        out.extend_from_slice(&d);
    }
    Ok(out)
}

fn link(c: &Connection, sha: &[u8; 32], record: &str) -> Result<()> {
    c.prepare_cached("INSERT OR IGNORE INTO attachment_records (sha256, record) VALUES (?1, ?2)")?
        .execute(params![&sha[..], record])?;
    Ok(())
}

fn att_put(c: &Connection, ch: &PutChunk) -> Result<PutOutcome> {
    let sha = &ch.sha256;
    let len = ch.data.len() as u64;
    match att_state(c, sha)? {
        AttachmentState::Complete { size } => {
            let linked: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM attachment_records WHERE sha256 = ?1 AND record = ?2)",
                params![&sha[..], ch.record],
                |r| r.get(0),
            )?;
            if linked {
                return Ok(PutOutcome::Stored {
                    received: size,
                    total: size,
                    complete: true,
                });
            }
            // Linking a known attachment to another record needs the full content: knowing the hash
            // alone must not open the bytes to a new scope.
            if ch.start == 0 && len == size && Sha256::digest(&ch.data).as_slice() == sha {
                link(c, sha, &ch.record)?;
                return Ok(PutOutcome::Stored {
                    received: size,
                    total: size,
                    complete: true,
                });
            }
            Ok(PutOutcome::WrongOffset { offset: 0 })
        }
        AttachmentState::Partial { received, total } => {
            if total != ch.total {
                return Ok(PutOutcome::WrongTotal { total });
            }
            if ch.start != received {
                return Ok(PutOutcome::WrongOffset { offset: received });
            }
            store_chunk(c, ch, received + len)
        }
        AttachmentState::Unknown => {
            if ch.start != 0 {
                return Ok(PutOutcome::WrongOffset { offset: 0 });
            }
            c.execute(
                "INSERT INTO attachments (sha256, total, received, complete) VALUES (?1, ?2, 0, 0)",
                params![&sha[..], ch.total as i64],
            )?;
            store_chunk(c, ch, len)
        }
    }
}

fn store_chunk(c: &Connection, ch: &PutChunk, received: u64) -> Result<PutOutcome> {
    let sha = &ch.sha256;
    if !ch.data.is_empty() {
        c.execute(
            "INSERT INTO attachment_chunks (sha256, offset, data) VALUES (?1, ?2, ?3)",
            params![&sha[..], ch.start as i64, &ch.data[..]],
        )?;
    }
    link(c, sha, &ch.record)?;
    if received < ch.total {
        c.execute(
            "UPDATE attachments SET received = ?2 WHERE sha256 = ?1",
            params![&sha[..], received as i64],
        )?;
        return Ok(PutOutcome::Stored {
            received,
            total: ch.total,
            complete: false,
        });
    }
    let data = read_chunks(c, sha)?;
    if Sha256::digest(&data).as_slice() != sha {
        c.execute(
            "DELETE FROM attachment_chunks WHERE sha256 = ?1",
            [&sha[..]],
        )?;
        c.execute(
            "DELETE FROM attachment_records WHERE sha256 = ?1",
            [&sha[..]],
        )?;
        c.execute("DELETE FROM attachments WHERE sha256 = ?1", [&sha[..]])?;
        return Ok(PutOutcome::HashMismatch);
    }
    // Merge the chunks into one row: downloads then read a single blob.
    c.execute(
        "DELETE FROM attachment_chunks WHERE sha256 = ?1",
        [&sha[..]],
    )?;
    c.execute(
        "INSERT INTO attachment_chunks (sha256, offset, data) VALUES (?1, 0, ?2)",
        params![&sha[..], data],
    )?;
    c.execute(
        "UPDATE attachments SET received = total, complete = 1 WHERE sha256 = ?1",
        [&sha[..]],
    )?;
    Ok(PutOutcome::Stored {
        received,
        total: ch.total,
        complete: true,
    })
}

// ---- the writer ----

/// Rows per multi-row statement (SQLite accepts up to 32,766 parameters).
const ROWS_PER_INSERT: usize = 128;
/// Keys per `IN (...)` lookup.
const KEYS_PER_LOOKUP: usize = 256;

/// `INSERT ... VALUES (?,?),(?,?) ...` for `rows` rows of `cols` columns, then `tail`.
fn multi_insert_sql(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    format!("{head} VALUES {} {tail}", vec![one; rows].join(","))
}

/// Runs a multi-row INSERT over `params`, `cols` values per row, in chunks of [`ROWS_PER_INSERT`].
fn insert_many(
    tx: &Connection,
    head: &str,
    tail: &str,
    cols: usize,
    params: &[&dyn rusqlite::ToSql],
) -> Result<()> {
    for chunk in params.chunks(cols * ROWS_PER_INSERT) {
        let sql = multi_insert_sql(head, cols, chunk.len() / cols, tail);
        tx.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(chunk.iter()))?;
    }
    Ok(())
}

/// `SELECT <cols> FROM <table> WHERE <key> IN (...)` over `keys`, in chunks; calls `f` per row.
fn lookup_many<K: rusqlite::ToSql>(
    tx: &Connection,
    select: &str,
    keys: &[K],
    mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<()> {
    for chunk in keys.chunks(KEYS_PER_LOOKUP) {
        let sql = format!("{select} IN ({})", vec!["?"; chunk.len()].join(","));
        let mut st = tx.prepare_cached(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(chunk.iter()))?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
    }
    Ok(())
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriterMsg>, mut engine: Engine) {
    let mut stop = false;
    while !stop {
        let mut touches: HashMap<String, i64> = HashMap::new();
        let mut batch = Vec::new();
        let mut n = 0;
        match rx.recv() {
            Ok(WriterMsg::Push(j, r)) => {
                n += j.changes.len();
                batch.push((j, r));
            }
            Ok(WriterMsg::Touch(d, t)) => {
                touches.insert(d, t);
            }
            Ok(WriterMsg::Stop) | Err(_) => break,
        }
        // Group commit: take whatever queued up while the last batch was being written.
        while n < BATCH_CHANGES {
            match rx.try_recv() {
                Ok(WriterMsg::Push(j, r)) => {
                    n += j.changes.len();
                    batch.push((j, r));
                }
                Ok(WriterMsg::Touch(d, t)) => {
                    touches.insert(d, t);
                }
                Ok(WriterMsg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // Devices that push get their sync time in the push transaction.
            for (j, _) in &batch {
                touches.remove(&j.device_id);
            }
            run_batch(&mut conn, &mut engine, batch);
        }
        if !touches.is_empty() {
            if let Err(e) = write_touches(&mut conn, &touches) {
                tracing::warn!(error = %e, "could not record last sync times");
            }
        }
    }
    tracing::debug!("sqlite writer stopped");
}

fn write_touches(conn: &mut Connection, touches: &HashMap<String, i64>) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached("UPDATE devices SET last_sync_at = ?2 WHERE id = ?1")?;
        for (d, t) in touches {
            st.execute(params![d, t])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn run_batch(conn: &mut Connection, engine: &mut Engine, batch: Vec<(PushJob, Reply)>) {
    let (jobs, replies): (Vec<PushJob>, Vec<Reply>) = batch.into_iter().unzip();
    match write_batch(conn, engine, &jobs) {
        Ok(results) => {
            for (reply, res) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(res));
            }
        }
        Err(e) if jobs.len() > 1 => {
            // Do not let one push fail its neighbours: retry them one by one.
            tracing::warn!(error = %e, jobs = jobs.len(), "batch failed, retrying pushes one by one");
            for (job, reply) in jobs.into_iter().zip(replies) {
                let res = write_batch(conn, engine, std::slice::from_ref(&job));
                let _ = reply.send(res.map(|mut r| r.pop().unwrap_or_default()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(e.to_string())));
            }
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    engine: &mut Engine,
    jobs: &[PushJob],
) -> Result<Vec<Vec<PushResult>>> {
    let started = std::time::Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let plan = match plan_batch(&tx, engine, jobs) {
        Ok(p) => p,
        Err(e) => {
            engine.aborted();
            return Err(e);
        }
    };
    let first_seq: i64 =
        tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM changes", [], |r| {
            r.get(0)
        })?;
    let written = write_plan(&tx, &plan, first_seq, jobs).and_then(|_| {
        let t = prof::start();
        tx.commit()?;
        t.stop(Span::Commit);
        Ok(())
    });
    if let Err(e) = written {
        engine.aborted();
        return Err(e);
    }
    engine.committed(&plan, first_seq);
    let total: usize = jobs.iter().map(|j| j.changes.len()).sum();
    prof::batch(total);
    tracing::debug!(
        pushes = jobs.len(),
        changes = total,
        new_entries = plan.entries.len(),
        ms = started.elapsed().as_millis() as u64,
        "push batch committed"
    );
    Ok(plan.results(first_seq))
}

fn plan_batch(tx: &Connection, engine: &mut Engine, jobs: &[PushJob]) -> Result<Plan> {
    let t = prof::start();
    let version: i64 = tx.query_row(
        "SELECT value FROM meta WHERE key = 'areas_version'",
        [],
        |r| r.get(0),
    )?;
    if version != engine.areas.version || engine.areas.paths.is_empty() {
        let areas = load_areas(tx)?;
        engine.areas = AreaMap {
            version,
            paths: areas.into_iter().map(|a| (a.id, a.path)).collect(),
        };
    }
    let wants = Engine::wants(jobs);
    let mut existing = HashMap::new();
    let hashes: Vec<&[u8]> = wants.hashes.iter().map(|h| &h[..]).collect();
    lookup_many(
        tx,
        "SELECT hash, seq FROM changes WHERE hash",
        &hashes,
        |r| {
            let h: Vec<u8> = r.get(0)?;
            if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                existing.insert(h, r.get::<_, i64>(1)?);
            }
            Ok(())
        },
    )?;
    let mut versions = HashMap::new();
    lookup_many(
        tx,
        "SELECT id, version FROM records WHERE id",
        &wants.records,
        |r| {
            versions.insert(r.get::<_, String>(0)?, r.get::<_, i64>(1)?);
            Ok(())
        },
    )?;
    t.stop(Span::Lookup);
    let t = prof::start();
    let stale = engine.stale(&wants.records, &versions);
    let mut rows = HashMap::new();
    lookup_many(
        tx,
        "SELECT id, doc, version, paths FROM records WHERE id",
        &stale,
        |r| {
            rows.insert(
                r.get::<_, String>(0)?,
                RecordRow {
                    doc: r.get(1)?,
                    version: r.get(2)?,
                    paths: split_paths(&r.get::<_, String>(3)?),
                },
            );
            Ok(())
        },
    )?;
    t.stop(Span::LoadRows);
    let t = prof::start();
    let plan = engine.plan(jobs, &existing, rows);
    t.stop(Span::Engine);
    Ok(plan)
}

fn write_plan(tx: &Connection, plan: &Plan, first_seq: i64, jobs: &[PushJob]) -> Result<()> {
    let t = prof::start();
    let n = plan.entries.len();
    let seqs: Vec<i64> = (0..n as i64).map(|i| first_seq + i).collect();
    {
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(n * 8);
        for (e, seq) in plan.entries.iter().zip(&seqs) {
            p.push(seq);
            p.push(&e.hash);
            p.push(&e.record);
            p.push(&e.bytes);
            p.push(&e.kind);
            p.push(&e.before_paths);
            p.push(&e.heads);
            p.push(&jobs[e.job].device_id);
        }
        insert_many(
            tx,
            "INSERT INTO changes (seq, hash, record, bytes, kind, before_paths, heads, device)",
            "",
            8,
            &p,
        )?;
    }
    t.stop(Span::InsertChanges);
    let t = prof::start();
    {
        // Sorted by key then seq: the rows land in index order (cheap B-tree appends).
        let mut rows: Vec<(&str, &i64)> = Vec::new();
        for (e, seq) in plan.entries.iter().zip(&seqs) {
            for k in &e.keys {
                rows.push((k.as_str(), seq));
            }
        }
        rows.sort_unstable();
        rows.dedup();
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 2);
        for (k, seq) in &rows {
            p.push(k);
            p.push(*seq);
        }
        insert_many(tx, "INSERT INTO entry_areas (key, seq)", "", 2, &p)?;
    }
    t.stop(Span::InsertKeys);
    let t = prof::start();
    let versions: Vec<i64> = plan
        .records
        .iter()
        .map(|r| first_seq + r.last_entry as i64)
        .collect();
    let paths: Vec<String> = plan.records.iter().map(|r| join_paths(&r.paths)).collect();
    {
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(plan.records.len() * 4);
        for ((r, v), paths) in plan.records.iter().zip(&versions).zip(&paths) {
            p.push(&r.id);
            p.push(&r.doc);
            p.push(v);
            p.push(paths);
        }
        insert_many(
            tx,
            "INSERT INTO records (id, doc, version, paths)",
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, version = excluded.version, paths = excluded.paths",
            4,
            &p,
        )?;
    }
    {
        let mut del_scope = tx.prepare_cached("DELETE FROM record_scope WHERE record = ?1")?;
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::new();
        for r in plan.records.iter().filter(|r| r.keys_changed) {
            if r.existed {
                del_scope.execute([&r.id])?;
            }
            for k in &r.keys {
                p.push(k);
                p.push(&r.id);
            }
        }
        insert_many(
            tx,
            "INSERT OR IGNORE INTO record_scope (key, record)",
            "",
            2,
            &p,
        )?;
    }
    // Last sync time, at most once per device per batch.
    let now = now_secs();
    let mut touch = tx.prepare_cached("UPDATE devices SET last_sync_at = ?2 WHERE id = ?1")?;
    let mut seen = std::collections::HashSet::new();
    for j in jobs {
        if seen.insert(j.device_id.as_str()) {
            touch.execute(params![j.device_id, now])?;
        }
    }
    t.stop(Span::UpsertRecords);
    Ok(())
}
