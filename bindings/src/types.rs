//! Records and enums that cross the FFI.
//!
//! Core types whose fields uniffi can carry as they are (plain enums, small structs) are declared here
//! with `#[uniffi::remote]`: the compiler checks the mirror against the core definition, so a field
//! added in the core fails this build instead of drifting. Types with `BTreeMap` fields, generics or
//! builder-style options are mirrored as FFI records with `From` conversions.
use gridwork_core as core;
use gridwork_core::stats::{EventCounts, ScheduleCoverage, StatsQuery};
use gridwork_core::{
    Area, AreaLevel, AttachmentRef, Conflict, ConflictValue, DiscardReport, DroppedEdit, DueState,
    DuplicateReason, EventAction, EventStatus, Every, ExportFormat, ExportQuery, FieldChange,
    Followup, FollowupQuery, GeoPoint, HistoryEntry, HouseholdMove, Identity, Kind, Link, LinkEdge,
    LinkType, MergeReport, NewForMe, NewForMeKind, QuarantineOrigin, QuarantinedChange,
    ReviewState, Role, Schedule, TimelineEntry,
};
use gridwork_core::{FieldValue, FormField, FormType, ValueState};
use std::collections::{BTreeMap, HashMap};

// ------------------------------------------------------------------------------------ enums

#[uniffi::remote(Enum)]
pub enum Kind {
    Person,
    Place,
    Object,
    Organisation,
    Event,
    Visit,
}

#[uniffi::remote(Enum)]
pub enum Role {
    Worker,
    Supervisor,
    Operator,
}

#[uniffi::remote(Enum)]
pub enum AreaLevel {
    District,
    Street,
    Community,
    Grid,
}

#[uniffi::remote(Enum)]
pub enum LinkType {
    LivesAt,
    MemberOf,
    LocatedAt,
    InvolvedIn,
    Owns,
}

#[uniffi::remote(Enum)]
pub enum EventStatus {
    Reported,
    Assigned,
    InProgress,
    Resolved,
    Verified,
    Closed,
    Returned,
    Reopened,
}

#[uniffi::remote(Enum)]
pub enum EventAction {
    Assign { assignee: String },
    Start,
    Resolve,
    Verify,
    Close,
    Return,
    Reopen,
    Escalate,
    HandDown { area: String },
    Comment,
}

#[uniffi::remote(Enum)]
pub enum ReviewState {
    Pending,
    Approved,
    Returned,
}

/// Where a follow-up stands on the caller's calendar day.
#[uniffi::remote(Enum)]
pub enum DueState {
    Overdue,
    Today,
    ThisWeek,
    Later,
}

/// Why a record may be the same as one being registered.
#[uniffi::remote(Enum)]
pub enum DuplicateReason {
    SameIdNumber,
    SameNameAndBirthDate,
    SameNameAndHome,
    SameNameAndAddress,
    SameNameAndPlace,
    SameNameAndPhone,
}

/// A record on this device that may be the same person, place or organisation as one being
/// registered (its ID number masked, as lists show it).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DuplicateCandidate {
    pub record: RecordSummary,
    pub reasons: Vec<DuplicateReason>,
}

impl From<gridwork_core::DuplicateCandidate> for DuplicateCandidate {
    fn from(c: gridwork_core::DuplicateCandidate) -> Self {
        DuplicateCandidate {
            record: c.record.into(),
            reasons: c.reasons,
        }
    }
}

/// Two records on the device that may be one (ID numbers masked), and why.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DuplicatePair {
    pub kind: Kind,
    pub a: RecordSummary,
    pub b: RecordSummary,
    pub reasons: Vec<DuplicateReason>,
}

impl From<gridwork_core::DuplicatePairSummary> for DuplicatePair {
    fn from(p: gridwork_core::DuplicatePairSummary) -> Self {
        DuplicatePair {
            kind: p.kind,
            a: p.a.into(),
            b: p.b.into(),
            reasons: p.reasons,
        }
    }
}

/// What merging two records did: values filled from the merged-away record, values that differ (now
/// conflicts to resolve on the kept record), records whose links moved to the kept one and records
/// whose links still name the merged-away one (not this user's to edit).
#[uniffi::remote(Record)]
pub struct MergeReport {
    pub kept: String,
    pub merged_away: String,
    pub filled: Vec<String>,
    pub conflicts: Vec<String>,
    pub repointed: Vec<String>,
    pub not_repointed: Vec<String>,
}

/// What moving a household did: the place then its residents, and the links that now cross areas.
#[uniffi::remote(Record)]
pub struct HouseholdMove {
    pub moved: Vec<String>,
    pub crossing_links: Vec<LinkEdge>,
}

