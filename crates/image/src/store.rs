//! The content store and the pull pipeline.

mod gc;

pub use gc::{DiskUsage, GcPolicy, GcReport};

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::client::{Session, Transport};
use crate::digest::{self, hex_part};
use crate::manifest::{self, Compression, ConfigFile, Descriptor, Index, Manifest, Probe};
use crate::reference::{self, Reference};
use crate::unpack::{self, ChannelReader};
use crate::{Error, Image, ImageConfig, Progress, PullOptions, Result};

/// Attempts to download one layer when the connection breaks or the registry fails (5xx).
const LAYER_ATTEMPTS: u32 = 3;
/// How often a layer being unpacked is written back to disk ahead of its final syncfs.
const EARLY_SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// Largest image config read into memory.
const MAX_CONFIG: u64 = 8 << 20;
const INDEX_VERSION: u32 = 1;

/// The image store of a node. Cheap to clone; all clones share one index and connection pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    tuning: Tuning,
    transport: Transport,
    /// Bounds the layers downloaded and unpacked at once across all pulls of this store.
    layer_slots: tokio::sync::Semaphore,
    index: RwLock<Loaded>,
    /// One lock per layer digest being fetched, so concurrent pulls share the work.
    layer_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// How a store fetches and publishes layers. The defaults suit a node; tests make ranges small
/// to exercise them.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Blobs of at least this many bytes are fetched as parallel HTTP Range requests when the
    /// registry answers a range with 206.
    pub range_min: u64,
    /// Bytes per Range request.
    pub range_chunk: u64,
    /// Range requests in flight per blob (1 turns ranges off).
    pub range_parallel: usize,
    /// Layers fetched and unpacked at once, over all pulls of the store (containerd's
    /// `max_concurrent_downloads` is 3).
    pub layer_concurrency: usize,
    /// `syncfs(2)` a layer's file system before its directory is renamed into place, so a power
    /// loss cannot leave a published layer with missing data.
    pub sync_layers: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            range_min: 16 << 20,
            range_chunk: 8 << 20,
            range_parallel: 4,
            layer_concurrency: 4,
            sync_layers: true,
        }
    }
}

/// Numbers temporary files and directories; process-wide, so two stores on one directory in
/// one process (tests, the CLI inside `kinetic up`) never pick the same name.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// `refs.json` in memory, with what it was loaded from to notice other processes' writes.
#[derive(Default)]
struct Loaded {
    /// Normalized reference (and `name@digest` aliases) to the entry.
    by_ref: HashMap<String, Arc<Entry>>,
    /// Entries by their primary reference, in file order.
    entries: Vec<Arc<Entry>>,
    stamp: Option<(SystemTime, u64)>,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    reference: String,
    /// `registry/repository`.
    name: String,
    digest: String,
    /// The platform manifest's digest when `digest` is an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest_digest: Option<String>,
    config_digest: String,
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    pulled_at: jiff::Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LayerRecord {
    digest: String,
    media_type: String,
    /// Compressed size.
    size: u64,
    unpacked_size: u64,
}

/// One image in the store, for `kinetic image ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub reference: String,
    pub digest: String,
    /// Bytes of the files of its unpacked layers (shared layers count in every image).
    pub size: u64,
    pub layers: usize,
    pub pulled_at: jiff::Timestamp,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    media_type: String,
    size: u64,
    unpacked_size: u64,
}

/// Distinguishes this process's temporary directories from a dead one's with the same pid.
fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        // Nanoseconds are unique enough between two processes that got the same pid.
        (now.as_nanos() as u64) & 0xffff_ffff_ffff
    })
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

