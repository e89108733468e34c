//! Which pods to create and delete: the pure part of upstream's `Scale`
//! (`pkg/controller/cloneset/sync/cloneset_scale.go`) and its victim order
//! (`pkg/controller/cloneset/utils/pod_sorter.go`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::LifecycleState;
use kinetic_api::kruise::cloneset::INSTANCE_ID_LEN;
use rand::Rng;

use crate::diffs::{Diffs, SyncInput, calculate_diffs};
use crate::update::{later_or_unset_first, phase_ordinal};
use crate::{lifecycle, pod};

/// The alphabet of Kubernetes' `rand.String` and `rand.SafeEncodeString`: no vowels (no words)
/// and no easily confused characters.
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A new random instance id (`{cloneset}-{id}` pod names), 5 characters from [`ALPHANUMS`]
/// like Kubernetes' `rand.String(5)`.
pub fn new_instance_id(rng: &mut impl Rng) -> String {
    (0..INSTANCE_ID_LEN)
        .map(|_| char::from(ALPHANUMS[rng.random_range(0..ALPHANUMS.len())]))
        .collect()
}

/// Instance ids for `count` new pods (upstream's `getOrGenAvailableIDs`): first the ids of PVCs
/// whose pod is gone (so the new pod gets its volumes back), in sorted order, then fresh random
/// ids that no pod or PVC uses.
///
/// `pvc_instance_ids` are the `apps.kruise.io/cloneset-instance-id` labels of the CloneSet's
/// PVCs; pass none when `scaleStrategy.disablePVCReuse` is set.
pub fn available_instance_ids<'a>(
    count: usize,
    pods: &[Pod],
    pvc_instance_ids: impl IntoIterator<Item = &'a str>,
    rng: &mut impl Rng,
) -> Vec<String> {
    let mut existing: BTreeSet<String> = BTreeSet::new();
    let mut free: BTreeSet<String> = BTreeSet::new();
    for id in pvc_instance_ids.into_iter().filter(|id| !id.is_empty()) {
        existing.insert(id.to_owned());
        free.insert(id.to_owned());
    }
    for p in pods {
        if let Some(id) = pod::label(p, kinetic_api::kruise::CLONESET_INSTANCE_ID_LABEL) {
            existing.insert(id.to_owned());
            free.remove(id);
        }
    }
    let mut out: Vec<String> = free.into_iter().take(count).collect();
    while out.len() < count {
        let id = new_instance_id(rng);
        if existing.insert(id.clone()) {
            out.push(id);
        }
    }
    out
}

/// A pod's identity for rank maps: its UID, else its name.
fn key(p: &Pod) -> &str {
    p.metadata.uid.as_deref().or(p.metadata.name.as_deref()).unwrap_or("")
}

