//! The push engine: decides, for a batch of pushes, which changes are accepted or refused, keeps the
//! relay's copy of every touched record document up to date, and produces a [`Plan`] that a storage
//! backend writes in one transaction.
//!
//! The relay is the authority: every change is judged here, by the rule book the devices also apply
//! (`gridwork_protocol::rules`), against the relay's own materialised document, never against what the
//! device says about itself. A change passes, in order:
//! 1. [`Decoder`] (on the request task, off the single writer): bounded inspection of the raw bytes
//!    (checksum, inflated size, operation count: `gridwork_protocol::change::inspect`) before Automerge
//!    sees them, the per-push budgets of operations and inflated bytes, the record id, the operation
//!    counter limit, and the author (the store bound to the token, and the user and device the change's note names);
//! 2. [`Engine::plan`] (the single writer): dependencies present, the change's first operation counter
//!    following its dependencies, then the rule book on the record as the author saw it (`before` = the
//!    document at the change's dependencies, `after` = that plus the change) and the caller's scope on
//!    the current document before and after the merge. A per-push time budget answers the rest of a
//!    push that takes too long `busy`, so one device cannot stall the others. A device's consecutive
//!    changes of one record (each building on the one before: how a device edits) are applied in one
//!    batch and each judged on the document at its own heads ([`AtHeads`]), which is the state it
//!    made; a refusal among them undoes the batch and they are judged one by one.
//!
//! Backends are thin: they load what [`Engine::wants`] asks for, call [`Engine::plan`], write the plan,
//! then report back with [`Engine::committed`] or [`Engine::aborted`]. All protocol decisions live
//! here, so SQLite and PostgreSQL behave the same.
//!
//! Documents are cached in an LRU keyed by record id together with the record's `version` (the seq of
//! the last log entry that touched it). The database is the truth: a cached document is used only when
//! its version equals the version in the database, which keeps the cache correct when several relay
//! processes share one PostgreSQL. With each document the cache keeps its record state as the rule
//! book reads it, so consecutive changes of one record read the record view once each.
//!
//! A record's stored bytes are a saved document followed by the raw chunks of the changes applied
//! since (Automerge loads such a concatenation), so accepting a change appends instead of re-saving;
//! every [`COMPACT_EVERY`] appended chunks the document is saved afresh.
//!
//! A change whose dependencies the relay does not have is rejected `missing_deps` (after trying the
//! rest of its push first, so a push may list changes in any order): every change in the log has been
//! applied and checked, and nothing is ever applied later under a check made earlier.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use gridwork_protocol::at_heads::AtHeads;
use gridwork_protocol::change::{inspect, Defect};
use gridwork_protocol::doc::{record_areas, ChangeNote, DocState, RecordAreas, RecordState};
use gridwork_protocol::rules::{self, Actor, Reason, Refusal};
use gridwork_protocol::scope::{join_paths, scope_keys};
use lru::LruCache;

use crate::config::Limits;

/// Appended change chunks after which a record's stored bytes are re-saved (compacted).
const COMPACT_EVERY: usize = 32;

/// The engine's maps and sets: keyed by record ids and change hashes, looked up several times per
/// change on the single writer; foldhash with a random seed per map (SipHash was ~4% of the writer).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Entry kinds stored with each log entry; they drive whole-document delivery on pull.
pub const KIND_CHANGE: i16 = 0;
/// The record's areas changed: a caller that could not see the record before gets the whole document.
pub const KIND_MOVE: i16 = 1;
/// Legacy (logs written before held changes were removed): the change released held changes, every
/// caller gets the whole document. No longer written.
pub const KIND_RELEASE: i16 = 2;

/// One change of a push, decoded and checked by a [`Decoder`] on the request task.
#[derive(Debug, Clone)]
pub enum Incoming {
    Change {
        record: String,
        change: Box<Change>,
        /// The city forms its author's device judged it by (the note's `forms`), read once here.
        forms: Option<String>,
    },
    Refused {
        hash: String,
        refusal: Refusal,
    },
}

/// The `busy` answer: the change is fine, the relay did not get to it in this request.
fn busy(detail: &str) -> Refusal {
    Refusal::new(Reason::Busy, format!("{detail}; send the change again"))
}

/// Decodes the changes of one push, in order: everything about a change that needs neither the
/// relay's documents nor the writer. Work per change is bounded by its bytes until the bytes have
/// passed [`inspect`]; only then does Automerge parse them.
pub struct Decoder<'a> {
    actor: &'a Actor,
    bound_actor: Option<&'a str>,
    limits: &'a Limits,
    /// Operations of the push's changes so far.
    ops: u64,
    /// Bytes of the push's changes so far, inflated: a compressed change may inflate up to the
    /// per-change limit, so without this a push could make its size in memory many times over.
    bytes: usize,
    /// Changes counted so far.
    counted: usize,
    /// The push's budget is spent: the remaining changes are `busy`.
    spent: Option<Refusal>,
}

impl<'a> Decoder<'a> {
    /// `bound_actor` is the store (hex Automerge actor) the pushing token is bound to.
    pub fn new(actor: &'a Actor, bound_actor: Option<&'a str>, limits: &'a Limits) -> Self {
        Decoder {
            actor,
            bound_actor,
            limits,
            ops: 0,
            bytes: 0,
            counted: 0,
            spent: None,
        }
    }

