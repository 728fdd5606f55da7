//! JSON bodies of the relay's HTTP API, version 1 (docs/protocol.md). Shared with the relay, so both
//! ends are compiled against the same definitions.
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;

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
pub struct MeResponse {
    pub device_id: String,
    pub user_id: String,
    pub role: String,
    pub area: String,
    #[serde(default)]
    pub area_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResult {
    #[serde(default)]
    pub hash: String,
    /// `accepted` or `rejected`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
