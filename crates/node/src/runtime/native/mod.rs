//! The native runtime: the agent's own OCI runtime, with runc's semantics for the
//! `config.json` the agent writes (`crate::oci`).
//!
//! - **Create** (`create`) runs in the container's shim, never in the agent: the shim is a
//!   fresh, single-threaded process (the agent is multi-threaded, and a fork of it could
//!   inherit a lock held by another thread), it is already spawned per container (~2.5 ms)
//!   and it is the container's parent across agent restarts. One `clone` makes the container's
//!   init in its new namespaces; it sets itself up (`mounts`, `init`) and execs.
//! - **Kill** signals the init pid the state names (checked against its start time, so a
//!   reused pid is never signalled); **delete** kills it, waits for it to go, kills what is
//!   left in its cgroups, removes them and the state.
//! - **Exec** (`exec`) re-executes the agent's binary as `__exec`: a fresh single-threaded
//!   process that joins the container's cgroups and namespaces (`setns` of a mount namespace
//!   needs a single thread), forks (a pid namespace applies to children) and runs the command
//!   with the container's user, capabilities, `no_new_privs` and environment.
//! - **State**: `<data>/native/<id>/state.json` (bundle, init pid and start time, cgroup
//!   directories), written before the cgroups are made and again with the pid, so whatever a
//!   crash left is found by `list`/`delete` at the next start (the agent's sweep deletes
//!   containers no record names, and a re-run of the same attempt deletes its old state).
//!
//! Why not youki's `libcontainer`: it clones the container from the calling process (the
//! agent, multi-threaded, with a tokio runtime) and its own state and hook machinery would
//! sit beside the shim's; the part the agent needs (namespaces, mounts, cgroups, user,
//! capabilities, rlimits) is ~900 lines here, run where it is safe to fork. `oci-spec`
//! reads `config.json`.
//!
//! Not supported (refused, so nothing runs weaker than asked): seccomp (`oci.rs` configures
//! none), user namespaces, hooks (none configured). Device rules are enforced on cgroup v1
//! only (v2 needs an eBPF program; see `cgroup`).

pub mod cgroup;
mod create;
pub mod exec;
mod init;
mod mounts;

use std::path::{Path, PathBuf};
use std::process::Stdio as ProcStdio;
use std::time::Duration;

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

pub use create::{Stdio, create};

use crate::{Error, Result};

const STATE: &str = "state.json";

/// What the native runtime keeps of one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub bundle: PathBuf,
    /// The init process (host pid) once cloned.
    pub pid: Option<i32>,
    /// Its start time (`/proc/<pid>/stat` field 22), to tell a reused pid.
    pub start_time: Option<u64>,
    pub cgroups: Vec<PathBuf>,
}

impl State {
    /// Writes the state (write and rename).
    ///
    /// # Errors
    /// The directory or file cannot be written.
    pub fn save(&self, root: &Path, id: &str) -> std::io::Result<()> {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(tmp, dir.join(STATE))
    }

    pub fn load(root: &Path, id: &str) -> Option<State> {
        serde_json::from_slice(&std::fs::read(root.join(id).join(STATE)).ok()?).ok()
    }

    /// The init pid while that very process lives.
    pub fn live_pid(&self) -> Option<i32> {
        let pid = self.pid?;
        (super::alive(pid) && start_time(pid) == self.start_time).then_some(pid)
    }
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command: state is field 3, so start time is the 20th from here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The native runtime's state root and helper executable.
#[derive(Debug, Clone)]
pub struct Native {
    root: PathBuf,
    helper: PathBuf,
}

impl Native {
    pub fn new(root: PathBuf, helper: PathBuf) -> Self {
        Self { root, helper }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Signals the container's init; a container that is gone is not an error.
    ///
    /// # Errors
    /// The signal is refused.
    pub fn kill(&self, id: &str, sig: Signal) -> Result<()> {
        let Some(pid) = State::load(&self.root, id).and_then(|s| s.live_pid()) else {
            return Ok(());
        };
        let Some(p) = rustix::process::Pid::from_raw(pid) else { return Ok(()) };
        match rustix::process::kill_process(p, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(self.error("kill", id, format!("signalling pid {pid}: {e}"))),
        }
    }

    /// Kills the container, waits for its init to go (its shim reaps it), removes its cgroups
    /// and state.
    ///
    /// # Errors
    /// A cgroup cannot be removed (the state stays, so a later delete retries).
    pub async fn delete(&self, id: &str) -> Result<()> {
        let dir = self.root.join(id);
        let Some(state) = State::load(&self.root, id) else {
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(());
        };
        if let Some(pid) = state.live_pid() {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while super::alive(pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let left = cgroup::remove(&state.cgroups).await;
        if !left.is_empty() {
            return Err(self.error("delete", id, format!("cgroups not removed: {left:?}")));
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Runs `argv` in the container; its exit code and combined output (capped).
    ///
    /// # Errors
    /// The helper cannot be started or the command outlives `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(i32, String)> {
        let mut cmd = self.exec_command(id, argv, false);
        cmd.stdout(ProcStdio::piped()).stderr(ProcStdio::piped());
        let child = cmd.spawn().map_err(|e| Error::io(&self.helper, e))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| self.error("exec", id, format!("command timed out after {timeout:?}")))?
            .map_err(|e| Error::io(&self.helper, e))?;
        let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        text.push_str(String::from_utf8_lossy(&out.stderr).trim());
        text.truncate(10 * 1024);
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// The helper command that runs `argv` in container `id` (`__exec`), stdio set by the
    /// caller; with `tty` its stdio is the terminal the command gets.
    pub fn exec_command(&self, id: &str, argv: &[String], tty: bool) -> tokio::process::Command {
        let spec =
            exec::Spec { root: self.root.clone(), id: id.to_owned(), argv: argv.to_vec(), tty };
        let mut c = tokio::process::Command::new(&self.helper);
        c.arg(exec::SUBCOMMAND)
            .arg(serde_json::to_string(&spec).unwrap_or_default())
            .stdin(ProcStdio::null())
            .kill_on_drop(true);
        c
    }

    /// The containers with state.
    ///
    /// # Errors
    /// Never (a missing root is an empty list).
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn error(&self, op: &'static str, id: &str, message: String) -> Error {
        Error::Runtime { runtime: "native", op, id: id.to_owned(), message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_dead_pid_is_not_live() {
        let dir = tempfile::tempdir().unwrap();
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let s = State {
            bundle: "/b".into(),
            pid: Some(me),
            start_time: start_time(me),
            cgroups: vec![],
        };
        s.save(dir.path(), "c1").unwrap();
        let back = State::load(dir.path(), "c1").unwrap();
        assert_eq!(back.live_pid(), Some(me));
        let reused = State { start_time: back.start_time.map(|t| t + 1), ..back };
        assert_eq!(reused.live_pid(), None, "a pid with another start time is not the container's");
    }
}
