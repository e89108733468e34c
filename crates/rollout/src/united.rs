//! UnitedDeployment's decisions as pure functions: how many replicas each subset gets, which
//! partition it gets, and whether an Adaptive subset is unschedulable. A port of OpenKruise's
//! `pkg/controller/uniteddeployment/allocator.go`, `calcNextPartitions`,
//! `manageUnschedulableStatusForExistingSubset` and `ParseSubsetReplicas` (v1.9); the tests
//! are upstream's `allocator_test.go` cases.
//!
//! Two allocators, chosen as upstream's `NewReplicaAllocator` does:
//! - **specific** (no subset has `minReplicas`/`maxReplicas`): subsets with `replicas` (fixed or
//!   a percentage of `spec.replicas`, rounded half up) get it; the rest is divided evenly over
//!   the others, the remainder going to the subsets that have the most replicas now (ties by
//!   name), so scaling moves as few pods as possible;
//! - **elastic**: every subset's `minReplicas` first, in subset order, then up to each
//!   `maxReplicas`, in subset order; scaling down therefore empties the last subsets first.
//!   With the Adaptive strategy an unschedulable subset is capped at the pods it runs (its
//!   pods Pending past `rescheduleCriticalSeconds` move to the next subsets), and a schedulable
//!   subset keeps at least the pods it runs, so healthy pods are not deleted to rebalance.
//!   As upstream, Adaptive applies to the elastic allocator only.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::uniteddeployment::{ScheduleStrategy, UnitedDeploymentSpec};

/// Why replicas could not be allocated (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(
        "specified subsets' replica ({specified}) is greater than UnitedDeployment replica ({replicas})"
    )]
    TooMany { specified: i32, replicas: i32 },
    #[error(
        "specified subsets' replica ({specified}) is less than UnitedDeployment replica ({replicas})"
    )]
    TooFew { specified: i32, replicas: i32 },
    #[error("all subsets must be specified when UnitedDeployment replica is unspecified")]
    Unspecified,
    #[error("subset[{index}].maxReplicas must be more than or equal to minReplicas")]
    MinAboveMax { index: usize },
}

/// What the allocator knows of an existing subset workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubsetState {
    /// The workload's `spec.replicas`.
    pub spec_replicas: i32,
    /// The workload's `status.replicas`.
    pub status_replicas: i32,
    /// Pods Pending past `rescheduleCriticalSeconds` (Adaptive only).
    pub pending_pods: i32,
    /// The subset is unschedulable (Adaptive only).
    pub unschedulable: bool,
}

/// `ParseSubsetReplicas`: a subset's `replicas` (or min/max) as a number; a percentage of
/// `ud_replicas` (-1 when `spec.replicas` is unset) rounded half up.
///
/// # Errors
/// Upstream's message: a negative int, a percentage without `spec.replicas`, a string that is
/// not `N%`, or a percentage outside 0..=100.
pub fn parse_subset_replicas(ud_replicas: i32, v: &IntOrString) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) if *n < 0 => {
            Err(format!("subset replicas ({n}) should not be less than 0"))
        }
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            if ud_replicas < 0 {
                return Err(format!(
                    "subsetReplicas ({s}) should not be string when unitedDeployment replicas is empty"
                ));
            }
            let Some(num) = s.strip_suffix('%') else {
                return Err(format!(
                    "subset replicas ({s}) only support integer value or percentage value with a suffix '%'"
                ));
            };
            let pct: i64 = num.parse().map_err(|e| {
                format!("subset replicas ({s}) should be correct percentage integer: {e}")
            })?;
            if !(0..=100).contains(&pct) {
                return Err(format!("subset replicas ({s}) should be in range [0, 100]"));
            }
            // round(x) = floor(x + 0.5), in integers.
            let scaled = (i64::from(ud_replicas) * pct * 2 + 100).div_euclid(200);
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

/// The replicas of every subset of `spec`, given the existing subsets by name.
///
/// # Errors
/// The specified replicas cannot add up to `spec.replicas`, or a subset's min exceeds its max.
pub fn allocate(
    spec: &UnitedDeploymentSpec,
    existing: &BTreeMap<String, SubsetState>,
) -> Result<BTreeMap<String, i32>, AllocError> {
    let subsets = &spec.topology.subsets;
    if subsets.iter().any(|s| s.min_replicas.is_some() || s.max_replicas.is_some()) {
        let bounds: Vec<Bounds> = subsets
            .iter()
            .map(|s| Bounds {
                name: s.name.clone(),
                min: s.min_replicas.clone(),
                max: s.max_replicas.clone(),
            })
            .collect();
        return allocate_elastic(
            spec.replicas.unwrap_or(1),
            &bounds,
            &spec.topology.schedule_strategy,
            Some(existing),
        );
    }
    let replicas = spec.replicas.unwrap_or(-1);
    let infos: Vec<(String, i32)> = subsets
        .iter()
        .map(|s| (s.name.clone(), existing.get(&s.name).map_or(0, |e| e.spec_replicas)))
        .collect();
    let mut specified = BTreeMap::new();
    for s in subsets {
        if let Some(r) = &s.replicas
            && let Ok(n) = parse_subset_replicas(replicas, r)
        {
            specified.insert(s.name.clone(), n);
        }
    }
    Ok(allocate_specific(&infos, replicas, &specified)?.into_iter().collect())
}

