//! UTC timestamps with Go-compatible RFC 3339 formatting and parsing.
//!
//! Key records and describe responses carry timestamps in the format Go's
//! `time.RFC3339Nano` produces for UTC times (`2024-01-12T10:39:20.886816Z`: fraction
//! trimmed of trailing zeros, no fraction at all when it is zero). Parsing follows Go's
//! `time.Time.UnmarshalJSON` (strict RFC 3339): `T` and `Z` upper case, `Z` or a `±hh:mm`
//! offset, an optional fraction of one or more digits (digits past the ninth are ignored, as
//! in Go).

use std::fmt::Write as _;

/// The text Go prints for its zero `time.Time` (`0001-01-01T00:00:00Z`).
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

const NANOS_PER_SECOND: u32 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A point in time: UTC seconds and nanoseconds since the Unix epoch.
///
/// `nanos` is always below 1 000 000 000 for values produced by this module; the derived
/// ordering is therefore chronological.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// Go's zero `time.Time`: `0001-01-01T00:00:00Z`.
    pub const GO_ZERO: Timestamp = Timestamp {
        seconds: -62_135_596_800,
        nanos: 0,
    };

    /// The current time from the system clock.
    pub fn now() -> Timestamp {
        use std::time::{SystemTime, UNIX_EPOCH};
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                // Clock before 1970: negate the duration.
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                Timestamp::from_unix(-secs, -(d.subsec_nanos() as i64))
            }
        }
    }

    /// Builds a timestamp from seconds and a (possibly negative or oversized) nanosecond
    /// count, normalising like Go's `time.Unix`. Saturates at the `i64` range.
    pub fn from_unix(seconds: i64, nanos: i64) -> Timestamp {
        let n = i64::from(NANOS_PER_SECOND);
        let seconds = seconds.saturating_add(nanos.div_euclid(n));
        Timestamp {
            seconds,
            nanos: nanos.rem_euclid(n) as u32,
        }
    }

    /// Whether this is Go's zero time (`0001-01-01T00:00:00Z`).
    pub fn is_go_zero(&self) -> bool {
        *self == Self::GO_ZERO
    }

    /// Appends the Go `RFC3339Nano` UTC representation, e.g. `2024-01-12T10:39:20.886816Z`.
    pub fn write_rfc3339(&self, out: &mut String) {
        let (date, secs_of_day) = self.civil();
        write_date(out, date);
        out.push('T');
        write_clock(out, secs_of_day);
        let nanos = self.nanos.min(NANOS_PER_SECOND - 1);
        if nanos != 0 {
            let mut digits = [0u8; 9];
            let mut v = nanos;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            let mut len = 9;
            while len > 0 && digits[len - 1] == b'0' {
                len -= 1;
            }
            out.push('.');
            for &d in &digits[..len] {
                out.push(d as char);
            }
        }
        out.push('Z');
    }

    /// The Go `RFC3339Nano` UTC representation.
    pub fn to_rfc3339(&self) -> String {
        let mut s = String::with_capacity(30);
        self.write_rfc3339(&mut s);
        s
    }

    /// `YYYY-MM-DD hh:mm:ss` in UTC (used by the CLI's tables).
    pub fn format_date_time(&self) -> String {
        let (date, secs_of_day) = self.civil();
        let mut s = String::with_capacity(19);
        write_date(&mut s, date);
        s.push(' ');
        write_clock(&mut s, secs_of_day);
        s
    }

    /// Parses an RFC 3339 timestamp the way Go's `time.Time.UnmarshalJSON` does:
    /// `YYYY-MM-DDThh:mm:ss[.f…](Z|±hh:mm)`. Returns `None` on any deviation. Never panics.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        Self::parse_rfc3339_bytes(s.as_bytes())
    }

    /// Byte-slice variant of [`Timestamp::parse_rfc3339`].
    pub fn parse_rfc3339_bytes(b: &[u8]) -> Option<Timestamp> {
        if b.len() < 20 {
            return None;
        }
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        let hour = digits(&b[11..13])?;
        let minute = digits(&b[14..16])?;
        let second = digits(&b[17..19])?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let mut rest = &b[19..];
        let mut nanos: u32 = 0;
        if rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_digit() {
            let mut n = 1;
            let mut scale = 100_000_000u32;
            while n < rest.len() && rest[n].is_ascii_digit() {
                if n <= 9 {
                    nanos += u32::from(rest[n] - b'0') * scale;
                    scale /= 10;
                }
                n += 1;
            }
            rest = &rest[n..];
        }
        let offset_seconds: i64 = match rest {
            [b'Z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let oh = digits(&[*h1, *h2])?;
                let om = digits(&[*m1, *m2])?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = i64::from(oh * 3600 + om * 60);
                if *sign == b'-' {
                    -off
                } else {
                    off
                }
            }
            _ => return None,
        };
        let days = days_from_civil(i64::from(year), month, day);
        let seconds =
            days * SECONDS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
        Some(Timestamp { seconds, nanos })
    }

    /// (year, month, day) and seconds within the day, in UTC.
    fn civil(&self) -> ((i64, u32, u32), u32) {
        let days = self.seconds.div_euclid(SECONDS_PER_DAY);
        let secs_of_day = self.seconds.rem_euclid(SECONDS_PER_DAY) as u32;
        (civil_from_days(days), secs_of_day)
    }
}

