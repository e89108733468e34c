//! The EffectiveHorizontalPodAutoscaler controller (Crane's `autoscaling.crane.io/v1alpha1`,
//! issue 13 part 3): an HPA whose recommendation is the larger of the reactive one and what a
//! forecast of the load needs, as Crane's EHPA (its HPA carries the prediction metric beside the
//! original one and takes the larger). Unlike Crane, which forecasts the largest value within
//! `predictionWindowSeconds` (an hour by default), Kinetic forecasts a high quantile of the load
//! over the *lead time*: the target's pods' measured start-up p95 (from their timelines, see
//! `kinetic_api::timeline`) plus the control delay, so capacity is ready when the load comes
//! and not held for an hour ahead of it.
//!
//! Each autoscaler is processed once per control period: `min(15 s, dsp.sampleInterval)` (so a
//! step shorter than the HPA's sync period gets a decision per step). A pass:
//!
//! 1. reads the target's `scale` subresource and lists its pods by the scale's selector;
//! 2. per metric: the reactive recommendation (the HPA controller's code: `Resource`,
//!    `ContainerResource` from `metrics.k8s.io`; `External` as upstream's, see
//!    [`external_value`]) and
//!    one sample of the metric's *total* (all pods' usage, or the External value) into its
//!    history;
//! 3. with `spec.prediction`: [`kinetic_predict::decide`] on the history, the start-up p95 of
//!    the target's pods and the control delay; the result is one more metric outcome, so the
//!    HPA's `plan` (bounds, tolerance, `behavior`'s policies and stabilisation windows) treats
//!    it as Crane's HPA treats the prediction metric;
//! 4. `Auto` writes the scale; `Preview` writes only status, or holds the target at
//!    `specificReplicas` when set (Crane: "If not set, when ScaleStrategy is setting to
//!    Preview, it will just stop scaling");
//! 5. status: Crane's fields, the HPA's conditions (`AbleToScale`, `ScalingActive`,
//!    `ScalingLimited`), Crane's `Ready` and `PredictionReady`, and `status.prediction` with
//!    the periods found, the forecast, the lead time, the start-up p95 and both
//!    recommendations.
//!
//! **History** is one sample per `dsp.sampleInterval`, up to `dsp.historyLength`, built from
//! the metric reads above. It is kept in memory and persisted, bounded, in a ConfigMap owned by
//! the autoscaler (`ehpa-history-<name>`, see [`history`]), which a restarted or newly started
//! controller reads on its first pass, so it forecasts at once. Crane reads its history from
//! Prometheus and keeps its predictions in `TimeSeriesPrediction` objects.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{MetricSpec, MetricTarget, ResourceMetricSource};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kinetic_api::crane::{
    self, EffectiveHorizontalPodAutoscaler, EffectiveHorizontalPodAutoscalerStatus,
    PredictionStatus, condition, strategy,
};
use kinetic_autoscale::hpa::{self, MetricOutcome};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

use crate::events::{EventReq, EventSink};

mod algorithm;
mod history;
use crate::hpa::{
    Failure, behavior_of, get_scale, list_pods, metric_outcome, milli, pod_metrics, quantity,
    set_scale, since_epoch,
};
use history::Series;
pub use history::{DATA_KEY as HISTORY_DATA_KEY, configmap_name as history_configmap_name};

/// Annotation naming a loopback HTTP endpoint that serves `External` metrics: the controller
/// reads `GET {url}/{metric name}`, whose body is the metric's current value (a number). For
/// tests and demos (a load generator on the same host); only `http://127.x.y.z:port` is
/// accepted. Without it, `External` metrics come from `external.metrics.k8s.io`, as upstream's.
pub const EXTERNAL_METRICS_URL_ANNOTATION: &str = "ehpa.kinetic.dev/external-metrics-url";

/// The quantile of the load forecast over the lead time.
pub const QUANTILE: f64 = 0.95;
/// The most start-up measurements kept per autoscaler.
const MAX_STARTUPS: usize = 64;

/// The CRD this controller serves.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![EffectiveHorizontalPodAutoscaler::crd()]
}

