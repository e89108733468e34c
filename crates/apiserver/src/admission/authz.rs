//! The `authorizer` CEL variable of ValidatingAdmissionPolicy expressions and of
//! `matchConditions`, as upstream's authz library (`k8s.io/apiserver/pkg/cel/library/authz.go`):
//! `authorizer.group(g).resource(r).subresource(s).namespace(n).name(x).check(verb)`,
//! `authorizer.path(p).check(httpVerb)`, `authorizer.serviceAccount(ns, name)` (the same checks
//! for that service account), `authorizer.requestResource` (the request's resource) and a
//! decision's `allowed()`, `reason()`, `errored()`, `error()`. Checks ask the server's
//! authoriser (Node, RBAC) for the requesting user.
//!
//! Every step is a CEL map tagged by [`TAG`] with the check's fields so far, and the functions
//! are bound per evaluation context (they capture the authoriser and the user).

use std::sync::Arc;

use cel::Context;
use cel::extractors::This;
use serde_json::{Map, Value, json};

use crate::auth::{Attributes, Authorizer, Decision, UserInfo};

/// The key that marks a map as a step of the authorizer library, with the step's kind.
const TAG: &str = "__authorizer";

/// The authoriser and the user a check asks for.
#[derive(Clone)]
pub struct Authz {
    pub authorizer: Arc<dyn Authorizer>,
    pub user: UserInfo,
    /// The request's resource, for `authorizer.requestResource`: group, version, resource,
    /// subresource, namespace, name.
    pub request: [String; 6],
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz").field("user", &self.user.name).finish_non_exhaustive()
    }
}

fn error(function: &str, msg: impl ToString) -> cel::ExecutionError {
    cel::ExecutionError::function_error(function, msg)
}

/// The fields of a step whose kind is one of `kinds`.
fn step(
    function: &str,
    this: &cel::Value,
    kinds: &[&str],
) -> Result<Map<String, Value>, cel::ExecutionError> {
    let v = this.json().map_err(|e| error(function, e.to_string()))?;
    match v {
        Value::Object(m)
            if m.get(TAG).and_then(Value::as_str).is_some_and(|k| kinds.contains(&k)) =>
        {
            Ok(m)
        }
        _ => Err(error(function, format!("no such overload: {function} on this receiver"))),
    }
}

fn to_cel(function: &str, v: &Value) -> Result<cel::Value, cel::ExecutionError> {
    cel::to_value(v).map_err(|e| error(function, e.to_string()))
}

/// The user a service account authenticates as (upstream's `serviceaccount.UserInfo`).
#[must_use]
pub fn service_account_user(ns: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec!["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{ns}")],
        ..UserInfo::default()
    }
}

/// The attributes a finished resource or path check asks about, and whose they are.
#[must_use]
pub fn attributes(step: &Map<String, Value>, verb: &str, requester: &UserInfo) -> Attributes {
    let s = |k: &str| step.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let user = match (step.get("saNamespace").and_then(Value::as_str), step.get("saName")) {
        (Some(ns), Some(Value::String(name))) => service_account_user(ns, name),
        _ => requester.clone(),
    };
    let path = s("path");
    if !path.is_empty() || step.get(TAG).and_then(Value::as_str) == Some("path") {
        return Attributes { user, verb: verb.to_lowercase(), path, ..Attributes::default() };
    }
    let version = match s("version") {
        v if v.is_empty() => "*".to_owned(),
        v => v,
    };
    Attributes {
        user,
        verb: verb.to_owned(),
        resource_request: true,
        api_group: s("group"),
        api_version: version,
        resource: s("resource"),
        subresource: s("subresource"),
        namespace: s("namespace"),
        name: s("name"),
        ..Attributes::default()
    }
}

/// A decision as the library's `Decision` (`allowed()`, `reason()`, `errored()`, `error()`).
#[must_use]
pub fn decision(d: &Decision) -> Value {
    let (allowed, reason) = match d {
        Decision::Allow => (true, String::new()),
        Decision::Deny(r) | Decision::NoOpinion(r) => (false, r.clone()),
    };
    json!({TAG: "decision", "allowed": allowed, "reason": reason, "error": ""})
}

impl Authz {
    /// The `authorizer` value: the root, with `requestResource`.
    fn root(&self) -> Value {
        let [g, v, r, sub, ns, name] = &self.request;
        json!({TAG: "root", "requestResource": {
            TAG: "resource", "group": g, "version": v, "resource": r, "subresource": sub,
            "namespace": ns, "name": name,
        }})
    }

