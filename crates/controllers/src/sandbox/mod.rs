//! kubernetes-sigs/agent-sandbox on Kinetic's pool engine (issue 12 part 6): the controllers
//! of `agents.x-k8s.io` Sandbox and `extensions.agents.x-k8s.io/v1alpha1` SandboxWarmPool and
//! SandboxClaim (types in `kinetic_api::agents`).
//!
//! - [`core`] (upstream's core controller): a Sandbox gets its pod (created from `spec.podTemplate`, or the warm pool
//!   pod named in `agents.x-k8s.io/pod-name`, adopted) and a headless Service, and reports
//!   `serviceFQDN`, `service`, `replicas`, `selector`, `podIPs`, `nodeName` and `Ready`.
//! - [`warmpool`]: a SandboxWarmPool owns a `kinetic.dev` PodPool of the same name whose
//!   template is the SandboxTemplate's pod and whose size is fixed at `spec.replicas`
//!   (`minReady = maxReady`): the pool engine keeps the pods, replaces those of an older
//!   template and refills at once after a claim.
//! - [`claim`]: a SandboxClaim (`v1alpha1`: its `sandboxTemplateRef` and `warmpool` policy;
//!   `v1beta1`: the template of its `warmPoolRef` pool, and only that pool) takes a ready pool
//!   pod with [`crate::podpool::claim`] (one conditional write: the pod's owner moves from the
//!   PodPool to the claim), creates the claim's Sandbox naming that pod and runs the Sandbox's
//!   reconcile ([`core::ensure`]) itself: the pod is adopted and the Service and statuses
//!   written within the claim's reconcile, so a warm claim is Ready in milliseconds. With no
//!   pool, every pool empty, `env` on the claim or volumeClaimTemplates on the template, the
//!   Sandbox gets a new pod, as upstream's cold path. The claim's `Ready` forwards the
//!   Sandbox's (and `Finished` is mirrored, for `lifecycle.ttlSecondsAfterFinished`), and
//!   `status.sandbox` has its name and pod IPs.
//! - [`volumes`]: a Sandbox's volumeClaimTemplates become PersistentVolumeClaims it owns.
//!
//! Upstream's warm pool keeps whole Sandboxes (pod and Service) and a claim re-parents one;
//! Kinetic's keeps pods, so a claim costs the Sandbox and Service creation on top of the pod
//! hand-over, and the pool serves any consumer of the pool engine alike.
//! Not done: the template's networkPolicy (Kinetic serves no NetworkPolicy API: none is
//! written, nothing is enforced), `generatedSecrets`, a claim's volume claim templates, the
//! warm pool's `OnReplenish` update strategy (pods of an older template are replaced at once,
//! as `Recreate`), a warm pool of a template with volumeClaimTemplates (its claims get new
//! pods).

pub mod claim;
pub mod core;
pub mod decide;
pub mod volumes;
pub mod warmpool;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::agents::{
    SANDBOX_NAME_HASH_LABEL, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool,
};
use kinetic_api::pool::PodPool;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt as _};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::events::EventSink;

/// The controllers' name in Events.
pub const COMPONENT: &str = "agent-sandbox-controller";

/// The CustomResourceDefinitions these controllers serve (for [`crate::crds::install`]).
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    kinetic_api::agents::crds()
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("encoding an object")]
    Json(#[from] serde_json::Error),
    #[error("claiming a warm pool pod")]
    Claim(#[from] crate::podpool::ClaimError),
}

/// What the reconciles share.
pub struct Ctx {
    client: Client,
    events: EventSink,
    backoff: Backoff,
}

/// The controller reference of `obj`, if any.
pub(crate) fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta().owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// A controller reference to `obj`.
pub(crate) fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: obj.meta().name.clone().unwrap_or_default(),
        uid: obj.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `v` with each of `keys` that it lacks set to null, so a merge patch clears them.
pub(crate) fn nulled(mut v: Value, keys: &[&str]) -> Value {
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.entry((*k).to_owned()).or_insert(Value::Null);
        }
    }
    v
}

/// Runs the Sandbox, SandboxWarmPool and SandboxClaim controllers until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per object with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        events: EventSink::spawn(client.clone(), COMPONENT.to_owned()),
        backoff: Backoff::default(),
    });
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let sandboxes =
        Controller::new(Api::<Sandbox>::all(client.clone()), watcher::Config::default())
            .owns(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().labels(SANDBOX_NAME_HASH_LABEL),
            )
            .owns(
                Api::<Service>::all(client.clone()),
                watcher::Config::default().labels(SANDBOX_NAME_HASH_LABEL),
            )
            .graceful_shutdown_on(shutdown.clone())
            .run(core::reconcile, error_policy, ctx.clone())
            .for_each(crate::log_reconcile("sandbox"));

    let pools =
        Controller::new(Api::<SandboxWarmPool>::all(client.clone()), watcher::Config::default());
    let pool_store = pools.store();
    let pools = pools
        .owns(Api::<PodPool>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<SandboxTemplate>::all(client.clone()),
            watcher::Config::default(),
            move |t| {
                let ns = t.namespace();
                pool_store
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == ns && p.spec.sandbox_template_ref.name == t.name_any()
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(warmpool::reconcile, error_policy, ctx.clone())
        .for_each(crate::log_reconcile("sandboxwarmpool"));

    let claims =
        Controller::new(Api::<SandboxClaim>::all(client.clone()), watcher::Config::default());
    let claim_store = claims.store();
    let pool_claims = claim_store.clone();
    let claims = claims
        .owns(Api::<Sandbox>::all(client.clone()), watcher::Config::default())
        // A template wakes the claims naming it and every `v1beta1` claim of its namespace
        // (whose template is its warm pool's); a warm pool wakes the claims naming it.
        .watches(
            Api::<SandboxTemplate>::all(client.clone()),
            watcher::Config::default(),
            move |t| {
                let ns = t.namespace();
                claim_store
                    .state()
                    .into_iter()
                    .filter(|c| {
                        c.namespace() == ns
                            && (c.spec.warm_pool_ref_name().is_some()
                                || c.spec.template_name() == Some(t.name_any().as_str()))
                    })
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .watches(Api::<SandboxWarmPool>::all(client), watcher::Config::default(), move |p| {
            let ns = p.namespace();
            pool_claims
                .state()
                .into_iter()
                .filter(|c| {
                    c.namespace() == ns
                        && c.spec.warm_pool_ref_name() == Some(p.name_any().as_str())
                })
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(claim::reconcile, error_policy, ctx)
        .for_each(crate::log_reconcile("sandboxclaim"));

    tokio::join!(sandboxes, pools, claims);
    Ok(())
}

fn error_policy<K>(obj: Arc<K>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    ctx.backoff.retry(&*obj, e)
}
