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
    let (slot_a, slot_b) = (NetSlot::take(), NetSlot::take());
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
    let (up, _dir) = crate::up_with_node("ud-a", &slot_a).await;
    // The second node: a `kinetic node` process joining the cluster of `up`.
    let dir_b = UpDir::new();
    let _node_b = tokio::process::Command::new(env!("CARGO_BIN_EXE_kinetic"))
        .args(["node", "--kubeconfig", up.kubeconfig.to_str().unwrap(), "--data-dir"])
        .arg(dir_b.path().join("node"))
        .args(["--node-name", "ud-b", "--node-listen", "127.0.0.1:0"])
        .args(["--bridge", &slot_b.bridge, "--pod-cidr", &slot_b.cidr])
        .env("KINETIC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let env =
        Env { up, home: tempfile::tempdir().unwrap(), pods: Api::namespaced(client, "default") };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = env
            .jsonpath(&["nodes"], r#"{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}"#)
            .await;
        if ready.contains("ud-a=True") && ready.contains("ud-b=True") {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not ready: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
