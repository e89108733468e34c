//! `kinetic bench pull`: image pull and unpack against the peers, in one run, against one
//! registry on 127.0.0.1 (issue 5's benchmark).
//!
//! 1. **Images** are built by the benchmark from Debian packages, so anyone can rebuild them:
//!    `debootstrap --variant=minbase bookworm` is the base layer; `golang` and then
//!    `build-essential` are installed on top with `apt-get` in a chroot over overlayfs, each
//!    install's upper directory becoming one layer (overlayfs whiteouts turn into OCI ones).
//!    `golang` is the first two layers (≈ 700 MB unpacked, like golang:1.10's 730 MB); `big` is
//!    all three flattened into a single layer (≈ 1 GB unpacked). Each is pushed as gzip (level 6, like docker) and
//!    converted with `kinetic image convert` to zstd and uncompressed layers. The root file
//!    systems and the registry's storage stay in `--cache-dir`, so a second run starts at once.
//! 2. **Floors** per image and format: the registry's transfer time (`curl` of every layer blob
//!    to /dev/null, all layers at once) and the decode time of the engine's decoder on one core
//!    (flate2 on zlib-rs, zstd), plus `unpigz` and `libdeflate-gunzip` when installed. The floor
//!    is `max(transfer, decode / cores)`.
//! 3. **Pulls**, each into fresh directories after `sync; echo 3 > /proc/sys/vm/drop_caches`:
//!    containerd 1.6 (`ctr images pull --plain-http`, which fetches and unpacks into its overlayfs
//!    snapshotter) with `unpigz` and with `CONTAINERD_DISABLE_PIGZ=1`, `skopeo copy` + `umoci
//!    unpack` (umoci 0.4 cannot read zstd layers), and `kinetic image pull REF --data-dir D`
//!    (`kinetic`), plus the same engine in this process without the `syncfs` before each layer
//!    is published (`kinetic-nosync`; containerd does not sync its snapshots).
//!    Reported: wall time, CPU seconds of the client processes (for containerd: the daemon and
//!    its unpigz children plus `ctr`; the registry's CPU is not counted for anyone), the ratio to
//!    the floor and containerd-with-unpigz's time divided by ours.
//!
//! Every command has a time limit; all traffic goes to 127.0.0.1, except debootstrap and apt
//! while building the images (Debian's mirror, `--mirror`). Needs root (mounts, chroot,
//! drop_caches) and `scripts/bench-pull-deps.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kinetic_image::manifest::Compression;
use kinetic_image::push::{ImageSpec, Layer, Pusher};
use kinetic_image::{ImageConfig, PullOptions};

/// `kinetic bench` with the pull benchmark beside the others.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    #[command(flatten)]
    Other(crate::bench::BenchCommand),
    /// Measure image pull+unpack against containerd and skopeo+umoci, and the floors
    Pull(PullArgs),
    /// Measure Knative Services: cold starts, a burst from zero, the gateway against direct
    /// and nginx
    Serve(crate::bench_serve::ServeArgs),
    /// Replay per-minute load traces through HPA, KPA, a Crane-style DSP predictor and
    /// Kinetic's predictive autoscaler (a simulation: pod-minutes, SLO-violation minutes,
    /// utilisation, a chart)
    Autoscale(crate::bench_autoscale::AutoscaleArgs),
}

/// Runs a benchmark.
///
/// # Errors
/// See the benchmarks.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Other(o) => crate::bench::run(o).await,
        BenchCommand::Pull(a) => pull(a).await,
        BenchCommand::Serve(a) => crate::bench_serve::run(a).await,
        BenchCommand::Autoscale(a) => crate::bench_autoscale::run(a),
    }
}

/// Arguments of `kinetic bench pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// Where the built root file systems and the registry's storage are kept between runs
    #[arg(long, default_value = "/var/tmp/kinetic-bench-images")]
    cache_dir: PathBuf,
    /// Scratch space for the stores being pulled into (emptied before and after each pull)
    #[arg(long, default_value = "/var/tmp/kinetic-bench-pull")]
    work_dir: PathBuf,
    /// Images to measure: golang, big
    #[arg(long, value_delimiter = ',', default_values = ["golang", "big"])]
    images: Vec<String>,
    /// Layer formats to measure: gzip, zstd, none
    #[arg(long, value_delimiter = ',', default_values = ["gzip", "zstd", "none"])]
    formats: Vec<String>,
    /// Pullers: kinetic, kinetic-nosync, containerd, containerd-nopigz, skopeo-umoci
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["kinetic", "kinetic-nosync", "containerd", "containerd-nopigz", "skopeo-umoci"]
    )]
    peers: Vec<String>,
    /// Measurements of each puller and variant (the table shows the fastest and slowest)
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Only build and push the images
    #[arg(long)]
    build_only: bool,
    /// The Debian mirror debootstrap and apt use while building the images
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
}

