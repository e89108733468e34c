//! `autoscaling/v2` HorizontalPodAutoscaler, as kube-apiserver prints it
//! (`printHorizontalPodAutoscaler`, `formatHPAMetrics`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Column, age, int, items, text};

pub(super) fn columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::string(
            "Reference",
            "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
        ),
        Column::string(
            "Targets",
            "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).",
        ),
        Column::string(
            "MinPods",
            "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
        ),
        Column::integer(
            "MaxPods",
            "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
        ),
        Column::integer(
            "Replicas",
            "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
        ),
        Column::age(),
    ]
}

pub(super) fn cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        text(obj, "/spec/scaleTargetRef/kind"),
        text(obj, "/spec/scaleTargetRef/name")
    );
    let min = match obj.pointer("/spec/minReplicas").and_then(Value::as_i64) {
        Some(m) => m.to_string(),
        None => "<unset>".to_owned(),
    };
    vec![
        json!(text(obj, "/metadata/name")),
        json!(reference),
        json!(format_metrics(items(obj, "/spec/metrics"), items(obj, "/status/currentMetrics"))),
        json!(min),
        json!(int(obj, "/spec/maxReplicas")),
        json!(int(obj, "/status/currentReplicas")),
        json!(age(obj, now)),
    ]
}

/// A quantity as the object holds it (a string, or a bare number).
fn quantity(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `formatHPAMetrics`: the first two metrics as `current/target` (`cpu: 12%/50%`), then
/// `+ N more...`.
pub(super) fn format_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_owned();
    }
    const UNKNOWN: &str = "<unknown>";
    let mut list = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let cur = |source: &str, field: &str| {
            status
                .and_then(|s| s.get(source))
                .filter(|s| !s.is_null())
                .and_then(|s| quantity(s.pointer(&format!("/current/{field}"))))
        };
        let entry = match spec.get("type").and_then(Value::as_str).unwrap_or("") {
            t @ ("External" | "Object") => {
                let src = if t == "External" { "external" } else { "object" };
                let target = spec.get(src).and_then(|s| s.get("target"));
                match quantity(target.and_then(|t| t.get("averageValue"))) {
                    Some(avg) => format!(
                        "{}/{avg} (avg)",
                        cur(src, "averageValue").unwrap_or_else(|| UNKNOWN.into())
                    ),
                    None => format!(
                        "{}/{}",
                        cur(src, "value").unwrap_or_else(|| UNKNOWN.into()),
                        quantity(target.and_then(|t| t.get("value"))).unwrap_or_default()
                    ),
                }
            }
            "Pods" => format!(
                "{}/{}",
                cur("pods", "averageValue").unwrap_or_else(|| UNKNOWN.into()),
                quantity(spec.pointer("/pods/target/averageValue")).unwrap_or_default()
            ),
            t @ ("Resource" | "ContainerResource") => {
                let src = if t == "Resource" { "resource" } else { "containerResource" };
                let s = spec.get(src).cloned().unwrap_or(Value::Null);
                let name = text(&s, "/name");
                match quantity(s.pointer("/target/averageValue")) {
                    Some(avg) => format!(
                        "{name}: {}/{avg}",
                        cur(src, "averageValue").unwrap_or_else(|| UNKNOWN.into())
                    ),
                    None => {
                        let current = status
                            .and_then(|st| st.get(src))
                            .and_then(|st| st.pointer("/current/averageUtilization"))
                            .and_then(Value::as_i64)
                            .map_or_else(|| UNKNOWN.to_owned(), |u| format!("{u}%"));
                        let target = s
                            .pointer("/target/averageUtilization")
                            .and_then(Value::as_i64)
                            .map_or_else(|| "<auto>".to_owned(), |u| format!("{u}%"));
                        format!("{name}: {current}/{target}")
                    }
                }
            }
            _ => "<unknown type>".to_owned(),
        };
        list.push(entry);
    }
    let count = list.len();
    if count > 2 {
        list.truncate(2);
        return format!("{} + {} more...", list.join(", "), count - 2);
    }
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_print_as_kubectl_shows_them() {
        let cpu = json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}});
        let mem = json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        assert_eq!(format_metrics(&[], &[]), "<none>");
        assert_eq!(format_metrics(std::slice::from_ref(&cpu), &[]), "cpu: <unknown>/50%");
        let st = json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": 97, "averageValue": "97m"}}});
        assert_eq!(format_metrics(std::slice::from_ref(&cpu), &[st]), "cpu: 97%/50%");
        assert_eq!(
            format_metrics(&[cpu.clone(), mem.clone(), cpu], &[]),
            "cpu: <unknown>/50%, memory: <unknown>/100Mi + 1 more..."
        );
    }
}
