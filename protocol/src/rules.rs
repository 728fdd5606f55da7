//! The rule book: may this actor, with this role and scope, turn this record state into that one?
//!
//! One set of rules, evaluated in two places:
//! - the device, before it commits a write, so the user learns at once (convenience);
//! - the relay, on every pushed change, against its own materialised document (authority).
//!
//! The relay judges a change on the record *as its author saw it*: the document at the change's
//! dependencies (`before`) and that document with the change applied (`after`). Two workers' offline
//! transitions that disagree are then each judged on what its author did, and both land as a visible
//! conflict (design notes, "Merge rules"); the relay separately checks that the record is still in the
//! author's scope when the change arrives.
//!
//! What a change does is read from the difference between `before` and `after`:
//! - the *managed* state (home area, responsible area, tombstone, event status and assignee, visit review
//!   and finish, reporter and worker) changes only as one *action* explains it: every action appends one
//!   timeline entry naming it (`escalate`, `review`, `move`, ...), and the rule book computes what that
//!   action must do with the same functions the device uses to make it ([`event_transition`],
//!   [`visit_review`], [`may_move`], [`may_delete`]); anything else that changes in the managed state is
//!   refused, except the resolution of a conflict to one of its values;
//! - the *content* (non-managed fields, attributes, tags, links, notes, visit checklist, visited records,
//!   attachments) may be edited by whoever may edit the record ([`may_edit`]), each value checked.
//!
//! Every refusal has a [`Reason`] (a stable code on the wire) and a readable detail that names rules,
//! fields and areas, never field values.
use crate::doc::{ChangeNote, RecordState};
use crate::model::{
    form_fields, time, AttachmentRef, EventAction, EventStatus, Form, Kind, Record, ReviewState,
    Role, TimelineEntry,
};
use crate::scope::Scope;
use std::collections::{BTreeMap, HashMap};

/// Why a change (or a local write) is refused. `as_str` is the `reason` of a push answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a readable change or not a well-formed record document.
    Malformed,
    /// The change's checksum does not match its content.
    BadChecksum,
    /// Larger than the limits (inflated bytes, or the document would grow past its limit).
    TooLarge,
    /// More operations than a change or a push may carry.
    TooManyOps,
    /// The record id is malformed, or the change would re-create an existing record.
    BadRecord,
    /// The change builds on changes the relay does not have.
    MissingDeps,
    /// The record, or an area the change names, is outside the actor's scope.
    OutOfScope,
    /// The actor's role does not allow this (reviewing, closing, assigning someone else, ...).
    ForbiddenRole,
    /// The change claims another user, device or store as its author.
    WrongAuthor,
    /// A value breaks its field's rule, or a field is unknown.
    InvalidValue,
    /// A field that is set once (kind, reporter, worker, ...) was changed.
    ImmutableField,
    /// Something append-only (timeline, attachments, visited records) lost an entry.
    AppendOnly,
    /// The event lifecycle (or the visit review) does not allow this step now.
    InvalidTransition,
    /// An area the change names does not exist.
    UnknownArea,
    /// The record is deleted: restore it first.
    Deleted,
    /// The relay is busy with this push; send the change again later. Transient: the device keeps it.
    Busy,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Malformed,
        Reason::BadChecksum,
        Reason::TooLarge,
        Reason::TooManyOps,
        Reason::BadRecord,
        Reason::MissingDeps,
        Reason::OutOfScope,
        Reason::ForbiddenRole,
        Reason::WrongAuthor,
        Reason::InvalidValue,
        Reason::ImmutableField,
        Reason::AppendOnly,
        Reason::InvalidTransition,
        Reason::UnknownArea,
        Reason::Deleted,
        Reason::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::BadChecksum => "bad_checksum",
            Reason::TooLarge => "too_large",
            Reason::TooManyOps => "too_many_ops",
            Reason::BadRecord => "bad_record",
            Reason::MissingDeps => "missing_deps",
            Reason::OutOfScope => "out_of_scope",
            Reason::ForbiddenRole => "forbidden_role",
            Reason::WrongAuthor => "wrong_author",
            Reason::InvalidValue => "invalid_value",
            Reason::ImmutableField => "immutable_field",
            Reason::AppendOnly => "append_only",
            Reason::InvalidTransition => "invalid_transition",
            Reason::UnknownArea => "unknown_area",
            Reason::Deleted => "deleted",
            Reason::Busy => "busy",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// A transient refusal: the change is fine, send it again later.
    pub fn is_transient(self) -> bool {
        self == Reason::Busy
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason code and a readable detail (rules, fields and area ids; never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.reason)
    }
}

type Verdict<T = ()> = Result<T, Refusal>;

fn refuse<T>(reason: Reason, detail: impl Into<String>) -> Verdict<T> {
    Err(Refusal::new(reason, detail))
}

/// The area tree as the rule book needs it: area id -> path (`d1/s1/c1/g1/`).
pub trait Areas {
    fn path(&self, area: &str) -> Option<&str>;

    /// The parent's id, from the path.
    fn parent(&self, area: &str) -> Option<String> {
        let path = self.path(area)?;
        let mut parts = path.trim_end_matches('/').rsplit('/');
        parts.next()?;
        parts.next().map(str::to_owned)
    }
}

impl Areas for HashMap<String, String> {
    fn path(&self, area: &str) -> Option<&str> {
        self.get(area).map(String::as_str)
    }
}

