//! OpenKruise's PodUnavailableBudget controller (`pkg/controller/podunavailablebudget`): keeps
//! each budget's status — `totalReplicas` (the target's replicas, the
//! `pub.kruise.io/protect-total-replicas` annotation, or the selected pods' controllers'
//! replicas), `desiredAvailable`, `currentAvailable` (active, ready, consistent pods not
//! recorded as disrupted or unavailable), `unavailableAllowed`, and the `disruptedPods` and
//! `unavailablePods` the admission recorded, dropped once their pods delete, after
//! [`DELETION_TIMEOUT_SECONDS`] for disruptions and [`UPDATED_DELAY_CHECK_SECONDS`] for
//! in-place updates (after which the pod counts by its own readiness).
//!
//! [`admit_in_place`] is the check the CloneSet controller makes before an in-place update
//! (upstream's `cloneset_update.go` with `PodUnavailableBudgetUpdateGate`): the same rule the
//! API server's admission applies, through the `kube` client, so it also holds on a real
//! cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::podunavailablebudget::{
    self as budget, DELETION_TIMEOUT_SECONDS, NO_PROTECT_ANNOTATION, Operation,
    PROTECT_TOTAL_REPLICAS_ANNOTATION, PodUnavailableBudget, PodUnavailableBudgetStatus,
    UPDATED_DELAY_CHECK_SECONDS,
};
use kinetic_machinery::selector::LabelSelector;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};

use crate::disruption::Owners;
use crate::events::{EventReq, EventSink};

/// How often a budget is recomputed without a pod event.
const RESYNC: Duration = Duration::from_secs(30);

/// The CRDs this controller needs.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![PodUnavailableBudget::crd()]
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing the pods of PodUnavailableBudget {key}")]
    Pods {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of PodUnavailableBudget {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
    events: EventSink,
    owners: Owners,
}

/// Runs the PodUnavailableBudget controller until `shutdown` completes.
///
/// # Errors
/// None today; the signature matches the other controllers'.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: crate::backoff::Backoff::default(),
        events: EventSink::spawn(client.clone(), "podunavailablebudget-controller".to_owned()),
        owners: Owners::new(client.clone()),
    });
    let controller = Controller::new(
        Api::<PodUnavailableBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    controller
        .watches(Api::<Pod>::all(client), watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            budgets
                .state()
                .iter()
                .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
                .map(|b| ObjectRef::from_obj(&**b))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("podunavailablebudget"))
        .await;
    Ok(())
}

fn error_policy(b: Arc<PodUnavailableBudget>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*b, e)
}

fn key(b: &PodUnavailableBudget) -> String {
    format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any())
}

async fn reconcile(b: Arc<PodUnavailableBudget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.backoff.reconcile(&*b, sync(&b, &ctx)).await
}

fn active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The pods a budget covers and how many replicas it counts (`getPodsForPub` and
/// `getExpectedScale`).
async fn pods_and_total(
    b: &PodUnavailableBudget,
    ctx: &Ctx,
) -> Result<(Vec<Pod>, i32), ReconcileError> {
    let k = key(b);
    let ns = b.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(t) = &b.spec.target_ref {
        let Some(w) = ctx.owners.get(&ns, &t.api_version, &t.kind, &t.name).await else {
            return Ok((Vec::new(), 0));
        };
        let sel = w.data.pointer("/spec/selector").cloned().unwrap_or_default();
        let Ok(sel) = LabelSelector::from_label_selector(&sel) else { return Ok((Vec::new(), 0)) };
        let pods = api
            .list(&ListParams::default().labels(&sel.to_string()))
            .await
            .map_err(|source| ReconcileError::Pods { key: k, source })?
            .items;
        let total = crate::disruption::replicas(&w).unwrap_or(0);
        return Ok((pods, total));
    }
    let sel = b.spec.selector.as_ref().and_then(|s| serde_json::to_value(s).ok());
    let Some(sel) = sel.and_then(|s| LabelSelector::from_label_selector(&s).ok()) else {
        return Ok((Vec::new(), 0));
    };
    if sel.to_string().is_empty() {
        // An empty selector matches nothing for a budget (upstream).
        return Ok((Vec::new(), 0));
    }
    let pods = api
        .list(&ListParams::default().labels(&sel.to_string()))
        .await
        .map_err(|source| ReconcileError::Pods { key: k, source })?
        .items;
    let scales = ctx.owners.scales(&ns, &pods).await;
    let mut total: i32 = scales.values().sum();
    // Pods without a controller count one each.
    total += i32::try_from(
        pods.iter()
            .filter(|p| {
                !p.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true))
            })
            .count(),
    )
    .unwrap_or(0);
    Ok((pods, total))
}

