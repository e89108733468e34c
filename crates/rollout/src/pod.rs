//! What the rollout reads from a pod: readiness and availability as CloneSet judges them, the
//! lifecycle state, the revision, and the deletion marks.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_GRACE_ANNOTATION,
    INPLACE_UPDATE_READY_CONDITION, LIFECYCLE_STATE_LABEL, LifecycleState,
    POD_DELETION_COST_ANNOTATION, POD_TEMPLATE_HASH_LABEL, SPECIFIED_DELETE_LABEL,
};

/// The pod's label `key`, if set.
pub fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The pod's annotation `key`, if set.
pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The pod's name (empty when unset, as in tests' bare pods).
pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// The status condition of type `type_`.
pub fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// `status.phase`, empty when unset.
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Kubernetes' `podutil.IsPodReady`: the Ready condition is True.
///
/// A pool pod claimed but not yet specialised (issue 12) is not ready whatever its condition
/// says: that condition is still its placeholder's.
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
        && kinetic_api::pool::ready_as_claimant(pod.metadata.labels.as_ref())
}

/// When the pod last became Ready, if it is Ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    condition(pod, "Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// `clonesetutils.IsRunningAndAvailable`: Running, Ready, and Ready for longer than
/// `min_ready_seconds` at `now` (Kubernetes' `podutil.IsPodAvailable`: with a non-zero
/// minReadySeconds a Ready condition without a transition time does not count).
pub fn is_running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if phase(pod) != "Running" || !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|since| {
        since
            .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
            .is_ok_and(|t| t < now)
    })
}

/// The raw `lifecycle.apps.kruise.io/state` label; `None` when unset or empty.
pub fn lifecycle_label(pod: &Pod) -> Option<&str> {
    label(pod, LIFECYCLE_STATE_LABEL).filter(|s| !s.is_empty())
}

/// Whether the pod's lifecycle label is `state`.
pub fn in_state(pod: &Pod, state: LifecycleState) -> bool {
    lifecycle_label(pod) == Some(state.as_str())
}

/// `CloneSet`'s `IsPodUpdateReady` (`core/cloneset_core.go`): running and available for
/// `min_ready_seconds`, and the `InPlaceUpdateReady` condition True or absent.
pub fn is_update_ready(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    is_running_and_available(pod, min_ready_seconds, now)
        && condition(pod, INPLACE_UPDATE_READY_CONDITION).is_none_or(|c| c.status == "True")
}

/// Whether CloneSet counts the pod as available (`sync/cloneset_sync_utils.go`
/// `IsPodAvailable`): its lifecycle state is Normal or unset (any other value, including ones
/// upstream does not define, makes it unavailable) and it is update-ready for
/// `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match lifecycle_label(pod) {
        None => {}
        Some(s) if s == LifecycleState::Normal.as_str() => {}
        Some(_) => return false,
    }
    is_update_ready(pod, min_ready_seconds, now)
}

/// Whether CloneSet counts the pod as ready (`isPodReady`): available with minReadySeconds 0.
/// This is what the readyReplicas status and the deletion limits use.
pub fn is_cloneset_ready(pod: &Pod, now: Timestamp) -> bool {
    is_available(pod, 0, now)
}

/// The hash part of a ControllerRevision name `{cloneset}-{hash}` (the text after the last
/// `-`), as upstream's `GetShortHash`.
pub fn short_hash(revision: &str) -> &str {
    revision.rsplit('-').next().unwrap_or(revision)
}

/// The `controller-revision-hash` label value for `revision` (a ControllerRevision name): the
/// full name, as upstream writes it, unless that is longer than a label value may be (63); then
/// only the short hash, as upstream's `CloneSetShortHash` gate writes it. So a CloneSet named
/// with 53 to 63 characters still gets pods (issue 18); [`matches_revision`] reads both forms.
pub fn revision_label(revision: &str) -> &str {
    if revision.len() <= 63 { revision } else { short_hash(revision) }
}

/// Whether the pod is at `revision` (a ControllerRevision name). Its `controller-revision-hash`
/// may hold the full name or only the short hash (upstream's `EqualToRevisionHash`, which covers
/// the `CloneSetShortHash` gate); a pod without that label is matched by its
/// `pod-template-hash` (always the short hash). The template hash is not consulted when the
/// revision label is present, so a stale one cannot make a pod match two revisions.
pub fn matches_revision(pod: &Pod, revision: &str) -> bool {
    let short = short_hash(revision);
    match label(pod, CONTROLLER_REVISION_HASH_LABEL) {
        Some(hash) => hash == revision || short_hash(hash) == short,
        None => label(pod, POD_TEMPLATE_HASH_LABEL).is_some_and(|h| !h.is_empty() && h == short),
    }
}

/// Whether the pod is asked to be deleted: it carries the `apps.kruise.io/specified-delete`
/// label (any value, as upstream's `IsSpecifiedDelete`) or is named in
/// `scaleStrategy.podsToDelete`.
pub fn is_specified_delete(pod: &Pod, pods_to_delete: &[String]) -> bool {
    label(pod, SPECIFIED_DELETE_LABEL).is_some()
        || pods_to_delete.iter().any(|n| n.as_str() == name(pod))
}

/// Whether the pod waits out an in-place update grace period
/// (`apps.kruise.io/inplace-update-grace` is set).
pub fn in_update_grace(pod: &Pod) -> bool {
    annotation(pod, INPLACE_UPDATE_GRACE_ANNOTATION).is_some()
}

/// `controller.kubernetes.io/pod-deletion-cost`, 0 when unset or invalid. As upstream, only
/// canonical int32 spellings count (no `+`, no leading zeros).
pub fn deletion_cost(pod: &Pod) -> i32 {
    let Some(v) = annotation(pod, POD_DELETION_COST_ANNOTATION) else { return 0 };
    let canonical = match v.as_bytes() {
        [] => false,
        [b'-', ..] => true,
        [b'0'] => true,
        [b'1'..=b'9', ..] => true,
        _ => false,
    };
    if canonical { v.parse::<i32>().unwrap_or(0) } else { 0 }
}

/// The highest restart count among the pod's containers.
pub fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

/// `spec.nodeName`, empty when unscheduled.
pub fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// `metadata.creationTimestamp`.
pub fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}
