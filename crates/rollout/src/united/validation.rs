//! Kruise's UnitedDeployment webhook rules (`pkg/webhook/uniteddeployment/validating/
//! uniteddeployment_validation.go`, v1.9) with upstream's messages, over the object as JSON:
//! the embedded API server applies [`validate`] on create and update (plus [`validate_update`]
//! and the pod template's own validation) and the controller refuses to act on an object that
//! breaks [`validate`] (no webhook runs on a real cluster).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_machinery::schema::FieldCause;
use kinetic_machinery::selector::LabelSelector;
use serde_json::Value;

use super::parse_subset_replicas;

const TEMPLATES: [&str; 4] = [
    "statefulSetTemplate",
    "advancedStatefulSetTemplate",
    "cloneSetTemplate",
    "deploymentTemplate",
];

fn invalid(field: &str, value: &Value, detail: &str) -> FieldCause {
    FieldCause::invalid(field, value, detail)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

fn int_or_string(v: &Value) -> Option<IntOrString> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()).map(IntOrString::Int),
        Value::String(s) => Some(IntOrString::String(s.clone())),
        _ => None,
    }
}

/// `validateUnitedDeploymentSpec` on the whole object.
pub fn validate(obj: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let replicas = spec.get("replicas").and_then(Value::as_i64);
    if let Some(r) = replicas.filter(|r| *r < 0) {
        causes.push(invalid(
            "spec.replicas",
            &Value::from(r),
            "must be greater than or equal to 0",
        ));
    }
    let selector = match spec.get("selector").filter(|s| !s.is_null()) {
        None => {
            causes.push(FieldCause::required("spec.selector", ""));
            None
        }
        Some(sel) => match LabelSelector::from_label_selector(sel) {
            Ok(s) if s.is_empty() => {
                causes.push(invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for statefulset",
                ));
                Some(s)
            }
            Ok(s) => Some(s),
            Err(e) => {
                causes.push(invalid("spec.selector", sel, &e.to_string()));
                None
            }
        },
    };
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let set: Vec<&str> =
        TEMPLATES.into_iter().filter(|t| template.get(*t).is_some_and(|v| !v.is_null())).collect();
    match set.len() {
        0 => causes.push(FieldCause::required(
            "spec.template",
            "should provide one of statefulSetTemplate, advancedStatefulSetTemplate, cloneSetTemplate, or deploymentTemplate",
        )),
        1 => {}
        _ => causes.push(invalid(
            "spec.template",
            &template,
            "should provide only one of statefulSetTemplate, advancedStatefulSetTemplate, cloneSetTemplate, or deploymentTemplate",
        )),
    }
    if let (Some(kind), Some(selector)) = (set.first(), selector.as_ref()) {
        let t = &template[*kind];
        // Upstream checks the workload's labels against the selector (not for CloneSet, whose
        // pod template labels the CloneSet's own webhook checks); we check the pod template's
        // labels for every kind, since the subsets' pods must be selected.
        let checks = [
            (*kind != "cloneSetTemplate", "metadata.labels", t.pointer("/metadata/labels")),
            (true, "spec.template.metadata.labels", t.pointer("/spec/template/metadata/labels")),
        ];
        for (_, field, labels) in checks.into_iter().filter(|c| c.0) {
            let path = format!("spec.template.{kind}.{field}");
            if !selector.matches(labels.and_then(Value::as_object)) {
                causes.push(invalid(
                    &path,
                    labels.unwrap_or(&Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        if let Some(r) = t.pointer("/spec/replicas").filter(|r| !r.is_null()) {
            let what = kind.trim_end_matches("Template");
            causes.push(invalid(
                &format!("spec.template.{kind}.spec.replicas"),
                r,
                &format!("replicas in {what}Template will not be used"),
            ));
        }
        if *kind == "statefulSetTemplate" || *kind == "advancedStatefulSetTemplate" {
            let us = t.pointer("/spec/updateStrategy");
            let rolling = us
                .and_then(|u| u.get("type"))
                .and_then(Value::as_str)
                .is_none_or(|t| t == "RollingUpdate");
            if let Some(p) = us
                .and_then(|u| u.pointer("/rollingUpdate/partition"))
                .filter(|p| rolling && !p.is_null())
            {
                causes.push(invalid(
                    &format!("spec.template.{kind}.spec.updateStrategy.rollingUpdate.partition"),
                    p,
                    &format!("partition in {kind} will not be used"),
                ));
            }
        }
    }
    let subsets: Vec<Value> =
        spec.pointer("/topology/subsets").and_then(Value::as_array).cloned().unwrap_or_default();
    validate_subset_replicas(replicas.and_then(|r| i32::try_from(r).ok()), &subsets, &mut causes);
    let mut names = BTreeSet::new();
    for (i, s) in subsets.iter().enumerate() {
        let path = format!("spec.topology.subsets[{i}].name");
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            causes.push(FieldCause::required(&path, ""));
        }
        if !names.insert(name.to_owned()) {
            causes.push(invalid(
                &path,
                &Value::from(name),
                &format!("duplicated subset name {name}"),
            ));
        }
        if !name.is_empty() && !is_dns_label(name) {
            causes.push(invalid(
                &path,
                &Value::from(name),
                "invalid subset name a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            ));
        }
        for (j, e) in s
            .pointer("/nodeSelectorTerm/matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = format!("spec.topology.subsets[{i}].nodeSelectorTerm.matchExpressions[{j}]");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or_default();
            let values = e.get("values").and_then(Value::as_array).map_or(0, Vec::len);
            if e.get("key").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(FieldCause::required(&format!("{p}.key"), ""));
            }
            match op {
                "In" | "NotIn" if values == 0 => causes.push(FieldCause::required(
                    &format!("{p}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if values > 0 => causes.push(FieldCause::forbidden(
                    &format!("{p}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "Gt" | "Lt" if values != 1 => causes.push(FieldCause::required(
                    &format!("{p}.values"),
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                other => causes.push(FieldCause::not_supported(
                    &format!("{p}.operator"),
                    &Value::from(other),
                    &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"].map(str::to_owned),
                )),
            }
        }
    }
    let partitions = spec.pointer("/updateStrategy/manualUpdate/partitions");
    if let Some(p) = partitions.and_then(Value::as_object) {
        for subset in p.keys() {
            if !names.contains(subset) {
                causes.push(invalid(
                    "spec.updateStrategy.partitions",
                    partitions.unwrap_or(&Value::Null),
                    &format!("subset {subset} does not exist"),
                ));
            }
        }
    }
    causes
}

/// `validateSubsetReplicas`.
fn validate_subset_replicas(
    expected: Option<i32>,
    subsets: &[Value],
    causes: &mut Vec<FieldCause>,
) {
    let expected = expected.unwrap_or(-1);
    let path = "spec.topology.subsets";
    let (mut sum, mut sum_min, mut sum_max) = (0i64, 0i64, 0i64);
    let (mut count, mut count_max) = (0usize, 0usize);
    let (mut has_replicas, mut has_capacity) = (false, false);
    for (i, s) in subsets.iter().enumerate() {
        let mut parse = |field: &str, default: i32| -> (bool, i32) {
            let Some(v) = s.get(field).filter(|v| !v.is_null()) else { return (false, default) };
            let parsed = int_or_string(v)
                .ok_or_else(|| "must be an integer or a percentage".to_owned())
                .and_then(|v| parse_subset_replicas(expected, &v));
            match parsed {
                Ok(n) => (true, n),
                Err(e) => {
                    causes.push(invalid(&format!("{path}[{i}].{field}"), v, &e));
                    (true, 0)
                }
            }
        };
        let (set, r) = parse("replicas", 0);
        if set {
            count += 1;
            has_replicas = true;
        }
        sum += i64::from(r);
        let (set, min) = parse("minReplicas", 0);
        has_capacity |= set;
        sum_min += i64::from(min);
        let (set, max) = parse("maxReplicas", 1_000_000);
        if set {
            count_max += 1;
            has_capacity = true;
        }
        sum_max += i64::from(max);
        if min > max {
            causes.push(invalid(
                &format!("{path}[{i}].minReplicas"),
                s.get("maxReplicas").unwrap_or(&Value::Null),
                &format!("subset[{i}].minReplicas must be more than or equal to maxReplicas"),
            ));
        }
    }
    let all = Value::Array(subsets.to_vec());
    if has_replicas && has_capacity {
        causes.push(invalid(
            path,
            &all,
            "subset.Replicas and subset.MinReplicas/subset.MaxReplicas are mutually exclusive in a UnitedDeployment",
        ));
        return;
    }
    if has_capacity {
        if expected == -1 {
            causes.push(invalid(
                path,
                &Value::from(expected),
                "spec.replicas must be not empty if you set subset.minReplicas/maxReplicas",
            ));
        }
        if count_max >= subsets.len() {
            causes.push(invalid(
                path,
                &Value::from(count_max),
                "at least one subset.maxReplicas must be empty",
            ));
        }
        if sum_min > sum_max {
            causes.push(invalid(path, &Value::from(sum_min), "sum of indicated subset.minReplicas should not be greater than sum of indicated subset.maxReplicas"));
        }
    } else if expected != -1 {
        if sum > i64::from(expected) {
            causes.push(invalid(
                path,
                &Value::from(sum),
                &format!("sum of indicated subset replicas {sum} should not be greater than UnitedDeployment replicas {expected}"),
            ));
        }
        if count > 0 && count == subsets.len() && sum != i64::from(expected) {
            causes.push(invalid(
                path,
                &Value::from(sum),
                &format!("if replicas of all subsets are provided, the sum of indicated subset replicas {sum} should equal UnitedDeployment replicas {expected}"),
            ));
        }
    } else if count != subsets.len() {
        causes.push(invalid(path, &Value::from(sum), "if UnitedDeployment replicas is not provided, replicas of all subsets should be provided"));
    }
}

/// `validateUnitedDeploymentTopology` on an update: a subset's `nodeSelectorTerm` and
/// `tolerations` may not change.
pub fn validate_update(old: &Value, new: &Value) -> Vec<FieldCause> {
    let subsets = |o: &Value| -> Vec<Value> {
        o.pointer("/spec/topology/subsets").and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let before = subsets(old);
    let mut causes = Vec::new();
    for (i, s) in subsets(new).iter().enumerate() {
        let Some(o) = before.iter().find(|o| o.get("name") == s.get("name")) else { continue };
        let norm = |v: Option<&Value>| {
            v.filter(|v| !v.is_null() && *v != &Value::Object(Default::default())).cloned()
        };
        for field in ["nodeSelectorTerm", "tolerations"] {
            if norm(o.get(field)) != norm(s.get(field)) {
                causes.push(FieldCause::forbidden(
                    &format!("spec.topology.subsets[{i}].{field}"),
                    "may not be changed in an update",
                ));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ud(spec_extra: Value) -> Value {
        let mut spec = json!({
            "replicas": 4,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"cloneSetTemplate": {"metadata": {"labels": {"app": "a"}},
                "spec": {"selector": {"matchLabels": {"app": "a"}},
                         "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}},
            "topology": {"subsets": [{"name": "a"}, {"name": "b"}]},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), spec_extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        json!({"spec": spec})
    }

    fn msgs(c: &[FieldCause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn valid_objects_pass() {
        assert_eq!(msgs(&validate(&ud(json!({})))), Vec::<String>::new());
        let fixed = json!({"topology": {"subsets": [{"name": "a", "replicas": 1}, {"name": "b", "replicas": "50%"}, {"name": "c"}]}});
        assert_eq!(msgs(&validate(&ud(fixed))), Vec::<String>::new());
        let elastic = json!({"topology": {"subsets": [{"name": "a", "minReplicas": 1, "maxReplicas": 2}, {"name": "b"}]}});
        assert_eq!(msgs(&validate(&ud(elastic))), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_the_webhook_refuses() {
        let c = validate(&ud(
            json!({"topology": {"subsets": [{"name": "a", "replicas": 1, "maxReplicas": 2}, {"name": "A_"}, {"name": "A_"}]}}),
        ));
        let m = msgs(&c);
        assert!(m.iter().any(|m| m.contains("mutually exclusive")), "{m:?}");
        assert!(m.iter().any(|m| m.contains("duplicated subset name A_")), "{m:?}");
        assert!(m.iter().any(|m| m.contains("invalid subset name")), "{m:?}");
        let c = validate(&ud(
            json!({"topology": {"subsets": [{"name": "a", "replicas": 3}, {"name": "b", "replicas": 3}]}}),
        ));
        assert!(
            msgs(&c)
                .iter()
                .any(|m| m.contains("should not be greater than UnitedDeployment replicas 4")),
            "{:?}",
            msgs(&c)
        );
        let c = validate(&ud(
            json!({"topology": {"subsets": [{"name": "a", "maxReplicas": 3}, {"name": "b", "maxReplicas": 3}]}}),
        ));
        assert!(
            msgs(&c).iter().any(|m| m.contains("at least one subset.maxReplicas must be empty"))
        );
        let c =
            validate(&ud(json!({"updateStrategy": {"manualUpdate": {"partitions": {"zz": 1}}}})));
        assert_eq!(msgs(&c).len(), 1);
        assert!(msgs(&c)[0].contains("subset zz does not exist"));
        let c = validate(&ud(json!({"template": {}})));
        assert_eq!(c[0].field, "spec.template");
        let c = validate(&ud(
            json!({"template": {"deploymentTemplate": {"metadata": {"labels": {"app": "a"}},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "b"}}}}}}}),
        ));
        let m = msgs(&c);
        assert!(
            m.iter().any(|m| m.contains("replicas in deploymentTemplate will not be used")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|m| m
                    .starts_with("spec.template.deploymentTemplate.spec.template.metadata.labels")),
            "{m:?}"
        );
    }

    #[test]
    fn node_selector_terms_and_tolerations_are_immutable() {
        let old = ud(
            json!({"topology": {"subsets": [{"name": "a", "nodeSelectorTerm": {"matchExpressions": [{"key": "z", "operator": "In", "values": ["a"]}]}}]}}),
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(9);
        assert!(validate_update(&old, &new).is_empty());
        new["spec"]["topology"]["subsets"][0]["nodeSelectorTerm"]["matchExpressions"][0]["values"] =
            json!(["b"]);
        new["spec"]["topology"]["subsets"][0]["tolerations"] =
            json!([{"key": "x", "operator": "Exists"}]);
        let fields: Vec<String> =
            validate_update(&old, &new).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            ["spec.topology.subsets[0].nodeSelectorTerm", "spec.topology.subsets[0].tolerations"]
        );
    }
}
