//! Schema migrations: a store written by a version-1 build upgrades on open to exactly the schema of a
//! fresh store, with the same records, lists, search results and conflicts as the store its rows came
//! from; a store from a newer build is refused without being touched.
mod common;
use common::*;
use gridwork_core::store::{self, open_connection, schema};
use gridwork_core::*;
use rusqlite::Connection;
use std::path::Path;

fn key() -> StoreKey {
    StoreKey::Raw(KEY)
}

fn raw(path: &Path) -> Connection {
    open_connection(path, &key(), Durability::Normal).unwrap()
}

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// sqlite_master without root pages, whitespace normalised, sorted.
fn schema_of(conn: &Connection) -> Vec<(String, String, String, String)> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master")
        .unwrap();
    let mut rows: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| {
            let (t, n, tbl, sql): (String, String, String, String) = r.unwrap();
            (
                t,
                n,
                tbl,
                sql.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Every row of a table as text, sorted, optionally leaving out some columns.
fn table_rows(conn: &Connection, table: &str, skip: &[&str]) -> Vec<Vec<String>> {
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .filter(|c: &String| !skip.contains(&c.as_str()))
            .collect()
    };
    assert!(!columns.is_empty(), "table {table} has no columns");
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("quote({c})"))
        .collect::<Vec<_>>();
    let mut stmt = conn
        .prepare(&format!("SELECT {} FROM {table}", select.join(", ")))
        .unwrap();
    let mut rows: Vec<Vec<String>> = stmt
        .query_map([], |r| {
            (0..columns.len())
                .map(|i| r.get::<_, String>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

/// A store with every kind of record, links, tags, attributes, notes, a tombstone, event and visit
/// histories and unresolved conflicts (from a second device).
/// The store whose rows the version-1 copy is made of. Its file, like the copy's, is authenticated
/// as version-1 builds made them (HMAC-SHA512, SQLCipher's default: see `store::PageHmac`), which
/// also lets the copy attach it (an attached database gets SQLCipher's defaults).
fn original_store(dir: &Path) -> (Store, Vec<String>) {
    store::create_sha512_store_file(&dir.join("wang.db"), &key()).unwrap();
    let a = open(dir, "wang", Role::Supervisor, "c1");
    let b = open(dir, "li", Role::Worker, "g1");
    let home = a
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("category", "unit")
                .field("name", "Block 3 Unit 201")
                .field("address", "幸福路12号3栋201"),
        )
        .unwrap();
    let person = a
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王小明")
                .field("sex", "male")
                .field("phone", "13800138000")
                .field("id_number", "110105194912310021")
                .field("home_place", home.clone())
                .tag("lives alone")
                .attr("hukou", "local")
                .notes("独居老人，每周探访"),
        )
        .unwrap();
    let smith = a
        .create(NewRecord::new(Kind::Person, "g2").field("name", "John Smith"))
        .unwrap();
    let org = a
        .create(
            NewRecord::new(Kind::Organisation, "g1")
                .field("name", "Residents' committee")
                .field("category", "committee"),
        )
        .unwrap();
    let hydrant = a
        .create(
            NewRecord::new(Kind::Object, "g1")
                .field("name", "Fire hydrant")
                .field("condition", "good"),
        )
        .unwrap();
    a.link(&person, LinkType::LivesAt, &home).unwrap();
    a.link(&person, LinkType::MemberOf, &org).unwrap();
    a.link(&hydrant, LinkType::LocatedAt, &home).unwrap();
    let ev = a
        .create(
            NewRecord::new(Kind::Event, "g1")
                .field("title", "Broken stair light")
                .field("category", "hazard_report"),
        )
        .unwrap();
    a.transition(
        &ev,
        EventAction::Assign {
            assignee: "li".into(),
        },
        None,
    )
    .unwrap();
    let visit = a.start_visit("g1", "weekly check", None).unwrap();
    a.add_visited(&visit, &person).unwrap();
    a.answer_checklist(&visit, "smoke alarm works", "yes")
        .unwrap();
    a.finish_visit(&visit, Some("All well.")).unwrap();
    let gone = a
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Moved Away"))
        .unwrap();
    a.delete(&gone, Some("moved")).unwrap();

    // Concurrent edits on a second device: two conflicts (a field and an attribute), one clean merge.
    exchange(&a, &b);
    a.update(&person, Update::new().set("phone", "13800000001"))
        .unwrap();
    b.update(&person, Update::new().set("phone", "13900000002"))
        .unwrap();
    a.update(&person, Update::new().attr("hukou", "moved"))
        .unwrap();
    b.update(&person, Update::new().attr("hukou", "migrant"))
        .unwrap();
    b.update(&home, Update::new().add_tag("needs inspection"))
        .unwrap();
    b.transition(&ev, EventAction::Start, None).unwrap();
    exchange(&b, &a);
    assert_eq!(a.conflicts().unwrap().len(), 2, "fixture has two conflicts");
    drop(b);
    (a, vec![home, person, smith, org, hydrant, ev, visit, gone])
}

/// Builds a version-1 database at `v1` holding the rows a version-1 build would have written for the
/// store at `source`: records with their documents, areas, identity, outbox and the v1 projection.
fn v1_copy_of(source: &Path, store: &Store, v1: &Path) {
    // The search body a v1 build indexed: searchable fields then notes, segmented.
    let mut bodies = Vec::new();
    for id in store.record_ids().unwrap() {
        let r = store.get(&id).unwrap();
        let mut text = String::new();
        for spec in r.kind.fields().iter().filter(|f| f.searchable) {
            if let Some(v) = r.fields.get(spec.name) {
                text.push_str(v);
                text.push(' ');
            }
        }
        text.push_str(&r.notes);
        bodies.push((id, gridwork_core::store::search::index_text(&text)));
    }
    store::create_sha512_store_file(v1, &key()).unwrap();
    let mut conn = raw(v1);
    assert_eq!(schema::migrate_to(&mut conn, 1).unwrap(), 0);
    assert_eq!(user_version(&conn), 1);
    conn.execute(
        &format!("ATTACH DATABASE ?1 AS src KEY \"x'{}'\"", hex::encode(KEY)),
        [source.to_str().unwrap()],
    )
    .unwrap();
    let mut tables = vec![
        "meta",
        "areas",
        "records",
        "outbox",
        "quarantine",
        "sync_state",
        "links",
        "tags",
        "attachments",
    ];
    tables.extend(Kind::ALL.iter().map(|k| k.table()));
    let tx = conn.transaction().unwrap();
    for table in tables {
        let columns: Vec<String> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT name FROM main.pragma_table_info('{table}')"
                ))
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let cols = columns.join(", ");
        tx.execute(
            &format!("INSERT INTO main.{table} ({cols}) SELECT {cols} FROM src.{table}"),
            [],
        )
        .unwrap();
    }
    for (id, body) in bodies {
        tx.execute(
            "INSERT INTO main.search (rowid, body) SELECT rid, ?2 FROM main.records WHERE id = ?1",
            rusqlite::params![id, body],
        )
        .unwrap();
    }
    // v1 had neither held changes nor a conflict index, and never a reproject flag; its store's
    // actor was the device id's bytes, not a key of `meta`.
    tx.execute(
        "DELETE FROM main.meta WHERE key IN ('reproject', 'actor')",
        [],
    )
    .unwrap();
    // Two quarantined changes as v1 kept them (reason only): one the relay refused, one chunk from the
    // relay that could not be read.
    for (hash, reason) in [
        ([1u8; 32], "out_of_scope"),
        ([2u8; 32], "malformed remote chunk"),
    ] {
        tx.execute(
            "INSERT INTO main.quarantine (hash, record_id, bytes, reason, at) VALUES (?1, ?2, x'00', ?3, 1)",
            rusqlite::params![&hash[..], "0".repeat(32), reason],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn.execute("DETACH DATABASE src", []).unwrap();
    let records: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert!(records >= 8);
    for v2_table in ["held_changes", "conflicts"] {
        let exists: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                [v2_table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(exists, 0, "{v2_table} is not part of v1");
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn a_version_1_store_upgrades_to_the_fresh_schema_with_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let (original, ids) = original_store(dir.path());
    let source = dir.path().join("wang.db");
    let v1 = dir.path().join("v1.db");
    v1_copy_of(&source, &original, &v1);

    let migrated = Store::open(StoreOptions::new(&v1, key())).unwrap();
    assert_eq!(migrated.identity(), original.identity());
    // A store made before stores had their own actor keeps the one it had: its device id's bytes.
    assert_eq!(migrated.actor_hex(), hex::encode("wang-phone"));
    assert_ne!(original.actor_hex(), hex::encode("wang-phone"));
    let quarantined: Vec<(QuarantineOrigin, String, Option<String>)> = migrated
        .quarantined()
        .unwrap()
        .into_iter()
        .map(|q| (q.origin, q.reason, q.detail))
        .collect();
    assert_eq!(
        quarantined,
        [
            (QuarantineOrigin::Refused, "out_of_scope".to_owned(), None),
            (
                QuarantineOrigin::Received,
                "malformed remote chunk".to_owned(),
                None
            )
        ]
    );

    // Schema: the same as a store created by this build.
    let fresh_path = dir.path().join("fresh.db");
    drop(
        Store::open(StoreOptions::new(&fresh_path, key()).identity(identity(
            "x",
            "x-phone",
            Role::Worker,
            "g1",
        )))
        .unwrap(),
    );
    let (mconn, fconn) = (raw(&v1), raw(&fresh_path));
    assert_eq!(user_version(&mconn), schema::VERSION);
    assert_eq!(schema_of(&mconn), schema_of(&fconn));
    let reproject: i64 = mconn
        .query_row(
            "SELECT count(*) FROM meta WHERE key = 'reproject'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reproject, 0, "the reproject flag is cleared once done");

    // Rows: every projection table equals the original's (rids were kept), the documents have the
    // same heads. `updated_at` is when the row was written, `doc` the re-saved bytes: both may differ.
    let oconn = raw(&source);
    // `meta` is the original's but for the actor (see above).
    let without_actor = |conn: &Connection| -> Vec<Vec<String>> {
        table_rows(conn, "meta", &[])
            .into_iter()
            .filter(|row| row[0] != "'actor'")
            .collect()
    };
    assert_eq!(without_actor(&mconn), without_actor(&oconn));
    let mut tables = vec![
        "areas",
        "outbox",
        "links",
        "tags",
        "conflicts",
        "visited",
        "numbers",
        "held_changes",
    ];
    tables.extend(Kind::ALL.iter().map(|k| k.table()));
    for table in tables {
        assert_eq!(
            table_rows(&mconn, table, &[]),
            table_rows(&oconn, table, &[]),
            "table {table}"
        );
    }
    assert_eq!(
        table_rows(&mconn, "records", &["updated_at", "doc"]),
        table_rows(&oconn, "records", &["updated_at", "doc"]),
    );

    // Behaviour: records, lists, searches, links and conflicts are those of the original.
    assert_eq!(
        migrated.record_ids().unwrap(),
        original.record_ids().unwrap()
    );
    for id in original.record_ids().unwrap() {
        assert_eq!(migrated.get(&id).unwrap(), original.get(&id).unwrap());
        assert_eq!(migrated.heads(&id).unwrap(), original.heads(&id).unwrap());
        assert_eq!(
            migrated.links_of(&id).unwrap(),
            original.links_of(&id).unwrap()
        );
    }
    for kind in Kind::ALL {
        for q in [
            ListQuery::new(kind).limit(1000),
            {
                let mut q = ListQuery::new(kind).limit(1000);
                q.include_deleted = true;
                q
            },
            ListQuery::new(kind).area("g1").only_this_area(),
            ListQuery::new(kind).area("c1"),
        ] {
            assert_eq!(
                migrated.list(&q).unwrap(),
                original.list(&q).unwrap(),
                "{q:?}"
            );
        }
    }
    assert_eq!(
        migrated
            .list(&ListQuery::new(Kind::Place).tag("needs inspection"))
            .unwrap()
            .items
            .len(),
        1
    );
    for text in [
        "小明",
        "王",
        "独居",
        "幸福路",
        "john",
        "smi",
        "stair",
        "weekly",
        "Residents",
        "moved",
    ] {
        let m = sorted(
            migrated
                .search(text, None, 100)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect(),
        );
        let o = sorted(
            original
                .search(text, None, 100)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
        );
        assert_eq!(m, o, "search {text:?}");
    }
    assert_eq!(
        migrated.search("小明", None, 10).unwrap()[0].id,
        ids[1],
        "the index was rebuilt"
    );
    let conflicts = migrated.conflicts().unwrap();
    assert_eq!(conflicts, original.conflicts().unwrap());
    let fields: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["attrs.hukou", "phone"]);
    assert_eq!(
        migrated.outbox(1000).unwrap(),
        original.outbox(1000).unwrap()
    );
    assert_eq!(migrated.areas().unwrap(), original.areas().unwrap());

    // The upgraded store works on: a resolution, a new record, an integrity check.
    migrated
        .resolve_conflict(&ids[1], "phone", "13800000001")
        .unwrap();
    assert_eq!(migrated.conflicts().unwrap().len(), 1);
    let after = migrated
        .create(NewRecord::new(Kind::Person, "g1").field("name", "After Upgrade"))
        .unwrap();
    let made = migrated.export_document(&after).unwrap();
    let actors: Vec<String> = automerge::Automerge::load(&made)
        .unwrap()
        .get_changes(&[])
        .iter()
        .map(|c| c.actor_id().to_hex_string())
        .collect();
    assert_eq!(
        actors,
        [hex::encode("wang-phone")],
        "new changes by the store's actor"
    );
    assert_eq!(migrated.search("Upgrade", None, 10).unwrap().len(), 1);
    migrated.check_integrity().unwrap();
    drop(migrated);
    // Reopening does not migrate or reproject again.
    let again = Store::open(StoreOptions::new(&v1, key())).unwrap();
    assert_eq!(again.conflicts().unwrap().len(), 1);
}

/// A version-5 store (record views kept, no `visited` or `numbers` index) upgrades without
/// re-projecting: the visits' records come from their stored views, the numbers from the projection.
#[test]
fn a_version_5_store_takes_its_visits_records_from_the_stored_views() {
    let dir = tempfile::tempdir().unwrap();
    let (original, _) = original_store(dir.path());
    drop(original);
    let path = dir.path().join("wang.db");
    let conn = raw(&path);
    let before = table_rows(&conn, "visited", &[]);
    assert_eq!(before.len(), 1, "the fixture's visit included one record");
    let numbers_before = table_rows(&conn, "numbers", &[]);
    assert_eq!(numbers_before.len(), 2, "the fixture's phone and ID number");
    conn.execute_batch(
        "DROP TABLE visited; DROP TABLE schedules; DROP TABLE forms; DROP TABLE area_workers; DROP TABLE numbers; DROP TABLE seen_items;
         DROP TABLE absorbed;
         DELETE FROM meta WHERE key IN ('reproject', 'renumber');
         PRAGMA user_version = 5;",
    )
    .unwrap();
    let mut conn = conn;
    assert_eq!(schema::migrate_to(&mut conn, schema::VERSION).unwrap(), 5);
    assert_eq!(table_rows(&conn, "visited", &[]), before);
    let reproject: i64 = conn
        .query_row(
            "SELECT count(*) FROM meta WHERE key = 'reproject'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reproject, 0, "no re-projection is asked for");
    drop(conn);
    drop(Store::open(StoreOptions::new(&path, key())).unwrap());
    // The number index is filled from the projection when the store opens.
    let conn = raw(&path);
    assert_eq!(table_rows(&conn, "numbers", &[]), numbers_before);
    let renumber: i64 = conn
        .query_row(
            "SELECT count(*) FROM meta WHERE key = 'renumber'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(renumber, 0);
}

#[test]
fn an_empty_version_1_store_upgrades_to_the_fresh_schema() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.db");
    {
        let mut conn = raw(&v1);
        schema::migrate_to(&mut conn, 1).unwrap();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('identity', ?1)",
            [serde_json::to_string(&identity("wang", "wang-phone", Role::Worker, "g1")).unwrap()],
        )
        .unwrap();
    }
    let store = Store::open(StoreOptions::new(&v1, key())).unwrap();
    assert_eq!(store.identity().user_id, "wang");
    add_areas(&store);
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "First"))
        .unwrap();
    drop(store);
    let fresh = dir.path().join("fresh.db");
    drop(
        Store::open(StoreOptions::new(&fresh, key()).identity(identity(
            "x",
            "y",
            Role::Worker,
            "g1",
        )))
        .unwrap(),
    );
    assert_eq!(schema_of(&raw(&v1)), schema_of(&raw(&fresh)));
    // Migrating a current store is a no-op.
    let mut conn = raw(&fresh);
    let before = schema_of(&conn);
    assert_eq!(schema::migrate(&mut conn).unwrap(), schema::VERSION);
    assert_eq!(schema_of(&conn), before);
}

#[test]
fn a_store_from_a_newer_build_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wang.db");
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let id = store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Zhao Lei"))
        .unwrap();
    drop(store);
    let newer = schema::VERSION + 1;
    raw(&path)
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let before = schema_of(&raw(&path));
    match Store::open(StoreOptions::new(&path, key())) {
        Err(Error::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (newer, schema::VERSION))
        }
        Err(e) => panic!("expected SchemaTooNew, got {e:?}"),
        Ok(_) => panic!("a newer store was opened"),
    }
    let conn = raw(&path);
    assert_eq!(user_version(&conn), newer, "version untouched");
    assert_eq!(schema_of(&conn), before, "schema untouched");
    drop(conn);
    // Put back to this build's version, it opens with its record intact.
    raw(&path)
        .pragma_update(None, "user_version", schema::VERSION)
        .unwrap();
    let store = Store::open(StoreOptions::new(&path, key())).unwrap();
    assert_eq!(store.get(&id).unwrap().field("name"), Some("Zhao Lei"));
}

