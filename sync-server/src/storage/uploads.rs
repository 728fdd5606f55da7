//! Resumable attachment uploads, one state machine for both backends.
//!
//! A device uploads an attachment in chunks into a session of its own (`upload_sessions`, pieces in
//! `upload_chunks`): a session starts at offset 0, each piece must start where the session is, and
//! a full session is hashed piece by piece; only content that hashes to its name becomes an
//! attachment (stored once, however many devices upload it) and is linked to its records. A device
//! keeps at most [`MAX_UPLOADS_PER_DEVICE`] sessions, dropping its least recently used one. A backend
//! only supplies the SQL: [`UploadSql`].

use std::future::Future;

use sha2::{Digest, Sha256};

use super::sql::{in_transaction, Transact};
use super::{Append, Begin, Digested, Finish, Upload, MAX_UPLOADS_PER_DEVICE};
use crate::error::Result;

/// The SQL of uploads: primitives without decisions. `lock` asks a backend with row locks to hold
/// the row until the transaction ends (SQLite's write transaction holds the whole database).
pub(crate) trait UploadSql: Transact {
    fn session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        lock: bool,
    ) -> impl Future<Output = Result<Option<Upload>>> + Send;
    /// Size of a complete attachment already linked to `record`.
    fn linked_size(
        &mut self,
        sha: &[u8; 32],
        record: &str,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// The device's sessions after its `keep` most recently used ones.
    fn sessions_beyond(
        &mut self,
        device: &str,
        keep: usize,
    ) -> impl Future<Output = Result<Vec<[u8; 32]>>> + Send;
    /// Drops a session and its pieces.
    fn drop_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
    ) -> impl Future<Output = Result<()>> + Send;
    /// A new, empty session (nothing when a concurrent request of the device made it meanwhile).
    fn open_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        record: &str,
        total: u64,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Moves a session that is at `offset` on by `len`, if that stays within its total; whether it
    /// moved.
    fn advance_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: u64,
        len: u64,
        now: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn store_piece(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: u64,
        data: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Offsets of a session's pieces, in order.
    fn piece_offsets(
        &mut self,
        device: &str,
        sha: &[u8; 32],
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;
    fn piece(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        offset: i64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// The record of the device's session if it holds exactly `total` bytes of `total` (locked).
    fn complete_session(
        &mut self,
        device: &str,
        sha: &[u8; 32],
        total: u64,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
    /// A new attachment of `size` bytes; `false` when it is stored already (after waiting for a
    /// concurrent store of the same content to commit).
    fn add_attachment(
        &mut self,
        sha: &[u8; 32],
        size: u64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Copies a session's pieces into the attachment of the same content.
    fn copy_pieces(
        &mut self,
        device: &str,
        sha: &[u8; 32],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Links an attachment to a record (nothing when linked already).
    fn link(&mut self, sha: &[u8; 32], record: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The device's session of `sha`, if it has one.
pub(crate) async fn state<S: UploadSql>(
    sql: &mut S,
    device: &str,
    sha: &[u8; 32],
) -> Result<Option<Upload>> {
    sql.session(device, sha, false).await
}

/// Opens or checks the device's session for a chunk `start..` of an attachment of `total` bytes for
/// `record`.
pub(crate) async fn begin<S: UploadSql>(
    sql: &mut S,
    device: &str,
    sha: &[u8; 32],
    record: &str,
    start: u64,
    total: u64,
    now: i64,
) -> Result<Begin> {
    in_transaction(sql, async |sql: &mut S| {
        Ok(match sql.session(device, sha, true).await? {
            Some(u) if u.total != total => Begin::WrongTotal { total: u.total },
            Some(u) if u.received != start => Begin::WrongOffset { offset: u.received },
            Some(_) => Begin::Ready,
            None => {
                if let Some(size) = sql.linked_size(sha, record).await? {
                    return Ok(Begin::AlreadyLinked { size });
                }
                if start != 0 {
                    return Ok(Begin::WrongOffset { offset: 0 });
                }
                for old in sql
                    .sessions_beyond(device, MAX_UPLOADS_PER_DEVICE - 1)
                    .await?
                {
                    sql.drop_session(device, &old).await?;
                }
                // A concurrent first chunk of the same device may have opened it: either way the
                // appends decide, by offset.
                sql.open_session(device, sha, record, total, now).await?;
                Begin::Ready
            }
        })
    })
    .await
}

/// Appends one piece at `offset` of the device's session.
pub(crate) async fn append<S: UploadSql>(
    sql: &mut S,
    device: &str,
    sha: &[u8; 32],
    offset: u64,
    data: &[u8],
    now: i64,
) -> Result<Append> {
    in_transaction(sql, async |sql: &mut S| {
        let len = data.len() as u64;
        if !sql.advance_session(device, sha, offset, len, now).await? {
            let at = sql.session(device, sha, false).await?;
            return Ok(Append::WrongOffset {
                offset: at.map_or(0, |u| u.received),
            });
        }
        sql.store_piece(device, sha, offset, data).await?;
        Ok(Append::Stored {
            received: offset + len,
        })
    })
    .await
}

/// Finishes a full session: hashes it piece by piece; on a match stores the content (unless some
/// device stored it already) and links it to the session's record and to `record`; on a mismatch
/// discards the session.
pub(crate) async fn finish<S: UploadSql>(
    sql: &mut S,
    device: &str,
    sha: &[u8; 32],
    record: &str,
) -> Result<Finish> {
    let total = match digest(sql, device, sha).await? {
        Digested::Partial { received } => return Ok(Finish::Incomplete { received }),
        Digested::Full { digest, .. } if digest != *sha => {
            in_transaction(sql, async |sql: &mut S| sql.drop_session(device, sha).await).await?;
            return Ok(Finish::HashMismatch);
        }
        Digested::Full { total, .. } => total,
    };
    let done = in_transaction(sql, async |sql: &mut S| {
        let Some(session_record) = sql.complete_session(device, sha, total).await? else {
            return Ok(false);
        };
        if sql.add_attachment(sha, total).await? {
            sql.copy_pieces(device, sha).await?;
        }
        sql.drop_session(device, sha).await?;
        for r in [session_record.as_str(), record] {
            sql.link(sha, r).await?;
        }
        Ok(true)
    })
    .await?;
    if done {
        return Ok(Finish::Complete { size: total });
    }
    // The session changed between hashing and committing (a concurrent request of the same device):
    // nothing was stored; say where the session stands now.
    let now = state(sql, device, sha).await?;
    Ok(Finish::Incomplete {
        received: now.map_or(0, |u| u.received),
    })
}

/// Hashes a full session one piece at a time (one piece in memory), outside any write transaction:
/// committing checks again that the session is the one hashed.
async fn digest<S: UploadSql>(sql: &mut S, device: &str, sha: &[u8; 32]) -> Result<Digested> {
    let Some(u) = sql.session(device, sha, false).await? else {
        return Ok(Digested::Partial { received: 0 });
    };
    if u.received < u.total {
        return Ok(Digested::Partial {
            received: u.received,
        });
    }
    let mut hasher = Sha256::new();
    for offset in sql.piece_offsets(device, sha).await? {
        match sql.piece(device, sha, offset).await? {
            Some(data) => hasher.update(&data),
            // Dropped meanwhile (the device started over, or evicted it).
            None => {
                let now = sql.session(device, sha, false).await?;
                return Ok(Digested::Partial {
                    received: now.map_or(0, |u| u.received),
                });
            }
        }
    }
    Ok(Digested::Full {
        total: u.total,
        digest: hasher.finalize().into(),
    })
}
