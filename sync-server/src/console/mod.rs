//! The web console (`/console`): pages for supervisors and operators, served by the relay itself.
//!
//! - **Who**: a web account is a user's password (argon2id) that an operator issues
//!   (`gridwork-server admin web-account set USER`). Supervisors and operators log in; workers are
//!   refused (their work is on the phone). A session is a random token in an `HttpOnly`,
//!   `SameSite=Strict` cookie (`Secure` behind TLS), kept hashed in the database with the CSRF token
//!   every form carries; sessions expire. Failed logins are limited per client address.
//! - **How actions are made**: each web user has a console device of their own, a Gridwork store
//!   (encrypted under a key derived from the relay key, in `<console dir>/<user>.db`) that syncs with
//!   this relay over loopback with a token derived the same way. A review in the console is the same
//!   `Store::review_visit` a supervisor's iPad runs: an Automerge change authored by that user, judged
//!   by the rule book on the console device and again by the relay when it is pushed, reaching phones at
//!   their next sync; a conflict with a phone's offline edit shows up like any other. The console sees
//!   exactly the scope the user's phone would.
//! - **What is logged**: the audit trail (`console_audit`) keeps every console action: who, what, which
//!   record, how it ended. No personal data in logs or URLs (record ids only); pages are `no-store`
//!   under a strict Content-Security-Policy (no inline script, nothing from other hosts).
pub mod map;
mod pages;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use gridwork_core::sync::SyncConfig;
use gridwork_core::{CancelToken, Identity, NoProgress, ReviewState, Role, StoreKey, StoreOptions};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConsoleConfig;
use crate::error::{Error, Result};
use crate::ratelimit::{client_key, whole_seconds, RateLimiter};
use crate::storage::console::AuditRow;
use crate::storage::{now_secs, Store};
pub use pages::Lang;
use pages::{Page, Words};

const SESSION_COOKIE: &str = "gw_session";
const LOGIN_COOKIE: &str = "gw_login";
const LANG_COOKIE: &str = "gw_lang";
/// How stale a console device's copy may be when a page is shown: older, it syncs first. Zero: every
/// page shows what the relay has now (a sync with nothing to do is two loopback requests).
const FRESH: Duration = Duration::ZERO;

/// The console's shared state.
pub struct ConsoleState {
    store: Store,
    config: ConsoleConfig,
    relay_url: String,
    devices: Mutex<HashMap<String, Arc<ConsoleDevice>>>,
    failed_logins: RateLimiter<IpAddr>,
    /// This relay's console (its directory's `instance` file): each relay process behind a load
    /// balancer has console devices of its own, since a device token binds to one store.
    instance: String,
}

/// A web user's console device: their store and how it syncs with this relay.
struct ConsoleDevice {
    store: Arc<gridwork_core::Store>,
    sync: SyncConfig,
    last_sync: Mutex<Option<Instant>>,
    /// One sync at a time per device.
    syncing: tokio::sync::Mutex<()>,
}

