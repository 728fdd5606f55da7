//! Storage: one [`Store`] over two backends with the same behaviour, embedded SQLite and PostgreSQL.
//!
//! The logic is written once, as async code over traits of SQL primitives that each backend
//! implements (SQLite synchronously, on a pooled connection off the async runtime; PostgreSQL over
//! the network):
//! - `writer`: every push goes through one writer per process that groups concurrent pushes into one
//!   transaction (group commit), retries a failed batch push by push, and keeps the document cache in
//!   step with commits; all protocol decisions are made by [`crate::engine::Engine`];
//! - `reads`: pull and snapshot pages, bounded in items and bytes while they are read;
//! - `uploads`: the resumable attachment upload state machine;
//! - `admin`: the operator's changes of the area tree, users and devices.
//!
//! `sqlite` and `postgres` hold the SQL, their files or connections, and their migrations; the
//! conformance suite (`tests/conformance.rs`) runs every test against both.

mod admin;
pub mod console;
mod pg_tls;
pub mod postgres;
mod reads;
mod sql;
pub mod sqlite;
mod uploads;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Limits, StorageConfig};
use crate::engine::{doc_at, PushJob, PushResult, KIND_MOVE, KIND_RELEASE};
use crate::error::{Error, Result};
pub use admin::{Defined, Definition};
use gridwork_protocol::scope::{split_paths, Scope};
use gridwork_protocol::{AreaLevel, Form, Role, Schedule};

/// The device behind a bearer token: everything the relay knows about the caller comes from here.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    pub device_id: String,
    pub user_id: String,
    pub user_name: String,
    pub role: Role,
    pub area: String,
    pub area_path: String,
    pub revoked: bool,
    /// The user is disabled by an operator.
    pub disabled: bool,
    /// The Automerge actor (hex) of the store the token is bound to.
    pub actor: Option<String>,
    pub last_sync_at: Option<i64>,
}

impl DeviceAuth {
    pub fn scope(&self) -> Scope {
        Scope {
            role: self.role,
            prefix: self.area_path.clone(),
        }
    }

    /// The caller as the rule book sees it.
    pub fn actor(&self) -> gridwork_protocol::rules::Actor {
        gridwork_protocol::rules::Actor {
            user: self.user_id.clone(),
            device: self.device_id.clone(),
            role: self.role,
            area_path: self.area_path.clone(),
        }
    }
}

/// What binding a store's actor to a device token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// The token was unbound and is now bound to this actor, or was bound to it already.
    Bound,
    /// The token is bound to another store.
    Taken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaRow {
    pub id: String,
    pub parent: Option<String>,
    pub level: AreaLevel,
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub area: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub role: Role,
    pub area: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_sync_at: Option<i64>,
    /// The token is bound to a store (its actor is known); `device reset` unbinds it.
    pub bound: bool,
}

/// A log entry as stored.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub seq: i64,
    pub record: String,
    pub bytes: Vec<u8>,
    pub kind: i16,
    pub before_paths: Option<String>,
    pub heads: Option<Vec<u8>>,
    /// Pushed by the calling device.
    pub own: bool,
    /// For entries other than plain changes: the size of the record's stored document (what a
    /// whole-document delivery weighs).
    pub doc_len: Option<i64>,
    /// The record's view when this entry is the record's latest (its `version`).
    pub view: Option<String>,
}

impl RawEntry {
    /// Does this caller get the whole document instead of the change? (moved into its scope, or
    /// released held changes in logs written by older relays).
    pub fn needs_doc(&self, scope: &Scope) -> bool {
        match self.kind {
            KIND_RELEASE => true,
            KIND_MOVE => {
                let before = split_paths(self.before_paths.as_deref().unwrap_or(""));
                !scope.allows_any(&before)
            }
            _ => false,
        }
    }

    /// The bytes this entry adds to a caller's page (counted by backends while reading, so a page's
    /// memory stays bounded).
    pub fn page_bytes(&self, scope: &Scope) -> usize {
        let view = self.view.as_ref().map_or(0, String::len);
        view + match self.doc_len {
            Some(n) if self.needs_doc(scope) => usize::try_from(n).unwrap_or(usize::MAX),
            _ => self.bytes.len(),
        }
    }
}

