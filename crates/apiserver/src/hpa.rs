//! `autoscaling/v2` HorizontalPodAutoscaler, served as a built-in kind: its schema (generated
//! from `k8s-openapi`), upstream's defaults (`pkg/apis/autoscaling/v2/defaults.go`) and
//! validation (`pkg/apis/autoscaling/validation`), a `status` subresource, short name `hpa`,
//! category `all`. The controller that acts on it lives in `kinetic-controllers` (`hpa`).
//!
//! `autoscaling/v1` is served beside it, stored as v2: the strategy's conversion hooks
//! (`to_served`, `to_stored`) call [`v1`] (upstream's conversion, the v2-only fields in
//! annotations) on every read and write through v1.

use std::sync::Arc;

pub mod v1;

use kinetic_machinery::schema::{Schema, SchemaError};
use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::registry::{Printer, Registry, Resource, storage_key};
use crate::strategy::Strategy;

pub const GROUP: &str = "autoscaling";
pub const KIND: &str = "HorizontalPodAutoscaler";
const SCHEMA_NAME: &str = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler";

/// Upstream's `MaxStabilizationWindowSeconds` and `MaxPeriodSeconds`.
const MAX_STABILIZATION: i64 = 3600;
const MAX_PERIOD: i64 = 1800;

/// Registers `autoscaling/v2` `horizontalpodautoscalers` and adds its schema definitions to the
/// built-in ones (call after [`crate::builtin::register`]).
///
/// # Errors
/// The generated schema is not structural (a bug, reported at start).
pub fn register(registry: &Registry) -> Result<(), SchemaError> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>();
    let mut defs: Map<String, Value> = (*registry.builtin_defs()).clone();
    for (k, v) in generator.take_definitions(true) {
        defs.entry(k).or_insert(v);
    }
    let root = json!({"$ref": format!("#/$defs/{SCHEMA_NAME}")});
    let schema = Schema::from_json(&root, Some(&defs))?;
    registry.set_builtin_defs(defs);
    registry.add(Resource {
        group: GROUP.to_owned(),
        version: "v2".to_owned(),
        kind: KIND.to_owned(),
        plural: "horizontalpodautoscalers".to_owned(),
        singular: "horizontalpodautoscaler".to_owned(),
        short_names: vec!["hpa".to_owned()],
        categories: vec!["all".to_owned()],
        namespaced: true,
        status: true,
        scale: None,
        builtin: true,
        schema: Some(Arc::new(schema)),
        schema_name: SCHEMA_NAME.to_owned(),
        printer: Printer::Builtin,
        storage: storage_key(GROUP, "horizontalpodautoscalers"),
        field_selectors: vec![],
        strategy: Arc::new(HpaStrategy { v1: false }),
    });
    // `autoscaling/v1` beside it, stored as v2 and converted both ways by [`v1`] (upstream
    // serves both; v2, registered first, stays the preferred version). Its schema is v2's: the
    // rules run on the object after conversion to the stored shape.
    let v2 = registry.get(GROUP, "v2", "horizontalpodautoscalers");
    if let Some(v2) = v2 {
        let mut v1 = (*v2).clone();
        v1.version = "v1".to_owned();
        v1.strategy = Arc::new(HpaStrategy { v1: true });
        registry.add(v1);
    }
    Ok(())
}

/// The HorizontalPodAutoscaler's registry strategy: defaults and validation; status is a
/// subresource (handled generically). `v1`: the strategy of the `autoscaling/v1` endpoints,
/// which convert to and from the stored v2.
#[derive(Debug)]
struct HpaStrategy {
    v1: bool,
}

impl Strategy for HpaStrategy {
    /// Spec writes bump `metadata.generation`, which the controller reports back as
    /// `status.observedGeneration`.
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default(obj);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        validate(obj)
    }

    fn to_served(&self, stored: &Value) -> Option<Value> {
        self.v1.then(|| v1::to_v1(stored))
    }

    /// A body that came through v1 (or names no version) is converted; one already in the
    /// stored shape (the server's own writes of a stored object) is left alone.
    fn to_stored(&self, obj: &mut Value) {
        if self.v1 && obj.get("apiVersion").and_then(Value::as_str) != Some(STORED_API_VERSION) {
            *obj = v1::from_v1(obj);
        }
    }

    fn stored_api_version(&self) -> Option<&'static str> {
        self.v1.then_some(STORED_API_VERSION)
    }
}