impl Store {
    /// Opens (creating as needed) the store at `root` and loads its index. Removes temporary
    /// directories left by processes that died mid-unpack.
    ///
    /// # Errors
    /// The directories cannot be created or `refs.json` is unreadable or corrupt.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Store::open_with(root, Tuning::default())
    }

    /// [`Store::open`] with non-default [`Tuning`].
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(root: impl Into<PathBuf>, tuning: Tuning) -> Result<Store> {
        let root = root.into();
        for d in ["blobs/sha256", "layers/sha256", "locks", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        let store = Store {
            inner: Arc::new(Inner {
                root,
                layer_slots: tokio::sync::Semaphore::new(tuning.layer_concurrency.max(1)),
                tuning,
                transport: Transport::default(),
                index: RwLock::new(Loaded::default()),
                layer_locks: Mutex::new(HashMap::new()),
            }),
        };
        store.clean_tmp()?;
        store.reload()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The directory a layer is unpacked into.
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.inner.root.join("layers/sha256").join(hex_part(digest))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(hex_part(digest))
    }

    fn refs_path(&self) -> PathBuf {
        self.inner.root.join("refs.json")
    }

    /// Removes `tmp/<pid>-<nonce>-<n>` directories whose process is gone (or is this process
    /// with another nonce: a previous incarnation that had our pid).
    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.inner.root.join("tmp");
        let me = std::process::id();
        let nonce = process_nonce();
        let rd = std::fs::read_dir(&tmp).map_err(io_err("listing", &tmp))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let mut parts = name.split('-');
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            let their_nonce = parts.next().and_then(|p| p.parse::<u64>().ok());
            let stale = match (pid, their_nonce) {
                (Some(pid), Some(n)) if pid == me => n != nonce,
                (Some(pid), Some(_)) => !Path::new(&format!("/proc/{pid}")).exists(),
                _ => true,
            };
            if stale {
                let p = e.path();
                tracing::info!(path = %p.display(), "removing a partial layer left by a dead process");
                remove_path(&p).map_err(io_err("removing", &p))?;
            }
        }
        Ok(())
    }

    /// Re-reads `refs.json` if it changed on disk since it was last loaded.
    fn reload(&self) -> Result<bool> {
        let path = self.refs_path();
        let stamp = match std::fs::metadata(&path) {
            Ok(m) => Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Io { op: "reading", path, source: e }),
        };
        if self.read_index().stamp == stamp && stamp.is_some() {
            return Ok(false);
        }
        let file = read_index_file(&path)?;
        let loaded = Loaded::from_file(file, stamp);
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(true)
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.inner.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The image already in the store for `reference`, without network access. A reference
    /// with a digest matches any stored image of that repository with that manifest digest.
    ///
    /// Answers from memory; only on a miss does it check whether another process (the CLI)
    /// rewrote `refs.json` since, and reload it.
    pub fn local(&self, reference: &str) -> Option<Image> {
        let r = Reference::parse(reference).ok()?;
        let key = lookup_key(&r);
        if let Some(e) = self.read_index().by_ref.get(&key).cloned() {
            return Some(self.image_of(&r, &e));
        }
        match self.reload() {
            Ok(true) => {
                let e = self.read_index().by_ref.get(&key).cloned()?;
                Some(self.image_of(&r, &e))
            }
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reloading the image index");
                None
            }
        }
    }

    fn image_of(&self, r: &Reference, e: &Entry) -> Image {
        Image {
            reference: r.to_string(),
            digest: e.digest.clone(),
            image_id: format!("{}@{}", e.name, e.digest),
            config: e.config.clone(),
            layers: e.layers.iter().map(|l| self.layer_dir(&l.digest)).collect(),
            downloaded_bytes: 0,
            cache_hit: true,
        }
    }

    /// Every reference in the store, sorted.
    ///
    /// # Errors
    /// `refs.json` changed on disk and does not load.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        self.reload()?;
        let idx = self.read_index();
        let mut out: Vec<ImageSummary> = idx
            .entries
            .iter()
            .map(|e| ImageSummary {
                reference: e.reference.clone(),
                digest: e.digest.clone(),
                size: e.layers.iter().map(|l| l.unpacked_size).sum(),
                layers: e.layers.len(),
                pulled_at: e.pulled_at,
            })
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Pulls `reference`: resolves it at the registry, fetches what the store lacks, verifies
    /// and unpacks it, and records the reference.
    ///
    /// # Guarantees
    /// A layer directory exists only complete and verified; a failed or cancelled pull leaves
    /// at most a temporary directory that the next [`Store::open`] removes. Concurrent pulls
    /// of one layer in this process download it once.
    ///
    /// # Errors
    /// [`Error::Pull`] around the cause: bad reference, registry unreachable (after retries),
    /// not found, unauthorized, digest mismatch, unsupported media type or platform, unpack
    /// or file system failure.
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Image> {
        let wrap = |e: Error| Error::Pull { reference: reference.to_owned(), source: Box::new(e) };
        let r = Reference::parse(reference).map_err(wrap)?;
        let span = tracing::info_span!("pull", reference = %r);
        let started = std::time::Instant::now();
        let image = self
            .pull_ref(&r, opts, progress)
            .instrument(span)
            .await
            .map_err(|e| Error::Pull { reference: r.to_string(), source: Box::new(e) })?;
        tracing::info!(
            reference = %r,
            digest = %image.digest,
            bytes = image.downloaded_bytes,
            cache_hit = image.cache_hit,
            ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(image)
    }

    async fn pull_ref(
        &self,
        r: &Reference,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Image> {
        let session = Session::new(
            &self.inner.transport,
            r,
            &opts.credentials,
            &opts.insecure_registries,
            false,
        );
        let (top_bytes, content_type) = session.get_manifest(r.manifest_ref()).await?;
        let top_digest = digest::sha256(&top_bytes);
        if let Some(want) = &r.digest
            && *want != top_digest
        {
            return Err(Error::DigestMismatch { expected: want.clone(), actual: top_digest });
        }
        let mut blobs = vec![(top_digest.clone(), top_bytes.clone())];
        let kind = manifest_kind(&top_bytes, content_type.as_deref(), &top_digest)?;
        let (manifest_bytes, manifest_digest) = if kind == Kind::Index {
            let index: Index = parse_json(&top_bytes, || format!("image index {top_digest}"))?;
            let d = pick_platform(&index, r)?;
            let (bytes, ct) = session.get_manifest(&d.digest).await?;
            let actual = digest::sha256(&bytes);
            if actual != d.digest {
                return Err(Error::DigestMismatch { expected: d.digest.clone(), actual });
            }
            if manifest_kind(&bytes, ct.as_deref(), &d.digest)? != Kind::Manifest {
                return Err(Error::UnsupportedMediaType {
                    media_type: "nested image index".to_owned(),
                    digest: d.digest.clone(),
                });
            }
            blobs.push((actual.clone(), bytes.clone()));
            (bytes, Some(actual))
        } else {
            (top_bytes, None)
        };
        let m: Manifest = parse_json(&manifest_bytes, || {
            format!("image manifest {}", manifest_digest.as_deref().unwrap_or(&top_digest))
        })?;
        match m.config.media_type.as_str() {
            manifest::OCI_CONFIG | manifest::DOCKER_CONFIG => {}
            other => {
                return Err(Error::UnsupportedMediaType {
                    media_type: other.to_owned(),
                    digest: m.config.digest.clone(),
                });
            }
        }
        for l in &m.layers {
            reference::validate_digest(&l.digest).map_err(|_| Error::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
            })?;
            if Compression::of_layer(&l.media_type).is_none() {
                return Err(Error::UnsupportedMediaType {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                });
            }
        }

        let (config_bytes, config_downloaded) = self.config_blob(&session, &m.config).await?;
        let config: ConfigFile =
            parse_json(&config_bytes, || format!("image config {}", m.config.digest))?;

        let results = futures::future::try_join_all(
            m.layers.iter().map(|l| self.ensure_layer(&session, l, progress)),
        )
        .await?;
        let downloaded: u64 = config_downloaded + results.iter().map(|x| x.1).sum::<u64>();

        // Manifests last: a blob in the store means what it references is there too.
        for (d, bytes) in &blobs {
            self.write_blob(d, bytes).await?;
        }
        let entry = Entry {
            reference: r.to_string(),
            name: r.name(),
            digest: top_digest,
            manifest_digest,
            config_digest: m.config.digest.clone(),
            config: ImageConfig::from_file(&config),
            layers: m
                .layers
                .iter()
                .zip(&results)
                .map(|(l, res)| LayerRecord {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    unpacked_size: res.0,
                })
                .collect(),
            pulled_at: jiff::Timestamp::now(),
        };
        let image = Image {
            downloaded_bytes: downloaded,
            cache_hit: downloaded == 0,
            ..self.image_of(r, &entry)
        };
        self.record(entry).await?;
        Ok(image)
    }

    /// The config blob from the store, or fetched and verified; with the bytes downloaded.
    async fn config_blob(&self, session: &Session, d: &Descriptor) -> Result<(Bytes, u64)> {
        reference::validate_digest(&d.digest).map_err(|_| Error::UnsupportedMediaType {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
        })?;
        let path = self.blob_path(&d.digest);
        let lock = self.layer_lock(&d.digest);
        let _guard = lock.lock().await;
        match tokio_read(&path).await {
            Ok(b) => return Ok((b, 0)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if d.size > MAX_CONFIG {
            return Err(Error::TooLarge {
                url: session.url(&format!("blobs/{}", d.digest)),
                limit: MAX_CONFIG,
            });
        }
        let f = session.get_blob(&d.digest).await?;
        let bytes = crate::client::read_limited(f.response, &f.url, MAX_CONFIG as usize).await?;
        let actual = digest::sha256(&bytes);
        if actual != d.digest {
            return Err(Error::DigestMismatch { expected: d.digest.clone(), actual });
        }
        if bytes.len() as u64 != d.size {
            return Err(Error::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: bytes.len() as u64,
            });
        }
        self.write_blob(&d.digest, &bytes).await?;
        let n = bytes.len() as u64;
        Ok((bytes, n))
    }

    /// Writes a verified blob atomically (temp file, rename).
    async fn write_blob(&self, digest: &str, bytes: &Bytes) -> Result<()> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.tmp_name();
        let bytes = bytes.clone();
        blocking("writing a blob", move || write_atomic(&tmp, &path, &bytes)).await
    }

    fn tmp_name(&self) -> PathBuf {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.inner.root.join("tmp").join(format!("{}-{}-{n}", std::process::id(), process_nonce()))
    }

    fn layer_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.layer_locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = locks.get(digest).and_then(Weak::upgrade) {
            return l;
        }
        locks.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(digest.to_owned(), Arc::downgrade(&l));
        l
    }

    /// Makes sure layer `d` is unpacked; returns (unpacked size, bytes downloaded).
    async fn ensure_layer(
        &self,
        session: &Session,
        d: &Descriptor,
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        let dir = self.layer_dir(&d.digest);
        if let Some(size) = self.cached_layer(&dir).await {
            return Ok((size, 0));
        }
        let lock = self.layer_lock(&d.digest);
        let _guard = lock.lock().await;
        // Another pull may have finished it while we waited.
        if let Some(size) = self.cached_layer(&dir).await {
            return Ok((size, 0));
        }
        // The same across processes (the CLI beside the node agent): an flock(2) per digest,
        // which the kernel releases when a holder dies, so a crashed puller blocks nobody.
        let _file_lock = self.file_lock(&d.digest).await?;
        if let Some(size) = self.cached_layer(&dir).await {
            return Ok((size, 0));
        }
        let _slot = self
            .inner
            .layer_slots
            .acquire()
            .await
            .map_err(|_| Error::Task { what: format!("waiting to fetch {}", d.digest) })?;
        progress.layer_total(&d.digest, d.size);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let span = tracing::info_span!("unpack", digest = %d.digest, attempt);
            match self.fetch_layer(session, d, progress).instrument(span).await {
                Ok(size) => return Ok((size, d.size)),
                Err(e) if e.is_transient() && attempt < LAYER_ATTEMPTS => {
                    tracing::warn!(digest = %d.digest, attempt, error = %crate_chain(&e), "layer download failed, retrying");
                    tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Holds `locks/<hex>.lock` exclusively until dropped.
    async fn file_lock(&self, digest: &str) -> Result<std::fs::File> {
        let path = self.inner.root.join("locks").join(format!("{}.lock", hex_part(digest)));
        blocking("locking a layer", move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err("opening", &path))?;
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| Error::Io { op: "locking", path: path.clone(), source: e.into() })?;
            Ok(f)
        })
        .await
    }

    /// The unpacked size of a layer already in the store.
    async fn cached_layer(&self, dir: &Path) -> Option<u64> {
        if !tokio_exists(dir).await {
            return None;
        }
        let meta = dir.with_extension("json");
        let size = tokio_read(&meta)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok())
            .map_or(0, |m| m.unpacked_size);
        Some(size)
    }

    /// Downloads and unpacks one layer through a temporary directory; returns its unpacked
    /// size.
    async fn fetch_layer(
        &self,
        session: &Session,
        d: &Descriptor,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let compression =
            Compression::of_layer(&d.media_type).ok_or_else(|| Error::UnsupportedMediaType {
                media_type: d.media_type.clone(),
                digest: d.digest.clone(),
            })?;
        let tmp = self.tmp_name();
        std::fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
        // Removes the temporary directory if this future is dropped half-way (cancellation).
        let cleanup = TmpGuard(Some(tmp.clone()));
        let unpacked = match self.fetch_into(session, d, progress, compression, &tmp).await {
            Ok(u) => u,
            Err(e) => {
                // Remove before reporting, so a failed pull leaves nothing behind.
                let t = tmp.clone();
                blocking("removing a partial layer", move || {
                    remove_path(&t).map_err(io_err("removing", &t))
                })
                .await?;
                cleanup.disarm();
                return Err(e);
            }
        };
        let meta = LayerMeta {
            media_type: d.media_type.clone(),
            size: d.size,
            unpacked_size: unpacked.unpacked_bytes,
        };
        let final_dir = self.layer_dir(&d.digest);
        let meta_tmp = self.tmp_name();
        let meta_path = final_dir.with_extension("json");
        let meta_bytes = serde_json::to_vec(&meta).unwrap_or_default();
        let sync = self.inner.tuning.sync_layers;
        blocking("publishing a layer", move || {
            if sync {
                // One syncfs for the whole layer is far cheaper than an fsync per file, and
                // makes every file durable before the rename makes the directory visible.
                let dir = std::fs::File::open(&tmp).map_err(io_err("opening", &tmp))?;
                rustix::fs::syncfs(&dir).map_err(|e| Error::Io {
                    op: "syncing",
                    path: tmp.clone(),
                    source: e.into(),
                })?;
            }
            write_atomic(&meta_tmp, &meta_path, &meta_bytes)?;
            let published = std::fs::rename(&tmp, &final_dir);
            if published.is_ok()
                && sync
                && let Some(parent) = final_dir.parent()
                && let Ok(d) = std::fs::File::open(parent)
            {
                let _ = d.sync_all();
            }
            match published {
                Ok(()) => Ok(()),
                // Another process published the same layer first; ours is redundant.
                Err(e)
                    if final_dir.is_dir()
                        && matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOTEMPTY.raw_os_error() || c == rustix::io::Errno::EXIST.raw_os_error()) =>
                {
                    remove_path(&tmp).map_err(io_err("removing", &tmp))
                }
                Err(e) => Err(Error::Io { op: "publishing", path: final_dir, source: e }),
            }
        })
        .await?;
        cleanup.disarm();
        tracing::debug!(digest = %d.digest, bytes = d.size, unpacked = unpacked.unpacked_bytes, entries = unpacked.entries, "layer unpacked");
        Ok(unpacked.unpacked_bytes)
    }

    /// Streams layer `d` into the unpacker writing `tmp`, and checks its digest and size.
    ///
    /// A blob of at least `range_min` bytes is asked for with a `Range` header first: a 206
    /// answer means the registry does ranges, and the rest of the blob comes as parallel Range
    /// requests, fed to the unpacker in order; a 200 answer is the whole blob, streamed as it is.
    async fn fetch_into(
        &self,
        session: &Session,
        d: &Descriptor,
        progress: &dyn Progress,
        compression: Compression,
        tmp: &Path,
    ) -> Result<unpack::Unpacked> {
        let tuning = &self.inner.tuning;
        let chunk = tuning.range_chunk.max(1);
        let ranged = tuning.range_parallel > 1 && d.size >= tuning.range_min && d.size > chunk;
        let first = if ranged {
            session.get_blob_range(&d.digest, 0, chunk - 1).await?
        } else {
            session.get_blob(&d.digest).await?
        };
        let partial = ranged && first.response.status() == http::StatusCode::PARTIAL_CONTENT;
        if ranged && !partial {
            tracing::debug!(digest = %d.digest, "the registry ignored the Range header: one stream");
        }
        let url = first.url.clone();
        // Parts of a ranged download are big; keep few of them queued.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(if partial { 2 } else { 32 });
        let dest = tmp.to_path_buf();
        let unpacker = tokio::task::spawn_blocking(move || {
            unpack::unpack_layer(ChannelReader::new(rx), compression, &dest)
        });
        // With durable layers, write back what the unpacker wrote so far every
        // EARLY_SYNC_INTERVAL, so the syncfs before publishing waits only for the tail rather
        // than for the whole layer (the kernel would otherwise start writing only after 30 s or
        // at 10 % of memory dirty). Stops when `_stop_syncing` is dropped.
        let _stop_syncing = self.inner.tuning.sync_layers.then(|| {
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            let dir = tmp.to_path_buf();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        () = tokio::time::sleep(EARLY_SYNC_INTERVAL) => {}
                    }
                    let d = dir.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Ok(f) = std::fs::File::open(&d) {
                            let _ = rustix::fs::syncfs(&f);
                        }
                    })
                    .await;
                }
            });
            stop
        });
        // The digest is computed here, over exactly the bytes received in blob order, and
        // covers the whole blob even when the unpacker gives up early: corrupt content is then
        // reported as a digest mismatch, which is what it is, rather than as whatever broke the
        // unpacker.
        let mut feed = Feed { hasher: digest::Hasher::new(), tx, open: true, d };
        let mut pump_error = None;
        if partial {
            let mut first = Some(first);
            let parts =
                (0..d.size).step_by(usize::try_from(chunk).unwrap_or(usize::MAX)).map(|start| {
                    let end = (start + chunk).min(d.size) - 1;
                    self.fetch_range(session, d, start, end, first.take(), progress)
                });
            let mut parts = futures::stream::iter(parts).buffered(tuning.range_parallel);
            while let Some(part) = parts.next().await {
                let r = match part {
                    Ok(data) => feed.push(data).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    feed.fail("download failed").await;
                    pump_error = Some(e);
                    break;
                }
            }
        } else {
            let mut body = first.response.into_body();
            while let Some(frame) = body.frame().await {
                let r = match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => {
                            progress.advanced(data.len() as u64);
                            feed.push(data).await
                        }
                        Err(_) => Ok(()),
                    },
                    Err(e) => Err(Error::Body { url: url.clone(), source: Box::new(e) }),
                };
                if let Err(e) = r {
                    feed.fail("download failed").await;
                    pump_error = Some(e);
                    break;
                }
            }
        }
        let Feed { hasher, tx, .. } = feed;
        drop(tx);
        let unpacked = unpacker.await.map_err(|_| Error::Task { what: d.digest.clone() })?;
        if let Some(e) = pump_error {
            return Err(e);
        }
        let (received, actual) = (hasher.len(), hasher.finish());
        if actual != d.digest {
            return Err(Error::DigestMismatch { expected: d.digest.clone(), actual });
        }
        if received != d.size {
            return Err(Error::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: received,
            });
        }
        let unpacked =
            unpacked.map_err(|source| Error::Unpack { digest: d.digest.clone(), source })?;
        Ok(unpacked)
    }

    /// Bytes `start..=end` of blob `d`, from `first` (the probe's 206 answer) or a new Range
    /// request; a broken transfer or a 5xx is retried for this part alone.
    async fn fetch_range(
        &self,
        session: &Session,
        d: &Descriptor,
        start: u64,
        end: u64,
        mut first: Option<crate::client::Fetched>,
        progress: &dyn Progress,
    ) -> Result<Bytes> {
        let want = end - start + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let f = match first.take() {
                    Some(f) => f,
                    None => session.get_blob_range(&d.digest, start, end).await?,
                };
                let url = f.url.clone();
                check_content_range(&f, start, end, d.size)?;
                let mut buf = bytes::BytesMut::with_capacity(usize::try_from(want).unwrap_or(0));
                let mut body = f.response.into_body();
                while let Some(frame) = body.frame().await {
                    let frame =
                        frame.map_err(|e| Error::Body { url: url.clone(), source: Box::new(e) })?;
                    if let Ok(data) = frame.into_data() {
                        progress.advanced(data.len() as u64);
                        buf.extend_from_slice(&data);
                        if buf.len() as u64 > want {
                            return Err(Error::Status {
                                method: "GET".to_owned(),
                                url,
                                status: 206,
                                detail: format!(
                                    ": more than the {want} bytes of the range asked for"
                                ),
                            });
                        }
                    }
                }
                if buf.len() as u64 != want {
                    return Err(Error::Body {
                        url,
                        source: format!("range cut short at {} of {want} bytes", buf.len()).into(),
                    });
                }
                Ok(buf.freeze())
            }
            .await;
            match result {
                Ok(b) => return Ok(b),
                Err(e) if e.is_transient() && attempt < LAYER_ATTEMPTS => {
                    tracing::warn!(digest = %d.digest, start, end, attempt, error = %crate_chain(&e), "range download failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds or replaces an entry in `refs.json` under the store's file lock, merging entries
    /// other processes wrote meanwhile.
    async fn record(&self, entry: Entry) -> Result<()> {
        let store = self.clone();
        blocking("recording the image", move || {
            let lock_path = store.inner.root.join("refs.lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io_err("opening", &lock_path))?;
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
                Error::Io { op: "locking", path: lock_path.clone(), source: e.into() }
            })?;
            let path = store.refs_path();
            let mut file = read_index_file(&path)?;
            file.images.retain(|e| e.reference != entry.reference);
            file.images.push(entry);
            let bytes = serde_json::to_vec_pretty(&file)
                .map_err(|source| Error::Json { what: "refs.json".to_owned(), source })?;
            write_atomic(&store.tmp_name(), &path, &bytes)?;
            let stamp = std::fs::metadata(&path)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
            *store.inner.index.write().unwrap_or_else(|e| e.into_inner()) =
                Loaded::from_file(file, stamp);
            drop(lock);
            Ok(())
        })
        .await
    }
}

/// The in-order bytes of a blob on their way to the unpacker, hashed and counted.
struct Feed<'a> {
    hasher: digest::Hasher,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    /// False once the unpacker stopped reading (it failed); hashing goes on.
    open: bool,
    d: &'a Descriptor,
}