/// Limit of one pull by anyone.
const PULL_LIMIT: Duration = Duration::from_secs(300);
/// Limit of one debootstrap or apt-get install.
const BUILD_LIMIT: Duration = Duration::from_secs(1500);
/// Packages installed on top of the base, one layer each.
const LAYERS: [(&str, &str); 2] = [("golang", "golang"), ("build", "build-essential")];

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("kinetic bench pull needs root (overlay mounts, chroot, drop_caches)");
    }
    std::fs::create_dir_all(&args.cache_dir)
        .with_context(|| format!("creating {}", args.cache_dir.display()))?;
    let registry = BenchRegistry::start(&args.cache_dir.join("registry")).await?;
    let images = ensure_images(&args, &registry).await?;
    if args.build_only {
        for i in &images {
            for (f, r) in &i.refs {
                say(&format!("{} {f}: {r}", i.name));
            }
        }
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut rows = Vec::new();
    for image in images.iter().filter(|i| args.images.contains(&i.name)) {
        for (format, reference) in image.refs.iter().filter(|(f, _)| args.formats.contains(f)) {
            let inspected = kinetic_image::convert::inspect(reference, &PullOptions::default())
                .await
                .with_context(|| format!("inspecting {reference}"))?;
            let floor = floors(&registry, reference, &inspected.manifest, cores).await?;
            say(&format!(
                "{} {format}: {} compressed, {} unpacked; transfer {:.2} s, decode {:.2} s on one core{}",
                image.name,
                mb(floor.compressed),
                mb(image.unpacked),
                floor.transfer,
                floor.decode,
                floor.extra.iter().map(|(n, s)| format!(", {n} {s:.2} s")).collect::<String>()
            ));
            let mut results = Vec::new();
            for peer in &args.peers {
                if skip(peer, format) {
                    continue;
                }
                let mut runs = Vec::new();
                for _ in 0..args.runs.max(1) {
                    let m = measure(peer, reference, &args.work_dir)
                        .await
                        .with_context(|| format!("{peer} pulling {reference}"))?;
                    say(&format!(
                        "  {peer:<18} {:>7.2} s  {:>6.2} CPU s  (load {:.2}){}",
                        m.wall,
                        m.cpu,
                        m.load,
                        m.download.map_or(String::new(), |d| format!(
                            ", last byte downloaded at {d:.2} s"
                        ))
                    ));
                    runs.push(m);
                }
                results.push((peer.clone(), runs));
            }
            rows.push(Row {
                image: image.name.clone(),
                format: format.clone(),
                unpacked: image.unpacked,
                floor,
                results,
            });
        }
    }
    print_table(&rows, cores);
    Ok(())
}

fn skip(peer: &str, format: &str) -> bool {
    // umoci 0.4 cannot read zstd layers; without gzip layers unpigz plays no part.
    (peer == "skopeo-umoci" && format == "zstd")
        || (peer == "containerd-nopigz" && format != "gzip")
}

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

// ------------------------------------------------------------------------------------------
// The images.

struct BenchImage {
    name: String,
    /// Bytes of the uncompressed layer tars.
    unpacked: u64,
    /// (format, reference).
    refs: Vec<(String, String)>,
}

