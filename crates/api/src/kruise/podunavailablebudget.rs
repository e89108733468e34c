//! OpenKruise's `PodUnavailableBudget` (`policy.kruise.io/v1alpha1`,
//! `apis/policy/v1alpha1/podunavailablebudget_types.go`): a PodDisruptionBudget that also
//! covers in-place updates and deletions, not only evictions. Upstream serves it in the
//! `policy.kruise.io` group (the manual's examples use that group), so Kinetic does too.
//!
//! Besides the wire types this module holds the budget's pure rules, shared by the API
//! server's admission (Kinetic's stand-in for Kruise's pod validating webhook) and the CloneSet
//! controller's in-place updater (upstream's `cloneset_update.go` asks the budget before it
//! starts an in-place update): which pods count as available, which operations a budget
//! protects, and `checkAndDecrement` (`pkg/control/pubcontrol/pub_control_utils.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of PodUnavailableBudget (not `apps.kruise.io`).
pub const GROUP: &str = "policy.kruise.io";
/// Annotation on a budget listing the operations it protects, comma-separated (`DELETE`,
/// `EVICT`, `UPDATE`); absent or empty protects all of them.
pub const PROTECT_OPERATIONS_ANNOTATION: &str = "pub.kruise.io/protect-operations";
/// Annotation on a pod (`"true"`) that its budget never checks.
pub const NO_PROTECT_ANNOTATION: &str = "pub.kruise.io/no-protect";
/// Annotation on a budget: the replica count to protect instead of the workload's.
pub const PROTECT_TOTAL_REPLICAS_ANNOTATION: &str = "pub.kruise.io/protect-total-replicas";
/// Upstream's `MaxUnavailablePodSize`: how many pods `disruptedPods` and `unavailablePods`
/// may hold together before every further operation is refused.
pub const MAX_UNAVAILABLE_POD_SIZE: usize = 2000;
/// Upstream's `DeletionTimeout`: a pod recorded in `disruptedPods` that is still not deleted
/// after this long counts again.
pub const DELETION_TIMEOUT_SECONDS: i64 = 120;
/// Upstream's `UpdatedDelayCheckTime`: a pod recorded in `unavailablePods` is looked at again
/// after this long (its in-place update may have finished).
pub const UPDATED_DELAY_CHECK_SECONDS: i64 = 10;
/// The name Kruise's pod validating webhook has, which its refusals carry.
pub const WEBHOOK_NAME: &str = "vpod.kb.io";

/// The desired state of a PodUnavailableBudget.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "policy.kruise.io",
    version = "v1alpha1",
    kind = "PodUnavailableBudget",
    namespaced,
    status = "PodUnavailableBudgetStatus",
    derive = "PartialEq",
    shortname = "pub",
    doc = "PodUnavailableBudget is the Schema for the podunavailablebudgets API",
    printcolumn(
        name = "Allowed",
        type_ = "integer",
        json_path = ".status.unavailableAllowed",
        description = "UnavailableAllowed number of pod unavailable that are currently allowed"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.currentAvailable",
        description = "CurrentAvailable current number of available pods"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredAvailable",
        description = "DesiredAvailable minimum desired number of available pods"
    ),
    printcolumn(
        name = "Total",
        type_ = "integer",
        json_path = ".status.totalReplicas",
        description = "TotalReplicas total number of pods counted by this unavailable budget"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodUnavailableBudgetSpec {
    /// Label query over the pods the budget covers; `targetRef` wins when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The workload whose pods the budget covers.
    #[serde(default, rename = "targetRef", skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetReference>,
    /// How many (or what share) of the pods may be unavailable; wins over `minAvailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// How many (or what share) of the pods must stay available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

/// The workload a budget protects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// The observed state of a PodUnavailableBudget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodUnavailableBudgetStatus {
    /// The generation the controller last computed the status from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods deleted or evicted through the budget, not yet seen gone by the controller.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disrupted_pods: BTreeMap<String, Time>,
    /// Pods updated in place through the budget, not yet seen available again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable_pods: BTreeMap<String, Time>,
    /// How many more pods may become unavailable now.
    #[serde(default)]
    pub unavailable_allowed: i32,
    /// How many covered pods are available.
    #[serde(default)]
    pub current_available: i32,
    /// How many covered pods must stay available.
    #[serde(default)]
    pub desired_available: i32,
    /// How many pods the budget counts.
    #[serde(default)]
    pub total_replicas: i32,
}

/// A pod operation a budget may protect (`PubOperation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Update,
    Delete,
    Evict,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Evict => "EVICT",
        }
    }
}

