//! The push writer, one for both backends.
//!
//! Every push goes through one writer per relay process: it drains the pushes queued while the last
//! batch was committing and writes them in one transaction (group commit: one fsync, one round of
//! lookups, serves many devices), plans each batch with the [`Engine`], retries a failed batch one
//! push at a time so that one bad push cannot fail its neighbours, and keeps the engine's document
//! cache in step with what committed. A backend only supplies the SQL: [`WriteSql`].

use std::collections::{HashMap, HashSet};
use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::sql::{in_transaction, Transact};
use super::{now_secs, parse_definitions, AreaRow, Defined};
use crate::engine::{AreaMap, Engine, FastMap, Plan, PushJob, PushResult, RecordRow, Wants};
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

    /// Appends log entries with consecutive seqs from `first_seq` (moving the log's head past them
    /// where the backend keeps one).
    fn insert_changes(&mut self, rows: &[ChangeRow<'_>])
        -> impl Future<Output = Result<()>> + Send;
    /// Scope index of the log: `(key, seq)`, sorted and without duplicates.
    fn insert_entry_keys(
        &mut self,
        rows: &[(&str, i64)],
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
    /// A writer on its own thread, for a backend whose SQL blocks (SQLite).
    pub fn on_thread<S: WriteSql + 'static>(name: &str, sql: S, engine: Engine) -> Result<Writer> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rt.block_on(run(sql, rx, engine)))?;
        Ok(Writer::new(tx, Done::Thread(handle)))
    }

    /// A writer as a task of the relay's runtime, for an async backend (PostgreSQL).
    pub fn on_task<S: WriteSql + 'static>(sql: S, engine: Engine) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(run(sql, rx, engine));
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

async fn run<S: WriteSql>(
    mut sql: S,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    mut engine: Engine,
) {
    while let Some(first) = rx.recv().await {
        let mut touches: HashMap<String, i64> = HashMap::new();
        let mut batch = Vec::new();
        let mut n = 0;
        let mut next = Some(first);
        // Group commit: take whatever queued up while the last batch was being written.
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Push(j, r) => {
                    n += j.changes.len();
                    batch.push((j, r));
                }
                WriterMsg::Touch(d, t) => {
                    touches.insert(d, t);
                }
            }
            if n < BATCH_CHANGES {
                next = rx.try_recv().ok();
            }
        }
        // Devices that push get their sync time in the push transaction.
        for (j, _) in &batch {
            touches.remove(&j.device_id);
        }
        if !batch.is_empty() {
            run_batch(&mut sql, &mut engine, batch).await;
        }
        if !touches.is_empty() {
            let rows: Vec<(&str, i64)> = touches.iter().map(|(d, t)| (d.as_str(), *t)).collect();
            if let Err(e) =
                in_transaction(&mut sql, async |sql: &mut S| sql.touch_devices(&rows).await).await
            {
                tracing::warn!(error = %e, "could not record last sync times");
            }
        }
    }
    tracing::debug!("writer stopped");
}

