//! The sync client: pushes the outbox to the relay, bootstraps a new device from a snapshot, pulls
//! everyone else's changes page by page and moves attachments. The wire protocol is `docs/protocol.md`.
//!
//! Resumable at every step: pushed changes leave the outbox as soon as the relay acknowledges them, the
//! pull cursor (and the snapshot position) is saved after every page, and applying is idempotent, so an
//! interrupted sync picks up where it stopped. Network errors are retried with backoff; a change the
//! relay refuses is quarantined with its reason and never blocks the rest.
//!
//! The relay is the authority on who the device is: every sync starts by registering the store
//! (`POST /v1/me`) and taking the relay's answer (user, device, role, area and the area tree). A token of
//! another user is refused before anything of the store's is judged (a store that has synced pushes
//! beside `/v1/me`, under the precondition of who it believes the token is, which the relay checks
//! before anything else); a token bound to another store is [`SyncError::DeviceInUse`]; a revoked
//! device or disabled user makes the store wipe itself.

use crate::error::{Error, Result};
use crate::model::{forms_version, schedules_version, Identity, Record, Role};
use crate::rules::Reason;
use crate::store::{RemoteChunk, Store, StoreOptions};
use base64::Engine;
pub use gridwork_protocol::wire::*;
use reqwest::StatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot reach the relay: {0}")]
    Network(String),
    #[error("the relay does not know this device's token")]
    Unauthorized,
    #[error("this device has been revoked by an operator; its store was wiped")]
    Revoked,
    #[error("this user has been disabled by an operator; the store was wiped")]
    Disabled,
    #[error(
        "the relay has this device token registered to another store (a copied store or a \
         reinstalled app): an operator must reset the device or issue a new token"
    )]
    DeviceInUse,
    #[error(
        "the relay's token now belongs to another user or store than the one this push was made \
         for: the next sync asks the relay who it is first"
    )]
    IdentityChanged,
    #[error("this store belongs to user {store}, but the token is user {token}'s: use the token issued for this store's user")]
    WrongUser { store: String, token: String },
    #[error("the relay refused the request ({status}, {code}): {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the relay answered something this client cannot read: {0}")]
    Protocol(String),
    #[error("sync cancelled")]
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Base URL of the relay, e.g. `https://relay.example.org` (the client adds `/v1/...`).
    pub server_url: String,
    /// The device's bearer token, issued by an operator.
    pub token: String,
    /// Changes per push request (the relay takes at most 1,000).
    pub push_batch: usize,
    /// Changes or records per pull/snapshot page (the relay gives at most 5,000).
    pub page_size: u32,
    /// Retries of one request on network errors and 5xx, with exponential backoff (a 429 is retried
    /// after the wait the relay asks for, at least 8 times).
    pub max_retries: u32,
    /// The first backoff delay; it doubles with each retry.
    pub backoff: Duration,
    pub request_timeout: Duration,
    /// Whether the store keeps its HTTP client, and the connections to the relay it holds open,
    /// from one sync to the next (for up to 20 s idle). Yes for a phone: a sync soon after the last
    /// one needs no new connection. The relay's web console says no for its devices: one per web
    /// user, each would hold connections to the relay itself until that user's next page.
    pub keep_connections: bool,
}

impl SyncConfig {
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        SyncConfig {
            server_url: server_url.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            push_batch: 500,
            page_size: 2000,
            max_retries: 5,
            backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(60),
            keep_connections: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    Connecting,
    Pushing,
    Bootstrapping,
    Pulling,
    Attachments,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    pub done: u64,
    /// Known for pushes and uploads; pulls do not know their end in advance.
    pub total: Option<u64>,
}

/// Receives progress reports; called on the syncing thread, so keep it quick.
pub trait ProgressSink: Send + Sync {
    fn progress(&self, progress: SyncProgress);
}

/// A sink that ignores progress.
pub struct NoProgress;
impl ProgressSink for NoProgress {
    fn progress(&self, _: SyncProgress) {}
}

impl<F: Fn(SyncProgress) + Send + Sync> ProgressSink for F {
    fn progress(&self, progress: SyncProgress) {
        self(progress)
    }
}

/// Cancels a running sync at the next request boundary. What was done so far stays done.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub pushed: u64,
    pub rejected: u64,
    /// Changes the relay was too busy to take; they wait in the outbox for the next sync.
    pub deferred: u64,
    pub pulled: u64,
    pub bootstrapped: u64,
    pub records_changed: u64,
    pub attachments_uploaded: u64,
    /// Records that left the user's scope and were removed from the device.
    pub purged: u64,
    /// The relay's log position this device has caught up to.
    pub cursor: u64,
}

