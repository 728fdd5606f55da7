//! Attachment routes: content-addressed, resumable uploads in per-device sessions, and downloads; every
//! route checked against the caller's scope, and the bytes streamed both ways.
//!
//! - An upload belongs to the device that started it (a session keyed by device and hash): another
//!   device sending the same content gets its own session, so nobody can finish, spoil or probe
//!   someone else's partial upload. Only a full session whose content hashes to its name becomes the
//!   attachment, stored once whoever finished first, and only that session links it to a record:
//!   knowing a hash never opens its bytes.
//! - A request body is stored in pieces of at most [`PIECE_BYTES`] as it arrives; the completion check
//!   hashes piece by piece; a download is sent piece by piece from the database. No request holds a
//!   whole attachment in memory.
//! - One size limit, shared with the device: [`MAX_ATTACHMENT_BYTES`] (413 above it); a chunk is at
//!   most the request body limit (413 above it).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use gridwork_protocol::limits::MAX_ATTACHMENT_BYTES;
use gridwork_protocol::wire::AttachmentPutResponse;

use super::{params, AppState, Caller, Params};
use crate::error::ApiError;
use crate::storage::{Append, Begin, DeviceAuth, Finish, Piece, PIECE_BYTES};

type St = State<Arc<AppState>>;

const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");

fn parse_sha(s: &str) -> Result<[u8; 32], ApiError> {
    let bad =
        || ApiError::bad_request("attachment name must be 64 lowercase hex characters (SHA-256)");
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let v = hex::decode(s).map_err(|_| bad())?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| bad())
}

/// The bytes a `PUT` carries: `len` bytes from `start` of an attachment of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkRange {
    start: u64,
    len: u64,
    total: u64,
}

/// `Content-Range: bytes <start>-<end>/<total>`, or a one-shot upload of `Content-Length` bytes;
/// `None` for a one-shot upload of unknown length (a chunked body, or an empty one sent without a
/// length). The declared length is checked against the body as it streams in.
fn parse_range(h: &HeaderMap) -> Result<Option<ChunkRange>, ApiError> {
    let length = match h.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length must be a number"))?,
        ),
    };
    let Some(v) = h.get(header::CONTENT_RANGE) else {
        return Ok(length.map(|len| ChunkRange {
            start: 0,
            len,
            total: len,
        }));
    };
    let bad = || ApiError::bad_request("Content-Range must be `bytes <start>-<end>/<total>`");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = s.split_once('/').ok_or_else(bad)?;
    let total: u64 = total.trim().parse().map_err(|_| bad())?;
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start || end >= total || length.is_some_and(|l| l != end - start + 1) {
        return Err(ApiError::bad_request(
            "Content-Range does not match the body",
        ));
    }
    Ok(Some(ChunkRange {
        start,
        len: end - start + 1,
        total,
    }))
}

/// A one-shot upload of unknown length: read whole, which the body limit bounds (it is one chunk).
async fn read_unsized(body: Body, limit: usize) -> Result<(ChunkRange, Body), ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(format!("a chunk holds at most {limit} bytes")))?;
    let len = bytes.len() as u64;
    Ok((
        ChunkRange {
            start: 0,
            len,
            total: len,
        },
        Body::from(bytes),
    ))
}

/// Reads and drops the rest of a refused chunk (at most its declared length, within the body
/// limit), so the answer reaches a client that is still sending instead of a reset connection.
async fn drain(body: Body, len: u64) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(d)) = stream.next().await {
        seen += d.len() as u64;
        if seen > len {
            break;
        }
    }
}

fn wrong_offset(offset: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "bad_request",
        format!("chunk must start at offset {offset}"),
    )
    .with_header(UPLOAD_OFFSET, offset)
}

fn put_answer(sha: String, size: u64, complete: bool) -> Response {
    Json(AttachmentPutResponse {
        sha256: sha,
        size,
        complete,
    })
    .into_response()
}

/// Is the attachment linked to a record in the caller's scope?
async fn visible(st: &AppState, c: &DeviceAuth, sha: [u8; 32]) -> Result<bool, ApiError> {
    let paths = st.store.attachment_paths(sha).await?;
    Ok(c.scope().allows_any(&paths))
}

