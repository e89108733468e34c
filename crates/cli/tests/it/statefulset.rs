//! StatefulSets end to end on `kinetic up` with real runc containers (issue 17 part 3):
//! - an `apps/v1` StatefulSet with claims comes up one pod at a time in ordinal order (each
//!   pod created only once the one before is Ready), with stable names, hostnames and
//!   claims; it scales down from the highest ordinal, keeps the claims (Retain), and a
//!   scale-up gives the returning ordinal its old claim back;
//! - an Advanced StatefulSet (`apps.kruise.io/v1beta1`) with `maxUnavailable: 2` updates in
//!   place: same pod UIDs and IPs, each container restarted once with the new image, never more
//!   than two pods not ready, the same claims;
//! - the manuals' example manifests apply unchanged through kubectl.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use crate::kubectl;
use crate::workloads::is_ready;

/// The StatefulSet of the first test: an httpd that is ready once it answers.
const WEB: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: IMAGE
        command: [sh, -c, 'hostname > /data/host; exec httpd -f -p 8080 -h /www']
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 10Mi
";

const ADVANCED: &str = "apiVersion: apps.kruise.io/v1beta1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 4
  podManagementPolicy: Parallel
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
      - name: db
        image: IMAGE
        command: [sh, -c, 'echo boot >> /data/boots; exec httpd -f -p 8080 -h /www']
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 10Mi
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      podUpdatePolicy: InPlaceIfPossible
      maxUnavailable: 2
";

