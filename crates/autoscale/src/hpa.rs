//! The HorizontalPodAutoscaler's decisions as pure functions, ported from kube-controller-manager's
//! `pkg/controller/podautoscaler` (`replica_calculator.go` and `horizontal.go`): no client, no
//! clock (times are offsets from any fixed origin), no I/O.
//!
//! - [`resource_replicas`]: the replica count one resource metric asks for
//!   (`GetResourceReplicas` for `Utilization` targets, `GetRawResourceReplicas` /
//!   `calcPlainMetricReplicas` for `AverageValue`): pods grouped into ready, unready (CPU only:
//!   within the 5 min CPU initialisation period while unready or before one metric window since
//!   becoming Ready; or unready and never ready since 30 s after start), missing (no metric) and
//!   ignored (deleting, failed, pending); the tolerance (0.1) on the usage ratio; missing pods
//!   counted as 100 % of their request (or the target, if higher) on a scale-down and 0 on a
//!   scale-up; unready pods as 0 on a scale-up; no decision that the missing pods would reverse.
//! - [`plan`]: one reconcile (`reconcileAutoscaler`): a target at zero replicas is not scaled
//!   (`ScalingDisabled`), one outside min/max is brought inside, else the largest proposal of the
//!   valid metrics (none valid, or some invalid on a scale-down: no change, `ScalingActive`
//!   False) is stabilised and rate-limited, by `behavior` when set
//!   (`normalizeDesiredReplicasWithBehaviors`: per-direction stabilisation windows, Pods/Percent
//!   policies over their periods against the recorded scale events, `selectPolicy`) or else by
//!   the legacy rules (a 5 min scale-down stabilisation, scale-up to at most max(2×current, 4)),
//!   with the `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions upstream sets.
//!
//! All metric values are in milli-units, as upstream's metrics client reads them
//! (`MilliValue()` of CPU cores and of memory bytes alike).

use std::collections::BTreeMap;
use std::time::Duration;

/// `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);
/// `--horizontal-pod-autoscaler-downscale-stabilization`, also the scale-down window of a
/// `behavior` that sets none.
pub const DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);
/// `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// A pod's phase, as the calculation distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// A pod's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub status: bool,
    pub last_transition: Duration,
}

/// What the calculation reads of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub phase: Phase,
    pub deleting: bool,
    pub ready: Option<Ready>,
    pub start_time: Option<Duration>,
    /// The sum of the containers' requests of the resource (milli), or the first container
    /// without one.
    pub request: Result<i64, String>,
}

/// One pod's metric: value (milli) at `timestamp`, averaged over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub value: i64,
    pub timestamp: Duration,
    pub window: Duration,
}

/// A resource metric's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Per pod, milli.
    AverageValue(i64),
}

/// The replica count a metric asks for and what it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// The average utilisation in percent of requests (Utilization targets).
    pub utilization: Option<i32>,
    /// The average value per pod (milli).
    pub average: i64,
}

/// Why no replica count could be computed from a metric (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest { resource: String, container: String, pod: String },
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
    ignored: Vec<String>,
}