const CURSOR: &str = "cursor";
const SNAPSHOT_CURSOR: &str = "snapshot_cursor";
const SNAPSHOT_AFTER: &str = "snapshot_after";
const LAST_SYNC: &str = "last_sync";
/// `"1"` once the relay said (in `/v1/me`) that it honours a push's `expect`.
const RELAY_PUSH_EXPECT: &str = "relay_push_expect";
/// A sync that pushed more changes than this pulls afresh after the push instead of using the page
/// it asked for beside `/v1/me`.
const EARLY_PULL_MAX_PUSHED: u64 = 100;
/// How many times a request answered `429` (with the wait the relay asks for) is sent again, at least
/// ([`SyncConfig::max_retries`] if that is more).
const RATE_LIMITED_RETRIES: u32 = 8;

/// The HTTP client of one sync, with its configuration: cheap to clone (for a request that runs
/// while the sync goes on with something else).
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    config: Arc<SyncConfig>,
    cancel: CancelToken,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.config.server_url)
    }

    /// Sends a request built by `build`, retrying transient failures, and returns the response of the
    /// first non-transient answer. Error statuses become typed errors.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SyncError> {
        let mut delay = self.config.backoff;
        let mut attempt = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            let outcome = build(&self.http)
                .bearer_auth(&self.config.token)
                .send()
                .await;
            let retry_after = match outcome {
                Ok(resp)
                    if resp.status().is_success()
                        || resp.status() == StatusCode::PERMANENT_REDIRECT =>
                {
                    return Ok(resp)
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    // The relay says when it takes this device's next request: flow control, not
                    // a failure, so it has a budget of its own. The requests of one sync run side
                    // by side: each waits a little more than it was told (up to half again), so they
                    // do not all come back for the same token.
                    if attempt >= self.config.max_retries.max(RATE_LIMITED_RETRIES) {
                        return Err(error_from(resp).await);
                    }
                    retry_after(resp.headers()).map(|after| {
                        let spread = after.as_millis() as u64 / 2;
                        after + Duration::from_millis(rand::random::<u64>() % (spread + 1))
                    })
                }
                Ok(resp) if resp.status().is_server_error() => {
                    let after = retry_after(resp.headers());
                    if attempt >= self.config.max_retries {
                        return Err(error_from(resp).await);
                    }
                    after
                }
                Ok(resp) => return Err(error_from(resp).await),
                Err(e) => {
                    if attempt >= self.config.max_retries {
                        return Err(SyncError::Network(network_reason(&e)));
                    }
                    None
                }
            };
            attempt += 1;
            let wait = retry_after.unwrap_or(delay).min(Duration::from_secs(30));
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying request"
            );
            self.pause(wait).await?;
            delay = delay.saturating_mul(2);
        }
    }

    /// Waits `wait`, in small steps so that a cancel is noticed promptly.
    async fn pause(&self, wait: Duration) -> Result<(), SyncError> {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            tokio::time::sleep(Duration::from_millis(50).min(wait)).await;
        }
        Ok(())
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, SyncError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SyncError::Network(network_reason(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| SyncError::Protocol(e.to_string()))
    }
}

impl Client {
    /// `GET /v1/changes`: the page after `cursor`.
    async fn pull_page(&self, cursor: u64) -> Result<PullResponse, SyncError> {
        let page = self.config.page_size.clamp(1, 5000);
        self.json(
            self.send(|h| {
                h.get(self.url("/changes"))
                    .query(&[("after", cursor.to_string()), ("limit", page.to_string())])
            })
            .await?,
        )
        .await
    }

    /// `GET /v1/snapshot`: the page of records after record `after` (from the first without).
    async fn snapshot_page(&self, after: Option<&str>) -> Result<SnapshotResponse, SyncError> {
        let page = self.config.page_size.clamp(1, 5000);
        self.json(
            self.send(|h| {
                let mut req = h
                    .get(self.url("/snapshot"))
                    .query(&[("limit", page.to_string())]);
                if let Some(a) = after {
                    req = req.query(&[("after_record", a)]);
                }
                req
            })
            .await?,
        )
        .await
    }

    /// `POST /v1/me`: binds the device token to the store with `actor` (or checks it is the bound
    /// one), and says who the relay knows this device as.
    async fn register(&self, actor: &str) -> Result<MeResponse, SyncError> {
        let body = RegisterRequest {
            actor: actor.to_owned(),
        };
        self.json(self.send(|h| h.post(self.url("/me")).json(&body)).await?)
            .await
    }

    /// `GET /v1/areas`: the area tree of the user's scope, with its ancestors.
    async fn areas(&self) -> Result<AreasResponse, SyncError> {
        self.json(self.send(|h| h.get(self.url("/areas"))).await?)
            .await
    }

