//! `kinetic bench pods`: pod create → Ready latency and start throughput on this machine.
//!
//! Everything runs in this process, wired as `kinetic up` wires it: the embedded API server on
//! a free loopback port with a fresh data directory, the scheduler and one node agent (its own
//! bridge `kbench0` and pod range 10.202.0.0/16), talking HTTPS through the real `kube` client.
//! A docker-registry on 127.0.0.1 serves a small busybox image built from `/bin/busybox`; one
//! warm-up pod pulls it, so every measured pod starts from a cached image.
//!
//! Phases (each pod runs `sleep 3600`, no probes, `terminationGracePeriodSeconds: 0`):
//! 1. **Sequential**: `--pods` pods, one at a time: latency from just before the create request
//!    to the moment a watch (opened beforehand) delivers the pod with `Ready=True`.
//! 2. **Concurrent**: the same with `--concurrency` creates in flight.
//! 3. **Saturation**: `--burst` pods created with `--concurrency` in flight; pods per minute =
//!    pods / (time from the first create to the last Ready).
//! 4. **Floor**: `runc run -d` of an equivalent bundle (same image layers as an overlayfs
//!    rootfs, same command, no network namespace) and `runc delete -f`, `--floor-runs` times.
//!
//! `--network` picks the pod network: `cni` (the CNI plugins), `native` (the agent's netlink
//! wiring) or `both` (the default): one fresh platform per mode, one after the other, and a
//! side-by-side table of the two at the end. `--runtime` likewise picks the container runtime
//! (`runc`, `native`, `both`); with both of each (the default) the two paths compared are the
//! old one (runc + CNI) and the new one (native runtime + native network). Unless `cni` alone
//! is measured, one more platform runs the last native-network path with `--ready-sandboxes`
//! (default 8, at least one kept when idle) pod sandboxes made ahead of their pods (a `+ready`
//! column; 0 leaves it out).
//!
//! Phase shares come from the pods' timeline annotations (what `kinetic trace pods` shows).
//! Pods of a phase are deleted, and torn down on the node, before the next phase starts. Load stays on 127.0.0.1 and the
//! node's own bridge; every wait is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::timeline::Timeline;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::bench::{Row, ms, percentile, print_table};

/// Arguments of `kinetic bench pods`.
#[derive(clap::Args)]
pub struct PodsArgs {
    /// Pods in each latency phase
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Creates in flight in the concurrent and saturation phases
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Pods in the saturation phase
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// Bare `runc run` repetitions for the floor
    #[arg(long, default_value_t = 30)]
    floor_runs: usize,
    #[command(flatten)]
    paths: crate::bench::PathArgs,
    /// Also measure the last native-network path with up to this many ready sandboxes (at
    /// least one kept when idle), on a fresh platform, as its own column; 0 leaves it out
    #[arg(long, value_name = "N", default_value_t = 8)]
    ready_sandboxes: usize,
}

/// What the side-by-side table shows of one network mode's run.
struct Summary {
    mode: String,
    seq_p50: Duration,
    seq_p99: Duration,
    /// Sequential pods with a timeline, and of them those that claimed a ready sandbox.
    seq_pods: usize,
    ready_claims: usize,
    per_min: f64,
    own_ms: f64,
    children_ms: f64,
    /// Mean CPU of a sequential start by process (timelines): network step, all processes.
    network_ms: f64,
    all_ms: f64,
}

const LABEL: &str = "kinetic.dev/bench";

/// Ready instants seen by the watch, by pod name.
type ReadyTimes = Arc<Mutex<HashMap<String, Instant>>>;

pub(crate) fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod(name: &str, image: &str, phase: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: phase}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": image, "command": ["sleep", "3600"]}],
        },
    }))?)
}

