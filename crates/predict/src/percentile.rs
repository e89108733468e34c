//! Crane's `percentile` prediction algorithm (gocrane/crane `pkg/prediction/percentile`), as
//! an EffectiveHorizontalPodAutoscaler with `predictionAlgorithm.algorithmType: percentile`
//! uses it: every sample of the metric's history goes into a decaying histogram (the Vertical
//! Pod Autoscaler's, `k8s.io/autoscaler/vertical-pod-autoscaler/pkg/recommender/util`), each
//! weighted by its own value (`max(minSampleWeight, value)`, `aggregate_signal.go`) and by
//! `2^((t - reference) / halfLife)`; the estimate is the histogram's `percentile` × (1 +
//! `marginFraction`) (`estimator.go`), and the predicted series is that one value over the
//! whole window (`prediction.go`, `generateSamplesFromWindow`). There is no period: it is a
//! level the load stays under, the VPA's way of sizing.
//!
//! Defaults are Crane's (`config.go`): a linear histogram up to 100 in buckets of 0.1
//! (epsilon 1e-10), half-life 24 h, minSampleWeight 1e-5, marginFraction 0.15, percentile
//! 0.95. Values are in the metric's unit (cores for CPU, as Crane reads them from its metric
//! provider); above `maxValue` they land in the last bucket, as in the VPA.

/// The histogram's buckets (the VPA's `HistogramOptions`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Buckets {
    /// `NewLinearHistogramOptions(maxValue, bucketSize, epsilon)`.
    Linear { max_value: f64, bucket_size: f64, epsilon: f64 },
    /// `NewExponentialHistogramOptions(maxValue, firstBucketSize, ratio, epsilon)`: bucket
    /// `n` starts at `first * (ratio^n - 1) / (ratio - 1)`.
    Exponential { max_value: f64, first_bucket_size: f64, ratio: f64, epsilon: f64 },
}

/// Why a configuration is refused (the VPA's constructors' errors).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

/// `kinetic-predict` has no dependencies: `Error` by hand.
impl std::error::Error for ConfigError {}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Buckets {
    /// Crane's default: linear to 100 in buckets of 0.1, epsilon 1e-10.
    pub const DEFAULT: Buckets =
        Buckets::Linear { max_value: 100.0, bucket_size: 0.1, epsilon: 1e-10 };

    /// Checks the parameters as the VPA's constructors do.
    ///
    /// # Errors
    /// A non-positive size or maximum, or a ratio not above 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Buckets::Linear { max_value, bucket_size, .. } => {
                if !(max_value > 0.0 && bucket_size > 0.0) {
                    return Err(ConfigError(
                        "maxValue and bucketSize must both be positive".into(),
                    ));
                }
            }
            Buckets::Exponential { max_value, first_bucket_size, ratio, .. } => {
                if !(max_value > 0.0 && first_bucket_size > 0.0 && ratio > 1.0) {
                    return Err(ConfigError(
                        "maxValue, firstBucketSize must be positive and ratio must be > 1".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn epsilon(&self) -> f64 {
        match *self {
            Buckets::Linear { epsilon, .. } | Buckets::Exponential { epsilon, .. } => epsilon,
        }
    }

    /// `NumBuckets`.
    pub fn num_buckets(&self) -> usize {
        match *self {
            Buckets::Linear { max_value, bucket_size, .. } => {
                (max_value / bucket_size).ceil() as usize + 1
            }
            Buckets::Exponential { max_value, first_bucket_size, ratio, .. } => {
                ((max_value * (ratio - 1.0) / first_bucket_size + 1.0).ln() / ratio.ln()).ceil()
                    as usize
                    + 1
            }
        }
    }

    /// `FindBucket`: the bucket a value falls in, the last one for values past the maximum.
    pub fn find_bucket(&self, value: f64) -> usize {
        let last = self.num_buckets() - 1;
        let b = match *self {
            Buckets::Linear { bucket_size, .. } => (value / bucket_size).floor(),
            Buckets::Exponential { first_bucket_size, ratio, .. } => {
                if value < first_bucket_size {
                    0.0
                } else {
                    ((value * (ratio - 1.0) / first_bucket_size + 1.0).ln() / ratio.ln()).floor()
                }
            }
        };
        if b.is_nan() || b < 0.0 { 0 } else { (b as usize).min(last) }
    }

    /// `GetBucketStart`.
    pub fn bucket_start(&self, bucket: usize) -> f64 {
        match *self {
            Buckets::Linear { bucket_size, .. } => bucket as f64 * bucket_size,
            Buckets::Exponential { first_bucket_size, ratio, .. } => {
                if bucket == 0 {
                    0.0
                } else {
                    first_bucket_size * (ratio.powi(bucket as i32) - 1.0) / (ratio - 1.0)
                }
            }
        }
    }
}

/// Crane's percentile parameters (`spec.prediction.predictionAlgorithm.percentile`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub buckets: Buckets,
    /// `histogram.halfLife`, seconds.
    pub half_life_secs: f64,
    pub min_sample_weight: f64,
    pub margin_fraction: f64,
    pub percentile: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            buckets: Buckets::DEFAULT,
            half_life_secs: 86_400.0,
            min_sample_weight: 1e-5,
            margin_fraction: 0.15,
            percentile: 0.95,
        }
    }
}

