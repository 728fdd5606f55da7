//! PostgreSQL backend. Relay processes sharing one database are stateless: the document cache is
//! validated against each record's `version`, the area map against `meta.areas_version`, and seqs come
//! from the `log_head` row, which every push transaction locks before it writes. That lock makes seq
//! order equal commit order (a reader never sees seq N+1 before seq N, so "cursor = highest seq
//! examined" is safe) and serialises the writes across processes. A batch is judged before the lock
//! (so that relays judge at the same time); under the lock the versions of its records, its changes'
//! presence in the log and the areas version are read again, and the batch is judged again if another
//! relay changed any of them, so no relay writes a document made from one another has since replaced.
//! Each process still groups its concurrent pushes into one transaction.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;

use super::admin::{AdminSql, Held, Row};
use super::reads::{ReadSql, Take};
use super::sql::Transact;
use super::uploads::UploadSql;
use super::writer::{ChangeRow, EntryRun, RecordRowWrite, WriteSql, Writer};
use super::*;
use crate::engine::{Engine, FastMap, RecordRow};
use crate::prof::{self, Span};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_device_no_held.sql"),
    include_str!("../../migrations/postgres/0003_authority.sql"),
    include_str!("../../migrations/postgres/0004_upload_sessions.sql"),
    include_str!("../../migrations/postgres/0005_record_views.sql"),
    include_str!("../../migrations/postgres/0006_schedules.sql"),
    include_str!("../../migrations/postgres/0007_forms.sql"),
    include_str!("../../migrations/postgres/0008_console.sql"),
    include_str!("../../migrations/postgres/0009_entry_runs.sql"),
];
/// Key of the advisory lock that serialises migrations of concurrently starting relays.
const MIGRATION_LOCK: i64 = 0x6772_6964_776f_726b;

pub struct PgStore {
    pool: Pool,
    pub(super) writer: Writer,
}