/// Runs the benchmark.
///
/// # Errors
/// The platform cannot be started, or a pod does not become Ready within 60 s.
pub async fn run(args: PodsArgs) -> anyhow::Result<()> {
    if args.pods == 0 || args.concurrency == 0 {
        bail!("--pods and --concurrency must be at least 1");
    }
    let mut summaries = Vec::new();
    let off = kinetic_node::ReadySandboxes::default();
    let mut runs: Vec<(kinetic_node::NetworkMode, kinetic_node::runtime::Kind, _)> =
        args.paths.paths().into_iter().map(|(n, r)| (n, r, off)).collect();
    if args.ready_sandboxes > 0
        && let Some(&(n, r, _)) =
            runs.iter().rev().find(|(n, _, _)| *n == kinetic_node::NetworkMode::Native)
    {
        runs.push((
            n,
            r,
            kinetic_node::ReadySandboxes { min: 1, max: args.ready_sandboxes, ..off },
        ));
    }
    for (network, runtime, ready) in runs {
        let ready_col = if ready.max > 0 { "+ready" } else { "" };
        let name = format!("{runtime}+{}{ready_col}", crate::bench::network_name(network));
        #[allow(clippy::print_stdout)]
        {
            println!(
                "\n=== pod start path: {runtime} runtime, {} network{} ===",
                crate::bench::network_name(network),
                if ready.max > 0 { ", ready sandboxes" } else { "" }
            );
        }
        let platform = crate::platform::Platform::start_with(
            "kinetic-bench-pods",
            "kbench0",
            "10.202.0.0/16",
            args.burst.max(args.pods) + 10,
            false,
            crate::platform::NodeSetup { network, runtime, ready },
        )
        .await?;
        let measured = platform.run(async |platform| measure(platform, &args).await).await?;
        summaries.push(report(&args, name, measured));
    }
    if summaries.len() > 1 {
        println_side_by_side(&summaries);
    }
    Ok(())
}

/// The side-by-side table of the network modes measured in this run.
#[allow(clippy::print_stdout)] // the benchmark's report is its output
fn println_side_by_side(sums: &[Summary]) {
    println!();
    println!("pod start paths side by side (runtime+network; same run, same machine)");
    print!("{:<58}", "");
    for s in sums {
        print!("  {:>14}", s.mode);
    }
    println!();
    type Cell = fn(&Summary) -> String;
    let rows: [(&str, Cell); 8] = [
        ("create→Ready p50, one at a time", |s| format!("{:.1} ms", ms(s.seq_p50))),
        ("create→Ready p99, one at a time", |s| format!("{:.1} ms", ms(s.seq_p99))),
        ("sequential pods that claimed a ready sandbox", |s| {
            format!("{}/{}", s.ready_claims, s.seq_pods)
        }),
        ("pods started per minute (saturation)", |s| format!("{:.0}", s.per_min)),
        ("CPU per pod start: this process (saturation)", |s| format!("{:.1} ms", s.own_ms)),
        ("CPU per pod start: children (saturation)", |s| format!("{:.1} ms", s.children_ms)),
        ("CPU of the network step per sequential start (timelines)", |s| {
            format!("{:.1} ms", s.network_ms)
        }),
        ("CPU per sequential start, all processes (timelines)", |s| format!("{:.1} ms", s.all_ms)),
    ];
    for (label, f) in rows {
        print!("{label:<58}");
        for s in sums {
            print!("  {:>14}", f(s));
        }
        println!();
    }
}