/// Failures of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of EffectiveHorizontalPodAutoscaler {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Default)]
struct State {
    hpa: hpa::History,
    /// Metric key → its history.
    series: HashMap<String, Series>,
    /// Whether the persisted history was read (once, on the first pass).
    loaded: bool,
    /// When the history was last written.
    persisted: Option<Instant>,
    /// Pod name → start-up in milliseconds (oldest dropped past [`MAX_STARTUPS`]).
    startups: Vec<(String, u64)>,
    last: Option<Instant>,
    spec: Option<Value>,
}

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
    state: Mutex<HashMap<String, State>>,
}

/// Runs the EffectiveHorizontalPodAutoscaler controller until `shutdown` resolves.
///
/// # Errors
/// None so far: failures are reported in the autoscalers' conditions and retried.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: crate::backoff::Backoff::default(),
        events: EventSink::spawn(client.clone(), "effective-hpa-controller".to_owned()),
        state: Mutex::default(),
    });
    Controller::new(
        Api::<EffectiveHorizontalPodAutoscaler>::all(client),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(crate::log_reconcile("ehpa"))
    .await;
    Ok(())
}

fn error_policy(
    e: Arc<EffectiveHorizontalPodAutoscaler>,
    err: &ReconcileError,
    ctx: Arc<Ctx>,
) -> Action {
    ctx.backoff.retry(&*e, err)
}

fn key(e: &EffectiveHorizontalPodAutoscaler) -> String {
    format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any())
}

/// Parses a duration as Crane writes them: Go's (`15s`, `1m0s`, `1h30m`) plus `d` for days.
pub fn crane_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(days) = s.strip_suffix('d') {
        let d: f64 = days.parse().ok()?;
        return (d.is_finite() && d >= 0.0).then(|| Duration::from_secs_f64(d * 86_400.0));
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        let end = rest[n..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| n + i);
        total += value
            * match &rest[n..end] {
                "d" => 86_400.0,
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                _ => return None,
            };
        rest = &rest[end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The history's step and length from `spec.prediction.predictionAlgorithm.dsp`, with
/// Crane's defaults (1 m, 3 d); the step at least 1 s.
fn history_params(e: &EffectiveHorizontalPodAutoscaler) -> (Duration, Duration) {
    let dsp = e
        .spec
        .prediction
        .as_ref()
        .and_then(|p| p.prediction_algorithm.as_ref())
        .and_then(|a| a.dsp.as_ref());
    let get = |v: Option<&str>, default: &str| {
        v.filter(|s| !s.is_empty())
            .and_then(crane_duration)
            .or_else(|| crane_duration(default))
            .unwrap_or(Duration::from_secs(60))
    };
    // With the `percentile` algorithm its own `sampleInterval` comes first (Crane's
    // percentile config has one; it has no history length, so `dsp.historyLength` or the
    // default is the history kept).
    let algorithm = e.spec.prediction.as_ref().and_then(|p| p.prediction_algorithm.as_ref());
    let percentile_interval = algorithm
        .filter(|a| a.algorithm_type == crane::algorithm::PERCENTILE)
        .and_then(|a| a.percentile.as_ref())
        .and_then(|p| p.get("sampleInterval"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let step = get(
        percentile_interval.or(dsp.map(|d| d.sample_interval.as_str())),
        crane::DEFAULT_SAMPLE_INTERVAL,
    )
    .max(Duration::from_secs(1));
    let length = get(dsp.map(|d| d.history_length.as_str()), crane::DEFAULT_HISTORY_LENGTH);
    (step, length)
}

/// The control period: the HPA's sync period, or the history's step when shorter.
fn control_period(e: &EffectiveHorizontalPodAutoscaler) -> Duration {
    history_params(e).0.min(hpa::SYNC_PERIOD)
}

async fn reconcile(
    e: Arc<EffectiveHorizontalPodAutoscaler>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    ctx.backoff
        .reconcile(&*e, async {
            let k = key(&e);
            if e.meta().deletion_timestamp.is_some() {
                ctx.state.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                return Ok(Action::await_change());
            }
            let period = control_period(&e);
            // As the HPA controller: at most once per period, unless the spec changed (our own
            // status writes do not retrigger a pass).
            let spec = serde_json::to_value(&e.spec).unwrap_or(Value::Null);
            {
                let st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = st.get(&k)
                    && s.spec.as_ref() == Some(&spec)
                    && let Some(last) = s.last
                    && last.elapsed() < period
                {
                    return Ok(Action::requeue(period - last.elapsed()));
                }
            }
            {
                let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                let s = st.entry(k.clone()).or_default();
                s.last = Some(Instant::now());
                s.spec = Some(spec);
            }
            reconcile_pass(&e, &ctx, period).await?;
            Ok(Action::requeue(period))
        })
        .await
}

/// One metric's reading: the reactive outcome, its status entry, and for the forecast its
/// total and what one replica handles at the target.
struct Reading {
    key: String,
    outcome: MetricOutcome,
    total: Option<f64>,
    per_pod: Option<f64>,
}

/// The metrics of `spec`, or upstream's default: 80 % average CPU utilisation.
fn metrics_of(e: &EffectiveHorizontalPodAutoscaler) -> Vec<MetricSpec> {
    match e.spec.metrics.as_ref().filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None => vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        }],
    }
}

/// Whether `url` is `http://` to a loopback address (the only synthetic source accepted).
fn loopback_url(url: &str) -> Option<(std::net::SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let addr: std::net::SocketAddr = host.parse().ok()?;
    addr.ip().is_loopback().then(|| (addr, format!("/{}", path.trim_end_matches('/'))))
}

/// `GET http://{addr}{path}` over HTTP/1.0; the body as a number.
async fn http_number(addr: std::net::SocketAddr, path: &str) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .map_err(|_| format!("GET http://{addr}{path} timed out"))?
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        return Err(format!("GET http://{addr}{path}: {}", head.lines().next().unwrap_or("")));
    }
    body.trim().parse().map_err(|_| format!("GET http://{addr}{path}: not a number: {body:?}"))
}

