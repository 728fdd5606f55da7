//! HTTP handlers of the sync protocol (docs/protocol.md, sync-server/openapi.yaml).

mod attachments;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::Limits;
use crate::engine::{Decoder, Incoming, PushJob, PushResult};
use crate::error::ApiError;
use crate::ratelimit::{client_key, whole_seconds, RateLimiter};
use crate::storage::{now_secs, Bind, DeviceAuth, PageLimit, Store};

pub use gridwork_protocol::wire::PROTOCOL_VERSION;
use gridwork_protocol::wire::{
    areas_version, AreasResponse, FormsResponse, HealthResponse, MeResponse, PullItem,
    PullResponse, PushRequest, PushResponse, PushResult as WireResult, PushStatus, RegisterRequest,
    SchedulesResponse, SnapshotRecord, SnapshotResponse, WireArea, RETRY_AFTER_MS_HEADER,
};
use gridwork_protocol::{forms_version, schedules_version, Form, Schedule};
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");
/// `last_sync_at` is refreshed by reads at most this often (seconds).
const TOUCH_EVERY: i64 = 60;

pub struct AppState {
    pub store: Store,
    pub limits: Limits,
    /// Requests per device token.
    pub limiter: RateLimiter<[u8; 32]>,
    /// Failed authentications per client address (see [`crate::ratelimit::client_key`]).
    pub auth_failures: RateLimiter<IpAddr>,
    /// The area tree each scope sees, with its version hash, for the area tree version in `meta`:
    /// every sync asks `/v1/me`, and a supervisor's tree has hundreds of areas.
    areas: std::sync::Mutex<AreasCache>,
}

#[derive(Default)]
struct AreasCache {
    version: i64,
    by_scope: std::collections::HashMap<String, Arc<ScopeAreas>>,
}

/// The area tree of one scope as sent, and its `areas_version`; the follow-up schedules and the city
/// forms of those areas, and their versions.
struct ScopeAreas {
    areas: Vec<WireArea>,
    version: String,
    schedules: Vec<Schedule>,
    schedules_version: String,
    forms: Vec<Form>,
    forms_version: String,
}

/// Scopes kept at most (each a few KB); past it the cache starts again.
const AREAS_CACHE_SCOPES: usize = 4096;

impl AppState {
    pub fn new(store: Store, limits: Limits) -> Self {
        AppState {
            store,
            limiter: RateLimiter::new(limits.rate_per_sec, limits.rate_burst),
            auth_failures: RateLimiter::new(limits.auth_fail_per_sec, limits.auth_fail_burst),
            limits,
            areas: std::sync::Mutex::new(AreasCache::default()),
        }
    }
}

type St = State<Arc<AppState>>;

/// Every route the relay serves: the router is built from this table only, so that a test holds it
/// against the OpenAPI document (`tests/openapi.rs`).
fn routes() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("/v1/health", get(health)),
        ("/v1/openapi.yaml", get(openapi)),
        ("/v1/me", get(me).post(register)),
        ("/v1/areas", get(areas)),
        ("/v1/schedules", get(schedules)),
        ("/v1/forms", get(forms)),
        ("/v1/duplicates", get(duplicates)),
        ("/v1/stats", get(stats)),
        ("/v1/export", get(export)),
        ("/v1/changes", get(pull).post(push)),
        ("/v1/snapshot", get(snapshot)),
        (
            "/v1/attachments/{sha}",
            put(attachments::att_put)
                .head(attachments::att_head)
                .get(attachments::att_get),
        ),
    ]
}

/// The paths the relay serves (templates such as `/v1/attachments/{sha}`).
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Router::new())
}