impl Areas for BTreeMap<String, String> {
    fn path(&self, area: &str) -> Option<&str> {
        self.get(area).map(String::as_str)
    }
}

/// Who acts: everything here comes from the relay (the token), never from the device's own claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user: String,
    pub device: String,
    pub role: Role,
    /// The path of the user's area; the subtree under it is the actor's scope (operators: everything).
    pub area_path: String,
}

impl Actor {
    pub fn scope(&self) -> Scope {
        Scope {
            role: self.role,
            prefix: self.area_path.clone(),
        }
    }

    fn is_supervisor(&self) -> bool {
        matches!(self.role, Role::Supervisor | Role::Operator)
    }

    /// Whether an area (by id) is inside the actor's scope. Unknown areas are in nobody's scope but an
    /// operator's.
    pub fn covers(&self, areas: &dyn Areas, area: &str) -> bool {
        if self.role == Role::Operator {
            return true;
        }
        // An empty scope path (an identity not yet confirmed by the relay) covers nothing.
        !self.area_path.is_empty()
            && areas
                .path(area)
                .is_some_and(|p| p.starts_with(&self.area_path))
    }

    /// Whether the actor sees a record: its home area is in scope or, for events, its responsible area.
    pub fn sees(&self, areas: &dyn Areas, record: &Record) -> bool {
        self.covers(areas, &record.area)
            || (record.kind == Kind::Event
                && record
                    .responsible
                    .as_deref()
                    .is_some_and(|r| self.covers(areas, r)))
    }
}

/// Checks who made a change: the store's actor bound to the pushing device, and the user and device
/// the change's note names. `bound_actor` is the hex actor the relay bound to the device token.
pub fn check_author(
    actor: &Actor,
    bound_actor: Option<&str>,
    change_actor: &str,
    note: Option<&ChangeNote>,
) -> Verdict {
    let Some(bound) = bound_actor else {
        return refuse(
            Reason::WrongAuthor,
            "this device has not registered its store with the relay",
        );
    };
    if change_actor != bound {
        return refuse(
            Reason::WrongAuthor,
            "the change was made by another store than the one registered for this device",
        );
    }
    let Some(note) = note else {
        return refuse(Reason::WrongAuthor, "the change does not name its author");
    };
    if note.user != actor.user {
        return refuse(
            Reason::WrongAuthor,
            "the change names another user than the device's",
        );
    }
    if note.device.as_deref().is_some_and(|d| d != actor.device) {
        return refuse(
            Reason::WrongAuthor,
            "the change names another device than the one pushing it",
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------ values

const MAX_NOTES: usize = 64 * 1024;
const MAX_TEXT: usize = 4096;

fn text_ok(value: &str, min: usize, max: usize) -> bool {
    value.trim().len() >= min && value.len() <= max && !value.chars().any(char::is_control)
}

fn invalid(field: &str, rule: &str) -> Refusal {
    Refusal::new(Reason::InvalidValue, format!("`{field}`: {rule}"))
}

fn check_kind_field(kind: Kind, name: &str, value: &str) -> Verdict {
    let spec = kind
        .spec(name)
        .map_err(|e| Refusal::new(Reason::InvalidValue, e.to_string()))?;
    spec.validate(value)
        .map_err(|e| Refusal::new(Reason::InvalidValue, e.to_string()))
}

fn check_attr(name: &str, value: &str) -> Verdict {
    if !text_ok(name, 1, 128) {
        return Err(invalid("attrs", "names are 1 to 128 bytes of text"));
    }
    if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(invalid(
            &format!("attrs.{name}"),
            "at most 4096 bytes without control characters",
        ));
    }
    Ok(())
}

fn check_tag(tag: &str) -> Verdict {
    if !text_ok(tag, 1, 128) || tag.trim() != tag {
        return Err(invalid("tags", "a tag is 1 to 128 bytes of trimmed text"));
    }
    Ok(())
}

fn check_link(link: &crate::model::Link) -> Verdict {
    if !crate::doc::is_valid_record_id(&link.target) {
        return Err(invalid("links", "a link targets a record id"));
    }
    Ok(())
}

fn check_notes(notes: &str) -> Verdict {
    if notes.len() > MAX_NOTES {
        return Err(invalid("notes", "at most 64 KiB"));
    }
    Ok(())
}

fn check_checklist(question: &str, answer: &str) -> Verdict {
    if !text_ok(question, 1, 256) || answer.len() > MAX_TEXT || answer.is_empty() {
        return Err(invalid(
            "checklist",
            "a question is 1 to 256 bytes, an answer 1 to 4096",
        ));
    }
    Ok(())
}

fn check_attachment(a: &AttachmentRef) -> Verdict {
    let sha_ok = a.sha256.len() == 64
        && a.sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !sha_ok
        || a.size > crate::limits::MAX_ATTACHMENT_BYTES
        || !text_ok(&a.name, 0, 256)
        || !text_ok(&a.mime, 0, 128)
    {
        return Err(invalid(
            "attachments",
            "an attachment names a SHA-256, a size within the limit, a name and a type",
        ));
    }
    Ok(())
}

fn check_timeline_entry(actor: &Actor, e: &TimelineEntry) -> Verdict {
    if e.by != actor.user {
        return refuse(
            Reason::WrongAuthor,
            "a timeline entry names another user than the change's author",
        );
    }
    if time::parse_iso(&e.at).is_none() {
        return Err(invalid(
            "timeline",
            "an entry's time is YYYY-MM-DDTHH:MM:SSZ",
        ));
    }
    if Action::parse(&e.action).is_none() {
        return Err(invalid("timeline", "unknown action"));
    }
    if e.comment
        .as_deref()
        .is_some_and(|c| c.len() > MAX_TEXT || c.chars().any(|ch| ch.is_control() && ch != '\n'))
    {
        return Err(invalid(
            "comment",
            "at most 4096 bytes without control characters",
        ));
    }
    for v in [&e.from, &e.to].into_iter().flatten() {
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(invalid("timeline", "from and to are short text"));
        }
    }
    Ok(())
}

// ----------------------------------------------------------------------------- the actions

/// An action named by a timeline entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Report,
    Event(&'static str),
    Review,
    Delete,
    Restore,
    Move,
    /// The record is merged into another (`to`): a tombstone that says where it went.
    Merge,
    /// The record absorbs another (`from`) that is merged into it.
    Absorb,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "report" => Action::Report,
            "review" => Action::Review,
            "delete" => Action::Delete,
            "restore" => Action::Restore,
            "move" => Action::Move,
            "merge" => Action::Merge,
            "absorb" => Action::Absorb,
            "assign" => Action::Event("assign"),
            "start" => Action::Event("start"),
            "resolve" => Action::Event("resolve"),
            "verify" => Action::Event("verify"),
            "close" => Action::Event("close"),
            "return" => Action::Event("return"),
            "reopen" => Action::Event("reopen"),
            "escalate" => Action::Event("escalate"),
            "hand_down" => Action::Event("hand_down"),
            "comment" => Action::Event("comment"),
            _ => return None,
        })
    }
}

