//! The push engine: decides, for a batch of pushes, which changes are accepted, rejected or held,
//! keeps the relay's copy of every touched record document up to date, and produces a [`Plan`] that a
//! storage backend writes in one transaction.
//!
//! Backends are thin: they load what [`Engine::wants`] asks for, call [`Engine::plan`], write the plan,
//! then report back with [`Engine::committed`] or [`Engine::aborted`]. All protocol decisions live
//! here, so SQLite and PostgreSQL behave the same.
//!
//! Documents are cached in an LRU keyed by record id together with the record's `version` (the seq of
//! the last log entry that touched it). The database is the truth: a cached document is used only when
//! its version equals the version in the database, which keeps the cache correct when several relay
//! processes share one PostgreSQL.
//!
//! A record's stored bytes are a saved document followed by the raw chunks of the changes applied
//! since (Automerge loads such a concatenation), so accepting a change appends instead of re-saving;
//! every [`COMPACT_EVERY`] appended chunks the document is saved afresh.
//!
//! A change whose dependencies the relay does not have is rejected `missing_deps` (after trying the
//! rest of its push first, so a push may list changes in any order): every change in the log has been
//! applied and scope-checked against the record's areas before and after it, and nothing is ever
//! applied later under a check made earlier.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use automerge::{Automerge, Change, ChangeHash};
use gridwork_protocol::doc::record_areas;
use lru::LruCache;

use gridwork_protocol::scope::{join_paths, scope_keys, Scope};

/// Appended change chunks after which a record's stored bytes are re-saved (compacted).
const COMPACT_EVERY: usize = 32;

/// Entry kinds stored with each log entry; they drive whole-document delivery on pull.
pub const KIND_CHANGE: i16 = 0;
/// The record's areas changed: a caller that could not see the record before gets the whole document.
pub const KIND_MOVE: i16 = 1;
/// Legacy (logs written before held changes were removed): the change released held changes, every
/// caller gets the whole document. No longer written.
pub const KIND_RELEASE: i16 = 2;

/// Why a change was rejected (the `reason` of the push answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    OutOfScope,
    BadRecord,
    /// A dependency of the change is not in the relay's copy of the record (nor earlier in the push).
    MissingDeps,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::OutOfScope => "out_of_scope",
            Reject::BadRecord => "bad_record",
            Reject::MissingDeps => "missing_deps",
        }
    }
}

/// One change of a push, decoded by the HTTP layer (decoding is CPU work done on the request task,
/// outside the single writer).
#[derive(Debug, Clone)]
pub enum Incoming {
    Change { record: String, change: Box<Change> },
    Rejected { hash: String, reason: Reject },
}

impl Incoming {
    /// Decode one wire change. Never fails: bad input becomes a rejection.
    pub fn decode(record: &str, bytes: &[u8]) -> Incoming {
        match Change::try_from(bytes) {
            Err(_) => Incoming::Rejected {
                hash: String::new(),
                reason: Reject::Malformed,
            },
            Ok(change) => {
                if !gridwork_protocol::doc::is_valid_record_id(record) {
                    Incoming::Rejected {
                        hash: change.hash().to_string(),
                        reason: Reject::BadRecord,
                    }
                } else {
                    Incoming::Change {
                        record: record.to_owned(),
                        change: Box::new(change),
                    }
                }
            }
        }
    }
}

/// One device's push.
#[derive(Debug, Clone)]
pub struct PushJob {
    pub device_id: String,
    pub scope: Scope,
    pub changes: Vec<Incoming>,
}

/// The answer for one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    Accepted { hash: String, seq: i64 },
    Rejected { hash: String, reason: Reject },
}

#[derive(Debug, Clone, Copy)]
enum SeqRef {
    Existing(i64),
    New(usize),
}

#[derive(Debug, Clone)]
enum Planned {
    Accepted { hash: ChangeHash, seq: SeqRef },
    Rejected { hash: String, reason: Reject },
}

