//! The Kinetic node agent: what kubelet does, for the pods bound to one node, with runc.
//!
//! [`Agent::start`] registers a Node (capacity, conditions, `nodeInfo`), keeps its Lease fresh,
//! serves the kubelet API (logs, exec, attach, port-forward) for the API server's proxy, and
//! watches the pods whose
//! `spec.nodeName` is this node. Each pod gets a worker task (`worker`) that:
//!
//! 1. creates the pod sandbox: a network namespace wired by the CNI `bridge` + `host-local` +
//!    `loopback` plugins (`cni`) or, with [`NetworkMode::Native`], the same way by the agent
//!    itself over rtnetlink with its own persisted IP allocation (`native`, `ipam`) — or claims
//!    one made ahead of it (`sandboxes`, sized by `sandbox_demand`) — the pod's /etc files and
//!    volumes (`volumes`);
//! 2. pulls images into the shared content store (`kinetic-image`), mounts each container's
//!    rootfs as overlayfs over the unpacked layers (`mount`), writes an OCI `config.json`
//!    (`oci`, `env`) and starts it under its shim (`shim`: a process per container that runs
//!    `runc run -d`, owns its stdio and log and outlives the agent);
//! 3. runs probes and lifecycle hooks (`probe`), restarts containers per `restartPolicy` with
//!    kubelet's back-off, updates a container in place when its image changes, and stops
//!    containers gracefully on deletion before removing the Pod object;
//! 4. writes the pod status (`status`) and, once the pod is Ready, its start-up timeline
//!    (`kinetic.dev/timeline` annotation) and kubelet's Events (`events`).
//!
//! State needed to adopt running containers after an agent restart lives in
//! `<data>/pods/<uid>/state.json` (`state`). The agent writes pod status, Events, Leases, its
//! Node and the timeline annotation; it never writes a pod's spec.
//!
//! Persistent volumes: a `persistentVolumeClaim` volume is the bound PersistentVolume's `local`
//! or `hostPath` directory, bind-mounted; while the claim is missing or unbound the containers
//! wait in `ContainerCreating` with a `FailedMount` Event, retried every second. The node is
//! also the local-path provisioner (`provision`): it creates the directories and
//! PersistentVolumes of claims the scheduler placed on it and deletes released ones.
//!
//! Beside the pods, `imagepuller` pulls the images this node's NodeImage asks for (OpenKruise
//! preheating; the agent writes only the NodeImage's status and Events) and `imagegc` removes
//! unused images with kubelet's watermarks (85 %/80 %, never an image a pod on the node names,
//! one being pulled, or one pulled less than 2 minutes ago), every 5 minutes and after each
//! preheat pull.
//!
//! Pods reach the API server through the agent's API relay (`relay`): a TCP copy from the
//! bridge's gateway address to the API server the agent uses, named by the pods'
//! `KUBERNETES_SERVICE_HOST/PORT` (`svcenv`, which also sets the other Services' variables as
//! kubelet does), since no kube-proxy routes the `kubernetes` Service's cluster IP. With the
//! service-account token volume (`token`, `volumes`) that gives pods in-cluster config.
//!
//! The kubelet API (`server`: HTTPS, client-certificate or token authentication,
//! SubjectAccessReview) serves container logs (`logs`), exec and attach (`streaming`, over
//! WebSocket and SPDY) and port-forward (`portforward`, SPDY plain or tunnelled in WebSocket;
//! `spdy` holds the framing), for the API server's pod subresource proxy.
//!
//! What it does not do: other persistent volume types, log rotation,
//! cgroup v2 (this machine has v1), user namespaces.

