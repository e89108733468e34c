//! UnitedDeployment end to end on `kinetic up` with real containers and two node agents with
//! different `zone` labels (the second a `kinetic node` process on its own bridge and pod
//! range), all through kubectl:
//! - a CloneSet template over two subsets by node label: each subset's pods run on its nodes,
//!   in the numbers the allocator gives (fixed replicas, the rest to the other subset); the
//!   workloads are `web-{subset}-xxxxx` CloneSets with upstream's labels;
//! - a template change with partitions rolls only the subset without one, and a partition
//!   change then rolls only the subset it names;
//! - scaling (the scale subresource, then elastic `maxReplicas`) changes the subsets' replicas
//!   as the allocator says;
//! - the Adaptive strategy moves the replicas of a subset whose pods cannot be scheduled to the
//!   next subset;
//! - the manual's example applies unchanged.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

use crate::{Kinetic, UpDir, kubectl, kubectl_in};

struct Env {
    up: Kinetic,
    home: tempfile::TempDir,
    pods: Api<Pod>,
}

impl Env {
    async fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.up, self.home.path(), args).await
    }

    async fn apply(&self, manifest: &str) {
        kubectl_in(&self.up, self.home.path(), &["apply", "-f", "-"], Some(manifest)).await;
    }

    async fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &jp]);
        self.kubectl(&args).await
    }

    /// The running, ready pods labelled `app=name`, by subset: (node, image, uid).
    async fn pods_by_subset(&self, app: &str) -> BTreeMap<String, Vec<(String, String, String)>> {
        let list =
            self.pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
        let mut out: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
        for p in list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let subset = p.labels().get("apps.kruise.io/subset-name").cloned().unwrap_or_default();
            let spec = p.spec.as_ref().unwrap();
            out.entry(subset).or_default().push((
                spec.node_name.clone().unwrap_or_default(),
                spec.containers[0].image.clone().unwrap_or_default(),
                p.uid().unwrap_or_default(),
            ));
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Waits until the UnitedDeployment `name` has observed its generation and every pod is
    /// updated and ready (`updatedReadyReplicas == readyReplicas == replicas == want`), its
    /// pods all ready, and `check` holds for them.
    async fn settled(
        &self,
        name: &str,
        want: usize,
        check: impl Fn(&BTreeMap<String, Vec<(String, String, String)>>) -> bool,
        updated: bool,
    ) -> BTreeMap<String, Vec<(String, String, String)>> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let st = self
                .jsonpath(
                    &["ud", name],
                    "{.metadata.generation}/{.status.observedGeneration} {.status.replicas}/{.status.readyReplicas}/{.status.updatedReadyReplicas}",
                )
                .await;
            let (generation, counts) = st.split_once(' ').unwrap_or_default();
            let observed = generation.split_once('/').is_some_and(|(a, b)| a == b);
            let n = want.to_string();
            let c: Vec<&str> = counts.split('/').collect();
            let counts_ok = c.len() == 3 && c[0] == n && c[1] == n && (!updated || c[2] == n);
            let pods = self.pods_by_subset(name).await;
            let list = self
                .pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .unwrap();
            let all_ready =
                list.items.len() == want && list.items.iter().all(crate::workloads::is_ready);
            if observed && counts_ok && all_ready && check(&pods) {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not settle ({st}): {pods:?}\n{}\n{}\n{}",
                self.kubectl(&["get", "ud", name, "-o", "yaml"]).await,
                self.kubectl(&["get", "clonesets,pods", "-o", "wide"]).await,
                self.kubectl(&["get", "events"]).await,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `kinetic up` with its node agent `node_a` and a second node agent `node_b` (a `kinetic node`
/// process joining it on its own bridge and pod range), both Ready. Dropped, it stops both
/// and cleans up after them (fields drop in order: the server first, the bridges last).
struct Cluster {
    env: Env,
    _node_b: tokio::process::Child,
    _dir_b: UpDir,
    _dir: UpDir,
    _slots: (NetSlot, NetSlot),
}

impl Cluster {
    async fn start(node_a: &str, node_b: &str) -> Cluster {
        let (slot_a, slot_b) = (NetSlot::take(), NetSlot::take());
        let (up, dir) = crate::up_with_node(node_a, &slot_a).await;
        let dir_b = UpDir::new();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
            .args(["node", "--kubeconfig", up.kubeconfig.to_str().unwrap(), "--data-dir"])
            .arg(dir_b.path().join("node"))
            .args(["--node-name", node_b, "--node-listen", "127.0.0.1:0"])
            .args(["--bridge", &slot_b.bridge, "--pod-cidr", &slot_b.cidr])
            .env("KINETIC_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
        let env = Env {
            up,
            home: tempfile::tempdir().unwrap(),
            pods: Api::namespaced(client, "default"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = env
                .jsonpath(&["nodes"], r#"{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}"#)
                .await;
            if ready.contains(&format!("{node_a}=True"))
                && ready.contains(&format!("{node_b}=True"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "nodes not ready: {ready}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Cluster { env, _node_b: child, _dir_b: dir_b, _dir: dir, _slots: (slot_a, slot_b) }
    }
}

fn web(image: &str, replicas: u32, subsets: &str, partitions: &str) -> String {
    format!(
        "apiVersion: apps.kruise.io/v1alpha1
kind: UnitedDeployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    cloneSetTemplate:
      metadata:
        labels:
          app: web
      spec:
        selector:
          matchLabels:
            app: web
        template:
          metadata:
            labels:
              app: web
          spec:
            terminationGracePeriodSeconds: 1
            containers:
            - name: main
              image: {image}
              command: [sh, -c, exec httpd -f -p 8080 -h /www]
  topology:
    subsets:
{subsets}
  updateStrategy:
    type: Manual
    manualUpdate:
      partitions:
{partitions}
"
    )
}

const FIXED_SUBSETS: &str = "    - name: subset-a
      nodeSelectorTerm:
        matchExpressions:
        - key: zone
          operator: In
          values: [a]
      replicas: 1
    - name: subset-b
      nodeSelectorTerm:
        matchExpressions:
        - key: zone
          operator: In
          values: [b]";

const ELASTIC_SUBSETS: &str = "    - name: subset-a
      nodeSelectorTerm:
        matchExpressions:
        - key: zone
          operator: In
          values: [a]
      maxReplicas: 2
    - name: subset-b
      nodeSelectorTerm:
        matchExpressions:
        - key: zone
          operator: In
          values: [b]";

/// Pods of `subset` all on `node`, `n` of them, all with `image`.
fn placed(
    pods: &BTreeMap<String, Vec<(String, String, String)>>,
    subset: &str,
    node: &str,
    n: usize,
    image: &str,
) -> bool {
    let list = pods.get(subset).map(Vec::as_slice).unwrap_or_default();
    list.len() == n && list.iter().all(|(nd, img, _)| nd == node && img == image)
}

fn uids(pods: &BTreeMap<String, Vec<(String, String, String)>>, subset: &str) -> Vec<String> {
    pods.get(subset).into_iter().flatten().map(|p| p.2.clone()).collect()
}

/// The manual's first example, unchanged.
const MANUAL: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: UnitedDeployment
metadata:
  name: sample-ud
spec:
  replicas: 6
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app: sample
  template:
    # statefulSetTemplate or advancedStatefulSetTemplate or cloneSetTemplate or deploymentTemplate
    statefulSetTemplate:
      metadata:
        labels:
          app: sample
      spec:
        selector:
          matchLabels:
            app: sample
        template:
          metadata:
            labels:
              app: sample
          spec:
            containers:
            - image: nginx:alpine
              name: nginx
  topology:
    subsets:
    - name: subset-a
      nodeSelectorTerm:
        matchExpressions:
        - key: node
          operator: In
          values:
          - zone-a
      replicas: 1
    - name: subset-b
      nodeSelectorTerm:
        matchExpressions:
        - key: node
          operator: In
          values:
          - zone-b
      replicas: 50%
    - name: subset-c
      nodeSelectorTerm:
        matchExpressions:
        - key: node
          operator: In
          values:
          - zone-c
  updateStrategy:
    manualUpdate:
      partitions:
        subset-a: 0
        subset-b: 0
        subset-c: 0
    type: Manual
";

const ADAPTIVE: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: UnitedDeployment
metadata:
  name: ada
spec:
  replicas: 2
  selector:
    matchLabels:
      app: ada
  template:
    cloneSetTemplate:
      metadata:
        labels:
          app: ada
      spec:
        selector:
          matchLabels:
            app: ada
        template:
          metadata:
            labels:
              app: ada
          spec:
            terminationGracePeriodSeconds: 1
            containers:
            - name: main
              image: IMAGE
              command: [sh, -c, exec httpd -f -p 8080 -h /www]
  topology:
    scheduleStrategy:
      type: Adaptive
      adaptive:
        rescheduleCriticalSeconds: 2
    subsets:
    - name: nowhere
      nodeSelectorTerm:
        matchExpressions:
        - key: zone
          operator: In
          values: [c]
      maxReplicas: 2
    - name: subset-b
      nodeSelectorTerm:
        matchExpressions:
        - key: zone
          operator: In
          values: [b]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniteddeployment_spreads_over_labelled_nodes_rolls_by_partition_and_scales() {
    let registry = Registry::start().await.unwrap();
    let image = |tag: &'static str| {
        let registry = &registry;
        async move {
            let page = format!("web {tag}\n");
            kinetic_testkit::images::busybox(registry, "ud-web", tag, &[("www/index.html", &page)])
                .await
                .unwrap()
        }
    };
    let (v1, v2) = (image("v1").await, image("v2").await);
    let cluster = Cluster::start("ud-a", "ud-b").await;
    let env = &cluster.env;
    env.kubectl(&["label", "node", "ud-a", "zone=a"]).await;
    env.kubectl(&["label", "node", "ud-b", "zone=b"]).await;

    // -- Spread: subset-a has 1 replica (fixed), subset-b the other 2. ------------------------
    crate::apply_when_served(
        &env.up,
        env.home.path(),
        &web(&v1, 3, FIXED_SUBSETS, "        subset-a: 0\n        subset-b: 0"),
    )
    .await;
    let pods = env
        .settled(
            "web",
            3,
            |p| placed(p, "subset-a", "ud-a", 1, &v1) && placed(p, "subset-b", "ud-b", 2, &v1),
            true,
        )
        .await;
    // Upstream's workload names and labels.
    let sets = env
        .jsonpath(
            &["clonesets", "-l", "app=web"],
            r#"{range .items[*]}{.metadata.name} {.metadata.labels.apps\.kruise\.io/subset-name} {.spec.replicas} {.metadata.ownerReferences[0].kind}{"\n"}{end}"#,
        )
        .await;
    let mut lines: Vec<&str> = sets.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{sets}");
    for (line, (subset, replicas)) in lines.iter().zip([("subset-a", "1"), ("subset-b", "2")]) {
        let f: Vec<&str> = line.split(' ').collect();
        let suffix = f[0].strip_prefix(&format!("web-{subset}-")).unwrap_or_default();
        assert_eq!(suffix.len(), 5, "{line}");
        assert_eq!(&f[1..], [subset, replicas, "UnitedDeployment"], "{line}");
    }
    let st = env
        .jsonpath(
            &["ud", "web"],
            "{.status.subsetReplicas} {.status.labelSelector} {.status.conditions[*].type}",
        )
        .await;
    assert_eq!(st, r#"{"subset-a":1,"subset-b":2} app=web SubsetProvisioned SubsetUpdated"#);
    let rev1 = env.jsonpath(&["ud", "web"], "{.status.currentRevision}").await;
    assert!(rev1.starts_with("web-"), "{rev1}");
    let a1 = uids(&pods, "subset-a");

    // -- A new image with subset-a's partition at 1: only subset-b rolls. ---------------------
    env.apply(&web(&v2, 3, FIXED_SUBSETS, "        subset-a: 1\n        subset-b: 0")).await;
    let pods = env
        .settled(
            "web",
            3,
            |p| placed(p, "subset-a", "ud-a", 1, &v1) && placed(p, "subset-b", "ud-b", 2, &v2),
            false,
        )
        .await;
    assert_eq!(uids(&pods, "subset-a"), a1, "subset-a must not roll");
    let b2 = uids(&pods, "subset-b");
    let st = env
        .jsonpath(
            &["ud", "web"],
            "{.status.updatedReplicas} {.status.currentRevision} {.status.updateStatus.currentPartitions}",
        )
        .await;
    assert_eq!(st, format!(r#"2 {rev1} {{"subset-a":1,"subset-b":0}}"#));
    let rev2 = env.jsonpath(&["ud", "web"], "{.status.updateStatus.updatedRevision}").await;
    assert_ne!(rev2, rev1);

    // -- subset-a's partition back to 0: only subset-a rolls; then the update is complete. ----
    env.apply(&web(&v2, 3, FIXED_SUBSETS, "        subset-a: 0\n        subset-b: 0")).await;
    let pods = env
        .settled(
            "web",
            3,
            |p| placed(p, "subset-a", "ud-a", 1, &v2) && placed(p, "subset-b", "ud-b", 2, &v2),
            true,
        )
        .await;
    assert_eq!(uids(&pods, "subset-b"), b2, "subset-b must not roll again");
    assert_eq!(env.jsonpath(&["ud", "web"], "{.status.currentRevision}").await, rev2);

    // -- Scale through the scale subresource: subset-a keeps 1, subset-b gets the rest. -------
    env.kubectl(&["scale", "ud", "web", "--replicas=5"]).await;
    env.settled(
        "web",
        5,
        |p| placed(p, "subset-a", "ud-a", 1, &v2) && placed(p, "subset-b", "ud-b", 4, &v2),
        true,
    )
    .await;
    assert_eq!(
        env.jsonpath(&["ud", "web"], "{.status.subsetReplicas}").await,
        r#"{"subset-a":1,"subset-b":4}"#
    );

    // -- Elastic: subset-a filled first up to maxReplicas 2, the rest to subset-b; scaling
    //    down empties subset-b first. -----------------------------------------------------------
    env.apply(&web(&v2, 5, ELASTIC_SUBSETS, "        subset-a: 0\n        subset-b: 0")).await;
    env.settled(
        "web",
        5,
        |p| placed(p, "subset-a", "ud-a", 2, &v2) && placed(p, "subset-b", "ud-b", 3, &v2),
        true,
    )
    .await;
    env.kubectl(&["scale", "ud", "web", "--replicas=2"]).await;
    env.settled(
        "web",
        2,
        |p| placed(p, "subset-a", "ud-a", 2, &v2) && !p.contains_key("subset-b"),
        true,
    )
    .await;
    assert_eq!(
        env.jsonpath(&["ud", "web"], "{.status.subsetReplicas}").await,
        r#"{"subset-a":2,"subset-b":0}"#
    );

    // -- Adaptive: no node has zone=c, so the pods of `nowhere` stay Pending; after
    //    rescheduleCriticalSeconds their replicas move to subset-b. ----------------------------
    env.apply(&ADAPTIVE.replace("IMAGE", &v1)).await;
    env.settled(
        "ada",
        2,
        |p| placed(p, "subset-b", "ud-b", 2, &v1) && !p.contains_key("nowhere"),
        true,
    )
    .await;
    let st = env
        .jsonpath(
            &["ud", "ada"],
            r#"{.status.subsetReplicas} {.status.subsetStatuses[?(@.name=="nowhere")].conditions[0].status}"#,
        )
        .await;
    assert_eq!(st, r#"{"nowhere":0,"subset-b":2} False"#);

    // -- The manual's example applies unchanged and reads back. -------------------------------
    env.apply(MANUAL).await;
    assert_eq!(
        env.jsonpath(
            &["ud", "sample-ud"],
            "{.spec.replicas} {.spec.topology.subsets[1].replicas} {.spec.updateStrategy.type}"
        )
        .await,
        "6 50% Manual"
    );
    let table = env.kubectl(&["get", "ud", "web"]).await;
    assert!(
        table.starts_with("NAME") && table.contains("DESIRED") && table.contains("READY"),
        "{table}"
    );

    // Deleting the UnitedDeployment takes its subsets and pods with it.
    env.kubectl(&["delete", "ud", "web", "ada", "sample-ud"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = env.kubectl(&["get", "clonesets", "-o", "name"]).await;
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "subset workloads left: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One pod of a UnitedDeployment: (subset, name, node, image, ready, uid).
type Row = (String, String, String, String, bool, String);

impl Env {
    /// The live pods labelled `app=name`, sorted by subset and name.
    async fn rows(&self, app: &str) -> Vec<Row> {
        let list =
            self.pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
        let mut rows: Vec<Row> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let spec = p.spec.as_ref().unwrap();
                (
                    p.labels().get("apps.kruise.io/subset-name").cloned().unwrap_or_default(),
                    p.name_any(),
                    spec.node_name.clone().unwrap_or_default(),
                    spec.containers[0].image.clone().unwrap_or_default(),
                    crate::workloads::is_ready(p),
                    p.uid().unwrap_or_default(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Waits until `check` holds for [`Env::rows`] of `app`.
    async fn wait_rows(&self, app: &str, what: &str, check: impl Fn(&[Row]) -> bool) -> Vec<Row> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let rows = self.rows(app).await;
            if check(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {rows:#?}\n{}\n{}\n{}",
                self.kubectl(&["get", "ud", "-o", "yaml"]).await,
                self.kubectl(&[
                    "get",
                    "statefulsets.apps,statefulsets.apps.kruise.io,pods",
                    "-o",
                    "wide"
                ])
                .await,
                self.kubectl(&["get", "events"]).await,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The ready pods of `subset`, each on `node` with `image`; `n` of them.
fn ready_on(rows: &[Row], subset: &str, node: &str, n: usize, image: &str) -> bool {
    let of: Vec<&Row> = rows.iter().filter(|r| r.0 == subset).collect();
    of.len() == n && of.iter().all(|r| r.2 == node && r.3 == image && r.4)
}

/// `(subset, replicas, rollingUpdate.partition, owner kind)` of the StatefulSets of `resource`
/// labelled `app=sample`, by subset; each named `sample-ud-{subset}-xxxxx`.
async fn subset_sets(env: &Env, resource: &str) -> Vec<String> {
    let out = env
        .jsonpath(
            &[resource, "-l", "app=sample"],
            r#"{range .items[*]}{.metadata.name} {.metadata.labels.apps\.kruise\.io/subset-name} {.spec.replicas} {.spec.updateStrategy.rollingUpdate.partition} {.metadata.ownerReferences[0].kind}{"\n"}{end}"#,
        )
        .await;
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let suffix = f[0].strip_prefix(&format!("sample-ud-{}-", f[1])).unwrap_or_default();
            assert_eq!(suffix.len(), 5, "{l}");
            f[1..].join(" ")
        })
        .collect();
    lines.sort();
    lines
}

/// The manual's UnitedDeployment on StatefulSet subsets, end to end on two node agents labelled
/// `node=zone-a` and `node=zone-b` (the manual's `zone-c` has no node, so `subset-c`'s pods
/// stay Pending, as they would on such a cluster):
/// - with `advancedStatefulSetTemplate` it creates one Advanced StatefulSet per subset
///   (`sample-ud-{subset}-xxxxx`, replicas 1, 50% = 3 and the other 2) whose pods run on their
///   subset's node;
/// - a new image with `subset-b`'s partition at 2 sets that set's
///   `rollingUpdate.partition`: its ordinal 2 is recreated with the new image, ordinals 0 and 1
///   stay as they were, `subset-a` rolls completely;
/// - the manual unchanged (`statefulSetTemplate`) replaces the Advanced StatefulSets with
///   `apps/v1` StatefulSets spread the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniteddeployment_spreads_statefulset_subsets_and_maps_partitions() {
    let registry = Registry::start().await.unwrap();
    // The manual's nginx listens without a command: these images do the same with busybox's
    // httpd (and exit on SIGTERM, as nginx does).
    let image = |tag: &'static str| {
        let registry = &registry;
        async move {
            let page = format!("sample {tag}\n");
            let mut config = kinetic_testkit::images::busybox_config();
            config.cmd = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
                .map(String::from)
                .to_vec();
            kinetic_testkit::images::busybox_with(
                registry,
                "ud-sample",
                tag,
                &[("www/index.html", &page)],
                config,
            )
            .await
            .unwrap()
        }
    };
    let (v1, v2) = (image("v1").await, image("v2").await);
    let cluster = Cluster::start("uds-a", "uds-b").await;
    let env = &cluster.env;
    env.kubectl(&["label", "node", "uds-a", "node=zone-a"]).await;
    env.kubectl(&["label", "node", "uds-b", "node=zone-b"]).await;

    // -- The manual's example with the Advanced StatefulSet template. -------------------------
    let manual = MANUAL.replace("nginx:alpine", &v1);
    let advanced = manual.replace("    statefulSetTemplate:", "    advancedStatefulSetTemplate:");
    assert_ne!(advanced, manual);
    crate::apply_when_served(&env.up, env.home.path(), &advanced).await;
    let spread = |image: &'static str| {
        let image = if image == "v1" { v1.clone() } else { v2.clone() };
        move |rows: &[Row]| {
            ready_on(rows, "subset-a", "uds-a", 1, &image)
                && ready_on(rows, "subset-b", "uds-b", 3, &image)
                && rows.iter().any(|r| r.0 == "subset-c")
                && rows.iter().filter(|r| r.0 == "subset-c").all(|r| r.2.is_empty() && !r.4)
        }
    };
    let before = env.wait_rows("sample", "advanced subsets spread", spread("v1")).await;
    assert_eq!(
        subset_sets(env, "statefulsets.apps.kruise.io").await,
        [
            "subset-a 1 0 UnitedDeployment",
            "subset-b 3 0 UnitedDeployment",
            "subset-c 2 0 UnitedDeployment"
        ]
    );
    assert_eq!(env.kubectl(&["get", "statefulsets.apps", "-o", "name"]).await.trim(), "");
    assert_eq!(
        env.jsonpath(&["ud", "sample-ud"], "{.status.subsetReplicas}").await,
        r#"{"subset-a":1,"subset-b":3,"subset-c":2}"#
    );

    // -- A new image with subset-b's partition at 2: only its ordinal 2 and subset-a roll. ----
    let patch = serde_json::json!({"spec": {
        "template": {"advancedStatefulSetTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "nginx", "image": v2}]}}}}},
        "updateStrategy": {"manualUpdate": {"partitions": {"subset-b": 2}}},
    }})
    .to_string();
    env.kubectl(&["patch", "ud", "sample-ud", "--type", "merge", "-p", &patch]).await;
    let after = env
        .wait_rows("sample", "subset-b rolled above its partition", |rows| {
            let b: Vec<&Row> = rows.iter().filter(|r| r.0 == "subset-b").collect();
            ready_on(rows, "subset-a", "uds-a", 1, &v2)
                && b.len() == 3
                && b.iter().all(|r| r.2 == "uds-b" && r.4)
                && b.iter().map(|r| r.3.as_str()).collect::<Vec<_>>() == [&v1, &v1, &v2]
        })
        .await;
    let uid = |rows: &[Row], name: &str| {
        rows.iter().find(|r| r.1 == name).map(|r| r.5.clone()).unwrap_or_default()
    };
    for r in before.iter().filter(|r| r.0 == "subset-b" && !r.1.ends_with("-2")) {
        assert_eq!(uid(&after, &r.1), r.5, "{} is below the partition and must not roll", r.1);
    }
    assert_eq!(
        subset_sets(env, "statefulsets.apps.kruise.io").await,
        [
            "subset-a 1 0 UnitedDeployment",
            "subset-b 3 2 UnitedDeployment",
            "subset-c 2 0 UnitedDeployment"
        ]
    );
    assert_eq!(
        env.jsonpath(&["ud", "sample-ud"], "{.status.updateStatus.currentPartitions}").await,
        r#"{"subset-a":0,"subset-b":2,"subset-c":0}"#
    );

    // -- The manual unchanged: apps/v1 StatefulSets replace the Advanced ones. ----------------
    env.apply(&manual).await;
    env.wait_rows("sample", "apps/v1 subsets spread", spread("v1")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.kubectl(&["get", "statefulsets.apps.kruise.io", "-o", "name"]).await.is_empty() {
        assert!(Instant::now() < deadline, "the Advanced StatefulSets were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        subset_sets(env, "statefulsets.apps").await,
        [
            "subset-a 1 0 UnitedDeployment",
            "subset-b 3 0 UnitedDeployment",
            "subset-c 2 0 UnitedDeployment"
        ]
    );

    env.kubectl(&["delete", "ud", "sample-ud"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = env.kubectl(&["get", "statefulsets.apps,pods", "-o", "name"]).await;
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "subset workloads left: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