impl ConsoleState {
    pub fn new(
        store: Store,
        config: ConsoleConfig,
        relay_url: String,
    ) -> Result<Arc<ConsoleState>> {
        std::fs::create_dir_all(&config.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let failed_logins = RateLimiter::new(config.login_fail_per_sec, config.login_fail_burst);
        let instance = instance_id(&config.dir)?;
        Ok(Arc::new(ConsoleState {
            store,
            config,
            relay_url,
            devices: Mutex::new(HashMap::new()),
            failed_logins,
            instance,
        }))
    }

    /// The console device id of a user on this relay.
    fn device_id(&self, user: &str) -> String {
        format!("console-{}-{user}", self.instance)
    }

    /// The token of a user's console device: derived from the relay key, never stored (the relay keeps
    /// its hash like any device's).
    fn device_token(&self, user: &str) -> String {
        format!(
            "gw1_{}",
            hex::encode(
                self.config
                    .key
                    .derive(&format!("console token {}", self.device_id(user)))
            )
        )
    }

    /// The user's console device, made (device row, store) on first use.
    async fn device(&self, user: &User) -> Result<Arc<ConsoleDevice>> {
        if let Some(d) = self.devices.lock().expect("devices").get(&user.id) {
            return Ok(d.clone());
        }
        let device_id = self.device_id(&user.id);
        let token = self.device_token(&user.id);
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self
            .store
            .add_device(&device_id, &user.id, hash, now_secs())
            .await
        {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let path = self
            .config
            .dir
            .join(format!("{}.db", hex::encode(user.id.as_bytes())));
        let key = StoreKey::Raw(
            self.config
                .key
                .derive(&format!("console store {}", user.id)),
        );
        let identity = Identity {
            user_id: user.id.clone(),
            device_id,
            role: user.role,
            area: user.area.clone(),
        };
        let store = tokio::task::spawn_blocking(move || {
            gridwork_core::Store::open(StoreOptions::new(path, key).identity(identity))
        })
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?
        .map_err(|e| Error::Unavailable(format!("console store: {e}")))?;
        let mut sync = SyncConfig::new(self.relay_url.clone(), token);
        // One device per web user, each syncing at that user's page views: none keeps connections
        // to this relay open between them.
        sync.keep_connections = false;
        let device = Arc::new(ConsoleDevice {
            store: Arc::new(store),
            sync,
            last_sync: Mutex::new(None),
            syncing: tokio::sync::Mutex::new(()),
        });
        let mut devices = self.devices.lock().expect("devices");
        Ok(devices.entry(user.id.clone()).or_insert(device).clone())
    }

    async fn audit(&self, user: &str, action: &str, target: Option<&str>, outcome: &str) {
        let row = AuditRow {
            at: now_secs(),
            user: user.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            outcome: outcome.to_owned(),
        };
        if let Err(e) = self.store.audit(row).await {
            tracing::warn!(error = %e, "the console's audit trail could not be written");
        }
    }
}

impl ConsoleDevice {
    /// Syncs with the relay when the copy is older than `max_age` (always with `Duration::ZERO`).
    async fn sync(&self, max_age: Duration) -> Result<()> {
        let _one = self.syncing.lock().await;
        if let Some(at) = *self.last_sync.lock().expect("last sync") {
            if at.elapsed() < max_age {
                return Ok(());
            }
        }
        let store = self.store.clone();
        let config = self.sync.clone();
        tokio::task::spawn_blocking(move || store.sync(&config, &NoProgress, &CancelToken::new()))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .map_err(|e| Error::Unavailable(format!("the console device could not sync: {e}")))?;
        *self.last_sync.lock().expect("last sync") = Some(Instant::now());
        Ok(())
    }
}

/// The id of this relay's console directory: 8 hex characters kept in `<dir>/instance`, made once.
fn instance_id(dir: &std::path::Path) -> Result<String> {
    let file = dir.join("instance");
    match std::fs::read_to_string(&file) {
        Ok(id) if id.trim().len() == 8 && id.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(id.trim().to_owned())
        }
        Ok(_) => Err(Error::Invalid(format!(
            "{} is not a console instance id: remove it to make a new one",
            file.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 4];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let id = hex::encode(b);
            std::fs::write(&file, &id)?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// A user as the console needs them.
#[derive(Debug, Clone)]
struct User {
    id: String,
    name: String,
    role: Role,
    area: String,
}

pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/reviews") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/reviews", get(reviews))
        .route("/console/visits/{id}/review", post(review))
        .route("/console/events", get(events))
        .route("/console/events/{id}", get(event_page))
        .route("/console/events/{id}/act", post(event_act))
        .route("/console/records/{id}", get(record_page))
        .route("/console/records/{id}/resolve", post(resolve))
        .route("/console/duplicates", get(duplicates))
        .route("/console/duplicates/decide", post(decide))
        .route("/console/exports", get(exports))
        .route("/console/stats", get(stats))
        .route("/console/map", get(map_page))
        .route("/console/admin", get(admin_page))
        .route("/console/admin/shapes", post(admin_shape))
        .route("/console/admin/schedules", post(admin_schedule))
        .route(
            "/console/admin/schedules/{id}/remove",
            post(admin_remove_schedule),
        )
        .route("/console/admin/forms", post(admin_form))
        .route("/console/admin/forms/{id}/remove", post(admin_remove_form))
        .route("/console/admin/areas", post(admin_area))
        .route("/console/admin/users", post(admin_user))
        .route("/console/admin/users/set", post(admin_set_user))
        .route("/console/admin/devices", post(admin_device))
        .route("/console/admin/devices/{id}/revoke", post(admin_revoke))
        .route("/console/export", get(export))
        .route("/console/console.css", get(stylesheet))
        .with_state(state)
}

// ------------------------------------------------------------------------------- responses

/// Headers every console response carries: nothing cached, nothing framed or sniffed, and a policy
/// that allows only this relay's own styles and no script at all.
fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

fn html(status: StatusCode, page: Page) -> Response {
    secure((status, axum::response::Html(page.render())).into_response())
}

/// A page of a session, remembering its language.
fn session_html(status: StatusCode, lang: Lang, page: Page) -> Response {
    let mut resp = html(status, page);
    resp.headers_mut()
        .append(header::SET_COOKIE, lang_cookie(lang));
    resp
}

fn lang_cookie(lang: Lang) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Path=/console; SameSite=Strict; Max-Age=31536000",
        lang.as_str()
    ))
    .expect("cookie text")
}

fn cookie(state: &ConsoleState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie text")
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The page language: `?lang=` (remembered in a cookie), else the cookie, else the browser's first
/// choice between Chinese and English.
fn language(headers: &HeaderMap, asked: Option<&str>) -> Lang {
    if let Some(l) = asked.and_then(Lang::parse) {
        return l;
    }
    if let Some(l) = cookies(headers)
        .get(LANG_COOKIE)
        .and_then(|v| Lang::parse(v))
    {
        return l;
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.trim_start().starts_with("zh") {
        Lang::Zh
    } else {
        Lang::En
    }
}

// ------------------------------------------------------------------------------- sessions

/// The logged-in user of a request, with the session's CSRF token. A request without a live session
/// is sent to the login page.
struct Session {
    user: User,
    csrf: String,
    lang: Lang,
}

impl FromRequestParts<Arc<ConsoleState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> std::result::Result<Self, Response> {
        let asked = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("lang="))
                .map(str::to_owned)
        });
        let lang = language(&parts.headers, asked.as_deref());
        let to_login = || secure(Redirect::to("/console/login").into_response());
        let Some(token) = cookies(&parts.headers).get(SESSION_COOKIE).cloned() else {
            return Err(to_login());
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match state.store.web_session(hash).await {
            // Disabled or demoted since logging in: as if signed out.
            Ok(Some(s)) if s.disabled || s.role == Role::Worker => Err(to_login()),
            Ok(Some(s)) => Ok(Session {
                user: User {
                    id: s.user,
                    name: s.name,
                    role: s.role,
                    area: s.area,
                },
                csrf: s.csrf,
                lang,
            }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(unavailable(lang, &e)),
        }
    }
}

impl Session {
    /// Who the pages are drawn for.
    fn who(&self) -> pages::Who<'_> {
        pages::Who {
            lang: self.lang,
            name: &self.user.name,
            operator: self.user.role == Role::Operator,
            csrf: &self.csrf,
        }
    }
}

