//! The `crane` policy of `kinetic bench autoscale`: gocrane/crane's EffectiveHPA with its DSP
//! predictor (`docs/tutorials/timeseriees-forecasting-by-dsp.md`, `pkg/prediction/dsp`), see
//! the parent module's documentation for what is modelled.

use kinetic_autoscale::hpa;

use super::{Obs, Policy, REFERENCE_UTILISATION, REFRESH_MIN, STEP, cpu_outcome, hpa_step};

#[derive(Clone, Copy, Debug, Default)]
struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    fn mul(self, o: C64) -> C64 {
        C64 { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
}

/// In-place radix-2 FFT (`a.len()` a power of two); `inverse` without the 1/n.
fn fft2(a: &mut [C64], inverse: bool) {
    let n = a.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            a.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = std::f64::consts::TAU / len as f64 * if inverse { 1.0 } else { -1.0 };
        let w = C64 { re: ang.cos(), im: ang.sin() };
        for start in (0..n).step_by(len) {
            let mut wk = C64 { re: 1.0, im: 0.0 };
            for k in 0..len / 2 {
                let u = a[start + k];
                let v = a[start + k + len / 2].mul(wk);
                a[start + k] = C64 { re: u.re + v.re, im: u.im + v.im };
                a[start + k + len / 2] = C64 { re: u.re - v.re, im: u.im - v.im };
                wk = wk.mul(w);
            }
        }
        len <<= 1;
    }
}

/// The DFT of a real series of any length (Bluestein's chirp-z over radix-2 FFTs).
fn dft(x: &[f64]) -> Vec<C64> {
    let n = x.len();
    if n == 0 {
        return vec![];
    }
    let m = (2 * n - 1).next_power_of_two();
    let chirp: Vec<C64> = (0..n)
        .map(|k| {
            // k² mod 2n keeps the angle small and exact.
            let kk = (k as u128 * k as u128 % (2 * n as u128)) as f64;
            let ang = std::f64::consts::PI * kk / n as f64;
            C64 { re: ang.cos(), im: -ang.sin() }
        })
        .collect();
    let mut a = vec![C64::default(); m];
    for k in 0..n {
        a[k] = C64 { re: x[k], im: 0.0 }.mul(chirp[k]);
    }
    let mut b = vec![C64::default(); m];
    b[0] = C64 { re: chirp[0].re, im: -chirp[0].im };
    for k in 1..n {
        let c = C64 { re: chirp[k].re, im: -chirp[k].im };
        b[k] = c;
        b[m - k] = c;
    }
    fft2(&mut a, false);
    fft2(&mut b, false);
    for i in 0..m {
        a[i] = a[i].mul(b[i]);
    }
    fft2(&mut a, true);
    (0..n)
        .map(|k| {
            let v = C64 { re: a[k].re / m as f64, im: a[k].im / m as f64 };
            v.mul(chirp[k])
        })
        .collect()
}

/// Circular autocorrelation of the standardised series: IFFT(|FFT|²) / n.
fn circular_acf(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n as f64;
    let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    if sd <= f64::EPSILON {
        return vec![0.0; n];
    }
    let z: Vec<f64> = x.iter().map(|v| (v - mean) / sd).collect();
    let f = dft(&z);
    let power: Vec<f64> = f.iter().map(|c| c.re * c.re + c.im * c.im).collect();
    // The inverse DFT of a real even spectrum is the DFT of it, conjugated, / n.
    dft(&power).iter().map(|c| c.re / (n as f64 * n as f64)).collect()
}

/// Slope of the least-squares line through `y` at x = 0, 1, ….
fn slope(y: &[f64]) -> f64 {
    let n = y.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = y.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        num += (i as f64 - mx) * (v - my);
        den += (i as f64 - mx).powi(2);
    }
    if den > 0.0 { num / den } else { 0.0 }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Crane's periodicity test of period `t` samples on `x` (its last `k·t` samples).
fn crane_is_periodic(x: &[f64], t: usize, cycles: usize, seed: u64) -> bool {
    let n = t * cycles;
    if x.len() < n {
        return false;
    }
    let x = &x[x.len() - n..];
    let amp = |s: &[f64]| -> Vec<f64> {
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let d: Vec<f64> = s.iter().map(|v| v - mean).collect();
        dft(&d).iter().take(n / 2 + 1).map(|c| c.abs()).collect()
    };
    let spectrum = amp(x);
    let mut rng = XorShift(seed | 1);
    let mut maxima: Vec<f64> = (0..100)
        .map(|_| {
            let mut s = x.to_vec();
            for i in (1..s.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                s.swap(i, j);
            }
            amp(&s).iter().skip(1).copied().fold(0.0, f64::max)
        })
        .collect();
    let threshold = kinetic_predict::clean::quantile(&mut maxima, 0.99);
    // Bin k has period n / k samples; the candidate for t is k = cycles.
    let k = cycles;
    if spectrum.get(k).is_none_or(|a| *a <= threshold) {
        return false;
    }
    let acf = circular_acf(x);
    let w = (t / 10).max(3);
    if t < w || t + w >= acf.len() {
        return false;
    }
    slope(&acf[t - w..=t]) > 0.0 && slope(&acf[t..=t + w]) < 0.0
}

