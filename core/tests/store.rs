//! The store end to end on real encrypted SQLite files.
mod common;
use common::*;
use gridwork_core::rules::Reason;
use gridwork_core::*;

#[test]
fn create_edit_list_and_tombstone_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let building = s
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("category", "building")
                .field("name", "Block 3")
                .field("address", "幸福路12号"),
        )
        .unwrap();
    let person = s
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王小明")
                .field("sex", "male")
                .field("birth_date", "1948-03-02")
                .field("home_place", building.clone())
                .tag("lives alone")
                .attr("hukou", "local")
                .notes("Needs a weekly call."),
        )
        .unwrap();
    for (kind, title) in [
        (Kind::Object, "Fire hydrant"),
        (Kind::Organisation, "Residents' committee"),
    ] {
        s.create(NewRecord::new(kind, "g1").field("name", title))
            .unwrap();
    }
    s.update(
        &person,
        Update::new()
            .set("phone", "+86 138 0013 8000")
            .attr("hukou", "moved")
            .add_tag("needs care"),
    )
    .unwrap();
    s.link(&person, LinkType::LivesAt, &building).unwrap();

    let p = s.get(&person).unwrap();
    assert_eq!(p.field("name"), Some("王小明"));
    assert_eq!(p.field("phone"), Some("+86 138 0013 8000"));
    assert_eq!(p.attrs["hukou"], "moved");
    assert_eq!(
        p.tags,
        vec!["lives alone".to_string(), "needs care".to_string()]
    );
    assert_eq!(p.notes, "Needs a weekly call.");
    assert_eq!(
        p.links,
        vec![Link {
            link_type: LinkType::LivesAt,
            target: building.clone()
        }]
    );
    assert_eq!(s.links_of(&building).unwrap().len(), 1);

    let people = s.list(&ListQuery::new(Kind::Person).area("g1")).unwrap();
    assert_eq!(people.items.len(), 1);
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).tag("needs care"))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).filter("sex", "female"))
            .unwrap()
            .items
            .len(),
        0
    );
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).area("d1"))
            .unwrap()
            .items
            .len(),
        1,
        "subtree"
    );
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person).area("d1").only_this_area())
            .unwrap()
            .items
            .len(),
        0
    );

    s.delete(&person, Some("moved away")).unwrap();
    assert!(s.get(&person).unwrap().deleted);
    assert!(s
        .list(&ListQuery::new(Kind::Person))
        .unwrap()
        .items
        .is_empty());
    assert!(matches!(
        s.update(&person, Update::new().set("sex", "female")),
        Err(Error::Deleted(_))
    ));
    s.restore(&person).unwrap();
    assert_eq!(
        s.list(&ListQuery::new(Kind::Person)).unwrap().items.len(),
        1
    );
    let actions: Vec<String> = s
        .history(&person)
        .unwrap()
        .into_iter()
        .map(|h| h.action)
        .collect();
    assert_eq!(actions, ["create", "edit", "link", "delete", "restore"]);
    assert!(s
        .history(&person)
        .unwrap()
        .iter()
        .all(|h| h.user == "wang" && h.device == "wang-phone"));
}

#[test]
fn paging_walks_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    for i in 0..25 {
        s.create(NewRecord::new(Kind::Person, "g1").field("name", format!("Person {i:02}")))
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut q = ListQuery::new(Kind::Person).limit(10);
    loop {
        let page = s.list(&q).unwrap();
        seen.extend(page.items.into_iter().map(|r| r.title));
        match page.next_offset {
            Some(o) => q = q.offset(o),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[0], "Person 00");
    assert_eq!(seen[24], "Person 24");
}

#[test]
fn search_finds_chinese_fragments_and_latin_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let wang = s
        .create(NewRecord::new(Kind::Person, "g1").field("name", "王小明"))
        .unwrap();
    let li = s
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "李明华")
                .notes("独居老人，腿脚不便"),
        )
        .unwrap();
    let smith = s
        .create(NewRecord::new(Kind::Person, "g1").field("name", "John Smith"))
        .unwrap();
    let shop = s
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("name", "Corner shop")
                .field("address", "幸福路12号"),
        )
        .unwrap();
    let ids = |q: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .search(q, None, 50)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ids("小明"), vec![wang.clone()]);
    assert_eq!(ids("明"), sorted(vec![wang.clone(), li.clone()]));
    assert_eq!(ids("王小明"), vec![wang.clone()]);
    assert_eq!(ids("独居"), vec![li.clone()], "notes are searched");
    assert_eq!(ids("幸福路"), vec![shop.clone()], "addresses are searched");
    assert_eq!(ids("12号"), vec![shop.clone()]);
    assert_eq!(ids("smi"), vec![smith.clone()]);
    assert_eq!(ids("JOHN smith"), vec![smith.clone()]);
    assert!(ids("小红").is_empty());
    assert!(ids("\"*)(").is_empty(), "FTS syntax is not interpreted");
    assert_eq!(s.search("明", Some(Kind::Place), 10).unwrap().len(), 0);
    s.update(&wang, Update::new().set("name", "王大明"))
        .unwrap();
    assert!(ids("小明").is_empty(), "renamed records leave the index");
    assert_eq!(ids("大明"), vec![wang]);
}

