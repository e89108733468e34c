//! `kinetic`: the one binary. It parses arguments, installs tracing and wires the library crates
//! into commands; the logic lives in the libraries (ripgrep's `crates/core` pattern).

mod bench;

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
}

#[derive(Subcommand)]
enum Command {
    /// Start the embedded control plane and write a kubeconfig; runs until SIGINT/SIGTERM
    Up(ServerArgs),
    /// Run the API server alone
    Apiserver(ServerArgs),
    /// Measure Kinetic against its targets
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
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

async fn serve(args: ServerArgs, what: &str) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let cfg = kinetic_apiserver::Config::new(&data_dir, args.listen);
    let server = kinetic_apiserver::ApiServer::start(cfg).await.with_context(|| {
        format!("starting the {what} with data directory {}", data_dir.display())
    })?;
    let kubeconfig = server.write_kubeconfig().context("writing the kubeconfig")?;
    #[allow(clippy::print_stdout)]
    {
        println!("kinetic {what} is serving the Kubernetes API at {}", server.url());
        println!("kubeconfig: {}", kubeconfig.display());
        println!("  export KUBECONFIG={}", kubeconfig.display());
    }
    wait_for_signal().await?;
    server.shutdown().await;
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
    let result = rt.block_on(async {
        match cli.command {
            Command::Up(args) => serve(args, "control plane").await,
            Command::Apiserver(args) => serve(args, "API server").await,
            Command::Bench { what } => bench::run(what).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
