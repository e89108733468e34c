//! `autoscaling/v1` HorizontalPodAutoscaler ⇄ `autoscaling/v2`, as upstream converts them
//! (`pkg/apis/autoscaling/v1/conversion.go`): v1 has only `spec.targetCPUUtilizationPercentage`
//! and `status.currentCPUUtilizationPercentage`; every other metric, the current metrics, the
//! conditions and `behavior` travel in the `autoscaling.alpha.kubernetes.io/*` annotations in
//! `autoscaling/v1`'s own (v2beta1-shaped) metric types, so a v1 client's read-modify-write keeps
//! them.
//!
//! Served through `HpaStrategy`'s conversion hooks: [`to_v1`] on every read (get, list, watch)
//! of the v1 endpoints, [`from_v1`] on every write through them (create, update, patch, apply).

use serde_json::{Map, Value, json};

/// `autoscaling.alpha.kubernetes.io/metrics`: the spec's metrics other than the CPU
/// utilisation one.
pub const METRIC_SPECS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// `autoscaling.alpha.kubernetes.io/current-metrics`: every current metric.
pub const METRIC_STATUSES_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// `autoscaling.alpha.kubernetes.io/conditions`: the status conditions.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// `autoscaling.alpha.kubernetes.io/behavior`: the spec's behavior.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["averageUtilization"].is_number()
}

/// Copies `from[k]` to `to[k2]` when present.
fn copy(to: &mut Map<String, Value>, k2: &str, from: &Value, k: &str) {
    if let Some(v) = from.get(k).filter(|v| !v.is_null()) {
        to.insert(k2.to_owned(), v.clone());
    }
}

/// A v2 `MetricSpec` as `autoscaling/v1`'s (`Convert_autoscaling_MetricSpec_To_v1_MetricSpec`).
fn spec_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(&mut out, "type", m, "type");
    let t = |s: &Value| s.get("target").cloned().unwrap_or(Value::Null);
    if let Some(r) = m.get("resource").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "name", r, "name");
        copy(&mut o, "targetAverageUtilization", &t(r), "averageUtilization");
        copy(&mut o, "targetAverageValue", &t(r), "averageValue");
        out.insert("resource".into(), Value::Object(o));
    }
    if let Some(r) = m.get("containerResource").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "name", r, "name");
        copy(&mut o, "container", r, "container");
        copy(&mut o, "targetAverageUtilization", &t(r), "averageUtilization");
        copy(&mut o, "targetAverageValue", &t(r), "averageValue");
        out.insert("containerResource".into(), Value::Object(o));
    }
    if let Some(p) = m.get("pods").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "metricName", &p["metric"], "name");
        copy(&mut o, "selector", &p["metric"], "selector");
        copy(&mut o, "targetAverageValue", &t(p), "averageValue");
        out.insert("pods".into(), Value::Object(o));
    }
    if let Some(p) = m.get("object").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "target", p, "describedObject");
        copy(&mut o, "metricName", &p["metric"], "name");
        copy(&mut o, "selector", &p["metric"], "selector");
        copy(&mut o, "targetValue", &t(p), "value");
        copy(&mut o, "averageValue", &t(p), "averageValue");
        out.insert("object".into(), Value::Object(o));
    }
    if let Some(p) = m.get("external").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "metricName", &p["metric"], "name");
        copy(&mut o, "metricSelector", &p["metric"], "selector");
        copy(&mut o, "targetValue", &t(p), "value");
        copy(&mut o, "targetAverageValue", &t(p), "averageValue");
        out.insert("external".into(), Value::Object(o));
    }
    Value::Object(out)
}