async fn run_batch<S: WriteSql>(sql: &mut S, engine: &mut Engine, batch: Vec<(PushJob, Reply)>) {
    let (jobs, replies): (Vec<PushJob>, Vec<Reply>) = batch.into_iter().unzip();
    match write_batch(sql, engine, &jobs).await {
        Ok(results) => {
            for (reply, res) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(res));
            }
        }
        Err(e) if jobs.len() > 1 => {
            // Do not let one push fail its neighbours: retry them one by one.
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

/// Plans and writes one batch in one transaction. The engine's working documents become its cache
/// only once the transaction has committed.
async fn write_batch<S: WriteSql>(
    sql: &mut S,
    engine: &mut Engine,
    jobs: &[PushJob],
) -> Result<Vec<Vec<PushResult>>> {
    let started = std::time::Instant::now();
    let written = in_transaction(sql, async |sql: &mut S| {
        let (mut plan, seen) = plan_batch(sql, engine, jobs).await?;
        let first_seq = sql.first_seq().await?;
        if S::SHARED && !seen.still_current(sql).await? {
            // Another relay wrote a record, a change or the areas this plan was made from between
            // the plan and the lock: plan again, under the lock now.
            tracing::debug!("the batch's records changed before the lock: planning again");
            engine.aborted();
            plan = plan_batch(sql, engine, jobs).await?.0;
        }
        write_plan(sql, &plan, first_seq, jobs).await?;
        Ok((plan, first_seq))
    })
    .await;
    let (plan, first_seq) = match written {
        Ok(w) => w,
        Err(e) => {
            engine.aborted();
            return Err(e);
        }
    };
    engine.committed(&plan, first_seq);
    let total: usize = jobs.iter().map(|j| j.changes.len()).sum();
    prof::batch(total);
    tracing::debug!(
        pushes = jobs.len(),
        changes = total,
        new_entries = plan.entries.len(),
        ms = started.elapsed().as_millis() as u64,
        "push batch committed"
    );
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
        Ok(sql.areas_version().await? == self.areas_version
            && sql.record_versions(&self.wants.records).await? == self.versions
            && sql.change_seqs(&self.wants.hashes).await? == self.existing)
    }
}

async fn plan_batch<S: WriteSql>(
    sql: &mut S,
    engine: &mut Engine,
    jobs: &[PushJob],
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
    let wants = Engine::wants(jobs);
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

async fn write_plan<S: WriteSql>(
    sql: &mut S,
    plan: &Plan,
    first_seq: i64,
    jobs: &[PushJob],
) -> Result<()> {
    let t = prof::start();
    if !plan.entries.is_empty() {
        let rows: Vec<ChangeRow<'_>> = plan
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| ChangeRow {
                seq: first_seq + i as i64,
                hash: &e.hash,
                record: &e.record,
                bytes: &e.bytes,
                kind: e.kind,
                before_paths: e.before_paths.as_deref(),
                heads: e.heads.as_deref(),
                device: &jobs[e.job].device_id,
            })
            .collect();
        sql.insert_changes(&rows).await?;
        t.stop(Span::InsertChanges);
        let t = prof::start();
        // Sorted by key then seq: the rows land in index order (cheap B-tree appends).
        let mut keys: Vec<(&str, i64)> = Vec::new();
        for (i, e) in plan.entries.iter().enumerate() {
            for k in &e.keys {
                keys.push((k.as_str(), first_seq + i as i64));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        sql.insert_entry_keys(&keys).await?;
        t.stop(Span::InsertKeys);
    }
    let t = prof::start();
    if !plan.records.is_empty() {
        let rows: Vec<RecordRowWrite<'_>> = plan
            .records
            .iter()
            .map(|r| RecordRowWrite {
                id: &r.id,
                doc: &r.doc,
                version: first_seq + r.last_entry as i64,
                paths: join_paths(&r.paths),
                view: r.view.as_deref(),
            })
            .collect();
        sql.upsert_records(&rows).await?;
        let changed: Vec<&str> = plan
            .records
            .iter()
            .filter(|r| r.keys_changed && r.existed)
            .map(|r| r.id.as_str())
            .collect();
        if !changed.is_empty() {
            sql.clear_scope(&changed).await?;
        }
        let scope: Vec<(&str, &str)> = plan
            .records
            .iter()
            .filter(|r| r.keys_changed)
            .flat_map(|r| r.keys.iter().map(|k| (k.as_str(), r.id.as_str())))
            .collect();
        if !scope.is_empty() {
            sql.insert_scope(&scope).await?;
        }
    }
    // Last sync time, once per device per batch.
    let now = now_secs();
    let mut seen = HashSet::new();
    let touched: Vec<(&str, i64)> = jobs
        .iter()
        .filter(|j| seen.insert(j.device_id.as_str()))
        .map(|j| (j.device_id.as_str(), now))
        .collect();
    sql.touch_devices(&touched).await?;
    t.stop(Span::UpsertRecords);
    Ok(())
}
