//! The ContainerRecreateRequest controller: kruise-manager's part of a request
//! (`pkg/controller/containerrecreaterequest/crr_controller.go`); the node agent does the
//! recreation itself (`kinetic-node`'s `recreate`).
//!
//! A kube-runtime `Controller` over requests, also woken by their pods (by the
//! `crr.apps.kruise.io/pod-name` label). A pass, as upstream's `Reconcile`:
//! - a finished or deleting request gives the pod's readiness back (below) and drops its
//!   finalizer; a finished one loses the `crr.apps.kruise.io/active` label (so node agents stop
//!   watching it) and is deleted `ttlSecondsAfterFinished` after its `completionTime`;
//! - a request whose pod is gone, deleting or replaced (another UID) completes with "pod has
//!   gone"; one no node agent took up within a minute completes with "daemon has not responded
//!   for a long time"; one past `activeDeadlineSeconds` completes with its unfinished
//!   containers Failed ("recreating has exceeded the activeDeadlineSeconds");
//! - a Recreating request with `unreadyGracePeriodSeconds` takes the pod out of service first:
//!   when the pod has the `KruisePodReady` readiness gate, the request's finalizer is added and
//!   the condition set False with the request's key in its message (upstream's
//!   `podreadiness` message list, so several holders can share the gate); then the
//!   `crr.apps.kruise.io/unready-acquired` annotation records the time, from which the node
//!   agent waits the grace before it stops anything.
//!
//! Upstream's `sync-container-statuses` annotation (the pod's container statuses copied for its
//! daemon) is not written: Kinetic's node agent reads the pod itself.

pub mod readiness;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::containerrecreaterequest::{
    ACTIVE_LABEL, ContainerRecreateRequest, ContainerRecreateState, POD_UID_LABEL, Phase,
    READINESS_USER_AGENT, UNREADY_ACQUIRED_KEY,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;

/// How long a request may wait for a node agent to take it up (upstream's `responseTimeout`).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    backoff: crate::backoff::Backoff,
}

/// The CRD this controller serves, installed with the other Kruise CRDs.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![<ContainerRecreateRequest as kube::CustomResourceExt>::crd()]
}

/// Runs the controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per request with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (pods, writer) = reflector::store();
    let pod_stream = reflector::reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let crrs = Api::<ContainerRecreateRequest>::all(client.clone());
    let ctrl = Controller::new(crrs, watcher::Config::default());
    let requests = ctrl.store();
    let ctx = Arc::new(Ctx { client, pods, backoff: crate::backoff::Backoff::default() });
    ctrl.watches_stream(pod_stream, move |pod: Pod| {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        requests
            .state()
            .into_iter()
            .filter(|c| c.namespace().as_deref() == Some(ns.as_str()) && c.spec.pod_name == name)
            .map(|c| ObjectRef::from_obj(&*c))
            .collect::<Vec<_>>()
    })
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(crate::log_reconcile("containerrecreaterequest"))
    .await;
    Ok(())
}

fn error_policy(crr: Arc<ContainerRecreateRequest>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*crr, e)
}

async fn reconcile(
    crr: Arc<ContainerRecreateRequest>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    ctx.backoff.reconcile(&*crr, reconcile_pass(&crr, &ctx)).await
}

fn key(crr: &ContainerRecreateRequest) -> String {
    format!("{}/{}", crr.namespace().unwrap_or_default(), crr.name_any())
}

fn left(until: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(now)).unwrap_or_default()
}

