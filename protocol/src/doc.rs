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
use automerge::{ObjId, ObjType, Value};
use std::collections::BTreeMap;

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
        .into_iter()
        .filter_map(|k| {
            let (t, target) = k.split_once(':')?;
            Some(Link {
                link_type: LinkType::parse(t)?,
                target: target.to_owned(),
            })
        })
        .collect();
    let notes = root_obj(doc, NOTES)
        .and_then(|o| doc.text(&o).ok())
        .unwrap_or_default();
    let timeline = list_of_maps(doc, TIMELINE)
        .into_iter()
        .map(|mut m| TimelineEntry {
            at: m.remove("at").unwrap_or_default(),
            by: m.remove("by").unwrap_or_default(),
            action: m.remove("action").unwrap_or_default(),
            from: m.remove("from"),
            to: m.remove("to"),
            comment: m.remove("comment"),
        })
        .collect();
    let attachments = list_of_maps(doc, ATTACHMENTS)
        .into_iter()
        .map(|mut m| AttachmentRef {
            sha256: m.remove("sha256").unwrap_or_default(),
            name: m.remove("name").unwrap_or_default(),
            mime: m.remove("mime").unwrap_or_default(),
            size: m.get("size").and_then(|s| s.parse().ok()).unwrap_or(0),
        })
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
}

impl ChangeNote {
    pub fn new(user: &str, device: &str, action: &str, fields: Vec<String>) -> Self {
        ChangeNote {
            user: user.to_owned(),
            device: Some(device.to_owned()),
            action: action.to_owned(),
            fields,
        }
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
    Some(match key {
        KIND | AREA | RESPONSIBLE => Slot::Str,
        DELETED => Slot::Bool,
        FIELDS | ATTRS | LINKS | CHECKLIST => Slot::StrMap,
        TAGS | VISITED => Slot::SetMap,
        NOTES => Slot::Text,
        TIMELINE | ATTACHMENTS => Slot::ListOfMaps,
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

/// Reads a record's state for the rule book: its shape checked, its view, and every value of each
/// conflicted field.
pub fn read_state<D: ReadDoc>(id: &str, doc: &D) -> Result<RecordState, ShapeError> {
    check_shape(doc)?;
    let record = read_record(id, doc).ok_or_else(|| shape("the record has no kind or area"))?;
    let mut conflicts = BTreeMap::new();
    for field in &record.conflicted_fields {
        let (obj, key) = if let Some(name) = field.strip_prefix("attrs.") {
            (root_obj(doc, ATTRS), name)
        } else if matches!(field.as_str(), AREA | RESPONSIBLE | DELETED) {
            (Some(ROOT), field.as_str())
        } else {
            (root_obj(doc, FIELDS), field.as_str())
        };
        let Some(obj) = obj else { continue };
        let values = doc
            .get_all(&obj, key)
            .map_err(|_| shape(format!("`{field}` is unreadable")))?;
        conflicts.insert(
            field.clone(),
            values.iter().map(|(v, _)| value_text(v)).collect(),
        );
    }
    Ok(RecordState { record, conflicts })
}
