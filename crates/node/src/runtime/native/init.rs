//! The last steps before the container's process runs, in the order runc's `finalizeNamespace`
//! takes them: rlimits, the capability bounding set, user and groups (keeping capabilities
//! across the uid change), the working directory, the effective/permitted/inheritable and
//! ambient sets, `no_new_privs`, then the executable's lookup in the container's `PATH` and
//! `execve`. Shared by a container's init (after its mounts) and exec (after joining the
//! namespaces). Runs in a forked, single-threaded process: errors are returned as runc words
//! them, for the caller to report.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, PosixRlimitType, Process};

/// Linux capability names by number (`include/uapi/linux/capability.h`).
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of capability `c`.
pub fn cap_number(c: &Capability) -> Option<u32> {
    let name = serde_json::to_value(c).ok()?;
    let name = name.as_str()?;
    CAPS.iter().position(|n| *n == name).and_then(|i| u32::try_from(i).ok())
}

/// A capability set as the two 32-bit words of `capset(2)` (version 3).
pub fn mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> u64 {
    caps.into_iter().filter_map(cap_number).fold(0u64, |m, n| m | (1u64 << n))
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn resource(t: PosixRlimitType) -> Option<rustix::process::Resource> {
    use rustix::process::Resource as R;
    Some(match t {
        PosixRlimitType::RlimitCpu => R::Cpu,
        PosixRlimitType::RlimitFsize => R::Fsize,
        PosixRlimitType::RlimitData => R::Data,
        PosixRlimitType::RlimitStack => R::Stack,
        PosixRlimitType::RlimitCore => R::Core,
        PosixRlimitType::RlimitRss => R::Rss,
        PosixRlimitType::RlimitNproc => R::Nproc,
        PosixRlimitType::RlimitNofile => R::Nofile,
        PosixRlimitType::RlimitMemlock => R::Memlock,
        PosixRlimitType::RlimitAs => R::As,
        PosixRlimitType::RlimitLocks => R::Locks,
        PosixRlimitType::RlimitSigpending => R::Sigpending,
        PosixRlimitType::RlimitMsgqueue => R::Msgqueue,
        PosixRlimitType::RlimitNice => R::Nice,
        PosixRlimitType::RlimitRtprio => R::Rtprio,
        PosixRlimitType::RlimitRttime => R::Rttime,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Go's error text for an errno, as runc's messages carry it (`no such file or directory`).
fn go_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    // Rust appends " (os error N)" and capitalises the first letter.
    let s = s.split(" (os error").next().unwrap_or(&s).to_owned();
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_lowercase().chain(c).collect())
}

/// Resolves `name` as Go's `exec.LookPath` does with the container's `PATH`, with its error
/// texts (`exec: "x": executable file not found in $PATH`, `exec: "/x": stat /x: no such file
/// or directory`, `exec: "/etc": permission denied`).
pub fn look_path(name: &str, env: &[String]) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| -> Result<(), String> {
        let md =
            std::fs::metadata(p).map_err(|e| format!("stat {}: {}", p.display(), go_text(&e)))?;
        if md.is_dir() {
            return Err("is a directory".into());
        }
        if md.permissions().mode() & 0o111 == 0 {
            return Err("permission denied".into());
        }
        Ok(())
    };
    if name.contains('/') {
        return executable(Path::new(name))
            .map(|()| PathBuf::from(name))
            .map_err(|e| format!("exec: {name:?}: {e}"));
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(name);
        if executable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!("exec: {name:?}: executable file not found in $PATH"))
}

/// Applies `p` to the calling process and executes it. Returns only on failure, with the
/// message runc gives (`unable to start container process: …`).
pub fn exec(p: &Process) -> String {
    match prepare_and_exec(p) {
        Ok(never) => match never {},
        Err(e) => format!("unable to start container process: {e}"),
    }
}

enum Never {}

fn set(m: u64) -> rustix::thread::CapabilitySet {
    rustix::thread::CapabilitySet::from_bits_retain(m)
}

fn prepare_and_exec(p: &Process) -> Result<Never, String> {
    use rustix::thread as t;
    let errno = |what: &str, e: rustix::io::Errno| format!("{what}: {}", go_text(&e.into()));
    for r in p.rlimits().iter().flatten() {
        let Some(res) = resource(r.typ()) else { continue };
        let lim = rustix::process::Rlimit { current: Some(r.soft()), maximum: Some(r.hard()) };
        rustix::process::setrlimit(res, lim)
            .map_err(|e| errno(&format!("error setting rlimit type {:?}", r.typ()), e))?;
    }
    if let Some(adj) = p.oom_score_adj() {
        let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
    let caps = p.capabilities().as_ref();
    let of = |f: fn(
        &oci_spec::runtime::LinuxCapabilities,
    ) -> &Option<oci_spec::runtime::Capabilities>| {
        caps.and_then(|c| f(c).as_ref()).map_or(0, |s| mask(s.iter()))
    };
    let bounding = of(|c| c.bounding());
    let effective = of(|c| c.effective());
    let permitted = of(|c| c.permitted());
    let inheritable = of(|c| c.inheritable());
    let ambient = of(|c| c.ambient());
    if caps.is_some() {
        for cap in 0..=last_cap() {
            if bounding & (1u64 << cap) == 0 {
                t::remove_capability_from_bounding_set(set(1u64 << cap))
                    .map_err(|e| errno("drop bounding set", e))?;
            }
        }
    }
    t::set_keep_capabilities(true).map_err(|e| errno("keep capabilities", e))?;
    let u = p.user();
    let groups: Vec<rustix::process::Gid> =
        u.additional_gids().iter().flatten().map(|g| rustix::process::Gid::from_raw(*g)).collect();
    t::set_thread_groups(&groups).map_err(|e| errno("setgroups", e))?;
    let gid = rustix::process::Gid::from_raw(u.gid());
    t::set_thread_res_gid(gid, gid, gid).map_err(|e| errno("setgid", e))?;
    let uid = rustix::process::Uid::from_raw(u.uid());
    t::set_thread_res_uid(uid, uid, uid).map_err(|e| errno("setuid", e))?;
    let cwd = p.cwd();
    std::env::set_current_dir(cwd).map_err(|e| {
        format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            cwd.display().to_string(),
            go_text(&e)
        )
    })?;
    t::set_keep_capabilities(false).map_err(|e| errno("keep capabilities", e))?;
    if caps.is_some() {
        t::set_capabilities(
            None,
            t::CapabilitySets {
                effective: set(effective),
                permitted: set(permitted),
                inheritable: set(inheritable),
            },
        )
        .map_err(|e| errno("capset", e))?;
        t::clear_ambient_capability_set().map_err(|e| errno("clear ambient capabilities", e))?;
        for cap in 0..=last_cap() {
            if ambient & (1u64 << cap) != 0 {
                t::configure_capability_in_ambient_set(set(1u64 << cap), true)
                    .map_err(|e| errno("raise ambient capability", e))?;
            }
        }
    }
    if p.no_new_privileges() == Some(true) {
        t::set_no_new_privs(true).map_err(|e| errno("set no_new_privs", e))?;
    }
    let args = p.args().clone().unwrap_or_default();
    let mut env = p.env().clone().unwrap_or_default();
    // runc's `setupUser`: without HOME in the config, the user's home from the container's
    // /etc/passwd, else "/".
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(u.uid())));
    }
    let first = args.first().ok_or("args must not be empty")?;
    let path = look_path(first, &env)?;
    let c = |s: &[u8]| CString::new(s).map_err(|_| format!("exec: {first:?}: invalid argument"));
    let path_c = c(path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = args.iter().map(|a| c(a.as_bytes())).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|a| c(a.as_bytes())).collect::<Result<_, _>>()?;
    let e = kinetic_sys::spawn::execve(&path_c, &argv, &envp);
    Err(format!("exec: {:?}: {}", path.display().to_string(), go_text(&e)))
}

