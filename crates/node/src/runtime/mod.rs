//! The runtime seam: how the agent creates, signals, deletes, execs into and lists containers,
//! whichever OCI runtime does it. The worker, probes, the kubelet API and the start-up sweep
//! call [`Runtime`], never a runtime directly.
//!
//! Two runtimes implement it, chosen per node (`--runtime`):
//!
//! - [`Kind::Runc`] (`runc`): the container's shim runs `runc run -d`; kill, delete, exec and
//!   list are `runc` commands with the agent's own state root (`<data>/runc`).
//! - [`Kind::Native`] (`native`): the agent's own code. The shim creates the container itself
//!   from the same `config.json` (clone with new namespaces, mounts, pivot_root, cgroups,
//!   user, capabilities, then exec); kill and delete act on the recorded init pid and cgroups,
//!   exec re-executes the agent's binary as a small helper that joins the container's
//!   namespaces. Its state lives in `<data>/native/<id>/state.json` (see `native`).
//!
//! Both create containers in the per-container shim process, never in the agent: the shim is
//! single-threaded when it clones, and it is the container's parent across agent restarts, so
//! adoption works the same way for both (the shim's `shim.pid` and `exit` in the bundle).

pub mod native;
mod process;
mod runc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kinetic_api::timeline::CpuTime;
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

pub use process::{Exit, alive, become_subreaper, wait_exit};
pub use runc::Runc;

use crate::{Error, Result};

/// Which OCI runtime runs the node's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The `runc` binary under each container's shim.
    Runc,
    /// The agent's own runtime, in each container's shim: the default (issue 14), as on
    /// `kinetic up` and `kinetic node`.
    #[default]
    Native,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Runc => "runc",
            Kind::Native => "native",
        }
    }

    /// The runtime's name where the API shows it: the scheme of containers' `containerID`
    /// and of the Node's `containerRuntimeVersion`. As kubelet, which uses the CRI runtime's
    /// `RuntimeName` for both (`containerd://<id>`, `containerd://1.7.0`).
    pub fn scheme(self) -> &'static str {
        match self {
            Kind::Runc => "runc",
            Kind::Native => "kinetic-native",
        }
    }

    /// A container's `containerID` in a pod's status: `<scheme>://<runtime id>`.
    pub fn container_id(self, id: &str) -> String {
        format!("{}://{id}", self.scheme())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "runc" => Ok(Kind::Runc),
            "native" => Ok(Kind::Native),
            other => Err(format!("unknown runtime {other:?}: use native or runc")),
        }
    }
}

/// The node's container runtime.
#[derive(Debug, Clone)]
pub struct Runtime {
    kind: Kind,
    runc: Runc,
    native: native::Native,
}