/// Prints one run's tables and returns its summary.
fn report(args: &PodsArgs, mode: String, measured: Measured) -> Summary {
    let Measured { seq, conc, timelines, burst_wall, cpu0, cpu1, cpu2, floor } = measured;

    let lat = |v: &[(String, Duration, Instant)]| {
        let mut d: Vec<Duration> = v.iter().map(|(_, d, _)| *d).collect();
        d.sort();
        d
    };
    let (s, c) = (lat(&seq), lat(&conc));
    let per_min = args.burst as f64 / burst_wall.as_secs_f64().max(1e-9) * 60.0;
    let mut f = floor.clone();
    f.sort();
    let rows = vec![
        Row::new(
            format!("create→Ready p50, {} pods one at a time", args.pods),
            format!("{:.1} ms", ms(percentile(&s, 0.5))),
            "≤ 150 ms",
            Some(percentile(&s, 0.5) <= Duration::from_millis(150)),
        ),
        Row::new(
            format!("create→Ready p99, {} pods one at a time", args.pods),
            format!("{:.1} ms", ms(percentile(&s, 0.99))),
            "≤ 400 ms",
            Some(percentile(&s, 0.99) <= Duration::from_millis(400)),
        ),
        Row::new(
            format!("create→Ready p50, {} at a time", args.concurrency),
            format!("{:.1} ms", ms(percentile(&c, 0.5))),
            "≤ 150 ms",
            Some(percentile(&c, 0.5) <= Duration::from_millis(150)),
        ),
        Row::new(
            format!("create→Ready p99, {} at a time", args.concurrency),
            format!("{:.1} ms", ms(percentile(&c, 0.99))),
            "≤ 400 ms",
            Some(percentile(&c, 0.99) <= Duration::from_millis(400)),
        ),
        Row::new(
            format!(
                "pods started per minute ({} pods, {} in flight)",
                args.burst, args.concurrency
            ),
            format!("{per_min:.0}"),
            "≥ 3,000",
            Some(per_min >= 3000.0),
        ),
        Row::new(
            "  CPU per pod start: this process (API server, scheduler, agent)".into(),
            format!("{:.1} ms", (cpu1.0 - cpu0.0) * 10.0 / args.burst as f64),
            "",
            None,
        ),
        Row::new(
            "  CPU per pod start: children (runc, CNI plugins or ip netns)".into(),
            format!("{:.1} ms", (cpu1.1 - cpu0.1) * 10.0 / args.burst as f64),
            "",
            None,
        ),
        Row::new(
            "  CPU per pod delete: this process / children".into(),
            format!(
                "{:.1} / {:.1} ms",
                (cpu2.0 - cpu1.0) * 10.0 / args.burst as f64,
                (cpu2.1 - cpu1.1) * 10.0 / args.burst as f64
            ),
            "",
            None,
        ),
        Row::new(
            "floor: bare `runc run -d` + overlay mount, p50".into(),
            format!("{:.1} ms", ms(percentile(&f, 0.5))),
            "",
            None,
        ),
        Row::new(
            "sequential p50 / floor p50".into(),
            format!("{:.1}×", ms(percentile(&s, 0.5)) / ms(percentile(&f, 0.5)).max(1e-9)),
            "",
            None,
        ),
    ];
    print_table(&rows);
    println_shares(&timelines);
    let cpu = println_cpu(&timelines);
    let n = cpu.1.max(1) as f64;
    Summary {
        mode,
        seq_p50: percentile(&s, 0.5),
        seq_p99: percentile(&s, 0.99),
        seq_pods: timelines.len(),
        ready_claims: timelines.iter().filter(|t| t.ready_sandbox).count(),
        per_min,
        own_ms: (cpu1.0 - cpu0.0) * 10.0 / args.burst as f64,
        children_ms: (cpu1.1 - cpu0.1) * 10.0 / args.burst as f64,
        network_ms: cpu.0.network_us as f64 / n / 1000.0,
        all_ms: cpu.0.total_us() as f64 / n / 1000.0,
    }
}

