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
