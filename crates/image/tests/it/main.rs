//! Integration tests of `kinetic-image` against a real registry (Debian's docker-registry) on
//! 127.0.0.1, started per test by `kinetic_testkit::registry`. Tests that mount overlayfs or
//! create whiteout devices need root, as the node agent does.
#![allow(clippy::unwrap_used)]

mod auth;
mod crash;
mod engine;
mod layers;
mod pull;
mod verify;

use std::path::Path;

use kinetic_image::push::{Compression, Format, ImageSpec, Layer, TarBuilder};
use kinetic_image::{Image, NoProgress, PullOptions, Store};

/// A fresh store in a temporary directory.
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images")).unwrap();
    (dir, store)
}

pub async fn pull(store: &Store, reference: &str) -> kinetic_image::Result<Image> {
    store.pull(reference, &PullOptions::default(), &NoProgress).await
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A one-layer image whose layer is built by `build`.
pub fn image_of(
    compression: Compression,
    format: Format,
    build: impl FnOnce(&mut TarBuilder),
) -> ImageSpec {
    let mut t = TarBuilder::new();
    build(&mut t);
    let layer = Layer::from_tar(&t.finish().unwrap(), compression, format).unwrap();
    ImageSpec { layers: vec![layer], format, ..ImageSpec::default() }
}

/// The full error chain, for asserting on messages.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Entries of the store's tmp directory (partial layers).
pub fn tmp_entries(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
