//! Storage: one [`Store`] over two backends with the same behaviour, embedded SQLite and PostgreSQL.
//!
//! Pushes go through one writer per process that groups concurrent pushes into one transaction (group
//! commit); all protocol decisions are made by [`crate::engine::Engine`]. Reads run concurrently.

pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Limits, StorageConfig};
use crate::engine::{doc_at, PushJob, PushResult, KIND_MOVE, KIND_RELEASE};
use crate::error::{Error, Result};
use gridwork_protocol::scope::{split_paths, Scope};
use gridwork_protocol::{AreaLevel, Role};

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
        match self.doc_len {
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
    pub records: Vec<(String, Vec<u8>)>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentState {
    Unknown,
    Partial { received: u64, total: u64 },
    Complete { size: u64 },
}

/// Outcome of storing one attachment chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored {
        received: u64,
        total: u64,
        complete: bool,
    },
    /// The chunk does not start at the current offset.
    WrongOffset { offset: u64 },
    /// The declared total differs from the upload in progress.
    WrongTotal { total: u64 },
    /// The last byte arrived and the content does not hash to the name: the upload was discarded.
    HashMismatch,
}

/// One attachment chunk to store.
#[derive(Debug, Clone)]
pub struct PutChunk {
    pub sha256: [u8; 32],
    pub record: String,
    pub start: u64,
    pub total: u64,
    pub data: axum::body::Bytes,
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

impl Store {
    /// Opens (creating and migrating as needed) the configured storage.
    pub async fn open(config: &StorageConfig, limits: &Limits) -> Result<Store> {
        match config {
            StorageConfig::Sqlite { data_dir } => {
                let dir = data_dir.clone();
                let limits = limits.clone();
                let s =
                    tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&dir, &limits))
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

    pub async fn touch_device(&self, device_id: &str, now: i64) -> Result<()> {
        let id = device_id.to_owned();
        dispatch!(self, s => sqlite s.touch_device(&id, now), pg s.touch_device(&id, now))
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

    pub async fn list_areas(&self) -> Result<Vec<AreaRow>> {
        dispatch!(self, s => sqlite s.list_areas(), pg s.list_areas())
    }

    /// Push: the answer is sent only after the batch holding this push has committed.
    pub async fn push(&self, job: PushJob) -> Result<Vec<PushResult>> {
        match self {
            Store::Sqlite(s) => s.push(job).await,
            Store::Postgres(s) => s.push(job).await,
        }
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
        let raw = dispatch!(self, s => sqlite s.pull(&sc, &dev, after, limit),
            pg s.pull(&sc, device, after, limit))?;
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
        dispatch!(self, s => sqlite s.snapshot(&sc, ar.as_deref(), limit),
            pg s.snapshot(&sc, after_record.as_deref(), limit))
    }

    /// Current area paths of a record, `None` when the relay has never seen it.
    pub async fn record_paths(&self, record: &str) -> Result<Option<Vec<String>>> {
        let r = record.to_owned();
        dispatch!(self, s => sqlite s.record_paths(&r), pg s.record_paths(&r))
    }

    pub async fn attachment_state(&self, sha: [u8; 32]) -> Result<AttachmentState> {
        dispatch!(self, s => sqlite s.attachment_state(&sha), pg s.attachment_state(&sha))
    }

    pub async fn attachment_put(&self, chunk: PutChunk) -> Result<PutOutcome> {
        dispatch!(self, s => sqlite s.attachment_put(&chunk), pg s.attachment_put(&chunk))
    }

    /// Records an attachment is linked to.
    pub async fn attachment_records(&self, sha: [u8; 32]) -> Result<Vec<String>> {
        dispatch!(self, s => sqlite s.attachment_records(&sha), pg s.attachment_records(&sha))
    }

    /// The bytes of a complete attachment.
    pub async fn attachment_read(&self, sha: [u8; 32]) -> Result<Option<Vec<u8>>> {
        dispatch!(self, s => sqlite s.attachment_read(&sha), pg s.attachment_read(&sha))
    }

    pub async fn add_area(&self, area: AreaRowInput) -> Result<AreaRow> {
        dispatch!(self, s => sqlite s.add_area(&area), pg s.add_area(&area))
    }

    pub async fn add_user(&self, user: UserRow) -> Result<()> {
        dispatch!(self, s => sqlite s.add_user(&user), pg s.add_user(&user))
    }

    pub async fn add_device(
        &self,
        device_id: &str,
        user_id: &str,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<()> {
        let (d, u) = (device_id.to_owned(), user_id.to_owned());
        dispatch!(self, s => sqlite s.add_device(&d, &u, &token_hash, now),
            pg s.add_device(&d, &u, &token_hash, now))
    }

    /// Revokes a device; `false` when it does not exist.
    pub async fn revoke_device(&self, device_id: &str, now: i64) -> Result<bool> {
        let d = device_id.to_owned();
        dispatch!(self, s => sqlite s.revoke_device(&d, now), pg s.revoke_device(&d, now))
    }

    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        dispatch!(self, s => sqlite s.list_devices(), pg s.list_devices())
    }

    /// Stops the writer after the pushes already queued; further pushes fail with `Unavailable`.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                let _ = tokio::task::spawn_blocking(move || s.close()).await;
            }
            Store::Postgres(s) => s.close().await,
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

/// Turns the rows a backend read for a snapshot page into the page: records in order while the page
/// has room (by count and by bytes, at least one record).
fn finish_snapshot(head: i64, read: PageRows<(String, Vec<u8>)>, limit: PageLimit) -> SnapshotPage {
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut full = false;
    for (i, (id, doc)) in read.rows.into_iter().enumerate() {
        if i == limit.items
            || (!records.is_empty() && bytes.saturating_add(doc.len()) > limit.bytes)
        {
            full = true;
            break;
        }
        bytes += doc.len();
        records.push((id, doc));
    }
    let next = if full || !read.complete {
        records.last().map(|r| r.0.clone())
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
