//! The built-in kinds: what is served, their OpenAPI schemas (generated from `k8s-openapi`), the
//! defaults kubectl users rely on, and the validation upstream's registry strategies do.
//!
//! Defaults and validation follow upstream's `pkg/apis/*/v1/defaults.go` and
//! `pkg/apis/*/validation` for the fields we serve; where we do less, the comment says so.

use std::sync::Arc;

use kinetic_machinery::schema::Schema;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::registry::{Printer, Registry, Resource, ScalePaths, storage_key};
use crate::strategy::{Admission, Cleanup, Plain, Strategy};
pub use crate::validation::{
    DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG, is_dns1123_label, is_dns1123_subdomain,
    validate_pod_spec, validate_selector,
};

struct Spec {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    status: bool,
    scale: bool,
    fields: &'static [&'static str],
    schema_name: &'static str,
}

const BUILTINS: &[Spec] = &[
    Spec {
        group: "",
        kind: "Namespace",
        plural: "namespaces",
        short: &["ns"],
        namespaced: false,
        status: true,
        scale: false,
        fields: &["status.phase"],
        schema_name: "io.k8s.api.core.v1.Namespace",
    },
    Spec {
        group: "",
        kind: "Pod",
        plural: "pods",
        short: &["po"],
        namespaced: true,
        status: true,
        scale: false,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        schema_name: "io.k8s.api.core.v1.Pod",
    },
    Spec {
        group: "",
        kind: "Node",
        plural: "nodes",
        short: &["no"],
        namespaced: false,
        status: true,
        scale: false,
        fields: &["spec.unschedulable"],
        schema_name: "io.k8s.api.core.v1.Node",
    },
    Spec {
        group: "",
        kind: "Event",
        plural: "events",
        short: &["ev"],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        schema_name: "io.k8s.api.core.v1.Event",
    },
    Spec {
        group: "",
        kind: "ConfigMap",
        plural: "configmaps",
        short: &["cm"],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.core.v1.ConfigMap",
    },
    Spec {
        group: "",
        kind: "Secret",
        plural: "secrets",
        short: &[],
        namespaced: true,
        status: false,
        scale: false,
        fields: &["type"],
        schema_name: "io.k8s.api.core.v1.Secret",
    },
    Spec {
        group: "",
        kind: "Service",
        plural: "services",
        short: &["svc"],
        namespaced: true,
        status: true,
        scale: false,
        fields: &["spec.clusterIP", "spec.type"],
        schema_name: "io.k8s.api.core.v1.Service",
    },
    Spec {
        group: "",
        kind: "Endpoints",
        plural: "endpoints",
        short: &["ep"],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.core.v1.Endpoints",
    },
    Spec {
        group: "",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        short: &["sa"],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.core.v1.ServiceAccount",
    },
    Spec {
        group: "",
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        short: &["pvc"],
        namespaced: true,
        status: true,
        scale: false,
        // Upstream also selects on a legacy top-level `name`; Kinetic serves only the object
        // metadata fields for claims and volumes.
        fields: &[],
        schema_name: "io.k8s.api.core.v1.PersistentVolumeClaim",
    },
    Spec {
        group: "",
        kind: "PersistentVolume",
        plural: "persistentvolumes",
        short: &["pv"],
        namespaced: false,
        status: true,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.core.v1.PersistentVolume",
    },
    Spec {
        group: "storage.k8s.io",
        kind: "StorageClass",
        plural: "storageclasses",
        short: &["sc"],
        namespaced: false,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.storage.v1.StorageClass",
    },
    Spec {
        group: "coordination.k8s.io",
        kind: "Lease",
        plural: "leases",
        short: &[],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.coordination.v1.Lease",
    },
    Spec {
        group: "apps",
        kind: "Deployment",
        plural: "deployments",
        short: &["deploy"],
        namespaced: true,
        status: true,
        scale: true,
        fields: &[],
        schema_name: "io.k8s.api.apps.v1.Deployment",
    },
    Spec {
        group: "apps",
        kind: "ReplicaSet",
        plural: "replicasets",
        short: &["rs"],
        namespaced: true,
        status: true,
        scale: true,
        fields: &["status.replicas"],
        schema_name: "io.k8s.api.apps.v1.ReplicaSet",
    },
    Spec {
        group: "apps",
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        short: &[],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.apps.v1.ControllerRevision",
    },
    Spec {
        group: "discovery.k8s.io",
        kind: "EndpointSlice",
        plural: "endpointslices",
        short: &[],
        namespaced: true,
        status: false,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.api.discovery.v1.EndpointSlice",
    },
    Spec {
        group: "apiextensions.k8s.io",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        short: &["crd", "crds"],
        namespaced: false,
        status: true,
        scale: false,
        fields: &[],
        schema_name: "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    },
];

/// The OpenAPI definitions of every built-in kind and the types they reference, keyed by
/// definition name, with refs of the form `#/$defs/NAME`.
fn builtin_definitions() -> Map<String, Value> {
    use k8s_openapi::api::{apps, coordination, core, discovery, storage};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<core::v1::Namespace>();
    generator.subschema_for::<core::v1::Pod>();
    generator.subschema_for::<core::v1::Node>();
    generator.subschema_for::<core::v1::Event>();
    generator.subschema_for::<core::v1::ConfigMap>();
    generator.subschema_for::<core::v1::Secret>();
    generator.subschema_for::<core::v1::Service>();
    generator.subschema_for::<core::v1::Endpoints>();
    generator.subschema_for::<core::v1::ServiceAccount>();
    generator.subschema_for::<core::v1::PersistentVolumeClaim>();
    generator.subschema_for::<core::v1::PersistentVolume>();
    generator.subschema_for::<storage::v1::StorageClass>();
    generator.subschema_for::<core::v1::Binding>();
    generator.subschema_for::<coordination::v1::Lease>();
    generator.subschema_for::<apps::v1::Deployment>();
    generator.subschema_for::<apps::v1::ReplicaSet>();
    generator.subschema_for::<apps::v1::ControllerRevision>();
    generator.subschema_for::<discovery::v1::EndpointSlice>();
    generator.subschema_for::<apiextensions::v1::CustomResourceDefinition>();
    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    let mut defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for s in BUILTINS {
        annotate_patch_meta(
            &mut defs,
            s.kind,
            s.schema_name,
            &mut Vec::new(),
            &mut Default::default(),
        );
    }
    defs
}

/// The definition a schema refers to (`$ref`, or the items/values of a list/map).
fn referenced(prop: &Value) -> Option<&str> {
    let r = prop
        .get("$ref")
        .or_else(|| prop.pointer("/items/$ref"))
        .or_else(|| prop.pointer("/additionalProperties/$ref"))?;
    r.as_str()?.strip_prefix("#/$defs/")
}

/// Adds upstream's `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` to the list
/// properties reachable from `def` in an object of `kind`, from the same table the strategic
/// merge patch uses, so kubectl's client-side apply computes patches that merge lists by key.
pub(crate) fn annotate_patch_meta(
    defs: &mut Map<String, Value>,
    kind: &str,
    def: &str,
    path: &mut Vec<String>,
    seen: &mut std::collections::HashSet<(String, String)>,
) {
    // Definitions recur (JSONSchemaProps); a definition reached under the same field twice has
    // the same lists.
    let last = path.last().cloned().unwrap_or_default();
    if !seen.insert((def.to_owned(), last)) || path.len() > 24 {
        return;
    }
    let props: Vec<(String, Value)> =
        match defs.get(def).and_then(|d| d.get("properties")).and_then(Value::as_object) {
            Some(p) => p.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => return,
        };
    for (name, prop) in props {
        path.push(name.clone());
        if prop.get("type").and_then(Value::as_str) == Some("array")
            && let Some((strategy, key)) = kinetic_machinery::patch::list_patch_meta(
                Some(kind),
                path.iter().map(String::as_str),
            )
            && let Some(p) = defs
                .get_mut(def)
                .and_then(|d| d.pointer_mut(&format!("/properties/{name}")))
                .and_then(Value::as_object_mut)
        {
            p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if let Some(key) = key {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
        if let Some(next) = referenced(&prop).map(str::to_owned) {
            annotate_patch_meta(defs, kind, &next, path, seen);
        }
        path.pop();
    }
}

/// Registers the built-in kinds.
///
/// # Errors
/// A generated schema does not parse as a structural schema (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), kinetic_machinery::schema::SchemaError> {
    let defs = builtin_definitions();
    for s in BUILTINS {
        let root = json!({"$ref": format!("#/$defs/{}", s.schema_name)});
        let schema = Schema::from_json(&root, Some(&defs))?;
        registry.add(Resource {
            group: s.group.to_owned(),
            version: "v1".to_owned(),
            kind: s.kind.to_owned(),
            plural: s.plural.to_owned(),
            singular: s.kind.to_lowercase(),
            short_names: s.short.iter().map(|x| (*x).to_owned()).collect(),
            categories: if matches!(
                s.kind,
                "Pod" | "Service" | "Deployment" | "ReplicaSet" | "ReplicationController"
            ) {
                vec!["all".to_owned()]
            } else {
                vec![]
            },
            namespaced: s.namespaced,
            status: s.status,
            scale: s.scale.then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: None,
            }),
            builtin: true,
            schema: Some(Arc::new(schema)),
            schema_name: s.schema_name.to_owned(),
            printer: Printer::Builtin,
            storage: storage_key(s.group, s.plural),
            field_selectors: s.fields.iter().map(|x| (*x).to_owned()).collect(),
            strategy: strategy(s.kind),
        });
    }
    registry.set_builtin_defs(defs);
    Ok(())
}

