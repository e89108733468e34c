//! `apps/v1` StatefulSet, served as a built-in kind: its schema (generated from `k8s-openapi`),
//! upstream's defaults (`SetDefaults_StatefulSet`) and validation (`ValidateStatefulSetSpec`,
//! `ValidateStatefulSetUpdate`: only replicas, ordinals, template, updateStrategy,
//! revisionHistoryLimit, persistentVolumeClaimRetentionPolicy and minReadySeconds may change),
//! `status` and `scale` subresources, short name `sts`, category `all`, and kubectl's printer
//! columns (`NAME READY AGE`, from `kinetic_machinery::printers`). The rules that need no
//! stored object are `kinetic_rollout::statefulset::validation`, which the controller
//! (`kinetic_controllers::statefulset`) applies too. OpenKruise's Advanced StatefulSet is a CRD;
//! its webhook rules are in [`crate::kruise`].

use std::sync::Arc;

use kinetic_machinery::schema::{Schema, SchemaError};
use kinetic_rollout::statefulset::validation;
use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, ScalePaths, storage_key};
use crate::strategy::Strategy;
use crate::validation::validate_pod_spec;

const SCHEMA_NAME: &str = "io.k8s.api.apps.v1.StatefulSet";

/// Registers `apps/v1` `statefulsets` and adds its schema definitions to the built-in ones (call
/// after [`crate::builtin::register`]).
///
/// # Errors
/// The generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<k8s_openapi::api::apps::v1::StatefulSet>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    let root = json!({"$ref": format!("#/$defs/{SCHEMA_NAME}")});
    let schema = Schema::from_json(&root, Some(&defs))?;
    registry.set_builtin_defs(defs);
    registry.add(Resource {
        group: "apps".to_owned(),
        version: "v1".to_owned(),
        kind: "StatefulSet".to_owned(),
        plural: "statefulsets".to_owned(),
        singular: "statefulset".to_owned(),
        short_names: vec!["sts".to_owned()],
        categories: vec!["all".to_owned()],
        namespaced: true,
        status: true,
        scale: Some(ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: None,
        }),
        builtin: true,
        schema: Some(Arc::new(schema)),
        schema_name: SCHEMA_NAME.to_owned(),
        printer: Printer::Builtin,
        storage: storage_key("apps", "statefulsets"),
        field_selectors: vec![],
        strategy: Arc::new(StatefulSetStrategy),
    });
    Ok(())
}

/// The StatefulSet's registry strategy (upstream `pkg/registry/apps/statefulset/strategy.go`).
#[derive(Debug)]
struct StatefulSetStrategy;

impl Strategy for StatefulSetStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        validation::default(obj, false);
        if let Some(ps) = obj.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut) {
            crate::builtin::default_pod_spec(ps);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = validation::validate(obj, false);
        if let (Some(o), Some(n)) =
            (old.and_then(|o| o.pointer("/spec/selector")), obj.pointer("/spec/selector"))
            && o != n
        {
            causes.push(crate::error::invalid(
                "spec.selector",
                &n.to_string(),
                "field is immutable",
            ));
        }
        validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes);
        if let Some(old) = old {
            causes.extend(validation::validate_update(old, obj, false));
        }
        causes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_immutable_fields() {
        let s = StatefulSetStrategy;
        let mut o = json!({"metadata": {"name": "web"}, "spec": {
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
        }});
        s.default(&mut o);
        assert_eq!(o["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(o["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(s.validate(&o, None).is_empty(), "{:?}", s.validate(&o, None));
        let mut n = o.clone();
        n["spec"]["podManagementPolicy"] = json!("Parallel");
        let c = s.validate(&n, Some(&o));
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "spec");
    }
}