mod cni;
mod cpu;
mod env;
mod events;
mod imagegc;
mod imagepuller;
mod ipam;
mod launch;
mod logs;
mod mount;
mod native;
mod net;
mod node;
mod oci;
mod portforward;
mod probe;
mod provision;
mod recreate;
mod refs;
mod relay;
mod route;
pub mod runtime;
mod sandbox_demand;
mod sandboxes;
mod server;
pub mod shim;
mod spdy;
mod specialize;
mod specialize_code;
mod state;
mod stats;
mod status;
mod streaming;
mod svcenv;
mod token;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use net::NetworkMode;
pub use sandbox_demand::ReadySandboxes;

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{runtime} {op} of container {id} failed: {message}")]
    Runtime { runtime: &'static str, op: &'static str, id: String, message: String },
    #[error("CNI {plugin} failed: {message}")]
    Cni { plugin: String, message: String },
    #[error("pod network: {op} failed")]
    Netlink {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the pod range {cidr} is already routed through interface {interface} (route {route}), \
         not the agent's bridge {bridge}: pods would be unreachable from the node; remove that \
         interface or its route (`ip link delete {interface}`) or choose another pod CIDR"
    )]
    RouteConflict { cidr: String, interface: String, route: String, bridge: String },
    #[error("mounting {}: {message}", path.display())]
    Mount { path: PathBuf, message: String },
    #[error("the API relay cannot listen on {addr}")]
    Relay {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error("image store")]
    Image(#[from] kinetic_image::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error with its causes, one line (for statuses and Events, which users read).
pub(crate) fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The agent's directory: `images/` (the content store), `pods/`, `runc/`, `cni/`.
    pub data_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// Who wires pods into the bridge: the CNI plugins or the agent itself over netlink.
    pub network: NetworkMode,
    /// Pod sandboxes kept ready ahead of their pods (native networking only; off by default).
    pub ready_sandboxes: ReadySandboxes,
    /// The bridge created for this node's pods.
    pub bridge: String,
    pub pod_cidr: String,
    pub runc: PathBuf,
    /// Which OCI runtime runs the containers: runc under each shim, or the agent's own.
    pub runtime: runtime::Kind,
    /// Registries that may be reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Where the kubelet API listens, HTTPS (kubelet: port 10250).
    pub listen: SocketAddr,
    /// The address published as the Node's InternalIP.
    pub node_ip: IpAddr,
    /// The first crash back-off delay (kubelet: 10 s, doubling up to 30× that).
    pub crash_backoff: Duration,
    /// The agent's own bearer token, which its kubelet API accepts without a review.
    pub auth_token: Option<String>,
    /// CA certificates (DER) trusted for client certificates when the cluster publishes no
    /// client CA the agent can read in `kube-system/extension-apiserver-authentication`
    /// (kubelet's `--client-ca-file`; on kubeadm clusters, the cluster CA).
    pub client_ca: Vec<Vec<u8>>,
    pub max_pods: u32,
    /// Preheat pulls (NodeImage tags) running at once (kruise-daemon's
    /// `--max-workers-for-pull-image`).
    pub image_pull_workers: usize,
    /// The image GC watermarks and minimum age (kubelet: 85 %, 80 %, 2 minutes).
    pub image_gc_policy: kinetic_image::GcPolicy,
    /// How often the image GC looks at the disk (besides after each preheat pull).
    pub image_gc_period: Duration,
    /// The executable run as each container's shim (`shim`), as `<shim> __shim <spec>`: by
    /// default this process's own binary (`kinetic`, which has the hidden subcommand).
    pub shim: PathBuf,
    /// The API server's `host:port` as this agent reaches it. When set, the agent relays pods'
    /// connections from its bridge's gateway address to it (`relay`) and points their
    /// `KUBERNETES_SERVICE_HOST/PORT` at the relay; the server's certificate must name the
    /// gateway ([`pod_gateway`]). When unset, pods get the `kubernetes` Service's cluster IP, as
    /// from kubelet, which only a node with kube-proxy routes.
    pub api_server: Option<String>,
    /// The relay's port on the gateway address (the `kubernetes` Service's 443); a free one
    /// when it is taken.
    pub api_relay_port: u16,
}

impl Config {
    /// Kubelet-like defaults for a node named `node_name` keeping its state in `data_dir`.
    pub fn new(node_name: &str, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_name: node_name.to_owned(),
            data_dir: data_dir.into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            network: NetworkMode::default(),
            ready_sandboxes: ReadySandboxes::default(),
            bridge: "kinetic0".into(),
            pod_cidr: "10.88.0.0/16".into(),
            runc: "runc".into(),
            runtime: runtime::Kind::default(),
            insecure_registries: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 10250)),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            crash_backoff: Duration::from_secs(10),
            auth_token: None,
            client_ca: Vec::new(),
            max_pods: 110,
            image_pull_workers: 2,
            image_gc_policy: kinetic_image::GcPolicy::default(),
            image_gc_period: Duration::from_secs(300),
            shim: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kinetic")),
            api_server: None,
            api_relay_port: 443,
        }
    }
}