/// The VPA's decaying histogram: weights grow by 2 per half-life after a reference time, so
/// newer samples count more; a percentile is a ratio of weights, so the reference cancels.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Buckets,
    weights: Vec<f64>,
    total: f64,
    min_bucket: usize,
    max_bucket: usize,
    half_life: f64,
    reference: Option<f64>,
}

/// The VPA's `maxDecayExponent`: past it the weights are renormalised.
const MAX_DECAY_EXPONENT: f64 = 100.0;

impl Histogram {
    pub fn new(buckets: Buckets, half_life_secs: f64) -> Self {
        let n = buckets.num_buckets();
        Histogram {
            buckets,
            weights: vec![0.0; n],
            total: 0.0,
            min_bucket: n - 1,
            max_bucket: 0,
            half_life: if half_life_secs > 0.0 { half_life_secs } else { 86_400.0 },
            reference: None,
        }
    }

    /// `decayFactor`: shifts the reference (a whole number of half-lives, weights rescaled)
    /// when the exponent would pass [`MAX_DECAY_EXPONENT`].
    fn decay_factor(&mut self, t: f64) -> f64 {
        let reference = *self.reference.get_or_insert(0.0);
        if t > reference + self.half_life * MAX_DECAY_EXPONENT {
            let new_ref = (t / self.half_life).round() * self.half_life;
            let exponent = ((reference - new_ref) / self.half_life).round();
            let scale = 2f64.powf(exponent);
            for w in &mut self.weights {
                *w *= scale;
            }
            self.total *= scale;
            self.reference = Some(new_ref);
            self.update_bounds();
        }
        2f64.powf((t - self.reference.unwrap_or(0.0)) / self.half_life)
    }

    fn update_bounds(&mut self) {
        let eps = self.buckets.epsilon();
        let n = self.weights.len();
        self.min_bucket = (0..n).find(|b| self.weights[*b] >= eps).unwrap_or(n - 1);
        self.max_bucket = (0..n).rev().find(|b| self.weights[*b] >= eps).unwrap_or(0);
    }

    /// `AddSample(value, weight, time)` of the decaying histogram; `t` in seconds.
    pub fn add(&mut self, value: f64, weight: f64, t: f64) {
        if !(weight >= 0.0 && value.is_finite() && t.is_finite()) {
            return;
        }
        let w = weight * self.decay_factor(t);
        let b = self.buckets.find_bucket(value);
        self.weights[b] += w;
        self.total += w;
        let eps = self.buckets.epsilon();
        if b < self.min_bucket && self.weights[b] >= eps {
            self.min_bucket = b;
        }
        if b > self.max_bucket && self.weights[b] >= eps {
            self.max_bucket = b;
        }
    }

    /// `IsEmpty`.
    pub fn is_empty(&self) -> bool {
        self.weights[self.min_bucket] < self.buckets.epsilon()
    }

    /// `Percentile`: the end of the first bucket at which the cumulative weight reaches
    /// `p` of the total (the start of the last bucket, which has no end); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let threshold = p * self.total;
        let mut sum = 0.0;
        let mut bucket = self.min_bucket;
        while bucket < self.max_bucket {
            sum += self.weights[bucket];
            if sum >= threshold {
                break;
            }
            bucket += 1;
        }
        if bucket < self.buckets.num_buckets() - 1 {
            self.buckets.bucket_start(bucket + 1)
        } else {
            self.buckets.bucket_start(bucket)
        }
    }
}

