//! Event lifecycle transitions, escalation, and the "overdue" and "assigned to me" lists.
//!
//! Who may act: anyone whose scope covers the event's *responsible* area (not its home area: an event
//! escalated to the street is the street's to handle). Beyond that, assigning someone else, verifying,
//! returning, closing, reopening and handing down are a supervisor's; starting and resolving are the
//! assignee's (or a supervisor's). Two offline transitions that disagree both stay in the timeline, and
//! the status field shows as a conflict until someone resolves it.
use super::records::{append_timeline, put_field, summaries, RecordSummary};
use super::Store;
use crate::doc;
use crate::error::{Error, Result};
use crate::model::{time, EventAction, EventStatus, Kind, Role};
use automerge::transaction::Transactable;
use automerge::ROOT;

impl Store {
    /// Moves an event through its lifecycle. `comment` goes on the timeline (required to return).
    pub fn transition(
        &self,
        event_id: &str,
        action: EventAction,
        comment: Option<&str>,
    ) -> Result<EventStatus> {
        if let Some(c) = comment {
            if c.len() > 4096 || c.chars().any(|ch| ch.is_control() && ch != '\n') {
                return Err(Error::field(
                    "comment",
                    "must be at most 4096 bytes without control characters",
                ));
            }
        }
        let me = self.identity.clone();
        let mut inner = self.lock();
        let record = inner.editable(&me, event_id, Some(Kind::Event))?;
        let responsible = record
            .responsible
            .clone()
            .unwrap_or_else(|| record.area.clone());
        if !inner.in_scope(&me, &responsible) {
            return Err(Error::OutOfScope(responsible));
        }
        let status = record
            .field("status")
            .and_then(EventStatus::parse)
            .ok_or_else(|| Error::Corrupt(format!("event {event_id} has no valid status")))?;
        let next = action
            .next_status(status)
            .ok_or_else(|| Error::InvalidTransition {
                action: action.name().into(),
                from: status.as_str().into(),
            })?;
        let supervisor = matches!(me.role, Role::Supervisor | Role::Operator);
        let assignee = record.field("assignee").unwrap_or_default();
        let forbid = |what: &str| {
            Err(Error::Forbidden(format!(
                "{what} needs a supervisor of the responsible area"
            )))
        };
        let mut new_responsible: Option<String> = None;
        match &action {
            EventAction::Assign { assignee: to } => {
                if to.trim().is_empty() || to.len() > 128 {
                    return Err(Error::field("assignee", "must be a user id"));
                }
                if !supervisor && to != &me.user_id {
                    return forbid("assigning someone else");
                }
            }
            EventAction::Start | EventAction::Resolve => {
                if !supervisor && assignee != me.user_id {
                    return Err(Error::Forbidden(
                        "only the assignee or a supervisor can do that".into(),
                    ));
                }
            }
            EventAction::Verify | EventAction::Close | EventAction::Reopen => {
                if !supervisor {
                    return forbid(action.name());
                }
            }
            EventAction::Return => {
                if !supervisor {
                    return forbid("returning");
                }
                if comment.is_none_or(|c| c.trim().is_empty()) {
                    return Err(Error::field("comment", "required when returning an event"));
                }
            }
            EventAction::Escalate => {
                let area = inner
                    .area_path(&responsible)
                    .ok_or_else(|| Error::UnknownArea(responsible.clone()))?
                    .to_owned();
                let parent: Option<String> = inner.conn.query_row(
                    "SELECT parent FROM areas WHERE path = ?1",
                    [&area],
                    |r| r.get(0),
                )?;
                new_responsible = Some(parent.ok_or_else(|| {
                    Error::InvalidInput("the top of the area tree cannot escalate".into())
                })?);
            }
            EventAction::HandDown { area } => {
                if !supervisor {
                    return forbid("handing down");
                }
                let from = inner
                    .area_path(&responsible)
                    .ok_or_else(|| Error::UnknownArea(responsible.clone()))?;
                let to = inner
                    .area_path(area)
                    .ok_or_else(|| Error::UnknownArea(area.clone()))?;
                let home = inner.area_path(&record.area).unwrap_or_default();
                // Down means strictly below the responsible area, and on the way to the event's home.
                if !(to.starts_with(from) && to != from && home.starts_with(to)) {
                    return Err(Error::InvalidInput(
                        "hand down to an area below the responsible one that contains the event's home".into(),
                    ));
                }
                new_responsible = Some(area.clone());
            }
            EventAction::Comment => {
                if comment.is_none_or(|c| c.trim().is_empty()) {
                    return Err(Error::field("comment", "required"));
                }
            }
        }
        let mut touched = vec!["status".to_owned()];
        if new_responsible.is_some() {
            touched.push(doc::RESPONSIBLE.into());
        }
        let note = self.note(action.name(), touched);
        inner.write(event_id, note, |tx| {
            if next != status {
                put_field(tx, "status", next.as_str())?;
            }
            match &action {
                EventAction::Assign { assignee } => put_field(tx, "assignee", assignee)?,
                EventAction::Escalate | EventAction::HandDown { .. } => {
                    put_field(tx, "assignee", "")?
                }
                _ => {}
            }
            let (from, to) = match &new_responsible {
                Some(area) => {
                    tx.put(ROOT, doc::RESPONSIBLE, area.as_str())?;
                    (Some(responsible.as_str()), Some(area.as_str()))
                }
                None => match &action {
                    EventAction::Assign { assignee } => {
                        (Some(status.as_str()), Some(assignee.as_str()))
                    }
                    _ => (Some(status.as_str()), Some(next.as_str())),
                },
            };
            append_timeline(tx, &me.user_id, action.name(), from, to, comment)
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
        let me = self.identity.user_id.clone();
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
            let mut out = Vec::new();
            for row in rows {
                let (rid, area, responsible) = row?;
                let visible = inner.in_scope(&self.identity, &area)
                    || responsible.is_some_and(|r| inner.in_scope(&self.identity, &r));
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