#[test]
fn bad_input_gives_typed_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let p = s
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "Li Na")
                .field("phone", "123456"),
        )
        .unwrap();
    let before = s.export_document(&p).unwrap();
    let outbox = s.outbox_len().unwrap();
    let bad: Vec<(Update, fn(&Error) -> bool)> = vec![
        (Update::new().set("phone", "call me"), |e| {
            matches!(e, Error::InvalidField { .. })
        }),
        (Update::new().set("birth_date", "1990-02-30"), |e| {
            matches!(e, Error::InvalidField { .. })
        }),
        (Update::new().set("favourite_colour", "red"), |e| {
            matches!(e, Error::UnknownField { .. })
        }),
        (Update::new().set("name", ""), |e| {
            matches!(e, Error::InvalidField { .. })
        }),
        (
            Update::new().set("phone", "555-1234").set("sex", "robot"),
            |e| matches!(e, Error::InvalidField { .. }),
        ),
    ];
    for (update, check) in bad {
        let err = s.update(&p, update).unwrap_err();
        assert!(check(&err), "{err:?}");
        assert!(
            !err.to_string().contains("call me"),
            "errors never echo values"
        );
    }
    assert!(matches!(
        s.update(
            "00000000000000000000000000000000",
            Update::new().set("sex", "male")
        ),
        Err(Error::UnknownRecord(_))
    ));
    assert!(matches!(
        s.create(NewRecord::new(Kind::Person, "g2").field("name", "X")),
        Err(Error::OutOfScope(_))
    ));
    assert!(matches!(
        s.create(NewRecord::new(Kind::Person, "nowhere").field("name", "X")),
        Err(Error::UnknownArea(_))
    ));
    assert!(matches!(
        s.create(NewRecord::new(Kind::Person, "g1")),
        Err(Error::InvalidField { .. })
    ));
    assert!(matches!(
        s.create(
            NewRecord::new(Kind::Event, "g1")
                .field("title", "x")
                .field("status", "closed")
        ),
        Err(Error::ReadOnlyField(_))
    ));
    assert!(matches!(
        s.link(&p, LinkType::LivesAt, "not-an-id"),
        Err(Error::InvalidId(_))
    ));
    assert_eq!(s.export_document(&p).unwrap(), before, "document untouched");
    assert_eq!(s.outbox_len().unwrap(), outbox, "nothing queued");
    assert_eq!(s.get(&p).unwrap().field("phone"), Some("123456"));
}

