//! OpenKruise's SidecarSet on `kinetic up` with real containers (issue 17): the embedded
//! server's pod admission injects the sidecar into matching pods only, and changing the
//! SidecarSet's image upgrades the sidecar in place — same pods, UIDs and IPs, the app
//! container never restarted — one pod at a time (`maxUnavailable: 1`), keeping `partition`
//! pods on the old sidecar until the partition is lowered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use crate::kubectl;

const SIDECARSET: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: SidecarSet
metadata:
  name: side
spec:
  selector:
    matchLabels:
      app: web
  containers:
  - name: side
    image: SIDE
    command: [sh, -c, exec httpd -f -p 8081 -h /www]
    readinessProbe:
      httpGet: {path: /, port: 8081}
      periodSeconds: 1
  updateStrategy:
    maxUnavailable: 1
    partition: 1
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
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
      - name: app
        image: APP
        command: [sh, -c, exec httpd -f -p 8080 -h /www]
";

const OTHER: &str = "apiVersion: v1
kind: Pod
metadata:
  name: other
  labels:
    app: other
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: APP
    command: [sh, -c, exec httpd -f -p 8080 -h /www]
";

fn container_names(p: &Pod) -> Vec<String> {
    p.spec.iter().flat_map(|s| s.containers.iter()).map(|c| c.name.clone()).collect()
}

pub fn restarts(p: &Pod, name: &str) -> i32 {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().find(|c| c.name == name).map_or(-1, |c| c.restart_count)
}

pub fn spec_image(p: &Pod, name: &str) -> String {
    let c = p.spec.iter().flat_map(|s| s.containers.iter()).find(|c| c.name == name);
    c.and_then(|c| c.image.clone()).unwrap_or_default()
}