/// Upstream's `ActivePodsWithRanks` order for choosing scale-down victims; the pod that is
/// "less" is deleted first:
///
/// 1. unscheduled before scheduled;
/// 2. Pending, then Unknown, then Running;
/// 3. unavailable before available (when `available` is given), not ready before ready;
/// 4. lower `controller.kubernetes.io/pod-deletion-cost` first;
/// 5. higher spread rank first (more pods of the CloneSet on the same node or topology);
/// 6. of two ready pods, the more recently ready first;
/// 7. more container restarts first;
/// 8. newer (or without creation time) first.
pub fn victim_cmp(
    a: &Pod,
    b: &Pod,
    ranks: &HashMap<String, f64>,
    available: Option<&dyn Fn(&Pod) -> bool>,
) -> Ordering {
    let (na, nb) = (pod::node_name(a), pod::node_name(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let o = phase_ordinal(a).cmp(&phase_ordinal(b));
    if o != Ordering::Equal {
        return o;
    }
    if let Some(available) = available {
        let (aa, ab) = (available(a), available(b));
        if aa != ab {
            return if aa { Ordering::Greater } else { Ordering::Less };
        }
    }
    let (ra, rb) = (pod::is_ready(a), pod::is_ready(b));
    if ra != rb {
        return if ra { Ordering::Greater } else { Ordering::Less };
    }
    let o = pod::deletion_cost(a).cmp(&pod::deletion_cost(b));
    if o != Ordering::Equal {
        return o;
    }
    let (ka, kb) =
        (ranks.get(key(a)).copied().unwrap_or(0.0), ranks.get(key(b)).copied().unwrap_or(0.0));
    if ka != kb {
        return kb.partial_cmp(&ka).unwrap_or(Ordering::Equal);
    }
    if ra && rb {
        let o = later_or_unset_first(pod::ready_since(a), pod::ready_since(b));
        if o != Ordering::Equal {
            return o;
        }
    }
    let o = pod::max_restarts(b).cmp(&pod::max_restarts(a));
    if o != Ordering::Equal {
        return o;
    }
    later_or_unset_first(pod::created(a), pod::created(b))
}

/// Upstream's `sameNodeRanker`: on each node with several of the pods, all but the best pod (by
/// [`victim_cmp`] without ranks) get a rank, the worst the highest, so scale-down spreads the
/// remaining pods over nodes.
pub fn same_node_ranks(pods: &[&Pod]) -> HashMap<String, f64> {
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        let node = pod::node_name(p);
        if !node.is_empty() {
            by_node.entry(node).or_default().push(p);
        }
    }
    let none = HashMap::new();
    let mut ranks = HashMap::new();
    for mut on_node in by_node.into_values() {
        if on_node.len() <= 1 {
            continue;
        }
        on_node.sort_by(|a, b| victim_cmp(a, b, &none, None));
        on_node.pop();
        let n = on_node.len();
        for (i, p) in on_node.into_iter().enumerate() {
            ranks.insert(key(p).to_owned(), (n - i) as f64);
        }
    }
    ranks
}

/// Upstream's `spreadConstraintsRanker`, for a template with `topologySpreadConstraints`: per
/// constraint's topology key, pods are grouped by their node's value of that label, ordered
/// within each group (using [`same_node_ranks`] unless the key is the hostname), and ranked by
/// position, weighted by `ln(number of groups + 2)`. `node_labels` maps node names to their
/// labels; pods on nodes missing from it are not ranked.
pub fn spread_ranks(
    pods: &[&Pod],
    topology_keys: &[&str],
    node_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> HashMap<String, f64> {
    let same_node = same_node_ranks(pods);
    let none = HashMap::new();
    let mut ranks: HashMap<String, f64> = HashMap::new();
    for topology_key in topology_keys {
        let mut groups: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for p in pods {
            let value = node_labels.get(pod::node_name(p)).and_then(|l| l.get(*topology_key));
            if let Some(value) = value {
                groups.entry(value.as_str()).or_default().push(p);
            }
        }
        let inner = if *topology_key == "kubernetes.io/hostname" { &none } else { &same_node };
        let weight = ((groups.len() + 2) as f64).ln();
        for mut group in groups.into_values() {
            group.sort_by(|a, b| victim_cmp(a, b, inner, None));
            let n = group.len();
            for (i, p) in group.into_iter().enumerate() {
                *ranks.entry(key(p).to_owned()).or_default() += (n - i) as f64 * weight;
            }
        }
    }
    ranks
}

/// Chooses `total` scale-down victims (upstream's `choosePodsToDelete`): `old_revision` of them
/// from the pods not at the update revision, the rest from the updated ones, each group ordered
/// by [`victim_cmp`] with spread ranks and CloneSet availability. `node_labels` enables the
/// topology ranker when the template has `topologySpreadConstraints`; without it the same-node
/// ranker is used.
pub fn choose_pods_to_delete<'p>(
    input: &SyncInput<'p>,
    total: i32,
    old_revision: i32,
    node_labels: Option<&BTreeMap<String, BTreeMap<String, String>>>,
) -> Vec<&'p Pod> {
    let (updated, not_updated): (Vec<&Pod>, Vec<&Pod>) =
        input.pods.iter().partition(|p| pod::matches_revision(p, input.update_revision));
    let topology_keys: Vec<&str> = input
        .cloneset
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .map(|cs| cs.iter().map(|c| c.topology_key.as_str()).collect())
        .unwrap_or_default();
    let available = |p: &Pod| input.is_available(p);
    let choose = |mut group: Vec<&'p Pod>, n: i32| -> Vec<&'p Pod> {
        let n = n.max(0) as usize;
        if n < group.len() {
            let ranks = match node_labels {
                Some(nodes) if !topology_keys.is_empty() => {
                    spread_ranks(&group, &topology_keys, nodes)
                }
                _ => same_node_ranks(&group),
            };
            group.sort_by(|a, b| victim_cmp(a, b, &ranks, Some(&available)));
        }
        group.truncate(n);
        group
    };
    if old_revision >= total {
        choose(not_updated, total)
    } else if old_revision > 0 {
        let mut out = choose(not_updated, old_revision);
        out.extend(choose(updated, total - old_revision));
        out
    } else {
        choose(updated, total)
    }
}

/// One pod to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDeletion {
    /// The pod's name.
    pub name: String,
    /// The CloneSet's preDelete hook holds the pod: set its lifecycle state to PreparingDelete
    /// (and `KruisePodReady` False if the hook says `markPodNotReady`) instead of deleting it.
    pub prepare_delete: bool,
}

/// The one thing the scale step does in this pass; upstream never combines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleAction {
    /// Nothing to create or delete.
    Nothing,
    /// Take these pods out of PreparingDelete (set lifecycle state PreparingNormal): replicas
    /// grew back while they waited for their preDelete hook.
    CancelPreparingDelete(Vec<String>),
    /// Create pods. Both counts may be 0 when `scaleStrategy.maxUnavailable` blocks creation
    /// (upstream then emits a `ScaleUpLimited` warning Event); the pass still ends here.
    Create {
        /// Pods to create from the current revision.
        current_revision: i32,
        /// Pods to create from the update revision.
        update_revision: i32,
    },
    /// Delete these pods (and the PVCs with their instance id), or move them to
    /// PreparingDelete.
    Delete(Vec<PodDeletion>),
}

