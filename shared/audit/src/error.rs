use thiserror::Error;

#[derive(Error, Debug)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] tenure_store::StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A key, an instant or a duration given by the operator is unusable.
    #[error("{0}")]
    Invalid(String),
    /// An export file is not in the expected shape (not a tampering
    /// finding: those are reported as problems, see [`crate::export`]).
    #[error("{0}")]
    Format(String),
}
