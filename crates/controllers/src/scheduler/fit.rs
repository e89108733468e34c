//! The filter and score plugins of the default kube-scheduler profile that the embedded scheduler
//! implements, over parsed nodes and pods. Pure functions: no I/O, no clock.
//!
//! Filters run in upstream's order (`NodeUnschedulable`, `TaintToleration`, `NodeAffinity`,
//! `NodePorts`, `NodeResourcesFit`) and a node reports the reasons of the first filter that
//! rejects it, so the failure message counts the same reasons kube-scheduler would.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint,
    Toleration,
};

use super::quantity::resource_value;

/// Resource amounts by name: millicores for `cpu`, whole units (bytes, count) for the rest.
pub type Resources = BTreeMap<String, i64>;

/// Upstream's default requests for scoring pods that set none (`DefaultMilliCPURequest`,
/// `DefaultMemoryRequest`), so that best-effort pods still spread.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Taints the node lifecycle controller of a real cluster puts on nodes that are not Ready
/// (`TaintNodesByCondition`); the embedded control plane has no such controller, so the
/// scheduler derives them from the Ready condition and pods can tolerate them as usual.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// What the scheduler needs of a Node, parsed once per change of the Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `status.allocatable`, including `pods`.
    pub allocatable: Resources,
    /// `spec.taints` plus the taints derived from the Ready condition.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let mut allocatable = Resources::new();
        for (k, q) in
            node.status.as_ref().and_then(|s| s.allocatable.as_ref()).into_iter().flatten()
        {
            match resource_value(k, &q.0) {
                Ok(v) => {
                    allocatable.insert(k.clone(), v);
                }
                Err(error) => {
                    tracing::warn!(node = %name, resource = %k, %error, "ignoring allocatable");
                }
            }
        }
        let spec = node.spec.as_ref();
        let unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let mut taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let derived = match ready {
            Some("True") => None,
            Some("False") | None => Some(TAINT_NOT_READY),
            Some(_) => Some(TAINT_UNREACHABLE),
        };
        if let Some(key) = derived
            && !taints.iter().any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_owned(),
                effect: "NoSchedule".to_owned(),
                ..Default::default()
            });
        }
        Self { name, labels, allocatable, taints, unschedulable }
    }
}

/// A host port a pod asks for: (host IP, protocol, port), with upstream's defaults filled in.
pub type HostPort = (String, String, i32);

