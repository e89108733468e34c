//! `kinetic bench coldstart`'s matrix (issue 12's benchmark): the first request to a Knative
//! Service at zero replicas, through the serving gateway (the activator's hold, the KPA's
//! on-demand scale-up, the CloneSet, the pod), for each app and each way to get its pod:
//! - apps: `static`, busybox `httpd` serving one page (port 8080); `python`, Kinetic's Python
//!   runtime with the app of `kinetic_testkit::python` (it imports a generated dependency with
//!   a real import cost at every start; port 8888);
//! - modes: `none` (the CloneSet creates a pod), `image` (the revision names a PodPool of busybox
//!   placeholder pods with `kinetic.dev/pod-pool`; a claimed pod is specialised by image into
//!   the app's container) and `code` (a PodPool of Python runtime pods, specialised by code: the
//!   app's code image is unpacked into the pod and loaded through Fission's protocol; the static
//!   app is then a function returning the page).
//!
//! Each configuration gets `--services` Services, created one at a time (so a pool's refills
//! keep up), each with the smallest stable window (6 s) and `scale-to-zero-grace-period: 2s`.
//! Once all are at zero (no CloneSet replica, no pod), each gets one `GET /` through the
//! gateway, one after the other, the pool full again before each; then all return to zero and
//! the next round starts, until `--cold-starts` requests were made. A cold start's figure is the
//! time from just before the connect to the first response byte; a pooled one also counts
//! whether the pod that answered came from the pool. The burst (`--burst`) makes that many
//! Services at zero and sends one request to each at once, per pool mode, while the pool
//! refills.
//!
//! Load goes only to 127.0.0.1 and to pod IPs on the benchmark's own bridge; every wait is
//! bounded. Everything the benchmark made goes with the platform, however the run ends
//! (Ctrl-C included; see [`crate::platform`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::knative::SERVICE_LABEL;
use kinetic_api::knative::service::Service;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::pool::{CREATED_CLAIMED_ANNOTATION, POOL_LABEL, POOL_STATE_LABEL, PodPool, state};
use kinetic_testkit::python;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::bench::{Row, ms, percentile, percentile_rows, print_table};
use crate::bench_serve::{autoscaler_config, get_once, loadavg, route_host, wait_for_zero};
use crate::platform::{AbortOnDrop, Platform};

/// An app of the matrix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum App {
    /// busybox `httpd` serving one page
    Static,
    /// Python with a dependency that costs a real import
    Python,
}

/// How a cold start gets its pod.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum Mode {
    /// The CloneSet creates a pod
    None,
    /// A pod claimed from a pool of placeholders, specialised by image
    Image,
    /// A pod claimed from a pool of Python runtimes, specialised by code
    Code,
}

/// The matrix's arguments (part of `kinetic bench coldstart`'s).
#[derive(clap::Args)]
pub struct MatrixArgs {
    /// Cold starts measured per app and mode
    #[arg(long, default_value_t = 50)]
    pub cold_starts: usize,
    /// Services per app and mode (each is cold-started once per round)
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    /// Apps measured
    #[arg(long = "app", value_enum, value_delimiter = ',', default_values_t = [App::Static, App::Python])]
    pub app: Vec<App>,
    /// Modes measured
    #[arg(long = "mode", value_enum, value_delimiter = ',', default_values_t = [Mode::None, Mode::Image, Mode::Code])]
    pub mode: Vec<Mode>,
    /// Services cold at once in each burst (0: no burst); one burst per app and pool mode
    #[arg(long, default_value_t = 50)]
    pub burst: usize,
}

const NS: &str = "default";
const STATIC_PAGE: &str = "hello from a cold start\n";
/// `httpd` behind a shell that exits on TERM (as `kinetic bench serve`'s).
const HTTPD: &str = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
/// The static app as code: a function answering the page.
const STATIC_MAIN: &str = "def main():\n    return \"hello from a cold start\\n\"\n";
/// How long the pool may take to be full again.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// What a configuration runs.
struct Config {
    app: App,
    mode: Mode,
    /// The Services' container.
    container: serde_json::Value,
    /// The PodPool, for the pool modes.
    pool: Option<PodPool>,
    /// What the answer must contain.
    answer: &'static str,
}

/// A burst's result.
struct Burst {
    /// First bytes of the requests answered 200 with the app's answer, sorted.
    ok: Vec<Duration>,
    failed: usize,
    /// Answered by a pod that was one of the pool's ready pods.
    from_pool: usize,
    /// Answered by a pod of a code pool's runtime made claimed because the pool was empty.
    made_claimed: usize,
}

