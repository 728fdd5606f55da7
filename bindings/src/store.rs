//! [`GridworkStore`]: the device store as one FFI object. Each method is a blocking call into
//! `gridwork_core::Store`; arguments and results are converted at the edge, nothing else happens here.
use crate::error::{GridworkError, Result};
use crate::sync::{run_sync, SyncConfig, SyncHandle, SyncObserver};
use crate::types::{summaries, ListQuery, NewRecord, Page, Record, RecordSummary, Update};
use gridwork_core::sync::{CancelToken, SyncReport};
use gridwork_core::{
    Area, AreaLevel, AttachmentRef, Conflict, DiscardReport, EventAction, EventStatus, GeoPoint,
    HistoryEntry, Identity, IdentityClaims, Kind, LinkEdge, LinkType, QuarantinedChange,
    ReviewState, Role, Store, StoreKey, StoreOptions,
};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The encrypted device store of one user on one device.
#[derive(uniffi::Object)]
pub struct GridworkStore {
    // Shared with a background sync thread (`start_sync`).
    pub(crate) store: Arc<Store>,
    pub(crate) syncing: Arc<AtomicBool>,
}

/// Where the last sync got to.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// The relay log position this device has pulled up to.
    pub cursor: u64,
    /// When it last synced, seconds since the epoch.
    pub last_sync: Option<i64>,
}

/// The 32-byte key the platform keystore hands in.
fn raw_key(key: Vec<u8>) -> Result<StoreKey> {
    let key: [u8; 32] = key
        .try_into()
        .map_err(|k: Vec<u8>| GridworkError::InvalidInput {
            reason: format!("the store key must be 32 bytes, got {}", k.len()),
        })?;
    Ok(StoreKey::Raw(key))
}

impl GridworkStore {
    fn wrap(store: Store) -> Arc<Self> {
        Arc::new(GridworkStore {
            store: Arc::new(store),
            syncing: Arc::new(AtomicBool::new(false)),
        })
    }
}

#[uniffi::export]
impl GridworkStore {
    /// Opens (or creates) the store at `path`, encrypted with `key`: 32 random bytes kept by the
    /// platform keystore (Android Keystore, iOS Keychain). The identity is fixed when the store is
    /// created and must match when it is opened again.
    ///
    /// The identity given here is a starting point for working offline: at every sync the relay's
    /// answer for the token replaces the device id, role and area (a token of another user is
    /// refused). `create_from_relay` makes a store from the relay's answer instead.
    #[uniffi::constructor]
    pub fn open(
        path: String,
        key: Vec<u8>,
        user_id: String,
        device_id: String,
        role: Role,
        area: String,
    ) -> Result<Arc<Self>> {
        let options = StoreOptions::new(path, raw_key(key)?).identity(Identity {
            user_id,
            device_id,
            role,
            area,
        });
        Ok(Self::wrap(Store::open(options)?))
    }

    /// Opens a store that exists (made by `open` or `create_from_relay`). A store that wiped itself
    /// throws `Wiped`.
    #[uniffi::constructor]
    pub fn open_existing(path: String, key: Vec<u8>) -> Result<Arc<Self>> {
        Ok(Self::wrap(Store::open(StoreOptions::new(
            path,
            raw_key(key)?,
        ))?))
    }

    /// Creates a store whose user, device, role, area and area tree come from the relay's answer for
    /// the token in `config`, and binds the token to it. Each claim given (user, role, area, device)
    /// must agree with the relay (else `InvalidInput`); a token already bound to another store throws
    /// `DeviceInUse`. Blocking: call it from a background thread.
    #[uniffi::constructor(default(user_id = None, role = None, area = None, device_id = None))]
    pub fn create_from_relay(
        path: String,
        key: Vec<u8>,
        config: SyncConfig,
        user_id: Option<String>,
        role: Option<Role>,
        area: Option<String>,
        device_id: Option<String>,
    ) -> Result<Arc<Self>> {
        let claims = IdentityClaims {
            user_id,
            device_id,
            role,
            area,
        };
        let options = StoreOptions::new(path, raw_key(key)?);
        Ok(Self::wrap(Store::create_from_relay(
            options,
            &(&config).into(),
            &claims,
        )?))
    }

    pub fn identity(&self) -> Identity {
        self.store.identity()
    }

    /// Whether the identity comes from the relay (a sync since the store was made offline, or
    /// `create_from_relay`), rather than from what `open` was told.
    pub fn identity_confirmed(&self) -> bool {
        self.store.identity_confirmed()
    }

    /// Deletes every record, change, attachment and sync state of this store and leaves it `Wiped`
    /// (e.g. on logout). The sync does it by itself when the relay says the device was revoked.
    pub fn wipe(&self) -> Result<()> {
        Ok(self.store.wipe("requested")?)
    }

