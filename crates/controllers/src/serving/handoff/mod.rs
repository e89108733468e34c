//! Revisions hand their pods over in place (issue 12, part 5): when a Service's new revision
//! differs from the one serving only in its images and is to get all the traffic, its pods
//! are the old revision's pods, updated in place: no cold start, no IP change, no double
//! capacity. A rollback (the template going back to the old image) is the same handoff in the
//! other direction, since it stamps a new revision that again differs only in its images.
//!
//! # When
//! [`prepare`], called by the Revision controller just before it creates a new Revision's
//! CloneSet, decides (the pure decisions are in [`decide`], with their table tests): the Revision's
//! Route sends all of its traffic to the latest revision of this Configuration, the
//! Configuration's latest *ready* revision (the one serving) has pods, and the two Revision
//! specs are equal once their images are blanked. Anything else (env, command, resources,
//! a traffic split, a tag) keeps the ordinary path: new pods, then the Route moves.
//!
//! # How
//! Both CloneSets are marked for the duration: the giving one `kinetic.dev/handoff-to` (the
//! CloneSet controller leaves it alone entirely, so it neither replaces the pods it loses nor
//! flips their readiness gate back), the receiving one `kinetic.dev/handoff` (its controller
//! refreshes, updates and reports as usual but does not scale), and the autoscaler writes the
//! replicas of neither. The receiving CloneSet is created with the giving one's replica count,
//! so when the handoff ends both counts already match the pods: nobody creates a replacement.
//!
//! Each pod moves in two writes, as the CloneSet's own in-place update does:
//! 1. `InPlaceUpdateReady` and `Ready` False (`pods/status`), so the gateway drops the pod
//!    before its container restarts;
//! 2. one merge patch under the pod's resourceVersion that relabels it (the new template's
//!    labels with `serving.knative.dev/revision`, `controller-revision-hash`,
//!    `pod-template-hash`, lifecycle `Updating`), moves the controller ownerReference to the
//!    new CloneSet, sets the new images and records `apps.kruise.io/inplace-update-state` for
//!    the new CloneSet's revision. A pod is never owned by two CloneSets or by none, and a
//!    conflicting write moves nothing.
//!
//! The node agent then restarts the container with the new image in place (same sandbox, IP,
//! UID), and the receiving CloneSet's controller finishes the update as its own: the gate and
//! `Ready` go True once the container runs the new image, the Revision becomes Ready and the
//! Route follows. A moved pod carries `kinetic.dev/handoff-from: {old revision}`: while the old
//! revision has no ready pod of its own, the gateway sends that revision's requests to its
//! moved pods, so requests routed to it before the Route follows are served, not held.
//!
//! With a rollout duration (the Route's `serving.knative.dev/rollout-duration`, else
//! `config-network`'s), pods move in steps over that duration ([`due`]: the first at once so
//! the new revision becomes Ready and the Route's gradual rollout starts, then in proportion
//! to the time elapsed) while the Route's traffic follows its own steps; without one, all at
//! once. Once every pod has moved and the Route no longer routes the old revision, the marks
//! go: the old CloneSet at zero replicas, the new one back to the autoscaler.
//!
//! Limits: the pod spec's env is immutable, so a moved pod keeps `K_REVISION` of the revision
//! it was created for. Re-pointing a Route's traffic at an older revision by name is not a
//! handoff (that revision scales up from its own pods as before).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::Route;
use kinetic_api::knative::{CONFIGURATION_LABEL, REVISION_LABEL, SERVICE_LABEL};
use kinetic_api::kruise::INPLACE_UPDATE_READY_CONDITION;
use kinetic_api::kruise::cloneset::CloneSet;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ReconcileError, key};

pub mod decide;

pub use decide::{all_traffic_to_latest, due, image_only, next_due, routes};
use decide::{move_patch, pull_failed};

