//! The CloneSet controller against the embedded API server, with `kubectl`. A small stand-in
//! kubelet plays the node (the node agent's own tests and the CLI's end-to-end tests cover real
//! containers): it marks pods Running, reports each container's image with an image ID derived
//! from the image, bumps restartCount when an image changes, and makes pods Ready when their
//! containers are "ready" (images listed in `never_ready` never are) and every readiness gate
//! condition is True, as kubelet computes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Event, Pod};
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_controllers::cloneset;
use kinetic_testkit::TestServer;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Env {
    server: TestServer,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<kinetic_controllers::Result<()>>>,
    kubelet: JoinHandle<()>,
    /// Images whose containers never become ready.
    never_ready: Arc<Mutex<BTreeSet<String>>>,
    /// Every pod UID the stand-in kubelet has seen, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

fn image_id(image: &str) -> String {
    format!("sha256:{:x}", image.bytes().fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b)))
}

/// One pass of the stand-in kubelet over a pod: the status kubelet would write.
fn kubelet_status(p: &Pod, never_ready: &BTreeSet<String>) -> Option<Value> {
    let spec = p.spec.as_ref()?;
    let old: HashMap<String, (String, i32)> = p
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| (c.name.clone(), (c.image.clone(), c.restart_count)))
        .collect();
    let mut all_ready = true;
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let restarts = match old.get(&c.name) {
                Some((img, n)) if *img != image => n + 1,
                Some((_, n)) => *n,
                None => 0,
            };
            let ready = !never_ready.contains(&image);
            all_ready &= ready;
            json!({"name": c.name, "image": image, "imageID": image_id(&image), "ready": ready,
                   "started": true, "restartCount": restarts,
                   "containerID": format!("fake://{}-{restarts}", c.name),
                   "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        })
        .collect();
    let conds: BTreeMap<String, String> = p
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    let gates_ok = spec
        .readiness_gates
        .iter()
        .flatten()
        .all(|g| conds.get(&g.condition_type).map(String::as_str) == Some("True"));
    let ready = if all_ready && gates_ok { "True" } else { "False" };
    let want = json!({
        "phase": "Running",
        "podIP": "10.0.0.1",
        "conditions": [
            {"type": "ContainersReady", "status": if all_ready { "True" } else { "False" }},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": statuses,
    });
    let same = conds.get("Ready").map(String::as_str) == Some(ready)
        && serde_json::to_value(p.status.as_ref().and_then(|s| s.container_statuses.clone()))
            .ok()
            .as_ref()
            == Some(&want["containerStatuses"]);
    (!same).then_some(want)
}

impl Env {
    async fn start() -> Self {
        let server = TestServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cloneset::run(client.clone(), async {
            let _ = rx.await;
        }));
        let never_ready = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kubelet = {
            let (client, never_ready, seen) = (client.clone(), never_ready.clone(), seen.clone());
            tokio::spawn(async move {
                let api: Api<Pod> = Api::all(client.clone());
                let mut s = watcher(api, watcher::Config::default()).applied_objects().boxed();
                while let Some(Ok(p)) = s.next().await {
                    if p.metadata.deletion_timestamp.is_some() {
                        // No containers to stop: finish the graceful deletion at once.
                        let api: Api<Pod> =
                            Api::namespaced(client.clone(), &p.namespace().unwrap());
                        let _ = api
                            .delete(
                                &p.name_any(),
                                &kube::api::DeleteParams::default().grace_period(0),
                            )
                            .await;
                        continue;
                    }
                    {
                        let mut seen = seen.lock().unwrap();
                        let uid = p.uid().unwrap();
                        if !seen.contains(&uid) {
                            seen.push(uid);
                        }
                    }
                    let nr = never_ready.lock().unwrap().clone();
                    if let Some(st) = kubelet_status(&p, &nr) {
                        let api: Api<Pod> =
                            Api::namespaced(client.clone(), &p.namespace().unwrap());
                        let _ = api
                            .patch_status(
                                &p.name_any(),
                                &PatchParams::default(),
                                &Patch::Strategic(json!({"status": st})),
                            )
                            .await;
                    }
                }
            })
        };
        Self { server, client, stop: Some(stop), task: Some(task), kubelet, never_ready, seen }
    }

    fn clonesets(&self) -> Api<CloneSet> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn pods(&self, app: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("app={app}"));
        let mut v: Vec<Pod> = self
            .pods_api()
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        v.sort_by_key(|p| p.name_any());
        v
    }

    async fn apply(&self, yaml: &str) {
        self.server.kubectl_stdin_ok(&["apply", "-f", "-"], yaml).await.unwrap();
    }

    /// Polls until `pred` holds on the CloneSet and its pods.
    async fn wait(&self, name: &str, what: &str, pred: impl Fn(&CloneSet, &[Pod]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let cs = self.clonesets().get(name).await.unwrap();
            let pods = self.pods(name).await;
            if pred(&cs, &pods) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not reached; status: {}\npods: {:#?}",
                serde_json::to_string_pretty(&cs.status).unwrap(),
                pods.iter()
                    .map(|p| (
                        p.name_any(),
                        p.labels().clone(),
                        p.status.as_ref().map(|s| s.conditions.clone())
                    ))
                    .collect::<Vec<_>>()
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

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        self.kubelet.abort();
        self.server.shutdown().await;
    }
}

fn manifest(name: &str, replicas: i32, image: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: main
        image: {image}
  updateStrategy:
{strategy}
"
    )
}

fn ready_all(cs: &CloneSet, pods: &[Pod], n: i32) -> bool {
    let st = cs.status.clone().unwrap_or_default();
    pods.len() == n as usize
        && st.replicas == n
        && st.ready_replicas == n
        && st.updated_ready_replicas == n
        && st.observed_generation == cs.metadata.generation
}

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
}

fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |c| c[0].restart_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_with_kruise_names_labels_gates_and_victim_order() {
    let env = Env::start().await;
    env.apply(&manifest("web", 4, "web:v1", "    type: InPlaceIfPossible")).await;
    env.wait("web", "4 ready pods", |cs, p| ready_all(cs, p, 4)).await;
    let pods = env.pods("web").await;
    for p in &pods {
        let name = p.name_any();
        let id = p.labels()["apps.kruise.io/cloneset-instance-id"].clone();
        assert_eq!(name, format!("web-{id}"));
        assert_eq!(id.len(), 5);
        let rev = &p.labels()["controller-revision-hash"];
        assert!(rev.starts_with("web-"), "{rev}");
        assert_eq!(p.labels()["pod-template-hash"], rev.trim_start_matches("web-"));
        assert_eq!(p.labels()["lifecycle.apps.kruise.io/state"], "Normal");
        let gates = p.spec.as_ref().unwrap().readiness_gates.clone().unwrap();
        assert_eq!(gates[0].condition_type, "InPlaceUpdateReady");
        assert_eq!(p.owner_references()[0].kind, "CloneSet");
    }
    let cs = env.clonesets().get("web").await.unwrap();
    let st = cs.status.unwrap();
    assert_eq!(st.label_selector.as_deref(), Some("app=web"));
    assert_eq!(st.update_revision, st.current_revision);
    assert_eq!(st.expected_updated_replicas, Some(4));

    // kubectl shows the upstream columns and scales through the scale subresource.
    let out = env.server.kubectl_ok(&["get", "cloneset", "web"]).await.unwrap();
    assert!(out.contains("DESIRED") && out.contains("UPDATED_READY"), "{out}");
    // The pod with the lowest deletion cost goes first.
    let cheap = pods[2].name_any();
    env.pods_api()
        .patch(
            &cheap,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-100"}}})),
        )
        .await
        .unwrap();
    env.server.kubectl_ok(&["scale", "cloneset/web", "--replicas=3"]).await.unwrap();
    env.wait("web", "3 pods", |cs, p| ready_all(cs, p, 3)).await;
    assert!(env.pods("web").await.iter().all(|p| p.name_any() != cheap), "{cheap} survived");

    // podsToDelete: that pod goes, a replacement comes, the list is trimmed.
    let victim = env.pods("web").await[0].name_any();
    env.clonesets()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scaleStrategy": {"podsToDelete": [victim]}}})),
        )
        .await
        .unwrap();
    let v = victim.clone();
    env.wait("web", "victim replaced", move |cs, p| {
        ready_all(cs, p, 3)
            && p.iter().all(|p| p.name_any() != v)
            && cs.spec.scale_strategy.pods_to_delete.as_ref().is_none_or(Vec::is_empty)
    })
    .await;
    assert!(!env.events("SuccessfulCreate").await.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_update_keeps_pods_and_honours_a_partition() {
    let env = Env::start().await;
    let strategy = "    type: InPlaceIfPossible\n    partition: 40%\n    maxUnavailable: 1";
    env.apply(&manifest("app", 5, "app:v1", strategy)).await;
    env.wait("app", "5 ready", |cs, p| ready_all(cs, p, 5)).await;
    let before: BTreeMap<String, String> =
        env.pods("app").await.iter().map(|p| (p.name_any(), p.uid().unwrap())).collect();

    // Watch the gate: every updated pod must go not-ready (gate False) before its image changes.
    let order = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let watch = {
        let (api, order) = (env.pods_api(), order.clone());
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).applied_objects().boxed();
            while let Some(Ok(p)) = s.next().await {
                let gate = p
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .find(|c| c.type_ == "InPlaceUpdateReady")
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
                let ready = p
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
                order
                    .lock()
                    .unwrap()
                    .push((p.name_any(), format!("{}:{gate}:{ready}", image_of(&p))));
            }
        })
    };
    env.apply(&manifest("app", 5, "app:v2", strategy)).await;
    // partition 40% of 5 rounds up to 2: three pods are updated.
    env.wait("app", "3 updated", |cs, p| {
        let st = cs.status.clone().unwrap_or_default();
        st.updated_ready_replicas == 3 && st.ready_replicas == 5 && p.len() == 5
    })
    .await;
    watch.abort();
    let pods = env.pods("app").await;
    let after: BTreeMap<String, String> =
        pods.iter().map(|p| (p.name_any(), p.uid().unwrap())).collect();
    assert_eq!(before, after, "in-place update must keep every pod");
    let updated: Vec<&Pod> = pods.iter().filter(|p| image_of(p) == "app:v2").collect();
    assert_eq!(updated.len(), 3);
    for p in &updated {
        assert_eq!(restarts(p), 1, "{}", p.name_any());
        let state: Value =
            serde_json::from_str(&p.annotations()["apps.kruise.io/inplace-update-state"]).unwrap();
        assert_eq!(state["revision"], p.labels()["controller-revision-hash"].as_str());
        assert_eq!(state["lastContainerStatuses"]["main"]["imageID"], image_id("app:v1"));
    }
    for p in pods.iter().filter(|p| image_of(p) == "app:v1") {
        assert_eq!(restarts(p), 0);
    }
    // Each updated pod was seen with the gate False and Ready False while still on v1.
    let order = order.lock().unwrap().clone();
    for p in &updated {
        let name = p.name_any();
        let seq: Vec<&String> = order.iter().filter(|(n, _)| *n == name).map(|(_, s)| s).collect();
        assert!(seq.iter().any(|s| *s == "app:v1:False:False"), "{name}: {seq:?}");
    }
    // Never more than 5 pods: in place creates nothing.
    assert_eq!(env.seen.lock().unwrap().len(), 5);
    let cs = env.clonesets().get("app").await.unwrap();
    let st = cs.status.unwrap();
    assert_eq!(st.expected_updated_replicas, Some(3));
    assert_ne!(st.current_revision, st.update_revision, "not all pods are updated");

    // Partition 0 finishes the rollout; currentRevision follows.
    env.apply(&manifest(
        "app",
        5,
        "app:v2",
        "    type: InPlaceIfPossible\n    partition: 0\n    maxUnavailable: 1",
    ))
    .await;
    env.wait("app", "all updated", |cs, p| {
        let st = cs.status.clone().unwrap_or_default();
        ready_all(cs, p, 5) && st.current_revision == st.update_revision
    })
    .await;
    assert_eq!(env.seen.lock().unwrap().len(), 5);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_replaces_pods_and_in_place_only_refuses_other_changes() {
    let env = Env::start().await;
    env.apply(&manifest("rc", 3, "rc:v1", "    type: ReCreate\n    maxUnavailable: 1")).await;
    env.wait("rc", "3 ready", |cs, p| ready_all(cs, p, 3)).await;
    let before: BTreeSet<String> = env.pods("rc").await.iter().map(|p| p.uid().unwrap()).collect();
    env.apply(&manifest("rc", 3, "rc:v2", "    type: ReCreate\n    maxUnavailable: 1")).await;
    env.wait("rc", "recreated", |cs, p| {
        ready_all(cs, p, 3) && p.iter().all(|p| image_of(p) == "rc:v2")
    })
    .await;
    let after: BTreeSet<String> = env.pods("rc").await.iter().map(|p| p.uid().unwrap()).collect();
    assert!(before.is_disjoint(&after), "ReCreate must replace every pod");
    assert!(!env.events("SuccessfulUpdatePodReCreate").await.is_empty());

    // InPlaceOnly: an env change cannot be done in place; the server refuses it as
    // OpenKruise's webhook does (issue 18), and the pods stay as they are.
    let only = "    type: InPlaceOnly\n    maxUnavailable: 1";
    env.apply(&manifest("only", 2, "only:v1", only)).await;
    env.wait("only", "2 ready", |cs, p| ready_all(cs, p, 2)).await;
    let uids: BTreeSet<String> = env.pods("only").await.iter().map(|p| p.uid().unwrap()).collect();
    let mut m = manifest("only", 2, "only:v1", only);
    m = m.replace(
        "        image: only:v1\n",
        "        image: only:v1\n        env:\n        - name: A\n          value: b\n",
    );
    let out = env.server.kubectl_stdin(&["apply", "-f", "-"], Some(&m)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an env change under InPlaceOnly is refused");
    assert!(err.contains("only allowed to update images in spec for InPlaceOnly"), "{err}");
    let now: BTreeSet<String> = env.pods("only").await.iter().map(|p| p.uid().unwrap()).collect();
    assert_eq!(uids, now);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_pause_and_progress_deadline() {
    let env = Env::start().await;
    // The webhook's rules come back as Invalid with the field, through kubectl.
    let bad =
        manifest("bad", 2, "x:v1", "    type: InPlaceOnly\n    maxSurge: 1\n    maxUnavailable: 0");
    let out = env.server.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.updateStrategy.maxSurge") && err.contains("InPlaceOnly"), "{err}");

    // Paused: nothing is updated until it is resumed.
    let s = "    type: InPlaceIfPossible\n    maxUnavailable: 1\n    paused: true";
    env.apply(&manifest("p", 2, "p:v1", "    type: InPlaceIfPossible\n    maxUnavailable: 1"))
        .await;
    env.wait("p", "2 ready", |cs, p| ready_all(cs, p, 2)).await;
    env.apply(&manifest("p", 2, "p:v2", s)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.pods("p").await.iter().all(|p| image_of(p) == "p:v1"));
    env.apply(&manifest(
        "p",
        2,
        "p:v2",
        "    type: InPlaceIfPossible\n    maxUnavailable: 1\n    paused: false",
    ))
    .await;
    env.wait("p", "resumed", |cs, p| {
        ready_all(cs, p, 2) && p.iter().all(|p| image_of(p) == "p:v2")
    })
    .await;

    // An image that never gets ready: the rollout stops at the deadline and says so.
    env.never_ready.lock().unwrap().insert("d:v2".into());
    let strategy = "    type: InPlaceIfPossible\n    maxUnavailable: 1";
    let with_deadline = |img: &str| {
        manifest("d", 3, img, strategy)
            .replace("  replicas: 3\n", "  replicas: 3\n  progressDeadlineSeconds: 2\n")
    };
    env.apply(&with_deadline("d:v1")).await;
    env.wait("d", "3 ready", |cs, p| ready_all(cs, p, 3)).await;
    env.apply(&with_deadline("d:v2")).await;
    env.wait("d", "deadline exceeded", |cs, _| {
        cs.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
    })
    .await;
    // Only the first pod was touched; the rollout stays stopped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v2 = env.pods("d").await.iter().filter(|p| image_of(p) == "d:v2").count();
    assert_eq!(v2, 1);
    assert!(!env.events("ProgressDeadlineExceeded").await.is_empty());
    // A fixed template goes on.
    env.apply(&with_deadline("d:v3")).await;
    env.wait("d", "v3 everywhere", |cs, p| {
        ready_all(cs, p, 3) && p.iter().all(|p| image_of(p) == "d:v3")
    })
    .await;
    env.stop().await;
}

/// The user manual's examples, as they are in `examples/cloneset/`.
fn example(name: &str) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cloneset").join(name);
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openkruise_examples_apply_unchanged_and_behave_as_documented() {
    let env = Env::start().await;
    // The sample: 5 pods, the status the manual shows, both revisions equal.
    env.apply(&example("sample.yaml")).await;
    env.wait("sample", "5 ready", |cs, p| ready_all(cs, p, 5)).await;
    let out = env.server.kubectl_ok(&["get", "cloneset", "sample"]).await.unwrap();
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..6], ["sample", "5", "5", "5", "5", "5"], "{out}");

    // In place with a partition of 2 and maxSurge 1: three pods updated in place, and — unlike
    // upstream, which spends the surge and recreates a pod — no pod is created or deleted.
    env.apply(&example("inplace.yaml")).await;
    env.wait("sample-inplace", "5 ready", |cs, p| ready_all(cs, p, 5)).await;
    let seen_before = env.seen.lock().unwrap().len();
    let v2 = example("inplace.yaml").replace("image: nginx:alpine", "image: nginx:1.27-alpine");
    env.apply(&v2).await;
    env.wait("sample-inplace", "3 updated in place", |cs, p| {
        let st = cs.status.clone().unwrap_or_default();
        st.updated_ready_replicas == 3 && st.ready_replicas == 5 && p.len() == 5
    })
    .await;
    assert_eq!(env.seen.lock().unwrap().len(), seen_before, "no pod may be created");
    let updated = env.pods("sample-inplace").await;
    assert_eq!(updated.iter().filter(|p| restarts(p) == 1).count(), 3);

    // Priority: the pod labelled test-key=foo is updated first.
    env.apply(&example("priority.yaml")).await;
    env.wait("sample-priority", "4 ready", |cs, p| ready_all(cs, p, 4)).await;
    let first = env.pods("sample-priority").await[2].name_any();
    env.pods_api()
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"test-key": "foo"}}})),
        )
        .await
        .unwrap();
    // Hold every update after the first: the new image never gets ready.
    env.never_ready.lock().unwrap().insert("nginx:1.27-alpine".into());
    let v2 = example("priority.yaml").replace("image: nginx:alpine", "image: nginx:1.27-alpine");
    env.apply(&v2).await;
    env.wait("sample-priority", "one pod updated", |_, p| {
        p.iter().filter(|p| image_of(p) == "nginx:1.27-alpine").count() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved: Vec<String> = env
        .pods("sample-priority")
        .await
        .iter()
        .filter(|p| image_of(p) == "nginx:1.27-alpine")
        .map(|p| p.name_any())
        .collect();
    assert_eq!(moved, [first], "maxUnavailable 1 and the priority pick exactly that pod");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_delete_hook_holds_a_pod_until_its_label_is_removed() {
    let env = Env::start().await;
    let m = manifest("hook", 2, "hook:v1", "    maxUnavailable: 1").replace(
        "  replicas: 2\n",
        "  replicas: 2\n  lifecycle:\n    preDelete:\n      labelsHandler:\n        example.com/drain: \"true\"\n",
    );
    env.apply(&m).await;
    env.wait("hook", "2 ready", |cs, p| ready_all(cs, p, 2)).await;
    let victim = env.pods("hook").await[0].name_any();
    // The user's drain controller marks the pod: it must be told before the pod goes.
    env.pods_api()
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/drain": "true"}}})),
        )
        .await
        .unwrap();
    env.clonesets()
        .patch(
            "hook",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 1, "scaleStrategy": {"podsToDelete": [victim]}}}),
            ),
        )
        .await
        .unwrap();
    let v = victim.clone();
    env.wait("hook", "PreparingDelete", move |_, p| {
        p.iter().any(|p| {
            p.name_any() == v
                && p.labels().get("lifecycle.apps.kruise.io/state").map(String::as_str)
                    == Some("PreparingDelete")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.pods("hook").await.iter().any(|p| p.name_any() == victim), "deleted while hooked");
    // The hook is done: the label goes, and so does the pod.
    env.pods_api()
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/drain": null}}})),
        )
        .await
        .unwrap();
    let v = victim.clone();
    env.wait("hook", "victim gone", move |cs, p| {
        ready_all(cs, p, 1) && p.iter().all(|p| p.name_any() != v)
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_update_hook_waits_for_the_users_controller() {
    let env = Env::start().await;
    let hooked = |img: &str| {
        manifest("ih", 1, img, "    type: InPlaceIfPossible\n    maxUnavailable: 1").replace(
            "  replicas: 1\n",
            "  replicas: 1\n  lifecycle:\n    inPlaceUpdate:\n      labelsHandler:\n        example.com/hook: \"true\"\n",
        )
    };
    let state =
        |p: &Pod| p.labels().get("lifecycle.apps.kruise.io/state").cloned().unwrap_or_default();
    env.apply(&hooked("ih:v1")).await;
    env.wait("ih", "1 ready", |cs, p| ready_all(cs, p, 1)).await;
    let name = env.pods("ih").await[0].name_any();
    let set_hook = |on: bool| {
        let api = env.pods_api();
        let name = name.clone();
        async move {
            let v = if on { json!("true") } else { Value::Null };
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"example.com/hook": v}}})),
            )
            .await
            .unwrap();
        }
    };
    set_hook(true).await;
    env.apply(&hooked("ih:v2")).await;
    env.wait("ih", "PreparingUpdate", |_, p| p.len() == 1 && state(&p[0]) == "PreparingUpdate")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(image_of(&env.pods("ih").await[0]), "ih:v1", "updated while hooked");
    // The user's controller is done: the update goes ahead, in place, and waits in Updated.
    set_hook(false).await;
    env.wait("ih", "Updated", |_, p| {
        p.len() == 1
            && image_of(&p[0]) == "ih:v2"
            && restarts(&p[0]) == 1
            && state(&p[0]) == "Updated"
    })
    .await;
    // Hooked again: back to Normal.
    set_hook(true).await;
    env.wait("ih", "Normal", |cs, p| ready_all(cs, p, 1) && state(&p[0]) == "Normal").await;
    env.stop().await;
}

