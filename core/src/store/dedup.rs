//! Duplicates after the fact: the pairs of records on this device that may be one, merging one into
//! the other, and "not a duplicate" decisions. The rules are the protocol's
//! (`gridwork_protocol::duplicates`), the same the relay lists candidates with (`GET /v1/duplicates`);
//! every decision is an edit of the records' documents, judged by the rule book (a supervisor of the
//! area or the grid's own worker), synced like any edit.
//!
//! Merging `away` into `kept`:
//! 1. `kept` absorbs `away` (one change): the values it lacks are filled from `away`, equal ones are
//!    settled, `away`'s tags and links are added; values that differ become conflicts to resolve
//!    ([`Store::conflicts`] lists them beside concurrent edits, marked `merged_from`);
//! 2. `away` becomes a tombstone whose `merge` entry names `kept` (one change);
//! 3. links of other records to `away` are pointed at `kept` where this user may edit them. Links the
//!    user may not edit, and visits that included `away` (a visit is its worker's account), keep naming
//!    `away`; readers follow the tombstone: follow-ups and statistics count `away`'s visits for `kept`.
//!
//! An edit made to `away` offline after the merge lands on the tombstone (its author saw a live
//! record) and shows up as a conflict on `kept` until someone takes it or settles it. Both histories
//! stay readable.
use super::records::{obj, put_field, put_superseding, summaries, RecordSummary};
use super::Store;
use crate::doc::{self, ATTRS, DUPS, LINKS, NOTES, TAGS};
use crate::error::{Error, Result};
use crate::model::{Conflict, ConflictValue, Kind, Record};
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT};
use gridwork_protocol::duplicates::{
    self as dups, absorbed, merge_conflicts, merge_plan, settled_key, Candidates, DuplicateReason,
};
use gridwork_protocol::rules;
use serde::{Deserialize, Serialize};

/// Two records on this device that may be one, as a list shows them (ID numbers masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicatePairSummary {
    pub kind: Kind,
    pub a: RecordSummary,
    pub b: RecordSummary,
    pub reasons: Vec<DuplicateReason>,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeReport {
    pub kept: String,
    pub merged_away: String,
    /// Values the kept record took from the other (`name`, `attrs.<key>`, `notes`).
    pub filled: Vec<String>,
    /// Values that differ: conflicts to resolve on the kept record.
    pub conflicts: Vec<String>,
    /// Records whose links now point at the kept record.
    pub repointed: Vec<String>,
    /// Records whose links still name the merged-away record (this user may not edit them); readers
    /// follow the tombstone.
    pub not_repointed: Vec<String>,
}

/// Writes a value a merge compares (`name`, `attrs.<key>` or `notes`) on the record being changed.
fn put_value(
    tx: &mut automerge::transaction::Transaction<'_>,
    name: &str,
    value: &str,
) -> Result<()> {
    if let Some(key) = name.strip_prefix("attrs.") {
        let attrs = obj(tx, ATTRS)?;
        put_superseding(tx, &attrs, key, value)
    } else if name == NOTES {
        let notes = obj(tx, NOTES)?;
        tx.update_text(&notes, value)?;
        Ok(())
    } else {
        put_field(tx, name, value)
    }
}

/// The record's `dups` map, made by its first decision.
fn dups_map(tx: &mut automerge::transaction::Transaction<'_>) -> Result<automerge::ObjId> {
    Ok(match doc::root_obj(tx, DUPS) {
        Some(map) => map,
        None => tx.put_object(ROOT, DUPS, ObjType::Map)?,
    })
}

