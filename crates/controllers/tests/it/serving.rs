//! The Knative Serving controllers and admission against the embedded API server, with the
//! real `kube` client and `kubectl`. The CloneSet controller runs beside them, and a stand-in
//! kubelet plays the node (real containers are the node agent's and the CLI's end-to-end
//! tests): it marks pods Running and Ready with an imageID, except by image name: `broken`
//! images wait in `ImagePullBackOff`, `crash` images exited with code 1 and wait in
//! `CrashLoopBackOff`, `slow` images run unready until the pod is annotated `test/ready=true`.

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kinetic_api::knative::configuration::Configuration;
use kinetic_api::knative::podautoscaler::PodAutoscaler;
use kinetic_api::knative::revision::Revision;
use kinetic_api::knative::route::Route;
use kinetic_api::knative::service::Service;
use kinetic_api::knative::{Condition, TrafficTarget};
use kinetic_api::kruise::cloneset::CloneSet;
use kinetic_controllers::{cloneset, serving};
use kinetic_testkit::TestServer;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Env {
    server: TestServer,
    client: Client,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<kinetic_controllers::Result<()>>>,
    kubelet: JoinHandle<()>,
}

/// The status the stand-in kubelet writes for a pod, `None` when it already has it.
fn kubelet_status(p: &Pod) -> Option<Value> {
    let spec = p.spec.as_ref()?;
    let released = p.annotations().get("test/ready").is_some_and(|v| v == "true");
    let mut all_ready = true;
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let id = format!("sha256:{:064x}", image.len());
            if image.contains("broken") {
                all_ready = false;
                return json!({"name": c.name, "image": image, "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{image}\"")}}});
            }
            if image.contains("crash") {
                all_ready = false;
                return json!({"name": c.name, "image": image, "imageID": id, "ready": false,
                    "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "message": "boom"}}});
            }
            let ready = !image.contains("slow") || released;
            all_ready &= ready;
            // A kubelet restarts a container whose image changed in place and counts it, which
            // is how an in-place update (and a revision handoff) sees it done.
            let before = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|s| s.name == c.name));
            let restarts = before.map_or(0, |b| {
                if b.image == image { b.restart_count } else { b.restart_count + 1 }
            });
            json!({"name": c.name, "image": image, "imageID": id, "ready": ready,
                "started": true, "restartCount": restarts,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        })
        .collect();
    let ready = if all_ready { "True" } else { "False" };
    let want = json!({
        "phase": "Running",
        "podIP": "10.0.0.1",
        "conditions": [
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": statuses,
    });
    let same = serde_json::to_value(p.status.as_ref().and_then(|s| s.container_statuses.clone()))
        .ok()
        .as_ref()
        == Some(&want["containerStatuses"]);
    (!same).then_some(want)
}

impl Env {
    async fn start() -> Self {
        Self::start_with(true).await
    }

    /// `webhook` off: the server stores what the CRD schemas admit, as a real cluster without
    /// Knative's webhook does.
    async fn start_with(webhook: bool) -> Self {
        let server = TestServer::start_with(|c| c.kruise_webhook = webhook).await.unwrap();
        let client = server.client().await.unwrap();
        kinetic_controllers::crds::install(&client, &cloneset::crds()).await.unwrap();
        kinetic_controllers::crds::install(&client, &serving::crds()).await.unwrap();
        let (stop, rx) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // The gateway's routing (no autoscaler): a Route is Ready only once a gateway routes
        // it (IngressReady), as upstream's tests run an ingress.
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let routing = kinetic_controllers::serving_gateway::start_routing(
            client.clone(),
            listen,
            until(rx.clone()),
        )
        .await
        .unwrap();
        drop(routing); // Its task ends with the others when `stop` is sent.
        let tasks = vec![
            tokio::spawn(cloneset::run(client.clone(), until(rx.clone()))),
            tokio::spawn(serving::run(client.clone(), until(rx))),
        ];
        let kubelet = {
            let client = client.clone();
            tokio::spawn(async move {
                let api: Api<Pod> = Api::all(client.clone());
                let mut s = watcher(api, watcher::Config::default()).applied_objects().boxed();
                while let Some(Ok(p)) = s.next().await {
                    let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap());
                    if p.metadata.deletion_timestamp.is_some() {
                        let dp = kube::api::DeleteParams::default().grace_period(0);
                        let _ = api.delete(&p.name_any(), &dp).await;
                        continue;
                    }
                    if let Some(st) = kubelet_status(&p) {
                        let patch = Patch::Strategic(json!({"status": st}));
                        let _ =
                            api.patch_status(&p.name_any(), &PatchParams::default(), &patch).await;
                    }
                }
            })
        };
        Self { server, client, stop, tasks, kubelet }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn apply(&self, yaml: &str) {
        self.server.kubectl_stdin_ok(&["apply", "-f", "-"], yaml).await.unwrap();
    }

