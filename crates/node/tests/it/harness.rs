//! A one-node cluster per test: API server, registry, node agent with its own bridge and pod
//! subnet (so tests run in parallel), and a synchronous clean-up on drop that removes whatever
//! a failed test left (containers, namespaces, mounts, the bridge).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kinetic_node::{Agent, Config};
use kinetic_testkit::TestServer;
use kinetic_testkit::registry::Registry;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

pub const NODE: &str = "node-1";

pub struct Cluster {
    pub server: TestServer,
    pub registry: Registry,
    pub client: kube::Client,
    pub agent: Option<Agent>,
    pub cfg: Config,
    _dir: tempfile::TempDir,
    _slot: kinetic_testkit::net::NetSlot,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Cluster {
        for (what, path) in
            [("runc", "/usr/sbin/runc"), ("the CNI bridge plugin", "/usr/lib/cni/bridge")]
        {
            assert!(
                Path::new(path).exists(),
                "{what} is missing at {path}: run scripts/install-deps.sh"
            );
        }
        let slot = kinetic_testkit::net::NetSlot::take();
        let dir =
            tempfile::Builder::new().prefix("kinetic-node-it").tempdir_in("/var/tmp").unwrap();
        // As `kinetic up`: the serving certificate names the bridge gateway, where the agent's
        // API relay lets pods reach the server.
        let gateway = kinetic_node::pod_gateway(&slot.cidr).unwrap().to_string();
        let server = TestServer::start_with(|c| c.tls_sans.push(gateway)).await.unwrap();
        let registry = Registry::start().await.unwrap();
        let client = server.client().await.unwrap();
        let mut cfg = Config::new(NODE, dir.path().join("node"));
        cfg.bridge.clone_from(&slot.bridge);
        cfg.pod_cidr.clone_from(&slot.cidr);
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.crash_backoff = Duration::from_secs(1);
        cfg.auth_token = Some(server.server().token().to_owned());
        cfg.api_server = Some(server.server().local_addr().to_string());
        // The agent runs in this test process: its containers' shim is the crate's own binary.
        cfg.shim = env!("CARGO_BIN_EXE_kinetic-shim").into();
        // The suite is the conformance suite of both pod network modes (issue 14):
        // KINETIC_TEST_NETWORK=cni|native runs it on one of them instead of the default.
        match std::env::var("KINETIC_TEST_NETWORK").as_deref() {
            Ok("cni") => cfg.network = kinetic_node::NetworkMode::Cni,
            Ok("native") => cfg.network = kinetic_node::NetworkMode::Native,
            Ok(other) => panic!("KINETIC_TEST_NETWORK={other}: use cni or native"),
            Err(_) => {}
        }
        // ... and of both runtimes: KINETIC_TEST_RUNTIME=runc|native.
        match std::env::var("KINETIC_TEST_RUNTIME").as_deref() {
            Ok("runc") => cfg.runtime = kinetic_node::runtime::Kind::Runc,
            Ok("native") => cfg.runtime = kinetic_node::runtime::Kind::Native,
            Ok(other) => panic!("KINETIC_TEST_RUNTIME={other}: use runc or native"),
            Err(_) => {}
        }
        tune(&mut cfg);
        let agent = Agent::start(client.clone(), cfg.clone()).await.unwrap();
        Cluster { server, registry, client, agent: Some(agent), cfg, _dir: dir, _slot: slot }
    }

    pub async fn stop_agent(&mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
    }

