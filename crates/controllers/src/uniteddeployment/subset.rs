//! One subset's workload, built from the UnitedDeployment as upstream's adapters'
//! `ApplySubsetTemplate` build it (`pkg/controller/uniteddeployment/adapter/*_adapter.go`,
//! `adapter_util.go`), as JSON so one function serves every kind:
//!
//! - `generateName` `{ud}-{subset}-` (just `{ud}-` when that is not a valid name prefix), so
//!   workloads are named `{ud}-{subset}-xxxxx`;
//! - labels: the template's, the selector's `matchLabels`,
//!   `apps.kruise.io/controller-revision-hash: {revision}` and
//!   `apps.kruise.io/subset-name: {subset}`; annotations: the template's and
//!   `apps.kruise.io/subset-patch` (the raw patch, empty without one);
//! - the spec is the template's with the UnitedDeployment's selector plus the subset-name label,
//!   the allocated replicas, the partition (CloneSet `updateStrategy.partition`, StatefulSets
//!   `updateStrategy.rollingUpdate.partition`; Deployments have none), both labels on the pod
//!   template, the subset's `nodeSelectorTerm` match expressions appended to every required
//!   node affinity term (one empty term first when there is none), its tolerations appended,
//!   and finally its `patch` applied to the pod template as a strategic merge patch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::kruise::uniteddeployment::{
    REVISION_LABEL, SUBSET_NAME_LABEL, SUBSET_PATCH_ANNOTATION, Subset, SubsetKind,
    UnitedDeployment,
};
use kube::ResourceExt as _;
use serde_json::{Map, Value, json};

/// A subset workload could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("fail to find subset config {0}")]
    NoSubset(String),
    #[error("the UnitedDeployment has no workload template")]
    NoTemplate,
    #[error("applying the patch of subset {subset}")]
    Patch {
        subset: String,
        #[source]
        source: kinetic_machinery::patch::PatchError,
    },
}

/// Upstream's `getSubsetPrefix`.
pub fn prefix(ud: &str, subset: &str) -> String {
    let p = format!("{ud}-{subset}-");
    // NameIsDNSSubdomain with prefix=true: the name part (a trailing random suffix follows)
    // must be at most 253 characters of lowercase alphanumerics, '-' and '.'.
    let valid = p.len() <= 253
        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid { p } else { format!("{ud}-") }
}

fn object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn child<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    object(v).entry(key.to_owned()).or_insert_with(|| json!({}))
}

fn set_labels(map: &mut Value, labels: impl IntoIterator<Item = (String, String)>) {
    let m = object(map);
    for (k, v) in labels {
        m.insert(k, Value::String(v));
    }
}

/// The subset's patch as upstream records it in the annotation (compact JSON; empty without
/// one).
pub fn patch_string(subset: &Subset) -> String {
    subset.patch.as_ref().filter(|p| !p.is_null()).map(Value::to_string).unwrap_or_default()
}