/// The strategy of each built-in kind (the one place that maps kind names to behaviour; a
/// kind without special rules gets [`Plain`]).
fn strategy(kind: &str) -> Arc<dyn Strategy> {
    match kind {
        "Pod" => Arc::new(PodStrategy),
        "Namespace" => Arc::new(NamespaceStrategy),
        "Deployment" => Arc::new(WorkloadStrategy { deployment: true }),
        "ReplicaSet" => Arc::new(WorkloadStrategy { deployment: false }),
        "Service" => Arc::new(ServiceStrategy),
        "Secret" => Arc::new(SecretStrategy),
        "ConfigMap" => Arc::new(ConfigMapStrategy),
        "ServiceAccount" => Arc::new(crate::serviceaccount::ServiceAccountStrategy),
        "Endpoints" => Arc::new(EndpointsStrategy),
        "EndpointSlice" => Arc::new(EndpointSliceStrategy),
        "Event" => Arc::new(EventStrategy),
        "ControllerRevision" => Arc::new(RevisionStrategy),
        "CustomResourceDefinition" => Arc::new(crate::crd::CrdStrategy),
        "PersistentVolumeClaim" => Arc::new(crate::storage::ClaimStrategy),
        "PersistentVolume" => Arc::new(crate::storage::VolumeStrategy),
        "StorageClass" => Arc::new(crate::storage::ClassStrategy),
        _ => Arc::new(Plain),
    }
}

