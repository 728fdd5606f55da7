//! Follow-up schedules end to end on a real relay process: an operator defines a schedule for a
//! community, the grid worker's and the supervisor's devices receive it at sync, residents tagged
//! for it are due a visit, a finished visit that includes one moves its due date by the visit's end
//! time (on both devices, whenever the visit synced), and changing the schedule or the record's tags
//! moves what is due.
use gridwork_core::*;
use gridwork_tests::*;

const DAY: i64 = 86_400;

fn due(store: &Store, now: i64) -> Vec<Followup> {
    store
        .followups(&FollowupQuery {
            now: Some(now),
            utc_offset_minutes: 480,
            ..Default::default()
        })
        .unwrap()
}

fn ids(f: &[Followup]) -> Vec<(&str, &str)> {
    f.iter()
        .map(|f| (f.schedule_id.as_str(), f.title.as_str()))
        .collect()
}

#[test]
fn schedules_reach_devices_and_visits_fulfil_them() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.add_weekly_alone_schedule();
    // Another community's schedule never reaches these devices.
    relay.add_area_tree(&OTHER_DISTRICT);
    relay.admin(&[
        "schedule",
        "add",
        "oak",
        "--area",
        "c9",
        "--kind",
        "person",
        "--every",
        "monthly",
        "--name",
        "Oak residents",
    ]);
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    wang.sync();
    let schedules = wang.store.schedules().unwrap();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    assert_eq!(schedules[0].every, Every::Days(7));
    assert_eq!(schedules[0].tag.as_deref(), Some("lives alone"));

    let alone = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "Li Hua")
                .tag("lives alone"),
        )
        .unwrap();
    wang.store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Wang Fang"))
        .unwrap();
    let now = time::now_secs();
    // Never visited: due now.
    let f = due(&wang.store, now);
    assert_eq!(ids(&f), [("alone", "Li Hua")]);
    assert_eq!(
        (f[0].state, f[0].due_at.as_deref()),
        (DueState::Overdue, None)
    );
    assert_eq!(f[0].area, "g1");

    // A finished visit that includes her: due a week after it ended.
    let visit = wang.store.start_visit("g1", "weekly check", None).unwrap();
    wang.store.add_visited(&visit, &alone).unwrap();
    assert_eq!(due(&wang.store, now)[0].due_at, None, "not finished yet");
    wang.store.finish_visit(&visit, Some("all well")).unwrap();
    let f = due(&wang.store, now);
    let ended = time::parse_iso(f[0].last_visit.as_deref().unwrap()).unwrap();
    assert!((ended - now).abs() < 120, "the visit's end time");
    assert_eq!(
        f[0].due_at.as_deref(),
        Some(time::iso_from_secs(ended + 7 * DAY).as_str())
    );
    assert_eq!(f[0].state, DueState::Later);
    assert_eq!(
        due(&wang.store, ended + 6 * DAY)[0].state,
        DueState::ThisWeek
    );
    assert_eq!(due(&wang.store, ended + 7 * DAY)[0].state, DueState::Today);
    assert_eq!(
        due(&wang.store, ended + 9 * DAY)[0].state,
        DueState::Overdue
    );
    // Lists by state and by area.
    let overdue = wang
        .store
        .followups(&FollowupQuery {
            now: Some(ended + 9 * DAY),
            states: vec![DueState::Overdue],
            utc_offset_minutes: 480,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(overdue.len(), 1);
    let in_area = |store: &Store, area: &str| {
        store.followups(&FollowupQuery {
            area: Some(area.into()),
            ..Default::default()
        })
    };
    assert_eq!(in_area(&wang.store, "g1").unwrap().len(), 1);
    // g2 is not in the worker's tree: a typed error, not an empty list.
    assert!(matches!(
        in_area(&wang.store, "g2"),
        Err(Error::UnknownArea(_))
    ));

    // The supervisor's device sees the same, by the visit's time, after the worker synced.
    wang.sync();
    zhou.sync();
    let z = due(&zhou.store, now);
    assert_eq!(ids(&z), [("alone", "Li Hua")]);
    assert_eq!(z[0].last_visit, f[0].last_visit);
    assert_eq!(z[0].due_at, f[0].due_at);
    assert_eq!(in_area(&zhou.store, "g1").unwrap().len(), 1);
    assert!(in_area(&zhou.store, "g2").unwrap().is_empty());

    // The operator makes it every three days: the due date follows at the next sync.
    relay.admin(&[
        "schedule",
        "add",
        "alone",
        "--area",
        "c1",
        "--kind",
        "person",
        "--tag",
        "lives alone",
        "--every",
        "3d",
        "--name",
        "Living alone: every three days",
    ]);
    zhou.sync();
    let z = due(&zhou.store, now);
    assert_eq!(z[0].schedule_name, "Living alone: every three days");
    assert_eq!(
        z[0].due_at.as_deref(),
        Some(time::iso_from_secs(ended + 3 * DAY).as_str())
    );

    // Her tag goes: nothing is due for her.
    wang.store
        .update(&alone, Update::new().remove_tag("lives alone"))
        .unwrap();
    assert!(due(&wang.store, now).is_empty());
    wang.sync();
    zhou.sync();
    assert!(due(&zhou.store, now).is_empty());

    // The schedule goes: the devices drop it.
    relay.admin(&["schedule", "remove", "alone"]);
    wang.sync();
    assert!(wang.store.schedules().unwrap().is_empty());
}

/// A hazard report is re-checked a month after it was closed: due then, done by a visit that includes
/// it after the close; another category and open events are not due.
#[test]
fn closed_events_are_due_a_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.admin(&[
        "schedule",
        "add",
        "hazard-recheck",
        "--area",
        "c1",
        "--kind",
        "event",
        "--category",
        "hazard_report",
        "--every",
        "1m",
        "--name",
        "Hazards: re-check a month after closing",
    ]);
    // A category that is not an event category, or a category on people: refused by the relay.
    for bad in [
        ["--kind", "event", "--category", "fireworks"],
        ["--kind", "person", "--category", "hazard_report"],
    ] {
        let out = relay
            .admin_command(
                &[
                    &[
                        "schedule", "add", "bad", "--area", "c1", "--every", "1m", "--name", "Bad",
                    ][..],
                    &bad,
                ]
                .concat(),
            )
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("category"));
    }
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    wang.sync();
    let report = |title: &str, category: &str| {
        wang.store
            .create(
                NewRecord::new(Kind::Event, "g1")
                    .field("title", title)
                    .field("category", category),
            )
            .unwrap()
    };
    let stair = report("Broken stair light", "hazard_report");
    let noise = report("Noise at night", "dispute");
    // Still open: not due a re-check.
    report("Loose railing", "hazard_report");
    let now = time::now_secs();
    assert!(due(&wang.store, now).is_empty(), "nothing is closed yet");
    for ev in [&stair, &noise] {
        wang.store
            .transition(
                ev,
                EventAction::Assign {
                    assignee: "wang".into(),
                },
                None,
            )
            .unwrap();
        wang.store.transition(ev, EventAction::Start, None).unwrap();
        wang.store
            .transition(ev, EventAction::Resolve, Some("fixed"))
            .unwrap();
    }
    wang.sync();
    zhou.sync();
    for ev in [&stair, &noise] {
        zhou.store
            .transition(ev, EventAction::Verify, None)
            .unwrap();
        zhou.store
            .transition(ev, EventAction::Close, Some("done"))
            .unwrap();
    }
    zhou.sync();
    wang.sync();
    let f = due(&wang.store, now);
    assert_eq!(ids(&f), [("hazard-recheck", "Broken stair light")], "{f:?}");
    let closed = time::parse_iso(
        &wang
            .store
            .get(&stair)
            .unwrap()
            .timeline
            .iter()
            .rev()
            .find(|t| t.action == "close")
            .unwrap()
            .at,
    )
    .unwrap();
    assert_eq!(
        f[0].due_at.as_deref(),
        Some(time::iso_from_secs(time::add_months(closed, 1)).as_str())
    );
    assert_eq!(f[0].state, DueState::Later);
    assert_eq!(due(&zhou.store, now + 40 * DAY)[0].state, DueState::Overdue);
    // The re-check visit: done, on both devices.
    let visit = wang.store.start_visit("g1", "re-check", None).unwrap();
    wang.store.add_visited(&visit, &stair).unwrap();
    wang.store
        .finish_visit(&visit, Some("light works"))
        .unwrap();
    assert!(due(&wang.store, now).is_empty());
    wang.sync();
    zhou.sync();
    assert!(due(&zhou.store, now + 40 * DAY).is_empty());
}

