//! Native pod networking (issue 14, part 2) with real namespaces, veths and the bridge: the
//! agent wires pods over netlink and allocates their IPs itself.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use kinetic_node::NetworkMode;
use serde_json::{Value, json};

use crate::harness::{Cluster, is_ready, pod_ip};

async fn native() -> Cluster {
    Cluster::start_with(|cfg| cfg.network = NetworkMode::Native).await
}

fn allocations(c: &Cluster) -> Vec<(String, String)> {
    let b = std::fs::read(c.data_dir().join("network/ipam.json")).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    let mut out: Vec<(String, String)> = v["allocations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(ns, ip)| (ns.clone(), ip.as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

fn sysfs(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_pod_gets_an_ip_on_the_bridge_answers_its_probe_and_leaves_nothing() {
    let c = native().await;
    let bridge = c.cfg.bridge.clone();
    // The agent made the bridge at start, with the range's first address.
    assert!(Path::new("/sys/class/net").join(&bridge).exists(), "no bridge {bridge}");
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "web",
        json!({"containers": [{
            "name": "web", "image": image,
            "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080},
                "periodSeconds": 1},
        }]}),
    )
    .await;
    let pod = c.wait_ready("web").await;
    let ip = pod_ip(&pod);
    let prefix = c.cfg.pod_cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix) && !ip.ends_with(".1"), "pod IP {ip} not in {}", c.cfg.pod_cidr);
    let ns = format!("kinetic-{}", pod.metadata.uid.clone().unwrap());
    assert_eq!(allocations(&c), vec![(ns, ip.clone())]);
    // One veth on the bridge, in hairpin mode, as the CNI bridge plugin configures it.
    let ports = c.bridge_ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(sysfs(&format!("/sys/class/net/{}/brport/hairpin_mode", ports[0])), "1");
    let page = Cluster::http_get(&ip, 8080, "/index.html").await.unwrap();
    assert!(page.contains("hello from kinetic"), "{page}");
    // The network step's CPU is measured (the netlink thread and `ip netns add`).
    let pod = c
        .wait("web", 10, "timeline", |p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(kinetic_api::timeline::ANNOTATION))
        })
        .await;
    let tl: kinetic_api::timeline::Timeline =
        serde_json::from_str(&pod.metadata.annotations.unwrap()[kinetic_api::timeline::ANNOTATION])
            .unwrap();
    assert!(tl.sandbox_cpu.unwrap().network_us > 0, "{tl:?}");

    c.pods().delete("web", &Default::default()).await.unwrap();
    c.wait_gone("web", 20).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(!Path::new("/sys/class/net").join(&ports[0]).exists(), "veth {} remains", ports[0]);
}