/// Builds (onto `base`, the existing workload, when updating) the workload of `subset_name`.
///
/// # Errors
/// [`BuildError`]: the subset or template is missing, or the patch does not apply.
pub fn build(
    ud: &UnitedDeployment,
    owner: &OwnerReference,
    subset_name: &str,
    revision: &str,
    replicas: i32,
    partition: i32,
    base: Option<Value>,
) -> Result<Value, BuildError> {
    let (kind, template) = ud.spec.template.get().ok_or(BuildError::NoTemplate)?;
    let subset = ud
        .spec
        .topology
        .subsets
        .iter()
        .find(|s| s.name == subset_name)
        .ok_or_else(|| BuildError::NoSubset(subset_name.to_owned()))?;
    let (api_version, kind_name, _) = kind.gvk();
    let mut obj = base.unwrap_or_else(|| json!({}));
    let o = object(&mut obj);
    o.insert("apiVersion".into(), json!(api_version));
    o.insert("kind".into(), json!(kind_name));

    let meta = child(&mut obj, "metadata");
    object(meta).insert("namespace".into(), json!(ud.namespace().unwrap_or_default()));
    let selector_labels = ud.spec.selector.match_labels.clone().unwrap_or_default();
    let labels = child(meta, "labels");
    set_labels(labels, template.metadata.labels.clone().unwrap_or_default());
    set_labels(labels, selector_labels.clone());
    set_labels(
        labels,
        [
            (REVISION_LABEL.to_owned(), revision.to_owned()),
            (SUBSET_NAME_LABEL.to_owned(), subset_name.to_owned()),
        ],
    );
    let annotations = child(meta, "annotations");
    set_labels(annotations, template.metadata.annotations.clone().unwrap_or_default());
    set_labels(annotations, [(SUBSET_PATCH_ANNOTATION.to_owned(), patch_string(subset))]);
    let m = object(meta);
    m.insert("generateName".into(), json!(prefix(&ud.name_any(), subset_name)));
    // SetControllerReference: replace a controller reference, keep the others.
    let mut refs: Vec<Value> = m
        .get("ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("controller").and_then(Value::as_bool) != Some(true))
        .cloned()
        .collect();
    refs.push(serde_json::to_value(owner).unwrap_or(Value::Null));
    m.insert("ownerReferences".into(), Value::Array(refs));

    let mut spec = template.spec.clone();
    let mut selector = serde_json::to_value(&ud.spec.selector).unwrap_or_else(|_| json!({}));
    set_labels(
        child(&mut selector, "matchLabels"),
        [(SUBSET_NAME_LABEL.into(), subset_name.into())],
    );
    object(&mut spec).insert("selector".into(), selector);
    object(&mut spec).insert("replicas".into(), json!(replicas));
    match kind {
        SubsetKind::CloneSet => {
            object(child(&mut spec, "updateStrategy")).insert("partition".into(), json!(partition));
        }
        SubsetKind::StatefulSet | SubsetKind::AdvancedStatefulSet => {
            // Upstream's StatefulSet adapters: a RollingUpdate strategy with the partition.
            let us = child(&mut spec, "updateStrategy");
            let t = us.get("type").and_then(Value::as_str).unwrap_or("RollingUpdate").to_owned();
            if t == "RollingUpdate" {
                object(us).insert("type".into(), json!("RollingUpdate"));
                object(child(us, "rollingUpdate")).insert("partition".into(), json!(partition));
            }
        }
        SubsetKind::Deployment => {}
    }
    let pod_template = child(&mut spec, "template");
    set_labels(
        child(child(pod_template, "metadata"), "labels"),
        [
            (SUBSET_NAME_LABEL.to_owned(), subset_name.to_owned()),
            (REVISION_LABEL.to_owned(), revision.to_owned()),
        ],
    );
    let pod_spec = child(pod_template, "spec");
    attach_node_affinity(pod_spec, subset);
    attach_tolerations(pod_spec, subset);
    if let Some(patch) = subset.patch.as_ref().filter(|p| p.is_object()) {
        let patched = kinetic_machinery::patch::strategic_merge_patch(pod_template, patch)
            .map_err(|source| BuildError::Patch { subset: subset_name.to_owned(), source })?;
        *pod_template = patched;
    }
    object(&mut obj).insert("spec".into(), spec);
    Ok(obj)
}

/// Upstream's `attachNodeAffinity`: the term's match expressions go into every required term.
fn attach_node_affinity(pod_spec: &mut Value, subset: &Subset) {
    let exprs = subset
        .node_selector_term
        .as_ref()
        .and_then(|t| t.match_expressions.clone())
        .unwrap_or_default();
    if exprs.is_empty() {
        return;
    }
    let required = child(
        child(child(pod_spec, "affinity"), "nodeAffinity"),
        "requiredDuringSchedulingIgnoredDuringExecution",
    );
    let terms = object(required).entry("nodeSelectorTerms").or_insert_with(|| json!([]));
    if !terms.is_array() {
        *terms = json!([]);
    }
    let Value::Array(terms) = terms else { return };
    if terms.is_empty() {
        terms.push(json!({}));
    }
    for term in terms.iter_mut() {
        let list = object(term).entry("matchExpressions").or_insert_with(|| json!([]));
        if let Value::Array(list) = list {
            list.extend(exprs.iter().filter_map(|e| serde_json::to_value(e).ok()));
        }
    }
}

/// Upstream's `attachTolerations`.
fn attach_tolerations(pod_spec: &mut Value, subset: &Subset) {
    let Some(tolerations) = subset.tolerations.as_ref() else { return };
    let list = object(pod_spec).entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(list) = list {
        list.extend(tolerations.iter().filter_map(|t| serde_json::to_value(t).ok()));
    }
}

/// What the controller compares of an existing subset workload (`convertToSubset`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub name: String,
    pub subset: String,
    pub revision: String,
    pub patch: String,
    pub spec_replicas: i32,
    /// `None` for kinds without a partition.
    pub partition: Option<i32>,
    pub status_replicas: i32,
    pub ready_replicas: i32,
}

