//! SCIM 2.0 (RFC 7643/7644) provisioning for Tenure: the desired and remote
//! user models, the pure reconciliation `diff`, an HTTP client per app, and
//! retry with backoff.

// ScimError carries the CallRecord inline so failed calls can be audited by
// plain field access; its size is irrelevant next to an HTTP round trip.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod diff;
pub mod error;
pub mod retry;
pub mod user;

pub use client::{Auth, Call, ScimClient};
pub use diff::{apply_patch, diff, Capabilities, Desired, Op, PatchOp};
pub use error::{CallRecord, ScimError};
pub use retry::{with_retry, RetryPolicy};
pub use user::{RemoteUser, UserSpec};
