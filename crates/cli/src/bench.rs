//! `kinetic bench`: measures Kinetic against its targets.
//!
//! `kinetic bench api` starts `kinetic apiserver` as a child process (this same executable) on a
//! free loopback port with a fresh data directory, talks to it over HTTPS with the real `kube`
//! client built from the kubeconfig the server writes, and measures:
//!
//! 1. **The physical floor** (before the server starts): SQLite commits/s on the same filesystem,
//!    with the store's policy (`journal_mode=WAL`, `synchronous=FULL`, the store's table layout:
//!    each row also logged in the `events` table of the durable watch history),
//!    once with one row per transaction and once with 64 rows per transaction (what group commit
//!    can reach). An acknowledged API write is a committed transaction, so these bound the API
//!    figures from above.
//! 2. **Server memory**: `VmRSS` of the child from `/proc/PID/status` at start, after the pods of
//!    step 3 are stored, after the write phases and at the end (watchers still connected). The
//!    growth while the pods were created (read before they are listed, whose buffers the
//!    allocator may keep), divided by the pods, is reported as memory per stored
//!    object against the size of one pod's JSON in the list (everything the server keeps for
//!    an object: the object, its watch-history event, indexes, allocator overhead).
//! 3. **List latency**: `--pods` small Pods (one `busybox` container) are created with 64
//!    concurrent requests, then five full `GET /api/v1/namespaces/default/pods` are timed until
//!    the whole body is received and parsed as JSON.
//! 4. **Durable writes**: for each `--clients` level, `--seconds` of ConfigMap creates, then
//!    `--seconds` of JSON merge patches that change a label on the ConfigMaps just created. Every
//!    client is a tokio task; all tasks share one `kube::Client`, whose connection pool opens one
//!    HTTP/1.1 connection per request in flight (so N clients use N connections). Each task waits
//!    for its answer before sending the next request, so the server sees exactly N requests in
//!    flight. Reported: ops/s and p50/p99 latency.
//! 5. **Watch delivery latency**: for each `--watchers` level (100 and 1,000 by default), that
//!    many watches (each its own HTTPS connection) on ConfigMaps in `default` with a label
//!    selector, then one writer makes 50 writes at 20/s (25 creates, then 25 patches), each
//!    stamped with its send time in an annotation (nanoseconds since the Unix epoch, taken just
//!    before the request is sent, so the figure includes the durable commit), while
//!    `--background-writers` clients (4 by default) write Leases, another resource, as fast as
//!    they can. Every watcher records receipt time minus stamp. Reported: p50/p99/max over all
//!    deliveries and deliveries expected vs received. Bounded by 60 s per level.
//!
//! The phases run in the order above. The benchmark and the server share the machine, so client
//! CPU (TLS, JSON) competes with the server; figures are for the pair, which is how an embedded
//! control plane runs anyway. To tell the two apart, each write phase and the watch fan-out also
//! report the CPU each process used (from `/proc/PID/stat`), in cores.
//!
//! File descriptors: every watcher is one connection, so `--watchers 1000` needs about 1,100
//! descriptors in this process and as many in the server. Where the soft limit is 1024, run it as
//! `bash -c 'ulimit -n 4096; kinetic bench api'` (the cli has no `unsafe`, so it does not raise
//! the limit itself); failed watches are counted and reported, not hidden.
//! Every request has a 30 s timeout and every phase stops by itself; load goes to 127.0.0.1 only.
//! The child is killed when the benchmark ends, also on error (a guard with `Drop`).

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde::Serialize;
use tokio::time::Instant;

/// What to measure.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Measure the API server: durable writes, watch latency, large lists, memory, SQLite floor
    Api(ApiArgs),
    /// Measure pod start: create→Ready latency, pods per minute, against a bare `runc run`
    Pods(crate::bench_pods::PodsArgs),
    /// Measure a release: Deployment rolling update vs CloneSet ReCreate vs CloneSet in place
    Rollout(crate::bench_rollout::RolloutArgs),
    /// Measure the first request to a Knative Service at zero with and without warm pod pools
    Coldstart(crate::bench_coldstart::ColdstartArgs),
    /// Measure an agent-sandbox SandboxClaim answered from a SandboxWarmPool: created → Ready
    Sandbox(crate::bench_sandbox::SandboxArgs),
}

/// Arguments of `kinetic bench api`.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// Concurrent clients of the create and update phases, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    clients: Vec<usize>,
    /// Length of each timed phase (creates, updates, each SQLite floor run), in seconds
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent watches in the watch-latency phase, one phase per number, comma-separated
    /// (each watch is one HTTPS connection; 0 skips the phase)
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000])]
    watchers: Vec<usize>,
    /// Pods stored before timing full lists and reading the server's memory (0 skips it)
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Clients writing Leases (another resource than the watched one) as fast as they can
    /// during the watch phase
    #[arg(long, default_value_t = 4)]
    background_writers: usize,
    /// ValidatingWebhookConfigurations (rules on Secrets, so no ConfigMap write matches one)
    /// created before the write phases: the cost of admission configurations that match nothing
    #[arg(long, default_value_t = 0)]
    webhook_configs: usize,
    /// The kinetic executable to run as the server, to compare builds with the same benchmark
    /// [default: this executable]
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Also write the results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs a benchmark.
///
/// # Errors
/// The server cannot be started or reached, a phase fails as a whole, or the JSON report cannot
/// be written. Individual failed requests are counted and reported instead.
pub async fn run(what: BenchCommand) -> anyhow::Result<()> {
    match what {
        BenchCommand::Api(args) => api(args).await,
        BenchCommand::Pods(args) => crate::bench_pods::run(args).await,
        BenchCommand::Rollout(args) => crate::bench_rollout::run(args).await,
        BenchCommand::Coldstart(args) => crate::bench_coldstart::run(args).await,
        BenchCommand::Sandbox(args) => crate::bench_sandbox::run(args).await,
    }
}

