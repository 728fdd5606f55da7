//! gridwork-core: the offline store of grid-work records, merged with Automerge, and the sync client.
//!
//! - [`model`]: the domain (kinds and fields, areas, roles, event lifecycle, visits)
//! - [`doc`]: the layout of a record's Automerge document, shared with the relay
//! - [`store`]: the SQLite store: documents, outbox, projection, search, merge primitives
//! - [`sync`]: the client of the relay's HTTP API
pub mod doc;
pub mod error;
pub mod model;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
pub use model::*;
pub use store::GeoPoint;
pub use store::{
    ApplyReport, Durability, ListQuery, NewRecord, OutboxChange, Page, QuarantinedChange,
    RecordSummary, RemoteChunk, Store, StoreKey, StoreOptions, Update,
};
pub use sync::{
    CancelToken, NoProgress, ProgressSink, SyncConfig, SyncError, SyncPhase, SyncProgress,
    SyncReport,
};
