//! Image preheating end to end, in process: the embedded API server, a registry on 127.0.0.1,
//! the ImagePullJob, NodeImage, CloneSet controllers and the scheduler, and two real node
//! agents (each on its own bridge and data directory) pulling what their NodeImages ask.
//! Needs root, runc, the CNI plugins and docker-registry, like the node tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::kruise::imagepulljob::{CompletionPolicyType, ImagePullJob};
use kinetic_api::kruise::nodeimage::{NodeImage, phase, split_image};
use kinetic_api::kruise::statefulset::StatefulSet as AdvancedStatefulSet;
use kinetic_api::kruise::{
    CONTROLLER_REVISION_HASH_LABEL, IMAGE_PREDOWNLOAD_CREATED_LABEL,
    IMAGE_PREDOWNLOAD_IGNORED_LABEL,
};
use kinetic_image::push::ImageSpec;
use kinetic_testkit::TestServer;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use tokio::sync::watch;

struct Agent {
    agent: Option<kinetic_node::Agent>,
    cfg: kinetic_node::Config,
    _slot: NetSlot,
}

impl Drop for Agent {
    /// Removes what the agent's pods left on the machine, even when the test failed half-way
    /// (as the node tests' harness does): runc and native containers, overlay mounts, network
    /// namespaces and the bridge.
    fn drop(&mut self) {
        // Stop the agent first, or its workers would restart the containers removed below.
        drop(self.agent.take());
        std::thread::sleep(Duration::from_millis(200));
        let root = self.cfg.data_dir.join("runc");
        let run = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).output();
        let root_s = root.display().to_string();
        if let Ok(out) = run(&["runc", "--root", &root_s, "list", "-q"]) {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = run(&["runc", "--root", &root_s, "delete", "-f", id]);
            }
        }
        // The native runtime's (the library's default): their init killed, cgroups removed.
        if let Ok(rd) = std::fs::read_dir(self.cfg.data_dir.join("native")) {
            for e in rd.flatten() {
                let Ok(b) = std::fs::read(e.path().join("state.json")) else { continue };
                let Ok(st) = serde_json::from_slice::<serde_json::Value>(&b) else { continue };
                if let Some(pid) = st["pid"].as_i64() {
                    let _ = run(&["kill", "-9", &pid.to_string()]);
                }
                std::thread::sleep(Duration::from_millis(50));
                let cgroups = st["cgroups"].as_array().into_iter().flatten();
                for cg in cgroups.filter_map(serde_json::Value::as_str) {
                    let _ = std::fs::remove_dir(cg);
                }
            }
        }
        let dir = self.cfg.data_dir.display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            for mp in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
                if mp.starts_with(&dir) {
                    let _ = run(&["umount", "-l", mp]);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.cfg.data_dir.join("pods")) {
            for e in rd.flatten() {
                let name = format!("kinetic-{}", e.file_name().to_string_lossy());
                if std::path::Path::new("/var/run/netns").join(&name).exists() {
                    let _ = run(&["ip", "netns", "delete", &name]);
                }
            }
        }
        let _ = run(&["ip", "link", "del", &self.cfg.bridge]);
    }
}