/// Namespace every object of the benchmark lives in.
const NAMESPACE: &str = "default";
/// Label key that tells the benchmark's objects apart (`write` or `watch`).
const LABEL: &str = "kinetic.dev/bench";
/// Label changed by every update.
const GEN_LABEL: &str = "kinetic.dev/bench-gen";
/// Annotation carrying the send time, in nanoseconds since the Unix epoch.
const SENT_ANNOTATION: &str = "kinetic.dev/bench-sent-ns";
/// Annotation carrying the index of the write (0..WATCH_WRITES) in the watch phase.
const INDEX_ANNOTATION: &str = "kinetic.dev/bench-write";
/// Writes made while the watchers listen.
const WATCH_WRITES: usize = 50;
/// Interval between those writes (20/s).
const WATCH_WRITE_INTERVAL: Duration = Duration::from_millis(50);
/// The whole watch phase gives up after this.
const WATCH_LIMIT: Duration = Duration::from_secs(60);
/// Watches opened at the same time while the watchers connect.
const WATCH_CONNECT_CONCURRENCY: usize = 64;
/// Concurrency of the pod creates before the list phase.
const POD_CONCURRENCY: usize = 64;
/// Full lists timed.
const LIST_RUNS: usize = 5;
/// Rows per transaction of the group-commit floor.
const FLOOR_GROUP: usize = 64;
/// No single request may take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the child may take to write its kubeconfig and answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `kinetic bench api` measured; also the JSON written by `--json`.
#[derive(Serialize)]
struct Report {
    /// Unix time the run started, in seconds.
    started_unix: u64,
    /// Logical CPUs of the machine.
    cpus: usize,
    /// Directory the server's data and the floor databases lived in.
    scratch_dir: PathBuf,
    seconds_per_phase: u64,
    floor: Vec<Floor>,
    memory: Memory,
    list: Option<ListResult>,
    writes: Vec<WritePhase>,
    watch: Vec<WatchResult>,
    /// The table printed at the end.
    table: Vec<Row>,
}

/// SQLite commits on the server's filesystem with the server's durability policy.
#[derive(Serialize)]
struct Floor {
    rows_per_transaction: usize,
    commits: u64,
    seconds: f64,
    commits_per_s: f64,
    rows_per_s: f64,
}

/// Resident memory of the server process, in bytes.
#[derive(Serialize)]
struct Memory {
    rss_start_bytes: u64,
    rss_after_pods_bytes: Option<u64>,
    /// Right after the pods were created, before they were listed (the lists' large buffers
    /// may stay in the allocator): what memory per stored pod is computed from.
    rss_after_pod_creates_bytes: Option<u64>,
    /// After the write phases, which leave their ConfigMaps (and watch history) in the store.
    rss_after_writes_bytes: u64,
    /// After the watch phase, with the watchers' connections still open.
    rss_end_bytes: u64,
}

#[derive(Serialize)]
struct ListResult {
    pods: usize,
    pod_create_errors: u64,
    pod_creates_per_s: f64,
    /// Items in the last list (must equal the pods created).
    items: usize,
    body_bytes: usize,
    list_ms: Vec<f64>,
    p50_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct WritePhase {
    /// `create` or `update`.
    kind: &'static str,
    clients: usize,
    ops: u64,
    errors: u64,
    seconds: f64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    first_error: Option<String>,
    /// CPU the server used during the phase, in cores (CPU seconds per second).
    server_cores: f64,
    /// CPU the benchmark itself (the clients) used during the phase, in cores.
    bench_cores: f64,
}

#[derive(Serialize)]
struct WatchResult {
    watchers: usize,
    established: usize,
    /// Time to open all the watches.
    connect_seconds: f64,
    writes: usize,
    write_errors: u64,
    write_p50_ms: f64,
    expected: usize,
    received: usize,
    duplicates: usize,
    watcher_errors: usize,
    first_error: Option<String>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU the server used from the first write until every watcher finished, in cores.
    server_cores: f64,
    /// CPU the benchmark (watchers and writer) used in that time, in cores.
    bench_cores: f64,
    /// Lease writes per second of the background writers during the phase (0 without them).
    background_writes_per_s: f64,
}

/// One line of the table: a figure, its value, the target and whether it is met.
#[derive(Serialize)]
pub(crate) struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    pub(crate) fn new(figure: String, value: String, target: &str, met: Option<bool>) -> Self {
        Self { figure, value, target: target.to_owned(), met }
    }
}

async fn api(args: ApiArgs) -> anyhow::Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs positive numbers, like 1,16,64");
    }
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let phase = Duration::from_secs(args.seconds);
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // One scratch directory holds the server's data and the floor databases, so both are on the
    // same filesystem. It is removed after the child is killed (`server` is dropped first).
    let scratch = tempfile::Builder::new()
        .prefix("kinetic-bench-")
        .tempdir()
        .context("creating a scratch directory")?;

    let mut floor = Vec::new();
    for rows in [1, FLOOR_GROUP] {
        tracing::info!(
            rows_per_transaction = rows,
            seconds = args.seconds,
            "measuring the SQLite floor"
        );
        let dir = scratch.path().to_owned();
        let f = tokio::task::spawn_blocking(move || sqlite_floor(&dir, rows, phase))
            .await
            .context("the SQLite floor task panicked")??;
        floor.push(f);
    }

    let mut server =
        ChildServer::start(&scratch.path().join("data"), args.server.as_deref()).await?;
    let client = server.client.clone();
    let rss_start = server.rss()?;
    create_webhook_configs(&client, args.webhook_configs).await?;

    let (list, rss_after_pod_creates) = if args.pods > 0 {
        let created = create_pods(&client, args.pods).await?;
        let rss = server.rss()?;
        (Some(list_pods(&client, args.pods, created).await?), Some(rss))
    } else {
        (None, None)
    };
    let rss_after_pods = if args.pods > 0 { Some(server.rss()?) } else { None };

    let mut writes = Vec::new();
    for &clients in &args.clients {
        let cpu = CpuSample::take(server.pid())?;
        let (mut created, names) = create_phase(&client, clients, phase).await?;
        (created.server_cores, created.bench_cores) = cpu.cores_since(server.pid())?;
        writes.push(created);
        let cpu = CpuSample::take(server.pid())?;
        let mut updated = update_phase(&client, names, phase).await?;
        (updated.server_cores, updated.bench_cores) = cpu.cores_since(server.pid())?;
        writes.push(updated);
        server.check_alive()?;
    }
    let rss_after_writes = server.rss()?;

    let mut watch = Vec::new();
    for (round, &watchers) in args.watchers.iter().enumerate().filter(|(_, w)| **w > 0) {
        let pid = server.pid();
        watch.push(watch_phase(&client, round, watchers, pid, args.background_writers).await?);
        server.check_alive()?;
    }
    let rss_end = server.rss()?;
    server.stop()?;

    let mut report = Report {
        started_unix,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        scratch_dir: scratch.path().to_owned(),
        seconds_per_phase: args.seconds,
        floor,
        memory: Memory {
            rss_start_bytes: rss_start,
            rss_after_pods_bytes: rss_after_pods,
            rss_after_pod_creates_bytes: rss_after_pod_creates,
            rss_after_writes_bytes: rss_after_writes,
            rss_end_bytes: rss_end,
        },
        list,
        writes,
        watch,
        table: Vec::new(),
    };
    report.table = table(&report, &args);
    print_table(&report.table);
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("encoding the JSON report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "JSON report written");
    }
    Ok(())
}