/// `core/v1` Pods (upstream `pkg/registry/core/pod/strategy.go`).
#[derive(Debug)]
pub struct PodStrategy;

impl Strategy for PodStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj_mut(obj, "spec") {
            default_pod_spec(spec);
            default_requests_to_limits(spec);
        }
        if let Some(status) = obj_mut(obj, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    }

    /// Upstream's LimitRanger defaults ([`crate::quota::limits::default_pod`]) and
    /// ServiceAccount admission plugin ([`crate::serviceaccount::admit_pod`]), then, as the mutating webhooks run after the built-in plugins, OpenKruise's SidecarSet
    /// injection ([`crate::kruise::inject_sidecars`]) when the webhooks are on.
    fn prepare_create(&self, adm: &Admission<'_>, obj: &mut Value) {
        // Upstream defaults requests to limits when the pod is decoded, before any admission
        // plugin: LimitRanger's `defaultRequest` must not win over a container's own limit.
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            default_requests_to_limits(spec);
        }
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let ranges = crate::quota::limit_ranges(adm.store, ns);
        crate::quota::limits::default_pod(&ranges, obj);
        crate::serviceaccount::admit_pod(adm.store, obj);
        if adm.webhooks {
            crate::kruise::inject_sidecars(adm.store, obj);
        }
    }

    /// `spec.nodeName` is set once, by `binding`; updates keep the stored one.
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        let old_node = old.pointer("/spec/nodeName").cloned();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            match old_node {
                Some(n) => spec.insert("nodeName".into(), n),
                None => spec.remove("nodeName"),
            };
        }
    }

    /// Upstream's podStatusStrategy resets only spec, deletionTimestamp and ownerReferences:
    /// labels, annotations and finalizers come from the request (kruise-daemon writes an
    /// annotation through pods/status).
    fn status_keeps_metadata(&self) -> &'static [&'static str] {
        &["labels", "annotations", "finalizers"]
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_pod_spec(obj.get("spec"), "spec", &mut causes);
        validate_deletion_cost(obj, &mut causes);
        if let (Some(old), Some(new)) = (old.and_then(|o| o.get("spec")), obj.get("spec"))
            && strip_mutable_pod_fields(old) != strip_mutable_pod_fields(new)
        {
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                field: "spec".into(),
            });
        }
        causes
    }

    /// LimitRanger's bounds, on create only (upstream skips pod updates: containers'
    /// resources change only through `resize`).
    fn validate_admission(
        &self,
        adm: &Admission<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        if old.is_some() {
            return Ok(());
        }
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        crate::quota::limits::validate_pod(&crate::quota::limit_ranges(adm.store, ns), obj)
    }

    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Pod
    }

    /// Deletes, evictions and spec updates answer to OpenKruise's PodUnavailableBudgets.
    fn guards_disruption(&self) -> bool {
        true
    }

    /// `binding` assigns the node, `eviction` deletes within the pod's disruption budget
    /// ([`crate::eviction`]); the node agent serves the rest (see [`crate::logs`]).
    fn subresources(&self) -> &'static [&'static str] {
        &["binding", "eviction", "log", "exec", "attach", "portforward"]
    }

    /// Upstream's grace rules: an unscheduled or finished pod goes at once; otherwise the
    /// request's period, else the pod's `terminationGracePeriodSeconds`, else 30 s.
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> i64 {
        let scheduled =
            obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if !scheduled || matches!(phase, "Succeeded" | "Failed") {
            return 0;
        }
        let g = requested
            .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30);
        // Upstream takes any int64; a deadline past year 9999 cannot be written, so cap it
        // (a century is as good as forever for a grace period).
        g.clamp(0, MAX_GRACE_SECONDS)
    }

    /// A pod with a deletion grace period is removed by its node agent (or a delete with
    /// grace 0), not when its last finalizer goes.
    fn awaits_termination(&self, obj: &Value) -> bool {
        obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0
    }
}

