//! `autoscaling/v2` HorizontalPodAutoscaler through the real kubectl (issue 13, part 2):
//! `kubectl autoscale` creates one with upstream's defaults, `kubectl get hpa` prints upstream's
//! columns, invalid specs are refused with upstream's messages, and `metrics.k8s.io` is
//! discovered (what `kubectl top` checks before it asks).

use kinetic_testkit::TestServer;

const DEPLOY: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "web", "namespace": "default"},
  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}},
      "spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": "100m"}}}]}}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_autoscale_creates_a_v2_hpa_that_kubectl_get_prints_as_upstream() {
    let t = TestServer::start().await.unwrap();
    t.kubectl_stdin_ok(&["apply", "-f", "-"], DEPLOY).await.unwrap();
    let out = t
        .kubectl_ok(&["autoscale", "deployment", "web", "--cpu-percent=50", "--min=1", "--max=4"])
        .await
        .unwrap();
    assert!(out.contains("autoscaled"), "{out}");
    let hpa: serde_json::Value =
        serde_json::from_str(&t.kubectl_ok(&["get", "hpa", "web", "-o", "json"]).await.unwrap())
            .unwrap();
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(hpa["spec"]["maxReplicas"], 4);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
    assert_eq!(hpa["metadata"]["generation"], 1);
    let table = t.kubectl_ok(&["get", "hpa"]).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["web", "Deployment/web", "cpu:", "<unknown>/50%", "1", "4", "0"],
        "{table}"
    );

    // Upstream's validation messages.
    let bad = r#"{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
      "metadata": {"name": "bad", "namespace": "default"},
      "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 3, "maxReplicas": 2,
        "behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}}}}"#;
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(bad)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "spec.behavior.scaleDown.policies[0].value: Invalid value: 0: must be greater than zero"
        ),
        "{err}"
    );

    // A behavior is defaulted per direction.
    let with_behavior = r#"{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
      "metadata": {"name": "b", "namespace": "default"},
      "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}"#;
    t.kubectl_stdin_ok(&["apply", "-f", "-"], with_behavior).await.unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&t.kubectl_ok(&["get", "hpa", "b", "-o", "json"]).await.unwrap())
            .unwrap();
    assert_eq!(b["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    assert_eq!(b["spec"]["behavior"]["scaleUp"]["policies"].as_array().unwrap().len(), 2);
    assert_eq!(b["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 60);

    // The resource metrics API is discovered; with no nodes there is nothing to show.
    let apis = t.kubectl_ok(&["api-versions"]).await.unwrap();
    assert!(apis.lines().any(|l| l == "metrics.k8s.io/v1beta1"), "{apis}");
    assert!(apis.lines().any(|l| l == "autoscaling/v2"), "{apis}");
    let res = t.kubectl_ok(&["api-resources", "--api-group=metrics.k8s.io"]).await.unwrap();
    assert!(res.contains("PodMetrics") && res.contains("NodeMetrics"), "{res}");
}

/// `autoscaling/v1` is served beside v2 and stored as v2 (issue 13, part 2): a v1 manifest
/// applies; v2 readers see its target as a Resource metric; a v2-only metric set through v2
/// survives a v1 client's read-modify-write (it travels in the v1 annotations, as upstream's
/// conversion carries it); a v1 merge patch changes the target; v2 stays the preferred version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_v1_is_served_beside_v2_and_converted_both_ways() {
    let t = TestServer::start().await.unwrap();
    let v1 = r#"{"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
      "metadata": {"name": "old", "namespace": "default"},
      "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}}"#;
    t.kubectl_stdin_ok(&["apply", "-f", "-"], v1).await.unwrap();
    let get = |version: &'static str| {
        let t = &t;
        async move {
            let out = t
                .kubectl_ok(&[
                    "get",
                    &format!("horizontalpodautoscalers.{version}.autoscaling"),
                    "old",
                    "-o",
                    "json",
                ])
                .await
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        }
    };
    let as_v2 = get("v2").await;
    assert_eq!(as_v2["apiVersion"], "autoscaling/v2");
    let metric = &as_v2["spec"]["metrics"][0];
    assert_eq!(metric["type"], "Resource", "{as_v2}");
    assert_eq!(metric["resource"]["name"], "cpu");
    assert_eq!(metric["resource"]["target"]["averageUtilization"], 70);
    assert!(as_v2["spec"].get("targetCPUUtilizationPercentage").is_none(), "{as_v2}");
    let as_v1 = get("v1").await;
    assert_eq!(as_v1["apiVersion"], "autoscaling/v1");
    assert_eq!(as_v1["spec"]["targetCPUUtilizationPercentage"], 70, "{as_v1}");
    assert!(as_v1["spec"].get("metrics").is_none(), "{as_v1}");

    // A second, memory metric through v2; a v1 client then changes maxReplicas with a merge
    // patch of its view: the memory metric is kept.
    t.kubectl_ok(&[
        "patch",
        "horizontalpodautoscalers.v2.autoscaling",
        "old",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/spec/metrics/-", "value": {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}}]"#,
    ])
    .await
    .unwrap();
    t.kubectl_ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "old",
        "--type=merge",
        "-p",
        r#"{"spec": {"maxReplicas": 8, "targetCPUUtilizationPercentage": 60}}"#,
    ])
    .await
    .unwrap();
    let after = get("v2").await;
    assert_eq!(after["spec"]["maxReplicas"], 8, "{after}");
    let metrics = after["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2, "{after}");
    let cpu = metrics.iter().find(|m| m["resource"]["name"] == "cpu").unwrap();
    assert_eq!(cpu["resource"]["target"]["averageUtilization"], 60);
    assert!(metrics.iter().any(|m| m["resource"]["name"] == "memory"), "{after}");
    assert!(
        after["metadata"]["annotations"]
            .as_object()
            .is_none_or(|a| a.keys().all(|k| !k.starts_with("autoscaling.alpha"))),
        "conversion annotations are not stored: {after}"
    );

    // Discovery: both versions, v2 preferred (what `kubectl get hpa` reads).
    let apis = t.kubectl_ok(&["api-versions"]).await.unwrap();
    assert!(apis.lines().any(|l| l == "autoscaling/v1"), "{apis}");
    let group = t.kubectl_ok(&["get", "--raw", "/apis/autoscaling"]).await.unwrap();
    let group: serde_json::Value = serde_json::from_str(&group).unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group}");
    // A list through v1 serves v1 objects.
    let list = t
        .kubectl_ok(&["get", "--raw", "/apis/autoscaling/v1/horizontalpodautoscalers"])
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["items"][0]["spec"]["targetCPUUtilizationPercentage"], 60, "{list}");
    t.kubectl_ok(&["delete", "horizontalpodautoscalers.v1.autoscaling", "old"]).await.unwrap();
}
