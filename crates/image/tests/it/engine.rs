//! The pull engine's behaviours: Range requests (honoured or not), shared downloads, an
//! aborted pull, garbage collection, conversion between layer formats.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::Full;
use kinetic_image::manifest::Compression;
use kinetic_image::push::{Format, ImageSpec, Layer, TarBuilder};
use kinetic_image::{DiskUsage, Error, GcPolicy, NoProgress, Progress, PullOptions, Store, Tuning};
use kinetic_testkit::images;
use kinetic_testkit::registry::Registry;

use crate::auth::{proxy, serve};
use crate::{chain, image_of, pull, read, store, tmp_entries};

/// Requests a proxy saw: (path, Range header).
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<Request>>>);

/// A request's path and Range header.
type Request = (String, Option<String>);

impl Seen {
    /// Blob GETs for `digest` and their Range headers.
    pub fn blob_gets(&self, digest: &str) -> Vec<Option<String>> {
        let suffix = format!("/blobs/{digest}");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with(&suffix))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// A proxy in front of the registry that records requests; with `ranges: false` it drops the
/// Range header, so the registry answers 200 with the whole blob, as a registry (or a CDN in
/// front of one) without range support does.
pub async fn recording_proxy(upstream: &str, ranges: bool) -> (String, Seen) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let seen = Seen::default();
    let (s, up) = (seen.clone(), upstream.to_owned());
    let addr = serve(move |mut req| {
        let (s, client, up) = (s.clone(), client.clone(), up.clone());
        async move {
            let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_owned);
            s.0.lock().unwrap().push((req.uri().path().to_owned(), range));
            if !ranges {
                req.headers_mut().remove("range");
            }
            proxy(req, &client, &up).await
        }
    })
    .await;
    (addr, seen)
}

/// Bytes that do not compress (a xorshift stream), so blobs have the size of their content.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sums what the pull reports.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    advanced: AtomicU64,
}

impl Progress for Counter {
    fn layer_total(&self, _digest: &str, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::SeqCst);
    }
    fn advanced(&self, bytes: u64) {
        self.advanced.fetch_add(bytes, Ordering::SeqCst);
    }
}

fn small_ranges() -> Tuning {
    Tuning { range_min: 64 << 10, range_chunk: 100 << 10, range_parallel: 3, ..Tuning::default() }
}

/// A gzip image with one 600 KB incompressible file; returns (reference, layer digest, size).
async fn big_layer_image(reg: &Registry, name: &str) -> (String, String, usize, Vec<u8>) {
    let data = noise(600 << 10, 7);
    let spec = image_of(Compression::Gzip, Format::Oci, |t| {
        t.file("blob.bin", &data, 0o644).unwrap();
    });
    let layer = spec.layers[0].digest.clone();
    let size = spec.layers[0].data.len();
    let reference = format!("{}/{name}:v1", reg.addr());
    images::push(&reference, spec).await.unwrap();
    (reference, layer, size, data)
}

#[tokio::test]
async fn a_big_blob_comes_in_parallel_ranges_when_the_registry_does_ranges() {
    let reg = Registry::start().await.unwrap();
    let (reference, layer, size, data) = big_layer_image(&reg, "ranged").await;
    let (front, seen) = recording_proxy(reg.addr(), true).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_ranges()).unwrap();
    let progress = Counter::default();
    let via = reference.replacen(reg.addr(), &front, 1);
    let img = store.pull(&via, &PullOptions::default(), &progress).await.unwrap();
    assert_eq!(std::fs::read(img.layers[0].join("blob.bin")).unwrap(), data);
    let gets = seen.blob_gets(&layer);
    let parts = size.div_ceil(100 << 10);
    assert!(parts >= 6, "{size} bytes");
    assert_eq!(gets.len(), parts, "{gets:?}");
    let mut ranges: Vec<String> =
        gets.into_iter().map(|r| r.expect("every GET has a Range")).collect();
    ranges.sort_by_key(|r| {
        r.trim_start_matches("bytes=").split('-').next().unwrap().parse::<u64>().unwrap()
    });
    assert_eq!(ranges[0], format!("bytes=0-{}", (100 << 10) - 1));
    assert_eq!(ranges[parts - 1], format!("bytes={}-{}", (parts - 1) * (100 << 10), size - 1));
    assert_eq!(progress.total.load(Ordering::SeqCst), size as u64);
    assert_eq!(progress.advanced.load(Ordering::SeqCst), size as u64);
}

