//! A scripted relay for the sync client's tests that the real relay cannot drive on demand (a `busy`
//! push, an operator moving a user to another grid between two syncs): real HTTP on loopback, the
//! protocol crate's wire types, answers taken from a [`Script`] the test changes as it goes.
#![allow(dead_code)]
use gridwork_core::sync::{
    areas_version, AreasResponse, MeResponse, PullResponse, PushExpect, PushRequest, PushResponse,
    PushResult, PushStatus, SnapshotRecord, SnapshotResponse, WireArea,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the relay answers, and what it was asked.
pub struct Script {
    pub me: MeResponse,
    pub areas: Vec<WireArea>,
    /// The records of the snapshot (one page).
    pub snapshot: Vec<SnapshotRecord>,
    /// Pushes answered `busy` before the relay accepts.
    pub busy_pushes: usize,
    /// How many pushes and snapshots were asked for.
    pub pushes: usize,
    pub snapshots: usize,
    /// How many times the area tree was asked for.
    pub area_fetches: usize,
    /// Whether `/v1/me` says the version of the area tree (as the relay does since protocol 2's
    /// `areas_version`); a relay without it sends none.
    pub areas_versioned: bool,
    /// Each request answered, `"<method> <path>"`, in the order of the answers.
    pub log: Vec<String>,
    /// The `expect` of each push.
    pub expects: Vec<Option<PushExpect>>,
    /// `/v1/me` is answered only once a push has been answered since the last `/v1/me` (or after this
    /// long): a client that pushes beside `/v1/me` is seen doing so in [`Script::log`].
    pub me_waits_for_push: Option<Duration>,
    /// TCP connections accepted.
    pub connections: usize,
    /// The next this many requests are answered `429` with `Retry-After-Ms: 20`, whatever they ask.
    pub rate_limited: usize,
}

impl Script {
    /// Worker wang of grid g1 (device wang-phone), the tree d1 > s1 > c1 > g1.
    pub fn wang() -> Script {
        Script {
            me: MeResponse {
                device_id: "wang-phone".into(),
                user_id: "wang".into(),
                user_name: "Wang".into(),
                role: "worker".into(),
                area: "g1".into(),
                area_path: "d1/s1/c1/g1/".into(),
                actor: None,
                areas_version: None,
                schedules_version: None,
                forms_version: None,
                push_expect: false,
            },
            areas: tree(&["d1", "s1", "c1", "g1"]),
            snapshot: Vec::new(),
            busy_pushes: 0,
            pushes: 0,
            snapshots: 0,
            area_fetches: 0,
            areas_versioned: true,
            log: Vec::new(),
            expects: Vec::new(),
            me_waits_for_push: None,
            rate_limited: 0,
            connections: 0,
        }
    }
}

/// The areas of a chain of ids from the district down (the last of which may be a grid of c1).
pub fn tree(ids: &[&str]) -> Vec<WireArea> {
    ids.iter()
        .map(|id| {
            let (parent, level) = match *id {
                "d1" => (None, "district"),
                "s1" => (Some("d1"), "street"),
                "c1" => (Some("s1"), "community"),
                _ => (Some("c1"), "grid"),
            };
            WireArea {
                id: (*id).into(),
                parent: parent.map(Into::into),
                level: level.into(),
                name: (*id).into(),
                workers: Vec::new(),
            }
        })
        .collect()
}

impl Script {
    /// Whether a push was answered after the last `/v1/me` answer.
    fn pushed_since_me(&self) -> bool {
        self.log
            .iter()
            .rev()
            .take_while(|r| *r != "POST /v1/me")
            .any(|r| r == "POST /v1/changes")
    }
}

pub struct ScriptedRelay {
    pub url: String,
    pub script: Arc<Mutex<Script>>,
}

impl ScriptedRelay {
    /// Listens on a free loopback port until the test process ends.
    pub fn start(script: Script) -> ScriptedRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(script));
        let shared = Arc::clone(&script);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                shared.lock().unwrap().connections += 1;
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        ScriptedRelay { url, script }
    }

    pub fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

/// Answers the requests of one keep-alive connection.
fn serve(stream: TcpStream, script: &Mutex<Script>) {
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
        if (method, path) == ("POST", "/v1/me") {
            let wait = script.lock().unwrap().me_waits_for_push;
            if let Some(wait) = wait {
                let until = Instant::now() + wait;
                while Instant::now() < until && !script.lock().unwrap().pushed_since_me() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let answer = {
            let mut script = script.lock().unwrap();
            if script.rate_limited > 0 {
                script.rate_limited -= 1;
                script.log.push(format!("429 {method} {path}"));
                None
            } else {
                script.log.push(format!("{method} {path}"));
                Some(answer(&mut script, method, path, &body))
            }
        };
        let Some(answer) = answer else {
            let body = r#"{"error":{"code":"rate_limited","message":"too many requests"}}"#;
            write!(
                out,
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\nretry-after-ms: 20\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            out.flush().unwrap();
            continue;
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        out.flush().unwrap();
    }
}

fn answer(script: &mut Script, method: &str, path: &str, body: &[u8]) -> String {
    match (method, path) {
        ("POST", "/v1/me") => serde_json::to_string(&MeResponse {
            areas_version: script.areas_versioned.then(|| areas_version(&script.areas)),
            ..script.me.clone()
        }),
        ("GET", "/v1/areas") => {
            script.area_fetches += 1;
            serde_json::to_string(&AreasResponse {
                areas: script.areas.clone(),
            })
        }
        ("POST", "/v1/changes") => {
            let push: PushRequest = serde_json::from_slice(body).unwrap();
            script.pushes += 1;
            script.expects.push(push.expect.clone());
            let busy = script.pushes <= script.busy_pushes;
            serde_json::to_string(&PushResponse {
                results: (0..push.changes.len())
                    .map(|i| PushResult {
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
        ("GET", "/v1/snapshot") => {
            script.snapshots += 1;
            serde_json::to_string(&SnapshotResponse {
                cursor: 1,
                records: script.snapshot.clone(),
                next: None,
            })
        }
        ("GET", "/v1/changes") => serde_json::to_string(&PullResponse {
            items: Vec::new(),
            cursor: 1,
            more: false,
        }),
        _ => panic!("unexpected request {method} {path}"),
    }
    .unwrap()
}
