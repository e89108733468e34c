//! The StatefulSet controller: one implementation serving `apps/v1` StatefulSet and OpenKruise's
//! Advanced StatefulSet (`apps.kruise.io/v1beta1`), with upstream kube-controller-manager's
//! `pkg/controller/statefulset` and Kruise's `pkg/controller/statefulset` as the spec. Its
//! decisions are pure functions in `kinetic_rollout::statefulset`; this module does the API
//! calls.
//!
//! Both kinds read into Kruise's [`StatefulSetSpec`] (apps/v1 is a strict subset with the same
//! JSON names): [`run`] starts one kube-runtime `Controller` per kind over the same
//! reconcile, generic over the kind ([`Kind`]), so the apps/v1 controller simply never meets the
//! Kruise-only fields.
//!
//! One reconcile, in upstream's order:
//! 1. refuse an invalid set (no webhook runs on a real cluster): a Warning Event, nothing done;
//! 2. claim pods (adopt matching orphans named `{set}-{ordinal}`, release owned pods that no
//!    longer match) and wait until the caches show this controller's earlier writes;
//! 3. find or create the ControllerRevision of the template ([`revision`]);
//! 4. refresh in-place updates: finished ones get `InPlaceUpdateReady` True again
//!    ([`inplace`]);
//! 5. claims: each wanted ordinal's `volumeClaimTemplates` claims exist
//!    (`{template}-{set}-{ordinal}`, kept across updates and pod deletions), carry an
//!    ownerReference to the set when `whenDeleted: Delete`, and claims of scaled-away ordinals
//!    are deleted when `whenScaled: Delete` ([`pods`]);
//! 6. scale: OrderedReady creates one pod at a time in ordinal order, each Running and Ready
//!    (for minReadySeconds) before the next, and removes the highest ordinal first; Parallel
//!    does all at once (Kruise: at most `scaleStrategy.maxUnavailable` unavailable). Pods are
//!    `{set}-{ordinal}` from `ordinals.start`, skipping `reserveOrdinals`, with `hostname` =
//!    their name and `subdomain` = `serviceName`, and upstream's `controller-revision-hash`,
//!    `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index` labels;
//! 7. update (RollingUpdate, not paused): from the highest ordinal down to the partition,
//!    `maxUnavailable` pods at a time, in place when Kruise's `podUpdatePolicy` allows it
//!    (same pod, same IP, containers restarted by the node agent), else deleted and recreated
//!    with the same name and claims; OnDelete leaves running pods alone;
//! 8. status (replicas, ready, available, current, updated, revisions, observedGeneration,
//!    collisionCount; Kruise adds updatedReady/updatedAvailable and `labelSelector`), revision
//!    history trimmed to `revisionHistoryLimit`.
//!
//! Kruise's lifecycle hooks: `preDelete` holds a pod in `PreparingDelete` until the user's
//! controller removes the hook; `inPlaceUpdate` holds it in `PreparingUpdate` before an
//! in-place update, and in `Updated` after it until the hook is back.
//!
//! Kruise's image pre-download ([`predownload`], the CloneSet's shared
//! `crate::predownload`) pulls the update's new images on the nodes of the pods still to
//! update while an in-place rollout runs.
//!
//! Not done (yet): `unorderedUpdate.priorityStrategy` (updates go by ordinal), in-place grace
//! periods, `volumeClaimUpdateStrategy` and `status.volumeClaims`, `markPodNotReady`, the
//! StatefulSet `Available` condition. Each kind has its own pod/revision/claim caches.

mod inplace;
mod pods;
mod predownload;
mod revision;
mod status;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::kruise::statefulset::{
    PodManagementPolicy, PodUpdatePolicy, StatefulSetSpec, StatefulSetStatus,
    StatefulSetUpdateStrategyType,
};
use kinetic_api::kruise::{LIFECYCLE_STATE_LABEL, LifecycleState};
use kinetic_machinery::selector::LabelSelector;
use kinetic_rollout::statefulset::{self as decide, Management, PodFacts};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde_json::{Value, json};

use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};

/// The controller's name in Events and its field manager.
pub const COMPONENT: &str = "statefulset-controller";

