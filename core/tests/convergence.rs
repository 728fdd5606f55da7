//! Convergence: replicas that make random edits of every kind and exchange changes in random orders,
//! partial subsets and duplicates end up identical once every change has reached every replica:
//! same document heads, same records, same list and search rows, same conflicts. And every field that two
//! replicas set concurrently to different values, with no later edit over both, is listed as a conflict.
mod common;
use common::*;
use gridwork_core::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const NAMES: &[&str] = &[
    "王小明",
    "李华",
    "欧阳娜娜",
    "Zhang Wei",
    "Maria Lopez",
    "Li Na",
];
const PLACE_NAMES: &[&str] = &["Block 3", "幸福小区", "Corner shop", "人民路菜场"];
const TITLES: &[&str] = &["Broken light", "楼道漏水", "Noise dispute"];
const PURPOSES: &[&str] = &["weekly check", "回访", "delivery"];
const WORDS: &[&str] = &["cat", "独居", "needs care", "楼上", "ok"];
const TAGS: &[&str] = &["lives alone", "needs care", "独居", "veteran"];
const ATTR_KEYS: &[&str] = &["hukou", "floor", "户籍"];
const ATTR_VALUES: &[&str] = &["local", "migrant", "3", "外地"];
const QUESTIONS: &[&str] = &["smoke alarm works", "gas shut", "灭火器"];
const ANSWERS: &[&str] = &["yes", "no", "", "不确定"];
const SEARCHES: &[&str] = &[
    "小明", "王", "娜娜", "zhang", "lop", "Li", "小区", "漏水", "light", "回访", "独居", "cat",
    "needs",
];