/// Rows written before schema 4 have no stored view: `get` reads them from the document until the
/// record is next written, which stores its view; a view that does not parse is a typed error.
#[test]
fn a_row_without_its_view_is_read_from_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wang.db");
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let id = store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "Zhao Lei")
                .tag("lives alone"),
        )
        .unwrap();
    let made = store.get(&id).unwrap();
    drop(store);
    let view_of = |conn: &Connection| -> Option<String> {
        conn.query_row("SELECT view FROM records WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let conn = raw(&path);
    assert!(view_of(&conn).is_some(), "a write stores the view");
    conn.execute("UPDATE records SET view = NULL", []).unwrap();
    drop(conn);

    let store = Store::open(StoreOptions::new(&path, key())).unwrap();
    assert_eq!(store.get(&id).unwrap(), made, "read from the document");
    store
        .update(&id, Update::new().set("phone", "13800000000"))
        .unwrap();
    let edited = store.get(&id).unwrap();
    assert_eq!(edited.field("phone"), Some("13800000000"));
    drop(store);
    let conn = raw(&path);
    let view: Record = serde_json::from_str(&view_of(&conn).unwrap()).unwrap();
    assert_eq!(view, edited, "the next write stored the view again");
    conn.execute("UPDATE records SET view = '{not json'", [])
        .unwrap();
    drop(conn);
    let store = Store::open(StoreOptions::new(&path, key())).unwrap();
    assert!(matches!(store.get(&id), Err(Error::Corrupt(_))));
}

/// A version-7 store with merged duplicates: version 8 fills the index of the records that absorbed
/// others from the stored views, so `conflicts()` still lists what the merge left (it no longer reads
/// every record), and the outbox and search numbers keep working without their dropped indexes.
#[test]
fn a_version_7_store_keeps_its_merge_conflicts_and_queued_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zhou.db");
    let store = open(dir.path(), "zhou", Role::Supervisor, "c1");
    let person = |name: &str, phone: &str| {
        store
            .create(
                NewRecord::new(Kind::Person, "g1")
                    .field("name", name)
                    .field("birth_date", "1950-01-02")
                    .field("phone", phone),
            )
            .unwrap()
    };
    let kept = person("王芳", "13800000001");
    let away = person("王芳", "13800000002");
    let other = person("李明", "13800000003");
    let report = store.merge_records(&kept, &away).unwrap();
    assert_eq!(report.conflicts, ["phone"]);
    let conflicts = store.conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    let queued = store.outbox(1000).unwrap();
    drop(store);

    // The same file as a version-7 build left it.
    let conn = raw(&path);
    conn.execute_batch(
        "DROP TABLE absorbed;
         CREATE INDEX numbers_rid ON numbers (rid);
         CREATE TABLE outbox_v7 (
             seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,
             bytes BLOB NOT NULL);
         INSERT INTO outbox_v7 SELECT seq, record_id, hash, bytes FROM outbox;
         DROP TABLE outbox;
         ALTER TABLE outbox_v7 RENAME TO outbox;
         PRAGMA user_version = 7;",
    )
    .unwrap();
    drop(conn);

    let store = Store::open(StoreOptions::new(&path, key())).unwrap();
    assert_eq!(store.conflicts().unwrap(), conflicts);
    assert_eq!(store.outbox(1000).unwrap(), queued);
    let found = |q: &str| -> Vec<String> {
        store
            .search(q, None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(found("13800000003"), [other.clone()]);
    store
        .update(&other, Update::new().set("phone", "13900000003"))
        .unwrap();
    assert!(found("13800000003").is_empty());
    assert_eq!(found("13900000003"), [other]);
    store
        .resolve_conflict(&kept, "phone", "13800000002")
        .unwrap();
    assert!(store.conflicts().unwrap().is_empty());
    assert_eq!(store.outbox(1000).unwrap().len(), queued.len() + 2);
    let conn = raw(&path);
    assert_eq!(user_version(&conn), schema::VERSION);
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    drop(open(&fresh, "zhou", Role::Supervisor, "c1"));
    assert_eq!(schema_of(&conn), schema_of(&raw(&fresh.join("zhou.db"))));
}
