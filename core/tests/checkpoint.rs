//! A store's writes never copy the write-ahead log into the database file themselves (below 32 MiB of
//! log): a thread of the store does, on a connection of its own, woken when a commit leaves more than
//! 4,000 pages (16 MiB) in the log.
mod common;
use common::*;
use gridwork_core::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn the_log_is_copied_into_the_file_by_a_thread_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let db = dir.path().join("wang.db");
    let wal = dir.path().join("wang.db-wal");
    let before = size(&db);
    // Residents with long notes, a few hundred per transaction, until the log holds over 4,000 pages
    // (16 MiB) and some more.
    let mut batch = 0;
    while size(&wal) < 17 * 1024 * 1024 {
        let records = (0..500)
            .map(|i| {
                NewRecord::new(Kind::Person, "g1")
                    .field("name", format!("Resident {batch}-{i}"))
                    .notes(format!("{batch}-{i} ").repeat(300))
            })
            .collect();
        store.create_many(records).unwrap();
        batch += 1;
        assert!(batch < 200, "the log did not grow");
    }
    // The database file grows as the thread copies the log into it (SQLite's own automatic
    // checkpoint is off: without the thread nothing would copy it before 32 MiB).
    let deadline = Instant::now() + Duration::from_secs(20);
    while size(&db) < before + 12 * 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the database file stayed at {} bytes (log {} bytes)",
            size(&db),
            size(&wal)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Everything written is there, and the store goes on.
    assert_eq!(store.record_ids().unwrap().len(), batch * 500);
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "After"))
        .unwrap();
    drop(store);
    assert!(
        size(&wal) == 0,
        "the last connection to close empties the log"
    );
}