/// A new log entry.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub hash: [u8; 32],
    pub record: String,
    pub bytes: Vec<u8>,
    pub kind: i16,
    /// Index into the planned jobs of the push that brought the change (its device id is stored with
    /// the entry so that pulls skip a device's own changes).
    pub job: usize,
    /// For moves: the record's area paths before the change (newline-joined).
    pub before_paths: Option<String>,
    /// For moves: the document heads after the change (32-byte hashes concatenated).
    pub heads: Option<Vec<u8>>,
    /// Scope index keys: ancestor prefixes of the paths before and after the change.
    pub keys: Vec<String>,
}

/// The new state of a touched record.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub id: String,
    pub doc: Vec<u8>,
    /// Index into `Plan::entries` of the last entry touching the record; its seq is the new version.
    pub last_entry: usize,
    /// Current area paths.
    pub paths: Vec<String>,
    /// Scope keys of the current paths.
    pub keys: Vec<String>,
    /// Whether the scope keys differ from what the database holds.
    pub keys_changed: bool,
    /// Whether a row already exists in the database.
    pub existed: bool,
}

/// Everything a backend writes for a batch, in one transaction.
#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<NewEntry>,
    pub records: Vec<RecordWrite>,
    results: Vec<Vec<Planned>>,
}

impl Plan {
    /// The answers, once the backend has assigned `first_seq` to `entries[0]` (and consecutive seqs
    /// to the rest).
    pub fn results(&self, first_seq: i64) -> Vec<Vec<PushResult>> {
        self.results
            .iter()
            .map(|job| {
                job.iter()
                    .map(|p| match p {
                        Planned::Accepted { hash, seq } => PushResult::Accepted {
                            hash: hash.to_string(),
                            seq: match seq {
                                SeqRef::Existing(s) => *s,
                                SeqRef::New(i) => first_seq + *i as i64,
                            },
                        },
                        Planned::Rejected { hash, reason } => PushResult::Rejected {
                            hash: hash.clone(),
                            reason: *reason,
                        },
                    })
                    .collect()
            })
            .collect()
    }
}

/// What a backend must look up before planning.
#[derive(Debug, Default)]
pub struct Wants {
    /// Change hashes: which are already in the log, with which seq?
    pub hashes: Vec<[u8; 32]>,
    /// Records touched: their current `version` (absent row = new record).
    pub records: Vec<String>,
}

/// A record row loaded from the database.
#[derive(Debug, Clone, Default)]
pub struct RecordRow {
    pub version: i64,
    pub doc: Vec<u8>,
    pub paths: Vec<String>,
}

struct CachedDoc {
    version: i64,
    doc: Automerge,
    /// Bytes as stored: a saved document followed by `tail` appended change chunks.
    stored: Vec<u8>,
    tail: usize,
    /// Area paths as stored in the database (to know whether the scope index must change).
    stored_paths: Vec<String>,
    /// Current area paths of `doc`, computed with the area map of version `paths_version`.
    paths: Option<(i64, Vec<String>)>,
    /// Whether the database has a row for this record.
    in_db: bool,
}

impl CachedDoc {
    fn empty() -> Self {
        CachedDoc {
            version: 0,
            doc: Automerge::new(),
            stored: Vec::new(),
            tail: 0,
            stored_paths: Vec::new(),
            paths: None,
            in_db: false,
        }
    }

    fn from_row(row: RecordRow) -> Self {
        let mut c = CachedDoc {
            version: row.version,
            doc: Automerge::new(),
            stored: row.doc,
            tail: COMPACT_EVERY / 2,
            stored_paths: row.paths,
            paths: None,
            in_db: true,
        };
        c.reload();
        c
    }

