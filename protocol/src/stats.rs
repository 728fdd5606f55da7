//! Statistics of an area and period, computed by one function from record views, so a device and the
//! relay give the same numbers for the same data (the device from its store, the relay from the views
//! it keeps of every record in the caller's scope).
use crate::model::{time, Kind, Record, Schedule};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What to count: an area's subtree (else everything given), a period `[from, until)` (seconds since
/// the epoch) for visits (by start) and events (by report) and escalations (by time), and the moment
/// `at` that "open", "overdue" and "up to date" are judged at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    pub area: Option<String>,
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub at: Option<i64>,
}

/// Events of one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Reported in the period.
    pub reported: u64,
    /// Of those: still open at `at` (neither verified nor closed).
    pub open: u64,
    /// Of the open ones: past their due time at `at`.
    pub overdue: u64,
    /// Of those reported: closed.
    pub closed: u64,
}

/// How well one follow-up schedule is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleCoverage {
    pub schedule_id: String,
    pub name: String,
    /// Records the schedule covers.
    pub records: u64,
    /// Of those, visited within the schedule's interval before `at`.
    pub up_to_date: u64,
    /// `up_to_date / records` (1 when it covers none).
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub query: StatsQuery,
    /// Records (not deleted) of each kind.
    pub records_per_kind: BTreeMap<String, u64>,
    /// Finished visits started in the period, per worker.
    pub visits_per_worker: BTreeMap<String, u64>,
    /// Events reported in the period, per category.
    pub events_by_category: BTreeMap<String, EventCounts>,
    /// Escalations in the period, per level of the area escalated to.
    pub escalations_per_level: BTreeMap<String, u64>,
    /// Median time from report to close of the events reported in the period and closed (seconds).
    pub median_close_secs: Option<i64>,
    /// Follow-up schedules of records (not event re-checks), by id.
    pub coverage: Vec<ScheduleCoverage>,
    /// Duplicate candidates not yet merged or dismissed, both records in the area.
    #[serde(default)]
    pub duplicates_open: u64,
}

/// An area as statistics need it: its path and level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaPlace {
    pub path: String,
    pub level: String,
}

/// The statistics of `query` over `records` (the caller's scope), with the area tree the caller sees
/// (`areas`: id -> path and level) and the schedules it has. Records in areas not in the tree are
/// left out.
pub fn compute(
    records: &[Record],
    areas: &HashMap<String, AreaPlace>,
    schedules: &[Schedule],
    query: &StatsQuery,
) -> Stats {
    let mut counting = Counting::new(areas.clone(), schedules.to_vec(), query);
    for r in records {
        counting.add(r);
    }
    counting.finish()
}

/// [`compute`] over records given one at a time, keeping of each only what the totals need (its id
/// where a schedule covers it, a visit's records, a candidate's match keys): a device counts 100,000
/// records without holding them (BENCHMARKS.md section 12).
pub struct Counting {
    areas: HashMap<String, AreaPlace>,
    /// The schedules of records (not event re-checks), by id.
    schedules: Vec<Covering>,
    at: i64,
    at_iso: String,
    root: Option<String>,
    from: Option<String>,
    until: Option<String>,
    stats: Stats,
    close_times: Vec<i64>,
    /// Each record's last finished visit up to `at` (end time), by the id the visits name it by.
    last_visit: HashMap<String, String>,
    /// Merged-away record -> the record that absorbed it, as the records came.
    merged: HashMap<String, String>,
    candidates: crate::duplicates::Candidates,
}

/// A schedule as [`Counting`] keeps it: with the path of the area it covers (none: an area not in the
/// tree, and no coverage is given) and the ids of the records it covers.
struct Covering {
    schedule: Schedule,
    path: Option<String>,
    records: Vec<String>,
}

impl Counting {
    pub fn new(
        areas: HashMap<String, AreaPlace>,
        schedules: Vec<Schedule>,
        query: &StatsQuery,
    ) -> Counting {
        let at = query.at.unwrap_or_else(time::now_secs);
        let root = match &query.area {
            Some(a) => areas.get(a).map(|p| p.path.clone()),
            None => Some(String::new()),
        };
        let mut sorted: Vec<Schedule> = schedules
            .into_iter()
            .filter(|s| s.kind != Kind::Event)
            .collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let schedules: Vec<Covering> = sorted
            .into_iter()
            .map(|schedule| Covering {
                path: areas.get(&schedule.area).map(|p| p.path.clone()),
                schedule,
                records: Vec::new(),
            })
            .collect();
        Counting {
            areas,
            schedules,
            at,
            at_iso: time::iso_from_secs(at),
            root,
            from: query.from.map(time::iso_from_secs),
            until: query.until.map(time::iso_from_secs),
            stats: Stats {
                query: query.clone(),
                records_per_kind: BTreeMap::new(),
                visits_per_worker: BTreeMap::new(),
                events_by_category: BTreeMap::new(),
                escalations_per_level: BTreeMap::new(),
                median_close_secs: None,
                coverage: Vec::new(),
                duplicates_open: 0,
            },
            close_times: Vec::new(),
            last_visit: HashMap::new(),
            merged: HashMap::new(),
            candidates: crate::duplicates::Candidates::new(),
        }
    }