/// The relay's routes with `extra` ones (the web console) beside them, under the same limits and logs.
pub fn router_with(state: Arc<AppState>, extra: Router) -> Router {
    let body_limit = state.limits.max_body_bytes;
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
        .with_state(state)
        .merge(extra)
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
///
/// Limits come before the database wherever possible, so floods stay cheap: a token the relay has
/// seen is limited per token; an unseen one is looked up only while its client address has failed
/// authentications left (a failed one costs one, and an address out of them gets `429`). So unknown
/// tokens are limited per address, and a flood from one address never slows down devices elsewhere.
pub struct Caller(pub DeviceAuth);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| client_key(c.0.ip()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let token = match bearer_token(parts) {
            Ok(t) => t,
            Err(e) => return Err(auth_failed(state, client, e)),
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = match state.limiter.check_known(&hash) {
            Some(Err(wait)) => return Err(rate_limited(wait)),
            Some(Ok(())) => true,
            None => {
                if let Some(wait) = state.auth_failures.exhausted(&client) {
                    return Err(rate_limited(wait));
                }
                false
            }
        };
        let Some(auth) = state.store.auth(hash).await? else {
            return Err(auth_failed(
                state,
                client,
                ApiError::unauthorized("unknown token"),
            ));
        };
        if !known {
            state.limiter.check(&hash).map_err(rate_limited)?;
        }
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

/// The bearer token of a request.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))
}

/// A failed authentication from `client`: it costs the address one of its failures; an address out
/// of them gets `429` instead of `error`.
fn auth_failed(state: &AppState, client: IpAddr, error: ApiError) -> ApiError {
    match state.auth_failures.check(&client) {
        Ok(()) => error,
        Err(wait) => {
            tracing::warn!(%client, "failed authentications limited");
            rate_limited(wait)
        }
    }
}

/// `429`, with when to retry: `Retry-After` in whole seconds (HTTP's unit) and `Retry-After-Ms`
/// exactly, which Gridwork's client prefers (a token bucket at 100/s refills in 10 ms).
fn rate_limited(wait: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests",
    )
    .with_header(header::RETRY_AFTER, whole_seconds(wait))
    .with_header(
        HeaderName::from_static(RETRY_AFTER_MS_HEADER),
        wait.as_millis(),
    )
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

/// The page a pull or snapshot may fill: `limit` items (capped), and the relay's byte limit.
fn page_limit(p: &HashMap<String, String>, limits: &Limits) -> Result<PageLimit, ApiError> {
    let items = match int_param(p, "limit")? {
        None => limits.default_page.min(limits.max_page),
        Some(n) if n < 1 => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => (n as u64).min(limits.max_page as u64) as usize,
    };
    Ok(PageLimit {
        items: items.max(1),
        bytes: limits.max_page_bytes,
    })
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

/// Who the caller is, with the version of the area tree it would get from `GET /v1/areas` now.
async fn me_response(st: &AppState, c: DeviceAuth) -> Result<MeResponse, ApiError> {
    let areas = wire_areas(st, &c).await?;
    Ok(MeResponse {
        areas_version: Some(areas.version.clone()),
        schedules_version: Some(areas.schedules_version.clone()),
        forms_version: Some(areas.forms_version.clone()),
        push_expect: true,
        device_id: c.device_id,
        user_id: c.user_id,
        user_name: c.user_name,
        role: c.role.as_str().into(),
        area: c.area,
        area_path: c.area_path,
        actor: c.actor,
    })
}

async fn me(State(st): St, Caller(c): Caller) -> Result<Json<MeResponse>, ApiError> {
    Ok(Json(me_response(&st, c).await?))
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
        || !actor.len().is_multiple_of(2)
        || !actor.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ApiError::bad_request(
            "actor must be 1 to 32 bytes as lowercase hex",
        ));
    }
    // The device row read to authenticate this request says whether the token is bound to this
    // store already (every sync after the first): then there is nothing to write.
    let bind = if c.actor.as_deref() == Some(actor.as_str()) {
        Bind::Bound
    } else {
        st.store.bind_actor(&c.device_id, &actor).await?
    };
    match bind {
        Bind::Bound => {
            if c.actor.is_none() {
                tracing::info!(device = %c.device_id, "device bound to its store");
            }
            c.actor = Some(actor);
            Ok(Json(me_response(&st, c).await?))
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

/// The area tree of the caller's scope, with its ancestors, and its version. Read from the database
/// when the tree's version there differs from the cached one (so several relays on one database stay
/// right): the version is read first, so what is cached under it is never older than it.
async fn wire_areas(st: &AppState, c: &DeviceAuth) -> Result<Arc<ScopeAreas>, ApiError> {
    let scope = c.scope();
    let key = if scope.is_operator() {
        String::new()
    } else {
        scope.prefix.clone()
    };
    let version = st.store.areas_version().await?;
    {
        let cache = st.areas.lock().expect("areas cache");
        if cache.version == version {
            if let Some(hit) = cache.by_scope.get(&key) {
                return Ok(hit.clone());
            }
        }
    }
    let rows = st.store.areas_for(&scope).await?;
    // Each area's workers (every worker whose area it is, disabled or not: the grid's follow-ups are
    // still theirs to hand over), for per-worker lists on devices.
    let mut workers: HashMap<String, Vec<String>> = HashMap::new();
    for u in st.store.list_users().await? {
        if u.role == gridwork_protocol::Role::Worker {
            workers.entry(u.area).or_default().push(u.id);
        }
    }
    let areas: Vec<WireArea> = rows
        .into_iter()
        .map(|a| {
            let mut w = workers.remove(&a.id).unwrap_or_default();
            w.sort();
            WireArea {
                id: a.id,
                parent: a.parent,
                level: a.level.as_str().into(),
                name: a.name,
                workers: w,
            }
        })
        .collect();
    // The schedules of the caller's areas and their ancestors: each covers its area's subtree.
    let ids: std::collections::HashSet<&str> = areas.iter().map(|a| a.id.as_str()).collect();
    let schedules: Vec<Schedule> = st
        .store
        .list_schedules()
        .await?
        .into_iter()
        .filter(|s| ids.contains(s.area.as_str()))
        .collect();
    // The forms likewise: a form covers its area's subtree.
    let forms: Vec<Form> = st
        .store
        .list_forms()
        .await?
        .into_iter()
        .filter(|f| ids.contains(f.area.as_str()))
        .collect();
    let entry = Arc::new(ScopeAreas {
        version: areas_version(&areas),
        schedules_version: schedules_version(&schedules),
        forms_version: forms_version(&forms),
        areas,
        schedules,
        forms,
    });
    let mut cache = st.areas.lock().expect("areas cache");
    if cache.version != version || cache.by_scope.len() >= AREAS_CACHE_SCOPES {
        cache.version = version;
        cache.by_scope.clear();
    }
    cache.by_scope.insert(key, entry.clone());
    Ok(entry)
}

async fn areas(State(st): St, Caller(c): Caller) -> Result<Json<AreasResponse>, ApiError> {
    Ok(Json(AreasResponse {
        areas: wire_areas(&st, &c).await?.areas.clone(),
    }))
}

/// The areas `scope` sees (its subtree and ancestors) and, when the caller names `area`, that area's
/// path. An area outside the subtree reads as unknown (`404`): its name is not confirmed either.
async fn areas_within(
    st: &AppState,
    scope: &gridwork_protocol::scope::Scope,
    area: Option<&str>,
) -> Result<(Vec<crate::storage::AreaRow>, Option<String>), ApiError> {
    let rows = st.store.areas_for(scope).await?;
    let root = match area {
        Some(a) => match rows.iter().find(|r| r.id == a) {
            Some(r) if scope.is_operator() || r.path.starts_with(&scope.prefix) => {
                Some(r.path.clone())
            }
            _ => return Err(ApiError::not_found(format!("no area {a} in your scope"))),
        },
        None => None,
    };
    Ok((rows, root))
}

/// `GET /v1/stats?area=&from=&until=&at=`: statistics of an area's subtree (of the caller's scope) and
/// period, computed by the same function a device runs over its own records
/// (`gridwork_protocol::stats::compute`), over the record views the relay keeps for the caller's scope.
async fn stats(State(st): St, Caller(c): Caller, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    let query = gridwork_protocol::stats::StatsQuery {
        area: p.get("area").filter(|a| !a.is_empty()).cloned(),
        from: int_param(&p, "from")?,
        until: int_param(&p, "until")?,
        at: int_param(&p, "at")?,
    };
    let scope = c.scope();
    let (rows, _) = areas_within(&st, &scope, query.area.as_deref()).await?;
    let areas: HashMap<String, gridwork_protocol::stats::AreaPlace> = rows
        .into_iter()
        .map(|a| {
            (
                a.id,
                gridwork_protocol::stats::AreaPlace {
                    path: a.path,
                    level: a.level.as_str().to_owned(),
                },
            )
        })
        .collect();
    let schedules = wire_areas(&st, &c).await?.schedules.clone();
    // One record at a time: a city's records are counted without holding them.
    let counting = st
        .store
        .fold_scope_records(
            &scope,
            gridwork_protocol::stats::Counting::new(areas, schedules, &query),
            |counting, r| counting.add(&r),
        )
        .await?;
    let out = tokio::task::spawn_blocking(move || counting.finish())
        .await
        .map_err(|e| ApiError::from(crate::error::Error::Unavailable(e.to_string())))?;
    touch(&st, &c);
    Ok(Json(out).into_response())
}

/// `GET /v1/duplicates?area=`: the open duplicate candidates among the records of the caller's scope
/// (both records in `area`'s subtree when given), found by the rule a device applies to its own
/// records (`gridwork_protocol::duplicates::candidates`): record ids and reasons, no personal data.
async fn duplicates(State(st): St, Caller(c): Caller, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    let scope = c.scope();
    let area = p.get("area").filter(|a| !a.is_empty()).cloned();
    let (rows, root) = areas_within(&st, &scope, area.as_deref()).await?;
    let paths: HashMap<String, String> = rows.into_iter().map(|a| (a.id, a.path)).collect();
    // One record at a time, keeping only what candidates are found from.
    let found = st
        .store
        .fold_scope_records(
            &scope,
            gridwork_protocol::duplicates::Candidates::new(),
            move |found, r| {
                let within = paths
                    .get(&r.area)
                    .is_some_and(|p| root.as_deref().is_none_or(|root| p.starts_with(root)));
                if within {
                    found.add(&r);
                }
            },
        )
        .await?;
    let pairs = tokio::task::spawn_blocking(move || found.pairs())
        .await
        .map_err(|e| ApiError::from(crate::error::Error::Unavailable(e.to_string())))?;
    touch(&st, &c);
    Ok(Json(serde_json::json!({ "duplicates": pairs })).into_response())
}

/// `GET /v1/export?kind=&format=csv|xlsx|geojson&area=&tag=&from=&until=&unmasked=true`: a kind's records
/// in the caller's scope as a file, written by the same code a device uses; ID numbers masked unless a
/// supervisor or operator asks.
async fn export(State(st): St, Caller(c): Caller, q: Params) -> Result<Response, ApiError> {
    use gridwork_protocol::export::{row_values, write, ExportFormat, MAX_EXPORT_ROWS};
    let p = params(q)?;
    let kind = p
        .get("kind")
        .and_then(|k| gridwork_protocol::Kind::parse(k))
        .ok_or_else(|| ApiError::bad_request("kind must be a record kind"))?;
    let format = p
        .get("format")
        .and_then(|f| ExportFormat::parse(f))
        .ok_or_else(|| ApiError::bad_request("format must be csv, xlsx or geojson"))?;
    let unmasked = match p.get("unmasked").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("unmasked must be true or false")),
    };
    if unmasked && c.role == gridwork_protocol::Role::Worker {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            "ID numbers in full are for supervisors and operators",
        ));
    }
    let (from, until) = (int_param(&p, "from")?, int_param(&p, "until")?);
    let period_field = match kind {
        gridwork_protocol::Kind::Visit => Some("started_at"),
        gridwork_protocol::Kind::Event => Some("reported_at"),
        _ => None,
    };
    if (from.is_some() || until.is_some()) && period_field.is_none() {
        return Err(ApiError::bad_request(
            "a period applies to visits and events",
        ));
    }
    let (from, until) = (
        from.map(gridwork_protocol::time::iso_from_secs),
        until.map(gridwork_protocol::time::iso_from_secs),
    );
    let scope = c.scope();
    let area = p.get("area").filter(|a| !a.is_empty());
    let (rows, root) = areas_within(&st, &scope, area.map(String::as_str)).await?;
    let paths: HashMap<String, String> = rows.into_iter().map(|a| (a.id, a.path)).collect();
    let tag = p.get("tag").filter(|t| !t.is_empty()).cloned();
    // One record at a time, keeping the matching ones (one more than an export may hold, to say so).
    let mut records: Vec<gridwork_protocol::model::Record> = st
        .store
        .fold_scope_records(&scope, Vec::new(), move |records, r| {
            let at = period_field.and_then(|f| r.field(f)).unwrap_or("");
            let matches = !r.deleted
                && r.kind == kind
                && root.as_ref().is_none_or(|root| {
                    paths
                        .get(&r.area)
                        .is_some_and(|path| path.starts_with(root.as_str()))
                })
                && tag.as_ref().is_none_or(|t| r.tags.contains(t))
                && from.as_deref().is_none_or(|f| at >= f)
                && until.as_deref().is_none_or(|u| at < u);
            if matches && records.len() <= MAX_EXPORT_ROWS {
                records.push(r);
            }
        })
        .await?;
    if records.len() > MAX_EXPORT_ROWS {
        return Err(ApiError::bad_request(format!(
            "more than {MAX_EXPORT_ROWS} records: narrow the export by area, tag or period"
        )));
    }
    let title = kind.title_field();
    records.sort_by(|a, b| (a.field(title), &a.id).cmp(&(b.field(title), &b.id)));
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.area.clone(),
                row_values(kind, &r.fields, unmasked),
            )
        })
        .collect();
    let bytes = tokio::task::spawn_blocking(move || write(kind, &rows, format))
        .await
        .map_err(|e| ApiError::from(crate::error::Error::Unavailable(e.to_string())))?
        .map_err(ApiError::bad_request)?;
    touch(&st, &c);
    tracing::info!(device = %c.device_id, kind = kind.as_str(), rows = records.len(), unmasked, "export");
    let disposition = format!(
        "attachment; filename=\"{}.{}\"",
        kind.as_str(),
        format.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, format.media_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /v1/forms`: the city forms of the caller's areas and their ancestors.
async fn forms(State(st): St, Caller(c): Caller) -> Result<Json<FormsResponse>, ApiError> {
    Ok(Json(FormsResponse {
        forms: wire_areas(&st, &c).await?.forms.clone(),
    }))
}

/// `GET /v1/schedules`: the follow-up schedules of the caller's areas and their ancestors.
async fn schedules(State(st): St, Caller(c): Caller) -> Result<Json<SchedulesResponse>, ApiError> {
    Ok(Json(SchedulesResponse {
        schedules: wire_areas(&st, &c).await?.schedules.clone(),
    }))
}

/// Decoding a push this large (changes or bytes) runs on a blocking thread.
const DECODE_INLINE_CHANGES: usize = 64;
const DECODE_INLINE_BYTES: usize = 64 * 1024;

async fn push(State(st): St, Caller(c): Caller, Body(body): Body) -> Result<Response, ApiError> {
    let body_len = body.len();
    let req: PushRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid push body: {e}")))?;
    drop(body);
    // A push made for another user or store than the token's now (the token was handed to another
    // user, or reset by an operator while the device was offline): nothing of it is judged, so the
    // device keeps its changes and learns who it is from `/v1/me` first.
    if let Some(expect) = &req.expect {
        let bound = c.actor.as_deref();
        if expect.user != c.user_id || bound != Some(expect.actor.to_ascii_lowercase().as_str()) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "identity_changed",
                "this push was made for another user or store than the token now belongs to; \
                 ask POST /v1/me who the token is",
            ));
        }
    }
    if req.changes.len() > st.limits.max_changes_per_push {
        return Err(ApiError::too_large(format!(
            "at most {} changes per push",
            st.limits.max_changes_per_push
        )));
    }
    let n = req.changes.len();
    let actor = c.actor();
    let decode = {
        let (st, actor, bound) = (st.clone(), actor.clone(), c.actor.clone());
        move || -> Vec<Incoming> {
            let t = crate::prof::start();
            let mut decoder = Decoder::new(&actor, bound.as_deref(), &st.limits);
            let out = req
                .changes
                .iter()
                .map(|w| {
                    let bytes = B64.decode(w.bytes.as_bytes()).ok();
                    decoder.decode(&w.record, bytes.as_deref())
                })
                .collect();
            t.stop(crate::prof::Span::HttpDecode);
            out
        }
    };
    // Inspection, Automerge parsing and hashing: CPU work, kept off the async workers for big pushes.
    let changes = if n > DECODE_INLINE_CHANGES || body_len > DECODE_INLINE_BYTES {
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
            actor,
            changes,
        };
        st.store.push(job).await?
    };
    log_push(&c.device_id, &results);
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
            PushResult::Rejected {
                hash,
                reason,
                detail,
            } => WireResult {
                hash,
                status: PushStatus::Rejected,
                seq: None,
                reason: Some(reason.as_str().into()),
                detail: Some(detail),
            },
        })
        .collect();
    Ok(Json(PushResponse { results }).into_response())
}

/// One line per push: counts, and the reason codes of refused changes (never their details, which
/// may name fields, nor their contents).
fn log_push(device: &str, results: &[PushResult]) {
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in results {
        if let PushResult::Rejected { reason, .. } = r {
            *reasons.entry(reason.as_str()).or_default() += 1;
        }
    }
    let refused: usize = reasons.values().sum();
    let accepted = results.len() - refused;
    if refused == 0 {
        tracing::info!(device, changes = results.len(), accepted, "push");
    } else {
        let reasons = reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(
            device,
            changes = results.len(),
            accepted,
            refused,
            reasons,
            "push"
        );
    }
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
                view: raw_view(i.view),
            })
            .collect(),
        cursor: page.cursor as u64,
        more: page.more,
    };
    Ok(Json(out).into_response())
}

/// A stored record view as it goes on the wire: embedded as JSON (the relay wrote it; a row that is
/// somehow not JSON is sent without a view, and the device reads the document instead).
fn raw_view(view: Option<String>) -> Option<Box<serde_json::value::RawValue>> {
    view.and_then(|v| serde_json::value::RawValue::from_string(v).ok())
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
                .map(|r| SnapshotRecord {
                    record: r.id,
                    bytes: B64.encode(&r.doc),
                    view: raw_view(r.view),
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
