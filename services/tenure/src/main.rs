//! `tenure`: migrations, the services (one, several or all in one process),
//! and operator commands over the event store and the quarantine.

mod api_token;
mod audit;
mod import;
mod quarantine;
mod replay;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use sha2::Digest;
use std::path::PathBuf;
use std::time::Duration;
use tenure_bus::Bus;
use tenure_config::Config;
use tenure_store::sqlx::{self, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "tenure",
    version,
    about = "HR-driven identity lifecycle and SCIM 2.0 provisioning"
)]
struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply.
    #[arg(long, short, env = "TENURE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Overrides database.url.
    #[arg(long, env = "TENURE_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Overrides nats.url.
    #[arg(long, env = "TENURE_NATS_URL", global = true)]
    nats_url: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Service {
    Ingest,
    Engine,
    Fanout,
    Api,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Run the given services in this process until SIGINT/SIGTERM.
    Run {
        #[arg(required = true, value_enum)]
        services: Vec<Service>,
    },
    /// Migrate, then run every service in this process (small installs).
    Up,
    /// Sign and send HR record files to the generic webhook.
    Send {
        /// JSON files, each one record or an array of records.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Ingest base URL (default: from the config's ingest.listen).
        #[arg(long)]
        url: Option<String>,
    },
    /// List persons (newest first), or show one (`persons show`).
    Persons {
        #[command(subcommand)]
        command: Option<PersonsCmd>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// IdP identities as the engine last applied them, and the HR person
    /// each is linked to.
    Identities {
        /// Only this `[[idp]]`.
        #[arg(long)]
        idp: Option<String>,
        /// Only identities no HR person correlates with.
        #[arg(long)]
        unlinked: bool,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// List accounts per app as Tenure last saw them.
    Accounts {
        #[arg(long)]
        app: Option<String>,
    },
    /// Print the SCIM operations a reconcile of an app would send, sending
    /// nothing that changes it.
    Plan {
        #[arg(long)]
        app: String,
        /// Look accounts up in the app (reads only) instead of using
        /// Tenure's last known state.
        #[arg(long)]
        live: bool,
    },
    /// Bring an app's groups in line with its `[[app.group]]` definitions
    /// now; lists groups set aside as not converging.
    Groups {
        #[arg(long)]
        app: String,
        /// Let these groups set aside as not converging be synced again
        /// (their names as `tenure groups` lists them).
        #[arg(long = "redrive", value_name = "GROUP")]
        redrive: Vec<String>,
        /// Let every group of the app set aside as not converging be
        /// synced again.
        #[arg(long, conflicts_with = "redrive")]
        redrive_all: bool,
    },
    /// List an app's accounts and report those Tenure does not manage.
    Drift {
        #[arg(long)]
        app: String,
        /// Also deactivate them (whatever the app's `unmanaged` policy says).
        #[arg(long)]
        deactivate: bool,
    },
    /// Ask the fanout to reconcile every known person in one app (or all
    /// apps), e.g. after adding an app or changing its scope.
    Reconcile {
        #[arg(long)]
        app: Option<String>,
    },
    /// A person's audit timeline (by id, work e-mail or source person id).
    Timeline {
        person: String,
        #[arg(long)]
        json: bool,
    },
    /// Deprovisioning held back by the mass-change guard.
    Staged {
        #[arg(long)]
        app: Option<String>,
    },
    /// Release deprovisioning held by the mass-change guard.
    Approve {
        #[arg(long)]
        app: String,
        /// Persons (id, work e-mail or source person id) to release.
        persons: Vec<String>,
        /// Release everything held for the app.
        #[arg(long, conflicts_with = "persons")]
        all: bool,
    },
    /// Jobs that could not succeed, kept for operators.
    Dlq {
        #[command(subcommand)]
        command: DlqCmd,
    },
    /// Durable schedules: future transitions the engine will fire.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCmd,
    },
    /// Audit commands.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Helpers for the operator API (`token-hash`).
    Api {
        #[command(subcommand)]
        command: api_token::ApiCmd,
    },
    /// Rejected payloads kept by ingest.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCmd,
    },
    /// Bulk imports.
    Import {
        #[command(subcommand)]
        command: ImportCmd,
    },
    /// Rebuild from history (`replay app`: a downstream app).
    Replay {
        #[command(subcommand)]
        command: replay::ReplayCmd,
    },
}

