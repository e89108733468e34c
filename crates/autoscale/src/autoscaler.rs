//! The scale decision: Knative's decider (`pkg/autoscaler/scaling/autoscaler.go`, `Scale`)
//! followed by the KPA reconciler's bounds and scale-to-zero rules
//! (`pkg/reconciler/autoscaling/kpa/scaler.go`, `scale` and `handleScaleToZero`; `kpa.go`,
//! `computeActiveCondition`), in one pure state machine per revision.

use std::time::Duration;

use crate::Time;
use crate::aggregation::{Algorithm, MaxWindow};
use crate::config::{BUCKET_SIZE, Config, TARGET_MIN};
use crate::metrics::Metrics;
use crate::revision::{Metric, RevisionSpec};

/// How often upstream's decider runs (`tickInterval`); also the granularity of the
/// scale-down-delay window. Kinetic's controller should call [`Autoscaler::scale`] at this
/// period, and at once when a request waits for a revision at zero.
pub const TICK_INTERVAL: Duration = Duration::from_secs(2);

/// How long a revision may stay activating before it is given up and scaled to zero:
/// config-deployment's default `progress-deadline` (600 s) plus upstream's
/// `activationTimeoutBuffer` (30 s).
pub const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(630);

/// Everything the decision needs about one revision, resolved from the [`Config`] and the
/// revision's [`RevisionSpec`] (upstream's `DeciderSpec` plus the bounds and scale-to-zero
/// settings its KPA reconciler reads).
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderSpec {
    /// The metric scaled on.
    pub metric: Metric,
    /// Per-pod value aimed at: `total × utilisation`, at least 0.01.
    pub target_value: f64,
    /// Per-pod capacity before the utilisation factor (for the excess burst capacity).
    pub total_value: f64,
    /// Target burst capacity (-1 = unlimited, 0 = none).
    pub target_burst_capacity: f64,
    /// Panic threshold as a fraction (2.0 for 200 %).
    pub panic_threshold: f64,
    /// `max-scale-up-rate`.
    pub max_scale_up_rate: f64,
    /// `max-scale-down-rate`.
    pub max_scale_down_rate: f64,
    /// The stable window.
    pub stable_window: Duration,
    /// The panic window: the stable window × percentage, rounded to seconds, at least 1 s.
    pub panic_window: Duration,
    /// `scale-down-delay` (0 = none).
    pub scale_down_delay: Duration,
    /// Pods the revision starts with.
    pub initial_scale: i32,
    /// Pods at least whenever there is traffic (1 = no floor).
    pub activation_scale: i32,
    /// Whether a route sends traffic to the revision. Unreachable revisions ignore min-scale
    /// and may drop to zero at once (no scale-down rate limit).
    pub reachable: bool,
    /// Lower bound (already 0 when not reachable).
    pub min_scale: i32,
    /// Upper bound, 0 = unlimited.
    pub max_scale: i32,
    /// `enable-scale-to-zero`.
    pub enable_scale_to_zero: bool,
    /// `scale-to-zero-grace-period`.
    pub scale_to_zero_grace_period: Duration,
    /// `scale-to-zero-pod-retention-period` (annotation or ConfigMap).
    pub scale_to_zero_pod_retention_period: Duration,
    /// See [`ACTIVATION_TIMEOUT`].
    pub activation_timeout: Duration,
    /// How the metric windows average.
    pub algorithm: Algorithm,
}

