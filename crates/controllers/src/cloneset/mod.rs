//! The CloneSet controller: OpenKruise's `apps.kruise.io/v1alpha1` CloneSet, reconciled the way
//! upstream's `pkg/controller/cloneset` does it, with its decisions taken by `kinetic-rollout`
//! (pure functions) and its actions done here through the `kube` client.
//!
//! One reconcile of a CloneSet, in upstream's order:
//! 1. claim pods (adopt matching orphans, release owned pods that no longer match);
//! 2. wait until the watch cache shows this controller's own earlier writes (expectations);
//! 3. find or create the ControllerRevision of the current template;
//! 4. refresh in-place updates: end grace periods, detect finished updates and set the
//!    `InPlaceUpdateReady` condition True again (and on new pods for the first time);
//! 5. scale (create or delete pods) — when it acted, the pass ends;
//! 6. update the pods the plan names: in place when the template change allows it (the pod
//!    first goes not-ready, so it leaves the endpoints before its container restarts), else
//!    by marking it `apps.kruise.io/specified-delete` so the scale step replaces it;
//! 7. write the status, trim `podsToDelete` and the revision history, and requeue for the
//!    next timed event (minReadySeconds, a grace period, the progress deadline).
//!
//! Better than upstream: the in-place decision is taken before surge is computed (see
//! `kinetic_rollout::DiffOptions::in_place_update`), and a rollout whose updated pods do not
//! become available within `progressDeadlineSeconds` stops updating further pods, says so in
//! the `Progressing` condition (`ProgressDeadlineExceeded`) and a Warning Event, and resumes
//! when the template changes again.
//!
//! Lifecycle hooks: preNormal (new pods wait in PreparingNormal until the hook is in place),
//! preDelete and inPlaceUpdate, with `markPodNotReady` driving the `KruisePodReady` gate.
//!
//! `volumeClaimTemplates` give each pod its own claims, named and reused by instance id
//! ([`pvc`]). Image pre-download for in-place updates ([`predownload`]) is on by default,
//! unlike upstream.
//!
//! In-place updates also cover env read from changed labels/annotations (the node agent
//! restarts such containers) and go in container priority batches (`KRUISE_CONTAINER_PRIORITY`,
//! `container-launch-priority: Ordered`): `refresh` patches the next batch once the last one is
//! updated and ready.
//!
//! Not done (yet): in-place resource resize.

mod pool;
mod predownload;
mod pvc;
pub(crate) mod revision;
mod status;
mod validation;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::kruise::cloneset::{CloneSet, CloneSetUpdateStrategyType};
use kinetic_api::kruise::{
    CLONESET_INSTANCE_ID_LABEL, CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_GRACE_ANNOTATION,
    INPLACE_UPDATE_READY_CONDITION, KRUISE_POD_READY_CONDITION, LIFECYCLE_STATE_LABEL,
    LifecycleHook, LifecycleState, POD_TEMPLATE_HASH_LABEL, SPECIFIED_DELETE_LABEL,
};
use kinetic_machinery::selector::LabelSelector;
use kinetic_rollout::inplace::{self, InPlaceOptions};
use kinetic_rollout::{ScaleAction, SyncInput, plan_scale, plan_update};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

use self::revision::{Revisions, template_of};
use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};

/// The controller's name in Events and its field manager.
pub const COMPONENT: &str = "cloneset-controller";

/// What one reconcile shares with the others.
pub struct Ctx {
    pub client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    pvcs: Store<PersistentVolumeClaim>,
    /// Every PodPool, for the scale-out's claims ([`pool::claim_pods`]).
    pools: Store<kinetic_api::pool::PodPool>,
    /// The `PodPoolNotUsed` Warnings already sent, once per CloneSet, revision and reason.
    pool_warnings: pool::WarnOnce,
    exp: Expectations,
    events: EventSink,
    backoff: Backoff,
}

/// The CustomResourceDefinitions this controller serves (for [`crate::crds::install`]).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![CloneSet::crd()]
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("invalid CloneSet {key}")]
    Spec {
        key: String,
        #[source]
        source: kinetic_rollout::Error,
    },
    #[error("encoding the in-place update state")]
    Json(#[from] serde_json::Error),
    #[error("making a pod of an empty code pool's runtime")]
    Pool(#[from] crate::podpool::ClaimError),
}

/// A cache of every `K` in the cluster and the stream that fills it (for `owns_stream`).
pub(crate) fn reflect<K>(
    client: &Client,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    (reader, stream)
}

/// Runs the CloneSet controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per CloneSet with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (pod_reader, pods) = reflect::<Pod>(&client);
    let (rev_reader, revs) = reflect::<ControllerRevision>(&client);
    let (pvc_reader, pvcs) = reflect::<PersistentVolumeClaim>(&client);
    // PodPools own nothing of a CloneSet's: their cache is read at scale-out only, so its
    // stream just keeps it filled (no reconcile follows a pool's change).
    let (pool_reader, pools) = reflect::<kinetic_api::pool::PodPool>(&client);
    let pools = tokio::spawn(pools.for_each(|_| std::future::ready(())));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pod_reader,
        revisions: rev_reader,
        pvcs: pvc_reader,
        pools: pool_reader,
        pool_warnings: pool::WarnOnce::default(),
        exp: Expectations::default(),
        events: EventSink::spawn(client.clone(), COMPONENT.to_owned()),
        backoff: Backoff::default(),
    });
    Controller::new(Api::<CloneSet>::all(client), watcher::Config::default())
        .owns_stream(pods)
        .owns_stream(revs)
        .owns_stream(pvcs)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("cloneset"))
        .await;
    pools.abort();
    Ok(())
}

/// Every failure backs off per CloneSet (see [`crate::backoff`]); nothing retries at a fixed
/// rate.
fn error_policy(cs: Arc<CloneSet>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*cs, e)
}

/// `updateStrategy.inPlaceUpdateStrategy.gracePeriodSeconds`, 0 when unset.
fn grace_seconds(cs: &CloneSet) -> i32 {
    cs.spec
        .update_strategy
        .in_place_update_strategy
        .as_ref()
        .and_then(|s| s.grace_period_seconds)
        .unwrap_or(0)
}