/// Parses a run of ASCII digits (at most 4 are ever passed).
fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(i64::from(year)) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]; valid for every `i64` that `seconds / 86400` can yield.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Year like Go: at least four digits, `-` for negative years.
fn write_date(out: &mut String, (year, month, day): (i64, u32, u32)) {
    if year < 0 {
        let _ = write!(out, "-{:04}", year.unsigned_abs());
    } else {
        let _ = write!(out, "{year:04}");
    }
    let _ = write!(out, "-{month:02}-{day:02}");
}

fn write_clock(out: &mut String, secs_of_day: u32) {
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn format_vectors() {
        assert_eq!(ts(0, 0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            ts(1_705_055_960, 886_816_000).to_rfc3339(),
            "2024-01-12T10:39:20.886816Z"
        );
        assert_eq!(
            ts(1_735_787_045, 123_456_789).to_rfc3339(),
            "2025-01-02T03:04:05.123456789Z"
        );
        assert_eq!(
            ts(1_735_787_045, 100_000_000).to_rfc3339(),
            "2025-01-02T03:04:05.1Z"
        );
        assert_eq!(
            ts(1_735_787_045, 1).to_rfc3339(),
            "2025-01-02T03:04:05.000000001Z"
        );
        assert_eq!(ts(1_257_894_000, 0).to_rfc3339(), "2009-11-10T23:00:00Z");
        assert_eq!(Timestamp::GO_ZERO.to_rfc3339(), GO_ZERO_TIME);
        assert_eq!(ts(-1, 0).to_rfc3339(), "1969-12-31T23:59:59Z");
        assert_eq!(ts(951_782_400, 0).to_rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(ts(253_402_300_799, 0).to_rfc3339(), "9999-12-31T23:59:59Z");
        assert_eq!(ts(253_402_300_800, 0).to_rfc3339(), "10000-01-01T00:00:00Z");
        assert_eq!(ts(-62_135_596_801, 0).to_rfc3339(), "0000-12-31T23:59:59Z");
        assert_eq!(ts(-62_167_219_201, 0).to_rfc3339(), "-0001-12-31T23:59:59Z");
        let mut s = String::from("x=");
        ts(0, 500).write_rfc3339(&mut s);
        assert_eq!(s, "x=1970-01-01T00:00:00.0000005Z");
        // Extremes must not panic.
        let _ = ts(i64::MAX, 999_999_999).to_rfc3339();
        let _ = ts(i64::MIN, 0).to_rfc3339();
    }

    #[test]
    fn format_date_time_vectors() {
        assert_eq!(
            ts(1_705_055_960, 886_816_000).format_date_time(),
            "2024-01-12 10:39:20"
        );
        assert_eq!(Timestamp::GO_ZERO.format_date_time(), "0001-01-01 00:00:00");
    }

    #[test]
    fn parse_vectors() {
        let p = Timestamp::parse_rfc3339;
        assert_eq!(
            p("2024-01-12T10:39:20.886816Z"),
            Some(ts(1_705_055_960, 886_816_000))
        );
        assert_eq!(
            p("2025-01-02T03:04:05.123456789Z"),
            Some(ts(1_735_787_045, 123_456_789))
        );
        assert_eq!(p("2009-11-10T23:00:00Z"), Some(ts(1_257_894_000, 0)));
        assert_eq!(p(GO_ZERO_TIME), Some(Timestamp::GO_ZERO));
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(ts(0, 0)));
        assert_eq!(p("1970-01-01T00:00:00.5Z"), Some(ts(0, 500_000_000)));
        // More than nine fraction digits: the rest is ignored (Go behaviour).
        assert_eq!(
            p("1970-01-01T00:00:00.1234567891Z"),
            Some(ts(0, 123_456_789))
        );
        // Offsets.
        assert_eq!(
            p("2024-01-12T12:39:20.886816+02:00"),
            Some(ts(1_705_055_960, 886_816_000))
        );
        assert_eq!(p("2024-01-12T05:09:20-05:30"), Some(ts(1_705_055_960, 0)));
        assert_eq!(p("1970-01-01T00:00:00+00:00"), Some(ts(0, 0)));
        assert_eq!(p("1970-01-01T00:00:00-00:00"), Some(ts(0, 0)));
        assert_eq!(p("2000-02-29T00:00:00Z"), Some(ts(951_782_400, 0)));
        assert_eq!(p("9999-12-31T23:59:59Z"), Some(ts(253_402_300_799, 0)));
        assert_eq!(p("0000-01-01T00:00:00+01:00"), Some(ts(-62_167_222_800, 0)));
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "2024-01-12",
            "2024-01-12T10:39:20",
            "2024-01-12t10:39:20Z",
            "2024-01-12T10:39:20z",
            "2024-01-12 10:39:20Z",
            "2024-1-12T10:39:20Z",
            "2024-01-12T1:39:20Z",
            "2024-13-12T10:39:20Z",
            "2024-00-12T10:39:20Z",
            "2023-02-29T10:39:20Z",
            "2024-04-31T10:39:20Z",
            "2024-01-00T10:39:20Z",
            "2024-01-12T24:00:00Z",
            "2024-01-12T10:60:20Z",
            "2024-01-12T10:39:60Z",
            "2024-01-12T10:39:20.Z",
            "2024-01-12T10:39:20,5Z",
            "2024-01-12T10:39:20.5",
            "2024-01-12T10:39:20+0200",
            "2024-01-12T10:39:20+24:00",
            "2024-01-12T10:39:20+02:60",
            "2024-01-12T10:39:20+2:00",
            "2024-01-12T10:39:20Z ",
            " 2024-01-12T10:39:20Z",
            "+024-01-12T10:39:20Z",
            "2024-01-12T10:39:20.12a4Z",
            "2024-01-12T10:39:20ZZ",
            "２０２４-01-12T10:39:20Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        for &(s, n) in &[
            (0i64, 0u32),
            (1, 1),
            (1_705_055_960, 886_816_000),
            (-62_135_596_800, 0),
            (253_402_300_799, 999_999_999),
            (-1, 999_999_999),
            (4_102_444_800, 10),
        ] {
            let t = ts(s, n);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }
        // Every day for a few centuries.
        let mut day = -80_000i64;
        while day < 80_000 {
            let t = ts(day * 86_400 + 3_723, 0);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
            day += 7;
        }
    }

    #[test]
    fn now_and_from_unix() {
        let now = Timestamp::now();
        assert!(now.seconds > 1_700_000_000);
        assert!(now.nanos < NANOS_PER_SECOND);
        assert_eq!(Timestamp::from_unix(5, -1), ts(4, 999_999_999));
        assert_eq!(Timestamp::from_unix(5, 2_500_000_000), ts(7, 500_000_000));
        assert!(Timestamp::GO_ZERO.is_go_zero());
        assert!(!ts(0, 0).is_go_zero());
    }
}
