//! Time-windowed metric buckets (`pkg/autoscaler/aggregation/bucketing.go`) and the sliding
//! maximum behind `scale-down-delay` (`pkg/autoscaler/aggregation/max`).
//!
//! [`Buckets`] is Knative's `TimedFloat64Buckets` at its fixed 1 s granularity: a ring of
//! per-second sums covering one window. Values recorded in the same second add up (so the
//! reports of several gateways, like the queue-proxies' and the activator's upstream, sum to
//! the revision's total). The average has Knative's semantics: over the seconds since the first
//! write while the window is not yet full, over the whole window (gaps count as 0) afterwards,
//! and 0 once a whole window passed without a write. [`Algorithm::WeightedExponential`] is
//! `WeightedFloat64Buckets`: the newest second weighs most.

use std::collections::VecDeque;

use crate::Time;

/// How a window's buckets are averaged (`autoscaling.knative.dev/metric-aggregation-algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// The plain mean over the valid part of the window (default).
    #[default]
    Linear,
    /// An exponentially weighted mean whose weights over the window sum to at least 0.9999
    /// (`weightPrecision`), with a decay of at least 0.2 (`minExponent`).
    WeightedExponential,
}

/// Minimal decay multiplier of the weighted average (`minExponent`).
const MIN_EXPONENT: f64 = 0.2;
/// The weights of the weighted average sum to at least this (`weightPrecision`).
const WEIGHT_PRECISION: f64 = 0.9999;
/// Linear averages are truncated to this many decimals (`precision`), as upstream, so that
/// float noise does not make `ceil` ask for one pod more.
const PRECISION: i32 = 6;

/// One metric over one window, at 1 s resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Per-second sums, indexed by `second % len`.
    buckets: Vec<f64>,
    /// The second of the first write since the buckets were last empty for a whole window.
    first_write: Option<u64>,
    /// The second of the newest write.
    last_write: Option<u64>,
    /// Window length in seconds (= `buckets.len()`).
    window: u64,
    /// Sum of all buckets.
    window_total: f64,
    algorithm: Algorithm,
    /// Decay of the weighted average.
    smoothing: f64,
}

impl Buckets {
    /// Empty buckets over `window_secs` seconds (at least 1).
    pub fn new(window_secs: u64, algorithm: Algorithm) -> Self {
        let window = window_secs.max(1);
        let n = window as f64;
        Self {
            buckets: vec![0.0; usize::try_from(window).unwrap_or(usize::MAX)],
            first_write: None,
            last_write: None,
            window,
            window_total: 0.0,
            algorithm,
            smoothing: (1.0 - (1.0 - WEIGHT_PRECISION).powf(1.0 / n)).max(MIN_EXPONENT),
        }
    }

    fn index(&self, second: u64) -> usize {
        // The modulo is below `buckets.len()`, so it fits.
        usize::try_from(second % self.window).unwrap_or(0)
    }

    /// Adds `value` to the bucket of `now`'s second (`Record`). Seconds skipped since the last
    /// write are zeroed; after a whole window without writes the average starts over from
    /// this second; a value older than a window before the newest write is dropped.
    pub fn record(&mut self, now: Time, value: f64) {
        let t = now.as_secs();
        if self.last_write != Some(t) {
            if let Some(last) = self.last_write
                && t + self.window <= last
            {
                return;
            }
            if self.first_write.is_none_or(|f| f > t) {
                self.first_write = Some(t);
            }
            match self.last_write {
                Some(last) if t <= last => {}
                Some(last) if t - last < self.window => {
                    for i in last + 1..=t {
                        let idx = self.index(i);
                        self.window_total -= self.buckets[idx];
                        self.buckets[idx] = 0.0;
                    }
                    self.last_write = Some(t);
                }
                _ => {
                    self.first_write = Some(t);
                    self.buckets.fill(0.0);
                    self.window_total = 0.0;
                    self.last_write = Some(t);
                }
            }
        }
        let idx = self.index(t);
        self.buckets[idx] += value;
        self.window_total += value;
    }

    /// Changes the window length, keeping the newest seconds that fit (`ResizeWindow`). As
    /// upstream, when there was data within the old window the new one counts as full from
    /// the old window's start, and the weighted average's decay follows the new length.
    pub fn resize(&mut self, window_secs: u64, now: Time) {
        let window = window_secs.max(1);
        if window == self.window {
            return;
        }
        let mut buckets = vec![0.0; usize::try_from(window).unwrap_or(usize::MAX)];
        let mut total = 0.0;
        match self.last_write {
            Some(last) if now.as_secs().saturating_sub(last) <= self.window => {
                for i in 0..window.min(self.window) {
                    let Some(t) = last.checked_sub(i) else { break };
                    let v = self.buckets[self.index(t)];
                    buckets[usize::try_from(t % window).unwrap_or(0)] = v;
                    total += v;
                }
                self.first_write = Some(last.saturating_sub(self.window - 1));
            }
            _ => self.first_write = None,
        }
        self.window = window;
        self.buckets = buckets;
        self.window_total = total;
        self.smoothing =
            (1.0 - (1.0 - WEIGHT_PRECISION).powf(1.0 / window as f64)).max(MIN_EXPONENT);
    }

