//! The device store: one SQLite file (SQLCipher-encrypted) holding every record's Automerge document,
//! the outbox of local changes, sync state and the projection tables used for lists and search.
//!
//! One write is one SQLite transaction: the document is edited, the new change is queued in the outbox and
//! the projection rows are rewritten, all or nothing. The document is the truth; the projection is a pure
//! function of the documents and can be rebuilt at any time (`rebuild_projection`).
mod attachments;
mod dedup;
mod duplicates;
mod events;
mod export;
mod followups;
mod forms;
mod household;
mod identity;
mod inbox;
mod merge;
mod projection;
mod purge;
mod quarantine;
mod records;
mod rulebook;
mod stats;
mod template;

use rulebook::Judged;
pub mod schema;
pub mod search;
mod visits;

pub use dedup::{DuplicatePairSummary, MergeReport};
pub use duplicates::{name_key, DuplicateCandidate, DuplicateReason};
pub use export::{ExportFormat, ExportQuery, MAX_EXPORT_ROWS};
pub use followups::{Followup, FollowupQuery};
pub use household::HouseholdMove;
pub use inbox::{NewForMe, NewForMeKind};
pub use merge::{ApplyReport, OutboxChange, RemoteChunk};
pub use quarantine::{DiscardReport, DroppedEdit, QuarantineOrigin, QuarantinedChange};
pub use records::new_record_id;
pub use records::{ListQuery, NewRecord, Page, RecordSummary, Update};
pub use visits::GeoPoint;

use crate::doc::{self, RecordState};
use crate::error::{Error, Result};
use crate::model::{Area, AreaLevel, Identity, Kind, Record};
use automerge::transaction::Transaction;
use automerge::{ActorId, Automerge};
use lru::LruCache;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The key the platform keystore hands in. Raw keys skip SQLCipher's key derivation (fast open);
/// passphrases go through it (PBKDF2), for people typing a secret into the terminal client.
#[derive(Clone)]
pub enum StoreKey {
    /// No encryption: only for benchmarks' baselines and throwaway stores.
    None,
    Raw([u8; 32]),
    Passphrase(String),
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKey::None => "StoreKey::None",
            StoreKey::Raw(_) => "StoreKey::Raw(..)",
            StoreKey::Passphrase(_) => "StoreKey::Passphrase(..)",
        })
    }
}

/// How hard a commit is pushed to disk. Both survive the app being killed at any moment;
/// `Full` also survives power loss of the last transactions, at the cost of an fsync per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Normal,
    Full,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub key: StoreKey,
    /// Required when the store is created; when given for an existing store its user must be the
    /// store's (the device id, role and area of an existing store are the ones the relay confirmed).
    pub identity: Option<Identity>,
    pub durability: Durability,
    /// How many documents stay loaded in memory.
    pub doc_cache: usize,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>, key: StoreKey) -> Self {
        StoreOptions {
            path: path.into(),
            key,
            identity: None,
            durability: Durability::Normal,
            doc_cache: 512,
        }
    }
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

pub struct Store {
    inner: Mutex<Inner>,
    path: PathBuf,
    /// The runtime and HTTP client kept between syncs (see [`Store::sync`]).
    pub(crate) session: Mutex<crate::sync::SyncSession>,
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    docs: LruCache<String, Automerge>,
    /// This store's own Automerge actor (never shared with another store).
    actor: ActorId,
    /// Area id -> path, for scope checks without a query.
    area_paths: HashMap<String, String>,
    /// The city forms from the relay: the rule book checks attribute values by them. With their
    /// `forms_version` when there are any: change notes name it.
    forms: Vec<gridwork_protocol::Form>,
    forms_version: Option<String>,
    /// Who works here: from `init`, then from the relay at every sync.
    pub(crate) identity: Identity,
    /// Whether the relay has confirmed the identity (at least one sync or an `init` from the relay).
    pub(crate) confirmed: bool,
    /// Why the store was wiped, once it was: every later write is refused.
    pub(crate) wiped: Option<String>,
}

