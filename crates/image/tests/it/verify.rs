use kinetic_image::Error;
use kinetic_image::push::{Compression, Format, Pusher};
use kinetic_image::{PullOptions, Store};
use kinetic_testkit::images;
use kinetic_testkit::registry::Registry;

use crate::{chain, image_of, pull, read, store, tmp_entries};

/// Flips one byte of a blob in the registry's storage (same length, so only the digest can
/// tell), and returns the original bytes.
fn corrupt(reg: &Registry, digest: &str, offset: usize) -> Vec<u8> {
    let path = reg.blob_data_path(digest);
    let original = std::fs::read(&path).unwrap();
    let mut bad = original.clone();
    bad[offset.min(original.len() / 2)] ^= 0x55;
    std::fs::write(&path, &bad).unwrap();
    original
}

/// Nothing of a failed pull is usable: no layer directory, no temp directory, no reference.
fn assert_nothing_usable(store: &Store, reference: &str, layer_digest: &str) {
    assert!(!store.layer_dir(layer_digest).exists(), "no layer directory for {layer_digest}");
    assert!(tmp_entries(store).is_empty(), "temp dirs left: {:?}", tmp_entries(store));
    assert!(store.local(reference).is_none());
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_layer_that_does_not_match_its_digest_is_rejected_and_leaves_nothing() {
    let reg = Registry::start().await.unwrap();
    let (_dir, store) = store();
    for (tag, compression) in [("none", Compression::None), ("gzip", Compression::Gzip)] {
        let spec = image_of(compression, Format::Oci, |t| {
            t.file("data", &[b'a'; 8192], 0o644).unwrap();
        });
        let layer = spec.layers[0].digest.clone();
        let reference = format!("{}/corrupt:{tag}", reg.addr());
        images::push(&reference, spec).await.unwrap();
        // Inside the file's content (uncompressed) or the deflate stream (gzip): the tar stays
        // well-formed for the uncompressed one, so only the digest check can catch it.
        let original = corrupt(&reg, &layer, 700);
        let e = pull(&store, &reference).await.unwrap_err();
        let Error::Pull { source, .. } = &e else { panic!("{e:?}") };
        assert!(
            matches!(&**source, Error::DigestMismatch { expected, .. } if *expected == layer),
            "{tag}: {}",
            chain(&e)
        );
        assert!(!e.is_transient(), "a digest mismatch is not retried");
        assert!(chain(&e).contains("does not match its digest"), "{}", chain(&e));
        assert_nothing_usable(&store, &reference, &layer);

        // Once the registry serves the right bytes, the same store pulls it fine.
        std::fs::write(reg.blob_data_path(&layer), original).unwrap();
        let img = pull(&store, &reference).await.unwrap();
        assert_eq!(read(&img.layers[0].join("data")).len(), 8192);
        store_reset(&store);
    }
}

/// Forgets nothing but lets the next case start from an empty list: removes refs.json.
fn store_reset(store: &Store) {
    std::fs::remove_file(store.root().join("refs.json")).unwrap();
}

#[tokio::test]
async fn a_config_that_does_not_match_its_digest_is_rejected() {
    let reg = Registry::start().await.unwrap();
    let reference = format!("{}/badconfig:v1", reg.addr());
    let spec = image_of(Compression::Gzip, Format::Docker, |t| {
        t.file("f", b"x", 0o644).unwrap();
    });
    let layer = spec.layers[0].digest.clone();
    let pusher = Pusher::new(&reference, &PullOptions::default()).unwrap();
    pusher.push_image(&spec).await.unwrap();
    // Find the config digest through the registry's manifest.
    let (_dir, store) = store();
    let img = pull(&store, &reference).await.unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.blob_data_path(&img.digest)).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    corrupt(&reg, &config, 5);
    let (_dir2, fresh) = crate::store();
    let e = pull(&fresh, &reference).await.unwrap_err();
    assert!(
        chain(&e).contains(&format!("blob {config} does not match its digest")),
        "{}",
        chain(&e)
    );
    assert!(!fresh.layer_dir(&layer).exists(), "no layer is fetched for an unverified config");
}

#[tokio::test]
async fn a_layer_writing_through_a_symlink_out_of_its_directory_is_refused() {
    let reg = Registry::start().await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_owned();
    let spec = image_of(Compression::Gzip, Format::Oci, |t| {
        t.symlink("evil", &target).unwrap();
        t.file("evil/pwned", b"x", 0o644).unwrap();
    });
    let layer = spec.layers[0].digest.clone();
    let reference = format!("{}/evil:v1", reg.addr());
    images::push(&reference, spec).await.unwrap();
    let (_dir, store) = store();
    let e = pull(&store, &reference).await.unwrap_err();
    let msg = chain(&e);
    assert!(msg.contains(&format!("unpacking layer {layer}")), "{msg}");
    assert!(!outside.path().join("pwned").exists());
    assert_nothing_usable(&store, &reference, &layer);
}