impl PgStore {
    pub async fn open(url: &str, limits: &Limits) -> Result<PgStore> {
        let target = super::pg_tls::target(url)?;
        let mgr = Manager::from_config(
            target.config,
            target.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            // Room for the push writer's two connections (its planner's and its committer's) on
            // top of the readers'.
            .max_size(limits.db_connections.max(1) + 2)
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        {
            let mut client = pool.get().await?;
            migrate(&mut client).await?;
            let tls = connection_encrypted(&client).await?;
            tracing::info!(tls, sslmode = ?target.mode, "postgres connected");
        }
        let sql = || PgSql {
            pool: pool.clone(),
            client: None,
        };
        let writer = Writer::on_task(
            sql(),
            sql(),
            Engine::new(limits),
            limits.pipeline_min_changes.unwrap_or(usize::MAX),
        );
        Ok(PgStore { pool, writer })
    }

    /// A connection for the shared logic.
    pub(super) fn sql(&self) -> PgSql {
        PgSql {
            pool: self.pool.clone(),
            client: None,
        }
    }

    /// Closes the pool (after the writer has stopped).
    pub fn close_pool(&self) {
        self.pool.close();
    }

    /// Whether the relay's database connections run over TLS (checked on a pooled connection).
    pub async fn transport_encrypted(&self) -> Result<bool> {
        let c = self.pool.get().await?;
        connection_encrypted(&c).await
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
    /// Every schedule's or form's definition (JSON), by id.
    pub async fn definitions(&self, what: Defined) -> Result<Vec<String>> {
        load_definitions(&self.pool.get().await?, what).await
    }

    pub async fn list_areas(&self) -> Result<Vec<AreaRow>> {
        let c = self.pool.get().await?;
        load_areas(&c).await
    }

    pub async fn areas_version(&self) -> Result<i64> {
        read_areas_version(&self.pool.get().await?).await
    }

    /// Entries after `after` visible to `scope`, except `device`'s own plain changes, read until the
    /// page is full (see [`PageRows`]): rows are streamed, so a page never holds much more than its
    /// byte limit.
    pub async fn record_paths(&self, record: &str) -> Result<Option<Vec<String>>> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT paths FROM records WHERE id = $1", &[&record])
            .await?;
        Ok(row.map(|r| split_paths(&r.get::<_, String>(0))))
    }

    /// Links a complete attachment to `record`; `false` when there is no complete attachment.
    pub async fn attachment_link(&self, sha: &[u8; 32], record: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        // One statement: the link is made only while the attachment exists.
        let row = c
            .query_one(
                "WITH found AS (SELECT sha256 FROM attachments WHERE sha256 = $1),
                      linked AS (INSERT INTO attachment_records (sha256, record)
                                 SELECT sha256, $2 FROM found ON CONFLICT DO NOTHING)
                 SELECT EXISTS (SELECT 1 FROM found)",
                &[&&sha[..], &record],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn attachment_size(&self, sha: &[u8; 32]) -> Result<Option<u64>> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT size FROM attachments WHERE sha256 = $1",
                &[&&sha[..]],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    pub async fn attachment_paths(&self, sha: &[u8; 32]) -> Result<Vec<String>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT r.paths FROM attachment_records a JOIN records r ON r.id = a.record
                 WHERE a.sha256 = $1",
                &[&&sha[..]],
            )
            .await?;
        Ok(rows
            .iter()
            .flat_map(|r| split_paths(r.get::<_, &str>(0)))
            .collect())
    }

    pub async fn attachment_pieces(&self, sha: &[u8; 32]) -> Result<Vec<Piece>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT \"offset\", length(data) FROM attachment_chunks WHERE sha256 = $1
                 ORDER BY \"offset\"",
                &[&&sha[..]],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Piece {
                offset: r.get(0),
                len: r.get::<_, i32>(1) as u64,
            })
            .collect())
    }

    /// A range of one piece: `substring` sends only that range, whatever the size of the row.
    pub async fn attachment_read(
        &self,
        sha: &[u8; 32],
        piece: Piece,
        from: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let too_big = || Error::Invalid("attachment range out of bounds".into());
        let from = i32::try_from(from + 1).map_err(|_| too_big())?;
        let len = i32::try_from(len).map_err(|_| too_big())?;
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT substring(data from $3 for $4) FROM attachment_chunks
                 WHERE sha256 = $1 AND \"offset\" = $2",
                &[&&sha[..], &piece.offset, &from, &len],
            )
            .await?
            .ok_or_else(|| Error::NotFound("attachment piece".into()))?;
        Ok(row.get(0))
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

    pub async fn list_devices(&self, user: Option<&str>) -> Result<Vec<DeviceInfo>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT d.id, u.id, u.name, u.role, u.area, d.created_at, d.revoked_at, d.last_sync_at,
                        d.actor IS NOT NULL
                 FROM devices d JOIN users u ON u.id = d.user_id
                 WHERE $1::text IS NULL OR u.id = $1 ORDER BY d.id",
                &[&user],
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
                    bound: r.get(8),
                })
            })
            .collect()
    }

    pub async fn reset_device(&self, id: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(
            c.execute("UPDATE devices SET actor = NULL WHERE id = $1", &[&id])
                .await?
                > 0,
        )
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT u.id, u.name, u.role, u.area, u.disabled_at IS NOT NULL,
                        (SELECT count(*) FROM devices d WHERE d.user_id = u.id AND d.revoked_at IS NULL)
                 FROM users u ORDER BY u.id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    id: r.get(0),
                    name: r.get(1),
                    role: r.get::<_, String>(2).parse().map_err(Error::Invalid)?,
                    area: r.get(3),
                    disabled: r.get(4),
                    devices: r.get::<_, i64>(5) as u64,
                })
            })
            .collect()
    }

    pub async fn user_exists(&self, id: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.query_opt("SELECT 1 FROM users WHERE id = $1", &[&id])
            .await?
            .is_some())
    }

    pub async fn set_user_disabled(&self, id: &str, at: Option<i64>) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            "UPDATE users SET disabled_at = $2 WHERE id = $1",
            &[&id, &at],
        )
        .await?
            > 0)
    }
}

