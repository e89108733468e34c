//! The ImagePullJob controller against the embedded API server, through a TCP proxy that can
//! cut the network the way a vanished peer does. There is no node agent: the test writes the
//! NodeImage status a node would report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kinetic_api::kruise::imagepulljob::ImagePullJob;
use kinetic_api::kruise::nodeimage::NodeImage;
use kinetic_controllers::imagepulljob;
use kinetic_testkit::TestServer;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy in front of the API server. While frozen nothing passes either way. A
/// connection the client wrote to while frozen (a request sent into the void) stays dead for
/// good — open, silent, not even a FIN — as one whose server end vanished without a reset;
/// the other connections resume when the proxy thaws.
struct Blackhole {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    /// Connections that died with a request in flight.
    dead: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start(upstream: SocketAddr) -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, rx) = watch::channel(false);
        let dead = Arc::new(AtomicUsize::new(0));
        let count = dead.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (rx, count) = (rx.clone(), count.clone());
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let dead = Arc::new(AtomicBool::new(false));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, rx.clone(), dead.clone(), Some(count));
                    let down = pump(sr, cw, rx, dead, None);
                    tokio::join!(up, down);
                });
            }
        });
        Blackhole { addr, frozen, dead, task }
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }

    fn dead(&self) -> usize {
        self.dead.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    dead: Arc<AtomicBool>,
    count: Option<Arc<AtomicUsize>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if *frozen.borrow_and_update() {
            if n > 0
                && let Some(c) = &count
                && !dead.swap(true, Ordering::SeqCst)
            {
                c.fetch_add(1, Ordering::SeqCst);
            }
            let _ = frozen.wait_for(|f| !*f).await;
        }
        if dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

/// A client of `server` whose connections go through `proxy`.
async fn client_via(server: &TestServer, proxy: SocketAddr) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let scheme = cfg.cluster_url.scheme_str().unwrap().to_owned();
    cfg.cluster_url = format!("{scheme}://{proxy}").parse().unwrap();
    kube::Client::try_from(cfg).unwrap()
}

async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "{what} not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 10, item 4: a leader kept finished ImagePullJobs 7 minutes past
/// `ttlSecondsAfterFinished`; the next leader deleted them at once. A reconcile stuck on a
/// request that never gets an answer (the `kube` client has no response timeout) holds back
/// every later reconcile of its job, the TTL requeue included. Here the network drops the
/// TTL's delete request on the floor: once it is back, the job must still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagepulljob_past_its_ttl_is_deleted_after_a_request_that_never_answers() {
    let server = TestServer::start().await.unwrap();
    let direct = server.client().await.unwrap();
    kinetic_controllers::crds::install(&direct, &imagepulljob::crds()).await.unwrap();
    let upstream = server.server().local_addr();
    let proxy = Blackhole::start(upstream).await;
    let proxied = client_via(&server, proxy.addr).await;
    let nodes: Api<Node> = Api::all(direct.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let images: Api<NodeImage> = Api::all(direct.clone());
    let ni: NodeImage =
        serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {}})).unwrap();
    images.create(&PostParams::default(), &ni).await.unwrap();
    // Started after the node exists, so its first list has it (a job reconciled before the
    // cache shows any node would complete with no targets).
    let (stop, mut stop_rx) = watch::channel(false);
    let controller = tokio::spawn(imagepulljob::run(proxied, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let jobs: Api<ImagePullJob> = Api::namespaced(direct.clone(), "default");
    let job: ImagePullJob = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "metadata": {"name": "ttl", "namespace": "default"},
        "spec": {
            "image": "example.invalid/app:v1",
            "completionPolicy": {"type": "Always", "ttlSecondsAfterFinished": 5},
        },
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();

    // The controller asks node n1 to pull; the "node" reports success.
    let version = || async {
        let ni = images.get("n1").await.unwrap();
        let tags = ni.spec.images.and_then(|m| m.get("example.invalid/app").cloned());
        tags.and_then(|i| i.tags.into_iter().find(|t| t.tag == "v1")).and_then(|t| t.version)
    };
    until("the tag is in n1's NodeImage", Duration::from_secs(20), || async {
        version().await.is_some()
    })
    .await;
    let v = version().await.unwrap();
    let status = json!({"status": {"desired": 1, "succeeded": 1, "failed": 0, "pulling": 0,
        "imageStatuses": {"example.invalid/app": {"tags": [
            {"tag": "v1", "phase": "Succeeded", "progress": 100, "version": v}]}}}});
    images.patch_status("n1", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    // The tag stays (with its status) until its own TTL or the job's deletion (issue 18).
    until("the job completes, its tag still there", Duration::from_secs(20), || async {
        let done =
            jobs.get_opt("ttl").await.unwrap().and_then(|j| j.status?.completion_time).is_some();
        done && version().await.is_some()
    })
    .await;

    // The network fails before the TTL: the delete it triggers is lost with its connection.
    proxy.freeze(true);
    until("the controller sends the TTL delete", Duration::from_secs(20), || async {
        proxy.dead() > 0
    })
    .await;
    proxy.freeze(false);
    let limit = imagepulljob::RECONCILE_TIMEOUT + Duration::from_secs(15);
    until("the job is deleted after the network is back", limit, || async {
        jobs.get_opt("ttl").await.unwrap().is_none()
    })
    .await;

    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), controller).await.unwrap().unwrap().unwrap();
    drop(proxy);
    server.shutdown().await;
}

