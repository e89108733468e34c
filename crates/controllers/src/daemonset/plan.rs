//! The DaemonSet's decisions as pure functions of nodes, pods and the spec: which nodes get a
//! pod and which pods go (upstream `manage` / `podsShouldBeOnNode`), which pods a rolling
//! update replaces now (`rollingUpdate` with and without `maxSurge`), OpenKruise's node filter
//! for `partition` and the node-label `selector` (`filterDaemonPodsNodeToUpdate`), and the
//! status counts (`updateDaemonSetStatus`). Sources: kubernetes `pkg/controller/daemon`
//! (`daemon_controller.go`, `update.go`) and openkruise `pkg/controller/daemonset`
//! (`daemonset_update.go`).
//!
//! Deliberate differences: nodes are visited in a fixed order (upstream ranges over a Go map,
//! so its choice among equal candidates is random); pods on nodes that no longer exist are
//! deleted here (upstream leaves scheduled ones to the pod garbage collector, which Kinetic
//! does not run).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, INPLACE_UPDATE_READY_CONDITION, LifecycleState,
};
use kinetic_machinery::selector::LabelSelector as Selector;
use kinetic_rollout::pod::{condition, in_state, is_ready, label, ready_since};

/// What the decisions need of a Node.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The daemon pod should run here (new pods are created).
    pub should_run: bool,
    /// A daemon pod already here may stay.
    pub should_continue: bool,
}

/// The daemon pods of one DaemonSet by the node they are for.
pub type PodsByNode<'a> = BTreeMap<String, Vec<&'a Pod>>;

/// Upstream's `podutil.IsPodAvailable`, with the in-place gate: Ready (and
/// `InPlaceUpdateReady` not False) for at least `min_ready_seconds`.
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(p)
        || condition(p, INPLACE_UPDATE_READY_CONDITION).is_some_and(|c| c.status != "True")
    {
        return false;
    }
    min_ready_seconds <= 0
        || ready_since(p).is_some_and(|since| {
            since
                .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
                .is_ok_and(|t| t <= now)
        })
}

/// Whether `p` is at the revision with hash `hash` (upstream's `IsPodUpdated` without the
/// deprecated template-generation annotation).
pub fn is_updated(p: &Pod, hash: &str) -> bool {
    label(p, CONTROLLER_REVISION_HASH_LABEL) == Some(hash)
}

/// OpenKruise's preDelete state: the pod waits for its hook before it is deleted.
pub fn is_pre_deleting(p: &Pod) -> bool {
    in_state(p, LifecycleState::PreparingDelete)
}

