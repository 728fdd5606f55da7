//! End to end: a real relay process on 127.0.0.1 and several devices with real encrypted stores.
use base64::Engine;
use gridwork_core::*;
use gridwork_tests::*;
use sha2::Digest;
use std::time::Duration;

fn world() -> (tempfile::TempDir, Relay) {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    (dir, relay)
}

/// A worker of g1, a worker of g2 and the supervisor of c1 (above both), each synced once.
fn grid_workers_and_supervisor(relay: &Relay, dir: &std::path::Path) -> (Device, Device, Device) {
    let g1 = Device::new(relay, dir, "wang", Role::Worker, "g1");
    let g2 = Device::new(relay, dir, "chen", Role::Worker, "g2");
    let sup = Device::new(relay, dir, "zhao", Role::Supervisor, "c1");
    for d in [&g1, &g2, &sup] {
        d.sync();
    }
    (g1, g2, sup)
}

#[test]
fn offline_edits_converge_and_conflicts_resolve_on_every_device() {
    let (dir, relay) = world();
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let b = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    let sup = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    for d in [&a, &b, &sup] {
        d.sync();
    }
    let p = a
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王小明")
                .field("sex", "male"),
        )
        .unwrap();
    a.sync();
    b.sync();
    // Both work offline: different fields, and the same field.
    a.store
        .update(
            &p,
            Update::new()
                .set("phone", "13800000001")
                .set("birth_date", "1950-01-01"),
        )
        .unwrap();
    b.store
        .update(
            &p,
            Update::new()
                .add_tag("lives alone")
                .set("birth_date", "1951-02-02"),
        )
        .unwrap();
    let v = b.store.start_visit("g1", "weekly check", None).unwrap();
    b.store.add_visited(&v, &p).unwrap();
    b.store.finish_visit(&v, Some("ok")).unwrap();
    a.sync();
    b.sync();
    a.sync();
    sup.sync();
    let ra = a.store.get(&p).unwrap();
    assert_eq!(ra, b.store.get(&p).unwrap());
    assert_eq!(ra, sup.store.get(&p).unwrap());
    assert_eq!(ra.field("phone"), Some("13800000001"));
    assert_eq!(ra.tags, vec!["lives alone".to_string()]);
    for d in [&a, &b, &sup] {
        let c = d.store.conflicts().unwrap();
        assert_eq!(c.len(), 1, "conflict visible on every device");
        assert_eq!(c[0].field, "birth_date");
        assert_eq!(c[0].values.len(), 2);
    }
    assert_eq!(
        sup.store.review_queue(10).unwrap().len(),
        1,
        "supervisor sees the visit to review"
    );
    sup.store
        .review_visit(&v, ReviewState::Approved, None)
        .unwrap();
    b.store
        .resolve_conflict(&p, "birth_date", "1951-02-02")
        .unwrap();
    for _ in 0..2 {
        for d in [&b, &sup, &a] {
            d.sync();
        }
    }
    for d in [&a, &b, &sup] {
        assert!(d.store.conflicts().unwrap().is_empty());
        assert_eq!(
            d.store.get(&p).unwrap().field("birth_date"),
            Some("1951-02-02")
        );
        assert_eq!(
            d.store.get(&v).unwrap().field("review_state"),
            Some("approved")
        );
        assert_eq!(d.store.outbox_len().unwrap(), 0);
    }
}

#[test]
fn scope_is_enforced_on_pull_and_push_and_supervisors_see_the_subtree() {
    let (dir, relay) = world();
    let (g1, g2, sup) = grid_workers_and_supervisor(&relay, dir.path());
    let p1 = g1
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "In grid one"))
        .unwrap();
    let p2 = g2
        .store
        .create(NewRecord::new(Kind::Person, "g2").field("name", "In grid two"))
        .unwrap();
    g1.sync();
    g2.sync();
    g1.sync();
    sup.sync();
    assert!(
        matches!(g1.store.get(&p2), Err(Error::UnknownRecord(_))),
        "g1 never receives g2's records"
    );
    assert!(matches!(g2.store.get(&p1), Err(Error::UnknownRecord(_))));
    assert!(
        sup.store.get(&p1).is_ok() && sup.store.get(&p2).is_ok(),
        "supervisor sees the subtree"
    );

    // A device whose token belongs to the g2 worker but whose store claims g1: its g1 change is refused
    // by the relay, quarantined with the reason, and does not block its in-scope change.
    let token = relay.add_device("chen", Role::Worker, "g2", "chen-second");
    let rogue = Store::open(
        StoreOptions::new(dir.path().join("rogue.db"), StoreKey::Raw([1; 32])).identity(Identity {
            user_id: "chen".into(),
            device_id: "chen-second".into(),
            role: Role::Supervisor,
            area: "c1".into(),
        }),
    )
    .unwrap();
    add_local_areas(&rogue);
    let bad = rogue
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Smuggled"))
        .unwrap();
    let good = rogue
        .create(NewRecord::new(Kind::Person, "g2").field("name", "Fine"))
        .unwrap();
    let report = rogue
        .sync(
            &SyncConfig::new(relay.url(), token),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(report.rejected, 1);
    assert_eq!(report.pushed, 1);
    let q = rogue.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].record_id, bad);
    assert_eq!(q[0].reason, "out_of_scope");
    assert_eq!(rogue.outbox_len().unwrap(), 0);
    assert!(
        rogue.get(&bad).is_ok(),
        "the refused record stays on the device"
    );
    sup.sync();
    assert!(sup.store.get(&good).is_ok());
    assert!(matches!(sup.store.get(&bad), Err(Error::UnknownRecord(_))));
}

