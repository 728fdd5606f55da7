//! Attachment routes: content-addressed, resumable uploads and scope-checked downloads.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridwork_protocol::wire::AttachmentPutResponse;

use super::{params, AppState, Body, Caller, Params};
use crate::error::ApiError;
use crate::storage::{AttachmentState, PutChunk, PutOutcome};

type St = State<Arc<AppState>>;

const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
/// Largest attachment accepted (uploaded in chunks of at most the body limit).
const MAX_ATTACHMENT_BYTES: u64 = 1 << 30;

fn parse_sha(s: &str) -> Result<[u8; 32], ApiError> {
    let bad =
        || ApiError::bad_request("attachment name must be 64 lowercase hex characters (SHA-256)");
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let v = hex::decode(s).map_err(|_| bad())?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| bad())
}

/// `bytes <start>-<end>/<total>` -> (start, total); checks the range against the body length.
fn parse_range(h: &HeaderMap, len: u64) -> Result<(u64, u64), ApiError> {
    let Some(v) = h.get(header::CONTENT_RANGE) else {
        return Ok((0, len));
    };
    let bad = || ApiError::bad_request("Content-Range must be `bytes <start>-<end>/<total>`");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = s.split_once('/').ok_or_else(bad)?;
    let total: u64 = total.trim().parse().map_err(|_| bad())?;
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start || end - start + 1 != len || end >= total {
        return Err(ApiError::bad_request(
            "Content-Range does not match the body",
        ));
    }
    Ok((start, total))
}

pub(super) async fn att_put(
    State(st): St,
    Caller(c): Caller,
    Path(sha): Path<String>,
    q: Params,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let sha_b = parse_sha(&sha)?;
    let p = params(q)?;
    let record = p
        .get("record")
        .filter(|r| gridwork_protocol::doc::is_valid_record_id(r))
        .cloned()
        .ok_or_else(|| ApiError::bad_request("record must be a record id"))?;
    let (start, total) = parse_range(&headers, body.len() as u64)?;
    if total > MAX_ATTACHMENT_BYTES {
        return Err(ApiError::too_large("attachment too large"));
    }
    // A record the relay has not seen yet has no area, so it cannot leak anything: allowed, and the
    // download check applies once the record exists.
    if let Some(paths) = st.store.record_paths(&record).await? {
        if !c.scope().allows_any(&paths) {
            return Err(ApiError::out_of_scope("record outside your areas"));
        }
    }
    let out = st
        .store
        .attachment_put(PutChunk {
            sha256: sha_b,
            record,
            start,
            total,
            data: body,
        })
        .await?;
    match out {
        PutOutcome::Stored {
            received, complete, ..
        } => {
            if complete {
                tracing::info!(device = %c.device_id, attachment = %sha, size = received, "attachment complete");
            }
            Ok(Json(AttachmentPutResponse {
                sha256: sha,
                size: received,
                complete,
            })
            .into_response())
        }
        PutOutcome::WrongOffset { offset } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "bad_request",
            format!("chunk must start at offset {offset}"),
        )
        .with_header(UPLOAD_OFFSET, offset)),
        PutOutcome::WrongTotal { total } => Err(ApiError::bad_request(format!(
            "upload in progress has total size {total}"
        ))),
        PutOutcome::HashMismatch => {
            tracing::info!(device = %c.device_id, attachment = %sha, "attachment hash mismatch, discarded");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                "content does not match its SHA-256; upload discarded",
            ))
        }
    }
}

pub(super) async fn att_head(
    State(st): St,
    Caller(_c): Caller,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    let sha_b = parse_sha(&sha)?;
    Ok(match st.store.attachment_state(sha_b).await? {
        AttachmentState::Unknown => StatusCode::NOT_FOUND.into_response(),
        AttachmentState::Partial { received, .. } => (
            StatusCode::PERMANENT_REDIRECT,
            [(UPLOAD_OFFSET, received.to_string())],
        )
            .into_response(),
        AttachmentState::Complete { size } => {
            (StatusCode::OK, [(UPLOAD_OFFSET, size.to_string())]).into_response()
        }
    })
}

pub(super) async fn att_get(
    State(st): St,
    Caller(c): Caller,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    let sha_b = parse_sha(&sha)?;
    if !matches!(
        st.store.attachment_state(sha_b).await?,
        AttachmentState::Complete { .. }
    ) {
        return Err(ApiError::not_found("no such attachment"));
    }
    let scope = c.scope();
    let mut allowed = false;
    for record in st.store.attachment_records(sha_b).await? {
        if let Some(paths) = st.store.record_paths(&record).await? {
            if scope.allows_any(&paths) {
                allowed = true;
                break;
            }
        }
    }
    if !allowed {
        return Err(ApiError::out_of_scope(
            "attachment not linked to a record in your areas",
        ));
    }
    let data = st
        .store
        .attachment_read(sha_b)
        .await?
        .ok_or_else(|| ApiError::not_found("no such attachment"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}
