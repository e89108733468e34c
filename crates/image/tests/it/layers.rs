use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use kinetic_image::push::{Compression, Format, ImageSpec, Layer, TarBuilder};
use kinetic_testkit::images;
use kinetic_testkit::registry::Registry;

use crate::{image_of, pull, read, store};

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    rustix::fs::lgetxattr(path, name, &mut buf).ok().map(|n| buf[..n].to_vec())
}

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_across_two_layers_merge_in_overlayfs() {
    let reg = Registry::start().await.unwrap();
    let mut lower = TarBuilder::new();
    lower.dir("a", 0o755).unwrap();
    lower.file("a/keep", b"keep", 0o644).unwrap();
    lower.file("a/gone", b"gone", 0o644).unwrap();
    lower.dir("a/subdir", 0o755).unwrap();
    lower.file("a/subdir/deep", b"deep", 0o644).unwrap();
    lower.dir("b", 0o755).unwrap();
    lower.file("b/old1", b"1", 0o644).unwrap();
    lower.file("b/old2", b"2", 0o644).unwrap();
    lower.file("top_gone", b"x", 0o644).unwrap();
    let mut upper = TarBuilder::new();
    upper.dir("a", 0o755).unwrap();
    upper.whiteout("a/gone").unwrap();
    upper.whiteout("a/subdir").unwrap();
    upper.file("a/added", b"added", 0o644).unwrap();
    upper.dir("b", 0o755).unwrap();
    upper.opaque("b").unwrap();
    upper.file("b/new", b"new", 0o644).unwrap();
    upper.whiteout("top_gone").unwrap();
    let layers = [lower, upper]
        .into_iter()
        .map(|t| Layer::from_tar(&t.finish().unwrap(), Compression::Gzip, Format::Oci).unwrap())
        .collect();
    let reference = format!("{}/whiteouts:v1", reg.addr());
    images::push(&reference, ImageSpec { layers, ..ImageSpec::default() }).await.unwrap();

    let (dir, store) = store();
    let img = pull(&store, &reference).await.unwrap();
    let (l1, l2) = (&img.layers[0], &img.layers[1]);
    // The unpacked directories hold overlayfs's own forms.
    assert_eq!(read(&l1.join("a/gone")), "gone");
    for w in ["a/gone", "a/subdir", "top_gone"] {
        let m = std::fs::symlink_metadata(l2.join(w)).unwrap();
        assert!(m.file_type().is_char_device(), "{w} is a whiteout device");
        assert_eq!(m.rdev(), 0, "{w}");
    }
    assert!(!l2.join("a/.wh.gone").exists());
    assert_eq!(xattr(&l2.join("b"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!l2.join("b/.wh..wh..opq").exists());
    assert_eq!(xattr(&l2.join("a"), "trusted.overlay.opaque"), None);

    // And overlayfs merges them as the image means: top layer first in lowerdir.
    let mnt = dir.path().join("rootfs");
    std::fs::create_dir(&mnt).unwrap();
    let opts =
        std::ffi::CString::new(format!("lowerdir={}:{}", l2.display(), l1.display())).unwrap();
    rustix::mount::mount(
        "overlay",
        &mnt,
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        opts.as_c_str(),
    )
    .expect("mounting overlayfs (the tests run as root, like the node agent)");
    let _guard = Mounted(&mnt);
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["added", "keep"]);
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["new"]);
    assert!(!mnt.join("top_gone").exists());
    assert_eq!(read(&mnt.join("a/keep")), "keep");
}

#[tokio::test]
async fn hard_links_and_symlinks() {
    let reg = Registry::start().await.unwrap();
    let spec = image_of(Compression::Zstd, Format::Oci, |t| {
        t.dir("usr", 0o755).unwrap();
        t.dir("usr/lib", 0o755).unwrap();
        t.file("usr/lib/libx.so.1", b"elf", 0o755).unwrap();
        t.symlink("usr/lib/libx.so", "libx.so.1").unwrap();
        t.symlink("lib", "usr/lib").unwrap();
        t.dir("bin", 0o755).unwrap();
        t.file_owned("bin/tool", b"#!/bin/sh\n", 0o4755, 0, 0).unwrap();
        t.hardlink("bin/tool2", "bin/tool").unwrap();
        t.hardlink("bin/tool3", "./bin/tool").unwrap();
        t.symlink("bin/abs", "/etc/passwd").unwrap();
        t.symlink("bin/dangling", "../nowhere").unwrap();
    });
    let reference = format!("{}/links:v1", reg.addr());
    images::push(&reference, spec).await.unwrap();
    let (_dir, store) = store();
    let img = pull(&store, &reference).await.unwrap();
    let l = &img.layers[0];
    let tool = std::fs::metadata(l.join("bin/tool")).unwrap();
    for h in ["bin/tool2", "bin/tool3"] {
        assert_eq!(std::fs::metadata(l.join(h)).unwrap().ino(), tool.ino(), "{h}");
    }
    assert_eq!(tool.nlink(), 3);
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid survives");
    assert_eq!(std::fs::read_link(l.join("bin/abs")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(std::fs::read_link(l.join("bin/dangling")).unwrap(), Path::new("../nowhere"));
    assert_eq!(std::fs::read_link(l.join("lib")).unwrap(), Path::new("usr/lib"));
    assert_eq!(read(&l.join("lib/libx.so")), "elf");
    let m = std::fs::symlink_metadata(l.join("usr/lib/libx.so")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.mtime(), 1_700_000_000, "symlink mtimes are kept");
}