/// Reads [`Observed`] from a workload object.
pub fn observe(kind: SubsetKind, obj: &Value) -> Observed {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    let n = |p: &str| obj.pointer(p).and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok());
    let spec_replicas = n("/spec/replicas").unwrap_or(1);
    let partition = match kind {
        SubsetKind::Deployment => None,
        SubsetKind::CloneSet => Some(match obj.pointer("/spec/updateStrategy/partition") {
            // A percentage of replicas, rounded up (GetScaledValueFromIntOrPercent(.., true)).
            Some(Value::String(p)) => {
                p.strip_suffix('%').and_then(|v| v.parse::<i64>().ok()).map_or(0, |pct| {
                    i32::try_from((i64::from(spec_replicas) * pct + 99) / 100).unwrap_or(0)
                })
            }
            Some(v) => v.as_i64().and_then(|v| i32::try_from(v).ok()).unwrap_or(0),
            None => 0,
        }),
        // An OnDelete StatefulSet has no partition to keep in step (the build leaves it
        // alone): reading 0 would make every allocated partition look changed, and the
        // subset would be rewritten on every pass.
        SubsetKind::StatefulSet | SubsetKind::AdvancedStatefulSet
            if obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str)
                == Some("OnDelete") =>
        {
            None
        }
        SubsetKind::StatefulSet | SubsetKind::AdvancedStatefulSet => {
            Some(n("/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0))
        }
    };
    Observed {
        name: s("/metadata/name"),
        subset: s(&format!("/metadata/labels/{}", SUBSET_NAME_LABEL.replace('/', "~1"))),
        revision: s(&format!("/metadata/labels/{}", REVISION_LABEL.replace('/', "~1"))),
        patch: s(&format!("/metadata/annotations/{}", SUBSET_PATCH_ANNOTATION.replace('/', "~1"))),
        spec_replicas,
        partition,
        status_replicas: n("/status/replicas").unwrap_or(0),
        ready_replicas: n("/status/readyReplicas").unwrap_or(0),
    }
}

