//! JSON bodies of the relay's HTTP API (docs/protocol.md, sync-server/openapi.yaml). The device's sync
//! client and the relay's handlers are both compiled against these definitions, so they cannot drift.
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Version of the HTTP protocol; `GET /v1/health` reports it.
pub const PROTOCOL_VERSION: u32 = 2;

/// Name of the header a device sends its store's Automerge actor in (hex), on every request.
pub const ACTOR_HEADER: &str = "gridwork-actor";

/// Header of a `429 rate_limited` answer: milliseconds until a request is allowed again. `Retry-After`
/// says the same in whole seconds (its unit), which is up to a hundred times too long for a token
/// bucket that refills in milliseconds; clients prefer this one.
pub const RETRY_AFTER_MS_HEADER: &str = "retry-after-ms";

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
    /// [`areas_version`] of the area tree `GET /v1/areas` answers this device now: a device that
    /// holds the tree of that version need not fetch it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub areas_version: Option<String>,
    /// [`crate::schedules_version`] of the follow-up schedules `GET /v1/schedules` answers this
    /// device now (absent from relays that predate schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules_version: Option<String>,
    /// [`crate::forms_version`] of the city forms `GET /v1/forms` answers this device now (absent from
    /// relays that predate forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forms_version: Option<String>,
    /// Whether this relay honours [`PushRequest::expect`] (absent from relays that predate it, which
    /// ignore the field): a device that knows it may push while its `/v1/me` is still on the way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub push_expect: bool,
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
    /// The workers whose area this is (user ids, enabled users only), for per-worker lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AreasResponse {
    pub areas: Vec<WireArea>,
}

/// `GET /v1/schedules`: the follow-up schedules of the caller's areas and of their ancestors (a
/// schedule covers its area's subtree).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulesResponse {
    pub schedules: Vec<crate::Schedule>,
}

/// `GET /v1/forms`: the city forms of the caller's areas and of their ancestors (a form covers its
/// area's subtree).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FormsResponse {
    pub forms: Vec<crate::Form>,
}

/// A digest of an area tree as `GET /v1/areas` sends it (hex SHA-256): equal for the same areas in
/// any order, different when any area's id, parent, level or name differs or an area comes or goes.
pub fn areas_version(areas: &[WireArea]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&WireArea> = areas.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    for a in sorted {
        // Length-prefixed fields, so that no two trees hash the same bytes.
        let parent = a.parent.as_deref();
        let fields = [Some(a.id.as_str()), parent, Some(&a.level), Some(&a.name)];
        let workers = a.workers.iter().map(|w| Some(w.as_str()));
        for field in fields.into_iter().chain(workers) {
            match field {
                Some(f) => {
                    h.update([1u8]);
                    h.update((f.len() as u64).to_le_bytes());
                    h.update(f.as_bytes());
                }
                None => h.update([0u8]),
            }
        }
        // The end of the area's workers.
        h.update([2u8]);
    }
    hex::encode(h.finalize())
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
    /// Who the device believes the token is. A relay that says [`MeResponse::push_expect`] judges
    /// nothing of a push whose `expect` differs from the token (another user, or the token bound to
    /// another store or to none) and answers `412 identity_changed` for the whole push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<PushExpect>,
}

/// The precondition of a push: the token's user, and the store (Automerge actor, hex) it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushExpect {
    pub user: String,
    pub actor: String,
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
    /// The relay's record view ([`crate::model::Record::compact_json`]) of the record once this
    /// item is applied; sent only on the record's latest entry, so a device holding nothing else of
    /// the record's may store it without loading the document (it checks it when it does load it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<Box<RawValue>>,
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
    /// The relay's record view of the document (see [`PullItem::view`]); absent for records the relay
    /// stored before it kept views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<Box<RawValue>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn area(id: &str, parent: Option<&str>, level: &str, name: &str) -> WireArea {
        WireArea {
            id: id.into(),
            parent: parent.map(Into::into),
            level: level.into(),
            name: name.into(),
            workers: Vec::new(),
        }
    }

    #[test]
    fn the_areas_version_names_the_tree_not_its_order() {
        let tree = vec![
            area("d1", None, "district", "District 1"),
            area("s1", Some("d1"), "street", "Street 1"),
            area("c1", Some("s1"), "community", "Community 1"),
            area("g1", Some("c1"), "grid", "Grid 1"),
        ];
        let v = areas_version(&tree);
        assert_eq!(v.len(), 64);
        let mut shuffled = tree.clone();
        shuffled.reverse();
        assert_eq!(areas_version(&shuffled), v, "order does not matter");
        // Every change of what a device stores changes the version.
        let changed: Vec<Vec<WireArea>> = vec![
            tree[..3].to_vec(),
            [tree.clone(), vec![area("g2", Some("c1"), "grid", "Grid 2")]].concat(),
            {
                let mut t = tree.clone();
                t[3].name = "Grid One".into();
                t
            },
            {
                let mut t = tree.clone();
                t[3].parent = Some("s1".into());
                t
            },
            {
                let mut t = tree.clone();
                t[3].level = "community".into();
                t
            },
            {
                let mut t = tree.clone();
                t[0].parent = Some("".into());
                t
            },
        ];
        for (i, t) in changed.iter().enumerate() {
            assert_ne!(areas_version(t), v, "case {i}");
        }
        // Fields cannot run into each other: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            areas_version(&[area("ab", None, "c", "")]),
            areas_version(&[area("a", None, "bc", "")])
        );
        assert_eq!(areas_version(&[]).len(), 64);
    }
}
