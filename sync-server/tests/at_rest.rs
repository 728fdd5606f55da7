//! Residents' data at rest on the embedded relay: a real `gridwork-server` process, a real device
//! syncing to it over loopback, and the raw bytes of the relay's files.
//!
//! - Encrypted (the default): the record's name and the user's display name appear nowhere in the
//!   database or its WAL, in UTF-8 or UTF-16; the same run with `--insecure-no-encryption` finds them,
//!   so the check can fail.
//! - The data directory is 0700 and its files 0600 whatever the umask.
//! - No key, a wrong key, a plaintext database opened with a key: clear errors, no panic.
//! - `admin encrypt` converts a plaintext store in place, with what only its WAL held.
#![cfg(unix)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gridwork_core::{
    CancelToken, Identity, Kind, ListQuery, NewRecord, NoProgress, Role, Store, StoreKey,
    StoreOptions, SyncConfig,
};

const BIN: &str = env!("CARGO_BIN_EXE_gridwork-server");
/// A resident's name, unlikely anywhere else.
const NAME: &str = "Quokkaberg Zyxwvutsrq";
/// A user's display name.
const USER_NAME: &str = "Ottilie Wunderbaum";

#[derive(Clone)]
enum Key {
    Hex(String),
    File(PathBuf),
    Insecure,
    Missing,
}

fn random_key() -> Key {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    Key::Hex(hex::encode(b))
}