async fn ensure_images(
    args: &PullArgs,
    registry: &BenchRegistry,
) -> anyhow::Result<Vec<BenchImage>> {
    let opts = PullOptions::default();
    let mut out = Vec::new();
    for name in ["golang", "big"] {
        let reference = |f: &str| format!("{}/bench/{name}:{f}", registry.addr);
        let gzip = reference("gzip");
        if kinetic_image::convert::inspect(&gzip, &opts).await.is_err() {
            let (cache, mirror, n) = (args.cache_dir.clone(), args.mirror.clone(), name.to_owned());
            let layers = tokio::task::spawn_blocking(move || build_layers(&cache, &mirror, &n))
                .await
                .context("the image build task failed")??;
            let spec = ImageSpec {
                config: ImageConfig {
                    cmd: vec!["bash".into()],
                    env: vec![
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/go/bin"
                            .into(),
                    ],
                    ..ImageConfig::default()
                },
                layers,
                ..ImageSpec::default()
            };
            say(&format!("pushing {gzip}"));
            Pusher::new(&gzip, &opts)?.push_image(&spec).await.context("pushing the image")?;
        }
        let mut refs = vec![("gzip".to_owned(), gzip.clone())];
        for (f, c) in [("zstd", Compression::Zstd), ("none", Compression::None)] {
            let r = reference(f);
            if kinetic_image::convert::inspect(&r, &opts).await.is_err() {
                say(&format!("converting {gzip} to {r}"));
                kinetic_image::convert::convert(&gzip, &r, c, &opts)
                    .await
                    .with_context(|| format!("converting {gzip} to {f}"))?;
            }
            refs.push((f.to_owned(), r));
        }
        let none = kinetic_image::convert::inspect(&reference("none"), &opts).await?;
        let unpacked = none.manifest.layers.iter().map(|l| l.size).sum();
        out.push(BenchImage { name: name.to_owned(), unpacked, refs });
    }
    Ok(out)
}

