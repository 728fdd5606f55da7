//! The quarantine: local changes the relay refused, and chunks from the relay that could not be read.
//!
//! A refused change stays in its record's document on this device only; every later local edit of that
//! record builds on it, so the relay cannot take those either (they wait in the outbox, see
//! [`Store::pushable`]). Discarding the refused change resets the record to the relay's version (the
//! document without the refused change and every local change built on it) and re-applies the user's
//! later edits that the rule book still allows as new changes; the others are dropped and reported.
use super::purge::delete_record;
use super::records::{insert_timeline_entry, obj, put_field, put_superseding};
use super::rulebook::{judged_change, Judged};
use super::visits::append_attachment;
use super::{projection, ChangeNote, Inner, Store};
use crate::doc::{self, ATTACHMENTS, ATTRS, CHECKLIST, LINKS, NOTES, TAGS, VISITED};
use crate::error::{Error, Result};
use crate::model::{time, Record};
use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, Change, ChangeHash, ObjType, ROOT};
use gridwork_protocol::rules::Reason;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Where a quarantined change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineOrigin {
    /// A change made on this device that the relay refused.
    Refused,
    /// A chunk received from the relay that could not be read or applied.
    Received,
}

impl QuarantineOrigin {
    fn as_str(self) -> &'static str {
        match self {
            QuarantineOrigin::Refused => "refused",
            QuarantineOrigin::Received => "received",
        }
    }
}

/// A quarantined change, with the relay's reason and what that means for the user's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedChange {
    pub hash: String,
    pub record_id: String,
    pub origin: QuarantineOrigin,
    /// The reason code: the relay's (`forbidden_role`, `out_of_scope`, ...) for a refused change.
    pub reason: String,
    /// The relay's explanation (names rules and fields, never values), when it gave one.
    pub detail: Option<String>,
    /// What happened to the data, in a sentence for the user.
    pub message: String,
    /// Seconds since the epoch.
    pub at: i64,
}

/// What discarding a quarantined change did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardReport {
    pub record_id: String,
    /// The discarded change and the local changes built on it, removed from the record.
    pub removed: Vec<String>,
    /// The new changes that re-apply later edits (queued in the outbox), oldest first.
    pub reapplied: Vec<String>,
    /// Later edits the rule book no longer allows: dropped.
    pub dropped: Vec<DroppedEdit>,
    /// Whether the record itself is gone from this device: the discarded change made it (the relay
    /// never had it), or the record is outside the user's scope.
    pub record_removed: bool,
}

/// A later edit that could not be re-applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedEdit {
    /// The removed change that made the edit.
    pub hash: String,
    /// What it did (`edit`, `close`, ...).
    pub action: String,
    /// The rule book's reason code.
    pub reason: String,
    pub detail: String,
}

/// The sentence shown for a quarantined change: truthful about where the data is.
fn message(origin: QuarantineOrigin, reason: &str, detail: Option<&str>) -> String {
    match origin {
        QuarantineOrigin::Refused => format!(
            "the change was refused by the relay for {}; the edit is kept only on this device; discard \
             it to return the record to the relay's version",
            detail.unwrap_or(reason)
        ),
        QuarantineOrigin::Received => format!(
            "a change received from the relay could not be applied ({reason}); it is set aside and \
             nothing else is affected; discard it to forget it"
        ),
    }
}

