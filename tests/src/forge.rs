//! Hostile devices that write their changes by hand, and what a test needs to see the relay as an
//! operator does.
//!
//! A [`Forger`] is a device with a real token whose "store" is a bare Automerge actor registered with
//! the relay (`POST /v1/me`): it writes changes in the record document layout
//! (`gridwork_protocol::doc`) and may forge anything a modified client could (the note's user or device,
//! the actor, a timeline entry's `by`, operation counters), and push them over HTTP like a device.
use crate::Relay;
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, ChangeHash, ObjType, ReadDoc, ROOT};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gridwork_core::doc::{self as layout, ChangeNote};
use gridwork_core::Role;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// One HTTP client for every request of the tests (a blocking client per request would start a
/// runtime each time). Its timeout is above the relay's 30 s request limit, so the relay answers first.
pub fn http() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client")
    })
}

/// A device of `user` that writes its changes by hand.
#[derive(Debug, Clone)]
pub struct Forger {
    pub user: String,
    pub device: String,
    pub actor: ActorId,
    pub token: String,
}

impl Forger {
    /// A new device `device` of `user` (created with `role` and `area` unless it exists), whose store
    /// is a random Automerge actor, registered with the relay.
    pub fn register(relay: &Relay, user: &str, role: Role, area: &str, device: &str) -> Forger {
        let token = relay.add_device(user, role, area, device);
        let forger = Forger {
            user: user.into(),
            device: device.into(),
            actor: ActorId::random(),
            token,
        };
        let r = http()
            .post(format!("{}/v1/me", relay.url()))
            .bearer_auth(&forger.token)
            .json(&json!({"actor": forger.actor.to_hex_string()}))
            .send()
            .expect("POST /v1/me");
        assert_eq!(r.status().as_u16(), 200, "registering {device}");
        forger
    }

    /// The note a device of this user writes on a change doing `action`.
    pub fn note(&self, action: &str) -> String {
        note_of(&self.user, &self.device, action)
    }