/// `kinetic apiserver` running as a child process, with a client for it.
///
/// Dropping it kills the child, so an error anywhere in the benchmark does not leave a server
/// behind.
struct ChildServer {
    child: Child,
    client: kube::Client,
}

impl ChildServer {
    /// Starts the server on a free loopback port, waits for its kubeconfig and `/readyz`, and
    /// builds a client from the kubeconfig.
    async fn start(data_dir: &Path, exe: Option<&Path>) -> anyhow::Result<Self> {
        // Ask the kernel for a free port, then hand it to the child. Another process could take
        // it in between; on loopback during a benchmark that is unlikely enough.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
            l.local_addr().context("reading the free port")?.port()
        };
        let listen = format!("127.0.0.1:{port}");
        let exe = match exe {
            Some(e) => e.to_owned(),
            None => std::env::current_exe().context("locating the kinetic executable")?,
        };
        tracing::info!(%listen, data_dir = %data_dir.display(), "starting kinetic apiserver");
        let mut child = Command::new(&exe)
            .arg("apiserver")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(&listen)
            // Only the server's warnings and errors, so they stand out among the progress lines.
            .env("KINETIC_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} apiserver", exe.display()))?;
        let stdout = child.stdout.take().context("taking the server's stdout")?;
        // From here on the guard owns the child: any early return kills it.
        let mut guard = Guard(Some(child));

        // The server prints "kubeconfig: PATH" once the file is complete and it listens. Read
        // its stdout on a thread (it is a blocking pipe) and keep draining it afterwards.
        let (tx, rx) = tokio::sync::oneshot::channel::<PathBuf>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(path) = line.strip_prefix("kubeconfig: ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(PathBuf::from(path.trim()));
                }
            }
        });
        let kubeconfig = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(path)) => path,
            Ok(Err(_)) => {
                let status = guard.child()?.wait().context("waiting for the server")?;
                bail!("kinetic apiserver exited before writing its kubeconfig: {status}");
            }
            Err(_) => {
                bail!("kinetic apiserver did not write its kubeconfig within {START_TIMEOUT:?}")
            }
        };

        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading {}", kubeconfig.display()))?;
        // A retried request would hide a 429/503 from the figures; count it as an error instead.
        config.default_retry = false;
        let client = kube::Client::try_from(config).context("building the kube client")?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let req =
                http::Request::get("/readyz").body(Vec::new()).context("building GET /readyz")?;
            match tokio::time::timeout(REQUEST_TIMEOUT, client.request_text(req)).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if Instant::now() > deadline => {
                    return Err(e).context("GET /readyz never succeeded");
                }
                _ if Instant::now() > deadline => bail!("GET /readyz did not answer"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let child = guard.0.take().context("the server guard lost its child")?;
        tracing::info!(pid = child.id(), kubeconfig = %kubeconfig.display(), "api server ready");
        Ok(Self { child, client })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has exited (it should run until we stop it).
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait().context("checking on the server process")? {
            Some(status) => bail!("kinetic apiserver exited during the benchmark: {status}"),
            None => Ok(()),
        }
    }

    /// Resident memory of the child (`VmRSS` in `/proc/PID/status`), in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS line in {path}"))?;
        Ok(kib * 1024)
    }

    /// Checks the child is still running, then kills it.
    fn stop(mut self) -> anyhow::Result<()> {
        self.check_alive()
        // Drop kills it.
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Kills the child while [`ChildServer::start`] is still waiting for it.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> anyhow::Result<&mut Child> {
        self.0.as_mut().context("the server guard lost its child")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill(child);
        }
    }
}

/// SIGKILL and reap. The data directory is thrown away, so there is nothing to shut down cleanly.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Commits as many transactions of `rows` small inserts as fit in `phase`, with the store's
/// pragmas and table layout (the store also bumps its revision counter in every transaction).
fn sqlite_floor(dir: &Path, rows: usize, phase: Duration) -> anyhow::Result<Floor> {
    let path = dir.join(format!("floor-{rows}.db"));
    let mut conn =
        rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         CREATE TABLE objects (
             resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
             rv INTEGER NOT NULL, data BLOB NOT NULL,
             PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT INTO meta (key, value) VALUES ('rv', 0);
         CREATE TABLE events (
             rv INTEGER PRIMARY KEY, type INTEGER NOT NULL,
             resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
             prev_rv INTEGER, prev_data BLOB, data BLOB NOT NULL);",
    )
    .with_context(|| format!("preparing {}", path.display()))?;
    // About the size of a small ConfigMap as the server stores it.
    let data = vec![b'x'; 400];
    let start = std::time::Instant::now();
    let mut commits = 0u64;
    let mut rv = 0i64;
    while start.elapsed() < phase {
        let tx = conn.transaction().context("beginning a transaction")?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO objects (resource, namespace, name, rv, data)
                     VALUES ('configmaps', 'default', ?1, ?2, ?3)",
                )
                .context("preparing the insert")?;
            // The store logs every change in the same transaction (the durable watch history).
            let mut log = tx
                .prepare_cached(
                    "INSERT INTO events (rv, type, resource, namespace, name, data)
                     VALUES (?1, 0, 'configmaps', 'default', ?2, ?3)",
                )
                .context("preparing the event insert")?;
            for _ in 0..rows {
                rv += 1;
                insert
                    .execute(rusqlite::params![format!("cm-{rv}"), rv, data])
                    .context("inserting")?;
                log.execute(rusqlite::params![rv, format!("cm-{rv}"), data])
                    .context("logging the event")?;
            }
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'rv'", [rv])
                .context("updating the revision")?;
        }
        tx.commit().context("committing")?;
        commits += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let commits_per_s = commits as f64 / seconds;
    Ok(Floor {
        rows_per_transaction: rows,
        commits,
        seconds,
        commits_per_s,
        rows_per_s: commits_per_s * rows as f64,
    })
}