/// `meta` keys.
const META_IDENTITY: &str = "identity";
const META_ACTOR: &str = "actor";
const META_CONFIRMED: &str = "identity_confirmed";
/// How many records the relay sent a view of that their document did not read as.
const META_VIEW_REPAIRS: &str = "view_repairs";
/// `areas_version` of the area tree last taken from the relay.
const META_AREAS_VERSION: &str = "areas_version";
const META_WIPED: &str = "wiped";

pub(crate) use gridwork_protocol::doc::ChangeNote;

/// Sets SQLCipher's logging, once per process (its log settings are process-wide, and changing its log
/// destination while another thread logs crashes it). Off by default: SQLCipher would print failed key
/// checks, and errors reach the caller typed instead. `GRIDWORK_SQLCIPHER_LOG=ERROR` (or WARN, INFO,
/// DEBUG) has it say on stderr why it refused a key or a page, for diagnosing; it names operations and
/// page numbers, never keys or values.
fn sqlcipher_process_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let pragmas = match std::env::var("GRIDWORK_SQLCIPHER_LOG").ok().as_deref() {
            Some(level @ ("ERROR" | "WARN" | "INFO" | "DEBUG")) => {
                format!("PRAGMA cipher_log = stderr; PRAGMA cipher_log_level = {level};")
            }
            _ => "PRAGMA cipher_log_level = NONE;".to_owned(),
        };
        // On a connection of its own, never a store's: the logging pragmas are process-wide, and
        // keying this one first initialises the crypto provider on one thread before any store is
        // keyed (an intermittent `PRAGMA key` failure was seen with several stores keyed at once).
        // A build without SQLCipher has no such pragmas; nothing to set then.
        if let Ok(c) = Connection::open_in_memory() {
            let _ = c.execute_batch(&pragmas);
            let _ = c.execute_batch("PRAGMA key = 'gridwork-warm-up';");
            let _ = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            });
        }
    });
}

/// How a store's pages are authenticated. SQLCipher 4's default is HMAC-SHA512; stores made since
/// schema version 8 use HMAC-SHA256, which phones' CPUs compute in hardware (ARMv8's crypto extension
/// has SHA-256, SHA-512 only from ARMv8.2) as do recent x86 ones (SHA-NI): every page written is
/// authenticated, so this is a cost of every write (BENCHMARKS.md section 12). The tag stays 256 bits.
/// SQLCipher cannot tell from a file which one made it (its header is encrypted too), so a store that
/// does not open with the first is opened with the second: stores made before keep working as they
/// are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageHmac {
    Sha256,
    /// SQLCipher 4's default, stores made before HMAC-SHA256.
    Sha512,
}

impl PageHmac {
    /// In the order a store is tried with.
    const ALL: [PageHmac; 2] = [PageHmac::Sha256, PageHmac::Sha512];

    fn pragma(self) -> &'static str {
        match self {
            PageHmac::Sha256 => "PRAGMA cipher_hmac_algorithm = HMAC_SHA256;",
            PageHmac::Sha512 => "PRAGMA cipher_hmac_algorithm = HMAC_SHA512;",
        }
    }
}

/// Opens `path` and sets its key and page authentication. A failure to set the key is tried again on
/// a new connection (twice, a moment apart) before it is reported: SQLCipher may leave a connection
/// whose codec failed to initialise in an error state, and the failures seen under load were
/// transient.
fn open_keyed(path: &Path, key: &StoreKey, hmac: PageHmac) -> Result<Connection> {
    let mut attempt = 0;
    loop {
        let conn = Connection::open(path)?;
        let result = match key {
            StoreKey::None => Ok(()),
            StoreKey::Raw(bytes) => {
                conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(bytes)))
            }
            StoreKey::Passphrase(p) => conn.pragma_update(None, "key", p),
        }
        .and_then(|()| match key {
            StoreKey::None => Ok(()),
            _ => conn.execute_batch(hmac.pragma()),
        });
        match result {
            Ok(()) => return Ok(conn),
            Err(e) if attempt < 2 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "setting the store key failed; trying again");
                drop(conn);
                std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens the SQLite connection of a store with its key and pragmas, without migrating or reading it.
