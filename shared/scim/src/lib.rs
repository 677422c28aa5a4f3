//! SCIM 2.0 (RFC 7643/7644) provisioning for Tenure: the desired and remote
//! user models, the pure reconciliation `diff`, an HTTP client per app,
//! retry with backoff, and per-app [`Profile`]s for what apps do beyond (or
//! short of) the RFC.

// ScimError carries the CallRecord inline so failed calls can be audited by
// plain field access; its size is irrelevant next to an HTTP round trip.
#![allow(clippy::result_large_err)]

pub mod bulk;
pub mod client;
pub mod diff;
pub mod discovery;
pub mod error;
pub mod group;
pub mod learned;
pub mod pause;
pub mod profile;
pub mod retry;
pub mod shape;
pub mod user;

pub use bulk::{BulkCall, BulkItem, BulkLimits};
pub use client::{
    group_if_match, if_match, planned_request, Auth, Call, Page, ScimClient, MAX_LIST_PAGES,
};
pub use diff::{apply_patch, diff, diff_with, Capabilities, Desired, Op, PatchOp};
pub use discovery::{CapabilityCache, DiscoveredCaps, ProviderConfig};
pub use error::{CallRecord, ScimError};
pub use group::{
    apply_group_op, diff_group, diff_group_delete, diff_group_with, learn_member_key,
    normalise_members, repeat_verdict, GroupChange, GroupOp, GroupSpec, MemberDirectory,
    RemoteGroup, RemoteMember, RepeatVerdict,
};
pub use learned::{Learned, Lesson, MemberKey, Paging, RemoveForm};
pub use profile::{builtin, Deprovision, Profile};
pub use retry::{with_retry, RetryPolicy};
pub use shape::{Shape, ShapeOverride};
pub use user::{RemoteUser, UserSpec};
