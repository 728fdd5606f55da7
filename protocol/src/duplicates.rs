//! Duplicates: the same person, place or organisation registered twice (two workers offline, or one
//! who did not find the first record). One rule for the device and the relay:
//! - [`candidates`]: the pairs among a set of records that may be one, with why (the device lists them
//!   over its records, the relay over the records of the caller's scope, statistics count them);
//! - [`merge_plan`] and [`merge_conflicts`]: what merging one record into another does, and which of the
//!   merged-away record's values the kept one has not taken into account yet (a conflict to resolve,
//!   also when the merged-away record was edited offline after the merge).
//!
//! Decisions live in the records' documents (`dups`, see [`crate::doc`]), so they sync, stay and are
//! judged by the rule book like any edit: `<other id>` -> [`MERGED`] on the kept record, with an `absorb`
//! timeline entry; the merged-away record is a tombstone whose `merge` entry names the kept one;
//! `<other id>` -> [`DISTINCT`] on either record of a pair that is not a duplicate (the pair is never
//! listed again); `<other id>/<field>` -> the merged-away record's value the kept record has settled.
use crate::model::{search_number, Kind, Link, Record};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `dups` value: this record absorbed the other.
pub const MERGED: &str = "merged";
/// `dups` value: this record and the other are not duplicates.
pub const DISTINCT: &str = "distinct";

/// Records compared in one bucket at most (a bucket is the records sharing one key). Past it the
/// bucket's first records are paired and the rest reported on their own next pass: a hostile device
/// that registers thousands of alike records cannot make the listing quadratic.
pub const MAX_BUCKET: usize = 64;

/// Why two records may be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateReason {
    SameIdNumber,
    SameNameAndBirthDate,
    SameNameAndHome,
    SameNameAndAddress,
    SameNameAndPlace,
    SameNameAndPhone,
}

impl DuplicateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateReason::SameIdNumber => "same ID number",
            DuplicateReason::SameNameAndBirthDate => "same name and birth date",
            DuplicateReason::SameNameAndHome => "same name and home",
            DuplicateReason::SameNameAndAddress => "same name and address",
            DuplicateReason::SameNameAndPlace => "same name and place",
            DuplicateReason::SameNameAndPhone => "same name and phone",
        }
    }
}

/// The kinds whose records are compared and merged.
pub fn compared(kind: Kind) -> bool {
    matches!(kind, Kind::Person | Kind::Place | Kind::Organisation)
}

/// A name as duplicates compare it: its pinyin without tones for Chinese characters, other letters
/// lower-case, without spaces or punctuation (王芳, 汪芳 and Wang Fang meet).
pub fn name_key(name: &str) -> String {
    use pinyin::ToPinyin;
    let mut out = String::new();
    for c in name.chars() {
        match c.to_pinyin() {
            Some(p) => out.push_str(p.plain()),
            None if c.is_alphanumeric() => out.extend(c.to_lowercase()),
            None => {}
        }
    }
    out
}