async fn read_areas_version<C: GenericClient>(c: &C) -> Result<i64> {
    Ok(
        c.query_one("SELECT value FROM meta WHERE key = 'areas_version'", &[])
            .await?
            .get(0),
    )
}

async fn bump_areas_version<C: GenericClient>(c: &C) -> Result<()> {
    c.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'areas_version'",
        &[],
    )
    .await?;
    Ok(())
}

/// Is this connection encrypted? (PostgreSQL's own view: `pg_stat_ssl`.)
async fn connection_encrypted<C: GenericClient>(c: &C) -> Result<bool> {
    Ok(c.query_one(
        "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
        &[],
    )
    .await?
    .get(0))
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

async fn load_definitions<C: GenericClient>(c: &C, what: Defined) -> Result<Vec<String>> {
    let sql = match what {
        Defined::Schedule => "SELECT definition FROM schedules ORDER BY id",
        Defined::Form => "SELECT definition FROM forms ORDER BY id",
    };
    let rows = c.query(sql, &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
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

// ---- the writer ----

/// A connection as the shared logic uses it ([`Transact`], [`WriteSql`], [`UploadSql`]): a pooled
/// connection, taken at the first statement and held until `commit` or `rollback` (or the end of the
/// call, outside a transaction); statements are prepared once per connection. Every push batch of
/// every relay on the database locks the `log_head` row first (see the module's notes).
pub(super) struct PgSql {
    pool: Pool,
    client: Option<deadpool_postgres::Object>,
}

impl PgSql {
    async fn client(&mut self) -> Result<&deadpool_postgres::Object> {
        if self.client.is_none() {
            self.client = Some(self.pool.get().await?);
        }
        self.client
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no connection".into()))
    }

    async fn run(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.execute(&st, params).await?)
    }

    async fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.query(&st, params).await?)
    }

    async fn row(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&st, params).await?)
    }
}

impl Transact for PgSql {
    async fn begin(&mut self) -> Result<()> {
        self.client().await?.batch_execute("BEGIN").await?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let t = prof::start();
        self.client().await?.batch_execute("COMMIT").await?;
        t.stop(Span::Commit);
        // Back to the pool.
        self.client = None;
        Ok(())
    }

    async fn rollback(&mut self) {
        if let Some(c) = self.client.take() {
            if let Err(e) = c.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %e, "rollback failed, dropping the connection");
                // Not back to the pool: its state is unknown.
                drop(deadpool_postgres::Object::take(c));
            }
        }
    }
}

impl WriteSql for PgSql {
    /// Several relays may share the database.
    const SHARED: bool = true;

    async fn first_seq(&mut self) -> Result<i64> {
        let rows = self
            .rows("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE", &[])
            .await?;
        let head: i64 = rows
            .first()
            .ok_or_else(|| Error::Unavailable("the log head is missing".into()))?
            .get(0);
        Ok(head + 1)
    }

    async fn areas_version(&mut self) -> Result<i64> {
        read_areas_version(self.client().await?).await
    }

    async fn load_areas(&mut self) -> Result<Vec<AreaRow>> {
        load_areas(self.client().await?).await
    }

    async fn definitions(&mut self, what: Defined) -> Result<Vec<String>> {
        load_definitions(self.client().await?, what).await
    }

    async fn change_seqs(&mut self, hashes: &[[u8; 32]]) -> Result<FastMap<[u8; 32], i64>> {
        let keys: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
        let mut out = FastMap::default();
        for r in self
            .rows(
                "SELECT hash, seq FROM changes WHERE hash = ANY($1)",
                &[&keys],
            )
            .await?
        {
            let h: &[u8] = r.get(0);
            if let Ok(h) = <[u8; 32]>::try_from(h) {
                out.insert(h, r.get::<_, i64>(1));
            }
        }
        Ok(out)
    }