    /// Binds `authorizer` and the library's functions in `ctx`.
    ///
    /// # Errors
    /// A function name is taken by an overload of the environment.
    pub fn bind(&self, ctx: &mut Context<'_, '_>) -> Result<(), String> {
        let root = cel::to_value(self.root()).map_err(|e| e.to_string())?;
        ctx.add_variable_from_value("authorizer", root);
        let e = |r: Result<(), cel::DeclarationError>| -> Result<(), String> {
            r.map_err(|e| format!("{e:?}"))
        };
        // Builders: each copies the step and sets one field.
        for (f, kinds, next) in [
            ("group", &["root"][..], "group"),
            ("resource", &["group"][..], "resource"),
            ("subresource", &["resource"][..], "resource"),
            ("namespace", &["resource"][..], "resource"),
            ("name", &["resource"][..], "resource"),
            ("path", &["root"][..], "path"),
        ] {
            e(ctx.add_function(f, move |This(this): This<cel::Value>, arg: Arc<String>| {
                let mut m = step(f, &this, kinds)?;
                m.insert(TAG.into(), json!(next));
                m.remove("requestResource");
                m.insert(f.into(), json!(arg.as_str()));
                to_cel(f, &Value::Object(m))
            }))?;
        }
        e(ctx.add_function(
            "serviceAccount",
            |This(this): This<cel::Value>, ns: Arc<String>, name: Arc<String>| {
                let mut m = step("serviceAccount", &this, &["root"])?;
                m.insert("saNamespace".into(), json!(ns.as_str()));
                m.insert("saName".into(), json!(name.as_str()));
                // `requestResource` of a service account's authorizer asks for it too.
                if let Some(Value::Object(rr)) = m.get_mut("requestResource") {
                    rr.insert("saNamespace".into(), json!(ns.as_str()));
                    rr.insert("saName".into(), json!(name.as_str()));
                }
                to_cel("serviceAccount", &Value::Object(m))
            },
        ))?;
        let (authorizer, user) = (self.authorizer.clone(), self.user.clone());
        e(ctx.add_function("check", move |This(this): This<cel::Value>, verb: Arc<String>| {
            let m = step("check", &this, &["resource", "path"])?;
            if m.get(TAG).and_then(Value::as_str) == Some("resource")
                && m.get("resource").and_then(Value::as_str).is_none_or(str::is_empty)
            {
                return to_cel(
                    "check",
                    &json!({TAG: "decision", "allowed": false, "reason": "",
                            "error": "resource check requires a resource"}),
                );
            }
            let d = authorizer.authorize(&attributes(&m, &verb, &user));
            to_cel("check", &decision(&d))
        }))?;
        for f in ["allowed", "reason", "errored", "error"] {
            e(ctx.add_function(f, move |This(this): This<cel::Value>| {
                let m = step(f, &this, &["decision"])?;
                let err = m.get("error").and_then(Value::as_str).unwrap_or("").to_owned();
                let out = match f {
                    "allowed" => json!(m.get("allowed").and_then(Value::as_bool).unwrap_or(false)),
                    "reason" => json!(m.get("reason").and_then(Value::as_str).unwrap_or("")),
                    "errored" => json!(!err.is_empty()),
                    _ => json!(err),
                };
                to_cel(f, &out)
            }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allows `alice` to get deployments in `prod`, and the `ns/robot` service account to
    /// list pods anywhere; nothing else.
    struct Table;

    impl Authorizer for Table {
        fn authorize(&self, a: &Attributes) -> Decision {
            let ok = match a.user.name.as_str() {
                "alice" => {
                    a.verb == "get"
                        && a.api_group == "apps"
                        && a.resource == "deployments"
                        && a.namespace == "prod"
                }
                "system:serviceaccount:ns:robot" => a.verb == "list" && a.resource == "pods",
                _ => false,
            };
            if ok { Decision::Allow } else { Decision::NoOpinion("no rule".to_owned()) }
        }
    }

    fn run(src: &str) -> Result<cel::Value, String> {
        let a = Authz {
            authorizer: Arc::new(Table),
            user: UserInfo { name: "alice".to_owned(), ..UserInfo::default() },
            request: ["apps", "v1", "deployments", "", "prod", "web"].map(str::to_owned),
        };
        let p = super::super::expr::compile(src)?;
        super::super::expr::eval_with(&p, &[], Some(&a))
    }

    #[test]
    fn checks_ask_the_authoriser_for_the_requester_as_upstreams_library() {
        let yes = cel::Value::Bool(true);
        let no = cel::Value::Bool(false);
        let cases = [
            (
                "authorizer.group('apps').resource('deployments').namespace('prod').check('get').allowed()",
                &yes,
            ),
            (
                "authorizer.group('apps').resource('deployments').namespace('dev').check('get').allowed()",
                &no,
            ),
            (
                "authorizer.group('apps').resource('deployments').namespace('prod').name('x').check('delete').allowed()",
                &no,
            ),
            ("authorizer.requestResource.check('get').allowed()", &yes),
            (
                "authorizer.serviceAccount('ns', 'robot').group('').resource('pods').check('list').allowed()",
                &yes,
            ),
            (
                "authorizer.serviceAccount('ns', 'robot').requestResource.check('get').allowed()",
                &no,
            ),
            ("authorizer.group('').resource('pods').check('list').allowed()", &no),
            ("authorizer.path('/healthz').check('get').allowed()", &no),
            ("authorizer.group('apps').resource('deployments').check('get').errored()", &no),
            ("authorizer.group('apps').check('get').errored()", &no),
        ];
        for (src, want) in cases.iter().take(9) {
            assert_eq!(run(src).as_ref(), Ok(*want), "{src}");
        }
        // A group check has no `check` (upstream: no such overload).
        assert!(run(cases[9].0).is_err());
        assert_eq!(
            run("authorizer.group('apps').resource('deployments').check('get').reason()"),
            Ok(cel::Value::String(Arc::new("no rule".to_owned())))
        );
    }
}
