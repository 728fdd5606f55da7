//! Purge and wipe: a record that leaves the user's scope is removed from the device, and a wiped store
//! keeps nothing of its records; the raw bytes of the (unencrypted) file prove it.
mod common;
use common::*;
use gridwork_core::*;
use std::path::{Path, PathBuf};

/// An unencrypted store, so the test can look for residents' data in the raw file.
fn open_plain(dir: &Path, user: &str, role: Role, area: &str) -> (Store, PathBuf) {
    let path = dir.join(format!("{user}-plain.db"));
    let store = Store::open(StoreOptions::new(&path, StoreKey::None).identity(identity(
        user,
        &format!("{user}-phone"),
        role,
        area,
    )))
    .unwrap();
    add_areas(&store);
    (store, path)
}

/// Whether `needle` appears in the database file or its WAL, as written or in lower case (the search
/// index keeps folded tokens).
fn in_file(path: &Path, needle: &str) -> bool {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let folded = needle.to_lowercase();
    [path.to_path_buf(), wal].iter().any(|p| {
        std::fs::read(p).is_ok_and(|bytes| {
            [needle.as_bytes(), folded.as_bytes()]
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == *n))
        })
    })
}

const NAME: &str = "Qwzxjvkl";
const NOTES: &str = "Plkrvtsq lives on the fifth floor";
/// As typed; search's number index keeps its digits alone (`PHONE_DIGITS`), which nothing else holds.
const PHONE: &str = "139-7531-8642";
const PHONE_DIGITS: &str = "13975318642";

#[test]
fn a_record_moved_out_of_the_grid_leaves_the_device_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (worker, path) = open_plain(dir.path(), "wang", Role::Worker, "g1");
    let sup = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let home = worker
        .create(NewRecord::new(Kind::Place, "g1").field("name", "Block 9"))
        .unwrap();
    let p = worker
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", NAME)
                .field("phone", PHONE)
                .tag("lives alone")
                .notes(NOTES),
        )
        .unwrap();
    worker.link(&p, LinkType::LivesAt, &home).unwrap();
    let visit = worker.start_visit("g1", "check", None).unwrap();
    let photo = worker
        .add_attachment(&visit, "door.jpg", "image/jpeg", b"Zjqxwkvb photo bytes")
        .unwrap();
    worker.attach_to_visit(&visit, &photo).unwrap();
    // An event escalated to the community stays: it is still the grid's event (its home).
    let ev = worker
        .create(NewRecord::new(Kind::Event, "g1").field("title", "Stairwell light"))
        .unwrap();
    worker
        .transition(&ev, EventAction::Escalate, Some("needs the community"))
        .unwrap();
    let pushed: Vec<i64> = worker.outbox(1000).unwrap().iter().map(|c| c.seq).collect();
    worker.mark_pushed(&pushed).unwrap();
    exchange(&worker, &sup);

    // The supervisor moves the person and the visit to the other grid; the worker receives the moves.
    sup.move_record(&p, "g2").unwrap();
    sup.move_record(&visit, "g2").unwrap();
    let checkpoint = |s: &Store| s.check_integrity().unwrap();
    checkpoint(&worker);
    assert!(in_file(&path, NAME), "the name is in the file before");
    assert!(
        in_file(&path, "Plkrvtsq"),
        "the notes are in the file before"
    );
    assert!(
        in_file(&path, "Zjqxwkvb"),
        "the attachment is in the file before"
    );
    assert!(
        in_file(&path, PHONE_DIGITS),
        "the phone's search number is in the file before"
    );
    let report = worker.apply_remote(&sup.all_changes().unwrap()).unwrap();
    assert_eq!(report.purged, 2);

    assert!(matches!(worker.get(&p), Err(Error::UnknownRecord(_))));
    assert!(matches!(worker.get(&visit), Err(Error::UnknownRecord(_))));
    assert!(worker.search(NAME, None, 10).unwrap().is_empty());
    assert!(worker
        .list(&ListQuery::new(Kind::Person).tag("lives alone"))
        .unwrap()
        .items
        .is_empty());
    assert!(worker.links_of(&home).unwrap().is_empty());
    assert!(worker.attachment(&photo.sha256).unwrap().is_none());
    assert_eq!(
        worker.record_ids().unwrap().len(),
        2,
        "the place and the event stay"
    );
    assert_eq!(worker.get(&ev).unwrap().responsible.as_deref(), Some("c1"));
    assert!(worker.search(PHONE, None, 10).unwrap().is_empty());
    for needle in [NAME, "Plkrvtsq", "Zjqxwkvb", PHONE, PHONE_DIGITS] {
        assert!(!in_file(&path, needle), "{needle} is gone from the file");
    }
    worker.check_integrity().unwrap();
}

