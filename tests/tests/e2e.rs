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

/// A store of worker wang (device `wang-dev`, holding `token`) made offline believing it is the
/// supervisor of community c1, with the area tree, not synced yet.
fn believing_supervisor(relay: &Relay, dir: &std::path::Path, token: String) -> Device {
    let device = Device::offline(
        relay,
        dir,
        token,
        Identity {
            user_id: "wang".into(),
            device_id: "wang-dev".into(),
            role: Role::Supervisor,
            area: "c1".into(),
        },
    );
    add_local_areas(&device.store);
    device
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
        // What the relay sent as its view of each record reads as the documents do (the conflict,
        // the tag, the reviewed visit's timeline), so checking them all repairs nothing.
        d.store.check_views(u32::MAX).unwrap();
        assert_eq!(d.store.unchecked_views().unwrap(), 0);
        assert_eq!(d.store.view_repairs().unwrap(), 0);
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
fn a_record_moved_to_another_grid_arrives_whole_and_leaves_the_old_grid() {
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
    let report = g1.sync();
    let on_g2 = g2.store.get(&p).unwrap();
    assert_eq!(on_g2.area, "g2");
    assert_eq!(on_g2.field("phone"), Some("13800000004"));
    assert_eq!(
        g2.store.history(&p).unwrap(),
        sup.store.history(&p).unwrap(),
        "the whole history arrives"
    );
    assert_eq!(g2.store.history(&p).unwrap().len(), 7);
    // The old grid's worker does not keep it: the record left its scope.
    assert_eq!(report.purged, 1);
    assert!(matches!(g1.store.get(&p), Err(Error::UnknownRecord(_))));
    assert!(g1.store.search("Moving", None, 10).unwrap().is_empty());
    assert!(g1.store.outbox_len().unwrap() == 0 && g1.store.held_len().unwrap() == 0);
    // It comes back whole when it moves back.
    sup.store.move_record(&p, "g1").unwrap();
    sup.sync();
    g1.sync();
    assert_eq!(g1.store.get(&p).unwrap(), sup.store.get(&p).unwrap());
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

    // A wrong token: Unauthorized, store untouched.
    let before = a.store.get(&p).unwrap();
    let mut wrong = a.config.clone();
    wrong.token = "gw_wrong".into();
    match a.store.sync(&wrong, &NoProgress, &CancelToken::new()) {
        Err(Error::Sync(SyncError::Unauthorized)) => {}
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(a.store.get(&p).unwrap(), before);
    assert_eq!(a.store.outbox_len().unwrap(), 1);
}

#[test]
fn a_revoked_device_wipes_its_store_on_that_contact() {
    let (dir, relay) = world();
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    a.sync();
    let p = a
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Kept Until Revoked"))
        .unwrap();
    let v = a.store.start_visit("g1", "check", None).unwrap();
    let photo = a
        .store
        .add_attachment(&v, "a.jpg", "image/jpeg", b"revoked photo")
        .unwrap();
    a.store.attach_to_visit(&v, &photo).unwrap();
    a.sync();
    a.store
        .update(&p, Update::new().set("phone", "13800000000"))
        .unwrap();
    relay.admin(&["device", "revoke", "wang-dev"]);
    match a.try_sync() {
        Err(Error::Sync(SyncError::Revoked)) => {}
        other => panic!("expected Revoked, got {other:?}"),
    }
    // Everything is gone: records, outbox, attachments; the open store refuses to work on.
    assert!(matches!(a.store.get(&p), Err(Error::UnknownRecord(_))));
    assert!(a.store.record_ids().unwrap().is_empty());
    assert_eq!(a.store.outbox_len().unwrap(), 0);
    assert!(a.store.attachment(&photo.sha256).unwrap().is_none());
    assert!(a.store.areas().unwrap().is_empty());
    assert!(matches!(
        a.store
            .create(NewRecord::new(Kind::Person, "g1").field("name", "After")),
        Err(Error::Wiped(_))
    ));
    let path = a.store.path().to_owned();
    drop(a);
    match Store::open(StoreOptions::new(&path, StoreKey::Raw(KEY))) {
        Err(Error::Wiped(reason)) => assert_eq!(reason, "revoked"),
        Err(e) => panic!("expected Wiped, got {e:?}"),
        Ok(_) => panic!("a wiped store opened"),
    }
}

#[test]
fn a_store_made_from_a_token_takes_its_identity_and_a_second_store_is_refused() {
    let (dir, relay) = world();
    let token = relay.add_device("wang", Role::Worker, "g1", "wang-phone");
    let wang = Device::from_relay(
        &relay,
        dir.path(),
        token.clone(),
        &IdentityClaims::default(),
    )
    .unwrap();
    let me = wang.store.identity();
    assert_eq!(
        (
            me.user_id.as_str(),
            me.device_id.as_str(),
            me.role,
            me.area.as_str()
        ),
        ("wang", "wang-phone", Role::Worker, "g1")
    );
    assert!(wang.store.identity_confirmed());
    let areas: Vec<String> = wang
        .store
        .areas()
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(areas, ["d1", "s1", "c1", "g1"]);
    let p = wang
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "From The Token"))
        .unwrap();
    assert_eq!(wang.sync().pushed, 1);

    // A second store presenting the same token: refused, whether made from the relay or offline.
    match Device::from_relay(
        &relay,
        dir.path(),
        token.clone(),
        &IdentityClaims::default(),
    ) {
        Err(Error::Sync(SyncError::DeviceInUse)) => {}
        other => panic!("expected DeviceInUse, got {:?}", other.map(|_| ())),
    }
    let copy = Device::offline(
        &relay,
        dir.path(),
        token.clone(),
        Identity {
            user_id: "wang".into(),
            device_id: "wang-phone".into(),
            role: Role::Worker,
            area: "g1".into(),
        },
    );
    add_local_areas(&copy.store);
    copy.store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Copied"))
        .unwrap();
    match copy.try_sync() {
        Err(Error::Sync(e @ SyncError::DeviceInUse)) => {
            assert!(
                e.to_string().contains("operator must reset the device"),
                "{e}"
            )
        }
        other => panic!("expected DeviceInUse, got {other:?}"),
    }
    assert_eq!(copy.store.outbox_len().unwrap(), 1, "nothing was pushed");
    assert!(!copy.store.identity_confirmed());
    // The first store goes on syncing.
    wang.store
        .update(&p, Update::new().set("phone", "13000000000"))
        .unwrap();
    assert_eq!(wang.sync().pushed, 1);

    // Claims that disagree with the token make no store.
    let other = relay.add_device("wang", Role::Worker, "g1", "wang-tablet");
    let claims = IdentityClaims {
        role: Some(Role::Supervisor),
        ..Default::default()
    };
    match Device::from_relay(&relay, dir.path(), other, &claims) {
        Err(Error::TokenMismatch { field, .. }) => assert_eq!(field, "role"),
        other => panic!("expected TokenMismatch, got {:?}", other.map(|_| ())),
    }
}

