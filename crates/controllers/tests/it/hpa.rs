//! The HorizontalPodAutoscaler controller's `Pods`, `Object` and `External` metrics on the
//! embedded server, which serves neither `custom.metrics.k8s.io` nor `external.metrics.k8s.io`
//! (a real cluster's adapter does): each reports `ScalingActive=False` with upstream's reason and
//! its message naming the metric and the API that failed, and a Warning Event of that reason.

use std::time::Duration;

use kinetic_controllers::{cloneset, hpa};
use kinetic_testkit::TestServer;
use serde_json::Value;

const CLONESET: &str = r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: busybox}]}
"#;

fn hpa_manifest(name: &str, metric: &str) -> String {
    format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}, namespace: default}}
spec:
  scaleTargetRef: {{apiVersion: apps.kruise.io/v1alpha1, kind: CloneSet, name: web}}
  minReplicas: 1
  maxReplicas: 3
  metrics: [{metric}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_object_and_external_metrics_without_an_adapter_report_upstreams_reasons() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = rx.await;
    };
    let task = tokio::spawn(async move {
        let (a, b) = tokio::join!(
            cloneset::run(client.clone(), shutdown),
            hpa::run(client.clone(), std::future::pending())
        );
        a.and(b)
    });
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CLONESET).await.unwrap();
    let cases = [
        (
            "pods",
            r#"{type: Pods, pods: {metric: {name: rps}, target: {type: AverageValue, averageValue: "10"}}}"#,
            "FailedGetPodsMetric",
            "the HPA was unable to compute the replica count: unable to get metric rps: unable to fetch metrics from custom metrics API: ",
        ),
        (
            "object",
            r#"{type: Object, object: {metric: {name: hits}, describedObject: {apiVersion: v1, kind: Service, name: web}, target: {type: Value, value: "100"}}}"#,
            "FailedGetObjectMetric",
            "the HPA was unable to compute the replica count: unable to get metric hits: Service on default web/unable to fetch metrics from custom metrics API: ",
        ),
        (
            "external",
            r#"{type: External, external: {metric: {name: queue, selector: {matchLabels: {q: jobs}}}, target: {type: AverageValue, averageValue: "5"}}}"#,
            "FailedGetExternalMetric",
            "the HPA was unable to compute the replica count: unable to get external metric default/queue/q=jobs: unable to fetch metrics from external metrics API: ",
        ),
    ];
    for (name, metric, _, _) in &cases {
        server.kubectl_stdin_ok(&["apply", "-f", "-"], &hpa_manifest(name, metric)).await.unwrap();
    }
    for (name, _, reason, message) in &cases {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let cond = loop {
            let s = server.kubectl_ok(&["get", "hpa", name, "-o", "json"]).await.unwrap();
            let v: Value = serde_json::from_str(&s).unwrap();
            let c = v["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive").cloned());
            if let Some(c) = c.filter(|c| c["status"] == "False") {
                break c;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name}: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(cond["reason"], *reason, "{cond}");
        let got = cond["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{name}: {got}");
        let events = server
            .kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}"),
            ])
            .await
            .unwrap();
        assert!(events.contains(reason), "{events}");
    }
    let _ = stop.send(());
    task.abort();
    server.shutdown().await;
}
