//! Errors: `Error` is the internal error of the storage and admin layers, `ApiError` is what a client
//! sees. Every failure leaves the server as `{"error":{"code","message"}}`; messages never carry
//! personal data (no record contents, no tokens), only ids and counts.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Internal error of storage, admin and startup code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Input rejected by an admin operation (bad id, unknown parent, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Conflict(String),
    /// An admin operation that would orphan data: removing an area that still holds areas, users or
    /// records.
    #[error("not empty: {0}")]
    NotEmpty(String),
    /// The relay's key is missing or malformed, or does not open the database (wrong key, plaintext
    /// database opened with a key, encrypted database opened without one).
    #[error("{0}")]
    Key(String),
    /// The storage worker is gone (shutdown in progress or a crashed thread).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Pool(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answer of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra headers (`Retry-After`, `Upload-Offset`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
    }
    pub fn revoked() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "revoked",
            "this device has been revoked",
        )
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", msg)
    }
    pub fn out_of_scope(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "out_of_scope", msg)
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", msg)
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", msg)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
    pub fn with_header(mut self, name: header::HeaderName, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Unavailable(_) => {
                tracing::warn!(error = %e, "storage unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "internal",
                    "service unavailable",
                )
            }
            other => {
                // Storage errors carry SQL text and ids at most, never request bodies.
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}