    async fn record_versions(&mut self, ids: &[String]) -> Result<FastMap<String, i64>> {
        let rows = self
            .rows(
                "SELECT id, version FROM records WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn record_rows(&mut self, ids: &[String]) -> Result<FastMap<String, RecordRow>> {
        let rows = self
            .rows(
                "SELECT id, doc, version, paths FROM records WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let row = RecordRow {
                    doc: r.get(1),
                    version: r.get(2),
                    paths: split_paths(r.get::<_, &str>(3)),
                };
                (r.get(0), row)
            })
            .collect())
    }

    async fn begin_plan(&mut self) -> Result<()> {
        Ok(())
    }

    async fn end_plan(&mut self) {
        // Back to the pool (the planner's reads are not in a transaction).
        self.client = None;
    }

    async fn insert_changes(&mut self, rows: &[ChangeRow<'_>]) -> Result<()> {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash).collect();
        let records: Vec<&str> = rows.iter().map(|r| r.record).collect();
        let bytes: Vec<&[u8]> = rows.iter().map(|r| r.bytes).collect();
        let kinds: Vec<i16> = rows.iter().map(|r| r.kind).collect();
        let befores: Vec<Option<&str>> = rows.iter().map(|r| r.before_paths).collect();
        let heads: Vec<Option<&[u8]>> = rows.iter().map(|r| r.heads).collect();
        let devices: Vec<&str> = rows.iter().map(|r| r.device).collect();
        // UNNEST: one round trip per table whatever the batch size.
        self.run(
            "INSERT INTO changes (seq, hash, record, bytes, kind, before_paths, heads, device)
             SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::text[], $4::bytea[], $5::smallint[],
                                  $6::text[], $7::bytea[], $8::text[])",
            &[&seqs, &hashes, &records, &bytes, &kinds, &befores, &heads, &devices],
        )
        .await?;
        if let Some(last) = seqs.last() {
            self.run("UPDATE log_head SET seq = $1 WHERE id = 1", &[last])
                .await?;
        }
        Ok(())
    }

    async fn insert_entry_runs(&mut self, rows: &[EntryRun<'_>]) -> Result<()> {
        let keys: Vec<&str> = rows.iter().map(|r| r.key).collect();
        let lasts: Vec<i64> = rows.iter().map(|r| r.last).collect();
        let firsts: Vec<i64> = rows.iter().map(|r| r.first).collect();
        self.run(
            "INSERT INTO entry_runs (key, last, first)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])",
            &[&keys, &lasts, &firsts],
        )
        .await?;
        Ok(())
    }

    async fn upsert_records(&mut self, rows: &[RecordRowWrite<'_>]) -> Result<()> {
        let ids: Vec<&str> = rows.iter().map(|r| r.id).collect();
        let docs: Vec<&[u8]> = rows.iter().map(|r| r.doc).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let paths: Vec<&str> = rows.iter().map(|r| r.paths.as_str()).collect();
        let views: Vec<Option<&str>> = rows.iter().map(|r| r.view).collect();
        self.run(
            "INSERT INTO records (id, doc, version, paths, view)
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::text[], $5::text[])
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, version = excluded.version,
                                            paths = excluded.paths, view = excluded.view",
            &[&ids, &docs, &versions, &paths, &views],
        )
        .await?;
        Ok(())
    }

    async fn clear_scope(&mut self, records: &[&str]) -> Result<()> {
        self.run(
            "DELETE FROM record_scope WHERE record = ANY($1)",
            &[&records],
        )
        .await?;
        Ok(())
    }

    async fn insert_scope(&mut self, rows: &[(&str, &str)]) -> Result<()> {
        let (keys, records): (Vec<&str>, Vec<&str>) = rows.iter().copied().unzip();
        self.run(
            "INSERT INTO record_scope (key, record) SELECT * FROM UNNEST($1::text[], $2::text[])
             ON CONFLICT DO NOTHING",
            &[&keys, &records],
        )
        .await?;
        Ok(())
    }

    async fn touch_devices(&mut self, rows: &[(&str, i64)]) -> Result<()> {
        let (ids, times): (Vec<&str>, Vec<i64>) = rows.iter().copied().unzip();
        self.run(
            "UPDATE devices d SET last_sync_at = t.at
             FROM UNNEST($1::text[], $2::bigint[]) AS t(id, at) WHERE d.id = t.id",
            &[&ids, &times],
        )
        .await?;
        Ok(())
    }
}