/// Why an existing subset needs an update (upstream's order), or `None`.
pub fn needs_update(
    o: &Observed,
    revision: &str,
    replicas: i32,
    partition: i32,
    patch: &str,
) -> Option<&'static str> {
    if o.revision != revision {
        Some("revision changed")
    } else if o.spec_replicas != replicas {
        Some("replicas changed")
    } else if o.partition.is_some_and(|p| p != partition) {
        Some("partition changed")
    } else if o.patch != patch {
        Some("patch changed")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ud(template: Value, subsets: Value) -> UnitedDeployment {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "UnitedDeployment",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": template, "topology": {"subsets": subsets}},
        }))
        .unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "UnitedDeployment".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn cloneset_subset_gets_names_labels_affinity_tolerations_partition_and_patch() {
        let u = ud(
            json!({"cloneSetTemplate": {
                "metadata": {"labels": {"app": "web", "tier": "fe"}, "annotations": {"a": "b"}},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "main", "image": "i:1"}],
                                               "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                                   "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}}}},
                         "updateStrategy": {"type": "InPlaceIfPossible"}}}}),
            json!([{"name": "zone-a",
                    "nodeSelectorTerm": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    "tolerations": [{"key": "spot", "operator": "Exists"}],
                    "patch": {"spec": {"containers": [{"name": "main", "env": [{"name": "ZONE", "value": "a"}]}]}}}]),
        );
        let got = build(&u, &owner(), "zone-a", "web-abc", 3, 1, None).unwrap();
        let want = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {
                "namespace": "ns", "generateName": "web-zone-a-",
                "labels": {"app": "web", "tier": "fe", REVISION_LABEL: "web-abc", SUBSET_NAME_LABEL: "zone-a"},
                "annotations": {"a": "b", SUBSET_PATCH_ANNOTATION: r#"{"spec":{"containers":[{"name":"main","env":[{"name":"ZONE","value":"a"}]}]}}"#},
                "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "UnitedDeployment",
                    "name": "web", "uid": "u1", "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web", SUBSET_NAME_LABEL: "zone-a"}},
                "updateStrategy": {"type": "InPlaceIfPossible", "partition": 1},
                "template": {
                    "metadata": {"labels": {"app": "web", SUBSET_NAME_LABEL: "zone-a", REVISION_LABEL: "web-abc"}},
                    "spec": {
                        "containers": [{"name": "main", "image": "i:1", "env": [{"name": "ZONE", "value": "a"}]}],
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [
                                {"key": "disk", "operator": "Exists"},
                                {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                        "tolerations": [{"key": "spot", "operator": "Exists"}],
                    },
                },
            },
        });
        assert_eq!(got, want);
        let o = observe(SubsetKind::CloneSet, &got);
        assert_eq!(
            (o.subset.as_str(), o.revision.as_str(), o.spec_replicas, o.partition),
            ("zone-a", "web-abc", 3, Some(1))
        );
        assert_eq!(needs_update(&o, "web-abc", 3, 1, &o.patch.clone()), None);
        assert_eq!(needs_update(&o, "web-abc", 3, 0, &o.patch.clone()), Some("partition changed"));
        assert_eq!(needs_update(&o, "web-new", 3, 1, &o.patch.clone()), Some("revision changed"));
    }

    #[test]
    fn deployment_subset_has_no_partition_and_an_affinity_term_of_its_own() {
        let u = ud(
            json!({"deploymentTemplate": {"metadata": {"labels": {"app": "web"}},
                "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}}),
            json!([{"name": "b", "nodeSelectorTerm": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]),
        );
        let got = build(&u, &owner(), "b", "web-1", 2, 5, None).unwrap();
        assert_eq!(got["kind"], json!("Deployment"));
        assert_eq!(got["spec"].get("updateStrategy"), None);
        assert_eq!(
            got.pointer("/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"),
            Some(&json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]))
        );
        assert_eq!(
            got.pointer("/metadata/annotations").unwrap()[SUBSET_PATCH_ANNOTATION],
            json!("")
        );
        let o = observe(SubsetKind::Deployment, &got);
        assert_eq!(needs_update(&o, "web-1", 2, 5, ""), None);
    }

    #[test]
    fn statefulset_subsets_get_the_partition_in_rolling_update_and_keep_the_set_fields() {
        for (field, api_version) in [
            ("statefulSetTemplate", "apps/v1"),
            ("advancedStatefulSetTemplate", "apps.kruise.io/v1beta1"),
        ] {
            let u = ud(
                json!({field: {"metadata": {"labels": {"app": "web"}},
                    "spec": {"serviceName": "web", "podManagementPolicy": "Parallel",
                             "updateStrategy": {"rollingUpdate": {"podUpdatePolicy": "InPlaceIfPossible", "maxUnavailable": 2}},
                             "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
                             "template": {"metadata": {"labels": {"app": "web"}},
                                          "spec": {"containers": [{"name": "main", "image": "i:1"}]}}}}}),
                json!([{"name": "a", "nodeSelectorTerm": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]),
            );
            let got = build(&u, &owner(), "a", "web-1", 3, 2, None).unwrap();
            assert_eq!(
                (&got["apiVersion"], &got["kind"]),
                (&json!(api_version), &json!("StatefulSet")),
                "{field}"
            );
            assert_eq!(
                got["spec"]["updateStrategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {
                    "podUpdatePolicy": "InPlaceIfPossible", "maxUnavailable": 2, "partition": 2}}),
                "{field}"
            );
            assert_eq!(
                (&got["spec"]["serviceName"], &got["spec"]["podManagementPolicy"]),
                (&json!("web"), &json!("Parallel"))
            );
            assert_eq!(
                got["spec"]["volumeClaimTemplates"],
                json!([{"metadata": {"name": "data"}}])
            );
            assert_eq!(
                got["spec"]["selector"],
                json!({"matchLabels": {"app": "web", SUBSET_NAME_LABEL: "a"}})
            );
            assert_eq!(got["metadata"]["generateName"], json!("web-a-"));
            let kind = if field == "statefulSetTemplate" {
                SubsetKind::StatefulSet
            } else {
                SubsetKind::AdvancedStatefulSet
            };
            let o = observe(kind, &got);
            assert_eq!((o.subset.as_str(), o.spec_replicas, o.partition), ("a", 3, Some(2)));
            assert_eq!(needs_update(&o, "web-1", 3, 2, ""), None);
            assert_eq!(needs_update(&o, "web-1", 3, 0, ""), Some("partition changed"));
        }
    }

    /// Upstream's adapters set the partition only under RollingUpdate; an OnDelete set keeps
    /// its strategy, and its missing partition must not read as a change on every pass.
    #[test]
    fn an_on_delete_statefulset_subset_has_no_partition_to_update() {
        let u = ud(
            json!({"advancedStatefulSetTemplate": {"metadata": {"labels": {"app": "web"}},
                "spec": {"updateStrategy": {"type": "OnDelete"},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}}),
            json!([{"name": "a"}]),
        );
        let got = build(&u, &owner(), "a", "web-1", 2, 1, None).unwrap();
        assert_eq!(got["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
        let o = observe(SubsetKind::AdvancedStatefulSet, &got);
        assert_eq!(o.partition, None);
        assert_eq!(needs_update(&o, "web-1", 2, 1, ""), None);
    }

    #[test]
    fn a_prefix_too_long_for_a_name_falls_back_to_the_uniteddeployment_name() {
        assert_eq!(prefix("web", "a"), "web-a-");
        let long = "s".repeat(260);
        assert_eq!(prefix("web", &long), "web-");
    }
}
