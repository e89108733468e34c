//! The patch engines of a PATCH request, chosen by its content type, with kube-apiserver's
//! answers: which types a resource accepts (415 otherwise), and which failures are the client's
//! malformed patch (400) and which a patch that does not apply to the object (422).

use kinetic_machinery::patch::{self, JsonPatchFailure, PatchError};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;

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
        "application/apply-patch+yaml" => Err(ApiError::unsupported_media_type(
            "server-side apply is not supported by this server: use client-side apply (kubectl apply without --server-side), or a JSON/merge/strategic patch",
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
    fn json_patch_that_is_not_a_list_is_400() {
        let e = json_patch(&json!({}), &json!({"op": "add"})).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
    }
}
