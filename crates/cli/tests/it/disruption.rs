//! Disruption budgets on `kinetic up` with real containers (issue 17, part 7):
//! - `policy/v1` PodDisruptionBudget: an eviction the budget allows deletes the pod, one
//!   beyond it is 429 with upstream's message until the replacement is ready; `kubectl drain`
//!   cordons, evicts, retries the 429s and finishes once the budget allows.
//! - OpenKruise's PodUnavailableBudget: with `maxUnavailable: 1` a CloneSet in-place update
//!   with `maxUnavailable: 100%` never has more than one pod unavailable at a time (and does
//!   not turn into a retry storm); deleting or evicting a protected pod beyond the budget is
//!   refused with upstream's message; the `pub.kruise.io/protect-operations` annotation
//!   decides which operations the budget guards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kinetic_api::kruise::podunavailablebudget::PodUnavailableBudget;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, EvictParams, ListParams, WatchEvent, WatchParams};
use tokio::io::AsyncBufReadExt as _;

use crate::workloads::is_ready;

/// A CloneSet of `replicas` pods that stop at once on SIGTERM and become ready 2 s after
/// they start (so an unavailable pod stays visible for a while).
fn cloneset(name: &str, replicas: i32, image: &str) -> String {
    format!(
        "apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: {name}
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
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, \"trap 'exit 0' TERM; sleep 3600 & wait\"]
        readinessProbe:
          exec:
            command: ['true']
          initialDelaySeconds: 2
          periodSeconds: 1
  updateStrategy:
    type: InPlaceIfPossible
    maxUnavailable: 100%
"
    )
}

struct Env {
    up: crate::Kinetic,
    home: tempfile::TempDir,
    client: kube::Client,
}

impl Env {
    async fn start(node: &str, slot: &NetSlot) -> (Env, crate::UpDir) {
        let (up, dir) = crate::up_with_node(node, slot).await;
        // kube retries 429s on its own; the test wants to see them.
        let client = kinetic_testkit::client_without_retry(&up.kubeconfig).await.unwrap();
        (Env { up, home: tempfile::tempdir().unwrap(), client }, dir)
    }

    async fn kubectl(&self, args: &[&str]) -> String {
        crate::kubectl(&self.up, self.home.path(), args).await
    }