/// An `External` metric's current value in milli-units: from the loopback source named by
/// [`EXTERNAL_METRICS_URL_ANNOTATION`], else from `external.metrics.k8s.io`, as upstream's.
async fn external_value(
    client: &Client,
    e: &EffectiveHorizontalPodAutoscaler,
    metric: &k8s_openapi::api::autoscaling::v2::MetricIdentifier,
) -> Result<f64, String> {
    let ns = e.namespace().unwrap_or_default();
    if let Some(url) = e.annotations().get(EXTERNAL_METRICS_URL_ANNOTATION) {
        let (addr, base) = loopback_url(url).ok_or_else(|| {
            format!(
                "{EXTERNAL_METRICS_URL_ANNOTATION} must be http://127.x.y.z:port/…, got {url:?}"
            )
        })?;
        let path = format!("{}/{}", base.trim_end_matches('/'), metric.name);
        return http_number(addr, &path).await.map(|v| v * 1000.0);
    }
    crate::hpa::external_metric(client, &ns, metric).await.map(|v| v as f64)
}

/// Reads every metric: the reactive outcome and the forecast's inputs.
async fn read_metrics(
    ctx: &Ctx,
    e: &EffectiveHorizontalPodAutoscaler,
    selector: &str,
    current: i32,
    pods: Result<&[Pod], &String>,
    now: Duration,
) -> Vec<Result<Reading, Failure>> {
    let ns = e.namespace().unwrap_or_default();
    let mut out = Vec::new();
    for m in metrics_of(e) {
        match m.type_.as_str() {
            "Resource" | "ContainerResource" => {
                let (name, container, target) = match (&m.resource, &m.container_resource) {
                    (Some(r), _) => (r.name.clone(), None, r.target.clone()),
                    (None, Some(r)) => {
                        (r.name.clone(), Some(r.container.clone()), r.target.clone())
                    }
                    (None, None) => {
                        out.push(Err(Failure {
                            reason: "InvalidMetricSourceType",
                            message: format!("{} metric without its source", m.type_),
                        }));
                        continue;
                    }
                };
                let reactive =
                    metric_outcome(&ctx.client, &ns, selector, &m, current, pods, now).await;
                let (outcome, _) = match reactive {
                    Ok(o) => o,
                    Err(f) => {
                        out.push(Err(f));
                        continue;
                    }
                };
                let usage =
                    pod_metrics(&ctx.client, &ns, selector, &name, container.as_deref()).await;
                let total = usage.ok().map(|u| u.values().map(|m| m.value as f64).sum::<f64>());
                let per_pod = match (&target.average_utilization, &target.average_value) {
                    (Some(u), _) => pods.ok().and_then(|ps| {
                        let reqs: Vec<i64> = ps
                            .iter()
                            .filter_map(|p| {
                                crate::hpa::pod_info(p, &name, container.as_deref()).request.ok()
                            })
                            .filter(|r| *r > 0)
                            .collect();
                        (!reqs.is_empty()).then(|| {
                            let mean = reqs.iter().sum::<i64>() as f64 / reqs.len() as f64;
                            mean * f64::from(*u) / 100.0
                        })
                    }),
                    (None, Some(v)) => milli(&v.0).map(|v| v as f64),
                    (None, None) => None,
                };
                let key = match &container {
                    Some(c) => format!("{name}/{c}"),
                    None => name,
                };
                out.push(Ok(Reading { key, outcome, total, per_pod }));
            }
            "External" => {
                let Some(x) = &m.external else {
                    out.push(Err(Failure {
                        reason: "InvalidMetricSourceType",
                        message: "External metric without its source".into(),
                    }));
                    continue;
                };
                let name = x.metric.name.clone();
                let usage = match external_value(&ctx.client, e, &x.metric).await {
                    Ok(v) => v,
                    Err(msg) => {
                        out.push(Err(Failure {
                            reason: "FailedGetExternalMetric",
                            message: format!("unable to get external metric {ns}/{name}: {msg}"),
                        }));
                        continue;
                    }
                };
                let (target, per_pod) = match (&x.target.average_value, &x.target.value) {
                    (Some(v), _) => (milli(&v.0).map(|v| v as f64), true),
                    (None, Some(v)) => (milli(&v.0).map(|v| v as f64), false),
                    (None, None) => (None, false),
                };
                let Some(target) = target else {
                    out.push(Err(Failure {
                        reason: "FailedGetExternalMetric",
                        message: format!("invalid target for external metric {name}"),
                    }));
                    continue;
                };
                let replicas = if per_pod {
                    hpa::per_pod_replicas(current, usage.round() as i64, target.round() as i64)
                } else {
                    let ready = pods.map(crate::hpa::ready_pods).unwrap_or(current);
                    hpa::usage_ratio_replicas(current, usage / target, ready)
                };
                out.push(Ok(Reading {
                    key: format!("external/{name}"),
                    outcome: MetricOutcome::Valid {
                        replicas,
                        name: format!("external metric {name}"),
                    },
                    total: Some(usage),
                    per_pod: per_pod.then_some(target),
                }));
            }
            other => {
                let (reason, what) = match other {
                    "Pods" => ("FailedGetPodsMetric", "pods"),
                    "Object" => ("FailedGetObjectMetric", "object"),
                    _ => ("InvalidMetricSourceType", "unknown"),
                };
                out.push(Err(Failure {
                    reason,
                    message: format!(
                        "unable to get {what} metric: no {what} metrics source is available"
                    ),
                }));
            }
        }
    }
    out
}

