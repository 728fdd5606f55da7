//! Store benchmarks, each beside a plain-rusqlite baseline doing the same job in the same run on a file
//! with the same key and pragmas (the baseline opens its file with the store's own `open_connection`).
//!
//! Run: `cargo bench -p gridwork-core --bench store`
//! Sizes: `GRIDWORK_BENCH_N` (people, default 100000); `GRIDWORK_BENCH_QUICK=1` for a small smoke run.
//! `GRIDWORK_BENCH_ONLY=enc|plain` runs one of the two store kinds.
//! `cargo bench -p gridwork-core --bench store -- edit` stops after the edit measures (a) and (a'),
//! which need only the bulk create (b) before them: a quick before/after check of the write path.
use gridwork_core::store::open_connection;
use gridwork_core::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RAW_KEY: [u8; 32] = [9u8; 32];
const GRID_SIZE: usize = 500;
const BATCH: usize = 1000;

#[derive(Clone, Copy)]
struct Config {
    n: usize,
    single_creates: usize,
    edits: usize,
    searches: usize,
    size_records: usize,
    quick: bool,
    /// Stop after the edit measures (`-- edit`).
    edits_only: bool,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("GRIDWORK_BENCH_QUICK").is_ok_and(|v| v != "0");
        let n = std::env::var("GRIDWORK_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 5_000 } else { 100_000 });
        Config {
            n,
            single_creates: (n / 20).clamp(100, 5_000),
            edits: if quick { 500 } else { 5_000 },
            searches: if quick { 50 } else { 400 },
            size_records: if quick { 500 } else { n.min(5_000) },
            quick,
            edits_only: std::env::args().skip(1).any(|a| a == "edit"),
        }
    }
    fn grids(&self) -> usize {
        self.n.div_ceil(GRID_SIZE).max(1)
    }
}

// ------------------------------------------------------------------------------------------ data

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁",
    "任", "沈", "欧阳", "诸葛", "司马", "上官",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "秀", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
    "明", "超", "霞", "平", "刚", "桂", "英", "华", "建", "国", "文", "玉", "兰", "萍", "红", "小",
    "志", "春", "晓", "海", "云", "鹏", "飞", "辉", "宇", "欣", "怡", "佳", "琳", "婷", "慧", "梅",
    "凤", "新",
];
const LATIN_SURNAMES: &[&str] = &[
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma",
    "Zhu", "Hu", "Guo", "He", "Gao", "Lin", "Luo", "Smith", "Lopez", "Nguyen", "Kim", "Ivanova",
    "Garcia", "Muller", "Rossi", "Tanaka", "Silva",
];
const LATIN_GIVEN: &[&str] = &[
    "Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang", "Yong", "Yan", "Jie",
    "Tao", "Ming", "Chao", "Xia", "Ping", "Gang", "Hua", "Maria", "John", "Anna", "David", "Olga",
    "Carlos", "Sofia", "Yuki", "Hans", "Lucia",
];

fn name(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.7) {
        let mut s = SURNAMES.choose(rng).unwrap().to_string();
        for _ in 0..rng.gen_range(1..=2) {
            s.push_str(GIVEN.choose(rng).unwrap());
        }
        s
    } else {
        format!(
            "{} {}",
            LATIN_GIVEN.choose(rng).unwrap(),
            LATIN_SURNAMES.choose(rng).unwrap()
        )
    }
}

/// A search fragment of the kind people type: one or two Chinese characters, or three Latin letters.
fn fragment(rng: &mut StdRng) -> String {
    let n = name(rng);
    if n.is_ascii() {
        let word = n.split(' ').collect::<Vec<_>>()[rng.gen_range(0..2)];
        word.chars().take(3).collect()
    } else {
        let chars: Vec<char> = n.chars().collect();
        if rng.gen_bool(0.2) || chars.len() < 2 {
            chars[chars.len() - 1].to_string()
        } else {
            let at = rng.gen_range(0..chars.len() - 1);
            chars[at..at + 2].iter().collect()
        }
    }
}

fn phone(rng: &mut StdRng) -> String {
    format!(
        "1{}{:09}",
        rng.gen_range(3..=9),
        rng.gen_range(0..1_000_000_000u64)
    )
}

#[derive(Clone)]
struct Person {
    area: String,
    name: String,
    sex: &'static str,
    birth_date: String,
    phone: String,
    id_number: String,
}

