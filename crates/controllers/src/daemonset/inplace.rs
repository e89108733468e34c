//! In-place updates of Advanced DaemonSet pods (`rollingUpdateType: InPlaceIfPossible`), on the
//! CloneSet's machinery: `kinetic_rollout::inplace` decides whether the template change is
//! in-place-able, builds the patch and tells when the node agent has restarted the containers
//! with the new images (upstream Kruise's `inplaceupdate` package, used by its DaemonSet
//! controller's `inPlaceUpdatePods` and refreshed every pass).
//!
//! The pod first goes not ready (`InPlaceUpdateReady=False` and `Ready=False` in one status
//! write) so Services drop it before anything restarts; then one patch sets the new images, the
//! revision labels and the `apps.kruise.io/inplace-update-state`; once the containers run the
//! new images, the gate turns True again. The pod keeps its UID, IP and node.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_READY_CONDITION, LIFECYCLE_STATE_LABEL,
    POD_TEMPLATE_HASH_LABEL,
};
use kinetic_rollout::inplace::{self, InPlaceOptions};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::revision::{Revisions, template_of};
use super::{Ctx, Ds, ReconcileError};
use crate::cloneset::{not_ready_condition, now_rfc3339, ready_once_gates_are};

fn has_gate(p: &Pod) -> bool {
    p.spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .any(|g| g.condition_type == INPLACE_UPDATE_READY_CONDITION)
}

/// Writes `InPlaceUpdateReady` (and Ready with it, as the CloneSet does) through `pods/status`.
async fn set_gate(ctx: &Ctx, ds: &Ds, p: &Pod, ready: bool) -> Result<Pod, ReconcileError> {
    let now = now_rfc3339();
    let mut conditions = vec![if ready {
        json!({"type": INPLACE_UPDATE_READY_CONDITION, "status": "True",
               "lastTransitionTime": now, "reason": null, "message": null})
    } else {
        json!({"type": INPLACE_UPDATE_READY_CONDITION, "status": "False",
               "reason": "StartInPlaceUpdate", "lastTransitionTime": now})
    }];
    if !ready {
        conditions.push(not_ready_condition(INPLACE_UPDATE_READY_CONDITION, &now));
    } else if ready_once_gates_are(p, &[INPLACE_UPDATE_READY_CONDITION]) {
        conditions.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": now,
                               "reason": null, "message": null}));
    }
    let body = json!({"metadata": {"uid": p.metadata.uid}, "status": {"conditions": conditions}});
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ds.ns);
    let out =
        api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Strategic(body)).await?;
    if let Some(rv) = out.metadata.resource_version.as_deref() {
        ctx.exp.expect_update(&ds.key, &out.name_any(), rv);
    }
    Ok(out)
}

/// Gives new pods their first `InPlaceUpdateReady=True` and turns it True again on pods whose
/// in-place update is complete. Answers whether it wrote anything.
pub async fn refresh(
    ctx: &Ctx,
    ds: &Ds,
    pods: &[&Pod],
    revs: &Revisions,
) -> Result<bool, ReconcileError> {
    let mut wrote = false;
    for p in pods.iter().copied().filter(|p| has_gate(p) && p.metadata.deletion_timestamp.is_none())
    {
        let cond = kinetic_rollout::pod::condition(p, INPLACE_UPDATE_READY_CONDITION);
        let done = match cond.map(|c| c.status.as_str()) {
            None => true,
            Some("False") => match inplace::update_state(p).and_then(Result::ok) {
                // The update of the pod's current revision: done when the containers run it.
                Some(s)
                    if revs.of_hash(&s.revision).is_some()
                        && kinetic_rollout::pod::label(p, CONTROLLER_REVISION_HASH_LABEL)
                            == Some(s.revision.as_str()) =>
                {
                    inplace::check_update_completed(p, &s).is_ok()
                }
                _ => true,
            },
            Some(_) => false,
        };
        if done {
            set_gate(ctx, ds, p, true).await?;
            wrote = true;
        }
    }
    Ok(wrote)
}

/// Updates in place those of `names` that can be (the pod has the gate, its revision is known,
/// and only images or template labels/annotations changed); answers the others, which the
/// caller deletes and recreates (upstream `inPlaceUpdatePods`).
pub async fn update(
    ctx: &Ctx,
    ds: &Ds,
    pods: &[&Pod],
    names: Vec<String>,
    revs: &Revisions,
    now: Timestamp,
) -> Result<(bool, Vec<String>), ReconcileError> {
    let mut wrote = false;
    let mut rest = Vec::new();
    let target: &ControllerRevision = &revs.current;
    let new_t = template_of(target);
    for name in names {
        let Some(p) = pods.iter().copied().find(|p| p.name_any() == name) else { continue };
        let old_t = kinetic_rollout::pod::label(p, CONTROLLER_REVISION_HASH_LABEL)
            .and_then(|h| revs.of_hash(h))
            .and_then(|r| template_of(r));
        let spec = match (has_gate(p), old_t, new_t.as_ref()) {
            (true, Some(o), Some(n)) => inplace::update_spec(&o, n, InPlaceOptions::default()),
            _ => None,
        };
        let Some(spec) = spec else {
            rest.push(name);
            continue;
        };
        let p = set_gate(ctx, ds, p, false).await?;
        let state = inplace::new_update_state(&p, &spec, &revs.hash, now);
        let mut body = inplace::update_patch(&p, &spec, &state, &target.name_any())?;
        // A daemon pod carries the bare hash (upstream's DaemonSet labels), and no lifecycle
        // state of an in-place update: Advanced DaemonSet has no inPlaceUpdate hook.
        if let Some(labels) = body.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
            labels.insert(CONTROLLER_REVISION_HASH_LABEL.to_owned(), json!(revs.hash));
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            labels.remove(LIFECYCLE_STATE_LABEL);
        }
        body["metadata"]["resourceVersion"] = json!(p.metadata.resource_version);
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ds.ns);
        let out = api.patch(&name, &PatchParams::default(), &Patch::Strategic(body)).await?;
        if let Some(rv) = out.metadata.resource_version.as_deref() {
            ctx.exp.expect_update(&ds.key, &name, rv);
        }
        tracing::info!(daemonset = %ds.key, pod = %name, revision = %target.name_any(), "in-place update started");
        wrote = true;
    }
    Ok((wrote, rest))
}
