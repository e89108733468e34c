//! `kinetic bench sandbox`: how long a kubernetes-sigs/agent-sandbox `SandboxClaim` takes to
//! be answered from a `SandboxWarmPool` (issue 12 part 6: "a claim is answered from the warm
//! pool in milliseconds").
//!
//! Everything runs in this process, wired as `kinetic up` wires it (`crate::platform`): the
//! embedded API server, the scheduler, the controllers (the agent-sandbox and PodPool
//! controllers among them), one node agent on its own bridge and a registry on 127.0.0.1
//! serving a busybox `httpd` image. A SandboxTemplate of that image (readiness probe `GET /`)
//! and a SandboxWarmPool of `--pool-size` sandboxes are applied; then `--claims` times, with
//! the pool full again and the previous claim's pod gone from the node, a SandboxClaim is
//! created and timed from just before the create request to a watch (opened beforehand)
//! delivering the claim `Ready=True` with `status.sandbox.podIPs`, and then to the first
//! `200` from that IP. Every claim must be answered by a warm pod (the Sandbox's
//! `agents.x-k8s.io/launch-type` is `warm`); a cold one fails the run. Every wait is
//! bounded; the platform (pods, mounts, network namespaces, bridge) is torn down however the
//! run ends, Ctrl-C included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::agents::{
    LAUNCH_TYPE_LABEL, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool,
};
use kinetic_api::pool::{POOL_LABEL, POOL_STATE_LABEL, state};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::bench::{Row, ms, percentile, print_table};
use crate::platform::{AbortOnDrop, Platform};

/// Arguments of `kinetic bench sandbox`.
#[derive(clap::Args)]
pub struct SandboxArgs {
    /// SandboxClaims timed, one after another
    #[arg(long, default_value_t = 20)]
    claims: usize,
    /// Ready sandboxes the SandboxWarmPool keeps
    #[arg(long, default_value_t = 2)]
    pool_size: i32,
    /// The node's bridge (created for the run, deleted after it)
    #[arg(long, default_value = "kbsbx0")]
    bridge: String,
    /// The node's pod range
    #[arg(long, default_value = "10.216.0.0/16")]
    pod_cidr: String,
}

const NAMESPACE: &str = "default";
const TEMPLATE: &str = "bench";
const POOL: &str = "bench-pool";
const PORT: u16 = 8080;
/// No single wait may take longer.
const LIMIT: Duration = Duration::from_secs(60);

/// When the watch first saw each claim Ready: (instant, first pod IP).
type Answered = Arc<Mutex<HashMap<String, (Instant, String)>>>;

struct Sample {
    ready: Duration,
    answer: Duration,
    /// One API round trip just before the claim (a GET answered 404), the unit the claim's
    /// path is made of.
    round_trip: Duration,
}

/// Runs the benchmark.
///
/// # Errors
/// The platform cannot be started, a claim is not Ready within 60 s, or a claim was not
/// answered from the warm pool.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    if args.claims == 0 || args.pool_size < 1 {
        bail!("--claims and --pool-size must be at least 1");
    }
    let max_pods = usize::try_from(args.pool_size).unwrap_or(0) + 20;
    let platform =
        Platform::start("kinetic-bench-sandbox", &args.bridge, &args.pod_cidr, max_pods, true)
            .await?;
    let samples = platform.run(async |platform| measure(platform, &args).await).await?;
    report(&samples, &args);
    Ok(())
}

#[allow(clippy::print_stdout)] // the benchmark's report is its output
fn report(samples: &[Sample], args: &SandboxArgs) {
    let n = args.claims;
    let mut rows = Vec::new();
    for (what, f) in [
        ("claim created → claim Ready", (|s: &Sample| s.ready) as fn(&Sample) -> Duration),
        ("claim created → first HTTP answer", |s: &Sample| s.answer),
        ("one API round trip (GET → 404), for scale", |s: &Sample| s.round_trip),
    ] {
        let mut d: Vec<Duration> = samples.iter().map(f).collect();
        d.sort();
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            rows.push(Row::new(
                format!("{what} {name}, {n} claims (warm pool of {})", args.pool_size),
                format!("{:.1} ms", ms(percentile(&d, q))),
                "",
                None,
            ));
        }
    }
    print_table(&rows);
}

fn claim_ready(c: &SandboxClaim) -> Option<String> {
    let st = c.status.as_ref()?;
    let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| st.sandbox.pod_ips.first().cloned()).flatten()
}

