//! The DaemonSet controller, one for both `apps/v1` DaemonSet (kube-controller-manager's
//! `pkg/controller/daemon`) and OpenKruise's Advanced DaemonSet (`apps.kruise.io/v1alpha1`,
//! `pkg/controller/daemonset`): two kube-runtime `Controller`s, one per kind, running the same
//! reconcile over a common view of the object ([`Ds`]: the Kruise spec is a superset of the
//! apps/v1 one).
//!
//! One pass, in upstream's order:
//! 1. claim pods (adopt matching orphans, release owned pods that no longer match) and wait
//!    until the watch cache shows this controller's own earlier writes (expectations);
//! 2. find or create the ControllerRevision of the current template ([`revision`]);
//! 3. (Advanced, in place) finish in-place updates ([`inplace::refresh`]);
//! 4. `manage`: one pod per eligible node ([`nodes::should_run`]: template `nodeName`,
//!    `nodeSelector`, required node affinity, taints against the pod's tolerations plus
//!    upstream's default daemon tolerations), pinned to it with the required node affinity
//!    `matchFields metadata.name` (the scheduler binds it), pods deleted from nodes they must
//!    leave, failed pods replaced; creations limited by `burstReplicas` (250 for apps/v1) in
//!    slow-start batches;
//! 5. when `manage` did nothing, the rolling update ([`plan::rolling_update`]) over the nodes
//!    OpenKruise's `partition` and node `selector` leave to it ([`plan::nodes_to_update`]):
//!    `maxUnavailable` (old pods replaced, in place first under `InPlaceIfPossible`) or
//!    `maxSurge` (new pods beside old ones); `OnDelete` and Kruise's `paused` skip it;
//! 6. the status (`desiredNumberScheduled`, `currentNumberScheduled`, `numberReady`,
//!    `numberAvailable`, `numberUnavailable`, `updatedNumberScheduled`, `numberMisscheduled`,
//!    `observedGeneration`, `collisionCount`, Kruise's `daemonSetHash`) and the revision
//!    history (`revisionHistoryLimit`).
//!
//! Pods carry `controller-revision-hash` (the revision's hash) and `pod-template-generation`
//! (the DaemonSet's generation at creation), as upstream's. A deletion by an Advanced DaemonSet
//! with a `lifecycle.preDelete` hook first moves the pod to `PreparingDelete` and waits for the
//! user's controller to remove the hook's labels/finalizers.
//!
//! The Advanced DaemonSet pre-downloads the new images on the nodes still to update
//! ([`predownload`], over the CloneSet's shared `crate::predownload`).
//!
//! Not done: `progressive-create-pod`, the
//! `markPodNotReady` part of the preDelete hook, failed-pod back-off per node.

mod inplace;
pub mod nodes;
pub mod plan;
mod predownload;
mod revision;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::daemonset::{
    DaemonSetSpec, DaemonSetStatus, POD_TEMPLATE_GENERATION_LABEL, RollingUpdateDaemonSet,
};
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_READY_CONDITION, LIFECYCLE_STATE_LABEL,
    LifecycleState,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde_json::{Value, json};

use self::plan::{Limits, NodeView, PodsByNode};
use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};

/// The controller's name in Events and its field manager.
pub const COMPONENT: &str = "daemonset-controller";

/// apps/v1's `BurstReplicas`: at most this many pods are created per pass.
const BURST_REPLICAS: i32 = 250;

/// The two kinds this controller serves.
pub trait Kind:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// OpenKruise's Advanced DaemonSet (its extra fields are read).
    const ADVANCED: bool;
}

impl Kind for k8s_openapi::api::apps::v1::DaemonSet {
    const ADVANCED: bool = false;
}

impl Kind for kinetic_api::kruise::daemonset::DaemonSet {
    const ADVANCED: bool = true;
}

/// What one reconcile shares with the others (one per kind).
pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    nodes: Store<Node>,
    exp: Expectations,
    events: EventSink,
    backoff: Backoff,
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("encoding or decoding a DaemonSet")]
    Json(#[from] serde_json::Error),
}

/// The CustomResourceDefinitions this controller serves (for [`crate::crds::install`]).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![kinetic_api::kruise::daemonset::DaemonSet::crd()]
}

/// Either kind, read the same way.
pub(crate) struct Ds {
    name: String,
    ns: String,
    uid: String,
    generation: i64,
    /// `namespace/name`, prefixed by the kind's group (the expectations' key).
    key: String,
    spec: DaemonSetSpec,
    status: DaemonSetStatus,
    advanced: bool,
    annotations: BTreeMap<String, String>,
}