/// Upstream's `specificAllocator.AllocateReplicas` over `(subset, current replicas)`: the
/// result sorted as upstream's `String()` prints it (by replicas, then name).
///
/// # Errors
/// [`AllocError::TooMany`], [`AllocError::TooFew`], [`AllocError::Unspecified`].
pub fn allocate_specific(
    infos: &[(String, i32)],
    replicas: i32,
    specified: &BTreeMap<String, i32>,
) -> Result<Vec<(String, i32)>, AllocError> {
    let mut sorted: Vec<(String, i32)> = infos.to_vec();
    sorted.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let sum: i32 = specified.values().sum();
    let count = sorted.iter().filter(|(n, _)| specified.contains_key(n)).count();
    if replicas != -1 {
        if sum > replicas {
            return Err(AllocError::TooMany { specified: sum, replicas });
        }
        if sum < replicas && count == sorted.len() {
            return Err(AllocError::TooFew { specified: sum, replicas });
        }
    } else if count != sorted.len() {
        return Err(AllocError::Unspecified);
    }
    let mut is_specified = vec![false; sorted.len()];
    for (i, (name, r)) in sorted.iter_mut().enumerate() {
        if let Some(n) = specified.get(name) {
            *r = *n;
            is_specified[i] = true;
        }
    }
    let left = sorted.len() - count;
    if left > 0 {
        let left_i32 = i32::try_from(left).unwrap_or(i32::MAX);
        let allocatable = replicas - sum;
        let average = allocatable / left_i32;
        let mut remainder = allocatable % left_i32;
        // From the end: the subsets with the most replicas now take the remainder.
        for i in (0..sorted.len()).rev() {
            if is_specified[i] {
                continue;
            }
            sorted[i].1 = if remainder > 0 {
                remainder -= 1;
                average + 1
            } else {
                average
            };
        }
    }
    sorted.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(sorted)
}

/// One subset's elastic bounds.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub name: String,
    pub min: Option<IntOrString>,
    pub max: Option<IntOrString>,
}

/// Upstream's `elasticAllocator.Alloc`; `existing` is `None` where upstream passes a nil map.
///
/// # Errors
/// [`AllocError::MinAboveMax`].
pub fn allocate_elastic(
    replicas: i32,
    subsets: &[Bounds],
    strategy: &ScheduleStrategy,
    existing: Option<&BTreeMap<String, SubsetState>>,
) -> Result<BTreeMap<String, i32>, AllocError> {
    let mut mins = Vec::with_capacity(subsets.len());
    let mut maxs = Vec::with_capacity(subsets.len());
    for (index, s) in subsets.iter().enumerate() {
        // Upstream ignores parse errors here (the value becomes 0); the webhook refuses them.
        let mut min = s.min.as_ref().map_or(0, |v| parse_subset_replicas(replicas, v).unwrap_or(0));
        let mut max =
            s.max.as_ref().map_or(i32::MAX, |v| parse_subset_replicas(replicas, v).unwrap_or(0));
        if strategy.is_adaptive() {
            let state = existing.and_then(|e| e.get(&s.name));
            let unschedulable = state.is_some_and(|st| st.unschedulable);
            let running = state.map_or(0, |st| st.status_replicas - st.pending_pods);
            if unschedulable && state.is_some() {
                // An unschedulable subset may shrink, never grow.
                min = min.min(running);
                max = max.min(running);
            }
            if !unschedulable && running > min {
                // Do not delete running pods to rebalance.
                min = running.min(max);
            }
        }
        if min > max {
            return Err(AllocError::MinAboveMax { index });
        }
        mins.push(min);
        maxs.push(max);
    }
    let mut out = BTreeMap::new();
    let mut allocated = 0i32;
    for (i, s) in subsets.iter().enumerate() {
        let add = mins[i].min(replicas - allocated).max(0);
        out.insert(s.name.clone(), add);
        allocated += add;
    }
    if allocated >= replicas {
        return Ok(out);
    }
    for (i, s) in subsets.iter().enumerate() {
        let add = maxs[i].saturating_sub(mins[i]).min(replicas - allocated).max(0);
        *out.entry(s.name.clone()).or_default() += add;
        allocated += add;
    }
    Ok(out)
}