/// Crane's estimate from `samples` (time in seconds, value): the histogram's percentile ×
/// (1 + margin). `None` without a sample.
pub fn estimate(samples: &[(f64, f64)], config: &Config) -> Option<f64> {
    let mut h = Histogram::new(config.buckets, config.half_life_secs);
    for &(t, v) in samples {
        h.add(v, config.min_sample_weight.max(v), t);
    }
    (!h.is_empty()).then(|| h.percentile(config.percentile) * (1.0 + config.margin_fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_vpa_options() {
        let lin = Buckets::DEFAULT;
        assert_eq!(lin.num_buckets(), 1001);
        // (value, bucket, start of the bucket)
        for (v, b, start) in
            [(0.0, 0, 0.0), (0.05, 0, 0.0), (0.25, 2, 0.2), (99.95, 999, 99.9), (1e6, 1000, 100.0)]
        {
            assert_eq!(lin.find_bucket(v), b, "{v}");
            assert!((lin.bucket_start(b) - start).abs() < 1e-9, "{v}");
        }
        // The VPA's CPU histogram: first bucket 0.01, +5 % per bucket, to 1000 cores.
        let exp = Buckets::Exponential {
            max_value: 1000.0,
            first_bucket_size: 0.01,
            ratio: 1.05,
            epsilon: 1e-10,
        };
        assert_eq!(exp.num_buckets(), 176);
        for (v, b) in [(0.005, 0), (0.011, 1), (0.02, 1), (0.021, 2), (5000.0, 175)] {
            assert_eq!(exp.find_bucket(v), b, "{v}");
        }
        assert!((exp.bucket_start(2) - 0.0205).abs() < 1e-12);
        assert!(
            Buckets::Linear { max_value: 0.0, bucket_size: 1.0, epsilon: 0.0 }.validate().is_err()
        );
        assert!(
            Buckets::Exponential {
                max_value: 1.0,
                first_bucket_size: 1.0,
                ratio: 1.0,
                epsilon: 0.0
            }
            .validate()
            .is_err()
        );
    }

    /// Samples as (value, weight) at one time, the percentile, the expected value.
    type Case<'a> = (&'a [(f64, f64)], f64, f64);

    #[test]
    fn the_percentile_is_the_end_of_the_bucket_reaching_it() {
        let cases: [Case<'_>; 5] = [
            (&[], 0.95, 0.0),
            (&[(1.05, 1.0)], 0.5, 1.1),
            (&[(1.05, 1.0), (2.05, 1.0), (3.05, 1.0), (4.05, 1.0)], 0.5, 2.1),
            (&[(1.05, 1.0), (2.05, 1.0), (3.05, 1.0), (4.05, 1.0)], 0.95, 4.1),
            // Past the maximum: the start of the last bucket.
            (&[(500.0, 1.0)], 0.95, 100.0),
        ];
        for (samples, p, want) in cases {
            let mut h = Histogram::new(Buckets::DEFAULT, 86_400.0);
            for (v, w) in samples {
                h.add(*v, *w, 0.0);
            }
            assert!((h.percentile(p) - want).abs() < 1e-9, "{samples:?} p{p}: {}", h.percentile(p));
        }
    }

    #[test]
    fn newer_samples_weigh_more_by_the_half_life() {
        // One sample of 1 at t = 0 and one of 3 a half-life later: weights 1 and 2, so the
        // median is in the bucket of 3 and the 0.3 quantile in the bucket of 1.
        let mut h = Histogram::new(Buckets::DEFAULT, 3600.0);
        h.add(1.05, 1.0, 0.0);
        h.add(3.05, 1.0, 3600.0);
        assert!((h.percentile(0.5) - 3.1).abs() < 1e-9);
        assert!((h.percentile(0.3) - 1.1).abs() < 1e-9);
        // Far past 100 half-lives the weights are renormalised and the answer is the same.
        let mut h = Histogram::new(Buckets::DEFAULT, 1.0);
        h.add(1.05, 1.0, 1000.0);
        h.add(3.05, 1.0, 1001.0);
        assert!((h.percentile(0.5) - 3.1).abs() < 1e-9);
        assert!((h.percentile(0.3) - 1.1).abs() < 1e-9);
    }

    #[test]
    fn crane_weighs_each_sample_by_its_value_and_adds_the_margin() {
        // Samples 0.05, 1.05, …, 9.05: by count the 0.9 quantile is in 8.05's bucket (8.1),
        // but each sample weighs its value, so 9.05 holds a fifth of the weight and the 0.9
        // quantile is in its bucket: 9.1, × 1.15.
        let s: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), f64::from(i) + 0.05)).collect();
        let c = Config { percentile: 0.9, ..Config::default() };
        let e = estimate(&s, &c).unwrap();
        assert!((e - 9.1 * 1.15).abs() < 1e-9, "{e}");
        assert_eq!(estimate(&[], &Config::default()), None);
    }
}
