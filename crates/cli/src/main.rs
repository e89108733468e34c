//! `kinetic`: the one binary. It parses arguments, installs tracing and wires the library crates
//! into commands; the logic lives in the libraries (ripgrep's `crates/core` pattern).

mod bench;
mod bench_autoscale;
mod bench_coldstart;
mod bench_coldstart_knative;
mod bench_pods;
mod bench_pull;
mod bench_rollout;
mod bench_rollout_restart;
mod bench_sandbox;
mod bench_serve;
mod bench_sidecar;
mod controllers;
mod identities;
mod image;
mod image_cmd;
mod platform;
mod rollout;
mod serve_cmd;
mod tenant;
mod trace;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kinetic",
    version,
    about = "Kinetic: a serverless container platform for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Where state, credentials and the kubeconfig live [default: /var/lib/kinetic as root,
    /// else $XDG_DATA_HOME/kinetic]
    #[arg(long, env = "KINETIC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the API server listens on (HTTPS)
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Append one audit.k8s.io/v1 Event per request to this file, level Metadata
    /// (kube-apiserver's --audit-log-path)
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Do not apply OpenKruise's and Knative's webhook rules (defaults, validation, SidecarSet
    /// injection) inside the server: as a real cluster without their webhooks, where `kinetic
    /// controller --webhook-listen` serves the SidecarSet injection
    #[arg(long)]
    no_builtin_webhooks: bool,
    /// Another name or address for the serving certificate (repeatable; k3s's --tls-san):
    /// give each separately run node's bridge gateway (the first address of its --pod-cidr),
    /// where its pods reach the API through the node's relay
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
}

/// `--network`: see [`kinetic_node::NetworkMode`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum NetworkArg {
    Native,
    Cni,
}

/// `--runtime`: see [`kinetic_node::runtime::Kind`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RuntimeArg {
    Native,
    Runc,
}

