//! Bulk import without building every record's document operation by operation.
//!
//! Automerge builds a new record's first change by splicing each operation into its column store: most of
//! a bulk create's time (BENCHMARKS.md section 7). Records of one
//! *shape* (kind, which fields and attributes are set, which tags) get first changes that differ only in
//! their values, message and time: the same operations on the same keys and objects. So the first record
//! of a shape is made the full way, its change is decoded into its operations (Automerge's
//! `ExpandedChange`), and each further record of that shape is that list with its own values, encoded
//! (a small fraction of the cost).
//!
//! A template is used only once it is proven: the decoded change of the first record, given that
//! record's own values, message and time back, must encode to exactly the bytes Automerge made. Records
//! whose first change depends on more than values (notes are one operation per character; events and
//! visits start with a timeline and times) are always made the full way. `tests/bulk.rs` holds every
//! record made by template equal to what its document reads as, and the relay judges the changes like any
//! other.
use super::records::NewRecord;
use crate::doc::{ATTRS, FIELDS};
use crate::model::{Kind, Record};
use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{Change, ExpandedChange, ScalarValue};

/// What decides the operations of a new record's first change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    kind: Kind,
    /// Fields with a value (empty ones are not written).
    fields: Vec<String>,
    attrs: Vec<String>,
    /// Tags as written, in order.
    tags: Vec<String>,
}

impl Shape {
    /// The shape of `new`, or None when its first change depends on more than its values.
    pub(crate) fn of(new: &NewRecord) -> Option<Shape> {
        let kind = new.kind?;
        if !matches!(
            kind,
            Kind::Person | Kind::Place | Kind::Object | Kind::Organisation
        ) || !new.notes.is_empty()
        {
            return None;
        }
        Some(Shape {
            kind,
            fields: new
                .fields
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.clone())
                .collect(),
            attrs: new.attrs.keys().cloned().collect(),
            tags: new.tags.iter().map(|t| t.trim().to_owned()).collect(),
        })
    }
}

/// The first change of a record of one shape, ready to take other values.
pub(crate) struct Template {
    change: ExpandedChange,
    record: Record,
    fields: ObjectId,
    attrs: ObjectId,
}

impl Template {
    /// The template of the shape of the record whose first change is `change` and view `record`, if it
    /// re-encodes to the same bytes (else None: records of that shape are made the full way).
    pub(crate) fn proven(change: &Change, record: &Record) -> Option<Template> {
        let decoded = change.decode();
        let start = decoded.start_op.get();
        let mut fields = None;
        let mut attrs = None;
        for (i, op) in decoded.operations.iter().enumerate() {
            if let (OpType::Make(_), ObjectId::Root, Key::Map(key)) = (&op.action, &op.obj, &op.key)
            {
                let id = ObjectId::Id(OpId(start + i as u64, decoded.actor_id.clone()));
                match key.as_str() {
                    FIELDS => fields = Some(id),
                    ATTRS => attrs = Some(id),
                    _ => {}
                }
            }
        }
        let template = Template {
            change: decoded,
            record: record.clone(),
            fields: fields?,
            attrs: attrs?,
        };
        let mut again = template.change.clone();
        again.hash = None;
        (Change::from(again).raw_bytes() == change.raw_bytes()).then_some(template)
    }

    /// The first change of record `id` with `new`'s values (of this template's shape), `message` and
    /// `time`, and its record view.
    pub(crate) fn instance(
        &self,
        id: &str,
        new: &NewRecord,
        message: String,
        time: i64,
    ) -> (Change, Record) {
        let mut change = self.change.clone();
        change.hash = None;
        change.message = Some(message);
        change.time = time;
        for op in &mut change.operations {
            let (OpType::Put(_), Key::Map(key)) = (&op.action, &op.key) else {
                continue;
            };
            let value = if op.obj == ObjectId::Root && key.as_str() == crate::doc::AREA {
                Some(new.area.as_str())
            } else if op.obj == self.fields {
                new.fields.get(key.as_str()).map(String::as_str)
            } else if op.obj == self.attrs {
                new.attrs.get(key.as_str()).map(String::as_str)
            } else {
                None
            };
            if let Some(value) = value {
                op.action = OpType::Put(ScalarValue::from(value));
            }
        }
        let mut record = self.record.clone();
        record.id = id.to_owned();
        record.area = new.area.clone();
        record.fields = new
            .fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        record.attrs = new.attrs.clone();
        (Change::from(change), record)
    }
}