    /// Counts a change of `ops` operations and `bytes` inflated bytes against the push's budgets;
    /// `Err` when they are spent (then for every later change too). The first change of a push always
    /// fits, so a change within the per-change limits is never `busy` for ever.
    fn budget(&mut self, ops: u64, bytes: usize) -> Result<(), Refusal> {
        if let Some(spent) = &self.spent {
            return Err(spent.clone());
        }
        let (ops, bytes) = (
            self.ops.saturating_add(ops),
            self.bytes.saturating_add(bytes),
        );
        let over = if ops > self.limits.max_ops_per_push {
            Some(format!(
                "the push holds more than {} operations",
                self.limits.max_ops_per_push
            ))
        } else if bytes > self.limits.max_push_bytes {
            Some(format!(
                "the push's changes hold more than {} bytes once inflated",
                self.limits.max_push_bytes
            ))
        } else {
            None
        };
        match over {
            Some(why) if self.counted > 0 => {
                let refusal = busy(&why);
                self.spent = Some(refusal.clone());
                Err(refusal)
            }
            _ => {
                (self.ops, self.bytes, self.counted) = (ops, bytes, self.counted + 1);
                Ok(())
            }
        }
    }

    /// Decodes one wire change; `bytes` is `None` when the wire text was not base64. Never fails: bad
    /// input becomes a refusal.
    pub fn decode(&mut self, record: &str, bytes: Option<&[u8]>) -> Incoming {
        let Some(bytes) = bytes else {
            return refused(
                String::new(),
                Refusal::new(Reason::Malformed, "the change is not base64"),
            );
        };
        let inspected = match inspect(
            bytes,
            self.limits.max_change_bytes,
            self.limits.max_ops_per_change,
        ) {
            Ok(i) => i,
            Err(defect) => return refused(String::new(), defect_refusal(&defect)),
        };
        let hash = ChangeHash(inspected.hash).to_string();
        if let Err(refusal) = self.budget(inspected.ops, inspected.chunk.len()) {
            return refused(hash, refusal);
        }
        let change = match Change::try_from(&inspected.chunk[..]) {
            Ok(c) => c,
            Err(_) => {
                return refused(
                    hash,
                    Refusal::new(Reason::Malformed, "not a readable Automerge change"),
                )
            }
        };
        if !gridwork_protocol::doc::is_valid_record_id(record) {
            return refused(
                hash,
                Refusal::new(
                    Reason::BadRecord,
                    "a record id is 32 lowercase hex characters",
                ),
            );
        }
        if change.max_op() > self.limits.max_doc_ops {
            return refused(
                hash,
                Refusal::new(
                    Reason::TooLarge,
                    format!(
                        "the change's operation counter passes the limit of {} operations per record",
                        self.limits.max_doc_ops
                    ),
                ),
            );
        }
        let note = ChangeNote::parse(change.message());
        if let Err(refusal) = rules::check_author(
            self.actor,
            self.bound_actor,
            &change.actor_id().to_hex_string(),
            note.as_ref(),
        ) {
            return refused(hash, refusal);
        }
        Incoming::Change {
            record: record.to_owned(),
            change: Box::new(change),
            forms: note.and_then(|n| n.forms),
        }
    }
}

fn refused(hash: String, refusal: Refusal) -> Incoming {
    Incoming::Refused { hash, refusal }
}

/// The refusal for a defect found by [`inspect`].
fn defect_refusal(defect: &Defect) -> Refusal {
    let reason = match defect {
        Defect::Malformed(_) => Reason::Malformed,
        Defect::BadChecksum => Reason::BadChecksum,
        Defect::TooLarge { .. } => Reason::TooLarge,
        Defect::TooManyOps { .. } => Reason::TooManyOps,
    };
    Refusal::new(reason, defect.to_string())
}

/// One device's push.
#[derive(Debug, Clone)]
pub struct PushJob {
    pub device_id: String,
    /// The caller as the rule book sees it (from the token).
    pub actor: Actor,
    pub changes: Vec<Incoming>,
}

/// The answer for one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    Accepted {
        hash: String,
        seq: i64,
    },
    Rejected {
        hash: String,
        reason: Reason,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy)]
enum SeqRef {
    Existing(i64),
    New(usize),
}

#[derive(Debug, Clone)]
enum Planned {
    Accepted { hash: ChangeHash, seq: SeqRef },
    Rejected { hash: String, refusal: Refusal },
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
    /// The record view of the new document ([`Record::compact_json`]), sent to devices with it so
    /// that they need not load the document to list and search it.
    ///
    /// [`Record::compact_json`]: gridwork_protocol::model::Record::compact_json
    pub view: Option<String>,
}

/// Everything a backend writes for a batch, in one transaction.
#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<NewEntry>,
    pub records: Vec<RecordWrite>,
    results: Vec<Vec<Planned>>,
    /// The documents the plan was judged on, taken out of the engine's cache: they go back with
    /// [`Engine::committed`], or are dropped with [`Engine::aborted`]. A plan carries its own, so
    /// that the next batch can be planned while this one is being written.
    working: Working,
}

/// The working documents of a plan.
#[derive(Default)]
struct Working(FastMap<String, CachedDoc>);

impl std::fmt::Debug for Working {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} working documents", self.0.len())
    }
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
                        Planned::Rejected { hash, refusal } => PushResult::Rejected {
                            hash: hash.clone(),
                            reason: refusal.reason,
                            detail: refusal.detail.clone(),
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
    /// The record state of `doc` as the rule book reads it, once read; kept up to date after each
    /// change by reading again only what the change touched.
    state: Option<DocState>,
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
            state: None,
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
            state: None,
            in_db: true,
        };
        c.reload();
        c
    }

    /// Rebuild `doc` from the stored bytes: used after loading and to undo a change that was applied
    /// but then refused (Automerge cannot un-apply).
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
        self.state = None;
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
                // The record state, when read, holds the same areas (the shape check makes them
                // strings): no document read.
                let p = match &self.state {
                    Some(s) => areas.paths_of_state(s),
                    None => areas.paths_of(&self.doc),
                };
                self.paths = Some((areas.version, p.clone()));
                p
            }
        }
    }

    /// Takes the record state of the current document out of the cache (reading it when needed):
    /// `None` for a record the relay does not have yet.
    fn take_state(&mut self, id: &str) -> Result<Option<DocState>, Refusal> {
        if self.doc.get_heads().is_empty() {
            return Ok(None);
        }
        match self.state.take() {
            Some(s) => Ok(Some(s)),
            None => DocState::read(id, &self.doc).map(Some).map_err(|e| {
                Refusal::new(
                    Reason::Malformed,
                    format!("the relay's copy of the record is not well-formed: {e}"),
                )
            }),
        }
    }
}

