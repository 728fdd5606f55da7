//! PostgreSQL backend. Relay processes sharing one database are stateless: the document cache is
//! validated against each record's `version`, the area map against `meta.areas_version`, and seqs come
//! from the `log_head` row, which every push transaction locks first. That lock makes seq order equal
//! commit order (a reader never sees seq N+1 before seq N, so "cursor = highest seq examined" is
//! safe) and serialises pushes across processes, so two relays never apply changes to the same
//! document concurrently. Each process still groups its concurrent pushes into one transaction.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use super::*;
use crate::engine::{AreaMap, Engine, Plan, RecordRow};
use crate::prof::{self, Span};
use gridwork_protocol::scope::join_paths;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_device_no_held.sql"),
    include_str!("../../migrations/postgres/0003_authority.sql"),
];
/// Key of the advisory lock that serialises migrations of concurrently starting relays.
const MIGRATION_LOCK: i64 = 0x6772_6964_776f_726b;
const BATCH_CHANGES: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<PushResult>>>;

enum WriterMsg {
    Push(PushJob, Reply),
    /// A device's last sync time, coalesced into the writer's next transaction.
    Touch(String, i64),
}

pub struct PgStore {
    pool: Pool,
    tx: Mutex<Option<mpsc::UnboundedSender<WriterMsg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl PgStore {
    pub async fn open(url: &str, limits: &Limits) -> Result<PgStore> {
        let cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Invalid(format!("database url: {e}")))?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(limits.db_connections.max(2))
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        {
            let mut client = pool.get().await?;
            migrate(&mut client).await?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer_loop(pool.clone(), rx, Engine::new(limits)));
        Ok(PgStore {
            pool,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    pub async fn push(&self, job: PushJob) -> Result<Vec<PushResult>> {
        let (reply, rx) = oneshot::channel();
        {
            let g = self.tx.lock().await;
            let tx = g
                .as_ref()
                .ok_or_else(|| Error::Unavailable("shutting down".into()))?;
            tx.send(WriterMsg::Push(job, reply))
                .map_err(|_| Error::Unavailable("writer stopped".into()))?;
        }
        rx.await
            .map_err(|_| Error::Unavailable("writer stopped".into()))?
    }

    pub async fn close(&self) {
        self.tx.lock().await.take();
        if let Some(h) = self.writer.lock().await.take() {
            let _ = h.await;
        }
        self.pool.close();
    }

    pub async fn auth(&self, token_hash: &[u8; 32]) -> Result<Option<DeviceAuth>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT d.id, u.id, u.name, u.role, u.area, a.path, d.revoked_at, u.disabled_at,
                        d.actor, d.last_sync_at
                 FROM devices d JOIN users u ON u.id = d.user_id JOIN areas a ON a.id = u.area
                 WHERE d.token_hash = $1",
            )
            .await?;
        let row = c.query_opt(&st, &[&&token_hash[..]]).await?;
        Ok(row.map(|r| DeviceAuth {
            device_id: r.get(0),
            user_id: r.get(1),
            user_name: r.get(2),
            role: r.get::<_, String>(3).parse().unwrap_or(Role::Worker),
            area: r.get(4),
            area_path: r.get(5),
            revoked: r.get::<_, Option<i64>>(6).is_some(),
            disabled: r.get::<_, Option<i64>>(7).is_some(),
            actor: r.get(8),
            last_sync_at: r.get(9),
        }))
    }

    pub async fn bind_actor(&self, device_id: &str, actor: &str) -> Result<Bind> {
        let c = self.pool.get().await?;
        // One statement: binds when unbound, and reports what the row holds afterwards.
        let row = c
            .query_opt(
                "UPDATE devices SET actor = COALESCE(actor, $2) WHERE id = $1 RETURNING actor",
                &[&device_id, &actor],
            )
            .await?;
        match row {
            None => Err(Error::NotFound(format!("device {device_id}"))),
            Some(r) if r.get::<_, Option<String>>(0).as_deref() == Some(actor) => Ok(Bind::Bound),
            Some(_) => Ok(Bind::Taken),
        }
    }

    /// Queues a last-sync-time update for the writer (batched with its next transaction).
    pub async fn touch_device(&self, id: &str, now: i64) -> Result<()> {
        if let Some(tx) = self.tx.lock().await.as_ref() {
            let _ = tx.send(WriterMsg::Touch(id.to_owned(), now));
        }
        Ok(())
    }

    pub async fn list_areas(&self) -> Result<Vec<AreaRow>> {
        let c = self.pool.get().await?;
        load_areas(&c).await
    }

    /// Entries after `after` visible to `scope`, except `device`'s own plain changes, read until the
    /// page is full (see [`PageRows`]): rows are streamed, so a page never holds much more than its
    /// byte limit.
    pub async fn pull(
        &self,
        scope: &Scope,
        device: &str,
        after: i64,
        limit: PageLimit,
    ) -> Result<RawPull> {
        let c = self.pool.get().await?;
        // Seqs are handed out under the log_head lock and committed in order, so every entry up to
        // the committed head is visible once the head is.
        let head: i64 = c
            .query_one("SELECT seq FROM log_head WHERE id = 1", &[])
            .await?
            .get(0);
        let n = (limit.items + 1) as i64;
        let device = device.to_owned();
        // Entries other than plain changes may be delivered as the whole document: their weight is
        // the document's.
        let columns = "c.seq, c.record, c.bytes, c.kind, c.before_paths, c.heads,
                       c.device IS NOT DISTINCT FROM $4,
                       CASE WHEN c.kind <> 0
                            THEN (SELECT octet_length(doc)::bigint FROM records WHERE id = c.record) END";
        let rows = if scope.is_operator() {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {columns} FROM changes c
                     WHERE c.seq > $1 AND c.seq <= $2 AND (c.kind <> 0 OR c.device IS DISTINCT FROM $4)
                     ORDER BY c.seq LIMIT $3"
                ))
                .await?;
            let params: [&(dyn ToSql + Sync); 4] = [&after, &head, &n, &device];
            c.query_raw(&st, params).await?
        } else {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {columns}
                     FROM entry_areas e JOIN changes c ON c.seq = e.seq
                     WHERE e.key = $5 AND e.seq > $1 AND e.seq <= $2
                       AND (c.kind <> 0 OR c.device IS DISTINCT FROM $4)
                     ORDER BY e.seq LIMIT $3"
                ))
                .await?;
            let params: [&(dyn ToSql + Sync); 5] = [&after, &head, &n, &device, &scope.prefix];
            c.query_raw(&st, params).await?
        };
        let mut rows = std::pin::pin!(rows);
        let mut page = PageRows::new(limit);
        while let Some(r) = rows.try_next().await? {
            let e = RawEntry {
                seq: r.get(0),
                record: r.get(1),
                bytes: r.get(2),
                kind: r.get(3),
                before_paths: r.get(4),
                heads: r.get(5),
                own: r.get(6),
                doc_len: r.get(7),
            };
            let size = e.page_bytes(scope);
            if !page.push(e, size) {
                break;
            }
        }
        let need: Vec<String> = page
            .rows
            .iter()
            .filter(|e| e.needs_doc(scope))
            .map(|e| e.record.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut docs = HashMap::new();
        if !need.is_empty() {
            for r in c
                .query("SELECT id, doc FROM records WHERE id = ANY($1)", &[&need])
                .await?
            {
                docs.insert(r.get::<_, String>(0), r.get::<_, Vec<u8>>(1));
            }
        }
        Ok(RawPull {
            head,
            entries: page.rows,
            complete: page.complete,
            docs,
        })
    }

    /// Records in scope after `after`, by id, streamed until the page is full (see [`PageRows`]).
    pub async fn snapshot(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: PageLimit,
    ) -> Result<SnapshotPage> {
        let c = self.pool.get().await?;
        let head: i64 = c
            .query_one("SELECT seq FROM log_head WHERE id = 1", &[])
            .await?
            .get(0);
        let after = after.unwrap_or("").to_owned();
        let n = (limit.items + 1) as i64;
        let rows = if scope.is_operator() {
            let params: [&(dyn ToSql + Sync); 2] = [&after, &n];
            c.query_raw(
                "SELECT id, doc FROM records WHERE id > $1 AND length(doc) > 0 ORDER BY id LIMIT $2",
                params,
            )
            .await?
        } else {
            let params: [&(dyn ToSql + Sync); 3] = [&after, &n, &scope.prefix];
            c.query_raw(
                "SELECT r.id, r.doc FROM record_scope s JOIN records r ON r.id = s.record
                 WHERE s.key = $3 AND s.record > $1 AND length(r.doc) > 0
                 ORDER BY s.record LIMIT $2",
                params,
            )
            .await?
        };
        let mut rows = std::pin::pin!(rows);
        let mut page = PageRows::new(limit);
        while let Some(r) = rows.try_next().await? {
            let doc: Vec<u8> = r.get(1);
            let size = doc.len();
            if !page.push((r.get(0), doc), size) {
                break;
            }
        }
        Ok(finish_snapshot(head, page, limit))
    }

    pub async fn record_paths(&self, record: &str) -> Result<Option<Vec<String>>> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT paths FROM records WHERE id = $1", &[&record])
            .await?;
        Ok(row.map(|r| split_paths(&r.get::<_, String>(0))))
    }

    pub async fn attachment_state(&self, sha: &[u8; 32]) -> Result<AttachmentState> {
        let c = self.pool.get().await?;
        att_state(&c, sha, false).await
    }

    pub async fn attachment_put(&self, ch: &PutChunk) -> Result<PutOutcome> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Serialise uploads of the same attachment (across processes too).
        tx.execute(
            "INSERT INTO attachments (sha256, total, received, complete) VALUES ($1, $2, 0, false)
             ON CONFLICT (sha256) DO NOTHING",
            &[&&ch.sha256[..], &(ch.total as i64)],
        )
        .await?;
        let out = att_put(&tx, ch).await?;
        // A refused chunk changes nothing: roll back (also drops the row inserted above for an
        // upload that never started).
        if !matches!(
            out,
            PutOutcome::WrongOffset { .. } | PutOutcome::WrongTotal { .. }
        ) {
            tx.commit().await?;
        }
        Ok(out)
    }

    pub async fn attachment_records(&self, sha: &[u8; 32]) -> Result<Vec<String>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT record FROM attachment_records WHERE sha256 = $1",
                &[&&sha[..]],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn attachment_read(&self, sha: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let c = self.pool.get().await?;
        if !matches!(
            att_state(&c, sha, false).await?,
            AttachmentState::Complete { .. }
        ) {
            return Ok(None);
        }
        Ok(Some(read_chunks(&c, sha).await?))
    }

    pub async fn add_area(&self, input: &AreaRowInput) -> Result<AreaRow> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Bumping the version first also serialises concurrent area creation.
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'areas_version'",
            &[],
        )
        .await?;
        let parent = match &input.parent {
            None => None,
            Some(p) => tx
                .query_opt("SELECT level, path FROM areas WHERE id = $1", &[p])
                .await?
                .and_then(|r| Some((AreaLevel::from_rank(r.get(0))?, r.get::<_, String>(1)))),
        };
        let path = child_path(input, parent)?;
        if tx
            .query_opt("SELECT 1 FROM areas WHERE id = $1", &[&input.id])
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!("area {}", input.id)));
        }
        tx.execute(
            "INSERT INTO areas (id, parent, level, name, path) VALUES ($1, $2, $3, $4, $5)",
            &[
                &input.id,
                &input.parent,
                &input.level.rank(),
                &input.name,
                &path,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(AreaRow {
            id: input.id.clone(),
            parent: input.parent.clone(),
            level: input.level,
            name: input.name.clone(),
            path,
        })
    }

    pub async fn add_user(&self, user: &UserRow) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        if tx
            .query_opt("SELECT 1 FROM areas WHERE id = $1", &[&user.area])
            .await?
            .is_none()
        {
            return Err(Error::Invalid(format!("area {} does not exist", user.area)));
        }
        if tx
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[&user.id])
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!("user {}", user.id)));
        }
        tx.execute(
            "INSERT INTO users (id, name, role, area) VALUES ($1, $2, $3, $4)",
            &[&user.id, &user.name, &user.role.as_str(), &user.area],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_device(
        &self,
        id: &str,
        user: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        if tx
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[&user])
            .await?
            .is_none()
        {
            return Err(Error::Invalid(format!("user {user} does not exist")));
        }
        if tx
            .query_opt("SELECT 1 FROM devices WHERE id = $1", &[&id])
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!("device {id}")));
        }
        tx.execute(
            "INSERT INTO devices (id, user_id, token_hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&id, &user, &&token_hash[..], &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn revoke_device(&self, id: &str, now: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &now],
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT d.id, u.id, u.name, u.role, u.area, d.created_at, d.revoked_at, d.last_sync_at
                 FROM devices d JOIN users u ON u.id = d.user_id ORDER BY d.id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceInfo {
                    id: r.get(0),
                    user_id: r.get(1),
                    user_name: r.get(2),
                    role: r.get::<_, String>(3).parse().map_err(Error::Invalid)?,
                    area: r.get(4),
                    created_at: r.get(5),
                    revoked_at: r.get(6),
                    last_sync_at: r.get(7),
                })
            })
            .collect()
    }
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let res = migrate_locked(client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    res
}

