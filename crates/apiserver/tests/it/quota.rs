//! ResourceQuota and LimitRange through `kube` and `kubectl`: creation beyond a quota is
//! refused with upstream's 403, `status.used` follows creates and deletes, concurrent creates
//! at the limit admit exactly the quota, LimitRange defaults and bounds apply to pods.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota,
};
use kinetic_testkit::TestServer;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": resources}]},
    }))
    .unwrap()
}

fn quota(name: &str, hard: Value) -> ResourceQuota {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"hard": hard}})).unwrap()
}

async fn namespace(c: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(c.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

/// Polls the quota (every 20 ms, at most 10 s) until `status.used` is `want`.
async fn wait_used(quotas: &Api<ResourceQuota>, name: &str, want: Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let q = quotas.get(name).await.unwrap();
        let used = serde_json::to_value(q.status.as_ref().and_then(|s| s.used.clone())).unwrap();
        if used == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "quota {name}: used {used}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn forbidden(err: kube::Error) -> String {
    match err {
        kube::Error::Api(s) if s.code == 403 && s.reason == "Forbidden" => s.message,
        other => panic!("want 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn creation_beyond_quota_is_refused_with_upstreams_message() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    namespace(&c, "team").await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), "team");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "team");
    let q = quota("objects", json!({"pods": "2", "count/deployments.apps": "1"}));
    quotas.create(&pp, &q).await.unwrap();
    wait_used(&quotas, "objects", json!({"count/deployments.apps": "0", "pods": "0"})).await;

    pods.create(&pp, &pod("a", json!({}))).await.unwrap();
    pods.create(&pp, &pod("b", json!({}))).await.unwrap();
    let err = pods.create(&pp, &pod("c", json!({}))).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "pods \"c\" is forbidden: exceeded quota: objects, requested: pods=1, used: pods=2, limited: pods=2"
    );
    // kubectl shows the same answer.
    let manifest = serde_json::to_string(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "d", "namespace": "team"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    .unwrap();
    let out = t.kubectl_stdin(&["create", "-f", "-"], Some(&manifest)).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"d\" is forbidden: exceeded quota: objects, requested: pods=1, used: pods=2, limited: pods=2"),
        "{stderr}"
    );

    // `count/<resource>.<group>` counts any kind.
    let dep = |name: &str| -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}}))
        .unwrap()
    };
    deployments.create(&pp, &dep("one")).await.unwrap();
    let err = deployments.create(&pp, &dep("two")).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "deployments.apps \"two\" is forbidden: exceeded quota: objects, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"
    );

    // A quota on compute resources needs every container to set them.
    let compute = quota("compute", json!({"requests.cpu": "1", "limits.memory": "1Gi"}));
    quotas.create(&pp, &compute).await.unwrap();
    wait_used(&quotas, "compute", json!({"limits.memory": "0", "requests.cpu": "0"})).await;
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    wait_used(&quotas, "objects", json!({"count/deployments.apps": "1", "pods": "1"})).await;
    let err = pods.create(&pp, &pod("bare", json!({}))).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"
    );
    let big = json!({"requests": {"cpu": "2"}, "limits": {"memory": "512Mi"}});
    let err = pods.create(&pp, &pod("big", big)).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "pods \"big\" is forbidden: exceeded quota: compute, requested: requests.cpu=2, used: requests.cpu=0, limited: requests.cpu=1"
    );
    // A dry run is checked but charges nothing.
    let fits = json!({"requests": {"cpu": "500m"}, "limits": {"memory": "512Mi"}});
    let dry = PostParams { dry_run: true, ..Default::default() };
    pods.create(&dry, &pod("fits", fits.clone())).await.unwrap();
    pods.create(&pp, &pod("fits", fits)).await.unwrap();
    let q = quotas.get("compute").await.unwrap();
    let used = serde_json::to_value(q.status.unwrap().used).unwrap();
    assert_eq!(used, json!({"limits.memory": "512Mi", "requests.cpu": "500m"}));
    t.shutdown().await;
}

