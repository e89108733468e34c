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
fn annotate_patch_meta(
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
        });
    }
    registry.set_builtin_defs(defs);
    Ok(())
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

/// Applies upstream defaults for a built-in kind, in place, on create and update.
pub fn default(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_pod_spec(spec);
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        "Namespace" => {
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
        "Deployment" | "ReplicaSet" => {
            let is_deploy = kind == "Deployment";
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                if is_deploy {
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
        "Service" => {
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
        "Secret" => {
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
        "PersistentVolumeClaim" | "PersistentVolume" | "StorageClass" => {
            crate::storage::default(kind, obj);
        }
        "Endpoints" => {
            // Upstream's SetDefaults_EndpointPort: every subset port's protocol is TCP unless
            // given.
            let subsets = obj.get_mut("subsets").and_then(Value::as_array_mut);
            for subset in subsets.into_iter().flatten() {
                let ports = subset.get_mut("ports").and_then(Value::as_array_mut);
                for p in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            // Upstream's SetDefaults_EndpointPort (discovery/v1): protocol TCP, name "".
            let ports = obj.get_mut("ports").and_then(Value::as_array_mut);
            for p in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
                set_default(p, "name", json!(""));
            }
        }
        "ServiceAccount"
        | "ConfigMap"
        | "Event"
        | "Node"
        | "Lease"
        | "ControllerRevision"
        | "CustomResourceDefinition" => {}
        _ => {}
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
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

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Upstream `IsDNS1123Subdomain`: at most 253 characters matching the subdomain regex. Its parts
/// have no length limit of their own (a ConfigMap may be named with 70 `a`s).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
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

/// Checks an object name the way the kind's upstream validation does.
pub fn validate_name(kind: &str, name: &str, causes: &mut Vec<Cause>) {
    let label_only = matches!(kind, "Namespace" | "Service");
    let ok = if label_only { is_dns1123_label(name) } else { is_dns1123_subdomain(name) };
    if !ok {
        let msg = if label_only { DNS1123_LABEL_MSG } else { DNS1123_SUBDOMAIN_MSG };
        causes.push(crate::error::invalid("metadata.name", name, msg));
    }
}

/// Kind-specific validation of a defaulted object (after the schema check). `old` is the stored
/// object on update.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Pod" => {
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
        }
        "Deployment" | "ReplicaSet" => {
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
        }
        "PersistentVolumeClaim" | "PersistentVolume" | "StorageClass" => {
            causes.extend(crate::storage::validate(kind, obj, old));
        }
        "Event" => causes.extend(crate::events::validate(obj)),
        "ControllerRevision" => causes.extend(crate::revisions::validate(obj, old)),
        "Service" => {
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
        }
        _ => {}
    }
    causes
}

/// The workload selector rules shared by Deployment, ReplicaSet and CloneSet: required, not
/// empty, matching the template's labels ([`kinetic_rollout::validation::workload_selector`],
/// which the CloneSet controller applies too), immutable.
pub fn validate_selector(obj: &Value, old: Option<&Value>, what: &str, causes: &mut Vec<Cause>) {
    causes.extend(kinetic_rollout::validation::workload_selector(obj, what));
    if let (Some(o), Some(n)) =
        (old.and_then(|o| o.pointer("/spec/selector")), obj.pointer("/spec/selector"))
        && o != n
    {
        causes.push(crate::error::invalid("spec.selector", &n.to_string(), "field is immutable"));
    }
}

pub fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required(path, ""));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(Cause::required(&format!("{path}.containers"), ""));
    }
    let mut seen = std::collections::HashSet::new();
    for field in ["initContainers", "containers"] {
        for (i, c) in spec.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required(&format!("{p}.name"), "")),
                Some(n) if !is_dns1123_label(n) => {
                    causes.push(crate::error::invalid(&format!("{p}.name"), n, DNS1123_LABEL_MSG))
                }
                Some(n) if !seen.insert(n.to_owned()) => causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    message: format!("Duplicate value: \"{n}\""),
                    field: format!("{p}.name"),
                }),
                Some(_) => {}
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(&format!("{p}.image"), ""));
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
            field: format!("{path}.restartPolicy"),
        });
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
        default("Pod", &mut pod);
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
        default("Endpoints", &mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(ep["subsets"][0]["ports"][1]["protocol"], "UDP");
        let mut slice = json!({"addressType": "IPv4", "ports": [{"port": 80}]});
        default("EndpointSlice", &mut slice);
        assert_eq!(slice["ports"][0], json!({"port": 80, "protocol": "TCP", "name": ""}));
    }

    #[test]
    fn pod_update_may_change_only_images() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        let cmd =
            json!({"spec": {"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}]}});
        assert!(validate("Pod", &image, Some(&old)).is_empty());
        let causes = validate("Pod", &cmd, Some(&old));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("Deployment", &d, None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn names_are_checked_per_kind() {
        let mut causes = vec![];
        validate_name("Namespace", "a.b", &mut causes);
        validate_name("ConfigMap", "a.b", &mut causes);
        validate_name("ConfigMap", "A", &mut causes);
        assert_eq!(causes.len(), 2);
    }
}
