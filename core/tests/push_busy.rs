//! A push answered `busy` (the relay ran out of time for it) keeps the change queued: the client sends it
//! again after a short pause, a bounded number of times, then leaves it for the next sync.
//!
//! The real relay answers `busy` only under load that a test cannot produce on demand, so these tests
//! talk real HTTP on loopback to a scripted relay that answers every route the sync client calls, with
//! the protocol crate's wire types, and `busy` for the first pushes.
mod common;
use common::*;
use gridwork_core::sync::{
    AreasResponse, MeResponse, PullResponse, PushRequest, PushResponse, PushResult, PushStatus,
    SnapshotResponse, WireArea,
};
use gridwork_core::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loopback HTTP server answering the sync routes; pushes are `busy` until `busy_pushes` of them
/// were answered. Stops with the test process.
struct ScriptedRelay {
    url: String,
    pushes: Arc<AtomicUsize>,
}

impl ScriptedRelay {
    fn start(busy_pushes: usize) -> ScriptedRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let pushes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pushes);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || serve(stream, &counter, busy_pushes));
            }
        });
        ScriptedRelay { url, pushes }
    }
}

fn serve(stream: TcpStream, pushes: &AtomicUsize, busy_pushes: usize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
        let path = target.split('?').next().unwrap();
        let answer = match (method, path) {
            ("POST", "/v1/me") => serde_json::to_string(&MeResponse {
                device_id: "wang-phone".into(),
                user_id: "wang".into(),
                user_name: "Wang".into(),
                role: "worker".into(),
                area: "g1".into(),
                area_path: "d1/s1/c1/g1/".into(),
                actor: None,
            }),
            ("GET", "/v1/areas") => serde_json::to_string(&AreasResponse {
                areas: [
                    ("d1", None, "district"),
                    ("s1", Some("d1"), "street"),
                    ("c1", Some("s1"), "community"),
                    ("g1", Some("c1"), "grid"),
                ]
                .into_iter()
                .map(|(id, parent, level)| WireArea {
                    id: id.into(),
                    parent: parent.map(Into::into),
                    level: level.into(),
                    name: id.into(),
                })
                .collect(),
            }),
            ("POST", "/v1/changes") => {
                let push: PushRequest = serde_json::from_slice(&body).unwrap();
                let n = pushes.fetch_add(1, Ordering::SeqCst);
                let busy = n < busy_pushes;
                serde_json::to_string(&PushResponse {
                    results: push
                        .changes
                        .iter()
                        .enumerate()
                        .map(|(i, _)| PushResult {
                            hash: String::new(),
                            status: if busy {
                                PushStatus::Rejected
                            } else {
                                PushStatus::Accepted
                            },
                            reason: busy.then(|| "busy".to_owned()),
                            detail: busy.then(|| "the relay is busy; send it again".to_owned()),
                            seq: (!busy).then_some(i as u64 + 1),
                        })
                        .collect(),
                })
            }
            ("GET", "/v1/snapshot") => serde_json::to_string(&SnapshotResponse {
                cursor: 0,
                records: Vec::new(),
                next: None,
            }),
            ("GET", "/v1/changes") => serde_json::to_string(&PullResponse {
                items: Vec::new(),
                cursor: 0,
                more: false,
            }),
            _ => panic!("unexpected request {method} {path}"),
        }
        .unwrap();
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        out.flush().unwrap();
    }
}

fn config(relay: &ScriptedRelay, retries: u32) -> SyncConfig {
    let mut config = SyncConfig::new(&relay.url, "gw_test");
    config.max_retries = retries;
    config.backoff = Duration::from_millis(100);
    config
}

#[test]
fn busy_changes_are_sent_again_after_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    for i in 0..3 {
        store
            .create(NewRecord::new(Kind::Person, "g1").field("name", format!("Resident {i}")))
            .unwrap();
    }
    let relay = ScriptedRelay::start(2);
    let started = Instant::now();
    let report = store
        .sync(&config(&relay, 5), &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(report.pushed, 3);
    assert_eq!((report.rejected, report.deferred), (0, 0));
    assert_eq!(store.outbox_len().unwrap(), 0);
    assert!(
        store.quarantined().unwrap().is_empty(),
        "busy is not a refusal"
    );
    assert_eq!(
        relay.pushes.load(Ordering::SeqCst),
        3,
        "two busy answers, then accepted"
    );
    // Paused 100 ms, then 200 ms before the two repeats: not a busy loop.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(store.identity_confirmed());
}

#[test]
fn a_relay_that_stays_busy_leaves_the_changes_for_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "wang", Role::Worker, "g1");
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "Patient"))
        .unwrap();
    let relay = ScriptedRelay::start(usize::MAX);
    let report = store
        .sync(&config(&relay, 2), &NoProgress, &CancelToken::new())
        .unwrap();
    assert_eq!(report.pushed, 0);
    assert_eq!(report.deferred, 1);
    assert_eq!(store.outbox_len().unwrap(), 1, "kept in the outbox");
    assert!(store.quarantined().unwrap().is_empty());
    assert_eq!(
        relay.pushes.load(Ordering::SeqCst),
        3,
        "the first push and two more, then it stops"
    );
}