impl Ds {
    fn from_obj<K: Kind>(obj: &K) -> Result<Self, ReconcileError> {
        let v = serde_json::to_value(obj)?;
        let spec: DaemonSetSpec = serde_json::from_value(v["spec"].clone())?;
        let status = match v.get("status").filter(|s| !s.is_null()) {
            Some(s) => serde_json::from_value(s.clone())?,
            None => DaemonSetStatus::default(),
        };
        let meta = obj.meta();
        let (ns, name) = (meta.namespace.clone().unwrap_or_default(), obj.name_any());
        Ok(Self {
            key: format!("{}:{ns}/{name}", K::group(&())),
            name,
            ns,
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation.unwrap_or(0),
            spec,
            status,
            advanced: K::ADVANCED,
            annotations: obj.annotations().clone(),
        })
    }

    /// The rolling update's parameters when the strategy is RollingUpdate (the default).
    fn rolling(&self) -> Option<RollingUpdateDaemonSet> {
        let st = &self.spec.update_strategy;
        (st.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate")
            .then(|| st.rolling_update.clone().unwrap_or_default())
    }

    fn in_place(&self) -> bool {
        self.advanced
            && self.rolling().and_then(|r| r.rolling_update_type).as_deref()
                == Some("InPlaceIfPossible")
    }

    fn paused(&self) -> bool {
        self.advanced && self.rolling().and_then(|r| r.paused) == Some(true)
    }

    fn min_ready(&self) -> i32 {
        self.spec.min_ready_seconds.unwrap_or(0)
    }

    /// maxSurge, maxUnavailable and partition for `desired` nodes (upstream's
    /// `updatedDesiredNodeCounts`: percentages round up; both 0 means maxUnavailable 1).
    fn limits(&self, desired: i32) -> Limits {
        let r = self.rolling().unwrap_or_default();
        let scaled = |v: Option<&IntOrString>, what| {
            v.map_or(Ok(0), |v| kinetic_rollout::strategy::scaled_value(v, desired, true, what))
                .unwrap_or(0)
        };
        let mut max_surge =
            scaled(r.max_surge.as_ref(), "spec.updateStrategy.rollingUpdate.maxSurge");
        let mut max_unavailable = match r.max_unavailable.as_ref() {
            None if r.max_surge.is_none() => 1,
            v => scaled(v, "spec.updateStrategy.rollingUpdate.maxUnavailable"),
        };
        if self.in_place() {
            max_surge = 0;
        }
        if desired > 0 && max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let partition = if self.advanced { r.partition.unwrap_or(0).max(0) } else { 0 };
        Limits { max_surge: max_surge.max(0), max_unavailable: max_unavailable.max(0), partition }
    }

    /// The most pods created in one pass.
    fn burst(&self, desired: i32) -> usize {
        let b = match (&self.spec.burst_replicas, self.advanced) {
            (Some(v), true) => {
                kinetic_rollout::strategy::scaled_value(v, desired, true, "spec.burstReplicas")
                    .unwrap_or(BURST_REPLICAS)
            }
            _ => BURST_REPLICAS,
        };
        usize::try_from(b.max(1)).unwrap_or(1)
    }
}

/// A cache of every `K` and the stream of its changes (for `owns_stream`/`watches_stream`).
fn reflect<K>(
    client: &Client,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()>
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

/// Runs the controllers of both kinds until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per DaemonSet with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    crate::util::run_together(shutdown, |stop| async move {
        tracing::info!("DaemonSet controllers started");
        futures::try_join!(
            run_kind::<k8s_openapi::api::apps::v1::DaemonSet>(client.clone(), stop.wait()),
            run_kind::<kinetic_api::kruise::daemonset::DaemonSet>(client, stop.wait()),
        )
        .map(|_| ())
    })
    .await
}

/// The controller of one kind: its DaemonSets, the pods and revisions they own, and every
/// Node (a node added, removed or relabelled reconciles every DaemonSet of the kind).
async fn run_kind<K: Kind>(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (pod_reader, pods) = reflect::<Pod>(&client);
    let (rev_reader, revs) = reflect::<ControllerRevision>(&client);
    let (node_reader, nodes) = reflect::<Node>(&client);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pod_reader,
        revisions: rev_reader,
        nodes: node_reader,
        exp: Expectations::default(),
        events: EventSink::spawn(client.clone(), COMPONENT.to_owned()),
        backoff: Backoff::default(),
    });
    let controller = Controller::new(Api::<K>::all(client), watcher::Config::default());
    let all = controller.store();
    controller
        .owns_stream(pods)
        .owns_stream(revs)
        .watches_stream(nodes, move |_node: Node| {
            all.state().iter().map(|d| ObjectRef::from_obj(&**d)).collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(crate::log_reconcile("daemonset"))
        .await;
    Ok(())
}

fn error_policy<K: Kind>(ds: Arc<K>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*ds, e)
}