    /// Polls `name` until `pred` holds (30 s at most).
    async fn wait<K>(&self, name: &str, what: &str, pred: impl Fn(&K) -> bool) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.wait_for(Duration::from_secs(30), name, what, pred).await
    }

    /// [`Env::wait`] for a minute (for the autoscaler's windows).
    async fn wait_long<K>(&self, name: &str, what: &str, pred: impl Fn(&K) -> bool) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.wait_for(Duration::from_secs(60), name, what, pred).await
    }

    async fn wait_for<K>(
        &self,
        limit: Duration,
        name: &str,
        what: &str,
        pred: impl Fn(&K) -> bool,
    ) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let got = self.api::<K>().get_opt(name).await.unwrap();
            if let Some(o) = &got
                && pred(o)
            {
                return o.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "{what} not reached: {got:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.await.unwrap().unwrap();
        }
        self.kubelet.abort();
        self.server.shutdown().await;
    }
}

/// Knative's helloworld-go Service (knative.dev docs, "Deploying your first Knative Service"),
/// with `extra` appended to the revision spec and `traffic` to the Service spec.
fn hello(image: &str, extra: &str, traffic: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: {image}
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: \"World\"
{extra}
{traffic}"
    )
}

fn cond<'a>(conds: Option<&'a Vec<Condition>>, t: &str) -> Option<&'a Condition> {
    conds?.iter().find(|c| c.type_ == t)
}

fn is(conds: Option<&Vec<Condition>>, t: &str, status: &str) -> bool {
    cond(conds, t).is_some_and(|c| c.status == status)
}

fn svc_ready(s: &Service) -> bool {
    let st = s.status.as_ref();
    is(st.and_then(|s| s.status.conditions.as_ref()), "Ready", "True")
        && st.and_then(|s| s.status.observed_generation) == s.metadata.generation
}

