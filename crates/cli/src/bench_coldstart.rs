//! `kinetic bench coldstart --pod-level`: the start of an app's first pod with a warm pod pool (a claim by
//! image, issue 12 part 3) against without one (a plain pod create), in the same run.
//!
//! Everything runs in this process, wired as `kinetic up` wires it (`crate::platform`): the
//! embedded API server, the scheduler, the controllers (the PodPool controller among them) and
//! one node agent on its own bridge, and a registry on 127.0.0.1 serving `--apps` different
//! app images (busybox `httpd` with their own page, each its own image digest) and a
//! placeholder image. One warm-up pod per app pulls its image first, so both ways start from
//! an image on the node (what a pool by image is for: "every app whose image is on the node").
//!
//! Then, `--rounds` times for each app, alternately:
//! - **no pool**: create a pod of the app (`httpd` on 8080, readiness probe `GET /`) and time
//!   from just before the create request to (a) a watch (opened beforehand) delivering it
//!   Ready and (b) the first `200` from its IP;
//! - **pool**: with the pool full (`--pool-size` ready placeholder pods running `sleep`), claim
//!   one for the app with `podpool::claim_for_image` and time from just before the claim to
//!   (a) the watch delivering it labelled `specialized` and Ready and (b) the first `200`.
//!
//! Before every sample the pool is full again and no pod of an earlier sample is left on the
//! node, so neither way pays for the other's refills or teardowns. The pool mode's own
//! timelines give claim → agent saw it → container started → Ready. Every wait is bounded;
//! the platform (pods, mounts, network namespaces, bridge) is torn down however the run ends,
//! Ctrl-C included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, PodPool, state};
use kinetic_api::timeline::Timeline;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::bench::{Row, ms, percentile, percentile_rows, print_table};
use crate::platform::{AbortOnDrop, Platform};

/// Arguments of `kinetic bench coldstart`.
#[derive(clap::Args)]
pub struct ColdstartArgs {
    /// Measure claims against creates of bare pods instead of the Knative matrix
    #[arg(long)]
    pod_level: bool,
    #[command(flatten)]
    matrix: crate::bench_coldstart_knative::MatrixArgs,
    /// With --pod-level: different apps (images) started
    #[arg(long, default_value_t = 25)]
    apps: usize,
    /// With --pod-level: cold starts of each app in each way (samples per way = apps × rounds)
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Ready placeholder pods the pool keeps
    #[arg(long, default_value_t = 4)]
    pool_size: i32,
    /// The node's bridge (created for the run, deleted after it)
    #[arg(long, default_value = "kbench3")]
    bridge: String,
    /// The node's pod range
    #[arg(long, default_value = "10.205.0.0/16")]
    pod_cidr: String,
}

const NAMESPACE: &str = "default";
const LABEL: &str = "kinetic.dev/bench";
const POOL: &str = "coldstart";
const PORT: u16 = 8080;
/// No single start may take longer.
const START_LIMIT: Duration = Duration::from_secs(60);

/// When the watch first saw each pod serving: (instant, pod IP).
type Serving = Arc<Mutex<HashMap<String, (Instant, String)>>>;

/// One cold start.
struct Sample {
    ready: Duration,
    answer: Duration,
}

struct Measured {
    plain: Vec<Sample>,
    pool: Vec<Sample>,
    timelines: Vec<Timeline>,
    plain_timelines: Vec<Timeline>,
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Serving: Ready, and for a pool pod also specialised (a claimed pod may still show its
/// placeholder's Ready until the agent acts on the claim).
fn serving(p: &Pod) -> bool {
    let st = p.labels().get(POOL_STATE_LABEL).map(String::as_str);
    is_ready(p) && st.is_none_or(|s| s == state::SPECIALIZED)
}

fn app_container(image: &str) -> anyhow::Result<Container> {
    Ok(serde_json::from_value(json!({
        "name": "app", "image": image,
        "command": ["httpd", "-f", "-p", PORT.to_string(), "-h", "/www"],
        "ports": [{"containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 1},
    }))?)
}

fn plain_pod(name: &str, image: &str, kind: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: kind}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [app_container(image)?]},
    }))?)
}

/// Runs the benchmark.
///
/// # Errors
/// The platform cannot be started, or a start does not finish within 60 s.
pub async fn run(args: ColdstartArgs) -> anyhow::Result<()> {
    if !args.pod_level {
        return crate::bench_coldstart_knative::run(
            &args.bridge,
            &args.pod_cidr,
            args.pool_size,
            &args.matrix,
        )
        .await;
    }
    if args.apps == 0 || args.rounds == 0 || args.pool_size < 1 {
        bail!("--apps, --rounds and --pool-size must be at least 1");
    }
    let platform = Platform::start(
        "kinetic-bench-coldstart",
        &args.bridge,
        &args.pod_cidr,
        args.apps + usize::try_from(args.pool_size).unwrap_or(0) + 20,
        true,
    )
    .await?;
    let m = platform.run(async |platform| measure(platform, &args).await).await?;
    report(&m);
    Ok(())
}