struct Cluster {
    server: TestServer,
    registry: Registry,
    client: kube::Client,
    agents: Vec<Agent>,
    stop: watch::Sender<bool>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = TestServer::start().await.unwrap();
        let registry = Registry::start().await.unwrap();
        let client = server.client().await.unwrap();
        let (stop, rx) = watch::channel(false);
        {
            let (client, rx) = (client.clone(), rx.clone());
            tokio::spawn(async move {
                kinetic_controllers::run_scheduler(
                    client,
                    kinetic_controllers::SchedulerConfig::default(),
                    async move {
                        let mut rx = rx;
                        let _ = rx.wait_for(|s| *s).await;
                    },
                )
                .await
                .unwrap();
            });
        }
        let c = client.clone();
        tokio::spawn(async move { kinetic_cli_controllers(c, rx).await });
        let dir =
            tempfile::Builder::new().prefix("kinetic-preheat-it").tempdir_in("/var/tmp").unwrap();
        // The CRDs are installed by the controllers; wait until they are served.
        let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(30);
        while jobs.list(&ListParams::default()).await.is_err() {
            assert!(Instant::now() < deadline, "the ImagePullJob CRD was not served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Cluster { server, registry, client, agents: Vec::new(), stop, dir }
    }

    async fn add_agent(&mut self, name: &str) {
        let slot = NetSlot::take();
        let mut cfg = kinetic_node::Config::new(name, self.dir.path().join(name));
        cfg.bridge.clone_from(&slot.bridge);
        cfg.pod_cidr.clone_from(&slot.cidr);
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.auth_token = Some(self.server.server().token().to_owned());
        // The agent runs in this test process: its containers' shim is `kinetic __shim`.
        cfg.shim = env!("CARGO_BIN_EXE_kinetic").into();
        let agent = kinetic_node::Agent::start(self.client.clone(), cfg.clone()).await.unwrap();
        self.agents.push(Agent { agent: Some(agent), cfg, _slot: slot });
    }

    fn jobs(&self) -> Api<ImagePullJob> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn node_images(&self) -> Api<NodeImage> {
        Api::all(self.client.clone())
    }

    async fn create_job(&self, name: &str, spec: serde_json::Value) {
        let job: ImagePullJob = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec,
        }))
        .unwrap();
        self.jobs().create(&PostParams::default(), &job).await.unwrap();
    }

    /// Polls the job until `pred` holds; every observed status goes through `check` too.
    async fn wait_job(
        &self,
        name: &str,
        secs: u64,
        mut check: impl FnMut(&ImagePullJob),
        pred: impl Fn(&ImagePullJob) -> bool,
    ) -> ImagePullJob {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.jobs().get(name).await.unwrap();
            check(&j);
            if pred(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {name}: condition not reached in {secs}s: {:#?}\nnodeimages: {:#?}",
                j.status,
                self.node_images().list(&ListParams::default()).await.unwrap().items
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.jobs().get_opt(name).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "job {name} still exists after {secs}s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn node_image(&self, node: &str, image: &str) -> Option<(String, i32, Option<String>)> {
        let ni = self.node_images().get_opt(node).await.unwrap()?;
        let (name, tag) = split_image(image);
        let s = ni.tag_status(&name, &tag)?;
        Some((s.phase.clone(), s.progress, s.image_id.clone()))
    }

    async fn shutdown(mut self) {
        // Stop the controllers first: a CloneSet would replace the pods deleted below.
        let _ = self.stop.send(true);
        // A CloneSet pass already in flight may still create a pod: delete until none is left.
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = pods.list(&ListParams::default()).await.unwrap().items;
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "pods were not removed by their agents: {left:?}");
            for p in left.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                let _ = pods.delete(&p.name_any(), &DeleteParams::default()).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for a in &mut self.agents {
            if let Some(agent) = a.agent.take() {
                agent.shutdown().await;
            }
        }
        self.agents.clear();
        self.server.shutdown().await;
    }
}

/// `kinetic controller`'s wiring (CRDs, CloneSet, ImagePullJob, NodeImage, workloads) comes
/// from the binary crate; the test runs the same library controllers.
async fn kinetic_cli_controllers(client: kube::Client, stop: watch::Receiver<bool>) {
    let crds: Vec<_> = kinetic_controllers::cloneset::crds()
        .into_iter()
        .chain(kinetic_controllers::imagepulljob::crds())
        .chain(kinetic_controllers::statefulset::crds())
        .collect();
    kinetic_controllers::crds::install(&client, &crds).await.unwrap();
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let _ = tokio::join!(
        kinetic_controllers::cloneset::run(client.clone(), until(stop.clone())),
        kinetic_controllers::imagepulljob::run(client.clone(), until(stop.clone())),
        kinetic_controllers::statefulset::run_kind::<AdvancedStatefulSet>(
            client.clone(),
            until(stop.clone())
        ),
        kinetic_controllers::nodeimage::run(client, until(stop)),
    );
}

/// An image of its own (a distinct config makes a distinct manifest); returns the reference
/// and the manifest digest.
async fn image(reg: &Registry, repo: &str, tag: &str) -> (String, String) {
    let mut config = kinetic_testkit::images::busybox_config();
    config.env.push(format!("PREHEAT_TEST={repo}-{tag}"));
    let reference = format!("{}/{repo}:{tag}", reg.addr());
    let layers = vec![kinetic_testkit::images::busybox_layer().unwrap()];
    let digest = kinetic_testkit::images::push(
        &reference,
        ImageSpec { config, layers, ..ImageSpec::default() },
    )
    .await
    .unwrap();
    (reference, digest)
}

fn status(j: &ImagePullJob) -> kinetic_api::kruise::imagepulljob::ImagePullJobStatus {
    j.status.clone().unwrap_or_default()
}

