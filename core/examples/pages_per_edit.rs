//! How many pages a one-field edit writes, and to which tables (every page written is encrypted and
//! authenticated by SQLCipher: BENCHMARKS.md section 12):
//! `cargo run --release -p gridwork-core --example pages_per_edit [people]`.
//!
//! Makes 20,000 people (or as many as the argument says, in thousands rounded down) (`create_many`), closes and reopens the store (its WAL is emptied), edits the
//! phone of 500 random people (one transaction each, fewer pages than a WAL checkpoint waits for),
//! then reads the page number of every frame from the WAL's frame headers (SQLCipher leaves them in
//! the clear) and names each page's table or index with SQLite's `dbstat`.
use gridwork_core::store::open_connection;
use gridwork_core::*;
use std::collections::{BTreeMap, HashMap};

const PEOPLE: usize = 20_000;
const EDITS: usize = 500;
const KEY: [u8; 32] = [9; 32];

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.db");
    let open = || {
        Store::open(
            StoreOptions::new(&path, StoreKey::Raw(KEY)).identity(Identity {
                user_id: "zhou".into(),
                device_id: "zhou-phone".into(),
                role: Role::Supervisor,
                area: "c1".into(),
            }),
        )
        .unwrap()
    };
    let store = open();
    store
        .upsert_area("d1", None, AreaLevel::District, "District")
        .unwrap();
    store
        .upsert_area("s1", Some("d1"), AreaLevel::Street, "Street")
        .unwrap();
    store
        .upsert_area("c1", Some("s1"), AreaLevel::Community, "Community")
        .unwrap();
    for g in 0..40 {
        store
            .upsert_area(&format!("g{g}"), Some("c1"), AreaLevel::Grid, "Grid")
            .unwrap();
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the number of people"))
        .unwrap_or(PEOPLE);
    let mut ids = Vec::with_capacity(count);
    for batch in 0..count / 1000 {
        let people: Vec<NewRecord> = (0..1000)
            .map(|i| {
                let r = next();
                NewRecord::new(Kind::Person, format!("g{}", (batch * 1000 + i) % 40))
                    .field("name", format!("住户{}", r % 100_000))
                    .field("sex", "female")
                    .field("birth_date", "1950-01-02")
                    .field("phone", format!("139{:08}", r % 100_000_000))
                    .field("id_number", format!("{:018}", r % 10u64.pow(18)))
            })
            .collect();
        ids.extend(store.create_many(people).unwrap());
    }
    drop(store);
    let store = open();
    for _ in 0..EDITS {
        let r = next();
        let id = &ids[(r % ids.len() as u64) as usize];
        store
            .update(
                id,
                Update::new().set("phone", format!("138{:08}", r % 100_000_000)),
            )
            .unwrap();
    }
    // The WAL: a 32-byte header (page size at 8..12), then frames of a 24-byte header (page number at
    // 0..4) and the page.
    let wal = std::fs::read(dir.path().join("pages.db-wal")).unwrap();
    let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let pages: Vec<u32> = wal[32..]
        .chunks_exact(24 + page_size)
        .map(|frame| u32::from_be_bytes(frame[0..4].try_into().unwrap()))
        .collect();
    drop(store);
    let conn = open_connection(&path, &StoreKey::Raw(KEY), Durability::Normal).unwrap();
    let table_of: HashMap<u32, String> = conn
        .prepare("SELECT pageno, name FROM dbstat")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut per_table: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pages {
        *per_table
            .entry(table_of.get(p).map_or("(freed since)", String::as_str))
            .or_default() += 1;
    }
    let mut rows: Vec<(&str, usize)> = per_table.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    println!("| table or index | pages written per phone edit |");
    println!("|---|---|");
    for (table, n) in rows {
        println!("| {table} | {:.2} |", n as f64 / EDITS as f64);
    }
    println!(
        "| all ({EDITS} edits of {count} people, pages of {page_size} bytes) | {:.2} |",
        pages.len() as f64 / EDITS as f64
    );
}
