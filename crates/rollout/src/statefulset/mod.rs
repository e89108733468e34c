//! StatefulSet's decisions as pure functions, for `apps/v1` StatefulSet and OpenKruise's
//! Advanced StatefulSet alike: which ordinals should run, what one pass creates or deletes, and
//! which pods a rolling update touches now.
//!
//! Ported from Kubernetes' `pkg/controller/statefulset/stateful_set_control.go`
//! (`updateStatefulSet`, `processReplica`, `processCondemned`, `updateStatefulSetAfterInvariantEstablished`)
//! and OpenKruise's `pkg/controller/statefulset/stateful_set_control.go`
//! (`rollingUpdateStatefulsetPods`, reserveOrdinals in `stateful_set_utils.go`).
//!
//! Indices and ordinals: the set runs `replicas` pods at the ordinals [`wanted_ordinals`] lists
//! (from `ordinals.start`, skipping `reserveOrdinals`). `partition` counts *positions* in that
//! list, which is upstream's meaning when nothing is reserved (position = ordinal − start) and
//! Kruise's when ordinals are reserved.
//!
//! Deliberate differences (each explained where it is implemented): `maxUnavailable` applies to
//! OrderedReady updates too (in ordinal order, several at a time), and a missing pod counts as
//! unavailable for the update budget.

pub mod validation;

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why a StatefulSet's fields cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `reserveOrdinals` entry is neither an integer nor a range `"a-b"` with `a <= b`.
    #[error("invalid reserveOrdinals entry {0:?}: must be an integer or a range like \"3-5\"")]
    ReserveOrdinal(String),
}

/// The ordinals in `reserveOrdinals` (integers, or inclusive ranges `"a-b"`, as Kruise ≥ 1.7
/// accepts them).
///
/// # Errors
/// [`Error::ReserveOrdinal`] for an entry that does not parse or a reversed range.
pub fn reserved_ordinals(list: &[IntOrString]) -> Result<BTreeSet<i32>, Error> {
    let mut out = BTreeSet::new();
    for item in list {
        match item {
            IntOrString::Int(i) => {
                out.insert(*i);
            }
            IntOrString::String(s) => {
                let bad = || Error::ReserveOrdinal(s.clone());
                if let Ok(i) = s.trim().parse::<i32>() {
                    out.insert(i);
                    continue;
                }
                let (a, b) = s.split_once('-').ok_or_else(bad)?;
                let a: i32 = a.trim().parse().map_err(|_| bad())?;
                let b: i32 = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 100_000 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
        }
    }
    Ok(out)
}

/// The ordinals the set should run, ascending: `replicas` of them from `start`, skipping the
/// reserved ones (Kruise's reserveOrdinals: the reserved ordinals are not counted in
/// `replicas`).
pub fn wanted_ordinals(replicas: i32, start: i32, reserved: &BTreeSet<i32>) -> Vec<i32> {
    let want = usize::try_from(replicas).unwrap_or(0);
    let mut out = Vec::with_capacity(want);
    let mut i = start;
    while out.len() < want {
        if !reserved.contains(&i) {
            out.push(i);
        }
        i = i.saturating_add(1);
        if i == i32::MAX {
            break;
        }
    }
    out
}

/// The ordinal of `pod` if it is named `{set}-{ordinal}` (upstream's `getParentNameAndOrdinal`).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// `maxUnavailable` of a rolling update: a number, or a percentage of `replicas` rounded down,
/// at least 1 (upstream `getStatefulSetMaxUnavailable`); 1 when unset.
///
/// # Errors
/// A string that is not a percentage.
pub fn max_unavailable(value: Option<&IntOrString>, replicas: i32) -> crate::Result<i32> {
    let Some(v) = value else { return Ok(1) };
    let n = crate::strategy::scaled_value(
        v,
        replicas,
        false,
        "spec.updateStrategy.rollingUpdate.maxUnavailable",
    )?;
    Ok(n.max(1))
}

/// What the controller knows about the pod at one ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodFacts {
    pub ordinal: i32,
    /// At the update revision.
    pub updated: bool,
    /// Running and Ready.
    pub ready: bool,
    /// Ready for `minReadySeconds` (and, under in-place update, `InPlaceUpdateReady`).
    pub available: bool,
    /// Has a deletion timestamp.
    pub terminating: bool,
    /// Phase Failed or Succeeded: upstream deletes it so it is recreated.
    pub finished: bool,
}

impl PodFacts {
    /// Upstream's `isHealthy` with minReadySeconds: available and not terminating.
    pub fn healthy(&self) -> bool {
        self.available && !self.terminating && !self.finished
    }
}

