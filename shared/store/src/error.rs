use thiserror::Error;

/// Errors returned by the event store.
#[derive(Error, Debug)]
pub enum StoreError {
    /// Optimistic concurrency check failed: the stream is not at the version
    /// the caller based its decision on.
    ///
    /// Raised either before writing (the stream head did not match `expected`)
    /// or when a concurrent writer committed the same version first. In the
    /// latter case PostgreSQL has already aborted the caller's transaction and
    /// `actual` is a lower bound (the first version found taken). Either way
    /// the caller should roll back, reload and retry.
    #[error("version conflict on stream {stream}: expected {expected}, found {actual}")]
    Conflict {
        stream: String,
        expected: i64,
        actual: i64,
    },
    /// An event with one of the given event ids is already recorded. Event ids
    /// are globally unique, so this usually means the command was already
    /// processed.
    #[error("duplicate event id while appending to stream {stream}")]
    DuplicateEventId { stream: String },
    /// PostgreSQL has no room for the connections this process is
    /// configured to open.
    #[error("{0}")]
    ConnectionBudget(String),
    /// The role name cannot be used with `SET ROLE`.
    #[error("invalid role name {0:?}")]
    InvalidRole(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored event could not be turned into a [`crate::RecordedEvent`].
    #[error("cannot decode stored event: {0}")]
    Decode(String),
    /// An event could not be serialised for storage.
    #[error("cannot encode event: {0}")]
    Encode(String),
}