    /// Runs SQLite's full integrity check; throws `Corrupt` when the file is damaged.
    pub fn check_integrity(&self) -> Result<()> {
        Ok(self.store.check_integrity()?)
    }

    // ------------------------------------------------------------------------------- areas

    /// Adds or updates an area; the parent must be known already. Sync fills the tree from the relay.
    pub fn upsert_area(
        &self,
        id: String,
        parent: Option<String>,
        level: AreaLevel,
        name: String,
    ) -> Result<Area> {
        Ok(self
            .store
            .upsert_area(&id, parent.as_deref(), level, &name)?)
    }

    pub fn areas(&self) -> Result<Vec<Area>> {
        Ok(self.store.areas()?)
    }

    pub fn area(&self, id: String) -> Result<Area> {
        Ok(self.store.area(&id)?)
    }

    /// Whether this user may see and edit records of `area`.
    pub fn in_scope(&self, area: String) -> bool {
        self.store.in_scope(&area)
    }

    // ----------------------------------------------------------------------------- records

    /// Creates a record and returns its id.
    pub fn create(&self, record: NewRecord) -> Result<String> {
        Ok(self.store.create(record.into())?)
    }

    /// The record as its document says, including tombstoned records.
    pub fn get(&self, id: String) -> Result<Record> {
        Ok(self.store.get(&id)?.into())
    }

    /// Edits fields, attributes, tags and notes as one change.
    pub fn update(&self, id: String, update: Update) -> Result<()> {
        Ok(self.store.update(&id, update.into())?)
    }

    /// Tombstones a record: it stays in history and syncs as deleted.
    pub fn delete(&self, id: String, reason: Option<String>) -> Result<()> {
        Ok(self.store.delete(&id, reason.as_deref())?)
    }

    pub fn restore(&self, id: String) -> Result<()> {
        Ok(self.store.restore(&id)?)
    }

    /// Moves a record to another home area; both must be in the user's scope.
    pub fn move_record(&self, id: String, area: String) -> Result<()> {
        Ok(self.store.move_record(&id, &area)?)
    }

    pub fn link(&self, source: String, link_type: LinkType, target: String) -> Result<()> {
        Ok(self.store.link(&source, link_type, &target)?)
    }

    pub fn unlink(&self, source: String, link_type: LinkType, target: String) -> Result<()> {
        Ok(self.store.unlink(&source, link_type, &target)?)
    }

    /// Links that start or end at a record.
    pub fn links_of(&self, id: String) -> Result<Vec<LinkEdge>> {
        Ok(self.store.links_of(&id)?)
    }

    /// Lists records of one kind, ordered by title, one page at a time.
    pub fn list(&self, query: ListQuery) -> Result<Page> {
        Ok(self.store.list(&query.into())?.into())
    }

    /// Full-text search (Chinese and Latin text) over every kind, or one.
    pub fn search(
        &self,
        text: String,
        kind: Option<Kind>,
        limit: u32,
    ) -> Result<Vec<RecordSummary>> {
        Ok(summaries(self.store.search(&text, kind, limit)?))
    }

    /// The record's standard Automerge document bytes.
    pub fn export_document(&self, id: String) -> Result<Vec<u8>> {
        Ok(self.store.export_document(&id)?)
    }

    /// One entry per change: who, on which device, when, what.
    pub fn history(&self, id: String) -> Result<Vec<HistoryEntry>> {
        Ok(self.store.history(&id)?)
    }

    // ------------------------------------------------------------------------------ events

    /// Moves an event through its lifecycle and returns the new status.
    pub fn transition(
        &self,
        event_id: String,
        action: EventAction,
        comment: Option<String>,
    ) -> Result<EventStatus> {
        Ok(self
            .store
            .transition(&event_id, action, comment.as_deref())?)
    }

    /// Open events past their due time, most overdue first.
    pub fn overdue_events(&self, limit: u32) -> Result<Vec<RecordSummary>> {
        Ok(summaries(self.store.overdue_events(limit)?))
    }

    /// Open events assigned to this user.
    pub fn assigned_to_me(&self, limit: u32) -> Result<Vec<RecordSummary>> {
        Ok(summaries(self.store.assigned_to_me(limit)?))
    }

    // ------------------------------------------------------------------------------ visits

    /// Starts a visit now and returns its id.
    pub fn start_visit(
        &self,
        area: String,
        purpose: String,
        location: Option<GeoPoint>,
    ) -> Result<String> {
        Ok(self.store.start_visit(&area, &purpose, location)?)
    }

