//! The operator's changes of the area tree, users and devices, one logic for both backends: what
//! must exist, what must not, and what an area move rewrites. A backend only supplies the SQL:
//! [`AdminSql`] (with the push path's [`WriteSql`] for the area map and the scope index).

use std::future::Future;

use super::sql::in_transaction;
use super::writer::WriteSql;
use super::{
    child_path, moved_paths, plan_area_move, prefix_end, AreaContents, AreaMoved, AreaRow,
    AreaRowInput, UserChanges, UserRow,
};
use crate::error::{Error, Result};
use gridwork_protocol::scope::{join_paths, scope_keys, split_paths};
use gridwork_protocol::{AreaLevel, Form, Schedule};

/// Rows whose existence the logic checks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Row {
    Area,
    User,
    Device,
}

/// What an area holds, counted before it is removed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Held {
    /// Areas whose parent is the area (by id).
    Children,
    /// Users whose area is the area (by id).
    Users,
    /// Records under the area (by path).
    Records,
    /// Follow-up schedules of the area (by id).
    Schedules,
    /// City forms of the area (by id).
    Forms,
}

/// The SQL of the operator's changes: primitives without decisions, inside a transaction.
pub(crate) trait AdminSql: WriteSql {
    fn exists(&mut self, row: Row, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// An area's level (rank) and path.
    fn area_place(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Option<(i64, String)>>> + Send;
    /// Makes the area tree's version move on (and, where rows lock, serialises changes of the tree).
    fn bump_areas_version(&mut self) -> impl Future<Output = Result<()>> + Send;
    fn insert_area(&mut self, area: &AreaRow) -> impl Future<Output = Result<()>> + Send;
    fn rename_area(&mut self, id: &str, name: &str) -> impl Future<Output = Result<u64>> + Send;
    fn set_area_parent(
        &mut self,
        id: &str,
        parent: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Replaces the prefix `old` of every area path starting with it by `new`; how many changed.
    fn rewrite_area_paths(
        &mut self,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Records under the path `key` (scope index): id and stored paths.
    fn records_under(
        &mut self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;
    /// New stored paths of records: `(id, paths)`.
    fn set_record_paths(
        &mut self,
        rows: &[(&str, &str)],
    ) -> impl Future<Output = Result<()>> + Send;
    fn count(&mut self, held: Held, arg: &str) -> impl Future<Output = Result<i64>> + Send;
    /// Drops the runs of the log's scope index whose keys are in `from..to`.
    fn delete_entry_runs(
        &mut self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_area(&mut self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn insert_user(&mut self, user: &UserRow) -> impl Future<Output = Result<()>> + Send;
    /// Applies the given changes; how many users matched.
    fn update_user(
        &mut self,
        id: &str,
        changes: &UserChanges,
    ) -> impl Future<Output = Result<u64>> + Send;
    fn insert_device(
        &mut self,
        id: &str,
        user: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Inserts or replaces a schedule or form (its definition as JSON).
    fn put_definition(
        &mut self,
        what: Defined,
        id: &str,
        area: &str,
        definition: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes a schedule or form; how many there were.
    fn delete_definition(
        &mut self,
        what: Defined,
        id: &str,
    ) -> impl Future<Output = Result<u64>> + Send;
}

pub(crate) async fn add_area<S: AdminSql>(sql: &mut S, input: &AreaRowInput) -> Result<AreaRow> {
    in_transaction(sql, async |sql: &mut S| {
        // First: serialises concurrent changes of the tree.
        sql.bump_areas_version().await?;
        let parent = match &input.parent {
            None => None,
            Some(p) => sql
                .area_place(p)
                .await?
                .and_then(|(rank, path)| Some((AreaLevel::from_rank(rank)?, path))),
        };
        let path = child_path(input, parent)?;
        if sql.exists(Row::Area, &input.id).await? {
            return Err(Error::Conflict(format!("area {}", input.id)));
        }
        let area = AreaRow {
            id: input.id.clone(),
            parent: input.parent.clone(),
            level: input.level,
            name: input.name.clone(),
            path,
        };
        sql.insert_area(&area).await?;
        Ok(area)
    })
    .await
}

/// Renames an area; `false` when it does not exist.
pub(crate) async fn rename_area<S: AdminSql>(sql: &mut S, id: &str, name: &str) -> Result<bool> {
    in_transaction(sql, async |sql: &mut S| {
        sql.bump_areas_version().await?;
        Ok(sql.rename_area(id, name).await? > 0)
    })
    .await
}

/// Moves an area: the paths of its subtree, the paths and scope keys of the records in it, and the
/// area version (so every relay's push path reloads its area map) change in one transaction, which
/// holds the log like a push does, so no push computes paths with the old tree meanwhile. Past log
/// entries keep their scope keys.
pub(crate) async fn move_area<S: AdminSql>(
    sql: &mut S,
    id: &str,
    parent: &str,
) -> Result<AreaMoved> {
    in_transaction(sql, async |sql: &mut S| {
        sql.first_seq().await?;
        sql.bump_areas_version().await?;
        let (old, new) = plan_area_move(&sql.load_areas().await?, id, parent)?;
        if old == new {
            return Ok(AreaMoved {
                areas: 0,
                records: 0,
            });
        }
        sql.set_area_parent(id, parent).await?;
        let areas = sql.rewrite_area_paths(&old, &new).await?;
        let records = sql.records_under(&old).await?;
        let mut paths = Vec::with_capacity(records.len());
        let mut keys = Vec::new();
        for (rec, stored) in &records {
            let moved = moved_paths(&split_paths(stored), &old, &new);
            keys.extend(scope_keys(&moved).into_iter().map(|k| (k, rec.as_str())));
            paths.push((rec.as_str(), join_paths(&moved)));
        }
        let rows: Vec<(&str, &str)> = paths.iter().map(|(r, p)| (*r, p.as_str())).collect();
        sql.set_record_paths(&rows).await?;
        let ids: Vec<&str> = records.iter().map(|(r, _)| r.as_str()).collect();
        sql.clear_scope(&ids).await?;
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, r)| (k.as_str(), *r)).collect();
        sql.insert_scope(&keys).await?;
        Ok(AreaMoved {
            areas,
            records: records.len() as u64,
        })
    })
    .await
}

/// Removes an area that has no child areas, no users and no records.
pub(crate) async fn remove_area<S: AdminSql>(sql: &mut S, id: &str) -> Result<()> {
    in_transaction(sql, async |sql: &mut S| {
        sql.bump_areas_version().await?;
        let (_, path) = sql
            .area_place(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("area {id}")))?;
        let held = AreaContents {
            children: sql.count(Held::Children, id).await?,
            users: sql.count(Held::Users, id).await?,
            records: sql.count(Held::Records, &path).await?,
            schedules: sql.count(Held::Schedules, id).await?,
            forms: sql.count(Held::Forms, id).await?,
        };
        held.check_empty(id)?;
        // The area's own scope runs of past entries go too: an area created later with the same id
        // and place must not inherit this one's history.
        sql.delete_entry_runs(&path, &prefix_end(&path)).await?;
        sql.delete_area(id).await
    })
    .await
}

/// Adds a user. The tree's version moves on: devices learn the workers of each area with it.
pub(crate) async fn add_user<S: AdminSql>(sql: &mut S, user: &UserRow) -> Result<()> {
    in_transaction(sql, async |sql: &mut S| {
        sql.bump_areas_version().await?;
        if !sql.exists(Row::Area, &user.area).await? {
            return Err(Error::Invalid(format!("area {} does not exist", user.area)));
        }
        if sql.exists(Row::User, &user.id).await? {
            return Err(Error::Conflict(format!("user {}", user.id)));
        }
        sql.insert_user(user).await
    })
    .await
}

/// Applies `changes` to a user (`NotFound` for an unknown user, `Invalid` for an unknown area). The
/// tree's version moves on, as for [`add_user`].
pub(crate) async fn update_user<S: AdminSql>(
    sql: &mut S,
    id: &str,
    changes: &UserChanges,
) -> Result<()> {
    in_transaction(sql, async |sql: &mut S| {
        sql.bump_areas_version().await?;
        if let Some(area) = &changes.area {
            if !sql.exists(Row::Area, area).await? {
                return Err(Error::Invalid(format!("area {area} does not exist")));
            }
        }
        if sql.update_user(id, changes).await? == 0 {
            return Err(Error::NotFound(format!("user {id}")));
        }
        Ok(())
    })
    .await
}

pub(crate) async fn add_device<S: AdminSql>(
    sql: &mut S,
    id: &str,
    user: &str,
    token_hash: &[u8; 32],
    now: i64,
) -> Result<()> {
    in_transaction(sql, async |sql: &mut S| {
        if !sql.exists(Row::User, user).await? {
            return Err(Error::Invalid(format!("user {user} does not exist")));
        }
        if sql.exists(Row::Device, id).await? {
            return Err(Error::Conflict(format!("device {id}")));
        }
        sql.insert_device(id, user, token_hash, now).await
    })
    .await
}

/// Defines a follow-up schedule or a city form, or replaces the one with its id: checked
/// ([`Schedule::check`], [`Form::check`]) and in an existing area. The tree's version moves on, so every
/// relay answers devices afresh and its writer reloads the forms it checks values by.
pub(crate) async fn put_definition<S: AdminSql>(sql: &mut S, def: &Definition) -> Result<()> {
    def.check().map_err(Error::Invalid)?;
    let (what, id, area) = (def.what(), def.id(), def.area());
    let json = def.to_json()?;
    in_transaction(sql, async |sql: &mut S| {
        sql.bump_areas_version().await?;
        if !sql.exists(Row::Area, area).await? {
            return Err(Error::Invalid(format!("area {area} does not exist")));
        }
        sql.put_definition(what, id, area, &json).await
    })
    .await
}

/// Removes a schedule or form (`NotFound` when there is none with that id).
pub(crate) async fn remove_definition<S: AdminSql>(
    sql: &mut S,
    what: Defined,
    id: &str,
) -> Result<()> {
    in_transaction(sql, async |sql: &mut S| {
        sql.bump_areas_version().await?;
        if sql.delete_definition(what, id).await? == 0 {
            return Err(Error::NotFound(format!("{} {id}", what.name())));
        }
        Ok(())
    })
    .await
}

/// What an operator defines per area subtree, each kept as JSON in a table of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defined {
    Schedule,
    Form,
}

impl Defined {
    pub fn name(self) -> &'static str {
        match self {
            Defined::Schedule => "schedule",
            Defined::Form => "form",
        }
    }
}

/// A schedule or a form, as [`put_definition`] stores it.
#[derive(Debug, Clone)]
pub enum Definition {
    Schedule(Schedule),
    Form(Form),
}

impl Definition {
    fn what(&self) -> Defined {
        match self {
            Definition::Schedule(_) => Defined::Schedule,
            Definition::Form(_) => Defined::Form,
        }
    }
    fn id(&self) -> &str {
        match self {
            Definition::Schedule(s) => &s.id,
            Definition::Form(f) => &f.id,
        }
    }
    fn area(&self) -> &str {
        match self {
            Definition::Schedule(s) => &s.area,
            Definition::Form(f) => &f.area,
        }
    }
    fn check(&self) -> std::result::Result<(), String> {
        match self {
            Definition::Schedule(s) => s.check(),
            Definition::Form(f) => f.check(),
        }
    }
    fn to_json(&self) -> Result<String> {
        match self {
            Definition::Schedule(s) => serde_json::to_string(s),
            Definition::Form(f) => serde_json::to_string(f),
        }
        .map_err(|e| Error::Invalid(e.to_string()))
    }
}