/// Options of the node agent, for `kinetic node` and the agent inside `kinetic up`.
#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// The Node's name [default: the host name]
    #[arg(long)]
    node_name: Option<String>,
    /// Address of the node's kubelet API, HTTPS (kubelet: port 10250)
    #[arg(long, default_value = "127.0.0.1:10250")]
    node_listen: SocketAddr,
    /// The address published as the Node's InternalIP
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,
    /// Pod IPs come from this range, on the bridge below
    #[arg(long, default_value = "10.88.0.0/16")]
    pod_cidr: String,
    /// The bridge pods are attached to
    #[arg(long, default_value = "kinetic0")]
    bridge: String,
    /// Who wires pods into the bridge: the agent itself over netlink (native) or the CNI
    /// bridge, host-local and loopback plugins (cni)
    #[arg(long, value_enum, default_value = "native")]
    network: NetworkArg,
    /// Who creates the containers: the agent's own OCI runtime inside each container's shim
    /// (native) or runc under the shim (runc)
    #[arg(long, value_enum, default_value = "native")]
    runtime: RuntimeArg,
    /// Registries (host or host:port) reachable over plain http; loopback ones always are
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Image GC runs when the image file system is at least this full (kubelet's
    /// `--image-gc-high-threshold`)
    #[arg(long, value_name = "PERCENT", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// Image GC frees space down to this (kubelet's `--image-gc-low-threshold`)
    #[arg(long, value_name = "PERCENT", default_value_t = 80,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// Images pulled more recently than this are never collected (kubelet's
    /// `imageMinimumGCAge`)
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    image_minimum_gc_age_seconds: u64,
    /// How often image GC looks at the disk (it also runs after each preheat pull)
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    image_gc_period_seconds: u64,
    /// Port of the API relay on the bridge gateway, which pods' KUBERNETES_SERVICE_HOST/PORT
    /// name (a free one when it is taken)
    #[arg(long, default_value_t = 443)]
    api_relay_port: u16,
    /// Pod sandboxes (network namespace, veth, IP, routes) kept ready ahead of their pods, at
    /// most this many, following the recent pod start rate (native networking; 0: off)
    #[arg(long, value_name = "N", default_value_t = 0)]
    ready_sandboxes: usize,
    /// Ready sandboxes kept even when no pod starts
    #[arg(long, value_name = "N", default_value_t = 0)]
    ready_sandboxes_min: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Start the embedded control plane (API server, scheduler, workload controllers, one node
    /// agent) and write a
    /// kubeconfig; runs until SIGINT/SIGTERM
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        node: NodeArgs,
        /// Run only the API server and the scheduler, no node agent
        #[arg(long)]
        no_node: bool,
        /// Address of the serving gateway (Knative Services' ingress and activator, plain HTTP)
        #[arg(long, default_value = "127.0.0.1:18080")]
        gateway_listen: SocketAddr,
    },
    /// Run the API server alone
    Apiserver(ServerArgs),
    /// Run the workload controllers (CloneSet, Deployment/ReplicaSet, Endpoints) against a
    /// cluster, with leader election; installs or upgrades the CRDs first
    Controller(controllers::ControllerArgs),
    /// Run a node agent: register a Node with the cluster of KUBECONFIG and run its pods
    Node {
        /// The cluster to join [default: $KUBECONFIG, then ~/.kube/config]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Where images, pod state and logs live [default: <kinetic data dir>/node]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run the serving gateway (Knative Services' ingress and activator) and its autoscaler
    /// against a cluster, as `kinetic up` runs them in-process; until SIGINT/SIGTERM
    Gateway {
        /// The cluster [default: $KUBECONFIG, then ~/.kube/config, then kinetic's data dir]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Address the gateway listens on (plain HTTP)
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
    },
    /// Pull and list images in the node's image store
    Image {
        #[command(subcommand)]
        cmd: image_cmd::ImageCmd,
    },
    /// Show where pods' start-up time went (from their timeline annotations)
    Trace {
        /// The cluster [default: $KUBECONFIG, then the kinetic data dir's kubeconfig]
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
        #[command(subcommand)]
        cmd: trace::TraceCmd,
    },
    /// Follow a CloneSet rollout (progress bar, per-pod phase, time so far)
    Rollout {
        /// The cluster [default: $KUBECONFIG, then the kinetic data dir's kubeconfig]
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
        #[command(subcommand)]
        cmd: rollout::RolloutCmd,
    },
    /// Knative Services at a glance: `serve status ksvc/NAME`
    Serve {
        /// The cluster [default: $KUBECONFIG, then the kinetic data dir's kubeconfig]
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
        #[command(subcommand)]
        cmd: serve_cmd::ServeCmd,
    },
    /// Tenants on the shared control plane: namespaces, `admin` bindings, quotas and a
    /// kubeconfig each
    Tenant {
        /// The admin's kubeconfig [default: DATA/kubeconfig]
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
        /// The control plane's data directory, whose CA signs the tenants' certificates
        /// [default: as `kinetic up`]
        #[arg(long, global = true, env = "KINETIC_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        cmd: tenant::TenantCmd,
    },
    /// Measure Kinetic against its targets
    Bench {
        #[command(subcommand)]
        what: bench_pull::BenchCommand,
    },
}

fn default_data_dir() -> PathBuf {
    let is_root = rustix::process::geteuid().is_root();
    if is_root {
        return PathBuf::from("/var/lib/kinetic");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("kinetic"),
        _ => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/share/kinetic"))
            .unwrap_or_else(|| PathBuf::from(".kinetic")),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KINETIC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// What `serve` runs besides the API server.
struct Extras {
    /// The scheduler and the workload controllers.
    scheduler: bool,
    node: Option<NodeArgs>,
    /// The serving gateway's listen address.
    gateway: Option<SocketAddr>,
}

async fn serve(args: ServerArgs, what: &str, extras: Extras) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let mut cfg = kinetic_apiserver::Config::new(&data_dir, args.listen);
    cfg.audit_log = args.audit_log;
    cfg.kruise_webhook = !args.no_builtin_webhooks;
    cfg.tls_sans.clone_from(&args.tls_sans);
    // The node's pods verify the server by their bridge gateway, where its relay listens.
    if let Some(gw) = extras.node.as_ref().and_then(|n| kinetic_node::pod_gateway(&n.pod_cidr)) {
        cfg.tls_sans.push(gw.to_string());
    }
    let server = kinetic_apiserver::ApiServer::start(cfg).await.with_context(|| {
        format!("starting the {what} with data directory {}", data_dir.display())
    })?;
    let kubeconfig = server.write_kubeconfig().context("writing the kubeconfig")?;
    // The controllers and the node agent run with their own least-privilege identities
    // ([`identities`]), not the admin's.
    // `kinetic apiserver` alone leaves RBAC to its admin (`kinetic controller --print-rbac`).
    if extras.scheduler || extras.node.is_some() {
        let admin = client_for(Some(&kubeconfig), CLI_AGENT).await?;
        identities::apply(&admin)
            .await
            .context("applying the RBAC of the controllers and nodes")?;
    }
    let controller_kc = write_identity(
        &server,
        &data_dir.join("controller.kubeconfig"),
        identities::CONTROLLER_USER,
        &[],
    )?;
    let client = client_for(Some(&controller_kc), CONTROLLER_AGENT).await?;
    let scheduler_client = client_for(Some(&controller_kc), SCHEDULER_AGENT).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = extras.scheduler.then(|| {
        let client = scheduler_client;
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let cfg = kinetic_controllers::SchedulerConfig::default();
            if let Err(e) = kinetic_controllers::run_scheduler(client, cfg, shutdown).await {
                tracing::error!(error = %format!("{e:#}"), "the scheduler stopped");
            }
        })
    });
    let running = controllers::Running::default();
    let controllers = extras.scheduler.then(|| {
        let (client, stop, running) = (client.clone(), stop_rx.clone(), running.clone());
        tokio::spawn(async move {
            if let Err(e) = controllers::run_all_tracked(client, stop, running).await {
                tracing::error!(error = %format!("{e:#}"), "the controllers stopped");
            }
            Ok(())
        })
    });
    let gateway = match extras.gateway {
        Some(listen) => {
            let mut stop = stop_rx.clone();
            let until = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let dp = kinetic_controllers::serving_gateway::start(client.clone(), listen, until)
                .await
                .with_context(|| format!("starting the serving gateway on {listen}"))?;
            Some(dp)
        }
        None => None,
    };
    let node_runtime = extras.node.as_ref().map_or("the native runtime", |n| match n.runtime {
        RuntimeArg::Native => "the native runtime",
        RuntimeArg::Runc => "runc",
    });
    let agent = match extras.node {
        Some(node) => {
            controllers::ensure_local_path_class(&client).await?;
            let mut cfg = node_config(&node, data_dir.join("node"))?;
            cfg.auth_token = Some(server.token().to_owned());
            cfg.api_server = server_host_port(&server.url());
            let node_kc = write_identity(
                &server,
                &data_dir.join("node.kubeconfig"),
                &format!("{}{}", kinetic_apiserver::rbac::node::NODE_USER_PREFIX, cfg.node_name),
                &[kinetic_apiserver::rbac::node::NODES_GROUP],
            )?;
            let node_client = client_for(Some(&node_kc), NODE_AGENT).await?;
            Some(
                kinetic_node::Agent::start(node_client, cfg)
                    .await
                    .context("starting the node agent")?,
            )
        }
        None => None,
    };
    #[allow(clippy::print_stdout)]
    {
        println!("kinetic {what} is serving the Kubernetes API at {}", server.url());
        if agent.is_some() {
            println!(
                "node agent: running pods with {} (state in {})",
                node_runtime,
                data_dir.join("node").display()
            );
        }
        if let Some(g) = &gateway {
            println!("serving gateway: http://{}", g.addr);
        }
        println!("kubeconfig: {}", kubeconfig.display());
        println!("  export KUBECONFIG={}", kubeconfig.display());
    }
    wait_for_signal().await?;
    let _ = stop_tx.send(true);
    if let Some(a) = agent {
        a.shutdown().await;
    }
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    if let Some(g) = gateway {
        let _ = g.task.await;
    }
    if let Some(mut c) = controllers {
        controllers::stop_within(&mut c, &running, controllers::SHUTDOWN_GRACE).await;
    }
    server.shutdown().await;
    Ok(())
}

