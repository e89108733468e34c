//! CloneSet status, as upstream `cloneset_status.go` computes it, plus the `Progressing`
//! condition with `progressDeadlineSeconds` (upstream v1.9 reasons).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kinetic_api::kruise::cloneset::condition::{PROGRESSING, reason};
use kinetic_api::kruise::cloneset::{CloneSet, CloneSetCondition, CloneSetStatus};
use kinetic_rollout::pod;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::revision::Revisions;
use super::{Ctx, ReconcileError};

/// Whether the rollout to `update_revision` has stopped at its progress deadline.
pub fn deadline_exceeded(cs: &CloneSet, update_revision: &str) -> bool {
    let Some(st) = cs.status.as_ref() else { return false };
    st.update_revision.as_deref() == Some(update_revision)
        && progressing(st).is_some_and(|c| {
            c.status == "False" && c.reason.as_deref() == Some(reason::DEADLINE_EXCEEDED)
        })
}

fn progressing(st: &CloneSetStatus) -> Option<&CloneSetCondition> {
    st.conditions.iter().flatten().find(|c| c.type_ == PROGRESSING)
}

/// The status for `pods` (active pods), and when a timed change (minReadySeconds, the
/// progress deadline) is next due.
pub fn compute(
    cs: &CloneSet,
    pods: &[&Pod],
    revs: &Revisions,
    partition: i32,
    now: Timestamp,
) -> (CloneSetStatus, Option<Duration>) {
    let old = cs.status.clone().unwrap_or_default();
    let min_ready = cs.spec.min_ready_seconds.unwrap_or(0);
    let update = revs.update.name_any();
    let mut st = CloneSetStatus {
        observed_generation: cs.metadata.generation,
        update_revision: Some(update.clone()),
        collision_count: Some(revs.collision_count).filter(|c| *c > 0).or(old.collision_count),
        label_selector: Some(selector_string(cs)),
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let mut wake: Option<Duration> = None;
    let mut updated_available = 0;
    for p in pods {
        let updated = pod::matches_revision(p, &update);
        // Upstream counts `IsPodUpdateReady(pod, 0)`: Ready and InPlaceUpdateReady, whatever
        // the lifecycle state (which belongs to availableReplicas; issue 18).
        let ready = pod::is_update_ready(p, 0, now);
        let available = pod::is_available(p, min_ready, now);
        st.replicas += 1;
        if updated {
            st.updated_replicas += 1;
        }
        if ready {
            st.ready_replicas += 1;
            if updated {
                st.updated_ready_replicas += 1;
            }
            if !available && let Some(since) = pod::ready_since(p) {
                let due = since + jiff::SignedDuration::from_secs(i64::from(min_ready) + 1);
                if let Ok(d) = Duration::try_from(due.duration_since(now)) {
                    wake = Some(wake.map_or(d, |w| w.min(d)));
                }
            }
        }
        if available {
            st.available_replicas += 1;
            if updated {
                updated_available += 1;
            }
        }
    }
    st.updated_available_replicas = Some(updated_available);
    let replicas = cs.spec.replicas.unwrap_or(1);
    let expected = (replicas - partition).max(0);
    st.expected_updated_replicas = Some(expected);
    // currentRevision follows updateRevision only once every pod is updated and the count is
    // right (cloneset_status.go).
    st.current_revision = if st.updated_replicas == st.replicas && st.replicas == replicas {
        Some(update.clone())
    } else {
        Some(revs.current.name_any())
    };
    if let Some(d) = progress(cs, &old, &mut st, expected, now) {
        wake = Some(wake.map_or(d, |w| w.min(d)));
    }
    (st, wake)
}

/// `status.labelSelector` (what HPA and `kubectl scale` read): the selector's canonical string
/// form, as `metav1.FormatLabelSelector` prints it.
fn selector_string(cs: &CloneSet) -> String {
    serde_json::to_value(&cs.spec.selector)
        .ok()
        .and_then(|v| kinetic_machinery::selector::LabelSelector::from_label_selector(&v).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Sets the `Progressing` condition when `progressDeadlineSeconds` is set; answers when the
/// deadline falls if it is still ahead.
fn progress(
    cs: &CloneSet,
    old: &CloneSetStatus,
    st: &mut CloneSetStatus,
    expected: i32,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = cs.spec.progress_deadline_seconds?;
    let prev = progressing(old).cloned();
    let revision_changed = old.update_revision != st.update_revision;
    let done = st.updated_available_replicas.unwrap_or(0) >= expected
        && st.replicas == cs.spec.replicas.unwrap_or(1);
    let paused = cs.spec.update_strategy.paused.unwrap_or(false);
    let made_progress = revision_changed
        || st.updated_replicas > old.updated_replicas
        || st.updated_available_replicas.unwrap_or(0) > old.updated_available_replicas.unwrap_or(0);
    let t = Time(now);
    let set = |status: &str, reason: &str, message: String, prev: &Option<CloneSetCondition>| {
        let same = prev.as_ref().is_some_and(|p| p.status == status);
        CloneSetCondition {
            type_: PROGRESSING.to_owned(),
            status: status.to_owned(),
            last_update_time: Some(t.clone()),
            last_transition_time: if same {
                prev.as_ref().and_then(|p| p.last_transition_time.clone())
            } else {
                Some(t.clone())
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
        }
    };
    let mut wake = None;
    // Upstream's order (`calculateProgressingStatus`): available, paused, partition available,
    // deadline exceeded, else progressing; each True but the deadline, with upstream's texts.
    let partitioned = expected < cs.spec.replicas.unwrap_or(1);
    let keep_or = |status: &str, r: &str, message: &str| {
        let unchanged =
            prev.as_ref().is_some_and(|p| p.status == status && p.reason.as_deref() == Some(r));
        if unchanged { prev.clone() } else { Some(set(status, r, message.to_owned(), &prev)) }
    };
    let cond = if done && !partitioned {
        keep_or("True", reason::AVAILABLE, "CloneSet is available")
    } else if paused {
        keep_or("True", reason::PAUSED, "CloneSet is paused")
    } else if done {
        keep_or(
            "True",
            reason::PARTITION_AVAILABLE,
            "CloneSet has been paused due to partition ready",
        )
    } else if made_progress
        || prev.as_ref().is_none_or(|p| {
            p.reason.as_deref() == Some(reason::PAUSED)
                || (p.status == "True" && p.reason.as_deref() != Some(reason::UPDATED))
        })
    {
        wake = Some(Duration::from_secs(u64::try_from(deadline).unwrap_or(0) + 1));
        let resumed = prev.as_ref().is_some_and(|p| p.reason.as_deref() == Some(reason::PAUSED));
        let message = if resumed { "CloneSet is resumed" } else { "CloneSet is progressing" };
        Some(set("True", reason::UPDATED, message.into(), &prev))
    } else {
        let p = prev.clone();
        match p {
            Some(p) if p.status == "True" => {
                let since = p.last_update_time.as_ref().map_or(now, |t| t.0);
                let due = since + jiff::SignedDuration::from_secs(i64::from(deadline));
                if now >= due {
                    Some(set(
                        "False",
                        reason::DEADLINE_EXCEEDED,
                        format!(
                            "CloneSet revision {} has timed out progressing",
                            st.update_revision.as_deref().unwrap_or_default()
                        ),
                        &prev,
                    ))
                } else {
                    wake = Duration::try_from(due.duration_since(now)).ok();
                    Some(p)
                }
            }
            other => other,
        }
    };
    let mut conds: Vec<CloneSetCondition> = st
        .conditions
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != PROGRESSING)
        .collect();
    conds.extend(cond);
    st.conditions = Some(conds).filter(|c| !c.is_empty());
    wake
}

/// Writes the status when it changed; answers whether the progress deadline was newly exceeded.
pub async fn write(ctx: &Ctx, cs: &CloneSet, st: CloneSetStatus) -> Result<bool, ReconcileError> {
    let old = cs.status.clone().unwrap_or_default();
    if old == st {
        return Ok(false);
    }
    let newly_exceeded = progressing(&st)
        .is_some_and(|c| c.reason.as_deref() == Some(reason::DEADLINE_EXCEEDED))
        && progressing(&old).is_none_or(|c| c.reason.as_deref() != Some(reason::DEADLINE_EXCEEDED));
    let api: Api<CloneSet> =
        Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    let body = json!({"metadata": {"resourceVersion": cs.resource_version()}, "status": st});
    api.patch_status(&cs.name_any(), &PatchParams::default(), &Patch::Merge(body)).await?;
    Ok(newly_exceeded)
}