impl Feed<'_> {
    async fn push(&mut self, data: Bytes) -> Result<()> {
        self.hasher.update(&data);
        if self.hasher.len() > self.d.size {
            return Err(Error::SizeMismatch {
                digest: self.d.digest.clone(),
                expected: self.d.size,
                actual: self.hasher.len(),
            });
        }
        if self.open && self.tx.send(Ok(data)).await.is_err() {
            self.open = false;
        }
        Ok(())
    }

    /// Tells the unpacker the blob will not be complete.
    async fn fail(&mut self, why: &str) {
        if self.open {
            let _ = self.tx.send(Err(std::io::Error::other(why.to_owned()))).await;
        }
    }
}

/// Checks that a ranged answer is a 206 for exactly `start..=end` of a blob of `size` bytes
/// (`Content-Range: bytes START-END/SIZE`, RFC 9110 §14.4).
fn check_content_range(f: &crate::client::Fetched, start: u64, end: u64, size: u64) -> Result<()> {
    let status = f.response.status();
    let bad = |detail: String| Error::Status {
        method: "GET".to_owned(),
        url: f.url.clone(),
        status: status.as_u16(),
        detail,
    };
    if status != http::StatusCode::PARTIAL_CONTENT {
        return Err(bad(": a range request was not answered with 206 Partial Content".to_owned()));
    }
    let cr = f
        .response
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parsed = cr.strip_prefix("bytes ").and_then(|r| {
        let (range, total) = r.split_once('/')?;
        let (a, b) = range.split_once('-')?;
        Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?, total.trim()))
    });
    match parsed {
        Some((a, b, total))
            if a == start && b == end && (total == "*" || total == size.to_string()) =>
        {
            Ok(())
        }
        _ => Err(bad(format!(": Content-Range {cr:?} is not bytes {start}-{end}/{size}"))),
    }
}