fn key(cs: &CloneSet) -> String {
    format!("{}/{}", cs.namespace().unwrap_or_default(), cs.name_any())
}

pub(crate) fn owner_ref(cs: &CloneSet) -> OwnerReference {
    OwnerReference {
        api_version: CloneSet::api_version(&()).into_owned(),
        kind: CloneSet::kind(&()).into_owned(),
        name: cs.name_any(),
        uid: cs.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn is_terminal(p: &Pod) -> bool {
    let phase = kinetic_rollout::pod::phase(p);
    phase == "Succeeded" || phase == "Failed"
}

fn pods_api(ctx: &Ctx, cs: &CloneSet) -> Api<Pod> {
    Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default())
}

/// The earliest of two optional delays.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// One reconcile, unless the CloneSet is backing off from a failure at the same generation (a
/// pod event does not cut the wait short; a spec change does).
async fn reconcile(cs: Arc<CloneSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let obj = cs.clone();
    ctx.backoff.reconcile(&*obj, reconcile_pass(cs, ctx.clone())).await
}

async fn reconcile_pass(cs: Arc<CloneSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let owner = key(&cs);
    if cs.meta().deletion_timestamp.is_some() {
        ctx.exp.forget(&owner);
        ctx.pool_warnings.forget(&owner);
        return Ok(Action::await_change());
    }
    // Kruise's webhook rules, which nothing enforces on a real cluster: an invalid CloneSet
    // is left alone, with a condition and an Event saying why.
    if let Some(why) = validation::problems(&cs) {
        validation::refuse(&ctx, &cs, &why).await?;
        return Ok(Action::await_change());
    }
    if validation::clear(&ctx, &cs).await? {
        return Ok(Action::await_change());
    }
    // Never wait for the caches inside a reconcile (see `crate::cache_ready`).
    if !(crate::cache_ready(&ctx.pods)
        && crate::cache_ready(&ctx.revisions)
        && crate::cache_ready(&ctx.pvcs))
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    // A Knative revision's CloneSet whose pods are being handed over in place to its
    // successor's: the handoff owns its pods and replicas until it ends.
    if crate::serving::handoff::giving(&cs) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let owned = claim(&ctx, &cs).await?;
    let seen = owned.iter().map(|p| Seen {
        name: kinetic_rollout::pod::name(p),
        uid: p.metadata.uid.as_deref().unwrap_or_default(),
        resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
        terminating: p.metadata.deletion_timestamp.is_some(),
    });
    if !ctx.exp.satisfied(&owner, seen) || !pvc::expectations_met(&ctx, &cs) {
        // The watch delivers the missing events and triggers the next pass; the requeue is a
        // safety net only.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let revs = revision::sync(&ctx, &cs).await?;
    let active: Vec<Pod> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !is_terminal(p))
        .map(|p| (**p).clone())
        .collect();
    let claims = pvc::cleanup(&ctx, &cs, &active, pvc::owned(&ctx, &cs)).await?;

    let (refreshed, mut requeue) = refresh(&ctx, &cs, &active, &revs, now).await?;
    let update_name = revs.update.name_any();
    let current_name = revs.current.name_any();
    let spec_err = |source| ReconcileError::Spec { key: owner.clone(), source };
    let mut input =
        SyncInput::new(&cs, &active, &current_name, &update_name, now).map_err(spec_err)?;
    input.options.in_place_update = input.strategy.allows_in_place()
        && match (template_of(&revs.current), template_of(&revs.update)) {
            (Some(old), Some(new)) => {
                inplace::update_spec(&old, &new, InPlaceOptions::default()).is_some()
            }
            _ => false,
        };

    // Image pre-download for the pods still to update (upstream runs it before scaling).
    let outdated =
        active.iter().filter(|p| !kinetic_rollout::pod::matches_revision(p, &update_name)).count();
    let retry_predownload = predownload::sync(
        &ctx.client,
        &cs,
        &revs,
        &input.strategy,
        input.options.in_place_update,
        outdated,
    )
    .await;
    requeue = sooner(requeue, retry_predownload);
    let mut acted = refreshed;
    // Receiving pods in a handoff: its replica count already counts them.
    if !acted && !crate::serving::handoff::receiving(&cs) {
        acted = scale(&ctx, &cs, &input, &revs, &claims).await?;
    }
    let deadline_exceeded = status::deadline_exceeded(&cs, &update_name);
    if !acted && !deadline_exceeded {
        let u = update(&ctx, &cs, &input, &revs, now).await?;
        acted = u.wrote;
        if u.held {
            // Upstream requeues after a second; a budget's status write does not wake us.
            requeue = sooner(requeue, Some(Duration::from_secs(1)));
        }
    }
    let pods_now: Vec<&Pod> = active.iter().collect();
    let (st, wake) = status::compute(&cs, &pods_now, &revs, input.strategy.partition, now);
    requeue = sooner(requeue, wake);
    let newly_exceeded = status::write(&ctx, &cs, st).await?;
    if newly_exceeded {
        ctx.events.send(EventReq::for_object(
            &*cs,
            "Warning",
            "ProgressDeadlineExceeded",
            format!(
                "updated pods did not become available within {}s: the rollout to {update_name} stopped; change the template to go on",
                cs.spec.progress_deadline_seconds.unwrap_or_default()
            ),
        ));
    }
    trim_pods_to_delete(&ctx, &cs, &owned).await?;
    let in_use: Vec<&str> = owned
        .iter()
        .filter_map(|p| kinetic_rollout::pod::label(p, CONTROLLER_REVISION_HASH_LABEL))
        .collect();
    revision::truncate(&ctx, &cs, &revs, &in_use).await?;
    if acted {
        // The watch brings the effects of this pass; look again soon in any case.
        requeue = sooner(requeue, Some(Duration::from_secs(5)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The pods this CloneSet owns after adopting orphans its selector matches and releasing owned
/// pods it no longer matches (upstream's `ClaimPods`).
async fn claim(ctx: &Ctx, cs: &CloneSet) -> Result<Vec<Arc<Pod>>, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let uid = cs.uid().unwrap_or_default();
    let selector = serde_json::to_value(&cs.spec.selector)
        .ok()
        .and_then(|v| LabelSelector::from_label_selector(&v).ok());
    let matches = |p: &Pod| {
        let labels = p
            .metadata
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
        selector.as_ref().is_some_and(|s| !s.is_empty() && s.matches(labels.as_ref()))
    };
    let api = pods_api(ctx, cs);
    let mut owned = Vec::new();
    for p in ctx.pods.state() {
        if p.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let controller = p.owner_references().iter().find(|o| o.controller == Some(true));
        match controller {
            Some(o) if o.uid == uid => {
                if matches(&p) || p.metadata.deletion_timestamp.is_some() {
                    owned.push(p);
                } else {
                    // Release: drop our owner reference (optimistic on the resourceVersion).
                    let refs: Vec<&OwnerReference> =
                        p.owner_references().iter().filter(|o| o.uid != uid).collect();
                    let body = json!({"metadata": {
                        "resourceVersion": p.metadata.resource_version,
                        "ownerReferences": refs,
                    }});
                    patch_pod(ctx, cs, &api, &p, Patch::Merge(body)).await?;
                }
            }
            None if matches(&p) && p.metadata.deletion_timestamp.is_none() && !is_terminal(&p) => {
                let mut refs: Vec<OwnerReference> = p.owner_references().to_vec();
                refs.push(owner_ref(cs));
                let body = json!({"metadata": {
                    "resourceVersion": p.metadata.resource_version,
                    "ownerReferences": refs,
                }});
                let adopted = patch_pod(ctx, cs, &api, &p, Patch::Merge(body)).await?;
                owned.push(Arc::new(adopted));
            }
            _ => {}
        }
    }
    Ok(owned)
}

/// Patches a pod and records the resourceVersion the write returned.
async fn patch_pod(
    ctx: &Ctx,
    cs: &CloneSet,
    api: &Api<Pod>,
    pod: &Pod,
    patch: Patch<Value>,
) -> Result<Pod, ReconcileError> {
    let name = pod.name_any();
    let p = api.patch(&name, &PatchParams::default(), &patch).await?;
    if let Some(rv) = p.metadata.resource_version.as_deref() {
        ctx.exp.expect_update(&key(cs), &name, rv);
    }
    Ok(p)
}

/// Sets the `InPlaceUpdateReady` condition (and, when false, Ready too, so the endpoints drop
/// the pod at once instead of after the node agent notices), through `pods/status`. `also`
/// carries further conditions for the same write (`KruisePodReady`), so a new pod gets all of
/// its workload-owned conditions in one request.
async fn set_update_ready(
    ctx: &Ctx,
    cs: &CloneSet,
    pod: &Pod,
    ready: bool,
    also: Vec<Value>,
) -> Result<Pod, ReconcileError> {
    let now = now_rfc3339();
    let mut conditions = vec![if ready {
        // `null` drops the `StartInPlaceUpdate` reason (and any message) of the False
        // condition this replaces, as upstream's True condition carries none (issue 18).
        json!({"type": INPLACE_UPDATE_READY_CONDITION, "status": "True", "lastTransitionTime": now,
               "reason": null, "message": null})
    } else {
        json!({"type": INPLACE_UPDATE_READY_CONDITION, "status": "False",
               "reason": "StartInPlaceUpdate", "lastTransitionTime": now})
    }];
    if !ready {
        conditions.push(not_ready_condition(INPLACE_UPDATE_READY_CONDITION, &now));
    }
    let mut now_true = vec![INPLACE_UPDATE_READY_CONDITION];
    if also.iter().any(|c| c["type"] == KRUISE_POD_READY_CONDITION && c["status"] == "True") {
        now_true.push(KRUISE_POD_READY_CONDITION);
    }
    if ready && ready_once_gates_are(pod, &now_true) {
        // `null` drops the reason and message of the False condition this replaces (the
        // patch merges conditions by type, field by field).
        conditions.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": now,
                               "reason": null, "message": null}));
    }
    conditions.extend(also);
    patch_conditions(ctx, cs, pod, conditions).await
}

/// Whether kubelet will find the pod Ready once the gates in `now_true` are True: it runs,
/// every container reports ready (the agent resets that on a restart until the new
/// container's readiness probe passes), and every other readiness gate is True already; and it
/// is not Ready yet.
///
/// Then the workload writes `Ready=True` together with the gate, as it writes `Ready=False`
/// together with a False gate: the next in-place batch can start on this write instead of
/// waiting for the node agent's own status write. Kubelet computes the same value and leaves
/// it as it is; if it disagrees it rewrites the condition.
pub(crate) fn ready_once_gates_are(p: &Pod, now_true: &[&str]) -> bool {
    use kinetic_rollout::pod::condition;
    let Some(spec) = p.spec.as_ref() else { return false };
    let Some(status) = p.status.as_ref() else { return false };
    if status.phase.as_deref() != Some("Running")
        || condition(p, "Ready").is_some_and(|c| c.status == "True")
    {
        return false;
    }
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let containers_ready =
        spec.containers.iter().all(|c| statuses.iter().any(|s| s.name == c.name && s.ready));
    let gates_true = spec.readiness_gates.iter().flatten().all(|g| {
        now_true.contains(&g.condition_type.as_str())
            || condition(p, &g.condition_type).is_some_and(|c| c.status == "True")
    });
    containers_ready && gates_true
}

pub(crate) fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `Ready=False` condition kubelet would write once a readiness gate is False; the workload
/// writes it together with the gate so endpoints drop the pod without waiting for the agent.
pub(crate) fn not_ready_condition(gate: &str, now: &str) -> Value {
    json!({
        "type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
        "message": format!("the status of pod readiness gate \"{gate}\" is not \"True\", but False"),
        "lastTransitionTime": now,
    })
}

/// Writes pod conditions through `pods/status` (a strategic merge by condition type, guarded
/// by the pod's UID) and records the resourceVersion the write returned.
async fn patch_conditions(
    ctx: &Ctx,
    cs: &CloneSet,
    pod: &Pod,
    conditions: Vec<Value>,
) -> Result<Pod, ReconcileError> {
    let body = json!({"metadata": {"uid": pod.metadata.uid}, "status": {"conditions": conditions}});
    let api = pods_api(ctx, cs);
    let p =
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(body)).await?;
    if let Some(rv) = p.metadata.resource_version.as_deref() {
        ctx.exp.expect_update(&key(cs), &pod.name_any(), rv);
    }
    Ok(p)
}

