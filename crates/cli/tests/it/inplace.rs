//! In-place updates that OpenKruise's CloneSet manual documents, through kubectl on `kinetic up`
//! with real containers (issue 18):
//! - two containers out of name order (`[sidecar, main]`, the manual's example) both change
//!   image: same pod UID and IP, both images changed, no retry storm (the patch used to list
//!   the containers in name order, the strategic merge patch reordered them and pod
//!   validation refused every retry);
//! - `InPlaceUpdateReady` back at True carries no `StartInPlaceUpdate` reason;
//! - env read from a label (`fieldRef`) follows a template label change in place, alone and
//!   together with an image change (`InPlaceUpdateEnvFromMetadata`);
//! - `apps.kruise.io/container-launch-priority: Ordered` starts the second container only once
//!   the first is ready, and an in-place update of both goes in two batches in that order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use crate::kubectl;

/// GET `path` on `ip:port`: the body, or why not.
async fn get(ip: &str, port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let call = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
        match out.split_once("\r\n\r\n") {
            Some((head, body)) if head.contains(" 200 ") => Ok(body.to_owned()),
            _ => Err(format!("answer {:?}", out.lines().next())),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.map_err(|_| "timeout".to_owned())?
}

/// The manual's sidecar example: `sidecar` listed before `main` (not in name order), and
/// `main` reads the `track` label into its env and serves it at `/track`.
const SIDECAR_MAIN: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: sm
spec:
  replicas: 2
  selector:
    matchLabels:
      app: sm
  template:
    metadata:
      labels:
        app: sm
        track: stable
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: sidecar
        image: SIDECAR
        command: [sh, -c, exec httpd -f -p 8081 -h /www]
      - name: main
        image: MAIN
        command: [sh, -c, 'mkdir -p /srv && cp /www/* /srv/ && echo \"$TRACK\" > /srv/track && exec httpd -f -p 8080 -h /srv']
        env:
        - name: TRACK
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['track']
        readinessProbe:
          httpGet: {path: /track, port: 8080}
          periodSeconds: 1
  updateStrategy:
    type: InPlaceIfPossible
    maxUnavailable: 2
";

/// Two containers started in order: `first` answers (and is ready) only 2 s after it starts.
const ORDERED: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: ord
spec:
  replicas: 1
  selector:
    matchLabels:
      app: ord
  template:
    metadata:
      labels:
        app: ord
      annotations:
        apps.kruise.io/container-launch-priority: Ordered
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: first
        image: SIDECAR
        command: [sh, -c, sleep 2; exec httpd -f -p 8081 -h /www]
        readinessProbe:
          httpGet: {path: /, port: 8081}
          periodSeconds: 1
      - name: second
        image: MAIN
        command: [sh, -c, exec httpd -f -p 8080 -h /www]
  updateStrategy:
    type: InPlaceIfPossible
";

fn status_of<'a>(p: &'a Pod, name: &str) -> &'a ContainerStatus {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().find(|c| c.name == name).unwrap()
}

fn started_at(p: &Pod, name: &str) -> jiff::Timestamp {
    let running = status_of(p, name).state.as_ref().and_then(|s| s.running.as_ref());
    running.and_then(|r| r.started_at.as_ref()).unwrap().0
}

