//! Sending a write to the webhooks that match it and acting on their answers, as upstream's
//! mutating and validating dispatchers (`k8s.io/apiserver/pkg/admission/plugin/webhook/
//! {mutating,validating}/dispatcher.go`) with AdmissionReview v1
//! (`.../webhook/request/admissionreview.go`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::matching::{self, Attrs};
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, Resource, storage_key};
use crate::store::{ObjKey, Store};

/// One write as the webhooks see it.
pub struct Request<'a> {
    pub res: &'a Resource,
    /// The subresource written (`status`, `scale`), `""` for the resource itself.
    pub sub: &'a str,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub user: &'a UserInfo,
    pub dry_run: bool,
    /// The request's `CreateOptions`/`UpdateOptions`/`DeleteOptions`.
    pub options: Value,
    /// The server's authoriser, for the `authorizer` CEL variable (`None`: allow all, as a
    /// server without authorisation).
    pub authorizer: Option<Arc<dyn crate::auth::Authorizer>>,
    /// The kind of the request's object when it is not the resource's (a CONNECT's options
    /// object, a Binding, an Eviction): `kind` and `requestKind` both.
    pub request_kind: Option<(String, String, String)>,
}

impl Request<'_> {
    /// The `authorizer` CEL variable of this request ([`super::authz`]).
    #[must_use]
    pub fn authz(&self) -> super::authz::Authz {
        super::authz::Authz {
            authorizer: self
                .authorizer
                .clone()
                .unwrap_or_else(|| Arc::new(crate::auth::AlwaysAllow)),
            user: self.user.clone(),
            request: [
                self.res.group.clone(),
                self.res.version.clone(),
                self.res.plural.clone(),
                self.sub.to_owned(),
                self.namespace.to_owned(),
                self.name.to_owned(),
            ],
        }
    }
}

/// How `rest` shows an object to a webhook of a given served version and takes the webhook's
/// changes back (conversion between served and stored shapes; a `scale` write's Scale).
pub trait View: Send + Sync {
    /// `(group, version, kind)` of what webhooks of `res` are sent.
    fn kind(&self, res: &Resource) -> (String, String, String);
    /// `stored` as webhooks of `res` see it.
    ///
    /// # Errors
    /// The object cannot be shown in that form.
    fn view(&self, res: &Resource, stored: &Value) -> ApiResult<Value>;
    /// Takes a mutated view back into the stored object.
    ///
    /// # Errors
    /// The view does not fit back.
    fn unview(&self, res: &Resource, target: &mut Value, view: Value) -> ApiResult<()>;
}

/// What one resource's objects decode to, with the `(uid, resourceVersion)` of each object
/// they were decoded from: any write to the resource changes that signature.
struct Decoded {
    sig: Vec<(Box<str>, u64)>,
    items: Arc<Vec<Value>>,
}

/// Decoded admission configurations by storage key and what they were derived for (a store's
/// writes change the signature, which invalidates the entry). Keyed by uids and versions, not
/// by store, so servers in one process (tests) never see each other's entries.
static DECODED: std::sync::Mutex<Vec<(String, Decoded)>> = std::sync::Mutex::new(Vec::new());

/// The objects of `plural` (an `admissionregistration.k8s.io` resource) turned into values by
/// `decode`, decoded once per set of resourceVersions: a write checks only the stored versions
/// (no JSON is decoded while no configuration changed, nothing at all while there is none).
pub(super) fn cached(
    store: &Store,
    plural: &str,
    tag: &str,
    decode: impl Fn(&Value) -> Vec<Value>,
) -> Arc<Vec<Value>> {
    let key = storage_key(super::GROUP, plural);
    let st = store.read();
    let sig: Vec<(Box<str>, u64)> =
        st.list(&key, None, None).map(|(_, s)| (Box::from(s.uid()), s.rv)).collect();
    if sig.is_empty() {
        return Arc::default();
    }
    let slot = format!("{key}#{tag}");
    if let Ok(cache) = DECODED.lock()
        && let Some((_, d)) = cache.iter().find(|(k, _)| *k == slot)
        && d.sig == sig
    {
        return d.items.clone();
    }
    let items: Arc<Vec<Value>> =
        Arc::new(st.list(&key, None, None).flat_map(|(_, s)| decode(&s.value())).collect());
    drop(st);
    if let Ok(mut cache) = DECODED.lock() {
        let entry = Decoded { sig, items: items.clone() };
        match cache.iter_mut().find(|(k, _)| *k == slot) {
            Some((_, d)) => *d = entry,
            None => cache.push((slot, entry)),
        }
    }
    items
}