#[allow(clippy::print_stdout)] // the benchmark's report is its output
fn report(m: &Measured) {
    let sorted = |v: &[Sample], f: fn(&Sample) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(f).collect();
        d.sort();
        d
    };
    let mut rows = Vec::new();
    let mut p50 = HashMap::new();
    for (way, v) in [("no pool (pod create)", &m.plain), ("pool (claim by image)", &m.pool)] {
        for (what, f) in [
            ("→ Ready", (|s: &Sample| s.ready) as fn(&Sample) -> Duration),
            ("→ first HTTP answer", |s: &Sample| s.answer),
        ] {
            let d = sorted(v, f);
            p50.insert((way, what), percentile(&d, 0.5));
            // The targets are for the pool's first answer.
            let targets = (way.starts_with("pool") && what.contains("HTTP")).then_some((100, 250));
            rows.extend(percentile_rows(&format!("{way} {what}"), &d, targets));
        }
    }
    for what in ["→ Ready", "→ first HTTP answer"] {
        let (a, b) = (p50[&("no pool (pod create)", what)], p50[&("pool (claim by image)", what)]);
        rows.push(Row::new(
            format!("no pool p50 / pool p50 {what}"),
            format!("{:.2}×", ms(a) / ms(b).max(1e-9)),
            "",
            None,
        ));
    }
    print_table(&rows);
    let d = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64() * 1000.0,
        _ => 0.0,
    };
    let mut sums = [0.0f64; 3];
    let mut k = 0.0;
    for t in &m.timelines {
        let Some(s) = &t.specialization else { continue };
        let parts =
            [d(s.claimed, s.observed), d(s.observed, s.specialized), d(s.specialized, s.ready)];
        for (x, p) in sums.iter_mut().zip(parts) {
            *x += p;
        }
        k += 1.0;
    }
    if k > 0.0 {
        println!();
        println!("pool claims over {k:.0} pods (from their timelines), mean ms:");
        println!("  claim → agent saw it                          {:>7.1}", sums[0] / k);
        println!("  agent saw it → claimant's container started   {:>7.1}", sums[1] / k);
        println!("  container started → Ready (probe, status)     {:>7.1}", sums[2] / k);
    }
    let mut sums = [0.0f64; 4];
    let mut k = 0.0;
    for t in &m.plain_timelines {
        let Some(c) = t.containers.first() else { continue };
        let parts = [
            d(t.created, t.observed),
            d(t.observed, t.sandbox_ready),
            d(t.sandbox_ready.max(c.pull_finished), c.started),
            d(c.started, t.ready),
        ];
        for (x, p) in sums.iter_mut().zip(parts) {
            *x += p;
        }
        k += 1.0;
    }
    if k > 0.0 {
        println!();
        println!("plain creates over {k:.0} pods (from their timelines), mean ms:");
        println!("  create → agent saw it (schedule, bind, watch)  {:>7.1}", sums[0] / k);
        println!("  agent saw it → sandbox ready                   {:>7.1}", sums[1] / k);
        println!("  sandbox ready → container started              {:>7.1}", sums[2] / k);
        println!("  container started → Ready (probe, status)      {:>7.1}", sums[3] / k);
    }
}