/// Text without spaces, lower-case: how addresses and other values are compared.
pub fn normalized(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// What makes two records of a kind the same one: equal keys (with the reason each stands for).
pub fn match_keys(r: &Record) -> Vec<(DuplicateReason, String)> {
    let field = |k: &str| r.field(k).unwrap_or("").trim();
    let mut out = Vec::new();
    if r.kind == Kind::Person {
        if let Some(n) = search_number(field("id_number")) {
            out.push((DuplicateReason::SameIdNumber, n));
        }
    }
    let name = name_key(field("name"));
    if name.is_empty() {
        return out;
    }
    let rules: &[(&str, DuplicateReason)] = match r.kind {
        Kind::Person => &[
            ("birth_date", DuplicateReason::SameNameAndBirthDate),
            ("home_place", DuplicateReason::SameNameAndHome),
        ],
        Kind::Place => &[("address", DuplicateReason::SameNameAndAddress)],
        Kind::Organisation => &[
            ("place", DuplicateReason::SameNameAndPlace),
            ("contact_phone", DuplicateReason::SameNameAndPhone),
        ],
        _ => &[],
    };
    for (column, reason) in rules {
        let value = field(column);
        let value = match *column {
            "contact_phone" => search_number(value),
            _ => Some(normalized(value)).filter(|v| !v.is_empty()),
        };
        if let Some(value) = value {
            out.push((*reason, format!("{name}\u{1f}{value}")));
        }
    }
    out
}

/// Why `a` and `b` may be one record (none: they are not candidates).
pub fn reasons(a: &Record, b: &Record) -> Vec<DuplicateReason> {
    if a.kind != b.kind || a.id == b.id {
        return Vec::new();
    }
    let theirs = match_keys(b);
    let mut out: Vec<DuplicateReason> = match_keys(a)
        .into_iter()
        .filter(|k| theirs.contains(k))
        .map(|(reason, _)| reason)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Two records that may be one: `a` < `b` by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicatePair {
    pub kind: Kind,
    pub a: String,
    pub b: String,
    pub reasons: Vec<DuplicateReason>,
}

/// Whether either record of a pair says the two are not duplicates.
pub fn dismissed(a: &Record, b: &Record) -> bool {
    a.dups.get(&b.id).map(String::as_str) == Some(DISTINCT)
        || b.dups.get(&a.id).map(String::as_str) == Some(DISTINCT)
}

/// Finds the candidates among records given one at a time ([`Candidates::add`]), keeping of each only
/// its id, kind and match keys, packed in a few large buffers, and the records it says are not
/// duplicates of it: a device compares 100,000 records in ~15 MB without holding them
/// (BENCHMARKS.md section 12).
#[derive(Debug, Default)]
pub struct Candidates {
    /// The records' ids, one after another; `records[i]` is where record `i`'s id ends, and its kind.
    ids: String,
    records: Vec<(u32, Kind)>,
    /// The match keys, one after another, each with its reason, where it ends in `key_text` and the
    /// record that has it.
    key_text: String,
    keys: Vec<(DuplicateReason, u32, u32)>,
    /// (record, other id): record `i` says it is not a duplicate of the other.
    distinct: Vec<(u32, String)>,
}

impl Candidates {
    pub fn new() -> Candidates {
        Candidates::default()
    }

    /// Takes a record into account (a deleted one, or one of a kind not compared, is never a
    /// candidate).
    pub fn add(&mut self, r: &Record) {
        if r.deleted || !compared(r.kind) {
            return;
        }
        let i = self.records.len() as u32;
        self.ids.push_str(&r.id);
        self.records.push((self.ids.len() as u32, r.kind));
        for (reason, key) in match_keys(r) {
            self.key_text.push_str(&key);
            self.keys.push((reason, self.key_text.len() as u32, i));
        }
        self.distinct.extend(
            r.dups
                .iter()
                .filter(|(_, v)| v.as_str() == DISTINCT)
                .map(|(k, _)| (i, k.clone())),
        );
    }

    fn id(&self, i: u32) -> &str {
        let end = self.records[i as usize].0 as usize;
        let start = match i {
            0 => 0,
            _ => self.records[i as usize - 1].0 as usize,
        };
        &self.ids[start..end]
    }

    /// The pairs: records sharing a key, not dismissed; by kind, then ids.
    pub fn pairs(self) -> Vec<DuplicatePair> {
        let text = |k: usize| -> &str {
            let end = self.keys[k].1 as usize;
            let start = match k {
                0 => 0,
                _ => self.keys[k - 1].1 as usize,
            };
            &self.key_text[start..end]
        };
        // (kind, reason, key) of every key, sorted: the records sharing a key are a run.
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        let sort_key = |k: usize| {
            let (reason, _, record) = self.keys[k];
            (self.records[record as usize].1, reason, text(k))
        };
        order.sort_unstable_by(|x, y| sort_key(*x).cmp(&sort_key(*y)));
        // (kind, a, b) -> why, and the two records.
        type Found = (BTreeSet<DuplicateReason>, u32, u32);
        let mut pairs: BTreeMap<(Kind, &str, &str), Found> = BTreeMap::new();
        for run in order.chunk_by(|x, y| sort_key(*x) == sort_key(*y)) {
            if run.len() < 2 {
                continue;
            }
            let (kind, reason, _) = sort_key(run[0]);
            let mut members: Vec<(&str, u32)> = run
                .iter()
                .map(|k| {
                    let record = self.keys[*k].2;
                    (self.id(record), record)
                })
                .collect();
            members.sort_unstable();
            members.dedup_by(|x, y| x.0 == y.0);
            members.truncate(MAX_BUCKET);
            for (i, (a, ia)) in members.iter().enumerate() {
                for (b, ib) in &members[i + 1..] {
                    pairs
                        .entry((kind, a, b))
                        .or_insert_with(|| (BTreeSet::new(), *ia, *ib))
                        .0
                        .insert(reason);
                }
            }
        }
        let mut distinct: Vec<(u32, &str)> = self
            .distinct
            .iter()
            .map(|(r, o)| (*r, o.as_str()))
            .collect();
        distinct.sort_unstable();
        let dismisses = |record: u32, other: &str| distinct.binary_search(&(record, other)).is_ok();
        pairs
            .into_iter()
            .filter(|((_, a, b), (_, ia, ib))| !(dismisses(*ia, b) || dismisses(*ib, a)))
            .map(|((kind, a, b), (reasons, _, _))| DuplicatePair {
                kind,
                a: a.to_owned(),
                b: b.to_owned(),
                reasons: reasons.into_iter().collect(),
            })
            .collect()
    }
}

/// The open duplicate candidates among `records`: pairs of live people, places or organisations that
/// share a key, not dismissed; by kind, then ids.
pub fn candidates<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<DuplicatePair> {
    let mut found = Candidates::new();
    for r in records {
        found.add(r);
    }
    found.pairs()
}

/// The values a merge compares, by name: the kind's fields that are not managed, `attrs.<key>`, and
/// `notes`; empty values left out.
pub fn merge_values(r: &Record) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in &r.fields {
        let managed = r.kind.spec(k).map(|s| s.managed).unwrap_or(true);
        if !managed && !v.trim().is_empty() {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &r.attrs {
        if !v.trim().is_empty() {
            out.insert(format!("attrs.{k}"), v.clone());
        }
    }
    if !r.notes.trim().is_empty() {
        out.insert("notes".into(), r.notes.clone());
    }
    out
}

/// The `dups` key under which `kept` notes the value of `field` of `away` it has settled.
pub fn settled_key(away: &str, field: &str) -> String {
    format!("{away}/{field}")
}

/// What merging `away` into `kept` writes on `kept`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergePlan {
    /// Values `kept` lacks, taken from `away` (name as in [`merge_values`]).
    pub fill: Vec<(String, String)>,
    /// `away`'s values `kept` takes into account: filled or equal (`dups` `<away>/<name>`).
    pub settle: Vec<(String, String)>,
    /// Names whose values differ: conflicts to resolve on `kept`.
    pub conflicts: Vec<String>,
    /// `away`'s tags and links `kept` lacks (links to `kept` itself left out).
    pub tags: Vec<String>,
    pub links: Vec<Link>,
}

pub fn merge_plan(kept: &Record, away: &Record) -> MergePlan {
    let mine = merge_values(kept);
    let mut plan = MergePlan::default();
    for (name, value) in merge_values(away) {
        match mine.get(&name) {
            None => {
                plan.fill.push((name.clone(), value.clone()));
                plan.settle.push((name, value));
            }
            Some(v) if *v == value => plan.settle.push((name, value)),
            Some(_) => plan.conflicts.push(name),
        }
    }
    plan.tags = away
        .tags
        .iter()
        .filter(|t| !kept.tags.contains(t))
        .cloned()
        .collect();
    plan.links = away
        .links
        .iter()
        .filter(|l| l.target != kept.id && l.target != away.id && !kept.links.contains(l))
        .cloned()
        .collect();
    plan
}

/// The values of `away` (merged into `kept`) that `kept` has not taken into account: they differ from
/// `kept`'s and `kept` has not settled them. After a merge these are the values that differed; an edit
/// made to `away` offline after the merge shows up here too. (name, `away`'s value), by name.
pub fn merge_conflicts(kept: &Record, away: &Record) -> Vec<(String, String)> {
    let mine = merge_values(kept);
    merge_values(away)
        .into_iter()
        .filter(|(name, value)| {
            mine.get(name) != Some(value)
                && kept.dups.get(&settled_key(&away.id, name)) != Some(value)
        })
        .collect()
}

/// The records `r` absorbed, by id.
pub fn absorbed(r: &Record) -> impl Iterator<Item = &str> {
    r.dups
        .iter()
        .filter(|(k, v)| !k.contains('/') && v.as_str() == MERGED)
        .map(|(k, _)| k.as_str())
}

/// Where a merged-away record went: the kept record its last `merge` entry names.
pub fn merged_into(r: &Record) -> Option<&str> {
    r.timeline
        .iter()
        .rev()
        .find(|e| e.action == "merge")
        .and_then(|e| e.to.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: &str, name: &str, fields: &[(&str, &str)]) -> Record {
        let mut r = Record::empty(id, Kind::Person, "g1");
        r.fields.insert("name".into(), name.into());
        for (k, v) in fields {
            r.fields.insert(k.to_string(), v.to_string());
        }
        r
    }

    #[test]
    fn names_meet_as_written_and_by_pinyin() {
        assert_eq!(name_key("王芳"), "wangfang");
        assert_eq!(name_key("汪芳"), "wangfang");
        assert_eq!(name_key("Wang Fang"), "wangfang");
        assert_eq!(name_key("wang-fang"), "wangfang");
        assert_ne!(name_key("王方圆"), name_key("王芳"));
    }

    #[test]
    fn candidates_pair_records_that_share_a_key_unless_dismissed() {
        let a = person("a", "王芳", &[("birth_date", "1950-01-02")]);
        let b = person("b", "Wang Fang", &[("birth_date", "1950-01-02")]);
        let c = person("c", "李华", &[("id_number", "11010519491231002X")]);
        let d = person("d", "Li Hua", &[("id_number", "110105 19491231 002x")]);
        let e = person("e", "王芳", &[("birth_date", "1961-05-05")]);
        let mut gone = person("f", "王芳", &[("birth_date", "1950-01-02")]);
        gone.deleted = true;
        let all = [a.clone(), b.clone(), c.clone(), d.clone(), e, gone];
        let pairs = candidates(&all);
        let got: Vec<(&str, &str, &[DuplicateReason])> = pairs
            .iter()
            .map(|p| (p.a.as_str(), p.b.as_str(), p.reasons.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "b", &[DuplicateReason::SameNameAndBirthDate][..]),
                ("c", "d", &[DuplicateReason::SameIdNumber][..])
            ]
        );
        assert_eq!(reasons(&c, &d), [DuplicateReason::SameIdNumber]);
        let mut a2 = a;
        a2.dups.insert("b".into(), DISTINCT.into());
        assert_eq!(
            candidates(&[a2, b, c, d]).len(),
            1,
            "a dismissed pair stays dismissed"
        );
    }

    /// Against the plain definition (every pair of live records sharing a match key, not dismissed),
    /// over many small random sets where names, dates and numbers collide often.
    #[test]
    fn candidates_are_the_pairs_that_share_a_key() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let n = 2 + next(12) as usize;
            let mut records: Vec<Record> = (0..n)
                .map(|i| {
                    let name = ["王芳", "汪芳", "Li Hua", "李华"][next(4) as usize];
                    let mut fields =
                        vec![("birth_date", ["1950-01-02", "1961-05-05"][next(2) as usize])];
                    if next(2) == 0 {
                        fields.push((
                            "id_number",
                            [
                                "110105194912310021",
                                "110105 194912310021",
                                "31010419570815342X",
                            ][next(3) as usize],
                        ));
                    }
                    let mut r = person(&format!("r{i:02}"), name, &fields);
                    r.deleted = next(8) == 0;
                    r
                })
                .collect();
            for _ in 0..next(3) {
                let (a, b) = (next(n as u64) as usize, next(n as u64) as usize);
                let other = records[b].id.clone();
                records[a].dups.insert(other, DISTINCT.into());
            }
            let mut expected = Vec::new();
            for (i, a) in records.iter().enumerate() {
                for b in &records[i + 1..] {
                    if a.deleted || b.deleted || dismissed(a, b) {
                        continue;
                    }
                    let ka: BTreeSet<_> = match_keys(a).into_iter().collect();
                    let shared: BTreeSet<DuplicateReason> = match_keys(b)
                        .into_iter()
                        .filter(|k| ka.contains(k))
                        .map(|(reason, _)| reason)
                        .collect();
                    if !shared.is_empty() {
                        expected.push(DuplicatePair {
                            kind: Kind::Person,
                            a: a.id.clone(),
                            b: b.id.clone(),
                            reasons: shared.into_iter().collect(),
                        });
                    }
                }
            }
            assert_eq!(candidates(&records), expected, "{records:?}");
        }
    }

    #[test]
    fn a_bucket_is_bounded() {
        let many: Vec<Record> = (0..1000)
            .map(|i| person(&format!("{i:04}"), "王芳", &[("birth_date", "1950-01-02")]))
            .collect();
        let pairs = candidates(&many);
        assert_eq!(pairs.len(), MAX_BUCKET * (MAX_BUCKET - 1) / 2);
    }

    #[test]
    fn a_merge_fills_gaps_settles_equals_and_leaves_differences_to_resolve() {
        let mut kept = person(
            "k",
            "王芳",
            &[("birth_date", "1950-01-02"), ("phone", "138")],
        );
        kept.tags.push("elderly".into());
        let mut away = person(
            "w",
            "王芳",
            &[
                ("birth_date", "1950-01-02"),
                ("phone", "139"),
                ("sex", "female"),
            ],
        );
        away.tags.push("lives alone".into());
        away.attrs.insert("hukou".into(), "local".into());
        let plan = merge_plan(&kept, &away);
        assert_eq!(
            plan.fill,
            [
                ("attrs.hukou".to_string(), "local".to_string()),
                ("sex".into(), "female".into())
            ]
        );
        assert_eq!(plan.conflicts, ["phone"]);
        assert_eq!(plan.tags, ["lives alone"]);
        // Applied as a device does: fill and settle.
        kept.attrs.insert("hukou".into(), "local".into());
        kept.fields.insert("sex".into(), "female".into());
        for (name, value) in &plan.settle {
            kept.dups.insert(settled_key("w", name), value.clone());
        }
        kept.dups.insert("w".into(), MERGED.into());
        assert_eq!(absorbed(&kept).collect::<Vec<_>>(), ["w"]);
        assert_eq!(
            merge_conflicts(&kept, &away),
            [("phone".into(), "139".into())]
        );
        // Resolved: kept takes a value and settles away's.
        kept.dups.insert(settled_key("w", "phone"), "139".into());
        assert!(merge_conflicts(&kept, &away).is_empty());
        // An edit made to the merged-away record offline afterwards shows up again.
        away.fields.insert("sex".into(), "other".into());
        assert_eq!(
            merge_conflicts(&kept, &away),
            [("sex".into(), "other".into())]
        );
    }
}