    /// Rebuild `doc` from the stored bytes: used after loading and to undo a change that was applied
    /// but then rejected (Automerge cannot un-apply).
    fn reload(&mut self) {
        let doc = if self.stored.is_empty() {
            Automerge::new()
        } else {
            match Automerge::load(&self.stored) {
                Ok(d) => d,
                Err(e) => {
                    // Stored bytes were written by this relay after a successful apply; failing to
                    // load them means corruption. Keep serving: start from what can be salvaged.
                    tracing::error!(error = %e, "stored record document failed to load");
                    let mut d = Automerge::new();
                    let _ = d.load_incremental(&self.stored);
                    d
                }
            }
        };
        self.doc = doc;
        self.paths = None;
    }

    fn append(&mut self, change: &Change) {
        self.stored.extend_from_slice(change.raw_bytes());
        self.tail += 1;
    }

    /// Current area paths (cached until the document or the area map changes).
    fn current_paths(&mut self, areas: &AreaMap) -> Vec<String> {
        match &self.paths {
            Some((v, p)) if *v == areas.version => p.clone(),
            _ => {
                let p = areas.paths_of(&self.doc);
                self.paths = Some((areas.version, p.clone()));
                p
            }
        }
    }
}

/// Known areas: id -> path. Reloaded by the backend when the areas version changes.
#[derive(Debug, Default, Clone)]
pub struct AreaMap {
    pub version: i64,
    pub paths: HashMap<String, String>,
}