fn person(rng: &mut StdRng, i: usize, grids: usize) -> Person {
    Person {
        area: format!("g{}", i % grids),
        name: name(rng),
        sex: ["female", "male"][rng.gen_range(0..2)],
        birth_date: format!(
            "{}-{:02}-{:02}",
            rng.gen_range(1930..2020),
            rng.gen_range(1..=12),
            rng.gen_range(1..=28)
        ),
        phone: phone(rng),
        id_number: format!(
            "{:017}{}",
            rng.gen_range(0..10u64.pow(17)),
            rng.gen_range(0..10)
        ),
    }
}

impl Person {
    fn new_record(&self) -> NewRecord {
        NewRecord::new(Kind::Person, self.area.as_str())
            .field("name", self.name.as_str())
            .field("sex", self.sex)
            .field("birth_date", self.birth_date.as_str())
            .field("phone", self.phone.as_str())
            .field("id_number", self.id_number.as_str())
    }
}

// ------------------------------------------------------------------------------------------ helpers

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Encrypted,
    Plain,
}

impl Variant {
    fn key(self) -> StoreKey {
        match self {
            Variant::Encrypted => StoreKey::Raw(RAW_KEY),
            Variant::Plain => StoreKey::None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Variant::Encrypted => "enc",
            Variant::Plain => "plain",
        }
    }
    fn parse(s: &str) -> Variant {
        if s == "enc" {
            Variant::Encrypted
        } else {
            Variant::Plain
        }
    }
}

fn identity(user: &str) -> Identity {
    Identity {
        user_id: user.into(),
        device_id: format!("{user}-phone"),
        role: Role::Supervisor,
        area: "c1".into(),
    }
}

fn open_store(path: &Path, v: Variant, user: Option<&str>) -> Store {
    let mut options = StoreOptions::new(path, v.key());
    options.identity = user.map(identity);
    Store::open(options).unwrap()
}

fn add_areas(store: &Store, grids: usize) {
    store
        .upsert_area("d1", None, AreaLevel::District, "District")
        .unwrap();
    store
        .upsert_area("s1", Some("d1"), AreaLevel::Street, "Street")
        .unwrap();
    store
        .upsert_area("c1", Some("s1"), AreaLevel::Community, "Community")
        .unwrap();
    for g in 0..grids {
        store
            .upsert_area(
                &format!("g{g}"),
                Some("c1"),
                AreaLevel::Grid,
                &format!("Grid {g}"),
            )
            .unwrap();
    }
}

/// The baseline's statistics and duplicate candidates: counts per grid and the people sharing an ID
/// number or a name and birth date (beside the store's `statistics()` and `duplicates()`).
fn baseline_counts(c: &Connection) {
    for sql in [
        "SELECT area, count(*) FROM people GROUP BY area",
        "SELECT id_number FROM people GROUP BY id_number HAVING count(*) > 1",
        "SELECT name, birth_date FROM people GROUP BY name, birth_date HAVING count(*) > 1",
    ] {
        c.prepare(sql)
            .unwrap()
            .query_map([], |_| Ok(()))
            .unwrap()
            .count();
    }
}

fn baseline_conn(path: &Path, v: Variant) -> Connection {
    open_connection(path, &v.key(), Durability::Normal).unwrap()
}

/// The baseline table: the columns of the person projection plus the id and area a record row has.
const BASELINE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS people (
        rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, area TEXT NOT NULL, name TEXT, sex TEXT,
        birth_date TEXT, phone TEXT, id_number TEXT, home_place TEXT,
        a1 TEXT, a2 TEXT, a3 TEXT, a4 TEXT);
    CREATE INDEX IF NOT EXISTS people_area ON people (area, name);
    CREATE TABLE IF NOT EXISTS changes (hash BLOB PRIMARY KEY, record_id TEXT NOT NULL, bytes BLOB NOT NULL);";

