//! Test helper for `core/tests/crash.rs`: opens a store and writes until it is killed.
//!
//! Usage: `gridwork-crash-writer <store path> <round> <seed>`
//!
//! Before each write it prints `INTENT <what>` and after the write has committed `ACK <what>`, flushing
//! stdout each time, where `<what>` is `create <name> <phone>` or `update <id> <phone>`. The test kills
//! the process at a random moment and checks that everything acknowledged is in the store, and nothing
//! is there that was not at least intended.
use gridwork_core::{
    AreaLevel, Identity, Kind, ListQuery, NewRecord, Role, Store, StoreKey, StoreOptions, Update,
};
use rand::{Rng, SeedableRng};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: gridwork-crash-writer <store path> <round> <seed>");
        std::process::exit(2);
    }
    let round: u32 = args[2].parse().expect("round");
    let seed: u64 = args[3].parse().expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let store = Store::open(
        StoreOptions::new(&args[1], StoreKey::Raw([7u8; 32])).identity(Identity {
            user_id: "crash".into(),
            device_id: "crash-phone".into(),
            role: Role::Worker,
            area: "g1".into(),
        }),
    )
    .expect("open");
    if store.areas().expect("areas").is_empty() {
        for (id, parent, level) in [
            ("d1", None, AreaLevel::District),
            ("s1", Some("d1"), AreaLevel::Street),
            ("c1", Some("s1"), AreaLevel::Community),
            ("g1", Some("c1"), AreaLevel::Grid),
        ] {
            store.upsert_area(id, parent, level, id).expect("area");
        }
    }
    let mut ids: Vec<String> = store
        .list(&ListQuery::new(Kind::Person).limit(10_000))
        .expect("list")
        .items
        .into_iter()
        .map(|r| r.id)
        .collect();
    let out = std::io::stdout();
    let mut out = out.lock();
    println_flush(&mut out, &format!("READY {}", ids.len()));
    for n in 0u64.. {
        let phone = format!("1{:03}{:07}", round, n);
        if ids.is_empty() || rng.gen_bool(0.4) {
            let name = format!("crash-{round}-{n}");
            let what = format!("create {name} {phone}");
            println_flush(&mut out, &format!("INTENT {what}"));
            let id = store
                .create(
                    NewRecord::new(Kind::Person, "g1")
                        .field("name", name.as_str())
                        .field("phone", phone.as_str())
                        .notes("written by the crash test ".repeat(rng.gen_range(0..20))),
                )
                .expect("create");
            println_flush(&mut out, &format!("ACK {what} {id}"));
            ids.push(id);
        } else {
            let id = ids[rng.gen_range(0..ids.len())].clone();
            let what = format!("update {id} {phone}");
            println_flush(&mut out, &format!("INTENT {what}"));
            store
                .update(&id, Update::new().set("phone", phone.as_str()))
                .expect("update");
            println_flush(&mut out, &format!("ACK {what}"));
        }
    }
}

fn println_flush(out: &mut impl Write, line: &str) {
    // One write call per line, so a kill never leaves half a line that looks whole.
    out.write_all(format!("{line}\n").as_bytes())
        .expect("stdout");
    out.flush().expect("flush");
}
