//! The short-horizon forecast a predictive autoscaler scales on between refits: the level of
//! the last few samples (less the seasonal profile over them) plus the profile's highest value
//! over the horizon, plus a margin that is the `q` quantile of this very forecaster's errors on
//! the recent history, **per horizon** (a forecast one step ahead needs less headroom than one
//! four steps ahead: the quantile of errors per lead time, as AHPA's and Crane's forecasters
//! are scored per horizon).
//!
//! [`Nowcast::select`] calibrates several forecasters of this family on the same history and
//! keeps the cheapest: the one whose forecasts, each covering `q` of the history at every
//! horizon by construction, have the lowest mean. The family: with the seasonal profile or
//! flat (a flat profile is "the reactive level plus a margin": on a spiky or aperiodic series
//! it wins when the seasonal forecaster's own errors are larger), the level over 1, 3 or 6
//! samples, and an additive margin (errors `actual − forecast`) or a relative one
//! (`actual / forecast`, for series whose noise grows with the load). Choosing the estimator
//! by its fit on the history is what Crane's DSP predictor does between its `maxValue` and
//! `fft` estimators; nothing here looks at the future.

use crate::forecast::Model;

/// How the margin over the point forecast is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Margin {
    /// forecast = point + the quantile of `actual − point`.
    Additive,
    /// forecast = point × the quantile of `actual / point`.
    Relative,
}

/// A calibrated short-horizon forecaster (see the module's documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Nowcast {
    /// The period of the profile, `None` when flat.
    pub period: Option<usize>,
    seasonal: Vec<f64>,
    /// Samples averaged for the level.
    pub k: usize,
    /// The longest horizon calibrated, in samples after the first forecast one.
    pub lead: usize,
    /// How the margin applies.
    pub kind: Margin,
    /// Per horizon `h` (`0..=lead`), the margin for the maximum over `now..=now + h`.
    pub margins: Vec<f64>,
    /// The smallest point a relative margin multiplies (a load near zero would make the
    /// ratios unbounded).
    floor: f64,
    /// The mean forecast over the calibration points, summed over the horizons: what
    /// [`Nowcast::select`] compares.
    pub cost: f64,
}

/// The levels (samples averaged) [`Nowcast::select`] tries.
pub const LEVELS: [usize; 3] = [1, 3, 6];

impl Nowcast {
    /// Calibrates one forecaster on `x` (cleaned, the history `model` was fitted on, same
    /// numbering), on every point of it.
    pub fn calibrate(
        x: &[f64],
        model: Option<&Model>,
        lead: usize,
        k: usize,
        q: f64,
        kind: Margin,
    ) -> Self {
        Self::calibrate_from(x, 0, model, lead, k, q, kind)
    }

    /// As [`Nowcast::calibrate`], with the errors counted from sample `from` on (the level
    /// before it still reads earlier samples).
    fn calibrate_from(
        x: &[f64],
        from: usize,
        model: Option<&Model>,
        lead: usize,
        k: usize,
        q: f64,
        kind: Margin,
    ) -> Self {
        let (period, seasonal) = match model {
            Some(m) => (Some(m.period), m.seasonal.clone()),
            None => (None, vec![0.0]),
        };
        let top = x.iter().copied().fold(0.0, f64::max);
        let floor = (top * 1e-3).max(1e-9);
        let mut now = Nowcast {
            period,
            seasonal,
            k: k.max(1),
            lead,
            kind,
            margins: vec![0.0; lead + 1],
            floor,
            cost: 0.0,
        };
        let k = now.k;
        let points: Vec<usize> = (from.max(k)..x.len().saturating_sub(lead)).collect();
        // errors[h][i], and the sum of the points per horizon.
        let mut errors: Vec<Vec<f64>> = vec![Vec::with_capacity(points.len()); lead + 1];
        let mut sums = vec![0.0; lead + 1];
        for &t in &points {
            let base = now.base(&x[t - k..t], t);
            let (mut actual, mut season) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            for h in 0..=lead {
                actual = actual.max(x[t + h]);
                season = season.max(now.s(t + h));
                let point = base + season;
                let e = match kind {
                    Margin::Additive => actual - point,
                    Margin::Relative => actual / point.max(floor),
                };
                errors[h].push(e);
                sums[h] += match kind {
                    Margin::Additive => point,
                    Margin::Relative => point.max(floor),
                };
            }
        }
        let n = points.len().max(1) as f64;
        for (h, e) in errors.iter_mut().enumerate() {
            let m = select_quantile(e, q);
            let (margin, mean) = match kind {
                Margin::Additive => (m.max(0.0), sums[h] / n + m.max(0.0)),
                Margin::Relative => (m.max(1.0), sums[h] / n * m.max(1.0)),
            };
            now.margins[h] = margin;
            now.cost += mean;
        }
        now
    }

