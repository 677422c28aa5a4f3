//! The pure core of Tenure: HR records, the person lifecycle and what each app
//! should hold for a person. Nothing in here does I/O, so every decision can be
//! tested (and property-tested) without a database or a broker.

pub mod entitlement;
pub mod person;
pub mod record;

pub use entitlement::{AppPolicy, Entitlement, ScopeFilter, TerminationPolicy};
pub use person::{decide, evolve, Command, Lifecycle, Person, PersonEvent};
pub use record::{Attributes, EmploymentStatus, RecordError, SourceRecord};
