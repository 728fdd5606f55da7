//! The push writer, one for both backends.
//!
//! Every push goes through one writer per relay process: it groups the pushes queued while the last
//! batch was committing and writes them in one transaction (group commit: one fsync, one round of
//! lookups, serves many devices), plans each batch with the [`Engine`], retries a failed batch one
//! push at a time so that one bad push cannot fail its neighbours, and keeps the engine's document
//! cache in step with what committed. A backend only supplies the SQL: [`WriteSql`].
//!
//! The writer is a pipeline of two stages on two connections: it judges the next batches while
//! its committer writes the last ones. The committer takes the write lock, checks that what each
//! plan was read from still holds ([`Seen`]: the areas, and where other relays write the same
//! database every record and change the plan read), writes every plan judged meanwhile with one
//! statement per table and commits. A batch is judged while a transaction commits only when it
//! shares no record and no change hash with what is not committed yet (then nothing its plan reads
//! is written by that, and their writes cannot collide), and only once enough changes are queued to
//! be worth a round of lookups (`Limits::pipeline_min_changes`); otherwise it waits for the
//! commit. A plan that no longer holds, and a transaction that failed, are written again the old
//! way: batch by batch, planned under the lock on the committer's connection, push by push if a
//! batch still fails. So is a lone small batch when nothing is being committed (a device's sync on
//! a quiet relay), on the writer's own thread: handing it over would cost more than it could gain.
//! Seqs are taken under the lock at write time, so the log's order is that of the commits whatever
//! the order of planning.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use super::sql::{in_transaction, Transact};
use super::{now_secs, parse_definitions, AreaRow, Defined};
use crate::engine::{
    AreaMap, Engine, FastMap, FastSet, Plan, PushJob, PushResult, RecordRow, Wants,
};
use crate::error::{Error, Result};
use crate::prof::{self, Span};
use gridwork_protocol::scope::join_paths;

/// Most changes grouped into one write transaction.
pub(crate) const BATCH_CHANGES: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<PushResult>>>;

pub(crate) enum WriterMsg {
    Push(PushJob, Reply),
    /// A device's last sync time, coalesced into the writer's next transaction (so reads never write
    /// and never contend with the writer).
    Touch(String, i64),
}

/// A change entry as stored in the log.
pub(crate) struct ChangeRow<'a> {
    pub seq: i64,
    pub hash: &'a [u8],
    pub record: &'a str,
    pub bytes: &'a [u8],
    pub kind: i16,
    pub before_paths: Option<&'a str>,
    pub heads: Option<&'a [u8]>,
    pub device: &'a str,
}

/// A record's new state.
pub(crate) struct RecordRowWrite<'a> {
    pub id: &'a str,
    pub doc: &'a [u8],
    pub version: i64,
    pub paths: String,
    pub view: Option<&'a str>,
}

