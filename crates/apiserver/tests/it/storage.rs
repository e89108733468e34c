//! PersistentVolumeClaims, PersistentVolumes and StorageClasses through `kube` and `kubectl`:
//! defaults, the default class, protection finalizers, validation, immutability, tables.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kinetic_testkit::TestServer;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn claim(name: &str, class: Option<&str>) -> PersistentVolumeClaim {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(c) = class {
        v["spec"]["storageClassName"] = json!(c);
    }
    serde_json::from_value(v).unwrap()
}

fn class(name: &str, default: bool) -> StorageClass {
    let ann = if default {
        json!({"storageclass.kubernetes.io/is-default-class": "true"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": ann},
        "provisioner": "kinetic.dev/local-path",
    }))
    .unwrap()
}

#[tokio::test]
async fn claims_volumes_and_classes_get_upstream_defaults() {
    let t = TestServer::start().await.unwrap();
    let c = t.client().await.unwrap();
    let classes: Api<StorageClass> = Api::all(c.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(c.clone());
    let pp = PostParams::default();

    // Without a default class a claim keeps no class.
    let none = claims.create(&pp, &claim("before", None)).await.unwrap();
    assert_eq!(none.spec.as_ref().unwrap().storage_class_name, None);

    let sc = classes.create(&pp, &class("fast", true)).await.unwrap();
    assert_eq!(sc.reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(sc.volume_binding_mode.as_deref(), Some("Immediate"));
    classes.create(&pp, &class("slow", false)).await.unwrap();

    // DefaultStorageClass admission; an explicit "" stays "no class".
    let pvc = claims.create(&pp, &claim("data", None)).await.unwrap();
    let spec = pvc.spec.as_ref().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(pvc.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(pvc.metadata.finalizers, Some(vec!["kubernetes.io/pvc-protection".to_owned()]));
    let explicit = claims.create(&pp, &claim("nothing", Some(""))).await.unwrap();
    assert_eq!(explicit.spec.unwrap().storage_class_name.as_deref(), Some(""));

    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "manual"},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": "/tmp/manual"}},
    }))
    .unwrap();
    let pv = volumes.create(&pp, &pv).await.unwrap();
    let spec = pv.spec.as_ref().unwrap();
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(pv.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(pv.metadata.finalizers, Some(vec!["kubernetes.io/pv-protection".to_owned()]));

    // Binding: volumeName may be set once, and status is written through the subresource.
    let bind = json!({"spec": {"volumeName": "manual"}});
    claims.patch("data", &PatchParams::default(), &Patch::Merge(&bind)).await.unwrap();
    let st = json!({"status": {"phase": "Bound", "capacity": {"storage": "5Gi"},
        "accessModes": ["ReadWriteOnce"]}});
    claims.patch_status("data", &PatchParams::default(), &Patch::Merge(&st)).await.unwrap();
    let rebind = json!({"spec": {"volumeName": "other"}});
    let err = claims.patch("data", &PatchParams::default(), &Patch::Merge(&rebind)).await;
    let kube::Error::Api(s) = err.unwrap_err() else { panic!("not an API error") };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
    assert!(s.message.contains("spec is immutable after creation"), "{}", s.message);
    // A bound claim may grow, never shrink.
    let grow = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
    claims.patch("data", &PatchParams::default(), &Patch::Merge(&grow)).await.unwrap();
    let shrink = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
    let err = claims.patch("data", &PatchParams::default(), &Patch::Merge(&shrink)).await;
    let kube::Error::Api(s) = err.unwrap_err() else { panic!("not an API error") };
    assert!(s.message.contains("spec.resources.requests.storage"), "{}", s.message);

    // Short names and list.
    let listed = claims.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 3);
    let out = t.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]).await;
    assert_eq!(out.unwrap(), "manual");
    let out = t.kubectl_ok(&["get", "pv,sc", "-o", "name"]).await.unwrap();
    assert!(out.contains("persistentvolume/manual"), "{out}");
    assert!(out.contains("storageclass.storage.k8s.io/fast"), "{out}");

    // Protection: the delete leaves the claim Terminating until the volume controller (not
    // running here) clears the finalizer.
    claims.delete("data", &DeleteParams::default()).await.unwrap();
    let pvc = claims.get("data").await.unwrap();
    assert!(pvc.metadata.deletion_timestamp.is_some());
    let table = t.kubectl_ok(&["get", "pvc", "data"]).await.unwrap();
    assert!(table.contains("Terminating"), "{table}");
}

