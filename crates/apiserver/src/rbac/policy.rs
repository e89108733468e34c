//! Upstream's default ClusterRoles and ClusterRoleBindings (bootstrap policy,
//! `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`), reconciled at every start as
//! kube-apiserver's `rbac/bootstrap-roles` post-start hook does, and ClusterRole aggregation
//! (kube-controller-manager's `clusterrole-aggregation` controller).
//!
//! Reconciling adds what a default object lacks (rules, subjects, labels, annotations,
//! aggregation selectors) and never removes what an administrator added; an object annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"` is left alone.
//!
//! Only the roles that matter to a Kinetic cluster are here: the user-facing roles
//! (`cluster-admin`, `admin`, `edit`, `view` and their `system:aggregate-to-*` parts), discovery
//! and self-review (`system:discovery`, `system:basic-user`, `system:public-info-viewer`),
//! `system:monitoring`, `system:auth-delegator`, and the component roles `system:node`,
//! `system:kube-controller-manager`, `system:kube-scheduler`, `system:node-proxier`,
//! `system:volume-scheduler`. Their rules are upstream's for the resources upstream has.
//! One is Kinetic's: `kinetic:node-agent`, bound to `system:nodes`, the part of OpenKruise's
//! `kruise-daemon-role` the node agent needs (ContainerRecreateRequests).

use serde_json::{Value, json};

use super::rules::PolicyRule;
use super::{AUTOUPDATE, CLUSTER_BINDINGS, CLUSTER_ROLES, GROUP};
use crate::rest::{Api, WriteOptions};

/// The ClusterRole (and its binding to `system:nodes`) with what Kinetic's node agent needs
/// beyond the Node authoriser: Kruise's daemon rules.
pub const NODE_AGENT_ROLE: &str = "kinetic:node-agent";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const RW: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const EVENTS_WRITE: &[&str] = &["create", "patch", "update"];

fn v(x: &[&str]) -> Vec<String> {
    x.iter().map(|s| (*s).to_owned()).collect()
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: v(verbs),
        api_groups: v(groups),
        resources: v(resources),
        ..PolicyRule::default()
    }
}

fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule { resource_names: v(names), ..rule(verbs, groups, resources) }
}

fn urls(verbs: &[&str], paths: &[&str]) -> PolicyRule {
    PolicyRule { verbs: v(verbs), non_resource_urls: v(paths), ..PolicyRule::default() }
}

/// One default ClusterRole.
pub struct DefaultRole {
    pub name: &'static str,
    pub rules: Vec<PolicyRule>,
    /// `rbac.authorization.k8s.io/aggregate-to-*` labels this role carries.
    pub aggregate_to: &'static [&'static str],
    /// Aggregated roles select `rbac.authorization.k8s.io/aggregate-to-<this>: "true"`.
    pub aggregates: Option<&'static str>,
}

fn role(name: &'static str, rules: Vec<PolicyRule>) -> DefaultRole {
    DefaultRole { name, rules, aggregate_to: &[], aggregates: None }
}

