//! Processes made the way a container runtime needs: `clone(2)` into new namespaces with a
//! closure run in the child, `fork(2)`, and `execve(2)`.
//!
//! Safe to call only from a single-threaded process (after a fork of a multi-threaded one, the
//! child could find a lock held by a thread it does not have): both functions check that and
//! refuse otherwise. The child runs `child` on a copy of the parent's memory and `_exit`s with
//! its return value, without the parent's destructors or `atexit` handlers.

use std::ffi::{CString, c_void};
use std::io;

/// Threads of the calling process, from `/proc/self/status`.
pub fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

fn single_threaded() -> io::Result<()> {
    match threads() {
        1 => Ok(()),
        n => Err(io::Error::other(format!(
            "the process has {n} threads; a clone or fork needs exactly one"
        ))),
    }
}

extern "C" fn trampoline(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed by `clone_process`, valid in this
    // child's copy of the parent's memory.
    let f = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> i32>() };
    let code = f();
    // SAFETY: leaves the child at once, as a forked child must.
    unsafe { libc::_exit(code) }
}

/// `clone(2)` with `flags` (`CLONE_NEW*`; `SIGCHLD` is added) running `child` in the new
/// process; returns its pid.
///
/// # Errors
/// The process has more than one thread, or the clone fails.
pub fn clone_process(flags: libc::c_int, child: &mut dyn FnMut() -> i32) -> io::Result<i32> {
    single_threaded()?;
    let mut stack = vec![0u8; 512 * 1024];
    let mut f: &mut dyn FnMut() -> i32 = child;
    // SAFETY: the stack is ours and outlives the call (the child has its own copy, no
    // CLONE_VM); the top is 16-byte aligned; the argument is valid in the child's copy of this
    // memory; the process is single-threaded (checked above).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(trampoline, top.cast(), flags | libc::SIGCHLD, (&raw mut f).cast::<c_void>())
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// `fork(2)` running `child` in the new process; returns its pid.
///
/// # Errors
/// The process has more than one thread, or the fork fails.
pub fn fork_process(child: &mut dyn FnMut() -> i32) -> io::Result<i32> {
    clone_process(0, child)
}

/// `execve(2)`: replaces the process. Returns only on failure, with the error.
pub fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NUL-terminated strings in NULL-terminated arrays, all alive for the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloned_child_runs_the_closure_and_exits_with_its_code() {
        let mut ran = 0;
        let pid = clone_process(0, &mut || {
            ran += 1;
            7 + ran
        });
        // The test harness runs tests on threads: the check refuses, as it must.
        if threads() > 1 {
            assert!(pid.is_err());
            return;
        }
        let pid = pid.unwrap();
        let st = rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        )
        .unwrap();
        assert_eq!(st.and_then(|(_, s)| s.exit_status()), Some(8));
        assert_eq!(ran, 0, "the child ran on its own copy of the memory");
    }
}