/// The mean CPU of a sequential pod's start by process, from the timelines (issue 14): unlike
/// the process-wide figures above it includes the shims, which live until their pod goes.
#[allow(clippy::print_stdout)] // the benchmark's report is its output
fn println_cpu(tls: &[Timeline]) -> (kinetic_api::timeline::CpuTime, u64) {
    let mut sum = kinetic_api::timeline::CpuTime::default();
    let mut n = 0u64;
    for t in tls {
        let (Some(sb), Some(c)) = (t.sandbox_cpu, t.containers.first().and_then(|c| c.cpu)) else {
            continue;
        };
        n += 1;
        sum.agent_us += sb.agent_us + c.agent_us;
        sum.network_us += sb.network_us + c.network_us;
        sum.shim_us += sb.shim_us + c.shim_us;
        sum.runc_us += sb.runc_us + c.runc_us;
        sum.init_us += sb.init_us + c.init_us;
    }
    if n == 0 {
        return (sum, 0);
    }
    let m = |us: u64| us as f64 / n as f64 / 1000.0;
    println!(
        "CPU per sequential pod start over {n} pods (from their timelines): agent {:.1} ms, \
         network {:.1} ms, shim {:.1} ms, runc {:.1} ms, container init {:.1} ms; all {:.1} ms",
        m(sum.agent_us),
        m(sum.network_us),
        m(sum.shim_us),
        m(sum.runc_us),
        m(sum.init_us),
        m(sum.total_us())
    );
    (sum, n)
}

/// What one run measured.
struct Measured {
    seq: Vec<(String, Duration, Instant)>,
    conc: Vec<(String, Duration, Instant)>,
    timelines: Vec<Timeline>,
    burst_wall: Duration,
    cpu0: (f64, f64),
    cpu1: (f64, f64),
    cpu2: (f64, f64),
    floor: Vec<Duration>,
}

/// The phases, on a running platform (which tears itself down afterwards, also when a phase
/// fails or the run is interrupted).
async fn measure(
    platform: &crate::platform::Platform,
    args: &PodsArgs,
) -> anyhow::Result<Measured> {
    let (client, registry) = (platform.client.clone(), &platform.registry);
    let image = kinetic_testkit::images::busybox(registry, "bench", "v1", &[]).await?;
    eprintln!("platform up; image {image}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let node_pods = platform.node_pods();
    let ready: ReadyTimes = Arc::default();
    let watch = {
        let ready = ready.clone();
        let api = pods.clone();
        crate::platform::AbortOnDrop(tokio::spawn(async move {
            use kube::runtime::WatchStreamExt as _;
            let mut s = watcher::watcher(api, watcher::Config::default().labels(LABEL))
                .default_backoff()
                .boxed();
            while let Some(ev) = s.next().await {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = ev
                    && is_ready(&p)
                {
                    let name = p.metadata.name.unwrap_or_default();
                    if let Ok(mut m) = ready.lock() {
                        m.entry(name).or_insert_with(Instant::now);
                    }
                }
            }
        }))
    };
    // Warm-up: pull the image once.
    run_phase(&pods, &ready, &image, "warm", 1, 1).await?;
    clear(&pods, "warm", &node_pods).await?;

    let seq = run_phase(&pods, &ready, &image, "seq", args.pods, 1).await?;
    let timelines = timelines(&pods, "seq").await?;
    clear(&pods, "seq", &node_pods).await?;
    let conc = run_phase(&pods, &ready, &image, "conc", args.pods, args.concurrency).await?;
    clear(&pods, "conc", &node_pods).await?;
    let cpu0 = cpu_ticks()?;
    let t0 = Instant::now();
    let burst = run_phase(&pods, &ready, &image, "burst", args.burst, args.concurrency).await?;
    let burst_wall =
        burst.iter().map(|(_, _, ready_at)| *ready_at).max().map_or(Duration::ZERO, |t| t - t0);
    let cpu1 = cpu_ticks()?;
    clear(&pods, "burst", &node_pods).await?;
    let cpu2 = cpu_ticks()?;
    drop(watch);

    let floor = crate::bench::runc_floor(platform.path(), &image, args.floor_runs).await?;
    Ok(Measured { seq, conc, timelines, burst_wall, cpu0, cpu1, cpu2, floor })
}

/// (own, reaped children) CPU of this process in clock ticks (1/100 s).
fn cpu_ticks() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("parsing /proc/self/stat")?;
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // `rest` starts at field 3: utime, stime, cutime, cstime are fields 14..=17.
    let g = |i: usize| f.get(i - 3).copied().unwrap_or(0.0);
    Ok((g(14) + g(15), g(16) + g(17)))
}