    pub fn add_visited(&self, visit_id: String, record_id: String) -> Result<()> {
        Ok(self.store.add_visited(&visit_id, &record_id)?)
    }

    /// Records a checklist answer; the empty answer removes it.
    pub fn answer_checklist(
        &self,
        visit_id: String,
        question: String,
        answer: String,
    ) -> Result<()> {
        Ok(self.store.answer_checklist(&visit_id, &question, &answer)?)
    }

    /// Stores the bytes (a photo, a document) inside the encrypted store and attaches them to the
    /// visit. The same bytes attached twice are kept once.
    pub fn attach_to_visit(
        &self,
        visit_id: String,
        name: String,
        mime: String,
        bytes: Vec<u8>,
    ) -> Result<AttachmentRef> {
        let attachment = self.store.add_attachment(&visit_id, &name, &mime, &bytes)?;
        self.store.attach_to_visit(&visit_id, &attachment)?;
        Ok(attachment)
    }

    /// The bytes of an attachment, if they are on this device (see `fetch_attachment`).
    pub fn attachment(&self, sha256: String) -> Result<Option<Vec<u8>>> {
        Ok(self.store.attachment(&sha256)?)
    }

    /// Finishes a visit now, optionally with notes. Only its worker can, once.
    pub fn finish_visit(&self, visit_id: String, notes: Option<String>) -> Result<()> {
        Ok(self.store.finish_visit(&visit_id, notes.as_deref())?)
    }

    /// Approves or returns (with a comment) a visit: supervisors only.
    pub fn review_visit(
        &self,
        visit_id: String,
        state: ReviewState,
        comment: Option<String>,
    ) -> Result<()> {
        Ok(self
            .store
            .review_visit(&visit_id, state, comment.as_deref())?)
    }

    /// Finished visits waiting for review in this user's scope.
    pub fn review_queue(&self, limit: u32) -> Result<Vec<RecordSummary>> {
        Ok(summaries(self.store.review_queue(limit)?))
    }

    /// Moves a place and the people living there to `area`, all of it or none of it; lists the links
    /// that now cross areas.
    pub fn move_household(
        &self,
        place_id: String,
        area: String,
    ) -> Result<gridwork_core::HouseholdMove> {
        Ok(self.store.move_household(&place_id, &area)?)
    }

