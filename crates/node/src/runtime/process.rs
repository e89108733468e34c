//! Container processes: exits observed through a pidfd and reaped, liveness, the subreaper.

use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid, WaitOptions};

use crate::{Error, Result};

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code (128 + signal for a signal death, as kubelet reports).
    Code(i32),
    /// The process was not ours to reap (adopted after an agent restart).
    Unknown,
}

/// Makes this process the subreaper of its descendants, so container processes are re-parented
/// to it when `runc run -d` (or a native create's clone) hands them over.
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