/// The home directory of `uid` in /etc/passwd (the container's, after the pivot), or "/".
fn home_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|f| f.get(5).map(|h| (*h).to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_kernel_numbers() {
        let c: Capability = serde_json::from_str("\"CAP_CHOWN\"").unwrap();
        assert_eq!(cap_number(&c), Some(0));
        let c: Capability = serde_json::from_str("\"CAP_NET_BIND_SERVICE\"").unwrap();
        assert_eq!(cap_number(&c), Some(10));
        let c: Capability = serde_json::from_str("\"CAP_CHECKPOINT_RESTORE\"").unwrap();
        assert_eq!(cap_number(&c), Some(40));
    }

    /// Go's `exec.LookPath` texts, which runc's start errors carry.
    #[test]
    fn lookup_errors_read_like_runcs() {
        let env = vec!["PATH=/nonexistent:/bin".to_owned()];
        assert_eq!(look_path("sh", &env).unwrap(), PathBuf::from("/bin/sh"));
        assert_eq!(
            look_path("no-such-cmd", &env).unwrap_err(),
            "exec: \"no-such-cmd\": executable file not found in $PATH"
        );
        assert_eq!(
            look_path("/no/such/binary", &env).unwrap_err(),
            "exec: \"/no/such/binary\": stat /no/such/binary: no such file or directory"
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let name = plain.display().to_string();
        assert_eq!(
            look_path(&name, &env).unwrap_err(),
            format!("exec: {name:?}: permission denied")
        );
        assert_eq!(look_path("/etc", &env).unwrap_err(), "exec: \"/etc\": is a directory");
    }
}
