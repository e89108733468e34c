//! Field validation shared by several kinds' strategies (built-in and custom): object names,
//! workload selectors, pod specs, as upstream's `apimachinery/pkg/util/validation` and
//! `pkg/apis/core/validation` check them.

use serde_json::Value;

use crate::error::Cause;

pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Upstream `IsDNS1123Subdomain`: at most 253 characters matching the subdomain regex. Its parts
/// have no length limit of their own (a ConfigMap may be named with 70 `a`s).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Upstream `IsValidPathSegmentName`: a name that can be one segment of a URL path.
pub fn is_path_segment_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('%')
}

/// The workload selector rules shared by Deployment, ReplicaSet and CloneSet: required, not
/// empty, matching the template's labels ([`kinetic_rollout::validation::workload_selector`],
/// which the CloneSet controller applies too), immutable.
pub fn validate_selector(obj: &Value, old: Option<&Value>, what: &str, causes: &mut Vec<Cause>) {
    causes.extend(kinetic_rollout::validation::workload_selector(obj, what));
    if let (Some(o), Some(n)) =
        (old.and_then(|o| o.pointer("/spec/selector")), obj.pointer("/spec/selector"))
        && o != n
    {
        causes.push(crate::error::invalid("spec.selector", &n.to_string(), "field is immutable"));
    }
}

pub fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required(path, ""));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(Cause::required(&format!("{path}.containers"), ""));
    }
    let mut seen = std::collections::HashSet::new();
    for field in ["initContainers", "containers"] {
        for (i, c) in spec.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required(&format!("{p}.name"), "")),
                Some(n) if !is_dns1123_label(n) => {
                    causes.push(crate::error::invalid(&format!("{p}.name"), n, DNS1123_LABEL_MSG))
                }
                Some(n) if !seen.insert(n.to_owned()) => causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    message: format!("Duplicate value: \"{n}\""),
                    field: format!("{p}.name"),
                }),
                Some(_) => {}
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(&format!("{p}.image"), ""));
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
            field: format!("{path}.restartPolicy"),
        });
    }
}