/// What one load task did.
#[derive(Default)]
struct TaskOutcome {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    /// Objects the task created (create phase only).
    names: Vec<String>,
}

impl TaskOutcome {
    fn record<T>(&mut self, started: Instant, result: RequestResult<T>) -> bool {
        match result {
            Ok(_) => {
                self.latencies.push(started.elapsed());
                true
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
                false
            }
        }
    }
}

type RequestResult<T> = Result<T, String>;

/// Awaits a kube request with [`REQUEST_TIMEOUT`], flattening both failures into a message.
/// `what` names the request in the message and is only called on failure.
async fn timed<T>(
    what: impl FnOnce() -> String,
    fut: impl Future<Output = kube::Result<T>>,
) -> RequestResult<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{}: {e}", what())),
        Err(_) => Err(format!("{}: no answer within {REQUEST_TIMEOUT:?}", what())),
    }
}

/// Runs `clients` tasks until they return and merges what they did.
async fn join_tasks(
    tasks: Vec<tokio::task::JoinHandle<TaskOutcome>>,
) -> anyhow::Result<Vec<TaskOutcome>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.context("a load task panicked")?);
    }
    Ok(out)
}

fn summarize(
    kind: &'static str,
    clients: usize,
    started: Instant,
    outcomes: &[TaskOutcome],
) -> WritePhase {
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> =
        outcomes.iter().flat_map(|o| o.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    let errors = outcomes.iter().map(|o| o.errors).sum();
    let first_error = outcomes.iter().find_map(|o| o.first_error.clone());
    let phase = WritePhase {
        kind,
        clients,
        ops,
        errors,
        seconds,
        ops_per_s: ops as f64 / seconds,
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        first_error,
        server_cores: 0.0,
        bench_cores: 0.0,
    };
    tracing::info!(
        kind,
        clients,
        ops,
        errors,
        ops_per_s = format!("{:.0}", phase.ops_per_s),
        p50_ms = format!("{:.2}", phase.p50_ms),
        p99_ms = format!("{:.2}", phase.p99_ms),
        "write phase done"
    );
    if let Some(e) = &phase.first_error {
        tracing::warn!(kind, clients, errors, first_error = %e, "requests failed");
    }
    phase
}

/// `clients` tasks create small ConfigMaps back to back for `phase`. Returns the phase and the
/// names each task created, for the update phase.
/// `n` ValidatingWebhookConfigurations whose rules name Secrets only (never called: the bench
/// writes ConfigMaps), pointing at a port nothing listens on.
async fn create_webhook_configs(client: &kube::Client, n: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for i in 0..n {
        let cfg: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("bench-unmatched-{i}")},
            "webhooks": [{
                "name": format!("unmatched-{i}.bench.kinetic.dev"),
                "clientConfig": {"url": "https://127.0.0.1:1/never"},
                "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                           "apiVersions": ["v1"], "resources": ["secrets"]}],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }],
        }))?;
        api.create(&PostParams::default(), &cfg)
            .await
            .with_context(|| format!("creating webhook configuration {i}"))?;
    }
    Ok(())
}

async fn create_phase(
    client: &kube::Client,
    clients: usize,
    phase: Duration,
) -> anyhow::Result<(WritePhase, Vec<Vec<String>>)> {
    tracing::info!(clients, seconds = phase.as_secs(), "measuring ConfigMap creates");
    let started = Instant::now();
    let deadline = started + phase;
    let tasks = (0..clients)
        .map(|task| {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
            tokio::spawn(async move {
                let mut out = TaskOutcome::default();
                let pp = PostParams::default();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let name = format!("bench-c{clients}-t{task}-{seq}");
                    seq += 1;
                    let cm = config_map(&name, "write", BTreeMap::new());
                    let t0 = Instant::now();
                    let result = timed(|| format!("creating {name}"), api.create(&pp, &cm)).await;
                    if out.record(t0, result) {
                        out.names.push(name);
                    }
                }
                out
            })
        })
        .collect();
    let mut outcomes = join_tasks(tasks).await?;
    let result = summarize("create", clients, started, &outcomes);
    let names = outcomes.iter_mut().map(|o| std::mem::take(&mut o.names)).collect();
    Ok((result, names))
}

/// One task per entry of `names` patches a label of its own ConfigMaps, round-robin, for
/// `phase`. Tasks never touch the same object, so there are no conflicts to retry.
async fn update_phase(
    client: &kube::Client,
    names: Vec<Vec<String>>,
    phase: Duration,
) -> anyhow::Result<WritePhase> {
    let clients = names.len();
    tracing::info!(clients, seconds = phase.as_secs(), "measuring ConfigMap updates (merge patch)");
    let started = Instant::now();
    let deadline = started + phase;
    let tasks = names
        .into_iter()
        .enumerate()
        .map(|(task, mut names)| {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
            tokio::spawn(async move {
                let mut out = TaskOutcome::default();
                let pp = PatchParams::default();
                if names.is_empty() {
                    // Its creates all failed; give it one object so it still updates something.
                    let name = format!("bench-u{clients}-t{task}");
                    let cm = config_map(&name, "write", BTreeMap::new());
                    let created = timed(
                        || format!("creating {name}"),
                        api.create(&PostParams::default(), &cm),
                    )
                    .await;
                    match created {
                        Ok(_) => names.push(name),
                        Err(e) => {
                            out.errors += 1;
                            out.first_error = Some(e);
                            return out;
                        }
                    }
                }
                let mut generation = 0u64;
                while Instant::now() < deadline {
                    let name = &names[(generation as usize) % names.len()];
                    generation += 1;
                    let patch = serde_json::json!({
                        "metadata": {"labels": {GEN_LABEL: generation.to_string()}}
                    });
                    let t0 = Instant::now();
                    let result = timed(
                        || format!("patching {name}"),
                        api.patch(name, &pp, &Patch::Merge(&patch)),
                    )
                    .await;
                    out.record(t0, result);
                }
                out
            })
        })
        .collect();
    let outcomes = join_tasks(tasks).await?;
    Ok(summarize("update", clients, started, &outcomes))
}