const STORED_API_VERSION: &str = "autoscaling/v2";

/// The object at `key`, created empty when missing or not an object.
fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

/// Sets `key` to `v` when it is missing or null.
fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

/// `SetDefaults_HorizontalPodAutoscaler`: `minReplicas` 1, a CPU utilisation target of 80 %
/// when no metric is given, and the defaults of each `behavior` direction that is set.
pub fn default(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else { return };
    set_default(spec, "minReplicas", json!(1));
    if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    if let Some(b) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        let up = b.entry("scaleUp").or_insert_with(|| json!({}));
        if let Some(up) = up.as_object_mut() {
            set_default(up, "stabilizationWindowSeconds", json!(0));
            set_default(up, "selectPolicy", json!("Max"));
            set_default(
                up,
                "policies",
                json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                       {"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
        }
        // The scale-down window stays unset: the controller's
        // --horizontal-pod-autoscaler-downscale-stabilization (5 min) applies.
        let down = b.entry("scaleDown").or_insert_with(|| json!({}));
        if let Some(down) = down.as_object_mut() {
            set_default(down, "selectPolicy", json!("Max"));
            set_default(
                down,
                "policies",
                json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
        }
    }
}

fn int(v: &Value, p: &str) -> Option<i64> {
    v.pointer(p).and_then(Value::as_i64)
}

/// `ValidateHorizontalPodAutoscaler` (spec) with upstream's field paths and messages.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let min = int(&spec, "/minReplicas");
    if let Some(m) = min
        && m < 1
    {
        c.push(Cause::invalid("spec.minReplicas", &json!(m), "must be greater than or equal to 1"));
    }
    let max = int(&spec, "/maxReplicas").unwrap_or(0);
    if max < 1 {
        c.push(Cause::invalid("spec.maxReplicas", &json!(max), "must be greater than 0"));
    }
    if let Some(m) = min
        && max < m
    {
        c.push(Cause::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for f in ["kind", "name"] {
        let v = spec.pointer(&format!("/scaleTargetRef/{f}")).and_then(Value::as_str);
        match v {
            None | Some("") => c.push(Cause::required(&format!("spec.scaleTargetRef.{f}"), "")),
            Some(s) if s == "." || s == ".." || s.contains('/') || s.contains('%') => {
                c.push(Cause::invalid(
                    &format!("spec.scaleTargetRef.{f}"),
                    &json!(s),
                    "may not contain '/' or '%' and may not be '.' or '..'",
                ));
            }
            Some(_) => {}
        }
    }
    for (i, m) in spec.get("metrics").and_then(Value::as_array).into_iter().flatten().enumerate() {
        validate_metric(m, &format!("spec.metrics[{i}]"), &mut c);
    }
    if let Some(b) = spec.get("behavior").filter(|b| b.is_object()) {
        for dir in ["scaleUp", "scaleDown"] {
            if let Some(r) = b.get(dir).filter(|r| r.is_object()) {
                validate_rules(r, &format!("spec.behavior.{dir}"), &mut c);
            }
        }
    }
    c
}

const SOURCES: [(&str, &str); 5] = [
    ("Object", "object"),
    ("Pods", "pods"),
    ("Resource", "resource"),
    ("ContainerResource", "containerResource"),
    ("External", "external"),
];

fn validate_metric(m: &Value, path: &str, c: &mut Vec<Cause>) {
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() {
        c.push(Cause::required(&format!("{path}.type"), "must specify a metric source type"));
    } else if !SOURCES.iter().any(|(t, _)| *t == ty) {
        let supported: Vec<String> = SOURCES.iter().map(|(t, _)| (*t).to_owned()).collect();
        c.push(Cause::not_supported(&format!("{path}.type"), &json!(ty), &supported));
    }
    let expected = SOURCES.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f);
    if let Some(f) = expected
        && m.get(f).is_none_or(Value::is_null)
    {
        c.push(Cause::required(
            &format!("{path}.{f}"),
            "must populate information for the given metric source",
        ));
    }
    let present: Vec<&str> = SOURCES
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| m.get(*f).is_some_and(|v| !v.is_null()))
        .collect();
    if present.len() > 1 {
        for f in present.iter().filter(|f| Some(**f) != expected) {
            c.push(Cause::forbidden(
                &format!("{path}.{f}"),
                "must populate the given metric source only",
            ));
        }
    }
    for f in ["resource", "containerResource"] {
        let Some(src) = m.get(f).filter(|v| v.is_object()) else { continue };
        let p = format!("{path}.{f}");
        if src.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            c.push(Cause::required(&format!("{p}.name"), "must specify a resource name"));
        }
        if f == "containerResource"
            && src.get("container").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            c.push(Cause::required(&format!("{p}.container"), "must specify a container"));
        }
        let target = src.get("target").cloned().unwrap_or(Value::Null);
        validate_target(&target, &format!("{p}.target"), c);
        let (u, v) = (target.get("averageUtilization"), target.get("averageValue"));
        match (u.is_some_and(|x| !x.is_null()), v.is_some_and(|x| !x.is_null())) {
            (false, false) => c.push(Cause::required(
                &format!("{p}.target.averageUtilization"),
                "must set either a target raw value or a target utilization",
            )),
            (true, true) => c.push(Cause::forbidden(
                &format!("{p}.target.averageValue"),
                "may not set both a target raw value and a target utilization",
            )),
            _ => {}
        }
    }
    for f in ["pods", "object", "external"] {
        if let Some(src) = m.get(f).filter(|v| v.is_object()) {
            let p = format!("{path}.{f}");
            if src.pointer("/metric/name").and_then(Value::as_str).is_none_or(str::is_empty) {
                c.push(Cause::required(&format!("{p}.metric.name"), "must specify a metric name"));
            }
            validate_target(
                &src.get("target").cloned().unwrap_or(Value::Null),
                &format!("{p}.target"),
                c,
            );
        }
    }
}

