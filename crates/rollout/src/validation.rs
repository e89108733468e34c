//! The validation rules of a CloneSet that need no other object: OpenKruise's validating
//! webhook (`pkg/webhook/cloneset/validating/validation.go`) for the CloneSet-specific fields,
//! and the workload selector rule it shares with ReplicaSet and Deployment
//! (`ValidateReplicaSetSpec`: a selector, not empty, that matches the template's labels).
//!
//! Two callers apply them, so both homes enforce the same rules: the embedded API server, in
//! place of the webhook (it adds the pod template's own validation and the rules of an update,
//! which compare with the stored object), and the CloneSet controller, because on a real
//! cluster no Kruise webhook runs and a CloneSet the webhook would refuse gets stored anyway
//! (issue 10, item 6: a selector that did not match the template leaked one orphan pod a
//! minute). The controller refuses to act on such a CloneSet.
//!
//! Everything here reads the object's JSON and returns upstream-shaped field errors
//! ([`FieldCause`]); nothing here does I/O. A `null` field counts as absent, so a typed
//! object serialized with its unset fields as `null` is read as the server reads its JSON.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_machinery::schema::FieldCause;
use kinetic_machinery::selector::LabelSelector;
use serde_json::Value;

use crate::strategy::scaled_value;

fn invalid(field: &str, value: &str, detail: &str) -> FieldCause {
    FieldCause::invalid(field, &Value::String(value.to_owned()), detail)
}

/// The selector rule of ReplicaSet, Deployment and CloneSet on `obj` (the whole object):
/// `spec.selector` is required, parses, is not empty (`what` names the kind in that message,
/// as upstream's `empty selector is invalid for deployment`), and matches
/// `spec.template.metadata.labels`. Immutability is the caller's (it needs the old object).
pub fn workload_selector(obj: &Value, what: &str) -> Vec<FieldCause> {
    let spec = obj.get("spec");
    let Some(sel) = spec.and_then(|s| s.get("selector")).filter(|v| !v.is_null()) else {
        return vec![FieldCause::required("spec.selector", "")];
    };
    match LabelSelector::from_label_selector(sel) {
        Ok(s) if s.is_empty() => vec![invalid(
            "spec.selector",
            &sel.to_string(),
            &format!("empty selector is invalid for {what}"),
        )],
        Ok(s) => {
            let labels = spec
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .and_then(Value::as_object);
            if s.matches(labels) {
                Vec::new()
            } else {
                vec![invalid(
                    "spec.template.metadata.labels",
                    &labels.map(|l| Value::Object(l.clone())).unwrap_or_default().to_string(),
                    "`selector` does not match template `labels`",
                )]
            }
        }
        Err(e) => vec![invalid("spec.selector", &sel.to_string(), &e.to_string())],
    }
}

/// The webhook's rules for a CloneSet `obj` (the whole object) that need neither the stored
/// object nor the pod template's own validation: replicas, the selector
/// ([`workload_selector`]), the template's restartPolicy and activeDeadlineSeconds,
/// `podsToDelete`, the update strategy and `progressDeadlineSeconds`.
pub fn cloneset(obj: &Value) -> Vec<FieldCause> {
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
    causes.extend(workload_selector(obj, "cloneset"));
    if let Some(p) = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str)
        && !p.is_empty()
        && p != "Always"
    {
        causes.push(FieldCause::not_supported(
            "spec.template.spec.restartPolicy",
            &Value::String(p.to_owned()),
            &["Always".to_owned()],
        ));
    }
    if spec.pointer("/template/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        causes.push(FieldCause::forbidden(
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
            causes.push(FieldCause::invalid(
                "spec.scaleStrategy.podsToDelete",
                &Value::Array(list.clone()),
                &format!("duplicated items [{}]", dups.join(" ")),
            ));
        }
    }
    update_strategy(&spec, replicas, &mut causes);
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
    causes
}

/// `GetScaledValueFromIntOrPercent(v, total, roundUp)` on the JSON value, through the
/// controller's own resolution ([`scaled_value`]), so the webhook and the controller read a
/// percentage the same way.
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