fn traffic(s: &Service) -> Vec<(String, i64, Option<String>, Option<String>)> {
    s.status
        .iter()
        .flat_map(|s| s.route.traffic.iter().flatten())
        .map(|t: &TrafficTarget| {
            (
                t.revision_name.clone().unwrap_or_default(),
                t.percent.unwrap_or(0),
                t.tag.clone(),
                t.url.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn helloworld_service_gets_its_configuration_revision_cloneset_and_route() {
    let env = Env::start().await;
    env.apply(&hello("ghcr.io/knative/helloworld-go:latest", "", "")).await;

    // The webhook's defaults are stored.
    let yaml = env.server.kubectl_ok(&["get", "ksvc", "hello", "-o", "yaml"]).await.unwrap();
    for want in [
        "name: user-container",
        "timeoutSeconds: 300",
        "containerConcurrency: 0",
        "readinessProbe:",
        "tcpSocket:",
        "latestRevision: true",
        "percent: 100",
        "enableServiceLinks: false",
    ] {
        assert!(yaml.contains(want), "{want:?} missing from\n{yaml}");
    }

    let svc = env.wait::<Service>("hello", "ksvc Ready", svc_ready).await;
    let st = svc.status.clone().unwrap();
    assert_eq!(st.route.url.as_deref(), Some("http://hello.default.svc.cluster.local"));
    assert_eq!(
        st.route.address.as_ref().and_then(|a| a.url.as_deref()),
        Some("http://hello.default.svc.cluster.local")
    );
    assert_eq!(st.configuration.latest_created_revision_name.as_deref(), Some("hello-00001"));
    assert_eq!(st.configuration.latest_ready_revision_name.as_deref(), Some("hello-00001"));
    assert_eq!(traffic(&svc), [("hello-00001".to_owned(), 100, None, None)]);
    for t in ["ConfigurationsReady", "RoutesReady"] {
        assert!(is(st.status.conditions.as_ref(), t, "True"), "{t}: {st:#?}");
    }

    let cfg = env.api::<Configuration>().get("hello").await.unwrap();
    assert_eq!(cfg.labels()["serving.knative.dev/service"], "hello");
    let rev = env.api::<Revision>().get("hello-00001").await.unwrap();
    for (k, v) in [
        ("serving.knative.dev/configuration", "hello"),
        ("serving.knative.dev/configurationGeneration", "1"),
        ("serving.knative.dev/service", "hello"),
    ] {
        assert_eq!(rev.labels().get(k).map(String::as_str), Some(v), "{k}");
    }
    let rst = rev.status.clone().unwrap();
    for t in ["Ready", "ResourcesAvailable", "ContainerHealthy", "Active"] {
        assert!(is(rst.status.conditions.as_ref(), t, "True"), "{t}: {rst:#?}");
    }
    assert_eq!((rst.actual_replicas, rst.desired_replicas), (Some(1), Some(1)));
    let digest = rst.container_statuses.unwrap()[0].image_digest.clone().unwrap();
    assert!(digest.starts_with("ghcr.io/knative/helloworld-go@sha256:"), "{digest}");

    let cs = env.api::<CloneSet>().get("hello-00001-deployment").await.unwrap();
    assert_eq!(cs.spec.replicas, Some(1));
    let tl = cs.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(tl["serving.knative.dev/revision"], "hello-00001");
    assert_eq!(tl["serving.knative.dev/configuration"], "hello");
    assert_eq!(tl["serving.knative.dev/service"], "hello");
    let c = &cs.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.name, "user-container");
    let envs: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for (k, v) in [
        ("TARGET", "World"),
        ("PORT", "8080"),
        ("K_SERVICE", "hello"),
        ("K_CONFIGURATION", "hello"),
        ("K_REVISION", "hello-00001"),
    ] {
        assert!(envs.contains(&(k.to_owned(), v.to_owned())), "{k}={v} not in {envs:?}");
    }
    let probe = c.readiness_probe.clone().unwrap().tcp_socket.unwrap();
    assert_eq!(probe.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080));
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels("serving.knative.dev/revision=hello-00001"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);
    assert!(pods.items[0].name_any().starts_with("hello-00001-deployment-"));
    let core = env.api::<k8s_openapi::api::core::v1::Service>().get("hello").await.unwrap();
    assert_eq!(core.spec.unwrap().type_.as_deref(), Some("ClusterIP"));

    // Knative's Created events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let want = [
        "Created Configuration \"hello\"",
        "Created Route \"hello\"",
        "Created Revision \"hello-00001\"",
        "Created placeholder service \"hello\"",
    ];
    loop {
        let events: Vec<String> = env
            .api::<k8s_openapi::api::core::v1::Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Created"))
            .filter_map(|e| e.message)
            .collect();
        if want.iter().all(|w| events.iter().any(|e| e == w)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "events {events:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kubectl prints Knative's columns, filled.
    let out = env.server.kubectl_ok(&["get", "ksvc,configuration,revision,route"]).await.unwrap();
    for want in [
        "http://hello.default.svc.cluster.local",
        "hello-00001",
        "LATESTCREATED",
        "CONFIG NAME",
        "ACTUAL REPLICAS",
    ] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    assert!(!out.contains("<none>"), "an empty column in\n{out}");

    // Validation: a bad containerConcurrency is refused with a field cause.
    let bad = hello("ghcr.io/knative/helloworld-go:latest", "      containerConcurrency: 5000", "");
    let out = env.server.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted containerConcurrency 5000");
    assert!(
        err.contains("spec.template.spec.containerConcurrency") && err.contains("1000"),
        "{err}"
    );
    // Revisions are immutable.
    let out = env
        .server
        .kubectl(&[
            "patch",
            "revision",
            "hello-00001",
            "--type=merge",
            "-p",
            r#"{"spec":{"timeoutSeconds":10}}"#,
        ])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Immutable fields changed"), "{err}");
    env.stop().await;
}

#[tokio::test]
async fn a_template_change_stamps_hello_00002_and_latest_ready_moves_once_it_is_ready() {
    let env = Env::start().await;
    env.apply(&hello("example.com/hello:v1", "", "")).await;
    env.wait::<Service>("hello", "ksvc Ready", svc_ready).await;

    env.apply(&hello("example.com/hello:slow", "", "")).await;
    let rev = env
        .wait::<Revision>("hello-00002", "hello-00002 Deploying", |r| {
            let c = r.status.as_ref().and_then(|s| s.status.conditions.as_ref());
            cond(c, "Ready").is_some_and(|c| c.reason.as_deref() == Some("Deploying"))
        })
        .await;
    assert_eq!(rev.labels()["serving.knative.dev/configurationGeneration"], "2");
    let cfg = env
        .wait::<Configuration>("hello", "latestCreated hello-00002", |c| {
            c.status.as_ref().and_then(|s| s.fields.latest_created_revision_name.as_deref())
                == Some("hello-00002")
        })
        .await;
    let st = cfg.status.unwrap();
    assert_eq!(st.fields.latest_ready_revision_name.as_deref(), Some("hello-00001"));
    assert!(is(st.status.conditions.as_ref(), "Ready", "Unknown"), "{st:#?}");
    let svc = env.api::<Service>().get("hello").await.unwrap();
    assert_eq!(traffic(&svc), [("hello-00001".to_owned(), 100, None, None)]);

    // The new revision's pod becomes ready: latestReady and the traffic move to it. An
    // image-only change hands the serving revision's pod over in place (`serving::handoff`),
    // so the pod may carry the new revision's label only a moment after the revision exists:
    // wait for it (bounded poll) before releasing it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let pods = env
            .api::<Pod>()
            .list(&ListParams::default().labels("serving.knative.dev/revision=hello-00002"))
            .await
            .unwrap();
        if !pods.items.is_empty() {
            break pods;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pod of hello-00002 in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for p in pods {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {"test/ready": "true"}}}));
        env.api::<Pod>().patch(&p.name_any(), &PatchParams::default(), &patch).await.unwrap();
    }
    let svc = env
        .wait::<Service>("hello", "traffic on hello-00002", |s| {
            svc_ready(s) && traffic(s) == [("hello-00002".to_owned(), 100, None, None)]
        })
        .await;
    assert_eq!(
        svc.status.unwrap().configuration.latest_ready_revision_name.as_deref(),
        Some("hello-00002")
    );
    env.stop().await;
}