/// The longest grace period a deletion records (100 years).
const MAX_GRACE_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// `core/v1` Namespaces (upstream `pkg/registry/core/namespace`).
#[derive(Debug)]
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        if !is_dns1123_label(name) {
            causes.push(crate::error::invalid("metadata.name", name, DNS1123_LABEL_MSG));
        }
    }

    fn default(&self, obj: &mut Value) {
        let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
        if let Some(labels) = obj.get_mut("metadata").and_then(|m| obj_mut(m, "labels")) {
            // Upstream sets this immutable label on every namespace (since 1.21).
            labels.insert("kubernetes.io/metadata.name".into(), name);
        }
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "finalizers", json!(["kubernetes"]));
        }
        if let Some(status) = obj_mut(obj, "status") {
            set_default(status, "phase", json!("Active"));
        }
    }

    fn subresources(&self) -> &'static [&'static str] {
        &["finalize"]
    }

    /// Upstream's namespace storage has no `DeleteCollection`.
    fn deletes_collections(&self) -> bool {
        false
    }

    fn forbids_delete(&self, name: &str) -> Option<String> {
        matches!(name, "default" | "kube-system" | "kube-public").then(|| {
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
        })
    }

    fn begin_deletion(&self, obj: &mut Value) {
        if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
            st.insert("phase".into(), json!("Terminating"));
        }
    }

    /// A namespace goes away only after the namespace controller emptied it and cleared
    /// `spec.finalizers`.
    fn holds_deletion(&self, obj: &Value) -> bool {
        obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
    }

    fn cleanup(&self) -> Cleanup {
        Cleanup::NamespaceContents
    }
}

/// `apps/v1` Deployments and ReplicaSets.
#[derive(Debug)]
pub struct WorkloadStrategy {
    deployment: bool,
}