/// How much one pull or snapshot page may carry. A page always carries at least one item, so a
/// caller always makes progress, whatever the size of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    pub items: usize,
    pub bytes: usize,
}

/// The rows a backend reads for a page: it stops reading after `items + 1` rows (the extra one says
/// there is more) or once the rows read weigh more than `bytes`, so a page never holds much more than
/// its limit in memory.
#[derive(Debug)]
pub struct PageRows<T> {
    limit: PageLimit,
    bytes: usize,
    pub rows: Vec<T>,
    /// The backend read every row there was (it did not stop on the limit).
    pub complete: bool,
}

impl<T> PageRows<T> {
    pub fn new(limit: PageLimit) -> Self {
        PageRows {
            limit,
            bytes: 0,
            rows: Vec::new(),
            complete: true,
        }
    }

    /// Adds a row of `size` bytes; `false` when reading should stop after it.
    pub fn push(&mut self, row: T, size: usize) -> bool {
        self.rows.push(row);
        self.bytes = self.bytes.saturating_add(size);
        self.complete = self.rows.len() <= self.limit.items && self.bytes <= self.limit.bytes;
        self.complete
    }
}

/// What a backend returns for a pull: the entries read (see [`PageRows`]), whether they are all
/// the visible entries up to `head`, the log head when the read began, and the stored documents of the
/// records whose entries need whole-document delivery.
#[derive(Debug, Default)]
pub struct RawPull {
    pub head: i64,
    pub entries: Vec<RawEntry>,
    /// The backend read every visible entry up to `head` (it did not stop on the page limit).
    pub complete: bool,
    pub docs: HashMap<String, Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct PullItem {
    pub seq: i64,
    pub record: String,
    pub bytes: Vec<u8>,
    /// The record's view after this item, on its latest entry only.
    pub view: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PullPage {
    pub items: Vec<PullItem>,
    pub cursor: i64,
    pub more: bool,
}

#[derive(Debug, Clone)]
pub struct SnapshotPage {
    pub cursor: i64,
    pub records: Vec<SnapshotRow>,
    pub next: Option<String>,
}

/// A record of a snapshot page: its id, stored document and view (absent for rows stored before the
/// relay kept views).
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub id: String,
    pub doc: Vec<u8>,
    pub view: Option<String>,
}

impl SnapshotRow {
    pub fn weight(&self) -> usize {
        self.doc.len() + self.view.as_ref().map_or(0, String::len)
    }
}

/// Most open upload sessions per device. Starting another drops the device's least recently used one
/// (an honest device uploads one attachment at a time; older sessions are abandoned uploads), so a
/// device can never hold more than this many partial attachments on the relay.
pub const MAX_UPLOADS_PER_DEVICE: usize = 4;
/// Uploads are stored, hashed and downloaded in pieces of at most this many bytes.
pub const PIECE_BYTES: usize = gridwork_protocol::limits::ATTACHMENT_CHUNK_BYTES;

/// A device's upload in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    pub received: u64,
    pub total: u64,
}

/// Where a chunk of `total` bytes starting at `start` lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// The device's session expects exactly this chunk: send its bytes.
    Ready,
    /// The record already has this attachment, complete: nothing to store (a repeated upload).
    AlreadyLinked { size: u64 },
    /// The chunk does not start where the device's session is.
    WrongOffset { offset: u64 },
    /// The device's session was started with another total size.
    WrongTotal { total: u64 },
}

/// Outcome of appending one piece to a device's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    Stored {
        received: u64,
    },
    /// The session moved on, or was dropped, meanwhile (a concurrent request of the same device).
    WrongOffset {
        offset: u64,
    },
}

/// Outcome of finishing a device's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Verified, stored (or found stored already) and linked.
    Complete { size: u64 },
    /// The content does not hash to its name: the session was discarded.
    HashMismatch,
    /// The session is not full (or no longer exists): bytes from `received` on are missing.
    Incomplete { received: u64 },
}

