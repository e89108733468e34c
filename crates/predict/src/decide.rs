//! One predictive autoscaling decision, as the EffectiveHorizontalPodAutoscaler controller
//! makes it every control period: the lead time from the target's measured start-ups, the
//! forecast over it, the replicas it needs, and the larger of those and the reactive
//! recommendation (Crane's EHPA: its HPA carries the prediction metric beside the original
//! one and takes the larger).

use crate::clean::quantile;
use crate::forecast::{Explanation, forecast};

/// What a decision is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Input<'a> {
    /// The metric's total over the target's pods (or an External metric's value), one per
    /// `step_secs`, `None` missing, oldest first; the last is the current step.
    pub samples: &'a [Option<f64>],
    /// The history's step.
    pub step_secs: f64,
    /// Start-up durations (creation to Ready) of the target's recent pods, in milliseconds.
    pub startups_millis: &'a [u64],
    /// The control delay: how long until the next decision (the controller's period).
    pub control_delay_secs: f64,
    /// The longest forecast horizon allowed (Crane's `predictionWindowSeconds`).
    pub window_secs: f64,
    /// The quantile of the load forecast (0.95: one step in twenty may exceed it).
    pub quantile: f64,
    /// The metric one replica handles at the target (per-pod target value; 0 or less: no
    /// predicted replicas can be derived).
    pub per_pod: f64,
    /// The reactive (HPA) recommendation.
    pub reactive: i32,
}

/// The decision and everything it rested on, for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// max(predicted, reactive), or the reactive one when there is no forecast.
    pub replicas: i32,
    /// The replicas the forecast needs, when there is one.
    pub predicted: Option<i32>,
    /// The start-up p95 used, in milliseconds (`None`: no pod measured yet, 0 assumed).
    pub startup_p95_millis: Option<u64>,
    /// Start-up p95 + control delay, capped by the window.
    pub lead_secs: f64,
    /// The forecaster's account (periods, forecast, fall-back).
    pub explanation: Explanation,
    /// A sentence for the status.
    pub reason: String,
}

/// The 95th percentile of start-up durations, `None` for none.
pub fn startup_p95(millis: &[u64]) -> Option<u64> {
    if millis.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = millis.iter().map(|m| *m as f64).collect();
    Some(quantile(&mut v, 0.95).round() as u64)
}

/// Decides, as [`Decision`] says. Falls back to the reactive recommendation (and says why)
/// when the history is short, no period is found, the lead time is not shorter than the
/// period, or the per-pod target is unknown.
pub fn decide(input: &Input<'_>) -> Decision {
    let p95 = startup_p95(input.startups_millis);
    let lead_secs = (p95.unwrap_or(0) as f64 / 1000.0 + input.control_delay_secs.max(0.0))
        .min(input.window_secs.max(0.0));
    let step = if input.step_secs > 0.0 { input.step_secs } else { 60.0 };
    // The lead time in whole steps after the current one (a rise within the next step is
    // covered by forecasting that step).
    let lead = (lead_secs / step).ceil().max(1.0) as usize;
    let explanation = forecast(input.samples, step.round().max(1.0) as u64, lead, input.quantile);
    let reactive = input.reactive;
    let (predicted, reason) = match (&explanation.forecast, &explanation.fallback) {
        (Some(f), _) if input.per_pod > 0.0 => {
            let n = crate::forecast::replicas(0, Some(f), input.per_pod);
            let period = explanation.period.map_or(0.0, |p| p as f64 * step);
            let why = format!(
                "period {period:.0}s found; q{:.0} forecast {:.3} over the next {lead_secs:.1}s \
                 (start-up p95 {}ms + control delay {:.1}s) needs {n}, reactive {reactive}",
                input.quantile * 100.0,
                f.value,
                p95.unwrap_or(0),
                input.control_delay_secs
            );
            (Some(n), why)
        }
        (Some(_), _) => (
            None,
            format!("no per-pod target to turn the forecast into replicas; reactive {reactive}"),
        ),
        (None, Some(why)) => (None, format!("reactive {reactive}: {why}")),
        (None, None) => (None, format!("reactive {reactive}: no forecast")),
    };
    Decision {
        replicas: predicted.map_or(reactive, |p| p.max(reactive)),
        predicted,
        startup_p95_millis: p95,
        lead_secs,
        explanation,
        reason,
    }
}