/// Whether any lifecycle hook of the CloneSet asks to mark pods not ready; only then do its pods
/// carry the `KruisePodReady` readiness gate.
///
/// Upstream's pod webhook injects that gate into every Kruise-owned pod and a separate
/// controller sets it True. Kinetic injects it only when a hook can use it, so CloneSets
/// without `markPodNotReady` pay no extra gate; when injected, its first True is written in the
/// same request as `InPlaceUpdateReady`'s.
fn uses_kruise_pod_ready(cs: &CloneSet) -> bool {
    kinetic_rollout::lifecycle::marks_pod_not_ready(cs.spec.lifecycle.as_ref())
}

fn has_gate(p: &Pod, gate: &str) -> bool {
    p.spec.iter().flat_map(|s| s.readiness_gates.iter().flatten()).any(|g| g.condition_type == gate)
}

/// The `KruisePodReady` status a pod should have (upstream's `executePodNotReadyPolicy`): False
/// while a `markPodNotReady` hook holds it in PreparingDelete or PreparingUpdate, and through
/// the in-place update that follows PreparingUpdate; True otherwise.
fn kruise_pod_ready_wanted(cs: &CloneSet, p: &Pod) -> bool {
    let marks = |h: Option<&LifecycleHook>| h.and_then(|h| h.mark_pod_not_ready) == Some(true);
    let l = cs.spec.lifecycle.as_ref();
    let current = kinetic_rollout::pod::condition(p, KRUISE_POD_READY_CONDITION);
    let state = kinetic_rollout::pod::lifecycle_label(p).and_then(LifecycleState::parse);
    match state {
        Some(LifecycleState::PreparingDelete) => !marks(l.and_then(|l| l.pre_delete.as_ref())),
        Some(LifecycleState::PreparingUpdate) => !marks(l.and_then(|l| l.in_place_update.as_ref())),
        // Keep what PreparingUpdate set until the update is done.
        Some(LifecycleState::Updating) => current.is_none_or(|c| c.status == "True"),
        // Another holder (a ContainerRecreateRequest's unready grace) keeps it False until it
        // removes its entry from the condition's message (`crr::readiness`).
        _ => !current.is_some_and(|c| {
            c.status == "False" && !crate::crr::readiness::holders(c.message.as_deref()).is_empty()
        }),
    }
}