/// Public for tests and tools that build stores of older schema versions.
#[doc(hidden)]
pub fn open_connection(path: &Path, key: &StoreKey, durability: Durability) -> Result<Connection> {
    open_connection_with(path, key, durability, &PageHmac::ALL)
}

/// A store made before HMAC-SHA256 (SQLCipher's default page authentication), for the tests that
/// such stores still open.
#[doc(hidden)]
pub fn create_sha512_store_file(path: &Path, key: &StoreKey) -> Result<()> {
    let conn = open_connection_with(path, key, Durability::Normal, &[PageHmac::Sha512])?;
    conn.execute_batch("CREATE TABLE made_before_sha256 (x); DROP TABLE made_before_sha256;")?;
    Ok(())
}

fn open_connection_with(
    path: &Path,
    key: &StoreKey,
    durability: Durability,
    hmacs: &[PageHmac],
) -> Result<Connection> {
    sqlcipher_process_init();
    let mut hmacs = hmacs.iter().peekable();
    let conn = loop {
        let hmac = *hmacs.next().expect("at least one page authentication");
        let conn = open_keyed(path, key, hmac)?;
        // The first read fails with NotADatabase on a wrong key, a foreign file, or a store whose
        // pages another HMAC authenticates.
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => break conn,
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
                    && !matches!(key, StoreKey::None)
                    && hmacs.peek().is_some() => {}
            Err(e) => return Err(e.into()),
        }
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Lists sort names the way Chinese readers expect (see `search::sort_key`).
    conn.create_collation("PINYIN", search::compare_names)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Corrupt(format!(
            "cannot switch to WAL (journal mode {mode})"
        )));
    }
    conn.pragma_update(
        None,
        "synchronous",
        if durability == Durability::Full {
            "FULL"
        } else {
            "NORMAL"
        },
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Freed pages and cells are overwritten with zeros: a purged record or a wiped store leaves no
    // readable remains in the file (SQLCipher encrypts pages, but a store may be unencrypted, and keys
    // leak).
    conn.pragma_update(None, "secure_delete", "ON")?;
    // 16 MiB of page cache (SQLite's default is 2 MiB): under SQLCipher every page read from the file is
    // decrypted and authenticated, so a store of 100k records pays for each cache miss twice.
    conn.pragma_update(None, "cache_size", -16_384)?;
    // The WAL is copied into the database file (and both synced) when it reaches 4,000 pages
    // (16 MiB) instead of SQLite's 1,000: a write that triggers it waits for the copy, so a quarter
    // as many of them (BENCHMARKS.md section 10: +14% one-field edits). The WAL file keeps that size.
    conn.pragma_update(None, "wal_autocheckpoint", 4_000)?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) a store. See [`StoreOptions`]. A store that wiped itself is reported as
    /// [`Error::Wiped`].
    pub fn open(options: StoreOptions) -> Result<Store> {
        // Without an identity only an existing store can be opened; do not leave an empty file behind.
        if options.identity.is_none() && !options.path.exists() {
            return Err(Error::NotInitialized);
        }
        let mut conn = open_connection(&options.path, &options.key, options.durability)?;
        schema::migrate(&mut conn)?;
        if let Some(reason) = meta(&conn, META_WIPED)? {
            return Err(Error::Wiped(reason));
        }
        let identity = match (meta(&conn, META_IDENTITY)?, options.identity) {
            (Some(json), given) => {
                let stored: Identity = serde_json::from_str(&json)
                    .map_err(|e| Error::Corrupt(format!("identity: {e}")))?;
                if let Some(given) = given {
                    if given.user_id != stored.user_id {
                        return Err(Error::IdentityMismatch(format!(
                            "store belongs to user {}",
                            stored.user_id
                        )));
                    }
                }
                stored
            }
            (None, Some(given)) => {
                if given.user_id.is_empty()
                    || given.device_id.is_empty()
                    || !doc::is_valid_area_id(&given.area)
                {
                    return Err(Error::InvalidInput(
                        "identity needs a user, a device and a valid area id".into(),
                    ));
                }
                set_meta(
                    &conn,
                    META_IDENTITY,
                    &serde_json::to_string(&given).expect("serialises"),
                )?;
                given
            }
            (None, None) => return Err(Error::NotInitialized),
        };
        let actor = match meta(&conn, META_ACTOR)? {
            Some(hex) => ActorId::from(
                hex::decode(&hex)
                    .map_err(|_| Error::Corrupt("the store's actor is not hex".into()))?,
            ),
            None => {
                // A new store: its own 16 random bytes, so two stores never share an actor even when
                // they were made with the same device id.
                let mut bytes = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut bytes);
                set_meta(&conn, META_ACTOR, &hex::encode(bytes))?;
                ActorId::from(&bytes[..])
            }
        };
        let confirmed = meta(&conn, META_CONFIRMED)?.as_deref() == Some("1");
        let area_paths = load_area_paths(&conn)?;
        let forms = forms::load_forms(&conn)?;
        let forms_version = (!forms.is_empty()).then(|| gridwork_protocol::forms_version(&forms));
        let cache = NonZeroUsize::new(options.doc_cache.max(1)).expect("non-zero");
        let store = Store {
            inner: Mutex::new(Inner {
                conn,
                docs: LruCache::new(cache),
                actor,
                area_paths,
                forms,
                forms_version,
                identity,
                confirmed,
                wiped: None,
            }),
            path: options.path,
            session: Mutex::default(),
        };
        let reproject = meta(&store.lock().conn, "reproject")?;
        if reproject.as_deref() == Some("1") {
            store.rebuild_projection()?;
            store
                .lock()
                .conn
                .execute("DELETE FROM meta WHERE key = 'reproject'", [])?;
        }
        if meta(&store.lock().conn, "renumber")?.as_deref() == Some("1") {
            store.lock().fill_numbers()?;
        }
        Ok(store)
    }

    /// Who works on this device: as given when the store was made, then as the relay says at every
    /// sync (see [`Store::identity_confirmed`]).
    pub fn identity(&self) -> Identity {
        self.lock().identity.clone()
    }

    /// Whether the identity comes from the relay (an `init` from the relay, or a sync since), rather
    /// than from what the store was told when it was made offline.
    pub fn identity_confirmed(&self) -> bool {
        self.lock().confirmed
    }

    /// This store's Automerge actor, as hex: the relay binds the device token to it.
    pub fn actor_hex(&self) -> String {
        self.lock().actor.to_hex_string()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls back),
        // and cached documents are evicted on failed writes, so the state behind a poisoned lock is sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs SQLite's full integrity check; `Ok(())` when the file is sound.
    pub fn check_integrity(&self) -> Result<()> {
        let inner = self.lock();
        let result: String = inner
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(Error::Corrupt(result))
        }
    }

    // ---------------------------------------------------------------- areas and scope

    /// Adds or updates an area of the tree. The parent must be known already.
    pub fn upsert_area(
        &self,
        id: &str,
        parent: Option<&str>,
        level: AreaLevel,
        name: &str,
    ) -> Result<Area> {
        if !doc::is_valid_area_id(id) {
            return Err(Error::InvalidId(id.to_owned()));
        }
        let mut inner = self.lock();
        inner.check_writable()?;
        let (parent_path, parent_level) = match parent {
            None => (String::new(), None),
            Some(p) => {
                let parent_path = inner
                    .area_paths
                    .get(p)
                    .cloned()
                    .ok_or_else(|| Error::UnknownArea(p.to_owned()))?;
                let parent_level: String =
                    inner
                        .conn
                        .query_row("SELECT level FROM areas WHERE id = ?1", [p], |r| r.get(0))?;
                (parent_path, AreaLevel::parse(&parent_level))
            }
        };
        gridwork_protocol::check_placement(level, parent_level).map_err(Error::InvalidInput)?;
        let path = format!("{parent_path}{id}/");
        let tx = inner.conn.transaction()?;
        tx.execute(
            "INSERT INTO areas (id, parent, level, name, path) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET parent = ?2, level = ?3, name = ?4, path = ?5",
            params![id, parent, level.as_str(), name, path],
        )?;
        // The tree is no longer the one the relay sent: the next sync takes the relay's again.
        tx.execute("DELETE FROM meta WHERE key = ?1", [META_AREAS_VERSION])?;
        tx.commit()?;
        inner.area_paths.insert(id.to_owned(), path.clone());
        Ok(Area {
            id: id.into(),
            parent: parent.map(str::to_owned),
            level,
            name: name.into(),
            path,
        })
    }

    /// The area tree, ordered by path.
    pub fn areas(&self) -> Result<Vec<Area>> {
        self.lock().stored_areas()
    }

    pub fn area(&self, id: &str) -> Result<Area> {
        self.areas()?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| Error::UnknownArea(id.to_owned()))
    }

    /// Whether this device's user may see and edit records of `area`.
    pub fn in_scope(&self, area: &str) -> bool {
        self.lock().in_scope(area)
    }

    // ---------------------------------------------------------------- documents

    /// The record as its document says, including tombstoned records.
    pub fn get(&self, id: &str) -> Result<Record> {
        let mut inner = self.lock();
        // The view stored with the projection, written in the same transaction as the document.
        if let Some(record) = projection::stored_view(&inner.conn, id)? {
            return Ok(record);
        }
        let doc = inner.doc(id)?;
        doc::read_record(id, doc)
            .ok_or_else(|| Error::Corrupt(format!("record {id} has no kind or area")))
    }

    /// How many records arrived with a view from the relay that their document, once loaded, did not
    /// read as (each was repaired from its document).
    pub fn view_repairs(&self) -> Result<u64> {
        let v = meta(&self.lock().conn, META_VIEW_REPAIRS)?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Records whose view came from the relay and has not been checked against their document yet.
    pub fn unchecked_views(&self) -> Result<u64> {
        Ok(self.lock().conn.query_row(
            "SELECT count(*) FROM records WHERE checked = 0",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Checks up to `max` records whose view came from the relay against their documents (what the
    /// first load of each does anyway), for an app to run while the device is idle. Returns how many
    /// were checked; a record whose document does not load is left as it is and reported as an error.
    pub fn check_views(&self, max: u32) -> Result<u64> {
        let mut inner = self.lock();
        let ids: Vec<String> = {
            let mut stmt = inner
                .conn
                .prepare("SELECT id FROM records WHERE checked = 0 ORDER BY rid LIMIT ?1 + 0")?;
            let rows = stmt.query_map([max], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for id in &ids {
            // Loading checks; the document is not kept (a long check must not evict the working set).
            if !inner.docs.contains(id) {
                match inner.doc(id) {
                    // Purged: its document put it out of this user's scope.
                    Err(Error::UnknownRecord(_)) => continue,
                    other => other?,
                };
                inner.docs.pop(id);
            }
        }
        Ok(ids.len() as u64)
    }

    /// The record's standard Automerge document bytes, loadable by any Automerge implementation.
    pub fn export_document(&self, id: &str) -> Result<Vec<u8>> {
        let mut inner = self.lock();
        Ok(inner.doc(id)?.save())
    }

    /// Calls `f` with the record view of every record row that `filter` (an SQL condition on
    /// `records`) selects, one at a time: a store of 100,000 records is read without holding them all
    /// (statistics, duplicate candidates). The rows are read in chunks of [`EACH_VIEW_CHUNK`], the
    /// store locked only while a chunk is read (so an edit waits for one chunk, not the whole store);
    /// a record written between two chunks is seen as it was or as it is. Rows without a stored view
    /// (written before views were kept, or whose view does not parse) are read from their documents.
    pub(crate) fn each_view(&self, filter: &str, mut f: impl FnMut(Record)) -> Result<()> {
        let sql = format!(
            "SELECT rid, id, view FROM records WHERE ({filter}) AND rid > ?1
             ORDER BY rid LIMIT ?2 + 0"
        );
        let mut after = i64::MIN;
        loop {
            let chunk: Vec<(i64, String, Option<String>)> = {
                let inner = self.lock();
                let mut stmt = inner.conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![after, EACH_VIEW_CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let Some(last) = chunk.last().map(|row| row.0) else {
                return Ok(());
            };
            after = last;
            for (_, id, view) in chunk {
                match view.and_then(|json| serde_json::from_str::<Record>(&json).ok()) {
                    Some(r) => f(r),
                    None => f(self.get(&id)?),
                }
            }
        }
    }

    /// Re-derives every projection row from the documents.
    pub fn rebuild_projection(&self) -> Result<usize> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let tx = inner.conn.transaction()?;
        let side_tables = projection::SIDE_TABLES.map(|(table, _)| table);
        for table in side_tables.into_iter().chain(["numbers"]) {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
        for kind in Kind::ALL {
            tx.execute(&format!("DELETE FROM {}", kind.table()), [])?;
        }
        tx.execute("DELETE FROM search", [])?;
        // Without the stored view, every projection row is written anew (see `project_deferred`).
        tx.execute("UPDATE records SET search_key = NULL, view = NULL", [])?;
        let rows: Vec<(String, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT id, doc FROM records")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let count = rows.len();
        for (id, bytes) in rows {
            let doc =
                Automerge::load(&bytes).map_err(|e| Error::Corrupt(format!("record {id}: {e}")))?;
            projection::project(&tx, &id, &doc, None)?;
        }
        tx.commit()?;
        inner.docs.clear();
        Ok(count)
    }
}

impl Inner {
    /// Fills the search's number index from the projection tables (a store made before it had one),
    /// in one transaction: no document is read.
    fn fill_numbers(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM numbers", [])?;
        for kind in Kind::ALL {
            for spec in kind
                .fields()
                .iter()
                .filter(|f| kind.is_number_field(f.name))
            {
                let rows: Vec<(i64, String)> = {
                    let mut st = tx.prepare(&format!(
                        "SELECT rid, {c} FROM {t} WHERE {c} IS NOT NULL AND {c} <> ''",
                        c = spec.name,
                        t = kind.table()
                    ))?;
                    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut ins =
                    tx.prepare("INSERT OR IGNORE INTO numbers (number, rid) VALUES (?1, ?2)")?;
                for (rid, value) in rows {
                    if let Some(n) = crate::model::search_number(&value) {
                        ins.execute(rusqlite::params![n, rid])?;
                    }
                }
            }
        }
        tx.execute("DELETE FROM meta WHERE key = 'renumber'", [])?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn area_path(&self, area: &str) -> Option<&str> {
        self.area_paths.get(area).map(String::as_str)
    }

    /// Whether the user's scope covers `area` (the rule book's [`Actor::covers`]).
    ///
    /// [`Actor::covers`]: gridwork_protocol::rules::Actor::covers
    pub(crate) fn in_scope(&self, area: &str) -> bool {
        self.scope()(area)
    }

    /// [`Inner::in_scope`] as a test to run on many areas (the actor is made once).
    pub(crate) fn scope(&self) -> impl Fn(&str) -> bool + '_ {
        let actor = self.rule_actor();
        move |area| actor.covers(&self.area_paths, area)
    }

    /// The stored area tree, ordered by path.
    pub(crate) fn stored_areas(&self) -> Result<Vec<Area>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, parent, level, name, path FROM areas ORDER BY path")?;
        let rows = stmt.query_map([], |r| {
            Ok(Area {
                id: r.get(0)?,
                parent: r.get(1)?,
                level: AreaLevel::parse(&r.get::<_, String>(2)?).unwrap_or(AreaLevel::Grid),
                name: r.get(3)?,
                path: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Refuses writes once the store has wiped itself.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match &self.wiped {
            Some(reason) => Err(Error::Wiped(reason.clone())),
            None => Ok(()),
        }
    }

    /// The note of a change made here: this user on this device, doing `action` to `fields`.
    pub(crate) fn note(&self, action: &str, fields: Vec<String>) -> ChangeNote {
        ChangeNote::new(
            &self.identity.user_id,
            &self.identity.device_id,
            action,
            fields,
        )
        .with_forms(self.forms_version.as_deref())
    }

    /// The loaded document of a record, from the cache or the database.
    /// A record's document, loaded when it is not cached. A row whose projection came from the relay
    /// (`checked = 0`) is checked against the document on this first load: see [`Inner::check_view`].
    pub(crate) fn doc(&mut self, id: &str) -> Result<&mut Automerge> {
        if !self.docs.contains(id) {
            let (bytes, checked): (Vec<u8>, bool) = self
                .conn
                .prepare_cached("SELECT doc, checked FROM records WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| Error::UnknownRecord(id.to_owned()))?;
            let doc = Automerge::load(&bytes)
                .map_err(|e| Error::Corrupt(format!("record {id}: {e}")))?
                .with_actor(self.actor.clone());
            if !checked {
                self.check_view(id, &doc)?;
            }
            self.docs.put(id.to_owned(), doc);
        }
        Ok(self.docs.get_mut(id).expect("just inserted"))
    }

    /// The documents among `ids` whose stored bytes carry appended chunks (see [`Store::mark_pushed`]),
    /// each saved whole. A document that cannot be loaded is left out (its next read reports it).
    pub(crate) fn compacted<'a>(&mut self, ids: &'a [String]) -> Result<Vec<(&'a str, Vec<u8>)>> {
        let mut appended = Vec::new();
        for id in ids {
            let head: Option<(i64, Vec<u8>)> = self
                .conn
                .prepare_cached(
                    "SELECT length(doc), substr(doc, 1, 20) FROM records WHERE id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if head.is_some_and(|(len, prefix)| {
                usize::try_from(len).is_ok_and(|len| projection::has_appended(&prefix, len))
            }) {
                appended.push(id.as_str());
            }
        }
        let mut saved = Vec::with_capacity(appended.len());
        for id in appended {
            match self.doc(id) {
                Ok(doc) => saved.push((id, doc.save())),
                Err(e) => tracing::warn!(record = %id, error = %e, "could not compact a document"),
            }
        }
        Ok(saved)
    }

    /// Compares the projection the relay sent for a record with the record as its document reads,
    /// the first time the device loads that document. The document is the truth: the row is rewritten
    /// from it (which also compacts the change chunks appended since the relay's snapshot), and a
    /// view that differed is counted in `meta` (`view_repairs`, see [`Store::view_repairs`]) and logged
    /// by record id. A record whose document puts it outside this user's scope (a view that lied about
    /// its area) is purged, and is then unknown here.
    fn check_view(&mut self, id: &str, doc: &Automerge) -> Result<()> {
        let truth = doc::read_record(id, doc)
            .ok_or_else(|| Error::Corrupt(format!("record {id} has no kind or area")))?;
        let sent = projection::stored_view(&self.conn, id).ok().flatten();
        let sp = self.conn.savepoint()?;
        if sent.as_ref() != Some(&truth) {
            tracing::warn!(record = %id, "the relay's view of a record differs from its document; repaired from the document");
            sp.execute(
                "INSERT INTO meta (key, value) VALUES (?1, '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                [META_VIEW_REPAIRS],
            )?;
        }
        projection::project_record(&sp, &truth, &doc.save(), true)?;
        sp.commit()?;
        let seen = self.rule_actor().sees(&self.area_paths, &truth);
        if !seen && self.purge_out_of_scope(Some(&[id.to_owned()]))? > 0 {
            return Err(Error::UnknownRecord(id.to_owned()));
        }
        Ok(())
    }

    /// Removes a document from the cache for editing, loading it if needed; None if the record is new.
    pub(crate) fn take_doc(&mut self, id: &str) -> Result<Option<Automerge>> {
        match self.doc(id) {
            Ok(_) => Ok(self.docs.pop(id)),
            Err(Error::UnknownRecord(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn forget_doc(&mut self, id: &str) {
        self.docs.pop(id);
    }

    pub(crate) fn new_doc(&self) -> Automerge {
        Automerge::new().with_actor(self.actor.clone())
    }

    pub(crate) fn cache_doc(&mut self, id: &str, doc: Automerge) {
        self.docs.put(id.to_owned(), doc);
    }

    /// Applies `edit` to a record's document as one Automerge change, has the rule book judge the
    /// record before (`before`, read by the caller's checks) and after it, and persists it: the document,
    /// the change in the outbox and the projection, in one SQLite transaction. A refused change is rolled
    /// back before it is committed; on a failure to store, the cached document is dropped, so memory never
    /// holds an edit that the file does not.
    pub(crate) fn write<T>(
        &mut self,
        id: &str,
        before: &RecordState,
        note: ChangeNote,
        edit: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.check_writable()?;
        let message = serde_json::to_string(&note).expect("note serialises");
        let actor = self.rule_actor();
        self.doc(id)?;
        let doc = self.docs.get_mut(id).expect("loaded above");
        let book = rulebook::Book {
            actor,
            areas: &self.area_paths,
            forms: &self.forms,
        };
        let (result, after) = match rulebook::judged_change(doc, id, &book, before, message, edit)?
        {
            Judged::Unchanged(result) => return Ok(result),
            Judged::Committed(result, after) => (result, after),
            Judged::Refused(refusal) => return Err(Error::refused(id, refusal)),
        };
        match self.persist_local_change(id, &after.record) {
            Ok(()) => Ok(result),
            Err(e) => {
                self.forget_doc(id);
                Err(e)
            }
        }
    }

    /// Stores the cached document of `id` (whose view is `record`) and queues its last local change.
    pub(crate) fn persist_local_change(&mut self, id: &str, record: &Record) -> Result<()> {
        let doc = self
            .docs
            .peek(id)
            .ok_or_else(|| Error::UnknownRecord(id.to_owned()))?;
        let tx = self.conn.transaction()?;
        let mut search = projection::SearchWrites::default();
        queue_local_change(&tx, id, doc, record, &mut search)?;
        search.flush(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

/// Queues the last local change of `doc` and writes its record and projection rows (from `record`, the
/// document's view), inside the caller's transaction (the one-transaction-per-write path is
/// `Inner::persist_local_change`).
pub(crate) fn queue_local_change(
    tx: &Connection,
    id: &str,
    doc: &Automerge,
    record: &Record,
    search: &mut projection::SearchWrites,
) -> Result<()> {
    let change = doc
        .get_last_local_change()
        .ok_or_else(|| Error::UnknownRecord(id.to_owned()))?;
    let bytes = projection::DocBytes::Append {
        chunks: change.raw_bytes(),
        doc,
    };
    queue_change(tx, id, &change, bytes, record, search)
}

/// Queues `change` of record `id` and writes the record with `doc` (its document) and its
/// projection rows (from `record`, the document's view), inside the caller's transaction.
pub(crate) fn queue_change(
    tx: &Connection,
    id: &str,
    change: &automerge::Change,
    doc: projection::DocBytes<'_>,
    record: &Record,
    search: &mut projection::SearchWrites,
) -> Result<()> {
    tx.prepare_cached("INSERT INTO outbox (record_id, hash, bytes) VALUES (?1, ?2, ?3)")?
        .execute(params![id, &change.hash().0[..], change.raw_bytes()])?;
    projection::project_deferred(tx, record, doc, true, search)?;
    Ok(())
}

/// Rows read at a time by [`Store::each_view`].
const EACH_VIEW_CHUNK: i64 = 1_000;

/// A `meta` value.
pub(crate) fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?
    .execute([key, value])?;
    Ok(())
}

/// Area id -> path of every stored area.
fn load_area_paths(conn: &Connection) -> Result<HashMap<String, String>> {
    let mut stmt = conn.prepare("SELECT id, path FROM areas")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