impl AreaMap {
    /// Area paths of a document (home area and, for events, responsible area), sorted.
    pub fn paths_of(&self, doc: &Automerge) -> Vec<String> {
        let areas = record_areas(doc);
        let mut v: Vec<String> = areas
            .all()
            .filter_map(|a| self.paths.get(a).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

pub struct Engine {
    cache: LruCache<String, CachedDoc>,
    pub areas: AreaMap,
    /// Documents taken out of the cache for the batch being planned.
    working: HashMap<String, CachedDoc>,
}

impl Engine {
    pub fn new(cache_entries: usize) -> Self {
        Engine {
            cache: LruCache::new(
                NonZeroUsize::new(cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            areas: AreaMap::default(),
            working: HashMap::new(),
        }
    }

    /// What to look up for a batch of jobs.
    pub fn wants(jobs: &[PushJob]) -> Wants {
        let mut hashes = Vec::new();
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for job in jobs {
            for inc in &job.changes {
                if let Incoming::Change { record, change } = inc {
                    hashes.push(change.hash().0);
                    if seen.insert(record.as_str()) {
                        records.push(record.clone());
                    }
                }
            }
        }
        Wants { hashes, records }
    }

    /// Given the database versions of the touched records, which rows must be loaded (not cached or
    /// cached at another version). Records missing from `versions` are new.
    pub fn stale(&mut self, records: &[String], versions: &HashMap<String, i64>) -> Vec<String> {
        let mut out = Vec::new();
        for id in records {
            match (self.cache.peek(id), versions.get(id)) {
                (Some(c), Some(v)) if c.in_db && c.version == *v => {}
                (Some(c), None) if !c.in_db => {}
                (_, Some(_)) => out.push(id.clone()),
                (_, None) => {
                    // Cached as existing but gone from the database (cannot happen without manual
                    // deletes): forget the stale copy.
                    self.cache.pop(id);
                }
            }
        }
        out
    }

    /// Plan a batch. `existing` maps already-logged hashes to their seq, `rows` holds the loaded
    /// (stale or uncached) records that exist in the database.
    pub fn plan(
        &mut self,
        jobs: &[PushJob],
        existing: &HashMap<[u8; 32], i64>,
        mut rows: HashMap<String, RecordRow>,
    ) -> Plan {
        self.working.clear();
        let mut plan = Plan::default();
        let mut new_hashes: HashMap<ChangeHash, usize> = HashMap::new();
        // Per record: index into plan.entries of its last entry.
        let mut touched: HashMap<String, usize> = HashMap::new();
        let mut touched_order: Vec<String> = Vec::new();

        for (job_idx, job) in jobs.iter().enumerate() {
            let mut out: Vec<Option<Planned>> = vec![None; job.changes.len()];
            // Changes whose dependencies are missing are retried after the rest of the push (a push
            // may list a change before its dependencies); what is still missing then is rejected.
            let mut pending: Vec<usize> = (0..job.changes.len()).collect();
            loop {
                let mut deferred = Vec::new();
                let mut progress = false;
                let mut skip = 0;
                for (pi, &ci) in pending.iter().enumerate() {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    // A run of further changes to the same record: applied as one Automerge batch
                    // when none of them touches the record's areas (then every intermediate state
                    // has the areas already checked, exactly as change-by-change).
                    let run = self.try_run(
                        job,
                        job_idx,
                        &pending[pi..],
                        existing,
                        &new_hashes,
                        &mut rows,
                        &mut plan,
                    );
                    if !run.is_empty() {
                        progress = true;
                        skip = run.len() - 1;
                        for (rci, planned) in run {
                            if let (
                                Incoming::Change { record, change },
                                Planned::Accepted {
                                    seq: SeqRef::New(i),
                                    ..
                                },
                            ) = (&job.changes[rci], &planned)
                            {
                                new_hashes.insert(change.hash(), *i);
                                if touched.insert(record.clone(), *i).is_none() {
                                    touched_order.push(record.clone());
                                } else {
                                    touched.insert(record.clone(), *i);
                                }
                            }
                            out[rci] = Some(planned);
                        }
                        continue;
                    }
                    let (record, change) = match &job.changes[ci] {
                        Incoming::Rejected { hash, reason } => {
                            out[ci] = Some(Planned::Rejected {
                                hash: hash.clone(),
                                reason: *reason,
                            });
                            continue;
                        }
                        Incoming::Change { record, change } => (record, change),
                    };
                    let hash = change.hash();
                    if let Some(seq) = existing.get(&hash.0) {
                        out[ci] = Some(Planned::Accepted {
                            hash,
                            seq: SeqRef::Existing(*seq),
                        });
                        continue;
                    }
                    if let Some(i) = new_hashes.get(&hash) {
                        out[ci] = Some(Planned::Accepted {
                            hash,
                            seq: SeqRef::New(*i),
                        });
                        continue;
                    }
                    let Some(planned) =
                        self.apply_one(&job.scope, job_idx, record, change, &mut rows, &mut plan)
                    else {
                        deferred.push(ci);
                        continue;
                    };
                    if let Planned::Accepted {
                        seq: SeqRef::New(i),
                        ..
                    } = &planned
                    {
                        progress = true;
                        new_hashes.insert(hash, *i);
                        if touched.insert(record.clone(), *i).is_none() {
                            touched_order.push(record.clone());
                        }
                    }
                    out[ci] = Some(planned);
                }
                if deferred.is_empty() || !progress {
                    for ci in deferred {
                        let hash = match &job.changes[ci] {
                            Incoming::Change { change, .. } => change.hash().to_string(),
                            Incoming::Rejected { hash, .. } => hash.clone(),
                        };
                        tracing::info!(change = %hash, "change rejected: dependencies missing");
                        out[ci] = Some(Planned::Rejected {
                            hash,
                            reason: Reject::MissingDeps,
                        });
                    }
                    break;
                }
                pending = deferred;
            }
            plan.results.push(
                out.into_iter()
                    .map(|p| {
                        p.unwrap_or(Planned::Rejected {
                            hash: String::new(),
                            reason: Reject::Malformed,
                        })
                    })
                    .collect(),
            );
        }

        for id in touched_order {
            let Some(last_entry) = touched.get(&id).copied() else {
                continue;
            };
            let Some(w) = self.working.get_mut(&id) else {
                continue;
            };
            if w.tail >= COMPACT_EVERY {
                w.stored = w.doc.save();
                w.tail = 0;
            }
            let paths = w.current_paths(&self.areas);
            let keys_changed = !w.in_db || paths != w.stored_paths;
            let keys = if keys_changed {
                scope_keys(&paths)
            } else {
                Vec::new()
            };
            plan.records.push(RecordWrite {
                id: id.clone(),
                doc: w.stored.clone(),
                last_entry,
                paths,
                keys,
                keys_changed,
                existed: w.in_db,
            });
        }
        plan
    }

    /// Tries to apply `pending[0..k]` (k >= 2, same record, new changes, dependencies present) as one
    /// batch. Empty when not applicable or when the batch touched the record's areas (then the
    /// document is restored and the changes go one by one).
    #[allow(clippy::too_many_arguments)]
    fn try_run(
        &mut self,
        job: &PushJob,
        job_idx: usize,
        pending: &[usize],
        existing: &HashMap<[u8; 32], i64>,
        new_hashes: &HashMap<ChangeHash, usize>,
        rows: &mut HashMap<String, RecordRow>,
        plan: &mut Plan,
    ) -> Vec<(usize, Planned)> {
        let Some(Incoming::Change { record, .. }) = pending.first().map(|&i| &job.changes[i])
        else {
            return Vec::new();
        };
        let Engine {
            cache,
            areas,
            working,
        } = self;
        let w = doc_for(working, cache, record, rows);
        if w.stored.is_empty() {
            return Vec::new();
        }
        let mut run: Vec<(usize, &Change)> = Vec::new();
        let mut in_run: HashSet<ChangeHash> = HashSet::new();
        for &ci in pending {
            let Incoming::Change { record: r, change } = &job.changes[ci] else {
                break;
            };
            let h = change.hash();
            if r != record
                || existing.contains_key(&h.0)
                || new_hashes.contains_key(&h)
                || in_run.contains(&h)
                || !change
                    .deps()
                    .iter()
                    .all(|d| in_run.contains(d) || w.doc.get_change_meta_by_hash(d).is_some())
            {
                break;
            }
            in_run.insert(h);
            run.push((ci, change));
        }
        if run.len() < 2 {
            return Vec::new();
        }
        let before = w.current_paths(areas);
        if !job.scope.allows_any(&before) {
            return Vec::new();
        }
        let ops_before = area_ops(&w.doc);
        if w.doc
            .apply_changes(run.iter().map(|(_, c)| (*c).clone()).collect::<Vec<_>>())
            .is_err()
            || area_ops(&w.doc) != ops_before
        {
            w.reload();
            return Vec::new();
        }
        let keys = scope_keys(&before);
        let mut out = Vec::with_capacity(run.len());
        for (ci, change) in run {
            w.append(change);
            let idx = plan.entries.len();
            plan.entries.push(NewEntry {
                hash: change.hash().0,
                record: record.clone(),
                bytes: change.raw_bytes().to_vec(),
                kind: KIND_CHANGE,
                job: job_idx,
                before_paths: None,
                heads: None,
                keys: keys.clone(),
            });
            out.push((
                ci,
                Planned::Accepted {
                    hash: change.hash(),
                    seq: SeqRef::New(idx),
                },
            ));
        }
        out
    }

    /// Applies one change to the working copy of its record. `None`: a dependency is missing (nothing
    /// was applied).
    fn apply_one(
        &mut self,
        scope: &Scope,
        job: usize,
        record: &str,
        change: &Change,
        rows: &mut HashMap<String, RecordRow>,
        plan: &mut Plan,
    ) -> Option<Planned> {
        let hash = change.hash();
        let Engine {
            cache,
            areas,
            working,
        } = self;
        let w = doc_for(working, cache, record, rows);
        if !change
            .deps()
            .iter()
            .all(|d| w.doc.get_change_meta_by_hash(d).is_some())
        {
            return None;
        }
        let existed = !w.stored.is_empty();
        let before = w.current_paths(areas);
        if existed && !scope.allows_any(&before) {
            return Some(Planned::Rejected {
                hash: hash.to_string(),
                reason: Reject::OutOfScope,
            });
        }
        if w.doc.apply_changes([change.clone()]).is_err() {
            w.reload();
            return Some(Planned::Rejected {
                hash: hash.to_string(),
                reason: Reject::Malformed,
            });
        }
        w.paths = None;
        let after = w.current_paths(areas);
        if !scope.allows_any(&after) {
            w.reload();
            return Some(Planned::Rejected {
                hash: hash.to_string(),
                reason: Reject::OutOfScope,
            });
        }
        w.append(change);
        let moved = existed && before != after;
        let (kind, before_paths, heads) = if moved {
            (
                KIND_MOVE,
                Some(join_paths(&before)),
                Some(
                    w.doc
                        .get_heads()
                        .iter()
                        .flat_map(|h| h.0)
                        .collect::<Vec<u8>>(),
                ),
            )
        } else {
            (KIND_CHANGE, None, None)
        };
        let keys = if before == after {
            scope_keys(&after)
        } else {
            let mut all = before;
            all.extend(after);
            scope_keys(&all)
        };
        let idx = plan.entries.len();
        plan.entries.push(NewEntry {
            hash: hash.0,
            record: record.to_owned(),
            bytes: change.raw_bytes().to_vec(),
            kind,
            job,
            before_paths,
            heads,
            keys,
        });
        Some(Planned::Accepted {
            hash,
            seq: SeqRef::New(idx),
        })
    }

    /// The plan was committed with `entries[0]` at `first_seq`: cache the new document versions.
    pub fn committed(&mut self, plan: &Plan, first_seq: i64) {
        for rw in &plan.records {
            if let Some(mut w) = self.working.remove(&rw.id) {
                w.version = first_seq + rw.last_entry as i64;
                w.in_db = true;
                w.stored_paths = rw.paths.clone();
                self.cache.put(rw.id.clone(), w);
            }
        }
        // Working documents that were only read (every change rejected or duplicate) are unchanged
        // and go back too.
        for (id, w) in self.working.drain() {
            self.cache.put(id, w);
        }
    }

    /// The plan was not written: forget every document it touched (the database is the truth).
    pub fn aborted(&mut self) {
        for (id, _) in self.working.drain() {
            self.cache.pop(&id);
        }
    }
}

/// Op ids of the root `area` and `responsible` values (conflicts included): unchanged by a batch
/// means no change of the batch touched the record's areas.
fn area_ops(doc: &Automerge) -> Vec<automerge::ObjId> {
    use automerge::ReadDoc;
    let mut out = Vec::new();
    for key in ["area", "responsible"] {
        if let Ok(v) = doc.get_all(automerge::ROOT, key) {
            out.extend(v.into_iter().map(|(_, id)| id));
        }
    }
    out
}

/// The working copy of a record: loaded row, else cached document, else a new empty one.
fn doc_for<'a>(
    working: &'a mut HashMap<String, CachedDoc>,
    cache: &mut LruCache<String, CachedDoc>,
    record: &str,
    rows: &mut HashMap<String, RecordRow>,
) -> &'a mut CachedDoc {
    working.entry(record.to_owned()).or_insert_with(|| {
        if let Some(row) = rows.remove(record) {
            CachedDoc::from_row(row)
        } else {
            cache.pop(record).unwrap_or_else(CachedDoc::empty)
        }
    })
}

/// Rebuild a document as it was at `heads` (a moved record is delivered as of its move, not with
/// later changes the caller may no longer be entitled to). Falls back to the whole document.
pub fn doc_at(stored: &[u8], heads: Option<&[u8]>) -> Vec<u8> {
    let Ok(doc) = Automerge::load(stored) else {
        return stored.to_vec();
    };
    if let Some(h) = heads {
        let hashes: Vec<ChangeHash> = h
            .chunks_exact(32)
            .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(ChangeHash))
            .collect();
        if !hashes.is_empty() {
            if let Ok(f) = doc.fork_at(&hashes) {
                return f.save();
            }
        }
    }
    doc.save()
}