    /// Calibrates every forecaster of the family (with `model`'s profile when there is one
    /// and flat, the levels in [`LEVELS`], both margins) on the last `window` samples of `x`
    /// and returns the cheapest; ties go to the earlier in that order.
    pub fn select(x: &[f64], model: Option<&Model>, lead: usize, q: f64, window: usize) -> Self {
        // The same points for every candidate: those where the longest level has samples.
        let kmax = LEVELS.iter().copied().max().unwrap_or(1);
        let from = x.len().saturating_sub(window).max(kmax);
        let mut best: Option<Nowcast> = None;
        let models: Vec<Option<&Model>> = match model {
            Some(m) => vec![Some(m), None],
            None => vec![None],
        };
        for m in models {
            for k in LEVELS {
                for kind in [Margin::Additive, Margin::Relative] {
                    let c = Self::calibrate_from(x, from, m, lead, k, q, kind);
                    if best.as_ref().is_none_or(|b| c.cost < b.cost) {
                        best = Some(c);
                    }
                }
            }
        }
        // LEVELS is not empty, so there is a candidate.
        best.unwrap_or_else(|| Self::calibrate_from(x, from, None, lead, 1, q, Margin::Additive))
    }

    /// Renumbers the phases: sample `i` of the fitted history becomes sample `offset + i`.
    pub fn shift(&mut self, offset: usize) {
        let p = self.seasonal.len();
        self.seasonal.rotate_right(offset % p);
    }

    fn s(&self, i: usize) -> f64 {
        self.seasonal[i % self.seasonal.len()]
    }

    /// The level: the mean of `recent` (the samples just before `now`) less the profile.
    fn base(&self, recent: &[f64], now: usize) -> f64 {
        let k = recent.len();
        if k == 0 {
            return 0.0;
        }
        recent.iter().enumerate().map(|(i, v)| v - self.s(now + i - k)).sum::<f64>() / k as f64
    }

    /// The margin for horizon `h` (the longest calibrated one beyond it).
    pub fn margin(&self, h: usize) -> f64 {
        self.margins.get(h.min(self.lead)).copied().unwrap_or(0.0)
    }

    /// The forecast of the load's maximum over samples `now..=now + lead`, from the `k`
    /// samples before `now` (fewer when the history is shorter).
    pub fn forecast(&self, recent: &[f64], now: usize) -> f64 {
        self.forecast_through(recent, now, now + self.lead).unwrap_or(0.0)
    }

    /// As [`Nowcast::forecast`], over samples `now..=last` only, with that horizon's margin
    /// (a horizon beyond the calibrated `lead` gets the longest one's); `None` when `last`
    /// is before `now` (nothing left to forecast).
    pub fn forecast_through(&self, recent: &[f64], now: usize, last: usize) -> Option<f64> {
        if last < now {
            return None;
        }
        let take = recent.len().min(self.k).min(now);
        let base = self.base(&recent[recent.len() - take..], now);
        let h = last - now;
        let season = (0..=h).map(|j| self.s(now + j)).fold(f64::NEG_INFINITY, f64::max);
        let point = base + season;
        let f = match self.kind {
            Margin::Additive => point + self.margin(h),
            Margin::Relative => point.max(self.floor) * self.margin(h),
        };
        Some(f.max(0.0))
    }
}