/// Known areas: id -> path, and the city forms defined on them. Reloaded by the backend when the areas
/// version changes (a change of the forms moves it on too).
#[derive(Debug, Default, Clone)]
pub struct AreaMap {
    pub version: i64,
    pub paths: HashMap<String, String>,
    pub forms: Vec<gridwork_protocol::Form>,
    /// `forms_version` of the forms a scope is sent, by scope path (`""`: an operator's), worked out
    /// once per scope while this map is current.
    forms_versions: Arc<Mutex<HashMap<String, String>>>,
}

impl AreaMap {
    pub fn new(
        version: i64,
        paths: HashMap<String, String>,
        forms: Vec<gridwork_protocol::Form>,
    ) -> Self {
        AreaMap {
            version,
            paths,
            forms,
            forms_versions: Arc::default(),
        }
    }

    /// The `forms_version` a device of `actor` holds when it has the relay's forms.
    fn forms_version_for(&self, actor: &Actor) -> String {
        let operator = actor.role == gridwork_protocol::Role::Operator;
        let key = if operator {
            ""
        } else {
            actor.area_path.as_str()
        };
        let mut cache = self.forms_versions.lock().expect("forms versions");
        if let Some(v) = cache.get(key) {
            return v.clone();
        }
        let sent = gridwork_protocol::forms_for_scope(
            &self.forms,
            &self.paths,
            &actor.area_path,
            operator,
        );
        let v = gridwork_protocol::forms_version(&sent);
        cache.insert(key.to_owned(), v.clone());
        v
    }

    /// Area paths of a document (home area and, for events, responsible area), sorted.
    pub fn paths_of(&self, doc: &Automerge) -> Vec<String> {
        self.paths_of_areas(&record_areas(doc))
    }

    /// Area paths of a record state (the areas it holds are those of its document).
    fn paths_of_state(&self, state: &DocState) -> Vec<String> {
        let r = &state.state().record;
        self.paths_of_areas(&RecordAreas {
            area: Some(r.area.clone()),
            responsible: r.responsible.clone(),
        })
    }

