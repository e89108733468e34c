//! OpenKruise's PodUnavailableBudget protection, run by the embedded server where a cluster
//! with OpenKruise runs Kruise's pod validating webhook (`vpod.kb.io`,
//! `pkg/webhook/pod/validating/pod_unavailable_budget.go`): a user's delete of a pod, an
//! eviction, and an update that changes a pod's spec (what an in-place update writes) are
//! refused while the pod's budget allows no more unavailable pods; an allowed one is recorded
//! in the budget's `status.unavailablePods` (updates) or `status.disruptedPods` (deletes and
//! evictions) with a resourceVersion precondition, so two concurrent operations never both
//! take the last unit of budget. The budget's rules are pure functions in
//! `kinetic_api::kruise::podunavailablebudget`, which the CloneSet controller applies too.
//!
//! Differences from upstream: no `kruise.io/related-pub` annotation is needed on pods (the
//! budgets are read from the store on each check, which is in memory); the server's own
//! deletes (garbage collection, namespace cleanup) are not checked.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::podunavailablebudget::{
    self as budget, NO_PROTECT_ANNOTATION, Operation, PodUnavailableBudget,
};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::storage_key;
use crate::rest::{Api, WriteOptions};
use crate::store::ObjKey;

const PLURAL: &str = "podunavailablebudgets";
const VERSION: &str = "v1alpha1";

/// How often a check retries a budget write that lost a race before it gives up (upstream
/// retries 4 times, 500 ms apart).
const RETRIES: usize = 16;

/// The workload that controls `pod`, as `(group, kind, name)`: its controller, or the
/// Deployment of its ReplicaSet (Kruise's controller finder resolves the same).
pub fn workload_of(api: &Api, pod: &Pod) -> Option<(String, String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let owner =
        pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true))?;
    let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g).to_owned();
    if group == "apps" && owner.kind == "ReplicaSet" {
        let rs = api
            .store
            .get(&ObjKey::new(&storage_key("apps", "replicasets"), ns, &owner.name))
            .map(|rs| rs.value());
        let parent = rs.as_ref().and_then(|rs| {
            rs.pointer("/metadata/ownerReferences")?.as_array()?.iter().find(|o| {
                o.get("controller").and_then(Value::as_bool) == Some(true)
                    && o.get("kind").and_then(Value::as_str) == Some("Deployment")
            })
        });
        if let Some(name) = parent.and_then(|d| d.get("name")).and_then(Value::as_str) {
            return Some(("apps".to_owned(), "Deployment".to_owned(), name.to_owned()));
        }
    }
    Some((group, owner.kind.clone(), owner.name.clone()))
}

/// The budget that covers `pod`, if any (the first in name order, as upstream takes the first
/// of its list).
pub fn budget_for(api: &Api, pod: &Pod) -> Option<PodUnavailableBudget> {
    let workload = workload_of(api, pod)?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let key = storage_key(budget::GROUP, PLURAL);
    let st = api.store.read();
    let w = (workload.0.as_str(), workload.1.as_str(), workload.2.as_str());
    st.list(&key, Some(ns), None)
        .filter_map(|(_, s)| serde_json::from_value::<PodUnavailableBudget>(s.value()).ok())
        .find(|b| b.covers(&labels, Some(w)))
}

/// Admits `op` on `pod` (the stored pod; for an update, the pod before it) against its
/// budget: `Ok` when no budget covers or protects it, or after one unit of the budget was
/// taken and the pod recorded.
///
/// # Errors
/// 403 Forbidden with upstream's webhook message when the budget allows no more unavailable
/// pods; 504 when the budget kept changing under the check; a store failure.
pub async fn admit(api: &Api, pod: &Value, op: Operation, dry_run: bool) -> ApiResult<()> {
    if !api.kruise_webhook() {
        return Ok(());
    }
    let Ok(pod) = serde_json::from_value::<Pod>(pod.clone()) else { return Ok(()) };
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.and_then(|a| a.get(NO_PROTECT_ANNOTATION)).is_some_and(|v| v == "true")
        || !budget::pod_ready(&pod)
        || !budget::pod_consistent(&pod)
    {
        return Ok(());
    }
    let Some(b) = budget_for(api, &pod) else { return Ok(()) };
    let desired = b.status.as_ref().map_or(0, |s| s.desired_available);
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    if desired == 0 || !b.protects(op) || b.records(pod_name) {
        return Ok(());
    }
    let Some(res) = api.registry.get(budget::GROUP, VERSION, PLURAL) else { return Ok(()) };
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = b.metadata.name.clone().unwrap_or_default();
    for _ in 0..RETRIES {
        let cur = match api.get(&res, ns, &name) {
            Ok(c) => c,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut obj = api.served_value(&res, &cur);
        let mut b: PodUnavailableBudget = serde_json::from_value(obj.clone()).map_err(|e| {
            ApiError::internal(format!("decoding PodUnavailableBudget {name}: {e}"))
        })?;
        let mut status = b.status.take().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        if let Err(refusal) = budget::check_and_decrement(&mut status, pod_name, op, now) {
            tracing::info!(pod = %pod_name, budget = %name, operation = op.as_str(), "refused by the PodUnavailableBudget");
            return Err(ApiError::forbidden(refusal.message(&name)));
        }
        if dry_run {
            return Ok(());
        }
        obj["status"] = serde_json::to_value(&status)
            .map_err(|e| ApiError::internal(format!("encoding a budget status: {e}")))?;
        obj["metadata"]["resourceVersion"] = json!(cur.rv.to_string());
        // Boxed: a pod update admits through here, and this writes another object.
        let opts = WriteOptions::default();
        let write = api.update(&res, ns, &name, obj, Some("status"), &opts);
        match Box::pin(write).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 409 => continue,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        504,
        "Timeout",
        format!("couldn't update PodUnavailableBudget {name} due to conflicts"),
    ))
}

/// Whether an update from `old` to `new` may make the pod unavailable
/// (`IsPodUnavailableChanged`: its spec changes).
pub fn changes_availability(old: &Value, new: &Value) -> bool {
    old.get("spec") != new.get("spec")
}
