//! Issue 12's code-pool burst defect, end to end on `kinetic up` with runc and the serving
//! gateway: a code pool smaller than a burst of cold Knative Services. `kinetic bench
//! coldstart` found 34–35 of 50 requests failing: once the pool was empty, each revision's
//! CloneSet created a pod of its own template, whose image is a code image without a runtime
//! (`exec: "main.main": executable file not found`), so it never served. Now an empty code
//! pool's consumer creates a pod of the pool's runtime, claimed from the start, which the node
//! agent specialises once the runtime is ready: every request is answered by the injected
//! code, some only later, and no pod ever runs a code image as its container.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::knative::SERVICE_LABEL;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::pool::{CLAIMED_BY_ANNOTATION, POOL_LABEL};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::python;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams};

use crate::kubectl;
use crate::podpool::wait_full;

const SERVICES: usize = 6;
const POOL_SIZE: usize = 2;
const ANSWER: &str = "hello from injected code\n";
const MAIN: &str = "def main():\n    return \"hello from injected code\\n\"\n";

const CONFIG: &str = r#"apiVersion: v1
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

fn service(name: &str, code: &str) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
        kinetic.dev/pod-pool: py
    spec:
      containers:
      - image: {code}
        args: [main.main]
        ports:
        - containerPort: {port}
"#,
        port = python::PORT
    )
}

/// Every pod of the namespace runs the pool's runtime image: none was made of a revision's
/// template (a code image, which cannot run).
async fn assert_only_runtime_pods(pods: &Api<Pod>, runtime: &str) {
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let images: Vec<&str> = p
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.image.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(images, [runtime], "pod {} runs something else than the runtime", p.name_any());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_a_code_pool_is_answered_by_the_injected_code_every_time() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let runtime = python::runtime(&registry, "v1").await.unwrap();
    let code = python::code(&registry, "burst-code", "v1", &[("main.py", MAIN)]).await.unwrap();
    // `UpDir`: pass or fail, what the agent left (containers, netns, mounts) goes with it.
    let (up, _dir, gateway) = crate::up_with_gateway("node-code-burst", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let clonesets: Api<CloneSet> = Api::namespaced(client.clone(), "default");
    crate::apply_when_served(&up, h, CONFIG).await;
    let pool = python::pool_manifest("py", &runtime, i32::try_from(POOL_SIZE).unwrap(), 2);
    crate::apply_when_served(&up, h, &pool).await;
    let scenario = scenario(&up, h, &gateway, &pods, &clonesets, &runtime, &code);
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario)).await;

    // Pass or fail, containers outlive a stopped agent by design: delete the pods before
    // stopping `up`; and nothing may be left of the Services and the pool.
    kubectl(&up, h, &["delete", "ksvc", "--all", "--wait=true"]).await;
    kubectl(&up, h, &["delete", "podpool", "py", "--wait=true"]).await;
    let mut orphans = Vec::new();
    for i in 0.. {
        let cs = clonesets.list(&ListParams::default()).await.unwrap().items.len();
        let left: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect();
        if cs == 0 && left.is_empty() {
            break;
        }
        if i == 300 {
            // Left 30 s after their owners went: orphans. Delete them so the host is clean,
            // then fail.
            orphans = left;
            let dp = DeleteParams::default().grace_period(0);
            let _ = pods.delete_collection(&dp, &ListParams::default()).await;
        }
        assert!(i < 900, "pods or CloneSets left after deleting the Services and the pool");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(up);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(orphans.is_empty(), "pods left 30 s after their Services and pool: {orphans:?}");
}

async fn scenario(
    up: &crate::Kinetic,
    h: &std::path::Path,
    gateway: &str,
    pods: &Api<Pod>,
    clonesets: &Api<CloneSet>,
    runtime: &str,
    code: &str,
) {
    wait_full(pods, "py", POOL_SIZE).await;
    // All Services at once: their first pods already outnumber the pool.
    let names: Vec<String> = (0..SERVICES).map(|i| format!("burst{i}")).collect();
    let all: String = names.iter().map(|n| service(n, code)).collect::<Vec<_>>().join("---\n");
    crate::apply_when_served(up, h, &all).await;
    let mut hosts = Vec::new();
    for n in &names {
        hosts.push(crate::route_host(up, h, n).await);
    }
    assert_only_runtime_pods(pods, runtime).await;

    // Every Service at zero, the pool full again.
    for i in 0.. {
        let cs = clonesets.list(&ListParams::default()).await.unwrap().items;
        let at_zero = cs.iter().filter(|c| c.spec.replicas == Some(0)).count();
        let serving = pods.list(&ListParams::default().labels(SERVICE_LABEL)).await.unwrap();
        if cs.len() == SERVICES && at_zero == SERVICES && serving.items.is_empty() {
            break;
        }
        assert!(i < 1800, "not all at zero in 180 s: {at_zero} of {} CloneSets", cs.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool_before: BTreeSet<String> =
        wait_full(pods, "py", POOL_SIZE).await.into_iter().collect();

    // The burst: one request to each Service at once; each Service's pods are read as soon
    // as its answer came (the first answered go back to zero while the last are answered).
    let answers = futures::future::join_all(names.iter().zip(&hosts).map(|(n, host)| async move {
        let answer = crate::serving_traffic::get(gateway, host, "/").await;
        let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={n}"));
        (answer, pods.list(&lp).await.unwrap().items)
    }))
    .await;
    // Whose pods answered: the pool's ready pods (claimed), the rest pods of the pool's
    // runtime made claimed; all specialised by code, none of a code image.
    let mut from_pool = 0;
    for (n, ((status, body), serving)) in names.iter().zip(&answers) {
        assert_eq!((*status, body.as_str()), (200, ANSWER), "{n}'s request in the burst");
        assert!(!serving.is_empty(), "{n} has no pod right after its answer");
        for p in serving {
            assert!(
                p.labels().contains_key(POOL_LABEL),
                "{n}'s pod {} is no pool pod",
                p.name_any()
            );
            assert!(p.annotations().contains_key(CLAIMED_BY_ANNOTATION), "{}", p.name_any());
            from_pool += usize::from(pool_before.contains(&p.name_any()));
        }
    }
    assert_eq!(from_pool, POOL_SIZE, "each of the pool's ready pods answered one Service");
    assert_only_runtime_pods(pods, runtime).await;
    let events = kubectl(up, h, &["get", "events"]).await;
    assert!(events.contains("runtime for its code"), "{events}");
    assert!(!events.contains("executable file not found"), "{events}");
}
