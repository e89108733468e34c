//! A revision's metrics over the stable and the panic window (`pkg/autoscaler/metrics`'s
//! `collection`): each recorded [`Stat`] goes into four [`Buckets`] (concurrency and rps, stable
//! and panic window), and the decider reads their averages.

use std::time::Duration;

use crate::Time;
use crate::aggregation::{Algorithm, Buckets};
use crate::revision::Metric;

/// One report for a revision: what one gateway saw in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stat {
    /// Requests in flight to the revision, averaged over the second (Knative's
    /// `AverageConcurrentRequests` summed over pods).
    pub concurrency: f64,
    /// Requests that arrived in the second (`RequestCount`).
    pub requests: f64,
}

/// The windows of one revision's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    concurrency_stable: Buckets,
    concurrency_panic: Buckets,
    rps_stable: Buckets,
    rps_panic: Buckets,
}

impl Metrics {
    /// Empty windows of the given lengths (whole seconds; the panic window at least 1 s).
    pub fn new(stable_window: Duration, panic_window: Duration, algorithm: Algorithm) -> Self {
        let (s, p) = (stable_window.as_secs(), panic_window.as_secs().max(1));
        Self {
            concurrency_stable: Buckets::new(s, algorithm),
            concurrency_panic: Buckets::new(p, algorithm),
            rps_stable: Buckets::new(s, algorithm),
            rps_panic: Buckets::new(p, algorithm),
        }
    }

    /// Changes the window lengths (a `config-autoscaler` change), keeping the newest data
    /// that fits (`collection.updateMetric`).
    pub fn resize(&mut self, stable_window: Duration, panic_window: Duration, now: Time) {
        let (s, p) = (stable_window.as_secs(), panic_window.as_secs().max(1));
        self.concurrency_stable.resize(s, now);
        self.concurrency_panic.resize(p, now);
        self.rps_stable.resize(s, now);
        self.rps_panic.resize(p, now);
    }

    /// Records one report at `now` (`collection.record`). Reports of the same second add up,
    /// so each gateway replica records its own share.
    pub fn record(&mut self, now: Time, stat: Stat) {
        self.concurrency_stable.record(now, stat.concurrency);
        self.concurrency_panic.record(now, stat.concurrency);
        self.rps_stable.record(now, stat.requests);
        self.rps_panic.record(now, stat.requests);
    }

    /// The stable and panic averages of `metric` at `now`, or `None` when nothing was recorded
    /// within the stable window (upstream's `ErrNoData`: the decider then makes no decision).
    pub fn stable_and_panic(&self, metric: Metric, now: Time) -> Option<(f64, f64)> {
        let (stable, panic) = match metric {
            Metric::Concurrency => (&self.concurrency_stable, &self.concurrency_panic),
            Metric::Rps => (&self.rps_stable, &self.rps_panic),
        };
        if stable.is_empty(now) {
            return None;
        }
        Some((stable.average(now), panic.average(now)))
    }
}
