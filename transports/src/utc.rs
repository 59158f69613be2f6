//! Calendar dates in UTC, converted by hand on the proleptic Gregorian
//! calendar (no time-zone database is needed for UTC): the one place the
//! toolkit turns a `SystemTime` into a date, for the known-hosts file
//! (RFC 3339, whole seconds: `2025-01-31T12:00:00Z`), the CGI
//! certificate variables and the daytime service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use twistor_transports::utc::format_time;
/// assert_eq!(format_time(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
/// assert_eq!(format_time(UNIX_EPOCH - Duration::from_secs(86_400)), "1969-12-31T00:00:00Z");
/// ```
pub fn format_time(t: SystemTime) -> String {
    let (days, rem) = days_and_seconds(t);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Whole days since 1970-01-01 (negative before it) and the seconds into
/// the last one.
pub fn days_and_seconds(t: SystemTime) -> (i64, i64) {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    (secs.div_euclid(86_400), secs.rem_euclid(86_400))
}

/// Parse what [`format_time`] writes.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("{s:?} is not a UTC time such as 2025-01-31T12:00:00Z");
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    if civil_from_days(days) != (y as i64, mo as u32, d as u32) {
        return Err(bad()); // 2025-02-30 and the like
    }
    let secs = days * 86_400 + (h * 3600 + mi * 60 + se) as i64;
    Ok(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12; // March is 0
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01 (the
/// inverse of the above).
///
/// ```
/// use twistor_transports::utc::civil_from_days;
/// assert_eq!(civil_from_days(0), (1970, 1, 1));
/// assert_eq!(civil_from_days(-1), (1969, 12, 31));
/// assert_eq!(civil_from_days(11_016), (2000, 2, 29));
/// ```
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for secs in [
            0u64,
            59,
            86_399,
            86_400,
            951_782_400,
            1_700_000_000,
            4_102_444_800,
            64_060_588_799,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_time(&format_time(t)).unwrap(), t, "{secs}");
            // A certificate may claim a date before 1970 too.
            if secs <= 4_102_444_800 {
                let t = UNIX_EPOCH - Duration::from_secs(secs);
                assert_eq!(parse_time(&format_time(t)).unwrap(), t, "-{secs}");
            }
        }
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_secs(1_586_060_302)),
            "2020-04-05T04:18:22Z"
        );
        assert_eq!(
            format_time(UNIX_EPOCH - Duration::from_millis(1500)),
            "1969-12-31T23:59:58Z"
        );
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        for bad in [
            "2025-02-30T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-01-01 00:00:00Z",
            "x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
