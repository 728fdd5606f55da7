//! Visits: started and finished by a worker, with where, what was visited, checklist answers and
//! attachments; reviewed by a supervisor of the visit's area.
use super::records::{append_timeline, obj, put_field, summaries, NewRecord, RecordSummary};
use super::Store;
use crate::doc::{self, ATTACHMENTS, CHECKLIST, VISITED};
use crate::error::{Error, Result};
use crate::model::{time, AttachmentRef, Kind, ReviewState, Role};
use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc};
use serde::{Deserialize, Serialize};

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
        inner.editable(&self.identity, visit, Some(Kind::Visit))?;
        let note = self.note("visit_record", vec![VISITED.into()]);
        inner.write(visit, note, |tx| {
            let visited = obj(tx, VISITED)?;
            tx.put(&visited, record, true)?;
            Ok(())
        })
    }

    /// Records a checklist answer (the empty answer removes it).
    pub fn answer_checklist(&self, visit: &str, question: &str, answer: &str) -> Result<()> {
        if question.trim().is_empty() || question.len() > 256 || answer.len() > 4096 {
            return Err(Error::field(
                "checklist",
                "question must be 1-256 bytes, answer at most 4096",
            ));
        }
        let mut inner = self.lock();
        inner.editable(&self.identity, visit, Some(Kind::Visit))?;
        let note = self.note("checklist", vec![format!("checklist.{question}")]);
        inner.write(visit, note, |tx| {
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
        let record = inner.editable(&self.identity, visit, Some(Kind::Visit))?;
        if record.field("worker") != Some(self.identity.user_id.as_str()) {
            return Err(Error::Forbidden(
                "only the worker who started a visit can finish it".into(),
            ));
        }
        if record.field("ended_at").is_some() {
            return Err(Error::InvalidInput(format!(
                "visit {visit} is already finished"
            )));
        }
        if notes.is_some_and(|n| n.len() > 64 * 1024) {
            return Err(Error::field("notes", "longer than 64 KiB"));
        }
        let note = self.note("finish", vec!["ended_at".into()]);
        inner.write(visit, note, |tx| {
            put_field(tx, "ended_at", &time::now_iso())?;
            if let Some(text) = notes {
                let n = obj(tx, doc::NOTES)?;
                tx.update_text(&n, text)?;
            }
            Ok(())
        })
    }

    /// Approves or returns a visit. Only a supervisor whose area contains the visit's area may.
    pub fn review_visit(
        &self,
        visit: &str,
        state: ReviewState,
        comment: Option<&str>,
    ) -> Result<()> {
        if !matches!(self.identity.role, Role::Supervisor | Role::Operator) {
            return Err(Error::Forbidden(
                "reviewing visits needs a supervisor of the visit's area".into(),
            ));
        }
        if state == ReviewState::Pending {
            return Err(Error::InvalidInput("a review approves or returns".into()));
        }
        if state == ReviewState::Returned && comment.is_none_or(|c| c.trim().is_empty()) {
            return Err(Error::field(
                "review_comment",
                "required when returning a visit",
            ));
        }
        if comment.is_some_and(|c| c.len() > 4096) {
            return Err(Error::field("review_comment", "longer than 4096 bytes"));
        }
        let me = self.identity.user_id.clone();
        let mut inner = self.lock();
        let record = inner.editable(&self.identity, visit, Some(Kind::Visit))?;
        let from = record.field("review_state").unwrap_or("pending").to_owned();
        let note = self.note("review", vec!["review_state".into()]);
        inner.write(visit, note, |tx| {
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
        let record = inner.editable(&self.identity, visit, Some(Kind::Visit))?;
        if record
            .attachments
            .iter()
            .any(|a| a.sha256 == attachment.sha256)
        {
            return Ok(());
        }
        let note = self.note("attach", vec![ATTACHMENTS.into()]);
        inner.write(visit, note, |tx| {
            let list = obj(tx, ATTACHMENTS)?;
            let len = tx.length(&list);
            let entry = tx.insert_object(&list, len, ObjType::Map)?;
            tx.put(&entry, "sha256", attachment.sha256.as_str())?;
            tx.put(&entry, "name", attachment.name.as_str())?;
            tx.put(&entry, "mime", attachment.mime.as_str())?;
            tx.put(&entry, "size", attachment.size.to_string())?;
            Ok(())
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
            let mut out = Vec::new();
            for row in rows {
                let (rid, area) = row?;
                if inner.in_scope(&self.identity, &area) {
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
