//! Image garbage collection with kubelet's disk-usage watermarks.
//!
//! kubelet (`pkg/kubelet/images/image_gc_manager.go`): when the image file system's usage
//! reaches `imageGCHighThresholdPercent` (85), it frees `capacity × (100 − low) / 100 −
//! available` bytes, where low is `imageGCLowThresholdPercent` (80), by removing unused images
//! least recently used first, and reports an error when the unused images do not hold enough.
//! Here an image's "last used" time is the last pull of its reference (a pod start pulls or
//! resolves it), and removing an image frees the layers no remaining image shares. Like
//! kubelet's `ImageMinimumGCAge` (2 minutes), an image pulled less than [`GcPolicy::min_age`]
//! ago is never removed, so a preheated image survives until the pod that wants it starts.

use std::collections::{HashMap, HashSet};

use super::{Entry, Loaded, Store, blocking, io_err, read_index_file, remove_path, write_atomic};
use crate::digest::hex_part;
use crate::reference::Reference;
use crate::{Error, Result};

/// The watermarks, in percent of the file system holding the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// GC runs when usage is at or above this (kubelet's `imageGCHighThresholdPercent`).
    pub high_threshold_percent: u8,
    /// GC frees space down to this (kubelet's `imageGCLowThresholdPercent`).
    pub low_threshold_percent: u8,
    /// Images pulled more recently than this are kept (kubelet's `ImageMinimumGCAge`).
    pub min_age: std::time::Duration,
}

impl Default for GcPolicy {
    /// kubelet's defaults: 85 %, 80 % and 2 minutes.
    fn default() -> GcPolicy {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: std::time::Duration::from_secs(120),
        }
    }
}

/// Size and free space of a file system, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    /// The file system holding `path` (`statvfs(2)`: blocks available to unprivileged users,
    /// as kubelet's cadvisor reads them).
    ///
    /// # Errors
    /// `statvfs` failed.
    pub fn of(path: &std::path::Path) -> Result<DiskUsage> {
        let s = rustix::fs::statvfs(path).map_err(|e| Error::Io {
            op: "statvfs",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(DiskUsage {
            capacity: s.f_blocks.saturating_mul(s.f_frsize),
            available: s.f_bavail.saturating_mul(s.f_frsize),
        })
    }

    /// Used percent, as kubelet computes it: `100 − available × 100 / capacity`.
    pub fn used_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - (u128::from(self.available) * 100 / u128::from(self.capacity)) as u64
    }
}

/// What a collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Usage in percent when the collection started.
    pub usage_percent: u64,
    /// Bytes the policy asked to free (0 below the high watermark).
    pub bytes_to_free: u64,
    /// Removed references, oldest first.
    pub removed_images: Vec<String>,
    /// Digests of the removed layer directories.
    pub removed_layers: Vec<String>,
    /// Bytes of files in the removed layers (as recorded when they were unpacked).
    pub freed_bytes: u64,
}