/// `groupPods`: which pods count, which are unready (CPU only), which lack metrics.
fn group_pods(
    pods: &[Pod],
    metrics: &BTreeMap<String, Metric>,
    cpu: bool,
    now: Duration,
) -> Groups {
    let mut g = Groups { ready: 0, unready: vec![], missing: vec![], ignored: vec![] };
    for p in pods {
        if p.deleting || p.phase == Phase::Failed || p.phase == Phase::Pending {
            g.ignored.push(p.name.clone());
            continue;
        }
        let Some(m) = metrics.get(&p.name) else {
            g.missing.push(p.name.clone());
            continue;
        };
        if cpu {
            let unready = match (p.ready, p.start_time) {
                (Some(c), Some(start)) => {
                    if start + CPU_INITIALIZATION_PERIOD > now {
                        // Within the initialisation period: unready, or no full metric window
                        // since the pod became Ready.
                        !c.status || m.timestamp < c.last_transition + m.window
                    } else {
                        // Unready and never ready since shortly after start.
                        !c.status && start + INITIAL_READINESS_DELAY > c.last_transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.push(p.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// `GetResourceUtilizationRatio`: (ratio, utilisation %, average value).
fn utilization_ratio(
    metrics: &BTreeMap<String, Metric>,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), CalcError> {
    let (mut total, mut req, mut n) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        let Some(r) = requests.get(name) else { continue };
        total += m.value;
        req += r;
        n += 1;
    }
    if req == 0 {
        return Err(CalcError::NoMatchingMetrics);
    }
    let utilization = i32::try_from(total * 100 / req).unwrap_or(i32::MAX);
    Ok((f64::from(utilization) / f64::from(target), utilization, total / n))
}

/// `GetMetricUsageRatio`: (ratio, average value).
fn usage_ratio(metrics: &BTreeMap<String, Metric>, target: i64) -> (f64, i64) {
    let n = i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
    let avg = metrics.values().map(|m| m.value).sum::<i64>() / n;
    (avg as f64 / target as f64, avg)
}

fn ceil_i32(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) { i32::MAX } else { c as i32 }
}

/// The replica count of an `Object` or `External` metric with a `Value` target
/// (`getUsageRatioReplicaCount`): `ratio` is the metric over its target; within the tolerance of
/// 1 the count stays, otherwise it is the ratio times the `ready` pods (from zero replicas: the
/// ratio rounded up).
pub fn usage_ratio_replicas(current: i32, ratio: f64, ready: i32) -> i32 {
    if current == 0 {
        return ceil_i32(ratio);
    }
    if (1.0 - ratio).abs() <= TOLERANCE {
        return current;
    }
    ceil_i32(ratio * f64::from(ready))
}

/// The replica count of an `Object` or `External` metric with an `AverageValue` target
/// (`GetObjectPerPodMetricReplicas`, `GetExternalPerPodMetricReplicas`): the metric's `usage`
/// (milli) over the per-pod target, unless the `status_replicas` already hold it within the
/// tolerance.
pub fn per_pod_replicas(status_replicas: i32, usage: i64, target_per_pod: i64) -> i32 {
    if target_per_pod <= 0 {
        return status_replicas;
    }
    let ratio = usage as f64 / (target_per_pod as f64 * f64::from(status_replicas));
    if (1.0 - ratio).abs() <= TOLERANCE {
        return status_replicas;
    }
    ceil_i32(usage as f64 / target_per_pod as f64)
}

/// The replica count a resource metric asks for (`GetResourceReplicas` and
/// `GetRawResourceReplicas`).
///
/// `metrics` are the pods' metrics by pod name; `cpu` turns on the readiness rules upstream
/// applies to CPU only.
///
/// # Errors
/// No pods, no usable metrics, or (for Utilization) a pod without a request.
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    pods: &[Pod],
    metrics: &BTreeMap<String, Metric>,
    now: Duration,
) -> Result<Proposal, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group_pods(pods, metrics, resource == "cpu", now);
    let mut metrics = metrics.clone();
    for n in g.ignored.iter().chain(&g.unready) {
        metrics.remove(n);
    }
    // Metrics of pods the selector no longer selects do not count either.
    metrics.retain(|n, _| pods.iter().any(|p| &p.name == n));
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let requests = match target {
        Target::Utilization(_) => {
            let mut r = BTreeMap::new();
            for p in pods {
                match &p.request {
                    Ok(v) => {
                        r.insert(p.name.clone(), *v);
                    }
                    Err(container) => {
                        return Err(CalcError::MissingRequest {
                            resource: resource.to_owned(),
                            container: container.clone(),
                            pod: p.name.clone(),
                        });
                    }
                }
            }
            r
        }
        Target::AverageValue(_) => BTreeMap::new(),
    };
    let ratio = |m: &BTreeMap<String, Metric>| -> Result<(f64, Option<i32>, i64), CalcError> {
        match target {
            Target::Utilization(t) => {
                utilization_ratio(m, &requests, t).map(|(r, u, a)| (r, Some(u), a))
            }
            Target::AverageValue(t) => {
                let (r, a) = usage_ratio(m, t);
                Ok((r, None, a))
            }
        }
    };
    let (ratio0, utilization, average) = ratio(&metrics)?;
    let keep = Proposal { replicas: current, utilization, average };
    let scale_up_with_unready = !g.unready.is_empty() && ratio0 > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio0).abs() <= TOLERANCE {
            return Ok(keep);
        }
        let ready = i32::try_from(g.ready).unwrap_or(i32::MAX);
        return Ok(Proposal { replicas: ceil_i32(ratio0 * f64::from(ready)), ..keep });
    }
    let stamp = |value: i64| Metric { value, timestamp: now, window: Duration::ZERO };
    if !g.missing.is_empty() {
        for n in &g.missing {
            let v = if ratio0 < 1.0 {
                // On a scale-down a missing pod counts as using all its request (or the target
                // when that is above 100 %); on a scale-up as using nothing.
                match target {
                    Target::Utilization(t) => {
                        requests.get(n).copied().unwrap_or(0) * i64::from(t.max(100)) / 100
                    }
                    Target::AverageValue(t) => t,
                }
            } else {
                0
            };
            if ratio0 != 1.0 {
                metrics.insert(n.clone(), stamp(v));
            }
        }
    }
    if scale_up_with_unready {
        for n in &g.unready {
            metrics.insert(n.clone(), stamp(0));
        }
    }
    let (ratio1, _, _) = ratio(&metrics)?;
    if (1.0 - ratio1).abs() <= TOLERANCE
        || (ratio0 < 1.0 && ratio1 > 1.0)
        || (ratio0 > 1.0 && ratio1 < 1.0)
    {
        return Ok(keep);
    }
    let n = i32::try_from(metrics.len()).unwrap_or(i32::MAX);
    let replicas = ceil_i32(ratio1 * f64::from(n));
    if (ratio1 < 1.0 && replicas > current) || (ratio1 > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(Proposal { replicas, ..keep })
}

/// How a scaling policy limits change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period: Duration,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// `HPAScalingRules`, defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `None` on scale-down: the controller's default (5 min).
    pub stabilization: Option<Duration>,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// `HorizontalPodAutoscalerBehavior`, defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

impl Rules {
    /// Upstream's default scale-up rules: no stabilisation, the larger of +4 pods and +100 %
    /// per 15 s.
    pub fn default_up() -> Rules {
        let p = |kind, value| Policy { kind, value, period: Duration::from_secs(15) };
        Rules {
            stabilization: Some(Duration::ZERO),
            select: Select::Max,
            policies: vec![p(PolicyKind::Pods, 4), p(PolicyKind::Percent, 100)],
        }
    }

    /// Upstream's default scale-down rules: the controller's window, −100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            stabilization: None,
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: Duration::from_secs(15),
            }],
        }
    }
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior { up: Rules::default_up(), down: Rules::default_down() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recommendation {
    replicas: i32,
    at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    change: i32,
    at: Duration,
    outdated: bool,
}

/// What the controller remembers of one autoscaler between reconciles (upstream keeps it in
/// memory too, so a restarted controller starts afresh).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    recommendations: Vec<Recommendation>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
}

