//! Turning HR dates into instants. HR speaks in local calendar days ("starts
//! on 3 March", "last day 31 May"); Tenure acts at instants. The rules:
//! a start date means the start of that local day at a configurable hour, a
//! last day means the end of that local day (the next local midnight).

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant the local wall clock in `tz` shows `date` at `hour`:00.
///
/// When that wall time happens twice (a DST overlap) the earlier instant is
/// taken, so nothing starts late. When it never happens (a DST gap, which
/// in some zones swallows midnight itself) the first instant after the gap
/// is taken.
pub fn local_instant(date: NaiveDate, hour: u32, tz: Tz) -> DateTime<Utc> {
    let Some(naive) = date.and_hms_opt(hour.min(23), 0, 0) else {
        // hour is clamped to 0..=23, so this cannot happen; midnight is a safe answer.
        return Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN));
    };
    resolve(naive, tz)
}

fn resolve(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are whole minutes and at most a few hours long.
            let mut probe = naive;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return t.with_timezone(&Utc),
                    LocalResult::Ambiguous(t, _) => return t.with_timezone(&Utc),
                    LocalResult::None => {}
                }
            }
            // No zone has a day-long gap; fall back to reading it as UTC.
            Utc.from_utc_datetime(&naive)
        }
    }
}

/// Start of the working day `date` in `tz`.
pub fn day_start(date: NaiveDate, tz: Tz, hour: u32) -> DateTime<Utc> {
    local_instant(date, hour, tz)
}

/// End of the last day `date` in `tz`: the following local midnight.
pub fn day_end(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    match date.succ_opt() {
        Some(next) => local_instant(next, 0, tz),
        None => local_instant(date, 23, tz),
    }
}

pub fn parse_tz(name: Option<&str>, default: Tz) -> Tz {
    name.and_then(|n| n.parse::<Tz>().ok()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe};

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    #[test]
    fn start_of_day_in_berlin_winter_and_summer() {
        assert_eq!(
            day_start(d("2026-03-03"), Europe::Berlin, 0),
            utc("2026-03-02T23:00:00Z")
        );
        assert_eq!(
            day_start(d("2026-07-01"), Europe::Berlin, 0),
            utc("2026-06-30T22:00:00Z")
        );
        assert_eq!(
            day_start(d("2026-07-01"), Europe::Berlin, 9),
            utc("2026-07-01T07:00:00Z")
        );
    }

    #[test]
    fn last_day_ends_at_the_next_local_midnight() {
        // Friday 2026-05-29 in New York (EDT, UTC-4).
        assert_eq!(
            day_end(d("2026-05-29"), America::New_York),
            utc("2026-05-30T04:00:00Z")
        );
        // The last day of February in a leap year, and New Year's Eve.
        assert_eq!(
            day_end(d("2028-02-28"), Europe::Berlin),
            utc("2028-02-28T23:00:00Z")
        );
        assert_eq!(
            day_end(d("2028-02-29"), Europe::Berlin),
            utc("2028-02-29T23:00:00Z")
        );
        assert_eq!(
            day_end(d("2026-12-31"), Europe::Berlin),
            utc("2026-12-31T23:00:00Z")
        );
    }

    #[test]
    fn dst_gap_moves_to_the_first_instant_after_it() {
        // Berlin skips 02:00-03:00 on 2026-03-29.
        assert_eq!(
            day_start(d("2026-03-29"), Europe::Berlin, 2),
            utc("2026-03-29T01:00:00Z")
        );
        // Santiago de Chile skips midnight itself on 2026-09-06 (00:00 -> 01:00).
        let start = day_start(d("2026-09-06"), America::Santiago, 0);
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
        assert_eq!(
            start.with_timezone(&America::Santiago).to_string(),
            "2026-09-06 01:00:00 -03"
        );
    }

    #[test]
    fn dst_overlap_takes_the_earlier_instant() {
        // Berlin repeats 02:00-03:00 on 2026-10-25: 02:00 CEST comes first.
        assert_eq!(
            day_start(d("2026-10-25"), Europe::Berlin, 2),
            utc("2026-10-25T00:00:00Z")
        );
        // Havana falls back at 01:00 to 00:00 on 2026-11-01: midnight happens twice.
        assert_eq!(
            day_start(d("2026-11-01"), America::Havana, 0),
            utc("2026-11-01T04:00:00Z")
        );
    }
}