#[tokio::test]
async fn a_registry_without_ranges_gets_one_plain_stream() {
    let reg = Registry::start().await.unwrap();
    let (reference, layer, _size, data) = big_layer_image(&reg, "noranges").await;
    let (front, seen) = recording_proxy(reg.addr(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_ranges()).unwrap();
    let img = pull(&store, &reference.replacen(reg.addr(), &front, 1)).await.unwrap();
    assert_eq!(std::fs::read(img.layers[0].join("blob.bin")).unwrap(), data);
    // The probe asked for a range, got the whole blob with 200, and used that one answer.
    let gets = seen.blob_gets(&layer);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].as_deref().is_some_and(|r| r.starts_with("bytes=0-")), "{gets:?}");
}

#[tokio::test]
async fn a_ranged_blob_with_the_wrong_digest_is_rejected_and_never_used() {
    let reg = Registry::start().await.unwrap();
    let (reference, layer, _size, _data) = big_layer_image(&reg, "badranges").await;
    // Same length, one byte flipped in the last part: only the digest can tell.
    let path = reg.blob_data_path(&layer);
    let mut blob = std::fs::read(&path).unwrap();
    let at = blob.len() - 1000;
    blob[at] ^= 0x55;
    std::fs::write(&path, &blob).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_ranges()).unwrap();
    let e = pull(&store, &reference).await.unwrap_err();
    let Error::Pull { source, .. } = &e else { panic!("{e:?}") };
    assert!(
        matches!(&**source, Error::DigestMismatch { expected, .. } if *expected == layer),
        "{}",
        chain(&e)
    );
    assert!(!store.layer_dir(&layer).exists());
    assert!(store.local(&reference).is_none());
    // The cleanup of the temporary directory runs before the error is returned.
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_download_each_layer_once_across_stores() {
    let reg = Registry::start().await.unwrap();
    let reference = images::busybox(&reg, "shared", "v1", &[("/x", "y")]).await.unwrap();
    let (front, seen) = recording_proxy(reg.addr(), true).await;
    let via = reference.replacen(reg.addr(), &front, 1);
    let (dir, one) = store();
    // A second store on the same directory stands for another process (the CLI beside the
    // node agent): the per-digest file lock makes it wait for the first download too.
    let two = Store::open(dir.path().join("images")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        let r = via.clone();
        tasks.push(tokio::spawn(
            async move { s.pull(&r, &PullOptions::default(), &NoProgress).await },
        ));
    }
    let mut images = Vec::new();
    for t in tasks {
        images.push(t.await.unwrap().unwrap());
    }
    let layers: Vec<String> = images[0]
        .layers
        .iter()
        .map(|p| format!("sha256:{}", p.file_name().unwrap().to_str().unwrap()))
        .collect();
    assert_eq!(layers.len(), 2);
    for l in &layers {
        assert_eq!(seen.blob_gets(l).len(), 1, "layer {l} was downloaded more than once");
    }
    let downloaded: u64 = images.iter().map(|i| i.downloaded_bytes).sum();
    let max = images.iter().map(|i| i.downloaded_bytes).max().unwrap();
    assert!(downloaded >= max && downloaded < 2 * max, "{downloaded} vs {max}");
    assert_eq!(read(&images[0].layers[1].join("x")), "y");
}