    /// `GET /v1/schedules`: the follow-up schedules of the user's areas and their ancestors.
    async fn schedules(&self) -> Result<SchedulesResponse, SyncError> {
        self.json(self.send(|h| h.get(self.url("/schedules"))).await?)
            .await
    }

    /// `GET /v1/forms`: the city forms of the user's areas and their ancestors.
    async fn forms(&self) -> Result<FormsResponse, SyncError> {
        self.json(self.send(|h| h.get(self.url("/forms"))).await?)
            .await
    }
}

/// What `init` may say about the user of a store made from the relay: each claim given must agree
/// with the relay's answer for the token, or the store is not made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityClaims {
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    pub role: Option<Role>,
    pub area: Option<String>,
}

impl IdentityClaims {
    fn check(&self, relay: &Identity) -> Result<()> {
        let role = self.role.map(|r| r.as_str().to_owned());
        let relay_role = relay.role.as_str().to_owned();
        for (field, claimed, token) in [
            ("user", &self.user_id, &relay.user_id),
            ("device", &self.device_id, &relay.device_id),
            ("role", &role, &relay_role),
            ("area", &self.area, &relay.area),
        ] {
            if let Some(claimed) = claimed.as_ref().filter(|c| *c != token) {
                return Err(Error::TokenMismatch {
                    field: field.to_owned(),
                    claimed: claimed.clone(),
                    token: token.clone(),
                });
            }
        }
        Ok(())
    }
}

fn network_reason(e: &reqwest::Error) -> String {
    // reqwest's Display includes the URL, which is not personal data; keep the chain short.
    let mut reason = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        reason = format!("{reason}: {source}");
    }
    reason
}

/// When the relay says to try again: `Retry-After-Ms` (exact) over `Retry-After` (whole seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    number(RETRY_AFTER_MS_HEADER)
        .map(Duration::from_millis)
        .or_else(|| number("retry-after").map(Duration::from_secs))
}

async fn error_from(resp: reqwest::Response) -> SyncError {
    let status = resp.status().as_u16();
    let body: Option<ErrorBody> = resp.json().await.ok();
    let (code, message) = body
        .map(|b| (b.error.code, b.error.message))
        .unwrap_or_else(|| ("unknown".into(), String::new()));
    match (status, code.as_str()) {
        (401, "revoked") => SyncError::Revoked,
        (401, "disabled") => SyncError::Disabled,
        (401, _) => SyncError::Unauthorized,
        (409, "device_in_use") => SyncError::DeviceInUse,
        (412, "identity_changed") => SyncError::IdentityChanged,
        _ => SyncError::Server {
            status,
            code,
            message,
        },
    }
}

