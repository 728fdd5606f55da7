//! Encryption at rest: no personal value of a resident can be read from the files of an encrypted store,
//! a wrong key or a foreign, truncated or damaged file gives a typed error (never a panic), and the same
//! leak check does find the values in an unencrypted store (so the check itself can fail).
mod common;
use common::*;
use gridwork_core::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Distinctive personal values: Latin and Chinese names, phone numbers, ID-document numbers, a note.
const PEOPLE: &[(&str, &str, &str, &str)] = &[
    (
        "Zhangwei Quixotica",
        "+86 139 5512 7788",
        "110105194912310021",
        "Lives with a parrot called Mango",
    ),
    (
        "欧阳慧敏",
        "+86 138 2046 9931",
        "31010419570815342X",
        "独居老人，每周三上门探访",
    ),
    (
        "Bartholomew 诸葛亮",
        "021-6543-2198",
        "G12345678-PASSPORT",
        "需要轮椅 wheelchair user",
    ),
];

fn identity() -> Identity {
    common::identity("wang", "wang-phone", Role::Worker, "g1")
}

fn store_at(path: &Path, key: StoreKey) -> Result<Store> {
    Store::open(StoreOptions::new(path, key).identity(identity()))
}

/// Writes the people (and edits each once, so the WAL and the outbox hold changes too).
fn fill(store: &Store) -> Vec<String> {
    add_areas(store);
    let mut ids = Vec::new();
    for (i, (name, phone, id_number, notes)) in PEOPLE.iter().enumerate() {
        let id = store
            .create(
                NewRecord::new(Kind::Person, "g1")
                    .field("name", *name)
                    .field("phone", *phone)
                    .field("id_number", *id_number)
                    .notes(*notes),
            )
            .unwrap();
        store
            .update(&id, Update::new().set("sex", ["female", "male"][i % 2]))
            .unwrap();
        ids.push(id);
    }
    // Some volume, so the values are not all on one page.
    for i in 0..80 {
        store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Filler {i}")))
            .unwrap();
    }
    ids
}

fn secrets() -> Vec<&'static str> {
    PEOPLE
        .iter()
        .flat_map(|(a, b, c, d)| [*a, *b, *c, *d])
        .collect()
}

/// Every byte window of `WINDOW` bytes of a value's UTF-8, UTF-16LE and UTF-16BE forms. Any fragment of
/// at least `WINDOW` bytes contains one of these, so finding none in a file means no such fragment leaked.
/// (Shorter windows would match random ciphertext by chance.)
const WINDOW: usize = 6;

fn needles(value: &str) -> Vec<u64> {
    let utf8 = value.as_bytes().to_vec();
    let le: Vec<u8> = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = value.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let mut out = Vec::new();
    for form in [utf8, le, be] {
        assert!(form.len() >= WINDOW, "test values must be long enough");
        out.extend(form.windows(WINDOW).map(window_key));
    }
    out
}

fn window_key(w: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    k[..WINDOW].copy_from_slice(w);
    u64::from_le_bytes(k)
}

/// The files of a store: the database and its -wal and -shm companions, when present.
fn store_files(db: &Path) -> Vec<PathBuf> {
    let dir = db.parent().unwrap();
    let name = db.file_name().unwrap().to_str().unwrap().to_owned();
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&name))
        })
        .collect();
    out.sort();
    out
}

