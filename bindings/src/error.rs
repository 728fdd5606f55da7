//! The one error type that crosses the FFI. Variants are flat, each with a readable `reason`.
//!
//! Reasons are the core's messages, which name ids, fields and rules but never personal values
//! (see `gridwork_core::Error`); the full detail of internal failures is logged, not thrown.
use gridwork_core::rules::Reason;
use gridwork_core::sync::SyncError;

/// What went wrong, in terms a mobile app can act on. Kotlin sees `GridworkException.NotFound` etc.,
/// Swift `GridworkError.NotFound`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum GridworkError {
    /// No such record, area, attachment or conflict.
    #[error("not found: {reason}")]
    NotFound { reason: String },
    /// A value, id or request the store refuses: fix the input and try again.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// The record is deleted (tombstoned); restore it first.
    #[error("deleted: {reason}")]
    Deleted { reason: String },
    /// The user's role does not allow this.
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    /// The area is outside the user's scope.
    #[error("out of scope: {reason}")]
    OutOfScope { reason: String },
    /// The event lifecycle does not allow this step from the current status.
    #[error("invalid transition: {reason}")]
    InvalidTransition { reason: String },
    /// The conflict to resolve is not there (any more): someone resolved it already.
    #[error("conflict: {reason}")]
    Conflict { reason: String },
    /// The key does not open this file, or the file is not a Gridwork store.
    #[error("wrong key: {reason}")]
    WrongKey { reason: String },
    /// The store file is damaged; offer a restore from the relay.
    #[error("corrupt: {reason}")]
    Corrupt { reason: String },
    /// The store was written by a newer app version (schema too new): update the app.
    #[error("unsupported: {reason}")]
    Unsupported { reason: String },
    /// The relay cannot be reached or refused the request; retry later.
    #[error("network: {reason}")]
    Network { reason: String },
    /// The relay does not know this device's token.
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: String },
    /// An operator revoked this device: the store has wiped itself (records, outbox, attachments).
    /// Tell the user; setting the device up again needs a new token.
    #[error("revoked: {reason}")]
    Revoked { reason: String },
    /// An operator disabled this user: the store has wiped itself, as for `Revoked`.
    #[error("disabled: {reason}")]
    Disabled { reason: String },
    /// The store wiped itself earlier (revoked device, disabled user, or `wipe`): nothing of its
    /// records is left. Delete the file and set the device up again with a new token.
    #[error("wiped: {reason}")]
    Wiped { reason: String },
    /// The relay has this device token registered to another store (a copied store, a reinstalled
    /// app): an operator must reset the device or issue a new token.
    #[error("device in use: {reason}")]
    DeviceInUse { reason: String },
    /// The store belongs to another user than the token (or than the identity given to open it).
    #[error("wrong user: {reason}")]
    WrongUser { reason: String },
    /// The sync was cancelled; what was done so far stays done.
    #[error("cancelled: {reason}")]
    Cancelled { reason: String },
    /// A bug or an environment failure (database, file system, document engine).
    #[error("internal: {reason}")]
    Internal { reason: String },
}

impl From<gridwork_core::Error> for GridworkError {
    fn from(e: gridwork_core::Error) -> Self {
        use gridwork_core::Error as E;
        let reason = e.to_string();
        match e {
            E::UnknownRecord(_)
            | E::UnknownArea(_)
            | E::AttachmentMissing(_)
            | E::NotQuarantined(_)
            | E::Refused {
                reason: Reason::UnknownArea,
                ..
            } => GridworkError::NotFound { reason },
            E::IdentityMismatch(_) => GridworkError::WrongUser { reason },
            E::Wiped(_) => GridworkError::Wiped { reason },
            E::NotInitialized
            | E::TokenMismatch { .. }
            | E::Refused { .. }
            | E::InvalidId(_)
            | E::InvalidField { .. }
            | E::UnknownField { .. }
            | E::ReadOnlyField(_)
            | E::WrongKind { .. }
            | E::MalformedChange(_)
            | E::InvalidInput(_) => GridworkError::InvalidInput { reason },
            E::Deleted(_) => GridworkError::Deleted { reason },
            E::Forbidden(_) => GridworkError::Forbidden { reason },
            E::OutOfScope(_) => GridworkError::OutOfScope { reason },
            E::InvalidTransition(_) => GridworkError::InvalidTransition { reason },
            E::NoConflict { .. } => GridworkError::Conflict { reason },
            E::WrongKeyOrNotAStore => GridworkError::WrongKey { reason },
            E::Corrupt(_) => GridworkError::Corrupt { reason },
            E::SchemaTooNew { .. } => GridworkError::Unsupported { reason },
            E::Sync(sync) => sync.into(),
            E::Sqlite(_) | E::Automerge(_) | E::Io(_) => {
                tracing::error!(error = %reason, "internal store error");
                GridworkError::Internal { reason }
            }
        }
    }
}

impl From<SyncError> for GridworkError {
    fn from(e: SyncError) -> Self {
        let reason = e.to_string();
        match e {
            SyncError::Network(_) => GridworkError::Network { reason },
            SyncError::Unauthorized => GridworkError::Unauthorized { reason },
            SyncError::Revoked => GridworkError::Revoked { reason },
            SyncError::Disabled => GridworkError::Disabled { reason },
            SyncError::DeviceInUse => GridworkError::DeviceInUse { reason },
            SyncError::WrongUser { .. } => GridworkError::WrongUser { reason },
            SyncError::Cancelled => GridworkError::Cancelled { reason },
            // The token changed between the relay's answer and the push: the next sync sorts it out.
            SyncError::IdentityChanged => GridworkError::Network { reason },
            SyncError::Server { status: 403, .. } => GridworkError::Forbidden { reason },
            // Other refusals (4xx, 5xx after retries) are the relay's side: retry later.
            SyncError::Server { .. } => GridworkError::Network { reason },
            SyncError::Protocol(_) => GridworkError::Internal { reason },
        }
    }
}

pub type Result<T, E = GridworkError> = std::result::Result<T, E>;
