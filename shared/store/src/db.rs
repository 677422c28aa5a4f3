use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

use crate::StoreError;

/// The SQL migrations in `/migrations`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Opens a connection pool.
///
/// With `role`, every new connection runs `SET ROLE <role>` before it is
/// handed out, so services run with the restricted `tenure_app` privileges
/// even when they log in as a more privileged user (which must be a member of
/// that role).
pub async fn connect(
    url: &str,
    role: Option<&str>,
    max_connections: u32,
) -> Result<PgPool, StoreError> {
    let mut options = PgPoolOptions::new().max_connections(max_connections);
    if let Some(role) = role {
        let statement = format!("SET ROLE {}", quote_identifier(role)?);
        options = options.after_connect(move |conn, _meta| {
            let statement = statement.clone();
            Box::pin(async move {
                conn.execute(statement.as_str()).await?;
                Ok(())
            })
        });
    }
    Ok(options.connect(url).await?)
}

/// Applies all pending migrations. Run this with an owner/superuser pool, not
/// one restricted to `tenure_app`.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Quotes `name` as a PostgreSQL identifier. `SET ROLE` takes no bind
/// parameters, so the name has to be spliced into the statement text.
fn quote_identifier(name: &str) -> Result<String, StoreError> {
    if name.is_empty() || name.contains('\0') {
        return Err(StoreError::InvalidRole(name.to_owned()));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("tenure_app").unwrap(), "\"tenure_app\"");
        assert_eq!(
            quote_identifier("a\"; DROP TABLE events; --").unwrap(),
            "\"a\"\"; DROP TABLE events; --\""
        );
        assert!(matches!(
            quote_identifier(""),
            Err(StoreError::InvalidRole(_))
        ));
        assert!(matches!(
            quote_identifier("a\0b"),
            Err(StoreError::InvalidRole(_))
        ));
    }
}
