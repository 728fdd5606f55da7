//! The layout of a record's Automerge document, shared by the devices and the relay.
//!
//! Root map keys:
//! - `kind`: record kind (`person`, `place`, `object`, `organisation`, `event`, `visit`)
//! - `area`: home area id, decides who receives the record
//! - `responsible`: events only, the area currently responsible for the event
//! - `deleted`: tombstone flag
//! - `f`: map of the kind's typed fields (plain strings)
//! - `attrs`: map of custom attributes (plain strings)
//! - `tags`: map used as a set (tag -> true), so concurrent additions merge by union
//! - `links`: map `"<type>:<target id>"` -> target id
//! - `notes`: Automerge Text, long free text that two people may edit at once
//! - `timeline`: list of maps, append-only (event actions, visit reviews, deletes and restores)
//! - `visited`, `checklist`, `attachments`: visits only (set map, answer map, append-only list)
//! - `dups`: people, places and organisations only, duplicate decisions (map of strings, created by the
//!   first decision): `<other id>` -> `merged` (this record absorbed the other) or `distinct` (not a
//!   duplicate); `<other id>/<field>` -> the merged-away record's value of the field this record has
//!   taken into account (see [`crate::duplicates`])
//!
//! Every change carries a JSON [`ChangeNote`] as its Automerge message: who made it, on which device,
//! and what it touched. The relay checks the note's author against the pushing token.

use automerge::{ReadDoc, ROOT};

pub const KIND: &str = "kind";
pub const AREA: &str = "area";
pub const RESPONSIBLE: &str = "responsible";
pub const DELETED: &str = "deleted";
pub const FIELDS: &str = "f";
pub const ATTRS: &str = "attrs";
pub const TAGS: &str = "tags";
pub const LINKS: &str = "links";
pub const NOTES: &str = "notes";
pub const TIMELINE: &str = "timeline";
pub const VISITED: &str = "visited";
pub const CHECKLIST: &str = "checklist";
pub const ATTACHMENTS: &str = "attachments";
pub const DUPS: &str = "dups";

/// The areas a document says it belongs to: its home area and, for events, the responsible area.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordAreas {
    pub area: Option<String>,
    pub responsible: Option<String>,
}

impl RecordAreas {
    /// Every distinct area the record is visible from.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        let resp = match (&self.area, &self.responsible) {
            (Some(a), Some(r)) if a == r => None,
            (_, r) => r.as_deref(),
        };
        self.area.as_deref().into_iter().chain(resp)
    }
}