/// A stored piece of a complete attachment: its row key and length. Rows written by this relay are at
/// most [`PIECE_BYTES`]; older relays stored one row per attachment, read in ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub offset: i64,
    pub len: u64,
}

/// A user as operators see it: no personal data beyond the display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub area: String,
    pub disabled: bool,
    /// Devices not revoked.
    pub devices: u64,
}

/// Changes to a user; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub area: Option<String>,
}

/// What moving an area changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaMoved {
    /// The area and its descendants.
    pub areas: u64,
    /// Records whose area paths were rewritten.
    pub records: u64,
}

#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<sqlite::SqliteStore>),
    Postgres(Arc<postgres::PgStore>),
}

/// Runs blocking SQLite work off the async runtime, at most one task per pooled connection.
async fn blocking<T: Send + 'static>(
    s: &Arc<sqlite::SqliteStore>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let permit = s
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| Error::Unavailable(e.to_string()))?
}

macro_rules! dispatch {
    ($self:ident, $s:ident => sqlite $sq:expr, pg $pg:expr) => {
        match $self {
            Store::Sqlite(s) => {
                let $s = s.clone();
                blocking(s, move || $sq).await
            }
            Store::Postgres($s) => $pg.await,
        }
    };
}

/// Runs shared logic (written once, async, over the backend's SQL primitives) on a connection of the
/// store: on a pooled SQLite connection off the async runtime, or on a PostgreSQL one.
macro_rules! logic {
    ($self:ident, $sql:ident => $logic:expr) => {
        match $self {
            Store::Sqlite(s) => {
                let st = s.clone();
                blocking(s, move || {
                    st.with(|c| {
                        let mut $sql = sqlite::SqliteSql::new(c);
                        sql::ready($logic)
                    })
                })
                .await
            }
            Store::Postgres(s) => {
                let mut $sql = s.sql();
                $logic.await
            }
        }
    };
}