/// What the scale step decided, and the diffs it decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePlan {
    /// The scale view of the diffs.
    pub diffs: Diffs,
    /// The action.
    pub action: ScaleAction,
}

/// The scale step (upstream's `Scale`), in upstream's order:
///
/// 1. pods in PreparingDelete that are no longer needed gone (replicas grew) go back to
///    PreparingNormal, unless a hook marks pods not ready;
/// 2. create pods if any are missing (old revision first, up to `scale_up_num_old_revision`);
/// 3. delete pods in PreparingDelete that the preDelete hook no longer holds;
/// 4. delete pods marked by podsToDelete or the specified-delete label (not-ready ones always,
///    ready ones within `delete_ready_limit`);
/// 5. otherwise, if there are too many pods and none is being deleted, choose victims
///    ([`choose_pods_to_delete`]) within `delete_ready_limit`.
///
/// Uses `input.options` as given; upstream's scale path counts PreparingUpdate pods as updated
/// when its `PreparingUpdateAsUpdate` gate is on.
pub fn plan_scale(
    input: &SyncInput<'_>,
    node_labels: Option<&BTreeMap<String, BTreeMap<String, String>>>,
) -> ScalePlan {
    let cs = input.cloneset;
    let lifecycle_spec = cs.spec.lifecycle.as_ref();
    let pre_delete_hook = lifecycle_spec.and_then(|l| l.pre_delete.as_ref());

    let specified: Vec<&Pod> = input.pods.iter().filter(|p| input.is_specified_delete(p)).collect();
    let pre_deleting: Vec<&Pod> =
        input.pods.iter().filter(|p| pod::in_state(p, LifecycleState::PreparingDelete)).collect();
    let num_to_delete = input
        .pods
        .iter()
        .filter(|p| {
            input.is_specified_delete(p) || pod::in_state(p, LifecycleState::PreparingDelete)
        })
        .count() as i32;

    let diffs = calculate_diffs(input);
    let plan = |action| ScalePlan { diffs, action };

    // 1. Regret deletions that waited on a hook while replicas grew back.
    if !lifecycle::marks_pod_not_ready(lifecycle_spec) {
        let mut missing = input.strategy.replicas - input.pods.len() as i32 + num_to_delete;
        let mut cancel = Vec::new();
        for p in &pre_deleting {
            if missing <= 0 {
                break;
            }
            if input.is_specified_delete(p) {
                continue;
            }
            cancel.push(pod::name(p).to_owned());
            missing -= 1;
        }
        if !cancel.is_empty() {
            return plan(ScaleAction::CancelPreparingDelete(cancel));
        }
    }

    // 2. Scale out.
    if diffs.scale_up_num > 0 {
        let total = diffs.scale_up_limit;
        let current = diffs.scale_up_num_old_revision.min(total);
        return plan(ScaleAction::Create {
            current_revision: current,
            update_revision: total - current,
        });
    }

    let deletion = |p: &Pod| PodDeletion {
        name: pod::name(p).to_owned(),
        prepare_delete: lifecycle::is_pod_hooked(pre_delete_hook, p),
    };

    // 3. Pods in PreparingDelete whose hook was released.
    let released: Vec<PodDeletion> = pre_deleting
        .iter()
        .filter(|p| !lifecycle::is_pod_hooked(pre_delete_hook, p))
        .map(|p| deletion(p))
        .collect();
    if !released.is_empty() {
        return plan(ScaleAction::Delete(released));
    }

    // 4. Specified deletes, ready pods within the limit.
    let mut ready_budget = diffs.delete_ready_limit;
    let mut within_budget = |p: &Pod| {
        if !input.is_ready(p) {
            true
        } else if ready_budget > 0 {
            ready_budget -= 1;
            true
        } else {
            false
        }
    };
    let specified: Vec<PodDeletion> = specified
        .into_iter()
        .filter(|p| !pod::in_state(p, LifecycleState::PreparingDelete))
        .filter(|p| within_budget(p))
        .map(deletion)
        .collect();
    if !specified.is_empty() {
        return plan(ScaleAction::Delete(specified));
    }

    // 5. Scale in, only when no deletion is under way.
    if diffs.scale_down_num > 0 && num_to_delete == 0 {
        let victims: Vec<PodDeletion> = choose_pods_to_delete(
            input,
            diffs.scale_down_num,
            diffs.scale_down_num_old_revision,
            node_labels,
        )
        .into_iter()
        .filter(|p| within_budget(p))
        .map(deletion)
        .collect();
        if !victims.is_empty() {
            return plan(ScaleAction::Delete(victims));
        }
    }
    plan(ScaleAction::Nothing)
}