/// Serves a pinned image straight from the registry's storage, except that the blob `stall`
/// gets half its bytes and then nothing more, ever: a pull of it hangs mid-layer.
pub async fn stalling_server(reg: &Registry, stall: String) -> String {
    use http_body_util::{BodyExt as _, StreamBody};
    type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    let storage = reg.storage_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            let (storage, stall) = (storage.clone(), stall.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (storage, stall) = (storage.clone(), stall.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let digest = path.rsplit('/').next().unwrap_or("").to_owned();
                            let hex = digest.trim_start_matches("sha256:").to_owned();
                            let file = storage
                                .join("docker/registry/v2/blobs/sha256")
                                .join(hex.get(..2).unwrap_or("xx"))
                                .join(&hex)
                                .join("data");
                            let Ok(bytes) = std::fs::read(&file) else {
                                let mut r = hyper::Response::new(Full::new(Bytes::new()).boxed());
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                return Ok::<hyper::Response<Body>, std::convert::Infallible>(r);
                            };
                            let len = bytes.len();
                            let mut b = hyper::Response::builder().header("content-length", len);
                            if path.contains("/manifests/") {
                                b = b.header(
                                    "content-type",
                                    "application/vnd.oci.image.manifest.v1+json",
                                );
                            }
                            let body: Body = if digest == stall {
                                let half = Bytes::from(bytes).slice(..len / 2);
                                let s = futures::stream::once(async move {
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        half,
                                    ))
                                })
                                .chain(futures::stream::pending());
                                http_body_util::BodyExt::boxed(StreamBody::new(s))
                            } else {
                                Full::new(Bytes::from(bytes)).boxed()
                            };
                            Ok(b.body(body).unwrap())
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(conn);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    addr
}

/// An uncompressed image of eight 256 KiB files; returns (reference by digest through `host`,
/// the same on the registry, layer digest).
pub async fn stallable_image(reg: &Registry, name: &str) -> (String, String) {
    let spec = image_of(Compression::None, Format::Oci, |t| {
        for i in 0..8 {
            t.file(&format!("f{i}"), &noise(256 << 10, i + 1), 0o644).unwrap();
        }
    });
    let layer = spec.layers[0].digest.clone();
    let digest = images::push(&format!("{}/{name}:v1", reg.addr()), spec).await.unwrap();
    (format!("{name}@{digest}"), layer)
}