/// As [`decide`], with Crane's `percentile` algorithm ([`crate::percentile`]) in place of the
/// forecast: the predicted value is the percentile estimate of the whole history (a level,
/// no period), in the samples' unit × `unit` (the history is in milli-units, Crane's histogram
/// in the metric's own: `unit` 1000). As Crane, no prediction before the history spans
/// `history_secs` (its model is `StatusReady` only once the aggregation window reaches
/// `historyLength`).
pub fn decide_percentile(
    input: &Input<'_>,
    config: &crate::percentile::Config,
    unit: f64,
    history_secs: f64,
) -> Decision {
    let p95 = startup_p95(input.startups_millis);
    let lead_secs = (p95.unwrap_or(0) as f64 / 1000.0 + input.control_delay_secs.max(0.0))
        .min(input.window_secs.max(0.0));
    let step = if input.step_secs > 0.0 { input.step_secs } else { 60.0 };
    let unit = if unit > 0.0 { unit } else { 1.0 };
    let timed: Vec<(f64, f64)> = input
        .samples
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i as f64 * step, v / unit)))
        .collect();
    let span = input.samples.len() as f64 * step;
    let reactive = input.reactive;
    let mut explanation = Explanation {
        periods: vec![],
        period: None,
        forecast: None,
        history: input.samples.len(),
        fallback: None,
    };
    let estimate = crate::percentile::estimate(&timed, config);
    let (predicted, reason) = match estimate {
        _ if span + step <= history_secs => {
            let why = format!(
                "percentile: {span:.0}s of history, the model needs historyLength {history_secs:.0}s"
            );
            explanation.fallback = Some(why.clone());
            (None, format!("reactive {reactive}: {why}"))
        }
        None => {
            let why = "percentile: no sample".to_owned();
            explanation.fallback = Some(why.clone());
            (None, format!("reactive {reactive}: {why}"))
        }
        Some(e) => {
            let value = e * unit;
            let level = timed.last().map_or(0.0, |(_, v)| v * unit);
            let f = crate::forecast::Forecast { value, level, lead: 0 };
            explanation.forecast = Some(f);
            if input.per_pod > 0.0 {
                let n = crate::forecast::replicas(0, Some(&f), input.per_pod);
                let why = format!(
                    "percentile p{:.0} of {} samples × (1 + margin {:.2}) = {value:.3} needs {n}, \
                     reactive {reactive}",
                    config.percentile * 100.0,
                    timed.len(),
                    config.margin_fraction
                );
                (Some(n), why)
            } else {
                (
                    None,
                    format!(
                        "no per-pod target to turn the estimate into replicas; reactive {reactive}"
                    ),
                )
            }
        }
    };
    Decision {
        replicas: predicted.map_or(reactive, |p| p.max(reactive)),
        predicted,
        startup_p95_millis: p95,
        lead_secs,
        explanation,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square wave of `period` samples: `low` for the first `low_len`, then `high`.
    fn square(n: usize, period: usize, low_len: usize, low: f64, high: f64) -> Vec<Option<f64>> {
        (0..n).map(|i| Some(if i % period < low_len { low } else { high })).collect()
    }

    fn input<'a>(samples: &'a [Option<f64>], startups: &'a [u64]) -> Input<'a> {
        Input {
            samples,
            step_secs: 1.0,
            startups_millis: startups,
            control_delay_secs: 1.0,
            window_secs: 3600.0,
            quantile: 0.95,
            per_pod: 1.0,
            reactive: 1,
        }
    }

    #[test]
    fn start_up_p95_interpolates() {
        assert_eq!(startup_p95(&[]), None);
        assert_eq!(startup_p95(&[1000]), Some(1000));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(startup_p95(&v), Some(95));
    }

    /// The online test's load (period 16 s, a rise at phase 8): with the current step at
    /// phase 6 and a lead of 2 s (1 s start-up + 1 s control), the rise is forecast and the
    /// decision scales out before it; at phase 2 it is not.
    #[test]
    fn a_rise_within_the_lead_time_scales_out_before_it() {
        let startups = [900, 1000, 1100];
        // Samples 0..=38: the current step is 38 (phase 6), the next 39 and 40 (phase 8).
        let s = square(39, 16, 8, 1.0, 3.5);
        let d = decide(&input(&s, &startups));
        assert_eq!(d.explanation.period, Some(16), "{d:?}");
        assert_eq!(d.predicted, Some(4), "{}", d.reason);
        assert_eq!(d.replicas, 4);
        assert!((d.lead_secs - 2.09).abs() < 0.01, "{}", d.lead_secs);
        // Current step at phase 2 (sample 50): no rise within the lead time.
        let s = square(51, 16, 8, 1.0, 3.5);
        let d = decide(&input(&s, &startups));
        assert_eq!(d.predicted, Some(1), "{}", d.reason);
        assert_eq!(d.replicas, 1);
    }

    #[test]
    fn short_history_falls_back_to_reactive_and_says_why() {
        let s = square(20, 16, 8, 1.0, 3.5);
        let mut i = input(&s, &[]);
        i.reactive = 3;
        let d = decide(&i);
        assert_eq!(d.predicted, None);
        assert_eq!(d.replicas, 3);
        assert!(d.reason.starts_with("reactive 3: no period found"), "{}", d.reason);
        assert_eq!(d.startup_p95_millis, None);
    }

    #[test]
    fn the_reactive_recommendation_wins_when_larger() {
        let s = square(39, 16, 8, 1.0, 3.5);
        let mut i = input(&s, &[1000]);
        i.reactive = 7;
        assert_eq!(decide(&i).replicas, 7);
    }

    #[test]
    fn the_percentile_algorithm_predicts_a_level_once_the_history_is_long_enough() {
        // Milli-units 1050 and 3550 (a pod handles 1000): value-weighted, the 0.95 quantile
        // is in 3.55's bucket, whose end is 3.6 with Crane's 0.1 buckets; × 1.15 = 4.14: 5 pods.
        let s = square(40, 16, 8, 1050.0, 3550.0);
        let mut i = input(&s, &[]);
        i.per_pod = 1000.0;
        let c = crate::percentile::Config::default();
        let d = decide_percentile(&i, &c, 1000.0, 30.0);
        assert_eq!(d.predicted, Some(5), "{}", d.reason);
        assert_eq!(d.replicas, 5);
        assert!((d.explanation.forecast.unwrap().value - 3600.0 * 1.15).abs() < 1e-6);
        assert_eq!(d.explanation.period, None);
        // A history shorter than historyLength: reactive, and why.
        let d = decide_percentile(&i, &c, 1000.0, 120.0);
        assert_eq!((d.predicted, d.replicas), (None, 1));
        assert!(d.reason.contains("needs historyLength 120s"), "{}", d.reason);
    }

    #[test]
    fn the_window_caps_the_lead_time() {
        let s = square(39, 16, 8, 1.0, 3.5);
        let mut i = input(&s, &[60_000]);
        i.window_secs = 3.0;
        assert_eq!(decide(&i).lead_secs, 3.0);
    }
}