/// What an event action does to the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEffect {
    pub status: EventStatus,
    /// The new assignee; `Some("")` clears it, `None` leaves it.
    pub assignee: Option<String>,
    /// The new responsible area, for escalate and hand down.
    pub responsible: Option<String>,
}

/// May `actor` do `action` to `event` now, and what does it do? The device calls this before it writes
/// a transition; the relay calls it for the transition a pushed change claims.
///
/// Anyone whose scope covers the event's *responsible* area may act (an event escalated to the street is
/// the street's). Assigning someone else, verifying, returning, closing, reopening and handing down are a
/// supervisor's; starting and resolving the assignee's (or a supervisor's); escalating passes the event
/// to the parent of the responsible area, handing down to an area strictly below it that contains the
/// event's home.
pub fn event_transition(
    actor: &Actor,
    areas: &dyn Areas,
    event: &Record,
    action: &EventAction,
    comment: Option<&str>,
) -> Verdict<EventEffect> {
    if event.kind != Kind::Event {
        return refuse(Reason::InvalidTransition, "only events have a lifecycle");
    }
    if event.deleted {
        return refuse(Reason::Deleted, "the event is deleted");
    }
    let responsible = event
        .responsible
        .clone()
        .unwrap_or_else(|| event.area.clone());
    if !actor.covers(areas, &responsible) {
        return refuse(
            Reason::OutOfScope,
            format!("the event's responsible area {responsible} is outside your scope"),
        );
    }
    let status = event
        .field("status")
        .and_then(EventStatus::parse)
        .ok_or_else(|| Refusal::new(Reason::Malformed, "the event has no valid status"))?;
    let next = action.next_status(status).ok_or_else(|| {
        Refusal::new(
            Reason::InvalidTransition,
            format!(
                "`{}` is not allowed from status `{}`",
                action.name(),
                status.as_str()
            ),
        )
    })?;
    if let Some(c) = comment {
        if c.len() > MAX_TEXT || c.chars().any(|ch| ch.is_control() && ch != '\n') {
            return Err(invalid(
                "comment",
                "at most 4096 bytes without control characters",
            ));
        }
    }
    let supervisor = actor.is_supervisor();
    let needs_supervisor = |what: &str| {
        refuse(
            Reason::ForbiddenRole,
            format!("{what} needs a supervisor of the responsible area"),
        )
    };
    let assignee = event.field("assignee").unwrap_or_default();
    let mut effect = EventEffect {
        status: next,
        assignee: None,
        responsible: None,
    };
    match action {
        EventAction::Assign { assignee: to } => {
            if to.trim().is_empty() || to.len() > 128 || to.chars().any(char::is_control) {
                return Err(invalid("assignee", "must be a user id"));
            }
            if !supervisor && to != &actor.user {
                return needs_supervisor("assigning someone else");
            }
            effect.assignee = Some(to.clone());
        }
        EventAction::Start | EventAction::Resolve => {
            if !supervisor && assignee != actor.user {
                return refuse(
                    Reason::ForbiddenRole,
                    "only the assignee or a supervisor can do that",
                );
            }
        }
        EventAction::Verify | EventAction::Close | EventAction::Reopen => {
            if !supervisor {
                return needs_supervisor(action.name());
            }
        }
        EventAction::Return => {
            if !supervisor {
                return needs_supervisor("returning");
            }
            if comment.is_none_or(|c| c.trim().is_empty()) {
                return Err(invalid("comment", "required when returning an event"));
            }
        }
        EventAction::Escalate => {
            let parent = areas.parent(&responsible).ok_or_else(|| {
                Refusal::new(
                    Reason::InvalidTransition,
                    "the top of the area tree cannot escalate",
                )
            })?;
            effect.responsible = Some(parent);
            effect.assignee = Some(String::new());
        }
        EventAction::HandDown { area } => {
            if !supervisor {
                return needs_supervisor("handing down");
            }
            let from = areas.path(&responsible).ok_or_else(|| {
                Refusal::new(Reason::UnknownArea, format!("no area {responsible}"))
            })?;
            let to = areas
                .path(area)
                .ok_or_else(|| Refusal::new(Reason::UnknownArea, format!("no area {area}")))?;
            let home = areas.path(&event.area).unwrap_or_default();
            if !(to.starts_with(from) && to != from && home.starts_with(to)) {
                return refuse(
                    Reason::InvalidTransition,
                    "hand down to an area below the responsible one that contains the event's home",
                );
            }
            effect.responsible = Some(area.clone());
            effect.assignee = Some(String::new());
        }
        EventAction::Comment => {
            if comment.is_none_or(|c| c.trim().is_empty()) {
                return Err(invalid("comment", "required"));
            }
        }
    }
    Ok(effect)
}

