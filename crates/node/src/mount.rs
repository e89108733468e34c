//! Container root filesystems: an overlayfs of the image's unpacked layers (read-only, shared
//! by every container of that image) under a per-run writable upper directory.

use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::{Error, Result};

/// Mounts `<dir>/rootfs` as overlayfs over `layers` (bottom first) with `<dir>/upper` and
/// `<dir>/work`.
///
/// # Errors
/// The image has no layers, a directory cannot be created, or the mount fails.
pub fn overlay(layers: &[PathBuf], dir: &Path) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::Mount {
            path: dir.to_path_buf(),
            message: "the image has no layers".into(),
        });
    }
    for d in ["rootfs", "upper", "work"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let target = dir.join("rootfs");
    let data = std::ffi::CString::new(data).map_err(|_| Error::Mount {
        path: target.clone(),
        message: "NUL in a layer path".into(),
    })?;
    rustix::mount::mount("overlay", &target, "overlay", MountFlags::empty(), Some(data.as_c_str()))
        .map_err(|e| Error::Mount {
            path: target.clone(),
            message: format!("overlay mount failed: {e}"),
        })
}

/// Unmounts `<dir>/rootfs` (if mounted) and removes `dir`. Best effort: a failure is logged.
pub fn remove(dir: &Path) {
    let rootfs = dir.join("rootfs");
    match rustix::mount::unmount(&rootfs, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => tracing::warn!(path = %rootfs.display(), error = %e, "unmount failed"),
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "removing container directory");
    }
}

/// Unmounts every mount point strictly below `dir` (deepest first), whatever made it: a
/// container rootfs mounted by an agent that was killed before it recorded the container is
/// known to nothing but the mount table. Best effort: a failure is logged.
pub fn unmount_all_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points = mount_points_under(&table, dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        match rustix::mount::unmount(&p, UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
            Err(e) => tracing::warn!(path = %p.display(), error = %e, "unmount failed"),
        }
    }
}

/// The mount points in a `/proc/self/mountinfo` table that lie strictly below `dir`. The
/// fifth field is the mount point, with space, tab, newline and backslash written as octal
/// escapes (proc(5)).
fn mount_points_under(table: &str, dir: &Path) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_escaped_mount_points_below_a_directory_only() {
        let table = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
69 27 0:53 / /d/pods/u1/containers/app/1/rootfs rw - overlay overlay rw
70 27 0:54 / /d/pods/u1/volumes/my\\040vol rw - tmpfs tmpfs rw
71 27 0:55 / /d/pods/u10/containers/app/1/rootfs rw - overlay overlay rw
72 27 0:56 / /d/pods/u1 rw - tmpfs tmpfs rw";
        let got = mount_points_under(table, Path::new("/d/pods/u1"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/d/pods/u1/containers/app/1/rootfs"),
                PathBuf::from("/d/pods/u1/volumes/my vol"),
            ]
        );
    }
}
