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
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// The open duplicate candidates among `records`: pairs of live people, places or organisations that
/// share a key, not dismissed; by kind, then ids.
pub fn candidates<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<DuplicatePair> {
    let mut by_id: HashMap<&str, &Record> = HashMap::new();
    let mut buckets: HashMap<(Kind, DuplicateReason, String), Vec<&str>> = HashMap::new();
    for r in records {
        if r.deleted || !compared(r.kind) {
            continue;
        }
        by_id.insert(&r.id, r);
        for (reason, key) in match_keys(r) {
            buckets
                .entry((r.kind, reason, key))
                .or_default()
                .push(&r.id);
        }
    }
    let mut pairs: BTreeMap<(Kind, &str, &str), BTreeSet<DuplicateReason>> = BTreeMap::new();
    for ((kind, reason, _), mut ids) in buckets {
        if ids.len() < 2 {
            continue;
        }
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(MAX_BUCKET);
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                pairs.entry((kind, a, b)).or_default().insert(reason);
            }
        }
    }
    pairs
        .into_iter()
        .filter(|((_, a, b), _)| !dismissed(by_id[a], by_id[b]))
        .map(|((kind, a, b), reasons)| DuplicatePair {
            kind,
            a: a.to_owned(),
            b: b.to_owned(),
            reasons: reasons.into_iter().collect(),
        })
        .collect()
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