#[test]
fn event_lifecycle_roles_escalation_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let worker = open(dir.path(), "wang", Role::Worker, "g1");
    let ev = worker
        .create(
            NewRecord::new(Kind::Event, "g1")
                .field("title", "Broken stair light")
                .field("category", "hazard_report")
                .field("due", "2001-01-01T00:00:00Z"),
        )
        .unwrap();
    assert_eq!(worker.get(&ev).unwrap().field("status"), Some("reported"));
    assert!(matches!(
        worker.transition(&ev, EventAction::Close, None),
        Err(Error::InvalidTransition { .. })
    ));
    assert!(matches!(
        worker.transition(
            &ev,
            EventAction::Assign {
                assignee: "zhao".into()
            },
            None
        ),
        Err(Error::Forbidden(_))
    ));
    assert_eq!(
        worker
            .transition(
                &ev,
                EventAction::Assign {
                    assignee: "wang".into()
                },
                None
            )
            .unwrap(),
        EventStatus::Assigned
    );
    assert_eq!(worker.assigned_to_me(10).unwrap().len(), 1);
    assert_eq!(worker.overdue_events(10).unwrap().len(), 1);
    worker.transition(&ev, EventAction::Start, None).unwrap();
    worker
        .transition(&ev, EventAction::Resolve, Some("Replaced the bulb"))
        .unwrap();
    assert!(matches!(
        worker.transition(&ev, EventAction::Verify, None),
        Err(Error::Forbidden(_))
    ));

    // The supervisor sees the worker's event after exchanging changes, and verifies and closes it.
    let sup = open(dir.path(), "zhao", Role::Supervisor, "c1");
    exchange(&worker, &sup);
    assert!(matches!(
        sup.transition(&ev, EventAction::Return, None),
        Err(Error::Refused {
            reason: Reason::InvalidValue,
            ..
        })
    ));
    sup.transition(&ev, EventAction::Verify, None).unwrap();
    sup.transition(&ev, EventAction::Close, Some("done"))
        .unwrap();
    assert!(
        sup.overdue_events(10).unwrap().is_empty(),
        "closed events are not overdue"
    );
    let timeline: Vec<String> = sup
        .get(&ev)
        .unwrap()
        .timeline
        .into_iter()
        .map(|t| t.action)
        .collect();
    assert_eq!(
        timeline,
        ["report", "assign", "start", "resolve", "verify", "close"]
    );

    // Escalation moves responsibility up; the grid worker can no longer act on it; handing down returns it.
    let ev2 = worker
        .create(NewRecord::new(Kind::Event, "g1").field("title", "Dispute over parking"))
        .unwrap();
    worker
        .transition(&ev2, EventAction::Escalate, Some("needs the community"))
        .unwrap();
    let e = worker.get(&ev2).unwrap();
    assert_eq!(e.responsible.as_deref(), Some("c1"));
    assert!(matches!(
        worker.transition(
            &ev2,
            EventAction::Assign {
                assignee: "wang".into()
            },
            None
        ),
        Err(Error::OutOfScope(_))
    ));
    exchange(&worker, &sup);
    assert_eq!(
        sup.list(&ListQuery::new(Kind::Event).area("c1").only_this_area())
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        matches!(
            sup.transition(&ev2, EventAction::HandDown { area: "g2".into() }, None),
            Err(Error::InvalidTransition(_))
        ),
        "g2 does not contain the event's home"
    );
    sup.transition(
        &ev2,
        EventAction::HandDown { area: "g1".into() },
        Some("grid can handle it"),
    )
    .unwrap();
    assert_eq!(sup.get(&ev2).unwrap().responsible.as_deref(), Some("g1"));
}

#[test]
fn visits_are_reviewed_only_by_a_supervisor_of_the_area() {
    let dir = tempfile::tempdir().unwrap();
    let w = open(dir.path(), "wang", Role::Worker, "g1");
    let person = w
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Zhang San"))
        .unwrap();
    let v = w
        .start_visit(
            "g1",
            "weekly check",
            Some(GeoPoint {
                lat: 31.23,
                lon: 121.47,
                accuracy: 12.0,
            }),
        )
        .unwrap();
    w.add_visited(&v, &person).unwrap();
    w.answer_checklist(&v, "smoke alarm works", "yes").unwrap();
    let photo = w
        .add_attachment(
            &v,
            "stairs.jpg",
            "image/jpeg",
            b"\xff\xd8 not really a jpeg",
        )
        .unwrap();
    w.attach_to_visit(&v, &photo).unwrap();
    w.finish_visit(&v, Some("All well.")).unwrap();
    assert!(matches!(
        w.finish_visit(&v, None),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        w.review_visit(&v, ReviewState::Approved, None),
        Err(Error::Forbidden(_))
    ));
    let rec = w.get(&v).unwrap();
    assert_eq!(rec.visited, vec![person]);
    assert_eq!(rec.checklist["smoke alarm works"], "yes");
    assert_eq!(rec.attachments, vec![photo.clone()]);
    assert_eq!(
        w.attachment(&photo.sha256).unwrap().unwrap(),
        b"\xff\xd8 not really a jpeg"
    );

    // Another grid's supervisor does not even keep the visit: it is outside its scope.
    let other = open(dir.path(), "chen", Role::Supervisor, "g2");
    exchange(&w, &other);
    assert!(matches!(
        other.review_visit(&v, ReviewState::Approved, None),
        Err(Error::UnknownRecord(_))
    ));
    let sup = open(dir.path(), "zhao", Role::Supervisor, "c1");
    exchange(&w, &sup);
    assert_eq!(sup.review_queue(10).unwrap().len(), 1);
    assert!(matches!(
        sup.review_visit(&v, ReviewState::Returned, None),
        Err(Error::Refused {
            reason: Reason::InvalidValue,
            ..
        })
    ));
    // A visit log is its worker's account: the supervisor reviews it but does not edit it.
    let before = sup.export_document(&v).unwrap();
    assert!(matches!(
        sup.answer_checklist(&v, "smoke alarm works", "no"),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        sup.update(&v, Update::new().notes("rewritten")),
        Err(Error::Forbidden(_))
    ));
    assert_eq!(sup.export_document(&v).unwrap(), before, "nothing written");
    sup.review_visit(&v, ReviewState::Returned, Some("Add a photo of the alarm"))
        .unwrap();
    assert!(sup.review_queue(10).unwrap().is_empty());
    exchange(&sup, &w);
    let rec = w.get(&v).unwrap();
    assert_eq!(rec.field("review_state"), Some("returned"));
    assert_eq!(
        rec.field("review_comment"),
        Some("Add a photo of the alarm")
    );

    // Nobody reviews their own visit, and only a finished visit is reviewed.
    let own = sup.start_visit("g1", "handover walk", None).unwrap();
    assert!(matches!(
        sup.review_visit(&own, ReviewState::Approved, None),
        Err(Error::Forbidden(_))
    ));
    let unfinished = w.start_visit("g1", "still walking", None).unwrap();
    exchange(&w, &sup);
    assert!(matches!(
        sup.review_visit(&unfinished, ReviewState::Approved, None),
        Err(Error::InvalidTransition(_))
    ));
    sup.finish_visit(&own, None).unwrap();
    assert!(matches!(
        sup.review_visit(&own, ReviewState::Approved, None),
        Err(Error::Forbidden(_))
    ));
    assert_eq!(
        sup.get(&own).unwrap().field("review_state"),
        Some("pending")
    );
}

