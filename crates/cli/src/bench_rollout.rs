//! `kinetic bench rollout`: the release of an app of small HTTP pods to a new image, the same
//! release done three ways in one run on one node — a Deployment rolling update, a CloneSet
//! with ReCreate and a CloneSet with InPlaceIfPossible — with the same maxUnavailable and no
//! surge, once with the new image already on the node and once without.
//!
//! Measured per release, from the spec change:
//! - the time until every pod runs the new image and is Ready (and the workload's status says
//!   so);
//! - pod IP changes: final pods whose (UID, IP) was not there before the release;
//! - the fewest Ready pods at any moment, and how long fewer than all were Ready.
//!
//! Then a sidecar upgrade of as many pods: a SidecarSet in place against a Deployment that
//! recreates its pods with the new sidecar (`bench_sidecar`).
//!
//! All of it runs once per node path (issue 14), each on a fresh platform: by default the old
//! one (runc + CNI) and the new one (native runtime + native network), chosen with `--runtime`
//! and `--network` as in `kinetic bench pods` (`bench::PathArgs`), with the bare `runc run`
//! floor measured on each, and a side-by-side table at the end. The in-place releases also
//! report each restart's steps in the agent from the pods' timelines (`Timeline::restart`:
//! seen, SIGTERM, exit, image + config, rootfs, config.json, started, reported, ready;
//! `bench_rollout_restart`).
//!
//! Every pod runs `httpd` (under a shell that exits on SIGTERM) with an HTTP readiness probe
//! every second, so Ready means serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{ResourceExt as _, core::DynamicObject, discovery::ApiResource};
use serde_json::json;
use tokio::time::Instant;

use kinetic_api::timeline::RestartTimeline;

use crate::bench::{Row, ms, percentile, print_table};
use crate::bench_pods::is_ready;
use crate::bench_rollout_restart::{self as restart, Column};

/// Arguments of `kinetic bench rollout`.
#[derive(clap::Args)]
pub struct RolloutArgs {
    /// Pods of the app
    #[arg(long, default_value_t = 20)]
    replicas: u32,
    /// maxUnavailable of every strategy (maxSurge is 0 for all)
    #[arg(long, default_value = "25%")]
    max_unavailable: String,
    /// Only the sidecar upgrade (SidecarSet in place against recreating the pods)
    #[arg(long)]
    sidecar_only: bool,
    /// Leave out the sidecar upgrade
    #[arg(long, conflicts_with = "sidecar_only")]
    no_sidecar: bool,
    #[command(flatten)]
    paths: crate::bench::PathArgs,
    /// Bare `runc run` repetitions for the floor, on each path's platform
    #[arg(long, default_value_t = 10)]
    floor_runs: usize,
    /// The node's bridge (created and removed by the benchmark)
    #[arg(long, default_value = "kbench1")]
    bridge: String,
    /// The node's pod range
    #[arg(long, default_value = "10.203.0.0/16")]
    pod_cidr: String,
}

const LABEL: &str = "kinetic.dev/bench-rollout";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deployment,
    ReCreate,
    InPlace,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment rolling update",
            Kind::ReCreate => "CloneSet ReCreate",
            Kind::InPlace => "CloneSet InPlaceIfPossible",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "deploy",
            Kind::ReCreate => "recreate",
            Kind::InPlace => "inplace",
        }
    }
}

struct Outcome {
    kind: Kind,
    cached: bool,
    took: Duration,
    ip_changes: usize,
    min_ready: usize,
    below_full: Duration,
    /// For in-place releases: the mean time of each step of a pod's update.
    phases: Option<Phases>,
    /// For in-place releases: the restarts' own steps, from the pods' timelines.
    restarts: Vec<RestartTimeline>,
}

/// When the watch first saw each step of one pod's in-place update, from the release start.
#[derive(Default, Clone)]
struct PodSteps {
    /// `InPlaceUpdateReady` False (the pod left the endpoints).
    gate_false: Option<Duration>,
    /// The pod's spec carries the new image.
    spec: Option<Duration>,
    /// The container status reports the new image running.
    restarted: Option<Duration>,
    /// ... and ready.
    container_ready: Option<Duration>,
    /// `InPlaceUpdateReady` True again.
    gate_true: Option<Duration>,
    /// The pod Ready again.
    ready: Option<Duration>,
}