/// The default ClusterRoles.
#[must_use]
pub fn cluster_roles() -> Vec<DefaultRole> {
    let core = &[""];
    vec![
        role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        DefaultRole { name: "admin", rules: vec![], aggregate_to: &[], aggregates: Some("admin") },
        DefaultRole {
            name: "edit",
            rules: vec![],
            aggregate_to: &["admin"],
            aggregates: Some("edit"),
        },
        DefaultRole {
            name: "view",
            rules: vec![],
            aggregate_to: &["edit"],
            aggregates: Some("view"),
        },
        DefaultRole {
            name: "system:aggregate-to-admin",
            rules: vec![
                rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                rule(RW, &[GROUP], &["rolebindings", "roles"]),
            ],
            aggregate_to: &["admin"],
            aggregates: None,
        },
        DefaultRole {
            name: "system:aggregate-to-edit",
            rules: vec![
                rule(
                    READ,
                    core,
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], core, &["serviceaccounts"]),
                rule(
                    WRITE,
                    core,
                    &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
                ),
                rule(&["create"], core, &["pods/eviction"]),
                rule(
                    WRITE,
                    core,
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], core, &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "ingresses",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
                rule(RW, &["coordination.k8s.io"], &["leases"]),
            ],
            aggregate_to: &["edit"],
            aggregates: None,
        },
        DefaultRole {
            name: "system:aggregate-to-view",
            rules: vec![
                rule(
                    READ,
                    core,
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    core,
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, core, &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
                ),
                rule(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
                rule(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
            aggregate_to: &["view"],
            aggregates: None,
        },
        role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![urls(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], core, &["secrets", "serviceaccounts"]),
                rule(&["delete"], core, &["secrets"]),
                rule(&["get"], core, &["configmaps", "namespaces", "secrets", "serviceaccounts"]),
                rule(&["update"], core, &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], core, &["serviceaccounts/token"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            vec![
                rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, core, &["nodes"]),
                rule(&["delete", "get", "list", "watch"], core, &["pods"]),
                rule(&["create"], core, &["bindings", "pods/binding"]),
                rule(&["patch", "update"], core, &["pods/status"]),
                rule(READ, core, &["replicationcontrollers", "services"]),
                rule(READ, &["apps", "extensions"], &["replicasets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, core, &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(READ, &["storage.k8s.io"], &["csinodes"]),
                rule(READ, core, &["namespaces"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
            ],
        ),
        role(
            "system:node",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                ),
                rule(READ, core, &["services"]),
                rule(&["create", "get", "list", "watch"], core, &["nodes"]),
                rule(&["patch", "update"], core, &["nodes/status"]),
                rule(&["patch", "update"], core, &["nodes"]),
                rule(EVENTS_WRITE, core, &["events"]),
                rule(READ, core, &["pods"]),
                rule(&["create", "delete"], core, &["pods"]),
                rule(&["patch", "update"], core, &["pods/status"]),
                rule(&["create"], core, &["pods/eviction"]),
                rule(READ, core, &["configmaps", "secrets"]),
                rule(&["get"], core, &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["get"], core, &["endpoints"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["create", "delete", "get", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
                rule(&["create"], core, &["serviceaccounts/token"]),
                rule(&["get", "patch", "update"], core, &["persistentvolumeclaims/status"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(
                    &["create", "delete", "get", "patch", "update"],
                    &["storage.k8s.io"],
                    &["csinodes"],
                ),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
            ],
        ),
        // Kinetic's node agent does kruise-daemon's work, so it gets that part of upstream
        // Kruise's `kruise-daemon-role` (`config/rbac/daemon_role.yaml`) the Node authoriser
        // has no opinion on: carrying out ContainerRecreateRequests (watch the ones labelled
        // with its node, move them through their phases in `status`, record the
        // unready-acquired annotation). Kruise grants it cluster-wide to the daemon's service
        // account; here to every node identity.
        role(
            NODE_AGENT_ROLE,
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &["apps.kruise.io"],
                    &["containerrecreaterequests"],
                ),
                rule(
                    &["get", "update", "patch"],
                    &["apps.kruise.io"],
                    &["containerrecreaterequests/status"],
                ),
            ],
        ),
        role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], core, &["endpoints", "services"]),
                rule(READ, core, &["nodes"]),
                rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
                rule(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        role(
            "system:volume-scheduler",
            vec![
                rule(&["get", "list", "patch", "update", "watch"], core, &["persistentvolumes"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    core,
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings: (name = role, subjects as (kind, name)).
#[must_use]
pub fn cluster_role_bindings() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("cluster-admin", vec![("Group", "system:masters")]),
        ("system:basic-user", vec![("Group", "system:authenticated")]),
        ("system:discovery", vec![("Group", "system:authenticated")]),
        (
            "system:public-info-viewer",
            vec![("Group", "system:authenticated"), ("Group", "system:unauthenticated")],
        ),
        ("system:monitoring", vec![("Group", "system:monitoring")]),
        ("system:kube-controller-manager", vec![("User", "system:kube-controller-manager")]),
        ("system:kube-scheduler", vec![("User", "system:kube-scheduler")]),
        ("system:volume-scheduler", vec![("User", "system:kube-scheduler")]),
        ("system:node-proxier", vec![("User", "system:kube-proxy")]),
        (NODE_AGENT_ROLE, vec![("Group", super::node::NODES_GROUP)]),
    ]
}

fn bootstrap_meta(name: &str, labels: &[(String, String)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert(k.clone(), json!(v));
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn aggregate_label(to: &str) -> String {
    format!("{GROUP}/aggregate-to-{to}")
}

impl DefaultRole {
    fn to_json(&self) -> Value {
        let labels: Vec<(String, String)> =
            self.aggregate_to.iter().map(|t| (aggregate_label(t), "true".to_owned())).collect();
        let mut obj = json!({
            "apiVersion": format!("{GROUP}/v1"),
            "kind": "ClusterRole",
            "metadata": bootstrap_meta(self.name, &labels),
            "rules": self.rules.iter().map(PolicyRule::to_json).collect::<Vec<_>>(),
        });
        if let Some(sel) = self.aggregates {
            obj["aggregationRule"] =
                json!({"clusterRoleSelectors": [{"matchLabels": {aggregate_label(sel): "true"}}]});
        }
        obj
    }
}

/// Adds the labels and annotations of `want` that `have` lacks; true when something changed.
fn merge_meta(have: &mut Value, want: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let Some(w) = want.pointer(&format!("/metadata/{field}")).and_then(Value::as_object) else {
            continue;
        };
        let Some(md) = have.get_mut("metadata").and_then(Value::as_object_mut) else { continue };
        let m = md.entry(field).or_insert_with(|| json!({}));
        if !m.is_object() {
            *m = json!({});
        }
        if let Some(m) = m.as_object_mut() {
            for (k, v) in w {
                if !m.contains_key(k) {
                    m.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

/// The reconciled form of a stored default ClusterRole, or `None` when it needs no change
/// (upstream's `computeReconciledRole` without removing extra permissions).
pub(super) fn reconcile_role(have: &Value, want: &DefaultRole) -> Option<Value> {
    let mut out = have.clone();
    let mut changed = merge_meta(&mut out, &want.to_json());
    if want.aggregates.is_some() {
        let want_sel = want.to_json()["aggregationRule"]["clusterRoleSelectors"][0].clone();
        let sels = out
            .as_object_mut()?
            .entry("aggregationRule")
            .or_insert_with(|| json!({}))
            .as_object_mut()?
            .entry("clusterRoleSelectors")
            .or_insert_with(|| json!([]));
        if let Some(a) = sels.as_array_mut()
            && !a.contains(&want_sel)
        {
            a.push(want_sel);
            changed = true;
        }
    } else {
        let current = PolicyRule::list_from(have);
        let missing: Vec<&PolicyRule> = want
            .rules
            .iter()
            .filter(|r| !super::rules::uncovered(&current, std::slice::from_ref(r)).is_empty())
            .collect();
        if !missing.is_empty() {
            let rules = out.as_object_mut()?.entry("rules").or_insert_with(|| json!([]));
            if !rules.is_array() {
                *rules = json!([]);
            }
            if let Some(a) = rules.as_array_mut() {
                a.extend(missing.iter().map(|r| r.to_json()));
            }
            changed = true;
        }
    }
    changed.then_some(out)
}

fn binding_json(name: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": GROUP, "name": n}))
        .collect();
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRoleBinding",
        "metadata": bootstrap_meta(name, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    })
}

fn reconcile_binding(have: &Value, want: &Value) -> Option<Value> {
    let mut out = have.clone();
    let mut changed = merge_meta(&mut out, want);
    let subjects = out.as_object_mut()?.entry("subjects").or_insert_with(|| json!([]));
    if !subjects.is_array() {
        *subjects = json!([]);
    }
    let a = subjects.as_array_mut()?;
    for s in want["subjects"].as_array().into_iter().flatten() {
        let same = |x: &Value| x.get("kind") == s.get("kind") && x.get("name") == s.get("name");
        if !a.iter().any(same) {
            a.push(s.clone());
            changed = true;
        }
    }
    changed.then_some(out)
}

fn autoupdate_off(v: &Value) -> bool {
    v.pointer(&format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1")))
        .and_then(Value::as_str)
        == Some("false")
}

/// Creates or reconciles one default object.
async fn ensure(
    api: &Api,
    plural: &str,
    name: &str,
    want: Value,
    reconcile: impl Fn(&Value) -> Option<Value>,
) -> Result<(), crate::error::ApiError> {
    let Some(res) = api.registry.get(GROUP, "v1", plural) else { return Ok(()) };
    let opts = WriteOptions::default();
    match api.get(&res, "", name) {
        Err(e) if e.code == 404 => match api.create(&res, "", want, &opts).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
        Ok(have) if autoupdate_off(&have.value()) => Ok(()),
        Ok(have) => match reconcile(&have.value()) {
            None => Ok(()),
            Some(new) => api.update(&res, "", name, new, None, &opts).await.map(|_| ()),
        },
    }
}

/// Creates the default ClusterRoles and ClusterRoleBindings, or reconciles them.
///
/// # Errors
/// A default object cannot be written (the message names it).
pub async fn bootstrap(api: &Api) -> Result<(), String> {
    for r in cluster_roles() {
        ensure(api, CLUSTER_ROLES, r.name, r.to_json(), |have| reconcile_role(have, &r))
            .await
            .map_err(|e| format!("clusterrole {}: {}", r.name, e.message))?;
    }
    for (name, subjects) in cluster_role_bindings() {
        let want = binding_json(name, &subjects);
        ensure(api, CLUSTER_BINDINGS, name, want.clone(), |have| reconcile_binding(have, &want))
            .await
            .map_err(|e| format!("clusterrolebinding {name}: {}", e.message))?;
    }
    aggregate(api).await;
    Ok(())
}

/// One pass of ClusterRole aggregation: each ClusterRole with an `aggregationRule` gets the
/// union of the rules of the ClusterRoles its selectors match (upstream's
/// `ClusterRoleAggregationController`). Repeated until nothing changes, so chains (view into
/// edit into admin) settle in one call.
pub async fn aggregate(api: &Api) {
    let Some(res) = api.registry.get(GROUP, "v1", CLUSTER_ROLES) else { return };
    for _ in 0..8 {
        let roles: Vec<Value> =
            api.store.read().list(&res.storage, None, None).map(|(_, s)| s.value()).collect();
        let mut changed = false;
        for agg in &roles {
            let Some(sels) =
                agg.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array)
            else {
                continue;
            };
            let sels: Vec<_> = sels
                .iter()
                .filter_map(|s| {
                    kinetic_machinery::selector::LabelSelector::from_label_selector(s).ok()
                })
                .collect();
            let name = agg.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let mut rules: Vec<PolicyRule> = Vec::new();
            for other in &roles {
                let other_name = other.pointer("/metadata/name").and_then(Value::as_str);
                if other_name == Some(name) {
                    continue;
                }
                let labels = other.pointer("/metadata/labels").and_then(Value::as_object);
                if !sels.iter().any(|s| s.matches(labels)) {
                    continue;
                }
                for r in PolicyRule::list_from(other) {
                    if !rules.contains(&r) {
                        rules.push(r);
                    }
                }
            }
            if PolicyRule::list_from(agg) == rules {
                continue;
            }
            let json_rules: Vec<Value> = rules.iter().map(PolicyRule::to_json).collect();
            let r = api
                .update_with(&res, "", name, None, &WriteOptions::default(), |cur| {
                    let mut new = cur.clone();
                    new["rules"] = Value::Array(json_rules.clone());
                    Ok(new)
                })
                .await;
            match r {
                Ok(_) => changed = true,
                Err(e) => tracing::warn!(clusterrole = name, error = %e, "aggregating failed"),
            }
        }
        if !changed {
            return;
        }
    }
}