/// A kind this controller serves: `apps/v1` StatefulSet or Kruise's Advanced StatefulSet.
pub trait Kind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Kruise's fields and rules apply.
    const KRUISE: bool;
    /// Name in logs.
    const NAME: &'static str;
}

impl Kind for k8s_openapi::api::apps::v1::StatefulSet {
    const KRUISE: bool = false;
    const NAME: &'static str = "statefulset";
}

impl Kind for kinetic_api::kruise::statefulset::StatefulSet {
    const KRUISE: bool = true;
    const NAME: &'static str = "advanced-statefulset";
}

/// The CustomResourceDefinitions this controller serves (for [`crate::crds::install`]).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![kinetic_api::kruise::statefulset::StatefulSet::crd_all_versions()]
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("decoding or encoding a StatefulSet or pod")]
    Json(#[from] serde_json::Error),
    #[error("invalid StatefulSet {key}")]
    Spec {
        key: String,
        #[source]
        source: kinetic_rollout::Error,
    },
}

/// What one reconcile shares with the others.
pub struct Ctx {
    pub client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    pvcs: Store<PersistentVolumeClaim>,
    exp: Expectations,
    events: EventSink,
    backoff: Backoff,
}

/// One StatefulSet of either kind, read into the Advanced StatefulSet's types.
pub struct Set {
    pub name: String,
    pub ns: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub kruise: bool,
    pub spec: StatefulSetSpec,
    pub status: StatefulSetStatus,
    /// The controller reference pods, claims and revisions get.
    pub owner: OwnerReference,
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Set {
    fn from<K: Kind>(obj: &K) -> Result<Self, serde_json::Error> {
        let v = serde_json::to_value(obj)?;
        let spec: StatefulSetSpec =
            serde_json::from_value(v.get("spec").cloned().unwrap_or(json!({"template": {}})))?;
        let status: StatefulSetStatus = v
            .get("status")
            .filter(|s| !s.is_null())
            .map(|s| serde_json::from_value(s.clone()))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            name: obj.name_any(),
            ns: obj.namespace().unwrap_or_default(),
            uid: obj.uid().unwrap_or_default(),
            generation: obj.meta().generation,
            kruise: K::KRUISE,
            spec,
            status,
            owner: crate::util::controller_ref(obj),
            annotations: obj.annotations().clone(),
        })
    }

    /// `namespace/name`, the expectations key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    pub fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1).max(0)
    }

    fn rolling(&self) -> bool {
        self.spec.update_strategy.as_ref().and_then(|u| u.type_).unwrap_or_default()
            == StatefulSetUpdateStrategyType::RollingUpdate
    }

    fn rolling_update(
        &self,
    ) -> Option<&kinetic_api::kruise::statefulset::RollingUpdateStatefulSetStrategy> {
        self.spec.update_strategy.as_ref().and_then(|u| u.rolling_update.as_ref())
    }

    fn partition(&self) -> i32 {
        self.rolling_update().and_then(|r| r.partition).unwrap_or(0)
    }

    /// Kruise's `podUpdatePolicy`; apps/v1 always recreates.
    pub fn pod_update_policy(&self) -> PodUpdatePolicy {
        if !self.kruise {
            return PodUpdatePolicy::ReCreate;
        }
        self.rolling_update().and_then(|r| r.pod_update_policy).unwrap_or_default()
    }

    /// Seconds a pod must be ready to be available: Kruise's `rollingUpdate.minReadySeconds`,
    /// else `spec.minReadySeconds`.
    pub fn min_ready_seconds(&self) -> i32 {
        self.rolling_update()
            .and_then(|r| r.min_ready_seconds)
            .filter(|_| self.kruise)
            .or(self.spec.min_ready_seconds)
            .unwrap_or(0)
            .max(0)
    }

    fn management(&self) -> Management {
        match self.spec.pod_management_policy.unwrap_or_default() {
            PodManagementPolicy::OrderedReady => Management::OrderedReady,
            PodManagementPolicy::Parallel => Management::Parallel,
        }
    }

    /// The object reference Events are about.
    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.owner.api_version.clone()),
            kind: Some(self.owner.kind.clone()),
            namespace: Some(self.ns.clone()),
            name: Some(self.name.clone()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        }
    }

    fn event(&self, type_: &'static str, reason: &'static str, message: String) -> EventReq {
        EventReq { involved: self.reference(), type_, reason, message }
    }

    fn lifecycle_hook(
        &self,
        which: fn(&kinetic_api::kruise::Lifecycle) -> Option<&kinetic_api::kruise::LifecycleHook>,
    ) -> Option<&kinetic_api::kruise::LifecycleHook> {
        if !self.kruise {
            return None;
        }
        self.spec.lifecycle.as_ref().and_then(which)
    }
}