#[tokio::test]
async fn status_used_follows_creates_and_deletes() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    namespace(&c, "usage").await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), "usage");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "usage");
    let hard = json!({"pods": "10", "requests.cpu": "4", "requests.memory": "4Gi",
                      "limits.cpu": "8", "limits.memory": "8Gi"});
    quotas.create(&pp, &quota("compute", hard.clone())).await.unwrap();
    let zero = json!({"limits.cpu": "0", "limits.memory": "0", "pods": "0",
                      "requests.cpu": "0", "requests.memory": "0"});
    wait_used(&quotas, "compute", zero.clone()).await;
    let q = quotas.get("compute").await.unwrap();
    assert_eq!(
        serde_json::to_value(q.status.unwrap().hard).unwrap(),
        hard,
        "status.hard mirrors spec.hard"
    );

    let res = json!({"requests": {"cpu": "250m", "memory": "64Mi"},
                     "limits": {"cpu": "500m", "memory": "128Mi"}});
    pods.create(&pp, &pod("one", res.clone())).await.unwrap();
    pods.create(&pp, &pod("two", res)).await.unwrap();
    let two = json!({"limits.cpu": "1", "limits.memory": "256Mi", "pods": "2",
                     "requests.cpu": "500m", "requests.memory": "128Mi"});
    wait_used(&quotas, "compute", two).await;

    let table = t.kubectl_ok(&["get", "quota", "-n", "usage"]).await.unwrap();
    let header = table.lines().next().unwrap();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["NAME", "AGE", "REQUEST", "LIMIT"]);
    assert!(
        table.contains("pods: 2/10, requests.cpu: 500m/4, requests.memory: 128Mi/4Gi")
            && table.contains("limits.cpu: 1/8, limits.memory: 256Mi/8Gi"),
        "{table}"
    );
    let describe = t.kubectl_ok(&["describe", "quota", "compute", "-n", "usage"]).await.unwrap();
    let rows: Vec<Vec<&str>> =
        describe.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect();
    for want in [
        ["Resource", "Used", "Hard"],
        ["limits.memory", "256Mi", "8Gi"],
        ["pods", "2", "10"],
        ["requests.cpu", "500m", "4"],
    ] {
        assert!(rows.iter().any(|r| r == &want), "{want:?} in\n{describe}");
    }

    // kubectl's imperative create (a protobuf body) makes a quota the controller syncs.
    t.kubectl_ok(&["create", "quota", "small", "--hard=configmaps=5,pods=3", "-n", "usage"])
        .await
        .unwrap();
    wait_used(&quotas, "small", json!({"configmaps": "1", "pods": "2"})).await;

    // Deletes are given back by the controller.
    pods.delete("one", &DeleteParams::default()).await.unwrap();
    let one = json!({"limits.cpu": "500m", "limits.memory": "128Mi", "pods": "1",
                     "requests.cpu": "250m", "requests.memory": "64Mi"});
    wait_used(&quotas, "compute", one).await;
    t.kubectl_ok(&["delete", "pod", "two", "-n", "usage"]).await.unwrap();
    wait_used(&quotas, "compute", zero).await;
    t.shutdown().await;
}