/// What every pod worker shares.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub cfg: Config,
    pub images: kinetic_image::Store,
    pub runtime: runtime::Runtime,
    pub net: net::Network,
    /// Ready sandboxes (`sandboxes`), when kept.
    pub ready: Option<sandboxes::Pool>,
    pub events: events::Recorder,
    pub logs: logs::LogIndex,
    pub pods_dir: PathBuf,
    /// Where pods reach the API relay, when it runs.
    pub api_relay: Option<SocketAddr>,
    /// Every Service, for the containers' service variables (`svcenv`).
    pub services: svcenv::ServiceCache,
}

/// Pull options with the node's insecure registries and the credentials of `secrets`
/// (namespace, name): Secrets with a `.dockerconfigjson` key, as kubelet reads
/// `imagePullSecrets`. Unreadable or unusable Secrets are skipped with a warning.
pub(crate) async fn pull_options(
    ctx: &Ctx,
    secrets: &[(String, String)],
) -> kinetic_image::PullOptions {
    let mut opts = kinetic_image::PullOptions {
        insecure_registries: ctx.cfg.insecure_registries.clone(),
        ..Default::default()
    };
    for (ns, name) in secrets {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), ns);
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::warn!(secret = %format!("{ns}/{name}"), "image pull secret not found");
                continue;
            }
            Err(e) => {
                tracing::warn!(secret = %format!("{ns}/{name}"), error = %e, "image pull secret unreadable");
                continue;
            }
        };
        let data = secret.data.unwrap_or_default();
        if let Some(b) = data.get(".dockerconfigjson") {
            match kinetic_image::parse_docker_config_json(&b.0) {
                Ok(c) => opts.credentials.extend(c),
                Err(e) => tracing::warn!(secret = %name, error = %e, "unusable image pull secret"),
            }
        }
    }
    opts
}

/// The address of the bridge of pod range `cidr`: its first address (the gateway pods route
/// through, in both network modes), where the API relay listens. An API server whose pods
/// should verify it must name this address in its certificate.
pub fn pod_gateway(cidr: &str) -> Option<std::net::Ipv4Addr> {
    route::Cidr::parse(cidr).map(|c| c.gateway())
}

/// A running node agent.
pub struct Agent {
    tasks: Vec<JoinHandle<()>>,
    log_addr: SocketAddr,
    api_relay: Option<SocketAddr>,
}

