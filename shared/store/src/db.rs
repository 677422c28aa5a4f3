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

/// What the PostgreSQL server allows and uses, read at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConnections {
    /// `max_connections`.
    pub max: u32,
    /// `superuser_reserved_connections`: slots a non-superuser cannot use.
    pub reserved: u32,
    /// Client connections open right now, ours included.
    pub in_use: u32,
    /// Whether we log in as a superuser (who may use the reserved slots).
    pub superuser: bool,
}

/// Whether a process that may open `budget` connections, `ours` of which
/// are already open, fits in what the server has left. The error says what
/// to change.
pub fn check_budget(server: ServerConnections, ours: u32, budget: u32) -> Result<(), String> {
    let usable = if server.superuser {
        server.max
    } else {
        server.max.saturating_sub(server.reserved)
    };
    let others = server.in_use.saturating_sub(ours);
    let room = usable.saturating_sub(others);
    if budget <= room {
        return Ok(());
    }
    Err(format!(
        "PostgreSQL has room for {room} more connection(s) (max_connections = {}, {} reserved for superusers, {others} in use by other clients), \
         but this process may open up to {budget} ([database] max_connections = {budget}). \
         Lower [database] max_connections in Tenure's configuration, or raise max_connections in postgresql.conf and restart PostgreSQL.",
        server.max,
        if server.superuser { 0 } else { server.reserved },
    ))
}

/// Reads what the server allows and uses, on one of `pool`'s connections.
pub async fn server_connections(pool: &PgPool) -> Result<ServerConnections, StoreError> {
    let (max, reserved, in_use, superuser): (i32, i32, i64, bool) = sqlx::query_as(
        "SELECT current_setting('max_connections')::int,
                current_setting('superuser_reserved_connections')::int,
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)",
    )
    .fetch_one(pool)
    .await?;
    Ok(ServerConnections {
        max: u32::try_from(max).unwrap_or(0),
        reserved: u32::try_from(reserved).unwrap_or(0),
        in_use: u32::try_from(in_use).unwrap_or(u32::MAX),
        superuser,
    })
}

/// Fails with a clear message when the server cannot take the `pool`'s
/// whole size on top of what other clients use now. Run once at start-up,
/// so a too-small server limit is found then, not under load.
pub async fn ensure_room(pool: &PgPool) -> Result<ServerConnections, StoreError> {
    let server = server_connections(pool).await?;
    let ours = pool.size();
    let budget = pool.options().get_max_connections();
    check_budget(server, ours, budget).map_err(StoreError::ConnectionBudget)?;
    Ok(server)
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

    fn server(max: u32, in_use: u32) -> ServerConnections {
        ServerConnections {
            max,
            reserved: 3,
            in_use,
            superuser: false,
        }
    }

    #[test]
    fn the_budget_fits_in_what_others_leave() {
        // One of ours is open (the check's own connection).
        assert!(check_budget(server(100, 1), 1, 97).is_ok());
        assert!(
            check_budget(server(100, 1), 1, 98).is_err(),
            "reserved slots"
        );
        assert!(check_budget(server(100, 41), 1, 57).is_ok());
        let e = check_budget(server(100, 41), 1, 58).expect_err("over");
        assert!(e.contains("room for 57"), "{e}");
        assert!(e.contains("[database] max_connections = 58"), "{e}");
        let su = ServerConnections {
            superuser: true,
            ..server(20, 1)
        };
        assert!(check_budget(su, 1, 20).is_ok());
        assert!(
            check_budget(server(10, 30), 0, 1).is_err(),
            "a full server has no room"
        );
    }

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