/// "New for me" after a sync: an event the supervisor handed down to the worker's grid and assigned to
/// the worker, the worker's visit returned with a comment, a follow-up due; marked seen, they stay
/// away, and a later step brings only itself back.
#[test]
fn new_for_me_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.add_weekly_alone_schedule();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    for d in [&wang, &li, &zhou] {
        d.sync();
    }
    let inbox = |d: &Device| d.store.new_for_me(None, 480).unwrap();
    assert!(inbox(&wang).is_empty());

    let event = li
        .store
        .create(
            NewRecord::new(Kind::Event, "g1")
                .field("category", "hazard_report")
                .field("title", "Stairwell light broken"),
        )
        .unwrap();
    li.store
        .transition(&event, EventAction::Escalate, Some("needs an electrician"))
        .unwrap();
    let visit = wang.store.start_visit("g1", "weekly check", None).unwrap();
    wang.store.finish_visit(&visit, None).unwrap();
    for d in [&li, &wang, &zhou] {
        d.sync();
    }
    zhou.store
        .transition(
            &event,
            EventAction::HandDown { area: "g1".into() },
            Some("electrician booked for Tuesday"),
        )
        .unwrap();
    zhou.store
        .transition(
            &event,
            EventAction::Assign {
                assignee: "wang".into(),
            },
            None,
        )
        .unwrap();
    zhou.store
        .review_visit(&visit, ReviewState::Returned, Some("add the meter photo"))
        .unwrap();
    zhou.sync();
    wang.sync();

    let items = inbox(&wang);
    let what: Vec<(NewForMeKind, &str)> = items
        .iter()
        .map(|i| (i.what, i.record_id.as_str()))
        .collect();
    for expected in [
        (NewForMeKind::Assigned, event.as_str()),
        (NewForMeKind::HandedDown, event.as_str()),
        (NewForMeKind::VisitReturned, visit.as_str()),
    ] {
        assert!(what.contains(&expected), "{expected:?} in {what:?}");
    }
    assert_eq!(items.len(), 3, "{what:?}");
    let returned = items
        .iter()
        .find(|i| i.what == NewForMeKind::VisitReturned)
        .unwrap();
    assert_eq!(returned.comment.as_deref(), Some("add the meter photo"));
    assert_eq!(returned.by.as_deref(), Some("zhou"));
    let handed = items
        .iter()
        .find(|i| i.what == NewForMeKind::HandedDown)
        .unwrap();
    assert_eq!(
        handed.comment.as_deref(),
        Some("electrician booked for Tuesday")
    );
    // The supervisor's own steps are not new for the supervisor.
    assert!(inbox(&zhou).is_empty(), "{:?}", inbox(&zhou));

    let keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
    wang.store.mark_new_for_me_seen(&keys).unwrap();
    assert!(inbox(&wang).is_empty());
    // A record under a schedule, never visited: due now, new until seen.
    let alone = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "Li Hua")
                .tag("lives alone"),
        )
        .unwrap();
    let items = inbox(&wang);
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].what, items[0].record_id.as_str()),
        (NewForMeKind::FollowupDue, alone.as_str())
    );
    assert!(matches!(
        wang.store.mark_new_for_me_seen(&["nonsense".into()]),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_supervisor_lists_follow_ups_per_worker_and_grid() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.add_weekly_alone_schedule();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g2");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    for (d, area, name) in [(&wang, "g1", "Li Hua"), (&li, "g2", "Zhang Wei")] {
        d.sync();
        d.store
            .create(
                NewRecord::new(Kind::Person, area)
                    .field("name", name)
                    .tag("lives alone"),
            )
            .unwrap();
        d.sync();
    }
    zhou.sync();
    let now = time::now_secs();
    let of = |worker: Option<&str>| -> Vec<(String, Vec<String>)> {
        zhou.store
            .followups(&FollowupQuery {
                now: Some(now),
                utc_offset_minutes: 480,
                worker: worker.map(str::to_owned),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|f| (f.title, f.workers))
            .collect()
    };
    assert_eq!(
        of(None),
        [
            ("Li Hua".to_owned(), vec!["wang".to_owned()]),
            ("Zhang Wei".to_owned(), vec!["li".to_owned()])
        ]
    );
    assert_eq!(
        of(Some("li")),
        [("Zhang Wei".to_owned(), vec!["li".to_owned()])]
    );
    assert!(of(Some("nobody")).is_empty());
    // A second worker joins grid 1: the supervisor's device learns it at the next sync.
    relay.add_device("chen", Role::Worker, "g1", "chen-phone");
    zhou.sync();
    assert_eq!(
        of(Some("chen")),
        [(
            "Li Hua".to_owned(),
            vec!["chen".to_owned(), "wang".to_owned()]
        )]
    );
}
