//! The SidecarSet controller: OpenKruise's `apps.kruise.io/v1alpha1` SidecarSet
//! (`pkg/controller/sidecarset`), with its decisions taken by `kinetic_rollout::sidecarset`.
//!
//! Injection happens at pod creation (the embedded server's pod admission, or on a real cluster
//! the webhook of [`webhook`]); this controller, for each SidecarSet:
//! 1. keeps a ControllerRevision of its injectable fields in `kruise-system` (named
//!    `{sidecarset}-{hash}`, labelled `kruise.io/sidecarset-name`, carrying the SidecarSet's
//!    custom version label), which `injectionStrategy.revision` pins, and trims the history to
//!    `revisionHistoryLimit`;
//! 2. waits until the watch cache shows its own pod patches (expectations), so a pass never
//!    plans on pods it has just changed;
//! 3. upgrades the sidecars of the pods the plan names in place: one strategic merge patch of
//!    the containers' images and the hash annotations; the node agent restarts only the
//!    container whose image changed, so the app container keeps running, with the same pod,
//!    UID and IP (as CloneSet's in-place update);
//!    A `HotUpgrade` sidecar's new image goes into its idle twin (the one on the empty image),
//!    which becomes the working one; once it runs and is ready, a second patch resets the old
//!    twin to the empty image (`kinetic_rollout::sidecarset::hotupgrade`), so one of the two
//!    always runs;
//! 4. writes the status: matchedPods, updatedPods, readyPods, updatedReadyPods,
//!    observedGeneration, latestRevision.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kinetic_api::kruise::sidecarset::{
    DEFAULT_REVISION_HISTORY_LIMIT, REVISION_NAMESPACE, SIDECARSET_CUSTOM_VERSION_LABEL,
    SIDECARSET_NAME_LABEL, SidecarSet, SidecarSetStatus, SidecarSetUpdateStrategyType,
};
use kinetic_rollout::sidecarset::{hotupgrade, revision_data, revision_name_of, upgrade};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::backoff::Backoff;
use crate::events::{EventReq, EventSink};
use crate::expectations::{Expectations, Seen};

pub mod webhook;

/// The controller's name in Events and its field manager.
pub const COMPONENT: &str = "sidecarset-controller";

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    exp: Expectations,
    events: EventSink,
    backoff: Backoff,
}

/// The CustomResourceDefinitions this controller serves (for [`crate::crds::install`]).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![SidecarSet::crd_all_versions()]
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("invalid SidecarSet {name}")]
    Spec {
        name: String,
        #[source]
        source: kinetic_rollout::Error,
    },
}

/// Runs the SidecarSet controller until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per SidecarSet with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let (pod_reader, pods) = crate::cloneset::reflect::<Pod>(&client);
    let (rev_reader, revs) = crate::cloneset::reflect::<ControllerRevision>(&client);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pod_reader,
        revisions: rev_reader,
        exp: Expectations::default(),
        events: EventSink::spawn(client.clone(), COMPONENT.to_owned()),
        backoff: Backoff::default(),
    });
    // A pod change wakes the SidecarSets injected into it; a revision change its SidecarSet.
    let pod_owners = |p: Pod| {
        let list = kinetic_rollout::pod::annotation(
            &p,
            kinetic_api::kruise::sidecarset::SIDECARSET_INJECTED_LIST_ANNOTATION,
        )
        .unwrap_or("")
        .to_owned();
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(ObjectRef::<SidecarSet>::new)
            .collect::<Vec<_>>()
    };
    let rev_owner = |r: ControllerRevision| {
        r.labels().get(SIDECARSET_NAME_LABEL).map(|n| ObjectRef::<SidecarSet>::new(n))
    };
    Controller::new(Api::<SidecarSet>::all(client), watcher::Config::default())
        .watches_stream(pods, pod_owners)
        .watches_stream(revs, rev_owner)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("sidecarset"))
        .await;
    Ok(())
}

fn error_policy(ss: Arc<SidecarSet>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&*ss, e)
}

async fn reconcile(ss: Arc<SidecarSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let obj = ss.clone();
    ctx.backoff.reconcile(&*obj, reconcile_pass(ss, ctx.clone())).await
}