impl Store {
    /// Opens (creating and migrating as needed) the configured storage.
    pub async fn open(config: &StorageConfig, limits: &Limits) -> Result<Store> {
        match config {
            StorageConfig::Sqlite {
                data_dir,
                encryption,
            } => {
                let dir = data_dir.clone();
                let limits = limits.clone();
                let enc = encryption.clone();
                let s = tokio::task::spawn_blocking(move || {
                    sqlite::SqliteStore::open(&dir, &enc, &limits)
                })
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))??;
                Ok(Store::Sqlite(Arc::new(s)))
            }
            StorageConfig::Postgres { url } => Ok(Store::Postgres(Arc::new(
                postgres::PgStore::open(url, limits).await?,
            ))),
        }
    }

    pub async fn auth(&self, token_hash: [u8; 32]) -> Result<Option<DeviceAuth>> {
        dispatch!(self, s => sqlite s.auth(&token_hash), pg s.auth(&token_hash))
    }

    /// Binds a device token to the store presenting `actor` (hex), unless another store has it.
    pub async fn bind_actor(&self, device_id: &str, actor: &str) -> Result<Bind> {
        let (d, a) = (device_id.to_owned(), actor.to_owned());
        dispatch!(self, s => sqlite s.bind_actor(&d, &a), pg s.bind_actor(device_id, actor))
    }

    /// Records a device's last sync time with the writer's next transaction (reads never write).
    pub async fn touch_device(&self, device_id: &str, now: i64) -> Result<()> {
        self.writer().touch(device_id, now);
        Ok(())
    }

    fn writer(&self) -> &writer::Writer {
        match self {
            Store::Sqlite(s) => &s.writer,
            Store::Postgres(s) => &s.writer,
        }
    }

    /// Areas the caller can see (its subtree) and their ancestors.
    pub async fn areas_for(&self, scope: &Scope) -> Result<Vec<AreaRow>> {
        let all = self.list_areas().await?;
        if scope.is_operator() {
            return Ok(all);
        }
        Ok(all
            .into_iter()
            .filter(|a| a.path.starts_with(&scope.prefix) || scope.prefix.starts_with(&a.path))
            .collect())
    }

    // ------------------------------------------------------------------ the web console

    /// Sets a user's console password hash (argon2id, PHC format).
    pub async fn put_web_account(&self, user: &str, hash: &str) -> Result<()> {
        let (u, h, now) = (user.to_owned(), hash.to_owned(), now_secs());
        logic!(self, sql => console::put_account(&mut sql, &u, &h, now))
    }

    /// A user's console password hash, if the user has a web account.
    pub async fn web_account(&self, user: &str) -> Result<Option<String>> {
        let u = user.to_owned();
        logic!(self, sql => console::account(&mut sql, &u))
    }

    /// Removes a web account and its sessions; whether there was one.
    pub async fn remove_web_account(&self, user: &str) -> Result<bool> {
        let u = user.to_owned();
        logic!(self, sql => console::remove_account(&mut sql, &u))
    }

    /// Opens a console session (expired ones are dropped on the way).
    pub async fn insert_web_session(
        &self,
        token_hash: [u8; 32],
        user: &str,
        csrf: &str,
        expires: i64,
    ) -> Result<()> {
        let (u, c, now) = (user.to_owned(), csrf.to_owned(), now_secs());
        logic!(self, sql => console::insert_session(&mut sql, &token_hash, &u, &c, now, expires))
    }

    /// A live console session, with its user as they are now.
    pub async fn web_session(&self, token_hash: [u8; 32]) -> Result<Option<console::WebSession>> {
        let now = now_secs();
        logic!(self, sql => console::session(&mut sql, &token_hash, now))
    }

    pub async fn delete_web_session(&self, token_hash: [u8; 32]) -> Result<()> {
        logic!(self, sql => console::delete_session(&mut sql, &token_hash))
    }

    /// Sets an area's boundary (a GeoJSON MultiPolygon, checked by the caller).
    pub async fn put_area_shape(&self, area: &str, geojson: &str) -> Result<()> {
        let (a, g) = (area.to_owned(), geojson.to_owned());
        logic!(self, sql => console::put_shape(&mut sql, &a, &g))
    }

    /// Every area boundary: (area, GeoJSON MultiPolygon).
    pub async fn area_shapes(&self) -> Result<Vec<(String, String)>> {
        logic!(self, sql => console::shapes(&mut sql))
    }

    /// Appends a console action to the audit trail.
    pub async fn audit(&self, row: console::AuditRow) -> Result<()> {
        logic!(self, sql => console::audit(&mut sql, &row))
    }

    /// The latest console actions, newest first.
    pub async fn audit_trail(&self, limit: i64) -> Result<Vec<console::AuditRow>> {
        logic!(self, sql => console::audit_trail(&mut sql, limit))
    }

    /// Every follow-up schedule, by id.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.definitions(Defined::Schedule).await
    }

    /// Every city form, by id.
    pub async fn list_forms(&self) -> Result<Vec<Form>> {
        self.definitions(Defined::Form).await
    }

    async fn definitions<T: serde::de::DeserializeOwned>(&self, what: Defined) -> Result<Vec<T>> {
        let defs = dispatch!(self, s => sqlite s.definitions(what), pg s.definitions(what))?;
        parse_definitions(what, &defs)
    }

    /// Defines a follow-up schedule or a city form, or replaces the one with its id.
    pub async fn put_definition(&self, def: Definition) -> Result<()> {
        logic!(self, sql => admin::put_definition(&mut sql, &def))
    }

    /// Removes a follow-up schedule or a city form (`NotFound` when there is none).
    pub async fn remove_definition(&self, what: Defined, id: &str) -> Result<()> {
        let id = id.to_owned();
        logic!(self, sql => admin::remove_definition(&mut sql, what, &id))
    }

    pub async fn list_areas(&self) -> Result<Vec<AreaRow>> {
        dispatch!(self, s => sqlite s.list_areas(), pg s.list_areas())
    }

    /// The version of the area tree: bumped by every change of it, in the same transaction.
    pub async fn areas_version(&self) -> Result<i64> {
        dispatch!(self, s => sqlite s.areas_version(), pg s.areas_version())
    }

    /// Push: the answer is sent only after the batch holding this push has committed.
    pub async fn push(&self, job: PushJob) -> Result<Vec<PushResult>> {
        self.writer().push(job).await
    }

    /// A page of the log for `device` (whose own plain changes are left out: it has them).
    pub async fn pull(
        &self,
        scope: &Scope,
        device: &str,
        after: i64,
        limit: PageLimit,
    ) -> Result<PullPage> {
        let sc = scope.clone();
        let dev = device.to_owned();
        let raw = logic!(self, sql => reads::pull(&mut sql, &sc, &dev, after, limit))?;
        if raw.docs.is_empty() {
            return Ok(finish_pull(raw, scope, after, limit));
        }
        let scope = scope.clone();
        // Rebuilding documents is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || finish_pull(raw, &scope, after, limit))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    pub async fn snapshot(
        &self,
        scope: &Scope,
        after_record: Option<String>,
        limit: PageLimit,
    ) -> Result<SnapshotPage> {
        let sc = scope.clone();
        let ar = after_record.clone();
        logic!(self, sql => reads::snapshot(&mut sql, &sc, ar.as_deref(), limit))
    }

    /// Folds `f` over every record visible to `scope`, one at a time, as the record views devices keep
    /// (statistics, duplicate candidates, exports): a city's records are never all held at once.
    pub async fn fold_scope_records<A, F>(&self, scope: &Scope, init: A, f: F) -> Result<A>
    where
        A: Send + 'static,
        F: FnMut(&mut A, gridwork_protocol::model::Record) + Send + 'static,
    {
        let sc = scope.clone();
        logic!(self, sql => reads::fold_scope_records(&mut sql, &sc, init, f))
    }

    /// Current area paths of a record, `None` when the relay has never seen it.
    pub async fn record_paths(&self, record: &str) -> Result<Option<Vec<String>>> {
        let r = record.to_owned();
        dispatch!(self, s => sqlite s.record_paths(&r), pg s.record_paths(&r))
    }

    /// The calling device's upload of `sha`, if it has one.
    pub async fn upload_state(&self, device: &str, sha: [u8; 32]) -> Result<Option<Upload>> {
        let d = device.to_owned();
        logic!(self, sql => uploads::state(&mut sql, &d, &sha))
    }

    /// Opens or checks the device's session for a chunk `start..` of an attachment of `total` bytes
    /// for `record`. A new session must start at 0; it may drop the device's oldest session (see
    /// [`MAX_UPLOADS_PER_DEVICE`]).
    pub async fn upload_begin(
        &self,
        device: &str,
        sha: [u8; 32],
        record: &str,
        start: u64,
        total: u64,
    ) -> Result<Begin> {
        let (d, r) = (device.to_owned(), record.to_owned());
        let now = now_millis();
        logic!(self, sql => uploads::begin(&mut sql, &d, &sha, &r, start, total, now))
    }

    /// Appends one piece (at most [`PIECE_BYTES`]) at `offset` of the device's session.
    pub async fn upload_append(
        &self,
        device: &str,
        sha: [u8; 32],
        offset: u64,
        data: axum::body::Bytes,
    ) -> Result<Append> {
        let d = device.to_owned();
        let now = now_millis();
        logic!(self, sql => uploads::append(&mut sql, &d, &sha, offset, &data, now))
    }

    /// Finishes a full session: hashes it piece by piece; on a match stores the content (unless some
    /// device stored it already) and links it to the session's record and to `record`; on a mismatch
    /// discards the session.
    pub async fn upload_finish(&self, device: &str, sha: [u8; 32], record: &str) -> Result<Finish> {
        let (d, r) = (device.to_owned(), record.to_owned());
        logic!(self, sql => uploads::finish(&mut sql, &d, &sha, &r))
    }

    /// Links a complete attachment to another record (see `HEAD /v1/attachments/<sha>?record=`);
    /// `false` when there is no complete attachment. The caller checks who may do so.
    pub async fn attachment_link(&self, sha: [u8; 32], record: &str) -> Result<bool> {
        let r = record.to_owned();
        dispatch!(self, s => sqlite s.attachment_link(&sha, &r), pg s.attachment_link(&sha, record))
    }

    /// Size of a complete attachment.
    pub async fn attachment_size(&self, sha: [u8; 32]) -> Result<Option<u64>> {
        dispatch!(self, s => sqlite s.attachment_size(&sha), pg s.attachment_size(&sha))
    }

    /// Area paths of the records an attachment is linked to (empty when none is known to the relay).
    pub async fn attachment_paths(&self, sha: [u8; 32]) -> Result<Vec<String>> {
        dispatch!(self, s => sqlite s.attachment_paths(&sha), pg s.attachment_paths(&sha))
    }

    /// The stored pieces of a complete attachment, in order.
    pub async fn attachment_pieces(&self, sha: [u8; 32]) -> Result<Vec<Piece>> {
        dispatch!(self, s => sqlite s.attachment_pieces(&sha), pg s.attachment_pieces(&sha))
    }

    /// `len` bytes from `from` within one stored piece.
    pub async fn attachment_read(
        &self,
        sha: [u8; 32],
        piece: Piece,
        from: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        dispatch!(self, s => sqlite s.attachment_read(&sha, piece, from, len),
            pg s.attachment_read(&sha, piece, from, len))
    }

    pub async fn add_area(&self, area: AreaRowInput) -> Result<AreaRow> {
        logic!(self, sql => admin::add_area(&mut sql, &area))
    }

    pub async fn add_user(&self, user: UserRow) -> Result<()> {
        logic!(self, sql => admin::add_user(&mut sql, &user))
    }

    pub async fn add_device(
        &self,
        device_id: &str,
        user_id: &str,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<()> {
        let (d, u) = (device_id.to_owned(), user_id.to_owned());
        logic!(self, sql => admin::add_device(&mut sql, &d, &u, &token_hash, now))
    }

    /// Revokes a device; `false` when it does not exist.
    pub async fn revoke_device(&self, device_id: &str, now: i64) -> Result<bool> {
        let d = device_id.to_owned();
        dispatch!(self, s => sqlite s.revoke_device(&d, now), pg s.revoke_device(&d, now))
    }

    /// Devices, all or one user's.
    pub async fn list_devices(&self, user: Option<&str>) -> Result<Vec<DeviceInfo>> {
        let u = user.map(str::to_owned);
        dispatch!(self, s => sqlite s.list_devices(u.as_deref()), pg s.list_devices(user))
    }

    /// Unbinds a device token from its store (`false` when the device does not exist).
    pub async fn reset_device(&self, device_id: &str) -> Result<bool> {
        let d = device_id.to_owned();
        dispatch!(self, s => sqlite s.reset_device(&d), pg s.reset_device(device_id))
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        dispatch!(self, s => sqlite s.list_users(), pg s.list_users())
    }

    /// Does the user exist?
    pub async fn user_exists(&self, id: &str) -> Result<bool> {
        let u = id.to_owned();
        dispatch!(self, s => sqlite s.user_exists(&u), pg s.user_exists(id))
    }

    /// Applies `changes` to a user (`NotFound` for an unknown user, `Invalid` for an unknown area).
    pub async fn update_user(&self, id: &str, changes: &UserChanges) -> Result<()> {
        let (u, c) = (id.to_owned(), changes.clone());
        logic!(self, sql => admin::update_user(&mut sql, &u, &c))
    }

    /// Disables (`Some(time)`) or re-enables (`None`) a user; `false` when the user does not exist.
    pub async fn set_user_disabled(&self, id: &str, at: Option<i64>) -> Result<bool> {
        let u = id.to_owned();
        dispatch!(self, s => sqlite s.set_user_disabled(&u, at), pg s.set_user_disabled(id, at))
    }

    /// Renames an area; `false` when it does not exist.
    pub async fn rename_area(&self, id: &str, name: &str) -> Result<bool> {
        let (a, n) = (id.to_owned(), name.to_owned());
        logic!(self, sql => admin::rename_area(&mut sql, &a, &n))
    }

    /// Moves an area (and its subtree) under another parent. See [`plan_area_move`].
    pub async fn move_area(&self, id: &str, parent: &str) -> Result<AreaMoved> {
        let (a, p) = (id.to_owned(), parent.to_owned());
        logic!(self, sql => admin::move_area(&mut sql, &a, &p))
    }

    /// Removes an area that has no child areas, no users and no records.
    pub async fn remove_area(&self, id: &str) -> Result<()> {
        let a = id.to_owned();
        logic!(self, sql => admin::remove_area(&mut sql, &a))
    }

    /// Whether the database connections are encrypted in transit: `Some` for PostgreSQL (from the
    /// server's `pg_stat_ssl`), `None` for the embedded store (no connection to protect).
    pub async fn transport_encrypted(&self) -> Result<Option<bool>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.transport_encrypted().await.map(Some),
        }
    }

    /// Stops the writer after the pushes already queued; further pushes fail with `Unavailable`.
    pub async fn close(&self) {
        self.writer().close().await;
        if let Store::Postgres(s) = self {
            s.close_pool();
        }
    }
}

