//! The PodPool controller and `podpool::claim` against the embedded API server, through the
//! real `kube` client and `kubectl`. As in `cloneset.rs`, a stand-in kubelet plays the node: it
//! marks every pod Running and Ready (unless paused) and finishes graceful deletions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::pool::{POOL_STATE_LABEL, PodPool};
use kinetic_controllers::podpool::{self, ClaimError};
use kinetic_testkit::TestServer;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Env {
    server: TestServer,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<kinetic_controllers::Result<()>>>,
    kubelet: JoinHandle<()>,
    /// While true the stand-in kubelet leaves new pods not ready.
    paused: Arc<AtomicBool>,
}

impl Env {
    async fn start() -> Self {
        let server = TestServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        kinetic_controllers::crds::install(&client, &podpool::crds()).await.unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(podpool::run(client.clone(), async {
            let _ = rx.await;
        }));
        let paused = Arc::new(AtomicBool::new(false));
        let kubelet = {
            let (client, paused) = (client.clone(), paused.clone());
            tokio::spawn(async move {
                let api: Api<Pod> = Api::all(client.clone());
                let mut s = watcher(api, watcher::Config::default()).applied_objects().boxed();
                let mut waiting: Vec<Pod> = Vec::new();
                loop {
                    // Pods seen while paused are made ready once the pause ends.
                    let next = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
                    match next {
                        Ok(Some(Ok(p))) => waiting.push(p),
                        Ok(_) => return,
                        Err(_) => {}
                    }
                    if paused.load(Ordering::SeqCst) {
                        continue;
                    }
                    for p in std::mem::take(&mut waiting) {
                        let api: Api<Pod> =
                            Api::namespaced(client.clone(), &p.namespace().unwrap());
                        if p.metadata.deletion_timestamp.is_some() {
                            let dp = DeleteParams::default().grace_period(0);
                            let _ = api.delete(&p.name_any(), &dp).await;
                            continue;
                        }
                        let ready =
                            p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(
                                |c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
                            );
                        if ready {
                            continue;
                        }
                        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                        let st = json!({"status": {"phase": "Running", "podIP": "10.0.0.1",
                            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                        let _ = api
                            .patch_status(
                                &p.name_any(),
                                &PatchParams::default(),
                                &Patch::Strategic(st),
                            )
                            .await;
                    }
                }
            })
        };
        Self { server, client, stop: Some(stop), task: Some(task), kubelet, paused }
    }

    fn pools(&self) -> Api<PodPool> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn apply(&self, yaml: &str) {
        self.server.kubectl_stdin_ok(&["apply", "-f", "-"], yaml).await.unwrap();
    }

    /// Live pods of pool `name` in `state`.
    async fn pods(&self, name: &str, state: &str) -> Vec<Pod> {
        let lp = ListParams::default()
            .labels(&format!("kinetic.dev/pool={name},{POOL_STATE_LABEL}={state}"));
        let items = self.pods_api().list(&lp).await.unwrap().items;
        items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
    }

    /// Polls until `pred` holds on the pool.
    async fn wait(&self, name: &str, what: &str, pred: impl Fn(&PodPool) -> bool) -> PodPool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.pools().get(name).await.unwrap();
            if pred(&p) {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not reached; status: {}",
                serde_json::to_string_pretty(&p.status).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn events(&self, reason: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.message.unwrap_or_default())
            .collect()
    }

    /// A ConfigMap to own claimed pods (the garbage collector deletes pods whose owner is
    /// missing).
    async fn claimant(&self, name: &str) -> OwnerReference {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let cm = api.create(&PostParams::default(), &cm).await.unwrap();
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: cm.name_any(),
            uid: cm.uid().unwrap(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        self.kubelet.abort();
        self.server.shutdown().await;
    }
}

fn manifest(name: &str, min: i32, max: i32, timeout: i32) -> String {
    format!(
        "apiVersion: kinetic.dev/v1alpha1
kind: PodPool
metadata:
  name: {name}
  namespace: default
spec:
  minReady: {min}
  maxReady: {max}
  specializationTimeoutSeconds: {timeout}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: main
        image: busybox
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_claimants_on_ten_ready_pods_get_ten_distinct_pods_and_ten_pool_empty() {
    let env = Env::start().await;
    env.apply(&manifest("web", 10, 10, 300)).await;
    env.wait("web", "10 ready", |p| p.status.as_ref().is_some_and(|s| s.ready == 10)).await;
    let out = env.server.kubectl_ok(&["get", "podpool", "web"]).await.unwrap();
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "CLAIMED", "STARTING", "SIZE", "AGE"], "{out}");
    let pods = env.pods("web", "ready").await;
    assert!(
        pods.iter()
            .all(|p| p.annotations()["controller.kubernetes.io/pod-deletion-cost"] == "-1000")
    );

    // Replacements stay not ready, so only the 10 pods ready now can be claimed.
    env.paused.store(true, Ordering::SeqCst);
    let owner = env.claimant("claimant").await;
    let claims = (0..20).map(|_| {
        let (client, owner) = (env.client.clone(), owner.clone());
        tokio::spawn(async move { podpool::claim(&client, "default", "web", &owner).await })
    });
    let results = futures::future::join_all(claims).await;
    let mut got: Vec<String> = Vec::new();
    let mut empty = 0;
    for r in results {
        match r.unwrap() {
            Ok(p) => got.push(p.name_any()),
            Err(ClaimError::PoolEmpty { .. }) => empty += 1,
            Err(e) => panic!("unexpected claim error: {e:?}"),
        }
    }
    got.sort();
    got.dedup();
    assert_eq!((got.len(), empty), (10, 10), "10 distinct pods and 10 PoolEmpty");
    for name in &got {
        let p = env.pods_api().get(name).await.unwrap();
        assert_eq!(p.labels()[POOL_STATE_LABEL], "claimed");
        assert_eq!(p.annotations()["kinetic.dev/claimed-by"], "ConfigMap/claimant");
        assert!(p.annotations().contains_key("kinetic.dev/claimed-at"));
        assert!(!p.annotations().contains_key("controller.kubernetes.io/pod-deletion-cost"));
        let owners: Vec<&str> = p.owner_references().iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(owners, ["ConfigMap"], "the pool's ownerReference moved to the claimant");
    }
    // The pool refills at once (watch-driven): 10 new pods, starting while the node is paused.
    let st = env
        .wait("web", "refilled", |p| {
            p.status.as_ref().is_some_and(|s| s.starting == 10 && s.claimed == 10 && s.ready == 0)
        })
        .await;
    assert_eq!(st.status.unwrap().claim_history.len(), 10);
    env.paused.store(false, Ordering::SeqCst);
    env.wait("web", "10 ready again", |p| p.status.as_ref().is_some_and(|s| s.ready == 10)).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_pod_never_specialized_is_deleted_after_the_timeout_and_the_pool_refills() {
    let env = Env::start().await;
    env.apply(&manifest("fn", 2, 2, 1)).await;
    env.wait("fn", "2 ready", |p| p.status.as_ref().is_some_and(|s| s.ready == 2)).await;
    let owner = env.claimant("crashed").await;
    let abandoned = podpool::claim(&env.client, "default", "fn", &owner).await.unwrap();
    let kept = podpool::claim(&env.client, "default", "fn", &owner).await.unwrap();
    let kept = podpool::mark_specialized(&env.client, &kept).await.unwrap();
    // The abandoned claim goes after its second; the specialised one stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.pods_api().get_opt(&abandoned.name_any()).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the abandoned claim was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Events are written in the background: wait for it.
    loop {
        let events = env.events("SpecializationTimeout").await;
        if events.iter().any(|m| m.contains(&abandoned.name_any())) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SpecializationTimeout Event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = env.pods_api().get(&kept.name_any()).await.unwrap();
    assert_eq!(still.labels()[POOL_STATE_LABEL], "specialized");
    env.wait("fn", "refilled", |p| {
        p.status.as_ref().is_some_and(|s| s.ready == 2 && s.claimed == 0)
    })
    .await;
    let ready = env.pods("fn", "ready").await;
    assert!(ready.iter().all(|p| p.name_any() != abandoned.name_any()));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_above_max_ready_is_refused_with_a_condition_and_an_event() {
    let env = Env::start().await;
    env.apply(&manifest("bad", 3, 1, 30)).await;
    let p = env
        .wait("bad", "InvalidSpec", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "InvalidSpec"))
        })
        .await;
    let c = &p.status.unwrap().conditions[0];
    assert_eq!(c.status, "False");
    assert!(c.message.contains("spec.minReady"), "{}", c.message);
    assert!(env.pods("bad", "ready").await.is_empty(), "an invalid pool makes no pods");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.events("InvalidSpec").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no InvalidSpec Event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fixed, it fills.
    env.apply(&manifest("bad", 1, 1, 30)).await;
    env.wait("bad", "1 ready", |p| p.status.as_ref().is_some_and(|s| s.ready == 1)).await;
    env.stop().await;
}

/// A claim by image (`claim_for_image`) moves the ownerReference as a plain claim does (the
/// strategic merge patch it needs for the container list would otherwise merge the owner lists
/// by uid and leave the pool a second controller), sets the image in place and carries the
/// whole claimant container in the annotation; a pod the node agent labels `failed` is deleted
/// at once, with a `SpecializationFailed` Event, and the pool refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_by_image_moves_the_owner_sets_the_image_and_a_failed_specialisation_is_deleted() {
    let env = Env::start().await;
    env.apply(&manifest("img", 2, 2, 300)).await;
    env.wait("img", "2 ready", |p| p.status.as_ref().is_some_and(|s| s.ready == 2)).await;
    let owner = env.claimant("app").await;
    let web: k8s_openapi::api::core::v1::Container = serde_json::from_value(json!({
        "name": "web", "image": "registry.example/app:v2", "command": ["httpd"],
        "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 8080}],
    }))
    .unwrap();
    let p = podpool::claim_for_image(&env.client, "default", "img", &owner, &web).await.unwrap();
    let owners: Vec<&str> = p.owner_references().iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(owners, ["ConfigMap"], "the pool's ownerReference moved to the claimant");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!((c.name.as_str(), c.image.as_deref()), ("main", Some("registry.example/app:v2")));
    let asked: k8s_openapi::api::core::v1::Container =
        serde_json::from_str(&p.annotations()["kinetic.dev/specialize"]).unwrap();
    assert_eq!(asked, web);
    assert_eq!(p.labels()[POOL_STATE_LABEL], "claimed");
    let no_image = k8s_openapi::api::core::v1::Container { image: None, ..web.clone() };
    assert!(matches!(
        podpool::claim_for_image(&env.client, "default", "img", &owner, &no_image).await,
        Err(ClaimError::NoImage { .. })
    ));

    // The node agent's verdict: failed.
    let body = json!({"metadata": {"labels": {POOL_STATE_LABEL: "failed"}}});
    env.pods_api()
        .patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.pods_api().get_opt(&p.name_any()).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the failed pod was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let events = env.events("SpecializationFailed").await;
        if events.iter().any(|m| m.contains(&p.name_any())) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no SpecializationFailed: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.wait("img", "refilled", |p| p.status.as_ref().is_some_and(|s| s.ready == 2)).await;
    env.stop().await;
}

/// `claim_for` on a pool with `spec.code` claims by code: the pod spec keeps the runtime image,
/// the `kinetic.dev/specialize-code` annotation carries Fission's load request for the
/// container's image and first argument (the code lands in `/userfunc/<claimant uid>`), and the
/// owner moves as in any claim. On a pool without `spec.code` it claims by image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_for_picks_by_code_on_a_code_pool_and_by_image_otherwise() {
    let env = Env::start().await;
    let code_pool = manifest("env", 1, 1, 300).replace(
        "      containers:
      - name: main
        image: busybox
",
        "      containers:
      - name: main
        image: busybox
        volumeMounts:
        - {name: userfunc, mountPath: /userfunc}
      volumes:
      - {name: userfunc, emptyDir: {}}
",
    ) + "  code: {}\n";
    env.apply(&code_pool).await;
    env.apply(&manifest("img", 1, 1, 300)).await;
    let pool =
        env.wait("env", "1 ready", |p| p.status.as_ref().is_some_and(|s| s.ready == 1)).await;
    let img = env.wait("img", "1 ready", |p| p.status.as_ref().is_some_and(|s| s.ready == 1)).await;
    assert_eq!(pool.spec.code.as_ref().map(|c| (c.port, c.version)), Some((8888, 2)));
    let owner = env.claimant("fn").await;
    let app: k8s_openapi::api::core::v1::Container = serde_json::from_value(json!({
        "name": "user-container", "image": "registry.example/hello-code:v1", "args": ["main.handler"],
    }))
    .unwrap();
    let p = podpool::claim_for(&env.client, &pool, &owner, &app).await.unwrap();
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("busybox"), "the runtime keeps running");
    let req: kinetic_api::pool::CodeRequest =
        serde_json::from_str(&p.annotations()[kinetic_api::pool::SPECIALIZE_CODE_ANNOTATION])
            .unwrap();
    assert_eq!(
        (req.image.as_str(), req.function_name.as_str(), req.filepath),
        ("registry.example/hello-code:v1", "main.handler", format!("/userfunc/{}", owner.uid))
    );
    let owners: Vec<&str> = p.owner_references().iter().map(|o| o.kind.as_str()).collect();
    assert_eq!((owners, p.labels()[POOL_STATE_LABEL].as_str()), (vec!["ConfigMap"], "claimed"));
    // The pool is now empty: the consumer's cue to create its own pod.
    assert!(matches!(
        podpool::claim_for(&env.client, &pool, &owner, &app).await,
        Err(ClaimError::PoolEmpty { .. })
    ));

    let p = podpool::claim_for(&env.client, &img, &owner, &app).await.unwrap();
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example/hello-code:v1"));
    assert!(p.annotations().contains_key("kinetic.dev/specialize"));
    env.stop().await;
}
