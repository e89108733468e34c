//! Kubernetes resource quantities (`100m`, `1.5`, `64Mi`, `1G`, `1e3`), as `resource.Quantity`
//! parses them.
//!
//! Values are returned in milli-units (`milli`) or whole units rounded up (`value`), the two
//! forms the scheduler and the node agent need: cpu in millicores, memory in bytes. Upstream
//! rounds a fractional byte count up, and so do we.

/// A quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantity {0:?} must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError(pub String);

/// Parses `s` into a value scaled by `10^scale` (scale 3 = milli-units), rounding up.
fn parse_scaled(s: &str, scale: i32) -> Result<i128, QuantityError> {
    let err = || QuantityError(s.to_owned());
    let t = s.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(err());
    }
    // (base, exponent): value = num * base^exponent.
    let (base, exp): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        e if e.starts_with(['e', 'E']) => (10, e[1..].parse::<i32>().map_err(|_| err())?),
        _ => return Err(err()),
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| err())? };
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| err())?;
    // value * 10^scale = mantissa * 10^-frac_len * base^exp * 10^scale.
    let mut numer = mantissa;
    let mut denom: i128 = 1;
    let mul = |x: i128, b: i128, n: i32| -> Result<i128, QuantityError> {
        let mut x = x;
        for _ in 0..n {
            x = x.checked_mul(b).ok_or_else(err)?;
        }
        Ok(x)
    };
    let ten_exp = scale - frac_len + if base == 10 { exp } else { 0 };
    if ten_exp >= 0 {
        numer = mul(numer, 10, ten_exp)?;
    } else {
        denom = mul(denom, 10, -ten_exp)?;
    }
    if base == 2 {
        numer = mul(numer, 2, exp)?;
    }
    let v = if numer == 0 { 0 } else { (numer + denom - 1) / denom };
    Ok(if neg { -v } else { v })
}

/// The quantity in milli-units, rounded up (`"100m"` → 100, `"1"` → 1000).
///
/// # Errors
/// The string is not a quantity.
pub fn milli(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 3)?.try_into().map_err(|_| QuantityError(s.to_owned()))
}

/// The quantity in whole units, rounded up (`"64Mi"` → 67108864, `"100m"` → 1).
///
/// # Errors
/// The string is not a quantity.
pub fn value(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 0)?.try_into().map_err(|_| QuantityError(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(milli("100m"), Ok(100));
        assert_eq!(milli("1"), Ok(1000));
        assert_eq!(milli("0.5"), Ok(500));
        assert_eq!(milli("2.5"), Ok(2500));
        assert_eq!(milli("1e3"), Ok(1_000_000));
        assert_eq!(milli("1n"), Ok(1));
        assert_eq!(value("64Mi"), Ok(64 << 20));
        assert_eq!(value("1G"), Ok(1_000_000_000));
        assert_eq!(value("1.5Gi"), Ok(3 << 29));
        assert_eq!(value("128974848"), Ok(128_974_848));
        assert_eq!(value("129e6"), Ok(129_000_000));
        assert_eq!(value("100m"), Ok(1));
        assert_eq!(value("0"), Ok(0));
        assert_eq!(value("-1"), Ok(-1));
        assert!(value("").is_err());
        assert!(value("1Q").is_err());
        assert!(value("1e999").is_err());
        assert!(value("1.2.3").is_err());
    }
}
