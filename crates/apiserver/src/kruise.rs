//! Validation of `apps.kruise.io` objects, as OpenKruise's validating webhook does it
//! (`pkg/webhook/cloneset/validating/validation.go`), so a CloneSet that OpenKruise would refuse
//! is refused here too, with `Invalid` and field causes, before anything is stored.
//!
//! The embedded server runs this in place of the webhook; the CRD schema (served like any
//! CRD) has already checked types, applied defaults and pruned unknown fields. On a real cluster
//! the CRD schema alone applies: `kinetic controller` serves no webhook yet.
//!
//! Deliberately absent: upstream also checks that new `podsToDelete` entries name existing pods
//! of this CloneSet (an API read inside validation); here the controller ignores names that are
//! not its pods and trims them from the list, which is what upstream's controller does too.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_rollout::strategy::scaled_value;
use serde_json::Value;

use crate::builtin::{validate_pod_spec, validate_selector};
use crate::error::{Cause, invalid};

pub const GROUP: &str = "apps.kruise.io";

/// Validates a new (`old` = None) or updated object of kind `kind` in `apps.kruise.io`.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    match kind {
        "CloneSet" => validate_cloneset(obj, old),
        _ => Vec::new(),
    }
}

/// Fields of a CloneSet spec that may change after creation (validation.go, `validateCloneSetUpdate`).
const MUTABLE: [&str; 9] = [
    "replicas",
    "template",
    "scaleStrategy",
    "updateStrategy",
    "minReadySeconds",
    "lifecycle",
    "revisionHistoryLimit",
    "volumeClaimTemplates",
    "progressDeadlineSeconds",
];

/// `GetScaledValueFromIntOrPercent(v, total, roundUp)` on the JSON value, through the
/// controller's own resolution (`kinetic_rollout::strategy::scaled_value`), so the webhook and
/// the controller read a percentage the same way.
fn scaled(v: &Value, total: i64, round_up: bool, field: &'static str) -> Result<i64, String> {
    let value: IntOrString = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let total = i32::try_from(total).unwrap_or(i32::MAX);
    scaled_value(&value, total, round_up, field).map(i64::from).map_err(|e| e.to_string())
}

fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn validate_cloneset(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let replicas = spec.get("replicas").and_then(Value::as_i64).unwrap_or(1);
    if replicas < 0 {
        causes.push(invalid(
            "spec.replicas",
            &replicas.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    validate_selector(obj, None, "cloneset", &mut causes);
    validate_pod_spec(spec.pointer("/template/spec"), "spec.template.spec", &mut causes);
    if let Some(p) = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str)
        && !p.is_empty()
        && p != "Always"
    {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            &Value::String(p.to_owned()),
            &["Always".to_owned()],
        ));
    }
    if spec.pointer("/template/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in cloneset is not Supported",
        ));
    }
    // scaleStrategy.podsToDelete: no duplicates.
    if let Some(list) = spec.pointer("/scaleStrategy/podsToDelete").and_then(Value::as_array) {
        let mut seen = std::collections::BTreeSet::new();
        let dups: Vec<&str> =
            list.iter().filter_map(Value::as_str).filter(|n| !seen.insert(*n)).collect();
        if !dups.is_empty() {
            causes.push(Cause::invalid(
                "spec.scaleStrategy.podsToDelete",
                &Value::Array(list.clone()),
                &format!("duplicated items [{}]", dups.join(" ")),
            ));
        }
    }
    validate_update_strategy(&spec, replicas, &mut causes);
    if let Some(d) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        let min_ready = spec.get("minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
        if d <= min_ready {
            causes.push(invalid(
                "spec.progressDeadlineSeconds",
                &d.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let strip = |s: &Value| {
            let mut s = s.as_object().cloned().unwrap_or_default();
            for f in MUTABLE {
                s.remove(f);
            }
            s
        };
        if strip(&spec) != strip(old_spec) {
            causes.push(Cause::forbidden(
                "spec",
                "updates to cloneset spec for fields other than 'replicas', 'template', 'lifecycle', 'scaleStrategy', 'updateStrategy', 'minReadySeconds', 'volumeClaimTemplates' and 'revisionHistoryLimit' are forbidden",
            ));
        }
    }
    causes
}

fn validate_update_strategy(spec: &Value, replicas: i64, causes: &mut Vec<Cause>) {
    let us = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    let ty = us.get("type").and_then(Value::as_str).unwrap_or("ReCreate");
    if !["ReCreate", "InPlaceIfPossible", "InPlaceOnly", "OnDelete"].contains(&ty) {
        causes.push(invalid(
            "spec.updateStrategy.type",
            ty,
            "must be 'ReCreate', 'InPlaceIfPossible', 'InPlaceOnly' or 'OnDelete'",
        ));
    }
    if let Some(p) = us.get("partition") {
        match scaled(p, replicas, true, "spec.updateStrategy.partition") {
            Ok(n) if n < 0 => causes.push(invalid(
                "spec.updateStrategy.partition",
                &n.to_string(),
                "must be greater than or equal to 0",
            )),
            Ok(_) => {}
            Err(e) => causes.push(invalid(
                "spec.updateStrategy.partition",
                &int_or_string(p),
                &format!("failed GetScaledValueFromIntOrPercent for partition: {e}"),
            )),
        }
    }
    if let Some(ps) = us.get("priorityStrategy").filter(|v| !v.is_null()) {
        let weight =
            ps.get("weightPriority").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        let order =
            ps.get("orderPriority").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        if weight && order {
            causes.push(Cause::required(
                "spec.updateStrategy.priorityStrategy",
                "only one of weightPriority and orderPriority can be used",
            ));
        }
        for (i, w) in
            ps.get("weightPriority").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let weight = w.get("weight").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=100).contains(&weight) {
                causes.push(Cause::required(
                    "spec.updateStrategy.priorityStrategy",
                    &format!(
                        "weight must be valid number in the range 1-100 (weightPriority[{i}])"
                    ),
                ));
            }
        }
        for o in ps.get("orderPriority").and_then(Value::as_array).into_iter().flatten() {
            if o.get("orderedKey").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required(
                    "spec.updateStrategy.priorityStrategy",
                    "order priority requires orderedKey",
                ));
            }
        }
    }
    for (i, t) in
        us.get("scatterStrategy").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
        let value = t.get("value").and_then(Value::as_str).unwrap_or_default();
        if key.is_empty() || value.is_empty() {
            causes.push(Cause::required(
                "spec.updateStrategy.scatterStrategy",
                &format!("key and value of scatterStrategy[{i}] must not be empty"),
            ));
        }
    }
    // Absent means upstream's default of 20 % (the CRD schema normally fills it in already).
    let default_mu = Value::String("20%".into());
    let mu = us.get("maxUnavailable").filter(|v| !v.is_null()).unwrap_or(&default_mu);
    let max_unavailable = match scaled(mu, replicas, true, "spec.updateStrategy.maxUnavailable") {
        Ok(n) => n,
        Err(e) => {
            causes.push(invalid(
                "spec.updateStrategy.maxUnavailable",
                &int_or_string(mu),
                &format!("failed GetScaledValueFromIntOrPercent for maxUnavailable: {e}"),
            ));
            0
        }
    };
    let mut max_surge = 0;
    if let Some(ms) = us.get("maxSurge").filter(|v| !v.is_null()) {
        match scaled(ms, replicas, true, "spec.updateStrategy.maxSurge") {
            Ok(n) => max_surge = n,
            Err(e) => causes.push(invalid(
                "spec.updateStrategy.maxSurge",
                &int_or_string(ms),
                &format!("failed GetScaledValueFromIntOrPercent for maxSurge: {e}"),
            )),
        }
        if ty == "InPlaceOnly" && max_surge > 0 {
            causes.push(invalid(
                "spec.updateStrategy.maxSurge",
                &int_or_string(ms),
                "can not use maxSurge with strategy type InPlaceOnly",
            ));
        }
    }
    if replicas > 0 && max_unavailable < 1 && max_surge < 1 {
        causes.push(invalid(
            "spec.updateStrategy.maxUnavailable",
            &us.get("maxUnavailable").map(int_or_string).unwrap_or_default(),
            "maxUnavailable and maxSurge should not both be less than 1",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cs(update: Value) -> Value {
        json!({"spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": update,
        }})
    }

    fn fields(c: &[Cause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn follows_the_webhook() {
        assert!(validate("CloneSet", &cs(json!({"maxUnavailable": "20%"})), None).is_empty());
        let c = validate(
            "CloneSet",
            &cs(json!({"type": "InPlaceOnly", "maxSurge": 1, "maxUnavailable": 0})),
            None,
        );
        assert_eq!(
            fields(&c),
            [
                "spec.updateStrategy.maxSurge: Invalid value: \"1\": can not use maxSurge with strategy type InPlaceOnly"
            ]
        );
        let c = validate("CloneSet", &cs(json!({"maxUnavailable": 0, "maxSurge": "0%"})), None);
        assert_eq!(c.len(), 1, "{:?}", fields(&c));
        assert!(c[0].message.contains("should not both be less than 1"));
        let c = validate("CloneSet", &cs(json!({"type": "Rolling", "partition": "x%"})), None);
        assert_eq!(c.len(), 2, "{:?}", fields(&c));
        // Only the listed fields may change.
        let old = cs(json!({}));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
        let c = validate("CloneSet", &new, Some(&old));
        assert_eq!(c.len(), 1, "{:?}", fields(&c));
        assert_eq!(c[0].field, "spec");
    }
}