    /// Area paths of a record's areas, sorted.
    fn paths_of_areas(&self, areas: &RecordAreas) -> Vec<String> {
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
    /// Writer time one push may take before its remaining changes are answered `busy`.
    max_push: Duration,
    /// Threads a large batch is judged on.
    threads: usize,
}

impl Engine {
    pub fn new(limits: &Limits) -> Self {
        Engine {
            cache: LruCache::new(
                NonZeroUsize::new(limits.doc_cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            areas: AreaMap::default(),
            max_push: Duration::from_millis(limits.max_push_millis),
            threads: limits.plan_threads.max(1),
        }
    }

    /// What to look up for a batch of jobs.
    pub fn wants(jobs: &[PushJob]) -> Wants {
        let mut hashes = Vec::new();
        let mut records = Vec::new();
        let mut seen = FastSet::default();
        for job in jobs {
            for inc in &job.changes {
                if let Incoming::Change { record, change, .. } = inc {
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
    pub fn stale(&mut self, records: &[String], versions: &FastMap<String, i64>) -> Vec<String> {
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
    ///
    /// Records are independent, so a large batch is judged on several threads ([`Limits::plan_threads`]),
    /// each taking some records with every change of the batch that touches them, in order; the
    /// plan is the same as one thread's (entries ordered by push, each record's in its order).
    pub fn plan(
        &mut self,
        jobs: &[PushJob],
        existing: &FastMap<[u8; 32], i64>,
        mut rows: FastMap<String, RecordRow>,
    ) -> Plan {
        let shard_of = self.shards(jobs);
        let shards = shard_of.values().copied().max().map_or(1, |m| m + 1);
        // Each shard's records: the cached documents (a loaded row is newer than any cached copy)
        // and the rows.
        let mut inputs: Vec<(FastMap<String, CachedDoc>, FastMap<String, RecordRow>)> =
            (0..shards).map(|_| Default::default()).collect();
        let mut seen = FastSet::default();
        for job in jobs {
            for inc in &job.changes {
                let Incoming::Change { record: id, .. } = inc else {
                    continue;
                };
                if !seen.insert(id.as_str()) {
                    continue;
                }
                let s = shard_of.get(id.as_str()).copied().unwrap_or(0);
                match rows.remove(id) {
                    Some(row) => {
                        self.cache.pop(id);
                        inputs[s].1.insert(id.clone(), row);
                    }
                    None => {
                        if let Some(doc) = self.cache.pop(id) {
                            inputs[s].0.insert(id.clone(), doc);
                        }
                    }
                }
            }
        }
        let (areas, max_push) = (&self.areas, self.max_push);
        let mut shard_inputs = inputs
            .into_iter()
            .enumerate()
            .map(|(n, (cached, rows))| Shard {
                areas,
                max_push,
                existing,
                mine: if shards > 1 {
                    Some((&shard_of, n))
                } else {
                    None
                },
                cached,
                rows,
                working: FastMap::default(),
                entries: Vec::new(),
                results: vec![Vec::new(); jobs.len()],
                unbatched: FastSet::default(),
            });
        let outputs: Vec<ShardPlan> = if shards == 1 {
            shard_inputs.map(|s| s.plan(jobs)).collect()
        } else {
            let first = shard_inputs.next();
            std::thread::scope(|scope| {
                let others: Vec<_> = shard_inputs
                    .map(|s| scope.spawn(move || s.plan(jobs)))
                    .collect();
                let mut out: Vec<ShardPlan> = first.into_iter().map(|s| s.plan(jobs)).collect();
                for h in others {
                    match h.join() {
                        Ok(p) => out.push(p),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                out
            })
        };
        self.merge(jobs, outputs)
    }

    /// Which thread judges each record of a batch: empty (one thread) for a small batch, or when
    /// one change is pushed under two record ids (one thread then answers the second as the first).
    fn shards<'j>(&self, jobs: &'j [PushJob]) -> FastMap<&'j str, usize> {
        let mut counts: FastMap<&str, usize> = FastMap::default();
        let mut by_hash: FastMap<ChangeHash, &str> = FastMap::default();
        for job in jobs {
            for inc in &job.changes {
                if let Incoming::Change { record, change, .. } = inc {
                    if by_hash
                        .insert(change.hash(), record)
                        .is_some_and(|r| r != record)
                    {
                        return FastMap::default();
                    }
                    *counts.entry(record).or_default() += 1;
                }
            }
        }
        let total: usize = counts.values().sum();
        let n = self.threads.min(counts.len());
        if n < 2 || total < PARALLEL_MIN_CHANGES {
            return FastMap::default();
        }
        // Largest records first, each to the least loaded thread.
        let mut records: Vec<(&str, usize)> = counts.into_iter().collect();
        records.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut load = vec![0usize; n];
        records
            .into_iter()
            .map(|(id, c)| {
                let (s, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, l)| **l)
                    .unwrap_or((0, &0));
                load[s] += c;
                (id, s)
            })
            .collect()
    }

    /// One plan out of the shards' plans: entries ordered by push (then shard, then each shard's
    /// order, so each record's entries stay in order), answers and records pointing at them.
    fn merge(&mut self, jobs: &[PushJob], outputs: Vec<ShardPlan>) -> Plan {
        let mut order: Vec<(usize, usize, usize)> = Vec::new();
        for (s, out) in outputs.iter().enumerate() {
            for (i, e) in out.entries.iter().enumerate() {
                order.push((e.job, s, i));
            }
        }
        order.sort_unstable();
        let mut global: Vec<Vec<usize>> =
            outputs.iter().map(|o| vec![0; o.entries.len()]).collect();
        for (g, &(_, s, i)) in order.iter().enumerate() {
            global[s][i] = g;
        }
        let mut plan = Plan::default();
        let mut results: Vec<Vec<Option<Planned>>> =
            jobs.iter().map(|j| vec![None; j.changes.len()]).collect();
        let mut entries: Vec<Vec<Option<NewEntry>>> = Vec::new();
        for (s, out) in outputs.into_iter().enumerate() {
            for (j, answers) in out.results.into_iter().enumerate() {
                for (ci, mut planned) in answers {
                    if let Planned::Accepted {
                        seq: SeqRef::New(i),
                        ..
                    } = &mut planned
                    {
                        *i = global[s][*i];
                    }
                    results[j][ci] = Some(planned);
                }
            }
            for mut r in out.records {
                r.last_entry = global[s][r.last_entry];
                plan.records.push(r);
            }
            plan.working.0.extend(out.working);
            entries.push(out.entries.into_iter().map(Some).collect());
        }
        plan.records.sort_unstable_by_key(|r| r.last_entry);
        plan.entries = order
            .iter()
            .filter_map(|&(_, s, i)| entries[s][i].take())
            .collect();
        plan.results = results
            .into_iter()
            .zip(jobs)
            .map(|(answers, job)| {
                answers
                    .into_iter()
                    .zip(&job.changes)
                    .map(|(p, inc)| match (p, inc) {
                        (Some(p), _) => p,
                        (None, Incoming::Refused { hash, refusal }) => Planned::Rejected {
                            hash: hash.clone(),
                            refusal: refusal.clone(),
                        },
                        (None, Incoming::Change { change, .. }) => Planned::Rejected {
                            hash: change.hash().to_string(),
                            refusal: Refusal::new(Reason::Malformed, "not planned"),
                        },
                    })
                    .collect()
            })
            .collect();
        plan
    }

    /// The plan was committed with `entries[0]` at `first_seq`: cache the new document versions.
    pub fn committed(&mut self, plan: &mut Plan, first_seq: i64) {
        let working = &mut plan.working.0;
        for rw in &plan.records {
            if let Some(mut w) = working.remove(&rw.id) {
                w.version = first_seq + rw.last_entry as i64;
                w.in_db = true;
                w.stored_paths = rw.paths.clone();
                self.cache.put(rw.id.clone(), w);
            }
        }
        // Working documents that were only read (every change rejected or duplicate) are unchanged
        // and go back too.
        for (id, w) in working.drain() {
            self.cache.put(id, w);
        }
    }

    /// The plan was not written: forget every document it touched (the database is the truth).
    pub fn aborted(&mut self, plan: &mut Plan) {
        for (id, _) in plan.working.0.drain() {
            self.cache.pop(&id);
        }
    }
}

/// Batches with fewer changes are judged on the writer alone (a thread costs more than they do).
const PARALLEL_MIN_CHANGES: usize = 256;

/// One thread's share of a batch: its records, judged with every change of the batch that touches
/// them, push by push.
struct Shard<'a> {
    areas: &'a AreaMap,
    max_push: Duration,
    existing: &'a FastMap<[u8; 32], i64>,
    /// Which records are this shard's (`None`: all of them).
    mine: Option<(&'a FastMap<&'a str, usize>, usize)>,
    /// Cached documents of this shard's records.
    cached: FastMap<String, CachedDoc>,
    /// Loaded rows of this shard's records.
    rows: FastMap<String, RecordRow>,
    /// Working copies of the records touched so far.
    working: FastMap<String, CachedDoc>,
    entries: Vec<NewEntry>,
    /// Per push: (index of the change in the push, what became of it), for this shard's changes.
    results: Vec<Vec<(usize, Planned)>>,
    /// Records a run of whose changes was refused in this batch: judged change by change since.
    unbatched: FastSet<String>,
}

/// What a shard planned; indexes into `entries` are the shard's own until merged.
struct ShardPlan {
    entries: Vec<NewEntry>,
    records: Vec<RecordWrite>,
    results: Vec<Vec<(usize, Planned)>>,
    /// Every document the shard held: working copies, and cached ones it did not need.
    working: FastMap<String, CachedDoc>,
}

impl Shard<'_> {
    fn is_mine(&self, record: &str) -> bool {
        self.mine
            .is_none_or(|(of, n)| of.get(record).copied().unwrap_or(0) == n)
    }

    fn plan(mut self, jobs: &[PushJob]) -> ShardPlan {
        let mut new_hashes: FastMap<ChangeHash, usize> = FastMap::default();
        // Per record: index into entries of its last entry, in first-touched order.
        let mut touched: FastMap<String, usize> = FastMap::default();
        let mut touched_order: Vec<String> = Vec::new();

        for (job_idx, job) in jobs.iter().enumerate() {
            let deadline = Instant::now() + self.max_push;
            // The first change of a push is always judged, so every push makes progress.
            let mut judged_any = false;
            // Changes whose dependencies are missing are retried after the rest of the push (a push
            // may list a change before its dependencies); what is still missing then is rejected.
            let mut pending: Vec<usize> = (0..job.changes.len())
                .filter(|&ci| match &job.changes[ci] {
                    Incoming::Change { record, .. } => self.is_mine(record),
                    Incoming::Refused { .. } => false,
                })
                .collect();
            let mut out: Vec<(usize, Planned)> = Vec::new();
            loop {
                let mut deferred = Vec::new();
                let mut progress = false;
                let mut k = 0;
                while k < pending.len() {
                    let ci = pending[k];
                    k += 1;
                    let Incoming::Change { record, change, .. } = &job.changes[ci] else {
                        continue;
                    };
                    let hash = change.hash();
                    let seq = self
                        .existing
                        .get(&hash.0)
                        .map(|s| SeqRef::Existing(*s))
                        .or_else(|| new_hashes.get(&hash).map(|i| SeqRef::New(*i)));
                    if let Some(seq) = seq {
                        out.push((ci, Planned::Accepted { hash, seq }));
                        continue;
                    }
                    if judged_any && Instant::now() >= deadline {
                        out.push((ci, out_of_time(hash)));
                        continue;
                    }
                    // A run is judged whole: only while the push has time left (a run of
                    // MAX_RUN changes takes about a millisecond).
                    let rest = if Instant::now() < deadline {
                        &pending[k - 1..]
                    } else {
                        &pending[k - 1..k]
                    };
                    let run = run_from(job, record, rest, |h| {
                        self.existing.contains_key(&h.0) || new_hashes.contains_key(h)
                    });
                    let Some(judged) = self.apply_run(&job.actor, job_idx, record, &run, deadline)
                    else {
                        deferred.push(ci);
                        continue;
                    };
                    judged_any = true;
                    // The run's changes judged together are taken off the pending list.
                    k += judged.len() - 1;
                    for ((ci, change, _), planned) in run.into_iter().zip(judged) {
                        if let Planned::Accepted {
                            seq: SeqRef::New(i),
                            ..
                        } = &planned
                        {
                            progress = true;
                            new_hashes.insert(change.hash(), *i);
                            if touched.insert(record.clone(), *i).is_none() {
                                touched_order.push(record.clone());
                            }
                        }
                        out.push((ci, planned));
                    }
                }
                if deferred.is_empty() || !progress {
                    let late = judged_any && Instant::now() >= deadline;
                    for ci in deferred {
                        let Incoming::Change { change, .. } = &job.changes[ci] else {
                            continue;
                        };
                        // Out of time, a dependency may have been one of the `busy` changes.
                        out.push((
                            ci,
                            if late {
                                out_of_time(change.hash())
                            } else {
                                tracing::info!(change = %change.hash(), "change rejected: dependencies missing");
                                Planned::Rejected {
                                    hash: change.hash().to_string(),
                                    refusal: Refusal::new(
                                        Reason::MissingDeps,
                                        "the change builds on changes the relay does not have",
                                    ),
                                }
                            },
                        ));
                    }
                    break;
                }
                pending = deferred;
            }
            self.results[job_idx] = out;
        }

        let mut records = Vec::with_capacity(touched_order.len());
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
            let view = match &w.state {
                Some(s) => Some(s.state().record.compact_json()),
                None => DocState::read(&id, &w.doc)
                    .ok()
                    .map(|s| s.state().record.compact_json()),
            };
            let paths = w.current_paths(self.areas);
            let keys_changed = !w.in_db || paths != w.stored_paths;
            let keys = if keys_changed {
                scope_keys(&paths)
            } else {
                Vec::new()
            };
            records.push(RecordWrite {
                id: id.clone(),
                doc: w.stored.clone(),
                last_entry,
                paths,
                keys,
                keys_changed,
                existed: w.in_db,
                view,
            });
        }
        let mut working = self.working;
        working.extend(self.cached);
        ShardPlan {
            entries: self.entries,
            records,
            results: self.results,
            working,
        }
    }

    /// Judges a run of changes to `record` (see [`run_from`]) and applies what passes to the working
    /// copy of the record: every change of the run, or only the first. `None`: a dependency of the
    /// first is missing (nothing was applied).
    ///
    /// A run that builds on the record's current heads is applied in one batch (Automerge applies a
    /// batch at a third of the cost per change) and each change judged on the document at its own
    /// heads, which is the state the change made, exactly as applying them one by one would show it.
    /// When any of them is refused, or the push's time runs out during the run, the batch is undone
    /// and the run judged one change at a time, so the answers are the same either way.
    fn apply_run(
        &mut self,
        actor: &Actor,
        job: usize,
        record: &str,
        run: &[(usize, &Change, Option<&str>)],
        deadline: Instant,
    ) -> Option<Vec<Planned>> {
        let (_, first, first_forms) = run[0];
        let areas = self.areas;
        let w = doc_for(&mut self.working, &mut self.cached, record, &mut self.rows);
        if !first
            .deps()
            .iter()
            .all(|d| w.doc.get_change_meta_by_hash(d).is_some())
        {
            return None;
        }
        if run.len() > 1 && !self.unbatched.contains(record) {
            let existed = !w.doc.get_heads().is_empty();
            let before = w.current_paths(areas);
            if let Some(paths) = judge_run(w, areas, actor, record, run, deadline) {
                let mut planned = Vec::with_capacity(run.len());
                let mut before = (existed, before);
                for ((_, change, _), after) in run.iter().zip(paths) {
                    let heads = [change.hash()];
                    planned.push(self.entry(job, record, change, &before, &after, &heads));
                    before = (true, after);
                }
                return Some(planned);
            }
            self.unbatched.insert(record.to_owned());
        }
        Some(vec![self.apply_one(actor, job, record, first, first_forms)])
    }

    /// Checks one change whose dependencies the working copy of its record has, and applies it.
    fn apply_one(
        &mut self,
        actor: &Actor,
        job: usize,
        record: &str,
        change: &Change,
        forms: Option<&str>,
    ) -> Planned {
        let hash = change.hash();
        let areas = self.areas;
        let w = doc_for(&mut self.working, &mut self.cached, record, &mut self.rows);
        let existed = !w.doc.get_heads().is_empty();
        let before = w.current_paths(areas);
        if let Err(refusal) = judge_and_apply(w, areas, actor, record, change, forms) {
            return Planned::Rejected {
                hash: hash.to_string(),
                refusal,
            };
        }
        w.append(change);
        let after = w.current_paths(areas);
        let heads = w.doc.get_heads();
        self.entry(job, record, change, &(existed, before), &after, &heads)
    }

    /// The log entry of an accepted change. `before`: whether the record existed before the change,
    /// and its area paths then; `after`: its area paths after the change; `heads`: the document's
    /// heads after the change (kept with a move).
    fn entry(
        &mut self,
        job: usize,
        record: &str,
        change: &Change,
        (existed, before): &(bool, Vec<String>),
        after: &[String],
        heads: &[ChangeHash],
    ) -> Planned {
        let hash = change.hash();
        let moved = *existed && before != after;
        let (kind, before_paths, heads) = if moved {
            (
                KIND_MOVE,
                Some(join_paths(before)),
                Some(heads.iter().flat_map(|h| h.0).collect::<Vec<u8>>()),
            )
        } else {
            (KIND_CHANGE, None, None)
        };
        let keys = if before == after {
            scope_keys(after)
        } else {
            let mut all = before.clone();
            all.extend_from_slice(after);
            scope_keys(&all)
        };
        let idx = self.entries.len();
        self.entries.push(NewEntry {
            hash: hash.0,
            record: record.to_owned(),
            bytes: change.raw_bytes().to_vec(),
            kind,
            job,
            before_paths,
            heads,
            keys,
        });
        Planned::Accepted {
            hash,
            seq: SeqRef::New(idx),
        }
    }
}

/// Changes judged as one run at most.
const MAX_RUN: usize = 64;

/// The run that starts with the change `pending[0]` of `job`, a change to `first_record`: it and the
/// changes that follow it in `pending` while each is to the same record and builds on the one before
/// alone (the shape of a device's consecutive edits of a record), and is not `known` (in the log or
/// planned already).
fn run_from<'j>(
    job: &'j PushJob,
    first_record: &str,
    pending: &[usize],
    known: impl Fn(&ChangeHash) -> bool,
) -> Vec<(usize, &'j Change, Option<&'j str>)> {
    let mut run: Vec<(usize, &Change, Option<&str>)> = Vec::new();
    for &ci in pending.iter().take(MAX_RUN) {
        let Incoming::Change {
            record,
            change,
            forms,
        } = &job.changes[ci]
        else {
            break;
        };
        if let Some(prev) = run.last() {
            if record != first_record || change.deps() != [prev.1.hash()] || known(&change.hash()) {
                break;
            }
        }
        run.push((ci, change, forms.as_deref()));
    }
    run
}

/// Judges a run of two or more changes (see [`Shard::apply_run`]) applied in one batch. `Some`: every
/// change passed, the run is applied to `w` (document, stored bytes, record state and area paths)
/// and these are the record's area paths after each change; `None`: `w` is as it was, the run must be judged change
/// by change. Each change read at its heads costs a walk of the record's history per read, as applying
/// it alone does (a run is still about twice as fast at any history length), so a run stops at
/// `deadline` like a push judged change by change.
fn judge_run(
    w: &mut CachedDoc,
    areas: &AreaMap,
    actor: &Actor,
    record: &str,
    run: &[(usize, &Change, Option<&str>)],
    deadline: Instant,
) -> Option<Vec<Vec<String>>> {
    let (_, first, _) = run[0];
    let mut deps = first.deps().to_vec();
    deps.sort_unstable();
    if deps != w.doc.get_heads() || check_counter(&w.doc, first).is_err() {
        return None;
    }
    // Each later change builds on the one before alone: its counter follows that one's.
    if run
        .windows(2)
        .any(|p| p[1].1.start_op().get() != p[0].1.max_op() + 1)
    {
        return None;
    }
    let current = w.take_state(record).ok()?;
    let last = run[run.len() - 1].1.hash();
    let applied = w
        .doc
        .apply_changes(run.iter().map(|(_, c, _)| (*c).clone()))
        .is_ok()
        && w.doc.get_heads() == [last];
    let mut states: Vec<DocState> = Vec::with_capacity(run.len());
    if applied {
        for &(_, change, forms) in run {
            if !states.is_empty() && Instant::now() >= deadline {
                break;
            }
            let heads = [change.hash()];
            let judge = Judge {
                areas,
                actor,
                record,
                change,
                note_forms: forms,
                current: states.last().or(current.as_ref()),
            };
            match judge.applied(&AtHeads::new(&w.doc, &heads)) {
                Ok(state) => states.push(state),
                Err(_) => break,
            }
        }
    }
    if states.len() < run.len() {
        w.reload();
        w.state = current;
        return None;
    }
    for (_, change, _) in run {
        w.append(change);
    }
    let paths: Vec<Vec<String>> = states.iter().map(|s| areas.paths_of_state(s)).collect();
    w.state = states.pop();
    w.paths = paths.last().map(|p| (areas.version, p.clone()));
    Some(paths)
}

/// The answer for a change the push's time budget did not reach.
fn out_of_time(hash: ChangeHash) -> Planned {
    Planned::Rejected {
        hash: hash.to_string(),
        refusal: busy("the relay spent this push's time budget before this change"),
    }
}

/// Judges `change` and, when it passes, leaves it applied to `w.doc` with `w.state` its new record
/// state. When it is refused, `w` is as it was.
fn judge_and_apply(
    w: &mut CachedDoc,
    areas: &AreaMap,
    actor: &Actor,
    record: &str,
    change: &Change,
    forms: Option<&str>,
) -> Result<(), Refusal> {
    let heads = w.doc.get_heads();
    if !heads.is_empty() && change.deps().is_empty() {
        return Err(Refusal::new(
            Reason::BadRecord,
            "the record exists: a change without dependencies would make it anew",
        ));
    }
    check_counter(&w.doc, change)?;
    let current = w.take_state(record)?;
    let judge = Judge {
        areas,
        actor,
        record,
        change,
        note_forms: forms,
        current: current.as_ref(),
    };
    let mut deps = change.deps().to_vec();
    deps.sort_unstable();
    let verdict = if deps == heads {
        // The common case: the author saw the record as the relay has it now.
        judge.at_heads(&mut w.doc)
    } else {
        judge.on_fork(&mut w.doc)
    };
    match verdict {
        Ok(state) => {
            w.state = Some(state);
            w.paths = None;
            Ok(())
        }
        Err((refusal, applied)) => {
            if applied {
                w.reload();
            }
            // The document is as it was, so its state is too.
            w.state = current;
            Err(refusal)
        }
    }
}

/// A refusal, and whether the change was already applied to the working document.
type Judged = Result<DocState, (Refusal, bool)>;

/// One change of `actor` to `record`, and the record's state as the relay has it (`None`: new).
struct Judge<'a> {
    areas: &'a AreaMap,
    actor: &'a Actor,
    record: &'a str,
    change: &'a Change,
    /// The forms the change's note names (see [`Judge::forms`]).
    note_forms: Option<&'a str>,
    current: Option<&'a DocState>,
}

impl Judge<'_> {
    /// The city forms this change's attribute values are checked by: the relay's, when the change
    /// names them as the forms its author's device had (see `ChangeNote::forms`); none when the
    /// device judged it by older forms, or had none, while working offline.
    fn forms(&self) -> &[gridwork_protocol::Form] {
        let all = &self.areas.forms;
        if all.is_empty() {
            return all;
        }
        let Some(tag) = self.note_forms else {
            return &[];
        };
        if tag == gridwork_protocol::forms_tag(&self.areas.forms_version_for(self.actor)) {
            all
        } else {
            &[]
        }
    }