impl Runtime {
    /// `kind` with its state under `data_dir` (`runc/` or `native/`); `runc` is the runc
    /// binary, `helper` the executable with the hidden `__shim` and `__exec` subcommands.
    pub fn new(kind: Kind, runc: PathBuf, data_dir: &Path, helper: PathBuf) -> Self {
        Self {
            kind,
            runc: Runc::new(runc, data_dir.join("runc")),
            native: native::Native::new(data_dir.join("native"), helper),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The runtime's state root.
    pub fn root(&self) -> &Path {
        match self.kind {
            Kind::Runc => self.runc.root(),
            Kind::Native => self.native.root(),
        }
    }

    /// True when the runtime has state for container `id` (a create that was not recorded).
    pub fn has_state(&self, id: &str) -> bool {
        self.root().join(id).exists()
    }

    /// What the container's shim runs.
    pub(crate) fn shim_spec(&self, id: &str, bundle: &Path, log: &Path) -> crate::shim::Spec {
        crate::shim::Spec {
            runtime: self.kind,
            runc: self.runc.bin().to_path_buf(),
            root: self.root().to_path_buf(),
            id: id.to_owned(),
            bundle: bundle.to_path_buf(),
            log: log.to_path_buf(),
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    /// Creates and starts the container of `spec` under a new shim (`exe`, or `early` when it
    /// was started ahead for this container); returns its init
    /// pid and the CPU the start took outside the agent. A failed start leaves no runtime
    /// state behind.
    ///
    /// # Errors
    /// The shim cannot be started, or the runtime failed (its message is in the error).
    pub(crate) async fn start(
        &self,
        exe: &Path,
        spec: &crate::shim::Spec,
        early: Option<crate::shim::Early>,
    ) -> Result<(i32, CpuTime)> {
        match crate::shim::start(exe, spec, early).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let _ = self.delete(&spec.id).await;
                Err(e)
            }
        }
    }

    /// Sends `sig` to the container's init process.
    ///
    /// # Errors
    /// The runtime fails for a reason other than the container being gone.
    pub async fn kill(&self, id: &str, sig: Signal) -> Result<()> {
        match self.kind {
            Kind::Runc => self.runc.kill(id, signal_name(sig)).await,
            Kind::Native => self.native.kill(id, sig),
        }
    }

    /// Removes the container (killing it if it still runs), its cgroups and its state.
    ///
    /// # Errors
    /// The runtime fails for a reason other than the container being gone.
    pub async fn delete(&self, id: &str) -> Result<()> {
        match self.kind {
            Kind::Runc => self.runc.delete(id).await,
            Kind::Native => self.native.delete(id).await,
        }
    }

    /// Runs `argv` inside the container; returns its exit code and combined output (capped).
    ///
    /// # Errors
    /// The command cannot be started, or does not finish within `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(i32, String)> {
        match self.kind {
            Kind::Runc => self.runc.exec(id, argv, timeout).await,
            Kind::Native => self.native.exec(id, argv, timeout).await,
        }
    }

    /// The command that runs `argv` in container `id` with the stdio the caller sets (the
    /// kubelet API's exec). With `tty`, its stdio must be a terminal.
    pub fn exec_command(&self, id: &str, argv: &[String], tty: bool) -> tokio::process::Command {
        match self.kind {
            Kind::Runc => self.runc.exec_command(id, argv, tty),
            Kind::Native => self.native.exec_command(id, argv, tty),
        }
    }

    /// Ids of the containers the runtime has state for.
    ///
    /// # Errors
    /// The runtime cannot be asked.
    pub async fn list(&self) -> Result<Vec<String>> {
        match self.kind {
            Kind::Runc => self.runc.list().await,
            Kind::Native => self.native.list(),
        }
    }

    /// The runtime's name and version for the Node's `containerRuntimeVersion`.
    ///
    /// # Errors
    /// runc cannot be run (the runc runtime).
    pub async fn version(&self) -> Result<String> {
        match self.kind {
            Kind::Runc => {
                let bin = self.runc.bin();
                let out =
                    tokio::process::Command::new(bin).arg("--version").output().await.map_err(
                        |e| {
                            Error::Config(format!(
                                "cannot run {} (is runc installed?): {e}",
                                bin.display()
                            ))
                        },
                    )?;
                let text = String::from_utf8_lossy(&out.stdout);
                let v = text
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(2))
                    .unwrap_or("unknown");
                Ok(format!("{}://{v}", Kind::Runc.scheme()))
            }
            Kind::Native => {
                Ok(format!("{}://{}", Kind::Native.scheme(), env!("CARGO_PKG_VERSION")))
            }
        }
    }

    /// Removes what a crash mid-create may have left of attempt `id` (in `bundle`) before it
    /// starts again: its container and state, its shim (waited for) and the shim's files.
    pub(crate) async fn clear_stale(&self, id: &str, bundle: &Path) {
        if self.has_state(id) {
            let _ = self.delete(id).await;
        }
        crate::shim::clear_stale(id, bundle).await;
    }
}

/// The name `runc kill` takes for `sig`.
fn signal_name(sig: Signal) -> &'static str {
    match sig {
        Signal::KILL => "KILL",
        Signal::HUP => "HUP",
        Signal::INT => "INT",
        Signal::QUIT => "QUIT",
        Signal::USR1 => "USR1",
        Signal::USR2 => "USR2",
        _ => "TERM",
    }
}
