//! Tenure's event store on PostgreSQL.
//!
//! Events are appended to per-stream, hash-chained sequences in one `events`
//! table that the database itself keeps append-only. Writers append inside
//! their own transaction ([`append()`]) so that projections and outbox rows
//! commit atomically with the events; readers either read one stream
//! ([`read_stream`]), follow the global order without skipping late commits
//! ([`read_all`]), or follow one person across streams ([`person_timeline`]).
//! [`verify()`] re-checks every hash chain.

pub mod append;
pub mod canonical;
pub mod chain;
pub mod db;
pub mod dead_letters;
pub mod error;
pub mod event;
pub mod periodic;
pub mod read;
pub mod verify;

pub use append::{append, stream_version};
pub use db::{connect, ensure_room, migrate, MIGRATOR};
pub use dead_letters::OpenDeadLetter;
pub use error::StoreError;
pub use event::{ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent};
pub use periodic::claim_periodic;
pub use read::{person_timeline, read_all, read_stream, read_stream_after};
pub use verify::{verify, ChainProblem, ChainProblemKind, VerifyReport};

/// Re-exported so dependants name the same sqlx types (pool, connection).
pub use sqlx;