/// Reads a root-level string value.
pub fn root_str<D: ReadDoc>(doc: &D, key: &str) -> Option<String> {
    match doc.get(ROOT, key) {
        Ok(Some((value, _))) => value.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Reads `area` and `responsible` from a record document. The relay calls this to decide scope.
pub fn record_areas<D: ReadDoc>(doc: &D) -> RecordAreas {
    RecordAreas {
        area: root_str(doc, AREA),
        responsible: root_str(doc, RESPONSIBLE),
    }
}

/// True when a record id has the expected shape: 32 lowercase hex characters.
pub fn is_valid_record_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when an area id has the expected shape: 1-64 of `[A-Za-z0-9_-]`.
pub fn is_valid_area_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

use crate::model::{AttachmentRef, Kind, Link, LinkType, Record, TimelineEntry};
use automerge::{legacy, Change, ObjId, ObjType, ScalarValueRef, Value, ValueRef};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The id of a root-level object, if the document has one under `key`.
pub fn root_obj<D: ReadDoc>(doc: &D, key: &str) -> Option<ObjId> {
    match doc.get(ROOT, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    }
}

fn scalar_string(value: &Value<'_>) -> Option<String> {
    match value {
        Value::Scalar(s) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            automerge::ScalarValue::Boolean(b) => Some(b.to_string()),
            automerge::ScalarValue::Int(i) => Some(i.to_string()),
            automerge::ScalarValue::Uint(u) => Some(u.to_string()),
            automerge::ScalarValue::F64(f) => Some(f.to_string()),
            automerge::ScalarValue::Timestamp(t) => Some(t.to_string()),
            _ => None,
        },
        Value::Object(_) => None,
    }
}

/// A map of plain string values, plus the keys that hold concurrent values.
pub fn string_map<D: ReadDoc>(doc: &D, obj: &ObjId) -> (BTreeMap<String, String>, Vec<String>) {
    let mut values = BTreeMap::new();
    let mut conflicted = Vec::new();
    for item in doc.map_range(obj, ..) {
        let value: Value<'static> = item.value.into();
        if let Some(s) = scalar_string(&value) {
            values.insert(item.key.to_string(), s);
        }
        if item.conflict {
            conflicted.push(item.key.to_string());
        }
    }
    (values, conflicted)
}

fn map_keys<D: ReadDoc>(doc: &D, key: &str) -> Vec<String> {
    root_obj(doc, key)
        .map(|o| doc.keys(&o).collect())
        .unwrap_or_default()
}

fn list_of_maps<D: ReadDoc>(doc: &D, key: &str) -> Vec<BTreeMap<String, String>> {
    let Some(list) = root_obj(doc, key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..doc.length(&list) {
        if let Ok(Some((Value::Object(ObjType::Map), entry))) = doc.get(&list, i) {
            out.push(string_map(doc, &entry).0);
        }
    }
    out
}

/// The keys of a timeline entry, in the order [`timeline_entry`] takes their values.
const TIMELINE_ENTRY: [&str; 6] = ["at", "by", "action", "from", "to", "comment"];
/// The keys of an attachment entry, in the order [`attachment_ref`] takes their values.
const ATTACHMENT_ENTRY: [&str; 4] = ["sha256", "name", "mime", "size"];

fn timeline_entry([at, by, action, from, to, comment]: [Option<String>; 6]) -> TimelineEntry {
    TimelineEntry {
        at: at.unwrap_or_default(),
        by: by.unwrap_or_default(),
        action: action.unwrap_or_default(),
        from,
        to,
        comment,
    }
}

fn attachment_ref([sha256, name, mime, size]: [Option<String>; 4]) -> AttachmentRef {
    AttachmentRef {
        sha256: sha256.unwrap_or_default(),
        name: name.unwrap_or_default(),
        mime: mime.unwrap_or_default(),
        size: size.and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

/// A link as the `links` map keys it: `"<type>:<target id>"`.
fn parse_link(key: &str) -> Option<Link> {
    let (t, target) = key.split_once(':')?;
    Some(Link {
        link_type: LinkType::parse(t)?,
        target: target.to_owned(),
    })
}

/// Reads the whole record view of a document. Fails only when the document lacks a valid kind or area,
/// which a document made by Gridwork always has after its first change.
pub fn read_record<D: ReadDoc>(id: &str, doc: &D) -> Option<Record> {
    let kind = Kind::parse(&root_str(doc, KIND)?)?;
    let area = root_str(doc, AREA)?;
    let mut conflicted_fields = Vec::new();
    let (fields, conflicts) = root_obj(doc, FIELDS)
        .map(|o| string_map(doc, &o))
        .unwrap_or_default();
    conflicted_fields.extend(conflicts);
    let (attrs, conflicts) = root_obj(doc, ATTRS)
        .map(|o| string_map(doc, &o))
        .unwrap_or_default();
    conflicted_fields.extend(conflicts.into_iter().map(|k| format!("attrs.{k}")));
    for key in [AREA, RESPONSIBLE, DELETED] {
        if doc.get_all(ROOT, key).map(|v| v.len() > 1).unwrap_or(false) {
            conflicted_fields.push(key.to_owned());
        }
    }
    let links = map_keys(doc, LINKS)
        .iter()
        .filter_map(|k| parse_link(k))
        .collect();
    let notes = root_obj(doc, NOTES)
        .and_then(|o| doc.text(&o).ok())
        .unwrap_or_default();
    let timeline = list_of_maps(doc, TIMELINE)
        .into_iter()
        .map(|mut m| timeline_entry(TIMELINE_ENTRY.map(|k| m.remove(k))))
        .collect();
    let attachments = list_of_maps(doc, ATTACHMENTS)
        .into_iter()
        .map(|mut m| attachment_ref(ATTACHMENT_ENTRY.map(|k| m.remove(k))))
        .collect();
    let deleted = matches!(doc.get(ROOT, DELETED), Ok(Some((v, _))) if v.as_bool() == Some(true));
    Some(Record {
        id: id.to_owned(),
        kind,
        area,
        responsible: root_str(doc, RESPONSIBLE),
        deleted,
        fields,
        attrs,
        tags: map_keys(doc, TAGS),
        links,
        notes,
        timeline,
        visited: map_keys(doc, VISITED),
        checklist: root_obj(doc, CHECKLIST)
            .map(|o| string_map(doc, &o).0)
            .unwrap_or_default(),
        attachments,
        dups: root_obj(doc, DUPS)
            .map(|o| string_map(doc, &o).0)
            .unwrap_or_default(),
        conflicted_fields,
    })
}

/// What a change says about itself in its Automerge message: who made it, on which device, what it did
/// and which fields it touched. Devices write it; history shows it; the relay checks `user` and
/// `device` against the token that pushed the change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeNote {
    pub user: String,
    /// The device id (absent in changes made before protocol version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The city forms the author's device judged the change by: the first 16 hex digits of their
    /// [`crate::forms_version`] (absent when it had none). The relay checks attribute values by its
    /// forms only when they are these: a change made offline under older forms lands, and values that
    /// no longer fit are flagged like any value entered under an earlier form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forms: Option<String>,
}

impl ChangeNote {
    pub fn new(user: &str, device: &str, action: &str, fields: Vec<String>) -> Self {
        ChangeNote {
            user: user.to_owned(),
            device: Some(device.to_owned()),
            action: action.to_owned(),
            fields,
            forms: None,
        }
    }

    /// The note naming the forms (by [`crate::forms_version`]) the change was judged by.
    pub fn with_forms(mut self, forms_version: Option<&str>) -> Self {
        self.forms = forms_version.map(|v| crate::model::forms_tag(v).to_owned());
        self
    }

    /// Reads a change message; `None` when it is absent or not a note.
    pub fn parse(message: Option<&str>) -> Option<ChangeNote> {
        message.and_then(|m| serde_json::from_str(m).ok())
    }
}

/// What the rule book sees of a record: its view, plus every value of each conflicted field.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordState {
    pub record: Record,
    /// Field (as in `Record::conflicted_fields`: `name`, `attrs.<key>`, `area`, ...) -> its concurrent
    /// values, the winning one last.
    pub conflicts: BTreeMap<String, Vec<String>>,
}

impl RecordState {
    /// A state without conflicts (tests and freshly made records).
    pub fn of(record: Record) -> Self {
        RecordState {
            record,
            conflicts: BTreeMap::new(),
        }
    }
}

/// Why a document is not a well-formed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn shape(msg: impl Into<String>) -> ShapeError {
    ShapeError(msg.into())
}

/// Which Automerge type each root key must hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Str,
    Bool,
    /// A map of strings.
    StrMap,
    /// A map used as a set: key -> true.
    SetMap,
    Text,
    /// A list of maps of strings.
    ListOfMaps,
}