impl Loaded {
    fn from_file(file: IndexFile, stamp: Option<(SystemTime, u64)>) -> Loaded {
        let mut by_ref = HashMap::new();
        let mut entries = Vec::new();
        for e in file.images {
            let e = Arc::new(e);
            // Pinned references find the image by either digest (the index's or the platform
            // manifest's).
            by_ref.entry(format!("{}@{}", e.name, e.digest)).or_insert_with(|| e.clone());
            if let Some(md) = &e.manifest_digest {
                by_ref.entry(format!("{}@{md}", e.name)).or_insert_with(|| e.clone());
            }
            by_ref.insert(e.reference.clone(), e.clone());
            entries.push(e);
        }
        Loaded { by_ref, entries, stamp }
    }
}

/// The in-memory key for a reference: `name@digest` when pinned (a tag beside a digest does
/// not matter, as in docker), else `name:tag`.
fn lookup_key(r: &Reference) -> String {
    match &r.digest {
        Some(d) => format!("{}@{d}", r.name()),
        None => r.to_string(),
    }
}

fn read_index_file(path: &Path) -> Result<IndexFile> {
    match std::fs::read(path) {
        Ok(b) => {
            let f: IndexFile = serde_json::from_slice(&b).map_err(|source| Error::Json {
                what: format!("the image index {}", path.display()),
                source,
            })?;
            if f.version != INDEX_VERSION {
                return Err(Error::Io {
                    op: "reading (unknown version)",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(format!("refs.json version {}", f.version)),
                });
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(IndexFile { version: INDEX_VERSION, images: Vec::new() })
        }
        Err(e) => Err(Error::Io { op: "reading", path: path.to_path_buf(), source: e }),
    }
}

#[derive(PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Index,
    Manifest,
}