/// Why a budget refuses an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `unavailableAllowed` is 0 (or less).
    Exhausted,
    /// Too many recorded pods the controller has not confirmed yet.
    TooManyRecorded,
}

impl Refusal {
    /// Upstream's refusal as the API server answers it: the webhook's denial of a
    /// `Forbidden` error on the budget (`errors.NewForbidden(Resource("podunavailablebudget"),
    /// ...)`).
    pub fn message(self, budget: &str) -> String {
        let why = match self {
            Refusal::Exhausted => "pub unavailable allowed is negative",
            Refusal::TooManyRecorded => {
                "DisruptedPods and UnavailablePods map too big - too many unavailable not confirmed by PUB controller"
            }
        };
        format!(
            "admission webhook \"{WEBHOOK_NAME}\" denied the request: podunavailablebudget.{GROUP} \"{budget}\" is forbidden: {why}"
        )
    }
}

impl PodUnavailableBudget {
    /// `isNeedPubProtection`: whether the budget protects `op` (the protect-operations
    /// annotation; absent or empty protects every operation).
    pub fn protects(&self, op: Operation) -> bool {
        let ops =
            self.metadata.annotations.as_ref().and_then(|a| a.get(PROTECT_OPERATIONS_ANNOTATION));
        match ops.map(String::as_str) {
            None | Some("") => true,
            Some(list) => list.split(',').any(|o| o.trim() == op.as_str()),
        }
    }

    /// `isPodRecordedInPub`: the pod is already counted as unavailable.
    pub fn records(&self, pod: &str) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.disrupted_pods.contains_key(pod) || s.unavailable_pods.contains_key(pod)
        })
    }

    /// Whether the budget covers a pod with these labels whose workload (its controller, or
    /// the Deployment of its ReplicaSet) is `(group, kind, name)` (upstream's `GetPubForPod`):
    /// `targetRef` first; a selector otherwise, where an empty selector matches nothing.
    pub fn covers(
        &self,
        labels: &BTreeMap<String, String>,
        workload: Option<(&str, &str, &str)>,
    ) -> bool {
        if let Some(t) = &self.spec.target_ref {
            let group = t.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            return workload == Some((group, t.kind.as_str(), t.name.as_str()));
        }
        let Some(sel) = &self.spec.selector else { return false };
        let exprs = sel.match_expressions.as_deref().unwrap_or_default();
        let ml = sel.match_labels.as_ref();
        if exprs.is_empty() && ml.is_none_or(BTreeMap::is_empty) {
            return false;
        }
        let labels_ok = ml.into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
        labels_ok
            && exprs.iter().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                let got = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => got.is_some_and(|g| values.contains(g)),
                    "NotIn" => got.is_none_or(|g| !values.contains(g)),
                    "Exists" => got.is_some(),
                    "DoesNotExist" => got.is_none(),
                    _ => false,
                }
            })
    }
}

/// `checkAndDecrement`: takes one unavailable pod off the budget and records `pod` under
/// `now` (in `unavailablePods` for an update, `disruptedPods` otherwise).
///
/// # Errors
/// The budget allows no more unavailable pods, or holds too many unconfirmed ones.
pub fn check_and_decrement(
    status: &mut PodUnavailableBudgetStatus,
    pod: &str,
    op: Operation,
    now: Time,
) -> Result<(), Refusal> {
    if status.unavailable_allowed <= 0 {
        return Err(Refusal::Exhausted);
    }
    if status.disrupted_pods.len() + status.unavailable_pods.len() > MAX_UNAVAILABLE_POD_SIZE {
        return Err(Refusal::TooManyRecorded);
    }
    status.unavailable_allowed -= 1;
    let map = match op {
        Operation::Update => &mut status.unavailable_pods,
        Operation::Delete | Operation::Evict => &mut status.disrupted_pods,
    };
    map.insert(pod.to_owned(), now);
    Ok(())
}

/// `IsRunningAndReady`: the pod runs and its `Ready` condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    let Some(st) = pod.status.as_ref() else { return false };
    st.phase.as_deref() == Some("Running")
        && st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// `IsPodStateConsistent`, reduced to what Kinetic's node agent reports: every container of