async fn migrate_locked(client: &mut deadpool_postgres::Object) -> Result<()> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = client
        .query_opt("SELECT version FROM schema_version", &[])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Invalid(format!(
            "database schema version {version} is newer than this relay ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&((i + 1) as i64)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "postgres schema migrated");
    }
    Ok(())
}

async fn load_areas<C: GenericClient>(c: &C) -> Result<Vec<AreaRow>> {
    let rows = c
        .query(
            "SELECT id, parent, level, name, path FROM areas ORDER BY path",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AreaRow {
                id: r.get(0),
                parent: r.get(1),
                level: AreaLevel::from_rank(r.get(2))
                    .ok_or_else(|| Error::Invalid("bad area level".into()))?,
                name: r.get(3),
                path: r.get(4),
            })
        })
        .collect()
}

async fn att_state<C: GenericClient>(c: &C, sha: &[u8; 32], lock: bool) -> Result<AttachmentState> {
    let sql = if lock {
        "SELECT total, received, complete FROM attachments WHERE sha256 = $1 FOR UPDATE"
    } else {
        "SELECT total, received, complete FROM attachments WHERE sha256 = $1"
    };
    let row = c.query_opt(sql, &[&&sha[..]]).await?;
    Ok(match row {
        None => AttachmentState::Unknown,
        Some(r) => {
            let (total, received, complete): (i64, i64, bool) = (r.get(0), r.get(1), r.get(2));
            if complete {
                AttachmentState::Complete { size: total as u64 }
            } else {
                AttachmentState::Partial {
                    received: received as u64,
                    total: total as u64,
                }
            }
        }
    })
}

