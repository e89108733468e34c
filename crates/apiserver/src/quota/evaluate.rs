//! Quota evaluators: what an object of a kind is charged (upstream `pkg/quota/v1/evaluator/core`:
//! `pods.go`, `services.go`, `persistent_volume_claims.go`, and the object count evaluator of
//! `k8s.io/apiserver/pkg/quota/v1/generic` for every other kind), which quota resources and
//! scopes an evaluator matches, and the pod constraint ("must specify limits.cpu for: ...").
//!
//! A kind's strategy names its evaluator ([`crate::strategy::Strategy::quota`]); the object
//! count name `count/<resource>.<group>` comes from the served resource.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::amount::Amount;
use super::resources::{Kind, ResourceList, add, container_list, list_of, pod_totals};

/// How objects of a kind are charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluator {
    /// Not charged (upstream's ignored resources: events).
    Ignored,
    /// `count/<resource>.<group>`, and for the core kinds that predate it, the resource's own
    /// name as well (`configmaps`, `secrets`, `resourcequotas`, `replicationcontrollers`).
    Count {
        legacy_name: bool,
    },
    Pod,
    Service,
    Claim,
}

/// The operation admission charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// One scope requirement of a quota (`spec.scopes` are `Exists` requirements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub operator: String,
    pub values: Vec<String>,
}

const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];
const SERVICE_RESOURCES: &[&str] =
    &["count/services", "services", "services.loadbalancers", "services.nodeports"];
const CLAIM_RESOURCES: &[&str] = &["persistentvolumeclaims", "requests.storage"];
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Upstream `helper.IsNativeResource`: unqualified or in `kubernetes.io/`.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// `requests.<extended resource>`, the only form quota takes for extended resources.
fn is_extended_for_quota(name: &str) -> bool {
    name.starts_with("requests.") && !is_native(name)
}

impl Evaluator {
    /// Whether the operation can change what the object is charged (upstream `Handles`):
    /// creates always; pod updates that move it between the Terminating scopes; service and
    /// claim updates (type and storage changes).
    pub fn handles(self, op: Operation, obj: &Value, old: Option<&Value>) -> bool {
        match (self, op) {
            (Evaluator::Ignored, _) => false,
            (_, Operation::Create) => true,
            (Evaluator::Count { .. }, Operation::Update) => false,
            (Evaluator::Pod, Operation::Update) => {
                old.is_some_and(|old| is_terminating(old) != is_terminating(obj))
            }
            (Evaluator::Service | Evaluator::Claim, Operation::Update) => true,
        }
    }

    /// The names of `input` this evaluator charges (upstream `MatchingResources`).
    pub fn matching_resources(self, count_name: &str, input: &[String]) -> Vec<String> {
        input
            .iter()
            .filter(|r| match self {
                Evaluator::Ignored => false,
                Evaluator::Count { legacy_name } => {
                    r.as_str() == count_name
                        || (legacy_name
                            && count_name.strip_prefix("count/").is_some_and(|n| n == r.as_str()))
                }
                Evaluator::Pod => {
                    POD_RESOURCES.contains(&r.as_str())
                        || r.starts_with("hugepages-")
                        || r.starts_with("requests.hugepages-")
                        || is_extended_for_quota(r)
                }
                Evaluator::Service => SERVICE_RESOURCES.contains(&r.as_str()),
                Evaluator::Claim => {
                    r.as_str() == "count/persistentvolumeclaims"
                        || CLAIM_RESOURCES.contains(&r.as_str())
                        || CLAIM_RESOURCES
                            .iter()
                            .any(|c| r.ends_with(&format!("{STORAGE_CLASS_SUFFIX}{c}")))
                }
            })
            .cloned()
            .collect()
    }

    /// Whether the object is in the scope (upstream's `MatchesScopeFunc`; only pods have
    /// scopes here, so a scoped quota charges nothing else).
    pub fn matches_scope(self, scope: &Scope, obj: &Value) -> bool {
        if self != Evaluator::Pod {
            return false;
        }
        match scope.name.as_str() {
            "Terminating" => is_terminating(obj),
            "NotTerminating" => !is_terminating(obj),
            "BestEffort" => is_best_effort(obj),
            "NotBestEffort" => !is_best_effort(obj),
            "PriorityClass" => {
                let class = obj.pointer("/spec/priorityClassName").and_then(Value::as_str);
                let class = class.filter(|c| !c.is_empty());
                match scope.operator.as_str() {
                    "Exists" => class.is_some(),
                    "DoesNotExist" => class.is_none(),
                    "In" => class.is_some_and(|c| scope.values.iter().any(|v| v == c)),
                    "NotIn" => class.is_none_or(|c| !scope.values.iter().any(|v| v == c)),
                    _ => false,
                }
            }
            "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(obj),
            _ => false,
        }
    }