/// One configuration's result.
#[derive(Default)]
struct Outcome {
    first_bytes: Vec<Duration>,
    /// Cold starts answered by a pod that came from the pool.
    from_pool: usize,
    failed: Vec<String>,
    burst: Option<Burst>,
    /// Why it could not be measured.
    skipped: Option<String>,
}

/// Runs the matrix on a started platform.
///
/// # Errors
/// The gateway or the images cannot be set up; a configuration's own failure is reported in
/// its row instead.
async fn measure(
    platform: &Platform,
    args: &MatrixArgs,
    pool_size: i32,
) -> anyhow::Result<Vec<((App, Mode), Outcome)>> {
    let client = platform.client.clone();
    let registry = &platform.registry;
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let until = async move {
        let _ = stopped.await;
    };
    let dp =
        kinetic_controllers::serving_gateway::start(client.clone(), "127.0.0.1:0".parse()?, until)
            .await
            .context("starting the serving gateway")?;
    let gateway = dp.addr;
    let _data_plane = AbortOnDrop(dp.task);
    autoscaler_config(&client).await?;
    eprintln!("building and pushing the images");
    let mut images = BTreeMap::new();
    images.insert(
        "static",
        kinetic_testkit::images::busybox(
            registry,
            "static",
            "v1",
            &[("www/index.html", STATIC_PAGE)],
        )
        .await?,
    );
    images.insert(
        "placeholder",
        kinetic_testkit::images::busybox(registry, "placeholder", "v1", &[]).await?,
    );
    if args.app.contains(&App::Python) {
        images.insert("python", python::app(registry, "v1").await?);
    }
    if args.mode.contains(&Mode::Code) {
        images.insert("runtime", python::runtime(registry, "v1").await?);
        images.insert("python-code", python::app_code(registry, "v1").await?);
        images.insert(
            "static-code",
            python::code(registry, "static-code", "v1", &[("main.py", STATIC_MAIN)]).await?,
        );
    }
    let mut out = Vec::new();
    for &app in &args.app {
        for &mode in &args.mode {
            let cfg = config(app, mode, &images, pool_size)?;
            eprintln!("== {app:?} app, pool: {mode:?}");
            let mut o = Outcome::default();
            if let Err(e) = run_config(platform, gateway, &cfg, args, &mut o).await {
                eprintln!("   not measured: {e:#}");
                o.skipped = Some(format!("{e:#}"));
            }
            clean(&client).await?;
            out.push(((app, mode), o));
        }
    }
    Ok(out)
}

fn config(
    app: App,
    mode: Mode,
    images: &BTreeMap<&str, String>,
    pool_size: i32,
) -> anyhow::Result<Config> {
    let image = |k: &str| images.get(k).cloned().unwrap_or_default();
    let python_port = json!([{"containerPort": python::PORT}]);
    let container = match (app, mode) {
        (App::Static, Mode::Code) => {
            json!({"image": image("static-code"), "args": ["main.main"], "ports": python_port})
        }
        (App::Python, Mode::Code) => {
            json!({"image": image("python-code"), "args": [python::APP_FUNCTION], "ports": python_port})
        }
        (App::Static, _) => json!({"image": image("static"), "command": ["sh", "-c", HTTPD]}),
        // Behind a shell that exits on TERM, like `httpd`: the server as PID 1 ignores it,
        // and a scaled-down pod would stay for its grace period (the revision's 300 s).
        (App::Python, _) => json!({
            "image": image("python"), "ports": python_port,
            "command": ["sh", "-c", format!("trap 'exit 0' TERM; {} /runtime/server.py {} & wait",
                                            python::PYTHON, python::APP_FUNCTION)],
        }),
    };
    let pool = match mode {
        Mode::None => None,
        Mode::Image => Some(serde_json::from_value(json!({
            "apiVersion": "kinetic.dev/v1alpha1", "kind": "PodPool",
            "metadata": {"name": "coldstart", "namespace": NS},
            "spec": {"minReady": pool_size, "maxReady": pool_size,
                     "template": {"metadata": {"labels": {"app": "coldstart-pool"}},
                                  "spec": {"terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": "placeholder",
                                                           "image": image("placeholder"),
                                                           "command": ["sleep", "3600"]}]}}},
        }))?),
        Mode::Code => {
            let m = python::pool_manifest("coldstart", &image("runtime"), pool_size, 2);
            let mut p: PodPool = serde_yaml::from_str(&m)?;
            p.metadata.namespace = Some(NS.into());
            Some(p)
        }
    };
    let answer = match app {
        App::Static => STATIC_PAGE,
        App::Python => python::APP_ANSWER,
    };
    Ok(Config { app, mode, container, pool, answer })
}