/// Parallelism 1 over two nodes: never two active at once, both succeed, the counts and the
/// completion time are right; each NodeImage reports phase, progress 100 and the manifest
/// digest; a pod created afterwards starts without pulling; ttlSecondsAfterFinished deletes
/// the job and its tags leave the NodeImages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagepulljob_parallelism_one_preheats_two_nodes_and_pods_start_without_pulling() {
    let mut c = Cluster::start().await;
    c.add_agent("node-a").await;
    c.add_agent("node-b").await;
    let (img, digest) = image(&c.registry, "preheat", "v1").await;
    c.create_job(
        "warm",
        json!({
            "image": img,
            "parallelism": 1,
            "selector": {"names": ["node-a", "node-b"]},
            "completionPolicy": {"type": "Always", "ttlSecondsAfterFinished": 3},
        }),
    )
    .await;
    let mut max_active = 0;
    let job = c
        .wait_job(
            "warm",
            60,
            |j| max_active = max_active.max(status(j).active),
            |j| status(j).completion_time.is_some(),
        )
        .await;
    let st = status(&job);
    assert_eq!(max_active, 1, "parallelism 1 allows one active node");
    assert_eq!((st.desired, st.succeeded, st.failed, st.active), (2, 2, 0, 0), "{st:?}");
    assert!(st.failed_nodes.is_none() && st.start_time.is_some());
    assert!(st.completion_time.as_ref().unwrap().0 >= st.start_time.as_ref().unwrap().0);
    assert_eq!(st.message.as_deref(), Some("job has completed"));
    // The NodeImage status as the agent wrote it (the tag itself leaves the spec once the job
    // completed; the status keeps the result until the agent sees the spec change).
    let name = split_image(&img).0;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    for node in ["node-a", "node-b"] {
        let ev = events.list(&ListParams::default()).await.unwrap().items;
        assert!(
            ev.iter().any(|e| e.involved_object.kind.as_deref() == Some("NodeImage")
                && e.involved_object.name.as_deref() == Some(node)
                && e.reason.as_deref() == Some("PullImageSucceed")),
            "no PullImageSucceed event for {node}"
        );
    }
    // The pod on a preheated node finds its image present: no pull, no bytes.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "after", "namespace": "default"},
        "spec": {"nodeName": "node-b", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": img, "imagePullPolicy": "IfNotPresent",
                                  "command": ["sleep", "3600"]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pod = loop {
        let p = pods.get("after").await.unwrap();
        let running =
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            });
        if running {
            break p;
        }
        assert!(Instant::now() < deadline, "pod not running: {:?}", p.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cs = &pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.image_id, format!("{name}@{digest}"));
    let ev: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("after"))
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect();
    assert!(ev.iter().any(|e| e.contains("already present on machine")), "{ev:#?}");
    assert!(!ev.iter().any(|e| e.starts_with("Pulling")), "the pod pulled: {ev:#?}");
    // ttlSecondsAfterFinished deletes the job; its tags are gone from the NodeImages.
    c.wait_gone("warm", 30).await;
    for node in ["node-a", "node-b"] {
        let ni = c.node_images().get(node).await.unwrap();
        assert!(ni.spec.images.as_ref().is_none_or(|m| !m.contains_key(&name)), "{ni:?}");
    }
    c.shutdown().await;
}

