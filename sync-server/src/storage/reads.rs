//! Pull and snapshot pages, read once for both backends: the log's head first, then rows in order
//! until the page is full ([`PageRows`]: at most `items + 1` rows, or past its bytes), then the
//! documents of entries delivered whole. A backend only supplies the SQL: [`ReadSql`].

use std::collections::{HashMap, HashSet};
use std::future::Future;

use super::sql::Transact;
use super::{finish_snapshot, PageLimit, PageRows, RawEntry, RawPull, SnapshotPage, SnapshotRow};
use crate::error::Result;
use gridwork_protocol::scope::Scope;

/// A callback that takes each row read and says whether to read on.
pub(crate) type Take<'a, T> = &'a mut (dyn FnMut(T) -> bool + Send);

/// The SQL of pages: primitives without decisions.
pub(crate) trait ReadSql: Transact {
    /// Starts a read of one consistent state, where the backend gives one at no cost (SQLite's read
    /// transaction). PostgreSQL needs none: seqs commit in order under the log head's lock, so every
    /// entry up to a committed head is visible once the head is.
    fn begin_read(&mut self) -> impl Future<Output = Result<()>> + Send;
    fn end_read(&mut self) -> impl Future<Output = ()> + Send;
    /// The log's committed head.
    fn log_head(&mut self) -> impl Future<Output = Result<i64>> + Send;
    /// Log entries in `(after, head]` visible to `scope`, except `device`'s own plain changes, in seq
    /// order, at most `n`, each given to `take` until it says stop.
    #[allow(clippy::too_many_arguments)]
    fn log_entries(
        &mut self,
        scope: &Scope,
        device: &str,
        after: i64,
        head: i64,
        n: i64,
        take: Take<'_, RawEntry>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Stored documents of the records among `ids` that exist.
    fn docs(
        &mut self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Vec<u8>>>> + Send;
    /// Every record visible to `scope`: its id, its view, and its document when it has no view (rows
    /// written before views were kept), each given to `take`.
    fn record_views(
        &mut self,
        scope: &Scope,
        take: Take<'_, (String, Option<String>, Option<Vec<u8>>)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records visible to `scope` with an id after `after`, in id order, at most `n`, each given to
    /// `take` until it says stop.
    fn records(
        &mut self,
        scope: &Scope,
        after: &str,
        n: i64,
        take: Take<'_, SnapshotRow>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Runs `f` as one read ([`ReadSql::begin_read`]).
async fn in_read<S: ReadSql, T>(
    sql: &mut S,
    f: impl AsyncFnOnce(&mut S) -> Result<T>,
) -> Result<T> {
    sql.begin_read().await?;
    let out = f(sql).await;
    sql.end_read().await;
    out
}

/// Entries after `after` visible to `scope`, except `device`'s own plain changes, read until the page
/// is full, and the documents of those delivered whole.
pub(crate) async fn pull<S: ReadSql>(
    sql: &mut S,
    scope: &Scope,
    device: &str,
    after: i64,
    limit: PageLimit,
) -> Result<RawPull> {
    in_read(sql, async |sql: &mut S| {
        let head = sql.log_head().await?;
        let mut page = PageRows::new(limit);
        let n = (limit.items + 1) as i64;
        sql.log_entries(scope, device, after, head, n, &mut |e: RawEntry| {
            let size = e.page_bytes(scope);
            page.push(e, size)
        })
        .await?;
        let need: Vec<String> = page
            .rows
            .iter()
            .filter(|e| e.needs_doc(scope))
            .map(|e| e.record.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let docs = if need.is_empty() {
            HashMap::new()
        } else {
            sql.docs(&need).await?
        };
        Ok(RawPull {
            head,
            entries: page.rows,
            complete: page.complete,
            docs,
        })
    })
    .await
}

/// Records in scope after `after`, by id, read until the page is full.
pub(crate) async fn snapshot<S: ReadSql>(
    sql: &mut S,
    scope: &Scope,
    after: Option<&str>,
    limit: PageLimit,
) -> Result<SnapshotPage> {
    in_read(sql, async |sql: &mut S| {
        let head = sql.log_head().await?;
        let mut page = PageRows::new(limit);
        let n = (limit.items + 1) as i64;
        sql.records(scope, after.unwrap_or(""), n, &mut |row: SnapshotRow| {
            let size = row.weight();
            page.push(row, size)
        })
        .await?;
        Ok(finish_snapshot(head, page, limit))
    })
    .await
}

/// Folds `f` over every record visible to `scope`, one at a time, read from its view (or, without
/// one, from its document): the same record views the devices keep. Statistics, duplicate candidates
/// and exports over a whole city's records go through it without holding them all.
pub(crate) async fn fold_scope_records<S: ReadSql, A: Send>(
    sql: &mut S,
    scope: &Scope,
    mut acc: A,
    mut f: impl FnMut(&mut A, gridwork_protocol::model::Record) + Send,
) -> Result<A> {
    in_read(sql, async |sql: &mut S| {
        sql.record_views(scope, &mut |(id, view, doc)| {
            let record = match (view, doc) {
                (Some(v), _) => serde_json::from_str(&v).ok(),
                (None, Some(d)) => automerge::Automerge::load(&d)
                    .ok()
                    .and_then(|doc| gridwork_protocol::doc::read_record(&id, &doc)),
                (None, None) => None,
            };
            // A record that does not read is left out, as a device would not list it either.
            if let Some(r) = record {
                f(&mut acc, r);
            }
            true
        })
        .await
    })
    .await?;
    Ok(acc)
}