impl DeciderSpec {
    /// Resolves a revision's settings over the ConfigMap's (`MakeDecider`, `MakeMetric`,
    /// `ResolveMetricTarget`, `GetInitialScale`, `PodAutoscaler.ScaleBounds`).
    pub fn new(config: &Config, rev: &RevisionSpec, reachable: bool) -> Self {
        let (target_value, total_value) = resolve_metric_target(config, rev);
        let stable_window = rev.window.unwrap_or(config.stable_window);
        let panic_pct = rev.panic_window_percentage.unwrap_or(config.panic_window_percentage);
        // Go: time.Duration(float64(stable) * pct / 100).Round(time.Second), at least BucketSize.
        let panic_secs = (stable_window.as_secs_f64() * panic_pct / 100.0).round();
        let panic_window = Duration::from_secs_f64(panic_secs.max(0.0)).max(BUCKET_SIZE);
        let initial_scale = match rev.initial_scale {
            Some(0) if !config.allow_zero_initial_scale => config.initial_scale,
            Some(s) => s,
            None => config.initial_scale,
        };
        let min_scale = if reachable { rev.min_scale.unwrap_or(config.min_scale) } else { 0 };
        Self {
            metric: rev.metric,
            target_value,
            total_value,
            target_burst_capacity: rev
                .target_burst_capacity
                .unwrap_or(config.target_burst_capacity),
            panic_threshold: rev
                .panic_threshold_percentage
                .unwrap_or(config.panic_threshold_percentage)
                / 100.0,
            max_scale_up_rate: config.max_scale_up_rate,
            max_scale_down_rate: config.max_scale_down_rate,
            stable_window,
            panic_window,
            scale_down_delay: rev.scale_down_delay.unwrap_or(config.scale_down_delay),
            initial_scale,
            activation_scale: rev.activation_scale,
            reachable,
            min_scale,
            max_scale: rev.max_scale.unwrap_or(config.max_scale),
            enable_scale_to_zero: config.enable_scale_to_zero,
            scale_to_zero_grace_period: config.scale_to_zero_grace_period,
            scale_to_zero_pod_retention_period: rev
                .scale_to_zero_pod_retention_period
                .unwrap_or(config.scale_to_zero_pod_retention_period),
            activation_timeout: ACTIVATION_TIMEOUT,
            algorithm: rev.algorithm,
        }
    }

    /// Empty metric windows of this spec's lengths, for the revision's reports.
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.stable_window, self.panic_window, self.algorithm)
    }
}

/// `ResolveMetricTarget`: (target, total) per pod. For concurrency the total is
/// `containerConcurrency` (or the default when 0); a `target` annotation replaces it, capped by
/// a non-zero `containerConcurrency`; the utilisation scales it.
fn resolve_metric_target(config: &Config, rev: &RevisionSpec) -> (f64, f64) {
    let cc = rev.container_concurrency;
    let (mut total, mut utilisation) = match rev.metric {
        Metric::Rps => (config.rps_target_default, config.target_utilization),
        Metric::Concurrency => (
            if cc == 0 { config.container_concurrency_target_default } else { cc as f64 },
            config.container_concurrency_target_fraction,
        ),
    };
    if let Some(target) = rev.target {
        total = target;
        if rev.metric == Metric::Concurrency && cc != 0 {
            total = target.min(cc as f64);
        }
    }
    if let Some(u) = rev.target_utilization {
        utilisation = u;
    }
    ((total * utilisation).max(TARGET_MIN), total)
}

/// The revision's `Active` condition as the KPA keeps it on the PodAutoscaler (and the
/// Revision mirrors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activity {
    /// `Active=Unknown`: pods are being provisioned while requests wait.
    Activating,
    /// `Active=True`: ready pods serve the traffic.
    Active,
    /// `Active=False`: no traffic (or activation gave up); the revision is at, or going to,
    /// zero.
    Inactive,
}

/// Reasons of the `Active` condition (`pkg/reconciler/autoscaling/kpa/kpa.go`).
pub mod reason {
    /// Activating: requests wait for pods.
    pub const QUEUED: &str = "Queued";
    /// Inactive: no traffic.
    pub const NO_TRAFFIC: &str = "NoTraffic";
    /// Inactive: the revision did not become ready within the activation timeout.
    pub const TIMED_OUT: &str = "TimedOut";
}