async fn read_chunks<C: GenericClient>(c: &C, sha: &[u8; 32]) -> Result<Vec<u8>> {
    let rows = c
        .query(
            "SELECT data FROM attachment_chunks WHERE sha256 = $1 ORDER BY \"offset\"",
            &[&&sha[..]],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(r.get::<_, &[u8]>(0));
    }
    Ok(out)
}

async fn link<C: GenericClient>(c: &C, sha: &[u8; 32], record: &str) -> Result<()> {
    c.execute(
        "INSERT INTO attachment_records (sha256, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&&sha[..], &record],
    )
    .await?;
    Ok(())
}

async fn att_put<C: GenericClient>(c: &C, ch: &PutChunk) -> Result<PutOutcome> {
    let sha = &ch.sha256;
    let len = ch.data.len() as u64;
    match att_state(c, sha, true).await? {
        AttachmentState::Complete { size } => {
            let linked = c
                .query_opt(
                    "SELECT 1 FROM attachment_records WHERE sha256 = $1 AND record = $2",
                    &[&&sha[..], &ch.record],
                )
                .await?
                .is_some();
            if linked {
                return Ok(PutOutcome::Stored {
                    received: size,
                    total: size,
                    complete: true,
                });
            }
            // Linking to another record needs the full content, not only the hash.
            if ch.start == 0 && len == size && Sha256::digest(&ch.data).as_slice() == sha {
                link(c, sha, &ch.record).await?;
                return Ok(PutOutcome::Stored {
                    received: size,
                    total: size,
                    complete: true,
                });
            }
            Ok(PutOutcome::WrongOffset { offset: 0 })
        }
        AttachmentState::Partial { received, total } => {
            if total != ch.total {
                return Ok(PutOutcome::WrongTotal { total });
            }
            if ch.start != received {
                return Ok(PutOutcome::WrongOffset { offset: received });
            }
            let received = received + len;
            if !ch.data.is_empty() {
                c.execute(
                    "INSERT INTO attachment_chunks (sha256, \"offset\", data) VALUES ($1, $2, $3)",
                    &[&&sha[..], &(ch.start as i64), &&ch.data[..]],
                )
                .await?;
            }
            link(c, sha, &ch.record).await?;
            if received < ch.total {
                c.execute(
                    "UPDATE attachments SET received = $2 WHERE sha256 = $1",
                    &[&&sha[..], &(received as i64)],
                )
                .await?;
                return Ok(PutOutcome::Stored {
                    received,
                    total: ch.total,
                    complete: false,
                });
            }
            let data = read_chunks(c, sha).await?;
            if Sha256::digest(&data).as_slice() != sha {
                for t in ["attachment_chunks", "attachment_records", "attachments"] {
                    c.execute(&format!("DELETE FROM {t} WHERE sha256 = $1"), &[&&sha[..]])
                        .await?;
                }
                return Ok(PutOutcome::HashMismatch);
            }
            c.execute(
                "DELETE FROM attachment_chunks WHERE sha256 = $1",
                &[&&sha[..]],
            )
            .await?;
            c.execute(
                "INSERT INTO attachment_chunks (sha256, \"offset\", data) VALUES ($1, 0, $2)",
                &[&&sha[..], &data],
            )
            .await?;
            c.execute(
                "UPDATE attachments SET received = total, complete = true WHERE sha256 = $1",
                &[&&sha[..]],
            )
            .await?;
            Ok(PutOutcome::Stored {
                received,
                total: ch.total,
                complete: true,
            })
        }
        // The caller inserted the row before locking it; absent means it vanished (a concurrent
        // hash mismatch discarded it): ask the client to start again.
        AttachmentState::Unknown => Ok(PutOutcome::WrongOffset { offset: 0 }),
    }
}

