//! An in-process platform for the benchmarks: the API server on a temporary directory, the
//! scheduler, one node agent on its own bridge and pod range, optionally the workload
//! controllers, and a registry on 127.0.0.1 — the same wiring as `kinetic up`.

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Platform {
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
    pub registry: kinetic_testkit::registry::Registry,
    server: kinetic_apiserver::ApiServer,
    agent: kinetic_node::Agent,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    bridge: String,
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
        cfg.listen = "127.0.0.1:0".parse()?;
        cfg.auth_token = Some(server.token().to_owned());
        cfg.max_pods = u32::try_from(max_pods).unwrap_or(u32::MAX);
        let agent = kinetic_node::Agent::start(client.clone(), cfg)
            .await
            .context("starting the node agent")?;
        let registry = kinetic_testkit::registry::Registry::start().await?;
        Ok(Self { dir, client, registry, server, agent, stop, tasks, bridge: bridge.into() })
    }

    /// Where the node keeps one directory per pod.
    pub fn node_pods(&self) -> std::path::PathBuf {
        self.dir.path().join("node/pods")
    }

    /// The directory runc bundles and the benchmark's own files can go in.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the agent, the controllers and the server, and removes the bridge.
    pub async fn shutdown(self) {
        self.agent.shutdown().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.server.shutdown().await;
        let _ = std::process::Command::new("ip").args(["link", "delete", &self.bridge]).output();
    }
}