/// `calcNextPartitions`: each subset's Manual partition (0 when unset, or when the update type
/// is not Manual), capped at the replicas it gets.
pub fn next_partitions(
    spec: &UnitedDeploymentSpec,
    replicas: &BTreeMap<String, i32>,
) -> BTreeMap<String, i32> {
    let manual = spec.update_strategy.type_.as_deref().is_none_or(|t| t == "Manual");
    let partitions = spec
        .update_strategy
        .manual_update
        .as_ref()
        .and_then(|m| m.partitions.as_ref())
        .filter(|_| manual);
    spec.topology
        .subsets
        .iter()
        .map(|s| {
            let mut p = partitions.and_then(|m| m.get(&s.name)).copied().unwrap_or(0);
            if let Some(r) = replicas.get(&s.name)
                && p > *r
            {
                p = *r;
            }
            (s.name.clone(), p)
        })
        .collect()
}

/// `GetTimeBeforePendingTimeout`: whether `pod` failed to schedule (Pending, no node,
/// `PodScheduled=False` with reason `Unschedulable`) and was created more than `timeout` ago;
/// else, for such a pod, how long until it will have been.
pub fn pending_timeout(pod: &Pod, timeout: Duration, now: Timestamp) -> (bool, Option<Duration>) {
    let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
    let status = pod.status.as_ref();
    if pod.metadata.deletion_timestamp.is_some()
        || status.and_then(|s| s.phase.as_deref()) != Some("Pending")
        || !spec_node.is_empty()
    {
        return (false, None);
    }
    let failed = status.and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    let Some(created) = pod.metadata.creation_timestamp.as_ref().map(|t| t.0) else {
        return (false, None);
    };
    if !failed {
        return (false, None);
    }
    let expect = created + jiff::SignedDuration::try_from(timeout).unwrap_or_default();
    if expect < now {
        (true, None)
    } else {
        (false, Duration::try_from(now.duration_until(expect)).ok())
    }
}

/// The `Schedulable` condition of a subset, as the controller keeps it in `subsetStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedulable {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub since: Timestamp,
}

/// What [`adaptive_subset`] concluded for one existing subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveVerdict {
    pub unschedulable: bool,
    pub pending_pods: i32,
    /// The condition to record (`None`: leave it as it is).
    pub condition: Option<Schedulable>,
    /// When to look again.
    pub requeue: Option<Duration>,
}

/// `manageUnschedulableStatusForExistingSubset`: an unschedulable subset stays so for
/// `unschedulableLastSeconds` after its condition turned False, then recovers; a subset with
/// pods Pending past `rescheduleCriticalSeconds` becomes unschedulable.
pub fn adaptive_subset(
    prev: Option<&Schedulable>,
    ready: i32,
    replicas: i32,
    pods: &[&Pod],
    strategy: &ScheduleStrategy,
    now: Timestamp,
) -> AdaptiveVerdict {
    let last =
        Duration::from_secs(u64::try_from(strategy.unschedulable_last_seconds()).unwrap_or(0));
    let critical =
        Duration::from_secs(u64::try_from(strategy.reschedule_critical_seconds()).unwrap_or(0));
    let mut v =
        AdaptiveVerdict { unschedulable: false, pending_pods: 0, condition: None, requeue: None };
    let mut current = prev.cloned();
    if let Some(c) = prev.filter(|c| !c.status) {
        let recover = c.since + jiff::SignedDuration::try_from(last).unwrap_or_default();
        if now < recover {
            v.unschedulable = true;
            v.requeue = Duration::try_from(now.duration_until(recover)).ok();
        } else {
            let cond = Schedulable {
                status: true,
                reason: "recover",
                message: format!("unschedulable subset recovered after {} seconds", last.as_secs()),
                since: now,
            };
            current = Some(cond.clone());
            v.condition = Some(cond);
        }
    }
    if ready < replicas {
        for pod in pods {
            let (timed_out, after) = pending_timeout(pod, critical, now);
            if timed_out {
                v.pending_pods += 1;
            }
            if let Some(a) = after {
                v.requeue = Some(v.requeue.map_or(a, |r| r.min(a)));
            }
        }
        if v.pending_pods > 0 {
            v.unschedulable = true;
            // SetCondition keeps the transition time when neither status nor reason changed.
            let unchanged = current.as_ref().is_some_and(|c| !c.status && c.reason == "reschedule");
            if !unchanged {
                v.condition = Some(Schedulable {
                    status: false,
                    reason: "reschedule",
                    message: "timeout pending pods found".to_owned(),
                    since: now,
                });
            }
            v.requeue = Some(v.requeue.map_or(last, |r| r.min(last)));
        }
    }
    v
}

pub mod validation;

#[cfg(test)]
mod tests;