/// Input of `add_area`: the path is derived from the parent.
#[derive(Debug, Clone)]
pub struct AreaRowInput {
    pub id: String,
    pub parent: Option<String>,
    pub level: AreaLevel,
    pub name: String,
}

/// Derives the path of a new area and checks the tree rule (the same rule a device applies:
/// `gridwork_protocol::check_placement`).
pub fn child_path(input: &AreaRowInput, parent: Option<(AreaLevel, String)>) -> Result<String> {
    if !gridwork_protocol::doc::is_valid_area_id(&input.id) {
        return Err(Error::Invalid(
            "area id must be 1-64 of [A-Za-z0-9_-]".into(),
        ));
    }
    if input.name.trim().is_empty() {
        return Err(Error::Invalid("area name must not be empty".into()));
    }
    match (&input.parent, parent) {
        (None, _) => {
            gridwork_protocol::check_placement(input.level, None).map_err(Error::Invalid)?;
            Ok(format!("{}/", input.id))
        }
        (Some(p), None) => Err(Error::Invalid(format!("parent area {p} does not exist"))),
        (Some(_), Some((plevel, ppath))) => {
            gridwork_protocol::check_placement(input.level, Some(plevel))
                .map_err(Error::Invalid)?;
            Ok(format!("{ppath}{}/", input.id))
        }
    }
}