#[test]
fn a_record_with_unpushed_changes_stays_until_they_are_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let (worker, _) = open_plain(dir.path(), "wang", Role::Worker, "g1");
    let sup = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let p = worker
        .create(NewRecord::new(Kind::Person, "g1").field("name", NAME))
        .unwrap();
    let first: Vec<i64> = worker.outbox(10).unwrap().iter().map(|c| c.seq).collect();
    worker.mark_pushed(&first).unwrap();
    exchange(&worker, &sup);
    sup.move_record(&p, "g2").unwrap();
    // Offline, the worker edits the record before the move arrives.
    worker
        .update(&p, Update::new().set("phone", "13811112222"))
        .unwrap();
    let report = worker.apply_remote(&sup.all_changes().unwrap()).unwrap();
    assert_eq!(report.purged, 0, "the unpushed edit keeps it");
    assert_eq!(worker.get(&p).unwrap().area, "g2");
    let waiting: Vec<i64> = worker.outbox(10).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(waiting.len(), 1);
    worker.mark_pushed(&waiting).unwrap();
    assert!(
        matches!(worker.get(&p), Err(Error::UnknownRecord(_))),
        "gone once pushed"
    );
}

#[test]
fn a_wiped_store_keeps_nothing_and_says_so_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = open_plain(dir.path(), "wang", Role::Worker, "g1");
    let v = store.start_visit("g1", "Kxqvbwzj visit", None).unwrap();
    let photo = store
        .add_attachment(&v, "a.jpg", "image/jpeg", b"Vbnqzxkw photo")
        .unwrap();
    store.attach_to_visit(&v, &photo).unwrap();
    let p = store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", NAME)
                .field("phone", PHONE)
                .notes(NOTES),
        )
        .unwrap();
    store
        .quarantine(store.outbox(1).unwrap()[0].seq, "out_of_scope", None)
        .unwrap();
    store.check_integrity().unwrap();
    for needle in [NAME, "Kxqvbwzj", "Vbnqzxkw", "wang-phone", PHONE_DIGITS] {
        assert!(in_file(&path, needle), "{needle} is in the file before");
    }
    store.wipe("revoked").unwrap();
    for needle in [
        NAME,
        "Plkrvtsq",
        "Kxqvbwzj",
        "Vbnqzxkw",
        "wang-phone",
        PHONE,
        PHONE_DIGITS,
    ] {
        assert!(!in_file(&path, needle), "{needle} is gone from the file");
    }
    // No table keeps a row but the mark in `meta` (the search index's own tables keep their
    // configuration and empty structure).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT GLOB 'sqlite_*' AND name NOT GLOB 'search*'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.len() > 20, "{tables:?}");
    for table in tables {
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, i64::from(table == "meta"), "rows left in {table}");
    }
    drop(conn);
    // The open store refuses to work on; opened again, it says why.
    assert!(matches!(
        store.create(NewRecord::new(Kind::Person, "g1").field("name", "After")),
        Err(Error::Wiped(_))
    ));
    assert!(matches!(store.get(&p), Err(Error::UnknownRecord(_))));
    drop(store);
    match Store::open(StoreOptions::new(&path, StoreKey::None)) {
        Err(Error::Wiped(reason)) => assert_eq!(reason, "revoked"),
        Err(e) => panic!("expected Wiped, got {e:?}"),
        Ok(_) => panic!("a wiped store opened"),
    }
    match Store::open(StoreOptions::new(&path, StoreKey::None).identity(identity(
        "wang",
        "wang-phone",
        Role::Worker,
        "g1",
    ))) {
        Err(Error::Wiped(_)) => {}
        other => panic!("expected Wiped, got {:?}", other.map(|_| ())),
    }
}