/// Pod management: `OrderedReady` or `Parallel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Management {
    OrderedReady,
    Parallel,
}

/// What one pass creates and deletes before any update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalePlan {
    /// Ordinals to create, ascending.
    pub create: Vec<i32>,
    /// Ordinals whose pod to delete: finished pods (recreated later) and condemned pods
    /// (beyond the wanted set), condemned highest first.
    pub delete: Vec<i32>,
    /// OrderedReady stopped at a pod that is not healthy yet: nothing after it was looked at.
    pub waiting: bool,
}

impl ScalePlan {
    /// Whether the pass should end after this plan (it acts or waits).
    pub fn acts(&self) -> bool {
        !self.create.is_empty() || !self.delete.is_empty()
    }
}

/// Upstream's first two loops of `updateStatefulSet`: make the pods at `wanted` exist and be
/// healthy, and remove the pods at other ordinals.
///
/// - OrderedReady: ascending over `wanted`, the first missing ordinal is created, the first
///   finished pod deleted, and a pod that is terminating or not healthy stops the pass; only
///   when every wanted pod is healthy is the highest condemned pod deleted, one at a time
///   (a terminating condemned pod is waited for).
/// - Parallel: every missing ordinal is created (at most `scale_budget` while pods are
///   unavailable: Kruise's `scaleStrategy.maxUnavailable`), every finished pod and every
///   condemned pod deleted at once.
pub fn plan_scale(
    wanted: &[i32],
    pods: &[PodFacts],
    management: Management,
    scale_max_unavailable: Option<i32>,
) -> ScalePlan {
    let at = |o: i32| pods.iter().find(|p| p.ordinal == o);
    let mut plan = ScalePlan::default();
    let mut condemned: Vec<&PodFacts> =
        pods.iter().filter(|p| !wanted.contains(&p.ordinal)).collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    match management {
        Management::OrderedReady => {
            for &o in wanted {
                match at(o) {
                    None => {
                        plan.create.push(o);
                        return plan;
                    }
                    Some(p) if p.finished && !p.terminating => {
                        plan.delete.push(o);
                        return plan;
                    }
                    Some(p) if !p.healthy() => {
                        plan.waiting = true;
                        return plan;
                    }
                    Some(_) => {}
                }
            }
            if let Some(p) = condemned.first() {
                if p.terminating {
                    plan.waiting = true;
                } else {
                    plan.delete.push(p.ordinal);
                }
            }
        }
        Management::Parallel => {
            let unavailable =
                wanted.iter().filter(|&&o| at(o).is_some_and(|p| !p.healthy())).count();
            let mut budget = scale_max_unavailable
                .map(|m| usize::try_from(m).unwrap_or(0).max(1).saturating_sub(unavailable));
            for &o in wanted {
                match at(o) {
                    None => {
                        if budget == Some(0) {
                            plan.waiting = true;
                            continue;
                        }
                        budget = budget.map(|b| b - 1);
                        plan.create.push(o);
                    }
                    Some(p) if p.finished && !p.terminating => plan.delete.push(o),
                    Some(_) => {}
                }
            }
            plan.delete.extend(condemned.iter().filter(|p| !p.terminating).map(|p| p.ordinal));
        }
    }
    plan
}

/// Whether a new pod at position `index` of the wanted ordinals gets the current revision
/// (below the partition of a RollingUpdate) rather than the update revision (upstream's
/// `newVersionedStatefulSetPod`). OnDelete creates every pod at the update revision.
pub fn creates_current(index: usize, rolling: bool, partition: i32) -> bool {
    rolling && i32::try_from(index).is_ok_and(|i| i < partition)
}