/// A store that has synced pushes beside its `POST /v1/me` (one round trip per sync), with the user and
/// store it believes the token is as the push's precondition: when the token changed meanwhile, the
/// relay judges nothing of the push, and the store keeps every change.
#[test]
fn a_push_made_beside_me_for_a_token_that_changed_keeps_its_changes() {
    let (dir, relay) = world();
    let mut wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    wang.sync();
    let first = wang
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Before The Reset"))
        .unwrap();
    assert_eq!(wang.sync().pushed, 1);

    // An operator resets the device (its token is bound to no store now) while it is offline: the
    // push that leaves beside `/v1/me` is refused as a whole, `/v1/me` binds the token again, and the
    // push made after it is accepted; nothing is quarantined as another store's.
    relay.admin(&["device", "reset", "wang-dev"]);
    wang.store
        .update(&first, Update::new().set("phone", "13800139999"))
        .unwrap();
    let report = wang.sync();
    assert_eq!((report.pushed, report.rejected), (1, 0));
    assert!(wang.store.quarantined().unwrap().is_empty());
    assert_eq!(wang.store.outbox_len().unwrap(), 0);

    // The store is given another user's token, bound to that user's store or to none yet: the sync
    // stops at the relay's answer, the push beside it was judged not at all, and the change waits in
    // the outbox.
    let zhao = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    zhao.sync();
    let seen = zhao.store.record_ids().unwrap().len();
    wang.store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Not Zhao's"))
        .unwrap();
    wang.config.token = zhao.config.token.clone();
    match wang.try_sync() {
        Err(Error::Sync(SyncError::DeviceInUse)) => {}
        other => panic!("expected DeviceInUse, got {other:?}"),
    }
    wang.config.token = relay.add_device("zhao", Role::Supervisor, "c1", "zhao-tablet");
    match wang.try_sync() {
        Err(Error::Sync(SyncError::WrongUser { store, token })) => {
            assert_eq!((store.as_str(), token.as_str()), ("wang", "zhao"))
        }
        other => panic!("expected WrongUser, got {other:?}"),
    }
    assert_eq!(wang.store.outbox_len().unwrap(), 1, "nothing was pushed");
    assert!(wang.store.quarantined().unwrap().is_empty());
    zhao.sync();
    assert_eq!(zhao.store.record_ids().unwrap().len(), seen);

    // The relay's side of it: a push whose precondition names another user or store, or a token
    // bound to no store, gets `412 identity_changed` and nothing of it is judged.
    let actor = wang.store.actor_hex();
    for (user, actor) in [("wang", actor.as_str()), ("zhao", "00ff")] {
        let r = gridwork_tests::forge::http()
            .post(format!("{}/v1/changes", relay.url()))
            .bearer_auth(&zhao.config.token)
            .json(&serde_json::json!({
                "changes": [{"record": "0".repeat(32), "bytes": "AAAA"}],
                "expect": {"user": user, "actor": actor},
            }))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 412, "{user}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "identity_changed");
    }
    // And `/v1/me` says the relay honours it.
    let (status, me) = relay.get_json(&zhao.config.token, "/v1/me");
    assert_eq!(
        (status, &me["push_expect"]),
        (200, &serde_json::json!(true))
    );
}

