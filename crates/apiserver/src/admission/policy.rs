//! `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicy and
//! ValidatingAdmissionPolicyBinding: served with upstream's defaults and validation, and
//! evaluated in process on the write path as kube-apiserver's `ValidatingAdmissionPolicy`
//! plugin does (`k8s.io/apiserver/pkg/admission/plugin/policy/validating`): each binding's
//! policy, when its `matchConstraints`, the binding's `matchResources` and the policy's
//! `matchConditions` select the request, evaluates its `validations` (CEL over `object`,
//! `oldObject`, `request`, `params`, `namespaceObject`, `variables`) with the binding's
//! `validationActions`: Deny refuses (`ValidatingAdmissionPolicy 'P' with binding 'B' denied
//! request: MSG`, the validation's reason, Invalid 422 by default), Warn answers a `Warning`,
//! Audit is logged; expressions get the `authorizer` variable ([`super::authz`]). Not yet:
//! `auditAnnotations`, type checking (`status.typeChecking`).

use serde_json::{Map, Value, json};

use super::dispatch::{self, Request, View};
use super::matching::{self, Attrs};
use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::{Registry, storage_key};
use crate::store::{ObjKey, Store};
use crate::strategy::Strategy;

pub const POLICIES: &str = "validatingadmissionpolicies";
pub const BINDINGS: &str = "validatingadmissionpolicybindings";

/// The strategy of both kinds; `binding` tells which.
#[derive(Debug)]
pub struct PolicyStrategy {
    pub binding: bool,
}

impl Strategy for PolicyStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
        if !self.binding {
            set_default(spec, "failurePolicy", json!("Fail"));
        }
        let field = if self.binding { "matchResources" } else { "matchConstraints" };
        if let Some(m) = spec.get_mut(field).and_then(Value::as_object_mut) {
            set_default(m, "matchPolicy", json!("Equivalent"));
            set_default(m, "namespaceSelector", json!({}));
            set_default(m, "objectSelector", json!({}));
            for rules in ["resourceRules", "excludeResourceRules"] {
                for r in m.get_mut(rules).and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(r) = r.as_object_mut() {
                        set_default(r, "scope", json!("*"));
                    }
                }
            }
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
        if self.binding { validate_binding(obj) } else { validate_policy(obj) }
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

fn compiles(src: &str, field: &str, causes: &mut Vec<Cause>) {
    if src.is_empty() {
        causes.push(Cause::required(field, ""));
    } else if let Err(e) = super::expr::compile(src) {
        causes.push(crate::error::invalid(field, src, &format!("compilation failed: {e}")));
    }
}