/// completionPolicy Never: the job keeps running, its NodeImage status shows the pull (phase,
/// progress 100, the manifest digest), and a node that joins later is preheated too; deleting
/// the job removes its tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagepulljob_never_keeps_running_and_preheats_a_node_that_joins_later() {
    let mut c = Cluster::start().await;
    c.add_agent("node-a").await;
    let (img, digest) = image(&c.registry, "forever", "v1").await;
    let name = split_image(&img).0;
    c.create_job("forever", json!({"image": img, "completionPolicy": {"type": "Never"}})).await;
    let want = Some((phase::SUCCEEDED.to_owned(), 100, Some(format!("{name}@{digest}"))));
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.node_image("node-a", &img).await != want {
        assert!(Instant::now() < deadline, "node-a: {:?}", c.node_image("node-a", &img).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_job("forever", 30, |_| {}, |j| status(j).succeeded == 1).await;
    c.add_agent("node-b").await;
    let job = c
        .wait_job("forever", 60, |_| {}, |j| status(j).succeeded == 2 && status(j).desired == 2)
        .await;
    assert!(status(&job).completion_time.is_none(), "a Never job does not complete");
    assert_eq!(c.node_image("node-b", &img).await.map(|s| s.0), Some(phase::SUCCEEDED.into()));
    let ni = c.node_images().get("node-b").await.unwrap();
    let st = ni.status.unwrap();
    assert_eq!((st.desired, st.succeeded, st.failed, st.pulling, st.waiting), (1, 1, 0, 0, 0));
    // Deleting the job removes its tags from both NodeImages.
    c.jobs().delete("forever", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in ["node-a", "node-b"] {
        loop {
            let ni = c.node_images().get(node).await.unwrap();
            if ni.spec.images.as_ref().is_none_or(|m| !m.contains_key(&name)) {
                break;
            }
            assert!(Instant::now() < deadline, "{node} still has the tag: {ni:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.shutdown().await;
}

/// A missing image fails with failedNodes and a message; activeDeadlineSeconds fails a job
/// that cannot finish (parallelism 0 never starts a node); podSelector targets only the nodes
/// of the selected pods; a NodeImage is deleted with its Node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagepulljob_failures_deadline_and_pod_selector() {
    let mut c = Cluster::start().await;
    c.add_agent("node-a").await;
    c.add_agent("node-b").await;
    let missing = format!("{}/nothing:here", c.registry.addr());
    c.create_job(
        "bad",
        json!({"image": missing, "selector": {"names": ["node-a"]},
               "pullPolicy": {"backoffLimit": 0, "timeoutSeconds": 30}}),
    )
    .await;
    let job = c.wait_job("bad", 60, |_| {}, |j| status(j).completion_time.is_some()).await;
    let st = status(&job);
    assert_eq!((st.desired, st.succeeded, st.failed), (1, 0, 1), "{st:?}");
    assert_eq!(st.failed_nodes, Some(vec!["node-a".to_owned()]));
    assert!(st.message.as_deref().unwrap_or_default().contains("failed on 1 of 1"), "{st:?}");

    let (img, _) = image(&c.registry, "deadline", "v1").await;
    c.create_job(
        "late",
        // The deadline must exceed the pull timeout (OpenKruise's webhook rule).
        json!({"image": img, "parallelism": 0, "pullPolicy": {"timeoutSeconds": 1},
               "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 2}}),
    )
    .await;
    let job = c.wait_job("late", 30, |_| {}, |j| status(j).completion_time.is_some()).await;
    let st = status(&job);
    assert_eq!((st.desired, st.succeeded, st.failed), (2, 0, 2), "{st:?}");
    assert_eq!(st.failed_nodes, Some(vec!["node-a".to_owned(), "node-b".to_owned()]));
    assert!(st.message.as_deref().unwrap_or_default().contains("activeDeadlineSeconds"));

    // podSelector: a pod bound to node-b selects node-b only.
    let (app, _) = image(&c.registry, "app", "v1").await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sel", "namespace": "default", "labels": {"app": "sel"}},
        "spec": {"nodeName": "node-b", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": app, "command": ["sleep", "3600"]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let (next, _) = image(&c.registry, "app", "v2").await;
    c.create_job("by-pod", json!({"image": next, "podSelector": {"matchLabels": {"app": "sel"}}}))
        .await;
    let job = c.wait_job("by-pod", 60, |_| {}, |j| status(j).completion_time.is_some()).await;
    assert_eq!((status(&job).desired, status(&job).succeeded), (1, 1), "{:?}", job.status);
    assert_eq!(c.node_image("node-a", &next).await, None, "node-a has no selected pod");
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let pulled_b = events.list(&ListParams::default()).await.unwrap().items.iter().any(|e| {
        e.involved_object.name.as_deref() == Some("node-b")
            && e.reason.as_deref() == Some("PullImageSucceed")
            && e.message.as_deref().unwrap_or_default().contains(&next)
    });
    assert!(pulled_b, "node-b pulled the podSelector job's image");

    // A Node that goes away takes its NodeImage with it.
    let nodes: Api<Node> = Api::all(c.client.clone());
    if let Some(agent) = c.agents[0].agent.take() {
        agent.shutdown().await;
    }
    nodes.delete("node-a", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.node_images().get_opt("node-a").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the NodeImage of a deleted node stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.shutdown().await;
}

const PD_CLONESET: &str = "pd";

/// The CloneSet of the pre-download tests: `replicas` pods of `image` (cpu requests of 500m,
/// so the least-allocated score spreads them over the two nodes), a container that exits at
/// once on SIGTERM so in-place restarts are quick, and the given update strategy.
fn pd_cloneset(name: &str, replicas: i32, image: &str, strategy: serde_json::Value) -> CloneSet {
    serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                        "env": [{"name": "MODE", "value": "one"}],
                        "resources": {"requests": {"cpu": "500m"}},
                    }],
                },
            },
            "updateStrategy": strategy,
        },
    }))
    .unwrap()
}

impl Cluster {
    fn clonesets(&self) -> Api<CloneSet> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn revisions(&self) -> Api<ControllerRevision> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Patches the CloneSet with an RFC 6902 JSON patch through the real kubectl, so only the
    /// named paths change (a merge patch of `containers` would replace the whole list).
    async fn json_patch(&self, name: &str, patch: serde_json::Value) {
        self.server
            .kubectl_ok(&["patch", "cloneset", name, "--type", "json", "-p", &patch.to_string()])
            .await
            .unwrap();
    }

