//! A CloneSet annotated `kinetic.dev/pod-pool` (issue 12 part 4) with the real PodPool
//! controller: scale-out claims the pool's ready pods first (one write: owner, labels, image)
//! and creates pods only once the pool is empty; a claimed pod counts as starting, not ready,
//! until it is specialised, and nothing replaces it meanwhile; a revision change recreates
//! claimed pods (their container is the pool's) while created pods update in place; scale-in
//! works as before. The stand-in kubelet does not specialise: the test labels the claimed pods
//! `specialized` as the node agent would.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::pool::{
    CLAIMED_BY_ANNOTATION, POOL_LABEL, POOL_STATE_LABEL, SPECIALIZE_ANNOTATION, state,
};
use kinetic_controllers::podpool;
use kube::ResourceExt as _;
use kube::api::ListParams;
use tokio::sync::oneshot;

use super::{Env, image_of, ready_all};

const POOL: &str = "apiVersion: kinetic.dev/v1alpha1
kind: PodPool
metadata:
  name: warm
  namespace: default
spec:
  minReady: 2
  maxReady: 2
  specializationTimeoutSeconds: 300
  template:
    metadata:
      labels:
        app: warm
    spec:
      containers:
      - name: placeholder
        image: placeholder:v1
";

fn cloneset(replicas: i32, image: &str) -> String {
    format!(
        "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: web
  namespace: default
  annotations:
    kinetic.dev/pod-pool: warm
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
      annotations:
        team: blue
    spec:
      containers:
      - name: main
        image: {image}
        env:
        - name: GREETING
          value: hi
  updateStrategy:
    type: InPlaceIfPossible
"
    )
}

/// The UIDs of the pool's unclaimed Ready pods, once there are `n`.
async fn pool_full(env: &Env, n: usize) -> BTreeSet<String> {
    let lp = ListParams::default()
        .labels(&format!("{POOL_LABEL}=warm,{POOL_STATE_LABEL}={}", state::READY));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready: BTreeSet<String> = env
            .pods_api()
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| kinetic_rollout::pod::is_ready(p))
            .filter_map(|p| p.uid())
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pool did not fill: {ready:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn label<'a>(p: &'a Pod, k: &str) -> &'a str {
    p.labels().get(k).map_or("", String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloneset_with_a_pod_pool_claims_ready_pool_pods_first_then_creates_pods() {
    let env = Env::start().await;
    kinetic_controllers::crds::install(&env.client, &podpool::crds()).await.unwrap();
    let (pool_stop, rx) = oneshot::channel::<()>();
    let pool_task = tokio::spawn(podpool::run(env.client.clone(), async {
        let _ = rx.await;
    }));
    env.apply(POOL).await;
    let in_pool = pool_full(&env, 2).await;
    // From now on the pool's refills never become ready: two claims empty it.
    env.never_ready.lock().unwrap().insert("placeholder:v1".to_owned());

    // -- Scale-out: two claimed, one created. --------------------------------------------
    env.apply(&cloneset(3, "web:v1")).await;
    env.wait("web", "three pods, the CloneSet's status caught up", |cs, pods| {
        let st = cs.status.clone().unwrap_or_default();
        pods.len() == 3 && st.replicas == 3 && st.observed_generation == cs.metadata.generation
    })
    .await;
    let cs: CloneSet = env.clonesets().get("web").await.unwrap();
    let update_revision = cs.status.as_ref().unwrap().update_revision.clone().unwrap();
    let pods = env.pods("web").await;
    let (claimed, created): (Vec<&Pod>, Vec<&Pod>) =
        pods.iter().partition(|p| in_pool.contains(&p.uid().unwrap()));
    assert_eq!((claimed.len(), created.len()), (2, 1), "{pods:#?}");
    for p in &claimed {
        let owner = p.owner_references().iter().find(|o| o.controller == Some(true)).unwrap();
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("CloneSet", "web"));
        assert_eq!(p.owner_references().len(), 1, "the pool is no owner any more");
        assert!(p.name_any().starts_with("warm-"), "a claimed pod keeps its name");
        assert_eq!(label(p, "controller-revision-hash"), update_revision);
        assert_eq!(label(p, "lifecycle.apps.kruise.io/state"), "Normal");
        assert_eq!(label(p, POOL_STATE_LABEL), state::CLAIMED);
        assert!(!label(p, "apps.kruise.io/cloneset-instance-id").is_empty());
        assert_eq!(p.annotations().get("team").map(String::as_str), Some("blue"));
        assert_eq!(image_of(p), "web:v1");
        let want: serde_json::Value =
            serde_json::from_str(&p.annotations()[SPECIALIZE_ANNOTATION]).unwrap();
        assert_eq!(want["env"][0]["value"], "hi", "the template's container, to specialise into");
    }
    let ids: BTreeSet<&str> =
        pods.iter().map(|p| label(p, "apps.kruise.io/cloneset-instance-id")).collect();
    assert_eq!(ids.len(), 3, "instance ids stay unique");
    let made = created[0];
    assert!(made.name_any().starts_with("web-"));
    assert!(label(made, POOL_LABEL).is_empty());
    assert_eq!(env.events("SuccessfulClaim").await.len(), 2);
    assert_eq!(env.events("SuccessfulCreate").await.len(), 1);

    // -- Claimed but not specialised: starting, not ready, and not replaced. -------------
    env.wait("web", "only the created pod ready", |cs, pods| {
        let st = cs.status.clone().unwrap_or_default();
        pods.len() == 3 && st.replicas == 3 && st.ready_replicas == 1
    })
    .await;
    // The node agent's part: the claimed pods run the template's container now.
    for p in &claimed {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let fresh = env.pods_api().get(&p.name_any()).await.unwrap();
            match podpool::mark_specialized(&env.client, &fresh).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("{e}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "could not label {}", p.name_any());
        }
    }
    env.wait("web", "three ready pods", |cs, pods| ready_all(cs, pods, 3)).await;
    let uids: BTreeSet<String> = env.pods("web").await.iter().filter_map(|p| p.uid()).collect();
    let before: BTreeSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    assert_eq!(uids, before, "no pod was created in place of a starting claimed pod");

    // -- A revision change: claimed pods are recreated, the created one updates in place. --
    env.apply(&cloneset(3, "web:v2")).await;
    env.wait("web", "three ready v2 pods, none from the pool", |cs, pods| {
        ready_all(cs, pods, 3)
            && pods.iter().all(|p| {
                image_of(p) == "web:v2" && !p.annotations().contains_key(CLAIMED_BY_ANNOTATION)
            })
    })
    .await;
    let now = env.pods("web").await;
    assert!(now.iter().any(|p| p.uid() == made.uid()), "the created pod was updated in place");
    assert!(now.iter().all(|p| !in_pool.contains(&p.uid().unwrap())));

    // -- Scale-in as before. ---------------------------------------------------------------
    env.apply(&cloneset(1, "web:v2")).await;
    env.wait("web", "one ready pod", |cs, pods| ready_all(cs, pods, 1)).await;

    let _ = pool_stop.send(());
    pool_task.await.unwrap().unwrap();
    env.stop().await;
}
