//! `kinetic image pull|ls`: the node's image store from the command line. The store is the one
//! the node agent uses ([`store_dir`]), so an image pulled here is already present
//! for pods with `imagePullPolicy: IfNotPresent`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kinetic_image::{Progress, PullOptions, Store};

#[derive(Subcommand, Debug, Clone)]
pub enum ImageCmd {
    /// Pull an image into the node's image store
    Pull {
        /// Image reference, e.g. busybox:1.36 or 127.0.0.1:5000/app:v1
        reference: String,
        /// The data directory given to `kinetic up` (store <data-dir>/node/images) or to
        /// `kinetic node` (store <data-dir>/images)
        #[arg(long, env = "KINETIC_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A registry (host or host:port) to reach over plain http; loopback ones always are
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registries: Vec<String>,
        /// Registry credentials in docker's config.json format (a dockerconfigjson secret)
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
    },
    /// List the images in the node's image store
    Ls {
        /// The data directory given to `kinetic up` (store <data-dir>/node/images) or to
        /// `kinetic node` (store <data-dir>/images)
        #[arg(long, env = "KINETIC_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Where the node agent keeps its images under `data_dir`, the directory given to the command
/// that runs the agent: `kinetic up --data-dir D` runs it in `D/node` (store `D/node/images`),
/// `kinetic node --data-dir D` in `D` itself (store `D/images`). A directory that holds an
/// agent's store but no `node/` is a `kinetic node` one; any other (a `kinetic up` one, or a new
/// directory) gets `kinetic up`'s layout, which the default data directory also has (issue 10:
/// `image ls --data-dir D` looked only in `D/node/images`).
pub fn store_dir(data_dir: &Path) -> PathBuf {
    let agent_own = data_dir.join("images");
    let under_up = data_dir.join("node");
    if agent_own.is_dir() && !under_up.exists() {
        return agent_own;
    }
    under_up.join("images")
}

/// Runs an image command.
///
/// # Errors
/// The store cannot be opened, or the pull fails.
pub async fn run(cmd: ImageCmd, default_data_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Pull { reference, data_dir, insecure_registries, docker_config } => {
            let dir = store_dir(data_dir.as_deref().unwrap_or(default_data_dir));
            let store = Store::open(&dir)
                .with_context(|| format!("opening the image store {}", dir.display()))?;
            let credentials = match docker_config {
                Some(p) => {
                    let bytes =
                        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    kinetic_image::parse_docker_config_json(&bytes)
                        .with_context(|| format!("parsing {}", p.display()))?
                }
                None => Vec::new(),
            };
            pull(&store, &reference, &PullOptions { credentials, insecure_registries }).await
        }
        ImageCmd::Ls { data_dir } => {
            let dir = store_dir(data_dir.as_deref().unwrap_or(default_data_dir));
            let store = Store::open(&dir)
                .with_context(|| format!("opening the image store {}", dir.display()))?;
            let rows: Vec<Row> = store
                .list()
                .context("listing images")?
                .into_iter()
                .map(|i| Row {
                    pulled_at: i.pulled_at.as_second(),
                    reference: i.reference,
                    digest: i.digest,
                    size: i.size,
                    layers: i.layers,
                })
                .collect();
            let mut out = std::io::stdout().lock();
            out.write_all(ls_table(&rows, now_seconds()).as_bytes())?;
            Ok(())
        }
    }
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Progress for Bar {
    fn layer_total(&self, _digest: &str, bytes: u64) {
        self.0.inc_length(bytes);
    }
    fn advanced(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

async fn pull(store: &Store, reference: &str, opts: &PullOptions) -> anyhow::Result<()> {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .context("building the progress bar style")?
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(reference.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let result = store.pull(reference, opts, &Bar(bar.clone())).await;
    bar.finish_and_clear();
    let image = result?;
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", image.reference)?;
    writeln!(out, "digest:  {}", image.digest)?;
    writeln!(out, "layers:  {}", image.layers.len())?;
    if image.cache_hit {
        writeln!(out, "cached:  nothing to download, resolved in {}", human_duration(elapsed))?;
    } else {
        let rate = image.downloaded_bytes as f64 / elapsed.as_secs_f64().max(1e-3);
        writeln!(
            out,
            "pulled:  {} in {} ({}/s)",
            human_bytes(image.downloaded_bytes),
            human_duration(elapsed),
            human_bytes(rate as u64)
        )?;
    }
    Ok(())
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One line of `kinetic image ls`.
struct Row {
    reference: String,
    digest: String,
    size: u64,
    layers: usize,
    /// Unix seconds.
    pulled_at: i64,
}

/// The `kinetic image ls` table.
fn ls_table(images: &[Row], now: i64) -> String {
    let mut rows = vec![[
        "REFERENCE".to_owned(),
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "LAYERS".to_owned(),
        "PULLED".to_owned(),
    ]];
    for i in images {
        let hex = i.digest.strip_prefix("sha256:").unwrap_or(&i.digest);
        rows.push([
            i.reference.clone(),
            hex.get(..12).unwrap_or(hex).to_owned(),
            human_bytes(i.size),
            i.layers.to_string(),
            format!("{} ago", human_age(now - i.pulled_at)),
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   "));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `45s`, `3m`, `5h`, `2d` like kubectl's AGE column.
fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let images = vec![Row {
            reference: "127.0.0.1:5000/busybox:v1".into(),
            digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .into(),
            size: 2_100_000,
            layers: 2,
            pulled_at: 1_000,
        }];
        assert_eq!(
            ls_table(&images, 1_000 + 7200),
            "REFERENCE                   DIGEST         SIZE      LAYERS   PULLED\n\
             127.0.0.1:5000/busybox:v1   0123456789ab   2.0 MiB   2        2h ago\n"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_age(59), "59s");
    }
}
