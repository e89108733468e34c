//! The Knative Serving controllers (issue 11): `serving.knative.dev/v1` Service, Configuration,
//! Revision and Route reconciled as Knative Serving's reconcilers do
//! (knative/serving `pkg/reconciler/{service,configuration,revision,route}`), on kube-runtime,
//! through the `kube` client only.
//!
//! Data flow, one kube-runtime `Controller` per kind, each with the shared [`Backoff`]:
//! - [`service`]: a Service owns a Configuration (same name, its `spec.template`) and a Route
//!   (same name, its `spec.traffic`, whose untargeted entries follow the Configuration); the
//!   Service's status mirrors theirs (`ConfigurationsReady`, `RoutesReady`, `Ready`, URL,
//!   address, revision names, traffic).
//! - [`configuration`]: every template change stamps a Revision (`{configuration}-00001`,
//!   counting with `metadata.generation`, or the template's own name); `latestReadyRevisionName`
//!   moves only once that Revision is Ready.
//! - [`revision`]: a Revision runs as an OpenKruise CloneSet `{revision}-deployment` (so a
//!   later image-only change can go in place) created with `autoscaling.knative.dev/initial-scale`
//!   replicas; afterwards the replica count is the autoscaler's. Its conditions come from the
//!   CloneSet and the pods (image pull failures, container exits).
//! - [`handoff`]: a new revision that differs from the serving one only in its images takes
//!   over that revision's pods in place (same UIDs and IPs) instead of starting new ones.
//! - [`route`]: resolves traffic to revision names, URLs from `config-domain` and
//!   `config-network`, a selector-less core Service named after the Route.
//!
//! Not here yet: the gateway wiring (a Route is Ready once its revisions are; it will also wait
//! for the gateway), the autoscaler, scale to zero, gradual rollout, `routingState` labels.
//!
//! [`Backoff`]: crate::backoff::Backoff

use std::future::Future;

use futures::FutureExt as _;
use jiff::Timestamp;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kinetic_api::knative::Condition;
use kube::{Client, Resource, ResourceExt as _};

pub mod configuration;
pub mod handoff;
pub mod revision;
pub mod route;
pub mod service;

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Something this pass needs is still in progress; retried with back-off.
    #[error("waiting: {0}")]
    Waiting(String),
}

/// The CustomResourceDefinitions of Knative Serving (for [`crate::crds::install`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kinetic_api::knative::{configuration, podautoscaler, revision, route, service};
    use kube::CustomResourceExt as _;
    vec![
        service::Service::crd(),
        configuration::Configuration::crd(),
        revision::Revision::crd(),
        route::Route::crd(),
        podautoscaler::PodAutoscaler::crd(),
    ]
}

/// Runs the four serving controllers and the handoff driver until `shutdown` resolves.
///
/// # Errors
/// None so far: API errors are retried per object with back-off.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> crate::Result<()> {
    let stop = shutdown.boxed().shared();
    let (a, b, c, d, e) = tokio::join!(
        service::run(client.clone(), stop.clone()),
        configuration::run(client.clone(), stop.clone()),
        revision::run(client.clone(), stop.clone()),
        route::run(client.clone(), stop.clone()),
        handoff::run(client, stop),
    );
    a.and(b).and(c).and(d).and(e)
}

/// `namespace/name`, the back-off and log key.
pub(crate) fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The controller reference to `owner`.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `obj` is controlled by `owner`.
pub(crate) fn controlled_by<K: Resource, O: Resource>(obj: &K, owner: &O) -> bool {
    let uid = owner.uid().unwrap_or_default();
    obj.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Sets a condition, keeping its transition time while its status does not change
/// (knative.dev/pkg's `ConditionManager.SetCondition`).
pub(crate) fn set_condition(
    conds: &mut Vec<Condition>,
    old: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let prev = old.iter().find(|c| c.type_ == type_);
    let time = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(Timestamp::now())),
    };
    let c = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        severity: prev.and_then(|p| p.severity.clone()),
        last_transition_time: time,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        message: (!message.is_empty()).then(|| message.to_owned()),
    };
    conds.retain(|x| x.type_ != type_);
    conds.push(c);
    conds.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// A condition's status, reason and message, `Unknown` when it is absent.
pub(crate) fn cond_of(conds: Option<&Condition>) -> (String, String, String) {
    conds.map_or_else(
        || ("Unknown".to_owned(), String::new(), String::new()),
        |c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        },
    )
}

/// The merge patch `{"status": status}`.
pub(crate) fn status_patch<S: serde::Serialize>(
    status: &S,
) -> Result<serde_json::Value, ReconcileError> {
    let st = serde_json::to_value(status)
        .map_err(|source| ReconcileError::Encode { what: "a status", source })?;
    Ok(serde_json::json!({ "status": st }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut conds = Vec::new();
        set_condition(&mut conds, &[], "Ready", "Unknown", "Deploying", "");
        let first = conds.clone();
        let mut again = Vec::new();
        set_condition(&mut again, &first, "Ready", "Unknown", "Other", "m");
        assert_eq!(again[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(again[0].reason.as_deref(), Some("Other"));
        assert!(cond_of(None).0 == "Unknown");
    }
}