impl Agent {
    /// Registers the node and starts running its pods.
    ///
    /// # Errors
    /// The directories cannot be created, runc is missing, the log port cannot be bound, the
    /// Node cannot be registered, or the pod range is already routed through another
    /// interface than the agent's bridge ([`Error::RouteConflict`]).
    pub async fn start(client: kube::Client, cfg: Config) -> Result<Agent> {
        route::check_pod_range(&cfg.bridge, &cfg.pod_cidr)?;
        runtime::become_subreaper()?;
        let pods_dir = cfg.data_dir.join("pods");
        let rt =
            runtime::Runtime::new(cfg.runtime, cfg.runc.clone(), &cfg.data_dir, cfg.shim.clone());
        for d in [&pods_dir, &rt.root().to_path_buf(), &cfg.data_dir.join("cni")] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let runc_version = rt.version().await?;
        let images = kinetic_image::Store::open(cfg.data_dir.join("images"))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::io(Path::new("log listener"), e))?;
        let log_addr =
            listener.local_addr().map_err(|e| Error::io(Path::new("log listener"), e))?;
        let node = node::register(&client, &cfg, log_addr.port(), &runc_version).await?;
        let node_uid = node.metadata.uid.clone().unwrap_or_default();
        let index = logs::LogIndex::default();
        let net = pod_network(&cfg, &pods_dir).await?;
        let ready = ready_sandboxes(&cfg, &net, &pods_dir).await?;
        let relay = match &cfg.api_server {
            Some(upstream) => {
                let gw = pod_gateway(&cfg.pod_cidr).ok_or_else(|| {
                    Error::Config(format!("pod CIDR {:?} is not an IPv4 range", cfg.pod_cidr))
                })?;
                let l = relay::bind_or_any(gw, cfg.api_relay_port)?;
                let addr = l.local_addr().map_err(|source| Error::Relay {
                    addr: SocketAddr::from((gw, cfg.api_relay_port)),
                    source,
                })?;
                Some((l, addr, Arc::<str>::from(upstream.as_str())))
            }
            None => None,
        };
        let api_relay = relay.as_ref().map(|(_, a, _)| *a);
        let (services, services_task) = svcenv::ServiceCache::start(client.clone());
        let ctx = Arc::new(Ctx {
            services,
            runtime: rt,
            net,
            ready: ready.clone(),
            events: events::Recorder::start(client.clone(), &cfg.node_name),
            logs: index.clone(),
            images,
            pods_dir,
            client: client.clone(),
            cfg: cfg.clone(),
            api_relay,
        });
        let kubelet_api = Arc::new(server::Server {
            index,
            token: cfg.auth_token.as_deref().map(Arc::from),
            client: client.clone(),
            node: cfg.node_name.clone(),
            runtime: ctx.runtime.clone(),
            stats: stats::Stats::start(ctx.pods_dir.clone(), &cfg.node_name),
        });
        let tls = Arc::new(server::tls_config(&client, &cfg).await?);
        let tasks = vec![
            tokio::spawn(server::serve(listener, tls, kubelet_api)),
            tokio::spawn(node::heartbeat(
                client,
                cfg.clone(),
                log_addr.port(),
                runc_version,
                node_uid,
            )),
            tokio::spawn(provision::run(
                ctx.client.clone(),
                cfg.node_name.clone(),
                cfg.data_dir.clone(),
            )),
        ];
        // ContainerRecreateRequests reach the pods' workers through the dispatcher.
        let (to_workers, from_recreate) = mpsc::unbounded_channel();
        let mut tasks = tasks;
        tasks.push(services_task);
        if let Some((listener, _, upstream)) = relay {
            tasks.push(tokio::spawn(relay::run(listener, upstream)));
        }
        tasks.push(tokio::spawn(dispatch(ctx.clone(), from_recreate)));
        if let Some(pool) = ready {
            tasks.push(tokio::spawn(pool.run()));
        }
        tasks.push(tokio::spawn(recreate::run(
            ctx.client.clone(),
            cfg.node_name.clone(),
            to_workers,
        )));
        let pulling = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let gc_kick = Arc::new(tokio::sync::Notify::new());
        tasks.push(tokio::spawn(imagepuller::run(ctx.clone(), pulling.clone(), gc_kick.clone())));
        tasks.push(tokio::spawn(imagegc::run(ctx, pulling, gc_kick)));
        tracing::info!(node = %cfg.node_name, logs = %log_addr, api_relay = ?api_relay, "node agent started");
        Ok(Agent { tasks, log_addr, api_relay })
    }

    /// Where the kubelet API listens.
    pub fn log_addr(&self) -> SocketAddr {
        self.log_addr
    }

    /// Where pods reach the API server ([`Config::api_server`]), when the relay runs.
    pub fn api_relay(&self) -> Option<SocketAddr> {
        self.api_relay
    }

    /// Stops the agent. Containers keep running; a new agent on the same data directory
    /// adopts them.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Agent {
    /// Dropping the agent stops it too (without waiting): no worker may act on a pod after
    /// its owner let go of the agent.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The pod network of `cfg.network`. Native networking recovers its IP allocations from its
/// state file and the pod records (`pods_dir`), and creates the bridge now, so the node's
/// route to its pods exists before the first pod.
async fn pod_network(cfg: &Config, pods_dir: &Path) -> Result<net::Network> {
    Ok(match cfg.network {
        NetworkMode::Cni => net::Network::Cni(cni::Network::new(
            cfg.cni_bin_dir.clone(),
            &cfg.bridge,
            &cfg.pod_cidr,
            &cfg.data_dir.join("cni"),
        )),
        NetworkMode::Native => {
            let known = state::PodRecord::load_all(pods_dir).into_iter().filter_map(|(_, r)| {
                let ip = r.ip.as_deref()?.parse().ok()?;
                Some((r.netns, ip))
            });
            let n = native::Network::new(
                &cfg.bridge,
                &cfg.pod_cidr,
                &cfg.data_dir.join("network"),
                known,
            )?;
            n.prepare().await?;
            net::Network::Native(n)
        }
    })
}

