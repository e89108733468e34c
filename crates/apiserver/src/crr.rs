//! Admission of `apps.kruise.io/v1alpha1` ContainerRecreateRequests, as OpenKruise's mutating
//! webhook does it (`pkg/webhook/containerrecreaterequest/mutating/crr_mutating_handler.go`).
//!
//! On create the request is checked against its pod, read from the store: the pod must exist,
//! be active (not finished, not deleting) and bound to a node, and every named container must
//! exist in it, once, with a container ID in the pod's status. The request then gets upstream's
//! labels (`crr.apps.kruise.io/pod-name`, `pod-uid`, `node-name`, `active`), the pod's
//! `terminationGracePeriodSeconds` when the strategy has none, and per container its `preStop`
//! (and its ports for an `httpGet` one). Kinetic also fills `statusContext` (container ID and
//! restart count) here, which upstream's daemon does on its first pass: what the request was
//! made against is then fixed at admission. The schema has already applied the webhook's
//! defaults (`strategy.failurePolicy: Fail`) and bounds.
//!
//! On update the spec (but `containers`), the three identity labels and a set
//! `unready-acquired` annotation are immutable.
//!
//! Upstream answers 400 with a bare message; here each refusal is a field cause of a 422
//! `Invalid` with the same words, which says where the problem is.

use serde_json::{Value, json};

use crate::error::Cause;
use kinetic_api::kruise::containerrecreaterequest::{
    ACTIVE_LABEL, NODE_NAME_LABEL, POD_NAME_LABEL, POD_UID_LABEL, UNREADY_ACQUIRED_KEY,
};

/// Upstream's `minDeadlineSeconds`.
const MIN_DEADLINE_SECONDS: i64 = 3;

/// Admits a new (`old` = None) or updated request; `pod` reads a pod of the request's
/// namespace by name.
pub fn admit(
    obj: &mut Value,
    old: Option<&Value>,
    pod: impl Fn(&str) -> Option<Value>,
) -> Vec<Cause> {
    match old {
        Some(old) => validate_update(obj, old),
        None => admit_create(obj, pod),
    }
}

fn validate_update(obj: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let without_containers = |o: &Value| {
        let mut spec = o.get("spec").and_then(Value::as_object).cloned().unwrap_or_default();
        spec.remove("containers");
        spec
    };
    if without_containers(obj) != without_containers(old) {
        causes.push(Cause::forbidden(
            "spec",
            "spec of ContainerRecreateRequest is immutable, except spec.containers",
        ));
    }
    let label = |o: &Value, k: &str| o.pointer("/metadata/labels").and_then(|l| l.get(k)).cloned();
    for key in [POD_NAME_LABEL, POD_UID_LABEL, NODE_NAME_LABEL] {
        if label(obj, key) != label(old, key) {
            causes.push(Cause::forbidden(
                "metadata.labels",
                &format!("not allowed to update immutable label {key}"),
            ));
        }
    }
    let ann = |o: &Value| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(UNREADY_ACQUIRED_KEY))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if ann(old).is_some_and(|v| !v.is_empty()) && ann(obj) != ann(old) {
        causes.push(Cause::forbidden(
            "metadata.annotations",
            &format!("not allowed to update immutable annotation {UNREADY_ACQUIRED_KEY}"),
        ));
    }
    causes
}

