use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use kinetic_image::ImageConfig;
use kinetic_image::manifest::Platform;
use kinetic_image::push::{Compression, Format, Pusher};
use kinetic_image::{NoProgress, PullOptions, Store};
use kinetic_testkit::images;
use kinetic_testkit::registry::Registry;

use crate::{chain, image_of, pull, read, store, tmp_entries};

#[tokio::test]
async fn pulls_busybox_with_files_and_config() {
    let reg = Registry::start().await.unwrap();
    let reference =
        images::busybox(&reg, "busybox", "v1", &[("/www/version", "v1")]).await.unwrap();
    let (_dir, store) = store();
    let img = pull(&store, &reference).await.unwrap();
    assert_eq!(img.reference, reference);
    assert!(img.digest.starts_with("sha256:"));
    assert_eq!(img.image_id, format!("{}/busybox@{}", reg.addr(), img.digest));
    assert_eq!(img.config.cmd, ["sh"]);
    assert_eq!(img.config.env, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    assert_eq!(img.layers.len(), 2);
    assert!(!img.cache_hit);
    assert!(img.downloaded_bytes > 500_000, "{}", img.downloaded_bytes);
    let base = &img.layers[0];
    let bb = std::fs::metadata(base.join("bin/busybox")).unwrap();
    assert_eq!(bb.len(), std::fs::metadata("/bin/busybox").unwrap().len());
    assert_eq!(bb.permissions().mode() & 0o777, 0o755);
    for applet in ["sh", "httpd", "sleep", "nc", "wget", "kill"] {
        let link = std::fs::read_link(base.join("bin").join(applet)).unwrap();
        assert_eq!(link.to_str(), Some("busybox"), "{applet}");
    }
    assert!(read(&base.join("etc/passwd")).contains("nobody:x:65534:65534"));
    assert!(read(&base.join("etc/group")).contains("nobody:x:65534:"));
    assert!(read(&base.join("www/index.html")).contains("hello"));
    assert_eq!(std::fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(read(&img.layers[1].join("www/version")), "v1");
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));

    // A second pull resolves the tag again and finds everything cached.
    let again = pull(&store, &reference).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.downloaded_bytes, 0);
    assert_eq!(again.digest, img.digest);
    let local = store.local(&reference).unwrap();
    assert_eq!(local.layers, img.layers);
    assert_eq!(local.image_id, img.image_id);
    let pinned = format!("{}/busybox@{}", reg.addr(), img.digest);
    assert_eq!(store.local(&pinned).unwrap().digest, img.digest);
    assert!(store.local(&format!("{}/busybox:v2", reg.addr())).is_none());
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reference, reference);
    assert_eq!(list[0].layers, 2);
    assert!(list[0].size > 1_000_000);

    // v2 differs only in its top layer: the base layer is shared, not downloaded again.
    let v2 = images::busybox(&reg, "busybox", "v2", &[("/www/version", "v2")]).await.unwrap();
    let img2 = pull(&store, &v2).await.unwrap();
    assert_ne!(img2.digest, img.digest);
    assert_eq!(img2.layers[0], img.layers[0]);
    assert!(!img2.cache_hit);
    assert!(img2.downloaded_bytes < 10_000, "{}", img2.downloaded_bytes);
    assert_eq!(read(&img2.layers[1].join("www/version")), "v2");
    // Pulling by digest works and reports the pinned reference.
    let by_digest = pull(&store, &pinned).await.unwrap();
    assert_eq!(by_digest.reference, pinned);
    assert!(by_digest.cache_hit);
}

