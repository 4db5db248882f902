//! Go's `time.ParseDuration` syntax: decimal numbers with units `ns`, `us`/`µs`, `ms`, `s`,
//! `m`, `h`, concatenated (`1h30m`, `1.5s`). A bare number other than `0` is rejected.

use std::time::Duration;

/// Parses a Go duration; negative durations are rejected (no config field allows them).
pub fn parse_go_duration(s: &str) -> Result<Duration, &'static str> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err("negative durations are not allowed");
    }
    if rest.is_empty() {
        return Err("empty duration");
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err("expected a number");
        }
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit"),
            _ => return Err("unknown unit"),
        };
        let (int, frac) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err("expected a number");
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| "number too large")?
        };
        let mut value = int.checked_mul(unit_ns).ok_or("duration too large")?;
        let mut scale = unit_ns;
        for d in frac.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value += u128::from(d - b'0') * scale;
        }
        total_ns = total_ns.checked_add(value).ok_or("duration too large")?;
    }
    if total_ns > u128::from(u64::MAX) {
        return Err("duration too large");
    }
    Ok(Duration::from_nanos(total_ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("0", 0),
            ("0s", 0),
            ("30s", 30_000_000_000),
            ("5m0s", 300_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5s", 1_500_000_000),
            ("100ms", 100_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("7ns", 7),
            (".5s", 500_000_000),
        ];
        for (s, ns) in ok {
            assert_eq!(parse_go_duration(s), Ok(Duration::from_nanos(ns)), "{s}");
        }
        for bad in ["", "5", "10x", "s", "-5s", "1..5s", "."] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
