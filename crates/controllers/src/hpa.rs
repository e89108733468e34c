//! The HorizontalPodAutoscaler controller (`autoscaling/v2`), kube-controller-manager's
//! `pkg/controller/podautoscaler` on the `kube` client: every 15 s per autoscaler (and at once
//! when its spec changes) it reads the target's `scale` subresource, lists the pods its
//! selector names and their metrics from `metrics.k8s.io` (the embedded server's or
//! metrics-server's), asks [`kinetic_autoscale::hpa`] for the replica count and writes it
//! through the `scale` subresource, so any kind with one works (Deployment, ReplicaSet,
//! CloneSet, custom resources).
//!
//! Metrics: `Resource` and `ContainerResource` (Utilization and AverageValue; a pod whose
//! metrics lack the named container counts as missing, where upstream fails the metric) from
//! `metrics.k8s.io`; `Pods` and `Object` from `custom.metrics.k8s.io` and `External` from
//! `external.metrics.k8s.io`, as upstream's REST metrics client reads them (an adapter such as
//! prometheus-adapter or KEDA serves them on a real cluster; the embedded server serves
//! neither, so there they report `ScalingActive=False` with upstream's reason,
//! `FailedGetPodsMetric`, …, which, as upstream, stops scale-downs while the other metrics may
//! still scale up).
//!
//! State kept in memory, as upstream: the recent recommendations (stabilisation windows) and
//! scale events (policies) per autoscaler, so a restarted controller starts afresh.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, MetricIdentifier,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kinetic_autoscale::hpa::{self, Behavior, MetricOutcome, Plan, Target};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

use crate::events::{EventReq, EventSink};

/// Failures of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of HorizontalPodAutoscaler {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Default)]
struct State {
    history: hpa::History,
    last: Option<Instant>,
    spec: Option<Value>,
}

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
    state: Mutex<HashMap<String, State>>,
}

/// Runs the HorizontalPodAutoscaler controller until `shutdown` resolves.
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
        events: EventSink::spawn(client.clone(), "horizontal-pod-autoscaler".to_owned()),
        state: Mutex::default(),
    });
    Controller::new(Api::<HorizontalPodAutoscaler>::all(client), watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("hpa"))
        .await;
    Ok(())
}

fn error_policy(h: Arc<HorizontalPodAutoscaler>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*h, e)
}

fn key(h: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any())
}

async fn reconcile(
    h: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    ctx.backoff
        .reconcile(&*h, async {
            let k = key(&h);
            if h.meta().deletion_timestamp.is_some() {
                ctx.state.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                return Ok(Action::await_change());
            }
            // Upstream processes each autoscaler at most once per sync period (its queue's
            // fixed-interval rate limiter), so its own status writes do not retrigger it; a spec
            // change is acted on at once here.
            let spec = serde_json::to_value(&h.spec).unwrap_or(Value::Null);
            {
                let st = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = st.get(&k)
                    && s.spec.as_ref() == Some(&spec)
                    && let Some(last) = s.last
                    && last.elapsed() < hpa::SYNC_PERIOD
                {
                    return Ok(Action::requeue(hpa::SYNC_PERIOD - last.elapsed()));
                }
            }
            reconcile_pass(&h, &ctx).await?;
            let mut st = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
            let s = st.entry(k).or_default();
            s.last = Some(Instant::now());
            s.spec = Some(spec);
            Ok(Action::requeue(hpa::SYNC_PERIOD))
        })
        .await
}

/// Wall-clock time as an offset from the Unix epoch, the origin the pure decisions use.
pub(crate) fn since_epoch(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::UNIX_EPOCH)).unwrap_or_default()
}

pub(crate) fn parse_time(s: Option<&str>) -> Option<Duration> {
    s.and_then(|s| s.parse::<Timestamp>().ok()).map(since_epoch)
}