/// Editable fields per kind and the values the test writes ("" clears).
fn field_pool(kind: Kind) -> &'static [(&'static str, &'static [&'static str])] {
    match kind {
        Kind::Person => &[
            ("name", NAMES),
            (
                "phone",
                &["13800000001", "13900000002", "021-5555-0003", ""],
            ),
            ("sex", &["female", "male", "other"]),
            ("birth_date", &["1950-01-01", "1951-02-03", ""]),
        ],
        Kind::Place => &[
            ("name", PLACE_NAMES),
            ("address", &["幸福路12号", "Elm Street 5", "人民路8号", ""]),
            ("category", &["building", "unit", "shop"]),
        ],
        Kind::Event => &[
            ("title", TITLES),
            ("priority", &["low", "normal", "high", "urgent"]),
            ("due", &["2030-01-01T00:00:00Z", "2031-06-01T08:00:00Z", ""]),
        ],
        Kind::Visit => &[("purpose", PURPOSES), ("lat", &["31.2", "31.25", ""])],
        _ => &[("name", NAMES)],
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        r: usize,
        kind: usize,
        title: usize,
    },
    Set {
        r: usize,
        rec: usize,
        field: usize,
        value: usize,
    },
    Attr {
        r: usize,
        rec: usize,
        key: usize,
        value: usize,
        remove: bool,
    },
    Tag {
        r: usize,
        rec: usize,
        tag: usize,
        add: bool,
    },
    Notes {
        r: usize,
        rec: usize,
        word: usize,
        pos: usize,
    },
    Delete {
        r: usize,
        rec: usize,
    },
    Restore {
        r: usize,
        rec: usize,
    },
    Link {
        r: usize,
        rec: usize,
        target: usize,
        ty: usize,
    },
    Transition {
        r: usize,
        rec: usize,
        action: usize,
        who: usize,
    },
    Checklist {
        r: usize,
        rec: usize,
        q: usize,
        a: usize,
    },
    Visited {
        r: usize,
        rec: usize,
        target: usize,
    },
    Resolve {
        r: usize,
        rec: usize,
        field: usize,
        value: usize,
    },
    Exchange {
        from: usize,
        to: usize,
        mode: usize,
        seed: u64,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let i = || 0usize..1000;
    prop_oneof![
        2 => (i(), 0usize..4, i()).prop_map(|(r, kind, title)| Op::Create { r, kind, title }),
        6 => (i(), i(), i(), i()).prop_map(|(r, rec, field, value)| Op::Set { r, rec, field, value }),
        2 => (i(), i(), i(), i(), proptest::bool::weighted(0.2))
            .prop_map(|(r, rec, key, value, remove)| Op::Attr { r, rec, key, value, remove }),
        2 => (i(), i(), i(), any::<bool>()).prop_map(|(r, rec, tag, add)| Op::Tag { r, rec, tag, add }),
        2 => (i(), i(), i(), i()).prop_map(|(r, rec, word, pos)| Op::Notes { r, rec, word, pos }),
        1 => (i(), i()).prop_map(|(r, rec)| Op::Delete { r, rec }),
        1 => (i(), i()).prop_map(|(r, rec)| Op::Restore { r, rec }),
        1 => (i(), i(), i(), i()).prop_map(|(r, rec, target, ty)| Op::Link { r, rec, target, ty }),
        4 => (i(), i(), i(), i())
            .prop_map(|(r, rec, action, who)| Op::Transition { r, rec, action, who }),
        1 => (i(), i(), i(), i()).prop_map(|(r, rec, q, a)| Op::Checklist { r, rec, q, a }),
        1 => (i(), i(), i()).prop_map(|(r, rec, target)| Op::Visited { r, rec, target }),
        2 => (i(), i(), i(), i()).prop_map(|(r, rec, field, value)| Op::Resolve { r, rec, field, value }),
        5 => (i(), i(), 0usize..3, any::<u64>())
            .prop_map(|(from, to, mode, seed)| Op::Exchange { from, to, mode, seed }),
    ]
}

/// One write of a key that conflicts are reported for: a field (`name`), `attrs.<key>`, `deleted`,
/// `responsible`. `value` None is a deletion (clearing the field).
#[derive(Debug, Clone)]
struct Write {
    record: String,
    key: String,
    value: Option<String>,
    /// The change that made it.
    hash: String,
    #[allow(dead_code)] // shown in failure messages
    replica: usize,
}

struct World {
    _dir: tempfile::TempDir,
    replicas: Vec<Store>,
    users: Vec<String>,
    records: Vec<String>,
    writes: Vec<Write>,
}

fn identities(n: usize) -> Vec<(String, Role, &'static str)> {
    let all = [
        ("sup0", Role::Supervisor, "c1"),
        ("wrk1", Role::Worker, "g1"),
        ("sup2", Role::Supervisor, "s1"),
        ("wrk3", Role::Worker, "g1"),
        ("sup4", Role::Supervisor, "d1"),
    ];
    all[..n]
        .iter()
        .map(|(u, r, a)| (u.to_string(), *r, *a))
        .collect()
}

impl World {
    fn new(n: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let ids = identities(n);
        let replicas = ids
            .iter()
            .map(|(u, role, area)| open(dir.path(), u, *role, area))
            .collect();
        World {
            _dir: dir,
            replicas,
            users: ids.into_iter().map(|(u, _, _)| u).collect(),
            records: Vec::new(),
            writes: Vec::new(),
        }
    }

    fn n(&self) -> usize {
        self.replicas.len()
    }

    /// The record `rec` (modulo the candidates) among those replica `r` has, of `kind` if given.
    fn pick(&self, r: usize, rec: usize, kind: Option<Kind>) -> Option<(String, Record)> {
        let s = &self.replicas[r];
        let mut candidates: Vec<(String, Record)> = Vec::new();
        for id in &self.records {
            match s.get(id) {
                Ok(record) if kind.is_none_or(|k| record.kind == k) => {
                    candidates.push((id.clone(), record))
                }
                Ok(_) | Err(Error::UnknownRecord(_)) => {}
                Err(e) => panic!("get {id} on replica {r}: {e:?}"),
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let i = rec % candidates.len();
        Some(candidates.swap_remove(i))
    }

    fn apply(&mut self, op: &Op) {
        let n = self.n();
        match op {
            Op::Exchange {
                from,
                to,
                mode,
                seed,
            } => {
                let (from, to) = (from % n, to % n);
                if from != to {
                    self.exchange(from, to, *mode, *seed);
                }
            }
            Op::Create { r, kind, title } => {
                let r = r % n;
                let kind = [Kind::Person, Kind::Place, Kind::Event, Kind::Visit][*kind];
                let pool = field_pool(kind)[0].1;
                let new =
                    NewRecord::new(kind, "g1").field(kind.title_field(), pool[title % pool.len()]);
                let id = self.replicas[r].create(new).unwrap();
                self.records.push(id);
            }
            op => {
                let r = op_replica(op) % n;
                let rec = op_record(op);
                let kind = match op {
                    Op::Transition { .. } => Some(Kind::Event),
                    Op::Checklist { .. } | Op::Visited { .. } => Some(Kind::Visit),
                    _ => None,
                };
                let Some((id, before)) = self.pick(r, rec, kind) else {
                    return;
                };
                let result = self.local_edit(r, &id, &before, op);
                match result {
                    Ok(writes) => {
                        if !writes.is_empty() {
                            let heads = self.replicas[r].heads(&id).unwrap();
                            assert_eq!(heads.len(), 1, "a local change is the only head");
                            for (key, value) in writes {
                                self.writes.push(Write {
                                    record: id.clone(),
                                    key,
                                    value,
                                    hash: heads[0].clone(),
                                    replica: r,
                                });
                            }
                        }
                    }
                    Err(e) => assert!(
                        matches!(
                            e,
                            Error::Deleted(_)
                                | Error::InvalidTransition { .. }
                                | Error::Forbidden(_)
                                | Error::OutOfScope(_)
                                | Error::InvalidField { .. }
                                | Error::InvalidInput(_)
                                | Error::WrongKind { .. }
                                | Error::UnknownArea(_)
                        ),
                        "{op:?} on replica {r}: unexpected error {e:?}"
                    ),
                }
            }
        }
    }

    /// Runs one local edit and returns the writes of conflict-reported keys it made.
    fn local_edit(
        &self,
        r: usize,
        id: &str,
        before: &Record,
        op: &Op,
    ) -> Result<Vec<(String, Option<String>)>> {
        let s = &self.replicas[r];
        let conflicted = |key: &str| before.conflicted_fields.iter().any(|f| f == key);
        // A put is an edit unless the key holds exactly this one value already (then nothing is
        // written); a clear is an edit when the key has a value.
        let put =
            |key: &str, current: Option<&str>, value: &str| -> Vec<(String, Option<String>)> {
                if conflicted(key) || current != Some(value) {
                    vec![(key.to_owned(), Some(value.to_owned()))]
                } else {
                    vec![]
                }
            };
        let clear = |key: &str, current: Option<&str>| -> Vec<(String, Option<String>)> {
            if conflicted(key) || current.is_some() {
                vec![(key.to_owned(), None)]
            } else {
                vec![]
            }
        };
        let kind = before.kind;
        match *op {
            Op::Set { field, value, .. } => {
                let pool = field_pool(kind);
                let (name, values) = pool[field % pool.len()];
                let v = values[value % values.len()];
                s.update(id, Update::new().set(name, v))?;
                Ok(if v.is_empty() {
                    clear(name, before.field(name))
                } else {
                    put(name, before.field(name), v)
                })
            }
            Op::Attr {
                key, value, remove, ..
            } => {
                let k = ATTR_KEYS[key % ATTR_KEYS.len()];
                let full = format!("attrs.{k}");
                let current = before.attrs.get(k).map(String::as_str);
                if remove {
                    s.update(id, Update::new().remove_attr(k))?;
                    Ok(clear(&full, current))
                } else {
                    let v = ATTR_VALUES[value % ATTR_VALUES.len()];
                    s.update(id, Update::new().attr(k, v))?;
                    Ok(put(&full, current, v))
                }
            }
            Op::Tag { tag, add, .. } => {
                let t = TAGS[tag % TAGS.len()];
                let u = if add {
                    Update::new().add_tag(t)
                } else {
                    Update::new().remove_tag(t)
                };
                s.update(id, u)?;
                Ok(vec![])
            }
            Op::Notes { word, pos, .. } => {
                let chars: Vec<char> = before.notes.chars().collect();
                let at = pos % (chars.len() + 1);
                let mut text: String = chars[..at].iter().collect();
                text.push_str(WORDS[word % WORDS.len()]);
                text.push(' ');
                text.extend(&chars[at..]);
                s.update(id, Update::new().notes(text))?;
                Ok(vec![])
            }
            Op::Delete { .. } => {
                s.delete(id, Some("test"))?;
                Ok(put("deleted", Some("false"), "true"))
            }
            Op::Restore { .. } => {
                s.restore(id)?;
                Ok(put("deleted", Some("true"), "false"))
            }
            Op::Link { target, ty, .. } => {
                let target = &self.records[target % self.records.len()];
                s.link(id, LinkType::ALL[ty % LinkType::ALL.len()], target)?;
                Ok(vec![])
            }
            Op::Visited { target, .. } => {
                let target = &self.records[target % self.records.len()];
                s.add_visited(id, target)?;
                Ok(vec![])
            }
            Op::Checklist { q, a, .. } => {
                s.answer_checklist(
                    id,
                    QUESTIONS[q % QUESTIONS.len()],
                    ANSWERS[a % ANSWERS.len()],
                )?;
                Ok(vec![])
            }
            Op::Transition { action, who, .. } => {
                let who = self.users[who % self.users.len()].clone();
                let actions = [
                    EventAction::Assign {
                        assignee: who.clone(),
                    },
                    EventAction::Start,
                    EventAction::Resolve,
                    EventAction::Verify,
                    EventAction::Close,
                    EventAction::Return,
                    EventAction::Reopen,
                    EventAction::Escalate,
                    EventAction::HandDown { area: "g1".into() },
                    EventAction::Comment,
                ];
                let action = actions[action % actions.len()].clone();
                let comment = match action {
                    EventAction::Return | EventAction::Comment => Some("please check"),
                    _ => None,
                };
                let next = s.transition(id, action.clone(), comment)?;
                let mut writes = Vec::new();
                if before.field("status") != Some(next.as_str()) {
                    writes.push(("status".to_owned(), Some(next.as_str().to_owned())));
                }
                match &action {
                    EventAction::Assign { assignee } => {
                        writes.extend(put("assignee", before.field("assignee"), assignee))
                    }
                    EventAction::Escalate | EventAction::HandDown { .. } => {
                        writes.extend(clear("assignee", before.field("assignee")));
                        let after = s.get(id)?;
                        writes.push((
                            "responsible".to_owned(),
                            Some(after.responsible.clone().expect("events have one")),
                        ));
                    }
                    _ => {}
                }
                Ok(writes)
            }
            Op::Resolve { field, value, .. } => {
                if before.conflicted_fields.is_empty() {
                    return Ok(vec![]);
                }
                let key = before.conflicted_fields[field % before.conflicted_fields.len()].clone();
                let conflict = s.conflict(id, &key)?;
                let v = conflict.values[value % conflict.values.len()].value.clone();
                s.resolve_conflict(id, &key, &v)?;
                Ok(vec![(key, Some(v))])
            }
            Op::Create { .. } | Op::Exchange { .. } => unreachable!(),
        }
    }

    /// Sends changes of `from` to `to`: 0 = every change, 1 = a random part of the outbox,
    /// 2 = a random part of every change; shuffled, with duplicates, in one to three batches.
    fn exchange(&self, from: usize, to: usize, mode: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut chunks: Vec<RemoteChunk> = match mode {
            1 => self.replicas[from]
                .outbox(100_000)
                .unwrap()
                .into_iter()
                .map(|c| RemoteChunk {
                    record_id: c.record_id,
                    bytes: c.bytes,
                })
                .collect(),
            _ => self.replicas[from].all_changes().unwrap(),
        };
        chunks.shuffle(&mut rng);
        if mode != 0 {
            let keep = rng.gen_range(0..=chunks.len());
            chunks.truncate(keep);
        }
        let dups = rng.gen_range(0..=chunks.len().min(3));
        for _ in 0..dups {
            let c = chunks[rng.gen_range(0..chunks.len())].clone();
            chunks.push(c);
        }
        chunks.shuffle(&mut rng);
        let batches = rng.gen_range(1..=3usize);
        let size = chunks.len().div_ceil(batches).max(1);
        for batch in chunks.chunks(size) {
            let report = self.replicas[to].apply_remote(batch).unwrap();
            assert_eq!(report.malformed, 0, "{report:?}");
        }
    }

    /// Every replica receives every change of every other replica, in shuffled order with duplicates.
    fn full_exchange(&self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        for to in 0..self.n() {
            let mut order: Vec<usize> = (0..self.n()).filter(|&f| f != to).collect();
            order.shuffle(&mut rng);
            for from in order {
                let mut chunks = self.replicas[from].all_changes().unwrap();
                if let Some(c) = chunks.first().cloned() {
                    chunks.push(c);
                }
                chunks.shuffle(&mut rng);
                self.replicas[to].apply_remote(&chunks).unwrap();
            }
        }
    }
}

fn op_replica(op: &Op) -> usize {
    match *op {
        Op::Create { r, .. }
        | Op::Set { r, .. }
        | Op::Attr { r, .. }
        | Op::Tag { r, .. }
        | Op::Notes { r, .. }
        | Op::Delete { r, .. }
        | Op::Restore { r, .. }
        | Op::Link { r, .. }
        | Op::Transition { r, .. }
        | Op::Checklist { r, .. }
        | Op::Visited { r, .. }
        | Op::Resolve { r, .. } => r,
        Op::Exchange { from, .. } => from,
    }
}

fn op_record(op: &Op) -> usize {
    match *op {
        Op::Set { rec, .. }
        | Op::Attr { rec, .. }
        | Op::Tag { rec, .. }
        | Op::Notes { rec, .. }
        | Op::Delete { rec, .. }
        | Op::Restore { rec, .. }
        | Op::Link { rec, .. }
        | Op::Transition { rec, .. }
        | Op::Checklist { rec, .. }
        | Op::Visited { rec, .. }
        | Op::Resolve { rec, .. } => rec,
        _ => 0,
    }
}

/// Change hash -> its ancestors (not itself), from the complete document.
fn ancestry(doc_bytes: &[u8]) -> HashMap<String, BTreeSet<String>> {
    let doc = automerge::Automerge::load(doc_bytes).unwrap();
    let deps: HashMap<String, Vec<String>> = doc
        .get_changes(&[])
        .iter()
        .map(|c| {
            (
                c.hash().to_string(),
                c.deps().iter().map(|d| d.to_string()).collect(),
            )
        })
        .collect();
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for start in deps.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = deps[start].iter().collect();
        while let Some(h) = stack.pop() {
            if seen.insert(h.clone()) {
                stack.extend(deps[h].iter());
            }
        }
        out.insert(start.clone(), seen);
    }
    out
}

fn all_rows(s: &Store, kind: Kind, include_deleted: bool) -> Vec<RecordSummary> {
    let mut q = ListQuery::new(kind).limit(10_000);
    q.include_deleted = include_deleted;
    let page = s.list(&q).unwrap();
    assert!(page.next_offset.is_none());
    let mut items = page.items;
    items.sort_by(|a, b| a.id.cmp(&b.id));
    items
}

fn search_ids(s: &Store, text: &str) -> Vec<String> {
    let mut ids: Vec<String> = s
        .search(text, None, 1000)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

fn check_converged(world: &World) {
    let reps = &world.replicas;
    let expected_ids: BTreeSet<String> = world.records.iter().cloned().collect();
    for (i, s) in reps.iter().enumerate() {
        assert_eq!(s.held_len().unwrap(), 0, "replica {i} still holds changes");
        let ids: BTreeSet<String> = s.record_ids().unwrap().into_iter().collect();
        assert_eq!(ids, expected_ids, "replica {i} has other records");
    }
    let base = &reps[0];
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    for id in &world.records {
        let record = base.get(id).unwrap();
        // `get` answers from the stored view: it must be what the document says.
        let doc = automerge::Automerge::load(&base.export_document(id).unwrap()).unwrap();
        assert_eq!(
            Some(&record),
            gridwork_core::doc::read_record(id, &doc).as_ref(),
            "the stored view of {id}"
        );
        let heads = base.heads(id).unwrap();
        let links = base.links_of(id).unwrap();
        for (i, s) in reps.iter().enumerate().skip(1) {
            assert_eq!(s.heads(id).unwrap(), heads, "heads of {id}, replica {i}");
            assert_eq!(s.get(id).unwrap(), record, "record {id}, replica {i}");
            assert_eq!(s.links_of(id).unwrap(), links, "links of {id}, replica {i}");
        }
        records.insert(id.clone(), record);
    }
    for kind in Kind::ALL {
        for deleted in [true, false] {
            let rows = all_rows(base, kind, deleted);
            for (i, s) in reps.iter().enumerate().skip(1) {
                assert_eq!(
                    all_rows(s, kind, deleted),
                    rows,
                    "{kind} list (deleted {deleted}), replica {i}"
                );
            }
            // The projection says what the documents say.
            for row in &rows {
                let r = &records[&row.id];
                let fields: BTreeMap<String, String> = r
                    .fields
                    .iter()
                    .filter(|(k, v)| kind.spec(k).is_ok() && !v.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(row.fields, fields, "projection of {}", row.id);
                assert_eq!(row.deleted, r.deleted);
                assert_eq!(row.area, r.area);
                assert_eq!(row.responsible, r.responsible);
                assert!(deleted || !r.deleted);
            }
            if deleted {
                let n = records.values().filter(|r| r.kind == kind).count();
                assert_eq!(rows.len(), n, "every {kind} is listed");
            }
        }
    }
    for text in SEARCHES {
        let ids = search_ids(base, text);
        for (i, s) in reps.iter().enumerate().skip(1) {
            assert_eq!(search_ids(s, text), ids, "search {text:?}, replica {i}");
        }
    }
    for tag in TAGS {
        let q = ListQuery::new(Kind::Person).tag(*tag).limit(10_000);
        let ids: BTreeSet<String> = base
            .list(&q)
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.id)
            .collect();
        let expected: BTreeSet<String> = records
            .values()
            .filter(|r| r.kind == Kind::Person && !r.deleted && r.tags.iter().any(|t| t == tag))
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(ids, expected, "tag {tag}");
    }
    let conflicts = base.conflicts().unwrap();
    for (i, s) in reps.iter().enumerate().skip(1) {
        assert_eq!(s.conflicts().unwrap(), conflicts, "conflicts, replica {i}");
    }
    let listed: BTreeSet<(String, String)> = conflicts
        .iter()
        .map(|c| (c.record_id.clone(), c.field.clone()))
        .collect();
    let in_records: BTreeSet<(String, String)> = records
        .values()
        .flat_map(|r| {
            r.conflicted_fields
                .iter()
                .map(|f| (r.id.clone(), f.clone()))
        })
        .collect();
    assert_eq!(
        listed, in_records,
        "conflicts() lists every conflicted field"
    );

    // Concurrent writes: for each key, the writes no other write of that key descends from. Two of them
    // with different values must be a conflict; a conflict needs two of them.
    let mut by_key: BTreeMap<(String, String), Vec<&Write>> = BTreeMap::new();
    for w in &world.writes {
        by_key
            .entry((w.record.clone(), w.key.clone()))
            .or_default()
            .push(w);
    }
    let mut graphs: HashMap<String, HashMap<String, BTreeSet<String>>> = HashMap::new();
    let mut concurrent_puts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for ((id, key), writes) in by_key {
        let graph = graphs
            .entry(id.clone())
            .or_insert_with(|| ancestry(&base.export_document(&id).unwrap()));
        let latest: Vec<&&Write> = writes
            .iter()
            .filter(|w| {
                !writes
                    .iter()
                    .any(|o| o.hash != w.hash && graph[&o.hash].contains(&w.hash))
            })
            .collect();
        let values: BTreeSet<&str> = latest.iter().filter_map(|w| w.value.as_deref()).collect();
        let puts = latest.iter().filter(|w| w.value.is_some()).count();
        let is_conflict = listed.contains(&(id.clone(), key.clone()));
        if values.len() >= 2 {
            assert!(
                is_conflict,
                "{key} of {id} was set concurrently to {values:?} but is not a conflict; writes: {latest:#?}"
            );
        }
        concurrent_puts.insert((id, key), puts);
    }
    for (id, key) in &listed {
        let puts = concurrent_puts
            .get(&(id.clone(), key.clone()))
            .copied()
            .unwrap_or(0);
        assert!(
            puts >= 2,
            "{key} of {id} is a conflict without two concurrent writes ({puts})"
        );
    }
}

fn run(n: usize, ops: &[Op], seed: u64) {
    let mut world = World::new(n);
    // A few records every replica starts from, so that edits can be concurrent from the first op.
    for (kind, title) in [(0, 0), (1, 1), (2, 0), (3, 1), (0, 3)] {
        world.apply(&Op::Create { r: 0, kind, title });
    }
    world.full_exchange(seed ^ 1);
    for op in ops {
        world.apply(op);
    }
    world.full_exchange(seed);
    check_converged(&world);
    if std::env::var_os("CONVERGENCE_STATS").is_some() {
        let base = &world.replicas[0];
        let deleted = world
            .records
            .iter()
            .filter(|id| base.get(id).unwrap().deleted)
            .count();
        let timeline: usize = world
            .records
            .iter()
            .map(|id| base.get(id).unwrap().timeline.len())
            .sum();
        eprintln!(
            "replicas {n} ops {} records {} deleted {deleted} tracked writes {} conflicts {:?} timeline entries {timeline}",
            ops.len(),
            world.records.len(),
            world.writes.len(),
            base.conflicts().unwrap().iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
        );
    }
    // The projection is a pure function of the documents: rebuilding it changes no row.
    let base = &world.replicas[0];
    let before: Vec<Vec<RecordSummary>> =
        Kind::ALL.iter().map(|k| all_rows(base, *k, true)).collect();
    let conflicts = base.conflicts().unwrap();
    base.rebuild_projection().unwrap();
    let after: Vec<Vec<RecordSummary>> =
        Kind::ALL.iter().map(|k| all_rows(base, *k, true)).collect();
    assert_eq!(after, before, "rebuilt projection differs");
    assert_eq!(base.conflicts().unwrap(), conflicts);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn replicas_converge_and_keep_concurrent_values(
        n in 3usize..=5,
        ops in proptest::collection::vec(op_strategy(), 30..90),
        seed in any::<u64>(),
    ) {
        run(n, &ops, seed);
    }
}

/// The merge rule on one deterministic history: a replica resolves a conflict by keeping the value that
/// currently wins, while another replica concurrently sets a third value. Neither edit may vanish: after
/// merging, both values are listed as a conflict.
#[test]
fn resolving_to_the_winning_value_still_conflicts_with_a_concurrent_edit() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "wang", Role::Worker, "g1");
    let b = open(dir.path(), "li", Role::Worker, "g1");
    let c = open(dir.path(), "zhou", Role::Worker, "g1");
    let p = a
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Zhou Min"))
        .unwrap();
    exchange(&a, &b);
    a.update(&p, Update::new().set("phone", "13800000001"))
        .unwrap();
    b.update(&p, Update::new().set("phone", "13900000002"))
        .unwrap();
    exchange(&a, &b);
    exchange(&b, &a);
    exchange(&a, &c);
    let conflict = c.conflict(&p, "phone").unwrap();
    let winner = conflict
        .values
        .iter()
        .find(|v| v.winner)
        .unwrap()
        .value
        .clone();
    // c keeps the winning value; b, knowing the same conflict, sets a new value.
    c.resolve_conflict(&p, "phone", &winner).unwrap();
    b.update(&p, Update::new().set("phone", "021-5555-0003"))
        .unwrap();
    for s in [&a, &b, &c] {
        exchange(&b, s);
        exchange(&c, s);
    }
    for s in [&a, &b, &c] {
        let conflicts = s.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let mut values: Vec<String> = conflicts[0]
            .values
            .iter()
            .map(|v| v.value.clone())
            .collect();
        values.sort();
        let mut expected = vec![winner.clone(), "021-5555-0003".to_string()];
        expected.sort();
        assert_eq!(values, expected);
    }
}

/// Records created alike (same kind, same name, same second, same device) are still distinct records
/// with distinct changes, and all of them reach another replica.
#[test]
fn identical_records_created_in_one_second_stay_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "wang", Role::Worker, "g1");
    let b = open(dir.path(), "li", Role::Worker, "g1");
    // Five creates take far less than two seconds, so at least two fall in the same second.
    let ids: Vec<String> = (0..5)
        .map(|_| {
            a.create(NewRecord::new(Kind::Person, "g1").field("name", "Li Na"))
                .unwrap()
        })
        .collect();
    let hashes: BTreeSet<String> = a.outbox(100).unwrap().into_iter().map(|c| c.hash).collect();
    assert_eq!(hashes.len(), 5, "every record has its own first change");
    exchange(&a, &b);
    assert_eq!(b.record_ids().unwrap().len(), 5);
    for id in &ids {
        assert_eq!(b.heads(id).unwrap(), a.heads(id).unwrap());
    }
}