#[test]
fn concurrent_edits_merge_and_conflicts_resolve_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "wang", Role::Worker, "g1");
    let b = open(dir.path(), "li", Role::Worker, "g1");
    let p = a
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "Zhou Min")
                .notes("Lives on floor 3."),
        )
        .unwrap();
    exchange(&a, &b);
    a.update(
        &p,
        Update::new()
            .set("phone", "13800000001")
            .notes("Lives on floor 3. Has a cat."),
    )
    .unwrap();
    b.update(
        &p,
        Update::new()
            .set("sex", "female")
            .notes("Note: Lives on floor 3."),
    )
    .unwrap();
    a.update(&p, Update::new().set("birth_date", "1950-01-01"))
        .unwrap();
    b.update(&p, Update::new().set("birth_date", "1951-01-01"))
        .unwrap();
    exchange(&a, &b);
    exchange(&b, &a);
    let (ra, rb) = (a.get(&p).unwrap(), b.get(&p).unwrap());
    assert_eq!(ra, rb);
    assert_eq!(ra.field("phone"), Some("13800000001"));
    assert_eq!(ra.field("sex"), Some("female"));
    assert_eq!(
        ra.notes, "Note: Lives on floor 3. Has a cat.",
        "text edits merge character-wise"
    );
    for s in [&a, &b] {
        let conflicts = s.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1);
        let c = &conflicts[0];
        assert_eq!(c.field, "birth_date");
        let mut values: Vec<(&str, &str)> = c
            .values
            .iter()
            .map(|v| (v.value.as_str(), v.user.as_str()))
            .collect();
        values.sort();
        assert_eq!(values, [("1950-01-01", "wang"), ("1951-01-01", "li")]);
        assert_eq!(c.values.iter().filter(|v| v.winner).count(), 1);
    }
    b.resolve_conflict(&p, "birth_date", "1951-01-01").unwrap();
    assert!(b.conflicts().unwrap().is_empty());
    exchange(&b, &a);
    assert!(a.conflicts().unwrap().is_empty(), "resolution syncs");
    assert_eq!(a.get(&p).unwrap().field("birth_date"), Some("1951-01-01"));
    assert_eq!(a.heads(&p).unwrap(), b.heads(&p).unwrap());
}

