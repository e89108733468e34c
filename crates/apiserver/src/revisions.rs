//! Validation of `apps/v1` ControllerRevisions, as upstream's `ValidateControllerRevision` and
//! `ValidateControllerRevisionUpdate` (`pkg/apis/apps/validation/validation.go`): `data` is
//! required and immutable, `revision` is non-negative and may change (a rollback moves an old
//! revision to the newest number).
//!
//! kube-apiserver compares `data` as the bytes it decoded, which made a CloneSet rollback fail on
//! a real cluster once it had re-encoded Kinetic's raw `&` as `\u0026` (issue 10; the controller
//! now writes Go's canonical encoding). This server keeps decoded JSON only, so it compares the
//! decoded values: any change of content is refused as upstream refuses it, while two spellings of
//! the same JSON are equal.

use serde_json::Value;

use crate::error::Cause;

/// The causes for a ControllerRevision `obj`; `old` is the stored one on update.
pub fn validate(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let data = obj.get("data").filter(|d| !d.is_null());
    if data.is_none() {
        causes.push(Cause::required("data", "data is mandatory"));
    }
    if let Some(r) = obj.get("revision").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(Cause::invalid(
            "revision",
            &Value::from(r),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(old) = old {
        let old_data = old.get("data").filter(|d| !d.is_null());
        if old_data != data {
            let shown = data.map(Value::to_string).unwrap_or_else(|| "null".to_owned());
            causes.push(crate::error::invalid("data", &shown, "field is immutable"));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn controller_revision_data_is_immutable_but_its_number_is_not() {
        let old = json!({"data": {"spec": {"a": "x & y"}}, "revision": 1});
        let bumped = json!({"data": {"spec": {"a": "x & y"}}, "revision": 2});
        assert!(validate(&bumped, Some(&old)).is_empty());
        let changed = json!({"data": {"spec": {"a": "x"}}, "revision": 1});
        let causes = validate(&changed, Some(&old));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "data");
        assert!(causes[0].message.ends_with("field is immutable"), "{}", causes[0].message);
    }

    #[test]
    fn controller_revision_needs_data_and_a_non_negative_revision() {
        let causes = validate(&json!({"revision": -1}), None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["data", "revision"]);
    }
}
