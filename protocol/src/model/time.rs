//! Timestamps as fixed-width ISO-8601 UTC strings (`2026-11-21T16:19:11Z`): readable in any Automerge
//! tool and ordered correctly by plain string comparison, which the "overdue" query relies on.
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_iso() -> String {
    iso_from_secs(now_secs())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` plus `months` calendar months, at the same time of day: the same day of the month, or the
/// month's last day when it has fewer days (Jan 31 + 1 month = Feb 28 or 29).
pub fn add_months(secs: i64, months: u32) -> i64 {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + i64::from(m - 1) + i64::from(months);
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * 86_400 + rem
}

pub fn iso_from_secs(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `YYYY-MM-DD`, checking the calendar.
pub fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (
        digits(&s[0..4])? as i64,
        digits(&s[5..7])?,
        digits(&s[8..10])?,
    );
    ((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)).then_some((y, m, d))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` to seconds since the epoch.
pub fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let (y, m, d) = parse_date(&s[0..10])?;
    let (hh, mm, ss) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + i64::from(hh * 3600 + mm * 60 + ss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trips() {
        for secs in [0, 951_782_400, 1_795_276_751, 4_102_444_799, -86_400] {
            let iso = iso_from_secs(secs);
            assert_eq!(parse_iso(&iso), Some(secs), "{iso}");
        }
        assert_eq!(iso_from_secs(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn adds_calendar_months() {
        let at = |s: &str| parse_iso(s).unwrap();
        let plus = |s: &str, m: u32| iso_from_secs(add_months(at(s), m));
        assert_eq!(plus("2026-01-31T08:30:00Z", 1), "2026-02-28T08:30:00Z");
        assert_eq!(plus("2028-01-31T08:30:00Z", 1), "2028-02-29T08:30:00Z");
        assert_eq!(plus("2026-11-15T00:00:00Z", 2), "2027-01-15T00:00:00Z");
        assert_eq!(plus("2026-03-31T23:59:59Z", 12), "2027-03-31T23:59:59Z");
        assert_eq!(plus("2026-05-10T10:00:00Z", 0), "2026-05-10T10:00:00Z");
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "abcd-ef-gh",
            "2024-04-31",
            "",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_iso("2024-02-29T24:00:00Z").is_none());
        assert!(parse_iso("2024-02-29 10:00:00Z").is_none());
    }
}