/// A metric condition to report, with the Event that goes with it.
pub(crate) struct Failure {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

async fn reconcile_pass(h: &HorizontalPodAutoscaler, ctx: &Ctx) -> Result<(), ReconcileError> {
    let k = key(h);
    let ns = h.namespace().unwrap_or_default();
    let spec = h.spec.clone().unwrap_or_default();
    let now_ts = Timestamp::now();
    let now = since_epoch(now_ts);
    let old_status = h.status.clone().unwrap_or_default();
    let mut conditions: Vec<hpa::Condition> = Vec::new();
    let reference = format!("{}/{}", spec.scale_target_ref.kind, spec.scale_target_ref.name);
    // The target's scale subresource.
    let scale = match get_scale(&ctx.client, &ns, &spec.scale_target_ref).await {
        Ok(s) => s,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            ctx.events.send(EventReq::for_object(h, "Warning", "FailedGetScale", e.clone()));
            conditions.push(hpa::Condition {
                kind: "AbleToScale",
                status: false,
                reason: "FailedGetScale".into(),
                message: msg,
            });
            let status = status_value(h, &old_status, None, None, None, &conditions, now_ts, None);
            return write_status(ctx, h, &k, status).await;
        }
    };
    let current = scale.0;
    let selector = scale.1;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    // Metrics, as computeReplicasForMetrics reads them; only when the bounds leave the
    // decision to them (a target at zero or outside min/max is handled by `plan` first).
    let mut outcomes = Vec::new();
    let mut statuses = Vec::new();
    if !(current == 0 && min != 0) && current <= max && current >= min {
        let pods = list_pods(&ctx.client, &ns, &selector).await;
        for m in spec.metrics.iter().flatten() {
            match metric_outcome(&ctx.client, &ns, &selector, m, current, pods.as_deref(), now)
                .await
            {
                Ok((outcome, st)) => {
                    outcomes.push(outcome);
                    statuses.push(st);
                }
                Err(f) => {
                    ctx.events.send(EventReq::for_object(
                        h,
                        "Warning",
                        f.reason,
                        f.message.clone(),
                    ));
                    outcomes.push(MetricOutcome::Invalid {
                        reason: f.reason.to_owned(),
                        message: format!(
                            "the HPA was unable to compute the replica count: {}",
                            f.message
                        ),
                    });
                    // Upstream keeps a placeholder status for a failed metric.
                    statuses.push(json!({"type": m.type_}));
                }
            }
        }
    }
    let behavior = spec.behavior.as_ref().map(behavior_of);
    let plan: Plan = {
        let mut st = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
        let s = st.entry(k.clone()).or_default();
        hpa::plan(&mut s.history, behavior.as_ref(), current, min, max, &outcomes, now)
    };
    conditions.extend(plan.conditions.iter().cloned());
    if let Some(err) = &plan.error {
        ctx.events.send(EventReq::for_object(
            h,
            "Warning",
            "FailedComputeMetricsReplicas",
            format!(
                "invalid metrics ({} invalid out of {}), first error is: {err}",
                outcomes.iter().filter(|o| matches!(o, MetricOutcome::Invalid { .. })).count(),
                outcomes.len()
            ),
        ));
        let status = status_value(
            h,
            &old_status,
            Some(current),
            None,
            Some(statuses),
            &conditions,
            now_ts,
            None,
        );
        return write_status(ctx, h, &k, status).await;
    }
    let mut last_scale = None;
    if plan.rescale {
        match set_scale(&ctx.client, &ns, &spec.scale_target_ref, plan.desired).await {
            Ok(()) => {
                conditions.push(hpa::Condition {
                    kind: "AbleToScale",
                    status: true,
                    reason: "SucceededRescale".into(),
                    message: format!(
                        "the HPA controller was able to update the target scale to {}",
                        plan.desired
                    ),
                });
                ctx.events.send(EventReq::for_object(
                    h,
                    "Normal",
                    "SuccessfulRescale",
                    format!("New size: {}; reason: {}", plan.desired, plan.reason),
                ));
                let mut st = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
                let s = st.entry(k.clone()).or_default();
                hpa::record_scale(&mut s.history, behavior.as_ref(), current, plan.desired, now);
                last_scale = Some(now_ts);
                tracing::info!(hpa = %k, target = %reference, from = current, to = plan.desired, reason = %plan.reason, "rescaled");
            }
            Err(e) => {
                conditions.push(hpa::Condition {
                    kind: "AbleToScale",
                    status: false,
                    reason: "FailedUpdateScale".into(),
                    message: format!(
                        "the HPA controller was unable to update the target scale: {e}"
                    ),
                });
                ctx.events.send(EventReq::for_object(
                    h,
                    "Warning",
                    "FailedRescale",
                    format!("New size: {}; reason: {}; error: {e}", plan.desired, plan.reason),
                ));
                let status = status_value(
                    h,
                    &old_status,
                    Some(current),
                    None,
                    Some(statuses),
                    &conditions,
                    now_ts,
                    None,
                );
                return write_status(ctx, h, &k, status).await;
            }
        }
    }
    let status = status_value(
        h,
        &old_status,
        Some(current),
        Some(plan.desired),
        Some(statuses),
        &conditions,
        now_ts,
        last_scale,
    );
    write_status(ctx, h, &k, status).await
}