#[test]
fn a_record_moved_to_another_grid_arrives_whole() {
    let (dir, relay) = world();
    let (g1, g2, sup) = grid_workers_and_supervisor(&relay, dir.path());
    let p = g1
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Moving Family"))
        .unwrap();
    for i in 0..5 {
        g1.store
            .update(&p, Update::new().set("phone", format!("1380000000{i}")))
            .unwrap();
    }
    g1.sync();
    g2.sync();
    assert!(g2.store.get(&p).is_err());
    sup.sync();
    sup.store.move_record(&p, "g2").unwrap();
    sup.sync();
    g2.sync();
    g1.sync();
    let on_g2 = g2.store.get(&p).unwrap();
    assert_eq!(on_g2.area, "g2");
    assert_eq!(on_g2.field("phone"), Some("13800000004"));
    assert_eq!(
        g2.store.history(&p).unwrap(),
        sup.store.history(&p).unwrap(),
        "the whole history arrives"
    );
    assert_eq!(g2.store.history(&p).unwrap().len(), 7);
    assert_eq!(
        g1.store.get(&p).unwrap().area,
        "g2",
        "the old grid learns that it moved"
    );
}

#[test]
fn killing_the_relay_mid_push_and_mid_pull_loses_and_doubles_nothing() {
    let (dir, mut relay) = world();
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let b = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    a.sync();
    b.sync();
    let mut ids = Vec::new();
    for i in 0..600 {
        let id = a
            .store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Resident {i}")))
            .unwrap();
        a.store
            .update(&id, Update::new().set("phone", format!("139{i:08}")))
            .unwrap();
        ids.push(id);
    }
    let total_changes = a.store.outbox_len().unwrap();
    // Small batches so the kill lands between acknowledged batches and inside one.
    let mut config = a.config.clone();
    config.push_batch = 50;
    config.max_retries = 0;
    let port = relay.port;
    std::thread::scope(|s| {
        let pusher = s.spawn(|| a.store.sync(&config, &NoProgress, &CancelToken::new()));
        std::thread::sleep(Duration::from_millis(150));
        relay.kill();
        let first = pusher.join().unwrap();
        assert!(first.is_err() || a.store.outbox_len().unwrap() == 0);
    });
    relay.restart();
    assert_eq!(relay.port, port);
    a.sync();
    assert_eq!(a.store.outbox_len().unwrap(), 0);

    let mut pull_config = b.config.clone();
    pull_config.page_size = 100;
    pull_config.max_retries = 0;
    std::thread::scope(|s| {
        let puller = s.spawn(|| b.store.sync(&pull_config, &NoProgress, &CancelToken::new()));
        std::thread::sleep(Duration::from_millis(100));
        relay.kill();
        let _ = puller.join().unwrap();
    });
    relay.restart();
    b.sync();
    for id in &ids {
        assert_eq!(b.store.get(id).unwrap(), a.store.get(id).unwrap());
    }
    // The relay's log holds every change exactly once.
    let http = reqwest::blocking::Client::new();
    let (mut after, mut hashes) = (0u64, std::collections::HashSet::new());
    let mut count = 0;
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{}/v1/changes?after={after}&limit=5000",
                relay.url()
            ))
            .bearer_auth(&b.config.token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(item["bytes"].as_str().unwrap())
                .unwrap();
            hashes.insert(sha2::Sha256::digest(&bytes).to_vec());
            count += 1;
        }
        after = page["cursor"].as_u64().unwrap();
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(count, hashes.len(), "no change doubled");
    assert_eq!(count as u64, total_changes, "no change lost");
}