/// Kill the agent (every task aborted where it stands, as a kill -9 leaves its files) in the
/// middle of a burst of pod starts, delete some pods while it is down, start it again: every
/// pod ends Ready with its own IP, the allocations are exactly the pods' IPs, one veth per pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_ips_survive_an_agent_kill_mid_burst_without_duplicates() {
    let mut c = native().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    let spec =
        json!({"containers": [{"name": "app", "image": image, "command": ["sleep", "3600"]}]});
    // A first pod pulls the image, so the burst is only starts.
    c.create("warm", spec.clone()).await;
    c.wait_ready("warm").await;
    let names: Vec<String> = (0..12).map(|i| format!("burst-{i}")).collect();
    for n in &names {
        c.create(n, spec.clone()).await;
    }
    // Kill once some but not all of them have an IP.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let with_ip = allocations(&c).len();
        if with_ip >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "no pod of the burst got an IP");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(c.agent.take());
    let before_kill = allocations(&c);
    // Two pods go while the agent is down.
    for n in &names[..2] {
        let dp = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        c.pods().delete(n, &dp).await.unwrap();
    }
    c.start_agent().await;
    let mut ips = HashSet::new();
    let mut expected: Vec<(String, String)> = Vec::new();
    for n in names[2..].iter().chain(std::iter::once(&"warm".to_owned())) {
        let p = c.wait(n, 60, "Ready", is_ready).await;
        let ip = pod_ip(&p);
        assert!(ips.insert(ip.clone()), "IP {ip} handed out twice (pod {n})");
        expected.push((format!("kinetic-{}", p.metadata.uid.unwrap()), ip));
    }
    for n in &names[..2] {
        c.wait_gone(n, 20).await;
    }
    expected.sort();
    // The deleted pods' allocations are released once the agent has cleaned up after them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while allocations(&c) != expected {
        assert!(
            Instant::now() < deadline,
            "allocations {:#?}\nexpected {expected:#?}\nbefore the kill {before_kill:#?}",
            allocations(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.bridge_ports().len(), expected.len(), "{:?}", c.bridge_ports());

    for n in names[2..].iter().chain(std::iter::once(&"warm".to_owned())) {
        c.pods().delete(n, &Default::default()).await.unwrap();
    }
    for n in names[2..].iter().chain(std::iter::once(&"warm".to_owned())) {
        c.wait_gone(n, 30).await;
    }
    let left = c.settled_leftovers(15).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// An agent killed after it mounted a container's rootfs but before it recorded that container
/// (the case the burst above hits by chance): the mount is known only to the mount table. The
/// next agent unmounts it, both under a deleted pod's directory that has a record and under
/// one that has none, and leaves no directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_rootfs_mounts_of_deleted_pods_are_unmounted_by_the_next_agent() {
    let mut c = native().await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "p",
        json!({"containers": [{"name": "app", "image": image, "command": ["sleep", "3600"]}]}),
    )
    .await;
    let uid = c.wait_ready("p").await.metadata.uid.unwrap();
    drop(c.agent.take());
    let pods = c.data_dir().join("pods");
    let recorded = pods.join(&uid).join("containers/app/7/rootfs");
    let unrecorded = pods.join("00000000-dead-beef-0000-000000000000/containers/app/1/rootfs");
    for m in [&recorded, &unrecorded] {
        std::fs::create_dir_all(m).unwrap();
        rustix::mount::mount("tmpfs", m, "tmpfs", rustix::mount::MountFlags::empty(), None)
            .unwrap();
        std::fs::write(m.join("file"), b"x").unwrap();
    }
    assert_eq!(c.leftovers().iter().filter(|l| l.starts_with("mount ")).count(), 3);
    let dp = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    c.pods().delete("p", &dp).await.unwrap();
    c.wait_gone("p", 20).await;
    c.start_agent().await;
    let left = c.settled_leftovers(20).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&pods).unwrap().next().is_some() {
        assert!(Instant::now() < deadline, "pod directories remain under {}", pods.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bridge goes when the node is cleaned up for good (`kinetic_node::remove_bridge`), and
/// a new agent makes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_bridge_is_removed_on_clean_up_and_made_again_on_start() {
    let mut c = native().await;
    let bridge = Path::new("/sys/class/net").join(&c.cfg.bridge);
    assert!(bridge.exists());
    c.stop_agent().await;
    kinetic_node::remove_bridge(&c.cfg).await.unwrap();
    assert!(!bridge.exists(), "bridge {} remains", c.cfg.bridge);
    kinetic_node::remove_bridge(&c.cfg).await.unwrap();
    c.start_agent().await;
    assert!(bridge.exists());
    let gw = c.cfg.pod_cidr.replace(".0/24", ".1");
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &c.cfg.bridge])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{gw}/24")), "{text}");
}

/// The CNI plugins stay an option (`--network cni`) now that native is the default: a pod on
/// them gets an IP from host-local, serves on it and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_mode_still_wires_pods_with_the_plugins() {
    let c = Cluster::start_with(|cfg| cfg.network = NetworkMode::Cni).await;
    let image = kinetic_testkit::images::busybox(&c.registry, "busybox", "v1", &[]).await.unwrap();
    c.create(
        "web",
        json!({"containers": [{"name": "web", "image": image,
            "command": ["httpd", "-f", "-p", "8080", "-h", "/www"]}]}),
    )
    .await;
    let pod = c.wait_ready("web").await;
    let ip = pod_ip(&pod);
    // host-local's record of the address, not native's state file.
    assert!(
        c.data_dir().join("cni/ipam/kinetic").join(&ip).exists(),
        "no host-local file for {ip}"
    );
    assert!(!c.data_dir().join("network/ipam.json").exists());
    let page = Cluster::http_get(&ip, 8080, "/index.html").await.unwrap();
    assert!(page.contains("hello from kinetic"), "{page}");
    c.pods().delete("web", &Default::default()).await.unwrap();
    c.wait_gone("web", 20).await;
    let left = c.settled_leftovers(10).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
