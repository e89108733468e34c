//! The container runtime: `runc` run detached, with the container's stdout and stderr appended
//! to its log file, and exits observed through a pidfd.
//!
//! There is no shim process: the agent makes itself a child subreaper, so once `runc run -d`
//! returns, the container's init process is re-parented to the agent, which reaps it and reads
//! its exit status. A container adopted from an earlier agent (after a restart) is not our
//! child: its exit is still seen through the pidfd, but its exit code is lost, and the status
//! says so (kubelet reports the same situation as `ContainerStatusUnknown`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, WaitOptions};

use crate::{Error, Result};

/// The `config.json` annotation of a container whose spec has `stdin: true`.
pub const STDIN_ANNOTATION: &str = "dev.kinetic.stdin";

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code (128 + signal for a signal death, as kubelet reports).
    Code(i32),
    /// The process was not ours to reap (adopted after an agent restart).
    Unknown,
}

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

    /// Creates and starts container `id` from the bundle, detached, its output appended to
    /// `log`. Returns the pid of the container's init process.
    ///
    /// # Errors
    /// runc fails (its stderr is in the error), or the log file cannot be opened.
    pub async fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<i32> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(log, e))?;
        let pid_file = bundle.join("pid");
        // A stale container with this id (a crash between create and record) is removed first.
        let _ = self.delete(id).await;
        let mut cmd = self.command();
        if let Some(fifo) = stdin_fifo(bundle, log)? {
            cmd.stdin(fifo);
        }
        cmd.arg("run")
            .arg("-d")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("-b")
            .arg(bundle)
            .arg(id)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let status = cmd.status().await.map_err(|e| Error::io(&self.bin, e))?;
        if !status.success() {
            // runc reports its own failures on stderr, which went to the log: read them back
            // for the error (the last lines are runc's).
            let tail = tail_of(log, 2048);
            return Err(Error::Runc { op: "run", id: id.to_owned(), message: tail });
        }
        let pid = std::fs::read_to_string(&pid_file).map_err(|e| Error::io(&pid_file, e))?;
        pid.trim().parse().map_err(|_| Error::Runc {
            op: "run",
            id: id.to_owned(),
            message: format!("unreadable pid file {}", pid_file.display()),
        })
    }

    /// Sends `signal` (for example "TERM", "KILL") to the container's init process.
    ///
    /// # Errors
    /// runc fails for a reason other than the container being gone.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let out = self
            .command()
            .args(["kill", id, signal])
            .output()
            .await
            .map_err(|e| Error::io(&self.bin, e))?;
        if out.status.success() || is_gone(&out.stderr) {
            return Ok(());
        }
        Err(Error::Runc { op: "kill", id: id.to_owned(), message: lossy(&out.stderr) })
    }

    /// Removes the container (killing it if it still runs) and its cgroup.
    ///
    /// # Errors
    /// runc fails for a reason other than the container being gone.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let out = self
            .command()
            .args(["delete", "-f", id])
            .output()
            .await
            .map_err(|e| Error::io(&self.bin, e))?;
        if out.status.success() || is_gone(&out.stderr) {
            return Ok(());
        }
        Err(Error::Runc { op: "delete", id: id.to_owned(), message: lossy(&out.stderr) })
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
            .map_err(|_| Error::Runc {
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

/// For a container that reads stdin (`stdin: true`, as the bundle's annotation says): a FIFO
/// beside its log (`N.stdin`), opened for reading and writing so it never reports end of file
/// and opening it never blocks; the kubelet API's attach writes to it. Kubelet's `stdinOnce`
/// (stdin ends with the first attach session) is not done: stdin stays open.
///
/// # Errors
/// The FIFO cannot be made or opened.
fn stdin_fifo(bundle: &Path, log: &Path) -> Result<Option<Stdio>> {
    let config: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if config.pointer("/annotations").and_then(|a| a.get(STDIN_ANNOTATION)).is_none() {
        return Ok(None);
    }
    let fifo = log.with_extension("stdin");
    let _ = std::fs::remove_file(&fifo);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(|e| Error::io(&fifo, e.into()))?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .map_err(|e| Error::io(&fifo, e))?;
    Ok(Some(Stdio::from(f)))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

fn is_gone(stderr: &[u8]) -> bool {
    let s = String::from_utf8_lossy(stderr);
    s.contains("does not exist") || s.contains("not exist") || s.contains("container not running")
}

fn tail_of(path: &Path, n: u64) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s.trim().to_owned()
}

/// Makes this process the subreaper of its descendants, so container processes are re-parented
/// to it when `runc run -d` exits.
///
/// # Errors
/// The prctl fails.
pub fn become_subreaper() -> Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| Error::io(Path::new("prctl(PR_SET_CHILD_SUBREAPER)"), e.into()))
}

/// True while process `pid` exists (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the parenthesised command name, which may itself hold spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|c| c != 'Z')
}

/// Waits until process `pid` has exited and reaps it when it is our child.
pub async fn wait_exit(pid: i32) -> Exit {
    let Some(p) = Pid::from_raw(pid) else { return Exit::Unknown };
    if kinetic_sys::wait_exit(pid).await.is_err() {
        // Without a reactor registration, poll (not expected on Linux >= 5.3).
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    reap(p)
}

fn reap(p: Pid) -> Exit {
    match rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => {
            if let Some(code) = status.exit_status() {
                Exit::Code(code)
            } else if let Some(sig) = status.terminating_signal() {
                Exit::Code(128 + sig)
            } else {
                Exit::Unknown
            }
        }
        _ => Exit::Unknown,
    }
}