fn cond_status(p: &Pod, ty: &str) -> Option<String> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == ty).map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_normal_hook_keeps_new_pods_out_of_service_until_the_user_hooks_them() {
    let env = Env::start().await;
    let m = manifest("pn", 2, "pn:v1", "    maxUnavailable: 1").replace(
        "  replicas: 2\n",
        "  replicas: 2\n  lifecycle:\n    preNormal:\n      labelsHandler:\n        example.com/registered: \"true\"\n",
    );
    env.apply(&m).await;
    let state =
        |p: &Pod| p.labels().get("lifecycle.apps.kruise.io/state").cloned().unwrap_or_default();
    // Created PreparingNormal, Running and Ready for kubelet, but not ready for the CloneSet.
    env.wait("pn", "2 pods PreparingNormal and Ready", |_, p| {
        p.len() == 2
            && p.iter().all(|p| {
                state(p) == "PreparingNormal" && cond_status(p, "Ready").as_deref() == Some("True")
            })
    })
    .await;
    // Ready pods count as ready whatever their lifecycle state (upstream's readyReplicas,
    // issue 18); only availableReplicas waits for Normal.
    env.wait("pn", "2 ready, 0 available", |cs, _| {
        let st = cs.status.clone().unwrap_or_default();
        (st.replicas, st.ready_replicas, st.available_replicas) == (2, 2, 0)
    })
    .await;
    // The user's controller registers one pod: only that one becomes Normal.
    let first = env.pods("pn").await[0].name_any();
    env.pods_api()
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/registered": "true"}}})),
        )
        .await
        .unwrap();
    let f = first.clone();
    env.wait("pn", "one Normal", move |cs, p| {
        let st = cs.status.clone().unwrap_or_default();
        st.available_replicas == 1
            && st.ready_replicas == 2
            && p.iter().all(|p| {
                (p.name_any() == f) == (state(p) == "Normal")
                    && (p.name_any() != f) == (state(p) == "PreparingNormal")
            })
    })
    .await;
    // The second pod is registered too. Then the template carries the label itself: a pod
    // created from it is hooked from the start and is created Normal. (While a pod waits in
    // PreparingNormal it counts as unavailable, so with maxUnavailable 1 an update may wait
    // for it, as upstream's.)
    let second = env.pods("pn").await[1].name_any();
    env.pods_api()
        .patch(
            &second,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/registered": "true"}}})),
        )
        .await
        .unwrap();
    env.wait("pn", "both Normal", |cs, p| ready_all(cs, p, 2)).await;
    env.apply(&m.replace("  replicas: 2\n", "  replicas: 3\n").replace(
        "        app: pn\n    spec:",
        "        app: pn\n        example.com/registered: \"true\"\n    spec:",
    ))
    .await;
    env.wait("pn", "three pods, all Normal", |cs, p| {
        ready_all(cs, p, 3) && p.iter().all(|p| state(p) == "Normal")
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_pod_not_ready_takes_a_pod_out_of_service_before_pre_delete() {
    let env = Env::start().await;
    let m = manifest("mnr", 2, "mnr:v1", "    maxUnavailable: 1").replace(
        "  replicas: 2\n",
        "  replicas: 2\n  lifecycle:\n    preDelete:\n      markPodNotReady: true\n      finalizersHandler:\n      - example.com/drain\n",
    );
    env.apply(&m).await;
    env.wait("mnr", "2 ready with KruisePodReady", |cs, p| {
        ready_all(cs, p, 2)
            && p.iter().all(|p| cond_status(p, "KruisePodReady").as_deref() == Some("True"))
    })
    .await;
    let pod = env.pods("mnr").await[0].clone();
    assert!(
        pod.spec
            .as_ref()
            .unwrap()
            .readiness_gates
            .iter()
            .flatten()
            .any(|g| g.condition_type == "KruisePodReady"),
        "markPodNotReady injects the KruisePodReady gate"
    );
    let victim = pod.name_any();
    env.pods_api()
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/drain"]}})),
        )
        .await
        .unwrap();
    // Watch the victim: it must be out of service (KruisePodReady and Ready False) no later
    // than the write that moves it to PreparingDelete.
    let api = env.pods_api();
    let v = victim.clone();
    let watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={v}"));
        let mut s = watcher(api, cfg).applied_objects().boxed();
        while let Some(Ok(p)) = s.next().await {
            let state = p.labels().get("lifecycle.apps.kruise.io/state").cloned();
            if state.as_deref() == Some("PreparingDelete") {
                return (cond_status(&p, "KruisePodReady"), cond_status(&p, "Ready"));
            }
        }
        (None, None)
    });
    env.clonesets()
        .patch(
            "mnr",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 1, "scaleStrategy": {"podsToDelete": [victim]}}}),
            ),
        )
        .await
        .unwrap();
    let (kruise_ready, ready) =
        tokio::time::timeout(Duration::from_secs(30), watch).await.unwrap().unwrap();
    assert_eq!(kruise_ready.as_deref(), Some("False"));
    assert_eq!(ready.as_deref(), Some("False"));
    // Releasing the hook lets the deletion go ahead.
    env.pods_api()
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let v = victim.clone();
    env.wait("mnr", "victim gone", move |cs, p| {
        ready_all(cs, p, 1) && p.iter().all(|p| p.name_any() != v)
    })
    .await;
    env.stop().await;
}

