//! Builders for test CloneSets and pods, shaped like upstream's `createTestCloneSet` and
//! `createTestPod` helpers.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::cloneset::CloneSet;
use serde_json::{Value, json};

pub const OLD: &str = "cs-old_rev";
pub const NEW: &str = "cs-new_rev";

/// A fixed "now" for availability checks.
pub fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("a valid timestamp")
}

/// An int-or-string from test shorthand: `"3"` is the integer 3, `"20%"` stays a string.
pub fn intstr(s: &str) -> Value {
    s.parse::<i64>().map_or_else(|_| json!(s), |i| json!(i))
}

/// A CloneSet with the strategy fields of upstream's `createTestCloneSet`.
pub fn cloneset(replicas: i32, partition: &str, max_unavailable: &str, max_surge: &str) -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "CloneSet",
        "metadata": {"name": "cs", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:v1"}]},
            },
            "updateStrategy": {
                "partition": intstr(partition),
                "maxUnavailable": intstr(max_unavailable),
                "maxSurge": intstr(max_surge),
            },
        },
    })
}

pub fn typed(cs: Value) -> CloneSet {
    serde_json::from_value(cs).expect("a valid CloneSet")
}

/// A pod from shorthand: `o`/`n` (old/new revision), `+`/`-` (ready or not), then optional
/// `d` (specified-delete label), `h` (label `hold=yes`, a lifecycle hook's label) and `@State` (lifecycle state; default Normal), e.g. `n+d@PreparingDelete`.
pub fn pod(spec: &str, index: usize) -> Pod {
    let (body, state) = spec.split_once('@').unwrap_or((spec, "Normal"));
    let mut chars = body.chars();
    let revision = match chars.next() {
        Some('o') => OLD,
        Some('n') => NEW,
        other => panic!("bad revision in pod shorthand {spec:?}: {other:?}"),
    };
    let ready = match chars.next() {
        Some('+') => true,
        Some('-') => false,
        other => panic!("bad readiness in pod shorthand {spec:?}: {other:?}"),
    };
    let rest: String = chars.collect();
    let mut labels = json!({
        "controller-revision-hash": revision,
        "lifecycle.apps.kruise.io/state": state,
    });
    if rest.contains('d') {
        labels["apps.kruise.io/specified-delete"] = json!("true");
    }
    if rest.contains('h') {
        labels["hold"] = json!("yes");
    }
    let mut p = json!({"metadata": {"name": format!("pod-{index}"), "labels": labels}});
    if ready {
        p["status"] = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        });
    }
    serde_json::from_value(p).expect("a valid pod")
}

pub fn pods(specs: &[&str]) -> Vec<Pod> {
    specs.iter().enumerate().map(|(i, s)| pod(s, i)).collect()
}