/// Writes a kubeconfig for `user` in `groups` (a client certificate of the cluster CA) to
/// `path`, mode 0600, and returns the path.
fn write_identity(
    server: &kinetic_apiserver::ApiServer,
    path: &std::path::Path,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<PathBuf> {
    let kc = server
        .client_kubeconfig(user, groups)
        .with_context(|| format!("issuing a client certificate for {user}"))?;
    kinetic_apiserver::pki::write_private(path, kc.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}

fn hostname() -> String {
    let n = rustix::system::uname();
    let n = n.nodename().to_string_lossy().to_ascii_lowercase();
    if n.is_empty() { "kinetic".into() } else { n }
}

impl NodeArgs {
    /// Checks what clap cannot check flag by flag (before anything starts).
    fn validate(&self) -> anyhow::Result<()> {
        // kubelet's own check of the two thresholds.
        if self.image_gc_low_threshold >= self.image_gc_high_threshold {
            anyhow::bail!(
                "--image-gc-low-threshold ({}) must be less than --image-gc-high-threshold ({})",
                self.image_gc_low_threshold,
                self.image_gc_high_threshold
            );
        }
        if self.ready_sandboxes_min > self.ready_sandboxes {
            anyhow::bail!(
                "--ready-sandboxes-min ({}) must not exceed --ready-sandboxes ({})",
                self.ready_sandboxes_min,
                self.ready_sandboxes
            );
        }
        if self.ready_sandboxes > 0 && self.network == NetworkArg::Cni {
            anyhow::bail!("--ready-sandboxes needs --network native");
        }
        Ok(())
    }
}

fn node_config(args: &NodeArgs, data_dir: PathBuf) -> anyhow::Result<kinetic_node::Config> {
    args.validate()?;
    let mut cfg =
        kinetic_node::Config::new(&args.node_name.clone().unwrap_or_else(hostname), data_dir);
    cfg.listen = args.node_listen;
    cfg.node_ip = args.node_ip;
    cfg.pod_cidr.clone_from(&args.pod_cidr);
    cfg.bridge.clone_from(&args.bridge);
    cfg.network = match args.network {
        NetworkArg::Native => kinetic_node::NetworkMode::Native,
        NetworkArg::Cni => kinetic_node::NetworkMode::Cni,
    };
    cfg.ready_sandboxes.max = args.ready_sandboxes;
    cfg.ready_sandboxes.min = args.ready_sandboxes_min;
    cfg.runtime = match args.runtime {
        RuntimeArg::Native => kinetic_node::runtime::Kind::Native,
        RuntimeArg::Runc => kinetic_node::runtime::Kind::Runc,
    };
    cfg.insecure_registries.clone_from(&args.insecure_registries);
    cfg.image_gc_policy = kinetic_image::GcPolicy {
        high_threshold_percent: args.image_gc_high_threshold,
        low_threshold_percent: args.image_gc_low_threshold,
        min_age: std::time::Duration::from_secs(args.image_minimum_gc_age_seconds),
    };
    cfg.image_gc_period = std::time::Duration::from_secs(args.image_gc_period_seconds);
    cfg.api_relay_port = args.api_relay_port;
    Ok(cfg)
}

/// `host:port` of an `https://host[:port]` URL (port 443 when none is given), for the node's
/// API relay; `None` for a URL without a host.
fn server_host_port(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    // `host()` keeps an IPv6 address's brackets, as `host:port` needs them.
    Some(format!("{}:{}", uri.host()?, uri.port_u16().unwrap_or(443)))
}

/// The client of `kinetic controller` (see [`client_for`]).
async fn client_from(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    client_for(kubeconfig, CONTROLLER_AGENT).await
}

/// The User-Agent names (and so the `managedFields` managers) of Kinetic's components.
const CONTROLLER_AGENT: &str = "kinetic-controller";
const SCHEDULER_AGENT: &str = "kinetic-scheduler";
const NODE_AGENT: &str = "kinetic-node";
const CLI_AGENT: &str = "kinetic";

/// A client for `kubeconfig`, else $KUBECONFIG / ~/.kube/config, else the kubeconfig that
/// `kinetic up` writes in the default data directory. Its requests carry the User-Agent
/// `component/version (os/arch) kinetic`, as client-go's `DefaultKubernetesUserAgent`, from
/// which kube-apiserver (and Kinetic's) names the field manager of every write (issue 10: with no
/// User-Agent each write showed as manager `unknown`).
async fn client_for(
    kubeconfig: Option<&std::path::Path>,
    component: &str,
) -> anyhow::Result<kube::Client> {
    let mut cfg = match kubeconfig {
        Some(p) => config_from(p).await?,
        None => match kube::Config::infer().await {
            Ok(c) => c,
            Err(_) => config_from(&default_data_dir().join("kubeconfig")).await?,
        },
    };
    let agent = format!(
        "{component}/{} ({}/{}) kinetic",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        go_arch()
    );
    let value = http::HeaderValue::from_str(&agent).context("building the User-Agent")?;
    cfg.headers.push((http::header::USER_AGENT, value));
    kube::Client::try_from(cfg).context("building the API client")
}

async fn config_from(path: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading the kubeconfig {}", path.display()))
}

/// The architecture as Go (and so a User-Agent of client-go) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The bearer token of the kubeconfig's current user, if it has one.
fn kubeconfig_token(path: Option<&std::path::Path>) -> Option<String> {
    let kc = match path {
        Some(p) => kube::config::Kubeconfig::read_from(p).ok()?,
        None => kube::config::Kubeconfig::read().ok()?,
    };
    let ctx_name = kc.current_context.clone()?;
    let ctx = kc.contexts.iter().find(|c| c.name == ctx_name)?.context.clone()?;
    let user = ctx.user?;
    let auth = kc.auth_infos.iter().find(|a| a.name == user)?.auth_info.clone()?;
    // kube keeps the token in a secrecy box; its serializer writes it out as kubeconfig does.
    let v = serde_json::to_value(&auth).ok()?;
    v.get("token").and_then(serde_json::Value::as_str).map(str::to_owned)
}

/// The CA certificates (DER) of the kubeconfig's cluster: the node agent trusts them for
/// client certificates when the cluster's published client CA cannot be read (on kubeadm
/// clusters they are the same CA).
async fn kubeconfig_ca(path: Option<&std::path::Path>) -> Vec<Vec<u8>> {
    let cfg = match path {
        Some(p) => match kube::config::Kubeconfig::read_from(p) {
            Ok(kc) => kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .ok(),
            Err(_) => None,
        },
        None => kube::Config::infer().await.ok(),
    };
    cfg.and_then(|c| c.root_cert).unwrap_or_default()
}

/// `host:port` of the kubeconfig's cluster, where the node relays its pods' API connections.
async fn kubeconfig_server(path: Option<&std::path::Path>) -> Option<String> {
    let cfg = match path {
        Some(p) => config_from(p).await.ok()?,
        None => kube::Config::infer().await.ok()?,
    };
    server_host_port(&cfg.cluster_url.to_string())
}

async fn run_node(
    kubeconfig: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    node: NodeArgs,
) -> anyhow::Result<()> {
    let client = client_for(kubeconfig.as_deref(), NODE_AGENT).await?;
    let dir = data_dir.unwrap_or_else(|| default_data_dir().join("node"));
    let mut cfg = node_config(&node, dir)?;
    cfg.api_server = kubeconfig_server(kubeconfig.as_deref()).await;
    cfg.auth_token = kubeconfig_token(kubeconfig.as_deref());
    cfg.client_ca = kubeconfig_ca(kubeconfig.as_deref()).await;
    if cfg.auth_token.is_none() {
        tracing::warn!(
            "the kubeconfig has no bearer token: the kubelet API accepts only client certificates and tokens the cluster's TokenReview accepts"
        );
    }
    let name = cfg.node_name.clone();
    let agent = kinetic_node::Agent::start(client, cfg).await.context("starting the node agent")?;
    #[allow(clippy::print_stdout)]
    {
        println!("kinetic node {name} is running; kubelet API at https://{}", agent.log_addr());
    }
    wait_for_signal().await?;
    agent.shutdown().await;
    Ok(())
}

/// `kinetic gateway`: the serving data plane alone, against the cluster of `kubeconfig`.
async fn run_gateway(kubeconfig: Option<PathBuf>, listen: SocketAddr) -> anyhow::Result<()> {
    let client = client_for(kubeconfig.as_deref(), CONTROLLER_AGENT).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let until = async move {
        let _ = stop_rx.await;
    };
    let dp = kinetic_controllers::serving_gateway::start(client, listen, until)
        .await
        .with_context(|| format!("starting the serving gateway on {listen}"))?;
    #[allow(clippy::print_stdout)]
    {
        println!("serving gateway: http://{}", dp.addr);
    }
    wait_for_signal().await?;
    let _ = stop_tx.send(());
    let _ = dp.task.await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one, as Go programs (kube-apiserver among them)
/// do at start: every watch over HTTP/1.1 holds a connection, and the common soft limit of 1,024
/// would cap a server at about a thousand watchers.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "could not raise the open-files limit");
        }
    }
}

