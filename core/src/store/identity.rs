//! The identity the relay gives. At every sync the store registers with the relay (`POST /v1/me`) and
//! takes its answer: the user must be the store's, and the device id, role and area replace the
//! store's, so an operator's change of a user's grid or role reaches the device. The area tree from
//! `GET /v1/areas` replaces the local one in the same transaction (the relay is the authority on the
//! tree: no level check on this path).
use super::{meta, set_meta, Inner, Store, META_AREAS_VERSION, META_CONFIRMED, META_IDENTITY};
use crate::doc;
use crate::error::Result;
use crate::model::{Area, AreaLevel, Identity, Role};
use crate::sync::{areas_version, MeResponse, SyncError, WireArea};
use rusqlite::params;
use std::collections::{BTreeSet, HashMap};

/// How the relay's answer changed what this user sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ScopeChange {
    /// Areas are in scope that were not: their records must come from a snapshot.
    pub gained: bool,
    /// Areas left the scope: their records must leave the device.
    pub lost: bool,
}

impl Store {
    /// [`areas_version`] of the area tree the store took from the relay last, if any.
    pub(crate) fn areas_version(&self) -> Result<Option<String>> {
        meta(&self.lock().conn, META_AREAS_VERSION)
    }

    /// Takes the relay's answer about this device's token (`me`) and the area tree it sent (`areas`;
    /// `None`: the store's tree is the relay's, see [`MeResponse::areas_version`]) in one
    /// transaction. A different user than the store's is refused before anything changes.
    pub(crate) fn adopt_relay_identity(
        &self,
        me: &MeResponse,
        areas: Option<&[WireArea]>,
    ) -> Result<ScopeChange> {
        let mut inner = self.lock();
        inner.check_writable()?;
        if me.user_id != inner.identity.user_id {
            return Err(SyncError::WrongUser {
                store: inner.identity.user_id.clone(),
                token: me.user_id.clone(),
            }
            .into());
        }
        let role = Role::parse(&me.role)
            .ok_or_else(|| SyncError::Protocol(format!("unknown role `{}`", me.role)))?;
        if !doc::is_valid_area_id(&me.area) || me.device_id.is_empty() {
            return Err(SyncError::Protocol(
                "the relay's answer names no valid area or device".into(),
            )
            .into());
        }
        let identity = Identity {
            user_id: me.user_id.clone(),
            device_id: me.device_id.clone(),
            role,
            area: me.area.clone(),
        };
        // The tree sent, its version, and whether the store's differs.
        let tree = match areas {
            Some(areas) => {
                let tree = area_tree(areas)?;
                let changed = inner.stored_areas()? != tree;
                Some((tree, areas_version(areas), changed))
            }
            None => None,
        };
        let covered_before = inner.covered_areas();
        let tree_changed = matches!(tree, Some((_, _, true)));
        let version_changed = match &tree {
            Some((_, version, _)) => {
                meta(&inner.conn, META_AREAS_VERSION)?.as_ref() != Some(version)
            }
            None => false,
        };
        let identity_changed = identity != inner.identity;
        if tree_changed || version_changed || identity_changed || !inner.confirmed {
            let tx = inner.conn.transaction()?;
            if let Some((tree, version, changed)) = &tree {
                if *changed {
                    tx.execute("DELETE FROM areas", [])?;
                    for a in tree {
                        tx.prepare_cached(
                            "INSERT INTO areas (id, parent, level, name, path) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![a.id, a.parent, a.level.as_str(), a.name, a.path])?;
                    }
                }
                // The workers of each area (the version covers them: they may change alone).
                tx.execute("DELETE FROM area_workers", [])?;
                for a in areas.unwrap_or_default() {
                    for w in &a.workers {
                        tx.prepare_cached(
                            "INSERT OR IGNORE INTO area_workers (area, user) VALUES (?1, ?2)",
                        )?
                        .execute(params![a.id, w])?;
                    }
                }
                set_meta(&tx, META_AREAS_VERSION, version)?;
            }
            set_meta(
                &tx,
                META_IDENTITY,
                &serde_json::to_string(&identity).expect("serialises"),
            )?;
            set_meta(&tx, META_CONFIRMED, "1")?;
            tx.commit()?;
        }
        if let Some((tree, _, true)) = tree {
            inner.area_paths = tree.into_iter().map(|a| (a.id, a.path)).collect();
        }
        if identity_changed {
            tracing::info!(
                device = %identity.device_id,
                role = %identity.role,
                area = %identity.area,
                "identity from the relay"
            );
        }
        inner.identity = identity;
        inner.confirmed = true;
        let covered_after = inner.covered_areas();
        Ok(ScopeChange {
            gained: !covered_after.is_subset(&covered_before),
            lost: !covered_before.is_subset(&covered_after),
        })
    }
}

impl Inner {
    /// The areas of the tree this user's scope covers.
    fn covered_areas(&self) -> BTreeSet<String> {
        let actor = self.rule_actor();
        self.area_paths
            .keys()
            .filter(|a| actor.covers(&self.area_paths, a))
            .cloned()
            .collect()
    }
}

/// The area tree the relay sent, with every area's path, ordered by path. Every parent must be in
/// the answer (the relay sends the user's subtree with its ancestors) and the tree must have no cycle.
fn area_tree(areas: &[WireArea]) -> Result<Vec<Area>, SyncError> {
    let by_id: HashMap<&str, &WireArea> = areas.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = Vec::with_capacity(areas.len());
    for area in areas {
        if !doc::is_valid_area_id(&area.id) {
            return Err(SyncError::Protocol(
                "the relay sent an invalid area id".into(),
            ));
        }
        let level = AreaLevel::parse(&area.level)
            .ok_or_else(|| SyncError::Protocol(format!("unknown area level `{}`", area.level)))?;
        // The path is the ids from the root down: walk up the parents, at most one step per area.
        let mut ids = vec![area.id.as_str()];
        let mut parent = area.parent.as_deref();
        while let Some(p) = parent {
            if ids.len() > areas.len() {
                return Err(SyncError::Protocol(format!(
                    "the area tree has a cycle at {}",
                    area.id
                )));
            }
            let up = by_id.get(p).ok_or_else(|| {
                SyncError::Protocol(format!(
                    "area {} has a parent the relay did not send",
                    area.id
                ))
            })?;
            ids.push(p);
            parent = up.parent.as_deref();
        }
        let path: String = ids.iter().rev().map(|id| format!("{id}/")).collect();
        out.push(Area {
            id: area.id.clone(),
            parent: area.parent.clone(),
            level,
            name: area.name.clone(),
            path,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(id: &str, parent: Option<&str>, level: &str) -> WireArea {
        WireArea {
            id: id.into(),
            parent: parent.map(Into::into),
            level: level.into(),
            name: format!("Area {id}"),
            workers: Vec::new(),
        }
    }

    #[test]
    fn the_relays_tree_gets_paths_and_bad_trees_are_refused() {
        // A grid directly under a district is the relay's to allow: no level check here.
        let tree = area_tree(&[
            wire("g9", Some("d1"), "grid"),
            wire("d1", None, "district"),
            wire("s1", Some("d1"), "street"),
        ])
        .unwrap();
        let paths: Vec<(&str, &str)> = tree
            .iter()
            .map(|a| (a.id.as_str(), a.path.as_str()))
            .collect();
        assert_eq!(paths, [("d1", "d1/"), ("g9", "d1/g9/"), ("s1", "d1/s1/")]);
        for bad in [
            vec![wire("g1", Some("c1"), "grid")],
            vec![wire("a", Some("b"), "grid"), wire("b", Some("a"), "grid")],
            vec![wire("d1", None, "county")],
            vec![wire("bad id", None, "district")],
        ] {
            assert!(
                matches!(area_tree(&bad), Err(SyncError::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}