/// The `Active` condition with its reason and the time of its last transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveCondition {
    /// The state.
    pub activity: Activity,
    /// One of [`reason`], or "" when Active.
    pub reason: &'static str,
    /// When the condition last changed.
    pub since: Time,
}

impl ActiveCondition {
    /// The condition's status: "True", "False" or "Unknown".
    pub fn status(&self) -> &'static str {
        match self.activity {
            Activity::Active => "True",
            Activity::Inactive => "False",
            Activity::Activating => "Unknown",
        }
    }

    /// Upstream's message for the reason.
    pub fn message(&self) -> &'static str {
        match self.reason {
            reason::QUEUED => {
                "Requests to the target are being buffered as resources are provisioned."
            }
            reason::NO_TRAFFIC => "The target is not receiving traffic.",
            reason::TIMED_OUT => "The target could not be activated.",
            _ => "",
        }
    }
}

/// One decision of [`Autoscaler::scale`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleResult {
    /// The pod count decided: apply it to the workload when [`Self::scale_valid`]. When not
    /// valid it is what the KPA would report as desired (-1 = unknown yet, 0 = waiting out the
    /// grace period before removing the last pod).
    pub desired: i32,
    /// Spare capacity beyond the target burst capacity, in requests
    /// (`floor(ready × total − TBC − observed panic)`; 0 when TBC is 0, -1 when TBC is -1).
    /// Negative: the gateway should hold and spread requests itself (Knative's Proxy mode).
    pub excess_burst_capacity: i32,
    /// Whether the decider is in panic mode.
    pub panic: bool,
    /// The stable-window average of the metric (the last one seen when there is no data).
    pub observed_stable: f64,
    /// The panic-window average.
    pub observed_panic: f64,
    /// Whether the controller should write [`Self::desired`] to the workload: false while
    /// there is no data yet, while activation is pending without a decision, and while an
    /// inactive revision waits out the grace period.
    pub scale_valid: bool,
    /// The revision's `Active` condition after this decision.
    pub active: ActiveCondition,
}

/// What the decider alone decided (upstream's `ScaleResult`).
#[derive(Debug, Clone, Copy)]
struct Decision {
    desired: i32,
    excess_burst_capacity: i32,
    stable: f64,
    panic: f64,
}

/// The KPA state of one revision. Create it when the revision is created, record the
/// gateway's reports into its [`Metrics`], and call [`Autoscaler::scale`] every
/// [`TICK_INTERVAL`] (and at once when a request waits at zero).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaler {
    spec: DeciderSpec,
    /// When panic mode was entered or last extended.
    panic_time: Option<Time>,
    /// The highest decision in the current panic (the ratchet).
    max_panic_pods: i32,
    delay_window: Option<MaxWindow>,
    active: ActiveCondition,
    /// The workload reached its initial scale once (`ScaleTargetInitialized`).
    initialized: bool,
    /// The decider's last valid decision (`Decider.Status.DesiredScale`), -1 before the first.
    last_decision: i32,
    last_excess_burst_capacity: i32,
    last_observed: (f64, f64),
}

impl Autoscaler {
    /// A new revision's autoscaler at `now`. Like upstream it starts in panic mode when more
    /// than one pod is already ready (a restarted autoscaler has no metric history and must not
    /// scale down on it), and the revision starts `Activating`.
    pub fn new(spec: DeciderSpec, now: Time, ready_pods: i32) -> Self {
        let ready_pods = ready_pods.max(0);
        let tbc = spec.target_burst_capacity;
        // multiscaler.Create: the EBC before the first decision.
        let ebc = if tbc == -1.0 || tbc == 0.0 {
            tbc as i32
        } else {
            (f64::from(spec.initial_scale) * spec.total_value - tbc) as i32
        };
        Self {
            delay_window: delay_window(&spec),
            spec,
            panic_time: (ready_pods > 1).then_some(now),
            max_panic_pods: ready_pods,
            active: ActiveCondition {
                activity: Activity::Activating,
                reason: reason::QUEUED,
                since: now,
            },
            initialized: false,
            last_decision: -1,
            last_excess_burst_capacity: ebc,
            last_observed: (0.0, 0.0),
        }
    }