/// A user who may use the console: exists, is not disabled, is a supervisor or operator.
async fn console_user(state: &ConsoleState, id: &str) -> Result<Option<User>> {
    Ok(state
        .store
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.id == id && !u.disabled && u.role != Role::Worker)
        .map(|u| User {
            id: u.id,
            name: u.name,
            role: u.role,
            area: u.area,
        }))
}

fn unavailable(lang: Lang, e: &Error) -> Response {
    tracing::warn!(error = %e, "console page failed");
    let w = Words::of(lang);
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        Page::message(lang, w.unavailable, w.try_again),
    )
}

// ------------------------------------------------------------------------------- handlers

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

async fn login_page(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let lang = language(&headers, q.lang.as_deref());
    login_form(&state, lang, StatusCode::OK, None)
}

/// The login form with a fresh login CSRF token (double-submitted: a cookie and a hidden field).
fn login_form(
    state: &ConsoleState,
    lang: Lang,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let csrf = random_hex();
    let mut resp = html(status, Page::login(lang, &csrf, error));
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, cookie(state, LOGIN_COOKIE, &csrf, 3600));
    h.append(header::SET_COOKIE, lang_cookie(lang));
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

async fn login(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = language(&headers, None);
    let w = Words::of(lang);
    let client = client_key(addr.ip());
    if let Some(wait) = state.failed_logins.exhausted(&client) {
        let mut resp = html(
            StatusCode::TOO_MANY_REQUESTS,
            Page::message(
                lang,
                w.too_many_attempts,
                &w.wait_seconds(whole_seconds(wait)),
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
        return resp;
    }
    let expected = cookies(&headers)
        .get(LOGIN_COOKIE)
        .cloned()
        .unwrap_or_default();
    if expected.is_empty() || !same_secret(&expected, &form.csrf) {
        return html(
            StatusCode::FORBIDDEN,
            Page::message(lang, w.forbidden, w.csrf_failed),
        );
    }
    let user_id = form.user.trim().to_owned();
    let hash = match state.store.web_account(&user_id).await {
        Ok(h) => h,
        Err(e) => return unavailable(lang, &e),
    };
    // The same work whether or not the account exists: no timing tells which users have one.
    let password = zeroize::Zeroizing::new(form.password);
    let known = hash.is_some();
    let verified =
        tokio::task::spawn_blocking(move || passwords::verify(hash.as_deref(), &password))
            .await
            .unwrap_or(false);
    if !verified {
        let _ = state.failed_logins.check(&client);
        // What was typed as a user name is kept only when it names an account: it may be a password
        // typed into the wrong box.
        let who = if known { user_id.as_str() } else { "(unknown)" };
        state.audit(who, "login", None, "wrong_password").await;
        return login_form(&state, lang, StatusCode::UNAUTHORIZED, Some(w.wrong_login));
    }
    let user = match console_user(&state, &user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            state.audit(&user_id, "login", None, "forbidden_role").await;
            return html(
                StatusCode::FORBIDDEN,
                Page::message(lang, w.forbidden, w.console_is_for_supervisors),
            );
        }
        Err(e) => return unavailable(lang, &e),
    };
    let token = random_hex();
    let csrf = random_hex();
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let expires = now_secs() + state.config.session_secs;
    if let Err(e) = state
        .store
        .insert_web_session(hash, &user.id, &csrf, expires)
        .await
    {
        return unavailable(lang, &e);
    }
    // The console device is made now, so the first page is quick.
    if let Err(e) = state.device(&user).await {
        return unavailable(lang, &e);
    }
    state.audit(&user.id, "login", None, "ok").await;
    let mut resp = secure(Redirect::to("/console/reviews").into_response());
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie(&state, SESSION_COOKIE, &token, state.config.session_secs),
    );
    h.append(header::SET_COOKIE, cookie(&state, LOGIN_COOKIE, "", 0));
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !same_secret(&session.csrf, &form.csrf) {
        return csrf_refused(&state, &session, "logout", None).await;
    }
    if let Some(token) = cookies(&headers).get(SESSION_COOKIE) {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Err(e) = state.store.delete_web_session(hash).await {
            return unavailable(session.lang, &e);
        }
    }
    state.audit(&session.user.id, "logout", None, "ok").await;
    let mut resp = secure(Redirect::to("/console/login").into_response());
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie(&state, SESSION_COOKIE, "", 0));
    resp
}

async fn csrf_refused(
    state: &ConsoleState,
    session: &Session,
    action: &str,
    target: Option<&str>,
) -> Response {
    state
        .audit(&session.user.id, action, target, "csrf_refused")
        .await;
    let w = Words::of(session.lang);
    html(
        StatusCode::FORBIDDEN,
        Page::message(session.lang, w.forbidden, w.csrf_failed),
    )
}

/// What a page says after an action: `done=<what>` or `error=<refusal code>`.
#[derive(Deserialize)]
struct ReviewsQuery {
    done: Option<String>,
    error: Option<String>,
}

impl ReviewsQuery {
    /// The refusal the page was sent back with, in words.
    fn refusal(&self, w: &Words) -> Option<&'static str> {
        self.error.as_deref().map(|code| w.refusal(code))
    }
}

/// The review queue: finished visits in the user's scope waiting for review, oldest first.
async fn reviews(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<ReviewsQuery>,
) -> Response {
    let lang = session.lang;
    let rows = match on_device(&state, &session, pages::review_rows).await {
        Ok(rows) => rows,
        Err(resp) => return resp,
    };
    let w = Words::of(lang);
    let notice = match q.done.as_deref() {
        Some("approved") => Some(w.approved_notice),
        Some("returned") => Some(w.returned_notice),
        _ => None,
    };
    let error = q.refusal(w);
    session_html(
        StatusCode::OK,
        lang,
        Page::reviews(&session.who(), &rows, notice, error),
    )
}

