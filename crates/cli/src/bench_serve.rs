//! `kinetic bench serve`: Knative Services on the in-process platform (issue 11) — requests
//! from zero replicas, a burst from zero, and the gateway's steady-state cost against the same
//! pod reached directly and through nginx.
//!
//! Everything runs in this process, wired as `kinetic up` wires it: the embedded API server, the
//! scheduler, the controllers (Knative Serving's among them), one node agent on its own bridge
//! (`--bridge`, `--pod-cidr`) and the serving gateway with its KPA loop on a free loopback port.
//! A docker-registry on 127.0.0.1 serves a busybox image whose `httpd` serves one small page;
//! `knative-serving/config-autoscaler` sets `scale-to-zero-grace-period: 2s` and each Service's
//! template sets the smallest stable window Knative accepts (`autoscaling.knative.dev/window:
//! 6s`), so a revision is back at zero about 8 s after its last request.
//!
//! Phases:
//! 1. **Cold starts** (`--cold-starts`): wait until the revision has no CloneSet replica and no
//!    pod left (bounded poll), then one `GET /` through the gateway on a new connection; the
//!    figure is the time from just before the connect to the first response byte. The image is
//!    cached on the node (the Service's first pod pulled it). Each cold start's pod timeline
//!    (the annotation `kinetic trace` reads) splits the time into: request → pod seen by the
//!    scheduler (gateway hold, KPA, CloneSet controller), the pod's start phases, and pod Ready →
//!    first byte (status write, the gateway's watch and table swap, the forward).
//! 2. **Burst from zero** (`--burst`): at zero again, that many concurrent `GET /`, each on its
//!    own connection; counted as answered 200 with the page, answered with another code, or
//!    connection errors (refused, reset, closed without an answer, no answer within 120 s).
//! 3. **Steady state** (`--requests`, bounded by `--max-seconds`): a second Service pinned to one
//!    pod (`min-scale` = `max-scale` = 1). One client, one request at a time, HTTP/1.1 keep-alive
//!    to whatever it talks to, against (a) the pod's IP directly, (b) the gateway, (c) Debian's
//!    nginx started by the benchmark on 127.0.0.1 as a reverse proxy to the same pod IP with a
//!    keep-alive upstream block (its own prefix and configuration under the platform's
//!    directory; stopped at the end). The three take turns in `--rounds` rounds (rotating
//!    order, so a change of the machine's load weighs on all alike), each run preceded by 200
//!    unmeasured requests; requests/s is measured requests over the time the runs took.
//!    busybox `httpd` closes every connection after its answer (it sends `Connection: close`),
//!    so the direct client and both proxies open one pod connection per request: the
//!    comparison is fair, but no run reuses a pod connection.
//!
//! Load goes only to 127.0.0.1 and to pod IPs on the benchmark's own bridge; every wait is
//! bounded. The platform is torn down however the run ends (see [`crate::platform`]); the
//! gateway's loops stop with the benchmark's body and nginx is stopped by a guard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kinetic_api::knative::SERVICE_LABEL;
use kinetic_api::knative::route::Route;
use kinetic_api::knative::service::Service;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_api::timeline::{ANNOTATION as TIMELINE, Timeline};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::bench::{Row, ms, percentile, print_table};
use crate::platform::{AbortOnDrop, Platform};

