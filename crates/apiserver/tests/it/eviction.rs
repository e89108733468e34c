//! `pods/eviction` against `policy/v1` PodDisruptionBudgets through the real `kube` client
//! (issue 17, part 7), with budgets whose status the test writes (no controller runs here):
//! within the budget the pod is deleted and the budget's `disruptionsAllowed` and
//! `disruptedPods` change in the same step; beyond it the answer is upstream's 429 with the
//! `DisruptionBudget` cause; an unready pod under `AlwaysAllow`, a finished pod, and a pod no
//! budget covers go at once; two budgets are upstream's 500; dry run changes nothing.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kinetic_testkit::TestServer;
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn pod(pods: &Api<Pod>, name: &str, app: &str, ready: bool, phase: &str) {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let status = json!({"status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
}

async fn budget(
    pdbs: &Api<PodDisruptionBudget>,
    name: &str,
    spec: serde_json::Value,
    status: serde_json::Value,
) {
    let b: PodDisruptionBudget =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    pdbs.create(&PostParams::default(), &b).await.unwrap();
    let mut status = status;
    status["observedGeneration"] = json!(1);
    pdbs.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
        .await
        .unwrap();
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_deletes_within_the_budget_and_is_429_beyond_it() {
    let t = TestServer::start().await.unwrap();
    // Without kube's retry of 429s (it would retry a refused eviction for minutes); client-go
    // retries only answers with a Retry-After header, which budget refusals do not carry.
    let client = kinetic_testkit::client_without_retry(t.kubeconfig()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for n in ["a0", "a1", "a2"] {
        pod(&pods, n, "a", true, "Running").await;
    }
    budget(
        &pdbs,
        "a",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "a"}}}),
        json!({"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 3}),
    )
    .await;

    // Dry run: nothing changes.
    // (kube sends `deleteOptions` as `delete_options`, which servers ignore: dry run through
    // the query.)
    let dry = EvictParams {
        post_options: PostParams { dry_run: true, ..PostParams::default() },
        ..EvictParams::default()
    };
    pods.evict("a0", &dry).await.unwrap();
    assert_eq!(pdbs.get("a").await.unwrap().status.unwrap().disruptions_allowed, 1);
    assert!(pods.get("a0").await.unwrap().metadata.deletion_timestamp.is_none());

    pods.evict("a0", &EvictParams::default()).await.unwrap();
    let st = pdbs.get("a").await.unwrap().status.unwrap();
    assert_eq!(st.disruptions_allowed, 0);
    assert!(st.disrupted_pods.unwrap_or_default().contains_key("a0"));
    let cond = st.conditions.unwrap_or_default();
    assert!(
        cond.iter().any(|c| c.type_ == "DisruptionAllowed"
            && c.status == "False"
            && c.reason == "InsufficientPods"),
        "{cond:?}"
    );
    let a0 = pods.get("a0").await.unwrap();
    assert!(a0.metadata.deletion_timestamp.is_some(), "a0 is being deleted");
    let conds = a0.status.unwrap().conditions.unwrap_or_default();
    assert!(
        conds.iter().any(|c| c.type_ == "DisruptionTarget"
            && c.reason.as_deref() == Some("EvictionByEvictionAPI"))
    );

    let s = api_error(pods.evict("a1", &EvictParams::default()).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(s.message, "Cannot evict pod as it would violate the pod's disruption budget.");
    let causes = s.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
    assert_eq!(causes.len(), 1, "{s:?}");
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget a needs 2 healthy pods and has 3 currently"
    );
    assert!(pods.get("a1").await.unwrap().metadata.deletion_timestamp.is_none());

    // A budget whose status is behind its spec: still being processed.
    pdbs.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"minAvailable": 1}})))
        .await
        .unwrap();
    pdbs.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"disruptionsAllowed": 1}})),
    )
    .await
    .unwrap();
    let s = api_error(pods.evict("a1", &EvictParams::default()).await.unwrap_err());
    assert_eq!(s.code, 429);
    let causes = s.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
    assert_eq!(
        causes[0].message,
        "The disruption budget a is still being processed by the server."
    );

    // An unready pod under AlwaysAllow goes without taking from the budget.
    pod(&pods, "b0", "b", false, "Running").await;
    budget(
        &pdbs,
        "b",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "b"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
        json!({"currentHealthy": 0, "desiredHealthy": 1, "disruptionsAllowed": 0, "expectedPods": 1}),
    )
    .await;
    pods.evict("b0", &EvictParams::default()).await.unwrap();
    assert!(pods.get("b0").await.unwrap().metadata.deletion_timestamp.is_some());
    assert_eq!(pdbs.get("b").await.unwrap().status.unwrap().disruptions_allowed, 0);

    // A finished pod is always evictable; a pod two budgets cover is 500.
    pod(&pods, "c0", "c", true, "Succeeded").await;
    budget(
        &pdbs,
        "c1",
        json!({"maxUnavailable": 0, "selector": {"matchLabels": {"app": "c"}}}),
        json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}),
    )
    .await;
    pods.evict("c0", &EvictParams::default()).await.unwrap();
    pod(&pods, "c2", "c", true, "Running").await;
    budget(&pdbs, "c2", json!({"maxUnavailable": 0, "selector": {}}), json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0})).await;
    let s = api_error(pods.evict("c2", &EvictParams::default()).await.unwrap_err());
    assert_eq!(s.code, 500);
    assert_eq!(
        s.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );

    // Upstream's validation and printer columns.
    let bad: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "bad"},
        "spec": {"minAvailable": 1, "maxUnavailable": "120%"}}))
    .unwrap();
    let s = api_error(pdbs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("minAvailable and maxUnavailable cannot be both set"),
        "{}",
        s.message
    );
    assert!(
        s.message.contains(
            "spec.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%"
        ),
        "{}",
        s.message
    );
    let table = t.kubectl_ok(&["get", "pdb", "a"]).await.unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["a", "1", "N/A", "1"], "{table}");
    // kubectl drain finds the eviction subresource in discovery.
    let raw = t.kubectl_ok(&["get", "--raw", "/api/v1"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let ev = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .unwrap();
    assert_eq!(
        (&ev["group"], &ev["version"], &ev["kind"]),
        (&json!("policy"), &json!("v1"), &json!("Eviction"))
    );
}