/// The `q` quantile (linear between order statistics) by selection, not a full sort: the
/// calibration runs it for every candidate and horizon at each refit.
fn select_quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    let b = if hi > lo { rest.iter().copied().fold(f64::INFINITY, f64::min) } else { a };
    a + (b - a) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series that repeats `cycle`.
    fn repeat(cycle: &[f64], n: usize) -> Vec<f64> {
        (0..n).map(|i| cycle[i % cycle.len()]).collect()
    }

    /// A pseudo-random number in [0, 1) from `i` (Fibonacci hashing).
    fn unit(i: u64) -> f64 {
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn model_of(x: &[f64], lead: usize) -> Model {
        let s: Vec<Option<f64>> = x.iter().map(|v| Some(*v)).collect();
        crate::fit(&s, 60, lead).expect("a period")
    }

    #[test]
    fn the_quantile_by_selection_matches_the_sorted_one() {
        let cases: [(&[f64], f64); 5] = [
            (&[3.0, 1.0, 2.0], 0.5),
            (&[5.0, 1.0, 4.0, 2.0, 3.0], 0.95),
            (&[7.0], 0.9),
            (&[2.0, 9.0, 4.0, 1.0], 0.0),
            (&[2.0, 9.0, 4.0, 1.0], 1.0),
        ];
        for (v, q) in cases {
            let mut a = v.to_vec();
            let mut b = v.to_vec();
            assert_eq!(select_quantile(&mut a, q), crate::clean::quantile(&mut b, q), "{v:?} {q}");
        }
        assert_eq!(select_quantile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn the_margin_grows_with_the_horizon_on_a_random_walk() {
        // A deterministic walk: the error of persistence grows with the horizon.
        let mut v = 100.0;
        let x: Vec<f64> = (0..5000u64)
            .map(|i| {
                v += ((i * 7919 + 13) % 11) as f64 - 5.0;
                v
            })
            .collect();
        let n = Nowcast::calibrate(&x, None, 3, 1, 0.9, Margin::Additive);
        assert_eq!(n.margins.len(), 4);
        for w in n.margins.windows(2) {
            assert!(w[0] < w[1], "{:?}", n.margins);
        }
        // A horizon beyond the calibrated one gets the longest margin.
        assert_eq!(n.margin(9), n.margins[3]);
    }

    #[test]
    fn nothing_to_forecast_when_the_window_ends_before_now() {
        let x = repeat(&[1.0, 2.0], 100);
        let n = Nowcast::calibrate(&x, None, 1, 1, 0.9, Margin::Additive);
        assert_eq!(n.forecast_through(&x[..10], 10, 9), None);
        assert!(n.forecast_through(&x[..10], 10, 10).is_some());
    }

    /// What the selection keeps, by the series' shape.
    #[test]
    fn the_cheapest_forecaster_is_kept() {
        // A clean square wave of period 8 (repeated exactly): the seasonal profile forecasts it
        // with no error, so it wins over flat, whose margin must cover the step.
        let wave = repeat(&[1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0], 8 * 40);
        let m = model_of(&wave, 1);
        let n = Nowcast::select(&wave, Some(&m), 1, 0.95, 200);
        assert_eq!(n.period, Some(8), "{n:?}");
        assert!(n.margins.iter().all(|m| m.abs() < 1e-9), "{n:?}");
        // Rare isolated spikes on a flat level (no period): no headroom for them at q 0.9
        // (they are 1 in 25), so the level alone.
        let spiky: Vec<f64> = (0..1000).map(|i| if i % 25 == 7 { 10.0 } else { 2.0 }).collect();
        let n = Nowcast::select(&spiky, None, 0, 0.9, 1000);
        assert_eq!(n.period, None, "{n:?}");
        assert_eq!(n.forecast_through(&spiky[..100], 100, 100), Some(2.0), "{n:?}");
        // Noise proportional to the level on a slow wave (two levels a decade apart): a
        // relative margin is cheaper than an additive one sized for the high level.
        // (the low one four fifths of the time)
        let prop: Vec<f64> = (0..4000u64)
            .map(|i| {
                let level = if i % 1000 < 800 { 1.0 } else { 10.0 };
                level * (1.0 + 0.4 * (unit(i) - 0.5))
            })
            .collect();
        let n = Nowcast::select(&prop, None, 0, 0.95, 4000);
        assert_eq!(n.kind, Margin::Relative, "{n:?}");
    }

    #[test]
    fn a_relative_margin_scales_with_the_level() {
        let x: Vec<f64> = (0..1000u64).map(|i| if i % 2 == 0 { 10.0 } else { 11.0 }).collect();
        let n = Nowcast::calibrate(&x, None, 0, 1, 1.0, Margin::Relative);
        // The worst ratio is 11 / 10.
        assert!((n.margins[0] - 1.1).abs() < 1e-9, "{n:?}");
        let f = n.forecast_through(&[100.0], 500, 500).unwrap();
        assert!((f - 110.0).abs() < 1e-9, "{f}");
    }
}