/// The SQL of the push path: primitives without decisions, called inside a transaction.
pub(crate) trait WriteSql: Transact {
    /// Whether other processes write the same database (PostgreSQL: several relays). A batch is
    /// planned before it takes the lock of [`WriteSql::first_seq`], so that relays judge their
    /// batches at the same time; where the database is shared, what the plan was made from is then
    /// read again under the lock, and the batch planned again if another relay changed it.
    const SHARED: bool;
    /// The seq of the batch's first entry. Where several relays share the database this also takes
    /// the lock that orders their batches, held to commit.
    fn first_seq(&mut self) -> impl Future<Output = Result<i64>> + Send;
    fn areas_version(&mut self) -> impl Future<Output = Result<i64>> + Send;
    fn load_areas(&mut self) -> impl Future<Output = Result<Vec<AreaRow>>> + Send;
    /// Every schedule's or form's definition (JSON).
    fn definitions(&mut self, what: Defined) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Seqs of the changes among `hashes` that are already in the log.
    fn change_seqs(
        &mut self,
        hashes: &[[u8; 32]],
    ) -> impl Future<Output = Result<FastMap<[u8; 32], i64>>> + Send;
    /// Stored versions of the records among `ids` that exist.
    fn record_versions(
        &mut self,
        ids: &[String],
    ) -> impl Future<Output = Result<FastMap<String, i64>>> + Send;
    /// Stored documents of the records among `ids` that exist.
    fn record_rows(
        &mut self,
        ids: &[String],
    ) -> impl Future<Output = Result<FastMap<String, RecordRow>>> + Send;
    /// Before the planner's reads of one batch: one consistent state where the backend gives one at
    /// no cost (SQLite's read transaction).
    fn begin_plan(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// After the planner's reads: ends the read, gives a pooled connection back.
    fn end_plan(&mut self) -> impl Future<Output = ()> + Send;

    /// Appends log entries with consecutive seqs from `first_seq` (moving the log's head past them
    /// where the backend keeps one).
    fn insert_changes(&mut self, rows: &[ChangeRow<'_>])
        -> impl Future<Output = Result<()>> + Send;
    /// Scope index of the log: runs `(key, first, last)` of seqs, each seq from `first` to `last`
    /// in scope under `key`; sorted, the runs of one key disjoint (see [`entry_runs`]).
    fn insert_entry_runs(
        &mut self,
        rows: &[EntryRun<'_>],
    ) -> impl Future<Output = Result<()>> + Send;
    fn upsert_records(
        &mut self,
        rows: &[RecordRowWrite<'_>],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Drops the scope index rows of `records` (before their new keys are inserted).
    fn clear_scope(&mut self, records: &[&str]) -> impl Future<Output = Result<()>> + Send;
    /// Scope index of the records: `(key, record)`.
    fn insert_scope(&mut self, rows: &[(&str, &str)]) -> impl Future<Output = Result<()>> + Send;
    /// Last sync times of devices.
    fn touch_devices(&mut self, rows: &[(&str, i64)]) -> impl Future<Output = Result<()>> + Send;
}

/// The handle of a running writer.
pub(crate) struct Writer {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<WriterMsg>>>,
    done: std::sync::Mutex<Option<Done>>,
}

enum Done {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Writer {
    /// A writer on its own thread and its committer on another, for a backend whose SQL blocks
    /// (SQLite). `planner` only reads; `committer` writes.
    pub fn on_thread<S: WriteSql + 'static>(
        name: &str,
        planner: S,
        committer: S,
        engine: Engine,
        pipeline_min: usize,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let commits = Exec::thread(&format!("{name}-commit"))?;
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                rt.block_on(run(planner, committer, commits, rx, engine, pipeline_min))
            })?;
        Ok(Writer::new(tx, Done::Thread(handle)))
    }

    /// A writer and its committer as tasks of the relay's runtime, for an async backend
    /// (PostgreSQL).
    pub fn on_task<S: WriteSql + 'static>(
        planner: S,
        committer: S,
        engine: Engine,
        pipeline_min: usize,
    ) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(run(
            planner,
            committer,
            Exec::Task,
            rx,
            engine,
            pipeline_min,
        ));
        Writer::new(tx, Done::Task(handle))
    }

    fn new(tx: mpsc::UnboundedSender<WriterMsg>, done: Done) -> Writer {
        Writer {
            tx: std::sync::Mutex::new(Some(tx)),
            done: std::sync::Mutex::new(Some(done)),
        }
    }

    /// Queues a push; the answer comes once the batch holding it has committed.
    pub async fn push(&self, job: PushJob) -> Result<Vec<PushResult>> {
        let (reply, rx) = oneshot::channel();
        self.send(WriterMsg::Push(job, reply))?;
        rx.await
            .map_err(|_| Error::Unavailable("writer stopped".into()))?
    }

    /// Records a device's last sync time with the next batch (dropped when shutting down).
    pub fn touch(&self, device: &str, now: i64) {
        let _ = self.send(WriterMsg::Touch(device.to_owned(), now));
    }

    fn send(&self, msg: WriterMsg) -> Result<()> {
        let guard = self
            .tx
            .lock()
            .map_err(|_| Error::Unavailable("writer poisoned".into()))?;
        guard
            .as_ref()
            .ok_or_else(|| Error::Unavailable("shutting down".into()))?
            .send(msg)
            .map_err(|_| Error::Unavailable("writer stopped".into()))
    }

    /// Stops taking pushes and waits until the queued ones are written.
    pub async fn close(&self) {
        match self.stop() {
            Some(Done::Thread(h)) => {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            Some(Done::Task(h)) => {
                let _ = h.await;
            }
            None => {}
        }
    }

    /// [`Writer::close`] from outside the runtime (a store being dropped); a task-writer is left
    /// to finish on its own.
    pub fn close_blocking(&self) {
        if let Some(Done::Thread(h)) = self.stop() {
            let _ = h.join();
        }
    }

    fn stop(&self) -> Option<Done> {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        self.done.lock().ok()?.take()
    }
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the committer runs: its own thread (SQLite's calls block), or a task of the runtime.
enum Exec {
    Thread {
        jobs: Option<std::sync::mpsc::Sender<Job>>,
        handle: Option<std::thread::JoinHandle<()>>,
    },
    Task,
}

impl Exec {
    fn thread(name: &str) -> Result<Exec> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    rt.block_on(job);
                }
            })?;
        Ok(Exec::Thread {
            jobs: Some(tx),
            handle: Some(handle),
        })
    }

    fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        match self {
            Exec::Thread { jobs, .. } => jobs
                .as_ref()
                .and_then(|j| j.send(Box::pin(job)).ok())
                .ok_or_else(|| Error::Unavailable("committer stopped".into())),
            Exec::Task => {
                tokio::spawn(job);
                Ok(())
            }
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Exec::Thread { jobs, handle } = self {
            jobs.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// A batch of pushes.
struct Batch {
    jobs: Vec<PushJob>,
    replies: Vec<Reply>,
}

/// A batch judged and waiting for the committer.
struct Planned {
    plan: Plan,
    seen: Seen,
    batch: Batch,
    touched: Touched,
    started: std::time::Instant,
}

/// The records and change hashes of a batch not yet committed.
struct Touched {
    records: FastSet<String>,
    hashes: FastSet<[u8; 32]>,
}

impl Touched {
    fn new(wants: &Wants) -> Touched {
        Touched {
            records: wants.records.iter().cloned().collect(),
            hashes: wants.hashes.iter().copied().collect(),
        }
    }

    /// Whether a batch touching `wants` reads anything this one writes.
    fn overlaps(&self, wants: &Wants) -> bool {
        wants.records.iter().any(|r| self.records.contains(r))
            || wants.hashes.iter().any(|h| self.hashes.contains(h))
    }
}

/// What the committer gives back: its connection, and each plan with its jobs.
struct Written<S> {
    sql: S,
    plans: Vec<(Plan, Vec<PushJob>)>,
    /// The first seq of each committed plan; `None` when what one of them was made from no longer
    /// held (then none was written).
    outcome: Result<Option<Vec<i64>>>,
}

/// The batches being committed, in one transaction.
struct InFlight<S> {
    replies: Vec<Vec<Reply>>,
    touched: Vec<Touched>,
    started: Vec<std::time::Instant>,
    done: oneshot::Receiver<Written<S>>,
}

async fn run<S: WriteSql + 'static>(
    mut planner: S,
    committer: S,
    exec: Exec,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    mut engine: Engine,
    pipeline_min: usize,
) {
    // The committer's connection while nothing is being committed.
    let mut idle = Some(committer);
    let mut in_flight: Option<InFlight<S>> = None;
    // Judged while the last transaction commits, all written in the next one.
    let mut ready: Vec<Planned> = Vec::new();
    let mut queue: VecDeque<(PushJob, Reply)> = VecDeque::new();
    let mut touches: HashMap<String, i64> = HashMap::new();
    loop {
        if in_flight.is_none() && !ready.is_empty() {
            let Some(sql) = idle.take() else { break };
            // Devices' last sync times go with the pushes (under a steady stream of pushes the
            // queue is never empty, and a transaction of their own would cost a commit).
            match commit(
                &exec,
                sql,
                std::mem::take(&mut ready),
                touches.drain().collect(),
            ) {
                Ok(f) => in_flight = Some(f),
                Err(e) => {
                    tracing::error!(error = %e, "the committer stopped");
                    break;
                }
            }
        }
        let ready_changes: usize = ready
            .iter()
            .flat_map(|p| &p.batch.jobs)
            .map(|j| j.changes.len())
            .sum();
        let queued_changes: usize = queue.iter().map(|(j, _)| j.changes.len()).sum();
        // While a transaction commits, the next batch is judged once it is worth a round of
        // lookups (a few pushes of a device each trickling in would each pay for one).
        let wait = ready_changes >= BATCH_CHANGES
            || (in_flight.is_some() && queued_changes < pipeline_min);
        if queue.is_empty() || wait {
            let msg = match (in_flight.as_mut(), idle.as_mut()) {
                (None, Some(sql)) if !touches.is_empty() => {
                    write_touches(sql, &mut touches).await;
                    continue;
                }
                (None, _) => rx.recv().await,
                (Some(f), _) => tokio::select! {
                    biased;
                    written = &mut f.done => {
                        match in_flight.take().map(|f| (f, written)) {
                            Some((f, Ok(w))) => idle = Some(finish(&mut engine, f, w).await),
                            _ => break,
                        }
                        continue;
                    }
                    msg = rx.recv() => msg,
                },
            };
            match msg {
                Some(m) => take(m, &mut queue, &mut touches),
                None => break,
            }
            if wait {
                continue;
            }
        }
        // Group commit: take whatever queued up meanwhile.
        while let Ok(m) = rx.try_recv() {
            take(m, &mut queue, &mut touches);
        }
        let Some(batch) = next_batch(
            &mut queue,
            in_flight.is_none() && ready.is_empty(),
            pipeline_min,
        ) else {
            continue;
        };
        // Devices that push get their sync time in the push transaction.
        for j in &batch.jobs {
            touches.remove(&j.device_id);
        }
        let changes: usize = batch.jobs.iter().map(|j| j.changes.len()).sum();
        if in_flight.is_none() && queue.is_empty() && changes < pipeline_min.saturating_mul(2) {
            // A lone small batch (a device's sync, a few devices' at once): written on this thread,
            // judged under the lock; handing it to the committer and back would cost more than the
            // little that arrives while it commits.
            if let Some(sql) = idle.as_mut() {
                run_batch(sql, &mut engine, batch.jobs, batch.replies).await;
                continue;
            }
        }
        let wants = Engine::wants(&batch.jobs);
        let overlaps = in_flight
            .iter()
            .flat_map(|f| &f.touched)
            .chain(ready.iter().map(|p| &p.touched))
            .any(|t| t.overlaps(&wants));
        if overlaps {
            // The batch reads what is not committed yet: commit that first.
            if !flush(&exec, &mut engine, &mut idle, &mut in_flight, &mut ready).await {
                break;
            }
        }
        // Judged while the last transaction commits; with nothing being committed, on the
        // committer's connection, whose page cache holds what the last transactions wrote (SQLite
        // drops a connection's cache whenever another one commits).
        let started = std::time::Instant::now();
        let touched = Touched::new(&wants);
        let planned = match idle.as_mut() {
            Some(sql) if in_flight.is_none() => {
                plan_reading(sql, &mut engine, &batch.jobs, wants).await
            }
            _ => plan_reading(&mut planner, &mut engine, &batch.jobs, wants).await,
        };
        match planned {
            Ok((plan, seen)) => ready.push(Planned {
                plan,
                seen,
                batch,
                touched,
                started,
            }),
            Err(e) => {
                // The planner's reads failed: write the batch the old way.
                tracing::warn!(error = %e, "planning failed, writing the batch under the lock");
                if !flush(&exec, &mut engine, &mut idle, &mut in_flight, &mut ready).await {
                    break;
                }
                if let Some(sql) = idle.as_mut() {
                    run_batch(sql, &mut engine, batch.jobs, batch.replies).await;
                }
            }
        }
    }
    flush(&exec, &mut engine, &mut idle, &mut in_flight, &mut ready).await;
    if let Some(sql) = idle.as_mut() {
        write_touches(sql, &mut touches).await;
    }
    drop(exec);
    tracing::debug!("writer stopped");
}

fn take(
    msg: WriterMsg,
    queue: &mut VecDeque<(PushJob, Reply)>,
    touches: &mut HashMap<String, i64>,
) {
    match msg {
        WriterMsg::Push(j, r) => queue.push_back((j, r)),
        WriterMsg::Touch(d, t) => {
            touches.insert(d, t);
        }
    }
}

/// The next batch from the queue: up to [`BATCH_CHANGES`] changes; when nothing is being committed,
/// half of what is queued if that half is worth judging ahead (`pipeline_min`), so that it is
/// judged while the first half commits.
fn next_batch(
    queue: &mut VecDeque<(PushJob, Reply)>,
    committer_idle: bool,
    pipeline_min: usize,
) -> Option<Batch> {
    let queued: usize = queue.iter().map(|(j, _)| j.changes.len()).sum();
    let limit = if committer_idle && queue.len() > 1 && queued / 2 >= pipeline_min {
        queued.div_ceil(2).min(BATCH_CHANGES)
    } else {
        BATCH_CHANGES
    };
    let mut batch = Batch {
        jobs: Vec::new(),
        replies: Vec::new(),
    };
    let mut n = 0;
    while n < limit || batch.jobs.is_empty() {
        let Some((j, r)) = queue.pop_front() else {
            break;
        };
        n += j.changes.len();
        batch.jobs.push(j);
        batch.replies.push(r);
    }
    (!batch.jobs.is_empty()).then_some(batch)
}

async fn write_touches<S: WriteSql>(sql: &mut S, touches: &mut HashMap<String, i64>) {
    if touches.is_empty() {
        return;
    }
    let rows: Vec<(&str, i64)> = touches.iter().map(|(d, t)| (d.as_str(), *t)).collect();
    if let Err(e) = in_transaction(sql, async |sql: &mut S| sql.touch_devices(&rows).await).await {
        tracing::warn!(error = %e, "could not record last sync times");
    }
    touches.clear();
}

/// Reads and judges a batch outside the write lock.
async fn plan_reading<S: WriteSql>(
    sql: &mut S,
    engine: &mut Engine,
    jobs: &[PushJob],
    wants: Wants,
) -> Result<(Plan, Seen)> {
    sql.begin_plan().await?;
    let planned = plan_batch(sql, engine, jobs, wants).await;
    sql.end_plan().await;
    planned
}

/// Hands judged batches to the committer, to be written in one transaction.
fn commit<S: WriteSql + 'static>(
    exec: &Exec,
    mut sql: S,
    ready: Vec<Planned>,
    touches: Vec<(String, i64)>,
) -> Result<InFlight<S>> {
    let (tx, done) = oneshot::channel();
    let mut replies = Vec::with_capacity(ready.len());
    let mut touched = Vec::with_capacity(ready.len());
    let mut started = Vec::with_capacity(ready.len());
    let mut seen = Vec::with_capacity(ready.len());
    let mut plans = Vec::with_capacity(ready.len());
    for p in ready {
        replies.push(p.batch.replies);
        touched.push(p.touched);
        started.push(p.started);
        seen.push(p.seen);
        plans.push((p.plan, p.batch.jobs));
    }
    exec.spawn(async move {
        let outcome = in_transaction(&mut sql, async |sql: &mut S| {
            let mut next_seq = sql.first_seq().await?;
            if !Seen::all_current(&seen, sql).await? {
                return Ok(None);
            }
            let mut firsts = Vec::with_capacity(plans.len());
            for (plan, _) in &plans {
                firsts.push(next_seq);
                next_seq += plan.entries.len() as i64;
            }
            let writes: Vec<(&Plan, &[PushJob], i64)> = plans
                .iter()
                .zip(&firsts)
                .map(|((plan, jobs), first)| (plan, jobs.as_slice(), *first))
                .collect();
            write_plans(sql, &writes, &touches).await?;
            Ok(Some(firsts))
        })
        .await;
        let _ = tx.send(Written {
            sql,
            plans,
            outcome,
        });
    })?;
    Ok(InFlight {
        replies,
        touched,
        started,
        done,
    })
}

/// Commits everything judged: waits for the transaction in flight, then writes the batches judged
/// meanwhile. Afterwards `idle` holds the committer's connection; `false`: the committer is gone.
async fn flush<S: WriteSql + 'static>(
    exec: &Exec,
    engine: &mut Engine,
    idle: &mut Option<S>,
    in_flight: &mut Option<InFlight<S>>,
    ready: &mut Vec<Planned>,
) -> bool {
    if let Some(f) = in_flight.take() {
        *idle = land(engine, f).await;
    }
    if !ready.is_empty() {
        let Some(sql) = idle.take() else {
            return false;
        };
        match commit(exec, sql, std::mem::take(ready), Vec::new()) {
            Ok(f) => *idle = land(engine, f).await,
            Err(e) => tracing::error!(error = %e, "the committer stopped"),
        }
    }
    idle.is_some()
}

/// Waits for the transaction in flight and finishes it; gives the committer's connection back
/// (`None`: the committer is gone).
async fn land<S: WriteSql>(engine: &mut Engine, mut f: InFlight<S>) -> Option<S> {
    match (&mut f.done).await {
        Ok(w) => Some(finish(engine, f, w).await),
        Err(_) => {
            for reply in f.replies.into_iter().flatten() {
                let _ = reply.send(Err(Error::Unavailable("writer stopped".into())));
            }
            None
        }
    }
}

/// Answers the committed batches and caches their documents; writes again the old way, batch by
/// batch, those of a transaction that did not commit.
async fn finish<S: WriteSql>(engine: &mut Engine, f: InFlight<S>, w: Written<S>) -> S {
    let Written {
        mut sql,
        plans,
        outcome,
    } = w;
    let batches = plans.into_iter().zip(f.replies).zip(f.started);
    match outcome {
        Ok(Some(firsts)) => {
            for ((((mut plan, jobs), replies), started), first_seq) in batches.zip(firsts) {
                engine.committed(&mut plan, first_seq);
                batch_done(&jobs, &plan, started);
                for (reply, res) in replies.into_iter().zip(plan.results(first_seq)) {
                    let _ = reply.send(Ok(res));
                }
            }
        }
        other => {
            match other {
                Err(e) => {
                    tracing::warn!(error = %e, "batch failed, writing it again under the lock")
                }
                // Another relay, or an administrator's change of the areas, wrote what a plan was
                // made from.
                _ => tracing::debug!("the batch's records changed before the lock: planning again"),
            }
            for (((mut plan, jobs), replies), _) in batches {
                engine.aborted(&mut plan);
                run_batch(&mut sql, engine, jobs, replies).await;
            }
        }
    }
    sql
}

fn batch_done(jobs: &[PushJob], plan: &Plan, started: std::time::Instant) {
    let total: usize = jobs.iter().map(|j| j.changes.len()).sum();
    prof::batch(total);
    tracing::debug!(
        pushes = jobs.len(),
        changes = total,
        new_entries = plan.entries.len(),
        ms = started.elapsed().as_millis() as u64,
        "push batch committed"
    );
}

/// Writes a batch the old way (planned and written under the lock), and if that fails, push by
/// push so that one bad push cannot fail its neighbours.
async fn run_batch<S: WriteSql>(
    sql: &mut S,
    engine: &mut Engine,
    jobs: Vec<PushJob>,
    replies: Vec<Reply>,
) {
    match write_batch(sql, engine, &jobs).await {
        Ok(results) => {
            for (reply, res) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(res));
            }
        }
        Err(e) if jobs.len() > 1 => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batch failed, retrying pushes one by one");
            for (job, reply) in jobs.into_iter().zip(replies) {
                let res = write_batch(sql, engine, std::slice::from_ref(&job)).await;
                let _ = reply.send(
                    res.map(|mut r| r.pop().unwrap_or_default())
                        .map_err(|e| Error::Unavailable(e.to_string())),
                );
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(e.to_string())));
            }
        }
    }
}

