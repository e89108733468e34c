//! Validation of core/v1 Events, as upstream's `legacyValidateEvent`
//! (`pkg/apis/core/validation/events.go`), which kube-apiserver applies to every create and
//! update of a `v1` Event.
//!
//! An Event with `eventTime` set is an `events.k8s.io`-style event: it must name its
//! `reportingComponent` (a qualified name), `reportingInstance`, `action` and `reason`, each
//! within upstream's length limits. kube-apiserver refuses such an Event without `action` (422
//! `action: Required value`), which is how the node agent's Events were lost on a real cluster
//! (issue 10) while this server accepted them. Strict `events.k8s.io/v1` validation (no
//! `firstTimestamp`, `count`, `source`) applies only to that API group, which this server does
//! not serve, so it is absent here as it is for upstream's `v1` requests.

use serde_json::Value;

use crate::error::Cause;

/// Upstream's `ReportingInstanceLengthLimit`, `ActionLengthLimit` and `ReasonLengthLimit`.
const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
/// Upstream's `NoteLengthLimit` (the `message` of a v1 Event).
const NOTE_LIMIT: usize = 1024;

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Whether `eventTime` holds a time (Go's zero time, which it omits, counts as unset).
fn has_event_time(ev: &Value) -> bool {
    ev.get("eventTime").is_some_and(|t| match t {
        Value::Null => false,
        Value::String(s) => !s.is_empty() && !s.starts_with("0001-01-01"),
        _ => true,
    })
}

/// The causes upstream's `legacyValidateEvent` reports for a `v1` request (create and update).
pub fn validate(ev: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let ns = str_at(ev, "/metadata/namespace");
    let involved_ns = str_at(ev, "/involvedObject/namespace");
    let ns_mismatch = || {
        crate::error::invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if !has_event_time(ev) {
        // An old-style event: its namespace must be the involved object's (or `default`, for
        // a cluster-scoped object, as old clients write).
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            causes.push(ns_mismatch());
        }
        return causes;
    }
    if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
        causes.push(ns_mismatch());
    }
    // For `v1` requests upstream names the field by its v1 name, `reportingComponent`.
    let controller = str_at(ev, "/reportingComponent");
    if controller.is_empty() {
        causes.push(Cause::required("reportingComponent", ""));
    }
    if let Some(reasons) = kinetic_machinery::selector::qualified_name_error(controller) {
        for r in reasons.split("; ") {
            causes.push(crate::error::invalid("reportingComponent", controller, r));
        }
    }
    let limited = [
        ("reportingInstance", REPORTING_INSTANCE_LIMIT, true),
        ("action", ACTION_LIMIT, true),
        ("reason", REASON_LIMIT, true),
        ("message", NOTE_LIMIT, false),
    ];
    for (field, limit, required) in limited {
        let value = str_at(ev, &format!("/{field}"));
        if required && value.is_empty() {
            causes.push(Cause::required(field, ""));
        }
        if value.len() > limit {
            causes.push(crate::error::invalid(
                field,
                "",
                &format!("can have at most {limit} characters"),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(ev: &Value) -> Vec<String> {
        validate(ev).into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn event_with_event_time_and_no_action_is_refused_as_upstream() {
        let ev = json!({
            "metadata": {"namespace": "ns"},
            "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": "Pulling",
            "reportingComponent": "kubelet",
            "reportingInstance": "node-a",
        });
        assert_eq!(fields(&ev), ["action: Required value"]);
    }

    #[test]
    fn event_time_events_need_reporter_reason_and_limits() {
        let ev = json!({
            "metadata": {"namespace": "other"},
            "involvedObject": {"kind": "Node", "name": "n"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingComponent": "not a name",
            "action": "a".repeat(129),
            "message": "m".repeat(1025),
        });
        assert_eq!(
            fields(&ev),
            [
                "involvedObject.namespace: Invalid value: \"\": does not match event.namespace",
                "reportingComponent: Invalid value: \"not a name\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "reportingInstance: Required value",
                "action: Invalid value: \"\": can have at most 128 characters",
                "reason: Required value",
                "message: Invalid value: \"\": can have at most 1024 characters",
            ]
        );
    }

    #[test]
    fn old_style_events_only_check_the_namespace() {
        let ok = json!({
            "metadata": {"namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n"},
            "reason": "Starting",
        });
        assert!(fields(&ok).is_empty());
        let moved = json!({
            "metadata": {"namespace": "a"},
            "involvedObject": {"kind": "Pod", "namespace": "b", "name": "p"},
        });
        assert_eq!(
            fields(&moved),
            ["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]
        );
    }
}
