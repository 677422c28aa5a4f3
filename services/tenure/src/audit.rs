//! `tenure audit …`: the compliance questions of docs/audit.md, answered by
//! `tenure-audit` from the event history.

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use tenure_audit::render::{render, Format, Report};
use tenure_audit::{checkpoint, export, read, review, search, signing, time};
use tenure_config::Config;
use tenure_store::sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Table => Format::Table,
            OutputFormat::Json => Format::Json,
            OutputFormat::Csv => Format::Csv,
        }
    }
}

#[derive(Subcommand)]
pub enum AuditQueryCmd {
    /// Accounts that held access in an app at an instant; with --person,
    /// that person's access intervals per app. Computed from events.
    Access {
        #[arg(long)]
        app: Option<String>,
        /// RFC 3339, or a date meaning the end of that day (UTC).
        #[arg(long)]
        at: Option<String>,
        /// Person id (or work e-mail / source person id, resolved once).
        #[arg(long)]
        person: Option<String>,
        /// Also list accounts that existed but were inactive.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// The access review export: every account holding access at an
    /// instant (all apps, or --app) with manager, department, title and the
    /// last HR change, as HR and the apps stood then.
    Review {
        #[arg(long)]
        app: Option<String>,
        /// RFC 3339, or a date meaning the end of that day (UTC); default: now.
        #[arg(long)]
        at: Option<String>,
        /// Also list accounts that existed but were inactive.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Time from each leaver's effective termination to every app's
    /// acknowledged deactivation: p50/p95/max and SLA breaches with reasons.
    Deprovision {
        /// Terminations effective at or after this instant.
        #[arg(long)]
        from: String,
        /// … and before this one (default: now).
        #[arg(long)]
        to: Option<String>,
        /// e.g. 24h, 90m, 2d (default: [audit] deprovision_sla_hours).
        #[arg(long)]
        sla: Option<String>,
        /// Only the rows that breach the SLA.
        #[arg(long)]
        breaches: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Leavers still holding an active account and accounts whose last
    /// SCIM call failed (exit 1 when any), and unmanaged accounts.
    Exceptions {
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Events by person, app, type, correlation id and time, a page at a
    /// time (`--after` takes the cursor printed after a page).
    Search {
        #[arg(long)]
        person: Option<String>,
        #[arg(long)]
        app: Option<String>,
        /// Event type; repeat for several.
        #[arg(long = "type", value_name = "TYPE")]
        event_types: Vec<String>,
        #[arg(long)]
        correlation: Option<Uuid>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// Cursor: events after this global position.
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Write the events recorded in [--from, --to) as JSON Lines with a
    /// manifest signed by the [audit] signing_key.
    Export {
        #[arg(long)]
        from: String,
        /// Default: now.
        #[arg(long)]
        to: Option<String>,
        /// Only this app's events.
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an export offline against a public key; exit 1 on any problem.
    VerifyExport {
        file: PathBuf,
        /// Hex, or a file holding it.
        #[arg(long)]
        public_key: String,
    },
    /// Sign a checkpoint of the global log (run it periodically), or with
    /// --verify re-walk the log against every checkpoint, or --list them.
    Checkpoint {
        #[arg(long, conflicts_with = "list")]
        verify: bool,
        /// Check signatures against this key (hex or a file) rather than
        /// the key stored with each checkpoint.
        #[arg(long, requires = "verify")]
        public_key: Option<String>,
        #[arg(long)]
        list: bool,
    },
    /// Make a signing key: the secret seed goes to --out (mode 0600), the
    /// public key to stdout.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(cfg: &Config, cmd: &AuditQueryCmd) -> anyhow::Result<()> {
    // Checking an export or making a key needs no database: an auditor
    // runs them on their own machine.
    match cmd {
        AuditQueryCmd::VerifyExport { file, public_key } => return verify_export(file, public_key),
        AuditQueryCmd::Keygen { out } => return keygen(out),
        _ => {}
    }
    let pool = tenure_store::connect(&cfg.database.url, cfg.database.role.as_deref(), 2)
        .await
        .context(
            "cannot connect to PostgreSQL (is database.url right? did `tenure migrate` run?)",
        )?;
    match cmd {
        AuditQueryCmd::Access {
            app,
            at,
            person,
            all,
            format,
        } => {
            let at = at.as_deref().map(time::parse_instant).transpose()?;
            if let Some(person) = person {
                let person_id = resolve_person(&pool, person).await?;
                let report = read::person_access(&pool, person_id, app.as_deref(), at).await?;
                print(&report, *format)
            } else {
                let (Some(app), Some(at)) = (app, at) else {
                    bail!("give --app and --at (or --person)");
                };
                print(&read::access_at(&pool, app, at, *all).await?, *format)
            }
        }
        AuditQueryCmd::Review {
            app,
            at,
            all,
            format,
        } => {
            let at = at
                .as_deref()
                .map(time::parse_instant)
                .transpose()?
                .unwrap_or_else(chrono::Utc::now);
            let report = review::access_review(&pool, app.as_deref(), at, *all).await?;
            print(&report, *format)
        }
        AuditQueryCmd::Deprovision {
            from,
            to,
            sla,
            breaches,
            format,
        } => {
            let now = chrono::Utc::now();
            let from = time::parse_bound(from)?;
            let to = to
                .as_deref()
                .map(time::parse_bound)
                .transpose()?
                .unwrap_or(now);
            let sla_secs = match sla {
                Some(s) => time::parse_duration(s)?.as_secs(),
                None => cfg.audit.deprovision_sla_hours.saturating_mul(3600),
            };
            let sla_secs = i64::try_from(sla_secs).context("the SLA is too long")?;
            let mut report = read::deprovision(&pool, from, to, sla_secs, now).await?;
            if *breaches {
                report.rows.retain(|r| r.breach);
            }
            if matches!(format, OutputFormat::Table) {
                print!("{}", report.summary().to_text());
                println!();
            }
            print(&report, *format)
        }
        AuditQueryCmd::Exceptions { format } => {
            let report = read::exceptions(&pool).await?;
            print(&report, *format)?;
            // Unmanaged accounts are listed but do not fail the command:
            // the sweep's sample includes the accounts an app needs
            // (`unmanaged_keep`), which are expected.
            if !report.active_leaver_accounts.is_empty() || !report.failed_last_calls.is_empty() {
                bail!(
                    "{} leaver account(s) still active, {} account(s) whose last SCIM call failed",
                    report.active_leaver_accounts.len(),
                    report.failed_last_calls.len(),
                );
            }
            Ok(())
        }
        AuditQueryCmd::Search {
            person,
            app,
            event_types,
            correlation,
            from,
            to,
            after,
            limit,
            format,
        } => {
            let person_id = match person {
                Some(p) => Some(resolve_person(&pool, p).await?),
                None => None,
            };
            let filter = search::SearchFilter {
                person_id,
                app: app.clone(),
                event_types: event_types.clone(),
                correlation_id: *correlation,
                from: from.as_deref().map(time::parse_bound).transpose()?,
                to: to.as_deref().map(time::parse_bound).transpose()?,
                after: *after,
                limit: *limit,
            };
            let page = search::search(&pool, &filter).await?;
            print(&page, *format)?;
            if let Some(next) = page.next_cursor {
                eprintln!("more events follow: add --after {next}");
            }
            Ok(())
        }
        AuditQueryCmd::Export { from, to, app, out } => {
            let key = signing_key(cfg)?;
            let filter = export::ExportFilter {
                from: time::parse_bound(from)?,
                to: to
                    .as_deref()
                    .map(time::parse_bound)
                    .transpose()?
                    .unwrap_or_else(chrono::Utc::now),
                app: app.clone(),
            };
            let file = std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let mut writer = BufWriter::new(file);
            let manifest = export::export(&pool, &filter, &key, &mut writer).await?;
            writer.flush()?;
            println!(
                "{} events (positions {:?}..{:?}) written to {}; public key {}",
                manifest.count,
                manifest.first_position,
                manifest.last_position,
                out.display(),
                manifest.public_key
            );
            Ok(())
        }
        AuditQueryCmd::VerifyExport { .. } | AuditQueryCmd::Keygen { .. } => Ok(()),
        AuditQueryCmd::Checkpoint {
            verify,
            public_key,
            list,
        } => {
            if *list {
                let all = checkpoint::list_checkpoints(&pool).await?;
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            if *verify {
                let trusted = public_key.as_deref().map(read_public_key).transpose()?;
                let report = checkpoint::verify_checkpoints(&pool, trusted.as_ref()).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.is_ok() {
                    bail!(
                        "checkpoint verification found {} problem(s)",
                        report.problems.len()
                    );
                }
                return Ok(());
            }
            match checkpoint::create_checkpoint(&pool, &signing_key(cfg)?).await? {
                Some(c) => println!("{}", serde_json::to_string_pretty(&c)?),
                None => println!("no new events since the last checkpoint"),
            }
            Ok(())
        }
    }
}

fn verify_export(file: &Path, public_key: &str) -> anyhow::Result<()> {
    let key = read_public_key(public_key)?;
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let report = export::verify_export(BufReader::new(input), &key)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.is_ok() {
        bail!(
            "{}: {} problem(s); the export cannot be trusted",
            file.display(),
            report.problems.len()
        );
    }
    Ok(())
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = signing::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    writeln!(file, "{}", signing::seed_hex(&key))?;
    println!("{}", signing::public_hex(&key.verifying_key()));
    Ok(())
}

fn signing_key(cfg: &Config) -> anyhow::Result<tenure_audit::SigningKey> {
    let secret = cfg
        .audit
        .signing_key
        .as_ref()
        .context("no [audit] signing_key configured (docs/audit.md: `tenure audit keygen`)")?
        .resolve()?;
    Ok(signing::signing_key(secret.expose())?)
}

/// Hex, or the path of a file holding it.
fn read_public_key(arg: &str) -> anyhow::Result<tenure_audit::VerifyingKey> {
    let text = match std::fs::read_to_string(arg) {
        Ok(text) => text,
        Err(_) => arg.to_owned(),
    };
    Ok(signing::public_key(&text)?)
}

/// An id is used as given; anything else is looked up once in the persons
/// table to find the id, after which only events are read.
async fn resolve_person(pool: &PgPool, person: &str) -> anyhow::Result<Uuid> {
    if let Ok(id) = person.parse() {
        return Ok(id);
    }
    let p = tenure_api::queries::find_person(pool, person)
        .await?
        .with_context(|| format!("no person matches {person:?}; give the person id"))?;
    Ok(p.person_id)
}

fn print<R: Report>(report: &R, format: OutputFormat) -> anyhow::Result<()> {
    let text = render(report, format.into())?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}
