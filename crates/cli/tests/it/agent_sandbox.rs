//! kubernetes-sigs/agent-sandbox on `kinetic up` with real containers (issue 12 part 6):
//! upstream's examples apply unchanged with `kubectl apply`; a SandboxClaim against a
//! SandboxWarmPool gets a Ready Sandbox whose pod is one of the pool's (same UID and IP) and
//! the pool refills; a claim whose pool is empty falls back to a new pod; a claim naming a
//! missing template says so in its `Ready` condition. Prints the claim → Ready times.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kinetic_api::agents::{
    LAUNCH_TYPE_LABEL, POD_NAME_ANNOTATION, Sandbox, SandboxClaim, SandboxWarmPool,
};
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, state};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/agent-sandbox");
const WAIT: Duration = Duration::from_secs(60);

const TEMPLATES: &str = "apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxTemplate
metadata:
  name: web
spec:
  podTemplate:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: IMAGE
        command: [httpd, -f, -p, '8080', -h, /www]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxTemplate
metadata:
  name: cold
spec:
  podTemplate:
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: IMAGE
        command: [httpd, -f, -p, '8080', -h, /www]
---
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxWarmPool
metadata:
  name: web-pool
spec:
  replicas: 2
  sandboxTemplateRef:
    name: web
---
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxWarmPool
metadata:
  name: empty-pool
spec:
  replicas: 0
  sandboxTemplateRef:
    name: cold
";