impl Strategy for WorkloadStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "replicas", json!(1));
            if self.deployment {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                if let Some(st) = strategy.as_object_mut() {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type") == Some(&json!("RollingUpdate")) {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
            }
            if let Some(ps) = spec.get_mut("template").and_then(|t| obj_mut(t, "spec")) {
                default_pod_spec(ps);
            }
        }
    }

    /// Upstream's deploymentStatusStrategy resets spec and labels; Kinetic keeps annotations
    /// and finalizers from the request and ownerReferences from the stored object.
    fn status_keeps_metadata(&self) -> &'static [&'static str] {
        if self.deployment { &["annotations", "finalizers"] } else { &[] }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        let spec = obj.get("spec");
        validate_selector(obj, old, "deployment", &mut causes);
        if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64)
            && r < 0
        {
            causes.push(crate::error::invalid(
                "spec.replicas",
                &r.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        validate_pod_spec(
            spec.and_then(|s| s.pointer("/template/spec")),
            "spec.template.spec",
            &mut causes,
        );
        causes
    }
}

/// `core/v1` Services: defaults, port validation, and a cluster IP allocated on create.
#[derive(Debug)]
pub struct ServiceStrategy;

impl Strategy for ServiceStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn validate_name(&self, name: &str, causes: &mut Vec<Cause>) {
        if !is_dns1123_label(name) {
            causes.push(crate::error::invalid("metadata.name", name, DNS1123_LABEL_MSG));
        }
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "targetPort", port);
                    }
                }
            }
        }
    }

    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Service
    }

    /// Picks a free address in 10.96.0.0/16 for a ClusterIP service without one.
    fn prepare_create(&self, adm: &Admission<'_>, body: &mut Value) {
        let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) else { return };
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
        if ty == "ExternalName"
            || spec.get("clusterIP").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        {
            if let Some(ip) = spec.get("clusterIP").cloned() {
                spec.insert("clusterIPs".into(), json!([ip]));
            }
            return;
        }
        let st = adm.store.read();
        let used: std::collections::HashSet<String> = st
            .list("/services", None, None)
            .filter_map(|(_, s)| {
                s.value().pointer("/spec/clusterIP").and_then(Value::as_str).map(str::to_owned)
            })
            .collect();
        drop(st);
        // 10.96.0.1 is the `kubernetes` service upstream; start after it.
        for n in 2u32..65534 {
            let ip = format!("10.96.{}.{}", n >> 8, n & 0xff);
            if !used.contains(&ip) {
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
                return;
            }
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
            for (i, p) in ports.iter().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(crate::error::invalid(
                        &format!("spec.ports[{i}].port"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        causes
    }
}

/// `core/v1` ConfigMaps: charged as `configmaps` and `count/configmaps`.
#[derive(Debug)]
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Count { legacy_name: true }
    }
}

/// `core/v1` Secrets.
#[derive(Debug)]
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Count { legacy_name: true }
    }

    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            set_default(m, "type", json!("Opaque"));
            // stringData is write-only: merged into data, as upstream does on write.
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                use base64::Engine as _;
                let data = m.entry("data").or_insert_with(|| json!({}));
                if let Some(data) = data.as_object_mut() {
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or_default();
                        let enc = base64::engine::general_purpose::STANDARD.encode(s);
                        data.insert(k, Value::String(enc));
                    }
                }
            }
        }
    }
}

/// `core/v1` Endpoints.
#[derive(Debug)]
pub struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    /// Upstream's SetDefaults_EndpointPort: every subset port's protocol is TCP unless given.
    fn default(&self, obj: &mut Value) {
        let subsets = obj.get_mut("subsets").and_then(Value::as_array_mut);
        for subset in subsets.into_iter().flatten() {
            let ports = subset.get_mut("ports").and_then(Value::as_array_mut);
            for p in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// `discovery.k8s.io/v1` EndpointSlices.
#[derive(Debug)]
pub struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    /// Upstream's SetDefaults_EndpointPort (discovery/v1): protocol TCP, name "".
    fn default(&self, obj: &mut Value) {
        let ports = obj.get_mut("ports").and_then(Value::as_array_mut);
        for p in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            set_default(p, "name", json!(""));
        }
    }
}

