//! `authorization.k8s.io/v1` reviews (`kubectl auth can-i`, `--list`, and webhooks asking
//! "may this user ..."), and impersonation (`kubectl --as`).
//!
//! The reviews are not stored: a `create` answers the request with its `status` filled, as
//! upstream's `pkg/registry/authorization/*` do. Access reviews ask the server's whole
//! authoriser chain (so `system:masters` is allowed); the rules review lists the RBAC rules of
//! the user in a namespace. Impersonation follows upstream's `WithImpersonation` filter: the
//! acting user needs `impersonate` on `users`, `groups`, `serviceaccounts`, `uids` and
//! `userextras/<key>`.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::{Value, json};

use super::Rbac;
use crate::auth::{AUTHENTICATED_GROUP, Attributes, Authorizer, Decision, UserInfo};
use crate::error::{ApiError, ApiResult, Cause};

pub const GROUP: &str = "authorization.k8s.io";

/// The review resources, by plural (`localsubjectaccessreviews` is namespaced).
pub const RESOURCES: [(&str, &str, bool); 4] = [
    ("subjectaccessreviews", "SubjectAccessReview", false),
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
    ("localsubjectaccessreviews", "LocalSubjectAccessReview", true),
    ("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
];

/// Which review a path names: `(plural, namespace)`.
#[must_use]
pub fn route<'a>(segs: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let (plural, ns) = match segs {
        ["apis", GROUP, "v1", plural] => (*plural, ""),
        ["apis", GROUP, "v1", "namespaces", ns, plural] => (*plural, *ns),
        _ => return None,
    };
    RESOURCES
        .iter()
        .any(|(p, _, namespaced)| *p == plural && *namespaced != ns.is_empty())
        .then_some((plural, ns))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn extra_of(v: &Value) -> BTreeMap<String, Vec<String>> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let vals = v
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default();
                    (k.clone(), vals)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes a review spec asks about.
fn spec_attributes(user: UserInfo, spec: &Value) -> Attributes {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Attributes {
            user,
            verb: s(r, "verb").to_owned(),
            resource_request: true,
            api_group: s(r, "group").to_owned(),
            api_version: s(r, "version").to_owned(),
            resource: s(r, "resource").to_owned(),
            subresource: s(r, "subresource").to_owned(),
            namespace: s(r, "namespace").to_owned(),
            name: s(r, "name").to_owned(),
            path: String::new(),
            field_selector: r
                .pointer("/fieldSelector/rawSelector")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }
    } else {
        let r = spec.get("nonResourceAttributes").cloned().unwrap_or(Value::Null);
        Attributes {
            user,
            verb: s(&r, "verb").to_owned(),
            path: s(&r, "path").to_owned(),
            ..Attributes::default()
        }
    }
}

fn invalid(kind: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(kind, GROUP, "", causes)
}

