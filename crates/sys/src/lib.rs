//! The only crate of Kinetic with `unsafe` code: small safe wrappers over system interfaces
//! whose Rust bindings need an `unsafe` call, each with a `// SAFETY:` comment.
//!
//! - [`wait_exit`]: wait asynchronously for any process (child or not) to exit, through a
//!   pidfd registered with tokio's reactor.
//!
//! Everything else the node agent needs (mounts, prctl, waitpid, pidfd_open) has a safe API in
//! `rustix` and is called directly from `kinetic-node`.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Waits until process `pid` has exited (a zombie counts as exited). Returns at once when no
/// such process exists.
///
/// # Errors
/// The pidfd cannot be registered with the reactor (not inside a tokio runtime with I/O).
pub async fn wait_exit(pid: i32) -> std::io::Result<()> {
    let Some(p) = Pid::from_raw(pid) else { return Ok(()) };
    let fd: OwnedFd = match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
        Ok(fd) => fd,
        // ESRCH: the process is already gone.
        Err(_) => return Ok(()),
    };
    // SAFETY: `register_with_interest` requires that the fd stays open and is not registered
    // elsewhere while the AsyncFd exists. We own `fd` (just created by pidfd_open), move it
    // into the AsyncFd, and never expose it, so it is closed only when the AsyncFd is dropped.
    let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    // A pidfd becomes readable when the process exits.
    let _guard = afd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[tokio::test]
    async fn sees_a_child_exit() {
        let mut child = tokio::process::Command::new("sleep").arg("0.1").spawn().unwrap();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        let t = std::time::Instant::now();
        super::wait_exit(pid).await.unwrap();
        assert!(t.elapsed() >= std::time::Duration::from_millis(90));
        assert!(child.wait().await.unwrap().success());
        // Gone processes return at once.
        super::wait_exit(pid).await.unwrap();
    }
}