/// `ValidateValidatingAdmissionPolicy` (the parts that do not need a type checker).
fn validate_policy(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or_default();
    let list = |f: &str| spec.get(f).and_then(Value::as_array).cloned().unwrap_or_default();
    let (validations, audits) = (list("validations"), list("auditAnnotations"));
    if validations.is_empty() && audits.is_empty() {
        causes.push(Cause::required(
            "spec.validations",
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    for (i, v) in validations.iter().enumerate() {
        let p = format!("spec.validations[{i}]");
        let s = |f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
        compiles(&s("expression"), &format!("{p}.expression"), &mut causes);
        if !s("messageExpression").is_empty() {
            compiles(&s("messageExpression"), &format!("{p}.messageExpression"), &mut causes);
        }
        let reason = s("reason");
        let supported = ["Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"];
        if !reason.is_empty() && !supported.contains(&reason.as_str()) {
            let sup: Vec<String> = supported.iter().map(|s| (*s).to_owned()).collect();
            causes.push(Cause::not_supported(&format!("{p}.reason"), &json!(reason), &sup));
        }
    }
    for (i, v) in list("variables").iter().enumerate() {
        let p = format!("spec.variables[{i}]");
        if v.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(Cause::required(&format!("{p}.name"), ""));
        }
        let e = v.get("expression").and_then(Value::as_str).unwrap_or("");
        compiles(e, &format!("{p}.expression"), &mut causes);
    }
    for (i, c) in list("matchConditions").iter().enumerate() {
        let e = c.get("expression").and_then(Value::as_str).unwrap_or("");
        compiles(e, &format!("spec.matchConditions[{i}].expression"), &mut causes);
    }
    match spec.get("matchConstraints") {
        None | Some(Value::Null) => causes.push(Cause::required("spec.matchConstraints", "")),
        Some(m) => {
            if m.get("resourceRules").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                causes.push(Cause::required("spec.matchConstraints.resourceRules", ""));
            }
        }
    }
    if let Some(fp) = spec.get("failurePolicy").filter(|v| !v.is_null())
        && !fp.as_str().is_some_and(|s| matches!(s, "Fail" | "Ignore"))
    {
        causes.push(Cause::not_supported(
            "spec.failurePolicy",
            fp,
            &["Fail".to_owned(), "Ignore".to_owned()],
        ));
    }
    causes
}

/// `ValidateValidatingAdmissionPolicyBinding`.
fn validate_binding(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or_default();
    if spec.get("policyName").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.policyName", ""));
    }
    let actions: Vec<&str> = spec
        .get("validationActions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if actions.is_empty() {
        causes.push(Cause::required("spec.validationActions", ""));
    }
    for (i, a) in actions.iter().enumerate() {
        if !matches!(*a, "Deny" | "Warn" | "Audit") {
            let sup = ["Audit".to_owned(), "Deny".to_owned(), "Warn".to_owned()];
            causes.push(Cause::not_supported(
                &format!("spec.validationActions[{i}]"),
                &json!(a),
                &sup,
            ));
        }
    }
    if actions.contains(&"Deny") && actions.contains(&"Warn") {
        causes.push(Cause::invalid(
            "spec.validationActions",
            &json!(actions),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if let Some(pr) = spec.get("paramRef").filter(|v| !v.is_null()) {
        let has_name = pr.get("name").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let has_sel = pr.get("selector").is_some_and(|s| !s.is_null());
        if has_name == has_sel {
            causes
                .push(Cause::required("spec.paramRef", "one of `name` or `selector` must be set"));
        }
        match pr.get("parameterNotFoundAction").and_then(Value::as_str) {
            Some("Deny" | "Allow") => {}
            None => causes.push(Cause::required("spec.paramRef.parameterNotFoundAction", "")),
            Some(other) => causes.push(Cause::not_supported(
                "spec.paramRef.parameterNotFoundAction",
                &json!(other),
                &["Allow".to_owned(), "Deny".to_owned()],
            )),
        }
    }
    causes
}

/// Whether `m` (a policy's `matchConstraints` or a binding's `matchResources`) selects the
/// request; returns the matched resource's view version.
fn selects(
    store: &Store,
    reg: &Registry,
    m: &Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Option<std::sync::Arc<crate::registry::Resource>> {
    let named_rule = |rule: &Value, a: &Attrs<'_>| {
        let names: Vec<&str> = rule
            .get("resourceNames")
            .and_then(Value::as_array)
            .map(|n| n.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        matching::rule_matches(rule, a) && (names.is_empty() || names.contains(&req.name))
    };
    let any = |field: &str, a: &Attrs<'_>| {
        m.get(field).and_then(Value::as_array).is_some_and(|rs| rs.iter().any(|r| named_rule(r, a)))
    };
    let exact = m.get("matchPolicy").and_then(Value::as_str) == Some("Exact");
    let res = dispatch::matched_by(reg, req, exact, |a| {
        any("resourceRules", a) && !any("excludeResourceRules", a)
    })?;
    let ns = dispatch::namespace_labels(store, req, obj, old);
    (matching::namespace_selector_matches(m, ns.as_ref().map(Option::as_ref))
        && matching::object_selector_matches(m, obj, old))
    .then_some(res)
}

/// One failed validation.
struct Violation {
    message: String,
    reason: &'static str,
}

/// The params objects a binding names (`None`: the policy takes none).
fn params(
    store: &Store,
    reg: &Registry,
    policy: &Value,
    binding: &Value,
    req: &Request<'_>,
) -> Result<Option<Vec<Value>>, String> {
    let Some(kind) = policy.pointer("/spec/paramKind").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(pr) = binding.pointer("/spec/paramRef").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let av = kind.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (g, v) = av.rsplit_once('/').unwrap_or(("", av));
    let k = kind.get("kind").and_then(Value::as_str).unwrap_or("");
    let res = reg.for_kind(g, v, k).ok_or_else(|| format!("paramKind {av} {k} is not served"))?;
    let ns = match pr.get("namespace").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n,
        _ if res.namespaced => req.namespace,
        _ => "",
    };
    let found: Vec<Value> = match pr.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(name) => store
            .get(&ObjKey::new(&res.storage, ns, name))
            .map(|s| vec![s.value()])
            .unwrap_or_default(),
        None => {
            let sel = kinetic_machinery::selector::LabelSelector::from_label_selector(
                pr.get("selector").unwrap_or(&Value::Null),
            )
            .map_err(|e| e.to_string())?;
            let st = store.read();
            st.list(&res.storage, res.namespaced.then_some(ns), None)
                .filter(|(_, s)| {
                    sel.matches(s.value().pointer("/metadata/labels").and_then(Value::as_object))
                })
                .map(|(_, s)| s.value())
                .collect()
        }
    };
    if found.is_empty() && pr.get("parameterNotFoundAction").and_then(Value::as_str) == Some("Deny")
    {
        return Err(
            "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
                .to_owned(),
        );
    }
    Ok(Some(found))
}

/// Evaluates one policy with one params object (or none). Returns the violations.
fn evaluate(
    policy: &Value,
    vars: &mut Map<String, Value>,
    authz: Option<&super::authz::Authz>,
) -> Vec<Violation> {
    let ignore = policy.pointer("/spec/failurePolicy").and_then(Value::as_str) == Some("Ignore");
    // `variables`, in order, each seeing the ones before it.
    let mut computed = Map::new();
    for v in policy.pointer("/spec/variables").and_then(Value::as_array).into_iter().flatten() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        let src = v.get("expression").and_then(Value::as_str).unwrap_or("");
        vars.insert("variables".into(), Value::Object(computed.clone()));
        let bound: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
        if let Ok(val) =
            super::expr::compile(src).and_then(|p| super::expr::eval_with(&p, &bound, authz))
            && let Ok(json) = val.json()
        {
            computed.insert(name.to_owned(), json);
        }
    }
    vars.insert("variables".into(), Value::Object(computed));
    let bound: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Vec::new();
    for v in policy.pointer("/spec/validations").and_then(Value::as_array).into_iter().flatten() {
        let s = |f: &str| v.get(f).and_then(Value::as_str).unwrap_or("");
        let expr = s("expression");
        let reason = match dispatch::reason(s("reason")) {
            "" => "Invalid",
            r => r,
        };
        match super::expr::compile(expr)
            .and_then(|p| super::expr::eval_bool_with(&p, &bound, authz))
        {
            Ok(true) => {}
            Ok(false) => {
                let from_expr = (!s("messageExpression").is_empty())
                    .then(|| {
                        super::expr::compile(s("messageExpression"))
                            .and_then(|p| super::expr::eval_with(&p, &bound, authz))
                            .ok()
                    })
                    .flatten()
                    .and_then(|m| match m {
                        cel::Value::String(s) if !s.trim().is_empty() => Some(s.to_string()),
                        _ => None,
                    });
                let message = from_expr
                    .or_else(|| (!s("message").is_empty()).then(|| s("message").to_owned()))
                    .unwrap_or_else(|| format!("failed expression: {expr}"));
                out.push(Violation { message, reason });
            }
            Err(_) if ignore => {}
            Err(e) => out.push(Violation {
                message: format!("expression '{expr}' resulted in error: {e}"),
                reason: "Invalid",
            }),
        }
    }
    out
}

