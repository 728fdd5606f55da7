//! The domain: record kinds and their fields, areas, roles, events and visits.
mod area;
mod event;
mod form;
mod kind;
mod schedule;
pub mod time;

pub use area::{check_placement, Area, AreaLevel};
pub use event::{EventAction, EventStatus};
pub use form::{
    form_fields, forms_for_scope, forms_tag, forms_version, is_resident_id, read_form, FieldValue,
    Form, FormField, FormType, ValueState, MAX_FORM_FIELDS,
};
pub use kind::{mask, search_number, FieldSpec, FieldType, Kind, LinkType, ReviewState};
pub use schedule::{
    schedules_version, DueState, Every, Schedule, MAX_EVERY_DAYS, MAX_EVERY_MONTHS,
};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a user may do: a worker looks after its own area, a supervisor the subtree under its area,
/// an operator everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Supervisor,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Supervisor => "supervisor",
            Role::Operator => "operator",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "worker" => Role::Worker,
            "supervisor" => Role::Supervisor,
            "operator" => Role::Operator,
            _ => return None,
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::parse(s).ok_or_else(|| format!("unknown role {s:?} (worker | supervisor | operator)"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who works on this device. Fixed when the store is created; every change records the user,
/// and the device is the Automerge actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
    pub role: Role,
    pub area: String,
}

/// A record as read from its document. Every value but the id, kind, area and deleted flag may be
/// absent when read (an empty one, as the store's compact record views leave them out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    pub area: String,
    /// Events only: the area currently responsible for it.
    #[serde(default)]
    pub responsible: Option<String>,
    pub deleted: bool,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub notes: String,
    /// Events and visits: the append-only timeline.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// Visits only: ids of the records visited.
    #[serde(default)]
    pub visited: Vec<String>,
    /// Visits only: checklist answers.
    #[serde(default)]
    pub checklist: BTreeMap<String, String>,
    /// Visits only: attachments in the order they were added.
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
    /// People, places and organisations: duplicate decisions (see `gridwork_protocol::duplicates`).
    #[serde(default)]
    pub dups: BTreeMap<String, String>,
    /// Fields with concurrent values that nobody has resolved yet.
    #[serde(default)]
    pub conflicted_fields: Vec<String>,
}

/// [`Record`] serialised without its empty values (the id, kind, area and deleted flag always stay:
/// `Record` requires them).
struct Compact<'a>(&'a Record);

impl Serialize for Compact<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &r.id)?;
        m.serialize_entry("kind", &r.kind)?;
        m.serialize_entry("area", &r.area)?;
        if let Some(v) = r.responsible.as_ref().filter(|v| !v.is_empty()) {
            m.serialize_entry("responsible", v)?;
        }
        m.serialize_entry("deleted", &r.deleted)?;
        if !r.fields.is_empty() {
            m.serialize_entry("fields", &r.fields)?;
        }
        if !r.attrs.is_empty() {
            m.serialize_entry("attrs", &r.attrs)?;
        }
        if !r.tags.is_empty() {
            m.serialize_entry("tags", &r.tags)?;
        }
        if !r.links.is_empty() {
            m.serialize_entry("links", &r.links)?;
        }
        if !r.notes.is_empty() {
            m.serialize_entry("notes", &r.notes)?;
        }
        if !r.timeline.is_empty() {
            m.serialize_entry("timeline", &r.timeline)?;
        }
        if !r.visited.is_empty() {
            m.serialize_entry("visited", &r.visited)?;
        }
        if !r.checklist.is_empty() {
            m.serialize_entry("checklist", &r.checklist)?;
        }
        if !r.attachments.is_empty() {
            m.serialize_entry("attachments", &r.attachments)?;
        }
        if !r.dups.is_empty() {
            m.serialize_entry("dups", &r.dups)?;
        }
        if !r.conflicted_fields.is_empty() {
            m.serialize_entry("conflicted_fields", &r.conflicted_fields)?;
        }
        m.end()
    }
}

