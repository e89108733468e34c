//! The container's filesystem, in its new mount namespace, as runc's `prepareRootfs` builds
//! it: `/` made a slave of the host (no mount leaks back), the rootfs (the agent's overlay
//! mount) bound on itself, the config's mounts in order (bind mounts remounted with their
//! flags; `cgroup` as runc does without a cgroup namespace: a tmpfs with the container's own
//! cgroup directories bound read-only), device nodes and `/dev` links, the terminal at
//! `/dev/console`, `pivot_root`, then masked paths, read-only paths and a read-only rootfs.
//!
//! Destinations must not hold `..` and are resolved under the rootfs as runc's `securejoin`
//! (filepath-securejoin's `SecureJoin`) resolves them: a symlink in the image on a
//! destination's path is followed *inside* the rootfs (an absolute target restarts at the
//! rootfs, `..` stops at it), so a hostile image cannot make a mount, or the file or directory
//! made for one, land on the host. As with securejoin, the result is checked once, before the
//! container runs; nothing else writes into a rootfs being set up.

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

/// `mount(2)` with raw `MS_*` flags, with runc's wording of failures. No source or type is an
/// empty string (ignored by the kernel for binds, remounts and propagation changes).
fn mount(
    src: Option<&Path>,
    dest: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let data_c = data.filter(|x| !x.is_empty()).and_then(|x| CString::new(x).ok());
    let bits = u32::try_from(flags).unwrap_or(0);
    rustix::mount::mount(
        src.unwrap_or(Path::new("")),
        dest,
        fstype.unwrap_or(""),
        rustix::mount::MountFlags::from_bits_retain(bits),
        data_c.as_deref(),
    )
    .map_err(|e| {
        format!(
            "error mounting {:?} to rootfs at {:?}: {e}",
            src.map_or_else(|| fstype.unwrap_or("").to_owned(), |s| s.display().to_string()),
            dest.display().to_string()
        )
    })
}

/// Mount flags and the data string of an OCI mount's options.
pub fn parse_options(opts: &[String]) -> (libc::c_ulong, libc::c_ulong, Vec<String>) {
    let mut flags: libc::c_ulong = 0;
    let mut propagation: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let rec = if o.starts_with('r') { libc::MS_REC } else { 0 };
                propagation |= rec
                    | match o.trim_start_matches('r') {
                        "private" => libc::MS_PRIVATE,
                        "shared" => libc::MS_SHARED,
                        "slave" => libc::MS_SLAVE,
                        _ => libc::MS_UNBINDABLE,
                    };
                (0, 0)
            }
            other => {
                data.push(other.to_owned());
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, propagation, data)
}

/// Symlinks followed while resolving one destination before it is refused (Linux's own
/// limit for a path lookup, `MAXSYMLINKS`, is 40; securejoin allows 255).
const MAX_LINKS: usize = 255;

/// `dest` (absolute, in the container) under `rootfs`, with every symlink on its path that
/// exists in the image resolved inside the rootfs (see the module doc).
///
/// # Errors
/// `dest` holds `..`, or its path has more than [`MAX_LINKS`] symlinks (a loop).
pub fn under(rootfs: &Path, dest: &Path) -> Result<PathBuf, String> {
    if dest.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("mount destination {} holds \"..\"", dest.display()));
    }
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = vec![dest.to_path_buf()];
    let mut links = 0;
    // `pending` is a stack of paths still to walk; a symlink's target is pushed in front of
    // what remained of the path that held it.
    while let Some(path) = pending.pop() {
        let mut comps = path.components();
        while let Some(c) = comps.next() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(n) => {
                    let next = resolved.join(n);
                    let on_host = rootfs.join(&next);
                    let is_link = std::fs::symlink_metadata(&on_host)
                        .is_ok_and(|m| m.file_type().is_symlink());
                    if !is_link {
                        resolved = next;
                        continue;
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!(
                            "mount destination {}: too many levels of symbolic links",
                            dest.display()
                        ));
                    }
                    let target = std::fs::read_link(&on_host).map_err(|e| {
                        format!("mount destination {}: {}: {e}", dest.display(), next.display())
                    })?;
                    if target.is_absolute() {
                        resolved = PathBuf::new();
                    }
                    pending.push(comps.as_path().to_path_buf());
                    pending.push(target);
                    break;
                }
            }
        }
    }
    Ok(rootfs.join(resolved))
}

