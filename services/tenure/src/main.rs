//! `tenure`: migrations, the services (one, several or all in one process),
//! and operator commands over the event store and the quarantine.

mod import;
mod quarantine;

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
    /// List persons (newest first).
    Persons {
        #[arg(long, default_value_t = 100)]
        limit: i64,
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
    /// Bring an app's groups in line with its `[[app.group]]` definitions now.
    Groups {
        #[arg(long)]
        app: String,
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
    /// Dead letters, oldest first: number, app, person, reason, last error.
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter in full, as JSON.
    Show { sequence: u64 },
    /// Put jobs back on their app's queue (after fixing the cause).
    Redrive {
        /// Numbers from `dlq list`.
        sequences: Vec<u64>,
        /// Every dead letter (of `--app`, when given).
        #[arg(long, conflicts_with = "sequences")]
        all: bool,
        #[arg(long)]
        app: Option<String>,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tenure_config::telemetry::init();
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
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
        Cmd::Persons { limit } => {
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
        Cmd::Groups { app } => {
            let app_cfg = cfg
                .app(app)
                .with_context(|| format!("no app named {app:?} in the configuration"))?;
            let pool = service_pool(&cfg, 4).await?;
            let worker = tenure_fanout::app_worker(app_cfg, &cfg.fanout, pool).await?;
            let r = worker.sync_groups().await?;
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
    info!("migrations applied");
    Ok(())
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
    let mut tasks = tokio::task::JoinSet::new();
    for service in services {
        let cfg = cfg.clone();
        let bus = bus.clone();
        let token = shutdown.clone();
        match service {
            Service::Ingest => {
                let bus = bus.context("bus")?;
                // The inbound SCIM endpoint keeps the IdP's users and groups,
                // and an HRIS deletion needs the person's last record.
                let pool = Some(service_pool(&cfg, if cfg.idp.is_empty() { 2 } else { 8 }).await?);
                tasks.spawn(async move {
                    tenure_ingest::run(&cfg, bus, pool, token)
                        .await
                        .context("ingest")
                });
            }
            Service::Engine => {
                let bus = bus.context("bus")?;
                let pool = service_pool(&cfg, cfg.database.max_connections).await?;
                tasks.spawn(async move {
                    tenure_engine::run(&cfg, pool, bus, token, tenure_engine::Clock::system())
                        .await
                        .context("engine")
                });
            }
            Service::Fanout => {
                let bus = bus.context("bus")?;
                // Each in-flight job holds one connection for its lease and
                // briefly needs a second one for its reads and writes.
                let in_flight: usize = cfg.apps.iter().map(|a| a.concurrency(&cfg.fanout)).sum();
                let size = (2 * in_flight.max(1) + 4) as u32;
                let pool = service_pool(&cfg, size).await?;
                tasks.spawn(async move {
                    tenure_fanout::run(&cfg, pool, bus, token)
                        .await
                        .context("fanout")
                });
            }
            Service::Api => {
                let pool = service_pool(&cfg, 4).await?;
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
    let released = tenure_api::ops::approve(&pool, &bus, app, only, cfg.engine.partitions).await?;
    println!("{released} held change(s) released for {app}");
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
    let (mut creates, mut updates, mut deletes, mut in_sync) = (0, 0, 0, 0);
    for person in persons {
        let Some(p) = worker.plan(person, live).await? else {
            continue;
        };
        if p.ops.is_empty() {
            in_sync += 1;
            continue;
        }
        for op in &p.ops {
            let what = match op {
                tenure_scim::Op::Create(spec) => {
                    creates += 1;
                    format!(
                        "POST /Users userName={:?} active={}",
                        spec.user_name, spec.active
                    )
                }
                tenure_scim::Op::Patch { id, ops } => {
                    updates += 1;
                    let changes: Vec<String> = ops
                        .iter()
                        .map(|o| format!("{} {}={}", o.op, o.path, o.value))
                        .collect();
                    format!("PATCH /Users/{id} {}", changes.join(", "))
                }
                tenure_scim::Op::Replace { id, spec } => {
                    updates += 1;
                    format!(
                        "PUT /Users/{id} userName={:?} active={}",
                        spec.user_name, spec.active
                    )
                }
                tenure_scim::Op::Delete { id } => {
                    deletes += 1;
                    format!("DELETE /Users/{id}")
                }
            };
            println!(
                "{:<30} {:<16} (found: {:<10}) {what}",
                p.user_name,
                p.entitlement.as_str(),
                p.found_by
            );
        }
    }
    println!("plan for {app}: {creates} to create, {updates} to update, {deletes} to delete, {in_sync} in sync; no change was sent");
    Ok(())
}

async fn dlq(cfg: &Config, command: &DlqCmd) -> anyhow::Result<()> {
    let bus = Bus::connect(
        &cfg.nats.url,
        Duration::from_secs(cfg.nats.duplicate_window_secs),
    )
    .await?;
    match command {
        DlqCmd::List { app, limit } => {
            let entries = bus.list_dlq(app.as_deref(), *limit).await?;
            if entries.is_empty() {
                println!("the dead-letter queue is empty");
            }
            for e in entries {
                println!(
                    "#{:<5} {} {:<8} {}  {:<9} after {} deliveries: {}",
                    e.sequence,
                    e.letter.dead_at.format("%Y-%m-%d %H:%M:%S"),
                    e.letter.job.app,
                    e.letter.job.person_id,
                    e.letter.reason,
                    e.letter.deliveries,
                    e.letter.error
                );
            }
        }
        DlqCmd::Show { sequence } => {
            let entry = bus
                .dead_letter_entry(*sequence)
                .await?
                .with_context(|| format!("no dead letter #{sequence}"))?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
        }
        DlqCmd::Redrive {
            sequences,
            all,
            app,
        } => {
            let targets: Vec<u64> = if *all {
                bus.list_dlq(app.as_deref(), usize::MAX)
                    .await?
                    .into_iter()
                    .map(|e| e.sequence)
                    .collect()
            } else if sequences.is_empty() {
                bail!("name dead letters to redrive, or pass --all");
            } else {
                sequences.clone()
            };
            let mut missing = 0;
            for seq in &targets {
                match bus.redrive(*seq, cfg.engine.partitions).await? {
                    Some(job) => println!("#{seq} redriven: {} {}", job.app, job.person_id),
                    None => {
                        missing += 1;
                        eprintln!("#{seq}: no such dead letter");
                    }
                }
            }
            if missing > 0 {
                bail!("{missing} dead letter(s) not found");
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
        let persons: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT person_id FROM entitlements WHERE app = $1 ORDER BY person_id",
        )
        .bind(app)
        .fetch_all(&pool)
        .await?;
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
                    tenure_sources::signature::sign_generic(secret.expose().as_bytes(), ts, &body),
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
