//! The Deployment controller through kubectl: create, rollout status/undo/restart/history,
//! pause/resume, scale, set image, Recreate, progress deadline, history cleanup.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use super::kubelet::AutoKubelet;
use super::{Env, eventually};

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn deployment(client: &Client, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), "default").get(name).await.unwrap()
}

/// The Deployment's ReplicaSets, oldest revision first.
async fn replicasets(client: &Client, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut list =
        api.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap().items;
    list.sort_by_key(revision);
    list
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn condition(d: &Deployment, type_: &str) -> (String, String) {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
        .unwrap_or_default()
}

async fn rollout_status(env: &Env, name: &str) {
    env.kubectl(&["rollout", "status", &format!("deployment/{name}"), "--timeout=30s"]).await;
}

fn deploy_yaml(name: &str, replicas: i32, image: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  strategy:
{strategy}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: {name}
        image: {image}
"
    )
}

/// Watches the pods of `app` and records, after every event, how many live pods there are
/// and how many of them are ready.
struct Invariants {
    samples: Arc<Mutex<Vec<(usize, usize)>>>,
    rs_totals: Arc<Mutex<Vec<i32>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Invariants {
    async fn start(client: &Client, app: &str) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let rs_totals = Arc::new(Mutex::new(Vec::new()));
        let cfg = watcher::Config::default().labels(&format!("app={app}"));
        let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
        let (tx2, rx2) = tokio::sync::oneshot::channel::<()>();
        let s = samples.clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let c1 = cfg.clone();
        let t1 = tokio::spawn(async move {
            let mut tx = Some(tx1);
            let mut live: BTreeMap<String, bool> = BTreeMap::new();
            // Samples count from the first complete list on, not while it is being read.
            let mut listed = false;
            let mut events = std::pin::pin!(watcher(pods, c1).default_backoff());
            while let Some(Ok(ev)) = events.next().await {
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        if p.metadata.deletion_timestamp.is_none() {
                            live.insert(p.name_any(), is_ready(&p));
                        } else {
                            live.remove(&p.name_any());
                        }
                    }
                    watcher::Event::Delete(p) => {
                        live.remove(&p.name_any());
                    }
                    watcher::Event::Init => {
                        live.clear();
                        listed = false;
                    }
                    watcher::Event::InitDone => {
                        listed = true;
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                if listed {
                    let ready = live.values().filter(|r| **r).count();
                    s.lock().unwrap().push((live.len(), ready));
                }
            }
        });
        let r = rs_totals.clone();
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
        let t2 = tokio::spawn(async move {
            let mut tx = Some(tx2);
            let mut specs: BTreeMap<String, i32> = BTreeMap::new();
            let mut listed = false;
            let mut events = std::pin::pin!(watcher(rss, cfg).default_backoff());
            while let Some(Ok(ev)) = events.next().await {
                match ev {
                    watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => {
                        specs.insert(rs.name_any(), rs_replicas(&rs));
                    }
                    watcher::Event::Delete(rs) => {
                        specs.remove(&rs.name_any());
                    }
                    watcher::Event::Init => {
                        specs.clear();
                        listed = false;
                    }
                    watcher::Event::InitDone => {
                        listed = true;
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                if listed {
                    r.lock().unwrap().push(specs.values().sum());
                }
            }
        });
        rx1.await.unwrap();
        rx2.await.unwrap();
        Self { samples, rs_totals, tasks: vec![t1, t2] }
    }

    /// (most live pods, fewest ready pods, largest sum of ReplicaSet replicas) seen.
    fn extremes(&self) -> (usize, usize, i32, usize) {
        let s = self.samples.lock().unwrap();
        let max_live = s.iter().map(|x| x.0).max().unwrap_or(0);
        let min_ready = s.iter().map(|x| x.1).min().unwrap_or(0);
        let max_spec = self.rs_totals.lock().unwrap().iter().copied().max().unwrap_or(0);
        (max_live, min_ready, max_spec, s.len())
    }
}

impl Drop for Invariants {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_deployment_rolls_out_one_hashed_replicaset() {
    let env = Env::start().await;
    let _kubelet = AutoKubelet::start(&env.client, "default", |_| true);
    env.kubectl(&["create", "deployment", "web", "--image=busybox:1", "--replicas=3"]).await;
    rollout_status(&env, "web").await;
    let d = deployment(&env.client, "web").await;
    let rss = replicasets(&env.client, "web").await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"], hash);
    assert_eq!(
        spec.template.as_ref().unwrap().metadata.as_ref().unwrap().labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    let ann = rs.annotations();
    assert_eq!(ann["deployment.kubernetes.io/revision"], "1");
    assert_eq!(ann["deployment.kubernetes.io/desired-replicas"], "3");
    // 25 % of 3 surges to 1 (rounded up).
    assert_eq!(ann["deployment.kubernetes.io/max-replicas"], "4");
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Deployment", d.uid().unwrap().as_str())
    );
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pods = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p.labels()["pod-template-hash"] == hash
        && p.name_any().starts_with(&format!("web-{hash}-"))));

    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "1");
    let mut status = serde_json::to_value(d.status.as_ref().unwrap()).unwrap();
    let conditions = status.as_object_mut().unwrap().remove("conditions").unwrap();
    assert_eq!(
        status,
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3})
    );
    let conditions: Vec<(String, String, String, String)> = conditions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("status"), s("reason"), s("message"))
        })
        .collect();
    assert_eq!(
        conditions,
        [
            (
                "Available".into(),
                "True".into(),
                "MinimumReplicasAvailable".into(),
                "Deployment has minimum availability.".into()
            ),
            (
                "Progressing".into(),
                "True".into(),
                "NewReplicaSetAvailable".into(),
                format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
            ),
        ]
    );

    // Nothing changes: a restart of the controllers resyncs everything and writes nothing.
    let before = resource_versions(&env.client, "web").await;
    let mut env = env;
    env.stop_controllers().await;
    env.take_writes();
    env.start_controllers();
    // A barrier in another namespace: the new controllers resynced "web" before they finish
    // a rollout queued after it.
    env.kubectl(&["create", "namespace", "barrier"]).await;
    let _barrier_kubelet = AutoKubelet::start(&env.client, "barrier", |_| true);
    env.kubectl(&["-n", "barrier", "create", "deployment", "barrier", "--image=busybox:1"]).await;
    env.kubectl(&["-n", "barrier", "rollout", "status", "deployment/barrier", "--timeout=30s"])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = env.take_writes();
    assert!(writes.iter().any(|w| w.contains("/namespaces/barrier/")), "{writes:?}");
    let in_default: Vec<&String> =
        writes.iter().filter(|w| w.contains("/namespaces/default/")).collect();
    assert!(in_default.is_empty(), "writes for an unchanged deployment: {in_default:?}");
    assert_eq!(resource_versions(&env.client, "web").await, before);
    env.stop().await;
}

