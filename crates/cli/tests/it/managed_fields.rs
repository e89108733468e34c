//! `managedFields` name the component that wrote each field: Kinetic's clients send a
//! User-Agent per component and the server derives the manager from it, as kube-apiserver does.

use std::time::Duration;

use serde_json::Value;

/// The managers (with their subresource) of `obj`'s managedFields.
fn managers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let m = e["manager"].as_str().unwrap_or("").to_owned();
            match e["subresource"].as_str() {
                Some(s) => format!("{m}/{s}"),
                None => m,
            }
        })
        .collect()
}

/// Regression (issue 10): every write of Kinetic's showed as manager `unknown` in
/// managedFields. A CloneSet's pod is created by `kinetic-controller`, its scheduling status
/// written by `kinetic-scheduler`; kubectl's apply keeps its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kinetic_write_shows_as_manager_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let up = crate::start_with("up", dir.path(), crate::free_port(), &["--no-node"]).await;
    let home = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: mf
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: mf
  template:
    metadata:
      labels:
        app: mf
    spec:
      containers:
      - name: main
        image: busybox
";
    crate::apply_when_served(&up, home.path(), manifest).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pod = loop {
        let out = crate::kubectl(
            &up,
            home.path(),
            &["get", "pods", "-l", "app=mf", "-o", "json", "--show-managed-fields"],
        )
        .await;
        let list: Value = serde_json::from_str(&out).unwrap();
        let pod = list["items"].as_array().and_then(|i| i.first()).cloned();
        // Wait for the scheduler's PodScheduled=False (no node here) too.
        if let Some(p) = pod
            && managers(&p).iter().any(|m| m.starts_with("kinetic-scheduler"))
        {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "no scheduled-status pod: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pod_managers = managers(&pod);
    // The CloneSet controller also writes the pod's KruisePodReady condition (status).
    for m in ["kinetic-controller", "kinetic-scheduler/status"] {
        assert!(pod_managers.iter().any(|p| p == m), "{m} missing: {pod:#}");
    }
    assert!(
        pod_managers
            .iter()
            .all(|m| m.starts_with("kinetic-controller") || m.starts_with("kinetic-scheduler")),
        "{pod_managers:?}"
    );
    let fields = &pod["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(fields.pointer("/f:spec/f:containers").is_some(), "{fields:#}");
    let out = crate::kubectl(
        &up,
        home.path(),
        &["get", "cloneset", "mf", "-o", "json", "--show-managed-fields"],
    )
    .await;
    let cs: Value = serde_json::from_str(&out).unwrap();
    let cs_managers = managers(&cs);
    assert!(cs_managers.contains(&"kubectl-client-side-apply".to_owned()), "{cs_managers:?}");
    assert!(!cs_managers.iter().any(|m| m.starts_with("unknown")), "{cs_managers:?}");
}