#[test]
fn apply_is_idempotent_and_holds_changes_until_their_dependencies_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "wang", Role::Worker, "g1");
    let b = open(dir.path(), "li", Role::Worker, "g1");
    let p = a
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Sun Li"))
        .unwrap();
    a.update(&p, Update::new().set("phone", "13900000000"))
        .unwrap();
    a.update(&p, Update::new().set("sex", "female")).unwrap();
    let mut chunks = a.all_changes().unwrap();
    chunks.reverse();
    // Newest first: the first two wait for the create.
    let r = b.apply_remote(&chunks[..2]).unwrap();
    assert_eq!(r.held, 2);
    assert!(matches!(b.get(&p), Err(Error::UnknownRecord(_))));
    assert_eq!(b.held_len().unwrap(), 2);
    // Survives a reopen: held changes are stored, not only in memory.
    drop(b);
    let b = open(dir.path(), "li", Role::Worker, "g1");
    b.apply_remote(&chunks[2..]).unwrap();
    assert_eq!(b.held_len().unwrap(), 0);
    assert_eq!(b.get(&p).unwrap(), a.get(&p).unwrap());
    let again = b.apply_remote(&chunks).unwrap();
    assert_eq!(again.records_changed, 0, "duplicates change nothing");
    // Garbage is quarantined, the good chunk beside it is applied.
    a.update(&p, Update::new().set("phone", "13911111111"))
        .unwrap();
    let newest = a.outbox(100).unwrap().pop().unwrap();
    let r = b
        .apply_remote(&[
            RemoteChunk {
                record_id: p.clone(),
                bytes: b"\x85\x6f\x4a\x83garbage".to_vec(),
            },
            RemoteChunk {
                record_id: p.clone(),
                bytes: newest.bytes,
            },
        ])
        .unwrap();
    assert_eq!(r.malformed, 1);
    assert_eq!(b.get(&p).unwrap().field("phone"), Some("13911111111"));
}

#[test]
fn exported_documents_load_in_plain_automerge() {
    use automerge::ReadDoc;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let p = s
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Gao Yan"))
        .unwrap();
    let doc = automerge::Automerge::load(&s.export_document(&p).unwrap()).unwrap();
    assert_eq!(
        gridwork_core::doc::root_str(&doc, "kind").as_deref(),
        Some("person")
    );
    let f = gridwork_core::doc::root_obj(&doc, "f").unwrap();
    assert_eq!(
        doc.get(&f, "name").unwrap().unwrap().0.to_string(),
        "\"Gao Yan\""
    );
}

#[test]
fn disagreeing_offline_transitions_both_stay_and_surface_as_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let sup = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let sup2 = open(dir.path(), "qian", Role::Supervisor, "s1");
    let ev = resolved_event(&sup, "Noise complaint");
    exchange(&sup, &sup2);
    // Offline: one verifies, the other returns it.
    sup.transition(&ev, EventAction::Verify, None).unwrap();
    sup2.transition(&ev, EventAction::Return, Some("Neighbours still complain"))
        .unwrap();
    exchange(&sup, &sup2);
    exchange(&sup2, &sup);
    for s in [&sup, &sup2] {
        let e = s.get(&ev).unwrap();
        let actions: Vec<&str> = e.timeline.iter().map(|t| t.action.as_str()).collect();
        assert!(
            actions.contains(&"verify") && actions.contains(&"return"),
            "{actions:?}"
        );
        let c = s.conflicts().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "status");
        let mut values: Vec<&str> = c[0].values.iter().map(|v| v.value.as_str()).collect();
        values.sort();
        assert_eq!(values, ["returned", "verified"]);
    }
    // Resolving picks one of the concurrent statuses; a status that was not one of them is refused.
    assert!(matches!(
        sup.resolve_conflict(&ev, "status", "closed"),
        Err(Error::InvalidInput(_))
    ));
    sup.resolve_conflict(&ev, "status", "returned").unwrap();
    exchange(&sup, &sup2);
    assert!(sup2.conflicts().unwrap().is_empty());
    assert_eq!(sup2.get(&ev).unwrap().field("status"), Some("returned"));
}

/// History says what each change did: the old and new value of every field, attribute, tag and note
/// it touched, read from the document before and after it, with who and when. A concurrent edit from
/// another device shows the value its author replaced, as that author saw it.
#[test]
fn history_shows_old_and_new_values_with_who_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let wang = open(dir.path(), "wang", Role::Worker, "g1");
    let p = wang
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王小明")
                .field("phone", "13800138000")
                .tag("lives alone"),
        )
        .unwrap();
    wang.update(
        &p,
        Update::new()
            .set("phone", "13800138001")
            .set("sex", "male")
            .attr("hukou", "local")
            .add_tag("needs care")
            .notes("Knock loudly."),
    )
    .unwrap();
    wang.update(&p, Update::new().set("sex", "")).unwrap();
    let li = open(dir.path(), "li", Role::Worker, "g1");
    exchange(&wang, &li);
    li.update(&p, Update::new().set("phone", "13900000000"))
        .unwrap();
    exchange(&li, &wang);

    let change = |field: &str, old: Option<&str>, new: Option<&str>| FieldChange {
        field: field.into(),
        old: old.map(str::to_owned),
        new: new.map(str::to_owned),
    };
    let h = wang.history(&p).unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(
        (h[0].action.as_str(), h[0].user.as_str()),
        ("create", "wang")
    );
    assert!(h[0].changes.contains(&change("name", None, Some("王小明"))));
    assert!(h[0]
        .changes
        .contains(&change("tags", None, Some("lives alone"))));
    assert!(h[0].changes.contains(&change("area", None, Some("g1"))));
    assert_eq!(
        h[1].changes,
        [
            change("phone", Some("13800138000"), Some("13800138001")),
            change("sex", None, Some("male")),
            change("attrs.hukou", None, Some("local")),
            change("tags", Some("lives alone"), Some("lives alone, needs care")),
            change("notes", None, Some("Knock loudly.")),
        ]
    );
    assert_eq!(h[2].changes, [change("sex", Some("male"), None)]);
    assert_eq!(
        (h[3].user.as_str(), h[3].device.as_str()),
        ("li", "li-phone")
    );
    assert_eq!(
        h[3].changes,
        [change("phone", Some("13800138001"), Some("13900000000"))]
    );
    assert!(h.iter().all(|e| e.time > 1_700_000_000));
}

