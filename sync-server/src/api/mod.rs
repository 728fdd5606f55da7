//! HTTP handlers of the sync protocol (docs/protocol.md, sync-server/openapi.yaml).

mod attachments;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::Limits;
use crate::engine::{Incoming, PushJob, PushResult};
use crate::error::ApiError;
use crate::ratelimit::RateLimiter;
use crate::storage::{now_secs, Bind, DeviceAuth, Store};

pub use gridwork_protocol::wire::PROTOCOL_VERSION;
use gridwork_protocol::wire::{
    AreasResponse, HealthResponse, MeResponse, PullItem, PullResponse, PushRequest, PushResponse,
    PushResult as WireResult, PushStatus, RegisterRequest, SnapshotRecord, SnapshotResponse,
    WireArea,
};
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");
/// `last_sync_at` is refreshed by reads at most this often (seconds).
const TOUCH_EVERY: i64 = 60;

pub struct AppState {
    pub store: Store,
    pub limits: Limits,
    pub limiter: RateLimiter,
}

type St = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.yaml", get(openapi))
        .route("/v1/me", get(me).post(register))
        .route("/v1/areas", get(areas))
        .route("/v1/changes", get(pull).post(push))
        .route("/v1/snapshot", get(snapshot))
        .route(
            "/v1/attachments/{sha}",
            put(attachments::att_put)
                .head(attachments::att_head)
                .get(attachments::att_get),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                "method not allowed",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}

/// Per-request time limit (reading the body included): a stuck client or database cannot hold a
/// request forever. Attachment chunks (up to the body limit on slow links) get much longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const ATTACHMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

async fn request_timeout(req: Request, next: Next) -> Response {
    let limit = if req.uri().path().starts_with("/v1/attachments/") {
        ATTACHMENT_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        // A push whose batch was already queued still commits: pushing it again is idempotent.
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; retry",
        )
        .into_response(),
    }
}

/// One log line per request: method, route path, status, duration. Never bodies, queries or headers
/// (they carry tokens and record contents).
async fn log_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, path, status, ms, "request failed");
    } else {
        tracing::debug!(%method, path, status, ms, "request");
    }
    resp
}

// ---- extractors ----

/// The authenticated, non-revoked, rate-limited caller.
pub struct Caller(pub DeviceAuth);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Limit before touching the database, keyed by the token hash, so floods stay cheap.
        if let Err(wait) = state.limiter.check(&hash) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
            )
            .with_header(header::RETRY_AFTER, wait));
        }
        let auth = state
            .store
            .auth(hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        if auth.revoked {
            return Err(ApiError::revoked());
        }
        if auth.disabled {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "disabled",
                "this user has been disabled by an operator",
            ));
        }
        Ok(Caller(auth))
    }
}

/// The request body; a rejection (too large, broken stream) becomes a JSON error.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::too_large("request body exceeds the limit"))
            }
            Err(rej) => Err(ApiError::bad_request(format!(
                "unreadable body: {}",
                rej.body_text()
            ))),
        }
    }
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
}

fn int_param(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
        })
        .transpose()
}

fn page_limit(p: &HashMap<String, String>, limits: &Limits) -> Result<usize, ApiError> {
    match int_param(p, "limit")? {
        None => Ok(limits.default_page.min(limits.max_page)),
        Some(n) if n < 1 => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => Ok((n as u64).min(limits.max_page as u64) as usize),
    }
}

fn touch(state: &Arc<AppState>, caller: &DeviceAuth) {
    let now = now_secs();
    if caller.last_sync_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
        let store = state.store.clone();
        let id = caller.device_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_device(&id, now).await {
                tracing::warn!(error = %e, "could not record last sync time");
            }
        });
    }
}

// ---- handlers ----

async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

fn me_response(c: DeviceAuth) -> MeResponse {
    MeResponse {
        device_id: c.device_id,
        user_id: c.user_id,
        user_name: c.user_name,
        role: c.role.as_str().into(),
        area: c.area,
        area_path: c.area_path,
        actor: c.actor,
    }
}

async fn me(Caller(c): Caller) -> Json<MeResponse> {
    Json(me_response(c))
}

/// `POST /v1/me {"actor": "<hex>"}`: binds the device token to the store with that Automerge actor on
/// its first call; later calls check that the same store is calling. A second store presenting the
/// token (a copied store, a reinstalled app) is refused with `409 device_in_use` until an operator
/// resets the device, so two stores never write as one device.
async fn register(
    State(st): St,
    Caller(mut c): Caller,
    Body(body): Body,
) -> Result<Json<MeResponse>, ApiError> {
    let req: RegisterRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let actor = req.actor.to_ascii_lowercase();
    if actor.is_empty()
        || actor.len() > 64
        || actor.len() % 2 != 0
        || !actor.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ApiError::bad_request(
            "actor must be 1 to 32 bytes as lowercase hex",
        ));
    }
    match st.store.bind_actor(&c.device_id, &actor).await? {
        Bind::Bound => {
            if c.actor.is_none() {
                tracing::info!(device = %c.device_id, "device bound to its store");
            }
            c.actor = Some(actor);
            Ok(Json(me_response(c)))
        }
        Bind::Taken => {
            tracing::warn!(device = %c.device_id, "a second store presented a bound device token");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "device_in_use",
                "this device token belongs to another store (a copied store or a reinstalled app); \
                 ask an operator to reset the device or to issue a new token",
            ))
        }
    }
}