fn slot(key: &str) -> Option<Slot> {
    layout_key(key).map(|(_, slot)| slot)
}

/// A root key of the layout, as the constant that names it, and its slot.
fn layout_key(key: &str) -> Option<(&'static str, Slot)> {
    Some(match key {
        KIND => (KIND, Slot::Str),
        AREA => (AREA, Slot::Str),
        RESPONSIBLE => (RESPONSIBLE, Slot::Str),
        DELETED => (DELETED, Slot::Bool),
        FIELDS => (FIELDS, Slot::StrMap),
        ATTRS => (ATTRS, Slot::StrMap),
        LINKS => (LINKS, Slot::StrMap),
        CHECKLIST => (CHECKLIST, Slot::StrMap),
        DUPS => (DUPS, Slot::StrMap),
        TAGS => (TAGS, Slot::SetMap),
        VISITED => (VISITED, Slot::SetMap),
        NOTES => (NOTES, Slot::Text),
        TIMELINE => (TIMELINE, Slot::ListOfMaps),
        ATTACHMENTS => (ATTACHMENTS, Slot::ListOfMaps),
        _ => return None,
    })
}

fn is_str(v: &Value<'_>) -> bool {
    matches!(v, Value::Scalar(s) if matches!(s.as_ref(), automerge::ScalarValue::Str(_)))
}

fn check_str_map<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str, set: bool) -> Result<(), ShapeError> {
    for item in doc.map_range(obj, ..) {
        let values = doc
            .get_all(obj, item.key.as_ref())
            .map_err(|_| shape(format!("`{key}` is unreadable")))?;
        for (v, _) in values {
            let ok = if set {
                matches!(&v, Value::Scalar(s) if matches!(s.as_ref(), automerge::ScalarValue::Boolean(true)))
            } else {
                is_str(&v)
            };
            if !ok {
                return Err(shape(format!("`{key}` holds a value of the wrong type")));
            }
        }
    }
    Ok(())
}