#[test]
fn bad_requests_get_clear_errors_and_leave_stores_untouched() {
    let (dir, relay) = world();
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    a.sync();
    let p = a
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Kept Safe"))
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let url = relay.url();
    let code = |r: reqwest::blocking::Response| -> (u16, String) {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap_or_default();
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(
        code(
            http.get(format!("{url}/v1/changes"))
                .bearer_auth("nope")
                .send()
                .unwrap()
        ),
        (401, "unauthorized".into())
    );
    assert_eq!(
        code(http.get(format!("{url}/v1/changes")).send().unwrap()).0,
        401
    );
    let truncated = http
        .post(format!("{url}/v1/changes"))
        .bearer_auth(&a.config.token)
        .header("content-type", "application/json")
        .body(r#"{"changes":[{"record":"0123"#)
        .send()
        .unwrap();
    assert_eq!(code(truncated).0, 400);
    let garbage = http
        .post(format!("{url}/v1/changes"))
        .bearer_auth(&a.config.token)
        .json(&serde_json::json!({"changes":[{"record": p, "bytes": "aGVsbG8gd29ybGQ="}]}))
        .send()
        .unwrap();
    let body: serde_json::Value = garbage.json().unwrap();
    assert_eq!(body["results"][0]["status"], "rejected");
    assert_eq!(body["results"][0]["reason"], "malformed");
    let huge = vec![b'x'; 9 * 1024 * 1024];
    let oversized = http
        .post(format!("{url}/v1/changes"))
        .bearer_auth(&a.config.token)
        .header("content-type", "application/json")
        .body(huge)
        .send();
    if let Ok(r) = oversized {
        assert_eq!(code(r), (413, "payload_too_large".into()));
    }

    // A revoked device gets a clear error, and its unsent work stays on the device.
    let before = a.store.get(&p).unwrap();
    relay.admin(&["device", "revoke", "wang-dev"]);
    match a.try_sync() {
        Err(Error::Sync(SyncError::Revoked)) => {}
        other => panic!("expected Revoked, got {other:?}"),
    }
    assert_eq!(a.store.get(&p).unwrap(), before);
    assert_eq!(a.store.outbox_len().unwrap(), 1);
    // A wrong token: Unauthorized, store untouched.
    let mut wrong = a.config.clone();
    wrong.token = "gw_wrong".into();
    match a.store.sync(&wrong, &NoProgress, &CancelToken::new()) {
        Err(Error::Sync(SyncError::Unauthorized)) => {}
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(a.store.outbox_len().unwrap(), 1);
}

#[test]
fn attachments_round_trip_resume_and_stay_in_scope() {
    let (dir, relay) = world();
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let sup = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    let other = Device::new(&relay, dir.path(), "chen", Role::Worker, "g2");
    for d in [&a, &sup, &other] {
        d.sync();
    }
    let v = a.store.start_visit("g1", "stairwell check", None).unwrap();
    let photo: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&photo));
    // Half of it goes up by hand, as if a previous sync was cut off mid-upload.
    let half = photo.len() / 2;
    let http = reqwest::blocking::Client::new();
    let r = http
        .put(format!("{}/v1/attachments/{sha}?record={v}", relay.url()))
        .bearer_auth(&a.config.token)
        .header(
            "content-range",
            format!("bytes 0-{}/{}", half - 1, photo.len()),
        )
        .body(photo[..half].to_vec())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let head = http
        .head(format!("{}/v1/attachments/{sha}", relay.url()))
        .bearer_auth(&a.config.token)
        .send()
        .unwrap();
    assert_eq!(
        head.headers()["upload-offset"].to_str().unwrap(),
        half.to_string()
    );
    let att = a
        .store
        .add_attachment(&v, "stairs.jpg", "image/jpeg", &photo)
        .unwrap();
    a.store.attach_to_visit(&v, &att).unwrap();
    a.store.finish_visit(&v, None).unwrap();
    let report = a.sync();
    assert_eq!(report.attachments_uploaded, 1);
    sup.sync();
    let rec = sup.store.get(&v).unwrap();
    assert_eq!(rec.attachments[0].sha256, sha);
    assert!(
        sup.store.attachment(&sha).unwrap().is_none(),
        "downloaded on demand only"
    );
    let got = sup.store.fetch_attachment(&sup.config, &v, &sha).unwrap();
    assert_eq!(got, photo);
    assert_eq!(sup.store.attachment(&sha).unwrap().unwrap(), photo);
    // Out of scope: the g2 worker cannot fetch it.
    match other.store.fetch_attachment(&other.config, &v, &sha) {
        Err(Error::Sync(SyncError::Server { status, .. })) => {
            assert!(status == 403 || status == 404, "{status}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_new_device_bootstraps_from_a_snapshot_then_pulls() {
    let (dir, relay) = world();
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    a.sync();
    for i in 0..120 {
        a.store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Person {i}")))
            .unwrap();
    }
    a.sync();
    let mut fresh = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    fresh.config.page_size = 50;
    let progress = std::sync::Mutex::new(Vec::new());
    let sink = |p: SyncProgress| progress.lock().unwrap().push(p.phase);
    let report = fresh
        .store
        .sync(&fresh.config, &sink, &CancelToken::new())
        .unwrap();
    assert_eq!(report.bootstrapped, 120);
    assert!(progress.lock().unwrap().contains(&SyncPhase::Bootstrapping));
    assert_eq!(
        fresh
            .store
            .list(&ListQuery::new(Kind::Person).limit(1000))
            .unwrap()
            .items
            .len(),
        120
    );
    let later = a
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Latecomer"))
        .unwrap();
    a.sync();
    let report = fresh.sync();
    assert_eq!(report.bootstrapped, 0);
    assert!(fresh.store.get(&later).is_ok());
    // Cancelling before the first request stops at once and changes nothing.
    let cancel = CancelToken::new();
    cancel.cancel();
    assert!(matches!(
        fresh.store.sync(&fresh.config, &NoProgress, &cancel),
        Err(Error::Sync(SyncError::Cancelled))
    ));
}
