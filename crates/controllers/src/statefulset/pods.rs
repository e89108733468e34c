//! A StatefulSet's pods and claims: the pod of one ordinal (upstream's
//! `newVersionedStatefulSetPod`: identity, storage, revision label) and the claims of
//! `volumeClaimTemplates` with `persistentVolumeClaimRetentionPolicy` (upstream's
//! `createPersistentVolumeClaims` and `updateClaimOwnerRefForSetAndPod`).
//!
//! Retention is done with the garbage collector where upstream does: `whenDeleted: Delete`
//! gives each claim a (non-controller) ownerReference to the set, so deleting the set deletes
//! them. `whenScaled: Delete` deletes the claims of an ordinal the set no longer wants once its
//! pod is gone (upstream hands them to the condemned pod as owner first; the effect, claims
//! gone after their pod, is the same).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::kruise::statefulset::{POD_INDEX_LABEL, POD_NAME_LABEL, RetentionPolicyType};
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_READY_CONDITION, LIFECYCLE_STATE_LABEL,
    LifecycleState,
};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::revision::template_of;
use super::{Ctx, ReconcileError, Set, claim_ordinal};

/// The name of the pod at `ordinal`.
pub fn pod_name(set: &Set, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name)
}

fn claim_name(set: &Set, template: &str, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set.name)
}

/// The claims of `ordinal` as the templates describe them (upstream's
/// `getPersistentVolumeClaims`): renamed, in the set's namespace, labelled with the
/// selector's matchLabels.
fn claims_for(set: &Set, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let mut out = Vec::new();
    for t in set.spec.volume_claim_templates.iter().flatten() {
        let template = t.name_any();
        let mut c = t.clone();
        c.metadata.name = Some(claim_name(set, &template, ordinal));
        c.metadata.namespace = Some(set.ns.clone());
        c.metadata.generate_name = None;
        c.metadata.resource_version = None;
        c.metadata.uid = None;
        c.metadata.owner_references = None;
        c.status = None;
        let labels = c.metadata.labels.get_or_insert_with(Default::default);
        let sel = set.spec.selector.as_ref().and_then(|s| s.match_labels.as_ref());
        for (k, v) in sel.into_iter().flatten() {
            labels.insert(k.clone(), v.clone());
        }
        out.push((template, c));
    }
    out
}

fn when_deleted(set: &Set) -> RetentionPolicyType {
    set.spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted)
        .unwrap_or_default()
}

fn when_scaled(set: &Set) -> RetentionPolicyType {
    set.spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled)
        .unwrap_or_default()
}

/// The set's ownerReference as a claim carries it: not the controller (upstream's
/// `setOwnerRef` uses a plain owner reference).
fn set_ref(set: &Set) -> OwnerReference {
    OwnerReference { controller: None, block_owner_deletion: None, ..set.owner.clone() }
}

