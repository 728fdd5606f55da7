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
    let at = query.at.unwrap_or_else(time::now_secs);
    let root = match &query.area {
        Some(a) => areas.get(a).map(|p| p.path.clone()),
        None => Some(String::new()),
    };
    let path_of = |area: &str| areas.get(area).map(|p| p.path.as_str());
    let within = |r: &Record| -> bool {
        let Some(root) = &root else {
            return false;
        };
        // An event counts where it is now handled as well as where it happened.
        [Some(r.area.as_str()), r.responsible.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(path_of)
            .any(|p| p.starts_with(root.as_str()))
    };
    let (from, until) = (
        query.from.map(time::iso_from_secs),
        query.until.map(time::iso_from_secs),
    );
    let in_period = |t: Option<&str>| -> bool {
        let Some(t) = t else {
            return false;
        };
        from.as_deref().is_none_or(|f| t >= f) && until.as_deref().is_none_or(|u| t < u)
    };
    let mut stats = Stats {
        query: query.clone(),
        records_per_kind: BTreeMap::new(),
        visits_per_worker: BTreeMap::new(),
        events_by_category: BTreeMap::new(),
        escalations_per_level: BTreeMap::new(),
        median_close_secs: None,
        coverage: Vec::new(),
        duplicates_open: 0,
    };
    let mut close_times = Vec::new();
    // Each record's last finished visit (end time), by the visits that included it, up to `at`.
    let at_iso = time::iso_from_secs(at);
    let mut last_visit: HashMap<&str, &str> = HashMap::new();
    let merged: HashMap<&str, &str> = records
        .iter()
        .flat_map(|kept| crate::duplicates::absorbed(kept).map(|away| (away, kept.id.as_str())))
        .collect();
    for r in records
        .iter()
        .filter(|r| !r.deleted && r.kind == Kind::Visit)
    {
        let Some(ended) = r.field("ended_at").filter(|e| *e <= at_iso.as_str()) else {
            continue;
        };
        for v in &r.visited {
            // A visit of a record merged into another counts for the kept one.
            let v = merged.get(v.as_str()).copied().unwrap_or(v.as_str());
            let e = last_visit.entry(v).or_insert(ended);
            if ended > *e {
                *e = ended;
            }
        }
    }
    for r in records.iter().filter(|r| !r.deleted && within(r)) {
        *stats
            .records_per_kind
            .entry(r.kind.as_str().to_owned())
            .or_default() += 1;
        match r.kind {
            Kind::Visit if r.field("ended_at").is_some() && in_period(r.field("started_at")) => {
                let worker = r.field("worker").unwrap_or("-").to_owned();
                *stats.visits_per_worker.entry(worker).or_default() += 1;
            }
            Kind::Event => {
                for t in r.timeline.iter().filter(|t| t.action == "escalate") {
                    if in_period(Some(&t.at)) {
                        let level =
                            t.to.as_deref()
                                .and_then(|a| areas.get(a))
                                .map_or("unknown", |p| p.level.as_str());
                        *stats
                            .escalations_per_level
                            .entry(level.to_owned())
                            .or_default() += 1;
                    }
                }
                if !in_period(r.field("reported_at")) {
                    continue;
                }
                let category = r.field("category").unwrap_or("uncategorised").to_owned();
                let counts = stats.events_by_category.entry(category).or_default();
                counts.reported += 1;
                let status = r.field("status").unwrap_or("reported");
                if status == "closed" {
                    counts.closed += 1;
                    let closed = r.timeline.iter().rev().find(|t| t.action == "close");
                    if let (Some(rep), Some(c)) = (
                        r.field("reported_at").and_then(time::parse_iso),
                        closed.and_then(|t| time::parse_iso(&t.at)),
                    ) {
                        close_times.push(c - rep);
                    }
                } else if status != "verified" {
                    counts.open += 1;
                    if r.field("due")
                        .and_then(time::parse_iso)
                        .is_some_and(|d| d < at)
                    {
                        counts.overdue += 1;
                    }
                }
            }
            _ => {}
        }
    }
    close_times.sort_unstable();
    stats.median_close_secs = match close_times.len() {
        0 => None,
        n if n % 2 == 1 => Some(close_times[n / 2]),
        n => Some((close_times[n / 2 - 1] + close_times[n / 2]) / 2),
    };
    let mut sorted: Vec<&Schedule> = schedules.iter().filter(|s| s.kind != Kind::Event).collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for s in sorted {
        let Some(covered) = path_of(&s.area) else {
            continue;
        };
        let (mut n, mut ok) = (0u64, 0u64);
        for r in records.iter().filter(|r| {
            !r.deleted
                && r.kind == s.kind
                && within(r)
                && path_of(&r.area).is_some_and(|p| p.starts_with(covered))
                && s.tag.as_ref().is_none_or(|t| r.tags.contains(t))
        }) {
            n += 1;
            let fresh = last_visit
                .get(r.id.as_str())
                .and_then(|t| time::parse_iso(t))
                .is_some_and(|t| s.every.after(t) > at);
            if fresh {
                ok += 1;
            }
        }
        stats.coverage.push(ScheduleCoverage {
            schedule_id: s.id.clone(),
            name: s.name.clone(),
            records: n,
            up_to_date: ok,
            share: if n == 0 { 1.0 } else { ok as f64 / n as f64 },
        });
    }
    stats.duplicates_open =
        crate::duplicates::candidates(records.iter().filter(|r| within(r))).len() as u64;
    stats
}
