//! The one error type of gridwork-core. Messages name ids, fields and reasons, never personal values.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("store is not initialised: open it once with an identity")]
    NotInitialized,
    #[error("wrong key, or the file is not a Gridwork store")]
    WrongKeyOrNotAStore,
    #[error("the store file is corrupt: {0}")]
    Corrupt(String),
    #[error("the store was created for another user or device ({0})")]
    IdentityMismatch(String),
    #[error("the store schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("no record with id {0}")]
    UnknownRecord(String),
    #[error("no area with id {0}")]
    UnknownArea(String),
    #[error("invalid id: {0}")]
    InvalidId(String),
    #[error("invalid value for field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("field `{field}` is not a field of a {kind}")]
    UnknownField { kind: String, field: String },
    #[error("field `{0}` cannot be edited directly")]
    ReadOnlyField(String),
    #[error("record {0} is deleted")]
    Deleted(String),
    #[error("record {id} is a {actual}, not a {expected}")]
    WrongKind {
        id: String,
        expected: String,
        actual: String,
    },
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("area {0} is outside your scope")]
    OutOfScope(String),
    #[error("event transition `{action}` is not allowed from status `{from}`")]
    InvalidTransition { action: String, from: String },
    #[error("no conflict on field `{field}` of record {id}")]
    NoConflict { id: String, field: String },
    #[error("malformed change: {0}")]
    MalformedChange(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("attachment {0} is not available")]
    AttachmentMissing(String),
    #[error("sync failed: {0}")]
    Sync(#[from] crate::sync::SyncError),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("document error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// SQLite reports a wrong SQLCipher key and a file that is not a database the same way; corruption
/// found while reading gets its own variant so callers can offer a restore.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::WrongKeyOrNotAStore,
            Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt(e.to_string()),
            _ => Error::Sqlite(e),
        }
    }
}

impl From<gridwork_protocol::Invalid> for Error {
    fn from(e: gridwork_protocol::Invalid) -> Self {
        match e {
            gridwork_protocol::Invalid::Field { field, reason } => {
                Error::InvalidField { field, reason }
            }
            gridwork_protocol::Invalid::UnknownField { kind, field } => {
                Error::UnknownField { kind, field }
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn field(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