pub fn ip_of(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

/// A pod whose sidecar is being upgraded: its spec names an image its status does not run
/// yet, or the pod is not ready.
fn in_flight(p: &Pod) -> bool {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let side = statuses.into_iter().flatten().find(|c| c.name == "side");
    let running_spec = side.is_some_and(|s| s.image == spec_image(p, "side") && s.ready);
    !(running_spec && crate::workloads::is_ready(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecarset_injects_matching_pods_and_upgrades_the_sidecar_in_place() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = |repo: &'static str, tag: &'static str| {
        let registry = &registry;
        async move {
            let page = format!("{repo} {tag}\n");
            kinetic_testkit::images::busybox(registry, repo, tag, &[("www/index.html", &page)])
                .await
                .unwrap()
        }
    };
    let (side1, side2, app) =
        (image("side", "v1").await, image("side", "v2").await, image("app", "v1").await);
    let (up, _dir) = crate::up_with_node("node-sc", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let status = |up: &crate::Kinetic| {
        let up = up.kubeconfig.clone();
        let h = h.to_owned();
        async move {
            let out = kinetic_testkit::kubectl(
                &up,
                &h,
                &["get", "sidecarset", "side", "-o",
                  "jsonpath={.status.matchedPods}/{.status.updatedPods}/{.status.readyPods}/{.status.updatedReadyPods}"],
                None,
            )
            .await
            .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let wait_status = |want: &'static str| {
        let status = &status;
        let up = &up;
        let pods = &pods;
        async move {
            for i in 0.. {
                let got = status(up).await;
                if got == want {
                    return;
                }
                assert!(
                    i < 600,
                    "SidecarSet status {got}, want {want}:\n{:#?}",
                    pods.list(&ListParams::default())
                        .await
                        .unwrap()
                        .items
                        .iter()
                        .map(|p| (p.name_any(), p.status.clone()))
                        .collect::<Vec<_>>()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    crate::apply_when_served(&up, h, &SIDECARSET.replace("SIDE", &side1)).await;
    kubectl(&up, h, &["get", "sidecarset", "side"]).await;
    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(&DEPLOYMENT.replace("APP", &app))).await;
    crate::kubectl_in(&up, h, &["apply", "-f", "-"], Some(&OTHER.replace("APP", &app))).await;
    wait_status("3/3/3/3").await;

    // Injected into the Deployment's pods only, before the app container.
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert_eq!(list.len(), 3);
    for p in &list {
        assert_eq!(container_names(p), ["side", "app"], "{}", p.name_any());
        assert_eq!(
            p.annotations().get("kruise.io/sidecarset-injected-list").map(String::as_str),
            Some("side")
        );
    }
    let other = pods.get("other").await.unwrap();
    assert_eq!(container_names(&other), ["app"]);
    let identity: BTreeMap<String, (String, String, i32)> = list
        .iter()
        .map(|p| (p.name_any(), (p.uid().unwrap(), ip_of(p), restarts(p, "app"))))
        .collect();

    // Track how many pods are upgrading at once while the rollout goes.
    let max_in_flight = Arc::new(Mutex::new(0usize));
    let watcher = {
        let (pods, max) = (pods.clone(), max_in_flight.clone());
        tokio::spawn(async move {
            let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version;
            let wp = WatchParams::default().labels("app=web");
            let mut stream = pods.watch(&wp, &rv.unwrap_or_default()).await.unwrap().boxed();
            let mut state: BTreeMap<String, bool> = BTreeMap::new();
            while let Ok(Some(e)) = stream.try_next().await {
                if let WatchEvent::Modified(p) | WatchEvent::Added(p) = e {
                    state.insert(p.name_any(), in_flight(&p));
                    let n = state.values().filter(|v| **v).count();
                    let mut m = max.lock().unwrap();
                    *m = (*m).max(n);
                }
            }
        })
    };

    // A new sidecar image: two pods upgrade, one stays behind the partition.
    let patch = format!(
        r#"{{"spec":{{"containers":[{{"name":"side","image":"{side2}","command":["sh","-c","exec httpd -f -p 8081 -h /www"],"readinessProbe":{{"httpGet":{{"path":"/","port":8081}},"periodSeconds":1}}}}]}}}}"#
    );
    kubectl(&up, h, &["patch", "sidecarset", "side", "--type", "merge", "-p", &patch]).await;
    wait_status("3/2/3/2").await;
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    let on_v2 = list.iter().filter(|p| spec_image(p, "side") == side2).count();
    assert_eq!(on_v2, 2, "partition 1 keeps one pod on the old sidecar");
    // Then the rest.
    kubectl(
        &up,
        h,
        &[
            "patch",
            "sidecarset",
            "side",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"updateStrategy":{"partition":0}}}"#,
        ],
    )
    .await;
    wait_status("3/3/3/3").await;
    watcher.abort();
    let max = *max_in_flight.lock().unwrap();
    assert!(max <= 1, "maxUnavailable 1, but {max} pods upgraded at once");

    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    for p in &list {
        let name = p.name_any();
        let (uid, ip, app_restarts) =
            identity.get(&name).unwrap_or_else(|| panic!("{name} is a new pod"));
        assert_eq!((&p.uid().unwrap(), &ip_of(p)), (uid, ip), "{name}: same pod, same IP");
        assert_eq!(restarts(p, "app"), *app_restarts, "{name}: the app container did not restart");
        assert_eq!(restarts(p, "side"), 1, "{name}: the sidecar restarted once");
        assert_eq!(spec_image(p, "side"), side2);
    }
    let generation = kubectl(
        &up,
        h,
        &[
            "get",
            "sidecarset",
            "side",
            "-o",
            "jsonpath={.metadata.generation}/{.status.observedGeneration}",
        ],
    )
    .await;
    let (a, b) = generation.split_once('/').unwrap();
    assert_eq!(a, b, "observedGeneration");
    assert!(!other.annotations().contains_key("kruise.io/sidecarset-hash"));

    // Containers outlive a killed agent by design: delete the pods before stopping `kinetic up`.
    kubectl(&up, h, &["delete", "deployment", "web", "--wait=true"]).await;
    kubectl(&up, h, &["delete", "pod", "other", "--wait=true"]).await;
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting them");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kinetic controller` as a separate process against `kinetic apiserver` without built-in
/// webhooks (a real cluster): its webhook, called over TLS through the configuration it keeps,
/// injects; the configuration only selects pods some SidecarSet selects, so with the
/// controller gone a pod no SidecarSet selects is still created at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_controller_webhook_injects_and_a_down_controller_blocks_no_unrelated_pod() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        crate::start_with("apiserver", dir.path(), crate::free_port(), &["--no-builtin-webhooks"])
            .await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = crate::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut controller = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["controller", "--no-leader-elect", "--webhook-listen", &listen, "--kubeconfig"])
        .arg(&server.kubeconfig)
        .env("KINETIC_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ss = SIDECARSET.replace("SIDE", "busybox:1");
    crate::apply_when_served(&server, h, &ss).await;
    // The configuration follows the SidecarSet: one webhook, scoped by its selector.
    for i in 0.. {
        let out = kinetic_testkit::kubectl(
            &server.kubeconfig,
            h,
            &["get", "mutatingwebhookconfiguration", "kinetic-sidecarset", "-o", "json"],
            None,
        )
        .await
        .unwrap();
        if out.status.success() {
            let mwc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if mwc["webhooks"].as_array().is_some_and(|w| w.len() == 1) {
                let hook = &mwc["webhooks"][0];
                assert_eq!(
                    hook["objectSelector"],
                    serde_json::json!({"matchLabels": {"app": "web"}})
                );
                assert_eq!(hook["clientConfig"]["url"], format!("https://{listen}/mutate-pod"));
                assert_eq!(hook["failurePolicy"], "Fail");
                break;
            }
        }
        assert!(i < 300, "the webhook configuration was not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pod = |name: &str, app: &str| {
        format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"default\",\"labels\":{{\"app\":\"{app}\"}}}},\"spec\":{{\"containers\":[{{\"name\":\"app\",\"image\":\"busybox\"}}]}}}}"
        )
    };
    // The webhook server may still be starting: retry the create briefly.
    for i in 0.. {
        let out = kinetic_testkit::kubectl(
            &server.kubeconfig,
            h,
            &["create", "-f", "-"],
            Some(&pod("web", "web")),
        )
        .await
        .unwrap();
        if out.status.success() {
            break;
        }
        assert!(i < 100, "{}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = kinetic_testkit::client_from_kubeconfig(&server.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let web = pods.get("web").await.unwrap();
    assert_eq!(container_names(&web), ["side", "app"]);
    assert_eq!(
        web.annotations().get("kruise.io/sidecarset-injected-list").map(String::as_str),
        Some("side")
    );
    let side = &web.spec.as_ref().unwrap().containers[0];
    assert_eq!(side.env.as_ref().unwrap()[0].name, "IS_INJECTED");

    // The controller goes away.
    controller.kill().await.unwrap();
    let _ = controller.wait().await;
    let started = std::time::Instant::now();
    crate::kubectl_in(&server, h, &["create", "-f", "-"], Some(&pod("other", "other"))).await;
    assert!(started.elapsed() < Duration::from_secs(5), "an unrelated pod waited on the webhook");
    assert_eq!(container_names(&pods.get("other").await.unwrap()), ["app"]);
    // A pod the SidecarSet selects is refused rather than created without its sidecar
    // (upstream's failurePolicy Fail, for the selected pods only).
    let out = kinetic_testkit::kubectl(
        &server.kubeconfig,
        h,
        &["create", "-f", "-"],
        Some(&pod("web2", "web")),
    )
    .await
    .unwrap();
    assert!(!out.status.success(), "a selected pod was created without the webhook");
}
