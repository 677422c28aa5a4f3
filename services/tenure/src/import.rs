//! `tenure import csv`: one person per row, through a configured source's
//! field mapping, published to JetStream exactly as that source's webhooks
//! would be.
//!
//! Every row is validated before anything is published: one bad row stops
//! the whole import. The report compares each row with the `persons`
//! projection (attributes and lifecycle status; dates are not kept there
//! and are not compared). A row's delivery id is a hash of the source name
//! and the row's normalised record (not its line number, not the import
//! time), so re-importing a file publishes duplicates that JetStream and
//! the engine's inbox skip, and only changed rows become new deliveries.
//! A row that returns a person to a state a previous import already
//! delivered (A → B → A) would hash to an id the inbox has seen; such a
//! row's id also names the state it changes, so it is applied.

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use tenure_bus::{subjects, Bus, IngestEnvelope};
use tenure_config::Config;
use tenure_domain::record::Change;
use tenure_domain::{Attributes, EmploymentStatus, SourceRecord};
use tenure_sources::Adapter;
use tenure_store::sqlx;
use uuid::Uuid;

pub struct ImportCsv<'a> {
    pub file: &'a Path,
    pub source: &'a str,
    pub dry_run: bool,
    pub effective_at: Option<DateTime<Utc>>,
}

/// The person as the projection holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub status: String,
    pub attributes: Attributes,
}

/// What importing one row would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diff {
    New,
    Changed {
        attributes: BTreeMap<String, Change>,
        /// (projection's lifecycle status, the row's employment status).
        status: Option<(String, String)>,
    },
    Unchanged,
}

/// Whether a projected lifecycle status already reflects a row's
/// employment status (a hire before its start date is `pre_hire`, a
/// termination before its end date is still active, a rescinded hire is
/// `cancelled`).
fn status_matches(projected: &str, record: &SourceRecord, today: NaiveDate) -> bool {
    match record.employment_status {
        EmploymentStatus::Active => matches!(projected, "active" | "pre_hire"),
        EmploymentStatus::OnLeave => projected == "on_leave",
        EmploymentStatus::Terminated => {
            matches!(projected, "terminated" | "purged")
                || (record.end_date.is_some_and(|d| d >= today)
                    && matches!(projected, "active" | "pre_hire" | "on_leave"))
        }
        EmploymentStatus::Rescinded => matches!(projected, "cancelled" | "purged"),
    }
}

fn status_name(s: EmploymentStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{s:?}"))
}

/// The report entry of one row.
pub fn diff(record: &SourceRecord, known: Option<&Known>, today: NaiveDate) -> Diff {
    let Some(known) = known else {
        return Diff::New;
    };
    let attributes = known.attributes.changes_to(&record.attributes());
    let status = (!status_matches(&known.status, record, today))
        .then(|| (known.status.clone(), status_name(record.employment_status)));
    if attributes.is_empty() && status.is_none() {
        Diff::Unchanged
    } else {
        Diff::Changed { attributes, status }
    }
}

/// A row's delivery id: the same facts from the same source give the same
/// id, whatever line they are on and whenever they are imported.
pub fn delivery_id(source: &str, record: &SourceRecord) -> String {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("sequence");
        o.remove("effective_at");
    }
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(&v).unwrap_or_default());
    format!("import:{}", hex::encode(h.finalize()))
}

/// The delivery id of a row that returns a person to a state delivered
/// before: it also names the state it changes.
pub fn revert_delivery_id(base: &str, known: &Known) -> String {
    let mut h = Sha256::new();
    h.update(known.status.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(&known.attributes).unwrap_or_default());
    format!("{base}:{}", &hex::encode(h.finalize())[..16])
}

/// One correlation id per file content, so the audit trail ties an
/// import's events together.
pub fn correlation_id(source: &str, file: &[u8]) -> Uuid {
    let hash = hex::encode(Sha256::digest(file));
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("tenure:import:{source}:{hash}").as_bytes(),
    )
}

fn describe(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(none)".into(),
    }
}

pub fn report_line(record: &SourceRecord, d: &Diff) -> String {
    match d {
        Diff::New => format!(
            "new        {:<16} {}",
            record.person_id,
            record.work_email.trim()
        ),
        Diff::Unchanged => format!(
            "unchanged  {:<16} {}",
            record.person_id,
            record.work_email.trim()
        ),
        Diff::Changed { attributes, status } => {
            let mut parts: Vec<String> = attributes
                .iter()
                .map(|(k, c)| format!("{k}: {} -> {}", describe(&c.from), describe(&c.to)))
                .collect();
            if let Some((from, to)) = status {
                parts.push(format!("status: {from} -> {to}"));
            }
            format!(
                "changed    {:<16} {}  {}",
                record.person_id,
                record.work_email.trim(),
                parts.join("; ")
            )
        }
    }
}