async fn sync(b: &PodUnavailableBudget, ctx: &Ctx) -> Result<Action, ReconcileError> {
    if b.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (pods, mut total) = pods_and_total(b, ctx).await?;
    if let Some(n) =
        b.annotations().get(PROTECT_TOTAL_REPLICAS_ANNOTATION).and_then(|v| v.parse::<i32>().ok())
    {
        total = n;
    }
    let now = Timestamp::now();
    let old = b.status.clone().unwrap_or_default();
    let mut status = PodUnavailableBudgetStatus {
        observed_generation: b.metadata.generation,
        total_replicas: total,
        ..Default::default()
    };
    let mut recheck: Option<Timestamp> = None;
    let mut soonest = |t: Timestamp| recheck = Some(recheck.map_or(t, |r: Timestamp| r.min(t)));
    for p in pods.iter().filter(|p| active(p)) {
        let name = p.name_any();
        if let Some(at) = old.disrupted_pods.get(&name) {
            let expected = at.0 + SignedDuration::from_secs(DELETION_TIMEOUT_SECONDS);
            if expected < now {
                ctx.events.send(EventReq::for_pod(
                    p,
                    "Warning",
                    "NotDeleted",
                    format!("Pod was expected by PUB {} to be deleted but it wasn't", key(b)),
                ));
            } else {
                status.disrupted_pods.insert(name.clone(), at.clone());
                soonest(expected);
            }
        }
        if let Some(at) = old.unavailable_pods.get(&name) {
            let expected = at.0 + SignedDuration::from_secs(UPDATED_DELAY_CHECK_SECONDS);
            if expected >= now {
                status.unavailable_pods.insert(name.clone(), at.clone());
                soonest(expected);
            }
        }
    }
    let available = pods
        .iter()
        .filter(|p| active(p) && !budget_records(&status, &p.name_any()))
        .filter(|p| budget::pod_ready(p) && budget::pod_consistent(p))
        .count();
    status.current_available = i32::try_from(available).unwrap_or(i32::MAX);
    status.desired_available = budget::desired_available(&b.spec, total);
    status.unavailable_allowed = (status.current_available - status.desired_available).max(0);
    if status != old {
        let mut new = b.clone();
        new.status = Some(status);
        let api: Api<PodUnavailableBudget> =
            Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
        let body = &new;
        api.replace_status(&b.name_any(), &PostParams::default(), body)
            .await
            .map_err(|source| ReconcileError::Status { key: key(b), source })?;
    }
    let wait = recheck
        .and_then(|r| Duration::try_from(r.duration_since(now)).ok())
        .map_or(RESYNC, |d| d.min(RESYNC) + Duration::from_millis(100));
    Ok(Action::requeue(wait))
}

fn budget_records(s: &PodUnavailableBudgetStatus, pod: &str) -> bool {
    s.disrupted_pods.contains_key(pod) || s.unavailable_pods.contains_key(pod)
}

/// Whether an in-place update of `pod` may start now: no budget covers or protects it, or
/// one unit of its budget was taken and the pod recorded in `unavailablePods` (a status
/// update with the budget's resourceVersion, so concurrent updates never share a unit).
/// `false`: the budget allows no more unavailable pods; try again later.
///
/// # Errors
/// The budgets could not be read or written (a missing CRD is no budget).
pub async fn admit_in_place(client: &Client, pod: &Pod) -> Result<bool, kube::Error> {
    let no_protect = pod.annotations().get(NO_PROTECT_ANNOTATION).is_some_and(|v| v == "true");
    if no_protect || !budget::pod_ready(pod) || !budget::pod_consistent(pod) {
        return Ok(true);
    }
    let Some(owner) =
        pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true))
    else {
        return Ok(true);
    };
    let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PodUnavailableBudget> = Api::namespaced(client.clone(), &ns);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(true),
        Err(e) => return Err(e),
    };
    let labels: BTreeMap<String, String> = pod.labels().clone();
    let workload = (group, owner.kind.as_str(), owner.name.as_str());
    let mut covering: Vec<PodUnavailableBudget> =
        list.into_iter().filter(|b| b.covers(&labels, Some(workload))).collect();
    covering.sort_by_key(|b| b.name_any());
    let Some(mut b) = covering.into_iter().next() else { return Ok(true) };
    let name = pod.name_any();
    let desired = b.status.as_ref().map_or(0, |s| s.desired_available);
    if desired == 0 || !b.protects(Operation::Update) || b.records(&name) {
        return Ok(true);
    }
    for _ in 0..4 {
        let mut status = b.status.clone().unwrap_or_default();
        if budget::check_and_decrement(
            &mut status,
            &name,
            Operation::Update,
            Time(Timestamp::now()),
        )
        .is_err()
        {
            tracing::debug!(pod = %name, budget = %b.name_any(), "in-place update held by the PodUnavailableBudget");
            return Ok(false);
        }
        b.status = Some(status);
        let body = &b;
        match api.replace_status(&b.name_any(), &PostParams::default(), body).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                b = match api.get_opt(&b.name_any()).await? {
                    Some(b) => b,
                    None => return Ok(true),
                };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
