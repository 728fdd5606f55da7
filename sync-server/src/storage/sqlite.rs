//! Embedded SQLite backend (WAL, `synchronous=FULL`: an acknowledged push survives a crash).
//!
//! One writer thread owns the push path and the document cache; it drains every push queued while the
//! previous batch was committing and writes them in one transaction (group commit), which is what
//! makes thousands of concurrent devices cheap: one fsync serves many pushes. Reads and the rare
//! other writes (admin, attachments, device touch) use a small connection pool; SQLite's busy
//! timeout serialises them with the writer.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::admin::{AdminSql, Held, Row};
use super::reads::{ReadSql, Take};
use super::sql::Transact;
use super::uploads::UploadSql;
use super::writer::{ChangeRow, EntryRun, RecordRowWrite, WriteSql, Writer};
use super::*;
use crate::config::{Encryption, RelayKey, PIPELINE_MIN_CHANGES};
use crate::engine::{Engine, FastMap, RecordRow};
use crate::prof::{self, Span};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_device_no_held.sql"),
    include_str!("../../migrations/sqlite/0003_authority.sql"),
    include_str!("../../migrations/sqlite/0004_upload_sessions.sql"),
    include_str!("../../migrations/sqlite/0005_record_views.sql"),
    include_str!("../../migrations/sqlite/0006_schedules.sql"),
    include_str!("../../migrations/sqlite/0007_forms.sql"),
    include_str!("../../migrations/sqlite/0008_console.sql"),
    include_str!("../../migrations/sqlite/0009_entry_runs.sql"),
];

pub struct SqliteStore {
    path: PathBuf,
    encryption: Encryption,
    /// The page authentication the database opened with: later connections use it alone.
    hmac: PageHmac,
    pool: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads to the pool size: a burst of requests queues here (cheaply, on the
    /// async side) instead of opening a connection and a blocking thread per request.
    pub(super) permits: std::sync::Arc<tokio::sync::Semaphore>,
    pub(super) writer: Writer,
    checkpointer: Mutex<Option<Checkpointer>>,
}

/// WAL pages after which the writer checkpoints on its own (32 MiB of 4 KiB pages): only when the
/// [`Checkpointer`] falls behind. SQLite's default, 1,000, would have the writer do it every few
/// batches, its commit waiting for the database file to be written and synced.
const WRITER_CHECKPOINT_PAGES: i64 = 8_192;

/// Copies the WAL into the database file on a thread of its own, woken after each of the writer's
/// commits (a passive checkpoint: it never blocks the writer or a reader), so a commit waits for
/// its WAL frames only. When nothing is running while it copies, the writer's next transaction
/// starts the WAL over from its beginning, so the WAL stays about one batch long.
struct Checkpointer {
    wake: SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(conn: Connection) -> Result<Checkpointer> {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("gridwork-sqlite-checkpoint".into())
            .spawn(move || {
                // Ends when the writer and the store have dropped their senders.
                while woken.recv().is_ok() {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((wal, copied)) => tracing::trace!(wal, copied, "checkpoint"),
                        Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
                    }
                }
            })?;
        Ok(Checkpointer { wake, thread })
    }
}

/// The database file in a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gridwork.db")
}

/// The files SQLite keeps next to the database: every one holds residents' data (the WAL holds whole
/// pages; under SQLCipher those are encrypted too).
fn side_files(db: &Path) -> [PathBuf; 2] {
    let name = db.as_os_str().to_owned();
    let with = |suffix: &str| {
        let mut n = name.clone();
        n.push(suffix);
        PathBuf::from(n)
    };
    [with("-wal"), with("-shm")]
}

/// Does the file start with SQLite's plaintext header? (An SQLCipher file starts with random salt.)
fn is_plaintext_sqlite(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let n = f.read(&mut head)?;
    Ok(n == 16 && &head == b"SQLite format 3\0")
}

/// Opens one connection, keyed when the store is encrypted. A key that does not open the file is a
/// typed [`Error::Key`] saying which of the three cases it is, never a panic or a bare "not a database".
/// Once per process, on a connection of its own: SQLCipher's logging off (it logs failed key checks to
/// stderr by itself; the error reaches the caller typed instead; the setting is process-wide), and one
/// keyed connection first, so the crypto provider initialises on one thread before any store is keyed.
fn sqlcipher_process_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(c) = Connection::open_in_memory() {
            let _ =
                c.execute_batch("PRAGMA cipher_log_level = NONE; PRAGMA key = 'gridwork-warm-up';");
            let _ = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            });
        }
    });
}

/// How the pages of an encrypted relay database are authenticated. SQLCipher 4's default is
/// HMAC-SHA512; databases made since this relay version use HMAC-SHA256, which recent x86 CPUs (SHA-NI)
/// and ARMv8 compute in hardware: every page the writer commits is authenticated and every page a
/// reader loads is checked, so it is a cost of every push and pull (BENCHMARKS.md section 14). The tag
/// stays 256 bits. SQLCipher cannot tell from a file which one made it (its header is encrypted too), so
/// a database that does not open with the first is opened with the second: databases made before keep
/// working as they are. The device store does the same (`core/src/store/mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageHmac {
    Sha256,
    /// SQLCipher 4's default, databases made before HMAC-SHA256.
    Sha512,
}

impl PageHmac {
    /// In the order a database is tried with.
    const ALL: [PageHmac; 2] = [PageHmac::Sha256, PageHmac::Sha512];

    /// The pragma that sets it, for the database `schema` of a connection.
    fn pragma(self, schema: &str) -> String {
        let algorithm = match self {
            PageHmac::Sha256 => "HMAC_SHA256",
            PageHmac::Sha512 => "HMAC_SHA512",
        };
        format!("PRAGMA {schema}.cipher_hmac_algorithm = {algorithm};")
    }
}