    /// No write within the last window (`IsEmpty`).
    pub fn is_empty(&self, now: Time) -> bool {
        self.last_write.is_none_or(|last| now.as_secs().saturating_sub(last) > self.window)
    }

    /// The window's average at `now` (`WindowAverage`), by the buckets' algorithm.
    pub fn average(&self, now: Time) -> f64 {
        match self.algorithm {
            Algorithm::Linear => self.linear_average(now),
            Algorithm::WeightedExponential => self.weighted_average(now),
        }
    }

    fn linear_average(&self, now: Time) -> f64 {
        let (Some(last), Some(first)) = (self.last_write, self.first_write) else { return 0.0 };
        let now = now.as_secs();
        let len = self.window as f64;
        let written = (last - first + 1) as f64;
        if now <= last {
            round_down(self.window_total / written.min(len))
        } else if now - last < self.window {
            // Seconds after the last write have no data yet: leave them out.
            let stale: f64 = (last + 1..=now).map(|i| self.buckets[self.index(i)]).sum();
            let valid = written.min(len - (now - last) as f64);
            round_down((self.window_total - stale) / valid)
        } else {
            0.0
        }
    }

    fn weighted_average(&self, now: Time) -> f64 {
        if self.is_empty(now) {
            return 0.0;
        }
        let Some(last) = self.last_write else { return 0.0 };
        let now = now.as_secs();
        let mut multiplier = self.smoothing;
        let mut count = self.window;
        if now > last {
            // The seconds since the last write count as zeros at the front.
            let zeros = now - last;
            multiplier *= (1.0 - self.smoothing).powf(zeros as f64);
            count = count.saturating_sub(zeros);
        }
        let mut sum = 0.0;
        for i in 0..count {
            // Newest first: last, last-1, ...
            let idx = self.index(last + self.window - i);
            sum += self.buckets[idx] * multiplier;
            multiplier *= 1.0 - self.smoothing;
        }
        sum
    }
}

/// Truncates to [`PRECISION`] decimals (`roundToNDigits`).
fn round_down(f: f64) -> f64 {
    let p = 10f64.powi(PRECISION);
    (f * p).floor() / p
}

/// The maximum of the values recorded within the last `len` ticks
/// (`max.TimeWindow`, the "descending minima" sliding window): `scale-down-delay` keeps the
/// highest decision of the delay window.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxWindow {
    /// Tick length in seconds (upstream's `tickInterval`, 2 s).
    granularity: u64,
    /// How many ticks the window spans (`ceil(delay / tick)`).
    len: u64,
    /// (tick index, value), values strictly descending, indexes ascending.
    maxima: VecDeque<(u64, i32)>,
}

impl MaxWindow {
    /// A window of `delay_secs` seconds at `granularity_secs` ticks.
    pub fn new(delay_secs: u64, granularity_secs: u64) -> Self {
        let granularity = granularity_secs.max(1);
        Self { granularity, len: delay_secs.div_ceil(granularity).max(1), maxima: VecDeque::new() }
    }

    /// Records `value` at `now` (`Record`): values of the same tick keep the larger.
    pub fn record(&mut self, now: Time, value: i32) {
        let index = now.as_secs() / self.granularity;
        // A smaller older value can never be the maximum again.
        while self.maxima.back().is_some_and(|&(_, v)| v <= value) {
            self.maxima.pop_back();
        }
        while self.maxima.front().is_some_and(|&(i, _)| index.saturating_sub(i) >= self.len) {
            self.maxima.pop_front();
        }
        let mut value = value;
        if let Some(&(i, v)) = self.maxima.back()
            && i == index
        {
            value = value.max(v);
            self.maxima.pop_back();
        }
        self.maxima.push_back((index, value));
    }