/// Creates `n` pods named `<phase>-<i>` with `conc` creates in flight, each waiting for its
/// own Ready; returns (name, latency, ready instant).
async fn run_phase(
    pods: &Api<Pod>,
    ready: &ReadyTimes,
    image: &str,
    phase: &str,
    n: usize,
    conc: usize,
) -> anyhow::Result<Vec<(String, Duration, Instant)>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc.min(n) {
        let (pods, ready, image, phase, next) =
            (pods.clone(), ready.clone(), image.to_owned(), phase.to_owned(), next.clone());
        tasks.push(crate::platform::AbortOnDrop(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(out);
                }
                let name = format!("{phase}-{i}");
                let p = pod(&name, &image, &phase)?;
                let start = Instant::now();
                pods.create(&PostParams::default(), &p)
                    .await
                    .with_context(|| format!("creating {name}"))?;
                let deadline = start + Duration::from_secs(60);
                loop {
                    let at = ready.lock().ok().and_then(|m| m.get(&name).copied());
                    if let Some(at) = at {
                        out.push((name, at.saturating_duration_since(start), at));
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("pod {name} was not Ready within 60 s");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.join().await??);
    }
    Ok(all)
}

async fn timelines(pods: &Api<Pod>, phase: &str) -> anyhow::Result<Vec<Timeline>> {
    // The agent writes the annotation just after Ready: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = pods.list(&ListParams::default().labels(&format!("{LABEL}={phase}"))).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| p.metadata.annotations.as_ref()?.get(kinetic_api::timeline::ANNOTATION))
        .filter_map(|a| serde_json::from_str(a).ok())
        .collect())
}

/// Deletes the phase's pods and waits until they are gone from the API and the node has torn
/// them down (no pod directory left), so no teardown work overlaps the next phase.
async fn clear(pods: &Api<Pod>, phase: &str, node_pods: &std::path::Path) -> anyhow::Result<()> {
    let lp = ListParams::default().labels(&format!("{LABEL}={phase}"));
    pods.delete_collection(&DeleteParams::default(), &lp).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&lp).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods of phase {phase} were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while std::fs::read_dir(node_pods).map(|mut d| d.next().is_some()).unwrap_or(false) {
        if Instant::now() > deadline {
            bail!("the node did not tear down the pods of phase {phase} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Mean share of each start-up phase over the sequential pods.
fn println_shares(tls: &[Timeline]) {
    let d = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| -> f64 {
        match (a, b) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64() * 1000.0,
            _ => 0.0,
        }
    };
    let mut sums = [0.0f64; 6];
    let mut n = 0.0;
    for t in tls {
        let Some(c) = t.containers.first() else { continue };
        let parts = [
            d(t.created, t.scheduled),
            d(t.scheduled, t.observed),
            d(t.observed, t.sandbox_ready),
            d(t.sandbox_ready, c.created),
            d(c.created, c.started),
            d(c.started, t.ready),
        ];
        for (s, p) in sums.iter_mut().zip(parts) {
            *s += p;
        }
        n += 1.0;
    }
    if n == 0.0 {
        return;
    }
    let total: f64 = sums.iter().sum();
    let names = [
        "schedule (created → bound)",
        "node pickup (bound → agent saw it)",
        "sandbox (netns + CNI + /etc)",
        "image + config (cache hit, env, volumes)",
        "container create + start (overlay, runc run)",
        "status report (started → Ready written)",
    ];
    #[allow(clippy::print_stdout)]
    {
        println!();
        println!("phase shares over {n:.0} sequential pods (from their timelines)");
        println!("{:<46}  {:>9}  {:>6}", "phase", "mean ms", "share");
        for (name, s) in names.iter().zip(sums) {
            println!("{name:<46}  {:>9.1}  {:>5.1}%", s / n, s / total.max(1e-9) * 100.0);
        }
    }
}