#[derive(Subcommand)]
enum PersonsCmd {
    /// One person (by id, work e-mail or source person id): lifecycle,
    /// attributes and entitlements, now or as they stood at `--as-of`.
    Show {
        person: String,
        /// An instant (RFC 3339): the person as the events recorded up to
        /// then make them, whatever the projections say today.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Import a CSV file (one person per row) through a configured source's
    /// mapping: validate every row, report the changes, then publish.
    Csv {
        file: PathBuf,
        /// The `[[source]]` whose mapping names the file's columns.
        #[arg(long)]
        source: String,
        /// Report what would change; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// When the rows' facts hold (RFC 3339); default: now.
        #[arg(long)]
        effective_at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Dead letters of both kinds, oldest first: `job` (a fanout job for
    /// one app and person) and `message` (any other message a consumer or
    /// relay could not process), with number, origin, deliveries and error.
    List {
        /// Job dead letters of this app only.
        #[arg(long, conflicts_with = "consumer")]
        app: Option<String>,
        /// Dead messages of this consumer only (e.g. `engine`, `tenure-fetch`).
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter in full, as JSON.
    Show { sequence: u64 },
    /// Put jobs back on their app's queue, and messages back on their
    /// original subject (after fixing the cause).
    Redrive {
        /// Numbers from `dlq list`.
        sequences: Vec<u64>,
        /// Every dead letter (of `--app` or `--consumer`, when given).
        #[arg(long, conflicts_with = "sequences")]
        all: bool,
        #[arg(long, conflicts_with = "consumer")]
        app: Option<String>,
        #[arg(long)]
        consumer: Option<String>,
    },
}

#[derive(Subcommand)]
enum ScheduleCmd {
    /// Pending transitions, soonest first: person, what, due in UTC and local time.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Re-walk every stream's hash chain; exit 1 when anything was altered.
    Verify,
    #[command(flatten)]
    Query(audit::AuditQueryCmd),
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::parse("", "defaults")?,
    };
    if let Some(u) = &cli.database_url {
        cfg.database.url = u.clone();
    }
    if let Some(u) = &cli.nats_url {
        cfg.nats.url = u.clone();
    }
    Ok(cfg)
}

/// A command's output piped into `head` must end the command when `head`
/// stops reading, as for any Unix tool, not panic in `println!` on EPIPE.
/// Rust ignores SIGPIPE by default; restoring the default action makes a
/// write to a closed pipe end the process silently. Sockets are unaffected
/// (Rust writes to them with MSG_NOSIGNAL), and the long-running services
/// keep ignoring SIGPIPE so a closed log pipe cannot kill them.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to its default is async-signal-
    // safe and touches no memory of this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The services need a descriptor per connection on each listener
/// (`max_connections`), plus database and NATS connections. The default
/// soft limit (often 1,024) is below that, and running out makes `accept`
/// fail on every listener at once; the hard limit is usually far higher,
/// so raise the soft one to it (as Go's runtime does) and say when even
/// that is too low.
fn raise_open_file_limit(cfg: &Config) {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `lim`, a valid
        // local struct.
        let soft = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            lim.rlim_cur
        };
        let needed = (cfg.ingest.max_connections + cfg.api.max_connections + 256) as u64;
        if soft < needed {
            tracing::warn!(
                open_file_limit = soft,
                needed,
                "the open-file limit is below ingest.max_connections + api.max_connections + 256; raise LimitNOFILE (deploy/systemd) or lower the limits"
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tenure_config::telemetry::init();
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    if matches!(cli.command, Cmd::Run { .. } | Cmd::Up) {
        raise_open_file_limit(&cfg);
    } else {
        die_quietly_on_closed_pipe();
    }
    match &cli.command {
        Cmd::Migrate => migrate(&cfg).await,
        Cmd::Run { services } => run(&cfg, services).await,
        Cmd::Up => {
            migrate(&cfg).await?;
            run(
                &cfg,
                &[
                    Service::Ingest,
                    Service::Engine,
                    Service::Fanout,
                    Service::Api,
                ],
            )
            .await
        }
        Cmd::Send { files, url } => send(&cfg, files, url.as_deref()).await,
        Cmd::Persons {
            command:
                Some(PersonsCmd::Show {
                    person,
                    as_of,
                    json,
                }),
            ..
        } => show_person(&cfg, person, *as_of, *json).await,
        Cmd::Replay { command } => {
            let pool = service_pool(&cfg, 4).await?;
            replay::run(&cfg, pool, command).await
        }
        Cmd::Persons {
            command: None,
            limit,
        } => {
            let pool = service_pool(&cfg, 2).await?;
            for p in tenure_api::queries::persons(&pool, *limit).await? {
                println!(
                    "{}  {:<10} {:<12} {:<28} {}",
                    p.person_id,
                    p.status,
                    p.source_person_id,
                    p.attributes["email"].as_str().unwrap_or(""),
                    p.attributes["department"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Cmd::Identities {
            idp,
            unlinked,
            limit,
            json,
        } => {
            let pool = service_pool(&cfg, 2).await?;
            let rows =
                tenure_api::queries::identities(&pool, idp.as_deref(), *unlinked, *limit).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            if rows.is_empty() {
                println!(
                    "no IdP identities{}",
                    if *unlinked { " without a person" } else { "" }
                );
            }
            for r in rows {
                let first = |v: &serde_json::Value| {
                    v.as_array()
                        .and_then(|a| a.first())
                        .and_then(|e| e.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                let groups: Vec<&str> = r
                    .groups
                    .as_array()
                    .map(|a| a.iter().filter_map(|g| g.as_str()).collect())
                    .unwrap_or_default();
                let link = match (r.person_id, &r.person_email) {
                    (Some(p), Some(e)) => format!("-> {p} {e}"),
                    (Some(p), None) => format!("-> {p}"),
                    (None, _) => "unlinked".to_string(),
                };
                let state = if r.deleted {
                    "deleted"
                } else if r.active == Some(false) {
                    "inactive"
                } else {
                    "active"
                };
                println!(
                    "{:<10} {:<24} {:<30} {:<8} {:<44} groups: {}",
                    r.provider,
                    r.user_name,
                    first(&r.emails),
                    state,
                    link,
                    if groups.is_empty() {
                        "-".to_string()
                    } else {
                        groups.join(", ")
                    }
                );
            }
            Ok(())
        }
        Cmd::Accounts { app } => {
            let pool = service_pool(&cfg, 2).await?;
            println!(
                "{:<12} {:<30} {:<8} {:<38} person",
                "app", "userName", "active", "remote id"
            );
            for a in tenure_api::queries::accounts(&pool, app.as_deref(), None).await? {
                println!(
                    "{:<12} {:<30} {:<8} {:<38} {}",
                    a.app,
                    a.user_name.unwrap_or_default(),
                    a.active.map_or("?".into(), |b| b.to_string()),
                    a.remote_id.unwrap_or_default(),
                    a.person_id
                );
            }
            Ok(())
        }
        Cmd::Dlq { command } => dlq(&cfg, command).await,
        Cmd::Staged { app } => {
            let pool = service_pool(&cfg, 2).await?;
            let rows = tenure_api::ops::staged(&pool, app.as_deref()).await?;
            if rows.is_empty() {
                println!("nothing is held by the mass-change guard");
            }
            for r in rows {
                println!(
                    "{:<12} {} {:<30} held {} — {}",
                    r.app,
                    r.person_id,
                    r.email,
                    r.staged_at.format("%Y-%m-%d %H:%M:%S"),
                    r.reason
                );
            }
            Ok(())
        }
        Cmd::Approve { app, persons, all } => approve(&cfg, app, persons, *all).await,
        Cmd::Schedule {
            command: ScheduleCmd::List { limit },
        } => {
            let pool = service_pool(&cfg, 2).await?;
            let rows = tenure_api::queries::schedules(&pool, *limit).await?;
            println!(
                "{:<36}  {:<28} {:<16} {:<8} {:<20} local",
                "person", "e-mail", "transition", "app", "due (UTC)"
            );
            for r in rows {
                println!(
                    "{:<36}  {:<28} {:<16} {:<8} {:<20} {}",
                    r.person_id,
                    r.email.unwrap_or_default(),
                    r.kind,
                    r.app.unwrap_or_else(|| "-".into()),
                    r.due_at.format("%Y-%m-%d %H:%M:%S"),
                    r.due_local
                );
            }
            Ok(())
        }
        Cmd::Plan { app, live } => plan(&cfg, app, *live).await,
        Cmd::Groups {
            app,
            redrive,
            redrive_all,
        } => {
            let app_cfg = cfg
                .app(app)
                .with_context(|| format!("no app named {app:?} in the configuration"))?;
            let pool = service_pool(&cfg, 4).await?;
            let worker = tenure_fanout::app_worker(app_cfg, &cfg.fanout, pool).await?;
            if *redrive_all || !redrive.is_empty() {
                let released = worker.redrive_groups(redrive).await?;
                for name in &released {
                    println!("{app}: group {name:?} redriven");
                }
                if let Some(name) = redrive.iter().find(|n| !released.contains(n)) {
                    bail!("group {name:?} is not set aside in {app}");
                }
            }
            let r = worker.sync_groups().await?;
            for g in &r.stuck {
                println!(
                    "{}: group {:?} ({}) set aside{}: {}; redrive with `tenure groups --app {} --redrive {:?}`",
                    r.app,
                    g.name,
                    g.remote_id,
                    g.since
                        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S")))
                        .unwrap_or_default(),
                    g.reason,
                    r.app,
                    g.name
                );
            }
            for name in &r.protected {
                println!(
                    "{}: group {name:?} is protected by the app's profile; Tenure never changes it",
                    r.app
                );
            }
            for l in &r.learned {
                println!("{}: learned {} = {}: {}", r.app, l.what, l.value, l.reason);
            }
            if let Some(why) = &r.skipped {
                println!("{}: groups not synced: {why}", r.app);
            }
            for name in &r.missing {
                println!("{}: group {name:?} must be created in the app first; its members are kept once it exists", r.app);
            }
            for e in &r.errors {
                eprintln!("error: {e}");
            }
            println!(
                "{}: {} groups wanted, {} created, {} updated, {} deleted",
                r.app, r.groups, r.created, r.updated, r.deleted
            );
            if !r.errors.is_empty() {
                bail!("{} group operation(s) failed", r.errors.len());
            }
            Ok(())
        }
        Cmd::Drift { app, deactivate } => {
            let app_cfg = cfg
                .app(app)
                .with_context(|| format!("no app named {app:?} in the configuration"))?;
            let pool = service_pool(&cfg, 4).await?;
            let worker = tenure_fanout::app_worker(app_cfg, &cfg.fanout, pool).await?;
            let report = worker.sweep(*deactivate).await?;
            for a in worker.adopted_accounts().await? {
                println!(
                    "adopted    {:<36} {:<30} at {} (policy {}, externalId before: {:?})",
                    a.remote_id,
                    a.user_name,
                    a.adopted_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    a.policy,
                    a.previous_external_id.unwrap_or_default()
                );
            }
            for l in &report.learned {
                println!(
                    "{}: learned {} = {}: {}",
                    report.app, l.what, l.value, l.reason
                );
            }
            let learned = worker.client.learned();
            if learned.paging == tenure_scim::Paging::StartIndexOnly {
                println!("{}: the server fails when `count` is sent; lists are paged with startIndex only, at the server's page size", report.app);
            }
            if learned.filter_ignored {
                println!(
                    "{}: the server ignores `filter`; look-ups scan the whole list and match here",
                    report.app
                );
            }
            for u in &report.unmanaged {
                println!(
                    "unmanaged  {:<36} {:<30} active={}",
                    u.id, u.user_name, u.active
                );
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            println!(
                "{}: {} accounts listed, {} managed by Tenure, {} unmanaged, {} deactivated",
                report.app,
                report.listed,
                report.managed,
                report.unmanaged.len(),
                report.deactivated
            );
            if !report.errors.is_empty() {
                bail!(
                    "{} account(s) could not be deactivated",
                    report.errors.len()
                );
            }
            Ok(())
        }
        Cmd::Reconcile { app } => reconcile(&cfg, app.as_deref()).await,
        Cmd::Timeline { person, json } => {
            let pool = service_pool(&cfg, 2).await?;
            let p = tenure_api::queries::find_person(&pool, person)
                .await?
                .with_context(|| format!("no person matches {person:?}"))?;
            let events = tenure_api::queries::timeline(&pool, p.person_id).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                println!(
                    "timeline of {} ({}), {} events",
                    p.person_id,
                    p.attributes["email"].as_str().unwrap_or(""),
                    events.len()
                );
                for e in &events {
                    println!("{}", tenure_api::queries::timeline_line(e));
                }
            }
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::Verify,
        } => {
            let pool = service_pool(&cfg, 2).await?;
            let report = tenure_store::verify(&pool).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.is_ok() {
                bail!(
                    "hash chain verification found {} problem(s)",
                    report.problems.len()
                );
            }
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::Query(command),
        } => audit::run(&cfg, command).await,
        Cmd::Api { command } => api_token::run(command),
        Cmd::Quarantine { command } => quarantine::run(&cfg, command).await,
        Cmd::Import {
            command:
                ImportCmd::Csv {
                    file,
                    source,
                    dry_run,
                    effective_at,
                },
        } => {
            import::import_csv(
                &cfg,
                import::ImportCsv {
                    file,
                    source,
                    dry_run: *dry_run,
                    effective_at: *effective_at,
                },
            )
            .await
        }
    }
}

/// How the audit trail names an operator action run from the command
/// line: the login that ran it.
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

async fn service_pool(cfg: &Config, size: u32) -> anyhow::Result<PgPool> {
    tenure_store::connect(&cfg.database.url, cfg.database.role.as_deref(), size)
        .await
        .with_context(|| {
            "cannot connect to PostgreSQL (is database.url right? did `tenure migrate` run?)"
        })
}

async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    create_database_if_missing(&cfg.database.url).await?;
    let pool = tenure_store::connect(&cfg.database.url, None, 2).await?;
    tenure_store::migrate(&pool).await?;
    // Closed now, so `tenure up` holds only its service pool afterwards.
    pool.close().await;
    info!("migrations applied");
    Ok(())
}

/// The fewest connections `services` can work with in one process: the
/// engine keeps two for notifications (outbox, schedules) and needs one to
/// work; every fanout job holds one for its lease and the pool keeps
/// `tenure_fanout::POOL_HEADROOM` for everything else.
fn minimum_pool(services: &[Service]) -> u32 {
    let engine = if services.contains(&Service::Engine) {
        3
    } else {
        0
    };
    let fanout = if services.contains(&Service::Fanout) {
        tenure_fanout::POOL_HEADROOM + 1
    } else {
        0
    };
    let others = services
        .iter()
        .filter(|s| matches!(s, Service::Ingest | Service::Api))
        .count() as u32;
    (engine + others).max(fanout).max(2)
}

/// The process's one connection pool, sized by `[database]
/// max_connections`, after checking that the size suits the services and
/// that PostgreSQL has room for it.
async fn process_pool(cfg: &Config, services: &[Service]) -> anyhow::Result<PgPool> {
    let budget = cfg.database.max_connections;
    let minimum = minimum_pool(services);
    if budget < minimum {
        bail!(
            "[database] max_connections = {budget} is too small for {services:?} in one process: \
             at least {minimum} are needed (the engine keeps 2 connections for notifications, \
             each fanout job holds one while it runs and {} are kept for everything else)",
            tenure_fanout::POOL_HEADROOM
        );
    }
    let pool = service_pool(cfg, budget).await?;
    let server = tenure_store::ensure_room(&pool).await?;
    info!(
        pool = budget,
        server_max = server.max,
        in_use = server.in_use,
        "database connection budget"
    );
    Ok(pool)
}

async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let Some((base, name)) = url.rsplit_once('/') else {
        return Ok(());
    };
    let name = name.split('?').next().unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    let admin = format!("{base}/postgres");
    let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await else {
        // No access to the maintenance database: the operator created ours.
        return Ok(());
    };
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        info!(database = name, "database created");
    }
    Ok(())
}

async fn run(cfg: &Config, services: &[Service]) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // The api uses the bus for operator actions (redrive, approve).
    let needs_bus = !services.is_empty();
    let bus = if needs_bus {
        Some(
            Bus::connect(
                &cfg.nats.url,
                Duration::from_secs(cfg.nats.duplicate_window_secs),
            )
            .await?,
        )
    } else {
        None
    };
    // One pool for every service of the process, so the process opens at
    // most `[database] max_connections` connections however many apps,
    // workers and services it runs.
    let pool = process_pool(cfg, services).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for service in services {
        let cfg = cfg.clone();
        let bus = bus.clone();
        let token = shutdown.clone();
        let pool = pool.clone();
        match service {
            Service::Ingest => {
                let bus = bus.context("bus")?;
                // The inbound SCIM endpoint keeps the IdP's users and groups,
                // and an HRIS deletion needs the person's last record.
                let pool = Some(pool);
                tasks.spawn(async move {
                    tenure_ingest::run(&cfg, bus, pool, token)
                        .await
                        .context("ingest")
                });
            }
            Service::Engine => {
                let bus = bus.context("bus")?;
                tasks.spawn(async move {
                    tenure_engine::run(&cfg, pool, bus, token, tenure_engine::Clock::system())
                        .await
                        .context("engine")
                });
            }
            Service::Fanout => {
                let bus = bus.context("bus")?;
                // Jobs in flight are bounded by the pool (see
                // `tenure_fanout::job_slots`), not the other way round.
                tasks.spawn(async move {
                    tenure_fanout::run(&cfg, pool, bus, token)
                        .await
                        .context("fanout")
                });
            }
            Service::Api => {
                tasks.spawn(
                    async move { tenure_api::run(&cfg, pool, bus, token).await.context("api") },
                );
            }
        }
    }
    info!(?services, "tenure running");
    let signals = async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        anyhow::Ok(())
    };
    let mut failure = None;
    tokio::select! {
        r = signals => { r?; info!("shutting down"); }
        Some(done) = tasks.join_next() => {
            // A service that stops on its own is a failure of the whole process.
            failure = Some(match done {
                Ok(Ok(())) => anyhow::anyhow!("a service stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a service panicked: {e}"),
            });
        }
    }
    shutdown.cancel();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(10), tasks.join_next())
        .await
        .ok()
        .flatten()
    {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "service ended with an error");
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn approve(cfg: &Config, app: &str, persons: &[String], all: bool) -> anyhow::Result<()> {
    cfg.app(app)
        .with_context(|| format!("no app named {app:?} in the configuration"))?;
    if !all && persons.is_empty() {
        bail!("name persons to approve, or pass --all");
    }
    let pool = service_pool(cfg, 2).await?;
    let mut wanted = Vec::new();
    for key in persons {
        let p = tenure_api::queries::find_person(&pool, key)
            .await?
            .with_context(|| format!("no person matches {key:?}"))?;
        wanted.push(p.person_id);
    }
    let bus = Bus::connect(
        &cfg.nats.url,
        Duration::from_secs(cfg.nats.duplicate_window_secs),
    )
    .await?;
    let only = (!all).then_some(wanted.as_slice());
    let released =
        tenure_api::ops::approve(&pool, &bus, app, only, cfg.engine.partitions, &cli_actor())
            .await?;
    println!("{released} held change(s) released for {app}");
    Ok(())
}

/// `tenure persons show`: the person folded from their events up to
/// `as_of` (default: now), never from the projections.
async fn show_person(
    cfg: &Config,
    key: &str,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> anyhow::Result<()> {
    let pool = service_pool(cfg, 2).await?;
    let at = as_of.unwrap_or_else(chrono::Utc::now);
    let person_id = match key.parse::<uuid::Uuid>() {
        Ok(id) => id,
        Err(_) => {
            tenure_api::queries::find_person(&pool, key)
                .await?
                .with_context(|| format!("no person matches {key:?}"))?
                .person_id
        }
    };
    let p = tenure_api::as_of::person_as_of(&pool, person_id, at)
        .await?
        .with_context(|| format!("nothing recorded about {key:?} up to {}", at.to_rfc3339()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    println!("person     {}", p.person_id);
    println!(
        "as of      {} ({} events folded)",
        p.as_of.to_rfc3339(),
        p.events
    );
    println!("lifecycle  {}", p.lifecycle.as_deref().unwrap_or("-"));
    if let Some(s) = p.start_at {
        println!("start      {}", s.to_rfc3339());
    }
    if let Some(t) = p.pending_termination {
        println!("terminates {}", t.to_rfc3339());
    }
    if let Some(attrs) = p.attributes.as_object() {
        for (k, v) in attrs.iter().filter(|(_, v)| !v.is_null()) {
            println!(
                "  {k:<18} {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            );
        }
    }
    for (app, e) in &p.entitlements {
        println!("entitled   {app:<18} {e}");
    }
    if p.undecodable > 0 {
        println!(
            "warning: {} event(s) could not be read and were left out",
            p.undecodable
        );
    }
    Ok(())
}

async fn plan(cfg: &Config, app: &str, live: bool) -> anyhow::Result<()> {
    let app_cfg = cfg
        .app(app)
        .with_context(|| format!("no app named {app:?} in the configuration"))?;
    let pool = service_pool(cfg, 4).await?;
    let worker = if live {
        tenure_fanout::app_worker(app_cfg, &cfg.fanout, pool.clone()).await?
    } else {
        tenure_fanout::offline_worker(app_cfg, &cfg.fanout, pool.clone())?
    };
    let persons: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT person_id FROM persons ORDER BY attributes->>'email'")
            .fetch_all(&pool)
            .await?;
    let (mut creates, mut updates, mut deletes, mut in_sync, mut refused) = (0, 0, 0, 0, 0);
    for person in persons {
        let Some(p) = worker.plan(person, live).await? else {
            continue;
        };
        let head = format!(
            "{:<30} {:<16} (found: {:<10})",
            p.user_name,
            p.entitlement.as_str(),
            p.found_by
        );
        match &p.decision {
            tenure_fanout::decide::Decision::Refuse(reason) => {
                refused += 1;
                println!("{head} REFUSED: {reason}");
                continue;
            }
            tenure_fanout::decide::Decision::Proceed { link, .. } => match link {
                tenure_fanout::decide::Link::Linked => println!("{head} link the account"),
                tenure_fanout::decide::Link::Adopted => println!(
                    "{head} ADOPT the existing account (adopt = {:?})",
                    app_cfg.adopt.as_str()
                ),
                tenure_fanout::decide::Link::Known => {}
            },
        }
        if p.ops.is_empty() {
            in_sync += 1;
            continue;
        }
        for op in &p.ops {
            match op {
                tenure_scim::Op::Create(_) => creates += 1,
                tenure_scim::Op::Patch { .. } | tenure_scim::Op::Replace { .. } => updates += 1,
                tenure_scim::Op::Delete { .. } => deletes += 1,
            }
            // The exact request the reconcile would send, body included.
            let (method, path, body) = tenure_scim::planned_request(op, &worker.profile);
            println!("{head} {method} {path}");
            if let Some(body) = body {
                let text = serde_json::to_string_pretty(&body).unwrap_or_default();
                for line in text.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    if refused > 0 {
        println!(
            "{refused} person(s) would be refused (see REFUSED above); nothing is sent for them"
        );
    }
    println!("plan for {app}: {creates} to create, {updates} to update, {deletes} to delete, {in_sync} in sync; no change was sent");
    Ok(())
}

async fn dlq(cfg: &Config, command: &DlqCmd) -> anyhow::Result<()> {
    use tenure_bus::dlq::{DeadEntry, DeadFilter, Redriven};
    let bus = Bus::connect(
        &cfg.nats.url,
        Duration::from_secs(cfg.nats.duplicate_window_secs),
    )
    .await?;
    match command {
        DlqCmd::List {
            app,
            consumer,
            limit,
        } => {
            let filter = DeadFilter {
                app: app.clone(),
                consumer: consumer.clone(),
            };
            let entries = bus.list_dead(&filter, *limit).await?;
            if entries.is_empty() {
                println!("the dead-letter queue is empty");
            }
            for e in entries {
                match e {
                    DeadEntry::Job(e) => println!(
                        "#{:<5} {} job     {:<8} {}  {:<9} after {} deliveries: {}",
                        e.sequence,
                        e.letter.dead_at.format("%Y-%m-%d %H:%M:%S"),
                        e.letter.job.app,
                        e.letter.job.person_id,
                        e.letter.reason,
                        e.letter.deliveries,
                        e.letter.error
                    ),
                    DeadEntry::Message(e) => println!(
                        "#{:<5} {} message {:<8} {} {}  after {} deliveries: {}",
                        e.sequence,
                        e.message.dead_at.format("%Y-%m-%d %H:%M:%S"),
                        e.message.consumer,
                        e.message.subject,
                        match (&e.message.stream, e.message.stream_sequence) {
                            (Some(s), Some(n)) =>
                                format!("({s} #{n}, {} bytes)", e.message.payload_bytes),
                            _ =>
                                format!("({}, {} bytes)", e.message.origin, e.message.payload_bytes),
                        },
                        e.message.deliveries,
                        e.message.error
                    ),
                }
            }
        }
        DlqCmd::Show { sequence } => {
            let entry = bus
                .dead_entry(*sequence)
                .await?
                .with_context(|| format!("no dead letter #{sequence}"))?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
        }
        DlqCmd::Redrive {
            sequences,
            all,
            app,
            consumer,
        } => {
            let targets: Vec<u64> = if *all {
                let filter = DeadFilter {
                    app: app.clone(),
                    consumer: consumer.clone(),
                };
                bus.list_dead(&filter, usize::MAX)
                    .await?
                    .iter()
                    .map(DeadEntry::sequence)
                    .collect()
            } else if sequences.is_empty() {
                bail!("name dead letters to redrive, or pass --all");
            } else {
                sequences.clone()
            };
            let mut missing = 0;
            let mut failed = 0;
            // A redriven job needs its open dead letter closed in the database.
            let pool = service_pool(cfg, 2).await?;
            for seq in &targets {
                match tenure_api::ops::redrive(
                    &pool,
                    &bus,
                    *seq,
                    cfg.engine.partitions,
                    &cli_actor(),
                )
                .await
                {
                    Ok(Some(Redriven::Job { job })) => {
                        println!("#{seq} redriven: job {} {}", job.app, job.person_id)
                    }
                    Ok(Some(Redriven::Message { consumer, subject })) => {
                        println!("#{seq} redriven: message for {consumer} on {subject}")
                    }
                    Ok(None) => {
                        missing += 1;
                        eprintln!("#{seq}: no such dead letter");
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("#{seq}: not redriven: {e}");
                    }
                }
            }
            if missing + failed > 0 {
                bail!("{missing} dead letter(s) not found, {failed} not redriven");
            }
        }
    }
    Ok(())
}

async fn reconcile(cfg: &Config, app: Option<&str>) -> anyhow::Result<()> {
    let apps: Vec<&str> = match app {
        Some(name) => {
            cfg.app(name)
                .with_context(|| format!("no app named {name:?} in the configuration"))?;
            vec![name]
        }
        None => cfg.apps.iter().map(|a| a.name.as_str()).collect(),
    };
    let pool = service_pool(cfg, 2).await?;
    let bus = Bus::connect(
        &cfg.nats.url,
        Duration::from_secs(cfg.nats.duplicate_window_secs),
    )
    .await?;
    // Decide everyone again under the current configuration (a new app or
    // rule takes effect here); the engine's relay delivers what changed.
    let engine = tenure_engine::Engine::from_config(cfg)?;
    let mut tx = pool.begin().await?;
    let changed =
        tenure_engine::scheduler::reevaluate(&mut tx, &engine, chrono::Utc::now()).await?;
    tx.commit().await?;
    println!("re-evaluated: {changed} person(s) changed under the current configuration");
    let run = uuid::Uuid::new_v4();
    let mut batch = Vec::new();
    for app in &apps {
        // Persons whose job is dead-lettered in the app wait for a redrive.
        let persons: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT e.person_id FROM entitlements e
             WHERE e.app = $1 AND NOT EXISTS (
                 SELECT 1 FROM open_dead_letters d WHERE d.app = e.app AND d.person_id = e.person_id)
             ORDER BY e.person_id",
        )
        .bind(app)
        .fetch_all(&pool)
        .await?;
        let dead = tenure_store::dead_letters::open_dead_letters(&pool, Some(app)).await?;
        if !dead.is_empty() {
            println!(
                "{app}: {} person(s) with a dead-lettered job left out; `tenure dlq list --app {app}` shows them, `tenure dlq redrive` retries them",
                dead.len()
            );
        }
        for person_id in &persons {
            let job = tenure_bus::Job {
                app: app.to_string(),
                person_id: *person_id,
                correlation_id: run,
                causation_id: None,
                approved: false,
            };
            batch.push((
                tenure_bus::subjects::jobs(app, job.partition(cfg.engine.partitions)),
                format!("reconcile:{run}:{app}:{person_id}"),
                bytes::Bytes::from(serde_json::to_vec(&job)?),
            ));
        }
    }
    let mut failed = 0;
    for chunk in batch.chunks(512) {
        failed += bus
            .publish_many(chunk.to_vec())
            .await
            .iter()
            .filter(|r| r.is_err())
            .count();
    }
    println!(
        "reconcile {run}: {} jobs queued for {} app(s), {failed} failed",
        batch.len() - failed,
        apps.len()
    );
    if failed > 0 {
        bail!("{failed} jobs could not be queued; run the command again");
    }
    Ok(())
}

async fn send(cfg: &Config, files: &[PathBuf], url: Option<&str>) -> anyhow::Result<()> {
    let secret = cfg.ingest.generic.secret.resolve()?;
    let base = url
        .map(str::to_string)
        .unwrap_or_else(|| format!("http://{}", cfg.ingest.listen));
    let endpoint = format!("{}/v1/sources/generic/records", base.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let records = match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        for record in records {
            let body = serde_json::to_vec(&record)?;
            // Same content, same delivery id: re-sending a file is a no-op.
            let delivery = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
            let ts = chrono::Utc::now().timestamp();
            let resp = http
                .post(&endpoint)
                .header("content-type", "application/json")
                .header("x-tenure-delivery", &delivery)
                .header("x-tenure-timestamp", ts.to_string())
                .header(
                    "x-tenure-signature",
                    tenure_sources::signature::sign_generic_v2(
                        secret.expose().as_bytes(),
                        ts,
                        &delivery,
                        &body,
                    ),
                )
                .body(body)
                .send()
                .await
                .with_context(|| format!("cannot reach {endpoint}"))?;
            let status = resp.status();
            let answer = resp.text().await.unwrap_or_default();
            println!(
                "{} {} -> {} {}",
                file.display(),
                record["person_id"].as_str().unwrap_or("?"),
                status.as_u16(),
                answer
            );
            if !status.is_success() {
                bail!("ingest refused a record from {}", file.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_pool_fits_what_the_services_hold() {
        let all = [
            Service::Ingest,
            Service::Engine,
            Service::Fanout,
            Service::Api,
        ];
        // Fanout: one job plus the headroom; the engine's two listeners
        // and one worker fit in that headroom.
        assert_eq!(minimum_pool(&all), tenure_fanout::POOL_HEADROOM + 1);
        assert_eq!(minimum_pool(&[Service::Engine]), 3);
        assert_eq!(minimum_pool(&[Service::Api]), 2);
        assert_eq!(minimum_pool(&[Service::Ingest, Service::Api]), 2);
    }
}
