//! "New for me": what reached this user that they have not looked at yet: events assigned to them,
//! events handed down to their area, their visits returned with a comment, follow-ups that became
//! due, duplicate candidates this user may merge. An item is new until the user marks the list seen; it is named by the timeline entry (or due
//! date) that made it, so a later edit of the same record for another reason does not bring it back,
//! and nothing depends on device clocks agreeing.
use super::followups::FollowupQuery;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{DueState, Kind, Record, TimelineEntry};
use serde::{Deserialize, Serialize};

/// Why an item is in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewForMeKind {
    /// An open event assigned to me by someone else.
    Assigned,
    /// An open event handed down to my area.
    HandedDown,
    /// A visit of mine a supervisor returned.
    VisitReturned,
    /// A follow-up that is due today or overdue.
    FollowupDue,
    /// Two records this user may merge that may be one (`record_id` is one, `comment` names the
    /// other and why).
    DuplicateFound,
}

/// One item of the "new for me" list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewForMe {
    pub what: NewForMeKind,
    pub record_id: String,
    pub kind: Kind,
    pub title: String,
    /// When it happened (the timeline entry's time, or the follow-up's due time; ISO-8601 UTC).
    pub at: Option<String>,
    /// Who did it (none for follow-ups).
    pub by: Option<String>,
    /// The comment that came with it (a returned visit's, a hand-down's).
    pub comment: Option<String>,
    /// What names this item for [`Store::mark_new_for_me_seen`].
    pub key: String,
}

impl Store {
    /// What reached this user and is not marked seen, newest first; follow-ups are judged on the
    /// caller's calendar day (`utc_offset_minutes`, 480 in China) at `now` (else now).
    pub fn new_for_me(&self, now: Option<i64>, utc_offset_minutes: i32) -> Result<Vec<NewForMe>> {
        let me = self.identity();
        let (assigned, handed_down, returned, seen) = {
            let inner = self.lock();
            let ids = |sql: &str, arg: &str| -> Result<Vec<String>> {
                let mut st = inner.conn.prepare_cached(sql)?;
                let rows = st.query_map([arg], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            };
            let open = "r.deleted = 0 AND p.status NOT IN ('verified', 'closed')";
            let assigned = ids(
                &format!("SELECT r.id FROM records r JOIN p_event p ON p.rid = r.rid WHERE {open} AND p.assignee = ?1"),
                &me.user_id,
            )?;
            let handed_down = ids(
                &format!(
                    "SELECT r.id FROM records r JOIN p_event p ON p.rid = r.rid
                     WHERE {open} AND COALESCE(r.responsible, r.area) = ?1"
                ),
                &me.area,
            )?;
            let returned = ids(
                "SELECT r.id FROM records r JOIN p_visit p ON p.rid = r.rid
                 WHERE r.deleted = 0 AND p.worker = ?1 AND p.review_state = 'returned'",
                &me.user_id,
            )?;
            let seen: std::collections::HashSet<String> = {
                let mut st = inner.conn.prepare_cached("SELECT key FROM seen_items")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            (assigned, handed_down, returned, seen)
        };
        let mut out = Vec::new();
        let mut push = |what: NewForMeKind, record: &Record, entry: &TimelineEntry| {
            let title = record
                .fields
                .get(record.kind.title_field())
                .cloned()
                .unwrap_or_default();
            out.push(NewForMe {
                what,
                record_id: record.id.clone(),
                kind: record.kind,
                title,
                at: Some(entry.at.clone()),
                by: Some(entry.by.clone()),
                comment: entry.comment.clone(),
                key: format!("{what:?}:{}:{}", record.id, entry.at),
            });
        };
        // The latest entry of an action, if it says what makes the item (and was not my own doing).
        let latest = |r: &Record, action: &str| -> Option<TimelineEntry> {
            r.timeline
                .iter()
                .rev()
                .find(|t| t.action == action)
                .cloned()
        };
        for id in &assigned {
            let r = self.get(id)?;
            if let Some(t) = latest(&r, "assign")
                .filter(|t| t.to.as_deref() == Some(me.user_id.as_str()) && t.by != me.user_id)
            {
                push(NewForMeKind::Assigned, &r, &t);
            }
        }
        for id in &handed_down {
            let r = self.get(id)?;
            if let Some(t) = latest(&r, "hand_down")
                .filter(|t| t.to.as_deref() == Some(me.area.as_str()) && t.by != me.user_id)
            {
                push(NewForMeKind::HandedDown, &r, &t);
            }
        }
        for id in &returned {
            let r = self.get(id)?;
            if let Some(t) = latest(&r, "review").filter(|t| t.to.as_deref() == Some("returned")) {
                push(NewForMeKind::VisitReturned, &r, &t);
            }
        }
        let due = self.followups(&FollowupQuery {
            states: vec![DueState::Overdue, DueState::Today],
            now,
            utc_offset_minutes,
            ..Default::default()
        })?;
        for f in due {
            let at = f.due_at.clone();
            out.push(NewForMe {
                what: NewForMeKind::FollowupDue,
                key: format!(
                    "FollowupDue:{}:{}:{}",
                    f.record_id,
                    f.schedule_id,
                    at.as_deref().unwrap_or("never-visited")
                ),
                record_id: f.record_id,
                kind: f.kind,
                title: f.title,
                at,
                by: None,
                comment: Some(f.schedule_name),
            });
        }
        // Duplicate candidates, for those who decide them (a supervisor, the grid's own worker).
        let actor = self.lock().rule_actor();
        let may_merge = |r: &super::RecordSummary| -> bool {
            let inner = self.lock();
            let view = crate::model::Record {
                responsible: r.responsible.clone(),
                ..crate::model::Record::empty(r.id.clone(), r.kind, r.area.clone())
            };
            gridwork_protocol::rules::may_merge(&actor, &inner.area_paths, &view).is_ok()
        };
        for pair in self.duplicates(None)? {
            if !(may_merge(&pair.a) && may_merge(&pair.b)) {
                continue;
            }
            let why: Vec<&str> = pair.reasons.iter().map(|r| r.as_str()).collect();
            out.push(NewForMe {
                what: NewForMeKind::DuplicateFound,
                key: format!("DuplicateFound:{}:{}", pair.a.id, pair.b.id),
                record_id: pair.a.id.clone(),
                kind: pair.kind,
                title: pair.a.title.clone(),
                at: None,
                by: None,
                comment: Some(format!(
                    "{} ({}): {}",
                    pair.b.title,
                    pair.b.id,
                    why.join(", ")
                )),
            });
        }
        out.retain(|i| !seen.contains(&i.key));
        out.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Marks the items of `keys` (from [`Store::new_for_me`]) seen: they do not come back. Marks of
    /// records no longer on the device are dropped.
    pub fn mark_new_for_me_seen(&self, keys: &[String]) -> Result<()> {
        let mut inner = self.lock();
        inner.check_writable()?;
        let tx = inner.conn.transaction()?;
        for key in keys {
            // `<what>:<record id>:...`
            let Some(record) = key.split(':').nth(1).filter(|r| !r.is_empty()) else {
                return Err(Error::InvalidInput(format!("not an item key: {key}")));
            };
            tx.execute(
                "INSERT OR IGNORE INTO seen_items (key, record) VALUES (?1, ?2)",
                [key.as_str(), record],
            )?;
        }
        tx.execute(
            "DELETE FROM seen_items WHERE record NOT IN (SELECT id FROM records WHERE deleted = 0)",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }
}