fn service_name(cfg: &Config, i: usize) -> String {
    let app = match cfg.app {
        App::Static => "static",
        App::Python => "python",
    };
    let mode = match cfg.mode {
        Mode::None => "none",
        Mode::Image => "image",
        Mode::Code => "code",
    };
    format!("{app}-{mode}-{i}")
}

async fn run_config(
    platform: &Platform,
    gateway: SocketAddr,
    cfg: &Config,
    args: &MatrixArgs,
    o: &mut Outcome,
) -> anyhow::Result<()> {
    let client = &platform.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let clonesets: Api<CloneSet> = Api::namespaced(client.clone(), NS);
    if let Some(pool) = &cfg.pool {
        create_pool(client, pool).await?;
        settle(&pods, pool).await?;
    }
    // The Services, one at a time (each first pod claims from the pool when there is one).
    let n = args.services.max(1).min(args.cold_starts.max(1));
    let mut hosts = Vec::new();
    for i in 0..n {
        let name = service_name(cfg, i);
        create_service(client, &name, cfg).await?;
        hosts.push((name.clone(), route_host(client, &name).await?));
        if let Some(pool) = &cfg.pool {
            settle(&pods, pool).await?;
        }
    }
    eprintln!("   {n} Services ready; measuring {} cold starts", args.cold_starts);
    while o.first_bytes.len() + o.failed.len() < args.cold_starts {
        for (name, _) in &hosts {
            wait_for_zero(&pods, &clonesets, name).await?;
        }
        for (name, host) in &hosts {
            if o.first_bytes.len() + o.failed.len() >= args.cold_starts {
                break;
            }
            if let Some(pool) = &cfg.pool {
                settle(&pods, pool).await?;
            }
            let a = get_once(gateway, host).await.with_context(|| format!("cold start of {name}"));
            match a {
                Ok(a) if a.code == 200 && a.body.contains(cfg.answer) => {
                    o.first_bytes.push(a.first_byte);
                    if cfg.pool.is_some() && origin(&pods, name).await? == Origin::Pool {
                        o.from_pool += 1;
                    }
                }
                Ok(a) => o.failed.push(format!("{name}: {} {:?}", a.code, a.body)),
                Err(e) => o.failed.push(format!("{e:#}")),
            }
        }
        eprintln!(
            "   {} measured, {} failed, {} from the pool",
            o.first_bytes.len(),
            o.failed.len(),
            o.from_pool
        );
    }
    if args.burst > 0 && cfg.pool.is_some() {
        o.burst = Some(burst(platform, gateway, cfg, args.burst, &hosts).await?);
    }
    Ok(())
}

/// `n` Services at zero (the measured ones first, then new ones), one request to each at once.
async fn burst(
    platform: &Platform,
    gateway: SocketAddr,
    cfg: &Config,
    n: usize,
    existing: &[(String, String)],
) -> anyhow::Result<Burst> {
    let client = &platform.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let clonesets: Api<CloneSet> = Api::namespaced(client.clone(), NS);
    let mut hosts: Vec<(String, String)> = existing.iter().take(n).cloned().collect();
    for i in hosts.len()..n {
        let name = service_name(cfg, i);
        create_service(client, &name, cfg).await?;
        hosts.push((name.clone(), route_host(client, &name).await?));
        if let Some(pool) = &cfg.pool {
            settle(&pods, pool).await?;
        }
    }
    for (name, _) in &hosts {
        wait_for_zero(&pods, &clonesets, name).await?;
    }
    if let Some(pool) = &cfg.pool {
        settle(&pods, pool).await?;
    }
    eprintln!("   burst: {n} Services at zero, one request each at once");
    // Each request's answer is checked at once for the pod that gave it: counted after the
    // whole burst, the first answered Services would have gone back to zero meanwhile (their
    // pods gone, so never counted as from the pool: the 0 of the 15:05 release run).
    let tasks: Vec<_> = hosts
        .iter()
        .map(|(name, host)| {
            let (pods, name, host) = (pods.clone(), name.clone(), host.clone());
            AbortOnDrop(tokio::spawn(async move {
                let r = get_once(gateway, &host).await;
                let pooled = match &r {
                    Ok(a) if a.code == 200 => origin(&pods, &name).await,
                    _ => Ok(Origin::Created),
                };
                (name, r, pooled)
            }))
        })
        .collect();
    let (mut ok, mut failed, mut from_pool, mut made_claimed) = (Vec::new(), 0, 0, 0);
    for t in tasks {
        let (name, r, pooled) = t.join().await.context("a burst request's task")?;
        match r {
            Ok(a) if a.code == 200 && a.body.contains(cfg.answer) => {
                ok.push(a.first_byte);
                match pooled? {
                    Origin::Pool => from_pool += 1,
                    Origin::MadeClaimed => made_claimed += 1,
                    Origin::Created => {}
                }
            }
            Ok(a) => {
                failed += 1;
                eprintln!("   burst: {name} answered {} {:?}", a.code, a.body);
                explain(client, &name).await;
            }
            Err(e) => {
                failed += 1;
                eprintln!("   burst: {name} failed: {e:#}");
                explain(client, &name).await;
            }
        }
    }
    ok.sort();
    Ok(Burst { ok, failed, from_pool, made_claimed })
}

