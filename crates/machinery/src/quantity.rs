//! Kubernetes resource quantities (`k8s.io/apimachinery/pkg/api/resource`), parsed exactly.
//!
//! `k8s-openapi` keeps a `Quantity` as its string. The scheduler needs integers: milli-units for
//! cpu and whole units (bytes) for everything else, rounded up as upstream's `MilliValue` and
//! `Value` do, so that "100m" of memory still counts as one byte and never as zero.

/// A quantity string that is not in the Kubernetes form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity {0:?}: expected a decimal number with an optional suffix (m, k, Mi, G, e3, …)"
)]
pub struct QuantityError(pub String);

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, exactly as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// The digits without the decimal point.
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses upstream's grammar: `[+-]digits[.digits](suffix)` where the suffix is a binary SI
    /// suffix (Ki Mi Gi Ti Pi Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal
    /// exponent (`e3`, `E-2`).
    ///
    /// # Errors
    /// The string is not a quantity.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(s.to_owned());
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (num, suffix) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(err());
        }
        let mut mantissa: u128 = 0;
        // Digits beyond what fits are only ever trailing precision; upstream caps them too.
        let mut exp10: i32 = 0;
        for (i, b) in int.bytes().chain(frac.bytes()).enumerate() {
            let d = u128::from(b - b'0');
            match mantissa.checked_mul(10).and_then(|m| m.checked_add(d)) {
                Some(m) if m < 10u128.pow(36) => mantissa = m,
                _ if i < int.len() => exp10 += 1,
                _ => {}
            }
        }
        let frac_kept = i32::try_from(frac.len()).map_err(|_| err())?;
        exp10 -= frac_kept.min(36);
        let (e10, e2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
                let exp = &s[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                (exp.parse::<i32>().map_err(|_| err())?, 0)
            }
            _ => return Err(err()),
        };
        Ok(Self { negative, mantissa, exp10: exp10.saturating_add(e10), exp2: e2 })
    }

    /// The value in units of `10^-scale`, rounded up (away from zero for positive values, as
    /// upstream's `ScaledValue`), saturating at the bounds of `i64`.
    pub fn scaled(&self, scale: i32) -> i64 {
        let mut num = self.mantissa;
        let mut den: u128 = 1;
        let exp = self.exp10.saturating_add(scale);
        let saturate = |neg| if neg { i64::MIN } else { i64::MAX };
        if exp >= 0 {
            for _ in 0..exp {
                match num.checked_mul(10) {
                    Some(n) => num = n,
                    None if num == 0 => break,
                    None => return saturate(self.negative),
                }
            }
        } else {
            for _ in 0..exp.unsigned_abs() {
                match den.checked_mul(10) {
                    Some(d) => den = d,
                    // The value is below one unit of this scale.
                    None => return if num == 0 || self.negative { 0 } else { 1 },
                }
            }
        }
        match num.checked_shl(self.exp2).filter(|n| n >> self.exp2 == num) {
            Some(n) => num = n,
            None => return saturate(self.negative),
        }
        let (q, r) = (num / den, num % den);
        let abs = if r != 0 && !self.negative { q + 1 } else { q };
        match i64::try_from(abs) {
            Ok(v) if self.negative => -v,
            Ok(v) => v,
            Err(_) => saturate(self.negative),
        }
    }

    /// Whole units (bytes for memory), rounded up.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// Milli-units (millicores for cpu), rounded up.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }
}

/// The integer the scheduler keeps for `resource`: millicores for `cpu`, whole units otherwise.
///
/// # Errors
/// The string is not a quantity.
pub fn resource_value(resource: &str, q: &str) -> Result<i64, QuantityError> {
    let q = Quantity::parse(q)?;
    Ok(if resource == "cpu" { q.milli_value() } else { q.value() })
}

