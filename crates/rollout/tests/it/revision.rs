//! ControllerRevision data, hashing and naming.

use expect_test::expect;
use kinetic_rollout::revision::{
    fnv1_32, go_json, revision_data, revision_hash, revision_name, revision_name_for, safe_encode,
};
use serde_json::json;

#[test]
fn fnv1_test_vectors() {
    // FNV-1 (not 1a) 32-bit reference values.
    assert_eq!(fnv1_32(b""), 0x811c_9dc5);
    assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
    assert_eq!(fnv1_32(b"foobar"), 0x31f0_b262);
}

#[test]
fn safe_encoding_uses_the_kubernetes_alphabet() {
    // '0' is byte 48, 48 % 27 = 21 -> '4'; '9' is 57 % 27 = 3 -> 'f'.
    assert_eq!(safe_encode("0123456789"), "456789bcdf");
}

#[test]
fn data_hash_and_name() {
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web:v1", "args": ["a<b&c>"]}]},
    });
    let data = revision_data(&template);
    expect![[r#"{"spec":{"template":{"$patch":"replace","metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"args":["a\u003cb\u0026c\u003e"],"image":"web:v1","name":"web"}]}}}}"#]].assert_eq(&go_json(&data));
    let hash = revision_hash(&data, None);
    assert_eq!(hash, revision_hash(&data, None), "stable");
    assert_ne!(hash, revision_hash(&data, Some(1)), "the collision count changes the hash");
    // Key order does not matter: Go marshals maps sorted.
    let reordered = json!({
        "spec": {"containers": [{"image": "web:v1", "args": ["a<b&c>"], "name": "web"}]},
        "metadata": {"labels": {"app": "web"}},
    });
    assert_eq!(revision_name_for("web", &reordered, None), revision_name("web", &hash));
    expect!["web-5f57f4fc89"].assert_eq(&revision_name_for("web", &template, None));

    let long = "x".repeat(300);
    assert_eq!(revision_name(&long, "abc").len(), 223 + 4);
}

/// Regression (issue 10): the CloneSet controller wrote ControllerRevision `data` with a raw `&`
/// (`sh -c "... & wait"`); kube-apiserver re-encodes it Go-style on every patch, then refused the
/// patch as `data: field is immutable`, and the rollback hung. The controller now sends the
/// bytes Go's `encoding/json` writes, which that re-encoding leaves as they are.
#[test]
fn rollback_hangs_when_revision_data_is_not_go_canonical_json() {
    let template = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "command": ["sh", "-c", "sleep 1 & wait"], "env": [{"name": "S", "value": "a\u{2028}b\u{2029}<>"}]}]}});
    let data = revision_data(&template);
    let rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 1,
        "metadata": {"name": "cs-1"}, "data": data});
    let canonical = go_json(&rev);
    expect![[r#"{"apiVersion":"apps/v1","data":{"spec":{"template":{"$patch":"replace","spec":{"containers":[{"command":["sh","-c","sleep 1 \u0026 wait"],"env":[{"name":"S","value":"a\u2028b\u2029\u003c\u003e"}],"image":"busybox","name":"c"}]}}}},"kind":"ControllerRevision","metadata":{"name":"cs-1"},"revision":1}"#]].assert_eq(&canonical);
    // Go re-encoding = decode and encode again: a fixed point, and the same JSON value.
    let decoded: serde_json::Value = serde_json::from_str(&canonical).unwrap();
    assert_eq!(decoded, rev);
    assert_eq!(go_json(&decoded), canonical);
}
