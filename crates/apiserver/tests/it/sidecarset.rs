//! OpenKruise's SidecarSet on the embedded server (issue 17): the CRD serves v1alpha1 and
//! v1beta1, the webhook's validation refuses bad SidecarSets, and the pod strategy's create
//! admission injects matching pods only, once.

use kinetic_api::kruise::sidecarset::SidecarSet;
use kinetic_testkit::TestServer;
use serde_json::{Value, json};

async fn install(t: &TestServer) {
    let crd = serde_json::to_string(&SidecarSet::crd_all_versions()).unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &crd).await.unwrap();
    t.kubectl_ok(&["wait", "--for=condition=Established", "crd/sidecarsets.apps.kruise.io"])
        .await
        .unwrap();
}

fn pod(name: &str, app: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]}})
    .to_string()
}

async fn get(t: &TestServer, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&t.kubectl_ok(&a).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecarset_injects_matching_pods_once_and_the_webhook_refuses_bad_specs() {
    let t = TestServer::start().await.unwrap();
    install(&t).await;
    let bad = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "SidecarSet",
        "metadata": {"name": "bad"}, "spec": {"containers": [{"name": "x", "image": "busybox"}]}});
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(&bad.to_string())).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no selector defined for SidecarSet"), "{err}");

    let ss = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
        "metadata": {"name": "log"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "containers": [{"name": "log", "image": "busybox:1", "command": ["sleep", "1d"],
                "shareVolumePolicy": {"type": "enabled"},
                "transferEnv": [{"sourceContainerName": "app", "envName": "A"}]}],
            "volumes": [{"name": "logs", "emptyDir": {}}]}});
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &ss.to_string()).await.unwrap();
    // Stored as v1alpha1 with the webhook's defaults; printed with upstream's columns.
    let stored = get(&t, &["sidecarsets.v1alpha1.apps.kruise.io", "log"]).await;
    assert_eq!(
        stored["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "maxUnavailable": 1})
    );
    let table = t.kubectl_ok(&["get", "sidecarsets"]).await.unwrap();
    assert!(table.starts_with("NAME") && table.contains("MATCHED"), "{table}");

    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod("web", "web")).await.unwrap();
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod("other", "other")).await.unwrap();
    let web = get(&t, &["pod", "web"]).await;
    let names: Vec<&str> = web["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["log", "app"]);
    let log = &web["spec"]["containers"][0];
    assert_eq!(
        log["env"],
        json!([{"name": "IS_INJECTED", "value": "true"}, {"name": "A", "value": "1"}])
    );
    // Pod defaults apply to the injected container too.
    assert_eq!(log["imagePullPolicy"], "IfNotPresent");
    assert_eq!(web["metadata"]["annotations"]["kruise.io/sidecarset-injected-list"], "log");
    assert!(
        web["metadata"]["annotations"]["kruise.io/sidecarset-hash"]
            .as_str()
            .unwrap()
            .contains("\"log\"")
    );
    assert!(web["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "logs"));
    let other = get(&t, &["pod", "other"]).await;
    assert_eq!(other["spec"]["containers"].as_array().unwrap().len(), 1);
    assert!(other["metadata"]["annotations"].get("kruise.io/sidecarset-injected-list").is_none());

    // A pod that already lists the SidecarSet (admitted by another injector) is left alone.
    let mut again: Value = serde_json::from_str(&pod("again", "web")).unwrap();
    again["metadata"]["annotations"] = json!({"kruise.io/sidecarset-injected-list": "log"});
    t.kubectl_stdin_ok(&["create", "-f", "-"], &again.to_string()).await.unwrap();
    let again = get(&t, &["pod", "again"]).await;
    assert_eq!(again["spec"]["containers"].as_array().unwrap().len(), 1);
    t.shutdown().await;
}

/// `resourcesPolicy` (OpenKruise v1.9): the sidecar's resources are computed at injection from
/// the app containers'; a policy with `resources` too is refused with the SidecarSet, and a pod
/// none of whose containers the regex names is refused, as upstream's webhook refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecarset_resources_policy_computes_the_sidecars_resources_at_injection() {
    let t = TestServer::start().await.unwrap();
    install(&t).await;
    let ss = |name: &str, app: &str, regex: &str, resources: Value| {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "SidecarSet",
            "metadata": {"name": name}, "spec": {
                "selector": {"matchLabels": {"app": app}},
                "containers": [{"name": "proxy", "image": "busybox:1", "resources": resources,
                    "resourcesPolicy": {"targetContainersMode": "max", "targetContainersNameRegex": regex,
                        "resourcesExpr": {"limits": {"cpu": "max(cpu*50%, 50m)", "memory": "memory*25%"},
                                          "requests": {"cpu": "cpu*10%", "memory": "64Mi"}}}}]}})
        .to_string()
    };
    let out = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&ss("both", "x", "^app$", json!({"limits": {"cpu": "1"}}))),
        )
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("resourcesPolicy and resources cannot be configured together"),
        "{err}"
    );
    let out = t
        .kubectl_stdin(&["apply", "-f", "-"], Some(&ss("empty", "x", "", json!({}))))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("targetContainersNameRegex"), "{err}");

    t.kubectl_stdin_ok(&["apply", "-f", "-"], &ss("sized", "sized", "^app", json!({})))
        .await
        .unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &ss("nomatch", "nomatch", "^db$", json!({})))
        .await
        .unwrap();
    let pod = |name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"containers": [
                {"name": "app", "image": "busybox", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "1"}}},
                {"name": "app-helper", "image": "busybox", "resources": {"limits": {"cpu": "500m", "memory": "2Gi"}, "requests": {"cpu": "200m"}}}]}})
        .to_string()
    };
    t.kubectl_stdin_ok(&["create", "-f", "-"], &pod("sized", "sized")).await.unwrap();
    let p = get(&t, &["pod", "sized"]).await;
    assert_eq!(p["spec"]["containers"][0]["name"], "proxy");
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        json!({"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
    );
    let out =
        t.kubectl_stdin(&["create", "-f", "-"], Some(&pod("refused", "nomatch"))).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no containers match the regex pattern"),
        "{err}"
    );
    let out = t.kubectl(&["get", "pod", "refused"]).await.unwrap();
    assert!(!out.status.success(), "the refused pod was not stored");
}
