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

/// Protocol limits (docs/protocol.md, "Limits"). Tests lower some of them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, attachment chunks included.
    pub max_body_bytes: usize,
    /// Largest page of pull and snapshot.
    pub max_page: usize,
    /// Default page of pull and snapshot when `limit` is absent.
    pub default_page: usize,
    /// Most changes in one push.
    pub max_changes_per_push: usize,
    /// Token-bucket refill rate per device, requests per second.
    pub rate_per_sec: f64,
    /// Token-bucket size per device.
    pub rate_burst: f64,
    /// Record documents kept in memory by the push path.
    pub doc_cache_entries: usize,
    /// Database connections (SQLite readers, or the PostgreSQL pool size).
    pub db_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            max_page: 5_000,
            default_page: 1_000,
            max_changes_per_push: 1_000,
            rate_per_sec: 100.0,
            rate_burst: 200.0,
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