/// The new status: replicas, metrics, conditions merged into the old ones (a condition keeps
/// its `lastTransitionTime` while its status stays), `observedGeneration`.
#[allow(clippy::too_many_arguments)]
fn status_value(
    h: &HorizontalPodAutoscaler,
    old: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus,
    current: Option<i32>,
    desired: Option<i32>,
    metrics: Option<Vec<Value>>,
    conditions: &[hpa::Condition],
    now: Timestamp,
    last_scale: Option<Timestamp>,
) -> Value {
    let old_json = serde_json::to_value(old).unwrap_or(json!({}));
    let mut merged: Vec<Value> =
        old_json.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let now_s = Timestamp::from_second(now.as_second()).unwrap_or(now).to_string();
    for c in conditions {
        let status = if c.status { "True" } else { "False" };
        let new = json!({"type": c.kind, "status": status, "reason": c.reason,
                         "message": c.message, "lastTransitionTime": now_s});
        match merged.iter_mut().find(|o| o["type"] == c.kind) {
            Some(o) => {
                let keep = (o["status"] == status).then(|| o["lastTransitionTime"].clone());
                *o = new;
                if let Some(t) = keep.filter(|t| !t.is_null()) {
                    o["lastTransitionTime"] = t;
                }
            }
            None => merged.push(new),
        }
    }
    let mut s = json!({
        "currentReplicas": current.unwrap_or(old.current_replicas.unwrap_or(0)),
        "desiredReplicas": desired.unwrap_or(old.desired_replicas),
        "conditions": merged,
    });
    if let Some(g) = h.meta().generation {
        s["observedGeneration"] = json!(g);
    }
    match metrics {
        Some(m) if !m.is_empty() => s["currentMetrics"] = json!(m),
        Some(_) => {}
        None => {
            if let Some(m) = old_json.get("currentMetrics") {
                s["currentMetrics"] = m.clone();
            }
        }
    }
    let last = last_scale
        .map(|t| json!(Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()))
        .or_else(|| old_json.get("lastScaleTime").cloned());
    if let Some(t) = last {
        s["lastScaleTime"] = t;
    }
    s
}

async fn write_status(
    ctx: &Ctx,
    h: &HorizontalPodAutoscaler,
    k: &str,
    status: Value,
) -> Result<(), ReconcileError> {
    let old = serde_json::to_value(&h.status).unwrap_or(Value::Null);
    if old == status {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &h.namespace().unwrap_or_default());
    // A JSON merge patch replaces the lists (conditions, currentMetrics) whole.
    api.patch_status(
        &h.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::Status { key: k.to_owned(), source })
}