/// Checks that a document has exactly the layout above: known root keys, each of its type, nothing
/// nested deeper than the layout allows. Concurrent values are checked too.
pub fn check_shape<D: ReadDoc>(doc: &D) -> Result<(), ShapeError> {
    for key in doc.keys(ROOT) {
        let Some(slot) = slot(&key) else {
            return Err(shape(format!(
                "unknown root key `{}`",
                key.chars().take(32).collect::<String>()
            )));
        };
        let values = doc
            .get_all(ROOT, key.as_str())
            .map_err(|_| shape(format!("`{key}` is unreadable")))?;
        for (value, id) in values {
            let ok = match (slot, &value) {
                (Slot::Str, v) => is_str(v),
                (Slot::Bool, Value::Scalar(s)) => {
                    matches!(s.as_ref(), automerge::ScalarValue::Boolean(_))
                }
                (Slot::StrMap, Value::Object(ObjType::Map)) => {
                    check_str_map(doc, &id, &key, false)?;
                    true
                }
                (Slot::SetMap, Value::Object(ObjType::Map)) => {
                    check_str_map(doc, &id, &key, true)?;
                    true
                }
                (Slot::Text, Value::Object(ObjType::Text)) => true,
                (Slot::ListOfMaps, Value::Object(ObjType::List)) => {
                    for i in 0..doc.length(&id) {
                        let entries = doc
                            .get_all(&id, i)
                            .map_err(|_| shape(format!("`{key}` is unreadable")))?;
                        for (entry, entry_id) in entries {
                            if !matches!(entry, Value::Object(ObjType::Map)) {
                                return Err(shape(format!(
                                    "`{key}` holds something other than entries"
                                )));
                            }
                            check_str_map(doc, &entry_id, &key, false)?;
                        }
                    }
                    true
                }
                _ => false,
            };
            if !ok {
                return Err(shape(format!("`{key}` holds a value of the wrong type")));
            }
        }
    }
    Ok(())
}

fn value_text(value: &Value<'_>) -> String {
    scalar_string(value).unwrap_or_else(|| "(object)".into())
}

// ---------------------------------------------------------------- the record state in one walk

/// Reads a record's state for the rule book: its shape checked, its view, and every value of each
/// conflicted field. The same as [`check_shape`] followed by [`read_record`] (and the same errors), in
/// one walk of the document; see [`DocState`].
pub fn read_state<D: ReadDoc>(id: &str, doc: &D) -> Result<RecordState, ShapeError> {
    DocState::read(id, doc).map(DocState::into_state)
}

/// A record's state as read from its document, with what it takes to bring it up to date after a
/// change by reading again only the root keys the change touched ([`DocState::after`]): a field edit
/// reads the `f` map again, not the timeline or the notes.
///
/// Reading is one walk of the document: every value is type-checked where it is read (concurrent
/// values too), so a state exists only for a well-formed document, and a malformed one gets the error
/// [`check_shape`] gives it.
#[derive(Debug, Clone)]
pub struct DocState {
    state: RecordState,
    /// Where the concurrent values of `state.conflicts` come from.
    sources: ConflictSources,
    /// The root key every object met while reading lives under (an object never moves, so entries
    /// stay true; objects of keys read again are added).
    homes: HashMap<ObjId, &'static str>,
}

/// Two states are equal when the rule book sees them alike (`homes` is a cache).
impl PartialEq for DocState {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state && self.sources == other.sources
    }
}

/// The concurrent values of a record by where they live: `RecordState::conflicts` names them by
/// field, which does not say where (a field of `f` may be called `area`).
#[derive(Debug, Clone, Default, PartialEq)]
struct ConflictSources {
    /// Conflicted keys of the winning `f` map, in key order, each with its values (the winner last).
    fields: Vec<(String, Vec<String>)>,
    /// The same for the winning `attrs` map.
    attrs: Vec<(String, Vec<String>)>,
    /// The values of each of [`ROOT_CONFLICTS`] when it is conflicted.
    root: [Option<Vec<String>>; 3],
}

/// The root keys whose concurrent values the record view reports, in the order it reports them.
const ROOT_CONFLICTS: [&str; 3] = [AREA, RESPONSIBLE, DELETED];

/// Where a read puts what it finds.
struct Sink<'r> {
    record: &'r mut Record,
    sources: &'r mut ConflictSources,
    homes: &'r mut HashMap<ObjId, &'static str>,
}