/// What hashing a device's session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digested {
    /// Every byte is there; the SHA-256 of the content.
    Full { total: u64, digest: [u8; 32] },
    /// Not full (or no session: `received` 0).
    Partial { received: u64 },
}

/// Checks an area move against the tree rule and returns the area's old and new paths.
///
/// The rule is the device's (`gridwork_protocol::check_placement`): a street goes under a district, a
/// community under a street, a grid under a community; an area never goes under itself or its own
/// subtree.
pub fn plan_area_move(areas: &[AreaRow], id: &str, parent: &str) -> Result<(String, String)> {
    let find = |x: &str| areas.iter().find(|a| a.id == x);
    let area = find(id).ok_or_else(|| Error::NotFound(format!("area {id}")))?;
    let new_parent = find(parent)
        .ok_or_else(|| Error::Invalid(format!("parent area {parent} does not exist")))?;
    if new_parent.path.starts_with(&area.path) {
        return Err(Error::Invalid(format!(
            "area {id} cannot move under {parent}: that is inside {id} itself"
        )));
    }
    gridwork_protocol::check_placement(area.level, Some(new_parent.level))
        .map_err(Error::Invalid)?;
    Ok((
        area.path.clone(),
        format!("{}{}/", new_parent.path, area.id),
    ))
}