/// The gzip layers of image `name`, from the root file systems (built first if missing).
fn build_layers(cache: &Path, mirror: &str, name: &str) -> anyhow::Result<Vec<Layer>> {
    let dirs = ensure_rootfs(cache, mirror)?;
    let tars: Vec<Vec<u8>> = if name == "big" {
        // All three flattened: what a merged overlay of them shows.
        let merged = cache.join("rootfs/flat");
        std::fs::create_dir_all(&merged)?;
        let lower: Vec<String> = dirs.iter().rev().map(|d| d.display().to_string()).collect();
        let _m = Mount::overlay(&merged, &lower.join(":"), None)?;
        say("archiving the flattened image");
        vec![kinetic_image::push::tar_layer_dir(&merged)?]
    } else {
        say("archiving the layers");
        dirs[..2].iter().map(|d| kinetic_image::push::tar_layer_dir(d)).collect::<Result<_, _>>()?
    };
    say(&format!("compressing {} layers (gzip -6)", tars.len()));
    let layers = std::thread::scope(|s| {
        let handles: Vec<_> = tars
            .iter()
            .map(|tar| {
                s.spawn(move || -> anyhow::Result<Layer> {
                    let blob = kinetic_image::convert::compress(tar, Compression::Gzip)?;
                    Ok(Layer {
                        media_type: kinetic_image::manifest::OCI_LAYER_GZIP.to_owned(),
                        digest: kinetic_image::digest::sha256(&blob),
                        diff_id: kinetic_image::digest::sha256(tar),
                        data: blob.into(),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a compression thread panicked"))?)
            .collect::<anyhow::Result<Vec<Layer>>>()
    })?;
    Ok(layers)
}

/// The base root file system and the upper directories of the package layers, bottom first.
fn ensure_rootfs(cache: &Path, mirror: &str) -> anyhow::Result<Vec<PathBuf>> {
    let root = cache.join("rootfs");
    std::fs::create_dir_all(&root)?;
    let base = root.join("base");
    if !root.join("base.done").exists() {
        let tmp = root.join("base.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        say("debootstrap --variant=minbase bookworm (from Debian's mirror)");
        exec(
            Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(&tmp)
                .arg(mirror),
            BUILD_LIMIT,
        )?;
        let _ = std::fs::remove_dir_all(&base);
        std::fs::rename(&tmp, &base)?;
        std::fs::write(root.join("base.done"), b"")?;
    }
    let mut dirs = vec![base];
    for (name, packages) in LAYERS {
        let upper = root.join(name);
        if !root.join(format!("{name}.done")).exists() {
            say(&format!("apt-get install {packages} (a layer over the ones below)"));
            let (tmp, work, merged) =
                (root.join(format!("{name}.tmp")), root.join("work"), root.join("merged"));
            for d in [&tmp, &work] {
                let _ = std::fs::remove_dir_all(d);
                std::fs::create_dir_all(d)?;
            }
            std::fs::create_dir_all(&merged)?;
            let lower: Vec<String> = dirs.iter().rev().map(|d| d.display().to_string()).collect();
            {
                let _m = Mount::overlay(&merged, &lower.join(":"), Some((&tmp, &work)))?;
                let _p = Mount::proc(&merged.join("proc"))?;
                let script = format!(
                    "apt-get update -qq && apt-get install -y -qq --no-install-recommends {packages} \
                     && apt-get clean && rm -rf /var/lib/apt/lists/*"
                );
                exec(
                    Command::new("chroot")
                        .arg(&merged)
                        .args(["/usr/bin/env", "-i", "DEBIAN_FRONTEND=noninteractive", "LANG=C"])
                        .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                        .args(["sh", "-c", &script]),
                    BUILD_LIMIT,
                )?;
            }
            let _ = std::fs::remove_dir_all(&work);
            let _ = std::fs::remove_dir_all(&upper);
            std::fs::rename(&tmp, &upper)?;
            std::fs::write(root.join(format!("{name}.done")), b"")?;
        }
        dirs.push(upper);
    }
    Ok(dirs)
}

/// A mount undone on drop.
struct Mount(PathBuf);

impl Mount {
    fn overlay(at: &Path, lower: &str, upper: Option<(&Path, &Path)>) -> anyhow::Result<Mount> {
        let mut opts = format!("lowerdir={lower}");
        if let Some((u, w)) = upper {
            opts.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
        }
        exec(
            Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(at),
            Duration::from_secs(30),
        )?;
        Ok(Mount(at.to_path_buf()))
    }

    fn proc(at: &Path) -> anyhow::Result<Mount> {
        exec(Command::new("mount").args(["-t", "proc", "proc"]).arg(at), Duration::from_secs(30))?;
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// ------------------------------------------------------------------------------------------
// Processes.

/// Runs a command to its end within `limit`, its output to a log file; returns its wall time.
fn exec(cmd: &mut Command, limit: Duration) -> anyhow::Result<f64> {
    let log = tempfile::NamedTempFile::new().context("creating a log file")?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.reopen()?)
        .stderr(log.reopen()?)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let status = wait_limited(&mut child, limit).with_context(|| format!("running {cmd:?}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        let out = std::fs::read_to_string(log.path()).unwrap_or_default();
        let tail: String =
            out.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{cmd:?} failed with {status}: {tail}");
    }
    Ok(wall)
}

fn wait_limited(child: &mut Child, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no result within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU seconds: (this process, its reaped children).
fn self_cpu() -> (f64, f64) {
    stat_cpu("/proc/self/stat")
}

/// (utime + stime, cutime + cstime) of a /proc stat file, in seconds.
fn stat_cpu(path: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(path) else { return (0.0, 0.0) };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // `rest` starts at field 3; utime, stime, cutime, cstime are fields 14..=17, in 1/100 s.
    let g = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    (g(14) + g(15), g(16) + g(17))
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", b"3").context("dropping the page cache")
}

fn fresh_dir(p: &Path) -> anyhow::Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// Docker's registry on 127.0.0.1 with its storage in the cache.
struct BenchRegistry {
    child: Child,
    addr: String,
    storage: PathBuf,
}

impl BenchRegistry {
    async fn start(storage: &Path) -> anyhow::Result<BenchRegistry> {
        std::fs::create_dir_all(storage)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = storage.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n",
                storage.display()
            ),
        )?;
        let log = std::fs::File::create(storage.join("registry.log"))?;
        let child = Command::new(kinetic_testkit::registry::registry_bin())
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (scripts/bench-pull-deps.sh installs it)")?;
        let reg = BenchRegistry { child, addr, storage: storage.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            if Instant::now() > deadline {
                bail!("the registry did not listen on {} within 20 s", reg.addr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(reg)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
            .join("data")
    }
}

impl Drop for BenchRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------
// Floors.

struct Floor {
    compressed: u64,
    /// Seconds to fetch every layer blob with curl, all at once.
    transfer: f64,
    /// Seconds of the engine's decoder over every layer, one core.
    decode: f64,
    /// Other decoders (name, seconds), for comparison.
    extra: Vec<(String, f64)>,
    /// max(transfer, decode / cores).
    floor: f64,
}

async fn floors(
    registry: &BenchRegistry,
    reference: &str,
    m: &kinetic_image::manifest::Manifest,
    cores: usize,
) -> anyhow::Result<Floor> {
    let repo = reference
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .map(|(r, _)| r.to_owned())
        .context("the reference has no repository")?;
    drop_caches()?;
    let started = Instant::now();
    let mut children = Vec::new();
    for l in &m.layers {
        let url = format!("http://{}/v2/{repo}/blobs/{}", registry.addr, l.digest);
        children.push(
            Command::new("curl")
                .args(["-sSf", "-o", "/dev/null", &url])
                .stdin(Stdio::null())
                .spawn()
                .context("starting curl")?,
        );
    }
    for mut c in children {
        let s = wait_limited(&mut c, PULL_LIMIT)?;
        if !s.success() {
            bail!("curl of a layer of {reference} failed with {s}");
        }
    }
    let transfer = started.elapsed().as_secs_f64();
    let mut decode = 0.0;
    let mut extra: Vec<(String, f64)> = Vec::new();
    for l in &m.layers {
        let c = Compression::of_layer(&l.media_type).context("not a layer")?;
        let path = registry.blob_path(&l.digest);
        let blob = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let t = Instant::now();
        kinetic_image::convert::decode_to_sink(&blob, c)?;
        decode += if c == Compression::None { 0.0 } else { t.elapsed().as_secs_f64() };
        if c == Compression::Gzip {
            for (name, tool, flags) in
                [("unpigz", "unpigz", "-dc"), ("libdeflate", "libdeflate-gunzip", "-c")]
            {
                let Ok(wall) = exec(
                    Command::new("sh").arg("-c").arg(format!(
                        "command -v {tool} >/dev/null && {tool} {flags} < '{}' > /dev/null",
                        path.display()
                    )),
                    PULL_LIMIT,
                ) else {
                    continue;
                };
                match extra.iter_mut().find(|(n, _)| n == name) {
                    Some(e) => e.1 += wall,
                    None => extra.push((name.to_owned(), wall)),
                }
            }
        }
    }
    Ok(Floor {
        compressed: m.layers.iter().map(|l| l.size).sum(),
        transfer,
        decode,
        extra,
        floor: transfer.max(decode / cores as f64),
    })
}

// ------------------------------------------------------------------------------------------
// Pulls.

struct Measured {
    wall: f64,
    cpu: f64,
    load: f64,
    /// Seconds until the last compressed byte arrived, when known.
    download: Option<f64>,
}

/// Notes when the last byte of the image arrived (the pull unpacks while it downloads, so the
/// rest of the wall time is what unpacking needed after that).
struct Arrival {
    started: Instant,
    total: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
    done_at: std::sync::Mutex<Option<f64>>,
}

impl Arrival {
    fn new(started: Instant) -> Arrival {
        Arrival {
            started,
            total: 0.into(),
            received: 0.into(),
            done_at: std::sync::Mutex::new(None),
        }
    }

    fn done(&self) -> Option<f64> {
        *self.done_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl kinetic_image::Progress for Arrival {
    fn layer_total(&self, _digest: &str, bytes: u64) {
        self.total.fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    fn advanced(&self, bytes: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let got = self.received.fetch_add(bytes, SeqCst) + bytes;
        if got >= self.total.load(SeqCst) {
            *self.done_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(self.started.elapsed().as_secs_f64());
        }
    }
}

async fn measure(peer: &str, reference: &str, work: &Path) -> anyhow::Result<Measured> {
    let dir = work.join(peer);
    fresh_dir(&dir)?;
    let load = load1();
    drop_caches()?;
    let m = match peer {
        "kinetic" => {
            let exe = std::env::current_exe().context("locating this executable")?;
            timed_children(|| {
                exec(
                    Command::new(&exe)
                        .args(["image", "pull", reference, "--data-dir"])
                        .arg(&dir)
                        .env("KINETIC_LOG", "warn"),
                    PULL_LIMIT,
                )
            })?
        }
        "kinetic-nosync" => {
            // The same engine in this process, without the syncfs before each layer's rename
            // (containerd does not sync unpacked snapshots either): shows what durability costs.
            let (own, _) = self_cpu();
            let started = Instant::now();
            let tuning = kinetic_image::Tuning { sync_layers: false, ..Default::default() };
            let store = kinetic_image::Store::open_with(dir.join("images"), tuning)?;
            let progress = Arrival::new(started);
            tokio::time::timeout(
                PULL_LIMIT,
                store.pull(reference, &PullOptions::default(), &progress),
            )
            .await
            .context("the pull took too long")??;
            Measured {
                wall: started.elapsed().as_secs_f64(),
                cpu: self_cpu().0 - own,
                load: 0.0,
                download: progress.done(),
            }
        }
        "containerd" | "containerd-nopigz" => {
            let ctrd = Containerd::start(&dir, peer == "containerd").await?;
            let before = ctrd.cpu();
            let mut m = timed_children(|| {
                exec(
                    Command::new("ctr").arg("-a").arg(&ctrd.sock).args([
                        "images",
                        "pull",
                        "--plain-http",
                        reference,
                    ]),
                    PULL_LIMIT,
                )
            })?;
            m.cpu += ctrd.cpu() - before;
            m
        }
        "skopeo-umoci" => timed_children(|| {
            let layout = format!("oci:{}:bench", dir.join("layout").display());
            let a = exec(
                Command::new("skopeo")
                    .args(["copy", "--src-tls-verify=false"])
                    .arg(format!("docker://{reference}"))
                    .arg(&layout),
                PULL_LIMIT,
            )?;
            let b = exec(
                Command::new("umoci")
                    .args(["unpack", "--image"])
                    .arg(format!("{}:bench", dir.join("layout").display()))
                    .arg(dir.join("bundle")),
                PULL_LIMIT,
            )?;
            Ok(a + b)
        })?,
        other => {
            bail!("unknown puller {other:?} (kinetic, containerd, containerd-nopigz, skopeo-umoci)")
        }
    };
    fresh_dir(&dir)?;
    Ok(Measured { load, ..m })
}

/// Runs `f` (which waits for its children) and measures its wall time and their CPU.
fn timed_children(f: impl FnOnce() -> anyhow::Result<f64>) -> anyhow::Result<Measured> {
    let (_, before) = self_cpu();
    let wall = f()?;
    let (_, after) = self_cpu();
    Ok(Measured { wall, cpu: after - before, load: 0.0, download: None })
}

/// A private containerd 1.6 (no CRI) in a directory of its own; stopped on drop.
struct Containerd {
    child: Child,
    sock: PathBuf,
}

impl Containerd {
    async fn start(dir: &Path, pigz: bool) -> anyhow::Result<Containerd> {
        let config = dir.join("containerd.toml");
        let sock = dir.join("containerd.sock");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                sock.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if !pigz {
            cmd.env("CONTAINERD_DISABLE_PIGZ", "1");
        }
        let child = cmd.spawn().context("starting containerd (scripts/bench-pull-deps.sh)")?;
        let c = Containerd { child, sock };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("ctr")
                .arg("-a")
                .arg(&c.sock)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 30 s (see {})",
                    dir.join("containerd.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU seconds of the daemon and its reaped children (unpigz).
    fn cpu(&self) -> f64 {
        let (own, children) = stat_cpu(&format!("/proc/{}/stat", self.child.id()));
        own + children
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------
// The table.

struct Row {
    image: String,
    format: String,
    unpacked: u64,
    floor: Floor,
    results: Vec<(String, Vec<Measured>)>,
}

fn best(runs: &[Measured]) -> Option<&Measured> {
    runs.iter().min_by(|a, b| a.wall.total_cmp(&b.wall))
}

#[allow(clippy::print_stdout)]
fn print_table(rows: &[Row], cores: usize) {
    println!();
    println!(
        "floor = max(transfer, decode / {cores} cores); ratios use the fastest run; CPU = client-side seconds"
    );
    println!(
        "{:<7} {:<5} {:>9} {:>9} {:>8} {:>8} {:>8}  {:<18} {:>15} {:>7} {:>8} {:>10}",
        "image",
        "fmt",
        "compr MB",
        "tar MB",
        "xfer s",
        "decode s",
        "floor s",
        "puller",
        "wall s (max)",
        "CPU s",
        "/floor",
        "ctrd+pigz/x"
    );
    for r in rows {
        let ctrd = r
            .results
            .iter()
            .find(|(p, _)| p == "containerd")
            .and_then(|(_, runs)| best(runs))
            .map(|m| m.wall);
        for (peer, runs) in &r.results {
            let Some(b) = best(runs) else { continue };
            let worst = runs.iter().map(|m| m.wall).fold(0.0, f64::max);
            println!(
                "{:<7} {:<5} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2}  {:<18} {:>7.2} ({:>5.2}) {:>6} {:>7.2} {:>7.2}x {:>10}",
                r.image,
                r.format,
                r.floor.compressed as f64 / 1e6,
                r.unpacked as f64 / 1e6,
                r.floor.transfer,
                r.floor.decode,
                r.floor.floor,
                peer,
                b.wall,
                worst,
                b.download.map_or("-".to_owned(), |d| format!("{d:.2}")),
                b.cpu,
                b.wall / r.floor.floor.max(1e-3),
                ctrd.map_or("-".to_owned(), |c| format!("{:.2}x", c / b.wall.max(1e-3))),
            );
        }
    }
}