/// A small ConfigMap labelled `kinetic.dev/bench=<role>`.
fn config_map(name: &str, role: &str, annotations: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(LABEL.to_owned(), role.to_owned())])),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("key".to_owned(), "value".to_owned())])),
        ..ConfigMap::default()
    }
}

/// Creates `pods` small Pods with [`POD_CONCURRENCY`] requests in flight.
async fn create_pods(client: &kube::Client, pods: usize) -> anyhow::Result<WritePhase> {
    tracing::info!(pods, concurrency = POD_CONCURRENCY, "creating pods");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks = (0..POD_CONCURRENCY.min(pods))
        .map(|_| {
            let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            let next = next.clone();
            tokio::spawn(async move {
                let mut out = TaskOutcome::default();
                let pp = PostParams::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods {
                        break;
                    }
                    let pod = small_pod(&format!("bench-pod-{i}"));
                    let t0 = Instant::now();
                    let result = timed(|| format!("creating pod {i}"), api.create(&pp, &pod)).await;
                    out.record(t0, result);
                }
                out
            })
        })
        .collect();
    let outcomes = join_tasks(tasks).await?;
    let created = summarize("pod create", POD_CONCURRENCY.min(pods), started, &outcomes);
    if created.ops == 0 {
        bail!("no pod could be created: {}", created.first_error.unwrap_or_default());
    }
    Ok(created)
}

/// Times [`LIST_RUNS`] full lists of the pods [`create_pods`] made.
async fn list_pods(
    client: &kube::Client,
    pods: usize,
    created: WritePhase,
) -> anyhow::Result<ListResult> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let mut list_ms = Vec::with_capacity(LIST_RUNS);
    let (mut items, mut body_bytes) = (0, 0);
    for run in 0..LIST_RUNS {
        let req = http::Request::get(&path)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .with_context(|| format!("building GET {path}"))?;
        let t0 = Instant::now();
        let body = timed(|| format!("GET {path}"), client.request_text(req))
            .await
            .map_err(anyhow::Error::msg)?;
        let list: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("parsing the answer to GET {path}"))?;
        let elapsed = t0.elapsed();
        items = list.get("items").and_then(|i| i.as_array()).map_or(0, Vec::len);
        body_bytes = body.len();
        list_ms.push(ms(elapsed));
        tracing::info!(run, items, body_bytes, ms = format!("{:.1}", ms(elapsed)), "listed pods");
    }
    if items as u64 != created.ops {
        tracing::warn!(items, created = created.ops, "the list does not hold every created pod");
    }
    let mut sorted = list_ms.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    Ok(ListResult {
        pods,
        pod_create_errors: created.errors,
        pod_creates_per_s: created.ops_per_s,
        items,
        body_bytes,
        p50_ms: sorted[sorted.len() / 2],
        max_ms: sorted.last().copied().unwrap_or_default(),
        list_ms,
    })
}

/// A Pod with one `busybox` container and nothing else.
fn small_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(LABEL.to_owned(), "list".to_owned())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some("busybox".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// What one watcher saw.
#[derive(Default)]
struct WatcherOutcome {
    established: bool,
    latencies: Vec<Duration>,
    duplicates: usize,
    error: Option<String>,
}

/// Opens `watchers` watches with one label selector, makes [`WATCH_WRITES`] stamped writes at
/// 20/s (to ConfigMaps named after the `round`) and collects every watcher's delivery
/// latencies.
async fn watch_phase(
    client: &kube::Client,
    round: usize,
    watchers: usize,
    server_pid: u32,
    background_writers: usize,
) -> anyhow::Result<WatchResult> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!("{LABEL}=watch");
    // All watchers start at the same resourceVersion, so none can miss a write even if it is
    // still connecting when the writer starts.
    let list = timed(
        || "listing the watched ConfigMaps".to_owned(),
        api.list(&ListParams::default().labels(&selector)),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let rv = list.metadata.resource_version.context("the list has no resourceVersion")?;
    let deadline = Instant::now() + WATCH_LIMIT;

    tracing::info!(watchers, %selector, "opening watches");
    let connect_started = Instant::now();
    let connect = Arc::new(tokio::sync::Semaphore::new(WATCH_CONNECT_CONCURRENCY));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(watchers);
    let wp = WatchParams::default().labels(&selector).timeout(WATCH_LIMIT.as_secs() as u32 + 30);
    let tasks: Vec<_> = (0..watchers)
        .map(|_| {
            let (api, wp, rv, connect, ready) =
                (api.clone(), wp.clone(), rv.clone(), connect.clone(), ready_tx.clone());
            tokio::spawn(watcher(api, wp, rv, connect, ready, deadline))
        })
        .collect();
    drop(ready_tx);
    let mut established = 0;
    for _ in 0..watchers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(true)) => established += 1,
            Ok(Some(false)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    tracing::info!(established, seconds = format!("{connect_seconds:.1}"), "watches open");

    tracing::info!(writes = WATCH_WRITES, background_writers, "writing stamped ConfigMaps at 20/s");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background_started = Instant::now();
    let background: Vec<_> = (0..background_writers)
        .map(|i| tokio::spawn(lease_writer(client.clone(), i, stop.clone())))
        .collect();
    let cpu = CpuSample::take(server_pid)?;
    let mut writer = TaskOutcome::default();
    let mut ticker = tokio::time::interval(WATCH_WRITE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let creates = WATCH_WRITES / 2;
    for i in 0..WATCH_WRITES {
        ticker.tick().await;
        let sent = epoch_nanos()?.to_string();
        let t0 = Instant::now();
        let result = if i < creates {
            let name = format!("bench-watch-{round}-{i}");
            let annotations = BTreeMap::from([
                (SENT_ANNOTATION.to_owned(), sent),
                (INDEX_ANNOTATION.to_owned(), i.to_string()),
            ]);
            let cm = config_map(&name, "watch", annotations);
            timed(|| format!("creating {name}"), api.create(&PostParams::default(), &cm)).await
        } else {
            let name = format!("bench-watch-{round}-{}", i - creates);
            let patch = serde_json::json!({
                "metadata": {"annotations": {SENT_ANNOTATION: sent, INDEX_ANNOTATION: i.to_string()}}
            });
            let pp = PatchParams::default();
            timed(|| format!("patching {name}"), api.patch(&name, &pp, &Patch::Merge(&patch))).await
        };
        writer.record(t0, result);
    }
    if let Some(e) = &writer.first_error {
        tracing::warn!(errors = writer.errors, first_error = %e, "watch-phase writes failed");
    }

    let mut latencies = Vec::with_capacity(watchers * WATCH_WRITES);
    let (mut duplicates, mut watcher_errors, mut first_error) = (0, 0, None);
    let mut established_total = 0;
    for t in tasks {
        let out = t.await.context("a watcher task panicked")?;
        established_total += usize::from(out.established);
        latencies.extend(out.latencies);
        duplicates += out.duplicates;
        if let Some(e) = out.error {
            watcher_errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let (server_cores, bench_cores) = cpu.cores_since(server_pid)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut background_writes = 0u64;
    for b in background {
        background_writes += b.await.context("a background writer panicked")?;
    }
    let background_writes_per_s =
        background_writes as f64 / background_started.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        tracing::warn!(watcher_errors, first_error = %e, "watchers failed");
    }
    latencies.sort_unstable();
    writer.latencies.sort_unstable();
    let successful_writes = writer.latencies.len();
    Ok(WatchResult {
        watchers,
        established: established_total,
        connect_seconds,
        writes: WATCH_WRITES,
        write_errors: writer.errors,
        write_p50_ms: ms(percentile(&writer.latencies, 0.50)),
        expected: watchers * successful_writes,
        received: latencies.len(),
        duplicates,
        watcher_errors,
        first_error,
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        server_cores,
        bench_cores,
        background_writes_per_s,
    })
}

/// Writes one Lease of its own over and over until `stop`, and returns how many writes
/// succeeded: load on another resource than the watched ConfigMaps, as Lease renewals and
/// Events are on a cluster.
async fn lease_writer(
    client: kube::Client,
    index: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use k8s_openapi::api::coordination::v1::Lease;
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let name = format!("bench-background-{index}");
    let lease: Lease = match serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
    {
        Ok(l) => l,
        Err(_) => return 0,
    };
    // An earlier watch phase may have created it already.
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(_) => return 0,
    }
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let patch = serde_json::json!({"spec": {"leaseTransitions": (n % 1_000_000) as i64}});
        if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
            n += 1;
        }
    }
    n
}

