//! `persistentVolumeClaim` volumes on the node: the pod waits with kubelet's FailedMount while
//! its claim is missing or unbound, then mounts the bound volume's directory (read-only when the
//! pod says so). The test plays the volume controller's part by writing the binding itself.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::{Cluster, waiting_reason};
use crate::pods::node_logs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_its_claim_then_mounts_the_bound_volume() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let vol = tempfile::Builder::new().prefix("kinetic-pv-it").tempdir_in("/var/tmp").unwrap();
    std::fs::write(vol.path().join("greeting"), "hello from the volume\n").unwrap();
    c.create(
        "reader",
        json!({
            "containers": [{"name": "app", "image": image, "command": ["sh", "-c",
                "cat /data/greeting; touch /data/new 2>/dev/null || echo read-only; sleep 30"],
                "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "later", "readOnly": true}}],
        }),
    )
    .await;
    let ev = c.wait_event("reader", "FailedMount", 30).await;
    assert!(ev.contains("persistentvolumeclaim \"later\" not found"), "{ev}");
    let p = c
        .wait("reader", 10, "ContainerCreating", |p| {
            waiting_reason(p, "app").as_deref() == Some("ContainerCreating")
        })
        .await;
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));

    // The claim appears unbound: a new reason.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pvc = serde_json::from_value(json!({"metadata": {"name": "later"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "",
        "resources": {"requests": {"storage": "1Mi"}}}}))
    .unwrap();
    claims.create(&PostParams::default(), &pvc).await.unwrap();
    let ev = c.wait_event("reader", "is not bound", 30).await;
    assert!(ev.contains("persistentvolumeclaim \"later\" is not bound"), "{ev}");

    // Bind it to a hostPath volume, as the volume controller would.
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv = serde_json::from_value(json!({"metadata": {"name": "manual"}, "spec": {
        "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
        "hostPath": {"path": vol.path()}}}))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    let pp = PatchParams::default();
    claims
        .patch("later", &pp, &Patch::Merge(json!({"spec": {"volumeName": "manual"}})))
        .await
        .unwrap();
    claims
        .patch_status("later", &pp, &Patch::Merge(json!({"status": {"phase": "Bound"}})))
        .await
        .unwrap();
    c.wait_ready("reader").await;
    let mut logs = String::new();
    for _ in 0..50 {
        logs = node_logs(&c, "reader", "app", "").await;
        if logs.contains("read-only") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logs.ends_with("\r\n\r\nhello from the volume\nread-only\n"), "{logs}");
    assert!(!vol.path().join("new").exists());
    c.pods().delete("reader", &Default::default()).await.unwrap();
    c.wait_gone("reader", 30).await;
    // The pod's teardown leaves the volume's data alone.
    assert!(vol.path().join("greeting").exists());
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "{left:?}");
}

/// Regression (issue 10): the `kube-api-access-*` projected volume arrived without `token`. The
/// agent now asks TokenRequest for it; `kinetic up`'s server does not serve TokenRequest yet, so
/// the pod must wait in ContainerCreating with a FailedMount that says so, never start with an
/// empty token volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_no_service_account_token_so_the_agent_fails_the_mount_clearly() {
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let pod = c
        .create(
            "sa",
            json!({
                "containers": [{"name": "app", "image": image, "command": ["sleep", "30"],
                    "volumeMounts": [{"name": "kube-api-access-x",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}}],
            }),
        )
        .await;
    let ev = c.wait_event("sa", "FailedMount", 30).await;
    assert!(
        ev.contains("MountVolume.SetUp failed for volume \"kube-api-access-x\" : failed to fetch token: TokenRequest (serviceaccounts/token) is not served"),
        "{ev}"
    );
    let p = c
        .wait("sa", 10, "ContainerCreating", |p| {
            waiting_reason(p, "app").as_deref() == Some("ContainerCreating")
        })
        .await;
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    let uid = pod.metadata.uid.unwrap();
    let volume = c.data_dir().join("pods").join(uid).join("volumes/kube-api-access-x");
    assert!(!volume.exists(), "no volume without its token: {}", volume.display());
    c.pods().delete("sa", &Default::default()).await.unwrap();
    c.wait_gone("sa", 30).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "{left:?}");
}