/// May `actor` review `visit` (approve or return it)? Only a supervisor (or operator) whose scope covers
/// the visit's area, never the visit's own worker, and only a finished visit; returning needs a comment.
pub fn visit_review(
    actor: &Actor,
    areas: &dyn Areas,
    visit: &Record,
    state: ReviewState,
    comment: Option<&str>,
) -> Verdict {
    if visit.kind != Kind::Visit {
        return refuse(Reason::InvalidTransition, "only visits are reviewed");
    }
    if visit.deleted {
        return refuse(Reason::Deleted, "the visit is deleted");
    }
    if !actor.is_supervisor() {
        return refuse(
            Reason::ForbiddenRole,
            "reviewing visits needs a supervisor of the visit's area",
        );
    }
    if !actor.covers(areas, &visit.area) {
        return refuse(
            Reason::OutOfScope,
            format!("the visit's area {} is outside your scope", visit.area),
        );
    }
    if visit.field("worker") == Some(actor.user.as_str()) {
        return refuse(Reason::ForbiddenRole, "nobody reviews their own visit");
    }
    if visit.field("ended_at").is_none() {
        return refuse(
            Reason::InvalidTransition,
            "a visit is reviewed once it is finished",
        );
    }
    if state == ReviewState::Pending {
        return refuse(Reason::InvalidTransition, "a review approves or returns");
    }
    if state == ReviewState::Returned && comment.is_none_or(|c| c.trim().is_empty()) {
        return Err(invalid("review_comment", "required when returning a visit"));
    }
    if comment
        .is_some_and(|c| c.len() > MAX_TEXT || c.chars().any(|ch| ch.is_control() && ch != '\n'))
    {
        return Err(invalid(
            "review_comment",
            "at most 4096 bytes without control characters",
        ));
    }
    Ok(())
}

/// May `actor` edit the content of `record` (fields, attributes, tags, links, notes; a visit's
/// checklist, visited records and attachments)? Whoever sees it; a visit only by its own worker (or an
/// operator): a visit log is its worker's account.
pub fn may_edit(actor: &Actor, areas: &dyn Areas, record: &Record) -> Verdict {
    if !actor.sees(areas, record) {
        return refuse(
            Reason::OutOfScope,
            format!("the record's area {} is outside your scope", record.area),
        );
    }
    if record.deleted {
        return refuse(Reason::Deleted, "the record is deleted: restore it first");
    }
    if record.kind == Kind::Visit
        && actor.role != Role::Operator
        && record.field("worker") != Some(actor.user.as_str())
    {
        return refuse(
            Reason::ForbiddenRole,
            "only the worker who made a visit edits it",
        );
    }
    Ok(())
}

/// May `actor` delete or restore `record`? Whoever may edit it; a visit also its supervisors.
pub fn may_delete(actor: &Actor, areas: &dyn Areas, record: &Record) -> Verdict {
    if !actor.sees(areas, record) {
        return refuse(
            Reason::OutOfScope,
            format!("the record's area {} is outside your scope", record.area),
        );
    }
    if record.kind == Kind::Visit
        && !actor.is_supervisor()
        && record.field("worker") != Some(actor.user.as_str())
    {
        return refuse(
            Reason::ForbiddenRole,
            "only the visit's worker or a supervisor deletes a visit",
        );
    }
    Ok(())
}

/// May `actor` merge `record` with another, or decide that it is not a duplicate of another? People,
/// places and organisations that are not deleted; a supervisor of the record's area, or the worker of
/// its grid (whose own area is the record's home).
pub fn may_merge(actor: &Actor, areas: &dyn Areas, record: &Record) -> Verdict {
    if !crate::duplicates::compared(record.kind) {
        return refuse(
            Reason::InvalidTransition,
            "only people, places and organisations are merged",
        );
    }
    if !actor.sees(areas, record) {
        return refuse(
            Reason::OutOfScope,
            format!("the record's area {} is outside your scope", record.area),
        );
    }
    if record.deleted {
        return refuse(Reason::Deleted, "the record is deleted or merged already");
    }
    let own_grid = actor.role == Role::Worker
        && areas
            .path(&record.area)
            .is_some_and(|p| p == actor.area_path);
    if !(own_grid || (actor.is_supervisor() && actor.covers(areas, &record.area))) {
        return refuse(
            Reason::ForbiddenRole,
            "merging duplicates needs a supervisor of the record's area or the worker of its grid",
        );
    }
    Ok(())
}

