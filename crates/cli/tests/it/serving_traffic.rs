//! Issue 11 end to end, traffic through the gateway with real containers: a 50/50 split, tag
//! URLs, `containerConcurrency: 1`, `timeoutSeconds`, a release under steady load and broken
//! releases that leave the old revision serving.
//!
//! Each test runs its own `kinetic up` (node agent, runc, a bridge of its own) and shares it
//! between the cases that fit together, to keep the suite's time down. The test server is
//! busybox httpd with two CGI scripts: `cc.sh` records how many requests the container is
//! serving at its start and at its end (a file per request in a directory; the container's own
//! count, returned in the body and appended to `/tmp/seen`), and `slow.sh` outlives any
//! timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kinetic_api::knative::service::Service;
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_testkit::net::NetSlot;
use kinetic_testkit::registry::Registry;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Kinetic;

/// Counts the requests the container serves at the start and at the end of this one (each
/// request holds a file named after its PID for 0.2 s).
const CC_CGI: &str = r#"#!/bin/sh
d=/tmp/inflight
mkdir -p $d
touch $d/$$
a=$(ls $d | wc -l)
sleep 0.2
b=$(ls $d | wc -l)
rm -f $d/$$
echo "$a $b" >> /tmp/seen
printf 'Content-Type: text/plain\r\n\r\n'
echo "inflight $a $b"
"#;

/// Answers after 30 s, later than any timeout here.
const SLOW_CGI: &str =
    "#!/bin/sh\nsleep 30\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho late\n";

/// The container's command: httpd as PID 1 would ignore SIGTERM (see `serving.rs`).
const COMMAND: &str = r#"[sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]"#;

/// One `kinetic up` with a node agent and the gateway, a registry and a kubectl home.
pub(crate) struct Env {
    pub up: Kinetic,
    pub gateway: String,
    pub client: kube::Client,
    pub registry: Registry,
    home: tempfile::TempDir,
    /// Swept (containers, netns, mounts) when the test ends, pass or fail.
    _dir: crate::UpDir,
    _slot: NetSlot,
}

impl Env {
    pub async fn start(node: &str) -> Env {
        let slot = NetSlot::take();
        let registry = Registry::start().await.unwrap();
        let (up, dir, gateway) = crate::up_with_gateway(node, &slot).await;
        let client = kinetic_testkit::client_from_kubeconfig(&up.kubeconfig).await.unwrap();
        let home = tempfile::tempdir().unwrap();
        Env { up, gateway, client, registry, home, _dir: dir, _slot: slot }
    }

    pub async fn kubectl(&self, args: &[&str]) -> String {
        crate::kubectl(&self.up, self.home.path(), args).await
    }

    pub async fn apply(&self, manifest: &str) {
        crate::apply_when_served(&self.up, self.home.path(), manifest).await;
    }

    /// The test image `{repo}:{version}`: `/` answers `{version}`, plus the two CGI scripts.
    pub async fn image(&self, repo: &str, version: &str) -> String {
        let index = format!("{version}\n");
        let files = [
            ("www/index.html", index.as_str()),
            ("www/cgi-bin/cc.sh", CC_CGI),
            ("www/cgi-bin/slow.sh", SLOW_CGI),
        ];
        kinetic_testkit::images::busybox(&self.registry, repo, version, &files).await.unwrap()
    }