    /// The change builds on the current document `doc`: `before` is its state, `after` the state once
    /// the change is applied, which is also what lands.
    fn at_heads(&self, doc: &mut Automerge) -> Judged {
        apply(doc, self.change).map_err(|r| (r, true))?;
        self.applied(doc).map_err(|r| (r, true))
    }

    /// The change built on the state `current` and is applied in `doc` (the document, or the
    /// document at the change's heads): judges the state it made, which is also what lands.
    fn applied<D: ReadDoc>(&self, doc: &D) -> Result<DocState, Refusal> {
        // The state after: only the root keys the change touched are read again.
        let after = match self.current {
            Some(current) => current.after(doc, self.change),
            None => DocState::read(self.record, doc),
        }
        .map_err(malformed)?;
        let before = self.current.map(DocState::state);
        rules::authorize(
            self.actor,
            &self.areas.paths,
            self.forms(),
            before,
            after.state(),
        )?;
        self.check_landing(after.state())?;
        Ok(after)
    }

    /// The change builds on an earlier state (its author had not seen some changes the relay has):
    /// it is judged on the document at its dependencies, then merged into the current document `doc`,
    /// where the caller must still see the record.
    fn on_fork(&self, doc: &mut Automerge) -> Judged {
        let (not_applied, applied) = (|r| (r, false), |r| (r, true));
        let mut fork = doc.fork_at(self.change.deps()).map_err(|_| {
            not_applied(Refusal::new(
                Reason::MissingDeps,
                "the change's dependencies are unknown",
            ))
        })?;
        let before = state_of(self.record, &fork).map_err(not_applied)?;
        apply(&mut fork, self.change).map_err(not_applied)?;
        let after = before
            .after(&fork, self.change)
            .map_err(malformed)
            .map_err(not_applied)?;
        rules::authorize(
            self.actor,
            &self.areas.paths,
            self.forms(),
            Some(before.state()),
            after.state(),
        )
        .map_err(not_applied)?;
        drop(fork);
        apply(doc, self.change).map_err(applied)?;
        // A merge may touch what the change does not (concurrent values meet): read it whole.
        let merged = state_of(self.record, doc).map_err(applied)?;
        self.check_landing(merged.state()).map_err(applied)?;
        Ok(merged)
    }

