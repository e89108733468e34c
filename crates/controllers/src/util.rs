//! Helpers shared by the controllers: label selectors, owner references, semantic equality.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::Value;

pub(crate) type Labels = BTreeMap<String, String>;

/// Whether `selector` selects an object with `labels` (upstream `metav1.LabelSelectorAsSelector`
/// followed by `Matches`). An empty selector matches everything; `None` matches nothing.
pub(crate) fn selector_matches(selector: Option<&LabelSelector>, labels: Option<&Labels>) -> bool {
    let Some(sel) = selector else { return false };
    let empty = Labels::new();
    let labels = labels.unwrap_or(&empty);
    let by_labels =
        sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k).is_some_and(|l| l == v));
    by_labels
        && sel.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector has no requirement at all (upstream refuses to act on those).
pub(crate) fn selector_is_empty(sel: Option<&LabelSelector>) -> bool {
    sel.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    })
}

/// The ownerReference with `controller: true`, if any.
pub(crate) fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta().owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` with `controller` and `blockOwnerDeletion` set, as
/// upstream's `metav1.NewControllerRef`.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub(crate) fn name_of<K: Resource>(obj: &K) -> &str {
    obj.meta().name.as_deref().unwrap_or_default()
}

pub(crate) fn ns_of<K: Resource>(obj: &K) -> &str {
    obj.meta().namespace.as_deref().unwrap_or_default()
}

pub(crate) fn uid_of<K: Resource>(obj: &K) -> &str {
    obj.meta().uid.as_deref().unwrap_or_default()
}

pub(crate) fn is_deleting<K: Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

/// Drops nulls, empty lists, empty objects and (when `zeros`) zero numbers, recursively: what
/// Go's `omitempty` and apimachinery's semantic equality (nil == empty) do not tell apart.
pub(crate) fn normalize(v: Value, zeros: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v, zeros)))
                .filter(|(_, v)| !is_empty(v, zeros))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| normalize(v, zeros)).collect()),
        v => v,
    }
}

fn is_empty(v: &Value, zeros: bool) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(n) => zeros && n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Semantic equality of two serializable values (nil == empty; with `zeros`, 0 == absent).
pub(crate) fn sem_eq<T: serde::Serialize>(a: &T, b: &T, zeros: bool) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => normalize(a, zeros) == normalize(b, zeros),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn selectors_match_like_upstream() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(Some(&sel), Some(&labels(&[("app", "web")]))));
        assert!(!selector_matches(Some(&sel), Some(&labels(&[("app", "web"), ("tier", "db")]))));
        assert!(!selector_matches(Some(&sel), None));
        assert!(!selector_matches(None, Some(&labels(&[("app", "web")]))));
        assert!(selector_matches(Some(&LabelSelector::default()), None));
        assert!(selector_is_empty(Some(&LabelSelector::default())));
    }

    #[test]
    fn normalize_treats_nil_as_empty() {
        let a = serde_json::json!({"a": [], "b": {"c": null}, "d": 0, "e": 1});
        assert_eq!(normalize(a.clone(), true), serde_json::json!({"e": 1}));
        assert_eq!(normalize(a, false), serde_json::json!({"d": 0, "e": 1}));
    }
}
