//! Follow-ups: the schedules the relay sent (an operator defines them per area; each covers its area's
//! subtree) applied to this device's records and visits. A record a schedule covers is due a visit
//! one interval after the last finished visit that included it, by the visit's end time (whenever it
//! was synced); a record never visited is due now. A closed event a re-check schedule covers is due
//! one visit an interval after it was closed, until a visit that includes it ends after the close.
//! Changing a schedule or a record's tags moves what is due at once: nothing is stored but the
//! schedules.
use super::forms::{load_definitions, replace_definitions};
use super::{meta, Store};
use crate::error::{Error, Result};
use crate::model::{time, DueState, Kind, Schedule};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `schedules_version` of the schedules last taken from the relay.
const META_SCHEDULES_VERSION: &str = "schedules_version";

/// Which follow-ups to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowupQuery {
    /// Only records in this area's subtree (a grid, a community), else the whole scope.
    pub area: Option<String>,
    /// Only these states (all when empty).
    pub states: Vec<DueState>,
    /// The moment to judge at (seconds since the epoch), else now.
    pub now: Option<i64>,
    /// The caller's offset from UTC in minutes (480 in China): "today" is the caller's calendar day.
    pub utc_offset_minutes: i32,
    /// Only records in the areas of this worker (a user id): a supervisor's list per worker.
    pub worker: Option<String>,
}

/// One record due a visit under one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Followup {
    pub schedule_id: String,
    pub schedule_name: String,
    pub record_id: String,
    pub kind: Kind,
    /// The record's title (a person's name, a place's address, ...).
    pub title: String,
    /// The record's area (its grid).
    pub area: String,
    /// End of the last finished visit that included the record (ISO-8601 UTC).
    pub last_visit: Option<String>,
    /// When the next visit is due (ISO-8601 UTC); `None`: never visited, due now.
    pub due_at: Option<String>,
    pub state: DueState,
    /// The workers of the record's area (as the relay told), whose follow-up it is.
    pub workers: Vec<String>,
}

impl Store {
    /// The follow-up schedules this device has from the relay, by id.
    pub fn schedules(&self) -> Result<Vec<Schedule>> {
        load_definitions(
            &self.lock().conn,
            "SELECT definition FROM schedules ORDER BY id",
            "schedule",
        )
    }

    /// `schedules_version` of the schedules last taken from the relay.
    pub(crate) fn schedules_version(&self) -> Result<Option<String>> {
        meta(&self.lock().conn, META_SCHEDULES_VERSION)
    }

    /// Replaces the schedules with the relay's (`version` is their `schedules_version`), in one
    /// transaction. Each is checked as the relay checks it; one that is not well-formed is dropped.
    pub(crate) fn adopt_schedules(&self, schedules: &[Schedule], version: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.check_writable()?;
        let mut rows = Vec::new();
        for s in schedules {
            if let Err(why) = s.check() {
                tracing::warn!(schedule = %s.id, %why, "a schedule from the relay is not well-formed: left out");
                continue;
            }
            let def = serde_json::to_string(s).map_err(|e| Error::InvalidInput(e.to_string()))?;
            rows.push((s.id.as_str(), def));
        }
        let tx = inner.conn.transaction()?;
        replace_definitions(&tx, "schedules", &rows, META_SCHEDULES_VERSION, version)?;
        tx.commit()?;
        Ok(())
    }

