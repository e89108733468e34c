//! Pod predicates and the deletion order of upstream's `ActivePodsWithRanks`
//! (`pkg/controller/controller_utils.go`) with the `PodDeletionCost` and
//! `LogarithmicScaleDown` features on (their default since 1.22).

use std::cmp::Ordering;
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

/// `podutil.IsPodReady`: the `Ready` condition is `True`.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
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

/// `logarithmicRankDiff`: the difference of the floor(log2) of the two ages in nanoseconds.
fn log_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    let rank = |t: Timestamp| {
        let d = now.as_nanosecond() - t.as_nanosecond();
        // floor(log2(d)) for a positive d: the index of its highest set bit.
        if d <= 0 { 0 } else { i64::from(127 - d.leading_zeros()) }
    };
    rank(t1) - rank(t2)
}

/// Compares two timestamps the way upstream does for ready and creation times: newer first
/// (a missing time counts as newest), bucketed logarithmically by age, ties broken by UID.
fn cmp_times(
    a: (Option<Timestamp>, &str),
    b: (Option<Timestamp>, &str),
    now: Timestamp,
) -> Option<Ordering> {
    let (ta, tb) = (a.0, b.0);
    if ta == tb {
        return None;
    }
    match (ta, tb) {
        (Some(ta), Some(tb)) => {
            let diff = log_rank_diff(ta, tb, now);
            if diff == 0 { Some(a.1.cmp(b.1)) } else { Some(diff.cmp(&0)) }
        }
        // `afterOrZero`: a zero time is "after" everything, so it goes first.
        (None, _) => Some(Ordering::Less),
        (_, None) => Some(Ordering::Greater),
    }
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
    let ranks: HashMap<String, usize> = pods
        .iter()
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            (uid, on_node.get(node_name(p)).copied().unwrap_or(0))
        })
        .collect();
    let rank =
        |p: &Pod| ranks.get(p.metadata.uid.as_deref().unwrap_or_default()).copied().unwrap_or(0);
    pods.sort_by(|a, b| deletion_order(a, b, rank(a), rank(b), now));
}

/// `ActivePodsWithRanks.Less` as an ordering: `Less` means `a` is deleted before `b`.
pub(crate) fn deletion_order(
    a: &Pod,
    b: &Pod,
    rank_a: usize,
    rank_b: usize,
    now: Timestamp,
) -> Ordering {
    let (na, nb) = (node_name(a), node_name(b));
    // 1. Unassigned < assigned.
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    // 2. Pending < Unknown < Running.
    let by_phase = phase_ordinal(a).cmp(&phase_ordinal(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    // 3. Not ready < ready.
    if is_ready(a) != is_ready(b) {
        return if is_ready(a) { Ordering::Greater } else { Ordering::Less };
    }
    // 4. Lower pod-deletion-cost < higher.
    let by_cost = deletion_cost(a).cmp(&deletion_cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    // 5. Doubled up (more related pods on the node) < not doubled up.
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    let (ua, ub) =
        (a.metadata.uid.as_deref().unwrap_or(""), b.metadata.uid.as_deref().unwrap_or(""));
    // 6. Ready for less time < ready for longer.
    if is_ready(a)
        && is_ready(b)
        && let Some(o) = cmp_times((ready_since(a), ua), (ready_since(b), ub), now)
    {
        return o;
    }
    // 7. More restarts < fewer restarts.
    let by_restarts = max_restarts(b).cmp(&max_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    // 8. Newer < older.
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    cmp_times((created(a), ua), (created(b), ub), now).unwrap_or(Ordering::Equal)
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

    #[test]
    fn among_equals_the_pod_ready_for_less_time_goes_first() {
        let pods = vec![
            pod("old", "n1", "Running", true, None, 100_000),
            pod("new", "n2", "Running", true, None, 5),
        ];
        assert_eq!(order(pods), ["new", "old"]);
    }
}
