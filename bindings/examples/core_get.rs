//! The baseline for the FFI overhead figures: the same calls as bindings/benches/kotlin/FfiOverhead.kt,
//! made directly on gridwork-core, plus the same calls through the FFI façade's Rust API (conversion
//! of core types to FFI records, without crossing into a foreign language).
//! Run: `cargo run --release -p gridwork-ffi --example core_get [calls]` (bindings/scripts/bench-ffi.sh).
use gridwork_core::{AreaLevel, Identity, Kind, NewRecord, Role, Store, StoreKey, StoreOptions};
use gridwork_ffi::types::NewRecord as FfiNewRecord;
use gridwork_ffi::GridworkStore;
use std::hint::black_box;
use std::time::Instant;

fn ns_per_call(calls: u32, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    for _ in 0..calls {
        f();
    }
    t0.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn best_of_5(calls: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        ns_per_call(calls, &mut f);
    }
    (0..5)
        .map(|_| ns_per_call(calls, &mut f))
        .fold(f64::MAX, f64::min)
}

fn person() -> NewRecord {
    NewRecord::new(Kind::Person, "g1")
        .field("name", "陈建国")
        .field("sex", "male")
        .field("birth_date", "1950-01-01")
        .field("phone", "+86 139 0000 0000")
        .field("id_number", "110101195001011234")
        .attr("hukou", "local")
        .tag("needs care")
        .tag("lives alone")
        .notes("x".repeat(500))
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");

    let store = Store::open(
        StoreOptions::new(dir.path().join("core.db"), StoreKey::Raw([7; 32])).identity(Identity {
            user_id: "wang".into(),
            device_id: "wang-phone".into(),
            role: Role::Worker,
            area: "g1".into(),
        }),
    )
    .expect("open");
    for (id, parent, level, name) in [
        ("d1", None, AreaLevel::District, "East District"),
        ("s1", Some("d1"), AreaLevel::Street, "River Street"),
        ("c1", Some("s1"), AreaLevel::Community, "Willow Community"),
        ("g1", Some("c1"), AreaLevel::Grid, "Grid 1"),
    ] {
        store.upsert_area(id, parent, level, name).expect("area");
    }
    let id = store.create(person()).expect("create");
    let get = best_of_5(calls, || {
        black_box(store.get(black_box(&id)).expect("get"));
    });
    let scope = best_of_5(calls, || {
        black_box(store.in_scope(black_box("g1")));
    });
    println!("rust-core get(): {get:.0} ns/call ({calls} calls, best of 5)");
    println!("rust-core in_scope(): {scope:.0} ns/call ({calls} calls, best of 5)");

    let ffi = GridworkStore::open(
        dir.path().join("ffi.db").to_string_lossy().into_owned(),
        vec![7; 32],
        "wang".into(),
        "wang-phone".into(),
        Role::Worker,
        "g1".into(),
    )
    .expect("open");
    for area in store.areas().expect("areas") {
        ffi.upsert_area(area.id, area.parent, area.level, area.name)
            .expect("area");
    }
    let p = person();
    let id = ffi
        .create(FfiNewRecord {
            kind: Kind::Person,
            area: p.area,
            fields: p.fields.into_iter().collect(),
            attrs: p.attrs.into_iter().collect(),
            tags: p.tags,
            notes: p.notes,
        })
        .expect("create");
    let get = best_of_5(calls, || {
        black_box(ffi.get(black_box(id.clone())).expect("get"));
    });
    println!("rust-facade get(): {get:.0} ns/call ({calls} calls, best of 5; core + FFI record conversion)");
}