#[tokio::test]
async fn traffic_split_with_tags_resolves_in_the_route_status_under_config_domain() {
    let env = Env::start().await;
    let nss: Api<Namespace> = Api::all(env.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "knative-serving"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "knative-serving");
    let cm = json!({"metadata": {"name": "config-domain"}, "data": {"example.com": ""}});
    cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap()).await.unwrap();

    env.apply(&hello("example.com/hello:v1", "", "")).await;
    env.wait::<Service>("hello", "ksvc Ready", svc_ready).await;
    let split = "  traffic:
    - tag: current
      revisionName: hello-00001
      percent: 50
    - tag: latest
      latestRevision: true
      percent: 50";
    env.apply(&hello("example.com/hello:v2", "", split)).await;
    let want = [
        (
            "hello-00001".to_owned(),
            50,
            Some("current".to_owned()),
            Some("http://current-hello.default.example.com".to_owned()),
        ),
        (
            "hello-00002".to_owned(),
            50,
            Some("latest".to_owned()),
            Some("http://latest-hello.default.example.com".to_owned()),
        ),
    ];
    let svc =
        env.wait::<Service>("hello", "the split", |s| svc_ready(s) && traffic(s) == want).await;
    assert_eq!(svc.status.unwrap().route.url.as_deref(), Some("http://hello.default.example.com"));
    let route = env.api::<Route>().get("hello").await.unwrap();
    let rt = route.status.unwrap().fields.traffic.unwrap();
    assert_eq!(rt[0].latest_revision, Some(false));
    assert_eq!(rt[1].latest_revision, Some(true));

    // A new domain applies to the Route at once.
    let patch = Patch::Merge(json!({"data": {"example.com": null, "example.org": ""}}));
    cms.patch("config-domain", &PatchParams::default(), &patch).await.unwrap();
    env.wait::<Service>("hello", "the URL under example.org", |s| {
        s.status.as_ref().and_then(|s| s.route.url.as_deref())
            == Some("http://hello.default.example.org")
            && traffic(s)[0].3.as_deref() == Some("http://current-hello.default.example.org")
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn a_revision_that_never_gets_ready_leaves_traffic_on_the_old_one_and_the_service_says_why() {
    let env = Env::start().await;
    env.apply(&hello("example.com/hello:v1", "", "")).await;
    env.wait::<Service>("hello", "ksvc Ready", svc_ready).await;

    // An image that cannot be pulled.
    env.apply(&hello("example.com/hello:broken", "", "")).await;
    let rev = env
        .wait::<Revision>("hello-00002", "hello-00002 failed", |r| {
            let c = r.status.as_ref().and_then(|s| s.status.conditions.as_ref());
            is(c, "Ready", "False")
        })
        .await;
    let c = rev.status.unwrap().status.conditions.unwrap();
    let ra = cond(Some(&c), "ResourcesAvailable").unwrap();
    assert_eq!((ra.status.as_str(), ra.reason.as_deref()), ("False", Some("ImagePullBackOff")));
    assert_eq!(cond(Some(&c), "Ready").unwrap().reason.as_deref(), Some("ImagePullBackOff"));
    let svc = env
        .wait::<Service>("hello", "ksvc says why", |s| {
            let c = s.status.as_ref().and_then(|s| s.status.conditions.as_ref());
            cond(c, "Ready").is_some_and(|c| c.status == "False")
        })
        .await;
    let st = svc.status.clone().unwrap();
    let ready = cond(st.status.conditions.as_ref(), "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("RevisionFailed"), "{st:#?}");
    assert!(ready.message.as_deref().unwrap().contains("hello-00002"), "{ready:?}");
    assert!(ready.message.as_deref().unwrap().contains("Back-off pulling image"), "{ready:?}");
    assert_eq!(st.configuration.latest_ready_revision_name.as_deref(), Some("hello-00001"));
    assert_eq!(st.configuration.latest_created_revision_name.as_deref(), Some("hello-00002"));
    assert_eq!(traffic(&svc), [("hello-00001".to_owned(), 100, None, None)]);
    let out = env.server.kubectl_ok(&["get", "ksvc", "hello"]).await.unwrap();
    assert!(out.contains("RevisionFailed"), "{out}");

    // A container that exits.
    env.apply(&hello("example.com/hello:crash", "", "")).await;
    let rev = env
        .wait::<Revision>("hello-00003", "hello-00003 failed", |r| {
            let c = r.status.as_ref().and_then(|s| s.status.conditions.as_ref());
            is(c, "ContainerHealthy", "False")
        })
        .await;
    let c = rev.status.unwrap().status.conditions.unwrap();
    let ch = cond(Some(&c), "ContainerHealthy").unwrap();
    assert_eq!(ch.reason.as_deref(), Some("ExitCode1"));
    assert_eq!(ch.message.as_deref(), Some("Container failed with: boom"));
    let svc = env
        .wait::<Service>("hello", "hello-00003 failed in the ksvc", |s| {
            s.status.as_ref().and_then(|s| s.configuration.latest_created_revision_name.as_deref())
                == Some("hello-00003")
                && s.status.as_ref().is_some_and(|st| {
                    cond(st.status.conditions.as_ref(), "Ready").is_some_and(|c| {
                        c.message.as_deref().is_some_and(|m| m.contains("hello-00003"))
                    })
                })
        })
        .await;
    assert_eq!(traffic(&svc), [("hello-00001".to_owned(), 100, None, None)]);
    env.stop().await;
}

#[tokio::test]
async fn without_knatives_webhook_the_controllers_apply_its_defaults_themselves() {
    let env = Env::start_with(false).await;
    env.apply(&hello("example.com/hello:v1", "", "")).await;
    let svc = env.wait::<Service>("hello", "ksvc Ready", svc_ready).await;
    // Nothing defaulted the stored Service...
    assert!(svc.spec.traffic.is_none());
    assert_eq!(svc.spec.template.spec.containers[0].name, "");
    // ...yet the pods run Knative's container and the traffic follows the latest revision.
    assert_eq!(traffic(&svc), [("hello-00001".to_owned(), 100, None, None)]);
    let cs = env.api::<CloneSet>().get("hello-00001-deployment").await.unwrap();
    let c = &cs.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.name, "user-container");
    assert!(c.readiness_probe.as_ref().and_then(|p| p.tcp_socket.as_ref()).is_some());
    env.stop().await;
}

#[tokio::test]
async fn a_template_with_its_own_name_names_the_revision_and_the_prefix_is_checked() {
    let env = Env::start().await;
    let named = |name: &str| {
        hello("example.com/hello:v1", "", "").replace(
            "  template:\n    spec:",
            &format!("  template:\n    metadata:\n      name: {name}\n    spec:"),
        )
    };
    let out =
        env.server.kubectl_stdin(&["apply", "-f", "-"], Some(&named("other-v1"))).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("spec.template.metadata.name"), "{err}");
    env.apply(&named("hello-v1")).await;
    let svc = env.wait::<Service>("hello", "ksvc Ready", svc_ready).await;
    assert_eq!(traffic(&svc), [("hello-v1".to_owned(), 100, None, None)]);
    env.api::<CloneSet>().get("hello-v1-deployment").await.unwrap();
    env.stop().await;
}

/// A Service whose revision targets `target` concurrent requests per pod at 100 %
/// utilisation (so the desired scale is the summed concurrency itself).
fn targeted(target: u32) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: \"{target}\"
        autoscaling.knative.dev/target-utilization-percentage: \"100\"
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
"
    )
}

