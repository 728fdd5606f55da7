//! Duplicates end to end on a real relay process: two workers of one grid register the same resident
//! offline; the relay and the supervisor's device list the pair; the supervisor merges one into the
//! other while one worker edits the merged-away record offline; the edit is not lost (it shows up as
//! a conflict on the kept record); the merged-away record is a tombstone that says where it went, its
//! visits count for the kept record's follow-ups, both histories stay readable; a "not a duplicate"
//! decision sticks on every device and on the relay; nobody outside the grid's worker and its
//! supervisors merges.
use gridwork_core::*;
use gridwork_tests::*;

fn relay_pairs(relay: &Relay, token: &str) -> Vec<(String, String, Vec<String>)> {
    let (status, v) = relay.get_json(token, "/v1/duplicates");
    assert_eq!(status, 200, "{v}");
    v["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let reasons = p["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            (
                p["a"].as_str().unwrap().to_owned(),
                p["b"].as_str().unwrap().to_owned(),
                reasons,
            )
        })
        .collect()
}

fn sorted(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.into(), b.into())
    } else {
        (b.into(), a.into())
    }
}

#[test]
fn a_resident_registered_twice_is_merged_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.add_weekly_alone_schedule();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    let chen = Device::new(&relay, dir.path(), "chen", Role::Worker, "g2");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    for d in [&wang, &li, &chen, &zhou] {
        d.sync();
    }

    // Both register her, offline: the same name (written differently) and birth date.
    let kept = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王芳")
                .field("birth_date", "1950-01-02")
                .field("phone", "13800000001")
                .attr("hukou", "local")
                .tag("lives alone"),
        )
        .unwrap();
    let away = li
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "汪芳")
                .field("birth_date", "1950-01-02")
                .field("phone", "13800000002")
                .field("sex", "female"),
        )
        .unwrap();
    // Li visits her under his record, and an organisation of his lists her as a member.
    let club = li
        .store
        .create(NewRecord::new(Kind::Organisation, "g1").field("name", "老年协会"))
        .unwrap();
    li.store.link(&away, LinkType::MemberOf, &club).unwrap();
    let visit = li.store.start_visit("g1", "weekly check", None).unwrap();
    li.store.add_visited(&visit, &away).unwrap();
    li.store.finish_visit(&visit, None).unwrap();
    for d in [&wang, &li, &wang, &zhou] {
        d.sync();
    }

    // The relay and the supervisor's device find the same pair.
    let pair = sorted(&kept, &away);
    let zhou_token = zhou.config.token.clone();
    assert_eq!(
        relay_pairs(&relay, &zhou_token),
        [(
            pair.0.clone(),
            pair.1.clone(),
            vec!["same_name_and_birth_date".to_owned()]
        )]
    );
    let on_device = zhou.store.duplicates(None).unwrap();
    assert_eq!(on_device.len(), 1);
    assert_eq!((on_device[0].a.id.clone(), on_device[0].b.id.clone()), pair);
    let stats = zhou.store.statistics(&Default::default()).unwrap();
    assert_eq!(stats.duplicates_open, 1);
    let (_, relay_stats) = relay.get_json(&zhou_token, "/v1/stats");
    assert_eq!(relay_stats["duplicates_open"], 1);
    // Another grid's worker sees neither record.
    assert!(relay_pairs(&relay, &chen.config.token).is_empty());
    assert!(chen.store.merge_records(&kept, &away).is_err());

    // Li, offline, changes her phone on his record while the supervisor merges it into Wang's.
    li.store
        .update(&away, Update::new().set("phone", "13900000003"))
        .unwrap();
    let report = zhou.store.merge_records(&kept, &away).unwrap();
    assert_eq!(report.filled, ["sex"]);
    assert_eq!(report.conflicts, ["name", "phone"], "written differently");
    zhou.sync();
    let report = li.sync();
    assert_eq!(report.rejected, 0, "the offline edit lands: {report:?}");
    assert!(li.store.quarantined().unwrap().is_empty());

    // Li's record is a tombstone that says where it went; his organisation now lists the kept one.
    let gone = li.store.get(&away).unwrap();
    assert!(gone.deleted);
    assert_eq!(
        gridwork_protocol::duplicates::merged_into(&gone),
        Some(kept.as_str())
    );
    let err = li
        .store
        .update(&away, Update::new().set("phone", "1"))
        .unwrap_err();
    assert!(err.to_string().contains(&kept), "{err}");
    let links = li.store.links_of(&club).unwrap();
    assert!(
        links.iter().any(|l| l.source == kept && l.target == club),
        "{links:?}"
    );

    // The supervisor sees the differing phone, and Li's edit made after the merge, as conflicts.
    zhou.sync();
    let conflicts: Vec<Conflict> = zhou
        .store
        .conflicts()
        .unwrap()
        .into_iter()
        .filter(|c| c.record_id == kept)
        .collect();
    let fields: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["name", "phone"], "{conflicts:?}");
    let c = &conflicts[1];
    let values: Vec<(&str, Option<&str>)> = c
        .values
        .iter()
        .map(|v| (v.value.as_str(), v.merged_from.as_deref()))
        .collect();
    assert_eq!(
        values,
        [("13800000001", None), ("13900000003", Some(away.as_str()))]
    );
    zhou.store
        .resolve_conflict(&kept, "phone", "13900000003")
        .unwrap();
    zhou.store.resolve_conflict(&kept, "name", "王芳").unwrap();
    assert!(zhou
        .store
        .conflicts()
        .unwrap()
        .iter()
        .all(|c| c.record_id != kept));
    zhou.sync();
    wang.sync();
    let merged = wang.store.get(&kept).unwrap();
    assert_eq!(merged.field("phone"), Some("13900000003"));
    assert_eq!(merged.field("sex"), Some("female"), "filled from the other");
    assert_eq!(merged.attrs.get("hukou").map(String::as_str), Some("local"));
    assert!(wang.store.conflicts().unwrap().is_empty());
    assert!(wang.store.duplicates(None).unwrap().is_empty());
    assert!(relay_pairs(&relay, &zhou_token).is_empty());
    // Both histories stay readable: the absorb on the kept record, Li's edits on his.
    let kept_history = wang.store.history(&kept).unwrap();
    assert!(
        kept_history.iter().any(|h| h.action == "absorb"),
        "{kept_history:?}"
    );
    let away_history = wang.store.history(&away).unwrap();
    assert!(away_history.iter().any(|h| h.action == "merge"));
    assert!(away_history
        .iter()
        .any(|h| h.user == "li" && h.action == "edit"));
    // Li's visit of his record counts for the kept one: she is not due yet.
    let due = wang
        .store
        .followups(&FollowupQuery {
            utc_offset_minutes: 480,
            ..Default::default()
        })
        .unwrap();
    let hers = due
        .iter()
        .find(|f| f.record_id == kept)
        .expect("she is followed up");
    assert_eq!(hers.state, DueState::Later, "{due:?}");
    assert!(hers.last_visit.is_some());
}

#[test]
fn not_a_duplicate_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    wang.sync();
    zhou.sync();
    let twin = |name: &str| {
        wang.store
            .create(
                NewRecord::new(Kind::Person, "g1")
                    .field("name", name)
                    .field("birth_date", "1988-08-08"),
            )
            .unwrap()
    };
    let (a, b) = (twin("李明"), twin("Li Ming"));
    wang.sync();
    zhou.sync();
    assert_eq!(zhou.store.duplicates(None).unwrap().len(), 1);
    // The grid's own worker decides they are two people.
    wang.store.mark_not_duplicate(&a, &b).unwrap();
    assert!(wang.store.duplicates(None).unwrap().is_empty());
    wang.sync();
    zhou.sync();
    assert!(zhou.store.duplicates(None).unwrap().is_empty());
    assert!(relay_pairs(&relay, &zhou.config.token).is_empty());
    // An edit of either record does not bring the pair back.
    zhou.store
        .update(&b, Update::new().set("phone", "13700000000"))
        .unwrap();
    zhou.sync();
    assert!(zhou.store.duplicates(None).unwrap().is_empty());
    assert_eq!(
        zhou.store
            .statistics(&Default::default())
            .unwrap()
            .duplicates_open,
        0
    );
}