impl Store {
    fn sync_state(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .lock()
            .conn
            .query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets several sync state values in one transaction.
    fn set_sync_states(&self, values: &[(&str, &str)]) -> Result<()> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        for (key, value) in values {
            tx.execute(
                "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                [key, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn set_sync_state(&self, key: &str, value: Option<&str>) -> Result<()> {
        let inner = self.lock();
        match value {
            Some(v) => inner.conn.execute(
                "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                [key, v],
            )?,
            None => inner.conn.execute("DELETE FROM sync_state WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// The relay log position this device has pulled up to, and when it last synced (epoch seconds).
    pub fn sync_status(&self) -> Result<(u64, Option<i64>)> {
        let cursor = self
            .sync_state(CURSOR)?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let last = self.sync_state(LAST_SYNC)?.and_then(|c| c.parse().ok());
        Ok((cursor, last))
    }

    /// Syncs with the relay: push, bootstrap (first time), pull, attachments. Blocking: runs its own
    /// runtime, so call it from a background thread (not from inside an async runtime).
    pub fn sync(
        &self,
        config: &SyncConfig,
        progress: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<SyncReport> {
        // A store that will bootstrap gets a worker thread, on which the next snapshot page is
        // fetched while this thread applies the last one.
        if self.sync_state(CURSOR)?.is_none() {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            return runtime.block_on(self.sync_async(config, progress, cancel));
        }
        // Otherwise everything runs on this thread (a small sync is a few requests, and handing each
        // between threads would only add latency), on the runtime and HTTP client the store keeps
        // between syncs: a sync soon after the last one reuses its connections to the relay instead
        // of opening new ones (a TCP handshake per request, and a TLS handshake over the internet).
        if !config.keep_connections {
            let runtime = current_thread_runtime()?;
            return runtime.block_on(self.sync_async(config, progress, cancel));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let (runtime, http) = session.take(config)?;
        let result = runtime.block_on(self.sync_with(http.clone(), config, progress, cancel));
        session.keep(runtime, config, http);
        result
    }

    /// Downloads an attachment on demand (checked against its hash) and keeps it.
    pub fn fetch_attachment(
        &self,
        config: &SyncConfig,
        record_id: &str,
        sha256: &str,
    ) -> Result<Vec<u8>> {
        if let Some(bytes) = self.attachment(sha256)? {
            return Ok(bytes);
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidId(sha256.to_owned()));
        }
        let runtime = current_thread_runtime()?;
        let cancel = CancelToken::new();
        let fetched = runtime.block_on(async {
            let client = make_client(config, &cancel)?;
            let resp = client
                .send(|h| h.get(client.url(&format!("/attachments/{sha256}"))))
                .await?;
            // Bounded before it is read: nothing larger than an attachment may be.
            if resp
                .content_length()
                .is_some_and(|n| n > crate::limits::MAX_ATTACHMENT_BYTES)
            {
                return Err(SyncError::Protocol(format!(
                    "attachment {sha256} is larger than the attachment limit"
                ))
                .into());
            }
            let mime = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| SyncError::Network(network_reason(&e)))?;
            self.store_downloaded(record_id, sha256, &mime, &bytes)?;
            Ok(bytes.to_vec())
        });
        self.wipe_if_refused(fetched)
    }

    /// Wipes the store when the relay answered that this device was revoked or its user disabled:
    /// residents' data must not stay on a device that may no longer sync. Returns `result` as it was.
    fn wipe_if_refused<T>(&self, result: Result<T>) -> Result<T> {
        let reason = match &result {
            Err(Error::Sync(SyncError::Revoked)) => "revoked",
            Err(Error::Sync(SyncError::Disabled)) => "disabled",
            _ => return result,
        };
        self.wipe(reason)?;
        result
    }

    pub async fn sync_async(
        &self,
        config: &SyncConfig,
        progress: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<SyncReport> {
        let http = make_http(config)?;
        self.sync_with(http, config, progress, cancel).await
    }

    async fn sync_with(
        &self,
        http: reqwest::Client,
        config: &SyncConfig,
        progress: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<SyncReport> {
        let client = Client {
            http,
            config: Arc::new(config.clone()),
            cancel: cancel.clone(),
        };
        let result = self.sync_steps(client, progress).await;
        self.wipe_if_refused(result)
    }

    async fn sync_steps(&self, client: Client, progress: &dyn ProgressSink) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        progress.progress(SyncProgress {
            phase: SyncPhase::Connecting,
            done: 0,
            total: None,
        });
        // Who this device is comes from the relay: register the store (its Automerge actor) and take
        // the answer, before anything is pushed. The first pull page is asked for at the same time
        // (a round trip less on every sync); it is applied only if the answer leaves the scope as
        // it was, and only after the push, as if it had been asked for then.
        //
        // A store that has synced with a relay that honours a push's precondition (`expect`: the
        // user and store it was made for, refused as a whole with `412 identity_changed` when the
        // token is now another's) pushes at the same time too: a sync is then one round trip. The
        // relay judges the push by the token's user and scope as they are now, whatever `/v1/me`
        // answers; a refused precondition leaves the outbox as it was, and the push is made again
        // below, after the answer was taken, as on a relay without it.
        let cursor_before: Option<u64> = self.sync_state(CURSOR)?.and_then(|c| c.parse().ok());
        let actor = self.actor_hex();
        let expect = PushExpect {
            user: self.identity().user_id,
            actor: actor.clone(),
        };
        let relay_told = self.sync_state(RELAY_PUSH_EXPECT)?;
        let push_at_once = cursor_before.is_some()
            && self.identity_confirmed()
            && relay_told.as_deref() == Some("1");
        let (me, early, early_push) = tokio::join!(
            client.register(&actor),
            async {
                match cursor_before {
                    Some(c) => client.pull_page(c).await.ok(),
                    None => None,
                }
            },
            async {
                if push_at_once {
                    Some(self.push(&client, progress, &mut report, &expect).await)
                } else {
                    None
                }
            }
        );
        let me = me?;
        let supports_expect = if me.push_expect { Some("1") } else { None };
        if relay_told.as_deref() != supports_expect {
            self.set_sync_state(RELAY_PUSH_EXPECT, supports_expect)?;
        }
        // The area tree only when the relay's differs from the one the store holds.
        let areas = match &me.areas_version {
            Some(v) if self.areas_version()?.as_ref() == Some(v) => None,
            _ => Some(client.areas().await?.areas),
        };
        let scope = self.adopt_relay_identity(&me, areas.as_deref())?;
        // The follow-up schedules only when the relay's differ from the ones the store holds (a relay
        // that names none predates schedules: the store keeps what it has).
        if let Some(v) = &me.schedules_version {
            if self.schedules_version()?.as_ref() != Some(v) {
                let sent = client.schedules().await?.schedules;
                self.adopt_schedules(&sent, &schedules_version(&sent))?;
            }
        }
        // The city forms likewise.
        if let Some(v) = &me.forms_version {
            if self.forms_version()?.as_ref() != Some(v) {
                let sent = client.forms().await?.forms;
                self.adopt_forms(&sent, &forms_version(&sent))?;
            }
        }
        tracing::info!(device = %me.device_id, role = %me.role, "sync started");
        if scope.gained && self.sync_state(CURSOR)?.is_some() {
            // Records of the areas now in scope are not in the log after our cursor: start again from
            // a snapshot, keeping what the store has (applying is idempotent).
            tracing::info!("the user's scope grew: bootstrapping again");
            self.set_sync_state(CURSOR, None)?;
        }

        match early_push {
            Some(Ok(())) => {}
            // The token is not what the store believed when the push left (the answer above has
            // been taken, or refused the sync): push now, as a sync without the precondition would.
            Some(Err(Error::Sync(SyncError::IdentityChanged))) | None => {
                self.push(&client, progress, &mut report, &expect).await?
            }
            Some(Err(e)) => return Err(e),
        }
        let cursor_now: Option<u64> = self.sync_state(CURSOR)?.and_then(|c| c.parse().ok());
        // After a large push the early page is not used: its cursor predates this device's own new
        // entries, which the next pull would then page through again (cheap for a few, not for an
        // import of thousands).
        let pushed = report.pushed + report.rejected + report.deferred;
        let early = early
            .filter(|_| {
                !scope.gained
                    && !scope.lost
                    && cursor_now == cursor_before
                    && pushed <= EARLY_PULL_MAX_PUSHED
            })
            .map(|mut page| {
                // The relay's views in it predate what was just pushed: a record this device
                // changed would be stored as it was before its own change. Without views, its
                // records are merged from their documents.
                if pushed > 0 {
                    for item in &mut page.items {
                        item.view = None;
                    }
                }
                page
            });
        if cursor_now.is_none() {
            self.bootstrap(&client, progress, &mut report).await?;
        }
        let cursor = self.pull(&client, progress, &mut report, early).await?;
        if scope.lost || scope.gained {
            report.purged += self.lock().purge_out_of_scope(None)? as u64;
        }
        self.upload_attachments(&client, progress, &mut report)
            .await?;
        // The last page's cursor and the time of this sync, in one transaction (a commit less per sync).
        self.set_sync_states(&[
            (CURSOR, &cursor.to_string()),
            (LAST_SYNC, &crate::model::time::now_secs().to_string()),
        ])?;
        report.cursor = self.sync_status()?.0;
        progress.progress(SyncProgress {
            phase: SyncPhase::Done,
            done: report.pulled,
            total: None,
        });
        tracing::info!(
            pushed = report.pushed,
            rejected = report.rejected,
            deferred = report.deferred,
            pulled = report.pulled,
            purged = report.purged,
            cursor = report.cursor,
            "sync finished"
        );
        Ok(report)
    }

    /// Creates a new store whose identity and area tree come from the relay's answer for `config`'s
    /// token, and binds the token to it. Each claim given (`init --user/--role/--area/--device`) must
    /// agree with the relay's answer; a token already bound to another store is
    /// [`SyncError::DeviceInUse`]. `options` must not name an identity: the relay gives it. Nothing is
    /// left on disk when it fails. Blocking, like [`Store::sync`].
    pub fn create_from_relay(
        options: StoreOptions,
        config: &SyncConfig,
        claims: &IdentityClaims,
    ) -> Result<Store> {
        if options.identity.is_some() {
            return Err(Error::InvalidInput(
                "a store made from the relay takes its identity from the relay".into(),
            ));
        }
        if options.path.exists() {
            return Err(Error::InvalidInput(format!(
                "a store already exists at {}",
                options.path.display()
            )));
        }
        let runtime = current_thread_runtime()?;
        let cancel = CancelToken::new();
        let client = make_client(config, &cancel)?;
        let (me, areas) = runtime.block_on(async {
            let me: MeResponse = client
                .json(client.send(|h| h.get(client.url("/me"))).await?)
                .await?;
            Ok::<_, SyncError>((me, client.areas().await?))
        })?;
        if me.actor.is_some() {
            return Err(SyncError::DeviceInUse.into());
        }
        let role = Role::parse(&me.role)
            .ok_or_else(|| SyncError::Protocol(format!("unknown role `{}`", me.role)))?;
        let identity = Identity {
            user_id: me.user_id.clone(),
            device_id: me.device_id.clone(),
            role,
            area: me.area.clone(),
        };
        claims.check(&identity)?;
        let path = options.path.clone();
        let made = Store::open(options.identity(identity)).and_then(|store| {
            store.adopt_relay_identity(&me, Some(&areas.areas))?;
            runtime.block_on(client.register(&store.actor_hex()))?;
            Ok(store)
        });
        if made.is_err() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        made
    }

    async fn push(
        &self,
        client: &Client,
        progress: &dyn ProgressSink,
        report: &mut SyncReport,
        expect: &PushExpect,
    ) -> Result<()> {
        let total = self.outbox_len()?;
        let mut done = 0;
        progress.progress(SyncProgress {
            phase: SyncPhase::Pushing,
            done,
            total: Some(total),
        });
        // Rounds in a row in which the relay was too busy to take anything.
        let mut busy_streak = 0u32;
        loop {
            let batch = self.pushable(client.config.push_batch.clamp(1, 1000) as u32)?;
            if batch.is_empty() {
                return Ok(());
            }
            let body = PushRequest {
                changes: batch
                    .iter()
                    .map(|c| PushChange {
                        record: c.record_id.clone(),
                        bytes: B64.encode(&c.bytes),
                    })
                    .collect(),
                expect: Some(expect.clone()),
            };
            let resp: PushResponse = client
                .json(
                    client
                        .send(|h| h.post(client.url("/changes")).json(&body))
                        .await?,
                )
                .await?;
            if resp.results.len() != batch.len() {
                return Err(SyncError::Protocol(format!(
                    "push answered {} results for {} changes",
                    resp.results.len(),
                    batch.len()
                ))
                .into());
            }
            let mut accepted = Vec::new();
            let mut busy = 0u64;
            // Records with a change refused in this batch: their later changes build on it.
            let mut refused: HashSet<&str> = HashSet::new();
            for (change, result) in batch.iter().zip(&resp.results) {
                if result.status == PushStatus::Accepted {
                    accepted.push(change.seq);
                    report.pushed += 1;
                    continue;
                }
                let reason = result.reason.clone().unwrap_or_else(|| "rejected".into());
                match Reason::parse(&reason) {
                    Some(r) if r.is_transient() => {
                        // The relay had no time for this change: it stays queued and is sent again.
                        busy += 1;
                        continue;
                    }
                    Some(Reason::MissingDeps) if refused.contains(change.record_id.as_str()) => {
                        // It builds on a change refused just now: it waits in the outbox until that
                        // one is discarded (and is then re-applied if it is still allowed).
                        continue;
                    }
                    _ => {}
                }
                tracing::warn!(record = %change.record_id, reason = %reason, "change rejected by the relay");
                self.quarantine(change.seq, &reason, result.detail.as_deref())?;
                refused.insert(change.record_id.as_str());
                report.rejected += 1;
            }
            self.mark_pushed(&accepted)?;
            let settled = batch.len() as u64 - busy;
            done += settled;
            progress.progress(SyncProgress {
                phase: SyncPhase::Pushing,
                done,
                total: Some(total.max(done)),
            });
            if busy == 0 {
                busy_streak = 0;
                continue;
            }
            busy_streak = if settled == 0 { busy_streak + 1 } else { 0 };
            if busy_streak > client.config.max_retries {
                // Bounded: what the relay could not take waits in the outbox for the next sync.
                report.deferred = self.outbox_len()?;
                tracing::info!(
                    deferred = report.deferred,
                    "the relay stayed busy; pushing the rest later"
                );
                return Ok(());
            }
            // A short pause before the next request, longer while the relay stays busy.
            let wait = client
                .config
                .backoff
                .saturating_mul(1 << busy_streak.min(6))
                .min(Duration::from_secs(10));
            client.pause(wait).await?;
        }
    }

    async fn bootstrap(
        &self,
        client: &Client,
        progress: &dyn ProgressSink,
        report: &mut SyncReport,
    ) -> Result<()> {
        let after = self.sync_state(SNAPSHOT_AFTER)?;
        let mut cursor: Option<u64> = self
            .sync_state(SNAPSHOT_CURSOR)?
            .and_then(|c| c.parse().ok());
        // The next page is fetched and decoded while this one is applied: on a multi-threaded runtime
        // (as `sync` runs) the download overlaps the writes instead of adding to them.
        let mut next_page = Prefetch::start(client, after);
        loop {
            let (resp, chunks) = next_page.take().await?;
            if let Some(next) = &resp.next {
                next_page = Prefetch::start(client, Some(next.clone()));
            }
            // The log position is the one of the first page: later pages may be newer, never older.
            let position = *cursor.get_or_insert(resp.cursor);
            let views = relay_views(resp.records.iter().map(|r| (&r.record, r.view.as_deref())));
            let applied = self.apply_page(&chunks, &views)?;
            report.bootstrapped += chunks.len() as u64;
            report.records_changed += applied.records_changed as u64;
            report.purged += applied.purged as u64;
            progress.progress(SyncProgress {
                phase: SyncPhase::Bootstrapping,
                done: report.bootstrapped,
                total: None,
            });
            match resp.next {
                Some(next) => {
                    self.set_sync_state(SNAPSHOT_CURSOR, Some(&position.to_string()))?;
                    self.set_sync_state(SNAPSHOT_AFTER, Some(&next))?;
                }
                None => {
                    self.set_sync_state(CURSOR, Some(&position.to_string()))?;
                    self.set_sync_state(SNAPSHOT_CURSOR, None)?;
                    self.set_sync_state(SNAPSHOT_AFTER, None)?;
                    return Ok(());
                }
            }
        }
    }

    /// Pulls pages from the saved cursor until the relay has no more. `first` is the page after
    /// that cursor when it was fetched already (see [`Store::sync_async`]).
    /// Pulls pages until the relay has no more. The cursor of every page but the last is saved as it
    /// is applied (an interrupted pull resumes there); the last page's cursor is returned for the caller
    /// to save with the sync's end (applying a page again is harmless).
    async fn pull(
        &self,
        client: &Client,
        progress: &dyn ProgressSink,
        report: &mut SyncReport,
        mut first: Option<PullResponse>,
    ) -> Result<u64> {
        let mut cursor: u64 = self
            .sync_state(CURSOR)?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        loop {
            let resp = match first.take() {
                Some(page) => page,
                None => client.pull_page(cursor).await?,
            };
            let chunks = decode_chunks(resp.items.iter().map(|i| (&i.record, &i.bytes)))?;
            let views = relay_views(resp.items.iter().map(|i| (&i.record, i.view.as_deref())));
            let applied = self.apply_page(&chunks, &views)?;
            report.pulled += chunks.len() as u64;
            report.records_changed += applied.records_changed as u64;
            report.purged += applied.purged as u64;
            if resp.cursor < cursor {
                return Err(SyncError::Protocol("the relay's cursor went backwards".into()).into());
            }
            let moved = resp.cursor != cursor;
            cursor = resp.cursor;
            progress.progress(SyncProgress {
                phase: SyncPhase::Pulling,
                done: report.pulled,
                total: None,
            });
            if !resp.more {
                return Ok(cursor);
            }
            if moved {
                self.set_sync_state(CURSOR, Some(&cursor.to_string()))?;
            }
        }
    }

    /// Uploads the attachments not yet on the relay for their record, resuming interrupted uploads.
    /// `HEAD ?record=` first: `200` means the relay has the content and it is now linked to the
    /// record (nothing to send), `308` where to resume, `404` upload it all.
    async fn upload_attachments(
        &self,
        client: &Client,
        progress: &dyn ProgressSink,
        report: &mut SyncReport,
    ) -> Result<()> {
        const CHUNK: usize = crate::limits::ATTACHMENT_CHUNK_BYTES;
        let pending = self.pending_uploads()?;
        let total = pending.len() as u64;
        for (i, (sha, record, bytes)) in pending.into_iter().enumerate() {
            progress.progress(SyncProgress {
                phase: SyncPhase::Attachments,
                done: i as u64,
                total: Some(total),
            });
            // Ask how much the relay has already: an interrupted upload resumes there. Naming the
            // record links content the relay already has (through another record this device may
            // read) to this one too, so that the record's readers can download it without an upload.
            let head = client
                .send(|h| {
                    h.head(client.url(&format!("/attachments/{sha}")))
                        .query(&[("record", &record)])
                })
                .await;
            let mut offset = match head {
                Ok(resp) if resp.status() == StatusCode::OK => {
                    self.mark_uploaded(&sha)?;
                    report.attachments_uploaded += 1;
                    continue;
                }
                Ok(resp) => resp
                    .headers()
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0),
                Err(SyncError::Server { status: 404, .. }) => 0,
                Err(e) => return Err(e.into()),
            };
            if bytes.is_empty() {
                client
                    .send(|h| {
                        h.put(client.url(&format!("/attachments/{sha}")))
                            .query(&[("record", &record)])
                            .body(Vec::new())
                    })
                    .await?;
            }
            while offset < bytes.len() {
                let end = (offset + CHUNK).min(bytes.len());
                let range = format!("bytes {}-{}/{}", offset, end - 1, bytes.len());
                let body = bytes[offset..end].to_vec();
                client
                    .send(|h| {
                        h.put(client.url(&format!("/attachments/{sha}")))
                            .query(&[("record", &record)])
                            .header("content-range", &range)
                            .body(body.clone())
                    })
                    .await?;
                offset = end;
            }
            self.mark_uploaded(&sha)?;
            report.attachments_uploaded += 1;
        }
        Ok(())
    }
}

/// The runtime of a small sync or request, on the calling thread.
fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn make_client(config: &SyncConfig, cancel: &CancelToken) -> Result<Client, SyncError> {
    Ok(Client {
        http: make_http(config)?,
        config: Arc::new(config.clone()),
        cancel: cancel.clone(),
    })
}

/// Connections idle longer than this are not used again but closed: below the idle timeouts of
/// common proxies and of mobile networks' NAT, which drop a quiet connection without telling either
/// end (a request on it would wait for its timeout).
const IDLE_CONNECTION: Duration = Duration::from_secs(20);

fn make_http(config: &SyncConfig) -> Result<reqwest::Client, SyncError> {
    reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(IDLE_CONNECTION)
        .user_agent(concat!("gridwork/", env!("CARGO_PKG_VERSION")))
        // The relay answers 308 to a HEAD of a partial upload; that is not a redirect to follow.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SyncError::Network(network_reason(&e)))
}

/// What a store keeps between its syncs (not its bootstraps): the runtime a sync runs on and the HTTP
/// client, whose open connections to the relay wait on that runtime for the next sync.
#[derive(Default)]
pub(crate) struct SyncSession {
    runtime: Option<tokio::runtime::Runtime>,
    /// The client, and the request timeout it was made with (the one setting of a [`SyncConfig`]
    /// it holds: the relay's address and the token go with each request).
    http: Option<(Duration, reqwest::Client)>,
}

impl SyncSession {
    /// The kept runtime and client, or new ones (a client with another timeout is not reused).
    fn take(&mut self, config: &SyncConfig) -> Result<(tokio::runtime::Runtime, reqwest::Client)> {
        let runtime = match self.runtime.take() {
            Some(r) => r,
            None => current_thread_runtime()?,
        };
        let http = match self.http.take() {
            Some((timeout, http)) if timeout == config.request_timeout => http,
            _ => make_http(config)?,
        };
        Ok((runtime, http))
    }

    fn keep(
        &mut self,
        runtime: tokio::runtime::Runtime,
        config: &SyncConfig,
        http: reqwest::Client,
    ) {
        self.runtime = Some(runtime);
        self.http = Some((config.request_timeout, http));
    }
}

impl Drop for SyncSession {
    fn drop(&mut self) {
        // A store may be dropped on an async runtime's thread, where a runtime must not be dropped
        // by blocking on its tasks: its idle connections are simply let go.
        drop(self.http.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A snapshot page as fetched: the answer and its decoded chunks.
type FetchedPage = (SnapshotResponse, Vec<RemoteChunk>);

/// A snapshot page being fetched and decoded on the runtime while the sync does something else; the
/// request stops when this is dropped (an error or a cancel ends the sync).
struct Prefetch(Option<tokio::task::JoinHandle<Result<FetchedPage, SyncError>>>);

impl Prefetch {
    fn start(client: &Client, after: Option<String>) -> Prefetch {
        let client = client.clone();
        Prefetch(Some(tokio::spawn(async move {
            let resp = client.snapshot_page(after.as_deref()).await?;
            let chunks = decode_chunks(resp.records.iter().map(|r| (&r.record, &r.bytes)))?;
            Ok((resp, chunks))
        })))
    }

    async fn take(&mut self) -> Result<FetchedPage, SyncError> {
        let handle = self.0.take().expect("a page is fetched once");
        handle
            .await
            .map_err(|e| SyncError::Network(format!("the page fetch stopped: {e}")))?
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// The relay's record views of a page, by record: a view counts only on the record's last item of the
/// page (it is the record after all of them), and one that does not read as a record is ignored (the
/// record is then merged from its document).
fn relay_views<'a>(
    items: impl Iterator<Item = (&'a String, Option<&'a serde_json::value::RawValue>)>,
) -> HashMap<String, Record> {
    let mut views = HashMap::new();
    for (record, view) in items {
        match view.and_then(|v| serde_json::from_str::<Record>(v.get()).ok()) {
            Some(v) => views.insert(record.clone(), v),
            None => views.remove(record),
        };
    }
    views
}

fn decode_chunks<'a>(
    items: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<RemoteChunk>, SyncError> {
    items
        .map(|(record, bytes)| {
            let bytes = B64
                .decode(bytes)
                .map_err(|e| SyncError::Protocol(format!("bad base64: {e}")))?;
            Ok(RemoteChunk {
                record_id: record.clone(),
                bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_exact_wait_wins_over_whole_seconds() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1"), ("retry-after-ms", "12")])),
            ms(12)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "2")])), ms(2_000));
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after", "3"),
                ("retry-after-ms", "soon")
            ])),
            ms(3_000),
            "an unreadable exact wait falls back to Retry-After"
        );
        // An HTTP date (the other form of Retry-After) is not read: the client's own backoff applies.
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2026 07:28:00 GMT"
            )])),
            None
        );
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
