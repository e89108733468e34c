//! Moving one pod to the update revision (Kruise's `rollingUpdateStatefulsetPods` with
//! `inPlaceUpdatePod`), and finishing in-place updates on later passes (`Refresh`), with the
//! CloneSet's in-place machinery (`kinetic_rollout::inplace`): the pod first goes not ready
//! (`InPlaceUpdateReady` False, and Ready False with it so endpoints drop it at once), then one
//! strategic merge patch sets the new images, the template's label/annotation changes, the
//! revision label, lifecycle state `Updating` and the `apps.kruise.io/inplace-update-state`
//! annotation; the node agent restarts the changed containers in the same sandbox (same pod
//! UID and IP, claims mounted as they were). Once every patched container runs its new image
//! and restarted, the gate goes back to True. A change that cannot be done in place recreates
//! the pod (`InPlaceIfPossible`, and always for apps/v1) or is not rolled out (`InPlaceOnly`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::statefulset::PodUpdatePolicy;
use kinetic_api::kruise::{
    INPLACE_UPDATE_READY_CONDITION, LIFECYCLE_STATE_LABEL, LifecycleState, POD_TEMPLATE_HASH_LABEL,
};
use kinetic_rollout::inplace::{self, InPlaceOptions};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::revision::{Revisions, template_of};
use super::{Ctx, ReconcileError, Set, delete_pod, patch_pod};

fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn has_gate(p: &Pod, gate: &str) -> bool {
    p.spec.iter().flat_map(|s| s.readiness_gates.iter().flatten()).any(|g| g.condition_type == gate)
}

/// Writes `InPlaceUpdateReady` through `pods/status` (False also sets Ready False, as
/// kubelet would once it sees the gate; True also sets Ready True when every container is ready
/// and no other gate holds the pod, so the next batch need not wait for the node agent).
async fn set_update_ready(
    ctx: &Ctx,
    set: &Set,
    p: &Pod,
    ready: bool,
) -> Result<Pod, ReconcileError> {
    let now = now_rfc3339();
    let mut conditions = vec![if ready {
        json!({"type": INPLACE_UPDATE_READY_CONDITION, "status": "True", "lastTransitionTime": now,
               "reason": null, "message": null})
    } else {
        json!({"type": INPLACE_UPDATE_READY_CONDITION, "status": "False",
               "reason": "StartInPlaceUpdate", "lastTransitionTime": now})
    }];
    if !ready {
        conditions.push(json!({
            "type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
            "message": format!("the status of pod readiness gate \"{INPLACE_UPDATE_READY_CONDITION}\" is not \"True\", but False"),
            "lastTransitionTime": now,
        }));
    } else if ready_once_gate_is_true(p) {
        conditions.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": now,
                               "reason": null, "message": null}));
    }
    let body = json!({"metadata": {"uid": p.metadata.uid}, "status": {"conditions": conditions}});
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.ns);
    let out =
        api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Strategic(body)).await?;
    if let Some(rv) = out.metadata.resource_version.as_deref() {
        ctx.exp.expect_update(&set.key(), &p.name_any(), rv);
    }
    Ok(out)
}

/// Whether kubelet will find the pod Ready once `InPlaceUpdateReady` is True: running, every
/// container ready, every other gate True, and not Ready yet.
fn ready_once_gate_is_true(p: &Pod) -> bool {
    use kinetic_rollout::pod::condition;
    let (Some(spec), Some(status)) = (p.spec.as_ref(), p.status.as_ref()) else { return false };
    if status.phase.as_deref() != Some("Running")
        || condition(p, "Ready").is_some_and(|c| c.status == "True")
    {
        return false;
    }
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    spec.containers.iter().all(|c| statuses.iter().any(|s| s.name == c.name && s.ready))
        && spec.readiness_gates.iter().flatten().all(|g| {
            g.condition_type == INPLACE_UPDATE_READY_CONDITION
                || condition(p, &g.condition_type).is_some_and(|c| c.status == "True")
        })
}

/// Finishes what earlier passes started: a new gated pod gets `InPlaceUpdateReady` True, a pod
/// whose in-place update completed gets it back to True (and leaves lifecycle `Updating`), the
/// next container batch is patched, and `Updated` goes back to `Normal` once the inPlaceUpdate
/// hook is in place again. Answers whether it wrote anything.
pub async fn refresh(
    ctx: &Ctx,
    set: &Set,
    pods: &[(i32, &Pod)],
    revs: &Revisions,
    now: Timestamp,
) -> Result<bool, ReconcileError> {
    let results =
        futures::future::join_all(pods.iter().map(|(_, p)| refresh_one(ctx, set, p, revs, now)))
            .await;
    let mut wrote = false;
    for r in results {
        wrote |= r?;
    }
    Ok(wrote)
}