    /// One change to `doc` with `message` as its note (none: no note), made by this forger's actor.
    pub fn write_noted(
        &self,
        doc: &mut Automerge,
        message: Option<String>,
        f: impl FnOnce(&mut Transaction<'_>),
    ) -> Vec<u8> {
        write_as(&self.actor, doc, message, f)
    }

    /// One change to `doc` doing `action`, noted as this device's: `f` writes it.
    pub fn write(
        &self,
        doc: &mut Automerge,
        action: &str,
        f: impl FnOnce(&mut Transaction<'_>),
    ) -> Vec<u8> {
        self.write_noted(doc, Some(self.note(action)), f)
    }

    /// Pushes changes with this device's token; the relay's answer per change.
    pub fn push(&self, relay: &Relay, changes: &[(&str, Vec<u8>)]) -> Vec<Value> {
        push(relay, &self.token, changes)
    }
}

/// The note of a change by `user` on `device` doing `action`.
pub fn note_of(user: &str, device: &str, action: &str) -> String {
    serde_json::to_string(&ChangeNote::new(user, device, action, vec![])).unwrap()
}

/// One change to `doc` by `actor` with `message` as its note: `f` writes it. Returns its bytes.
pub fn write_as(
    actor: &ActorId,
    doc: &mut Automerge,
    message: Option<String>,
    f: impl FnOnce(&mut Transaction<'_>),
) -> Vec<u8> {
    doc.set_actor(actor.clone());
    let mut tx = doc.transaction();
    f(&mut tx);
    let mut opts = CommitOptions::default().with_time(gridwork_core::time::now_secs());
    if let Some(m) = message {
        opts = opts.with_message(m);
    }
    tx.commit_with(opts);
    doc.get_last_local_change()
        .expect("a change was made")
        .raw_bytes()
        .to_vec()
}

/// Sets a field of the record's `f` map.
pub fn set_field(tx: &mut Transaction<'_>, name: &str, value: &str) {
    let f = layout::root_obj(tx, layout::FIELDS).expect("the record has fields");
    tx.put(&f, name, value).unwrap();
}

/// Appends a timeline entry by `by` (the list is made when the record has none yet).
pub fn timeline(
    tx: &mut Transaction<'_>,
    by: &str,
    action: &str,
    from: Option<&str>,
    to: Option<&str>,
) {
    let list = match layout::root_obj(tx, layout::TIMELINE) {
        Some(l) => l,
        None => tx
            .put_object(ROOT, layout::TIMELINE, ObjType::List)
            .unwrap(),
    };
    let at = tx.length(&list);
    let e = tx.insert_object(&list, at, ObjType::Map).unwrap();
    tx.put(&e, "at", gridwork_core::time::now_iso()).unwrap();
    tx.put(&e, "by", by).unwrap();
    tx.put(&e, "action", action).unwrap();
    for (k, v) in [("from", from), ("to", to)] {
        if let Some(v) = v {
            tx.put(&e, k, v).unwrap();
        }
    }
}

// ---- the relay over HTTP ----

/// `POST /v1/changes` with `token`; the relay's answer per change.
pub fn push(relay: &Relay, token: &str, changes: &[(&str, Vec<u8>)]) -> Vec<Value> {
    let body = json!({"changes": changes
        .iter()
        .map(|(r, b)| json!({"record": r, "bytes": B64.encode(b)}))
        .collect::<Vec<_>>()});
    let r = http()
        .post(format!("{}/v1/changes", relay.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .expect("push");
    assert_eq!(r.status().as_u16(), 200, "push answered {}", r.status());
    let v: Value = r.json().unwrap();
    v["results"].as_array().expect("results").clone()
}

/// `GET` of `path` with `token`, as JSON.
pub fn get_json(relay: &Relay, token: &str, path: &str) -> Value {
    let r = http()
        .get(format!("{}{path}", relay.url()))
        .bearer_auth(token)
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.json().unwrap()
}

/// Every log entry `token` may pull after `after`, page by page: (seq, record, bytes).
pub fn pull_all(relay: &Relay, token: &str, after: u64) -> Vec<(u64, String, Vec<u8>)> {
    let mut cursor = after;
    let mut out = Vec::new();
    loop {
        let page = get_json(
            relay,
            token,
            &format!("/v1/changes?after={cursor}&limit=5000"),
        );
        for i in page["items"].as_array().unwrap() {
            out.push((
                i["seq"].as_u64().unwrap(),
                i["record"].as_str().unwrap().to_owned(),
                B64.decode(i["bytes"].as_str().unwrap()).unwrap(),
            ));
        }
        cursor = page["cursor"].as_u64().unwrap();
        if !page["more"].as_bool().unwrap() {
            return out;
        }
    }
}

/// Every record document `token` may see, from the snapshot pages, by record id.
pub fn snapshot_docs(relay: &Relay, token: &str) -> BTreeMap<String, Automerge> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    loop {
        let page = get_json(
            relay,
            token,
            &format!("/v1/snapshot?limit=5000&after_record={after}"),
        );
        for r in page["records"].as_array().unwrap() {
            let mut doc = Automerge::new();
            doc.load_incremental(&B64.decode(r["bytes"].as_str().unwrap()).unwrap())
                .expect("a snapshot document loads");
            out.insert(r["record"].as_str().unwrap().to_owned(), doc);
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return out,
        }
    }
}

/// The relay's document of `record`, as an operator (`op_token`) sees it.
pub fn relay_doc(relay: &Relay, op_token: &str, record: &str) -> Automerge {
    snapshot_docs(relay, op_token)
        .remove(record)
        .unwrap_or_else(|| panic!("the relay has no record {record}"))
}

/// What the relay holds, as an operator sees it: every log entry and the heads of every document.
/// Two equal `Stored` mean nothing stored changed in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub log: Vec<(u64, String, Vec<u8>)>,
    pub heads: BTreeMap<String, Vec<ChangeHash>>,
}

impl Stored {
    pub fn read(relay: &Relay, op_token: &str) -> Stored {
        Stored {
            log: pull_all(relay, op_token, 0),
            heads: snapshot_docs(relay, op_token)
                .into_iter()
                .map(|(id, doc)| (id, doc.get_heads()))
                .collect(),
        }
    }
}

// ---- bombs: changes whose bytes are small and whose cost is not ----

pub use gridwork_protocol::change::bombs::{billion_op_change, chunk, deflate_bomb};

// ---- requests whose body the relay may refuse before reading it all ----

/// The body of a [`RawRequest`].
pub enum RawBody {
    /// Sent with `Content-Length`.
    Bytes(Vec<u8>),
    /// `len` bytes of `byte`, sent chunked, without a length.
    Unsized { len: usize, byte: u8 },
}

/// A request sent over a plain TCP connection by [`send_raw`].
pub struct RawRequest {
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: RawBody,
}

/// The relay's answer to a [`RawRequest`].
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends `req` with `token` and reads the answer while the body is still being written, as a client
/// must to learn why the relay refused a body it stopped reading (an HTTP library that writes the whole
/// body first sees only a reset connection). Write errors end the body; the answer is what counts.
pub fn send_raw(relay: &Relay, token: &str, req: RawRequest) -> RawAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", relay.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n",
        req.method, req.path, relay.port
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &req.body {
        RawBody::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len())),
        RawBody::Unsized { .. } => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
    }
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        match req.body {
            RawBody::Bytes(b) => writer.write_all(&b)?,
            RawBody::Unsized { mut len, byte } => {
                let piece = vec![byte; 64 * 1024];
                while len > 0 {
                    let n = len.min(piece.len());
                    writer.write_all(format!("{n:x}\r\n").as_bytes())?;
                    writer.write_all(&piece[..n])?;
                    writer.write_all(b"\r\n")?;
                    len -= n;
                }
                writer.write_all(b"0\r\n\r\n")?;
            }
        }
        writer.flush()
    });
    // The answer: its head, then a body of Content-Length bytes or chunks.
    let mut buf = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut piece).expect("read the answer");
        assert!(n > 0, "the relay closed the connection without an answer");
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    let complete = |b: &[u8]| match length {
        Some(n) => b.len() >= n,
        None if chunked => b.ends_with(b"0\r\n\r\n"),
        None => false,
    };
    let mut body = buf[head_end..].to_vec();
    while !complete(&body) {
        match stream.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&piece[..n]),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    if chunked {
        body = dechunk(&body);
    }
    RawAnswer { status, body }
}

/// The data of a chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}
