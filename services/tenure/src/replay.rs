//! `tenure replay app`: rebuild a downstream app from history (see
//! docs/replay.md and `tenure_fanout::replay_app`).

use anyhow::{bail, Context};
use clap::Subcommand;
use tenure_config::Config;
use tenure_fanout::replay_app::{Effect, ReplayReport};

#[derive(Subcommand)]
pub enum ReplayCmd {
    /// Bring an app that was wiped, restored from an old backup or is new
    /// to what history says it must hold: re-create missing accounts and
    /// groups, repair attributes, deactivate or delete what must not be
    /// there (under the app's policy and the mass-change guard).
    App {
        app: String,
        /// Print the plan (reads only); send nothing that changes the app.
        #[arg(long)]
        dry_run: bool,
        /// The full report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    cfg: &Config,
    pool: tenure_store::sqlx::PgPool,
    cmd: &ReplayCmd,
) -> anyhow::Result<()> {
    match cmd {
        ReplayCmd::App { app, dry_run, json } => {
            let app_cfg = cfg
                .app(app)
                .with_context(|| format!("no app named {app:?} in the configuration"))?;
            let worker = tenure_fanout::app_worker(app_cfg, &cfg.fanout, pool).await?;
            let report = worker.replay_app(*dry_run).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            if report.counts.failed > 0 && !dry_run {
                bail!(
                    "{} person(s) could not be brought in line; see `tenure timeline <person>` or the lines above",
                    report.counts.failed
                );
            }
            Ok(())
        }
    }
}

fn print_report(r: &ReplayReport) {
    for p in r.persons.iter().filter(|p| p.effect != Effect::Unchanged) {
        let head = format!(
            "{:<30} {:<14} {:<11}",
            p.user_name,
            p.entitlement,
            p.effect.as_str()
        );
        if p.detail.is_empty() {
            println!("{head}");
        }
        for d in &p.detail {
            println!("{head} {d}");
        }
    }
    for g in &r.groups.missing {
        println!("group {g:<30} missing in the app");
    }
    for e in &r.groups.errors {
        eprintln!("group error: {e}");
    }
    if let Some(why) = &r.groups.skipped {
        println!("groups skipped: {why}");
    }
    let c = &r.counts;
    println!(
        "{}{}: {} accounts and {} groups listed; {} created, {} updated, {} deactivated, {} deleted, {} unchanged, {} held, {} failed; groups: {} wanted, {} created, {} updated, {} deleted; {} unmanaged account(s) left alone (correlation id {})",
        r.app,
        if r.dry_run { " (dry run)" } else { "" },
        r.listed_accounts,
        r.listed_groups,
        c.created,
        c.updated,
        c.deactivated,
        c.deleted,
        c.unchanged,
        c.held,
        c.failed,
        r.groups.desired,
        r.groups.created,
        r.groups.updated,
        r.groups.deleted,
        r.unmanaged,
        r.correlation_id,
    );
    if c.held > 0 {
        println!(
            "{} deprovision(s) held by the mass-change guard: `tenure staged --app {}`, then `tenure approve --app {} …`",
            c.held, r.app, r.app
        );
    }
}
