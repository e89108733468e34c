//! `admissionregistration.k8s.io/v1` MutatingWebhookConfiguration and
//! ValidatingWebhookConfiguration: upstream's defaults
//! (`pkg/apis/admissionregistration/v1/defaults.go`) and validation
//! (`pkg/apis/admissionregistration/validation/validation.go`), answered as 422 Invalid with
//! field causes.

use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::strategy::Strategy;

/// The strategy of both webhook configuration kinds; `mutating` adds `reinvocationPolicy`.
#[derive(Debug)]
pub struct WebhookConfigStrategy {
    pub mutating: bool,
}

impl Strategy for WebhookConfigStrategy {
    /// Upstream's strategies bump the generation on any change of `webhooks`.
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default(obj, self.mutating);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        validate(obj, self.mutating)
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

/// `SetDefaults_ValidatingWebhook`/`SetDefaults_MutatingWebhook`, `SetDefaults_Rule`,
/// `SetDefaults_ServiceReference`.
pub fn default(obj: &mut Value, mutating: bool) {
    let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else { return };
    for h in hooks.iter_mut().filter_map(Value::as_object_mut) {
        set_default(h, "failurePolicy", json!("Fail"));
        set_default(h, "matchPolicy", json!("Equivalent"));
        set_default(h, "namespaceSelector", json!({}));
        set_default(h, "objectSelector", json!({}));
        set_default(h, "timeoutSeconds", json!(10));
        if mutating {
            set_default(h, "reinvocationPolicy", json!("Never"));
        }
        if let Some(rules) = h.get_mut("rules").and_then(Value::as_array_mut) {
            for r in rules.iter_mut().filter_map(Value::as_object_mut) {
                set_default(r, "scope", json!("*"));
            }
        }
        let svc = h.get_mut("clientConfig").and_then(|c| c.get_mut("service"));
        if let Some(svc) = svc.and_then(Value::as_object_mut) {
            set_default(svc, "port", json!(443));
        }
    }
}

fn not_supported(field: &str, v: &Value, supported: &[&str]) -> Cause {
    let s: Vec<String> = supported.iter().map(|s| (*s).to_owned()).collect();
    Cause::not_supported(field, v, &s)
}

fn duplicate(field: &str, v: &str) -> Cause {
    Cause {
        reason: "FieldValueDuplicate".into(),
        message: format!("Duplicate value: {}", json!(v)),
        field: field.to_owned(),
    }
}

/// `validation.IsFullyQualifiedName`: a DNS subdomain with at least three segments.
fn fully_qualified(name: &str) -> Option<&'static str> {
    if !crate::validation::is_dns1123_subdomain(name) {
        return Some(crate::validation::DNS1123_SUBDOMAIN_MSG);
    }
    (name.split('.').count() < 3)
        .then_some("should be a domain with at least three segments separated by dots")
}

/// `ValidateValidatingWebhookConfiguration`/`ValidateMutatingWebhookConfiguration`.
pub fn validate(obj: &Value, mutating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(hooks) = obj.get("webhooks").and_then(Value::as_array) else { return causes };
    let mut names = std::collections::HashSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let p = format!("webhooks[{i}]");
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{p}.name"), ""));
        } else if let Some(why) = fully_qualified(name) {
            causes.push(crate::error::invalid(&format!("{p}.name"), name, why));
        } else if !names.insert(name) {
            causes.push(duplicate(&format!("{p}.name"), name));
        }
        validate_webhook(h, &p, mutating, &mut causes);
    }
    causes
}