async fn measure(platform: &Platform, args: &ColdstartArgs) -> anyhow::Result<Measured> {
    let client = platform.client.clone();
    let registry = &platform.registry;
    let placeholder = kinetic_testkit::images::busybox(registry, "placeholder", "v1", &[]).await?;
    let mut images = Vec::new();
    for i in 0..args.apps {
        let page = format!("app {i}\n");
        let repo = format!("app{i}");
        images.push(
            kinetic_testkit::images::busybox(registry, &repo, "v1", &[("www/index.html", &page)])
                .await?,
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let seen: Serving = Arc::default();
    let _watch = {
        let (seen, api) = (seen.clone(), pods.clone());
        AbortOnDrop(tokio::spawn(async move {
            use kube::runtime::WatchStreamExt as _;
            let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(ev) = s.next().await {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = ev
                    && serving(&p)
                {
                    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                    if let Ok(mut m) = seen.lock() {
                        m.entry(p.name_any()).or_insert((Instant::now(), ip));
                    }
                }
            }
        }))
    };
    // Warm-up: every app image onto the node.
    eprintln!("pulling {} app images onto the node", images.len());
    for (i, image) in images.iter().enumerate() {
        let name = format!("warm-{i}");
        pods.create(&PostParams::default(), &plain_pod(&name, image, "warm")?).await?;
        wait_serving(&seen, &name, Instant::now()).await?;
        delete(&pods, &name).await?;
    }
    // The pool.
    let pool: PodPool = serde_json::from_value(json!({
        "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {"minReady": args.pool_size, "maxReady": args.pool_size,
                 "template": {"metadata": {"labels": {LABEL: "pool"}},
                              "spec": {"terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "placeholder", "image": placeholder,
                                                       "command": ["sleep", "3600"]}]}}},
    }))?;
    let pools: Api<PodPool> = Api::namespaced(client.clone(), NAMESPACE);
    create_when_served(&pools, &pool).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let mut out = Measured {
        plain: Vec::new(),
        pool: Vec::new(),
        timelines: Vec::new(),
        plain_timelines: Vec::new(),
    };
    eprintln!("measuring {} cold starts each way", args.apps * args.rounds);
    for round in 0..args.rounds {
        for (i, image) in images.iter().enumerate() {
            // No pool.
            settle(platform, &pods, args.pool_size).await?;
            let name = format!("plain-{i}-{round}");
            let p = plain_pod(&name, image, "plain")?;
            let t0 = Instant::now();
            pods.create(&PostParams::default(), &p).await?;
            out.plain.push(sample(&seen, &name, t0).await?);
            if let Some(tl) = timeline_of(&pods, &name).await? {
                out.plain_timelines.push(tl);
            }
            delete(&pods, &name).await?;

            // Pool.
            settle(platform, &pods, args.pool_size).await?;
            let cm_name = format!("claimant-{i}-{round}");
            let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": cm_name}}))?;
            let cm = cms.create(&PostParams::default(), &cm).await?;
            let owner = OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: cm_name.clone(),
                uid: cm.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            };
            let c = app_container(image)?;
            let t0 = Instant::now();
            let claimed =
                kinetic_controllers::podpool::claim_for_image(&client, NAMESPACE, POOL, &owner, &c)
                    .await
                    .with_context(|| format!("claiming a pod for app {i}"))?;
            let name = claimed.name_any();
            out.pool.push(sample(&seen, &name, t0).await?);
            if let Some(tl) = timeline_of(&pods, &name).await? {
                out.timelines.push(tl);
            }
            delete(&pods, &name).await?;
            cms.delete(&cm_name, &DeleteParams::default()).await?;
        }
    }
    pools.delete(POOL, &DeleteParams::default()).await?;
    Ok(out)
}

/// The timeline annotation of pod `name` (the node agent writes it once the pod is Ready).
async fn timeline_of(pods: &Api<Pod>, name: &str) -> anyhow::Result<Option<Timeline>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = pods.get(name).await?;
        let tl = p
            .annotations()
            .get(kinetic_api::timeline::ANNOTATION)
            .and_then(|a| serde_json::from_str::<Timeline>(a).ok());
        let complete = tl.as_ref().is_some_and(|t| {
            t.ready.is_some() && t.specialization.as_ref().is_none_or(|s| s.ready.is_some())
        });
        if complete || Instant::now() > deadline {
            return Ok(tl);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `pool`, retrying while its kind is not served yet (the controllers install the
/// CRD as they start).
async fn create_when_served(pools: &Api<PodPool>, pool: &PodPool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match pools.create(&PostParams::default(), pool).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("creating the PodPool"),
        }
    }
}

/// Waits until the pool holds `size` ready unclaimed pods and the node runs no other pod (no
/// teardown or refill of an earlier sample left).
async fn settle(platform: &Platform, pods: &Api<Pod>, size: i32) -> anyhow::Result<()> {
    let size = usize::try_from(size).unwrap_or(0);
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let all = pods.list(&ListParams::default()).await?.items;
        let ready = all
            .iter()
            .filter(|p| {
                p.labels().get(POOL_LABEL).is_some_and(|l| l == POOL)
                    && p.labels().get(POOL_STATE_LABEL).is_some_and(|s| s == state::READY)
                    && is_ready(p)
            })
            .count();
        let on_node =
            std::fs::read_dir(platform.node_pods()).map(std::iter::Iterator::count).unwrap_or(0);
        if ready == size && all.len() == size && on_node == size {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the pool did not settle: {ready} of {size} ready, {} pods, {on_node} on the node",
                all.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_serving(
    seen: &Serving,
    name: &str,
    t0: Instant,
) -> anyhow::Result<(Instant, String)> {
    loop {
        if let Some(v) = seen.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(v);
        }
        if t0.elapsed() > START_LIMIT {
            bail!("pod {name} was not serving within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Times one start from `t0`: to the watch seeing it serve, and to its first `200`.
async fn sample(seen: &Serving, name: &str, t0: Instant) -> anyhow::Result<Sample> {
    let (at, ip) = wait_serving(seen, name, t0).await?;
    loop {
        if get(&ip).await {
            return Ok(Sample { ready: at.saturating_duration_since(t0), answer: t0.elapsed() });
        }
        if t0.elapsed() > START_LIMIT {
            bail!("pod {name} at {ip} did not answer within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether `GET /` on the pod answers 200.
async fn get(ip: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let call = async {
        let mut s = tokio::net::TcpStream::connect((ip, PORT)).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out.lines().next().is_some_and(|l| l.contains(" 200 ")))
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.ok().flatten().unwrap_or(false)
}

async fn delete(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    match pods.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting pod {name}")),
    }
}
