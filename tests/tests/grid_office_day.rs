//! A day of a grid office, end to end on a real relay process, in one story:
//! the operator defines a weekly follow-up for residents living alone; two workers of grid 1 register
//! and tag residents, visit some (fulfilling their follow-ups) and miss others; both register the same
//! resident offline; the supervisor sees the duplicate on the relay and on the device and merges it while
//! one worker edits the merged-away record offline (the edit is not lost); the city adds a form mid-way
//! (offline work under the old form lands, old values are flagged, new values are checked); statistics
//! agree on the device and the relay; exports are read back (CSV parsed, XLSX read with a reader crate,
//! GeoJSON checked as a FeatureCollection of points).
use calamine::Reader;
use gridwork_core::*;
use gridwork_tests::*;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

fn person(name: &str, birth: &str, alone: bool) -> NewRecord {
    let n = NewRecord::new(Kind::Person, "g1")
        .field("name", name)
        .field("birth_date", birth);
    if alone {
        n.tag("lives alone")
    } else {
        n
    }
}

#[test]
fn a_day_of_a_grid_office() {
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

    // Morning: registrations, offline. Both workers register Grandpa Zhang.
    let zhang = wang
        .store
        .create(person("张大爷", "1940-03-01", true).field("phone", "13800000001"))
        .unwrap();
    let liu = wang
        .store
        .create(person("刘奶奶", "1938-07-15", true))
        .unwrap();
    wang.store
        .create(person("陈小明", "1990-01-01", false))
        .unwrap();
    let zhang_again = li
        .store
        .create(person("Zhang Daye", "1940-03-01", false).field("sex", "male"))
        .unwrap();
    let building = wang
        .store
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("name", "5号楼")
                .field("address", "柳树路5号")
                .field("lat", "30.2741")
                .field("lon", "120.1551"),
        )
        .unwrap();
    wang.store
        .link(&zhang, LinkType::LivesAt, &building)
        .unwrap();
    // Visits: Zhang is visited (his follow-up is done), Liu is missed.
    let visit = wang
        .store
        .start_visit(
            "g1",
            "weekly check",
            Some(GeoPoint {
                lat: 30.2742,
                lon: 120.1552,
                accuracy: 8.0,
            }),
        )
        .unwrap();
    wang.store.add_visited(&visit, &zhang).unwrap();
    wang.store.finish_visit(&visit, Some("all well")).unwrap();
    for d in [&wang, &li, &zhou] {
        d.sync();
    }
    let now = time::now_secs();
    let due = zhou
        .store
        .followups(&FollowupQuery {
            now: Some(now),
            utc_offset_minutes: 480,
            worker: Some("wang".into()),
            ..Default::default()
        })
        .unwrap();
    let state_of = |id: &str| due.iter().find(|f| f.record_id == id).map(|f| f.state);
    assert_eq!(state_of(&zhang), Some(DueState::Later), "visited today");
    assert_eq!(state_of(&liu), Some(DueState::Overdue), "missed");

    // The duplicate: on the relay and on the supervisor's device.
    let (_, dups) = relay.get_json(&zhou.config.token, "/v1/duplicates");
    assert_eq!(dups["duplicates"].as_array().unwrap().len(), 1, "{dups}");
    assert_eq!(zhou.store.duplicates(Some("g1")).unwrap().len(), 1);
    // Li, offline, adds a note to his record while the supervisor merges it into Wang's.
    li.store
        .update(
            &zhang_again,
            Update::new().notes("Hard of hearing: knock loudly."),
        )
        .unwrap();
    let merged = zhou.store.merge_records(&zhang, &zhang_again).unwrap();
    assert_eq!(merged.filled, ["sex"]);
    zhou.sync();

    // Midday: the city adds a form for people.
    relay.add_form(&json!({
        "id": "city-person", "area": "d1", "kind": "person",
        "fields": [
            {"key": "pension", "label_zh": "领取养老金", "label_en": "Receives a pension",
             "type": "yes_no", "required": true},
            {"key": "hukou", "label_zh": "户籍", "label_en": "Household registration",
             "type": "choice", "options": ["local", "elsewhere"]}
        ]
    }));
    // Li still works by no form: a value the form now constrains, on a new record without the
    // now-required field. It lands at his next sync, with his note on the merged-away record.
    let auntie = li
        .store
        .create(person("王阿姨", "1950-05-05", true).attr("hukou", "本地"))
        .unwrap();
    let report = li.sync();
    assert_eq!((report.rejected, report.deferred), (0, 0), "{report:?}");
    assert!(li.store.quarantined().unwrap().is_empty());
    // Now Li has the form and the merge: the old value is flagged, the required field missing.
    let form: Vec<(String, ValueState)> = li
        .store
        .record_form(&auntie)
        .unwrap()
        .into_iter()
        .map(|v| (v.key, v.state))
        .collect();
    assert_eq!(
        form,
        [
            ("pension".to_owned(), ValueState::Missing),
            ("hukou".to_owned(), ValueState::Outdated)
        ]
    );
    assert!(li.store.get(&zhang_again).unwrap().deleted);
    // New values are checked by the form, on the device as on the relay.
    wang.sync();
    assert!(wang
        .store
        .create(person("赵大妈", "1945-02-02", true))
        .is_err());
    assert!(wang
        .store
        .create(person("赵大妈", "1945-02-02", true).attr("pension", "maybe"))
        .is_err());
    wang.store
        .create(
            person("赵大妈", "1945-02-02", true)
                .attr("pension", "yes")
                .attr("hukou", "local"),
        )
        .unwrap();
    wang.store
        .update(
            &auntie,
            Update::new().attr("hukou", "local").attr("pension", "no"),
        )
        .unwrap();
    wang.sync();

    // Afternoon: the supervisor resolves what the merge left, Li's late note among it.
    zhou.sync();
    let left: Vec<Conflict> = zhou
        .store
        .conflicts()
        .unwrap()
        .into_iter()
        .filter(|c| c.record_id == zhang)
        .collect();
    let fields: Vec<&str> = left.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["name", "notes"], "{left:?}");
    let late_note = &left[1].values[1];
    assert_eq!(late_note.value, "Hard of hearing: knock loudly.");
    assert_eq!(late_note.merged_from.as_deref(), Some(zhang_again.as_str()));
    zhou.store
        .resolve_conflict(&zhang, "name", "张大爷")
        .unwrap();
    zhou.store
        .resolve_conflict(&zhang, "notes", &late_note.value)
        .unwrap();
    zhou.sync();
    wang.sync();
    let kept = wang.store.get(&zhang).unwrap();
    assert_eq!(kept.notes, "Hard of hearing: knock loudly.");
    assert_eq!(kept.field("sex"), Some("male"));
    assert!(wang.store.conflicts().unwrap().is_empty());

    // Statistics: the same numbers on the supervisor's device and on the relay.
    let at = now + DAY;
    let on_device = zhou
        .store
        .statistics(&gridwork_protocol::stats::StatsQuery {
            area: Some("c1".into()),
            at: Some(at),
            ..Default::default()
        })
        .unwrap();
    let (status, on_relay) =
        relay.get_json(&zhou.config.token, &format!("/v1/stats?area=c1&at={at}"));
    assert_eq!(status, 200, "{on_relay}");
    assert_eq!(serde_json::to_value(&on_device).unwrap(), on_relay);
    assert_eq!(
        on_device.records_per_kind["person"], 5,
        "the merged-away one is gone"
    );
    assert_eq!(on_device.visits_per_worker["wang"], 1);
    assert_eq!(on_device.duplicates_open, 0);
    let coverage = &on_device.coverage[0];
    assert_eq!(
        (coverage.records, coverage.up_to_date),
        (4, 1),
        "{coverage:?}"
    );

    // Exports, read back.
    let csv_bytes = zhou
        .store
        .export_records(&ExportQuery::new(Kind::Person), ExportFormat::Csv)
        .unwrap();
    assert!(
        csv_bytes.starts_with("\u{feff}".as_bytes()),
        "a BOM for spreadsheets"
    );
    let mut reader = csv::Reader::from_reader(&csv_bytes[3..]);
    let header = reader.headers().unwrap().clone();
    let name_at = header.iter().position(|h| h == "name").unwrap();
    let mut names: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[name_at].to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["刘奶奶", "张大爷", "王阿姨", "赵大妈", "陈小明"]);
    let xlsx = zhou
        .store
        .export_records(&ExportQuery::new(Kind::Person), ExportFormat::Xlsx)
        .unwrap();
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("person").unwrap();
    assert_eq!(sheet.rows().count(), 6, "a header and five people");
    let places = zhou
        .store
        .export_records(&ExportQuery::new(Kind::Place), ExportFormat::GeoJson)
        .unwrap();
    let places: Value = serde_json::from_slice(&places).unwrap();
    assert_eq!(places["type"], "FeatureCollection");
    let feature = &places["features"][0];
    assert_eq!(feature["type"], "Feature");
    assert_eq!(feature["geometry"]["type"], "Point");
    assert_eq!(
        feature["geometry"]["coordinates"],
        json!([120.1551, 30.2741])
    );
    let visits = zhou
        .store
        .export_records(&ExportQuery::new(Kind::Visit), ExportFormat::GeoJson)
        .unwrap();
    let visits: Value = serde_json::from_slice(&visits).unwrap();
    assert_eq!(visits["features"].as_array().unwrap().len(), 1);
    // The relay writes the same file for the same records.
    let relay_csv = reqwest::blocking::Client::new()
        .get(format!("{}/v1/export?kind=person&format=csv", relay.url()))
        .bearer_auth(&zhou.config.token)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let mut relay_reader = csv::Reader::from_reader(&relay_csv[3..]);
    assert_eq!(relay_reader.records().count(), 5);
}