    /// Waits until the CloneSet's status names an update revision other than `old`.
    async fn new_update_revision(&self, name: &str, old: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let cs = self.clonesets().get(name).await.unwrap();
            if let Some(r) = cs.status.as_ref().and_then(|s| s.update_revision.clone())
                && Some(r.as_str()) != old
            {
                return r;
            }
            assert!(Instant::now() < deadline, "{name}: no new update revision: {:?}", cs.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the ControllerRevision carries `label`; returns its labels.
    async fn revision_labelled(&self, rev: &str, label: &str) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.revisions().get(rev).await.unwrap();
            if r.labels().contains_key(label) {
                return r.labels().clone();
            }
            assert!(Instant::now() < deadline, "revision {rev} not labelled {label}: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pods_of(&self, app: &str) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap().items
    }

    /// The Events of one object, as "Reason: message".
    async fn events_of(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }
}

/// Watches `api` from `rv` in the background; resolves to the resourceVersion of the first
/// added or modified object `pred` holds for.
async fn first_event_rv<K>(
    api: Api<K>,
    rv: String,
    pred: impl Fn(&K) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<u64>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt as _;
    use kube::api::{WatchEvent, WatchParams};
    let mut stream = api.watch(&WatchParams::default().timeout(60), &rv).await.unwrap().boxed();
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if let WatchEvent::Added(o) | WatchEvent::Modified(o) = ev.unwrap()
                && pred(&o)
            {
                return o.meta().resource_version.as_deref().unwrap().parse().unwrap();
            }
        }
        panic!("the watch ended before the awaited event");
    })
}

fn revision_of(p: &Pod) -> &str {
    p.labels().get(CONTROLLER_REVISION_HASH_LABEL).map_or("", String::as_str)
}

fn running_ready(p: &Pod) -> bool {
    crate::workloads::is_ready(p)
}

