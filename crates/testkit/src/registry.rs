//! A real OCI distribution registry on 127.0.0.1 for one test: Debian's `docker-registry`
//! (distribution 2.8) with its own config file, filesystem storage in a temporary directory,
//! and no auth unless asked for. The packaged `/etc/docker/registry/config.yml` listens on
//! `:5000` and turns htpasswd auth on, so it is never used.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The registry binary: `$KINETIC_REGISTRY_BIN`, else Debian's path.
pub fn registry_bin() -> PathBuf {
    std::env::var_os("KINETIC_REGISTRY_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/docker-registry"), PathBuf::from)
}

/// A running registry; killed when dropped.
pub struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an anonymous registry on a free loopback port and waits until `/v2/` answers.
    ///
    /// # Errors
    /// The binary is missing (install the Debian package `docker-registry`), or the registry
    /// does not come up within 20 s.
    pub async fn start() -> anyhow::Result<Registry> {
        Self::start_inner(None).await
    }

    /// Starts a registry that demands HTTP Basic auth with `user`/`password` (htpasswd, bcrypt).
    ///
    /// # Errors
    /// As [`Registry::start`].
    pub async fn start_with_htpasswd(user: &str, password: &str) -> anyhow::Result<Registry> {
        Self::start_inner(Some((user, password))).await
    }

    async fn start_inner(auth: Option<(&str, &str)>) -> anyhow::Result<Registry> {
        let bin = registry_bin();
        if !bin.exists() {
            bail!(
                "the registry binary {} is missing: install the Debian package docker-registry \
                 (or set KINETIC_REGISTRY_BIN)",
                bin.display()
            );
        }
        let mut dir = tempfile::tempdir().context("creating the registry directory")?;
        let htpasswd = match auth {
            Some((user, password)) => {
                // Cost 4 keeps the test fast; the registry accepts any bcrypt cost.
                let hash = bcrypt::hash_with_result(password, 4)
                    .context("hashing the htpasswd password")?
                    .format_for_version(bcrypt::Version::TwoY);
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).context("writing htpasswd")?;
                Some(path)
            }
            None => None,
        };
        // A port taken between probing and the registry's bind makes it exit; try again then.
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(dir.path(), &addr, htpasswd.as_deref()))
                .context("writing the registry config")?;
            let log = std::fs::File::create(dir.path().join("registry.log"))
                .context("creating the registry log")?;
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("duplicating the log file")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut reg = Registry { child, addr, dir };
            match reg.wait_ready().await {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    last_err = Some(e);
                    let _ = reg.child.kill();
                    let _ = reg.child.wait();
                    // Take the directory back for the next attempt.
                    dir = std::mem::replace(&mut reg.dir, tempfile::tempdir()?);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the registry did not start")))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().context("polling the registry")? {
                bail!("the registry exited with {status}: {}", self.log());
            }
            if let Ok(code) = probe(&self.addr) {
                // 401 means up with auth on.
                if code == 200 || code == 401 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the registry at {} did not answer /v2/ within 20 s: {}",
                    self.addr,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Where the registry keeps its data (`docker/registry/v2/...`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file holding a blob's bytes, for tests that corrupt it.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
            .join("data")
    }

    /// The registry's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(dir: &Path, addr: &str, htpasswd: Option<&Path>) -> String {
    let mut s = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: kinetic-test-registry\n",
        dir.join("data").display()
    );
    if let Some(p) = htpasswd {
        s.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: kinetic-test\n    path: {}\n",
            p.display()
        ));
    }
    s
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("reading the probe port")?.port())
}

/// The status code of `GET /v2/`, over a plain socket (no HTTP client needed).
fn probe(addr: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(|_| std::io::Error::other("bad address"))?,
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))
}