/// Checks the change of a record's duplicate decisions (`dups`) from `b` to `a`, with the timeline
/// entry the change claims: only [`may_merge`]'s people change them; a record id maps to `merged` (only
/// with the `absorb` entry that names it) or `distinct`; `<id>/<field>` to a settled value; and an
/// `absorb` entry records the merged-away record as `merged`.
fn check_dups(
    actor: &Actor,
    areas: &dyn Areas,
    b: &Record,
    a: &Record,
    claim: Option<&TimelineEntry>,
) -> Verdict {
    use crate::duplicates::{DISTINCT, MERGED};
    let absorbing = claim
        .filter(|e| e.action == "absorb")
        .map(|e| e.from.as_deref().unwrap_or_default());
    if a.dups != b.dups {
        may_merge(actor, areas, b)?;
        for (key, value) in &a.dups {
            if b.dups.get(key) == Some(value) {
                continue;
            }
            match key.split_once('/') {
                None => {
                    if !crate::doc::is_valid_record_id(key) || key == &a.id {
                        return Err(invalid("dups", "a decision names another record"));
                    }
                    if value == MERGED {
                        if absorbing != Some(key.as_str()) {
                            return refuse(
                                Reason::InvalidTransition,
                                "a record absorbs another only by an `absorb` entry naming it",
                            );
                        }
                    } else if value != DISTINCT {
                        return Err(invalid("dups", "a decision is `merged` or `distinct`"));
                    }
                }
                Some((other, field)) => {
                    if !crate::doc::is_valid_record_id(other)
                        || !text_ok(field, 1, 128)
                        || value.len() > MAX_NOTES
                    {
                        return Err(invalid(
                            "dups",
                            "a settled value names a record and a field, and is at most 64 KiB",
                        ));
                    }
                }
            }
        }
        if b.dups
            .iter()
            .any(|(k, v)| v == MERGED && a.dups.get(k) != Some(v))
        {
            return refuse(Reason::AppendOnly, "a merge is not undone");
        }
    }
    if let Some(from) = absorbing {
        if a.dups.get(from).map(String::as_str) != Some(MERGED) {
            return refuse(
                Reason::InvalidValue,
                "an absorb records the merged-away record in `dups`",
            );
        }
    }
    Ok(())
}

/// May `actor` move `record` to home area `to`? Both its home area and `to` must be in scope.
pub fn may_move(actor: &Actor, areas: &dyn Areas, record: &Record, to: &str) -> Verdict {
    if areas.path(to).is_none() {
        return refuse(Reason::UnknownArea, format!("no area {to}"));
    }
    if !actor.covers(areas, &record.area) {
        return refuse(
            Reason::OutOfScope,
            format!(
                "moving needs the record's home area {} in your scope",
                record.area
            ),
        );
    }
    if !actor.covers(areas, to) {
        return refuse(
            Reason::OutOfScope,
            format!("area {to} is outside your scope"),
        );
    }
    if record.deleted {
        return refuse(Reason::Deleted, "the record is deleted: restore it first");
    }
    Ok(())
}

// ------------------------------------------------------------------------ creating and editing

/// Checks a new record's first state; `forms` are the city forms its attribute values are checked by.
pub fn check_create(
    actor: &Actor,
    areas: &dyn Areas,
    forms: &[Form],
    after: &RecordState,
) -> Verdict {
    let r = &after.record;
    if areas.path(&r.area).is_none() {
        return refuse(Reason::UnknownArea, format!("no area {}", r.area));
    }
    if !actor.covers(areas, &r.area) {
        return refuse(
            Reason::OutOfScope,
            format!("area {} is outside your scope", r.area),
        );
    }
    if r.deleted {
        return refuse(Reason::InvalidValue, "a new record is not deleted");
    }
    if !after.conflicts.is_empty() {
        return refuse(
            Reason::Malformed,
            "a change may not hold concurrent values of one field",
        );
    }
    for (name, value) in &r.fields {
        let spec = r
            .kind
            .spec(name)
            .map_err(|e| Refusal::new(Reason::InvalidValue, e.to_string()))?;
        if !spec.managed {
            check_kind_field(r.kind, name, value)?;
        }
    }
    check_title(r)?;
    check_content_values(r, None)?;
    check_form_values(areas, forms, r, None)?;
    let entries = &r.timeline;
    for e in entries {
        check_timeline_entry(actor, e)?;
    }
    let managed = |name: &str| r.field(name);
    match r.kind {
        Kind::Event => {
            if r.responsible.as_deref() != Some(r.area.as_str()) {
                return refuse(
                    Reason::InvalidValue,
                    "a new event is the responsibility of its home area",
                );
            }
            if managed("status") != Some("reported")
                || managed("reporter") != Some(actor.user.as_str())
                || managed("assignee").is_some()
                || managed("reported_at").is_none_or(|t| time::parse_iso(t).is_none())
            {
                return refuse(
                    Reason::InvalidValue,
                    "a new event is `reported`, unassigned, reported now by its author",
                );
            }
            let [first] = entries.as_slice() else {
                return refuse(
                    Reason::InvalidValue,
                    "a new event's timeline holds its report",
                );
            };
            if first.action != "report" {
                return refuse(
                    Reason::InvalidValue,
                    "a new event's timeline holds its report",
                );
            }
        }
        Kind::Visit => {
            if managed("worker") != Some(actor.user.as_str())
                || managed("review_state") != Some("pending")
                || managed("started_at").is_none_or(|t| time::parse_iso(t).is_none())
                || managed("ended_at").is_some()
                || managed("reviewer").is_some()
                || managed("review_comment").is_some()
            {
                return refuse(
                    Reason::InvalidValue,
                    "a new visit is started now by its author and pending review",
                );
            }
            if !entries.is_empty() {
                return refuse(Reason::InvalidValue, "a new visit has an empty timeline");
            }
        }
        _ => {
            if r.responsible.is_some() {
                return refuse(Reason::InvalidValue, "only events have a responsible area");
            }
            if !entries.is_empty() {
                return refuse(Reason::InvalidValue, "a new record has an empty timeline");
            }
        }
    }
    if r.kind != Kind::Visit
        && (!r.visited.is_empty() || !r.checklist.is_empty() || !r.attachments.is_empty())
    {
        return refuse(
            Reason::InvalidValue,
            "only visits have visited records, a checklist and attachments",
        );
    }
    if !r.dups.is_empty() {
        return refuse(
            Reason::InvalidValue,
            "a new record has no duplicate decisions",
        );
    }
    Ok(())
}