/// Mean durations of the steps of an in-place update, over the pods that went through all.
#[derive(Clone, Copy)]
struct Phases {
    /// From the release start to the first pod's gate False.
    first_start: Duration,
    gate_to_spec: Duration,
    spec_to_restarted: Duration,
    restarted_to_container_ready: Duration,
    container_ready_to_gate: Duration,
    gate_to_ready: Duration,
    /// From one pod Ready to the next pod's gate False (the controller's reaction).
    ready_to_next_start: Duration,
}

impl PodSteps {
    fn observe(&mut self, p: &Pod, v2: &str, at: Duration) {
        let cond = |t: &str| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == t))
                .map(|c| c.status == "True")
        };
        if self.gate_false.is_none() && cond("InPlaceUpdateReady") == Some(false) {
            self.gate_false = Some(at);
        }
        if self.gate_false.is_none() {
            return;
        }
        if self.spec.is_none() && image(p) == Some(v2) {
            self.spec = Some(at);
        }
        let c =
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first());
        let running_new = c.is_some_and(|c| {
            c.image == v2 && c.state.as_ref().is_some_and(|s| s.running.is_some())
        });
        if self.restarted.is_none() && running_new {
            self.restarted = Some(at);
        }
        if self.container_ready.is_none() && running_new && c.is_some_and(|c| c.ready) {
            self.container_ready = Some(at);
        }
        if self.container_ready.is_some() {
            if self.gate_true.is_none() && cond("InPlaceUpdateReady") == Some(true) {
                self.gate_true = Some(at);
            }
            if self.ready.is_none() && is_ready(p) {
                self.ready = Some(at);
            }
        }
    }
}

fn phases(steps: &BTreeMap<String, PodSteps>) -> Option<Phases> {
    let full: Vec<[Duration; 6]> = steps
        .values()
        .filter_map(|s| {
            Some([s.gate_false?, s.spec?, s.restarted?, s.container_ready?, s.gate_true?, s.ready?])
        })
        .collect();
    if full.is_empty() {
        return None;
    }
    let mean = |i: usize, j: usize| {
        let total: Duration = full.iter().map(|t| t[j].saturating_sub(t[i])).sum();
        total / u32::try_from(full.len()).unwrap_or(1)
    };
    // Each pod's start against the latest Ready before it: how long the controller took to
    // start the next update once a slot was free.
    let mut starts: Vec<Duration> = full.iter().map(|t| t[0]).collect();
    starts.sort();
    let readies: Vec<Duration> = full.iter().map(|t| t[5]).collect();
    let gaps: Vec<Duration> = starts
        .iter()
        .filter_map(|s| readies.iter().filter(|r| *r <= s).max().map(|r| *s - *r))
        .collect();
    let ready_to_next_start = if gaps.is_empty() {
        Duration::ZERO
    } else {
        gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).unwrap_or(1)
    };
    Some(Phases {
        first_start: starts[0],
        gate_to_spec: mean(0, 1),
        spec_to_restarted: mean(1, 2),
        restarted_to_container_ready: mean(2, 3),
        container_ready_to_gate: mean(3, 4),
        gate_to_ready: mean(4, 5),
        ready_to_next_start,
    })
}

fn image(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.containers.first()?.image.as_deref()
}

fn template(app: &str, image: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app, LABEL: "1"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": image,
                // A shell that ends on SIGTERM: pid 1 without a handler would ignore it and
                // every stop would wait out the grace period.
                "command": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }],
        },
    })
}