async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let o = obj.clone();
    ctx.backoff.reconcile(&*o, reconcile_pass(obj, ctx.clone())).await
}

async fn reconcile_pass<K: Kind>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ds = Ds::from_obj(&*obj)?;
    if obj.meta().deletion_timestamp.is_some() {
        ctx.exp.forget(&ds.key);
        return Ok(Action::await_change());
    }
    if crate::util::selector_is_empty(Some(&ds.spec.selector)) {
        // Upstream: "DaemonSet has empty selector" and nothing else.
        ctx.events.send(EventReq::for_object(
            &*obj,
            "Warning",
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.".into(),
        ));
        return Ok(Action::await_change());
    }
    if !(crate::cache_ready(&ctx.pods)
        && crate::cache_ready(&ctx.revisions)
        && crate::cache_ready(&ctx.nodes))
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let owner = crate::util::controller_ref(&*obj);
    let owned = claim(&ctx, &ds, &owner).await?;
    let seen = owned.iter().map(|p| Seen {
        name: kinetic_rollout::pod::name(p),
        uid: p.metadata.uid.as_deref().unwrap_or_default(),
        resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
        terminating: p.metadata.deletion_timestamp.is_some(),
    });
    if !ctx.exp.satisfied(&ds.key, seen) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let revs = revision::sync(&ctx, &ds, &owner).await?;
    let now = Timestamp::now();
    let template = ds.spec.template.spec.clone().unwrap_or_default();
    let nodes: Vec<NodeView> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| {
            let (should_run, should_continue) = nodes::should_run(n, &template);
            NodeView {
                name: n.name_any(),
                labels: n.metadata.labels.clone().unwrap_or_default(),
                should_run,
                should_continue,
            }
        })
        .collect();
    let pods: Vec<&Pod> = owned.iter().map(|p| &**p).collect();
    let mut by_node: PodsByNode<'_> = BTreeMap::new();
    for p in &pods {
        if let Some(n) = nodes::target_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let desired = i32::try_from(nodes.iter().filter(|n| n.should_run).count()).unwrap_or(i32::MAX);
    let limits = ds.limits(desired);
    // Image pre-download for the nodes still to update (upstream runs it before `manage`).
    let retry_predownload = predownload::sync(&ctx, &ds, &owner, &revs, &pods, desired).await;
    let mut acted = inplace::refresh(&ctx, &ds, &pods, &revs).await?;
    if !acted {
        let m =
            plan::manage(&nodes, &by_node, &revs.hash, limits.max_surge > 0, ds.min_ready(), now);
        acted = sync_nodes(&ctx, &*obj, &ds, &pods, &revs, &owner, m.create_on, m.delete, desired)
            .await?;
    }
    if !acted && ds.rolling().is_some() && !ds.paused() {
        let selector = ds
            .rolling()
            .and_then(|r| r.selector)
            .filter(|_| ds.advanced)
            .map(|s| crate::util::selector_of(Some(&s)));
        let order = plan::nodes_to_update(
            &nodes,
            &by_node,
            &revs.hash,
            selector.as_ref(),
            limits.partition,
        );
        let r = plan::rolling_update(&order, &by_node, &revs.hash, limits, ds.min_ready(), now);
        let mut delete = r.delete;
        if ds.in_place() && !r.replace.is_empty() {
            let (wrote, rest) = inplace::update(&ctx, &ds, &pods, r.replace, &revs, now).await?;
            acted |= wrote;
            delete.extend(rest);
        } else {
            delete.extend(r.replace);
        }
        acted |= sync_nodes(&ctx, &*obj, &ds, &pods, &revs, &owner, r.create_on, delete, desired)
            .await?;
    }
    let c = plan::counts(&nodes, &by_node, &revs.hash, ds.min_ready(), now);
    write_status(&ctx, &ds, &revs, c).await?;
    let in_use: Vec<&str> = pods
        .iter()
        .filter_map(|p| kinetic_rollout::pod::label(p, CONTROLLER_REVISION_HASH_LABEL))
        .collect();
    revision::truncate(&ctx, &ds, &revs, &in_use).await?;
    if acted {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if let Some(d) = retry_predownload {
        return Ok(Action::requeue(d));
    }
    // A pod that is ready but not yet available for minReadySeconds: look again then.
    if ds.min_ready() > 0 && c.ready > c.available {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(ds.min_ready()).unwrap_or(1),
        )));
    }
    Ok(Action::await_change())
}