async fn areas(State(st): St, Caller(c): Caller) -> Result<Json<AreasResponse>, ApiError> {
    let rows = st.store.areas_for(&c.scope()).await?;
    let areas = rows
        .into_iter()
        .map(|a| WireArea {
            id: a.id,
            parent: a.parent,
            level: a.level.as_str().into(),
            name: a.name,
        })
        .collect();
    Ok(Json(AreasResponse { areas }))
}

async fn push(State(st): St, Caller(c): Caller, Body(body): Body) -> Result<Response, ApiError> {
    let req: PushRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid push body: {e}")))?;
    if req.changes.len() > st.limits.max_changes_per_push {
        return Err(ApiError::too_large(format!(
            "at most {} changes per push",
            st.limits.max_changes_per_push
        )));
    }
    let n = req.changes.len();
    let decode = move || -> Vec<Incoming> {
        let t = crate::prof::start();
        let out = req
            .changes
            .iter()
            .map(|w| match B64.decode(w.bytes.as_bytes()) {
                Ok(bytes) => Incoming::decode(&w.record, &bytes),
                Err(_) => Incoming::Rejected {
                    hash: String::new(),
                    reason: crate::engine::Reject::Malformed,
                },
            })
            .collect();
        t.stop(crate::prof::Span::HttpDecode);
        out
    };
    // Decoding verifies hashes: CPU work, kept off the async workers for big pushes.
    let changes = if n > 64 {
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(|_| ApiError::internal())?
    } else {
        decode()
    };
    let results = if n == 0 {
        Vec::new()
    } else {
        let job = PushJob {
            device_id: c.device_id.clone(),
            scope: c.scope(),
            changes,
        };
        st.store.push(job).await?
    };
    let accepted = results
        .iter()
        .filter(|r| matches!(r, PushResult::Accepted { .. }))
        .count();
    tracing::info!(device = %c.device_id, changes = n, accepted, rejected = n - accepted, "push");
    let results = results
        .into_iter()
        .map(|r| match r {
            PushResult::Accepted { hash, seq } => WireResult {
                hash,
                status: PushStatus::Accepted,
                seq: Some(seq as u64),
                reason: None,
                detail: None,
            },
            PushResult::Rejected { hash, reason } => WireResult {
                hash,
                status: PushStatus::Rejected,
                seq: None,
                reason: Some(reason.as_str().into()),
                detail: None,
            },
        })
        .collect();
    Ok(Json(PushResponse { results }).into_response())
}

async fn pull(State(st): St, Caller(c): Caller, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    let after = int_param(&p, "after")?.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request("after must not be negative"));
    }
    let limit = page_limit(&p, &st.limits)?;
    let page = st
        .store
        .pull(&c.scope(), &c.device_id, after, limit)
        .await?;
    touch(&st, &c);
    tracing::debug!(device = %c.device_id, after, items = page.items.len(), cursor = page.cursor, "pull");
    let out = PullResponse {
        items: page
            .items
            .into_iter()
            .map(|i| PullItem {
                seq: i.seq as u64,
                record: i.record,
                bytes: B64.encode(&i.bytes),
            })
            .collect(),
        cursor: page.cursor as u64,
        more: page.more,
    };
    Ok(Json(out).into_response())
}

async fn snapshot(State(st): St, Caller(c): Caller, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    let after = p.get("after_record").filter(|s| !s.is_empty()).cloned();
    if let Some(a) = &after {
        if !gridwork_protocol::doc::is_valid_record_id(a) {
            return Err(ApiError::bad_request("after_record must be a record id"));
        }
    }
    let limit = page_limit(&p, &st.limits)?;
    let page = st.store.snapshot(&c.scope(), after, limit).await?;
    touch(&st, &c);
    tracing::debug!(device = %c.device_id, records = page.records.len(), "snapshot page");
    // Base64 of thousands of documents: CPU work, off the async workers.
    let out = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&SnapshotResponse {
            cursor: page.cursor as u64,
            records: page
                .records
                .into_iter()
                .map(|(record, bytes)| SnapshotRecord {
                    record,
                    bytes: B64.encode(&bytes),
                })
                .collect(),
            next: page.next,
        })
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|_| ApiError::internal())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}
