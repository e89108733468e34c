//! PersistentVolumeClaims end to end on `kinetic up` with real runc containers: the default
//! `local-path` class, WaitForFirstConsumer provisioning by the node agent, data that outlives
//! its pod, reclaim on claim deletion, and a pod whose claim is missing.

use std::time::Duration;

use crate::kubectl;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;

async fn apply(up: &crate::Kinetic, home: &std::path::Path, manifest: &str) -> String {
    crate::kubectl_in(up, home, &["apply", "-f", "-"], Some(manifest)).await
}

/// Polls `kubectl args` until its output satisfies `ok` (30 s at most).
async fn eventually(
    up: &crate::Kinetic,
    home: &std::path::Path,
    args: &[&str],
    ok: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..300 {
        let out = kinetic_testkit::kubectl(&up.kubeconfig, home, args, None).await.unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("kubectl {args:?} never satisfied the condition; last output:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_outlives_its_pod_and_is_reclaimed_with_its_directory() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "storage", "v1", &[]).await.unwrap();
    let (up, dir) = crate::up_with_node("node-a", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    eventually(&up, h, &["get", "nodes", "-o", "name"], |o| o.contains("node/node-a")).await;
    let sc = kubectl(&up, h, &["get", "sc"]).await;
    assert!(sc.contains("local-path (default)") && sc.contains("WaitForFirstConsumer"), "{sc}");

    // A pod whose claim does not exist stays Pending with the scheduler's reason.
    let orphan = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "orphan"}},
        "spec": {{"containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "60"]}}],
        "volumes": [{{"name": "d", "persistentVolumeClaim": {{"claimName": "nope"}}}}]}}}}"#
    );
    apply(&up, h, &orphan).await;
    let msg = eventually(
        &up,
        h,
        &[
            "get",
            "pod",
            "orphan",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}",
        ],
        |o| !o.is_empty(),
    )
    .await;
    assert_eq!(msg, "0/1 nodes are available: persistentvolumeclaim \"nope\" not found.");
    let events = eventually(
        &up,
        h,
        &["get", "events", "--field-selector", "involvedObject.name=orphan"],
        |o| o.contains("FailedScheduling"),
    )
    .await;
    assert!(events.contains("persistentvolumeclaim \"nope\" not found"), "{events}");
    kubectl(&up, h, &["delete", "pod", "orphan"]).await;

    // The example manifest, with the test registry's image: the claim waits for its pod.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/storage/pvc-pod.yaml"),
    )
    .unwrap()
    .replace("busybox:1.36", &image);
    let claim_only: String = example.split("---").next().unwrap().to_owned();
    apply(&up, h, &claim_only).await;
    let pvc = kubectl(&up, h, &["get", "pvc", "demo-data"]).await;
    assert!(pvc.contains("Pending") && pvc.contains("local-path"), "{pvc}");
    apply(&up, h, &example).await;
    kubectl(&up, h, &["wait", "--for=condition=Ready", "pod/pvc-demo", "--timeout=60s"]).await;
    let pvc = kubectl(&up, h, &["get", "pvc", "demo-data", "-o", "jsonpath={.status.phase} {.spec.volumeName} {.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"]).await;
    let parts: Vec<&str> = pvc.split(' ').collect();
    assert_eq!((parts[0], parts[2]), ("Bound", "node-a"), "{pvc}");
    let pv_name = parts[1].to_owned();
    assert!(pv_name.starts_with("pvc-"), "{pvc}");
    let pv = kubectl(&up, h, &["get", "pv", &pv_name, "-o", "jsonpath={.status.phase} {.spec.persistentVolumeReclaimPolicy} {.spec.local.path} {.metadata.annotations.pv\\.kubernetes\\.io/provisioned-by}"]).await;
    let parts: Vec<&str> = pv.split(' ').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("Bound", "Delete", "kinetic.dev/local-path"),
        "{pv}"
    );
    let path = std::path::PathBuf::from(parts[2]);
    assert!(path.starts_with(dir.path()), "{pv}");
    let first = eventually(&up, h, &["logs", "pvc-demo"], |o| o.lines().count() == 1).await;
    let boots = std::fs::read_to_string(path.join("boots")).unwrap();
    assert_eq!(boots, first, "the pod wrote into the volume's directory on the node");

    // A new pod with the same claim sees what the first one wrote.
    kubectl(&up, h, &["delete", "pod", "pvc-demo", "--grace-period=1", "--timeout=30s"]).await;
    apply(&up, h, &example).await;
    kubectl(&up, h, &["wait", "--for=condition=Ready", "pod/pvc-demo", "--timeout=60s"]).await;
    let second = eventually(&up, h, &["logs", "pvc-demo"], |o| o.lines().count() == 2).await;
    assert!(second.starts_with(&first), "first boot kept:\n{second}");

    // The claim is protected while the pod runs, then reclaimed with its directory (Delete).
    kubectl(&up, h, &["delete", "pvc", "demo-data", "--wait=false"]).await;
    let pvc = kubectl(&up, h, &["get", "pvc", "demo-data"]).await;
    assert!(pvc.contains("Terminating"), "{pvc}");
    kubectl(&up, h, &["delete", "pod", "pvc-demo", "--grace-period=1", "--timeout=30s"]).await;
    eventually(&up, h, &["get", "pvc,pv", "-o", "name"], |o| o.trim().is_empty()).await;
    assert!(!path.exists(), "{} is gone", path.display());
    drop(up);
}