fn ready_condition<'a>(
    conds: impl IntoIterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Option<(String, String, String)> {
    conds
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn claim_ready(c: Option<&SandboxClaim>) -> bool {
    c.and_then(|c| c.status.as_ref())
        .and_then(|s| ready_condition(&s.conditions))
        .is_some_and(|(s, _, _)| s == "True")
}

/// The unclaimed, Ready pods of warm pool `pool`: name → uid.
async fn pool_pods(pods: &Api<Pod>, pool: &str, n: usize) -> Vec<(String, String)> {
    let lp = ListParams::default()
        .labels(&format!("{POOL_LABEL}={pool},{POOL_STATE_LABEL}={}", state::READY));
    for i in 0.. {
        let ready: Vec<(String, String)> = pods
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::workloads::is_ready(p))
            .map(|p| (p.name_any(), p.uid().unwrap()))
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(i < 600, "warm pool {pool} did not fill to {n} ready pods in 60 s: {ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Creates claim `name` of `template` and waits until it is Ready; the time that took.
async fn claim_until_ready(claims: &Api<SandboxClaim>, name: &str, template: &str) -> Duration {
    let c: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
        "metadata": {"name": name}, "spec": {"sandboxTemplateRef": {"name": template}},
    }))
    .unwrap();
    let started = Instant::now();
    claims.create(&PostParams::default(), &c).await.unwrap();
    let waited =
        tokio::time::timeout(WAIT, await_condition(claims.clone(), name, claim_ready)).await;
    let took = started.elapsed();
    if waited.is_err() {
        panic!("claim {name} not Ready in 60 s: {:#?}", claims.get_opt(name).await);
    }
    waited.unwrap().unwrap();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sandbox_examples_apply_and_a_claim_is_answered_from_the_warm_pool() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(
        &registry,
        "web",
        "v1",
        &[("www/index.html", "sandbox\n")],
    )
    .await
    .unwrap();
    let (up, _dir) = crate::up_with_node("node-sandbox", &slot).await;
    let home = tempfile::tempdir().unwrap();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<SandboxClaim> = Api::namespaced(client.clone(), "default");
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), "default");
    let pools: Api<SandboxWarmPool> = Api::namespaced(client.clone(), "default");

    // -- (1) Upstream's examples, unchanged, with kubectl apply. ------------------------------
    for f in ["aio-sandbox.yaml", "python-sandbox-warmpool.yaml", "sandboxclaim.yaml"] {
        let manifest = std::fs::read_to_string(format!("{EXAMPLES}/{f}")).unwrap();
        crate::apply_when_served(&up, home.path(), &manifest).await;
    }
    // The Sandbox gets its pod and headless Service and reports them.
    let aio = "aio-sandbox-example";
    let sb = tokio::time::timeout(
        WAIT,
        await_condition(sandboxes.clone(), aio, |s: Option<&Sandbox>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| !st.service.is_empty())
        }),
    )
    .await
    .expect("the example Sandbox reports its Service")
    .unwrap()
    .unwrap();
    let st = sb.status.unwrap();
    assert_eq!(st.service_fqdn, format!("{aio}.default.svc.cluster.local"));
    assert_eq!(st.replicas, 1);
    assert!(st.selector.starts_with("agents.x-k8s.io/sandbox-name-hash="), "{}", st.selector);
    let p = pods.get(aio).await.unwrap();
    assert_eq!(p.labels()["sandbox"], "aio-sandbox", "the template's labels");
    assert_eq!(p.annotations()["test"], "yes", "the template's annotations");
    let svc: Api<Service> = Api::namespaced(client.clone(), "default");
    let s = svc.get(aio).await.unwrap();
    assert_eq!(s.spec.unwrap().cluster_ip.as_deref(), Some("None"), "headless");
    // -- (4) The claim and the pool name templates that do not exist: a clear condition. ------
    let c = tokio::time::timeout(
        WAIT,
        await_condition(claims.clone(), "my-secure-sandbox", |c: Option<&SandboxClaim>| {
            c.and_then(|c| c.status.as_ref()).and_then(|s| ready_condition(&s.conditions)).is_some()
        }),
    )
    .await
    .expect("the example claim gets a Ready condition")
    .unwrap()
    .unwrap();
    let cond = ready_condition(&c.status.unwrap().conditions).unwrap();
    assert_eq!(
        cond,
        (
            "False".to_owned(),
            "TemplateNotFound".to_owned(),
            "SandboxTemplate \"secure-datascience-template\" not found".to_owned()
        )
    );
    let p = tokio::time::timeout(
        WAIT,
        await_condition(pools.clone(), "python-sandbox-warmpool", |p: Option<&SandboxWarmPool>| {
            p.and_then(|p| p.status.as_ref()).and_then(|s| ready_condition(&s.conditions)).is_some()
        }),
    )
    .await
    .expect("the example pool gets a Ready condition")
    .unwrap()
    .unwrap();
    let cond = ready_condition(&p.status.unwrap().conditions).unwrap();
    assert_eq!((cond.0.as_str(), cond.1.as_str()), ("False", "TemplateNotFound"), "{cond:?}");
    let out = crate::kubectl(&up, home.path(), &["get", "swp"]).await;
    assert!(out.contains("python-sandbox-warmpool"), "{out}");
    // The placeholder image cannot be pulled: remove the example objects.
    crate::kubectl(&up, home.path(), &["delete", "sandbox", aio, "--wait=true"]).await;

    // -- (2) A claim answered from the warm pool. ---------------------------------------------
    crate::apply_when_served(&up, home.path(), &TEMPLATES.replace("IMAGE", &image)).await;
    let before = pool_pods(&pods, "web-pool", 2).await;
    tokio::time::timeout(
        WAIT,
        await_condition(pools.clone(), "web-pool", |p: Option<&SandboxWarmPool>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.ready_replicas == 2)
        }),
    )
    .await
    .expect("the warm pool reports 2 ready replicas")
    .unwrap();
    let warm = claim_until_ready(&claims, "warm", "web").await;
    let c = claims.get("warm").await.unwrap();
    let st = c.status.unwrap();
    assert_eq!(st.sandbox.name, "warm");
    assert!(!st.sandbox.pod_ips.is_empty(), "the claim reports its pod IPs");
    let sb = sandboxes.get("warm").await.unwrap();
    assert_eq!(sb.labels()[LAUNCH_TYPE_LABEL], "warm");
    let pod_name = sb.annotations()[POD_NAME_ANNOTATION].clone();
    let pod = pods.get(&pod_name).await.unwrap();
    assert!(
        before.contains(&(pod_name.clone(), pod.uid().unwrap())),
        "the sandbox's pod {pod_name} is one of the pool's {before:?}"
    );
    assert_eq!(pod.labels()[POOL_STATE_LABEL], state::SPECIALIZED, "handed over");
    let owners: Vec<(&str, &str)> =
        pod.owner_references().iter().map(|o| (o.kind.as_str(), o.name.as_str())).collect();
    assert_eq!(owners, [("Sandbox", "warm")]);
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.pod_ip.clone()).as_deref(),
        st.sandbox.pod_ips.first().map(String::as_str),
    );
    // The pool refills to two ready pods, without the claimed one.
    let refilled = pool_pods(&pods, "web-pool", 2).await;
    assert!(!refilled.iter().any(|(n, _)| *n == pod_name), "{refilled:?}");

    // -- (3) An empty pool: the claim falls back to a new pod. --------------------------------
    let cold = claim_until_ready(&claims, "cold-claim", "cold").await;
    let sb = sandboxes.get("cold-claim").await.unwrap();
    assert_eq!(sb.labels()[LAUNCH_TYPE_LABEL], "cold");
    assert!(!sb.annotations().contains_key(POD_NAME_ANNOTATION));
    assert!(pods.get_opt("cold-claim").await.unwrap().is_some(), "a pod of the Sandbox's name");
    println!(
        "agent-sandbox claim -> Ready: warm pool {} ms, empty pool (new pod) {} ms",
        warm.as_millis(),
        cold.as_millis()
    );
    let events = crate::kubectl(&up, home.path(), &["get", "events"]).await;
    assert!(events.contains("SandboxAdopted"), "{events}");

    // Containers outlive a killed agent by design: delete the pods before stopping `kinetic up`.
    for kind in ["sandboxclaim", "sandboxwarmpool", "sandbox"] {
        crate::kubectl(&up, home.path(), &["delete", kind, "--all", "--wait=true"]).await;
    }
    let dp = DeleteParams::default().grace_period(0);
    let _ = pods.delete_collection(&dp, &ListParams::default()).await.unwrap();
    for i in 0.. {
        if pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting the sandboxes and pools");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
