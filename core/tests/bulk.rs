//! `Store::create_many`: records made in one transaction are the same as records made one by one, and
//! one invalid record means none is made.
mod common;
use common::*;
use gridwork_core::*;

#[test]
fn create_many_makes_ordinary_records_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let b = open(dir.path(), "li", Role::Worker, "g1");
    let news: Vec<NewRecord> = ["王小明", "Li Na", "Li Na"]
        .iter()
        .map(|n| {
            NewRecord::new(Kind::Person, "g1")
                .field("name", *n)
                .field("phone", "13800000000")
                .tag("needs care")
        })
        .collect();
    let ids = s.create_many(news).unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(s.outbox_len().unwrap(), 3);
    let hashes: std::collections::BTreeSet<String> =
        s.outbox(10).unwrap().into_iter().map(|c| c.hash).collect();
    assert_eq!(
        hashes.len(),
        3,
        "identical records still have distinct changes"
    );
    for id in &ids {
        let r = s.get(id).unwrap();
        assert_eq!(r.field("phone"), Some("13800000000"));
        assert_eq!(s.history(id).unwrap()[0].action, "create");
    }
    assert_eq!(s.search("小明", None, 10).unwrap()[0].id, ids[0]);
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).tag("needs care"))
            .unwrap()
            .items
            .len(),
        3
    );
    exchange(&s, &b);
    for id in &ids {
        assert_eq!(b.get(id).unwrap(), s.get(id).unwrap());
    }

    // The third record is invalid: nothing of the batch is stored.
    let before = s.record_ids().unwrap();
    let err = s
        .create_many(vec![
            NewRecord::new(Kind::Person, "g1").field("name", "Good One"),
            NewRecord::new(Kind::Place, "g1").field("name", "Good Place"),
            NewRecord::new(Kind::Person, "g1")
                .field("name", "Bad One")
                .field("phone", "call me"),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidField { .. }), "{err:?}");
    assert!(matches!(
        s.create_many(vec![
            NewRecord::new(Kind::Person, "g2").field("name", "Elsewhere")
        ]),
        Err(Error::OutOfScope(_))
    ));
    assert_eq!(s.record_ids().unwrap(), before);
    assert_eq!(s.outbox_len().unwrap(), 3);
    assert!(s.search("Good", None, 10).unwrap().is_empty());
    assert_eq!(s.create_many(Vec::new()).unwrap(), Vec::<String>::new());
}

/// A bulk create makes the first record of each shape the full way and the rest from it (see
/// `core/src/store/template.rs`): every record, whatever its path, must be exactly what its document
/// reads as, on this store and on a store that only received the changes.
#[test]
fn records_made_from_a_template_read_as_their_documents() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let b = open(dir.path(), "li", Role::Worker, "g1");
    let mut news = Vec::new();
    for i in 0..240 {
        let new = match i % 6 {
            0 => NewRecord::new(Kind::Person, "g1")
                .field("name", format!("王小{i}"))
                .field("phone", format!("139{i:08}"))
                .field("sex", if i % 2 == 0 { "female" } else { "male" }),
            1 => NewRecord::new(Kind::Person, "g1")
                .field("name", format!("Person {i}"))
                .field("phone", "")
                .attr("floor", format!("{}", i % 9))
                .attr("note", "")
                .tag("lives alone")
                .tag(" needs care "),
            2 => NewRecord::new(Kind::Place, "g1")
                .field("name", format!("Building {i}"))
                .field("address", format!("幸福路{i}号")),
            3 => NewRecord::new(Kind::Organisation, "g1")
                .field("name", format!("Shop {i}"))
                .attr("licence", format!("L-{i}")),
            // Made the full way: notes are one operation per character, events start a timeline.
            4 => NewRecord::new(Kind::Person, "g1")
                .field("name", format!("Noted {i}"))
                .notes(format!("note {i}")),
            _ => NewRecord::new(Kind::Event, "g1").field("title", format!("Leak {i}")),
        };
        news.push(new);
    }
    let ids = s.create_many(news).unwrap();
    assert_eq!(ids.len(), 240);
    let hashes: std::collections::BTreeSet<String> = s
        .outbox(1000)
        .unwrap()
        .into_iter()
        .map(|c| c.hash)
        .collect();
    assert_eq!(hashes.len(), 240, "every record has its own first change");
    for (i, id) in ids.iter().enumerate() {
        let view = s.get(id).unwrap();
        let doc = automerge::Automerge::load(&s.export_document(id).unwrap()).unwrap();
        assert_eq!(
            gridwork_core::doc::read_record(id, &doc).as_ref(),
            Some(&view),
            "record {i}"
        );
        assert_eq!(s.history(id).unwrap().len(), 1);
    }
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).tag("needs care"))
            .unwrap()
            .items
            .len(),
        40
    );
    assert_eq!(s.search("幸福路14号", None, 10).unwrap()[0].id, ids[14]);
    // The rebuilt projection (from the documents) is the one written from the views.
    let before: Vec<_> = s
        .list(&ListQuery::new(Kind::Person).limit(1000))
        .unwrap()
        .items;
    s.rebuild_projection().unwrap();
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).limit(1000))
            .unwrap()
            .items,
        before
    );
    exchange(&s, &b);
    for id in &ids {
        assert_eq!(b.get(id).unwrap(), s.get(id).unwrap());
    }
}

/// Statistics and duplicate candidates read the store in chunks of rows: over a few chunks they count
/// every record once, find pairs whose records lie in different chunks, and see a record without a
/// stored view (read from its document).
#[test]
fn statistics_and_duplicates_count_every_record_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "zhou", Role::Supervisor, "c1");
    let n = 2_501;
    let people: Vec<NewRecord> = (0..n)
        .map(|i| {
            // Person 2,400 has person 300's name and birth date (chunks of 1,000 rows apart), and
            // person 1,000 has person 999's (at a chunk's edge).
            let twin = match i {
                2_400 => 300,
                1_000 => 999,
                i => i,
            };
            NewRecord::new(Kind::Person, if i % 2 == 0 { "g1" } else { "g2" })
                .field("name", format!("住户{twin}"))
                .field("birth_date", "1950-01-02")
        })
        .collect();
    let ids = s.create_many(people).unwrap();
    let stats = s.statistics(&Default::default()).unwrap();
    assert_eq!(stats.records_per_kind.get("person"), Some(&(n as u64)));
    assert_eq!(stats.duplicates_open, 2);
    let mut pairs: Vec<(String, String)> = s
        .duplicates(None)
        .unwrap()
        .into_iter()
        .map(|p| (p.a.id, p.b.id))
        .collect();
    pairs.sort();
    let pair = |x: usize, y: usize| {
        let (a, b) = (ids[x].clone(), ids[y].clone());
        if a < b {
            (a, b)
        } else {
            (b, a)
        }
    };
    let mut expected = vec![pair(300, 2_400), pair(999, 1_000)];
    expected.sort();
    assert_eq!(pairs, expected);
    // A row without its stored view still counts.
    let conn = gridwork_core::store::open_connection(
        &dir.path().join("zhou.db"),
        &StoreKey::Raw(KEY),
        Durability::Normal,
    )
    .unwrap();
    conn.execute(
        "UPDATE records SET view = NULL WHERE id = ?1",
        [&ids[2_400]],
    )
    .unwrap();
    let stats = s.statistics(&Default::default()).unwrap();
    assert_eq!(stats.records_per_kind.get("person"), Some(&(n as u64)));
    assert_eq!(s.duplicates(None).unwrap().len(), 2);
}