pub(super) async fn att_put(
    State(st): St,
    Caller(c): Caller,
    Path(sha): Path<String>,
    q: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let sha_b = parse_sha(&sha)?;
    let record = record_param(q)?.ok_or_else(|| ApiError::bad_request("record is required"))?;
    let (range, body) = match parse_range(&headers)? {
        Some(r) => (r, body),
        None => read_unsized(body, st.limits.max_body_bytes).await?,
    };
    // Too large: answered at once, without reading what may be a very long body.
    if range.total > MAX_ATTACHMENT_BYTES {
        return Err(ApiError::too_large(format!(
            "an attachment holds at most {MAX_ATTACHMENT_BYTES} bytes"
        )));
    }
    if range.len > st.limits.max_body_bytes as u64 {
        return Err(ApiError::too_large(format!(
            "a chunk holds at most {} bytes",
            st.limits.max_body_bytes
        )));
    }
    let body = match begin(&st, &c, sha_b, &record, range).await {
        Ok(None) => body,
        Ok(Some(done)) => {
            drain(body, range.len).await;
            return Ok(put_answer(sha, done, true));
        }
        Err(e) => {
            drain(body, range.len).await;
            return Err(e);
        }
    };
    let received = receive(&st, &c.device_id, sha_b, range, body).await?;
    if received < range.total {
        return Ok(put_answer(sha, received, false));
    }
    match st.store.upload_finish(&c.device_id, sha_b, &record).await? {
        Finish::Complete { size } => {
            tracing::info!(device = %c.device_id, attachment = %sha, size, "attachment complete");
            Ok(put_answer(sha, size, true))
        }
        Finish::HashMismatch => {
            tracing::info!(device = %c.device_id, attachment = %sha, "attachment hash mismatch, discarded");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                "content does not match its SHA-256; upload discarded",
            ))
        }
        Finish::Incomplete { received } => Err(wrong_offset(received)),
    }
}

/// The `record` query parameter: `None` when absent, `400` when it is not a record id.
fn record_param(q: Params) -> Result<Option<String>, ApiError> {
    match params(q)?.remove("record") {
        None => Ok(None),
        Some(r) if gridwork_protocol::doc::is_valid_record_id(&r) => Ok(Some(r)),
        Some(_) => Err(ApiError::bad_request("record must be a record id")),
    }
}

/// May the caller attach something to `record`? The record must be in the caller's scope. A record the
/// relay has not seen yet has no area, so it cannot leak anything: allowed, and the download check
/// applies once the record exists.
async fn may_attach(st: &AppState, c: &DeviceAuth, record: &str) -> Result<(), ApiError> {
    match st.store.record_paths(record).await? {
        Some(paths) if !c.scope().allows_any(&paths) => {
            Err(ApiError::out_of_scope("record outside your areas"))
        }
        _ => Ok(()),
    }
}

/// Checks the caller's scope over `record` and opens or checks its upload session for `range`;
/// `Some(size)` when the record already has the complete attachment (nothing to store).
async fn begin(
    st: &AppState,
    c: &DeviceAuth,
    sha: [u8; 32],
    record: &str,
    range: ChunkRange,
) -> Result<Option<u64>, ApiError> {
    may_attach(st, c, record).await?;
    match st
        .store
        .upload_begin(&c.device_id, sha, record, range.start, range.total)
        .await?
    {
        Begin::Ready => Ok(None),
        Begin::AlreadyLinked { size } => Ok(Some(size)),
        Begin::WrongOffset { offset } => Err(wrong_offset(offset)),
        Begin::WrongTotal { total } => Err(ApiError::bad_request(format!(
            "upload in progress has total size {total}"
        ))),
    }
}

/// Streams the body into the device's session in pieces of at most [`PIECE_BYTES`]; returns the
/// session's offset after the last piece. Pieces stored before the body broke off stay: the device
/// resumes after them.
async fn receive(
    st: &AppState,
    device: &str,
    sha: [u8; 32],
    range: ChunkRange,
    body: Body,
) -> Result<u64, ApiError> {
    let mut stream = body.into_data_stream();
    let mut offset = range.start;
    let mut seen = 0u64;
    let mut piece: Vec<u8> = Vec::with_capacity(PIECE_BYTES.min(range.len as usize));
    let failure = loop {
        let mut data = match stream.next().await {
            None => break None,
            Some(Err(_)) => break Some(ApiError::bad_request("the body broke off")),
            Some(Ok(d)) => d,
        };
        seen += data.len() as u64;
        if seen > range.len {
            break Some(ApiError::bad_request(
                "the body is longer than Content-Range says",
            ));
        }
        while !data.is_empty() {
            let take = (PIECE_BYTES - piece.len()).min(data.len());
            piece.extend_from_slice(&data.split_to(take));
            if piece.len() == PIECE_BYTES {
                offset = store_piece(st, device, sha, offset, &mut piece).await?;
            }
        }
    };
    if !piece.is_empty() {
        offset = store_piece(st, device, sha, offset, &mut piece).await?;
    }
    match failure {
        Some(e) => Err(e),
        None if seen < range.len => Err(ApiError::bad_request(
            "the body is shorter than Content-Range says",
        )),
        None => Ok(offset),
    }
}

async fn store_piece(
    st: &AppState,
    device: &str,
    sha: [u8; 32],
    offset: u64,
    piece: &mut Vec<u8>,
) -> Result<u64, ApiError> {
    let data = Bytes::from(std::mem::replace(piece, Vec::with_capacity(PIECE_BYTES)));
    match st.store.upload_append(device, sha, offset, data).await? {
        Append::Stored { received } => Ok(received),
        Append::WrongOffset { offset } => Err(wrong_offset(offset)),
    }
}

