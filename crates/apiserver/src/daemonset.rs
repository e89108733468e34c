//! `apps/v1` DaemonSet, served as a built-in kind: its schema (generated from `k8s-openapi`),
//! upstream's defaults (`pkg/apis/apps/v1/defaults.go` `SetDefaults_DaemonSet`) and validation
//! (`pkg/apis/apps/validation` `ValidateDaemonSet`, `ValidateDaemonSetUpdate`), a `status`
//! subresource, short name `ds`, category `all`; kubectl's columns come from
//! `kinetic_machinery::printers`. The controller is `kinetic_controllers::daemonset`.
//!
//! The spec rules are shared with OpenKruise's Advanced DaemonSet ([`validate_spec`], called
//! by `kruise` with Kruise's extra `rollingUpdate` fields), whose webhook checks the same
//! selector, template and strategy rules.

use std::sync::Arc;

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

use crate::builtin::{obj_mut, set_default};
use crate::error::{Cause, invalid};
use crate::registry::{Printer, Registry, Resource, storage_key};
use crate::strategy::Strategy;
use crate::validation::{validate_pod_spec, validate_selector};

pub const GROUP: &str = "apps";
pub const KIND: &str = "DaemonSet";
const SCHEMA_NAME: &str = "io.k8s.api.apps.v1.DaemonSet";

/// Registers `apps/v1` `daemonsets` and adds its schema definitions to the built-in ones (call
/// after [`crate::builtin::register`]).
///
/// # Errors
/// The generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<k8s_openapi::api::apps::v1::DaemonSet>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    // kubectl's client-side apply reads the list merge keys from the OpenAPI document.
    crate::builtin::annotate_patch_meta(
        &mut defs,
        KIND,
        SCHEMA_NAME,
        &mut Vec::new(),
        &mut Default::default(),
    );
    let root = json!({"$ref": format!("#/$defs/{SCHEMA_NAME}")});
    let schema = Schema::from_json(&root, Some(&defs))?;
    registry.set_builtin_defs(defs);
    registry.add(Resource {
        group: GROUP.to_owned(),
        version: "v1".to_owned(),
        kind: KIND.to_owned(),
        plural: "daemonsets".to_owned(),
        singular: "daemonset".to_owned(),
        short_names: vec!["ds".to_owned()],
        categories: vec!["all".to_owned()],
        namespaced: true,
        status: true,
        scale: None,
        builtin: true,
        schema: Some(Arc::new(schema)),
        schema_name: SCHEMA_NAME.to_owned(),
        printer: Printer::Builtin,
        storage: storage_key(GROUP, "daemonsets"),
        field_selectors: vec![],
        strategy: Arc::new(DaemonSetStrategy),
    });
    Ok(())
}

/// The DaemonSet's registry strategy (upstream `pkg/registry/apps/daemonset/strategy.go`).
#[derive(Debug)]
struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    /// Spec writes bump `metadata.generation`; pods carry it as `pod-template-generation`.
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default(obj, false);
        if let Some(ps) = obj.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut) {
            crate::builtin::default_pod_spec(ps);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = validate_spec(obj, old, false);
        validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes);
        causes
    }
}

/// `SetDefaults_DaemonSet` (apps/v1), and Kruise's `SetDefaultsDaemonSet` when `kruise`:
/// `updateStrategy.type` RollingUpdate; for RollingUpdate a `rollingUpdate` with
/// `maxUnavailable: 1` (Kruise: only when `maxSurge` is unset too) and `maxSurge: 0`, and for
/// Kruise `rollingUpdateType: Standard` and `partition: 0`; `revisionHistoryLimit: 10`; Kruise's
/// `burstReplicas: 250`. The pod template's own defaults are the caller's.
pub fn default(obj: &mut Value, kruise: bool) {
    let Some(spec) = obj_mut(obj, "spec") else { return };
    set_default(spec, "revisionHistoryLimit", json!(10));
    if kruise {
        set_default(spec, "burstReplicas", json!(250));
    }
    let Some(st) = obj_mut_in(spec, "updateStrategy") else { return };
    set_default(st, "type", json!("RollingUpdate"));
    if st.get("type") != Some(&json!("RollingUpdate")) {
        return;
    }
    let Some(ru) = obj_mut_in(st, "rollingUpdate") else { return };
    let surge_unset = ru.get("maxSurge").is_none_or(Value::is_null);
    if !kruise || surge_unset {
        set_default(ru, "maxUnavailable", json!(1));
    }
    set_default(ru, "maxSurge", json!(0));
    if kruise {
        set_default(ru, "rollingUpdateType", json!("Standard"));
        set_default(ru, "partition", json!(0));
    }
}

