//! Container images for the node agent: pull from an OCI distribution registry into a
//! content-addressed store on the node, with every layer unpacked once into its own directory,
//! ready to be an overlayfs `lowerdir`.
//!
//! - [`Store`] is the store (`<node data dir>/images`). [`Store::pull`] resolves a reference
//!   (an image index picks linux/amd64) and fetches the missing layers concurrently (at most
//!   [`Tuning::layer_concurrency`] at once per store). A blob of at least [`Tuning::range_min`]
//!   bytes is asked for with a `Range` header: a 206 answer means the registry does ranges and
//!   the rest comes as parallel Range requests ([`Tuning::range_parallel`] ×
//!   [`Tuning::range_chunk`]), fed to the unpacker in blob order; a 200 answer is the whole
//!   blob, streamed as it is. The sha256 of every blob is computed while it streams. Each layer
//!   is decompressed while it downloads (no second pass) on a decoder thread of its own — gzip
//!   with flate2 on zlib-rs, zstd with libzstd — which hands 1 MiB chunks to the thread writing
//!   the files, so one layer keeps two cores busy and several layers unpack in parallel into
//!   their own directories. A layer is written to `tmp/`, `syncfs`ed, and renamed into
//!   `layers/` only after its digest matched. Concurrent pulls of one layer share one download:
//!   a lock per digest in the process and an `flock` per digest across processes (the CLI
//!   beside the node agent). [`Progress`] receives the bytes as they arrive.
//!   [`Store::local`] answers from memory for `imagePullPolicy: IfNotPresent`/`Never`.
//! - [`Store::gc`] removes unused images least recently pulled first when the disk is above
//!   kubelet's high watermark, down to the low one ([`GcPolicy`]: 85 % / 80 %), never touching
//!   images pulled less than `min_age` (2 minutes) ago; the caller names the images in use.
//! - [`convert`] re-publishes an image with zstd, gzip or uncompressed layers, keeping the
//!   config (and so the `diff_ids`) byte for byte; it also holds the codecs the benchmark times.
//! - [`reference`](mod@reference) parses and normalizes docker references.
//! - [`Credential`] and [`parse_docker_config_json`] carry `imagePullSecrets`; the client does
//!   anonymous, Basic and bearer-token authentication.
//! - [`push`] builds and uploads images (test fixtures, conversion, the benchmark's images,
//!   including layers from overlayfs upper directories).
//!
//! Store layout (all under the root given to [`Store::open`]):
//!
//! ```text
//! refs.json                     reference -> manifest digest, config, layers (atomic rewrite)
//! refs.lock                     flock(2) held while refs.json is rewritten (CLI and agent share it)
//! blobs/sha256/<hex>            manifests, indexes and image configs, verified
//! layers/sha256/<hex>/          an unpacked layer (overlayfs whiteouts), named by blob digest
//! layers/sha256/<hex>.json      its sizes and media type
//! locks/<hex>.lock              flock(2) held while that layer is being fetched
//! tmp/<pid>-<nonce>-<n>/        layers being unpacked; removed on failure and, for dead
//!                               processes, on open
//! ```
//!
//! Crash safety: a pull that dies (SIGKILL, power loss) leaves at most a directory in `tmp/`,
//! which the next [`Store::open`] removes; the next pull starts that layer again from its first
//! byte (parts of a ranged download that failed are retried on their own within one pull).
//!
//! It does not: run containers or mount anything (the node agent assembles the overlay), fetch
//! lazily, resume a layer across processes, decode one gzip stream on several cores (gzip is
//! serial; zstd or uncompressed layers are the remedy, see [`convert`]), or verify a layer's
//! uncompressed `diff_id` on pull (the compressed digest from the manifest already pins the
//! content; [`convert`] checks it).

pub mod auth;
mod client;
pub mod convert;
pub mod digest;
pub mod manifest;
pub mod push;
pub mod reference;
mod store;
mod unpack;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use auth::{Credential, parse_docker_config_json};
pub use store::{DiskUsage, GcPolicy, GcReport, ImageSummary, Store, Tuning};