/// One watcher: opens its watch (at most [`WATCH_CONNECT_CONCURRENCY`] at a time), says so on
/// `ready`, then records the latency of every stamped write until it has seen all
/// [`WATCH_WRITES`] or the deadline passes.
async fn watcher(
    api: Api<ConfigMap>,
    wp: WatchParams,
    rv: String,
    connect: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::Sender<bool>,
    deadline: Instant,
) -> WatcherOutcome {
    let mut out = WatcherOutcome::default();
    let stream = {
        let _permit = connect.acquire().await;
        tokio::time::timeout_at(deadline, api.watch(&wp, &rv)).await
    };
    let stream = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            out.error = Some(format!("opening the watch: {e}"));
            let _ = ready.send(false).await;
            return out;
        }
        Err(_) => {
            out.error = Some("opening the watch timed out".to_owned());
            let _ = ready.send(false).await;
            return out;
        }
    };
    out.established = true;
    let _ = ready.send(true).await;
    drop(ready);

    let mut stream = std::pin::pin!(stream);
    let mut seen = [false; WATCH_WRITES];
    let mut unique = 0;
    while unique < WATCH_WRITES {
        let event = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                out.error = Some(format!(
                    "gave up after {WATCH_LIMIT:?} with {unique} of {WATCH_WRITES} writes seen"
                ));
                break;
            }
            Ok(None) => {
                out.error = Some(format!(
                    "the server ended the watch after {unique} of {WATCH_WRITES} writes"
                ));
                break;
            }
            Ok(Some(Err(e))) => {
                out.error = Some(format!("reading the watch: {e}"));
                break;
            }
            Ok(Some(Ok(event))) => event,
        };
        let received = epoch_nanos().unwrap_or_default();
        let cm = match event {
            WatchEvent::Added(cm) | WatchEvent::Modified(cm) => cm,
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Deleted(cm) => {
                out.error = Some(format!("unexpected DELETED event for {:?}", cm.metadata.name));
                continue;
            }
            WatchEvent::Error(status) => {
                out.error = Some(format!("ERROR event: {} ({})", status.message, status.code));
                break;
            }
        };
        let annotations = cm.metadata.annotations.unwrap_or_default();
        let sent = annotations.get(SENT_ANNOTATION).and_then(|s| s.parse::<u128>().ok());
        let index = annotations.get(INDEX_ANNOTATION).and_then(|s| s.parse::<usize>().ok());
        let (Some(sent), Some(index)) = (sent, index.filter(|&i| i < WATCH_WRITES)) else {
            out.error = Some(format!("event for {:?} without a valid stamp", cm.metadata.name));
            continue;
        };
        if std::mem::replace(&mut seen[index], true) {
            out.duplicates += 1;
            continue;
        }
        unique += 1;
        let nanos = u64::try_from(received.saturating_sub(sent)).unwrap_or(u64::MAX);
        out.latencies.push(Duration::from_nanos(nanos));
    }
    out
}

/// CPU time (user + system) of the server and of this process at one instant.
struct CpuSample {
    at: Instant,
    server: f64,
    bench: f64,
}

impl CpuSample {
    fn take(server_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: cpu_seconds(&server_pid.to_string())?,
            bench: cpu_seconds("self")?,
        })
    }

    /// Cores used by the server and by this process since the sample: CPU seconds per second.
    fn cores_since(&self, server_pid: u32) -> anyhow::Result<(f64, f64)> {
        let now = Self::take(server_pid)?;
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        Ok(((now.server - self.server) / wall, (now.bench - self.bench) / wall))
    }
}

