//! The long calls as async functions: Kotlin sees `suspend fun`, Swift `async`. Each runs on a thread
//! of its own (the store's work blocks: SQLite, Automerge, the sync's HTTP) and the caller's coroutine
//! or task waits without holding a thread. Cancelling the caller cancels a sync at its next request
//! boundary; a bulk import or an export that was cancelled finishes its transaction and is dropped.
use crate::error::{GridworkError, Result};
use crate::store::GridworkStore;
use crate::sync::{run_sync, SyncConfig, SyncObserver};
use crate::types::NewRecord;
use gridwork_core::sync::{CancelToken, SyncReport};
use gridwork_core::{ExportFormat, ExportQuery};
use std::sync::Arc;

/// Runs `work` on a new thread and waits for it without blocking; dropping the returned future (the
/// caller was cancelled) cancels `cancel`.
async fn off_thread<T: Send + 'static>(
    name: &str,
    cancel: CancelToken,
    work: impl FnOnce(&CancelToken) -> Result<T> + Send + 'static,
) -> Result<T> {
    struct CancelOnDrop(CancelToken);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    let guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // A panic (a bug, or an observer that threw) must still answer the caller.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&cancel)))
                .unwrap_or_else(|_| {
                    Err(GridworkError::Internal {
                        reason: "the call panicked".into(),
                    })
                });
            let _ = tx.send(result);
        })
        .map_err(|e| GridworkError::Internal {
            reason: format!("no thread for the call: {e}"),
        })?;
    let result = rx.await.unwrap_or_else(|_| {
        Err(GridworkError::Internal {
            reason: "the call's thread ended without an answer".into(),
        })
    });
    drop(guard);
    result
}

#[uniffi::export]
impl GridworkStore {
    /// Syncs; `suspend` in Kotlin, `async` in Swift. Cancelling the caller cancels the sync (it then
    /// fails with `Cancelled`). A second sync of the same store while one runs is refused.
    pub async fn sync_async(
        &self,
        config: SyncConfig,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<SyncReport> {
        let (store, busy) = (Arc::clone(&self.store), Arc::clone(&self.syncing));
        off_thread("gridwork-sync", CancelToken::new(), move |cancel| {
            run_sync(&store, &busy, &config, observer, cancel)
        })
        .await
    }

    /// Creates many records at once (a grid's bulk import), in one transaction: all or none. Returns
    /// their ids in order.
    pub async fn create_many_async(&self, records: Vec<NewRecord>) -> Result<Vec<String>> {
        let store = Arc::clone(&self.store);
        off_thread("gridwork-import", CancelToken::new(), move |_| {
            let records = records.into_iter().map(Into::into).collect();
            Ok(store.create_many(records)?)
        })
        .await
    }

    /// `export_records` without holding the caller's thread.
    pub async fn export_records_async(
        &self,
        query: ExportQuery,
        format: ExportFormat,
    ) -> Result<Vec<u8>> {
        let store = Arc::clone(&self.store);
        off_thread("gridwork-export", CancelToken::new(), move |_| {
            Ok(store.export_records(&query, format)?)
        })
        .await
    }
}
