//! The rule book on the device: every write is judged before it is stored, a refusal leaves nothing
//! behind, and a store's own actor is never shared.
mod common;
use common::*;
use gridwork_core::rules::Reason;
use gridwork_core::*;

/// A write's result and the check its error must pass.
type Case = (Result<()>, fn(&Error) -> bool);

/// What a refused write must leave untouched.
fn snapshot(s: &Store, id: &str) -> (Vec<u8>, Vec<String>, u64, Record) {
    (
        s.export_document(id).unwrap(),
        s.heads(id).unwrap(),
        s.outbox_len().unwrap(),
        s.get(id).unwrap(),
    )
}

#[test]
fn a_refused_write_stores_nothing_and_the_record_stays_editable() {
    let dir = tempfile::tempdir().unwrap();
    let worker = open(dir.path(), "wang", Role::Worker, "g1");
    let ev = worker
        .create(NewRecord::new(Kind::Event, "g1").field("title", "Leaking pipe"))
        .unwrap();
    let p = worker
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Ma Lin"))
        .unwrap();
    let ev_before = snapshot(&worker, &ev);
    let p_before = snapshot(&worker, &p);
    // Refused by the rule book: a worker closes, verifies, hands down; a tag and an attribute break
    // their value rules; a move out of scope.
    let refusals: Vec<Case> = vec![
        (
            worker
                .transition(&ev, EventAction::Verify, None)
                .map(|_| ()),
            |e| matches!(e, Error::InvalidTransition(_)),
        ),
        (
            worker
                .transition(&ev, EventAction::HandDown { area: "g1".into() }, None)
                .map(|_| ()),
            |e| matches!(e, Error::InvalidTransition(_) | Error::Forbidden(_)),
        ),
        (
            worker.update(&p, Update::new().add_tag("x".repeat(200))),
            |e| {
                matches!(
                    e,
                    Error::Refused {
                        reason: Reason::InvalidValue,
                        ..
                    }
                )
            },
        ),
        (
            worker.update(&p, Update::new().attr("note", "line\nbreak")),
            |e| {
                matches!(
                    e,
                    Error::Refused {
                        reason: Reason::InvalidValue,
                        ..
                    }
                )
            },
        ),
        (worker.move_record(&p, "g2"), |e| {
            matches!(e, Error::OutOfScope(_))
        }),
    ];
    for (result, expected) in refusals {
        let err = result.unwrap_err();
        assert!(expected(&err), "{err:?}");
        assert!(
            !err.to_string().contains("line\nbreak"),
            "no values in errors"
        );
    }
    assert_eq!(snapshot(&worker, &ev), ev_before, "the event is untouched");
    assert_eq!(snapshot(&worker, &p), p_before, "the person is untouched");
    // The refused changes were rolled back, not only left unstored: the next edit builds on the
    // stored document and is the only new change.
    worker
        .update(
            &p,
            Update::new()
                .set("phone", "13700000000")
                .add_tag("new tenant"),
        )
        .unwrap();
    let after = worker.get(&p).unwrap();
    assert_eq!(after.field("phone"), Some("13700000000"));
    assert_eq!(after.tags, ["new tenant"]);
    assert_eq!(worker.history(&p).unwrap().len(), 2);
    assert_eq!(worker.outbox_len().unwrap(), p_before.2 + 1);
    drop(worker);
    let reopened = open(dir.path(), "wang", Role::Worker, "g1");
    assert_eq!(reopened.get(&p).unwrap(), after);
}

#[test]
fn stores_made_with_the_same_device_id_never_share_an_actor() {
    let dir = tempfile::tempdir().unwrap();
    let make = |file: &str| {
        Store::open(
            StoreOptions::new(dir.path().join(file), StoreKey::Raw(KEY)).identity(identity(
                "wang",
                "wang-phone",
                Role::Worker,
                "g1",
            )),
        )
        .unwrap()
    };
    let (a, b) = (make("a.db"), make("b.db"));
    assert_ne!(a.actor_hex(), b.actor_hex());
    assert_eq!(a.actor_hex().len(), 32, "16 random bytes");
    add_areas(&a);
    add_areas(&b);
    let p = a
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Shared Id"))
        .unwrap();
    b.apply_remote(&a.all_changes().unwrap()).unwrap();
    // Both edit the same record offline: two actors, so the edits merge instead of colliding.
    a.update(&p, Update::new().set("phone", "13000000001"))
        .unwrap();
    b.update(&p, Update::new().set("sex", "female")).unwrap();
    b.apply_remote(&a.all_changes().unwrap()).unwrap();
    a.apply_remote(&b.all_changes().unwrap()).unwrap();
    assert_eq!(a.get(&p).unwrap(), b.get(&p).unwrap());
    assert_eq!(a.get(&p).unwrap().field("sex"), Some("female"));
    assert_eq!(a.get(&p).unwrap().field("phone"), Some("13000000001"));
    // History shows the device the change note names, not the actor.
    assert!(a
        .history(&p)
        .unwrap()
        .iter()
        .all(|h| h.device == "wang-phone"));
    assert_eq!(a.actor_hex(), {
        drop(a);
        make("a.db").actor_hex()
    });
}

#[test]
fn an_attachment_over_the_relays_limit_is_refused_on_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let v = s.start_visit("g1", "photos", None).unwrap();
    let limit = gridwork_core::limits::MAX_ATTACHMENT_BYTES as usize;
    let too_big = vec![0u8; limit + 1];
    assert!(matches!(
        s.add_attachment(&v, "big.jpg", "image/jpeg", &too_big),
        Err(Error::InvalidInput(_))
    ));
    let at_limit = s
        .add_attachment(&v, "max.jpg", "image/jpeg", &too_big[..limit])
        .unwrap();
    assert_eq!(at_limit.size as usize, limit);
}

#[test]
fn the_area_tree_keeps_its_levels_locally() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    for (id, parent, level) in [
        ("g7", Some("d1"), AreaLevel::Grid),
        ("g8", None, AreaLevel::Grid),
        ("c9", Some("g1"), AreaLevel::Community),
    ] {
        assert!(
            matches!(
                s.upsert_area(id, parent, level, "x"),
                Err(Error::InvalidInput(_))
            ),
            "{id}"
        );
    }
    assert!(s.area("g7").is_err());
}
