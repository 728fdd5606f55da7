//! gridwork-core: the offline store of grid-work records, merged with Automerge, and the sync client.
//!
//! - [`model`], [`doc`], [`rules`]: the domain, the document layout and the rule book, from
//!   `gridwork-protocol` (shared with the relay)
//! - [`store`]: the SQLite store: documents, outbox, projection, search, merge primitives
//! - [`sync`]: the client of the relay's HTTP API
pub mod error;
pub use gridwork_protocol::{doc, limits, model, rules, scope, stats};
pub mod store;
pub mod sync;

pub use error::{Error, Result};
pub use model::*;
pub use store::GeoPoint;
pub use store::{
    ApplyReport, DiscardReport, DroppedEdit, DuplicateCandidate, DuplicatePairSummary,
    DuplicateReason, Durability, ExportFormat, ExportQuery, Followup, FollowupQuery, HouseholdMove,
    ListQuery, MergeReport, NewForMe, NewForMeKind, NewRecord, OutboxChange, Page,
    QuarantineOrigin, QuarantinedChange, RecordSummary, RemoteChunk, Store, StoreKey, StoreOptions,
    Update,
};
pub use sync::{
    CancelToken, IdentityClaims, NoProgress, ProgressSink, SyncConfig, SyncError, SyncPhase,
    SyncProgress, SyncReport,
};
