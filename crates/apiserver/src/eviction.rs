//! `POST pods/NAME/eviction` (`policy/v1` Eviction), as upstream's EvictionREST
//! (`pkg/registry/core/pod/storage/eviction.go`): a pod no PodDisruptionBudget covers is
//! deleted; a covered one only when its budget allows a disruption, which is taken off
//! `status.disruptionsAllowed` and recorded in `status.disruptedPods` by a status write with a
//! resourceVersion precondition (a lost race re-reads the budget), before the pod is deleted.
//! A budget that allows none answers 429 TooManyRequests with upstream's message and a
//! `DisruptionBudget` cause, which `kubectl drain` retries; a pod covered by two budgets is 500.
//! Terminal, pending and deleting pods are deleted without looking at budgets. The eviction's
//! `deleteOptions` (grace period, preconditions, dry run) apply to the delete, and the pod gets
//! the `DisruptionTarget` condition first.
//!
//! Kruise's PodUnavailableBudget check ([`crate::unavailable`]) runs before all of this, where
//! upstream's webhook admits the eviction.

use kinetic_api::kruise::podunavailablebudget::Operation;
use kinetic_machinery::selector::LabelSelector;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{Resource, storage_key};
use crate::rest::{Api, DeleteOptions, WriteOptions, now_rfc3339, set_condition};

/// Upstream's `MaxDisruptedPodSize`.
const MAX_DISRUPTED_POD_SIZE: usize = 2000;
/// How often a budget write or a pod delete that lost a race is retried.
const RETRIES: usize = 20;

/// The 429 of an eviction a budget does not allow (`NewTooManyRequests` with a
/// `DisruptionBudget` cause).
fn too_many_requests(retry_after: i64, cause: String) -> ApiError {
    let mut e = ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    e.details = Some(json!({
        "causes": [{"reason": "DisruptionBudget", "message": cause}],
        "retryAfterSeconds": retry_after,
    }));
    e
}