fn instance_id(p: &Pod) -> String {
    p.labels()["apps.kruise.io/cloneset-instance-id"].clone()
}

async fn claims(env: &Env) -> BTreeMap<String, k8s_openapi::api::core::v1::PersistentVolumeClaim> {
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(env.client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.name_any(), c))
        .collect()
}

/// Polls until the live claims satisfy `pred`.
async fn wait_claims(
    env: &Env,
    what: &str,
    pred: impl Fn(&BTreeMap<String, k8s_openapi::api::core::v1::PersistentVolumeClaim>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = claims(env).await;
        if pred(&c) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: claims {:?}", c.keys());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_claim_templates_give_each_pod_its_claims_and_reuse_them() {
    let env = Env::start().await;
    // The manual's example, with 3 replicas instead of 5 (a shorter test) and the app label
    // named after the CloneSet, as this file's helpers look pods up by it.
    let m = example("pvc.yaml")
        .replace("replicas: 5", "replicas: 3")
        .replace("app: sample", "app: sample-data");
    env.apply(&m).await;
    env.wait("sample-data", "3 ready", |cs, p| ready_all(cs, p, 3)).await;
    let pods = env.pods("sample-data").await;
    let want: BTreeSet<String> =
        pods.iter().map(|p| format!("data-vol-sample-data-{}", instance_id(p))).collect();
    wait_claims(&env, "one claim per pod", |c| c.keys().cloned().collect::<BTreeSet<_>>() == want)
        .await;
    let cs_uid = env.clonesets().get("sample-data").await.unwrap().uid().unwrap();
    for (name, c) in claims(&env).await {
        let labels = c.labels();
        assert_eq!(labels["app"], "sample-data", "{name}: the selector's labels");
        let id = name.rsplit('-').next().unwrap();
        assert_eq!(labels["apps.kruise.io/cloneset-instance-id"], id);
        let o = &c.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("CloneSet", cs_uid.as_str(), Some(true))
        );
        assert_eq!(
            c.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "20Gi"
        );
    }
    for p in &pods {
        let v = p.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        let claim = v
            .iter()
            .find(|v| v.name == "data-vol")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        assert_eq!(claim, Some(format!("data-vol-sample-data-{}", instance_id(p))));
    }
    let claim_uids = |c: &BTreeMap<String, k8s_openapi::api::core::v1::PersistentVolumeClaim>| {
        c.values().map(|c| c.uid().unwrap()).collect::<BTreeSet<_>>()
    };
    let before = claim_uids(&claims(&env).await);

    // A pod deleted by someone else: its replacement takes over its instance id and claims.
    let gone = pods[0].clone();
    env.pods_api().delete(&gone.name_any(), &Default::default()).await.unwrap();
    let (gone_name, gone_uid) = (gone.name_any(), gone.uid().unwrap());
    env.wait("sample-data", "replacement with the same id", move |cs, p| {
        ready_all(cs, p, 3)
            && p.iter().any(|p| p.name_any() == gone_name && p.uid().unwrap() != gone_uid)
    })
    .await;
    assert_eq!(claim_uids(&claims(&env).await), before, "the claims were reused, not recreated");

    // Scale-in by podsToDelete: the pod's claims go with it.
    let victim = pods[1].clone();
    env.clonesets()
        .patch(
            "sample-data",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 2, "scaleStrategy": {"podsToDelete": [victim.name_any()]}}}),
            ),
        )
        .await
        .unwrap();
    let victim_claim = format!("data-vol-sample-data-{}", instance_id(&victim));
    env.wait("sample-data", "2 ready", |cs, p| ready_all(cs, p, 2)).await;
    wait_claims(&env, "the victim's claim deleted", |c| {
        c.len() == 2 && !c.contains_key(&victim_claim)
    })
    .await;

    // With disablePVCReuse, a pod deleted by someone else loses its claims, and the
    // replacement gets a new id.
    env.clonesets()
        .patch(
            "sample-data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scaleStrategy": {"disablePVCReuse": true}}})),
        )
        .await
        .unwrap();
    let pods = env.pods("sample-data").await;
    let gone_id = instance_id(&pods[0]);
    env.pods_api().delete(&pods[0].name_any(), &Default::default()).await.unwrap();
    let gid = gone_id.clone();
    env.wait("sample-data", "replacement with a new id", move |cs, p| {
        ready_all(cs, p, 2) && p.iter().all(|p| instance_id(p) != gid)
    })
    .await;
    let ids: BTreeSet<String> = env.pods("sample-data").await.iter().map(instance_id).collect();
    wait_claims(&env, "claims follow the live pods", |c| {
        c.keys().map(|n| n.rsplit('-').next().unwrap().to_owned()).collect::<BTreeSet<_>>() == ids
    })
    .await;

    // Deleting the CloneSet deletes its claims (owner references).
    env.clonesets().delete("sample-data", &Default::default()).await.unwrap();
    wait_claims(&env, "claims garbage-collected", BTreeMap::is_empty).await;
    env.stop().await;
}

