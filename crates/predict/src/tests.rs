//! Synthetic series with known periods (issue 13's predictor tests): daily, weekly, both at
//! once, with noise, outliers, gaps and a level shift; short history and noise fall back.

use std::f64::consts::TAU;

use super::*;

const MIN: u64 = 60;
const DAY: usize = 1440;

/// A deterministic xorshift generator: uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal (sum of 12 uniforms − 6).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// Per-minute load over `days`: a daily wave of amplitude `daily`, a weekday/weekend step of
/// `weekly`, noise of `noise` σ, around 100.
fn series(days: usize, daily: f64, weekly: f64, noise: f64, seed: u64) -> Vec<Option<f64>> {
    let mut rng = Rng(seed);
    (0..days * DAY)
        .map(|i| {
            let day = i / DAY;
            let phase = (i % DAY) as f64 / DAY as f64;
            let weekend = if day % 7 >= 5 { -weekly } else { 0.0 };
            Some(100.0 + daily * (TAU * phase).sin() + weekend + noise * rng.normal())
        })
        .collect()
}

fn periods_of(s: &[Option<f64>]) -> Vec<usize> {
    let x = clean::clean(s).unwrap();
    detect(&x, MIN).iter().map(|p| p.samples).collect()
}

/// Whether `found` holds a period within 3 % of `want` samples.
fn has(found: &[usize], want: usize) -> bool {
    found.iter().any(|p| (*p as f64 - want as f64).abs() <= want as f64 * 0.03)
}

#[test]
fn a_daily_wave_with_noise_has_a_daily_period() {
    let p = periods_of(&series(8, 40.0, 0.0, 8.0, 1));
    assert!(has(&p, DAY), "{p:?}");
    assert!(!has(&p, 2 * DAY), "no harmonic: {p:?}");
}

#[test]
fn a_weekly_pattern_has_a_weekly_period() {
    let p = periods_of(&series(21, 0.0, 50.0, 5.0, 2));
    assert!(has(&p, 7 * DAY), "{p:?}");
    assert!(!has(&p, DAY), "{p:?}");
}

#[test]
fn daily_and_weekly_at_once_are_both_found() {
    let p = periods_of(&series(21, 40.0, 50.0, 5.0, 3));
    assert!(has(&p, DAY) && has(&p, 7 * DAY), "{p:?}");
}

#[test]
fn outliers_do_not_hide_the_period() {
    let mut s = series(8, 40.0, 0.0, 5.0, 4);
    let mut rng = Rng(99);
    for v in s.iter_mut() {
        if rng.next() < 0.01 {
            *v = Some(2000.0);
        }
    }
    assert!(has(&periods_of(&s), DAY));
}

#[test]
fn gaps_do_not_hide_the_period() {
    let mut s = series(8, 40.0, 0.0, 5.0, 5);
    // Ten missing hours and 5 % of single samples.
    for v in s.iter_mut().skip(3 * DAY).take(600) {
        *v = None;
    }
    let mut rng = Rng(7);
    for v in s.iter_mut() {
        if rng.next() < 0.05 {
            *v = None;
        }
    }
    assert!(has(&periods_of(&s), DAY));
}

#[test]
fn a_level_shift_does_not_hide_the_period_and_the_forecast_follows_it() {
    let mut s = series(8, 40.0, 0.0, 3.0, 6);
    for v in s.iter_mut().skip(4 * DAY) {
        *v = v.map(|x| x + 150.0);
    }
    assert!(has(&periods_of(&s), DAY));
    // At the end of day 8 (phase 0), the next hour's wave rises from 250 to about 250 + 40 ×
    // sin(τ/24) ≈ 260.
    let e = forecast(&s, MIN, 60, 0.95);
    let f = e.forecast.expect("a forecast");
    assert!((255.0..275.0).contains(&f.value), "{e:?}");
}

#[test]
fn noise_alone_has_no_period_and_falls_back() {
    let s = series(8, 0.0, 0.0, 10.0, 8);
    assert_eq!(periods_of(&s), Vec::<usize>::new());
    let e = forecast(&s, MIN, 10, 0.95);
    assert!(e.forecast.is_none());
    assert!(e.fallback.unwrap().starts_with("no period found"));
}

#[test]
fn short_history_falls_back_to_reactive() {
    // A day and a half cannot show a daily period twice.
    let s: Vec<Option<f64>> = series(2, 40.0, 0.0, 2.0, 9).into_iter().take(DAY * 3 / 2).collect();
    let e = forecast(&s, MIN, 10, 0.95);
    assert!(e.forecast.is_none(), "{e:?}");
    assert_eq!(replicas(3, e.forecast.as_ref(), 10.0), 3, "the reactive count stands");
}

#[test]
fn the_forecast_covers_the_peak_within_the_lead_time() {
    // At phase 0 of a clean daily wave, the maximum within the next 6 hours is the crest
    // (100 + 40); a reactive view sees 100.
    let s = series(8, 40.0, 0.0, 0.5, 10);
    let e = forecast(&s, MIN, 360, 0.99);
    let f = e.forecast.unwrap();
    assert!((137.0..145.0).contains(&f.value), "{e:?}");
    assert_eq!(e.period.map(|p| (p as f64 / DAY as f64).round()), Some(1.0));
    assert_eq!(replicas(10, Some(&f), 10.0), 15, "ceil(~140 / 10) beats the reactive 10");
}

#[test]
fn a_nowcast_covers_the_next_minute_of_a_daily_wave_at_its_quantile() {
    let s = series(6, 40.0, 0.0, 4.0, 11);
    let x = clean::clean(&s).unwrap();
    let (hist, future) = x.split_at(5 * DAY);
    let model = fit(&s[..5 * DAY], MIN, 1).unwrap();
    let n = Nowcast::calibrate(hist, Some(&model), 0, 3, 0.95, Margin::Additive);
    // Over the sixth day, the forecast of each next minute is at least the load 90-99 % of
    // the time, and tighter than a flat level-plus-margin forecast.
    let flat = Nowcast::calibrate(hist, None, 0, 3, 0.95, Margin::Additive);
    assert!(n.margin(0) <= flat.margin(0), "{} vs {}", n.margin(0), flat.margin(0));
    // The selection over the family keeps the seasonal one here.
    assert_eq!(Nowcast::select(hist, Some(&model), 0, 0.95, 2 * DAY).period, Some(model.period));
    let covered = (3..future.len())
        .filter(|&t| {
            let recent = &x[5 * DAY + t - 3..5 * DAY + t];
            n.forecast(recent, 5 * DAY + t) >= future[t]
        })
        .count() as f64
        / (future.len() - 3) as f64;
    assert!((0.9..=0.99).contains(&covered), "{covered}");
}
