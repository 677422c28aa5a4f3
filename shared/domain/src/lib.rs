//! The pure core of Tenure: HR records, the person lifecycle, timing rules
//! and what each app should hold for a person. Nothing in here does I/O, so
//! every decision can be tested (and property-tested) without a database or
//! a broker.

pub mod entitlement;
pub mod identity;
pub mod person;
pub mod record;
pub mod timing;

pub use entitlement::{
    AppPolicy, Entitlement, LeavePolicy, PurgeAction, ScopeFilter, TerminationPolicy,
};
pub use identity::{Correlation, IdpIdentity};
pub use person::{
    decide, evolve, wakeups, Command, Context, Lifecycle, LinkedIdentity, Person, PersonEvent,
    Policy, View, Wakeup,
};
pub use record::{Attributes, EmploymentStatus, RecordError, SourceRecord};