    /// What actually lands: the caller must see the record as the relay has it before the change
    /// (for existing records) and after the merge.
    fn check_landing(&self, merged: &RecordState) -> Result<(), Refusal> {
        let (actor, areas) = (self.actor, &self.areas.paths);
        if let Some(c) = self.current.map(DocState::state) {
            if !actor.sees(areas, &c.record) {
                return Err(Refusal::new(
                    Reason::OutOfScope,
                    format!("the record's area {} is outside your scope", c.record.area),
                ));
            }
        }
        if !actor.sees(areas, &merged.record) {
            return Err(Refusal::new(
                Reason::OutOfScope,
                "the change takes the record out of your scope",
            ));
        }
        Ok(())
    }
}

/// Automerge gives an honest change the first operation counter after the highest of its
/// dependencies: a change that starts elsewhere was forged, and one that starts far beyond would
/// make every later change of the record start there.
fn check_counter(doc: &Automerge, change: &Change) -> Result<(), Refusal> {
    let after = change
        .deps()
        .iter()
        .filter_map(|d| doc.get_change_meta_by_hash(d))
        .map(|m| m.max_op)
        .max()
        .unwrap_or(0);
    if change.start_op().get() != after + 1 {
        return Err(Refusal::new(
            Reason::Malformed,
            "the change's operation counter does not follow its dependencies",
        ));
    }
    Ok(())
}

fn apply(doc: &mut Automerge, change: &Change) -> Result<(), Refusal> {
    doc.apply_changes([change.clone()]).map_err(|_| {
        Refusal::new(
            Reason::Malformed,
            "the change does not apply to the record's document",
        )
    })
}

fn state_of<D: automerge::ReadDoc>(record: &str, doc: &D) -> Result<DocState, Refusal> {
    DocState::read(record, doc).map_err(malformed)
}

fn malformed(e: gridwork_protocol::doc::ShapeError) -> Refusal {
    Refusal::new(Reason::Malformed, e.to_string())
}

/// The working copy of a record: loaded row, else cached document, else a new empty one.
fn doc_for<'a>(
    working: &'a mut FastMap<String, CachedDoc>,
    cache: &mut FastMap<String, CachedDoc>,
    record: &str,
    rows: &mut FastMap<String, RecordRow>,
) -> &'a mut CachedDoc {
    working.entry(record.to_owned()).or_insert_with(|| {
        if let Some(row) = rows.remove(record) {
            CachedDoc::from_row(row)
        } else {
            cache.remove(record).unwrap_or_else(CachedDoc::empty)
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

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ReadDoc, ROOT};

    fn put(doc: &mut Automerge, key: &str, value: &str) -> Change {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().clone()
    }

    /// The invariant [`check_counter`] relies on holds for changes made on one device, on two devices
    /// concurrently, and after merges (including a device's change that depends on its own earlier
    /// change and on heads it merged from elsewhere).
    #[test]
    fn honest_changes_start_after_their_dependencies() {
        let mut a = Automerge::new().with_actor(ActorId::from([1u8; 16]));
        let mut all = vec![put(&mut a, "kind", "person"), put(&mut a, "x", "1")];
        let mut b = a.fork().with_actor(ActorId::from([2u8; 16]));
        // Concurrent runs of different lengths, so the two branches' counters differ.
        for i in 0..5 {
            all.push(put(&mut a, "a", &i.to_string()));
        }
        all.push(put(&mut b, "b", "1"));
        b.merge(&mut a).unwrap();
        all.push(put(&mut b, "after-merge", "1"));
        all.push(put(&mut a, "a", "concurrent with the merge"));
        let mut c = Automerge::new().with_actor(ActorId::from([3u8; 16]));
        c.merge(&mut a).unwrap();
        c.merge(&mut b).unwrap();
        all.push(put(&mut c, "c", "1"));
        a.merge(&mut c).unwrap();
        all.push(put(&mut a, "a", "last"));
        let mut relay = Automerge::new();
        for change in &all {
            check_counter(&relay, change).unwrap_or_else(|r| panic!("{r}"));
            relay.apply_changes([change.clone()]).unwrap();
        }
        assert_eq!(relay.get_heads(), a.get_heads());
        assert_eq!(
            relay.get(ROOT, "a").unwrap().unwrap().0.to_string(),
            "\"last\""
        );
    }

    #[test]
    fn a_forged_counter_is_refused() {
        let mut a = Automerge::new();
        let first = put(&mut a, "kind", "person");
        let mut relay = Automerge::new();
        relay.apply_changes([first]).unwrap();
        let honest = put(&mut a, "x", "1");
        check_counter(&relay, &honest).unwrap();
        // The same change re-encoded with its counter moved: ahead (which would make every later
        // change of the record start there) and back onto its dependency's operations.
        for start in [1_000_000u64, 1] {
            let mut forged = honest.decode();
            forged.start_op = std::num::NonZeroU64::new(start).unwrap();
            let forged = Change::from(forged);
            assert_eq!(forged.deps(), honest.deps());
            assert_eq!(
                check_counter(&relay, &forged).unwrap_err().reason,
                Reason::Malformed
            );
        }
    }
}