/// Issue 5, item 4: a CloneSet of 4 pods on two nodes changes only its image (a JSON patch of
/// `/spec/template/spec/containers/0/image`), updating in place one at a time with a partition
/// of 3, so one pod updates and three wait. The CloneSet controller creates the ImagePullJob
/// `{updateRevision}-main` with upstream's parameters and labels the revision; both nodes of
/// the waiting pods pull the image (never two at once: parallelism 1) while those pods are
/// still at the old revision; when the partition is lifted, each of them restarts in place
/// with the image "already present on machine" and no Pulling; once the rollout converges the
/// job is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_in_place_rollout_pre_downloads_the_new_image_on_the_nodes_still_to_update() {
    let began = Instant::now();
    let mut c = Cluster::start().await;
    c.add_agent("node-a").await;
    c.add_agent("node-b").await;
    let (v1, _) = image(&c.registry, "pd", "v1").await;
    let (v2, v2_digest) = image(&c.registry, "pd", "v2").await;
    let strategy = json!({"type": "InPlaceIfPossible", "partition": 3, "maxUnavailable": 1});
    let cs = c
        .clonesets()
        .create(&PostParams::default(), &pd_cloneset(PD_CLONESET, 4, &v1, strategy))
        .await
        .unwrap();
    let uid = cs.uid().unwrap();
    let old = c.new_update_revision(PD_CLONESET, None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let pods = c.pods_of(PD_CLONESET).await;
        if pods.len() == 4 && pods.iter().all(running_ready) {
            break pods;
        }
        assert!(Instant::now() < deadline, "pods not ready: {pods:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let on = |n: &str| before.iter().filter(|p| node_of(p) == n).count();
    assert_eq!((on("node-a"), on("node-b")), (2, 2), "the scheduler spreads the pods");
    assert!(c.jobs().list(&ListParams::default()).await.unwrap().items.is_empty());

    // Watch jobs and pods from here: the order of the job's creation and the first pod's
    // in-place patch is read from their resourceVersions (one global counter in Kinetic, as
    // etcd's revision is upstream).
    let rv = c.jobs().list(&ListParams::default()).await.unwrap().metadata.resource_version;
    let rv = rv.unwrap();
    let job_created = first_event_rv(c.jobs(), rv.clone(), |_: &ImagePullJob| true).await;
    let first_patched = {
        let v2 = v2.clone();
        first_event_rv(Api::namespaced(c.client.clone(), "default"), rv, move |p: &Pod| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.containers.iter().any(|c| c.image == Some(v2.clone())))
        })
        .await
    };
    // Only the image changes: the rollout is in place.
    c.json_patch(
        PD_CLONESET,
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": v2}]),
    )
    .await;
    let new = c.new_update_revision(PD_CLONESET, Some(&old)).await;
    let job_name = format!("{new}-main");
    let labels = c.revision_labelled(&new, IMAGE_PREDOWNLOAD_CREATED_LABEL).await;
    assert_eq!(labels.get(IMAGE_PREDOWNLOAD_CREATED_LABEL).map(String::as_str), Some("true"));
    assert!(!labels.contains_key(IMAGE_PREDOWNLOAD_IGNORED_LABEL));
    // The job exists once the revision is labelled (the label is written after the jobs).
    let job = c.jobs().get(&job_name).await.unwrap();
    let jobs = c.jobs().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(jobs.len(), 1, "one job per changed container: {jobs:#?}");
    assert_eq!(job.spec.image, v2);
    let ps = job.spec.template.pod_selector.clone().unwrap();
    assert_eq!(ps.match_labels, Some(BTreeMap::from([("app".to_owned(), PD_CLONESET.to_owned())])));
    let expr = ps.match_expressions.unwrap();
    assert_eq!(expr.len(), 1, "{expr:?}");
    assert_eq!(
        (expr[0].key.as_str(), expr[0].operator.as_str(), expr[0].values.clone()),
        // Pods carry the full revision name or, when it is too long for a label, the short
        // hash: both are excluded.
        (
            CONTROLLER_REVISION_HASH_LABEL,
            "NotIn",
            Some(vec![new.clone(), new.rsplit('-').next().unwrap().to_owned()])
        )
    );
    assert!(job.spec.template.selector.is_none());
    assert_eq!(job.spec.template.parallelism, Some(IntOrString::Int(1)));
    let pp = job.spec.template.pull_policy.clone().unwrap();
    assert_eq!((pp.backoff_limit, pp.timeout_seconds), (Some(1), Some(300)));
    let cp = &job.spec.template.completion_policy;
    assert_eq!(cp.type_, Some(CompletionPolicyType::Always));
    assert_eq!(cp.ttl_seconds_after_finished, Some(600));
    let owners = job.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()),
        ("CloneSet", PD_CLONESET, uid.as_str())
    );
    assert_eq!((owners[0].controller, owners[0].block_owner_deletion), (Some(true), Some(true)));

    // The job is created in the pass that starts the rollout, before its first pod is patched.
    let (job_rv, pod_rv) = (job_created.await.unwrap(), first_patched.await.unwrap());
    assert!(job_rv < pod_rv, "job created at {job_rv}, first pod patched at {pod_rv}");

    // Both nodes of the waiting pods pull the image, one at a time; the partition keeps three
    // pods at the old revision meanwhile.
    let mut max_active = 0;
    let job = c
        .wait_job(
            &job_name,
            30,
            |j| max_active = max_active.max(status(j).active),
            |j| status(j).completion_time.is_some(),
        )
        .await;
    let st = status(&job);
    assert_eq!(max_active, 1, "parallelism 1 allows one active node");
    assert_eq!((st.desired, st.succeeded, st.failed), (2, 2, 0), "{st:?}");
    let waiting: Vec<Pod> =
        c.pods_of(PD_CLONESET).await.into_iter().filter(|p| revision_of(p) == old).collect();
    assert_eq!(waiting.len(), 3, "the partition keeps three pods at {old}");
    let waiting_nodes: std::collections::BTreeSet<String> = waiting.iter().map(node_of).collect();
    assert_eq!(waiting_nodes.len(), 2, "the waiting pods are on both nodes");
    for node in &waiting_nodes {
        let ev = c.events_of(node).await;
        assert!(
            ev.iter().any(|e| e.starts_with("PullImageSucceed") && e.contains(&v2)),
            "{node} pulled {v2} for the job: {ev:#?}"
        );
    }

    // Lift the partition: the waiting pods update in place and find the image on their node.
    c.clonesets()
        .patch(
            PD_CLONESET,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updateStrategy": {"partition": 0}}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cs = c.clonesets().get(PD_CLONESET).await.unwrap();
        let st = cs.status.clone().unwrap_or_default();
        let pods = c.pods_of(PD_CLONESET).await;
        if st.current_revision.as_deref() == Some(new.as_str())
            && st.updated_ready_replicas == 4
            && pods.len() == 4
            && pods.iter().all(|p| revision_of(p) == new && running_ready(p))
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not converge: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = split_image(&v2).0;
    for w in &waiting {
        let pod: Api<Pod> = Api::namespaced(c.client.clone(), "default");
        let p = pod.get(&w.name_any()).await.unwrap();
        assert_eq!(p.uid(), w.uid(), "{} was updated in place, not recreated", w.name_any());
        let cst = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert_eq!(cst.restart_count, 1, "{} restarted once in place", w.name_any());
        assert_eq!(cst.image_id, format!("{name}@{v2_digest}"));
        let ev = c.events_of(&w.name_any()).await;
        let present = format!("Container image {v2:?} already present on machine");
        assert!(ev.iter().any(|e| e.contains(&present)), "{}: {ev:#?}", w.name_any());
        let pulling = format!("Pulling image {v2:?}");
        assert!(!ev.iter().any(|e| e.contains(&pulling)), "{} pulled: {ev:#?}", w.name_any());
    }
    // Converged: the CloneSet deletes its pre-download job.
    c.wait_gone(&job_name, 20).await;
    eprintln!("pre-download rollout test took {:?}", began.elapsed());
    c.shutdown().await;
}