// ---- the writer ----

async fn writer_loop(pool: Pool, mut rx: mpsc::UnboundedReceiver<WriterMsg>, mut engine: Engine) {
    while let Some(first) = rx.recv().await {
        let mut touches: HashMap<String, i64> = HashMap::new();
        let mut batch = Vec::new();
        let mut n = 0;
        let mut next = Some(first);
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
        for (j, _) in &batch {
            touches.remove(&j.device_id);
        }
        if !touches.is_empty() {
            let (ids, times): (Vec<String>, Vec<i64>) = touches.into_iter().unzip();
            let res = async {
                pool.get()
                    .await?
                    .execute(
                        "UPDATE devices d SET last_sync_at = t.at
                         FROM UNNEST($1::text[], $2::bigint[]) AS t(id, at) WHERE d.id = t.id",
                        &[&ids, &times],
                    )
                    .await?;
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "could not record last sync times");
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (jobs, replies): (Vec<PushJob>, Vec<Reply>) = batch.into_iter().unzip();
        match write_batch(&pool, &mut engine, &jobs).await {
            Ok(results) => {
                for (reply, res) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(res));
                }
            }
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, jobs = jobs.len(), "batch failed, retrying pushes one by one");
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let res = write_batch(&pool, &mut engine, std::slice::from_ref(&job)).await;
                    let _ = reply.send(res.map(|mut r| r.pop().unwrap_or_default()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(Error::Unavailable(e.to_string())));
                }
            }
        }
    }
    tracing::debug!("postgres writer stopped");
}