#[tokio::test]
async fn kubectl_prints_storage_tables() {
    let t = TestServer::start().await.unwrap();
    let manifest = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kinetic.dev/local-path
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv1
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: local-path
  claimRef: {namespace: default, name: data}
  hostPath: {path: /tmp/pv1}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"#;
    let out = t.kubectl_stdin_ok(&["apply", "-f", "-"], manifest).await.unwrap();
    assert_eq!(out.matches("created").count(), 3, "{out}");
    let rows = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|l| {
                l.split("   ").map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect()
            })
            .collect()
    };
    let sc = t.kubectl_ok(&["get", "sc"]).await.unwrap();
    let r = rows(&sc);
    assert_eq!(
        r[0],
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ],
        "{sc}"
    );
    assert_eq!(
        r[1][..5],
        [
            "local-path (default)",
            "kinetic.dev/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ],
        "{sc}"
    );
    let pv = t.kubectl_ok(&["get", "pv"]).await.unwrap();
    let header: Vec<&str> = pv.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "RECLAIM",
            "POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ],
        "{pv}"
    );
    let cells: Vec<&str> = pv.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        cells[..7],
        ["pv1", "2Gi", "RWO,ROX", "Delete", "Pending", "default/data", "local-path"],
        "{pv}"
    );
    let pvc = t.kubectl_ok(&["get", "pvc", "-o", "wide"]).await.unwrap();
    let header: Vec<&str> = pvc.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE",
            "VOLUMEMODE"
        ],
        "{pvc}"
    );
    let cells: Vec<&str> = pvc.lines().nth(1).unwrap().split_whitespace().collect();
    // The default class was filled in; an unbound claim prints no capacity or modes.
    assert_eq!(cells[..3], ["data", "Pending", "local-path"], "{pvc}");
    assert_eq!(cells.last(), Some(&"Filesystem"), "{pvc}");
}

#[tokio::test]
async fn kubectl_reports_invalid_storage_objects_by_field() {
    let t = TestServer::start().await.unwrap();
    let bad_claim = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: bad}
spec:
  accessModes: [ReadWriteSometimes]
  volumeMode: Sideways
"#;
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(bad_claim)).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PersistentVolumeClaim \"bad\" is invalid"), "{err}");
    assert!(err.contains("spec.accessModes: Unsupported value: \"ReadWriteSometimes\""), "{err}");
    assert!(err.contains("spec.resources[storage]: Required value"), "{err}");
    assert!(err.contains("spec.volumeMode: Unsupported value: \"Sideways\""), "{err}");

    let bad_pv = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: bad}
spec:
  capacity: {storage: lots}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Recycle
  hostPath: {path: /tmp/x}
  nfs: {server: s, path: /}
"#;
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(bad_pv)).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.nfs: Forbidden: may not specify more than 1 volume type"), "{err}");

    let local_pv = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: nolocal}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  local: {path: /tmp/x}
"#;
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(local_pv)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.nodeAffinity: Required value: Local volume requires node affinity"),
        "{err}"
    );

    let sc = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: s}
provisioner: p
reclaimPolicy: Recycle
"#;
    let out = t.kubectl_stdin(&["apply", "-f", "-"], Some(sc)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reclaimPolicy: Unsupported value: \"Recycle\""), "{err}");
    // Classes are immutable in what they provision.
    t.kubectl_stdin_ok(&["apply", "-f", "-"], &sc.replace("Recycle", "Retain")).await.unwrap();
    let out = t
        .kubectl(&[
            "patch",
            "sc",
            "s",
            "-p",
            r#"{"provisioner": "q", "volumeBindingMode": "WaitForFirstConsumer"}"#,
        ])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provisioner: Forbidden: updates to provisioner are forbidden."), "{err}");
    assert!(err.contains("volumeBindingMode: Forbidden: field is immutable"), "{err}");
}
