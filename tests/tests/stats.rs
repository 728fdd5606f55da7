//! Statistics on a device and on the relay give the same numbers for the same data: one function
//! (`gridwork_protocol::stats::compute`) over the device's record views and over the relay's.
use gridwork_core::*;
use gridwork_protocol::stats::{Stats, StatsQuery};
use gridwork_tests::*;

fn relay_stats(relay: &Relay, token: &str, q: &str) -> (u16, serde_json::Value) {
    relay.get_json(token, &format!("/v1/stats?{q}"))
}

#[test]
fn device_and_relay_count_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.add_weekly_alone_schedule();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g2");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    for d in [&wang, &li, &zhou] {
        d.sync();
    }
    let person = |d: &Device, area: &str, name: &str, alone: bool| {
        let mut n = NewRecord::new(Kind::Person, area).field("name", name);
        if alone {
            n = n.tag("lives alone");
        }
        d.store.create(n).unwrap()
    };
    let visited = person(&wang, "g1", "王建国", true);
    person(&wang, "g1", "李秀英", true);
    person(&wang, "g1", "张伟", false);
    person(&li, "g2", "陈静", true);
    let visit = wang.store.start_visit("g1", "weekly", None).unwrap();
    wang.store.add_visited(&visit, &visited).unwrap();
    wang.store.finish_visit(&visit, None).unwrap();
    let event = |d: &Device, area: &str, title: &str, due: Option<&str>| {
        let mut n = NewRecord::new(Kind::Event, area)
            .field("title", title)
            .field("category", "hazard_report");
        if let Some(due) = due {
            n = n.field("due", due);
        }
        d.store.create(n).unwrap()
    };
    let closed = event(&wang, "g1", "Stair light", None);
    event(&wang, "g1", "Loose railing", Some("2020-01-01T00:00:00Z"));
    wang.store
        .transition(&closed, EventAction::Escalate, Some("needs an electrician"))
        .unwrap();
    for d in [&wang, &li, &zhou] {
        d.sync();
    }
    zhou.store
        .transition(
            &closed,
            EventAction::Assign {
                assignee: "zhou".into(),
            },
            None,
        )
        .unwrap();
    for action in [
        EventAction::Start,
        EventAction::Resolve,
        EventAction::Verify,
        EventAction::Close,
    ] {
        zhou.store.transition(&closed, action, None).unwrap();
    }
    for d in [&zhou, &wang, &li, &zhou] {
        d.sync();
    }

    let at = time::now_secs() + 60;
    let q = |area: Option<&str>| StatsQuery {
        area: area.map(str::to_owned),
        from: Some(at - 3600),
        until: Some(at),
        at: Some(at),
    };
    let params = |area: Option<&str>| {
        let mut p = format!("from={}&until={at}&at={at}", at - 3600);
        if let Some(a) = area {
            p.push_str(&format!("&area={a}"));
        }
        p
    };
    // The supervisor, the whole community and one grid; the worker, its grid.
    for (device, area) in [
        (&zhou, None),
        (&zhou, Some("g1")),
        (&zhou, Some("g2")),
        (&wang, None),
    ] {
        let mine = device.store.statistics(&q(area)).unwrap();
        let (status, theirs) = relay_stats(&relay, &device.config.token, &params(area));
        assert_eq!(status, 200, "{theirs}");
        assert_eq!(serde_json::to_value(&mine).unwrap(), theirs, "{area:?}");
    }
    let s: Stats = zhou.store.statistics(&q(None)).unwrap();
    assert_eq!(s.records_per_kind["person"], 4);
    assert_eq!(s.records_per_kind["event"], 2);
    assert_eq!(s.visits_per_worker["wang"], 1);
    let hazards = &s.events_by_category["hazard_report"];
    assert_eq!(
        (
            hazards.reported,
            hazards.open,
            hazards.overdue,
            hazards.closed
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(s.escalations_per_level["community"], 1);
    assert!(s.median_close_secs.is_some_and(|m| (0..600).contains(&m)));
    assert_eq!(s.coverage.len(), 1);
    assert_eq!((s.coverage[0].records, s.coverage[0].up_to_date), (3, 1));
    let g2 = zhou.store.statistics(&q(Some("g2"))).unwrap();
    assert_eq!(g2.records_per_kind.get("person"), Some(&1));
    assert_eq!((g2.coverage[0].records, g2.coverage[0].up_to_date), (1, 0));
    // Another grid than the worker's own: the relay does not answer for it.
    assert_eq!(relay_stats(&relay, &wang.config.token, "area=g2").0, 404);
    assert!(matches!(
        wang.store.statistics(&q(Some("g2"))),
        Err(Error::UnknownArea(_))
    ));
}

/// The relay exports the same rows as a device, with the same writer; ID numbers in full only for a
/// supervisor who asks.
#[test]
fn the_relay_exports_what_a_device_exports() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    wang.sync();
    for (name, id) in [
        ("王芳", "110105195003020021"),
        ("Li Wei", "110105196001010012"),
    ] {
        wang.store
            .create(
                NewRecord::new(Kind::Person, "g1")
                    .field("name", name)
                    .field("id_number", id)
                    .tag("lives alone"),
            )
            .unwrap();
    }
    wang.sync();
    zhou.sync();
    let get = |token: &str, q: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{}/v1/export?{q}", relay.url()))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let rows = |bytes: &[u8]| -> Vec<Vec<String>> {
        assert!(bytes.starts_with(b"\xEF\xBB\xBF"));
        let mut r: Vec<Vec<String>> = csv::Reader::from_reader(&bytes[3..])
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        r.sort();
        r
    };
    for unmasked in [false, true] {
        let r = get(
            &zhou.config.token,
            &format!("kind=person&format=csv&tag=lives%20alone&unmasked={unmasked}"),
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
        let relay_rows = rows(&r.bytes().unwrap());
        let mut q = ExportQuery::new(Kind::Person);
        q.tag = Some("lives alone".into());
        q.unmasked = unmasked;
        let device_rows = rows(&zhou.store.export_records(&q, ExportFormat::Csv).unwrap());
        assert_eq!(relay_rows, device_rows, "unmasked {unmasked}");
        assert_eq!(relay_rows.len(), 2);
        let full = relay_rows
            .iter()
            .any(|r| r.iter().any(|c| c == "110105195003020021"));
        assert_eq!(full, unmasked);
    }
    let xlsx = get(&zhou.config.token, "kind=person&format=xlsx");
    assert_eq!(xlsx.status(), 200);
    assert!(xlsx.bytes().unwrap().starts_with(b"PK"));
    assert_eq!(
        get(&wang.config.token, "kind=person&format=csv&unmasked=true").status(),
        403
    );
    assert_eq!(
        get(&zhou.config.token, "kind=person&format=geojson").status(),
        400
    );
    assert_eq!(
        get(&zhou.config.token, "kind=robot&format=csv").status(),
        400
    );
    assert_eq!(
        get(&wang.config.token, "kind=person&format=csv&area=g2").status(),
        404
    );
}
