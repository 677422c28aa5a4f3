//! Errors: [`Error`] for the library functions, [`ScimError`] for what the
//! HTTP API answers (RFC 7644 §3.12).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::schema::ERROR_SCHEMA;

/// Errors of the library functions ([`crate::pending`], [`crate::mark_published`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// What the caller passed cannot be applied (e.g. a user without a name).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A write to the mirror failed; `retry` when it may succeed later
    /// (a conflict with concurrent writes).
    #[error("writing to the SCIM mirror failed ({status}): {detail}")]
    Mirror {
        status: u16,
        detail: String,
        retry: bool,
    },
    #[error("outbox row {seq} does not hold a valid identity snapshot: {source}")]
    Snapshot {
        seq: i64,
        #[source]
        source: serde_json::Error,
    },
}

impl From<ScimError> for Error {
    fn from(e: ScimError) -> Self {
        Error::Mirror {
            status: e.status.as_u16(),
            retry: e.retry || e.status.is_server_error(),
            detail: e.detail,
        }
    }
}

/// `scimType` values of RFC 7644 §3.12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScimType {
    InvalidFilter,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
}

impl ScimType {
    fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
        }
    }
}

/// An error answered to the SCIM client.
#[derive(Debug, thiserror::Error)]
#[error("{status} {detail}")]
pub(crate) struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<ScimType>,
    pub detail: String,
    /// A serialization failure or deadlock: the transaction may be retried.
    pub retry: bool,
}

impl ScimError {
    pub fn new(status: StatusCode, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
            retry: false,
        }
    }
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidValue, detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidPath, detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidFilter, detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidSyntax, detail)
    }
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::NoTarget, detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::Mutability, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Some(ScimType::Uniqueness), detail)
    }
    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            "the resource version does not match If-Match",
        )
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            None,
            "a valid bearer token is required",
        )
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal error; see the service log",
        )
    }
}

impl From<sqlx::Error> for ScimError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            match db.code().as_deref() {
                Some("23505") => {
                    let what = match db.constraint() {
                        Some(c) if c.contains("user_name") => "userName",
                        Some(c) if c.contains("display_name") => "displayName",
                        _ => "value",
                    };
                    return ScimError::conflict(format!(
                        "a resource with this {what} already exists"
                    ));
                }
                // Backstops for what `limits` did not catch: a value an
                // index cannot hold (54000), a character PostgreSQL cannot
                // store (22P05: `\u0000` in jsonb; 22021: NUL in text). The
                // client sent it, so it is a 400, not a 500.
                Some("54000") => {
                    tracing::warn!(error = %e, "a value is too large for an index");
                    return ScimError::invalid_value(
                        "a value is too large to be indexed; see the documented attribute limits",
                    );
                }
                Some("22P05") | Some("22021") => {
                    return ScimError::invalid_value(
                        "a value contains a character that cannot be stored (NUL)",
                    );
                }
                Some("40001") | Some("40P01") => {
                    let mut err = ScimError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        "concurrent update; retry the request",
                    );
                    err.retry = true;
                    return err;
                }
                _ => {}
            }
        }
        tracing::error!(error = %e, "database error");
        ScimError::internal()
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, detail = %self.detail, "scim request failed");
        } else {
            tracing::debug!(status = %self.status, detail = %self.detail, "scim request refused");
        }
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Some(m)) = (self.scim_type, body.as_object_mut()) {
            m.insert("scimType".into(), t.as_str().into());
        }
        let mut resp = (self.status, body.to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::http::SCIM_CONTENT_TYPE),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        resp
    }
}
