//! A city's deployment: several `gridwork-server` processes on one PostgreSQL database.
//!
//! The classic gap of a shared log: with several writers, seq 12 may commit before seq 11, and a puller
//! that saw 12 and saved its cursor never gets 11. The relay prevents it by handing out seqs under the
//! `log_head` row lock, held to commit, so seqs commit in order on every process (docs/protocol.md,
//! "Cursors"). Here devices push concurrently through two relays while pullers page through the log,
//! alternating between the relays page by page; once everything is in, each puller's log must be exactly
//! the final log, with no entry skipped or doubled. The devices also edit each other's records through
//! different relays, so each relay's document cache must notice what the other wrote: every change is
//! accepted and every device ends with the same documents.
use gridwork_core::*;
use gridwork_tests::forge::*;
use gridwork_tests::*;

use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Workers: (user, grid). Even ones sync through the first relay, odd ones through the second.
const WORKERS: [(&str, &str); 6] = [
    ("wang", "g1"),
    ("li", "g1"),
    ("zhang", "g1"),
    ("chen", "g2"),
    ("liu", "g2"),
    ("huang", "g2"),
];
const ROUNDS: usize = 12;

/// One log entry as a puller saw it: seq, record and a digest of the bytes.
type Seen = (u64, String, [u8; 32]);

/// Pages through `/v1/changes` from `after`, alternating between `urls` page by page, until the relay
/// says there is no more; appends what it sees.
fn pull_all(
    http: &reqwest::blocking::Client,
    urls: &[String],
    token: &str,
    cursor: &mut u64,
    turn: &mut usize,
    out: &mut Vec<Seen>,
) {
    loop {
        let url = &urls[*turn % urls.len()];
        *turn += 1;
        let resp = http
            .get(format!("{url}/v1/changes"))
            .bearer_auth(token)
            .query(&[("after", cursor.to_string()), ("limit", "37".into())])
            .send()
            .expect("pull");
        if resp.status().as_u16() == 429 {
            // The per-device rate limit: wait as told, then go on.
            let ms: u64 = resp
                .headers()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            continue;
        }
        let page: sync::PullResponse = resp
            .error_for_status()
            .expect("pull status")
            .json()
            .expect("pull page");
        for item in &page.items {
            assert!(item.seq > *cursor, "an entry at or before the cursor");
            let bytes = b64(&item.bytes);
            out.push((
                item.seq,
                item.record.clone(),
                sha2::Sha256::digest(bytes).into(),
            ));
        }
        assert!(page.cursor >= *cursor, "the cursor went back");
        *cursor = page.cursor;
        if !page.more {
            return;
        }
    }
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[test]
fn two_relays_on_one_postgres_skip_and_double_nothing() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: GRIDWORK_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = Relay::start_on(&backend, &dir.path().join("relay"));
    first.add_areas();
    let second = first.another_process();
    let urls = [first.url(), second.url()];

    let mut devices = Vec::new();
    for (i, (user, grid)) in WORKERS.iter().enumerate() {
        let mut d = Device::new(&first, dir.path(), user, Role::Worker, grid);
        d.config.server_url = urls[i % 2].clone();
        d.sync();
        devices.push(d);
    }
    // Pullers: an operator (reads the whole log) and the community's supervisor (reads it through the
    // scope index); neither pushes, so each gets every entry.
    let op = Forger::register(&first, "op", Role::Operator, "d1", "op-reader").token;
    let sup = Forger::register(&second, "zhao", Role::Supervisor, "c1", "zhao-reader").token;

    let done = AtomicBool::new(false);
    let seen: Vec<Vec<Seen>> = std::thread::scope(|s| {
        let pullers: Vec<_> = [op.as_str(), sup.as_str()]
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                let (urls, done) = (&urls, &done);
                s.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let (mut cursor, mut turn, mut out) = (0, i, Vec::new());
                    while !done.load(Ordering::SeqCst) {
                        pull_all(&http, urls, token, &mut cursor, &mut turn, &mut out);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    // Everything is in: one more pass takes the rest.
                    pull_all(&http, urls, token, &mut cursor, &mut turn, &mut out);
                    out
                })
            })
            .collect();
        std::thread::scope(|w| {
            for (i, d) in devices.iter().enumerate() {
                w.spawn(move || {
                    let grid = WORKERS[i].1;
                    for round in 0..ROUNDS {
                        for n in 0..3 {
                            d.store
                                .create(
                                    NewRecord::new(Kind::Person, grid)
                                        .field("name", format!("{} {round}-{n}", WORKERS[i].0)),
                                )
                                .unwrap();
                        }
                        // An edit of a record of the grid, often one a colleague on the other relay
                        // made or edited last.
                        let ids = d.store.record_ids().unwrap();
                        let target = &ids[(round * 7 + i) % ids.len()];
                        d.store
                            .update(
                                target,
                                Update::new().set("phone", format!("139{i:02}{round:06}")),
                            )
                            .unwrap();
                        d.sync();
                    }
                });
            }
        });
        done.store(true, Ordering::SeqCst);
        pullers.into_iter().map(|p| p.join().unwrap()).collect()
    });

    // The final log, read in one go from each relay after everything committed.
    let http = reqwest::blocking::Client::new();
    let mut finals = Vec::new();
    for url in &urls {
        let (mut cursor, mut turn, mut log) = (0, 0, Vec::new());
        pull_all(
            &http,
            std::slice::from_ref(url),
            &op,
            &mut cursor,
            &mut turn,
            &mut log,
        );
        finals.push(log);
    }
    assert_eq!(finals[0], finals[1], "both relays serve the same log");
    let log = &finals[0];
    let expected = WORKERS.len() * ROUNDS * 4;
    assert!(
        log.len() >= expected,
        "{} entries, at least {expected} changes were pushed",
        log.len()
    );
    let seqs: Vec<u64> = log.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "the log is dense"
    );
    for (who, got) in ["operator", "supervisor"].iter().zip(&seen) {
        let doubled = got.len() - {
            let mut s: Vec<u64> = got.iter().map(|e| e.0).collect();
            s.dedup();
            s.len()
        };
        assert_eq!(doubled, 0, "the {who} got {doubled} entries twice");
        let missing: Vec<u64> = seqs
            .iter()
            .filter(|s| !got.iter().any(|e| e.0 == **s))
            .copied()
            .collect();
        assert!(missing.is_empty(), "the {who} never got seqs {missing:?}");
        assert_eq!(got, log, "the {who}'s log is the final log");
    }

    // Every change was accepted, and every device of a grid ends with the same documents.
    for _ in 0..2 {
        for d in &devices {
            d.sync();
        }
    }
    let mut by_grid: BTreeMap<&str, Vec<&Device>> = BTreeMap::new();
    for (d, (_, grid)) in devices.iter().zip(WORKERS) {
        assert_eq!(d.store.outbox_len().unwrap(), 0);
        assert!(d.store.quarantined().unwrap().is_empty());
        by_grid.entry(grid).or_default().push(d);
    }
    for (grid, ds) in by_grid {
        let ids = ds[0].store.record_ids().unwrap();
        assert_eq!(ids.len(), 3 * ROUNDS * 3, "records of {grid}");
        for d in &ds[1..] {
            assert_eq!(d.store.record_ids().unwrap(), ids);
            for id in &ids {
                assert_eq!(d.store.heads(id).unwrap(), ds[0].store.heads(id).unwrap());
                assert_eq!(d.store.get(id).unwrap(), ds[0].store.get(id).unwrap());
            }
        }
    }
}