async fn reconcile_pass(ss: Arc<SidecarSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let name = ss.name_any();
    if ss.metadata.deletion_timestamp.is_some() {
        ctx.exp.forget(&name);
        return Ok(Action::await_change());
    }
    if !(crate::cache_ready(&ctx.pods) && crate::cache_ready(&ctx.revisions)) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let pods: Vec<Pod> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| upgrade::is_injected(p, &name))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !matches!(kinetic_rollout::pod::phase(p), "Succeeded" | "Failed"))
        .map(|p| (**p).clone())
        .collect();
    // Pods are keyed `namespace/name`: a SidecarSet spans namespaces.
    let keyed: Vec<(String, &Pod)> = pods.iter().map(|p| (pod_key(p), p)).collect();
    let satisfied = ctx.exp.satisfied(
        &name,
        keyed.iter().map(|(k, p)| Seen {
            name: k,
            uid: p.metadata.uid.as_deref().unwrap_or_default(),
            resource_version: p.metadata.resource_version.as_deref().unwrap_or_default(),
            terminating: false,
        }),
    );
    if !satisfied {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let revision = sync_revision(&ctx, &ss).await?;

    let params = PatchParams { field_manager: Some(COMPONENT.into()), ..Default::default() };
    // A hot switch whose new twin is ready: reset the old twin to the empty image first, and
    // plan no new upgrades in this pass (upstream's `UpdateSidecarSet` step 5).
    let flipped = flip_hot_upgrades(&ctx, &ss, &pods, &params).await?;
    let plan = if flipped {
        Vec::new()
    } else {
        upgrade::plan(&ss, &pods)
            .map_err(|source| ReconcileError::Spec { name: name.clone(), source })?
    };
    let now = jiff::Timestamp::now().to_string();
    for i in &plan {
        let p = &pods[*i];
        let body = upgrade::patch(p, &ss, Some(&revision), &now);
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
        match api.patch(&p.name_any(), &params, &Patch::Strategic(&body)).await {
            Ok(updated) => {
                ctx.exp.expect_update(
                    &name,
                    &pod_key(&updated),
                    updated.metadata.resource_version.as_deref().unwrap_or(""),
                );
                ctx.events.send(EventReq::for_pod(
                    p,
                    "Normal",
                    "SidecarSetUpgrade",
                    format!("upgrading the sidecars of SidecarSet {name} in place"),
                ));
            }
            // The pod went meanwhile; the watch brings its deletion.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let c = upgrade::counts(&ss, &pods);
    let status = SidecarSetStatus {
        observed_generation: ss.metadata.generation,
        matched_pods: c.matched,
        updated_pods: c.updated,
        ready_pods: c.ready,
        updated_ready_pods: c.updated_ready,
        latest_revision: Some(revision),
        collision_count: ss.status.as_ref().and_then(|s| s.collision_count),
    };
    if ss.status.as_ref() != Some(&status) {
        let api: Api<SidecarSet> = Api::all(ctx.client.clone());
        api.patch_status(&name, &params, &Patch::Merge(json!({ "status": status }))).await?;
    }
    Ok(if plan.is_empty() && c.updated_ready == c.matched {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(10))
    })
}

/// Resets the old twin of each pod whose hot switch is ready ([`hotupgrade::ready_to_flip`])
/// to the empty image, in place. Returns whether any pod was patched. Nothing while the
/// SidecarSet is paused or `NotUpdate`, as upstream.
async fn flip_hot_upgrades(
    ctx: &Ctx,
    ss: &SidecarSet,
    pods: &[Pod],
    params: &PatchParams,
) -> Result<bool, ReconcileError> {
    let st = &ss.spec.update_strategy;
    if st.paused
        || st.type_.unwrap_or_default() == SidecarSetUpdateStrategyType::NotUpdate
        || !ss.spec.containers.iter().any(|c| c.is_hot_upgrade())
    {
        return Ok(false);
    }
    let name = ss.name_any();
    let mut flipped = false;
    for p in pods.iter().filter(|p| hotupgrade::ready_to_flip(ss, p)) {
        let Some(body) = hotupgrade::flip_patch(ss, p) else { continue };
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
        match api.patch(&p.name_any(), params, &Patch::Strategic(&body)).await {
            Ok(updated) => {
                flipped = true;
                ctx.exp.expect_update(
                    &name,
                    &pod_key(&updated),
                    updated.metadata.resource_version.as_deref().unwrap_or(""),
                );
                // Upstream's event reason and message.
                ctx.events.send(EventReq::for_pod(
                    p,
                    "Normal",
                    "ResetContainerSucceed",
                    "reset sidecar container image empty successfully".to_owned(),
                ));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(flipped)
}

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.name_any())
}

/// Creates the ControllerRevision of the SidecarSet's current injectable fields if it is
/// missing, and deletes the oldest beyond `revisionHistoryLimit`. Returns its name.
async fn sync_revision(ctx: &Ctx, ss: &SidecarSet) -> Result<String, ReconcileError> {
    let name = ss.name_any();
    let collision = ss.status.as_ref().and_then(|s| s.collision_count);
    let rev_name = revision_name_of(ss, collision);
    let mut mine: Vec<Arc<ControllerRevision>> = ctx
        .revisions
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(REVISION_NAMESPACE))
        .filter(|r| r.labels().get(SIDECARSET_NAME_LABEL) == Some(&name))
        .collect();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), REVISION_NAMESPACE);
    if !mine.iter().any(|r| r.name_any() == rev_name) {
        ensure_namespace(&ctx.client).await?;
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(SIDECARSET_NAME_LABEL.to_owned(), name.clone());
        if let Some(v) = ss.labels().get(SIDECARSET_CUSTOM_VERSION_LABEL) {
            labels.insert(SIDECARSET_CUSTOM_VERSION_LABEL.to_owned(), v.clone());
        }
        let next = mine.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(rev_name.clone()),
                namespace: Some(REVISION_NAMESPACE.into()),
                labels: Some(labels),
                ..Default::default()
            },
            data: Some(RawExtension(revision_data(ss))),
            revision: next,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => mine.push(Arc::new(r)),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let limit = ss.spec.revision_history_limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT).max(0);
    let limit = usize::try_from(limit).unwrap_or(0);
    let mut old: Vec<&Arc<ControllerRevision>> =
        mine.iter().filter(|r| r.name_any() != rev_name).collect();
    if old.len() > limit {
        old.sort_by_key(|r| r.revision);
        // A pinned revision stays.
        let pinned = ss.spec.injection_strategy.revision.as_ref();
        for r in &old[..old.len() - limit] {
            let rn = r.name_any();
            if pinned.is_some_and(|p| p.revision_name.as_deref() == Some(rn.as_str())) {
                continue;
            }
            match api.delete(&rn, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(rev_name)
}

/// Creates `kruise-system` when it does not exist.
async fn ensure_namespace(client: &Client) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(REVISION_NAMESPACE.into()), ..Default::default() },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