/// (file, value) for every value that has a fragment in one of the files.
fn leaks(db: &Path, values: &[&str]) -> Vec<(String, String)> {
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, value) in values.iter().enumerate() {
        for n in needles(value) {
            index.entry(n).or_default().push(i);
        }
    }
    let mut out = BTreeSet::new();
    for file in store_files(db) {
        let bytes = std::fs::read(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for w in bytes.windows(WINDOW) {
            if let Some(hits) = index.get(&window_key(w)) {
                for &i in hits {
                    out.insert((name.clone(), values[i].to_string()));
                }
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn encrypted_store_files_hold_no_personal_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wang.db");
    let store = store_at(&db, StoreKey::Raw(KEY)).unwrap();
    let ids = fill(&store);
    // While the store is open: the WAL holds the latest pages.
    let files = store_files(&db);
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with("-wal")),
        "expected a WAL file while open: {files:?}"
    );
    let found = leaks(&db, &secrets());
    assert!(found.is_empty(), "values readable while open: {found:?}");
    drop(store);

    // Closed: whatever files remain.
    let found = leaks(&db, &secrets());
    assert!(found.is_empty(), "values readable after close: {found:?}");
    for file in store_files(&db) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY),
            "raw key in {file:?}"
        );
        let hex_key = hex::encode(KEY);
        assert!(
            !bytes
                .windows(hex_key.len())
                .any(|w| w == hex_key.as_bytes()),
            "hex key in {file:?}"
        );
    }
    // SQLite's plain header is gone too.
    let head = std::fs::read(&db).unwrap();
    assert!(!head.starts_with(b"SQLite format 3\0"));

    // And the right key reads everything back.
    let store = store_at(&db, StoreKey::Raw(KEY)).unwrap();
    for (id, (name, phone, id_number, notes)) in ids.iter().zip(PEOPLE) {
        let r = store.get(id).unwrap();
        assert_eq!(r.field("name"), Some(*name));
        assert_eq!(r.field("phone"), Some(*phone));
        assert_eq!(r.field("id_number"), Some(*id_number));
        assert_eq!(r.notes, *notes);
    }
    store.check_integrity().unwrap();
}

#[test]
fn unencrypted_store_shows_the_values_so_the_check_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plain.db");
    let store = store_at(&db, StoreKey::None).unwrap();
    fill(&store);
    drop(store);
    let found: HashSet<String> = leaks(&db, &secrets()).into_iter().map(|(_, v)| v).collect();
    for value in secrets() {
        assert!(
            found.contains(value),
            "the leak check misses {value:?} in a plain store"
        );
    }
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    assert!(
        bytes
            .windows("欧阳慧敏".len())
            .any(|w| w == "欧阳慧敏".as_bytes()),
        "the whole name is in a plain store"
    );
}

#[test]
fn a_passphrase_store_hides_values_too_and_needs_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pass.db");
    let store = store_at(&db, StoreKey::Passphrase("correct horse battery".into())).unwrap();
    fill(&store);
    drop(store);
    assert!(leaks(&db, &secrets()).is_empty());
    assert!(matches!(
        store_at(&db, StoreKey::Passphrase("correct horse battery!".into())),
        Err(Error::WrongKeyOrNotAStore)
    ));
    assert!(matches!(
        store_at(&db, StoreKey::Raw(KEY)),
        Err(Error::WrongKeyOrNotAStore)
    ));
    store_at(&db, StoreKey::Passphrase("correct horse battery".into())).unwrap();
}

#[test]
fn wrong_key_or_no_key_is_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wang.db");
    let store = store_at(&db, StoreKey::Raw(KEY)).unwrap();
    let ids = fill(&store);
    drop(store);
    let mut wrong = KEY;
    wrong[31] ^= 1;
    for key in [
        StoreKey::Raw(wrong),
        StoreKey::Raw([0u8; 32]),
        StoreKey::None,
        StoreKey::Passphrase("guess".into()),
    ] {
        let dbg = format!("{key:?}");
        match store_at(&db, key) {
            Err(Error::WrongKeyOrNotAStore) => {}
            Err(e) => panic!("{dbg}: expected WrongKeyOrNotAStore, got {e:?}"),
            Ok(_) => panic!("{dbg}: opened with a wrong key"),
        }
    }
    // A failed open changes nothing: the right key still reads the records.
    let store = store_at(&db, StoreKey::Raw(KEY)).unwrap();
    assert_eq!(store.get(&ids[1]).unwrap().field("name"), Some("欧阳慧敏"));
    store.check_integrity().unwrap();
}