/// `autoscaling/v1`'s `MetricSpec` as v2's.
fn spec_from_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(&mut out, "type", m, "type");
    let target = |value: &Value, average: &Value, utilization: &Value| {
        let mut t = Map::new();
        let kind = if !utilization.is_null() {
            t.insert("averageUtilization".into(), utilization.clone());
            "Utilization"
        } else if !average.is_null() {
            t.insert("averageValue".into(), average.clone());
            "AverageValue"
        } else {
            t.insert("value".into(), value.clone());
            "Value"
        };
        t.insert("type".into(), json!(kind));
        Value::Object(t)
    };
    let metric = |name: &Value, selector: &Value| {
        let mut o = Map::new();
        o.insert("name".into(), name.clone());
        if !selector.is_null() {
            o.insert("selector".into(), selector.clone());
        }
        Value::Object(o)
    };
    if let Some(r) = m.get("resource").filter(|v| v.is_object()) {
        out.insert(
            "resource".into(),
            json!({"name": r["name"], "target": target(&Value::Null, &r["targetAverageValue"],
                &r["targetAverageUtilization"])}),
        );
    }
    if let Some(r) = m.get("containerResource").filter(|v| v.is_object()) {
        out.insert(
            "containerResource".into(),
            json!({"name": r["name"], "container": r["container"], "target": target(&Value::Null,
                &r["targetAverageValue"], &r["targetAverageUtilization"])}),
        );
    }
    if let Some(p) = m.get("pods").filter(|v| v.is_object()) {
        out.insert(
            "pods".into(),
            json!({"metric": metric(&p["metricName"], &p["selector"]),
                "target": target(&Value::Null, &p["targetAverageValue"], &Value::Null)}),
        );
    }
    if let Some(p) = m.get("object").filter(|v| v.is_object()) {
        out.insert(
            "object".into(),
            json!({"describedObject": p["target"], "metric": metric(&p["metricName"], &p["selector"]),
                "target": target(&p["targetValue"], &p["averageValue"], &Value::Null)}),
        );
    }
    if let Some(p) = m.get("external").filter(|v| v.is_object()) {
        out.insert(
            "external".into(),
            json!({"metric": metric(&p["metricName"], &p["metricSelector"]),
                "target": target(&p["targetValue"], &p["targetAverageValue"], &Value::Null)}),
        );
    }
    Value::Object(out)
}

/// A v2 `MetricStatus` as `autoscaling/v1`'s.
fn status_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(&mut out, "type", m, "type");
    let c = |s: &Value| s.get("current").cloned().unwrap_or(Value::Null);
    for key in ["resource", "containerResource"] {
        if let Some(r) = m.get(key).filter(|v| v.is_object()) {
            let mut o = Map::new();
            copy(&mut o, "name", r, "name");
            copy(&mut o, "container", r, "container");
            copy(&mut o, "currentAverageUtilization", &c(r), "averageUtilization");
            copy(&mut o, "currentAverageValue", &c(r), "averageValue");
            out.insert(key.into(), Value::Object(o));
        }
    }
    if let Some(p) = m.get("pods").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "metricName", &p["metric"], "name");
        copy(&mut o, "selector", &p["metric"], "selector");
        copy(&mut o, "currentAverageValue", &c(p), "averageValue");
        out.insert("pods".into(), Value::Object(o));
    }
    if let Some(p) = m.get("object").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "target", p, "describedObject");
        copy(&mut o, "metricName", &p["metric"], "name");
        copy(&mut o, "selector", &p["metric"], "selector");
        copy(&mut o, "currentValue", &c(p), "value");
        copy(&mut o, "averageValue", &c(p), "averageValue");
        out.insert("object".into(), Value::Object(o));
    }
    if let Some(p) = m.get("external").filter(|v| v.is_object()) {
        let mut o = Map::new();
        copy(&mut o, "metricName", &p["metric"], "name");
        copy(&mut o, "metricSelector", &p["metric"], "selector");
        copy(&mut o, "currentValue", &c(p), "value");
        copy(&mut o, "currentAverageValue", &c(p), "averageValue");
        out.insert("external".into(), Value::Object(o));
    }
    Value::Object(out)
}