/// The quantity in milli-units, rounded up (`"100m"` → 100, `"1"` → 1000): cpu.
///
/// # Errors
/// The string is not a quantity.
pub fn milli(s: &str) -> Result<i64, QuantityError> {
    Ok(Quantity::parse(s)?.milli_value())
}

/// The quantity in whole units, rounded up (`"64Mi"` → 67108864): memory and the rest.
///
/// # Errors
/// The string is not a quantity.
pub fn value(s: &str) -> Result<i64, QuantityError> {
    Ok(Quantity::parse(s)?.value())
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(inputs: &[&str], expect: Expect) {
        let mut out = String::new();
        for s in inputs {
            match Quantity::parse(s) {
                Ok(q) => out += &format!("{s:<10} = {} | {}m\n", q.value(), q.milli_value()),
                Err(_) => out += &format!("{s:<10} rejected\n"),
            }
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn cpu_forms() {
        check(
            &["100m", "1", "0.5", "1.5", "250m", "2000m", ".5", "5.", "1n", "1u", "0", "+3", "-1"],
            expect![[r#"
                100m       = 1 | 100m
                1          = 1 | 1000m
                0.5        = 1 | 500m
                1.5        = 2 | 1500m
                250m       = 1 | 250m
                2000m      = 2 | 2000m
                .5         = 1 | 500m
                5.         = 5 | 5000m
                1n         = 1 | 1m
                1u         = 1 | 1m
                0          = 0 | 0m
                +3         = 3 | 3000m
                -1         = -1 | -1000m
            "#]],
        );
    }

    #[test]
    fn memory_forms() {
        check(
            &[
                "64Mi",
                "1Gi",
                "1G",
                "1e3",
                "1E3",
                "1.5Gi",
                "128974848",
                "129e6",
                "123Mi",
                "1k",
                "1Ki",
                "1E",
                "1Ei",
                "100m",
                "2e-3",
                "1e+2",
                "7Ti",
                "1P",
            ],
            expect![[r#"
                64Mi       = 67108864 | 67108864000m
                1Gi        = 1073741824 | 1073741824000m
                1G         = 1000000000 | 1000000000000m
                1e3        = 1000 | 1000000m
                1E3        = 1000 | 1000000m
                1.5Gi      = 1610612736 | 1610612736000m
                128974848  = 128974848 | 128974848000m
                129e6      = 129000000 | 129000000000m
                123Mi      = 128974848 | 128974848000m
                1k         = 1000 | 1000000m
                1Ki        = 1024 | 1024000m
                1E         = 1000000000000000000 | 9223372036854775807m
                1Ei        = 1152921504606846976 | 9223372036854775807m
                100m       = 1 | 100m
                2e-3       = 1 | 2m
                1e+2       = 100 | 100000m
                7Ti        = 7696581394432 | 7696581394432000m
                1P         = 1000000000000000 | 1000000000000000000m
            "#]],
        );
    }

    #[test]
    fn rejects_what_upstream_rejects() {
        check(
            &["", "m", "1.2.3", "1mi", "1KB", "1e", "e3", "1 Gi", "abc", "1.5.Gi", "--1"],
            expect![[r#"
                           rejected
                m          rejected
                1.2.3      rejected
                1mi        rejected
                1KB        rejected
                1e         rejected
                e3         rejected
                1 Gi       rejected
                abc        rejected
                1.5.Gi     rejected
                --1        rejected
            "#]],
        );
        expect!["invalid quantity \"1KB\": expected a decimal number with an optional suffix (m, k, Mi, G, e3, …)"]
            .assert_eq(&Quantity::parse("1KB").unwrap_err().to_string());
    }

    #[test]
    fn huge_values_saturate() {
        check(
            &["1e100", "99999999999999999999999999999999999999999999", "1e-100"],
            expect![[r#"
                1e100      = 9223372036854775807 | 9223372036854775807m
                99999999999999999999999999999999999999999999 = 9223372036854775807 | 9223372036854775807m
                1e-100     = 1 | 1m
            "#]],
        );
    }
}
