//! What the server counts about itself, for `/metrics`.

use std::sync::atomic::AtomicU64;

/// The server's counters; one per [`crate::rest::Api`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// How often the garbage collector fell behind the event stream and rebuilt its index.
    pub gc_rebuilds: AtomicU64,
}
