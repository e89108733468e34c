//! Test harness shared by the integration tests of every crate: start the embedded API server on
//! an ephemeral loopback port with its own data directory, get a real `kube::Client` for it, and
//! run the real `kubectl` against it.
//!
//! Nothing here fakes the server: tests talk HTTPS to the same code `kinetic up` runs.

pub mod cleanup;
pub mod images;
pub mod net;
pub mod python;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context as _;
use kinetic_apiserver::{ApiServer, Config};

/// An API server for one test, with its data directory.
pub struct TestServer {
    server: Option<ApiServer>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    listen: std::net::SocketAddr,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` in a fresh directory.
    ///
    /// # Errors
    /// The server does not start.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a data directory")?;
        Self::start_in_with(dir, |_| {}).await
    }

    /// [`TestServer::start`] with `configure` applied to the server's [`Config`] (for example
    /// `kruise_webhook = false`, to behave like a real cluster without OpenKruise's webhook).
    ///
    /// # Errors
    /// The server does not start.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a data directory")?;
        Self::start_in_with(dir, configure).await
    }

    async fn start_in_with(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let listen = "127.0.0.1:0".parse().context("parsing the listen address")?;
        let mut cfg = Config::new(dir.path().join("data"), listen);
        configure(&mut cfg);
        let server = ApiServer::start(cfg).await.context("starting the api server")?;
        let listen = server.local_addr();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig_to(&kubeconfig).context("writing the kubeconfig")?;
        Ok(Self { server: Some(server), dir, kubeconfig, listen })
    }

    /// Stops the server and starts a new one on the same data directory and port (the
    /// kubeconfig stays valid).
    ///
    /// # Errors
    /// The new server does not start.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let server = ApiServer::start(Config::new(self.dir.path().join("data"), self.listen))
            .await
            .context("restarting the api server")?;
        server.write_kubeconfig_to(&self.kubeconfig).context("writing the kubeconfig")?;
        self.server = Some(server);
        Ok(())
    }

    pub fn server(&self) -> &ApiServer {
        // Only `restart` takes the server out, and it puts one back or fails.
        self.server.as_ref().expect("the test server is running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A `kube::Client` configured from the server's kubeconfig.
    ///
    /// # Errors
    /// The kubeconfig does not load.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Runs `kubectl ARGS` against the server (with its own HOME so no user cache leaks in).
    ///
    /// # Errors
    /// kubectl cannot be started.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_stdin(args, None).await
    }

    /// Runs kubectl with `stdin` piped in (for `apply -f -`).
    ///
    /// # Errors
    /// kubectl cannot be started or fed.
    pub async fn kubectl_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Output> {
        kubectl(&self.kubeconfig, self.dir.path(), args, stdin).await
    }

    /// Runs kubectl and returns its stdout, failing with its stderr when it exits non-zero.
    ///
    /// # Errors
    /// kubectl fails.
    pub async fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        ok(self.kubectl(args).await?, args)
    }

    /// [`TestServer::kubectl_ok`] with stdin.
    ///
    /// # Errors
    /// kubectl fails.
    pub async fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        ok(self.kubectl_stdin(args, Some(stdin)).await?, args)
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

fn ok(out: Output, args: &[&str]) -> anyhow::Result<String> {
    if !out.status.success() {
        anyhow::bail!(
            "kubectl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kubectl binary: `$KUBECTL`, else `kubectl` on PATH. Tests need it; the test command in
/// the README installs it, and a missing kubectl fails the test loudly.
pub fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// Runs kubectl with `KUBECONFIG` and an isolated `HOME`.
///
/// # Errors
/// kubectl cannot be started.
pub async fn kubectl(
    kubeconfig: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new(kubectl_bin());
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {} (is kubectl installed?)", kubectl_bin()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.context("writing kubectl's stdin")?;
        drop(pipe);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .context("kubectl did not finish within 60 s")?
        .context("waiting for kubectl")?;
    Ok(out)
}

/// A `kube::Client` from a kubeconfig file that does not retry 429/503/504 answers (kube's
/// default client does, for minutes; client-go only when the answer has `Retry-After`), for
/// tests that expect such answers.
///
/// # Errors
/// The file does not load or describe a usable cluster.
pub async fn client_without_retry(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path).context("reading the kubeconfig")?;
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?;
    cfg.default_retry = false;
    kube::Client::try_from(cfg).context("building the client")
}

/// A `kube::Client` from a kubeconfig file.
///
/// # Errors
/// The file does not load or describe a usable cluster.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path).context("reading the kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(cfg).context("building the client")
}
