//! A snapshot page (whole documents of records new to the store) is loaded on every core before the
//! store is locked. The store it makes must be the one the general path makes from the same
//! documents, chunk by chunk: same records, views, heads, lists, searches and conflicts; a document
//! that does not load is quarantined; a record the store already has is merged, not replaced.
mod common;
use common::*;
use gridwork_core::*;

/// A source store with `n` people (some with concurrent edits, so conflicts travel), a visit and an
/// event, and their whole documents as a relay's snapshot would send them.
fn snapshot(dir: &std::path::Path, n: usize) -> (Store, Vec<RemoteChunk>) {
    let src = open(dir, "wang", Role::Worker, "g1");
    let other = open(dir, "li", Role::Worker, "g1");
    let mut ids = Vec::new();
    for i in 0..n {
        let mut r = NewRecord::new(Kind::Person, "g1")
            .field("name", format!("王小明{i}"))
            .field("phone", format!("139{i:08}"));
        if i % 7 == 0 {
            r = r.tag("lives alone").notes("visited weekly");
        }
        ids.push(src.create(r).unwrap());
    }
    // Concurrent edits of the same field on two devices: a conflict in the documents.
    for id in ids.iter().take(5) {
        other
            .apply_remote(&[RemoteChunk {
                record_id: id.clone(),
                bytes: src.export_document(id).unwrap(),
            }])
            .unwrap();
        other
            .update(id, Update::new().set("phone", "13800000000"))
            .unwrap();
        src.update(id, Update::new().set("phone", "13911111111"))
            .unwrap();
        src.apply_remote(&[RemoteChunk {
            record_id: id.clone(),
            bytes: other.export_document(id).unwrap(),
        }])
        .unwrap();
    }
    ids.push(src.start_visit("g1", "door to door", None).unwrap());
    let chunks = src
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| RemoteChunk {
            bytes: src.export_document(&id).unwrap(),
            record_id: id,
        })
        .collect();
    (src, chunks)
}

fn same_store(a: &Store, b: &Store) {
    let ids = a.record_ids().unwrap();
    assert_eq!(ids, b.record_ids().unwrap());
    for id in &ids {
        assert_eq!(a.get(id).unwrap(), b.get(id).unwrap(), "{id}");
        assert_eq!(a.heads(id).unwrap(), b.heads(id).unwrap(), "{id}");
    }
    for kind in Kind::ALL {
        let q = ListQuery::new(kind).limit(1000);
        assert_eq!(a.list(&q).unwrap(), b.list(&q).unwrap(), "{kind}");
    }
    for text in ["王小明1", "小明", "visited", "139000"] {
        assert_eq!(
            a.search(text, None, 1000).unwrap(),
            b.search(text, None, 1000).unwrap(),
            "{text}"
        );
    }
    assert_eq!(a.conflicts().unwrap(), b.conflicts().unwrap());
}

#[test]
fn a_snapshot_page_applied_at_once_equals_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    // More documents than the parallel threshold, so the page is loaded on several threads.
    let (src, chunks) = snapshot(dir.path(), 150);
    let sup = |name: &str| {
        Store::open(
            StoreOptions::new(dir.path().join(format!("{name}.db")), StoreKey::Raw(KEY))
                .identity(identity("zhao", "zhao-pad", Role::Supervisor, "c1")),
        )
        .map(|s| {
            add_areas(&s);
            s
        })
        .unwrap()
    };
    let (paged, general) = (sup("paged"), sup("general"));
    let report = paged.apply_remote(&chunks).unwrap();
    assert_eq!(report.records_changed, chunks.len());
    assert_eq!(report.malformed, 0);
    // The general path: each document twice in one call (so it is not a one-chunk record), which
    // takes the first whole and merges the second as a no-op.
    for c in &chunks {
        general
            .apply_remote(&[c.clone(), c.clone()])
            .unwrap();
    }
    same_store(&paged, &general);
    same_store(&paged, &src);
    assert_eq!(paged.conflicts().unwrap().len(), 5);
    // A record taken whole is edited by this store's own actor, not the document's author.
    let id = &chunks[20].record_id;
    paged
        .update(id, Update::new().set("sex", "male"))
        .unwrap();
    let out = paged.outbox(10).unwrap();
    let change = automerge::Change::from_bytes(out[0].bytes.clone()).unwrap();
    assert_eq!(change.actor_id().to_hex_string(), paged.actor_hex());
}

#[test]
fn a_bad_document_or_a_known_record_in_a_page_takes_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    let (src, mut chunks) = snapshot(dir.path(), 80);
    let dst = open(dir.path(), "chen", Role::Worker, "g1");
    // A record the store has, with a local edit the page does not know.
    let known = chunks[3].record_id.clone();
    dst.apply_remote(&[chunks[3].clone()]).unwrap();
    dst.update(&known, Update::new().set("sex", "female"))
        .unwrap();
    // A chunk that claims to be a document (type byte 0 after magic and checksum) but is not.
    let broken = chunks[10].record_id.clone();
    chunks[10].bytes = b"\x85\x6f\x4a\x83\0\0\0\0\0garbage".to_vec();
    let report = dst.apply_remote(&chunks).unwrap();
    assert_eq!(report.malformed, 1);
    let quarantined = dst.quarantined().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].record_id, broken);
    assert!(matches!(dst.get(&broken), Err(Error::UnknownRecord(_))));
    // The local edit is kept and merged with the page's version of the record.
    let merged = dst.get(&known).unwrap();
    assert_eq!(merged.field("sex"), Some("female"));
    assert_eq!(merged.field("name"), src.get(&known).unwrap().field("name"));
    assert_eq!(dst.outbox(100).unwrap().len(), 1, "the local edit still goes out");
    for c in chunks.iter().filter(|c| c.record_id != broken) {
        if c.record_id != known {
            assert_eq!(dst.get(&c.record_id).unwrap(), src.get(&c.record_id).unwrap());
        }
    }
}