/// The file format of an export.
#[uniffi::remote(Enum)]
pub enum ExportFormat {
    Csv,
    Xlsx,
    GeoJson,
}

/// Why an item is in the "new for me" list.
#[uniffi::remote(Enum)]
pub enum NewForMeKind {
    Assigned,
    HandedDown,
    VisitReturned,
    FollowupDue,
    DuplicateFound,
}

/// The type of a city form field's value (see `FormField`): how an app draws the input and what the
/// value must look like (`choices`: options joined by `;` in their order; `yes_no`: `yes` or `no`;
/// `date`: YYYY-MM-DD).
#[uniffi::remote(Enum)]
pub enum FormType {
    Text,
    Number,
    Date,
    Choice,
    Choices,
    YesNo,
    Phone,
    IdNumber,
}

/// How a stored attribute stands against the record's form now: valid, outdated (entered under an
/// earlier definition; kept and readable), missing (required, empty), or not in any form.
#[uniffi::remote(Enum)]
pub enum ValueState {
    Valid,
    Outdated,
    Missing,
    NotInForm,
}

/// One field of a city form: the attribute `key`, labels in Chinese and English, the type, whether
/// it is required, the options of a choice, help texts.
#[uniffi::remote(Record)]
pub struct FormField {
    pub key: String,
    pub label_zh: String,
    pub label_en: String,
    pub ty: FormType,
    pub required: bool,
    pub options: Vec<String>,
    pub help_zh: Option<String>,
    pub help_en: Option<String>,
}

/// One attribute of a record read against its form: the field (absent for an attribute no form
/// defines), the value and its state.
#[uniffi::remote(Record)]
pub struct FieldValue {
    pub key: String,
    pub field: Option<FormField>,
    pub value: Option<String>,
    pub state: ValueState,
}

/// How often a schedule's records are due a visit: every n days, or every n calendar months.
#[uniffi::remote(Enum)]
pub enum Every {
    Days(u32),
    Months(u32),
}

// ------------------------------------------------------------------- records carried as they are

/// One item of the "new for me" list: what, which record, when, by whom, with which comment; `key`
/// names it for `mark_new_for_me_seen`.
#[uniffi::remote(Record)]
pub struct NewForMe {
    pub what: NewForMeKind,
    pub record_id: String,
    pub kind: Kind,
    pub title: String,
    pub at: Option<String>,
    pub by: Option<String>,
    pub comment: Option<String>,
    pub key: String,
}

/// What to export: a kind, optionally an area's subtree, a tag, and for visits and events a period
/// (`from` inclusive, `until` exclusive, seconds since the epoch); ID numbers in full only for
/// supervisors and operators who ask.
#[uniffi::remote(Record)]
pub struct ExportQuery {
    pub kind: Kind,
    pub area: Option<String>,
    pub tag: Option<String>,
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub unmasked: bool,
}

/// What statistics count: an area's subtree (else all on the device), a period (`from` inclusive,
/// `until` exclusive, seconds since the epoch) and the moment `at` (default now) that open, overdue
/// and up to date are judged at.
#[uniffi::remote(Record)]
pub struct StatsQuery {
    pub area: Option<String>,
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub at: Option<i64>,
}

#[uniffi::remote(Record)]
pub struct EventCounts {
    pub reported: u64,
    pub open: u64,
    pub overdue: u64,
    pub closed: u64,
}

#[uniffi::remote(Record)]
pub struct ScheduleCoverage {
    pub schedule_id: String,
    pub name: String,
    pub records: u64,
    pub up_to_date: u64,
    pub share: f64,
}

/// Statistics of an area and period, the same numbers the relay gives (`GET /v1/stats`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Stats {
    pub query: StatsQuery,
    pub records_per_kind: HashMap<String, u64>,
    pub visits_per_worker: HashMap<String, u64>,
    pub events_by_category: HashMap<String, EventCounts>,
    pub escalations_per_level: HashMap<String, u64>,
    pub median_close_secs: Option<i64>,
    pub coverage: Vec<ScheduleCoverage>,
    pub duplicates_open: u64,
}

impl From<gridwork_core::stats::Stats> for Stats {
    fn from(s: gridwork_core::stats::Stats) -> Self {
        Stats {
            query: s.query,
            records_per_kind: s.records_per_kind.into_iter().collect(),
            visits_per_worker: s.visits_per_worker.into_iter().collect(),
            events_by_category: s.events_by_category.into_iter().collect(),
            escalations_per_level: s.escalations_per_level.into_iter().collect(),
            median_close_secs: s.median_close_secs,
            coverage: s.coverage,
            duplicates_open: s.duplicates_open,
        }
    }
}

/// A follow-up schedule an operator defined on the relay for an area's subtree.
#[uniffi::remote(Record)]
pub struct Schedule {
    pub id: String,
    pub area: String,
    pub name: String,
    pub kind: Kind,
    pub tag: Option<String>,
    pub category: Option<String>,
    pub every: Every,
}

