//! kubernetes-sigs/agent-sandbox on `kinetic up` with real containers (issue 12 part 6):
//! upstream's examples (`v1alpha1` and `v1beta1`) apply unchanged with `kubectl apply`; a
//! SandboxClaim against a SandboxWarmPool gets a Ready Sandbox whose pod is one of the pool's
//! (same UID and IP), within the claim's own reconcile, and the pool refills; a `v1beta1`
//! claim's `additionalPodMetadata` and `safeToEvict` reach the warm pod; a claim whose pool is
//! empty falls back to a new pod, with the claim's `env` as the template allows; a claim
//! naming a missing template, or with `env` its template disallows, says so in its `Ready`
//! condition; a claim naming neither a template nor a warm pool is refused with a field cause;
//! a Sandbox's `volumeClaimTemplates` become its PersistentVolumeClaims. Prints the claim →
//! Ready times.

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
  envVarsInjectionPolicy: Allowed
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

/// Creates claim `name` with `spec` and waits until it is Ready; the time that took.
async fn claim_until_ready(
    claims: &Api<SandboxClaim>,
    name: &str,
    spec: serde_json::Value,
) -> Duration {
    let c: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    let sandboxes: Api<Sandbox> = Api::namespaced(claims.clone().into_client(), "default");
    let started = Instant::now();
    // The stages, from watches started before the claim: the Sandbox exists, it is Ready.
    let stage = |cond: fn(Option<&Sandbox>) -> bool| {
        let (api, name) = (sandboxes.clone(), name.to_owned());
        tokio::spawn(async move {
            tokio::time::timeout(WAIT, await_condition(api, &name, cond)).await.ok()?.ok()?;
            Some(started.elapsed())
        })
    };
    let created = stage(|s| s.is_some());
    let ready = stage(|s| {
        s.and_then(|s| s.status.as_ref())
            .and_then(|st| ready_condition(&st.conditions))
            .is_some_and(|(st, _, _)| st == "True")
    });
    claims.create(&PostParams::default(), &c).await.unwrap();
    let waited =
        tokio::time::timeout(WAIT, await_condition(claims.clone(), name, claim_ready)).await;
    let took = started.elapsed();
    if waited.is_err() {
        panic!("claim {name} not Ready in 60 s: {:#?}", claims.get_opt(name).await);
    }
    waited.unwrap().unwrap();
    let ms = |d: Option<Duration>| d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(-1));
    eprintln!(
        "claim {name}: Sandbox created at {} ms, Sandbox Ready at {} ms, claim Ready at {} ms",
        ms(created.await.unwrap()),
        ms(ready.await.unwrap()),
        took.as_millis()
    );
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

    // -- (5) Upstream's v1beta1 example (claims by `warmPoolRef`), unchanged. -------------------
    let ns = "claimed-sandbox-service";
    let dir = format!("{EXAMPLES}/claimed-sandbox-service");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
    crate::apply_when_served(&up, home.path(), &read("namespace.yaml")).await;
    for f in ["template.yaml", "warmpool.yaml"] {
        crate::kubectl_in(&up, home.path(), &["apply", "-n", ns, "-f", "-"], Some(&read(f))).await;
    }
    crate::apply_when_served(&up, home.path(), &read("claims.yaml")).await;
    let ns_claims: Api<SandboxClaim> = Api::namespaced(client.clone(), ns);
    let ns_pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for claim in ["serving-a", "serving-b"] {
        // Its image is on registry.k8s.io, which the test does not reach: the pool has no ready
        // pod, so each claim gets a Sandbox with a new pod, which does not start.
        let c = tokio::time::timeout(
            WAIT,
            await_condition(ns_claims.clone(), claim, |c: Option<&SandboxClaim>| {
                c.and_then(|c| c.status.as_ref()).is_some_and(|s| !s.sandbox.name.is_empty())
            }),
        )
        .await
        .expect("the v1beta1 example claim gets a Sandbox")
        .unwrap()
        .unwrap();
        assert_eq!(c.status.unwrap().sandbox.name, claim);
        let p = ns_pods.get(claim).await.unwrap();
        assert_eq!(p.labels()["sandbox.users.io/serving-group"], "demo", "additionalPodMetadata");
        assert_eq!(p.labels()["app.kubernetes.io/name"], "claimed-sandbox-server");
    }
    let out = crate::kubectl(
        &up,
        home.path(),
        &["get", "sandboxclaims.v1beta1.extensions.agents.x-k8s.io", "-n", ns],
    )
    .await;
    assert!(out.contains("serving-a") && out.contains("serving-b"), "{out}");
    for kind in ["sandboxclaim", "sandboxwarmpool", "sandboxtemplate"] {
        crate::kubectl(&up, home.path(), &["delete", kind, "--all", "-n", ns, "--wait=true"]).await;
    }

    // -- (6) A claim naming neither a template nor a warm pool: refused, with its field. -------
    let bad = "apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxClaim
metadata:
  name: bad
spec:
  lifecycle:
    shutdownPolicy: Retain
";
    let out =
        kinetic_testkit::kubectl(&up.kubeconfig, home.path(), &["apply", "-f", "-"], Some(bad))
            .await
            .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a claim without a template or pool was accepted");
    assert!(
        err.contains("spec: Required value: one of sandboxTemplateRef.name (v1alpha1) or warmPoolRef.name (v1beta1) is required"),
        "{err}"
    );

    // -- (7) A Sandbox's volumeClaimTemplates become its claims, mounted by name. -------------
    let with_volume = "apiVersion: agents.x-k8s.io/v1beta1
kind: Sandbox
metadata:
  name: with-volume
spec:
  volumeClaimTemplates:
  - metadata:
      name: workspace
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Mi
  podTemplate:
    spec:
      containers:
      - name: c
        image: busybox
        volumeMounts:
        - name: workspace
          mountPath: /workspace
";
    crate::apply_when_served(&up, home.path(), with_volume).await;
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), "default");
    let pvc = tokio::time::timeout(
        WAIT,
        await_condition(
            pvcs.clone(),
            "workspace-with-volume",
            |p: Option<&k8s_openapi::api::core::v1::PersistentVolumeClaim>| p.is_some(),
        ),
    )
    .await
    .expect("the Sandbox's PersistentVolumeClaim")
    .unwrap()
    .unwrap();
    assert_eq!(pvc.owner_references()[0].kind, "Sandbox");
    let p = tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), "with-volume", |p: Option<&Pod>| p.is_some()),
    )
    .await
    .expect("the Sandbox's pod")
    .unwrap()
    .unwrap();
    let vols = serde_json::to_value(p.spec.unwrap().volumes).unwrap();
    assert!(
        vols.as_array()
            .unwrap()
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "workspace-with-volume"),
        "{vols}"
    );
    crate::kubectl(&up, home.path(), &["delete", "sandbox", "with-volume", "--wait=true"]).await;

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
    let warm = claim_until_ready(
        &claims,
        "warm",
        json!({"warmPoolRef": {"name": "web-pool"}, "safeToEvict": "false",
               "additionalPodMetadata": {"labels": {"team": "a"}, "annotations": {"note": "n"}}}),
    )
    .await;
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
    assert_eq!(pod.labels()["team"], "a", "additionalPodMetadata");
    assert_eq!(pod.annotations()["note"], "n", "additionalPodMetadata");
    assert_eq!(pod.annotations()["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
    // A second, v1alpha1 claim of the template, warm too.
    let warm2 =
        claim_until_ready(&claims, "warm-2", json!({"sandboxTemplateRef": {"name": "web"}})).await;
    let sb2 = sandboxes.get("warm-2").await.unwrap();
    assert_eq!(sb2.labels()[LAUNCH_TYPE_LABEL], "warm");
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

    // -- (3) An empty pool: the claim falls back to a new pod, with the claim's env. --------
    let cold = claim_until_ready(
        &claims,
        "cold-claim",
        json!({"warmPoolRef": {"name": "empty-pool"}, "env": [{"name": "GREETING", "value": "hi"}]}),
    )
    .await;
    let sb = sandboxes.get("cold-claim").await.unwrap();
    assert_eq!(sb.labels()[LAUNCH_TYPE_LABEL], "cold");
    assert!(!sb.annotations().contains_key(POD_NAME_ANNOTATION));
    let p = pods.get("cold-claim").await.expect("a pod of the Sandbox's name");
    let env = serde_json::to_value(&p.spec.unwrap().containers[0].env).unwrap();
    assert_eq!(env, json!([{"name": "GREETING", "value": "hi"}]));
    // The `web` template does not allow env (unset: Disallowed): the claim says so.
    let c: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": "env-refused"},
        "spec": {"warmPoolRef": {"name": "web-pool"}, "env": [{"name": "A", "value": "1"}]},
    }))
    .unwrap();
    claims.create(&PostParams::default(), &c).await.unwrap();
    let c = tokio::time::timeout(
        WAIT,
        await_condition(claims.clone(), "env-refused", |c: Option<&SandboxClaim>| {
            c.and_then(|c| c.status.as_ref()).and_then(|s| ready_condition(&s.conditions)).is_some()
        }),
    )
    .await
    .expect("the env claim gets a Ready condition")
    .unwrap()
    .unwrap();
    let cond = ready_condition(&c.status.unwrap().conditions).unwrap();
    assert_eq!(
        (cond.0.as_str(), cond.1.as_str()),
        ("False", "EnvVarsInjectionNotAllowed"),
        "{cond:?}"
    );
    assert!(sandboxes.get_opt("env-refused").await.unwrap().is_none());
    eprintln!(
        "agent-sandbox claim -> Ready: warm pool {} ms and {} ms, empty pool (new pod) {} ms",
        warm.as_millis(),
        warm2.as_millis(),
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