/// The target's API resource, found by discovery from `apiVersion` and `kind`.
pub(crate) async fn target_api(
    client: &Client,
    ns: &str,
    r: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
) -> Result<Api<DynamicObject>, String> {
    let api_version = r.api_version.clone().unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
    let (ar, caps): (ApiResource, _) =
        kube::discovery::pinned_kind(client, &gvk).await.map_err(|e| {
            format!("unable to find the resource of {api_version}, Kind={}: {e}", r.kind)
        })?;
    if !caps
        .subresources
        .iter()
        .any(|(s, _)| s.plural == format!("{}/scale", ar.plural) || s.plural == "scale")
    {
        // Discovery lists subresources as `{plural}/scale`; kube strips the prefix.
        tracing::debug!(kind = %r.kind, "no scale subresource in discovery; trying anyway");
    }
    Ok(Api::namespaced_with(client.clone(), ns, &ar))
}

/// The target's `spec.replicas` and label selector from its scale subresource.
pub(crate) async fn get_scale(
    client: &Client,
    ns: &str,
    r: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
) -> Result<(i32, String), String> {
    let api = target_api(client, ns, r).await?;
    let scale = api.get_scale(&r.name).await.map_err(|e| crate::report(&e))?;
    let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale.status.and_then(|s| s.selector).unwrap_or_default();
    Ok((replicas, selector))
}

pub(crate) async fn set_scale(
    client: &Client,
    ns: &str,
    r: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
    replicas: i32,
) -> Result<(), String> {
    let api = target_api(client, ns, r).await?;
    api.patch_scale(
        &r.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .map(|_| ())
    .map_err(|e| crate::report(&e))
}

pub(crate) async fn list_pods(
    client: &Client,
    ns: &str,
    selector: &str,
) -> Result<Vec<Pod>, String> {
    if selector.is_empty() {
        return Err("the target's scale has no selector".into());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .map_err(|e| crate::report(&e))
}

/// A resource quantity string in milli-units.
pub(crate) fn milli(q: &str) -> Option<i64> {
    kinetic_machinery::quantity::milli(q).ok()
}

/// The pod as the replica calculation reads it.
pub(crate) fn pod_info(p: &Pod, resource: &str, container: Option<&str>) -> hpa::Pod {
    let status = p.status.clone().unwrap_or_default();
    let phase = match status.phase.as_deref() {
        Some("Pending") => hpa::Phase::Pending,
        Some("Running") => hpa::Phase::Running,
        Some("Succeeded") => hpa::Phase::Succeeded,
        Some("Failed") => hpa::Phase::Failed,
        _ => hpa::Phase::Unknown,
    };
    let ready =
        status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| hpa::Ready {
            status: c.status == "True",
            last_transition: c
                .last_transition_time
                .as_ref()
                .map(|t| since_epoch(t.0))
                .unwrap_or_default(),
        });
    // calculatePodRequests: every container's request, or only the named container's.
    let mut request = Ok(0i64);
    let containers = p.spec.iter().flat_map(|s| s.containers.iter());
    for c in containers.filter(|c| container.is_none_or(|n| c.name == n)) {
        let q =
            c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource));
        match (q.and_then(|q| milli(&q.0)), &mut request) {
            (Some(v), Ok(sum)) => *sum += v,
            (None, Ok(_)) => request = Err(c.name.clone()),
            _ => {}
        }
    }
    hpa::Pod {
        name: p.name_any(),
        phase,
        deleting: p.meta().deletion_timestamp.is_some(),
        ready,
        start_time: status.start_time.as_ref().map(|t| since_epoch(t.0)),
        request,
    }
}

