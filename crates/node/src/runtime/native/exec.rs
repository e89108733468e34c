//! `kinetic __exec <spec>`: a command in a running native container (probes, hooks, `kubectl
//! exec`). A fresh process of the agent's binary, single-threaded, so it may `setns` into the
//! container's mount namespace: it joins the container's cgroups, then its ipc, uts, network,
//! pid and mount namespaces, forks (the pid namespace applies to children) and the child runs
//! the command with the container's user, capabilities, `no_new_privs`, rlimits, environment
//! and working directory (`init`). The parent forwards HUP/INT/TERM/QUIT and exits as the
//! command did (128 + signal for a signal death, as runc exec).
//!
//! With `tty`, the helper's stdio is the caller's terminal and becomes the command's
//! controlling terminal (runc exec allocates one in the container and relays; here the caller's
//! pty is used directly, so a resize of it reaches the command at once). Difference: `tty`
//! inside names a pty of the host's devpts, not of the container's.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use oci_spec::runtime::Spec as OciSpec;
use serde::{Deserialize, Serialize};

use super::State;

/// The hidden subcommand of the agent's binary.
pub const SUBCOMMAND: &str = "__exec";

/// What to run where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub root: PathBuf,
    pub id: String,
    pub argv: Vec<String>,
    pub tty: bool,
}

fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{msg}");
    ExitCode::from(255)
}