    /// The spec in force.
    pub fn spec(&self) -> &DeciderSpec {
        &self.spec
    }

    /// The `Active` condition as of the last decision.
    pub fn active(&self) -> ActiveCondition {
        self.active
    }

    /// Replaces the spec (a config-autoscaler change or the revision's reachability changed);
    /// the panic state and the `Active` condition carry over, the delay window restarts if
    /// its length changed. The caller resizes the revision's [`Metrics`] to the new windows
    /// ([`Metrics::resize`]).
    pub fn update(&mut self, spec: DeciderSpec) {
        if spec.scale_down_delay != self.spec.scale_down_delay {
            self.delay_window = delay_window(&spec);
        }
        self.spec = spec;
    }

    /// Decides the revision's scale at `now` from its metrics and its ready pods.
    pub fn scale(&mut self, now: Time, metrics: &Metrics, ready_pods: i32) -> ScaleResult {
        let ready_pods = ready_pods.max(0);
        if let Some(d) = self.decide(now, metrics, ready_pods) {
            self.last_decision = d.desired;
            self.last_excess_burst_capacity = d.excess_burst_capacity;
            self.last_observed = (d.stable, d.panic);
        }
        let (desired, scale_valid) = self.bounded(now, self.last_decision);
        self.compute_active(now, desired, ready_pods);
        ScaleResult {
            desired,
            excess_burst_capacity: self.last_excess_burst_capacity,
            panic: self.panic_time.is_some(),
            observed_stable: self.last_observed.0,
            observed_panic: self.last_observed.1,
            scale_valid,
            active: self.active,
        }
    }

    /// Upstream's `autoscaler.Scale`; `None` when there is no data in the stable window.
    fn decide(&mut self, now: Time, metrics: &Metrics, ready: i32) -> Option<Decision> {
        let spec = &self.spec;
        let (stable, panic) = metrics.stable_and_panic(spec.metric, now)?;
        // With no ready pod, rates are relative to one.
        let ready_f = f64::from(ready.max(1));
        // At least one pod more when scaling up, whatever the rate.
        let max_up = (spec.max_scale_up_rate * ready_f).ceil();
        let max_down =
            if spec.reachable { (ready_f / spec.max_scale_down_rate).floor() } else { 0.0 };
        let dspc = (stable / spec.target_value).ceil();
        let dppc = (panic / spec.target_value).ceil();
        let mut desired_stable = dspc.max(max_down).min(max_up) as i32;
        let mut desired_panic = dppc.max(max_down).min(max_up) as i32;
        if spec.activation_scale > 1 {
            if dspc > 0.0 && spec.activation_scale > desired_stable {
                desired_stable = spec.activation_scale;
            }
            if dppc > 0.0 && spec.activation_scale > desired_panic {
                desired_panic = spec.activation_scale;
            }
        }

        let over_threshold = dppc / ready_f >= spec.panic_threshold;
        match self.panic_time {
            // Enter panic, or extend it while still over the threshold.
            _ if over_threshold => self.panic_time = Some(now),
            // Leave it once a whole stable window passed below the threshold, so that the
            // surge has made its way into the stable average.
            Some(t) if t + spec.stable_window < now => {
                self.panic_time = None;
                self.max_panic_pods = 0;
            }
            _ => {}
        }

        let mut desired = desired_stable;
        if self.panic_time.is_some() {
            // The stable window can be the larger one in some edge cases; take the larger, and
            // never decrease while panicking.
            desired = desired.max(desired_panic);
            self.max_panic_pods = self.max_panic_pods.max(desired);
            desired = self.max_panic_pods;
        }

        if let Some(window) = &mut self.delay_window {
            window.record(now, desired);
            desired = window.current();
        }

        let tbc = spec.target_burst_capacity;
        let ebc = if tbc == 0.0 {
            0.0
        } else if tbc > 0.0 {
            (f64::from(ready) * spec.total_value - tbc - panic).floor()
        } else {
            -1.0
        };
        Some(Decision { desired, excess_burst_capacity: ebc as i32, stable, panic })
    }