/// Opens `path` and sets its key and page authentication; a key that fails to set is tried again on
/// a new connection (twice, a moment apart) before the error is reported, as the device store does (a
/// transient failure under load was seen there).
fn open_keyed(path: &Path, encryption: &Encryption, hmac: PageHmac) -> Result<Connection> {
    sqlcipher_process_init();
    let mut attempt = 0;
    loop {
        let conn = Connection::open(path)?;
        let keyed = match encryption {
            Encryption::Key(key) => conn
                .execute_batch(&format!(
                    "PRAGMA key = {};",
                    key.sqlcipher_literal().as_str()
                ))
                .and_then(|()| conn.execute_batch(&hmac.pragma("main"))),
            _ => Ok(()),
        };
        match keyed {
            Ok(()) => return Ok(conn),
            Err(e) if attempt < 2 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "setting the store key failed; trying again");
                drop(conn);
                std::thread::sleep(Duration::from_millis(20 * attempt));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens a connection to a database whose page authentication is not known yet: each of
/// [`PageHmac::ALL`] is tried in turn. Returns the one that opened it too.
fn open_conn(path: &Path, encryption: &Encryption) -> Result<(Connection, PageHmac)> {
    open_conn_with(path, encryption, &PageHmac::ALL)
}

/// [`open_conn`] trying the page authentications `hmacs` in turn.
fn open_conn_with(
    path: &Path,
    encryption: &Encryption,
    hmacs: &[PageHmac],
) -> Result<(Connection, PageHmac)> {
    let mut hmacs = hmacs.iter().peekable();
    let (conn, hmac) = loop {
        let hmac = *hmacs.next().expect("at least one page authentication");
        let conn = open_keyed(path, encryption, hmac)?;
        // The first read decrypts page 1: a wrong key, a file of the other kind, or a database whose
        // pages the other HMAC authenticates fails here.
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => break (conn, hmac),
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
                    && matches!(encryption, Encryption::Key(_))
                    && hmacs.peek().is_some() => {}
            Err(e) => {
                return Err(match e.sqlite_error_code() {
                    Some(rusqlite::ErrorCode::NotADatabase) => key_mismatch(path, encryption),
                    _ => e.into(),
                })
            }
        }
    };
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL: readers never block the writer. synchronous=FULL: fsync the WAL on every commit, so
    // whatever was acknowledged survives power loss.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    // The writer's statements: a few per table and chunk size (see `chunk_sizes`), kept prepared.
    conn.set_prepared_statement_cache_capacity(128);
    Ok((conn, hmac))
}

/// The error for a database the given key (or the absence of one) does not open.
fn key_mismatch(path: &Path, encryption: &Encryption) -> Error {
    let plaintext = is_plaintext_sqlite(path).unwrap_or(false);
    let p = path.display();
    Error::Key(match (encryption, plaintext) {
        (Encryption::Key(_), true) => format!(
            "the relay database {p} is not encrypted; stop the relay and convert it once with \
             `gridwork-server admin --data <DIR> --key-file <FILE> encrypt` (the same key)"
        ),
        (Encryption::Key(_), false) => format!(
            "cannot open the relay database {p}: wrong key (or the file is not a Gridwork database)"
        ),
        (Encryption::Insecure, _) => format!(
            "the relay database {p} is encrypted (or is not a database): give its key with \
             --key-file or GRIDWORK_RELAY_KEY"
        ),
    })
}

/// Creates the data directory and its database file private to the relay's user (0700 and 0600,
/// whatever the umask), and tightens an existing directory and files made by older relays. SQLite
/// creates the WAL and shared-memory files with the database file's mode.
fn prepare_files(data_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(data_dir)?;
    set_private(data_dir, 0o700)?;
    let db = db_path(data_dir);
    create_private_file(&db)?;
    restrict_files(&db)?;
    Ok(db)
}

/// Creates an empty file with mode 0600 unless it exists (SQLite takes an empty file as a new database).
fn create_private_file(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => set_private(path, 0o600),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mode 0600 for the database and the side files that exist.
fn restrict_files(db: &Path) -> Result<()> {
    for p in std::iter::once(db.to_owned()).chain(side_files(db)) {
        match std::fs::metadata(&p) {
            Ok(_) => set_private(&p, 0o600)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Converts a plaintext relay database into an SQLCipher one with `key`, in place and safely: the
/// encrypted copy is written next to it (`sqlcipher_export`), checked, flushed to disk, then renamed over
/// the original in one atomic step; the plaintext file and its WAL are gone afterwards. Refuses while a
/// relay has the database open. Returns the schema version of the converted database.
///
/// The plaintext bytes may survive in the file system's free blocks: on a disk that ever held them,
/// treat the disk itself as sensitive (or wipe it).
pub fn encrypt_database(data_dir: &Path, key: &RelayKey) -> Result<i64> {
    let db = db_path(data_dir);
    if !db.exists() {
        return Err(Error::NotFound(format!(
            "no relay database at {}",
            db.display()
        )));
    }
    if !is_plaintext_sqlite(&db)? {
        return Err(Error::Key(format!(
            "{} is not a plaintext SQLite database (already encrypted?)",
            db.display()
        )));
    }
    set_private(data_dir, 0o700)?;
    let tmp = data_dir.join("gridwork.db.encrypting");
    // A leftover of an interrupted run: the original is untouched until the final rename.
    remove_if_exists(&tmp)?;
    remove_if_exists(&data_dir.join("gridwork.db.encrypting-journal"))?;
    create_private_file(&tmp)?;
    let version = export_encrypted(&db, &tmp, key).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    // The copy must open with the key and be sound before it replaces anything.
    {
        let (check, _) = open_conn(&tmp, &Encryption::Key(key.clone()))?;
        let ok: String = check.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        let v: i64 = check.pragma_query_value(None, "user_version", |r| r.get(0))?;
        // Back to a rollback journal, so no WAL under the temporary name outlives the rename.
        check.pragma_update(None, "journal_mode", "DELETE")?;
        if ok != "ok" || v != version {
            drop(check);
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Invalid(format!(
                "the encrypted copy failed its check ({ok}); the original is unchanged"
            )));
        }
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    // The plaintext database is in rollback-journal mode now (see export_encrypted): it has no WAL.
    // Side files left next to it would be taken as the new file's own, so they go before the rename.
    for p in side_files(&db) {
        remove_if_exists(&p)?;
    }
    std::fs::rename(&tmp, &db)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    tracing::info!(version, "relay database encrypted");
    Ok(version)
}

/// `sqlcipher_export` of the plaintext `db` into the new, empty `tmp` keyed with `key`; returns the
/// schema version (copied by hand: `sqlcipher_export` copies data, not `user_version`).
fn export_encrypted(db: &Path, tmp: &Path, key: &RelayKey) -> Result<i64> {
    let conn = Connection::open(db)?;
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    conn.busy_timeout(Duration::from_millis(500))?;
    // Leaving WAL mode needs every other connection closed: a running relay makes this fail (or keep
    // "wal"), and the conversion stops before touching anything. It also folds the WAL into the file.
    let in_use = || Error::Invalid("the relay database is in use: stop the relay first".into());
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                in_use()
            }
            _ => e.into(),
        })?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(in_use());
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tmp_str = tmp
        .to_str()
        .ok_or_else(|| Error::Invalid("the data directory path must be valid UTF-8".into()))?;
    conn.execute(
        &format!(
            "ATTACH DATABASE ?1 AS encrypted KEY {}",
            key.sqlcipher_literal().as_str()
        ),
        [tmp_str],
    )?;
    conn.execute_batch(&PageHmac::Sha256.pragma("encrypted"))?;
    conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
    conn.execute_batch(&format!("PRAGMA encrypted.user_version = {version};"))?;
    conn.execute_batch("DETACH DATABASE encrypted;")?;
    Ok(version)
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
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
    pub fn open(data_dir: &Path, encryption: &Encryption, limits: &Limits) -> Result<SqliteStore> {
        let path = prepare_files(data_dir)?;
        let (mut conn, hmac) = open_conn(&path, encryption)?;
        let open = || open_conn_with(&path, encryption, &[hmac]).map(|(c, _)| c);
        migrate(&mut conn)?;
        let writer_conn = open()?;
        // The WAL and shared-memory files exist now: make sure they are private too.
        restrict_files(&path)?;
        let checkpointer = Checkpointer::start(open()?)?;
        writer_conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        let mut sql = SqliteSql::new(writer_conn);
        sql.after_commit = Some(checkpointer.wake.clone());
        let planner = SqliteSql::new(open()?);
        let writer = Writer::on_thread(
            "gw-writer",
            planner,
            sql,
            Engine::new(limits),
            limits.pipeline_min_changes.unwrap_or(PIPELINE_MIN_CHANGES),
        )?;
        let readers = limits.db_connections.max(1);
        let mut pool = vec![conn];
        for _ in 1..readers {
            pool.push(open()?);
        }
        Ok(SqliteStore {
            path,
            encryption: encryption.clone(),
            hmac,
            checkpointer: Mutex::new(Some(checkpointer)),
            pool: Mutex::new(pool),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(readers)),
            writer,
        })
    }

    /// Runs `f` on a pooled connection.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .pool
            .lock()
            .map_err(|_| Error::Unavailable("pool poisoned".into()))?
            .pop();
        let mut conn = match conn {
            Some(c) => c,
            None => open_conn_with(&self.path, &self.encryption, &[self.hmac])?.0,
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

    /// Every schedule's or form's definition (JSON), by id.
    pub fn definitions(&self, what: Defined) -> Result<Vec<String>> {
        self.with(|c| load_definitions(c, what))
    }

    pub fn list_areas(&self) -> Result<Vec<AreaRow>> {
        self.with(|c| load_areas(c))
    }

    pub fn areas_version(&self) -> Result<i64> {
        self.with(|c| read_areas_version(c))
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

    /// Links a complete attachment to `record`; `false` when there is no complete attachment.
    pub fn attachment_link(&self, sha: &[u8; 32], record: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = attachment_exists(&tx, sha)?;
            if exists {
                tx.execute(
                    "INSERT OR IGNORE INTO attachment_records (sha256, record) VALUES (?1, ?2)",
                    params![&sha[..], record],
                )?;
            }
            tx.commit()?;
            Ok(exists)
        })
    }

    pub fn attachment_size(&self, sha: &[u8; 32]) -> Result<Option<u64>> {
        self.with(|c| {
            let size: Option<i64> = c
                .prepare_cached("SELECT size FROM attachments WHERE sha256 = ?1")?
                .query_row([&sha[..]], |r| r.get(0))
                .optional()?;
            Ok(size.map(|s| s as u64))
        })
    }

    pub fn attachment_paths(&self, sha: &[u8; 32]) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT r.paths FROM attachment_records a JOIN records r ON r.id = a.record
                 WHERE a.sha256 = ?1",
            )?;
            let rows = st.query_map([&sha[..]], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for p in rows {
                out.extend(split_paths(&p?));
            }
            Ok(out)
        })
    }

    pub fn attachment_pieces(&self, sha: &[u8; 32]) -> Result<Vec<Piece>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT offset, length(data) FROM attachment_chunks WHERE sha256 = ?1 ORDER BY offset",
            )?;
            let rows = st.query_map([&sha[..]], |r| {
                Ok(Piece {
                    offset: r.get(0)?,
                    len: r.get::<_, i64>(1)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Reads a range of one piece with incremental blob I/O: only that range is loaded, whatever
    /// the size of the row (older relays stored a whole attachment in one row).
    pub fn attachment_read(
        &self,
        sha: &[u8; 32],
        piece: Piece,
        from: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        self.with(|c| {
            let rowid: i64 = c
                .prepare_cached(
                    "SELECT rowid FROM attachment_chunks WHERE sha256 = ?1 AND offset = ?2",
                )?
                .query_row(params![&sha[..], piece.offset], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::NotFound("attachment piece".into()))?;
            let blob = c.blob_open(rusqlite::MAIN_DB, "attachment_chunks", "data", rowid, true)?;
            let end = (from as usize).saturating_add(len).min(blob.len());
            let mut buf = vec![0u8; end.saturating_sub(from as usize)];
            blob.read_at_exact(&mut buf, from as usize)?;
            Ok(buf)
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

    pub fn list_devices(&self, user: Option<&str>) -> Result<Vec<DeviceInfo>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT d.id, u.id, u.name, u.role, u.area, d.created_at, d.revoked_at, d.last_sync_at,
                        d.actor IS NOT NULL
                 FROM devices d JOIN users u ON u.id = d.user_id
                 WHERE ?1 IS NULL OR u.id = ?1 ORDER BY d.id",
            )?;
            let rows = st.query_map([user], |r| {
                Ok(DeviceInfo {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    user_name: r.get(2)?,
                    role: parse_role(r.get(3)?)?,
                    area: r.get(4)?,
                    created_at: r.get(5)?,
                    revoked_at: r.get(6)?,
                    last_sync_at: r.get(7)?,
                    bound: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub fn reset_device(&self, id: &str) -> Result<bool> {
        self.with(|c| Ok(c.execute("UPDATE devices SET actor = NULL WHERE id = ?1", [id])? > 0))
    }

    pub fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT u.id, u.name, u.role, u.area, u.disabled_at IS NOT NULL,
                        (SELECT count(*) FROM devices d WHERE d.user_id = u.id AND d.revoked_at IS NULL)
                 FROM users u ORDER BY u.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(UserInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    role: parse_role(r.get(2)?)?,
                    area: r.get(3)?,
                    disabled: r.get(4)?,
                    devices: r.get::<_, i64>(5)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub fn user_exists(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?)
        })
    }

    pub fn set_user_disabled(&self, id: &str, at: Option<i64>) -> Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE users SET disabled_at = ?2 WHERE id = ?1",
                params![id, at],
            )? > 0)
        })
    }
}

fn parse_role(s: String) -> rusqlite::Result<Role> {
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn read_areas_version(c: &Connection) -> Result<i64> {
    Ok(
        c.prepare_cached("SELECT value FROM meta WHERE key = 'areas_version'")?
            .query_row([], |r| r.get(0))?,
    )
}

fn bump_areas_version(c: &Connection) -> Result<()> {
    c.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'areas_version'",
        [],
    )?;
    Ok(())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.writer.close_blocking();
        if let Some(c) = self.checkpointer.lock().ok().and_then(|mut c| c.take()) {
            drop(c.wake);
            let _ = c.thread.join();
        }
    }
}

fn load_definitions(c: &Connection, what: Defined) -> Result<Vec<String>> {
    let sql = match what {
        Defined::Schedule => "SELECT definition FROM schedules ORDER BY id",
        Defined::Form => "SELECT definition FROM forms ORDER BY id",
    };
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
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

fn attachment_exists(c: &Connection, sha: &[u8; 32]) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM attachments WHERE sha256 = ?1")?
            .exists([&sha[..]])?,
    )
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

/// Row counts to write `rows` rows in: chunks of `max` (a power of two), then the rest as powers of
/// two (100 = 64 + 32 + 4). A handful of statements, each prepared once per connection, serves every
/// batch; a chunk of the remainder's exact size would be a statement prepared anew almost every time.
fn chunk_sizes(rows: usize, max: usize) -> impl Iterator<Item = usize> {
    debug_assert!(max.is_power_of_two());
    let rest = rows % max;
    std::iter::repeat_n(max, rows / max).chain(
        (0..max.trailing_zeros())
            .rev()
            .map(|bit| 1 << bit)
            .filter(move |size| rest & size != 0),
    )
}

/// Runs a multi-row INSERT over `params`, `cols` values per row, in chunks of at most
/// [`ROWS_PER_INSERT`] rows ([`chunk_sizes`]).
fn insert_many(
    tx: &Connection,
    head: &str,
    tail: &str,
    cols: usize,
    params: &[&dyn rusqlite::ToSql],
) -> Result<()> {
    let mut rest = params;
    for rows in chunk_sizes(params.len() / cols, ROWS_PER_INSERT) {
        let (chunk, after) = rest.split_at(rows * cols);
        rest = after;
        let sql = multi_insert_sql(head, cols, rows, tail);
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
        // Padded to a power of two with the last key again (a key twice in `IN` finds its row
        // once): a few statements, each prepared once, serve every batch.
        let width = chunk.len().next_power_of_two();
        let sql = format!("{select} IN ({})", vec!["?"; width].join(","));
        let mut st = tx.prepare_cached(&sql)?;
        let last = &chunk[chunk.len() - 1];
        let padded = chunk
            .iter()
            .chain(std::iter::repeat_n(last, width - chunk.len()));
        let mut rows = st.query(rusqlite::params_from_iter(padded))?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
    }
    Ok(())
}

/// A connection as the shared logic uses it ([`Transact`], [`WriteSql`], [`UploadSql`]): the
/// writer's own, or a pooled one. A write transaction is `BEGIN IMMEDIATE`, which takes SQLite's one
/// write lock at once; the log's head is `MAX(seq)` under it.
pub(super) struct SqliteSql<C> {
    conn: C,
    /// The writer's: wakes the [`Checkpointer`] after each commit.
    after_commit: Option<SyncSender<()>>,
}

impl<C: BorrowMut<Connection>> SqliteSql<C> {
    pub(super) fn new(conn: C) -> Self {
        SqliteSql {
            conn,
            after_commit: None,
        }
    }

    fn c(&self) -> &Connection {
        self.conn.borrow()
    }
}

impl<C: BorrowMut<Connection> + Send> Transact for SqliteSql<C> {
    async fn begin(&mut self) -> Result<()> {
        self.c().execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let t = prof::start();
        self.c().execute_batch("COMMIT")?;
        t.stop(Span::Commit);
        if let Some(wake) = &self.after_commit {
            // Full: a checkpoint is pending already and will take this commit's pages too.
            let _ = wake.try_send(());
        }
        Ok(())
    }

    async fn rollback(&mut self) {
        if !self.c().is_autocommit() {
            if let Err(e) = self.c().execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
    }
}

impl<C: BorrowMut<Connection> + Send> WriteSql for SqliteSql<C> {
    /// One writer per database, and the batch's transaction (`BEGIN IMMEDIATE`) holds its write lock from the start.
    const SHARED: bool = false;

    async fn first_seq(&mut self) -> Result<i64> {
        Ok(self
            .c()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM changes")?
            .query_row([], |r| r.get(0))?)
    }

    async fn areas_version(&mut self) -> Result<i64> {
        read_areas_version(self.c())
    }

    async fn load_areas(&mut self) -> Result<Vec<AreaRow>> {
        load_areas(self.c())
    }

    async fn definitions(&mut self, what: Defined) -> Result<Vec<String>> {
        load_definitions(self.c(), what)
    }

    async fn change_seqs(&mut self, hashes: &[[u8; 32]]) -> Result<FastMap<[u8; 32], i64>> {
        let keys: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
        let mut out = FastMap::default();
        lookup_many(
            self.c(),
            "SELECT hash, seq FROM changes WHERE hash",
            &keys,
            |r| {
                let h = r.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                if let Ok(h) = <[u8; 32]>::try_from(h) {
                    out.insert(h, r.get::<_, i64>(1)?);
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    async fn record_versions(&mut self, ids: &[String]) -> Result<FastMap<String, i64>> {
        let mut out = FastMap::default();
        lookup_many(
            self.c(),
            "SELECT id, version FROM records WHERE id",
            ids,
            |r| {
                out.insert(r.get::<_, String>(0)?, r.get::<_, i64>(1)?);
                Ok(())
            },
        )?;
        Ok(out)
    }

    async fn record_rows(&mut self, ids: &[String]) -> Result<FastMap<String, RecordRow>> {
        let mut out = FastMap::default();
        lookup_many(
            self.c(),
            "SELECT id, doc, version, paths FROM records WHERE id",
            ids,
            |r| {
                out.insert(
                    r.get::<_, String>(0)?,
                    RecordRow {
                        doc: r.get(1)?,
                        version: r.get(2)?,
                        paths: split_paths(r.get_ref(3)?.as_str().map_err(rusqlite::Error::from)?),
                    },
                );
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// The planner's reads are a read like a page's: one read transaction.
    async fn begin_plan(&mut self) -> Result<()> {
        self.begin_read().await
    }

    async fn end_plan(&mut self) {
        self.end_read().await
    }

    async fn insert_changes(&mut self, rows: &[ChangeRow<'_>]) -> Result<()> {
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 8);
        for r in rows {
            p.extend_from_slice(&[
                &r.seq as &dyn rusqlite::ToSql,
                &r.hash,
                &r.record,
                &r.bytes,
                &r.kind,
                &r.before_paths,
                &r.heads,
                &r.device,
            ]);
        }
        insert_many(
            self.c(),
            "INSERT INTO changes (seq, hash, record, bytes, kind, before_paths, heads, device)",
            "",
            8,
            &p,
        )
    }

    async fn insert_entry_runs(&mut self, rows: &[EntryRun<'_>]) -> Result<()> {
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 3);
        for r in rows {
            p.push(&r.key);
            p.push(&r.last);
            p.push(&r.first);
        }
        insert_many(
            self.c(),
            "INSERT INTO entry_runs (key, last, first)",
            "",
            3,
            &p,
        )
    }

    async fn upsert_records(&mut self, rows: &[RecordRowWrite<'_>]) -> Result<()> {
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 5);
        for r in rows {
            p.extend_from_slice(&[
                &r.id as &dyn rusqlite::ToSql,
                &r.doc,
                &r.version,
                &r.paths,
                &r.view,
            ]);
        }
        insert_many(
            self.c(),
            "INSERT INTO records (id, doc, version, paths, view)",
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, version = excluded.version, paths = excluded.paths, view = excluded.view",
            5,
            &p,
        )
    }

    async fn clear_scope(&mut self, records: &[&str]) -> Result<()> {
        let mut st = self
            .c()
            .prepare_cached("DELETE FROM record_scope WHERE record = ?1")?;
        for r in records {
            st.execute([r])?;
        }
        Ok(())
    }

    async fn insert_scope(&mut self, rows: &[(&str, &str)]) -> Result<()> {
        let mut p: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 2);
        for (k, r) in rows {
            p.push(k);
            p.push(r);
        }
        insert_many(
            self.c(),
            "INSERT OR IGNORE INTO record_scope (key, record)",
            "",
            2,
            &p,
        )
    }

    async fn touch_devices(&mut self, rows: &[(&str, i64)]) -> Result<()> {
        let mut st = self
            .c()
            .prepare_cached("UPDATE devices SET last_sync_at = ?2 WHERE id = ?1")?;
        for (d, t) in rows {
            st.execute(params![d, t])?;
        }
        Ok(())
    }
}

impl<C: BorrowMut<Connection> + Send> UploadSql for SqliteSql<C> {
    async fn session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        _lock: bool,
    ) -> Result<Option<Upload>> {
        let row: Option<(i64, i64)> = self
            .c()
            .prepare_cached(
                "SELECT received, total FROM upload_sessions WHERE device = ?1 AND sha256 = ?2",
            )?
            .query_row(params![device, &sha[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(received, total)| Upload {
            received: received as u64,
            total: total as u64,
        }))
    }

    async fn linked_size(&mut self, sha: &[u8; 32], record: &str) -> Result<Option<u64>> {
        let size: Option<i64> = self
            .c()
            .prepare_cached(
                "SELECT a.size FROM attachments a JOIN attachment_records l ON l.sha256 = a.sha256
                 WHERE a.sha256 = ?1 AND l.record = ?2",
            )?
            .query_row(params![&sha[..], record], |r| r.get(0))
            .optional()?;
        Ok(size.map(|s| s as u64))
    }

    async fn sessions_beyond(&mut self, device: &str, keep: usize) -> Result<Vec<[u8; 32]>> {
        let mut st = self.c().prepare_cached(
            "SELECT sha256 FROM upload_sessions WHERE device = ?1
             ORDER BY used_ms DESC, sha256 LIMIT -1 OFFSET ?2",
        )?;
        let rows = st.query_map(params![device, keep as i64], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for sha in rows {
            if let Ok(sha) = <[u8; 32]>::try_from(sha?.as_slice()) {
                out.push(sha);
            }
        }
        Ok(out)
    }

    async fn drop_session(&mut self, device: &str, sha: &[u8; 32]) -> Result<()> {
        for sql in [
            "DELETE FROM upload_chunks WHERE device = ?1 AND sha256 = ?2",
            "DELETE FROM upload_sessions WHERE device = ?1 AND sha256 = ?2",
        ] {
            self.c()
                .prepare_cached(sql)?
                .execute(params![device, &sha[..]])?;
        }
        Ok(())
    }

    async fn open_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        record: &str,
        total: u64,
        now: i64,
    ) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT OR IGNORE INTO upload_sessions (device, sha256, record, total, received, used_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )?
            .execute(params![device, &sha[..], record, total as i64, now])?;
        Ok(())
    }

    async fn advance_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: u64,
        len: u64,
        now: i64,
    ) -> Result<bool> {
        let moved = self
            .c()
            .prepare_cached(
                "UPDATE upload_sessions SET received = received + ?4, used_ms = ?5
                 WHERE device = ?1 AND sha256 = ?2 AND received = ?3 AND received + ?4 <= total",
            )?
            .execute(params![device, &sha[..], offset as i64, len as i64, now])?;
        Ok(moved == 1)
    }

    async fn store_piece(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO upload_chunks (device, sha256, offset, data) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![device, &sha[..], offset as i64, data])?;
        Ok(())
    }

    async fn piece_offsets(&mut self, device: &str, sha: &[u8; 32]) -> Result<Vec<i64>> {
        let mut st = self.c().prepare_cached(
            "SELECT offset FROM upload_chunks WHERE device = ?1 AND sha256 = ?2 ORDER BY offset",
        )?;
        let rows = st.query_map(params![device, &sha[..]], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn piece(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: i64,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT data FROM upload_chunks WHERE device = ?1 AND sha256 = ?2 AND offset = ?3",
            )?
            .query_row(params![device, &sha[..], offset], |r| r.get(0))
            .optional()?)
    }

    async fn complete_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        total: u64,
    ) -> Result<Option<String>> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT record FROM upload_sessions
                 WHERE device = ?1 AND sha256 = ?2 AND received = ?3 AND total = ?3",
            )?
            .query_row(params![device, &sha[..], total as i64], |r| r.get(0))
            .optional()?)
    }

    async fn add_attachment(&mut self, sha: &[u8; 32], size: u64) -> Result<bool> {
        let stored = self
            .c()
            .prepare_cached("INSERT OR IGNORE INTO attachments (sha256, size) VALUES (?1, ?2)")?
            .execute(params![&sha[..], size as i64])?;
        Ok(stored == 1)
    }

    async fn copy_pieces(&mut self, device: &str, sha: &[u8; 32]) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO attachment_chunks (sha256, offset, data)
                 SELECT sha256, offset, data FROM upload_chunks
                 WHERE device = ?1 AND sha256 = ?2 ORDER BY offset",
            )?
            .execute(params![device, &sha[..]])?;
        Ok(())
    }

    async fn link(&mut self, sha: &[u8; 32], record: &str) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT OR IGNORE INTO attachment_records (sha256, record) VALUES (?1, ?2)",
            )?
            .execute(params![&sha[..], record])?;
        Ok(())
    }
}

