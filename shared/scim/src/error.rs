//! Errors and the per-call audit record.
//!
//! Every error that comes from talking to a server carries the [`CallRecord`]
//! of the failed call, so the caller can write the failure to its audit log
//! exactly like a success.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one HTTP exchange with a SCIM server looked like, for the audit log.
///
/// It never holds credentials: only the method, the path relative to the
/// app's base URL, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub method: String,
    /// Relative to the base URL, e.g. `/Users/abc` or `/Users?filter=...`.
    pub path: String,
    /// `None` when no response arrived (connection error, timeout).
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub remote_id: Option<String>,
    pub error: Option<String>,
}

/// Errors of the SCIM client and of parsing SCIM resources.
#[derive(thiserror::Error, Debug)]
pub enum ScimError {
    /// The server answered with a non-success status.
    #[error("{} {} failed with HTTP {status}{}: {detail}", .record.method, .record.path, fmt_scim_type(.scim_type))]
    Http {
        record: CallRecord,
        status: u16,
        scim_type: Option<String>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// No response: connection refused or reset, DNS, TLS, timeout.
    #[error("{} {} failed{}: {detail}", .record.method, .record.path, if *.timeout { " (timeout)" } else { "" })]
    Transport {
        record: CallRecord,
        detail: String,
        timeout: bool,
    },
    /// The server answered with success but the body is not what SCIM says.
    #[error("{} {} returned an invalid response: {detail}", .record.method, .record.path)]
    InvalidResponse { record: CallRecord, detail: String },
    /// A lookup by a supposedly unique attribute matched several resources;
    /// picking one would risk acting on the wrong account.
    #[error("{} {} matched {count} resources by {attribute}; refusing to guess", .record.method, .record.path)]
    Ambiguous {
        record: CallRecord,
        attribute: String,
        count: usize,
    },
    /// A SCIM document handed to [`crate::RemoteUser::from_scim`] directly
    /// (not through the client, which reports `InvalidResponse` instead).
    #[error("invalid SCIM resource: {0}")]
    InvalidResource(String),
    /// The client was asked for something it cannot do; no request was sent.
    #[error("SCIM client configuration: {0}")]
    Config(String),
}

fn fmt_scim_type(scim_type: &Option<String>) -> String {
    match scim_type {
        Some(t) => format!(" ({t})"),
        None => String::new(),
    }
}

impl ScimError {
    /// Whether trying the same call again may succeed: server errors, rate
    /// limiting, request timeouts and transport failures. A 4xx other than
    /// 408/429 says the request itself is wrong, and 501 says the server
    /// lacks the feature, so repeating those is pointless. That includes 412:
    /// see [`ScimError::is_precondition_failed`].
    pub fn is_retryable(&self) -> bool {
        match self {
            ScimError::Http { status, .. } => {
                (*status >= 500 && *status != 501) || *status == 429 || *status == 408
            }
            ScimError::Transport { .. } => true,
            _ => false,
        }
    }

    /// The delay the server asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ScimError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The audit record of the failed call; `None` when no call was made.
    pub fn record(&self) -> Option<&CallRecord> {
        match self {
            ScimError::Http { record, .. }
            | ScimError::Transport { record, .. }
            | ScimError::InvalidResponse { record, .. }
            | ScimError::Ambiguous { record, .. } => Some(record),
            ScimError::InvalidResource(_) | ScimError::Config(_) => None,
        }
    }

    /// The HTTP status of an `Http` error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The RFC 7644 `scimType` of an `Http` error, e.g. `uniqueness`.
    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Http { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// A conditional write (`If-Match`) lost: the account changed on the
    /// server since it was read (HTTP 412, RFC 7644 §3.14). Repeating the
    /// same request fails the same way, so [`ScimError::is_retryable`] is
    /// false; the remedy is to read the account again, diff again and send
    /// the new plan with the new version.
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(412)
    }

    /// For [`crate::ScimClient::service_provider_config`]: the server has no
    /// discovery endpoint (404 or 501), so the caller should fall back to
    /// configured or default capabilities instead of failing.
    pub fn is_discovery_unsupported(&self) -> bool {
        matches!(self.status(), Some(404 | 501))
    }
}
