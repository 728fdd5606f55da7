//! Server configuration: where to listen, where the data lives (and how it is protected at rest), and
//! the protocol limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the relay keeps its log.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// Embedded SQLite in `data_dir/gridwork.db` (created if missing). One relay process per directory.
    /// The directory is kept at mode 0700 and its files at 0600.
    Sqlite {
        data_dir: PathBuf,
        encryption: Encryption,
    },
    /// PostgreSQL; any number of relay processes may share one database. The data is encrypted at rest
    /// by whatever the operator's PostgreSQL does (disk or tablespace encryption): the relay does not
    /// encrypt it itself. The connection uses TLS when the URL asks for it (`sslmode=require`,
    /// `verify-ca`, `verify-full`; `sslrootcert=FILE` for a private CA).
    Postgres { url: String },
}

impl StorageConfig {
    /// The embedded SQLite store, encrypted with `key`.
    pub fn sqlite(data_dir: impl Into<PathBuf>, key: RelayKey) -> StorageConfig {
        StorageConfig::Sqlite {
            data_dir: data_dir.into(),
            encryption: Encryption::Key(key),
        }
    }
}

/// How the embedded SQLite store is protected at rest.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// SQLCipher (AES-256, every page authenticated) with this raw key. The database file and its WAL
    /// hold no readable record, name or token hash.
    Key(RelayKey),
    /// No encryption: residents' data lies in plain text on the disk. Development only
    /// (`--insecure-no-encryption`).
    Insecure,
}

/// Environment variable holding the relay's key as 64 hex characters (alternative to a key file).
pub const KEY_ENV: &str = "GRIDWORK_RELAY_KEY";

/// The 256-bit SQLCipher key of the relay's SQLite store. Never printed (`Debug` hides it) and wiped from
/// memory when dropped.
#[derive(Clone)]
pub struct RelayKey(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(..)")
    }
}

impl RelayKey {
    /// A key of its own for `purpose` (HMAC-SHA256 of it under this key).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0[..]).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> RelayKey {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k[..]);
        RelayKey(k)
    }

    /// Parses 64 hex characters (surrounding whitespace, such as a final newline, is ignored).
    pub fn from_hex(text: &str) -> Result<RelayKey> {
        let text = text.trim();
        let bad = || Error::Key("a relay key must be 64 hex characters (32 bytes)".into());
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, &mut k[..]).map_err(|_| bad())?;
        Ok(RelayKey(k))
    }

    /// Reads a key file written by [`RelayKey::write_new_file`] (or by hand: 64 hex characters). A file
    /// that others can read is accepted with a warning: the key protects every resident's data.
    pub fn from_file(path: &Path) -> Result<RelayKey> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Key(format!("cannot read the key file {}: {e}", path.display()))
        })?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the key file can be read by other users; chmod 600 it"
                    );
                }
            }
        }
        Self::from_hex(&text).map_err(|e| Error::Key(format!("key file {}: {e}", path.display())))
    }

    /// The key in `GRIDWORK_RELAY_KEY`, if set.
    pub fn from_env() -> Result<Option<RelayKey>> {
        match std::env::var(KEY_ENV) {
            Ok(v) => Self::from_hex(&v)
                .map(Some)
                .map_err(|e| Error::Key(format!("{KEY_ENV}: {e}"))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Key(format!("{KEY_ENV} is not valid text")))
            }
        }
    }

    /// Writes the key as hex to a new file, mode 0600 whatever the umask, flushed to disk. Never
    /// overwrites: replacing a key file would lose the only way to read the data it protects.
    pub fn write_new_file(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| {
            Error::Key(format!(
                "cannot create the key file {}: {e}",
                path.display()
            ))
        })?;
        crate::storage::set_private(path, 0o600)?;
        let mut text = self.hex();
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }

    /// The key as SQLCipher takes a raw key: `x'<hex>'` (no key derivation: the key is random already).
    pub(crate) fn sqlcipher_literal(&self) -> zeroize::Zeroizing<String> {
        let mut s = zeroize::Zeroizing::new(String::with_capacity(69));
        s.push_str("\"x'");
        s.push_str(&self.hex());
        s.push_str("'\"");
        s
    }

    /// Lowercase hex, in memory that is wiped when dropped.
    fn hex(&self) -> zeroize::Zeroizing<String> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = zeroize::Zeroizing::new(String::with_capacity(65));
        for b in self.0.iter() {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 15) as usize] as char);
        }
        s
    }
}

