//! `kinetic image convert|gc` beside `pull` and `ls` (in `image`): re-publishing an image in
//! another layer compression, and garbage collection of the node's image store.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use kinetic_image::PullOptions;
use kinetic_image::manifest::Compression;

#[derive(Subcommand, Debug, Clone)]
pub enum ImageCmd {
    #[command(flatten)]
    Store(crate::image::ImageCmd),
    /// Re-publish an image with zstd, gzip or uncompressed layers (config and diff_ids kept)
    Convert {
        /// The image to read, e.g. 127.0.0.1:5000/app:v1
        src: String,
        /// Where to push the converted image, e.g. 127.0.0.1:5000/app:v1-zstd
        dst: String,
        /// Layer compression of the new image
        #[arg(long, value_enum)]
        format: LayerFormat,
        /// A registry (host or host:port) to reach over plain http; loopback ones always are
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registries: Vec<String>,
        /// Registry credentials in docker's config.json format
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
    },
    /// Remove unused images when the disk is above the high watermark, down to the low one
    /// (kubelet's image GC)
    Gc {
        /// The data directory given to `kinetic up` (store <data-dir>/node/images) or to
        /// `kinetic node` (store <data-dir>/images)
        #[arg(long, env = "KINETIC_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Collect when disk usage is at or above this percent (imageGCHighThresholdPercent)
        #[arg(long, default_value_t = 85)]
        high: u8,
        /// Free down to this percent (imageGCLowThresholdPercent)
        #[arg(long, default_value_t = 80)]
        low: u8,
        /// An image that must stay (reference, digest or image ID); repeatable
        #[arg(long = "in-use", value_name = "IMAGE")]
        in_use: Vec<String>,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum LayerFormat {
    Zstd,
    Gzip,
    Uncompressed,
}

/// Runs an image command.
///
/// # Errors
/// The command failed.
pub async fn run(cmd: ImageCmd, default_data_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Store(c) => crate::image::run(c, default_data_dir).await,
        ImageCmd::Gc { data_dir, high, low, in_use } => {
            let dir = crate::image::store_dir(data_dir.as_deref().unwrap_or(default_data_dir));
            let store = kinetic_image::Store::open(&dir)
                .with_context(|| format!("opening the image store {}", dir.display()))?;
            let policy = kinetic_image::GcPolicy {
                high_threshold_percent: high,
                low_threshold_percent: low,
                ..kinetic_image::GcPolicy::default()
            };
            let r = store.gc(&policy, &in_use).await.context("collecting unused images")?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "disk usage {}% (collect at {high}%, down to {low}%)", r.usage_percent)?;
            for i in &r.removed_images {
                writeln!(out, "removed {i}")?;
            }
            writeln!(
                out,
                "freed {} bytes in {} layers (asked for {})",
                r.freed_bytes,
                r.removed_layers.len(),
                r.bytes_to_free
            )?;
            Ok(())
        }
        ImageCmd::Convert { src, dst, format, insecure_registries, docker_config } => {
            let credentials = match docker_config {
                Some(p) => {
                    let bytes =
                        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    kinetic_image::parse_docker_config_json(&bytes)
                        .with_context(|| format!("parsing {}", p.display()))?
                }
                None => Vec::new(),
            };
            let to = match format {
                LayerFormat::Zstd => Compression::Zstd,
                LayerFormat::Gzip => Compression::Gzip,
                LayerFormat::Uncompressed => Compression::None,
            };
            let opts = PullOptions { credentials, insecure_registries };
            let c = kinetic_image::convert::convert(&src, &dst, to, &opts)
                .await
                .with_context(|| format!("converting {src} to {dst}"))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{dst}")?;
            writeln!(out, "digest:  {}", c.digest)?;
            writeln!(out, "config:  {} (unchanged)", c.config_digest)?;
            for l in &c.layers {
                writeln!(
                    out,
                    "layer:   {} {} B -> {} {} B",
                    &l.from.digest, l.from.size, &l.to.digest, l.to.size
                )?;
            }
            Ok(())
        }
    }
}
