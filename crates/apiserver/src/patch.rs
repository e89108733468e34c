//! The patch engines of a PATCH request, chosen by its content type, with kube-apiserver's
//! answers: which types a resource accepts (415 otherwise), and which failures are the client's
//! malformed patch (400) and which a patch that does not apply to the object (422); and the
//! `PatchOptions` checks of server-side apply, which [`crate::rest::Api::apply`] serves.

use kinetic_machinery::patch::{self, JsonPatchFailure, PatchError};
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::Resource;

/// The content type of a server-side apply.
pub const APPLY: &str = "application/apply-patch+yaml";

/// Checks a PATCH request's `PatchOptions` as upstream's `ValidatePatchOptions`: an apply
/// needs a `fieldManager`; `force` is for applies only. Returns `force`.
///
/// # Errors
/// 422 Invalid `PatchOptions.meta.k8s.io`, with upstream's causes; 400 for a `force` that is
/// not a boolean.
pub fn options(
    patch_type: &str,
    field_manager: Option<&str>,
    force: Option<&str>,
) -> ApiResult<bool> {
    let forced = match force {
        None => None,
        Some(f) => Some(f.parse::<bool>().map_err(|_| {
            ApiError::bad_request(format!("invalid value {f:?} for force: must be true or false"))
        })?),
    };
    let mut causes = Vec::new();
    if patch_type == APPLY {
        if field_manager.is_none_or(str::is_empty) {
            causes.push(Cause::required("fieldManager", "is required for apply patch"));
        }
    } else if forced.is_some() {
        causes.push(Cause::forbidden("force", "may not be specified for non-apply patch"));
    }
    if let Some(m) = field_manager
        && m.chars().count() > crate::managed::MAX_MANAGER_LENGTH
    {
        causes.push(Cause::too_long("fieldManager", crate::managed::MAX_MANAGER_LENGTH as u64));
    }
    if causes.is_empty() {
        Ok(forced.unwrap_or(false))
    } else {
        Err(ApiError::invalid("PatchOptions", "meta.k8s.io", "", causes))
    }
}

/// Applies a patch to the current object.
pub type Patcher = Box<dyn Fn(&Value, &Value) -> ApiResult<Value> + Send + Sync>;

/// The patch engine for a content type, or 415 as upstream answers. `scale` patches a `Scale`
/// object, which takes strategic merge patches for every kind.
///
/// # Errors
/// 415 UnsupportedMediaType for a type the resource does not take (server-side apply, strategic
/// merge patch of a custom resource, anything else).
pub fn patcher(res: &Resource, patch_type: &str, scale: bool) -> ApiResult<Patcher> {
    let bad = |e: PatchError| ApiError::bad_request(format!("the patch could not be applied: {e}"));
    match patch_type {
        "application/json-patch+json" => Ok(Box::new(json_patch)),
        "application/merge-patch+json" => {
            Ok(Box::new(move |cur, p| patch::merge_patch(cur, p).map_err(bad)))
        }
        "application/strategic-merge-patch+json" if res.builtin || scale => {
            Ok(Box::new(move |cur, p| patch::strategic_merge_patch(cur, p).map_err(bad)))
        }
        "application/strategic-merge-patch+json" => Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (strategic merge patch is not supported for custom resources)",
        )),
        // Server-side apply is not a patch function of the object: `Api::apply` serves it.
        APPLY => Err(ApiError::unsupported_media_type(
            "server-side apply of the scale subresource is not supported by this server: apply the object itself, or send a merge patch",
        )),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
        ))),
    }
}

/// An RFC 6902 JSON patch as kube-apiserver applies it (`handlers/patch.go`, `applyJSPatch`):
/// a patch that cannot be decoded is 400 BadRequest; one that decodes but does not apply (a
/// failed `test`, a missing path) is 422 Invalid, upstream's
/// `NewGenericServerResponse(StatusUnprocessableEntity, ...)`, whose message begins with the
/// words below.
///
/// Upstream's library, `gopkg.in/evanphx/json-patch.v4`, also differs from RFC 6902 in one
/// place clients rely on: `replace` of a key missing from an object sets it, as `add` would
/// (its `partialDoc.get` reports no error for a missing key). A missing array index or a
/// missing parent still fails.
///
/// # Errors
/// As above.
pub fn json_patch(cur: &Value, p: &Value) -> ApiResult<Value> {
    let mut ops = p.clone();
    // Each round either succeeds, fails for good, or turns one more `replace` into an `add`.
    loop {
        match patch::json_patch(cur, &ops) {
            Ok(v) => return Ok(v),
            Err(PatchError::JsonPatchOperationFailed {
                index,
                op: "replace",
                failure: JsonPatchFailure::PathNotFound,
                ..
            }) if replaces_missing_key(cur, &ops, index) => {
                if let Some(op) = ops.get_mut(index).and_then(Value::as_object_mut) {
                    op.insert("op".into(), Value::String("add".into()));
                }
            }
            Err(e @ PatchError::JsonPatchOperationFailed { .. }) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                ));
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!("the patch could not be applied: {e}")));
            }
        }
    }
}

/// Whether operation `index` of `ops` is a `replace` whose path names a key missing from an
/// object that exists, in the document as the operations before it leave it.
fn replaces_missing_key(cur: &Value, ops: &Value, index: usize) -> bool {
    let Some(list) = ops.as_array() else { return false };
    let Some(path) = list.get(index).and_then(|o| o.get("path")).and_then(Value::as_str) else {
        return false;
    };
    let Some((parent, key)) = path.rsplit_once('/') else { return false };
    let before = Value::Array(list[..index].to_vec());
    let Ok(doc) = patch::json_patch(cur, &before) else { return false };
    let key = key.replace("~1", "/").replace("~0", "~");
    doc.pointer(parent).and_then(Value::as_object).is_some_and(|o| !o.contains_key(&key))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_patch_test_failure_is_422_invalid() {
        let e = json_patch(&json!({"a": 1}), &json!([{"op": "test", "path": "/a", "value": 2}]))
            .unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"), "{e}");
    }

    #[test]
    fn json_patch_replace_of_a_missing_map_key_sets_it_as_upstream() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}});
        let p = json!([
            {"op": "replace", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a~1x", "value": "3"},
        ]);
        let got = json_patch(&doc, &p).unwrap();
        assert_eq!(got, json!({"metadata": {"labels": {"a": "1", "b": "2", "a/x": "3"}}}));
    }

    #[test]
    fn json_patch_replace_under_a_missing_parent_or_index_still_fails() {
        let doc = json!({"spec": {"list": [1]}});
        for path in ["/status/phase", "/spec/list/3"] {
            let e = json_patch(&doc, &json!([{"op": "replace", "path": path, "value": 1}]))
                .unwrap_err();
            assert_eq!(e.code, 422, "{path}: {e}");
        }
    }

    #[test]
    fn apply_needs_a_field_manager_and_force_is_for_apply_only() {
        let e = options(APPLY, None, None).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        let e = options("application/merge-patch+json", None, Some("true")).unwrap_err();
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
        );
        assert!(options(APPLY, Some("kubectl"), Some("true")).unwrap());
        assert!(!options(APPLY, Some("kubectl"), None).unwrap());
        assert_eq!(options(APPLY, Some("m"), Some("yes")).unwrap_err().code, 400);
    }

    #[test]
    fn json_patch_that_is_not_a_list_is_400() {
        let e = json_patch(&json!({}), &json!({"op": "add"})).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
    }
}