/// The rolling update of one pass: the ordinals to move to the update revision now, in the
/// order to do it (highest ordinal first).
///
/// `pods` are the pods at the wanted ordinals (`wanted`, ascending). Positions below
/// `partition` keep their revision. A pod is taken while the pods unavailable (not healthy,
/// or missing) stay below `max_unavailable`, counting each taken pod as unavailable from then
/// on, as Kruise's `rollingUpdateStatefulsetPods` does. With `max_unavailable` 1 this is
/// upstream apps/v1's one-at-a-time update that waits for every pod to be healthy. Kinetic
/// applies the budget to OrderedReady too (upstream Kruise only to Parallel): the order
/// stays highest ordinal first, with up to `max_unavailable` pods updating at once.
/// A terminating pod is not taken (it comes back at the update revision); unhealthy old pods
/// are taken first, at no cost.
pub fn plan_rolling_update(
    wanted: &[i32],
    pods: &[PodFacts],
    partition: i32,
    max_unavailable: i32,
) -> Vec<i32> {
    let at = |o: i32| pods.iter().find(|p| p.ordinal == o);
    let unavailable = wanted.iter().filter(|&&o| at(o).is_none_or(|p| !p.healthy())).count();
    let budget = usize::try_from(max_unavailable.max(1)).unwrap_or(1);
    let first = usize::try_from(partition.max(0)).unwrap_or(0);
    let candidates: Vec<&PodFacts> = wanted
        .iter()
        .enumerate()
        .rev()
        .take_while(|(index, _)| *index >= first)
        .filter_map(|(_, &o)| at(o))
        .filter(|p| !p.updated && !p.terminating)
        .collect();
    // Unhealthy old pods first: they are counted already, so updating them costs nothing
    // (a crash-looping old pod is replaced rather than blocking the rollout).
    let mut out: Vec<i32> = candidates.iter().filter(|p| !p.healthy()).map(|p| p.ordinal).collect();
    let room = budget.saturating_sub(unavailable);
    out.extend(candidates.iter().filter(|p| p.healthy()).take(room).map(|p| p.ordinal));
    out
}

/// The status counts of upstream's `computeReplicaStatus` over the owned pods that are not
/// terminating-and-condemned: replicas, ready, available, current, updated, updated ready,
/// updated available.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub current: i32,
    pub updated: i32,
    pub updated_ready: i32,
    pub updated_available: i32,
}