#[tokio::test]
async fn gzip_zstd_and_uncompressed_layers_in_oci_and_docker_images() {
    let reg = Registry::start().await.unwrap();
    let (_dir, store) = store();
    let cases = [
        ("oci-gzip", Compression::Gzip, Format::Oci),
        ("oci-zstd", Compression::Zstd, Format::Oci),
        ("oci-none", Compression::None, Format::Oci),
        ("docker-gzip", Compression::Gzip, Format::Docker),
        ("docker-none", Compression::None, Format::Docker),
    ];
    for (tag, compression, format) in cases {
        let mut spec = image_of(compression, format, |t| {
            t.dir("etc", 0o755).unwrap();
            t.file("etc/which", tag.as_bytes(), 0o640).unwrap();
            t.file_owned("etc/owned", b"x", 0o600, 1000, 2000).unwrap();
        });
        spec.config = ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--flag".into()],
            env: vec!["A=1".into()],
            working_dir: Some("/srv".into()),
            user: Some("65534:65534".into()),
            ..ImageConfig::default()
        };
        let reference = format!("{}/formats:{tag}", reg.addr());
        images::push(&reference, spec.clone()).await.unwrap();
        let img = pull(&store, &reference).await.unwrap_or_else(|e| panic!("{tag}: {}", chain(&e)));
        assert_eq!(read(&img.layers[0].join("etc/which")), tag);
        let m = std::fs::metadata(img.layers[0].join("etc/which")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640, "{tag}");
        assert_eq!(m.mtime(), 1_700_000_000, "{tag}");
        let o = std::fs::metadata(img.layers[0].join("etc/owned")).unwrap();
        assert_eq!((o.uid(), o.gid()), (1000, 2000), "{tag}");
        assert_eq!(img.config, spec.config, "{tag}");
        assert_eq!(
            img.layers[0].file_name().unwrap().to_str().unwrap(),
            &spec.layers[0].digest[7..]
        );
    }
    assert_eq!(store.list().unwrap().len(), cases.len());
}

#[tokio::test]
async fn an_index_resolves_to_linux_amd64() {
    let reg = Registry::start().await.unwrap();
    let reference = format!("{}/multi:latest", reg.addr());
    let pusher = Pusher::new(&reference, &PullOptions::default()).unwrap();
    let mut pushed = Vec::new();
    for (arch, variant) in [("arm64", Some("v8")), ("amd64", None), ("s390x", None)] {
        let mut spec = image_of(Compression::Gzip, Format::Oci, |t| {
            t.file("arch", arch.as_bytes(), 0o644).unwrap();
        });
        spec.architecture = arch.to_owned();
        // Each platform manifest is pushed by digest only, as buildx does.
        let p = Pusher::new(&format!("{}/multi", reg.addr()), &PullOptions::default()).unwrap();
        let m = p.push_image(&spec).await.unwrap();
        pushed.push((
            m,
            Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            },
        ));
    }
    let index = pusher.push_index(&pushed, Format::Oci).await.unwrap();
    let (_dir, store) = store();
    let img = pull(&store, &reference).await.unwrap();
    assert_eq!(read(&img.layers[0].join("arch")), "amd64");
    // The image is known by the index digest (what kubelet reports) ...
    assert_eq!(img.digest, index.digest);
    assert_eq!(img.image_id, format!("{}/multi@{}", reg.addr(), index.digest));
    // ... and can be found by either digest.
    assert!(store.local(&format!("{}/multi@{}", reg.addr(), index.digest)).is_some());
    assert!(store.local(&format!("{}/multi@{}", reg.addr(), pushed[1].0.digest)).is_some());

    // A Docker manifest list works the same way.
    let list_ref = format!("{}/multi:list", reg.addr());
    let list = Pusher::new(&list_ref, &PullOptions::default())
        .unwrap()
        .push_index(&pushed, Format::Docker)
        .await
        .unwrap();
    let img = pull(&store, &list_ref).await.unwrap();
    assert_eq!(img.digest, list.digest);
    assert!(img.cache_hit, "the amd64 layer was already there");

    // An index without linux/amd64 says what it has.
    let arm_only = format!("{}/multi:arm", reg.addr());
    Pusher::new(&arm_only, &PullOptions::default())
        .unwrap()
        .push_index(&pushed[..1], Format::Oci)
        .await
        .unwrap();
    let e = pull(&store, &arm_only).await.unwrap_err();
    let msg = chain(&e);
    assert!(msg.contains("no linux/amd64 image") && msg.contains("linux/arm64/v8"), "{msg}");
}

