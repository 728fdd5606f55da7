//! The store's write-ahead log is copied into the database file on a thread of its own, so that no
//! write waits for it. SQLite's automatic checkpoint runs inside the commit that takes the log past its
//! limit: that write (a one-field edit on the app's thread) then waits for megabytes to be copied and
//! synced, a stall of tens of milliseconds here and more on a phone's flash. Instead the store's
//! connection wakes this thread when a commit leaves the log over [`BACKGROUND_PAGES`], and the thread
//! checkpoints on a connection of its own (`PASSIVE`: it never blocks the writer or a reader). The
//! writer checkpoints itself only past [`INLINE_PAGES`], if the thread falls that far behind.
//!
//! A checkpoint is safe to interrupt at any point (SIGKILL included): what it has not copied stays in
//! the log, which SQLite replays on the next open.
use super::{open_keyed, StoreKey};
use crate::error::Result;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

/// A commit that leaves this many pages (16 MiB) in the log wakes the checkpointer. Not fewer: a page
/// written again and again (an index's, the outbox's) is copied and synced once per checkpoint, under
/// SQLCipher decrypted and encrypted again each time (checkpoints every 1,000 pages made one-field
/// edits 20% slower than every 4,000, BENCHMARKS.md section 11).
pub(crate) const BACKGROUND_PAGES: i32 = 4_000;
/// A commit that leaves this many pages (32 MiB) in the log checkpoints on the writer itself: a long
/// run of writes never lets the thread's checkpoint catch up and restart the log, this one does (the
/// thread has copied most of it by then).
pub(crate) const INLINE_PAGES: i32 = 8_000;

/// The checkpoint thread of one store. Dropped with the store's connection, it stops the thread and
/// waits for it, so that a closed store has no connection left open (the last one to close empties the
/// log into the file).
pub(crate) struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to the store at `path` and starts its thread.
    pub(crate) fn start(path: &Path, key: &StoreKey) -> Result<Checkpointer> {
        let conn = open_keyed(path, key)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // A checkpoint copies pages from the log to the file: it needs no cache of its own to speak of.
        conn.pragma_update(None, "cache_size", -256)?;
        let (wake, woken) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("gridwork-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    checkpoint(&conn);
                }
            })?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint; a request while one is pending is the same request.
    pub(crate) fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "background checkpoint failed; the next write retries it");
    }
}

/// Hands the checkpoints of `conn` (the store's connection) to a [`Checkpointer`] of the same store.
pub(crate) fn install(conn: &mut Connection, checkpointer: Checkpointer) -> Result<()> {
    // The log's length at which the thread is woken next: every BACKGROUND_PAGES more (a checkpoint
    // cannot restart a log that a writer keeps adding to, and waking the thread after every commit
    // of a long run of writes would have it copy a few pages at a time, each time with a sync),
    // and from the start again once the log has restarted.
    let (mut wake_at, mut last) = (BACKGROUND_PAGES, 0);
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
        if pages < last {
            wake_at = BACKGROUND_PAGES;
        }
        last = pages;
        if pages >= INLINE_PAGES {
            // Never an error from here: SQLite reports a hook's error as the error of the statement
            // that committed, though the commit stands (a caller would believe its write failed). A
            // checkpoint that cannot run now (the thread is at it: `SQLITE_BUSY`) is simply left.
            if let Err(e) = wal.checkpoint() {
                tracing::debug!(error = %e, "checkpoint on the writer left for later");
            }
        } else if pages >= wake_at {
            checkpointer.wake();
            wake_at = pages + BACKGROUND_PAGES;
        }
        Ok(())
    }))?;
    Ok(())
}