/// A phone or ID-document number typed the way people type them finds its record exactly, whether
/// with spaces, dashes, a country code or a lower-case check letter; part of a number does not.
#[test]
fn search_finds_exact_phone_and_id_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let p = s
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王小明")
                .field("phone", "138-0013-8000")
                .field("id_number", "11010519491231002X"),
        )
        .unwrap();
    let org = s
        .create(
            NewRecord::new(Kind::Organisation, "g1")
                .field("name", "Residents' committee")
                .field("contact_phone", "010 6552 9988"),
        )
        .unwrap();
    let found = |q: &str| -> Vec<String> {
        s.search(q, None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    for q in [
        "13800138000",
        "138 0013 8000",
        "+86 138-0013-8000",
        "11010519491231002x",
    ] {
        assert_eq!(found(q), [p.clone()], "{q}");
    }
    assert_eq!(found("(010) 6552-9988"), [org.clone()]);
    assert!(
        found("1380013").is_empty(),
        "part of a number finds nothing"
    );
    assert!(s
        .search("13800138000", Some(Kind::Place), 10)
        .unwrap()
        .is_empty());
    // A changed number is found by its new value only; a deleted record not at all.
    s.update(&p, Update::new().set("phone", "13900000000"))
        .unwrap();
    assert!(found("13800138000").is_empty());
    assert_eq!(found("139 0000 0000"), [p.clone()]);
    assert_eq!(
        found("11010519491231002X"),
        [p.clone()],
        "the unchanged ID number"
    );
    s.delete(&p, None).unwrap();
    assert!(found("13900000000").is_empty());
    // Names are still found as before.
    assert_eq!(found("committee"), [org]);
}

/// An edit writes only the side rows (links, tags, search numbers) that changed, each by its key: what
/// it leaves is exactly what writing every record's rows afresh from its document gives, also where
/// two people share a number.
#[test]
fn edits_leave_the_side_rows_a_rebuild_from_the_documents_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let places: Vec<String> = (0..3)
        .map(|i| {
            s.create(
                NewRecord::new(Kind::Place, "g1")
                    .field("category", "unit")
                    .field("name", format!("Unit {i}")),
            )
            .unwrap()
        })
        .collect();
    let people: Vec<String> = (0..4)
        .map(|i| {
            s.create(
                NewRecord::new(Kind::Person, "g1")
                    .field("name", format!("住户{i}"))
                    .field("phone", format!("1380000000{i}"))
                    .field("id_number", format!("11010519491231000{i}")),
            )
            .unwrap()
        })
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut linked = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let p = people[next(people.len())].clone();
        let place = places[next(places.len())].clone();
        match next(7) {
            // Few values, so that people share numbers now and then.
            0 => s.update(
                &p,
                Update::new().set("phone", format!("1390000000{}", next(6))),
            ),
            1 => s.update(&p, Update::new().set("phone", "")),
            2 => s.update(
                &p,
                Update::new().set("id_number", format!("11010519491231000{}", next(6))),
            ),
            3 => s.update(&p, Update::new().add_tag(format!("tag {}", next(4)))),
            4 => s.update(&p, Update::new().remove_tag(format!("tag {}", next(4)))),
            5 if !linked.contains(&(p.clone(), place.clone())) => {
                linked.insert((p.clone(), place.clone()));
                s.link(&p, LinkType::LivesAt, &place)
            }
            _ => {
                linked.remove(&(p.clone(), place.clone()));
                s.unlink(&p, LinkType::LivesAt, &place)
            }
        }
        .unwrap();
    }
    let conn = gridwork_core::store::open_connection(
        &dir.path().join("wang.db"),
        &StoreKey::Raw(KEY),
        Durability::Normal,
    )
    .unwrap();
    let dump = || -> Vec<Vec<String>> {
        ["links", "tags", "conflicts", "numbers", "visited"]
            .iter()
            .map(|table| {
                let mut stmt = conn
                    .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3"))
                    .or_else(|_| conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2")))
                    .unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        let mut row = Vec::new();
                        for i in 0..n {
                            row.push(format!("{:?}", r.get_ref(i)?));
                        }
                        Ok(row.join(" | "))
                    })
                    .unwrap();
                rows.collect::<rusqlite::Result<Vec<String>>>().unwrap()
            })
            .collect()
    };
    // Rows written before stores kept views have no view to compare with: their numbers are read
    // from the projection row.
    for (i, p) in people.iter().enumerate() {
        s.update(p, Update::new().set("phone", format!("1360000000{i}")))
            .unwrap();
    }
    conn.execute("UPDATE records SET view = NULL", []).unwrap();
    for (i, p) in people.iter().enumerate() {
        s.update(
            p,
            Update::new().set("phone", format!("1370000000{}", i % 2)),
        )
        .unwrap();
    }
    let written = dump();
    let shared = written[3].len() - {
        let mut numbers: Vec<&str> = written[3]
            .iter()
            .map(|r| r.split(" | ").next().unwrap())
            .collect();
        numbers.dedup();
        numbers.len()
    };
    assert!(
        !written[0].is_empty() && !written[1].is_empty() && shared > 0,
        "the edits left links, tags and a shared number: {written:?}"
    );
    s.rebuild_projection().unwrap();
    assert_eq!(dump(), written);
}

