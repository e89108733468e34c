//! A StatefulSet's status (upstream's `computeReplicaStatus` and `completeRollingUpdate`):
//! counts over the owned pods, `currentRevision` moved to `updateRevision` once every replica
//! is updated and ready, and, for the Advanced StatefulSet, `updatedReadyReplicas`,
//! `updatedAvailableReplicas` and `labelSelector` (the scale subresource's selector).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_rollout::statefulset::{Counts, rollout_complete};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::revision::Revisions;
use super::{Ctx, Kind, ReconcileError, Set};

/// The selector as `key=value,key in (a,b)` (what `kubectl` and the HPA read).
fn selector_string(set: &Set) -> Option<String> {
    let sel = set.spec.selector.as_ref()?;
    let mut parts: Vec<String> =
        sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    Some(parts.join(","))
}

/// Computes and writes the status when it changed. Answers when to look again (a ready pod
/// that becomes available after minReadySeconds).
pub async fn write<K: Kind>(
    ctx: &Ctx,
    set: &Set,
    obj: &K,
    owned: &[Arc<Pod>],
    wanted: &[i32],
    revs: &Revisions,
    now: Timestamp,
) -> Result<Option<Duration>, ReconcileError> {
    let update = revs.update.name_any();
    let mut current = revs.current.name_any();
    let min_ready = set.min_ready_seconds();
    let mut c = Counts::default();
    let mut wake = None;
    for p in owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let ready =
            kinetic_rollout::pod::is_ready(p) && kinetic_rollout::pod::phase(p) == "Running";
        let available = if set.kruise {
            kinetic_rollout::pod::is_available(p, min_ready, now)
        } else {
            kinetic_rollout::pod::is_running_and_available(p, min_ready, now)
        };
        if ready && !available && min_ready > 0 {
            wake = Some(Duration::from_secs(1));
        }
        let updated = kinetic_rollout::pod::matches_revision(p, &update);
        c.replicas += 1;
        c.ready += i32::from(ready);
        c.available += i32::from(available);
        c.current += i32::from(kinetic_rollout::pod::matches_revision(p, &current));
        c.updated += i32::from(updated);
        c.updated_ready += i32::from(updated && ready);
        c.updated_available += i32::from(updated && available);
    }
    let replicas = i32::try_from(wanted.len()).unwrap_or(i32::MAX);
    if rollout_complete(&c, replicas) {
        current.clone_from(&update);
        c.current = c.updated;
    }
    let mut status = json!({
        "observedGeneration": set.generation,
        "replicas": c.replicas,
        "readyReplicas": c.ready,
        "availableReplicas": c.available,
        "currentReplicas": c.current,
        "updatedReplicas": c.updated,
        "currentRevision": current,
        "updateRevision": update,
        "collisionCount": revs.collision_count,
    });
    if set.kruise {
        status["updatedReadyReplicas"] = json!(c.updated_ready);
        status["updatedAvailableReplicas"] = json!(c.updated_available);
        status["labelSelector"] = json!(selector_string(set));
    }
    let old = serde_json::to_value(obj)?.get("status").cloned().unwrap_or(Value::Null);
    let unchanged = status
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| old.get(k).unwrap_or(&Value::Null) == v));
    if unchanged {
        return Ok(wake);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &set.ns);
    api.patch_status(&set.name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
        .await?;
    Ok(wake)
}