    /// Records on this device that may be the same person, place or organisation as `record`
    /// (same ID number, same name with the same birth date or home, same name at the same address;
    /// names also compared by pinyin): ask before registering, or warn after.
    pub fn duplicate_candidates(
        &self,
        record: NewRecord,
    ) -> Result<Vec<crate::types::DuplicateCandidate>> {
        Ok(self
            .store
            .duplicate_candidates(&record.into())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The open duplicate candidates on this device (both records in `area`'s subtree when given):
    /// for the supervisor's "possible duplicates" list.
    pub fn duplicates(&self, area: Option<String>) -> Result<Vec<crate::types::DuplicatePair>> {
        Ok(self
            .store
            .duplicates(area.as_deref())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Merges `away` into `kept` (a supervisor of the area or the grid's own worker): gaps filled,
    /// differing values left as conflicts (see `conflicts`, `merged_from`), links moved, `away` a
    /// tombstone that names `kept`.
    pub fn merge_records(&self, kept: String, away: String) -> Result<gridwork_core::MergeReport> {
        Ok(self.store.merge_records(&kept, &away)?)
    }

    /// Records that `a` and `b` are not duplicates: the pair is not listed again, on any device.
    pub fn mark_not_duplicate(&self, a: String, b: String) -> Result<()> {
        Ok(self.store.mark_not_duplicate(&a, &b)?)
    }

    // ------------------------------------------------------------------- statistics

    /// Statistics of an area and period over this device's records: the numbers the relay gives for
    /// the same data.
    pub fn statistics(
        &self,
        query: gridwork_core::stats::StatsQuery,
    ) -> Result<crate::types::Stats> {
        Ok(self.store.statistics(&query)?.into())
    }

    // ------------------------------------------------------------------- exports

    /// A kind's records in scope as a file (CSV with BOM, XLSX or GeoJSON) an app can save and share.
    pub fn export_records(
        &self,
        query: gridwork_core::ExportQuery,
        format: gridwork_core::ExportFormat,
    ) -> Result<Vec<u8>> {
        Ok(self.store.export_records(&query, format)?)
    }

    // ------------------------------------------------------------------- follow-ups

    /// What reached this user and is not marked seen (show it after each sync): events assigned or
    /// handed down to them, their visits returned, follow-ups due today or overdue on their calendar
    /// day (`utc_offset_minutes`, 480 in China).
    pub fn new_for_me(&self, utc_offset_minutes: i32) -> Result<Vec<gridwork_core::NewForMe>> {
        Ok(self.store.new_for_me(None, utc_offset_minutes)?)
    }

    /// Marks items of `new_for_me` (by their keys) seen; they do not come back.
    pub fn mark_new_for_me_seen(&self, keys: Vec<String>) -> Result<()> {
        Ok(self.store.mark_new_for_me_seen(&keys)?)
    }

    /// The follow-up schedules this device has from the relay (they arrive at sync).
    pub fn schedules(&self) -> Result<Vec<gridwork_core::Schedule>> {
        Ok(self.store.schedules()?)
    }

    /// The fields of the city form for a record of `kind` in `area` (forms arrive at sync): draw the
    /// form from them; values go into the record's attributes by key.
    pub fn form_fields(&self, kind: Kind, area: String) -> Result<Vec<gridwork_core::FormField>> {
        Ok(self.store.form_fields(kind, &area)?)
    }

    /// A record's attributes read against its form, old values that no longer fit flagged.
    pub fn record_form(&self, id: String) -> Result<Vec<gridwork_core::FieldValue>> {
        Ok(self.store.record_form(&id)?)
    }

    /// What the schedules make due in this user's scope, overdue first: for the "due today", "this
    /// week" and "overdue" lists of a worker or of one grid.
    pub fn followups(
        &self,
        query: gridwork_core::FollowupQuery,
    ) -> Result<Vec<gridwork_core::Followup>> {
        Ok(self.store.followups(&query)?)
    }

    // ------------------------------------------------------------------- merge and conflicts

    /// Every unresolved conflict in the store.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        Ok(self.store.conflicts()?)
    }

    pub fn conflict(&self, id: String, field: String) -> Result<Conflict> {
        Ok(self.store.conflict(&id, &field)?)
    }

    /// Settles a conflicted field on `value`; the resolution is itself a synced edit.
    pub fn resolve_conflict(&self, id: String, field: String, value: String) -> Result<()> {
        Ok(self.store.resolve_conflict(&id, &field, &value)?)
    }

    /// Local changes not yet accepted by the relay.
    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self.store.outbox_len()?)
    }

    /// Records stored from the relay's view at sync whose documents have not been loaded (and the view
    /// checked against them) yet.
    pub fn unchecked_views(&self) -> Result<u64> {
        Ok(self.store.unchecked_views()?)
    }

    /// Checks up to `max` such records against their documents (for an app to call while idle);
    /// returns how many were checked. A view that differed is repaired and counted.
    pub fn check_views(&self, max: u32) -> Result<u64> {
        Ok(self.store.check_views(max)?)
    }

    /// How many records the relay sent a view of that their document did not read as.
    pub fn view_repairs(&self) -> Result<u64> {
        Ok(self.store.view_repairs()?)
    }

    /// Local changes the relay refused (with its reason, detail and a message for the user), and
    /// chunks from the relay that could not be applied.
    pub fn quarantined(&self) -> Result<Vec<QuarantinedChange>> {
        Ok(self.store.quarantined()?)
    }

    /// Discards a quarantined change: its record returns to the relay's version and the later edits
    /// the rules still allow are made again (queued for the next sync); the report lists what was
    /// dropped.
    pub fn discard_quarantined(&self, hash: String) -> Result<DiscardReport> {
        Ok(self.store.discard_quarantined(&hash)?)
    }

    // -------------------------------------------------------------------------------- sync

    /// Syncs now, blocking the calling thread until done. A second sync of the same store while one
    /// runs is refused with `InvalidInput`.
    pub fn sync(
        &self,
        config: SyncConfig,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<SyncReport> {
        run_sync(
            &self.store,
            &self.syncing,
            &config,
            observer,
            &CancelToken::new(),
        )
    }

    /// Starts a sync on a background thread and returns its handle (cancel, wait).
    pub fn start_sync(
        &self,
        config: SyncConfig,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Arc<SyncHandle>> {
        SyncHandle::spawn(
            Arc::clone(&self.store),
            Arc::clone(&self.syncing),
            config,
            observer,
        )
    }

    pub fn sync_status(&self) -> Result<SyncStatus> {
        let (cursor, last_sync) = self.store.sync_status()?;
        Ok(SyncStatus { cursor, last_sync })
    }

    /// Downloads an attachment on demand (checked against its hash) and keeps it.
    pub fn fetch_attachment(
        &self,
        config: SyncConfig,
        record_id: String,
        sha256: String,
    ) -> Result<Vec<u8>> {
        Ok(self
            .store
            .fetch_attachment(&(&config).into(), &record_id, &sha256)?)
    }
}