/// Makes the container's filesystem and pivots into it. `cgroups` are the container's
/// cgroup directories on the host; `console` the terminal's replica to bind at /dev/console.
///
/// # Errors
/// A mount, a node or the pivot fails (runc's wording).
pub fn setup(spec: &Spec, cgroups: &[PathBuf], console: Option<&Path>) -> Result<(), String> {
    let root = spec.root().as_ref().ok_or("config.json has no root")?;
    let rootfs = root.path().clone();
    mount(None, Path::new("/"), None, libc::MS_SLAVE | libc::MS_REC, None)?;
    mount(Some(&rootfs), &rootfs, Some("bind"), libc::MS_BIND | libc::MS_REC, None)?;
    let mut dev_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        let dest = under(&rootfs, m.destination())?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_tmpfs = true;
        }
        mount_one(m, &dest, cgroups)?;
    }
    if dev_tmpfs {
        devices(&rootfs)?;
    }
    if let Some(c) = console {
        let dest = under(&rootfs, Path::new("/dev/console"))?;
        let _ = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&dest);
        mount(Some(c), &dest, Some("bind"), libc::MS_BIND, None)?;
    }
    pivot(&rootfs)?;
    let linux = spec.linux().as_ref();
    for p in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
        mask(Path::new(p))?;
    }
    for p in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        readonly(Path::new(p))?;
    }
    // The working directory exists before the user changes (runc creates it as well).
    if let Some(p) = spec.process().as_ref() {
        let _ = std::fs::create_dir_all(p.cwd());
    }
    if root.readonly() == Some(true) {
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

fn mount_one(m: &Mount, dest: &Path, cgroups: &[PathBuf]) -> Result<(), String> {
    let opts = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&opts);
    let data = data.join(",");
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = flags & libc::MS_BIND != 0 || typ == "bind";
    if bind {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| format!("bind mount to {} has no source", dest.display()))?;
        let md = std::fs::metadata(src)
            .map_err(|e| format!("bind mount source {}: {e}", src.display()))?;
        make_target(dest, md.is_dir())?;
        mount(Some(src), dest, Some("bind"), libc::MS_BIND | (flags & libc::MS_REC), None)?;
        let extra = flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
        if extra != 0 {
            mount(None, dest, None, libc::MS_BIND | libc::MS_REMOUNT | extra, None)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        make_target(dest, true)?;
        mount(
            Some(Path::new("tmpfs")),
            dest,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("mode=755"),
        )?;
        let ro = libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC;
        for cg in cgroups {
            // v1: /sys/fs/cgroup/<controller>/<path>; v2: /sys/fs/cgroup/<path>.
            let rel = cg.strip_prefix(super::cgroup::ROOT).unwrap_or(cg);
            let target = if super::cgroup::unified(Path::new(super::cgroup::ROOT)) {
                dest.to_path_buf()
            } else {
                dest.join(rel.iter().next().unwrap_or_default())
            };
            make_target(&target, true)?;
            mount(Some(cg), &target, Some("bind"), libc::MS_BIND, None)?;
            mount(None, &target, None, ro, None)?;
        }
        // As runc, the tmpfs itself stays writable (only the hierarchies are read-only).
    } else {
        make_target(dest, true)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        mount(Some(&src), dest, Some(typ), flags, Some(&data))?;
    }
    if propagation != 0 {
        mount(None, dest, None, propagation, None)?;
    }
    Ok(())
}

/// A mount point: a directory, or an empty file for a file bind mount.
fn make_target(dest: &Path, dir: bool) -> Result<(), String> {
    if dir {
        return std::fs::create_dir_all(dest).map_err(|e| format!("mkdir {}: {e}", dest.display()));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    if !dest.exists() {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dest)
            .map_err(|e| format!("creating {}: {e}", dest.display()))?;
    }
    Ok(())
}