    /// What is due under the schedules, for the records of this device's scope: overdue first, then by
    /// due time. A record under several schedules is listed once per schedule.
    pub fn followups(&self, query: &FollowupQuery) -> Result<Vec<Followup>> {
        let schedules = self.schedules()?;
        let now = query.now.unwrap_or_else(time::now_secs);
        // Candidates (schedule, record, area, title, last visit) under the lock; closed events' times
        // are read after it, from the events themselves.
        let mut candidates = Vec::new();
        {
            let inner = self.lock();
            let path_of = |area: &str| inner.area_paths.get(area).cloned();
            let within = match &query.area {
                Some(a) => Some(path_of(a).ok_or_else(|| Error::UnknownArea(a.clone()))?),
                None => None,
            };
            let in_scope = inner.scope();
            for (i, s) in schedules.iter().enumerate() {
                let Some(covered) = path_of(&s.area) else {
                    continue;
                };
                let kind = s.kind;
                // Events: closed ones (of the category) only.
                let event = if kind == Kind::Event {
                    "AND p.status = 'closed' AND (?3 IS NULL OR p.category = ?3)"
                } else {
                    "AND ?3 IS NULL"
                };
                let sql = format!(
                    "SELECT r.id, r.area, COALESCE(p.{title}, ''),
                            (SELECT max(pv.ended_at) FROM visited v
                               JOIN p_visit pv ON pv.rid = v.visit
                               JOIN records vr ON vr.rid = v.visit
                              WHERE (v.record = r.id
                                     -- Visits of records merged into this one count for it.
                                     OR v.record IN (SELECT d.key FROM json_each(r.view, '$.dups') d
                                                     WHERE d.value = 'merged'))
                                AND pv.ended_at IS NOT NULL AND vr.deleted = 0)
                     FROM records r LEFT JOIN {table} p ON p.rid = r.rid
                     WHERE r.kind = ?1 AND r.deleted = 0 {event}
                       AND (?2 IS NULL OR EXISTS (SELECT 1 FROM tags t WHERE t.rid = r.rid AND t.tag = ?2))",
                    title = kind.title_field(),
                    table = kind.table(),
                );
                let mut stmt = inner.conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![kind.as_str(), s.tag, s.category], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?;
                for row in rows {
                    let (record_id, area, title, last_visit) = row?;
                    let Some(path) = path_of(&area) else {
                        continue;
                    };
                    if path.starts_with(&covered)
                        && within.as_ref().is_none_or(|w| path.starts_with(w))
                        && in_scope(&area)
                    {
                        candidates.push((i, record_id, area, title, last_visit));
                    }
                }
            }
        }
        // Each area's workers, for per-worker lists.
        let workers: HashMap<String, Vec<String>> = {
            let inner = self.lock();
            let mut st = inner
                .conn
                .prepare_cached("SELECT area, user FROM area_workers ORDER BY area, user")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut map: HashMap<String, Vec<String>> = HashMap::new();
            for row in rows {
                let (area, user) = row?;
                map.entry(area).or_default().push(user);
            }
            map
        };
        let mut out = Vec::new();
        for (i, record_id, area, title, last_visit) in candidates {
            let s = &schedules[i];
            let area_workers = workers.get(&area).cloned().unwrap_or_default();
            if query
                .worker
                .as_ref()
                .is_some_and(|w| !area_workers.contains(w))
            {
                continue;
            }
            let last = last_visit.as_deref().and_then(time::parse_iso);
            let due = if s.kind == Kind::Event {
                // One re-check after closing: due `every` after the (last) close, done by a visit
                // that ended after it.
                let record = self.get(&record_id)?;
                let Some(closed) = record
                    .timeline
                    .iter()
                    .rev()
                    .find(|t| t.action == "close")
                    .and_then(|t| time::parse_iso(&t.at))
                else {
                    continue;
                };
                if last.is_some_and(|v| v >= closed) {
                    continue;
                }
                Some(s.every.after(closed))
            } else {
                last.map(|t| s.every.after(t))
            };
            let state = match due {
                Some(due) => DueState::of(due, now, query.utc_offset_minutes),
                None => DueState::Overdue,
            };
            if !query.states.is_empty() && !query.states.contains(&state) {
                continue;
            }
            out.push(Followup {
                schedule_id: s.id.clone(),
                schedule_name: s.name.clone(),
                record_id,
                kind: s.kind,
                title,
                area,
                last_visit,
                due_at: due.map(time::iso_from_secs),
                state,
                workers: area_workers,
            });
        }
        // Overdue first; never visited before the rest of its state; then by due time and title.
        out.sort_by(|a, b| {
            (
                a.state,
                a.due_at.is_some(),
                &a.due_at,
                &a.title,
                &a.record_id,
            )
                .cmp(&(
                    b.state,
                    b.due_at.is_some(),
                    &b.due_at,
                    &b.title,
                    &b.record_id,
                ))
        });
        Ok(out)
    }
}