fn workload(kind: Kind, replicas: u32, max_unavailable: &str, image: &str) -> serde_json::Value {
    let app = kind.name();
    let selector = json!({"matchLabels": {"app": app}});
    match kind {
        Kind::Deployment => json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {
                "replicas": replicas, "selector": selector, "template": template(app, image),
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": 0}},
            },
        }),
        Kind::ReCreate | Kind::InPlace => json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {
                "replicas": replicas, "selector": selector, "template": template(app, image),
                "updateStrategy": {
                    "type": if kind == Kind::InPlace { "InPlaceIfPossible" } else { "ReCreate" },
                    "maxUnavailable": max_unavailable, "maxSurge": 0,
                },
            },
        }),
    }
}

fn api_of(client: &kube::Client, kind: Kind) -> Api<DynamicObject> {
    let ar = match kind {
        Kind::Deployment => {
            ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment"))
        }
        _ => ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "apps.kruise.io",
            "v1alpha1",
            "CloneSet",
        )),
    };
    Api::namespaced_with(client.clone(), "default", &ar)
}

/// Pods of `app` not being deleted.
async fn live(pods: &Api<Pod>, app: &str) -> anyhow::Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// The six releases, on a running platform (which tears itself down afterwards, also when a
/// release fails or the run is interrupted).
async fn releases(
    platform: &crate::platform::Platform,
    args: &RolloutArgs,
) -> anyhow::Result<Vec<Outcome>> {
    let n = args.replicas as usize;
    let client = platform.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Wait for the CloneSet CRD the controllers install.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_of(&client, Kind::InPlace).list(&ListParams::default()).await.is_err() {
        if Instant::now() > deadline {
            bail!("the CloneSet CRD was not served within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut outcomes = Vec::new();
    for cached in [true, false] {
        for kind in [Kind::Deployment, Kind::ReCreate, Kind::InPlace] {
            let tag = format!("{}-{}", kind.name(), if cached { "cached" } else { "cold" });
            let v1 = kinetic_testkit::images::busybox(
                &platform.registry,
                "web",
                &format!("{tag}-v1"),
                &[("www/index.html", "v1\n")],
            )
            .await?;
            let v2 = kinetic_testkit::images::busybox(
                &platform.registry,
                "web",
                &format!("{tag}-v2"),
                &[("www/index.html", &format!("{tag} v2\n"))],
            )
            .await?;
            if cached {
                preload(&pods, &v2).await?;
            }
            let o = release(&client, &pods, kind, cached, args, &v1, &v2).await?;
            eprintln!(
                "{:<28} {:<6} {:>9.0} ms  ip changes {:>3}  min ready {:>3}/{n}  below full {:>7.0} ms",
                kind.label(),
                if cached { "cached" } else { "cold" },
                ms(o.took),
                o.ip_changes,
                o.min_ready,
                ms(o.below_full)
            );
            outcomes.push(o);
        }
    }
    Ok(outcomes)
}

/// What one path's platform measured.
struct PathRun {
    outcomes: Vec<Outcome>,
    sidecar: Option<(crate::bench_sidecar::Outcome, crate::bench_sidecar::Outcome)>,
    floor: Vec<Duration>,
}

/// Runs the benchmark.
///
/// # Errors
/// The platform cannot be started, or a release does not finish within 5 minutes.
pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    if args.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    let n = args.replicas as usize;
    let mut columns = Vec::new();
    for (network, runtime) in args.paths.paths() {
        let path = format!("{runtime}+{}", crate::bench::network_name(network));
        #[allow(clippy::print_stdout)]
        {
            println!(
                "\n=== release path: {runtime} runtime, {} network ===",
                crate::bench::network_name(network)
            );
        }
        let platform = crate::platform::Platform::start_with(
            "kinetic-bench-rollout",
            &args.bridge,
            &args.pod_cidr,
            3 * n + 10,
            true,
            crate::platform::NodeSetup { network, runtime, ..Default::default() },
        )
        .await?;
        let measured = platform.run(async |platform| measure(platform, &args).await).await?;
        columns.push(report(&args, path, &measured));
    }
    if columns.len() > 1 {
        restart::print_side_by_side(&columns);
    }
    Ok(())
}

/// The releases, the sidecar upgrade and the floor on one path's platform.
async fn measure(
    platform: &crate::platform::Platform,
    args: &RolloutArgs,
) -> anyhow::Result<PathRun> {
    let outcomes = if args.sidecar_only { Vec::new() } else { releases(platform, args).await? };
    let sidecar = if args.no_sidecar {
        None
    } else {
        Some(crate::bench_sidecar::run(platform, args.replicas, &args.max_unavailable).await?)
    };
    let floor = if args.floor_runs == 0 {
        Vec::new()
    } else {
        let image =
            kinetic_testkit::images::busybox(&platform.registry, "floor", "v1", &[]).await?;
        let pods: Api<Pod> = Api::namespaced(platform.client.clone(), "default");
        preload(&pods, &image).await?;
        crate::bench::runc_floor(platform.path(), &image, args.floor_runs).await?
    };
    Ok(PathRun { outcomes, sidecar, floor })
}

/// Prints one path's table and returns its column of the side-by-side table.
fn report(args: &RolloutArgs, path: String, run: &PathRun) -> Column {
    let n = args.replicas as usize;
    let outcomes = &run.outcomes;
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for cached in [true, false] {
        let get = |k: Kind| outcomes.iter().find(|o| o.kind == k && o.cached == cached);
        let (Some(d), Some(r), Some(i)) =
            (get(Kind::Deployment), get(Kind::ReCreate), get(Kind::InPlace))
        else {
            continue;
        };
        let which = if cached { "new image on the node" } else { "new image not on the node" };
        let short = if cached { "cached" } else { "cold" };
        for o in [d, r, i] {
            rows.push(Row::new(
                format!("{} pods, {which}: {}", n, o.kind.label()),
                format!(
                    "{:.0} ms; IP changes {}; min ready {}/{n}; below full {:.0} ms",
                    ms(o.took),
                    o.ip_changes,
                    o.min_ready,
                    ms(o.below_full)
                ),
                if o.kind == Kind::InPlace { "≤ 300 ms (issue 14)" } else { "" },
                (o.kind == Kind::InPlace).then_some(o.took <= Duration::from_millis(300)),
            ));
            cells.push((
                format!("{n} pods, {short}: {}", o.kind.label()),
                format!("{:.0} ms", ms(o.took)),
            ));
        }
        cells.push((format!("  in-place IP changes ({short})"), i.ip_changes.to_string()));
        if let Some(ph) = i.phases {
            rows.push(Row::new(
                format!("  in-place steps per pod, mean ms ({which})"),
                format!(
                    "first start {:.0}; gate→spec {:.0}; spec→restarted {:.0}; →container ready {:.0}; →gate {:.0}; →Ready {:.0}; Ready→next start {:.0}",
                    ms(ph.first_start),
                    ms(ph.gate_to_spec),
                    ms(ph.spec_to_restarted),
                    ms(ph.restarted_to_container_ready),
                    ms(ph.container_ready_to_gate),
                    ms(ph.gate_to_ready),
                    ms(ph.ready_to_next_start),
                ),
                "",
                None,
            ));
        }
        let speedup = ms(d.took) / ms(i.took).max(1e-9);
        rows.push(Row::new(
            format!("  in-place speed-up over the Deployment ({which})"),
            format!("{speedup:.1}× with {} IP changes", i.ip_changes),
            "≥ 2× (issue 14; issue 4 asked 5×) and 0 IP changes",
            Some(speedup >= 2.0 && i.ip_changes == 0),
        ));
        cells.push((
            format!("  in-place speed-up over the Deployment ({short})"),
            format!("{speedup:.1}×"),
        ));
        rows.push(Row::new(
            format!("  in-place speed-up over CloneSet ReCreate ({which})"),
            format!("{:.1}×", ms(r.took) / ms(i.took).max(1e-9)),
            "",
            None,
        ));
        if let Some(ph) = i.phases {
            cells.push((
                format!("  watch: spec → new image running ({short})"),
                format!("{:.0} ms", ms(ph.spec_to_restarted)),
            ));
            cells.push((
                format!("  watch: running → container ready ({short})"),
                format!("{:.0} ms", ms(ph.restarted_to_container_ready)),
            ));
        }
        if cached {
            let b = restart::breakdown(&i.restarts);
            if let Some(b) = &b {
                rows.push(Row::new(
                    "  in-place restart in the agent (seen → started, timelines), p50 / p99".into(),
                    format!("{:.1} / {:.1} ms", ms(b.restart_p50), ms(b.restart_p99)),
                    "≤ 20 ms (issue 14)",
                    Some(b.restart_p50 <= Duration::from_millis(20)),
                ));
            }
            cells.extend(restart::breakdown_cells(b.as_ref()));
        }
    }
    if let Some((recreate, in_place)) = &run.sidecar {
        rows.extend(crate::bench_sidecar::rows(args.replicas, recreate, in_place));
        cells.push((
            "sidecar upgrade: recreate / in place".into(),
            format!("{:.0} / {:.0} ms", ms(recreate.took), ms(in_place.took)),
        ));
    }
    if !run.floor.is_empty() {
        let mut f = run.floor.clone();
        f.sort();
        let p50 = percentile(&f, 0.5);
        rows.push(Row::new(
            "floor: bare `runc run -d` + overlay mount, p50".into(),
            format!("{:.1} ms", ms(p50)),
            "",
            None,
        ));
        cells.push((
            "floor: bare `runc run -d` + overlay, p50".into(),
            format!("{:.1} ms", ms(p50)),
        ));
    }
    print_table(&rows);
    if let Some(b) = outcomes
        .iter()
        .find(|o| o.kind == Kind::InPlace && o.cached)
        .and_then(|o| restart::breakdown(&o.restarts))
    {
        println_breakdown(&b);
    }
    Column { path, cells }
}

#[allow(clippy::print_stdout)] // the benchmark's report is its output
fn println_breakdown(b: &restart::Breakdown) {
    println!();
    println!(
        "in-place restart steps in the agent over {} restarts (timelines), mean ms:",
        b.restarts
    );
    println!(
        "  seen→SIGTERM {:.1}; →exit {:.1}; →image+config {:.1}; →rootfs {:.1}; →config.json {:.1}; →started {:.1} (= {:.1} in the agent); started→reported {:.1}; started→ready {:.1}; CPU {:.1}",
        ms(b.kill),
        ms(b.wait_exit),
        ms(b.configure),
        ms(b.rootfs),
        ms(b.bundle),
        ms(b.create_start),
        ms(b.restart_mean),
        ms(b.report),
        ms(b.ready),
        b.cpu_ms
    );
}

/// Pulls `image` onto the node with a throw-away pod.
pub(crate) async fn preload(pods: &Api<Pod>, image: &str) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "preload", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": image, "command": ["true"]}]},
    }))?;
    pods.create(&Default::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("preload").await?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the preload pod did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pods.delete("preload", &DeleteParams::default().grace_period(0)).await?;
    while pods.get_opt("preload").await?.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Ready pods over time, from a watch of the app's pods.
#[derive(Default)]
struct Tracker {
    ready: BTreeSet<String>,
    min_ready: usize,
    below_since: Option<Instant>,
    below_total: Duration,
    /// Per pod, the steps of its in-place update (filled once the release started).
    steps: BTreeMap<String, PodSteps>,
    started: Option<Instant>,
}

async fn release(
    client: &kube::Client,
    pods: &Api<Pod>,
    kind: Kind,
    cached: bool,
    args: &RolloutArgs,
    v1: &str,
    v2: &str,
) -> anyhow::Result<Outcome> {
    let n = args.replicas as usize;
    let app = kind.name();
    let api = api_of(client, kind);
    let obj: DynamicObject =
        serde_json::from_value(workload(kind, args.replicas, &args.max_unavailable, v1))?;
    api.create(&Default::default(), &obj).await.with_context(|| format!("creating {app}"))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let l = live(pods, app).await?;
        if l.len() == n && l.iter().all(is_ready) {
            break;
        }
        if Instant::now() > deadline {
            bail!("{app}: {n} ready pods not reached within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: BTreeSet<(String, String)> = live(pods, app)
        .await?
        .iter()
        .map(|p| {
            (
                p.uid().unwrap_or_default(),
                p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let tracker = Arc::new(Mutex::new(Tracker { min_ready: n, ..Default::default() }));
    let watch = {
        let tracker = tracker.clone();
        let api: Api<Pod> = pods.clone();
        let sel = format!("app={app}");
        let v2 = v2.to_owned();
        crate::platform::AbortOnDrop(tokio::spawn(async move {
            use kube::runtime::WatchStreamExt as _;
            let mut s = watcher::watcher(api, watcher::Config::default().labels(&sel))
                .default_backoff()
                .boxed();
            while let Some(ev) = s.next().await {
                let Ok(mut t) = tracker.lock() else { return };
                match ev {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        if let Some(at) = t.started.map(|s| s.elapsed()) {
                            t.steps.entry(p.name_any()).or_default().observe(&p, &v2, at);
                        }
                        if is_ready(&p) && p.metadata.deletion_timestamp.is_none() {
                            t.ready.insert(p.name_any());
                        } else {
                            t.ready.remove(&p.name_any());
                        }
                    }
                    Ok(Event::Delete(p)) => {
                        t.ready.remove(&p.name_any());
                    }
                    _ => continue,
                }
                let r = t.ready.len();
                t.min_ready = t.min_ready.min(r);
                let now = Instant::now();
                if r < n {
                    t.below_since.get_or_insert(now);
                } else if let Some(since) = t.below_since.take() {
                    t.below_total += now - since;
                }
            }
        }))
    };
    // Let the watch list the current state before the release starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    if let Ok(mut t) = tracker.lock() {
        t.min_ready = t.ready.len();
        t.started = Some(started);
    }
    let patch =
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": v2}]);
    api.patch(app, &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(patch)?))
        .await?;
    let took = loop {
        let l = live(pods, app).await?;
        let all_pods = pods.list(&ListParams::default().labels(&format!("app={app}"))).await?.items;
        if l.len() == n
            && all_pods.len() == n
            && l.iter().all(|p| is_ready(p) && image(p) == Some(v2))
        {
            break started.elapsed();
        }
        if Instant::now() > started + Duration::from_secs(300) {
            bail!("{app}: the release did not finish within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(watch);
    let (min_ready, below_full, steps) = tracker
        .lock()
        .map(|t| {
            (
                t.min_ready,
                t.below_total + t.below_since.map_or(Duration::ZERO, |s| s.elapsed()),
                t.steps.clone(),
            )
        })
        .unwrap_or_default();
    let phases = if kind == Kind::InPlace { phases(&steps) } else { None };
    let restarts = if kind == Kind::InPlace { restarts(pods, app, n).await? } else { Vec::new() };
    let after: BTreeMap<String, String> = live(pods, app)
        .await?
        .iter()
        .map(|p| {
            (
                p.uid().unwrap_or_default(),
                p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let ip_changes =
        after.iter().filter(|(u, ip)| !before.contains(&((*u).clone(), (*ip).clone()))).count();
    // Clean up: the workload, its pods, and the node's teardown of them.
    api.delete(app, &DeleteParams::foreground()).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&ListParams::default().labels(&format!("app={app}"))).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("{app}: pods were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Outcome { kind, cached, took, ip_changes, min_ready, below_full, phases, restarts })
}

/// The in-place restart of each of the app's `n` pods, from their timelines. The agent writes
/// one after the restarted container's readiness, off the release's path, so the last ones
/// may come a moment after the release ended: waits up to 5 s for all.
async fn restarts(pods: &Api<Pod>, app: &str, n: usize) -> anyhow::Result<Vec<RestartTimeline>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<RestartTimeline> = live(pods, app)
            .await?
            .iter()
            .filter_map(|p| p.metadata.annotations.as_ref()?.get(kinetic_api::timeline::ANNOTATION))
            .filter_map(|a| serde_json::from_str::<kinetic_api::timeline::Timeline>(a).ok())
            .filter_map(|t| t.restart)
            .filter(|r| r.ready.is_some())
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