/// The object at `key` of `m`, created empty when missing or not an object.
fn obj_mut_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

/// An int-or-percent field (`ValidatePositiveIntOrPercent`, `IsNotMoreThan100Percent`): its
/// value as a percentage or count, or a cause.
fn int_or_percent(v: Option<&Value>, field: &str, causes: &mut Vec<Cause>) -> Option<(i64, bool)> {
    let v = v.filter(|v| !v.is_null())?;
    if let Some(i) = v.as_i64() {
        if i < 0 {
            causes.push(invalid(field, &i.to_string(), "must be greater than or equal to 0"));
        }
        return Some((i, false));
    }
    let s = v.as_str().unwrap_or_default();
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) if (0..=100).contains(&p) => Some((p, true)),
        Some(p) if p > 100 => {
            causes.push(invalid(field, s, "must not be greater than 100%"));
            None
        }
        _ => {
            causes.push(invalid(
                field,
                s,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ));
            None
        }
    }
}

/// The spec rules of `ValidateDaemonSetSpec` and `ValidateDaemonSetUpdate` (selector required,
/// matching the template and immutable; template `restartPolicy` Always and no
/// `activeDeadlineSeconds`; `minReadySeconds` and `revisionHistoryLimit` not negative; the
/// update strategy), with Kruise's `rollingUpdate` additions when `kruise` (its webhook's
/// `validateDaemonSetSpec`: a known `rollingUpdateType`, no `maxSurge` with
/// InPlaceIfPossible, a `partition` not negative, a valid node `selector`).
pub fn validate_spec(obj: &Value, old: Option<&Value>, kruise: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_selector(obj, old, "daemonset", &mut causes);
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(rp) = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str)
        && rp != "Always"
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: \"{rp}\": supported values: \"Always\""),
            field: "spec.template.spec.restartPolicy".into(),
        });
    }
    if spec.pointer("/template/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    for f in ["minReadySeconds", "revisionHistoryLimit"] {
        if let Some(n) = spec.get(f).and_then(Value::as_i64)
            && n < 0
        {
            causes.push(invalid(
                &format!("spec.{f}"),
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let st = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    match st.get("type").and_then(Value::as_str) {
        Some("OnDelete") => {}
        Some("RollingUpdate") => {
            let Some(ru) = st.get("rollingUpdate").filter(|v| !v.is_null()) else {
                causes.push(Cause::required("spec.updateStrategy.rollingUpdate", ""));
                return causes;
            };
            let p = "spec.updateStrategy.rollingUpdate";
            let unavailable = int_or_percent(
                ru.get("maxUnavailable"),
                &format!("{p}.maxUnavailable"),
                &mut causes,
            );
            let surge = int_or_percent(ru.get("maxSurge"), &format!("{p}.maxSurge"), &mut causes);
            let zero = |v: Option<(i64, bool)>| v.is_none_or(|(n, _)| n == 0);
            if zero(unavailable) && zero(surge) {
                let shown = ru.get("maxUnavailable").map_or("0".to_owned(), |v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                causes.push(invalid(
                    &format!("{p}.maxUnavailable"),
                    &shown,
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if kruise {
                validate_kruise_rolling_update(ru, surge, &mut causes);
            }
        }
        other => causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{}\": supported values: \"OnDelete\", \"RollingUpdate\"",
                other.unwrap_or_default()
            ),
            field: "spec.updateStrategy.type".into(),
        }),
    }
    causes
}

/// Kruise's additions to `rollingUpdate` (`pkg/webhook/daemonset/validating`).
fn validate_kruise_rolling_update(ru: &Value, surge: Option<(i64, bool)>, causes: &mut Vec<Cause>) {
    let p = "spec.updateStrategy.rollingUpdate";
    let ty = ru.get("rollingUpdateType").and_then(Value::as_str).unwrap_or("Standard");
    if !matches!(ty, "Standard" | "InPlaceIfPossible" | "Surging") {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{ty}\": supported values: \"Standard\", \"InPlaceIfPossible\""
            ),
            field: format!("{p}.rollingUpdateType"),
        });
    }
    // The manual: "in this type, you can only use maxUnavailable without maxSurge".
    if ty == "InPlaceIfPossible" && surge.is_some_and(|(n, _)| n != 0) {
        causes.push(Cause::forbidden(
            &format!("{p}.maxSurge"),
            "maxSurge can not be used with rollingUpdateType InPlaceIfPossible",
        ));
    }
    if let Some(n) = ru.get("partition").and_then(Value::as_i64)
        && n < 0
    {
        causes.push(invalid(
            &format!("{p}.partition"),
            &n.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(sel) = ru.get("selector").filter(|v| !v.is_null())
        && let Err(e) = kinetic_machinery::selector::LabelSelector::from_label_selector(sel)
    {
        causes.push(invalid(&format!("{p}.selector"), &sel.to_string(), &e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(strategy: Value) -> Value {
        json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                         "spec": {"restartPolicy": "Always",
                                  "containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": strategy,
        }})
    }

    fn check(obj: &Value, old: Option<&Value>, kruise: bool) -> Vec<String> {
        validate_spec(obj, old, kruise)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_follow_upstream() {
        let mut o = ds(Value::Null);
        o["spec"].as_object_mut().map(|s| s.remove("updateStrategy"));
        default(&mut o, false);
        assert_eq!(
            o["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate",
                   "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(o["spec"]["revisionHistoryLimit"], json!(10));
        // Kruise: maxUnavailable only when maxSurge is unset; its own fields too.
        let mut k = ds(json!({"rollingUpdate": {"maxSurge": 2}}));
        default(&mut k, true);
        assert_eq!(
            k["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": 2, "rollingUpdateType": "Standard", "partition": 0}})
        );
        assert_eq!(k["spec"]["burstReplicas"], json!(250));
        // OnDelete gets no rollingUpdate.
        let mut od = ds(json!({"type": "OnDelete"}));
        default(&mut od, false);
        assert_eq!(od["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }

    #[test]
    fn validation_follows_upstream() {
        let ok = ds(json!({"type": "RollingUpdate",
                           "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}));
        assert_eq!(check(&ok, None, false), Vec::<String>::new());
        let mut bad = ok.clone();
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        bad["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": 0});
        assert_eq!(
            check(&bad, None, false),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"0\": may not be 0 when `maxSurge` is 0",
            ]
        );
        let mut moved = ok.clone();
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "e"}});
        moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "e"});
        assert_eq!(
            check(&moved, Some(&ok), false),
            [
                "spec.selector: Invalid value: \"{\\\"matchLabels\\\":{\\\"app\\\":\\\"e\\\"}}\": field is immutable"
            ]
        );
        let mut unmatched = ok.clone();
        unmatched["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
        assert_eq!(check(&unmatched, None, false).len(), 1);
        // Kruise: in place takes no surge; unknown types are refused.
        let k = ds(json!({"type": "RollingUpdate", "rollingUpdate": {
            "rollingUpdateType": "InPlaceIfPossible", "maxSurge": 1, "partition": -1}}));
        assert_eq!(
            check(&k, None, true),
            [
                "spec.updateStrategy.rollingUpdate.maxSurge: Forbidden: maxSurge can not be used with rollingUpdateType InPlaceIfPossible",
                "spec.updateStrategy.rollingUpdate.partition: Invalid value: \"-1\": must be greater than or equal to 0",
            ]
        );
    }
}