/// Waits until some temporary layer directory of the store at `root` holds a file.
pub async fn wait_for_partial_layer(root: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let any = std::fs::read_dir(root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()));
        if any {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the pull never started writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_aborted_pull_leaves_nothing_usable_and_the_next_pull_is_clean() {
    let reg = Registry::start().await.unwrap();
    let (path, layer) = stallable_image(&reg, "aborted").await;
    let front = stalling_server(&reg, layer.clone()).await;
    let (_dir, store) = store();
    let s = store.clone();
    let stalled = format!("{front}/{path}");
    let task =
        tokio::spawn(async move { s.pull(&stalled, &PullOptions::default(), &NoProgress).await });
    wait_for_partial_layer(store.root()).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(!store.layer_dir(&layer).exists(), "a half-written layer was published");
    // The dropped pull removes its temporary directory in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !tmp_entries(&store).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", tmp_entries(&store));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.list().unwrap().is_empty());
    let img = pull(&store, &format!("{}/{path}", reg.addr())).await.unwrap();
    assert!(!img.cache_hit);
    assert_eq!(std::fs::read(img.layers[0].join("f3")).unwrap(), noise(256 << 10, 4));
}

#[tokio::test]
async fn gc_removes_least_recently_pulled_unused_images_between_the_watermarks() {
    let reg = Registry::start().await.unwrap();
    let (_dir, store) = store();
    let mut refs = Vec::new();
    for (tag, file) in [("a", "/a"), ("b", "/b"), ("c", "/c")] {
        let r = images::busybox(&reg, "gc", tag, &[(file, "four")]).await.unwrap();
        pull(&store, &r).await.unwrap();
        refs.push(r);
    }
    let img = |r: &str| store.local(r).unwrap();
    let (a, b, c) = (img(&refs[0]), img(&refs[1]), img(&refs[2]));
    let in_use = vec![refs[2].clone()];
    let kubelet = GcPolicy::default();
    assert_eq!((kubelet.high_threshold_percent, kubelet.low_threshold_percent), (85, 80));
    assert_eq!(kubelet.min_age, Duration::from_secs(120));
    // Images pulled a moment ago are young: kubelet's watermarks without the minimum age.
    let kubelet = GcPolicy { min_age: Duration::ZERO, ..kubelet };

    // Below the high watermark nothing happens.
    let r = store
        .gc_with_usage(&kubelet, &in_use, DiskUsage { capacity: 1000, available: 160 })
        .await
        .unwrap();
    assert_eq!(r.usage_percent, 85 - 1);
    assert_eq!(r.bytes_to_free, 0);
    assert!(r.removed_images.is_empty());

    // At 85 % it frees down to 80 %: 200 - 151 = 49 bytes wanted. Each image's own layer holds
    // 4 bytes and the busybox layer is shared with the image in use, so both unused images go
    // (oldest first), and that is still not enough: kubelet's error.
    let e = store
        .gc_with_usage(&kubelet, &in_use, DiskUsage { capacity: 1000, available: 151 })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GcShortfall { wanted: 49, freed: 8, removed: 2 }), "{e:?}");
    assert!(store.local(&refs[0]).is_none() && store.local(&refs[1]).is_none());
    assert!(!a.layers[1].exists() && !b.layers[1].exists());
    assert!(a.layers[0].exists(), "the base layer is used by the image in use");
    assert!(c.layers.iter().all(|l| l.exists()));
    assert_eq!(store.list().unwrap().len(), 1);
    let reopened = Store::open(store.root()).unwrap();
    assert!(reopened.local(&refs[0]).is_none() && reopened.local(&refs[2]).is_some());
}

#[tokio::test]
async fn gc_stops_once_enough_is_freed_and_keeps_images_named_by_digest() {
    let reg = Registry::start().await.unwrap();
    let (_dir, store) = store();
    let mut imgs = Vec::new();
    for tag in ["old", "mid", "new"] {
        let r = images::busybox(&reg, "gc2", tag, &[("/f", tag)]).await.unwrap();
        imgs.push(pull(&store, &r).await.unwrap());
    }
    // A tight policy: 1 byte to free. The oldest image is in use by digest, so the next oldest
    // goes, and only it.
    let policy =
        GcPolicy { high_threshold_percent: 80, low_threshold_percent: 80, min_age: Duration::ZERO };
    let r = store
        .gc_with_usage(
            &policy,
            &[imgs[0].digest.clone()],
            DiskUsage { capacity: 1000, available: 199 },
        )
        .await
        .unwrap();
    assert_eq!(r.bytes_to_free, 1);
    assert_eq!(r.removed_images, [imgs[1].reference.clone()]);
    assert_eq!(r.freed_bytes, 3);
    assert!(store.local(&imgs[0].reference).is_some());
    assert!(store.local(&imgs[2].reference).is_some());
    let bad = GcPolicy { high_threshold_percent: 70, low_threshold_percent: 80, ..policy };
    let e =
        store.gc_with_usage(&bad, &[], DiskUsage { capacity: 1, available: 0 }).await.unwrap_err();
    assert!(chain(&e).contains("invalid image GC policy"), "{}", chain(&e));
    // The real file system is far below 85 % in CI, so a plain gc does nothing.
    let usage = store.disk_usage().unwrap();
    assert!(usage.capacity > 0);
    if usage.used_percent() < 85 {
        assert!(store.gc(&GcPolicy::default(), &[]).await.unwrap().removed_images.is_empty());
    }
}