/// Regression (issue 10): a rollback to a template holding `&` (`sh -c "... & wait"`) hung on a
/// real cluster, whose re-encoding of the revision's `data` made every patch of it "field is
/// immutable". A rollback must re-use the old revision and change only its number; the embedded
/// server now refuses any change of `data`, as kube-apiserver does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_with_an_ampersand_in_the_template_only_bumps_the_old_revision_number() {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    let env = Env::start().await;
    let strategy = "    type: ReCreate\n    maxUnavailable: 1";
    let with_cmd = |image: &str| {
        manifest("rb", 2, image, strategy).replace(
            &format!("        image: {image}\n"),
            &format!(
                "        image: {image}\n        command: [\"sh\", \"-c\", \"sleep 1 & wait\"]\n"
            ),
        )
    };
    let revs: Api<ControllerRevision> = Api::namespaced(env.client.clone(), "default");
    let list = || async {
        let mut v = revs.list(&ListParams::default().labels("app=rb")).await.unwrap().items;
        v.sort_by_key(|r| r.revision);
        v
    };
    let on = |image: &'static str| {
        move |cs: &CloneSet, p: &[Pod]| {
            ready_all(cs, p, 2) && p.iter().all(|p| image_of(p) == image)
        }
    };
    env.apply(&with_cmd("rb:v1")).await;
    env.wait("rb", "2 ready on v1", on("rb:v1")).await;
    let first = list().await;
    assert_eq!(first.len(), 1);
    let v1 = first[0].clone();
    env.apply(&with_cmd("rb:v2")).await;
    env.wait("rb", "2 ready on v2", on("rb:v2")).await;
    env.apply(&with_cmd("rb:v1")).await;
    env.wait("rb", "rolled back to v1", |cs, p| {
        on("rb:v1")(cs, p)
            && cs.status.as_ref().and_then(|s| s.update_revision.as_deref())
                == v1.metadata.name.as_deref()
    })
    .await;
    let after = list().await;
    let names: Vec<String> = after.iter().map(|r| r.name_any()).collect();
    assert_eq!(after.len(), 2, "a rollback creates no revision: {names:?}");
    let back = after.iter().find(|r| r.name_any() == v1.name_any()).unwrap();
    assert_eq!(back.revision, 3, "the old revision becomes the newest");
    assert_eq!(back.data, v1.data, "a rollback never changes data");

    // The server's rule that caught it on a real cluster: data is immutable, the number is not.
    let err = revs
        .patch(
            &v1.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"spec": {"template": {"spec": null}}}})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message.contains("data: Invalid value")
                    && s.message.contains("field is immutable"),
                "{}",
                s.message
            );
        }
        e => panic!("{e:?}"),
    }
    env.stop().await;
}

