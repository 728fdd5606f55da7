//! JSON bodies of the relay's HTTP API (docs/protocol.md, sync-server/openapi.yaml). The device's sync
//! client and the relay's handlers are both compiled against these definitions, so they cannot drift.
use serde::{Deserialize, Serialize};

/// Version of the HTTP protocol; `GET /v1/health` reports it.
pub const PROTOCOL_VERSION: u32 = 2;

/// Name of the header a device sends its store's Automerge actor in (hex), on every request.
pub const ACTOR_HEADER: &str = "gridwork-actor";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub version: String,
    pub protocol: u32,
}

/// Who the relay says the caller is: everything here comes from the token, nothing from the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeResponse {
    pub device_id: String,
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    pub role: String,
    pub area: String,
    #[serde(default)]
    pub area_path: String,
    /// The Automerge actor (hex) of the store this device token is bound to, once one has registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// `POST /v1/me`: binds the device token to the store presenting `actor` (first call), or checks that
/// it is the bound one (every later call).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireArea {
    pub id: String,
    pub parent: Option<String>,
    pub level: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AreasResponse {
    pub areas: Vec<WireArea>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushChange {
    pub record: String,
    /// Base64 (standard alphabet, padded) of one Automerge change.
    pub bytes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRequest {
    pub changes: Vec<PushChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    Accepted,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    #[serde(default)]
    pub hash: String,
    pub status: PushStatus,
    /// Why a change was rejected: a [`crate::rules::Reason`] code (a newer relay may send codes an
    /// older device does not know; it treats them as final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A readable explanation of the reason (names rules and fields, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResponse {
    pub results: Vec<PushResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullItem {
    pub seq: u64,
    pub record: String,
    pub bytes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullResponse {
    pub items: Vec<PullItem>,
    pub cursor: u64,
    pub more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub record: String,
    pub bytes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotResponse {
    pub cursor: u64,
    pub records: Vec<SnapshotRecord>,
    pub next: Option<String>,
}

/// The answer to an attachment chunk `PUT`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentPutResponse {
    pub sha256: String,
    /// Bytes received so far.
    pub size: u64,
    pub complete: bool,
}
