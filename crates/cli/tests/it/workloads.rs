//! Workloads end to end on `kinetic up` with real containers: a CloneSet updates its image in
//! place (same pods, same IPs, restartCount 1) while a client keeps calling the addresses the
//! Service's Endpoints list, and none of those calls fails; a Deployment rolls with kubectl; a
//! ReCreate CloneSet replaces its pods, and a release to an image that never gets ready stops at
//! the progress deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::kubectl;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

/// GET / with a deadline; the body on success.
async fn try_get(ip: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let call = async {
        let mut s = tokio::net::TcpStream::connect((ip, 8080)).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
        if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
            Ok(out)
        } else {
            Err(format!("answer {:?}", out.lines().next()))
        }
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.map_err(|_| "timeout".to_owned())?
}

const CLONESET: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: web
spec:
  replicas: 10
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
      - name: main
        image: IMAGE
        command: [sh, -c, exec httpd -f -p 8080 -h /www]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
  updateStrategy:
    type: InPlaceIfPossible
    maxUnavailable: 2
    inPlaceUpdateStrategy:
      gracePeriodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_updates_in_place_without_losing_a_request_and_deployment_rolls() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let v1 = kinetic_testkit::images::busybox(&registry, "web", "v1", &[]).await.unwrap();
    let v2 = kinetic_testkit::images::busybox(
        &registry,
        "web",
        "v2",
        &[("www/index.html", "v2 page\n")],
    )
    .await
    .unwrap();
    let (up, _dir) = crate::up_with_node("node-w", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The controllers install the CloneSet CRD at start; apply once it is served.
    let manifest = CLONESET.replace("IMAGE", &v1);
    crate::apply_when_served(&up, h, &manifest).await;
    let ready_all = || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
        list.len() == 10 && list.iter().all(crate::workloads::is_ready)
    };
    for i in 0.. {
        if ready_all().await {
            break;
        }
        assert!(
            i < 600,
            "10 ready pods not reached: {}",
            kubectl(&up, h, &["get", "pods", "-o", "wide"]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snapshot = || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                (p.name_any(), (p.uid().unwrap_or_default(), ip))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let before = snapshot().await;

    // A client that only calls what the Endpoints list as ready, as a proxy would.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let traffic = {
        let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(ep) = eps.get("web").await else { continue };
                let ips: Vec<String> = ep
                    .subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.addresses.iter().flatten())
                    .map(|a| a.ip.clone())
                    .collect();
                for ip in ips {
                    match try_get(&ip).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.lock().unwrap().push(format!("{ip}: {e}")),
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A JSON patch of the one image (a merge patch would replace the whole containers list).
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
    );
    kubectl(&up, h, &["patch", "cloneset", "web", "--type", "json", "-p", &patch]).await;
    // `kinetic rollout status` follows it to the end.
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["rollout", "status", "cloneset/web", "--timeout", "120", "--kubeconfig"])
        .arg(&up.kubeconfig)
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}{}", String::from_utf8_lossy(&status.stderr));
    assert!(out.contains("cloneset \"web\" successfully rolled out"), "{out}");
    assert!(out.contains("updated, ready") && out.contains("10/10 updated pods ready"), "{out}");
    for i in 0.. {
        let cs = kubectl(
            &up,
            h,
            &[
                "get",
                "cloneset",
                "web",
                "-o",
                "jsonpath={.status.updatedReadyReplicas}/{.status.readyReplicas}",
            ],
        )
        .await;
        if cs == "10/10" {
            break;
        }
        assert!(
            i < 900,
            "rollout did not finish: {cs}\n{}",
            kubectl(&up, h, &["get", "pods", "-o", "wide"]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "requests to listed endpoints failed: {failed:?}");
    assert!(ok.load(Ordering::Relaxed) > 20, "too few requests: {}", ok.load(Ordering::Relaxed));

    // Same pods, same IPs, one restart each, the new page everywhere.
    assert_eq!(before, snapshot().await);
    for p in pods.list(&ListParams::default().labels("app=web")).await.unwrap().items {
        let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1, "{}", p.name_any());
        // Ready again, without the reason the not-ready step left on the condition.
        let conds = p.status.as_ref().unwrap().conditions.clone().unwrap_or_default();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", None), "{ready:?}");
        assert!(cs.image_id.contains("sha256:"), "{}", cs.image_id);
        let ip = p.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let page = try_get(&ip).await.unwrap();
        assert!(page.contains("v2 page"), "{page}");
    }
    let table = kubectl(&up, h, &["get", "cloneset", "web"]).await;
    assert!(table.contains("UPDATED_READY"), "{table}");

    // A Deployment with kubectl: create, roll to v2, wait for the rollout.
    kubectl(
        &up,
        h,
        &[
            "create",
            "deployment",
            "d",
            &format!("--image={v1}"),
            "--replicas=2",
            "--",
            "sh",
            "-c",
            "exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    kubectl(&up, h, &["rollout", "status", "deployment/d", "--timeout=60s"]).await;
    let old: Vec<String> = pods
        .list(&ListParams::default().labels("app=d"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.uid().unwrap())
        .collect();
    kubectl(&up, h, &["set", "image", "deployment/d", &format!("web={v2}")]).await;
    kubectl(&up, h, &["rollout", "status", "deployment/d", "--timeout=60s"]).await;
    let new = pods.list(&ListParams::default().labels("app=d")).await.unwrap().items;
    let new: Vec<&Pod> = new.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    assert_eq!(new.len(), 2);
    for p in new {
        assert!(!old.contains(&p.uid().unwrap()), "a Deployment replaces pods");
        assert_eq!(p.spec.as_ref().unwrap().containers[0].image.as_deref(), Some(v2.as_str()));
    }
    kubectl(&up, h, &["delete", "cloneset", "web", "--wait=true"]).await;
    kubectl(&up, h, &["delete", "deployment", "d", "--wait=true"]).await;
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting their owners");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(up);
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

const RECREATE: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: rc
spec:
  replicas: 3
  selector:
    matchLabels:
      app: rc
  template:
    metadata:
      labels:
        app: rc
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: IMAGE
        command: [sh, -c, exec httpd -f -p 8080 -h /www]
        readinessProbe:
          httpGet: {path: /ready.html, port: 8080}
          periodSeconds: 1
  updateStrategy:
    type: ReCreate
    maxUnavailable: 1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_recreate_replaces_pods_and_a_never_ready_image_stops_at_the_deadline() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let ready = [("www/ready.html", "ok\n")];
    let v1 = kinetic_testkit::images::busybox(&registry, "rc", "v1", &ready).await.unwrap();
    let v2 = kinetic_testkit::images::busybox(&registry, "rc", "v2", &ready).await.unwrap();
    // v3 never becomes ready: its readiness path is missing.
    let v3 = kinetic_testkit::images::busybox(&registry, "rc", "v3", &[("www/other", "x\n")])
        .await
        .unwrap();
    let (up, _dir) = crate::up_with_node("node-r", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let manifest = RECREATE.replace("IMAGE", &v1);
    crate::apply_when_served(&up, h, &manifest).await;
    let live = || async {
        pods.list(&ListParams::default().labels("app=rc"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect::<Vec<Pod>>()
    };
    let image = |p: &Pod| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default();
    let wait_all = |img: String| {
        let live = &live;
        async move {
            for i in 0.. {
                let l = live().await;
                if l.len() == 3 && l.iter().all(|p| is_ready(p) && image(p) == img) {
                    return l;
                }
                assert!(i < 600, "3 ready pods on {img} not reached");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            unreachable!()
        }
    };
    let before = wait_all(v1.clone()).await;
    let old_uids: Vec<String> = before.iter().map(|p| p.uid().unwrap()).collect();

    // ReCreate: every pod is replaced by a new one (new UID) on v2.
    let patch = |img: &str| {
        format!(
            r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{img}"}}]"#
        )
    };
    kubectl(&up, h, &["patch", "cloneset", "rc", "--type", "json", "-p", &patch(&v2)]).await;
    let after = wait_all(v2.clone()).await;
    for p in &after {
        assert!(!old_uids.contains(&p.uid().unwrap()), "ReCreate makes new pods: {}", p.name_any());
        let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 0, "a new pod, not a restart");
    }

    // A release to an image that never gets ready stops at the progress deadline, says so in
    // the Progressing condition and an Event, and `kinetic rollout status` fails with it.
    kubectl(
        &up,
        h,
        &[
            "patch",
            "cloneset",
            "rc",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"progressDeadlineSeconds":3}}"#,
        ],
    )
    .await;
    kubectl(&up, h, &["patch", "cloneset", "rc", "--type", "json", "-p", &patch(&v3)]).await;
    let cond = "jsonpath={.status.conditions[?(@.type=='Progressing')].reason}";
    for i in 0.. {
        let reason = kubectl(&up, h, &["get", "cloneset", "rc", "-o", cond]).await;
        if reason == "ProgressDeadlineExceeded" {
            break;
        }
        assert!(i < 300, "no ProgressDeadlineExceeded: {reason:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events =
        kubectl(&up, h, &["get", "events", "--field-selector", "involvedObject.name=rc"]).await;
    assert!(events.contains("ProgressDeadlineExceeded"), "{events}");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["rollout", "status", "cloneset/rc", "--timeout", "30", "--kubeconfig"])
        .arg(&up.kubeconfig)
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success(), "rollout status succeeded on a stalled rollout");
    assert!(
        out.contains("exceeded its progress deadline") || out.contains("ProgressDeadlineExceeded"),
        "{out}"
    );
    // The rollout stopped: one pod on v3 (never ready), the other two still serve v2.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let l = live().await;
    let on_v2 = l.iter().filter(|p| image(p) == v2 && is_ready(p)).count();
    let on_v3 = l.iter().filter(|p| image(p) == v3).count();
    assert_eq!(
        (on_v2, on_v3),
        (2, 1),
        "{:?}",
        l.iter().map(|p| (p.name_any(), image(p), is_ready(p))).collect::<Vec<_>>()
    );
    // Containers outlive a killed agent by design: delete the pods before stopping `kinetic up`.
    kubectl(&up, h, &["delete", "cloneset", "rc", "--wait=true"]).await;
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting their CloneSet");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(up);
}
