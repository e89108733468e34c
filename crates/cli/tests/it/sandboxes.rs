//! Ready pod sandboxes (issue 14, part 3) on a real `kinetic up`: kill -9 of the agent during a
//! burst of pod starts, and many create/delete cycles, leave no duplicate IP and nothing behind
//! (network namespaces, veths, IPAM entries, mounts, cgroups, bundle directories, shims) beyond
//! the ready sandboxes themselves — which a restart with them off removes too.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const NODE: &str = "node-rs";
const LABEL: &str = "kinetic.dev/sandboxes-test";

fn up_args(slot: &NetSlot, ready: usize) -> Vec<String> {
    let mut a: Vec<String> = [
        "--node-name",
        NODE,
        "--node-listen",
        "127.0.0.1:0",
        "--bridge",
        &slot.bridge,
        "--pod-cidr",
        &slot.cidr,
        "--ready-sandboxes",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.push(ready.to_string());
    a.push("--ready-sandboxes-min".into());
    a.push(usize::from(ready > 0).to_string());
    a
}

async fn start_up(dir: &Path, port: u16, args: &[String]) -> crate::Kinetic {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::start_with("up", dir, port, &args).await
}

async fn client(up: &crate::Kinetic) -> kube::Client {
    kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap()
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: "1"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}],
        },
    }))
    .unwrap()
}

fn is_ready(p: &Pod) -> bool {
    crate::workloads::is_ready(p)
}

/// Polls `f` every 100 ms until it gives `Some`, failing with `what` after `secs`.
async fn wait_for<T, Fut: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not reached within {secs}s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the node holds on the host besides its ready sandboxes; empty when nothing leaked.
/// `uids` are the test's pods.
fn leftovers(dir: &Path, bridge: &str, uids: &HashSet<String>) -> Vec<String> {
    let node = dir.join("node");
    let mut left = Vec::new();
    let ready: BTreeSet<String> = std::fs::read_dir(node.join("network/ready"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|f| {
            f.strip_suffix(".ready").map_or_else(|| format!("{f} (incomplete)"), str::to_owned)
        })
        .collect();
    // IPAM: only the ready sandboxes hold addresses.
    let ipam: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.join("network/ipam.json")).unwrap()).unwrap();
    let allocated: BTreeSet<String> =
        ipam["allocations"].as_object().unwrap().keys().cloned().collect();
    if allocated != ready {
        left.push(format!("IPAM entries {allocated:?} besides the ready sandboxes {ready:?}"));
    }
    // Namespaces: the pods' (by uid or a claimed ready sandbox of this bridge's) are gone.
    let ours = format!("kinetic-rs-{bridge}-");
    for e in std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pod = n.strip_prefix("kinetic-").is_some_and(|u| uids.contains(u));
        if pod || (n.starts_with(&ours) && !ready.contains(&n)) {
            left.push(format!("netns {n}"));
        }
    }
    // Veths: one per ready sandbox on the bridge.
    let ports: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if ports.len() != ready.len() {
        left.push(format!("bridge ports {ports:?} for {} ready sandboxes", ready.len()));
    }
    for sub in ["pods", "runc", "native"] {
        for e in std::fs::read_dir(node.join(sub)).into_iter().flatten().flatten() {
            left.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if Path::new(m).starts_with(dir) {
            left.push(format!("mount {m}"));
        }
    }
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        for cg in std::fs::read_dir(ctl.path().join("kinetic")).into_iter().flatten().flatten() {
            let n = cg.file_name().to_string_lossy().into_owned();
            if uids.iter().any(|u| n.starts_with(u.as_str())) {
                left.push(format!("cgroup {}", cg.path().display()));
            }
        }
    }
    let inside = dir.to_string_lossy().into_owned();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("__shim") && cmd.contains(&inside) {
            left.push(format!("shim pid {}", p.file_name().to_string_lossy()));
        }
    }
    left
}