/// Arguments of `kinetic bench serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Requests from zero replicas, one at a time, each after the revision is back at zero
    #[arg(long, default_value_t = 50)]
    cold_starts: usize,
    /// Concurrent requests of the burst from zero (0 skips the burst)
    #[arg(long, default_value_t = 500)]
    burst: usize,
    /// Requests of each steady-state run (direct, gateway, nginx), after 200 unmeasured ones
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Upper bound of each steady-state run, in seconds (it ends there even if --requests
    /// were not all sent)
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
    /// `containerConcurrency` of the Service of the cold starts and the burst (0: unlimited,
    /// Knative's default; the gateway then sends a whole burst to the first pod at once)
    #[arg(long, default_value_t = 0)]
    container_concurrency: u32,
    /// Steady-state runs are split into this many rounds of direct, gateway and nginx in turn
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The bridge of the benchmark's node; it must not exist (the benchmark creates and
    /// removes it)
    #[arg(long, default_value = "kbench2")]
    bridge: String,
    /// Pod IPs of the benchmark's node come from this range
    #[arg(long, default_value = "10.204.0.0/16")]
    pod_cidr: String,
    /// The nginx of the comparison (Debian's `nginx` package)
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

const NS: &str = "default";
/// What the image's page says.
const PAGE: &str = "hello from kinetic bench serve\n";
/// `httpd` as PID 1 would ignore SIGTERM and a scaled-down pod would linger for its grace
/// period (the revision's timeoutSeconds, 300 s): a shell that exits on TERM runs it instead.
const HTTPD: &str = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
/// Requests before each measured steady-state run.
const WARM_UP: usize = 200;
/// Longest wait for one request's answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(120);
/// Longest wait for a revision to scale to zero (6 s window, 2 s grace, pod teardown).
const ZERO_LIMIT: Duration = Duration::from_secs(180);

/// Runs the benchmark.
///
/// # Errors
/// Bad flags, a missing nginx, a bridge that already exists, or a phase that does not finish
/// within its bound.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.cold_starts == 0 || args.requests == 0 || args.max_seconds == 0 || args.rounds == 0 {
        bail!("--cold-starts, --requests, --max-seconds and --rounds must be at least 1");
    }
    if !args.nginx.is_file() {
        bail!(
            "no nginx at {} (Debian's `nginx` package; scripts/install-deps.sh installs it), \
             or pass --nginx",
            args.nginx.display()
        );
    }
    if Path::new("/sys/class/net").join(&args.bridge).exists() {
        bail!(
            "bridge {} exists already (another run, or a leftover: `ip link delete {}`); \
             pick another with --bridge and --pod-cidr",
            args.bridge,
            args.bridge
        );
    }
    let load_before = loadavg();
    let platform = Platform::start(
        "kinetic-bench-serve",
        &args.bridge,
        &args.pod_cidr,
        args.burst.max(10) + 20,
        true,
    )
    .await?;
    let m = platform.run(async |platform| measure(platform, &args).await).await?;
    let load_after = loadavg();
    print_report(&args, &m, &load_before, &load_after);
    Ok(())
}

/// What one run measured.
struct Measured {
    cold: Vec<Cold>,
    burst: Option<Burst>,
    direct: Steady,
    gateway: Steady,
    nginx: Steady,
}

/// One request from zero.
struct Cold {
    first_byte: Duration,
    code: u16,
    /// How long the revision took to reach zero before this request.
    to_zero: Duration,
    /// Milliseconds of each step, from the pod's timeline; `None` without one.
    steps: Option<[f64; 9]>,
}

struct Burst {
    ok: usize,
    other_codes: Vec<u16>,
    conn_errors: Vec<String>,
    last: Duration,
    first: Duration,
}

#[derive(Default)]
struct Steady {
    latencies: Vec<Duration>,
    wall: Duration,
    errors: usize,
    non_200: usize,
    connects: usize,
}