/// Keeps the set's claims in line with the retention policy: the set's ownerReference on each
/// claim exactly when `whenDeleted: Delete`, and the claims of ordinals the set no longer wants
/// deleted once their pod is gone when `whenScaled: Delete`. Returns the set's claims by name.
pub async fn sync_claims(
    ctx: &Ctx,
    set: &Set,
    wanted: &[i32],
    pods: &[(i32, &Pod)],
) -> Result<BTreeMap<String, Arc<PersistentVolumeClaim>>, ReconcileError> {
    let mut mine = BTreeMap::new();
    if set.spec.volume_claim_templates.as_ref().is_none_or(Vec::is_empty) {
        return Ok(mine);
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &set.ns);
    for c in ctx.pvcs.state() {
        if c.metadata.namespace.as_deref() != Some(set.ns.as_str()) {
            continue;
        }
        let Some(ordinal) = claim_ordinal(set, &c.name_any()) else { continue };
        let name = c.name_any();
        if c.metadata.deletion_timestamp.is_some() {
            mine.insert(name, c);
            continue;
        }
        let condemned = !wanted.contains(&ordinal);
        if condemned
            && when_scaled(set) == RetentionPolicyType::Delete
            && !pods.iter().any(|(o, _)| *o == ordinal)
        {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(statefulset = %set.key(), claim = %name, "claim of a scaled-down ordinal deleted (whenScaled: Delete)")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let has = c.owner_references().iter().any(|o| o.uid == set.uid);
        let want = when_deleted(set) == RetentionPolicyType::Delete;
        if has != want {
            let mut refs: Vec<OwnerReference> =
                c.owner_references().iter().filter(|o| o.uid != set.uid).cloned().collect();
            if want {
                refs.push(set_ref(set));
            }
            let body = json!({"metadata": {
                "resourceVersion": c.metadata.resource_version,
                "ownerReferences": refs,
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(body)).await?;
        }
        mine.insert(name, c);
    }
    Ok(mine)
}

/// Creates the claims of `ordinal` that do not exist (before its pod, as upstream's
/// `createPersistentVolumeClaims`); a claim that exists is used as it is.
async fn create_claims(
    ctx: &Ctx,
    set: &Set,
    ordinal: i32,
    existing: &BTreeMap<String, Arc<PersistentVolumeClaim>>,
) -> Result<(), ReconcileError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &set.ns);
    for (_, mut c) in claims_for(set, ordinal) {
        let name = c.name_any();
        if existing.contains_key(&name) {
            continue;
        }
        if when_deleted(set) == RetentionPolicyType::Delete {
            c.metadata.owner_references = Some(vec![set_ref(set)]);
        }
        match api.create(&PostParams::default(), &c).await {
            Ok(_) => ctx.events.send(set.event(
                "Normal",
                "SuccessfulCreate",
                format!(
                    "create Claim {name} for Pod {} in StatefulSet {} success",
                    pod_name(set, ordinal),
                    set.name
                ),
            )),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                ctx.events.send(set.event(
                    "Warning",
                    "FailedCreate",
                    format!(
                        "create Claim {name} for Pod {} in StatefulSet {} failed error: {}",
                        pod_name(set, ordinal),
                        set.name,
                        crate::report(&e)
                    ),
                ));
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// The pod of `ordinal` at revision `rev` (upstream's `newVersionedStatefulSetPod` with
/// `updateIdentity` and `updateStorage`; Kruise adds the `InPlaceUpdateReady` readiness gate
/// under an in-place `podUpdatePolicy`, and a lifecycle state when hooks are configured).
pub fn new_pod(set: &Set, ordinal: i32, rev: &ControllerRevision) -> Option<Value> {
    let mut pod = template_of(rev)?;
    let name = pod_name(set, ordinal);
    let rev_name = rev.name_any();
    let meta = pod.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    meta["name"] = json!(name);
    meta["namespace"] = json!(set.ns);
    meta["ownerReferences"] = json!([set.owner]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("generateName");
    }
    let labels = meta.as_object_mut()?.entry("labels").or_insert_with(|| json!({}));
    labels[CONTROLLER_REVISION_HASH_LABEL] = json!(kinetic_rollout::pod::revision_label(&rev_name));
    labels[POD_NAME_LABEL] = json!(name);
    labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
    if set.kruise && set.spec.lifecycle.is_some() {
        labels[LIFECYCLE_STATE_LABEL] = json!(LifecycleState::Normal.as_str());
    }
    let spec = pod.as_object_mut()?.entry("spec").or_insert_with(|| json!({}));
    spec["hostname"] = json!(name);
    if let Some(svc) = set.spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(svc);
    }
    if set.pod_update_policy() != kinetic_api::kruise::statefulset::PodUpdatePolicy::ReCreate {
        let gates = spec.as_object_mut()?.entry("readinessGates").or_insert_with(|| json!([]));
        if let Some(g) = gates.as_array_mut()
            && !g.iter().any(|x| x["conditionType"] == INPLACE_UPDATE_READY_CONDITION)
        {
            g.push(json!({"conditionType": INPLACE_UPDATE_READY_CONDITION}));
        }
    }
    // Volumes named after a claim template point at this ordinal's claim; they come first.
    let claims = claims_for(set, ordinal);
    if !claims.is_empty() {
        let names: Vec<&str> = claims.iter().map(|(t, _)| t.as_str()).collect();
        let mut volumes: Vec<Value> = claims
            .iter()
            .map(|(t, c)| json!({"name": t, "persistentVolumeClaim": {"claimName": c.metadata.name}}))
            .collect();
        let old = spec["volumes"].as_array().cloned().unwrap_or_default();
        volumes.extend(
            old.into_iter().filter(|v| v["name"].as_str().is_none_or(|n| !names.contains(&n))),
        );
        spec["volumes"] = Value::Array(volumes);
    }
    pod.as_object_mut()?.insert("apiVersion".into(), json!("v1"));
    pod.as_object_mut()?.insert("kind".into(), json!("Pod"));
    Some(pod)
}

/// Creates the claims and then the pod of `ordinal` at revision `rev`.
pub async fn create(
    ctx: &Ctx,
    set: &Set,
    ordinal: i32,
    rev: &ControllerRevision,
    claims: &BTreeMap<String, Arc<PersistentVolumeClaim>>,
) -> Result<(), ReconcileError> {
    let name = pod_name(set, ordinal);
    // A claim still terminating (a scale-down's whenScaled: Delete) must be gone first, else
    // the new pod would wait for a claim that disappears under it.
    let terminating = claims_for(set, ordinal).iter().any(|(_, c)| {
        claims.get(&c.name_any()).is_some_and(|x| x.metadata.deletion_timestamp.is_some())
    });
    if terminating {
        return Ok(());
    }
    create_claims(ctx, set, ordinal, claims).await?;
    let Some(body) = new_pod(set, ordinal, rev) else { return Ok(()) };
    let pod: Pod = serde_json::from_value(body)?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.ns);
    let key = set.key();
    ctx.exp.expect_create(&key, &name);
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => {
            tracing::info!(statefulset = %key, pod = %name, revision = %rev.name_any(), "pod created");
            ctx.events.send(set.event(
                "Normal",
                "SuccessfulCreate",
                format!("create Pod {name} in StatefulSet {} successful", set.name),
            ));
            Ok(())
        }
        // The old pod of this name is still going away; its deletion triggers the next pass.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            ctx.exp.create_failed(&key, &name);
            Ok(())
        }
        Err(e) => {
            ctx.exp.create_failed(&key, &name);
            ctx.events.send(set.event(
                "Warning",
                "FailedCreate",
                format!(
                    "create Pod {name} in StatefulSet {} failed error: {}",
                    set.name,
                    crate::report(&e)
                ),
            ));
            Err(e.into())
        }
    }
}
