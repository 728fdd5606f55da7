//! The sync client: pushes the outbox to the relay and pulls everyone else's changes.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("network: {0}")]
    Network(String),
}
