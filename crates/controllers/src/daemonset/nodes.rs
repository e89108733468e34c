//! Which nodes a DaemonSet runs on, and the pod it creates there: upstream's
//! `NodeShouldRunDaemonPod`, `predicates`, `AddOrUpdateDaemonPodTolerations` and
//! `ReplaceDaemonSetPodNodeNameNodeAffinity` (`pkg/controller/daemon/util`,
//! `pkg/controller/daemon/daemon_controller.go`), as pure functions.
//!
//! Node affinity and taint matching are the embedded scheduler's (`scheduler::fit`), so the
//! controller and the scheduler never disagree about a node.

use k8s_openapi::api::core::v1::{Node, PodSpec, Taint, Toleration};
use serde_json::{Value, json};

use crate::scheduler::fit::{NodeInfo, selector_matches, tolerates};

/// `node.kubernetes.io/*` taint keys the default DaemonSet tolerations name.
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`):
/// not-ready and unreachable for NoExecute (so a flapping node keeps its daemons),
/// disk/memory/pid pressure and unschedulable for NoSchedule, and network-unavailable for
/// NoSchedule when the pod uses the host network.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(effect.to_owned()),
        ..Default::default()
    };
    let mut t = vec![
        exists(NOT_READY, "NoExecute"),
        exists(UNREACHABLE, "NoExecute"),
        exists(DISK_PRESSURE, "NoSchedule"),
        exists(MEMORY_PRESSURE, "NoSchedule"),
        exists(PID_PRESSURE, "NoSchedule"),
        exists(UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        t.push(exists(NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    t
}

/// Adds the tolerations of [`default_tolerations`] that `spec` lacks (same key, operator,
/// value and effect; upstream's `AddOrUpdateTolerationInPodSpec` keeps the pod's own).
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for t in default_tolerations(host_network) {
        if !list.iter().any(|have| have.key == t.key && have.effect == t.effect) {
            list.push(t);
        }
    }
}

/// Whether the daemon pod should run on `node` and, if it runs there already, whether it may
/// keep running (upstream's `NodeShouldRunDaemonPod`): the template's `nodeName`, its
/// `nodeSelector` and required node affinity must match the node; then an untolerated
/// NoSchedule or NoExecute taint of `spec.taints` stops new pods, and only an untolerated
/// NoExecute taint evicts running ones. The default tolerations count as the pod's own.
pub fn should_run(node: &Node, template: &PodSpec) -> (bool, bool) {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if template.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
        return (false, false);
    }
    let mut info = NodeInfo::from_node(node);
    // Upstream reads the node's own taints only (the node lifecycle controller of a real
    // cluster writes the condition taints into them); the scheduler's derived ones stay out.
    info.taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let selector_ok =
        template.node_selector.iter().flatten().all(|(k, v)| info.labels.get(k) == Some(v));
    let required = template
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|s| selector_matches(s, &info));
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let mut tolerations = template.tolerations.clone().unwrap_or_default();
    tolerations.extend(default_tolerations(template.host_network.unwrap_or(false)));
    let untolerated = |effects: &[&str]| {
        info.taints.iter().any(|t: &Taint| {
            effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
        })
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

/// Pins a daemon pod (`pod`, JSON) to `node` as upstream does since the default scheduler
/// places daemon pods (`ReplaceDaemonSetPodNodeNameNodeAffinity`): the required node affinity
/// becomes the single term `matchFields: metadata.name In [node]`, replacing the template's
/// terms (which the node already passed in [`should_run`]); preferred terms are kept.
pub fn pin_to_node(pod: &mut Value, node: &str) {
    let term = json!({"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": [node]}
    ]}]});
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let affinity = spec.entry("affinity").or_insert_with(|| json!({}));
    if !affinity.is_object() {
        *affinity = json!({});
    }
    let na = &mut affinity["nodeAffinity"];
    if !na.is_object() {
        *na = json!({});
    }
    na["requiredDuringSchedulingIgnoredDuringExecution"] = term;
}

/// The node a daemon pod is for: its `spec.nodeName`, else the node its `matchFields`
/// affinity pins it to (upstream's `GetTargetNodeName`).
pub fn target_node(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_owned());
    }
    let required = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    required.node_selector_terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("a node")
    }

    fn spec(v: Value) -> PodSpec {
        let mut base = json!({"containers": [{"name": "c", "image": "i"}]});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            b.extend(o.clone());
        }
        serde_json::from_value(base).expect("a pod spec")
    }

    /// Upstream's `TestNodeShouldRunDaemonPod` cases, as (node labels, node taints, template
    /// additions) → (shouldRun, shouldContinueRunning).
    #[test]
    fn node_should_run_daemon_pod() {
        type Case = (&'static str, Value, Value, Value, (bool, bool));
        let cases: &[Case] = &[
            ("plain node", json!({}), json!([]), json!({}), (true, true)),
            ("nodeName matches", json!({}), json!([]), json!({"nodeName": "n1"}), (true, true)),
            ("other nodeName", json!({}), json!([]), json!({"nodeName": "n2"}), (false, false)),
            (
                "nodeSelector matches",
                json!({"disk": "ssd"}),
                json!([]),
                json!({"nodeSelector": {"disk": "ssd"}}),
                (true, true),
            ),
            (
                "nodeSelector does not match",
                json!({"disk": "hdd"}),
                json!([]),
                json!({"nodeSelector": {"disk": "ssd"}}),
                (false, false),
            ),
            (
                "required affinity does not match",
                json!({"zone": "a"}),
                json!([]),
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}),
                (false, false),
            ),
            (
                "required affinity by name",
                json!({}),
                json!([]),
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
                (true, true),
            ),
            (
                "untolerated NoSchedule: no new pod, the running one stays",
                json!({}),
                json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
                json!({}),
                (false, true),
            ),
            (
                "untolerated NoExecute: evicted",
                json!({}),
                json!([{"key": "k", "value": "v", "effect": "NoExecute"}]),
                json!({}),
                (false, false),
            ),
            (
                "tolerated NoExecute",
                json!({}),
                json!([{"key": "k", "value": "v", "effect": "NoExecute"}]),
                json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "v",
                                        "effect": "NoExecute"}]}),
                (true, true),
            ),
            (
                "a cordoned node's taint is tolerated by default",
                json!({}),
                json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
                json!({}),
                (true, true),
            ),
            (
                "not-ready NoExecute is tolerated by default",
                json!({}),
                json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
                json!({}),
                (true, true),
            ),
            (
                "network-unavailable only for host-network pods",
                json!({}),
                json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
                json!({"hostNetwork": true}),
                (true, true),
            ),
            (
                "network-unavailable blocks other pods",
                json!({}),
                json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
                json!({}),
                (false, true),
            ),
        ];
        for (what, labels, taints, template, want) in cases {
            let got = should_run(&node(labels.clone(), taints.clone()), &spec(template.clone()));
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn pinning_replaces_required_terms_and_keeps_preferred() {
        let mut pod = json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}],
        }}}});
        pin_to_node(&mut pod, "n7");
        assert_eq!(
            pod["spec"]["affinity"]["nodeAffinity"],
            json!({
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}],
            })
        );
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("a pod");
        assert_eq!(target_node(&typed).as_deref(), Some("n7"));
        let mut s = spec(json!({"tolerations": [{"key": NOT_READY, "operator": "Exists",
                                                  "effect": "NoExecute", "tolerationSeconds": 5}]}));
        add_default_tolerations(&mut s);
        let t = s.tolerations.expect("tolerations");
        assert_eq!(t.len(), 6, "the pod's own not-ready toleration is kept, not doubled");
        assert_eq!(t[0].toleration_seconds, Some(5));
    }
}