fn check_title(r: &Record) -> Verdict {
    let title = r.kind.title_field();
    if r.kind != Kind::Visit && r.field(title).is_none_or(|t| t.trim().is_empty()) {
        return Err(invalid(title, "required"));
    }
    Ok(())
}

/// Checks the content values of `r` that differ from `before` (all of them when `before` is None).
fn check_content_values(r: &Record, before: Option<&Record>) -> Verdict {
    let b = before;
    for (k, v) in &r.attrs {
        if b.is_none_or(|b| b.attrs.get(k) != Some(v)) {
            check_attr(k, v)?;
        }
    }
    for t in &r.tags {
        if b.is_none_or(|b| !b.tags.contains(t)) {
            check_tag(t)?;
        }
    }
    for l in &r.links {
        if b.is_none_or(|b| !b.links.contains(l)) {
            check_link(l)?;
        }
    }
    if b.is_none_or(|b| b.notes != r.notes) {
        check_notes(&r.notes)?;
    }
    for (q, a) in &r.checklist {
        if b.is_none_or(|b| b.checklist.get(q) != Some(a)) {
            check_checklist(q, a)?;
        }
    }
    for v in &r.visited {
        if b.is_none_or(|b| !b.visited.contains(v)) && !crate::doc::is_valid_record_id(v) {
            return Err(invalid("visited", "visited records are record ids"));
        }
    }
    let known = b.map(|b| b.attachments.len()).unwrap_or(0);
    for a in r.attachments.iter().skip(known) {
        check_attachment(a)?;
    }
    Ok(())
}

/// Checks the attribute values of `r` that differ from `before` against the city form of the record's
/// kind and home area. Values already stored are not judged again: a form that changed leaves them be.
fn check_form_values(
    areas: &dyn Areas,
    forms: &[Form],
    r: &Record,
    before: Option<&Record>,
) -> Verdict {
    if forms.is_empty() {
        return Ok(());
    }
    let changed: Vec<(&String, &String)> = r
        .attrs
        .iter()
        .filter(|(k, v)| before.is_none_or(|b| b.attrs.get(*k) != Some(*v)))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let fields = form_fields(forms, areas, r.kind, &r.area);
    for (key, value) in changed {
        if let Some(field) = fields.iter().find(|f| &f.key == key) {
            field
                .check_value(value)
                .map_err(|rule| Refusal::new(Reason::InvalidValue, rule))?;
        }
    }
    Ok(())
}

/// The fields of `kind` whose changes only actions (or conflict resolutions) explain.
fn managed_fields(kind: Kind) -> impl Iterator<Item = &'static str> {
    kind.fields().iter().filter(|f| f.managed).map(|f| f.name)
}

/// The managed state of a record: root keys and managed fields, by name.
fn managed_state(r: &Record) -> BTreeMap<&'static str, Option<String>> {
    let mut m: BTreeMap<&'static str, Option<String>> = BTreeMap::new();
    m.insert("area", Some(r.area.clone()));
    m.insert("responsible", r.responsible.clone());
    m.insert("deleted", Some(r.deleted.to_string()));
    for name in managed_fields(r.kind) {
        m.insert(name, r.field(name).map(str::to_owned));
    }
    m
}