/// Pre-download applies only to in-place rollouts in more than one batch: a ReCreate image
/// change, an in-place strategy whose change is not in place (an env value), and an image
/// change that updates every pod in one batch (partition 0, maxUnavailable ≥ replicas) label
/// the update revision `apps.kruise.io/image-predownload-ignored` and create no job. No node
/// agent is needed: the decision is the CloneSet controller's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_pre_download_is_skipped_for_recreate_non_image_changes_and_one_batch() {
    let c = Cluster::start().await;
    let img = format!("{}/skip:v1", c.registry.addr());
    let img2 = format!("{}/skip:v2", c.registry.addr());
    let image_change =
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": img2}]);
    let env_change = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "two"}]);
    let cases = [
        ("recreate", json!({"type": "ReCreate", "maxUnavailable": 1}), &image_change),
        ("envchange", json!({"type": "InPlaceIfPossible", "maxUnavailable": 1}), &env_change),
        ("onebatch", json!({"type": "InPlaceIfPossible", "maxUnavailable": "100%"}), &image_change),
    ];
    for (name, strategy, patch) in cases {
        c.clonesets()
            .create(&PostParams::default(), &pd_cloneset(name, 4, &img, strategy))
            .await
            .unwrap();
        let old = c.new_update_revision(name, None).await;
        c.json_patch(name, patch.clone()).await;
        let new = c.new_update_revision(name, Some(&old)).await;
        let labels = c.revision_labelled(&new, IMAGE_PREDOWNLOAD_IGNORED_LABEL).await;
        assert_eq!(labels.get(IMAGE_PREDOWNLOAD_IGNORED_LABEL).map(String::as_str), Some("true"));
        assert!(!labels.contains_key(IMAGE_PREDOWNLOAD_CREATED_LABEL), "{name}: {labels:?}");
    }
    // A positive control on the same cluster: an in-place image change in batches does create
    // its job, so the absence above is the skip rule and not a controller that never acts.
    let strategy = json!({"type": "InPlaceIfPossible", "maxUnavailable": 1});
    c.clonesets()
        .create(&PostParams::default(), &pd_cloneset("inplace", 4, &img, strategy))
        .await
        .unwrap();
    let old = c.new_update_revision("inplace", None).await;
    c.json_patch("inplace", image_change.clone()).await;
    let new = c.new_update_revision("inplace", Some(&old)).await;
    c.revision_labelled(&new, IMAGE_PREDOWNLOAD_CREATED_LABEL).await;
    let jobs: Vec<String> = c
        .jobs()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(jobs, vec![format!("{new}-main")], "only the in-place rollout has a job");
    c.shutdown().await;
}