/// Parses a Go duration as metrics-server writes a window (`15s`, `1m0s`, `10.5s`).
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        let unit_end = rest[n..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| n + i);
        let unit = match &rest[n..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The pods' metrics of `resource` (milli, summed over containers) from `metrics.k8s.io`.
pub(crate) async fn pod_metrics(
    client: &Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, hpa::Metric>, String> {
    let req =
        kube::core::Request::new(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"))
            .list(&ListParams::default().labels(selector))
            .map_err(|e| e.to_string())?;
    let list: Value = client.request(req).await.map_err(|e| crate::report(&e))?;
    let mut out = BTreeMap::new();
    for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let mut sum = 0i64;
        let mut complete = true;
        let cs = item.get("containers").and_then(Value::as_array).into_iter().flatten();
        let cs: Vec<&Value> = cs
            .filter(|c| container.is_none_or(|n| c.get("name").and_then(Value::as_str) == Some(n)))
            .collect();
        if cs.is_empty() {
            continue;
        }
        for c in cs {
            let q = c.pointer(&format!("/usage/{resource}")).and_then(Value::as_str);
            match q.and_then(milli) {
                Some(v) => sum += v,
                None => complete = false,
            }
        }
        if !complete {
            continue;
        }
        let timestamp =
            parse_time(item.get("timestamp").and_then(Value::as_str)).unwrap_or_default();
        let window = item
            .get("window")
            .and_then(Value::as_str)
            .and_then(go_duration)
            .unwrap_or(Duration::from_secs(30));
        out.insert(name.to_owned(), hpa::Metric { value: sum, timestamp, window });
    }
    if out.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        ));
    }
    Ok(out)
}

/// A milli-value as a canonical quantity (`250m`, `12`, `64M`).
pub(crate) fn quantity(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut v = milli / 1000;
    for suffix in ["", "k", "M", "G", "T", "P"] {
        if v % 1000 != 0 || v == 0 || suffix == "P" {
            return format!("{v}{suffix}");
        }
        v /= 1000;
    }
    format!("{v}E")
}