async fn measure(platform: &Platform, args: &SandboxArgs) -> anyhow::Result<Vec<Sample>> {
    let client = platform.client.clone();
    let image = kinetic_testkit::images::busybox(
        &platform.registry,
        "sandbox",
        "v1",
        &[("www/index.html", "sandbox\n")],
    )
    .await?;
    let claims: Api<SandboxClaim> = Api::namespaced(client.clone(), NAMESPACE);
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let answered: Answered = Arc::default();
    let _watch = {
        let (answered, api) = (answered.clone(), claims.clone());
        AbortOnDrop(tokio::spawn(async move {
            use kube::runtime::WatchStreamExt as _;
            let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(ev) = s.next().await {
                if let Ok(Event::Apply(c) | Event::InitApply(c)) = ev
                    && let Some(ip) = claim_ready(&c)
                    && let Ok(mut m) = answered.lock()
                {
                    m.entry(c.name_any()).or_insert((Instant::now(), ip));
                }
            }
        }))
    };
    let template: SandboxTemplate = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
        "metadata": {"name": TEMPLATE, "namespace": NAMESPACE},
        "spec": {"podTemplate": {"metadata": {"labels": {"app": "bench"}}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "web", "image": image,
                "command": ["httpd", "-f", "-p", PORT.to_string(), "-h", "/www"],
                "readinessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 1}}]}}},
    }))?;
    create_when_served(&Api::namespaced(client.clone(), NAMESPACE), &template).await?;
    let pool: SandboxWarmPool = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {"replicas": args.pool_size, "sandboxTemplateRef": {"name": TEMPLATE}},
    }))?;
    create_when_served(&Api::namespaced(client.clone(), NAMESPACE), &pool).await?;
    eprintln!("filling the warm pool, then timing {} claims", args.claims);
    let mut out = Vec::new();
    for i in 0..args.claims {
        settle(platform, &pods, args.pool_size).await?;
        let name = format!("claim-{i}");
        let rt = Instant::now();
        claims.get_opt("absent").await?;
        let round_trip = rt.elapsed();
        let claim: SandboxClaim = serde_json::from_value(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"sandboxTemplateRef": {"name": TEMPLATE}},
        }))?;
        let t0 = Instant::now();
        claims.create(&PostParams::default(), &claim).await?;
        let (at, ip) = wait_answered(&answered, &name, t0).await?;
        let answer = loop {
            if get(&ip).await {
                break t0.elapsed();
            }
            if t0.elapsed() > LIMIT {
                bail!("claim {name}'s pod at {ip} did not answer within {LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        out.push(Sample { ready: at.saturating_duration_since(t0), answer, round_trip });
        let sb = sandboxes.get(&name).await.with_context(|| format!("reading Sandbox {name}"))?;
        let launch = sb.labels().get(LAUNCH_TYPE_LABEL).cloned().unwrap_or_default();
        if launch != kinetic_api::agents::launch_type::WARM {
            bail!("claim {name} was answered by a {launch:?} sandbox, not from the warm pool");
        }
        claims
            .delete(&name, &DeleteParams::foreground())
            .await
            .with_context(|| format!("deleting claim {name}"))?;
    }
    Ok(out)
}

/// Creates `obj`, retrying while its kind is not served yet (the controllers install the
/// CRDs as they start).
async fn create_when_served<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", obj.name_any())),
        }
    }
}

/// Waits until the warm pool holds `size` ready unclaimed pods and nothing else runs (no
/// teardown of an earlier claim's pod left, on the API or on the node).
async fn settle(platform: &Platform, pods: &Api<Pod>, size: i32) -> anyhow::Result<()> {
    let size = usize::try_from(size).unwrap_or(0);
    let deadline = Instant::now() + LIMIT;
    loop {
        let all = pods.list(&ListParams::default()).await?.items;
        let ready =
            all.iter()
                .filter(|p| {
                    p.labels().get(POOL_LABEL).is_some_and(|l| l == POOL)
                        && p.labels().get(POOL_STATE_LABEL).is_some_and(|s| s == state::READY)
                        && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
        let on_node =
            std::fs::read_dir(platform.node_pods()).map(std::iter::Iterator::count).unwrap_or(0);
        if ready == size && all.len() == size && on_node == size {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the warm pool did not settle: {ready} of {size} ready, {} pods, {on_node} on the node",
                all.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_answered(
    answered: &Answered,
    name: &str,
    t0: Instant,
) -> anyhow::Result<(Instant, String)> {
    loop {
        if let Some(v) = answered.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(v);
        }
        if t0.elapsed() > LIMIT {
            bail!("claim {name} was not Ready within {LIMIT:?}");
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
