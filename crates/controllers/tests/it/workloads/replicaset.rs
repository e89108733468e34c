//! The ReplicaSet controller: scaling, deletion order, expectations, adoption and release.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use super::kubelet::{next_ip, set_status};
use super::{Env, eventually};

fn rs_yaml(name: &str, replicas: i32, app: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {app}
  template:
    metadata:
      labels:
        app: {app}
    spec:
      containers:
      - name: c
        image: busybox:1
"
    )
}

/// The live pods (not being deleted) with `app=<app>`, by name.
pub async fn pods_of(client: &Client, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pods: Vec<Pod> = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|p| p.name_any());
    pods
}

async fn wait_pods(client: &Client, app: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} pods of {app}"), || async {
        let pods = pods_of(client, app).await;
        if pods.len() == n { Ok(pods) } else { Err(format!("{} pods", pods.len())) }
    })
    .await
}

async fn rs_status(client: &Client, name: &str) -> serde_json::Value {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    serde_json::to_value(api.get(name).await.unwrap().status).unwrap()
}

/// Records the largest number of live pods with `app=<app>` seen by a watch, event by event.
struct MaxPods {
    max: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl MaxPods {
    async fn start(client: &Client, app: &str) -> Self {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let max = Arc::new(Mutex::new(0));
        let m = max.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let cfg = watcher::Config::default().labels(&format!("app={app}"));
        let task = tokio::spawn(async move {
            let mut live = BTreeSet::new();
            let mut ready_tx = Some(ready_tx);
            let mut events = std::pin::pin!(watcher(api, cfg).default_backoff());
            while let Some(Ok(ev)) = events.next().await {
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        if p.metadata.deletion_timestamp.is_none() {
                            live.insert(p.name_any());
                        } else {
                            live.remove(&p.name_any());
                        }
                    }
                    watcher::Event::Delete(p) => {
                        live.remove(&p.name_any());
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Init => live.clear(),
                }
                let mut max = m.lock().unwrap();
                *max = (*max).max(live.len());
            }
        });
        ready_rx.await.unwrap();
        Self { max, task }
    }

    fn max(&self) -> usize {
        *self.max.lock().unwrap()
    }
}