/// A grid's list of people reads in pinyin order, Latin names in the same alphabet, page after page.
#[test]
fn lists_sort_chinese_names_by_pinyin() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    for name in [
        "张伟",
        "Anna Smith",
        "王芳",
        "李华",
        "阿兰",
        "Zoe",
        "陈静",
        "bob",
    ] {
        s.create(NewRecord::new(Kind::Person, "g1").field("name", name))
            .unwrap();
    }
    let mut q = ListQuery::new(Kind::Person);
    q.limit = 3;
    let mut names = Vec::new();
    loop {
        let page = s.list(&q).unwrap();
        names.extend(page.items.into_iter().map(|r| r.title));
        match page.next_offset {
            Some(next) => q.offset = next,
            None => break,
        }
    }
    assert_eq!(
        names,
        [
            "阿兰",
            "Anna Smith",
            "bob",
            "陈静",
            "李华",
            "王芳",
            "张伟",
            "Zoe"
        ]
    );
}

/// A household moves as one: the place and the people living there (by link or by their home field);
/// links that now cross grids are reported; a user who may not move all of it moves none of it.
#[test]
fn a_household_moves_with_its_residents() {
    let dir = tempfile::tempdir().unwrap();
    let zhao = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let home = zhao
        .create(NewRecord::new(Kind::Place, "g1").field("name", "3栋201室"))
        .unwrap();
    let linked = zhao
        .create(NewRecord::new(Kind::Person, "g1").field("name", "王建国"))
        .unwrap();
    zhao.link(&linked, LinkType::LivesAt, &home).unwrap();
    let by_field = zhao
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王丽")
                .field("home_place", home.clone()),
        )
        .unwrap();
    let neighbour = zhao
        .create(NewRecord::new(Kind::Person, "g1").field("name", "张伟"))
        .unwrap();
    let club = zhao
        .create(NewRecord::new(Kind::Organisation, "g1").field("name", "Chess club"))
        .unwrap();
    zhao.link(&linked, LinkType::MemberOf, &club).unwrap();

    // A worker of g1 may not move records out of the grid: nothing moves.
    let wang = open(dir.path(), "wang", Role::Worker, "g1");
    exchange(&zhao, &wang);
    let refused = wang.move_household(&home, "g2");
    assert!(
        matches!(
            refused,
            Err(Error::OutOfScope(_) | Error::Forbidden(_) | Error::Refused { .. })
        ),
        "{refused:?}"
    );
    for id in [&home, &linked, &by_field] {
        assert_eq!(wang.get(id).unwrap().area, "g1");
    }

    let moved = zhao.move_household(&home, "g2").unwrap();
    let mut expected = vec![linked.clone(), by_field.clone()];
    expected.sort();
    assert_eq!(moved.moved[0], home);
    assert_eq!(moved.moved[1..], expected[..]);
    for id in [&home, &linked, &by_field] {
        assert_eq!(zhao.get(id).unwrap().area, "g2");
    }
    assert_eq!(zhao.get(&neighbour).unwrap().area, "g1");
    assert_eq!(
        moved.crossing_links,
        [LinkEdge {
            source: linked.clone(),
            link_type: LinkType::MemberOf,
            target: club
        }]
    );
    assert!(matches!(
        zhao.move_household(&linked, "g2"),
        Err(Error::WrongKind { .. }) | Err(Error::InvalidInput(_))
    ));
}