async fn write_batch(
    pool: &Pool,
    engine: &mut Engine,
    jobs: &[PushJob],
) -> Result<Vec<Vec<PushResult>>> {
    let started = std::time::Instant::now();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let planned = async {
        let head: i64 = tx
            .query_one("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE", &[])
            .await?
            .get(0);
        let plan = plan_batch(&tx, engine, jobs).await?;
        let first_seq = head + 1;
        let t = prof::start();
        write_plan(&tx, &plan, first_seq, jobs).await?;
        t.stop(Span::InsertChanges);
        Ok::<_, Error>((plan, first_seq))
    }
    .await;
    let (plan, first_seq) = match planned {
        Ok(p) => p,
        Err(e) => {
            engine.aborted();
            return Err(e);
        }
    };
    let t = prof::start();
    if let Err(e) = tx.commit().await {
        engine.aborted();
        return Err(e.into());
    }
    t.stop(Span::Commit);
    engine.committed(&plan, first_seq);
    prof::batch(jobs.iter().map(|j| j.changes.len()).sum());
    tracing::debug!(
        pushes = jobs.len(),
        new_entries = plan.entries.len(),
        ms = started.elapsed().as_millis() as u64,
        "push batch committed"
    );
    Ok(plan.results(first_seq))
}

async fn plan_batch<C: GenericClient>(
    tx: &C,
    engine: &mut Engine,
    jobs: &[PushJob],
) -> Result<Plan> {
    let t = prof::start();
    let version: i64 = tx
        .query_one("SELECT value FROM meta WHERE key = 'areas_version'", &[])
        .await?
        .get(0);
    if version != engine.areas.version || engine.areas.paths.is_empty() {
        let areas = load_areas(tx).await?;
        engine.areas = AreaMap {
            version,
            paths: areas.into_iter().map(|a| (a.id, a.path)).collect(),
        };
    }
    let wants = Engine::wants(jobs);
    let hashes: Vec<&[u8]> = wants.hashes.iter().map(|h| &h[..]).collect();
    let mut existing = HashMap::new();
    for r in tx
        .query(
            "SELECT hash, seq FROM changes WHERE hash = ANY($1)",
            &[&hashes],
        )
        .await?
    {
        let h: &[u8] = r.get(0);
        if let Ok(h) = <[u8; 32]>::try_from(h) {
            existing.insert(h, r.get::<_, i64>(1));
        }
    }
    let mut versions = HashMap::new();
    for r in tx
        .query(
            "SELECT id, version FROM records WHERE id = ANY($1)",
            &[&wants.records],
        )
        .await?
    {
        versions.insert(r.get::<_, String>(0), r.get::<_, i64>(1));
    }
    t.stop(Span::Lookup);
    let t = prof::start();
    let stale = engine.stale(&wants.records, &versions);
    let mut rows: HashMap<String, RecordRow> = HashMap::new();
    if !stale.is_empty() {
        for r in tx
            .query(
                "SELECT id, doc, version, paths FROM records WHERE id = ANY($1)",
                &[&stale],
            )
            .await?
        {
            rows.insert(
                r.get(0),
                RecordRow {
                    doc: r.get(1),
                    version: r.get(2),
                    paths: split_paths(&r.get::<_, String>(3)),
                },
            );
        }
    }
    t.stop(Span::LoadRows);
    let t = prof::start();
    let plan = engine.plan(jobs, &existing, rows);
    t.stop(Span::Engine);
    Ok(plan)
}