/// User + system CPU seconds of a process, from `/proc/PID/stat` (fields 14 and 15, in clock
/// ticks of `USER_HZ`, which Linux fixes at 100 for everything it reports to user space).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("parsing {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        let v = fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Ok(v.with_context(|| format!("parsing field {} of {path}", i + 3))? as f64)
    };
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// Nanoseconds since the Unix epoch.
fn epoch_nanos() -> anyhow::Result<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_nanos())
}

/// Nearest-rank percentile of sorted values; zero for none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The cold-start benchmarks' summary of one set of latencies (sorted): a p50 and a p99 row,
/// `{label} p50 ({n} cold starts)`, each against its target in ms when there is one (`targets`:
/// p50, p99), else without.
pub(crate) fn percentile_rows(
    label: &str,
    sorted: &[Duration],
    targets: Option<(u64, u64)>,
) -> Vec<Row> {
    let n = sorted.len();
    [(0.5, "p50"), (0.99, "p99")]
        .into_iter()
        .zip([targets.map(|t| t.0), targets.map(|t| t.1)])
        .map(|((q, name), target)| {
            let v = percentile(sorted, q);
            Row::new(
                format!("{label} {name} ({n} cold starts)"),
                format!("{:.1} ms", ms(v)),
                &target.map(|t| format!("≤ {t} ms")).unwrap_or_default(),
                target.map(|t| v <= Duration::from_millis(t)),
            )
        })
        .collect()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The rows of the final table, targets included.
fn table(r: &Report, args: &ApiArgs) -> Vec<Row> {
    let row = |figure: String, value: String, target: &str, met: Option<bool>| Row {
        figure,
        value,
        target: target.to_owned(),
        met,
    };
    let mut rows = Vec::new();
    for f in &r.floor {
        rows.push(row(
            format!("SQLite floor, {} row(s)/commit", f.rows_per_transaction),
            format!("{:.0} commits/s = {:.0} rows/s", f.commits_per_s, f.rows_per_s),
            "",
            None,
        ));
    }
    for w in &r.writes {
        let (target, met) = match (w.kind, w.clients) {
            ("create", 64) => ("≥ 5000/s", Some(w.ops_per_s >= 5000.0 && w.errors == 0)),
            _ => ("", None),
        };
        let errors = if w.errors > 0 { format!(", {} errors", w.errors) } else { String::new() };
        rows.push(row(
            format!("{}s, {} client(s)", w.kind, w.clients),
            format!(
                "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms; cores: server {:.2}, bench {:.2}{errors})",
                w.ops_per_s, w.p50_ms, w.p99_ms, w.server_cores, w.bench_cores
            ),
            target,
            met,
        ));
    }
    for w in &r.watch {
        let at_target = w.watchers >= 1000;
        rows.push(row(
            format!("watch delivery, {} watchers", w.watchers),
            format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", w.p50_ms, w.p99_ms, w.max_ms),
            if at_target { "p99 ≤ 10 ms" } else { "(target at 1000)" },
            at_target.then_some(w.p99_ms <= 10.0),
        ));
        rows.push(row(
            format!("watch deliveries received, {} watchers", w.watchers),
            format!("{} of {} ({} duplicates)", w.received, w.expected, w.duplicates),
            "all",
            Some(
                w.received == w.expected
                    && w.expected == w.watchers * w.writes
                    && w.duplicates == 0,
            ),
        ));
        if w.background_writes_per_s > 0.0 {
            rows.push(row(
                format!("background Lease writes, {} watchers", w.watchers),
                format!("{:.0}/s during the watch phase", w.background_writes_per_s),
                "",
                None,
            ));
        }
        rows.push(row(
            format!("watch writes (stamp → answer), {} watchers", w.watchers),
            format!(
                "p50 {:.2} ms, {} errors; cores: server {:.2}, bench {:.2}",
                w.write_p50_ms, w.write_errors, w.server_cores, w.bench_cores
            ),
            "",
            None,
        ));
    }
    if let Some(l) = &r.list {
        rows.push(row(
            format!("pod creates, {POD_CONCURRENCY} clients"),
            format!("{:.0}/s ({} errors)", l.pod_creates_per_s, l.pod_create_errors),
            "",
            None,
        ));
        let at_target = l.pods >= 10_000;
        rows.push(row(
            format!("list of {} pods", l.items),
            format!("p50 {:.1} ms, max {:.1} ms, {}", l.p50_ms, l.max_ms, mb(l.body_bytes as u64)),
            if at_target { "p50 ≤ 150 ms" } else { "(target at 10000)" },
            at_target.then_some(l.p50_ms <= 150.0 && l.items == l.pods),
        ));
    }
    rows.push(row("server RSS at start".to_owned(), mb(r.memory.rss_start_bytes), "", None));
    if let Some(rss) = r.memory.rss_after_pods_bytes {
        let at_target = args.pods >= 10_000;
        rows.push(row(
            format!("server RSS with {} pods", args.pods),
            mb(rss),
            if at_target { "≤ 300 MB" } else { "(target at 10000)" },
            at_target.then_some(rss <= 300_000_000),
        ));
        if let Some(l) = &r.list
            && l.items > 0
        {
            let grown = r.memory.rss_after_pod_creates_bytes.unwrap_or(rss);
            let per_object = grown.saturating_sub(r.memory.rss_start_bytes) as f64 / l.items as f64;
            let json = l.body_bytes as f64 / l.items as f64;
            rows.push(row(
                "memory per stored pod".to_owned(),
                format!(
                    "{:.0} B (RSS growth while creating / pods) vs {:.0} B of JSON = {:.1}×",
                    per_object,
                    json,
                    per_object / json
                ),
                "≤ 3× JSON",
                Some(per_object <= 3.0 * json),
            ));
        }
    }
    rows.push(row(
        "server RSS after write phases".to_owned(),
        mb(r.memory.rss_after_writes_bytes),
        "",
        None,
    ));
    rows.push(row(
        "server RSS at end (watchers open)".to_owned(),
        mb(r.memory.rss_end_bytes),
        "",
        None,
    ));
    rows
}

/// Prints the table with aligned columns.
#[allow(clippy::print_stdout)]
pub(crate) fn print_table(rows: &[Row]) {
    let met = |m: Option<bool>| match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    };
    let width = |f: &dyn Fn(&Row) -> usize, title: &str| {
        rows.iter().map(f).chain([title.chars().count()]).max().unwrap_or(0)
    };
    let w0 = width(&|r| r.figure.chars().count(), "figure");
    let w1 = width(&|r| r.value.chars().count(), "value");
    let w2 = width(&|r| r.target.chars().count(), "target");
    println!();
    println!("{:<w0$}  {:<w1$}  {:<w2$}  met?", "figure", "value", "target");
    println!("{}", "-".repeat(w0 + w1 + w2 + 10));
    for r in rows {
        println!("{:<w0$}  {:<w1$}  {:<w2$}  {}", r.figure, r.value, r.target, met(r.met));
    }
}