fn kruise_pod_ready_condition(ready: bool, now: &str) -> Value {
    if ready {
        json!({"type": KRUISE_POD_READY_CONDITION, "status": "True", "lastTransitionTime": now})
    } else {
        json!({"type": KRUISE_POD_READY_CONDITION, "status": "False",
               "reason": "LifecycleHook", "message": "a lifecycle hook with markPodNotReady holds the pod",
               "lastTransitionTime": now})
    }
}

/// Before moving a pod into a state a `markPodNotReady` hook holds, takes it out of service
/// (`KruisePodReady` False, and Ready False with it) so endpoints drop it before the user's
/// controller acts on the new state.
async fn mark_not_ready_for_hook(
    ctx: &Ctx,
    cs: &CloneSet,
    p: &Pod,
    hook: Option<&LifecycleHook>,
) -> Result<(), ReconcileError> {
    let marks = hook.and_then(|h| h.mark_pod_not_ready) == Some(true);
    let already = kinetic_rollout::pod::condition(p, KRUISE_POD_READY_CONDITION)
        .is_some_and(|c| c.status == "False");
    if marks && has_gate(p, KRUISE_POD_READY_CONDITION) && !already {
        let now = now_rfc3339();
        let conds = vec![
            kruise_pod_ready_condition(false, &now),
            not_ready_condition(KRUISE_POD_READY_CONDITION, &now),
        ];
        patch_conditions(ctx, cs, p, conds).await?;
    }
    Ok(())
}

/// What a pod in a grace period waits to get (`apps.kruise.io/inplace-update-grace`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Grace {
    revision: String,
    container_images: BTreeMap<String, String>,
    /// The template's label/annotation changes (`{"metadata": {"labels": .., "annotations":
    /// ..}}`), held back with the images as upstream holds the whole update spec: env read
    /// from them restarts containers, which must wait for the grace period too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
}

/// The lifecycle state a pod moves to on its own, without an update or a deletion
/// (upstream's `refreshPodState`):
/// - PreparingNormal → Normal once the preNormal hook is absent or fully in place;
/// - PreparingUpdate on the update revision (the template was rolled back while the hook held
///   the pod, Kruise #1156) → Updated while the inPlaceUpdate hook is not back, else Normal;
/// - Updated → Normal once the inPlaceUpdate hook is back in place.
///
/// Updating → Updated/Normal is decided where the update is seen complete (`refresh`).
fn lifecycle_step(cs: &CloneSet, p: &Pod, update_revision: &str) -> Option<LifecycleState> {
    use kinetic_rollout::lifecycle::is_pod_all_hooked;
    let l = cs.spec.lifecycle.as_ref();
    let in_place_hook = l.and_then(|l| l.in_place_update.as_ref());
    let state = kinetic_rollout::pod::lifecycle_label(p).and_then(LifecycleState::parse)?;
    match state {
        LifecycleState::PreparingNormal => {
            let hook = l.and_then(|l| l.pre_normal.as_ref());
            (hook.is_none() || is_pod_all_hooked(hook, p)).then_some(LifecycleState::Normal)
        }
        LifecycleState::PreparingUpdate
            if kinetic_rollout::pod::matches_revision(p, update_revision) =>
        {
            Some(if in_place_hook.is_some() && !is_pod_all_hooked(in_place_hook, p) {
                LifecycleState::Updated
            } else {
                LifecycleState::Normal
            })
        }
        LifecycleState::Updated
            if kinetic_rollout::pod::matches_revision(p, update_revision)
                && (in_place_hook.is_none() || is_pod_all_hooked(in_place_hook, p)) =>
        {
            Some(LifecycleState::Normal)
        }
        _ => None,
    }
}

