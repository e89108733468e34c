//! Issue 12 part 4 end to end on `kinetic up` with runc: a Knative Service whose template names
//! a PodPool (`kinetic.dev/pod-pool`) scales from zero by claiming a ready placeholder pod,
//! which the node agent specialises by image into the revision's container; the first request
//! through the gateway is answered by that pod (same UID as a pod that was in the pool), and
//! the pool refills. The pool-backed cold-start latency is printed, with the claimed →
//! specialised → ready split from the pod's timeline.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, state};
use kinetic_api::timeline::Timeline;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams};

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
apiVersion: kinetic.dev/v1alpha1
kind: PodPool
metadata:
  name: warm
  namespace: default
spec:
  minReady: 2
  maxReady: 2
  template:
    metadata:
      labels:
        app: warm
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: placeholder
        image: PLACEHOLDER
        command: [sleep, '3600']
"#;

const SERVICE: &str = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: pooled
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
        kinetic.dev/pod-pool: warm
    spec:
      containers:
      - image: IMAGE
        command: [sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
"#;

/// `GET /` to `gateway` with `Host: host`; the status code and the body.
async fn get(gateway: &str, host: &str) -> (u16, String) {
    crate::serving_traffic::get(gateway, host, "/").await
}

/// Waits until the pool holds `n` unclaimed Ready pods; returns their UIDs.
async fn wait_full(pods: &Api<Pod>, n: usize) -> BTreeSet<String> {
    let lp = ListParams::default()
        .labels(&format!("{POOL_LABEL}=warm,{POOL_STATE_LABEL}={}", state::READY));
    for i in 0.. {
        let ready: BTreeSet<String> = pods
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::workloads::is_ready(p))
            .filter_map(|p| p.uid())
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(i < 600, "the pool did not fill to {n} ready pods in 60 s: {ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knative_service_with_a_pod_pool_answers_from_zero_with_a_pool_pod_and_the_pool_refills()
{
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let placeholder =
        kinetic_testkit::images::busybox(&registry, "placeholder", "v1", &[]).await.unwrap();
    let image = kinetic_testkit::images::busybox(
        &registry,
        "pooled",
        "v1",
        &[("www/index.html", "hello from a pool pod\n")],
    )
    .await
    .unwrap();
    // `UpDir`: pass or fail, what the agent left (containers, netns, mounts) goes with it.
    let (up, _dir, gateway) = crate::up_with_gateway("node-pooled", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let clonesets: Api<CloneSet> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, h, &MANIFEST.replace("PLACEHOLDER", &placeholder)).await;
    let scenario = scenario(&up, h, &gateway, &pods, &clonesets, &image);
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario)).await;

    // Pass or fail, containers outlive a stopped agent by design: delete the pods before
    // stopping `up`.
    kubectl(&up, h, &["delete", "ksvc", "pooled", "--ignore-not-found", "--wait=true"]).await;
    kubectl(&up, h, &["delete", "podpool", "warm", "--wait=true"]).await;
    let dp = DeleteParams::default().grace_period(0);
    let _ = pods.delete_collection(&dp, &ListParams::default()).await.unwrap();
    for i in 0.. {
        let cs = clonesets.list(&ListParams::default()).await.unwrap().items.len();
        if cs == 0 && pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 600, "pods or CloneSets left after deleting the Service and the pool");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(up);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(
    up: &crate::Kinetic,
    h: &std::path::Path,
    gateway: &str,
    pods: &Api<Pod>,
    clonesets: &Api<CloneSet>,
    image: &str,
) {
    let revision_pods = ListParams::default().labels("serving.knative.dev/service=pooled");
    let pool_before = wait_full(pods, 2).await;
    crate::apply_when_served(up, h, &SERVICE.replace("IMAGE", image)).await;

    let host = crate::route_host(up, h, "pooled").await;
    // The revision's first pod came from the pool too (the pool was full when it started).
    let first = pods.list(&revision_pods).await.unwrap().items;
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(pool_before.contains(&first[0].uid().unwrap()), "the first pod is a pool pod");
    let (code, body) = get(gateway, &host).await;
    assert_eq!((code, body.as_str()), (200, "hello from a pool pod\n"), "first request");

    // No traffic: the CloneSet goes to zero, its pod is deleted, and the pool is full again.
    for i in 0.. {
        let cs = clonesets.list(&ListParams::default()).await.unwrap().items;
        let replicas: Vec<Option<i32>> = cs.iter().map(|c| c.spec.replicas).collect();
        let left = pods.list(&revision_pods).await.unwrap().items.len();
        if replicas == [Some(0)] && left == 0 {
            break;
        }
        assert!(i < 1200, "not scaled to zero: replicas {replicas:?}, {left} pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool_now = wait_full(pods, 2).await;

    // From zero: claim + specialise + route.
    let start = Instant::now();
    let wall = jiff::Timestamp::now();
    let (code, body) = get(gateway, &host).await;
    let took = start.elapsed();
    assert_eq!((code, body.as_str()), (200, "hello from a pool pod\n"), "request from zero");
    let serving = pods.list(&revision_pods).await.unwrap().items;
    assert_eq!(serving.len(), 1, "{serving:#?}");
    let p = &serving[0];
    assert!(
        pool_now.contains(&p.uid().unwrap()),
        "the request from zero was answered by a pod that was in the pool: {p:#?}"
    );
    let owner = p.owner_references().iter().find(|o| o.controller == Some(true)).unwrap();
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("CloneSet", "pooled-00001-deployment"));
    let tl: Timeline =
        serde_json::from_str(&p.annotations()[kinetic_api::timeline::ANNOTATION]).unwrap();
    let s = tl.specialization.unwrap_or_default();
    let ms = |a: jiff::Timestamp, b: jiff::Timestamp| {
        Duration::try_from(b.duration_since(a)).unwrap_or_default()
    };
    let split = match (s.claimed, s.observed, s.specialized, s.ready) {
        (Some(c), Some(o), Some(sp), Some(r)) => format!(
            "request→claimed {:?}, claimed→seen by the agent {:?}, seen→container started {:?}, \
             started→ready {:?}",
            ms(wall, c),
            ms(c, o),
            ms(o, sp),
            ms(sp, r)
        ),
        other => format!("timeline incomplete: {other:?}"),
    };
    eprintln!("pool-backed cold start: first request from zero answered in {took:?} ({split})");

    // The pool refills: two unclaimed ready pods again, the claimed one not among them.
    let refilled = wait_full(pods, 2).await;
    assert!(!refilled.contains(&p.uid().unwrap()));
    // The revision stays healthy: replacing the placeholder is not a container failure.
    let out = kubectl(
        up,
        h,
        &[
            "get",
            "rev",
            "pooled-00001",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="ContainerHealthy")].status}"#,
        ],
    )
    .await;
    assert_eq!(out.trim(), "True", "{}", kubectl(up, h, &["get", "rev", "-o", "yaml"]).await);
    // Its image digest is resolved from the claimed pod, whose container has the pool's name.
    let digest = kubectl(
        up,
        h,
        &[
            "get",
            "rev",
            "pooled-00001",
            "-o",
            "jsonpath={.status.containerStatuses[0].imageDigest}",
        ],
    )
    .await;
    assert!(digest.contains("/pooled@sha256:"), "the app image, not the placeholder: {digest:?}");
}