fn update_strategy(spec: &Value, replicas: i64, causes: &mut Vec<FieldCause>) {
    let us = spec.get("updateStrategy").cloned().unwrap_or(Value::Null);
    let ty = us.get("type").and_then(Value::as_str).unwrap_or("ReCreate");
    if !["ReCreate", "InPlaceIfPossible", "InPlaceOnly", "OnDelete"].contains(&ty) {
        causes.push(invalid(
            "spec.updateStrategy.type",
            ty,
            "must be 'ReCreate', 'InPlaceIfPossible', 'InPlaceOnly' or 'OnDelete'",
        ));
    }
    if let Some(p) = us.get("partition").filter(|v| !v.is_null()) {
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
            causes.push(FieldCause::required(
                "spec.updateStrategy.priorityStrategy",
                "only one of weightPriority and orderPriority can be used",
            ));
        }
        for (i, w) in
            ps.get("weightPriority").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let weight = w.get("weight").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=100).contains(&weight) {
                causes.push(FieldCause::required(
                    "spec.updateStrategy.priorityStrategy",
                    &format!(
                        "weight must be valid number in the range 1-100 (weightPriority[{i}])"
                    ),
                ));
            }
        }
        for o in ps.get("orderPriority").and_then(Value::as_array).into_iter().flatten() {
            if o.get("orderedKey").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(FieldCause::required(
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
            causes.push(FieldCause::required(
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
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::*;

    fn check(obj: Value, expect: Expect) {
        let causes: Vec<String> =
            cloneset(&obj).iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        expect.assert_eq(&causes.join("\n"));
    }

    fn cs(selector: Value, labels: Value) -> Value {
        json!({"spec": {
            "replicas": 3,
            "selector": selector,
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": {"partition": null, "maxSurge": null},
        }})
    }

    #[test]
    fn selector_must_match_the_template_labels() {
        check(cs(json!({"matchLabels": {"app": "a"}}), json!({"app": "a", "x": "y"})), expect![""]);
        check(
            cs(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"})),
            expect![[
                r#"spec.template.metadata.labels: Invalid value: "{\"app\":\"b\"}": `selector` does not match template `labels`"#
            ]],
        );
        check(
            cs(json!({}), json!({"app": "b"})),
            expect![[
                r#"spec.selector: Invalid value: "{}": empty selector is invalid for cloneset"#
            ]],
        );
        check(cs(Value::Null, json!({"app": "b"})), expect!["spec.selector: Required value"]);
    }

    #[test]
    fn a_typed_cloneset_with_unset_fields_is_valid() {
        let typed: kinetic_api::kruise::cloneset::CloneSet = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "a"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap();
        check(serde_json::to_value(&typed).unwrap(), expect![""]);
    }
}

/// The webhook's rule for an update of a CloneSet whose strategy is `InPlaceOnly`
/// (`validateCloneSetUpdate`): the RFC 6902 diff of the old and new `template.spec` may only
/// replace container images (`/containers/N/image`); anything else is refused with upstream's
/// message, where before it was accepted and the rollout then stalled (issue 18). Template
/// metadata may change, as upstream allows.
pub fn cloneset_in_place_only_update(old: &Value, new: &Value) -> Vec<FieldCause> {
    let in_place_only =
        new.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("InPlaceOnly");
    let (Some(old_spec), Some(new_spec)) =
        (old.pointer("/spec/template/spec"), new.pointer("/spec/template/spec"))
    else {
        return Vec::new();
    };
    if !in_place_only {
        return Vec::new();
    }
    let only_images = json_patch::diff(old_spec, new_spec).iter().all(|op| match op {
        json_patch::PatchOperation::Replace(r) => {
            let path = r.path.to_string();
            path.strip_prefix("/containers/")
                .and_then(|rest| rest.strip_suffix("/image"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    });
    if only_images {
        Vec::new()
    } else {
        vec![FieldCause::forbidden(
            "spec.template",
            "only allowed to update images in spec for InPlaceOnly",
        )]
    }
}

#[cfg(test)]
mod in_place_only_tests {
    use serde_json::json;

    use super::cloneset_in_place_only_update;

    fn cs(strategy: &str, image: &str, env: &str) -> serde_json::Value {
        json!({"spec": {
            "updateStrategy": {"type": strategy},
            "template": {
                "metadata": {"labels": {"app": "a", "v": image}},
                "spec": {"containers": [
                    {"name": "main", "image": image, "env": [{"name": "E", "value": env}]},
                    {"name": "side", "image": "side:1"},
                ]},
            },
        }})
    }

    #[test]
    fn in_place_only_accepts_image_and_metadata_changes_only() {
        let old = cs("InPlaceOnly", "web:1", "a");
        assert!(cloneset_in_place_only_update(&old, &cs("InPlaceOnly", "web:2", "a")).is_empty());
        let refused = cloneset_in_place_only_update(&old, &cs("InPlaceOnly", "web:2", "b"));
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "spec.template");
        assert!(
            refused[0].message.contains("only allowed to update images in spec for InPlaceOnly")
        );
        let recreate = cs("ReCreate", "web:1", "a");
        assert!(cloneset_in_place_only_update(&recreate, &cs("ReCreate", "web:2", "b")).is_empty());
    }
}