/// May `actor` turn `before` into `after`? `before` is `None` for a new record. Both are states of the
/// same record id, `after` being `before` with one change applied. `forms` are the city forms attribute
/// values are checked by.
pub fn authorize(
    actor: &Actor,
    areas: &dyn Areas,
    forms: &[Form],
    before: Option<&RecordState>,
    after: &RecordState,
) -> Verdict {
    let Some(before) = before else {
        return check_create(actor, areas, forms, after);
    };
    let (b, a) = (&before.record, &after.record);
    if a.kind != b.kind {
        return refuse(Reason::ImmutableField, "a record's kind never changes");
    }
    if !actor.sees(areas, b) {
        return refuse(
            Reason::OutOfScope,
            format!("the record's area {} is outside your scope", b.area),
        );
    }
    for (field, values) in &after.conflicts {
        if before
            .conflicts
            .get(field)
            .is_none_or(|old| values.len() > old.len())
        {
            return refuse(
                Reason::Malformed,
                "a change may not hold concurrent values of one field",
            );
        }
    }
    // The timeline only grows, and each change appends at most one action.
    if a.timeline.len() < b.timeline.len() || a.timeline[..b.timeline.len()] != b.timeline[..] {
        return refuse(Reason::AppendOnly, "the timeline only grows");
    }
    let new_entries = &a.timeline[b.timeline.len()..];
    if new_entries.len() > 1 {
        return refuse(Reason::InvalidTransition, "one action per change");
    }
    for e in new_entries {
        check_timeline_entry(actor, e)?;
    }
    let claim = new_entries.first();

    // What the managed state must become: before, plus what the claimed action does.
    let mut expected = managed_state(b);
    if let Some(entry) = claim {
        let action = Action::parse(&entry.action).expect("checked above");
        match action {
            Action::Report => {
                return refuse(
                    Reason::InvalidTransition,
                    "an event is reported once, when made",
                )
            }
            Action::Event(name) => {
                let ev = event_action(name, entry, a)?;
                let effect = event_transition(actor, areas, b, &ev, entry.comment.as_deref())?;
                let to = match &ev {
                    EventAction::Assign { assignee } => assignee.clone(),
                    EventAction::Escalate | EventAction::HandDown { .. } => {
                        effect.responsible.clone().unwrap_or_default()
                    }
                    _ => effect.status.as_str().to_owned(),
                };
                if entry.to.as_deref().is_some_and(|t| t != to) {
                    return refuse(
                        Reason::InvalidValue,
                        "the timeline entry does not match the transition",
                    );
                }
                expected.insert("status", Some(effect.status.as_str().to_owned()));
                if let Some(assignee) = effect.assignee {
                    expected.insert("assignee", (!assignee.is_empty()).then_some(assignee));
                }
                if let Some(r) = effect.responsible {
                    expected.insert("responsible", Some(r));
                }
            }
            Action::Review => {
                let state = a
                    .field("review_state")
                    .and_then(ReviewState::parse)
                    .ok_or_else(|| invalid("review_state", "approved or returned"))?;
                let comment = a.field("review_comment");
                visit_review(actor, areas, b, state, comment)?;
                expected.insert("review_state", Some(state.as_str().to_owned()));
                expected.insert("review_comment", comment.map(str::to_owned));
                expected.insert("reviewer", Some(actor.user.clone()));
            }
            Action::Merge => {
                entry
                    .to
                    .as_deref()
                    .filter(|t| crate::doc::is_valid_record_id(t) && *t != b.id)
                    .ok_or_else(|| invalid("timeline", "a merge names the record kept"))?;
                may_merge(actor, areas, b)?;
                expected.insert("deleted", Some(true.to_string()));
            }
            Action::Absorb => {
                entry
                    .from
                    .as_deref()
                    .filter(|f| crate::doc::is_valid_record_id(f) && *f != b.id)
                    .ok_or_else(|| invalid("timeline", "an absorb names the merged-away record"))?;
                may_merge(actor, areas, b)?;
            }
            Action::Delete | Action::Restore => {
                let deleting = action == Action::Delete;
                if !deleting && crate::duplicates::merged_into(b).is_some() {
                    return refuse(
                        Reason::InvalidTransition,
                        "a merged record stays merged: its values live on in the record it went into",
                    );
                }
                if b.deleted == deleting {
                    return refuse(
                        Reason::InvalidTransition,
                        if deleting {
                            "the record is deleted already"
                        } else {
                            "the record is not deleted"
                        },
                    );
                }
                may_delete(actor, areas, b)?;
                expected.insert("deleted", Some(deleting.to_string()));
            }
            Action::Move => {
                let to = entry
                    .to
                    .clone()
                    .ok_or_else(|| invalid("timeline", "a move names its area"))?;
                if entry.from.as_deref() != Some(b.area.as_str()) {
                    return refuse(
                        Reason::InvalidValue,
                        "the timeline entry does not match the move",
                    );
                }
                may_move(actor, areas, b, &to)?;
                expected.insert("area", Some(to));
            }
        }
    }
    // A visit's worker finishes it once: `ended_at` is set without an action.
    if b.kind == Kind::Visit && b.field("ended_at").is_none() {
        if let Some(end) = a.field("ended_at") {
            if b.field("worker") != Some(actor.user.as_str()) && actor.role != Role::Operator {
                return refuse(
                    Reason::ForbiddenRole,
                    "only the worker who started a visit can finish it",
                );
            }
            if b.deleted {
                return refuse(Reason::Deleted, "the visit is deleted");
            }
            if time::parse_iso(end).is_none() {
                return Err(invalid("ended_at", "a UTC time YYYY-MM-DDTHH:MM:SSZ"));
            }
            expected.insert("ended_at", Some(end.to_owned()));
        }
    }
    let actual = managed_state(a);
    for (name, want) in &expected {
        let got = actual.get(name).cloned().flatten();
        if &got == want {
            continue;
        }
        // The resolution of a conflict: the value becomes one of the values it had.
        let conflict_key = *name;
        let resolves = before
            .conflicts
            .get(conflict_key)
            .is_some_and(|values| got.as_ref().is_some_and(|g| values.contains(g)))
            && !after.conflicts.contains_key(conflict_key);
        if resolves {
            may_resolve(actor, areas, b, name, got.as_deref().unwrap_or_default())?;
            continue;
        }
        return refuse(
            match *name {
                "reporter" | "reported_at" | "worker" | "started_at" => Reason::ImmutableField,
                "area" | "responsible" => Reason::OutOfScope,
                "review_state" | "review_comment" | "reviewer" => Reason::ForbiddenRole,
                _ => Reason::InvalidTransition,
            },
            match *name {
                "area" => "the home area changes only by a move".to_owned(),
                "responsible" => {
                    "the responsible area changes only by escalating or handing down".to_owned()
                }
                "deleted" => "a record is deleted or restored only as such".to_owned(),
                "review_state" | "review_comment" | "reviewer" => {
                    "a visit's review is set only by a reviewing supervisor".to_owned()
                }
                other => format!("`{other}` changes only through its action"),
            },
        );
    }
    if a.kind != Kind::Event && a.responsible.is_some() {
        return refuse(Reason::InvalidValue, "only events have a responsible area");
    }
    check_dups(actor, areas, b, a, claim)?;
    for area in std::iter::once(&a.area).chain(a.responsible.as_ref()) {
        if areas.path(area).is_none() {
            return refuse(Reason::UnknownArea, format!("no area {area}"));
        }
    }
    // The content.
    let content_changed = content_differs(b, a);
    if content_changed {
        may_edit(actor, areas, b)?;
        for (name, value) in &a.fields {
            let managed = a.kind.spec(name).map(|s| s.managed).unwrap_or(false);
            if !managed && b.fields.get(name) != Some(value) {
                check_kind_field(a.kind, name, value)?;
            }
        }
        check_title(a)?;
        check_content_values(a, Some(b))?;
        check_form_values(areas, forms, a, Some(b))?;
        if b.visited.iter().any(|v| !a.visited.contains(v)) {
            return refuse(Reason::AppendOnly, "visited records are only added");
        }
        if a.attachments.len() < b.attachments.len()
            || a.attachments[..b.attachments.len()] != b.attachments[..]
        {
            return refuse(Reason::AppendOnly, "attachments are only added");
        }
        if a.kind != Kind::Visit
            && (!a.visited.is_empty() || !a.checklist.is_empty() || !a.attachments.is_empty())
        {
            return refuse(
                Reason::InvalidValue,
                "only visits have visited records, a checklist and attachments",
            );
        }
    }
    if !actor.sees(areas, a) {
        return refuse(
            Reason::OutOfScope,
            "the change takes the record out of your scope",
        );
    }
    Ok(())
}

