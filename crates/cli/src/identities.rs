//! Least-privilege identities of Kinetic's own components, and the RBAC objects that give them
//! their rights (issue 16, part 2).
//!
//! - The controllers (`kinetic controller`, and the controllers, scheduler and serving gateway
//!   inside `kinetic up`) are user [`CONTROLLER_USER`] (a client certificate on `kinetic up`;
//!   on a real cluster that user or the `kinetic-system/kinetic-controller` ServiceAccount),
//!   bound to the ClusterRole [`CONTROLLER_ROLE`]: the resources of every controller in
//!   `crates/controllers` with the verbs of a controller (read, write, delete), and nothing
//!   else — no Secrets, no RBAC objects, no writes to Nodes beyond patches.
//! - A node agent is `system:node:NAME` in `system:nodes`. The API server's Node authoriser
//!   (upstream's, `apiserver::rbac::node`) gives it its Node, Lease and pods and what they
//!   reference; the ClusterRole [`NODE_ROLE`], bound to the group, adds only what Kinetic's
//!   agent does beyond a kubelet: the local-path provisioner (claims, volumes, classes),
//!   OpenKruise's NodeImage and ContainerRecreateRequest daemons; and the Role
//!   [`NODE_CA_READER`] in `kube-system` lets it read the client CA it verifies callers with.
//!
//! [`objects`] are the same objects `kinetic controller --print-rbac` prints for a real cluster
//! and `kinetic up` applies at every start (server-side apply: rules added in a new version
//! reach an old cluster).

use anyhow::Context as _;
use serde_json::{Value, json};

pub const CONTROLLER_USER: &str = "system:kinetic-controller";
pub const CONTROLLER_ROLE: &str = "system:kinetic-controller";
/// The ServiceAccount that may run the controllers in a real cluster.
pub const CONTROLLER_SA_NAMESPACE: &str = "kinetic-system";
pub const CONTROLLER_SA: &str = "kinetic-controller";
pub const NODE_ROLE: &str = "system:kinetic-node";
pub const NODE_CA_READER: &str = "kinetic:node-client-ca-reader";
pub const NODES_GROUP: &str = "system:nodes";
/// The field manager of the applies.
const MANAGER: &str = "kinetic";

/// Every verb of a controller on a resource it owns (not `escalate`, `bind` or `impersonate`).
const ALL: &[&str] =
    &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];
const READ: &[&str] = &["get", "list", "watch"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// The rules of the controllers, derived from the API each controller module uses
/// (`crates/controllers/src`, the scheduler, the serving gateway and autoscaler, the CRD
/// installer, the SidecarSet webhook's configuration, leader election).
#[must_use]
pub fn controller_rules() -> Vec<Value> {
    vec![
        // Pods (every workload controller, the scheduler's binding, PodPool, the disruption
        // controllers' evictions), Services/Endpoints (the endpoints and serving controllers),
        // claims and volumes (the volume controller, StatefulSets), ConfigMaps (Knative's
        // config-* in knative-serving), Events.
        rule(
            ALL,
            &[""],
            &[
                "pods",
                "pods/status",
                "pods/binding",
                "pods/eviction",
                "services",
                "services/status",
                "endpoints",
                "events",
                "configmaps",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "persistentvolumes",
                "persistentvolumes/status",
            ],
        ),
        // SidecarSet and the serving autoscaler create their system namespaces.
        rule(&["get", "list", "watch", "create"], &[""], &["namespaces"]),
        // The scheduler and the NodeImage and ImagePullJob controllers read nodes; NodeImage
        // labels them.
        rule(&["get", "list", "watch", "patch", "update"], &[""], &["nodes"]),
        // Workloads, Jobs, budgets, HPAs, EndpointSlices, leader election and autoscaler Leases.
        rule(
            ALL,
            &[
                "apps",
                "batch",
                "policy",
                "autoscaling",
                "discovery.k8s.io",
                "coordination.k8s.io",
                "events.k8s.io",
            ],
            &["*"],
        ),
        rule(ALL, &["storage.k8s.io"], &["storageclasses", "csinodes"]),
        // The CRDs the controllers install at start.
        rule(
            &["get", "list", "watch", "create", "update", "patch"],
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
        ),
        // `--webhook-listen`: the SidecarSet injection webhook's configuration.
        rule(ALL, &["admissionregistration.k8s.io"], &["mutatingwebhookconfigurations"]),
        // The kinds the controllers serve.
        rule(
            ALL,
            &[
                "apps.kruise.io",
                "policy.kruise.io",
                "kinetic.dev",
                "serving.knative.dev",
                "autoscaling.internal.knative.dev",
                "networking.internal.knative.dev",
                "autoscaling.crane.io",
                "agents.x-k8s.io",
                "extensions.agents.x-k8s.io",
            ],
            &["*"],
        ),
        // The HPA scales any `*/scale` target (upstream's horizontal-pod-autoscaler role).
        rule(&["get", "update", "patch"], &["*"], &["*/scale"]),
        rule(
            &["get", "list"],
            &["metrics.k8s.io", "custom.metrics.k8s.io", "external.metrics.k8s.io"],
            &["*"],
        ),
    ]
}

/// What Kinetic's node agent does beyond a kubelet, which the Node authoriser does not cover.
#[must_use]
pub fn node_rules() -> Vec<Value> {
    vec![
        // The local-path provisioner: it watches claims, annotates them, and creates and
        // deletes the volumes of its own node.
        rule(&["get", "list", "watch", "patch", "update"], &[""], &["persistentvolumeclaims"]),
        rule(&["get", "list", "watch", "create", "delete"], &[""], &["persistentvolumes"]),
        rule(READ, &["storage.k8s.io"], &["storageclasses"]),
        // OpenKruise's daemon: image pre-download (NodeImage) and container recreation.
        rule(READ, &["apps.kruise.io"], &["nodeimages", "containerrecreaterequests"]),
        rule(&["patch", "update"], &["apps.kruise.io"], &["nodeimages/status"]),
        rule(
            &["patch", "update"],
            &["apps.kruise.io"],
            &["containerrecreaterequests", "containerrecreaterequests/status"],
        ),
    ]
}

fn meta(name: &str, ns: Option<&str>) -> Value {
    let mut m = json!({"name": name, "labels": {"app.kubernetes.io/managed-by": "kinetic"}});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": meta(name, None), "rules": rules})
}

fn binding(kind: &str, name: &str, ns: Option<&str>, role_kind: &str, subjects: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
           "metadata": meta(name, ns),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
           "subjects": subjects})
}

