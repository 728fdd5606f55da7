//! The one-walk reader ([`DocState::read`]) against the two-walk definition it replaces
//! ([`check_shape`], then [`read_record`] and the concurrent values of each conflicted field), and
//! [`DocState::refresh`] against a whole read, on random documents: every record kind, concurrent
//! edits by three actors (so conflicts of every kind: values, objects, list entries), and hostile
//! shapes (unknown keys, values of the wrong type, objects nested where the layout has none).
use super::*;
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Prop};
use proptest::prelude::*;

/// The record state as `read_state` defined it before the one-walk reader: the definition the
/// reader must equal, errors included.
fn reference_state<D: ReadDoc>(id: &str, doc: &D) -> Result<RecordState, ShapeError> {
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

const ID: &str = "0123456789abcdef0123456789abcdef";

/// Root keys an operation may name: the layout's, and a few it does not know.
const ROOT_KEYS: [&str; 16] = [
    KIND,
    AREA,
    RESPONSIBLE,
    DELETED,
    FIELDS,
    ATTRS,
    TAGS,
    LINKS,
    NOTES,
    TIMELINE,
    VISITED,
    CHECKLIST,
    ATTACHMENTS,
    "x",
    "ärger",
    "Zz",
];

/// Keys inside objects: field names (some named like root keys or attributes), entry keys, links.
const INNER_KEYS: [&str; 17] = [
    "name",
    "phone",
    "area",
    "deleted",
    "attrs.x",
    "at",
    "by",
    "action",
    "from",
    "comment",
    "sha256",
    "size",
    "lives_at:0123456789abcdef0123456789abcdef",
    "bogus:1",
    "q1",
    "é",
    "",
];

const STRINGS: [&str; 12] = [
    "person",
    "event",
    "visit",
    "place",
    "organisation",
    "g1",
    "g2",
    "",
    "true",
    "12",
    "2026-11-20T08:00:00Z",
    "lives alone",
];

#[derive(Debug, Clone)]
enum ValSpec {
    Str(usize),
    Bool(bool),
    Int(i64),
    Map,
    List,
    Text,
    /// A map of strings, as a timeline entry holds.
    Entry(usize),
}

/// One operation: on the object `target` picks among the document's (its concurrent values that
/// lost included), at the key or index `at` picks. An honest operation puts what the layout has
/// there (`value` is used only for its choices); a hostile one puts `value` as it is.
#[derive(Debug, Clone)]
struct OpSpec {
    target: usize,
    at: usize,
    what: What,
    honest: bool,
    value: ValSpec,
}

#[derive(Debug, Clone, Copy)]
enum What {
    Put,
    Insert,
    Delete,
}

#[derive(Debug, Clone)]
enum Step {
    /// Actor `who` makes one change of these operations.
    Change { who: usize, ops: Vec<OpSpec> },
    /// Actor `who` merges what actor `from` has.
    Merge { who: usize, from: usize },
}

fn val_spec() -> impl Strategy<Value = ValSpec> {
    prop_oneof![
        6 => (0..STRINGS.len()).prop_map(ValSpec::Str),
        1 => any::<bool>().prop_map(ValSpec::Bool),
        1 => (-2i64..3).prop_map(ValSpec::Int),
        1 => Just(ValSpec::Map),
        1 => Just(ValSpec::List),
        1 => Just(ValSpec::Text),
        2 => (0..STRINGS.len()).prop_map(ValSpec::Entry),
    ]
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    let what = prop_oneof![5 => Just(What::Put), 2 => Just(What::Insert), 1 => Just(What::Delete)];
    (
        any::<usize>(),
        any::<usize>(),
        what,
        prop::bool::weighted(0.9),
        val_spec(),
    )
        .prop_map(|(target, at, what, honest, value)| OpSpec {
            target,
            at,
            what,
            honest,
            value,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, prop::collection::vec(op_spec(), 1..4))
            .prop_map(|(who, ops)| Step::Change { who, ops }),
        1 => (0..3usize, 0..3usize).prop_map(|(who, from)| Step::Merge { who, from }),
    ]
}

/// A well-formed record of `kind` with something under every key the kind uses.
fn base(kind: Kind) -> Automerge {
    let mut doc = Automerge::new().with_actor(ActorId::from([1u8; 16]));
    let mut tx = doc.transaction();
    tx.put(ROOT, KIND, kind.as_str()).unwrap();
    tx.put(ROOT, AREA, "g1").unwrap();
    if kind == Kind::Event {
        tx.put(ROOT, RESPONSIBLE, "g1").unwrap();
    }
    tx.put(ROOT, DELETED, false).unwrap();
    let f = tx.put_object(ROOT, FIELDS, ObjType::Map).unwrap();
    tx.put(&f, "name", "Wang").unwrap();
    let attrs = tx.put_object(ROOT, ATTRS, ObjType::Map).unwrap();
    tx.put(&attrs, "floor", "3").unwrap();
    let tags = tx.put_object(ROOT, TAGS, ObjType::Map).unwrap();
    tx.put(&tags, "elderly", true).unwrap();
    let links = tx.put_object(ROOT, LINKS, ObjType::Map).unwrap();
    tx.put(&links, format!("lives_at:{ID}"), ID).unwrap();
    let notes = tx.put_object(ROOT, NOTES, ObjType::Text).unwrap();
    tx.splice_text(&notes, 0, 0, "visited weekly").unwrap();
    let timeline = tx.put_object(ROOT, TIMELINE, ObjType::List).unwrap();
    let entry = tx.insert_object(&timeline, 0, ObjType::Map).unwrap();
    for (k, v) in [
        ("at", "2026-11-20T08:00:00Z"),
        ("by", "wang"),
        ("action", "create"),
    ] {
        tx.put(&entry, k, v).unwrap();
    }
    if kind == Kind::Visit {
        let visited = tx.put_object(ROOT, VISITED, ObjType::Map).unwrap();
        tx.put(&visited, ID, true).unwrap();
        let checklist = tx.put_object(ROOT, CHECKLIST, ObjType::Map).unwrap();
        tx.put(&checklist, "q1", "yes").unwrap();
        let attachments = tx.put_object(ROOT, ATTACHMENTS, ObjType::List).unwrap();
        let a = tx.insert_object(&attachments, 0, ObjType::Map).unwrap();
        for (k, v) in [
            ("sha256", "ab"),
            ("name", "p.jpg"),
            ("mime", "image/jpeg"),
            ("size", "12"),
        ] {
            tx.put(&a, k, v).unwrap();
        }
    }
    tx.commit();
    doc
}

/// An object of a document, its type and the root key it lives under (none for the root).
type Obj = (ObjId, ObjType, Option<String>);

/// Every object of `doc`, concurrent values that lost included, root first.
fn objects(doc: &Automerge) -> Vec<Obj> {
    let mut out: Vec<Obj> = vec![(ROOT, ObjType::Map, None)];
    let mut i = 0;
    while i < out.len() && out.len() < 64 {
        let (obj, typ, home) = out[i].clone();
        let props: Vec<Prop> = match typ {
            ObjType::Map | ObjType::Table => doc.keys(&obj).map(Prop::Map).collect(),
            ObjType::List => (0..doc.length(&obj)).map(Prop::Seq).collect(),
            ObjType::Text => Vec::new(),
        };
        for prop in props {
            let home = home.clone().or_else(|| match &prop {
                Prop::Map(k) => Some(k.clone()),
                Prop::Seq(_) => None,
            });
            for (value, id) in doc.get_all(&obj, prop).unwrap() {
                if let Value::Object(t) = value {
                    out.push((id, t, home.clone()));
                }
            }
        }
        i += 1;
    }
    out
}

/// Puts (or inserts) `value` at `prop` of `obj`; an entry gets a few strings.
fn put_value(tx: &mut impl Transactable, obj: &ObjId, prop: Prop, value: &ValSpec, insert: bool) {
    let scalar: Option<automerge::ScalarValue> = match value {
        ValSpec::Str(i) => Some(STRINGS[*i].into()),
        ValSpec::Bool(b) => Some((*b).into()),
        ValSpec::Int(i) => Some((*i).into()),
        _ => None,
    };
    let made = match (scalar, insert, prop) {
        (Some(v), true, Prop::Seq(i)) => tx.insert(obj, i, v).map(|_| None),
        (Some(v), _, prop) => tx.put(obj, prop, v).map(|_| None),
        (None, insert, prop) => {
            let t = match value {
                ValSpec::List => ObjType::List,
                ValSpec::Text => ObjType::Text,
                _ => ObjType::Map,
            };
            match (insert, prop) {
                (true, Prop::Seq(i)) => tx.insert_object(obj, i, t).map(Some),
                (_, prop) => tx.put_object(obj, prop, t).map(Some),
            }
        }
    };
    if let (Ok(Some(entry)), ValSpec::Entry(i)) = (made, value) {
        for (k, v) in [("at", STRINGS[10]), ("by", "wang"), ("action", STRINGS[*i])] {
            let _ = tx.put(&entry, k, v);
        }
    }
}

/// What the layout holds under root key `key`, for an honest operation (`pick` chooses strings).
fn honest_root_value(key: &str, pick: usize) -> ValSpec {
    match slot(key) {
        Some(Slot::Str) => ValSpec::Str(pick % 7),
        Some(Slot::Bool) => ValSpec::Bool(pick.is_multiple_of(2)),
        Some(Slot::StrMap | Slot::SetMap) => ValSpec::Map,
        Some(Slot::Text) => ValSpec::Text,
        Some(Slot::ListOfMaps) => ValSpec::List,
        None => ValSpec::Int(0),
    }
}

/// Makes the operation `op` in `tx` (a document whose objects are `objs`); operations that do not
/// fit their target are skipped.
fn make(tx: &mut impl Transactable, objs: &[Obj], op: &OpSpec) {
    // Honest edits favour the root and the fields, so that concurrent ones meet (conflicts).
    let target = match op.target % 8 {
        0 if op.honest => 0,
        1 if op.honest => objs
            .iter()
            .position(|(_, t, home)| *t == ObjType::Map && home.as_deref() == Some(FIELDS))
            .unwrap_or(0),
        _ => op.target / 8 % objs.len(),
    };
    let (obj, typ, home) = &objs[target];
    let len = tx.length(obj);
    let pick = match &op.value {
        ValSpec::Str(i) | ValSpec::Entry(i) => *i,
        _ => op.at % STRINGS.len(),
    };
    match (op.what, typ) {
        (What::Put | What::Insert, ObjType::Map) => {
            let (key, value) = if *obj == ROOT {
                let keys: &[&str] = if op.honest {
                    &ROOT_KEYS[..13]
                } else {
                    &ROOT_KEYS
                };
                let key = keys[op.at % keys.len()];
                let value = if op.honest {
                    honest_root_value(key, pick)
                } else {
                    op.value.clone()
                };
                (key, value)
            } else {
                // Honest edits favour a few keys, so that concurrent ones meet (conflicts).
                let keys = if op.honest && op.at.is_multiple_of(2) {
                    &INNER_KEYS[..5]
                } else {
                    &INNER_KEYS[..]
                };
                let key = keys[op.at / 2 % keys.len()];
                let value = match home.as_deref() {
                    _ if !op.honest => op.value.clone(),
                    Some(TAGS | VISITED) => ValSpec::Bool(true),
                    _ => ValSpec::Str(pick),
                };
                (key, value)
            };
            put_value(tx, obj, Prop::Map(key.into()), &value, false);
        }
        (What::Put | What::Insert, ObjType::List) => {
            let value = if op.honest {
                ValSpec::Entry(pick)
            } else {
                op.value.clone()
            };
            match op.what {
                What::Put if len > 0 => put_value(tx, obj, Prop::Seq(op.at % len), &value, false),
                _ => put_value(tx, obj, Prop::Seq(op.at % (len + 1)), &value, true),
            }
        }
        (What::Put | What::Insert, ObjType::Text) => {
            let _ = tx.splice_text(obj, op.at % (len + 1), 0, STRINGS[pick]);
        }
        (What::Delete, ObjType::Map) => {
            let keys: Vec<String> = tx.keys(obj).collect();
            if !keys.is_empty() {
                let _ = tx.delete(obj, keys[op.at % keys.len()].as_str());
            }
        }
        (What::Delete, ObjType::List | ObjType::Text) if len > 0 => {
            let _ = tx.delete(obj, op.at % len);
        }
        _ => {}
    }
}

/// Runs `steps` on three actors that start from a record of `kind`: the changes they made, in the
/// order they made them (so each one's dependencies come before it), and their documents.
fn run(kind: Kind, steps: &[Step]) -> (Vec<Change>, Vec<Automerge>) {
    let first = base(kind);
    let mut log = first.get_changes(&[]);
    let mut docs: Vec<Automerge> = (1..=3u8)
        .map(|a| first.fork().with_actor(ActorId::from([a + 1; 16])))
        .collect();
    for step in steps {
        match step {
            Step::Change { who, ops } => {
                let objs = objects(&docs[*who]);
                let mut tx = docs[*who].transaction();
                for op in ops {
                    make(&mut tx, &objs, op);
                }
                if tx.commit().0.is_some() {
                    log.push(docs[*who].get_last_local_change().unwrap());
                }
            }
            Step::Merge { who, from } if who != from => {
                let mut other = docs[*from].clone();
                docs[*who].merge(&mut other).unwrap();
            }
            Step::Merge { .. } => {}
        }
    }
    (log, docs)
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The one-walk reader reads every document, at every step, as the two-walk definition does:
    /// the same state, or the same refusal.
    #[test]
    fn one_walk_equals_shape_check_and_record_view(
        kind in kind(),
        steps in prop::collection::vec(step(), 1..32),
    ) {
        let (log, docs) = run(kind, &steps);
        let mut relay = Automerge::new();
        for change in log {
            relay.apply_changes([change]).unwrap();
            prop_assert_eq!(read_state(ID, &relay), reference_state(ID, &relay));
        }
        for doc in &docs {
            prop_assert_eq!(read_state(ID, doc), reference_state(ID, doc));
        }
    }

    /// A state refreshed after each change with the root keys the change touched equals a whole
    /// read of the document, both from a state read whole just before and from a state that was
    /// only ever refreshed since the document was last well-formed.
    #[test]
    fn refresh_equals_whole_read(
        kind in kind(),
        steps in prop::collection::vec(step(), 1..32),
    ) {
        let (log, _) = run(kind, &steps);
        let mut relay = Automerge::new();
        let mut whole: Option<DocState> = None;
        let mut kept: Option<DocState> = None;
        for change in log {
            relay.apply_changes([change.clone()]).unwrap();
            let now = DocState::read(ID, &relay);
            if let Some(before) = &whole {
                prop_assert_eq!(&before.after(&relay, &change), &now);
            }
            let refreshed = match &kept {
                Some(before) => before.after(&relay, &change),
                None => DocState::read(ID, &relay),
            };
            prop_assert_eq!(&refreshed, &now);
            whole = now.ok();
            kept = refreshed.ok();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A document read at the heads it had after each of its changes (`AtHeads`, as the relay reads
    /// a run of changes applied in one batch) reads as the document did then: the same state, whole
    /// or refreshed from the state before, and the same record view.
    #[test]
    fn reads_at_heads_equal_reads_of_the_document_then(
        kind in kind(),
        steps in prop::collection::vec(step(), 1..32),
    ) {
        let (log, _) = run(kind, &steps);
        let mut all = Automerge::new();
        all.apply_changes(log.clone()).unwrap();
        let mut relay = Automerge::new();
        let mut before: Option<DocState> = None;
        for change in log {
            relay.apply_changes([change.clone()]).unwrap();
            let heads = relay.get_heads();
            let then = crate::at_heads::AtHeads::new(&all, &heads);
            let now = DocState::read(ID, &relay);
            prop_assert_eq!(&DocState::read(ID, &then), &now);
            if let Some(before) = &before {
                prop_assert_eq!(&before.after(&then, &change), &now);
            }
            prop_assert_eq!(read_record(ID, &then), read_record(ID, &relay));
            before = now.ok();
        }
    }
}

/// A change names its root keys: a field edit `f`, a new timeline entry `timeline` (the fields the
/// change puts into the entry it makes included), a notes edit `notes`; and the state after it, read
/// again from those keys only, is the state a whole read finds.
#[test]
fn a_change_touches_the_root_keys_of_what_it_edits() {
    let mut doc = base(Kind::Event);
    let mut state = DocState::read(ID, &doc).unwrap();
    let mut edit = |edit: &dyn Fn(&mut automerge::transaction::Transaction<'_>)| {
        let mut tx = doc.transaction();
        edit(&mut tx);
        tx.commit();
        let change = doc.get_last_local_change().unwrap();
        let keys = state.touched_by(&change).keys.unwrap();
        state = state.after(&doc, &change).unwrap();
        assert_eq!(state, DocState::read(ID, &doc).unwrap());
        keys.into_iter().collect::<Vec<_>>()
    };
    let f = root_obj(&base(Kind::Event), FIELDS).unwrap();
    assert_eq!(edit(&|tx| tx.put(&f, "phone", "138").unwrap()), [FIELDS]);
    let timeline = root_obj(&base(Kind::Event), TIMELINE).unwrap();
    let entry_and_status = |tx: &mut automerge::transaction::Transaction<'_>| {
        let entry = tx.insert_object(&timeline, 1, ObjType::Map).unwrap();
        tx.put(&entry, "action", "accept").unwrap();
        tx.put(&f, "status", "accepted").unwrap();
    };
    assert_eq!(edit(&entry_and_status), [FIELDS, TIMELINE]);
    let notes = root_obj(&base(Kind::Event), NOTES).unwrap();
    assert_eq!(
        edit(&|tx| tx.splice_text(&notes, 0, 0, "urgent: ").unwrap()),
        [NOTES]
    );
    assert_eq!(edit(&|tx| tx.put(ROOT, DELETED, true).unwrap()), [DELETED]);
}

/// A concurrent value that lost still counts: a second `f` map holding a list makes the document
/// malformed, although the record view reads only the winning map; after a refresh too.
#[test]
fn a_losing_concurrent_object_is_checked() {
    let mut a = base(Kind::Person);
    let mut b = a.fork();
    let mut tx = a.transaction();
    let f = tx.put_object(ROOT, FIELDS, ObjType::Map).unwrap();
    tx.put(&f, "name", "Li").unwrap();
    tx.commit();
    let before = DocState::read(ID, &a).unwrap();
    let mut tx = b.transaction();
    let f = tx.put_object(ROOT, FIELDS, ObjType::Map).unwrap();
    tx.put_object(&f, "name", ObjType::List).unwrap();
    tx.commit();
    let change = b.get_last_local_change().unwrap();
    a.apply_changes([change.clone()]).unwrap();
    assert_eq!(
        a.get_all(ROOT, FIELDS).unwrap().len(),
        2,
        "two concurrent `f` maps"
    );
    let expected = Err(shape("`f` holds a value of the wrong type"));
    assert_eq!(read_state(ID, &a), expected);
    assert_eq!(reference_state(ID, &a), expected);
    assert_eq!(
        before.after(&a, &change).map(DocState::into_state),
        expected
    );
}