    /// The KPA reconciler's `scale`: initial scale, min/max bounds, then scale to zero.
    /// Returns (desired, apply).
    fn bounded(&self, now: Time, want: i32) -> (i32, bool) {
        if want < 0 && self.active.activity != Activity::Activating {
            // Metrics are not collected yet.
            return (want, false);
        }
        let (mut min, max) = (self.spec.min_scale, self.spec.max_scale);
        // Until the workload reached the initial scale once, that is the floor.
        if self.spec.initial_scale > 1 && !self.initialized {
            min = min.max(self.spec.initial_scale);
        }
        let x = if want < min {
            min
        } else if max != 0 && want > max {
            max
        } else {
            want
        };
        self.handle_scale_to_zero(now, x)
    }

    /// `handleScaleToZero`: the last pod goes only when scale to zero is enabled, the revision
    /// was active for a stable window (then it is marked inactive first), and it has been
    /// inactive for the grace period and the pod retention period.
    ///
    /// Upstream can cut the grace period short once it sees the activator in the path for that
    /// long; Kinetic's gateway holds requests for a revision from the moment it is inactive, so
    /// the time in the path is the time inactive and the full grace period applies.
    fn handle_scale_to_zero(&self, now: Time, desired: i32) -> (i32, bool) {
        if desired != 0 {
            return (desired, true);
        }
        if !self.spec.enable_scale_to_zero {
            return (1, true);
        }
        let in_state = now.saturating_since(self.active.since);
        match self.active.activity {
            Activity::Activating => {
                if in_state > self.spec.activation_timeout {
                    (0, true)
                } else {
                    (-1, false)
                }
            }
            Activity::Active => {
                if in_state >= self.spec.stable_window {
                    // Report 0 without applying it: the revision turns inactive.
                    (0, false)
                } else {
                    (1, true)
                }
            }
            Activity::Inactive => {
                let wait = self
                    .spec
                    .scale_to_zero_grace_period
                    .max(self.spec.scale_to_zero_pod_retention_period);
                (0, in_state >= wait)
            }
        }
    }

    /// `computeActiveCondition` over the decided scale and the ready pods.
    fn compute_active(&mut self, now: Time, want: i32, ready: i32) {
        let min = self.spec.min_scale;
        let min_ready =
            if self.initialized { min.max(1) } else { min.max(self.spec.initial_scale) };
        if ready >= min_ready {
            self.initialized = true;
        }
        let inactive = self.active.activity == Activity::Inactive;
        let (activity, why) = if want == 0 || min_ready == 0 {
            if self.active.activity == Activity::Activating && min_ready > 0 {
                (Activity::Inactive, reason::TIMED_OUT)
            } else {
                (Activity::Inactive, reason::NO_TRAFFIC)
            }
        } else if ready < min_ready {
            if want > 0 || !inactive {
                (Activity::Activating, reason::QUEUED)
            } else {
                (Activity::Inactive, reason::NO_TRAFFIC)
            }
        } else if want > 0 || !inactive {
            (Activity::Active, "")
        } else {
            return;
        };
        if (activity, why) != (self.active.activity, self.active.reason) {
            self.active = ActiveCondition { activity, reason: why, since: now };
        }
    }
}

fn delay_window(spec: &DeciderSpec) -> Option<MaxWindow> {
    (!spec.scale_down_delay.is_zero())
        .then(|| MaxWindow::new(spec.scale_down_delay.as_secs(), TICK_INTERVAL.as_secs()))
}