/// Step 4: ends grace periods, marks finished in-place updates ready, and gives new pods their
/// `InPlaceUpdateReady` condition. Answers whether it wrote anything, and when to look again.
async fn refresh(
    ctx: &Ctx,
    cs: &CloneSet,
    pods: &[Pod],
    revs: &Revisions,
    now: Timestamp,
) -> Result<(bool, Option<Duration>), ReconcileError> {
    // Pods are refreshed concurrently: at the end of an in-place batch every pod of the batch
    // needs its gate set True and its lifecycle label moved, and the next batch waits for all.
    // At most 32 at a time, so a large scale-up does not open hundreds of requests at once.
    let mut wrote = false;
    let mut wake = None;
    for chunk in pods.chunks(32) {
        let results =
            futures::future::join_all(chunk.iter().map(|p| refresh_one(ctx, cs, p, revs, now)))
                .await;
        for r in results {
            let (w, d) = r?;
            wrote |= w;
            wake = sooner(wake, d);
        }
    }
    Ok((wrote, wake))
}

/// [`refresh`] for one pod.
async fn refresh_one(
    ctx: &Ctx,
    cs: &CloneSet,
    p: &Pod,
    revs: &Revisions,
    now: Timestamp,
) -> Result<(bool, Option<Duration>), ReconcileError> {
    let api = pods_api(ctx, cs);
    let grace_secs = grace_seconds(cs);
    let hook = cs.spec.lifecycle.as_ref().and_then(|l| l.in_place_update.as_ref());
    let mut wrote = false;
    let mut wake = None;
    let gated = has_gate(p, INPLACE_UPDATE_READY_CONDITION);
    let cond = kinetic_rollout::pod::condition(p, INPLACE_UPDATE_READY_CONDITION);
    let state = inplace::update_state(p).and_then(Result::ok);
    // An update waiting out its grace period.
    if let Some(g) = kinetic_rollout::pod::annotation(p, INPLACE_UPDATE_GRACE_ANNOTATION) {
        let grace: Option<Grace> = serde_json::from_str(g).ok();
        let stale =
            grace.as_ref().is_none_or(|g| !kinetic_rollout::pod::matches_revision(p, &g.revision));
        let started = state.as_ref().map_or(now, |s| s.update_timestamp.0);
        let left = Duration::from_secs(u64::try_from(grace_secs).unwrap_or(0))
            .saturating_sub(Duration::try_from(now.duration_since(started)).unwrap_or_default());
        if stale || left.is_zero() {
            let mut body = json!({"metadata": {
                "resourceVersion": p.metadata.resource_version,
                "annotations": {INPLACE_UPDATE_GRACE_ANNOTATION: null},
            }});
            if let (false, Some(g)) = (stale, grace) {
                if !g.container_images.is_empty() {
                    body["spec"] = inplace::containers_patch(p, &g.container_images);
                }
                let held = g.metadata.as_ref().and_then(|m| m.get("metadata"));
                for field in ["labels", "annotations"] {
                    let changes = held.and_then(|m| m.get(field)).and_then(Value::as_object);
                    for (k, v) in changes.into_iter().flatten() {
                        body["metadata"][field][k] = v.clone();
                    }
                }
            }
            patch_pod(ctx, cs, &api, p, Patch::Strategic(body)).await?;
            wrote = true;
        } else {
            wake = sooner(wake, Some(left));
        }
        return Ok((wrote, wake));
    }
    if let Some(next) = lifecycle_step(cs, p, &revs.update.name_any()) {
        let body = json!({"metadata": {"labels": {LIFECYCLE_STATE_LABEL: next.as_str()}}});
        patch_pod(ctx, cs, &api, p, Patch::Merge(body)).await?;
        wrote = true;
    }
    // `KruisePodReady` follows the lifecycle state (False only while a markPodNotReady hook
    // holds the pod); a new pod gets it with its first `InPlaceUpdateReady` below.
    let mut kruise_ready = None;
    if has_gate(p, KRUISE_POD_READY_CONDITION) {
        let want = kruise_pod_ready_wanted(cs, p);
        let have = kinetic_rollout::pod::condition(p, KRUISE_POD_READY_CONDITION)
            .map(|c| c.status == "True");
        if have != Some(want) {
            kruise_ready = Some(kruise_pod_ready_condition(want, &now_rfc3339()));
        }
    }
    if (!gated || cond.is_some())
        && let Some(c) = kruise_ready.take()
    {
        patch_conditions(ctx, cs, p, vec![c]).await?;
        wrote = true;
    }
    if !gated {
        return Ok((wrote, wake));
    }
    match cond.map(|c| c.status.as_str()) {
        None => {
            set_update_ready(ctx, cs, p, true, kruise_ready.into_iter().collect()).await?;
            wrote = true;
        }
        Some("False") => {
            let updating = state.as_ref().is_some_and(|s| {
                revs.all.iter().any(|r| r.name_any() == s.revision)
                    && kinetic_rollout::pod::matches_revision(p, &s.revision)
            });
            let done = match &state {
                Some(s) if updating => match inplace::check_update_completed(p, s) {
                    Ok(()) => true,
                    Err(inplace::NotCompleted::NextBatches) => {
                        // Container priority batches (upstream's `updateNextBatch`): the next
                        // batch once the last one is updated and ready.
                        if inplace::ready_for_next_batch(p, s).is_ok()
                            && let Some(mut body) = inplace::next_batch(p, s, now)?
                        {
                            body["metadata"]["resourceVersion"] =
                                json!(p.metadata.resource_version);
                            patch_pod(ctx, cs, &api, p, Patch::Strategic(body)).await?;
                            tracing::info!(cloneset = %key(cs), pod = %p.name_any(), "in-place update: next container batch");
                            wrote = true;
                        }
                        false
                    }
                    Err(_) => false,
                },
                // No update of the pod's revision is in flight: nothing to wait for.
                _ => true,
            };
            if done {
                // The gate and the lifecycle label are written concurrently: the pod counts as
                // available only once both are in, so their order does not matter.
                let gate = set_update_ready(ctx, cs, p, true, Vec::new());
                let label = async {
                    if kinetic_rollout::pod::in_state(p, LifecycleState::Updating) {
                        // With an inPlaceUpdate hook the pod waits in Updated until the user's
                        // controller hooks it again; without, it is Normal at once.
                        let next = if hook.is_some() {
                            LifecycleState::Updated
                        } else {
                            LifecycleState::Normal
                        };
                        let body = json!({"metadata": {"labels": {
                            LIFECYCLE_STATE_LABEL: next.as_str()
                        }}});
                        patch_pod(ctx, cs, &api, p, Patch::Merge(body)).await?;
                    }
                    Ok::<_, ReconcileError>(())
                };
                futures::try_join!(gate, label)?;
                wrote = true;
            }
        }
        Some(_) => {}
    }
    Ok((wrote, wake))
}

