//! `kinetic serve status ksvc/NAME` against `kinetic up` (no node agent: a stand-in marks the
//! revision's pod ready, so the Service goes Ready and the autoscaler reports on it).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};

const HELLO: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
";

async fn serve_status(up: &crate::Kinetic, target: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["serve", "status", target, "-n", "default", "--kubeconfig"])
        .arg(&up.kubeconfig)
        .env("KINETIC_LOG", "warn")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn serve_status_shows_the_url_traffic_pods_load_and_the_autoscalers_mode() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let up = crate::start_with("up", dir.path(), crate::free_port(), &["--no-node"]).await;
    crate::apply_when_served(&up, home.path(), HELLO).await;
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // Stand-in kubelet: the revision's pod is Ready (at an address nothing sends requests to).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let list = pods
            .list(&ListParams::default().labels("serving.knative.dev/revision=hello-00001"))
            .await
            .unwrap();
        for p in &list.items {
            let status = serde_json::json!({"status": {"phase": "Running", "podIP": "192.0.2.1",
                "conditions": [{"type": "Ready", "status": "True"},
                               {"type": "ContainersReady", "status": "True"}]}});
            let _ = pods
                .patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                .await;
        }
        let out = serve_status(&up, "ksvc/hello").await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("Stable") && text.contains("1/1") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for want in [
        "Service:  default/hello",
        "URL:      http://hello.default.",
        "Ready:    True",
        "Gateways: 1 of 1 answered",
        "REVISION",
        "IN-FLIGHT",
        "MODE",
    ] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    let row = out.lines().find(|l| l.starts_with("hello-00001")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[..7], ["hello-00001", "100%", "-", "True", "1/1", "0", "Stable"], "{out}");
    assert!(row.contains("stable: "), "{row}");

    // An unknown Service: one clear line, and a failure.
    let out = serve_status(&up, "ksvc/nope").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "error: ksvc \"nope\" not found in namespace \"default\"");
    let out = serve_status(&up, "deploy/hello").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "error: \"deploy\" is not a Knative Service: use ksvc/NAME");
}