/// Issue 18, item 10: a NodeImage carried none of its Node's labels, so the manual's way of
/// listing NodeImages by node label found nothing. It is created with them and follows their
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeimage_carries_and_follows_its_nodes_labels() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &imagepulljob::crds()).await.unwrap();
    let (stop, mut stop_rx) = watch::channel(false);
    let controller =
        tokio::spawn(kinetic_controllers::nodeimage::run(client.clone(), async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(
        json!({"metadata": {"name": "n1", "labels": {"node-type": "gpu", "zone": "a"}}}),
    )
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let images: Api<NodeImage> = Api::all(client.clone());
    let labelled = |want: Vec<(&'static str, &'static str)>| {
        let images = images.clone();
        async move {
            let Some(ni) = images.get_opt("n1").await.unwrap() else { return false };
            let have: Vec<(String, String)> = kube::ResourceExt::labels(&ni)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            have == want.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>()
        }
    };
    until("the NodeImage has the node's labels", Duration::from_secs(20), || {
        labelled(vec![("node-type", "gpu"), ("zone", "a")])
    })
    .await;
    let by_label = images.list(&kube::api::ListParams::default().labels("node-type=gpu")).await;
    assert_eq!(by_label.unwrap().items.len(), 1);
    let patch = json!({"metadata": {"labels": {"zone": null, "pool": "x"}}});
    nodes.patch("n1", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    until("the NodeImage follows the node's labels", Duration::from_secs(20), || {
        labelled(vec![("node-type", "gpu"), ("pool", "x")])
    })
    .await;
    stop.send(true).unwrap();
    controller.await.unwrap().unwrap();
}

/// Issue 18, item 10: a failed job's tag vanished from the NodeImage about a second after the
/// job ended, so the FAQ's way of finding why a pull failed (the NodeImage's tag status) did
/// not work, and a tag's `ttlSecondsAfterFinished` (300 s by default) was ignored. The tag now
/// stays with its status after the job finished and goes once its TTL has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tag_stays_in_the_nodeimage_until_its_ttl() {
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &imagepulljob::crds()).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let shutdown = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let jobs_ctl = tokio::spawn(imagepulljob::run(client.clone(), shutdown(stop_rx.clone())));
    let ni_ctl =
        tokio::spawn(kinetic_controllers::nodeimage::run(client.clone(), shutdown(stop_rx)));
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let images: Api<NodeImage> = Api::all(client.clone());
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), "default");
    let job: ImagePullJob = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"image": "example.invalid/app:v1", "completionPolicy": {"type": "Always"}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let tag = || async {
        let ni = images.get_opt("n1").await.unwrap()?;
        let spec = ni
            .spec
            .images
            .as_ref()?
            .get("example.invalid/app")?
            .tags
            .iter()
            .find(|t| t.tag == "v1")?
            .clone();
        Some((spec, ni.tag_status("example.invalid/app", "v1").cloned()))
    };
    until("the tag is in n1's NodeImage", Duration::from_secs(20), || async {
        tag().await.is_some()
    })
    .await;
    let (spec, _) = tag().await.unwrap();
    let ttl = spec.pull_policy.as_ref().and_then(|p| p.ttl_seconds_after_finished);
    assert_eq!(ttl, Some(300), "upstream's default tag TTL");
    // The "node" reports the pull failed, just now.
    let report = |completed: jiff::Timestamp| {
        json!({"status": {"desired": 1, "succeeded": 0, "failed": 1, "pulling": 0,
            "imageStatuses": {"example.invalid/app": {"tags": [{"tag": "v1", "phase": "Failed",
                "progress": 0, "version": spec.version, "message": "manifest unknown",
                "completionTime": completed.to_string()}]}}}})
    };
    let now = jiff::Timestamp::now();
    images.patch_status("n1", &PatchParams::default(), &Patch::Merge(report(now))).await.unwrap();
    until("the job fails", Duration::from_secs(20), || async {
        jobs.get("bad").await.unwrap().status.and_then(|s| s.completion_time).is_some()
    })
    .await;
    // A later NodeImage pass (it follows the node's labels) still finds the tag and its
    // failure: the FAQ's way to see why the pull failed.
    let label = json!({"metadata": {"labels": {"seen": "yes"}}});
    nodes.patch("n1", &PatchParams::default(), &Patch::Merge(label)).await.unwrap();
    until("a NodeImage pass after the job ended", Duration::from_secs(20), || async {
        let ni = images.get("n1").await.unwrap();
        kube::ResourceExt::labels(&ni).get("seen").is_some_and(|v| v == "yes")
    })
    .await;
    let (_, status) = tag().await.expect("the failed tag is still in the NodeImage");
    assert_eq!(status.and_then(|s| s.message).as_deref(), Some("manifest unknown"));
    // Once its TTL has passed since the pull ended, the tag goes.
    let long_ago = now - jiff::SignedDuration::from_secs(301);
    images
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(report(long_ago)))
        .await
        .unwrap();
    until("the expired tag is removed", Duration::from_secs(20), || async {
        tag().await.is_none()
    })
    .await;
    stop.send_replace(true);
    jobs_ctl.await.unwrap().unwrap();
    ni_ctl.await.unwrap().unwrap();
}

