//! The Node authoriser and the essentials of NodeRestriction admission: what a node agent
//! (user `system:node:NAME` in group `system:nodes`) may do, as upstream's
//! `plugin/pkg/auth/authorizer/node` (with `AuthorizeNodeWithSelectors`, KEP-4601) and
//! `plugin/pkg/admission/noderestriction` decide it.
//!
//! A node may read and write its own Node and its Lease in `kube-node-lease`, read the pods
//! bound to it (get, and list/watch with `fieldSelector=spec.nodeName=NAME`) and write their
//! status, read the Secrets, ConfigMaps, PersistentVolumeClaims (and their volumes) those pods
//! reference, create tokens for their service accounts, and create Events; nothing about other
//! nodes' pods. Anything else it gets only from RBAC (the chain asks RBAC after a `NoOpinion`).
//!
//! Differences from upstream, on purpose:
//! - No graph kept up to date by informers: a relationship is looked up in the store when a
//!   node asks (the pods bound to the node in the object's namespace, read through the store's
//!   `spec.nodeName` field index). A node asks for few objects, and a decision is never stale.
//! - Kinetic's node agent writes labels and annotations of its pods (start-up timeline, pod
//!   pool state): `update`/`patch` of a pod bound to the node is allowed here, and [`admit`]
//!   refuses any change of such a pod's spec.
//! - Pod deletes and evictions are checked here against the stored pod (upstream checks them
//!   in NodeRestriction); creates of pods are allowed here and [`admit`] allows only mirror
//!   pods bound to the node, as upstream.
//! - Not followed: PersistentVolume → Secret edges (CSI secrets), ResourceClaims,
//!   VolumeAttachments, CSINodes, ResourceSlices (none of them is served), and NodeRestriction's
//!   label and taint rules for Node objects.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::rules::PolicyRule;
use crate::auth::{Attributes, Authorizer, Decision, UserInfo};
use crate::registry::storage_key;
use crate::store::{ObjKey, Store};

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Upstream's namespace of node heartbeats (`api.NamespaceNodeLease`).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The annotation that makes a pod a mirror pod (`kubetypes.ConfigMirrorAnnotationKey`).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The node a user is (upstream's `NodeIdentifier`): `Some(name)` for `system:node:NAME` in
/// `system:nodes` (`Some("")` when the name is empty), `None` for anyone else.
#[must_use]
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// What a pod refers to that its node needs to run it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    pub claims: BTreeSet<String>,
    pub service_account: String,
}

/// The objects a pod references (upstream's graph populator, `AddPod`): image pull secrets,
/// volumes (secret, configMap, persistentVolumeClaim, ephemeral, projected sources) and the
/// environment of every container (`valueFrom` and `envFrom`), and its service account.
#[must_use]
pub fn pod_refs(pod: &Value) -> PodRefs {
    let mut r = PodRefs::default();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let each = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    r.service_account = s(spec, "/serviceAccountName")
        .or_else(|| s(spec, "/serviceAccount"))
        .unwrap_or_else(|| "default".to_owned());
    for p in each(spec, "imagePullSecrets") {
        r.secrets.extend(s(&p, "/name"));
    }
    let pod_name = s(pod, "/metadata/name").unwrap_or_default();
    for v in each(spec, "volumes") {
        r.secrets.extend(s(&v, "/secret/secretName"));
        r.config_maps.extend(s(&v, "/configMap/name"));
        r.claims.extend(s(&v, "/persistentVolumeClaim/claimName"));
        if v.get("ephemeral").is_some_and(Value::is_object) {
            // Upstream's generic ephemeral volume: the claim is named POD-VOLUME.
            r.claims.insert(format!("{pod_name}-{}", s(&v, "/name").unwrap_or_default()));
        }
        for src in v.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            r.secrets.extend(s(src, "/secret/name"));
            r.config_maps.extend(s(src, "/configMap/name"));
        }
    }
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for c in each(spec, kind) {
            for e in each(&c, "env") {
                r.secrets.extend(s(&e, "/valueFrom/secretKeyRef/name"));
                r.config_maps.extend(s(&e, "/valueFrom/configMapKeyRef/name"));
            }
            for e in each(&c, "envFrom") {
                r.secrets.extend(s(&e, "/secretRef/name"));
                r.config_maps.extend(s(&e, "/configMapRef/name"));
            }
        }
    }
    r
}