/// runc's default devices in the new `/dev` tmpfs and its links.
fn devices(rootfs: &Path) -> Result<(), String> {
    let dev = under(rootfs, Path::new("/dev"))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| format!("mknod /dev/{name}: {e}"))?;
        // The umask may have cut the mode.
        let _ = rustix::fs::chmod(&p, rustix::fs::Mode::from_raw_mode(0o666));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    if Path::new("/proc/kcore").exists() {
        let _ = std::os::unix::fs::symlink("/proc/kcore", dev.join("core"));
    }
    Ok(())
}

/// `pivot_root` into `rootfs` with runc's trick: pivot onto itself, then detach the old root.
fn pivot(rootfs: &Path) -> Result<(), String> {
    std::env::set_current_dir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    rustix::process::pivot_root(".", ".")
        .map_err(|e| format!("pivot_root {}: {e}", rootfs.display()))?;
    // The old root is stacked under the new one: make it a slave so its unmount does not
    // propagate to the host, then detach it.
    let _ = mount(None, Path::new("."), None, libc::MS_SLAVE | libc::MS_REC, None);
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| format!("unmounting the old root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// A masked path: `/dev/null` over a file, an empty read-only tmpfs over a directory.
fn mask(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => {
            mount(Some(Path::new("tmpfs")), p, Some("tmpfs"), libc::MS_RDONLY, None)
        }
        Ok(_) => mount(Some(Path::new("/dev/null")), p, Some("bind"), libc::MS_BIND, None),
    }
}

/// A read-only path: bound on itself, then remounted read-only.
fn readonly(p: &Path) -> Result<(), String> {
    if !p.exists() {
        return Ok(());
    }
    mount(Some(p), p, Some("bind"), libc::MS_BIND | libc::MS_REC, None)?;
    mount(
        None,
        p,
        None,
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flags_propagation_and_data() {
        let o = |v: &[&str]| parse_options(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let (f, p, d) = o(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(f, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(p, 0);
        assert_eq!(d, ["mode=755", "size=65536k"]);
        let (f, p, d) = o(&["rbind", "rprivate", "ro"]);
        assert_eq!(f, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(p, libc::MS_REC | libc::MS_PRIVATE);
        assert!(d.is_empty());
        let (f, _, d) =
            o(&["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]);
        assert_eq!(f, libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(d, ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]);
        let (f, _, _) = o(&["ro", "rw"]);
        assert_eq!(f, 0);
    }

    #[test]
    fn destinations_stay_under_the_rootfs() {
        let r = Path::new("/r");
        assert_eq!(under(r, Path::new("/etc/hosts")).unwrap(), PathBuf::from("/r/etc/hosts"));
        assert_eq!(under(r, Path::new("dev/./shm")).unwrap(), PathBuf::from("/r/dev/shm"));
        assert!(under(r, Path::new("/../etc")).is_err());
    }

    #[test]
    fn symlinks_on_a_destination_resolve_inside_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("real/dir", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("real/dots")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        // An absolute target restarts at the rootfs, never at the host's root.
        assert_eq!(under(r, Path::new("/up/etc/passwd")).unwrap(), r.join("etc/passwd"));
        assert_eq!(under(r, Path::new("/abs/dir/x")).unwrap(), r.join("real/dir/x"));
        assert_eq!(under(r, Path::new("/rel/x")).unwrap(), r.join("real/dir/x"));
        // `..` in a target stops at the rootfs.
        assert_eq!(under(r, Path::new("/real/dots/hosts")).unwrap(), r.join("etc/hosts"));
        // Missing components are kept as they are (they are made under the rootfs).
        assert_eq!(under(r, Path::new("/new/a/b")).unwrap(), r.join("new/a/b"));
        assert!(under(r, Path::new("/loop/x")).unwrap_err().contains("too many levels"));
    }
}