fn ip_of(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

struct Env {
    up: crate::Kinetic,
    home: tempfile::TempDir,
    pods: Api<Pod>,
}

impl Env {
    async fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.up, self.home.path(), args).await
    }

    /// Waits until the CloneSet `name` has `n` pods, all updated to its current revision and
    /// ready (`updatedReadyReplicas`), and returns its pods.
    async fn rolled_out(&self, name: &str, n: usize) -> Vec<Pod> {
        let want = format!("{n}/{n}/{n}");
        let path =
            "jsonpath={.status.updatedReadyReplicas}/{.status.readyReplicas}/{.status.replicas}";
        for i in 0.. {
            let got = self.kubectl(&["get", "cloneset", name, "-o", path]).await;
            let generation = self
                .kubectl(&[
                    "get",
                    "cloneset",
                    name,
                    "-o",
                    "jsonpath={.metadata.generation}/{.status.observedGeneration}",
                ])
                .await;
            let observed = generation.split_once('/').is_some_and(|(a, b)| a == b);
            if got == want && observed {
                let list = ListParams::default().labels(&format!("app={name}"));
                let pods = self.pods.list(&list).await.unwrap().items;
                if pods.len() == n && pods.iter().all(crate::workloads::is_ready) {
                    return pods;
                }
            }
            assert!(
                i < 900,
                "{name} did not roll out ({got}, generation {generation}):\n{}\n{}",
                self.kubectl(&["get", "pods", "-o", "wide"]).await,
                self.kubectl(&["get", "pods", "-l", &format!("app={name}"), "-o", "yaml"]).await,
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    }

    /// Counts the changes to pods labelled `app=name` from now on (a retry storm writes the
    /// pod over and over: each failed pass re-patched its conditions).
    fn count_pod_writes(&self, name: &str) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let (pods, c) = (self.pods.clone(), count.clone());
        let wp = WatchParams::default().labels(&format!("app={name}"));
        tokio::spawn(async move {
            let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version;
            let stream = pods.watch(&wp, &rv.unwrap_or_default()).await.unwrap();
            let mut stream = stream.boxed();
            while let Ok(Some(e)) = stream.try_next().await {
                if matches!(e, WatchEvent::Modified(_)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        count
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloneset_in_place_multi_container_env_from_metadata_and_launch_priority() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = |repo: &'static str, tag: &'static str| {
        let registry = &registry;
        async move {
            let page = format!("{repo} {tag}\n");
            kinetic_testkit::images::busybox(registry, repo, tag, &[("www/index.html", &page)])
                .await
                .unwrap()
        }
    };
    let (side1, side2) = (image("side", "v1").await, image("side", "v2").await);
    let (main1, main2, main3) =
        (image("main", "v1").await, image("main", "v2").await, image("main", "v3").await);
    let (up, _dir) = crate::up_with_node("node-ip", &slot).await;
    let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
    let env =
        Env { up, home: tempfile::tempdir().unwrap(), pods: Api::namespaced(client, "default") };
    let h = env.home.path();

    // -- Both images of [sidecar, main] in place (issue 18 item 1). --------------------------
    let manifest = SIDECAR_MAIN.replace("SIDECAR", &side1).replace("MAIN", &main1);
    crate::apply_when_served(&env.up, h, &manifest).await;
    let before = env.rolled_out("sm", 2).await;
    let identity = |pods: &[Pod]| {
        let mut ids: Vec<(String, String, String)> =
            pods.iter().map(|p| (p.name_any(), p.uid().unwrap(), ip_of(p))).collect();
        ids.sort();
        ids
    };
    let writes = env.count_pod_writes("sm");
    let images = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{side2}"}},
            {{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"{main2}"}}]"#
    );
    env.kubectl(&["patch", "cloneset", "sm", "--type", "json", "-p", &images]).await;
    let after = env.rolled_out("sm", 2).await;
    assert_eq!(identity(&before), identity(&after), "same pods, same UIDs and IPs");
    for p in &after {
        let spec = &p.spec.as_ref().unwrap().containers;
        let names: Vec<&str> = spec.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["sidecar", "main"], "the container order is kept");
        assert_eq!(spec[0].image.as_deref(), Some(side2.as_str()));
        assert_eq!(spec[1].image.as_deref(), Some(main2.as_str()));
        for (c, page) in [("sidecar", "side v2"), ("main", "main v2")] {
            assert_eq!(status_of(p, c).restart_count, 1, "{} {c}", p.name_any());
            let port = if c == "main" { 8080 } else { 8081 };
            assert_eq!(get(&ip_of(p), port, "/").await.unwrap().trim(), page);
        }
        // Item 11: True again, without the reason the False step set.
        let conds = p.status.as_ref().unwrap().conditions.clone().unwrap_or_default();
        let c = conds.iter().find(|c| c.type_ == "InPlaceUpdateReady").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("True", None, None)
        );
    }
    // No retry storm: a pod's in-place update is a handful of writes (conditions, spec,
    // the agent's status writes, lifecycle label), not hundreds.
    let n = writes.load(Ordering::Relaxed);
    assert!(n < 60, "{n} writes to 2 pods during one in-place update");
    let events =
        env.kubectl(&["get", "events", "--field-selector", "involvedObject.name=sm"]).await;
    assert_eq!(events.matches("SuccessfulUpdatePodInPlace").count(), 2, "{events}");
    assert!(!events.contains("Warning"), "{events}");

    // -- Env from a label, alone, then with an image (item 13). ------------------------------
    let label = |track: &str| {
        format!(r#"{{"spec":{{"template":{{"metadata":{{"labels":{{"track":"{track}"}}}}}}}}}}"#)
    };
    env.kubectl(&["patch", "cloneset", "sm", "--type", "merge", "-p", &label("canary")]).await;
    let after_env = env.rolled_out("sm", 2).await;
    assert_eq!(identity(&before), identity(&after_env), "env from metadata is in place");
    for p in &after_env {
        assert_eq!(get(&ip_of(p), 8080, "/track").await.unwrap().trim(), "canary");
        assert_eq!(status_of(p, "main").restart_count, 2, "main restarted for its env");
        assert_eq!(status_of(p, "sidecar").restart_count, 1, "sidecar reads no label");
    }
    let both = format!(
        r#"[{{"op":"replace","path":"/spec/template/metadata/labels/track","value":"prod"}},
            {{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"{main3}"}}]"#
    );
    env.kubectl(&["patch", "cloneset", "sm", "--type", "json", "-p", &both]).await;
    let after_both = env.rolled_out("sm", 2).await;
    assert_eq!(identity(&before), identity(&after_both));
    for p in &after_both {
        assert_eq!(get(&ip_of(p), 8080, "/track").await.unwrap().trim(), "prod");
        assert_eq!(get(&ip_of(p), 8080, "/").await.unwrap().trim(), "main v3");
        assert_eq!(status_of(p, "main").restart_count, 3, "one restart for env and image");
    }

    // -- Launch priority and priority batches (item 14). -------------------------------------
    let manifest = ORDERED.replace("SIDECAR", &side1).replace("MAIN", &main1);
    crate::kubectl_in(&env.up, h, &["apply", "-f", "-"], Some(&manifest)).await;
    let pod = env.rolled_out("ord", 1).await.remove(0);
    // `first` needs 2 s to get ready; `second` waits for it.
    let gap = started_at(&pod, "second").duration_since(started_at(&pod, "first"));
    assert!(gap.as_secs() >= 2, "second started {gap:?} after first");
    let images = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{side2}"}},
            {{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"{main2}"}}]"#
    );
    env.kubectl(&["patch", "cloneset", "ord", "--type", "json", "-p", &images]).await;
    let updated = env.rolled_out("ord", 1).await.remove(0);
    assert_eq!(updated.uid(), pod.uid());
    assert_eq!(
        (status_of(&updated, "first").restart_count, status_of(&updated, "second").restart_count),
        (1, 1)
    );
    let gap = started_at(&updated, "second").duration_since(started_at(&updated, "first"));
    assert!(gap.as_secs() >= 2, "second batch started {gap:?} after the first batch");
    let state = updated.annotations().get("apps.kruise.io/inplace-update-state").unwrap();
    let state: serde_json::Value = serde_json::from_str(state).unwrap();
    let batches: Vec<&serde_json::Value> = state["containerBatchesRecord"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["containers"])
        .collect();
    assert_eq!(batches, [&serde_json::json!(["first"]), &serde_json::json!(["second"])], "{state}");

    // Containers outlive a killed agent by design: delete the pods before stopping `kinetic up`.
    env.kubectl(&["delete", "cloneset", "sm", "ord", "--wait=true"]).await;
    for i in 0.. {
        if env.pods.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        assert!(i < 300, "pods left after deleting their CloneSets");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
