//! HR sources as data: each adapter verifies its vendor's webhook signature,
//! answers setup handshakes, and turns webhook payloads and HRIS API answers
//! into `SourceRecord`s through a per-source field mapping. Pure: no I/O, so
//! the ingest service and the CSV import share one behaviour per source.
//!
//! | vendor | authenticates with | webhook gives |
//! |---|---|---|
//! | generic | `X-Tenure-Signature` HMAC-SHA256 over `v2:ts:delivery:body` (deprecated v1: `ts.body`), skew window | the record |
//! | BambooHR | `X-BambooHR-Signature` HMAC-SHA256 over `body ‖ ts`, skew window | field hooks: records; event hooks: fetch |
//! | HiBob | `Bob-Signature` base64 HMAC-SHA512 | fetch |
//! | Personio | shared secret (bearer or `X-Tenure-Token`) | fetch |
//! | Gusto | `X-Gusto-Signature` HMAC-SHA256 with the verification token | fetch |
//! | Deel | `x-deel-signature` HMAC-SHA256 over `"POST" ‖ body` | records (fetch when only an id) |
//! | Frappe HR | `X-Frappe-Webhook-Signature` base64 HMAC-SHA256 | records (fetch when fields are missing) |
//! | csv | — (files, not webhooks) | records per row |
//!
//! Each vendor module documents its payloads, events and API calls.

pub mod adapter;
pub mod bamboohr;
pub mod csv;
pub mod deel;
pub mod frappe;
pub mod generic;
pub mod gusto;
pub mod hibob;
pub mod mapping;
pub mod personio;
pub mod signature;

pub use adapter::{
    Adapter, AdapterError, ApiSettings, ErrorKind, FetchCall, FetchRequest, Kind, Outcome,
};
pub use csv::RowError;
pub use mapping::{FieldMapping, MappingError, ATTRIBUTES, STATUS_TARGETS};
