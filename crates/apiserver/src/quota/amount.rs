//! Exact quantity arithmetic for quota and limit ranges, as upstream's `resource.Quantity`
//! (`k8s.io/apimachinery/pkg/api/resource`): parse, add, subtract, compare, and the canonical
//! string (`String()`) that quota messages and `status.used` show.
//!
//! A value is `±mantissa × 10^exp` exactly (binary suffixes are folded in), rounded up to nano
//! precision on parse as upstream does, with the format its suffix gave (`Ki` → binary SI,
//! `k`/none → decimal SI, `e3` → decimal exponent). A sum keeps the format of its first
//! non-zero operand (upstream's `Add`). Arithmetic that would leave 128 bits saturates; no
//! quantity a pod or quota can carry comes near that.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity prints (upstream's `resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A quantity: `±mantissa × 10^exp`.
#[derive(Debug, Clone, Copy)]
pub struct Amount {
    negative: bool,
    mantissa: u128,
    exp: i32,
    pub format: Format,
}

/// Upstream's parse error text (`resource.ErrFormatWrong`).
pub const FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

impl Amount {
    pub const fn zero() -> Self {
        Self { negative: false, mantissa: 0, exp: 0, format: Format::DecimalSI }
    }

    pub fn from_int(v: i64) -> Self {
        Self {
            negative: v < 0,
            mantissa: u128::from(v.unsigned_abs()),
            exp: 0,
            format: Format::DecimalSI,
        }
    }

