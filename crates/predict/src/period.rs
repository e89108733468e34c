//! Period detection: candidates from a fixed list (hourly fractions of a day, a day, a week;
//! Crane tests only a day and a week) and from the autocorrelation's peaks, each scored by its
//! seasonal strength; accepted shortest first, each accepted period's seasonal component
//! removed before longer candidates are scored, so harmonics of a found period (two days for a
//! daily load) are not reported while a real second period (a week over a day) is.

/// A detected period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// In samples of the series given to [`detect`].
    pub samples: usize,
    /// Seasonal strength in 0..=1 (1: the period explains all variation around the trend).
    pub strength: f64,
}

/// The weakest seasonal strength accepted as a period.
pub const MIN_STRENGTH: f64 = 0.4;
/// The most points the search runs on; longer series are averaged into buckets first.
const MAX_POINTS: usize = 2400;

/// Centered moving average over `p` samples (the window shifted inward at the ends), via
/// prefix sums.
pub(crate) fn moving_average(x: &[f64], p: usize) -> Vec<f64> {
    let n = x.len();
    if p == 0 || p > n {
        let mean = x.iter().sum::<f64>() / n.max(1) as f64;
        return vec![mean; n];
    }
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + x[i];
    }
    (0..n)
        .map(|i| {
            let start = i.saturating_sub(p / 2).min(n - p);
            (prefix[start + p] - prefix[start]) / p as f64
        })
        .collect()
}

fn variance(x: &[f64]) -> f64 {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n
}

/// The mean detrended value at each phase of period `p`.
pub(crate) fn profile(r: &[f64], p: usize) -> Vec<f64> {
    let mut sum = vec![0.0; p];
    let mut count = vec![0usize; p];
    for (i, v) in r.iter().enumerate() {
        sum[i % p] += v;
        count[i % p] += 1;
    }
    sum.iter().zip(&count).map(|(s, c)| s / (*c).max(1) as f64).collect()
}

/// STL's seasonal strength `1 − Var(R)/Var(S+R)` of period `p` after a moving-average
/// detrend over one period, with `Var(R)` corrected for the profile's fit to noise
/// (a mean of `K` cycles leaves `1 − 1/K` of white noise), so pure noise scores about 0 and
/// two cycles are enough to tell a period from noise. 0 with fewer than two cycles.
pub fn strength(x: &[f64], p: usize) -> f64 {
    let n = x.len();
    if p < 2 || n < 2 * p {
        return 0.0;
    }
    let trend = moving_average(x, p);
    let r: Vec<f64> = x.iter().zip(&trend).map(|(a, b)| a - b).collect();
    let s = profile(&r, p);
    let resid: Vec<f64> = r.iter().enumerate().map(|(i, v)| v - s[i % p]).collect();
    let total = variance(&r);
    if total <= f64::EPSILON {
        return 0.0;
    }
    let cycles = n as f64 / p as f64;
    let noise_share = 1.0 - 1.0 / cycles;
    (1.0 - variance(&resid) / (total * noise_share)).clamp(0.0, 1.0)
}

/// Autocorrelation of `x` at lags `0..=max_lag`.
fn acf(x: &[f64], max_lag: usize) -> Vec<f64> {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n.max(1) as f64;
    let d: Vec<f64> = x.iter().map(|v| v - mean).collect();
    let denom: f64 = d.iter().map(|v| v * v).sum();
    (0..=max_lag.min(n.saturating_sub(1)))
        .map(|lag| {
            if denom <= f64::EPSILON {
                return 0.0;
            }
            d[..n - lag].iter().zip(&d[lag..]).map(|(a, b)| a * b).sum::<f64>() / denom
        })
        .collect()
}

/// Averages `x` into buckets of `factor` samples.
fn bucket(x: &[f64], factor: usize) -> Vec<f64> {
    x.chunks(factor).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect()
}

/// The periods of a cleaned series sampled every `step_secs`, strongest evidence first in
/// the order found (shortest first). Empty when nothing periodic is found or the history holds
/// fewer than two cycles of every candidate.
pub fn detect(x: &[f64], step_secs: u64) -> Vec<Period> {
    if x.len() < 8 || step_secs == 0 {
        return vec![];
    }
    let factor = x.len().div_ceil(MAX_POINTS).max(1);
    let xb = bucket(x, factor);
    let n = xb.len();
    let bucket_secs = step_secs * factor as u64;
    let mut candidates: Vec<usize> =
        [3600u64, 7200, 10800, 14400, 21600, 28800, 43200, 86400, 604800]
            .iter()
            .map(|s| ((*s as f64) / bucket_secs as f64).round() as usize)
            .filter(|p| *p >= 2 && 2 * *p <= n)
            .collect();
    // The autocorrelation's local maxima, detrended over a quarter of the history so a level
    // shift does not lift every lag.
    let long = moving_average(&xb, (n / 4).max(2));
    let d: Vec<f64> = xb.iter().zip(&long).map(|(a, b)| a - b).collect();
    let r = acf(&d, n / 2);
    let mut peaks: Vec<(usize, f64)> = (3..r.len().saturating_sub(2))
        .filter(|&l| r[l] > 0.1 && (l - 2..=l + 2).all(|m| r[m] <= r[l]))
        .map(|l| (l, r[l]))
        .collect();
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
    candidates.extend(peaks.iter().take(5).map(|(l, _)| *l));
    candidates.sort_unstable();
    // One candidate per 3 % band (the fixed ones come first in a band when they tie).
    let mut uniq: Vec<usize> = Vec::new();
    for c in candidates {
        if uniq.last().is_none_or(|l| (c as f64) > (*l as f64) * 1.03) {
            uniq.push(c);
        }
    }
    let mut resid = xb.clone();
    let mut found = Vec::new();
    for p in uniq {
        // A multiple of a found period is only found when the residual has its own pattern.
        let s = strength(&resid, p);
        if s < MIN_STRENGTH {
            continue;
        }
        let trend = moving_average(&resid, p);
        let r: Vec<f64> = resid.iter().zip(&trend).map(|(a, b)| a - b).collect();
        let prof = profile(&r, p);
        for (i, v) in resid.iter_mut().enumerate() {
            *v -= prof[i % p];
        }
        found.push(Period { samples: p * factor, strength: s });
    }
    found
}
