//! DaemonSets end to end on `kinetic up` and a second node agent (`kinetic node`, its own
//! bridge, pod range and kubelet port), with real containers, through kubectl (issue 17 part 4):
//! - an `apps/v1` DaemonSet runs one pod per node its `nodeSelector` selects and follows node
//!   label changes both ways; its pods are pinned with `matchFields metadata.name` and carry
//!   upstream's labels and default tolerations; status and kubectl's columns are upstream's;
//! - an OpenKruise Advanced DaemonSet with `rollingUpdateType: InPlaceIfPossible` and
//!   `partition: 1` updates in place one node only (same pod UID and IP, new image, container
//!   restarted), then the other once the partition is 0;
//! - the example manifests in `examples/daemonset` apply unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

use crate::{Kinetic, UpDir, kubectl};

/// Deletes the test's bridges last (the agents' sweeps leave them).
struct Bridges(Vec<NetSlot>);

impl Drop for Bridges {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = std::process::Command::new("ip").args(["link", "del", &s.bridge]).output();
        }
    }
}

/// `kinetic up` (node `a`) and `kinetic node` (node `b`) on one API server. Fields drop in
/// order: the second agent, then both data directories (containers, netns, mounts), then the
/// bridges.
struct TwoNodes {
    up: Kinetic,
    _node_b: tokio::process::Child,
    _dir_b: UpDir,
    _dir_a: UpDir,
    _bridges: Bridges,
    home: tempfile::TempDir,
    client: kube::Client,
    names: [String; 2],
}

