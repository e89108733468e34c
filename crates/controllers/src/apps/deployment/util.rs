//! Pure helpers of the Deployment controller (upstream
//! `pkg/controller/deployment/util/deployment_util.go` and `pkg/controller/controller_utils.go`):
//! fenceposts, the pod-template hash, revision and replica annotations, conditions, the orders
//! of ReplicaSets and proportional scaling.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::util::{name_of, normalize, now};

/// The label a ReplicaSet's selector, its template and its pods carry (upstream
/// `DefaultDeploymentUniqueLabelKey`).
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upstream's `maxRevHistoryLengthInChars`.
const MAX_REV_HISTORY_CHARS: usize = 2000;

// Condition reasons (upstream `deployment_util.go`).
pub const NEW_RS_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const PAUSED_REASON: &str = "DeploymentPaused";
pub const RESUMED_REASON: &str = "DeploymentResumed";
pub const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
    })
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs_status(rs).2
}

pub fn is_rolling(d: &Deployment) -> bool {
    strategy_type(d) == "RollingUpdate"
}

pub fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// `intstrutil.GetScaledValueFromIntOrPercent`: an int, or a percentage of `total` rounded up
/// or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let num = pct * i64::from(total);
            let v = if round_up { (num + 99).div_euclid(100) } else { num.div_euclid(100) };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// `ResolveFenceposts`: maxSurge rounds up, maxUnavailable rounds down, and both zero means
/// one unavailable pod is allowed (else a rollout could never progress).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let pct25 = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&pct25), desired, true).unwrap_or(0);
    let unavailable = scaled_value(max_unavailable.unwrap_or(&pct25), desired, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru =
        d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas(d),
    )
}

/// `MaxSurge`: 0 unless rolling.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// `MaxUnavailable`: 0 unless rolling with replicas, at most `replicas`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

/// `NewRSNewReplicas`: how many replicas the new ReplicaSet may have now.
///
/// Deviation from upstream, on purpose: a ReplicaSet counts for the larger of `spec.replicas`
/// and `status.replicas`, not for its spec alone. Upstream frees the surge room of an old
/// ReplicaSet as soon as its spec is lowered, so the new ReplicaSet's pod creation can land
/// before the old pod's deletion and the Deployment briefly has more than
/// `replicas + maxSurge` pods. Counting the pods the old ReplicaSet still reports keeps that
/// bound at every moment; the rollout waits one ReplicaSet status update longer per step.
pub fn new_rs_new_replicas(d: &Deployment, all: &[Arc<ReplicaSet>], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(|rs| rs_replicas(rs).max(rs_status(rs).0)).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs)).max(0);
    rs_replicas(new_rs) + up
}

/// The template as compared and hashed: its JSON with the pod-template-hash label removed and
/// empty values dropped (apimachinery's semantic equality treats nil and empty alike).
fn canonical_template(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    normalize(serde_json::to_value(&t).unwrap_or_default(), false)
}

/// `EqualIgnoreHash`: the templates are equal but for the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical_template(a) == canonical_template(b)
}

/// The pod-template hash of a template and the collision count.
///
/// Upstream's `controller.ComputeHash` is FNV-32a over the template dumped with `spew` (Go's
/// struct printer) followed by the collision count, rendered with `rand.SafeEncodeString`. Go's
/// spew output cannot be reproduced byte for byte from Rust, so we hash the canonical JSON of
/// the template instead (serde's field order of the k8s-openapi types, maps sorted, empty values
/// dropped and the pod-template-hash label removed, see [`equal_ignore_hash`]), then the
/// collision count as four little-endian bytes as upstream, and encode the decimal digits of
/// the sum with the same safe alphabet. The hashes therefore differ from a kube-controller-
/// manager's for the same template, but they are stable, and nothing but this controller
/// interprets them: a Deployment moved between the two gets one new ReplicaSet, nothing else.
pub fn compute_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(&canonical_template(t)).unwrap_or_default();
    let mut h = fnv1a32(0x811c_9dc5, &json);
    if let Some(c) = collision_count {
        h = fnv1a32(h, &c.to_le_bytes());
    }
    kinetic_rollout::revision::safe_encode(&h.to_string())
}

/// FNV-1a, 32 bits, continuing from `h` (Go's `fnv.New32a`, which upstream's `ComputeHash`
/// uses; Kruise's ControllerRevision names use FNV-1, [`kinetic_rollout::revision::fnv1_32`]).
fn fnv1a32(mut h: u32, data: &[u8]) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The revision of a ReplicaSet (0 when missing or invalid).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// `MaxRevision`.
pub fn max_revision(all: &[Arc<ReplicaSet>]) -> i64 {
    all.iter().map(|rs| revision(rs)).max().unwrap_or(0)
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS)?.parse().ok()
}

fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, MAX_REPLICAS)?.parse().ok()
}

fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// `copyDeploymentAnnotationsToReplicaSet`.
fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(k) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// `SetReplicasAnnotations`.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
    let (d, m) = (desired.to_string(), max.to_string());
    let mut changed = false;
    if ann.get(DESIRED_REPLICAS) != Some(&d) {
        ann.insert(DESIRED_REPLICAS.into(), d);
        changed = true;
    }
    if ann.get(MAX_REPLICAS) != Some(&m) {
        ann.insert(MAX_REPLICAS.into(), m);
        changed = true;
    }
    changed
}