impl DocState {
    /// Reads the state of record `id` from its whole document.
    pub fn read<D: ReadDoc>(id: &str, doc: &D) -> Result<DocState, ShapeError> {
        // Kind and area set below: a document without a valid kind and area has no state.
        let mut record = Record::empty(id, Kind::Person, String::new());
        let (mut sources, mut homes) = (ConflictSources::default(), HashMap::new());
        let mut sink = Sink {
            record: &mut record,
            sources: &mut sources,
            homes: &mut homes,
        };
        let (mut kind, mut area) = (None, None);
        for item in doc.map_range(ROOT, ..) {
            let values = if item.conflict {
                all_values(doc, &ROOT, &item.key, &item.key)?
            } else {
                let id = matches!(item.value, ValueRef::Object(_)).then(|| item.id());
                vec![Val::of_ref(item.value, id)]
            };
            let winner = read_root_key(doc, &item.key, &values, &mut sink)?;
            match item.key.as_ref() {
                KIND => kind = winner,
                AREA => area = winner,
                _ => {}
            }
        }
        match (kind.as_deref().and_then(Kind::parse), area) {
            (Some(kind), Some(area)) => (record.kind, record.area) = (kind, area),
            _ => return Err(shape("the record has no kind or area")),
        }
        let conflicts = settle_conflicts(doc, &mut record, &sources)?;
        Ok(DocState {
            state: RecordState { record, conflicts },
            sources,
            homes,
        })
    }

    /// The state of the record in `doc`: the document this state was read from, with `change`
    /// applied to it (successfully). Equal to [`DocState::read`] of `doc`, errors included.
    pub fn after<D: ReadDoc>(&self, doc: &D, change: &Change) -> Result<DocState, ShapeError> {
        self.refresh(doc, &self.touched_by(change))
    }

    /// The root keys `change` touches in the document this state was read from: an operation on a
    /// root key, or on an object under one (a field edit touches `f`, a new timeline entry
    /// `timeline`). [`Touched::all`] when an operation names an object this state did not meet (one
    /// that a concurrent change removed or replaced). The change must have applied to the document,
    /// so that Automerge has checked it.
    pub fn touched_by(&self, change: &Change) -> Touched {
        let mut keys: BTreeSet<String> = BTreeSet::new();
        // Objects the change makes, and their homes.
        let mut made: HashMap<ObjId, String> = HashMap::new();
        let (actor, start) = (change.actor_id(), change.start_op().get());
        for (i, op) in change.decode().operations.into_iter().enumerate() {
            let home: &str = match &op.obj {
                legacy::ObjectId::Root => match &op.key {
                    legacy::Key::Map(key) => key,
                    legacy::Key::Seq(_) => return Touched::all(),
                },
                legacy::ObjectId::Id(legacy::OpId(counter, actor)) => {
                    let obj = ObjId::Id(*counter, actor.clone(), 0);
                    match (self.homes.get(&obj), made.get(&obj)) {
                        (Some(home), _) => home,
                        (None, Some(home)) => home,
                        (None, None) => return Touched::all(),
                    }
                }
            };
            if !keys.contains(home) {
                keys.insert(home.to_owned());
            }
            if let legacy::OpType::Make(_) = op.action {
                let home = home.to_owned();
                made.insert(ObjId::Id(start + i as u64, actor.clone(), 0), home);
            }
        }
        Touched { keys: Some(keys) }
    }

    /// The state of the record in `doc`, a document that differs from the one this state was read
    /// from by changes that touched only the root keys `touched`: those keys are read again, the rest
    /// is kept. Equal to [`DocState::read`] of `doc`, errors included.
    pub fn refresh<D: ReadDoc>(&self, doc: &D, touched: &Touched) -> Result<DocState, ShapeError> {
        let keys = match &touched.keys {
            // The kind and the home area make the record (it has no state without them): with
            // them, the whole record is read. The area changes on moves only.
            Some(keys) if !keys.contains(KIND) && !keys.contains(AREA) => keys,
            _ => return DocState::read(&self.state.record.id, doc),
        };
        let mut next = self.clone();
        let mut sink = Sink {
            record: &mut next.state.record,
            sources: &mut next.sources,
            homes: &mut next.homes,
        };
        // In key order, as a whole read meets them, so that the first malformed key is the one
        // reported; the keys not touched are as well-formed as they were.
        for key in keys {
            sink.forget(key);
            let values = all_values(doc, &ROOT, key, key)?;
            if !values.is_empty() {
                read_root_key(doc, key, &values, &mut sink)?;
            }
        }
        next.state.conflicts = settle_conflicts(doc, &mut next.state.record, &next.sources)?;
        Ok(next)
    }