/// Which follow-ups to list: an area's subtree, some states (all when empty), the moment to judge at
/// (now when absent), the caller's offset from UTC in minutes (480 in China) for "today", and
/// optionally one worker's (their grid's follow-ups).
#[uniffi::remote(Record)]
pub struct FollowupQuery {
    pub area: Option<String>,
    pub states: Vec<DueState>,
    pub now: Option<i64>,
    pub utc_offset_minutes: i32,
    #[uniffi(default = None)]
    pub worker: Option<String>,
}

/// One record due a visit under one schedule; `due_at` is absent for a record never visited (due
/// now). Times are ISO-8601 UTC.
#[uniffi::remote(Record)]
pub struct Followup {
    pub schedule_id: String,
    pub schedule_name: String,
    pub record_id: String,
    pub kind: Kind,
    pub title: String,
    pub area: String,
    pub last_visit: Option<String>,
    pub due_at: Option<String>,
    pub state: DueState,
    pub workers: Vec<String>,
}

#[uniffi::remote(Record)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
    pub role: Role,
    pub area: String,
}

#[uniffi::remote(Record)]
pub struct Area {
    pub id: String,
    pub parent: Option<String>,
    pub level: AreaLevel,
    pub name: String,
    pub path: String,
}

#[uniffi::remote(Record)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    pub accuracy: f64,
}

#[uniffi::remote(Record)]
pub struct Link {
    pub link_type: LinkType,
    pub target: String,
}

#[uniffi::remote(Record)]
pub struct LinkEdge {
    pub source: String,
    pub link_type: LinkType,
    pub target: String,
}

#[uniffi::remote(Record)]
pub struct TimelineEntry {
    pub at: String,
    pub by: String,
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub comment: Option<String>,
}

#[uniffi::remote(Record)]
pub struct AttachmentRef {
    pub sha256: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
}

#[uniffi::remote(Record)]
pub struct HistoryEntry {
    pub hash: String,
    pub device: String,
    pub user: String,
    pub time: i64,
    pub action: String,
    pub fields: Vec<String>,
    pub changes: Vec<FieldChange>,
}

/// One value a change set, replaced or removed (absent: not set).
#[uniffi::remote(Record)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[uniffi::remote(Record)]
pub struct ConflictValue {
    pub value: String,
    pub user: String,
    pub device: String,
    pub time: i64,
    pub winner: bool,
    pub merged_from: Option<String>,
}

#[uniffi::remote(Record)]
pub struct Conflict {
    pub record_id: String,
    pub kind: Kind,
    pub field: String,
    pub values: Vec<ConflictValue>,
}

#[uniffi::remote(Enum)]
pub enum QuarantineOrigin {
    Refused,
    Received,
}

#[uniffi::remote(Record)]
pub struct QuarantinedChange {
    pub hash: String,
    pub record_id: String,
    pub origin: QuarantineOrigin,
    pub reason: String,
    pub detail: Option<String>,
    pub message: String,
    pub at: i64,
}

#[uniffi::remote(Record)]
pub struct DroppedEdit {
    pub hash: String,
    pub action: String,
    pub reason: String,
    pub detail: String,
}

#[uniffi::remote(Record)]
pub struct DiscardReport {
    pub record_id: String,
    pub removed: Vec<String>,
    pub reapplied: Vec<String>,
    pub dropped: Vec<DroppedEdit>,
    pub record_removed: bool,
}

// ------------------------------------------------------------------------------ mirrored records

fn to_hash(map: BTreeMap<String, String>) -> HashMap<String, String> {
    map.into_iter().collect()
}

fn to_btree(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// A record as read from its document.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    /// The home area.
    pub area: String,
    /// Events only: the area currently responsible for it.
    pub responsible: Option<String>,
    pub deleted: bool,
    pub fields: HashMap<String, String>,
    /// Custom attributes (each city's own form fields).
    pub attrs: HashMap<String, String>,
    pub tags: Vec<String>,
    pub links: Vec<Link>,
    pub notes: String,
    /// Events and visits: the append-only timeline.
    pub timeline: Vec<TimelineEntry>,
    /// Visits only: ids of the records visited.
    pub visited: Vec<String>,
    /// Visits only: checklist answers.
    pub checklist: HashMap<String, String>,
    /// Visits only: attachments in the order they were added.
    pub attachments: Vec<AttachmentRef>,
    /// Fields with concurrent values that nobody has resolved yet.
    pub conflicted_fields: Vec<String>,
}

