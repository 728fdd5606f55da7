//! Operator actions over the same storage as the relay: areas, users, devices.
//! Usable while a relay is running on the same data directory or database.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::{Limits, StorageConfig};
use crate::error::{Error, Result};
use crate::storage::{now_secs, AreaRow, AreaRowInput, DeviceInfo, Store, UserRow};
use gridwork_protocol::{AreaLevel, Role};

/// A device just created: the token is shown once and never stored (only its SHA-256).
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device_id: String,
    pub user_id: String,
    pub token: String,
}

pub struct Admin {
    store: Store,
}

impl Admin {
    pub async fn open(storage: &StorageConfig) -> Result<Admin> {
        let limits = Limits {
            doc_cache_entries: 1,
            db_connections: 2,
            ..Limits::default()
        };
        Ok(Admin {
            store: Store::open(storage, &limits).await?,
        })
    }

    /// Creates an area. A root area must be a district; a child's level must be below its parent's.
    pub async fn add_area(
        &self,
        id: &str,
        parent: Option<&str>,
        level: AreaLevel,
        name: &str,
    ) -> Result<AreaRow> {
        let area = self
            .store
            .add_area(AreaRowInput {
                id: id.to_owned(),
                parent: parent.map(str::to_owned),
                level,
                name: name.to_owned(),
            })
            .await?;
        tracing::info!(area = %area.id, path = %area.path, "area created");
        Ok(area)
    }

    pub async fn list_areas(&self) -> Result<Vec<AreaRow>> {
        self.store.list_areas().await
    }

    pub async fn add_user(&self, id: &str, name: &str, role: Role, area: &str) -> Result<()> {
        if id.is_empty()
            || id.len() > 128
            || id.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::Invalid(
                "user id must be 1-128 visible characters".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(Error::Invalid("display name must not be empty".into()));
        }
        self.store
            .add_user(UserRow {
                id: id.to_owned(),
                name: name.to_owned(),
                role,
                area: area.to_owned(),
            })
            .await?;
        tracing::info!(user = %id, %role, area, "user created");
        Ok(())
    }

    /// Registers a device for a user and returns its bearer token (the only time it is visible).
    /// `device_id` defaults to a random id.
    pub async fn add_device(&self, user_id: &str, device_id: Option<&str>) -> Result<NewDevice> {
        let mut rng = rand::rngs::OsRng;
        let device_id = match device_id {
            Some(d) => {
                if d.is_empty()
                    || d.len() > 128
                    || d.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(Error::Invalid(
                        "device id must be 1-128 visible characters".into(),
                    ));
                }
                d.to_owned()
            }
            None => {
                let mut b = [0u8; 8];
                rng.fill_bytes(&mut b);
                format!("dev-{}", hex::encode(b))
            }
        };
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let token = format!("gw1_{}", hex::encode(secret));
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.store
            .add_device(&device_id, user_id, hash, now_secs())
            .await?;
        tracing::info!(device = %device_id, user = %user_id, "device added");
        Ok(NewDevice {
            device_id,
            user_id: user_id.to_owned(),
            token,
        })
    }

    pub async fn revoke_device(&self, device_id: &str) -> Result<()> {
        if !self.store.revoke_device(device_id, now_secs()).await? {
            return Err(Error::NotFound(format!("device {device_id}")));
        }
        tracing::info!(device = %device_id, "device revoked");
        Ok(())
    }

    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        self.store.list_devices().await
    }

    /// Releases the storage (stops its writer).
    pub async fn close(self) {
        self.store.close().await;
    }
}
