//! Pod predicates and the deletion order of upstream's `ActivePodsWithRanks`
//! (`pkg/controller/controller_utils.go`) with the `PodDeletionCost` and
//! `LogarithmicScaleDown` features on (their default since 1.22).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::Timestamp;

/// Upstream's `core.PodDeletionCost` annotation.
pub(crate) const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

pub(crate) fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// `podutil.IsPodReady`: the `Ready` condition is `True`; and, for a claimed pool pod, it is
/// specialised (before that the condition is its placeholder's, issue 12), so Services do not
/// route to it early.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
        && kinetic_api::pool::ready_as_claimant(pod.metadata.labels.as_ref())
}

/// When the pod last became ready, if it is.
pub(crate) fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod).filter(|c| c.status == "True")?.last_transition_time.as_ref().map(|t| t.0)
}

/// `podutil.IsPodAvailable`: ready for at least `min_ready_seconds`.
pub(crate) fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let min = Duration::from_secs(u64::try_from(min_ready_seconds).unwrap_or(0));
    ready_since(pod).is_some_and(|t| t.checked_add(min).is_ok_and(|avail| avail < now))
}

/// How long until a ready pod becomes available, when it is not yet.
pub(crate) fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<Duration> {
    if min_ready_seconds <= 0 || !is_ready(pod) || is_available(pod, min_ready_seconds, now) {
        return None;
    }
    let since = ready_since(pod)?;
    let min = Duration::from_secs(u64::try_from(min_ready_seconds).unwrap_or(0));
    let elapsed = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    Some(min.saturating_sub(elapsed) + Duration::from_millis(100))
}

/// `controller.IsPodActive`: not finished and not being deleted.
pub(crate) fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

/// `helper.GetDeletionCostFromPodAnnotations`: invalid or missing costs count as 0.
pub(crate) fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// The floor of log2 of the age in nanoseconds (upstream `logarithmicRankDiff` compares these);
/// a missing time counts as newest of all (`afterOrZero`).
fn age_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else { return -1 };
    let d = now.as_nanosecond() - t.as_nanosecond();
    // floor(log2(d)) for a positive d: the index of its highest set bit.
    if d <= 0 { 0 } else { i64::from(127 - d.leading_zeros()) }
}

/// The deletion key of a pod: pods with smaller keys are deleted first.
type DeletionKey =
    (bool, u8, bool, i32, std::cmp::Reverse<usize>, i64, std::cmp::Reverse<i32>, i64, String);

/// Upstream `ActivePodsWithRanks.Less` as a sort key:
/// 1. unassigned before assigned; 2. Pending, Unknown, Running; 3. not ready before ready;
/// 4. lower pod-deletion-cost first; 5. more related pods on the same node first;
/// 6. ready for less time first (logarithmic buckets); 7. more restarts first;
/// 8. newer first (logarithmic buckets); then by UID.
///
/// Upstream's `Less` breaks ties within one bucket of rule 6 or 8 by UID at once, which is
/// not a total order when some pods' times are equal (Go's sort tolerates that, Rust's sort
/// may panic on it); as a key, the UID comes last instead.
fn deletion_key(p: &Pod, rank: usize, now: Timestamp) -> DeletionKey {
    let ready = is_ready(p);
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        !node_name(p).is_empty(),
        phase_ordinal(p),
        ready,
        deletion_cost(p),
        std::cmp::Reverse(rank),
        if ready { age_bucket(ready_since(p), now) } else { 0 },
        std::cmp::Reverse(max_restarts(p)),
        age_bucket(created, now),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Sorts `pods` so that the ones to delete first come first (upstream `getPodsToDelete`).
/// `related` are the active pods of the same owner family (all ReplicaSets of the
/// Deployment): a pod's rank is how many of them share its node.
pub(crate) fn sort_for_deletion(
    pods: &mut [std::sync::Arc<Pod>],
    related: &[std::sync::Arc<Pod>],
    now: Timestamp,
) {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node_name(p)).or_default() += 1;
    }
    pods.sort_by_cached_key(|p| {
        deletion_key(p, on_node.get(node_name(p)).copied().unwrap_or(0), now)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::sync::Arc;

    fn pod(
        name: &str,
        node: &str,
        phase: &str,
        ready: bool,
        cost: Option<i32>,
        age_s: i64,
    ) -> Arc<Pod> {
        let now = Timestamp::now();
        let created = now - k8s_openapi::jiff::SignedDuration::from_secs(age_s);
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(created)),
                annotations: cost.map(|c| [(POD_DELETION_COST.to_owned(), c.to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_owned()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(created)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn order(mut pods: Vec<Arc<Pod>>) -> Vec<String> {
        let related = pods.clone();
        sort_for_deletion(&mut pods, &related, Timestamp::now());
        pods.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect()
    }

    #[test]
    fn deletion_order_follows_upstream() {
        let pods = vec![
            pod("running-ready-old", "n1", "Running", true, None, 10_000),
            pod("running-ready-cheap", "n1", "Running", true, Some(-5), 10_000),
            pod("running-not-ready", "n1", "Running", false, None, 10_000),
            pod("pending", "n1", "Pending", false, None, 10_000),
            pod("unassigned", "", "Pending", false, None, 10_000),
            pod("running-ready-new", "n2", "Running", true, None, 1),
            pod("running-ready-expensive", "n1", "Running", true, Some(100), 1),
        ];
        assert_eq!(
            order(pods),
            [
                "unassigned",
                "pending",
                "running-not-ready",
                "running-ready-cheap",
                // Same cost: three pods on n1 outrank the one on n2.
                "running-ready-old",
                "running-ready-new",
                "running-ready-expensive",
            ]
        );
    }

    /// Regression: upstream's `Less` is not a total order when ready times tie, and Rust's
    /// sort panicked on it ("comparison function does not correctly implement a total
    /// order") while a ReplicaSet scaled down 118 pods.
    #[test]
    fn sorting_many_pods_with_tied_times_is_a_total_order() {
        let mut pods: Vec<Arc<Pod>> = (0..200)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("n{}", i % 3),
                    "Running",
                    true,
                    None,
                    1000 + (i % 4) * 300,
                )
            })
            .collect();
        let related = pods.clone();
        sort_for_deletion(&mut pods, &related, Timestamp::now());
        assert_eq!(pods.len(), 200);
    }

    #[test]
    fn among_equals_the_pod_ready_for_less_time_goes_first() {
        let pods = vec![
            pod("old", "n1", "Running", true, None, 100_000),
            pod("new", "n2", "Running", true, None, 5),
        ];
        assert_eq!(order(pods), ["new", "old"]);
    }
}
