//! Knative's KPA (Knative Pod Autoscaler) decisions as pure functions: no I/O, no clock, no
//! async. Issue 11's autoscaler controller and gateway are built on it.
//!
//! Upstream provenance (knative/serving), each module says which file it follows:
//!
//! - [`config`]: the `config-autoscaler` ConfigMap, keys, defaults and validation
//!   (`pkg/autoscaler/config/config.go`).
//! - [`revision`]: the per-revision `autoscaling.knative.dev/*` annotations and their webhook
//!   validation (`pkg/apis/autoscaling/annotation_validation.go`), parsed into a
//!   [`RevisionSpec`].
//! - [`aggregation`] and [`metrics`]: the 1 s metric buckets over the stable and panic windows
//!   with Knative's (linear or weighted-exponential) averages
//!   (`pkg/autoscaler/aggregation`, `pkg/autoscaler/metrics/collector.go`), and the sliding
//!   maximum of `scale-down-delay` (`pkg/autoscaler/aggregation/max`).
//! - [`autoscaler`]: the decision: [`DeciderSpec`] (`MakeDecider`, `ResolveMetricTarget`) and
//!   [`Autoscaler::scale`], which runs the decider (`pkg/autoscaler/scaling/autoscaler.go`:
//!   stable and panic desired pods, panic mode, rate limits, activation scale, scale-down
//!   delay, excess burst capacity) and then the KPA reconciler's bounds and scale-to-zero rules
//!   (`pkg/reconciler/autoscaling/kpa/scaler.go`, `kpa.go`: initial scale, min/max scale, the
//!   stable window of inactivity, the grace period, the `Active` condition).
//! - [`hpa`]: the HorizontalPodAutoscaler's replica calculation and normalisation
//!   (kube-controller-manager's `pkg/controller/podautoscaler`), for the HPA controller.
//!
//! # How the pieces are used
//!
//! ```text
//! gateway ──(every 1 s, per revision: Stat{concurrency, requests})──▶ Metrics::record
//!                                                                        │
//! autoscaler controller ── every TICK_INTERVAL (2 s), and at once when ──┘
//!   a request waits at zero: Autoscaler::scale(now, &metrics, ready_pods)
//!        └─▶ ScaleResult { desired, scale_valid, panic, observed_*, excess_burst_capacity,
//!                          active } ──▶ workload replicas (only when scale_valid),
//!                                       the revision's Active condition and the status
//!                                       object `kubectl get` prints
//! ```
//!
//! - The controller parses `config-autoscaler` with [`Config::from_data`], each revision's
//!   annotations with [`RevisionSpec::from_annotations`] (the API server's validation calls the
//!   same function, so the `Invalid` causes are Knative's), resolves a [`DeciderSpec`] and
//!   keeps one [`Metrics`] and one [`Autoscaler`] per revision.
//! - The gateway reports, for each revision and each second, the requests in flight averaged
//!   over the second and the requests that arrived; zeros included, since "no report within
//!   the stable window" means "no data" and the last decision then stands. Several gateway
//!   replicas each record their share: reports of the same second add up.
//! - `now` is a [`Time`] the caller reads from its own clock (tests pass fixed values).
//!
//! # Deliberate differences from upstream
//!
//! - `target-burst-capacity` defaults to 211, today's upstream default (older releases and
//!   some docs say 200).
//! - Kinetic's gateway is both ingress and activator, so the time "in the activator's path"
//!   that upstream measures is the time inactive: the last pod always stays for the full
//!   grace period (upstream may skip it when the activator was already in the path).
//! - The `Active` condition and the "scaled to initial scale once" flag live in the
//!   [`Autoscaler`], not in a PodAutoscaler object; a restarted controller starts them anew
//!   (as upstream's restarted autoscaler starts in panic mode to stay safe).
//!
//! What this crate does not do: read metrics from anything, talk to the API, hold requests.

pub mod aggregation;
pub mod autoscaler;
pub mod config;
pub mod duration;
pub mod hpa;
pub mod metrics;
pub mod revision;

use std::ops::Add;
use std::time::Duration;

pub use aggregation::Algorithm;
pub use autoscaler::{ActiveCondition, Activity, Autoscaler, DeciderSpec, ScaleResult};
pub use config::{Config, ConfigError};
pub use metrics::{Metrics, Stat};
pub use revision::{FieldError, Metric, RevisionSpec};

/// A point in time as a duration since a fixed epoch the caller chooses (the Unix epoch from
/// `SystemTime`, or the start of a test). Metric buckets are whole seconds of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(Duration);

impl Time {
    /// The time `since_epoch` after the epoch.
    pub const fn new(since_epoch: Duration) -> Self {
        Self(since_epoch)
    }

    /// Whole seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// Milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// The duration since the epoch.
    pub const fn since_epoch(self) -> Duration {
        self.0
    }

    /// The second this time falls in (its bucket).
    pub const fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d))
    }
}
