//! Go's `time.ParseDuration` and `time.Duration.String`, because Knative's ConfigMap keys and
//! annotations (`stable-window: "60s"`, `scale-down-delay: "1m30s"`) are Go durations and its
//! error messages print them the Go way.

use std::fmt::Write as _;

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 60 * NS_PER_M;

/// A signed duration in nanoseconds, as Go's `time.Duration` (negative values are kept so that
/// validation can say "cannot be negative" the way Knative does).
pub type GoDuration = i128;

/// Parses a Go duration string (`"60s"`, `"1m30s"`, `"1.5h"`, `"-2s"`, `"0"`): a sign, then one
/// or more decimal numbers each with a unit among `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`.
/// `None` where Go's `time.ParseDuration` returns an error.
pub fn parse(s: &str) -> Option<GoDuration> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => NS_PER_US,
            "ms" => NS_PER_MS,
            "s" => NS_PER_S,
            "m" => NS_PER_M,
            "h" => NS_PER_H,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        let mut value = int.checked_mul(unit)?;
        // The fraction, scaled to the unit and truncated to whole nanoseconds as Go does.
        let mut scale = unit;
        for digit in frac_part.bytes().take(30) {
            scale /= 10;
            value += u128::from(digit - b'0') * scale;
            if scale == 0 {
                break;
            }
        }
        total = total.checked_add(value)?;
    }
    // Go's Duration is an int64 of nanoseconds.
    if total > i64::MAX as u128 + u128::from(neg) {
        return None;
    }
    let total = i128::try_from(total).ok()?;
    Some(if neg { -total } else { total })
}

/// Formats like Go's `time.Duration.String`: `0s`, `500ms`, `1.5µs`, `6s`, `1m0s`, `1h0m0s`.
pub fn format(d: GoDuration) -> String {
    if d == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if d < 0 {
        out.push('-');
    }
    let u = d.unsigned_abs();
    if u < NS_PER_S {
        let (div, unit) = if u < NS_PER_US {
            (1, "ns")
        } else if u < NS_PER_MS {
            (NS_PER_US, "µs")
        } else {
            (NS_PER_MS, "ms")
        };
        push_decimal(&mut out, u, div);
        out.push_str(unit);
        return out;
    }
    let hours = u / NS_PER_H;
    let minutes = (u % NS_PER_H) / NS_PER_M;
    let secs = u % NS_PER_M;
    if hours > 0 {
        let _ = write!(out, "{hours}h{minutes}m");
    } else if minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    push_decimal(&mut out, secs, NS_PER_S);
    out.push('s');
    out
}

/// Writes `value / div` with the remainder as decimals, trailing zeros dropped.
fn push_decimal(out: &mut String, value: u128, div: u128) {
    let _ = write!(out, "{}", value / div);
    let rem = value % div;
    if rem != 0 {
        let width = div.ilog10() as usize;
        let digits = format!("{rem:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Converts a non-negative Go duration to a `std` one.
pub fn to_std(d: GoDuration) -> std::time::Duration {
    let ns = u64::try_from(d.max(0)).unwrap_or(u64::MAX);
    std::time::Duration::from_nanos(ns)
}

/// Converts a `std` duration to a Go one (saturating at Go's maximum).
pub fn from_std(d: std::time::Duration) -> GoDuration {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX).min(i128::from(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        let s = |n: i128| n * NS_PER_S as i128;
        assert_eq!(parse("60s"), Some(s(60)));
        assert_eq!(parse("1m30s"), Some(s(90)));
        assert_eq!(parse("1.5h"), Some(s(5400)));
        assert_eq!(parse("-2s"), Some(-s(2)));
        assert_eq!(parse("+2s"), Some(s(2)));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("500ms"), Some(500 * NS_PER_MS as i128));
        assert_eq!(parse("1.5µs"), Some(1500));
        assert_eq!(parse(".5s"), Some(s(1) / 2));
        assert_eq!(parse("1s500ms"), Some(1_500 * NS_PER_MS as i128));
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in ["", "60", "s", "1x", "-", "1.s5", "..1s", "1 s", "10000000000h"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        let s = |n: i128| n * NS_PER_S as i128;
        assert_eq!(format(0), "0s");
        assert_eq!(format(s(6)), "6s");
        assert_eq!(format(s(60)), "1m0s");
        assert_eq!(format(s(3600)), "1h0m0s");
        assert_eq!(format(s(5)), "5s");
        assert_eq!(format(-s(1)), "-1s");
        assert_eq!(format(1_500 * NS_PER_MS as i128), "1.5s");
        assert_eq!(format(500 * NS_PER_MS as i128), "500ms");
        assert_eq!(format(1500), "1.5µs");
        assert_eq!(format(s(3661) + 1), "1h1m1.000000001s");
    }
}