    pub async fn start_agent(&mut self) {
        assert!(self.agent.is_none());
        self.agent = Some(Agent::start(self.client.clone(), self.cfg.clone()).await.unwrap());
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod bound to the node from a JSON spec (merged over a one-container default).
    pub async fn create(&self, name: &str, spec: Value) -> Pod {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 2},
        });
        json_patch::merge(&mut pod, &json!({"spec": spec}));
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap()
    }

    /// Polls the pod until `pred` holds, failing with the last status after `secs`.
    pub async fn wait(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.pods().get_opt(name).await.unwrap();
            if let Some(p) = &p
                && pred(p)
            {
                return p.clone();
            }
            if Instant::now() > deadline {
                let events = self.events(name).await;
                panic!(
                    "pod {name}: {what} not reached within {secs}s; status: {}\nevents: {events:#?}",
                    serde_json::to_string_pretty(&p.map(|p| p.status)).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) -> Pod {
        self.wait(name, 30, "Ready", is_ready).await
    }

    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.pods().get_opt(name).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "pod {name} still exists after {secs}s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `reason: message` of the pod's events, oldest first.
    pub async fn events(&self, name: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let list = api.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    /// Waits for an event whose `reason: message` contains `needle`.
    pub async fn wait_event(&self, name: &str, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let evs = self.events(name).await;
            if let Some(e) = evs.iter().find(|e| e.contains(needle)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no event {needle:?} for {name} within {secs}s: {evs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An HTTP GET to `ip:port/path` from the host (through the node's bridge).
    pub async fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((ip, port)),
        )
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
            .await
            .map_err(|_| std::io::Error::other("read timed out"))??;
        Ok(out)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.cfg.data_dir.clone()
    }

    /// [`Self::leftovers`] once they are gone, or what is left after `secs`. A pod deleted with
    /// grace 0 leaves the API at once and the agent tears its sandbox down afterwards (as
    /// kubelet does), so a check right after the delete would race with that teardown.
    pub async fn settled_leftovers(&self, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = self.leftovers();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ids of the containers the node's runtime has state for (runc's or the native one's).
    pub fn containers(&self) -> Vec<String> {
        let runc = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.data_dir().join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        let mut ids: Vec<String> =
            String::from_utf8_lossy(&runc.stdout).lines().map(str::to_owned).collect();
        if let Ok(rd) = std::fs::read_dir(self.data_dir().join("native")) {
            ids.extend(rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
        }
        ids
    }

    /// Network namespaces, runc containers and overlay mounts of this node that still exist.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let runc = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.data_dir().join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        out.extend(String::from_utf8_lossy(&runc.stdout).lines().map(|l| format!("container {l}")));
        // The native runtime's containers (`<data>/native/<id>`).
        if let Ok(rd) = std::fs::read_dir(self.data_dir().join("native")) {
            out.extend(
                rd.flatten().map(|e| format!("container {}", e.file_name().to_string_lossy())),
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.data_dir().display().to_string();
        out.extend(mounts.lines().filter(|l| l.contains(&dir)).map(|l| format!("mount {l}")));
        let ipam = self.data_dir().join("cni/ipam/kinetic");
        if let Ok(rd) = std::fs::read_dir(&ipam) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.parse::<std::net::IpAddr>().is_ok() {
                    out.push(format!("ip allocation {n}"));
                }
            }
        }
        // Native networking's allocations (`<data>/network/ipam.json`).
        if let Ok(b) = std::fs::read(self.data_dir().join("network/ipam.json")) {
            let v: Value = serde_json::from_slice(&b).unwrap();
            for (ns, ip) in v["allocations"].as_object().into_iter().flatten() {
                out.push(format!("ip allocation {ip} ({ns})"));
            }
        }
        out.extend(self.bridge_ports().into_iter().map(|p| format!("veth {p} on the bridge")));
        if let Ok(rd) = std::fs::read_dir(self.data_dir().join("pods")) {
            for e in rd.flatten() {
                let netns = format!("/var/run/netns/kinetic-{}", e.file_name().to_string_lossy());
                if Path::new(&netns).exists() {
                    out.push(format!("netns {netns}"));
                }
            }
        }
        out
    }

    /// The interfaces attached to the node's bridge (the host ends of pod veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        let dir = Path::new("/sys/class/net").join(&self.cfg.bridge).join("brif");
        let mut ports: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ports.sort();
        ports
    }
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

pub fn container_status(p: &Pod, name: &str) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name).cloned())
        .unwrap_or_else(|| panic!("no status for container {name}"))
}

pub fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    let all = p.status.as_ref().map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .cloned()
            .collect::<Vec<_>>()
    })?;
    all.into_iter().find(|c| c.name == name)?.state?.waiting?.reason
}

impl Drop for Cluster {
    /// Removes what the test left on the machine, even when it failed half-way.
    fn drop(&mut self) {
        // Stop the agent first, or its workers would restart the containers killed below.
        drop(self.agent.take());
        std::thread::sleep(Duration::from_millis(200));
        let root = self.data_dir().join("runc");
        let runc = std::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output();
        if let Ok(out) = runc {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-f", id])
                    .output();
            }
        }
        // Native containers: their init killed, their cgroups removed.
        if let Ok(rd) = std::fs::read_dir(self.data_dir().join("native")) {
            for e in rd.flatten() {
                let Ok(b) = std::fs::read(e.path().join("state.json")) else { continue };
                let Ok(st) = serde_json::from_slice::<Value>(&b) else { continue };
                if let Some(p) = st["pid"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                std::thread::sleep(Duration::from_millis(50));
                for cg in st["cgroups"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    let _ = std::fs::remove_dir(cg);
                }
            }
        }
        let dir = self.data_dir().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            for l in mounts.lines() {
                if let Some(mp) = l.split(' ').nth(4).filter(|m| m.starts_with(&dir)) {
                    let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.data_dir().join("pods")) {
            for e in rd.flatten() {
                let name = format!("kinetic-{}", e.file_name().to_string_lossy());
                if Path::new("/var/run/netns").join(&name).exists() {
                    let _ =
                        std::process::Command::new("ip").args(["netns", "delete", &name]).output();
                }
            }
        }
    }
}
