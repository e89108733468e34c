//! Test images built from the host's static busybox (`/bin/busybox`, Debian package
//! busybox-static) and pushed to a test [`Registry`].

use std::sync::OnceLock;

use anyhow::Context as _;
use kinetic_image::ImageConfig;
use kinetic_image::push::{Compression, Format, ImageSpec, Layer, Pusher, TarBuilder};

use crate::registry::Registry;

/// Where the busybox binary comes from: `$KINETIC_BUSYBOX`, else Debian's static build.
pub fn busybox_bin() -> std::path::PathBuf {
    std::env::var_os("KINETIC_BUSYBOX")
        .map_or_else(|| std::path::PathBuf::from("/bin/busybox"), Into::into)
}

/// The applets linked into `/bin` (`trap` is a shell builtin).
pub const APPLETS: &[&str] = &[
    "sh", "ash", "httpd", "sleep", "echo", "cat", "ls", "wget", "nc", "true", "false", "env", "id",
    "mkdir", "touch", "date", "kill", "ps", "grep", "head", "tail", "rm", "cp", "mv", "ln",
    "chmod", "hostname", "printf", "test", "[", "seq", "wc", "uname", "pwd", "stat", "sed", "awk",
    "tr", "sort", "timeout", "whoami", "readlink", "dd", "sync", "mount",
];

/// `/etc/passwd` with root and nobody (65534).
pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
pub const INDEX_HTML: &str = "<html><body>hello from kinetic</body></html>\n";

/// The tar of the busybox base layer: `/bin/busybox` and applet links, `/etc/passwd`,
/// `/etc/group`, `/tmp` (1777), `/www/index.html`, and the empty mount points.
///
/// # Errors
/// `/bin/busybox` is missing (install busybox-static).
pub fn busybox_tar() -> anyhow::Result<Vec<u8>> {
    let bin = busybox_bin();
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: install the Debian package busybox-static (or set KINETIC_BUSYBOX)",
        bin.display()
    );
    let mut t = TarBuilder::new();
    for d in ["bin", "etc", "www", "home", "proc", "sys", "dev", "run", "var", "usr", "usr/bin"] {
        t.dir(d, 0o755)?;
    }
    t.dir("root", 0o700)?;
    t.dir("tmp", 0o1777)?;
    t.host_file("bin/busybox", &bin)?;
    for a in APPLETS {
        t.symlink(&format!("bin/{a}"), "busybox")?;
    }
    t.file("etc/passwd", PASSWD.as_bytes(), 0o644)?;
    t.file("etc/group", GROUP.as_bytes(), 0o644)?;
    t.file("etc/hostname", b"kinetic\n", 0o644)?;
    t.file("www/index.html", INDEX_HTML.as_bytes(), 0o644)?;
    Ok(t.finish()?)
}

/// The gzip busybox base layer, built once per test process (compressing 2 MB each time would
/// cost every test tens of milliseconds).
///
/// # Errors
/// As [`busybox_tar`].
pub fn busybox_layer() -> anyhow::Result<Layer> {
    static LAYER: OnceLock<Result<Layer, String>> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            busybox_tar()
                .and_then(|tar| Ok(Layer::from_tar(&tar, Compression::Gzip, Format::Oci)?))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The configuration busybox images get: `PATH`, `sh` as the command.
pub fn busybox_config() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        cmd: vec!["sh".to_owned()],
        ..ImageConfig::default()
    }
}

/// Pushes a busybox image as `<registry>/<repo>:<tag>` and returns that reference.
///
/// `extra_files` (`(path, content)`, mode 0644; a path ending in `.sh` gets 0755) go into a
/// second layer, so images that differ there still share the base layer and have different
/// digests.
///
/// # Errors
/// The base layer cannot be built or the push fails.
pub async fn busybox(
    registry: &Registry,
    repo: &str,
    tag: &str,
    extra_files: &[(&str, &str)],
) -> anyhow::Result<String> {
    busybox_with(registry, repo, tag, extra_files, busybox_config()).await
}

/// [`busybox`] with a chosen configuration (entrypoint, cmd, env, working dir, user).
///
/// # Errors
/// As [`busybox`].
pub async fn busybox_with(
    registry: &Registry,
    repo: &str,
    tag: &str,
    extra_files: &[(&str, &str)],
    config: ImageConfig,
) -> anyhow::Result<String> {
    let mut layers = vec![busybox_layer()?];
    if !extra_files.is_empty() {
        let mut t = TarBuilder::new();
        for (path, content) in extra_files {
            let path = path.trim_start_matches('/');
            let mode = if path.ends_with(".sh") { 0o755 } else { 0o644 };
            t.file(path, content.as_bytes(), mode)?;
        }
        layers.push(Layer::from_tar(&t.finish()?, Compression::Gzip, Format::Oci)?);
    }
    let reference = format!("{}/{repo}:{tag}", registry.addr());
    push(&reference, ImageSpec { config, layers, ..ImageSpec::default() }).await?;
    Ok(reference)
}

/// Pushes any image to an anonymous registry reference; returns the manifest digest.
///
/// # Errors
/// The push fails.
pub async fn push(reference: &str, image: ImageSpec) -> anyhow::Result<String> {
    let pusher = Pusher::new(reference, &kinetic_image::PullOptions::default())
        .with_context(|| format!("pushing {reference}"))?;
    let pushed = pusher.push_image(&image).await.with_context(|| format!("pushing {reference}"))?;
    Ok(pushed.digest)
}
