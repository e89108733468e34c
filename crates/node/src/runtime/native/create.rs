//! Creating a container, in its shim: `config.json` read with `oci-spec`, the state file
//! written before anything is made (so a crash leaves something `delete` can find), cgroups,
//! then one `clone` with new mount, pid, ipc and uts namespaces. The child joins the cgroups
//! and the pod's network namespace (`setns` by path), sets the hostname, builds its filesystem
//! (`mounts`) and runs the process (`init`); a close-on-exec pipe tells the shim whether the
//! `execve` happened (end of file) or why not (runc's message). The child is the shim's own,
//! so the shim reaps it and records its exit as with runc.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{State, cgroup, init, mounts};

/// The container's stdio as the shim prepared it.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// With a terminal: the replica's path (bound at /dev/console); stdio is the replica.
    pub console: Option<PathBuf>,
}

/// Creates and starts container `id` of `bundle`; returns its init's pid once it has exec'd
/// its process.
///
/// # Errors
/// Anything that fails before the process runs, worded as runc does; nothing of the
/// container is left then (cgroups and state removed, the child reaped).
pub fn create(root: &Path, id: &str, bundle: &Path, stdio: Stdio) -> Result<i32, String> {
    let spec =
        Spec::load(bundle.join("config.json")).map_err(|e| format!("reading config.json: {e}"))?;
    let linux = spec.linux().as_ref().ok_or("config.json has no linux section")?;
    if linux.seccomp().is_some() {
        return Err("seccomp is not supported by the native runtime (use --runtime runc)".into());
    }
    let mut flags: libc::c_int = 0;
    let mut join_paths = Vec::new();
    for ns in linux.namespaces().iter().flatten() {
        let bit = match ns.typ() {
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            other => return Err(format!("the native runtime does not support {other} namespaces")),
        };
        match ns.path() {
            Some(p) => join_paths.push((p.clone(), bit)),
            None => flags |= bit,
        }
    }
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("/kinetic/{id}"));
    let croot = Path::new(cgroup::ROOT);
    let mut state = State {
        bundle: bundle.to_path_buf(),
        pid: None,
        start_time: None,
        cgroups: cgroup::paths(croot, &cgroups_path),
    };
    state.save(root, id).map_err(|e| format!("writing the container's state: {e}"))?;
    let fail = |state: &State, msg: String| {
        cleanup(state);
        let _ = std::fs::remove_dir_all(root.join(id));
        msg
    };
    let cgroups = match cgroup::create(croot, &cgroups_path, linux.resources().as_ref()) {
        Ok(c) => c,
        Err(e) => return Err(fail(&state, e)),
    };
    let mut join = Vec::new();
    for (p, _) in &join_paths {
        match std::fs::File::open(p) {
            Ok(f) => join.push(OwnedFd::from(f)),
            Err(e) => return Err(fail(&state, format!("opening namespace {}: {e}", p.display()))),
        }
    }
    let (report_r, report_w) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Err(fail(&state, format!("making a pipe: {e}"))),
    };
    let cloned = kinetic_sys::spawn::clone_process(flags, &mut || {
        let msg = match setup(&spec, &stdio, &cgroups, &join) {
            Ok(()) => match spec.process().as_ref() {
                Some(p) => init::exec(p),
                None => "config.json has no process".to_owned(),
            },
            Err(e) => format!("unable to start container process: {e}"),
        };
        let _ = rustix::io::write(&report_w, msg.as_bytes());
        1
    });
    drop(report_w);
    drop(stdio);
    drop(join);
    let pid = match cloned {
        Ok(pid) => pid,
        Err(e) => return Err(fail(&state, format!("clone: {e}"))),
    };
    state.cgroups = cgroups;
    state.pid = Some(pid);
    state.start_time = super::start_time(pid);
    let mut msg = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::fs::File::from(report_r), &mut msg);
    let reap = || {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
        }
    };
    if !msg.is_empty() {
        reap();
        return Err(fail(&state, String::from_utf8_lossy(&msg).into_owned()));
    }
    if let Err(e) =
        state.save(root, id).and_then(|()| std::fs::write(bundle.join("pid"), pid.to_string()))
    {
        reap();
        return Err(fail(&state, format!("writing the container's state: {e}")));
    }
    Ok(pid)
}

/// Removes the cgroups of a create that failed (its child, if any, is gone).
fn cleanup(state: &State) {
    for d in &state.cgroups {
        let _ = std::fs::remove_dir(d);
    }
}

/// The child's setup before its process runs: stdio, session and terminal, cgroups, the
/// namespaces joined by path, hostname, filesystem.
fn setup(spec: &Spec, stdio: &Stdio, cgroups: &[PathBuf], join: &[OwnedFd]) -> Result<(), String> {
    let io = |what: &str, e: rustix::io::Errno| format!("{what}: {e}");
    rustix::stdio::dup2_stdin(&stdio.stdin).map_err(|e| io("setting up stdio", e))?;
    rustix::stdio::dup2_stdout(&stdio.stdout).map_err(|e| io("setting up stdio", e))?;
    rustix::stdio::dup2_stderr(&stdio.stderr).map_err(|e| io("setting up stdio", e))?;
    let _ = rustix::process::setsid();
    if stdio.console.is_some() {
        rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())
            .map_err(|e| io("setting the controlling terminal", e))?;
    }
    cgroup::join(cgroups)?;
    for fd in join {
        // The descriptor names the namespace and so its type.
        rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(fd), None)
            .map_err(|e| io("joining namespace", e))?;
    }
    if let Some(h) = spec.hostname().as_deref() {
        rustix::system::sethostname(h.as_bytes()).map_err(|e| io("sethostname", e))?;
    }
    mounts::setup(spec, cgroups, stdio.console.as_deref())
}
