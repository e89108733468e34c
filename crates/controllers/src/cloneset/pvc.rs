//! `volumeClaimTemplates`: one PersistentVolumeClaim per template and pod, named
//! `{template}-{cloneset}-{instance-id}` and labelled with the instance id, so a pod and its
//! claims share the id (upstream's `pkg/controller/cloneset/utils/cloneset_utils.go`).
//!
//! The rules, as OpenKruise documents them:
//! - the claims are created before their pod and carry a controller reference to the CloneSet,
//!   so deleting the CloneSet deletes them;
//! - a pod the controller deletes (scale-in, or a recreate update) takes its claims with it;
//! - a pod deleted by someone else leaves its claims, and the next pod the controller creates
//!   takes over its instance id and so its claims, unless `scaleStrategy.disablePVCReuse` is
//!   set, in which case claims without a pod are deleted;
//! - an in-place update keeps the claims.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kinetic_api::kruise::CLONESET_INSTANCE_ID_LABEL;
use kinetic_api::kruise::cloneset::CloneSet;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::{Value, json};

use super::{Ctx, ReconcileError, key, owner_ref};
use crate::events::EventReq;
use crate::expectations::Seen;

/// The key under which claim creations and deletions are expected, apart from the pods'.
pub(super) fn exp_key(cs: &CloneSet) -> String {
    format!("{}#pvc", key(cs))
}

fn api(ctx: &Ctx, cs: &CloneSet) -> Api<PersistentVolumeClaim> {
    Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default())
}

fn instance_id(c: &PersistentVolumeClaim) -> Option<&str> {
    c.metadata.labels.as_ref()?.get(CLONESET_INSTANCE_ID_LABEL).map(String::as_str)
}

