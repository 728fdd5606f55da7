//! Device-level sync benchmarks over loopback against a real relay process:
//!   cargo bench -p gridwork-tests --bench sync
//! GRIDWORK_BENCH_N sets the bootstrap size (default 100,000 records), GRIDWORK_BENCH_GRIDS the grids
//! of the community (default 200), GRIDWORK_BENCH_PACE_MS a pause between latency rounds (default 0:
//! rounds back to back, which also exercises the relay's per-device rate limit).
//!
//! Worker A (grid g1) registers N residents and pushes them. Then:
//! 1. A new device of the community's supervisor (who sees all the grids) bootstraps the N records;
//!    baseline: the same snapshot pages fetched and decoded without applying them (the network +
//!    relay share of the time).
//! 2. An edit on A visible on the supervisor's device after A pushes and it pulls, 100 rounds, both
//!    stores full (N records); baseline: one `GET /v1/health` round trip on the same loopback.
//!
//!    2b: the same rounds over a link with a round trip of GRIDWORK_BENCH_LINK_RTT_MS (default 40 ms,
//!    0 skips it; a phone's link is 30-300 ms): a proxy on loopback delays every byte by half of it
//!    each way, and the first bytes of a new connection by a round trip more (the TCP handshake; TLS
//!    would add one or two more); 20 rounds. Baseline: one `GET /v1/health` on an open connection
//!    over the same link (one round trip: what a sync cannot go below).
//! 3. Peak memory (VmHWM) of a process that does nothing but bootstrap another new device of the
//!    supervisor (this binary run again as a child); baseline: a child that only downloads and decodes
//!    the same snapshot pages.
use gridwork_core::*;
use gridwork_tests::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// One round of part 2: `value` as record `p`'s phone on A, A's sync, B's sync (each with its
/// configuration), checked on B. How long the edit, A's sync and B's sync took.
fn edit_round(
    (a, a_config): (&Store, &SyncConfig),
    (b, b_config): (&Store, &SyncConfig),
    p: &str,
    value: &str,
) -> [Duration; 3] {
    let t = Instant::now();
    a.update(p, Update::new().set("phone", value)).unwrap();
    let t1 = Instant::now();
    a.sync(a_config, &NoProgress, &CancelToken::new()).unwrap();
    let t2 = Instant::now();
    b.sync(b_config, &NoProgress, &CancelToken::new()).unwrap();
    let t3 = Instant::now();
    assert_eq!(b.get(p).unwrap().field("phone"), Some(value));
    [t1 - t, t2 - t1, t3 - t2]
}

/// A TCP proxy on loopback in front of `upstream` that makes a link with a round trip of
/// 2 x `one_way`: every byte is delivered `one_way` after it was sent, in each direction, and the
/// first bytes of a new connection not before the handshake's round trip would have let the client
/// send them. Returns its URL; it serves until the process ends.
fn delay_proxy(upstream: SocketAddr, one_way: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let accepted = Instant::now();
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            delayed_pump(client, server, one_way, accepted + 2 * one_way);
            delayed_pump(s2, c2, one_way, accepted);
        }
    });
    url
}

