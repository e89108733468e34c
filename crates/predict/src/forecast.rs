//! The forecast a predictive autoscaler scales on: a high quantile of the load over the lead
//! time. The longest period found gives a seasonal profile (per phase, the median over past
//! cycles of the series less its one-period moving average); the forecast is the current level
//! (the mean of the last cycle, so a level shift or a trend carries over) plus the profile's
//! highest value within the lead time, plus the `q` quantile of the residual noise (normal, σ
//! from the MAD, so a bent cycle around a level shift does not widen it).

use crate::clean::{clean, median};
use crate::period::{Period, detect, moving_average};

/// The forecast and what led to it, for the autoscaler's status.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Periods found, in samples.
    pub periods: Vec<Period>,
    /// The period the forecast used.
    pub period: Option<usize>,
    /// The forecast value, when one was made.
    pub forecast: Option<Forecast>,
    /// Samples of history given.
    pub history: usize,
    /// Why no forecast was made (then the caller scales reactively).
    pub fallback: Option<String>,
}

/// A forecast over `[now, now + lead]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The `q` quantile of the load's forecast maximum over the window.
    pub value: f64,
    /// The current level (mean of the last cycle).
    pub level: f64,
    /// The lead time, in samples.
    pub lead: usize,
}

/// A seasonal model fitted on a history: refit it now and then (detection scans the whole
/// history), forecast from it at every tick (cheap: the level of the last cycle and the
/// profile over the lead time).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Periods found, in samples.
    pub periods: Vec<Period>,
    /// The period the profile is over.
    pub period: usize,
    /// The median detrended value at each phase, phase 0 at sample 0 of the history.
    pub seasonal: Vec<f64>,
    /// The residual's median.
    pub center: f64,
    /// The residual's robust σ (1.4826 × MAD).
    pub sigma: f64,
}

/// Why a model could not be fitted (the caller scales reactively), with the periods found.
#[derive(Debug, Clone, PartialEq)]
pub struct NoModel {
    pub periods: Vec<Period>,
    pub why: String,
}

/// Fits a [`Model`] on `samples` (one per `step_secs`, `None` missing, oldest first) for
/// forecasts up to `lead` samples ahead.
///
/// # Errors
/// No samples, no period found, or the lead time not shorter than every period with two full
/// cycles of history.
pub fn fit(samples: &[Option<f64>], step_secs: u64, lead: usize) -> Result<Model, NoModel> {
    let Some(x) = clean(samples) else {
        return Err(NoModel { periods: vec![], why: "no samples".into() });
    };
    let periods = detect(&x, step_secs);
    // The longest period with two full cycles before the window's phase.
    let n = x.len();
    let Some(p) = periods.iter().map(|p| p.samples).filter(|p| n >= 2 * p && lead < *p).max()
    else {
        let why = if periods.is_empty() {
            format!("no period found in {n} samples")
        } else {
            "the lead time is not shorter than the periods found".to_owned()
        };
        return Err(NoModel { periods, why });
    };
    // Seasonal component: the median detrended value at each phase over the cycles (one
    // cycle bent by a level shift does not move it); the noise around it: a robust σ (MAD).
    let trend = moving_average(&x, p);
    let r: Vec<f64> = x.iter().zip(&trend).map(|(a, b)| a - b).collect();
    let mut by_phase: Vec<Vec<f64>> = vec![Vec::new(); p];
    for (i, v) in r.iter().enumerate() {
        by_phase[i % p].push(*v);
    }
    let seasonal: Vec<f64> = by_phase.iter_mut().map(|v| median(v)).collect();
    let mut resid: Vec<f64> = r.iter().enumerate().map(|(i, v)| v - seasonal[i % p]).collect();
    let center = median(&mut resid);
    for v in resid.iter_mut() {
        *v = (*v - center).abs();
    }
    let sigma = 1.4826 * median(&mut resid);
    Ok(Model { periods, period: p, seasonal, center, sigma })
}

impl Model {
    /// The `q` quantile of the load's maximum over samples `now..=now + lead`, where `now` is
    /// the index (in the fitted history's numbering) of the next sample and `level` the mean
    /// of the last full period before it.
    pub fn forecast(&self, now: usize, level: f64, lead: usize, q: f64) -> Forecast {
        let p = self.period;
        let peak = (0..=lead)
            .map(|h| level + self.seasonal[(now + h) % p])
            .fold(f64::NEG_INFINITY, f64::max);
        let value = (peak + self.center + normal_quantile(q) * self.sigma).max(0.0);
        Forecast { value, level, lead }
    }
}

/// Forecasts the `q` quantile (e.g. 0.95) of the load over the next `lead` samples from
/// `samples` (one per `step_secs`, `None` missing, oldest first): [`fit`] and
/// [`Model::forecast`] at the end of the history.
pub fn forecast(samples: &[Option<f64>], step_secs: u64, lead: usize, q: f64) -> Explanation {
    let history = samples.len();
    match fit(samples, step_secs, lead) {
        Err(NoModel { periods, why }) => {
            Explanation { periods, period: None, forecast: None, history, fallback: Some(why) }
        }
        Ok(m) => {
            // fit succeeded, so some sample is known.
            let x = clean(samples).unwrap_or_default();
            let n = x.len();
            let level = x[n - m.period..].iter().sum::<f64>() / m.period as f64;
            let f = m.forecast(n, level, lead, q);
            Explanation {
                periods: m.periods,
                period: Some(m.period),
                forecast: Some(f),
                history,
                fallback: None,
            }
        }
    }
}

/// The standard normal quantile for `q` in (0, 1) (Abramowitz & Stegun 26.2.23, error below
/// 4.5e-4).
fn normal_quantile(q: f64) -> f64 {
    let q = q.clamp(1e-9, 1.0 - 1e-9);
    let (p, sign) = if q > 0.5 { (1.0 - q, 1.0) } else { (q, -1.0) };
    let t = (-2.0 * p.ln()).sqrt();
    let z = t
        - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
    sign * z
}

/// The replicas to run: the larger of the reactive recommendation and what the forecast needs
/// at `per_pod` load per replica (Crane: the HPA takes the larger of the prediction metric and
/// the original one).
pub fn replicas(reactive: i32, forecast: Option<&Forecast>, per_pod: f64) -> i32 {
    let predicted = forecast
        .filter(|_| per_pod > 0.0)
        .map(|f| (f.value / per_pod).ceil())
        .filter(|v| v.is_finite())
        .map(|v| v.min(f64::from(i32::MAX)) as i32)
        .unwrap_or(0);
    reactive.max(predicted)
}