/// The pods this DaemonSet owns after adopting orphans its selector matches and releasing
/// owned pods it no longer matches (upstream's `ClaimPods`).
async fn claim(
    ctx: &Ctx,
    ds: &Ds,
    owner: &OwnerReference,
) -> Result<Vec<Arc<Pod>>, ReconcileError> {
    let selector = crate::util::selector_of(Some(&ds.spec.selector));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ds.ns);
    let mut owned = Vec::new();
    for p in ctx.pods.state() {
        if p.metadata.namespace.as_deref() != Some(ds.ns.as_str()) {
            continue;
        }
        let matches = crate::util::matches(&selector, p.metadata.labels.as_ref());
        match crate::util::controller_of(&*p) {
            Some(o) if o.uid == ds.uid => {
                if matches || p.metadata.deletion_timestamp.is_some() {
                    owned.push(p);
                } else {
                    let refs: Vec<&OwnerReference> =
                        p.owner_references().iter().filter(|o| o.uid != ds.uid).collect();
                    let body = json!({"metadata": {
                        "resourceVersion": p.metadata.resource_version, "ownerReferences": refs}});
                    patch_pod(ctx, ds, &api, &p, Patch::Merge(body)).await?;
                }
            }
            None if matches
                && p.metadata.deletion_timestamp.is_none()
                && !matches!(kinetic_rollout::pod::phase(&p), "Succeeded" | "Failed") =>
            {
                let mut refs = p.owner_references().to_vec();
                refs.push(owner.clone());
                let body = json!({"metadata": {
                    "resourceVersion": p.metadata.resource_version, "ownerReferences": refs}});
                owned.push(Arc::new(patch_pod(ctx, ds, &api, &p, Patch::Merge(body)).await?));
            }
            _ => {}
        }
    }
    Ok(owned)
}

async fn patch_pod(
    ctx: &Ctx,
    ds: &Ds,
    api: &Api<Pod>,
    p: &Pod,
    patch: Patch<Value>,
) -> Result<Pod, ReconcileError> {
    let name = p.name_any();
    let out = api.patch(&name, &PatchParams::default(), &patch).await?;
    if let Some(rv) = out.metadata.resource_version.as_deref() {
        ctx.exp.expect_update(&ds.key, &name, rv);
    }
    Ok(out)
}

/// A new daemon pod for `node` (upstream's `NewPod` and `CreatePodTemplate`): the current
/// revision's template with the hash and generation labels, the default daemon tolerations,
/// pinned to the node; Advanced DaemonSets add the in-place gate (InPlaceIfPossible) and the
/// lifecycle state (with a preDelete hook).
fn new_pod(
    ds: &Ds,
    revs: &Revisions,
    owner: &OwnerReference,
    node: &str,
    id: &str,
) -> Option<Value> {
    let mut pod = revision::template_of(&revs.current)?;
    let mut spec: PodSpec =
        serde_json::from_value(pod.get("spec").cloned().unwrap_or_default()).ok()?;
    nodes::add_default_tolerations(&mut spec);
    if ds.in_place() {
        let gates = spec.readiness_gates.get_or_insert_with(Vec::new);
        if !gates.iter().any(|g| g.condition_type == INPLACE_UPDATE_READY_CONDITION) {
            gates.push(k8s_openapi::api::core::v1::PodReadinessGate {
                condition_type: INPLACE_UPDATE_READY_CONDITION.to_owned(),
            });
        }
    }
    pod["spec"] = serde_json::to_value(&spec).ok()?;
    nodes::pin_to_node(&mut pod, node);
    let meta = pod.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    meta["name"] = json!(format!("{}-{id}", ds.name));
    meta["namespace"] = json!(ds.ns);
    meta["ownerReferences"] = json!([owner]);
    let labels = meta.as_object_mut()?.entry("labels").or_insert_with(|| json!({}));
    labels[CONTROLLER_REVISION_HASH_LABEL] = json!(revs.hash);
    labels[POD_TEMPLATE_GENERATION_LABEL] = json!(ds.generation.to_string());
    if ds.advanced && ds.spec.lifecycle.as_ref().and_then(|l| l.pre_delete.as_ref()).is_some() {
        labels[LIFECYCLE_STATE_LABEL] = json!(LifecycleState::Normal.as_str());
    }
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    Some(pod)
}