/// The web console as a browser without script uses it: cookies kept by hand, forms posted.
struct ConsoleClient {
    http: reqwest::blocking::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

impl ConsoleClient {
    fn new(base: String) -> ConsoleClient {
        ConsoleClient {
            http: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base,
            cookies: BTreeMap::new(),
        }
    }

    fn keep(&mut self, r: &reqwest::blocking::Response) {
        for v in r.headers().get_all("set-cookie") {
            let first = v.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            self.cookies.insert(k.to_owned(), v.to_owned());
        }
    }

    fn cookie(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// GET `path` (following redirects by hand): status and page.
    fn get(&mut self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie())
            .send()
            .unwrap();
        self.keep(&r);
        let status = r.status().as_u16();
        if status == 303 {
            let to = r.headers()["location"].to_str().unwrap().to_owned();
            return self.get(&to);
        }
        (status, r.text().unwrap())
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie())
            .form(form)
            .send()
            .unwrap();
        self.keep(&r);
        let status = r.status().as_u16();
        if status == 303 {
            let to = r.headers()["location"].to_str().unwrap().to_owned();
            return self.get(&to);
        }
        (status, r.text().unwrap())
    }

    /// The CSRF token of the forms on `page`.
    fn csrf(page: &str) -> String {
        let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
        page[at..at + 64].to_owned()
    }

    fn sign_in(&mut self, user: &str, password: &str) -> String {
        let (_, page) = self.get("/console/login?lang=en");
        let csrf = Self::csrf(&page);
        let (status, page) = self.post(
            "/console/login",
            &[("user", user), ("password", password), ("csrf", &csrf)],
        );
        assert_eq!(status, 200, "{page}");
        page
    }
}

/// The web console behind a load balancer: each relay process has console devices of its own (a device
/// token binds to one store), the session works on either relay (it is in the database), and what a
/// supervisor does through one relay is seen through the other and by the worker's phone.
#[test]
fn the_console_works_through_either_relay() {
    let Some(backend) = Backend::postgres() else {
        eprintln!("skipped: GRIDWORK_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Relay::start_on(&backend, dir.path());
    a.add_areas();
    let b = a.another_process();
    let wang = Device::new(&a, dir.path(), "wang", Role::Worker, "g1");
    a.add_device("zhou", Role::Supervisor, "c1", "zhou-ipad");
    a.set_web_password("zhou", "willow-tree-2026");
    wang.sync();
    let v = wang
        .store
        .start_visit("g1", "Check on the stairwell", None)
        .unwrap();
    wang.store.finish_visit(&v, None).unwrap();
    wang.sync();

    let mut on_a = ConsoleClient::new(a.url());
    let page = on_a.sign_in("zhou", "willow-tree-2026");
    assert!(page.contains("Check on the stairwell"), "{page}");
    // The same session through the other relay: its own console device, the same view.
    let mut on_b = ConsoleClient::new(b.url());
    on_b.cookies = on_a.cookies.clone();
    let (status, page) = on_b.get("/console/reviews");
    assert_eq!(status, 200);
    assert!(page.contains("Check on the stairwell"), "{page}");
    // Approved through relay a, gone from relay b's queue, and on the phone.
    let csrf = ConsoleClient::csrf(&page);
    let (_, page) = on_a.post(
        &format!("/console/visits/{v}/review"),
        &[("csrf", &csrf), ("decision", "approve")],
    );
    assert!(page.contains("Visit approved"), "{page}");
    let (_, page) = on_b.get("/console/reviews");
    assert!(page.contains("Nothing to review"), "{page}");
    wang.sync();
    assert_eq!(
        wang.store.get(&v).unwrap().field("review_state"),
        Some("approved")
    );
    // Two console devices of zhou, one per relay.
    let devices = a.admin(&["device", "list"]);
    assert_eq!(devices.matches("-zhou").count(), 2, "{devices}");
}
