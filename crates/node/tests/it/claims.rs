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

/// Issue 16 part 3, and the regression of issue 10 (the `kube-api-access-*` volume arrived
/// without `token`): the API server's ServiceAccount admission gives every pod the projected
/// volume, the agent fills it (a pod-bound token from TokenRequest, `ca.crt` from
/// `kube-root-ca.crt`, the namespace), the container reads it where in-cluster clients look,
/// and the token authenticates as `system:serviceaccount:default:default` bound to this pod
/// until the pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_token_authenticates_as_its_service_account_until_the_pod_is_deleted() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let c = Cluster::start().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let pod = c
        .create(
            "sa",
            json!({"containers": [{"name": "app", "image": image, "command": ["sh", "-c",
                format!("cat {dir}/namespace; echo; wc -c < {dir}/token; sleep 30")]}]}),
        )
        .await;
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .find(|n| n.starts_with("kube-api-access-"))
        .expect("the admission plugin adds the kube-api-access volume");
    let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(mounts.iter().any(|m| m.name == volume && m.mount_path == dir), "{mounts:?}");
    c.wait_ready("sa").await;
    let mut logs = String::new();
    for _ in 0..50 {
        logs = node_logs(&c, "sa", "app", "").await;
        if logs.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logs.contains("default\n"), "the container reads its namespace: {logs}");
    let uid = pod.metadata.uid.unwrap();
    let host = c.data_dir().join("pods").join(&uid).join("volumes").join(&volume);
    let token = std::fs::read_to_string(host.join("token")).unwrap();
    assert_eq!(std::fs::read_to_string(host.join("ca.crt")).unwrap(), c.server.server().ca_pem());
    let reviews: Api<TokenReview> = Api::all(c.client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token), audiences: None },
        ..Default::default()
    };
    let st = reviews.create(&PostParams::default(), &review).await.unwrap().status.unwrap();
    assert_eq!(st.authenticated, Some(true), "{st:?}");
    let user = st.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:default:default"));
    let extra = user.extra.unwrap();
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], ["sa"]);
    assert_eq!(extra["authentication.kubernetes.io/pod-uid"], [uid]);
    assert_eq!(extra["authentication.kubernetes.io/node-name"], [crate::harness::NODE]);
    c.pods().delete("sa", &Default::default()).await.unwrap();
    c.wait_gone("sa", 30).await;
    let st = reviews.create(&PostParams::default(), &review).await.unwrap().status.unwrap();
    assert_ne!(st.authenticated, Some(true), "the token of a deleted pod is refused: {st:?}");
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "{left:?}");
}