/// On the receiving CloneSet: the handoff in progress ([`Handoff`] as JSON).
pub const HANDOFF_ANNOTATION: &str = "kinetic.dev/handoff";
/// On the giving CloneSet: the name of the CloneSet its pods go to.
pub const HANDOFF_TO_ANNOTATION: &str = "kinetic.dev/handoff-to";
/// On a moved pod: the revision it served before.
pub const HANDOFF_FROM_ANNOTATION: &str = "kinetic.dev/handoff-from";

/// How often a handoff in progress looks again.
const TICK: Duration = Duration::from_millis(250);

/// A handoff in progress, as recorded on the receiving CloneSet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    /// The giving CloneSet.
    pub from: String,
    /// The giving CloneSet's Revision.
    pub from_revision: String,
    /// The Route whose traffic decides when the handoff ends.
    pub route: String,
    /// The pods to move.
    pub pods: usize,
    /// When it started.
    pub started: Timestamp,
    /// The rollout duration in seconds (0: all at once).
    pub duration_secs: f64,
}

/// Whether the CloneSet gives or takes pods in a handoff: the autoscaler leaves its replicas
/// alone meanwhile.
pub fn in_handoff(cs: &CloneSet) -> bool {
    receiving(cs) || giving(cs)
}

/// Whether the CloneSet's pods are being handed to another one: its controller leaves it
/// alone until the handoff ends.
pub fn giving(cs: &CloneSet) -> bool {
    cs.annotations().contains_key(HANDOFF_TO_ANNOTATION)
}

/// Whether the CloneSet receives pods in a handoff: its controller does not scale it.
pub fn receiving(cs: &CloneSet) -> bool {
    cs.annotations().contains_key(HANDOFF_ANNOTATION)
}

// ---------------------------------------------------------------------------------------------
// The Revision controller's hook.

