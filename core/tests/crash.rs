//! Crash safety: a writer process is SIGKILLed at random moments, over and over, on the same store.
//! After every kill the store opens, holds every write the writer acknowledged (with its value), holds
//! nothing that was not at least about to be written, has a projection and an outbox that agree with the
//! documents, passes SQLite's integrity check, and takes new writes.
mod common;
use gridwork_core::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROUNDS: u32 = 20;

fn open_store(path: &std::path::Path) -> Store {
    Store::open(StoreOptions::new(path, StoreKey::Raw(common::KEY))).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Write {
    Create { name: String, phone: String },
    Update { id: String, phone: String },
}

fn parse(what: &[&str]) -> Write {
    match what {
        ["create", name, phone, ..] => Write::Create {
            name: name.to_string(),
            phone: phone.to_string(),
        },
        ["update", id, phone] => Write::Update {
            id: id.to_string(),
            phone: phone.to_string(),
        },
        _ => panic!("unexpected writer output {what:?}"),
    }
}

#[test]
fn killed_writers_lose_nothing_acknowledged() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    // The store exists before the first writer starts, so a kill that lands before the writer has even
    // opened it still leaves a store to check (the writer opens an existing store with the same identity).
    drop(
        Store::open(
            StoreOptions::new(&path, StoreKey::Raw(common::KEY)).identity(Identity {
                user_id: "crash".into(),
                device_id: "crash-phone".into(),
                role: Role::Worker,
                area: "g1".into(),
            }),
        )
        .unwrap(),
    );
    // id -> (name, phone) of every write that is known durable.
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut acks = 0usize;
    let mut killed_in_flight = 0usize;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridwork-crash-writer"))
            .arg(&path)
            .arg(round.to_string())
            .arg(rng.gen::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..=300)));
        // SIGKILL: no destructor, no checkpoint, no flush runs.
        let still_running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            still_running,
            "round {round}: the writer stopped by itself ({status}): {stderr}"
        );

        // Only whole lines count; the last one may have been cut by the kill.
        let complete = match stdout.rfind('\n') {
            Some(end) => &stdout[..=end],
            None => "",
        };
        let mut in_flight: Option<Write> = None;
        for line in complete.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words[0] {
                "READY" => {}
                "INTENT" => in_flight = Some(parse(&words[1..])),
                "ACK" => {
                    let write = parse(&words[1..]);
                    assert_eq!(
                        in_flight.take().as_ref(),
                        Some(&write),
                        "ack without intent"
                    );
                    acks += 1;
                    match write {
                        Write::Create { name, phone } => {
                            let id = words[4].to_string();
                            assert!(expected.insert(id, (name, phone)).is_none());
                        }
                        Write::Update { id, phone } => {
                            expected.get_mut(&id).expect("known record").1 = phone;
                        }
                    }
                }
                other => panic!("round {round}: unexpected line {other:?}"),
            }
        }
        if in_flight.is_some() {
            killed_in_flight += 1;
        }

        // Reopen after the crash and compare with what was acknowledged.
        let store = open_store(&path);
        store.check_integrity().unwrap();
        let mut stored: BTreeMap<String, Record> = BTreeMap::new();
        for id in store.record_ids().unwrap() {
            stored.insert(id.clone(), store.get(&id).unwrap());
        }
        // A write that was under way when the process died may or may not have committed, but whole.
        match &in_flight {
            Some(Write::Create { name, phone }) => {
                let extra: Vec<&Record> = stored
                    .values()
                    .filter(|r| !expected.contains_key(&r.id))
                    .collect();
                match extra.as_slice() {
                    [] => {}
                    [r] => {
                        assert_eq!(r.field("name"), Some(name.as_str()), "round {round}");
                        assert_eq!(r.field("phone"), Some(phone.as_str()), "round {round}");
                        expected.insert(r.id.clone(), (name.clone(), phone.clone()));
                    }
                    more => panic!("round {round}: {} unexpected records", more.len()),
                }
            }
            Some(Write::Update { id, phone }) => {
                if stored[id].field("phone") == Some(phone.as_str()) {
                    expected.get_mut(id).unwrap().1 = phone.clone();
                }
            }
            None => {}
        }
        let stored_ids: BTreeSet<&String> = stored.keys().collect();
        let expected_ids: BTreeSet<&String> = expected.keys().collect();
        assert_eq!(stored_ids, expected_ids, "round {round}: records differ");
        for (id, (name, phone)) in &expected {
            let r = &stored[id];
            assert_eq!(r.field("name"), Some(name.as_str()), "round {round}: {id}");
            assert_eq!(
                r.field("phone"),
                Some(phone.as_str()),
                "round {round}: acknowledged phone of {id} lost"
            );
        }
        // The projection and the outbox were written in the same transactions as the documents.
        let rows = store
            .list(&ListQuery::new(Kind::Person).limit(10_000))
            .unwrap()
            .items;
        assert_eq!(rows.len(), stored.len(), "round {round}: projection rows");
        for row in rows {
            assert_eq!(
                row.fields, stored[&row.id].fields,
                "round {round}: projection of {}",
                row.id
            );
        }
        let changes: usize = stored
            .keys()
            .map(|id| store.history(id).unwrap().len())
            .sum();
        assert_eq!(
            store.outbox_len().unwrap() as usize,
            changes,
            "round {round}: every change is queued exactly once"
        );
        assert_eq!(store.held_len().unwrap(), 0);
    }
    eprintln!(
        "{ROUNDS} rounds, {acks} acknowledged writes, {} records, {killed_in_flight} kills during a write",
        expected.len()
    );
    assert!(
        acks >= ROUNDS as usize,
        "the writer barely wrote ({acks} writes)"
    );
    assert!(
        killed_in_flight > 0,
        "no kill landed while a write was under way"
    );

    // The store still works.
    let store = open_store(&path);
    let id = store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "After the crashes")
                .field("phone", "13800000000"),
        )
        .unwrap();
    let some = expected.keys().next().unwrap().clone();
    store
        .update(&some, Update::new().set("phone", "13900000000"))
        .unwrap();
    drop(store);
    let store = open_store(&path);
    assert_eq!(
        store.get(&id).unwrap().field("name"),
        Some("After the crashes")
    );
    assert_eq!(
        store.get(&some).unwrap().field("phone"),
        Some("13900000000")
    );
    store.check_integrity().unwrap();
}
