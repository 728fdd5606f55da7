//! The device side of the rule book (`gridwork_protocol::rules`): every write is judged on the record's
//! state before and after its change, by the same functions the relay applies to every pushed change.
//!
//! The device's judgement is a convenience (the user learns at once instead of after a sync); the relay's
//! is the authority. Both use the identity the relay gave: the store's user, role and area, with the
//! area's path from the area tree (an area the device does not know covers nothing).
use super::Inner;
use crate::doc::{self, RecordState};
use crate::error::{Error, Result};
use crate::model::{time, Kind};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::Automerge;
use gridwork_protocol::rules::{self, Actor, Areas};

/// What became of a judged edit.
pub(crate) enum Judged<T> {
    /// The edit changed nothing: no change was made.
    Unchanged(T),
    /// The change was allowed and committed to the document; the record's state after it.
    Committed(T, Box<RecordState>),
    /// The rule book refused the change: it was rolled back.
    Refused(rules::Refusal),
}

/// What the rule book judges this store's writes by: who acts, the area tree and the city forms.
pub(crate) struct Book<'a> {
    pub actor: Actor,
    pub areas: &'a dyn Areas,
    pub forms: &'a [gridwork_protocol::Form],
}

/// Makes one change of record `id` on `doc` with `edit` and has the rule book judge it: the state
/// before (`before`) and after, as the book's actor made it. An allowed change is committed with
/// `message` (the change note); a refused one is rolled back, leaving `doc` as it was.
pub(crate) fn judged_change<T>(
    doc: &mut Automerge,
    id: &str,
    book: &Book<'_>,
    before: &RecordState,
    message: String,
    edit: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
) -> Result<Judged<T>> {
    let mut tx = doc.transaction();
    let result = match edit(&mut tx) {
        Ok(result) => result,
        Err(e) => {
            tx.rollback();
            return Err(e);
        }
    };
    if tx.pending_ops() == 0 {
        tx.rollback();
        return Ok(Judged::Unchanged(result));
    }
    let after = match doc::read_state(id, &tx) {
        Ok(after) => after,
        Err(e) => {
            tx.rollback();
            return Err(Error::Corrupt(format!("record {id}: {e}")));
        }
    };
    if let Err(refusal) =
        rules::authorize(&book.actor, book.areas, book.forms, Some(before), &after)
    {
        tx.rollback();
        return Ok(Judged::Refused(refusal));
    }
    tx.commit_with(
        CommitOptions::default()
            .with_message(message)
            .with_time(time::now_secs()),
    );
    Ok(Judged::Committed(result, Box::new(after)))
}

impl Inner {
    /// What the rule book judges this store's writes by.
    pub(crate) fn book(&self) -> Book<'_> {
        Book {
            actor: self.rule_actor(),
            areas: &self.area_paths,
            forms: &self.forms,
        }
    }

    /// The actor the rule book judges this store's writes as.
    pub(crate) fn rule_actor(&self) -> Actor {
        let me = &self.identity;
        Actor {
            user: me.user_id.clone(),
            device: me.device_id.clone(),
            role: me.role,
            area_path: self.area_path(&me.area).unwrap_or_default().to_owned(),
        }
    }

    /// The rule book's view of a record (loading its document if needed).
    pub(crate) fn state(&mut self, id: &str) -> Result<RecordState> {
        let doc = self.doc(id)?;
        doc::read_state(id, doc).map_err(|e| Error::Corrupt(format!("record {id}: {e}")))
    }

    /// Runs one of the rule book's pre-checks (`may_edit`, `may_move`, ...) for record `id`.
    pub(crate) fn check<T>(
        &self,
        id: &str,
        rule: impl FnOnce(&Actor, &dyn Areas) -> Result<T, rules::Refusal>,
    ) -> Result<T> {
        rule(&self.rule_actor(), &self.area_paths).map_err(|refusal| Error::refused(id, refusal))
    }

    /// The state of a record this user may act on: it exists, is of `kind` (if given), is visible and
    /// is not deleted. The friendly checks before a write; the rule book decides the rest.
    pub(crate) fn editable(&mut self, id: &str, kind: Option<Kind>) -> Result<RecordState> {
        let state = self.visible(id, kind)?;
        if state.record.deleted {
            if let Some(kept) = gridwork_protocol::duplicates::merged_into(&state.record) {
                return Err(Error::InvalidTransition(format!(
                    "the record was merged into {kept}: work on that one"
                )));
            }
            return Err(Error::Deleted(id.into()));
        }
        Ok(state)
    }

    /// [`Inner::editable`] for edits of the content, checked by the rule book's `may_edit` (a visit's
    /// content is its worker's).
    pub(crate) fn content_editable(&mut self, id: &str, kind: Option<Kind>) -> Result<RecordState> {
        let state = self.editable(id, kind)?;
        self.check(id, |actor, areas| {
            rules::may_edit(actor, areas, &state.record)
        })?;
        Ok(state)
    }

    /// The state of a record that exists, is of `kind` (if given) and is visible to this user.
    pub(crate) fn visible(&mut self, id: &str, kind: Option<Kind>) -> Result<RecordState> {
        let state = self.state(id)?;
        let record = &state.record;
        if let Some(kind) = kind {
            if record.kind != kind {
                return Err(Error::WrongKind {
                    id: id.into(),
                    expected: kind.as_str().into(),
                    actual: record.kind.as_str().into(),
                });
            }
        }
        if !self.rule_actor().sees(&self.area_paths, record) {
            return Err(Error::OutOfScope(format!(
                "the record's area {} is outside your scope",
                record.area
            )));
        }
        Ok(state)
    }
}