    /// Parses upstream's quantity grammar.
    ///
    /// # Errors
    /// The string is not a quantity ([`FORMAT_WRONG`]).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (num, suffix) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(FORMAT_WRONG);
        }
        let mut mantissa: u128 = 0;
        let mut exp: i32 = 0;
        for (i, b) in int.bytes().chain(frac.bytes()).enumerate() {
            let d = u128::from(b - b'0');
            match mantissa.checked_mul(10).and_then(|m| m.checked_add(d)) {
                Some(m) if m < 10u128.pow(30) => mantissa = m,
                // Digits past 30 are kept as a power of ten (integer part) or dropped.
                _ if i < int.len() => exp += 1,
                _ => {}
            }
        }
        let frac_digits = i32::try_from(frac.len().min(30)).map_err(|_| FORMAT_WRONG)?;
        exp -= frac_digits;
        let (e10, e2, format) = match suffix {
            "" => (0, 0, Format::DecimalSI),
            "n" => (-9, 0, Format::DecimalSI),
            "u" => (-6, 0, Format::DecimalSI),
            "m" => (-3, 0, Format::DecimalSI),
            "k" => (3, 0, Format::DecimalSI),
            "M" => (6, 0, Format::DecimalSI),
            "G" => (9, 0, Format::DecimalSI),
            "T" => (12, 0, Format::DecimalSI),
            "P" => (15, 0, Format::DecimalSI),
            "E" => (18, 0, Format::DecimalSI),
            "Ki" => (0, 10, Format::BinarySI),
            "Mi" => (0, 20, Format::BinarySI),
            "Gi" => (0, 30, Format::BinarySI),
            "Ti" => (0, 40, Format::BinarySI),
            "Pi" => (0, 50, Format::BinarySI),
            "Ei" => (0, 60, Format::BinarySI),
            x if x.len() > 1 && (x.starts_with('e') || x.starts_with('E')) => {
                let e = &x[1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FORMAT_WRONG);
                }
                (e.parse::<i32>().map_err(|_| FORMAT_WRONG)?, 0, Format::DecimalExponent)
            }
            _ => return Err(FORMAT_WRONG),
        };
        mantissa = mantissa.saturating_mul(1u128 << e2);
        let mut a = Self { negative, mantissa, exp: exp.saturating_add(e10), format };
        a.round_up_to_nano();
        a.normalize();
        Ok(a)
    }

    /// Upstream rounds a parsed quantity up (away from zero) to nano precision.
    fn round_up_to_nano(&mut self) {
        if self.exp >= -9 {
            return;
        }
        let shift = (-9 - self.exp).unsigned_abs();
        let den = 10u128.checked_pow(shift);
        let (q, r) = match den {
            Some(d) => (self.mantissa / d, self.mantissa % d),
            None => (0, self.mantissa),
        };
        self.mantissa = if r != 0 { q + 1 } else { q };
        self.exp = -9;
    }

    /// Strips trailing zeros of the mantissa into the exponent (the value is unchanged).
    fn normalize(&mut self) {
        if self.mantissa == 0 {
            self.negative = false;
            self.exp = 0;
            return;
        }
        while self.mantissa.is_multiple_of(10) {
            self.mantissa /= 10;
            self.exp += 1;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// -1, 0 or 1.
    pub fn sign(&self) -> i32 {
        if self.mantissa == 0 {
            0
        } else if self.negative {
            -1
        } else {
            1
        }
    }

    /// The mantissa scaled to `exp` (which must not exceed `self.exp`), saturating.
    fn scaled_to(&self, exp: i32) -> u128 {
        let shift = (self.exp - exp).unsigned_abs();
        10u128.checked_pow(shift).and_then(|p| self.mantissa.checked_mul(p)).unwrap_or(u128::MAX)
    }

    fn signed_parts(&self, exp: i32) -> (bool, u128) {
        (self.negative, self.scaled_to(exp))
    }

    /// `self + other`, in `self`'s format unless `self` is zero (upstream's `Add`).
    pub fn add(&self, other: &Self) -> Self {
        let format = if self.is_zero() { other.format } else { self.format };
        let exp = self.exp.min(other.exp);
        let (an, a) = self.signed_parts(exp);
        let (bn, b) = other.signed_parts(exp);
        let (negative, mantissa) = if an == bn {
            (an, a.saturating_add(b))
        } else if a >= b {
            (an, a - b)
        } else {
            (bn, b - a)
        };
        let mut r = Self { negative, mantissa, exp, format };
        r.normalize();
        r
    }

    /// `self - other` (upstream's `Sub`, which keeps formats as `Add` does).
    pub fn sub(&self, other: &Self) -> Self {
        let neg = Self { negative: !other.negative, ..*other };
        self.add(&neg)
    }

    /// The value in units of `10^-scale`, rounded up (away from zero), saturating at `i64`:
    /// `scaled(0)` is upstream's `Value`, `scaled(3)` its `MilliValue`.
    pub fn scaled(&self, scale: i32) -> i64 {
        let exp = self.exp + scale;
        let abs = if exp >= 0 {
            10u128.checked_pow(exp.unsigned_abs()).and_then(|p| self.mantissa.checked_mul(p))
        } else {
            let d = 10u128.checked_pow(exp.unsigned_abs());
            Some(match d {
                Some(d) => {
                    let (q, r) = (self.mantissa / d, self.mantissa % d);
                    if r != 0 { q + 1 } else { q }
                }
                None => u128::from(self.mantissa != 0),
            })
        };
        let v = abs.and_then(|a| i64::try_from(a).ok()).unwrap_or(i64::MAX);
        if self.negative { -v } else { v }
    }

    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// Whether the value is a whole number, and it (saturating).
    fn integer(&self) -> Option<u128> {
        if self.exp < 0 {
            return None;
        }
        Some(self.scaled_to(0))
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    /// Compares values (upstream's `Cmp`); formats do not matter.
    fn cmp(&self, other: &Self) -> Ordering {
        match self.sign().cmp(&other.sign()) {
            Ordering::Equal => {}
            o => return o,
        }
        let exp = self.exp.min(other.exp);
        let o = self.scaled_to(exp).cmp(&other.scaled_to(exp));
        if self.negative { o.reverse() } else { o }
    }
}

impl fmt::Display for Amount {
    /// Upstream's canonical form (`CanonicalizeBytes`): `0`; binary SI for whole numbers of at
    /// least 1024 in magnitude written with a binary suffix (`1536Mi`); otherwise decimal with
    /// the exponent a multiple of three (`1500m`, `2k`) or as `e<N>` for the exponent format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let sign = if self.negative { "-" } else { "" };
        let mut format = self.format;
        if format == Format::BinarySI {
            match self.integer() {
                Some(v) if v >= 1024 => {
                    let (mut v, mut k) = (v, 0usize);
                    while v.is_multiple_of(1024) && k < 6 {
                        v /= 1024;
                        k += 1;
                    }
                    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k];
                    return write!(f, "{sign}{v}{suffix}");
                }
                _ => format = Format::DecimalSI,
            }
        }
        let (mut m, mut e) = (self.mantissa, self.exp);
        let r = e.rem_euclid(3);
        m = m.saturating_mul(10u128.pow(r.unsigned_abs()));
        e -= r;
        let suffix = match (format, e) {
            (_, 0) => String::new(),
            (Format::DecimalSI, -9) => "n".into(),
            (Format::DecimalSI, -6) => "u".into(),
            (Format::DecimalSI, -3) => "m".into(),
            (Format::DecimalSI, 3) => "k".into(),
            (Format::DecimalSI, 6) => "M".into(),
            (Format::DecimalSI, 9) => "G".into(),
            (Format::DecimalSI, 12) => "T".into(),
            (Format::DecimalSI, 15) => "P".into(),
            (Format::DecimalSI, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        write!(f, "{sign}{m}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn q(s: &str) -> Amount {
        Amount::parse(s).unwrap()
    }

    fn check(cases: &[(&str, &str)], op: fn(Amount, Amount) -> Amount, expect: Expect) {
        let out: String =
            cases.iter().map(|(a, b)| format!("{a} , {b} => {}\n", op(q(a), q(b)))).collect();
        expect.assert_eq(&out);
    }

    /// Canonical forms upstream prints (`quantity_test.go` `TestQuantityString` and friends).
    #[test]
    fn canonical_strings_follow_upstream() {
        let out: String = [
            "0",
            "0m",
            "1000m",
            "0.5",
            "1.5",
            "100m",
            "1",
            "1k",
            "1.5k",
            "2000",
            "1024",
            "1Ki",
            "1536Mi",
            "1.5Gi",
            "1Gi",
            "512Mi",
            "1023",
            "100Ki",
            "0.5Ki",
            "1e3",
            "1E6",
            "12e2",
            "1G",
            "1500000000",
            "1n",
            "1.0000000001",
            "-100m",
            "-1Gi",
            "10Mi",
            "1025",
        ]
        .iter()
        .map(|s| format!("{s} -> {}\n", q(s)))
        .collect();
        expect![[r#"
            0 -> 0
            0m -> 0
            1000m -> 1
            0.5 -> 500m
            1.5 -> 1500m
            100m -> 100m
            1 -> 1
            1k -> 1k
            1.5k -> 1500
            2000 -> 2k
            1024 -> 1024
            1Ki -> 1Ki
            1536Mi -> 1536Mi
            1.5Gi -> 1536Mi
            1Gi -> 1Gi
            512Mi -> 512Mi
            1023 -> 1023
            100Ki -> 100Ki
            0.5Ki -> 512
            1e3 -> 1e3
            1E6 -> 1e6
            12e2 -> 1200
            1G -> 1G
            1500000000 -> 1500M
            1n -> 1n
            1.0000000001 -> 1000000001n
            -100m -> -100m
            -1Gi -> -1Gi
            10Mi -> 10Mi
            1025 -> 1025
        "#]]
        .assert_eq(&out);
    }

    #[test]
    fn sums_keep_the_first_nonzero_format() {
        check(
            &[
                ("0", "64Mi"),
                ("64Mi", "64Mi"),
                ("1", "500m"),
                ("500m", "500m"),
                ("1Gi", "512Mi"),
                ("100m", "1Gi"),
                ("2", "1"),
                ("0", "0"),
                ("1k", "24"),
            ],
            |a, b| a.add(&b),
            expect![[r#"
                0 , 64Mi => 64Mi
                64Mi , 64Mi => 128Mi
                1 , 500m => 1500m
                500m , 500m => 1
                1Gi , 512Mi => 1536Mi
                100m , 1Gi => 1073741824100m
                2 , 1 => 3
                0 , 0 => 0
                1k , 24 => 1024
            "#]],
        );
        check(
            &[("1", "500m"), ("128Mi", "64Mi"), ("1", "2"), ("64Mi", "64Mi")],
            |a, b| a.sub(&b),
            expect![[r#"
                1 , 500m => 500m
                128Mi , 64Mi => 64Mi
                1 , 2 => -1
                64Mi , 64Mi => 0
            "#]],
        );
    }

    #[test]
    fn comparison_is_by_value() {
        assert!(q("1") == q("1000m"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("-1") < q("0"));
        assert!(q("100m") < q("0.2"));
        assert!(q("1Ki") == q("1024"));
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("64Mi").value(), 67_108_864);
        assert!(Amount::parse("1KB").is_err());
        assert!(Amount::parse("").is_err());
    }
}