    /// The maximum within the window as of the last record (`Current`).
    pub fn current(&self) -> i32 {
        self.maxima.front().map_or(0, |&(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Time {
        Time::from_secs(s)
    }

    /// Upstream's doc example: over [10, 10, 5, 5] (newest last) the linear mean is 7.5.
    #[test]
    fn linear_average_is_the_mean_of_written_seconds() {
        let mut b = Buckets::new(4, Algorithm::Linear);
        for (s, v) in [(100, 10.0), (101, 10.0), (102, 5.0), (103, 5.0)] {
            b.record(at(s), v);
        }
        assert_eq!(b.average(at(103)), 7.5);
        // A partial window averages over the seconds since the first write only.
        let mut p = Buckets::new(60, Algorithm::Linear);
        p.record(at(10), 6.0);
        p.record(at(11), 2.0);
        assert_eq!(p.average(at(11)), 4.0);
        // Seconds after the last write are left out, not counted as zeros...
        assert_eq!(p.average(at(12)), 4.0);
        // ...until a window passed, then there is no data.
        assert_eq!(p.average(at(11 + 60)), 0.0);
        assert!(p.is_empty(at(11 + 61)));
        assert!(!p.is_empty(at(11 + 60)));
    }

    #[test]
    fn gaps_count_as_zero_and_values_in_one_second_add_up() {
        let mut b = Buckets::new(4, Algorithm::Linear);
        b.record(at(100), 4.0);
        b.record(at(100), 4.0);
        b.record(at(103), 8.0);
        // (8 + 0 + 0 + 8) / 4
        assert_eq!(b.average(at(103)), 4.0);
        // The window slides: second 100 falls out when 104 is written.
        b.record(at(104), 0.0);
        assert_eq!(b.average(at(104)), 2.0);
    }

    #[test]
    fn writes_older_than_a_window_are_dropped() {
        let mut b = Buckets::new(4, Algorithm::Linear);
        b.record(at(100), 4.0);
        b.record(at(96), 100.0);
        assert_eq!(b.average(at(100)), 4.0);
        // Within the window a late value still lands in its second.
        b.record(at(99), 2.0);
        assert_eq!(b.average(at(100)), 3.0);
    }

    /// Upstream's doc example: over [10, 10, 5, 5] with a decay of 0.6 the weighted mean is
    /// 5.544; reversed it is 9.072.
    #[test]
    fn weighted_average_favours_recent_seconds() {
        let mut b = Buckets::new(4, Algorithm::WeightedExponential);
        b.smoothing = 0.6;
        for (s, v) in [(100, 10.0), (101, 10.0), (102, 5.0), (103, 5.0)] {
            b.record(at(s), v);
        }
        assert!((b.average(at(103)) - 5.544).abs() < 1e-9, "{}", b.average(at(103)));
        let mut r = Buckets::new(4, Algorithm::WeightedExponential);
        r.smoothing = 0.6;
        for (s, v) in [(100, 5.0), (101, 5.0), (102, 10.0), (103, 10.0)] {
            r.record(at(s), v);
        }
        assert!((r.average(at(103)) - 9.072).abs() < 1e-9);
        // The default decay for 60 buckets is the 0.2 floor; for 4 buckets it is larger.
        assert_eq!(Buckets::new(60, Algorithm::WeightedExponential).smoothing, MIN_EXPONENT);
        assert!(Buckets::new(4, Algorithm::WeightedExponential).smoothing > 0.9);
    }

    #[test]
    fn resize_keeps_the_newest_seconds() {
        let mut b = Buckets::new(4, Algorithm::Linear);
        for (s, v) in [(100, 1.0), (101, 2.0), (102, 3.0), (103, 4.0)] {
            b.record(at(s), v);
        }
        b.resize(2, at(103));
        // Only 102 and 103 fit.
        assert_eq!(b.average(at(103)), 3.5);
        b.resize(6, at(103));
        // Growing keeps them; the window counts as full from the old start (2 s before).
        assert_eq!(b.average(at(103)), 3.5);
        // Without data within the window the buckets start over.
        b.resize(3, at(200));
        assert_eq!(b.average(at(200)), 0.0);
        b.record(at(201), 6.0);
        assert_eq!(b.average(at(201)), 6.0);
    }

    #[test]
    fn max_window_keeps_the_highest_value_of_the_window() {
        let mut w = MaxWindow::new(6, 2);
        w.record(at(0), 5);
        assert_eq!(w.current(), 5);
        w.record(at(2), 3);
        assert_eq!(w.current(), 5);
        w.record(at(4), 1);
        assert_eq!(w.current(), 5);
        // Tick 3 (second 6) is 3 ticks after tick 0: 5 leaves the window.
        w.record(at(6), 1);
        assert_eq!(w.current(), 3);
        w.record(at(8), 1);
        assert_eq!(w.current(), 1);
        w.record(at(8), 7);
        assert_eq!(w.current(), 7);
    }
}