/// Copies `from` to `to`, each chunk `delay` after it was read (and not before `first_at + delay`).
fn delayed_pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, first_at: Instant) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx
                .send((Instant::now().max(first_at), buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (read_at, bytes) in rx {
            let due = read_at + delay;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The child of part 3: `GRIDWORK_BENCH_CHILD=bootstrap|download`, with the relay's address, a
/// supervisor's token and a store path in `GRIDWORK_BENCH_CHILD_ARGS` (`url token path`). Prints its
/// peak memory in MB.
fn child(what: &str) {
    let args = std::env::var("GRIDWORK_BENCH_CHILD_ARGS").unwrap();
    let mut args = args.split(' ');
    let (url, token, path) = (
        args.next().unwrap(),
        args.next().unwrap(),
        args.next().unwrap(),
    );
    if what == "bootstrap" {
        let store = Store::open(StoreOptions::new(path, StoreKey::Raw([4; 32])).identity(
            Identity {
                user_id: "zhou".into(),
                device_id: "zhou-phone".into(),
                role: Role::Supervisor,
                area: "c1".into(),
            },
        ))
        .unwrap();
        let mut cfg = SyncConfig::new(url, token);
        cfg.page_size = 2000;
        let report = store.sync(&cfg, &NoProgress, &CancelToken::new()).unwrap();
        assert!(report.bootstrapped > 0);
    } else {
        let http = reqwest::blocking::Client::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = http
                .get(format!("{url}/v1/snapshot"))
                .bearer_auth(token)
                .query(&[("limit", "2000")]);
            if let Some(a) = &after {
                req = req.query(&[("after_record", a)]);
            }
            let body: gridwork_core::sync::SnapshotResponse = req.send().unwrap().json().unwrap();
            match body.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    println!("{:.1}", peak_mb());
}

/// Runs part 3's child `what` and returns its peak memory in MB.
fn child_peak(what: &str, url: &str, token: &str, path: &std::path::Path) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("GRIDWORK_BENCH_CHILD", what)
        .env(
            "GRIDWORK_BENCH_CHILD_ARGS",
            format!("{url} {token} {}", path.display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(what) = std::env::var("GRIDWORK_BENCH_CHILD") {
        return child(&what);
    }
    let n: usize = env_or("GRIDWORK_BENCH_N", 100_000);
    let grids: usize = env_or("GRIDWORK_BENCH_GRIDS", 200);
    let pace = Duration::from_millis(env_or("GRIDWORK_BENCH_PACE_MS", 0));
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    // The community's other grids: g3 .. g{grids}.
    let more: Vec<AreaSpec> = (3..=grids)
        .map(|i| {
            let id: &'static str = Box::leak(format!("g{i}").into_boxed_str());
            let name: &'static str = Box::leak(format!("Grid {i}").into_boxed_str());
            (id, Some("c1"), AreaLevel::Grid, name)
        })
        .collect();
    relay.add_area_tree(&more);
    let a = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    a.sync();
    let http = reqwest::blocking::Client::new();

    // --- 1. bootstrap
    eprintln!("seeding {n} records ...");
    let seed_started = Instant::now();
    let surnames = ["王", "李", "张", "刘", "陈", "Smith", "Garcia", "Nguyen"];
    for chunk in 0..n.div_ceil(1000) {
        let batch: Vec<NewRecord> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| {
                NewRecord::new(Kind::Person, "g1")
                    .field("name", format!("{}{i}", surnames[i % surnames.len()]))
                    .field("sex", if i % 2 == 0 { "female" } else { "male" })
                    .field("phone", format!("139{i:08}"))
                    .field(
                        "birth_date",
                        format!("19{:02}-0{}-1{}", 30 + i % 60, 1 + i % 9, i % 9),
                    )
            })
            .collect();
        a.store.create_many(batch).unwrap();
    }
    let mut push = a.config.clone();
    push.push_batch = 1000;
    a.store
        .sync(&push, &NoProgress, &CancelToken::new())
        .unwrap();
    eprintln!("seeded in {:.1}s", seed_started.elapsed().as_secs_f64());

    let token = relay.add_device("zhou", Role::Supervisor, "c1", "zhou-tablet");
    let mut page = 0;
    let t = Instant::now();
    let mut after: Option<String> = None;
    let mut fetched = 0usize;
    loop {
        let mut req = http
            .get(format!("{}/v1/snapshot", relay.url()))
            .bearer_auth(&token)
            .query(&[("limit", "2000")]);
        if let Some(a) = &after {
            req = req.query(&[("after_record", a)]);
        }
        let body: gridwork_core::sync::SnapshotResponse = req.send().unwrap().json().unwrap();
        fetched += body.records.len();
        page += 1;
        match body.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let download_only = t.elapsed();

    let fresh = Store::open(
        StoreOptions::new(dir.path().join("fresh.db"), StoreKey::Raw([3; 32])).identity(Identity {
            user_id: "zhou".into(),
            device_id: "zhou-tablet".into(),
            role: Role::Supervisor,
            area: "c1".into(),
        }),
    )
    .unwrap();
    let mut cfg = SyncConfig::new(relay.url(), token);
    cfg.page_size = 2000;
    let t = Instant::now();
    let phases = std::sync::Mutex::new(Vec::<(SyncPhase, Duration)>::new());
    let sink = |p: SyncProgress| {
        let mut phases = phases.lock().unwrap();
        if phases.last().map(|(ph, _)| *ph) != Some(p.phase) {
            phases.push((p.phase, t.elapsed()));
        }
    };
    let report = fresh.sync(&cfg, &sink, &CancelToken::new()).unwrap();
    let bootstrap = t.elapsed();
    eprintln!("bootstrap report: {report:?}");
    eprintln!("phase starts: {:?}", phases.lock().unwrap());
    let records = fresh.record_ids().unwrap().len();

    // --- 2. edit-to-visible latency, on the full stores
    let p = a.store.record_ids().unwrap()[n / 2].clone();
    let mut edit = Vec::new();
    let mut health = Vec::new();
    // Where a round goes: the local edit, A's sync (push), the supervisor's sync (pull).
    let mut parts: [Vec<Duration>; 3] = Default::default();
    let b_config = cfg.clone();
    for i in 0..100 {
        std::thread::sleep(pace);
        let round = edit_round(
            (&a.store, &a.config),
            (&fresh, &b_config),
            &p,
            &format!("1380000{i:04}"),
        );
        edit.push(round.iter().sum());
        for (part, d) in parts.iter_mut().zip(round) {
            part.push(d);
        }
        let t = Instant::now();
        http.get(format!("{}/v1/health", relay.url()))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        health.push(t.elapsed());
    }
    let slowest = parts[1]
        .iter()
        .enumerate()
        .max_by_key(|(_, d)| **d)
        .map(|(i, d)| (i, ms(*d)));
    eprintln!("slowest A sync (round, ms): {slowest:?}");
    edit.sort();
    health.sort();
    for part in &mut parts {
        part.sort();
    }
    eprintln!(
        "edit rounds, p50 / max: local edit {:.2} / {:.2} ms, A's sync {:.2} / {:.2} ms, the supervisor's sync {:.2} / {:.2} ms",
        ms(percentile(&parts[0], 0.5)),
        ms(*parts[0].last().unwrap()),
        ms(percentile(&parts[1], 0.5)),
        ms(*parts[1].last().unwrap()),
        ms(percentile(&parts[2], 0.5)),
        ms(*parts[2].last().unwrap())
    );
    let slow = edit
        .iter()
        .filter(|d| **d > Duration::from_millis(500))
        .count();

    // --- 2b. the same rounds over a link with a phone's round trip
    let rtt = Duration::from_millis(env_or("GRIDWORK_BENCH_LINK_RTT_MS", 40));
    let link = (!rtt.is_zero()).then(|| {
        let upstream: SocketAddr = relay.url().trim_start_matches("http://").parse().unwrap();
        let via = delay_proxy(upstream, rtt / 2);
        let mut a_link = a.config.clone();
        a_link.server_url = via.clone();
        let mut b_link = b_config.clone();
        b_link.server_url = via.clone();
        let (mut edit, mut a_sync, mut b_sync) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..20 {
            std::thread::sleep(pace);
            let [local, a_part, b_part] = edit_round(
                (&a.store, &a_link),
                (&fresh, &b_link),
                &p,
                &format!("1390000{i:04}"),
            );
            edit.push(local + a_part + b_part);
            a_sync.push(a_part);
            b_sync.push(b_part);
        }
        // One request on an open connection over the same link (the first opens it).
        let client = reqwest::blocking::Client::new();
        let mut one = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            client
                .get(format!("{via}/v1/health"))
                .send()
                .unwrap()
                .bytes()
                .unwrap();
            one.push(t.elapsed());
        }
        one.remove(0);
        for v in [&mut edit, &mut a_sync, &mut b_sync, &mut one] {
            v.sort();
        }
        (edit, a_sync, b_sync, one)
    });

    // --- 3. memory of a bootstrapping device, in a process of its own
    let phone = relay.add_device("zhou", Role::Supervisor, "c1", "zhou-phone");
    let download_mb = child_peak(
        "download",
        &relay.url(),
        &phone,
        &dir.path().join("none.db"),
    );
    let bootstrap_mb = child_peak(
        "bootstrap",
        &relay.url(),
        &phone,
        &dir.path().join("phone.db"),
    );

    println!("| benchmark | result | baseline (same run) | target |");
    println!("|---|---|---|---|");
    println!(
        "| bootstrap a new device, {records} records ({} via snapshot) | {:.2} s = {:.0} records/s | download + decode only, {fetched} records in {page} pages: {:.2} s = {:.0} records/s | >= 30,000 records/s (100k in <= 3.5 s) and >= 10% of the download + decode rate |",
        report.bootstrapped,
        bootstrap.as_secs_f64(),
        records as f64 / bootstrap.as_secs_f64(),
        download_only.as_secs_f64(),
        fetched as f64 / download_only.as_secs_f64()
    );
    println!(
        "| edit on A visible on B (A pushes, the supervisor's device pulls), 100 rounds, {grids} grids, both stores {records} records, pause {} ms | p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms, {slow} rounds over 500 ms | GET /v1/health round trip p50 {:.2} ms | p50 <= 5 ms, max <= 50 ms |",
        pace.as_millis(),
        ms(percentile(&edit, 0.5)),
        ms(percentile(&edit, 0.95)),
        ms(*edit.last().unwrap()),
        ms(percentile(&health, 0.5)),
    );
    if let Some((edit, a_sync, b_sync, one)) = &link {
        let rtt_ms = ms(percentile(one, 0.5));
        println!(
            "| edit on A visible on B over a link with a {} ms round trip (a delay proxy on loopback), 20 rounds, pause {} ms | p50 {:.1} ms = {:.1} round trips (A's sync {:.1}, B's sync {:.1}), max {:.1} ms | one request on an open connection over the link: p50 {rtt_ms:.1} ms | - |",
            rtt.as_millis(),
            pace.as_millis(),
            ms(percentile(edit, 0.5)),
            ms(percentile(edit, 0.5)) / rtt_ms,
            ms(percentile(a_sync, 0.5)),
            ms(percentile(b_sync, 0.5)),
            ms(*edit.last().unwrap()),
        );
    }
    println!(
        "| peak memory (VmHWM) of a device process bootstrapping {records} records | {bootstrap_mb:.1} MB | a process downloading and decoding the same pages: {download_mb:.1} MB | <= 64 MB |"
    );
}