    /// Pass or fail (`outcome` of [`catch`]), deletes every Knative Service and waits until
    /// their CloneSets and pods are gone (containers outlive a stopped agent by design), then
    /// stops `up` and re-raises a failure.
    pub async fn finish(self, outcome: std::thread::Result<()>) {
        let _ = kinetic_testkit::kubectl(
            &self.up.kubeconfig,
            self.home.path(),
            &["delete", "ksvc", "--all", "--wait=true"],
            None,
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let clonesets: Api<CloneSet> = Api::namespaced(self.client.clone(), "default");
        let serving = ListParams::default().labels("serving.knative.dev/service");
        for i in 0.. {
            let cs = clonesets.list(&ListParams::default()).await.unwrap().items.len();
            if cs == 0 && pods.list(&serving).await.unwrap().items.is_empty() {
                break;
            }
            assert!(i < 600, "pods or CloneSets left after deleting the Services");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(self);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Waits (60 s at most) until the Knative Service `name` has observed its generation and
    /// `pred` holds; returns it.
    pub async fn wait_ksvc(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&Service) -> bool,
    ) -> Service {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = api.get_opt(name).await.unwrap();
            if let Some(s) = &got
                && s.status.as_ref().and_then(|st| st.status.observed_generation)
                    == s.metadata.generation
                && pred(s)
            {
                return s.clone();
            }
            if Instant::now() > deadline {
                let all = self.kubectl(&["get", "ksvc,route,rev,pods", "-o", "yaml"]).await;
                panic!("{what} not reached: {got:#?}\n{all}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A condition of the Service: status, reason, message.
/// Runs the cases, catching a panic so [`Env::finish`] can clean up first.
pub(crate) async fn catch(cases: impl Future<Output = ()>) -> std::thread::Result<()> {
    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(cases)).await
}

pub(crate) fn condition(s: &Service, type_: &str) -> (String, String, String) {
    let c = s
        .status
        .as_ref()
        .and_then(|st| st.status.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    c.map_or_else(Default::default, |c| {
        (
            c.status.clone(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        )
    })
}

pub(crate) fn ready(s: &Service) -> bool {
    condition(s, "Ready").0 == "True"
}

/// The Service's traffic as `(revision, percent, tag url)`.
pub(crate) fn traffic(s: &Service) -> Vec<(String, i64, Option<String>)> {
    s.status
        .iter()
        .flat_map(|st| st.route.traffic.iter().flatten())
        .map(|t| {
            (t.revision_name.clone().unwrap_or_default(), t.percent.unwrap_or(0), t.url.clone())
        })
        .collect()
}

/// The host of a URL.
pub(crate) fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// `GET path` to `gateway` with `Host: host` over a fresh connection; status code and body
/// (code 0 when the connection failed or was reset before a status line).
pub(crate) async fn get(gateway: &str, host: &str, path: &str) -> (u16, String) {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(gateway).await else {
        return (0, "connect failed".to_owned());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if let Err(e) = tcp.write_all(req.as_bytes()).await {
        return (0, format!("write: {e}"));
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), tcp.read_to_end(&mut out))
        .await
        .expect("the gateway answers within 120 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    if let Err(e) = read {
        return (0, format!("read: {e} after {text:?}"));
    }
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    // A chunked body (the gateway passes the container's framing on): keep the data only.
    let body = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `n` GETs with at most `parallel` at once; the answers in completion order.
async fn many(
    gateway: &str,
    host: &str,
    path: &str,
    n: usize,
    parallel: usize,
) -> Vec<(u16, String)> {
    futures::stream::iter(0..n)
        .map(|_| get(gateway, host, path))
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// A Knative Service `name` running `image` with the test server; `template_meta` and
/// `spec_extra` go into the template's metadata and spec, `traffic` into the Service's spec
/// (YAML, already indented).
fn ksvc(name: &str, image: &str, template_meta: &str, spec_extra: &str, traffic: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  template:
    metadata:
{template_meta}
    spec:
{spec_extra}
      containers:
      - image: {image}
        command: {COMMAND}
{traffic}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_50_split_holds_within_5_percent_and_tags_answer_at_their_own_url() {
    let env = Env::start("node-split").await;
    let outcome = catch(split_and_tags(&env)).await;
    env.finish(outcome).await;
}

async fn split_and_tags(env: &Env) {
    let v1 = env.image("split", "v1").await;
    let v2 = env.image("split", "v2").await;

    // The first request after a fresh Service is Ready is answered (the Route waits for the
    // gateway to route it: IngressReady), watched so the request follows Ready at once.
    let api: Api<Service> = Api::namespaced(env.client.clone(), "default");
    for i in 1..=3 {
        let name = format!("fresh-{i}");
        env.apply(&ksvc(&name, &v1, "      annotations: {}", "", "")).await;
        let cond = |s: Option<&Service>| s.is_some_and(ready);
        let svc = tokio::time::timeout(
            Duration::from_secs(60),
            kube::runtime::wait::await_condition(api.clone(), &name, cond),
        )
        .await
        .expect("a fresh Service gets Ready within 60 s")
        .unwrap()
        .unwrap();
        let host = host_of(svc.status.as_ref().unwrap().route.url.as_deref().unwrap());
        let (code, body) = get(&env.gateway, &host, "/").await;
        assert_eq!((code, body.as_str()), (200, "v1\n"), "the first request after {name} is Ready");
        assert_eq!(condition(&svc, "RoutesReady").0, "True");
    }

    env.apply(&ksvc("split", &v1, "      name: split-v1", "", "")).await;
    env.wait_ksvc("split", "split-v1 Ready", ready).await;
    let traffic_yaml = "  traffic:
  - revisionName: split-v1
    percent: 50
    tag: one
  - revisionName: split-v2
    percent: 50
    tag: two
";
    env.apply(&ksvc("split", &v2, "      name: split-v2", "", traffic_yaml)).await;
    let svc = env
        .wait_ksvc("split", "the 50/50 split Ready", |s| {
            ready(s) && traffic(s).iter().map(|t| t.1).collect::<Vec<_>>() == [50, 50]
        })
        .await;
    let st = svc.status.clone().unwrap();
    let host = host_of(st.route.url.as_deref().unwrap());

    // 2,000 requests, 16 at a time: each revision's share within 45–55 %.
    let start = Instant::now();
    let answers = many(&env.gateway, &host, "/", 2000, 16).await;
    let (mut one, mut two) = (0, 0);
    for (code, body) in &answers {
        match (code, body.as_str()) {
            (200, "v1\n") => one += 1,
            (200, "v2\n") => two += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("50/50 split over 2000 requests: {one} v1, {two} v2 in {:?}", start.elapsed());
    assert!((900..=1100).contains(&one), "v1 got {one} of 2000, v2 {two}");

    // Each tag at `{tag}-{route}.{namespace}.{domain}`, and only its revision there.
    let t = traffic(&svc);
    for (rev, tag, body) in [("split-v1", "one", "v1\n"), ("split-v2", "two", "v2\n")] {
        let url = t.iter().find(|t| t.0 == rev).and_then(|t| t.2.clone()).unwrap();
        assert_eq!(url, format!("http://{tag}-{host}"), "{rev}'s tag URL");
        for (code, b) in many(&env.gateway, &host_of(&url), "/", 50, 8).await {
            assert_eq!((code, b.as_str()), (200, body), "at {url}");
        }
    }

    gradual_rollout(env, &v1, &v2).await;
}

/// `serving.knative.dev/rollout-duration: 6s`: the new revision gets 1 %, then, once the
/// gateway routes that, equal steps over the rest of the 6 s, as upstream rolls out.
async fn gradual_rollout(env: &Env, v1: &str, v2: &str) {
    let with_duration = |image: &str| {
        ksvc("gradual", image, "      annotations: {}", "", "").replace(
            "  namespace: default\n",
            "  namespace: default\n  annotations:\n    serving.knative.dev/rollout-duration: 6s\n",
        )
    };
    env.apply(&with_duration(v1)).await;
    let svc = env.wait_ksvc("gradual", "gradual-00001 Ready", ready).await;
    let host = host_of(svc.status.unwrap().route.url.as_deref().unwrap());
    env.apply(&with_duration(v2)).await;
    let routes: Api<kinetic_api::knative::route::Route> =
        Api::namespaced(env.client.clone(), "default");
    let start = Instant::now();
    let mut shapes: Vec<Vec<(String, i64, bool)>> = Vec::new();
    let mut bodies = std::collections::BTreeSet::new();
    loop {
        let route = routes.get("gradual").await.unwrap();
        let shape: Vec<(String, i64, bool)> = route
            .status
            .iter()
            .flat_map(|s| s.fields.traffic.iter().flatten())
            .map(|t| {
                let name = t.revision_name.clone().unwrap_or_default();
                (name, t.percent.unwrap_or(0), t.latest_revision == Some(true))
            })
            .collect();
        if shapes.last() != Some(&shape) {
            eprintln!("gradual rollout after {:?}: {shape:?}", start.elapsed());
            shapes.push(shape.clone());
        }
        if shape == [("gradual-00002".to_owned(), 100, true)] {
            break;
        }
        if shape.len() == 2 {
            let (_, body) = get(&env.gateway, &host, "/").await;
            bodies.insert(body);
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no rollout to 100 %: {shapes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    // Intermediate shapes: the old revision first (latestRevision false), the new one last,
    // its share only growing.
    let mid: Vec<_> = shapes.iter().filter(|s| s.len() == 2).collect();
    assert!(mid.len() >= 3, "too few steps: {shapes:?}");
    for s in &mid {
        assert_eq!(
            (s[0].0.as_str(), s[0].2, s[1].0.as_str(), s[1].2),
            ("gradual-00001", false, "gradual-00002", true)
        );
        assert_eq!(s[0].1 + s[1].1, 100, "{s:?}");
    }
    assert!(mid.windows(2).all(|w| w[0][1].1 < w[1][1].1), "{shapes:?}");
    assert!(took >= Duration::from_secs(4), "a 6 s rollout done in {took:?}: {shapes:?}");
    assert!(bodies.contains("v1\n") || bodies.contains("v2\n"), "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_concurrency_1_is_never_exceeded_and_a_request_past_timeout_seconds_gets_504() {
    let env = Env::start("node-limits").await;
    let outcome = catch(limits(&env)).await;
    env.finish(outcome).await;
}

async fn limits(env: &Env) {
    let image = env.image("limits", "v1").await;
    // Three pods from the start: the burst below then never waits on a scale-up, whose speed
    // under a loaded CI machine would decide whether the twelfth request's wait in the
    // gateway passes timeoutSeconds (a 504 there is upstream's behaviour, not a bug).
    let meta = "      annotations:
        autoscaling.knative.dev/min-scale: \"3\"
        autoscaling.knative.dev/max-scale: \"3\"";
    let spec = "      containerConcurrency: 1\n      timeoutSeconds: 6";
    env.apply(&ksvc("limits", &image, meta, spec, "")).await;
    let svc = env.wait_ksvc("limits", "limits Ready", ready).await;
    let host = host_of(svc.status.unwrap().route.url.as_deref().unwrap());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let lp = ListParams::default().labels("serving.knative.dev/service=limits");
    let start = Instant::now();
    loop {
        let ready_pods = pods
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .count();
        if ready_pods == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{ready_pods} of 3 pods Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 12 at once: the gateway holds all but one per pod; every container saw itself alone.
    let answers = many(&env.gateway, &host, "/cgi-bin/cc.sh", 12, 12).await;
    for (code, body) in &answers {
        assert_eq!((*code, body.as_str()), (200, "inflight 1 1\n"), "{answers:?}");
    }
    // And what the containers recorded themselves.
    let mut seen = Vec::new();
    for p in pods.list(&lp).await.unwrap().items {
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
            continue;
        }
        let out = env
            .kubectl(&[
                "exec",
                &p.name_any(),
                "-c",
                "user-container",
                "--",
                "sh",
                "-c",
                "cat /tmp/seen || true",
            ])
            .await;
        seen.extend(out.lines().map(str::to_owned));
    }
    eprintln!("containerConcurrency 1: the containers recorded {seen:?}");
    assert!(!seen.is_empty(), "no pod recorded a request");
    assert!(seen.iter().all(|l| l == "1 1"), "a container saw more than one request: {seen:?}");

    // Past timeoutSeconds (6 s): 504 with a body that says so.
    let start = Instant::now();
    let (code, body) = get(&env.gateway, &host, "/cgi-bin/slow.sh").await;
    let took = start.elapsed();
    eprintln!("slow request answered {code} after {took:?}: {body}");
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("timeoutSeconds") && body.contains("6s"), "{body}");
    assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(15), "{took:?}");

    // `networking.knative.dev/visibility: cluster-local`: only the cluster-local names, even
    // with an external domain configured.
    let domain = "apiVersion: v1
kind: Namespace
metadata:
  name: knative-serving
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-domain
  namespace: knative-serving
data:
  example.com: \"\"
";
    env.apply(domain).await;
    let local = ksvc("local", &image, "      annotations: {}", "", "").replace(
        "  namespace: default\n",
        "  namespace: default\n  labels:\n    networking.knative.dev/visibility: cluster-local\n",
    );
    env.apply(&local).await;
    let svc = env.wait_ksvc("local", "local Ready", ready).await;
    let url = svc.status.unwrap().route.url.unwrap();
    assert_eq!(url, "http://local.default.svc.cluster.local");
    for h in ["local.default.svc.cluster.local", "local.default.svc", "local.default"] {
        assert_eq!(get(&env.gateway, h, "/").await, (200, "v1\n".to_owned()), "at {h}");
    }
    let external = "local.default.example.com";
    let (code, body) = get(&env.gateway, external, "/").await;
    assert_eq!(code, 404, "a cluster-local Service at its external name {external}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_under_load_loses_no_request_and_broken_releases_leave_the_old_revision_serving()
{
    let env = Env::start("node-release").await;
    let outcome = catch(release(&env)).await;
    env.finish(outcome).await;
}

async fn release(env: &Env) {
    let v1 = env.image("release", "v1").await;
    let v2 = env.image("release", "v2").await;
    env.apply(&ksvc("release", &v1, "      annotations: {}", "", "")).await;
    let svc = env.wait_ksvc("release", "release-00001 Ready", ready).await;
    let host = host_of(svc.status.unwrap().route.url.as_deref().unwrap());

    // A steady load: 4 clients, one request after another, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gateway, host, stop) = (env.gateway.clone(), host.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(get(&gateway, &host, "/").await);
                }
                answers
            })
        })
        .collect();
    let load = Load { stop, clients };

    // The release: v2 takes all traffic once it is Ready.
    env.apply(&ksvc("release", &v2, "      annotations: {}", "", "")).await;
    env.wait_ksvc("release", "release-00002 Ready with all traffic", |s| {
        ready(s) && traffic(s).iter().map(|t| (t.0.as_str(), t.1)).eq([("release-00002", 100)])
    })
    .await;
    // Still under load, an image that cannot be pulled, then one whose container exits.
    let missing = format!("{}/release:missing", env.registry.addr());
    for (rev, image, command) in [
        ("release-00003", missing.as_str(), COMMAND),
        ("release-00004", v2.as_str(), r#"[sh, -c, "echo boom; exit 1"]"#),
    ] {
        let manifest =
            ksvc("release", image, "      annotations: {}", "", "").replace(COMMAND, command);
        env.apply(&manifest).await;
        let svc = env
            .wait_ksvc("release", &format!("{rev} failed in the ksvc"), |s| {
                let (status, _, message) = condition(s, "Ready");
                status == "False" && message.contains(rev)
            })
            .await;
        let (_, reason, message) = condition(&svc, "Ready");
        eprintln!("{rev}: Ready False {reason}: {message}");
        assert_eq!(reason, "RevisionFailed", "{message}");
        assert_eq!(condition(&svc, "ConfigurationsReady").1, "RevisionFailed");
        assert_eq!(
            traffic(&svc).iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(),
            [("release-00002", 100)]
        );
        for (code, body) in many(&env.gateway, &host, "/", 20, 4).await {
            assert_eq!((code, body.as_str()), (200, "v2\n"), "with {rev} broken");
        }
    }
    let answers = load.finish().await;
    let count = |b: &str| answers.iter().filter(|a| a.0 == 200 && a.1 == b).count();
    let (one, two) = (count("v1\n"), count("v2\n"));
    eprintln!("release under load: {} requests, {one} v1, {two} v2", answers.len());
    let lost: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(lost.is_empty(), "{} of {} requests failed: {lost:?}", lost.len(), answers.len());
    assert!(one > 0 && two > 0, "{one} v1, {two} v2");

    // Upstream's routingState labels: the routed revision and the newest created one are
    // active, the rest reserve.
    let want = "release-00001=reserve release-00002=active release-00003=reserve \
                release-00004=active";
    let jsonpath = "jsonpath={range .items[*]}{.metadata.name}=\
                    {.metadata.labels.serving\\.knative\\.dev/routingState} {end}";
    for i in 0.. {
        let args = ["get", "rev", "-l", "serving.knative.dev/service=release", "-o", jsonpath];
        let got = env.kubectl(&args).await;
        if got.trim() == want {
            break;
        }
        assert!(i < 100, "routingState labels: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The load's clients; stopped and collected by [`Load::finish`], stopped on drop too.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    async fn finish(mut self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for c in self.clients.drain(..) {
            all.extend(c.await.unwrap());
        }
        all
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A pod deleted under load (the CloneSet replaces it) loses no request. It used to cost the
/// requests the gateway sent it between its SIGTERM and the table dropping it (502:
/// connection refused, or closed mid-request; 2–3 in ~1,500). That race does not show on every
/// run: the gateway's own tests of refused and closing endpoints pin the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_under_load_loses_no_request() {
    let env = Env::start("node-churn").await;
    let outcome = catch(churn(&env)).await;
    env.finish(outcome).await;
}

async fn churn(env: &Env) {
    let v1 = env.image("churn", "v1").await;
    let meta = "      annotations:
        autoscaling.knative.dev/min-scale: \"2\"
        autoscaling.knative.dev/max-scale: \"2\"";
    env.apply(&ksvc("churn", &v1, meta, "", "")).await;
    let svc = env.wait_ksvc("churn", "churn Ready", ready).await;
    let host = host_of(svc.status.unwrap().route.url.as_deref().unwrap());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let lp = ListParams::default().labels("serving.knative.dev/service=churn");
    let ready_pods = || async {
        let is_ready = |p: &Pod| {
            let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        pods.list(&lp).await.unwrap().items.into_iter().filter(is_ready).collect::<Vec<_>>()
    };
    for i in 0.. {
        if ready_pods().await.len() == 2 {
            break;
        }
        assert!(i < 300, "min-scale 2 never reached");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gateway, host, stop) = (env.gateway.clone(), host.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(get(&gateway, &host, "/").await);
                }
                answers
            })
        })
        .collect();
    let load = Load { stop, clients };
    // Pacing, not synchronisation: load on both pods before and after the deletion.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deleted = Instant::now();
    let victim = ready_pods().await[0].name_any();
    env.kubectl(&["delete", "pod", &victim, "--wait=false"]).await;
    // Until the replacement is ready, and a moment of load on it.
    for i in 0.. {
        let now = ready_pods().await;
        let replaced = now.len() == 2 && now.iter().all(|p| p.name_any() != victim);
        if replaced && deleted.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(i < 300, "the deleted pod was not replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = load.finish().await;
    let lost: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    eprintln!("a pod deleted under load: {} requests, {} failed", answers.len(), lost.len());
    assert!(lost.is_empty(), "{} of {} failed: {:?}", lost.len(), answers.len(), lost.first());
}