#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
}

/// Approves or returns a visit through the user's console device, then syncs it to the relay.
async fn review(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ReviewForm>,
) -> Response {
    let decision = match form.decision.as_str() {
        "approve" => ReviewState::Approved,
        "return" => ReviewState::Returned,
        _ => {
            let w = Words::of(session.lang);
            return html(
                StatusCode::BAD_REQUEST,
                Page::message(session.lang, w.bad_request, w.try_again),
            );
        }
    };
    let done = if decision == ReviewState::Approved {
        "approved"
    } else {
        "returned"
    };
    let back = Back {
        ok: format!("/console/reviews?done={done}"),
        refused: "/console/reviews?".into(),
    };
    let (visit, comment) = (id.clone(), form.comment.trim().to_owned());
    record_change(
        &state,
        &session,
        &form.csrf,
        done,
        &id,
        &id,
        back,
        move |store| {
            let comment = Some(comment.as_str()).filter(|c| !c.is_empty());
            store.review_visit(&visit, decision, comment)
        },
    )
    .await
}

/// Where a record action leads: the page after it went through, and the page (to which
/// `error=<code>` is added) after a refusal.
struct Back {
    ok: String,
    refused: String,
}

/// A change of a record through the user's console device (see [`act`]): refused without the
/// session's CSRF token, audited as `action` on `target`, then back to a page that says how it went.
#[allow(clippy::too_many_arguments)]
async fn record_change(
    state: &ConsoleState,
    session: &Session,
    csrf: &str,
    action: &str,
    target: &str,
    record: &str,
    back: Back,
    f: impl FnOnce(&gridwork_core::Store) -> gridwork_core::Result<()> + Send + 'static,
) -> Response {
    if !same_secret(&session.csrf, csrf) {
        return csrf_refused(state, session, action, Some(target)).await;
    }
    match act(state, session, record, f).await {
        Ok(()) => {
            state
                .audit(&session.user.id, action, Some(target), "ok")
                .await;
            secure(Redirect::to(&back.ok).into_response())
        }
        Err(Acted::Refused(code)) => {
            state
                .audit(&session.user.id, action, Some(target), code)
                .await;
            secure(Redirect::to(&format!("{}error={code}", back.refused)).into_response())
        }
        Err(Acted::Unavailable(e)) => unavailable(session.lang, &e),
    }
}

/// How a console action ended when it did not go through.
enum Acted {
    /// Refused by the rule book (on the console device, or by the relay on push): its code.
    Refused(&'static str),
    Unavailable(Error),
}

/// Does `f` on the user's console device (one judged change) and syncs it to the relay, which judges
/// it again; a change the relay refuses lands in the device's quarantine and is reported as refused.
async fn act(
    state: &ConsoleState,
    session: &Session,
    record: &str,
    f: impl FnOnce(&gridwork_core::Store) -> gridwork_core::Result<()> + Send + 'static,
) -> std::result::Result<(), Acted> {
    let device = state
        .device(&session.user)
        .await
        .map_err(Acted::Unavailable)?;
    // What the relay has now, so the change builds on it.
    device.sync(FRESH).await.map_err(Acted::Unavailable)?;
    let store = device.store.clone();
    let result = tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Acted::Unavailable(Error::Unavailable(e.to_string())))?;
    result.map_err(|e| Acted::Refused(refusal_code(&e)))?;
    device
        .sync(Duration::ZERO)
        .await
        .map_err(Acted::Unavailable)?;
    match device.store.quarantined() {
        Ok(q) if q.iter().any(|c| c.record_id == record) => Err(Acted::Refused("refused_by_relay")),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    state: Option<String>,
    #[serde(default)]
    area: String,
}

/// The events board: open ones first, overdue and escalated to the user's area on top.
async fn events(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<EventsQuery>,
) -> Response {
    let lang = session.lang;
    let which = match q.state.as_deref() {
        Some("closed") => "closed",
        Some("all") => "all",
        _ => "open",
    };
    let mine = session.user.area.clone();
    let area = q.area.trim().to_owned();
    let wanted = area.clone();
    let (rows, areas) = match on_device(&state, &session, move |s| {
        pages::event_rows(s, which, &mine, &wanted)
    })
    .await
    {
        Ok(rows) => rows,
        Err(resp) => return resp,
    };
    session_html(
        StatusCode::OK,
        lang,
        Page::events(&session.who(), which, &area, &areas, &rows),
    )
}

/// Reads the user's console device (synced first) with `f`.
async fn on_device<T: Send + 'static>(
    state: &ConsoleState,
    session: &Session,
    f: impl FnOnce(&gridwork_core::Store) -> gridwork_core::Result<T> + Send + 'static,
) -> std::result::Result<T, Response> {
    let lang = session.lang;
    let device = state
        .device(&session.user)
        .await
        .map_err(|e| unavailable(lang, &e))?;
    device
        .sync(FRESH)
        .await
        .map_err(|e| unavailable(lang, &e))?;
    let store = device.store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(
            gridwork_core::Error::UnknownRecord(_)
            | gridwork_core::Error::UnknownArea(_)
            | gridwork_core::Error::OutOfScope(_),
        )) => {
            let w = Words::of(lang);
            Err(session_html(
                StatusCode::NOT_FOUND,
                lang,
                Page::message(lang, w.not_found, w.not_in_your_area),
            ))
        }
        Ok(Err(e)) => Err(unavailable(lang, &Error::Unavailable(e.to_string()))),
        Err(e) => Err(unavailable(lang, &Error::Unavailable(e.to_string()))),
    }
}