/// The resourceVersions of the Deployment, its ReplicaSets and pods.
async fn resource_versions(client: &Client, app: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let d = deployment(client, app).await;
    out.insert(format!("deployment/{app}"), d.resource_version().unwrap());
    for rs in replicasets(client, app).await {
        out.insert(format!("rs/{}", rs.name_any()), rs.resource_version().unwrap());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for p in pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap().items {
        out.insert(format!("pod/{}", p.name_any()), p.resource_version().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_surge_and_availability_then_undo_and_restart() {
    let env = Env::start().await;
    let _kubelet = AutoKubelet::start(&env.client, "default", |_| true);
    let strategy =
        "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 1";
    env.apply(&deploy_yaml("roll", 4, "busybox:1", strategy)).await;
    rollout_status(&env, "roll").await;

    for (step, image) in ["busybox:2", "busybox:3"].iter().enumerate() {
        let inv = Invariants::start(&env.client, "roll").await;
        env.kubectl(&["set", "image", "deployment/roll", &format!("roll={image}")]).await;
        rollout_status(&env, "roll").await;
        let (max_live, min_ready, max_spec, samples) = inv.extremes();
        println!(
            "step {step}: {samples} samples, max live {max_live}, min ready {min_ready}, max spec {max_spec}"
        );
        assert!(samples > 8, "the watch saw the rollout ({samples} samples)");
        assert!(
            max_spec <= 5,
            "ReplicaSets never asked for more than replicas + maxSurge: {max_spec}"
        );
        assert!(max_live <= 5, "never more than replicas + maxSurge pods: {max_live}");
        assert!(min_ready >= 3, "never fewer than replicas - maxUnavailable ready: {min_ready}");
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let pods = pods.list(&ListParams::default().labels("app=roll")).await.unwrap().items;
        assert_eq!(pods.len(), 4);
        assert!(pods.iter().all(|p| image_of(p) == *image));
    }
    let rss = replicasets(&env.client, "roll").await;
    assert_eq!(rss.iter().map(revision).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(rss.iter().map(rs_replicas).collect::<Vec<_>>(), [0, 0, 4]);
    let history = env.kubectl(&["rollout", "history", "deployment/roll"]).await;
    assert!(
        history.contains("1 ") && history.contains("2 ") && history.contains("3 "),
        "{history}"
    );

    // Undo goes back to revision 2's template; its ReplicaSet becomes revision 4.
    let rev2 = rss[1].name_any();
    env.kubectl(&["rollout", "undo", "deployment/roll"]).await;
    rollout_status(&env, "roll").await;
    let rs = Api::<ReplicaSet>::namespaced(env.client.clone(), "default").get(&rev2).await.unwrap();
    assert_eq!(revision(&rs), 4);
    assert_eq!(rs.annotations()["deployment.kubernetes.io/revision-history"], "2");
    assert_eq!(rs_replicas(&rs), 4);
    let d = deployment(&env.client, "roll").await;
    assert_eq!(image_of_template(&d), "busybox:2");
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "4");
    let undo_to = env.kubectl(&["rollout", "undo", "deployment/roll", "--to-revision=1"]).await;
    assert!(undo_to.contains("rolled back"), "{undo_to}");
    rollout_status(&env, "roll").await;
    assert_eq!(image_of_template(&deployment(&env.client, "roll").await), "busybox:1");

    // Restart: a template annotation, so a new ReplicaSet with every pod replaced.
    let before: Vec<String> = pod_names(&env.client, "roll").await;
    env.kubectl(&["rollout", "restart", "deployment/roll"]).await;
    rollout_status(&env, "roll").await;
    let after = pod_names(&env.client, "roll").await;
    assert_eq!(after.len(), 4);
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} {after:?}");
    let rss = replicasets(&env.client, "roll").await;
    let newest = rss.last().unwrap();
    assert_eq!(revision(newest), 6);
    assert!(
        newest
            .spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("kubectl.kubernetes.io/restartedAt")
    );
    env.stop().await;
}

fn image_of_template(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn pod_names(client: &Client, app: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_every_old_pod_before_creating_new_ones() {
    let env = Env::start().await;
    let _kubelet = AutoKubelet::start(&env.client, "default", |_| true);
    env.apply(&deploy_yaml("rec", 3, "busybox:1", "    type: Recreate")).await;
    rollout_status(&env, "rec").await;
    // Record, event by event, whether old and new pods ever coexist.
    let mixed = Arc::new(Mutex::new(false));
    let m = mixed.clone();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let task = tokio::spawn(async move {
        let mut images: BTreeMap<String, String> = BTreeMap::new();
        let mut events = std::pin::pin!(
            watcher(api, watcher::Config::default().labels("app=rec")).default_backoff()
        );
        while let Some(Ok(ev)) = events.next().await {
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    images.insert(p.name_any(), image_of(&p));
                }
                watcher::Event::Delete(p) => {
                    images.remove(&p.name_any());
                }
                _ => {}
            }
            let distinct: std::collections::BTreeSet<&String> = images.values().collect();
            if distinct.len() > 1 {
                *m.lock().unwrap() = true;
            }
        }
    });
    env.kubectl(&["set", "image", "deployment/rec", "rec=busybox:2"]).await;
    rollout_status(&env, "rec").await;
    task.abort();
    assert!(!*mixed.lock().unwrap(), "old and new pods coexisted");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pods = pods.list(&ListParams::default().labels("app=rec")).await.unwrap().items;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| image_of(p) == "busybox:2"));
    let rss = replicasets(&env.client, "rec").await;
    assert_eq!(rss.iter().map(rs_replicas).collect::<Vec<_>>(), [0, 3]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_rollout_and_scaling_mid_rollout_is_proportional() {
    let env = Env::start().await;
    // Only busybox:1 pods ever become ready, so a rollout to busybox:2 stalls half way.
    let _kubelet = AutoKubelet::start(&env.client, "default", |p| image_of(p) == "busybox:1");
    let strategy =
        "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 3\n      maxUnavailable: 2";
    env.apply(&deploy_yaml("prop", 10, "busybox:1", strategy)).await;
    rollout_status(&env, "prop").await;

    env.kubectl(&["rollout", "pause", "deployment/prop"]).await;
    env.kubectl(&["set", "image", "deployment/prop", "prop=busybox:2"]).await;
    eventually("the Paused condition", || async {
        let d = deployment(&env.client, "prop").await;
        let c = condition(&d, "Progressing");
        if c == ("Unknown".into(), "DeploymentPaused".into()) {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    // Let the controller see the new template while paused: it must not create a ReplicaSet.
    eventually("observedGeneration caught up", || async {
        let d = deployment(&env.client, "prop").await;
        let s = d.status.as_ref().unwrap();
        if s.observed_generation == d.metadata.generation { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await;
    assert_eq!(replicasets(&env.client, "prop").await.len(), 1, "paused: no new ReplicaSet");

    env.kubectl(&["rollout", "resume", "deployment/prop"]).await;
    // 10 replicas, surge 3, unavailable 2: the new ReplicaSet gets 3 then 5, the old one
    // goes to 8, and there it stops because the new pods never become ready.
    eventually("the stalled rollout", || async {
        let rss = replicasets(&env.client, "prop").await;
        let sizes: Vec<i32> = rss.iter().map(rs_replicas).collect();
        if sizes == [8, 5] { Ok(()) } else { Err(format!("{sizes:?}")) }
    })
    .await;
    env.kubectl(&["scale", "deployment/prop", "--replicas=20"]).await;
    // 23 allowed, 13 there: +10 split by the max-replicas annotation (13): old 8*23/13 = 14,
    // new 5*23/13 = 9.
    eventually("proportional scaling", || async {
        let rss = replicasets(&env.client, "prop").await;
        let sizes: Vec<i32> = rss.iter().map(rs_replicas).collect();
        if sizes == [14, 9] { Ok(()) } else { Err(format!("{sizes:?}")) }
    })
    .await;
    let rss = replicasets(&env.client, "prop").await;
    for rs in &rss {
        assert_eq!(rs.annotations()["deployment.kubernetes.io/desired-replicas"], "20");
        assert_eq!(rs.annotations()["deployment.kubernetes.io/max-replicas"], "23");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_exceeded_when_pods_never_become_ready() {
    let env = Env::start().await;
    let yaml = deploy_yaml("stuck", 2, "busybox:1", "    type: RollingUpdate")
        .replace("spec:\n  replicas: 2", "spec:\n  progressDeadlineSeconds: 2\n  replicas: 2");
    env.apply(&yaml).await;
    let d = eventually("ProgressDeadlineExceeded", || async {
        let d = deployment(&env.client, "stuck").await;
        let c = condition(&d, "Progressing");
        if c == ("False".into(), "ProgressDeadlineExceeded".into()) {
            Ok(d)
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    assert_eq!(condition(&d, "Available"), ("False".into(), "MinimumReplicasUnavailable".into()));
    let out = env
        .server
        .kubectl(&["rollout", "status", "deployment/stuck", "--timeout=20s"])
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_replicasets_beyond_revision_history_limit_are_deleted() {
    let env = Env::start().await;
    let _kubelet = AutoKubelet::start(&env.client, "default", |_| true);
    let yaml = deploy_yaml("hist", 1, "busybox:1", "    type: RollingUpdate")
        .replace("spec:\n  replicas: 1", "spec:\n  revisionHistoryLimit: 1\n  replicas: 1");
    env.apply(&yaml).await;
    rollout_status(&env, "hist").await;
    for image in ["busybox:2", "busybox:3", "busybox:4"] {
        env.kubectl(&["set", "image", "deployment/hist", &format!("hist={image}")]).await;
        rollout_status(&env, "hist").await;
    }
    eventually("one old ReplicaSet kept", || async {
        let revs: Vec<i64> = replicasets(&env.client, "hist").await.iter().map(revision).collect();
        if revs == [3, 4] { Ok(()) } else { Err(format!("{revs:?}")) }
    })
    .await;
    env.stop().await;
}

/// `kubectl get deployment` prints the columns from our status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_ready_up_to_date_available() {
    let env = Env::start().await;
    let _kubelet = AutoKubelet::start(&env.client, "default", |_| true);
    env.kubectl(&["create", "deployment", "cols", "--image=busybox:1", "--replicas=2"]).await;
    rollout_status(&env, "cols").await;
    let out = env.kubectl(&["get", "deployment", "cols", "--no-headers"]).await;
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(&cols[..4], ["cols", "2/2", "2", "2"], "{out}");
    let v: Value =
        serde_json::from_str(&env.kubectl(&["get", "rs", "-l", "app=cols", "-o", "json"]).await)
            .unwrap();
    assert_eq!(v["items"][0]["status"]["readyReplicas"], 2);
    // The Events kubectl describe shows.
    let rs_name = v["items"][0]["metadata"]["name"].as_str().unwrap().to_owned();
    eventually("events", || async {
        let d = env.kubectl(&["describe", "deployment", "cols"]).await;
        let rs = env.kubectl(&["describe", "rs", &rs_name]).await;
        let scaled = format!("Scaled up replica set {rs_name} from 0 to 2");
        if d.contains("ScalingReplicaSet") && d.contains(&scaled) && rs.contains("SuccessfulCreate")
        {
            Ok(())
        } else {
            Err(format!("{d}\n{rs}"))
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_mid_rollout_scales_the_unhealthy_replicaset_away_and_zero_replicas_work() {
    let env = Env::start().await;
    // busybox:2 pods never become ready: the rollout to it stalls until busybox:3 replaces it.
    let _kubelet = AutoKubelet::start(&env.client, "default", |p| image_of(p) != "busybox:2");
    let strategy =
        "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0";
    env.apply(&deploy_yaml("over", 3, "busybox:1", strategy)).await;
    rollout_status(&env, "over").await;
    env.kubectl(&["set", "image", "deployment/over", "over=busybox:2"]).await;
    eventually("stalled on busybox:2", || async {
        let sizes: Vec<i32> =
            replicasets(&env.client, "over").await.iter().map(rs_replicas).collect();
        if sizes == [3, 1] { Ok(()) } else { Err(format!("{sizes:?}")) }
    })
    .await;
    env.kubectl(&["set", "image", "deployment/over", "over=busybox:3"]).await;
    rollout_status(&env, "over").await;
    let sizes: Vec<i32> = replicasets(&env.client, "over").await.iter().map(rs_replicas).collect();
    assert_eq!(sizes, [0, 0, 3]);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pods = pods.list(&ListParams::default().labels("app=over")).await.unwrap().items;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| image_of(p) == "busybox:3"));

    // Down to zero and back.
    env.kubectl(&["scale", "deployment/over", "--replicas=0"]).await;
    eventually("no pods", || async {
        let n = pod_names(&env.client, "over").await.len();
        if n == 0 { Ok(()) } else { Err(format!("{n} pods")) }
    })
    .await;
    rollout_status(&env, "over").await;
    env.kubectl(&["scale", "deployment/over", "--replicas=2"]).await;
    rollout_status(&env, "over").await;
    assert_eq!(pod_names(&env.client, "over").await.len(), 2);
    let sizes: Vec<i32> = replicasets(&env.client, "over").await.iter().map(rs_replicas).collect();
    assert_eq!(sizes, [0, 0, 2]);

    // Deleting the Deployment takes its ReplicaSets and pods with it (ownerReferences).
    env.kubectl(&["delete", "deployment", "over"]).await;
    eventually("everything gone", || async {
        let rs = replicasets(&env.client, "over").await.len();
        let pods = pod_names(&env.client, "over").await.len();
        if rs + pods == 0 { Ok(()) } else { Err(format!("{rs} replicasets, {pods} pods")) }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_replicaset_matching_the_selector_is_adopted() {
    let env = Env::start().await;
    let _kubelet = AutoKubelet::start(&env.client, "default", |_| true);
    // A ReplicaSet someone created by hand, with the Deployment's labels but another template.
    env.apply(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: handmade
  labels:
    app: adopt
spec:
  replicas: 2
  selector:
    matchLabels:
      app: adopt
  template:
    metadata:
      labels:
        app: adopt
    spec:
      containers:
      - name: adopt
        image: busybox:0
",
    )
    .await;
    let strategy = "    type: RollingUpdate";
    env.apply(&deploy_yaml("adopt", 2, "busybox:1", strategy)).await;
    rollout_status(&env, "adopt").await;
    let d = deployment(&env.client, "adopt").await;
    let rs =
        Api::<ReplicaSet>::namespaced(env.client.clone(), "default").get("handmade").await.unwrap();
    let owner = rs.owner_references().iter().find(|r| r.controller == Some(true)).cloned().unwrap();
    assert_eq!(owner.uid, d.uid().unwrap());
    assert_eq!(rs_replicas(&rs), 0, "the adopted old ReplicaSet was scaled down");
    env.stop().await;
}