/// Prints what became of a Service whose burst request failed: its pods (phase, pool state,
/// why a container is not running) and the Events of its pods and CloneSet.
async fn explain(client: &kube::Client, service: &str) {
    use k8s_openapi::api::core::v1::Event;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={service}"));
    let mut names = vec![format!("{service}-00001-deployment")];
    for p in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        let st = p.status.clone().unwrap_or_default();
        let why: Vec<String> = st
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| {
                let s = c.state.as_ref()?;
                s.waiting
                    .as_ref()
                    .map(|w| format!("waiting {:?} {:?}", w.reason, w.message))
                    .or_else(|| s.terminated.as_ref().map(|t| format!("terminated {:?}", t.reason)))
            })
            .collect();
        eprintln!(
            "     pod {} phase {:?} pool-state {:?} {}",
            p.name_any(),
            st.phase,
            p.labels().get(POOL_STATE_LABEL),
            why.join("; ")
        );
        names.push(p.name_any());
    }
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    for e in events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        if e.involved_object.name.as_ref().is_some_and(|n| names.contains(n)) {
            eprintln!(
                "     event {} {:?} {:?}: {:?}",
                e.involved_object.name.unwrap_or_default(),
                e.type_,
                e.reason,
                e.message
            );
        }
    }
}

/// Where a Service's pod came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// One of the pool's ready pods, claimed (it keeps the pool's label).
    Pool,
    /// A pod of a code pool's runtime, made claimed because the pool was empty.
    MadeClaimed,
    /// Created from the revision's template.
    Created,
}

/// Where the Service's pods came from: [`Origin::Pool`] if one was a pool pod.
async fn origin(pods: &Api<Pod>, service: &str) -> anyhow::Result<Origin> {
    let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={service}"));
    let list = pods.list(&lp).await?.items;
    let of = |p: &Pod| match p.labels().contains_key(POOL_LABEL) {
        false => Origin::Created,
        true if p.annotations().contains_key(CREATED_CLAIMED_ANNOTATION) => Origin::MadeClaimed,
        true => Origin::Pool,
    };
    let origins: Vec<Origin> = list.iter().map(of).collect();
    Ok([Origin::Pool, Origin::MadeClaimed]
        .into_iter()
        .find(|o| origins.contains(o))
        .unwrap_or(Origin::Created))
}

async fn create_pool(client: &kube::Client, pool: &PodPool) -> anyhow::Result<()> {
    let pools: Api<PodPool> = Api::namespaced(client.clone(), NS);
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

/// Waits until the pool holds its size of ready unclaimed pods.
async fn settle(pods: &Api<Pod>, pool: &PodPool) -> anyhow::Result<()> {
    let size = usize::try_from(pool.spec.min_ready).unwrap_or(0);
    let lp = ListParams::default().labels(&format!(
        "{POOL_LABEL}={},{POOL_STATE_LABEL}={}",
        pool.name_any(),
        state::READY
    ));
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let list = pods.list(&lp).await?.items;
        let ready = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::bench_pods::is_ready(p))
            .count();
        if ready >= size {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the pool was not full again within {SETTLE_LIMIT:?}: {ready} of {size} ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_service(client: &kube::Client, name: &str, cfg: &Config) -> anyhow::Result<()> {
    let mut annotations = json!({"autoscaling.knative.dev/window": "6s"});
    if let Some(pool) = &cfg.pool {
        annotations["kinetic.dev/pod-pool"] = json!(pool.name_any());
    }
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [cfg.container]},
        }},
    }))?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match services.create(&PostParams::default(), &svc).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating the Service {name}")),
        }
    }
}