/// A gateway with its KPA loop (what `serving_gateway::start` runs), whose table sends
/// `host` to `hello-00001` without endpoints: every request to it is held, and counted.
async fn held_gateway(
    client: &Client,
    host: &str,
) -> (std::sync::Arc<kinetic_gateway::Gateway>, JoinHandle<()>) {
    use kinetic_gateway::{Gateway, Options, RevisionKey, Route, RoutingTable, Target};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let on_demand: kinetic_gateway::OnDemand = std::sync::Arc::new(move |k: &RevisionKey| {
        let _ = tx.send(k.clone());
    });
    let options = Options { on_demand: Some(on_demand), ..Options::default() };
    let gw =
        std::sync::Arc::new(Gateway::start("127.0.0.1:0".parse().unwrap(), options).await.unwrap());
    let key = RevisionKey::new("default", "hello-00001");
    let mut table = RoutingTable::default();
    let rev = kinetic_gateway::Revision { timeout: Duration::from_secs(120), ..Default::default() };
    table.revisions.insert(key.clone(), rev);
    table
        .hosts
        .insert(host.into(), Route { targets: vec![Target { revision: key, percent: 100 }] });
    gw.set_routes(table).unwrap();
    let kpa =
        tokio::spawn(kinetic_controllers::serving_autoscaler::run(client.clone(), gw.clone(), rx));
    (gw, kpa)
}

/// `n` requests to `gateway` that it holds (their connections stay open until aborted).
fn hold(gateway: std::net::SocketAddr, host: &str, n: usize) -> Vec<JoinHandle<()>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    (0..n)
        .map(|_| {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(gateway).await.unwrap();
                s.write_all(req.as_bytes()).await.unwrap();
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
            })
        })
        .collect()
}

/// The Revision is Ready (the Route's readiness also waits for a gateway's routing, which
/// these tests do not run).
fn rev_ready(r: &Revision) -> bool {
    is(r.status.as_ref().and_then(|s| s.status.conditions.as_ref()), "Ready", "True")
}