/// The ready sandboxes of native networking: what a previous agent left is adopted or torn
/// down (also when they are off now, [`ReadySandboxes::max`] 0); the pool is kept only when on.
async fn ready_sandboxes(
    cfg: &Config,
    net: &net::Network,
    pods_dir: &Path,
) -> Result<Option<sandboxes::Pool>> {
    let net::Network::Native(n) = net else { return Ok(None) };
    let claimed: HashSet<String> =
        state::PodRecord::load_all(pods_dir).into_iter().map(|(_, r)| r.netns).collect();
    let dir = sandboxes::marker_dir(&cfg.data_dir);
    let pool = sandboxes::Pool::open(n.clone(), dir, cfg.ready_sandboxes, &claimed).await?;
    Ok((cfg.ready_sandboxes.max > 0).then_some(pool))
}

/// Tears down the ready sandboxes of a stopped agent's data directory (what a new agent would
/// adopt), when the node stops for good. Claimed ones are their pods' to remove.
///
/// # Errors
/// The IPAM state cannot be opened or a teardown fails.
pub async fn remove_ready_sandboxes(cfg: &Config) -> Result<()> {
    if cfg.network != NetworkMode::Native {
        return Ok(());
    }
    let mut off = cfg.clone();
    off.ready_sandboxes.max = 0;
    let pods_dir = cfg.data_dir.join("pods");
    let known = state::PodRecord::load_all(&pods_dir).into_iter().filter_map(|(_, r)| {
        let ip = r.ip.as_deref()?.parse().ok()?;
        Some((r.netns, ip))
    });
    let n = native::Network::new(&cfg.bridge, &cfg.pod_cidr, &cfg.data_dir.join("network"), known)?;
    ready_sandboxes(&off, &net::Network::Native(n), &pods_dir).await.map(drop)
}

/// Removes the node's pod bridge when the node stops for good (its pods are gone): with
/// native networking the agent made it; with CNI the bridge plugin did, and it goes the same
/// way. Idempotent.
///
/// # Errors
/// The bridge exists and cannot be deleted.
pub async fn remove_bridge(cfg: &Config) -> Result<()> {
    native::remove_link(&cfg.bridge).await
}

/// Watches this node's pods and hands each to its worker. Workers are aborted with this task
/// (their containers keep running).
async fn dispatch(ctx: Arc<Ctx>, mut recreate: mpsc::UnboundedReceiver<recreate::ToWorker>) {
    let mut adopted: HashMap<String, state::PodRecord> = state::PodRecord::load_all(&ctx.pods_dir)
        .into_iter()
        .map(|(_, r)| (r.uid.clone(), r))
        .collect();
    remove_unrecorded_containers(&ctx, &adopted).await;
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.cfg.node_name));
    let mut stream = watcher::watcher(api, wc).default_backoff().boxed();
    let mut workers: HashMap<String, (mpsc::UnboundedSender<worker::Msg>, JoinHandle<()>)> =
        HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut seen: HashSet<String> = HashSet::new();
    let mut initial = true;
    let mut handles = AbortOnDrop(Vec::new());
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Init) => seen.clear(),
                    Ok(Event::InitApply(p) | Event::Apply(p)) => {
                        if let Some(uid) = p.metadata.uid.clone() {
                            seen.insert(uid.clone());
                            deliver(&ctx, &mut workers, &mut adopted, &done_tx, &mut handles, p, uid);
                        }
                    }
                    Ok(Event::Delete(p)) => {
                        if let Some((tx, _)) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = tx.send(worker::Msg::Gone);
                        }
                    }
                    Ok(Event::InitDone) => {
                        for (uid, (tx, _)) in &workers {
                            if !seen.contains(uid) {
                                let _ = tx.send(worker::Msg::Gone);
                            }
                        }
                        if initial {
                            initial = false;
                            // Recorded pods that no longer exist: clean up what they left.
                            for (_, rec) in adopted.drain() {
                                if !seen.contains(&rec.uid) {
                                    cleanup_orphan(&ctx, &rec).await;
                                }
                            }
                            remove_unrecorded_pod_dirs(&ctx, &seen);
                            // Addresses of pods that left no record (`state::PodRecord::new`
                            // names a pod's namespace `kinetic-<uid>`).
                            let live = seen.iter().map(|u| format!("kinetic-{u}")).collect();
                            ctx.net.release_unknown(&live).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
            }
            Some((uid, msg)) = recreate.recv() => {
                // No worker: the message (and its answer channel) is dropped, which the
                // sender reads as a failed stop.
                if let Some((tx, _)) = workers.get(&uid) {
                    let _ = tx.send(msg);
                }
            }
            Some(uid) = done_rx.recv() => {
                if workers.get(&uid).is_some_and(|(_, h)| h.is_finished()) {
                    workers.remove(&uid);
                }
            }
        }
    }
}

