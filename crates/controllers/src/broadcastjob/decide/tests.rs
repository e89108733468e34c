//! Cases after OpenKruise's `broadcastjob_controller_test.go` (`TestReconcileJobCreatePodAbsolute`,
//! `…Percentage`, `…NodeSelector`, `…PodFailed`, `…Pause`, `…Deadline`, `TestJobFailed…`).

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}}))
    .unwrap()
}

fn job(spec: serde_json::Value, status: serde_json::Value) -> BroadcastJob {
    let mut s = json!({"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "i"}]}},
        "completionPolicy": {"type": "Always"}, "failurePolicy": {"type": "FailFast"}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": "bcj", "namespace": "default"},
        "spec": s, "status": status}))
    .unwrap()
}

fn pod(name: &str, node: &str, phase: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": phase}}))
    .unwrap()
}

fn summary(p: &Plan) -> String {
    let st = &p.status;
    let conds: Vec<String> = st.conditions.iter().flatten().map(|c| c.type_.clone()).collect();
    let events: Vec<&str> = p.events.iter().map(|e| e.1).collect();
    format!(
        "create={:?} delete={:?} desired={} active={} succeeded={} failed={} phase={} conds={conds:?} events={events:?} pause={}",
        p.create_on,
        p.delete,
        st.desired,
        st.active,
        st.succeeded,
        st.failed,
        st.phase.clone().unwrap_or_default(),
        p.pause,
    )
}

#[test]
fn reconcile_cases() {
    let n1 = node("n1", json!({"disk": "ssd"}), json!([]));
    let n2 = node("n2", json!({}), json!([]));
    let n3 =
        node("n3", json!({}), json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]));
    let nodes = [&n1, &n2, &n3];
    let cases: Vec<(&str, BroadcastJob, Vec<Pod>, &str)> = vec![
        (
            "a pod on every node that fits (the tainted one does not)",
            job(json!({}), json!({})),
            vec![],
            "create=[\"n1\", \"n2\"] delete=[] desired=2 active=0 succeeded=0 failed=0 phase=running conds=[] events=[] pause=false",
        ),
        (
            "parallelism 1",
            job(json!({"parallelism": 1}), json!({})),
            vec![],
            "create=[\"n1\"] delete=[] desired=2 active=0 succeeded=0 failed=0 phase=running conds=[] events=[] pause=false",
        ),
        (
            "parallelism 50% of 2",
            job(json!({"parallelism": "50%"}), json!({})),
            vec![pod("a", "n1", "Running")],
            "create=[] delete=[] desired=2 active=1 succeeded=0 failed=0 phase=running conds=[] events=[] pause=false",
        ),
        (
            "node selector",
            job(
                json!({"template": {"spec": {"restartPolicy": "Never", "nodeSelector": {"disk": "ssd"},
            "containers": [{"name": "c", "image": "i"}]}}}),
                json!({}),
            ),
            vec![],
            "create=[\"n1\"] delete=[] desired=1 active=0 succeeded=0 failed=0 phase=running conds=[] events=[] pause=false",
        ),
        (
            "a toleration admits the tainted node",
            job(
                json!({"template": {"spec": {"restartPolicy": "Never",
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "i"}]}}}),
                json!({}),
            ),
            vec![],
            "create=[\"n1\", \"n2\", \"n3\"] delete=[] desired=3 active=0 succeeded=0 failed=0 phase=running conds=[] events=[] pause=false",
        ),
        (
            "every node done: complete",
            job(json!({}), json!({})),
            vec![pod("a", "n1", "Succeeded"), pod("b", "n2", "Succeeded")],
            "create=[] delete=[] desired=2 active=0 succeeded=2 failed=0 phase=completed conds=[\"Complete\"] events=[\"JobComplete\"] pause=false",
        ),
        (
            "completion policy Never: never complete",
            job(json!({"completionPolicy": {"type": "Never"}}), json!({})),
            vec![pod("a", "n1", "Succeeded"), pod("b", "n2", "Succeeded")],
            "create=[] delete=[] desired=2 active=0 succeeded=2 failed=0 phase=running conds=[] events=[] pause=false",
        ),
        (
            "FailFast: a failed pod fails the job and the running one goes",
            job(json!({}), json!({})),
            vec![pod("a", "n1", "Failed"), pod("b", "n2", "Running")],
            "create=[] delete=[\"b\"] desired=2 active=0 succeeded=0 failed=2 phase=failed conds=[\"Failed\"] events=[\"failed pod is found\"] pause=false",
        ),
        (
            "Continue: the job goes on",
            job(json!({"failurePolicy": {"type": "Continue"}}), json!({})),
            vec![pod("a", "n1", "Failed"), pod("b", "n2", "Succeeded")],
            "create=[] delete=[] desired=2 active=0 succeeded=1 failed=1 phase=completed conds=[\"Complete\"] events=[\"JobComplete\"] pause=false",
        ),
        (
            "Pause: a failed pod pauses it",
            job(json!({"failurePolicy": {"type": "Pause"}}), json!({})),
            vec![pod("a", "n1", "Failed")],
            "create=[] delete=[] desired=2 active=0 succeeded=0 failed=1 phase=paused conds=[] events=[\"Paused\"] pause=true",
        ),
        (
            "paused: nothing created",
            job(json!({"paused": true}), json!({})),
            vec![],
            "create=[] delete=[] desired=2 active=0 succeeded=0 failed=0 phase=paused conds=[] events=[] pause=false",
        ),
        (
            "deadline passed",
            job(
                json!({"completionPolicy": {"type": "Always", "activeDeadlineSeconds": 60}}),
                json!({"startTime": "2026-01-01T00:00:00Z"}),
            ),
            vec![pod("a", "n1", "Running")],
            "create=[] delete=[\"a\"] desired=2 active=0 succeeded=0 failed=1 phase=failed conds=[\"Failed\"] events=[\"DeadlineExceeded\"] pause=false",
        ),
        (
            "a pod on a node that no longer fits is deleted",
            job(json!({}), json!({})),
            vec![pod("a", "n3", "Running")],
            "create=[\"n1\", \"n2\"] delete=[\"a\"] desired=2 active=0 succeeded=0 failed=1 phase=running conds=[] events=[] pause=false",
        ),
    ];
    for (name, j, pods, want) in cases {
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(summary(&plan(&j, &nodes, &refs, now())), want, "case {name:?}");
    }
}

#[test]
fn finished_job_goes_after_its_ttl() {
    let st = json!({"completionTime": "2026-01-01T00:09:50Z",
        "conditions": [{"type": "Complete", "status": "True"}]});
    let j = job(
        json!({"completionPolicy": {"type": "Always", "ttlSecondsAfterFinished": 30}}),
        st.clone(),
    );
    let p = plan(&j, &[], &[], now());
    assert_eq!((p.delete_job, p.requeue), (false, Some(Duration::from_secs(20))));
    let j = job(json!({"completionPolicy": {"type": "Always", "ttlSecondsAfterFinished": 5}}), st);
    assert!(plan(&j, &[], &[], now()).delete_job);
}