fn pa_cond(p: &PodAutoscaler, t: &str) -> Option<(String, String)> {
    let c = cond(p.status.as_ref()?.status.conditions.as_ref(), t)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn each_revision_gets_a_podautoscaler_that_kubectl_prints_with_the_kpa_decision() {
    let env = Env::start().await;
    env.apply(&hello("ghcr.io/knative/helloworld-go:latest", "", "")).await;
    env.wait::<Revision>("hello-00001", "revision Ready", rev_ready).await;
    // The Revision controller creates it: same name, owned by the Revision, Knative's spec.
    let pa = env.wait::<PodAutoscaler>("hello-00001", "the PodAutoscaler", |_| true).await;
    let rev = env.api::<Revision>().get("hello-00001").await.unwrap();
    assert_eq!(pa.owner_references()[0].uid, rev.uid().unwrap());
    assert_eq!(pa.spec.scale_target_ref.name.as_deref(), Some("hello-00001-deployment"));
    assert_eq!(pa.spec.scale_target_ref.kind.as_deref(), Some("CloneSet"));
    assert_eq!(pa.spec.protocol_type, "http1");
    assert_eq!(pa.annotations()["autoscaling.knative.dev/class"], "kpa.autoscaling.knative.dev");

    // A revision of the HPA class is not the KPA's.
    env.apply(
        &targeted(10)
            .replace("name: hello\n", "name: other\n")
            .replace(
                "      annotations:\n",
                "      annotations:\n        autoscaling.knative.dev/class: hpa.autoscaling.knative.dev\n        autoscaling.knative.dev/metric: cpu\n",
            ),
    )
    .await;
    env.wait::<CloneSet>("other-00001-deployment", "created", |_| true).await;
    env.wait::<PodAutoscaler>("other-00001", "created", |_| true).await;
    // The KPA loop (beside a gateway) reports its decision.
    let (gw, kpa) = held_gateway(&env.client, "unused.example.com").await;
    let pa = env
        .wait::<PodAutoscaler>("hello-00001", "the KPA's decision", |p| {
            let st = p.status.as_ref();
            st.and_then(|s| s.desired_scale) == Some(1)
                && st.and_then(|s| s.actual_scale) == Some(1)
                && pa_cond(p, "Ready").is_some_and(|c| c.0 == "True")
                && p.spec.reachability.as_deref() == Some("Reachable")
        })
        .await;
    let d = pa.status.as_ref().unwrap().decider.clone().unwrap();
    assert_eq!((d.mode.as_str(), d.metric.as_str(), d.gateways), ("Stable", "concurrency", 1));
    let other = env.api::<PodAutoscaler>().get("other-00001").await.unwrap();
    assert_eq!(other.status, None, "the KPA decided for an HPA-class revision");
    assert_eq!(other.annotations()["autoscaling.knative.dev/class"], "hpa.autoscaling.knative.dev");
    assert_eq!(d.target, 70.0, "containerConcurrency 0: 100 at 70 %");
    for t in ["Active", "ScaleTargetInitialized", "SKSReady"] {
        assert_eq!(pa_cond(&pa, t).map(|c| c.0).as_deref(), Some("True"), "{t}");
    }
    let out = env.server.kubectl_ok(&["get", "kpa"]).await.unwrap();
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..5], ["NAME", "DESIREDSCALE", "ACTUALSCALE", "READY", "REASON"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["hello-00001", "1", "1", "True"], "{out}");
    let wide = env.server.kubectl_ok(&["get", "podautoscalers", "-o", "wide"]).await.unwrap();
    assert!(wide.contains("MODE") && wide.contains("Stable"), "{wide}");
    // Bounded writes: while the decision holds (no traffic, one ready pod), the loop decides
    // every second but writes nothing (observed over a few ticks).
    let pas: Api<PodAutoscaler> = Api::namespaced(env.client.clone(), "default");
    let rv = pas.get("hello-00001").await.unwrap().resource_version();
    let wp = kube::api::WatchParams::default().fields("metadata.name=hello-00001").timeout(4);
    let mut events = pas.watch(&wp, rv.as_deref().unwrap()).await.unwrap().boxed();
    while let Some(ev) = events.next().await {
        match ev.unwrap() {
            kube::api::WatchEvent::Bookmark(_) => {}
            other => panic!("the PodAutoscaler was written without a new decision: {other:?}"),
        }
    }
    // The Revision mirrors the replica counts.
    let rev = env
        .wait::<Revision>("hello-00001", "replicas", |r| {
            r.status
                .as_ref()
                .is_some_and(|s| (s.actual_replicas, s.desired_replicas) == (Some(1), Some(1)))
        })
        .await;
    assert!(is(rev.status.unwrap().status.conditions.as_ref(), "Active", "True"));
    kpa.abort();
    drop(gw);
    env.stop().await;
}