/// Aborts the worker tasks when the dispatcher stops.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

fn deliver(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, (mpsc::UnboundedSender<worker::Msg>, JoinHandle<()>)>,
    adopted: &mut HashMap<String, state::PodRecord>,
    done_tx: &mpsc::UnboundedSender<String>,
    handles: &mut AbortOnDrop,
    pod: Pod,
    uid: String,
) {
    let pod = Arc::new(pod);
    if let Some((tx, h)) = workers.get(&uid)
        && !h.is_finished()
    {
        let _ = tx.send(worker::Msg::Update(pod));
        return;
    }
    let record = adopted.remove(&uid);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    let finished = phase == "Succeeded" || phase == "Failed";
    if record.is_none() && finished && pod.metadata.deletion_timestamp.is_none() {
        // A finished pod this agent has no record of (an earlier agent ran it): never run it
        // again.
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx2 = ctx.clone();
    let done = done_tx.clone();
    let uid2 = uid.clone();
    let h = tokio::spawn(async move {
        worker::run(ctx2, rx, pod, record).await;
        let _ = done.send(uid2);
    });
    handles.0.retain(|h| !h.is_finished());
    handles.0.push(h.abort_handle());
    workers.insert(uid, (tx, h));
}

/// Removes what a pod that no longer exists left on the node.
async fn cleanup_orphan(ctx: &Ctx, rec: &state::PodRecord) {
    tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.name), uid = %rec.uid, "cleaning up a pod that no longer exists");
    let dir = ctx.pods_dir.join(&rec.uid);
    for (name, c) in &rec.containers {
        let id = format!("{}-{name}-{}", rec.uid, c.attempt);
        // Kill and reap first: in cgroup v1 a cgroup holding an unreaped zombie cannot be
        // removed, so `runc delete` alone would leave the container's cgroups behind when the
        // process is our child (an earlier agent in this same process).
        if let Some(pid) = c.running_pid() {
            let _ = ctx.runtime.kill(&id, rustix::process::Signal::KILL).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), runtime::wait_exit(pid)).await;
        }
        let _ = ctx.runtime.delete(&id).await;
        mount::remove(&dir.join("containers").join(name).join(c.attempt.to_string()));
    }
    if let Err(e) = ctx.net.teardown(&rec.netns).await {
        tracing::warn!(uid = %rec.uid, error = %e, "sandbox teardown failed");
    }
    // A rootfs the agent mounted but was killed before recording is in no record; without
    // this, `remove_dir_all` would empty the mounted overlay and leave the mount behind.
    mount::unmount_all_under(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes pod directories of pods that no longer exist and left no record (an agent killed
/// before its first save): their mounts first, then the files.
fn remove_unrecorded_pod_dirs(ctx: &Ctx, live: &HashSet<String>) {
    let Ok(rd) = std::fs::read_dir(&ctx.pods_dir) else { return };
    for ent in rd.flatten() {
        let uid = ent.file_name().to_string_lossy().into_owned();
        if live.contains(&uid) || !ent.path().is_dir() {
            continue;
        }
        tracing::info!(uid = %uid, "removing the directory of a pod that no longer exists");
        mount::unmount_all_under(&ent.path());
        let _ = std::fs::remove_dir_all(ent.path());
    }
}

/// Deletes containers under the runtime's root that no record mentions (an agent killed between
/// `runc run` and saving its record).
async fn remove_unrecorded_containers(ctx: &Ctx, records: &HashMap<String, state::PodRecord>) {
    let known: HashSet<String> = records
        .values()
        .flat_map(|r| r.containers.iter().map(move |(n, c)| format!("{}-{n}-{}", r.uid, c.attempt)))
        .collect();
    for id in ctx.runtime.list().await.unwrap_or_default() {
        if !known.contains(&id) {
            tracing::info!(container = %id, "removing an unrecorded container");
            let _ = ctx.runtime.delete(&id).await;
        }
    }
}