fn status_code(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// Runs every binding's policy on the request. Returns the warnings of `Warn` bindings.
///
/// # Errors
/// The refusal of the first `Deny` binding whose policy fails.
pub fn validate(
    store: &Store,
    reg: &Registry,
    req: &Request<'_>,
    view: &dyn View,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    if matching::exempt(&req.res.group) {
        return Ok(Vec::new());
    }
    let bindings = dispatch::cached(store, BINDINGS, "objects", |v| vec![v.clone()]);
    if bindings.is_empty() {
        return Ok(Vec::new());
    }
    let policies = dispatch::cached(store, POLICIES, "objects", |v| vec![v.clone()]);
    let mut warnings = Vec::new();
    for binding in bindings.iter() {
        let bname = binding.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let pname = binding.pointer("/spec/policyName").and_then(Value::as_str).unwrap_or("");
        let named = |p: &&Value| p.pointer("/metadata/name").and_then(Value::as_str) == Some(pname);
        let Some(policy) = policies.iter().find(named) else { continue };
        let constraints = policy.pointer("/spec/matchConstraints").cloned().unwrap_or_default();
        let Some(res) = selects(store, reg, &constraints, req, obj, old) else { continue };
        if let Some(m) = binding.pointer("/spec/matchResources").filter(|m| !m.is_null())
            && selects(store, reg, m, req, obj, old).is_none()
        {
            continue;
        }
        let obj_view = obj.map(|o| view.view(&res, o)).transpose()?;
        let old_view = old.map(|o| view.view(&res, o)).transpose()?;
        let request = dispatch::review_request(
            req,
            view.kind(&res),
            &res,
            obj_view.as_ref(),
            old_view.as_ref(),
        );
        let namespace_object = if res.namespaced && !req.namespace.is_empty() {
            let k = ObjKey::new(&storage_key("", "namespaces"), "", req.namespace);
            store.get(&k).map(|n| n.value()).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let authz = req.authz();
        let mut vars = Map::new();
        vars.insert("object".into(), obj_view.clone().unwrap_or(Value::Null));
        vars.insert("oldObject".into(), old_view.clone().unwrap_or(Value::Null));
        vars.insert("request".into(), request.clone());
        vars.insert("namespaceObject".into(), namespace_object);
        let conds = policy.pointer("/spec/matchConditions").and_then(Value::as_array);
        let fail_closed =
            policy.pointer("/spec/failurePolicy").and_then(Value::as_str) != Some("Ignore");
        let mut violations = Vec::new();
        match conds.map(|c| {
            super::expr::match_conditions(
                c,
                &vars["object"].clone(),
                &vars["oldObject"].clone(),
                &request,
                Some(&authz),
            )
        }) {
            Some(Ok(false)) => continue,
            Some(Err(e)) if fail_closed => violations.push(Violation {
                message: format!("failed to evaluate match conditions: {e}"),
                reason: "Invalid",
            }),
            Some(Err(_)) => continue,
            _ => {}
        }
        if violations.is_empty() {
            match params(store, reg, policy, binding, req) {
                Err(e) => violations.push(Violation { message: e, reason: "Invalid" }),
                Ok(None) => {
                    vars.insert("params".into(), Value::Null);
                    violations = evaluate(policy, &mut vars, Some(&authz));
                }
                Ok(Some(all)) => {
                    for p in all {
                        vars.insert("params".into(), p);
                        violations.extend(evaluate(policy, &mut vars, Some(&authz)));
                    }
                }
            }
        }
        let actions: Vec<&str> = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for v in violations {
            if actions.contains(&"Warn") {
                warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {}",
                    v.message
                ));
            }
            if actions.contains(&"Audit") {
                tracing::info!(policy = pname, binding = bname, message = %v.message, "validation failed (audit)");
            }
            if actions.contains(&"Deny") {
                let message = format!(
                    "ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request: {}",
                    v.message
                );
                let mut e = ApiError::new(status_code(v.reason), v.reason, message.clone());
                e.details = Some(json!({"causes": [{"message": message}]}));
                return Err(e);
            }
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validations_report_messages_as_upstream() {
        let policy = json!({"spec": {
        "variables": [{"name": "n", "expression": "object.spec.replicas"}],
        "validations": [
            {"expression": "variables.n < 3"},
            {"expression": "variables.n < 4", "message": "too many"},
            {"expression": "variables.n < 5", "messageExpression": "'got ' + string(variables.n)", "reason": "Forbidden"},
            {"expression": "object.spec.nope == 1"},
            {"expression": "true"},
        ]}});
        let mut vars = Map::new();
        vars.insert("object".into(), json!({"spec": {"replicas": 7}}));
        let got: Vec<(String, &str)> =
            evaluate(&policy, &mut vars, None).into_iter().map(|v| (v.message, v.reason)).collect();
        assert_eq!(got[0], ("failed expression: variables.n < 3".to_owned(), "Invalid"));
        assert_eq!(got[1], ("too many".to_owned(), "Invalid"));
        assert_eq!(got[2], ("got 7".to_owned(), "Forbidden"));
        assert!(
            got[3].0.starts_with("expression 'object.spec.nope == 1' resulted in error"),
            "{:?}",
            got[3]
        );
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn policies_and_bindings_are_validated_as_upstream() {
        let causes = validate_policy(&json!({"spec": {"validations": [{"expression": "1 +"}]}}));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.validations[0].expression", "spec.matchConstraints"]);
        let causes = validate_binding(&json!({"spec": {"validationActions": ["Deny", "Nope"]}}));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.policyName", "spec.validationActions[1]"]);
    }
}
