//! The web console's tables (schema version 8): web accounts, sessions and the audit trail. The SQL is
//! written once, with `$n` parameters both SQLite and PostgreSQL read (each `$n` first appears in
//! order, so SQLite numbers them as PostgreSQL does); each backend only binds values.
use super::sql::in_transaction;
use crate::error::Result;
use std::future::Future;

pub(crate) const PUT_ACCOUNT: &str = "INSERT INTO web_accounts (user_id, password_hash, created_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash";
pub(crate) const ACCOUNT: &str = "SELECT password_hash FROM web_accounts WHERE user_id = $1";
pub(crate) const DELETE_ACCOUNT: &str = "DELETE FROM web_accounts WHERE user_id = $1";
pub(crate) const INSERT_SESSION: &str =
    "INSERT INTO web_sessions (token_hash, user_id, csrf, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SESSION: &str = "SELECT s.user_id, s.csrf, u.name, u.role, u.area, u.disabled_at
     FROM web_sessions s JOIN users u ON u.id = s.user_id
     WHERE s.token_hash = $1 AND s.expires_at > $2";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM web_sessions WHERE token_hash = $1";
pub(crate) const DELETE_USER_SESSIONS: &str = "DELETE FROM web_sessions WHERE user_id = $1";
pub(crate) const DELETE_EXPIRED: &str = "DELETE FROM web_sessions WHERE expires_at <= $1";
pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO console_audit (at, user_id, action, target, outcome) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const PUT_SHAPE: &str = "INSERT INTO area_shapes (area, geojson) VALUES ($1, $2)
     ON CONFLICT (area) DO UPDATE SET geojson = excluded.geojson";
pub(crate) const SHAPES: &str = "SELECT area, geojson FROM area_shapes ORDER BY area";
pub(crate) const AUDIT: &str = "SELECT at, user_id, action, target, outcome FROM console_audit
     ORDER BY seq DESC LIMIT $1";

/// One console action, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub at: i64,
    pub user: String,
    pub action: String,
    /// The record, area or account acted on.
    pub target: Option<String>,
    /// `ok`, or the refusal's code.
    pub outcome: String,
}

/// The SQL the console's storage needs from a backend.
pub(crate) trait ConsoleSql: super::sql::Transact {
    /// Runs a statement of this module with text and integer parameters; rows changed.
    fn exec(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Runs a query of this module; its rows as values (text, integers, nulls).
    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> impl Future<Output = Result<Vec<Vec<Owned>>>> + Send;
}

/// A parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    Blob(&'a [u8]),
}

/// A value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owned {
    Text(String),
    Int(i64),
    Null,
}

impl Owned {
    fn text(&self) -> Option<String> {
        match self {
            Owned::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
    fn int(&self) -> i64 {
        match self {
            Owned::Int(i) => *i,
            _ => 0,
        }
    }
}

pub(crate) async fn put_account<S: ConsoleSql>(
    sql: &mut S,
    user: &str,
    hash: &str,
    now: i64,
) -> Result<()> {
    sql.exec(
        PUT_ACCOUNT,
        &[Value::Text(user), Value::Text(hash), Value::Int(now)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn account<S: ConsoleSql>(sql: &mut S, user: &str) -> Result<Option<String>> {
    let rows = sql.query(ACCOUNT, &[Value::Text(user)]).await?;
    Ok(rows.first().and_then(|r| r[0].text()))
}

/// Removes a web account and its sessions; whether there was one.
pub(crate) async fn remove_account<S: ConsoleSql>(sql: &mut S, user: &str) -> Result<bool> {
    in_transaction(sql, async |sql: &mut S| {
        sql.exec(DELETE_USER_SESSIONS, &[Value::Text(user)]).await?;
        Ok(sql.exec(DELETE_ACCOUNT, &[Value::Text(user)]).await? > 0)
    })
    .await
}

pub(crate) async fn insert_session<S: ConsoleSql>(
    sql: &mut S,
    token_hash: &[u8],
    user: &str,
    csrf: &str,
    now: i64,
    expires: i64,
) -> Result<()> {
    sql.exec(DELETE_EXPIRED, &[Value::Int(now)]).await?;
    sql.exec(
        INSERT_SESSION,
        &[
            Value::Blob(token_hash),
            Value::Text(user),
            Value::Text(csrf),
            Value::Int(now),
            Value::Int(expires),
        ],
    )
    .await?;
    Ok(())
}

/// A live session: its CSRF token and its user as the users table has them now (a request reads it in
/// one query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub user: String,
    pub csrf: String,
    pub name: String,
    pub role: gridwork_protocol::Role,
    pub area: String,
    pub disabled: bool,
}

/// The live session of a token hash.
pub(crate) async fn session<S: ConsoleSql>(
    sql: &mut S,
    token_hash: &[u8],
    now: i64,
) -> Result<Option<WebSession>> {
    let rows = sql
        .query(SESSION, &[Value::Blob(token_hash), Value::Int(now)])
        .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let text = |i: usize| {
        r[i].text()
            .ok_or_else(|| crate::error::Error::Unavailable("a session row does not read".into()))
    };
    Ok(Some(WebSession {
        user: text(0)?,
        csrf: text(1)?,
        name: text(2)?,
        role: text(3)?.parse().map_err(crate::error::Error::Unavailable)?,
        area: text(4)?,
        disabled: r[5] != Owned::Null,
    }))
}

pub(crate) async fn delete_session<S: ConsoleSql>(sql: &mut S, token_hash: &[u8]) -> Result<()> {
    sql.exec(DELETE_SESSION, &[Value::Blob(token_hash)]).await?;
    Ok(())
}

pub(crate) async fn audit<S: ConsoleSql>(sql: &mut S, row: &AuditRow) -> Result<()> {
    sql.exec(
        INSERT_AUDIT,
        &[
            Value::Int(row.at),
            Value::Text(&row.user),
            Value::Text(&row.action),
            Value::OptText(row.target.as_deref()),
            Value::Text(&row.outcome),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn audit_trail<S: ConsoleSql>(sql: &mut S, limit: i64) -> Result<Vec<AuditRow>> {
    let rows = sql.query(AUDIT, &[Value::Int(limit)]).await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditRow {
            at: r[0].int(),
            user: r[1].text().unwrap_or_default(),
            action: r[2].text().unwrap_or_default(),
            target: r[3].text(),
            outcome: r[4].text().unwrap_or_default(),
        })
        .collect())
}

pub(crate) async fn put_shape<S: ConsoleSql>(sql: &mut S, area: &str, geojson: &str) -> Result<()> {
    sql.exec(PUT_SHAPE, &[Value::Text(area), Value::Text(geojson)])
        .await?;
    Ok(())
}

/// Every area boundary: (area, GeoJSON MultiPolygon).
pub(crate) async fn shapes<S: ConsoleSql>(sql: &mut S) -> Result<Vec<(String, String)>> {
    let rows = sql.query(SHAPES, &[]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r[0].text()?, r[1].text()?)))
        .collect())
}