impl From<core::Record> for Record {
    fn from(r: core::Record) -> Self {
        Record {
            id: r.id,
            kind: r.kind,
            area: r.area,
            responsible: r.responsible,
            deleted: r.deleted,
            fields: to_hash(r.fields),
            attrs: to_hash(r.attrs),
            tags: r.tags,
            links: r.links,
            notes: r.notes,
            timeline: r.timeline,
            visited: r.visited,
            checklist: to_hash(r.checklist),
            attachments: r.attachments,
            conflicted_fields: r.conflicted_fields,
        }
    }
}

/// One row of a list: the projection's view of a record, sensitive fields (ID-document numbers) masked
/// to their last four characters as every list shows them; `get` returns the record in full.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RecordSummary {
    pub id: String,
    pub kind: Kind,
    pub area: String,
    pub responsible: Option<String>,
    pub deleted: bool,
    /// The kind's title field (name, event title, visit purpose).
    pub title: String,
    pub fields: HashMap<String, String>,
}

impl From<core::RecordSummary> for RecordSummary {
    fn from(s: core::RecordSummary) -> Self {
        RecordSummary {
            id: s.id,
            kind: s.kind,
            area: s.area,
            responsible: s.responsible,
            deleted: s.deleted,
            title: s.title,
            // As lists show them: an ID-document number masked (`get` gives the record in full).
            fields: s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), s.kind.list_value(k, v)))
                .collect(),
        }
    }
}

pub(crate) fn summaries(list: Vec<core::RecordSummary>) -> Vec<RecordSummary> {
    list.into_iter().map(Into::into).collect()
}

/// A page of a list; `next_offset` is the offset of the next page, when there is one.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Page {
    pub items: Vec<RecordSummary>,
    pub next_offset: Option<u32>,
}

impl From<core::Page<core::RecordSummary>> for Page {
    fn from(p: core::Page<core::RecordSummary>) -> Self {
        Page {
            items: summaries(p.items),
            next_offset: p.next_offset,
        }
    }
}

/// What to list: one kind, optionally one area (by default with the areas below it), field equality
/// filters, a tag, a text query, and a page.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ListQuery {
    pub kind: Kind,
    #[uniffi(default = None)]
    pub area: Option<String>,
    #[uniffi(default = true)]
    pub include_subareas: bool,
    #[uniffi(default)]
    pub filters: HashMap<String, String>,
    #[uniffi(default = None)]
    pub tag: Option<String>,
    #[uniffi(default = None)]
    pub text: Option<String>,
    #[uniffi(default = false)]
    pub include_deleted: bool,
    #[uniffi(default = 100)]
    pub limit: u32,
    #[uniffi(default = 0)]
    pub offset: u32,
}

impl From<ListQuery> for core::ListQuery {
    fn from(q: ListQuery) -> Self {
        let mut out = core::ListQuery::new(q.kind);
        out.area = q.area;
        out.include_subareas = q.include_subareas;
        out.filters = to_btree(q.filters);
        out.tag = q.tag;
        out.text = q.text;
        out.include_deleted = q.include_deleted;
        out.limit = q.limit;
        out.offset = q.offset;
        out
    }
}

/// A new record. Managed fields (event status, visit review, ...) are set by the store.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewRecord {
    pub kind: Kind,
    pub area: String,
    #[uniffi(default)]
    pub fields: HashMap<String, String>,
    #[uniffi(default)]
    pub attrs: HashMap<String, String>,
    #[uniffi(default)]
    pub tags: Vec<String>,
    #[uniffi(default = "")]
    pub notes: String,
}

impl From<NewRecord> for core::NewRecord {
    fn from(n: NewRecord) -> Self {
        let mut out = core::NewRecord::new(n.kind, n.area);
        out.fields = to_btree(n.fields);
        out.attrs = to_btree(n.attrs);
        out.tags = n.tags;
        out.notes = n.notes;
        out
    }
}

/// A field-level update: only what is named here changes, so concurrent edits of other fields
/// survive. Setting a field to the empty string clears it.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct Update {
    #[uniffi(default)]
    pub fields: HashMap<String, String>,
    #[uniffi(default)]
    pub attrs: HashMap<String, String>,
    #[uniffi(default)]
    pub remove_attrs: Vec<String>,
    #[uniffi(default)]
    pub add_tags: Vec<String>,
    #[uniffi(default)]
    pub remove_tags: Vec<String>,
    #[uniffi(default = None)]
    pub notes: Option<String>,
}

impl From<Update> for core::Update {
    fn from(u: Update) -> Self {
        let mut out = core::Update::new();
        out.fields = to_btree(u.fields);
        out.attrs = to_btree(u.attrs);
        out.remove_attrs = u.remove_attrs;
        out.add_tags = u.add_tags;
        out.remove_tags = u.remove_tags;
        out.notes = u.notes;
        out
    }
}