/// Step 5. Answers whether it created or deleted anything.
async fn scale(
    ctx: &Ctx,
    cs: &CloneSet,
    input: &SyncInput<'_>,
    revs: &Revisions,
    claims: &[Arc<PersistentVolumeClaim>],
) -> Result<bool, ReconcileError> {
    let plan = plan_scale(input, None);
    let api = pods_api(ctx, cs);
    let owner = key(cs);
    match plan.action {
        ScaleAction::Nothing => Ok(false),
        ScaleAction::CancelPreparingDelete(names) => {
            for n in names {
                if let Some(p) = input.pods.iter().find(|p| p.name_any() == n) {
                    let body = json!({"metadata": {"labels": {
                        LIFECYCLE_STATE_LABEL: LifecycleState::PreparingNormal.as_str()
                    }}});
                    patch_pod(ctx, cs, &api, p, Patch::Merge(body)).await?;
                }
            }
            Ok(true)
        }
        ScaleAction::Create { current_revision, update_revision } => {
            if current_revision + update_revision == 0 {
                ctx.events.send(EventReq::for_object(
                    cs,
                    "Warning",
                    "ScaleUpLimited",
                    "scaleStrategy.maxUnavailable holds back creating pods while others are unavailable".into(),
                ));
                return Ok(false);
            }
            let mut which = Vec::new();
            which.extend(std::iter::repeat_n(
                revs.current.clone(),
                usize::try_from(current_revision).unwrap_or(0),
            ));
            which.extend(std::iter::repeat_n(
                revs.update.clone(),
                usize::try_from(update_revision).unwrap_or(0),
            ));
            // A pool first (issue 12 part 4); pods are created for what it could not give.
            let (claimed, rest) = pool::claim_pods(ctx, cs, &which, input.pods).await?;
            if !rest.is_empty() {
                let mut existing = input.pods.to_vec();
                existing.extend(claimed);
                create_pods(ctx, cs, &rest, &existing, claims).await?;
            }
            Ok(true)
        }
        ScaleAction::Delete(list) => {
            for d in list {
                let Some(p) = input.pods.iter().find(|p| p.name_any() == d.name) else { continue };
                if d.prepare_delete {
                    let hook = cs.spec.lifecycle.as_ref().and_then(|l| l.pre_delete.as_ref());
                    mark_not_ready_for_hook(ctx, cs, p, hook).await?;
                    let body = json!({"metadata": {"labels": {
                        LIFECYCLE_STATE_LABEL: LifecycleState::PreparingDelete.as_str()
                    }}});
                    patch_pod(ctx, cs, &api, p, Patch::Merge(body)).await?;
                    continue;
                }
                let uid = p.metadata.uid.clone().unwrap_or_default();
                ctx.exp.expect_delete(&owner, &uid);
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&d.name, &dp).await {
                    Ok(_) => {
                        tracing::info!(cloneset = %owner, pod = %d.name, "pod deleted");
                        // The pod's claims go with it when the controller deletes it.
                        if let Some(id) = kinetic_rollout::pod::label(p, CLONESET_INSTANCE_ID_LABEL)
                        {
                            pvc::delete_for(ctx, cs, id, claims).await?;
                        }
                        ctx.events.send(EventReq::for_object(
                            cs,
                            "Normal",
                            "SuccessfulDelete",
                            format!("succeed to delete pod {}", d.name),
                        ));
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        ctx.exp.delete_failed(&owner, &uid)
                    }
                    Err(e) => {
                        ctx.exp.delete_failed(&owner, &uid);
                        return Err(e.into());
                    }
                }
            }
            Ok(true)
        }
    }
}