/// `ReplicasAnnotationsNeedUpdate`.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, moves the revision up
/// (keeping the old one in `revision-history` when a ReplicaSet is reused by a rollback) and,
/// for a ReplicaSet about to be created, sets the replica annotations.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_annotations(d, rs);
    let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
    let old = ann.get(REVISION).cloned();
    let old_int = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    if old_int < new_revision {
        ann.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = ann.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                ann.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    parts = parts.split_off(start);
                    parts.push(&old);
                    let joined = parts.join(",");
                    ann.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists {
        let r = replicas(d);
        if set_replicas_annotations(rs, r, r + max_surge(d)) {
            changed = true;
        }
    }
    changed
}

/// Upstream `ReplicaSetsByCreationTimestamp`: older first, then by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b)).then_with(|| name_of(a).cmp(name_of(b)))
}

/// `ReplicaSetsByRevision`: lower revision first, then older.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a).cmp(&revision(b)).then_with(|| by_creation(a, b))
}

/// `ReplicaSetsBySizeNewer`: larger first, newer first among equals.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a))
}

/// `ReplicaSetsBySizeOlder`: larger first, older first among equals.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b))
}

/// `getReplicaSetFraction`.
fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = max_replicas_annotation(rs)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    // `integer.RoundToInt32` rounds half away from zero, like f64::round.
    #[allow(clippy::cast_possible_truncation)]
    let rounded = size.round() as i32;
    rounded - rs_replicas(rs)
}

/// `GetProportion`: this ReplicaSet's share of `to_add`, bounded by what is left.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

pub fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// `NewDeploymentCondition`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let t = now();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

/// `SetDeploymentCondition`: no change for the same status and reason; the transition time
/// stays when only the reason changes.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(s, &c.type_);
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|p| *p != i32::MAX)
}

fn status_counts(s: &DeploymentStatus) -> (i32, i32, i32, i32) {
    (
        s.replicas.unwrap_or(0),
        s.updated_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// `DeploymentComplete`.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let (total, updated, _, available) = status_counts(s);
    let want = replicas(d);
    updated == want
        && total == want
        && available == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, fewer old, more ready or more available replicas.
pub fn deployment_progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let (o_total, o_updated, o_ready, o_available) = status_counts(&old);
    let (n_total, n_updated, n_ready, n_available) = status_counts(s);
    n_updated > o_updated
        || (n_total - n_updated) < (o_total - o_updated)
        || n_ready > o_ready
        || n_available > o_available
}

/// `DeploymentTimedOut`.
pub fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus, now_ts: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else { return false };
    let Some(c) = condition(s, "Progressing") else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => false,
        Some(TIMED_OUT_REASON) => true,
        _ => c.last_update_time.as_ref().is_some_and(|from| {
            from.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(deadline)) < now_ts
        }),
    }
}

/// `IsSaturated`: the ReplicaSet has all the Deployment's replicas, all available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    desired_replicas_annotation(rs) == Some(replicas(d))
        && rs_replicas(rs) == replicas(d)
        && rs_available(rs) == replicas(d)
}

fn nonzero(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// `calculateStatus`.
pub fn calculate_status(
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        // Go's `omitempty`: zero counts are left out, as kube-controller-manager writes them.
        replicas: nonzero(all.iter().map(|rs| rs_status(rs).0).sum()),
        updated_replicas: nonzero(new_rs.map_or(0, |rs| rs_status(rs).0)),
        ready_replicas: nonzero(all.iter().map(|rs| rs_status(rs).1).sum()),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut s,
            new_condition(
                "Available",
                "True",
                MIN_AVAILABLE_REASON,
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut s,
            new_condition(
                "Available",
                "False",
                MIN_UNAVAILABLE_REASON,
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        // 25 % of 10: surge rounds up to 3, unavailable down to 2.
        assert_eq!(resolve_fenceposts(None, None, 10), (3, 2));
        // 25 % of 1: surge 1, unavailable 0.
        assert_eq!(resolve_fenceposts(None, None, 1), (1, 0));
        // Both zero: one unavailable pod is allowed.
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&pct("0%")), 4), (0, 1));
        assert_eq!(resolve_fenceposts(Some(&pct("50%")), Some(&IntOrString::Int(1)), 3), (2, 1));
        assert!(scaled_value(&pct("abc"), 10, true).is_err());
    }

    #[test]
    fn hash_ignores_the_hash_label_and_depends_on_the_collision_count() {
        let mut t = PodTemplateSpec::default();
        let a = compute_hash(&t, None);
        t.metadata.get_or_insert_with(Default::default).labels =
            Some([(POD_TEMPLATE_HASH.to_owned(), "x".to_owned())].into());
        assert_eq!(compute_hash(&t, None), a);
        assert_ne!(compute_hash(&t, Some(1)), a);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{a}");
    }

    /// The hash names existing ReplicaSets (`{deployment}-{hash}`) and labels their pods: a
    /// change of its bytes would make the next template change collide or look new. Pinned
    /// values, computed with the hash as it was in `kinetic-workloads`.
    #[test]
    fn pod_template_hash_values_are_stable() {
        let t: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        }))
        .unwrap();
        assert_eq!(compute_hash(&t, None), "5776d5bb59");
        assert_eq!(compute_hash(&t, Some(1)), "5b47f9c9c8");
    }

    #[test]
    fn revision_history_keeps_the_old_revision_on_reuse() {
        let d = Deployment::default();
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations = Some([(REVISION.to_owned(), "1".to_owned())].into());
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        assert_eq!(annotation(&rs, REVISION), Some("3"));
        assert_eq!(annotation(&rs, REVISION_HISTORY), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut rs, 5, true));
        assert_eq!(annotation(&rs, REVISION_HISTORY), Some("1,3"));
        assert!(!set_new_rs_annotations(&d, &mut rs, 5, true), "no change the second time");
    }
}
