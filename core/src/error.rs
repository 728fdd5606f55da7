//! The one error type of gridwork-core. Messages name ids, fields and reasons, never personal values.
use gridwork_protocol::rules::{Reason, Refusal};
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
    /// `init` was told something about the user that the relay's answer for the token contradicts.
    #[error("the token is {field} `{token}`, not `{claimed}`: leave --{field} out or use the token issued for it")]
    TokenMismatch {
        field: String,
        claimed: String,
        token: String,
    },
    /// The store wiped itself (the relay said its device was revoked or its user disabled, or the app
    /// asked): nothing of its records is left. Set the device up again with a new token.
    #[error("this store was wiped ({0}): nothing of its records is left; set the device up again with a new token from an operator")]
    Wiped(String),
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
    #[error("out of scope: {0}")]
    OutOfScope(String),
    #[error("invalid transition: {0}")]
    InvalidTransition(String),
    /// The rule book refused a write for a reason without a variant of its own (a value, an
    /// append-only list, an immutable field, an unknown area, ...). Nothing was stored.
    #[error("refused: {detail} ({reason})")]
    Refused { reason: Reason, detail: String },
    #[error("no quarantined change {0}")]
    NotQuarantined(String),
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
    /// The typed error of a rule-book refusal of a write to record `id`.
    pub fn refused(id: &str, refusal: Refusal) -> Self {
        let Refusal { reason, detail } = refusal;
        match reason {
            Reason::OutOfScope => Error::OutOfScope(detail),
            Reason::ForbiddenRole | Reason::WrongAuthor => Error::Forbidden(detail),
            Reason::InvalidTransition => Error::InvalidTransition(detail),
            Reason::Deleted => Error::Deleted(id.to_owned()),
            reason => Error::Refused { reason, detail },
        }
    }

    pub(crate) fn field(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