/// The kinds a node reaches through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vertex {
    Pod,
    Secret,
    ConfigMap,
    Claim,
    Volume,
    ServiceAccount,
}

/// The Node authoriser of one server.
pub struct NodeAuthorizer {
    store: Store,
    /// What every node may do beyond the subdivided kinds (upstream's `NodeRules` without the
    /// rules the authoriser decides itself).
    rules: Vec<PolicyRule>,
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
    PolicyRule {
        verbs: v(verbs),
        api_groups: v(groups),
        resources: v(resources),
        ..PolicyRule::default()
    }
}

fn no_relationship(node: &str) -> Decision {
    Decision::NoOpinion(format!("no relationship found between node '{node}' and this object"))
}

impl NodeAuthorizer {
    #[must_use]
    pub fn new(store: Store) -> Arc<Self> {
        let read = ["get", "list", "watch"];
        let rules = vec![
            rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
            rule(
                &["create"],
                &["authorization.k8s.io"],
                &["localsubjectaccessreviews", "subjectaccessreviews"],
            ),
            rule(&read, &[""], &["services"]),
            rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
            rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            ),
            rule(&read, &["storage.k8s.io"], &["csidrivers"]),
            rule(&read, &["node.k8s.io"], &["runtimeclasses"]),
        ];
        Arc::new(Self { store, rules })
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        let key = ObjKey::new(&storage_key("", "pods"), ns, name);
        self.store.read().get(&key).map(|s| s.value())
    }

    /// The pods bound to `node`, in `ns` or everywhere.
    fn pods_on(&self, node: &str, ns: Option<&str>) -> Vec<Value> {
        let key = storage_key("", "pods");
        let state = self.store.read();
        state
            .list(&key, ns, None)
            .filter(|(_, s)| s.field("spec.nodeName") == Some(node))
            .map(|(_, s)| s.value())
            .collect()
    }

    /// Whether a path leads from the object to the node (upstream's `hasPathFrom`).
    fn path_from(&self, node: &str, kind: Vertex, ns: &str, name: &str) -> bool {
        match kind {
            Vertex::Pod => self.pod(ns, name).is_some_and(|p| bound_to(&p, node)),
            Vertex::Secret | Vertex::ConfigMap | Vertex::Claim | Vertex::ServiceAccount => {
                self.pods_on(node, Some(ns)).iter().any(|p| {
                    let r = pod_refs(p);
                    match kind {
                        Vertex::Secret => r.secrets.contains(name),
                        Vertex::ConfigMap => r.config_maps.contains(name),
                        Vertex::Claim => r.claims.contains(name),
                        _ => r.service_account == name,
                    }
                })
            }
            Vertex::Volume => {
                let claims = storage_key("", "persistentvolumeclaims");
                // The pods first: `pods_on` takes the store's read lock itself, and a second read
                // of a std `RwLock` on one thread deadlocks once the store's writer waits between
                // the two (Linux's lock prefers writers).
                let pods = self.pods_on(node, None);
                let state = self.store.read();
                pods.iter().any(|p| {
                    let ns = p.pointer("/metadata/namespace").and_then(Value::as_str);
                    pod_refs(p).claims.iter().any(|c| {
                        state.get(&ObjKey::new(&claims, ns.unwrap_or(""), c)).is_some_and(|s| {
                            s.value().pointer("/spec/volumeName").and_then(Value::as_str)
                                == Some(name)
                        })
                    })
                })
            }
        }
    }

    /// Upstream's `authorize`: a named object with a path to the node.
    fn related(&self, node: &str, kind: Vertex, a: &Attributes) -> Decision {
        if a.name.is_empty() {
            return Decision::NoOpinion("No Object name found".to_owned());
        }
        if self.path_from(node, kind, &a.namespace, &a.name) {
            Decision::Allow
        } else {
            no_relationship(node)
        }
    }

    fn read_namespaced(&self, node: &str, kind: Vertex, a: &Attributes) -> Decision {
        if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
            return Decision::NoOpinion("can only read resources of this type".to_owned());
        }
        if !a.subresource.is_empty() {
            return Decision::NoOpinion("cannot read subresource".to_owned());
        }
        if a.namespace.is_empty() {
            return Decision::NoOpinion("can only read namespaced object of this type".to_owned());
        }
        self.related(node, kind, a)
    }

    fn get_only(&self, node: &str, kind: Vertex, a: &Attributes) -> Decision {
        if a.verb != "get" {
            return Decision::NoOpinion("can only get individual resources of this type".into());
        }
        if !a.subresource.is_empty() {
            return Decision::NoOpinion("cannot get subresource".to_owned());
        }
        self.related(node, kind, a)
    }

    fn claim(&self, node: &str, a: &Attributes) -> Decision {
        if a.subresource != "status" {
            return self.get_only(node, Vertex::Claim, a);
        }
        if !matches!(a.verb.as_str(), "update" | "patch") {
            return Decision::NoOpinion("can only get/update/patch this type".to_owned());
        }
        self.related(node, Vertex::Claim, a)
    }

    fn token(&self, node: &str, a: &Attributes) -> Decision {
        if a.verb != "create" || a.name.is_empty() {
            return Decision::NoOpinion(
                "can only create tokens for individual service accounts".to_owned(),
            );
        }
        if a.subresource != "token" {
            return Decision::NoOpinion(
                "can only create token subresource of serviceaccount".to_owned(),
            );
        }
        self.related(node, Vertex::ServiceAccount, a)
    }

    fn pods(&self, node: &str, a: &Attributes) -> Decision {
        match (a.subresource.as_str(), a.verb.as_str()) {
            ("", "get") => self.get_only(node, Vertex::Pod, a),
            ("", "list" | "watch") => {
                if a.field_requires("spec.nodeName") == Some(node) {
                    return Decision::Allow;
                }
                if !a.name.is_empty() {
                    return self.related(node, Vertex::Pod, a);
                }
                Decision::NoOpinion(
                    "can only list/watch pods with spec.nodeName field selector".to_owned(),
                )
            }
            // Mirror pods only; [`admit`] checks the pod.
            ("", "create") => Decision::Allow,
            // Upstream's NodeRestriction checks deletes and evictions against the stored pod;
            // Kinetic's agent also patches its pods' labels and annotations ([`admit`] keeps
            // their spec).
            ("", "delete" | "update" | "patch") | ("eviction", "create") => {
                if self.path_from(node, Vertex::Pod, &a.namespace, &a.name) {
                    Decision::Allow
                } else {
                    Decision::NoOpinion(format!(
                        "node '{node}' can only {} pods with spec.nodeName set to itself",
                        if a.subresource.is_empty() { a.verb.as_str() } else { "evict" }
                    ))
                }
            }
            // [`admit`] checks that the pod is bound to the node.
            ("status", "update" | "patch") => Decision::Allow,
            _ => Decision::NoOpinion(String::new()),
        }
    }
}

