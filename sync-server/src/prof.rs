//! Optional timing spans of the push path, enabled by `GRIDWORK_PROFILE=1` (or [`enable`]): where
//! the time of a change goes (HTTP decoding, database lookups, Automerge, inserts, commit).
//! Spans on the single writer add up to its busy time; [`report`] prints them per change.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub enum Span {
    /// Request task: JSON parse, base64 and Automerge change decoding (hash check) of a push.
    HttpDecode,
    /// Writer: areas version, dedup-by-hash and record-version lookups.
    Lookup,
    /// Writer: loading record rows that are not cached.
    LoadRows,
    /// Writer: engine planning (Automerge apply, area extraction, scope checks).
    Engine,
    /// Writer: INSERT into the log.
    InsertChanges,
    /// Writer: INSERT into the log's scope index (entry_runs).
    InsertKeys,
    /// Writer: record upserts and their scope index.
    UpsertRecords,
    /// Writer: COMMIT (fsync).
    Commit,
}

const N: usize = 8;
const NAMES: [&str; N] = [
    "http decode (base64 + change parse, hash)",
    "writer: dedup + version lookups",
    "writer: load uncached record rows",
    "writer: engine (automerge apply, areas, scope)",
    "writer: insert log entries",
    "writer: insert scope index rows",
    "writer: upsert records + record scope",
    "writer: commit (fsync)",
];

static ENABLED: AtomicBool = AtomicBool::new(false);
static INIT: std::sync::Once = std::sync::Once::new();
static NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static CHANGES: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);

pub fn enabled() -> bool {
    INIT.call_once(|| {
        if std::env::var("GRIDWORK_PROFILE").is_ok_and(|v| v == "1") {
            ENABLED.store(true, Ordering::Relaxed);
        }
    });
    ENABLED.load(Ordering::Relaxed)
}

pub fn enable() {
    enabled();
    ENABLED.store(true, Ordering::Relaxed);
}

/// A started span (no-op when profiling is off).
pub struct Timer(Option<Instant>);

pub fn start() -> Timer {
    Timer(enabled().then(Instant::now))
}

impl Timer {
    pub fn stop(self, span: Span) {
        if let Some(t) = self.0 {
            NANOS[span as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// Counts a committed batch of `changes` changes.
pub fn batch(changes: usize) {
    if enabled() {
        CHANGES.fetch_add(changes as u64, Ordering::Relaxed);
        BATCHES.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn reset() {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
    CHANGES.store(0, Ordering::Relaxed);
    BATCHES.store(0, Ordering::Relaxed);
}

/// Per-change microseconds of every span since the last [`reset`].
pub fn report() -> String {
    let changes = CHANGES.load(Ordering::Relaxed).max(1) as f64;
    let mut out = format!(
        "profile: {} changes in {} batches\n",
        changes as u64,
        BATCHES.load(Ordering::Relaxed)
    );
    let mut writer = 0.0;
    for (i, name) in NAMES.iter().enumerate() {
        let us = NANOS[i].load(Ordering::Relaxed) as f64 / 1000.0 / changes;
        if i > 0 {
            writer += us;
        }
        out.push_str(&format!("  {name:<48} {us:>8.2} us/change\n"));
    }
    out.push_str(&format!(
        "  {:<48} {writer:>8.2} us/change\n",
        "writer total"
    ));
    out
}