impl Steady {
    fn add(&mut self, other: Steady) {
        self.latencies.extend(other.latencies);
        self.wall += other.wall;
        self.errors += other.errors;
        self.non_200 += other.non_200;
        self.connects += other.connects;
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn p(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }
}

/// The phases on a running platform, which tears itself down afterwards.
async fn measure(platform: &Platform, args: &ServeArgs) -> anyhow::Result<Measured> {
    let client = platform.client.clone();
    let image = kinetic_testkit::images::busybox(
        &platform.registry,
        "serve",
        "v1",
        &[("www/index.html", PAGE)],
    )
    .await?;
    // The gateway and its KPA loop stop when `_stop` drops: at the end, on error, or when a
    // signal cancels this body.
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
    eprintln!("image {image}; gateway http://{gateway}");

    autoscaler_config(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let clonesets: Api<CloneSet> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);

    // Cold starts and the burst, on the Service `cold`.
    let annotations = json!({"autoscaling.knative.dev/window": "6s"});
    create_service(&services, "cold", &image, annotations, args.container_concurrency).await?;
    let host = route_host(&client, "cold").await?;
    first_answer(gateway, &host).await?;
    eprintln!("service cold answers at http://{host} through the gateway");
    let mut cold = Vec::new();
    for i in 0..args.cold_starts {
        let to_zero = wait_for_zero(&pods, &clonesets, "cold").await?;
        let sent = jiff::Timestamp::now();
        let a = get_once(gateway, &host).await.with_context(|| format!("cold start {i}"))?;
        if a.code != 200 || !a.body.contains(PAGE) {
            eprintln!("cold start {i}: answered {} {:?}", a.code, a.body);
        }
        let steps = cold_steps(&pods, "cold", sent, a.first_byte).await;
        eprintln!(
            "cold start {}/{}: first byte after {:.1} ms (zero reached in {:.1} s)",
            i + 1,
            args.cold_starts,
            ms(a.first_byte),
            to_zero.as_secs_f64()
        );
        cold.push(Cold { first_byte: a.first_byte, code: a.code, to_zero, steps });
    }
    let burst = if args.burst > 0 {
        wait_for_zero(&pods, &clonesets, "cold").await?;
        let b = burst(gateway, &host, args.burst).await;
        eprintln!(
            "burst of {} from zero: {} answered 200, the last after {:.1} ms",
            args.burst,
            b.ok,
            ms(b.last)
        );
        Some(b)
    } else {
        None
    };
    delete_service(&services, &pods, "cold").await?;

    // Steady state on the Service `steady`, pinned to one pod.
    create_service(
        &services,
        "steady",
        &image,
        json!({
            "autoscaling.knative.dev/window": "6s",
            "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/max-scale": "1",
        }),
        0,
    )
    .await?;
    let host = route_host(&client, "steady").await?;
    first_answer(gateway, &host).await?;
    let pod_addr = ready_pod_addr(&pods, "steady").await?;
    eprintln!("service steady: one pod at {pod_addr}");
    // The three targets take turns, in a rotating order, so a change of the machine's load
    // during the run weighs on all three alike.
    let rounds = u32::try_from(args.rounds).unwrap_or(u32::MAX);
    let limit = Duration::from_secs(args.max_seconds) / rounds;
    let per_round = args.requests.div_ceil(args.rounds);
    let proxy = Nginx::start(&args.nginx, &platform.path().join("nginx"), pod_addr).await?;
    let targets = [(pod_addr, "pod"), (gateway, host.as_str()), (proxy.addr, host.as_str())];
    let mut results: [Steady; 3] = Default::default();
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let (addr, host) = targets[i];
            results[i].add(steady(addr, host, per_round, limit).await?);
        }
        eprintln!(
            "steady round {}/{}: direct {:.0}, gateway {:.0}, nginx {:.0} requests/s so far",
            round + 1,
            args.rounds,
            results[0].rps(),
            results[1].rps(),
            results[2].rps()
        );
    }
    proxy.stop();
    let [direct, gw, nginx] = results.map(|mut s| {
        s.latencies.sort();
        s
    });
    delete_service(&services, &pods, "steady").await?;
    Ok(Measured { cold, burst, direct, gateway: gw, nginx })
}

/// `knative-serving/config-autoscaler` with a short scale-to-zero grace period.
pub(crate) async fn autoscaler_config(client: &kube::Client) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "knative-serving"}}))?;
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("creating the namespace knative-serving"),
    }
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
        "data": {"scale-to-zero-grace-period": "2s"},
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), "knative-serving")
        .create(&PostParams::default(), &cm)
        .await
        .context("creating knative-serving/config-autoscaler")?;
    Ok(())
}

/// Creates the Service `name` once its CRD is served (the controllers install it at start).
async fn create_service(
    services: &Api<Service>,
    name: &str,
    image: &str,
    annotations: serde_json::Value,
    container_concurrency: u32,
) -> anyhow::Result<()> {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {
                "containerConcurrency": container_concurrency,
                "containers": [{"image": image, "command": ["sh", "-c", HTTPD]}],
            },
        }},
    }))?;
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