/// Answers one review `create`: the request object with its `status`.
///
/// # Errors
/// The review is malformed (422, as upstream's validation), or its kind does not match.
pub fn serve(
    authz: &dyn Authorizer,
    rbac: &Rbac,
    requester: &UserInfo,
    plural: &str,
    ns: &str,
    mut body: Value,
) -> ApiResult<Value> {
    let (_, kind, _) =
        RESOURCES.iter().find(|(p, _, _)| *p == plural).ok_or_else(ApiError::page_not_found)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let body_kind = s(&body, "kind");
    if !body_kind.is_empty() && body_kind != *kind {
        return Err(ApiError::bad_request(format!(
            "the body's kind {body_kind:?} does not match the resource ({kind})"
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match plural {
        "selfsubjectrulesreviews" => rules_review(rbac, requester, &spec)?,
        _ => {
            let user = match plural {
                "selfsubjectaccessreviews" => requester.clone(),
                _ => {
                    let u = UserInfo {
                        name: s(&spec, "user").to_owned(),
                        uid: s(&spec, "uid").to_owned(),
                        groups: spec
                            .get("groups")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                            })
                            .unwrap_or_default(),
                        extra: extra_of(spec.get("extra").unwrap_or(&Value::Null)),
                    };
                    if u.name.is_empty() && u.groups.is_empty() {
                        return Err(invalid(
                            kind,
                            vec![Cause::invalid(
                                "spec.user",
                                &json!(""),
                                "at least one of user or group must be specified",
                            )],
                        ));
                    }
                    u
                }
            };
            let has_res = spec.get("resourceAttributes").is_some_and(Value::is_object);
            let has_url = spec.get("nonResourceAttributes").is_some_and(Value::is_object);
            if has_res == has_url {
                return Err(invalid(
                    kind,
                    vec![Cause::invalid(
                        "spec.resourceAttributes",
                        spec.get("resourceAttributes").unwrap_or(&Value::Null),
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            if plural == "localsubjectaccessreviews" {
                if has_url {
                    return Err(invalid(
                        kind,
                        vec![Cause::invalid(
                            "spec.nonResourceAttributes",
                            &spec["nonResourceAttributes"],
                            "disallowed on this kind of request",
                        )],
                    ));
                }
                let want = spec.pointer("/resourceAttributes/namespace").and_then(Value::as_str);
                if want != Some(ns) {
                    return Err(invalid(
                        kind,
                        vec![Cause::invalid(
                            "spec.resourceAttributes.namespace",
                            &json!(want.unwrap_or("")),
                            "must match metadata.namespace",
                        )],
                    ));
                }
            }
            let attrs = spec_attributes(user, &spec);
            match authz.authorize(&attrs) {
                Decision::Allow => json!({"allowed": true}),
                Decision::Deny(r) => json!({"allowed": false, "denied": true, "reason": r}),
                Decision::NoOpinion(r) if r.is_empty() => json!({"allowed": false}),
                Decision::NoOpinion(r) => json!({"allowed": false, "reason": r}),
            }
        }
    };
    body["apiVersion"] = json!(format!("{GROUP}/v1"));
    body["kind"] = json!(kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    if !ns.is_empty() {
        body["metadata"]["namespace"] = json!(ns);
    }
    body["status"] = status;
    Ok(body)
}

/// Upstream's `SelfSubjectRulesReview`: the user's RBAC rules in `spec.namespace`.
fn rules_review(rbac: &Rbac, user: &UserInfo, spec: &Value) -> ApiResult<Value> {
    let ns = s(spec, "namespace");
    let mut resource_rules = Vec::new();
    let mut url_rules = Vec::new();
    for r in rbac.rules_for(user, ns) {
        if r.non_resource_urls.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        } else {
            url_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    Ok(json!({"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false}))
}

const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_EXTRA: &str = "impersonate-extra-";
const SA_PREFIX: &str = "system:serviceaccount:";

/// The user a request acts as: `actor`, or the user its `Impersonate-*` headers name when
/// `actor` may impersonate them (upstream's `WithImpersonation`).
///
/// # Errors
/// 403 with upstream's message naming the first thing the actor may not impersonate; 400 for
/// impersonated groups, uid or extras without a user.
pub fn impersonate(
    authz: &dyn Authorizer,
    actor: UserInfo,
    headers: &HeaderMap,
) -> ApiResult<UserInfo> {
    let all = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let user = all(IMPERSONATE_USER).into_iter().next();
    let groups = all(IMPERSONATE_GROUP);
    let uid = all(IMPERSONATE_UID).into_iter().next();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix(IMPERSONATE_EXTRA)
            && let Ok(v) = v.to_str()
        {
            let key = unescape(key);
            extra.entry(key).or_default().push(v.to_owned());
        }
    }
    let Some(name) = user else {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(actor);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, uid or extras without impersonating a user",
        ));
    };
    let check = |group: &str, resource: &str, sub: &str, ns: &str, n: &str| -> ApiResult<()> {
        let a = Attributes {
            user: actor.clone(),
            verb: "impersonate".into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: n.into(),
            ..Attributes::default()
        };
        match authz.authorize(&a) {
            Decision::Allow => Ok(()),
            Decision::Deny(r) | Decision::NoOpinion(r) => Err(crate::auth::forbidden(&a, &r)),
        }
    };
    let mut out_groups = groups.clone();
    match name.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
        Some((ns, sa)) => {
            check("", "serviceaccounts", "", ns, sa)?;
            // Upstream adds a service account's groups unless groups were given.
            if groups.is_empty() {
                out_groups =
                    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
            }
        }
        None => check("", "users", "", "", &name)?,
    }
    for g in &groups {
        check("", "groups", "", "", g)?;
    }
    if let Some(u) = &uid {
        check("authentication.k8s.io", "uids", "", "", u)?;
    }
    for (k, vals) in &extra {
        for v in vals {
            check("authentication.k8s.io", "userextras", k, "", v)?;
        }
    }
    if name != "system:anonymous"
        && !out_groups.iter().any(|g| g == AUTHENTICATED_GROUP || g == "system:unauthenticated")
    {
        out_groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    Ok(UserInfo { name, uid: uid.unwrap_or_default(), groups: out_groups, extra })
}

/// Extra keys travel percent-encoded in header names (upstream unescapes them).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `authorization.k8s.io` entry of `/apis`.
#[must_use]
pub fn group() -> Value {
    let v = json!({"groupVersion": format!("{GROUP}/v1"), "version": "v1"});
    json!({"name": GROUP, "versions": [v.clone()], "preferredVersion": v})
}

/// Everything under `/apis/authorization.k8s.io`: discovery, and the reviews (`POST`), as
/// `(code, body)`.
///
/// # Errors
/// 404 for other paths, 405 for other methods on a review, a review's own errors.
pub fn serve_group(
    authz: &dyn Authorizer,
    rbac: &Rbac,
    requester: &UserInfo,
    method: &http::Method,
    rest: &[&str],
    body: Option<Value>,
) -> ApiResult<(u16, Value)> {
    match (rest, body) {
        ([], None) if method == http::Method::GET => {
            let mut g = group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok((200, g))
        }
        (["v1"], None) if method == http::Method::GET => {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .map(|(plural, kind, namespaced)| {
                    json!({"name": plural, "singularName": "", "namespaced": namespaced,
                           "kind": kind, "verbs": ["create"]})
                })
                .collect();
            Ok((
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1",
                       "groupVersion": format!("{GROUP}/v1"), "resources": resources}),
            ))
        }
        (["v1", ..], body) => {
            let mut segs = vec!["apis", GROUP];
            segs.extend_from_slice(rest);
            let (plural, ns) = route(&segs).ok_or_else(ApiError::page_not_found)?;
            match body {
                Some(b) if method == http::Method::POST => {
                    Ok((201, serve(authz, rbac, requester, plural, ns, b)?))
                }
                _ => Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({method} {plural}.{GROUP})"
                ))),
            }
        }
        _ => Err(ApiError::page_not_found()),
    }
}