/// One metric's proposal and its status entry, or the failure to report.
pub(crate) async fn metric_outcome(
    client: &Client,
    ns: &str,
    selector: &str,
    m: &k8s_openapi::api::autoscaling::v2::MetricSpec,
    current: i32,
    pods: Result<&[Pod], &String>,
    now: Duration,
) -> Result<(MetricOutcome, Value), Failure> {
    // (resource, container, target) of a Resource or ContainerResource metric.
    let source = match m.type_.as_str() {
        "Resource" => m.resource.as_ref().map(|r| (r.name.as_str(), None, &r.target)),
        "ContainerResource" => m
            .container_resource
            .as_ref()
            .map(|r| (r.name.as_str(), Some(r.container.as_str()), &r.target)),
        _ => None,
    };
    let Some((resource, container, t)) = source else {
        return custom_metric_outcome(client, ns, selector, m, current, pods, now).await;
    };
    let reason = if container.is_some() {
        "FailedGetContainerResourceMetric"
    } else {
        "FailedGetResourceMetric"
    };
    let fail = |message: String| Failure { reason, message };
    let target = match (&t.average_utilization, &t.average_value) {
        (Some(u), _) => Target::Utilization(*u),
        (None, Some(v)) => Target::AverageValue(milli(&v.0).unwrap_or(0)),
        (None, None) => return Err(fail(format!("invalid target for {resource}"))),
    };
    let what = if matches!(target, Target::Utilization(_)) { "utilization" } else { "usage" };
    let pods = pods.map_err(|e| fail(format!("failed to get {resource} {what}: {e}")))?;
    let metrics = pod_metrics(client, ns, selector, resource, container)
        .await
        .map_err(|e| fail(format!("failed to get {resource} {what}: {e}")))?;
    let infos: Vec<hpa::Pod> = pods.iter().map(|p| pod_info(p, resource, container)).collect();
    let p = hpa::resource_replicas(current, target, resource, &infos, &metrics, now)
        .map_err(|e| fail(format!("failed to get {resource} {what}: {e}")))?;
    let mut cur = json!({"averageValue": quantity(p.average)});
    if let Some(u) = p.utilization {
        cur["averageUtilization"] = json!(u);
    }
    let kind = if container.is_some() { "container resource" } else { "resource" };
    let name = match target {
        Target::Utilization(_) => format!("{resource} {kind} utilization (percentage of request)"),
        Target::AverageValue(_) => format!("{resource} {kind}"),
    };
    let status = match container {
        None => json!({"type": "Resource", "resource": {"name": resource, "current": cur}}),
        Some(c) => json!({"type": "ContainerResource", "containerResource":
            {"name": resource, "container": c, "current": cur}}),
    };
    Ok((MetricOutcome::Valid { replicas: p.replicas, name }, status))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A label selector as its string form (`metav1.LabelSelectorAsSelector`).
fn selector_string(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut parts: Vec<String> =
        sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// GET `path?query` as JSON through the client (the aggregated metrics APIs).
async fn get_json(client: &Client, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
    let q: Vec<String> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let uri = if q.is_empty() { path.to_owned() } else { format!("{path}?{}", q.join("&")) };
    let mut req =
        kube::core::Request::new(path).list(&ListParams::default()).map_err(|e| e.to_string())?;
    *req.uri_mut() = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
    client.request::<Value>(req).await.map_err(|e| crate::report(&e))
}

/// A `Pods` metric's values per pod from `custom.metrics.k8s.io` (`GetRawMetric`).
async fn custom_pod_metrics(
    client: &Client,
    ns: &str,
    selector: &str,
    metric: &MetricIdentifier,
) -> Result<BTreeMap<String, hpa::Metric>, String> {
    let path =
        format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{}", metric.name);
    let list = get_json(
        client,
        &path,
        &[
            ("labelSelector", selector.to_owned()),
            ("metricLabelSelector", selector_string(metric.selector.as_ref())),
        ],
    )
    .await
    .map_err(|e| format!("unable to fetch metrics from custom metrics API: {e}"))?;
    let mut out = BTreeMap::new();
    for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let name = item.pointer("/describedObject/name").and_then(Value::as_str);
        let value = item.get("value").and_then(Value::as_str).and_then(milli);
        let (Some(name), Some(value)) = (name, value) else { continue };
        let timestamp =
            parse_time(item.get("timestamp").and_then(Value::as_str)).unwrap_or_default();
        let window = item
            .get("windowSeconds")
            .and_then(Value::as_u64)
            .map_or(Duration::from_secs(60), Duration::from_secs);
        out.insert(name.to_owned(), hpa::Metric { value, timestamp, window });
    }
    if out.is_empty() {
        return Err("no metrics returned from custom metrics API".into());
    }
    Ok(out)
}

/// An `Object` metric's value from `custom.metrics.k8s.io` (`GetObjectMetric`).
async fn custom_object_metric(
    client: &Client,
    ns: &str,
    object: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
    metric: &MetricIdentifier,
) -> Result<i64, String> {
    let api_version = object.api_version.clone().unwrap_or_else(|| "v1".into());
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, &object.kind);
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await.map_err(|e| e.to_string())?;
    let resource = if group.is_empty() { ar.plural } else { format!("{}.{group}", ar.plural) };
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{}/{}",
        object.name, metric.name
    );
    let list = get_json(
        client,
        &path,
        &[("metricLabelSelector", selector_string(metric.selector.as_ref()))],
    )
    .await
    .map_err(|e| format!("unable to fetch metrics from custom metrics API: {e}"))?;
    list.pointer("/items/0/value")
        .and_then(Value::as_str)
        .and_then(milli)
        .ok_or_else(|| "no metrics returned from custom metrics API".into())
}

/// An `External` metric's total (milli) from `external.metrics.k8s.io` (`GetExternalMetric`:
/// the sum over the items).
pub(crate) async fn external_metric(
    client: &Client,
    ns: &str,
    metric: &MetricIdentifier,
) -> Result<i64, String> {
    let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{}", metric.name);
    let list =
        get_json(client, &path, &[("labelSelector", selector_string(metric.selector.as_ref()))])
            .await
            .map_err(|e| format!("unable to fetch metrics from external metrics API: {e}"))?;
    let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() {
        return Err("no metrics returned from external metrics API".into());
    }
    Ok(items.iter().filter_map(|i| i.get("value").and_then(Value::as_str).and_then(milli)).sum())
}