impl TwoNodes {
    async fn start(a: &str, b: &str) -> TwoNodes {
        let (slot_a, slot_b) = (NetSlot::take(), NetSlot::take());
        let (up, dir_a) = crate::up_with_node(a, &slot_a).await;
        let dir_b = UpDir::new();
        let node_b = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
            .arg("node")
            .arg("--kubeconfig")
            .arg(&up.kubeconfig)
            .arg("--data-dir")
            .arg(dir_b.path().join("node"))
            .args(["--node-name", b, "--node-listen", "127.0.0.1:0"])
            .args(["--bridge", &slot_b.bridge, "--pod-cidr", &slot_b.cidr])
            .env("KINETIC_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
        let env = TwoNodes {
            up,
            _node_b: node_b,
            _dir_b: dir_b,
            _dir_a: dir_a,
            _bridges: Bridges(vec![slot_a, slot_b]),
            home: tempfile::tempdir().unwrap(),
            client,
            names: [a.to_owned(), b.to_owned()],
        };
        let nodes: Api<Node> = Api::all(env.client.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut ready = 0;
            for n in &env.names {
                let node = nodes.get_opt(n).await.unwrap();
                let conds = node.and_then(|n| n.status).and_then(|s| s.conditions);
                if conds.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True") {
                    ready += 1;
                }
            }
            if ready == 2 {
                return env;
            }
            assert!(Instant::now() < deadline, "the two nodes did not become Ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.up, self.home.path(), args).await
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    async fn pods(&self, app: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().labels(&format!("app={app}"));
        api.list(&lp).await.unwrap().items
    }

    /// Waits until the DaemonSet `kind/name` has observed its generation and shows `status`
    /// (`desired/current/ready/updated/available`), and its pods are exactly one running,
    /// ready, not terminating pod on each node of `on`; returns them by node.
    async fn settled(
        &self,
        kind: &str,
        name: &str,
        status: &str,
        on: &[&str],
    ) -> BTreeMap<String, Pod> {
        let path = "jsonpath={.metadata.generation}/{.status.observedGeneration} \
                    {.status.desiredNumberScheduled}/{.status.currentNumberScheduled}/\
                    {.status.numberReady}/{.status.updatedNumberScheduled}/{.status.numberAvailable}";
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self.kubectl(&["get", kind, name, "-o", path]).await;
            let (generation, counts) = got.split_once(' ').unwrap_or_default();
            let observed = generation.split_once('/').is_some_and(|(a, b)| a == b);
            let pods = self.pods(name).await;
            let mut by_node = BTreeMap::new();
            for p in &pods {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                by_node.insert(node, p.clone());
            }
            let fine = observed
                && counts == status
                && pods.len() == on.len()
                && on.iter().all(|n| by_node.contains_key(*n))
                && pods.iter().all(|p| {
                    crate::workloads::is_ready(p) && p.metadata.deletion_timestamp.is_none()
                });
            if fine {
                return by_node;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {name}: wanted {status} on {on:?}, have {got}:\n{}",
                self.kubectl(&["get", "pods", "-o", "wide", "--show-labels"]).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The body `GET /` on `ip:8080` answers.
async fn page(ip: &str, port: u16) -> String {
    let answer = crate::node::http_get(ip, port).await;
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(answer)
}

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
}

fn restarts(p: &Pod) -> i32 {
    let st = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    st.into_iter().flatten().map(|c| c.restart_count).sum()
}

fn ip_of(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

fn hash_of(p: &Pod) -> String {
    p.labels().get("controller-revision-hash").cloned().unwrap_or_default()
}

const LOGGER: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: logger
spec:
  selector:
    matchLabels:
      app: logger
  template:
    metadata:
      labels:
        app: logger
    spec:
      nodeSelector:
        ds-test/logger: \"on\"
      terminationGracePeriodSeconds: 1
      containers:
      - name: logger
        image: IMAGE
        command: [sh, -c, exec httpd -f -p 8080 -h /www]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_v1_daemonset_runs_one_pod_per_selected_node_and_follows_node_labels() {
    let registry = Registry::start().await.unwrap();
    let image =
        kinetic_testkit::images::busybox(&registry, "logger", "v1", &[("www/index.html", "v1\n")])
            .await
            .unwrap();
    let env = TwoNodes::start("dsl-a", "dsl-b").await;
    crate::apply_when_served(&env.up, env.home(), &LOGGER.replace("IMAGE", &image)).await;
    // No node carries the label: nothing to run.
    env.settled("ds", "logger", "0/0/0/0/0", &[]).await;

    env.kubectl(&["label", "node", "dsl-a", "ds-test/logger=on"]).await;
    let pods = env.settled("ds", "logger", "1/1/1/1/1", &["dsl-a"]).await;
    let p = &pods["dsl-a"];
    // Pinned as upstream pins daemon pods: the scheduler binds by matchFields.
    let affinity = serde_json::to_value(&p.spec.as_ref().unwrap().affinity).unwrap();
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        serde_json::json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["dsl-a"]}]}]})
    );
    let tolerations = serde_json::to_string(&p.spec.as_ref().unwrap().tolerations).unwrap();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unschedulable"] {
        assert!(tolerations.contains(key), "{tolerations}");
    }
    assert_eq!(p.labels().get("pod-template-generation").map(String::as_str), Some("1"));
    assert!(!hash_of(p).is_empty());
    let uid_a = p.uid().unwrap();

    env.kubectl(&["label", "node", "dsl-b", "ds-test/logger=on"]).await;
    let pods = env.settled("ds", "logger", "2/2/2/2/2", &["dsl-a", "dsl-b"]).await;
    assert_eq!(pods["dsl-a"].uid().unwrap(), uid_a, "the first node's pod stays");
    assert_eq!(
        page(&ip_of(&pods["dsl-b"]), 8080).await.trim(),
        "v1",
        "the second node's pod serves"
    );
    let table = env.kubectl(&["get", "ds", "logger"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..7], ["logger", "2", "2", "2", "2", "2", "ds-test/logger=on"], "{table}");

    // The label leaves the first node: its pod goes, the other stays.
    env.kubectl(&["label", "node", "dsl-a", "ds-test/logger-"]).await;
    let pods = env.settled("ds", "logger", "1/1/1/1/1", &["dsl-b"]).await;
    assert_eq!(pods.len(), 1);

    // The manual's examples apply unchanged (server-side dry run: their images are not here).
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/daemonset");
    for f in ["daemonset.yaml", "advanced-daemonset.yaml"] {
        let path = examples.join(f);
        let out = env.kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()]).await;
        assert!(out.contains("created (server dry run)"), "{f}: {out}");
    }
    env.kubectl(&["delete", "ds", "logger"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.pods("logger").await.is_empty() {
        assert!(Instant::now() < deadline, "the DaemonSet's pods were not collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const AGENT: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: IMAGE
        command: [sh, -c, exec httpd -f -p 8080 -h /www]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      rollingUpdateType: InPlaceIfPossible
      partition: 1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_daemonset_updates_in_place_node_by_node_within_the_partition() {
    let registry = Registry::start().await.unwrap();
    let image = |tag: &'static str| {
        let registry = &registry;
        async move {
            let page = format!("{tag}\n");
            kinetic_testkit::images::busybox(registry, "agent", tag, &[("www/index.html", &page)])
                .await
                .unwrap()
        }
    };
    let (v1, v2) = (image("v1").await, image("v2").await);
    let env = TwoNodes::start("dsk-a", "dsk-b").await;
    crate::apply_when_served(&env.up, env.home(), &AGENT.replace("IMAGE", &v1)).await;
    let before =
        env.settled("daemonset.apps.kruise.io", "agent", "2/2/2/2/2", &["dsk-a", "dsk-b"]).await;
    let old_hash = hash_of(&before["dsk-a"]);
    let identity = |p: &Pod| (p.uid().unwrap(), ip_of(p));

    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
    );
    env.kubectl(&["patch", "daemonset.apps.kruise.io", "agent", "--type", "json", "-p", &patch])
        .await;
    // Partition 1 of 2 nodes: one node updates (upstream's order: the last name first).
    let mid =
        env.settled("daemonset.apps.kruise.io", "agent", "2/2/2/1/2", &["dsk-a", "dsk-b"]).await;
    let (new, old) = (&mid["dsk-b"], &mid["dsk-a"]);
    assert_eq!(identity(new), identity(&before["dsk-b"]), "updated in place: same UID and IP");
    assert_eq!(image_of(new), v2);
    assert_eq!(restarts(new), 1, "the container restarted with the new image");
    assert_ne!(hash_of(new), old_hash);
    assert_eq!(page(&ip_of(new), 8080).await.trim(), "v2");
    // The partition holds: the other node keeps its old pod while the DaemonSet is settled.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let p = env.pods("agent").await;
        let a = p.iter().find(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("dsk-a"));
        let a = a.unwrap();
        assert_eq!(
            (identity(a), image_of(a), hash_of(a)),
            (identity(old), v1.clone(), old_hash.clone())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let partition = r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#;
    env.kubectl(&[
        "patch",
        "daemonset.apps.kruise.io",
        "agent",
        "--type",
        "merge",
        "-p",
        partition,
    ])
    .await;
    let after =
        env.settled("daemonset.apps.kruise.io", "agent", "2/2/2/2/2", &["dsk-a", "dsk-b"]).await;
    for n in ["dsk-a", "dsk-b"] {
        assert_eq!(identity(&after[n]), identity(&before[n]), "{n}: same pod");
        assert_eq!(image_of(&after[n]), v2);
        assert_eq!(restarts(&after[n]), 1, "{n}");
        assert_eq!(page(&ip_of(&after[n]), 8080).await.trim(), "v2");
    }
    let table = env.kubectl(&["get", "daemonset.apps.kruise.io", "agent"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    env.kubectl(&["delete", "daemonset.apps.kruise.io", "agent"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.pods("agent").await.is_empty() {
        assert!(Instant::now() < deadline, "the DaemonSet's pods were not collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
