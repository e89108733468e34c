//! Integration tests of `kinetic-image` against a real registry (Debian's docker-registry) on
//! 127.0.0.1, started per test by `kinetic_testkit::registry`.
#![allow(clippy::unwrap_used)]

mod pull;

use std::path::Path;

/// A fresh store in a temporary directory.
pub fn store() -> (tempfile::TempDir, kinetic_image::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = kinetic_image::Store::open(dir.path().join("images")).unwrap();
    (dir, store)
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}