/// Issue 17: the Advanced StatefulSet pre-downloads as the CloneSet does (the shared
/// `kinetic_controllers::predownload`). Four pods on two nodes roll in place one at a time with
/// a partition of 3; the image change creates `{updateRevision}-main` selecting the set's pods
/// not at the update revision, owned by the set; both nodes of the waiting pods pull the image
/// (the job completes with 2 of 2 nodes); lifting the partition updates them in place with the
/// image already present, and once the revisions converge the job is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_statefulset_in_place_rollout_pre_downloads_the_new_image() {
    let mut c = Cluster::start().await;
    c.add_agent("node-a").await;
    c.add_agent("node-b").await;
    let (v1, _) = image(&c.registry, "pd-sts", "v1").await;
    let (v2, _) = image(&c.registry, "pd-sts", "v2").await;
    let sets: Api<AdvancedStatefulSet> = Api::namespaced(c.client.clone(), "default");
    let name = "pd-sts";
    let mut set: serde_json::Value =
        serde_json::to_value(pd_cloneset(name, 4, &v1, json!({}))).unwrap();
    set["apiVersion"] = json!("apps.kruise.io/v1beta1");
    set["kind"] = json!("StatefulSet");
    set["spec"]["serviceName"] = json!(name);
    set["spec"]["podManagementPolicy"] = json!("Parallel");
    set["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {
        "podUpdatePolicy": "InPlaceIfPossible", "partition": 3, "maxUnavailable": 1}});
    let set: AdvancedStatefulSet = serde_json::from_value(set).unwrap();
    let made = sets.create(&PostParams::default(), &set).await.unwrap();
    let uid = made.uid().unwrap();
    let revisions = |old: Option<String>| {
        let sets = sets.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st = sets.get(name).await.unwrap().status.unwrap_or_default();
                if let Some(r) = st.update_revision.clone()
                    && Some(&r) != old.as_ref()
                {
                    return r;
                }
                assert!(Instant::now() < deadline, "{name}: no new update revision: {st:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let old = revisions(None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let pods = c.pods_of(name).await;
        if pods.len() == 4 && pods.iter().all(running_ready) {
            break pods;
        }
        assert!(Instant::now() < deadline, "pods not ready: {pods:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let nodes: std::collections::BTreeSet<String> = before.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 2, "the scheduler spreads the pods: {nodes:?}");
    assert!(c.jobs().list(&ListParams::default()).await.unwrap().items.is_empty());

    c.server
        .kubectl_ok(&[
            "patch",
            "statefulsets.apps.kruise.io",
            name,
            "--type",
            "json",
            "-p",
            &json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": v2}])
                .to_string(),
        ])
        .await
        .unwrap();
    let new = revisions(Some(old.clone())).await;
    let job_name = format!("{new}-main");
    let labels = c.revision_labelled(&new, IMAGE_PREDOWNLOAD_CREATED_LABEL).await;
    assert!(!labels.contains_key(IMAGE_PREDOWNLOAD_IGNORED_LABEL), "{labels:?}");
    let job = c.jobs().get(&job_name).await.unwrap();
    assert_eq!(job.spec.image, v2);
    let ps = job.spec.template.pod_selector.clone().unwrap();
    assert_eq!(ps.match_labels, Some(BTreeMap::from([("app".to_owned(), name.to_owned())])));
    let expr = ps.match_expressions.unwrap();
    assert_eq!(
        (expr[0].key.as_str(), expr[0].operator.as_str(), expr[0].values.clone()),
        (
            CONTROLLER_REVISION_HASH_LABEL,
            "NotIn",
            Some(vec![new.clone(), new.rsplit('-').next().unwrap().to_owned()])
        )
    );
    let owners = job.owner_references();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()),
        ("StatefulSet", name, uid.as_str())
    );
    assert_eq!(owners[0].api_version, "apps.kruise.io/v1beta1");

    // The nodes of the three waiting pods (both nodes) pull the image.
    let job = c.wait_job(&job_name, 60, |_| {}, |j| status(j).completion_time.is_some()).await;
    let st = status(&job);
    assert_eq!((st.desired, st.succeeded, st.failed), (2, 2, 0), "{st:?}");
    let waiting: Vec<Pod> =
        c.pods_of(name).await.into_iter().filter(|p| revision_of(p) == old).collect();
    assert_eq!(waiting.len(), 3, "the partition keeps three pods at {old}");
    for node in &nodes {
        let ev = c.events_of(node).await;
        assert!(
            ev.iter().any(|e| e.starts_with("PullImageSucceed") && e.contains(&v2)),
            "{node} pulled {v2} for the job: {ev:#?}"
        );
    }

    // Lift the partition: the waiting pods update in place with the image already there.
    sets.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = sets.get(name).await.unwrap().status.unwrap_or_default();
        let pods = c.pods_of(name).await;
        if st.current_revision.as_deref() == Some(new.as_str())
            && pods.len() == 4
            && pods.iter().all(|p| revision_of(p) == new && running_ready(p))
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not converge: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for w in &waiting {
        let p = pods.get(&w.name_any()).await.unwrap();
        assert_eq!(p.uid(), w.uid(), "{} was updated in place, not recreated", w.name_any());
        let ev = c.events_of(&w.name_any()).await;
        let present = format!("Container image {v2:?} already present on machine");
        assert!(ev.iter().any(|e| e.contains(&present)), "{}: {ev:#?}", w.name_any());
    }
    // Converged: the set deletes its pre-download job.
    c.wait_gone(&job_name, 20).await;
    sets.delete(name, &DeleteParams::default()).await.unwrap();
    c.shutdown().await;
}

/// Issue 18, item 10: a tag's `activeDeadlineSeconds` was ignored by the node, which went on
/// retrying a pull that could not finish. A registry that accepts connections and never answers
/// makes every try time out; the pull must end at the deadline, saying so, not after its tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_gives_up_a_pull_at_the_tags_active_deadline() {
    let mut c = Cluster::start().await;
    c.add_agent("node-a").await;
    // Accepts connections, never answers (held open until the test ends).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let img = format!("{addr}/never:v1");
    c.create_job(
        "stuck",
        json!({"image": img, "selector": {"names": ["node-a"]},
               "pullPolicy": {"backoffLimit": 10, "timeoutSeconds": 1},
               "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 3}}),
    )
    .await;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        if let Some((phase, _, _)) = c.node_image("node-a", &img).await
            && phase == kinetic_api::kruise::nodeimage::phase::FAILED
        {
            break c.node_images().get("node-a").await.unwrap();
        }
        assert!(Instant::now() < deadline, "node-a never gave up the pull");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    let (name, tag) = split_image(&img);
    let msg = failed.tag_status(&name, &tag).and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(msg.contains("activeDeadlineSeconds"), "{msg}");
    // Eleven tries of 1 s with back-off would take minutes.
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");
    hold.abort();
    c.shutdown().await;
}