/// Waits until [`leftovers`] is empty (the agent tears a pod down after it left the API).
async fn settled(dir: &Path, bridge: &str, uids: &HashSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = leftovers(dir, bridge, uids);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With the sandboxes off, a restarted agent removes the ready ones too: nothing of the node
/// is left on the host but its (empty) bridge.
async fn restart_without_ready_sandboxes(
    mut up: crate::Kinetic,
    dir: &Path,
    port: u16,
    slot: &NetSlot,
    uids: &HashSet<String>,
) {
    up.child.start_kill().unwrap();
    let _ = up.child.wait().await;
    let up = start_up(dir, port, &up_args(slot, 0)).await;
    let ready = &dir.join("node/network/ready");
    wait_for(30, "the ready sandboxes removed", || async move {
        let n = std::fs::read_dir(ready).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(())
    })
    .await;
    settled(dir, &slot.bridge, uids).await;
    drop(up);
}

/// Regression (issue 14): kill -9 of the agent during a burst of 50 pod starts with ready
/// sandboxes on; after a restart every pod is Running (or failed with a reason), no two pods
/// share an IP, IPAM holds exactly the live pods' and ready sandboxes' addresses, and once the
/// pods are deleted nothing of them is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_a_burst_with_ready_sandboxes_restarts_clean() {
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "burst", "v1", &[]).await.unwrap();
    let dir = crate::UpDir::new();
    let port = crate::free_port();
    let args = up_args(&slot, 8);
    let mut up = start_up(dir.path(), port, &args).await;
    let pods: &Api<Pod> = &Api::namespaced(client(&up).await, "default");
    // A first pod starts the rate the pool follows, and pulls the image.
    pods.create(&PostParams::default(), &pod("first", &image)).await.unwrap();
    wait_for(60, "pod first Ready", || async move {
        pods.get_opt("first").await.ok().flatten().filter(is_ready)
    })
    .await;
    let creates: Vec<_> = (0..50)
        .map(|i| {
            let pods = pods.clone();
            let p = pod(&format!("burst-{i}"), &image);
            tokio::spawn(async move { pods.create(&PostParams::default(), &p).await.map(drop) })
        })
        .collect();
    for c in creates {
        c.await.unwrap().unwrap();
    }
    let lp = &ListParams::default().labels(LABEL);
    let ready_at_kill = wait_for(60, "10 burst pods Ready", || async move {
        let n = pods.list(lp).await.ok()?.items.iter().filter(|p| is_ready(p)).count();
        (n >= 11).then_some(n)
    })
    .await;
    up.child.start_kill().unwrap();
    let _ = up.child.wait().await;
    eprintln!("killed the agent with {ready_at_kill} of 51 pods Ready");

    let up = start_up(dir.path(), port, &args).await;
    let pods: &Api<Pod> = &Api::namespaced(client(&up).await, "default");
    let all = wait_for(180, "every pod Running or failed", || async move {
        let items = pods.list(lp).await.ok()?.items;
        let done = |p: &Pod| {
            let st = p.status.as_ref();
            let phase = st.and_then(|s| s.phase.as_deref());
            is_ready(p) || (phase == Some("Failed") && st.and_then(|s| s.reason.as_ref()).is_some())
        };
        (items.len() == 51 && items.iter().all(done)).then_some(items)
    })
    .await;
    let ips: Vec<String> = all.iter().filter_map(|p| p.status.as_ref()?.pod_ip.clone()).collect();
    assert_eq!(ips.len(), 51, "every pod has an IP");
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "duplicate pod IPs: {ips:?}");
    // IPAM: one address per live pod and ready sandbox, none twice.
    let ipam: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("node/network/ipam.json")).unwrap())
            .unwrap();
    let allocs: BTreeMap<String, String> =
        serde_json::from_value(ipam["allocations"].clone()).unwrap();
    let values: BTreeSet<&String> = allocs.values().collect();
    assert_eq!(values.len(), allocs.len(), "an address allocated twice: {allocs:?}");
    for ip in &ips {
        assert!(allocs.values().any(|a| a == ip), "pod IP {ip} not in IPAM {allocs:?}");
    }
    let uids: HashSet<String> = all.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    pods.delete_collection(&DeleteParams::default(), lp).await.unwrap();
    wait_for(120, "the pods gone", || async move {
        pods.list(lp).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    settled(dir.path(), &slot.bridge, &uids).await;
    restart_without_ready_sandboxes(up, dir.path(), port, &slot, &uids).await;
}

/// Regression (issue 14): 500 pod create→Ready→delete cycles, 8 at a time, on ready sandboxes
/// leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pod_cycles_on_ready_sandboxes_leave_nothing_behind() {
    const CYCLES: usize = 500;
    let slot = NetSlot::take();
    let registry = Registry::start().await.unwrap();
    let image = kinetic_testkit::images::busybox(&registry, "cycle", "v1", &[]).await.unwrap();
    let dir = crate::UpDir::new();
    let port = crate::free_port();
    let up = start_up(dir.path(), port, &up_args(&slot, 8)).await;
    let pods: Api<Pod> = Api::namespaced(client(&up).await, "default");
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let claimed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (pods, image, next, claimed) =
                (pods.clone(), image.clone(), next.clone(), claimed.clone());
            tokio::spawn(async move {
                let mut uids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CYCLES {
                        return uids;
                    }
                    let name = &format!("cycle-{i}");
                    let pods = &pods;
                    let p = pods.create(&PostParams::default(), &pod(name, &image)).await.unwrap();
                    uids.push(p.metadata.uid.unwrap());
                    // The timeline (written just after Ready) says whether the pod claimed
                    // a ready sandbox.
                    let tl = wait_for(
                        120,
                        &format!("pod {name} Ready with its timeline"),
                        || async move {
                            let p = pods.get_opt(name).await.ok().flatten().filter(is_ready)?;
                            let a = p.metadata.annotations?;
                            let tl: kinetic_api::timeline::Timeline =
                                serde_json::from_str(a.get(kinetic_api::timeline::ANNOTATION)?)
                                    .ok()?;
                            Some(tl)
                        },
                    )
                    .await;
                    if tl.ready_sandbox {
                        claimed.fetch_add(1, Ordering::Relaxed);
                    }
                    pods.delete(name, &DeleteParams::default()).await.unwrap();
                    wait_for(120, &format!("pod {name} gone"), || async move {
                        pods.get_opt(name).await.ok().map(|p| p.is_none()).filter(|g| *g)
                    })
                    .await;
                }
            })
        })
        .collect();
    let mut uids = HashSet::new();
    for w in workers {
        uids.extend(w.await.unwrap());
    }
    let claimed = claimed.load(Ordering::Relaxed);
    eprintln!(
        "{CYCLES} create/delete cycles took {:.1} s; {claimed} pods claimed a ready sandbox",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(uids.len(), CYCLES);
    assert!(claimed > 0, "no pod claimed a ready sandbox");
    settled(dir.path(), &slot.bridge, &uids).await;
    restart_without_ready_sandboxes(up, dir.path(), port, &slot, &uids).await;
}