/// `gridwork-server <args>` on `dir` with `key`, under `umask` (the process's own umask when None).
fn command(args: &[&str], dir: &Path, key: &Key, umask: Option<&str>) -> Command {
    let mut cmd = match umask {
        Some(m) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("umask {m} && exec \"$0\" \"$@\""), BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(&args[..1]).arg("--data").arg(dir);
    match key {
        Key::Hex(_) | Key::Missing => {}
        Key::File(f) => {
            cmd.arg("--key-file").arg(f);
        }
        Key::Insecure => {
            cmd.arg("--insecure-no-encryption");
        }
    }
    cmd.args(&args[1..]).env_remove("GRIDWORK_RELAY_KEY");
    if let Key::Hex(h) = key {
        cmd.env("GRIDWORK_RELAY_KEY", h);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn admin(dir: &Path, key: &Key, args: &[&str]) -> Output {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    command(&all, dir, key, None).output().expect("run admin")
}

/// Runs a command that must succeed; returns its stdout.
fn succeed(mut cmd: Command) -> String {
    let out = cmd.output().expect("run gridwork-server");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs an admin command that must succeed; returns its stdout.
fn admin_ok(dir: &Path, key: &Key, args: &[&str]) -> String {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    succeed(command(&all, dir, key, None))
}

/// Runs an admin command that must fail; returns its stderr.
fn admin_err(dir: &Path, key: &Key, args: &[&str]) -> String {
    let out = admin(dir, key, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "admin {args:?} should fail");
    assert!(!err.contains("panicked"), "{err}");
    err
}

struct Relay {
    child: Child,
    url: String,
}

impl Relay {
    fn start(dir: &Path, key: &Key, umask: Option<&str>) -> Relay {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = command(&["serve", "--listen", &listen], dir, key, umask)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start relay");
        // Owned by the Relay from here on: a failed start is killed and reaped by its Drop.
        let mut relay = Relay {
            child,
            url: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = relay.child.try_wait() {
                panic!("relay exited: {status}");
            }
            let health = reqwest::blocking::get(format!("{}/v1/health", relay.url));
            if health.is_ok_and(|r| r.status().is_success()) {
                return relay;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("relay did not become healthy");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The area tree and a worker of g1 with one device; returns the device's token.
fn setup(dir: &Path, key: &Key, user: &str, device: &str) -> String {
    for args in [
        &["area", "add", "d1", "--level", "district", "--name", "D"][..],
        &[
            "area", "add", "s1", "--parent", "d1", "--level", "street", "--name", "S",
        ],
        &[
            "area",
            "add",
            "c1",
            "--parent",
            "s1",
            "--level",
            "community",
            "--name",
            "C",
        ],
        &[
            "area", "add", "g1", "--parent", "c1", "--level", "grid", "--name", "G",
        ],
    ] {
        admin_ok(dir, key, args);
    }
    add_worker(dir, key, user, device)
}

fn add_worker(dir: &Path, key: &Key, user: &str, device: &str) -> String {
    admin_ok(
        dir,
        key,
        &[
            "user", "add", user, "--name", USER_NAME, "--role", "worker", "--area", "g1",
        ],
    );
    admin_ok(dir, key, &["device", "add", "--user", user, "--id", device])
        .trim()
        .to_owned()
}

/// A worker's device: an encrypted store of its own.
fn device(store_dir: &Path, relay: &Relay, token: &str, user: &str) -> (Store, SyncConfig) {
    let store = Store::open(
        StoreOptions::new(
            store_dir.join(format!("{user}.db")),
            StoreKey::Raw([5u8; 32]),
        )
        .identity(Identity {
            user_id: user.into(),
            device_id: format!("{user}-phone"),
            role: Role::Worker,
            area: "g1".into(),
        }),
    )
    .unwrap();
    (store, SyncConfig::new(relay.url.clone(), token.to_owned()))
}

fn sync(store: &Store, config: &SyncConfig) {
    store
        .sync(config, &NoProgress, &CancelToken::new())
        .expect("sync");
}

/// A relay on `dir` that holds one record named [`NAME`], pushed by a real device.
fn relay_with_a_record(dir: &Path, stores: &Path, key: &Key) -> Relay {
    let token = setup(dir, key, "u1", "u1-phone");
    let relay = Relay::start(dir, key, None);
    let (store, config) = device(stores, &relay, &token, "u1");
    sync(&store, &config);
    store
        .create(NewRecord::new(Kind::Person, "g1").field("name", NAME))
        .unwrap();
    sync(&store, &config);
    assert_eq!(
        store.outbox_len().unwrap(),
        0,
        "the record reached the relay"
    );
    relay
}

/// Does `hay` hold `needle` in UTF-8, UTF-16LE or UTF-16BE?
fn holds(hay: &[u8], needle: &str) -> bool {
    let utf16: Vec<u16> = needle.encode_utf16().collect();
    let le: Vec<u8> = utf16.iter().flat_map(|u| u.to_le_bytes()).collect();
    let be: Vec<u8> = utf16.iter().flat_map(|u| u.to_be_bytes()).collect();
    [needle.as_bytes(), &le[..], &be[..]]
        .iter()
        .any(|n| hay.windows(n.len()).any(|w| w == *n))
}

/// The database and its side files, as they are on disk now.
fn relay_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["gridwork.db", "gridwork.db-wal", "gridwork.db-shm"]
        .iter()
        .filter_map(|n| std::fs::read(dir.join(n)).ok().map(|b| (n.to_string(), b)))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn names_are_not_in_the_files_of_an_encrypted_relay() {
    for (key, encrypted) in [(random_key(), true), (Key::Insecure, false)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("relay");
        let relay = relay_with_a_record(&dir, tmp.path(), &key);
        // While the relay runs: the acknowledged record is in the WAL (or already in the database).
        let files = relay_files(&dir);
        assert!(files.iter().any(|(n, _)| n == "gridwork.db-wal"));
        let found = |needle: &str| files.iter().any(|(_, b)| holds(b, needle));
        assert_eq!(
            found(NAME),
            !encrypted,
            "record name, encrypted={encrypted}"
        );
        assert_eq!(
            found(USER_NAME),
            !encrypted,
            "user name, encrypted={encrypted}"
        );
        drop(relay);
        let found = |needle: &str| relay_files(&dir).iter().any(|(_, b)| holds(b, needle));
        assert_eq!(found(NAME), !encrypted, "after the relay stopped");
    }
}

#[test]
fn relay_files_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    // An existing, open directory is tightened too.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key_file = tmp.path().join("relay.key");
    let mut keygen = command(
        &["admin", "keygen", "--out"],
        &dir,
        &Key::Missing,
        Some("000"),
    );
    keygen.arg(&key_file);
    succeed(keygen);
    assert_eq!(mode(&key_file), 0o600);
    let key = Key::File(key_file);
    let area = [
        "admin", "area", "add", "d1", "--level", "district", "--name", "D",
    ];
    succeed(command(&area, &dir, &key, Some("000")));
    let relay = Relay::start(&dir, &key, Some("000"));
    let health = reqwest::blocking::get(format!("{}/v1/health", relay.url)).unwrap();
    assert!(health.status().is_success());
    assert_eq!(mode(&dir), 0o700);
    for f in ["gridwork.db", "gridwork.db-wal", "gridwork.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

#[test]
fn keys_are_required_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    // No key: refused, saying how to give one; nothing is created.
    let out = command(
        &["serve", "--listen", "127.0.0.1:0"],
        &dir,
        &Key::Missing,
        None,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--key-file") && err.contains("--insecure-no-encryption"),
        "{err}"
    );
    assert!(!dir.join("gridwork.db").exists());
    assert!(admin_err(&dir, &Key::Missing, &["area", "list"]).contains("GRIDWORK_RELAY_KEY"));
    // A malformed key.
    let err = admin_err(&dir, &Key::Hex("abc".into()), &["area", "list"]);
    assert!(err.contains("64 hex characters"), "{err}");
    // The right key opens it; another key, or none, does not.
    let key = random_key();
    admin_ok(
        &dir,
        &key,
        &["area", "add", "d1", "--level", "district", "--name", "D"],
    );
    let err = admin_err(&dir, &random_key(), &["area", "list"]);
    assert!(err.contains("wrong key"), "{err}");
    let err = admin_err(&dir, &Key::Insecure, &["area", "list"]);
    assert!(err.contains("is encrypted"), "{err}");
    assert!(admin_ok(&dir, &key, &["area", "list"]).contains("d1"));
    // Both a key and --insecure-no-encryption: ambiguous, refused.
    let Key::Hex(hex) = &key else { unreachable!() };
    let out = command(&["admin", "area", "list"], &dir, &Key::Insecure, None)
        .env("GRIDWORK_RELAY_KEY", hex)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one"));
    // A plaintext database opened with a key: told to convert it.
    let plain = tmp.path().join("plain");
    admin_ok(
        &plain,
        &Key::Insecure,
        &["area", "add", "d1", "--level", "district", "--name", "D"],
    );
    let err = admin_err(&plain, &key, &["area", "list"]);
    assert!(
        err.contains("not encrypted") && err.contains("encrypt"),
        "{err}"
    );
}

#[test]
fn encrypt_converts_a_plaintext_store_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    let key = random_key();
    let mut relay = relay_with_a_record(&dir, tmp.path(), &Key::Insecure);
    // Not while a relay has it open.
    let err = admin_err(&dir, &key, &["encrypt"]);
    assert!(err.contains("in use"), "{err}");
    assert!(reqwest::blocking::get(format!("{}/v1/health", relay.url)).is_ok());
    // Killed: what was acknowledged may be only in the WAL; the conversion must carry it over.
    let _ = relay.child.kill();
    let _ = relay.child.wait();
    drop(relay);
    let before = relay_files(&dir);
    assert!(before.iter().any(|(_, b)| holds(b, NAME)));
    let out = admin_ok(&dir, &key, &["encrypt"]);
    assert!(out.contains("encrypted"), "{out}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["gridwork.db"],
        "no plaintext WAL or temporary file is left"
    );
    assert_eq!(mode(&dir.join("gridwork.db")), 0o600);
    let after = std::fs::read(dir.join("gridwork.db")).unwrap();
    assert!(!after.starts_with(b"SQLite format 3\0"));
    assert!(!holds(&after, NAME) && !holds(&after, USER_NAME));
    // Again: refused, nothing changed.
    assert!(admin_err(&dir, &key, &["encrypt"]).contains("already encrypted"));
    // The relay runs on the converted store with the key, and another device receives the record.
    let token = add_worker(&dir, &key, "u2", "u2-phone");
    let relay = Relay::start(&dir, &key, None);
    let (store, config) = device(tmp.path(), &relay, &token, "u2");
    sync(&store, &config);
    let records = store.list(&ListQuery::new(Kind::Person)).unwrap().items;
    assert_eq!(records.len(), 1);
    let rec = store.get(&records[0].id).unwrap();
    assert_eq!(rec.fields.get("name").map(String::as_str), Some(NAME));
    drop(relay);
    assert!(!relay_files(&dir).iter().any(|(_, b)| holds(b, NAME)));
}

/// New and converted relay databases authenticate their pages with HMAC-SHA256; one made before
/// (SQLCipher's default, HMAC-SHA512) still opens, takes writes and keeps its own.
#[test]
fn pages_are_authenticated_with_sha256_and_older_databases_still_open() {
    let tmp = tempfile::tempdir().unwrap();
    let key = random_key();
    let Key::Hex(hex) = &key else { unreachable!() };
    let opens_with = |dir: &Path, algorithm: &str| -> bool {
        let c = rusqlite::Connection::open(dir.join("gridwork.db")).unwrap();
        c.execute_batch(&format!(
            "PRAGMA cipher_log_level = NONE; PRAGMA key = \"x'{hex}'\";
             PRAGMA cipher_hmac_algorithm = {algorithm};"
        ))
        .unwrap();
        c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok()
    };
    let add = ["area", "add", "d1", "--level", "district", "--name", "D"];
    let new = tmp.path().join("new");
    admin_ok(&new, &key, &add);
    assert!(opens_with(&new, "HMAC_SHA256"));
    assert!(!opens_with(&new, "HMAC_SHA512"));

    // A database made with SQLCipher's default.
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o700)).unwrap();
    {
        let c = rusqlite::Connection::open(old.join("gridwork.db")).unwrap();
        c.execute_batch(&format!(
            "PRAGMA key = \"x'{hex}'\"; PRAGMA cipher_hmac_algorithm = HMAC_SHA512;
             CREATE TABLE made_before (x); DROP TABLE made_before;"
        ))
        .unwrap();
    }
    admin_ok(&old, &key, &add);
    assert!(admin_ok(&old, &key, &["area", "list"]).contains("d1"));
    assert!(opens_with(&old, "HMAC_SHA512"), "it keeps its own");
    assert!(!opens_with(&old, "HMAC_SHA256"));
    // A wrong key is still told as such (neither authentication opens it).
    assert!(admin_err(&old, &random_key(), &["area", "list"]).contains("wrong key"));

    // Converted from plaintext.
    let plain = tmp.path().join("plain");
    admin_ok(&plain, &Key::Insecure, &add);
    admin_ok(&plain, &key, &["encrypt"]);
    assert!(opens_with(&plain, "HMAC_SHA256"));
    assert!(admin_ok(&plain, &key, &["area", "list"]).contains("d1"));
}
