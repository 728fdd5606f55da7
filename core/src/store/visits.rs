//! Visits: started and finished by a worker, with where, what was visited, checklist answers and
//! attachments; reviewed by a supervisor of the visit's area.
use super::records::{append_timeline, obj, put_field, summaries, NewRecord, RecordSummary};
use super::Store;
use crate::doc::{self, ATTACHMENTS, CHECKLIST, VISITED};
use crate::error::{Error, Result};
use crate::model::{time, AttachmentRef, Kind, ReviewState};
use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjType, ReadDoc};
use gridwork_protocol::rules;
use serde::{Deserialize, Serialize};

/// Appends an attachment entry to a visit's `attachments` list (`list`).
pub(crate) fn append_attachment(
    tx: &mut Transaction<'_>,
    list: &automerge::ObjId,
    attachment: &AttachmentRef,
) -> Result<()> {
    let len = tx.length(list);
    let entry = tx.insert_object(list, len, ObjType::Map)?;
    tx.put(&entry, "sha256", attachment.sha256.as_str())?;
    tx.put(&entry, "name", attachment.name.as_str())?;
    tx.put(&entry, "mime", attachment.mime.as_str())?;
    tx.put(&entry, "size", attachment.size.to_string())?;
    Ok(())
}

/// Where the device was: WGS84 degrees and the accuracy radius in metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    pub accuracy: f64,
}

impl Store {
    /// Starts a visit now, in `area`, optionally where the device is.
    pub fn start_visit(
        &self,
        area: &str,
        purpose: &str,
        location: Option<GeoPoint>,
    ) -> Result<String> {
        let mut new = NewRecord::new(Kind::Visit, area).field("purpose", purpose);
        if let Some(p) = location {
            new = new
                .field("lat", p.lat.to_string())
                .field("lon", p.lon.to_string())
                .field("accuracy", p.accuracy.to_string());
        }
        self.create(new)
    }

    /// Adds a record to the records visited.
    pub fn add_visited(&self, visit: &str, record: &str) -> Result<()> {
        if !doc::is_valid_record_id(record) {
            return Err(Error::InvalidId(record.to_owned()));
        }
        let mut inner = self.lock();
        let before = inner.content_editable(visit, Some(Kind::Visit))?;
        let note = inner.note("visit_record", vec![VISITED.into()]);
        inner.write(visit, &before, note, |tx| {
            let visited = obj(tx, VISITED)?;
            tx.put(&visited, record, true)?;
            Ok(())
        })
    }

    /// Records a checklist answer (the empty answer removes it).
    pub fn answer_checklist(&self, visit: &str, question: &str, answer: &str) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.content_editable(visit, Some(Kind::Visit))?;
        let note = inner.note("checklist", vec![format!("checklist.{question}")]);
        inner.write(visit, &before, note, |tx| {
            let checklist = obj(tx, CHECKLIST)?;
            if answer.is_empty() {
                tx.delete(&checklist, question)?;
            } else {
                tx.put(&checklist, question, answer)?;
            }
            Ok(())
        })
    }

    /// Finishes a visit now. Only the worker who made it can finish it, once.
    pub fn finish_visit(&self, visit: &str, notes: Option<&str>) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.content_editable(visit, Some(Kind::Visit))?;
        if before.record.field("ended_at").is_some() {
            return Err(Error::InvalidInput(format!(
                "visit {visit} is already finished"
            )));
        }
        let note = inner.note("finish", vec!["ended_at".into()]);
        inner.write(visit, &before, note, |tx| {
            put_field(tx, "ended_at", &time::now_iso())?;
            if let Some(text) = notes {
                let n = obj(tx, doc::NOTES)?;
                tx.update_text(&n, text)?;
            }
            Ok(())
        })
    }

    /// Approves or returns a visit: a supervisor of the visit's area, never its own worker, once the
    /// visit is finished (the rule book's `visit_review`).
    pub fn review_visit(
        &self,
        visit: &str,
        state: ReviewState,
        comment: Option<&str>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.editable(visit, Some(Kind::Visit))?;
        inner.check(visit, |actor, areas| {
            rules::visit_review(actor, areas, &before.record, state, comment)
        })?;
        let me = inner.identity.user_id.clone();
        let from = before
            .record
            .field("review_state")
            .unwrap_or("pending")
            .to_owned();
        let note = inner.note("review", vec!["review_state".into()]);
        inner.write(visit, &before, note, |tx| {
            put_field(tx, "review_state", state.as_str())?;
            put_field(tx, "review_comment", comment.unwrap_or(""))?;
            put_field(tx, "reviewer", &me)?;
            append_timeline(
                tx,
                &me,
                "review",
                Some(&from),
                Some(state.as_str()),
                comment,
            )
        })
    }

    /// Attaches a stored attachment to a visit (appended: attachments merge by union).
    pub fn attach_to_visit(&self, visit: &str, attachment: &AttachmentRef) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.content_editable(visit, Some(Kind::Visit))?;
        if before
            .record
            .attachments
            .iter()
            .any(|a| a.sha256 == attachment.sha256)
        {
            return Ok(());
        }
        let note = inner.note("attach", vec![ATTACHMENTS.into()]);
        inner.write(visit, &before, note, |tx| {
            let list = obj(tx, ATTACHMENTS)?;
            append_attachment(tx, &list, attachment)
        })
    }

    /// Finished visits waiting for review in this user's scope: a supervisor's review queue.
    pub fn review_queue(&self, limit: u32) -> Result<Vec<RecordSummary>> {
        let inner = self.lock();
        let rids: Vec<i64> = {
            let mut stmt = inner.conn.prepare_cached(
                "SELECT r.rid, r.area FROM records r JOIN p_visit p ON p.rid = r.rid
                 WHERE r.deleted = 0 AND p.review_state = 'pending' AND p.ended_at IS NOT NULL
                 ORDER BY p.ended_at, r.rid",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let in_scope = inner.scope();
            let mut out = Vec::new();
            for row in rows {
                let (rid, area) = row?;
                if in_scope(&area) {
                    out.push(rid);
                    if out.len() >= limit as usize {
                        break;
                    }
                }
            }
            out
        };
        summaries(&inner, &rids)
    }
}