fn bound_to(pod: &Value, node: &str) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
}

fn nodes(node: &str, a: &Attributes) -> Decision {
    match (a.subresource.as_str(), a.verb.as_str()) {
        // [`admit`] limits a node to its own Node object.
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Decision::Allow,
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                Decision::Allow
            } else if a.name.is_empty() {
                Decision::NoOpinion(format!(
                    "node '{node}' cannot read all nodes, only its own Node object"
                ))
            } else {
                Decision::NoOpinion(format!(
                    "node '{node}' cannot read '{}', only its own Node object",
                    a.name
                ))
            }
        }
        _ => Decision::NoOpinion(String::new()),
    }
}

fn lease(node: &str, a: &Attributes) -> Decision {
    if !matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
        return Decision::NoOpinion(
            "can only get, create, update, patch, or delete a node lease".to_owned(),
        );
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return Decision::NoOpinion(format!(
            "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
        ));
    }
    // The name of a create is checked by [`admit`].
    if a.verb != "create" && a.name != node {
        return Decision::NoOpinion(
            "can only access node lease with the same name as the requesting node".to_owned(),
        );
    }
    Decision::Allow
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, a: &Attributes) -> Decision {
        let Some(node) = node_identity(&a.user) else {
            return Decision::NoOpinion(String::new());
        };
        if node.is_empty() {
            return Decision::NoOpinion(format!("unknown node for user \"{}\"", a.user.name));
        }
        if a.resource_request {
            let d = match (a.api_group.as_str(), a.resource.as_str()) {
                ("", "secrets") => Some(self.read_namespaced(node, Vertex::Secret, a)),
                ("", "configmaps") => Some(self.read_namespaced(node, Vertex::ConfigMap, a)),
                ("", "persistentvolumeclaims") => Some(self.claim(node, a)),
                ("", "persistentvolumes") => Some(self.get_only(node, Vertex::Volume, a)),
                ("", "serviceaccounts") => Some(self.token(node, a)),
                ("coordination.k8s.io", "leases") => Some(lease(node, a)),
                ("", "nodes") => Some(nodes(node, a)),
                ("", "pods") => Some(self.pods(node, a)),
                _ => None,
            };
            if let Some(d) = d {
                return d;
            }
        }
        if self.rules.iter().any(|r| r.allows(a)) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// NodeRestriction's checks of a node's create or update (`old` is `Some` for updates): a node
/// creates only mirror pods bound to itself, changes only the metadata and status of pods bound
/// to itself, and writes only its own Node and Lease. `Err` is the reason of the 403.
///
/// # Errors
/// The write is one the node may not make.
pub fn admit(
    user: &UserInfo,
    group: &str,
    plural: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), String> {
    let Some(node) = node_identity(user) else { return Ok(()) };
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    match (group, plural, old) {
        ("", "pods", None) => {
            let mirror =
                obj.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR_ANNOTATION));
            if mirror.is_none() {
                return Err(format!(
                    "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node \"{node}\" can only create mirror pods"
                ));
            }
            if !bound_to(obj, node) {
                return Err(format!(
                    "node \"{node}\" can only create pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        ("", "pods", Some(old)) => {
            if !bound_to(old, node) {
                return Err(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            if obj.get("spec") != old.get("spec") {
                return Err(format!(
                    "node \"{node}\" can only change the metadata and status of its pods"
                ));
            }
            Ok(())
        }
        ("", "nodes", _) if name != node => {
            Err(format!("node \"{node}\" is not allowed to modify node \"{name}\""))
        }
        ("coordination.k8s.io", "leases", _) if name != node => {
            Err("can only access node lease with the same name as the requesting node".to_owned())
        }
        _ => Ok(()),
    }
}

/// NodeRestriction's check of a node's TokenRequest (`admitServiceAccount`): the token must be
/// bound to a pod (by uid) that runs on the node.
///
/// # Errors
/// 403 with upstream's reason when the node may not have this token.
pub fn admit_token(
    user: &UserInfo,
    store: &Store,
    ns: &str,
    account: &str,
    req: &Value,
) -> Result<(), crate::error::ApiError> {
    let Some(node) = node_identity(user) else { return Ok(()) };
    let refused = |why: &str| {
        let mut e = crate::error::ApiError::forbidden(format!(
            "serviceaccounts \"{account}\" is forbidden: {why}"
        ));
        e.details = Some(crate::error::details("", "serviceaccounts", account));
        e
    };
    let Some(bound) = req.pointer("/spec/boundObjectRef").filter(|b| b.is_object()) else {
        return Err(refused("node requested token not bound to a pod"));
    };
    let field = |k: &str| bound.get(k).and_then(Value::as_str).unwrap_or("");
    if field("kind") != "Pod" {
        return Err(refused(&format!(
            "node requested token bound to a {}, only pods are allowed",
            field("kind")
        )));
    }
    if field("uid").is_empty() {
        return Err(refused("node requested token with a pod binding without a uid"));
    }
    let key = ObjKey::new(&storage_key("", "pods"), ns, field("name"));
    let Some(pod) = store.read().get(&key).map(|s| s.value()) else {
        return Err(refused(&format!("pods \"{}\" not found", field("name"))));
    };
    if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(field("uid")) {
        return Err(refused(&format!(
            "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
            field("uid")
        )));
    }
    if !bound_to(&pod, node) {
        return Err(refused("node requested token bound to a pod scheduled on a different node"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