#[test]
fn a_store_made_with_sqlciphers_default_page_hmac_opens_and_new_stores_use_sha256() {
    let dir = tempfile::tempdir().unwrap();
    for (name, key, wrong) in [
        ("raw", StoreKey::Raw(KEY), StoreKey::Raw([0x5a; 32])),
        (
            "pass",
            StoreKey::Passphrase("correct horse battery".into()),
            StoreKey::Passphrase("correct horse".into()),
        ),
    ] {
        // A store file as builds before HMAC-SHA256 made it (SQLCipher 4's defaults).
        let old = dir.path().join(format!("{name}-sha512.db"));
        store::create_sha512_store_file(&old, &key).unwrap();
        let store = store_at(&old, key.clone()).unwrap();
        let ids = fill(&store);
        drop(store);
        assert!(leaks(&old, &secrets()).is_empty());
        let r = store_at(&old, wrong.clone()).map(|_| ());
        assert!(
            matches!(r, Err(Error::WrongKeyOrNotAStore)),
            "{name}: {r:?}"
        );
        let store = store_at(&old, key.clone()).unwrap();
        assert_eq!(store.get(&ids[1]).unwrap().field("name"), Some("欧阳慧敏"));
        store.check_integrity().unwrap();
        drop(store);
        // It stays as it was made: still readable with SHA-512 alone.
        store::create_sha512_store_file(&old, &key).unwrap();

        // A new store authenticates its pages with HMAC-SHA256: SHA-512 alone cannot read it.
        let new = dir.path().join(format!("{name}-new.db"));
        let store = store_at(&new, key.clone()).unwrap();
        fill(&store);
        drop(store);
        assert!(matches!(
            store::create_sha512_store_file(&new, &key),
            Err(Error::WrongKeyOrNotAStore)
        ));
        assert!(matches!(
            store_at(&new, wrong),
            Err(Error::WrongKeyOrNotAStore)
        ));
        store_at(&new, key).unwrap().check_integrity().unwrap();
    }
}

/// Runs `f`, turning a panic into a test failure that names what panicked.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what} panicked instead of returning an error"),
    }
}

fn is_typed_file_error(e: &Error) -> bool {
    matches!(e, Error::WrongKeyOrNotAStore | Error::Corrupt(_))
}

#[test]
fn foreign_and_truncated_files_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A file that is not a database at all.
    let garbage = dir.path().join("garbage.db");
    let mut bytes = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    std::fs::write(&garbage, &bytes).unwrap();
    for key in [StoreKey::Raw(KEY), StoreKey::None] {
        let r = no_panic("opening garbage", || store_at(&garbage, key));
        match r {
            Err(e) if is_typed_file_error(&e) => {}
            Err(e) => panic!("garbage: untyped error {e:?}"),
            Ok(_) => panic!("garbage opened as a store"),
        }
    }
    // A text file.
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, just some text\n".repeat(200),
    )
    .unwrap();
    assert!(matches!(
        no_panic("opening text", || store_at(&text, StoreKey::Raw(KEY))),
        Err(Error::WrongKeyOrNotAStore)
    ));

    // An encrypted store cut short at several lengths.
    let db = dir.path().join("wang.db");
    let store = store_at(&db, StoreKey::Raw(KEY)).unwrap();
    fill(&store);
    drop(store);
    assert!(
        !dir.path().join("wang.db-wal").exists()
            || std::fs::metadata(dir.path().join("wang.db-wal"))
                .unwrap()
                .len()
                == 0,
        "closing checkpoints the WAL"
    );
    let full = std::fs::read(&db).unwrap();
    assert!(full.len() > 8 * 4096, "store is {} bytes", full.len());
    for cut in [100, 4095, 4096 + 17, full.len() / 2, full.len() - 4096] {
        let path = dir.path().join(format!("cut-{cut}.db"));
        std::fs::write(&path, &full[..cut]).unwrap();
        let outcome = no_panic(&format!("truncated at {cut}"), || {
            exercise(&path, StoreKey::Raw(KEY))
        });
        match outcome {
            Outcome::OpenFailed(e) | Outcome::ReadFailed(e) => {
                assert!(is_typed_file_error(&e), "cut at {cut}: untyped error {e:?}")
            }
            Outcome::AllRead => {
                panic!("cut at {cut}: a truncated store opened and read without any error")
            }
        }
    }
}

