//! An in-process platform for the benchmarks: the API server on a temporary directory, the
//! scheduler, one node agent on its own bridge and pod range, optionally the workload
//! controllers, and a registry on 127.0.0.1 — the same wiring as `kinetic up`.
//!
//! A benchmark runs its body through [`Platform::run`], which tears everything down however
//! the body ends: finished, failed, or interrupted by SIGINT/SIGTERM (issue 19: an interrupted
//! benchmark left its containers, network namespaces and overlay mounts running in a
//! directory no agent would adopt, and its bridge broke the next run). Unlike `kinetic up`,
//! nothing of a benchmark is meant to outlive it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a teardown waits for the node agent to take its pods down.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Platform {
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
    pub registry: kinetic_testkit::registry::Registry,
    server: kinetic_apiserver::ApiServer,
    agent: kinetic_node::Agent,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    bridge: String,
    /// Installed before anything starts, so an early Ctrl-C is seen too, not fatal.
    interrupts: Option<(Signal, Signal)>,
}

/// How the platform's node runs its pods.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSetup {
    pub network: kinetic_node::NetworkMode,
    pub runtime: kinetic_node::runtime::Kind,
    pub ready: kinetic_node::ReadySandboxes,
}

impl Platform {
    /// Starts everything; `max_pods` is the node's pod capacity.
    pub async fn start(
        prefix: &str,
        bridge: &str,
        pod_cidr: &str,
        max_pods: usize,
        controllers: bool,
    ) -> anyhow::Result<Self> {
        let network = kinetic_node::NetworkMode::default();
        Self::start_on(prefix, bridge, pod_cidr, max_pods, controllers, network).await
    }

    /// [`Platform::start`] with the node's pods wired by `network`.
    pub async fn start_on(
        prefix: &str,
        bridge: &str,
        pod_cidr: &str,
        max_pods: usize,
        controllers: bool,
        network: kinetic_node::NetworkMode,
    ) -> anyhow::Result<Self> {
        let node = NodeSetup { network, ..NodeSetup::default() };
        Self::start_with(prefix, bridge, pod_cidr, max_pods, controllers, node).await
    }

    /// [`Platform::start_on`] with the node's network, runtime and ready sandboxes of `node`.
    pub async fn start_with(
        prefix: &str,
        bridge: &str,
        pod_cidr: &str,
        max_pods: usize,
        controllers: bool,
        node: NodeSetup,
    ) -> anyhow::Result<Self> {
        let NodeSetup { network, runtime, ready } = node;
        let interrupts = Some((
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        ));
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/var/tmp")?;
        let server = kinetic_apiserver::ApiServer::start(kinetic_apiserver::Config::new(
            dir.path().join("api"),
            "127.0.0.1:0".parse()?,
        ))
        .await
        .context("starting the API server")?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig_to(&kubeconfig)?;
        let client = crate::client_from(Some(&kubeconfig)).await?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        {
            let (client, mut rx) = (client.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let cfg = kinetic_controllers::SchedulerConfig::default();
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = kinetic_controllers::run_scheduler(client, cfg, shutdown).await {
                    tracing::error!(error = %e, "the scheduler stopped");
                }
            }));
        }
        if controllers {
            let (client, rx) = (client.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::controllers::run_all(client, rx).await {
                    tracing::error!(error = %format!("{e:#}"), "the controllers stopped");
                }
            }));
        }
        let mut cfg = kinetic_node::Config::new("bench-node", dir.path().join("node"));
        cfg.bridge = bridge.into();
        cfg.pod_cidr = pod_cidr.into();
        cfg.network = network;
        cfg.ready_sandboxes = ready;
        cfg.runtime = runtime;
        cfg.listen = "127.0.0.1:0".parse()?;
        cfg.auth_token = Some(server.token().to_owned());
        cfg.max_pods = u32::try_from(max_pods).unwrap_or(u32::MAX);
        let agent = match kinetic_node::Agent::start(client.clone(), cfg).await {
            Ok(agent) => agent,
            Err(e) => {
                delete_bridge(bridge);
                return Err(e).context("starting the node agent");
            }
        };
        let registry = kinetic_testkit::registry::Registry::start().await?;
        eprintln!("platform up in {}", dir.path().display());
        Ok(Self {
            dir,
            client,
            registry,
            server,
            agent,
            stop,
            tasks,
            bridge: bridge.into(),
            interrupts,
        })
    }

    /// Runs `body`, then tears the platform down (see [`Platform::shutdown`]) whether `body`
    /// finished, failed or was interrupted by SIGINT/SIGTERM.
    ///
    /// # Errors
    /// `body`'s error, or "interrupted" when a signal ended it.
    pub async fn run<T>(
        mut self,
        body: impl AsyncFnOnce(&Platform) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (mut int, mut term) = match self.interrupts.take() {
            Some(signals) => signals,
            None => (
                signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            ),
        };
        let out = tokio::select! {
            r = body(&self) => r,
            _ = int.recv() => Err(anyhow::anyhow!("interrupted by SIGINT")),
            _ = term.recv() => Err(anyhow::anyhow!("interrupted by SIGTERM")),
        };
        if out.is_err() {
            eprintln!("cleaning up the benchmark's pods, mounts and bridge");
        }
        self.shutdown().await;
        out
    }

    /// Where the node keeps one directory per pod.
    pub fn node_pods(&self) -> std::path::PathBuf {
        self.dir.path().join("node/pods")
    }

    /// The directory runc bundles and the benchmark's own files can go in.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Takes everything down: the controllers first (so nothing recreates pods), then every
    /// pod through the node agent (containers, mounts, network namespaces), then the agent and
    /// the server; then it sweeps what the agent could not finish (runc containers under the
    /// platform's runc roots, pod network namespaces, mounts under its directory) and removes
    /// the bridge. The directory goes when `self.dir` drops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Err(e) = delete_all_pods(&self.client, &self.dir.path().join("node/pods")).await {
            tracing::warn!(error = %format!("{e:#}"), "pods left to the sweep");
        }
        self.agent.shutdown().await;
        self.server.shutdown().await;
        kinetic_testkit::cleanup::sweep(self.dir.path());
        delete_bridge(&self.bridge);
    }
}

/// A task aborted when its handle is dropped. A benchmark's body is cancelled by a signal at
/// any `.await`; its spawned watchers and creators must stop with it, or a watcher of the
/// stopped server spins and keeps the runtime (and the process) from ending, and a creator
/// adds pods while the teardown deletes them.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Waits for the task.
    ///
    /// # Errors
    /// The task panicked or was aborted.
    pub async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Deletes every pod at once (no grace) and waits until the node agent has torn each down
/// (its pod directory is gone).
async fn delete_all_pods(client: &kube::Client, node_pods: &Path) -> anyhow::Result<()> {
    let all: Api<Pod> = Api::all(client.clone());
    for p in all.list(&ListParams::default()).await.context("listing pods")? {
        let ns = p.metadata.namespace.unwrap_or_default();
        let name = p.metadata.name.unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting pod {ns}/{name}")),
        }
    }
    let deadline = tokio::time::Instant::now() + TEARDOWN_TIMEOUT;
    while std::fs::read_dir(node_pods).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the node agent did not take its pods down within {TEARDOWN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn delete_bridge(bridge: &str) {
    let _ = std::process::Command::new("ip").args(["link", "delete", bridge]).output();
}