/// Errors of pulls, pushes and the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: &'static str },
    #[error("invalid credentials for registry {registry}: {reason}")]
    InvalidCredential { registry: String, reason: &'static str },
    #[error("invalid URL {url:?}")]
    InvalidUrl { url: String },
    #[error("parsing {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{method} {url} failed")]
    Http {
        method: String,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading the response of {url}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{method} {url}: registry answered {status}{detail}")]
    Status { method: String, url: String, status: u16, detail: String },
    #[error("{what} not found in {repository}{detail}")]
    NotFound { what: String, repository: String, detail: String },
    #[error("registry {registry} denied access to {repository}: {detail}")]
    Unauthorized { registry: String, repository: String, detail: String },
    #[error("too many redirects, last to {url}")]
    TooManyRedirects { url: String },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "blob {expected} does not match its digest: the registry sent content with digest {actual}"
    )]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("unsupported media type {media_type:?} for {digest}")]
    UnsupportedMediaType { media_type: String, digest: String },
    #[error("{reference} has no linux/amd64 image (the index lists {available})")]
    NoMatchingPlatform { reference: String, available: String },
    #[error("unpacking layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a store task for {what} panicked or was cancelled")]
    Task { what: String },
    #[error("pulling {reference}")]
    Pull {
        reference: String,
        #[source]
        source: Box<Error>,
    },
    #[error("invalid image GC policy: high {high}% and low {low}% (want low <= high <= 100)")]
    InvalidGcPolicy { high: u8, low: u8 },
    #[error(
        "image GC freed {freed} bytes of the {wanted} asked for: only {removed} unused images could be removed"
    )]
    GcShortfall { wanted: u64, freed: u64, removed: usize },
    #[error("pushing {reference}")]
    Push {
        reference: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying the same request may succeed (connection errors, cut-off bodies, 5xx,
    /// 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { .. } | Error::Body { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            Error::Pull { source, .. } | Error::Push { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// Whether the registry said the image (tag, digest, repository) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Pull { source, .. } | Error::Push { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// Whether the registry refused the credentials or anonymous access.
    pub fn is_unauthorized(&self) -> bool {
        match self {
            Error::Unauthorized { .. } => true,
            Error::Pull { source, .. } | Error::Push { source, .. } => source.is_unauthorized(),
            _ => false,
        }
    }
}

/// Options of one pull.
#[derive(Default, Clone, Debug)]
pub struct PullOptions {
    /// Credentials by registry (from `imagePullSecrets`); the first matching one is used.
    pub credentials: Vec<Credential>,
    /// Registries (`host` or `host:port`) reached over plain http besides loopback ones.
    pub insecure_registries: Vec<String>,
}

/// Receives download progress. Called from the pulling tasks; keep it cheap.
pub trait Progress: Send + Sync {
    /// A layer of `bytes` compressed bytes is about to be downloaded.
    fn layer_total(&self, digest: &str, bytes: u64);
    /// `bytes` more compressed bytes arrived (any layer).
    fn advanced(&self, bytes: u64);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer_total(&self, _digest: &str, _bytes: u64) {}
    fn advanced(&self, _bytes: u64) {}
}

/// What a container needs from the image configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image says.
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ImageConfig {
    pub(crate) fn from_file(cfg: &manifest::ConfigFile) -> ImageConfig {
        let c = cfg.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            labels: c.labels.unwrap_or_default(),
        }
    }
}

/// An image in the store, ready to run.
#[derive(Clone, Debug)]
pub struct Image {
    /// The normalized reference asked for: `127.0.0.1:5000/busybox:v1`,
    /// `docker.io/library/nginx:latest`.
    pub reference: String,
    /// The manifest digest the reference resolved to (the index's digest for a multi-platform
    /// image, as docker and containerd report it).
    pub digest: String,
    /// What kubelet reports as `containerStatuses[].imageID`: `<registry>/<repository>@<digest>`.
    pub image_id: String,
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom layer first. overlayfs wants the top layer first in
    /// `lowerdir`, so reverse them there.
    pub layers: Vec<PathBuf>,
    /// Compressed bytes downloaded by this pull (layers and config); 0 when all was cached.
    pub downloaded_bytes: u64,
    /// True when nothing but the manifest had to be fetched.
    pub cache_hit: bool,
}