/// The ClusterRoles, bindings and the Role of Kinetic's controllers and node agents.
#[must_use]
pub fn objects() -> Vec<Value> {
    let nodes =
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": NODES_GROUP}]);
    vec![
        cluster_role(CONTROLLER_ROLE, controller_rules()),
        binding(
            "ClusterRoleBinding",
            CONTROLLER_ROLE,
            None,
            "ClusterRole",
            json!([
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER_USER},
                {"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": CONTROLLER_SA_NAMESPACE},
            ]),
        ),
        cluster_role(NODE_ROLE, node_rules()),
        binding("ClusterRoleBinding", NODE_ROLE, None, "ClusterRole", nodes.clone()),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": meta(NODE_CA_READER, Some("kube-system")),
               "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                          "resourceNames": ["extension-apiserver-authentication"],
                          "verbs": READ}]}),
        binding("RoleBinding", NODE_CA_READER, Some("kube-system"), "Role", nodes),
    ]
}

/// [`objects`] as one YAML stream, for `kubectl apply -f -`.
///
/// # Errors
/// Serialisation fails (it does not for these values).
pub fn yaml() -> anyhow::Result<String> {
    let mut out = String::from(
        "# Kinetic's controllers and node agents: least-privilege RBAC (kinetic controller --print-rbac).\n\
         # Node agents also need kube-apiserver's Node authoriser and NodeRestriction admission\n\
         # (--authorization-mode=Node,RBAC), which give a node its own Node, Lease and pods.\n",
    );
    for o in objects() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&o).context("encoding the RBAC objects as YAML")?);
    }
    Ok(out)
}

/// Applies [`objects`] (server-side apply, forced: Kinetic owns these objects).
///
/// # Errors
/// A write is refused.
pub async fn apply(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use kube::api::{Api, Patch, PatchParams};
    let pp = PatchParams::apply(MANAGER).force();
    for o in objects() {
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let kind = o["kind"].as_str().unwrap_or_default().to_owned();
        let patch = Patch::Apply(&o);
        let r = match kind.as_str() {
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone()).patch(&name, &pp, &patch).await.map(drop)
            }
            "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone())
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            "Role" => Api::<Role>::namespaced(client.clone(), &ns)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            _ => Api::<RoleBinding>::namespaced(client.clone(), &ns)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
        };
        r.with_context(|| format!("applying the {kind} {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_controllers_get_no_secrets_rbac_or_escalation_verbs() {
        for r in controller_rules().iter().chain(node_rules().iter()) {
            let list = |k: &str| -> Vec<String> {
                r[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
            };
            for v in list("verbs") {
                assert!(!["*", "escalate", "bind", "impersonate"].contains(&v.as_str()), "{r}");
            }
            assert!(!list("resources").iter().any(|x| x == "secrets"), "{r}");
            assert!(
                !list("apiGroups").iter().any(|g| g == "rbac.authorization.k8s.io" || g == "*")
                    || list("resources") == ["*/scale"],
                "{r}"
            );
        }
        let y = yaml().unwrap();
        assert_eq!(y.lines().filter(|l| *l == "---").count(), objects().len());
    }
}