/// Plans and writes one batch in one transaction, planned under the lock where the database is
/// shared. The engine's working documents become its cache only once the transaction has committed.
async fn write_batch<S: WriteSql>(
    sql: &mut S,
    engine: &mut Engine,
    jobs: &[PushJob],
) -> Result<Vec<Vec<PushResult>>> {
    let started = std::time::Instant::now();
    // When the plan was made, the lock taken (the first seq read) and the rows written, for the
    // debug log of a committed batch: where a slow batch waited.
    let mut marks = [started; 3];
    let mut planned: Option<Plan> = None;
    let written = in_transaction(sql, async |sql: &mut S| {
        let (plan, seen) = plan_batch(sql, engine, jobs, Engine::wants(jobs)).await?;
        let plan = planned.insert(plan);
        marks[0] = std::time::Instant::now();
        let first_seq = sql.first_seq().await?;
        marks[1] = std::time::Instant::now();
        if S::SHARED && !seen.still_current(sql).await? {
            // Another relay wrote a record, a change or the areas this plan was made from between
            // the plan and the lock: plan again, under the lock now.
            tracing::debug!("the batch's records changed before the lock: planning again");
            engine.aborted(plan);
            *plan = plan_batch(sql, engine, jobs, seen.wants).await?.0;
        }
        write_plans(sql, &[(&*plan, jobs, first_seq)], &[]).await?;
        marks[2] = std::time::Instant::now();
        Ok(first_seq)
    })
    .await;
    if written.is_ok() {
        // (A failed batch did not reach every mark.)
        let ms = |from: std::time::Instant, to: std::time::Instant| {
            to.saturating_duration_since(from).as_secs_f64() * 1000.0
        };
        tracing::debug!(
            plan_ms = ms(started, marks[0]),
            lock_ms = ms(marks[0], marks[1]),
            write_ms = ms(marks[1], marks[2]),
            commit_ms = ms(marks[2], std::time::Instant::now()),
            "batch written: its phases"
        );
    }
    let Some(mut plan) = planned else {
        return written.map(|_| Vec::new());
    };
    let first_seq = match written {
        Ok(s) => s,
        Err(e) => {
            engine.aborted(&mut plan);
            return Err(e);
        }
    };
    engine.committed(&mut plan, first_seq);
    batch_done(jobs, &plan, started);
    Ok(plan.results(first_seq))
}

