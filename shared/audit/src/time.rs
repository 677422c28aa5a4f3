//! Instants and durations as an operator types them.

use chrono::{DateTime, NaiveDate, Utc};
use std::time::Duration;

use crate::AuditError;

/// RFC 3339 (`2026-03-31T17:00:00Z`), or a date (`2026-03-31`) meaning the
/// end of that day in UTC: "who had access on 31 March" asks about the
/// whole day, so the last instant of it is the one that shows everyone who
/// still held access that day.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(end) = d.and_hms_micro_opt(23, 59, 59, 999_999) {
            return Ok(end.and_utc());
        }
    }
    Err(AuditError::Invalid(format!(
        "{s:?} is not an instant: use RFC 3339 (2026-03-31T17:00:00Z) or a date (2026-03-31)"
    )))
}

/// A bound of a half-open range `[from, to)`: RFC 3339, or a date meaning
/// the start of that day in UTC, so `--from 2026-01-01 --to 2026-04-01` is
/// the first quarter.
pub fn parse_bound(s: &str) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(start) = d.and_hms_opt(0, 0, 0) {
            return Ok(start.and_utc());
        }
    }
    parse_instant(s)
}

/// `90s`, `45m`, `24h`, `2d` (a bare number is hours).
pub fn parse_duration(s: &str) -> Result<Duration, AuditError> {
    let s = s.trim();
    let bad = || {
        AuditError::Invalid(format!(
            "{s:?} is not a duration: use a number with s, m, h or d (e.g. 24h)"
        ))
    };
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "h"),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}

/// `1d 2h 3m 4s`-style text for a number of seconds, for tables.
pub fn human_seconds(secs: i64) -> String {
    if secs < 0 {
        return format!("-{}", human_seconds(-secs));
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_means_the_end_of_that_day() {
        let t = parse_instant("2026-03-31").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-31T23:59:59.999999+00:00");
        let t = parse_instant("2026-03-31T10:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-31T08:00:00+00:00");
        assert!(parse_instant("31/03/2026").is_err());
    }

    #[test]
    fn a_date_bounding_a_range_means_the_start_of_that_day() {
        let t = parse_bound("2026-04-01").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-04-01T00:00:00+00:00");
        assert_eq!(
            parse_bound("2026-04-01T12:00:00Z").unwrap().to_rfc3339(),
            "2026-04-01T12:00:00+00:00"
        );
        assert!(parse_bound("April").is_err());
    }

    #[test]
    fn durations_take_a_unit_and_default_to_hours() {
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5_400);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("12").unwrap().as_secs(), 43_200);
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn human_durations_keep_the_two_largest_units() {
        assert_eq!(human_seconds(42), "42s");
        assert_eq!(human_seconds(3 * 60 + 5), "3m 5s");
        assert_eq!(human_seconds(26 * 3600 + 60), "1d 2h");
        assert_eq!(human_seconds(-90), "-1m 30s");
    }
}
