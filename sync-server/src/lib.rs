//! gridwork-server: the Gridwork relay. An append-only log of Automerge changes with per-record scope
//! checks, served over HTTP (docs/protocol.md), stored in embedded SQLite or PostgreSQL.
//!
//! In-process use (demo, tests):
//! ```no_run
//! # async fn demo() -> gridwork_server::Result<()> {
//! use gridwork_server::{start, Admin, AreaLevel, RelayKey, Role, ServerConfig, StorageConfig};
//! // Keep the key: without it the data cannot be read (`RelayKey::write_new_file`).
//! let storage = StorageConfig::sqlite("/tmp/relay", RelayKey::generate());
//! let admin = Admin::open(&storage).await?;
//! admin.add_area("d1", None, AreaLevel::District, "District 1").await?;
//! admin.add_user("u1", "Ann", Role::Operator, "d1").await?;
//! let token = admin.add_device("u1", None).await?.token;
//! let server = start(ServerConfig::new("127.0.0.1:0".parse().unwrap(), storage)).await?;
//! println!("http://{} {}", server.local_addr(), token);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod api;
pub mod config;
pub mod console;
pub mod engine;
pub mod error;
pub mod prof;
pub mod ratelimit;
pub mod server;
pub mod storage;

pub use admin::{Admin, NewDevice};
pub use config::{ConsoleConfig, Encryption, Limits, RelayKey, ServerConfig, StorageConfig};
pub use error::{ApiError, Error, Result};
pub use gridwork_protocol::{AreaLevel, Every, Form, Kind, Role, Schedule};
pub use server::{start, RunningServer};
pub use storage::{AreaMoved, AreaRow, DeviceInfo, UserChanges, UserInfo};