async fn write_plan<C: GenericClient>(
    tx: &C,
    plan: &Plan,
    first_seq: i64,
    jobs: &[PushJob],
) -> Result<()> {
    if !plan.entries.is_empty() {
        let n = plan.entries.len();
        let mut seqs = Vec::with_capacity(n);
        let mut hashes: Vec<&[u8]> = Vec::with_capacity(n);
        let mut records: Vec<&str> = Vec::with_capacity(n);
        let mut bytes: Vec<&[u8]> = Vec::with_capacity(n);
        let mut kinds: Vec<i16> = Vec::with_capacity(n);
        let mut befores: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut heads: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut devices: Vec<&str> = Vec::with_capacity(n);
        let mut key_keys: Vec<&str> = Vec::new();
        let mut key_seqs: Vec<i64> = Vec::new();
        for (i, e) in plan.entries.iter().enumerate() {
            let seq = first_seq + i as i64;
            seqs.push(seq);
            hashes.push(&e.hash[..]);
            records.push(&e.record);
            bytes.push(&e.bytes);
            kinds.push(e.kind);
            befores.push(e.before_paths.as_deref());
            heads.push(e.heads.as_deref());
            devices.push(&jobs[e.job].device_id);
            for k in &e.keys {
                key_keys.push(k);
                key_seqs.push(seq);
            }
        }
        // UNNEST: one round trip per table whatever the batch size.
        tx.execute(
            "INSERT INTO changes (seq, hash, record, bytes, kind, before_paths, heads, device)
             SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::text[], $4::bytea[], $5::smallint[],
                                  $6::text[], $7::bytea[], $8::text[])",
            &[&seqs, &hashes, &records, &bytes, &kinds, &befores, &heads, &devices],
        )
        .await?;
        tx.execute(
            "INSERT INTO entry_areas (key, seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT DO NOTHING",
            &[&key_keys, &key_seqs],
        )
        .await?;
        let last = first_seq + n as i64 - 1;
        tx.execute("UPDATE log_head SET seq = $1 WHERE id = 1", &[&last])
            .await?;
    }
    if !plan.records.is_empty() {
        let ids: Vec<&str> = plan.records.iter().map(|r| r.id.as_str()).collect();
        let docs: Vec<&[u8]> = plan.records.iter().map(|r| r.doc.as_slice()).collect();
        let versions: Vec<i64> = plan
            .records
            .iter()
            .map(|r| first_seq + r.last_entry as i64)
            .collect();
        let paths: Vec<String> = plan.records.iter().map(|r| join_paths(&r.paths)).collect();
        tx.execute(
            "INSERT INTO records (id, doc, version, paths)
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::text[])
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, version = excluded.version,
                                            paths = excluded.paths",
            &[&ids, &docs, &versions, &paths],
        )
        .await?;
        let changed: Vec<&str> = plan
            .records
            .iter()
            .filter(|r| r.keys_changed && r.existed)
            .map(|r| r.id.as_str())
            .collect();
        if !changed.is_empty() {
            tx.execute(
                "DELETE FROM record_scope WHERE record = ANY($1)",
                &[&changed],
            )
            .await?;
        }
        let mut sk: Vec<&str> = Vec::new();
        let mut sr: Vec<&str> = Vec::new();
        for r in plan.records.iter().filter(|r| r.keys_changed) {
            for k in &r.keys {
                sk.push(k);
                sr.push(&r.id);
            }
        }
        if !sk.is_empty() {
            tx.execute(
                "INSERT INTO record_scope (key, record) SELECT * FROM UNNEST($1::text[], $2::text[])
                 ON CONFLICT DO NOTHING",
                &[&sk, &sr],
            )
            .await?;
        }
    }
    let devices: Vec<&str> = jobs
        .iter()
        .map(|j| j.device_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    tx.execute(
        "UPDATE devices SET last_sync_at = $2 WHERE id = ANY($1)",
        &[&devices, &now_secs()],
    )
    .await?;
    Ok(())
}