/// The host of the Route `name`'s URL, once the Route is Ready.
pub(crate) async fn route_host(client: &kube::Client, name: &str) -> anyhow::Result<String> {
    let routes: Api<Route> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = routes.get_opt(name).await?.and_then(|r| r.status)
            && let Some(url) = st.fields.url
            && st.status.condition("Ready").is_some_and(|c| c.status == "True")
        {
            let host = url.split_once("://").map_or(url.as_str(), |(_, h)| h);
            return Ok(host.trim_end_matches('/').to_owned());
        }
        if Instant::now() > deadline {
            let conditions = |v: serde_json::Value| v["status"]["conditions"].to_string();
            let route = routes.get_opt(name).await?.map(serde_json::to_value).transpose()?;
            let revs: Api<kinetic_api::knative::revision::Revision> =
                Api::namespaced(client.clone(), NS);
            let revs = revs.list(&ListParams::default()).await?.items;
            let revs: Vec<String> = revs
                .into_iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .map(|r| format!("{}: {}", r["metadata"]["name"], conditions(r.clone())))
                .collect();
            bail!(
                "the Route {name} was not Ready with a URL within 120 s; its conditions: {}; \
                 revisions: {revs:?}",
                route.map(conditions).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first request of a new Service: retried while the gateway answers 404 (it learns a
/// host a moment after the Route's status has it); it must then answer 200 with the page.
async fn first_answer(gateway: SocketAddr, host: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get_once(gateway, host).await?;
        if a.code == 200 && a.body.contains(PAGE) {
            return Ok(());
        }
        if a.code != 404 || Instant::now() > deadline {
            bail!("the gateway answered {} for {host}: {:?}", a.code, a.body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the Service's CloneSets are all at zero replicas and none of its pods is left
/// (not even terminating); returns how long that took.
pub(crate) async fn wait_for_zero(
    pods: &Api<Pod>,
    clonesets: &Api<CloneSet>,
    service: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={service}"));
    let prefix = format!("{service}-");
    loop {
        let replicas: Vec<Option<i32>> = clonesets
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
            .map(|c| c.spec.replicas)
            .collect();
        let left = pods.list(&lp).await?.items.len();
        if !replicas.is_empty() && replicas.iter().all(|r| *r == Some(0)) && left == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > ZERO_LIMIT {
            bail!(
                "{service} did not scale to zero within {ZERO_LIMIT:?}: CloneSet replicas \
                 {replicas:?}, {left} pods"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The steps of one cold start, in ms: request → pod seen by the scheduler, the pod's six
/// start phases (as `kinetic bench pods` splits them), pod Ready → first byte, and the whole
/// request → first byte. `None` when the pod or its timeline cannot be found within 5 s.
async fn cold_steps(
    pods: &Api<Pod>,
    service: &str,
    sent: jiff::Timestamp,
    first_byte: Duration,
) -> Option<[f64; 9]> {
    let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={service}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let t = loop {
        let list = pods.list(&lp).await.ok()?;
        let found = list.items.iter().find_map(|p| {
            let a = p.metadata.annotations.as_ref()?.get(TIMELINE)?;
            serde_json::from_str::<Timeline>(a).ok().filter(|t| t.ready.is_some())
        });
        if let Some(t) = found {
            break t;
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let d = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| -> f64 {
        match (a, b) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64() * 1000.0,
            _ => 0.0,
        }
    };
    let c = t.containers.first()?;
    let answered = sent.checked_add(jiff::SignedDuration::try_from(first_byte).ok()?).ok()?;
    Some([
        d(Some(sent), t.created),
        d(t.created, t.scheduled),
        d(t.scheduled, t.observed),
        d(t.observed, t.sandbox_ready),
        d(t.sandbox_ready, c.created),
        d(c.created, c.started),
        d(c.started, t.ready),
        d(t.ready, Some(answered)),
        ms(first_byte),
    ])
}

/// `n` concurrent requests, each on its own connection.
async fn burst(gateway: SocketAddr, host: &str, n: usize) -> Burst {
    let mut b = Burst {
        ok: 0,
        other_codes: Vec::new(),
        conn_errors: Vec::new(),
        last: Duration::ZERO,
        first: Duration::MAX,
    };
    for (r, at) in get_all(gateway, &vec![host.to_owned(); n]).await {
        b.last = b.last.max(at);
        b.first = b.first.min(at);
        match r {
            Ok(a) if a.code == 200 && a.body.contains(PAGE) => b.ok += 1,
            Ok(a) => b.other_codes.push(a.code),
            Err(e) => b.conn_errors.push(format!("{e:#}")),
        }
    }
    b
}

/// `GET /` to each of `hosts` through `gateway`, all at once, each on its own connection (the
/// bursts of `bench serve` and `bench coldstart`): each answer, or why there was none, and when
/// it was complete, counted from the start.
pub(crate) async fn get_all(
    gateway: SocketAddr,
    hosts: &[String],
) -> Vec<(anyhow::Result<Answer>, Duration)> {
    let start = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .map(|host| {
            let host = host.clone();
            AbortOnDrop(tokio::spawn(async move {
                let r = get_once(gateway, &host).await;
                (r, start.elapsed())
            }))
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(match t.join().await {
            Ok(x) => x,
            Err(e) => (Err(anyhow::anyhow!("request task failed: {e}")), start.elapsed()),
        });
    }
    out
}

/// Deletes the Service and waits until its pods are gone.
async fn delete_service(
    services: &Api<Service>,
    pods: &Api<Pod>,
    name: &str,
) -> anyhow::Result<()> {
    services
        .delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {name}"))?;
    let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={name}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&lp).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("the pods of {name} were not gone within 120 s of its deletion");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The IP and port of the Service's one ready pod.
async fn ready_pod_addr(pods: &Api<Pod>, service: &str) -> anyhow::Result<SocketAddr> {
    let lp = ListParams::default().labels(&format!("{SERVICE_LABEL}={service}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods.list(&lp).await?.items;
        let ready: Vec<&Pod> = list.iter().filter(|p| crate::bench_pods::is_ready(p)).collect();
        if let [p] = ready.as_slice()
            && list.len() == 1
            && let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.as_deref())
        {
            return Ok(SocketAddr::new(ip.parse()?, 8080));
        }
        if Instant::now() > deadline {
            bail!("{service} did not have exactly one ready pod within 60 s ({} pods)", list.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An answer to one request on a new connection.
pub(crate) struct Answer {
    pub(crate) code: u16,
    pub(crate) body: String,
    pub(crate) first_byte: Duration,
}

/// `GET /` with `Host: host` on a new connection (`Connection: close`): the status, the body
/// (raw; the page is checked with `contains`), and the time from just before the connect to
/// the first response byte.
pub(crate) async fn get_once(addr: SocketAddr, host: &str) -> anyhow::Result<Answer> {
    let start = Instant::now();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tokio::time::timeout(ANSWER_LIMIT, async {
        let mut tcp = TcpStream::connect(addr).await.context("connecting")?;
        tcp.set_nodelay(true)?;
        tcp.write_all(req.as_bytes()).await.context("sending the request")?;
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.context("reading the answer")?;
        let first_byte = start.elapsed();
        if n == 0 {
            bail!("the connection closed without an answer");
        }
        buf.truncate(n);
        tcp.read_to_end(&mut buf).await.context("reading the answer")?;
        let text = String::from_utf8_lossy(&buf);
        let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok(Answer { code, body, first_byte })
    })
    .await
    .with_context(|| format!("no answer within {ANSWER_LIMIT:?}"))?
}

/// One HTTP/1.1 client that keeps its connection open while the server does.
struct KeepAlive {
    addr: SocketAddr,
    request: Vec<u8>,
    conn: Option<BufReader<TcpStream>>,
    connects: usize,
}

impl KeepAlive {
    fn new(addr: SocketAddr, host: &str) -> Self {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        Self { addr, request, conn: None, connects: 0 }
    }

    /// One `GET /`; on a reused connection that the server had closed, once more on a new one.
    async fn get(&mut self) -> anyhow::Result<u16> {
        let reused = self.conn.is_some();
        match self.try_get().await {
            Err(e) if reused && e.is::<Closed>() => self.try_get().await,
            r => r,
        }
    }

    async fn try_get(&mut self) -> anyhow::Result<u16> {
        let r = tokio::time::timeout(Duration::from_secs(10), self.exchange()).await;
        let r = r.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 10 s")));
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn exchange(&mut self) -> anyhow::Result<u16> {
        if self.conn.is_none() {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            self.conn = Some(BufReader::new(tcp));
            self.connects += 1;
        }
        let conn = self.conn.as_mut().context("no connection")?;
        conn.get_mut().write_all(&self.request).await?;
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(Closed.into());
        }
        let code: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no status")?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else { continue };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        line.clear();
                        if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0u8; size + 2];
                conn.read_exact(&mut chunk).await?;
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else {
            conn.read_to_end(&mut body).await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(code)
    }
}

/// The server closed a kept-alive connection before answering.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection closed before an answer")
    }
}

impl std::error::Error for Closed {}

/// One client, one request at a time: `WARM_UP` requests, then `n` measured ones (or as many
/// as fit in `limit`); latencies unsorted.
async fn steady(addr: SocketAddr, host: &str, n: usize, limit: Duration) -> anyhow::Result<Steady> {
    let mut c = KeepAlive::new(addr, host);
    for i in 0..WARM_UP {
        let code = c.get().await.with_context(|| format!("warm-up request {i} to {addr}"))?;
        if code != 200 {
            bail!("warm-up request {i} to {addr} answered {code}");
        }
    }
    c.connects = 0;
    let mut s = Steady {
        latencies: Vec::with_capacity(n),
        wall: Duration::ZERO,
        errors: 0,
        non_200: 0,
        connects: 0,
    };
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        match c.get().await {
            Ok(200) => s.latencies.push(t.elapsed()),
            Ok(_) => s.non_200 += 1,
            Err(_) => s.errors += 1,
        }
        if start.elapsed() > limit {
            break;
        }
    }
    s.wall = start.elapsed();
    s.connects = c.connects;
    Ok(s)
}

/// Debian's nginx as a reverse proxy on 127.0.0.1 to one pod, with a keep-alive upstream.
/// Stopped (SIGTERM to the master, which stops its workers) when dropped.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Nginx {
    async fn start(bin: &Path, prefix: &Path, upstream: SocketAddr) -> anyhow::Result<Self> {
        std::fs::create_dir_all(prefix.join("logs"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let p = prefix.display();
        let conf = format!(
            "daemon off;
master_process on;
worker_processes auto;
user root;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {p}/client_body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;
  keepalive_requests 1000000;
  upstream pods {{
    server {upstream};
    keepalive 32;
  }}
  server {{
    listen {addr};
    location / {{
      proxy_pass http://pods;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
    }}
  }}
}}
"
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            if let Some(st) = nginx.child.try_wait()? {
                let log =
                    std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
                bail!("nginx exited ({st}) before listening on {addr}: {log}");
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(nginx)
    }

    fn stop(self) {
        drop(self);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(id) = i32::try_from(self.child.id())
            && let Some(pid) = rustix::process::Pid::from_raw(id)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/proc/loadavg`'s three averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_report(args: &ServeArgs, m: &Measured, load_before: &str, load_after: &str) {
    let mut cold: Vec<Duration> = m.cold.iter().map(|c| c.first_byte).collect();
    cold.sort();
    let cold_ok = m.cold.iter().filter(|c| c.code == 200).count();
    let mut zero: Vec<Duration> = m.cold.iter().map(|c| c.to_zero).collect();
    zero.sort();
    let n = m.cold.len();
    let f = |d: Duration| format!("{:.1} ms", ms(d));
    let mut rows = vec![
        Row::new(
            format!("cold start, first byte p50 ({n} from zero)"),
            f(percentile(&cold, 0.5)),
            "≤ 200 ms",
            Some(percentile(&cold, 0.5) <= Duration::from_millis(200)),
        ),
        Row::new("cold start, first byte p90".into(), f(percentile(&cold, 0.9)), "", None),
        Row::new(
            "cold start, first byte p99".into(),
            f(percentile(&cold, 0.99)),
            "≤ 500 ms",
            Some(percentile(&cold, 0.99) <= Duration::from_millis(500)),
        ),
        Row::new("cold start, first byte max".into(), f(percentile(&cold, 1.0)), "", None),
        Row::new(
            "cold starts answered 200".into(),
            format!("{cold_ok}/{n}"),
            "all",
            Some(cold_ok == n),
        ),
        Row::new(
            "  last request → zero pods, p50".into(),
            format!("{:.1} s", percentile(&zero, 0.5).as_secs_f64()),
            "",
            None,
        ),
    ];
    if let Some(b) = &m.burst {
        let lost = args.burst - b.ok;
        rows.push(Row::new(
            format!("burst of {} from zero: answered 200", args.burst),
            format!("{}/{}", b.ok, args.burst),
            "0 lost",
            Some(lost == 0),
        ));
        let mut codes = b.other_codes.clone();
        codes.sort_unstable();
        codes.dedup();
        rows.push(Row::new(
            "  other status codes".into(),
            format!("{} {codes:?}", b.other_codes.len()),
            "",
            None,
        ));
        rows.push(Row::new(
            "  connection errors".into(),
            b.conn_errors.len().to_string(),
            "",
            None,
        ));
        rows.push(Row::new("  first answer after".into(), f(b.first), "", None));
        rows.push(Row::new("  last answer after".into(), f(b.last), "", None));
    }
    for (name, s) in
        [("direct to the pod", &m.direct), ("gateway", &m.gateway), ("nginx", &m.nginx)]
    {
        rows.push(Row::new(
            format!("steady, {name}: requests/s ({} measured)", s.latencies.len()),
            format!("{:.0}", s.rps()),
            "",
            None,
        ));
        rows.push(Row::new(
            format!("steady, {name}: latency p50 / p99 / max"),
            format!("{:.3} / {:.3} / {:.1} ms", ms(s.p(0.5)), ms(s.p(0.99)), ms(s.p(1.0))),
            "",
            None,
        ));
        rows.push(Row::new(
            format!("  {name}: errors / non-200 / client connections"),
            format!("{} / {} / {}", s.errors, s.non_200, s.connects),
            "",
            None,
        ));
    }
    let ratio = m.gateway.rps() / m.nginx.rps().max(1e-9);
    rows.push(Row::new(
        "gateway / nginx throughput".into(),
        format!("{ratio:.2}×"),
        "≥ 1.00×",
        Some(ratio >= 1.0),
    ));
    let added = ms(m.gateway.p(0.5)) - ms(m.direct.p(0.5));
    rows.push(Row::new(
        "gateway added p50 latency vs direct".into(),
        format!("{added:.3} ms"),
        "≤ 0.5 ms",
        Some(added <= 0.5),
    ));
    rows.push(Row::new(
        "nginx added p50 latency vs direct".into(),
        format!("{:.3} ms", ms(m.nginx.p(0.5)) - ms(m.direct.p(0.5))),
        "",
        None,
    ));
    rows.push(Row::new(
        "load average before / after (1, 5, 15 min)".into(),
        format!("{load_before} / {load_after}"),
        "",
        None,
    ));
    print_table(&rows);
    print_cold_steps(&m.cold);
    if let Some(b) = &m.burst
        && let Some(e) = b.conn_errors.first()
    {
        #[allow(clippy::print_stdout)]
        {
            println!("\nfirst burst connection error: {e}");
        }
    }
}

/// Mean and p50 of each step of the cold starts that have a pod timeline.
#[allow(clippy::print_stdout)]
fn print_cold_steps(cold: &[Cold]) {
    let all: Vec<[f64; 9]> = cold.iter().filter_map(|c| c.steps).collect();
    if all.is_empty() {
        return;
    }
    let names = [
        "request → pod seen by the scheduler (hold, KPA, CloneSet)",
        "schedule (seen → bound)",
        "node pickup (bound → agent saw it)",
        "sandbox (netns + CNI + /etc)",
        "image + config (cache hit, env, volumes)",
        "container create + start (overlay, runc run)",
        "started → Ready (readiness probe, status)",
        "Ready → first byte (watch, gateway table, forward)",
        "request → first byte",
    ];
    // The slowest cold start's own steps: where a tail comes from.
    let slowest = all.iter().max_by(|a, b| a[8].total_cmp(&b[8])).copied().unwrap_or_default();
    println!();
    println!("where a cold start's time goes, over {} cold starts (pod timelines)", all.len());
    println!("{:<60}  {:>9}  {:>9}  {:>9}", "step", "mean ms", "p50 ms", "slowest");
    for (i, name) in names.iter().enumerate() {
        let mut v: Vec<f64> = all.iter().map(|s| s[i]).collect();
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let p50 = v[(v.len() - 1) / 2];
        println!("{name:<60}  {mean:>9.1}  {p50:>9.1}  {:>9.1}", slowest[i]);
    }
}