/// A new pod of revision `rev` named `{cloneset}-{id}` (upstream's `newVersionedPods`).
fn new_pod(cs: &CloneSet, rev: &ControllerRevision, id: &str) -> Option<Value> {
    let mut pod = template_of(rev)?;
    let rev_name = rev.name_any();
    let meta = pod.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    meta["name"] = json!(format!("{}-{id}", cs.name_any()));
    meta["namespace"] = json!(cs.namespace());
    meta["ownerReferences"] = json!([owner_ref(cs)]);
    let labels = meta.as_object_mut()?.entry("labels").or_insert_with(|| json!({}));
    labels[CONTROLLER_REVISION_HASH_LABEL] = json!(kinetic_rollout::pod::revision_label(&rev_name));
    labels[POD_TEMPLATE_HASH_LABEL] = json!(kinetic_rollout::pod::short_hash(&rev_name));
    labels[CLONESET_INSTANCE_ID_LABEL] = json!(id);
    // Upstream creates every pod PreparingNormal and moves it to Normal on its next pass when
    // the preNormal hook is absent or already in place (labels from the template). Kinetic
    // decides that here and creates such pods Normal at once: the same end state, one write
    // less per pod.
    labels[LIFECYCLE_STATE_LABEL] = json!(LifecycleState::Normal.as_str());
    // Upstream injects the gate into every pod, whatever the strategy (Kruise #892 complains;
    // we keep it so a later switch to in-place needs no recreate).
    let mut gates_wanted = vec![INPLACE_UPDATE_READY_CONDITION];
    if uses_kruise_pod_ready(cs) {
        gates_wanted.push(KRUISE_POD_READY_CONDITION);
    }
    let spec = pod.as_object_mut()?.entry("spec").or_insert_with(|| json!({}));
    let gates = spec.as_object_mut()?.entry("readinessGates").or_insert_with(|| json!([]));
    if let Some(g) = gates.as_array_mut() {
        for want in gates_wanted {
            if !g.iter().any(|x| x["conditionType"] == want) {
                g.push(json!({"conditionType": want}));
            }
        }
    }
    pod.as_object_mut()?.insert("apiVersion".into(), json!("v1"));
    pod.as_object_mut()?.insert("kind".into(), json!("Pod"));
    pvc::set_pod_volumes(cs, &mut pod, id);
    let pre_normal = cs.spec.lifecycle.as_ref().and_then(|l| l.pre_normal.as_ref());
    if pre_normal.is_some() {
        // A template that does not read as a Pod fails at create with the API's own error;
        // here it only means "not hooked".
        let hooked = serde_json::from_value::<Pod>(pod.clone())
            .is_ok_and(|typed| kinetic_rollout::lifecycle::is_pod_all_hooked(pre_normal, &typed));
        if !hooked {
            pod["metadata"]["labels"][LIFECYCLE_STATE_LABEL] =
                json!(LifecycleState::PreparingNormal.as_str());
        }
    }
    Some(pod)
}

/// Creates pods in slow-start batches of 1, 2, 4, ... stopping at the first failure
/// (upstream's `DoItSlowly`), so a quota or admission error costs one request, not hundreds.
/// Each pod's claims are created just before it.
///
/// Instance ids come first from claims whose pod is gone (so a replacement gets its volumes
/// back), then at random. A reused id whose pod name is still taken (its old pod is
/// terminating) is left for a later pass, which that pod's deletion triggers.
async fn create_pods(
    ctx: &Ctx,
    cs: &CloneSet,
    which: &[Arc<ControllerRevision>],
    existing: &[Pod],
    claims: &[Arc<PersistentVolumeClaim>],
) -> Result<(), ReconcileError> {
    let api = pods_api(ctx, cs);
    let owner = key(cs);
    // Names only collide within the namespace.
    let ns = cs.namespace();
    let mut taken: std::collections::HashSet<String> =
        ctx.pods.state().iter().filter(|p| p.namespace() == ns).map(|p| p.name_any()).collect();
    taken.extend(existing.iter().map(kube::ResourceExt::name_any));
    let reusable = pvc::reusable_ids(cs, claims);
    let jobs: Vec<(String, Value)> = {
        let mut rng = rand::rng();
        let ids = kinetic_rollout::scale::available_instance_ids(
            which.len(),
            existing,
            reusable.iter().map(String::as_str),
            &mut rng,
        );
        which
            .iter()
            .zip(ids)
            .filter_map(|(rev, id)| {
                let id = if taken.insert(format!("{}-{id}", cs.name_any())) {
                    id
                } else if reusable.contains(&id) {
                    return None;
                } else {
                    loop {
                        let id = kinetic_rollout::scale::new_instance_id(&mut rng);
                        if taken.insert(format!("{}-{id}", cs.name_any())) {
                            break id;
                        }
                    }
                };
                new_pod(cs, rev, &id).map(|p| (id, p))
            })
            .collect()
    };
    let mut batch = 1;
    let mut jobs = jobs.into_iter();
    loop {
        let chunk: Vec<(String, Value)> = jobs.by_ref().take(batch).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        let results = futures::future::join_all(chunk.into_iter().map(|(id, body)| {
            let api = api.clone();
            let owner = owner.clone();
            async move {
                pvc::create_missing(ctx, cs, &id, claims).await?;
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                ctx.exp.expect_create(&owner, &name);
                let pod: Pod = serde_json::from_value(body)?;
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        ctx.events.send(EventReq::for_object(
                            cs,
                            "Normal",
                            "SuccessfulCreate",
                            format!("succeed to create pod {name}"),
                        ));
                        Ok(())
                    }
                    Err(e) => {
                        ctx.exp.create_failed(&owner, &name);
                        ctx.events.send(EventReq::for_object(
                            cs,
                            "Warning",
                            "FailedCreate",
                            format!("failed to create pod {name}: {e}"),
                        ));
                        Err(ReconcileError::from(e))
                    }
                }
            }
        }))
        .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        batch *= 2;
    }
}

/// Step 6: updates the pods the plan names. Answers whether it wrote anything and whether a
/// budget held an update back.
async fn update(
    ctx: &Ctx,
    cs: &CloneSet,
    input: &SyncInput<'_>,
    revs: &Revisions,
    now: Timestamp,
) -> Result<Updated, ReconcileError> {
    let ty = input.strategy.update_type;
    if ty == CloneSetUpdateStrategyType::OnDelete {
        return Ok(Updated::default());
    }
    let plan = plan_update(input);
    if plan.pods.is_empty() {
        return Ok(Updated::default());
    }
    let Some(target) = revs.all.iter().find(|r| r.name_any() == plan.target_revision) else {
        return Ok(Updated::default());
    };
    let new_t = template_of(target);
    let api = pods_api(ctx, cs);
    let grace = grace_seconds(cs);
    // The pods of a batch are updated concurrently: each is two requests, and the batch's
    // restarts should start together.
    let results = futures::future::join_all(plan.pods.iter().map(|name| {
        update_one(
            ctx,
            cs,
            input,
            revs,
            &api,
            name,
            &plan.target_revision,
            new_t.as_ref(),
            grace,
            now,
        )
    }))
    .await;
    let mut out = Updated::default();
    for r in results {
        match r? {
            Some(w) => out.wrote |= w,
            None => out.held = true,
        }
    }
    Ok(out)
}