fn validate_webhook(h: &Value, p: &str, mutating: bool, causes: &mut Vec<Cause>) {
    let f = |s: &str| format!("{p}.{s}");
    if let Some(rules) = h.get("rules").and_then(Value::as_array) {
        for (j, r) in rules.iter().enumerate() {
            validate_rule(r, &f(&format!("rules[{j}]")), causes);
        }
    }
    let enum_field = |field: &str, supported: &[&str], causes: &mut Vec<Cause>| {
        if let Some(v) = h.get(field).filter(|v| !v.is_null())
            && !v.as_str().is_some_and(|s| supported.contains(&s))
        {
            causes.push(not_supported(&f(field), v, supported));
        }
    };
    enum_field("failurePolicy", &["Fail", "Ignore"], causes);
    enum_field("matchPolicy", &["Equivalent", "Exact"], causes);
    if mutating {
        enum_field("reinvocationPolicy", &["IfNeeded", "Never"], causes);
    }
    // v1 requires `sideEffects` and allows only the two that make dry runs safe.
    match h.get("sideEffects").filter(|v| !v.is_null()) {
        None => causes
            .push(Cause::required(&f("sideEffects"), "must specify one of None, NoneOnDryRun")),
        Some(_) => enum_field("sideEffects", &["None", "NoneOnDryRun"], causes),
    }
    if let Some(t) = h.get("timeoutSeconds").and_then(Value::as_i64)
        && !(1..=30).contains(&t)
    {
        causes.push(Cause::invalid(
            &f("timeoutSeconds"),
            &json!(t),
            "the timeout value must be between 1 and 30 seconds",
        ));
    }
    let versions: Vec<&str> = h
        .get("admissionReviewVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required(
            &f("admissionReviewVersions"),
            "must specify one of v1, v1beta1",
        ));
    } else if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
        causes.push(Cause::invalid(
            &f("admissionReviewVersions"),
            &json!(versions),
            "must include at least one of v1, v1beta1",
        ));
    }
    for sel in ["namespaceSelector", "objectSelector"] {
        if let Some(s) = h.get(sel).filter(|v| !v.is_null())
            && let Err(e) = kinetic_machinery::selector::LabelSelector::from_label_selector(s)
        {
            causes.push(Cause::invalid(&f(sel), s, &e.to_string()));
        }
    }
    validate_client_config(h.get("clientConfig"), &f("clientConfig"), causes);
    if let Some(conds) = h.get("matchConditions").and_then(Value::as_array) {
        validate_match_conditions(conds, &f("matchConditions"), causes);
    }
}

fn validate_match_conditions(conds: &[Value], p: &str, causes: &mut Vec<Cause>) {
    if conds.len() > 64 {
        causes.push(Cause {
            reason: "FieldValueTooMany".into(),
            message: format!("Too many: {}: must have at most 64 items", conds.len()),
            field: p.to_owned(),
        });
    }
    let mut names = std::collections::HashSet::new();
    for (i, c) in conds.iter().enumerate() {
        let q = format!("{p}[{i}]");
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{q}.name"), ""));
        } else if !names.insert(name) {
            causes.push(duplicate(&format!("{q}.name"), name));
        }
        let expr = c.get("expression").and_then(Value::as_str).unwrap_or("");
        if expr.is_empty() {
            causes.push(Cause::required(&format!("{q}.expression"), ""));
        } else if let Err(e) = crate::cel::env().compile(expr) {
            causes.push(crate::error::invalid(
                &format!("{q}.expression"),
                expr,
                &format!("compilation failed: {e}"),
            ));
        }
    }
}