pub async fn import_csv(cfg: &Config, args: ImportCsv<'_>) -> anyhow::Result<()> {
    let Some(src) = cfg.sources.iter().find(|s| s.name == args.source) else {
        let names: Vec<&str> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        if names.is_empty() {
            bail!(
                "no source {:?}: the configuration has no [[source]] blocks; add one (kind = \"csv\" or the vendor whose export this is) whose mapping names the file's columns",
                args.source
            );
        }
        bail!(
            "no source {:?} in the configuration; configured sources: {}",
            args.source,
            names.join(", ")
        );
    };
    let adapter = Adapter::try_new(src.kind, src.mapping.clone(), None).map_err(|e| {
        anyhow::anyhow!(
            "source {:?} ({}): its [source.mapping] cannot work: {e}",
            src.name,
            src.kind
        )
    })?;
    let bytes =
        std::fs::read(args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let now = Utc::now();
    let effective_at = args.effective_at.unwrap_or(now);
    let rows = adapter.records_from_csv(&bytes[..], effective_at);
    let mut records = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for row in rows {
        match row {
            Ok(r) => records.push(r),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        bail!(
            "{} row error(s) in {}; nothing was published (fix the file and import it again)",
            errors.len(),
            args.file.display()
        );
    }
    if records.is_empty() {
        println!("{}: no rows to import", args.file.display());
        return Ok(());
    }

    let pool = crate::service_pool(cfg, 2).await?;
    let ids: Vec<Uuid> = records
        .iter()
        .map(|r| tenure_domain::person::person_id_for(&src.name, &r.person_id))
        .collect();
    let rows: Vec<(Uuid, String, serde_json::Value)> = sqlx::query_as(
        "SELECT person_id, status, attributes FROM persons WHERE person_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    let mut known = HashMap::new();
    for (id, status, attributes) in rows {
        let attributes: Attributes = serde_json::from_value(attributes)
            .with_context(|| format!("person {id}: attributes do not parse"))?;
        known.insert(id, Known { status, attributes });
    }

    let today = now.date_naive();
    let (mut new, mut changed, mut unchanged) = (0usize, 0usize, 0usize);
    let mut diffs = Vec::with_capacity(records.len());
    for (record, id) in records.iter().zip(&ids) {
        let d = diff(record, known.get(id), today);
        match d {
            Diff::New => new += 1,
            Diff::Changed { .. } => changed += 1,
            Diff::Unchanged => unchanged += 1,
        }
        println!("{}", report_line(record, &d));
        diffs.push(d);
    }
    println!(
        "report for {} ({} rows, source {}): {new} new, {changed} changed, {unchanged} unchanged",
        args.file.display(),
        records.len(),
        src.name
    );
    if args.dry_run {
        println!("dry run: nothing was published");
        return Ok(());
    }

    // Delivery ids; a changed row whose content was delivered before is a
    // return to an earlier state and gets an id of its own.
    let mut deliveries: Vec<String> = records.iter().map(|r| delivery_id(&src.name, r)).collect();
    let seen: HashSet<String> = sqlx::query_scalar(
        "SELECT delivery_id FROM inbox WHERE source = $1 AND delivery_id = ANY($2)",
    )
    .bind(&src.name)
    .bind(&deliveries)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    for (i, d) in diffs.iter().enumerate() {
        if matches!(d, Diff::Changed { .. }) && seen.contains(&deliveries[i]) {
            if let Some(k) = known.get(&ids[i]) {
                deliveries[i] = revert_delivery_id(&deliveries[i], k);
            }
        }
    }

    let bus = Bus::connect(
        &cfg.nats.url,
        Duration::from_secs(cfg.nats.duplicate_window_secs),
    )
    .await?;
    let correlation_id = correlation_id(&src.name, &bytes);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(records.len() as u64),
        if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    let subject = subjects::ingest(&src.name);
    let (mut published, mut duplicates) = (0usize, 0usize);
    for (record, delivery_id) in records.into_iter().zip(deliveries) {
        let envelope = IngestEnvelope {
            source: src.name.clone(),
            delivery_id,
            received_at: now,
            correlation_id,
            record,
        };
        let payload = bytes::Bytes::from(serde_json::to_vec(&envelope)?);
        let stored = bus
            .publish(&subject, &envelope.msg_id(), &[], payload)
            .await
            .with_context(|| {
                format!(
                    "JetStream did not store the row of {} ({published} published so far); import the file again, what was stored is skipped",
                    envelope.record.person_id
                )
            })?;
        if stored.duplicate {
            duplicates += 1;
        } else {
            published += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "import {correlation_id}: {published} published, {duplicates} duplicates (delivered before), {unchanged} unchanged"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dept: &str, line: u64, at: &str) -> SourceRecord {
        SourceRecord::from_json(
            serde_json::json!({
                "person_id": "E-1",
                "given_name": "Ana",
                "family_name": "Silva",
                "work_email": "ana@example.com",
                "department": dept,
                "employment_status": "active",
                "start_date": "2026-01-05",
                "effective_at": at,
                "sequence": line,
            })
            .to_string()
            .as_bytes(),
        )
        .expect("record")
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 6, 1).expect("date")
    }

    #[test]
    fn delivery_id_ignores_line_and_import_time_but_not_content() {
        let a = record("Sales", 2, "2026-01-01T00:00:00Z");
        let moved = record("Sales", 7, "2026-03-01T12:00:00Z");
        assert_eq!(delivery_id("hr", &a), delivery_id("hr", &moved));
        assert_ne!(
            delivery_id("hr", &a),
            delivery_id("hr", &record("Engineering", 2, "2026-01-01T00:00:00Z"))
        );
        assert_ne!(delivery_id("hr", &a), delivery_id("other", &a));
        let id = delivery_id("hr", &a);
        assert!(id.starts_with("import:") && id.len() <= 128, "{id}");
        // Stable across releases: a re-import after an upgrade is still a
        // duplicate.
        assert_eq!(id, delivery_id("hr", &a.clone()));
    }

    #[test]
    fn revert_ids_differ_per_prior_state() {
        let a = record("Sales", 2, "2026-01-01T00:00:00Z");
        let base = delivery_id("hr", &a);
        let k1 = Known {
            status: "active".into(),
            attributes: record("Engineering", 2, "2026-01-01T00:00:00Z").attributes(),
        };
        let k2 = Known {
            status: "active".into(),
            attributes: record("Support", 2, "2026-01-01T00:00:00Z").attributes(),
        };
        let (r1, r2) = (
            revert_delivery_id(&base, &k1),
            revert_delivery_id(&base, &k2),
        );
        assert_ne!(r1, r2);
        assert!(r1.starts_with(&base) && r1.len() <= 128);
    }

    #[test]
    fn diff_reports_new_changed_and_unchanged() {
        let r = record("Sales", 2, "2026-01-01T00:00:00Z");
        assert_eq!(diff(&r, None, today()), Diff::New);
        let same = Known {
            status: "active".into(),
            attributes: r.attributes(),
        };
        assert_eq!(diff(&r, Some(&same), today()), Diff::Unchanged);
        let pre_hire = Known {
            status: "pre_hire".into(),
            ..same.clone()
        };
        assert_eq!(diff(&r, Some(&pre_hire), today()), Diff::Unchanged);

        let before = Known {
            status: "terminated".into(),
            attributes: record("Engineering", 2, "2026-01-01T00:00:00Z").attributes(),
        };
        let Diff::Changed { attributes, status } = diff(&r, Some(&before), today()) else {
            panic!("expected a change");
        };
        assert_eq!(attributes.len(), 1);
        assert_eq!(
            attributes["department"],
            Change {
                from: Some("Engineering".into()),
                to: Some("Sales".into())
            }
        );
        assert_eq!(status, Some(("terminated".into(), "active".into())));
        let line = report_line(&r, &diff(&r, Some(&before), today()));
        assert!(
            line.contains("department: \"Engineering\" -> \"Sales\"")
                && line.contains("status: terminated -> active"),
            "{line}"
        );
    }

    #[test]
    fn a_termination_before_its_end_date_is_not_a_status_change() {
        let mut r = record("Sales", 2, "2026-01-01T00:00:00Z");
        r.employment_status = EmploymentStatus::Terminated;
        r.end_date = NaiveDate::from_ymd_opt(2026, 7, 1);
        let active = Known {
            status: "active".into(),
            attributes: r.attributes(),
        };
        assert_eq!(diff(&r, Some(&active), today()), Diff::Unchanged);
        r.end_date = NaiveDate::from_ymd_opt(2026, 5, 1);
        assert!(matches!(
            diff(&r, Some(&active), today()),
            Diff::Changed {
                status: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn correlation_id_follows_the_file_content() {
        assert_eq!(
            correlation_id("hr", b"a,b\n"),
            correlation_id("hr", b"a,b\n")
        );
        assert_ne!(
            correlation_id("hr", b"a,b\n"),
            correlation_id("hr", b"a,c\n")
        );
    }
}
