//! The quarantine: a change the relay refused is shown with its reason and detail, and discarding it
//! returns the record to the relay's version and re-applies the later edits the rule book still allows.
//! The relay's refusal is played here by the calls the sync client makes on a refusal (`quarantine`);
//! `tests/tests/e2e.rs` has the same flow against a real relay.
mod common;
use common::*;
use gridwork_core::*;

/// Marks everything in the outbox as accepted by the relay.
fn push_all(s: &Store) {
    let seqs: Vec<i64> = s.outbox(10_000).unwrap().iter().map(|c| c.seq).collect();
    s.mark_pushed(&seqs).unwrap();
}

/// The relay refuses the oldest change of the outbox.
fn refuse_oldest(s: &Store, reason: &str, detail: &str) -> String {
    let oldest = s.outbox(1).unwrap().remove(0);
    s.quarantine(oldest.seq, reason, Some(detail)).unwrap();
    oldest.hash
}

#[test]
fn discarding_a_refused_edit_keeps_the_later_edits() {
    let dir = tempfile::tempdir().unwrap();
    let w = open(dir.path(), "wang", Role::Worker, "g1");
    let p = w
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Hu Jun"))
        .unwrap();
    push_all(&w);
    w.update(&p, Update::new().set("name", "Hu Junior"))
        .unwrap();
    let refused = refuse_oldest(&w, "invalid_value", "`name`: a rule of the relay");
    // The user goes on editing the record: each edit builds on the refused one.
    w.update(&p, Update::new().set("phone", "13100000001"))
        .unwrap();
    w.update(&p, Update::new().add_tag("moved in")).unwrap();
    w.update(&p, Update::new().notes("Works nights.")).unwrap();
    let later: Vec<String> = w.outbox(10).unwrap().into_iter().map(|c| c.hash).collect();
    assert_eq!(later.len(), 3);

    let q = w.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].hash, refused);
    assert_eq!(q[0].origin, QuarantineOrigin::Refused);
    assert_eq!(q[0].reason, "invalid_value");
    assert_eq!(q[0].detail.as_deref(), Some("`name`: a rule of the relay"));
    assert_eq!(
        q[0].message,
        "the change was refused by the relay for `name`: a rule of the relay; the edit is kept only \
         on this device; discard it to return the record to the relay's version"
    );

    let report = w.discard_quarantined(&refused).unwrap();
    assert_eq!(report.record_id, p);
    let mut removed = vec![refused.clone()];
    removed.extend(later.iter().cloned());
    assert_eq!(report.removed, removed);
    assert_eq!(report.reapplied.len(), 3);
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert!(!report.record_removed);

    let r = w.get(&p).unwrap();
    assert_eq!(r.field("name"), Some("Hu Jun"), "the relay's version");
    assert_eq!(r.field("phone"), Some("13100000001"));
    assert_eq!(r.tags, ["moved in"]);
    assert_eq!(r.notes, "Works nights.");
    assert!(w.quarantined().unwrap().is_empty());
    let queued: Vec<String> = w.outbox(10).unwrap().into_iter().map(|c| c.hash).collect();
    assert_eq!(
        queued, report.reapplied,
        "the re-applied edits wait to be pushed"
    );
    assert!(queued.iter().all(|h| !later.contains(h)), "as new changes");
    let history: Vec<(String, String)> = w
        .history(&p)
        .unwrap()
        .into_iter()
        .map(|h| (h.action, h.hash))
        .collect();
    assert_eq!(history.len(), 4, "{history:?}");
    assert!(history.iter().all(|(_, h)| *h != refused));
    // The projection follows: search and lists see the relay's name.
    assert_eq!(w.search("Junior", None, 10).unwrap().len(), 0);
    assert_eq!(w.search("Hu Jun", None, 10).unwrap().len(), 1);
    // Reopened, the store holds exactly this.
    drop(w);
    let again = open(dir.path(), "wang", Role::Worker, "g1");
    assert_eq!(again.get(&p).unwrap(), r);
}

#[test]
fn later_edits_the_rules_no_longer_allow_are_dropped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sup = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let ev = resolved_event(&sup, "Blocked drain");
    push_all(&sup);
    sup.transition(&ev, EventAction::Verify, None).unwrap();
    let refused = refuse_oldest(&sup, "forbidden_role", "verifying needs a supervisor");
    sup.transition(&ev, EventAction::Close, Some("done"))
        .unwrap();
    sup.update(&ev, Update::new().notes("Plumber came twice."))
        .unwrap();
    let close = sup.outbox(10).unwrap()[0].hash.clone();

    let report = sup.discard_quarantined(&refused).unwrap();
    assert_eq!(report.reapplied.len(), 1, "the notes");
    assert_eq!(report.dropped.len(), 1);
    let dropped = &report.dropped[0];
    assert_eq!(
        (dropped.hash.as_str(), dropped.action.as_str()),
        (close.as_str(), "close")
    );
    assert_eq!(dropped.reason, "invalid_transition", "{dropped:?}");
    let e = sup.get(&ev).unwrap();
    assert_eq!(e.field("status"), Some("resolved"));
    assert_eq!(e.notes, "Plumber came twice.");
    let actions: Vec<&str> = e.timeline.iter().map(|t| t.action.as_str()).collect();
    assert_eq!(actions, ["report", "assign", "start", "resolve"]);
    assert_eq!(sup.outbox_len().unwrap(), 1);
    // The record is not blocked: the next transition is an ordinary one.
    sup.transition(&ev, EventAction::Verify, None).unwrap();
    assert_eq!(sup.get(&ev).unwrap().field("status"), Some("verified"));
}

#[test]
fn discarding_a_refused_record_removes_it_and_a_bad_chunk_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let w = open(dir.path(), "wang", Role::Worker, "g1");
    let p = w
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Never Synced"))
        .unwrap();
    let refused = refuse_oldest(&w, "out_of_scope", "area g1 is outside your scope");
    w.update(&p, Update::new().set("phone", "13900000009"))
        .unwrap();
    let report = w.discard_quarantined(&refused).unwrap();
    assert!(report.record_removed);
    assert_eq!(report.dropped.len(), 1, "the later edit has no record left");
    assert!(matches!(w.get(&p), Err(Error::UnknownRecord(_))));
    assert!(w.search("Synced", None, 10).unwrap().is_empty());
    assert_eq!(w.outbox_len().unwrap(), 0);
    assert!(w.quarantined().unwrap().is_empty());

    // A chunk from the relay that cannot be read: kept aside, then forgotten.
    let other = w
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Kept"))
        .unwrap();
    w.apply_remote(&[RemoteChunk {
        record_id: other.clone(),
        bytes: b"\x85\x6f\x4a\x83garbage".to_vec(),
    }])
    .unwrap();
    let q = w.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].origin, QuarantineOrigin::Received);
    assert!(
        q[0].message.contains("nothing else is affected"),
        "{}",
        q[0].message
    );
    w.discard_quarantined(&q[0].hash).unwrap();
    assert!(w.quarantined().unwrap().is_empty());
    assert_eq!(w.get(&other).unwrap().field("name"), Some("Kept"));

    assert!(matches!(
        w.discard_quarantined(&"ab".repeat(32)),
        Err(Error::NotQuarantined(_))
    ));
    assert!(matches!(
        w.discard_quarantined("not-a-hash"),
        Err(Error::InvalidId(_))
    ));
}
