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