/// A record's area paths after its areas under `old` moved to `new` (sorted, like the engine keeps them).
pub fn moved_paths(paths: &[String], old: &str, new: &str) -> Vec<String> {
    let mut out: Vec<String> = paths
        .iter()
        .map(|p| match p.strip_prefix(old) {
            Some(rest) => format!("{new}{rest}"),
            None => p.clone(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The smallest string above every string that starts with `prefix` (which ends with `/`): keys under
/// a path are the index range `[prefix, prefix_end(prefix))`.
pub fn prefix_end(prefix: &str) -> String {
    // '/' + 1 == '0'.
    match prefix.strip_suffix('/') {
        Some(p) => format!("{p}0"),
        None => format!("{prefix}\u{10FFFF}"),
    }
}

/// What an area still holds; it can be removed only when all are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaContents {
    pub children: i64,
    pub users: i64,
    pub records: i64,
    pub schedules: i64,
    pub forms: i64,
}

impl AreaContents {
    pub fn check_empty(&self, id: &str) -> Result<()> {
        if self.children == 0
            && self.users == 0
            && self.records == 0
            && self.schedules == 0
            && self.forms == 0
        {
            return Ok(());
        }
        Err(Error::NotEmpty(format!(
            "area {id} holds {} child area(s), {} user(s), {} record(s), {} schedule(s) and {} form(s); move or remove them first",
            self.children, self.users, self.records, self.schedules, self.forms
        )))
    }
}

/// A user's display name must say something; ids follow the device-id rule.
pub fn check_display_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "display name must be 1-200 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// Turns a backend's raw page into the answer: entries in order while the page has room (by count
/// and by bytes, at least one item); `cursor` is the highest seq examined.
fn finish_pull(raw: RawPull, scope: &Scope, after: i64, limit: PageLimit) -> PullPage {
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let mut examined = None;
    let mut full = false;
    for (i, e) in raw.entries.into_iter().enumerate() {
        if i == limit.items {
            full = true;
            break;
        }
        let needs_doc = e.needs_doc(scope);
        // The caller's own changes are already on the device, unless it needs the whole document.
        if e.own && !needs_doc {
            examined = Some(e.seq);
            continue;
        }
        let item_bytes = match raw.docs.get(&e.record) {
            Some(stored) if needs_doc => doc_at(stored, e.heads.as_deref()),
            _ => e.bytes,
        };
        if !items.is_empty() && bytes.saturating_add(item_bytes.len()) > limit.bytes {
            full = true;
            break;
        }
        bytes += item_bytes.len();
        examined = Some(e.seq);
        items.push(PullItem {
            seq: e.seq,
            record: e.record,
            bytes: item_bytes,
            view: e.view,
        });
    }
    let more = full || !raw.complete;
    let cursor = if more {
        examined.unwrap_or(after)
    } else {
        raw.head.max(after)
    };
    PullPage {
        items,
        cursor,
        more,
    }
}

/// Sets a file's or directory's mode (0600 / 0700: the relay's data is its user's alone). A no-op off Unix.
pub fn set_private(path: &std::path::Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Milliseconds since the epoch: orders a device's upload sessions by last use.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns the rows a backend read for a snapshot page into the page: records in order while the page
/// has room (by count and by bytes, at least one record).
fn finish_snapshot(head: i64, read: PageRows<SnapshotRow>, limit: PageLimit) -> SnapshotPage {
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut full = false;
    for (i, row) in read.rows.into_iter().enumerate() {
        let weight = row.weight();
        if i == limit.items || (!records.is_empty() && bytes.saturating_add(weight) > limit.bytes) {
            full = true;
            break;
        }
        bytes += weight;
        records.push(row);
    }
    let next = if full || !read.complete {
        records.last().map(|r: &SnapshotRow| r.id.clone())
    } else {
        None
    };
    SnapshotPage {
        cursor: head,
        records,
        next,
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}

/// Reads stored definitions (schedules or forms) back; one that does not read means the database was
/// changed behind the relay's back.
pub(crate) fn parse_definitions<T: serde::de::DeserializeOwned>(
    what: Defined,
    defs: &[String],
) -> Result<Vec<T>> {
    defs.iter()
        .map(|d| {
            serde_json::from_str(d).map_err(|e| {
                Error::Unavailable(format!("a stored {} does not read: {e}", what.name()))
            })
        })
        .collect()
}
