//! The only crate of Kinetic with `unsafe` code: small safe wrappers over system interfaces
//! whose Rust bindings need an `unsafe` call, each with a `// SAFETY:` comment.
//!
//! - [`wait_exit`]: wait asynchronously for any process (child or not) to exit, through a
//!   pidfd registered with tokio's reactor.
//! - [`process_cpu`], [`thread_cpu`], [`children_cpu`]: CPU time (user + system) of a process
//!   (also a zombie, before it is reaped), of the calling thread, and of the reaped children,
//!   for the agent's per-start accounting.
//!
//! - [`spawn`]: `clone` into new namespaces and `fork` with a closure in the child (only from a
//!   single-threaded process, checked), and `execve`, for the native container runtime.
//!
//! Everything else the node agent needs (mounts, prctl, waitpid, pidfd_open) has a safe API in
//! `rustix` and is called directly from `kinetic-node`.
#![allow(unsafe_code)]

pub mod spawn;

use std::os::fd::OwnedFd;
use std::time::Duration;

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

fn timespec(ts: &libc::timespec) -> Duration {
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// The CPU time (user + system, nanosecond resolution) process `pid` has used so far, all its
/// threads included, its reaped children not. Works on a zombie, so read a child's figure after
/// it exited and before it is reaped.
///
/// # Errors
/// No such process (or already reaped).
pub fn process_cpu(pid: i32) -> std::io::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock_getcpuclockid` writes one clockid_t through the pointer, which points to a
    // live local of that type.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    clock_cpu(clock)
}

/// Moves the calling thread, and only it, into a new network namespace
/// (`unshare(CLONE_NEWNET)`); the other threads of the process stay where they are.
///
/// # Errors
/// The kernel refuses (no `CAP_SYS_ADMIN`, namespaces limit reached).
pub fn unshare_net_thread() -> std::io::Result<()> {
    // SAFETY: `unshare` takes no pointers. With only CLONE_NEWNET it changes the calling
    // thread's network namespace and nothing shared with other threads (not the file
    // descriptor table, the hazard rustix's `unshare_unsafe` documents).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    clock_cpu(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or_default()
}

fn clock_cpu(clock: libc::clockid_t) -> std::io::Result<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` writes one timespec through the pointer, which points to a live
    // local of that type.
    if unsafe { libc::clock_gettime(clock, &raw mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(timespec(&ts))
}

/// The CPU time (user + system) of this process's children that have been reaped, with their
/// own reaped descendants (`getrusage(RUSAGE_CHILDREN)`; microsecond resolution).
pub fn children_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes one rusage through the pointer, which points to a live local.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
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

    #[tokio::test]
    async fn reads_a_zombie_childs_cpu_then_the_reaped_childrens() {
        // A child that burns some CPU, then exits.
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        let before = super::children_cpu();
        super::wait_exit(pid).await.unwrap();
        // Exited, not reaped: its figure is still there.
        let cpu = super::process_cpu(pid).unwrap();
        assert!(cpu > std::time::Duration::from_micros(100), "{cpu:?}");
        assert!(child.wait().await.unwrap().success());
        assert!(super::process_cpu(pid).is_err());
        assert!(super::children_cpu() > before);
        assert!(super::thread_cpu() > std::time::Duration::ZERO);
    }
}