fn admit_create(obj: &mut Value, pod: impl Fn(&str) -> Option<Value>) -> Vec<Cause> {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let pod_name = spec.get("podName").and_then(Value::as_str).unwrap_or_default().to_owned();
    if pod_name.is_empty() {
        return vec![Cause::required("spec.podName", "podName can not be empty")];
    }
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    if containers.is_empty() {
        return vec![Cause::required("spec.containers", "containers list can not be null")];
    }
    if spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|d| d < MIN_DEADLINE_SECONDS)
    {
        return vec![Cause::invalid(
            "spec.activeDeadlineSeconds",
            &spec["activeDeadlineSeconds"],
            &format!("activeDeadlineSeconds can not be less than {MIN_DEADLINE_SECONDS}s"),
        )];
    }
    let Some(pod) = pod(&pod_name) else {
        return vec![Cause::invalid(
            "spec.podName",
            &json!(pod_name),
            &format!("no found Pod named {pod_name}"),
        )];
    };
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    if phase == "Succeeded" || phase == "Failed" || deleting {
        return vec![Cause::invalid(
            "spec.podName",
            &json!(pod_name),
            "not allowed to recreate containers in an inactive Pod",
        )];
    }
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node.is_empty() {
        return vec![Cause::invalid(
            "spec.podName",
            &json!(pod_name),
            "not allowed to recreate containers in a pending Pod",
        )];
    }
    let pod_containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let by_name = |list: Option<&Vec<Value>>, name: &str| {
        list.into_iter()
            .flatten()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let mut causes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut filled = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let field = format!("spec.containers[{i}]");
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let bad = |detail: String| Cause::invalid(&format!("{field}.name"), &json!(name), &detail);
        if seen.contains(&name) {
            causes.push(bad(format!("can not recreate {name} multi times")));
            continue;
        }
        seen.push(name.clone());
        let set = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
        if set("preStop") || set("ports") || set("statusContext") {
            causes.push(Cause::forbidden(
                &field,
                "preStop, ports, statusContext in container are ready-only fields",
            ));
            continue;
        }
        let Some(spec_c) = by_name(pod_containers, &name) else {
            causes.push(bad(format!("container {name} not found in Pod")));
            continue;
        };
        let Some(status) = by_name(statuses, &name) else {
            causes.push(bad(format!("not found {name} containerStatus in Pod Status")));
            continue;
        };
        let id = status.get("containerID").and_then(Value::as_str).unwrap_or_default();
        if id.is_empty() {
            causes.push(bad(format!(
                "no containerID in {name} containerStatus, maybe the container has not been initialized"
            )));
            continue;
        }
        let mut out = json!({"name": name});
        if let Some(pre_stop) = spec_c.pointer("/lifecycle/preStop").filter(|v| !v.is_null()) {
            let mut h = serde_json::Map::new();
            for k in ["exec", "httpGet", "tcpSocket"] {
                if let Some(v) = pre_stop.get(k).filter(|v| !v.is_null()) {
                    h.insert(k.to_owned(), v.clone());
                }
            }
            let http = h.contains_key("httpGet");
            out["preStop"] = Value::Object(h);
            if http && let Some(ports) = spec_c.get("ports").filter(|v| !v.is_null()) {
                out["ports"] = ports.clone();
            }
        }
        out["statusContext"] = json!({
            "containerID": id,
            "restartCount": status.get("restartCount").and_then(Value::as_i64).unwrap_or(0),
        });
        filled.push(out);
    }
    if !causes.is_empty() {
        return causes;
    }
    obj["spec"]["containers"] = Value::Array(filled);
    if !obj["spec"]["strategy"].is_object() {
        obj["spec"]["strategy"] = json!({});
    }
    if obj["spec"]["strategy"].get("terminationGracePeriodSeconds").is_none_or(Value::is_null)
        && let Some(g) = pod.pointer("/spec/terminationGracePeriodSeconds").filter(|v| !v.is_null())
    {
        obj["spec"]["strategy"]["terminationGracePeriodSeconds"] = g.clone();
    }
    if !obj["metadata"]["labels"].is_object() {
        obj["metadata"]["labels"] = json!({});
    }
    let uid = pod.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let labels = &mut obj["metadata"]["labels"];
    labels[POD_NAME_LABEL] = json!(pod_name);
    labels[ACTIVE_LABEL] = json!("true");
    labels[NODE_NAME_LABEL] = json!(node);
    labels[POD_UID_LABEL] = uid;
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "uid": "u-1"},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 7, "containers": [
                {"name": "app", "ports": [{"containerPort": 80}],
                 "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 80}}}},
                {"name": "side"},
            ]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "containerID": "runc://a-1", "restartCount": 2},
                {"name": "side", "containerID": "runc://s-1", "restartCount": 0},
            ]},
        })
    }

    fn crr(containers: Value) -> Value {
        json!({"metadata": {"name": "r", "namespace": "d"},
               "spec": {"podName": "p", "containers": containers,
                        "strategy": {"failurePolicy": "Fail"}}})
    }

    fn messages(c: &[Cause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn create_fills_labels_context_and_hooks() {
        let mut obj = crr(json!([{"name": "app"}, {"name": "side"}]));
        let c = admit(&mut obj, None, |n| (n == "p").then(pod));
        assert!(c.is_empty(), "{:?}", messages(&c));
        assert_eq!(
            obj["metadata"]["labels"],
            json!({POD_NAME_LABEL: "p", ACTIVE_LABEL: "true", NODE_NAME_LABEL: "n1", POD_UID_LABEL: "u-1"})
        );
        assert_eq!(obj["spec"]["strategy"]["terminationGracePeriodSeconds"], 7);
        assert_eq!(
            obj["spec"]["containers"],
            json!([
                {"name": "app", "preStop": {"httpGet": {"path": "/stop", "port": 80}},
                 "ports": [{"containerPort": 80}],
                 "statusContext": {"containerID": "runc://a-1", "restartCount": 2}},
                {"name": "side", "statusContext": {"containerID": "runc://s-1", "restartCount": 0}},
            ])
        );
    }

    #[test]
    fn create_refusals_say_what_is_wrong() {
        let cases: Vec<(Value, Option<Value>, &str)> = vec![
            (
                crr(json!([{"name": "nope"}])),
                Some(pod()),
                "spec.containers[0].name: Invalid value: \"nope\": container nope not found in Pod",
            ),
            (
                crr(json!([{"name": "app"}])),
                None,
                "spec.podName: Invalid value: \"p\": no found Pod named p",
            ),
            (
                crr(json!([{"name": "app"}, {"name": "app"}])),
                Some(pod()),
                "spec.containers[1].name: Invalid value: \"app\": can not recreate app multi times",
            ),
            (
                crr(
                    json!([{"name": "app", "statusContext": {"containerID": "x", "restartCount": 0}}]),
                ),
                Some(pod()),
                "spec.containers[0]: Forbidden: preStop, ports, statusContext in container are ready-only fields",
            ),
            (
                crr(json!([])),
                Some(pod()),
                "spec.containers: Required value: containers list can not be null",
            ),
        ];
        for (mut obj, p, want) in cases {
            let c = admit(&mut obj, None, |_| p.clone());
            assert_eq!(messages(&c), [want]);
        }
        let mut finished = pod();
        finished["status"]["phase"] = json!("Succeeded");
        let c = admit(&mut crr(json!([{"name": "app"}])), None, |_| Some(finished.clone()));
        assert!(messages(&c)[0].contains("inactive Pod"), "{:?}", messages(&c));
        let mut pending = pod();
        pending["spec"]["nodeName"] = Value::Null;
        let c = admit(&mut crr(json!([{"name": "app"}])), None, |_| Some(pending.clone()));
        assert!(messages(&c)[0].contains("pending Pod"), "{:?}", messages(&c));
        let mut fresh = pod();
        fresh["status"]["containerStatuses"][0]["containerID"] = json!("");
        let c = admit(&mut crr(json!([{"name": "app"}])), None, |_| Some(fresh.clone()));
        assert!(messages(&c)[0].contains("no containerID in app"), "{:?}", messages(&c));
    }

    #[test]
    fn update_keeps_spec_and_identity() {
        let mut old = crr(json!([{"name": "app"}]));
        assert!(admit(&mut old, None, |_| Some(pod())).is_empty());
        let mut status_only = old.clone();
        status_only["status"] = json!({"phase": "Recreating"});
        assert!(admit(&mut status_only, Some(&old), |_| None).is_empty());
        let mut changed = old.clone();
        changed["spec"]["activeDeadlineSeconds"] = json!(60);
        changed["metadata"]["labels"][NODE_NAME_LABEL] = json!("n2");
        assert_eq!(
            messages(&admit(&mut changed, Some(&old), |_| None)),
            [
                "spec: Forbidden: spec of ContainerRecreateRequest is immutable, except spec.containers",
                "metadata.labels: Forbidden: not allowed to update immutable label crr.apps.kruise.io/node-name",
            ]
        );
        let mut acquired = old.clone();
        acquired["metadata"]["annotations"] = json!({UNREADY_ACQUIRED_KEY: "2026-01-01T00:00:00Z"});
        let mut again = acquired.clone();
        again["metadata"]["annotations"][UNREADY_ACQUIRED_KEY] = json!("2027-01-01T00:00:00Z");
        assert_eq!(admit(&mut again, Some(&acquired), |_| None).len(), 1);
    }
}
