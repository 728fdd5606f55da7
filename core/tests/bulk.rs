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
