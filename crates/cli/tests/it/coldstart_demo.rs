//! The README demo's cold-start step (`scripts/demo.sh`, issue 12), on `kinetic up` with runc:
//! the files the demo applies (`examples/coldstart/`: a PodPool of two placeholder pods, and two
//! Knative Services of one image, `hello` without a pool and `hello-pooled` naming it), with the
//! demo's images swapped for the test registry's. Both answer through the gateway, go to zero,
//! and are woken by one request each: both answer 200 with the page, `hello-pooled`'s from a
//! pod that was in the pool, `hello`'s from a created one. The two times are printed, as the
//! demo prints them (the figures are the benchmark's business, not asserted).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, state};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams};

use crate::kubectl;
use crate::serving_traffic::get;

const AUTOSCALER: &str = r#"apiVersion: v1
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
"#;

const PAGE: &str = "hello from v2\n";

/// A file of `examples/coldstart`, with the demo's registry images replaced.
fn example(name: &str, placeholder: &str, app: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coldstart").join(name);
    std::fs::read_to_string(&p)
        .unwrap()
        .replace("127.0.0.1:5000/web:v1", placeholder)
        .replace("127.0.0.1:5000/web:v2", app)
}

/// The UIDs of the pool's unclaimed Ready pods, once there are `n`.
async fn pool_full(pods: &Api<Pod>, n: usize) -> BTreeSet<String> {
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

/// The pods of the Knative Service `svc`.
async fn service_pods(pods: &Api<Pod>, svc: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("serving.knative.dev/service={svc}"));
    pods.list(&lp).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_cold_starts_a_knative_service_from_zero_with_and_without_a_pool() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let placeholder = kinetic_testkit::images::busybox(&registry, "web", "v1", &[]).await.unwrap();
    let app = kinetic_testkit::images::busybox(&registry, "web", "v2", &[("www/index.html", PAGE)])
        .await
        .unwrap();
    let (up, _dir, gateway) = crate::up_with_gateway("node-demo-cold", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, h, AUTOSCALER).await;
    crate::apply_when_served(&up, h, &example("pool.yaml", &placeholder, &app)).await;
    let services = example("services.yaml", &placeholder, &app);
    let scenario = scenario(&up, h, &gateway, &pods, &services);
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario)).await;

    // Pass or fail, as the demo's clean-up: the Services and the pool, then every pod.
    kubectl(&up, h, &["delete", "ksvc", "--all", "--wait=true"]).await;
    kubectl(&up, h, &["delete", "podpool", "warm", "--ignore-not-found", "--wait=true"]).await;
    let dp = DeleteParams::default().grace_period(0);
    let _ = pods.delete_collection(&dp, &ListParams::default()).await.unwrap();
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 600, "pods left after deleting the Services and the pool");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(up);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(up: &crate::Kinetic, h: &Path, gateway: &str, pods: &Api<Pod>, services: &str) {
    pool_full(pods, 2).await;
    crate::apply_when_served(up, h, services).await;
    let mut hosts = Vec::new();
    for svc in ["hello", "hello-pooled"] {
        let host = crate::route_host(up, h, svc).await;
        assert_eq!(get(gateway, &host, "/").await, (200, PAGE.to_owned()), "{svc}: first request");
        hosts.push((svc, host));
    }

    // No traffic: both go to zero (6 s window, 2 s grace) and the pool is full again.
    for i in 0.. {
        let mut left = 0;
        for (svc, _) in &hosts {
            left += service_pods(pods, svc).await.len();
        }
        if left == 0 {
            break;
        }
        assert!(i < 1200, "not scaled to zero in 120 s: {left} pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = pool_full(pods, 2).await;

    // From zero, one request each, as the demo times them.
    for (svc, host) in &hosts {
        let start = Instant::now();
        let answer = get(gateway, host, "/").await;
        let took = start.elapsed();
        assert_eq!(answer, (200, PAGE.to_owned()), "{svc}: request from zero");
        let serving = service_pods(pods, svc).await;
        assert_eq!(serving.len(), 1, "{svc}: {serving:#?}");
        let from_pool = pool.contains(&serving[0].uid().unwrap());
        assert_eq!(from_pool, *svc == "hello-pooled", "{svc} answered by a pool pod");
        eprintln!(
            "{svc}: first request from zero answered in {took:?} (from the pool: {from_pool})"
        );
    }
}