/// Pods Running with a Ready condition True (`getReadyPodsCount`).
pub(crate) fn ready_pods(pods: &[Pod]) -> i32 {
    let n = pods
        .iter()
        .filter(|p| {
            let st = p.status.as_ref();
            st.and_then(|s| s.phase.as_deref()) == Some("Running")
                && st
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The metric's identifier as the status shows it.
fn identifier_json(m: &MetricIdentifier) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// `Pods`, `Object` and `External` metrics (`computeStatusForPodsMetric`,
/// `computeStatusForObjectMetric`, `computeStatusForExternalMetric`), from the aggregated
/// `custom.metrics.k8s.io` and `external.metrics.k8s.io` APIs: served by an adapter on a real
/// cluster (prometheus-adapter, KEDA); the embedded server serves neither, so there they
/// report `ScalingActive=False` with upstream's reason and the API's error.
///
/// Difference: upstream divides per-pod targets by `status.currentReplicas`; here by the
/// scale's replicas read in the same pass.
async fn custom_metric_outcome(
    client: &Client,
    ns: &str,
    selector: &str,
    m: &k8s_openapi::api::autoscaling::v2::MetricSpec,
    current: i32,
    pods: Result<&[Pod], &String>,
    now: Duration,
) -> Result<(MetricOutcome, Value), Failure> {
    let invalid = |what: &str| Failure {
        reason: "InvalidMetricSourceType",
        message: format!("{what} metric without its source"),
    };
    match m.type_.as_str() {
        "Pods" => {
            let src = m.pods.as_ref().ok_or_else(|| invalid("Pods"))?;
            let name = &src.metric.name;
            let fail = |e: String| Failure {
                reason: "FailedGetPodsMetric",
                message: format!("unable to get metric {name}: {e}"),
            };
            let target =
                src.target.average_value.as_ref().and_then(|q| milli(&q.0)).ok_or_else(|| {
                    fail("invalid target: a Pods metric needs averageValue".into())
                })?;
            let pods = pods.map_err(|e| fail(e.clone()))?;
            let metrics =
                custom_pod_metrics(client, ns, selector, &src.metric).await.map_err(fail)?;
            let infos: Vec<hpa::Pod> = pods.iter().map(|p| pod_info(p, "", None)).collect();
            // calcPlainMetricReplicas: a raw average, without CPU's readiness rules.
            let p = hpa::resource_replicas(
                current,
                Target::AverageValue(target),
                "",
                &infos,
                &metrics,
                now,
            )
            .map_err(|e| fail(e.to_string()))?;
            let status = json!({"type": "Pods", "pods": {"metric": identifier_json(&src.metric),
                "current": {"averageValue": quantity(p.average)}}});
            Ok((
                MetricOutcome::Valid { replicas: p.replicas, name: format!("pods metric {name}") },
                status,
            ))
        }
        "Object" => {
            let src = m.object.as_ref().ok_or_else(|| invalid("Object"))?;
            let name = &src.metric.name;
            let d = &src.described_object;
            let fail = |e: String| Failure {
                reason: "FailedGetObjectMetric",
                message: format!(
                    // Upstream's format and argument order as they are (`%v on %s %s/%s` with
                    // kind, namespace, name, error).
                    "unable to get metric {name}: {} on {ns} {}/{e}",
                    d.kind, d.name
                ),
            };
            let usage = custom_object_metric(client, ns, d, &src.metric).await.map_err(fail)?;
            let (replicas, current_json) = match (&src.target.value, &src.target.average_value) {
                (Some(v), _) => {
                    let t = milli(&v.0)
                        .filter(|t| *t > 0)
                        .ok_or_else(|| fail("invalid target value".into()))?;
                    let ready = ready_pods(pods.map_err(|e| fail(e.clone()))?);
                    let r = hpa::usage_ratio_replicas(current, usage as f64 / t as f64, ready);
                    (r, json!({"value": quantity(usage)}))
                }
                (None, Some(v)) => {
                    let t =
                        milli(&v.0).ok_or_else(|| fail("invalid target averageValue".into()))?;
                    let r = hpa::per_pod_replicas(current, usage, t);
                    let avg = usage / i64::from(current.max(1));
                    (r, json!({"averageValue": quantity(avg)}))
                }
                (None, None) => {
                    return Err(fail("invalid target: neither value nor averageValue".into()));
                }
            };
            let status = json!({"type": "Object", "object": {"metric": identifier_json(&src.metric),
                "describedObject": serde_json::to_value(d).unwrap_or(Value::Null),
                "current": current_json}});
            Ok((
                MetricOutcome::Valid {
                    replicas,
                    name: format!("{name} metric on {} {}", d.kind, d.name),
                },
                status,
            ))
        }
        "External" => {
            let src = m.external.as_ref().ok_or_else(|| invalid("External"))?;
            let name = &src.metric.name;
            let fail = |e: String| Failure {
                reason: "FailedGetExternalMetric",
                // Upstream prints the selector struct (`%+v`); here its string form.
                message: format!(
                    "unable to get external metric {ns}/{name}/{}: {e}",
                    selector_string(src.metric.selector.as_ref())
                ),
            };
            let usage = external_metric(client, ns, &src.metric).await.map_err(fail)?;
            let (replicas, current_json) = match (&src.target.value, &src.target.average_value) {
                (Some(v), _) => {
                    let t = milli(&v.0)
                        .filter(|t| *t > 0)
                        .ok_or_else(|| fail("invalid target value".into()))?;
                    let ready = ready_pods(pods.map_err(|e| fail(e.clone()))?);
                    let r = hpa::usage_ratio_replicas(current, usage as f64 / t as f64, ready);
                    (r, json!({"value": quantity(usage)}))
                }
                (None, Some(v)) => {
                    let t =
                        milli(&v.0).ok_or_else(|| fail("invalid target averageValue".into()))?;
                    let r = hpa::per_pod_replicas(current, usage, t);
                    let avg = usage / i64::from(current.max(1));
                    (r, json!({"averageValue": quantity(avg)}))
                }
                (None, None) => {
                    return Err(fail("invalid target: neither value nor averageValue".into()));
                }
            };
            let status = json!({"type": "External", "external": {"metric": identifier_json(&src.metric),
                "current": current_json}});
            Ok((MetricOutcome::Valid { replicas, name: format!("external metric {name}") }, status))
        }
        _ => Err(Failure {
            reason: "InvalidMetricSourceType",
            message: format!("invalid metric source type {:?}", m.type_),
        }),
    }
}

fn rules_of(r: Option<&HPAScalingRules>, up: bool) -> hpa::Rules {
    let default = if up { hpa::Rules::default_up() } else { hpa::Rules::default_down() };
    let Some(r) = r else { return default };
    let policies: Vec<hpa::Policy> = r
        .policies
        .iter()
        .flatten()
        .map(|p| hpa::Policy {
            kind: if p.type_ == "Pods" { hpa::PolicyKind::Pods } else { hpa::PolicyKind::Percent },
            value: p.value,
            period: Duration::from_secs(u64::try_from(p.period_seconds).unwrap_or(0)),
        })
        .collect();
    hpa::Rules {
        stabilization: r
            .stabilization_window_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .or(default.stabilization),
        select: match r.select_policy.as_deref() {
            Some("Min") => hpa::Select::Min,
            Some("Disabled") => hpa::Select::Disabled,
            _ => hpa::Select::Max,
        },
        policies: if policies.is_empty() { default.policies } else { policies },
    }
}

/// The behavior with upstream's defaults for what it leaves out (the API server defaults it
/// too; a real cluster's object is already complete).
pub(crate) fn behavior_of(b: &HorizontalPodAutoscalerBehavior) -> Behavior {
    Behavior {
        up: rules_of(b.scale_up.as_ref(), true),
        down: rules_of(b.scale_down.as_ref(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("10.5s"), Some(Duration::from_millis(10500)));
        assert_eq!(go_duration("x"), None);
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(quantity(250), "250m");
        assert_eq!(quantity(12_000), "12");
        assert_eq!(quantity(64_000_000_000), "64M");
        assert_eq!(quantity(0), "0");
    }
}