/// A cache of every `K` in the cluster and the stream that fills it (for `owns_stream`).
fn reflect<K>(
    client: &Client,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
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

/// Runs the controllers of both kinds until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per StatefulSet with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        tracing::info!("StatefulSet controllers started");
        futures::try_join!(
            run_kind::<k8s_openapi::api::apps::v1::StatefulSet>(client.clone(), stop.wait()),
            run_kind::<kinetic_api::kruise::statefulset::StatefulSet>(client, stop.wait()),
        )
        .map(|_| ())
    })
    .await
}

/// Runs the controller of kind `K` until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per StatefulSet with back-off.
pub async fn run_kind<K: Kind>(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (pod_reader, pods) = reflect::<Pod>(&client);
    let (rev_reader, revs) = reflect::<ControllerRevision>(&client);
    let (pvc_reader, pvcs) = reflect::<PersistentVolumeClaim>(&client);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pod_reader,
        revisions: rev_reader,
        pvcs: pvc_reader,
        exp: Expectations::default(),
        events: EventSink::spawn(client.clone(), COMPONENT.to_owned()),
        backoff: Backoff::default(),
    });
    Controller::new(Api::<K>::all(client), watcher::Config::default())
        .owns_stream(pods)
        .owns_stream(revs)
        .owns_stream(pvcs)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(crate::log_reconcile(K::NAME))
        .await;
    Ok(())
}

fn error_policy<K: Kind>(obj: Arc<K>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*obj, e)
}

async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let o = obj.clone();
    ctx.backoff.reconcile(&*o, reconcile_pass(obj, ctx.clone())).await
}

/// The earliest of two optional delays.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn is_finished(p: &Pod) -> bool {
    matches!(kinetic_rollout::pod::phase(p), "Succeeded" | "Failed")
}

