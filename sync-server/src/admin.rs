//! Operator actions over the same storage as the relay: areas, users, devices.
//! Usable while a relay is running on the same data directory or database (except
//! [`Admin::encrypt_sqlite`], which needs the relay stopped). Errors are typed ([`Error::NotFound`],
//! [`Error::Invalid`], [`Error::Conflict`], [`Error::NotEmpty`], [`Error::Key`]) and name ids only.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::{Limits, RelayKey, StorageConfig};
use crate::error::{Error, Result};
use crate::storage::{
    check_display_name, now_secs, AreaMoved, AreaRow, AreaRowInput, Defined, Definition,
    DeviceInfo, Store, UserChanges, UserInfo, UserRow,
};
use gridwork_protocol::{AreaLevel, Form, Role, Schedule};

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
    /// The operator's functions on a store the caller already has open (the web console's).
    pub(crate) fn on(store: Store) -> Admin {
        Admin { store }
    }

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
        check_display_name(name)?;
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

    /// Every device.
    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>> {
        self.store.list_devices(None).await
    }

    /// One user's devices (`NotFound` for an unknown user).
    pub async fn list_user_devices(&self, user_id: &str) -> Result<Vec<DeviceInfo>> {
        if !self.store.user_exists(user_id).await? {
            return Err(Error::NotFound(format!("user {user_id}")));
        }
        self.store.list_devices(Some(user_id)).await
    }

    /// Unbinds a device token from the store that registered it, so a reinstalled app (a new store)
    /// can register with the same token. The old store, if it still exists, is refused from then on
    /// only if the new one registers first; revoke the device instead when the phone is lost.
    pub async fn reset_device(&self, device_id: &str) -> Result<()> {
        if !self.store.reset_device(device_id).await? {
            return Err(Error::NotFound(format!("device {device_id}")));
        }
        tracing::info!(device = %device_id, "device reset: its token may register a new store");
        Ok(())
    }

    /// Users with their role, area, status and number of active devices (the display name is the
    /// only personal data shown).
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.store.list_users().await
    }

    /// Changes a user's display name, role or area. A new area or role reaches the user's devices at
    /// their next sync (a device whose scope changes bootstraps again).
    pub async fn set_user(&self, id: &str, changes: &UserChanges) -> Result<()> {
        if let Some(name) = &changes.name {
            check_display_name(name)?;
        }
        if changes == &UserChanges::default() {
            return Err(Error::Invalid(
                "nothing to change: give --name, --role or --area".into(),
            ));
        }
        self.store.update_user(id, changes).await?;
        tracing::info!(
            user = %id,
            role = ?changes.role,
            area = ?changes.area,
            renamed = changes.name.is_some(),
            "user changed"
        );
        Ok(())
    }

    /// Disables a user: every device of theirs is refused (`401 disabled`) and wipes its store at its
    /// next contact. Idempotent.
    pub async fn disable_user(&self, id: &str) -> Result<()> {
        if !self.store.set_user_disabled(id, Some(now_secs())).await? {
            return Err(Error::NotFound(format!("user {id}")));
        }
        tracing::info!(user = %id, "user disabled");
        Ok(())
    }

    /// Enables a disabled user again (their devices bootstrap afresh). Idempotent.
    pub async fn enable_user(&self, id: &str) -> Result<()> {
        if !self.store.set_user_disabled(id, None).await? {
            return Err(Error::NotFound(format!("user {id}")));
        }
        tracing::info!(user = %id, "user enabled");
        Ok(())
    }

    pub async fn rename_area(&self, id: &str, name: &str) -> Result<()> {
        if name.trim().is_empty() {
            return Err(Error::Invalid("area name must not be empty".into()));
        }
        if !self.store.rename_area(id, name).await? {
            return Err(Error::NotFound(format!("area {id}")));
        }
        tracing::info!(area = %id, "area renamed");
        Ok(())
    }

    /// Moves an area and its subtree under `parent` (the tree rule of
    /// `gridwork_protocol::check_placement` applies). Records in the subtree move with it; users of
    /// the subtree keep their areas, whose paths change, so their devices bootstrap again.
    pub async fn move_area(&self, id: &str, parent: &str) -> Result<AreaMoved> {
        let moved = self.store.move_area(id, parent).await?;
        tracing::info!(area = %id, parent, areas = moved.areas, records = moved.records, "area moved");
        Ok(moved)
    }

    /// Removes an area that holds no child area, no user and no record (`NotEmpty` otherwise).
    pub async fn remove_area(&self, id: &str) -> Result<()> {
        self.store.remove_area(id).await?;
        tracing::info!(area = %id, "area removed");
        Ok(())
    }

    /// Defines a follow-up schedule for an area's subtree, or replaces the one with the same id.
    /// Devices in or above the area receive it at their next sync.
    pub async fn put_schedule(&self, schedule: Schedule) -> Result<()> {
        let id = schedule.id.clone();
        self.store
            .put_definition(Definition::Schedule(schedule))
            .await?;
        tracing::info!(schedule = %id, "schedule defined");
        Ok(())
    }

    /// Every follow-up schedule, by id.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.store.list_schedules().await
    }

    /// Removes a follow-up schedule.
    pub async fn remove_schedule(&self, id: &str) -> Result<()> {
        self.store.remove_definition(Defined::Schedule, id).await?;
        tracing::info!(schedule = %id, "schedule removed");
        Ok(())
    }

    /// Defines a city form for a kind in an area's subtree, or replaces the one with the same id.
    /// Devices in or below the area receive it at their next sync; every relay's rule book checks
    /// attribute values by it from its next push on.
    pub async fn put_form(&self, form: Form) -> Result<()> {
        let id = form.id.clone();
        self.store.put_definition(Definition::Form(form)).await?;
        tracing::info!(form = %id, "form defined");
        Ok(())
    }

    /// Every city form, by id.
    pub async fn list_forms(&self) -> Result<Vec<Form>> {
        self.store.list_forms().await
    }

    /// Removes a city form. Values entered under it stay in their records.
    pub async fn remove_form(&self, id: &str) -> Result<()> {
        self.store.remove_definition(Defined::Form, id).await?;
        tracing::info!(form = %id, "form removed");
        Ok(())
    }

    /// Sets a user's web console password (argon2id; at least 10 characters). The user's open console
    /// sessions stay; `remove_web_account` ends them.
    pub async fn set_web_password(&self, user: &str, password: &str) -> Result<()> {
        if !self.store.user_exists(user).await? {
            return Err(Error::NotFound(format!("user {user}")));
        }
        let pw = zeroize::Zeroizing::new(password.to_owned());
        let hash = tokio::task::spawn_blocking(move || crate::console::passwords::hash(&pw))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .map_err(Error::Invalid)?;
        self.store.put_web_account(user, &hash).await?;
        tracing::info!(user = %user, "web console password set");
        Ok(())
    }

    /// Sets an area's boundary for the console's map, from GeoJSON (a Polygon, a MultiPolygon, a
    /// Feature of one or a FeatureCollection of them).
    pub async fn set_area_shape(&self, area: &str, geojson: &str) -> Result<()> {
        if !self.list_areas().await?.iter().any(|a| a.id == area) {
            return Err(Error::NotFound(format!("area {area}")));
        }
        let shape = crate::console::map::parse_boundary(geojson).map_err(Error::Invalid)?;
        self.store
            .put_area_shape(area, &crate::console::map::to_geojson(&shape))
            .await?;
        tracing::info!(area = %area, "area boundary set");
        Ok(())
    }

    /// Removes a user's web account and ends their console sessions.
    pub async fn remove_web_account(&self, user: &str) -> Result<()> {
        if !self.store.remove_web_account(user).await? {
            return Err(Error::NotFound(format!("web account of {user}")));
        }
        tracing::info!(user = %user, "web account removed");
        Ok(())
    }

    /// The latest console actions, newest first.
    pub async fn audit_trail(&self, limit: i64) -> Result<Vec<crate::storage::console::AuditRow>> {
        self.store.audit_trail(limit).await
    }

    /// Whether the database connections are encrypted in transit (PostgreSQL, from the server's own
    /// `pg_stat_ssl`); `None` for the embedded store.
    pub async fn transport_encrypted(&self) -> Result<Option<bool>> {
        self.store.transport_encrypted().await
    }

    /// Converts the plaintext SQLite store in `data_dir` into an encrypted one with `key`, in place
    /// (see `storage::sqlite::encrypt_database`). The relay must be stopped. Returns the schema version.
    pub fn encrypt_sqlite(data_dir: &std::path::Path, key: &RelayKey) -> Result<i64> {
        crate::storage::sqlite::encrypt_database(data_dir, key)
    }

    /// Releases the storage (stops its writer).
    pub async fn close(self) {
        self.store.close().await;
    }
}