/// kubelet's `ImageMinimumGCAge`: above the high watermark, an unused image pulled less than
/// `min_age` ago stays, an older unused one goes, and an old one in use stays.
#[tokio::test]
async fn gc_keeps_young_and_in_use_images_and_removes_old_unused_ones() {
    let reg = Registry::start().await.unwrap();
    let (_dir, store) = store();
    let mut imgs = Vec::new();
    for tag in ["old-unused", "old-used"] {
        let r = images::busybox(&reg, "gcage", tag, &[("/f", tag)]).await.unwrap();
        imgs.push(pull(&store, &r).await.unwrap());
    }
    // Everything pulled so far is older than the cut-off the policy computes below.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let young = images::busybox(&reg, "gcage", "young", &[("/f", "young")]).await.unwrap();
    let young = pull(&store, &young).await.unwrap();
    let policy = GcPolicy { min_age: Duration::from_secs(1), ..GcPolicy::default() };
    let usage = DiskUsage { capacity: 1000, available: 100 };
    let e = store.gc_with_usage(&policy, &[imgs[1].reference.clone()], usage).await.unwrap_err();
    // 90 % used: 100 bytes wanted; only the old unused image may go.
    assert!(matches!(e, Error::GcShortfall { removed: 1, .. }), "{e:?}");
    assert!(store.local(&imgs[0].reference).is_none(), "the old unused image is removed");
    assert!(store.local(&imgs[1].reference).is_some(), "the image in use stays");
    assert!(store.local(&young.reference).is_some(), "the young image stays");
}

/// Everything about a tree that unpacking must reproduce, path by path.
fn describe(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let mut buf = [0u8; 4];
            let opaque = rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut buf).is_ok();
            let what = if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                format!("dir opaque={opaque}")
            } else if ft.is_char_device() {
                // A whiteout's own times are those of its creation.
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    format!("chr {} mode={:o}", m.rdev(), m.mode()),
                );
                continue;
            } else {
                format!(
                    "file {} nlink={}",
                    kinetic_image::digest::sha256(&std::fs::read(&p).unwrap()),
                    m.nlink()
                )
            };
            out.insert(
                rel,
                format!("{what} mode={:o} {}:{} mtime={}", m.mode(), m.uid(), m.gid(), m.mtime()),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test]