impl Store {
    /// Usage of the file system holding the store.
    ///
    /// # Errors
    /// `statvfs` failed.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        DiskUsage::of(self.root())
    }

    /// Collects garbage if the store's file system is at or above the high watermark.
    /// `in_use` names the images that must stay (references, `sha256:` digests or image IDs
    /// `name@digest`): the node agent passes those of its containers and of pulls in progress.
    ///
    /// # Errors
    /// See [`Store::gc_with_usage`].
    pub async fn gc(&self, policy: &GcPolicy, in_use: &[String]) -> Result<GcReport> {
        let usage = self.disk_usage()?;
        self.gc_with_usage(policy, in_use, usage).await
    }

    /// [`Store::gc`] for a given disk usage (what the caller measured, or a test's).
    ///
    /// # Guarantees
    /// Images in `in_use` and the layers they use are kept. An image is dropped from
    /// `refs.json` before its layers are removed, so a crash mid-way leaves unused directories,
    /// never an image with missing layers.
    ///
    /// # Caveats
    /// An image being pulled at the same time must be listed in `in_use`: its layers may be
    /// unpacked before its reference is recorded.
    ///
    /// # Errors
    /// The policy is invalid (low above high, or over 100), the store cannot be rewritten, or
    /// the unused images hold less than the amount to free ([`Error::GcShortfall`], after
    /// removing all of them, as kubelet does).
    pub async fn gc_with_usage(
        &self,
        policy: &GcPolicy,
        in_use: &[String],
        usage: DiskUsage,
    ) -> Result<GcReport> {
        if policy.low_threshold_percent > policy.high_threshold_percent
            || policy.high_threshold_percent > 100
        {
            return Err(Error::InvalidGcPolicy {
                high: policy.high_threshold_percent,
                low: policy.low_threshold_percent,
            });
        }
        let mut report = GcReport { usage_percent: usage.used_percent(), ..GcReport::default() };
        if report.usage_percent < u64::from(policy.high_threshold_percent) {
            return Ok(report);
        }
        let target =
            u128::from(usage.capacity) * u128::from(100 - policy.low_threshold_percent) / 100;
        report.bytes_to_free =
            u64::try_from(target.saturating_sub(u128::from(usage.available))).unwrap_or(u64::MAX);
        let store = self.clone();
        let in_use = in_use.to_vec();
        let to_free = report.bytes_to_free;
        let min_age =
            jiff::SignedDuration::try_from(policy.min_age).unwrap_or(jiff::SignedDuration::MAX);
        let young_after =
            jiff::Timestamp::now().checked_sub(min_age).unwrap_or(jiff::Timestamp::MIN);
        let (images, layers, freed) = blocking("collecting image garbage", move || {
            store.collect(&in_use, young_after, to_free)
        })
        .await?;
        report.removed_images = images;
        report.removed_layers = layers;
        report.freed_bytes = freed;
        tracing::info!(
            usage = report.usage_percent,
            to_free = report.bytes_to_free,
            freed = report.freed_bytes,
            images = report.removed_images.len(),
            "image garbage collected"
        );
        if report.freed_bytes < report.bytes_to_free {
            return Err(Error::GcShortfall {
                wanted: report.bytes_to_free,
                freed: report.freed_bytes,
                removed: report.removed_images.len(),
            });
        }
        Ok(report)
    }

    /// Removes unused images pulled before `young_after`, least recently pulled first, until
    /// `to_free` bytes of layers no kept image uses are gone; returns (references, layer
    /// digests, bytes).
    fn collect(
        &self,
        in_use: &[String],
        young_after: jiff::Timestamp,
        to_free: u64,
    ) -> Result<(Vec<String>, Vec<String>, u64)> {
        let lock_path = self.inner.root.join("refs.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::Io { op: "locking", path: lock_path.clone(), source: e.into() })?;
        let path = self.refs_path();
        let mut file = read_index_file(&path)?;
        let keep: Vec<bool> =
            file.images.iter().map(|e| is_in_use(e, in_use) || e.pulled_at > young_after).collect();
        // Layer digest -> (images using it, unpacked size).
        let mut users: HashMap<&str, (usize, u64)> = HashMap::new();
        for e in &file.images {
            for l in &e.layers {
                users.entry(&l.digest).or_insert((0, l.unpacked_size)).0 += 1;
            }
        }
        let mut order: Vec<usize> = (0..file.images.len()).filter(|&i| !keep[i]).collect();
        order.sort_by_key(|&i| file.images[i].pulled_at);
        let mut removed = HashSet::new();
        let mut freed_layers: Vec<String> = Vec::new();
        let mut freed = 0u64;
        for i in order {
            if freed >= to_free {
                break;
            }
            removed.insert(i);
            // An image may list a layer twice; count each of its layers once.
            let own: HashSet<&str> =
                file.images[i].layers.iter().map(|l| l.digest.as_str()).collect();
            for d in own {
                if let Some(u) = users.get_mut(d) {
                    u.0 = u.0.saturating_sub(1);
                    if u.0 == 0 {
                        freed += u.1;
                        freed_layers.push(d.to_owned());
                    }
                }
            }
        }
        if removed.is_empty() {
            return Ok((Vec::new(), Vec::new(), 0));
        }
        let mut removed_refs = Vec::new();
        let mut removed_entries: Vec<Entry> = Vec::new();
        let mut kept = Vec::new();
        for (i, e) in std::mem::take(&mut file.images).into_iter().enumerate() {
            if removed.contains(&i) {
                removed_refs.push((e.pulled_at, e.reference.clone()));
                removed_entries.push(e);
            } else {
                kept.push(e);
            }
        }
        removed_refs.sort();
        file.images = kept;
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|source| Error::Json { what: "refs.json".to_owned(), source })?;
        write_atomic(&self.tmp_name(), &path, &bytes)?;
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH), m.len()));
        // Blobs (manifests, configs) no kept image names go too.
        let kept_blobs: HashSet<String> = file
            .images
            .iter()
            .flat_map(|e| {
                [Some(e.digest.clone()), e.manifest_digest.clone(), Some(e.config_digest.clone())]
            })
            .flatten()
            .collect();
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) =
            Loaded::from_file(file, stamp);
        drop(lock);
        for d in &freed_layers {
            let dir = self.layer_dir(d);
            // Out of sight first (one rename), then deleted: a reader never sees half a layer
            // under its published name.
            let doomed = self.tmp_name();
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => remove_path(&doomed).map_err(io_err("removing", &doomed))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { op: "removing", path: dir, source: e }),
            }
            let _ = std::fs::remove_file(dir.with_extension("json"));
            let _ = std::fs::remove_file(
                self.inner.root.join("locks").join(format!("{}.lock", hex_part(d))),
            );
        }
        for e in &removed_entries {
            for b in [Some(&e.digest), e.manifest_digest.as_ref(), Some(&e.config_digest)]
                .into_iter()
                .flatten()
            {
                if !kept_blobs.contains(b) {
                    let _ = std::fs::remove_file(self.blob_path(b));
                }
            }
        }
        Ok((removed_refs.into_iter().map(|(_, r)| r).collect(), freed_layers, freed))
    }
}

/// Whether `e` is named by one of `in_use`: its reference (normalized), its digest or platform
/// manifest digest, or its image ID.
fn is_in_use(e: &Entry, in_use: &[String]) -> bool {
    in_use.iter().any(|u| {
        if u.starts_with("sha256:") {
            return *u == e.digest || e.manifest_digest.as_deref() == Some(u.as_str());
        }
        if let Some((name, digest)) = u.split_once('@')
            && let Ok(r) = Reference::parse(name)
            && r.name() == e.name
        {
            return digest == e.digest || e.manifest_digest.as_deref() == Some(digest);
        }
        Reference::parse(u).is_ok_and(|r| r.to_string() == e.reference)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_amount_follow_kubelet() {
        let u = DiskUsage { capacity: 1000, available: 100 };
        assert_eq!(u.used_percent(), 90);
        assert_eq!(DiskUsage { capacity: 1000, available: 151 }.used_percent(), 85);
        assert_eq!(DiskUsage { capacity: 0, available: 0 }.used_percent(), 0);
    }
}
