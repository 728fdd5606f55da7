#![allow(dead_code)]
use gridwork_core::{AreaLevel, Identity, Role, Store, StoreKey, StoreOptions};
use std::path::Path;

pub const KEY: [u8; 32] = [7u8; 32];

/// d1 > s1 > c1 > {g1, g2}
pub fn add_areas(store: &Store) {
    store
        .upsert_area("d1", None, AreaLevel::District, "East District")
        .unwrap();
    store
        .upsert_area("s1", Some("d1"), AreaLevel::Street, "River Street")
        .unwrap();
    store
        .upsert_area("c1", Some("s1"), AreaLevel::Community, "Willow Community")
        .unwrap();
    store
        .upsert_area("g1", Some("c1"), AreaLevel::Grid, "Grid 1")
        .unwrap();
    store
        .upsert_area("g2", Some("c1"), AreaLevel::Grid, "Grid 2")
        .unwrap();
}

pub fn identity(user: &str, device: &str, role: Role, area: &str) -> Identity {
    Identity {
        user_id: user.into(),
        device_id: device.into(),
        role,
        area: area.into(),
    }
}

pub fn open(dir: &Path, user: &str, role: Role, area: &str) -> Store {
    let store =
        Store::open(
            StoreOptions::new(dir.join(format!("{user}.db")), StoreKey::Raw(KEY))
                .identity(identity(user, &format!("{user}-phone"), role, area)),
        )
        .unwrap();
    add_areas(&store);
    store
}

/// An event in g1 that `s` (a supervisor) reports, assigns to wang, starts and resolves.
pub fn resolved_event(s: &Store, title: &str) -> String {
    use gridwork_core::{EventAction, Kind, NewRecord};
    let ev = s
        .create(NewRecord::new(Kind::Event, "g1").field("title", title))
        .unwrap();
    let assign = EventAction::Assign {
        assignee: "wang".into(),
    };
    for action in [assign, EventAction::Start, EventAction::Resolve] {
        s.transition(&ev, action, None).unwrap();
    }
    ev
}

/// Sends every change of `from` to `to`.
pub fn exchange(from: &Store, to: &Store) {
    let chunks = from.all_changes().unwrap();
    to.apply_remote(&chunks).unwrap();
}