const CLONESET_WITH_CLAIMS: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: db
spec:
  replicas: 2
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: IMAGE
        command: [sh, -c, 'echo boot >> /data/boots; wc -l < /data/boots; trap \"exit 0\" TERM; sleep 3600 & wait']
        volumeMounts:
        - name: data
          mountPath: /data
  updateStrategy:
    type: InPlaceIfPossible
    maxUnavailable: 1
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
";

/// The boots a pod's current container counted on its claim (its log's last line).
async fn boots(up: &crate::Kinetic, home: &std::path::Path, pod: &str) -> String {
    eventually(up, home, &["logs", pod], |o| !o.trim().is_empty())
        .await
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_claims_keep_their_data_through_in_place_updates_and_replacements() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let v1 = kinetic_testkit::images::busybox(&registry, "db", "v1", &[]).await.unwrap();
    let v2 =
        kinetic_testkit::images::busybox(&registry, "db", "v2", &[("v2", "v2\n")]).await.unwrap();
    let (up, _dir) = crate::up_with_node("node-c", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // The controllers install the CloneSet CRD at start; apply once it is served.
    let manifest = CLONESET_WITH_CLAIMS.replace("IMAGE", &v1);
    crate::apply_when_served(&up, h, &manifest).await;
    let ready = "jsonpath={.status.readyReplicas}/{.status.updatedReadyReplicas}";
    eventually(&up, h, &["get", "cloneset", "db", "-o", ready], |o| o == "2/2").await;
    let names = kubectl(
        &up,
        h,
        &["get", "pods", "-l", "app=db", "-o", "jsonpath={.items[*].metadata.name}"],
    )
    .await;
    let pods: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
    assert_eq!(pods.len(), 2, "{names}");
    for p in &pods {
        let id = p.strip_prefix("db-").unwrap();
        let claim = format!("data-db-{id}");
        let phase =
            kubectl(&up, h, &["get", "pvc", &claim, "-o", "jsonpath={.status.phase}"]).await;
        assert_eq!(phase, "Bound", "{claim}");
        assert_eq!(boots(&up, h, p).await, "1", "{p}: first boot");
    }

    // In place: the same pods restart on v2 and find their claims' data.
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
    );
    kubectl(&up, h, &["patch", "cloneset", "db", "--type", "json", "-p", &patch]).await;
    let restarted = "jsonpath={.items[*].status.containerStatuses[0].restartCount}";
    eventually(&up, h, &["get", "pods", "-l", "app=db", "-o", restarted], |o| o == "1 1").await;
    eventually(&up, h, &["get", "cloneset", "db", "-o", ready], |o| o == "2/2").await;
    for p in &pods {
        assert_eq!(boots(&up, h, p).await, "2", "{p}: the claim survived the in-place update");
    }

    // A pod deleted by someone else: its replacement takes its instance id and its claim.
    kubectl(&up, h, &["delete", "pod", &pods[0], "--grace-period=1", "--timeout=30s"]).await;
    eventually(&up, h, &["get", "pod", &pods[0], "-o", "jsonpath={.status.phase}"], |o| {
        o == "Running"
    })
    .await;
    assert_eq!(boots(&up, h, &pods[0]).await, "3", "the replacement reused the claim");

    // Scale-in by podsToDelete: the pod's claim goes with it, and its volume is reclaimed.
    let victim_claim = format!("data-db-{}", pods[1].strip_prefix("db-").unwrap());
    let scale = format!(
        r#"{{"spec":{{"replicas":1,"scaleStrategy":{{"podsToDelete":["{}"]}}}}}}"#,
        pods[1]
    );
    kubectl(&up, h, &["patch", "cloneset", "db", "--type", "merge", "-p", &scale]).await;
    eventually(&up, h, &["get", "pvc", "-o", "name"], |o| {
        o.lines().count() == 1 && !o.contains(&victim_claim)
    })
    .await;
    eventually(&up, h, &["get", "pv", "-o", "name"], |o| o.lines().count() == 1).await;
    kubectl(&up, h, &["delete", "cloneset", "db", "--wait=true"]).await;
    eventually(&up, h, &["get", "pods,pvc,pv", "-o", "name"], |o| o.trim().is_empty()).await;
    drop(up);
}
