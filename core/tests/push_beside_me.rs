//! A store that has synced pushes beside its `POST /v1/me`, so a sync with something to push is one
//! round trip instead of two, when the relay has said it honours a push's precondition (`expect`: the
//! user and store the push was made for). A relay that has not said so gets the push after `/v1/me`'s
//! answer, as before. What the precondition protects is tested against the real relay
//! (`tests/tests/e2e.rs`); here a scripted relay holds `/v1/me`'s answer back until a push arrived, so
//! the order of the answers shows what the client did.
mod common;
mod scripted;
use common::*;
use gridwork_core::sync::PushExpect;
use gridwork_core::*;
use scripted::{Script, ScriptedRelay};
use std::time::Duration;

fn sync(store: &Store, relay: &ScriptedRelay) -> SyncReport {
    store
        .sync(
            &SyncConfig::new(&relay.url, "gw_test"),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap()
}

/// Whether the push was answered before `/v1/me` since the relay's log was last cleared (both must
/// have been).
fn pushed_before_me(relay: &ScriptedRelay) -> bool {
    let log = relay.script().log.clone();
    let at = |request: &str| {
        log.iter()
            .position(|r| r == request)
            .unwrap_or_else(|| panic!("no {request} in {log:?}"))
    };
    at("POST /v1/changes") < at("POST /v1/me")
}

#[test]
fn a_synced_store_pushes_beside_me_when_the_relay_honours_the_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let mut script = Script::wang();
    script.me.push_expect = true;
    let relay = ScriptedRelay::start(script);
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "First Resident"))
        .unwrap();
    // The first sync learns who the store is before it pushes anything.
    assert_eq!(sync(&store, &relay).pushed, 1);
    assert!(!pushed_before_me(&relay), "{:?}", relay.script().log);
    let expect = PushExpect {
        user: "wang".into(),
        actor: store.actor_hex(),
    };
    assert_eq!(relay.script().expects, [Some(expect.clone())]);

    // Later syncs push at once: `/v1/me` is answered only after the push was (a client that waited
    // for it would have waited the whole 10 s for nothing and pushed after).
    relay.script().me_waits_for_push = Some(Duration::from_secs(10));
    relay.script().log.clear();
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Second Resident"))
        .unwrap();
    let report = sync(&store, &relay);
    assert_eq!((report.pushed, report.rejected), (1, 0));
    assert_eq!(store.outbox_len().unwrap(), 0);
    assert!(pushed_before_me(&relay), "{:?}", relay.script().log);
    assert_eq!(relay.script().expects, [Some(expect.clone()), Some(expect)]);
}

#[test]
fn a_relay_that_does_not_say_it_honours_the_precondition_gets_the_push_after_me() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let relay = ScriptedRelay::start(Script::wang());
    sync(&store, &relay);
    // `/v1/me` waits a little for a push that must not come.
    relay.script().me_waits_for_push = Some(Duration::from_millis(300));
    relay.script().log.clear();
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Resident"))
        .unwrap();
    assert_eq!(sync(&store, &relay).pushed, 1);
    assert!(!pushed_before_me(&relay), "{:?}", relay.script().log);
}

/// The store keeps its HTTP client between syncs: a sync soon after the last one sends its requests
/// on the connections the last one opened.
#[test]
fn a_sync_reuses_the_connections_of_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let mut script = Script::wang();
    script.me.push_expect = true;
    let relay = ScriptedRelay::start(script);
    sync(&store, &relay);
    let mut opened = Vec::new();
    for i in 0..4 {
        store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Resident {i}")))
            .unwrap();
        let before = relay.script().connections;
        assert_eq!(sync(&store, &relay).pushed, 1);
        opened.push(relay.script().connections - before);
    }
    // The first of these opens one connection per request it sends side by side (three); the later
    // ones open none.
    assert!(opened[0] >= 1, "{opened:?}");
    assert_eq!(opened[1..], [0, 0, 0], "{opened:?}");
}

/// A sync told not to keep connections (the relay's web console's devices) opens its own each time
/// and leaves none open.
#[test]
fn a_sync_that_keeps_no_connections_opens_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    let relay = ScriptedRelay::start(Script::wang());
    let mut config = SyncConfig::new(&relay.url, "gw_test");
    config.keep_connections = false;
    let sync = || {
        store
            .sync(&config, &NoProgress, &CancelToken::new())
            .unwrap()
    };
    sync();
    for _ in 0..3 {
        let before = relay.script().connections;
        sync();
        assert!(relay.script().connections > before);
    }
}