/// Called before a new Revision's CloneSet `cs` is created: when its pods should be handed
/// over, marks the serving revision's CloneSet as giving and `cs` as receiving (with the
/// giving one's replica count). Otherwise leaves `cs` as it is.
///
/// # Errors
/// API failures; the Revision controller retries.
pub async fn prepare(
    client: &Client,
    rev: &Revision,
    cs: &mut CloneSet,
) -> Result<(), ReconcileError> {
    let ns = rev.namespace().unwrap_or_default();
    let Some(config) = rev.labels().get(CONFIGURATION_LABEL).cloned() else { return Ok(()) };
    let route_name = rev.labels().get(SERVICE_LABEL).cloned().unwrap_or_else(|| config.clone());
    let Some(configuration) =
        Api::<Configuration>::namespaced(client.clone(), &ns).get_opt(&config).await?
    else {
        return Ok(());
    };
    let serving = configuration
        .status
        .as_ref()
        .and_then(|s| s.fields.latest_ready_revision_name.clone())
        .filter(|r| *r != rev.name_any());
    let Some(serving) = serving else { return Ok(()) };
    let Some(route) = Api::<Route>::namespaced(client.clone(), &ns).get_opt(&route_name).await?
    else {
        return Ok(());
    };
    let status_traffic = route.status.as_ref().and_then(|s| s.fields.traffic.as_deref());
    if !all_traffic_to_latest(route.spec.traffic.as_deref(), &config)
        || !routes(status_traffic, &serving)
    {
        return Ok(());
    }
    let Some(old_rev) = Api::<Revision>::namespaced(client.clone(), &ns).get_opt(&serving).await?
    else {
        return Ok(());
    };
    let (old_spec, new_spec) = (to_value(&old_rev.spec)?, to_value(&rev.spec)?);
    if image_only(&old_spec, &new_spec).is_none() {
        return Ok(());
    }
    let sets: Api<CloneSet> = Api::namespaced(client.clone(), &ns);
    let from = super::revision::workload_name(&serving);
    let Some(old_cs) = sets.get_opt(&from).await? else { return Ok(()) };
    // The serving revision is itself finishing a handoff (a rollback right after a release):
    // wait for it rather than fall back to new pods, for a minute past its rollout at most.
    if let Some(prev) = old_cs.annotations().get(HANDOFF_ANNOTATION) {
        let prev: Option<Handoff> = serde_json::from_str(prev).ok();
        let until = prev.and_then(|p| {
            let d = jiff::SignedDuration::try_from_secs_f64(p.duration_secs + 60.0).ok()?;
            p.started.checked_add(d).ok()
        });
        if until.is_some_and(|u| Timestamp::now() < u) {
            return Err(ReconcileError::Waiting(format!("{from} to finish its own handoff")));
        }
    }
    // Marked already by an earlier attempt to create this very CloneSet: go on with it.
    let ours = old_cs.annotations().get(HANDOFF_TO_ANNOTATION) == Some(&cs.name_any());
    if receiving(&old_cs)
        || (giving(&old_cs) && !ours)
        || old_cs.meta().deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let replicas = old_cs.spec.replicas.unwrap_or(1);
    let pods = giving_pods(client, &old_cs).await?.len();
    if replicas == 0 || pods == 0 {
        return Ok(());
    }
    let net = super::route::network(client).await?;
    let h = Handoff {
        from: from.clone(),
        from_revision: serving.clone(),
        route: route_name,
        pods,
        started: Timestamp::now(),
        duration_secs: super::route::rollout_duration(&route, &net),
    };
    // The giving side first: from here on its controller leaves its pods alone.
    if !ours {
        let patch = json!({"metadata": {
            "resourceVersion": old_cs.metadata.resource_version,
            "annotations": {HANDOFF_TO_ANNOTATION: cs.name_any()},
        }});
        sets.patch(&from, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    cs.spec.replicas = Some(replicas);
    let text = serde_json::to_string(&h)
        .map_err(|source| ReconcileError::Encode { what: "a handoff", source })?;
    cs.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(HANDOFF_ANNOTATION.into(), text);
    tracing::info!(revision = %key(rev), from = %serving, pods, duration = h.duration_secs,
        "handing the serving revision's pods over in place");
    Ok(())
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, ReconcileError> {
    serde_json::to_value(v)
        .map_err(|source| ReconcileError::Encode { what: "a revision spec", source })
}

/// The giving CloneSet's pods that can move: running, not terminating, controlled by it.
async fn giving_pods(client: &Client, cs: &CloneSet) -> Result<Vec<Pod>, ReconcileError> {
    let mut pods = owned_pods(client, cs).await?;
    pods.retain(|p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
    });
    Ok(pods)
}

/// The live pods `cs` controls.
async fn owned_pods(client: &Client, cs: &CloneSet) -> Result<Vec<Pod>, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let uid = cs.uid().unwrap_or_default();
    let mut pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(REVISION_LABEL))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid))
        .collect();
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct Ctx {
    client: Client,
    backoff: crate::backoff::Backoff,
}

/// Runs the handoff driver until `shutdown` resolves: every receiving CloneSet moves its
/// giver's pods when they are due and ends the handoff once the Route has followed.
///
/// # Errors
/// None so far: API errors are retried per CloneSet with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx { client: client.clone(), backoff: crate::backoff::Backoff::default() });
    Controller::new(Api::<CloneSet>::all(client), watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("handoff"))
        .await;
    Ok(())
}

fn error_policy(cs: Arc<CloneSet>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*cs, e)
}

async fn reconcile(cs: Arc<CloneSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if cs.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if receiving(&cs) {
        return ctx.backoff.reconcile(&*cs, step(&cs, &ctx)).await;
    }
    if giving(&cs) {
        return ctx.backoff.reconcile(&*cs, orphaned(&cs, &ctx)).await;
    }
    Ok(Action::await_change())
}

