//! A snapshot page carries the relay's view of each record next to its document, and the device stores
//! it without loading the document. The relay is not trusted for it: the first load of a document
//! compares, repairs the record from the document and counts the mismatch. The relay is scripted here
//! (real HTTP on loopback) so that it can lie.
mod common;
mod scripted;
use common::*;
use gridwork_core::sync::SnapshotRecord;
use gridwork_core::*;
use scripted::{Script, ScriptedRelay};

fn snapshot_record(id: &str, doc: &[u8], view: Option<&Record>) -> SnapshotRecord {
    use base64::Engine;
    SnapshotRecord {
        record: id.to_owned(),
        bytes: base64::engine::general_purpose::STANDARD.encode(doc),
        view: view.map(|v| serde_json::value::RawValue::from_string(v.compact_json()).unwrap()),
    }
}

fn names(store: &Store, text: &str) -> Vec<String> {
    let mut out: Vec<String> = store
        .search(text, None, 10)
        .unwrap()
        .into_iter()
        .map(|s| s.title.clone())
        .collect();
    out.sort();
    out
}

#[test]
fn a_lying_view_is_repaired_from_the_document_on_first_load_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Records of grid g1 made by another worker: the relay's snapshot for wang holds them.
    let li = open(dir.path(), "li", Role::Worker, "g1");
    let honest = li
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Alice Honest"))
        .unwrap();
    let lied_about = li
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Bob Truth"))
        .unwrap();
    let viewless = li
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("name", "幸福小区3号楼")
                .field("address", "幸福路12号"),
        )
        .unwrap();
    let wrong_id = li
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Carol Real"))
        .unwrap();
    // A record of grid g2, outside wang's scope, whose view claims g1.
    let chen = open(dir.path(), "chen", Role::Worker, "g2");
    let planted = chen
        .create(NewRecord::new(Kind::Person, "g2").field("name", "Planted Elsewhere"))
        .unwrap();
    let mut planted_view = chen.get(&planted).unwrap();
    planted_view.area = "g1".into();
    let mut lie = li.get(&lied_about).unwrap();
    lie.fields.insert("name".into(), "Mallory Forged".into());
    lie.tags = vec!["lives alone".into()];

    let mut script = Script::wang();
    script.snapshot = vec![
        snapshot_record(
            &honest,
            &li.export_document(&honest).unwrap(),
            Some(&li.get(&honest).unwrap()),
        ),
        snapshot_record(
            &lied_about,
            &li.export_document(&lied_about).unwrap(),
            Some(&lie),
        ),
        snapshot_record(&viewless, &li.export_document(&viewless).unwrap(), None),
        snapshot_record(
            &planted,
            &chen.export_document(&planted).unwrap(),
            Some(&planted_view),
        ),
        // A view of another record: not taken, the document is read instead.
        snapshot_record(
            &wrong_id,
            &li.export_document(&wrong_id).unwrap(),
            Some(&li.get(&honest).unwrap()),
        ),
    ];
    let relay = ScriptedRelay::start(script);
    let wang = open(dir.path(), "wang", Role::Worker, "g1");
    let report = wang
        .sync(
            &SyncConfig::new(&relay.url, "gw_test"),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(report.bootstrapped, 5);

    // Until a document is loaded, the device shows what the relay said.
    assert_eq!(wang.unchecked_views().unwrap(), 3);
    assert_eq!(names(&wang, "Planted"), ["Planted Elsewhere"]);
    assert_eq!(wang.get(&honest).unwrap(), li.get(&honest).unwrap());
    assert_eq!(wang.get(&viewless).unwrap(), li.get(&viewless).unwrap());
    assert_eq!(wang.get(&wrong_id).unwrap(), li.get(&wrong_id).unwrap());
    assert_eq!(
        wang.get(&lied_about).unwrap().field("name"),
        Some("Mallory Forged")
    );
    assert_eq!(names(&wang, "Mallory"), ["Mallory Forged"]);
    assert_eq!(wang.view_repairs().unwrap(), 0);

    // The first load of the lied-about document (its history here) repairs it.
    assert!(!wang.history(&lied_about).unwrap().is_empty());
    assert_eq!(wang.view_repairs().unwrap(), 1);
    assert_eq!(wang.unchecked_views().unwrap(), 2);
    assert_eq!(wang.get(&lied_about).unwrap(), li.get(&lied_about).unwrap());
    assert!(names(&wang, "Mallory").is_empty());
    assert_eq!(names(&wang, "Bob"), ["Bob Truth"]);
    let tagged = wang
        .list(&ListQuery {
            tag: Some("lives alone".into()),
            ..ListQuery::new(Kind::Person)
        })
        .unwrap();
    assert!(tagged.items.is_empty(), "the forged tag is gone too");

    // The rest is checked when the app asks (or on first load): the honest view needs no repair; the
    // planted record's document is of another grid, so it is repaired and leaves the device.
    assert_eq!(wang.check_views(100).unwrap(), 2);
    assert_eq!(wang.unchecked_views().unwrap(), 0);
    assert_eq!(wang.view_repairs().unwrap(), 2);
    assert_eq!(wang.get(&honest).unwrap(), li.get(&honest).unwrap());
    assert!(matches!(wang.get(&planted), Err(Error::UnknownRecord(_))));
    assert!(names(&wang, "Planted").is_empty());

    // The count survives reopening; edits work on the repaired record.
    drop(wang);
    let wang = Store::open(StoreOptions::new(
        dir.path().join("wang.db"),
        StoreKey::Raw(KEY),
    ))
    .unwrap();
    assert_eq!(wang.view_repairs().unwrap(), 2);
    wang.update(&lied_about, Update::new().set("phone", "13900000000"))
        .unwrap();
    let after = wang.get(&lied_about).unwrap();
    assert_eq!(after.field("name"), Some("Bob Truth"));
    assert_eq!(after.field("phone"), Some("13900000000"));
}