impl Store {
    /// The open duplicate candidates on this device: pairs of people, places or organisations this
    /// user sees that may be one (same ID number; same name and birth date, home, address, place or
    /// phone), not merged or dismissed; both in `area`'s subtree when given.
    pub fn duplicates(&self, area: Option<&str>) -> Result<Vec<DuplicatePairSummary>> {
        let (actor, paths) = {
            let inner = self.lock();
            (inner.rule_actor(), inner.area_paths.clone())
        };
        let root = match area {
            Some(area) => Some(
                paths
                    .get(area)
                    .ok_or_else(|| Error::UnknownArea(area.to_owned()))?
                    .clone(),
            ),
            None => None,
        };
        // One record at a time, keeping only what finding candidates compares: a store of 100,000
        // records is compared without holding them.
        let mut found = Candidates::new();
        self.each_view(
            "deleted = 0 AND kind IN ('person', 'place', 'organisation')",
            |r| {
                let within = root
                    .as_ref()
                    .is_none_or(|root| paths.get(&r.area).is_some_and(|p| p.starts_with(root)));
                if within && actor.sees(&paths, &r) {
                    found.add(&r);
                }
            },
        )?;
        let pairs = found.pairs();
        let inner = self.lock();
        let rid = |id: &str| -> Result<i64> {
            Ok(inner
                .conn
                .prepare_cached("SELECT rid FROM records WHERE id = ?1")?
                .query_row([id], |r| r.get(0))?)
        };
        let masked = |s: RecordSummary| RecordSummary {
            fields: s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), s.kind.list_value(k, v)))
                .collect(),
            ..s
        };
        let mut out = Vec::with_capacity(pairs.len());
        for p in pairs {
            let mut two = summaries(&inner, &[rid(&p.a)?, rid(&p.b)?])?;
            let (Some(b), Some(a)) = (two.pop(), two.pop()) else {
                continue;
            };
            out.push(DuplicatePairSummary {
                kind: p.kind,
                a: masked(a),
                b: masked(b),
                reasons: p.reasons,
            });
        }
        Ok(out)
    }

    /// Records that `a` and `b` are not duplicates: the pair is never listed again, on any device.
    /// A supervisor of the area or the grid's own worker decides (for both records).
    pub fn mark_not_duplicate(&self, a: &str, b: &str) -> Result<()> {
        let mut inner = self.lock();
        let ra = inner.editable(a, None)?;
        let rb = inner.editable(b, None)?;
        check_pair(&ra.record, &rb.record)?;
        for r in [&ra.record, &rb.record] {
            inner.check(&r.id, |actor, areas| rules::may_merge(actor, areas, r))?;
        }
        let note = inner.note("distinct", vec![DUPS.into()]);
        inner.write(a, &ra, note, |tx| {
            let map = dups_map(tx)?;
            tx.put(&map, b, dups::DISTINCT)?;
            Ok(())
        })
    }

    /// Merges `away` into `kept`: see the module notes. Both must be live records of one kind (person,
    /// place or organisation) that this user may merge (a supervisor of their areas or the grid's own
    /// worker); everything is judged before anything is written.
    pub fn merge_records(&self, kept: &str, away: &str) -> Result<MergeReport> {
        let (before_kept, before_away, user) = {
            let mut inner = self.lock();
            let k = inner.editable(kept, None)?;
            let w = inner.editable(away, None)?;
            check_pair(&k.record, &w.record)?;
            for r in [&k.record, &w.record] {
                inner.check(&r.id, |actor, areas| rules::may_merge(actor, areas, r))?;
                inner.check(&r.id, |actor, areas| rules::may_edit(actor, areas, r))?;
            }
            (k, w, inner.identity.user_id.clone())
        };
        let plan = merge_plan(&before_kept.record, &before_away.record);
        // 1. The kept record absorbs the other.
        {
            let mut inner = self.lock();
            let before_kept = inner.editable(kept, None)?;
            let mut touched: Vec<String> = plan.fill.iter().map(|(n, _)| n.clone()).collect();
            touched.push(DUPS.into());
            let note = inner.note("absorb", touched);
            inner.write(kept, &before_kept, note, |tx| {
                for (name, value) in &plan.fill {
                    put_value(tx, name, value)?;
                }
                let tags = obj(tx, TAGS)?;
                for t in &plan.tags {
                    tx.put(&tags, t.as_str(), true)?;
                }
                let links = obj(tx, LINKS)?;
                for l in &plan.links {
                    tx.put(
                        &links,
                        format!("{}:{}", l.link_type.as_str(), l.target),
                        l.target.as_str(),
                    )?;
                }
                let map = dups_map(tx)?;
                tx.put(&map, away, dups::MERGED)?;
                for (name, value) in &plan.settle {
                    tx.put(&map, settled_key(away, name), value.as_str())?;
                }
                super::records::append_timeline(tx, &user, "absorb", Some(away), None, None)
            })?;
        }
        // 2. The other becomes a tombstone that says where it went.
        {
            let mut inner = self.lock();
            let before_away = inner.editable(away, None)?;
            let note = inner.note("merge", vec![doc::DELETED.into()]);
            inner.write(away, &before_away, note, |tx| {
                tx.put(ROOT, doc::DELETED, true)?;
                super::records::append_timeline(tx, &user, "merge", None, Some(kept), None)
            })?;
        }
        // 3. Links of other records to the merged-away one point at the kept one, where allowed.
        let sources: Vec<(String, String)> = {
            let inner = self.lock();
            let mut st = inner.conn.prepare_cached(
                "SELECT r.id, l.type FROM links l JOIN records r ON r.rid = l.src
                 WHERE l.dst = ?1 AND r.deleted = 0 AND r.id NOT IN (?1, ?2) ORDER BY r.id",
            )?;
            let rows = st.query_map([away, kept], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let (mut repointed, mut not_repointed) = (Vec::new(), Vec::new());
        for (source, link_type) in sources {
            let mut inner = self.lock();
            let before = match inner.content_editable(&source, None) {
                Ok(b) => b,
                Err(Error::Forbidden(_) | Error::OutOfScope(_) | Error::Deleted(_)) => {
                    not_repointed.push(source);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let note = inner.note("link", vec![LINKS.into()]);
            inner.write(&source, &before, note, |tx| {
                let links = obj(tx, LINKS)?;
                tx.delete(&links, format!("{link_type}:{away}"))?;
                tx.put(&links, format!("{link_type}:{kept}"), kept)?;
                Ok(())
            })?;
            if !repointed.contains(&source) {
                repointed.push(source);
            }
        }
        not_repointed.dedup();
        Ok(MergeReport {
            kept: kept.to_owned(),
            merged_away: away.to_owned(),
            filled: plan.fill.into_iter().map(|(n, _)| n).collect(),
            conflicts: plan.conflicts,
            repointed,
            not_repointed,
        })
    }

    /// The conflicts merges left on `kept`: values of records merged into it that it has not taken
    /// into account (they differ, or the merged-away record was edited after the merge).
    pub(crate) fn merge_conflicts_of(&self, kept: &Record) -> Result<Vec<Conflict>> {
        let mut out = Vec::new();
        for away in absorbed(kept) {
            let other = match self.get(away) {
                Ok(r) => r,
                // Not on this device (out of this user's scope): nothing to show here.
                Err(Error::UnknownRecord(_)) => continue,
                Err(e) => return Err(e),
            };
            let mine = dups::merge_values(kept);
            for (field, value) in merge_conflicts(kept, &other) {
                out.push(Conflict {
                    record_id: kept.id.clone(),
                    kind: kept.kind,
                    field: field.clone(),
                    values: vec![
                        ConflictValue {
                            value: mine.get(&field).cloned().unwrap_or_default(),
                            user: String::new(),
                            device: String::new(),
                            time: 0,
                            winner: true,
                            merged_from: None,
                        },
                        ConflictValue {
                            value,
                            user: String::new(),
                            device: String::new(),
                            time: 0,
                            winner: false,
                            merged_from: Some(other.id.clone()),
                        },
                    ],
                });
            }
        }
        Ok(out)
    }

    /// Every record on this device with conflicts merges left, and those conflicts.
    pub(crate) fn all_merge_conflicts(&self) -> Result<Vec<Conflict>> {
        // Only the records that absorbed others (the `absorbed` index), not every record's view.
        let ids: Vec<String> = {
            let inner = self.lock();
            let mut st = inner.conn.prepare_cached(
                "SELECT DISTINCT r.id FROM absorbed a JOIN records r ON r.rid = a.rid
                 WHERE r.deleted = 0 AND r.kind IN ('person', 'place', 'organisation')
                 ORDER BY r.rid",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            let kept = self.get(&id)?;
            let seen = {
                let inner = self.lock();
                inner.rule_actor().sees(&inner.area_paths, &kept)
            };
            if seen && absorbed(&kept).next().is_some() {
                out.extend(self.merge_conflicts_of(&kept)?);
            }
        }
        Ok(out)
    }

    /// Resolves a conflict a merge left on `kept`: the kept record takes `value` for `field` and
    /// settles the merged-away record's current value (a later edit of that record shows up again).
    pub(crate) fn resolve_merge_conflict(
        &self,
        kept: &str,
        field: &str,
        value: &str,
        away: &str,
    ) -> Result<()> {
        let theirs = dups::merge_values(&self.get(away)?)
            .remove(field)
            .unwrap_or_default();
        let mut inner = self.lock();
        let before = inner.editable(kept, None)?;
        let record = &before.record;
        if !field.starts_with("attrs.") && field != NOTES {
            record.kind.spec(field)?.validate(value)?;
        }
        inner.check(kept, |actor, areas| rules::may_merge(actor, areas, record))?;
        let note = inner.note("resolve", vec![field.into(), DUPS.into()]);
        inner.write(kept, &before, note, |tx| {
            put_value(tx, field, value)?;
            let map = dups_map(tx)?;
            tx.put(&map, settled_key(away, field), theirs.as_str())?;
            Ok(())
        })
    }
}

fn check_pair(a: &Record, b: &Record) -> Result<()> {
    if a.id == b.id {
        return Err(Error::InvalidInput(
            "a record is not its own duplicate".into(),
        ));
    }
    if a.kind != b.kind || !dups::compared(a.kind) {
        return Err(Error::InvalidInput(
            "duplicates are two people, two places or two organisations".into(),
        ));
    }
    Ok(())
}