/// `autoscaling/v1`'s `MetricStatus` as v2's.
fn status_from_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(&mut out, "type", m, "type");
    let current = |pairs: &[(&str, &Value)]| {
        let mut o = Map::new();
        for (k, v) in pairs {
            if !v.is_null() {
                o.insert((*k).to_owned(), (*v).clone());
            }
        }
        Value::Object(o)
    };
    let metric = |name: &Value, selector: &Value| {
        let mut o = Map::new();
        o.insert("name".into(), name.clone());
        if !selector.is_null() {
            o.insert("selector".into(), selector.clone());
        }
        Value::Object(o)
    };
    for key in ["resource", "containerResource"] {
        if let Some(r) = m.get(key).filter(|v| v.is_object()) {
            let mut o = Map::new();
            copy(&mut o, "name", r, "name");
            copy(&mut o, "container", r, "container");
            o.insert(
                "current".into(),
                current(&[
                    ("averageUtilization", &r["currentAverageUtilization"]),
                    ("averageValue", &r["currentAverageValue"]),
                ]),
            );
            out.insert(key.into(), Value::Object(o));
        }
    }
    if let Some(p) = m.get("pods").filter(|v| v.is_object()) {
        out.insert(
            "pods".into(),
            json!({"metric": metric(&p["metricName"], &p["selector"]),
                "current": current(&[("averageValue", &p["currentAverageValue"])])}),
        );
    }
    if let Some(p) = m.get("object").filter(|v| v.is_object()) {
        out.insert(
            "object".into(),
            json!({"describedObject": p["target"], "metric": metric(&p["metricName"], &p["selector"]),
                "current": current(&[("value", &p["currentValue"]), ("averageValue", &p["averageValue"])])}),
        );
    }
    if let Some(p) = m.get("external").filter(|v| v.is_object()) {
        out.insert(
            "external".into(),
            json!({"metric": metric(&p["metricName"], &p["metricSelector"]),
                "current": current(&[("value", &p["currentValue"]),
                    ("averageValue", &p["currentAverageValue"])])}),
        );
    }
    Value::Object(out)
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()?.entry("annotations").or_insert_with(|| json!({})).as_object_mut()
}

fn encode(v: &Value) -> Value {
    Value::String(serde_json::to_string(v).unwrap_or_default())
}

/// A stored `autoscaling/v2` object as `autoscaling/v1` serves it.
pub fn to_v1(v2: &Value) -> Value {
    let mut out = v2.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let spec = &v2["spec"];
    let status = &v2["status"];
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let others: Vec<Value> =
        metrics.iter().filter(|m| !is_cpu_utilization(m)).map(spec_to_v1).collect();
    let current = status["currentMetrics"].as_array().cloned().unwrap_or_default();
    let mut s = Map::new();
    for k in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        copy(&mut s, k, spec, k);
    }
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_utilization(m)) {
        s.insert(
            "targetCPUUtilizationPercentage".into(),
            cpu["resource"]["target"]["averageUtilization"].clone(),
        );
    }
    out["spec"] = Value::Object(s);
    if status.is_object() {
        let mut st = Map::new();
        for k in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            copy(&mut st, k, status, k);
        }
        let cpu = current.iter().find(|m| {
            m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && m["resource"]["current"]["averageUtilization"].is_number()
        });
        if let Some(cpu) = cpu {
            st.insert(
                "currentCPUUtilizationPercentage".into(),
                cpu["resource"]["current"]["averageUtilization"].clone(),
            );
        }
        out["status"] = Value::Object(st);
    }
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let behavior = spec.get("behavior").filter(|b| !b.is_null()).cloned();
    if let Some(a) = annotations(&mut out) {
        if !others.is_empty() {
            a.insert(METRIC_SPECS_ANNOTATION.into(), encode(&Value::Array(others)));
        }
        if !current.is_empty() {
            let c: Vec<Value> = current.iter().map(status_to_v1).collect();
            a.insert(METRIC_STATUSES_ANNOTATION.into(), encode(&Value::Array(c)));
        }
        if let Some(b) = behavior {
            a.insert(BEHAVIOR_ANNOTATION.into(), encode(&b));
        }
        if !conditions.is_empty() {
            a.insert(CONDITIONS_ANNOTATION.into(), encode(&Value::Array(conditions)));
        }
    }
    drop_empty_annotations(&mut out);
    out
}

fn drop_empty_annotations(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.get("annotations").and_then(Value::as_object).is_some_and(Map::is_empty)
    {
        meta.remove("annotations");
    }
}

/// Takes `key` out of the annotations as JSON.
fn take(obj: &mut Value, key: &str) -> Option<Value> {
    let a = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)?;
    let s = a.remove(key)?;
    serde_json::from_str(s.as_str()?).ok()
}