/// Polls `kubectl args` until its output satisfies `ok` (120 s at most).
async fn eventually(
    up: &crate::Kinetic,
    home: &std::path::Path,
    args: &[&str],
    ok: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..1200 {
        let out = kinetic_testkit::kubectl(&up.kubeconfig, home, args, None).await.unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut diag = String::new();
    for a in [
        &["get", "pods,pvc", "-o", "wide"][..],
        &["describe", "pods"][..],
        &["logs", "-l", "app", "--previous", "--prefix"][..],
        &["get", "events"][..],
    ] {
        let out = kinetic_testkit::kubectl(&up.kubeconfig, home, a, None).await.unwrap();
        diag.push_str(&String::from_utf8_lossy(&out.stdout));
        diag.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    panic!("kubectl {args:?} never satisfied the condition; last output:\n{last}\n{diag}");
}

/// What a watch of the pods labelled `app=NAME` saw: each pod's readiness at the moment of
/// each event, and the violations of a rule checked on every event.
fn watch_pods(
    pods: Api<Pod>,
    app: &str,
    check: impl Fn(&BTreeMap<String, Pod>) -> Option<String> + Send + 'static,
) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let wp = WatchParams::default().labels(&format!("app={app}"));
    tokio::spawn(async move {
        let mut state: BTreeMap<String, Pod> = BTreeMap::new();
        let stream = pods.watch(&wp, "0").await.unwrap();
        let mut stream = stream.boxed();
        while let Ok(Some(e)) = stream.try_next().await {
            match e {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    state.insert(p.name_any(), p);
                }
                WatchEvent::Deleted(p) => {
                    state.remove(&p.name_any());
                }
                _ => continue,
            }
            if let Some(v) = check(&state) {
                out.lock().unwrap().push(v);
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_v1_statefulset_comes_up_in_order_scales_and_keeps_claims() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image =
        kinetic_testkit::images::busybox(&registry, "web", "v1", &[("www/index.html", "web\n")])
            .await
            .unwrap();
    let (up, _dir) = crate::up_with_node("node-sts", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // OrderedReady: a pod exists only once every lower ordinal is Running and Ready.
    let violations = watch_pods(pods.clone(), "web", |state| {
        for (name, _) in state.iter() {
            let ord: i32 = name.rsplit('-').next()?.parse().ok()?;
            for lower in 0..ord {
                let ok = state.get(&format!("web-{lower}")).is_some_and(is_ready);
                // Scale-down removes the highest first, so a lower pod is never missing
                // while a higher one exists.
                if !ok && state.values().all(|p| p.metadata.deletion_timestamp.is_none()) {
                    return Some(format!("{name} exists while web-{lower} is not ready"));
                }
            }
        }
        None
    });
    crate::apply_when_served(&up, h, &WEB.replace("IMAGE", &image)).await;
    let ready = eventually(&up, h, &["get", "sts", "web"], |o| o.contains(" 3/3 ")).await;
    let header: Vec<&str> = ready.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "AGE"], "{ready}");
    assert!(violations.lock().unwrap().is_empty(), "{:?}", violations.lock().unwrap());

    // Identity: hostname = pod name, subdomain = serviceName, upstream's labels, one claim
    // each, bound.
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    let mut names: Vec<String> = list.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for p in &list {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(p.name_any().as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let labels = p.labels();
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], p.name_any());
        assert_eq!(labels["apps.kubernetes.io/pod-index"], &p.name_any()[4..]);
        assert!(labels["controller-revision-hash"].starts_with("web-"), "{labels:?}");
    }
    let status = kubectl(&up, h, &["get", "sts", "web", "-o", "jsonpath={.status.replicas} {.status.readyReplicas} {.status.availableReplicas} {.status.currentReplicas} {.status.updatedReplicas} {.status.currentRevision}={.status.updateRevision} {.status.observedGeneration}"]).await;
    let parts: Vec<&str> = status.split(' ').collect();
    assert_eq!(&parts[..5], ["3", "3", "3", "3", "3"], "{status}");
    let (cur, upd) = parts[5].split_once('=').unwrap();
    assert_eq!(cur, upd, "{status}");
    assert_eq!(parts[6], "1", "{status}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim_uid = |name: &'static str| {
        let claims = claims.clone();
        async move { claims.get(name).await.unwrap().uid().unwrap() }
    };
    eventually(&up, h, &["get", "pvc", "-o", "jsonpath={.items[*].status.phase}"], |o| {
        o == "Bound Bound Bound"
    })
    .await;
    let data1 = claim_uid("data-web-1").await;

    // Scale down to 1: web-2 and web-1 go, highest first; their claims stay (Retain).
    kubectl(&up, h, &["scale", "sts", "web", "--replicas=1"]).await;
    eventually(&up, h, &["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.trim() == "pod/web-0"
    })
    .await;
    let pvcs = kubectl(&up, h, &["get", "pvc", "-o", "name"]).await;
    assert_eq!(
        pvcs.split_whitespace().collect::<Vec<_>>(),
        [
            "persistentvolumeclaim/data-web-0",
            "persistentvolumeclaim/data-web-1",
            "persistentvolumeclaim/data-web-2"
        ]
    );
    // Back to 2: web-1 returns with its old claim, and finds what it wrote there.
    kubectl(&up, h, &["scale", "sts", "web", "--replicas=2"]).await;
    eventually(&up, h, &["get", "sts", "web"], |o| o.contains(" 2/2 ")).await;
    assert_eq!(claim_uid("data-web-1").await, data1);
    let host = kubectl(&up, h, &["exec", "web-1", "--", "cat", "/data/host"]).await;
    assert_eq!(host.trim(), "web-1");
    assert!(violations.lock().unwrap().is_empty(), "{:?}", violations.lock().unwrap());
    kubectl(&up, h, &["delete", "sts", "web", "--wait=true", "--timeout=60s"]).await;
    eventually(&up, h, &["get", "pods", "-o", "name"], |o| o.trim().is_empty()).await;
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_statefulset_updates_in_place_two_at_a_time_and_keeps_claims() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let v1 = kinetic_testkit::images::busybox(&registry, "db", "v1", &[("www/index.html", "v1\n")])
        .await
        .unwrap();
    let v2 = kinetic_testkit::images::busybox(&registry, "db", "v2", &[("www/index.html", "v2\n")])
        .await
        .unwrap();
    let (up, _dir) = crate::up_with_node("node-asts", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, h, &ADVANCED.replace("IMAGE", &v1)).await;
    let path = "jsonpath={.status.updatedReadyReplicas}/{.status.readyReplicas}/{.status.replicas}";
    eventually(&up, h, &["get", "asts", "db", "-o", path], |o| o == "4/4/4").await;
    let identity = |list: &[Pod]| {
        let mut ids: Vec<(String, String, String)> = list
            .iter()
            .map(|p| {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                (p.name_any(), p.uid().unwrap(), ip)
            })
            .collect();
        ids.sort();
        ids
    };
    let before = pods.list(&ListParams::default().labels("app=db")).await.unwrap().items;
    assert_eq!(before.len(), 4);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim_uids = || {
        let claims = claims.clone();
        async move {
            let mut l: Vec<(String, String)> = claims
                .list(&ListParams::default().labels("app=db"))
                .await
                .unwrap()
                .items
                .iter()
                .map(|c| (c.name_any(), c.uid().unwrap()))
                .collect();
            l.sort();
            l
        }
    };
    let claims_before = claim_uids().await;
    assert_eq!(claims_before.len(), 4, "{claims_before:?}");

    // Never more than maxUnavailable (2) pods not ready during the rollout.
    let over = watch_pods(pods.clone(), "db", |state| {
        let unready = state.values().filter(|p| !is_ready(p)).count();
        (unready > 2).then(|| format!("{unready} pods not ready at once"))
    });
    let most = Arc::new(Mutex::new(0usize));
    {
        let most = most.clone();
        let _ = watch_pods(pods.clone(), "db", move |state| {
            let unready = state.values().filter(|p| !is_ready(p)).count();
            let mut m = most.lock().unwrap();
            *m = (*m).max(unready);
            None
        });
    }
    // Give the watches a moment to start from the current state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A JSON patch of the image alone (a merge patch would replace the containers list, and
    // the change would not be in place any more).
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
    );
    let old_revision =
        kubectl(&up, h, &["get", "asts", "db", "-o", "jsonpath={.status.updateRevision}"]).await;
    kubectl(&up, h, &["patch", "asts", "db", "--type=json", "-p", &patch]).await;
    // Done once the new revision is everyone's: the status of the old one (4/4/4, current =
    // update) also matches until the controller has seen the patch, so the revision must have
    // moved too.
    eventually(&up, h, &["get", "asts", "db", "-o", "jsonpath={.status.updatedReadyReplicas}/{.status.readyReplicas}/{.status.replicas} {.status.currentRevision}={.status.updateRevision}"], |o| {
        o.split_once(' ').is_some_and(|(n, revs)| {
            n == "4/4/4"
                && revs.split_once('=').is_some_and(|(a, b)| a == b && b != old_revision.trim())
        })
    })
    .await;
    let after = pods.list(&ListParams::default().labels("app=db")).await.unwrap().items;
    assert_eq!(identity(&before), identity(&after), "same pods, same IPs");
    for p in &after {
        let spec_image = p.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
        assert_eq!(spec_image, v2);
        let st = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert_eq!(st.restart_count, 1, "{}: restarted once", p.name_any());
        let boots = kubectl(&up, h, &["exec", &p.name_any(), "--", "cat", "/data/boots"]).await;
        assert_eq!(boots, "boot\nboot\n", "{}: the claim survived the restart", p.name_any());
    }
    assert_eq!(claim_uids().await, claims_before, "same claims");
    assert!(over.lock().unwrap().is_empty(), "{:?}", over.lock().unwrap());
    assert!(*most.lock().unwrap() >= 1, "the update made pods unready");
    let events = kubectl(
        &up,
        h,
        &["get", "events", "--field-selector", "reason=SuccessfulUpdatePodInPlace", "-o", "name"],
    )
    .await;
    assert_eq!(events.lines().count(), 4, "{events}");
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manuals_statefulset_examples_apply_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let up = crate::start_with("up", dir.path(), crate::free_port(), &["--no-node"]).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/statefulset");
    for f in ["web.yaml", "advanced.yaml", "reserve-ordinals.yaml"] {
        let text = std::fs::read_to_string(examples.join(f)).unwrap();
        crate::apply_when_served(&up, h, &text).await;
    }
    // OrderedReady: only web-0 until it is ready (no node here: it stays Pending), with its
    // claim from the template.
    eventually(&up, h, &["get", "pods", "-l", "app=nginx", "-o", "name"], |o| {
        o.trim() == "pod/web-0"
    })
    .await;
    eventually(
        &up,
        h,
        &["get", "pvc", "www-web-0", "-o", "jsonpath={.spec.storageClassName}"],
        |o| o == "my-storage-class",
    )
    .await;
    // Parallel: all three at once; reserveOrdinals skips ordinal 1.
    eventually(&up, h, &["get", "pods", "-l", "app=sample", "-o", "name"], |o| {
        o.lines().count() == 3
    })
    .await;
    let reserved =
        eventually(&up, h, &["get", "pods", "-l", "app=sample-reserve", "-o", "name"], |o| {
            o.lines().count() == 4
        })
        .await;
    assert_eq!(
        reserved.split_whitespace().collect::<Vec<_>>(),
        [
            "pod/sample-reserve-0",
            "pod/sample-reserve-2",
            "pod/sample-reserve-3",
            "pod/sample-reserve-4"
        ]
    );
    let asts = eventually(&up, h, &["get", "asts"], |o| o.contains("sample-reserve")).await;
    let header: Vec<&str> = asts.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "UPDATED", "READY", "AGE"], "{asts}");
    // Defaults of Kruise's webhook and of apps/v1.
    let d = kubectl(&up, h, &["get", "asts", "sample-reserve", "-o", "jsonpath={.spec.updateStrategy.rollingUpdate.podUpdatePolicy} {.spec.updateStrategy.rollingUpdate.maxUnavailable} {.spec.revisionHistoryLimit}"]).await;
    assert_eq!(d, "ReCreate 1 10");
    let d = kubectl(&up, h, &["get", "sts", "web", "-o", "jsonpath={.spec.podManagementPolicy} {.spec.updateStrategy.rollingUpdate.partition} {.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}"]).await;
    assert_eq!(d, "OrderedReady 0 Retain");
    // An immutable field: refused with upstream's message.
    let out = kinetic_testkit::kubectl(
        &up.kubeconfig,
        h,
        &["patch", "sts", "web", "--type=merge", "-p", r#"{"spec":{"serviceName":"other"}}"#],
        None,
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("updates to statefulset spec for fields other than"), "{err}");
    // The scale subresource.
    kubectl(&up, h, &["scale", "asts", "sample", "--replicas=1"]).await;
    eventually(&up, h, &["get", "pods", "-l", "app=sample", "-o", "name"], |o| {
        o.trim() == "pod/sample-0"
    })
    .await;
    drop(up);
}
