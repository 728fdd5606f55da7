//! Event lifecycle transitions, escalation, and the "overdue" and "assigned to me" lists.
//!
//! Who may do which transition is the rule book's (`gridwork_protocol::rules::event_transition`): anyone
//! whose scope covers the event's *responsible* area acts on it; assigning someone else, verifying,
//! returning, closing, reopening and handing down are a supervisor's; starting and resolving are the
//! assignee's (or a supervisor's). Two offline transitions that disagree both stay in the timeline, and
//! the status field shows as a conflict until someone resolves it.
use super::records::{append_timeline, put_field, summaries, RecordSummary};
use super::Store;
use crate::doc;
use crate::error::Result;
use crate::model::{time, EventAction, EventStatus, Kind};
use automerge::transaction::Transactable;
use automerge::ROOT;
use gridwork_protocol::rules;

impl Store {
    /// Moves an event through its lifecycle. `comment` goes on the timeline (required to return).
    pub fn transition(
        &self,
        event_id: &str,
        action: EventAction,
        comment: Option<&str>,
    ) -> Result<EventStatus> {
        let mut inner = self.lock();
        let before = inner.editable(event_id, Some(Kind::Event))?;
        let event = &before.record;
        let effect = inner.check(event_id, |actor, areas| {
            rules::event_transition(actor, areas, event, &action, comment)
        })?;
        let status = event.field("status").unwrap_or_default().to_owned();
        let responsible = event
            .responsible
            .clone()
            .unwrap_or_else(|| event.area.clone());
        let next = effect.status;
        let mut touched = vec!["status".to_owned()];
        if effect.responsible.is_some() {
            touched.push(doc::RESPONSIBLE.into());
        }
        // The timeline says what happened: who the event went to, or which status it reached.
        let (from, to) = match (&effect.responsible, &action) {
            (Some(area), _) => (responsible.clone(), area.clone()),
            (None, EventAction::Assign { assignee }) => (status.clone(), assignee.clone()),
            (None, _) => (status.clone(), next.as_str().to_owned()),
        };
        let user = inner.identity.user_id.clone();
        let note = inner.note(action.name(), touched);
        inner.write(event_id, &before, note, |tx| {
            if next.as_str() != status {
                put_field(tx, "status", next.as_str())?;
            }
            if let Some(assignee) = &effect.assignee {
                put_field(tx, "assignee", assignee)?;
            }
            if let Some(area) = &effect.responsible {
                tx.put(ROOT, doc::RESPONSIBLE, area.as_str())?;
            }
            append_timeline(tx, &user, action.name(), Some(&from), Some(&to), comment)
        })?;
        Ok(next)
    }

    /// Open events whose due time has passed, in the user's scope, most overdue first.
    pub fn overdue_events(&self, limit: u32) -> Result<Vec<RecordSummary>> {
        let now = time::now_iso();
        self.event_list(
            "p.due IS NOT NULL AND p.due < ?1 AND p.status NOT IN ('verified', 'closed')",
            &now,
            "p.due",
            limit,
        )
    }

    /// Open events assigned to this device's user.
    pub fn assigned_to_me(&self, limit: u32) -> Result<Vec<RecordSummary>> {
        let me = self.identity().user_id;
        self.event_list(
            "p.assignee = ?1 AND p.status NOT IN ('verified', 'closed')",
            &me,
            "p.due IS NULL, p.due",
            limit,
        )
    }

    fn event_list(
        &self,
        condition: &str,
        arg: &str,
        order: &str,
        limit: u32,
    ) -> Result<Vec<RecordSummary>> {
        let inner = self.lock();
        let rids: Vec<i64> = {
            let sql = format!(
                "SELECT r.rid, r.area, r.responsible FROM records r JOIN p_event p ON p.rid = r.rid
                 WHERE r.deleted = 0 AND {condition} ORDER BY {order}, r.rid"
            );
            let mut stmt = inner.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([arg], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            let in_scope = inner.scope();
            let mut out = Vec::new();
            for row in rows {
                let (rid, area, responsible) = row?;
                let visible = in_scope(&area) || responsible.is_some_and(|r| in_scope(&r));
                if visible {
                    out.push(rid);
                }
                if out.len() >= limit as usize {
                    break;
                }
            }
            out
        };
        summaries(&inner, &rids)
    }
}