    /// Whether a quota with `hard` names and `scopes` charges the object (upstream
    /// `generic.Matches`): it names a resource the evaluator charges and the object is in
    /// every scope.
    pub fn matches(self, count_name: &str, hard: &[String], scopes: &[Scope], obj: &Value) -> bool {
        !self.matching_resources(count_name, hard).is_empty()
            && scopes.iter().all(|s| self.matches_scope(s, obj))
    }

    /// What the object is charged (upstream `Usage`).
    pub fn usage(self, count_name: &str, obj: &Value, now: jiff::Timestamp) -> ResourceList {
        let one = Amount::from_int(1);
        let mut out = ResourceList::new();
        match self {
            Evaluator::Ignored => {}
            Evaluator::Count { legacy_name } => {
                out.insert(count_name.to_owned(), one);
                if legacy_name && let Some(n) = count_name.strip_prefix("count/") {
                    out.insert(n.to_owned(), one);
                }
            }
            Evaluator::Pod => {
                out.insert("count/pods".into(), one);
                if charges_compute(obj, now) {
                    let requests = pod_totals(obj, Kind::Requests, true);
                    let limits = pod_totals(obj, Kind::Limits, true);
                    out = add(&out, &compute_usage(&requests, &limits));
                }
            }
            Evaluator::Service => {
                out.insert("count/services".into(), one);
                out.insert("services".into(), one);
                let spec = obj.get("spec").unwrap_or(&Value::Null);
                let ports =
                    spec.get("ports").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                let all = i64::try_from(ports.len()).unwrap_or(i64::MAX);
                let (lbs, node_ports) = match spec.get("type").and_then(Value::as_str) {
                    Some("NodePort") => (0, all),
                    Some("LoadBalancer") => {
                        let allocate =
                            spec.get("allocateLoadBalancerNodePorts").and_then(Value::as_bool);
                        let explicit = ports
                            .iter()
                            .filter(|p| {
                                p.get("nodePort").and_then(Value::as_i64).is_some_and(|n| n != 0)
                            })
                            .count();
                        let explicit = i64::try_from(explicit).unwrap_or(i64::MAX);
                        (1, if allocate == Some(false) { explicit } else { all })
                    }
                    _ => (0, 0),
                };
                out.insert("services.loadbalancers".into(), Amount::from_int(lbs));
                out.insert("services.nodeports".into(), Amount::from_int(node_ports));
            }
            Evaluator::Claim => {
                out.insert("count/persistentvolumeclaims".into(), one);
                out.insert("persistentvolumeclaims".into(), one);
                let class = obj
                    .pointer("/spec/storageClassName")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty());
                if let Some(c) = class {
                    out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"), one);
                }
                // The larger of the request and what was allocated (RecoverVolumeExpansionFailure).
                let requested = list_of(obj.pointer("/spec/resources/requests")).remove("storage");
                let allocated =
                    list_of(obj.pointer("/status/allocatedResources")).remove("storage");
                let storage = match (requested, allocated) {
                    (Some(r), Some(a)) => Some(r.max(a)),
                    (r, a) => r.or(a),
                };
                if let Some(s) = storage {
                    out.insert("requests.storage".into(), s);
                    if let Some(c) = class {
                        out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
                    }
                }
            }
        }
        out
    }

    /// Upstream's pod `Constraints`: when a quota charges cpu or memory, every container must
    /// set them ("must specify limits.cpu for: a; requests.memory for: a,b"), unless the pod
    /// sets its resources at pod level.
    ///
    /// # Errors
    /// The message of the missing resources.
    pub fn constraints(self, required: &[String], obj: &Value) -> Result<(), String> {
        if self != Evaluator::Pod {
            return Ok(());
        }
        let pod_level = obj.pointer("/spec/resources").and_then(Value::as_object);
        if pod_level.is_some_and(|r| {
            ["requests", "limits"]
                .iter()
                .any(|k| r.get(*k).and_then(Value::as_object).is_some_and(|m| !m.is_empty()))
        }) {
            return Ok(());
        }
        const VALIDATION: [&str; 6] =
            ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];
        let required: BTreeSet<&str> =
            required.iter().map(String::as_str).filter(|r| VALIDATION.contains(r)).collect();
        let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        for field in ["containers", "initContainers"] {
            for c in spec.get(field).and_then(Value::as_array).into_iter().flatten() {
                let usage = compute_usage(
                    &container_list(c, Kind::Requests),
                    &container_list(c, Kind::Limits),
                );
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                for r in &required {
                    if !usage.contains_key(*r) {
                        missing.entry(r).or_default().insert(name.to_owned());
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = missing
            .iter()
            .map(|(r, names)| {
                format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(","))
            })
            .collect();
        Err(format!("must specify {}", parts.join("; ")))
    }
}

/// Upstream `podComputeUsageHelper`: what requests and limits charge.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Amount::from_int(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (r, q) in requests {
        if r.starts_with("hugepages-") {
            out.insert(r.clone(), *q);
            out.insert(format!("requests.{r}"), *q);
        } else if !is_native(r) {
            out.insert(format!("requests.{r}"), *q);
        }
    }
    out
}

