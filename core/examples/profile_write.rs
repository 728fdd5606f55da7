//! Ad-hoc timing of the write and apply paths: `cargo run --release -p gridwork-core --example profile_write`.
use gridwork_core::*;
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, user: &str| {
        let s = Store::open(
            StoreOptions::new(dir.path().join(name), StoreKey::Raw([5; 32])).identity(Identity {
                user_id: user.into(),
                device_id: format!("{user}-dev"),
                role: Role::Worker,
                area: "g1".into(),
            }),
        )
        .unwrap();
        s.upsert_area("g1", None, AreaLevel::District, "g").unwrap();
        s
    };
    let a = open("a.db", "a");
    let t = Instant::now();
    for i in 0..n {
        a.create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", format!("王小明{i}"))
                .field("phone", format!("139{i:08}")),
        )
        .unwrap();
    }
    let e = t.elapsed();
    println!(
        "create: {n} in {:.2}s = {:.0}/s",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64()
    );
    let ids = a.record_ids().unwrap();
    let t = Instant::now();
    for (i, id) in ids.iter().cycle().take(n).enumerate() {
        a.update(id, Update::new().set("phone", format!("138{i:08}")))
            .unwrap();
    }
    let e = t.elapsed();
    println!(
        "edit: {n} in {:.2}s = {:.0}/s",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64()
    );
    if std::env::var("ONLY_EDIT").is_ok() {
        return;
    }
    let docs: Vec<RemoteChunk> = a
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| RemoteChunk {
            bytes: a.export_document(&id).unwrap(),
            record_id: id,
        })
        .collect();
    let b = open("b.db", "b");
    let t = Instant::now();
    for chunk in docs.chunks(2000) {
        b.apply_remote(chunk).unwrap();
    }
    let e = t.elapsed();
    println!(
        "apply whole docs: {n} in {:.2}s = {:.0}/s",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64()
    );
}