/// A condition for `status.conditions`, keeping `lastTransitionTime` while the status stays.
fn set_condition(
    list: &mut Vec<Condition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &Time,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let reason = if reason.is_empty() { "Unknown".to_owned() } else { reason.to_owned() };
    match list.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason;
            c.message = message;
            c.observed_generation = generation;
        }
        None => list.push(Condition {
            type_: kind.to_owned(),
            status,
            reason,
            message,
            last_transition_time: now.clone(),
            observed_generation: generation,
        }),
    }
}

async fn reconcile_pass(
    e: &EffectiveHorizontalPodAutoscaler,
    ctx: &Ctx,
    period: Duration,
) -> Result<(), ReconcileError> {
    let k = key(e);
    let ns = e.namespace().unwrap_or_default();
    let now_ts = Timestamp::now();
    let now = since_epoch(now_ts);
    let now_time = Time(Timestamp::from_second(now_ts.as_second()).unwrap_or(now_ts));
    let generation = e.meta().generation;
    let old = e.status.clone().unwrap_or_default();
    let mut status = EffectiveHorizontalPodAutoscalerStatus {
        conditions: old.conditions.clone(),
        last_scale_time: old.last_scale_time.clone(),
        prediction: old.prediction.clone(),
        ..Default::default()
    };
    let target = &e.spec.scale_target_ref;
    let scale = get_scale(&ctx.client, &ns, target).await;
    let (current, selector) = match scale {
        Ok(s) => s,
        Err(msg) => {
            ctx.events.send(EventReq::for_object(e, "Warning", "FailedGetScale", msg.clone()));
            let c = &mut status.conditions;
            set_condition(
                c,
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the EHPA controller was unable to get the target's current scale: {msg}"),
                &now_time,
                generation,
            );
            set_condition(c, condition::READY, false, "FailedGetScale", msg, &now_time, generation);
            status.expect_replicas = old.expect_replicas;
            status.current_replicas = old.current_replicas;
            return write_status(ctx, e, &k, status).await;
        }
    };
    status.current_replicas = Some(current);
    let min = e.spec.min_replicas.unwrap_or(1);
    let max = e.spec.max_replicas;
    let pods = list_pods(&ctx.client, &ns, &selector).await;
    let (step, length) = history_params(e);
    let keep = (length.as_secs_f64() / step.as_secs_f64()).ceil().max(1.0) as usize;
    let readings = if !(current == 0 && min != 0) && current <= max && current >= min {
        read_metrics(ctx, e, &selector, current, pods.as_deref(), now).await
    } else {
        vec![]
    };
    // The persisted history, on the first pass of this controller for the autoscaler.
    let loaded =
        ctx.state.lock().unwrap_or_else(|p| p.into_inner()).get(&k).is_some_and(|s| s.loaded);
    if !loaded {
        let restored = history::load(&ctx.client, e, step.as_secs_f64(), keep).await;
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = st.entry(k.clone()).or_default();
        for (metric, series) in restored {
            s.series.entry(metric).or_insert(series);
        }
        s.loaded = true;
    }
    // The history and the start-ups, then the forecasts (pure, under the lock).
    let mut outcomes: Vec<MetricOutcome> = Vec::new();
    let mut best: Option<(kinetic_predict::Decision, String)> = None;
    let mut to_persist = None;
    {
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = st.entry(k.clone()).or_default();
        for p in pods.as_deref().unwrap_or_default() {
            let name = p.name_any();
            if s.startups.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if let Some(d) = crate::util::startup_of(p) {
                s.startups.push((name, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
                if s.startups.len() > MAX_STARTUPS {
                    s.startups.remove(0);
                }
            }
        }
        let startups: Vec<u64> = s.startups.iter().map(|(_, m)| *m).collect();
        // Crane's `percentile` algorithm when asked for, else Kinetic's forecast (for `dsp`).
        let percentile = e
            .spec
            .prediction
            .as_ref()
            .and_then(|p| p.prediction_algorithm.as_ref())
            .filter(|a| a.algorithm_type == crane::algorithm::PERCENTILE)
            .map(|a| algorithm::percentile_config(a.percentile.as_ref()));
        let window = e
            .spec
            .prediction
            .as_ref()
            .and_then(|p| p.prediction_window_seconds)
            .unwrap_or(crane::DEFAULT_PREDICTION_WINDOW_SECONDS);
        for r in &readings {
            let Ok(r) = r else { continue };
            outcomes.push(r.outcome.clone());
            let Some(total) = r.total else { continue };
            let series = s.series.entry(r.key.clone()).or_default();
            series.record(now.as_secs_f64(), step.as_secs_f64(), keep, total);
            if e.spec.prediction.is_none() {
                continue;
            }
            let MetricOutcome::Valid { replicas: reactive, .. } = r.outcome else { continue };
            let samples = series.samples();
            let input = kinetic_predict::Input {
                samples: &samples,
                step_secs: step.as_secs_f64(),
                startups_millis: &startups,
                control_delay_secs: period.as_secs_f64(),
                window_secs: f64::from(window),
                quantile: QUANTILE,
                per_pod: r.per_pod.unwrap_or(0.0),
                reactive,
            };
            let d = match &percentile {
                None => kinetic_predict::decide(&input),
                // The history is in milli-units, Crane's histogram in the metric's unit.
                Some(Ok(c)) => {
                    kinetic_predict::decide_percentile(&input, c, 1000.0, length.as_secs_f64())
                }
                Some(Err(msg)) => {
                    let mut d = kinetic_predict::decide_percentile(
                        &input,
                        &Default::default(),
                        1000.0,
                        f64::INFINITY,
                    );
                    d.explanation.fallback = Some(msg.clone());
                    d.reason = format!("reactive {reactive}: {msg}");
                    d
                }
            };
            if let Some(p) = d.predicted {
                outcomes.push(MetricOutcome::Valid {
                    replicas: p,
                    name: format!("predicted {}", r.key),
                });
            }
            if best.as_ref().is_none_or(|(b, _)| d.replicas > b.replicas) {
                best = Some((d, r.key.clone()));
            }
        }
        if !s.series.is_empty() && s.persisted.is_none_or(|t| t.elapsed() >= step) {
            to_persist = Some(history::encode(&s.series, step.as_secs_f64(), keep));
            s.persisted = Some(Instant::now());
        }
    }
    if let Some(h) = to_persist
        && let Err(err) = history::save(&ctx.client, e, &h).await
    {
        tracing::warn!(ehpa = %k, error = %err, "persisting the metric history");
    }
    for r in &readings {
        if let Err(f) = r {
            ctx.events.send(EventReq::for_object(e, "Warning", f.reason, f.message.clone()));
            outcomes.push(MetricOutcome::Invalid {
                reason: f.reason.to_owned(),
                message: format!("the EHPA was unable to compute the replica count: {}", f.message),
            });
        }
    }
    let behavior = e.spec.behavior.as_ref().map(behavior_of);
    let plan = {
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = st.entry(k.clone()).or_default();
        hpa::plan(&mut s.hpa, behavior.as_ref(), current, min, max, &outcomes, now)
    };
    for c in &plan.conditions {
        set_condition(
            &mut status.conditions,
            c.kind,
            c.status,
            &c.reason,
            c.message.clone(),
            &now_time,
            generation,
        );
    }
    // The explanation: the reactive recommendation is the largest over the metrics read.
    let reactive_max = readings
        .iter()
        .filter_map(|r| match r {
            Ok(Reading { outcome: MetricOutcome::Valid { replicas, .. }, .. }) => Some(*replicas),
            _ => None,
        })
        .max();
    if e.spec.prediction.is_some() {
        let (ready, reason, message) = match &best {
            Some((d, _)) if d.predicted.is_some() => (true, "PredictionReady", d.reason.clone()),
            Some((d, _)) => (false, "Fallback", d.reason.clone()),
            None => (false, "NoMetric", "no metric value to forecast".to_owned()),
        };
        set_condition(
            &mut status.conditions,
            condition::PREDICTION_READY,
            ready,
            reason,
            message,
            &now_time,
            generation,
        );
        if let Some((d, metric)) = &best {
            let step_s = step.as_secs_f64();
            status.prediction = Some(PredictionStatus {
                metric: metric.clone(),
                periods_seconds: d
                    .explanation
                    .periods
                    .iter()
                    .map(|p| (p.samples as f64 * step_s).round() as i64)
                    .collect(),
                period_seconds: d.explanation.period.map(|p| (p as f64 * step_s).round() as i64),
                forecast: d
                    .explanation
                    .forecast
                    .map(|f| quantity(f.value.round().clamp(0.0, 9.2e18) as i64)),
                lead_time_seconds: Some(d.lead_secs.ceil() as i64),
                startup_p95_millis: d.startup_p95_millis.map(|m| m as i64),
                history_samples: d.explanation.history as i64,
                predicted_replicas: d.predicted,
                reactive_replicas: reactive_max,
                reason: d.reason.clone(),
            });
        }
    } else {
        status.prediction = None;
    }
    if let Some(err) = &plan.error {
        set_condition(
            &mut status.conditions,
            condition::READY,
            false,
            "FailedComputeMetricsReplicas",
            err.clone(),
            &now_time,
            generation,
        );
        status.expect_replicas = old.expect_replicas;
        return write_status(ctx, e, &k, status).await;
    }
    // The strategy.
    let preview = e.spec.scale_strategy == strategy::PREVIEW;
    let (want, write) = match (preview, e.spec.specific_replicas) {
        (false, _) => (plan.desired, plan.rescale),
        (true, Some(n)) => (n, n != current),
        (true, None) => (plan.desired, false),
    };
    status.expect_replicas = Some(want);
    if write {
        match set_scale(&ctx.client, &ns, target, want).await {
            Ok(()) => {
                let why = if preview {
                    format!("specificReplicas {want} (Preview)")
                } else {
                    plan.reason.clone()
                };
                ctx.events.send(EventReq::for_object(
                    e,
                    "Normal",
                    "SuccessfulRescale",
                    format!("New size: {want}; reason: {why}"),
                ));
                tracing::info!(ehpa = %k, from = current, to = want, reason = %why, "rescaled");
                if !preview {
                    let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                    let s = st.entry(k.clone()).or_default();
                    hpa::record_scale(&mut s.hpa, behavior.as_ref(), current, want, now);
                }
                status.last_scale_time = Some(now_time.clone());
                set_condition(
                    &mut status.conditions,
                    condition::READY,
                    true,
                    "ScaleSucceeded",
                    format!("scaled {}/{} from {current} to {want}", target.kind, target.name),
                    &now_time,
                    generation,
                );
            }
            Err(msg) => {
                ctx.events.send(EventReq::for_object(
                    e,
                    "Warning",
                    "FailedRescale",
                    format!("New size: {want}; error: {msg}"),
                ));
                set_condition(
                    &mut status.conditions,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the EHPA controller was unable to update the target scale: {msg}"),
                    &now_time,
                    generation,
                );
                set_condition(
                    &mut status.conditions,
                    condition::READY,
                    false,
                    "FailedUpdateScale",
                    msg,
                    &now_time,
                    generation,
                );
            }
        }
    } else {
        let (reason, message) = if preview && e.spec.specific_replicas.is_none() {
            ("Preview", format!("Preview: recommends {want}, the target is not scaled"))
        } else {
            ("ScaleUnchanged", format!("the target runs the recommended {want}"))
        };
        set_condition(
            &mut status.conditions,
            condition::READY,
            true,
            reason,
            message,
            &now_time,
            generation,
        );
    }
    write_status(ctx, e, &k, status).await
}

async fn write_status(
    ctx: &Ctx,
    e: &EffectiveHorizontalPodAutoscaler,
    k: &str,
    status: EffectiveHorizontalPodAutoscalerStatus,
) -> Result<(), ReconcileError> {
    if e.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<EffectiveHorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &e.namespace().unwrap_or_default());
    // A merge patch replaces the condition list whole; `prediction: null` clears it.
    let mut body = serde_json::to_value(&status).unwrap_or(json!({}));
    if status.prediction.is_none() {
        body["prediction"] = Value::Null;
    }
    api.patch_status(&e.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": body})))
        .await
        .map(|_| ())
        .map_err(|source| ReconcileError::Status { key: k.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crane_durations_parse() {
        assert_eq!(crane_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(crane_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(crane_duration("3d"), Some(Duration::from_secs(3 * 86_400)));
        assert_eq!(crane_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(crane_duration(""), None);
        assert_eq!(crane_duration("soon"), None);
    }

    #[test]
    fn only_loopback_urls_are_a_metric_source() {
        let (a, p) = loopback_url("http://127.0.0.1:8080/metrics").unwrap();
        assert_eq!((a.port(), p.as_str()), (8080, "/metrics"));
        assert!(loopback_url("http://10.0.0.1:80/x").is_none());
        assert!(loopback_url("https://127.0.0.1:80/x").is_none());
        assert!(loopback_url("http://example.com/x").is_none());
    }
}