/// Deletes every Service and PodPool and waits until no pod is left.
async fn clean(client: &kube::Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let pools: Api<PodPool> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for s in services.list(&ListParams::default()).await?.items {
        let _ = services.delete(&s.name_any(), &DeleteParams::default()).await;
    }
    if let Ok(list) = pools.list(&ListParams::default()).await {
        for p in list.items {
            let _ = pools.delete(&p.name_any(), &DeleteParams::default()).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = pods.list(&ListParams::default()).await?.items;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} pods were left 180 s after deleting the Services and pools", left.len());
        }
        let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        for p in left.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let _ = pods.delete(&p.name_any(), &dp).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the matrix.
#[allow(clippy::print_stdout)] // the benchmark's report is its output
fn report(results: &[((App, Mode), Outcome)], load_before: &str, load_after: &str) {
    let mut rows = Vec::new();
    let mut p50 = BTreeMap::new();
    for ((app, mode), o) in results {
        let what = format!("{app:?} app, pool {mode:?}").to_lowercase();
        if let Some(why) = &o.skipped {
            rows.push(Row::new(format!("{what}: not measured"), why.clone(), "", None));
            continue;
        }
        let mut d = o.first_bytes.clone();
        d.sort();
        let n = d.len();
        p50.insert((*app, *mode), percentile(&d, 0.5));
        let targets = (*mode != Mode::None).then_some((100, 250));
        rows.extend(percentile_rows(&format!("{what}: first byte"), &d, targets));
        if *mode != Mode::None {
            rows.push(Row::new(
                format!("{what}: answered by a pool pod"),
                format!("{}/{n}", o.from_pool),
                "",
                None,
            ));
        }
        if !o.failed.is_empty() {
            rows.push(Row::new(
                format!("{what}: failed cold starts"),
                format!("{} (first: {})", o.failed.len(), o.failed[0]),
                "0",
                Some(false),
            ));
        }
        if let Some(Burst { ok: b, failed, from_pool, made_claimed }) = &o.burst {
            let v = percentile(b, 0.99);
            rows.push(Row::new(
                format!(
                    "{what}: burst of {} Services cold at once, first byte p50 / p99",
                    b.len() + failed
                ),
                format!("{:.1} / {:.1} ms", ms(percentile(b, 0.5)), ms(v)),
                "p99 ≤ 500 ms",
                Some(v <= Duration::from_millis(500) && *failed == 0),
            ));
            rows.push(Row::new(
                format!(
                    "{what}: burst answered 200 / failed / by a ready pool pod / by a runtime pod made claimed"
                ),
                format!("{} / {failed} / {from_pool} / {made_claimed}", b.len()),
                "",
                None,
            ));
        }
    }
    if let (Some(none), Some(code)) =
        (p50.get(&(App::Python, Mode::None)), p50.get(&(App::Python, Mode::Code)))
    {
        let x = ms(*none) / ms(*code).max(1e-9);
        rows.push(Row::new(
            "python: p50 without a pool / with a code pool".into(),
            format!("{x:.2}×"),
            "≥ 5×",
            Some(x >= 5.0),
        ));
    }
    println!("load average before: {load_before}; after: {load_after}");
    print_table(&rows);
}

/// Runs the matrix on its own platform.
///
/// # Errors
/// The platform cannot be started or the set-up fails.
pub async fn run(
    bridge: &str,
    pod_cidr: &str,
    pool_size: i32,
    args: &MatrixArgs,
) -> anyhow::Result<()> {
    if args.cold_starts == 0 || args.services == 0 || args.app.is_empty() || args.mode.is_empty() {
        bail!("--cold-starts, --services, --app and --mode must not be empty or 0");
    }
    let load_before = loadavg();
    let capacity = args.burst.max(args.services) + usize::try_from(pool_size).unwrap_or(0) + 30;
    let platform =
        Platform::start("kinetic-bench-coldstart", bridge, pod_cidr, capacity, true).await?;
    let results = platform.run(async |p| measure(p, args, pool_size).await).await?;
    report(&results, &load_before, &loadavg());
    Ok(())
}