fn validate_rule(r: &Value, p: &str, causes: &mut Vec<Cause>) {
    let f = |s: &str| format!("{p}.{s}");
    let list = |field: &str| -> Vec<&str> {
        r.get(field)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    for field in ["apiGroups", "apiVersions", "resources", "operations"] {
        let items = list(field);
        if items.is_empty() {
            causes.push(Cause::required(&f(field), ""));
            continue;
        }
        if items.len() > 1 && items.contains(&"*") {
            let what = if field == "operations" { "operations" } else { field };
            causes.push(Cause::invalid(
                &f(field),
                &json!(items),
                &format!("if '*' is present, must not specify other {what}"),
            ));
        }
        for (k, it) in items.iter().enumerate() {
            match field {
                "apiVersions" if it.is_empty() => {
                    causes.push(Cause::required(&f(&format!("{field}[{k}]")), "must not be empty"))
                }
                "resources" if it.is_empty() => {
                    causes.push(Cause::required(&f(&format!("{field}[{k}]")), ""))
                }
                "operations"
                    if !matches!(*it, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") =>
                {
                    causes.push(not_supported(
                        &f(&format!("{field}[{k}]")),
                        &json!(it),
                        &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
                    ))
                }
                _ => {}
            }
        }
    }
    let resources = list("resources");
    if resources.contains(&"*/*") && resources.len() > 1 {
        causes.push(Cause::invalid(
            &f("resources"),
            &json!(resources),
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if let Some(scope) = r.get("scope").filter(|v| !v.is_null())
        && !scope.as_str().is_some_and(|s| matches!(s, "*" | "Cluster" | "Namespaced"))
    {
        causes.push(not_supported(&f("scope"), scope, &["*", "Cluster", "Namespaced"]));
    }
}

fn validate_client_config(cc: Option<&Value>, p: &str, causes: &mut Vec<Cause>) {
    let url = cc.and_then(|c| c.get("url")).and_then(Value::as_str);
    let svc = cc.and_then(|c| c.get("service")).filter(|v| !v.is_null());
    match (url, svc) {
        (Some(_), Some(_)) | (None, None) => {
            causes.push(Cause::required(p, "exactly one of url or service is required"));
        }
        (Some(u), None) => {
            let f = format!("{p}.url");
            if let Some(why) = url_problem(u) {
                causes.push(crate::error::invalid(&f, u, why));
            }
        }
        (None, Some(s)) => {
            let f = |x: &str| format!("{p}.service.{x}");
            for field in ["name", "namespace"] {
                if s.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes
                        .push(Cause::required(&f(field), &format!("service {field} is required")));
                }
            }
            if let Some(path) = s.get("path").and_then(Value::as_str)
                && !path.is_empty()
                && !path.starts_with('/')
            {
                causes.push(crate::error::invalid(&f("path"), path, "must start with a '/'"));
            }
            if let Some(port) = s.get("port").and_then(Value::as_i64)
                && !(1..=65535).contains(&port)
            {
                causes.push(Cause::invalid(
                    &f("port"),
                    &json!(port),
                    "port is not valid: must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

/// `webhook.ValidateWebhookURL`: an absolute `https` URL with a host, no user info, no query,
/// no fragment.
fn url_problem(u: &str) -> Option<&'static str> {
    let Some(rest) = u.strip_prefix("https://") else {
        return Some(if u.contains("://") {
            "'https' is the only allowed URL scheme"
        } else {
            "host must be specified"
        });
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Some("host must be specified");
    }
    if host.contains('@') {
        return Some("user information is not permitted in the URL");
    }
    if u.contains('#') {
        return Some("fragments are not permitted in the URL");
    }
    if u.contains('?') {
        return Some("query parameters are not permitted in the URL");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Value {
        json!({"name": "pods.example.com", "sideEffects": "None",
               "admissionReviewVersions": ["v1"],
               "clientConfig": {"url": "https://127.0.0.1:8443/mutate"},
               "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                          "resources": ["pods"]}]})
    }

    #[test]
    fn defaults_are_upstreams() {
        let mut obj = json!({"webhooks": [hook(), {"clientConfig": {"service": {"name": "s"}}}]});
        default(&mut obj, true);
        let h = &obj["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["reinvocationPolicy"], "Never");
        assert_eq!(h["namespaceSelector"], json!({}));
        assert_eq!(h["objectSelector"], json!({}));
        assert_eq!(h["rules"][0]["scope"], "*");
        assert_eq!(obj["webhooks"][1]["clientConfig"]["service"]["port"], 443);
        let mut v = json!({"webhooks": [hook()]});
        default(&mut v, false);
        assert!(v["webhooks"][0].get("reinvocationPolicy").is_none());
        assert!(validate(&v, false).is_empty(), "{:?}", validate(&v, false));
    }

    #[test]
    fn validation_names_the_fields_as_upstream() {
        let mut bad = hook();
        bad["name"] = json!("short.name");
        bad["sideEffects"] = json!("Unknown");
        bad["timeoutSeconds"] = json!(31);
        bad["admissionReviewVersions"] = json!([]);
        bad["clientConfig"] = json!({"url": "http://127.0.0.1/x"});
        bad["rules"][0]["operations"] = json!(["*", "CREATE"]);
        bad["failurePolicy"] = json!("Sometimes");
        let causes = validate(&json!({"webhooks": [bad, hook(), hook()]}), true);
        let got: Vec<String> =
            causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        expect_test::expect![[r#"
            [
                "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
                "webhooks[0].rules[0].operations: Invalid value: [\"*\",\"CREATE\"]: if '*' is present, must not specify other operations",
                "webhooks[0].failurePolicy: Unsupported value: \"Sometimes\": supported values: \"Fail\", \"Ignore\"",
                "webhooks[0].sideEffects: Unsupported value: \"Unknown\": supported values: \"None\", \"NoneOnDryRun\"",
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
                "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
                "webhooks[0].clientConfig.url: Invalid value: \"http://127.0.0.1/x\": 'https' is the only allowed URL scheme",
                "webhooks[2].name: Duplicate value: \"pods.example.com\"",
            ]
        "#]]
        .assert_debug_eq(&got);
        let mut none = hook();
        none.as_object_mut().map(|m| m.remove("sideEffects"));
        none["clientConfig"] = json!({});
        let got: Vec<String> = validate(&json!({"webhooks": [none]}), false)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            got,
            [
                "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
                "webhooks[0].clientConfig: Required value: exactly one of url or service is required",
            ]
        );
    }
}