/// Upstream `IsTerminating`: `activeDeadlineSeconds` is set (and not negative).
pub fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|d| d >= 0)
}

/// Upstream's QoS class BestEffort: no container (nor the pod level) requests or limits a
/// positive amount of cpu or memory.
pub fn is_best_effort(pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut lists: Vec<ResourceList> = Vec::new();
    for field in ["containers", "initContainers"] {
        for c in spec.get(field).and_then(Value::as_array).into_iter().flatten() {
            lists.push(container_list(c, Kind::Requests));
            lists.push(container_list(c, Kind::Limits));
        }
    }
    lists.push(list_of(spec.pointer("/resources/requests")));
    lists.push(list_of(spec.pointer("/resources/limits")));
    !lists.iter().any(|l| ["cpu", "memory"].iter().any(|r| l.get(*r).is_some_and(|q| q.sign() > 0)))
}

/// Upstream `QuotaV1Pod`: terminal pods, and pods whose deletion grace period has passed, are
/// not charged compute (only `count/pods`).
fn charges_compute(pod: &Value, now: jiff::Timestamp) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    if let (Some(t), Some(g)) = (deleted, grace)
        && now > t + jiff::SignedDuration::from_secs(g)
    {
        return false;
    }
    true
}

fn uses_cross_namespace_affinity(pod: &Value) -> bool {
    let cross = |term: &Value| {
        term.get("namespaces").and_then(Value::as_array).is_some_and(|n| !n.is_empty())
            || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(a) = pod.pointer(&format!("/spec/affinity/{kind}")) else { return false };
        let required = a.get("requiredDuringSchedulingIgnoredDuringExecution");
        let preferred = a.get("preferredDuringSchedulingIgnoredDuringExecution");
        required.and_then(Value::as_array).into_iter().flatten().any(cross)
            || preferred
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|w| w.get("podAffinityTerm").is_some_and(cross))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::quota::resources::pretty;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}, "status": {"phase": "Pending"}})
    }

    /// Ported from upstream `pods_test.go` `TestPodEvaluatorUsage`.
    #[test]
    fn pod_usage_follows_upstream() {
        let cases = [
            (
                "requests and limits",
                pod(json!([{"name": "a", "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi"},
                    "limits": {"cpu": "2", "memory": "2Gi"}}}])),
                "count/pods=1,cpu=1,limits.cpu=2,limits.memory=2Gi,memory=1Gi,pods=1,requests.cpu=1,requests.memory=1Gi",
            ),
            ("best effort", pod(json!([{"name": "a"}])), "count/pods=1,pods=1"),
            (
                "extended and hugepages",
                pod(
                    json!([{"name": "a", "resources": {"requests": {"example.com/dongle": "3", "hugepages-2Mi": "4Mi"}}}]),
                ),
                "count/pods=1,hugepages-2Mi=4Mi,pods=1,requests.example.com/dongle=3,requests.hugepages-2Mi=4Mi",
            ),
            (
                "terminal pod counts as an object only",
                json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": "Succeeded"}}),
                "count/pods=1",
            ),
            (
                "pod stuck terminating past its grace period",
                json!({"metadata": {"deletionTimestamp": "2025-12-31T23:00:00Z", "deletionGracePeriodSeconds": 30},
                       "spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}}),
                "count/pods=1",
            ),
            (
                "two containers sum",
                pod(
                    json!([{"resources": {"requests": {"cpu": "100m"}}}, {"resources": {"requests": {"cpu": "250m"}}}]),
                ),
                "count/pods=1,cpu=350m,pods=1,requests.cpu=350m",
            ),
        ];
        for (name, obj, want) in cases {
            assert_eq!(pretty(&Evaluator::Pod.usage("count/pods", &obj, now())), want, "{name}");
        }
    }

    #[test]
    fn object_counts_and_services_and_claims() {
        let count = Evaluator::Count { legacy_name: true };
        assert_eq!(
            pretty(&count.usage("count/secrets", &json!({}), now())),
            "count/secrets=1,secrets=1"
        );
        let plain = Evaluator::Count { legacy_name: false };
        assert_eq!(
            pretty(&plain.usage("count/deployments.apps", &json!({}), now())),
            "count/deployments.apps=1"
        );
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            pretty(&Evaluator::Service.usage("count/services", &svc, now())),
            "count/services=1,services=1,services.loadbalancers=0,services.nodeports=2"
        );
        let lb = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "nodePort": 30001}, {"port": 443}]}});
        assert_eq!(
            pretty(&Evaluator::Service.usage("count/services", &lb, now())),
            "count/services=1,services=1,services.loadbalancers=1,services.nodeports=1"
        );
        let pvc = json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "10Gi"}}},
            "status": {"allocatedResources": {"storage": "20Gi"}}});
        assert_eq!(
            pretty(&Evaluator::Claim.usage("count/persistentvolumeclaims", &pvc, now())),
            "count/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/requests.storage=20Gi,persistentvolumeclaims=1,requests.storage=20Gi"
        );
    }

    #[test]
    fn matching_resources_and_scopes() {
        let hard: Vec<String> = [
            "pods",
            "requests.cpu",
            "secrets",
            "count/secrets",
            "services.nodeports",
            "gold.storageclass.storage.k8s.io/requests.storage",
            "requests.nvidia.com/gpu",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            Evaluator::Pod.matching_resources("count/pods", &hard),
            ["pods", "requests.cpu", "requests.nvidia.com/gpu"]
        );
        assert_eq!(
            Evaluator::Count { legacy_name: true }.matching_resources("count/secrets", &hard),
            ["secrets", "count/secrets"]
        );
        assert_eq!(
            Evaluator::Count { legacy_name: false }.matching_resources("count/configmaps", &hard),
            Vec::<String>::new()
        );
        assert_eq!(
            Evaluator::Service.matching_resources("count/services", &hard),
            ["services.nodeports"]
        );
        assert_eq!(
            Evaluator::Claim.matching_resources("count/persistentvolumeclaims", &hard),
            ["gold.storageclass.storage.k8s.io/requests.storage"]
        );
        let exists = |n: &str| Scope { name: n.into(), operator: "Exists".into(), values: vec![] };
        let best = pod(json!([{"name": "a"}]));
        let burst = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        let term = json!({"spec": {"activeDeadlineSeconds": 10, "containers": []}});
        assert!(Evaluator::Pod.matches_scope(&exists("BestEffort"), &best));
        assert!(!Evaluator::Pod.matches_scope(&exists("BestEffort"), &burst));
        assert!(Evaluator::Pod.matches_scope(&exists("NotBestEffort"), &burst));
        assert!(Evaluator::Pod.matches_scope(&exists("Terminating"), &term));
        assert!(Evaluator::Pod.matches_scope(&exists("NotTerminating"), &best));
        let high = Scope {
            name: "PriorityClass".into(),
            operator: "In".into(),
            values: vec!["high".into()],
        };
        let p = json!({"spec": {"priorityClassName": "high"}});
        assert!(Evaluator::Pod.matches_scope(&high, &p));
        assert!(!Evaluator::Pod.matches_scope(&high, &best));
        assert!(
            !Evaluator::Service.matches_scope(&exists("BestEffort"), &json!({})),
            "scoped quotas charge pods only"
        );
        let h = vec!["pods".to_owned()];
        assert!(Evaluator::Pod.matches("count/pods", &h, &[exists("BestEffort")], &best));
        assert!(!Evaluator::Pod.matches("count/pods", &h, &[exists("BestEffort")], &burst));
    }

    /// Upstream `TestPodConstraintsFunc`.
    #[test]
    fn pods_must_set_what_a_quota_charges() {
        let req: Vec<String> = vec!["limits.cpu".into(), "requests.memory".into(), "pods".into()];
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"memory": "1Gi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1"}}}]));
        assert_eq!(
            Evaluator::Pod.constraints(&req, &p).unwrap_err(),
            "must specify limits.cpu for: a; requests.memory for: b"
        );
        let ok = pod(
            json!([{"name": "a", "resources": {"requests": {"memory": "1Gi"}, "limits": {"cpu": "1"}}}]),
        );
        assert!(Evaluator::Pod.constraints(&req, &ok).is_ok());
        let pod_level =
            json!({"spec": {"resources": {"limits": {"cpu": "1"}}, "containers": [{"name": "a"}]}});
        assert!(Evaluator::Pod.constraints(&req, &pod_level).is_ok());
        assert!(Evaluator::Service.constraints(&req, &p).is_ok());
    }

    #[test]
    fn handles_creates_and_the_updates_that_change_charges() {
        let a = json!({"spec": {}});
        let t = json!({"spec": {"activeDeadlineSeconds": 5}});
        assert!(Evaluator::Pod.handles(Operation::Create, &a, None));
        assert!(!Evaluator::Pod.handles(Operation::Update, &a, Some(&a)));
        assert!(Evaluator::Pod.handles(Operation::Update, &t, Some(&a)));
        assert!(!Evaluator::Count { legacy_name: true }.handles(Operation::Update, &a, Some(&a)));
        assert!(Evaluator::Claim.handles(Operation::Update, &a, Some(&a)));
        assert!(!Evaluator::Ignored.handles(Operation::Create, &a, None));
    }
}
