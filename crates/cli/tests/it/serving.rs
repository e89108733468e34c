//! Issue 11 end to end: a Knative Service on `kinetic up` is served by the in-process gateway,
//! scales to zero without traffic and is woken by the next request.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::api::{Api, ListParams};

use crate::kubectl;

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: knative-serving
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-autoscaler
  namespace: knative-serving
data:
  scale-to-zero-grace-period: 2s
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
    spec:
      containers:
      - image: IMAGE
        # httpd as PID 1 would ignore SIGTERM and the pod would linger for its grace period
        # (the revision's timeoutSeconds, 300 s): a shell that exits on TERM runs it instead.
        command: [sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
"#;

/// `GET /` to `gateway` with `Host: host`; the status code and the body.
async fn get(gateway: &str, host: &str) -> (u16, String) {
    crate::serving_traffic::get(gateway, host, "/").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knative_service_is_served_scales_to_zero_and_wakes_on_a_request() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(
        &registry,
        "hello",
        "v1",
        &[("www/index.html", "hello from kinetic\n")],
    )
    .await
    .unwrap();
    // `UpDir`: pass or fail, what the agent left (containers, netns, mounts) goes with it.
    let (up, _dir, gateway) = crate::up_with_gateway("node-serving", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let clonesets: Api<CloneSet> = Api::namespaced(client.clone(), "default");
    let revision_pods = ListParams::default().labels("serving.knative.dev/service=hello");
    crate::apply_when_served(&up, h, &MANIFEST.replace("IMAGE", &image)).await;
    let scenario = scenario(&up, h, &gateway, &pods, &clonesets, &revision_pods);
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario)).await;

    // Pass or fail, containers outlive a stopped agent by design: delete the pods before
    // stopping `up`.
    kubectl(&up, h, &["delete", "ksvc", "hello", "--wait=true"]).await;
    for i in 0.. {
        let cs = clonesets.list(&ListParams::default()).await.unwrap().items.len();
        if cs == 0 && pods.list(&revision_pods).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 600, "pods or CloneSets left after deleting the Service");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(up);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Serve, scale to zero, wake from zero.
async fn scenario(
    up: &crate::Kinetic,
    h: &std::path::Path,
    gateway: &str,
    pods: &Api<Pod>,
    clonesets: &Api<CloneSet>,
    revision_pods: &ListParams,
) {
    let host = crate::route_host(up, h, "hello").await;

    // Served through the gateway at once: the Route is Ready only once the gateway routes it.
    let (code, body) = get(gateway, &host).await;
    assert_eq!((code, body.as_str()), (200, "hello from kinetic\n"), "first request");
    let (code, _) = get(gateway, "nobody.default.example.com").await;
    assert_eq!(code, 404, "an unknown host");

    // No traffic: after the 6 s window and the 2 s grace period the CloneSet goes to zero and
    // its pod is deleted.
    wait_for_zero(pods, clonesets, revision_pods).await;

    // From zero: the request is held until a new pod is ready, then answered.
    let start = Instant::now();
    let (code, body) = get(gateway, &host).await;
    let took = start.elapsed();
    eprintln!("request from zero answered {code} in {took:?}");
    assert_eq!((code, body.as_str()), (200, "hello from kinetic\n"), "request from zero");
    let cs = clonesets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(cs[0].spec.replicas, Some(1));

    // A burst of 200 concurrent requests from zero: every one answered 200, none lost or reset.
    wait_for_zero(pods, clonesets, revision_pods).await;
    let start = Instant::now();
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let (gateway, host) = (gateway.to_owned(), host.clone());
            tokio::spawn(async move {
                let (code, body) = get(&gateway, &host).await;
                (code, body, start.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for b in burst {
        answers.push(b.await.unwrap());
    }
    let ok = answers.iter().filter(|(c, b, _)| *c == 200 && b == "hello from kinetic\n").count();
    let last = answers.iter().map(|a| a.2).max().unwrap_or_default();
    eprintln!("burst of 200 from zero: {ok} answered 200, the last after {last:?}");
    assert_eq!(ok, 200, "{:?}", answers.iter().find(|(c, _, _)| *c != 200));
}

/// Waits until the Service's CloneSet is at zero replicas and its pods are gone.
async fn wait_for_zero(pods: &Api<Pod>, clonesets: &Api<CloneSet>, revision_pods: &ListParams) {
    let idle = Instant::now();
    for i in 0.. {
        let cs = clonesets.list(&ListParams::default()).await.unwrap().items;
        let replicas: Vec<Option<i32>> = cs.iter().map(|c| c.spec.replicas).collect();
        let left = pods.list(revision_pods).await.unwrap().items.len();
        if replicas == [Some(0)] && left == 0 {
            break;
        }
        assert!(i < 1200, "not scaled to zero: replicas {replicas:?}, {left} pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("scaled to zero {:?} after the last request", idle.elapsed());
}

/// `kinetic gateway --kubeconfig`: the same data plane against a cluster, alone; it answers
/// for the hosts it knows (none here: 404 with a reason) and exits cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinetic_gateway_runs_against_a_cluster_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let up = crate::start_with("up", dir.path(), crate::free_port(), &["--no-node"]).await;
    let gateway = format!("127.0.0.1:{}", crate::free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["gateway", "--kubeconfig", up.kubeconfig.to_str().unwrap(), "--listen", &gateway])
        .env("KINETIC_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the gateway prints its address")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(line, format!("serving gateway: http://{gateway}"));
    let (code, body) = get(&gateway, "hello.default.example.com").await;
    assert_eq!(code, 404, "{body}");
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the gateway exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