impl Drop for MaxPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_names_pods_and_sets_owner_and_status() {
    let env = Env::start().await;
    env.apply(&rs_yaml("web", 3, "web")).await;
    let pods = wait_pods(&env.client, "web", 3).await;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let rs = api.get("web").await.unwrap();
    for p in &pods {
        let name = p.name_any();
        let suffix = name.strip_prefix("web-").unwrap();
        assert_eq!(suffix.len(), 5, "{name}");
        let owner = &p.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "web", rs.uid().unwrap().as_str())
        );
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    }
    // Two pods become ready: status counts them.
    set_status(&env.client, "default", &pods[0].name_any(), &next_ip(), true).await;
    set_status(&env.client, "default", &pods[1].name_any(), &next_ip(), true).await;
    set_status(&env.client, "default", &pods[2].name_any(), &next_ip(), false).await;
    eventually("replicaset status", || async {
        let s = rs_status(&env.client, "web").await;
        let want = json!({"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 2,
                          "availableReplicas": 2, "observedGeneration": 1});
        if s == want { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pods_become_available_after_min_ready_seconds() {
    let env = Env::start().await;
    let yaml = rs_yaml("slow", 1, "slow")
        .replace("spec:\n  replicas: 1", "spec:\n  minReadySeconds: 2\n  replicas: 1");
    env.apply(&yaml).await;
    let pods = wait_pods(&env.client, "slow", 1).await;
    set_status(&env.client, "default", &pods[0].name_any(), &next_ip(), true).await;
    eventually("ready, not yet available", || async {
        let s = rs_status(&env.client, "slow").await;
        if s["readyReplicas"] == 1 && s.get("availableReplicas").is_none() {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let ready_at = std::time::Instant::now();
    eventually("available after minReadySeconds", || async {
        let s = rs_status(&env.client, "slow").await;
        if s["availableReplicas"] == 1 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    // The condition's time has a resolution of one second.
    assert!(
        ready_at.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        ready_at.elapsed()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_not_ready_then_cheapest_pods_first() {
    let env = Env::start().await;
    env.apply(&rs_yaml("web", 4, "web")).await;
    let pods = wait_pods(&env.client, "web", 4).await;
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    // [0]: ready, cost 0; [1]: ready, cost -10; [2]: running, not ready; [3]: ready, cost 100.
    for (i, cost) in [(1, "-10"), (3, "100")] {
        let patch = json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": cost}}});
        api.patch(&names[i], &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    for (i, ready) in [(0, true), (1, true), (2, false), (3, true)] {
        set_status(&env.client, "default", &names[i], &next_ip(), ready).await;
    }
    eventually("3 ready replicas", || async {
        let s = rs_status(&env.client, "web").await;
        if s["readyReplicas"] == 3 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    let remaining = |n: usize| {
        let client = env.client.clone();
        async move {
            wait_pods(&client, "web", n).await.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        }
    };
    env.kubectl(&["scale", "rs/web", "--replicas=3"]).await;
    assert_eq!(
        remaining(3).await,
        [names[0].clone(), names[1].clone(), names[3].clone()],
        "the not-ready pod goes first"
    );
    env.kubectl(&["scale", "rs/web", "--replicas=2"]).await;
    assert_eq!(
        remaining(2).await,
        [names[0].clone(), names[3].clone()],
        "then the lowest deletion cost"
    );
    env.kubectl(&["scale", "rs/web", "--replicas=1"]).await;
    assert_eq!(remaining(1).await, [names[3].clone()]);
    eventually("status after scale down", || async {
        let s = rs_status(&env.client, "web").await;
        let want = json!({"replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1,
                          "availableReplicas": 1, "observedGeneration": 4});
        if s == want { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_prevent_extra_pods_on_resyncs_and_restarts() {
    let mut env = Env::bare().await;
    env.start_with(kinetic_controllers::apps::run_replicaset_controller);
    let max = MaxPods::start(&env.client, "burst").await;
    env.apply(&rs_yaml("burst", 30, "burst")).await;
    // Resync the ReplicaSet over and over while its creations are in flight: every sync
    // that ran on a cache without all the new pods would create extra ones.
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    for i in 0..20 {
        let patch = json!({"metadata": {"annotations": {"touch": i.to_string()}}});
        api.patch("burst", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    wait_pods(&env.client, "burst", 30).await;

    // Restart the controller in the middle of a scale-up: the new one starts from a full
    // list and creates only what is missing.
    env.kubectl(&["scale", "rs/burst", "--replicas=60"]).await;
    eventually("the scale-up under way", || async {
        let n = pods_of(&env.client, "burst").await.len();
        if n > 30 { Ok(()) } else { Err(format!("{n} pods")) }
    })
    .await;
    env.stop_controllers().await;
    env.start_with(kinetic_controllers::apps::run_replicaset_controller);
    wait_pods(&env.client, "burst", 60).await;
    // Let any extra creation land before judging.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(pods_of(&env.client, "burst").await.len(), 60);
    assert_eq!(max.max(), 60, "never more pods than replicas");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_hold_back_syncs_while_the_pod_watch_lags() {
    let env = Env::bare().await;
    // The controller sees every pod event 150 ms late; its ReplicaSet events are on time, so
    // each status write resyncs it long before it sees the pods it created.
    let slow =
        super::slow_pod_watch_client(env.client.clone(), std::time::Duration::from_millis(150));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kinetic_controllers::apps::run_replicaset_controller(slow, async {
        let _ = rx.await;
    }));
    let max = MaxPods::start(&env.client, "lag").await;
    env.apply(&rs_yaml("lag", 8, "lag")).await;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    for i in 0..10 {
        let patch = json!({"metadata": {"annotations": {"touch": i.to_string()}}});
        api.patch("lag", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_pods(&env.client, "lag", 8).await;
    eventually("the controller caught up", || async {
        let s = rs_status(&env.client, "lag").await;
        if s["replicas"] == 8 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(pods_of(&env.client, "lag").await.len(), 8);
    assert_eq!(max.max(), 8, "never more pods than replicas");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let env = Env::start().await;
    for name in ["orphan-a", "orphan-b"] {
        env.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: adopt\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n"
        ))
        .await;
    }
    env.apply(&rs_yaml("adopter", 3, "adopt")).await;
    let pods = wait_pods(&env.client, "adopt", 3).await;
    let rs_uid = Api::<ReplicaSet>::namespaced(env.client.clone(), "default")
        .get("adopter")
        .await
        .unwrap()
        .uid()
        .unwrap();
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    assert!(
        names.contains(&"orphan-a".to_owned()) && names.contains(&"orphan-b".to_owned()),
        "{names:?}"
    );
    eventually("orphans adopted", || async {
        let pods = pods_of(&env.client, "adopt").await;
        let owned = pods
            .iter()
            .filter(|p| {
                p.owner_references().iter().any(|r| r.uid == rs_uid && r.controller == Some(true))
            })
            .count();
        if owned == 3 { Ok(()) } else { Err(format!("{owned} owned")) }
    })
    .await;

    // A pod relabelled out of the selector is released and replaced.
    env.kubectl(&["label", "pod", "orphan-a", "app=gone", "--overwrite"]).await;
    eventually("orphan-a released", || async {
        let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let p = api.get("orphan-a").await.unwrap();
        if p.owner_references().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", p.owner_references()))
        }
    })
    .await;
    let pods = wait_pods(&env.client, "adopt", 3).await;
    assert!(pods.iter().all(|p| p.name_any() != "orphan-a"));
    env.stop().await;
}