/// What an update pass did.
#[derive(Debug, Default)]
struct Updated {
    /// It wrote something.
    wrote: bool,
    /// A PodUnavailableBudget held back an in-place update (look again shortly).
    held: bool,
}

/// Updates one pod to `target`: in place when the templates allow it, else by marking it for
/// the scale step to recreate. Answers whether it wrote anything.
#[allow(clippy::too_many_arguments)]
async fn update_one(
    ctx: &Ctx,
    cs: &CloneSet,
    input: &SyncInput<'_>,
    revs: &Revisions,
    api: &Api<Pod>,
    name: &str,
    target: &str,
    new_t: Option<&Value>,
    grace: i32,
    now: Timestamp,
) -> Result<Option<bool>, ReconcileError> {
    let ty = input.strategy.update_type;
    let Some(p) = input.pods.iter().find(|p| p.name_any() == *name) else { return Ok(Some(false)) };
    let old_t = revs.of_pod(p).and_then(|r| template_of(r));
    let spec = match (&old_t, new_t) {
        // A claimed pool pod runs the pool's container under its name: recreate it.
        _ if pool::from_pool(p) => None,
        (Some(o), Some(n)) if ty != CloneSetUpdateStrategyType::ReCreate => {
            inplace::update_spec(o, n, InPlaceOptions::default())
        }
        _ => None,
    };
    match spec {
        Some(spec) => {
            // The inPlaceUpdate lifecycle hook (upstream `cloneset_update.go`): a hooked pod
            // first goes to PreparingUpdate and is updated only once the user's controller has
            // removed its hook labels/finalizers.
            let hook = cs.spec.lifecycle.as_ref().and_then(|l| l.in_place_update.as_ref());
            if kinetic_rollout::lifecycle::is_pod_hooked(hook, p) {
                if kinetic_rollout::pod::in_state(p, LifecycleState::PreparingUpdate) {
                    return Ok(Some(false));
                }
                mark_not_ready_for_hook(ctx, cs, p, hook).await?;
                let body = json!({"metadata": {"labels": {
                    LIFECYCLE_STATE_LABEL: LifecycleState::PreparingUpdate.as_str()
                }}});
                patch_pod(ctx, cs, api, p, Patch::Merge(body)).await?;
                return Ok(Some(true));
            }
            // The pod's PodUnavailableBudget first (upstream `cloneset_update.go` with
            // `PodUnavailableBudgetUpdateGate`): a budget that allows no more unavailable pods
            // holds the update, and the pass looks again shortly, without an error.
            if !crate::podunavailablebudget::admit_in_place(&ctx.client, p).await? {
                return Ok(None);
            }
            // Not ready first: the pod leaves the endpoints before anything restarts.
            let p = &set_update_ready(ctx, cs, p, false, Vec::new()).await?;
            let state = inplace::new_update_state(p, &spec, target, now);
            let mut body = inplace::update_patch(p, &spec, &state, target)?;
            let images = inplace::batch_images(&spec, &state);
            if grace > 0 && (!images.is_empty() || !spec.env_from_metadata.is_empty()) {
                // Keep the images and the label/annotation changes back until the grace
                // period ends (`refresh` applies them): both restart containers.
                let held = inplace::UpdateSpec { metadata_patch: None, ..spec.clone() };
                body = inplace::update_patch(p, &held, &state, target)?;
                if let Some(m) = body.as_object_mut() {
                    m.remove("spec");
                }
                let g = Grace {
                    revision: target.to_owned(),
                    container_images: images,
                    metadata: spec.metadata_patch.clone(),
                };
                body["metadata"]["annotations"][INPLACE_UPDATE_GRACE_ANNOTATION] =
                    json!(serde_json::to_string(&g)?);
            }
            body["metadata"]["resourceVersion"] = json!(p.metadata.resource_version);
            patch_pod(ctx, cs, api, p, Patch::Strategic(body)).await?;
            tracing::info!(cloneset = %key(cs), pod = %name, revision = %target, "in-place update started");
            ctx.events.send(EventReq::for_object(
                cs,
                "Normal",
                "SuccessfulUpdatePodInPlace",
                format!("successfully update pod {name} in-place(revision {})", target),
            ));
            Ok(Some(true))
        }
        None if ty == CloneSetUpdateStrategyType::InPlaceOnly => {
            ctx.events.send(EventReq::for_object(
                cs,
                "Warning",
                "FailedUpdatePodInPlace",
                format!(
                    "pod {name} cannot be updated in place to {} and the strategy is InPlaceOnly",
                    target
                ),
            ));
            Ok(Some(false))
        }
        None => {
            if kinetic_rollout::pod::label(p, SPECIFIED_DELETE_LABEL).is_some() {
                return Ok(Some(false));
            }
            let body = json!({"metadata": {"labels": {SPECIFIED_DELETE_LABEL: "true"}}});
            patch_pod(ctx, cs, api, p, Patch::Merge(body)).await?;
            ctx.events.send(EventReq::for_object(
                cs,
                "Normal",
                "SuccessfulUpdatePodReCreate",
                format!("successfully update pod {name} by recreate(revision {})", target),
            ));
            Ok(Some(true))
        }
    }
}

/// Removes names from `scaleStrategy.podsToDelete` whose pods are gone (upstream does this
/// after each pass, so the list does not grow forever).
async fn trim_pods_to_delete(
    ctx: &Ctx,
    cs: &CloneSet,
    owned: &[Arc<Pod>],
) -> Result<(), ReconcileError> {
    let Some(list) = cs.spec.scale_strategy.pods_to_delete.as_ref() else { return Ok(()) };
    let keep: Vec<&String> =
        list.iter().filter(|n| owned.iter().any(|p| p.name_any() == **n)).collect();
    if keep.len() == list.len() {
        return Ok(());
    }
    let api: Api<CloneSet> =
        Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    let body = json!({
        "metadata": {"resourceVersion": cs.resource_version()},
        "spec": {"scaleStrategy": {"podsToDelete": keep}},
    });
    api.patch(&cs.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
    Ok(())
}