    /// The record state as the rule book reads it.
    pub fn state(&self) -> &RecordState {
        &self.state
    }

    pub fn into_state(self) -> RecordState {
        self.state
    }
}

/// The root keys some changes touched ([`DocState::touched_by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// `None`: every key.
    keys: Option<BTreeSet<String>>,
}

impl Touched {
    /// Every root key: a refresh reads the whole document.
    pub fn all() -> Touched {
        Touched { keys: None }
    }

    /// The keys, when known.
    pub fn keys(&self) -> Option<&BTreeSet<String>> {
        self.keys.as_ref()
    }
}

impl Sink<'_> {
    /// Clears what root key `key` contributes to the state (never the kind and area).
    fn forget(&mut self, key: &str) {
        let (r, s) = (&mut *self.record, &mut *self.sources);
        match key {
            RESPONSIBLE => (r.responsible, s.root[1]) = (None, None),
            DELETED => (r.deleted, s.root[2]) = (false, None),
            FIELDS => {
                r.fields.clear();
                s.fields.clear();
            }
            ATTRS => {
                r.attrs.clear();
                s.attrs.clear();
            }
            TAGS => r.tags.clear(),
            LINKS => r.links.clear(),
            NOTES => r.notes.clear(),
            TIMELINE => r.timeline.clear(),
            VISITED => r.visited.clear(),
            CHECKLIST => r.checklist.clear(),
            DUPS => r.dups.clear(),
            ATTACHMENTS => r.attachments.clear(),
            _ => {}
        }
    }
}

/// A value as the one-walk reader needs it, from either of Automerge's reading APIs.
enum Val<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Object(ObjType, ObjId),
    /// Any other scalar: the layout has no place for it.
    Other,
}

impl<'a> Val<'a> {
    /// From a range item's value and, for an object the caller reads, its id (the root stands in
    /// for an object that is only type-checked).
    fn of_ref(value: ValueRef<'a>, id: Option<ObjId>) -> Val<'a> {
        match value {
            ValueRef::Object(t) => Val::Object(t, id.unwrap_or(ObjId::Root)),
            ValueRef::Scalar(ScalarValueRef::Str(s)) => Val::Str(s),
            ValueRef::Scalar(ScalarValueRef::Boolean(b)) => Val::Bool(b),
            ValueRef::Scalar(_) => Val::Other,
        }
    }

    fn of_value(value: &Value<'_>, id: &ObjId) -> Val<'static> {
        match value {
            Value::Object(t) => Val::Object(*t, id.clone()),
            Value::Scalar(s) => match s.as_ref() {
                automerge::ScalarValue::Str(s) => Val::Str(Cow::Owned(s.to_string())),
                automerge::ScalarValue::Boolean(b) => Val::Bool(*b),
                _ => Val::Other,
            },
        }
    }

    /// The value as a conflict lists it (the values of conflicted fields are strings or booleans).
    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Object(..) | Val::Other => "(object)".into(),
        }
    }
}

/// Every value of `key` in map `obj` (under root key `root_key`), the winning one last.
fn all_values<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    root_key: &str,
) -> Result<Vec<Val<'static>>, ShapeError> {
    let values = doc
        .get_all(obj, key)
        .map_err(|_| shape(format!("`{root_key}` is unreadable")))?;
    Ok(values.iter().map(|(v, id)| Val::of_value(v, id)).collect())
}

