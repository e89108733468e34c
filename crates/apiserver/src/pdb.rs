//! `policy/v1` PodDisruptionBudget, served as a built-in kind: its schema (generated from
//! `k8s-openapi`), upstream's validation (`pkg/apis/policy/validation`:
//! `ValidatePodDisruptionBudgetSpec` and the status checks), a `status` subresource, short name
//! `pdb`. The disruption controller (`kinetic-controllers`, `disruption`) writes its status; the
//! eviction subresource of pods ([`crate::eviction`]) reads and decrements it.

use std::sync::Arc;

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, storage_key};
use crate::strategy::Strategy;

pub const GROUP: &str = "policy";
pub const VERSION: &str = "v1";
pub const KIND: &str = "PodDisruptionBudget";
pub const PLURAL: &str = "poddisruptionbudgets";
const SCHEMA_NAME: &str = "io.k8s.api.policy.v1.PodDisruptionBudget";

/// Upstream's `supportedUnhealthyPodEvictionPolicies`.
const EVICTION_POLICIES: [&str; 2] = ["AlwaysAllow", "IfHealthyBudget"];

/// Registers `policy/v1` `poddisruptionbudgets` and adds its schema definitions to the built-in
/// ones (call after [`crate::builtin::register`]).
///
/// # Errors
/// The generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<k8s_openapi::api::policy::v1::PodDisruptionBudget>();
    generator.subschema_for::<k8s_openapi::api::policy::v1::Eviction>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    let root = json!({"$ref": format!("#/$defs/{SCHEMA_NAME}")});
    let schema = Schema::from_json(&root, Some(&defs))?;
    registry.set_builtin_defs(defs);
    registry.add(Resource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        kind: KIND.to_owned(),
        plural: PLURAL.to_owned(),
        singular: "poddisruptionbudget".to_owned(),
        short_names: vec!["pdb".to_owned()],
        categories: vec![],
        namespaced: true,
        status: true,
        scale: None,
        builtin: true,
        schema: Some(Arc::new(schema)),
        schema_name: SCHEMA_NAME.to_owned(),
        printer: Printer::Builtin,
        storage: storage_key(GROUP, PLURAL),
        field_selectors: vec![],
        strategy: Arc::new(PdbStrategy),
    });
    Ok(())
}

/// The PodDisruptionBudget's registry strategy (`pkg/registry/policy/poddisruptionbudget`):
/// generation tracked (the controller reports `status.observedGeneration`, which eviction
/// compares), spec and status validation.
#[derive(Debug)]
struct PdbStrategy;

impl Strategy for PdbStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        validate(obj)
    }
}

/// `ValidatePodDisruptionBudgetSpec` and `ValidatePodDisruptionBudgetStatusUpdate`, with
/// upstream's field paths and messages.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let set = |f: &str| spec.get(f).filter(|v| !v.is_null());
    if set("minAvailable").is_some() && set("maxUnavailable").is_some() {
        c.push(Cause::invalid("spec", &spec, "minAvailable and maxUnavailable cannot be both set"));
    }
    for f in ["minAvailable", "maxUnavailable"] {
        if let Some(v) = set(f) {
            validate_int_or_percent(v, &format!("spec.{f}"), &mut c);
        }
    }
    if let Some(sel) = spec.get("selector").filter(|v| !v.is_null())
        && let Err(e) = kinetic_machinery::selector::LabelSelector::from_label_selector(sel)
    {
        c.push(Cause::invalid("spec.selector", sel, &e.to_string()));
    }
    if let Some(p) = spec.get("unhealthyPodEvictionPolicy").filter(|v| !v.is_null())
        && !p.as_str().is_some_and(|p| EVICTION_POLICIES.contains(&p))
    {
        let supported = EVICTION_POLICIES.map(str::to_owned);
        c.push(Cause::not_supported("spec.unhealthyPodEvictionPolicy", p, &supported));
    }
    for f in ["disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"] {
        if let Some(n) = obj.pointer(&format!("/status/{f}")).and_then(Value::as_i64)
            && n < 0
        {
            c.push(Cause::invalid(
                &format!("status.{f}"),
                &json!(n),
                "must be greater than or equal to 0",
            ));
        }
    }
    c
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
pub fn validate_int_or_percent(v: &Value, path: &str, c: &mut Vec<Cause>) {
    match v {
        Value::String(s) => match s.strip_suffix('%').map(|n| (n, n.parse::<u64>())) {
            Some((n, Ok(p))) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                if p > 100 {
                    c.push(Cause::invalid(path, v, "must not be greater than 100%"));
                }
            }
            _ => c.push(Cause::invalid(
                path,
                v,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        },
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                c.push(Cause::invalid(path, v, "must be greater than or equal to 0"));
            }
        }
        _ => c.push(Cause::invalid(path, v, "must be an integer or percentage (e.g '5%')")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(spec: Value) -> Vec<String> {
        validate(&json!({"spec": spec}))
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn validation_follows_upstream() {
        assert!(
            fields(json!({"minAvailable": 2, "selector": {"matchLabels": {"a": "b"}}})).is_empty()
        );
        assert!(
            fields(json!({"maxUnavailable": "100%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}))
                .is_empty()
        );
        assert!(fields(json!({})).is_empty(), "neither bound: upstream accepts it");
        let f = fields(json!({"minAvailable": 1, "maxUnavailable": 1}));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].ends_with("minAvailable and maxUnavailable cannot be both set"), "{f:?}");
        assert_eq!(
            fields(json!({"maxUnavailable": "101%"})),
            ["spec.maxUnavailable: Invalid value: \"101%\": must not be greater than 100%"]
        );
        assert_eq!(
            fields(json!({"minAvailable": -1})),
            ["spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"]
        );
        let f = fields(json!({"minAvailable": "x%"}));
        assert!(f[0].contains("a valid percent string"), "{f:?}");
        let f = fields(json!({"unhealthyPodEvictionPolicy": "Never"}));
        assert!(
            f[0].starts_with("spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\""),
            "{f:?}"
        );
        let f = validate(&json!({"spec": {}, "status": {"disruptionsAllowed": -1}}));
        assert_eq!(f[0].field, "status.disruptionsAllowed");
    }
}