fn main() -> std::process::ExitCode {
    // `kinetic __shim <spec>`: a container's shim, started by the node agent (hidden: not for
    // users, and before any runtime or tracing, which the shim sets up its own way).
    // `kinetic __exec <spec>`: a command in a native container (the native runtime's exec).
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(a) if a == kinetic_node::shim::SUBCOMMAND => {
            return kinetic_node::shim::main(&args.next().unwrap_or_default());
        }
        Some(a) if a == kinetic_node::runtime::native::exec::SUBCOMMAND => {
            return kinetic_node::runtime::native::exec::main(&args.next().unwrap_or_default());
        }
        _ => {}
    }
    let cli = Cli::parse();
    init_tracing();
    raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // `kinetic controller` abandons reconciles stuck past its shutdown bound; dropping the
    // runtime waits for its blocking threads without a bound, so it gets a bounded shutdown.
    let bounded_exit = matches!(cli.command, Command::Controller(_));
    let result = rt.block_on(async {
        match cli.command {
            Command::Up { server, node, no_node, gateway_listen } => {
                node.validate()?;
                let extras = Extras {
                    scheduler: true,
                    node: (!no_node).then_some(node),
                    gateway: Some(gateway_listen),
                };
                serve(server, "control plane", extras).await
            }
            Command::Apiserver(args) => {
                serve(args, "API server", Extras { scheduler: false, node: None, gateway: None })
                    .await
            }
            Command::Controller(args) => controllers::run(args).await,
            Command::Node { kubeconfig, data_dir, node } => {
                node.validate()?;
                run_node(kubeconfig, data_dir, node).await
            }
            Command::Gateway { kubeconfig, listen } => run_gateway(kubeconfig, listen).await,
            Command::Image { cmd } => image_cmd::run(cmd, &default_data_dir()).await,
            Command::Trace { kubeconfig, cmd } => {
                trace::run(client_for(kubeconfig.as_deref(), CLI_AGENT).await?, cmd).await
            }
            Command::Rollout { kubeconfig, cmd } => {
                rollout::run(client_for(kubeconfig.as_deref(), CLI_AGENT).await?, cmd).await
            }
            Command::Serve { kubeconfig, cmd } => {
                serve_cmd::run(client_for(kubeconfig.as_deref(), CLI_AGENT).await?, cmd).await
            }
            Command::Tenant { kubeconfig, data_dir, cmd } => {
                let data_dir = data_dir.unwrap_or_else(default_data_dir);
                let kubeconfig = kubeconfig.unwrap_or_else(|| data_dir.join("kubeconfig"));
                let client = client_for(Some(&kubeconfig), CLI_AGENT).await?;
                tenant::run(client, &kubeconfig, &data_dir, cmd).await
            }
            Command::Bench { what } => bench_pull::run(what).await,
        }
    });
    if bounded_exit {
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap checks its definitions only when a command is parsed, with a panic: two arguments
    /// with the same id (`kinetic bench coldstart`'s `--apps` and the matrix's field `apps`)
    /// made every `kinetic bench coldstart` panic at start.
    #[test]
    fn the_command_line_definition_is_valid() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