/// A giving CloneSet whose receiver never came (its Revision is gone, or it was created
/// without the handoff): back to its controller. While the receiver's Revision exists without
/// its CloneSet, the Revision controller is still creating it.
async fn orphaned(cs: &CloneSet, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let to = cs.annotations().get(HANDOFF_TO_ANNOTATION).cloned().unwrap_or_default();
    let sets: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
    let receiver = sets.get_opt(&to).await?;
    let revision = to.strip_suffix("-deployment").unwrap_or(&to);
    let pending = match &receiver {
        Some(r) => receiving(r),
        None => {
            Api::<Revision>::namespaced(ctx.client.clone(), &ns).get_opt(revision).await?.is_some()
        }
    };
    if pending {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    tracing::warn!(cloneset = %key(cs), to = %to, "handoff without a receiver: given back");
    let body = json!({"metadata": {"annotations": {HANDOFF_TO_ANNOTATION: null}}});
    sets.patch(&cs.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(Action::await_change())
}

/// One pass of a handoff: move the pods due, or end it.
async fn step(cs: &CloneSet, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let sets: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
    let text = cs.annotations().get(HANDOFF_ANNOTATION).cloned().unwrap_or_default();
    let Ok(h) = serde_json::from_str::<Handoff>(&text) else {
        tracing::warn!(cloneset = %key(cs), "unreadable handoff annotation: dropped");
        return end(ctx, cs, None).await;
    };
    let Some(from) = sets.get_opt(&h.from).await? else { return end(ctx, cs, None).await };
    // The receiving CloneSet's revision, once its controller has made it.
    let Some(target) = cs.status.as_ref().and_then(|s| s.update_revision.clone()) else {
        return Ok(Action::requeue(TICK));
    };
    let moved = owned_pods(&ctx.client, cs).await?;
    // A pod whose containers are not the template's (a claimed pool pod runs the pool's
    // container) cannot take the new images in place: it stays with the giver, which deletes
    // it at the end, and the receiver replaces it.
    let names = |it: &mut dyn Iterator<Item = &k8s_openapi::api::core::v1::Container>| {
        it.map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    let want_names = names(&mut cs.spec.template.spec.iter().flat_map(|s| s.containers.iter()));
    let mut left = giving_pods(&ctx.client, &from).await?;
    left.retain(|p| names(&mut p.spec.iter().flat_map(|s| s.containers.iter())) == want_names);
    if moved.iter().any(pull_failed) {
        return abort(ctx, cs, &from, &moved).await;
    }
    let elapsed =
        Duration::try_from(Timestamp::now().duration_since(h.started)).unwrap_or_default();
    let duration = Duration::from_secs_f64(h.duration_secs.max(0.0));
    let want = due(h.pods, elapsed, duration).saturating_sub(moved.len());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for p in left.iter().take(want) {
        move_pod(&api, p, &from, cs, &target, Some(&h.from_revision)).await?;
    }
    if left.len() > want {
        let next = next_due(h.pods, moved.len() + want, duration)
            .map(|at| at.saturating_sub(elapsed).clamp(Duration::from_millis(10), TICK));
        return Ok(Action::requeue(next.unwrap_or(TICK)));
    }
    // All moved: the end once the Route no longer sends requests to the old revision (the
    // moved pods serve them until then).
    let route = Api::<Route>::namespaced(ctx.client.clone(), &ns).get_opt(&h.route).await?;
    let traffic =
        route.as_ref().and_then(|r| r.status.as_ref()).and_then(|s| s.fields.traffic.as_deref());
    if routes(traffic, &h.from_revision) {
        return Ok(Action::requeue(TICK));
    }
    end(ctx, cs, Some((&from, &h))).await
}

/// A moved pod cannot pull the new image: every moved pod goes back to the giver with its
/// old images, the giver gets its pods back, and the receiver (no longer receiving) starts
/// pods of its own as any new revision does, which report the failure; the Route never
/// left the old revision.
async fn abort(
    ctx: &Ctx,
    cs: &CloneSet,
    from: &CloneSet,
    moved: &[Pod],
) -> Result<Action, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(back) = from.status.as_ref().and_then(|s| s.update_revision.clone()) else {
        return Ok(Action::requeue(TICK));
    };
    for p in moved.iter().filter(|p| handed_from(p).is_some()) {
        move_pod(&api, p, cs, from, &back, None).await?;
    }
    tracing::warn!(cloneset = %key(cs), from = %from.name_any(), "new image failed: pods handed back");
    let sets: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({"metadata": {"annotations": {HANDOFF_TO_ANNOTATION: null}}});
    sets.patch(&from.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    let body = json!({"metadata": {"annotations": {HANDOFF_ANNOTATION: null}}});
    sets.patch(&cs.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(Action::await_change())
}

/// Moves `p` from `from` to `to` at its revision `target`: not ready first, then one
/// conditional write of labels, owner, images and the in-place update state.
async fn move_pod(
    api: &Api<Pod>,
    p: &Pod,
    from: &CloneSet,
    to: &CloneSet,
    target: &str,
    mark: Option<&str>,
) -> Result<(), ReconcileError> {
    let now = crate::cloneset::now_rfc3339();
    let conditions = json!([
        {"type": INPLACE_UPDATE_READY_CONDITION, "status": "False",
         "reason": "StartInPlaceUpdate", "lastTransitionTime": now},
        crate::cloneset::not_ready_condition(INPLACE_UPDATE_READY_CONDITION, &now),
    ]);
    let body = json!({"metadata": {"uid": p.metadata.uid}, "status": {"conditions": conditions}});
    let name = p.name_any();
    let mut p = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(body)).await?;
    for attempt in 0.. {
        let body = move_patch(&p, from, to, target, mark)?;
        match api.patch(&name, &PatchParams::default(), &Patch::Strategic(body)).await {
            Ok(_) => break,
            // Someone else wrote the pod meanwhile (its agent's status): read it again; it
            // is still the giver's, since the giver's controller leaves it alone.
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => p = api.get(&name).await?,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(pod = %name, from = %from.name_any(), to = %to.name_any(), "pod handed over in place");
    Ok(())
}

/// Ends a handoff: the moved pods lose their old-revision mark, the giver goes to zero and
/// back to its controller, then the receiver does once its controller counts the pods.
async fn end(
    ctx: &Ctx,
    cs: &CloneSet,
    from: Option<(&CloneSet, &Handoff)>,
) -> Result<Action, ReconcileError> {
    let ns = cs.namespace().unwrap_or_default();
    let sets: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let moved = owned_pods(&ctx.client, cs).await?;
    if let Some((from, h)) = from {
        for p in moved.iter().filter(|p| p.annotations().contains_key(HANDOFF_FROM_ANNOTATION)) {
            let body = json!({"metadata": {"annotations": {HANDOFF_FROM_ANNOTATION: null}}});
            pods.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
        }
        if giving(from) {
            let body = json!({"metadata": {"annotations": {HANDOFF_TO_ANNOTATION: null}},
                              "spec": {"replicas": 0}});
            sets.patch(&from.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
            let took = Timestamp::now().duration_since(h.started);
            tracing::info!(cloneset = %key(cs), from = %from.name_any(), pods = moved.len(),
                took = ?took, "handoff done");
        }
    }
    // The receiver's controller takes over scaling only once it counts every moved pod, so it
    // creates no replacement from a cache that is behind.
    let counted = cs.status.as_ref().map_or(0, |s| s.replicas);
    if from.is_some() && usize::try_from(counted).unwrap_or(0) < moved.len() {
        return Ok(Action::requeue(TICK));
    }
    let body = json!({"metadata": {"annotations": {HANDOFF_ANNOTATION: null}}});
    sets.patch(&cs.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await?;
    Ok(Action::await_change())
}

/// The revisions a pod also serves for the gateway: its `kinetic.dev/handoff-from` one.
pub fn handed_from(p: &Pod) -> Option<&str> {
    p.annotations().get(HANDOFF_FROM_ANNOTATION).map(String::as_str)
}