#[tokio::test]
async fn missing_tag_or_repository_is_a_clear_not_found() {
    let reg = Registry::start().await.unwrap();
    images::busybox(&reg, "busybox", "v1", &[]).await.unwrap();
    let (_dir, store) = store();
    let e = pull(&store, &format!("{}/busybox:nope", reg.addr())).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let msg = chain(&e);
    assert!(msg.starts_with(&format!("pulling {}/busybox:nope", reg.addr())), "{msg}");
    assert!(msg.contains("manifest nope not found"), "{msg}");
    let e = pull(&store, &format!("{}/nothing/here:v1", reg.addr())).await.unwrap_err();
    assert!(e.is_not_found(), "{}", chain(&e));
    let e = pull(&store, "Bad:Reference").await.unwrap_err();
    assert!(chain(&e).contains("invalid image reference"), "{}", chain(&e));
    // Nothing listens on port 1: a connection error after the bounded retries.
    let e = pull(&store, "127.0.0.1:1/x:y").await.unwrap_err();
    assert!(e.is_transient(), "{}", chain(&e));
    assert!(chain(&e).contains("http://127.0.0.1:1/v2/x/manifests/y"), "{}", chain(&e));
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_pulls_share_layers_and_all_succeed() {
    let reg = Registry::start().await.unwrap();
    let reference = images::busybox(&reg, "busybox", "c", &[("/x", "y")]).await.unwrap();
    let (dir, store) = store();
    // Several pulls through one store (the node agent's pods) and through a second store on
    // the same directory (the CLI in another process) at once.
    let other = Store::open(dir.path().join("images")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = if i % 3 == 2 { other.clone() } else { store.clone() };
        let r = reference.clone();
        tasks.push(tokio::spawn(
            async move { s.pull(&r, &PullOptions::default(), &NoProgress).await },
        ));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    let first = &results[0];
    for r in &results {
        assert_eq!(r.digest, first.digest);
        assert_eq!(r.layers, first.layers);
    }
    // Each layer downloads once across both stores (a lock per digest across processes);
    // which store wins the race varies, so count all six pulls together. Only the tiny config
    // blob may be fetched by more than one pull, so a layer downloaded twice (the busybox
    // layer is 1 MB) would push the total past twice the image. `engine.rs` counts the
    // registry's requests exactly.
    let image_size = results.iter().map(|r| r.downloaded_bytes).max().unwrap();
    let total: u64 = results.iter().map(|r| r.downloaded_bytes).sum();
    assert!(image_size > 1_000_000, "{image_size}");
    assert!(total < 2 * image_size, "a layer was downloaded twice: {total} vs {image_size}");
    assert!(read(&first.layers[1].join("x")) == "y");
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
    assert_eq!(store.list().unwrap().len(), 1);
}

#[tokio::test]
async fn a_reopened_store_finds_images_and_drops_a_crashed_partial_layer() {
    let reg = Registry::start().await.unwrap();
    let reference = images::busybox(&reg, "busybox", "r", &[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let img = {
        let store = Store::open(&root).unwrap();
        pull(&store, &reference).await.unwrap()
    };
    // A process died half-way through unpacking (its pid no longer exists).
    let partial = root.join("tmp/999999999-12345-0");
    std::fs::create_dir_all(partial.join("bin")).unwrap();
    std::fs::write(partial.join("bin/busybox"), b"trunc").unwrap();

    let store = Store::open(&root).unwrap();
    assert!(!partial.exists(), "the crashed process's partial layer is removed on open");
    let local = store.local(&reference).expect("the image survives a restart");
    assert_eq!(local.digest, img.digest);
    assert_eq!(local.layers, img.layers);
    assert!(local.cache_hit);
    assert!(local.layers.iter().all(|l| l.join("bin/busybox").exists()));
    assert_eq!(store.list().unwrap()[0].reference, reference);

    // A pull by another store on the same directory (the CLI) is seen by `local` here.
    let v2 = images::busybox(&reg, "busybox", "r2", &[("/a", "b")]).await.unwrap();
    let cli = Store::open(&root).unwrap();
    pull(&cli, &v2).await.unwrap();
    assert!(store.local(&v2).is_some());
}
