//! Sync over the FFI: progress through a foreign trait ([`SyncObserver`]), and a [`SyncHandle`] for a
//! sync running on a background thread, which can be cancelled and waited for.
use crate::error::{GridworkError, Result};
use gridwork_core::sync::{
    self as core_sync, CancelToken, ProgressSink, SyncPhase, SyncProgress, SyncReport,
};
use gridwork_core::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[uniffi::remote(Enum)]
pub enum SyncPhase {
    Connecting,
    Pushing,
    Bootstrapping,
    Pulling,
    Attachments,
    Done,
}

#[uniffi::remote(Record)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    pub done: u64,
    pub total: Option<u64>,
}

#[uniffi::remote(Record)]
pub struct SyncReport {
    pub pushed: u64,
    pub rejected: u64,
    pub deferred: u64,
    pub pulled: u64,
    pub bootstrapped: u64,
    pub records_changed: u64,
    pub attachments_uploaded: u64,
    pub purged: u64,
    pub cursor: u64,
}

/// Where and as whom to sync. Leave the tuning fields unset for the core's defaults.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncConfig {
    /// Base URL of the relay, e.g. `https://relay.example.org`.
    pub server_url: String,
    /// The device's bearer token, issued by an operator (keep it in the Keystore/Keychain).
    pub token: String,
    /// Changes or records per pull page.
    #[uniffi(default = None)]
    pub page_size: Option<u32>,
    /// Changes per push request.
    #[uniffi(default = None)]
    pub push_batch: Option<u32>,
    /// Retries of one request on network errors and 5xx (a 429 is retried after the wait the relay
    /// asks for, at least 8 times).
    #[uniffi(default = None)]
    pub max_retries: Option<u32>,
    /// Timeout of one HTTP request, in milliseconds.
    #[uniffi(default = None)]
    pub request_timeout_ms: Option<u64>,
}

impl From<&SyncConfig> for core_sync::SyncConfig {
    fn from(c: &SyncConfig) -> Self {
        let mut out = core_sync::SyncConfig::new(c.server_url.clone(), c.token.clone());
        if let Some(v) = c.page_size {
            out.page_size = v;
        }
        if let Some(v) = c.push_batch {
            out.push_batch = v as usize;
        }
        if let Some(v) = c.max_retries {
            out.max_retries = v;
        }
        if let Some(ms) = c.request_timeout_ms {
            out.request_timeout = Duration::from_millis(ms);
        }
        out
    }
}

/// Implemented by the app (Kotlin/Swift) to hear how a sync goes. Called on the syncing thread:
/// keep it quick, hop to the UI thread yourself, and do not throw.
#[uniffi::export(with_foreign)]
pub trait SyncObserver: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

/// Adapts the app's observer to the core's progress sink.
struct ObserverSink(Option<Arc<dyn SyncObserver>>);

impl ProgressSink for ObserverSink {
    fn progress(&self, progress: SyncProgress) {
        if let Some(observer) = &self.0 {
            observer.on_progress(progress);
        }
    }
}

/// Runs one sync, refusing to start a second one on the same store while one is running.
pub(crate) fn run_sync(
    store: &Store,
    busy: &AtomicBool,
    config: &SyncConfig,
    observer: Option<Arc<dyn SyncObserver>>,
    cancel: &CancelToken,
) -> Result<SyncReport> {
    if busy.swap(true, Ordering::AcqRel) {
        return Err(GridworkError::InvalidInput {
            reason: "a sync of this store is already running".into(),
        });
    }
    struct Release<'a>(&'a AtomicBool);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _release = Release(busy);
    let sink = ObserverSink(observer);
    Ok(store.sync(&config.into(), &sink, cancel)?)
}

enum HandleState {
    Running,
    Finished(Result<SyncReport>),
}

/// A sync running on a background thread. `cancel()` stops it at the next request boundary (what was
/// done so far stays done); `wait()` blocks until it ends and returns its result, as often as asked.
#[derive(uniffi::Object)]
pub struct SyncHandle {
    cancel: CancelToken,
    state: Mutex<HandleState>,
    finished: Condvar,
}

impl SyncHandle {
    pub(crate) fn spawn(
        store: Arc<Store>,
        busy: Arc<AtomicBool>,
        config: SyncConfig,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Arc<SyncHandle>> {
        let handle = Arc::new(SyncHandle {
            cancel: CancelToken::new(),
            state: Mutex::new(HandleState::Running),
            finished: Condvar::new(),
        });
        let worker = Arc::clone(&handle);
        std::thread::Builder::new()
            .name("gridwork-sync".into())
            .spawn(move || {
                // A panic (a bug, or an observer that threw) must still finish the handle.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_sync(&store, &busy, &config, observer, &worker.cancel)
                }))
                .unwrap_or_else(|_| {
                    Err(GridworkError::Internal {
                        reason: "sync panicked".into(),
                    })
                });
                *worker.lock() = HandleState::Finished(result);
                worker.finished.notify_all();
            })
            .map_err(|e| GridworkError::Internal {
                reason: format!("cannot start the sync thread: {e}"),
            })?;
        Ok(handle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[uniffi::export]
impl SyncHandle {
    /// Asks the sync to stop; `wait()` then returns `GridworkError.Cancelled` (or the report, if it
    /// had already finished).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn is_finished(&self) -> bool {
        matches!(*self.lock(), HandleState::Finished(_))
    }

    /// Blocks until the sync ends and returns its report or error.
    pub fn wait(&self) -> Result<SyncReport> {
        let mut state = self.lock();
        loop {
            if let HandleState::Finished(result) = &*state {
                return result.clone();
            }
            state = self.finished.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Like `wait`, but gives up after `timeout_ms`: None while the sync is still running.
    pub fn wait_timeout(&self, timeout_ms: u64) -> Result<Option<SyncReport>> {
        let state = self.lock();
        let (state, _) = self
            .finished
            .wait_timeout_while(state, Duration::from_millis(timeout_ms), |s| {
                matches!(s, HandleState::Running)
            })
            .unwrap_or_else(|p| p.into_inner());
        match &*state {
            HandleState::Finished(result) => result.clone().map(Some),
            HandleState::Running => Ok(None),
        }
    }
}
