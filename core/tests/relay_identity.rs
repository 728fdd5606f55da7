//! The relay's answer at every sync replaces the store's device, role and area: when an operator moves
//! the user to another grid, the device bootstraps the new grid from a snapshot and purges the old one.
//! The real relay has no command for that yet, so the relay is scripted here (real HTTP on loopback).
mod common;
mod scripted;
use common::*;
use gridwork_core::sync::SnapshotRecord;
use gridwork_core::*;
use scripted::{tree, Script, ScriptedRelay};

#[test]
fn a_user_moved_to_another_grid_gets_the_new_grid_and_loses_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let wang = open(dir.path(), "wang", Role::Worker, "g1");
    let mine = wang
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Old Grid Resident"))
        .unwrap();
    // A record of grid g2, made elsewhere: the relay's snapshot of g2 holds it.
    let other = open(dir.path(), "chen", Role::Worker, "g2");
    let theirs = other
        .create(NewRecord::new(Kind::Person, "g2").field("name", "New Grid Resident"))
        .unwrap();
    let relay = ScriptedRelay::start(Script::wang());
    let config = SyncConfig::new(&relay.url, "gw_test");
    let first = wang
        .sync(&config, &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!((first.pushed, first.purged), (1, 0));
    assert_eq!(relay.script().snapshots, 1);
    let again = wang
        .sync(&config, &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(again.purged, 0);
    assert_eq!(
        relay.script().snapshots,
        1,
        "no new snapshot while the scope stays"
    );

    // The operator makes wang the supervisor of g2.
    {
        let mut script = relay.script();
        script.me.area = "g2".into();
        script.me.area_path = "d1/s1/c1/g2/".into();
        script.me.role = "supervisor".into();
        script.areas = tree(&["d1", "s1", "c1", "g2"]);
        script.snapshot = vec![SnapshotRecord {
            record: theirs.clone(),
            bytes: base64_of(&other.export_document(&theirs).unwrap()),
            view: None,
        }];
    }
    let moved = wang
        .sync(&config, &NoProgress, &CancelToken::new())
        .unwrap();
    let me = wang.identity();
    assert_eq!((me.role, me.area.as_str()), (Role::Supervisor, "g2"));
    assert_eq!(relay.script().snapshots, 2, "bootstrapped again");
    assert_eq!(moved.purged, 1);
    assert!(matches!(wang.get(&mine), Err(Error::UnknownRecord(_))));
    assert_eq!(wang.get(&theirs).unwrap(), other.get(&theirs).unwrap());
    let areas: Vec<String> = wang.areas().unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(
        areas,
        ["d1", "s1", "c1", "g2"],
        "the relay's tree replaced the local one"
    );
    // Its new scope is what the rule book judges by now.
    assert!(matches!(
        wang.create(NewRecord::new(Kind::Person, "g1").field("name", "X")),
        Err(Error::UnknownArea(_))
    ));
    wang.create(NewRecord::new(Kind::Person, "g2").field("name", "New Neighbour"))
        .unwrap();
    drop(wang);
    let reopened = Store::open(StoreOptions::new(
        dir.path().join("wang.db"),
        StoreKey::Raw(KEY),
    ))
    .unwrap();
    assert_eq!(reopened.identity().area, "g2");
    assert!(reopened.identity_confirmed());
}

#[test]
fn the_area_tree_is_fetched_only_when_the_relay_has_a_different_one() {
    let dir = tempfile::tempdir().unwrap();
    let wang = open(dir.path(), "wang", Role::Worker, "g1");
    let relay = ScriptedRelay::start(Script::wang());
    let config = SyncConfig::new(&relay.url, "gw_test");
    let sync = || {
        wang.sync(&config, &NoProgress, &CancelToken::new())
            .unwrap()
    };
    let names = || -> Vec<String> { wang.areas().unwrap().into_iter().map(|a| a.name).collect() };
    sync();
    assert_eq!(
        relay.script().area_fetches,
        1,
        "the first sync takes the tree"
    );
    sync();
    sync();
    assert_eq!(
        relay.script().area_fetches,
        1,
        "the same tree is not fetched again"
    );

    // An operator renames the grid: the version in /v1/me changes, the device fetches the tree.
    relay.script().areas[3].name = "Grid One".into();
    sync();
    assert_eq!(relay.script().area_fetches, 2);
    assert_eq!(names(), ["d1", "s1", "c1", "Grid One"]);
    sync();
    assert_eq!(relay.script().area_fetches, 2);

    // A local change of the tree is not the relay's tree: the next sync takes the relay's again.
    wang.upsert_area("g1", Some("c1"), AreaLevel::Grid, "Local name")
        .unwrap();
    sync();
    assert_eq!(relay.script().area_fetches, 3);
    assert_eq!(names(), ["d1", "s1", "c1", "Grid One"]);

    // The version survives reopening the store.
    drop(wang);
    let wang = Store::open(StoreOptions::new(
        dir.path().join("wang.db"),
        StoreKey::Raw(KEY),
    ))
    .unwrap();
    wang.sync(&config, &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(relay.script().area_fetches, 3);

    // A relay that says no version: the tree is fetched at every sync, as before.
    relay.script().areas_versioned = false;
    wang.sync(&config, &NoProgress, &CancelToken::new())
        .unwrap();
    wang.sync(&config, &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(relay.script().area_fetches, 5);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