/// the spec runs the image the spec names (an in-place update has not started or has
/// finished).
pub fn pod_consistent(pod: &Pod) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let Some(spec) = pod.spec.as_ref() else { return true };
    spec.containers.iter().all(|c| {
        statuses
            .into_iter()
            .flatten()
            .find(|s| s.name == c.name)
            .is_none_or(|s| c.image.as_deref().is_none_or(|i| i == s.image))
    })
}

/// Whether the budget counts `pod` as available: active, ready, consistent.
pub fn pod_available(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod_ready(pod) && pod_consistent(pod)
}

/// `intstr.GetScaledValueFromIntOrPercent`: an integer as is, a percentage of `total` rounded
/// up or down; `None` for a string that is not a percentage.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            let t = i64::from(total) * p;
            let v = if round_up { (t + 99).div_euclid(100) } else { t.div_euclid(100) };
            i32::try_from(v).ok()
        }
    }
}

/// `getDesiredAvailableCount`: with `maxUnavailable`, the expected count less it (rounded up,
/// not below 0); with `minAvailable`, it (a percentage rounded up); 0 with neither.
pub fn desired_available(spec: &PodUnavailableBudgetSpec, expected: i32) -> i32 {
    if let Some(m) = &spec.max_unavailable {
        return (expected - scaled(m, expected, true).unwrap_or(0)).max(0);
    }
    spec.min_available.as_ref().and_then(|m| scaled(m, expected, true)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Time {
        Time(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn check_and_decrement_follows_upstream() {
        let mut s = PodUnavailableBudgetStatus { unavailable_allowed: 1, ..Default::default() };
        assert_eq!(check_and_decrement(&mut s, "a", Operation::Update, t()), Ok(()));
        assert_eq!(s.unavailable_allowed, 0);
        assert!(s.unavailable_pods.contains_key("a"));
        assert_eq!(
            check_and_decrement(&mut s, "b", Operation::Delete, t()),
            Err(Refusal::Exhausted)
        );
        s.unavailable_allowed = 2;
        assert_eq!(check_and_decrement(&mut s, "b", Operation::Evict, t()), Ok(()));
        assert!(s.disrupted_pods.contains_key("b"));
        assert_eq!(
            Refusal::Exhausted.message("web"),
            "admission webhook \"vpod.kb.io\" denied the request: podunavailablebudget.policy.kruise.io \"web\" is forbidden: pub unavailable allowed is negative"
        );
    }

    /// Upstream's `TestGetDesiredAvailableCount`-style cases.
    #[test]
    fn desired_available_rounds_as_upstream() {
        let spec = |max: Option<IntOrString>, min: Option<IntOrString>| PodUnavailableBudgetSpec {
            max_unavailable: max,
            min_available: min,
            ..Default::default()
        };
        let s = |v: &str| Some(IntOrString::String(v.to_owned()));
        let i = |v: i32| Some(IntOrString::Int(v));
        for (sp, expected, want) in [
            (spec(i(1), None), 5, 4),
            (spec(s("60%"), None), 5, 2), // 3 unavailable (rounded up), the manual's example
            (spec(s("50%"), None), 3, 1),
            (spec(i(10), None), 5, 0),
            (spec(None, s("40%")), 5, 2),
            (spec(None, i(3)), 5, 3),
            (spec(None, s("50%")), 3, 2),
            (spec(None, None), 5, 0),
            (spec(s("100%"), None), 4, 0),
        ] {
            assert_eq!(desired_available(&sp, expected), want, "{sp:?} of {expected}");
        }
    }

    #[test]
    fn protected_operations_and_coverage() {
        let mut b: PodUnavailableBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "annotations": {PROTECT_OPERATIONS_ANNOTATION: "DELETE,EVICT"}},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "maxUnavailable": 1}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(b.protects(Operation::Delete) && b.protects(Operation::Evict));
        assert!(!b.protects(Operation::Update));
        let labels: BTreeMap<String, String> = [("app".to_owned(), "a".to_owned())].into();
        assert!(b.covers(&labels, None));
        assert!(!b.covers(&BTreeMap::new(), None));
        b.spec.selector = Some(LabelSelector::default());
        assert!(!b.covers(&labels, None), "an empty selector matches nothing");
        b.spec.target_ref = Some(TargetReference {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            name: "web".into(),
        });
        assert!(b.covers(&labels, Some(("apps.kruise.io", "CloneSet", "web"))));
        assert!(!b.covers(&labels, Some(("apps", "Deployment", "web"))));
    }
}
