//! The `runc` runtime: `runc kill`, `delete`, `exec` and `list`. Containers are created and
//! started by their shim (`shim`), which runs `runc run -d` and becomes the parent of the
//! container's init process; the agent waits for the shim and reads the exit code it recorded,
//! so the code survives an agent restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::{Error, Result};

/// Drives the `runc` binary with its own state root.
#[derive(Debug, Clone)]
pub struct Runc {
    bin: PathBuf,
    root: PathBuf,
}

impl Runc {
    pub fn new(bin: PathBuf, root: PathBuf) -> Self {
        Self { bin, root }
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.arg("--root").arg(&self.root).stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// The runc binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// runc's state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sends `signal` (for example "TERM", "KILL") to the container's init process.
    ///
    /// # Errors
    /// runc fails for a reason other than the container being gone.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.on_container("kill", id, &["kill", id, signal]).await
    }

    /// Removes the container (killing it if it still runs) and its cgroup.
    ///
    /// # Errors
    /// runc fails for a reason other than the container being gone.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.on_container("delete", id, &["delete", "-f", id]).await
    }

    /// Runs `runc ARGS` on container `id`; a container already gone counts as done (kill and
    /// delete are both asked again after a restart, and runc's "does not exist" is their success).
    async fn on_container(&self, op: &'static str, id: &str, args: &[&str]) -> Result<()> {
        let out = self.command().args(args).output().await.map_err(|e| Error::io(&self.bin, e))?;
        if out.status.success() || is_gone(&out.stderr) {
            return Ok(());
        }
        Err(Error::Runtime { runtime: "runc", op, id: id.to_owned(), message: lossy(&out.stderr) })
    }

    /// Runs `argv` inside the container; returns its exit code and combined output (capped).
    ///
    /// # Errors
    /// runc cannot be started, or the command does not finish within `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(i32, String)> {
        let mut cmd = self.command();
        cmd.args(["exec", id]).args(argv).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| Error::io(&self.bin, e))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| Error::Runtime {
                runtime: "runc",
                op: "exec",
                id: id.to_owned(),
                message: format!("command timed out after {timeout:?}"),
            })?
            .map_err(|e| Error::io(&self.bin, e))?;
        let mut text = lossy(&out.stdout);
        text.push_str(&lossy(&out.stderr));
        text.truncate(10 * 1024);
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// `runc exec` of `argv` in container `id` with the stdio the caller sets (the kubelet API's
    /// exec). With `tty`, runc allocates the container's terminal and relays it to its own
    /// stdio, which must then be a terminal too.
    pub fn exec_command(&self, id: &str, argv: &[String], tty: bool) -> tokio::process::Command {
        let mut c = self.command();
        c.arg("exec");
        if tty {
            c.arg("--tty");
        }
        c.arg(id).args(argv);
        c
    }

    /// Ids of the containers runc knows under our root.
    ///
    /// # Errors
    /// runc cannot be run.
    pub async fn list(&self) -> Result<Vec<String>> {
        let out = self
            .command()
            .args(["list", "-q"])
            .output()
            .await
            .map_err(|e| Error::io(&self.bin, e))?;
        Ok(lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

fn is_gone(stderr: &[u8]) -> bool {
    let s = String::from_utf8_lossy(stderr);
    s.contains("does not exist") || s.contains("not exist") || s.contains("container not running")
}