#[tokio::test]
async fn two_gateways_add_up_in_the_autoscalers_decision() {
    let env = Env::start().await;
    env.apply(&targeted(1)).await;
    env.wait::<Revision>("hello-00001", "revision Ready", rev_ready).await;
    let host = "hello.default.example.com";
    let (a, kpa_a) = held_gateway(&env.client, host).await;
    let (b, kpa_b) = held_gateway(&env.client, host).await;
    // Both register; one leads.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), "knative-serving");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let regs = leases
            .list(&ListParams::default().labels("serving.kinetic.dev/gateway"))
            .await
            .unwrap();
        let leader = leases.get_opt("autoscaler-bucket-00-of-01").await.unwrap();
        if regs.items.len() == 2 && leader.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "registrations {regs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 3 requests held at one gateway and 4 at the other: the decision sees 7 at a target of 1.
    let mut clients = hold(a.local_addr(), host, 3);
    clients.extend(hold(b.local_addr(), host, 4));
    let pa = env
        .wait_long::<PodAutoscaler>("hello-00001", "the summed concurrency", |p| {
            let Some(st) = p.status.as_ref() else { return false };
            st.decider.as_ref().is_some_and(|d| d.gateways == 2 && d.observed_panic_value >= 6.5)
                && st.desired_scale >= Some(7)
        })
        .await;
    let st = pa.status.unwrap();
    let d = st.decider.unwrap();
    assert!(d.observed_panic_value <= 7.5, "{d:?}");
    assert_eq!(d.mode, "Panic", "{d:?}");
    let cs = env
        .wait::<CloneSet>("hello-00001-deployment", "scaled", |c| c.spec.replicas >= Some(7))
        .await;
    assert!(cs.spec.replicas <= Some(8), "{:?}", cs.spec.replicas);
    let wide = env.server.kubectl_ok(&["get", "kpa", "-o", "wide"]).await.unwrap();
    assert!(wide.contains("Panic"), "{wide}");
    for c in clients {
        c.abort();
    }
    kpa_a.abort();
    kpa_b.abort();
    drop((a, b));
    env.stop().await;
}

#[tokio::test]
async fn a_request_held_at_zero_by_a_gateway_that_does_not_lead_wakes_the_revision() {
    let env = Env::start().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
        "data": {"allow-zero-initial-scale": "true"}});
    env.server.kubectl_stdin_ok(&["create", "namespace", "knative-serving"], "").await.unwrap();
    env.server.kubectl_stdin_ok(&["apply", "-f", "-"], &cm.to_string()).await.unwrap();
    let svc = targeted(1).replace(
        "        autoscaling.knative.dev/target: \"1\"",
        "        autoscaling.knative.dev/target: \"1\"\n        autoscaling.knative.dev/initial-scale: \"0\"",
    );
    env.apply(&svc).await;
    env.wait::<CloneSet>("hello-00001-deployment", "at zero", |c| c.spec.replicas == Some(0)).await;
    let host = "hello.default.example.com";
    // The first gateway leads; the second registers beside it.
    let (a, kpa_a) = held_gateway(&env.client, host).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), "knative-serving");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while leases.get_opt("autoscaler-bucket-00-of-01").await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (b, kpa_b) = held_gateway(&env.client, host).await;
    // The leader stays at zero without traffic (activation pending, nothing to apply).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cs = env.api::<CloneSet>().get("hello-00001-deployment").await.unwrap();
    assert_eq!(cs.spec.replicas, Some(0));
    // A request held by the other gateway wakes it.
    let clients = hold(b.local_addr(), host, 1);
    env.wait::<CloneSet>("hello-00001-deployment", "woken", |c| c.spec.replicas >= Some(1)).await;
    for c in clients {
        c.abort();
    }
    kpa_a.abort();
    kpa_b.abort();
    drop((a, b));
    env.stop().await;
}