async fn refresh_one(
    ctx: &Ctx,
    set: &Set,
    p: &Pod,
    revs: &Revisions,
    now: Timestamp,
) -> Result<bool, ReconcileError> {
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    let hook = set.lifecycle_hook(|l| l.in_place_update.as_ref());
    let update_name = revs.update.name_any();
    // Updated → Normal once the user's controller put the hook back (or there is none).
    if kinetic_rollout::pod::in_state(p, LifecycleState::Updated)
        && kinetic_rollout::pod::matches_revision(p, &update_name)
        && (hook.is_none() || kinetic_rollout::lifecycle::is_pod_all_hooked(hook, p))
    {
        let body = json!({"metadata": {"labels": {LIFECYCLE_STATE_LABEL: LifecycleState::Normal.as_str()}}});
        patch_pod(ctx, set, p, Patch::Merge(body)).await?;
        return Ok(true);
    }
    if !has_gate(p, INPLACE_UPDATE_READY_CONDITION) {
        return Ok(false);
    }
    let cond = kinetic_rollout::pod::condition(p, INPLACE_UPDATE_READY_CONDITION);
    match cond.map(|c| c.status.as_str()) {
        None => {
            set_update_ready(ctx, set, p, true).await?;
            Ok(true)
        }
        Some("False") => {
            let state = inplace::update_state(p).and_then(Result::ok);
            let updating = state.as_ref().is_some_and(|s| {
                revs.all.iter().any(|r| r.name_any() == s.revision)
                    && kinetic_rollout::pod::matches_revision(p, &s.revision)
            });
            let done = match &state {
                Some(s) if updating => match inplace::check_update_completed(p, s) {
                    Ok(()) => true,
                    Err(inplace::NotCompleted::NextBatches) => {
                        if inplace::ready_for_next_batch(p, s).is_ok()
                            && let Some(mut body) = inplace::next_batch(p, s, now)?
                        {
                            body["metadata"]["resourceVersion"] =
                                json!(p.metadata.resource_version);
                            patch_pod(ctx, set, p, Patch::Strategic(body)).await?;
                            return Ok(true);
                        }
                        false
                    }
                    Err(_) => false,
                },
                _ => true,
            };
            if !done {
                return Ok(false);
            }
            set_update_ready(ctx, set, p, true).await?;
            if kinetic_rollout::pod::in_state(p, LifecycleState::Updating) {
                let next =
                    if hook.is_some() { LifecycleState::Updated } else { LifecycleState::Normal };
                let body = json!({"metadata": {"labels": {LIFECYCLE_STATE_LABEL: next.as_str()}}});
                patch_pod(ctx, set, p, Patch::Merge(body)).await?;
            }
            tracing::info!(statefulset = %set.key(), pod = %p.name_any(), "in-place update finished");
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// Moves `p` to the update revision: in place when the policy and the template change allow
/// it, else by deleting it (the scale step recreates it with the same name and claims).
/// Answers whether it wrote anything.
pub async fn update_pod(
    ctx: &Ctx,
    set: &Set,
    p: &Pod,
    revs: &Revisions,
    now: Timestamp,
) -> Result<bool, ReconcileError> {
    let policy = set.pod_update_policy();
    let target = revs.update.name_any();
    let name = p.name_any();
    let spec = match (revs.of_pod(p).and_then(|r| template_of(r)), template_of(&revs.update)) {
        (Some(old), Some(new)) if policy != PodUpdatePolicy::ReCreate => {
            inplace::update_spec(&old, &new, InPlaceOptions::default())
        }
        _ => None,
    };
    let Some(spec) = spec else {
        if policy == PodUpdatePolicy::InPlaceOnly {
            ctx.events.send(set.event(
                "Warning",
                "FailedUpdatePodInPlace",
                format!("pod {name} cannot be updated in place to {target} and the podUpdatePolicy is InPlaceOnly"),
            ));
            return Ok(false);
        }
        return delete_pod(ctx, set, p, "update").await;
    };
    // The inPlaceUpdate hook: PreparingUpdate first, updated once the user removed the hook.
    let hook = set.lifecycle_hook(|l| l.in_place_update.as_ref());
    if kinetic_rollout::lifecycle::is_pod_hooked(hook, p) {
        if kinetic_rollout::pod::in_state(p, LifecycleState::PreparingUpdate) {
            return Ok(false);
        }
        let body = json!({"metadata": {"labels": {
            LIFECYCLE_STATE_LABEL: LifecycleState::PreparingUpdate.as_str()
        }}});
        patch_pod(ctx, set, p, Patch::Merge(body)).await?;
        return Ok(true);
    }
    let p = if has_gate(p, INPLACE_UPDATE_READY_CONDITION) {
        set_update_ready(ctx, set, p, false).await?
    } else {
        p.clone()
    };
    let state = inplace::new_update_state(&p, &spec, &target, now);
    let mut body = inplace::update_patch(&p, &spec, &state, &target)?;
    // StatefulSet pods carry only `controller-revision-hash` (the CloneSet's patch adds the
    // short hash too).
    if let Some(labels) = body.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
        if set.spec.lifecycle.is_none() {
            labels.remove(LIFECYCLE_STATE_LABEL);
        }
    }
    body["metadata"]["resourceVersion"] = json!(p.metadata.resource_version);
    patch_pod(ctx, set, &p, Patch::Strategic(body)).await?;
    tracing::info!(statefulset = %set.key(), pod = %name, revision = %target, "in-place update started");
    ctx.events.send(set.event(
        "Normal",
        "SuccessfulUpdatePodInPlace",
        format!("successfully update pod {name} in-place(revision {target})"),
    ));
    Ok(true)
}