/// An event's page: its fields, timeline and the actions its status allows.
async fn event_page(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<ReviewsQuery>,
) -> Response {
    let lang = session.lang;
    let area = session.user.area.clone();
    let eid = id.clone();
    let view = match on_device(&state, &session, move |s| pages::event_view(s, &eid, &area)).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let w = Words::of(lang);
    let notice = q.done.is_some().then_some(w.done_notice);
    let error = q.refusal(w);
    session_html(
        StatusCode::OK,
        lang,
        Page::event(&session.who(), &view, notice, error),
    )
}

#[derive(Deserialize)]
struct EventForm {
    csrf: String,
    action: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    area: String,
}

/// One step of an event's lifecycle through the user's console device.
async fn event_act(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<EventForm>,
) -> Response {
    use gridwork_core::EventAction as A;
    let action = match form.action.as_str() {
        "assign" => A::Assign {
            assignee: form.assignee.trim().to_owned(),
        },
        "start" => A::Start,
        "resolve" => A::Resolve,
        "verify" => A::Verify,
        "close" => A::Close,
        "return" => A::Return,
        "reopen" => A::Reopen,
        "escalate" => A::Escalate,
        "hand_down" => A::HandDown {
            area: form.area.trim().to_owned(),
        },
        "comment" => A::Comment,
        _ => {
            let w = Words::of(session.lang);
            return html(
                StatusCode::BAD_REQUEST,
                Page::message(session.lang, w.bad_request, w.try_again),
            );
        }
    };
    let name = action.name();
    let back = Back {
        ok: format!("/console/events/{id}?done={name}"),
        refused: format!("/console/events/{id}?"),
    };
    let (event, comment) = (id.clone(), form.comment.trim().to_owned());
    record_change(
        &state,
        &session,
        &form.csrf,
        name,
        &id,
        &id,
        back,
        move |store| {
            let comment = Some(comment.as_str()).filter(|c| !c.is_empty());
            store.transition(&event, action, comment).map(|_| ())
        },
    )
    .await
}

/// A record's page: values, links, history with old and new values, conflicts to resolve.
async fn record_page(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<ReviewsQuery>,
) -> Response {
    let lang = session.lang;
    let rid = id.clone();
    let view = match on_device(&state, &session, move |s| pages::record_view(s, &rid)).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let w = Words::of(lang);
    let notice = q.done.is_some().then_some(w.resolved_notice);
    let error = q.refusal(w);
    session_html(
        StatusCode::OK,
        lang,
        Page::record(&session.who(), &view, notice, error),
    )
}

#[derive(Deserialize)]
struct ResolveForm {
    csrf: String,
    field: String,
    value: String,
}

/// Resolves a conflict (concurrent edits, or what a merge left) to one of its values.
async fn resolve(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ResolveForm>,
) -> Response {
    let back = Back {
        ok: format!("/console/records/{id}?done=resolved"),
        refused: format!("/console/records/{id}?"),
    };
    let record = id.clone();
    record_change(
        &state,
        &session,
        &form.csrf,
        "resolve",
        &id,
        &id,
        back,
        move |store| store.resolve_conflict(&record, &form.field, &form.value),
    )
    .await
}

/// Possible duplicates in the user's area, side by side.
async fn duplicates(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<ReviewsQuery>,
) -> Response {
    let lang = session.lang;
    let pairs = match on_device(&state, &session, pages::pair_rows).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let w = Words::of(lang);
    let notice = match q.done.as_deref() {
        Some("merged") => Some(w.merged_notice),
        Some("distinct") => Some(w.distinct_notice),
        _ => None,
    };
    let error = q.refusal(w);
    session_html(
        StatusCode::OK,
        lang,
        Page::duplicates(&session.who(), &pairs, notice, error),
    )
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: String,
    a: String,
    b: String,
    decision: String,
}

/// Merges a pair (keeping either record) or records that it is not a duplicate.
async fn decide(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(form): Form<DecideForm>,
) -> Response {
    let (kept, away) = match form.decision.as_str() {
        "keep_a" => (form.a.clone(), form.b.clone()),
        "keep_b" => (form.b.clone(), form.a.clone()),
        "distinct" => (form.a.clone(), form.b.clone()),
        _ => {
            let w = Words::of(session.lang);
            return html(
                StatusCode::BAD_REQUEST,
                Page::message(session.lang, w.bad_request, w.try_again),
            );
        }
    };
    let distinct = form.decision == "distinct";
    let action = if distinct { "not_duplicate" } else { "merge" };
    let back = Back {
        ok: if distinct {
            "/console/duplicates?done=distinct".to_owned()
        } else {
            format!("/console/records/{kept}")
        },
        refused: "/console/duplicates?".into(),
    };
    let target = format!("{kept}<-{away}");
    let (k, a) = (kept.clone(), away.clone());
    record_change(
        &state,
        &session,
        &form.csrf,
        action,
        &target,
        &kept,
        back,
        move |store| {
            if distinct {
                store.mark_not_duplicate(&k, &a)
            } else {
                store.merge_records(&k, &a).map(|_| ())
            }
        },
    )
    .await
}

#[derive(Deserialize)]
struct StatsForm {
    #[serde(default)]
    area: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
}