/// Whether a manifests-endpoint document is an index or an image manifest: by its own
/// `mediaType`, else the Content-Type, else its shape.
pub(crate) fn manifest_kind(
    bytes: &[u8],
    content_type: Option<&str>,
    digest: &str,
) -> Result<Kind> {
    let probe: Probe = parse_json(bytes, || format!("manifest {digest}"))?;
    let mt = probe.media_type.as_deref().or(content_type).unwrap_or("");
    match mt {
        manifest::OCI_INDEX | manifest::DOCKER_LIST => Ok(Kind::Index),
        manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST => Ok(Kind::Manifest),
        _ if probe.schema_version == Some(2) && probe.manifests.is_some() => Ok(Kind::Index),
        _ if probe.schema_version == Some(2) && probe.config.is_some() => Ok(Kind::Manifest),
        other => Err(Error::UnsupportedMediaType {
            media_type: if other.is_empty() {
                format!("unknown (schemaVersion {:?})", probe.schema_version)
            } else {
                other.to_owned()
            },
            digest: digest.to_owned(),
        }),
    }
}

/// linux/amd64 from an index, as containerd's default platform matcher picks it.
pub(crate) fn pick_platform<'a>(index: &'a Index, r: &Reference) -> Result<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                && matches!(
                    d.media_type.as_str(),
                    manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST | ""
                )
        })
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: r.to_string(),
            available: {
                let v: Vec<String> = index
                    .manifests
                    .iter()
                    .map(|d| match &d.platform {
                        Some(p) => match &p.variant {
                            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                            None => format!("{}/{}", p.os, p.architecture),
                        },
                        None => "unknown".to_owned(),
                    })
                    .collect();
                if v.is_empty() { "nothing".to_owned() } else { v.join(", ") }
            },
        })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json { what: what(), source })
}

fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(tmp).map_err(io_err("creating", tmp))?;
    f.write_all(bytes).map_err(io_err("writing", tmp))?;
    f.sync_all().map_err(io_err("syncing", tmp))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(io_err("renaming into place", path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn remove_path(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a temporary directory on drop unless disarmed.
struct TmpGuard(Option<PathBuf>);

impl TmpGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Off the async threads when there is a runtime; a big partial layer takes a while.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || {
                        if let Err(e) = remove_path(&p) {
                            tracing::warn!(path = %p.display(), error = %e, "removing a partial layer");
                        }
                    });
                }
                Err(_) => {
                    let _ = remove_path(&p);
                }
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| Error::Task { what: what.to_owned() })?
}

async fn tokio_read(path: &Path) -> Result<Bytes> {
    let p = path.to_path_buf();
    blocking("reading a blob", move || {
        std::fs::read(&p).map(Bytes::from).map_err(|source| Error::Io {
            op: "reading",
            path: p,
            source,
        })
    })
    .await
}

async fn tokio_exists(path: &Path) -> bool {
    // A stat is fast enough to do inline; the store lives on a local disk.
    path.is_dir()
}

/// `a: b: c` for a log line.
fn crate_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(manifest_kind(idx, None, "d").unwrap(), Kind::Index);
        let m = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(manifest_kind(m, Some("application/json"), "d").unwrap(), Kind::Manifest);
        let v1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(
            manifest_kind(
                v1,
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                "d"
            )
            .is_err()
        );
    }

    #[test]
    fn platform_choice() {
        let index: Index = serde_json::from_str(
            r#"{"schemaVersion":2,"manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"amd64"}}
            ]}"#,
        )
        .unwrap();
        let r = Reference::parse("x").unwrap();
        assert_eq!(pick_platform(&index, &r).unwrap().digest, "sha256:b");
        let only_arm = Index { manifests: index.manifests[..1].to_vec(), ..index };
        let e = pick_platform(&only_arm, &r).unwrap_err().to_string();
        assert!(e.contains("linux/arm64/v8"), "{e}");
    }

    #[tokio::test]
    async fn open_cleans_dead_tmp_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A "crash": a partial layer of a process that no longer exists.
        let stale = dir.path().join("tmp/999999999-1-0/usr/bin");
        std::fs::create_dir_all(&stale).unwrap();
        let mine = store.tmp_name();
        std::fs::create_dir_all(&mine).unwrap();
        let store2 = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join("tmp/999999999-1-0").exists());
        assert!(mine.exists(), "a live store's temporary directory must survive another open");
        assert!(store2.list().unwrap().is_empty());
        assert!(store2.local("busybox").is_none());
    }
}