/// Issue 18, item 1: with containers out of name order (`[sidecar, main]`, the manual's
/// example), changing both images used to be refused on every pass ("pod updates may not change
/// fields other than…": the patch listed the containers in name order, and a strategic merge
/// patch orders the list by the patch) while the controller retried without end. Now both
/// change in place, the order is kept, and `InPlaceUpdateReady` is True again without the
/// `StartInPlaceUpdate` reason (item 11). With `container-launch-priority: Ordered` the same
/// change goes in two batches, `sidecar` first (item 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_update_of_two_images_out_of_name_order_and_in_priority_batches() {
    let env = Env::start().await;
    let v1 = example("inplace-sidecar.yaml");
    env.apply(&v1).await;
    env.wait("sample-sidecar", "2 ready", |cs, p| ready_all(cs, p, 2)).await;
    let before: Vec<(String, String)> =
        env.pods("sample-sidecar").await.iter().map(|p| (p.name_any(), p.uid().unwrap())).collect();
    let v2 = v1
        .replace("image: busybox:1.36", "image: busybox:1.37")
        .replace("image: nginx:alpine", "image: nginx:1.27-alpine");
    env.apply(&v2).await;
    env.wait("sample-sidecar", "both images updated in place", |cs, p| {
        ready_all(cs, p, 2)
            && p.iter().all(|p| {
                let c = &p.spec.as_ref().unwrap().containers;
                c[0].image.as_deref() == Some("busybox:1.37")
                    && c[1].image.as_deref() == Some("nginx:1.27-alpine")
            })
    })
    .await;
    let after = env.pods("sample-sidecar").await;
    let ids: Vec<(String, String)> =
        after.iter().map(|p| (p.name_any(), p.uid().unwrap())).collect();
    assert_eq!(before, ids, "same pods");
    for p in &after {
        let names: Vec<&str> =
            p.spec.as_ref().unwrap().containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["sidecar", "main"]);
        let statuses = p.status.as_ref().unwrap().container_statuses.as_ref().unwrap();
        assert!(statuses.iter().all(|c| c.restart_count == 1), "{statuses:?}");
        let conds = p.status.as_ref().unwrap().conditions.as_ref().unwrap();
        let c = conds.iter().find(|c| c.type_ == "InPlaceUpdateReady").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("True", None, None)
        );
    }
    assert_eq!(env.events("SuccessfulUpdatePodInPlace").await.len(), 2);

    // Launch priority: both examples update `sidecar` (priority 0 / 2) before `main`.
    let v1 = example("launch-priority.yaml");
    env.apply(&v1).await;
    for name in ["sample-ordered", "sample-launch-priority"] {
        env.wait(name, "1 ready", |cs, p| ready_all(cs, p, 1)).await;
    }
    env.apply(
        &v1.replace("image: busybox:1.36", "image: busybox:1.37")
            .replace("image: nginx:alpine", "image: nginx:1.27-alpine"),
    )
    .await;
    for name in ["sample-ordered", "sample-launch-priority"] {
        env.wait(name, "both images updated", |cs, p| {
            ready_all(cs, p, 1)
                && p[0].spec.as_ref().unwrap().containers.iter().all(|c| {
                    matches!(c.image.as_deref(), Some("busybox:1.37" | "nginx:1.27-alpine"))
                })
        })
        .await;
        let p = env.pods(name).await.remove(0);
        let state: Value =
            serde_json::from_str(&p.annotations()["apps.kruise.io/inplace-update-state"]).unwrap();
        let batches: Vec<&Value> = state["containerBatchesRecord"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| &b["containers"])
            .collect();
        assert_eq!(batches, [&json!(["sidecar"]), &json!(["main"])], "{name}: {state}");
        let restarts: Vec<i32> = p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .collect();
        assert_eq!(restarts, [1, 1], "{name}");
    }
    env.stop().await;
}