/// Follow-up coverage, what is due per grid and worker, and the statistics of an area and period:
/// the numbers the relay's `GET /v1/stats` gives, drawn as bars (no script).
async fn stats(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<StatsForm>,
) -> Response {
    let lang = session.lang;
    let area = q.area.trim().to_owned();
    let date = |d: &str| {
        let d = d.trim();
        if pages::day_secs(d).is_some() {
            d.to_owned()
        } else {
            String::new()
        }
    };
    let (from, until) = (date(&q.from), date(&q.until));
    let view = match on_device(&state, &session, move |s| {
        pages::stats_view(s, &area, &from, &until)
    })
    .await
    {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    session_html(StatusCode::OK, lang, Page::stats(&session.who(), &view))
}

// ------------------------------------------------------------------------------- operators
//
// The area tree, users and devices are the relay's own configuration, not records: an operator changes
// them through the same functions as `gridwork-server admin`, each change in the audit trail.

/// The page for operators only; others get 403.
fn operator_only(session: &Session) -> Option<Response> {
    if session.user.role == Role::Operator {
        return None;
    }
    let w = Words::of(session.lang);
    Some(session_html(
        StatusCode::FORBIDDEN,
        session.lang,
        Page::message(session.lang, w.forbidden, w.operators_only),
    ))
}

async fn admin_view(state: &ConsoleState) -> Result<pages::AdminView> {
    let admin = crate::admin::Admin::on(state.store.clone());
    let areas = admin
        .list_areas()
        .await?
        .into_iter()
        .map(|a| pages::AreaLine {
            id: a.id,
            path: a.path,
            level: a.level.as_str().to_owned(),
            name: a.name,
        })
        .collect();
    let users = admin
        .list_users()
        .await?
        .into_iter()
        .map(|u| pages::UserLine {
            id: u.id,
            name: u.name,
            role: u.role.as_str().to_owned(),
            area: u.area,
            disabled: u.disabled,
            devices: u.devices,
        })
        .collect();
    let devices = admin
        .list_devices()
        .await?
        .into_iter()
        .map(|d| pages::DeviceLine {
            state: if d.revoked_at.is_some() {
                "revoked".into()
            } else if d.bound {
                "in use".into()
            } else {
                "issued".into()
            },
            active: d.revoked_at.is_none(),
            last_sync: pages::when(d.last_sync_at),
            user: d.user_id,
            id: d.id,
        })
        .collect();
    let schedules = admin
        .list_schedules()
        .await?
        .into_iter()
        .map(|s| {
            (
                s.id,
                format!(
                    "{} · {} · {} · {}",
                    s.area,
                    s.kind.as_str(),
                    s.every,
                    s.name
                ),
            )
        })
        .collect();
    let forms = admin
        .list_forms()
        .await?
        .into_iter()
        .map(|f| {
            let keys: Vec<String> = f.fields.iter().map(|x| x.key.clone()).collect();
            (
                f.id,
                format!("{} · {} · {}", f.area, f.kind.as_str(), keys.join(", ")),
            )
        })
        .collect();
    Ok(pages::AdminView {
        areas,
        users,
        devices,
        schedules,
        forms,
    })
}

async fn admin_page(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<ReviewsQuery>,
) -> Response {
    if let Some(refused) = operator_only(&session) {
        return refused;
    }
    let lang = session.lang;
    let view = match admin_view(&state).await {
        Ok(v) => v,
        Err(e) => return unavailable(lang, &e),
    };
    let w = Words::of(lang);
    let notice = match q.done.as_deref() {
        Some("revoked") => Some(w.revoked_notice),
        Some(_) => Some(w.saved_notice),
        None => None,
    };
    session_html(
        StatusCode::OK,
        lang,
        Page::admin(&session.who(), &view, notice, None),
    )
}

/// An operator's change: refused to others and without the session's CSRF token; then `change` on the
/// relay's admin functions, audited, and the page again with what happened.
async fn operator_change(
    state: &ConsoleState,
    session: &Session,
    csrf: &str,
    action: &str,
    target: &str,
    done: &str,
    change: impl AsyncFnOnce(crate::admin::Admin) -> Result<()>,
) -> Response {
    if let Some(refused) = operator_only(session) {
        return refused;
    }
    if !same_secret(&session.csrf, csrf) {
        return csrf_refused(state, session, action, Some(target)).await;
    }
    let result = change(crate::admin::Admin::on(state.store.clone())).await;
    admin_done(state, session, action, target, result, done).await
}

/// The answer to an operator's change: back to the page, with what happened.
async fn admin_done(
    state: &ConsoleState,
    session: &Session,
    action: &str,
    target: &str,
    result: Result<()>,
    done: &str,
) -> Response {
    match result {
        Ok(()) => {
            state
                .audit(&session.user.id, action, Some(target), "ok")
                .await;
            secure(Redirect::to(&format!("/console/admin?done={done}")).into_response())
        }
        Err(e) => {
            let code = match &e {
                Error::Invalid(_) => "invalid",
                Error::Conflict(_) => "exists",
                Error::NotFound(_) => "not_found",
                _ => "failed",
            };
            state
                .audit(&session.user.id, action, Some(target), code)
                .await;
            // The page again, with the relay's message (ids and rules, never values): nothing of
            // it goes into a URL.
            let text: String = e.to_string().chars().take(300).collect();
            let view = match admin_view(state).await {
                Ok(v) => v,
                Err(e) => return unavailable(session.lang, &e),
            };
            session_html(
                StatusCode::BAD_REQUEST,
                session.lang,
                Page::admin(&session.who(), &view, None, Some(&text)),
            )
        }
    }
}

#[derive(Deserialize)]
struct AreaForm {
    csrf: String,
    id: String,
    #[serde(default)]
    parent: String,
    level: String,
    name: String,
}

async fn admin_area(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(f): Form<AreaForm>,
) -> Response {
    let id = f.id.trim().to_owned();
    operator_change(
        &state,
        &session,
        &f.csrf,
        "add_area",
        &id,
        "area",
        async |admin| {
            let level = f
                .level
                .parse::<gridwork_protocol::AreaLevel>()
                .map_err(Error::Invalid)?;
            let parent = Some(f.parent.trim()).filter(|p| !p.is_empty());
            admin
                .add_area(&id, parent, level, f.name.trim())
                .await
                .map(|_| ())
        },
    )
    .await
}

#[derive(Deserialize)]
struct UserForm {
    csrf: String,
    id: String,
    name: String,
    role: String,
    area: String,
}

async fn admin_user(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(f): Form<UserForm>,
) -> Response {
    let id = f.id.trim().to_owned();
    operator_change(
        &state,
        &session,
        &f.csrf,
        "add_user",
        &id,
        "user",
        async |admin| {
            let role = f.role.parse::<Role>().map_err(Error::Invalid)?;
            admin
                .add_user(&id, f.name.trim(), role, f.area.trim())
                .await
        },
    )
    .await
}

#[derive(Deserialize)]
struct SetUserForm {
    csrf: String,
    id: String,
    role: String,
    area: String,
}

/// Changes a user's role and area (their devices learn it at their next sync; a narrower scope purges
/// what it no longer covers from them).
async fn admin_set_user(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(f): Form<SetUserForm>,
) -> Response {
    let id = f.id.trim().to_owned();
    operator_change(
        &state,
        &session,
        &f.csrf,
        "set_user",
        &id,
        "user",
        async |admin| {
            let changes = crate::storage::UserChanges {
                name: None,
                role: Some(f.role.parse::<Role>().map_err(Error::Invalid)?),
                area: Some(f.area.trim().to_owned()),
            };
            admin.set_user(&id, &changes).await
        },
    )
    .await
}

#[derive(Deserialize)]
struct DeviceForm {
    csrf: String,
    user: String,
    #[serde(default)]
    device: String,
}

/// Issues a device token and shows it once, as text and as a QR code an app scans (the relay's address,
/// as the operator's browser reaches it, and the token).
async fn admin_device(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    headers: HeaderMap,
    Form(f): Form<DeviceForm>,
) -> Response {
    if let Some(refused) = operator_only(&session) {
        return refused;
    }
    if !same_secret(&session.csrf, &f.csrf) {
        return csrf_refused(&state, &session, "issue_device", Some(&f.user)).await;
    }
    let user = f.user.trim().to_owned();
    let new = crate::admin::Admin::on(state.store.clone())
        .add_device(&user, Some(f.device.trim()).filter(|d| !d.is_empty()))
        .await;
    let new = match new {
        Ok(n) => n,
        Err(e) => return admin_done(&state, &session, "issue_device", &user, Err(e), "").await,
    };
    state
        .audit(&session.user.id, "issue_device", Some(&new.device_id), "ok")
        .await;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .unwrap_or("127.0.0.1");
    let scheme = if state.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    let relay = format!("{scheme}://{host}");
    let qr_text = pages::enrolment_text(&relay, &new.token);
    let view = pages::TokenView {
        qr_svg: pages::qr_svg(&qr_text),
        qr_text,
        relay,
        device: new.device_id,
        token: new.token,
    };
    session_html(
        StatusCode::OK,
        session.lang,
        Page::token(&session.who(), &view),
    )
}

async fn admin_revoke(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    operator_change(
        &state,
        &session,
        &f.csrf,
        "revoke_device",
        &id,
        "revoked",
        async |admin| admin.revoke_device(&id).await,
    )
    .await
}

#[derive(Deserialize)]
struct MapQuery {
    #[serde(default)]
    category: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
}

/// The map: boundaries, places, visits in the period, open events (of a category).
async fn map_page(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<MapQuery>,
) -> Response {
    let lang = session.lang;
    let shapes = match state.store.area_shapes().await {
        Ok(s) => s,
        Err(e) => return unavailable(lang, &e),
    };
    let date = |d: &str| {
        let d = d.trim();
        if pages::day_secs(d).is_some() {
            d.to_owned()
        } else {
            String::new()
        }
    };
    let category = if gridwork_protocol::model::Kind::Event
        .spec("category")
        .is_ok_and(|s| s.validate(q.category.trim()).is_ok())
    {
        q.category.trim().to_owned()
    } else {
        String::new()
    };
    let (from, until) = (date(&q.from), date(&q.until));
    let tiles = state.config.map_tiles.clone();
    let view = match on_device(&state, &session, move |s| {
        map::map_view(s, &shapes, &category, &from, &until, tiles.as_deref())
    })
    .await
    {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let mut resp = session_html(StatusCode::OK, lang, Page::map(&session.who(), &view));
    // The tile server's images, and nothing else from another host, on this page only.
    if let Some(origin) = state
        .config
        .map_tiles
        .as_deref()
        .and_then(|t| map::tile_origin(t).ok())
    {
        let policy = format!(
            "default-src 'none'; style-src 'self'; img-src 'self' data: {origin}; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        );
        if let Ok(v) = HeaderValue::from_str(&policy) {
            resp.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    resp
}

#[derive(Deserialize)]
struct ShapeForm {
    csrf: String,
    area: String,
    geojson: String,
}

/// An operator sets an area's boundary from GeoJSON.
async fn admin_shape(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(f): Form<ShapeForm>,
) -> Response {
    let area = f.area.trim().to_owned();
    operator_change(
        &state,
        &session,
        &f.csrf,
        "set_boundary",
        &area,
        "boundary",
        async |admin| admin.set_area_shape(&area, &f.geojson).await,
    )
    .await
}

#[derive(Deserialize)]
struct ScheduleForm {
    csrf: String,
    id: String,
    area: String,
    kind: String,
    #[serde(default)]
    tag: String,
    every: String,
    name: String,
}

/// Defines (or replaces) a follow-up schedule; devices get it at their next sync.
async fn admin_schedule(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(f): Form<ScheduleForm>,
) -> Response {
    let id = f.id.trim().to_owned();
    operator_change(
        &state,
        &session,
        &f.csrf,
        "put_schedule",
        &id,
        "schedule",
        async |admin| {
            let schedule = gridwork_protocol::Schedule {
                id: id.clone(),
                area: f.area.trim().to_owned(),
                name: f.name.trim().to_owned(),
                kind: gridwork_protocol::Kind::parse(f.kind.trim())
                    .ok_or_else(|| Error::Invalid("unknown kind".into()))?,
                tag: Some(f.tag.trim().to_owned()).filter(|t| !t.is_empty()),
                category: None,
                every: gridwork_protocol::Every::parse(&f.every).map_err(Error::Invalid)?,
            };
            admin.put_schedule(schedule).await
        },
    )
    .await
}

#[derive(Deserialize)]
struct CityForm {
    csrf: String,
    form: String,
}

/// Defines (or replaces) a city form from its JSON; devices get it at their next sync.
async fn admin_form(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Form(f): Form<CityForm>,
) -> Response {
    let parsed: std::result::Result<gridwork_protocol::Form, _> = serde_json::from_str(&f.form);
    let id = parsed.as_ref().map(|p| p.id.clone()).unwrap_or_default();
    operator_change(
        &state,
        &session,
        &f.csrf,
        "put_form",
        &id,
        "form",
        async |admin| {
            let form = parsed.map_err(|e| Error::Invalid(format!("not a form: {e}")))?;
            admin.put_form(form).await
        },
    )
    .await
}

async fn admin_remove_schedule(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    operator_change(
        &state,
        &session,
        &f.csrf,
        "remove_schedule",
        &id,
        "removed",
        async |admin| admin.remove_schedule(&id).await,
    )
    .await
}

async fn admin_remove_form(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    operator_change(
        &state,
        &session,
        &f.csrf,
        "remove_form",
        &id,
        "removed",
        async |admin| admin.remove_form(&id).await,
    )
    .await
}

async fn exports(State(_state): State<Arc<ConsoleState>>, session: Session) -> Response {
    session_html(StatusCode::OK, session.lang, Page::exports(&session.who()))
}

#[derive(Deserialize)]
struct ExportQuery {
    kind: String,
    format: String,
    #[serde(default)]
    area: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    unmasked: Option<String>,
}

/// A file of a kind's records in the user's scope (the same bytes the app's export gives): CSV with a
/// BOM, XLSX or GeoJSON; ID numbers masked unless asked (supervisors and operators only).
async fn export(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Query(q): Query<ExportQuery>,
) -> Response {
    use gridwork_core::{ExportFormat, Kind};
    let lang = session.lang;
    let w = Words::of(lang);
    let (Some(kind), Some(format)) = (Kind::parse(&q.kind), ExportFormat::parse(&q.format)) else {
        return html(
            StatusCode::BAD_REQUEST,
            Page::message(lang, w.bad_request, w.try_again),
        );
    };
    let mut query = gridwork_core::ExportQuery::new(kind);
    query.area = Some(q.area.trim().to_owned()).filter(|a| !a.is_empty());
    query.unmasked = q.unmasked.as_deref() == Some("true");
    // Visits and events of a period (dates, the last one included), as the statistics page shows.
    query.from = pages::day_secs(q.from.trim());
    query.until = pages::day_secs(q.until.trim()).map(|s| s + 86_400);
    let unmasked = query.unmasked;
    let bytes = match on_device(&state, &session, move |s| s.export_records(&query, format)).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let what = format!("{}.{}", kind.as_str(), q.format);
    state
        .audit(
            &session.user.id,
            if unmasked {
                "export_unmasked"
            } else {
                "export"
            },
            Some(&what),
            "ok",
        )
        .await;
    let mime = match format {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ExportFormat::GeoJson => "application/geo+json",
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"gridwork-{what}\""))
            .expect("header text"),
    );
    secure(resp)
}

/// The code of a refused console action, for the page and the audit trail (never a value).
fn refusal_code(e: &gridwork_core::Error) -> &'static str {
    use gridwork_core::Error as E;
    match e {
        E::Forbidden(_) => "forbidden_role",
        E::OutOfScope(_) | E::UnknownRecord(_) => "out_of_scope",
        E::InvalidTransition(_) => "invalid_transition",
        E::InvalidField { .. } | E::InvalidInput(_) => "invalid_value",
        E::Deleted(_) => "deleted",
        E::Refused { reason, .. } => reason.as_str(),
        _ => "failed",
    }
}

async fn stylesheet() -> Response {
    let mut resp = (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLESHEET,
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    resp
}

/// Web account passwords: argon2id in PHC format.
pub mod passwords {
    use argon2::password_hash::{
        rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
    };
    use argon2::Argon2;

    /// Shortest password an operator may set.
    pub const MIN_LEN: usize = 10;

    /// Hashes a new password (argon2id, the crate's default cost: 19 MiB, 2 passes).
    pub fn hash(password: &str) -> Result<String, String> {
        if password.chars().count() < MIN_LEN {
            return Err(format!(
                "a console password has at least {MIN_LEN} characters"
            ));
        }
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }

    /// Whether `password` matches `hash`. Without a hash (no such account) a dummy one is checked, so
    /// the answer takes as long either way.
    pub fn verify(hash: Option<&str>, password: &str) -> bool {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                             d0zlLkFqDe2N1k5Q5g8ZVm0Y1cF6Gk1uY2n8s4Bq5Jk";
        let parsed = PasswordHash::new(hash.unwrap_or(DUMMY)).or_else(|_| PasswordHash::new(DUMMY));
        match parsed {
            Ok(h) => {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
                    && hash.is_some()
            }
            Err(_) => false,
        }
    }
}