    /// kubectl's output (stdout and stderr) and whether it succeeded.
    async fn kubectl_try(&self, args: &[&str]) -> (bool, String) {
        let out = kinetic_testkit::kubectl(&self.up.kubeconfig, self.home.path(), args, None)
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The ready pods labelled `app=name`, once there are `n` of them (and no others).
    async fn ready_pods(&self, name: &str, n: usize) -> Vec<Pod> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let lp = ListParams::default().labels(&format!("app={name}"));
            let pods = self.pods().list(&lp).await.unwrap().items;
            let live: Vec<Pod> =
                pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            if live.len() == n && live.iter().all(is_ready) {
                return live;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {n} ready pods did not come:\n{}",
                self.kubectl(&["get", "pods", "-o", "wide"]).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the PodDisruptionBudget `name` until `pred` holds.
    async fn pdb_until(&self, name: &str, pred: impl Fn(&PodDisruptionBudget) -> bool) {
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = api.get(name).await.unwrap();
            if pred(&b) {
                return;
            }
            assert!(Instant::now() < deadline, "PDB {name}: {:?}", b.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the PodUnavailableBudget `name` until `pred` holds.
    async fn pub_until(&self, name: &str, pred: impl Fn(&PodUnavailableBudget) -> bool) {
        let api: Api<PodUnavailableBudget> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(b) = api.get(name).await
                && pred(&b)
            {
                return;
            }
            assert!(Instant::now() < deadline, "PUB {name}: {:?}", api.get(name).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn allowed(b: &PodDisruptionBudget) -> i32 {
    b.status.as_ref().map_or(-1, |s| s.disruptions_allowed)
}

fn observed(b: &PodDisruptionBudget) -> bool {
    b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_eviction_is_429_beyond_the_budget_and_kubectl_drain_retries() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "pdb", "v1", &[]).await.unwrap();
    let (env, _dir) = Env::start("node-drain", &slot).await;
    let h = env.home.path();
    crate::apply_when_served(&env.up, h, &cloneset("web", 3, &image)).await;
    let pdb = "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels:
      app: web
";
    crate::kubectl_in(&env.up, h, &["apply", "-f", "-"], Some(pdb)).await;
    let pods = env.ready_pods("web", 3).await;
    env.pdb_until("web", |b| allowed(b) == 1 && observed(b)).await;
    let table = env.kubectl(&["get", "pdb", "web"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]
    );
    assert!(
        table.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>()[1..4]
            == ["2", "N/A", "1"],
        "{table}"
    );

    // Within the budget: the pod goes. Beyond it: 429, upstream's message.
    let (a, b) = (pods[0].name_any(), pods[1].name_any());
    env.pods().evict(&a, &EvictParams::default()).await.unwrap();
    let err = env.pods().evict(&b, &EvictParams::default()).await.unwrap_err();
    match &err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 429, "{err:?}");
            assert_eq!(
                s.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
        }
        other => panic!("{other:?}"),
    }
    let status = Api::<PodDisruptionBudget>::namespaced(env.client.clone(), "default")
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(status.disrupted_pods.unwrap_or_default().contains_key(&a), "the eviction is recorded");
    // Once the replacement is ready the budget allows one again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match env.pods().evict(&b, &EvictParams::default()).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 429 => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(Instant::now() < deadline, "the second eviction never became possible");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.ready_pods("web", 3).await;
    env.pdb_until("web", |b| allowed(b) == 1).await;

    // kubectl drain: cordons, evicts one, retries the others on 429 (every 5 s) until the
    // budget allows them; the node's pods cannot come back (cordoned), so the budget is
    // relaxed once drain was seen retrying.
    let mut drain = tokio::process::Command::new(kinetic_testkit::kubectl_bin())
        .args([
            "drain",
            "node-drain",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ])
        .env("KUBECONFIG", &env.up.kubeconfig)
        .env("HOME", h)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = drain.stderr.take().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                seen.lock().unwrap().push_str(&format!("{l}\n"));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .lock()
        .unwrap()
        .contains("Cannot evict pod as it would violate the pod's disruption budget.")
    {
        assert!(Instant::now() < deadline, "drain did not retry a 429: {}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node: Node = Api::all(env.client.clone()).get("node-drain").await.unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true), "drain cordoned the node");
    let patch = r#"{"spec": {"minAvailable": 0}}"#;
    env.kubectl(&["patch", "pdb", "web", "--type", "merge", "-p", patch]).await;
    let out = tokio::time::timeout(Duration::from_secs(120), drain.wait_with_output())
        .await
        .expect("drain finished")
        .unwrap();
    reader.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = seen.lock().unwrap().clone();
    assert!(out.status.success(), "drain failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("node/node-drain drained"), "{stdout}\n{stderr}");
    assert!(stderr.contains("will retry after 5s"), "{stderr}");
    // Every pod that ran on the node was evicted; the replacements wait (cordoned).
    let lp = ListParams::default().labels("app=web");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = env.pods().list(&lp).await.unwrap().items;
        if left.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "pods still on the drained node: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.kubectl(&["uncordon", "node-drain"]).await;
    env.kubectl(&["delete", "cloneset", "web"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_holds_an_in_place_update_to_one_pod_at_a_time_and_refuses_deletes_beyond_it() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let v1 = kinetic_testkit::images::busybox(&registry, "pub", "v1", &[]).await.unwrap();
    let v2 =
        kinetic_testkit::images::busybox(&registry, "pub", "v2", &[("v2", "2")]).await.unwrap();
    let (env, _dir) = Env::start("node-pub", &slot).await;
    let h = env.home.path();
    crate::apply_when_served(&env.up, h, &cloneset("pw", 3, &v1)).await;
    // The manual's shape: a targetRef to the CloneSet.
    let budget = "apiVersion: policy.kruise.io/v1alpha1
kind: PodUnavailableBudget
metadata:
  name: pw
spec:
  targetRef:
    apiVersion: apps.kruise.io/v1alpha1
    kind: CloneSet
    name: pw
  maxUnavailable: 1
";
    crate::apply_when_served(&env.up, h, budget).await;
    let before = env.ready_pods("pw", 3).await;
    let ready_budget = |b: &PodUnavailableBudget| {
        b.status.as_ref().is_some_and(|s| {
            (s.unavailable_allowed, s.current_available, s.desired_available, s.total_replicas)
                == (1, 3, 2, 3)
        })
    };
    env.pub_until("pw", ready_budget).await;
    let table = env.kubectl(&["get", "pub", "pw"]).await;
    assert!(table.contains("ALLOWED") && table.contains("AVAILABLE"), "{table}");

    // Watch readiness: at no moment more than one pod unavailable.
    let unavailable_max = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (pods, max, writes) = (env.pods(), unavailable_max.clone(), writes.clone());
        let names: Vec<String> = before.iter().map(|p| p.name_any()).collect();
        tokio::spawn(async move {
            let mut ready: BTreeMap<String, bool> = names.into_iter().map(|n| (n, true)).collect();
            let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version;
            let wp = WatchParams::default().labels("app=pw");
            let mut stream = pods.watch(&wp, &rv.unwrap_or_default()).await.unwrap().boxed();
            while let Ok(Some(e)) = stream.try_next().await {
                if let WatchEvent::Modified(p) = e {
                    writes.fetch_add(1, Ordering::Relaxed);
                    ready.insert(p.name_any(), is_ready(&p));
                    let down = ready.values().filter(|r| !**r).count();
                    max.fetch_max(down, Ordering::Relaxed);
                }
            }
        })
    };
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
    );
    env.kubectl(&["patch", "cloneset", "pw", "--type", "json", "-p", &patch]).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let after = loop {
        let pods = env.ready_pods("pw", 3).await;
        let updated = pods.iter().all(|p| {
            p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(v2.as_str())
                && p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].image == v2
        });
        if updated {
            break pods;
        }
        assert!(Instant::now() < deadline, "the in-place update did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    watcher.abort();
    let uids = |ps: &[Pod]| {
        let mut u: Vec<String> = ps.iter().map(|p| p.uid().unwrap()).collect();
        u.sort();
        u
    };
    assert_eq!(uids(&before), uids(&after), "updated in place, same pods");
    let max = unavailable_max.load(Ordering::Relaxed);
    assert_eq!(max, 1, "at most one pod unavailable at a time (and one was)");
    let n = writes.load(Ordering::Relaxed);
    assert!(n < 120, "{n} writes to 3 pods during one in-place update: a retry storm");
    let events =
        env.kubectl(&["get", "events", "--field-selector", "involvedObject.name=pw"]).await;
    assert_eq!(events.matches("SuccessfulUpdatePodInPlace").count(), 3, "{events}");

    // Deletes: the first is within the budget, the second is refused with upstream's
    // message, and so is an eviction.
    env.pub_until("pw", ready_budget).await;
    let (a, b) = (after[0].name_any(), after[1].name_any());
    env.kubectl(&["delete", "pod", &a, "--wait=false"]).await;
    let (ok, text) = env.kubectl_try(&["delete", "pod", &b, "--wait=false"]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("admission webhook \"vpod.kb.io\" denied the request: podunavailablebudget.policy.kruise.io \"pw\" is forbidden: pub unavailable allowed is negative"),
        "{text}"
    );
    let err = env.pods().evict(&b, &EvictParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err:?}");
    assert!(env.pods().get(&b).await.unwrap().metadata.deletion_timestamp.is_none());
    // Only UPDATE protected: the delete goes through.
    env.kubectl(&["annotate", "pub", "pw", "pub.kruise.io/protect-operations=UPDATE"]).await;
    env.kubectl(&["delete", "pod", &b, "--wait=false"]).await;
    env.kubectl(&["delete", "cloneset", "pw"]).await;
}