/// Checks the values of root key `key` (the winning one last) against the layout and reads the
/// winning one into the sink; returns the winning string of `kind` and `area`, which make the record.
fn read_root_key<D: ReadDoc>(
    doc: &D,
    key: &str,
    values: &[Val<'_>],
    sink: &mut Sink<'_>,
) -> Result<Option<String>, ShapeError> {
    let Some((key, slot)) = layout_key(key) else {
        return Err(shape(format!(
            "unknown root key `{}`",
            key.chars().take(32).collect::<String>()
        )));
    };
    let r = &mut *sink.record;
    let mut made = None;
    for (i, value) in values.iter().enumerate() {
        let winner = i + 1 == values.len();
        if let Val::Object(_, obj) = value {
            sink.homes.insert(obj.clone(), key);
        }
        match (slot, value) {
            (Slot::Str, Val::Str(v)) if winner => match key {
                RESPONSIBLE => r.responsible = Some(v.to_string()),
                _ => made = Some(v.to_string()),
            },
            (Slot::Bool, Val::Bool(b)) if winner => r.deleted = *b,
            (Slot::Str, Val::Str(_)) | (Slot::Bool, Val::Bool(_)) => {}
            (Slot::StrMap | Slot::SetMap, Val::Object(ObjType::Map, obj)) => {
                let read = match key {
                    _ if !winner => MapRead::Check,
                    FIELDS => MapRead::Strings(&mut r.fields, Some(&mut sink.sources.fields)),
                    ATTRS => MapRead::Strings(&mut r.attrs, Some(&mut sink.sources.attrs)),
                    CHECKLIST => MapRead::Strings(&mut r.checklist, None),
                    DUPS => MapRead::Strings(&mut r.dups, None),
                    LINKS => MapRead::Links(&mut r.links),
                    TAGS => MapRead::Keys(&mut r.tags),
                    VISITED => MapRead::Keys(&mut r.visited),
                    _ => MapRead::Check,
                };
                walk_map(doc, obj, key, slot == Slot::SetMap, read)?;
            }
            (Slot::Text, Val::Object(ObjType::Text, obj)) => {
                if winner {
                    r.notes = doc.text(obj).unwrap_or_default();
                }
            }
            (Slot::ListOfMaps, Val::Object(ObjType::List, obj)) => {
                let read = match key {
                    _ if !winner => ListRead::Check,
                    TIMELINE => ListRead::Timeline(&mut r.timeline),
                    ATTACHMENTS => ListRead::Attachments(&mut r.attachments),
                    _ => ListRead::Check,
                };
                walk_list(doc, obj, key, read, sink.homes)?;
            }
            _ => return Err(shape(format!("`{key}` holds a value of the wrong type"))),
        }
    }
    if values.len() > 1 {
        if let Some(i) = ROOT_CONFLICTS.iter().position(|k| *k == key) {
            sink.sources.root[i] = Some(values.iter().map(Val::text).collect());
        }
    }
    Ok(made)
}

/// What [`walk_map`] keeps of a map's winning values besides checking them all.
enum MapRead<'r> {
    /// Nothing (a value that lost to a concurrent one: only its shape matters).
    Check,
    /// The values, and the conflicted keys with all their values.
    Strings(
        &'r mut BTreeMap<String, String>,
        Option<&'r mut Vec<(String, Vec<String>)>>,
    ),
    /// The keys.
    Keys(&'r mut Vec<String>),
    /// The keys, read as links.
    Links(&'r mut Vec<Link>),
    /// The values of the named keys (the fields of a list entry).
    Named(&'r mut [(&'static str, Option<String>)]),
}

/// Checks every value of map `obj` under root key `root_key` (concurrent values too): strings, or
/// `true` in a map used as a set; and keeps what `read` asks for.
fn walk_map<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    root_key: &str,
    set: bool,
    mut read: MapRead<'_>,
) -> Result<(), ShapeError> {
    let fits = |v: &Val<'_>| match v {
        Val::Bool(true) => set,
        Val::Str(_) => !set,
        _ => false,
    };
    let wrong = || shape(format!("`{root_key}` holds a value of the wrong type"));
    for item in doc.map_range(obj, ..) {
        let all = if item.conflict {
            let all = all_values(doc, obj, &item.key, root_key)?;
            if !all.iter().all(fits) {
                return Err(wrong());
            }
            Some(all)
        } else {
            None
        };
        let value = Val::of_ref(item.value, None);
        if !fits(&value) {
            return Err(wrong());
        }
        match &mut read {
            MapRead::Check => {}
            MapRead::Strings(values, conflicts) => {
                if let Val::Str(v) = value {
                    values.insert(item.key.to_string(), v.into_owned());
                }
                if let (Some(conflicts), Some(all)) = (conflicts, all) {
                    conflicts.push((item.key.into_owned(), all.iter().map(Val::text).collect()));
                }
            }
            MapRead::Keys(keys) => keys.push(item.key.into_owned()),
            MapRead::Links(links) => links.extend(parse_link(&item.key)),
            MapRead::Named(named) => {
                if let (Some(slot), Val::Str(v)) = (
                    named.iter_mut().find(|(k, _)| *k == item.key.as_ref()),
                    value,
                ) {
                    slot.1 = Some(v.into_owned());
                }
            }
        }
    }
    Ok(())
}