/// Whether the content (everything but the managed state and the timeline) differs.
fn content_differs(b: &Record, a: &Record) -> bool {
    let plain = |r: &Record| -> BTreeMap<String, String> {
        r.fields
            .iter()
            .filter(|(k, _)| !r.kind.spec(k).map(|s| s.managed).unwrap_or(false))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    plain(b) != plain(a)
        || b.attrs != a.attrs
        || b.tags != a.tags
        || b.links != a.links
        || b.notes != a.notes
        || b.visited != a.visited
        || b.checklist != a.checklist
        || b.attachments != a.attachments
        || b.dups != a.dups
}

/// The event action a timeline entry names, with its argument read from the entry or the new state.
fn event_action(name: &str, entry: &TimelineEntry, after: &Record) -> Verdict<EventAction> {
    Ok(match name {
        "assign" => EventAction::Assign {
            assignee: after
                .field("assignee")
                .map(str::to_owned)
                .or_else(|| entry.to.clone())
                .unwrap_or_default(),
        },
        "start" => EventAction::Start,
        "resolve" => EventAction::Resolve,
        "verify" => EventAction::Verify,
        "close" => EventAction::Close,
        "return" => EventAction::Return,
        "reopen" => EventAction::Reopen,
        "escalate" => EventAction::Escalate,
        "hand_down" => EventAction::HandDown {
            area: entry
                .to
                .clone()
                .ok_or_else(|| invalid("timeline", "a hand down names its area"))?,
        },
        "comment" => EventAction::Comment,
        _ => return Err(invalid("timeline", "unknown action")),
    })
}

/// May `actor` resolve the conflict on `field` of `record` to `value` (one of its values)?
pub fn may_resolve(
    actor: &Actor,
    areas: &dyn Areas,
    record: &Record,
    field: &str,
    value: &str,
) -> Verdict {
    if !actor.sees(areas, record) {
        return refuse(
            Reason::OutOfScope,
            format!("the record's area {} is outside your scope", record.area),
        );
    }
    match field {
        "area" | "responsible" => {
            if !actor.covers(areas, value) {
                return refuse(
                    Reason::OutOfScope,
                    format!("area {value} is outside your scope"),
                );
            }
        }
        "review_state" | "review_comment" | "reviewer" => {
            if !actor.is_supervisor() || !actor.covers(areas, &record.area) {
                return refuse(
                    Reason::ForbiddenRole,
                    "a review conflict is resolved by a supervisor of the visit's area",
                );
            }
        }
        "status" | "assignee" => {
            let responsible = record.responsible.as_deref().unwrap_or(&record.area);
            if !actor.covers(areas, responsible) {
                return refuse(
                    Reason::OutOfScope,
                    format!("the event's responsible area {responsible} is outside your scope"),
                );
            }
        }
        "deleted" => may_delete(actor, areas, record)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