/// Crane's EffectiveHPA with the DSP predictor.
pub struct Crane {
    hpa: hpa::History,
    /// The minute the prediction starts at and one predicted period from it.
    prediction: Option<(usize, Vec<f64>)>,
    refreshed: Option<usize>,
    /// The period found by the last test, and when it ran (minutes).
    period: Option<usize>,
    tested: Option<usize>,
}

const CRANE_HISTORY: usize = 14 * 1440;
const CRANE_WINDOW_MIN: usize = 60;
const CRANE_MARGIN: f64 = 0.15;

impl Crane {
    pub fn new() -> Self {
        Self {
            hpa: hpa::History::default(),
            prediction: None,
            refreshed: None,
            period: None,
            tested: None,
        }
    }

    fn refresh(&mut self, history: &[f64]) {
        let m = history.len();
        let h = &history[m.saturating_sub(CRANE_HISTORY)..];
        // Outliers outside [P0.1, P99.9] take the previous sample's value.
        let mut sorted = h.to_vec();
        let lo = kinetic_predict::clean::quantile(&mut sorted, 0.001);
        let hi = kinetic_predict::clean::quantile(&mut sorted, 0.999);
        let mut x = h.to_vec();
        for i in 1..x.len() {
            if x[i] < lo || x[i] > hi {
                x[i] = x[i - 1];
            }
        }
        // The period test (100 shuffled FFTs) once a day; the prediction every hour.
        if self.tested.is_none_or(|t| m >= t + 1440) {
            self.period = [(1440usize, 3usize), (7 * 1440, 2)]
                .into_iter()
                .filter(|(t, k)| crane_is_periodic(&x, *t, *k, m as u64))
                .map(|(t, _)| t)
                .next_back();
            self.tested = Some(m);
        }
        self.prediction = self.period.filter(|t| x.len() >= 2 * t).map(|t| {
            let cycles = x.len() / t;
            let base = x.len() - cycles * t;
            let pred = (0..t)
                .map(|j| {
                    (0..cycles).map(|c| x[base + c * t + j]).fold(0.0, f64::max)
                        * (1.0 + CRANE_MARGIN)
                })
                .collect::<Vec<_>>();
            // Phase 0 of `pred` is minute `start` of the trace.
            let start = m - h.len() + base;
            (start, pred)
        });
    }

    /// The largest predicted load in [minute, minute + window].
    fn predicted(&self, minute: usize) -> Option<f64> {
        let (start, pred) = self.prediction.as_ref()?;
        let t = pred.len();
        (minute..=minute + CRANE_WINDOW_MIN)
            .map(|i| pred[(i - start) % t])
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    }
}

impl Default for Crane {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy for Crane {
    fn period(&self) -> u64 {
        hpa::SYNC_PERIOD.as_secs()
    }
    fn decide(&mut self, obs: &Obs<'_>) -> i32 {
        // The prediction is indexed by time; its history is what the metrics have covered.
        let minute = (obs.now / STEP) as usize;
        if self.refreshed.is_none_or(|r| minute >= r + REFRESH_MIN) {
            self.refresh(obs.history);
            self.refreshed = Some(minute);
        }
        let mut outcomes = vec![cpu_outcome(obs, REFERENCE_UTILISATION)];
        if let Some(p) = self.predicted(minute) {
            // The prediction metric as a Pods metric of the same per-pod target: HPA's usage
            // ratio with its tolerance.
            let current = obs.pods.len().max(1) as f64;
            let ratio = p / current;
            let replicas = if (ratio - 1.0).abs() <= hpa::TOLERANCE {
                current as i32
            } else {
                (p - 1e-9).ceil().max(1.0) as i32
            };
            outcomes.push(hpa::MetricOutcome::Valid {
                replicas,
                name: "pods metric crane_pod_cpu_usage".into(),
            });
        }
        hpa_step(&mut self.hpa, obs, &outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dft_matches_a_naive_one() {
        let x: Vec<f64> = (0..30).map(|i| ((i * 37) % 11) as f64).collect();
        let f = dft(&x);
        for (k, c) in f.iter().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (j, v) in x.iter().enumerate() {
                let a = -std::f64::consts::TAU * (k * j) as f64 / 30.0;
                re += v * a.cos();
                im += v * a.sin();
            }
            assert!((c.re - re).abs() < 1e-6 && (c.im - im).abs() < 1e-6, "bin {k}");
        }
    }

    #[test]
    fn crane_finds_a_daily_period() {
        let x: Vec<f64> = (0..3 * 1440)
            .map(|i| 50.0 + 30.0 * ((i % 1440) as f64 / 1440.0 * std::f64::consts::TAU).sin())
            .collect();
        assert!(crane_is_periodic(&x, 1440, 3, 7));
        let noise: Vec<f64> = (0..3 * 1440).map(|i| ((i * 7919) % 101) as f64).collect();
        assert!(!crane_is_periodic(&noise, 1440, 3, 7));
    }
}