/// What a plan was made from, as read from the database.
struct Seen {
    areas_version: i64,
    wants: Wants,
    versions: FastMap<String, i64>,
    existing: FastMap<[u8; 32], i64>,
}

impl Seen {
    /// Whether the database still holds what the plan was made from.
    async fn still_current<S: WriteSql>(&self, sql: &mut S) -> Result<bool> {
        Seen::all_current(std::slice::from_ref(self), sql).await
    }

    /// Whether the database still holds what each of the plans was made from. Where this relay is
    /// the only writer of records and changes (SQLite), only the areas can have changed under a plan
    /// (an administrator's move rewrites records' paths and the areas version together); where the
    /// database is shared, every record and change the plans read is read again.
    async fn all_current<S: WriteSql>(seen: &[Seen], sql: &mut S) -> Result<bool> {
        let areas = sql.areas_version().await?;
        if seen.iter().any(|s| s.areas_version != areas) {
            return Ok(false);
        }
        if !S::SHARED {
            return Ok(true);
        }
        let records: Vec<String> = seen
            .iter()
            .flat_map(|s| s.wants.records.iter().cloned())
            .collect();
        let hashes: Vec<[u8; 32]> = seen
            .iter()
            .flat_map(|s| s.wants.hashes.iter().copied())
            .collect();
        let versions: FastMap<String, i64> = seen
            .iter()
            .flat_map(|s| s.versions.iter().map(|(k, v)| (k.clone(), *v)))
            .collect();
        let existing: FastMap<[u8; 32], i64> = seen
            .iter()
            .flat_map(|s| s.existing.iter().map(|(k, v)| (*k, *v)))
            .collect();
        Ok(sql.record_versions(&records).await? == versions
            && sql.change_seqs(&hashes).await? == existing)
    }
}