/// The CloneSet's claims: in its namespace, controlled by it, not being deleted (upstream's
/// `getOwnedResource` filters the same way).
pub(super) fn owned(ctx: &Ctx, cs: &CloneSet) -> Vec<Arc<PersistentVolumeClaim>> {
    let ns = cs.namespace();
    let uid = cs.uid().unwrap_or_default();
    ctx.pvcs
        .state()
        .into_iter()
        .filter(|c| {
            c.namespace() == ns
                && c.metadata.deletion_timestamp.is_none()
                && c.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect()
}

/// Whether the cache shows this controller's claim writes (creations and deletions).
pub(super) fn expectations_met(ctx: &Ctx, cs: &CloneSet) -> bool {
    let ns = cs.namespace();
    let all = ctx.pvcs.state();
    let seen = all.iter().filter(|c| c.namespace() == ns).map(|c| Seen {
        name: c.metadata.name.as_deref().unwrap_or_default(),
        uid: c.metadata.uid.as_deref().unwrap_or_default(),
        resource_version: c.metadata.resource_version.as_deref().unwrap_or_default(),
        terminating: c.metadata.deletion_timestamp.is_some(),
    });
    ctx.exp.satisfied(&exp_key(cs), seen)
}

/// The instance ids free claims offer to new pods, or none when reuse is disabled.
pub(super) fn reusable_ids(cs: &CloneSet, claims: &[Arc<PersistentVolumeClaim>]) -> Vec<String> {
    if cs.spec.scale_strategy.disable_pvc_reuse == Some(true) {
        return Vec::new();
    }
    claims.iter().filter_map(|c| instance_id(c).map(str::to_owned)).collect()
}

/// The claims of the pod with instance id `id`, as upstream's `GetPersistentVolumeClaims`
/// builds them: the template, renamed, in the CloneSet's namespace, with the selector's
/// matchLabels and the instance id as labels and the CloneSet as controller.
fn claims_for(cs: &CloneSet, id: &str) -> Vec<(String, PersistentVolumeClaim)> {
    let mut out = Vec::new();
    for t in cs.spec.volume_claim_templates.iter().flatten() {
        let template = t.name_any();
        let mut c = t.clone();
        c.metadata.name = Some(format!("{template}-{}-{id}", cs.name_any()));
        c.metadata.namespace = cs.namespace();
        c.metadata.generate_name = None;
        c.metadata.resource_version = None;
        c.metadata.uid = None;
        c.status = None;
        let labels = c.metadata.labels.get_or_insert_with(Default::default);
        for (k, v) in cs.spec.selector.match_labels.iter().flatten() {
            labels.insert(k.clone(), v.clone());
        }
        labels.insert(CLONESET_INSTANCE_ID_LABEL.to_owned(), id.to_owned());
        c.metadata.owner_references = Some(vec![owner_ref(cs)]);
        out.push((template, c));
    }
    out
}

/// Points the pod's volumes named after a claim template at the claim of instance `id`
/// (upstream's `UpdateStorage`): those volumes come first, the template's others follow.
pub(super) fn set_pod_volumes(cs: &CloneSet, pod: &mut Value, id: &str) {
    let claims = claims_for(cs, id);
    if claims.is_empty() {
        return;
    }
    let templates: BTreeSet<&str> = claims.iter().map(|(t, _)| t.as_str()).collect();
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|(t, c)| json!({"name": t, "persistentVolumeClaim": {"claimName": c.metadata.name}}))
        .collect();
    let old = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    volumes.extend(
        old.into_iter().filter(|v| v["name"].as_str().is_none_or(|n| !templates.contains(n))),
    );
    pod["spec"]["volumes"] = Value::Array(volumes);
}

/// Creates the claims of instance `id` that do not exist yet, before its pod (upstream's
/// `createOnePod`). A claim that exists already (a reused id, or a create whose answer was
/// lost) is left as it is.
///
/// # Errors
/// A create fails for another reason than AlreadyExists; a Warning Event says which claim.
pub(super) async fn create_missing(
    ctx: &Ctx,
    cs: &CloneSet,
    id: &str,
    existing: &[Arc<PersistentVolumeClaim>],
) -> Result<(), ReconcileError> {
    let api = api(ctx, cs);
    let owner = exp_key(cs);
    for (_, c) in claims_for(cs, id) {
        let name = c.name_any();
        if existing.iter().any(|e| e.name_any() == name) {
            continue;
        }
        ctx.exp.expect_create(&owner, &name);
        match api.create(&PostParams::default(), &c).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => ctx.exp.create_failed(&owner, &name),
            Err(e) => {
                ctx.exp.create_failed(&owner, &name);
                ctx.events.send(EventReq::for_object(
                    cs,
                    "Warning",
                    "FailedCreate",
                    format!("failed to create pvc {name}: {e}"),
                ));
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Deletes the claims of a pod the controller deleted (same instance id; upstream's
/// `deletePods`).
///
/// # Errors
/// A delete fails for another reason than NotFound; a Warning Event says which claim.
pub(super) async fn delete_for(
    ctx: &Ctx,
    cs: &CloneSet,
    id: &str,
    claims: &[Arc<PersistentVolumeClaim>],
) -> Result<(), ReconcileError> {
    let api = api(ctx, cs);
    let owner = exp_key(cs);
    for c in claims.iter().filter(|c| instance_id(c) == Some(id)) {
        let name = c.name_any();
        let uid = c.metadata.uid.clone().unwrap_or_default();
        ctx.exp.expect_delete(&owner, &uid);
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                ctx.exp.delete_failed(&owner, &uid)
            }
            Err(e) => {
                ctx.exp.delete_failed(&owner, &uid);
                ctx.events.send(EventReq::for_object(
                    cs,
                    "Warning",
                    "FailedDelete",
                    format!("failed to delete pvc {name}: {e}"),
                ));
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// With `scaleStrategy.disablePVCReuse`, deletes the claims no active pod uses (upstream's
/// `cleanupPVCs`, which hands them to the old pod for garbage collection; deleting them is
/// the same end state without a second owner). Answers the claims that remain.
///
/// # Errors
/// As [`delete_for`].
pub(super) async fn cleanup(
    ctx: &Ctx,
    cs: &CloneSet,
    active: &[Pod],
    claims: Vec<Arc<PersistentVolumeClaim>>,
) -> Result<Vec<Arc<PersistentVolumeClaim>>, ReconcileError> {
    if cs.spec.scale_strategy.disable_pvc_reuse != Some(true) {
        return Ok(claims);
    }
    let used: BTreeSet<&str> = active
        .iter()
        .filter_map(|p| kinetic_rollout::pod::label(p, CLONESET_INSTANCE_ID_LABEL))
        .collect();
    let (keep, unused): (Vec<_>, Vec<_>) =
        claims.into_iter().partition(|c| instance_id(c).is_some_and(|id| used.contains(id)));
    let ids: BTreeSet<String> =
        unused.iter().filter_map(|c| instance_id(c)).map(str::to_owned).collect();
    for id in ids {
        delete_for(ctx, cs, &id, &unused).await?;
    }
    Ok(keep)
}