impl UploadSql for PgSql {
    async fn session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        lock: bool,
    ) -> Result<Option<Upload>> {
        let sql = if lock {
            "SELECT received, total FROM upload_sessions WHERE device = $1 AND sha256 = $2 FOR UPDATE"
        } else {
            "SELECT received, total FROM upload_sessions WHERE device = $1 AND sha256 = $2"
        };
        let row = self.row(sql, &[&device, &&sha[..]]).await?;
        Ok(row.map(|r| Upload {
            received: r.get::<_, i64>(0) as u64,
            total: r.get::<_, i64>(1) as u64,
        }))
    }

    async fn linked_size(&mut self, sha: &[u8; 32], record: &str) -> Result<Option<u64>> {
        let row = self
            .row(
                "SELECT a.size FROM attachments a JOIN attachment_records l ON l.sha256 = a.sha256
                 WHERE a.sha256 = $1 AND l.record = $2",
                &[&&sha[..], &record],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn sessions_beyond(&mut self, device: &str, keep: usize) -> Result<Vec<[u8; 32]>> {
        let rows = self
            .rows(
                "SELECT sha256 FROM upload_sessions WHERE device = $1
                 ORDER BY used_ms DESC, sha256 OFFSET $2",
                &[&device, &(keep as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| <[u8; 32]>::try_from(r.get::<_, &[u8]>(0)).ok())
            .collect())
    }

    async fn drop_session(&mut self, device: &str, sha: &[u8; 32]) -> Result<()> {
        for sql in [
            "DELETE FROM upload_chunks WHERE device = $1 AND sha256 = $2",
            "DELETE FROM upload_sessions WHERE device = $1 AND sha256 = $2",
        ] {
            self.run(sql, &[&device, &&sha[..]]).await?;
        }
        Ok(())
    }

    async fn open_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        record: &str,
        total: u64,
        now: i64,
    ) -> Result<()> {
        self.run(
            "INSERT INTO upload_sessions (device, sha256, record, total, received, used_ms)
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING",
            &[&device, &&sha[..], &record, &(total as i64), &now],
        )
        .await?;
        Ok(())
    }

    async fn advance_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: u64,
        len: u64,
        now: i64,
    ) -> Result<bool> {
        let moved = self
            .run(
                "UPDATE upload_sessions SET received = received + $4, used_ms = $5
                 WHERE device = $1 AND sha256 = $2 AND received = $3 AND received + $4 <= total",
                &[&device, &&sha[..], &(offset as i64), &(len as i64), &now],
            )
            .await?;
        Ok(moved == 1)
    }

    async fn store_piece(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        self.run(
            "INSERT INTO upload_chunks (device, sha256, \"offset\", data) VALUES ($1, $2, $3, $4)",
            &[&device, &&sha[..], &(offset as i64), &data],
        )
        .await?;
        Ok(())
    }

    async fn piece_offsets(&mut self, device: &str, sha: &[u8; 32]) -> Result<Vec<i64>> {
        let rows = self
            .rows(
                "SELECT \"offset\" FROM upload_chunks WHERE device = $1 AND sha256 = $2
                 ORDER BY \"offset\"",
                &[&device, &&sha[..]],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn piece(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: i64,
    ) -> Result<Option<Vec<u8>>> {
        let row = self
            .row(
                "SELECT data FROM upload_chunks WHERE device = $1 AND sha256 = $2 AND \"offset\" = $3",
                &[&device, &&sha[..], &offset],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn complete_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        total: u64,
    ) -> Result<Option<String>> {
        let row = self
            .row(
                "SELECT record FROM upload_sessions
                 WHERE device = $1 AND sha256 = $2 AND received = $3 AND total = $3 FOR UPDATE",
                &[&device, &&sha[..], &(total as i64)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn add_attachment(&mut self, sha: &[u8; 32], size: u64) -> Result<bool> {
        // Waits for a concurrent commit of the same content by another device, then stores nothing.
        let stored = self
            .run(
                "INSERT INTO attachments (sha256, size) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&&sha[..], &(size as i64)],
            )
            .await?;
        Ok(stored == 1)
    }

    async fn copy_pieces(&mut self, device: &str, sha: &[u8; 32]) -> Result<()> {
        self.run(
            "INSERT INTO attachment_chunks (sha256, \"offset\", data)
             SELECT sha256, \"offset\", data FROM upload_chunks WHERE device = $1 AND sha256 = $2",
            &[&device, &&sha[..]],
        )
        .await?;
        Ok(())
    }

    async fn link(&mut self, sha: &[u8; 32], record: &str) -> Result<()> {
        self.run(
            "INSERT INTO attachment_records (sha256, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&&sha[..], &record],
        )
        .await?;
        Ok(())
    }
}

impl AdminSql for PgSql {
    async fn exists(&mut self, row: Row, id: &str) -> Result<bool> {
        let sql = match row {
            Row::Area => "SELECT 1 FROM areas WHERE id = $1",
            Row::User => "SELECT 1 FROM users WHERE id = $1",
            Row::Device => "SELECT 1 FROM devices WHERE id = $1",
        };
        Ok(self.row(sql, &[&id]).await?.is_some())
    }

    async fn area_place(&mut self, id: &str) -> Result<Option<(i64, String)>> {
        let row = self
            .row(
                "SELECT level, path FROM areas WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn bump_areas_version(&mut self) -> Result<()> {
        bump_areas_version(self.client().await?).await
    }

    async fn insert_area(&mut self, a: &AreaRow) -> Result<()> {
        self.run(
            "INSERT INTO areas (id, parent, level, name, path) VALUES ($1, $2, $3, $4, $5)",
            &[&a.id, &a.parent, &a.level.rank(), &a.name, &a.path],
        )
        .await?;
        Ok(())
    }

    async fn rename_area(&mut self, id: &str, name: &str) -> Result<u64> {
        self.run("UPDATE areas SET name = $2 WHERE id = $1", &[&id, &name])
            .await
    }

    async fn set_area_parent(&mut self, id: &str, parent: &str) -> Result<()> {
        self.run(
            "UPDATE areas SET parent = $2 WHERE id = $1",
            &[&id, &parent],
        )
        .await?;
        Ok(())
    }

    async fn rewrite_area_paths(&mut self, old: &str, new: &str) -> Result<u64> {
        self.run(
            "UPDATE areas SET path = $2 || substr(path, length($1) + 1)
             WHERE substr(path, 1, length($1)) = $1",
            &[&old, &new],
        )
        .await
    }

    async fn records_under(&mut self, key: &str) -> Result<Vec<(String, String)>> {
        let rows = self
            .rows(
                "SELECT r.id, r.paths FROM record_scope s JOIN records r ON r.id = s.record
                 WHERE s.key = $1",
                &[&key],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn set_record_paths(&mut self, rows: &[(&str, &str)]) -> Result<()> {
        let (ids, paths): (Vec<&str>, Vec<&str>) = rows.iter().copied().unzip();
        self.run(
            "UPDATE records r SET paths = t.paths
             FROM UNNEST($1::text[], $2::text[]) AS t(id, paths) WHERE r.id = t.id",
            &[&ids, &paths],
        )
        .await?;
        Ok(())
    }

    async fn count(&mut self, held: Held, arg: &str) -> Result<i64> {
        let sql = match held {
            Held::Children => "SELECT count(*) FROM areas WHERE parent = $1",
            Held::Users => "SELECT count(*) FROM users WHERE area = $1",
            Held::Records => "SELECT count(*) FROM record_scope WHERE key = $1",
            Held::Schedules => "SELECT count(*) FROM schedules WHERE area = $1",
            Held::Forms => "SELECT count(*) FROM forms WHERE area = $1",
        };
        let row = self.row(sql, &[&arg]).await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn delete_entry_runs(&mut self, from: &str, to: &str) -> Result<()> {
        self.run(
            "DELETE FROM entry_runs WHERE key >= $1 AND key < $2",
            &[&from, &to],
        )
        .await?;
        Ok(())
    }

    async fn delete_area(&mut self, id: &str) -> Result<()> {
        self.run("DELETE FROM areas WHERE id = $1", &[&id]).await?;
        Ok(())
    }

    async fn insert_user(&mut self, u: &UserRow) -> Result<()> {
        self.run(
            "INSERT INTO users (id, name, role, area) VALUES ($1, $2, $3, $4)",
            &[&u.id, &u.name, &u.role.as_str(), &u.area],
        )
        .await?;
        Ok(())
    }

    async fn update_user(&mut self, id: &str, ch: &UserChanges) -> Result<u64> {
        self.run(
            "UPDATE users SET name = COALESCE($2, name), role = COALESCE($3, role),
                              area = COALESCE($4, area) WHERE id = $1",
            &[&id, &ch.name, &ch.role.map(|r| r.as_str()), &ch.area],
        )
        .await
    }

    async fn insert_device(
        &mut self,
        id: &str,
        user: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<()> {
        self.run(
            "INSERT INTO devices (id, user_id, token_hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&id, &user, &&token_hash[..], &now],
        )
        .await?;
        Ok(())
    }

    async fn put_definition(
        &mut self,
        what: Defined,
        id: &str,
        area: &str,
        definition: &str,
    ) -> Result<()> {
        let sql = match what {
            Defined::Schedule => {
                "INSERT INTO schedules (id, area, definition) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET area = excluded.area, definition = excluded.definition"
            }
            Defined::Form => {
                "INSERT INTO forms (id, area, definition) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET area = excluded.area, definition = excluded.definition"
            }
        };
        self.run(sql, &[&id, &area, &definition]).await?;
        Ok(())
    }

    async fn delete_definition(&mut self, what: Defined, id: &str) -> Result<u64> {
        let sql = match what {
            Defined::Schedule => "DELETE FROM schedules WHERE id = $1",
            Defined::Form => "DELETE FROM forms WHERE id = $1",
        };
        self.run(sql, &[&id]).await
    }
}

impl ReadSql for PgSql {
    async fn begin_read(&mut self) -> Result<()> {
        Ok(())
    }

    async fn end_read(&mut self) {}

    async fn log_head(&mut self) -> Result<i64> {
        let row = self
            .row("SELECT seq FROM log_head WHERE id = 1", &[])
            .await?
            .ok_or_else(|| Error::Unavailable("the log head is missing".into()))?;
        Ok(row.get(0))
    }

    async fn log_entries(
        &mut self,
        scope: &Scope,
        device: &str,
        after: i64,
        head: i64,
        n: i64,
        take: Take<'_, RawEntry>,
    ) -> Result<()> {
        // Entries other than plain changes may be delivered as the whole document: their weight is
        // the document's.
        let columns = "c.seq, c.record, c.bytes, c.kind, c.before_paths, c.heads,
                       c.device IS NOT DISTINCT FROM $4,
                       CASE WHEN c.kind <> 0
                            THEN (SELECT octet_length(doc)::bigint FROM records WHERE id = c.record) END,
                       (SELECT view FROM records WHERE id = c.record AND version = c.seq)";
        let c = self.client().await?;
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
                     FROM entry_runs e
                     JOIN changes c ON c.seq >= greatest(e.first, $1::bigint + 1) AND c.seq <= least(e.last, $2)
                     WHERE e.key = $5 AND e.last > $1 AND e.first <= $2
                       AND (c.kind <> 0 OR c.device IS DISTINCT FROM $4)
                     ORDER BY e.last, c.seq LIMIT $3"
                ))
                .await?;
            let params: [&(dyn ToSql + Sync); 5] = [&after, &head, &n, &device, &scope.prefix];
            c.query_raw(&st, params).await?
        };
        let mut rows = std::pin::pin!(rows);
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
                view: r.get(8),
            };
            if !take(e) {
                break;
            }
        }
        Ok(())
    }

    async fn docs(&mut self, ids: &[String]) -> Result<HashMap<String, Vec<u8>>> {
        let rows = self
            .rows("SELECT id, doc FROM records WHERE id = ANY($1)", &[&ids])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn record_views(
        &mut self,
        scope: &Scope,
        take: Take<'_, (String, Option<String>, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let c = self.client().await?;
        let doc = "CASE WHEN r.view IS NULL THEN r.doc END";
        let rows = if scope.is_operator() {
            let st = c
                .prepare_cached(&format!(
                    "SELECT r.id, r.view, {doc} FROM records r WHERE length(r.doc) > 0"
                ))
                .await?;
            c.query_raw(&st, std::iter::empty::<&(dyn ToSql + Sync)>())
                .await?
        } else {
            let st = c
                .prepare_cached(&format!(
                    "SELECT r.id, r.view, {doc} FROM record_scope s JOIN records r ON r.id = s.record
                     WHERE s.key = $1 AND length(r.doc) > 0"
                ))
                .await?;
            let params: [&(dyn ToSql + Sync); 1] = [&scope.prefix];
            c.query_raw(&st, params).await?
        };
        let mut rows = std::pin::pin!(rows);
        while let Some(r) = rows.try_next().await? {
            if !take((r.get(0), r.get(1), r.get(2))) {
                break;
            }
        }
        Ok(())
    }

    async fn records(
        &mut self,
        scope: &Scope,
        after: &str,
        n: i64,
        take: Take<'_, SnapshotRow>,
    ) -> Result<()> {
        let c = self.client().await?;
        let rows = if scope.is_operator() {
            let st = c
                .prepare_cached(
                    "SELECT id, doc, view FROM records WHERE id > $1 AND length(doc) > 0 ORDER BY id LIMIT $2",
                )
                .await?;
            let params: [&(dyn ToSql + Sync); 2] = [&after, &n];
            c.query_raw(&st, params).await?
        } else {
            let st = c
                .prepare_cached(
                    "SELECT r.id, r.doc, r.view FROM record_scope s JOIN records r ON r.id = s.record
                     WHERE s.key = $3 AND s.record > $1 AND length(r.doc) > 0
                     ORDER BY s.record LIMIT $2",
                )
                .await?;
            let params: [&(dyn ToSql + Sync); 3] = [&after, &n, &scope.prefix];
            c.query_raw(&st, params).await?
        };
        let mut rows = std::pin::pin!(rows);
        while let Some(r) = rows.try_next().await? {
            let row = SnapshotRow {
                id: r.get(0),
                doc: r.get(1),
                view: r.get(2),
            };
            if !take(row) {
                break;
            }
        }
        Ok(())
    }
}

impl super::console::ConsoleSql for PgSql {
    async fn exec(
        &mut self,
        sql: &'static str,
        params: &[super::console::Value<'_>],
    ) -> Result<u64> {
        let owned = pg_values(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        self.run(sql, &refs).await
    }

    async fn query(
        &mut self,
        sql: &'static str,
        params: &[super::console::Value<'_>],
    ) -> Result<Vec<Vec<super::console::Owned>>> {
        use super::console::Owned;
        use tokio_postgres::types::Type;
        let owned = pg_values(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = self.rows(sql, &refs).await?;
        Ok(rows
            .iter()
            .map(|r| {
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match *c.type_() {
                        Type::INT8 => r.get::<_, Option<i64>>(i).map_or(Owned::Null, Owned::Int),
                        Type::INT4 => r
                            .get::<_, Option<i32>>(i)
                            .map_or(Owned::Null, |v| Owned::Int(i64::from(v))),
                        _ => r
                            .get::<_, Option<String>>(i)
                            .map_or(Owned::Null, Owned::Text),
                    })
                    .collect()
            })
            .collect())
    }
}

fn pg_values(params: &[super::console::Value<'_>]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    use super::console::Value;
    params
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Text(t) => Box::new((*t).to_owned()),
                Value::OptText(t) => Box::new(t.map(str::to_owned)),
                Value::Int(i) => Box::new(*i),
                Value::Blob(b) => Box::new(b.to_vec()),
            }
        })
        .collect()
}