/// Env read from a label is updated in place (on by default, upstream's
/// `InPlaceUpdateEnvFromMetadata`); with a grace period the label change waits for it like an
/// image does, since the node agent restarts the container when the label changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_a_label_updates_in_place_after_the_grace_period() {
    let env = Env::start().await;
    let m = manifest("envmeta", 1, "e:v1", "    type: InPlaceIfPossible\n    inPlaceUpdateStrategy:\n      gracePeriodSeconds: 1")
        .replace("        app: envmeta\n    spec:", "        app: envmeta\n        track: stable\n    spec:")
        .replace(
            "        image: e:v1\n",
            "        image: e:v1\n        env:\n        - name: TRACK\n          valueFrom:\n            fieldRef:\n              fieldPath: metadata.labels['track']\n",
        );
    env.apply(&m).await;
    env.wait("envmeta", "1 ready", |cs, p| ready_all(cs, p, 1)).await;
    let uid = env.pods("envmeta").await[0].uid();
    // Every version of the pod from here on, so the 1 s grace window cannot be missed by a
    // slow poll.
    let versions = Arc::new(Mutex::new(Vec::<Pod>::new()));
    let recorder = {
        let (api, versions) = (env.pods_api(), versions.clone());
        let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version;
        let mut stream = api
            .watch(&kube::api::WatchParams::default().labels("app=envmeta"), &rv.unwrap())
            .await
            .unwrap()
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(kube::api::WatchEvent::Modified(p))) = stream.next().await {
                versions.lock().unwrap().push(p);
            }
        })
    };
    env.apply(&m.replace("track: stable", "track: canary")).await;
    let grace = "apps.kruise.io/inplace-update-grace";
    env.wait("envmeta", "the label after the grace period", |_, p| {
        p.len() == 1
            && !p[0].annotations().contains_key(grace)
            && p[0].labels()["track"] == "canary"
    })
    .await;
    recorder.abort();
    let versions = versions.lock().unwrap().clone();
    let in_grace: Vec<&Pod> =
        versions.iter().filter(|p| p.annotations().contains_key(grace)).collect();
    assert!(!in_grace.is_empty(), "no grace period seen");
    for p in in_grace {
        assert_eq!(p.labels()["track"], "stable", "the label waits for the grace period");
    }
    let p = env.pods("envmeta").await.remove(0);
    assert_eq!(p.uid(), uid, "in place, not recreated");
    let state: Value =
        serde_json::from_str(&p.annotations()["apps.kruise.io/inplace-update-state"]).unwrap();
    assert_eq!(state["updateEnvFromMetadata"], json!(true), "{state}");
    env.stop().await;
}

/// Issue 18: a CloneSet named with 53–63 characters could not create its ControllerRevision
/// (`{name}-{hash}` was refused as a name longer than 63) and said so only in the controller's
/// log. The revision is created now; its name is too long for a label value, so pods carry the
/// short hash in `controller-revision-hash` (upstream's `CloneSetShortHash` form), also after
/// an in-place update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloneset_named_with_60_characters_gets_revisions_and_pods_through_an_update() {
    let env = Env::start().await;
    let name = format!("long-{}", "n".repeat(55));
    env.apply(&manifest(&name, 2, "web:v1", "    type: InPlaceIfPossible")).await;
    env.wait(&name, "2 ready pods", |cs, p| ready_all(cs, p, 2)).await;
    env.apply(&manifest(&name, 2, "web:v2", "    type: InPlaceIfPossible")).await;
    env.wait(&name, "2 ready pods on v2", |cs, p| {
        ready_all(cs, p, 2) && p.iter().all(|p| image_of(p) == "web:v2")
    })
    .await;
    let st = env.clonesets().get(&name).await.unwrap().status.unwrap();
    let rev = st.update_revision.unwrap();
    assert!(rev.len() > 63, "{rev}");
    assert_eq!(st.current_revision.as_deref(), Some(rev.as_str()));
    for p in env.pods(&name).await {
        assert_eq!(p.labels()["controller-revision-hash"], rev.rsplit('-').next().unwrap());
    }
}

