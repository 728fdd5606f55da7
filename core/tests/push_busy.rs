//! A push answered `busy` (the relay ran out of time for it) keeps the change queued: the client sends it
//! again after a short pause, a bounded number of times, then leaves it for the next sync. The real
//! relay answers `busy` only under load a test cannot produce on demand: these tests use the scripted
//! relay (real HTTP on loopback).
mod common;
mod scripted;
use common::*;
use gridwork_core::*;
use scripted::{Script, ScriptedRelay};
use std::time::{Duration, Instant};

fn config(relay: &ScriptedRelay, retries: u32) -> SyncConfig {
    let mut config = SyncConfig::new(&relay.url, "gw_test");
    config.max_retries = retries;
    config.backoff = Duration::from_millis(100);
    config
}

#[test]
fn busy_changes_are_sent_again_after_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    for i in 0..3 {
        store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Resident {i}")))
            .unwrap();
    }
    let relay = ScriptedRelay::start(Script {
        busy_pushes: 2,
        ..Script::wang()
    });
    let started = Instant::now();
    let report = store
        .sync(&config(&relay, 5), &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(report.pushed, 3);
    assert_eq!((report.rejected, report.deferred), (0, 0));
    assert_eq!(store.outbox_len().unwrap(), 0);
    assert!(
        store.quarantined().unwrap().is_empty(),
        "busy is not a refusal"
    );
    assert_eq!(relay.script().pushes, 3, "two busy answers, then accepted");
    // Paused 100 ms, then 200 ms before the two repeats: not a busy loop.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(store.identity_confirmed());
}

#[test]
fn a_relay_that_stays_busy_leaves_the_changes_for_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Patient"))
        .unwrap();
    let relay = ScriptedRelay::start(Script {
        busy_pushes: usize::MAX,
        ..Script::wang()
    });
    let report = store
        .sync(&config(&relay, 2), &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(report.pushed, 0);
    assert_eq!(report.deferred, 1);
    assert_eq!(store.outbox_len().unwrap(), 1, "kept in the outbox");
    assert!(store.quarantined().unwrap().is_empty());
    assert_eq!(
        relay.script().pushes,
        3,
        "the first push and two more, then it stops"
    );
}

/// `429` is the relay saying when to come back (`Retry-After-Ms`): a sync waits and asks again, even
/// with a client that retries failures only once, and gives up only after several such answers.
#[test]
fn a_rate_limited_sync_waits_as_told_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Resident"))
        .unwrap();
    let relay = ScriptedRelay::start(Script {
        rate_limited: 4,
        ..Script::wang()
    });
    let started = Instant::now();
    let report = store
        .sync(&config(&relay, 1), &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(report.pushed, 1);
    let limited = relay
        .script()
        .log
        .iter()
        .filter(|r| r.starts_with("429 "))
        .count();
    assert_eq!(limited, 4);
    // Waited at least as long as the relay asked (20 ms each, the retries of one request in a row).
    assert!(started.elapsed() >= Duration::from_millis(20));

    // A relay that never takes the request: the sync ends with its answer, after a bounded number of
    // tries.
    relay.script().rate_limited = 1_000;
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Another"))
        .unwrap();
    match store.sync(&config(&relay, 1), &NoProgress, &CancelToken::new()) {
        Err(Error::Sync(SyncError::Server { status: 429, .. })) => {}
        other => panic!("expected the relay's 429, got {other:?}"),
    }
    let tries = 1_000 - relay.script().rate_limited;
    assert!((9..=30).contains(&tries), "{tries} tries");
    assert_eq!(store.outbox_len().unwrap(), 1);
}