/// A condition to set on the autoscaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn cond(kind: &'static str, status: bool, reason: &str, message: String) -> Condition {
    Condition { kind, status, reason: reason.to_owned(), message }
}

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub desired: i32,
    /// Whether the target's scale is to be written.
    pub rescale: bool,
    /// Why (for the `SuccessfulRescale` Event).
    pub reason: String,
    /// Conditions to set, in order (a later one of the same kind replaces an earlier one).
    pub conditions: Vec<Condition>,
    /// Set when the metrics gave no usable answer: the reconcile reports this error and only
    /// refreshes the current replicas and metrics in status.
    pub error: Option<String>,
}

/// One metric's outcome for [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricOutcome {
    /// A proposal, with the name shown in messages (`cpu resource utilization (percentage of
    /// request)`).
    Valid { replicas: i32, name: String },
    /// The condition reason (`FailedGetResourceMetric`) and message.
    Invalid { reason: String, message: String },
}

/// One reconcile of an autoscaler whose target's scale says `current` replicas
/// (`reconcileAutoscaler`).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    history: &mut History,
    behavior: Option<&Behavior>,
    current: i32,
    min: i32,
    max: i32,
    metrics: &[MetricOutcome],
    now: Duration,
) -> Plan {
    let mut conditions = vec![cond(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    )];
    let out = |desired: i32, reason: String, conditions: Vec<Condition>| Plan {
        desired,
        rescale: desired != current,
        reason,
        conditions,
        error: None,
    };
    if current == 0 && min != 0 {
        conditions.push(cond(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
        return Plan { rescale: false, ..out(0, String::new(), conditions) };
    }
    if current > max {
        return out(max, "Current number of replicas above Spec.MaxReplicas".into(), conditions);
    }
    if current < min {
        return out(min, "Current number of replicas below Spec.MinReplicas".into(), conditions);
    }
    // computeReplicasForMetrics.
    let mut proposal: Option<(i32, &str)> = None;
    let mut first_invalid: Option<(&str, &str)> = None;
    let mut invalid = 0;
    for m in metrics {
        match m {
            MetricOutcome::Valid { replicas, name } => {
                if proposal.is_none_or(|(r, _)| *replicas > r) {
                    proposal = Some((*replicas, name));
                }
            }
            MetricOutcome::Invalid { reason, message } => {
                invalid += 1;
                if first_invalid.is_none() {
                    first_invalid = Some((reason, message));
                }
            }
        }
    }
    let (mut desired, metric_name) = proposal.unwrap_or((0, ""));
    if invalid >= metrics.len() || (invalid > 0 && desired < current) {
        let (reason, message) = first_invalid.unwrap_or(("InvalidMetricSourceType", ""));
        conditions.push(cond("ScalingActive", false, reason, message.to_owned()));
        let error = if metrics.is_empty() { "no metrics to compute from" } else { message };
        return Plan {
            desired: current,
            rescale: false,
            reason: String::new(),
            conditions,
            error: Some(error.to_owned()),
        };
    }
    conditions.push(cond(
        "ScalingActive",
        true,
        "ValidMetricFound",
        format!("the HPA was able to successfully calculate a replica count from {metric_name}"),
    ));
    let mut reason = String::new();
    if desired > current {
        reason = format!("{metric_name} above target");
    }
    if desired < current {
        reason = "All metrics below target".into();
    }
    desired = match behavior {
        Some(b) => with_behavior(history, b, current, desired, min, max, now, &mut conditions),
        None => legacy(history, current, desired, min, max, now, &mut conditions),
    };
    out(desired, reason, conditions)
}

/// `normalizeDesiredReplicas`: the legacy rules when no `behavior` is set.
fn legacy(
    h: &mut History,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Duration,
    conditions: &mut Vec<Condition>,
) -> i32 {
    // stabilizeRecommendation: the highest recommendation of the window, this one included.
    let cutoff = now.checked_sub(DOWNSCALE_STABILIZATION);
    let mut stabilized = desired;
    let mut old = None;
    for (i, r) in h.recommendations.iter().enumerate() {
        if cutoff.is_some_and(|c| r.at < c) {
            old = Some(i);
        } else if r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    let rec = Recommendation { replicas: desired, at: now };
    match old {
        Some(i) => h.recommendations[i] = rec,
        None => h.recommendations.push(rec),
    }
    conditions.push(if stabilized != desired {
        cond(
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
        )
    } else {
        cond("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size".into())
    });
    // convertDesiredReplicasWithRules.
    let scale_up_limit = ((2.0 * f64::from(current)).max(4.0)) as i32;
    let (max_allowed, (mut r, mut m)) = if max > scale_up_limit {
        (
            scale_up_limit,
            (
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            ),
        )
    } else {
        (
            max,
            ("TooManyReplicas", "the desired replica count is more than the maximum replica count"),
        )
    };
    let result = if stabilized < min {
        (r, m) =
            ("TooFewReplicas", "the desired replica count is less than the minimum replica count");
        min
    } else if stabilized > max_allowed {
        max_allowed
    } else {
        (r, m) = ("DesiredWithinRange", "the desired count is within the acceptable range");
        stabilized
    };
    conditions.push(cond("ScalingLimited", result != stabilized, r, m.to_owned()));
    result
}

/// `normalizeDesiredReplicasWithBehaviors`.
#[allow(clippy::too_many_arguments)]
fn with_behavior(
    h: &mut History,
    b: &Behavior,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Duration,
    conditions: &mut Vec<Condition>,
) -> i32 {
    // stabilizeRecommendationWithBehaviors.
    let up_window = b.up.stabilization.unwrap_or(Duration::ZERO);
    let down_window = b.down.stabilization.unwrap_or(DOWNSCALE_STABILIZATION);
    let after = |at: Duration, window: Duration| now.checked_sub(window).is_none_or(|c| at > c);
    let (mut up, mut down) = (desired, desired);
    let mut old = None;
    for (i, r) in h.recommendations.iter().enumerate() {
        if after(r.at, up_window) {
            up = up.min(r.replicas);
        }
        if after(r.at, down_window) {
            down = down.max(r.replicas);
        }
        if !after(r.at, up_window) && !after(r.at, down_window) {
            old = Some(i);
        }
    }
    let stabilized = current.max(up).min(down);
    let rec = Recommendation { replicas: desired, at: now };
    match old {
        Some(i) => h.recommendations[i] = rec,
        None => h.recommendations.push(rec),
    }
    conditions.push(if stabilized != desired {
        if desired >= current {
            cond(
                "AbleToScale",
                true,
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation".into(),
            )
        } else {
            cond(
                "AbleToScale",
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
            )
        }
    } else {
        cond("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size".into())
    });
    // convertDesiredReplicasWithBehaviorRate.
    let mut result = stabilized;
    let (mut r, mut m) = ("DesiredWithinRange", "the desired count is within the acceptable range");
    if stabilized > current {
        let limit = scale_up_limit(h, &b.up, current, now).max(current);
        let max_allowed = if max > limit {
            (r, m) = (
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            );
            limit
        } else {
            (r, m) = (
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            );
            max
        };
        if stabilized > max_allowed {
            result = max_allowed;
        } else {
            (r, m) = ("DesiredWithinRange", "the desired count is within the acceptable range");
        }
    } else if stabilized < current {
        let limit = scale_down_limit(h, &b.down, current, now).min(current);
        let min_allowed = if min < limit {
            (r, m) = (
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            );
            limit
        } else {
            (r, m) = (
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            );
            min
        };
        if stabilized < min_allowed {
            result = min_allowed;
        } else {
            (r, m) = ("DesiredWithinRange", "the desired count is within the acceptable range");
        }
    }
    conditions.push(cond("ScalingLimited", result != stabilized, r, m.to_owned()));
    result
}

/// The replicas added (or removed) by `events` within the last `period`.
fn change_in(events: &[ScaleEvent], period: Duration, now: Duration) -> i32 {
    events
        .iter()
        .filter(|e| now.checked_sub(period).is_none_or(|c| e.at > c))
        .map(|e| e.change)
        .sum()
}

fn period_start(h: &History, period: Duration, current: i32, now: Duration) -> i32 {
    current - change_in(&h.up_events, period, now) + change_in(&h.down_events, period, now)
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(h: &History, rules: &Rules, current: i32, now: Duration) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select {
        Select::Disabled => return current,
        Select::Min => std::cmp::min,
        Select::Max => std::cmp::max,
    };
    let mut result = if rules.select == Select::Min { i32::MAX } else { i32::MIN };
    for p in &rules.policies {
        let start = period_start(h, p.period, current, now);
        let proposed = match p.kind {
            PolicyKind::Pods => start.saturating_add(p.value),
            // Rounded up, or a small percentage of few pods would never add one.
            PolicyKind::Percent => ceil_i32(f64::from(start) * (1.0 + f64::from(p.value) / 100.0)),
        };
        result = pick(result, proposed);
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`.
fn scale_down_limit(h: &History, rules: &Rules, current: i32, now: Duration) -> i32 {
    // The most permissive limit of a scale-down is the lowest one.
    let pick: fn(i32, i32) -> i32 = match rules.select {
        Select::Disabled => return current,
        Select::Min => std::cmp::max,
        Select::Max => std::cmp::min,
    };
    let mut result = if rules.select == Select::Min { i32::MIN } else { i32::MAX };
    for p in &rules.policies {
        let start = period_start(h, p.period, current, now);
        let proposed = match p.kind {
            PolicyKind::Pods => start - p.value,
            PolicyKind::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        };
        result = pick(result, proposed);
    }
    result
}

/// `storeScaleEvent`: records a rescale from `prev` to `new` so later policies count it.
pub fn record_scale(h: &mut History, b: Option<&Behavior>, prev: i32, new: i32, now: Duration) {
    let Some(b) = b else { return };
    let (events, rules, change) = if new > prev {
        (&mut h.up_events, &b.up, new - prev)
    } else {
        (&mut h.down_events, &b.down, prev - new)
    };
    let longest = rules.policies.iter().map(|p| p.period).max().unwrap_or(Duration::ZERO);
    for e in events.iter_mut() {
        if now.checked_sub(longest).is_some_and(|c| e.at <= c) {
            e.outdated = true;
        }
    }
    let ev = ScaleEvent { change, at: now, outdated: false };
    match events.iter().rposition(|e| e.outdated) {
        Some(i) => events[i] = ev,
        None => events.push(ev),
    }
}

#[cfg(test)]
mod tests;