/// What the scheduler needs of a Pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    /// Effective requests: max(max init, sum of app containers) + overhead.
    pub requests: Resources,
    /// The same with upstream's defaults for unset cpu/memory requests, for scoring.
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    pub node_selector: BTreeMap<String, String>,
    pub required_affinity: Option<NodeSelector>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else { return Self::default() };
        let overhead = quantities(spec.overhead.as_ref());
        let init = spec.init_containers.as_deref().unwrap_or_default();
        let requests = pod_requests(&spec.containers, init, &overhead, container_requests);
        let nonzero = pod_requests(&spec.containers, init, &overhead, |c| {
            let mut r = container_requests(c);
            r.entry("cpu".to_owned()).or_insert(DEFAULT_MILLI_CPU);
            r.entry("memory".to_owned()).or_insert(DEFAULT_MEMORY);
            r
        });
        let host_ports = spec
            .containers
            .iter()
            .chain(init.iter().filter(|c| is_sidecar(c)))
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|h| h > 0))
            .map(|p| {
                let ip = p.host_ip.clone().filter(|ip| !ip.is_empty());
                (
                    ip.unwrap_or_else(|| "0.0.0.0".to_owned()),
                    p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                    p.host_port.unwrap_or_default(),
                )
            })
            .collect();
        Self {
            nonzero_cpu: nonzero.get("cpu").copied().unwrap_or_default(),
            nonzero_memory: nonzero.get("memory").copied().unwrap_or_default(),
            requests,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_affinity: spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone()),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            host_ports,
        }
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn quantities(
    m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Resources {
    let mut out = Resources::new();
    for (k, q) in m.into_iter().flatten() {
        match resource_value(k, &q.0) {
            Ok(v) => {
                out.insert(k.clone(), v);
            }
            Err(error) => tracing::warn!(resource = %k, %error, "ignoring a request"),
        }
    }
    out
}

/// A container's requests; a resource with only a limit requests its limit, as the API
/// server's defaulting makes it.
fn container_requests(c: &Container) -> Resources {
    let res = c.resources.as_ref();
    let mut r = quantities(res.and_then(|r| r.requests.as_ref()));
    for (k, v) in quantities(res.and_then(|r| r.limits.as_ref())) {
        r.entry(k).or_insert(v);
    }
    r
}

fn add(into: &mut Resources, r: &Resources) {
    for (k, v) in r {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max_into(into: &mut Resources, r: &Resources) {
    for (k, v) in r {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

/// Upstream's `resourcehelper.PodRequests`: app containers add up; each init container runs
/// alone (plus the restartable "sidecar" init containers started before it), so the pod needs
/// the larger of the two; sidecars keep running and add to the app sum; overhead on top.
fn pod_requests(
    app: &[Container],
    init: &[Container],
    overhead: &Resources,
    per: impl Fn(&Container) -> Resources,
) -> Resources {
    let mut reqs = Resources::new();
    for c in app {
        add(&mut reqs, &per(c));
    }
    let mut sidecars = Resources::new();
    let mut init_max = Resources::new();
    for c in init {
        let r = per(c);
        if is_sidecar(c) {
            add(&mut reqs, &r);
            add(&mut sidecars, &r);
            max_into(&mut init_max, &sidecars);
        } else {
            let mut r = r;
            add(&mut r, &sidecars);
            max_into(&mut init_max, &r);
        }
    }
    max_into(&mut reqs, &init_max);
    add(&mut reqs, overhead);
    reqs
}

/// What the pods on one node (bound or assumed) use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub requested: Resources,
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    pub pods: i64,
    pub host_ports: HashMap<HostPort, u32>,
}

impl Usage {
    pub fn add(&mut self, p: &PodInfo) {
        add(&mut self.requested, &p.requests);
        self.nonzero_cpu += p.nonzero_cpu;
        self.nonzero_memory += p.nonzero_memory;
        self.pods += 1;
        for hp in &p.host_ports {
            *self.host_ports.entry(hp.clone()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, p: &PodInfo) {
        for (k, v) in &p.requests {
            if let Some(e) = self.requested.get_mut(k) {
                *e -= v;
                if *e == 0 {
                    self.requested.remove(k);
                }
            }
        }
        self.nonzero_cpu -= p.nonzero_cpu;
        self.nonzero_memory -= p.nonzero_memory;
        self.pods -= 1;
        for hp in &p.host_ports {
            if let Some(n) = self.host_ports.get_mut(hp) {
                *n -= 1;
                if *n == 0 {
                    self.host_ports.remove(hp);
                }
            }
        }
    }
}

/// Why `pod` does not fit `node`; empty when it fits.
pub fn filter(node: &NodeInfo, used: &Usage, pod: &PodInfo) -> Vec<String> {
    // NodeUnschedulable: a cordoned node takes only pods that tolerate its taint.
    if node.unschedulable {
        let taint = Taint {
            key: TAINT_UNSCHEDULABLE.to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Default::default()
        };
        if !pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            return vec![REASON_UNSCHEDULABLE.to_owned()];
        }
    }
    // TaintToleration: the first NoSchedule/NoExecute taint no toleration covers.
    if let Some(t) = node.taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !pod.tolerations.iter().any(|tol| tolerates(tol, t))
    }) {
        let value = t.value.as_deref().unwrap_or_default();
        return vec![format!("node(s) had untolerated taint {{{}: {value}}}", t.key)];
    }
    // NodeAffinity: nodeSelector and the required terms.
    let selector_ok = pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok = pod.required_affinity.as_ref().is_none_or(|s| selector_matches(s, node));
    if !selector_ok || !affinity_ok {
        return vec![REASON_AFFINITY.to_owned()];
    }
    // NodePorts.
    let port_taken = pod.host_ports.iter().any(|(ip, proto, port)| {
        used.host_ports.keys().any(|(uip, uproto, uport)| {
            uport == port && uproto == proto && (uip == ip || uip == "0.0.0.0" || ip == "0.0.0.0")
        })
    });
    if port_taken {
        return vec![REASON_PORTS.to_owned()];
    }
    // NodeResourcesFit: every shortage is a reason.
    let mut reasons = Vec::new();
    if used.pods + 1 > node.allocatable.get("pods").copied().unwrap_or(0) {
        reasons.push(REASON_TOO_MANY_PODS.to_owned());
    }
    for (name, want) in &pod.requests {
        if *want <= 0 || name == "pods" {
            continue;
        }
        let free = node.allocatable.get(name).copied().unwrap_or(0)
            - used.requested.get(name).copied().unwrap_or(0);
        if *want > free {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// A required node selector: the terms are ORed; an empty term matches nothing.
pub fn selector_matches(s: &NodeSelector, node: &NodeInfo) -> bool {
    s.node_selector_terms.iter().any(|t| term_matches(t, node))
}

fn term_matches(t: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // Upstream supports only metadata.name here.
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(&node.name))
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let [bound] = values else { return false };
            let (Some(Ok(v)), Ok(bound)) = (value.map(str::parse::<i64>), bound.parse::<i64>())
            else {
                return false;
            };
            if op == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// `NodeResourcesFit` with the `LeastAllocated` strategy (cpu and memory, weight 1 each), on
/// requests with upstream's non-zero defaults: 0..=100, higher is emptier.
pub fn score(node: &NodeInfo, used: &Usage, pod: &PodInfo) -> i64 {
    let least = |alloc: i64, requested: i64| {
        if alloc <= 0 || requested > alloc { 0 } else { (alloc - requested) * 100 / alloc }
    };
    let cpu = least(
        node.allocatable.get("cpu").copied().unwrap_or(0),
        used.nonzero_cpu + pod.nonzero_cpu,
    );
    let mem = least(
        node.allocatable.get("memory").copied().unwrap_or(0),
        used.nonzero_memory + pod.nonzero_memory,
    );
    (cpu + mem) / 2
}

/// Upstream's `FitError` message: "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were
/// unschedulable." with the reasons counted and sorted as strings.
pub fn fit_error_message(num_nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".to_owned();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::*;

    fn node(v: serde_json::Value) -> NodeInfo {
        let mut n = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "gen": "5"}},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut n, v);
        NodeInfo::from_node(&serde_json::from_value(n).unwrap())
    }

    fn pod(spec: serde_json::Value) -> PodInfo {
        let mut s = json!({"containers": [{"name": "c"}]});
        merge(&mut s, spec);
        PodInfo::from_pod(&serde_json::from_value(json!({"spec": s})).unwrap())
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    /// Runs the filters for each (node patch, pod spec patch) case and prints the verdicts.
    fn check(cases: &[(serde_json::Value, serde_json::Value)], expect: Expect) {
        let mut out = String::new();
        for (n, p) in cases {
            let reasons = filter(&node(n.clone()), &Usage::default(), &pod(p.clone()));
            let verdict = if reasons.is_empty() { "fits".to_owned() } else { reasons.join("; ") };
            out += &format!("{n} + {p} => {verdict}\n");
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn requests_count_init_containers_like_upstream() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "200m"}}}
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "i2", "resources": {"requests": {"memory": "100Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        expect![[r#"
            PodInfo {
                requests: {
                    "cpu": 1010,
                    "memory": 104857600,
                },
                nonzero_cpu: 1010,
                nonzero_memory: 486539264,
                node_selector: {},
                required_affinity: None,
                tolerations: [],
                host_ports: [],
            }
        "#]]
        .assert_debug_eq(&p);
    }

    #[test]
    fn filters() {
        check(
            &[
                (json!({}), json!({})),
                (
                    json!({}),
                    json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}),
                ),
                (
                    json!({}),
                    json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2001m", "memory": "5Gi", "ephemeral-storage": "1"}}}]}),
                ),
                (
                    json!({}),
                    json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}),
                ),
                (json!({"status": {"allocatable": {"pods": "0"}}}), json!({})),
                (json!({"spec": {"unschedulable": true}}), json!({})),
                (
                    json!({"spec": {"unschedulable": true}}),
                    json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
                ),
                (
                    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                    json!({}),
                ),
                (
                    json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                    json!({}),
                ),
                (
                    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                    json!({"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}),
                ),
                (json!({}), json!({"nodeSelector": {"zone": "a"}})),
                (json!({}), json!({"nodeSelector": {"zone": "b"}})),
                (json!({}), json!({"nodeSelector": {"zone": "a", "disk": "ssd"}})),
            ],
            expect![[r#"
                {} + {} => fits
                {} + {"containers":[{"name":"c","resources":{"requests":{"cpu":"2"}}}]} => fits
                {} + {"containers":[{"name":"c","resources":{"requests":{"cpu":"2001m","memory":"5Gi","ephemeral-storage":"1"}}}]} => Insufficient cpu; Insufficient ephemeral-storage; Insufficient memory
                {} + {"containers":[{"name":"c","resources":{"requests":{"example.com/gpu":"1"}}}]} => Insufficient example.com/gpu
                {"status":{"allocatable":{"pods":"0"}}} + {} => Too many pods
                {"spec":{"unschedulable":true}} + {} => node(s) were unschedulable
                {"spec":{"unschedulable":true}} + {"tolerations":[{"key":"node.kubernetes.io/unschedulable","operator":"Exists","effect":"NoSchedule"}]} => fits
                {"status":{"conditions":[{"type":"Ready","status":"False"}]}} + {} => node(s) had untolerated taint {node.kubernetes.io/not-ready: }
                {"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}} + {} => node(s) had untolerated taint {node.kubernetes.io/unreachable: }
                {"status":{"conditions":[{"type":"Ready","status":"False"}]}} + {"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists"}]} => fits
                {} + {"nodeSelector":{"zone":"a"}} => fits
                {} + {"nodeSelector":{"zone":"b"}} => node(s) didn't match Pod's node affinity/selector
                {} + {"nodeSelector":{"zone":"a","disk":"ssd"}} => node(s) didn't match Pod's node affinity/selector
            "#]],
        );
    }

    #[test]
    fn taints() {
        let t = |taint: serde_json::Value| json!({"spec": {"taints": [taint]}});
        check(
            &[
                (t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})), json!({})),
                (t(json!({"key": "k", "value": "v", "effect": "NoExecute"})), json!({})),
                (t(json!({"key": "k", "value": "v", "effect": "PreferNoSchedule"})), json!({})),
                (
                    t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"key": "k", "value": "v"}]}),
                ),
                (
                    t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "w"}]}),
                ),
                (
                    t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"key": "k", "operator": "Exists"}]}),
                ),
                (
                    t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"operator": "Exists"}]}),
                ),
                (
                    t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute"}]}),
                ),
                (
                    t(json!({"key": "k", "value": "v", "effect": "NoExecute"})),
                    json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute"}]}),
                ),
                (
                    t(json!({"key": "k", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"key": "other", "operator": "Exists"}]}),
                ),
                (
                    t(json!({"key": "k", "effect": "NoSchedule"})),
                    json!({"tolerations": [{"key": "k", "operator": "Gt", "value": "1"}]}),
                ),
            ],
            expect![[r#"
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]}} + {} => node(s) had untolerated taint {k: v}
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoExecute"}]}} + {} => node(s) had untolerated taint {k: v}
                {"spec":{"taints":[{"key":"k","value":"v","effect":"PreferNoSchedule"}]}} + {} => fits
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]}} + {"tolerations":[{"key":"k","value":"v"}]} => fits
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]}} + {"tolerations":[{"key":"k","operator":"Equal","value":"w"}]} => node(s) had untolerated taint {k: v}
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]}} + {"tolerations":[{"key":"k","operator":"Exists"}]} => fits
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]}} + {"tolerations":[{"operator":"Exists"}]} => fits
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]}} + {"tolerations":[{"key":"k","operator":"Exists","effect":"NoExecute"}]} => node(s) had untolerated taint {k: v}
                {"spec":{"taints":[{"key":"k","value":"v","effect":"NoExecute"}]}} + {"tolerations":[{"key":"k","operator":"Exists","effect":"NoExecute"}]} => fits
                {"spec":{"taints":[{"key":"k","effect":"NoSchedule"}]}} + {"tolerations":[{"key":"other","operator":"Exists"}]} => node(s) had untolerated taint {k: }
                {"spec":{"taints":[{"key":"k","effect":"NoSchedule"}]}} + {"tolerations":[{"key":"k","operator":"Gt","value":"1"}]} => node(s) had untolerated taint {k: }
            "#]],
        );
    }

    #[test]
    fn affinity() {
        let a = |terms: serde_json::Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}});
        let e = |key: &str, op: &str, values: &[&str]| {
            a(json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]))
        };
        check(
            &[
                (json!({}), e("zone", "In", &["a", "b"])),
                (json!({}), e("zone", "In", &["b"])),
                (json!({}), e("zone", "NotIn", &["b"])),
                (json!({}), e("zone", "NotIn", &["a"])),
                (json!({}), e("missing", "NotIn", &["a"])),
                (json!({}), e("zone", "Exists", &[])),
                (json!({}), e("missing", "Exists", &[])),
                (json!({}), e("missing", "DoesNotExist", &[])),
                (json!({}), e("zone", "DoesNotExist", &[])),
                (json!({}), e("gen", "Gt", &["4"])),
                (json!({}), e("gen", "Gt", &["5"])),
                (json!({}), e("gen", "Lt", &["6"])),
                (json!({}), e("zone", "Lt", &["6"])),
                (json!({}), e("gen", "Gt", &["x"])),
                (
                    json!({}),
                    a(
                        json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
                    ),
                ),
                (
                    json!({}),
                    a(
                        json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]),
                    ),
                ),
                (json!({}), a(json!([{}]))),
                (json!({}), a(json!([]))),
                (
                    json!({}),
                    a(json!([
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "gen", "operator": "Exists"}]}
                    ])),
                ),
            ],
            expect![[r#"
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"In","values":["a","b"]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"In","values":["b"]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["b"]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a"]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"missing","operator":"NotIn","values":["a"]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"Exists","values":[]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"missing","operator":"Exists","values":[]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"missing","operator":"DoesNotExist","values":[]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"DoesNotExist","values":[]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"gen","operator":"Gt","values":["4"]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"gen","operator":"Gt","values":["5"]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"gen","operator":"Lt","values":["6"]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"Lt","values":["6"]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"gen","operator":"Gt","values":["x"]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchFields":[{"key":"metadata.name","operator":"In","values":["n1"]}]}]}}}} => fits
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchFields":[{"key":"metadata.name","operator":"NotIn","values":["n1"]}]}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{}]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[]}}}} => node(s) didn't match Pod's node affinity/selector
                {} + {"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"In","values":["b"]}]},{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]},{"key":"gen","operator":"Exists"}]}]}}}} => fits
            "#]],
        );
    }

    #[test]
    fn usage_counts_against_allocatable() {
        let n = node(json!({}));
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "700m", "memory": "1Gi"}}}]}),
        );
        let mut used = Usage::default();
        let mut placed = 0;
        while filter(&n, &used, &p).is_empty() {
            assert!(score(&n, &used, &p) >= 0);
            used.add(&p);
            placed += 1;
        }
        assert_eq!(placed, 2);
        expect![[r#"["Insufficient cpu"]"#]].assert_eq(&format!("{:?}", filter(&n, &used, &p)));
        used.remove(&p);
        assert!(filter(&n, &used, &p).is_empty());
    }

    #[test]
    fn host_ports() {
        let p = |ip: &str| {
            pod(
                json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}),
            )
        };
        let n = node(json!({}));
        let mut used = Usage::default();
        used.add(&p("10.0.0.1"));
        assert!(filter(&n, &used, &p("10.0.0.2")).is_empty());
        expect![[r#"["node(s) didn't have free ports for the requested pod ports"]"#]]
            .assert_eq(&format!("{:?}", filter(&n, &used, &p(""))));
    }

    #[test]
    fn scores_prefer_the_emptier_node() {
        let n = node(json!({}));
        let p = pod(json!({}));
        let empty = score(&n, &Usage::default(), &p);
        let mut used = Usage::default();
        used.add(&pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]})));
        let half = score(&n, &used, &p);
        expect!["(95, 45)"].assert_eq(&format!("{:?}", (empty, half)));
    }

    #[test]
    fn messages() {
        let mut r = BTreeMap::new();
        r.insert("Insufficient cpu".to_owned(), 1);
        r.insert("node(s) had untolerated taint {k: v}".to_owned(), 1);
        r.insert("Too many pods".to_owned(), 12);
        expect![[r#"0/14 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: v}, 12 Too many pods."#]]
            .assert_eq(&fit_error_message(14, &r));
        expect![[r#"no nodes available to schedule pods"#]].assert_eq(&fit_error_message(0, &r));
    }
}