fn is_deleting(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// `podByCreationTimestampAndPhase`: scheduled pods first, then older, then by name.
fn oldest_first(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        scheduled(b)
            .cmp(&scheduled(a))
            .then_with(|| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// What [`manage`] decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ManagePlan {
    /// Nodes that need a daemon pod.
    pub create_on: Vec<String>,
    /// Pods to delete (failed or succeeded ones, extra ones, ones on nodes they must leave,
    /// ones past their preDelete hook).
    pub delete: Vec<String>,
}

/// Upstream's `manage`: for each node, create the missing daemon pod, delete failed and
/// surplus ones, and delete all on nodes that may no longer run it; pods for nodes that do
/// not exist are deleted. With `surge`, a node may hold the oldest pod of the current revision
/// and the oldest of an older one, until the new one is available or the old one not ready.
pub fn manage(
    nodes: &[NodeView],
    by_node: &PodsByNode<'_>,
    hash: &str,
    surge: bool,
    min_ready_seconds: i32,
    now: Timestamp,
) -> ManagePlan {
    let mut plan = ManagePlan::default();
    for (node, pods) in by_node {
        if !nodes.iter().any(|n| &n.name == node) {
            plan.delete.extend(pods.iter().filter(|p| !is_deleting(p)).map(|p| name(p)));
        }
    }
    for n in nodes {
        let pods: &[&Pod] = by_node.get(&n.name).map(Vec::as_slice).unwrap_or_default();
        if n.should_run && pods.is_empty() {
            plan.create_on.push(n.name.clone());
            continue;
        }
        if n.should_run {
            let mut running = Vec::new();
            for p in pods.iter().copied().filter(|p| !is_deleting(p)) {
                match kinetic_rollout::pod::phase(p) {
                    "Failed" | "Succeeded" => plan.delete.push(name(p)),
                    // The controller deletes it once its hook is gone.
                    _ if is_pre_deleting(p) => plan.delete.push(name(p)),
                    _ => running.push(p),
                }
            }
            oldest_first(&mut running);
            if !surge {
                plan.delete.extend(running.iter().skip(1).map(|p| name(p)));
                continue;
            }
            if running.is_empty() {
                plan.create_on.push(n.name.clone());
                continue;
            }
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in running {
                let slot = if is_updated(p, hash) { &mut oldest_new } else { &mut oldest_old };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push(name(p));
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                && (!is_ready(old) || is_available(new, min_ready_seconds, now))
            {
                plan.delete.push(name(old));
            }
        } else if !n.should_continue {
            plan.delete.extend(pods.iter().filter(|p| !is_deleting(p)).map(|p| name(p)));
        }
    }
    plan
}

/// The node's pod at the current revision and its older one (`findUpdatedPodsOnNode`);
/// `None` when it has more than one of either (the manage step cleans that up first).
pub fn updated_and_old<'a>(
    pods: &[&'a Pod],
    hash: &str,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().copied().filter(|p| !is_deleting(p)) {
        let slot = if is_updated(p, hash) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

fn nil_or_pre_deleting(p: Option<&Pod>) -> bool {
    p.is_none_or(is_pre_deleting)
}

/// The update limits resolved for this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_surge: i32,
    pub max_unavailable: i32,
    /// Kruise: how many nodes keep the old revision.
    pub partition: i32,
}

/// OpenKruise's `filterDaemonPodsNodeToUpdate`: the nodes the rolling update may touch, in
/// the order it considers them. Nodes are taken in reverse name order: first those already
/// updated (or with extra pods), then those between pods, then those with an old pod (only
/// those whose labels match `selector`, when one is set); the list is cut to
/// `nodes - partition`, so `partition` nodes keep their old pod.
pub fn nodes_to_update(
    nodes: &[NodeView],
    by_node: &PodsByNode<'_>,
    hash: &str,
    selector: Option<&Selector>,
    partition: i32,
) -> Vec<String> {
    let mut all: Vec<&String> =
        by_node.keys().filter(|n| nodes.iter().any(|x| &x.name == *n)).collect();
    for n in nodes.iter().filter(|n| n.should_run) {
        if !by_node.contains_key(&n.name) {
            all.push(&n.name);
        }
    }
    all.sort();
    all.dedup();
    let (mut updated, mut updating, mut chosen) = (Vec::new(), Vec::new(), Vec::new());
    for node in all.iter().rev() {
        let pods: &[&Pod] = by_node.get(*node).map(Vec::as_slice).unwrap_or_default();
        match updated_and_old(pods, hash) {
            None | Some((Some(_), _)) => updated.push((*node).clone()),
            Some((None, old)) if nil_or_pre_deleting(old) => updating.push((*node).clone()),
            Some(_) => {
                let labels = nodes.iter().find(|n| &n.name == *node).map(|n| &n.labels);
                let selected = selector.is_none_or(|s| {
                    let l: serde_json::Map<String, serde_json::Value> = labels
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect();
                    s.matches(Some(&l))
                });
                if selected {
                    chosen.push((*node).clone());
                }
            }
        }
    }
    let mut sorted = updated;
    sorted.append(&mut updating);
    sorted.append(&mut chosen);
    let max = i64::try_from(all.len()).unwrap_or(i64::MAX) - i64::from(partition);
    sorted.truncate(usize::try_from(max.max(0)).unwrap_or(0));
    sorted
}

/// What [`rolling_update`] decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollingPlan {
    /// Old pods to replace now: updated in place when the strategy and the change allow it,
    /// else deleted (the manage step then creates the new pod).
    pub replace: Vec<String>,
    /// Surge: nodes that get a new pod beside their old one.
    pub create_on: Vec<String>,
    /// Surge: old pods whose new pod is available.
    pub delete: Vec<String>,
}

/// Upstream's `rollingUpdate` over the nodes of [`nodes_to_update`] (in that order).
///
/// Without surge, old pods are replaced while the unavailable pods of those nodes stay within
/// `max_unavailable` (an old pod that is not available may always be replaced; a node without
/// a pod, or whose pods are all being deleted, counts as unavailable). With surge, a node with
/// an available old pod gets a new pod beside it while at most `max_surge` such new pods are
/// not yet available, and the old pod goes once the new one is available.
pub fn rolling_update(
    order: &[String],
    by_node: &PodsByNode<'_>,
    hash: &str,
    limits: Limits,
    min_ready_seconds: i32,
    now: Timestamp,
) -> RollingPlan {
    let mut plan = RollingPlan::default();
    let available = |p: &Pod| is_available(p, min_ready_seconds, now);
    if limits.max_surge == 0 {
        let mut unavailable = 0;
        let (mut allowed, mut candidates) = (Vec::new(), Vec::new());
        for node in order {
            let pods: &[&Pod] = by_node.get(node).map(Vec::as_slice).unwrap_or_default();
            let Some((new, old)) = updated_and_old(pods, hash) else {
                unavailable += 1;
                continue;
            };
            if nil_or_pre_deleting(old) == nil_or_pre_deleting(new) {
                unavailable += 1;
                continue;
            }
            match (new, old) {
                (Some(n), _) => {
                    if !available(n) {
                        unavailable += 1;
                    }
                    if is_pre_deleting(n) {
                        unavailable += 1;
                    }
                }
                (None, Some(o)) if !available(o) => allowed.push(name(o)),
                (None, Some(_)) if unavailable >= limits.max_unavailable => {}
                (None, Some(o)) => candidates.push(name(o)),
                (None, None) => {}
            }
        }
        let room = usize::try_from((limits.max_unavailable - unavailable).max(0)).unwrap_or(0);
        plan.replace = allowed;
        plan.replace.extend(candidates.into_iter().take(room));
        return plan;
    }
    let mut surging = 0;
    let (mut allowed, mut candidates) = (Vec::new(), Vec::new());
    for node in order {
        let pods: &[&Pod] = by_node.get(node).map(Vec::as_slice).unwrap_or_default();
        let Some((new, old)) = updated_and_old(pods, hash) else {
            surging += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (_, Some(o)) if is_pre_deleting(o) => {}
            (None, Some(o)) if !available(o) => allowed.push(node.clone()),
            (None, Some(_)) if surging >= limits.max_surge => {}
            (None, Some(_)) => candidates.push(node.clone()),
            (Some(n), Some(o)) => {
                if !available(n) || is_pre_deleting(n) {
                    surging += 1;
                } else {
                    plan.delete.push(name(o));
                }
            }
        }
    }
    let room = usize::try_from((limits.max_surge - surging).max(0)).unwrap_or(0);
    plan.create_on = allowed;
    plan.create_on.extend(candidates.into_iter().take(room));
    plan
}

/// The status counts (`updateDaemonSetStatus`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
}

/// For each node that should run the pod: whether it has one (current), and whether its
/// oldest pod is ready, available and updated; nodes with pods that should not run it are
/// misscheduled.
pub fn counts(
    nodes: &[NodeView],
    by_node: &PodsByNode<'_>,
    hash: &str,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for n in nodes {
        let mut pods: Vec<&Pod> = by_node.get(&n.name).cloned().unwrap_or_default();
        if n.should_run {
            c.desired += 1;
            if pods.is_empty() {
                continue;
            }
            c.current += 1;
            oldest_first(&mut pods);
            let p = pods[0];
            if is_ready(p) {
                c.ready += 1;
                if is_available(p, min_ready_seconds, now) {
                    c.available += 1;
                }
            }
            if is_updated(p, hash) {
                c.updated += 1;
            }
        } else if !pods.is_empty() {
            c.misscheduled += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests;