/// `core/v1` Events ([`crate::events`]).
#[derive(Debug)]
pub struct EventStrategy;

impl Strategy for EventStrategy {
    /// Upstream's quota admission ignores events.
    fn quota(&self) -> crate::quota::Evaluator {
        crate::quota::Evaluator::Ignored
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        crate::events::validate(obj)
    }
}

/// `apps/v1` ControllerRevisions ([`crate::revisions`]).
#[derive(Debug)]
pub struct RevisionStrategy;

impl Strategy for RevisionStrategy {
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        crate::revisions::validate(obj, old)
    }
}

/// The object at `key`, created empty when missing or not an object.
pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

/// Sets `key` to `v` when it is missing or null (how upstream's defaulters treat nil fields).
pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

pub(crate) fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for field in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

/// Upstream `SetDefaults_Pod` (pods only, not templates): a container's requests default to
/// its limits for each resource it limits but does not request.
fn default_requests_to_limits(spec: &mut Map<String, Value>) {
    for field in ["initContainers", "containers"] {
        let cs = spec.get_mut(field).and_then(Value::as_array_mut);
        for c in cs.into_iter().flatten() {
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else { continue };
            let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            if let Some(requests) = obj_mut_in(res, "requests") {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// The object at `key` of a map, created empty when missing or not an object.
fn obj_mut_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_owned();
    // Upstream: Always when the tag is `latest` or absent and no digest is given.
    let policy = if image_tag_is_latest(&image) { "Always" } else { "IfNotPresent" };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// Upstream `ValidatePodSpecificAnnotations`: `controller.kubernetes.io/pod-deletion-cost`,
/// when present, must parse as a 32-bit integer (issue 18: any value was accepted and then read
/// as 0 by the controllers that rank victims by it).
fn validate_deletion_cost(obj: &Value, causes: &mut Vec<Cause>) {
    const KEY: &str = "controller.kubernetes.io/pod-deletion-cost";
    let value = obj.pointer("/metadata/annotations").and_then(|a| a.get(KEY));
    if let Some(v) = value.and_then(Value::as_str)
        && v.parse::<i32>().is_err()
    {
        let field = format!("metadata.annotations[{KEY}]");
        causes.push(crate::error::invalid(&field, v, "must be a 32bit integer"));
    }
}

/// The pod spec with the fields upstream lets an update change removed, for comparison.
fn strip_mutable_pod_fields(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("terminationGracePeriodSeconds");
        // The binding subresource sets nodeName once; updates keep it (checked separately).
        m.remove("nodeName");
        for field in ["initContainers", "containers"] {
            if let Some(cs) = m.get_mut(field).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                    // Resizes are allowed in place since 1.33 (InPlacePodVerticalScaling).
                    c.remove("resources");
                }
            }
        }
    }
    s
}

/// Maps an API error for a kind's validation into `Invalid`.
pub fn invalid(res: &Resource, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&res.kind, &res.group, name, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_follow_upstream() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx"},
            {"name": "b", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "c", "image": "r/x@sha256:00"}
        ]}});
        PodStrategy.default(&mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["spec"]["containers"][2]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["status"]["phase"], "Pending");
    }

    #[test]
    fn endpoint_ports_default_to_tcp() {
        let mut ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}],
                                         "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]});
        EndpointsStrategy.default(&mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(ep["subsets"][0]["ports"][1]["protocol"], "UDP");
        let mut slice = json!({"addressType": "IPv4", "ports": [{"port": 80}]});
        EndpointSliceStrategy.default(&mut slice);
        assert_eq!(slice["ports"][0], json!({"port": 80, "protocol": "TCP", "name": ""}));
    }

    #[test]
    fn pod_update_may_change_only_images() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        let cmd =
            json!({"spec": {"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}]}});
        assert!(PodStrategy.validate(&image, Some(&old)).is_empty());
        let causes = PodStrategy.validate(&cmd, Some(&old));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = WorkloadStrategy { deployment: true }.validate(&d, None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn names_are_checked_per_kind() {
        let mut causes = vec![];
        NamespaceStrategy.validate_name("a.b", &mut causes);
        Plain.validate_name("a.b", &mut causes);
        Plain.validate_name("A", &mut causes);
        assert_eq!(causes.len(), 2);
    }
}
