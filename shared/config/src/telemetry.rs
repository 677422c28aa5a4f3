use tracing_subscriber::EnvFilter;

/// Logs go to stderr; `TENURE_LOG` (or `RUST_LOG`) sets the filter and
/// `TENURE_LOG_FORMAT=json` switches to JSON lines for log shippers.
pub fn init() {
    let filter = std::env::var("TENURE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,async_nats=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let result = if std::env::var("TENURE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, `tenure up`) keeps the first subscriber.
    let _ = result;
}