async fn reconcile_pass<K: Kind>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let set = Set::from(&*obj)?;
    let key = set.key();
    if obj.meta().deletion_timestamp.is_some() {
        ctx.exp.forget(&key);
        return Ok(Action::await_change());
    }
    let raw = serde_json::to_value(&*obj)?;
    let problems = kinetic_rollout::statefulset::validation::validate(&raw, set.kruise);
    if !problems.is_empty() {
        let why: Vec<String> =
            problems.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        ctx.events.send(set.event("Warning", "InvalidSpec", why.join("; ")));
        return Ok(Action::await_change());
    }
    if !(crate::cache_ready(&ctx.pods)
        && crate::cache_ready(&ctx.revisions)
        && crate::cache_ready(&ctx.pvcs))
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let owned = claim(&ctx, &set).await?;
    let seen = owned.iter().map(|p| Seen {
        name: kinetic_rollout::pod::name(p),
        uid: p.metadata.uid.as_deref().unwrap_or_default(),
        resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
        terminating: p.metadata.deletion_timestamp.is_some(),
    });
    if !ctx.exp.satisfied(&key, seen) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let revs = revision::sync(&ctx, &set).await?;
    let now = Timestamp::now();
    let reserved =
        decide::reserved_ordinals(set.spec.reserve_ordinals.as_deref().unwrap_or_default())
            .unwrap_or_default();
    let start = set.spec.ordinals.as_ref().map_or(0, |o| o.start);
    let wanted = decide::wanted_ordinals(set.replicas(), start, &reserved);
    let update_name = revs.update.name_any();
    let min_ready = set.min_ready_seconds();
    // Pods by ordinal; pods whose name is not `{set}-{ordinal}` are deleted as condemned.
    let by_ordinal: Vec<(i32, &Pod)> = owned
        .iter()
        .filter_map(|p| decide::ordinal_of(&set.name, &p.name_any()).map(|o| (o, &**p)))
        .collect();
    let mut requeue = None;
    let facts: Vec<PodFacts> = by_ordinal
        .iter()
        .map(|(o, p)| {
            let ready =
                kinetic_rollout::pod::is_ready(p) && kinetic_rollout::pod::phase(p) == "Running";
            let available = if set.kruise {
                kinetic_rollout::pod::is_available(p, min_ready, now)
            } else {
                kinetic_rollout::pod::is_running_and_available(p, min_ready, now)
            };
            if ready && !available && min_ready > 0 {
                requeue = sooner(requeue, Some(Duration::from_secs(1)));
            }
            PodFacts {
                ordinal: *o,
                updated: kinetic_rollout::pod::matches_revision(p, &update_name),
                ready,
                available,
                terminating: p.metadata.deletion_timestamp.is_some(),
                finished: is_finished(p),
            }
        })
        .collect();
    let pod_at = |o: i32| by_ordinal.iter().find(|(x, _)| *x == o).map(|(_, p)| *p);

    // Image pre-download for the pods still to update (upstream runs it before scaling).
    let outdated = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !is_finished(p))
        .filter(|p| !kinetic_rollout::pod::matches_revision(p, &update_name))
        .count();
    requeue = sooner(requeue, predownload::sync(&ctx, &set, &revs, outdated).await);

    let mut acted = inplace::refresh(&ctx, &set, &by_ordinal, &revs, now).await?;
    let pvcs = pods::sync_claims(&ctx, &set, &wanted, &by_ordinal).await?;
    if !acted {
        let budget = set
            .spec
            .scale_strategy
            .as_ref()
            .and_then(|s| s.max_unavailable.as_ref())
            .filter(|_| set.kruise)
            .map(|m| decide::max_unavailable(Some(m), set.replicas()))
            .transpose()
            .map_err(|source| ReconcileError::Spec { key: key.clone(), source })?;
        let plan = decide::plan_scale(&wanted, &facts, set.management(), budget);
        for o in &plan.create {
            let index = wanted.iter().position(|w| w == o).unwrap_or(0);
            let rev = if decide::creates_current(index, set.rolling(), set.partition()) {
                &revs.current
            } else {
                &revs.update
            };
            pods::create(&ctx, &set, *o, rev, &pvcs).await?;
            acted = true;
        }
        for o in &plan.delete {
            if let Some(p) = pod_at(*o) {
                acted |= delete_pod(&ctx, &set, p, "scale").await?;
            }
        }
    }
    if !acted && set.rolling() {
        let paused = set.rolling_update().is_some_and(|r| r.paused);
        let max = decide::max_unavailable(
            set.rolling_update().and_then(|r| r.max_unavailable.as_ref()),
            set.replicas(),
        )
        .map_err(|source| ReconcileError::Spec { key: key.clone(), source })?;
        // In OrderedReady, every pod must be healthy before an update starts (upstream only
        // updates once the set's invariant — all replicas Running and Ready — holds).
        let healthy = set.management() == Management::Parallel
            || wanted.iter().all(|o| facts.iter().any(|f| f.ordinal == *o && f.healthy()))
            || max > 1;
        if !paused && healthy {
            let targets = decide::plan_rolling_update(&wanted, &facts, set.partition(), max);
            for o in targets {
                if let Some(p) = pod_at(o) {
                    acted |= inplace::update_pod(&ctx, &set, p, &revs, now).await?;
                }
            }
        }
    }
    let wake = status::write(&ctx, &set, &*obj, &owned, &wanted, &revs, now).await?;
    requeue = sooner(requeue, wake);
    let in_use: Vec<&str> = owned
        .iter()
        .filter_map(|p| {
            kinetic_rollout::pod::label(p, kinetic_api::kruise::CONTROLLER_REVISION_HASH_LABEL)
        })
        .collect();
    revision::truncate(&ctx, &set, &revs, &in_use).await?;
    if acted {
        requeue = sooner(requeue, Some(Duration::from_secs(5)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The pods this set owns after adopting orphans its selector matches (and that are named
/// `{set}-{ordinal}`) and releasing owned pods it no longer matches (upstream's
/// `ClaimPods`, with StatefulSet's `isMemberOf` name check for adoption).
async fn claim(ctx: &Ctx, set: &Set) -> Result<Vec<Arc<Pod>>, ReconcileError> {
    let selector = set
        .spec
        .selector
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| LabelSelector::from_label_selector(&v).ok());
    let matches = |p: &Pod| {
        let labels = p
            .metadata
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
        selector.as_ref().is_some_and(|s| !s.is_empty() && s.matches(labels.as_ref()))
    };
    let mut owned = Vec::new();
    for p in ctx.pods.state() {
        if p.metadata.namespace.as_deref() != Some(set.ns.as_str()) {
            continue;
        }
        let controller = p.owner_references().iter().find(|o| o.controller == Some(true));
        match controller {
            Some(o) if o.uid == set.uid => {
                if matches(&p) || p.metadata.deletion_timestamp.is_some() {
                    owned.push(p);
                } else {
                    let refs: Vec<&OwnerReference> =
                        p.owner_references().iter().filter(|o| o.uid != set.uid).collect();
                    let body = json!({"metadata": {
                        "resourceVersion": p.metadata.resource_version,
                        "ownerReferences": refs,
                    }});
                    patch_pod(ctx, set, &p, Patch::Merge(body)).await?;
                }
            }
            None if matches(&p)
                && p.metadata.deletion_timestamp.is_none()
                && !is_finished(&p)
                && decide::ordinal_of(&set.name, &p.name_any()).is_some() =>
            {
                let mut refs: Vec<OwnerReference> = p.owner_references().to_vec();
                refs.push(set.owner.clone());
                let body = json!({"metadata": {
                    "resourceVersion": p.metadata.resource_version,
                    "ownerReferences": refs,
                }});
                owned.push(Arc::new(patch_pod(ctx, set, &p, Patch::Merge(body)).await?));
            }
            _ => {}
        }
    }
    Ok(owned)
}

/// Patches a pod and records the resourceVersion the write returned.
pub(crate) async fn patch_pod(
    ctx: &Ctx,
    set: &Set,
    pod: &Pod,
    patch: Patch<Value>,
) -> Result<Pod, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.ns);
    let name = pod.name_any();
    let p = api.patch(&name, &PatchParams::default(), &patch).await?;
    if let Some(rv) = p.metadata.resource_version.as_deref() {
        ctx.exp.expect_update(&set.key(), &name, rv);
    }
    Ok(p)
}

/// Deletes a pod (guarded by its UID), unless Kruise's `preDelete` hook holds it: then it is
/// moved to `PreparingDelete` and deleted once the user's controller removed the hook. Answers
/// whether it wrote anything.
async fn delete_pod(ctx: &Ctx, set: &Set, p: &Pod, why: &str) -> Result<bool, ReconcileError> {
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    let hook = set.lifecycle_hook(|l| l.pre_delete.as_ref());
    if kinetic_rollout::lifecycle::is_pod_hooked(hook, p) {
        if kinetic_rollout::pod::in_state(p, LifecycleState::PreparingDelete) {
            return Ok(false);
        }
        let body = json!({"metadata": {"labels": {
            LIFECYCLE_STATE_LABEL: LifecycleState::PreparingDelete.as_str()
        }}});
        patch_pod(ctx, set, p, Patch::Merge(body)).await?;
        return Ok(true);
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.ns);
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let name = p.name_any();
    let key = set.key();
    ctx.exp.expect_delete(&key, &uid);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(statefulset = %key, pod = %name, why, "pod deleted");
            ctx.events.send(set.event(
                "Normal",
                "SuccessfulDelete",
                format!("delete Pod {name} in StatefulSet {} successful", set.name),
            ));
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            ctx.exp.delete_failed(&key, &uid);
            Ok(false)
        }
        Err(e) => {
            ctx.exp.delete_failed(&key, &uid);
            ctx.events.send(set.event(
                "Warning",
                "FailedDelete",
                format!(
                    "delete Pod {name} in StatefulSet {} failed error: {}",
                    set.name,
                    crate::report(&e)
                ),
            ));
            Err(e.into())
        }
    }
}

/// Ordinals of the claims templates name: `{template}-{set}-{ordinal}` for each template.
fn claim_ordinal(set: &Set, claim: &str) -> Option<i32> {
    set.spec.volume_claim_templates.iter().flatten().find_map(|t| {
        let prefix = format!("{}-", t.metadata.name.as_deref()?);
        decide::ordinal_of(&set.name, claim.strip_prefix(&prefix)?)
    })
}