impl<C: BorrowMut<Connection> + Send> AdminSql for SqliteSql<C> {
    async fn exists(&mut self, row: Row, id: &str) -> Result<bool> {
        let sql = match row {
            Row::Area => "SELECT EXISTS(SELECT 1 FROM areas WHERE id = ?1)",
            Row::User => "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)",
            Row::Device => "SELECT EXISTS(SELECT 1 FROM devices WHERE id = ?1)",
        };
        Ok(self
            .c()
            .prepare_cached(sql)?
            .query_row([id], |r| r.get(0))?)
    }

    async fn area_place(&mut self, id: &str) -> Result<Option<(i64, String)>> {
        Ok(self
            .c()
            .prepare_cached("SELECT level, path FROM areas WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    async fn bump_areas_version(&mut self) -> Result<()> {
        bump_areas_version(self.c())
    }

    async fn insert_area(&mut self, a: &AreaRow) -> Result<()> {
        self.c().execute(
            "INSERT INTO areas (id, parent, level, name, path) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![a.id, a.parent, a.level.rank(), a.name, a.path],
        )?;
        Ok(())
    }

    async fn rename_area(&mut self, id: &str, name: &str) -> Result<u64> {
        Ok(self.c().execute(
            "UPDATE areas SET name = ?2 WHERE id = ?1",
            params![id, name],
        )? as u64)
    }

    async fn set_area_parent(&mut self, id: &str, parent: &str) -> Result<()> {
        self.c().execute(
            "UPDATE areas SET parent = ?2 WHERE id = ?1",
            params![id, parent],
        )?;
        Ok(())
    }

    async fn rewrite_area_paths(&mut self, old: &str, new: &str) -> Result<u64> {
        Ok(self.c().execute(
            "UPDATE areas SET path = ?2 || substr(path, length(?1) + 1)
             WHERE substr(path, 1, length(?1)) = ?1",
            params![old, new],
        )? as u64)
    }

    async fn records_under(&mut self, key: &str) -> Result<Vec<(String, String)>> {
        let mut st = self.c().prepare(
            "SELECT r.id, r.paths FROM record_scope s JOIN records r ON r.id = s.record
             WHERE s.key = ?1",
        )?;
        let rows = st.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn set_record_paths(&mut self, rows: &[(&str, &str)]) -> Result<()> {
        let mut st = self
            .c()
            .prepare_cached("UPDATE records SET paths = ?2 WHERE id = ?1")?;
        for (id, paths) in rows {
            st.execute(params![id, paths])?;
        }
        Ok(())
    }

    async fn count(&mut self, held: Held, arg: &str) -> Result<i64> {
        let sql = match held {
            Held::Children => "SELECT count(*) FROM areas WHERE parent = ?1",
            Held::Users => "SELECT count(*) FROM users WHERE area = ?1",
            Held::Records => "SELECT count(*) FROM record_scope WHERE key = ?1",
            Held::Schedules => "SELECT count(*) FROM schedules WHERE area = ?1",
            Held::Forms => "SELECT count(*) FROM forms WHERE area = ?1",
        };
        Ok(self
            .c()
            .prepare_cached(sql)?
            .query_row([arg], |r| r.get(0))?)
    }

    async fn delete_entry_runs(&mut self, from: &str, to: &str) -> Result<()> {
        self.c().execute(
            "DELETE FROM entry_runs WHERE key >= ?1 AND key < ?2",
            params![from, to],
        )?;
        Ok(())
    }

    async fn delete_area(&mut self, id: &str) -> Result<()> {
        self.c().execute("DELETE FROM areas WHERE id = ?1", [id])?;
        Ok(())
    }

    async fn insert_user(&mut self, u: &UserRow) -> Result<()> {
        self.c().execute(
            "INSERT INTO users (id, name, role, area) VALUES (?1, ?2, ?3, ?4)",
            params![u.id, u.name, u.role.as_str(), u.area],
        )?;
        Ok(())
    }

    async fn update_user(&mut self, id: &str, ch: &UserChanges) -> Result<u64> {
        Ok(self.c().execute(
            "UPDATE users SET name = COALESCE(?2, name), role = COALESCE(?3, role),
                              area = COALESCE(?4, area) WHERE id = ?1",
            params![id, ch.name, ch.role.map(|r| r.as_str()), ch.area],
        )? as u64)
    }

    async fn insert_device(
        &mut self,
        id: &str,
        user: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<()> {
        self.c().execute(
            "INSERT INTO devices (id, user_id, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, user, &token_hash[..], now],
        )?;
        Ok(())
    }

    async fn put_definition(
        &mut self,
        what: Defined,
        id: &str,
        area: &str,
        definition: &str,
    ) -> Result<()> {
        let sql = match what {
            Defined::Schedule => {
                "INSERT INTO schedules (id, area, definition) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET area = excluded.area, definition = excluded.definition"
            }
            Defined::Form => {
                "INSERT INTO forms (id, area, definition) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET area = excluded.area, definition = excluded.definition"
            }
        };
        self.c().execute(sql, params![id, area, definition])?;
        Ok(())
    }

    async fn delete_definition(&mut self, what: Defined, id: &str) -> Result<u64> {
        let sql = match what {
            Defined::Schedule => "DELETE FROM schedules WHERE id = ?1",
            Defined::Form => "DELETE FROM forms WHERE id = ?1",
        };
        Ok(self.c().execute(sql, [id])? as u64)
    }
}

impl<C: BorrowMut<Connection> + Send> ReadSql for SqliteSql<C> {
    async fn begin_read(&mut self) -> Result<()> {
        self.c().execute_batch("BEGIN")?;
        Ok(())
    }

    async fn end_read(&mut self) {
        if !self.c().is_autocommit() {
            let _ = self.c().execute_batch("COMMIT");
        }
    }

    async fn log_head(&mut self) -> Result<i64> {
        Ok(self
            .c()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")?
            .query_row([], |r| r.get(0))?)
    }

    async fn log_entries(
        &mut self,
        scope: &Scope,
        device: &str,
        after: i64,
        head: i64,
        n: i64,
        take: Take<'_, RawEntry>,
    ) -> Result<()> {
        // Entries other than plain changes may be delivered as the whole document: their weight is
        // the document's.
        let extra =
            "CASE WHEN c.kind <> 0 THEN (SELECT length(doc) FROM records WHERE id = c.record) END,
             (SELECT view FROM records WHERE id = c.record AND version = c.seq)";
        let c = self.c();
        // `LIMIT ?3 + 0`, here and in every limit of a cached statement: SQLite's planner reads a limit
        // that is a bare parameter, so binding another value makes it prepare the statement again at
        // every run (`sqlite3Reprepare` was 3% of the relay's readers in a profile of paced pulls).
        let mut st = if scope.is_operator() {
            c.prepare_cached(&format!(
                "SELECT c.seq, c.record, c.bytes, c.kind, c.before_paths, c.heads, c.device IS ?4, {extra}
                 FROM changes c
                 WHERE c.seq > ?1 AND c.seq <= ?2 AND (c.kind <> 0 OR c.device IS NOT ?4)
                 ORDER BY c.seq LIMIT ?3 + 0"
            ))?
        } else {
            c.prepare_cached(&format!(
                "SELECT c.seq, c.record, c.bytes, c.kind, c.before_paths, c.heads, c.device IS ?4, {extra}
                 FROM entry_runs e
                 JOIN changes c ON c.seq >= max(e.first, ?1 + 1) AND c.seq <= min(e.last, ?2)
                 WHERE e.key = ?5 AND e.last > ?1 AND e.first <= ?2
                   AND (c.kind <> 0 OR c.device IS NOT ?4)
                 ORDER BY e.last, c.seq LIMIT ?3 + 0"
            ))?
        };
        let mut rows = if scope.is_operator() {
            st.query(params![after, head, n, device])?
        } else {
            st.query(params![after, head, n, device, scope.prefix])?
        };
        while let Some(r) = rows.next()? {
            let e = RawEntry {
                seq: r.get(0)?,
                record: r.get(1)?,
                bytes: r.get(2)?,
                kind: r.get(3)?,
                before_paths: r.get(4)?,
                heads: r.get(5)?,
                own: r.get(6)?,
                doc_len: r.get(7)?,
                view: r.get(8)?,
            };
            if !take(e) {
                break;
            }
        }
        Ok(())
    }

    async fn docs(&mut self, ids: &[String]) -> Result<HashMap<String, Vec<u8>>> {
        let mut out = HashMap::new();
        lookup_many(self.c(), "SELECT id, doc FROM records WHERE id", ids, |r| {
            out.insert(r.get(0)?, r.get(1)?);
            Ok(())
        })?;
        Ok(out)
    }

    async fn record_views(
        &mut self,
        scope: &Scope,
        take: Take<'_, (String, Option<String>, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let c = self.c();
        let doc = "CASE WHEN r.view IS NULL THEN r.doc END";
        let mut st = if scope.is_operator() {
            c.prepare_cached(&format!(
                "SELECT r.id, r.view, {doc} FROM records r WHERE length(r.doc) > 0"
            ))?
        } else {
            c.prepare_cached(&format!(
                "SELECT r.id, r.view, {doc} FROM record_scope s JOIN records r ON r.id = s.record
                 WHERE s.key = ?1 AND length(r.doc) > 0"
            ))?
        };
        let mut rows = if scope.is_operator() {
            st.query([])?
        } else {
            st.query([&scope.prefix])?
        };
        while let Some(r) = rows.next()? {
            if !take((r.get(0)?, r.get(1)?, r.get(2)?)) {
                break;
            }
        }
        Ok(())
    }

    async fn records(
        &mut self,
        scope: &Scope,
        after: &str,
        n: i64,
        take: Take<'_, SnapshotRow>,
    ) -> Result<()> {
        let c = self.c();
        let mut st = if scope.is_operator() {
            c.prepare_cached(
                "SELECT id, doc, view FROM records WHERE id > ?1 AND length(doc) > 0 ORDER BY id LIMIT ?2 + 0",
            )?
        } else {
            c.prepare_cached(
                "SELECT r.id, r.doc, r.view FROM record_scope s JOIN records r ON r.id = s.record
                 WHERE s.key = ?3 AND s.record > ?1 AND length(r.doc) > 0
                 ORDER BY s.record LIMIT ?2 + 0",
            )?
        };
        let mut rows = if scope.is_operator() {
            st.query(params![after, n])?
        } else {
            st.query(params![after, n, scope.prefix])?
        };
        while let Some(r) = rows.next()? {
            let row = SnapshotRow {
                id: r.get(0)?,
                doc: r.get(1)?,
                view: r.get(2)?,
            };
            if !take(row) {
                break;
            }
        }
        Ok(())
    }
}

impl<C: BorrowMut<Connection> + Send> super::console::ConsoleSql for SqliteSql<C> {
    async fn exec(
        &mut self,
        sql: &'static str,
        params: &[super::console::Value<'_>],
    ) -> Result<u64> {
        let mut st = self.c().prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params.iter().map(sqlite_value)))? as u64)
    }

    async fn query(
        &mut self,
        sql: &'static str,
        params: &[super::console::Value<'_>],
    ) -> Result<Vec<Vec<super::console::Owned>>> {
        use super::console::Owned;
        let mut st = self.c().prepare_cached(sql)?;
        let n = st.column_count();
        let rows = st.query_map(
            rusqlite::params_from_iter(params.iter().map(sqlite_value)),
            |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Integer(v) => Owned::Int(v),
                            rusqlite::types::ValueRef::Text(t) => {
                                Owned::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            _ => Owned::Null,
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn sqlite_value(v: &super::console::Value<'_>) -> rusqlite::types::Value {
    use super::console::Value;
    match v {
        Value::Text(t) => rusqlite::types::Value::Text((*t).to_owned()),
        Value::OptText(Some(t)) => rusqlite::types::Value::Text((*t).to_owned()),
        Value::OptText(None) => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schema 9 turns the scope index's rows (one per seq and key) into runs of consecutive seqs.
    #[test]
    fn migration_to_runs_joins_consecutive_seqs_only() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE entry_areas (key TEXT NOT NULL, seq INTEGER NOT NULL,
                                       PRIMARY KEY (key, seq)) WITHOUT ROWID;
             INSERT INTO entry_areas (key, seq) VALUES
                 ('d1/', 1), ('d1/', 2), ('d1/', 3), ('d1/', 4), ('d1/', 7),
                 ('d1/g1/', 1), ('d1/g1/', 2), ('d1/g1/', 4), ('d1/g1/', 7),
                 ('d1/g2/', 3);",
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[8]).unwrap();
        let runs: Vec<(String, i64, i64)> = conn
            .prepare("SELECT key, first, last FROM entry_runs ORDER BY key, last")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let run = |k: &str, first, last| (k.to_owned(), first, last);
        assert_eq!(
            runs,
            [
                run("d1/", 1, 4),
                run("d1/", 7, 7),
                run("d1/g1/", 1, 2),
                run("d1/g1/", 4, 4),
                run("d1/g1/", 7, 7),
                run("d1/g2/", 3, 3),
            ]
        );
        let gone: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'entry_areas'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
    }

    #[test]
    fn chunk_sizes_cover_every_row_with_few_statements() {
        let mut sizes_seen = std::collections::HashSet::new();
        for rows in 0..1_000 {
            let sizes: Vec<usize> = chunk_sizes(rows, ROWS_PER_INSERT).collect();
            assert_eq!(sizes.iter().sum::<usize>(), rows);
            assert!(sizes
                .iter()
                .all(|s| s.is_power_of_two() && *s <= ROWS_PER_INSERT));
            sizes_seen.extend(sizes);
        }
        assert_eq!(sizes_seen.len(), 8, "{sizes_seen:?}");
    }

    /// How many times the statements prepared on `conn` were prepared again by `sqlite3_step` (a
    /// schema change, or a bound value the planner had read).
    fn reprepares(conn: &Connection) -> i32 {
        statement_status(conn, rusqlite::ffi::SQLITE_STMTSTATUS_REPREPARE, false)
    }

    /// A counter of SQLite's (`SQLITE_STMTSTATUS_*`) summed over a connection's statements, reset
    /// to zero when `reset`.
    fn statement_status(conn: &Connection, op: std::os::raw::c_int, reset: bool) -> i32 {
        let mut total = 0;
        // SAFETY: walks the statements of a connection this thread holds; each pointer is only
        // passed back to SQLite while the connection is open and unchanged.
        unsafe {
            let db = conn.handle();
            let mut stmt = rusqlite::ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                total += rusqlite::ffi::sqlite3_stmt_status(stmt, op, i32::from(reset));
                stmt = rusqlite::ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        total
    }

    /// The pull's and the snapshot's statements are prepared once per connection: their limits are
    /// not bare parameters, which SQLite's planner reads (a new value made it prepare the statement
    /// again at every pull).
    #[test]
    fn pulls_do_not_prepare_their_statements_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        for role in [Role::Worker, Role::Operator] {
            let scope = Scope {
                role,
                prefix: "d1/s1/c1/g1/".into(),
            };
            let mut sql = SqliteSql::new(&mut conn);
            for (after, n) in [(0, 10), (5, 100), (7, 3), (9, 2_000)] {
                crate::storage::sql::ready(sql.log_entries(
                    &scope,
                    "dev",
                    after,
                    after + 50,
                    n,
                    &mut |_| true,
                ))
                .unwrap();
                crate::storage::sql::ready(sql.records(&scope, "", n, &mut |_| true)).unwrap();
            }
        }
        assert_eq!(reprepares(&conn), 0);
    }

    /// A scoped pull reads the runs of its key and, of each, only its own seqs: not every entry
    /// from the cursor to the head (a join that bounded the log's rows by the cursor and the head
    /// instead of by the run visited the whole log once per run).
    #[test]
    fn scoped_pulls_read_their_runs_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        // 100 grids, a run of 20 entries each: 2,000 entries.
        let tx = conn.transaction().unwrap();
        for g in 0..100i64 {
            for i in 1..=20i64 {
                let seq = g * 20 + i;
                tx.execute(
                    "INSERT INTO changes (seq, hash, record, bytes, kind) VALUES (?1, ?2, ?3, x'00', 0)",
                    params![seq, seq.to_be_bytes().to_vec(), format!("r{g}")],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO entry_runs (key, last, first) VALUES (?1, ?2, ?3)",
                params![format!("d1/g{g}/"), g * 20 + 20, g * 20 + 1],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let scope = Scope {
            role: Role::Worker,
            prefix: "d1/g50/".into(),
        };
        let mut sql = SqliteSql::new(&mut conn);
        let mut pull = |after: i64, n: i64| {
            let mut seqs = Vec::new();
            crate::storage::sql::ready(sql.log_entries(&scope, "dev", after, 2_000, n, &mut |e| {
                seqs.push(e.seq);
                true
            }))
            .unwrap();
            seqs
        };
        assert_eq!(pull(0, 1_000), (1_001..=1_020).collect::<Vec<_>>());
        assert_eq!(pull(1_005, 3), [1_006, 1_007, 1_008]);
        statement_status(&conn, rusqlite::ffi::SQLITE_STMTSTATUS_VM_STEP, true);
        let mut sql = SqliteSql::new(&mut conn);
        crate::storage::sql::ready(sql.log_entries(&scope, "dev", 0, 2_000, 1_000, &mut |_| true))
            .unwrap();
        let steps = statement_status(&conn, rusqlite::ffi::SQLITE_STMTSTATUS_VM_STEP, false);
        assert!(
            steps < 2_000,
            "{steps} steps to pull 20 entries out of 2,000"
        );
    }
}