#[tokio::test]
async fn concurrent_creates_at_the_limit_admit_exactly_the_quota() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    namespace(&c, "race").await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), "race");
    let maps: Api<ConfigMap> = Api::namespaced(c.clone(), "race");
    quotas.create(&pp, &quota("pods", json!({"pods": "5"}))).await.unwrap();
    wait_used(&quotas, "pods", json!({"pods": "0"})).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let pods: Api<Pod> = Api::namespaced(c.clone(), "race");
        tasks.spawn(async move {
            pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({}))).await
        });
    }
    let (mut admitted, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => admitted += 1,
            Err(e) => {
                let msg = forbidden(e);
                assert!(
                    msg.contains(
                        "exceeded quota: pods, requested: pods=1, used: pods=5, limited: pods=5"
                    ),
                    "{msg}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (5, 19));
    let listed = Api::<Pod>::namespaced(c.clone(), "race").list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 5);
    wait_used(&quotas, "pods", json!({"pods": "5"})).await;
    // Objects the quota does not name are not held back.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "free"}})).unwrap();
    maps.create(&pp, &cm).await.unwrap();
    t.shutdown().await;
}

#[tokio::test]
async fn limit_range_defaults_and_bounds_apply_to_pods_and_claims() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    namespace(&c, "limited").await;
    let pp = PostParams::default();
    let ranges: Api<LimitRange> = Api::namespaced(c.clone(), "limited");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "limited");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "limited");
    let lr: LimitRange =
        serde_json::from_value(json!({"metadata": {"name": "defaults"}, "spec": {"limits": [
        {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
         "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
         "min": {"cpu": "100m"}, "max": {"cpu": "2", "memory": "1Gi"}},
        {"type": "PersistentVolumeClaim", "max": {"storage": "10Gi"}}]}}))
        .unwrap();
    ranges.create(&pp, &lr).await.unwrap();

    let p = pods.create(&pp, &pod("plain", json!({}))).await.unwrap();
    let r = serde_json::to_value(&p.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(
        r,
        json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}})
    );
    assert_eq!(
        p.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );

    let err =
        pods.create(&pp, &pod("small", json!({"requests": {"cpu": "50m"}}))).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "pods \"small\" is forbidden: minimum cpu usage per Container is 100m, but request is 50m"
    );
    let err = pods.create(&pp, &pod("huge", json!({"limits": {"cpu": "4"}}))).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "pods \"huge\" is forbidden: maximum cpu usage per Container is 2, but limit is 4"
    );
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "big"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}))
    .unwrap();
    let err = claims.create(&pp, &claim).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "persistentvolumeclaims \"big\" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
    );

    // Invalid ranges are refused as upstream validates them.
    let bad: LimitRange =
        serde_json::from_value(json!({"metadata": {"name": "bad"}, "spec": {"limits": [
        {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}}))
        .unwrap();
    let err = ranges.create(&pp, &bad).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422
        && s.message.contains("spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1")),
        "{err:?}"
    );
    let described =
        t.kubectl_ok(&["describe", "limits", "defaults", "-n", "limited"]).await.unwrap();
    let rows: Vec<Vec<&str>> =
        described.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect();
    let want = ["Container", "cpu", "100m", "2", "100m", "500m", "-"];
    assert!(rows.iter().any(|r| r == &want), "{want:?} in\n{described}");
    let listed = t.kubectl_ok(&["get", "limits", "-n", "limited"]).await.unwrap();
    assert!(
        listed.starts_with("NAME") && listed.contains("CREATED AT") && listed.contains("defaults"),
        "{listed}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn claim_growth_is_charged_and_status_writes_are_not_admitted() {
    use kube::api::{Patch, PatchParams};
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    namespace(&c, "claims").await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), "claims");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "claims");
    let ranges: Api<LimitRange> = Api::namespaced(c.clone(), "claims");
    quotas.create(&pp, &quota("storage", json!({"requests.storage": "10Gi"}))).await.unwrap();
    wait_used(&quotas, "storage", json!({"requests.storage": "0"})).await;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "4Gi"}}}}))
    .unwrap();
    claims.create(&pp, &claim).await.unwrap();
    wait_used(&quotas, "storage", json!({"requests.storage": "4Gi"})).await;
    // Bind it (only bound claims may grow), through spec and status.
    let merge = |v: Value| Patch::Merge(v);
    let p = PatchParams::default();
    claims.patch("data", &p, &merge(json!({"spec": {"volumeName": "pv-1"}}))).await.unwrap();
    claims.patch_status("data", &p, &merge(json!({"status": {"phase": "Bound"}}))).await.unwrap();

    let grow = |s: &str| merge(json!({"spec": {"resources": {"requests": {"storage": s}}}}));
    let err = claims.patch("data", &p, &grow("12Gi")).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        "persistentvolumeclaims \"data\" is forbidden: exceeded quota: storage, requested: requests.storage=8Gi, used: requests.storage=4Gi, limited: requests.storage=10Gi"
    );
    claims.patch("data", &p, &grow("8Gi")).await.unwrap();
    wait_used(&quotas, "storage", json!({"requests.storage": "8Gi"})).await;

    // A LimitRange added later does not stop the claim's status writes (upstream's plugins
    // ignore subresources), but does stop spec writes that break it.
    let lr: LimitRange = serde_json::from_value(json!({"metadata": {"name": "small"},
        "spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "5Gi"}}]}}))
    .unwrap();
    ranges.create(&pp, &lr).await.unwrap();
    let st = json!({"status": {"phase": "Bound", "capacity": {"storage": "8Gi"}}});
    claims.patch_status("data", &p, &merge(st)).await.unwrap();
    let err = claims
        .patch("data", &p, &merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap_err();
    assert_eq!(
        forbidden(err),
        "persistentvolumeclaims \"data\" is forbidden: maximum storage usage per PersistentVolumeClaim is 5Gi, but request is 8Gi"
    );
    t.shutdown().await;
}

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

#[tokio::test]
async fn object_count_quotas_cover_custom_resources() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], WIDGETS).await.unwrap();
    t.kubectl_ok(&["wait", "--for=condition=Established", "crd/widgets.example.com"])
        .await
        .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), "default");
    let q = quota("crd", json!({"count/widgets.example.com": "1"}));
    quotas.create(&PostParams::default(), &q).await.unwrap();
    wait_used(&quotas, "crd", json!({"count/widgets.example.com": "0"})).await;
    let widget =
        |n: &str| format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {n}}}\n");
    t.kubectl_stdin_ok(&["create", "-f", "-"], &widget("w1")).await.unwrap();
    wait_used(&quotas, "crd", json!({"count/widgets.example.com": "1"})).await;
    let out = t.kubectl_stdin(&["create", "-f", "-"], Some(&widget("w2"))).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("widgets.example.com \"w2\" is forbidden: exceeded quota: crd, requested: count/widgets.example.com=1, used: count/widgets.example.com=1, limited: count/widgets.example.com=1"),
        "{stderr}"
    );
    t.kubectl_ok(&["delete", "widget", "w1"]).await.unwrap();
    wait_used(&quotas, "crd", json!({"count/widgets.example.com": "0"})).await;
    t.kubectl_stdin_ok(&["create", "-f", "-"], &widget("w2")).await.unwrap();
    t.shutdown().await;
}