    fn path_of(&self, area: &str) -> Option<&str> {
        self.areas.get(area).map(|p| p.path.as_str())
    }

    /// Whether a record counts in the area: an event counts where it is now handled as well as where
    /// it happened.
    fn within(&self, r: &Record) -> bool {
        let Some(root) = &self.root else {
            return false;
        };
        [Some(r.area.as_str()), r.responsible.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(|a| self.path_of(a))
            .any(|p| p.starts_with(root.as_str()))
    }

    fn in_period(&self, t: Option<&str>) -> bool {
        let Some(t) = t else {
            return false;
        };
        self.from.as_deref().is_none_or(|f| t >= f) && self.until.as_deref().is_none_or(|u| t < u)
    }

    /// Counts one record (each record once).
    pub fn add(&mut self, r: &Record) {
        for away in crate::duplicates::absorbed(r) {
            self.merged.insert(away.to_owned(), r.id.clone());
        }
        if r.deleted {
            return;
        }
        if r.kind == Kind::Visit {
            if let Some(ended) = r.field("ended_at").filter(|e| *e <= self.at_iso.as_str()) {
                for v in &r.visited {
                    match self.last_visit.get_mut(v) {
                        Some(e) if ended > e.as_str() => *e = ended.to_owned(),
                        Some(_) => {}
                        None => {
                            self.last_visit.insert(v.clone(), ended.to_owned());
                        }
                    }
                }
            }
        }
        if !self.within(r) {
            return;
        }
        *self
            .stats
            .records_per_kind
            .entry(r.kind.as_str().to_owned())
            .or_default() += 1;
        match r.kind {
            Kind::Visit
                if r.field("ended_at").is_some() && self.in_period(r.field("started_at")) =>
            {
                let worker = r.field("worker").unwrap_or("-").to_owned();
                *self.stats.visits_per_worker.entry(worker).or_default() += 1;
            }
            Kind::Event => self.add_event(r),
            _ => {}
        }
        let path = self.areas.get(&r.area).map(|p| p.path.as_str());
        for c in &mut self.schedules {
            let s = &c.schedule;
            if r.kind == s.kind
                && c.path
                    .as_deref()
                    .is_some_and(|covered| path.is_some_and(|p| p.starts_with(covered)))
                && s.tag.as_ref().is_none_or(|t| r.tags.contains(t))
            {
                c.records.push(r.id.clone());
            }
        }
        self.candidates.add(r);
    }

    fn add_event(&mut self, r: &Record) {
        for t in r.timeline.iter().filter(|t| t.action == "escalate") {
            if self.in_period(Some(&t.at)) {
                let level =
                    t.to.as_deref()
                        .and_then(|a| self.areas.get(a))
                        .map_or("unknown", |p| p.level.as_str());
                *self
                    .stats
                    .escalations_per_level
                    .entry(level.to_owned())
                    .or_default() += 1;
            }
        }
        if !self.in_period(r.field("reported_at")) {
            return;
        }
        let category = r.field("category").unwrap_or("uncategorised").to_owned();
        let counts = self.stats.events_by_category.entry(category).or_default();
        counts.reported += 1;
        let status = r.field("status").unwrap_or("reported");
        if status == "closed" {
            counts.closed += 1;
            let closed = r.timeline.iter().rev().find(|t| t.action == "close");
            if let (Some(rep), Some(c)) = (
                r.field("reported_at").and_then(time::parse_iso),
                closed.and_then(|t| time::parse_iso(&t.at)),
            ) {
                self.close_times.push(c - rep);
            }
        } else if status != "verified" {
            counts.open += 1;
            if r.field("due")
                .and_then(time::parse_iso)
                .is_some_and(|d| d < self.at)
            {
                counts.overdue += 1;
            }
        }
    }

    pub fn finish(mut self) -> Stats {
        let mut stats = self.stats;
        self.close_times.sort_unstable();
        let close_times = &self.close_times;
        stats.median_close_secs = match close_times.len() {
            0 => None,
            n if n % 2 == 1 => Some(close_times[n / 2]),
            n => Some((close_times[n / 2 - 1] + close_times[n / 2]) / 2),
        };
        // A visit of a record merged into another counts for the kept one.
        let mut last_visit: HashMap<&str, &str> = HashMap::new();
        for (v, ended) in &self.last_visit {
            let v = self.merged.get(v).map_or(v.as_str(), String::as_str);
            let e = last_visit.entry(v).or_insert(ended);
            if ended.as_str() > *e {
                *e = ended;
            }
        }
        for c in &self.schedules {
            if c.path.is_none() {
                continue;
            }
            let s = &c.schedule;
            let n = c.records.len() as u64;
            let ok = c
                .records
                .iter()
                .filter(|id| {
                    last_visit
                        .get(id.as_str())
                        .and_then(|t| time::parse_iso(t))
                        .is_some_and(|t| s.every.after(t) > self.at)
                })
                .count() as u64;
            stats.coverage.push(ScheduleCoverage {
                schedule_id: s.id.clone(),
                name: s.name.clone(),
                records: n,
                up_to_date: ok,
                share: if n == 0 { 1.0 } else { ok as f64 / n as f64 },
            });
        }
        stats.duplicates_open = self.candidates.pairs().len() as u64;
        stats
    }
}