/// Issue 18, item 12: ImageListPullJob (v1alpha1 and v1beta1), as OpenKruise's manual applies
/// it: one ImagePullJob per image, owned by the list; the list's status sums theirs (desired,
/// completed, succeeded, the failed images with their job's message); an image dropped from
/// the list takes its job with it; webhook validation refuses duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_list_pull_job_runs_one_job_per_image_and_sums_their_status() {
    use kinetic_api::kruise::imagelistpulljob::ImageListPullJob;
    let server = TestServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    kinetic_controllers::crds::install(&client, &imagepulljob::crds()).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let shutdown = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ctls = [
        tokio::spawn(imagepulljob::run(client.clone(), shutdown(stop_rx.clone()))),
        tokio::spawn(kinetic_controllers::nodeimage::run(
            client.clone(),
            shutdown(stop_rx.clone()),
        )),
        tokio::spawn(kinetic_controllers::imagelistpulljob::run(client.clone(), shutdown(stop_rx))),
    ];
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let dup = "apiVersion: apps.kruise.io/v1beta1\nkind: ImageListPullJob\nmetadata:\n  name: dup\nspec:\n  images: [a:1, a:1]\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], Some(dup)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("images cannot have duplicate values"), "{err}");
    let manifest = "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata:\n  name: list\n  namespace: default\nspec:\n  images:\n  - example.invalid/good:v1\n  - example.invalid/bad:v1\n  - example.invalid/gone:v1\n  parallelism: 10\n  selector:\n    names: [n1]\n  completionPolicy:\n    type: Always\n";
    server.kubectl_stdin_ok(&["apply", "-f", "-"], manifest).await.unwrap();
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), "default");
    let job_images = || async {
        let mut v: Vec<String> = jobs
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .map(|j| j.spec.image)
            .collect();
        v.sort();
        v
    };
    until("a job per image", Duration::from_secs(20), || async { job_images().await.len() == 3 })
        .await;
    // The user drops one image: its job goes.
    server
        .kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &manifest.replace("  - example.invalid/gone:v1\n", ""),
        )
        .await
        .unwrap();
    until("the dropped image's job is gone", Duration::from_secs(20), || async {
        job_images().await == ["example.invalid/bad:v1", "example.invalid/good:v1"]
    })
    .await;
    // The "node" pulls good and fails bad.
    let images: Api<NodeImage> = Api::all(client.clone());
    until("both tags are in n1's NodeImage", Duration::from_secs(20), || async {
        let ni = images.get_opt("n1").await.unwrap();
        ni.and_then(|n| n.spec.images).is_some_and(|m| {
            m.contains_key("example.invalid/good") && m.contains_key("example.invalid/bad")
        })
    })
    .await;
    let ni = images.get("n1").await.unwrap();
    let version = |name: &str| {
        ni.spec.images.as_ref().unwrap()[name].tags.iter().find(|t| t.tag == "v1").unwrap().version
    };
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {"desired": 2, "succeeded": 1, "failed": 1, "pulling": 0,
        "imageStatuses": {
            "example.invalid/good": {"tags": [{"tag": "v1", "phase": "Succeeded", "progress": 100,
                "version": version("example.invalid/good"), "completionTime": now}]},
            "example.invalid/bad": {"tags": [{"tag": "v1", "phase": "Failed", "progress": 0,
                "version": version("example.invalid/bad"), "completionTime": now,
                "message": "manifest unknown"}]}}}});
    images.patch_status("n1", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    let lists: Api<ImageListPullJob> = Api::namespaced(client.clone(), "default");
    until("the list completes", Duration::from_secs(20), || async {
        lists.get("list").await.unwrap().status.is_some_and(|s| s.completion_time.is_some())
    })
    .await;
    let st = lists.get("list").await.unwrap().status.unwrap();
    assert_eq!((st.desired, st.completed, st.succeeded, st.active), (2, 2, 1, 0), "{st:?}");
    let failed = st.failed_image_statuses.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name.as_deref(), Some("example.invalid/bad:v1"));
    let table = server.kubectl_ok(&["get", "imagelistpulljob", "list"]).await.unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TOTAL", "SUCCEEDED", "COMPLETED", "AGE"], "{table}");
    // Deleting the list takes its jobs with it.
    server.kubectl_ok(&["delete", "imagelistpulljob", "list", "--wait=true"]).await.unwrap();
    until("the list's jobs are gone", Duration::from_secs(20), || async {
        job_images().await.is_empty()
    })
    .await;
    stop.send_replace(true);
    for c in ctls {
        c.await.unwrap().unwrap();
    }
}