/// The helper's `main`.
pub fn main(arg: &OsStr) -> ExitCode {
    let Some(spec) = arg.to_str().and_then(|s| serde_json::from_str::<Spec>(s).ok()) else {
        return fail("the exec helper's argument is not a spec");
    };
    let Some(state) = State::load(&spec.root, &spec.id) else {
        return fail(&format!("container {} does not exist", spec.id));
    };
    let Some(pid) = state.live_pid() else {
        return fail("cannot exec in a stopped container");
    };
    let oci = match OciSpec::load(state.bundle.join("config.json")) {
        Ok(s) => s,
        Err(e) => return fail(&format!("reading config.json: {e}")),
    };
    let Some(mut process) = oci.process().clone() else {
        return fail("config.json has no process");
    };
    process.set_args(Some(spec.argv.clone()));
    process.set_terminal(Some(spec.tty));
    // Namespaces: opened first (the paths go away with the mount namespace).
    let mut fds = Vec::new();
    for (name, bit) in [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        match std::fs::File::open(format!("/proc/{pid}/ns/{name}")) {
            Ok(f) => fds.push((f, bit)),
            Err(e) => return fail(&format!("opening the container's {name} namespace: {e}")),
        }
    }
    if let Err(e) = super::cgroup::join(&state.cgroups) {
        return fail(&e);
    }
    // All but the mount namespace now (a pid namespace applies to the children); the mount
    // namespace in the child, so this process keeps the host's /proc for its own checks.
    let mnt = fds.pop();
    for (f, _) in &fds {
        if let Err(e) = rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(f), None)
        {
            return fail(&format!("joining the container's namespaces: {e}"));
        }
    }
    drop(fds);
    let tty = spec.tty;
    // With a terminal: one of the container's own (its devpts, reached through its init's
    // root), relayed to ours, as runc exec does.
    let pty = if tty {
        match container_pty(pid) {
            Ok(p) => Some(p),
            Err(e) => return fail(&format!("allocating a terminal in the container: {e}")),
        }
    } else {
        None
    };
    let forked = kinetic_sys::spawn::fork_process(&mut || {
        // Dies with the helper (the kubelet API ends an exec by signalling the helper).
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        if let Some((f, _)) = &mnt
            && let Err(e) =
                rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(f), None)
        {
            let _ = writeln!(std::io::stderr(), "joining the container's mount namespace: {e}");
            return 255;
        }
        let _ = rustix::process::setsid();
        if let Some((_, replica)) = &pty {
            for r in [
                rustix::stdio::dup2_stdin(replica),
                rustix::stdio::dup2_stdout(replica),
                rustix::stdio::dup2_stderr(replica),
            ] {
                if r.is_err() {
                    return 255;
                }
            }
            let _ = rustix::process::ioctl_tiocsctty(rustix::stdio::stdin());
        }
        let msg = super::init::exec(&process);
        let _ = writeln!(std::io::stderr(), "{msg}");
        255
    });
    let child = match forked {
        Ok(pid) => pid,
        Err(e) => return fail(&format!("fork: {e}")),
    };
    let status = match pty {
        Some((primary, replica)) => {
            drop(replica);
            relay(child, &primary)
        }
        None => rustix::process::Pid::from_raw(child).and_then(|p| {
            rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty())
                .ok()
                .flatten()
                .map(|(_, s)| s)
        }),
    };
    let code = match status {
        Some(s) => {
            s.exit_status().or_else(|| s.terminating_signal().map(|sig| 128 + sig)).unwrap_or(255)
        }
        None => 255,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// A new pty of the container's devpts instance: (primary, replica).
fn container_pty(pid: i32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    let root = format!("/proc/{pid}/root");
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
    let primary = rustix::fs::open(format!("{root}/dev/pts/ptmx"), flags, Mode::empty())?;
    rustix::pty::unlockpt(&primary)?;
    let name = rustix::pty::ptsname(&primary, Vec::new())?;
    let name = name.to_string_lossy().into_owned();
    let replica = rustix::fs::open(format!("{root}{name}"), flags, Mode::empty())?;
    // The container's terminal starts with our size.
    if let Ok(ws) = rustix::termios::tcgetwinsize(rustix::stdio::stdin()) {
        let _ = rustix::termios::tcsetwinsize(&primary, ws);
    }
    Ok((primary, replica))
}

/// Copies our stdin to the container's terminal and its output to our stdout, and our
/// terminal's size to it when it changes, until `child` exits; returns its wait status.
fn relay(child: i32, primary: &OwnedFd) -> Option<rustix::process::WaitStatus> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let pid = rustix::process::Pid::from_raw(child)?;
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    let mut stdin_open = true;
    let mut size = None;
    let mut buf = vec![0u8; 16 * 1024];
    let tick = Timespec { tv_sec: 0, tv_nsec: 50_000_000 };
    let write_all = |fd: BorrowedFd<'_>, mut b: &[u8]| {
        while !b.is_empty() {
            match rustix::io::write(fd, b) {
                Ok(0) | Err(_) => return,
                Ok(n) => b = &b[n..],
            }
        }
    };
    let status = loop {
        if let Ok(Some((_, st))) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG)
        {
            break Some(st);
        }
        if let Ok(ws) = rustix::termios::tcgetwinsize(stdin)
            && size != Some((ws.ws_row, ws.ws_col))
        {
            size = Some((ws.ws_row, ws.ws_col));
            let _ = rustix::termios::tcsetwinsize(primary, ws);
        }
        let mut fds = vec![PollFd::new(primary, PollFlags::IN)];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        if rustix::event::poll(&mut fds, Some(&tick)).is_err() {
            continue;
        }
        let out_ready = !fds[0].revents().is_empty();
        let in_ready = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        if out_ready {
            match rustix::io::read(primary, &mut buf) {
                Ok(n) if n > 0 => write_all(stdout, &buf[..n]),
                // EIO: no process holds the terminal any more; the exit is near.
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        if in_ready {
            match rustix::io::read(stdin, &mut buf) {
                Ok(n) if n > 0 => write_all(primary.as_fd(), &buf[..n]),
                _ => stdin_open = false,
            }
        }
    };
    // What the command wrote just before it exited.
    let _ = rustix::io::ioctl_fionbio(primary, true);
    while let Ok(n) = rustix::io::read(primary, &mut buf) {
        if n == 0 {
            break;
        }
        write_all(stdout, &buf[..n]);
    }
    status
}