/// The webhooks of every configuration of `plural`, ordered by configuration name and then
/// as listed (upstream's order).
fn hooks(store: &Store, plural: &str) -> Arc<Vec<Value>> {
    cached(store, plural, "webhooks", |v| {
        v.get("webhooks").and_then(Value::as_array).cloned().unwrap_or_default()
    })
}

fn hook_name(h: &Value) -> &str {
    h.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The resource a webhook's rules match for this request: the request's own, or with
/// `matchPolicy: Equivalent` another served version of the same stored resource.
fn matched(reg: &Registry, hook: &Value, req: &Request<'_>) -> Option<Arc<Resource>> {
    let exact = hook.get("matchPolicy").and_then(Value::as_str) == Some("Exact");
    matched_by(reg, req, exact, |a| matching::rules_match(hook, a))
}

/// The resource whose attributes `test` accepts: the request's, or unless `exact` another
/// served version of the same stored resource (upstream's equivalent resources).
pub(super) fn matched_by(
    reg: &Registry,
    req: &Request<'_>,
    exact: bool,
    test: impl Fn(&Attrs<'_>) -> bool,
) -> Option<Arc<Resource>> {
    let accepts = |r: &Resource| {
        test(&Attrs {
            operation: req.operation,
            group: &r.group,
            version: &r.version,
            resource: &r.plural,
            subresource: req.sub,
            namespaced: r.namespaced,
        })
    };
    if accepts(req.res) {
        return reg.get(&req.res.group, &req.res.version, &req.res.plural);
    }
    if exact {
        return None;
    }
    reg.all().into_iter().find(|r| r.storage == req.res.storage && accepts(r))
}

/// The labels the `namespaceSelector` is matched against: the namespace's (a Namespace's
/// own), or `None` for other cluster-scoped resources.
pub(super) fn namespace_labels(
    store: &Store,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Option<Option<serde_json::Map<String, Value>>> {
    let labels = |v: &Value| v.pointer("/metadata/labels").and_then(Value::as_object).cloned();
    if req.res.namespaced {
        let key = ObjKey::new(&storage_key("", "namespaces"), "", req.namespace);
        return Some(store.get(&key).and_then(|n| labels(&n.value())));
    }
    // Upstream matches a Namespace's own labels (`namespace.Matcher`).
    if req.res.group.is_empty() && req.res.plural == "namespaces" {
        return Some(obj.or(old).and_then(labels));
    }
    None
}

fn should_call(
    store: &Store,
    hook: &Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> bool {
    let ns = namespace_labels(store, req, obj, old);
    matching::namespace_selector_matches(hook, ns.as_ref().map(Option::as_ref))
        && matching::object_selector_matches(hook, obj, old)
}

/// A failure to get a usable answer from a webhook (upstream's `ErrCallingWebhook`), which
/// `failurePolicy` decides about.
struct CallError(String);

/// A webhook's answer.
struct Answer {
    patch: Option<Value>,
    warnings: Vec<String>,
}

fn user_info(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// Maps a webhook's `status.reason` to the reasons kubectl knows; others are dropped (the
/// message still says everything).
pub(super) fn reason(r: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "InternalError",
    ];
    KNOWN.iter().find(|k| **k == r).copied().unwrap_or("")
}

/// `webhookerrors.ToStatusErr`: the refusal of webhook `name` with its status.
fn refusal(name: &str, status: Option<&Value>) -> ApiError {
    let s = |f: &str| status.and_then(|s| s.get(f)).and_then(Value::as_str).unwrap_or("");
    let denied = format!("admission webhook \"{name}\" denied the request");
    let message = match (s("message"), s("reason")) {
        (m, _) if !m.is_empty() => format!("{denied}: {m}"),
        (_, r) if !r.is_empty() => format!("{denied}: {r}"),
        _ => format!("{denied} without explanation"),
    };
    let code = status.and_then(|s| s.get("code")).and_then(Value::as_u64).unwrap_or(0);
    let code = u16::try_from(code).ok().filter(|c| *c >= 400).unwrap_or(400);
    let mut e = ApiError::new(code, reason(s("reason")), message);
    e.details = status.and_then(|s| s.get("details")).cloned();
    e
}

/// The AdmissionReview's `request` (without its `uid`) for a webhook of the matched resource
/// `res`, with `obj`/`old` already in its view; also what `matchConditions` see as `request`.
pub(super) fn review_request(
    req: &Request<'_>,
    kind: (String, String, String),
    res: &Resource,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Value {
    let (rg, rv, rk) = (req.res.group.as_str(), req.res.version.as_str(), req.res.kind.as_str());
    let request_kind = if let Some((g, v, k)) = &req.request_kind {
        json!({"group": g, "version": v, "kind": k})
    } else if req.sub == "scale" {
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    } else {
        json!({"group": rg, "version": rv, "kind": rk})
    };
    let mut r = json!({
        "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
        "resource": {"group": res.group, "version": res.version, "resource": res.plural},
        "requestKind": request_kind,
        "requestResource": {"group": rg, "version": rv, "resource": req.res.plural},
        "name": req.name,
        "operation": req.operation,
        "userInfo": user_info(req.user),
        "object": obj,
        "oldObject": old,
        "dryRun": req.dry_run,
        "options": req.options,
    });
    if !req.sub.is_empty() {
        r["subResource"] = json!(req.sub);
        r["requestSubResource"] = json!(req.sub);
    }
    if !req.namespace.is_empty() {
        r["namespace"] = json!(req.namespace);
    }
    r
}

/// Whether a webhook's `matchConditions` let the request through (`Ok(false)`: skip it).
fn conditions_match(hook: &Value, request: &Value, req: &Request<'_>) -> Result<bool, CallError> {
    let Some(conds) = hook.get("matchConditions").and_then(Value::as_array) else {
        return Ok(true);
    };
    let null = Value::Null;
    let obj = request.get("object").unwrap_or(&null);
    let old = request.get("oldObject").unwrap_or(&null);
    super::expr::match_conditions(conds, obj, old, request, Some(&req.authz()))
        .map_err(|e| CallError(format!("failed to evaluate match conditions: {e}")))
}

/// Calls one webhook with `request` (from [`review_request`]).
async fn call(
    store: &Store,
    hook: &Value,
    mut request: Value,
    mutating: bool,
) -> Result<Result<Answer, ApiError>, CallError> {
    let timeout = hook.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(10).clamp(1, 30);
    let cc = hook.get("clientConfig").cloned().unwrap_or(Value::Null);
    let target =
        super::client::target(store, &cc, timeout).map_err(|e| CallError(e.to_string()))?;
    let versions: Vec<&str> = hook
        .get("admissionReviewVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let api_version = if versions.contains(&"v1") || !versions.contains(&"v1beta1") {
        "admission.k8s.io/v1"
    } else {
        "admission.k8s.io/v1beta1"
    };
    let uid = uuid::Uuid::new_v4().to_string();
    request["uid"] = json!(uid);
    let r = request;
    let review = json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": r});
    let body = serde_json::to_vec(&review).map_err(|e| CallError(e.to_string()))?;
    let ca = cc.get("caBundle").and_then(Value::as_str);
    let raw = super::client::post(&target, ca, body, Duration::from_secs(timeout))
        .await
        .map_err(|e| CallError(format!("failed to call webhook: {e}")))?;
    let answer: Value = serde_json::from_slice(&raw)
        .map_err(|e| CallError(format!("received invalid webhook response: {e}")))?;
    let got_av = answer.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let got_kind = answer.get("kind").and_then(Value::as_str).unwrap_or("");
    if got_av != api_version || got_kind != "AdmissionReview" {
        return Err(CallError(format!(
            "received invalid webhook response: expected webhook response of {api_version}, Kind=AdmissionReview, got {got_av}, Kind={got_kind}"
        )));
    }
    let resp = answer
        .get("response")
        .filter(|r| r.is_object())
        .ok_or_else(|| CallError("webhook response was absent".to_owned()))?;
    let got_uid = resp.get("uid").and_then(Value::as_str).unwrap_or("");
    if got_uid != uid {
        return Err(CallError(format!(
            "received invalid webhook response: expected response.uid=\"{uid}\", got \"{got_uid}\""
        )));
    }
    let warnings: Vec<String> = resp
        .get("warnings")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if resp.get("allowed").and_then(Value::as_bool) != Some(true) {
        return Ok(Err(refusal(hook_name(hook), resp.get("status"))));
    }
    let patch = match resp.get("patch").and_then(Value::as_str).filter(|p| !p.is_empty()) {
        None => None,
        Some(_) if !mutating => {
            return Err(CallError(
                "received invalid webhook response: validating webhook may not return response.patch"
                    .to_owned(),
            ));
        }
        Some(p) => {
            match resp.get("patchType").and_then(Value::as_str) {
                Some("JSONPatch") => {}
                None => {
                    return Err(CallError(
                        "received invalid webhook response: webhook returned response.patch but not response.patchType".to_owned(),
                    ));
                }
                Some(other) => {
                    return Err(CallError(format!(
                        "received invalid webhook response: webhook returned invalid response.patchType of {other:?}"
                    )));
                }
            }
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| CallError(format!("received invalid webhook response: {e}")))?;
            Some(
                serde_json::from_slice(&raw).map_err(|e| {
                    CallError(format!("received invalid webhook response: patch: {e}"))
                })?,
            )
        }
    };
    Ok(Ok(Answer { patch, warnings }))
}

/// Whether a failed call of `hook` is ignored (`failurePolicy: Ignore`).
fn ignores_failures(hook: &Value) -> bool {
    hook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore")
}

/// Upstream's answer to a failed call with `failurePolicy: Fail`.
fn failed(hook: &Value, e: &CallError) -> ApiError {
    let msg = format!("failed calling webhook \"{}\": {}", hook_name(hook), e.0);
    let mut err = ApiError::internal(format!("Internal error occurred: {msg}"));
    err.details = Some(json!({"causes": [{"message": msg}]}));
    err
}

/// A dry run reaches only webhooks without side effects (upstream's
/// `NewDryRunUnsupportedErr`).
fn check_dry_run(hook: &Value, req: &Request<'_>) -> ApiResult<()> {
    let se = hook.get("sideEffects").and_then(Value::as_str).unwrap_or("Unknown");
    if req.dry_run && !matches!(se, "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            hook_name(hook)
        )));
    }
    Ok(())
}

/// Runs the mutating webhooks that match, in order, applying their patches to `obj` (the stored
/// shape), with one reinvocation of `reinvocationPolicy: IfNeeded` webhooks whose output a later
/// webhook changed. Returns their warnings and whether they changed `obj`.
///
/// # Errors
/// A refusal, a failed call of a `Fail` webhook, a patch that does not apply, a dry run a
/// webhook with side effects would see.
pub async fn mutate(
    store: &Store,
    reg: &Registry,
    req: &Request<'_>,
    view: &dyn View,
    mut obj: Option<&mut Value>,
    old: Option<&Value>,
) -> ApiResult<(Vec<String>, bool)> {
    if matching::exempt(&req.res.group) {
        return Ok((Vec::new(), false));
    }
    let hooks = hooks(store, super::MUTATING);
    if hooks.is_empty() {
        return Ok((Vec::new(), false));
    }
    let mut warnings = Vec::new();
    let mut changed = false;
    // The object each webhook left, for reinvocation.
    let mut seen: Vec<Option<Value>> = vec![None; hooks.len()];
    for round in 0..2 {
        for (i, hook) in hooks.iter().enumerate() {
            if round == 1 {
                let again = hook.get("reinvocationPolicy").and_then(Value::as_str)
                    == Some("IfNeeded")
                    && seen[i].is_some()
                    && seen[i].as_ref() != obj.as_deref();
                if !again {
                    continue;
                }
            }
            let Some(res) = matched(reg, hook, req) else { continue };
            if !should_call(store, hook, req, obj.as_deref(), old) {
                continue;
            }
            let obj_view = obj.as_deref().map(|o| view.view(&res, o)).transpose()?;
            let old_view = old.map(|o| view.view(&res, o)).transpose()?;
            let request =
                review_request(req, view.kind(&res), &res, obj_view.as_ref(), old_view.as_ref());
            let answer = match conditions_match(hook, &request, req) {
                Ok(false) => continue,
                Ok(true) => {
                    check_dry_run(hook, req)?;
                    call(store, hook, request, true).await
                }
                Err(e) => Err(e),
            };
            let answer = match answer {
                Ok(Ok(a)) => a,
                Ok(Err(refused)) => return Err(refused),
                Err(e) if ignores_failures(hook) => {
                    tracing::warn!(webhook = hook_name(hook), error = %e.0, "failed calling webhook, failing open");
                    continue;
                }
                Err(e) => return Err(failed(hook, &e)),
            };
            warnings.extend(answer.warnings);
            if let (Some(patch), Some(o), Some(v)) = (answer.patch, obj.as_deref_mut(), obj_view) {
                let patched = crate::patch::json_patch(&v, &patch).map_err(|e| {
                    ApiError::internal(format!(
                        "Internal error occurred: applying the patch of webhook \"{}\": {}",
                        hook_name(hook),
                        e.message
                    ))
                })?;
                if patched != v {
                    view.unview(&res, o, patched)?;
                    changed = true;
                }
            }
            seen[i] = obj.as_deref().cloned();
        }
    }
    Ok((warnings, changed))
}

/// Runs the validating webhooks that match, all at once. Returns their warnings.
///
/// # Errors
/// The first refusal or failed call of a `Fail` webhook (in webhook order); a dry run a
/// webhook with side effects would see.
pub async fn validate(
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
    let hooks = hooks(store, super::VALIDATING);
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let mut calls = Vec::new();
    for hook in hooks.iter() {
        let Some(res) = matched(reg, hook, req) else { continue };
        if !should_call(store, hook, req, obj, old) {
            continue;
        }
        let obj_view = obj.map(|o| view.view(&res, o)).transpose()?;
        let old_view = old.map(|o| view.view(&res, o)).transpose()?;
        let request =
            review_request(req, view.kind(&res), &res, obj_view.as_ref(), old_view.as_ref());
        let matched = conditions_match(hook, &request, req);
        if matches!(matched, Ok(false)) {
            continue;
        }
        if matched.is_ok() {
            check_dry_run(hook, req)?;
        }
        calls.push(async move {
            let r = match matched {
                Ok(_) => call(store, hook, request, false).await,
                Err(e) => Err(e),
            };
            (hook, r)
        });
    }
    let mut warnings = Vec::new();
    for (hook, r) in futures::future::join_all(calls).await {
        match r {
            Ok(Ok(a)) => warnings.extend(a.warnings),
            Ok(Err(refused)) => return Err(refused),
            Err(e) if ignores_failures(hook) => {
                tracing::warn!(webhook = hook_name(hook), error = %e.0, "failed calling webhook, failing open");
            }
            Err(e) => return Err(failed(hook, &e)),
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_upstreams() {
        let e = refusal("deny.example.com", Some(&json!({"message": "no way", "code": 403})));
        assert_eq!(e.message, "admission webhook \"deny.example.com\" denied the request: no way");
        assert_eq!(e.code, 403);
        let e = refusal("deny.example.com", Some(&json!({"reason": "Forbidden", "code": 200})));
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: Forbidden"
        );
        assert_eq!((e.code, e.reason), (400, "Forbidden"));
        let e = refusal("deny.example.com", None);
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request without explanation"
        );
        let f = failed(&json!({"name": "x.example.com"}), &CallError("boom".into()));
        assert_eq!(
            (f.code, f.reason, f.message.as_str()),
            (
                500,
                "InternalError",
                "Internal error occurred: failed calling webhook \"x.example.com\": boom"
            )
        );
    }
}