/// Issue 18, items 6 and 7: rules OpenKruise's webhook and kube-apiserver enforce that were
/// accepted here. `InPlaceOnly` refuses a change other than images (it was accepted and the
/// rollout stalled); `podsToDelete` refuses a pod that does not exist (it was accepted and
/// silently cleared) or that is not the CloneSet's; `pod-deletion-cost` must be a 32-bit
/// integer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_only_pods_to_delete_and_deletion_cost_are_validated_as_upstream() {
    let env = Env::start().await;
    env.apply(&manifest("strict", 2, "web:v1", "    type: InPlaceOnly")).await;
    env.wait("strict", "2 ready pods", |cs, p| ready_all(cs, p, 2)).await;
    let refuse = |args: Vec<String>, want: &'static str| {
        let server = &env.server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = server.kubectl(&args).await.unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
        }
    };
    let patch = |p: &str| {
        vec![
            "patch".into(),
            "cloneset".into(),
            "strict".into(),
            "--type=merge".into(),
            "-p".into(),
            p.to_owned(),
        ]
    };
    refuse(
        patch(r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"web:v2","env":[{"name":"A","value":"b"}]}]}}}}"#),
        "only allowed to update images in spec for InPlaceOnly",
    )
    .await;
    env.server
        .kubectl_ok(&[
            "patch",
            "cloneset",
            "strict",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"web:v2"}]}}}}"#,
        ])
        .await
        .unwrap();
    refuse(
        patch(r#"{"spec":{"scaleStrategy":{"podsToDelete":["nope"]}}}"#),
        "find pod nope failed",
    )
    .await;
    env.apply(&manifest("other", 1, "web:v1", "    type: ReCreate")).await;
    env.wait("other", "1 ready pod", |cs, p| ready_all(cs, p, 1)).await;
    let foreign = env.pods("other").await[0].name_any();
    refuse(
        patch(&format!(r#"{{"spec":{{"scaleStrategy":{{"podsToDelete":["{foreign}"]}}}}}}"#)),
        "not owned by CloneSet",
    )
    .await;
    let own = env.pods("strict").await[0].name_any();
    env.server
        .kubectl_ok(&[
            "patch",
            "cloneset",
            "strict",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"scaleStrategy":{{"podsToDelete":["{own}"]}}}}}}"#),
        ])
        .await
        .unwrap();
    for cost in ["abc", "2147483648"] {
        let ann = format!("controller.kubernetes.io/pod-deletion-cost={cost}");
        refuse(
            vec!["annotate".into(), "pod".into(), foreign.clone(), ann, "--overwrite".into()],
            "must be a 32bit integer",
        )
        .await;
    }
    let ann = "controller.kubernetes.io/pod-deletion-cost=-2147483648";
    env.server.kubectl_ok(&["annotate", "pod", &foreign, ann]).await.unwrap();
}

/// Issue 18, item 9: a paused CloneSet reported `Progressing=Unknown`; upstream says True with
/// `CloneSetProgressPaused`, and a rollout stopped at its partition says True with
/// `CloneSetProgressPartitionAvailable` and upstream's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressing_condition_when_paused_and_at_the_partition_reads_as_upstream() {
    let env = Env::start().await;
    let strategy = |paused: bool, image: &str| {
        manifest(
            "prog",
            2,
            image,
            &format!("    type: InPlaceIfPossible\n    partition: 1\n    paused: {paused}"),
        )
        .replace("  replicas: 2\n", "  replicas: 2\n  progressDeadlineSeconds: 600\n")
    };
    let progressing = |cs: &CloneSet| {
        let conds = cs.status.clone().unwrap_or_default().conditions.unwrap_or_default();
        conds
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| (c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
    };
    env.apply(&strategy(false, "prog:v1")).await;
    env.wait("prog", "2 ready pods", |cs, p| ready_all(cs, p, 2)).await;
    env.apply(&strategy(true, "prog:v2")).await;
    env.wait("prog", "Progressing True/CloneSetProgressPaused", |cs, _| {
        progressing(cs)
            == Some(("True".into(), "CloneSetProgressPaused".into(), "CloneSet is paused".into()))
    })
    .await;
    env.apply(&strategy(false, "prog:v2")).await;
    env.wait("prog", "Progressing True/CloneSetProgressPartitionAvailable", |cs, p| {
        p.iter().filter(|p| image_of(p) == "prog:v2").count() == 1
            && progressing(cs)
                == Some((
                    "True".into(),
                    "CloneSetProgressPartitionAvailable".into(),
                    "CloneSet has been paused due to partition ready".into(),
                ))
    })
    .await;
}

/// Issue 18, item 5: OpenKruise's webhook refuses an ImagePullJob with `selector.names`
/// together with `matchLabels`, `selector` together with `podSelector`, and `Never` with
/// `activeDeadlineSeconds`; so must the embedded server, with upstream's messages, for both
/// served versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_job_rules_of_the_webhook_are_enforced() {
    let env = Env::start().await;
    let crds = kinetic_controllers::imagepulljob::crds();
    kinetic_controllers::crds::install(&env.client, &crds).await.unwrap();
    let job = |version: &str, spec: &str| {
        format!(
            "apiVersion: apps.kruise.io/{version}\nkind: ImagePullJob\nmetadata:\n  name: j\nspec:\n  image: nginx:1.9.1\n{spec}"
        )
    };
    let cases = [
        (
            "  selector:\n    names: [node-1]\n    matchLabels:\n      node-type: xxx\n",
            "can not set both names and labelSelector in this spec.selector",
        ),
        (
            "  selector:\n    matchLabels:\n      a: b\n  podSelector:\n    matchLabels:\n      c: d\n",
            "can not set both selector and podSelector",
        ),
        (
            "  completionPolicy:\n    type: Never\n    activeDeadlineSeconds: 100\n",
            "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType",
        ),
        (
            "  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 100\n",
            "completionPolicy.activeDeadlineSeconds must be greater than pullPolicy.timeoutSeconds(default 600)",
        ),
    ];
    for version in ["v1alpha1", "v1beta1"] {
        for (spec, want) in cases {
            let out = env
                .server
                .kubectl_stdin(&["apply", "-f", "-"], Some(&job(version, spec)))
                .await
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(want), "{version} {spec}: {err}");
        }
    }
    let ok = "  selector:\n    names: [node-1]\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 1200\n";
    env.server.kubectl_stdin_ok(&["apply", "-f", "-"], &job("v1beta1", ok)).await.unwrap();
}

/// CloneSets that claim pods from a PodPool (issue 12 part 4), on this stand-in kubelet.
mod pool;