/// `validateMetricTarget`.
fn validate_target(t: &Value, path: &str, c: &mut Vec<Cause>) {
    let ty = t.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() {
        c.push(Cause::required(&format!("{path}.type"), "must specify a metric target type"));
    } else if !matches!(ty, "Utilization" | "Value" | "AverageValue") {
        c.push(Cause::invalid(
            &format!("{path}.type"),
            &json!(ty),
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    if ty == "Utilization" && t.get("averageUtilization").is_none_or(Value::is_null) {
        c.push(Cause::required(
            &format!("{path}.averageUtilization"),
            "must set either a target raw value or a target utilization",
        ));
    }
    if let Some(u) = t.get("averageUtilization").and_then(Value::as_i64)
        && u < 1
    {
        c.push(Cause::invalid(
            &format!("{path}.averageUtilization"),
            &json!(u),
            "must be greater than 0",
        ));
    }
    for (want, f) in [("Value", "value"), ("AverageValue", "averageValue")] {
        let v = t.get(f).filter(|v| !v.is_null());
        if ty == want && v.is_none() {
            c.push(Cause::required(
                &format!("{path}.{f}"),
                "must set either a target value for metric or a per-pod target",
            ));
        }
        if let Some(q) = v {
            let s = q.as_str().map(str::to_owned).unwrap_or_else(|| q.to_string());
            let positive = kinetic_machinery::quantity::milli(&s).is_ok_and(|x| x > 0);
            if !positive {
                c.push(Cause::invalid(&format!("{path}.{f}"), q, "must be positive"));
            }
        }
    }
}

/// `validateScalingRules`.
fn validate_rules(r: &Value, path: &str, c: &mut Vec<Cause>) {
    if let Some(w) = r.get("stabilizationWindowSeconds").and_then(Value::as_i64) {
        let p = format!("{path}.stabilizationWindowSeconds");
        if w < 0 {
            c.push(Cause::invalid(&p, &json!(w), "must be greater than or equal to zero"));
        }
        if w > MAX_STABILIZATION {
            c.push(Cause::invalid(
                &p,
                &json!(w),
                &format!("must be less than or equal to {MAX_STABILIZATION}"),
            ));
        }
    }
    if let Some(s) = r.get("selectPolicy").and_then(Value::as_str)
        && !matches!(s, "Max" | "Min" | "Disabled")
    {
        let supported = ["Disabled", "Max", "Min"].map(str::to_owned);
        c.push(Cause::not_supported(&format!("{path}.selectPolicy"), &json!(s), &supported));
    }
    let policies = r.get("policies").and_then(Value::as_array).cloned().unwrap_or_default();
    if policies.is_empty() {
        c.push(Cause::required(&format!("{path}.policies"), "must specify at least one Policy"));
    }
    for (i, p) in policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(ty, "Pods" | "Percent") {
            let supported = ["Percent", "Pods"].map(str::to_owned);
            c.push(Cause::not_supported(&format!("{pp}.type"), &json!(ty), &supported));
        }
        let v = int(p, "/value").unwrap_or(0);
        if v <= 0 {
            c.push(Cause::invalid(&format!("{pp}.value"), &json!(v), "must be greater than zero"));
        }
        let s = int(p, "/periodSeconds").unwrap_or(0);
        if s <= 0 {
            c.push(Cause::invalid(
                &format!("{pp}.periodSeconds"),
                &json!(s),
                "must be greater than zero",
            ));
        }
        if s > MAX_PERIOD {
            c.push(Cause::invalid(
                &format!("{pp}.periodSeconds"),
                &json!(s),
                &format!("must be less than or equal to {MAX_PERIOD}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(spec: Value) -> Value {
        let mut h = json!({"apiVersion": "autoscaling/v2", "kind": KIND,
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                     "maxReplicas": 4}});
        if let (Some(s), Some(extra)) = (h["spec"].as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        h
    }

    #[test]
    fn defaults_follow_upstream() {
        let mut h = hpa(json!({}));
        default(&mut h);
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        assert!(h["spec"].get("behavior").is_none(), "no behavior stays no behavior");
        let mut h = hpa(json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}));
        default(&mut h);
        let b = &h["spec"]["behavior"];
        assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(b["scaleUp"]["policies"].as_array().unwrap().len(), 2);
        assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(b["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(b["scaleDown"]["policies"][0]["type"], "Percent");
    }

    fn fields(obj: &Value) -> Vec<String> {
        validate(obj).into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn validation_follows_upstream() {
        let mut ok = hpa(json!({}));
        default(&mut ok);
        assert_eq!(fields(&ok), Vec::<String>::new());
        let bad = hpa(json!({"minReplicas": 5, "maxReplicas": 2}));
        assert_eq!(
            fields(&bad),
            ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );
        let bad = hpa(json!({"minReplicas": 0, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "0"}}},
            {"type": "Pods"}]}));
        let f = fields(&bad);
        assert!(
            f.contains(
                &"spec.minReplicas: Invalid value: 0: must be greater than or equal to 1"
                    .to_owned()
            ),
            "{f:#?}"
        );
        assert!(f.contains(&"spec.metrics[0].resource.target.averageUtilization: Required value: must set either a target raw value or a target utilization".to_owned()), "{f:#?}");
        assert!(f.contains(&"spec.metrics[1].resource.target.averageValue: Invalid value: \"0\": must be positive".to_owned()), "{f:#?}");
        assert!(f.contains(&"spec.metrics[2].pods: Required value: must populate information for the given metric source".to_owned()), "{f:#?}");
        let bad = hpa(json!({"behavior": {"scaleUp": {"stabilizationWindowSeconds": 4000,
            "selectPolicy": "Most", "policies": [{"type": "Pods", "value": 0, "periodSeconds": 2000}]}}}));
        let f = fields(&bad);
        assert_eq!(f.len(), 4, "{f:#?}");
        assert!(f[0].starts_with("spec.behavior.scaleUp.stabilizationWindowSeconds: Invalid value: 4000: must be less than or equal to 3600"), "{f:#?}");
        assert!(
            f[1].starts_with("spec.behavior.scaleUp.selectPolicy: Unsupported value: \"Most\""),
            "{f:#?}"
        );
    }
}