impl Store {
    /// Moves a refused change from the outbox to the quarantine, with the relay's reason code and
    /// detail. The change stays in its record on this device until it is discarded.
    pub fn quarantine(&self, seq: i64, reason: &str, detail: Option<&str>) -> Result<()> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let row: Option<(String, Vec<u8>, Vec<u8>)> = tx
            .query_row(
                "SELECT record_id, hash, bytes FROM outbox WHERE seq = ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((record, hash, bytes)) = row {
            tx.execute(
                "INSERT OR REPLACE INTO quarantine (hash, record_id, bytes, reason, at, detail, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'refused')",
                params![hash, record, bytes, reason, time::now_secs(), detail],
            )?;
            tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every quarantined change, oldest first, with a message saying what happened to its data.
    pub fn quarantined(&self) -> Result<Vec<QuarantinedChange>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare(
            "SELECT hash, record_id, origin, reason, detail, at FROM quarantine ORDER BY at, record_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let origin = match r.get::<_, String>(2)?.as_str() {
                "received" => QuarantineOrigin::Received,
                _ => QuarantineOrigin::Refused,
            };
            let reason: String = r.get(3)?;
            let detail: Option<String> = r.get(4)?;
            Ok(QuarantinedChange {
                hash: hex::encode(r.get::<_, Vec<u8>>(0)?),
                record_id: r.get(1)?,
                origin,
                message: message(origin, &reason, detail.as_deref()),
                reason,
                detail,
                at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Discards a quarantined change. A refused local change: its record returns to the relay's
    /// version (without the change and every local change built on it), and the user's later edits of
    /// the record that the rule book still allows are made again as new changes, queued in the outbox;
    /// the others are dropped and listed in the report. A received chunk is forgotten.
    pub fn discard_quarantined(&self, hash: &str) -> Result<DiscardReport> {
        let target: [u8; 32] = hex::decode(hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::InvalidId(hash.to_owned()))?;
        let mut inner = self.lock();
        inner.check_writable()?;
        let entry: Option<(String, String)> = inner
            .conn
            .query_row(
                "SELECT record_id, origin FROM quarantine WHERE hash = ?1",
                [&target[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (record_id, origin) = entry.ok_or_else(|| Error::NotQuarantined(hash.to_owned()))?;
        let mut report = DiscardReport {
            record_id: record_id.clone(),
            removed: vec![hash.to_owned()],
            ..Default::default()
        };
        let doc = match inner.take_doc(&record_id)? {
            Some(doc) if origin == QuarantineOrigin::Refused.as_str() => doc,
            _ => {
                inner
                    .conn
                    .execute("DELETE FROM quarantine WHERE hash = ?1", [&target[..]])?;
                return Ok(report);
            }
        };
        let (mut base, removed) = without_change(&doc, ChangeHash(target), inner.actor.clone())?;
        report.removed = removed.iter().map(|c| c.hash().to_string()).collect();
        let mut queued: Vec<Change> = Vec::new();
        for change in removed.iter().skip(1) {
            match inner.reapply(&record_id, &doc, &mut base, change)? {
                Ok(new) => queued.extend(new),
                Err(dropped) => report.dropped.push(dropped),
            }
        }
        let view = doc::read_record(&record_id, &base);
        let tx = inner.conn.transaction()?;
        for change in &removed {
            let h = change.hash();
            tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?
                .execute([&h.0[..]])?;
            tx.prepare_cached("DELETE FROM quarantine WHERE hash = ?1")?
                .execute([&h.0[..]])?;
        }
        match &view {
            // The discarded change made the record: the relay never had it.
            None => delete_record(&tx, &record_id)?,
            Some(view) => {
                for change in &queued {
                    tx.prepare_cached(
                        "INSERT INTO outbox (record_id, hash, bytes) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        record_id,
                        &change.hash().0[..],
                        change.raw_bytes()
                    ])?;
                }
                projection::project_record(&tx, view, &base.save(), true)?;
            }
        }
        tx.commit()?;
        report.reapplied = queued.iter().map(|c| c.hash().to_string()).collect();
        report.record_removed = match view {
            None => true,
            Some(_) => {
                inner.cache_doc(&record_id, base);
                inner.purge_out_of_scope(Some(std::slice::from_ref(&record_id)))? > 0
            }
        };
        tracing::info!(
            record = %record_id,
            removed = report.removed.len(),
            reapplied = report.reapplied.len(),
            dropped = report.dropped.len(),
            "quarantined change discarded"
        );
        Ok(report)
    }

    /// Outbox changes that may be pushed now, oldest first: those of records without a refused change
    /// in the quarantine (the relay cannot take a change that builds on a refused one; they wait until
    /// the refused change is discarded).
    pub(crate) fn pushable(&self, limit: u32) -> Result<Vec<super::OutboxChange>> {
        self.lock().outbox_rows(
            "SELECT seq, record_id, hash, bytes FROM outbox
             WHERE record_id NOT IN (SELECT record_id FROM quarantine WHERE origin = 'refused')
             ORDER BY seq LIMIT ?1 + 0",
            limit,
        )
    }
}

/// `doc` without the change `target` and every change built on it: the rebuilt document (with this
/// store's `actor`) and the removed changes, `target` first, in causal order.
fn without_change(
    doc: &Automerge,
    target: ChangeHash,
    actor: automerge::ActorId,
) -> Result<(Automerge, Vec<Change>)> {
    let mut gone: HashSet<ChangeHash> = HashSet::from([target]);
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for change in doc.get_changes(&[]) {
        if change.hash() == target || change.deps().iter().any(|d| gone.contains(d)) {
            gone.insert(change.hash());
            removed.push(change);
        } else {
            kept.push(change);
        }
    }
    if removed.first().map(Change::hash) != Some(target) {
        return Err(Error::NotQuarantined(format!(
            "{target} (not in the record's document)"
        )));
    }
    let mut base = Automerge::new().with_actor(actor);
    base.apply_changes(kept)?;
    Ok((base, removed))
}

impl Inner {
    /// Makes the edit `change` made (the difference of the record view before and after it, in the
    /// original document `doc`) again on `base`, as a new change judged by the rule book. Returns the
    /// new change (none when `base` has the edit already), or why the edit was dropped.
    fn reapply(
        &self,
        id: &str,
        doc: &Automerge,
        base: &mut Automerge,
        change: &Change,
    ) -> Result<std::result::Result<Option<Change>, DroppedEdit>> {
        let old = ChangeNote::parse(change.message());
        let action = old
            .as_ref()
            .map_or("edit", |n| n.action.as_str())
            .to_owned();
        let dropped = |reason: Reason, detail: &str| DroppedEdit {
            hash: change.hash().to_string(),
            action: action.clone(),
            reason: reason.as_str().to_owned(),
            detail: detail.to_owned(),
        };
        let Ok(current) = doc::read_state(id, &*base) else {
            return Ok(Err(dropped(
                Reason::MissingDeps,
                "the record itself was refused: there is nothing to re-apply the edit to",
            )));
        };
        let view_at = |heads: &[ChangeHash]| -> Result<Option<Record>> {
            Ok(doc::read_record(id, &doc.fork_at(heads)?))
        };
        let (Some(before), Some(after)) = (view_at(change.deps())?, view_at(&[change.hash()])?)
        else {
            return Ok(Err(dropped(Reason::Malformed, "the edit cannot be read")));
        };
        let note = self.note(&action, old.map(|n| n.fields).unwrap_or_default());
        let message = serde_json::to_string(&note).expect("note serialises");
        let outcome = judged_change(base, id, &self.book(), &current, message, |tx| {
            apply_difference(tx, &before, &after, &current.record)
        })?;
        Ok(match outcome {
            Judged::Committed(..) => Ok(Some(
                base.get_last_local_change()
                    .expect("a change was just committed"),
            )),
            // The relay's version has it already: nothing is lost.
            Judged::Unchanged(()) => Ok(None),
            Judged::Refused(refusal) => Err(dropped(refusal.reason, &refusal.detail)),
        })
    }
}

/// Writes into `tx` (a document whose view is `current`) what turned the view `before` into `after`:
/// fields, attributes, areas, tombstone, tags, links, notes, timeline entries, visited records,
/// checklist answers and attachments.
fn apply_difference(
    tx: &mut Transaction<'_>,
    before: &Record,
    after: &Record,
    current: &Record,
) -> Result<()> {
    if before.area != after.area {
        put_superseding(tx, &ROOT, doc::AREA, after.area.as_str())?;
    }
    if before.responsible != after.responsible {
        match &after.responsible {
            Some(r) => put_superseding(tx, &ROOT, doc::RESPONSIBLE, r.as_str())?,
            None if current.responsible.is_some() => tx.delete(ROOT, doc::RESPONSIBLE)?,
            None => {}
        }
    }
    if before.deleted != after.deleted {
        put_superseding(tx, &ROOT, doc::DELETED, after.deleted)?;
    }
    for (name, value) in changed(&before.fields, &after.fields) {
        if value.is_some() || current.fields.contains_key(name) {
            put_field(tx, name, value.unwrap_or_default())?;
        }
    }
    let attrs = obj(tx, ATTRS)?;
    for (name, value) in changed(&before.attrs, &after.attrs) {
        match value {
            Some(v) => put_superseding(tx, &attrs, name, v)?,
            None if current.attrs.contains_key(name) => tx.delete(&attrs, name)?,
            None => {}
        }
    }
    let tags = obj(tx, TAGS)?;
    let (added, removed) = set_difference(&before.tags, &after.tags);
    for tag in added {
        tx.put(&tags, tag.as_str(), true)?;
    }
    for tag in removed.into_iter().filter(|t| current.tags.contains(t)) {
        tx.delete(&tags, tag.as_str())?;
    }
    let link_key = |l: &crate::model::Link| format!("{}:{}", l.link_type.as_str(), l.target);
    let links = obj(tx, LINKS)?;
    let before_links: Vec<String> = before.links.iter().map(link_key).collect();
    let after_links: Vec<String> = after.links.iter().map(link_key).collect();
    let current_links: Vec<String> = current.links.iter().map(link_key).collect();
    let (added, removed) = set_difference(&before_links, &after_links);
    for key in added {
        let target = key.split_once(':').map_or("", |(_, t)| t).to_owned();
        tx.put(&links, key.as_str(), target)?;
    }
    for key in removed.into_iter().filter(|k| current_links.contains(k)) {
        tx.delete(&links, key.as_str())?;
    }
    if before.notes != after.notes {
        let notes = obj(tx, NOTES)?;
        tx.update_text(
            &notes,
            rebase_text(&before.notes, &after.notes, &current.notes),
        )?;
    }
    if after.timeline.starts_with(&before.timeline) {
        for entry in &after.timeline[before.timeline.len()..] {
            insert_timeline_entry(tx, entry)?;
        }
    }
    let (visited, _) = set_difference(&before.visited, &after.visited);
    if !visited.is_empty() {
        let set = object(tx, VISITED, ObjType::Map)?;
        for v in visited {
            tx.put(&set, v.as_str(), true)?;
        }
    }
    let answers = changed(&before.checklist, &after.checklist);
    if !answers.is_empty() {
        let checklist = object(tx, CHECKLIST, ObjType::Map)?;
        for (question, answer) in answers {
            match answer {
                Some(a) => tx.put(&checklist, question, a)?,
                None if current.checklist.contains_key(question) => {
                    tx.delete(&checklist, question)?
                }
                None => {}
            }
        }
    }
    if after.attachments.starts_with(&before.attachments) {
        let new: Vec<_> = after.attachments[before.attachments.len()..]
            .iter()
            .filter(|a| !current.attachments.iter().any(|c| c.sha256 == a.sha256))
            .collect();
        if !new.is_empty() {
            let list = object(tx, ATTACHMENTS, ObjType::List)?;
            for a in new {
                append_attachment(tx, &list, a)?;
            }
        }
    }
    Ok(())
}

/// A root object of the document, made if the document has none yet.
fn object(tx: &mut Transaction<'_>, key: &str, kind: ObjType) -> Result<automerge::ObjId> {
    match doc::root_obj(tx, key) {
        Some(o) => Ok(o),
        None => Ok(tx.put_object(ROOT, key, kind)?),
    }
}

/// The keys whose value differs between two maps, with the new value (None: removed).
fn changed<'a>(
    before: &'a BTreeMap<String, String>,
    after: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, Option<&'a str>)> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| (k.as_str(), after.get(k).map(String::as_str)))
        .collect()
}

/// What was added to and removed from a set.
fn set_difference<'a>(
    before: &'a [String],
    after: &'a [String],
) -> (Vec<&'a String>, Vec<&'a String>) {
    let added = after.iter().filter(|x| !before.contains(x)).collect();
    let removed = before.iter().filter(|x| !after.contains(x)).collect();
    (added, removed)
}

/// `current` with the text edit that turned `before` into `after` made in it: the replaced span (found
/// from the common prefix and suffix of `before` and `after`) is located in `current` by the span and
/// the text around it; when that is not found exactly once, the edit's result `after` is taken whole.
fn rebase_text(before: &str, after: &str, current: &str) -> String {
    if current == before {
        return after.to_owned();
    }
    let (b, a): (Vec<char>, Vec<char>) = (before.chars().collect(), after.chars().collect());
    let prefix = b.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let suffix = b[prefix..]
        .iter()
        .rev()
        .zip(a[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    const CONTEXT: usize = 16;
    let lead: String = b[prefix.saturating_sub(CONTEXT)..prefix].iter().collect();
    let old: String = b[prefix..b.len() - suffix].iter().collect();
    let tail: String = b[b.len() - suffix..(b.len() - suffix + CONTEXT).min(b.len())]
        .iter()
        .collect();
    let new: String = a[prefix..a.len() - suffix].iter().collect();
    let needle = format!("{lead}{old}{tail}");
    let mut found = current.match_indices(&needle);
    match (found.next(), found.next()) {
        (Some((at, _)), None) => {
            let start = at + lead.len();
            format!(
                "{}{new}{}",
                &current[..start],
                &current[start + old.len()..]
            )
        }
        _ => after.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::rebase_text;

    #[test]
    fn a_text_edit_is_made_again_where_its_context_is() {
        let rows: &[(&str, &str, &str, &str)] = &[
            // before, after, current, expected
            ("abc", "abXc", "abc", "abXc"),
            (
                "Lives alone.",
                "Lives alone. Has a cat.",
                "Note: Lives alone.",
                "Note: Lives alone. Has a cat.",
            ),
            (
                "one two three",
                "one 2 three",
                "zero one two three four",
                "zero one 2 three four",
            ),
            // The context is gone: the edit's result is taken whole.
            (
                "one two three",
                "one 2 three",
                "something else",
                "one 2 three",
            ),
            ("", "new text", "", "new text"),
        ];
        for (before, after, current, expected) in rows {
            assert_eq!(
                rebase_text(before, after, current),
                *expected,
                "{before:?} -> {after:?} on {current:?}"
            );
        }
    }
}