/// Reads what the batch `jobs` needs (`wants`: [`Engine::wants`] of it) and judges it.
async fn plan_batch<S: WriteSql>(
    sql: &mut S,
    engine: &mut Engine,
    jobs: &[PushJob],
    wants: Wants,
) -> Result<(Plan, Seen)> {
    let t = prof::start();
    let version = sql.areas_version().await?;
    if version != engine.areas.version || engine.areas.paths.is_empty() {
        // Forms change the areas version too: the rule book checks attribute values by them.
        let areas = sql.load_areas().await?;
        let forms = parse_definitions(Defined::Form, &sql.definitions(Defined::Form).await?)?;
        engine.areas = AreaMap::new(
            version,
            areas.into_iter().map(|a| (a.id, a.path)).collect(),
            forms,
        );
    }
    let existing = sql.change_seqs(&wants.hashes).await?;
    let versions = sql.record_versions(&wants.records).await?;
    t.stop(Span::Lookup);
    let t = prof::start();
    let stale = engine.stale(&wants.records, &versions);
    let rows = if stale.is_empty() {
        FastMap::default()
    } else {
        sql.record_rows(&stale).await?
    };
    t.stop(Span::LoadRows);
    let t = prof::start();
    let plan = engine.plan(jobs, &existing, rows);
    t.stop(Span::Engine);
    let seen = Seen {
        areas_version: version,
        wants,
        versions,
        existing,
    };
    Ok((plan, seen))
}