impl Record {
    /// A record of `kind` in `area` with nothing else: no responsible area, not deleted, no values.
    pub fn empty(id: impl Into<String>, kind: Kind, area: impl Into<String>) -> Record {
        Record {
            id: id.into(),
            kind,
            area: area.into(),
            responsible: None,
            deleted: false,
            fields: BTreeMap::new(),
            attrs: BTreeMap::new(),
            tags: Vec::new(),
            links: Vec::new(),
            notes: String::new(),
            timeline: Vec::new(),
            visited: Vec::new(),
            checklist: BTreeMap::new(),
            attachments: Vec::new(),
            dups: BTreeMap::new(),
            conflicted_fields: Vec::new(),
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The record as compact JSON: without its empty values (most records have no links, timeline,
    /// checklist...), which `Record` reads back as empty. The device stores it as its record view and
    /// the relay sends it with snapshot and pull pages (the device's projection of the document).
    pub fn compact_json(&self) -> String {
        serde_json::to_string(&Compact(self)).expect("a record serialises")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub link_type: LinkType,
    pub target: String,
}

/// A link seen from either end, as stored in the projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEdge {
    pub source: String,
    pub link_type: LinkType,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: String,
    pub by: String,
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub sha256: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
}

/// One change in a record's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub hash: String,
    /// The device (Automerge actor) that made the change.
    pub device: String,
    pub user: String,
    /// Seconds since the Unix epoch, as recorded by the device.
    pub time: i64,
    pub action: String,
    pub fields: Vec<String>,
    /// What the change did to each value it touched, read from the document before and after it:
    /// typed fields by name, attributes as `attrs.<name>`, and `area`, `responsible`, `deleted`,
    /// `tags` (sorted, comma-separated) and `notes`.
    #[serde(default)]
    pub changes: Vec<FieldChange>,
}

/// One value a change set, replaced or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One of the concurrent values of a conflicted field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictValue {
    pub value: String,
    pub user: String,
    pub device: String,
    pub time: i64,
    /// The value Automerge picked deterministically; every replica shows the same one.
    pub winner: bool,
    /// For a conflict a merge of duplicates left: the merged-away record this value comes from
    /// (absent for the kept record's own value and for concurrent edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub record_id: String,
    pub kind: Kind,
    pub field: String,
    pub values: Vec<ConflictValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_view_leaves_out_empty_values_and_reads_back_equal() {
        let empty = Record::empty("a".repeat(32), Kind::Place, "g1");
        assert_eq!(
            empty.compact_json(),
            format!(
                r#"{{"id":"{}","kind":"place","area":"g1","deleted":false}}"#,
                "a".repeat(32)
            )
        );
        assert_eq!(
            serde_json::from_str::<Record>(&empty.compact_json()).unwrap(),
            empty
        );
        let mut full = Record::empty("b".repeat(32), Kind::Event, "g2");
        full.responsible = Some("c1".into());
        full.deleted = true;
        full.fields.insert("title".into(), "漏水".into());
        full.attrs.insert("floor".into(), "3".into());
        full.tags = vec!["urgent".into()];
        full.links = vec![Link {
            link_type: LinkType::InvolvedIn,
            target: "c".repeat(32),
        }];
        full.notes = "a \"quoted\" note".into();
        full.timeline = vec![TimelineEntry {
            at: "2026-11-22T08:00:00Z".into(),
            by: "wang".into(),
            action: "report".into(),
            from: None,
            to: Some("reported".into()),
            comment: None,
        }];
        full.visited = vec!["d".repeat(32)];
        full.checklist.insert("ok".into(), "yes".into());
        full.attachments = vec![AttachmentRef {
            sha256: "e".repeat(64),
            name: "photo.jpg".into(),
            mime: "image/jpeg".into(),
            size: 3,
        }];
        full.conflicted_fields = vec!["title".into()];
        full.dups.insert("f".repeat(32), "distinct".into());
        let json = full.compact_json();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), full);
        // Every value is there: the same as the full serialisation, read back.
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            serde_json::to_value(&full).unwrap()
        );
        // An empty responsible area is left out like a missing one.
        let mut blank = empty.clone();
        blank.responsible = Some(String::new());
        assert!(!blank.compact_json().contains("responsible"));
    }
}