/// Whether the rollout finished (upstream's `completeRollingUpdate`): every one of `replicas`
/// pods is at the update revision and ready, so `currentRevision` becomes the update revision.
pub fn rollout_complete(c: &Counts, replicas: i32) -> bool {
    c.updated == replicas && c.replicas == replicas && c.ready == replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, s: &str) -> PodFacts {
        // u: updated, r: ready+available, t: terminating, f: finished, n: running not ready
        PodFacts {
            ordinal,
            updated: s.contains('u'),
            ready: s.contains('r'),
            available: s.contains('r'),
            terminating: s.contains('t'),
            finished: s.contains('f'),
        }
    }

    fn pods(spec: &str) -> Vec<PodFacts> {
        // "0:r 1:ur 3:-" → ordinals with their flags
        spec.split_whitespace()
            .map(|t| {
                let (o, f) = t.split_once(':').unwrap_or((t, ""));
                pod(o.parse().unwrap_or_default(), f)
            })
            .collect()
    }

    #[test]
    fn reserve_ordinals_take_ints_and_ranges() {
        let r = reserved_ordinals(&[IntOrString::Int(1), IntOrString::String("3-5".into())])
            .unwrap_or_default();
        assert_eq!(r.into_iter().collect::<Vec<_>>(), [1, 3, 4, 5]);
        assert!(reserved_ordinals(&[IntOrString::String("5-3".into())]).is_err());
        assert!(reserved_ordinals(&[IntOrString::String("x".into())]).is_err());
    }

    #[test]
    fn wanted_ordinals_skip_reserved_and_start_at_start() {
        let r = BTreeSet::from([1, 3]);
        assert_eq!(wanted_ordinals(3, 0, &r), [0, 2, 4]);
        assert_eq!(wanted_ordinals(3, 5, &BTreeSet::new()), [5, 6, 7]);
        assert_eq!(wanted_ordinals(0, 0, &r), Vec::<i32>::new());
    }

    #[test]
    fn ordinal_parsing_follows_upstream() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web2-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn max_unavailable_rounds_down_with_a_floor_of_one() {
        assert_eq!(max_unavailable(None, 5), Ok(1));
        assert_eq!(max_unavailable(Some(&IntOrString::String("50%".into())), 5), Ok(2));
        assert_eq!(max_unavailable(Some(&IntOrString::String("10%".into())), 5), Ok(1));
        assert_eq!(max_unavailable(Some(&IntOrString::Int(0)), 5), Ok(1));
        assert!(max_unavailable(Some(&IntOrString::String("x".into())), 5).is_err());
    }

    /// Upstream's `TestStatefulSetControlScaleUp`/`ScaleDown` and the OrderedReady/Parallel
    /// cases of `stateful_set_control_test.go`, as one table.
    #[test]
    fn scale_table() {
        use Management::{OrderedReady as O, Parallel as P};
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a [i32], &'a str, Management, Option<i32>, &'a [i32], &'a [i32], bool);
        let cases: &[Case<'_>] = &[
            // name, wanted, pods, policy, scale maxUnavailable, create, delete, waiting
            ("ordered creates the first missing", &[0, 1, 2], "", O, None, &[0], &[], false),
            ("ordered waits for a pod not ready", &[0, 1, 2], "0:n", O, None, &[], &[], true),
            ("ordered goes on once ready", &[0, 1, 2], "0:r", O, None, &[1], &[], false),
            ("ordered refills a hole first", &[0, 1, 2], "0:r 2:r", O, None, &[1], &[], false),
            ("ordered deletes a failed pod", &[0, 1], "0:rf 1:r", O, None, &[], &[0], false),
            ("ordered waits for a terminating pod", &[0, 1], "0:rt 1:r", O, None, &[], &[], true),
            (
                "ordered scales down the highest first",
                &[0],
                "0:r 1:r 2:r",
                O,
                None,
                &[],
                &[2],
                false,
            ),
            (
                "ordered scale-down waits on termination",
                &[0],
                "0:r 1:r 2:rt",
                O,
                None,
                &[],
                &[],
                true,
            ),
            (
                "ordered scale-down waits for health",
                &[0, 1],
                "0:r 1:n 2:r",
                O,
                None,
                &[],
                &[],
                true,
            ),
            ("parallel creates all", &[0, 1, 2], "1:n", P, None, &[0, 2], &[], false),
            (
                "parallel deletes all condemned",
                &[0],
                "0:n 1:r 2:r 3:rt",
                P,
                None,
                &[],
                &[2, 1],
                false,
            ),
            ("parallel scale budget", &[0, 1, 2, 3], "0:n", P, Some(2), &[1], &[], true),
            (
                "parallel budget with none unavailable",
                &[0, 1, 2],
                "",
                P,
                Some(2),
                &[0, 1],
                &[],
                true,
            ),
            ("start and reserved ordinals", &[5, 7], "5:r 6:r", O, None, &[7], &[], false),
        ];
        for (name, wanted, spec, policy, budget, create, delete, waiting) in cases {
            let plan = plan_scale(wanted, &pods(spec), *policy, *budget);
            assert_eq!(
                (plan.create.as_slice(), plan.delete.as_slice(), plan.waiting),
                (*create, *delete, *waiting),
                "{name}"
            );
        }
    }

    /// Upstream's rolling update cases (`TestStatefulSetControlRollingUpdate*`, partitions) and
    /// Kruise's maxUnavailable cases (`TestStatefulSetControlRollingUpdateWithMaxUnavailable`).
    #[test]
    fn rolling_update_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, i32, i32, &[i32])] = &[
            // name, pods at wanted 0..n, partition, maxUnavailable, update now
            ("one at a time, highest first", "0:r 1:r 2:r", 0, 1, &[2]),
            ("waits for the updated pod", "0:r 1:r 2:u", 0, 1, &[]),
            ("then the next", "0:r 1:r 2:ur", 0, 1, &[1]),
            ("partition keeps the low ones", "0:r 1:ur 2:ur", 1, 1, &[]),
            ("partition 2 updates only the top", "0:r 1:r 2:r", 2, 1, &[2]),
            ("maxUnavailable 2 takes two", "0:r 1:r 2:r 3:r", 0, 2, &[3, 2]),
            ("maxUnavailable counts pods in flight", "0:r 1:r 2:r 3:u", 0, 2, &[2]),
            ("an unhealthy old pod is updated without cost", "0:r 1:n 2:r", 0, 1, &[1]),
            ("an unhealthy pod blocks healthy ones", "0:r 1:r 2:un", 0, 1, &[]),
            ("a terminating pod is not taken", "0:r 1:r 2:rt", 0, 1, &[]),
            ("done", "0:ur 1:ur", 0, 1, &[]),
        ];
        for (name, spec, partition, max, want) in cases {
            let ps = pods(spec);
            let wanted: Vec<i32> = ps.iter().map(|p| p.ordinal).collect();
            assert_eq!(plan_rolling_update(&wanted, &ps, *partition, *max), *want, "{name}");
        }
        // A missing pod is unavailable: it blocks with maxUnavailable 1.
        assert_eq!(plan_rolling_update(&[0, 1, 2], &pods("0:r 1:r"), 0, 1), Vec::<i32>::new());
    }

    #[test]
    fn new_pods_below_the_partition_get_the_current_revision() {
        assert!(creates_current(0, true, 2));
        assert!(!creates_current(2, true, 2));
        assert!(!creates_current(0, false, 2));
    }

    #[test]
    fn rollout_completes_when_all_updated_and_ready() {
        let c = Counts { replicas: 3, ready: 3, updated: 3, ..Default::default() };
        assert!(rollout_complete(&c, 3));
        assert!(!rollout_complete(&Counts { ready: 2, ..c }, 3));
        assert!(!rollout_complete(&Counts { replicas: 4, ..c }, 3));
    }
}