#[test]
fn an_offline_store_claiming_too_much_is_corrected_at_its_first_sync() {
    let (dir, relay) = world();
    let token = relay.add_device("wang", Role::Worker, "g1", "wang-dev");
    // Made offline, it believes it is the community's supervisor.
    let believer = believing_supervisor(&relay, dir.path(), token.clone());
    assert!(!believer.store.identity_confirmed());
    let report = believer.sync();
    let me = believer.store.identity();
    assert_eq!((me.role, me.area.as_str()), (Role::Worker, "g1"));
    assert!(believer.store.identity_confirmed());
    assert_eq!(report.pushed, 0);
    // Now it is judged as what it is: the other grid is not its own.
    assert!(matches!(
        believer
            .store
            .create(NewRecord::new(Kind::Person, "g2").field("name", "Not Mine")),
        Err(Error::UnknownArea(_) | Error::OutOfScope(_))
    ));

    // A store made for another user than the token's: refused before anything is pushed.
    let zhao_token = relay.add_device("zhao", Role::Supervisor, "c1", "zhao-tablet");
    let impostor = Device::offline(
        &relay,
        dir.path(),
        zhao_token,
        Identity {
            user_id: "wang".into(),
            device_id: "zhao-tablet".into(),
            role: Role::Supervisor,
            area: "c1".into(),
        },
    );
    add_local_areas(&impostor.store);
    impostor
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Forged Author"))
        .unwrap();
    match impostor.try_sync() {
        Err(Error::Sync(SyncError::WrongUser { store, token })) => {
            assert_eq!((store.as_str(), token.as_str()), ("wang", "zhao"))
        }
        other => panic!("expected WrongUser, got {other:?}"),
    }
    assert_eq!(
        impostor.store.outbox_len().unwrap(),
        1,
        "nothing was pushed"
    );
    assert!(!impostor.store.identity_confirmed());
    let sup = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    sup.sync();
    assert!(sup.store.record_ids().unwrap().is_empty());
}