/// Which node paths a benchmark measures, each on a fresh platform, side by side (issue 14):
/// `kinetic bench pods` and `kinetic bench rollout` share it.
#[derive(clap::Args, Clone, Copy, Debug)]
pub(crate) struct PathArgs {
    /// The pod network to measure: the agent's own netlink wiring (native), the CNI plugins
    /// (cni), or both one after the other, each on a fresh platform, with a side-by-side table
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) network: NetworkChoice,
    /// The container runtime to measure: the agent's own (native), runc under the shims, or
    /// both. With both networks and both runtimes (the default), two paths side by side: the
    /// old one (runc + CNI) and the new one (native runtime + native network)
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) runtime: RuntimeChoice,
}

impl PathArgs {
    /// The (network, runtime) paths to measure, in order.
    pub(crate) fn paths(self) -> Vec<(kinetic_node::NetworkMode, kinetic_node::runtime::Kind)> {
        paths(self.network, self.runtime)
    }
}

/// `--runtime` of `kinetic bench pods` and `kinetic bench rollout`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuntimeChoice {
    Native,
    Runc,
    Both,
}

/// `--network` of `kinetic bench pods` and `kinetic bench rollout`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetworkChoice {
    Native,
    Cni,
    Both,
}

pub(crate) fn network_name(n: kinetic_node::NetworkMode) -> &'static str {
    match n {
        kinetic_node::NetworkMode::Cni => "cni",
        kinetic_node::NetworkMode::Native => "native",
    }
}

/// The (network, runtime) paths to measure: with both of each, the old path (runc + CNI) and
/// the new one (native + native) rather than all four.
fn paths(
    network: NetworkChoice,
    runtime: RuntimeChoice,
) -> Vec<(kinetic_node::NetworkMode, kinetic_node::runtime::Kind)> {
    use kinetic_node::NetworkMode as N;
    use kinetic_node::runtime::Kind as K;
    let nets = match network {
        NetworkChoice::Native => vec![N::Native],
        NetworkChoice::Cni => vec![N::Cni],
        NetworkChoice::Both => vec![N::Cni, N::Native],
    };
    let rts = match runtime {
        RuntimeChoice::Native => vec![K::Native],
        RuntimeChoice::Runc => vec![K::Runc],
        RuntimeChoice::Both => vec![K::Runc, K::Native],
    };
    if nets.len() == 2 && rts.len() == 2 {
        return vec![(N::Cni, K::Runc), (N::Native, K::Native)];
    }
    nets.iter().flat_map(|n| rts.iter().map(move |r| (*n, *r))).collect()
}

/// The floor of a container start, for the benchmarks that compare the start paths.
///
/// Bare runc: the same image's layers mounted as overlayfs, `runc run -d` of `sleep`, then
/// `runc delete -f`. Returns the run times (mount + runc run).
pub(crate) async fn runc_floor(
    dir: &std::path::Path,
    image: &str,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let store = kinetic_image::Store::open(dir.join("node/images"))?;
    let img = store.local(image).context("the bench image is not in the node's store")?;
    let root = dir.join("floor-runc");
    let mut out = Vec::new();
    for i in 0..runs {
        let b = dir.join(format!("floor-{i}"));
        for d in ["rootfs", "upper", "work"] {
            std::fs::create_dir_all(b.join(d))?;
        }
        let lower: Vec<String> = img.layers.iter().rev().map(|p| p.display().to_string()).collect();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "3600"],
                "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": true},
            "root": {"path": b.join("rootfs")},
            "hostname": "floor",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
                      "cgroupsPath": format!("/kinetic-floor/{i}")},
        });
        std::fs::write(b.join("config.json"), serde_json::to_vec(&spec)?)?;
        let start = std::time::Instant::now();
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                b.join("upper").display(),
                b.join("work").display()
            ))
            .arg(b.join("rootfs"))
            .status()?;
        if !st.success() {
            bail!("overlay mount for the floor failed");
        }
        let st = tokio::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "-d", "--pid-file"])
            .arg(b.join("pid"))
            .arg("-b")
            .arg(&b)
            .arg(format!("floor-{i}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await?;
        out.push(start.elapsed());
        // This process is the node agent's subreaper, so the container is our child: kill and
        // reap it before deleting, or cgroup v1 keeps its cgroup busy.
        let pid: i32 = std::fs::read_to_string(b.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        let runc = |args: &[&str]| {
            std::process::Command::new("runc").arg("--root").arg(&root).args(args).output()
        };
        let _ = runc(&["kill", &format!("floor-{i}"), "KILL"]);
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
        }
        let _ = runc(&["delete", "-f", &format!("floor-{i}")]);
        let _ = std::process::Command::new("umount").arg(b.join("rootfs")).status();
        if !st.success() {
            bail!("runc run failed for the floor");
        }
        let _ = std::fs::remove_dir_all(&b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[Duration::from_millis(7)], 0.99), Duration::from_millis(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn both_runtimes_and_networks_compare_the_old_path_with_the_new_one() {
        use kinetic_node::NetworkMode as N;
        use kinetic_node::runtime::Kind as K;
        let both = PathArgs { network: NetworkChoice::Both, runtime: RuntimeChoice::Both };
        assert_eq!(both.paths(), vec![(N::Cni, K::Runc), (N::Native, K::Native)]);
        let native = PathArgs { network: NetworkChoice::Native, runtime: RuntimeChoice::Both };
        assert_eq!(native.paths(), vec![(N::Native, K::Runc), (N::Native, K::Native)]);
        let one = PathArgs { network: NetworkChoice::Cni, runtime: RuntimeChoice::Runc };
        assert_eq!(one.paths(), vec![(N::Cni, K::Runc)]);
    }
}
