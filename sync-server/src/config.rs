//! Server configuration: where to listen, where the data lives, and the protocol limits.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the relay keeps its log.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// Embedded SQLite in `data_dir/gridwork.db` (created if missing). One relay process per directory.
    Sqlite { data_dir: PathBuf },
    /// PostgreSQL; any number of relay processes may share one database.
    Postgres { url: String },
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
    /// Database connections (SQLite readers, or the PostgreSQL pool size).
    pub db_connections: usize,
}

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
            db_connections: 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub limits: Limits,
}

impl ServerConfig {
    /// Config with the default limits.
    pub fn new(listen: SocketAddr, storage: StorageConfig) -> Self {
        ServerConfig {
            listen,
            storage,
            limits: Limits::default(),
        }
    }
}