#[test]
fn a_refused_change_is_discarded_and_the_later_edits_reach_the_relay() {
    let (dir, relay) = world();
    let token = relay.add_device("wang", Role::Worker, "g1", "wang-dev");
    let sup = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    // Made offline believing it supervises the community, the store registers a family in its grid,
    // moves it to the other grid, and goes on editing it there.
    let believer = believing_supervisor(&relay, dir.path(), token);
    let p = believer
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Moved Too Far"))
        .unwrap();
    believer.store.move_record(&p, "g2").unwrap();
    believer
        .store
        .update(&p, Update::new().notes("Moved in with her son."))
        .unwrap();
    believer
        .store
        .update(&p, Update::new().set("phone", "13500000005"))
        .unwrap();

    // The relay takes the record but refuses the move: a worker of g1 cannot send it to g2. The later
    // edits build on the move, so they wait on the device instead of being refused too.
    let report = believer.sync();
    assert_eq!((report.pushed, report.rejected), (1, 1));
    let q = believer.store.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "out_of_scope");
    assert!(
        q[0].message.contains("kept only on this device"),
        "{}",
        q[0].message
    );
    assert_eq!(believer.store.outbox_len().unwrap(), 2);
    let again = believer.sync();
    assert_eq!(
        (again.pushed, again.rejected),
        (0, 0),
        "not sent again and again"
    );

    // Discarded: the record is back in g1 as the relay has it, the later edits made again.
    let discard = believer.store.discard_quarantined(&q[0].hash).unwrap();
    assert_eq!(discard.reapplied.len(), 2);
    assert!(discard.dropped.is_empty(), "{:?}", discard.dropped);
    let r = believer.store.get(&p).unwrap();
    assert_eq!(r.area, "g1");
    assert_eq!(r.notes, "Moved in with her son.");
    assert_eq!(r.field("phone"), Some("13500000005"));
    let report = believer.sync();
    assert_eq!((report.pushed, report.rejected), (2, 0));
    assert!(believer.store.quarantined().unwrap().is_empty());
    assert_eq!(believer.store.outbox_len().unwrap(), 0);
    sup.sync();
    let on_relay = sup.store.get(&p).unwrap();
    assert_eq!(on_relay, believer.store.get(&p).unwrap());
    assert_eq!(
        sup.store.history(&p).unwrap(),
        believer.store.history(&p).unwrap(),
        "the relay and the device agree on the record's history"
    );
}