/// Protocol limits (docs/protocol.md, "Limits"). Tests lower some of them. The defaults of the limits a
/// device also enforces come from `gridwork_protocol::limits`, so both sides agree.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, attachment chunks included.
    pub max_body_bytes: usize,
    /// Most items (log entries or records) in a page of pull and snapshot.
    pub max_page: usize,
    /// Default page of pull and snapshot when `limit` is absent.
    pub default_page: usize,
    /// Pull and snapshot pages stop adding items once they carry this many bytes (at least one item
    /// is always sent).
    pub max_page_bytes: usize,
    /// Most changes in one push.
    pub max_changes_per_push: usize,
    /// Largest change once inflated.
    pub max_change_bytes: usize,
    /// Most operations in one change.
    pub max_ops_per_change: u64,
    /// Most operations in one push, all changes together: the changes beyond are answered `busy`.
    pub max_ops_per_push: u64,
    /// Most bytes of changes in one push once inflated: the changes beyond are answered `busy`. (An
    /// honest device sends changes uncompressed, so this is at most its request body.)
    pub max_push_bytes: usize,
    /// Most operations one record's document may hold (its highest operation counter).
    pub max_doc_ops: u64,
    /// Writer time for one push: when planning a push takes longer, its remaining changes are answered
    /// `busy`, so one device cannot stall the others.
    pub max_push_millis: u64,
    /// Token-bucket refill rate per device, requests per second.
    pub rate_per_sec: f64,
    /// Token-bucket size per device.
    pub rate_burst: f64,
    /// Failed authentications (missing, malformed or unknown token) allowed per client address and
    /// second, refilling a bucket of `auth_fail_burst`; beyond, the address gets `429`.
    pub auth_fail_per_sec: f64,
    /// Bucket size of failed authentications per client address.
    pub auth_fail_burst: f64,
    /// Record documents kept in memory by the push path.
    pub doc_cache_entries: usize,
    /// Threads a large batch of pushes is judged on (records are independent; each record's
    /// changes are judged in order on one thread). Default: the machine's cores, at most 4.
    pub plan_threads: usize,
    /// Fewest queued changes the push writer judges while its last transaction commits; fewer wait
    /// for that commit (a round of lookups per device pushing a few changes would cost more than
    /// the overlap gains), and a lone batch of fewer than twice as many is written without the
    /// committer. 0: every batch is judged while the last one commits. `None`: the backend's
    /// default, [`PIPELINE_MIN_CHANGES`] on SQLite and none on PostgreSQL, whose writer already
    /// judges each batch before it takes the lock that relays share (judging ahead measured no
    /// better there, and worse with two relays; see BENCHMARKS.md section 15).
    pub pipeline_min_changes: Option<usize>,
    /// Database connections for reads and administration (SQLite readers, or PostgreSQL's pool,
    /// which has room for the push writer's two on top).
    pub db_connections: usize,
}

/// The SQLite writer's default [`Limits::pipeline_min_changes`].
pub const PIPELINE_MIN_CHANGES: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        use gridwork_protocol::limits as shared;
        Limits {
            max_body_bytes: shared::MAX_BODY_BYTES,
            max_page: shared::MAX_PAGE_ITEMS,
            default_page: 1_000,
            max_page_bytes: shared::MAX_PAGE_BYTES,
            max_changes_per_push: shared::MAX_CHANGES_PER_PUSH,
            max_change_bytes: shared::MAX_CHANGE_BYTES,
            max_ops_per_change: shared::MAX_OPS_PER_CHANGE,
            max_ops_per_push: shared::MAX_OPS_PER_PUSH,
            max_push_bytes: shared::MAX_BODY_BYTES,
            max_doc_ops: shared::MAX_DOC_OPS,
            max_push_millis: 2_000,
            rate_per_sec: 100.0,
            rate_burst: 200.0,
            auth_fail_per_sec: 1.0,
            auth_fail_burst: 20.0,
            doc_cache_entries: 20_000,
            plan_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            pipeline_min_changes: None,
            db_connections: 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub limits: Limits,
    /// The web console (`/console`), when the relay has a key for its console stores.
    pub console: Option<ConsoleConfig>,
}

impl ServerConfig {
    /// Config with the default limits; the web console on when the store is an encrypted SQLite one
    /// (its stores live in `<data>/console`, under keys derived from the relay key).
    pub fn new(listen: SocketAddr, storage: StorageConfig) -> Self {
        let console = match &storage {
            StorageConfig::Sqlite {
                data_dir,
                encryption: Encryption::Key(key),
            } => Some(ConsoleConfig::new(data_dir.join("console"), key.clone())),
            _ => None,
        };
        ServerConfig {
            listen,
            storage,
            limits: Limits::default(),
            console,
        }
    }
}

/// The web console for supervisors and operators. Each web user acts through a console device of
/// their own: a Gridwork store (encrypted, in `dir`) that syncs with this relay like a phone, so every
/// console action is an Automerge change authored by that user and judged by the same rule book.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where the console devices' stores live (mode 0700).
    pub dir: PathBuf,
    /// Derives each console store's key and each console device's token; never stored.
    pub key: RelayKey,
    /// Mark the session cookie `Secure` (the relay is reached over TLS, behind a proxy).
    pub secure_cookies: bool,
    /// How long a session lasts.
    pub session_secs: i64,
    /// Failed logins a client address may make at once, and how many it regains per second.
    pub login_fail_burst: f64,
    pub login_fail_per_sec: f64,
    /// A map tile server to draw under the console's map (`https://host/{z}/{x}/{y}.png`); none: the
    /// map is drawn without tiles (a relay may have no internet).
    pub map_tiles: Option<String>,
}

impl ConsoleConfig {
    pub fn new(dir: PathBuf, key: RelayKey) -> Self {
        ConsoleConfig {
            dir,
            key,
            secure_cookies: false,
            session_secs: 8 * 3600,
            login_fail_burst: 5.0,
            login_fail_per_sec: 1.0 / 30.0,
            map_tiles: None,
        }
    }
}