/// Creates pods on `create_on` (at most `burstReplicas`, in slow-start batches 1, 2, 4, …
/// stopping at the first failure, as upstream's `syncNodes`) and deletes `delete` (through the
/// preDelete hook of an Advanced DaemonSet). Answers whether it wrote anything.
#[allow(clippy::too_many_arguments)]
async fn sync_nodes<K: Kind>(
    ctx: &Ctx,
    obj: &K,
    ds: &Ds,
    pods: &[&Pod],
    revs: &Revisions,
    owner: &OwnerReference,
    create_on: Vec<String>,
    delete: Vec<String>,
    desired: i32,
) -> Result<bool, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ds.ns);
    let mut wrote = false;
    let hook =
        ds.spec.lifecycle.as_ref().and_then(|l| l.pre_delete.as_ref()).filter(|_| ds.advanced);
    for name in delete {
        let Some(p) = pods.iter().copied().find(|p| p.name_any() == name) else { continue };
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if kinetic_rollout::lifecycle::is_pod_hooked(hook, p) {
            if !plan::is_pre_deleting(p) {
                let body = json!({"metadata": {"labels": {
                    LIFECYCLE_STATE_LABEL: LifecycleState::PreparingDelete.as_str()}}});
                patch_pod(ctx, ds, &api, p, Patch::Merge(body)).await?;
                wrote = true;
            }
            continue;
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        ctx.exp.expect_delete(&ds.key, &uid);
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                wrote = true;
                ctx.events.send(EventReq::for_object(
                    obj,
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => ctx.exp.delete_failed(&ds.key, &uid),
            Err(e) => {
                ctx.exp.delete_failed(&ds.key, &uid);
                return Err(e.into());
            }
        }
    }
    let mut jobs: Vec<Value> = Vec::new();
    {
        let mut rng = rand::rng();
        let taken: std::collections::HashSet<String> =
            ctx.pods.state().iter().map(|p| p.name_any()).collect();
        for node in create_on.iter().take(ds.burst(desired)) {
            let id = loop {
                let id = kinetic_rollout::scale::new_instance_id(&mut rng);
                if !taken.contains(&format!("{}-{id}", ds.name)) {
                    break id;
                }
            };
            jobs.extend(new_pod(ds, revs, owner, node, &id));
        }
    }
    let mut batch = 1;
    let mut jobs = jobs.into_iter();
    loop {
        let chunk: Vec<Value> = jobs.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        let results = futures::future::join_all(chunk.into_iter().map(|body| {
            let api = api.clone();
            async move {
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                ctx.exp.expect_create(&ds.key, &name);
                let pod: Pod = serde_json::from_value(body)?;
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        ctx.events.send(EventReq::for_object(
                            obj,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        ));
                        Ok(())
                    }
                    Err(e) => {
                        ctx.exp.create_failed(&ds.key, &name);
                        ctx.events.send(EventReq::for_object(
                            obj,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {}", crate::report(&e)),
                        ));
                        Err(ReconcileError::from(e))
                    }
                }
            }
        }))
        .await;
        wrote = true;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        batch *= 2;
    }
    Ok(wrote)
}

/// Writes the status when it changed (through `/status`, with the DaemonSet's
/// resourceVersion unset: the status is computed from what this pass saw).
async fn write_status(
    ctx: &Ctx,
    ds: &Ds,
    revs: &Revisions,
    c: plan::Counts,
) -> Result<(), ReconcileError> {
    let mut next = ds.status.clone();
    next.desired_number_scheduled = c.desired;
    next.current_number_scheduled = c.current;
    next.number_misscheduled = c.misscheduled;
    next.number_ready = c.ready;
    next.number_available = Some(c.available);
    next.number_unavailable = Some(c.desired - c.available);
    next.updated_number_scheduled = c.updated;
    next.observed_generation = Some(ds.generation);
    next.collision_count =
        (revs.collision_count > 0).then_some(revs.collision_count).or(next.collision_count);
    next.daemon_set_hash = revs.hash.clone();
    if next == ds.status {
        return Ok(());
    }
    let mut body = serde_json::to_value(&next)?;
    if !ds.advanced
        && let Some(m) = body.as_object_mut()
    {
        m.remove("daemonSetHash");
    }
    let patch = Patch::Merge(json!({"status": body}));
    let pp = PatchParams::default();
    if ds.advanced {
        let api: Api<kinetic_api::kruise::daemonset::DaemonSet> =
            Api::namespaced(ctx.client.clone(), &ds.ns);
        api.patch_status(&ds.name, &pp, &patch).await?;
    } else {
        let api: Api<k8s_openapi::api::apps::v1::DaemonSet> =
            Api::namespaced(ctx.client.clone(), &ds.ns);
        api.patch_status(&ds.name, &pp, &patch).await?;
    }
    Ok(())
}

use self::revision::Revisions;