/// `createTooManyRequestsError`: the budget's status is behind its spec, or the pod changed
/// while an unready pod was being evicted.
fn still_processing(pdb: &str) -> ApiError {
    too_many_requests(
        10,
        format!("The disruption budget {pdb} is still being processed by the server."),
    )
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

fn deleting(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// `canIgnorePDB`: the pod has already stopped or not started disrupting anything.
fn can_ignore_pdb(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || deleting(pod)
}

/// `shouldEnforceResourceVersion`: a live pod is deleted only in the version looked at.
fn should_enforce_rv(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !deleting(pod)
}

/// `podutil.IsPodReady`.
fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// The budgets of the pod's namespace whose selector matches it (a missing selector matches
/// nothing, an empty one everything, as `policy/v1` does).
fn budgets_for(api: &Api, pod: &Value) -> Vec<Value> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    let key = storage_key(crate::pdb::GROUP, crate::pdb::PLURAL);
    let st = api.store.read();
    st.list(&key, Some(ns), None)
        .filter(|(_, s)| {
            let v = s.value();
            let sel = v.pointer("/spec/selector").filter(|v| !v.is_null());
            sel.and_then(|sel| LabelSelector::from_label_selector(sel).ok())
                .is_some_and(|sel| sel.matches(labels))
        })
        .map(|(_, s)| s.value())
        .collect()
}

/// Evicts pod `name` as the Eviction `body` asks; the answer is the `Status` to send (201).
///
/// # Errors
/// 400 for a body naming another pod; 404 for a missing pod; 429 when a budget does not allow
/// it; 500 for a pod two budgets cover; 403 from Kruise's budget; what deletes answer.
pub async fn evict(
    api: &Api,
    pods: &Resource,
    ns: &str,
    name: &str,
    body: &Value,
    query_dry_run: bool,
) -> ApiResult<Value> {
    let body_name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let mut opts = DeleteOptions { dry_run: query_dry_run, ..DeleteOptions::default() };
    if let Some(d) = body.get("deleteOptions").filter(|d| d.is_object()) {
        opts.merge_body(d)?;
    }
    let user_rv = opts.precondition_rv.is_some();
    let stored = api.get(pods, ns, name)?;
    let pod = stored.value();
    crate::unavailable::admit(api, &pod, Operation::Evict, opts.dry_run).await?;

    // Pods that no longer (or not yet) run are deleted without asking a budget.
    if can_ignore_pdb(&pod) {
        let mut o = opts.clone();
        if should_enforce_rv(&pod) && !user_rv {
            o.precondition_rv = Some(stored.rv.to_string());
        }
        delete_with_condition(api, pods, ns, name, o).await?;
        return Ok(success());
    }

    let pdbs = budgets_for(api, &pod);
    if pdbs.len() > 1 {
        return Err(ApiError::new(
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut guard_rv = false;
    if let Some(pdb) = pdbs.first() {
        let pdb_name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let skip = !ready(&pod)
            && (pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str)
                == Some("AlwaysAllow")
                || int("/status/currentHealthy") >= int("/status/desiredHealthy")
                    && int("/status/desiredHealthy") > 0);
        if skip {
            // An unready pod counts towards no budget: delete it, but only as it was looked at.
            guard_rv = true;
        } else {
            decrement(api, ns, pdb_name, name, opts.dry_run).await?;
        }
        let mut o = opts.clone();
        if guard_rv && !user_rv {
            o.precondition_rv = Some(stored.rv.to_string());
        }
        return match delete_with_condition(api, pods, ns, name, o).await {
            Err(e) if e.code == 409 && guard_rv && !user_rv => Err(still_processing(pdb_name)),
            Err(e) => Err(e),
            Ok(()) => Ok(success()),
        };
    }
    delete_with_condition(api, pods, ns, name, opts).await?;
    Ok(success())
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// `checkAndDecrement`, retried on a lost race with a fresh read of the budget.
async fn decrement(api: &Api, ns: &str, pdb: &str, pod: &str, dry_run: bool) -> ApiResult<()> {
    let res = api
        .registry
        .get(crate::pdb::GROUP, crate::pdb::VERSION, crate::pdb::PLURAL)
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
    for _ in 0..RETRIES {
        let cur = api.get(&res, ns, pdb)?;
        let mut obj = api.served_value(&res, &cur);
        let int = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        if int("/status/observedGeneration") < int("/metadata/generation") {
            return Err(still_processing(pdb));
        }
        let allowed = int("/status/disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudget.policy \"{pdb}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        let disrupted = obj.pointer("/status/disruptedPods").and_then(Value::as_object);
        if disrupted.is_some_and(|d| d.len() > MAX_DISRUPTED_POD_SIZE) {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudget.policy \"{pdb}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            )));
        }
        if allowed == 0 {
            return Err(too_many_requests(
                0,
                format!(
                    "The disruption budget {pdb} needs {} healthy pods and has {} currently",
                    int("/status/desiredHealthy"),
                    int("/status/currentHealthy")
                ),
            ));
        }
        if dry_run {
            return Ok(());
        }
        obj["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if allowed == 1 {
            // `UpdateDisruptionAllowedCondition` once nothing more is allowed.
            set_metav1_condition(&mut obj, "DisruptionAllowed", "False", "InsufficientPods");
        }
        if !obj["status"]["disruptedPods"].is_object() {
            obj["status"]["disruptedPods"] = json!({});
        }
        obj["status"]["disruptedPods"][pod] = json!(now_rfc3339());
        obj["metadata"]["resourceVersion"] = json!(cur.rv.to_string());
        match api.update(&res, ns, pdb, obj, Some("status"), &WriteOptions::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        504,
        "Timeout",
        format!("couldn't update PodDisruptionBudget \"{pdb}\" due to conflicts"),
    ))
}

/// `apimeta.SetStatusCondition` of a `metav1.Condition` (observedGeneration of the status).
pub fn set_metav1_condition(obj: &mut Value, ty: &str, status: &str, reason: &str) {
    let generation = obj.pointer("/status/observedGeneration").cloned().unwrap_or(json!(0));
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else { return };
    let now = now_rfc3339();
    match conds.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(ty)) {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(status) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["observedGeneration"] = generation;
        }
        None => conds.push(json!({"type": ty, "status": status, "reason": reason, "message": "",
                                  "observedGeneration": generation, "lastTransitionTime": now})),
    }
}

/// `addConditionAndDeletePod`: the `DisruptionTarget` condition on the pod as it is (checked
/// against the options' preconditions), then the delete with the options (a resourceVersion
/// precondition moved to the version the condition wrote).
async fn delete_with_condition(
    api: &Api,
    pods: &Resource,
    ns: &str,
    name: &str,
    mut opts: DeleteOptions,
) -> ApiResult<()> {
    if !opts.dry_run {
        let (uid, rv) = (opts.precondition_uid.clone(), opts.precondition_rv.clone());
        let written = api
            .update_with(pods, ns, name, Some("status"), &WriteOptions::default(), |cur| {
                let cur_uid = cur.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
                let cur_rv =
                    cur.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
                if uid.as_deref().is_some_and(|u| !u.is_empty() && u != cur_uid)
                    || rv.as_deref().is_some_and(|r| !r.is_empty() && r != cur_rv)
                {
                    return Err(ApiError::stale("", "pods", name));
                }
                let mut p = cur.clone();
                set_condition(
                    &mut p,
                    "DisruptionTarget",
                    "True",
                    "EvictionByEvictionAPI",
                    "Eviction API: evicting",
                );
                Ok(p)
            })
            .await?;
        if opts.precondition_rv.is_some() {
            opts.precondition_rv = Some(written.obj.rv.to_string());
        }
    }
    api.delete(pods, ns, name, &opts).await.map(|_| ())
}