fn rate(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn file_bytes(db: &Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(m) = std::fs::metadata(&p) {
            total += m.len();
        }
    }
    total
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------ results

struct Row {
    metric: String,
    store: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

struct Results {
    variant: Variant,
    rows: Vec<Row>,
}

impl Results {
    fn add(
        &mut self,
        metric: &str,
        store: String,
        baseline: String,
        ratio: String,
        target: &str,
        met: Option<bool>,
    ) {
        let row = Row {
            metric: metric.into(),
            store,
            baseline,
            ratio,
            target: target.into(),
            met,
        };
        eprintln!(
            "  [{}] {}: store {} | baseline {} | {} | target {} {}",
            self.variant.name(),
            row.metric,
            row.store,
            row.baseline,
            row.ratio,
            row.target,
            match row.met {
                Some(true) => "MET",
                Some(false) => "NOT MET",
                None => "",
            }
        );
        self.rows.push(row);
    }
}

// ------------------------------------------------------------------------------------------ the run

fn run_variant(cfg: Config, v: Variant, dir: &Path) -> Results {
    let mut res = Results {
        variant: v,
        rows: Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(42);
    let grids = cfg.grids();
    let store_path = dir.join(format!("store-{}.db", v.name()));
    let base_path = dir.join(format!("baseline-{}.db", v.name()));
    let people: Vec<Person> = (0..cfg.n).map(|i| person(&mut rng, i, grids)).collect();
    eprintln!("[{}] {} people in {grids} grids", v.name(), cfg.n);

    // (b) bulk create -----------------------------------------------------------------------
    let store = open_store(&store_path, v, Some("bench"));
    add_areas(&store, grids);
    let k = cfg.single_creates.min(cfg.n);
    let t = Instant::now();
    let mut ids: Vec<String> = Vec::with_capacity(cfg.n);
    for p in &people[..k] {
        ids.push(store.create(p.new_record()).unwrap());
    }
    let single = rate(k, t.elapsed());
    let t = Instant::now();
    for chunk in people[k..].chunks(BATCH) {
        ids.extend(
            store
                .create_many(chunk.iter().map(Person::new_record).collect())
                .unwrap(),
        );
    }
    let many = rate(cfg.n - k, t.elapsed());

    let mut base = baseline_conn(&base_path, v);
    base.execute_batch(BASELINE_SCHEMA).unwrap();
    let t = Instant::now();
    for (c, chunk) in people.chunks(BATCH).enumerate() {
        let tx = base.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO people (id, area, name, sex, birth_date, phone, id_number)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for (j, p) in chunk.iter().enumerate() {
                stmt.execute(params![
                    ids[c * BATCH + j],
                    p.area,
                    p.name,
                    p.sex,
                    p.birth_date,
                    p.phone,
                    p.id_number
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let base_insert = rate(cfg.n, t.elapsed());
    res.add(
        "(b) create, one transaction each (records/s)",
        format!("{single:.0}"),
        "-".into(),
        "-".into(),
        ">= 15,000/s",
        Some(single >= 15_000.0),
    );
    res.add(
        &format!("(b) create_many, batches of {BATCH} (records/s)"),
        format!("{many:.0}"),
        format!("{base_insert:.0}"),
        format!("{:.1}x slower", base_insert / many),
        ">= 15,000/s",
        Some(many >= 15_000.0),
    );

    // (a) single-field edit ------------------------------------------------------------------
    let mut edit_targets: Vec<usize> = (0..cfg.edits).map(|_| rng.gen_range(0..cfg.n)).collect();
    let phones: Vec<String> = (0..cfg.edits).map(|_| phone(&mut rng)).collect();
    let mut edits: Vec<(String, String)> = Vec::new();
    let t = Instant::now();
    let mut one_edit = Vec::with_capacity(cfg.edits);
    for (i, &r) in edit_targets.iter().enumerate() {
        let e = Instant::now();
        store
            .update(&ids[r], Update::new().set("phone", phones[i].as_str()))
            .unwrap();
        one_edit.push(e.elapsed());
        edits.push((ids[r].clone(), phones[i].clone()));
    }
    let edit_rate = rate(cfg.edits, t.elapsed());
    // The same with a hot set: 100 records edited in turn (documents stay cached).
    edit_targets.truncate(100);
    let t = Instant::now();
    for i in 0..cfg.edits {
        let r = edit_targets[i % edit_targets.len()];
        store
            .update(
                &ids[r],
                Update::new().set("phone", phones[(i + 1) % cfg.edits].as_str()),
            )
            .unwrap();
        edits.push((ids[r].clone(), phones[(i + 1) % cfg.edits].clone()));
    }
    let hot_rate = rate(cfg.edits, t.elapsed());
    let t = Instant::now();
    let mut one_base_edit = Vec::with_capacity(cfg.edits);
    for (id, phone) in &edits[..cfg.edits] {
        let e = Instant::now();
        base.prepare_cached("UPDATE people SET phone = ?1 WHERE id = ?2")
            .unwrap()
            .execute(params![phone, id])
            .unwrap();
        one_base_edit.push(e.elapsed());
    }
    let base_edit = rate(cfg.edits, t.elapsed());
    one_edit.sort();
    one_base_edit.sort();
    let at = |v: &[Duration], p: f64| ms(percentile(v, p));
    let over = |v: &[Duration]| v.iter().filter(|d| **d > Duration::from_millis(10)).count();
    let waits = |v: &[Duration], digits: usize| {
        format!(
            "{:.*} / {:.*} / {:.1}, {}",
            digits,
            at(v, 0.5),
            digits,
            at(v, 0.99),
            at(v, 1.0),
            over(v)
        )
    };
    res.add(
        "(a) 1-field edit, random record, own transaction (edits/s)",
        format!("{edit_rate:.0}"),
        format!("{base_edit:.0}"),
        format!("{:.1}x slower", base_edit / edit_rate),
        ">= 4,000/s and <= 3x baseline",
        Some(edit_rate >= 4_000.0 && base_edit / edit_rate <= 3.0),
    );
    res.add(
        "(a) one of those edits: p50 / p99 / max (ms), edits over 10 ms",
        waits(&one_edit, 2),
        waits(&one_base_edit, 3),
        format!(
            "{:.1}x at max",
            at(&one_edit, 1.0) / at(&one_base_edit, 1.0)
        ),
        "(info: the longest wait of a caller)",
        None,
    );
    res.add(
        "(a') 1-field edit, 100 hot records (edits/s)",
        format!("{hot_rate:.0}"),
        format!("{base_edit:.0}"),
        format!("{:.1}x slower", base_edit / hot_rate),
        "(info)",
        None,
    );
    if cfg.edits_only {
        return res;
    }

    // (d) search ------------------------------------------------------------------------------
    let fragments: Vec<String> = (0..cfg.searches).map(|_| fragment(&mut rng)).collect();
    let mut times = Vec::new();
    let mut hits = 0usize;
    for f in &fragments {
        let t = Instant::now();
        hits += store.search(f, Some(Kind::Person), 50).unwrap().len();
        times.push(t.elapsed());
    }
    times.sort();
    let mut btimes = Vec::new();
    let mut bhits = 0usize;
    for f in &fragments {
        let t = Instant::now();
        let mut stmt = base
            .prepare_cached(
                "SELECT rid, id, area, name, sex, birth_date, phone, id_number FROM people
                 WHERE name LIKE ?1 LIMIT 50",
            )
            .unwrap();
        let rows = stmt
            .query_map([format!("%{f}%")], |r| r.get::<_, String>(1))
            .unwrap();
        bhits += rows.count();
        btimes.push(t.elapsed());
    }
    btimes.sort();
    let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
    let (b50, b95) = (percentile(&btimes, 0.5), percentile(&btimes, 0.95));
    res.add(
        &format!(
            "(d) search {} people by a name fragment, limit 50: p50 / p95 (ms)",
            cfg.n
        ),
        format!("{:.2} / {:.2}", ms(p50), ms(p95)),
        format!("{:.2} / {:.2}", ms(b50), ms(b95)),
        format!("{:.2}x p50", ms(p50) / ms(b50)),
        "p50 <= 5 ms",
        Some(ms(p50) <= 5.0),
    );
    eprintln!(
        "    search hits: store {hits}, LIKE {bhits} (LIKE is case-insensitive and also matches inside words)"
    );

    // (c) apply remote changes ----------------------------------------------------------------
    let changes: Vec<RemoteChunk> = store
        .outbox(u32::MAX)
        .unwrap()
        .into_iter()
        .map(|c| RemoteChunk {
            record_id: c.record_id,
            bytes: c.bytes,
        })
        .collect();
    // What the relay sends with a pull page: the record's view on its latest entry.
    let views_now: std::collections::HashMap<String, Record> = ids
        .iter()
        .map(|id| (id.clone(), store.get(id).unwrap()))
        .collect();
    let mut last_entry: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last_entry.insert(c.record_id.as_str(), i);
    }
    drop(store);
    drop(base);
    let replica_path = dir.join(format!("replica-{}.db", v.name()));
    let replica = open_store(&replica_path, v, Some("replica"));
    add_areas(&replica, grids);
    let t = Instant::now();
    for batch in changes.chunks(BATCH) {
        let report = replica.apply_remote(batch).unwrap();
        assert_eq!(report.malformed + report.held, 0);
    }
    let apply = rate(changes.len(), t.elapsed());
    drop(replica);
    // (c') the same changes as pull pages carry them, with the relay's view on each record's latest
    // entry: records are stored without loading their documents. In pages of BATCH, and (c'') of
    // the sync client's page size.
    let apply_with_views = |page: usize| -> f64 {
        let viewed = open_store(
            &dir.join(format!("replica-views-{page}-{}.db", v.name())),
            v,
            Some("replica"),
        );
        add_areas(&viewed, grids);
        let pages: Vec<std::collections::HashMap<String, Record>> = changes
            .chunks(page)
            .enumerate()
            .map(|(b, batch)| {
                batch
                    .iter()
                    .enumerate()
                    .filter(|(j, c)| last_entry[c.record_id.as_str()] == b * page + j)
                    .map(|(_, c)| (c.record_id.clone(), views_now[&c.record_id].clone()))
                    .collect()
            })
            .collect();
        let t = Instant::now();
        for (batch, views) in changes.chunks(page).zip(&pages) {
            let report = viewed.apply_page(batch, views).unwrap();
            assert_eq!(report.malformed + report.held, 0);
        }
        let measured = rate(changes.len(), t.elapsed());
        // Outside the timing: every view reads as its document does.
        viewed.check_views(u32::MAX).unwrap();
        assert_eq!(viewed.view_repairs().unwrap(), 0);
        measured
    };
    // The plain baseline: the same changes into a plain table, `batch_size` per transaction.
    let baseline_apply = |batch_size: usize| -> f64 {
        let mut rbase = baseline_conn(
            &dir.join(format!("replica-base-{batch_size}-{}.db", v.name())),
            v,
        );
        rbase.execute_batch(BASELINE_SCHEMA).unwrap();
        let t = Instant::now();
        let mut seen = 0usize;
        for batch in changes.chunks(batch_size) {
            let tx = rbase.transaction().unwrap();
            for c in batch {
                let hash = {
                    use sha2::Digest;
                    sha2::Sha256::digest(&c.bytes).to_vec()
                };
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO changes (hash, record_id, bytes) VALUES (?1, ?2, ?3)",
                )
                .unwrap()
                .execute(params![hash, c.record_id, c.bytes])
                .unwrap();
                if seen < cfg.n {
                    let p = &people[seen];
                    tx.prepare_cached(
                        "INSERT INTO people (id, area, name, sex, birth_date, phone, id_number)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .unwrap()
                    .execute(params![
                        c.record_id,
                        p.area,
                        p.name,
                        p.sex,
                        p.birth_date,
                        p.phone,
                        p.id_number
                    ])
                    .unwrap();
                } else {
                    let (id, phone) = &edits[seen - cfg.n];
                    tx.prepare_cached("UPDATE people SET phone = ?1 WHERE id = ?2")
                        .unwrap()
                        .execute(params![phone, id])
                        .unwrap();
                }
                seen += 1;
            }
            tx.commit().unwrap();
        }
        rate(changes.len(), t.elapsed())
    };
    let apply_views = apply_with_views(BATCH);
    let base_apply = baseline_apply(BATCH);
    let client_page = gridwork_core::SyncConfig::new("", "").page_size as usize;
    let apply_client_pages = apply_with_views(client_page);
    let base_client_pages = baseline_apply(client_page);
    res.add(
        &format!(
            "(c) apply {} remote changes in batches of {BATCH} (changes/s)",
            changes.len()
        ),
        format!("{apply:.0}"),
        format!("{base_apply:.0}"),
        format!("{:.1}x slower", base_apply / apply),
        ">= 10,000/s",
        Some(apply >= 10_000.0),
    );
    res.add(
        &format!(
            "(c') apply the same {} changes as pull pages with the relay's views (changes/s)",
            changes.len()
        ),
        format!("{apply_views:.0}"),
        format!("{base_apply:.0}"),
        format!("{:.1}x slower", base_apply / apply_views),
        ">= 20,000/s",
        Some(apply_views >= 20_000.0),
    );
    res.add(
        &format!(
            "(c'') the same at the sync client's page size, {client_page} changes per page (changes/s)"
        ),
        format!("{apply_client_pages:.0}"),
        format!("{base_client_pages:.0}"),
        format!("{:.1}x slower", base_client_pages / apply_client_pages),
        ">= 20,000/s",
        Some(apply_client_pages >= 20_000.0),
    );

    // (e) open and list one grid ----------------------------------------------------------------
    let mut opens = Vec::new();
    let mut lists = Vec::new();
    let mut listed = 0;
    for round in 0..5 {
        let grid = format!("g{}", (round * 7) % grids);
        let t = Instant::now();
        let s = open_store(&store_path, v, None);
        let opened = t.elapsed();
        let page = s
            .list(&ListQuery::new(Kind::Person).area(grid).limit(500))
            .unwrap();
        listed = page.items.len();
        lists.push(t.elapsed() - opened);
        opens.push(t.elapsed());
        drop(s);
    }
    opens.sort();
    lists.sort();
    let mut bopens = Vec::new();
    for round in 0..5 {
        let grid = format!("g{}", (round * 7) % grids);
        let t = Instant::now();
        let c = baseline_conn(&base_path, v);
        let n = c
            .prepare(
                "SELECT rid, id, area, name, sex, birth_date, phone, id_number, home_place FROM people
                 WHERE area = ?1 ORDER BY name COLLATE NOCASE LIMIT 500",
            )
            .unwrap()
            .query_map([grid], |r| r.get::<_, String>(1))
            .unwrap()
            .count();
        assert!(n > 0);
        bopens.push(t.elapsed());
    }
    bopens.sort();
    res.add(
        &format!(
            "(e) open a {}-record store + list one grid's {listed} people (ms, median of 5)",
            cfg.n
        ),
        format!("{:.1} (list alone {:.1})", ms(opens[2]), ms(lists[2])),
        format!("{:.1}", ms(bopens[2])),
        format!("{:.1}x", ms(opens[2]) / ms(bopens[2])),
        "<= 100 ms",
        Some(ms(opens[2]) <= 100.0),
    );

    // (h) statistics and duplicate candidates over the whole store -------------------------------
    let s = open_store(&store_path, v, None);
    let median_of_3 = |f: &dyn Fn()| -> Duration {
        let mut times: Vec<Duration> = (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        times.sort();
        times[1]
    };
    let stats_time = median_of_3(&|| {
        s.statistics(&gridwork_core::stats::StatsQuery::default())
            .unwrap();
    });
    let dups_time = median_of_3(&|| {
        s.duplicates(None).unwrap();
    });
    drop(s);
    let c = baseline_conn(&base_path, v);
    let group_by_time = median_of_3(&|| baseline_counts(&c));
    drop(c);
    res.add(
        &format!(
            "(h) statistics() / duplicates() over the {}-record store (ms, median of 3)",
            cfg.n
        ),
        format!("{:.0} / {:.0}", ms(stats_time), ms(dups_time)),
        format!("{:.0} (GROUP BY counts)", ms(group_by_time)),
        format!("{:.1}x", ms(stats_time) / ms(group_by_time)),
        "(info)",
        None,
    );

    // (g) peak memory of a process working on the store ------------------------------------------
    let exe = std::env::current_exe().unwrap();
    let child = |what: &str, path: &Path| -> u64 {
        let out = std::process::Command::new(&exe)
            .args([
                "--child",
                what,
                path.to_str().unwrap(),
                v.name(),
                &grids.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmHWM_kB ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .expect("child reports VmHWM")
    };
    let store_kb = child("store", &store_path);
    let base_kb = child("baseline", &base_path);
    res.add(
        &format!(
            "(g) peak RSS (VmHWM) of a process working on the {}-record store (MB)",
            cfg.n
        ),
        format!("{:.1}", store_kb as f64 / 1024.0),
        format!("{:.1}", base_kb as f64 / 1024.0),
        format!("+{:.1} MB", (store_kb as f64 - base_kb as f64) / 1024.0),
        "<= 64 MB",
        Some(store_kb <= 64 * 1024),
    );

    // (f) bytes on disk per record after 10 fields and 5 edits ------------------------------------
    let m = cfg.size_records;
    let size_path = dir.join(format!("size-{}.db", v.name()));
    let empty_path = dir.join(format!("empty-{}.db", v.name()));
    {
        let e = open_store(&empty_path, v, Some("size"));
        add_areas(&e, 1);
    }
    let empty = file_bytes(&empty_path);
    let s = open_store(&size_path, v, Some("size"));
    add_areas(&s, 1);
    let mut size_rng = StdRng::seed_from_u64(7);
    let sized: Vec<Person> = (0..m).map(|i| person(&mut size_rng, i, 1)).collect();
    let home = store::new_record_id();
    let mut sids = Vec::new();
    for chunk in sized.chunks(BATCH) {
        sids.extend(
            s.create_many(
                chunk
                    .iter()
                    .map(|p| {
                        p.new_record()
                            .field("home_place", home.as_str())
                            .attr("hukou", "local")
                            .attr("floor", "3")
                            .attr("household", "2 adults")
                            .attr("insurance", "urban resident")
                    })
                    .collect(),
            )
            .unwrap(),
        );
    }
    for round in 0..5 {
        for id in &sids {
            let u = match round {
                0 | 3 => Update::new().set("phone", phone(&mut size_rng)),
                1 => Update::new().attr("floor", format!("{}", size_rng.gen_range(1..30))),
                2 => Update::new().set("birth_date", "1950-01-01"),
                _ => Update::new().set("name", name(&mut size_rng)),
            };
            s.update(id, u).unwrap();
        }
    }
    let outbox: Vec<i64> = s.outbox(u32::MAX).unwrap().iter().map(|c| c.seq).collect();
    drop(s);
    let with_outbox = file_bytes(&size_path);
    // After a sync: the outbox is emptied, and the file vacuumed to count only live pages.
    {
        let s = open_store(&size_path, v, None);
        for chunk in outbox.chunks(10_000) {
            s.mark_pushed(chunk).unwrap();
        }
    }
    baseline_conn(&size_path, v)
        .execute_batch("VACUUM")
        .unwrap();
    let synced = file_bytes(&size_path);
    let bsize_path = dir.join(format!("size-base-{}.db", v.name()));
    let bempty_path = dir.join(format!("empty-base-{}.db", v.name()));
    baseline_conn(&bempty_path, v)
        .execute_batch(BASELINE_SCHEMA)
        .unwrap();
    let bempty = file_bytes(&bempty_path);
    {
        let mut c = baseline_conn(&bsize_path, v);
        c.execute_batch(BASELINE_SCHEMA).unwrap();
        let tx = c.transaction().unwrap();
        for (i, p) in sized.iter().enumerate() {
            tx.execute(
                "INSERT INTO people (id, area, name, sex, birth_date, phone, id_number, home_place, a1, a2, a3, a4)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'local', '3', '2 adults', 'urban resident')",
                params![sids[i], p.area, p.name, p.sex, p.birth_date, p.phone, p.id_number, home],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        for round in 0..5 {
            for id in &sids {
                let (sql, value) = match round {
                    0 | 3 => (
                        "UPDATE people SET phone = ?1 WHERE id = ?2",
                        phone(&mut size_rng),
                    ),
                    1 => ("UPDATE people SET a2 = ?1 WHERE id = ?2", "7".to_string()),
                    2 => (
                        "UPDATE people SET birth_date = ?1 WHERE id = ?2",
                        "1950-01-01".into(),
                    ),
                    _ => (
                        "UPDATE people SET name = ?1 WHERE id = ?2",
                        name(&mut size_rng),
                    ),
                };
                c.execute(sql, params![value, id]).unwrap();
            }
        }
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM")
            .unwrap();
    }
    let bsize = file_bytes(&bsize_path);
    let per = |total: u64, empty: u64| (total.saturating_sub(empty)) as f64 / m as f64;
    let (pending, after_sync, baseline_per) = (
        per(with_outbox, empty),
        per(synced, empty),
        per(bsize, bempty),
    );
    res.add(
        &format!("(f) bytes on disk per record, 10 fields + 5 edits, {m} records: outbox pending / after sync"),
        format!("{pending:.0} / {after_sync:.0}"),
        format!("{baseline_per:.0}"),
        format!("{:.1}x", after_sync / baseline_per),
        "<= 1 KB",
        Some(after_sync <= 1024.0),
    );
    res
}

/// The child process of (g): works on a store (or the baseline file), then reports its peak RSS.
fn child(args: &[String]) {
    let (what, path, v, grids) = (
        args[0].as_str(),
        Path::new(&args[1]),
        Variant::parse(&args[2]),
        args[3].parse::<usize>().unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(3);
    match what {
        "store" => {
            let s = open_store(path, v, None);
            let mut ids = Vec::new();
            for g in 0..grids.min(20) {
                let page = s
                    .list(
                        &ListQuery::new(Kind::Person)
                            .area(format!("g{g}"))
                            .limit(500),
                    )
                    .unwrap();
                ids.extend(page.items.into_iter().map(|r| r.id));
            }
            for _ in 0..200 {
                s.search(&fragment(&mut rng), Some(Kind::Person), 50)
                    .unwrap();
            }
            for _ in 0..2000 {
                let id = ids.choose(&mut rng).unwrap();
                s.update(id, Update::new().set("phone", phone(&mut rng)))
                    .unwrap();
                s.get(ids.choose(&mut rng).unwrap()).unwrap();
            }
            s.conflicts().unwrap();
            // What a supervisor's device shows every day: statistics, duplicate candidates and the
            // "new for me" list (which includes them).
            s.statistics(&gridwork_core::stats::StatsQuery::default())
                .unwrap();
            s.duplicates(None).unwrap();
            s.new_for_me(None, 480).unwrap();
        }
        _ => {
            let c = baseline_conn(path, v);
            let mut ids: Vec<String> = Vec::new();
            for g in 0..grids.min(20) {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id, name, sex, birth_date, phone, id_number FROM people WHERE area = ?1
                         ORDER BY name COLLATE NOCASE LIMIT 500",
                    )
                    .unwrap();
                ids.extend(
                    stmt.query_map([format!("g{g}")], |r| r.get::<_, String>(0))
                        .unwrap()
                        .map(Result::unwrap),
                );
            }
            for _ in 0..200 {
                let f = format!("%{}%", fragment(&mut rng));
                c.prepare_cached("SELECT id, name FROM people WHERE name LIKE ?1 LIMIT 50")
                    .unwrap()
                    .query_map([f], |r| r.get::<_, String>(0))
                    .unwrap()
                    .count();
            }
            for _ in 0..2000 {
                let id = ids.choose(&mut rng).unwrap();
                c.prepare_cached("UPDATE people SET phone = ?1 WHERE id = ?2")
                    .unwrap()
                    .execute(params![phone(&mut rng), id])
                    .unwrap();
                c.prepare_cached("SELECT * FROM people WHERE id = ?1")
                    .unwrap()
                    .query_row([ids.choose(&mut rng).unwrap()], |r| r.get::<_, String>(1))
                    .unwrap();
            }
            baseline_counts(&c);
        }
    }
    println!("VmHWM_kB {}", vm_hwm_kb());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let cfg = Config::from_env();
    let only = std::env::var("GRIDWORK_BENCH_ONLY").ok();
    let dir = match std::env::var_os("GRIDWORK_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    eprintln!(
        "gridwork store benchmark: N = {}{}, files in {}",
        cfg.n,
        if cfg.quick { " (quick)" } else { "" },
        dir.path().display()
    );
    let mut all = Vec::new();
    for v in [Variant::Encrypted, Variant::Plain] {
        if only.as_deref().is_some_and(|o| o != v.name()) {
            continue;
        }
        let t = Instant::now();
        all.push(run_variant(cfg, v, dir.path()));
        eprintln!("[{}] done in {:.0} s", v.name(), t.elapsed().as_secs_f64());
    }
    println!();
    println!("| store | measure | gridwork store | plain rusqlite baseline | store vs baseline | target | met |");
    println!("|---|---|---|---|---|---|---|");
    for res in &all {
        let label = match res.variant {
            Variant::Encrypted => "SQLCipher (raw key)",
            Variant::Plain => "unencrypted",
        };
        for row in &res.rows {
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} |",
                row.metric,
                row.store,
                row.baseline,
                row.ratio,
                row.target,
                match row.met {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "-",
                }
            );
        }
    }
}