/// `308` with the offset of the caller's own upload; `200` with the size when the attachment is
/// complete and linked to a record in the caller's scope; otherwise `404`, which says nothing about
/// other devices' uploads or other areas' attachments.
///
/// With `?record=<id>`, a `200` also links the attachment to that record, which must be the caller's
/// (in its scope, or not yet known to the relay, as for `PUT`; else `403`): a device whose record holds
/// content the relay already has need not upload it again, and the record's readers can download it.
/// Only a caller that may already read the attachment gets that far, so knowing a hash is never enough
/// to link, and then read, someone else's attachment.
pub(super) async fn att_head(
    State(st): St,
    Caller(c): Caller,
    Path(sha): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let sha_b = parse_sha(&sha)?;
    let record = record_param(q)?;
    if let Some(u) = st.store.upload_state(&c.device_id, sha_b).await? {
        return Ok((
            StatusCode::PERMANENT_REDIRECT,
            [(UPLOAD_OFFSET, u.received.to_string())],
        )
            .into_response());
    }
    let Some(size) = st.store.attachment_size(sha_b).await? else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    if !visible(&st, &c, sha_b).await? {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    if let Some(record) = record {
        may_attach(&st, &c, &record).await?;
        if !st.store.attachment_link(sha_b, &record).await? {
            return Ok(StatusCode::NOT_FOUND.into_response());
        }
        tracing::debug!(device = %c.device_id, attachment = %sha, "attachment linked to another record");
    }
    Ok((StatusCode::OK, [(UPLOAD_OFFSET, size.to_string())]).into_response())
}

/// The reads that send a complete attachment: every stored piece, in ranges of at most
/// [`PIECE_BYTES`] (rows of older relays hold a whole attachment).
fn read_plan(pieces: &[Piece]) -> Vec<(Piece, u64, usize)> {
    let step = PIECE_BYTES as u64;
    pieces
        .iter()
        .flat_map(|p| {
            (0..p.len.div_ceil(step)).map(move |i| {
                let from = i * step;
                (*p, from, (p.len - from).min(step) as usize)
            })
        })
        .collect()
}

pub(super) async fn att_get(
    State(st): St,
    Caller(c): Caller,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    let sha_b = parse_sha(&sha)?;
    let size = st
        .store
        .attachment_size(sha_b)
        .await?
        .ok_or_else(|| ApiError::not_found("no such attachment"))?;
    if !visible(&st, &c, sha_b).await? {
        return Err(ApiError::out_of_scope(
            "attachment not linked to a record in your areas",
        ));
    }
    let pieces = st.store.attachment_pieces(sha_b).await?;
    if pieces.iter().map(|p| p.len).sum::<u64>() != size {
        tracing::error!(attachment = %sha, "stored pieces do not add up to the attachment size");
        return Err(ApiError::internal());
    }
    let store = st.store.clone();
    let body = futures_util::stream::iter(read_plan(&pieces)).then(move |(piece, from, len)| {
        let store = store.clone();
        async move {
            store
                .attachment_read(sha_b, piece, from, len)
                .await
                .map(Bytes::from)
                .map_err(|e| {
                    tracing::warn!(error = %e, "attachment download failed midway");
                    std::io::Error::other("attachment read failed")
                })
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cover_every_piece_in_bounded_ranges() {
        let step = PIECE_BYTES as u64;
        let pieces = [
            Piece { offset: 0, len: 3 },
            Piece {
                offset: 3,
                len: 2 * step + 1,
            },
            Piece {
                offset: 2 * step as i64 + 4,
                len: 0,
            },
        ];
        let plan = read_plan(&pieces);
        assert_eq!(
            plan.iter()
                .map(|(p, f, l)| (p.offset, *f, *l))
                .collect::<Vec<_>>(),
            [
                (0, 0, 3),
                (3, 0, PIECE_BYTES),
                (3, step, PIECE_BYTES),
                (3, 2 * step, 1)
            ]
        );
    }

    #[test]
    fn ranges() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert_eq!(
            parse_range(&h(&[("content-range", "bytes 10-19/100")])).unwrap(),
            Some(ChunkRange {
                start: 10,
                len: 10,
                total: 100
            })
        );
        assert_eq!(
            parse_range(&h(&[("content-length", "7")])).unwrap(),
            Some(ChunkRange {
                start: 0,
                len: 7,
                total: 7
            })
        );
        assert_eq!(parse_range(&h(&[])).unwrap(), None);
        for bad in ["bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "bytes 0-1"] {
            assert_eq!(
                parse_range(&h(&[("content-range", bad)]))
                    .unwrap_err()
                    .status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert!(parse_range(&h(&[
            ("content-range", "bytes 0-9/20"),
            ("content-length", "9")
        ]))
        .is_err());
    }
}