/// The Automerge chunks of a record's stored document, as (chunk type, length) pairs: 4 magic bytes, a
/// 4-byte checksum, the type, the length of the contents (LEB128), the contents.
fn stored_chunks(path: &std::path::Path, id: &str) -> Vec<(u8, usize)> {
    let conn = gridwork_core::store::open_connection(path, &StoreKey::Raw(KEY), Durability::Normal)
        .unwrap();
    let bytes: Vec<u8> = conn
        .query_row("SELECT doc FROM records WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    let mut chunks = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        assert_eq!(rest[..4], [0x85, 0x6f, 0x4a, 0x83], "a chunk starts here");
        let (mut len, mut shift, mut at) = (0usize, 0, 9);
        loop {
            len |= usize::from(rest[at] & 0x7f) << shift;
            shift += 7;
            at += 1;
            if rest[at - 1] & 0x80 == 0 {
                break;
            }
        }
        chunks.push((rest[8], at + len));
        rest = &rest[at + len..];
    }
    chunks
}

/// A one-field edit stores its change after the stored document instead of saving the whole document
/// again, up to a bound, then the whole document again; once the edits are pushed the record rests as
/// one document again. Whatever the stored bytes hold, the record reads the same after the store is
/// opened again, and another device that takes the changes has the same record.
#[test]
fn edits_append_their_changes_to_the_stored_document_until_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wang.db");
    let wang = open(dir.path(), "wang", Role::Worker, "g1");
    let id = wang
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Zhao Lei"))
        .unwrap();
    let made = stored_chunks(&path, &id);
    assert_eq!(made.len(), 1, "a new record is one document chunk");
    assert_eq!(made[0].0, 0);
    let (mut appended, mut compacted) = (0, 0);
    let mut wang = wang;
    for i in 0..30 {
        wang.update(&id, Update::new().set("phone", format!("1380000{i:04}")))
            .unwrap();
        let chunks = stored_chunks(&path, &id);
        assert_eq!(chunks[0].0, 0, "the stored bytes start with a document");
        assert!(
            chunks[1..].iter().all(|(kind, _)| *kind != 0),
            "then changes"
        );
        assert!(
            chunks.len() <= 9,
            "at most 8 changes appended: {}",
            chunks.len()
        );
        let tail: usize = chunks[1..].iter().map(|(_, len)| len).sum();
        assert!(
            tail <= chunks[0].1,
            "appended changes weigh no more than the document"
        );
        match chunks.len() {
            1 => compacted += 1,
            _ => appended += 1,
        }
        if i % 7 == 3 {
            // Open again: the document is loaded from the stored bytes, not the cache.
            let before = wang.get(&id).unwrap();
            drop(wang);
            wang = Store::open(StoreOptions::new(&path, StoreKey::Raw(KEY))).unwrap();
            assert_eq!(wang.get(&id).unwrap(), before);
        }
    }
    assert!(appended >= 20, "most edits append: {appended}");
    assert!(
        compacted >= 2,
        "the document is saved whole again: {compacted}"
    );
    assert_eq!(wang.get(&id).unwrap().field("phone"), Some("13800000029"));
    assert_eq!(wang.history(&id).unwrap().len(), 31);

    // Pushed: the record rests as one document.
    for phone in ["13911112222", "13911113333"] {
        wang.update(&id, Update::new().set("phone", phone)).unwrap();
    }
    assert!(
        stored_chunks(&path, &id).len() >= 2,
        "one of two edits appends"
    );
    let seqs: Vec<i64> = wang.outbox(1000).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs.len(), 33);
    wang.mark_pushed(&seqs).unwrap();
    assert_eq!(
        stored_chunks(&path, &id),
        vec![(0, stored_chunks(&path, &id)[0].1)]
    );
    let li = open(dir.path(), "li", Role::Worker, "g1");
    exchange(&wang, &li);
    drop((wang, li));
    let wang = Store::open(StoreOptions::new(&path, StoreKey::Raw(KEY))).unwrap();
    let li = Store::open(StoreOptions::new(
        dir.path().join("li.db"),
        StoreKey::Raw(KEY),
    ))
    .unwrap();
    assert_eq!(li.get(&id).unwrap(), wang.get(&id).unwrap());
    assert_eq!(wang.history(&id).unwrap().len(), 33);
}