enum Outcome {
    OpenFailed(Error),
    /// The first error of the reads after a successful open.
    ReadFailed(Error),
    AllRead,
}

/// Opens a store and reads all of it: integrity check, every record, lists and a search.
fn exercise(path: &Path, key: StoreKey) -> Outcome {
    let store = match store_at(path, key) {
        Ok(s) => s,
        Err(e) => return Outcome::OpenFailed(e),
    };
    let mut first: Option<Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    note(store.check_integrity());
    match store.record_ids() {
        Ok(ids) => {
            for id in ids {
                note(store.get(&id).map(|_| ()));
                note(store.heads(&id).map(|_| ()));
            }
        }
        Err(e) => note(Err(e)),
    }
    note(
        store
            .list(&ListQuery::new(Kind::Person).limit(10_000))
            .map(|_| ()),
    );
    note(store.search("欧阳", None, 100).map(|_| ()));
    note(store.conflicts().map(|_| ()));
    note(store.outbox(100_000).map(|_| ()));
    match first {
        Some(e) => Outcome::ReadFailed(e),
        None => Outcome::AllRead,
    }
}

#[test]
fn damaged_encrypted_bytes_give_typed_errors_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wang.db");
    let store = store_at(&db, StoreKey::Raw(KEY)).unwrap();
    fill(&store);
    drop(store);
    let pristine = std::fs::read(&db).unwrap();
    let pages = pristine.len() / 4096;
    assert!(pages >= 8);
    let mut detected = 0;
    // Damage each page of the middle of the file on its own (a byte in the middle of the page), plus
    // page 1 and the last page.
    let mut targets: Vec<usize> = (1..pages - 1).collect();
    targets.push(0);
    targets.push(pages - 1);
    for page in targets {
        let mut bytes = pristine.clone();
        let at = page * 4096 + 2048;
        bytes[at] ^= 0x5a;
        bytes[at + 1] ^= 0xff;
        let path = dir.path().join(format!("flip-{page}.db"));
        std::fs::write(&path, &bytes).unwrap();
        let outcome = no_panic(&format!("page {page} damaged"), || {
            exercise(&path, StoreKey::Raw(KEY))
        });
        match outcome {
            Outcome::OpenFailed(e) | Outcome::ReadFailed(e) => {
                assert!(
                    is_typed_file_error(&e),
                    "page {page} damaged: untyped error {e:?}"
                );
                detected += 1;
            }
            // A page that holds nothing in use (a free page) can be damaged without effect.
            Outcome::AllRead => {}
        }
        let _ = std::fs::remove_file(&path);
    }
    eprintln!("damage detected in {detected} of {pages} pages");
    assert!(
        detected * 2 >= pages,
        "damage went unnoticed in most pages ({detected} of {pages} detected)"
    );

    // Damage spread over the middle of the file at once.
    let mut bytes = pristine.clone();
    for at in (pristine.len() / 4..pristine.len() * 3 / 4).step_by(997) {
        bytes[at] = bytes[at].wrapping_add(1);
    }
    let path = dir.path().join("spread.db");
    std::fs::write(&path, &bytes).unwrap();
    match no_panic("spread damage", || exercise(&path, StoreKey::Raw(KEY))) {
        Outcome::OpenFailed(e) | Outcome::ReadFailed(e) => {
            assert!(
                is_typed_file_error(&e),
                "spread damage: untyped error {e:?}"
            )
        }
        Outcome::AllRead => panic!("spread damage went unnoticed"),
    }
}