async fn convert_to_zstd_and_uncompressed_keeps_config_diff_ids_and_unpacked_files() {
    let reg = Registry::start().await.unwrap();
    let mut lower = TarBuilder::new();
    lower.dir("etc", 0o755).unwrap();
    lower.file("etc/conf", b"lower", 0o640).unwrap();
    lower.file("etc/gone", b"x", 0o644).unwrap();
    lower.dir("bin", 0o755).unwrap();
    lower.file_owned("bin/tool", &noise(50_000, 3), 0o4755, 0, 0).unwrap();
    lower.hardlink("bin/tool2", "bin/tool").unwrap();
    lower.symlink("bin/sh", "tool").unwrap();
    lower.dir("cache", 0o755).unwrap();
    lower.file("cache/old", b"old", 0o644).unwrap();
    let mut upper = TarBuilder::new();
    upper.dir("etc", 0o755).unwrap();
    upper.whiteout("etc/gone").unwrap();
    upper.dir("cache", 0o755).unwrap();
    upper.opaque("cache").unwrap();
    upper.file("cache/new", b"new", 0o644).unwrap();
    upper.dir("lib", 0o755).unwrap();
    upper.file_owned("lib/libz.so.1", b"elf", 0o755, 1000, 1000).unwrap();
    upper.hardlink("lib/libz.so.1.2", "lib/libz.so.1").unwrap();
    // A symlink in the upper layer to a file of the lower one.
    upper.symlink("lib/conf", "../etc/conf").unwrap();
    let layers: Vec<Layer> = [lower, upper]
        .into_iter()
        .map(|t| Layer::from_tar(&t.finish().unwrap(), Compression::Gzip, Format::Docker).unwrap())
        .collect();
    let src = format!("{}/conv:gzip", reg.addr());
    images::push(
        &src,
        ImageSpec { layers: layers.clone(), format: Format::Docker, ..ImageSpec::default() },
    )
    .await
    .unwrap();
    let opts = PullOptions::default();
    let original = kinetic_image::convert::inspect(&src, &opts).await.unwrap();
    let mut trees = Vec::new();
    for (tag, to, media_type) in [
        ("gzip", Compression::Gzip, kinetic_image::manifest::DOCKER_LAYER_GZIP),
        ("zstd", Compression::Zstd, kinetic_image::manifest::OCI_LAYER_ZSTD),
        ("none", Compression::None, kinetic_image::manifest::OCI_LAYER_TAR),
    ] {
        let dst = format!("{}/conv:{tag}", reg.addr());
        if to != Compression::Gzip {
            let c = kinetic_image::convert::convert(&src, &dst, to, &opts).await.unwrap();
            assert_eq!(c.config_digest, original.manifest.config.digest);
            for (l, orig) in c.layers.iter().zip(&layers) {
                assert_eq!(l.diff_id, orig.diff_id);
                assert_ne!(l.to.digest, orig.digest);
            }
        }
        let converted = kinetic_image::convert::inspect(&dst, &opts).await.unwrap();
        assert_eq!(converted.config, original.config, "{tag}: the config is kept byte for byte");
        assert!(converted.manifest.layers.iter().all(|l| l.media_type == media_type), "{tag}");
        let (dir, store) = store();
        let img = pull(&store, &dst).await.unwrap_or_else(|e| panic!("{tag}: {}", chain(&e)));
        trees.push((tag, img.layers.iter().map(|l| describe(l)).collect::<Vec<_>>(), dir));
    }
    let (_, gzip, _) = &trees[0];
    assert!(gzip[0]["bin/tool"].contains("nlink=2"), "{:?}", gzip[0]);
    assert!(gzip[1]["etc/gone"].starts_with("chr 0"), "{:?}", gzip[1]);
    assert!(gzip[1]["cache"].contains("opaque=true"), "{:?}", gzip[1]);
    assert!(gzip[1]["lib/conf"].starts_with("link ../etc/conf"), "{:?}", gzip[1]);
    for (tag, tree, _) in &trees[1..] {
        assert_eq!(tree, gzip, "{tag} unpacks to the same files as gzip");
    }
}

#[test]
fn an_overlay_upper_directory_becomes_a_layer_with_oci_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("etc/opaque")).unwrap();
    std::fs::write(d.join("etc/opaque/kept"), b"k").unwrap();
    rustix::fs::lsetxattr(
        d.join("etc/opaque"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("etc/deleted"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::write(d.join("etc/a"), b"a").unwrap();
    std::fs::hard_link(d.join("etc/a"), d.join("etc/b")).unwrap();
    std::os::unix::fs::symlink("a", d.join("etc/c")).unwrap();
    let tar = kinetic_image::push::tar_layer_dir(d).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        // Every header is complete: the whiteouts made here carry owners and times too.
        let h = e.header();
        assert!(h.uid().is_ok() && h.gid().is_ok() && h.mtime().is_ok() && h.mode().is_ok());
        names.push(format!("{} {:?}", e.path().unwrap().display(), h.entry_type()));
    }
    assert_eq!(
        names,
        [
            "etc Directory",
            "etc/a Regular",
            "etc/b Link",
            "etc/c Symlink",
            "etc/.wh.deleted Regular",
            "etc/opaque Directory",
            "etc/opaque/.wh..wh..opq Regular",
            "etc/opaque/kept Regular",
        ]
    );
}