/// What [`walk_list`] keeps of a list of entries besides checking them all.
enum ListRead<'r> {
    Check,
    Timeline(&'r mut Vec<TimelineEntry>),
    Attachments(&'r mut Vec<AttachmentRef>),
}

/// Checks that list `obj` under root key `root_key` holds maps of strings only (concurrent entries
/// too), keeps the winning entries as `read` asks, and notes where every entry lives in `homes`.
fn walk_list<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    root_key: &'static str,
    mut read: ListRead<'_>,
    homes: &mut HashMap<ObjId, &'static str>,
) -> Result<(), ShapeError> {
    let not_entry = || shape(format!("`{root_key}` holds something other than entries"));
    for item in doc.list_range(obj, ..) {
        let entries: Vec<(bool, ObjId)> = if item.conflict {
            doc.get_all(obj, item.index)
                .map_err(|_| shape(format!("`{root_key}` is unreadable")))?
                .into_iter()
                .map(|(v, id)| (matches!(v, Value::Object(ObjType::Map)), id))
                .collect()
        } else {
            let is_map = matches!(item.value, ValueRef::Object(ObjType::Map));
            vec![(is_map, item.id())]
        };
        for (i, (is_map, entry)) in entries.iter().enumerate() {
            if !is_map {
                return Err(not_entry());
            }
            homes.insert(entry.clone(), root_key);
            let winner = i + 1 == entries.len();
            match &mut read {
                ListRead::Timeline(timeline) if winner => {
                    let mut named = TIMELINE_ENTRY.map(|k| (k, None));
                    walk_map(doc, entry, root_key, false, MapRead::Named(&mut named))?;
                    timeline.push(timeline_entry(named.map(|(_, v)| v)));
                }
                ListRead::Attachments(attachments) if winner => {
                    let mut named = ATTACHMENT_ENTRY.map(|k| (k, None));
                    walk_map(doc, entry, root_key, false, MapRead::Named(&mut named))?;
                    attachments.push(attachment_ref(named.map(|(_, v)| v)));
                }
                // An entry that lost to a concurrent one, or of a list that lost: only its shape.
                _ => walk_map(doc, entry, root_key, false, MapRead::Check)?,
            }
        }
    }
    Ok(())
}

/// Fills `r.conflicted_fields` from the sources in the record view's order (`f`'s, `attrs.`'s, then
/// the root keys'), and returns every value of each, found where the record view's names point (an
/// `f` field called `area` names the root key).
fn settle_conflicts<D: ReadDoc>(
    doc: &D,
    r: &mut Record,
    s: &ConflictSources,
) -> Result<BTreeMap<String, Vec<String>>, ShapeError> {
    r.conflicted_fields = s
        .fields
        .iter()
        .map(|(k, _)| k.clone())
        .chain(s.attrs.iter().map(|(k, _)| format!("attrs.{k}")))
        .chain(
            ROOT_CONFLICTS
                .iter()
                .zip(&s.root)
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| (*k).to_owned()),
        )
        .collect();
    let mut conflicts = BTreeMap::new();
    let known = |list: &[(String, Vec<String>)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    for field in &r.conflicted_fields {
        let (values, obj, key) = if let Some(name) = field.strip_prefix("attrs.") {
            (known(&s.attrs, name), Some(ATTRS), name)
        } else if let Some(i) = ROOT_CONFLICTS.iter().position(|k| k == field) {
            (s.root[i].clone(), None, field.as_str())
        } else {
            (known(&s.fields, field), Some(FIELDS), field.as_str())
        };
        let values = match values {
            Some(values) => values,
            // A name that points elsewhere than where its conflict is (an `f` field called
            // `attrs.x`, whose name points into `attrs`): the values where it points.
            None => {
                let obj = match obj {
                    None => ROOT,
                    Some(key) => match root_obj(doc, key) {
                        Some(obj) => obj,
                        None => continue,
                    },
                };
                doc.get_all(&obj, key)
                    .map_err(|_| shape(format!("`{field}` is unreadable")))?
                    .iter()
                    .map(|(v, _)| value_text(v))
                    .collect()
            }
        };
        conflicts.insert(field.clone(), values);
    }
    Ok(conflicts)
}

#[cfg(test)]
mod tests;
