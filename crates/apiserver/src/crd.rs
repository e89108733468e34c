//! CustomResourceDefinitions: validation of the definition, its status, and turning each served
//! version into a [`Resource`] in the registry (served dynamically from then on).
//!
//! Upstream keeps a CRD's instances until they are gone: a CRD gets the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer on create; deleting it first deletes
//! every instance (see [`crate::gc`]) and only then the definition and its endpoints.

use std::sync::Arc;

use kinetic_machinery::printers;
use kinetic_machinery::schema::Schema;
use serde_json::{Value, json};

use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, ScalePaths, storage_key};
use crate::store::{ObjKey, Stored};
use crate::strategy::{Admission, Cleanup, Custom, Strategy};

pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Sets the finalizer and the status a new CRD starts with (we accept names at once: there is
/// no separate naming controller).
pub fn prepare_create(crd: &mut Value) {
    if let Some(md) = crd.get_mut("metadata").and_then(Value::as_object_mut) {
        let fins = md.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(a) = fins.as_array_mut()
            && !a.iter().any(|f| f == CLEANUP_FINALIZER)
        {
            a.push(json!(CLEANUP_FINALIZER));
        }
    }
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let now = crate::rest::now_rfc3339();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": storage,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}

/// Upstream's CRD validation for what we serve (`apiextensions/validation`).
pub fn validate(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = spec.get("group").and_then(Value::as_str).unwrap_or("");
    let plural = spec.pointer("/names/plural").and_then(Value::as_str).unwrap_or("");
    let kind = spec.pointer("/names/kind").and_then(Value::as_str).unwrap_or("");
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if group.is_empty() {
        causes.push(Cause::required("spec.group", ""));
    } else if !group.contains('.') {
        causes.push(crate::error::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(crate::error::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ),
            field: "spec.scope".into(),
        }),
        None => causes.push(Cause::required("spec.scope", "")),
    }
    let versions = spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(crate::error::invalid(
            "spec.versions",
            "[]",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage =
        versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if !versions.is_empty() && storage != 1 {
        causes.push(crate::error::invalid(
            "spec.versions",
            &format!("{storage} storage versions"),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or("");
        if !crate::validation::is_dns1123_label(vname) {
            causes.push(crate::error::invalid(
                &format!("spec.versions[{i}].name"),
                vname,
                "must be a DNS-1035 label",
            ));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => causes.push(Cause::required(
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) => {
                let prefix = format!("spec.versions[{i}].schema.openAPIV3Schema");
                causes.extend(Schema::check_structural(s, &prefix));
                if let Err(e) = crate::cel::Rules::compile(s, &prefix) {
                    causes.extend(e);
                }
            }
        }
    }
    if let Some(old) = old {
        for f in ["group", "scope"] {
            if old.pointer(&format!("/spec/{f}")) != spec.get(f) {
                causes.push(crate::error::invalid(
                    &format!("spec.{f}"),
                    &spec.get(f).map(|v| v.to_string()).unwrap_or_default(),
                    "field is immutable",
                ));
            }
        }
    }
    causes
}

/// The registry entries one CRD serves, one per served version.
///
/// # Errors
/// A version's schema does not parse (only for CRDs stored before validation existed).
pub fn resources(crd: &Value) -> Result<Vec<Resource>, kinetic_machinery::schema::SchemaError> {
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    let singular = match s("/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let strs = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let namespaced = s("/scope") != "Cluster";
    let mut out = Vec::new();
    for v in spec.get("versions").and_then(Value::as_array).into_iter().flatten() {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        let schema = match v.pointer("/schema/openAPIV3Schema") {
            Some(sch) => Some(Arc::new(Schema::from_json(sch, None)?)),
            None => None,
        };
        // The version's CEL rules, compiled once here and kept by its strategy.
        let rules = match v.pointer("/schema/openAPIV3Schema") {
            Some(sch) => crate::cel::Rules::compile(sch, "").unwrap_or_else(|causes| {
                tracing::error!(crd = %plural, ?causes, "validation rules not compiled");
                None
            }),
            None => None,
        };
        let strategy = match rules {
            Some(rules) => {
                Arc::new(crate::cel::Validated { inner: for_custom(&group, &kind), rules })
                    as Arc<dyn crate::strategy::Strategy>
            }
            None => for_custom(&group, &kind),
        };
        let scale = v.pointer("/subresources/scale").map(|sc| ScalePaths {
            spec_replicas: sc
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .to_owned(),
            status_replicas: sc
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .to_owned(),
            label_selector: sc.get("labelSelectorPath").and_then(Value::as_str).map(str::to_owned),
        });
        let columns = v.get("additionalPrinterColumns").cloned().unwrap_or_else(|| json!([]));
        out.push(Resource {
            group: group.clone(),
            version: version.clone(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            short_names: strs("/names/shortNames"),
            categories: strs("/names/categories"),
            namespaced,
            status: v.pointer("/subresources/status").is_some(),
            scale,
            builtin: false,
            schema,
            schema_name: format!(
                "{}.{version}.{kind}",
                group.split('.').rev().collect::<Vec<_>>().join(".")
            ),
            printer: Printer::Custom(printers::custom_columns(&columns)),
            storage: storage_key(&group, &plural),
            field_selectors: v
                .get("selectableFields")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                        .map(|p| p.trim_start_matches('.').to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            strategy,
        });
    }
    Ok(out)
}

/// Makes the registry serve exactly what `crd` defines now.
pub fn sync_registry(registry: &Registry, crd: &Value) {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    match resources(crd) {
        Ok(rs) => {
            registry.remove(group, plural);
            for r in rs {
                registry.add(r);
            }
        }
        Err(e) => {
            tracing::error!(crd = %plural, error = %e, "custom resource definition not served")
        }
    }
}

/// `apiextensions.k8s.io/v1` CustomResourceDefinitions ([`crate::crd`]): a committed CRD
/// changes what the registry serves.
#[derive(Debug)]
pub struct CrdStrategy;

impl Strategy for CrdStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_create(&self, _adm: &Admission<'_>, obj: &mut Value) {
        crate::crd::prepare_create(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        crate::crd::validate(obj, old)
    }

    fn cleanup(&self) -> Cleanup {
        Cleanup::CustomResources
    }

    fn after_commit(&self, registry: &Registry, obj: &Stored) {
        crate::crd::sync_registry(registry, &obj.value());
    }

    fn after_delete(&self, registry: &Registry, obj: &Stored) {
        let obj = &obj.value();
        let group = obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
        let plural = obj.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
        registry.remove(group, plural);
    }
}

/// A custom resource of `apps.kruise.io`, validated as OpenKruise's webhook does when the
/// webhooks are on.
#[derive(Debug)]
pub struct Kruise {
    kind: String,
    /// CloneSets name pods in `scaleStrategy.podsToDelete`, which the webhook looks up.
    checks_pods_to_delete: bool,
}

impl Strategy for Kruise {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn admit(&self, adm: &Admission<'_>, obj: &mut Value, old: Option<&Value>) -> Vec<Cause> {
        if !adm.webhooks {
            return Vec::new();
        }
        crate::kruise::default(&self.kind, obj);
        let obj = &*obj;
        let mut causes = crate::kruise::validate(&self.kind, obj, old);
        if self.checks_pods_to_delete {
            let pods = storage_key("", "pods");
            let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
            let pod = |name: &str| adm.store.get(&ObjKey::new(&pods, ns, name)).map(|s| s.value());
            causes.extend(crate::kruise::validate_pods_to_delete(obj, old, pod));
        }
        causes
    }
}

/// OpenKruise's ContainerRecreateRequest, admitted as its mutating webhook does: checked
/// against its pod and filled from it ([`crate::crr`]) when the webhooks are on.
#[derive(Debug)]
pub struct ContainerRecreate;

impl Strategy for ContainerRecreate {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn admit(&self, adm: &Admission<'_>, obj: &mut Value, old: Option<&Value>) -> Vec<Cause> {
        if !adm.webhooks {
            return Vec::new();
        }
        let pods = storage_key("", "pods");
        let ns =
            obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_owned();
        crate::crr::admit(obj, old, |name: &str| {
            adm.store.get(&ObjKey::new(&pods, &ns, name)).map(|s| s.value())
        })
    }
}

/// A custom resource of `serving.knative.dev`, defaulted and validated as Knative's webhooks do
/// when the webhooks are on.
#[derive(Debug)]
pub struct Knative {
    kind: String,
}

impl Strategy for Knative {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn admit(&self, adm: &Admission<'_>, obj: &mut Value, old: Option<&Value>) -> Vec<Cause> {
        if !adm.webhooks {
            return Vec::new();
        }
        let cms = storage_key("", "configmaps");
        crate::knative::admit(&self.kind, obj, old, |ns, n| {
            adm.store.get(&ObjKey::new(&cms, ns, n)).map(|s| s.value())
        })
    }
}

/// The strategy of a kind a CRD defines: the webhook rules of its group, if the server has
/// them, else the generic custom resource strategy. This is where a group's admission plugs
/// in; the kind's name is looked at here, once, when the CRD is served.
pub fn for_custom(group: &str, kind: &str) -> Arc<dyn Strategy> {
    if group == crate::kruise::GROUP && kind == "ContainerRecreateRequest" {
        Arc::new(ContainerRecreate)
    } else if group == crate::kruise::GROUP {
        Arc::new(Kruise { kind: kind.to_owned(), checks_pods_to_delete: kind == "CloneSet" })
    } else if group == crate::knative::GROUP {
        Arc::new(Knative { kind: kind.to_owned() })
    } else {
        Arc::new(Custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn custom_resources_track_generation_and_plug_their_groups_webhooks() {
        assert!(super::for_custom("example.com", "Widget").tracks_generation());
        assert!(
            format!("{:?}", super::for_custom("apps.kruise.io", "CloneSet")).contains("Kruise")
        );
        assert!(
            format!("{:?}", super::for_custom("serving.knative.dev", "Route")).contains("Knative")
        );
        assert!(format!("{:?}", super::for_custom("example.com", "Widget")).starts_with("Custom"));
        assert!(
            format!("{:?}", super::for_custom("apps.kruise.io", "ContainerRecreateRequest"))
                .starts_with("ContainerRecreate")
        );
    }

    #[test]
    fn webhooks_off_admit_anything() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db"), 10).unwrap();
        let adm = crate::strategy::Admission { store: &store, webhooks: false, user: None };
        let mut bad = json!({"spec": {"replicas": -1}});
        assert!(
            super::for_custom("apps.kruise.io", "CloneSet").admit(&adm, &mut bad, None).is_empty()
        );
        let adm = crate::strategy::Admission { store: &store, webhooks: true, user: None };
        assert!(
            !super::for_custom("apps.kruise.io", "CloneSet").admit(&adm, &mut bad, None).is_empty()
        );
    }

    use super::*;

    fn widget() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}}}]}
        })
    }

    #[test]
    fn a_valid_crd_serves_its_versions() {
        assert_eq!(validate(&widget(), None), vec![]);
        let rs = resources(&widget()).unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(&*rs[0].storage, "example.com/widgets");
        assert!(rs[0].status && rs[0].scale.is_some() && rs[0].namespaced);
    }

    #[test]
    fn invalid_crds_name_the_fields() {
        let mut c = widget();
        c["metadata"]["name"] = json!("wrong");
        c["spec"]["versions"][0]["storage"] = json!(false);
        let fields: Vec<String> = validate(&c, None).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["metadata.name", "spec.versions"]);
    }
}