#[tokio::test]
async fn creator_and_last_modifier_name_the_user_as_knatives_webhook_sets_them() {
    let env = Env::start().await;
    env.apply(&hello("ghcr.io/knative/helloworld-go:latest", "", "")).await;
    let user = "kinetic-admin";
    let ann = |m: &std::collections::BTreeMap<String, String>, k: &str| m.get(k).cloned();
    let svc = env.api::<Service>().get("hello").await.unwrap();
    for k in ["serving.knative.dev/creator", "serving.knative.dev/lastModifier"] {
        assert_eq!(ann(svc.annotations(), k).as_deref(), Some(user), "{k}");
    }
    // The Service's Configuration and Route carry its annotations; the Revision's creator is
    // the Configuration's last modifier.
    let cfg = env
        .wait::<Configuration>("hello", "annotated", |c| {
            c.annotations().contains_key("serving.knative.dev/creator")
        })
        .await;
    assert_eq!(ann(cfg.annotations(), "serving.knative.dev/lastModifier").as_deref(), Some(user));
    assert!(!cfg.annotations().contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    let route = env
        .wait::<Route>("hello", "annotated", |r| {
            r.annotations().contains_key("serving.knative.dev/creator")
        })
        .await;
    assert_eq!(ann(route.annotations(), "serving.knative.dev/creator").as_deref(), Some(user));
    let rev = env.wait::<Revision>("hello-00001", "created", |_| true).await;
    assert_eq!(ann(rev.annotations(), "serving.knative.dev/creator").as_deref(), Some(user));

    // The creator is immutable, and the last modifier moves only with the spec.
    for (k, v) in [("creator", "mallory"), ("lastModifier", "mallory")] {
        let out = env
            .server
            .kubectl(&[
                "annotate",
                "ksvc",
                "hello",
                &format!("serving.knative.dev/{k}={v}"),
                "--overwrite",
            ])
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{k} changed");
        assert!(
            err.contains("annotation value is immutable")
                && err.contains(&format!("metadata.annotations.serving.knative.dev/{k}")),
            "{err}"
        );
    }
    // A Route of its own gets them from the request too.
    env.apply(
        "apiVersion: serving.knative.dev/v1
kind: Route
metadata:
  name: mine
  namespace: default
spec:
  traffic:
    - revisionName: hello-00001
      percent: 100
",
    )
    .await;
    let out = env
        .server
        .kubectl_ok(&[
            "get",
            "route",
            "mine",
            "-o",
            "jsonpath={.metadata.annotations.serving\\.knative\\.dev/creator}",
        ])
        .await
        .unwrap();
    assert_eq!(out, user);
    env.stop().await;
}

#[tokio::test]
async fn when_the_leading_gateway_goes_away_another_takes_over_the_decisions() {
    let env = Env::start().await;
    env.apply(&targeted(1)).await;
    env.wait::<Revision>("hello-00001", "revision Ready", rev_ready).await;
    let host = "hello.default.example.com";
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), "knative-serving");
    let holder = || async {
        let l = leases.get_opt("autoscaler-bucket-00-of-01").await.unwrap();
        l.and_then(|l| l.spec?.holder_identity)
    };
    let (a, kpa_a) = held_gateway(&env.client, host).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (b, kpa_b) = held_gateway(&env.client, host).await;
    let decided = |gateways: i32| {
        move |p: &PodAutoscaler| {
            p.status.as_ref().is_some_and(|s| {
                s.desired_scale == Some(1)
                    && s.decider.as_ref().is_some_and(|d| d.gateways == gateways)
            })
        }
    };
    env.wait_long::<PodAutoscaler>("hello-00001", "both gateways summed", decided(2)).await;
    // The leader's process ends without releasing the Lease (a crash): the other takes over
    // once the Lease expires (15 s) and decides alone.
    let pas: Api<PodAutoscaler> = Api::namespaced(env.client.clone(), "default");
    let rv = pas.get("hello-00001").await.unwrap().resource_version().unwrap();
    let wp = kube::api::WatchParams::default().fields("metadata.name=hello-00001").timeout(45);
    let mut events = pas.watch(&wp, &rv).await.unwrap().boxed();
    let seen = tokio::spawn(async move {
        let mut desired = Vec::new();
        while let Some(ev) = events.next().await {
            let p = match ev.unwrap() {
                kube::api::WatchEvent::Modified(p) | kube::api::WatchEvent::Added(p) => p,
                kube::api::WatchEvent::Bookmark(_) => continue,
                other => panic!("{other:?}"),
            };
            let st = p.status.unwrap_or_default();
            desired.push(st.desired_scale);
            if st.decider.is_some_and(|d| d.gateways == 1) && st.desired_scale == Some(1) {
                break;
            }
        }
        desired
    });
    kpa_a.abort();
    drop(a);
    let pa = env
        .wait_long::<PodAutoscaler>("hello-00001", "the new leader's decision", decided(1))
        .await;
    let now = holder().await.unwrap();
    assert_ne!(now, first, "the Lease did not change hands");
    // While it had no decision yet, it did not write "unknown" over its predecessor's.
    let desired = seen.await.unwrap();
    assert!(
        !desired.is_empty() && desired.iter().all(|d| *d == Some(1)),
        "desired scales written: {desired:?}"
    );
    let st = pa.status.unwrap();
    assert_eq!(
        cond(st.status.conditions.as_ref(), "Active").map(|c| c.status.as_str()),
        Some("True")
    );
    kpa_b.abort();
    drop(b);
    env.stop().await;
}

/// Regression: a gateway process that stopped cleanly left the autoscaler's Lease to expire
/// (15 s without decisions); its leader now releases it as it stops.
#[tokio::test]
async fn a_stopped_autoscaler_leader_releases_its_lease_at_once() {
    let env = Env::start().await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), "knative-serving");
    let holder = || async {
        let l = leases.get_opt("autoscaler-bucket-00-of-01").await.unwrap();
        l.and_then(|l| l.spec?.holder_identity).filter(|h| !h.is_empty())
    };
    let gw = kinetic_gateway::Gateway::start(
        "127.0.0.1:0".parse().unwrap(),
        kinetic_gateway::Options::default(),
    )
    .await
    .unwrap();
    let (_demand_tx, demand_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let kpa = tokio::spawn(kinetic_controllers::serving_autoscaler::run_until(
        env.client.clone(),
        std::sync::Arc::new(gw),
        demand_rx,
        async {
            let _ = stop_rx.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while holder().await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), kpa)
        .await
        .expect("the autoscaler stops within 10 s")
        .unwrap();
    assert_eq!(holder().await, None, "the Lease was not released");
    env.stop().await;
}