#[test]
fn a_review_by_a_store_that_believed_it_was_a_supervisor_is_refused_and_discarded() {
    let (dir, relay) = world();
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    let zhao = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    li.sync();
    let v = li.store.start_visit("g1", "weekly check", None).unwrap();
    li.store.finish_visit(&v, Some("All well.")).unwrap();
    li.sync();
    // A store of worker wang that believes it is the community's supervisor holds li's visit (as a
    // store that synced while it was one would: here the relay's pull answer, fetched with its token
    // without registering, is applied to it).
    let token = relay.add_device("wang", Role::Worker, "g1", "wang-dev");
    let believer = believing_supervisor(&relay, dir.path(), token.clone());
    let page: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/changes?after=0", relay.url()))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let chunks: Vec<RemoteChunk> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| RemoteChunk {
            record_id: i["record"].as_str().unwrap().to_owned(),
            bytes: base64::engine::general_purpose::STANDARD
                .decode(i["bytes"].as_str().unwrap())
                .unwrap(),
        })
        .collect();
    believer.store.apply_remote(&chunks).unwrap();
    // Offline it approves the visit: its own rule book, with the role it believes, allows it.
    believer
        .store
        .review_visit(&v, ReviewState::Approved, Some("fine"))
        .unwrap();

    // The relay knows better.
    let report = believer.sync();
    assert_eq!(report.rejected, 1);
    let q = believer.store.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "forbidden_role");
    assert!(q[0].detail.is_some());
    assert!(q[0]
        .message
        .starts_with("the change was refused by the relay for"));
    assert_eq!(believer.store.identity().role, Role::Worker);
    // Discarded: back to the relay's version, pending review.
    let discard = believer.store.discard_quarantined(&q[0].hash).unwrap();
    assert!(discard.reapplied.is_empty() && discard.dropped.is_empty());
    assert_eq!(
        believer.store.get(&v).unwrap().field("review_state"),
        Some("pending")
    );
    assert!(believer.store.quarantined().unwrap().is_empty());
    // The visit is not blocked: its worker's later edit of its notes reaches the relay and the
    // device, and the real supervisor reviews it.
    li.store
        .update(&v, Update::new().notes("All well. Boiler checked too."))
        .unwrap();
    li.sync();
    believer.sync();
    zhao.sync();
    assert_eq!(
        believer.store.get(&v).unwrap().notes,
        "All well. Boiler checked too."
    );
    zhao.store
        .review_visit(&v, ReviewState::Approved, None)
        .unwrap();
    zhao.sync();
    believer.sync();
    let seen = believer.store.get(&v).unwrap();
    assert_eq!(seen.field("review_state"), Some("approved"));
    assert_eq!(seen.field("reviewer"), Some("zhao"));
    assert_eq!(seen, zhao.store.get(&v).unwrap());
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
    for i in 0..60 {
        a.store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Person {i}")))
            .unwrap();
    }
    // A bulk import: all but the first record of a shape are made from its first change
    // (core/src/store/template.rs); the relay judges them like any other.
    a.store
        .create_many(
            (60..120)
                .map(|i| {
                    NewRecord::new(Kind::Person, "g1")
                        .field("name", format!("Person {i}"))
                        .attr("floor", format!("{}", i % 9))
                        .tag("lives alone")
                })
                .collect(),
        )
        .unwrap();
    let pushed = a.sync();
    assert_eq!((pushed.pushed, pushed.rejected), (120, 0));
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
    // Stored from the relay's views, without loading a document; they read as the documents do.
    assert_eq!(fresh.store.unchecked_views().unwrap(), 120);
    for id in a.store.record_ids().unwrap().iter().step_by(7) {
        assert_eq!(fresh.store.get(id).unwrap(), a.store.get(id).unwrap());
    }
    assert_eq!(fresh.store.check_views(u32::MAX).unwrap(), 120);
    assert_eq!(fresh.store.view_repairs().unwrap(), 0);
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

#[test]
fn a_photo_already_on_the_relay_is_linked_to_every_record_that_holds_it() {
    let (dir, relay) = world();
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let zhao = Device::new(&relay, dir.path(), "zhao", Role::Supervisor, "c1");
    for d in [&li, &wang, &zhao] {
        d.sync();
    }
    // Two visits of one grid hold the same photo of a notice board: li's goes up first.
    let photo: Vec<u8> = (0..1_200_000u32).map(|i| (i * 11 % 253) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&photo));
    let visit_with = |d: &Device| {
        let v = d.store.start_visit("g1", "notice board", None).unwrap();
        let att = d
            .store
            .add_attachment(&v, "board.jpg", "image/jpeg", &photo)
            .unwrap();
        d.store.attach_to_visit(&v, &att).unwrap();
        d.store.finish_visit(&v, None).unwrap();
        v
    };
    let first = visit_with(&li);
    assert_eq!(li.sync().attachments_uploaded, 1);
    // wang's device finds the content on the relay (through li's visit, which it may read) and links
    // it to its own visit instead of uploading it again.
    let second = visit_with(&wang);
    assert_eq!(wang.sync().attachments_uploaded, 1);
    // li's visit was filed in the wrong grid: the supervisor moves it to g2.
    zhao.sync();
    zhao.store.move_record(&first, "g2").unwrap();
    assert_eq!(zhao.sync().rejected, 0);
    // A worker of g1 sees only wang's visit, and downloads the photo through it.
    let ma = Device::new(&relay, dir.path(), "ma", Role::Worker, "g1");
    ma.sync();
    assert!(matches!(ma.store.get(&first), Err(Error::UnknownRecord(_))));
    assert_eq!(ma.store.get(&second).unwrap().attachments[0].sha256, sha);
    let got = ma
        .store
        .fetch_attachment(&ma.config, &second, &sha)
        .unwrap();
    assert!(got == photo, "the photo, through the second visit");
}
