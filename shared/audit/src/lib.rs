//! Compliance audit over Tenure's event store.
//!
//! Every answer here is computed from the `events` table only, never from
//! the projection tables (`persons`, `accounts`, …): an auditor's question
//! about the past must not depend on state that later writes overwrote.
//! The decisions are pure folds over events ([`access`], [`leavers`],
//! [`deprovision`], [`exceptions`]); [`read`] and [`search`] fetch the
//! events; [`export`] and [`checkpoint`] produce evidence that can be
//! checked without trusting the database.

pub mod access;
pub mod checkpoint;
pub mod deprovision;
pub mod error;
pub mod event_ref;
pub mod exceptions;
pub mod export;
pub mod leavers;
pub mod read;
pub mod render;
pub mod review;
pub mod search;
pub mod signing;
pub mod time;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::AuditError;
pub use event_ref::EventRef;