async fn reconcile_pass(
    crr: &ContainerRecreateRequest,
    ctx: &Ctx,
) -> Result<Action, ReconcileError> {
    if !crate::cache_ready(&ctx.pods) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = crr.namespace().unwrap_or_default();
    let api: Api<ContainerRecreateRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let pod = ctx.pods.get(&ObjectRef::new(&crr.spec.pod_name).within(&ns));
    let status = crr.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    if crr.metadata.deletion_timestamp.is_some() || status.completion_time.is_some() {
        if crr.finalizers().iter().any(|f| f == UNREADY_ACQUIRED_KEY) {
            release_pod_not_ready(ctx, crr, pod.as_deref()).await?;
        }
        if crr.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        if crr.labels().contains_key(ACTIVE_LABEL) {
            let body = json!({"metadata": {"labels": {ACTIVE_LABEL: null}}});
            api.patch(&crr.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
            return Ok(Action::await_change());
        }
        let (Some(ttl), Some(done)) =
            (crr.spec.ttl_seconds_after_finished, &status.completion_time)
        else {
            return Ok(Action::await_change());
        };
        let at = done.0 + jiff::SignedDuration::from_secs(i64::from(ttl.max(0)));
        if now >= at {
            tracing::info!(crr = %key(crr), "deleting a finished request (ttlSecondsAfterFinished)");
            match api.delete(&crr.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(left(at, now).max(Duration::from_millis(50))));
    }

    let uid_label = crr.labels().get(POD_UID_LABEL).cloned().unwrap_or_default();
    let pod_gone = pod.as_ref().is_none_or(|p| {
        p.metadata.deletion_timestamp.is_some() || p.uid().unwrap_or_default() != uid_label
    });
    if pod_gone {
        tracing::info!(crr = %key(crr), "completed as failed: the pod has gone");
        complete(&api, crr, "pod has gone", None).await?;
        return Ok(Action::await_change());
    }
    let created = crr.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut wake: Option<Duration> = None;
    if status.phase.is_none() {
        let at = created + jiff::SignedDuration::try_from(RESPONSE_TIMEOUT).unwrap_or_default();
        if now >= at {
            complete(&api, crr, "daemon has not responded for a long time", None).await?;
            return Ok(Action::await_change());
        }
        wake = Some(left(at, now));
    }
    if let Some(deadline) = crr.spec.active_deadline_seconds {
        let at = created + jiff::SignedDuration::from_secs(deadline.max(0));
        if now >= at {
            let msg = "recreating has exceeded the activeDeadlineSeconds";
            // Every unfinished container Failed; unlike upstream also those the node agent had
            // not reported yet, so the status says what became of each container asked for.
            let before = status.container_recreate_states.clone().unwrap_or_default();
            let states: Vec<ContainerRecreateState> = crr
                .spec
                .containers
                .iter()
                .map(|c| {
                    let prev = before.iter().find(|s| s.name == c.name);
                    match prev {
                        Some(s) if matches!(s.phase, Phase::Succeeded | Phase::Failed) => s.clone(),
                        _ => ContainerRecreateState {
                            name: c.name.clone(),
                            phase: Phase::Failed,
                            message: Some(msg.to_owned()),
                            is_killed: prev.is_some_and(|s| s.is_killed),
                        },
                    }
                })
                .collect();
            tracing::info!(crr = %key(crr), "completed as failed: past activeDeadlineSeconds");
            complete(&api, crr, msg, Some(states)).await?;
            return Ok(Action::await_change());
        }
        let l = left(at, now);
        wake = Some(wake.map_or(l, |w| w.min(l)));
    }
    if status.phase == Some(Phase::Recreating)
        && crr.spec.unready_grace_seconds().is_some()
        && !crr.annotations().contains_key(UNREADY_ACQUIRED_KEY)
        && let Some(pod) = pod.as_deref()
    {
        acquire_pod_not_ready(ctx, &api, crr, pod).await?;
    }
    Ok(wake
        .map_or_else(Action::await_change, |w| Action::requeue(w.max(Duration::from_millis(50)))))
}

async fn complete(
    api: &Api<ContainerRecreateRequest>,
    crr: &ContainerRecreateRequest,
    message: &str,
    states: Option<Vec<ContainerRecreateState>>,
) -> Result<(), kube::Error> {
    let mut st = json!({
        "phase": "Completed",
        "completionTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "message": message,
    });
    if let Some(s) = states {
        st["containerRecreateStates"] = json!(s);
    }
    api.patch_status(
        &crr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": st})),
    )
    .await?;
    Ok(())
}

/// Upstream's `acquirePodNotReady`: finalizer first, then the pod's condition, then the
/// annotation the node agent waits for.
async fn acquire_pod_not_ready(
    ctx: &Ctx,
    api: &Api<ContainerRecreateRequest>,
    crr: &ContainerRecreateRequest,
    pod: &Pod,
) -> Result<(), kube::Error> {
    if readiness::has_gate(pod) {
        if !crr.finalizers().iter().any(|f| f == UNREADY_ACQUIRED_KEY) {
            let mut finalizers = crr.finalizers().to_vec();
            finalizers.push(UNREADY_ACQUIRED_KEY.to_owned());
            let body = json!({"metadata": {"finalizers": finalizers,
                                           "resourceVersion": crr.resource_version()}});
            api.patch(&crr.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
        }
        readiness::add_not_ready(&ctx.client, pod, READINESS_USER_AGENT, &key(crr)).await?;
    } else {
        tracing::info!(crr = %key(crr), "the pod has no KruisePodReady readiness gate; not marking it not ready");
    }
    let at = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = json!({"metadata": {"annotations": {UNREADY_ACQUIRED_KEY: at}}});
    api.patch(&crr.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
    Ok(())
}

/// Upstream's `releasePodNotReady`: the request's key leaves the pod's condition (True again
/// when no holder is left), then the finalizer goes.
async fn release_pod_not_ready(
    ctx: &Ctx,
    crr: &ContainerRecreateRequest,
    pod: Option<&Pod>,
) -> Result<(), kube::Error> {
    let uid_label = crr.labels().get(POD_UID_LABEL).cloned().unwrap_or_default();
    if let Some(pod) = pod.filter(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.uid().unwrap_or_default() == uid_label
            && readiness::has_gate(p)
    }) {
        readiness::remove_not_ready(&ctx.client, pod, READINESS_USER_AGENT, &key(crr)).await?;
    }
    let api: Api<ContainerRecreateRequest> =
        Api::namespaced(ctx.client.clone(), &crr.namespace().unwrap_or_default());
    let finalizers: Vec<&String> =
        crr.finalizers().iter().filter(|f| *f != UNREADY_ACQUIRED_KEY).collect();
    let body =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": crr.resource_version()}});
    match api.patch(&crr.name_any(), &PatchParams::default(), &Patch::Merge(body)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