/// One run of the log's scope index: every seq from `first` to `last` is in scope under `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryRun<'a> {
    pub key: &'a str,
    pub first: i64,
    pub last: i64,
}

/// The runs of `(key, seq)` pairs: consecutive seqs of one key make one run. Sorted by key then
/// seq (the rows land in index order). An entry's keys come deduplicated (`scope_keys`); a pair
/// given twice anyway is one pair, not two runs.
fn entry_runs(mut keys: Vec<(&str, i64)>) -> Vec<EntryRun<'_>> {
    keys.sort_unstable();
    keys.dedup();
    let mut runs: Vec<EntryRun<'_>> = Vec::new();
    for (key, seq) in keys {
        match runs.last_mut() {
            Some(run) if run.key == key && run.last + 1 == seq => run.last = seq,
            _ => runs.push(EntryRun {
                key,
                first: seq,
                last: seq,
            }),
        }
    }
    runs
}

/// Writes plans made from disjoint batches, each from its first seq on, with one statement per
/// table for all of them; the pushing devices' last sync times, and `touches` (other devices').
async fn write_plans<S: WriteSql>(
    sql: &mut S,
    plans: &[(&Plan, &[PushJob], i64)],
    touches: &[(String, i64)],
) -> Result<()> {
    let t = prof::start();
    let rows: Vec<ChangeRow<'_>> = plans
        .iter()
        .flat_map(|&(plan, jobs, first_seq)| {
            plan.entries
                .iter()
                .enumerate()
                .map(move |(i, e)| ChangeRow {
                    seq: first_seq + i as i64,
                    hash: &e.hash,
                    record: &e.record,
                    bytes: &e.bytes,
                    kind: e.kind,
                    before_paths: e.before_paths.as_deref(),
                    heads: e.heads.as_deref(),
                    device: &jobs[e.job].device_id,
                })
        })
        .collect();
    if !rows.is_empty() {
        sql.insert_changes(&rows).await?;
        t.stop(Span::InsertChanges);
        let t = prof::start();
        let mut keys: Vec<(&str, i64)> = Vec::new();
        for (plan, _, first_seq) in plans {
            for (i, e) in plan.entries.iter().enumerate() {
                for k in &e.keys {
                    keys.push((k.as_str(), first_seq + i as i64));
                }
            }
        }
        sql.insert_entry_runs(&entry_runs(keys)).await?;
        t.stop(Span::InsertKeys);
    }
    let t = prof::start();
    let records = || {
        plans
            .iter()
            .flat_map(|(plan, _, first)| plan.records.iter().map(move |r| (r, first)))
    };
    let rows: Vec<RecordRowWrite<'_>> = records()
        .map(|(r, first_seq)| RecordRowWrite {
            id: &r.id,
            doc: &r.doc,
            version: first_seq + r.last_entry as i64,
            paths: join_paths(&r.paths),
            view: r.view.as_deref(),
        })
        .collect();
    if !rows.is_empty() {
        sql.upsert_records(&rows).await?;
        let changed: Vec<&str> = records()
            .filter(|(r, _)| r.keys_changed && r.existed)
            .map(|(r, _)| r.id.as_str())
            .collect();
        if !changed.is_empty() {
            sql.clear_scope(&changed).await?;
        }
        let scope: Vec<(&str, &str)> = records()
            .filter(|(r, _)| r.keys_changed)
            .flat_map(|(r, _)| r.keys.iter().map(|k| (k.as_str(), r.id.as_str())))
            .collect();
        if !scope.is_empty() {
            sql.insert_scope(&scope).await?;
        }
    }
    // Last sync time, once per device.
    let now = now_secs();
    let mut seen = HashSet::new();
    let touched: Vec<(&str, i64)> = plans
        .iter()
        .flat_map(|(_, jobs, _)| jobs.iter().map(|j| (j.device_id.as_str(), now)))
        .chain(touches.iter().map(|(d, t)| (d.as_str(), *t)))
        .filter(|(d, _)| seen.insert(*d))
        .collect();
    sql.touch_devices(&touched).await?;
    t.stop(Span::UpsertRecords);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{entry_runs, EntryRun};

    fn run(key: &str, first: i64, last: i64) -> EntryRun<'_> {
        EntryRun { key, first, last }
    }

    #[test]
    fn consecutive_seqs_of_a_key_make_one_run() {
        let keys = vec![
            ("d1/s1/", 12),
            ("d1/", 10),
            ("d1/s1/", 10),
            ("d1/", 11),
            ("d1/", 12),
            // A pair given twice.
            ("d1/", 12),
            ("d1/s1/", 14),
            ("d1/s1/", 15),
            ("d1/s2/", 11),
        ];
        assert_eq!(
            entry_runs(keys),
            vec![
                run("d1/", 10, 12),
                run("d1/s1/", 10, 10),
                run("d1/s1/", 12, 12),
                run("d1/s1/", 14, 15),
                run("d1/s2/", 11, 11),
            ]
        );
        assert!(entry_runs(Vec::new()).is_empty());
    }
}