/// An `autoscaling/v1` object (as a client wrote it) as `autoscaling/v2`, the annotations it
/// carried for v2's fields folded back in and removed.
pub fn from_v1(v1: &Value) -> Value {
    let mut out = v1.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    let spec = v1["spec"].clone();
    let mut s = Map::new();
    for k in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        copy(&mut s, k, &spec, k);
    }
    let mut metrics: Vec<Value> = take(&mut out, METRIC_SPECS_ANNOTATION)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(spec_from_v1)
        .collect();
    // The CPU target comes after the others, as upstream orders them.
    if let Some(t) = spec.get("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": t}}}));
    }
    if !metrics.is_empty() {
        s.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(b) = take(&mut out, BEHAVIOR_ANNOTATION) {
        s.insert("behavior".into(), b);
    }
    out["spec"] = Value::Object(s);
    let current = take(&mut out, METRIC_STATUSES_ANNOTATION);
    let conditions = take(&mut out, CONDITIONS_ANNOTATION);
    let status = v1["status"].clone();
    if status.is_object() || current.is_some() || conditions.is_some() {
        let mut st = Map::new();
        for k in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            copy(&mut st, k, &status, k);
        }
        match current.as_ref().and_then(Value::as_array) {
            Some(c) => {
                st.insert(
                    "currentMetrics".into(),
                    Value::Array(c.iter().map(status_from_v1).collect()),
                );
            }
            None => {
                if let Some(u) =
                    status.get("currentCPUUtilizationPercentage").filter(|v| !v.is_null())
                {
                    st.insert(
                        "currentMetrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu",
                            "current": {"averageUtilization": u}}}]),
                    );
                }
            }
        }
        if let Some(c) = conditions {
            st.insert("conditions".into(), c);
        }
        out["status"] = Value::Object(st);
    }
    drop_empty_annotations(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps"},
                        "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "External", "external": {"metric": {"name": "queue",
                        "selector": {"matchLabels": {"q": "jobs"}}},
                        "target": {"type": "Value", "value": "30"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 75, "averageValue": "150m"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps"},
                        "current": {"averageValue": "12"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True",
                    "reason": "ReadyForNewScale", "message": "ok"}],
            },
        })
    }

    /// Upstream's v1 view: the CPU target and current utilisation as fields, everything else
    /// in the alpha annotations in v1's metric types.
    #[test]
    fn v2_reads_as_v1_with_the_rest_in_annotations() {
        let v1 = to_v1(&v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 75);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["team"], "a");
        let others: Value =
            serde_json::from_str(a[METRIC_SPECS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            others,
            json!([
                {"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "10"}},
                {"type": "External", "external": {"metricName": "queue",
                    "metricSelector": {"matchLabels": {"q": "jobs"}}, "targetValue": "30"}},
            ])
        );
        let current: Value =
            serde_json::from_str(a[METRIC_STATUSES_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            current[0],
            json!({"type": "Resource", "resource": {"name": "cpu",
                "currentAverageUtilization": 75, "currentAverageValue": "150m"}})
        );
        assert!(a[CONDITIONS_ANNOTATION].as_str().unwrap().contains("ReadyForNewScale"));
        assert!(a[BEHAVIOR_ANNOTATION].as_str().unwrap().contains("stabilizationWindowSeconds"));
    }

    /// A v1 client's read-modify-write keeps every v2 field.
    #[test]
    fn v1_round_trip_keeps_v2() {
        let mut orig = v2();
        let back = from_v1(&to_v1(&orig));
        // Upstream puts the CPU metric after the others.
        let m = orig["spec"]["metrics"].as_array_mut().unwrap();
        let cpu = m.remove(0);
        m.push(cpu);
        assert_eq!(back, orig);
    }

    /// What `kubectl autoscale` of an older kubectl posts.
    #[test]
    fn a_plain_v1_object_becomes_a_cpu_metric() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                "name": "web"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50},
        });
        let v2 = from_v1(&v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert!(v2["metadata"].get("annotations").is_none());
        assert!(v2.get("status").is_none() || v2["status"].is_null());
    }
}
